"""Queriers that serve many registries: each registry of a querier group
keeps its own budget, so one registry that throttles and one that never
answers do not hold back the others; and a registry moves to a querier of
its own by config and reload, under load, with nothing lost."""
import threading
import time

import msgpack
import zmq

from harness import FakeRegistry, truth, wait_until, whois_registry

N_REGISTRIES = 50
PER_REGISTRY = 20


def tld(i):
    return f"g{i}"


def test_one_registry_throttled_and_one_silent_do_not_hold_back_the_other_48(make_cluster):
    registry = FakeRegistry()
    try:
        registries = {
            f"reg{i}": whois_registry(registry.port, [tld(i)], concurrency=4, timeout_ms=20000, backoff_s=60)
            for i in range(N_REGISTRIES)
        }
        c = make_cluster({
            "registries": registries,
            "queriers": {"all": {"registries": list(registries)}},
        }).start_all()
        assert list(c.querier_groups()) == ["all"]
        status = c.status("querier-all")
        assert status["gauges"]["registries"] == N_REGISTRIES

        # registry 0 answers every query with its rate-limit wording, registry 1
        # never answers (its queries time out after 20 s); the other 48 answer
        names = []
        for i in range(N_REGISTRIES):
            prefix = "limit-" if i == 0 else "silent-" if i == 1 else ""
            names += [f"{prefix}n{k}.{tld(i)}" for k in range(PER_REGISTRY)]
        sock = c.socket(zmq.DEALER, c.endpoint("intake_router"))
        # the healthy registries' checks must be answered well within their
        # deadline: a shared queue behind the silent registry's 20 s would not be
        for k in range(0, len(names), 100):
            sock.send(msgpack.packb({"t": "check", "v": 1, "id": f"b{k}", "names": names[k:k + 100],
                                     "deadline_ms": 15000}))
        answers = {}
        deadline = time.monotonic() + 120
        while len(answers) < len(names) and time.monotonic() < deadline:
            if sock.poll(1000):
                reply = msgpack.unpackb(sock.recv(), raw=False)
                for a in reply["answers"]:
                    answers[a["name"]] = a
        assert len(answers) == len(names), f"{len(names) - len(answers)} checks unanswered"

        healthy = [n for n in names if n.split(".")[1] not in (tld(0), tld(1))]
        wrong = [n for n in healthy if answers[n]["status"] != truth(n)]
        assert not wrong, [(n, answers[n]["status"], answers[n].get("reason")) for n in wrong[:5]]
        throttled = [answers[n] for n in names if n.endswith("." + tld(0))]
        assert all(a["status"] == "unknown" and a["reason"] == "rate_limited" for a in throttled), throttled[:3]
        silent = [answers[n] for n in names if n.endswith("." + tld(1))]
        assert all(a["status"] == "unknown" and a["reason"] == "deadline" for a in silent), silent[:3]

        # the throttled registry backs off, alone
        counters = c.status("querier-all")["counters"]
        assert counters["backoffs"] == 1
        per = {r["registry"]: r for r in c.control("querier-all", "registries")["registries"]}
        assert per["reg0"]["backoff_ms"] > 0
        assert all(per[f"reg{i}"]["backoff_ms"] == 0 for i in range(1, N_REGISTRIES))
        # the silent registry still holds its queries; no other holds any
        assert per["reg1"]["inflight"] == 4  # its concurrency
        assert all(per[f"reg{i}"]["inflight"] == 0 for i in range(2, N_REGISTRIES))
        # each healthy name was asked once; the throttled registry at most its
        # concurrency (then it backed off), the silent one its concurrency
        asked = registry.stats()["names"]
        assert all(asked.get(n) == 1 for n in healthy), [n for n in healthy if asked.get(n) != 1][:5]
        assert 1 <= sum(v for n, v in asked.items() if n.endswith("." + tld(0))) <= 4
        assert sum(v for n, v in asked.items() if n.endswith("." + tld(1))) == 4
    finally:
        registry.close()


class Load(threading.Thread):
    """Checks of names of one TLD at a steady rate through intake's ROUTER,
    each answer counted by id."""

    def __init__(self, cluster, suffix, rate_per_s=50):
        super().__init__(daemon=True)
        self.sock = cluster.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, b"groups-load")
        self.sock.connect(cluster.endpoint("intake_router"))
        self.suffix, self.rate = suffix, rate_per_s
        self.sent, self.answers = {}, {}
        self.stop_sending, self.done = threading.Event(), threading.Event()

    def run(self):
        i, next_send = 0, time.monotonic()
        while not self.done.is_set():
            now = time.monotonic()
            while not self.stop_sending.is_set() and next_send <= now:
                i += 1
                name = f"m{i}.{self.suffix}"
                self.sent[f"s{i}"] = name
                self.sock.send(msgpack.packb({"t": "check", "v": 1, "id": f"s{i}", "name": name,
                                              "fresh": True, "deadline_ms": 60000}))
                next_send += 1.0 / self.rate
            while self.sock.poll(0):
                a = msgpack.unpackb(self.sock.recv(), raw=False)
                self.answers.setdefault(a["id"], []).append(a)
            self.sock.poll(5)


def test_a_registry_moves_to_a_querier_of_its_own_under_load_with_nothing_lost(make_cluster):
    registry = FakeRegistry(delay_ms=20)
    load = None
    try:
        registries = {
            "busy": whois_registry(registry.port, ["busy"], concurrency=20, timeout_ms=10000),
            "quiet": whois_registry(registry.port, ["quiet"], concurrency=4, timeout_ms=10000),
        }
        c = make_cluster({
            "dispatcher": {"heartbeat_ms": 300},
            "registries": registries,
            "queriers": {"tail": {"registries": ["busy", "quiet"]}},
        }).start_all()
        assert c.ask("x1.busy")["status"] == truth("x1.busy")
        load = Load(c, "busy")
        load.start()
        wait_until(lambda: len(load.answers) >= 100, timeout=60, what="100 checks of busy answered")

        # busy moves to a querier of its own: its querier starts first, then
        # the reload tells the old one and the dispatcher
        c.config["queriers"] = {"tail": {"registries": ["quiet"]}, "dedicated": {"registries": ["busy"]}}
        c.write_config()
        c.start("querier", "dedicated")
        r = c.availctl("reload")
        assert r.returncode == 0, r.stdout + r.stderr
        wait_until(lambda: c.status("querier-tail")["gauges"]["registries"] == 1, timeout=30,
                   what="the old querier giving busy up")
        answered_before = len(load.answers)
        wait_until(lambda: len(load.answers) >= answered_before + 200, timeout=60,
                   what="200 more checks of busy answered after the move")
        # the new querier answers them now, the old one no more
        assert c.status("querier-dedicated")["counters"]["checks"] > 0
        per_tail = {x["registry"] for x in c.control("querier-tail", "registries")["registries"]}
        assert per_tail == {"quiet"}
        assert c.ask("x2.quiet", fresh=True)["status"] == truth("x2.quiet")

        load.stop_sending.set()
        wait_until(lambda: len(load.answers) == len(load.sent), timeout=90, what="every check answered")
        load.done.set()
        load.join(5)
        dup = [k for k, v in load.answers.items() if len(v) > 1]
        wrong = [k for k, v in load.answers.items() if v[0]["status"] != truth(load.sent[k])]
        assert not dup and not wrong, (dup[:5], [(k, load.answers[k][0]) for k in wrong[:5]])
    finally:
        if load:
            load.done.set()
            load.join(5)
        registry.close()
