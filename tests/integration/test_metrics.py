"""availctl metrics: complete (no cap: every registry, every daemon's
availd_up, the cache's entries and the error events), HELP and TYPE for
every family, one fixed set of histogram buckets, checked by a strict
text-format parser of our own and by prometheus_client's; served on
/metrics only, to several scrapers at once."""
import os
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import msgpack
import zmq

from harness import binary, free_port, wait_until, whois_registry

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
LE = ["0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30",
      "60", "+Inf"]
REGISTRIES = 600  # x 21 samples each: far past the old cut at 4,096


def parse_strict(text):
    """The text format 0.0.4, strictly: every sample follows its family's
    HELP and TYPE, a family is announced once, names and labels are
    well-formed, a series appears once, values are numbers. Returns
    {family: {"type", "help", "samples": [(name, labels, value)]}}."""
    families, current, seen = {}, None, set()
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("# HELP "):
            name, help_text = line[7:].split(" ", 1)
            assert NAME.match(name) and help_text.strip(), line
            assert name not in families, f"{name} announced twice"
            assert lines[i + 1] == f"# TYPE {name} " + lines[i + 1].rsplit(" ", 1)[1], lines[i + 1]
            kind = lines[i + 1].rsplit(" ", 1)[1]
            assert kind in ("counter", "gauge", "histogram"), kind
            current = name
            families[name] = {"type": kind, "help": help_text, "samples": []}
            i += 2
            continue
        assert not line.startswith("#"), f"a comment that is not HELP+TYPE: {line}"
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        assert m, f"not a sample line: {line!r}"
        name, labels_text, value = m.group(1), m.group(3) or "", m.group(4)
        assert current, f"sample before any HELP/TYPE: {line}"
        f = families[current]
        allowed = [current] if f["type"] != "histogram" else [current + s for s in ("_bucket", "_sum", "_count")]
        assert name in allowed, f"{name} outside its family {current}"
        labels, pos = {}, 0
        while pos < len(labels_text):
            lm = LABEL.match(labels_text, pos)
            assert lm, f"bad labels: {labels_text!r}"
            assert lm.group(1) not in labels
            labels[lm.group(1)] = lm.group(2)
            pos = lm.end()
        float(value)
        key = (name, tuple(sorted(labels.items())))
        assert key not in seen, f"series twice: {line}"
        seen.add(key)
        f["samples"].append((name, labels, float(value)))
        i += 1
    return families


def check_histograms(families):
    for fname, f in families.items():
        if f["type"] != "histogram":
            continue
        series = {}
        for name, labels, value in f["samples"]:
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            series.setdefault(key, {"buckets": []})
            if name.endswith("_bucket"):
                series[key]["buckets"].append((labels["le"], value))
            else:
                series[key][name[len(fname) + 1:]] = value
        for key, s in series.items():
            assert [le for le, _ in s["buckets"]] == LE, (key, s["buckets"])  # fixed, every time
            counts = [v for _, v in s["buckets"]]
            assert counts == sorted(counts) and counts[-1] == s["count"], (key, counts)
            assert "sum" in s


def push_answers(c, registries, per_registry=3):
    """Answers with timing samples, as the dispatcher puts them."""
    s = c.socket(zmq.PUSH, c.endpoint("cache_puts"))
    now = int(time.time() * 1000)
    for r in registries:
        for k, (status, latency_us) in enumerate([("registered", 800), ("available", 40000),
                                                  ("unknown", 3000000)][:per_registry]):
            m = {"t": "put", "v": 1, "name": f"n{k}.{r}", "status": status, "registry": r, "source": "whois",
                 "at": now, "latency_us": latency_us, "ttl_s": 600, "timing": True}
            if status == "unknown":
                m["reason"] = "timeout"
            s.send(msgpack.packb(m))


def many_registries_cluster(make_cluster):
    names = [f"r{i:03d}" for i in range(REGISTRIES)]
    registries = {n: whois_registry(1, [f"t{n}"]) for n in names}
    c = make_cluster({"registries": registries, "queriers": {"all": {"registries": names}}})
    return c, names


def test_metrics_are_complete_past_the_old_cap_and_parse_strictly(make_cluster):
    from prometheus_client.parser import text_string_to_metric_families
    c, names = many_registries_cluster(make_cluster)
    c.start("errors")
    c.start("cache")  # dispatcher, querier-all and intake stay down: availd_up 0
    push_answers(c, names)
    wait_until(lambda: len(c.control("cache", "stats")["timing"]) == REGISTRIES, timeout=60,
               what="timing of every registry")
    r = c.availctl("metrics", check=0, timeout=120)
    families = parse_strict(r.stdout)
    samples = sum(len(f["samples"]) for f in families.values())
    assert samples > 4096 + 1000, samples
    print(f"{samples} samples, {len(families)} families, all with HELP and TYPE")
    up = {s[1]["daemon"]: s[2] for s in families["availd_up"]["samples"]}
    assert up == {"intake": 0, "dispatcher": 0, "cache": 1, "errors": 1, "querier-all": 0}, up
    for fam in ("availd_registry_answers_total", "availd_registry_unknown_total",
                "availd_registry_rate_limited_total"):
        per = {s[1]["registry"]: s[2] for s in families[fam]["samples"]}
        assert set(per) == set(names), fam
        assert families[fam]["type"] == "counter"
    answers = {s[1]["registry"]: s[2] for s in families["availd_registry_answers_total"]["samples"]}
    unknown = {s[1]["registry"]: s[2] for s in families["availd_registry_unknown_total"]["samples"]}
    assert set(answers.values()) == {3} and set(unknown.values()) == {1}
    hist = families["availd_registry_latency_seconds"]
    assert hist["type"] == "histogram" and len(hist["samples"]) == REGISTRIES * (len(LE) + 2)
    check_histograms(families)
    last = {(s[1]["registry"], s[1]["le"]): s[2] for s in hist["samples"] if s[0].endswith("_bucket")}
    # 0.8 ms, 40 ms and 3 s: 1 under a millisecond, 2 under 50 ms, 3 under 5 s
    assert last[(names[0], "0.001")] == 1 and last[(names[0], "0.05")] == 2 and last[(names[0], "5")] == 3
    assert families["availd_cache_entries"]["samples"][0][2] == REGISTRIES * 3  # every put, as put
    assert "availd_error_events" in families
    # and a second, independent parser agrees on the families and the series
    parsed = {f.name: f for f in text_string_to_metric_families(r.stdout)}
    assert len(parsed) == len(families)
    assert sum(len(f.samples) for f in parsed.values()) == samples
    assert parsed["availd_registry_latency_seconds"].type == "histogram"


def test_histogram_buckets_are_the_same_with_no_answers_and_with_some(make_cluster):
    c = make_cluster({"registries": {"quiet": whois_registry(1, ["quiet"])}})
    c.start("errors")
    c.start("cache")
    push_answers(c, ["quiet"], per_registry=1)
    wait_until(lambda: c.control("cache", "stats")["timing"], what="timing")
    before = parse_strict(c.availctl("metrics", check=0).stdout)
    check_histograms(before)
    push_answers(c, ["quiet"], per_registry=3)
    wait_until(lambda: c.control("cache", "stats")["timing"][0]["total"]["count"] == 4, what="more timing")
    after = parse_strict(c.availctl("metrics", check=0).stdout)
    check_histograms(after)
    les = lambda fams: [s[1]["le"] for s in fams["availd_registry_latency_seconds"]["samples"] if "le" in s[1]]
    assert les(before) == les(after) == LE


def test_every_family_is_announced_while_every_daemon_is_down(make_cluster):
    c = make_cluster()
    families = parse_strict(c.availctl("metrics", check=0).stdout)
    assert {s[2] for s in families["availd_up"]["samples"]} == {0}
    for fam in ("availd_registry_answers_total", "availd_registry_latency_seconds", "availd_cache_entries",
                "availd_error_events"):
        assert fam in families and families[fam]["help"]


def raw_request(port, text):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(text.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode()


def test_served_on_metrics_only_and_to_several_scrapers_at_once(make_cluster):
    c = make_cluster({"registries": {"served": whois_registry(1, ["served"])}})
    c.start("errors")
    c.start("cache")
    push_answers(c, ["served"])
    wait_until(lambda: c.control("cache", "stats")["timing"], what="timing")
    port = free_port()
    server = subprocess.Popen([binary("availctl"), "-c", c.config_path, "metrics", "--serve", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def scrape(path="/metrics"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as resp:
                    return resp.status, resp.headers["Content-Type"], resp.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.headers["Content-Type"], e.read().decode()
            except OSError:
                return None
        status, ctype, body = wait_until(scrape, timeout=30, what="a scrape")
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        check_histograms(parse_strict(body))
        assert scrape("/metrics?name[]=x")[0] == 200
        for path in ("/", "/metric", "/metrics/x", "/favicon.ico", "/metricsx"):
            assert scrape(path)[0] == 404, path
        assert raw_request(port, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").startswith("HTTP/1.1 405")
        assert raw_request(port, "HEAD /metrics HTTP/1.1\r\n\r\n").split("\r\n\r\n", 1)[1] == ""
        # A scraper that connects and says nothing does not hold up the next:
        # the next scrape is answered while the silent one is still open (a
        # server serving one at a time would answer it only after closing
        # the silent one, at its 5 s request timeout).
        silent = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(3)]
        try:
            results = []
            threads = [threading.Thread(target=lambda: results.append(scrape())) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert len(results) == 6 and all(r and r[0] == 200 for r in results)
            assert len({r[2].count("\n") for r in results}) == 1
            for s in silent:
                s.setblocking(False)
                try:
                    data = s.recv(1)
                    assert False, f"the silent scraper was answered or closed first: {data!r}"
                except BlockingIOError:
                    pass
        finally:
            for s in silent:
                s.close()
    finally:
        server.terminate()
        assert server.wait(20) == 0, server.stderr.read()


def test_served_by_systemd_socket(make_cluster):
    """availd-metrics.socket: the listening socket comes from systemd."""
    c = make_cluster()
    c.start("errors")
    port = free_port()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    av = binary("availctl")
    # systemd passes the socket as fd 3 with LISTEN_PID/LISTEN_FDS
    script = f'exec 3<&{listener.fileno()}; export LISTEN_FDS=1 LISTEN_PID=$$; exec "{av}" -c "{c.config_path}" metrics --serve'
    server = subprocess.Popen(["bash", "-c", script], pass_fds=(listener.fileno(),),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    listener.close()
    try:
        text = raw_request(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert text.startswith("HTTP/1.1 200"), text[:200]
        families = parse_strict(text.split("\r\n\r\n", 1)[1])
        assert {s[1]["daemon"]: s[2] for s in families["availd_up"]["samples"]}["errors"] == 1
    finally:
        server.terminate()
        assert server.wait(20) == 0, server.stderr.read()


def test_metrics_units_are_shipped():
    from harness import SOURCE_DIR
    service = open(os.path.join(SOURCE_DIR, "systemd", "availd-metrics.service")).read()
    sock = open(os.path.join(SOURCE_DIR, "systemd", "availd-metrics.socket")).read()
    assert "ExecStart=/usr/bin/availctl -c /etc/availd/availd.yaml metrics --serve\n" in service
    assert "\nListenStream=127.0.0.1:9421\n" in sock and "Service=availd-metrics.service" in sock
