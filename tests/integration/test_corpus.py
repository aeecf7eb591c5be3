"""The default registry table against real registry answers.

../shared/fixtures/whois/SERVER/TLD/*.txt holds what 180 registry whois
servers really answered (see its README). Every file is served by the
loopback fake registry to the real querier configured with the entry that
config/registries.yaml gives the name's TLD (forced to whois on loopback: the
answers are whois answers), and asked through intake: status_available must
come back available, status_registered registered, status_reserved reserved
(or registered), response_throttled unknown/rate_limited with the querier
backing off. A wrong `available` always fails; a pair whose registry is in
the table must be fully right unless ALLOWED says why it cannot be.

Also here: availctl classify (the same verdict without any network), the
shipped availd.yaml + registries.yaml loading, and rdap-bootstrap.json
covering every RDAP entry. `pytest -s` shows the score table; the env
AVAILD_CORPUS_REPORT names a file for it as JSON.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

import harness
from harness import FakeRegistry, binary

SOURCE_DIR = os.path.abspath(harness.SOURCE_DIR)
CONFIG = os.path.join(SOURCE_DIR, "config", "availd.yaml")
TABLE = os.path.join(SOURCE_DIR, "config", "registries.yaml")
BOOTSTRAP = os.path.join(SOURCE_DIR, "config", "rdap-bootstrap.json")
FIXTURES = os.environ.get("AVAILD_FIXTURES",
                          os.path.normpath(os.path.join(SOURCE_DIR, "..", "shared", "fixtures", "whois")))

# What each file must be answered, as the fixtures README says.
EXPECTED = {
    "status_available.txt": ("available",),
    "status_registered.txt": ("registered",),
    "status_reserved.txt": ("reserved", "registered"),
    "response_throttled.txt": ("unknown",),   # and reason rate_limited
}
TAG = {"status_available.txt": "a", "status_registered.txt": "r", "status_reserved.txt": "s",
       "response_throttled.txt": "t"}

# Pairs whose folder does not name the suffix their answers are about.
SUFFIX = {
    "whois.aero": "aero",               # no TLD level
    "whois.nic.priv.at/at": "priv.at",  # the priv.at registry, filed under at
    "whois.nic.ec/ex": "ec",            # filed as "ex"
    "whois.ua/ua/uaepp": "ua",          # one level more
    "whois.nic.uk/uk": "co.uk",         # its answers are about co.uk names
}

# Pairs whose servers are not registries in the table, and why. Reported,
# not failed: availd asks registries, and these are not (or no longer) one.
NOT_REGISTRIES = {
    "whois.1und1.info": "a registrar's whois (1&1), not a registry's",
    "whois.ascio.com": "a registrar's whois (Ascio), not a registry's",
    "whois.enom.com": "a registrar's whois (eNom), not a registry's",
    "whois.gandi.net": "a registrar's whois (Gandi), not a registry's",
    "whois.networksolutions.com": "a registrar's whois (Network Solutions), not a registry's",
    "whois.pairnic.com": "a registrar's whois (pairNIC), not a registry's",
    "whois.udag.net": "a registrar's whois (united-domains), not a registry's",
    "whois.wildwestdomains.com": "a registrar's whois (Wild West Domains), not a registry's",
    "whois.smallregistry.net": "a registry of third-level names under .fr (chirurgiens-dentistes.fr...) whose "
                               "zone list could not be verified; such names route as subdomains of .fr",
    "whois.dot.cf/cf": ".cf has no whois server known to IANA or Debian whois (Freenom's registry is gone)",
}

# Files of pairs in the table that cannot get the status their name says,
# with the status they do get and why that one is right.
ALLOWED = {
    ("whois.nic.lk/xn--fzc2c9e2c", "status_available.txt"):
        ("unknown", "the file is empty (fixtures README): an empty reply can only be unknown"),
    ("whois.nic.lk/xn--xkc2al3hye2a", "status_available.txt"):
        ("unknown", "the file is empty (fixtures README): an empty reply can only be unknown"),
    ("whois.nic.wed/wed", "status_available.txt"):
        ("reserved", "the answer says 'Prohibited String - Object Cannot Be Registered' and 'can not be "
                     "registered': the name is not available, whatever the file is called"),
    ("whois.nic.bo/bo", "status_available.txt"):
        ("unknown", "the answer is an error ('solo acepta consultas con dominios .bo'), not a statement "
                    "that the name is free"),
    ("whois.nic.sl/sl", "status_available.txt"):
        ("unknown", "'Domain not found, marked private, or error in your query.' cannot tell a free name "
                    "from a private one or a bad query"),
}

# Replies of a name in redemption or pending delete: never available.
REDEMPTION = {
    "redemption": "Domain Name: {name}\r\nDomain Status: redemptionPeriod https://icann.org/epp#redemptionPeriod\r\n",
    "pendingdelete": "Domain Name: {name}\r\nDomain Status: pendingDelete https://icann.org/epp#pendingDelete\r\n",
    "quarantine": "Domain: {name}\r\nStatus: QUARANTINE\r\n",
}

BACKOFF_S = 30   # the test's backoff: the check after a throttled answer falls inside it


def load_table():
    with open(TABLE) as f:
        return yaml.safe_load(f)["registries"]


def routes(table):
    """suffix -> registry name, as the dispatcher builds it."""
    by_suffix = {}
    for name, entry in table.items():
        for tld in entry["tlds"]:
            by_suffix[tld.lower().lstrip(".")] = name
    return by_suffix


def route(by_suffix, name):
    """The registry of a name as av_names_route picks it (longest suffix;
    one label under it), or None."""
    labels = name.split(".")
    for i in range(1, len(labels)):
        suffix = ".".join(labels[i:])
        if suffix in by_suffix:
            return by_suffix[suffix] if i == 1 else None
    return None


def discover_pairs():
    """The server/TLD folders that hold both an available and a registered
    answer, as relative paths."""
    pairs = []
    for root, dirs, files in os.walk(FIXTURES):
        dirs.sort()
        if "status_available.txt" in files and "status_registered.txt" in files:
            pairs.append(os.path.relpath(root, FIXTURES))
    return sorted(pairs)


def suffix_of(pair):
    if pair in SUFFIX:
        return SUFFIX[pair]
    parts = pair.split("/")
    return parts[-1] if len(parts) > 1 else None


def loopback_entry(entry, port):
    """A table entry as the test runs it: whois on the fake registry, every
    pattern as in the table; no RDAP URL, rate limit or DNS pre-check (the
    test is about patterns)."""
    e = json.loads(json.dumps(entry))   # no shared YAML anchors in the written config
    for key in ("base_url", "rate_limit", "dns_precheck", "dns_servers", "ca_file"):
        e.pop(key, None)
    e.update(protocol="whois", host="127.0.0.1", port=port, query="%s\r\n", timeout_ms=5000,
             backoff_s=BACKOFF_S)
    return e


def start_parallel(cluster, kind, instances, timeout=60.0):
    """Starts many daemons at once and waits until each said READY=1."""
    daemons = [cluster.daemon(kind, i) for i in instances]
    for d in daemons:
        d.start(wait_ready=False)
    deadline = time.monotonic() + timeout
    for d in daemons:
        while not d.notify.seen("READY=1"):
            if d.proc.poll() is not None:
                raise AssertionError(f"{d.ident} exited with {d.proc.returncode}:\n{d.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{d.ident} not ready within {timeout}s:\n{d.log()}")
            time.sleep(0.02)
    return daemons


def ask_all(cluster, names, timeout=120.0):
    answers = {}
    for off in range(0, len(names), 1000):
        batch = names[off:off + 1000]
        got = cluster.ask(batch, timeout=timeout, deadline_ms=60000)
        if isinstance(got, dict):
            got = [got]
        for a in got:
            answers[a.get("query") or a["name"]] = a
    missing = [n for n in names if n not in answers]
    assert not missing, f"no answer for {missing[:5]}"
    return answers


@pytest.fixture(scope="module")
def corpus(request):
    """Runs the whole plan once: every corpus file, the redemption replies,
    then the throttled answers and a check during the backoff they caused."""
    if not os.path.isdir(FIXTURES):
        pytest.fail(f"no fixtures at {FIXTURES}: ../shared must be beside the checkout (or AVAILD_FIXTURES set)")
    table = load_table()
    by_suffix = routes(table)
    pairs = discover_pairs()
    work = tempfile.mkdtemp(prefix="av-corpus-", dir="/tmp")
    files_dir = os.path.join(work, "fixtures")
    os.makedirs(files_dir)

    plan = []            # (pair, file, name, registry)
    outside = []         # pairs whose registry is not in the table
    for n, pair in enumerate(pairs):
        suffix = suffix_of(pair)
        registry = route(by_suffix, f"x.{suffix}") if suffix else None
        if not registry:
            outside.append(pair)
            continue
        for f in sorted(os.listdir(os.path.join(FIXTURES, pair))):
            if f not in EXPECTED:
                continue
            name = f"corpus-{n}-{TAG[f]}.{suffix}"
            shutil.copyfile(os.path.join(FIXTURES, pair, f), os.path.join(files_dir, name))
            plan.append((pair, f, name, registry))
    redemption = []      # (registry, kind, name)
    for registry, entry in table.items():
        suffix = entry["tlds"][0]
        for kind, text in REDEMPTION.items():
            name = f"{kind}-{len(redemption)}.{suffix}"
            with open(os.path.join(files_dir, name), "w") as f:
                f.write(text.format(name=name))
            redemption.append((registry, kind, name))
    # After a throttled answer the querier backs off: a name asked then is
    # answered unknown/rate_limited without the registry being asked.
    throttled = [(pair, name, registry) for pair, f, name, registry in plan if f == "response_throttled.txt"]
    during_backoff = []
    for pair, name, registry in throttled:
        later = "later-" + name
        shutil.copyfile(os.path.join(FIXTURES, pair, "status_available.txt"), os.path.join(files_dir, later))
        during_backoff.append((pair, later, registry))

    fake = FakeRegistry(fixtures=files_dir)
    cluster = harness.Cluster({
        "intake": {"deadline_ms": 60000},
        "dispatcher": {"heartbeat_ms": 1000, "heartbeat_misses": 5},
        "registries": {name: loopback_entry(entry, fake.port) for name, entry in table.items()},
    })
    failed = True
    try:
        t0 = time.monotonic()
        cluster.start("errors")
        cluster.start("cache")
        cluster.start("dispatcher")
        start_parallel(cluster, "querier", list(table))
        cluster.start("intake")
        started_s = time.monotonic() - t0
        first = [name for pair, f, name, registry in plan if f != "response_throttled.txt"]
        first += [name for registry, kind, name in redemption]
        answers = ask_all(cluster, first)
        answers.update(ask_all(cluster, [name for pair, name, registry in throttled]))
        fake.reset()
        answers.update(ask_all(cluster, [name for pair, name, registry in during_backoff]))
        asked_during_backoff = fake.stats()["names"]
        result = {
            "table": table, "pairs": pairs, "plan": plan, "outside": outside, "answers": answers,
            "redemption": redemption, "during_backoff": during_backoff,
            "asked_during_backoff": asked_during_backoff, "started_s": started_s,
            "elapsed_s": time.monotonic() - t0,
        }
        yield result
        failed = any(getattr(item, "rep_call", None) is not None and item.rep_call.failed
                     for item in request.session.items if item.module is request.module)
    finally:
        cluster.close()
        fake.close()
        from conftest import SANITIZER_MARKERS
        reports = [d.ident for d in cluster.daemons if any(m in d.log() for m in SANITIZER_MARKERS)]
        if failed or reports:
            for d in cluster.daemons:
                if reports and d.ident not in reports:
                    continue
                sys.stderr.write(f"\n----- log of {d.ident} -----\n{d.log()[-4000:]}\n")
        else:
            shutil.rmtree(cluster.dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        assert not reports, f"sanitizer reports in the logs of {', '.join(reports)}"


def verdict_ok(f, answer):
    if f == "response_throttled.txt":
        return answer["status"] == "unknown" and answer.get("reason") == "rate_limited"
    return answer["status"] in EXPECTED[f]


def score(corpus):
    """Per pair: its registry, each file's answer and whether it is right."""
    rows = {}
    for pair in corpus["pairs"]:
        rows[pair] = {"pair": pair, "server": pair.split("/")[0], "registry": None, "files": {},
                      "right": False, "allowed": False}
    for pair, f, name, registry in corpus["plan"]:
        a = corpus["answers"][name]
        row = rows[pair]
        row["registry"] = registry
        allowed = ALLOWED.get((pair, f))
        row["files"][f] = {"status": a["status"], "reason": a.get("reason"), "ok": verdict_ok(f, a),
                           "allowed": allowed[1] if allowed else None}
    for row in rows.values():
        row["right"] = bool(row["files"]) and all(x["ok"] for x in row["files"].values())
        row["allowed"] = not row["right"] and bool(row["files"]) and all(
            x["ok"] or x["allowed"] for x in row["files"].values())
    return rows


def report(corpus, rows):
    """The score table (pytest -s shows it) and, with AVAILD_CORPUS_REPORT,
    the same as JSON."""
    right = sum(r["right"] for r in rows.values())
    in_table = sum(r["registry"] is not None for r in rows.values())
    servers = {}
    for r in rows.values():
        s = servers.setdefault(r["server"], {"pairs": 0, "right": 0, "in_table": 0})
        s["pairs"] += 1
        s["right"] += r["right"]
        s["in_table"] += r["registry"] is not None
    lines = [f"\nreal-answer corpus: {right} of {len(rows)} pairs fully right; {in_table} have a registry in the "
             f"table; {len(corpus['outside'])} do not (started in {corpus['started_s']:.1f}s, all asked in "
             f"{corpus['elapsed_s']:.1f}s)",
             f"{'server/tld':42} {'registry':24} {'avail':12} {'regist':12} {'reserv':12} {'thrott':14} ok"]
    short = {"status_available.txt": "avail", "status_registered.txt": "regist",
             "status_reserved.txt": "reserv", "response_throttled.txt": "thrott"}
    for pair in sorted(rows):
        r = rows[pair]
        if r["registry"] is None:
            lines.append(f"{pair:42} {'-':24} not in the table: {NOT_REGISTRIES.get(pair, 'no registry')}")
            continue
        cells = {}
        for f, x in r["files"].items():
            text = x["status"] if x["status"] != "unknown" else f"unk/{(x['reason'] or '')[:7]}"
            cells[short[f]] = ("" if x["ok"] else "!") + text
        mark = "yes" if r["right"] else ("allowed" if r["allowed"] else "NO")
        lines.append(f"{pair:42} {r['registry']:24} {cells.get('avail', '-'):12} {cells.get('regist', '-'):12} "
                     f"{cells.get('reserv', '-'):12} {cells.get('thrott', '-'):14} {mark}")
    lines.append("per server: " + ", ".join(f"{s} {v['right']}/{v['pairs']}" for s, v in sorted(servers.items())))
    print("\n".join(lines))
    path = os.environ.get("AVAILD_CORPUS_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"pairs_total": len(rows), "pairs_fully_right": right, "pairs_in_table": in_table,
                       "servers": servers, "pairs": list(rows.values()),
                       "allowed": {f"{p}:{f}": v for (p, f), v in ALLOWED.items()},
                       "not_in_table": {p: NOT_REGISTRIES.get(p, "no registry") for p in corpus["outside"]}},
                      f, indent=1, sort_keys=True)


def test_no_real_answer_is_ever_a_wrong_available(corpus):
    wrong = [(pair, f, corpus["answers"][name]["status"]) for pair, f, name, registry in corpus["plan"]
             if f != "status_available.txt" and corpus["answers"][name]["status"] == "available"]
    wrong += [(pair, f, a) for (pair, f), (a, why) in ALLOWED.items() if a == "available"]
    assert not wrong, f"wrong available: {wrong}"


def test_every_real_answer_of_a_tabled_registry_gets_the_status_its_file_names(corpus):
    rows = score(corpus)
    report(corpus, rows)
    assert len(rows) == 180, f"the corpus has {len(rows)} pairs, its README says 180"
    bad, stale = [], []
    for pair, f, name, registry in corpus["plan"]:
        a = corpus["answers"][name]
        allowed = ALLOWED.get((pair, f))
        if allowed:
            if a["status"] != allowed[0]:
                stale.append(f"{pair} {f}: allowlisted as {allowed[0]}, answered {a['status']}")
            continue
        if not verdict_ok(f, a):
            bad.append(f"{pair} {f} [{registry}]: {a['status']} {a.get('reason') or ''}")
    assert not bad, "answers not as their files say:\n" + "\n".join(bad)
    not_asked = [name for pair, f, name, registry in corpus["plan"] if corpus["answers"][name].get("source") != "whois"]
    assert not not_asked, f"answered without asking the (fake) registry: {not_asked[:5]}"
    assert not stale, "ALLOWED is out of date:\n" + "\n".join(stale)
    # The table should cover most of the corpus: only NOT_REGISTRIES stay out.
    assert sorted(corpus["outside"]) == sorted(NOT_REGISTRIES), corpus["outside"]


def test_a_throttled_registry_is_backed_off(corpus):
    assert corpus["during_backoff"], "the corpus has throttled answers"
    for pair, name, registry in corpus["during_backoff"]:
        a = corpus["answers"][name]
        assert (a["status"], a.get("reason")) == ("unknown", "rate_limited"), (pair, a)
    assert not corpus["asked_during_backoff"], \
        f"registries asked during their backoff: {corpus['asked_during_backoff']}"


def test_a_name_in_redemption_or_pending_delete_is_never_available(corpus):
    wrong = []
    for registry, kind, name in corpus["redemption"]:
        status = corpus["answers"][name]["status"]
        if status == "available" or (kind != "quarantine" and status not in ("registered", "reserved")):
            wrong.append(f"{registry} {kind}: {status}")
    assert not wrong, "redemption / pending delete replies:\n" + "\n".join(wrong)


# ---- the table as a file -----------------------------------------------------

def pcre_like(pattern):
    """Python's re reading a pattern as the classifier's PCRE2 does
    (case-insensitive, multi-line); replies get their CR LF made LF."""
    return re.compile(pattern.encode(), re.I | re.M)


def test_no_available_pattern_matches_any_registered_or_reserved_answer():
    # Across registries: an `available` pattern that fits a taken name of
    # ANY registry is too loose to trust for its own. (Python's re stands in
    # for PCRE2 here; the corpus test above runs the real classifier.)
    if not os.path.isdir(FIXTURES):
        pytest.fail(f"no fixtures at {FIXTURES}: ../shared must be beside the checkout (or AVAILD_FIXTURES set)")
    taken = {}
    for root, dirs, files in os.walk(FIXTURES):
        for f in files:
            if f in ("status_registered.txt", "status_reserved.txt"):
                with open(os.path.join(root, f), "rb") as fh:
                    taken[os.path.relpath(os.path.join(root, f), FIXTURES)] = \
                        fh.read().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    hits = []
    for name, entry in load_table().items():
        for pattern in entry["patterns"].get("available") or []:
            rx = pcre_like(pattern)
            hits += [f"{name}: {pattern!r} matches {path}" for path, text in taken.items() if rx.search(text)]
    assert not hits, "\n".join(hits)


def test_the_shipped_configuration_loads_with_the_registry_table():
    r = subprocess.run([binary("availctl"), "config", "check", CONFIG], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    table = load_table()
    assert f"({len(table)} registries, " in r.stdout, r.stdout
    tlds = [t for e in table.values() for t in e["tlds"]]
    assert len(tlds) == len(set(tlds)), "a TLD served by two registries"
    assert all(isinstance(t, str) for t in tlds), "a TLD YAML read as something else (quote no, on, yes...)"
    top = {t for t in tlds if "." not in t}
    assert len(top) >= 60, len(top)
    for must in ("com net org info biz io co me app dev xyz online shop de uk co.uk eu nl fr it es ch at be se "
                 "dk no pl cz ca au nz jp br in cn ru").split():
        assert must in tlds, must
    for name, e in table.items():
        assert re.fullmatch(r"[a-z0-9_-]+", name), name
        assert e["protocol"] in ("whois", "das", "rdap"), name
        assert e.get("host"), f"{name}: no host (an RDAP entry keeps its port-43 host)"
        assert re.search(r"%[sl]", e.get("query", "%s")), name
        if e["protocol"] == "rdap":
            assert e["base_url"].startswith(("https://", "http://")), name


def test_the_rdap_bootstrap_parses_and_gives_every_rdap_entry_its_base_url():
    with open(BOOTSTRAP) as f:
        bootstrap = json.load(f)
    assert set(bootstrap) == {"description", "publication", "services", "version"}, set(bootstrap)
    assert bootstrap["version"] == "1.0" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", bootstrap["publication"])
    urls_of = {}
    for tlds, urls in bootstrap["services"]:
        assert tlds and urls and all(u.startswith(("https://", "http://")) and u.endswith("/") for u in urls)
        for t in tlds:
            assert t not in urls_of, f"{t} twice in the bootstrap"
            urls_of[t] = urls
    assert len(urls_of) > 1000
    wrong = []
    for name, e in load_table().items():
        if e["protocol"] != "rdap":
            # RDAP is preferred: an entry that is not RDAP has no RDAP service in the bootstrap.
            wrong += [f"{name}: {t} has RDAP {urls_of[t]}" for t in e["tlds"] if t in urls_of]
            continue
        for t in e["tlds"]:   # RFC 9224: the longest matching label sequence
            labels = t.split(".")
            urls = next((urls_of[".".join(labels[i:])] for i in range(len(labels))
                         if ".".join(labels[i:]) in urls_of), None)
            if not urls or e["base_url"] not in urls:
                wrong.append(f"{name}: {t} -> {urls}, entry says {e['base_url']}")
    assert not wrong, "\n".join(wrong)


# ---- availctl classify ---------------------------------------------------------

def classify(*args, stdin=None, config=CONFIG):
    return subprocess.run([binary("availctl"), "-c", config, "classify", *args], input=stdin,
                          capture_output=True, timeout=30)


def fixture(path):
    return os.path.join(FIXTURES, path)


@pytest.fixture
def need_fixtures():
    if not os.path.isdir(FIXTURES):
        pytest.fail(f"no fixtures at {FIXTURES}: ../shared must be beside the checkout (or AVAILD_FIXTURES set)")


def test_classify_explains_a_verdict_from_a_file(need_fixtures):
    r = classify("Example.DE", fixture("whois.denic.de/de/status_available.txt"))
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    lines = out.splitlines()
    assert lines[0] == "example.de available"
    assert "registry: denic (whois whois.denic.de:43)" in out
    assert "pattern:  available '^Status:\\s*free\\s*$'" in out
    r = classify("bücher.de", fixture("whois.denic.de/de/status_registered.txt"))
    assert r.returncode == 0 and r.stdout.decode().startswith("xn--bcher-kva.de registered\n")
    r = classify("example.de", fixture("whois.denic.de/de/response_throttled.txt"))
    out = r.stdout.decode()
    assert r.returncode == 1 and out.startswith("example.de unknown rate_limited\n") and "rate_limited '" in out


def test_classify_reads_stdin_and_says_when_nothing_matched(need_fixtures):
    with open(fixture("whois.verisign-grs.com/com/status_registered.txt"), "rb") as f:
        r = classify("google.com", stdin=f.read())
    assert r.returncode == 0 and r.stdout.decode().startswith("google.com registered\n"), r.stdout
    r = classify("google.com", "-", stdin=b"Hello, this is not a whois answer\r\n")
    out = r.stdout.decode()
    assert r.returncode == 1 and out.startswith("google.com unknown unparseable\n") and "no pattern matched" in out
    r = classify("google.com", stdin=b"")
    assert r.returncode == 1 and r.stdout.decode().startswith("google.com unknown empty_reply\n")


def test_classify_json_is_one_object_for_scripts(need_fixtures):
    r = classify("--json", "example.eu", fixture("whois.eu/eu/status_available.txt"))
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["name"] == "example.eu" and j["status"] == "available" and j["reason"] is None
    assert j["registry"] == "eurid" and j["protocol"] == "das" and j["kind"] == "available"
    assert j["pattern"] and j["bytes"] == os.path.getsize(fixture("whois.eu/eu/status_available.txt"))
    assert j["truncated"] is False
    r = classify("example.eu", "--json", stdin=b"garbage\n")
    j = json.loads(r.stdout)
    assert r.returncode == 1 and (j["status"], j["reason"], j["pattern"], j["kind"]) == \
        ("unknown", "unparseable", None, None)


def test_classify_refuses_names_no_registry_would_get():
    r = classify("bad_name.de", stdin=b"Status: free\n")
    assert r.returncode == 1 and r.stdout.decode().startswith("bad_name.de invalid bad_character\n")
    r = classify("www.example.de", stdin=b"Status: free\n")
    assert r.returncode == 1 and r.stdout.decode().startswith("www.example.de invalid subdomain\n")
    r = classify("example.invalidtld", stdin=b"Status: free\n")
    assert r.returncode == 1 and r.stdout.decode().startswith("example.invalidtld unknown unsupported_tld\n")
    j = json.loads(classify("--json", "example.invalidtld", stdin=b"").stdout)
    assert (j["status"], j["reason"], j["registry"]) == ("unknown", "unsupported_tld", None)


def test_classify_usage_and_read_errors_exit_2():
    assert classify().returncode == 2
    assert classify("a.de", "b", "c").returncode == 2
    assert classify("--bogus", "a.de").returncode == 2
    r = classify("example.de", "/nonexistent/reply.txt")
    assert r.returncode == 2 and b"/nonexistent/reply.txt" in r.stderr


def test_classify_reads_no_more_than_max_reply_bytes(tmp_path):
    # As the querier: past max_reply_bytes nothing is read, so words there
    # decide nothing, and the operator is told the reply was cut.
    config = tmp_path / "availd.yaml"
    config.write_text(yaml.safe_dump({"registries": {"small": {
        "tlds": ["test"], "protocol": "whois", "host": "127.0.0.1", "max_reply_bytes": 64,
        "patterns": {"available": ["^No match for"], "registered": ["^Domain Name:"]}}}}))
    reply = b"% " + b"x" * 70 + b"\r\nNo match for \"a.test\".\r\n"
    r = classify("a.test", stdin=reply, config=str(config))
    out = r.stdout.decode()
    assert r.returncode == 1 and out.startswith("a.test unknown unparseable\n"), out
    assert "64 bytes, cut at max_reply_bytes 64" in out
    j = json.loads(classify("--json", "a.test", stdin=reply, config=str(config)).stdout)
    assert j["truncated"] is True and j["bytes"] == 64
    r = classify("a.test", stdin=b"No match for \"a.test\".\r\n", config=str(config))
    assert r.returncode == 0 and r.stdout.decode().startswith("a.test available\n")
