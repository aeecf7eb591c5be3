"""The roll test: a steady load of checks (cache hits and registry queries)
while every daemon is restarted with SIGTERM, then killed with SIGKILL and
restarted, then one querier of a registry that has two is restarted. Every
check must be answered exactly once and never wrongly, and no daemon's
memory may grow without bound.

The frontend is what DESIGN asks of one that wants exactly one answer
across an intake crash: a DEALER with a fixed routing id (so a restarted
intake can answer what its journal held) that asks again, with the same id,
when no answer came within its retry time (a request intake had not yet
journaled when it was killed is lost with its process)."""
import json
import os
import threading
import time

import msgpack
import zmq

from harness import FakeRegistry, rss_kb, truth, wait_until, whois_registry

RATE_PER_S = 2000          # checks a second, a new one every 0.5 ms
HIT_NAMES = 400            # names asked again and again: cache hits
HIT_SHARE = 0.6
DEADLINE_MS = 3000
RETRY_S = 6.0              # ask again when no answer came by then
SETTLE_S = 2.0             # after each restart, before the next


class Load(threading.Thread):
    def __init__(self, cluster):
        super().__init__(daemon=True)
        self.sock = cluster.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, b"roll-frontend")
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.connect(cluster.endpoint("intake_router"))
        self.running = threading.Event()
        self.stop_sending = threading.Event()
        self.lock = threading.Lock()
        self.requests = {}      # id -> dict(name, sent, first_sent, answers, retried)
        self.counter = 0

    def pick_name(self):
        self.counter += 1
        if (self.counter * 7919) % 100 < HIT_SHARE * 100:
            return f"hit{self.counter % HIT_NAMES}.test"
        return f"miss{self.counter}.test" if self.counter % 3 else f"miss{self.counter}.other"

    def send(self, rid, name):
        self.sock.send(msgpack.packb({"t": "check", "v": 1, "id": rid, "name": name, "deadline_ms": DEADLINE_MS}))

    def outstanding(self):
        with self.lock:
            return sum(1 for r in self.requests.values() if not r["answers"])

    def run(self):
        self.running.set()
        next_send = time.monotonic()
        while self.running.is_set():
            now = time.monotonic()
            if not self.stop_sending.is_set():
                while next_send <= now:
                    name = self.pick_name()
                    rid = f"c{self.counter}"
                    with self.lock:
                        self.requests[rid] = {"name": name, "sent": now, "first_sent": now, "answers": [],
                                              "retried": 0}
                    self.send(rid, name)
                    next_send += 1.0 / RATE_PER_S
            else:
                next_send = now
            while self.sock.poll(0):
                a = msgpack.unpackb(self.sock.recv(), raw=False)
                with self.lock:
                    r = self.requests.get(a["id"])
                    if r is not None:
                        r["answers"].append((time.monotonic(), a))
            with self.lock:
                late = [(rid, r) for rid, r in self.requests.items()
                        if not r["answers"] and now - r["sent"] > RETRY_S]
            for rid, r in late[:200]:
                r["sent"] = now
                r["retried"] += 1
                self.send(rid, r["name"])
            self.sock.poll(0.3)

    def stop(self):
        self.running.clear()
        self.join(10)


def test_roll_every_daemon_under_load_loses_nothing(make_cluster):
    registry = FakeRegistry(delay_ms=20)
    try:
        c = make_cluster({
            "dispatcher": {"heartbeat_ms": 100, "heartbeat_misses": 3},
            "intake": {"resend_ms": 1500},
            "process": {"log_level": 2, "drain_ms": 3000},
            "registries": {
                "test": whois_registry(registry.port, ["test"], queriers=2, concurrency=200, timeout_ms=2000),
                "other": whois_registry(registry.port, ["other"], concurrency=200, timeout_ms=2000),
            },
        }).start_all()
        by_ident = {d.ident: d for d in c.daemons}
        # warm the cache for the hit names
        c.ask([f"hit{i}.test" for i in range(HIT_NAMES)], timeout=30)
        load = Load(c)
        load.start()
        time.sleep(3)
        # A daemon's own memory (RssAnon: the LMDB maps are file pages,
        # bounded by the database sizes) under a steady load, nothing
        # restarted: it must level off, not climb with the checks answered
        # (about 12,000 more here).
        rss_start = {ident: rss_kb(d.pid, "RssAnon") for ident, d in by_ident.items()}
        time.sleep(6)
        rss_steady = {ident: rss_kb(d.pid, "RssAnon") for ident, d in by_ident.items()}
        for ident in rss_start:
            grown = rss_steady[ident] - rss_start[ident]
            # allowance: a quarter, plus what ASan's quarantine (16 MB in
            # the suite) keeps of freed memory, plus 8 MB
            assert grown < rss_start[ident] * 0.25 + 24 * 1024, \
                f"{ident} grew from {rss_start[ident]} to {rss_steady[ident]} kB under steady load"

        events = []

        def event(name, action, daemon=None):
            t = time.monotonic()
            in_flight = load.outstanding()
            action()
            e = {"event": name, "at": t, "in_flight": in_flight}
            if daemon is not None:
                e["stop_ms"] = round(1000 * daemon.last_stop_s)  # SIGTERM to exit, under the load
            events.append(e)
            time.sleep(SETTLE_S)

        order = ["errors", "cache", "dispatcher", "querier-test", "querier-other", "intake"]
        for ident in order:
            event(f"{ident} SIGTERM", lambda d=by_ident[ident]: d.restart(hard=False), by_ident[ident])
        for ident in order:
            event(f"{ident} SIGKILL", lambda d=by_ident[ident]: d.restart(hard=True))
        event("querier-test.2 restart (one of two)", lambda: by_ident["querier-test.2"].restart())
        time.sleep(2)
        rss_end = {ident: rss_kb(d.pid) for ident, d in by_ident.items()}
        load.stop_sending.set()
        wait_until(lambda: load.outstanding() == 0, timeout=RETRY_S * 3, interval=0.2,
                   what="every check answered")
        time.sleep(1)  # late duplicates would arrive now
        load.stop()

        lost, duplicated, wrong, unknown = [], [], [], []
        for rid, r in load.requests.items():
            if not r["answers"]:
                lost.append(rid)
            elif len(r["answers"]) > 1:
                duplicated.append(rid)
            status = r["answers"][0][1]["status"] if r["answers"] else None
            if status in ("available", "registered") and status != truth(r["name"]):
                wrong.append(rid)
            if status == "unknown":
                unknown.append((rid, r["answers"][0][1].get("reason")))
        figures = []
        for i, e in enumerate(events):
            # checks sent from just before this event to just before the next
            end = (events[i + 1]["at"] if i + 1 < len(events) else e["at"] + SETTLE_S) - 0.5
            window = [r for r in load.requests.values() if e["at"] - 0.5 <= r["first_sent"] < end]
            delays = [r["answers"][0][0] - r["first_sent"] for r in window if r["answers"]]
            figures.append({
                "event": e["event"], "in_flight": e["in_flight"], "checks_around": len(window),
                "lost": sum(1 for r in window if not r["answers"]),
                "duplicated": sum(1 for r in window if len(r["answers"]) > 1),
                "retried": sum(1 for r in window if r["retried"]),
                "unknown": sorted({r["answers"][0][1].get("reason") for r in window
                                   if r["answers"] and r["answers"][0][1]["status"] == "unknown"}),
                "unknown_count": sum(1 for r in window if r["answers"] and r["answers"][0][1]["status"] == "unknown"),
                "longest_delay_ms": round(1000 * max(delays), 1) if delays else None,
                **({"stop_ms": e["stop_ms"]} if "stop_ms" in e else {}),
            })
        report = {"checks": len(load.requests), "lost": len(lost), "duplicated": len(duplicated),
                  "wrong": len(wrong), "unknown": len(unknown), "events": figures,
                  "rss_kb_start": rss_start, "rss_kb_steady": rss_steady, "rss_kb_end": rss_end}
        out = os.environ.get("AVAILD_ROLL_REPORT")
        if out:
            with open(out, "w") as f:
                json.dump(report, f, indent=1)
        print(json.dumps(report, indent=1))
        assert len(load.requests) > 40000
        assert not lost, f"{len(lost)} checks never answered, e.g. {lost[:5]}"
        assert not duplicated, f"{len(duplicated)} checks answered twice, e.g. {duplicated[:5]}"
        assert not wrong, f"{len(wrong)} wrong answers, e.g. {wrong[:5]}"
        # Memory: the restarted daemons are fresh; none may have grown past a
        # bound while the load ran (sanitizer builds use more).
        for ident, kb in rss_end.items():
            assert kb < 400 * 1024, f"{ident} uses {kb} kB"
    finally:
        registry.close()
