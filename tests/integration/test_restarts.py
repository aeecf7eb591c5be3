"""Nothing lost while a daemon restarts: the intake journal, re-sending to a
restarted dispatcher, queriers handing work back, graceful stops, and
messages from older or newer daemons."""
import signal
import time

import msgpack
import pytest
import zmq

from harness import FakeRegistry, truth, wait_until, whois_registry


def cluster_for(make_cluster, registry, **extra):
    config = {
        "dispatcher": {"heartbeat_ms": 100, "heartbeat_misses": 3},
        "intake": {"resend_ms": 1000},
        "registries": {"test": whois_registry(registry.port, ["test"], concurrency=500, timeout_ms=5000)},
    }
    for k, v in extra.items():
        config.setdefault(k, {}).update(v)
    return make_cluster(config)


class Frontend:
    """A request-reply frontend with a fixed routing id, as DESIGN asks of
    frontends that want their answers across an intake restart."""

    def __init__(self, cluster, routing_id=b"frontend-1"):
        self.sock = cluster.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, routing_id)
        self.sock.connect(cluster.endpoint("intake_router"))
        self.answers = {}
        self.sent = {}   # id -> (name, fields, last sent)
        self.retried = 0

    def send(self, rid, name, **fields):
        self.sent[rid] = (name, fields, time.monotonic())
        self.sock.send(msgpack.packb(dict({"t": "check", "v": 1, "id": rid, "name": name}, **fields)))

    def collect(self, want, timeout=30, retry_after=None):
        """Reads answers; with retry_after, asks again (same id) for what
        got no answer by then, as a frontend does after an intake crash."""
        deadline = time.monotonic() + timeout
        while len(self.answers) < want and time.monotonic() < deadline:
            if self.sock.poll(100):
                a = msgpack.unpackb(self.sock.recv(), raw=False)
                self.answers.setdefault(a["id"], []).append(a)
            if retry_after:
                now = time.monotonic()
                for rid, (name, fields, at) in list(self.sent.items()):
                    if rid not in self.answers and now - at > retry_after:
                        self.retried += 1
                        self.send(rid, name, **fields)
        return self.answers


def test_intake_killed_mid_flight_answers_every_journaled_request_once(make_cluster):
    registry = FakeRegistry(delay_ms=1500)
    try:
        c = cluster_for(make_cluster, registry).start_all()
        fe = Frontend(c)
        names = {f"r{i}": f"journal{i}.test" for i in range(100)}
        for rid, name in names.items():
            fe.send(rid, name)
        # all 100 are journaled once they reach the registry
        wait_until(lambda: registry.stats()["open"] == 100, what="100 queries at the registry")
        intake = next(d for d in c.daemons if d.kind == "intake")
        intake.kill()
        intake.start()
        answers = fe.collect(100)
        assert sorted(answers) == sorted(names)
        for rid, got in answers.items():
            assert len(got) == 1, f"{rid} answered {len(got)} times"
            assert got[0]["status"] == truth(names[rid]), got
        assert c.status("intake")["counters"]["resubmitted"] == 100
        time.sleep(0.5)
        assert all(len(v) == 1 for v in fe.collect(101, timeout=0.5).values())
    finally:
        registry.close()


def test_answers_of_a_frontend_without_routing_id_do_not_reach_another_after_an_intake_crash(make_cluster):
    """libzmq names a DEALER without a routing id of its own by a number it
    counts from the same start in every process: after intake restarts,
    the id that asked may name another frontend. Intake must not send the
    journaled answers there (before: the other frontend got them all).
    The start is CZMQ's seed, time(NULL): the ids repeat when intake starts
    again within the second it started in, which this test arranges (on a
    busy machine it may not manage; what it asserts holds either way)."""
    registry = FakeRegistry(delay_ms=1500)
    try:
        c = cluster_for(make_cluster, registry).start_all()
        intake = next(d for d in c.daemons if d.kind == "intake")
        intake.kill()
        wait_until(lambda: time.time() % 1 < 0.05, interval=0.005, what="a new second")
        intake.start()
        asker = c.socket(zmq.DEALER)
        asker.setsockopt(zmq.RECONNECT_IVL, 2000)  # comes back last
        asker.connect(c.endpoint("intake_router"))
        ping = {"t": "check", "v": 1, "id": "warm", "name": "not_a_name!.test"}  # answered by intake itself
        asker.send(msgpack.packb(ping))
        assert asker.poll(15000), "no answer before the crash"
        asker.recv()
        other = c.socket(zmq.DEALER)
        other.setsockopt(zmq.RECONNECT_IVL, 10)   # comes back first
        other.connect(c.endpoint("intake_router"))
        other.send(msgpack.packb(dict(ping, id="other-warm")))
        assert other.poll(15000), "no answer to the other frontend before the crash"
        other.recv()
        names = {f"anon{i}": f"anon{i}.test" for i in range(20)}
        for rid, name in names.items():
            asker.send(msgpack.packb({"t": "check", "v": 1, "id": rid, "name": name}))
        wait_until(lambda: registry.stats()["open"] == len(names), interval=0.01, what="the checks at the registry")
        intake.kill()
        intake.start()
        wait_until(lambda: other.poll(0) or c.status("intake")["counters"]["answers_lost"] >= len(names),
                   timeout=30, what="the journaled answers counted lost")
        strays = []
        while other.poll(500):
            strays.append(msgpack.unpackb(other.recv(), raw=False)["id"])
        assert not strays, f"another frontend got the answers of {strays}"
        # the other frontend is served as ever
        other.send(msgpack.packb(dict(ping, id="other-after")))
        assert other.poll(15000) and msgpack.unpackb(other.recv(), raw=False)["id"] == "other-after"
    finally:
        registry.close()


def test_a_journaled_pushed_batch_is_not_published_twice_after_a_restart(make_cluster):
    registry = FakeRegistry()
    try:
        c = cluster_for(make_cluster, registry).start_all()
        sub = c.socket(zmq.SUB, c.endpoint("intake_results"))
        sub.setsockopt(zmq.SUBSCRIBE, b"pb")
        push = c.socket(zmq.PUSH, c.endpoint("intake_pull"))
        n = 0
        while not sub.poll(100):
            push.send(msgpack.packb({"t": "check", "v": 1, "id": f"pbprobe{n}", "name": "free-p.test"}))
            n += 1
        while sub.poll(200):
            sub.recv_multipart()
        # half the batch is answered at once, half waits on silent names
        names = [f"free-q{i}.test" for i in range(10)] + [f"silent-q{i}.test" for i in range(10)]
        push.send(msgpack.packb({"t": "check", "v": 1, "id": "pb1", "names": names, "deadline_ms": 4000}))
        got = []
        while len(got) < 10 and sub.poll(5000):
            topic, body = sub.recv_multipart()
            if topic.startswith(b"pbprobe"):
                continue  # a probe's answer later than the drain above
            got.append(msgpack.unpackb(body, raw=False)["idx"])
        assert sorted(got) == list(range(10))
        # No wait here: an answer goes out only after the commit that took
        # it out of the journal, so the journal holds the silent half alone.
        intake = next(d for d in c.daemons if d.kind == "intake")
        intake.kill()
        intake.start()
        rest = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and len(rest) < 10:
            if sub.poll(200):
                topic, body = sub.recv_multipart()
                if not topic.startswith(b"pbprobe"):
                    rest.append(msgpack.unpackb(body, raw=False))
        assert sorted(a["idx"] for a in rest) == list(range(10, 20))
        assert all((a["status"], a["reason"]) == ("unknown", "deadline") for a in rest)
    finally:
        registry.close()


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
def test_a_dispatcher_restart_mid_flight_loses_nothing(make_cluster, hard):
    registry = FakeRegistry(delay_ms=800)
    try:
        c = cluster_for(make_cluster, registry).start_all()
        fe = Frontend(c)
        names = {f"d{i}": f"disp{i}.test" for i in range(100)}
        for rid, name in names.items():
            fe.send(rid, name)
        wait_until(lambda: registry.stats()["open"] >= 50, what="queries at the registry")
        dispatcher = next(d for d in c.daemons if d.kind == "dispatcher")
        t0 = time.monotonic()
        dispatcher.restart(hard=hard)
        answers = fe.collect(100)
        assert sorted(answers) == sorted(names)
        for rid, got in answers.items():
            assert len(got) == 1 and got[0]["status"] == truth(names[rid]), got
        assert time.monotonic() - t0 < 10
        assert c.status("intake")["counters"]["resent"] >= 1 or not hard
    finally:
        registry.close()


def test_a_querier_stopping_hands_back_what_it_has_not_sent(make_cluster):
    registry = FakeRegistry(delay_ms=400)
    try:
        c = make_cluster({
            "dispatcher": {"heartbeat_ms": 100, "heartbeat_misses": 3},
            # per_address: each querier holds its own queue (under a global budget
            # the dispatcher holds the waiting checks, and a querier has none to hand back)
            "registries": {"test": whois_registry(registry.port, ["test"], concurrency=5, queue=500, queriers=2,
                                                  budget="per_address")},
        }).start_all()
        fe = Frontend(c)
        names = {f"h{i}": f"hand{i}.test" for i in range(60)}
        for rid, name in names.items():
            fe.send(rid, name)
        first = next(d for d in c.daemons if d.ident == "querier-test")
        wait_until(lambda: c.status("querier-test")["counters"]["checks"] > 10, what="checks at the querier")
        assert first.stop() == 0  # SIGTERM: exits once its in-flight queries are answered
        assert c.status("querier-test.2")  # the other one carries on
        answers = fe.collect(60)
        assert sorted(answers) == sorted(names)
        bad = {k: v for k, v in answers.items() if len(v) != 1 or v[0]["status"] != truth(names[k])}
        assert not bad, [(k, v[0]["status"], v[0].get("reason"), len(v)) for k, v in bad.items()]
        assert "handed" in first.log()
    finally:
        registry.close()


def test_every_daemon_stops_gracefully_with_status_0(make_cluster):
    registry = FakeRegistry()
    try:
        c = cluster_for(make_cluster, registry).start_all()
        for d in reversed(c.daemons):
            assert d.stop() == 0, d.log()
            assert d.notify.seen("STOPPING=1")
    finally:
        registry.close()


def test_messages_of_an_older_and_a_newer_version_are_understood(make_cluster):
    """Side by side during a roll: a frontend or daemon of version 1 that
    sends only the keys it knew, and a newer one (v=2) with keys this
    version does not know, are both served."""
    registry = FakeRegistry()
    try:
        c = cluster_for(make_cluster, registry).start_all()
        d = c.socket(zmq.DEALER, c.endpoint("intake_router"))
        d.send(msgpack.packb({"t": "check", "v": 1, "id": "old", "name": "taken-v.test"}))
        d.send(msgpack.packb({"t": "check", "v": 2, "id": "new", "name": "free-v.test",
                              "priority": "high", "trace": {"span": 7}}))
        got = {}
        while len(got) < 2 and d.poll(5000):
            a = msgpack.unpackb(d.recv(), raw=False)
            got[a["id"]] = a["status"]
        assert got == {"old": "registered", "new": "available"}

        # A querier of another version: a fake one speaking the minimal
        # format (no pid, a heartbeat with extra keys, v=2 answers).
        workers = c.status("dispatcher")["gauges"]["workers"]  # the real querier's
        fake = c.socket(zmq.DEALER, c.endpoint("dispatcher_workers"))
        fake.send(msgpack.packb({"t": "ready", "v": 2, "registry": "fake", "credit": 10, "zone": "eu"}))
        c.config["registries"]["fake"] = whois_registry(registry.port, ["fake"])
        c.write_config()
        dispatcher = next(x for x in c.daemons if x.kind == "dispatcher")
        dispatcher.signal(signal.SIGHUP)
        wait_until(lambda: c.status("dispatcher")["counters"]["reloads"] == 1, what="reload")
        # It heartbeats as a querier does (a silent one is dropped after
        # heartbeat_misses x heartbeat_ms, 0.3 s here) until the check comes.
        heartbeat = msgpack.packb({"t": "heartbeat", "v": 2, "registry": "fake", "credit": 10, "load": 0.5})
        fake.send(msgpack.packb({"t": "ready", "v": 2, "registry": "fake", "credit": 10}))

        def fake_known():
            fake.send(heartbeat)
            return c.status("dispatcher")["gauges"]["workers"] > workers
        wait_until(fake_known, timeout=30, interval=0.05, what="the fake querier taken on")
        d.send(msgpack.packb({"t": "check", "v": 1, "id": "viafake", "name": "x.fake"}))
        deadline = time.monotonic() + 30
        while not fake.poll(50) and time.monotonic() < deadline:
            fake.send(heartbeat)
        assert fake.poll(0), "the dispatcher did not use the other-version querier"
        check = msgpack.unpackb(fake.recv(), raw=False)
        assert check["t"] == "check" and check["name"] == "x.fake"
        fake.send(msgpack.packb({"t": "answer", "v": 2, "id": "", "name": "x.fake", "status": "available",
                                 "source": "whois", "registry": "fake", "rid": check["rid"], "at": 1,
                                 "confidence": 0.99}))
        assert d.poll(5000)
        a = msgpack.unpackb(d.recv(), raw=False)
        assert (a["id"], a["status"]) == ("viafake", "available")
        # and one that lacks what is needed is dropped and reported, not a crash
        fake.send(msgpack.packb({"t": "answer", "v": 1, "name": "x.fake"}))
        wait_until(lambda: c.status("dispatcher")["counters"]["malformed"] == 1, what="malformed counted")
    finally:
        registry.close()


def test_past_the_bounds_checks_are_answered_overloaded_at_once(make_cluster):
    # The registry takes 5 s a reply: "at once" is shown by order, all 70
    # overloaded answers before any from the registry, not by a window.
    registry = FakeRegistry(delay_ms=5000)
    try:
        c = make_cluster({
            "dispatcher": {"heartbeat_ms": 100, "max_inflight_per_registry": 30},
            "registries": {"test": whois_registry(registry.port, ["test"], concurrency=100, timeout_ms=10000)},
            "intake": {"max_inflight": 60, "deadline_ms": 20000},
        }).start_all()
        fe = Frontend(c)
        for i in range(100):
            fe.send(f"o{i}", f"over{i}.test")
        fe.collect(70, timeout=30)
        first = [v[0] for v in fe.answers.values()]
        # 40 past intake's 60 names in flight, 30 past the dispatcher's 30 per registry
        assert len(first) == 70 and [a.get("reason") for a in first].count("overloaded") == 70, first
        answers = fe.collect(100, timeout=40)
        definite = [a[0] for a in answers.values() if a[0]["status"] != "unknown"]
        assert len(definite) == 30 and all(a["status"] == truth(a["name"]) for a in definite)
        assert c.status("intake")["counters"]["overloaded"] == 40
        assert c.status("dispatcher")["counters"]["overloaded"] == 30
    finally:
        registry.close()


def test_batches_between_intake_and_dispatcher_only_with_a_peer_that_reads_them(make_cluster):
    """An older intake (no `batches` key) gets one answer per message; one
    that says `batches` may get a turn's answers in one message (`more`),
    and may send several checks in one."""
    registry = FakeRegistry()
    try:
        c = cluster_for(make_cluster, registry).start_all()
        names = [f"b{i}.test" for i in range(30)]

        def collect(sock, want):
            got, messages, deadline = {}, 0, time.monotonic() + 10
            while len(got) < want and time.monotonic() < deadline:
                if sock.poll(200):
                    a = msgpack.unpackb(sock.recv(), raw=False)
                    messages += 1
                    for x in [a] + a.get("more", []):
                        assert x["rid"] not in got, "an answer twice"
                        got[x["rid"]] = x
            return got, messages

        old = c.socket(zmq.DEALER, c.endpoint("dispatcher"))
        for i, name in enumerate(names):
            old.send(msgpack.packb({"t": "check", "v": 1, "id": "o", "name": name, "rid": i + 1, "idx": 0}))
        got, messages = collect(old, len(names))
        assert len(got) == len(names) and messages == len(names)  # never batched to it
        assert all(got[i + 1]["status"] == truth(n) for i, n in enumerate(names))

        new = c.socket(zmq.DEALER, c.endpoint("dispatcher"))
        checks = [{"id": "n", "name": name, "rid": 100 + i, "idx": 0, "batches": True}
                  for i, name in enumerate(names)]
        new.send(msgpack.packb(dict({"t": "check", "v": 1, "more": checks[1:]}, **checks[0])))
        got, messages = collect(new, len(names))
        assert sorted(got) == [100 + i for i in range(len(names))]
        assert messages < len(names)  # the cached answers of one turn came together
        assert all(got[100 + i]["status"] == truth(n) for i, n in enumerate(names))
    finally:
        registry.close()


def test_a_querier_gone_before_its_ready_is_read_is_forgotten_without_harm(make_cluster):
    """A querier that says ready and is gone before the dispatcher reads it
    (a querier stopping, a link cut): sending it the waiting checks fails,
    and the dispatcher must forget it only after it is done with the ready
    (ASan once saw on_ready walk the workers of a querier that a send
    inside it had just freed). Made certain here: the dispatcher is stopped
    while the ready and the hang-up reach its socket together."""
    registry = FakeRegistry()
    try:
        c = make_cluster({
            # When the hang-up is read before the ready, the send does not
            # fail and the querier is forgotten as silent instead (5 s):
            # either way forgotten, and the dispatcher must live.
            "dispatcher": {"heartbeat_ms": 1000, "heartbeat_misses": 5},
            "registries": {"test": whois_registry(registry.port, ["test"], concurrency=10, timeout_ms=20000)},
        }).start_all(queriers=[])
        # a querier with no credit: the checks wait for another one
        waiting = c.socket(zmq.DEALER, c.endpoint("dispatcher_workers"))
        waiting.send(msgpack.packb({"t": "ready", "v": 1, "registry": "test", "credit": 0, "pid": 1}))
        wait_until(lambda: c.status("dispatcher")["gauges"]["workers"] == 1, timeout=30,
                   what="the querier without credit taken on")
        fe = c.socket(zmq.DEALER, c.endpoint("intake_router"))
        for i in range(5):
            fe.send(msgpack.packb({"t": "check", "v": 1, "id": f"w{i}", "name": f"wait{i}.test",
                                   "deadline_ms": 60000}))
        def waiting_at_dispatcher():
            waiting.send(msgpack.packb({"t": "heartbeat", "v": 1, "registry": "test", "credit": 0, "pid": 1}))
            return c.status("dispatcher")["gauges"]["tasks"] == 5
        wait_until(waiting_at_dispatcher, timeout=30, interval=0.2, what="the checks waiting at the dispatcher")

        gone_ctx = zmq.Context()
        gone = gone_ctx.socket(zmq.DEALER)
        monitor = gone.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        gone.connect(c.endpoint("dispatcher_workers"))
        assert monitor.poll(30000), "no handshake with the dispatcher"
        monitor.recv_multipart()
        gone.disable_monitor()
        monitor.close(0)
        dispatcher = next(x for x in c.daemons if x.kind == "dispatcher")
        dispatcher.signal(signal.SIGSTOP)
        try:
            gone.send(msgpack.packb({"t": "ready", "v": 1, "registry": "test", "credit": 10, "pid": 2}))
            gone.close(linger=5000)
            gone_ctx.term()  # the ready is in the dispatcher's socket buffer, then the hang-up
        finally:
            dispatcher.signal(signal.SIGCONT)
        def gone_forgotten():  # the one without credit heartbeats meanwhile, as a querier does
            waiting.send(msgpack.packb({"t": "heartbeat", "v": 1, "registry": "test", "credit": 0, "pid": 1}))
            return c.status("dispatcher")["counters"]["workers_lost"] >= 1
        wait_until(gone_forgotten, timeout=60, interval=0.2, what="the querier that was gone forgotten")
        status = c.status("dispatcher")
        assert status["gauges"]["workers"] == 1, status["gauges"]  # the one without credit is still there
        assert status["gauges"]["tasks"] == 5  # the checks wait on, none lost
        assert dispatcher.proc.poll() is None
    finally:
        registry.close()
