"""bench/http/run cannot rot: --smoke runs every part (wrk against cached
/v1/status with the cache read directly and through intake, the SSE
streams) once with a tiny load against the test build. No timing is
asserted: only that it ran, every figure is a number, no response was an
error and every stream ended with `done`."""
import os
import re
import subprocess

import harness

BENCH = os.path.join(harness.SOURCE_DIR, "bench", "http", "run")


def test_http_bench_runs_in_smoke_mode():
    r = subprocess.run(["/usr/bin/python3", BENCH, "--smoke", "--build", harness.BUILD_DIR],
                       capture_output=True, text=True, timeout=400,
                       env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for row in ("cached /v1/status req/s (LMDB read directly)", "cached /v1/status req/s (through intake)",
                "availd-http RSS idle", "SSE streams: all opened after", "streams with both answers and done"):
        line = next((l for l in out.splitlines() if row in l), None)
        assert line and re.search(r"\d", line[len(row):]), (row, out)
    assert re.search(r"non-2xx responses\s+0\b", out), out
    assert re.search(r"streams with both answers and done\s+20 of 20", out), out
