"""A full disk under intake's journal keeps "exactly one answer" (issue 12).

The journal lives on a small tmpfs of its own. Checks are journaled and at
the registry when the tmpfs is filled to the last byte; a burst of 1,500
checks a second then comes in through the ROUTER (a DEALER with a fixed
routing id) and the PULL socket while the earlier checks are answered; the
space is freed, the burst goes on a little, and intake is stopped (SIGTERM)
while checks are in flight and started again. Every request must then have
exactly one answer: a real one, or `unknown` (storage or overloaded) for
one intake could not journal and so did not take; none lost at the stop,
none answered twice after the restart (an answer out before its request
left the journal); and availd-errors must hold the storage error with its
cause and its counts.

Needs root (it mounts the tmpfs); always unmounted, also on failure."""
import collections
import errno
import os
import re
import subprocess
import tempfile
import time

import msgpack
import pytest
import zmq

from harness import FakeRegistry, truth, wait_until, whois_registry

TMPFS_SIZE = "2m"
RATE_PER_S = 1500
REGISTRY_DELAY_MS = 1000   # checks stay in flight this long
EARLIER = 300              # journaled before the disk fills
FULL_S = 2.0               # the burst while the disk is full
FREED_S = 0.5              # and after the space is freed, before SIGTERM
REFUSED = ("storage", "overloaded")
STORAGE_CODES = ("journal_no_space", "journal_map_full", "journal_io_error", "journal_failed")


@pytest.fixture
def journal_tmpfs():
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tempfile.mkdtemp(prefix="av-disk-", dir="/tmp")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "tmpfs", path], check=True)
    try:
        yield path
    finally:
        # The cluster (set up after this fixture) is closed by now; a
        # daemon left behind holding the journal open gets a lazy unmount.
        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], check=True)
        os.rmdir(path)


def fill(directory):
    """Writes a file until the filesystem has not a byte left."""
    path = os.path.join(directory, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\xff" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return path


class Frontend:
    """A request-reply frontend with a fixed routing id and a fire-and-forget
    one with a subscription to its answers, driven from one thread (ZeroMQ
    sockets are not thread-safe): sending paced, reading in between."""

    def __init__(self, cluster):
        self.dealer = cluster.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.ROUTING_ID, b"disk-frontend")
        self.push = cluster.socket(zmq.PUSH)
        self.sub = cluster.socket(zmq.SUB)
        for s in (self.dealer, self.push, self.sub):
            s.setsockopt(zmq.SNDHWM, 0)
            s.setsockopt(zmq.RCVHWM, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"p")
        self.dealer.connect(cluster.endpoint("intake_router"))
        self.push.connect(cluster.endpoint("intake_pull"))
        self.sub.connect(cluster.endpoint("intake_results"))
        self.poller = zmq.Poller()
        self.poller.register(self.dealer, zmq.POLLIN)
        self.poller.register(self.sub, zmq.POLLIN)
        self.sent = {}                                  # id -> name
        self.answers = collections.defaultdict(list)    # id -> [answer]
        self.n = 0

    def send(self, pushed, name):
        self.n += 1
        rid = f"{'p' if pushed else 'r'}{self.n}"
        self.sent[rid] = name
        msg = msgpack.packb({"t": "check", "v": 1, "id": rid, "name": name})
        (self.push if pushed else self.dealer).send(msg)

    def read(self, timeout_ms):
        for s, _ in self.poller.poll(timeout_ms):
            while True:
                try:
                    frames = s.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                a = msgpack.unpackb(frames[-1], raw=False)
                if a.get("t") == "answer":  # not what else a publisher may say
                    self.answers[a["id"]].append(a)

    def pump(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.read(20)

    def burst(self, seconds, prefix):
        """RATE_PER_S checks a second, every other one pushed."""
        start = time.monotonic()
        sent = 0
        while time.monotonic() - start < seconds:
            due = int((time.monotonic() - start) * RATE_PER_S)
            while sent < due:
                self.send(sent % 2 == 1, f"{prefix}{sent}.test")
                sent += 1
            self.read(1)

    def subscribed(self):
        """Pushes probes until one is published back: the subscription is in
        place (a PUB drops what comes before it)."""
        n = 0
        while not any(k.startswith("pprobe") for k in self.answers):
            n += 1
            self.push.send(msgpack.packb({"t": "check", "v": 1, "id": f"pprobe{n}", "name": "free-probe.test"}))
            self.read(100)
            assert n < 100, "no answer published to the subscriber"

    def unanswered(self):
        return [rid for rid in self.sent if not self.answers.get(rid)]


def test_a_full_disk_loses_no_accepted_check_and_answers_none_twice(journal_tmpfs, make_cluster):
    registry = FakeRegistry(delay_ms=REGISTRY_DELAY_MS)
    try:
        c = make_cluster({
            "intake": {"journal": os.path.join(journal_tmpfs, "journal"), "resend_ms": 5000},
            "registries": {"test": whois_registry(registry.port, ["test"], concurrency=4000, queue=10000,
                                                  timeout_ms=8000)},
        }).start_all()
        intake = next(d for d in c.daemons if d.kind == "intake")
        fe = Frontend(c)
        fe.subscribed()

        # Journaled and at the registry: their deletes come while the disk is full.
        for i in range(EARLIER):
            fe.send(False, f"early{i}.test")
        wait_until(lambda: registry.stats()["open"] >= EARLIER, timeout=30, what="the early checks at the registry")
        filler = fill(journal_tmpfs)
        fe.burst(FULL_S, "full")
        os.remove(filler)
        fe.burst(FREED_S, "freed")
        intake.restart()  # SIGTERM, wait for its exit, start it again
        deadline = time.monotonic() + 40
        while fe.unanswered() and time.monotonic() < deadline:
            fe.pump(0.2)
        fe.pump(3.0)  # a second answer, if any, comes by now
        # The push way is best effort (proto/README.md): past intake's 5 s
        # hold for a subscriber that is away (reconnecting to the restarted
        # intake) or behind a PUB's high-water mark (a starved test on a
        # busy machine), an answer is dropped and the frontend asks again
        # (1 of 4,041 in a CI run before the hold; 0 since). The journal's
        # contract is held to the request-reply checks, which no transport
        # drops: every one answered exactly once. A pushed check answered
        # twice still fails.
        missed_pushes = [rid for rid in fe.unanswered() if rid.startswith("p")]
        for rid in missed_pushes:
            fe.push.send(msgpack.packb({"t": "check", "v": 1, "id": rid, "name": fe.sent[rid]}))
        deadline = time.monotonic() + 30
        while fe.unanswered() and time.monotonic() < deadline:
            fe.pump(0.2)

        lost = fe.unanswered()
        duplicates = [rid for rid in fe.sent if len(fe.answers.get(rid, ())) > 1]
        refused = [rid for rid in fe.sent
                   if len(fe.answers.get(rid, ())) == 1 and fe.answers[rid][0]["status"] == "unknown"]
        reasons = collections.Counter(fe.answers[rid][0].get("reason") for rid in refused)
        wrong = [(rid, a["status"]) for rid in fe.sent for a in fe.answers.get(rid, ())
                 if a["status"] != "unknown" and a["status"] != truth(fe.sent[rid])]
        events = c.control("errors", "recent", limit=1000)["events"]
        storage = [e for e in events if e["code"] in STORAGE_CODES]
        counted = [e for e in storage if re.search(r"\d+ failed commits, \d+ new requests refused", e["text"])]
        print(f"\nfull disk: {len(fe.sent)} checks, {len(fe.sent) - len(refused)} answered by the registry, "
              f"refused {dict(reasons)}, duplicates {len(duplicates)}, lost {len(lost)}, "
              f"push answers missed by the subscriber and asked again {len(missed_pushes)}, "
              f"storage events {len(storage)} ({len(counted)} with counts), codes "
              f"{sorted(set(e['code'] for e in storage))}")
        for e in storage[:3]:
            print(f"  [{e['code']}] {e['text']}")

        assert not duplicates, f"{len(duplicates)} checks answered twice, e.g. {duplicates[:5]}"
        assert not lost, f"{len(lost)} checks never answered, e.g. {lost[:5]}"
        assert not wrong, wrong[:5]
        assert set(reasons) <= set(REFUSED), reasons
        assert reasons["storage"] > 0, "nothing was refused while the disk was full"
        assert counted, f"no storage error event with counts: {[(e['code'], e['text']) for e in storage]}"
        assert any(e["code"] == "journal_no_space" and "No space left on device" in e["text"] for e in storage)
        assert any(e["code"] == "journal_recovered" for e in events), "no event when the journal was written again"
        assert intake.alive()
        status = c.status("intake")
        assert status["gauges"]["answers_waiting_for_journal"] == 0
    finally:
        registry.close()
