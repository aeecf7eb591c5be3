#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets into corpus/TARGET/. Run once
(or after the registry table or the fixtures change); the files are
committed. Usage: make_corpus.py [TARGET...] (default: all of them).

  proto    one valid message of every type, and a few near misses
  whois    real registry replies from ../shared/fixtures/whois (a subset: every
           throttled and reserved answer of a registry in the table, the
           empty ones, and the available and registered answers of a few
           registries), each behind the line that picks its registry; and a
           few for the POSIX twins and the generic reading
  rdap     RDAP bodies behind the byte that picks the HTTP status
  config   availd.yaml as shipped (with part of the table), and variants
  gateway  client lines behind the byte that sizes the reads
"""
import msgpack
import os
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, "..", ".."))
FIXTURES = os.environ.get("AVAILD_FIXTURES", os.path.normpath(os.path.join(TOP, "..", "shared", "fixtures", "whois")))


def out_dir(target):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    return d


def write(d, name, data):
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def proto():
    out = out_dir("proto")
    seeds = {
        "check": {"t": "check", "v": 1, "id": "r1", "name": "example.com"},
        "check_batch": {"t": "check", "v": 1, "id": "r2", "names": ["a.de", "b.com", "bücher.de"],
                        "fresh": True, "deadline_ms": 2000},
        "check_internal": {"t": "check", "v": 1, "id": "9", "name": "x.net", "rid": 77, "idx": 3},
        "answer": {"t": "answer", "v": 1, "id": "r1", "name": "example.com", "status": "registered",
                   "source": "whois", "registry": "verisign", "at": 1790000000000, "latency_us": 51000},
        "answer_unknown": {"t": "answer", "v": 1, "id": "r1", "name": "x.de", "status": "unknown",
                           "reason": "timeout", "source": "none", "at": 1, "raw": "% limit", "rid": 2, "idx": 0},
        "ready": {"t": "ready", "v": 1, "registry": "denic", "credit": 1000, "pid": 42},
        "heartbeat": {"t": "heartbeat", "v": 1, "registry": "denic", "credit": 12},
        "bye": {"t": "bye", "v": 1, "registry": "denic"},
        "error": {"t": "error", "v": 1, "daemon": "querier-denic", "registry": "denic", "level": "warning",
                  "code": "rate_limited", "text": "backing off 60 s", "at": 5, "pid": 9},
        "put": {"t": "put", "v": 1, "id": "", "name": "a.de", "status": "available", "source": "whois",
                "at": 3, "ttl_s": 60, "timing": True, "latency_us": 4000},
        "ctl": {"t": "ctl", "v": 1, "cmd": "recent", "limit": 10, "level": "err"},
        "ctl_reply": {"t": "ctl_reply", "v": 1, "ok": False, "error": "no"},
        "newer_version": {"t": "answer", "v": 7, "id": "z", "name": "q.io", "status": "available",
                          "future": {"nested": [1, 2, 3]}},
        "missing_v": {"t": "check", "id": "a", "name": "b"},
        "wrong_type": {"t": "check", "v": 1, "id": 5, "name": "b"},
    }
    for name, msg in seeds.items():
        write(out, name, msgpack.packb(msg, use_bin_type=True))
    write(out, "array_bomb", b"\xdd\xff\xff\xff\xff")
    write(out, "not_msgpack", b"example.com\r\n")
    return len(seeds) + 2


# ---- whois -----------------------------------------------------------------

# Folders that do not name the suffix their answers are about (as
# tests/integration/test_corpus.py has them).
SUFFIX = {"whois.aero": "aero", "whois.nic.priv.at/at": "priv.at", "whois.nic.ec/ex": "ec",
          "whois.ua/ua/uaepp": "ua", "whois.nic.uk/uk": "co.uk"}
# Registries whose available and registered answers are seeds too: gTLD and
# ccTLD wordings, DAS-like status lines, long and short answers.
PAIRS = ["whois.verisign-grs.com/com", "whois.denic.de/de", "whois.eu/eu", "whois.dns.be/be",
         "whois.nic.uk/uk", "whois.jprs.jp/jp", "whois.cnnic.cn/cn", "whois.nic.it/it", "whois.nic.fr/fr",
         "whois.dns.pl/pl", "whois.tcinet.ru/ru", "whois.registro.br/br", "whois.cira.ca/ca", "whois.audns.net.au/au"]
# Answers read again by the POSIX twin of their registry, and by the generic
# reading (no patterns of its own, the name undelegated in DNS).
POSIX = ["whois.denic.de/de", "whois.dns.be/be", "whois.eu/eu"]
GENERIC = ["whois.denic.de/de", "whois.verisign-grs.com/com", "whois.nic.it/it", "whois.jprs.jp/jp",
           "whois.nic.fr/fr", "whois.cira.ca/ca"]


def whois():
    table = yaml.safe_load(open(os.path.join(TOP, "config", "registries.yaml")))["registries"]
    served = {t for r in table.values() for t in r["tlds"]}
    out = out_dir("whois")
    n = 0
    for root, _, files in sorted(os.walk(FIXTURES)):
        rel = os.path.relpath(root, FIXTURES)
        parts = rel.split("/")
        suffix = SUFFIX.get(rel, parts[1] if len(parts) > 1 else None)
        if suffix not in served:
            continue
        for f in sorted(files):
            reply = open(os.path.join(root, f), "rb").read()
            keep = (f in ("response_throttled.txt", "status_reserved.txt") or not reply or
                    (rel in PAIRS and f in ("status_available.txt", "status_registered.txt")))
            tag = rel.replace("/", "_") + "_" + f[:-4]
            if keep:
                write(out, tag, suffix.encode() + b"\n" + reply)
                n += 1
            if rel in POSIX and f in ("status_available.txt", "status_registered.txt"):
                write(out, "posix_" + tag, b"posix:" + suffix.encode() + b"\n" + reply)
                n += 1
            if rel in GENERIC and f in ("status_available.txt", "status_registered.txt"):
                write(out, "generic_" + tag, b"generic undelegated\n" + reply)
                n += 1
    # The same "not found" with the name delegated, and without a pre-check.
    avail = open(os.path.join(FIXTURES, "whois.denic.de/de/status_available.txt"), "rb").read()
    write(out, "generic_delegated", b"generic delegated\n" + avail)
    write(out, "generic_not_asked", b"generic\n" + avail)
    write(out, "no_line", b"com")
    write(out, "blank_reply", b"de\n \r\n\t\r\n")
    write(out, "nul_and_cr", b"posix:be\nStatus:\x00AVAILABLE\r\r\nStatus: AVAILABLE\r\n")
    return n + 5


# ---- rdap ------------------------------------------------------------------

def rdap():
    out = out_dir("rdap")
    record = (b'{"objectClassName":"domain","handle":"2336799_DOMAIN_COM-VRSN","ldhName":"EXAMPLE.COM",'
              b'"status":["client delete prohibited","client transfer prohibited","active"],'
              b'"events":[{"eventAction":"registration","eventDate":"1995-08-14T04:00:00Z"}],'
              b'"nameservers":[{"objectClassName":"nameserver","ldhName":"A.IANA-SERVERS.NET"}],'
              b'"rdapConformance":["rdap_level_0"]}')
    seeds = {
        # byte 0: 0 200, 1 404, 2 429, 3 503, 4 500, 5 another code (bytes 1-2 modulo 1000)
        "200_registered": (0, 0, record),
        "200_reserved": (0, 0, b'{"objectClassName":"domain","ldhName":"nic.example","status":["reserved"]}'),
        "200_blocked_upper": (0, 0, b'{"ldhName":"x.example","status":["Blocked","inactive"]}'),
        "200_redemption": (0, 0, b'{"ldhName":"gone.example","status":["redemption period","inactive"]}'),
        "200_pending_delete": (0, 0, b'{"status":["pending delete","serverHold"]}'),
        "200_reserved_then_pending": (0, 0, b'{"status":["reserved","pending restore"]}'),
        "200_status_not_a_list": (0, 0, b'{"status":"reserved"}'),
        "200_status_not_strings": (0, 0, b'{"status":[1,null,{"a":"reserved"},["reserved"]]}'),
        "200_not_json": (0, 0, b"<html><body>Domain found</body></html>"),
        "200_empty": (0, 0, b""),
        "200_nul": (0, 0, b'{"status":["reserved\\u0000"]}'),
        "200_deep": (0, 0, b"[" * 3000 + b"]" * 3000),
        "404_error": (1, 0, b'{"errorCode":404,"title":"Not Found","description":["The domain is not registered"]}'),
        "404_empty": (1, 0, b""),
        "404_says_active": (1, 0, b'{"status":["active"]}'),
        "429_retry_after": (2, 30, b'{"errorCode":429,"title":"Too Many Requests"}'),
        "503_html": (3, 120, b"<html>Service Unavailable</html>"),
        "500": (4, 0, b'{"errorCode":500}'),
        "other_302": (5, 302, b""),
        "other_400": (5, 400, b'{"errorCode":400,"title":"Bad Request"}'),
        "other_0": (5, 0, b""),
    }
    for name, (sel, number, body) in seeds.items():
        write(out, name, bytes([sel, number >> 8, number & 0xFF]) + body)
    return len(seeds)


# ---- config ----------------------------------------------------------------

def table_part(names):
    """registries.yaml with its header and the entries named, in file order,
    and the entries that define the anchors these use."""
    text = open(os.path.join(TOP, "config", "registries.yaml")).read()
    body = text.split("\nregistries:\n", 1)[1]
    blocks = [b.strip("\n") for b in re.split(r"\n(?=  [a-z0-9_-]+:\n)", "\n" + body)]
    name_of = {b: re.match(r"\s*([a-z0-9_-]+):", b).group(1) for b in blocks if re.match(r"\s*[a-z0-9_-]+:", b)}
    named = [b for b in blocks if name_of.get(b) in names]
    used = set(re.findall(r"\*([a-z_]+)", "".join(named)))
    keep = [b for b in blocks if b in named or used & set(re.findall(r"&([a-z_]+)", b))]
    return "# part of registries.yaml\nregistries:\n\n" + "\n\n".join(keep) + "\n"


def bootstrap(services):
    import json
    return json.dumps({"description": "part of the IANA bootstrap", "publication": "2026-06-26T18:00:02Z",
                       "services": services, "version": "1.0"}, indent=1) + "\n"


def files(main, **others):
    """One input of several files: NAME_EXT=body is the file NAME.EXT."""
    s = main
    for name, body in others.items():
        base, ext = name.rsplit("_", 1)
        s = s.rstrip("\n") + "\n#file: " + base.replace("_", "-") + "." + ext + "\n" + body
    return s.encode()


MINI = """registries:
  test:
    tlds: [test, co.test]
    protocol: whois
    host: whois.nic.test
    patterns:
      available: ['^No match for']
      registered: ['^Domain Name:\\s*\\S', '\\bpendingDelete\\b']
      rate_limited: ['limit exceeded']
"""


def config():
    out = out_dir("config")
    shipped = open(os.path.join(TOP, "config", "availd.yaml")).read()
    part = table_part({"verisign-com", "verisign-net", "pir", "google", "nominet-uk", "denic", "eurid",
                       "dnsbelgium", "sidn", "afnic"})
    boot = bootstrap([[["com"], ["https://rdap.verisign.com/com/v1/"]],
                      [["org", "xn--c1avg"], ["http://rdap.pir.example/", "https://rdap.publicinterestregistry.org/rdap/"]],
                      [["app", "dev", "page"], ["https://pubapi.registry.google/rdap/"]],
                      [["nl"], ["https://rdap.sidn.nl/"]], [["fr"], ["https://rdap.nic.fr/"]]])
    servers = "# part of whois-servers.txt\nde whois.denic.de\nuk whois.nic.uk\nco.uk whois.nic.uk\nxyz -\nlk whois.nic.lk\nar whois.nic.ar\n"
    seeds = {
        "shipped": files(shipped, registries_yaml=part, rdap_bootstrap_json=boot, whois_servers_txt=servers),
        "shipped_alone": shipped.encode(),
        "shipped_no_bootstrap": files(shipped, registries_yaml=part, whois_servers_txt=servers),
        "empty": b"",
        "mini": MINI.encode(),
        "mini_posix": (MINI + "    pattern_syntax: posix\n").encode(),
        "generic": (MINI.replace("    patterns:\n      available: ['^No match for']\n", "    reading: generic\n"
                                 "    dns_precheck: true\n    dns_servers: ['192.0.2.1', '192.0.2.2:5353']\n"
                                 "    patterns:\n      available: []\n")).encode(),
        "das_label": b"registries:\n  das:\n    tlds: [eu]\n    protocol: das\n    host: das.eu\n"
                     b"    query: \"get 1.0 %l\\r\\n\"\n    rate_limit: {queries: 120, period_s: 60}\n"
                     b"    patterns: {available: ['^Status:\\s*AVAILABLE'], error: ['RC = -1']}\n",
        "rdap_by_bootstrap": files("registries:\n  r:\n    tlds: [nl]\n    protocol: rdap\n",
                                   rdap_bootstrap_json=boot),
        "rdap_bootstrap_elsewhere": files("rdap_bootstrap: ./other.json\nregistries:\n  r:\n    tlds: [fr]\n"
                                          "    protocol: rdap\n", other_json=boot),
        "rdap_no_bootstrap": b"registries:\n  r:\n    tlds: [nl]\n    protocol: rdap\n",
        "rdap_bad_bootstrap": files("registries:\n  r:\n    tlds: [nl]\n    protocol: rdap\n",
                                    rdap_bootstrap_json='{"services": [["nl"], "x"]}\n'),
        "rdap_bad_url": b"registries:\n  r:\n    tlds: [nl]\n    protocol: rdap\n    base_url: ftp://x/\n",
        "bad_pattern": (MINI + "      reserved: ['(unclosed']\n").encode(),
        "tld_twice": (MINI + "  other:\n    tlds: [TEST]\n    protocol: whois\n    host: h\n").encode(),
        "bad_tld": MINI.replace("co.test", ".-x..y").encode(),
        "query_two_names": (MINI + "    query: \"%s %l\\r\\n\"\n").encode(),
        "query_stray_percent": (MINI + "    query: \"%d %s\"\n").encode(),
        "include_self": b"include: availd.yaml\n",
        "include_chain": files("include: [a.yaml, missing.yaml]\n", a_yaml="include: b.yaml\n",
                               b_yaml=MINI),
        "include_outside": b"include: [/etc/hostname, ../availd.yaml, /dev/stdin]\n",
        "bootstrap_outside": b"rdap_bootstrap: /dev/zero\nregistries:\n  r:\n    tlds: [nl]\n    protocol: rdap\n",
        "two_documents": b"intake: {deadline_ms: 5}\n---\nintake: {deadline_ms: 6}\n",
        "yaml_error": b"intake: [deadline_ms: 5\n  - }\n",
        "anchors": b"process: &p {log_level: 3, drain_ms: 10}\nintake: *p\ncache: *p\n",
        "everything": b"""runtime_dir: run
state_dir: /var/lib/x
endpoints:
  intake_pull: tcp://127.0.0.1:5555
  intake_router: "ipc://@abstract"
  intake_gateway: ""
  control: ipc://ctl-%s.sock
process:
  log: [stderr, syslog, journald, /var/log/availd.log]
  log_level: 4
  daemonize: yes
  cidr_allow: [127.0.0.0/8, "::1/128", 10.1.2.3]
  cidr_deny: 192.168.0.0/16
  max_requests: 18446744073709551615
  pid_file: x.pid
  user: availd
  group: availd
intake:
  deadline_ms: 3600000
  gateway_clients: 1
  journal: ""
  journal_sync: on
  log: stderr
dispatcher: {heartbeat_ms: 10, heartbeat_misses: 2, max_attempts: 100}
querier: {log_level: 0}
cache: {path: /tmp/c, map_size_mb: 1, max_entries: 1, sweep_interval_s: 86400, batch_max: 16384}
errors: {retention_s: 4294967295, retention_count: 1}
""",
        "bad_values": b"intake: {deadline_ms: -1}\nprocess: {cidr_allow: [300.1.1.1/8]}\n",
        "bad_endpoint": b"endpoints: {control: ipc://no-template.sock}\n",
        "unknown_key": b"intake: {deadline: 5}\n",
        # Regressions: a key given twice once made validation read past the
        # first list's items (heap-buffer-overflow in validate_registry).
        "duplicate_key": ("registries:\n  r:\n    tlds: [a]\n    protocol: whois\n    host: whois.nic.a\n"
                          "    tlds: [%s, \"bad&tld\"]\n" % ", ".join("t%d" % i for i in range(20))).encode(),
        "duplicate_pattern_key": ("registries:\n  r:\n    tlds: [a]\n    protocol: whois\n    host: whois.nic.a\n"
                                  "    patterns:\n      available: ['x']\n      available: [%s, '(']\n"
                                  % ", ".join("'p%d'" % i for i in range(20))).encode(),
        "groups": files(shipped.replace("include: registries.yaml", "include: t.yaml"), t_yaml=MINI,
                        whois_servers_txt=servers, rdap_bootstrap_json=boot),
    }
    for name, data in seeds.items():
        write(out, name, data)
    return len(seeds)


# ---- gateway ---------------------------------------------------------------

def gateway():
    out = out_dir("gateway")
    seeds = {
        "name": (0, b"example.com\r\n"),
        "name_in_bytes": (1, b"example.com\r\n"),
        "name_in_threes": (3, b"denic.de\n"),
        "blanks": (0, " \t bücher.de \t\r\n".encode()),
        "upper_root_dot": (7, b"EXAMPLE.CO.UK.\r\n"),
        "a_label": (0, b"xn--bcher-kva.de\n"),
        "subdomain": (0, b"www.example.com\n"),
        "public_suffix": (0, b"co.uk\n"),
        "unsupported": (0, b"example.invalid-tld-zz\n"),
        "bad_label": (0, b"-a..com\n"),
        "nul": (0, b"exa\x00mple.com\n"),
        "cr_inside": (0, b"exa\rmple.com\r\n"),
        "empty": (0, b"\r\n"),
        "blank_line": (2, b"   \t\r\n"),
        "two_lines": (0, b"first.com\nsecond.com\n"),
        "no_line_end": (0, b"example.com"),
        "too_long": (0, b"a" * 1100),
        "just_fits": (200, b"a" * 1019 + b".com\n"),
        "long_label": (0, b"a" * 64 + b".com\n"),
        "whois_flags": (0, b"-T dn,ace example.de\r\n"),
    }
    for name, (chunk, data) in seeds.items():
        write(out, name, bytes([chunk]) + data)
    return len(seeds)


TARGETS = {"proto": proto, "whois": whois, "rdap": rdap, "config": config, "gateway": gateway}

if __name__ == "__main__":
    for t in sys.argv[1:] or TARGETS:
        print("wrote", TARGETS[t](), "seeds to", os.path.join(HERE, "corpus", t))
