"""clients/python/availd_client.py against a loopback constellation: one
name, batches past the protocol's 1,000, an intake killed while a client
waits (the client asks again with the same id and gets every answer), and
pushed checks read with `async for` by a fresh subscriber that waited for
the pong. The examples/python frontend is run in each of its modes."""
import asyncio
import os
import subprocess
import sys
import threading

import pytest

from harness import FakeRegistry, truth, whois_registry

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(TOP, "clients", "python"))

import availd_client  # noqa: E402


@pytest.fixture
def registry():
    reg = FakeRegistry()
    yield reg
    reg.close()


def cluster_for(make_cluster, registry):
    return make_cluster({
        "intake": {"resend_ms": 1000},
        "registries": {"test": whois_registry(registry.port, ["test"], concurrency=200)},
    }).start_all()


def test_one_name_and_batches_of_any_size(make_cluster, registry):
    c = cluster_for(make_cluster, registry)
    with availd_client.Client(c.endpoint("intake_router")) as client:
        a = client.check("taken-one.test")  # a prefix rule of the fake registry
        assert (a["name"], a["status"]) == ("taken-one.test", "registered")
        assert client.check("not a name!")["status"] == "invalid"
        assert client.ping()
        names = [f"b{i}.test" for i in range(2500)]  # three requests: 1,000 + 1,000 + 500
        answers = client.check_many(names)
        assert [a["query"] for a in answers] == names
        wrong = [(a["query"], a["status"]) for a in answers if a["status"] != truth(a["query"])]
        assert not wrong, wrong[:5]


def test_an_intake_killed_while_a_client_waits_costs_a_delay_not_an_answer(make_cluster):
    slow = FakeRegistry(delay_ms=1500)
    try:
        c = cluster_for(make_cluster, slow)
        intake = next(d for d in c.daemons if d.kind == "intake")
        names = [f"k{i}.test" for i in range(40)]
        got, failed = {}, []

        def ask():
            try:
                with availd_client.Client(c.endpoint("intake_router"), deadline_ms=4000, margin_s=1.0,
                                          attempts=5) as client:
                    for a in client.check_many(names):
                        got[a["query"]] = a
            except availd_client.AvaildError as e:
                failed.append(e)

        t = threading.Thread(target=ask)
        t.start()
        # the check is in flight at the registry (1.5 s each) when intake dies
        from harness import wait_until
        wait_until(lambda: c.status("intake")["counters"]["requests"] >= 1, timeout=30, what="the request taken")
        intake.kill()
        intake.start()
        t.join(120)
        assert not t.is_alive(), "the client never returned"
        assert not failed, failed
        assert sorted(got) == sorted(names)
        wrong = {n: a["status"] for n, a in got.items() if a["status"] != truth(n)}
        assert not wrong, wrong
    finally:
        slow.close()


def test_pushed_checks_are_read_with_async_for(make_cluster, registry):
    c = cluster_for(make_cluster, registry)

    async def run():
        async with availd_client.Pusher(c.endpoint("intake_pull"), c.endpoint("intake_results")) as p:
            await p.push("pa.test")
            await p.push([f"p{i}.test" for i in range(120)])
            await p.push("pb.test")
            assert p.pending == 122
            return [a async for a in p.answers(timeout_s=30)]

    answers = asyncio.run(run())
    assert len(answers) == 122
    wrong = [(a["query"], a["status"]) for a in answers if a["status"] != truth(a["query"])]
    assert not wrong, wrong[:5]
    assert {a["query"] for a in answers} >= {"pa.test", "pb.test", "p0.test", "p119.test"}


def test_no_intake_is_a_clear_error_not_a_hang(tmp_path):
    async def run():
        p = availd_client.Pusher(f"ipc://{tmp_path}/none-pull.sock", f"ipc://{tmp_path}/none-results.sock")
        try:
            await p.connect(timeout_s=1.0)
        finally:
            p.close()

    with pytest.raises(availd_client.AvaildError, match="no pong"):
        asyncio.run(run())
    with availd_client.Client(f"ipc://{tmp_path}/none.sock", deadline_ms=200, margin_s=0.1, attempts=2) as client:
        with pytest.raises(availd_client.AvaildError, match="after 2 attempts"):
            client.check("x.test")


@pytest.mark.parametrize("mode", ["check", "batch", "push", "gateway"])
def test_the_python_example_frontend(make_cluster, registry, mode):
    c = cluster_for(make_cluster, registry)
    names = ["ex1.test", "ex2.test", "ex3.test", "ex4.test", "ex5.test"]  # truth() gives both statuses
    r = subprocess.run(["/usr/bin/python3", os.path.join(TOP, "examples", "python", "frontend.py"),
                        "-c", c.config_path, mode, *names], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = sorted(r.stdout.splitlines())
    assert lines == sorted(f"{n} {truth(n)}" for n in names), r.stdout
