"""A damaged LMDB file is not an outage (issue 12, item 3). The cache and
the error database are rebuildable: cut short, with garbage meta pages or
not LMDB at all, they are moved aside (data.mdb.damaged-TIMESTAMP),
reported, and started empty, and availd serves. The dispatcher reads the
cache itself: a cache file damaged under it is a miss, never a SIGBUS.
availctl run starts the rest when availd-cache cannot start. The journal
holds accepted work: a damaged one makes intake exit 78 naming `availctl
journal salvage`, which keeps every request it can still read, and the
next intake asks them again.

Each test fails on the code before: availd-cache died of SIGBUS at open
(or refused every start), the dispatcher died of SIGBUS reading a cache cut
under it, availctl run never started what comes after the cache, and
intake died of SIGBUS on a cut journal (or started and lost the records
LMDB could not read)."""
import glob
import json
import os
import struct

import msgpack
import pytest
import zmq

from harness import FakeRegistry, truth, wait_until
from test_errors import event, pusher
from test_restarts import cluster_for
from test_supervisor import supervisors  # noqa: F401 (a fixture)

AV_EXIT_CONFIG = 78
DAMAGES = ["truncated", "garbage_meta", "not_lmdb"]


@pytest.fixture
def registry():
    reg = FakeRegistry()
    yield reg
    reg.close()


def data_file(c, store):
    return os.path.join(c.state_dir, store, "data.mdb")


def damage(path, how):
    """Issue 12's damages: cut to 100,000 bytes, garbage over both meta
    pages, or a file that is not LMDB at all."""
    size = os.path.getsize(path)
    if how == "truncated":
        assert size > 100000, f"{path}: {size} bytes, too small to cut to 100,000"
        os.truncate(path, 100000)
    elif how == "garbage_meta":
        with open(path, "r+b") as f:
            f.write(bytes([0xC3]) * 8192)
    else:
        with open(path, "wb") as f:
            f.write(b"this is not an LMDB file\n" * 100)


def expected(name):
    """What the fake registry answers: by prefix, else by hash."""
    if name.startswith("taken-"):
        return "registered"
    if name.startswith("free-"):
        return "available"
    return truth(name)


def fill(c, n, prefix):
    """n names asked in batches of 1000, so that the cache grows past
    100,000 bytes."""
    names = [f"{prefix}{i}.test" for i in range(n)]
    for first in range(0, n, 1000):
        answers = c.ask(names[first:first + 1000], timeout=60, id=f"fill-{first}")
        assert all(a["status"] == truth(a["name"]) for a in answers)
    return names


def stop_all(c):
    for d in reversed(c.daemons):
        if d.alive():
            d.stop()


def cached_on_second_ask(c, name):
    """Asks name until an answer comes from the cache; the first from the
    registry. Returns that answer."""
    first = c.ask(name)
    assert first["source"] == "whois" and first["status"] == expected(name), first
    return wait_until(lambda: (lambda a: a if a["source"] == "cache" else None)(c.ask(name)), timeout=20,
                      what=f"{name} from the cache")


def events(c, code):
    r = c.availctl("--json", "errors", "--limit", "1000")
    if r.returncode != 0:
        return []
    return [e for e in map(json.loads, r.stdout.splitlines()) if e["code"] == code]


def damaged_copies(c, store):
    return glob.glob(os.path.join(c.state_dir, store, "data.mdb.damaged-*"))


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_cache_is_moved_aside_reported_and_availd_serves(make_cluster, registry, how):
    c = cluster_for(make_cluster, registry)
    c.start_all()
    fill(c, 3000, "before")
    c.ask("taken-before.test")
    wait_until(lambda: c.ask("taken-before.test")["source"] == "cache", what="the cache in use")
    stop_all(c)
    damage(data_file(c, "cache"), how)

    # Before: SIGBUS at open (truncated), or a refusal at every start.
    for d in c.daemons:
        d.start()
    copies = damaged_copies(c, "cache")
    assert len(copies) == 1, copies
    cache = next(d for d in c.daemons if d.kind == "cache")
    assert "[database_damaged] the cache in" in cache.log()
    assert "moved aside to " + copies[0] in cache.log()
    wait_until(lambda: any(e["daemon"] == "cache" for e in events(c, "database_damaged")), timeout=20,
               what="the error event of availd-cache")
    # Started empty, and serving: a name asked twice, the second from the cache.
    assert c.ask("taken-before.test")["source"] == "whois"
    assert cached_on_second_ask(c, "taken-after.test")["status"] == "registered"
    assert all(d.alive() for d in c.daemons)


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_error_database_is_moved_aside_reported_and_availd_serves(make_cluster, registry, how):
    c = cluster_for(make_cluster, registry)
    c.start_all()
    push = pusher(c)
    for i in range(1500):  # events enough for a file past 100,000 bytes
        push.send(event(daemon="querier-test", registry="test", code="filler", text=f"event {i} " + "x" * 80))
    wait_until(lambda: len(events(c, "filler")) == 1000, timeout=30, what="the events stored")
    stop_all(c)
    damage(data_file(c, "errors"), how)

    for d in c.daemons:
        d.start()
    copies = damaged_copies(c, "errors")
    assert len(copies) == 1, copies
    errors = next(d for d in c.daemons if d.kind == "errors")
    assert "[database_damaged] the error database in" in errors.log()
    # Its own report reaches it once it listens: the new database's first.
    wait_until(lambda: any(e["daemon"] == "errors" for e in events(c, "database_damaged")), timeout=20,
               what="availd-errors' own report")
    assert events(c, "filler") == []
    assert cached_on_second_ask(c, "taken-errors.test")["status"] == "registered"
    assert all(d.alive() for d in c.daemons)


def test_the_dispatcher_answers_while_the_cache_is_stopped_and_its_file_damaged_under_it(make_cluster, registry):
    c = cluster_for(make_cluster, registry)
    c.start_all()
    names = fill(c, 3000, "under")
    wait_until(lambda: c.ask(names[0])["source"] == "cache", what="the cache in use")
    dispatcher = next(d for d in c.daemons if d.kind == "dispatcher")
    cache = next(d for d in c.daemons if d.kind == "cache")
    cache.stop()
    # Cut under the dispatcher, which has it mapped: before, its next
    # lookup died of SIGBUS. Now misses, answered by the registry.
    damage(data_file(c, "cache"), "truncated")
    for name in names[:50] + [f"free-stopped{i}.test" for i in range(20)]:
        a = c.ask(name)
        assert a["status"] == expected(name) and a["source"] == "whois", a
    assert dispatcher.alive()
    assert "cache in " in dispatcher.log() and "is damaged" in dispatcher.log()
    # Garbage over what is left: the same.
    damage(data_file(c, "cache"), "garbage_meta")
    for name in names[50:60]:
        assert c.ask(name)["source"] == "whois"
    assert dispatcher.alive()
    # availd-cache comes back, rebuilds it, and the dispatcher reads the new one.
    cache.start()
    assert len(damaged_copies(c, "cache")) == 1
    assert cached_on_second_ask(c, "taken-rebuilt.test")["status"] == "registered"
    assert dispatcher.alive()


def daemon_up(c, ident):
    try:
        return c.control(ident, "status", timeout=1.0).get("ok")
    except AssertionError:
        return False


def test_availctl_run_with_a_damaged_cache_starts_everything_and_answers(make_cluster, registry, supervisors):  # noqa: F811
    c = cluster_for(make_cluster, registry)
    c.start_all()
    fill(c, 3000, "run")
    stop_all(c)
    damage(data_file(c, "cache"), "truncated")
    run = supervisors.run(c)
    wait_until(lambda: c.availctl("--timeout", "1000", "status").returncode == 0, timeout=60, interval=0.2,
               what="every daemon up")
    assert cached_on_second_ask(c, "taken-run.test")["status"] == "registered"
    log = open(run.log_path).read()
    assert "daemons up in" in log and "restarting" not in log, log[-3000:]
    assert len(damaged_copies(c, "cache")) == 1


def test_availctl_run_starts_the_rest_while_the_cache_keeps_failing(make_cluster, registry, supervisors):  # noqa: F811
    # A cache that cannot start at all: its path is a file, not a directory.
    c = cluster_for(make_cluster, registry, cache={"path": "cache-is-a-file"})
    os.makedirs(c.state_dir, exist_ok=True)
    with open(os.path.join(c.state_dir, "cache-is-a-file"), "w") as f:
        f.write("not a directory\n")
    run = supervisors.run(c)
    for ident in ("errors", "dispatcher", "querier-test", "intake"):
        wait_until(lambda: daemon_up(c, ident), timeout=60, interval=0.2, what=f"{ident} up")
    for i in range(10):
        name = f"free-nocache{i}.test"
        a = c.ask(name)
        assert (a["status"], a["source"]) == ("available", "whois"), a
    # ...while availctl run keeps restarting the cache, with a growing delay.
    wait_until(lambda: open(run.log_path).read().count("restarting cache in") >= 3, timeout=30,
               what="three restarts of the cache")
    log = open(run.log_path).read()
    assert "cache did not start: starting the rest without it" in log
    assert "restarting cache in 500 ms" in log and "restarting cache in 1000 ms" in log
    assert "of 5 daemons up" in log and "the others serve without: cache" in log
    assert run.poll() is None


# ---- the journal -------------------------------------------------------------


def lmdb_tree(path, name):
    """The pages of named database `name` of an LMDB data file (LMDB 0.9,
    64-bit, as av_lmdb.c reads it): (page size, the pages of the main
    database and of the named one's branches, {leaf page: its values})."""
    data = open(path, "rb").read()

    def meta(off):
        psize = struct.unpack_from("<I", data, off + 40)[0]
        main_root = struct.unpack_from("<Q", data, off + 88 + 40)[0]
        txnid = struct.unpack_from("<Q", data, off + 144)[0]
        return psize, main_root, txnid

    m0 = meta(0)
    psize = m0[0]
    m1 = meta(psize)
    main_root = (m1 if m1[2] > m0[2] else m0)[1]

    def nodes(page):
        lower = struct.unpack_from("<H", page, 12)[0]
        for i in range((lower - 16) // 2):
            off = struct.unpack_from("<H", page, 16 + 2 * i)[0]
            lo, hi, flags, ksize = struct.unpack_from("<HHHH", page, off)
            yield off, lo | hi << 16, flags, ksize

    def walk(root, on_leaf, inner):
        page = data[root * psize:(root + 1) * psize]
        if struct.unpack_from("<H", page, 10)[0] & 1:  # a branch
            inner.append(root)
            for _, low, flags, _ in nodes(page):
                walk(low | flags << 32, on_leaf, inner)
        else:
            on_leaf(root, page)

    found, inner, leaves = [], [], {}

    def main_leaf(pgno, page):
        inner.append(pgno)
        for off, _, flags, ksize in nodes(page):
            if page[off + 8:off + 8 + ksize] == name.encode() and flags & 2:
                found.append(struct.unpack_from("<Q", page, off + 8 + ksize + 40)[0])

    def leaf(pgno, page):
        leaves[pgno] = [page[off + 8 + ksize:off + 8 + ksize + size] for off, size, _, ksize in nodes(page)]

    walk(main_root, main_leaf, inner)
    assert found, f"no database {name} in {path}"
    walk(found[0], leaf, inner)
    return psize, inner, leaves


def damage_journal(path, how):
    """Damages the journal so that one leaf of its requests is lost and the
    rest can be read: cut right before its last page (a leaf, with nothing
    the others need after it, as a journal written in order has it), or
    garbage over that leaf. Returns the ids of the requests lost."""
    psize, inner, leaves = lmdb_tree(path, "requests")
    last = max(leaves)
    lost = {msgpack.unpackb(record)["id"] for record in leaves[last]}
    if how == "truncated":
        assert max(inner) < last, "the journal's last page is not a leaf: cannot cut only leaves"
        os.truncate(path, last * psize)
    else:
        with open(path, "r+b") as f:
            f.seek(last * psize)
            f.write(bytes(64))
    return lost


def subscriber(c):
    """A SUB to intake's results, known to be subscribed: an invalid
    request's answer (at once) has come through it."""
    sub = c.socket(zmq.SUB, c.endpoint("intake_results"))
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    push = c.socket(zmq.PUSH, c.endpoint("intake_pull"))

    def probed():
        push.send(msgpack.packb({"t": "check", "v": 1, "id": "probe"}))  # no name: invalid
        while sub.poll(100):
            frames = sub.recv_multipart()
            if frames[0] == b"probe":
                return True
        return False

    wait_until(probed, timeout=20, interval=0, what="the results subscription")
    return sub, push


@pytest.mark.parametrize("how", ["truncated", "garbled"])
def test_a_damaged_journal_stops_intake_with_78_until_salvaged_then_its_readable_requests_are_answered(
        make_cluster, registry, how):
    c = cluster_for(make_cluster, registry)
    c.start("errors")
    intake = c.start("intake")
    # Requests journaled and not answered: no dispatcher yet.
    sub, push = subscriber(c)
    n = 1500
    for i in range(n):
        push.send(msgpack.packb({"t": "check", "v": 1, "id": f"j{i}", "name": f"journaled{i}.test",
                                 "deadline_ms": 300000}))
    wait_until(lambda: c.status("intake")["gauges"]["requests_inflight"] == n, timeout=30,
               what="every request taken in")
    r = c.availctl("journal", "salvage", check=1)  # not under a running intake
    assert f"availd-intake runs (pid {intake.pid})" in r.stderr
    intake.stop()
    journal = data_file(c, "journal")
    lost_ids = damage_journal(journal, how)
    assert lost_ids

    # Refused, with what to do, exit 78: not a crash to restart in a loop.
    refused = c.daemon("intake")
    with pytest.raises(AssertionError):
        refused.start(timeout=30)
    assert refused.proc.wait(30) == AV_EXIT_CONFIG
    log = refused.log()
    assert "[journal_damaged] the request journal in" in log, log[-3000:]
    assert f"availctl -c {c.config_path} journal salvage" in log
    assert "truncated" in log if how == "truncated" else "says it is page" in log

    r = c.availctl("journal", "salvage", check=0)
    saved = n - len(lost_ids)
    assert f"saved {saved} requests into a new journal; lost {len(lost_ids)} of the {n} it held" in r.stdout, \
        r.stdout + r.stderr
    copies = glob.glob(os.path.join(c.state_dir, "journal", "data.mdb.damaged-*"))
    assert len(copies) == 1 and f"moved it aside to {copies[0]}" in r.stdout
    assert c.availctl("journal", "salvage", check=1).stdout.startswith("the journal in")  # sound now

    # The next intake starts and asks the saved requests again: each is
    # answered once; the lost ones are not.
    c.start("intake")
    sub, push = subscriber(c)
    c.start("cache")
    c.start("dispatcher")
    c.start("querier", "test")
    answers, twice = {}, []

    def take(wait_ms):
        while sub.poll(wait_ms):
            topic, body = sub.recv_multipart()[:2]
            rid = topic.decode()
            if rid.startswith("j"):
                (twice if rid in answers else []).append(rid)
                answers[rid] = msgpack.unpackb(body)
        return len(answers) >= saved

    wait_until(lambda: take(50), timeout=120, what="the saved requests answered")
    take(2000)  # and nothing more comes
    assert not twice, twice[:5]
    assert set(answers) == {f"j{i}" for i in range(n)} - lost_ids
    bad = [a for a in answers.values() if a["status"] != truth(a["name"])]
    assert not bad, bad[:3]
