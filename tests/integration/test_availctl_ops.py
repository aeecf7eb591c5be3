"""availctl for an operator: status asks every daemon at once and ends with
a summary, says a stale socket or a permission problem at once; --version;
tools/dev run for a user who is not root (runtime and state in the user's
own directories, availctl finding the running constellation without -c),
and no socket files left behind once `availctl run` stops."""
import json
import re
import os
import pwd
import signal
import subprocess
import time
import uuid

import pytest

from harness import BUILD_DIR, SOURCE_DIR, binary, wait_until


def test_availctl_and_every_daemon_say_their_version():
    r = subprocess.run([binary("availctl"), "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("availctl ") and r.stdout.count("\n") == 1, r
    version = r.stdout.split()[1]
    assert version[0].isdigit()
    for d in ("intake", "dispatcher", "querier", "cache", "errors"):
        r = subprocess.run([binary(d), "--version"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stdout == f"availd-{d} {version}\n", r


def test_status_ends_with_a_summary_and_counts_down_daemons(cluster):
    cluster.start("errors")
    cluster.start("cache")
    r = cluster.availctl("status", check=1)
    lines = r.stdout.splitlines()
    assert lines[-1] == "2 up, 2 down", lines[-1]  # intake, dispatcher down; no querier in the config
    assert [line.split()[0] for line in lines if " down " in line] == ["intake", "dispatcher"]
    r = cluster.availctl("--json", "status", check=1)
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    assert objs[-1]["up"] == 2 and objs[-1]["down"] == 2 and objs[-1]["kinds"]["cache"] == {"up": 1, "down": 0}


def test_status_with_many_queriers_counts_per_kind(make_cluster):
    from harness import whois_registry
    c = make_cluster({"registries": {"a": whois_registry(1, ["a"]), "b": whois_registry(1, ["b"])},
                      "queriers": {"ab": {"registries": ["a", "b"], "instances": 3}}})
    c.start("errors")
    c.start("querier", "ab")
    c.start("querier", "ab.3")
    r = c.availctl("status", check=1)
    assert r.stdout.splitlines()[-1] == \
        "3 up, 4 down (intake 0/1, dispatcher 0/1, cache 0/1, errors 1/1, querier 2/3 up)", r.stdout


def test_status_says_a_stale_socket_at_once_and_asks_hung_daemons_together(cluster):
    stopped = [cluster.start(d) for d in ("errors", "cache", "dispatcher")]
    intake = cluster.start("intake")
    intake.kill()  # SIGKILL: its socket files stay
    assert os.path.exists(os.path.join(cluster.run_dir, "control-intake.sock"))
    for d in stopped:
        d.signal(signal.SIGSTOP)  # hung: the socket listens, nothing answers
    try:
        t0 = time.monotonic()
        r = cluster.availctl("--timeout", "4000", "status", check=1)
        elapsed = time.monotonic() - t0
    finally:
        for d in stopped:
            d.signal(signal.SIGCONT)
    lines = r.stdout.splitlines()
    assert any(line.startswith("intake") and "stale socket" in line for line in lines), r.stdout
    for d in ("errors", "cache", "dispatcher"):
        assert any(line.startswith(d) and "no answer" in line and "4000 ms" in line for line in lines), r.stdout
    assert lines[-1] == "0 up, 4 down"
    # asked one after another, three hung daemons take 12 s at the least
    assert elapsed < 12, elapsed


def test_status_says_permission_denied(cluster):
    cluster.start("errors")
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        binary("availctl"), "-c", cluster.config_path, "status", "errors"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "permission denied" in r.stdout, r.stdout + r.stderr


@pytest.fixture
def user():
    """A user who is not root, with a home of its own; removed afterwards."""
    name = "avt" + uuid.uuid4().hex[:8]
    home = f"/tmp/{name}"
    subprocess.run(["useradd", "-m", "-d", home, "-s", "/bin/sh", name], check=True, timeout=60)
    pw = pwd.getpwnam(name)
    try:
        yield pw
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], timeout=30)  # only this test's own user
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True, timeout=60)
        subprocess.run(["rm", "-rf", home, f"/tmp/availd-{pw.pw_uid}"], timeout=60)


def as_user(pw, *args, **kw):
    env = {"HOME": pw.pw_dir, "USER": pw.pw_name, "PATH": f"{pw.pw_dir}/.local/bin:/usr/bin:/bin",
           "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "")}
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "env", "-i",
            *[f"{k}={v}" for k, v in env.items()], *args]


def test_dev_run_for_a_user_who_is_not_root_and_no_stale_sockets_after(user):
    # the config tools/dev run gives this user: runtime and state of its own
    r = subprocess.run(as_user(user, os.path.join(SOURCE_DIR, "tools", "dev"), "run-config"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    config = r.stdout.strip()
    state = os.path.join(user.pw_dir, ".local", "state", "availd")
    runtime = f"/tmp/availd-{user.pw_uid}/run"
    assert config == os.path.join(state, "config", "availd.yaml")
    text = open(config).read()
    assert f"\nruntime_dir: {runtime}\n" in text and f"\nstate_dir: {state}\n" in text
    assert os.stat(f"/tmp/availd-{user.pw_uid}").st_uid == user.pw_uid
    # availctl on the path the README uses (~/.local/bin for a user)
    bindir = os.path.join(user.pw_dir, ".local", "bin")
    subprocess.run(as_user(user, "mkdir", "-p", bindir), check=True, timeout=30)
    subprocess.run(as_user(user, "ln", "-s", binary("availctl"), os.path.join(bindir, "availctl")), check=True,
                   timeout=30)
    log = open(os.path.join(user.pw_dir, "run.log"), "w")
    run = subprocess.Popen(as_user(user, "availctl", "-c", config, "run"), stdout=log, stderr=log,
                           env={"AVAILD_SBIN_DIR": os.path.join(BUILD_DIR, "daemons")})
    try:
        # the README's commands as written: no -c, no $AVAILD_CONFIG
        def up():
            r = subprocess.run(as_user(user, "availctl", "status"), capture_output=True, text=True, timeout=120)
            return r.returncode == 0 and r
        r = wait_until(up, timeout=300, interval=1, what="the constellation up, found without -c")
        assert r.stdout.splitlines()[-1].startswith("12 up, 0 down"), r.stdout
        # a check that needs no network: a public suffix is invalid
        r = subprocess.run(as_user(user, "availctl", "check", "co.uk"), capture_output=True, text=True,
                           timeout=120)
        assert "invalid" in r.stdout and "public_suffix" in r.stdout, r.stdout + r.stderr
        sockets = [f for f in os.listdir(runtime) if f.endswith(".sock")]
        assert len(sockets) >= 12
        for f in sockets:
            assert os.stat(os.path.join(runtime, f)).st_uid == user.pw_uid
        # one daemon killed: its sockets would stay; availctl run cleans up on stop
        pid = int(open(os.path.join(runtime, "availd-cache.lock")).read().split()[0])
        os.kill(pid, signal.SIGKILL)
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(180)
        log.close()
    left = [f for f in os.listdir(runtime) if f.endswith(".sock")]
    assert left == [], left
    assert not os.path.lexists(f"/tmp/availd-{user.pw_uid}/availd-config")


def test_check_reads_names_from_a_file_or_stdin_and_sums_up(cluster, tmp_path):
    cluster.start_all()
    names = [f"n{i}.nosuchtld" for i in range(2300)] + ["bad..name", "-dash.nosuchtld"]
    listing = tmp_path / "names.txt"
    listing.write_text("# a comment\n\n" + "\n".join(f"  {n}\t" for n in names) + "\n")
    r = cluster.availctl("check", "-f", str(listing), timeout=300)
    lines = r.stdout.splitlines()
    assert r.returncode == 1, r.stderr  # unknown and invalid answers
    assert [line.split()[0] for line in lines[:-1]] == names
    assert lines[-1] == "2302 names: 2 invalid, 2300 unknown", lines[-1]
    assert r.stderr == ""  # no progress bar when stderr is not a terminal
    with open(listing) as f:
        r = subprocess.run([binary("availctl"), "-c", cluster.config_path, "--json", "check", "-"], stdin=f,
                           capture_output=True, text=True, timeout=300)
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["query"] if "query" in o else o.get("name") for o in objs[:-1]] == names
    assert objs[-1] == {"summary": {"names": 2302, "invalid": 2, "unknown": 2300}}
    r = cluster.availctl("check", "-f", str(tmp_path / "missing.txt"), check=2)
    assert "missing.txt" in r.stderr


def test_a_broken_config_does_not_blind_status_errors_and_metrics(cluster):
    cluster.start("errors")
    cluster.start("cache")
    cluster.config["process"]["log_level"] = 99          # out of range
    cluster.config["bogus_key"] = 1                      # unknown
    cluster.config["cache"] = {"max_entries": "many"}    # not a number
    cluster.write_config()
    for args, rc in ((("status", "errors", "cache"), 0), (("errors", "--counts"), 0), (("metrics",), 0)):
        r = cluster.availctl(*args)
        assert r.returncode == rc, (args, r.stdout, r.stderr)
        assert "log_level" in r.stderr and "warning: the configuration has errors" in r.stderr, r.stderr
    assert 'availd_up{daemon="errors"} 1' in cluster.availctl("metrics").stdout.splitlines()
    assert re.search(r"^errors +running", cluster.availctl("status", "errors").stdout, re.M)
    # the commands that act on the config still refuse it
    r = cluster.availctl("config", "check")
    assert r.returncode != 0 and "log_level" in (r.stdout + r.stderr)
    r = cluster.availctl("check", "x.test")
    assert r.returncode == 2 and "warning" not in r.stderr


def test_json_output_is_clean(cluster):
    cluster.start_all()
    r = cluster.availctl("--json", "check", "a.nosuchtld", "bad..name")
    for line in r.stdout.splitlines():
        obj = json.loads(line)
        assert not {"t", "v", "ok"} & set(obj), obj
        assert obj["status"] in ("unknown", "invalid")
    r = cluster.availctl("--json", "status", check=0)
    for line in r.stdout.splitlines():
        obj = json.loads(line)
        assert not {"t", "v", "ok"} & set(obj), obj
        assert not re.search(r"\d\.\d{13,}", line), line  # no float noise


def test_config_check_reload_and_keys_speak_json_too(cluster, tmp_path):
    def objects(r):
        objs = [json.loads(line) for line in r.stdout.splitlines()]
        assert objs, r
        for obj in objs:
            assert not {"t", "v", "ok"} & set(obj), obj
        return objs

    [ok] = objects(cluster.availctl("--json", "config", "check", check=0))
    assert ok["valid"] is True and ok["config"] == cluster.config_path
    bad = tmp_path / "bad.yaml"
    bad.write_text("intake: [\n")
    [refused] = objects(cluster.availctl("--json", "config", "check", str(bad), check=1))
    assert refused["valid"] is False and str(bad) in refused["error"]
    cluster.start("errors")
    reloaded = {o["ident"]: o for o in objects(cluster.availctl("--json", "reload", check=0))}
    assert reloaded["errors"]["state"] == "reloaded"
    assert reloaded["intake"]["state"] == "not running"
    key = tmp_path / "host1"
    [made] = objects(cluster.availctl("--json", "keys", "new", str(key), check=0))
    assert made["public_file"] == str(key) and len(made["public"]) == 40
    [shown] = objects(cluster.availctl("--json", "keys", "show", f"{key}_secret", check=0))
    assert shown["public"] == made["public"] and shown["secret"] is True
