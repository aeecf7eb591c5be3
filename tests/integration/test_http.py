"""availd-http end to end: the real constellation with the loopback fake
registry, asked over HTTP on 127.0.0.1."""
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from harness import SOURCE_DIR, FakeRegistry, binary, free_port, wait_until, whois_registry

WWW = os.path.join(SOURCE_DIR, "daemons", "http", "www")


@pytest.fixture
def registry():
    reg = FakeRegistry()
    yield reg
    reg.close()


def http_cluster(make_cluster, registry, start_intake=True, **http):
    port = free_port()
    config = {
        "dispatcher": {"heartbeat_ms": 100, "heartbeat_misses": 3},
        # slow-* names take the fake registry 2 s: its timeout well past that
        # (at 2 s, the default here, a CI run timed one out)
        "registries": {"test": whois_registry(registry.port, ["test", "de"], timeout_ms=10000)},
        "http": dict({"listen": f"tcp://127.0.0.1:{port}", "www": WWW}, **http),
    }
    c = make_cluster(config)
    if start_intake:
        c.start_all()
    c.http_port = port
    c.start("http")
    return c


def request(c, method, path, body=None, headers=None, timeout=20):
    conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=timeout)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r, data


def get_json(c, path, **kw):
    r, data = request(c, "GET", path, **kw)
    return r.status, json.loads(data), r


def post_json(c, path, doc, headers=None):
    body = doc if isinstance(doc, (bytes, str)) else json.dumps(doc)
    r, data = request(c, "POST", path, body=body, headers=dict({"Content-Type": "application/json"}, **(headers or {})))
    return r.status, json.loads(data), r


def test_status_answers_in_domainr_shape_then_from_the_cache(make_cluster, registry):
    c = http_cluster(make_cluster, registry)
    status, doc, r = get_json(c, "/v1/status?domain=free-a.test,taken-b.test,reserved-c.test")
    assert status == 200 and r.getheader("Content-Type") == "application/json"
    got = {a["domain"]: a for a in doc["status"]}
    assert [a["domain"] for a in doc["status"]] == ["free-a.test", "taken-b.test", "reserved-c.test"]
    a = got["free-a.test"]
    assert (a["status"], a["summary"], a["availability"], a["zone"]) == ("undelegated inactive", "inactive",
                                                                          "available", "test")
    assert a["registry"] == "test" and a["source"] == "whois" and a["at"] > 0 and a["name"] == "free-a.test"
    assert (got["taken-b.test"]["summary"], got["taken-b.test"]["availability"]) == ("active", "registered")
    assert got["reserved-c.test"]["summary"] == "reserved"
    asked = registry.stats()["total"]
    # Once availd-cache has stored it, availd-http reads it straight from LMDB.
    wait_until(lambda: get_json(c, "/v1/status?domain=free-a.test")[1]["status"][0]["source"] == "cache",
               what="a cached answer")
    assert registry.stats()["total"] == asked, "a cached name went to the registry"
    assert c.status("http")["counters"]["cache_hits"] >= 1
    # fresh=1 asks the registry again.
    status, doc, _ = get_json(c, "/v1/status?domain=free-a.test&fresh=1")
    assert doc["status"][0]["source"] == "whois" and registry.stats()["total"] == asked + 1


def test_check_answers_a_batch_with_reasons(make_cluster, registry):
    c = http_cluster(make_cluster, registry)
    names = ["free-x.test", "garbage-y.test", "bad_name!.test", "example.nosuchtld", "bücher.de"]
    status, doc, _ = post_json(c, "/v1/check", {"names": names, "fresh": False, "deadline_ms": 5000})
    assert status == 200
    answers = doc["status"]
    assert [a["domain"] for a in answers] == names
    assert answers[0]["availability"] == "available"
    assert (answers[1]["availability"], answers[1]["reason"]) == ("unknown", "unparseable")
    assert (answers[2]["availability"], answers[2]["reason"]) == ("invalid", "bad_character")
    assert (answers[3]["availability"], answers[3]["reason"]) == ("unknown", "unsupported_tld")
    assert answers[4]["name"] == "xn--bcher-kva.de" and answers[4]["zone"] == "de"
    # 1,000 names in one request are fine; 1,001 are 413.
    status, doc, _ = post_json(c, "/v1/check", {"names": [f"n{i}.test" for i in range(1000)]})
    assert status == 200 and len(doc["status"]) == 1000
    status, doc, _ = post_json(c, "/v1/check", {"names": [f"n{i}.test" for i in range(1001)]})
    assert status == 413 and "at most 1000" in doc["error"]["message"]


def read_events(resp):
    """Server-Sent Events as (event, data, seconds since start) until `done`."""
    events, event, start = [], None, time.monotonic()
    while True:
        line = resp.fp.readline()
        if not line:
            return events
        line = line.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            events.append((event, json.loads(line[6:]), time.monotonic() - start))
            if event == "done":
                return events


def test_stream_sends_cached_answers_first_then_each_as_it_is_final(make_cluster, registry):
    c = http_cluster(make_cluster, registry)
    assert get_json(c, "/v1/status?domain=taken-s.test")[0] == 200
    wait_until(lambda: get_json(c, "/v1/status?domain=taken-s.test")[1]["status"][0]["source"] == "cache",
               what="a cached answer")
    conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=30)
    conn.request("GET", "/v1/stream?domain=slow-s.test,taken-s.test,free-s.test")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
    events = read_events(resp)
    conn.close()
    kinds = [e[0] for e in events]
    assert kinds == ["answer", "answer", "answer", "done"], events
    first = events[0][1]
    assert (first["domain"], first["source"], first["idx"]) == ("taken-s.test", "cache", 1)
    by_name = {e[1]["domain"]: e for e in events[:3]}
    assert by_name["slow-s.test"][1]["availability"] == "available"
    # The slow registry answer came last, well after the cached one.
    assert events[2][1]["domain"] == "slow-s.test"
    assert by_name["slow-s.test"][2] > by_name["taken-s.test"][2]


def test_stream_to_an_http_1_0_client_is_whole_without_chunks(make_cluster, registry):
    """HTTP/1.0 has no chunked encoding: the stream is read through the
    response's own small buffer (a few hundred bytes a call, each event
    longer than that) and ends when the connection closes."""
    c = http_cluster(make_cluster, registry)
    long_label = "x" * 55  # an event of some 300 bytes: each one takes MHD more than one read
    names = [f"free-{long_label}{i}.test" for i in range(5)] + [f"slow-{long_label}.test", "taken-h.test"]
    with socket.create_connection(("127.0.0.1", c.http_port), timeout=30) as s:
        s.sendall(f"GET /v1/stream?domain={','.join(names)} HTTP/1.0\r\nHost: t\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].endswith(b"200 OK"), head
    assert b"chunked" not in head.lower(), head
    events = [block.split(b"\n") for block in body.split(b"\n\n") if block]
    kinds = [e[0].decode() for e in events]
    assert kinds == ["event: answer"] * len(names) + ["event: done"], body[:400]
    answers = [json.loads(e[1][len(b"data: "):]) for e in events[:-1]]
    assert sorted(a["domain"] for a in answers) == sorted(names)
    assert max(len(e[1]) for e in events[:-1]) > 256, "events shorter than the buffer test nothing"


def test_errors_are_json_with_fitting_statuses(make_cluster, registry):
    c = http_cluster(make_cluster, registry)
    cases = [
        ("GET", "/v1/status", None, 400, "missing parameter 'domain'"),
        ("GET", "/v1/status?domain=a.test,,b.test", None, 400, "empty name"),
        ("GET", "/v1/status?domain=%FF%FE.test", None, 400, "not UTF-8"),
        ("GET", "/v1/status?domain=" + "x" * 1100 + ".test", None, 400, "longer than"),
        ("GET", "/v1/status?domain=a.test&deadline_ms=zero", None, 400, "deadline_ms"),
        ("POST", "/v1/check", "{not json", 400, "not JSON"),
        ("POST", "/v1/check", "[1,2]", 400, "JSON object"),
        ("POST", "/v1/check", '{"names": "a.test"}', 400, "'names' must be"),
        ("POST", "/v1/check", '{"names": [1]}', 400, "strings only"),
        ("POST", "/v1/check", '{"names": ["a.test"], "fresh": 3}', 400, "'fresh'"),
        ("POST", "/v1/check", b'{"names": ["\xff.test"]}', 400, "not JSON"),
        ("GET", "/v1/check", None, 405, "method"),
        ("DELETE", "/v1/status", None, 405, "method"),
        ("GET", "/nope", None, 404, "no such page"),
    ]
    for method, path, body, want, text in cases:
        r, data = request(c, method, path, body=body)
        doc = json.loads(data)
        assert r.status == want, (path, body, r.status, doc)
        assert doc["error"]["code"] == want and text in doc["error"]["message"], (path, doc)
    assert c.status("http")["counters"]["responses_4xx"] >= len(cases)


def test_a_client_past_its_budget_gets_429_with_retry_after(make_cluster, registry, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# key names/s burst\nsecret-one 100 100\n")
    # 1 name a second: a drained bucket takes 5 s to hold 5 names again,
    # far longer than the steps below take
    c = http_cluster(make_cluster, registry, client_rate=1, client_burst=5, api_keys=str(keys))
    assert get_json(c, "/v1/status?domain=a1.test,a2.test,a3.test,a4.test,a5.test")[0] == 200
    status, doc, r = get_json(c, "/v1/status?domain=a6.test")
    assert status == 429 and int(r.getheader("Retry-After")) >= 1 and "budget" in doc["error"]["message"]
    # A key has a budget of its own; an unknown key is refused.
    hdr = {"X-API-Key": "secret-one"}
    assert get_json(c, "/v1/status?domain=" + ",".join(f"k{i}.test" for i in range(20)), headers=hdr)[0] == 200
    assert get_json(c, "/v1/status?domain=k.test", headers={"Authorization": "Bearer secret-one"})[0] == 200
    assert get_json(c, "/v1/status?domain=k.test", headers={"X-API-Key": "wrong"})[0] == 401
    assert c.status("http")["counters"]["rate_limited"] >= 1
    # A reload keeps what a client has left: no fresh burst for it.
    reloads = c.status("http")["counters"]["reloads"]
    c.daemons[-1].signal(signal.SIGHUP)
    wait_until(lambda: c.status("http")["counters"]["reloads"] > reloads, what="the reload")
    status, doc, r = get_json(c, "/v1/status?domain=" + ",".join(f"b{i}.test" for i in range(5)))
    assert status == 429, doc
    # A reload with a larger budget applies at once.
    c.config["http"]["client_rate"] = 1000
    c.config["http"]["client_burst"] = 1000
    c.write_config()
    c.daemons[-1].signal(signal.SIGHUP)
    wait_until(lambda: get_json(c, "/v1/status?domain=a7.test")[0] == 200, what="the reloaded budget")


def test_checks_in_flight_are_answered_across_an_intake_crash(make_cluster, registry):
    """availd-http's DEALER has a fixed routing id: intake, restarted after
    a SIGKILL, answers what its journal held to it, and the HTTP client
    gets its answers, not a 504 at the deadline."""
    c = http_cluster(make_cluster, registry)
    names = [f"slow-crash{i}.test" for i in range(5)]
    result = {}

    def ask():
        result["reply"] = post_json(c, "/v1/check", {"names": names, "deadline_ms": 10000})

    t = threading.Thread(target=ask)
    t.start()
    try:
        wait_until(lambda: registry.stats()["open"] == len(names), what="the checks at the registry")
        intake = next(d for d in c.daemons if d.kind == "intake")
        intake.kill()
        intake.start()
    finally:
        t.join(60)
    assert not t.is_alive(), "the HTTP request never ended"
    status, doc, _ = result["reply"]
    assert status == 200, doc
    assert [(a["domain"], a["availability"]) for a in doc["status"]] == [(n, "available") for n in names], doc
    print(c.status("intake")["counters"], doc)
    assert c.status("intake")["counters"]["resubmitted"] >= 1  # the batch, from the journal


def test_healthz_metrics_and_the_deadline_without_intake(make_cluster, registry):
    c = http_cluster(make_cluster, registry)
    status, doc, _ = get_json(c, "/healthz")
    assert status == 200 and doc["intake"] == "ok"
    r, data = request(c, "GET", "/metrics")
    text = data.decode()
    assert r.status == 200 and 'availd_requests_total{daemon="http"}' in text and "availd_connections{" in text
    intake = [d for d in c.daemons if d.kind == "intake"][0]
    intake.stop()
    status, doc, _ = get_json(c, "/healthz")
    assert status == 503 and doc["status"] == "unavailable"
    status, doc, _ = get_json(c, "/v1/status?domain=never-asked.test&deadline_ms=300")
    assert status == 504 and doc["status"][0]["reason"] == "deadline"
    assert "intake" in doc["error"]["message"]
    intake.start()
    wait_until(lambda: get_json(c, "/healthz")[0] == 200, timeout=20, what="healthz after intake is back")


def test_overloaded_is_503(make_cluster, registry):
    c = http_cluster(make_cluster, registry, max_pending=2, max_streams=1)
    conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=30)
    conn.request("GET", "/v1/stream?domain=silent-o.test,silent-p.test&deadline_ms=3000")
    resp = conn.getresponse()
    assert resp.status == 200
    status, doc, r = get_json(c, "/v1/status?domain=free-q.test")
    assert status == 503 and "overloaded" in doc["error"]["message"] and r.getheader("Retry-After") == "1"
    status, doc, r = get_json(c, "/v1/stream?domain=free-q.test")
    assert status == 503
    events = read_events(resp)
    assert [e[1].get("reason") for e in events[:2]] == ["deadline", "deadline"] or \
        all(e[1]["availability"] == "unknown" for e in events[:2])
    conn.close()
    wait_until(lambda: get_json(c, "/v1/status?domain=free-q.test")[0] == 200, what="room again")


def test_cors_origins_from_config(make_cluster, registry):
    c = http_cluster(make_cluster, registry, cors_origins=["https://shop.example"])
    r, _ = request(c, "GET", "/v1/status?domain=free-c.test", headers={"Origin": "https://shop.example"})
    assert r.getheader("Access-Control-Allow-Origin") == "https://shop.example"
    r, _ = request(c, "GET", "/v1/status?domain=free-c.test", headers={"Origin": "https://evil.example"})
    assert r.getheader("Access-Control-Allow-Origin") is None
    r, _ = request(c, "OPTIONS", "/v1/check", headers={"Origin": "https://shop.example",
                                                       "Access-Control-Request-Method": "POST"})
    assert r.status == 204 and "POST" in r.getheader("Access-Control-Allow-Methods")


def test_config_check_names_the_bad_key(make_cluster, registry):
    c = make_cluster({"http": {"listen": "ipc://nope", "max_names": 5000}})
    r = subprocess.run([binary("http"), "-n", "-c", c.config_path], capture_output=True, text=True)
    assert r.returncode == 78 and "availd.yaml:" in r.stderr and "must be" in r.stderr, r.stderr
    c.config["http"] = {"listen": "tcp://127.0.0.1:1", "tlds": ["com", "Not A Tld"]}
    c.write_config()
    r = subprocess.run([binary("http"), "-n", "-c", c.config_path], capture_output=True, text=True)
    assert r.returncode == 78 and "bad TLD" in r.stderr
    c.config["http"] = {"listen": "tcp://127.0.0.1:1"}
    c.write_config()
    r = subprocess.run([binary("http"), "-n", "-c", c.config_path], capture_output=True, text=True)
    assert r.returncode == 0 and "configuration OK" in r.stdout


def test_search_page_files_are_served(make_cluster, registry):
    c = http_cluster(make_cluster, registry, tlds=["test", "de"])
    r, data = request(c, "GET", "/")
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/html") and b"app.js" in data
    assert "default-src 'self'" in r.getheader("Content-Security-Policy")
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        r, data = request(c, "GET", path)
        assert r.status == 200 and r.getheader("Content-Type").startswith(kind) and data
    status, doc, _ = get_json(c, "/v1/config")
    assert doc["tlds"] == ["test", "de"]
    assert request(c, "GET", "/../../etc/passwd")[0].status == 404


def test_operations_generator_units_status_and_man_page(make_cluster, registry, tmp_path):
    from test_ops import install, run_generator
    c = http_cluster(make_cluster, registry)
    # availctl status lists availd-http when the file has an http section.
    r = c.availctl("status", check=0)
    assert any(line.split()[:2] == ["http", "running"] for line in r.stdout.splitlines()), r.stdout
    dest = str(tmp_path / "root")
    install(dest)
    for f in ("usr/sbin/availd-http", "usr/lib/systemd/system/availd-http.service",
              "usr/lib/systemd/system/availd-http.socket", "usr/share/man/man8/availd-http.8",
              "usr/share/availd/www/index.html", "usr/share/availd/www/app.js", "usr/share/availd/www/style.css"):
        assert os.path.exists(os.path.join(dest, f)), f
    page = open(os.path.join(dest, "usr/share/man/man8/availd-http.8")).read()
    assert page.startswith(".TH AVAILD-HTTP 8") and "/v1/stream" in page
    # The generator enables availd-http (and its socket, on http.listen)
    # when the config has an http section, and not otherwise.
    out = str(tmp_path / "gen")
    r = run_generator(dest, c.config_path, out)
    assert r.returncode == 0, r.stderr
    wants = os.listdir(os.path.join(out, "availd.target.wants"))
    assert "availd-http.service" in wants and "availd-http.socket" in wants
    dropin = open(os.path.join(out, "availd-http.socket.d", "50-availd-yaml.conf")).read()
    assert f"ListenStream=127.0.0.1:{c.http_port}\n" in dropin
    del c.config["http"]
    c.write_config()
    out2 = str(tmp_path / "gen2")
    assert run_generator(dest, c.config_path, out2).returncode == 0
    assert "availd-http.service" not in os.listdir(os.path.join(out2, "availd.target.wants"))


def test_socket_activation_and_sighup(make_cluster, registry):
    """The listening socket as a socket unit passes it (LISTEN_FDS): it stays
    bound across a restart, so connections queue instead of being refused."""
    import socket as socketlib
    port = free_port()
    lsock = socketlib.socket()
    lsock.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(128)
    config = {"registries": {"test": whois_registry(registry.port, ["test"])},
              "http": {"listen": f"tcp://127.0.0.1:{port}", "www": WWW}}
    c = make_cluster(config).start_all()
    c.http_port = port
    d = c.daemon("http", listen_fds=[lsock]).start()
    assert "passed by the service manager" in d.log()
    assert get_json(c, "/v1/status?domain=free-sa.test")[0] == 200
    d.stop()
    # Nobody serves now, but the socket is still bound: a connection queues.
    pending = socketlib.create_connection(("127.0.0.1", port), timeout=30)
    pending.sendall(b"GET /v1/status?domain=free-sb.test HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    d.start()
    reply = b""
    while True:
        b = pending.recv(65536)
        if not b:
            break
        reply += b
    assert reply.startswith(b"HTTP/1.1 200") and b"free-sb.test" in reply
    # SIGHUP with a bad file keeps the running config.
    c.write_config("http: {max_names: nope}\n")
    d.signal(signal.SIGHUP)
    wait_until(lambda: c.status("http")["counters"]["reloads_refused"] >= 1, what="the refused reload")
    assert get_json(c, "/v1/status?domain=free-sc.test")[0] == 200
