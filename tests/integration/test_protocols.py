"""The querier's protocols against real servers on loopback: RDAP over HTTPS
against nginx with a test CA (and its rate limiting), the two DAS line
formats with every RC code, and the DNS pre-check against nsd serving a
test TLD zone with delegations."""
import json
import shutil
import subprocess
import time

import pytest

from harness import FakeRegistry, free_port, wait_until, whois_registry


# ---- RDAP against nginx ---------------------------------------------------

def make_ca(d):
    """A test CA and a certificate for 127.0.0.1 signed by it."""
    def ssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=availd test CA",
        "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem")
    with open(f"{d}/ext.cnf", "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", f"{d}/server.key",
        "-out", f"{d}/server.csr")
    ssl("x509", "-req", "-in", f"{d}/server.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", f"{d}/ext.cnf", "-out", f"{d}/server.pem")


RDAP_OBJECTS = {
    "taken-r.test": ["active"],
    "hold-r.test": ["client hold", "server transfer prohibited"],
    "redemption-r.test": ["redemption period"],
    "pendingdelete-r.test": ["pending delete", "inactive"],
    "reserved-r.test": ["reserved"],
}


@pytest.fixture
def nginx(tmp_path):
    d = str(tmp_path)
    make_ca(d)
    docs = tmp_path / "docs" / "rdap" / "domain"
    docs.mkdir(parents=True)
    for name, status in RDAP_OBJECTS.items():
        (docs / name).write_text(json.dumps({"objectClassName": "domain", "ldhName": name, "status": status}))
    (tmp_path / "docs" / "broken" / "domain").mkdir(parents=True)
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
daemon off;
user root;  # the workers read the test's private temporary directory
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
    limit_req_zone $binary_remote_addr zone=strict:1m rate=1r/s;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {d}/server.pem;
        ssl_certificate_key {d}/server.key;
        root {d}/docs;
        default_type application/rdap+json;
        location /rdap/domain/ {{ try_files $uri =404; }}
        location /limited/domain/ {{
            limit_req zone=strict burst=1 nodelay;
            limit_req_status 429;
            error_page 429 = @ratelimited;
            alias {d}/docs/rdap/domain/;
            try_files $uri =404;
        }}
        location @ratelimited {{ add_header Retry-After 3 always; return 429 '{{"errorCode":429}}'; }}
        location /broken/domain/ {{ return 500; }}
    }}
}}
""")
    (tmp_path / "tmp").mkdir()
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", d], stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: subprocess.run(["curl", "-s", "--cacert", f"{d}/ca.pem", "-o", "/dev/null", "-w",
                                           "%{http_code}", f"https://127.0.0.1:{port}/rdap/domain/taken-r.test"],
                                          capture_output=True, text=True).stdout == "200", what="nginx up")
        yield {"port": port, "ca": f"{d}/ca.pem"}
    finally:
        proc.terminate()
        proc.wait(10)


def rdap_registry(port, tlds, ca, path="rdap", **extra):
    entry = {"tlds": tlds, "protocol": "rdap", "base_url": f"https://127.0.0.1:{port}/{path}/", "ca_file": ca,
             "timeout_ms": 3000, "backoff_s": 30}
    entry.update(extra)
    return entry


def test_rdap_statuses_from_an_https_server(make_cluster, nginx):
    c = make_cluster({"dispatcher": {"heartbeat_ms": 100}, "registries": {
        "rdap": rdap_registry(nginx["port"], ["test"], nginx["ca"]),
        "untrusted": rdap_registry(nginx["port"], ["untrusted"], "/etc/ssl/certs/ca-certificates.crt"),
        "broken": rdap_registry(nginx["port"], ["broken"], nginx["ca"], path="broken"),
    }}).start_all()
    expect = {
        "taken-r.test": "registered", "hold-r.test": "registered",
        "redemption-r.test": "registered", "pendingdelete-r.test": "registered",  # never available
        "reserved-r.test": "reserved", "free-r.test": "available",
    }
    for name, status in expect.items():
        a = c.ask(name)
        assert (a["status"], a["source"]) == (status, "rdap"), (name, a)
    assert c.ask("redemption-r.test", fresh=True)["matched"] == "rdap: status in redemption or pending delete"
    # TLS is verified: a server whose CA is not trusted gets no verdict
    a = c.ask("x.untrusted")
    assert (a["status"], a["reason"]) == ("unknown", "tls_error")
    a = c.ask("x.broken")  # HTTP 500
    assert (a["status"], a["reason"]) == ("unknown", "http_status")


def test_rdap_rate_limit_with_retry_after_backs_off(make_cluster, nginx):
    c = make_cluster({"dispatcher": {"heartbeat_ms": 100}, "registries": {
        "limited": rdap_registry(nginx["port"], ["test"], nginx["ca"], path="limited", backoff_s=60),
    }}).start_all()
    answers = c.ask([f"free-l{i}.test" for i in range(8)], fresh=True)
    reasons = [a.get("reason") for a in answers]
    assert "rate_limited" in reasons and "available" in [a["status"] for a in answers]
    assert all(a["status"] != "available" or a["source"] == "rdap" for a in answers)
    # Retry-After: 3 decides the backoff, not backoff_s (60)
    backoff = c.status("querier-limited")["gauges"]["backoff_ms"]
    assert 0 < backoff <= 3000
    assert c.ask("free-during.test", fresh=True)["reason"] == "rate_limited"
    time.sleep(backoff / 1000 + 0.5)
    assert c.ask("free-after.test", fresh=True)["status"] == "available"


# ---- DAS --------------------------------------------------------------------

EURID_DAS = {
    # EURid: "get 1.0 LABEL" (the name without .eu); `%% RC = n`, then Status
    "free": "% .eu Domain Availability Server 1.0\n%\n%% RC = 0\nDomain: free\nStatus: AVAILABLE\n",
    "taken": "% .eu Domain Availability Server 1.0\n%\n%% RC = 0\nDomain: taken\nStatus: NOT AVAILABLE\n",
    "eurid": "% .eu Domain Availability Server 1.0\n%\n%% RC = 0\nDomain: eurid\nStatus: REGISTERED\n",
    "quarantined": "%% RC = 0\nDomain: quarantined\nStatus: SUSPENDED (QUARANTINE)\n",
    "blocked": "%% RC = 0\nDomain: blocked\nStatus: BLOCKED\n",
    "notallowed": "%% RC = 0\nDomain: notallowed\nStatus: NOT ALLOWED\n",
    "excessive": "% .eu Domain Availability Server 1.0\n%\n%% RC = -2\n% Excessive querying\n",
    "failing": "%% RC = -1\n% Internal error\n",
}
DNSBE_DAS = {
    # DNS Belgium: the whole name; `RC: n`, then Domain and Status
    "free.be": "RC: 0\nDomain: free.be\nStatus: AVAILABLE\n",
    "taken.be": "RC: 0\nDomain: taken.be\nStatus: NOT AVAILABLE\n",
    "notallowed.be": "RC: 0\nDomain: notallowed.be\nStatus: NOT ALLOWED\n",
    "failing.be": "RC: -1\n",
    "excessive.be": "RC: -2\n",
    "blockedip.be": "RC: -3\n",
}
DAS_PATTERNS = {
    "available": [r"^Status:\s*(AVAILABLE|FREE)\s*$"],
    "registered": [r"^Status:\s*(NOT AVAILABLE|REGISTERED|SUSPENDED|ON HOLD|APPLICATION PENDING)"],
    "reserved": [r"^Status:\s*(RESERVED|BLOCKED|NOT ALLOWED)"],
    "rate_limited": [r"RC\s*[=:]\s*-[23]\b"],
    "error": [r"RC\s*[=:]\s*-1\b"],
}


def test_das_line_formats_and_rc_codes(make_cluster, tmp_path):
    fixtures = tmp_path / "das"
    fixtures.mkdir()
    for name, reply in {**EURID_DAS, **DNSBE_DAS}.items():
        (fixtures / name).write_text(reply.replace("\n", "\r\n"))
    registry = FakeRegistry(fixtures=str(fixtures))
    try:
        def das(tlds, query):
            return whois_registry(registry.port, tlds, protocol="das", query=query, patterns=DAS_PATTERNS,
                                  backoff_s=30)
        c = make_cluster({"dispatcher": {"heartbeat_ms": 100}, "registries": {
            "eurid": das(["eu"], "get 1.0 %l\r\n"), "dnsbe": das(["be"], "%s\r\n")}}).start_all()
        expect = {
            "free.eu": ("available", None), "taken.eu": ("registered", None), "eurid.eu": ("registered", None),
            "quarantined.eu": ("registered", None), "blocked.eu": ("reserved", None),
            "notallowed.eu": ("reserved", None), "failing.eu": ("unknown", "registry_error"),
            "free.be": ("available", None), "taken.be": ("registered", None), "notallowed.be": ("reserved", None),
            "failing.be": ("unknown", "registry_error"),
        }
        for name, (status, reason) in expect.items():
            a = c.ask(name)
            assert (a["status"], a.get("reason"), a["source"]) == (status, reason, "das"), (name, a)
        # the EURid query carried the label only
        assert registry.stats()["names"]["free"] == 1
        # RC -2 (excessive querying) and -3 (IP blocked): rate limited, back off
        for name, querier in (("excessive.eu", "querier-eurid"), ("excessive.be", "querier-dnsbe")):
            a = c.ask(name)
            assert (a["status"], a["reason"]) == ("unknown", "rate_limited")
            assert c.status(querier)["gauges"]["backoff_ms"] > 20000
        a = c.ask("taken2.eu")
        assert (a["status"], a["reason"]) == ("unknown", "rate_limited")  # backing off: not asked
    finally:
        registry.close()


def test_das_rc_minus_3_blocked_ip_backs_off(make_cluster, tmp_path):
    fixtures = tmp_path / "das"
    fixtures.mkdir()
    (fixtures / "blockedip.be").write_text(DNSBE_DAS["blockedip.be"])
    registry = FakeRegistry(fixtures=str(fixtures))
    try:
        c = make_cluster({"dispatcher": {"heartbeat_ms": 100}, "registries": {
            "dnsbe": whois_registry(registry.port, ["be"], protocol="das", patterns=DAS_PATTERNS,
                                    backoff_s=30)}}).start_all()
        a = c.ask("blockedip.be")
        assert (a["status"], a["reason"]) == ("unknown", "rate_limited")
        assert c.status("querier-dnsbe")["counters"]["backoffs"] == 1
    finally:
        registry.close()


# ---- DNS pre-check against nsd -----------------------------------------------

def ns_referral(port, name):
    """Asks 127.0.0.1:port for name's NS: true when it answers with records."""
    import socket
    import struct
    query = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    query += struct.pack(">HH", 2, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(query, ("127.0.0.1", port))
            reply = s.recv(4096)
        except OSError:
            return False
    _, flags, _, an, ns, _ = struct.unpack(">HHHHHH", reply[:12])
    return (flags & 0xF) == 0 and an + ns > 0


@pytest.fixture
def nsd(tmp_path):
    if not shutil.which("nsd"):
        pytest.fail("nsd is not installed (tools/dev test installs it)")
    d = tmp_path / "nsd"
    d.mkdir()
    port = free_port()
    delegated = [f"deleg{i}.test" for i in range(80)]
    zone = ["$ORIGIN test.", "$TTL 300",
            "@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300",
            "@ IN NS ns.test.", "ns IN A 127.0.0.1"]
    for name in delegated:
        label = name.split(".")[0]
        zone.append(f"{label} IN NS ns1.hoster.example.")
        zone.append(f"{label} IN NS ns2.hoster.example.")
    (d / "test.zone").write_text("\n".join(zone) + "\n")
    (d / "nsd.conf").write_text(f"""
server:
    ip-address: 127.0.0.1@{port}
    username: ""
    chroot: ""
    pidfile: "{d}/nsd.pid"
    zonesdir: "{d}"
    database: ""
    zonelistfile: "{d}/zone.list"
    xfrdfile: "{d}/xfrd.state"
    xfrdir: "{d}"
    logfile: "{d}/nsd.log"
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: "test"
    zonefile: "test.zone"
""")
    proc = subprocess.Popen(["nsd", "-d", "-c", str(d / "nsd.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: proc.poll() is not None or ns_referral(port, delegated[0]), what="nsd serving the zone")
        assert proc.poll() is None, open(d / "nsd.log").read() if (d / "nsd.log").exists() else "nsd exited"
        yield {"port": port, "delegated": delegated}
    finally:
        proc.terminate()
        proc.wait(10)


def test_dns_precheck_answers_delegated_names_without_the_registry(make_cluster, nsd):
    registry = FakeRegistry()
    try:
        c = make_cluster({"dispatcher": {"heartbeat_ms": 100}, "registries": {
            "test": whois_registry(registry.port, ["test"], dns_precheck=True,
                                   dns_servers=[f"127.0.0.1:{nsd['port']}"])}}).start_all()
        undelegated = [f"free-nod{i}.test" for i in range(20)]
        names = nsd["delegated"] + undelegated   # 80% registered
        answers = c.ask(names, timeout=30)
        for name, a in zip(names, answers):
            if name in nsd["delegated"]:
                assert (a["status"], a["source"], a["matched"]) == ("registered", "dns", "dns: delegated"), a
            else:
                # no delegation is never `available` on its own: the registry said so
                assert (a["status"], a["source"]) == ("available", "whois"), a
        stats = registry.stats()
        assert stats["total"] == len(undelegated)
        saved = 1 - stats["total"] / len(names)
        print(f"DNS pre-check: {len(names)} checks, {stats['total']} registry queries, {saved:.0%} saved")
        assert saved == pytest.approx(0.8)
        counters = c.status("querier-test")["counters"]
        assert counters["dns_delegated"] == 80 and counters["dns_not_delegated"] == 20
    finally:
        registry.close()


def test_dns_precheck_failure_falls_back_to_the_registry(make_cluster):
    registry = FakeRegistry()
    try:
        dead = free_port()  # no DNS server there: the lookup times out
        c = make_cluster({"dispatcher": {"heartbeat_ms": 100}, "registries": {
            "test": whois_registry(registry.port, ["test"], dns_precheck=True, dns_servers=[f"127.0.0.1:{dead}"],
                                   timeout_ms=5000)}}).start_all()
        a = c.ask("taken-nodns.test", timeout=20)
        assert (a["status"], a["source"]) == ("registered", "whois")
    finally:
        registry.close()


# ---- the registry's address -----------------------------------------------

def test_a_registry_host_name_is_looked_up_when_first_needed(make_cluster):
    """Hosts are resolved by c-ares on the querier's loop when the first query
    needs them (localhost comes from /etc/hosts: nothing leaves the machine),
    not at start, and again after a reload."""
    registry = FakeRegistry()
    try:
        c = make_cluster({"dispatcher": {"heartbeat_ms": 100}, "registries": {
            "test": whois_registry(registry.port, ["test"], host="localhost")}}).start_all()
        assert c.ask("taken-host.test")["status"] == "registered"
        assert c.ask("free-host.test")["status"] == "available"
        c.write_config()
        assert c.availctl("reload").returncode == 0
        assert c.ask("taken-host2.test")["status"] == "registered"
        assert not [e for e in c.control("errors", "recent", limit=100)["events"] if e["code"] == "resolve_failed"]
    finally:
        registry.close()
