"""CURVE on tcp:// endpoints: availctl keys, the refusal of a tcp://
endpoint beyond loopback without CURVE, and a constellation over tcp on
127.0.0.1 where only the keys of each endpoint's allow directory get in
(frontends, queriers, monitoring, control; the core's own key everywhere).
A refused peer is a `zap_denied` error event, with its address and key,
and a counter."""
import os
import shutil
import stat
import subprocess
import time

import msgpack
import pytest
import zmq
import zmq.auth

from harness import FakeRegistry, binary, free_port, wait_until, whois_registry


def availctl(*args, cwd=None):
    return subprocess.run([binary("availctl"), *args], capture_output=True, text=True, timeout=30, cwd=cwd)


def new_key(directory, name):
    r = availctl("keys", "new", os.path.join(directory, name))
    assert r.returncode == 0, r.stderr
    return zmq.auth.load_certificate(os.path.join(directory, name + "_secret"))


def test_keys_new_writes_a_czmq_key_pair_that_zeromq_reads_and_show_prints_it(tmp_path):
    d = str(tmp_path)
    r = availctl("keys", "new", os.path.join(d, "querier-a"))
    assert r.returncode == 0, r.stderr
    public_printed = r.stdout.strip()
    # NAME holds the public key only; NAME_secret both, readable by its owner only
    public, secret = zmq.auth.load_certificate(os.path.join(d, "querier-a"))
    assert public.decode() == public_printed and secret is None
    public2, secret2 = zmq.auth.load_certificate(os.path.join(d, "querier-a_secret"))
    assert public2 == public and secret2 and zmq.curve_public(secret2) == public
    assert stat.S_IMODE(os.stat(os.path.join(d, "querier-a_secret")).st_mode) == 0o600
    shown = availctl("keys", "show", os.path.join(d, "querier-a"))
    assert shown.returncode == 0 and f"public {public_printed}" in shown.stdout and "name querier-a" in shown.stdout
    # an existing pair is never overwritten; a file that is no certificate is said so
    again = availctl("keys", "new", os.path.join(d, "querier-a"))
    assert again.returncode == 1 and "not overwritten" in again.stderr
    assert zmq.auth.load_certificate(os.path.join(d, "querier-a"))[0] == public
    (tmp_path / "junk").write_text("not a certificate\n")
    bad = availctl("keys", "show", os.path.join(d, "junk"))
    assert bad.returncode == 1 and "not a certificate" in bad.stderr
    assert availctl("keys", "frobnicate").returncode == 2


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def config_check(path):
    return availctl("-c", path, "config", "check", path)


def test_tcp_beyond_loopback_without_curve_is_refused_with_file_line_col(tmp_path):
    d = str(tmp_path)
    base = f"runtime_dir: {d}/run\nstate_dir: {d}/state\n"
    path = write(os.path.join(d, "a.yaml"), base + "endpoints:\n  cache_puts: tcp://0.0.0.0:5999\n")
    r = config_check(path)
    assert r.returncode == 1
    assert f"{path}:4:15: 'tcp://0.0.0.0:5999' is reachable from other hosts without CURVE" in r.stdout + r.stderr
    # the daemons refuse it the same way at -n and at start (exit 78: not restarted in a loop)
    n = subprocess.run([binary("cache"), "-n", "-c", path], capture_output=True, text=True, timeout=30)
    assert n.returncode != 0 and f"{path}:4:15:" in n.stdout + n.stderr
    start = subprocess.run([binary("cache"), "-f", "-c", path], capture_output=True, text=True, timeout=30)
    assert start.returncode == 78 and f"{path}:4:15:" in start.stderr
    # a per-daemon control endpoint too
    path = write(os.path.join(d, "b.yaml"), base + "cache:\n  control: tcp://10.1.2.3:6001\n")
    r = config_check(path)
    assert r.returncode == 1 and f"{path}:4:12:" in r.stdout + r.stderr
    # loopback stays on this host, and `insecure: true` says it is meant
    assert config_check(write(os.path.join(d, "c.yaml"), base + "endpoints:\n  cache_puts: tcp://127.0.0.1:5999\n")
                        ).returncode == 0
    ok = write(os.path.join(d, "d.yaml"), base + "endpoints:\n  cache_puts: {endpoint: 'tcp://0.0.0.0:5999', "
               "insecure: true}\n")
    assert config_check(ok).returncode == 0, config_check(ok).stdout
    bad = write(os.path.join(d, "e.yaml"), base + "endpoints:\n  cache_puts: {insecure: true}\n")
    r = config_check(bad)
    assert r.returncode == 1 and "needs 'endpoint:" in r.stdout + r.stderr
    # with a key pair every tcp:// endpoint has CURVE: accepted
    new_key(d, "core")
    os.makedirs(os.path.join(d, "fe"))
    good = write(os.path.join(d, "f.yaml"), base + "endpoints:\n  cache_puts: tcp://0.0.0.0:5999\n"
                 "curve:\n  secret_key: core\n  allow: {frontends: fe}\n")
    assert config_check(good).returncode == 0, config_check(good).stdout
    # a missing key file, a public key as the secret one, an unknown kind: each at its line
    for text, why in [("curve:\n  secret_key: nothere\n", "cannot read a certificate"),
                      ("curve:\n  secret_key: core\n  allow: {frontends: nodir}\n", "nodir"),
                      ("curve:\n  secret_key: core\n  allow: {friends: fe}\n", "unknown key 'friends'")]:
        r = config_check(write(os.path.join(d, "g.yaml"), base + text))
        assert r.returncode == 1 and f"{d}/g.yaml:" in r.stdout + r.stderr and why in r.stdout + r.stderr, r.stdout
    shutil.copy(os.path.join(d, "core"), os.path.join(d, "pub"))
    r = config_check(write(os.path.join(d, "h.yaml"), base + "curve:\n  secret_key: pub\n"))
    assert r.returncode == 1 and "holds only a public key" in r.stdout + r.stderr


def curve_socket(ctx, kind, endpoint, client, server_public):
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    s.curve_publickey, s.curve_secretkey = client
    s.curve_serverkey = server_public
    s.connect(endpoint)
    return s


def ask(s, name, rid):
    s.send(msgpack.packb({"t": "check", "v": 1, "id": rid, "name": name}))
    if not s.poll(15000):
        return None
    return msgpack.unpackb(s.recv(), raw=False)


@pytest.fixture
def curve_cluster(make_cluster):
    """Every endpoint on tcp://127.0.0.1 with CURVE; keys: the core's, a
    frontend's and an operator's (in allow/frontends and allow/control)."""
    registry = FakeRegistry()
    c = make_cluster()
    keys = os.path.join(c.dir, "keys")
    os.makedirs(keys)
    allow = {k: os.path.join(c.dir, "allow", k) for k in ("frontends", "queriers", "monitoring", "control")}
    for p in allow.values():
        os.makedirs(p)
    core = new_key(keys, "core")
    frontend = new_key(keys, "frontend")
    operator = new_key(keys, "operator")
    stranger = new_key(keys, "stranger")
    shutil.copy(os.path.join(keys, "frontend"), allow["frontends"])
    shutil.copy(os.path.join(keys, "operator"), allow["control"])
    ports = {k: free_port() for k in ("intake_router", "intake_pull", "intake_results", "dispatcher",
                                      "dispatcher_workers", "cache_puts", "errors_events", "errors_publish",
                                      "cache_control")}
    endpoints = {k: f"tcp://127.0.0.1:{p}" for k, p in ports.items() if k != "cache_control"}
    c.config["endpoints"].update(endpoints)
    c.config["cache"] = {"control": f"tcp://127.0.0.1:{ports['cache_control']}"}
    c.config["dispatcher"] = {"heartbeat_ms": 200}
    c.config["curve"] = {"secret_key": os.path.join(keys, "core"), "allow": allow}
    c.config["registries"] = {"test": whois_registry(registry.port, ["test"])}
    c.write_config()
    c.start_all()
    c.keys = dict(core=core, frontend=frontend, operator=operator, stranger=stranger, dir=keys)
    c.allow = allow
    c.tcp = endpoints
    c.cache_control = c.config["cache"]["control"]
    try:
        yield c
    finally:
        registry.close()


def counters(c, ident):
    return c.status(ident)["counters"]


def denied_events(c):
    reply = c.control("errors", "recent", code="zap_denied")
    assert reply["ok"], reply
    return [e for e in reply["events"] if e["code"] == "zap_denied"]


def test_only_allowed_keys_reach_intake_and_a_refusal_is_an_event_with_address_and_key(curve_cluster):
    c = curve_cluster
    server = c.keys["core"][0]
    ok = curve_socket(c.ctx, zmq.DEALER, c.tcp["intake_router"], c.keys["frontend"], server)
    c.sockets.append(ok)
    answer = ask(ok, "taken-curve.test", "fe-1")
    assert answer and answer["status"] == "registered", answer  # through intake, dispatcher, querier over CURVE
    assert ask(ok, "free-curve.test", "fe-2")["status"] == "available"
    before = counters(c, "intake")["zap_denied"]
    # a key that no allow directory holds: never an answer, counted, and an event naming the key
    bad = curve_socket(c.ctx, zmq.DEALER, c.tcp["intake_router"], c.keys["stranger"], server)
    c.sockets.append(bad)
    bad.send(msgpack.packb({"t": "check", "v": 1, "id": "x", "name": "taken-curve.test"}))
    assert not bad.poll(1500)
    wait_until(lambda: counters(c, "intake")["zap_denied"] > before, what="intake's zap_denied counter")
    stranger_txt = c.keys["stranger"][0].decode()
    ev = wait_until(lambda: [e for e in denied_events(c) if stranger_txt in e["text"]], timeout=15,
                    what="a zap_denied event with the stranger's key")
    assert "127.0.0.1" in ev[0]["text"] and "frontends" in ev[0]["text"]
    # a peer without CURVE at all gets nothing either
    plain = c.socket(zmq.DEALER, c.tcp["intake_router"])
    plain.send(msgpack.packb({"t": "check", "v": 1, "id": "y", "name": "taken-curve.test"}))
    assert not plain.poll(1500)
    # a frontend's key is not a querier's: the dispatcher's workers endpoint refuses it
    before = counters(c, "dispatcher")["zap_denied"]
    worker = curve_socket(c.ctx, zmq.DEALER, c.tcp["dispatcher_workers"], c.keys["frontend"], server)
    c.sockets.append(worker)
    worker.send(msgpack.packb({"t": "ready", "v": 1, "registry": "test", "credit": 10, "pid": 1}))
    wait_until(lambda: counters(c, "dispatcher")["zap_denied"] > before, what="the dispatcher's zap_denied")
    # and a new key dropped into the allow directory is let in with no restart
    shutil.copy(os.path.join(c.keys["dir"], "stranger"), c.allow["frontends"])
    later = curve_socket(c.ctx, zmq.DEALER, c.tcp["intake_router"], c.keys["stranger"], server)
    c.sockets.append(later)
    answer = ask(later, "taken-curve2.test", "late")
    assert answer and answer["status"] == "registered"


def test_a_forged_put_or_control_request_without_the_right_key_changes_nothing(curve_cluster):
    c = curve_cluster
    server = c.keys["core"][0]
    fe = curve_socket(c.ctx, zmq.DEALER, c.tcp["intake_router"], c.keys["frontend"], server)
    c.sockets.append(fe)
    assert ask(fe, "taken-forge.test", "f1")["status"] == "registered"

    def cache_ctl(key, cmd, **args):
        s = curve_socket(c.ctx, zmq.DEALER, c.cache_control, key, server)
        try:
            s.send(msgpack.packb(dict({"t": "ctl", "v": 1, "cmd": cmd}, **args)))
            return msgpack.unpackb(s.recv(), raw=False) if s.poll(2000) else None
        finally:
            s.close(0)

    # the operator's key (allow/control) reaches the cache's control endpoint across "hosts"
    got = wait_until(lambda: cache_ctl(c.keys["operator"], "get", name="taken-forge.test"), timeout=15,
                     what="the cache's control endpoint over CURVE")
    assert got["ok"] and got["found"], got
    # forged puts, with a frontend's key and with none: the cache never takes them
    for key in (c.keys["frontend"], c.keys["stranger"]):
        s = curve_socket(c.ctx, zmq.PUSH, c.tcp["cache_puts"], key, server)
        c.sockets.append(s)
        s.send(msgpack.packb({"t": "put", "v": 1, "name": "taken-forge.test", "status": "available",
                              "registry": "test", "source": "whois", "at": int(time.time() * 1000),
                              "ttl_s": 86400}), zmq.NOBLOCK)
    # ... nor does purge, reload or stop from a frontend's key
    for cmd in ("purge", "reload", "stop"):
        assert cache_ctl(c.keys["frontend"], cmd, name="taken-forge.test", all=True) is None
    wait_until(lambda: counters_over(c, server) >= 5, what="five refusals counted by the cache")
    again = ask(fe, "taken-forge.test", "f2")
    assert again["status"] == "registered" and again["source"] == "cache", again
    # availctl, on the core with the core's key, reaches it
    r = c.availctl("status", "cache")
    assert r.returncode == 0 and "running" in r.stdout, r.stdout + r.stderr


def counters_over(c, server):
    s = curve_socket(c.ctx, zmq.DEALER, c.cache_control, c.keys["operator"], server)
    try:
        s.send(msgpack.packb({"t": "ctl", "v": 1, "cmd": "status"}))
        return msgpack.unpackb(s.recv(), raw=False)["counters"]["zap_denied"] if s.poll(2000) else 0
    finally:
        s.close(0)


def test_new_keys_in_the_file_wait_for_a_restart_and_the_running_ones_stay(curve_cluster):
    c = curve_cluster
    server = c.keys["core"][0]
    c.config["curve"]["secret_key"] = os.path.join(c.keys["dir"], "stranger")
    c.write_config()
    reply = c.control("intake", "reload")
    assert "curve.secret_key" in reply.get("needs_restart", []), reply
    # still the core's key: a frontend that knows it gets its answer
    fe = curve_socket(c.ctx, zmq.DEALER, c.tcp["intake_router"], c.keys["frontend"], server)
    c.sockets.append(fe)
    answer = ask(fe, "taken-reload.test", "r1")
    assert answer and answer["status"] == "registered", answer


def test_availctl_check_and_errors_follow_reach_curve_endpoints(curve_cluster):
    """availctl's own frontends (check to intake, errors --follow to the
    errors' PUB) speak CURVE where the config secures the endpoint: without
    it intake and availd-errors would never hear them."""
    c = curve_cluster
    r = c.availctl("--timeout", "15000", "check", "taken-ctl.test", "free-ctl.test")
    assert r.returncode == 0 and "registered" in r.stdout and "available" in r.stdout, r.stdout + r.stderr
    follower = subprocess.Popen([binary("availctl"), "-c", c.config_path, "errors", "--follow", "--exit-after", "1",
                                 "--daemon", "probe"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        push = curve_socket(c.ctx, zmq.PUSH, c.tcp["errors_events"], c.keys["core"], c.keys["core"][0])
        c.sockets.append(push)
        n = 0

        def follower_exited():
            nonlocal n
            n += 1
            push.send(msgpack.packb({"t": "error", "v": 1, "daemon": "probe", "registry": "", "level": "notice",
                                     "code": "probe", "text": f"probe {n}"}), zmq.NOBLOCK)
            return follower.poll() is not None

        wait_until(follower_exited, timeout=30, interval=0.2, what="availctl errors --follow to see a pushed event")
        out, err = follower.communicate(timeout=10)
        assert follower.returncode == 0 and "probe" in out, out + err
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
