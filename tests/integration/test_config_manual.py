"""availd.yaml(5) against the loader: the page (build/man/availd.yaml.5,
made by man/config-manual) lists keys, types, ranges and defaults; a file
setting every key of the page at the ends of its range is accepted by
`availctl config check`, one past the end is refused naming the key, each
documented default is accepted, and a key the page lacks is refused."""
import os
import re
import subprocess

import pytest
import yaml

BUILD = os.environ.get("AVAILD_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
PAGE = os.path.join(BUILD, "man", "availd.yaml.5")
AVAILCTL = os.path.join(BUILD, "tools", "availctl", "availctl")
U64_MAX = 2 ** 64 - 1


def page_keys():
    """{path: (type, range, default)} from the page's .TP entries."""
    if not os.path.exists(PAGE):
        pytest.fail(f"{PAGE} missing: build the config_man target")
    text = open(PAGE).read()
    keys = {}
    for m in re.finditer(r"^\.TP\n\.B (\S+)\n\\fI([^\\]+)\\fR(.*)$", text, re.M):
        path = m.group(1).replace("\\-", "-")
        rest = m.group(3).replace("\\-", "-").replace("\\e", "\\")
        rng = re.search(r"\((\d+)\.\.(\d+)\)", rest)
        default = re.search(r"default: \\fB(.*?)\\fR", rest)
        keys[path] = (m.group(2), (int(rng.group(1)), int(rng.group(2))) if rng else None,
                      default.group(1) if default else None, "reload:" in rest)
    return keys


def config_with(settings):
    """A config dict with each dotted path set; NAME becomes a registry
    entry (whois, with its required keys) or a querier group."""
    cfg = {}
    for path, value in settings.items():
        parts = path.split(".")
        if parts[0] == "registries":
            parts[1] = "testreg"
            cfg.setdefault("registries", {}).setdefault(
                "testreg", {"tlds": ["example"], "protocol": "whois", "host": "127.0.0.1"})
        if parts[0] == "queriers":
            parts[1] = "testgroup"
            cfg.setdefault("queriers", {}).setdefault("testgroup", {"registries": ["testreg"]})
        node = cfg
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    if "queriers" in cfg and "registries" not in cfg:
        cfg["registries"] = {"testreg": {"tlds": ["example"], "protocol": "whois", "host": "127.0.0.1"}}
    return cfg


def check(tmp_path, cfg, name="availd.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([AVAILCTL, "-c", str(path), "config", "check"], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
    return r.returncode, r.stdout + r.stderr


def test_page_lists_the_keys_with_types_and_reload():
    keys = page_keys()
    assert len(keys) > 150
    for path in ("intake.deadline_ms", "registries.NAME.protocol", "endpoints.intake_gateway",
                 "queriers.NAME.instances", "implicit.whois.timeout_ms"):
        assert path in keys, path
    assert keys["intake.deadline_ms"][:3] == ("integer", (1, 3600000), "10000")
    text = open(PAGE).read()
    # start-only keys say which daemon needs a restart; live ones say so
    assert re.search(r"\.B intake\.journal\n.*reload: needs a restart of availd-intake", text)
    assert re.search(r"\.B registries\.NAME\.protocol\n.*needs a restart of availd-querier", text)
    assert re.search(r"\.B intake\.deadline_ms\n.*reload: applies at once", text)


@pytest.mark.parametrize("end", ["low", "high"])
def test_every_integer_key_accepts_both_ends_of_its_range(tmp_path, end):
    keys = page_keys()
    settings = {p: (r[0] if end == "low" else r[1]) for p, (t, r, d, _) in keys.items() if r}
    assert len(settings) > 80
    rc, out = check(tmp_path, config_with(settings))
    assert rc == 0 and "configuration OK" in out, out


def test_one_past_the_range_is_refused_naming_the_key(tmp_path):
    keys = page_keys()
    tried = 0
    for path, (t, r, d, _) in sorted(keys.items()):
        if not r:
            continue
        for bad in ([r[0] - 1] if r[0] > 0 else []) + ([r[1] + 1] if r[1] < U64_MAX else []):
            rc, out = check(tmp_path, config_with({path: bad}))
            leaf = path.split(".")[-1]
            assert rc != 0 and f"'{leaf}'" in out, (path, bad, out)
            tried += 1
    assert tried > 80


def test_each_documented_default_is_accepted(tmp_path):
    keys = page_keys()
    settings = {}
    for path, (t, r, d, _) in keys.items():
        if d is None or d == "":
            continue
        if t == "integer":
            settings[path] = int(d)
        elif t == "boolean":
            settings[path] = d == "true"
        elif t in ("string", "path", "endpoint", "word"):
            settings[path] = d
        elif t == "log targets":
            settings[path] = [x.strip() for x in d.split(",")]
    assert len(settings) > 100
    rc, out = check(tmp_path, config_with(settings))
    assert rc == 0 and "configuration OK" in out, out


def test_a_key_the_page_lacks_is_refused(tmp_path):
    assert "intake.no_such_key" not in page_keys()
    rc, out = check(tmp_path, {"intake": {"no_such_key": 1}})
    assert rc != 0 and "unknown key 'no_such_key'" in out, out
