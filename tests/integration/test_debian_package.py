"""The Debian package: debian/ builds with `dpkg-buildpackage -us -uc -b` in a
copy of the tree (nothing written outside it), and what it installs works
from a throwaway root (`dpkg -x`): every daemon's `-n` and `availctl config
check` accept the installed config, the conffiles, units, generator,
sysusers file and man pages are where systemd and man look.

The package build takes minutes, so its .deb is kept in
AVAILD_BUILD_DIR/debian-package/ with a hash of the source it was built
from, and reused while the source is the same (AVAILD_DEB=FILE uses a given
one). Skipped only when dpkg-buildpackage is not installed."""
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import time

import pytest

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("AVAILD_BUILD_DIR", os.path.join(TOP, "build"))
CACHE = os.path.join(os.path.abspath(BUILD), "debian-package")
DAEMONS = ("errors", "cache", "dispatcher", "intake", "querier")
CONFFILES = ("availd.yaml", "registries.yaml", "rdap-bootstrap.json", "whois-servers.txt")


def source_files():
    """What the package is built from: tracked and new files, no build dirs."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=TOP, check=True,
                         capture_output=True, text=True).stdout.split("\n")
    return sorted(f for f in out if f and not f.startswith("build") and os.path.lexists(os.path.join(TOP, f)))


def source_hash(files):
    h = hashlib.sha256()
    for f in files:
        p = os.path.join(TOP, f)
        h.update(f.encode() + b"\0")
        h.update(os.readlink(p).encode() if os.path.islink(p) else open(p, "rb").read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def deb():
    if os.environ.get("AVAILD_DEB"):
        return os.environ["AVAILD_DEB"]
    if not shutil.which("dpkg-buildpackage"):
        pytest.fail("dpkg-buildpackage is not installed: tools/dev deps installs it (dpkg-dev debhelper)")
    files = source_files()
    digest = source_hash(files)
    stamp = os.path.join(CACHE, "source.sha256")
    kept = os.path.join(CACHE, "availd.deb")
    if os.path.exists(kept) and os.path.exists(stamp) and open(stamp).read().strip() == digest:
        return kept
    shutil.rmtree(CACHE, ignore_errors=True)
    src = os.path.join(CACHE, "availd")
    os.makedirs(src)
    for f in files:
        dst = os.path.join(src, f)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.join(TOP, f), dst, follow_symlinks=False)
    started = time.monotonic()
    r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, capture_output=True, text=True,
                       timeout=1500)
    took = time.monotonic() - started
    with open(os.path.join(CACHE, "build.log"), "w") as log:
        log.write(r.stdout + r.stderr)
    assert r.returncode == 0, f"dpkg-buildpackage failed ({CACHE}/build.log):\n{(r.stdout + r.stderr)[-4000:]}"
    debs = [f for f in os.listdir(CACHE) if re.fullmatch(r"availd_[^_]+_[a-z0-9]+\.deb", f)]
    assert len(debs) == 1, os.listdir(CACHE)
    os.replace(os.path.join(CACHE, debs[0]), kept)
    shutil.rmtree(src)
    with open(stamp, "w") as s:
        s.write(digest + "\n")
    print(f"built {debs[0]} in {took:.0f} s, {os.path.getsize(kept)} bytes")
    return kept


@pytest.fixture(scope="module")
def root(deb, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("debroot"))
    subprocess.run(["dpkg", "-x", deb, root], check=True)
    return root


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)


def test_each_installed_daemon_accepts_the_installed_config(root):
    cfg = os.path.join(root, "etc/availd/availd.yaml")
    for name in DAEMONS:
        exe = os.path.join(root, "usr/sbin", "availd-" + name)
        args = [exe, "-n", "-c", cfg] + (["--group", "verisign"] if name == "querier" else [])
        r = run(args)
        assert r.returncode == 0 and "configuration OK" in r.stdout, (name, r.stdout, r.stderr)
    # A querier unit for a group the config lacks: 78, which the unit does
    # not restart.
    r = run([os.path.join(root, "usr/sbin/availd-querier"), "-n", "-c", cfg, "--group", "no-such-group"])
    assert r.returncode == 78, (r.stdout, r.stderr)
    assert "no-such-group" in r.stderr


def test_installed_availctl_checks_the_installed_config(root):
    cfg = os.path.join(root, "etc/availd/availd.yaml")
    r = run([os.path.join(root, "usr/bin/availctl"), "-c", cfg, "config", "check"])
    assert r.returncode == 0 and "configuration OK" in r.stdout, (r.stdout, r.stderr)
    broken = os.path.join(root, "broken.yaml")
    with open(broken, "w") as f:
        f.write("intake:\n  deadline_ms: 0\n")
    r = run([os.path.join(root, "usr/bin/availctl"), "-c", broken, "config", "check"])
    assert r.returncode != 0 and "broken.yaml:2:" in r.stdout + r.stderr, (r.stdout, r.stderr)


def test_config_files_are_conffiles(deb, root):
    listed = run(["dpkg-deb", "-I", deb, "conffiles"]).stdout.split()
    for f in CONFFILES:
        assert "/etc/availd/" + f in listed, listed
        assert os.path.getsize(os.path.join(root, "etc/availd", f)) > 0


def test_units_name_the_installed_binaries(root):
    unit_dir = os.path.join(root, "lib/systemd/system")
    units = sorted(os.listdir(unit_dir))
    for u in ("availd.target", "availd-intake.socket", "availd-querier@.service") + tuple(
            f"availd-{d}.service" for d in DAEMONS if d != "querier"):
        assert u in units, units
    for u in units:
        text = open(os.path.join(unit_dir, u)).read()
        for exe in re.findall(r"^ExecStart=(\S+)", text, re.M):
            assert os.access(os.path.join(root, exe.lstrip("/")), os.X_OK), (u, exe)
        assert "-c /etc/availd/availd.yaml" in text or not u.endswith(".service"), u
    assert os.access(os.path.join(root, "usr/lib/systemd/system-generators/availd-generator"), os.X_OK)


def test_installed_generator_enables_the_config_queriers(root, tmp_path):
    out = [str(tmp_path / d) for d in ("normal", "early", "late")]
    for d in out:
        os.mkdir(d)
    env = dict(os.environ, AVAILD_CONFIG=os.path.join(root, "etc/availd/availd.yaml"))
    r = run([os.path.join(root, "usr/lib/systemd/system-generators/availd-generator")] + out, env=env)
    assert r.returncode == 0, r.stderr
    wants = os.listdir(os.path.join(out[0], "availd.target.wants"))
    assert "availd-querier@verisign.service" in wants, wants


def test_sysusers_file_and_its_postinst(deb, root, tmp_path):
    conf = open(os.path.join(root, "usr/lib/sysusers.d/availd.conf")).read()
    assert re.search(r"^u availd ", conf, re.M), conf
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", deb, str(control)], check=True)
    postinst = (control / "postinst").read_bytes()
    assert b"systemd-sysusers" in postinst and b"availd.conf" in postinst
    # Installed disabled: nothing queries a registry before the operator
    # reviewed the config (debian/rules, override_dh_installsystemd).
    # dh_installsystemd without --no-enable writes this enable-on-first-install
    # branch and a start; with it, only an upgrade re-enables what was enabled.
    assert b"new installations run enable" not in postinst, postinst.decode()
    assert b"deb-systemd-invoke start" not in postinst, postinst.decode()


def test_man_pages(root):
    man = os.path.join(root, "usr/share/man")
    pages = {"man1/availctl.1.gz", "man7/availd.7.gz"} | {f"man8/availd-{d}.8.gz" for d in DAEMONS + ("generator",)}
    for page in sorted(pages):
        text = gzip.open(os.path.join(man, page), "rt").read()
        assert re.search(r"^\.TH ", text, re.M), page
    target = open(os.path.join(root, "lib/systemd/system/availd.target")).read()
    for ref in re.findall(r"man:([\w.-]+)\((\d)\)", target):
        assert os.path.exists(os.path.join(man, f"man{ref[1]}/{ref[0]}.{ref[1]}.gz")), ref
