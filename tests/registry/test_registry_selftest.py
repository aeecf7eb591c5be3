"""Selftest of availd-test-registry: every reply rule, the control queries,
fixtures, partial writes, limits, refusal of non-loopback addresses and a
clean SIGTERM exit. It is also the usage example for tests that start the
fake registry. Only ever connects to 127.0.0.1; every wait is bounded."""
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BINARY = os.environ.get("AVAILD_TEST_REGISTRY") or os.path.join(
    os.environ.get("AVAILD_BUILD_DIR", os.path.join(HERE, "..", "..", "build")),
    "tests", "registry", "availd-test-registry")

FREE = ('No match for "{}".\r\n>>> Last update of WHOIS database: '
        '2026-01-01T00:00:00Z <<<\r\n')
TAKEN = ('   Domain Name: {}\r\n   Registrar: Test Registrar\r\n'
         '   Creation Date: 2001-01-01T00:00:00Z\r\n'
         '   Domain Status: clientTransferProhibited\r\n')


def registry_truth(name):
    h = 0x811C9DC5
    for b in name.encode().lower():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return "available" if h % 2 == 0 else "registered"


class Registry:
    def __init__(self, *args):
        if not os.path.exists(BINARY):
            pytest.fail(f"{BINARY} is missing: build first")
        self.proc = subprocess.Popen([BINARY, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        line = self.proc.stdout.readline().decode()
        assert line.startswith("PORT "), line
        self.port = int(line.split()[1])

    def connect(self, timeout=10.0):
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def query(self, line, timeout=10.0):
        with self.connect(timeout) as s:
            s.sendall(line if isinstance(line, bytes) else line.encode() + b"\r\n")
            return read_to_eof(s)

    def stats(self):
        return json.loads(self.query("!stats"))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=20)
        stderr = self.proc.stderr.read().decode(errors="replace")
        return rc, stderr


def read_to_eof(s, limit_bytes=8 << 20):
    chunks, total = [], 0
    while total <= limit_bytes:
        b = s.recv(1 << 16)
        if not b:
            break
        chunks.append(b)
        total += len(b)
    return b"".join(chunks)


@pytest.fixture
def registry():
    started = []

    def start(*args):
        r = Registry(*args)
        started.append(r)
        return r

    yield start
    for r in started:
        if r.proc.poll() is None:
            rc, stderr = r.stop()
            assert rc == 0, stderr
            assert "LeakSanitizer" not in stderr and "runtime error" not in stderr, stderr


def test_prefix_rules_answer_as_documented(registry):
    r = registry()
    assert r.query("free-a.com") == FREE.format("free-a.com").encode()
    assert r.query("domain TAKEN-b.com") == TAKEN.format("taken-b.com").encode()
    assert r.query("reserved-c.org") == b"Domain Name: reserved-c.org\r\nStatus: reserved by registry policy\r\n"
    assert r.query("limit-d.net") == b"Query rate limit exceeded. Try again later.\r\n"
    assert r.query("empty-e.com") == b""
    garbage = r.query("garbage-f.com")
    assert len(garbage) == 64 and garbage == r.query("get 1.0 garbage-f.com")
    assert garbage != r.query("garbage-g.com")


def test_other_names_follow_the_fnv1a_truth_in_every_query_form(registry):
    r = registry()
    forms = ["{}", "domain {}", "-T dn,ace {}", "get 1.0 {}"]
    for i in range(40):
        name = f"Name{i}.Example"
        want = (FREE if registry_truth(name) == "available" else TAKEN).format(name.lower())
        assert r.query(forms[i % 4].format(name)) == want.encode(), name
    assert registry_truth("example.de") == "available"
    assert registry_truth("example.eu") == "registered"


def test_delay_and_slow_prefix_hold_the_reply(registry):
    r = registry("--delay-ms", "200")
    t0 = time.monotonic()
    assert r.query("free-x.com") == FREE.format("free-x.com").encode()
    assert 0.19 <= time.monotonic() - t0 < 1.5
    t0 = time.monotonic()
    assert r.query("slow-x.com") == FREE.format("slow-x.com").encode()
    assert 2.19 <= time.monotonic() - t0 < 4.0
    t0 = time.monotonic()
    r.stats()  # control queries skip the delay
    assert time.monotonic() - t0 < 0.15


def test_huge_reply_arrives_whole_to_a_slow_reader(registry):
    r = registry()
    with r.connect(timeout=30) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        s.sendall(b"huge-a.com\r\n")
        # Loopback's send buffers can swallow 2 MiB, so this proves delivery
        # to a slow reader; EAGAIN itself was checked by injecting it.
        time.sleep(0.5)
        got = bytearray()
        while True:
            b = s.recv(4096)
            if not b:
                break
            got += b
            if len(got) < 256 << 10:
                time.sleep(0.0005)
    assert len(got) == 2 << 20 and got.count(b"x") == len(got)


def test_fixture_files_are_replied_byte_for_byte(registry, tmp_path):
    binary = bytes(range(256)) * 4 + b"\xff\xfe\x00not utf-8\r\n"
    (tmp_path / "fixture.example").write_bytes(binary)
    (tmp_path / "free-fixture.example").write_bytes(b"")
    (tmp_path / "big.example").write_bytes(b"y" * ((1 << 20) + 100))
    (tmp_path / ".hidden").write_bytes(b"never")
    (tmp_path / "dir.example").mkdir()
    r = registry("--fixtures", str(tmp_path))
    assert r.query("domain FIXTURE.example") == binary
    assert r.query("free-fixture.example") == b""      # an empty fixture beats rule 2
    assert r.query("big.example") == b"y" * (1 << 20)  # capped at 1 MiB
    assert r.query(".hidden") != b"never"
    want = FREE if registry_truth("dir.example") == "available" else TAKEN
    assert r.query("dir.example") == want.format("dir.example").encode()


def test_silent_prefix_never_replies_and_holds_the_connection(registry):
    r = registry()
    with r.connect(timeout=1.0) as s:
        s.sendall(b"silent-a.com\r\n")
        with pytest.raises(socket.timeout):
            s.recv(1)
        assert r.stats()["open"] == 1
    deadline = time.monotonic() + 5
    while r.stats()["open"] != 0:
        assert time.monotonic() < deadline, "silent connection not closed after the client left"
        time.sleep(0.02)


def test_query_line_limit_is_1024_bytes_including_lf(registry):
    r = registry()
    longest = b"free-" + b"a" * 1017 + b"\r\n"
    assert len(longest) == 1024
    assert r.query(longest) == FREE.format(longest[:-2].decode()).encode()
    assert r.query(b"x" + longest) == b""  # 1025 bytes: closed without a reply
    with r.connect() as s:
        s.sendall(b"free-no-lf.com")
        s.shutdown(socket.SHUT_WR)  # EOF before the LF: no reply either
        assert read_to_eof(s) == b""
    assert r.stats()["total"] == 1


def test_stats_counts_one_name_asked_concurrently_and_reset_zeroes(registry):
    r = registry("--delay-ms", "50")
    assert r.query("!reset") == b"OK\r\n"
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        replies = list(pool.map(lambda _: r.query("example.com"), range(200)))
    want = (FREE if registry_truth("example.com") == "available" else TAKEN).format("example.com")
    assert all(reply == want.encode() for reply in replies)
    r.query("free-other.com")
    stats = r.stats()
    assert stats == {"total": 201, "connections": 201, "open": 0,
                     "names": {"example.com": 200, "free-other.com": 1}}
    assert r.query("!reset") == b"OK\r\n"
    assert r.stats() == {"total": 0, "connections": 0, "open": 0, "names": {}}


def test_non_loopback_listen_addresses_are_refused():
    if not os.path.exists(BINARY):
        pytest.fail(f"{BINARY} is missing: build first")
    for addr in ["0.0.0.0:0", "10.1.2.3:0", "192.168.0.1:4343", "[::1]:0", "example.com:43", "127.0.0.1"]:
        p = subprocess.run([BINARY, "--listen", addr], capture_output=True, timeout=10, text=True)
        assert p.returncode == 2, addr
        assert p.stdout == "" and "--listen" in p.stderr, (addr, p.stderr)


def test_sigterm_exits_zero_with_connections_in_every_state(registry):
    r = registry("--delay-ms", "1000")
    socks = [r.connect() for _ in range(4)]
    socks[1].sendall(b"free-delayed.com\r\n")
    socks[2].sendall(b"silent-held.com\r\n")
    socks[3].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    r2 = registry()
    stalled = r2.connect()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"huge-stalled.com\r\n")
    time.sleep(0.3)
    for reg in (r, r2):
        rc, stderr = reg.stop()
        assert rc == 0, stderr
        assert "LeakSanitizer" not in stderr and "runtime error" not in stderr, stderr
    for s in socks + [stalled]:
        s.close()
