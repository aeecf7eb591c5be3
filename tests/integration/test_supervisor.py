"""One supervisor and one instance of each daemon per runtime_dir: a daemon
holds RUNTIME_DIR/availd-IDENT.lock for its life and a second instance
refuses (exit 73, naming the holder); availctl run refuses beside running
daemons or another availctl run, its daemons die with it (even when it is
SIGKILLed) unless --detach leaves them up, and availctl stop stops them
wherever they came from. Also: an unprivileged availctl is told
"permission denied" instead of waiting for an answer that cannot come.

Every process a test starts is killed in teardown, also when it fails:
availctl run processes, and any process whose command line names the
test's configuration."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from harness import FakeRegistry, Notify, binary, truth, wait_until
from test_restarts import Frontend, cluster_for

AV_EXIT_RUNNING = 73
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "UndefinedBehaviorSanitizer")
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def gone(pid):
    """The process has exited (a zombie nobody reaps counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def processes_naming(text):
    """Live processes whose command line contains text."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and not gone(int(entry)):
            pids.append(int(entry))
    return pids


def idents(c):
    return ["errors", "cache", "dispatcher"] + [f"querier-{r}" for r in c.config["registries"]] + ["intake"]


def daemon_pids(c):
    return {ident: c.status(ident)["pid"] for ident in idents(c)}


class Supervisors:
    """availctl run processes (and other helpers) of a test, each with its
    log, and the configurations whose processes teardown kills."""

    def __init__(self):
        self.procs = []
        self.logs = []
        self.configs = []

    def run(self, c, *args):
        log_path = os.path.join(c.dir, f"run-{len(self.logs) + 1}.log")
        self.logs.append(log_path)
        if c.config_path not in self.configs:
            self.configs.append(c.config_path)
        with open(log_path, "w") as log:
            # a file, not a pipe: daemons inherit it, and a pipe nobody reads blocks them
            p = subprocess.Popen([binary("availctl"), "-c", c.config_path, "run", *args], stdout=log,
                                 stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        p.log_path = log_path
        self.procs.append(p)
        return p

    def add(self, proc, config_path=None):
        self.procs.append(proc)
        if config_path and config_path not in self.configs:
            self.configs.append(config_path)
        return proc

    def teardown(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        for config in self.configs:
            for pid in processes_naming(config):
                os.kill(pid, signal.SIGTERM)
            try:
                wait_until(lambda: not processes_naming(config), timeout=20, what="the test's processes gone")
            except AssertionError:
                for pid in processes_naming(config):
                    os.kill(pid, signal.SIGKILL)
                wait_until(lambda: not processes_naming(config), timeout=10, what="killed processes gone")


@pytest.fixture
def supervisors(request, make_cluster):
    # Depends on make_cluster, so its teardown comes first: nothing of the
    # test runs when the clusters are closed and their logs read.
    s = Supervisors()
    yield s
    s.teardown()
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    reports = []
    for path in s.logs:
        text = open(path, errors="replace").read() if os.path.exists(path) else ""
        if any(m in text for m in SANITIZER_MARKERS):
            reports.append(path)
        if failed or any(m in text for m in SANITIZER_MARKERS):
            sys.stderr.write(f"\n----- {path} -----\n{text[-6000:]}\n")
    if reports:
        pytest.fail(f"sanitizer reports in {', '.join(reports)}")


def wait_all_up(c, timeout=60):
    wait_until(lambda: c.availctl("--timeout", "1000", "status").returncode == 0, timeout=timeout, interval=0.2,
               what="every daemon up")


def test_a_killed_availctl_run_takes_its_daemons_along_and_the_next_one_serves(make_cluster, supervisors):
    registry = FakeRegistry(delay_ms=50)
    try:
        c = cluster_for(make_cluster, registry)
        run = supervisors.run(c)
        wait_all_up(c)
        pids = daemon_pids(c)
        for ident, pid in pids.items():
            assert parent_of(pid) == run.pid, ident
            with open(os.path.join(c.run_dir, f"availd-{ident}.lock")) as f:
                assert int(f.read()) == pid, ident  # the lock file names its holder
        # Under load: checks flow through intake when availctl run is killed.
        fe = Frontend(c)
        names = {f"k{i}": f"killed{i}.test" for i in range(300)}
        for n, (rid, name) in enumerate(names.items()):
            fe.send(rid, name)
            if n == 150:
                wait_until(lambda: len(fe.collect(20, timeout=0.1)) >= 20, timeout=30, what="answers flowing")
                run.kill()
                run.wait(10)
            time.sleep(0.003)
        # Its daemons got SIGTERM from the kernel: they drain and go.
        wait_until(lambda: all(gone(p) for p in pids.values()), timeout=60, what="the orphaned daemons gone")
        assert processes_naming(c.config_path) == []
        log = open(run.log_path).read()
        for ident in pids:
            assert f"availd-{ident}[{pids[ident]}]: notice: SIGTERM: stopping" in log, ident
        # A second availctl run starts cleanly: no duplicate, no refusal.
        run2 = supervisors.run(c)
        wait_all_up(c)
        pids2 = daemon_pids(c)
        for ident, pid in pids2.items():
            assert pid not in pids.values() and parent_of(pid) == run2.pid, ident
        assert sorted(processes_naming(c.config_path)) == sorted([run2.pid] + list(pids2.values()))
        # ...and serves: the journaled checks of before the kill, and new ones.
        answers = fe.collect(len(names), timeout=120, retry_after=15)
        assert sorted(answers) == sorted(names)
        bad = {k: v for k, v in answers.items() if any(a["status"] != truth(names[k]) for a in v)}
        assert not bad, list(bad.items())[:3]
        assert c.ask("afterwards.test")["status"] == truth("afterwards.test")
        log2 = open(run2.log_path).read()
        for text in ("already in use", "already running", "not restarting", "restarting"):
            assert text not in log2, log2[-3000:]
        run2.terminate()
        assert run2.wait(60) == 0
        assert all(gone(p) for p in pids2.values())
    finally:
        registry.close()


def test_a_second_instance_of_a_daemon_refuses_naming_the_holder(make_cluster, supervisors):
    registry = FakeRegistry()
    try:
        c = cluster_for(make_cluster, registry).start_all()
        supervisors.configs.append(c.config_path)
        for d in list(c.daemons):
            args = [binary(d.kind), "-f", "-c", c.config_path]
            if d.instance:
                args += ["--registry", d.instance]
            t0 = time.monotonic()
            r = subprocess.run(args, capture_output=True, text=True, timeout=30)
            lock = os.path.join(c.run_dir, f"availd-{d.ident}.lock")
            assert r.returncode == AV_EXIT_RUNNING, (d.ident, r.returncode, r.stderr)
            assert f"availd-{d.ident} is already running with runtime_dir {c.run_dir}: pid {d.pid} holds {lock}" \
                in r.stderr, r.stderr
            assert f"availctl stop {d.ident}, or kill {d.pid}" in r.stderr
            # refused before binding anything: no fight over the gateway's port or the ipc files
            assert "already in use" not in r.stderr and "started" not in r.stderr
            assert time.monotonic() - t0 < 20
        # the first instances were not disturbed
        for d in c.daemons:
            assert d.alive() and c.status(d.ident)["pid"] == d.pid
        assert c.ask("still.test")["status"] == truth("still.test")
        for d in c.daemons:
            assert "already in use" not in d.log()
    finally:
        registry.close()


def test_availctl_run_refuses_beside_detached_daemons_until_availctl_stop_stops_them(make_cluster, supervisors):
    c = make_cluster()
    run = supervisors.run(c, "--detach")
    assert run.wait(60) == 0, open(run.log_path).read()
    assert "detached: availctl stop stops them" in open(run.log_path).read()
    pids = daemon_pids(c)
    assert all(not gone(p) for p in pids.values())
    # a second availctl run names them and how to stop them, and starts nothing
    r = c.availctl("run", timeout=30, check=1)
    for ident, pid in pids.items():
        assert re.search(rf"^  {ident} +pid {pid}$", r.stderr, re.M), r.stderr
    assert f"stop them first: availctl -c {c.config_path} stop (or: kill " in r.stderr
    assert "notice:" not in r.stderr  # no daemon started
    # a daemon started directly refuses too
    d = c.daemon("dispatcher")
    d.start(wait_ready=False)
    assert d.proc.wait(30) == AV_EXIT_RUNNING
    assert f"pid {pids['dispatcher']} holds" in d.log()
    assert sorted(processes_naming(c.config_path)) == sorted(pids.values())
    # availctl stop asks each on its control endpoint, intake first
    r = c.availctl("stop", timeout=120, check=0)
    lines = [line.split()[0] for line in r.stdout.splitlines()]
    assert lines.index("intake") < lines.index("dispatcher") < lines.index("cache") < lines.index("errors")
    for ident, pid in pids.items():
        assert re.search(rf"^{ident} +stopped \(pid {pid}\)$", r.stdout, re.M), r.stdout
        assert gone(pid)
    assert processes_naming(c.config_path) == []
    r = c.availctl("stop", timeout=30, check=0)
    assert r.stdout.count("not running") == 4
    # and the next availctl run starts
    run = supervisors.run(c)
    wait_all_up(c)
    run.terminate()
    assert run.wait(60) == 0


def test_availctl_stop_stops_a_live_availctl_run_and_a_second_run_is_refused(make_cluster, supervisors):
    c = make_cluster()
    run = supervisors.run(c)
    wait_all_up(c)
    pids = daemon_pids(c)
    r = c.availctl("run", timeout=30, check=1)
    assert f"another availctl run (pid {run.pid}) supervises runtime_dir {c.run_dir}" in r.stderr
    assert [p for p in processes_naming(c.config_path) if p not in pids.values()] == [run.pid]
    # one daemon stopped under a live supervisor would be started again
    r = c.availctl("stop", "intake", timeout=30, check=1)
    assert f"availctl run (pid {run.pid}) supervises them" in r.stderr
    r = c.availctl("stop", timeout=120, check=0)
    assert "availctl run             stopped, and its daemons with it" in r.stdout
    assert run.wait(10) == 0
    assert all(gone(p) for p in pids.values())
    assert processes_naming(c.config_path) == []


def test_the_parent_death_signal_survives_the_drop_to_the_daemons_user(make_cluster, supervisors):
    # availctl run as root, daemons configured with a user: the kernel clears
    # the parent-death signal when the uid changes; the skeleton sets it again.
    assert os.geteuid() == 0, "this test starts a daemon as root: run the suite as root (tools/dev test does)"
    c = make_cluster({"process": {"user": "nobody", "group": "nogroup"}})
    notify = Notify(os.path.join(c.dir, "notify-pdeath"))
    try:
        log = open(os.path.join(c.dir, "pdeath.log"), "w")
        parent = supervisors.add(subprocess.Popen(
            ["/bin/sh", "-c", 'setpriv --pdeathsig TERM -- "$@" & wait', "sh", binary("errors"), "-f", "-c",
             c.config_path], stdout=log, stderr=log, env=dict(os.environ, NOTIFY_SOCKET=notify.path)),
            c.config_path)
        log.close()
        notify.wait_for("READY=1", timeout=30)
        pid = c.status("errors")["pid"]
        assert parent_of(pid) == parent.pid
        with open(f"/proc/{pid}/status") as f:
            assert re.search(r"^Uid:\s+65534\s", f.read(), re.M)
        parent.kill()
        parent.wait(10)
        wait_until(lambda: gone(pid), timeout=30, what="the daemon gone with its parent")
        assert "SIGTERM: stopping" in open(os.path.join(c.dir, "pdeath.log")).read()
    finally:
        notify.close()


def test_an_unprivileged_availctl_is_told_permission_denied(make_cluster, supervisors):
    assert os.geteuid() == 0, "this test runs availctl as nobody: run the suite as root (tools/dev test does)"
    c = make_cluster()
    errors = c.start("errors")
    c.start("cache")
    supervisors.configs.append(c.config_path)
    ctl = NOBODY + [binary("availctl"), "-c", c.config_path, "--timeout", "30000"]

    def as_nobody(*args):
        t0 = time.monotonic()
        r = subprocess.run(ctl + list(args), capture_output=True, text=True, timeout=60)
        # said at once, not after waiting out the timeout (30 s)
        assert time.monotonic() - t0 < 20, (args, r.stdout, r.stderr)
        return r

    # the runtime directory is not nobody's to enter
    assert os.stat(c.run_dir).st_mode & 0o005 == 0
    r = as_nobody("status")
    assert r.returncode == 1
    for ident in ("errors", "cache"):
        assert f"permission denied on {c.run_dir}/control-{ident}.sock" in r.stdout, r.stdout
    assert "no answer" not in r.stdout
    r = as_nobody("reload")
    assert f"errors                   NOT reloaded: permission denied on {c.run_dir}/control-errors.sock" \
        in r.stdout, r.stdout
    r = as_nobody("stop", "errors")
    assert r.returncode == 1 and "cannot tell whether it runs" in r.stdout and "Permission denied" in r.stdout
    # the directory open, but the socket not writable by nobody
    os.chmod(c.run_dir, 0o755)
    try:
        assert os.stat(os.path.join(c.run_dir, "control-errors.sock")).st_mode & 0o002 == 0
        r = as_nobody("status", "errors")
        assert r.returncode == 1
        assert f"permission denied on {c.run_dir}/control-errors.sock" in r.stdout, r.stdout
        r = as_nobody("stop", "errors")
        assert r.returncode == 1
        assert f"NOT stopped: permission denied on {c.run_dir}/control-errors.sock; kill {errors.pid}" in r.stdout
    finally:
        os.chmod(c.run_dir, 0o750)
    assert errors.alive() and c.status("errors")["pid"] == errors.pid
    # root is let in: nothing else was wrong
    c.availctl("status", "errors", "cache", check=0)
