"""Process control without systemd, from the old daemon's config: user and
group, pid_file, daemonize, daemon_name, log targets and log_level."""
import os
import signal
import subprocess
import time

from harness import Daemon, binary, wait_until


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split()[1:]
    return None


def test_a_daemon_started_as_root_drops_to_its_user_and_group(make_cluster):
    assert os.geteuid() == 0, "this test starts a daemon as root: run the suite as root (tools/dev test does)"
    c = make_cluster({"process": {"user": "nobody", "group": "nogroup"}})
    errors = c.start("errors")
    assert proc_status(errors.pid, "Uid") == ["65534"] * 4
    assert proc_status(errors.pid, "Gid") == ["65534"] * 4
    assert proc_status(errors.pid, "Groups") in ([], ["65534"])
    # it still works as that user, and its socket is usable by that user
    assert c.status("errors")["pid"] == errors.pid
    st = os.stat(os.path.join(c.run_dir, "errors.sock"))
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    st = os.stat(os.path.join(c.state_dir, "errors", "data.mdb"))
    assert st.st_uid == 65534
    assert errors.stop() == 0
    # as that user it still removes its socket files at the stop
    assert [f for f in os.listdir(c.run_dir) if f.endswith(".sock")] == []


def test_a_stopped_daemon_leaves_no_socket_files_and_a_killed_one_is_replaced(make_cluster):
    """libzmq leaves a bound ipc:// file behind; a daemon removes its own
    at a graceful stop, so that only a daemon that died leaves a stale one
    (which availctl status reports as such) and the next start binds over
    it."""
    c = make_cluster()
    sockets = lambda: sorted(f for f in os.listdir(c.run_dir) if f.endswith(".sock"))
    daemons = [c.start(kind) for kind in ("errors", "cache", "dispatcher", "intake")]
    bound = sockets()
    assert "control-intake.sock" in bound and "intake.sock" in bound and "dispatcher-workers.sock" in bound, bound
    for d in reversed(daemons):
        assert d.stop() == 0
    assert sockets() == []
    # SIGKILL: the files stay; the next instance binds over them and serves
    errors = c.start("errors")
    errors.kill()
    assert sockets() == ["control-errors.sock", "errors-pub.sock", "errors.sock"]
    errors = c.start("errors")
    assert c.status("errors")["pid"] == errors.pid
    assert errors.stop() == 0
    assert sockets() == []


def test_daemonize_detaches_and_the_pid_file_names_the_daemon(make_cluster):
    c = make_cluster({"errors": {"daemonize": True, "pid_file": "errors.pid", "log": [f"/tmp/{os.getpid()}-errors.log"]}})
    log = f"/tmp/{os.getpid()}-errors.log"
    try:
        t0 = time.monotonic()
        r = subprocess.run([binary("errors"), "-c", c.config_path], capture_output=True, timeout=20)
        # the launcher waits until the daemon is up, then exits 0
        assert r.returncode == 0, r.stderr
        pid_file = os.path.join(c.run_dir, "errors.pid")
        pid = int(open(pid_file).read())
        assert c.status("errors")["pid"] == pid
        assert time.monotonic() - t0 < 15
        # detached: not a session leader, no terminal, parent is not us
        assert os.getsid(pid) != pid
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        assert stat[4] == "0"  # tty_nr
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), what="daemon gone")
        assert not os.path.exists(pid_file)
        assert "stopped" in open(log).read()
    finally:
        if os.path.exists(log):
            os.unlink(log)


def test_a_bad_configuration_makes_the_daemonize_launcher_fail(make_cluster):
    c = make_cluster({"errors": {"daemonize": True}})
    # a pid file in a directory that cannot be created: start fails after the fork
    c.config["errors"]["pid_file"] = "/proc/nonexistent/errors.pid"
    c.write_config()
    r = subprocess.run([binary("errors"), "-c", c.config_path], capture_output=True, timeout=20)
    assert r.returncode != 0


def test_daemon_name_sets_the_process_title_and_the_log_ident(make_cluster):
    c = make_cluster({"errors": {"daemon_name": "whoisd-errors"}})
    errors = c.start("errors")
    assert open(f"/proc/{errors.pid}/comm").read().strip() == "whoisd-errors"
    assert "whoisd-errors[" in errors.log()


def test_log_level_and_a_file_target(make_cluster, tmp_path):
    log = tmp_path / "errors.log"
    c = make_cluster({"errors": {"log": [str(log)], "log_level": 4}})
    errors = c.start("errors")
    c.status("errors")
    errors.signal(signal.SIGHUP)  # a reload is logged at notice
    wait_until(lambda: "configuration reloaded" in log.read_text(), what="reload logged")
    assert errors.log() == ""  # stderr was not a target
    errors.stop()
    text = log.read_text()
    assert "notice: availd-errors" in text and "stopped" in text
    # level 0: only errors
    log.write_text("")
    c.config["errors"]["log_level"] = 0
    c.write_config()
    quiet = Daemon(c, "errors")
    quiet.start()
    quiet.stop()
    assert log.read_text() == ""


class FakeLogSocket:
    """A datagram socket at a system logging path (/dev/log for syslog,
    journald's socket), made only where none exists, removed after."""

    def __init__(self, path):
        import socket
        assert not os.path.exists(path), f"{path} exists: a real logger runs here; test on a machine without one"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.received = []

    def read(self):
        import socket
        while True:
            try:
                self.received.append(self.sock.recv(65536))
            except socket.timeout:
                return b"\n".join(self.received)

    def close(self):
        self.sock.close()
        os.unlink(self.path)


def test_log_to_syslog_and_to_journald(make_cluster):
    syslog = FakeLogSocket("/dev/log")
    journal = FakeLogSocket("/run/systemd/journal/socket")
    try:
        c = make_cluster({"errors": {"log": ["syslog", "journald"], "log_level": 3,
                                     "daemon_name": "whoisd-errors"}})
        errors = c.start("errors")
        errors.stop()
        got_syslog = syslog.read()
        got_journal = journal.read()
        # syslog: <priority>... ident[pid]: message, facility daemon (3 << 3), notice = 5
        assert b"<29>" in got_syslog and b"whoisd-errors[" in got_syslog and b"stopped" in got_syslog
        # journald's native protocol: KEY=value lines
        assert b"MESSAGE=stopped" in got_journal and b"PRIORITY=5" in got_journal
        assert b"SYSLOG_IDENTIFIER=whoisd-errors" in got_journal
        assert errors.log() == ""  # stderr was not a target
    finally:
        syslog.close()
        journal.close()
