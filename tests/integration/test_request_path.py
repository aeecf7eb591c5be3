"""The request path end to end with the real binaries: intake, dispatcher,
querier, cache and errors against the loopback fake registry."""
import socket
import subprocess
import threading
import time

import msgpack
import pytest
import zmq

from harness import FakeRegistry, binary, free_port, truth, wait_until, whois_registry


@pytest.fixture
def registry():
    reg = FakeRegistry()
    yield reg
    reg.close()


def constellation(make_cluster, registry, extra=None, **registries):
    """A cluster with registry `test` (TLDs test, de) on the fake registry,
    plus whatever other registries are given."""
    config = {
        "dispatcher": {"heartbeat_ms": 100, "heartbeat_misses": 3},
        "registries": {"test": whois_registry(registry.port, ["test", "de"]), **registries},
    }
    if extra:
        for k, v in extra.items():
            config.setdefault(k, {}).update(v) if isinstance(v, dict) else config.__setitem__(k, v)
    return make_cluster(config).start_all()


def test_registry_replies_are_classified(make_cluster, registry):
    c = constellation(make_cluster, registry)
    cases = {
        "free-one.test": ("available", None),
        "taken-one.test": ("registered", None),
        "reserved-one.test": ("reserved", None),
        "garbage-one.test": ("unknown", "unparseable"),
        "empty-one.test": ("unknown", "empty_reply"),
    }
    for name, (status, reason) in cases.items():
        a = c.ask(name)
        assert (a["status"], a.get("reason")) == (status, reason), a
        assert a["registry"] == "test" and a["source"] == "whois" and a["name"] == name
    # Rate limited: unknown, and the querier backs off (reported, and the
    # next check is answered from the backoff without asking the registry).
    a = c.ask("limit-one.test")
    assert (a["status"], a["reason"]) == ("unknown", "rate_limited")
    before = registry.stats()["total"]
    a = c.ask("free-during-backoff.test")
    assert (a["status"], a["reason"]) == ("unknown", "rate_limited")
    assert registry.stats()["total"] == before, "the querier asked a registry it should back off"
    wait_until(lambda: any(e["code"] == "rate_limited" for e in c.control("errors", "recent")["events"]),
               what="rate_limited event")
    time.sleep(1.1)  # backoff_s: 1
    assert c.ask("free-after-backoff.test")["status"] == "available"


def test_idn_is_checked_as_its_a_label(make_cluster, registry):
    c = constellation(make_cluster, registry)
    a = c.ask("bücher.de")
    assert a["name"] == "xn--bcher-kva.de" and a["query"] == "bücher.de"
    assert a["status"] == truth("xn--bcher-kva.de")
    assert registry.stats()["names"] == {"xn--bcher-kva.de": 1}
    assert c.ask("BÜCHER.DE.")["name"] == "xn--bcher-kva.de"


def test_unsupported_tld_and_invalid_names_are_answered_at_once(make_cluster, registry):
    c = constellation(make_cluster, registry)
    t0 = time.monotonic()
    a = c.ask("example.invalidtld")
    assert (a["status"], a["reason"]) == ("unknown", "unsupported_tld")
    cases = {
        "a" * 64 + ".test": "label_too_long",
        ".".join(["abcdefghi"] * 26) + ".test": "name_too_long",
        "bad_name.test": "bad_character",
        "-dash.test": "bad_hyphen",
        "ab--cd.test": "bad_hyphen",
        "a..test": "empty_label",
        "test": "single_label",
        "www.example.test": "subdomain",
        "": "empty_name",
        "xn--zz.test": "idna_error",
    }
    for name, reason in cases.items():
        a = c.ask(name)
        assert (a["status"], a.get("reason")) == ("invalid", reason), (name, a)
    assert time.monotonic() - t0 < 5
    assert registry.stats()["total"] == 0, "invalid or unsupported names reached the registry"


def test_a_registry_host_that_cannot_be_resolved_is_unknown_dns_failure(make_cluster, registry):
    """The registry's host name does not resolve: `unknown dns_failure`, not
    a bare registry_error. Its querier runs in a network namespace of its
    own (`unshare -n`, only a downed loopback): the lookup fails at once on
    this machine and no packet leaves it, while the querier still talks to
    the dispatcher over ipc://."""
    config = {
        "dispatcher": {"heartbeat_ms": 100, "heartbeat_misses": 3},
        "registries": {
            "test": whois_registry(registry.port, ["test"]),
            "nodns": {**whois_registry(43, ["nodns"], timeout_ms=3000), "host": "whois.nic.nodns.invalid"},
            "nodnsrdap": {"tlds": ["nodnsrdap"], "protocol": "rdap", "timeout_ms": 3000, "backoff_s": 1,
                          "base_url": "https://rdap.nic.nodnsrdap.invalid/rdap/"},
        },
        "queriers": {"isolated": {"registries": ["nodns", "nodnsrdap"]}},
    }
    c = make_cluster(config)
    assert c.endpoint("dispatcher_workers").startswith("ipc://")
    c.start("errors")
    c.start("cache")
    c.start("dispatcher")
    c.start("querier", "test")
    c.start("querier", "isolated", wrap=["unshare", "-n"])
    c.start("intake")
    for name in ("anything.nodns", "anything.nodnsrdap"):
        a = c.ask(name, timeout=30)
        assert (a["status"], a["reason"]) == ("unknown", "dns_failure"), (name, a)
    # The querier counts it under its own name, and the rest keeps answering.
    counters = c.status("querier-isolated")["counters"]
    assert any(k.endswith("dns_failures") and v >= 1 for k, v in counters.items()), counters
    assert c.ask("free-x.test")["status"] == "available"


def test_registry_down_or_silent_gives_unknown_within_the_timeout(make_cluster, registry):
    dead_port = free_port()  # nothing listens there
    c = constellation(make_cluster, registry,
                      down=whois_registry(dead_port, ["down"], timeout_ms=500),
                      slow=whois_registry(registry.port, ["slow"], timeout_ms=500))
    t0 = time.monotonic()
    a = c.ask("anything.down")
    assert (a["status"], a["reason"]) == ("unknown", "connect_failed")
    # The reasons tell which bound decided; the times only that it was not
    # intake's deadline (10 s), with room for a busy machine.
    assert time.monotonic() - t0 < 8
    t0 = time.monotonic()
    a = c.ask("silent-x.slow")
    assert (a["status"], a["reason"]) == ("unknown", "timeout")
    assert time.monotonic() - t0 < 8
    # A frontend's own deadline is honoured too.
    t0 = time.monotonic()
    a = c.ask("silent-y.test", deadline_ms=300)
    assert (a["status"], a["reason"]) == ("unknown", "deadline")
    assert time.monotonic() - t0 < 8


def test_the_second_check_comes_from_the_cache(make_cluster, registry):
    c = constellation(make_cluster, registry)
    first = c.ask("taken-cached.test")
    assert first["source"] == "whois"
    second = wait_until(lambda: (lambda a: a if a["source"] == "cache" else None)(c.ask("taken-cached.test")),
                        what="a cache hit")
    assert second["status"] == "registered" and second["registry"] == "test"
    assert registry.stats()["names"]["taken-cached.test"] == 1
    fresh = c.ask("taken-cached.test", fresh=True)
    assert fresh["source"] == "whois"
    assert registry.stats()["names"]["taken-cached.test"] == 2
    # purge makes the next check ask the registry again
    c.availctl("cache", "purge", "taken-cached.test", check=0)
    assert c.ask("taken-cached.test")["source"] == "whois"


def test_a_batch_of_500_mixed_names_gets_500_answers_each_once(make_cluster, registry):
    other = FakeRegistry()
    try:
        c = constellation(make_cluster, registry, other=whois_registry(other.port, ["other"]))
        names = [f"batch{i}.test" if i % 2 else f"batch{i}.other" for i in range(480)]
        names += [f"bad_{i}.test" for i in range(10)] + [f"x{i}.nowhere" for i in range(10)]
        answers = c.ask(names, timeout=30)
        assert len(answers) == 500
        assert [a["idx"] for a in answers] == list(range(500))
        for name, a in zip(names, answers):
            assert a["query"] == name
            if name.startswith("bad_"):
                assert a["status"] == "invalid"
            elif name.endswith(".nowhere"):
                assert a["reason"] == "unsupported_tld"
            else:
                assert a["status"] == truth(name), (name, a)
                assert a["registry"] == ("test" if name.endswith(".test") else "other")

        # The same batch pushed on the PULL path: 500 answers published on
        # the request's id, each once.
        sub = c.socket(zmq.SUB, c.endpoint("intake_results"))
        sub.setsockopt(zmq.SUBSCRIBE, b"batch-pull/")
        push = c.socket(zmq.PUSH, c.endpoint("intake_pull"))
        probe = 0
        while not sub.poll(100):  # wait for the subscription to join
            push.send(msgpack.packb({"t": "check", "v": 1, "id": f"batch-pull/probe{probe}", "name": "free-p.test"}))
            probe += 1
        while sub.poll(300):
            sub.recv_multipart()
        push.send(msgpack.packb({"t": "check", "v": 1, "id": "batch-pull/1", "names": names}))
        got = {}
        while len(got) < 500 and sub.poll(10000):
            topic, body = sub.recv_multipart()
            if topic.startswith(b"batch-pull/probe"):
                continue  # a probe's answer later than the drain above
            a = msgpack.unpackb(body, raw=False)
            assert topic == b"batch-pull/1" and a["id"] == "batch-pull/1"
            assert a["idx"] not in got, f"idx {a['idx']} answered twice"
            got[a["idx"]] = a
        assert sorted(got) == list(range(500))
        assert not sub.poll(500), "an answer beyond the 500"
    finally:
        other.close()


def test_200_concurrent_checks_of_one_name_cause_one_registry_query(make_cluster):
    registry = FakeRegistry(delay_ms=500)
    try:
        c = constellation(make_cluster, registry)
        sub = c.socket(zmq.SUB, c.endpoint("intake_results"))
        sub.setsockopt(zmq.SUBSCRIBE, b"same/")
        push = c.socket(zmq.PUSH, c.endpoint("intake_pull"))
        probe = 0
        while not sub.poll(100):
            push.send(msgpack.packb({"t": "check", "v": 1, "id": f"same/probe{probe}", "name": "bad_.test"}))
            probe += 1
        while sub.poll(200):
            sub.recv_multipart()
        for i in range(200):
            push.send(msgpack.packb({"t": "check", "v": 1, "id": f"same/{i}", "name": "coalesce-me.test"}))
        topics = set()
        while len(topics) < 200 and sub.poll(10000):
            topic, body = sub.recv_multipart()
            if topic.startswith(b"same/probe"):
                continue  # a probe's answer later than the drain above
            a = msgpack.unpackb(body, raw=False)
            assert a["status"] == truth("coalesce-me.test") and a["source"] == "whois"
            assert topic not in topics
            topics.add(topic)
        assert len(topics) == 200
        assert registry.stats()["names"]["coalesce-me.test"] == 1
        assert c.status("dispatcher")["counters"]["coalesced"] == 199
    finally:
        registry.close()


def test_whois_client_against_the_gateway(make_cluster, registry):
    c = constellation(make_cluster, registry)
    port = int(c.config["endpoints"]["intake_gateway"].rsplit(":", 1)[1])
    r = subprocess.run(["whois", "-h", "127.0.0.1", "-p", str(port), "taken-gw.test"], capture_output=True,
                       text=True, timeout=20)
    assert r.stdout.strip() == "taken-gw.test registered"
    r = subprocess.run(["whois", "-h", "127.0.0.1", "-p", str(port), "bad_gw.test"], capture_output=True,
                       text=True, timeout=20)
    assert r.stdout.strip() == "bad_gw.test invalid bad_character"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"  free-gw.test \r\n")
        assert s.makefile("rb").read() == b"free-gw.test available\r\n"


def test_a_gateway_client_accepted_before_a_stop_is_answered_when_its_line_comes_after(make_cluster, registry):
    import signal
    c = constellation(make_cluster, registry)
    port = int(c.config["endpoints"]["intake_gateway"].rsplit(":", 1)[1])
    intake = next(d for d in c.daemons if d.kind == "intake")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        wait_until(lambda: c.status("intake")["gauges"]["gateway_clients"] == 1, what="the connection accepted")
        intake.signal(signal.SIGTERM)
        wait_until(lambda: "SIGTERM: stopping" in intake.log(), what="intake stopping")
        time.sleep(0.3)
        assert intake.alive(), "intake left a client it had accepted"
        s.sendall(b"taken-late.test\r\n")
        assert s.makefile("rb").read() == b"taken-late.test registered\r\n"
    assert intake.proc.wait(10) == 0


def test_cidr_deny_refuses_a_gateway_client(make_cluster, registry):
    c = constellation(make_cluster, registry, extra={"intake": {"cidr_deny": ["127.0.0.0/8"]}})
    port = int(c.config["endpoints"]["intake_gateway"].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"free-x.test\r\n")
        s.settimeout(5)
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
    assert data == b""
    assert c.status("intake")["counters"]["gateway_refused"] == 1
    assert registry.stats()["total"] == 0


def test_killing_the_querier_mid_flight_still_answers_all_100_once(make_cluster):
    registry = FakeRegistry(delay_ms=600)
    try:
        c = make_cluster({
            "dispatcher": {"heartbeat_ms": 100, "heartbeat_misses": 3},
            "registries": {"test": whois_registry(registry.port, ["test"], concurrency=200)},
        }).start_all()
        names = [f"kill{i}.test" for i in range(100)]
        result = {}

        def ask():
            result["answers"] = c.ask(names, timeout=30)

        t = threading.Thread(target=ask)
        t.start()
        querier = next(d for d in c.daemons if d.kind == "querier")
        wait_until(lambda: registry.stats()["open"] >= 50, what="checks in flight at the registry")
        querier.kill()
        querier.start()
        t.join(40)
        answers = result["answers"]
        assert len(answers) == 100
        assert [a["idx"] for a in answers] == list(range(100))
        for name, a in zip(names, answers):
            assert a["status"] == truth(name), (name, a)
        assert c.status("dispatcher")["counters"]["redispatched"] >= 50
    finally:
        registry.close()


def test_bad_requests_get_an_invalid_answer_never_silence(make_cluster, registry):
    c = constellation(make_cluster, registry)
    d = c.socket(zmq.DEALER, c.endpoint("intake_router"))
    bad = [
        (b"not msgpack", None),
        (msgpack.packb({"t": "check", "v": 1, "name": "x.test"}), "missing key 'id'"),
        (msgpack.packb({"t": "check", "v": 1, "id": "q"}), "missing key 'name'"),
        (msgpack.packb({"t": "check", "v": 1, "id": "q", "name": 5}), "wrong type 'name'"),
        (msgpack.packb({"t": "check", "v": 1, "id": "q", "names": ["a.test"] * 1001}), "too long 'names'"),
        (msgpack.packb({"t": "answer", "v": 1, "id": "q", "name": "a", "status": "available"}), "not a check"),
    ]
    for body, why in bad:
        d.send(body)
        assert d.poll(5000), f"no answer to {body[:30]!r}"
        a = msgpack.unpackb(d.recv(), raw=False)
        assert a["t"] == "answer" and a["status"] == "invalid"
        assert a["reason"].startswith("bad request")
        if why:
            assert why in a["reason"], a
    assert c.status("intake")["counters"]["invalid_requests"] == len(bad)
    # On the PULL path the invalid answer is published on the request's id.
    sub = c.socket(zmq.SUB, c.endpoint("intake_results"))
    sub.setsockopt(zmq.SUBSCRIBE, b"badpull")
    push = c.socket(zmq.PUSH, c.endpoint("intake_pull"))
    got = None
    deadline = time.monotonic() + 10
    while got is None and time.monotonic() < deadline:
        push.send(msgpack.packb({"t": "check", "v": 1, "id": "badpull", "name": ["not", "a", "string"]}))
        if sub.poll(200):
            got = msgpack.unpackb(sub.recv_multipart()[1], raw=False)
    assert got and got["status"] == "invalid" and "wrong type 'name'" in got["reason"]


def test_availctl_check_prints_answers_and_sets_its_exit_status(make_cluster, registry):
    c = constellation(make_cluster, registry)
    r = c.availctl("check", "taken-ctl.test", "free-ctl.test", check=0)
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["taken-ctl.test", "registered", "whois", "test"]
    assert lines[1].split()[:4] == ["free-ctl.test", "available", "whois", "test"]
    r = c.availctl("check", "taken-ctl.test", "bad_.test", check=1)
    assert r.stdout.splitlines()[0].split()[:3] == ["taken-ctl.test", "registered", "cache"]
    assert "invalid" in r.stdout.splitlines()[1]
    r = c.availctl("--json", "check", "garbage-ctl.test", "--raw", check=1)
    import json
    a = json.loads(r.stdout)
    assert a["status"] == "unknown" and a["reason"] == "unparseable" and a["raw"]
    r = c.availctl("check", check=2)
    intake = next(d for d in c.daemons if d.kind == "intake")
    intake.stop()
    r = c.availctl("--timeout", "200", "check", "x.test", "--deadline", "300", check=2)
    assert "no answer from intake" in r.stderr


def test_a_registry_without_a_querier_is_answered_no_querier_at_once(make_cluster, registry):
    c = constellation(make_cluster, registry, extra={"dispatcher": {"querier_grace_ms": 300}},
                      lonely=whois_registry(registry.port, ["lonely"]))
    querier = next(d for d in c.daemons if d.ident == "querier-lonely")
    querier.stop()
    time.sleep(0.5)  # past the dispatcher's grace for a querier to come back (300 ms)
    t0 = time.monotonic()
    a = c.ask("free-x.lonely")
    assert (a["status"], a["reason"]) == ("unknown", "no_querier")
    assert time.monotonic() - t0 < 8  # intake's deadline is 10 s; the reason says which decided


def test_status_covers_every_daemon(make_cluster, registry):
    c = constellation(make_cluster, registry)
    r = c.availctl("status", check=0)
    for ident in ("intake", "dispatcher", "cache", "errors", "querier-test"):
        assert ident in r.stdout
    assert r.stdout.splitlines()[-1] == "5 up, 0 down"
    assert " down " not in "\n".join(r.stdout.splitlines()[:-1])
    assert binary("intake")


def test_checks_are_answered_while_the_cache_is_down(make_cluster, registry):
    c = constellation(make_cluster, registry)
    c.ask("taken-before.test")
    cache = next(d for d in c.daemons if d.kind == "cache")
    cache.kill()
    for i in range(20):
        a = c.ask(f"free-nocache{i}.test")
        assert a["status"] == "available" and a["source"] == "whois"
    # What was cached before is still read: the dispatcher reads LMDB itself.
    assert c.ask("taken-before.test")["source"] == "cache"
    cache.start()
    c.ask("taken-after.test")
    wait_until(lambda: c.ask("taken-after.test")["source"] == "cache", what="caching again")


def test_the_rate_limit_spaces_queries_to_the_registry(make_cluster, registry):
    c = make_cluster({
        "dispatcher": {"heartbeat_ms": 100},
        "registries": {"test": whois_registry(registry.port, ["test"],
                                              rate_limit={"queries": 4, "period_s": 1, "burst": 1})},
    }).start_all()
    names = [f"rated{i}.test" for i in range(6)]
    t0 = time.monotonic()
    answers = c.ask(names, timeout=20)
    elapsed = time.monotonic() - t0
    assert [a["status"] for a in answers] == [truth(n) for n in names]
    # one token at once, then 4 a second: the sixth goes out after 1.25 s
    assert elapsed >= 1.2, f"6 queries at 4/s took only {elapsed:.2f}s"


def test_the_concurrency_cap_bounds_queries_in_flight(make_cluster):
    registry = FakeRegistry(delay_ms=300)
    try:
        c = make_cluster({
            "dispatcher": {"heartbeat_ms": 100},
            "registries": {"test": whois_registry(registry.port, ["test"], concurrency=2)},
        }).start_all()
        names = [f"capped{i}.test" for i in range(6)]
        seen_open = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                seen_open.append(registry.stats()["open"])
                time.sleep(0.02)

        t = threading.Thread(target=watch)
        t.start()
        t0 = time.monotonic()
        answers = c.ask(names, timeout=20)
        elapsed = time.monotonic() - t0
        stop.set()
        t.join()
        assert [a["status"] for a in answers] == [truth(n) for n in names]
        assert max(seen_open) <= 2, f"{max(seen_open)} queries in flight with concurrency 2"
        assert elapsed >= 0.85, f"3 rounds of 300 ms took {elapsed:.2f}s"
    finally:
        registry.close()


def test_a_hung_querier_is_detected_and_its_checks_go_to_another(make_cluster):
    import signal as sig
    registry = FakeRegistry(delay_ms=200)
    try:
        c = make_cluster({
            "dispatcher": {"heartbeat_ms": 100, "heartbeat_misses": 3},
            "registries": {"test": whois_registry(registry.port, ["test"], queriers=2, concurrency=100)},
        }).start_all()
        queriers = [d for d in c.daemons if d.kind == "querier"]
        assert [q.ident for q in queriers] == ["querier-test", "querier-test.2"]
        hung = queriers[0]
        hung.signal(sig.SIGSTOP)  # alive but silent: no heartbeats, no answers
        try:
            names = [f"hung{i}.test" for i in range(40)]
            answers = c.ask(names, timeout=20)
            assert [a["status"] for a in answers] == [truth(n) for n in names]
        finally:
            hung.signal(sig.SIGCONT)
        counters = c.status("dispatcher")["counters"]
        assert counters["workers_lost"] >= 1
        # Its late answers, if any, reach nobody twice: the batch had one reply.
        time.sleep(0.5)
        assert c.status("intake")["counters"]["duplicates"] == 0
    finally:
        registry.close()


def test_a_batch_reply_waits_for_every_answer_or_the_deadline(make_cluster, registry):
    c = constellation(make_cluster, registry)
    names = ["taken-b1.test", "silent-b2.test", "free-b3.test", "silent-b4.test"]
    t0 = time.monotonic()
    answers = c.ask(names, deadline_ms=800)
    assert 0.7 < time.monotonic() - t0 < 8  # the reasons below tell the deadline from the registry's timeout
    assert [(a["status"], a.get("reason")) for a in answers] == [
        ("registered", None), ("unknown", "deadline"), ("available", None), ("unknown", "deadline")]


def test_cached_answers_expire_after_their_ttl(make_cluster, registry):
    c = make_cluster({
        "dispatcher": {"heartbeat_ms": 100},
        "cache": {"sweep_interval_s": 1},
        "registries": {"test": whois_registry(registry.port, ["test"], ttl={"available": 1, "registered": 3600})},
    }).start_all()
    c.ask("free-ttl.test")
    c.ask("taken-ttl.test")
    wait_until(lambda: c.ask("free-ttl.test")["source"] == "cache", what="cached")
    time.sleep(1.2)
    assert c.ask("free-ttl.test")["source"] == "whois", "an expired answer was served"
    assert c.ask("taken-ttl.test")["source"] == "cache"
    r = c.availctl("cache", "stats", check=0)
    assert "test" in r.stdout
