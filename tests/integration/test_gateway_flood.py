"""The TCP line gateway under a flood of connections that say nothing
(issue 12, item 6): a well-behaved client from another address keeps
getting answers, whether the flood comes from one address or from many."""
import socket

import pytest

from harness import FakeRegistry, truth, wait_until, whois_registry


def cluster_for(make_cluster, registry):
    return make_cluster({
        "registries": {"test": whois_registry(registry.port, ["test"], concurrency=100)},
    }).start_all()


def gateway_port(c):
    return int(c.config["endpoints"]["intake_gateway"].rsplit(":", 1)[1])


def flood(port, sources, total):
    """total idle connections, spread over the source addresses given,
    that never send a byte. Returns the sockets (the caller closes them)."""
    socks = []
    for i in range(total):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((sources[i % len(sources)], 0))
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        socks.append(s)
    return socks


def ask_line(port, name, source="127.0.0.1", timeout=10.0):
    """One well-behaved client: connects from source, sends its line, reads
    until the server closes. Returns the reply (b"" when it got none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.bind((source, 0))
        chunks = []
        try:
            s.connect(("127.0.0.1", port))
            try:
                s.sendall(name.encode() + b"\r\n")
            except OSError:
                pass  # refused at once: what it said is still to be read
            while True:
                data = s.recv(4096)
                if not data:
                    break
                chunks.append(data)
        except OSError:
            pass
        return b"".join(chunks)


def well_behaved(port, count=61, prefix="fl"):
    """count requests one after another; returns the failures as
    (name, what came back)."""
    failures = []
    for i in range(count):
        name = f"{prefix}{i}.test"
        reply = ask_line(port, name).decode(errors="replace")
        if reply != f"{name} {truth(name)}\r\n":
            failures.append((name, reply))
    return failures


@pytest.mark.parametrize("sources", [1, 8], ids=["one address", "eight addresses"])
def test_a_flood_of_idle_connections_does_not_keep_a_client_out(make_cluster, sources):
    registry = FakeRegistry()
    socks = []
    try:
        c = cluster_for(make_cluster, registry)
        port = gateway_port(c)
        assert ask_line(port, "warm.test").startswith(b"warm.test ")
        total = 2000
        accepted_before = c.status("intake")["counters"]["gateway_accepted"]
        socks = flood(port, [f"127.0.0.{2 + k}" for k in range(sources)], total)
        # every one of them reached intake (accepted, then kept or refused)
        wait_until(lambda: c.status("intake")["counters"]["gateway_accepted"] - accepted_before >= total,
                   timeout=30, interval=0.1, what="the flood accepted")
        failures = well_behaved(port)
        status = c.status("intake")
        print(f"\nflood of {total} idle connections from {sources} address(es): "
              f"{len(failures)} of 61 requests failed; gateway_clients {status['gauges']['gateway_clients']}")
        assert not failures, f"{len(failures)} of 61 failed, e.g. {failures[:3]}"
        # the flood kept at most its share of the slots
        assert status["gauges"]["gateway_clients"] <= 1024
    finally:
        for s in socks:
            s.close()
        registry.close()


def test_one_address_gets_a_share_of_the_slots_and_is_told_so(make_cluster):
    registry = FakeRegistry()
    socks = []
    try:
        c = make_cluster({
            "intake": {"gateway_clients": 40},
            "registries": {"test": whois_registry(registry.port, ["test"])},
        }).start_all()
        port = gateway_port(c)
        socks = flood(port, ["127.0.0.2"], 10)  # a quarter of 40
        wait_until(lambda: c.status("intake")["gauges"]["gateway_clients"] == 10, what="10 idle connections")
        reply = ask_line(port, "more.test", source="127.0.0.2")
        assert reply == b"% too many connections from your address, try again\r\n", reply
        assert c.status("intake")["counters"]["gateway_refused_address"] == 1
        assert ask_line(port, "other.test") == f"other.test {truth('other.test')}\r\n".encode()
    finally:
        for s in socks:
            s.close()
        registry.close()


def test_silent_connections_are_closed_sooner_when_slots_run_low(make_cluster):
    """Past three quarters of the slots, a connection silent for a second
    is closed, though gateway_timeout_ms is a minute; a full gateway makes
    room for a newcomer by closing the oldest silent one."""
    registry = FakeRegistry()
    socks = []
    try:
        c = make_cluster({
            "intake": {"gateway_clients": 16, "gateway_timeout_ms": 60000},
            "registries": {"test": whois_registry(registry.port, ["test"])},
        }).start_all()
        port = gateway_port(c)
        socks = flood(port, [f"127.0.0.{2 + k}" for k in range(4)], 16)  # 4 each: every share full
        wait_until(lambda: c.status("intake")["gauges"]["gateway_clients"] == 16, what="16 idle connections")
        assert ask_line(port, "newcomer.test") == f"newcomer.test {truth('newcomer.test')}\r\n".encode()
        # Silent ones are closed after a second while three quarters of the
        # slots (12) are taken: all at once when they were accepted together,
        # or, when a busy machine spread their accepts over a scan, until
        # fewer than 12 are left, which then keep the minute of
        # gateway_timeout_ms like any connection when slots are plenty.
        wait_until(lambda: c.status("intake")["gauges"]["gateway_clients"] < 12, timeout=30,
                   what="the silent connections closed while slots ran low")
        status = c.status("intake")
        counters, left = status["counters"], status["gauges"]["gateway_clients"]
        # the newcomer took the oldest one's slot (unless a slow machine
        # let a second pass first and the short timeout made room)
        assert counters["gateway_evicted"] + counters["gateway_timeouts"] == 16 - left, (counters, left)
        assert counters["gateway_evicted"] <= 1 and counters["gateway_refused"] == 0, counters
    finally:
        for s in socks:
            s.close()
        registry.close()
