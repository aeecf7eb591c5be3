"""availd-errors with the real binary: events in by PULL, out by query and by
topic-prefix subscription; durability across kill -9; garbage counted and
survived; bad configs refused with their location; systemd notification;
retention; reload; pid file; availctl errors and status."""
import json
import os
import signal
import subprocess
import threading
import time

import msgpack
import zmq

from harness import Daemon, binary, wait_until


def event(daemon="querier-verisign", registry="verisign", level="warning", code="rate_limited", text="t", **kw):
    return msgpack.packb(dict({"t": "error", "v": 1, "daemon": daemon, "registry": registry, "level": level,
                               "code": code, "text": text}, **kw))


def pusher(cluster):
    return cluster.socket(zmq.PUSH, cluster.endpoint("errors_events"))


def recent(cluster, **args):
    reply = cluster.control("errors", "recent", **args)
    assert reply["ok"], reply
    return reply["events"]


def test_pushed_events_come_back_by_query_and_by_topic_prefix(cluster):
    cluster.start("errors")
    sub_all = cluster.socket(zmq.SUB, cluster.endpoint("errors_publish"))
    sub_all.setsockopt(zmq.SUBSCRIBE, b"")
    sub_prefix = cluster.socket(zmq.SUB, cluster.endpoint("errors_publish"))
    sub_prefix.setsockopt(zmq.SUBSCRIBE, b"err.querier-denic.")
    # The prefix subscriber also takes the probes' topic, so that the wait
    # below shows both subscriptions have reached the publisher.
    sub_prefix.setsockopt(zmq.SUBSCRIBE, b"notice.probe.")
    push = pusher(cluster)
    # PUB/SUB joins asynchronously: wait until a probe event reaches both.
    probe = event(daemon="probe", registry="", level="notice", code="probe", text="probe")
    wait_until(lambda: push.send(probe) or sub_all.poll(100), what="subscription of sub_all")
    wait_until(lambda: push.send(probe) or sub_prefix.poll(100), what="subscription of sub_prefix")
    while sub_prefix.poll(300):
        sub_prefix.recv_multipart()
    sent = [
        ("querier-denic", "denic", "err", "timeout"),
        ("querier-denic", "denic", "warning", "rate_limited"),
        ("querier-verisign", "verisign", "err", "timeout"),
        ("dispatcher", "", "notice", "no_querier"),
        ("querier-denic", "denic", "err", "unparseable"),
    ]
    for i, (d, r, lv, code) in enumerate(sent):
        push.send(event(daemon=d, registry=r, level=lv, code=code, text=f"event {i}"))

    got = []
    while len(got) < 2 and sub_prefix.poll(5000):
        topic, body = sub_prefix.recv_multipart()
        if topic.startswith(b"notice.probe."):
            continue  # a probe later than the drain above: a busy machine's pause
        got.append((topic.decode(), msgpack.unpackb(body)))
    assert [t for t, _ in got] == ["err.querier-denic.denic", "err.querier-denic.denic"]
    assert [b["text"] for _, b in got] == ["event 0", "event 4"]
    assert not sub_prefix.poll(300), "a non-matching topic reached a prefix subscriber"

    texts = [e["text"] for e in recent(cluster, limit=100) if e["text"].startswith("event")]
    assert texts == [f"event {i}" for i in range(5)]
    denic = recent(cluster, registry="denic")
    assert [e["text"] for e in denic] == ["event 0", "event 1", "event 4"]
    errs = recent(cluster, daemon="querier-denic", level="err")
    assert [e["code"] for e in errs] == ["timeout", "unparseable"]
    assert [e["text"] for e in recent(cluster, limit=2)] == ["event 3", "event 4"]

    counts = cluster.control("errors", "counts")
    table = {(c["registry"], c["code"]): c["count"] for c in counts["counts"]}
    assert table[("denic", "timeout")] == 1
    assert table[("denic", "unparseable")] == 1
    assert table[("", "no_querier")] == 1


def test_every_acknowledged_event_survives_kill_9(cluster):
    """An event is acknowledged when availd-errors published it: it
    publishes only what it has committed. Kill it mid-stream, restart it,
    and every acknowledged event must be in the database."""
    errors = cluster.start("errors")
    sub = cluster.socket(zmq.SUB, cluster.endpoint("errors_publish"))
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    push = pusher(cluster)
    wait_until(lambda: push.send(event(text="probe")) or sub.poll(100), what="subscription")
    while sub.poll(200):
        sub.recv_multipart()

    stop = threading.Event()

    def stream():
        n = 0
        while not stop.is_set():
            try:
                push.send(event(text=f"stream {n}"), zmq.NOBLOCK)
                n += 1
            except zmq.Again:
                time.sleep(0.001)
            if n % 50 == 0:
                time.sleep(0.001)

    acknowledged = {}
    t = threading.Thread(target=stream)
    t.start()
    try:
        while len(acknowledged) < 2000 and sub.poll(5000):
            _, body = sub.recv_multipart()
            ev = msgpack.unpackb(body)
            acknowledged[ev["seq"]] = ev["text"]
        errors.kill()  # SIGKILL while the stream is still flowing
        while sub.poll(100):  # anything published before the kill counts too
            _, body = sub.recv_multipart()
            ev = msgpack.unpackb(body)
            acknowledged[ev["seq"]] = ev["text"]
    finally:
        stop.set()
        t.join()
    assert len(acknowledged) >= 2000
    errors.start()
    stored = {e["seq"]: e["text"] for e in recent(cluster, limit=10000)}
    missing = [s for s in acknowledged if stored.get(s) != acknowledged[s]]
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. seq {missing[:5]}"
    # Sequence numbers continue after the restart instead of reusing keys.
    push2 = pusher(cluster)
    push2.send(event(text="after restart"))
    # (the first pusher may still be delivering its backlog to the new
    # process, so look through everything)
    after = wait_until(lambda: [e for e in recent(cluster, limit=10000) if e["text"] == "after restart"],
                       what="event after restart")
    assert after[0]["seq"] > max(acknowledged)


def test_garbage_is_counted_and_dropped_and_the_daemon_lives(cluster):
    cluster.start("errors")
    push = pusher(cluster)
    garbage = [
        b"",
        b"not msgpack at all",
        b"\xc1",                                  # a byte msgpack never uses
        b"\xdd\xff\xff\xff\xff",                  # array claiming 4 billion entries
        msgpack.packb([1, 2, 3]),                 # not a map
        msgpack.packb({"t": "error", "v": 1}),    # missing daemon, level, code, text
        msgpack.packb({"t": "error", "v": 1, "daemon": "x", "level": "loud", "code": "c", "text": "t"}),
        msgpack.packb({"t": "check", "v": 1, "id": "a", "name": "b.com"}),  # not an error event
        event(text="x" * 5000),                   # text over its bound
    ]
    for g in garbage:
        push.send(g)
    push.send_multipart([event(text="two"), event(text="frames")])
    push.send(event(text="valid after garbage"))
    wait_until(lambda: any(e["text"] == "valid after garbage" for e in recent(cluster)), what="valid event")
    status = cluster.status("errors")
    assert status["counters"]["malformed"] == len(garbage) + 1
    assert status["counters"]["stored"] == 1
    assert [e["text"] for e in recent(cluster)] == ["valid after garbage"]


def test_bad_config_stops_the_daemon_with_its_location(cluster):
    cluster.write_config(
        f"runtime_dir: {cluster.run_dir}\n"
        f"state_dir: {cluster.state_dir}\n"
        "errors:\n"
        "  retention_count: 10\n"
        "  retension_s: 5\n")
    r = subprocess.run([binary("errors"), "-f", "-c", cluster.config_path], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 78
    assert f"{cluster.config_path}:5:3: unknown key 'retension_s' in errors" in r.stderr
    r = subprocess.run([binary("errors"), "-n", "-c", cluster.config_path], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 78 and ":5:3:" in r.stderr
    r = cluster.availctl("config", "check")
    assert r.returncode == 1 and f"{cluster.config_path}:5:3: unknown key" in r.stderr
    cluster.write_config(
        f"runtime_dir: {cluster.run_dir}\nstate_dir: {cluster.state_dir}\n"
        "endpoints:\n  errors_events: tcp://127.0.0.1\n")
    r = subprocess.run([binary("errors"), "-f", "-c", cluster.config_path], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 78 and ":4:18: bad endpoint 'tcp://127.0.0.1'" in r.stderr


def test_ready_and_watchdog_are_sent_to_notify_socket(cluster):
    errors = cluster.daemon("errors", env={"WATCHDOG_USEC": "200000"})
    errors.start()
    assert errors.notify.seen("READY=1")
    errors.notify.wait_for("WATCHDOG=1", timeout=5)
    assert errors.notify.seen("STATUS=")
    assert errors.stop() == 0
    assert errors.notify.seen("STOPPING=1")


def test_retention_keeps_the_newest_events_by_count_and_by_age(make_cluster):
    cluster = make_cluster({"errors": {"retention_count": 10, "retention_s": 2}})
    cluster.start("errors")
    push = pusher(cluster)
    for i in range(25):
        push.send(event(text=f"n{i}"))
    wait_until(lambda: cluster.status("errors")["counters"]["stored"] == 25, what="25 stored")
    kept = recent(cluster, limit=100)
    assert [e["text"] for e in kept] == [f"n{i}" for i in range(15, 25)]
    counts = cluster.control("errors", "counts")
    assert counts["total"] == 10 and sum(c["count"] for c in counts["counts"]) == 10
    # Older than retention_s: gone after the next sweep.
    wait_until(lambda: recent(cluster, limit=100) == [], timeout=8, what="age retention")
    assert cluster.control("errors", "counts")["counts"] == []


def test_sighup_applies_a_good_config_and_keeps_the_old_one_on_a_bad_one(make_cluster):
    cluster = make_cluster({"errors": {"retention_count": 100}})
    errors = cluster.start("errors")
    good = open(cluster.config_path).read()
    cluster.write_config(good + "bogus_key: 1\n")
    errors.signal(signal.SIGHUP)
    wait_until(lambda: cluster.status("errors")["counters"]["reloads_refused"] == 1, what="refused reload")
    assert "reload refused" in errors.log() and "unknown key 'bogus_key'" in errors.log()
    # The refusal is itself an error event, stored by availd-errors.
    wait_until(lambda: any(e["code"] == "config_refused" for e in recent(cluster)), what="config_refused event")
    assert errors.alive()
    cluster.config["errors"]["retention_count"] = 3
    cluster.write_config()
    errors.signal(signal.SIGHUP)
    wait_until(lambda: cluster.status("errors")["counters"]["reloads"] == 2, what="second reload")
    assert cluster.status("errors")["counters"]["reloads_refused"] == 1
    push = pusher(cluster)
    for i in range(6):
        push.send(event(text=f"r{i}"))
    wait_until(lambda: cluster.status("errors")["counters"]["stored"] >= 7, what="stored")
    assert [e["text"] for e in recent(cluster)][-3:] == ["r3", "r4", "r5"]
    assert len(recent(cluster)) == 3


def test_sigterm_stops_gracefully_and_removes_the_pid_file(make_cluster):
    cluster = make_cluster({"errors": {"pid_file": "errors.pid"}})
    errors = cluster.start("errors")
    pid_file = os.path.join(cluster.run_dir, "errors.pid")
    assert int(open(pid_file).read()) == errors.pid
    second = Daemon(cluster, "errors")
    second.start(wait_ready=False)
    assert second.proc.wait(10) != 0
    assert "already running" in second.log()
    assert errors.alive()
    assert errors.stop() == 0
    assert not os.path.exists(pid_file)


def test_availctl_errors_filters_follows_and_prints_json(cluster):
    cluster.start("errors")
    push = pusher(cluster)
    push.send(event(daemon="querier-denic", registry="denic", level="err", code="timeout", text="first"))
    push.send(event(daemon="querier-eurid", registry="eurid", level="info", code="slow", text="second"))
    wait_until(lambda: len(recent(cluster)) == 2, what="two events")
    r = cluster.availctl("errors", check=0)
    assert "first" in r.stdout and "second" in r.stdout
    r = cluster.availctl("errors", "--registry", "denic", check=0)
    assert "first" in r.stdout and "second" not in r.stdout
    r = cluster.availctl("errors", "--level", "warning", check=0)
    assert "first" in r.stdout and "second" not in r.stdout
    r = cluster.availctl("--json", "errors", "--daemon", "querier-eurid", check=0)
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(e["registry"], e["code"], e["text"]) for e in lines] == [("eurid", "slow", "second")]
    r = cluster.availctl("errors", "--counts", check=0)
    assert "denic" in r.stdout and "timeout" in r.stdout
    assert cluster.availctl("errors", "--level", "loud").returncode == 2

    follow = subprocess.Popen([binary("availctl"), "-c", cluster.config_path, "--json", "errors", "--follow",
                               "--registry", "denic", "--limit", "5", "--exit-after", "1"],
                              stdout=subprocess.PIPE, text=True)
    try:
        first = json.loads(follow.stdout.readline())  # the recent one, printed at once
        assert first["text"] == "first"
        # Keep sending until the follower's subscription has joined.
        deadline = time.monotonic() + 10
        while follow.poll() is None and time.monotonic() < deadline:
            push.send(event(daemon="querier-denic", registry="denic", level="err", code="timeout", text="live"))
            push.send(event(daemon="querier-eurid", registry="eurid", level="err", code="timeout", text="other"))
            time.sleep(0.1)
        out, _ = follow.communicate(timeout=10)
    finally:
        if follow.poll() is None:
            follow.kill()
    assert follow.returncode == 0
    assert [json.loads(line)["text"] for line in out.splitlines()] == ["live"]


def test_availctl_status_reports_running_and_down_daemons(cluster):
    errors = cluster.start("errors")
    r = cluster.availctl("status", "errors", check=0)
    assert "errors" in r.stdout and "running" in r.stdout and str(errors.pid) in r.stdout
    r = cluster.availctl("--json", "status", "errors", check=0)
    status = json.loads(r.stdout)
    assert status["pid"] == errors.pid and status["daemon"] == "errors" and "received" in status["counters"]
    r = cluster.availctl("status", "errors", "intake", check=1)
    assert "intake" in r.stdout and "down" in r.stdout


def test_a_daemon_never_stalls_when_availd_errors_is_down(cluster):
    """The error reporter of every daemon is non-blocking. Point this
    daemon's reporter at an endpoint nobody binds and make it report a storm
    of refused reloads: it must keep answering, and every event is counted
    as sent (queued) or dropped."""
    cluster.config["endpoints"]["errors_events"] = "ipc://nobody-listens.sock"
    cluster.write_config()
    errors = cluster.start("errors")
    good = open(cluster.config_path).read()
    cluster.write_config(good + "bogus: 1\n")
    for _ in range(1500):  # more than the reporter's queue holds
        errors.signal(signal.SIGHUP)
    wait_until(lambda: cluster.status("errors")["counters"]["reloads_refused"] >= 1, what="refusals")
    status = cluster.status("errors")  # a stalled daemon would not answer within control's 5 s
    counters = status["counters"]
    # every refusal is accounted for: sent (queued), dropped (queue full),
    # or folded into the next report of the same code (once a second)
    assert counters["events_sent"] + counters["events_dropped"] + counters["events_repeated"] == \
        counters["reloads_refused"]
    if counters["reloads_refused"] > 1:
        assert counters["events_repeated"] >= 1


def test_a_storm_of_one_error_is_one_event_a_second_that_counts_the_rest(make_cluster):
    cluster = make_cluster()
    errors = cluster.start("errors")
    good = open(cluster.config_path).read()
    cluster.write_config(good + "bogus: 1\n")
    errors.signal(signal.SIGHUP)
    wait_until(lambda: cluster.status("errors")["counters"]["reloads_refused"] == 1, what="first refusal")
    for i in range(5):  # within the second: held back
        errors.signal(signal.SIGHUP)
        wait_until(lambda: cluster.status("errors")["counters"]["reloads_refused"] == 2 + i, what="refusal")
    time.sleep(1.1)
    errors.signal(signal.SIGHUP)
    wait_until(lambda: cluster.status("errors")["counters"]["reloads_refused"] == 7, what="refusal after a second")
    events = wait_until(lambda: (lambda ev: ev if len(ev) == 2 else None)(
        [e for e in recent(cluster) if e["code"] == "config_refused"]), what="two events")
    assert "more like it" not in events[0]["text"]
    assert events[1]["text"].endswith("(and 5 more like it)")
    assert errors.log().count("reload refused") == 2
