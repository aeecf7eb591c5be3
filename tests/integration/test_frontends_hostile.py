"""Frontends that misbehave, or behave as the README says, against the real
intake (issue 12, items 5, 7, 8): none of them makes intake's memory grow
without bound, one that reconnects with its fixed routing id or waits for
the push way's handshake loses nothing, and what is echoed is UTF-8.

Memory is intake's peak resident set (VmHWM) over the test, under ASan:
the bounds have a wide margin (grows < 100 MB where HEAD grew by 300 MB to
a GB)."""
import socket
import struct
import threading
import time

import msgpack
import zmq

from harness import FakeRegistry, rss_kb, truth, wait_until, whois_registry

MB = 1024 * 1024


def cluster_for(make_cluster, registry=None, **extra):
    config = {"dispatcher": {"heartbeat_ms": 100, "heartbeat_misses": 3}, "intake": {"resend_ms": 1000}}
    if registry:
        config["registries"] = {"test": whois_registry(registry.port, ["test"], concurrency=500, timeout_ms=5000)}
    for k, v in extra.items():
        config.setdefault(k, {}).update(v)
    return make_cluster(config)


def intake_of(c):
    return next(d for d in c.daemons if d.kind == "intake")


def peak_kb(daemon):
    return rss_kb(daemon.pid, "VmHWM")


def check(rid, name, **fields):
    return msgpack.packb(dict({"t": "check", "v": 1, "id": rid, "name": name}, **fields))


def ask_router(c, rid, name, timeout=15):
    """One request on a fresh DEALER: intake still answers."""
    s = c.socket(zmq.DEALER, c.endpoint("intake_router"))
    s.send(check(rid, name))
    assert s.poll(int(timeout * 1000)), f"intake did not answer {rid}"
    return msgpack.unpackb(s.recv(), raw=False)


# ---- raw ZMTP 3.0: a peer that says what ZeroMQ's own sockets never would --

def zmtp_dealer(endpoint):
    """A connected stream socket that has greeted as a ZMTP 3.0 DEALER
    (NULL mechanism), before any message."""
    assert endpoint.startswith("ipc://")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(endpoint[6:])
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31
    ready = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
    s.sendall(greeting + b"\x04" + bytes([len(ready)]) + ready)
    return s


def zmtp_frame_header(size, more=False):
    return bytes([0x02 | (0x01 if more else 0)]) + struct.pack(">Q", size)


# ---- item 5: memory -------------------------------------------------------

def test_a_frame_past_the_message_bound_is_refused_before_it_is_read(make_cluster):
    """A 1 GiB frame on intake's ROUTER: its connection is dropped as the
    frame's header arrives (ZMQ_MAXMSGSIZE), not after 1 GiB was read."""
    c = cluster_for(make_cluster).start_all()
    intake = intake_of(c)
    assert ask_router(c, "warm", "warm.example")["t"] == "answer"
    before = peak_kb(intake)
    s = zmtp_dealer(c.endpoint("intake_router"))
    sent = 0
    chunk = b"\x00" * MB
    try:
        s.settimeout(30)
        s.sendall(zmtp_frame_header(1024 * MB))
        while sent < 1024 * MB:
            s.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        s.close()
    grown_mb = (peak_kb(intake) - before) / 1024
    print(f"\n1 GiB frame: intake read {sent // MB} MiB of it, its peak grew by {grown_mb:.0f} MB")
    assert sent < 256 * MB, f"intake read {sent // MB} MiB of a 1 GiB frame"
    assert grown_mb < 100, f"intake's peak grew by {grown_mb:.0f} MB"
    a = ask_router(c, "after", "after.example")
    assert a["t"] == "answer" and a["id"] == "after"


def test_subscribers_that_never_read_cost_intake_a_bounded_queue_each(make_cluster):
    """20 results subscribers that never read while 100,000 pushed checks
    are answered: each keeps at most its queue (and loses the rest)."""
    c = cluster_for(make_cluster).start_all()
    intake = intake_of(c)
    subs = []
    for _ in range(20):
        sub = c.socket(zmq.SUB, c.endpoint("intake_results"))
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        subs.append(sub)
    push = c.socket(zmq.PUSH, c.endpoint("intake_pull"))
    push.setsockopt(zmq.SNDTIMEO, 30000)
    # answered by the dispatcher at once: no registry serves the name
    assert ask_router(c, "warm", "warm.example")["t"] == "answer"
    time.sleep(0.5)  # the subscriptions are in (what they miss does not matter here)
    before = peak_kb(intake)
    out_before = c.status("intake")["counters"]["answers_out"]
    n, chunk = 100000, 5000
    for start in range(0, n, chunk):
        for i in range(start, start + chunk):
            push.send(check(f"s{i}", f"n{i}.example"))
        # in chunks: what is measured is the subscribers' queues, not requests in flight
        wait_until(lambda: c.status("intake")["counters"]["answers_out"] - out_before >= start + chunk,
                   timeout=60, interval=0.05, what=f"{start + chunk} answers published")
    grown_mb = (peak_kb(intake) - before) / 1024
    print(f"\n20 subscribers that never read, {n} answers: intake's peak grew by {grown_mb:.0f} MB")
    assert grown_mb < 100, f"intake's peak grew by {grown_mb:.0f} MB"


def test_a_router_client_that_never_reads_costs_intake_a_bounded_share(make_cluster):
    """A DEALER that sends batches of long invalid names (each reply about
    2 MB) and never reads: intake keeps its share of queued and held bytes
    and loses the rest; another frontend is still answered."""
    c = cluster_for(make_cluster, intake={"max_inflight": 400000}).start_all()
    intake = intake_of(c)
    assert ask_router(c, "warm", "warm.example")["t"] == "answer"
    s = c.socket(zmq.DEALER)
    s.setsockopt(zmq.RCVHWM, 1)
    s.setsockopt(zmq.RCVBUF, 65536)
    s.setsockopt(zmq.SNDTIMEO, 30000)
    s.connect(c.endpoint("intake_router"))
    names = [("a" * 1000) + f"{i:04d}.example" for i in range(1000)]  # label_too_long: echoed as asked
    body = msgpack.packb({"t": "check", "v": 1, "id": "hog", "names": names})
    assert len(body) < 1024 * 1024
    before = peak_kb(intake)
    lost_before = c.status("intake")["counters"]["answers_lost"]
    requests = 300
    for _ in range(requests):
        s.send(body)
        # one at a time: what is measured is the replies, not requests in flight
        wait_until(lambda: c.status("intake")["gauges"]["requests_inflight"] == 0, timeout=60, interval=0.02,
                   what="the batch answered")
    grown_mb = (peak_kb(intake) - before) / 1024
    counters = c.status("intake")["counters"]
    print(f"\na DEALER that never reads {requests} replies of ~2 MB: intake's peak grew by {grown_mb:.0f} MB")
    assert grown_mb < 100, f"intake's peak grew by {grown_mb:.0f} MB for {requests} replies of ~2 MB"
    wait_until(lambda: c.status("intake")["counters"]["answers_lost"] - lost_before > 0, timeout=15,
               what="replies past the share given up")
    a = ask_router(c, "other", "other.example")
    assert a["id"] == "other", (a, counters)


# ---- item 7: a frontend that follows the README loses nothing ------------

def test_a_frontend_reconnecting_with_its_routing_id_under_load_loses_nothing(make_cluster):
    """README: a DEALER with a fixed ZMQ_ROUTING_ID that closes and
    reconnects at once, and asks again (same id) what got no answer within
    its deadline plus a margin. 200 requests over 10 reconnects while their
    answers (300 ms at the registry) come in and another frontend keeps
    intake busy: every one answered, and the answers of requests asked on
    the old connection reach the new one (asking again is the exception)."""
    registry = FakeRegistry(delay_ms=300)
    try:
        c = cluster_for(make_cluster, registry).start_all()
        endpoint = c.endpoint("intake_router")
        stop = threading.Event()
        load_answers = [0]

        def load():
            ctx = zmq.Context()
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint)
            i = 0
            try:
                while not stop.is_set():
                    for _ in range(50):
                        s.send(check(f"load{i}", f"load{i}.test"))
                        i += 1
                    while s.poll(20):
                        s.recv()
                        load_answers[0] += 1
            finally:
                s.close(0)
                ctx.term()

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        ctx = zmq.Context()
        routing_id = b"fixed-frontend"

        def connect():
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.ROUTING_ID, routing_id)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint)
            return s

        deadline_ms, margin_s = 2000, 1.0
        sent, answers, retried = {}, {}, set()
        connection_of = {}  # request id -> which connection first asked it
        connection = 0
        handed_over = set()  # answered on a later connection without asking again
        s = connect()
        try:
            def read(timeout_ms):
                while s.poll(timeout_ms):
                    a = msgpack.unpackb(s.recv(), raw=False)
                    answers.setdefault(a["id"], []).append(a)
                    if a["id"] not in retried and connection_of.get(a["id"], connection) < connection:
                        handed_over.add(a["id"])
                    timeout_ms = 0

            for round_ in range(10):
                for k in range(20):
                    rid = f"r{round_ * 20 + k}"
                    name = f"re{round_ * 20 + k}.test"
                    sent[rid] = (name, time.monotonic())
                    connection_of[rid] = connection
                    s.send(check(rid, name, deadline_ms=deadline_ms))
                read(50)  # they are in; their answers come in 300 ms, the earlier rounds' now
                s.close(0)
                s = connect()  # at once, with the same routing id
                connection += 1
            end = time.monotonic() + 30
            while len(answers) < len(sent) and time.monotonic() < end:
                read(100)
                now = time.monotonic()
                for rid, (name, at) in list(sent.items()):
                    if rid not in answers and now - at > deadline_ms / 1000 + margin_s:
                        retried.add(rid)
                        sent[rid] = (name, now)
                        s.send(check(rid, name, deadline_ms=deadline_ms))
            lost = sorted(set(sent) - set(answers))
            print(f"\nreconnecting frontend: {len(lost)} of {len(sent)} never answered, "
                  f"{len(retried)} asked again, {len(handed_over)} answered on a later "
                  f"connection than the one that asked")
            assert not lost, f"{len(lost)} of {len(sent)} never answered: {lost[:10]}"
            # How many answers meet the moment between the old connection's
            # end and intake noticing it depends on the machine's load (1 to
            # 16 of 200 seen; 60 without ROUTER_HANDOVER): asking again is for
            # them, so it is a figure, not a bound. The hand-over itself is
            # decided by the next test.
            assert handed_over, "no answer of an earlier connection reached the new one"
            for rid, got in answers.items():
                assert got[0]["status"] == truth(sent[rid][0]), got
            assert load_answers[0] > 0
        finally:
            s.close(0)
            stop.set()
            loader.join(10)
            ctx.term()
    finally:
        registry.close()


def test_a_new_connection_with_the_same_routing_id_takes_over_from_a_live_one(make_cluster):
    """ZMQ_ROUTER_HANDOVER: a frontend whose old connection is still open
    (a hung process, a link whose loss TCP has not noticed) reconnects with
    its routing id; the new connection gets the answers, also of what the
    old one asked. Without hand-over intake ignores the newcomer and keeps
    routing to the old connection: nothing reaches the new one."""
    registry = FakeRegistry()
    try:
        c = cluster_for(make_cluster, registry).start_all()
        endpoint = c.endpoint("intake_router")
        routing_id = b"taking-over"

        def connect(reconnect):
            s = c.socket(zmq.DEALER)
            s.setsockopt(zmq.ROUTING_ID, routing_id)
            if not reconnect:  # the old one must not come back and take the id again
                s.setsockopt(zmq.RECONNECT_IVL, -1)
            s.connect(endpoint)
            return s

        def answer_of(s, rid, timeout_s):
            end = time.monotonic() + timeout_s
            while time.monotonic() < end:
                if s.poll(100):
                    a = msgpack.unpackb(s.recv(), raw=False)
                    if a.get("id") == rid:
                        return a
            return None

        old = connect(reconnect=False)
        # silent- is never answered by the registry: its answer is the
        # querier's timeout (5 s), long after the new connection took over
        old.send(check("old-asked", "silent-takeover.test", deadline_ms=20000))
        old.send(msgpack.packb({"t": "check", "v": 1, "id": "old-probe"}))  # no name: invalid at once
        probe = answer_of(old, "old-probe", 30)
        assert probe and probe["status"] == "invalid", probe  # so "old-asked" is in intake
        new = connect(reconnect=True)
        new.send(msgpack.packb({"t": "check", "v": 1, "id": "new-probe"}))
        probe = answer_of(new, "new-probe", 30)
        assert probe, "intake did not answer the new connection with the same routing id"
        got = answer_of(new, "old-asked", 30)
        assert got, "the answer of what the old connection asked did not reach the new one"
        assert got["status"] == "unknown", got
        assert not old.poll(0), "the old connection got an answer after the new one took over"
    finally:
        registry.close()


def ping_until_pong(push, sub, topic, timeout=10.0):
    """The push way's handshake (README): ping on the topic until its pong
    comes back through the subscription. Returns the pings sent."""
    end = time.monotonic() + timeout
    pings = 0
    while time.monotonic() < end:
        push.send(msgpack.packb({"t": "ping", "v": 1, "id": topic}))
        pings += 1
        if sub.poll(100):
            t, body = sub.recv_multipart()
            m = msgpack.unpackb(body, raw=False)
            if m.get("t") == "pong":
                assert t == topic.encode() and m["id"] == topic
                return pings
    raise AssertionError(f"no pong on {topic} within {timeout}s")


def test_a_fresh_subscriber_that_waits_for_the_pong_gets_every_answer(make_cluster):
    registry = FakeRegistry()
    try:
        c = cluster_for(make_cluster, registry).start_all()
        push = c.socket(zmq.PUSH, c.endpoint("intake_pull"))
        for rep in range(10):
            sub = c.socket(zmq.SUB, c.endpoint("intake_results"))
            topic = f"fresh{rep}/"
            sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
            ping_until_pong(push, sub, topic)
            names = {f"{topic}{i}": f"fresh{rep}-{i}.test" for i in range(50)}
            for rid, name in names.items():
                push.send(check(rid, name))
            got = {}
            end = time.monotonic() + 15
            while len(got) < len(names) and time.monotonic() < end:
                if sub.poll(200):
                    t, body = sub.recv_multipart()
                    a = msgpack.unpackb(body, raw=False)
                    if a.get("t") == "answer":
                        got[a["id"]] = a
            assert len(got) == 50, f"round {rep}: {50 - len(got)} of 50 answers missed"
            assert all(a["status"] == truth(names[rid]) for rid, a in got.items())
            sub.close(0)
            c.sockets.remove(sub)
    finally:
        registry.close()


def test_an_answer_published_before_its_subscriber_came_is_held_until_it_does(make_cluster):
    """Intake's results socket is an XPUB that knows its subscribers'
    prefixes: an answer to a pushed check that nobody is subscribed to yet
    (a frontend reconnecting to a restarted intake that answers its
    journal's checks at once, or a slow joiner) is held until a matching
    subscription comes (5 s at most), not dropped."""
    registry = FakeRegistry()
    try:
        c = cluster_for(make_cluster, registry).start_all()
        push = c.socket(zmq.PUSH, c.endpoint("intake_pull"))
        # answered at once (invalid: no name) with nobody listening
        push.send(msgpack.packb({"t": "check", "v": 1, "id": "early/1"}))
        push.send(msgpack.packb({"t": "check", "v": 1, "id": "other/1"}))
        wait_until(lambda: c.status("intake")["counters"]["answers_held_for_subscriber"] == 2, timeout=30,
                   what="the answers held for their subscribers")
        sub = c.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"early/")
        sub.connect(c.endpoint("intake_results"))
        assert sub.poll(30000), "the held answer did not reach the subscriber that came"
        topic, body = sub.recv_multipart()
        a = msgpack.unpackb(body, raw=False)
        assert (topic, a["id"], a["status"]) == (b"early/1", "early/1", "invalid"), a
        # the other is not its: not delivered to it
        assert not sub.poll(500)
    finally:
        registry.close()


def test_a_ping_on_the_router_is_answered_pong(make_cluster):
    c = cluster_for(make_cluster).start_all()
    s = c.socket(zmq.DEALER, c.endpoint("intake_router"))
    s.send(msgpack.packb({"t": "ping", "v": 1, "id": "p1"}))
    assert s.poll(5000)
    assert msgpack.unpackb(s.recv(), raw=False) == {"t": "pong", "v": 1, "id": "p1"}
    assert c.status("intake")["counters"]["invalid_requests"] == 0


# ---- item 8: small ones ---------------------------------------------------

def raw_str_check(rid, name):
    """A check whose id and name are msgpack str of the bytes given, valid
    UTF-8 or not (as a sloppy frontend's library sends them)."""
    m = {b"t": b"check", b"v": 1, b"id": rid}
    if name is not None:
        m[b"name"] = name
    return msgpack.packb(m, use_bin_type=False)


def test_ids_and_names_that_are_not_utf8_are_echoed_as_utf8(make_cluster):
    c = cluster_for(make_cluster).start_all()
    d = c.socket(zmq.DEALER, c.endpoint("intake_router"))
    d.send(raw_str_check(b"id-\xff\xfe", b"caf\xe9.example"))
    assert d.poll(10000)
    a = msgpack.unpackb(d.recv(), raw=False)  # raises on a str that is not UTF-8
    assert a["id"] == "id-??" and a["query"] == "caf?.example", a
    assert a["name"] in ("caf?.example", ""), a
    # a request rejected by intake itself echoes its id the same way
    d.send(raw_str_check(b"bad-\xc3", None))
    assert d.poll(10000)
    a = msgpack.unpackb(d.recv(), raw=False)
    assert a["status"] == "invalid" and a["id"] == "bad-?", a
    # on the push way too; the topic is the id as sent
    sub = c.socket(zmq.SUB, c.endpoint("intake_results"))
    sub.setsockopt(zmq.SUBSCRIBE, b"push-\xff")
    push = c.socket(zmq.PUSH, c.endpoint("intake_pull"))
    got = None
    end = time.monotonic() + 10
    while got is None and time.monotonic() < end:
        push.send(raw_str_check(b"push-\xff", b"x\xff.example"))
        if sub.poll(300):
            t, body = sub.recv_multipart()
            got = (t, msgpack.unpackb(body, raw=False))
    assert got, "no answer published"
    assert got[0] == b"push-\xff" and got[1]["id"] == "push-?" and got[1]["query"] == "x?.example", got


def test_a_message_of_several_frames_is_invalid_on_router_as_on_pull(make_cluster):
    c = cluster_for(make_cluster).start_all()
    frames = [check("multi", "multi.example")] * 50
    d = c.socket(zmq.DEALER, c.endpoint("intake_router"))
    d.send_multipart(frames)
    assert d.poll(10000), "no answer on the ROUTER"
    a = msgpack.unpackb(d.recv(), raw=False)
    assert a["status"] == "invalid" and a["reason"] == "bad request: more than one frame", a
    sub = c.socket(zmq.SUB, c.endpoint("intake_results"))
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    push = c.socket(zmq.PUSH, c.endpoint("intake_pull"))
    got = None
    end = time.monotonic() + 10
    while got is None and time.monotonic() < end:
        push.send_multipart(frames)
        if sub.poll(300):
            got = msgpack.unpackb(sub.recv_multipart()[1], raw=False)
    assert got and got["status"] == "invalid" and got["reason"] == "bad request: more than one frame", got
    assert c.status("intake")["counters"]["requests"] == 0
