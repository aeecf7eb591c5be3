"""Starts availd's real binaries on loopback for integration tests.

A test gets a `Cluster`: a temporary directory with a config file, and
methods to start, stop, kill and restart daemons. Every daemon runs in the
foreground with NOTIFY_SOCKET pointing at a socket of ours, so "started"
means the daemon said READY=1, not that some time passed. Every wait is
bounded; nothing here talks to anything but 127.0.0.1 and ipc://.
"""
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

import msgpack
import yaml
import zmq

from ports import free_port

BUILD_DIR = os.environ.get(
    "AVAILD_BUILD_DIR",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build"))
SOURCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")

BINARIES = {
    "errors": "daemons/availd-errors",
    "intake": "daemons/availd-intake",
    "dispatcher": "daemons/availd-dispatcher",
    "querier": "daemons/availd-querier",
    "cache": "daemons/availd-cache",
    "http": "daemons/availd-http",
    "availctl": "tools/availctl/availctl",
    "test-registry": "tests/registry/availd-test-registry",
}


def binary(name):
    path = os.path.join(BUILD_DIR, BINARIES[name])
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: build first (cmake --build build)")
    return path


def wait_until(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Polls predicate until it returns a true value; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def rss_kb(pid, field="VmRSS"):
    """Resident memory of a process. RssAnon is its own memory; VmRSS also
    counts file pages (shared libraries, and LMDB maps, which are bounded
    by the database size and shared with the page cache)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Notify:
    """A NOTIFY_SOCKET of our own: collects sd_notify datagrams. A thread
    reads it all the time, as systemd does: a full socket would block the
    daemon's sd_notify."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o777)  # as systemd's: a daemon that dropped to its user still reaches it
        self.sock.settimeout(0.1)
        self.messages = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while self.running:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.messages.extend(data.decode(errors="replace").splitlines())

    def seen(self, text):
        with self.lock:
            return any(m == text or m.startswith(text) for m in self.messages)

    def wait_for(self, text, timeout=10.0):
        wait_until(lambda: self.seen(text), timeout, what=f"sd_notify {text}")

    def close(self):
        self.running = False
        self.thread.join(1)
        self.sock.close()


class Daemon:
    def __init__(self, cluster, kind, instance=None, extra_args=(), env=None, listen_fds=(), wrap=()):
        self.listen_fds = list(listen_fds)  # sockets passed as a socket unit would
        self.wrap = list(wrap)  # a command the daemon runs under: ["ip", "netns", "exec", NS]
        self.last_stop_s = None  # SIGTERM to exit, of the last stop()
        self.cluster = cluster
        self.kind = kind
        self.instance = instance
        self.ident = f"{kind}-{instance}" if instance else kind
        self.extra_args = list(extra_args)
        self.env = env or {}
        self.proc = None
        self.notify = None
        self.log_path = os.path.join(cluster.dir, f"{self.ident}.log")
        self.starts = 0

    def start(self, wait_ready=True, timeout=15.0):
        self.starts += 1
        self.cluster.notify_seq += 1
        notify_path = os.path.join(self.cluster.dir, f"notify-{self.cluster.notify_seq}")
        self.notify = Notify(notify_path)
        args = [*self.wrap, binary(self.kind), "-f", "-c", self.cluster.config_path]
        if self.instance:
            args += ["--registry", self.instance]
        args += self.extra_args
        env = dict(os.environ)
        env["NOTIFY_SOCKET"] = notify_path
        env.update(self.env)
        log = open(self.log_path, "ab")
        if self.listen_fds:
            # systemd's convention: the sockets at fd 3 on, LISTEN_FDS of
            # them, LISTEN_PID the daemon's own pid (the shell's, exec'd).
            n = len(self.listen_fds)
            originals = [s.fileno() for s in self.listen_fds]
            args = ["/bin/sh", "-c", f'LISTEN_PID=$$ LISTEN_FDS={n} exec "$0" "$@"'] + args

            def place_fds():
                for i, fd in enumerate(originals):
                    os.dup2(fd, 3 + i)
                    os.set_inheritable(3 + i, True)

            self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env, preexec_fn=place_fds,
                                         pass_fds=tuple(range(3, 3 + n)))
        else:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)
        log.close()
        if wait_ready:
            deadline = time.monotonic() + timeout
            while not self.notify.seen("READY=1"):
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.ident} exited with {self.proc.returncode} before READY:\n"
                                         + self.log())
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.ident} not ready within {timeout}s:\n" + self.log())
                time.sleep(0.01)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=15.0):
        """SIGTERM and wait; returns the exit status."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        try:
            rc = self.proc.wait(timeout)
            self.last_stop_s = time.monotonic() - t0
            return rc
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"{self.ident} did not stop within {timeout}s:\n" + self.log())

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, hard=False):
        if hard:
            self.kill()
        else:
            self.stop()
        if self.notify:
            self.notify.close()
        return self.start()


class Cluster:
    """A temporary availd installation: one config file, its directories,
    the daemons started from it, and sockets to talk to them."""

    def __init__(self, config=None, tmp=None):
        # Short paths: ipc:// socket paths must fit in 107 bytes.
        self.dir = tmp or tempfile.mkdtemp(prefix="av-", dir="/tmp")
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)  # daemons that drop to another user must reach their directories
        self.run_dir = os.path.join(self.dir, "run")
        self.state_dir = os.path.join(self.dir, "state")
        self.config_path = os.path.join(self.dir, "availd.yaml")
        self.ctx = zmq.Context.instance()
        self.daemons = []
        self.sockets = []
        self.notify_seq = 0
        self.config = self.base_config()
        if config:
            deep_update(self.config, config)
        self.write_config()

    def base_config(self):
        return {
            "runtime_dir": self.run_dir,
            "state_dir": self.state_dir,
            "endpoints": {"intake_gateway": f"tcp://127.0.0.1:{free_port()}"},
            "process": {"log_level": 3, "drain_ms": 3000},
            "registries": {},
        }

    def write_config(self, text=None):
        # Written beside and renamed over, as ops' tools do: a daemon
        # reloading meanwhile reads the old file or the new, never half.
        tmp = self.config_path + ".new"
        with open(tmp, "w") as f:
            if text is not None:
                f.write(text)
            else:
                yaml.safe_dump(self.config, f, sort_keys=False)
        os.rename(tmp, self.config_path)

    def endpoint(self, name):
        ep = self.config.get("endpoints", {}).get(name)
        defaults = {
            "intake_pull": "intake-pull.sock", "intake_router": "intake.sock",
            "intake_results": "intake-results.sock", "dispatcher": "dispatcher.sock",
            "dispatcher_workers": "dispatcher-workers.sock", "cache_puts": "cache.sock",
            "errors_events": "errors.sock", "errors_publish": "errors-pub.sock",
        }
        if ep is None:
            ep = "ipc://" + defaults[name]
        if ep.startswith("ipc://") and not ep.startswith("ipc:///"):
            ep = f"ipc://{self.run_dir}/{ep[6:]}"
        return ep

    def daemon(self, kind, instance=None, **kw):
        d = Daemon(self, kind, instance, **kw)
        self.daemons.append(d)
        return d

    def start(self, kind, instance=None, **kw):
        return self.daemon(kind, instance, **kw).start()

    def socket(self, kind, endpoint=None, bind=False):
        """A socket connected (or bound) to endpoint; None: neither yet."""
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        if endpoint and bind:
            s.bind(endpoint)
        elif endpoint:
            s.connect(endpoint)
        self.sockets.append(s)
        return s

    def control(self, ident, cmd, timeout=5.0, **args):
        """One control request; returns the decoded reply map."""
        s = self.socket(zmq.DEALER, f"ipc://{self.run_dir}/control-{ident}.sock")
        s.send(msgpack.packb(dict({"t": "ctl", "v": 1, "cmd": cmd}, **args)))
        if not s.poll(int(timeout * 1000)):
            raise AssertionError(f"{ident} did not answer {cmd} within {timeout}s")
        reply = msgpack.unpackb(s.recv(), raw=False)
        s.close()
        self.sockets.remove(s)
        return reply

    def status(self, ident):
        reply = self.control(ident, "status")
        assert reply["ok"], reply
        return reply

    def availctl(self, *args, timeout=30, check=None):
        r = subprocess.run([binary("availctl"), "-c", self.config_path, *args],
                           capture_output=True, text=True, timeout=timeout)
        if check is not None:
            assert r.returncode == check, f"availctl {args} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def querier_groups(self):
        """{group: instances} as the daemons read the config: the groups of
        `queriers:`, and every registry in none of them a group of its own
        (`queriers: N` of them)."""
        groups, named = {}, set()
        registries = self.config.get("registries", {})
        served = {}
        for name, g in (self.config.get("queriers") or {}).items():
            groups[name] = g.get("instances", 1)
            named.update(g.get("registries") or [])
            for proto in g.get("serves") or []:
                served.setdefault(proto, name)
        for name, r in registries.items():
            if name not in named and r.get("protocol") not in served:
                groups[name] = r.get("queriers", 1)
        return groups

    def start_all(self, queriers=None):
        """errors, cache, dispatcher, the querier of every querier group (or
        those named), intake: the constellation, in availctl run's order."""
        self.start("errors")
        self.start("cache")
        self.start("dispatcher")
        groups = self.querier_groups()
        for name in (queriers if queriers is not None else groups):
            self.start("querier", name)
            for n in range(2, groups.get(name, 1) + 1):
                self.start("querier", f"{name}.{n}")
        self.start("intake")
        return self

    def ask(self, names, timeout=15.0, **fields):
        """Request-reply through intake's ROUTER: one name gives an answer
        map, a list gives the list of answer maps of an `answers` reply."""
        s = self.socket(zmq.DEALER, self.endpoint("intake_router"))
        msg = {"t": "check", "v": 1, "id": fields.pop("id", "test")}
        if isinstance(names, str):
            msg["name"] = names
        else:
            msg["names"] = list(names)
        msg.update(fields)
        s.send(msgpack.packb(msg))
        if not s.poll(int(timeout * 1000)):
            raise AssertionError(f"no reply to {names!r} within {timeout}s")
        reply = msgpack.unpackb(s.recv(), raw=False)
        assert not s.poll(200), "a second reply to one request"
        s.close()
        self.sockets.remove(s)
        if reply["t"] == "answers":
            return reply["answers"]
        return reply

    def close(self):
        for s in self.sockets:
            s.close(0)
        self.sockets.clear()
        for d in reversed(self.daemons):
            if d.alive():
                try:
                    d.stop(timeout=10)
                except AssertionError:
                    pass
            if d.notify:
                d.notify.close()


class FakeRegistry:
    """The loopback fake registry (tests/registry): answers by name prefix
    (free-, taken-, reserved-, limit-, garbage-, empty-, silent-, slow-,
    huge-) or a hash rule, and counts the queries it got."""

    def __init__(self, delay_ms=0, fixtures=None):
        args = [binary("test-registry"), "--delay-ms", str(delay_ms)]
        if fixtures:
            args += ["--fixtures", fixtures]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("PORT "), f"test registry said {line!r}"
        self.port = int(line.split()[1])

    def query(self, line, timeout=5.0):
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(line.encode() + b"\r\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    return b"".join(chunks)
                chunks.append(data)

    def stats(self):
        import json
        return json.loads(self.query("!stats"))

    def reset(self):
        assert self.query("!reset").startswith(b"OK")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def truth(name):
    """What the test registry answers for a name without a prefix rule:
    FNV-1a 32-bit of the lower-cased name, even = available."""
    h = 0x811C9DC5
    for b in name.lower().encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return "available" if h % 2 == 0 else "registered"


def whois_registry(port, tlds, **extra):
    """A registry entry for the test registry, with patterns for its replies."""
    entry = {
        "tlds": tlds,
        "protocol": "whois",
        "host": "127.0.0.1",
        "port": port,
        "query": "%s\r\n",
        "patterns": {
            "available": ["^No match for"],
            "registered": ["Domain Name:"],
            "reserved": ["reserved by registry policy"],
            "rate_limited": ["rate limit exceeded"],
        },
        "timeout_ms": 2000,
        "backoff_s": 1,
    }
    entry.update(extra)
    return entry


def deep_update(base, extra):
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = v
    return base
