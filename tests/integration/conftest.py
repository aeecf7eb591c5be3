"""pytest fixtures: a fresh availd cluster per test, torn down afterwards,
with every daemon's log printed when the test failed."""
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def make_cluster(request):
    clusters = []

    def make(config=None):
        c = harness.Cluster(config)
        clusters.append(c)
        return c

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for c in clusters:
        if failed:
            for d in c.daemons:
                sys.stderr.write(f"\n----- log of {d.ident} -----\n{d.log()[-6000:]}\n")
        c.close()
        if not failed:
            shutil.rmtree(c.dir, ignore_errors=True)


@pytest.fixture
def cluster(make_cluster):
    return make_cluster()
