"""runs: which daemons a host runs. availd-generator enables only those
units: on a querier-only host availd.target starts its queriers and masks
intake, dispatcher, cache, errors and the intake socket."""
import os
import subprocess

from test_ops import install, run_generator


def test_a_querier_only_host_gets_only_its_querier_units(make_cluster, tmp_path):
    from harness import whois_registry
    c = make_cluster({"runs": ["querier"], "registries": {"alpha": whois_registry(4343, ["alpha"], queriers=2)}})
    dest = str(tmp_path / "root")
    install(dest)
    out = str(tmp_path / "generated")
    r = run_generator(dest, c.config_path, out)
    assert r.returncode == 0 and not r.stderr, r.stderr
    assert sorted(os.listdir(os.path.join(out, "availd.target.wants"))) == [
        "availd-querier@alpha.2.service", "availd-querier@alpha.service"]
    masked = sorted(n for n in os.listdir(out) if os.path.islink(os.path.join(out, n)))
    assert masked == ["availd-cache.service", "availd-dispatcher.service", "availd-errors.service",
                      "availd-intake.service", "availd-intake.socket"]
    assert all(os.readlink(os.path.join(out, n)) == "/dev/null" for n in masked)
    # systemd loads availd.target with its core units masked
    units = tmp_path / "units"
    units.mkdir()
    src = os.path.join(dest, "usr/lib/systemd/system")
    for name in os.listdir(src):
        (units / name).write_text(open(os.path.join(src, name)).read().replace(
            "/usr/sbin/", os.path.join(dest, "usr/sbin/")))
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{out}:{units}:")
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", "availd.target", "availd-querier@alpha.service"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr

    # a core host: no querier units, nothing masked
    c.config["runs"] = ["intake", "dispatcher", "cache", "errors"]
    c.write_config()
    out2 = str(tmp_path / "core")
    assert run_generator(dest, c.config_path, out2).returncode == 0
    assert os.listdir(os.path.join(out2, "availd.target.wants")) == []
    assert not [n for n in os.listdir(out2) if os.path.islink(os.path.join(out2, n))]

    # a bad name is an error at its line
    c.config["runs"] = ["querier", "frontend"]
    c.write_config()
    r = c.availctl("config", "check")
    assert r.returncode == 1 and "'runs' names daemons" in r.stdout + r.stderr and "frontend" in r.stdout + r.stderr
