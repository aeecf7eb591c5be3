"""One budget per registry, however many queriers serve it: `budget:
global` (the default) makes the dispatcher hold the registry's rate limit
and concurrency for all of its queriers; `budget: per_address` lets each
querier spend the whole budget from its own `querier.source_address`.
The assertions are bounds that a slow machine only makes easier to meet:
never more than the limit in any window."""
import subprocess
import time

import pytest

from harness import FakeRegistry, binary, wait_until, whois_registry


def ask_all(c, names, timeout=60):
    answers = c.ask(names, timeout=timeout, fresh=True, deadline_ms=60000)
    assert [a["status"] for a in answers] == ["available"] * len(names), answers
    return answers


def max_in_window(times_ms, window_ms):
    times = sorted(times_ms)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window_ms:
            j += 1
        best = max(best, i - j + 1)
    return best


@pytest.mark.parametrize("budget", ["global", "per_address"])
def test_a_rate_limit_holds_across_three_queriers_unless_it_is_per_address(make_cluster, budget):
    registry = FakeRegistry()
    try:
        c = make_cluster({
            "dispatcher": {"heartbeat_ms": 200},
            "registries": {"test": whois_registry(registry.port, ["test"], queriers=3, budget=budget,
                                                  rate_limit={"queries": 5, "period_s": 1, "burst": 1})},
        }).start_all()
        wait_until(lambda: c.status("dispatcher")["gauges"]["queriers"] == 3, what="three queriers")
        names = [f"free-b{budget[0]}{i}.test" for i in range(30)]
        answers = ask_all(c, names)
        peak = max_in_window([a["at"] for a in answers], 1000)
        per_querier = [c.status(f"querier-{q}")["counters"] for q in ("test", "test.2", "test.3")]
        if budget == "global":
            # 5 a second for the registry, not 5 for each of its 3 queriers (+1: the edges of a window)
            assert peak <= 5 + 1, peak
        else:
            # each querier spends its own 5 a second: together well past one budget
            assert peak > 6, peak
        if budget == "per_address":
            assert sum(1 for q in per_querier if q["answered_available"] > 0) >= 2, per_querier
    finally:
        registry.close()


def test_global_concurrency_holds_across_queriers(make_cluster):
    registry = FakeRegistry(delay_ms=400)
    try:
        c = make_cluster({
            "registries": {"test": whois_registry(registry.port, ["test"], queriers=3, concurrency=2)},
        }).start_all()
        wait_until(lambda: c.status("dispatcher")["gauges"]["queriers"] == 3, what="three queriers")
        t0 = time.monotonic()
        ask_all(c, [f"free-cc{i}.test" for i in range(12)])
        # at most 2 at a time for the registry: 12 checks of 400 ms take 6 rounds at least
        # (3 queriers with 2 each would take 2 rounds)
        assert time.monotonic() - t0 >= 6 * 0.4 - 0.1
    finally:
        registry.close()


def test_budget_and_source_address_are_checked_at_their_line(tmp_path):
    def check(text):
        p = tmp_path / "a.yaml"
        p.write_text(f"runtime_dir: {tmp_path}/run\nstate_dir: {tmp_path}/state\n" + text)
        return subprocess.run([binary("availctl"), "config", "check", str(p)], capture_output=True, text=True,
                              timeout=30)

    r = check("registries:\n  t:\n    tlds: [t]\n    protocol: whois\n    host: 127.0.0.1\n    budget: shared\n")
    assert r.returncode == 1 and "a.yaml:8:13: 'budget' must be global or per_address" in r.stdout + r.stderr
    r = check("querier:\n  source_address: not-an-ip\n")
    assert r.returncode == 1 and "a.yaml:4:19: 'source_address' must be an IPv4 or IPv6 address" in r.stdout + r.stderr
    assert check("querier:\n  source_address: 127.0.0.2\n").returncode == 0


def test_a_querier_binds_its_source_address(make_cluster):
    registry = FakeRegistry()
    try:
        # 192.0.2.1 (TEST-NET-1) is no address of this host: the bind fails, and says so
        c = make_cluster({
            "querier": {"source_address": "192.0.2.1"},
            "registries": {"test": whois_registry(registry.port, ["test"])},
        }).start_all()
        a = c.ask("free-src.test", fresh=True)
        assert a["status"] == "unknown" and a["reason"] == "querier_error", a
        querier = next(d for d in c.daemons if d.kind == "querier")
        wait_until(lambda: "bind querier.source_address" in querier.log(), what="the querier saying why")
        # 127.0.0.2 is on loopback: bound, and answered
        c2 = make_cluster({
            "querier": {"source_address": "127.0.0.2"},
            "registries": {"test": whois_registry(registry.port, ["test"])},
        }).start_all()
        assert c2.ask("free-src2.test", fresh=True)["status"] == "available"
    finally:
        registry.close()
