"""Every TLD answers: with the shipped configuration every TLD of the
Public Suffix List's ICANN section has a route (its explicit entry, an RDAP
service of the IANA bootstrap, or its whois server), or is one of the few
with no public service at all, which README lists; and names under public
suffixes are routed by the list, not taken for subdomains."""
import json
import os
import re
import subprocess

from harness import FakeRegistry, binary, whois_registry

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = os.path.join(ROOT, "config", "availd.yaml")
PSL = "/usr/share/publicsuffix/public_suffix_list.dat"


def icann_tlds():
    tlds, section = [], False
    with open(PSL, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if "===BEGIN ICANN DOMAINS===" in line:
                section = True
            elif "===END ICANN DOMAINS===" in line:
                section = False
            elif section and line and not line.startswith(("//", "!")):
                # a wildcard rule (*.ck) names its TLD too
                label = line.split()[0].lower().removeprefix("*.")
                if "." in label:
                    continue
                tlds.append(label if label.isascii() else "xn--" + label.encode("punycode").decode())
    return sorted(set(tlds))


def availctl(*args):
    return subprocess.run([binary("availctl"), "-c", CONFIG, *args], capture_output=True, text=True, timeout=120)


def readme_unsupported():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    m = re.search(r"<!-- unsupported-tlds -->(.*?)<!-- /unsupported-tlds -->", text, re.S)
    assert m, "README lists the TLDs without a public service between <!-- unsupported-tlds --> markers"
    return set(re.findall(r"`([a-z0-9-]+)`", m.group(1)))


def test_every_tld_of_the_icann_section_has_a_route_or_is_listed_as_without_service():
    tlds = icann_tlds()
    assert len(tlds) > 1400, len(tlds)
    routes, unsupported = {}, set()
    for k in range(0, len(tlds), 400):
        r = availctl("--json", "registries", *tlds[k:k + 400])
        assert r.returncode in (0, 1), r.stderr
        for line in r.stdout.splitlines():
            row = json.loads(line)
            if row.get("route") == "unsupported":
                unsupported.add(row["query"])
            else:
                routes[row["query"]] = row
    assert set(routes) | unsupported == set(tlds)
    assert {row["origin"] for row in routes.values()} <= {"explicit", "bootstrap", "iana-whois"}
    # a route knows where to ask
    assert all(row["server"] for row in routes.values())
    # the TLDs with no service are few, and exactly those README names
    assert len(unsupported) < 0.1 * len(tlds), sorted(unsupported)
    assert unsupported == readme_unsupported(), (sorted(unsupported - readme_unsupported()),
                                                 sorted(readme_unsupported() - unsupported))
    # the TLDs a shop's search box asks for
    for t in ["com", "net", "org", "shop", "store", "tech", "art", "bg", "hr", "tr", "de", "uk", "app", "xyz"]:
        assert t in routes, t
    # the counts add up
    cov = json.loads(availctl("--json", "registries", "--coverage").stdout)
    assert sum(cov["tlds"].values()) >= len(tlds)
    assert cov["tlds"]["unsupported"] == len(unsupported)


def test_an_explicit_entry_wins_over_the_bootstrap_and_whois_and_implicit_entries_are_conservative():
    rows = {json.loads(l)["query"]: json.loads(l)
            for l in availctl("--json", "registries", "com", "de", "art", "bg", "ac.uk", "za.org").stdout.splitlines()}
    assert rows["com"]["origin"] == "explicit" and rows["com"]["registry"] == "verisign-com"
    assert rows["de"]["origin"] == "explicit"
    assert rows["art"]["origin"] == "bootstrap" and rows["art"]["protocol"] == "rdap"
    assert rows["art"]["rate_limit_per_s"] is not None and rows["art"]["concurrency"] <= 8
    assert rows["bg"]["origin"] == "iana-whois" and rows["bg"]["protocol"] == "whois"
    assert rows["bg"]["reading"] == "generic" and rows["bg"]["dns_precheck"]
    # longer public suffixes with a registry of their own
    assert rows["ac.uk"]["origin"] == "iana-whois"
    assert rows["za.org"]["origin"] == "iana-whois"


def test_the_shipped_configuration_runs_a_handful_of_queriers():
    cov = json.loads(availctl("--json", "registries", "--coverage").stdout)
    assert cov["querier_groups"] <= 11, cov


def test_names_under_public_suffixes_are_registrable_never_subdomains(make_cluster):
    registry = FakeRegistry()
    try:
        c = make_cluster({"registries": {
            "uk": whois_registry(registry.port, ["uk", "co.uk"]),
            "io": whois_registry(registry.port, ["io"]),
            "zaorg": whois_registry(registry.port, ["za.org"]),
        }}).start_all()
        a = c.ask("example.za.org")
        assert (a["status"], a["registry"]) in (("available", "zaorg"), ("registered", "zaorg"))
        assert c.ask("example.co.uk")["registry"] == "uk"
        # a public suffix of the list no registry here serves: unsupported, not a subdomain
        a = c.ask("example.ac.uk")
        assert (a["status"], a["reason"]) == ("unknown", "unsupported_tld")
        # the list's private section is no registry: nothing under github.io is .io's
        a = c.ask("example.github.io")
        assert (a["status"], a["reason"]) == ("unknown", "unsupported_tld")
        assert c.ask("github.io")["registry"] == "io"
        # below a registrable name, and a suffix itself
        assert (c.ask("www.example.uk")["status"], c.ask("www.example.uk")["reason"]) == ("invalid", "subdomain")
        assert (c.ask("co.uk")["status"], c.ask("co.uk")["reason"]) == ("invalid", "public_suffix")
    finally:
        registry.close()
