"""Live reload (SIGHUP and availctl reload) under load: registries added and
removed, patterns, rate limits, TTLs and the log level change without a
restart and without losing a check; a broken file is refused with its
location and an error event, and the old configuration stays."""
import copy
import os
import threading
import time

import msgpack
import zmq

from harness import FakeRegistry, truth, wait_until, whois_registry


class SteadyLoad(threading.Thread):
    """Checks of .test names at a steady rate, answers counted by id."""

    def __init__(self, cluster, rate_per_s=100):
        super().__init__(daemon=True)
        self.sock = cluster.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, b"reload-load")
        self.sock.connect(cluster.endpoint("intake_router"))
        self.rate = rate_per_s
        self.sent, self.answers = {}, {}
        self.stop_sending = threading.Event()
        self.paused = threading.Event()
        self.done = threading.Event()

    def run(self):
        i, next_send = 0, time.monotonic()
        while not self.done.is_set():
            now = time.monotonic()
            if self.paused.is_set():
                next_send = now
            while not self.stop_sending.is_set() and not self.paused.is_set() and next_send <= now:
                i += 1
                self.sent[f"s{i}"] = f"steady{i}.test"
                # A deadline far beyond any slowness of a busy machine: an
                # unknown `deadline` here means a check was dropped.
                self.sock.send(msgpack.packb({"t": "check", "v": 1, "id": f"s{i}", "name": f"steady{i}.test",
                                              "deadline_ms": 60000}))
                next_send += 1.0 / self.rate
            while self.sock.poll(0):
                a = msgpack.unpackb(self.sock.recv(), raw=False)
                self.answers.setdefault(a["id"], []).append(a)
            self.sock.poll(5)


def reload_all(c, expect_ok=True):
    r = c.availctl("reload")
    if expect_ok:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_reload_under_load_changes_registries_patterns_limits_ttls_and_log_level(make_cluster):
    registry = FakeRegistry()
    load = None
    try:
        # a registry timeout far beyond a busy machine's slowness: unknowns here are the configuration's
        test = whois_registry(registry.port, ["test"], concurrency=100, timeout_ms=10000)
        # no `available` pattern yet: free- names are unparseable, never available
        del test["patterns"]["available"]
        c = make_cluster({
            "dispatcher": {"heartbeat_ms": 300},  # no querier is killed here: a wide window for a busy machine
            "process": {"log_level": 2},
            "registries": {"test": test},
        }).start_all()
        load = SteadyLoad(c)
        load.start()
        time.sleep(1)

        # patterns
        assert (c.ask("free-p.test", fresh=True)["status"], c.ask("free-p.test", fresh=True)["reason"]) == \
            ("unknown", "unparseable")
        c.config["registries"]["test"]["patterns"]["available"] = ["^No match for"]
        c.write_config()
        reload_all(c)
        assert c.ask("free-p.test", fresh=True)["status"] == "available"

        # a registry added: its names were unsupported, now they are asked
        assert c.ask("x.other")["reason"] == "unsupported_tld"
        c.config["registries"]["other"] = whois_registry(registry.port, ["other"])
        c.write_config()
        reload_all(c)
        c.start("querier", "other")
        assert c.ask("taken-o.other")["status"] == "registered"

        # ... and removed again (its querier stopped first, as ops would)
        next(d for d in c.daemons if d.ident == "querier-other").stop()
        del c.config["registries"]["other"]
        c.write_config()
        reload_all(c)
        assert c.ask("taken-o2.other")["reason"] == "unsupported_tld"

        # a rate limit appears: 6 fresh queries at 3 a second take a while.
        # The steady load (100 new names a second) pauses meanwhile: against
        # 3 a second it would only queue up until its deadlines.
        load.paused.set()
        wait_until(lambda: len(load.answers) == len(load.sent), timeout=90, what="the steady load answered")
        c.config["registries"]["test"]["rate_limit"] = {"queries": 3, "period_s": 1, "burst": 1}
        c.write_config()
        reload_all(c)
        t0 = time.monotonic()
        c.ask([f"rl{i}.test" for i in range(6)], fresh=True, timeout=20)
        assert time.monotonic() - t0 >= 1.4
        # budget: global (the default): the dispatcher holds the rate limit for every querier
        assert c.status("dispatcher")["counters"]["budget_waits"] > 0
        # ... and goes: the token bucket holds nothing back any more (a
        # counter, not a stopwatch: a busy machine is slow either way)
        del c.config["registries"]["test"]["rate_limit"]
        c.write_config()
        reload_all(c)
        waits = c.status("querier-test")["counters"]["rate_limit_waits"]
        c.ask([f"fast{i}.test" for i in range(6)], fresh=True, timeout=20)
        assert c.status("querier-test")["counters"]["rate_limit_waits"] == waits
        load.paused.clear()

        # TTLs: available answers not cached, then cached
        c.config["registries"]["test"]["ttl"] = {"available": 0}
        c.write_config()
        reload_all(c)
        c.ask("free-ttl.test")
        time.sleep(0.2)
        assert c.ask("free-ttl.test")["source"] == "whois"
        c.config["registries"]["test"]["ttl"] = {"available": 3600}
        c.write_config()
        reload_all(c)
        c.ask("free-ttl.test")
        wait_until(lambda: c.ask("free-ttl.test")["source"] == "cache", what="cached after the TTL change")

        # the log level: debug lines appear
        dispatcher = next(d for d in c.daemons if d.kind == "dispatcher")
        assert "debug:" not in dispatcher.log()
        c.config["process"]["log_level"] = 4
        c.write_config()
        reload_all(c)
        c.control("dispatcher", "status")
        c.ask("bad_name.test")
        querier = next(d for d in c.daemons if d.ident == "querier-test")
        c.write_config(open(c.config_path).read())
        reloads = c.status("querier-test")["counters"]["reloads"]
        querier.signal(__import__("signal").SIGHUP)  # SIGHUP works as well as availctl reload
        wait_until(lambda: c.status("querier-test")["counters"]["reloads"] == reloads + 1, what="SIGHUP reload")

        # a broken file: refused everywhere with its location, old one kept
        good = open(c.config_path).read()
        c.write_config(good + "registries_typo: {}\n")
        line = good.count("\n") + 1
        # availctl reads the file first and says what is wrong, once
        r = reload_all(c, expect_ok=False)
        assert r.returncode == 1 and f"{c.config_path}:{line}:1: unknown key 'registries_typo'" in r.stderr
        # a daemon sent SIGHUP refuses it itself, says where, and keeps the old one
        for d in c.daemons:
            if d.alive():
                d.signal(__import__("signal").SIGHUP)
        for d in c.daemons:
            if d.alive():
                wait_until(lambda d=d: f"{c.config_path}:{line}:1: unknown key 'registries_typo'" in d.log(),
                           what=f"{d.ident} refusing the file")
        events = c.control("errors", "recent", limit=1000)["events"]
        assert any(e["code"] == "config_refused" and f":{line}:1:" in e["text"] for e in events)
        assert c.ask("taken-after.test")["status"] == "registered"
        c.write_config(good)

        # the load ran through every step above: at least 500 checks (a busy
        # machine's load thread may have needed longer to send them)
        wait_until(lambda: len(load.sent) >= 500, timeout=60, what="500 steady checks sent")
        load.stop_sending.set()
        wait_until(lambda: len(load.answers) == len(load.sent), timeout=90, what="every steady check answered")
        time.sleep(0.5)
        load.done.set()
        load.join(5)
        assert len(load.sent) >= 500
        dup = [k for k, v in load.answers.items() if len(v) > 1]
        wrong = [k for k, v in load.answers.items() if v[0]["status"] in ("available", "registered")
                 and v[0]["status"] != truth(load.sent[k])]
        unknown = [v[0].get("reason") for v in load.answers.values() if v[0]["status"] == "unknown"]
        assert not dup and not wrong
        # before the available pattern came, available names were unparseable: that is the
        # old configuration speaking, not a lost check
        assert set(unknown) <= {"unparseable"}, set(unknown)
    finally:
        if load:
            # its socket must be closed by its own thread before the cluster's
            # context goes: pyzmq sockets are not thread-safe
            load.done.set()
            load.join(5)
        registry.close()


def test_reload_keeps_what_needs_a_restart_and_says_so(make_cluster):
    """Settings a daemon applies only at start (a database path, an
    endpoint, a registry's protocol) are not adopted behind its back: the
    daemon keeps the running value, the reload says "needs restart: KEY",
    status says it until the file agrees again; the other settings of the
    same reload apply at once."""
    registry = FakeRegistry()
    try:
        test = whois_registry(registry.port, ["test"], concurrency=10, timeout_ms=10000)
        c = make_cluster({"dispatcher": {"heartbeat_ms": 300}, "registries": {"test": test}}).start_all()
        assert c.ask("taken-a.test")["status"] == "registered"
        good = copy.deepcopy(c.config)
        for ident in ("cache", "dispatcher", "querier-test", "intake", "errors"):
            assert c.status(ident)["needs_restart"] == []

        old_cache_dir = os.path.join(c.state_dir, "cache")
        c.config["cache"] = {"path": os.path.join(c.dir, "elsewhere")}
        c.config["endpoints"]["cache_puts"] = "ipc://cache-moved.sock"
        c.config["registries"]["test"]["protocol"] = "rdap"
        c.config["registries"]["test"]["base_url"] = f"http://127.0.0.1:{registry.port}/"
        c.config["registries"]["test"]["ttl"] = {"registered": 1}  # a live setting of the same file
        c.config["dispatcher"]["heartbeat_ms"] = 400               # live for the queriers
        c.write_config()
        replies = {ident: c.control(ident, "reload") for ident in ("cache", "dispatcher", "querier-test", "intake")}
        assert all(r["ok"] for r in replies.values()), replies
        assert sorted(replies["cache"]["needs_restart"]) == ["cache.path", "endpoints.cache_puts"]
        assert sorted(replies["dispatcher"]["needs_restart"]) == ["cache.path", "endpoints.cache_puts"]
        assert replies["querier-test"]["needs_restart"] == ["registries.test.protocol"]
        assert replies["intake"]["needs_restart"] == []
        assert c.status("cache")["needs_restart"] == replies["cache"]["needs_restart"]

        # the running values stay: the querier still asks by whois, and
        # answers still reach the cache on its old endpoint, in its old place
        a = c.ask("taken-b.test", fresh=True)
        assert (a["status"], a["source"]) == ("registered", "whois")
        wait_until(lambda: c.control("cache", "get", name="taken-b.test").get("found"), timeout=20,
                   what="the answer stored by the cache on its running endpoint")
        assert os.path.exists(os.path.join(old_cache_dir, "data.mdb"))
        assert not os.path.exists(os.path.join(c.dir, "elsewhere"))
        # ...while the live setting of the same reload took effect
        assert c.control("cache", "get", name="taken-b.test")["ttl_left_s"] <= 1

        # `availctl reload` and `availctl status` say it too
        r = c.availctl("reload")
        assert r.returncode == 0, r.stdout + r.stderr
        lines = {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}
        assert "needs restart: " in lines["cache"] and "cache.path" in lines["cache"], r.stdout
        assert "needs restart" not in lines["intake"], r.stdout
        r = c.availctl("status", "querier-test")
        assert "needs restart: registries.test.protocol" in r.stdout

        # a file that refuses to load changes nothing, the list included
        with open(c.config_path, "a") as f:
            f.write("not_a_key: 1\n")
        assert not c.control("cache", "reload")["ok"]
        assert sorted(c.status("cache")["needs_restart"]) == ["cache.path", "endpoints.cache_puts"]

        # the file back as it runs: nothing needs a restart any more
        c.config = good
        c.write_config()
        for ident in ("cache", "dispatcher", "querier-test", "intake"):
            reply = c.control(ident, "reload")
            assert reply["ok"] and reply["needs_restart"] == [], (ident, reply)
        assert c.ask("taken-c.test", fresh=True)["status"] == "registered"
    finally:
        registry.close()
