"""The example frontends of examples/ against a loopback constellation and
the fake loopback registry: the C one (as the project builds it) and the
PHP one, each in its four modes (check, batch, push, gateway), must print
the registry's verdict for every name. And the C wire API as installed
(`cmake --install --component dev`): the C example, copied out of the
tree, builds with its Makefile from pkg-config's availd-proto alone and
answers too. (examples/python runs in test_client_python.py.)"""
import glob
import os
import re
import shutil
import subprocess

import pytest

from harness import BUILD_DIR, FakeRegistry, truth, whois_registry

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODES = ["check", "batch", "push", "gateway"]
# Both hash verdicts (truth), the fake registry's prefix rules, an invalid name.
NAMES = ["ex1.test", "ex2.test", "ex3.test", "taken-ex.test", "reserved-ex.test", "a..test"]
EXPECTED = sorted([f"{n} {truth(n)}" for n in ("ex1.test", "ex2.test", "ex3.test")] +
                  ["taken-ex.test registered", "reserved-ex.test reserved", "a..test invalid empty_label"])


@pytest.fixture
def cluster(make_cluster):
    registry = FakeRegistry()
    yield make_cluster({
        "registries": {"test": whois_registry(registry.port, ["test"])},
    }).start_all()
    registry.close()


def endpoint_args(c):
    return ["-r", c.endpoint("intake_router"), "-p", c.endpoint("intake_pull"),
            "-s", c.endpoint("intake_results"), "-g", c.config["endpoints"]["intake_gateway"][len("tcp://"):]]


def run_modes(command, c):
    for mode in MODES:
        r = subprocess.run([*command, *endpoint_args(c), mode, *NAMES], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, f"{mode}: {r.stderr}"
        assert sorted(r.stdout.splitlines()) == EXPECTED, f"{mode}:\n{r.stdout}"


def test_the_c_frontend_answers_in_each_mode(cluster):
    run_modes([os.path.join(BUILD_DIR, "examples", "c", "frontend")], cluster)


def test_the_php_frontend_answers_in_each_mode(cluster):
    run_modes(["php", os.path.join(TOP, "examples", "php", "frontend.php")], cluster)


def cmake_cache(name):
    with open(os.path.join(BUILD_DIR, "CMakeCache.txt")) as f:
        m = re.search(rf"^{name}:\w+=(.*)$", f.read(), re.M)
    return m.group(1) if m else ""


def test_a_frontend_built_out_of_tree_against_the_installed_api(cluster, tmp_path):
    prefix = tmp_path / "prefix"
    r = subprocess.run(["cmake", "--install", BUILD_DIR, "--component", "dev", "--prefix", str(prefix)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    installed = sorted(os.path.relpath(p, prefix) for p in glob.glob(f"{prefix}/**", recursive=True)
                       if os.path.isfile(p))
    libdir = os.path.dirname(next(p for p in installed if p.endswith("libavaild-proto.a")))
    assert installed == ["include/availd/av_proto.h", f"{libdir}/libavaild-proto.a",
                         f"{libdir}/pkgconfig/availd-proto.pc"]
    # The public header stands alone: it includes no libcommon header.
    header = (prefix / "include/availd/av_proto.h").read_text()
    assert set(re.findall(r'#include [<"](.*)[>"]', header)) == {"msgpack.h", "stdbool.h", "stddef.h", "stdint.h"}

    src = tmp_path / "src"
    src.mkdir()
    for f in ("frontend.c", "Makefile"):
        shutil.copy(os.path.join(TOP, "examples", "c", f), src)
    env = dict(os.environ, PKG_CONFIG_PATH=str(prefix / libdir / "pkgconfig"),
               CC=cmake_cache("CMAKE_C_COMPILER") or "cc")
    if cmake_cache("AVAILD_SANITIZE") == "ON":  # the installed library is instrumented too
        env["CFLAGS"] = env["LDFLAGS"] = "-fsanitize=address,undefined"
    r = subprocess.run(["make", "-C", str(src)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"-I{prefix}/include" in r.stdout  # pkg-config named the installed files, not the tree's
    assert TOP not in r.stdout
    run_modes([str(src / "frontend")], cluster)
