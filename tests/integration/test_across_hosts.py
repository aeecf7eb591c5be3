"""availd across hosts, for real: network namespaces and veth links made by
the test (root), a core host (errors, cache, dispatcher, intake) and
querier hosts whose queriers reach the dispatcher over tcp:// with CURVE,
each host with its own fake registry on its own loopback. Faults: a link
cut for 10 s and restored, a querier host gone for good, the dispatcher
restarted while querier hosts keep running, a frontend on a third host with
a wrong key. Every namespace is removed in every outcome.

Prints, per fault, checks sent / in flight at the fault / lost / duplicated
/ longest delay (pytest -s shows them)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import msgpack
import pytest
import zmq

from harness import BUILD_DIR, Cluster, binary, wait_until, whois_registry

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="network namespaces need root and iproute2")

TAG = f"{os.getpid() % 100000}"
WORKERS_PORT = 5801
EVENTS_PORT = 5802
ROUTER_PORT = 5803


def ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {r.stderr}")
    return r


class Hosts:
    """Namespaces named avNAME<pid> and veth links from the core to each."""

    def __init__(self):
        self.names = {}
        self.links = {}

    def add(self, name):
        ns = f"av{name}{TAG}"
        ip("netns", "add", ns)
        self.names[name] = ns
        ip("-n", ns, "link", "set", "lo", "up")
        return ns

    def link(self, a, b, index):
        """veth a<->b, 10.211.INDEX.1 on a, .2 on b. Returns a's address."""
        va, vb = f"v{TAG}x{index}a", f"v{TAG}x{index}b"
        ip("link", "add", va, "type", "veth", "peer", "name", vb)
        ip("link", "set", va, "netns", self.names[a])
        ip("link", "set", vb, "netns", self.names[b])
        ip("-n", self.names[a], "addr", "add", f"10.211.{index}.1/24", "dev", va)
        ip("-n", self.names[b], "addr", "add", f"10.211.{index}.2/24", "dev", vb)
        ip("-n", self.names[a], "link", "set", va, "up")
        ip("-n", self.names[b], "link", "set", vb, "up")
        self.links[index] = (self.names[a], va)
        return f"10.211.{index}.1"

    def cut(self, index):
        ns, dev = self.links[index]
        ip("-n", ns, "link", "set", dev, "down")

    def restore(self, index):
        ns, dev = self.links[index]
        ip("-n", ns, "link", "set", dev, "up")

    def wrap(self, name):
        return ["ip", "netns", "exec", self.names[name]]

    def close(self):
        for ns in self.names.values():
            pids = ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            ip("netns", "del", ns, check=False)
        self.names.clear()


class NsRegistry:
    """The fake registry on a host's own loopback."""

    def __init__(self, hosts, name, delay_ms):
        self.proc = subprocess.Popen([*hosts.wrap(name), binary("test-registry"), "--delay-ms", str(delay_ms)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("PORT "), line
        self.port = int(line.split()[1])

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def availctl_keys(directory, name):
    r = subprocess.run([binary("availctl"), "keys", "new", os.path.join(directory, name)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr


class Constellation:
    def __init__(self, n_queriers, delay_ms=50, router_tcp=False, shared_registry_port=None, registry_extra=None):
        # shared_registry_port: the queriers ask one registry on the core
        # host (port there), each from its own address (budget: per_address)
        self.shared_registry_port = shared_registry_port
        self.registry_extra = registry_extra or {}
        self.hosts = Hosts()
        self.clusters = []
        self.registries = []
        self.keys = None
        try:
            self._build(n_queriers, delay_ms, router_tcp)
        except BaseException:
            self.close()
            raise

    def _build(self, n_queriers, delay_ms, router_tcp):
        h = self.hosts
        h.add("core")
        core = Cluster()
        self.clusters.append(core)
        self.keys = keys = os.path.join(core.dir, "keys")
        os.makedirs(keys)
        allow = {k: os.path.join(core.dir, "allow", k) for k in ("frontends", "queriers", "control")}
        for d in allow.values():
            os.makedirs(d)
        for name in ["core", "frontend", "stranger"] + [f"q{i}" for i in range(1, n_queriers + 1)]:
            availctl_keys(keys, name)
        shutil.copy(os.path.join(keys, "frontend"), allow["frontends"])
        for i in range(1, n_queriers + 1):
            shutil.copy(os.path.join(keys, f"q{i}"), allow["queriers"])
        registry = whois_registry(1, ["test"], queriers=n_queriers, concurrency=32, timeout_ms=3000)
        registry.update(self.registry_extra)
        core.config["endpoints"].update({"dispatcher_workers": f"tcp://0.0.0.0:{WORKERS_PORT}",
                                         "errors_events": f"tcp://0.0.0.0:{EVENTS_PORT}"})
        if router_tcp:
            core.config["endpoints"]["intake_router"] = f"tcp://0.0.0.0:{ROUTER_PORT}"
        core.config["curve"] = {"secret_key": os.path.join(keys, "core"), "allow": allow}
        core.config["dispatcher"] = {"heartbeat_ms": 300, "heartbeat_misses": 3}
        core.config["intake"] = {"resend_ms": 3000}
        core.config["registries"] = {"test": registry}
        core.write_config()
        self.core = core
        self.queriers = []
        for i in range(1, n_queriers + 1):
            h.add(f"q{i}")
            addr = h.link("core", f"q{i}", i)
            if self.shared_registry_port:
                reg_host, reg_port = addr, self.shared_registry_port
            else:
                reg = NsRegistry(h, f"q{i}", delay_ms)
                self.registries.append(reg)
                reg_host, reg_port = "127.0.0.1", reg.port
            qc = Cluster()
            self.clusters.append(qc)
            qc.config["endpoints"].update({"dispatcher_workers": f"tcp://{addr}:{WORKERS_PORT}",
                                           "errors_events": f"tcp://{addr}:{EVENTS_PORT}"})
            qc.config["curve"] = {"secret_key": os.path.join(keys, f"q{i}"),
                                  "server_key": os.path.join(keys, "core")}
            qc.config["registries"] = {"test": dict(registry, host=reg_host, port=reg_port)}
            if self.shared_registry_port:
                qc.config["querier"] = {"source_address": f"10.211.{i}.2"}
            qc.write_config()
            self.queriers.append(qc)

    def start(self):
        w = self.hosts.wrap("core")
        for kind in ("errors", "cache", "dispatcher"):
            self.core.daemon(kind, wrap=w).start()
        for i, qc in enumerate(self.queriers, 1):
            instance = "test" if i == 1 else f"test.{i}"
            qc.daemon("querier", instance, wrap=self.hosts.wrap(f"q{i}")).start()
        self.core.daemon("intake", wrap=w).start()
        wait_until(lambda: self.queriers_up() == len(self.queriers), timeout=30,
                   what="every querier host to say ready over CURVE")
        return self

    def queriers_up(self):
        reply = self.core.control("dispatcher", "status")
        return reply.get("gauges", {}).get("queriers", 0)

    def daemon(self, cluster, kind):
        return next(d for d in cluster.daemons if d.kind == kind)

    def close(self):
        for c in self.clusters:
            c.close()
        for r in self.registries:
            r.close()
        self.hosts.close()
        for c in self.clusters:
            shutil.rmtree(c.dir, ignore_errors=True)


@pytest.fixture
def across(request):
    made = []

    def make(*args, **kw):
        c = Constellation(*args, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            for cl in c.clusters:
                for d in cl.daemons:
                    sys.stderr.write(f"\n----- log of {d.ident} ({cl.dir}) -----\n{d.log()[-4000:]}\n")
        c.close()
    # nothing of ours is left behind, whatever happened
    assert not [n for n in ip("netns", "list").stdout.split() if n.endswith(TAG) and n.startswith("av")]


def load(c, total, rate, events, settle_s=90):
    """Sends `total` checks at `rate` a second through intake's ROUTER, runs
    events [(at_s, fn)] on the way, and collects every reply. Returns the
    figures: sent, in flight at the first event, lost, duplicated, longest
    delay, wrong."""
    s = c.core.socket(zmq.DEALER, c.core.endpoint("intake_router"))
    sent, got, wrong = {}, {}, []
    in_flight_at_fault = None
    events = sorted(events)
    t0 = time.monotonic()
    i = 0
    end = None
    while True:
        now = time.monotonic() - t0
        while events and events[0][0] <= now:
            if in_flight_at_fault is None:
                in_flight_at_fault = len([k for k in sent if k not in got])
            events.pop(0)[1]()
        if i < total and now >= i / rate:
            name = f"{'taken' if i % 2 else 'free'}-x{i}.test"
            rid = f"r{i}"
            sent[rid] = (time.monotonic(), name)
            s.send(msgpack.packb({"t": "check", "v": 1, "id": rid, "name": name, "deadline_ms": 60000}))
            i += 1
            continue
        if s.poll(5):
            reply = msgpack.unpackb(s.recv(), raw=False)
            rid = reply.get("id")
            got.setdefault(rid, []).append((time.monotonic(), reply))
            want = "registered" if sent[rid][1].startswith("taken") else "available"
            if reply.get("status") != want:
                wrong.append(reply)
        if i == total and not events:
            if end is None:
                end = time.monotonic()
            done = all(k in got for k in sent)
            # everything answered, then 3 s more for a stale second answer
            if (done and time.monotonic() - end > 3 and time.monotonic() - max(v[0][0] for v in got.values()) > 3) \
                    or time.monotonic() - end > settle_s:
                break
    delays = [got[k][0][0] - sent[k][0] for k in got]
    return {"sent": len(sent), "in_flight": in_flight_at_fault or 0, "lost": len([k for k in sent if k not in got]),
            "duplicated": len([k for k, v in got.items() if len(v) > 1]), "longest_delay_s": round(max(delays), 2),
            "wrong": len(wrong)}


def report(what, figures):
    line = f"{what}: " + json.dumps(figures)
    sys.stdout.write("\n" + line + "\n")
    with open(os.path.join(BUILD_DIR, "across-hosts.log"), "a") as f:
        f.write(line + "\n")


def test_a_querier_host_cut_off_for_10s_loses_and_duplicates_nothing(across):
    c = across(2, delay_ms=300).start()  # 300 ms a query: ~15 checks in flight when the link goes
    figures = load(c, total=800, rate=50,
                   events=[(3.0, lambda: c.hosts.cut(1)), (13.0, lambda: c.hosts.restore(1))])
    # answers querier host 1 still sent when its link came back: dropped by the dispatcher, never delivered
    figures["stale_answers"] = c.core.status("dispatcher")["counters"]["stale_answers"]
    report("link to querier host 1 cut for 10 s", figures)
    assert figures["lost"] == 0 and figures["duplicated"] == 0 and figures["wrong"] == 0, figures
    assert figures["in_flight"] > 0, figures  # the cut caught checks on the way
    # re-dispatched within the heartbeat window, not held until the link came back
    assert figures["longest_delay_s"] < 8, figures
    # the host came back: its querier says ready again and takes work
    wait_until(lambda: c.queriers_up() == 2, timeout=30, what="querier host 1 back after the link returned")


def test_a_querier_host_gone_for_good_leaves_its_checks_to_the_others(across):
    c = across(2).start()

    def gone():
        c.hosts.cut(1)
        c.daemon(c.queriers[0], "querier").kill()

    figures = load(c, total=400, rate=50, events=[(3.0, gone)])
    report("querier host 1 gone for good", figures)
    assert figures["lost"] == 0 and figures["duplicated"] == 0 and figures["wrong"] == 0, figures
    assert figures["longest_delay_s"] < 8, figures
    wait_until(lambda: c.queriers_up() == 1, timeout=30, what="the dispatcher to count one querier host")


def test_the_dispatcher_host_restarting_while_querier_hosts_run(across):
    c = across(2).start()
    dispatcher = c.daemon(c.core, "dispatcher")
    queriers = [c.daemon(q, "querier") for q in c.queriers]
    figures = load(c, total=400, rate=50, events=[(3.0, lambda: dispatcher.restart(hard=True))])
    report("dispatcher SIGKILLed and started again", figures)
    assert figures["lost"] == 0 and figures["duplicated"] == 0 and figures["wrong"] == 0, figures
    assert all(q.alive() and q.starts == 1 for q in queriers)  # the querier hosts never restarted
    wait_until(lambda: c.queriers_up() == 2, timeout=30, what="both querier hosts ready with the new dispatcher")


FRONTEND = textwrap.dedent("""
    import sys, msgpack, zmq, zmq.auth
    endpoint, key, server = sys.argv[1:4]
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.curve_publickey, s.curve_secretkey = zmq.auth.load_certificate(key)
    s.curve_serverkey = zmq.auth.load_certificate(server)[0]
    s.connect(endpoint)
    s.send(msgpack.packb({"t": "check", "v": 1, "id": "fe", "name": "taken-fe.test"}))
    print(msgpack.unpackb(s.recv(), raw=False)["status"] if s.poll(int(sys.argv[4])) else "no answer")
""")


def test_a_frontend_on_a_third_host_gets_in_with_its_key_and_not_with_another(across):
    c = across(1, router_tcp=True)
    c.hosts.add("fe")
    addr = c.hosts.link("core", "fe", 9)
    c.start()

    def frontend(key, wait_ms):
        r = subprocess.run([*c.hosts.wrap("fe"), "/usr/bin/python3", "-c", FRONTEND, f"tcp://{addr}:{ROUTER_PORT}",
                            os.path.join(c.keys, key + "_secret"), os.path.join(c.keys, "core"), str(wait_ms)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    assert frontend("frontend", 20000) == "registered"
    before = c.core.status("intake")["counters"]["zap_denied"]
    assert frontend("stranger", 2000) == "no answer"
    wait_until(lambda: c.core.status("intake")["counters"]["zap_denied"] > before, what="intake's zap_denied")
    # a querier's key is no frontend's either
    assert frontend("q1", 2000) == "no answer"
