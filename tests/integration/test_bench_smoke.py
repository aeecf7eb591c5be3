"""The benchmark cannot rot: `bench/run --smoke` against the test build runs
every part of the benchmark once with a tiny load (availd's cache hits by
push, dealer, batch, open loop and gateway, its misses, the one-wave run,
the Perl baseline, and bench/group-querier with the shipped configuration),
prints its table, and leaves no process behind.

No timing is asserted: only that it ran, that every figure is a number,
and that availd-load saw no wrong, duplicate or misattributed answer (that
would be a bug, whatever the speed)."""
import ctypes
import json
import os
import re
import subprocess

import harness

BENCH = os.path.join(harness.SOURCE_DIR, "bench", "run")
PR_SET_CHILD_SUBREAPER = 36

# The rows of the comparison table: availd's column must hold a number.
ROWS = (
    "cache-hit throughput, same work",
    "cache-hit throughput, each at its best",
    "miss throughput, same work",
    "miss throughput, each at its best",
    "p99 latency, cache hit, same work",
    "p99 latency, miss, same work",
    "total RSS idle",
    "total PSS idle",
    "total RSS, peak under load",
    "total PSS, peak under load",
    "CPU per check, cache hit, same work",
    "CPU per check, miss, same work",
    "start, until a line is answered on the gateway",
)
TARGETS = (
    ">= 100,000 cache hits/s through ZeroMQ",
    ">= 20,000 checks in flight in one querier",
    "with the querier's RSS < 100 MB",
    "misses limited by the registry",
    ">= 25x the baseline's miss throughput",
    "each daemon's idle RSS < 8 MB",
    "start of the whole constellation < 200 ms",
)
NUMBER = re.compile(r"^\d[\d,]*(\.\d+)? ")


def perl_ready():
    return all(subprocess.run(["/usr/bin/perl", f"-M{m}", "-e", "1"], capture_output=True).returncode == 0
               for m in ("Net::Server::PreFork", "Net::IDN::Encode", "DB_File"))


def live_children():
    """Our children that are not zombies; reaps the zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    me, out = os.getpid(), []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] not in ("Z", "X"):
            out.append(int(d))
    return out


def processes_mentioning(text):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        out.append(int(d))
            except OSError:
                pass
    return out


def table_rows(text, header):
    """The rows of the table under the line starting with header."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if " | " not in line:
            break
        rows.append([c.strip() for c in line.split(" | ")])
    return rows


def test_bench_smoke(tmp_path):
    # Orphans of bench/run (a daemon availctl did not stop, a baseline
    # child) become our children, so "nothing left behind" can be checked.
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        before = set(live_children())
        out_json = tmp_path / "bench.json"
        # The timeout guards against a hang; it is not a timing assertion.
        r = subprocess.run([BENCH, "--smoke", "--build-dir", harness.BUILD_DIR, "--json", str(out_json)],
                           capture_output=True, text=True, timeout=400)
        report = f"exit {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr[-4000:]}"
        work = re.search(r"work directory (\S+)", r.stderr)
        left = set(live_children()) - before
        assert not left, f"bench/run left processes behind: {left}\n{report}"
        if work:
            assert not processes_mentioning(work.group(1)), report
        assert r.returncode == 0, report
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)

    out = r.stdout
    assert "SMOKE" in out
    rows = {row[0]: row for row in table_rows(out, "metric ")}
    for label in ROWS:
        row = next((v for k, v in rows.items() if k.startswith(label)), None)
        assert row, f"no row {label!r} in\n{out}"
        assert NUMBER.match(row[1] + " "), f"availd's {label!r} is not a number: {row}\n{out}"
    targets = [row[0] for row in table_rows(out, "target ")]
    for label in TARGETS:
        assert any(label in t for t in targets), f"no target {label!r} in\n{out}"

    data = json.loads(out_json.read_text())
    res = data["results"]
    assert not res["bugs"], res["bugs"]
    # bench/group-querier, run by bench/run: the shipped configuration starts,
    # its RDAP querier carries every RDAP registry, the loopback ones answer
    g = res["group_querier"]
    assert 5 <= g["processes"] <= 15, g
    assert g["rdap_querier_registries"] > 500, g
    assert g["answers"] > 0 and set(g["statuses"]) == {"available"}, g
    assert all(v > 0 for v in g["pss_idle_kb"].values()), g
    assert "shipped configuration (bench/group-querier)" in out
    for run in res["all_runs"]:
        assert run.get("load"), f"{run['label']} failed: {run.get('error')}"
        if run["side"] == "availd":
            assert run["answers"] > 0, run["label"]
            assert run["checks_per_s"] > 0, run["label"]
    assert res["hits"]["dealer_lo"]["load"]["run"]["source"]["cache"] > 0
    assert res["misses"]["dealer"]["load"]["run"]["source"]["whois"] > 0
    assert all(v["rss_kb"] > 0 for v in res["idle"].values())
    assert res["start_up_ms"] > 0 and res["start_ready_ms"] > 0

    # The baseline: run when its Perl modules are there (bench/run installs
    # them when it may), else said why, in its column.
    if perl_ready():
        assert "baseline" in res, out
        for run in res["baseline"].values():
            assert run["answers"] > 0, run["label"]
        hit_row = next(v for k, v in rows.items() if k.startswith("cache-hit throughput, same work"))
        assert NUMBER.match(hit_row[2] + " "), hit_row
    else:
        assert res.get("baseline_not_run", "").startswith("package "), res.get("baseline_not_run")
        assert "not run: package" in out

