"""pytest fixtures: a fresh availd cluster per test, torn down afterwards,
with every daemon's log printed when the test failed."""
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


# What AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer print:
# any of it in a daemon's log fails the test that ran the daemon.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "UndefinedBehaviorSanitizer")


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
    sanitizer_reports = []
    for c in clusters:
        c.close()  # a graceful stop: LeakSanitizer reports at exit
        for d in c.daemons:
            log = d.log()
            if any(marker in log for marker in SANITIZER_MARKERS):
                sanitizer_reports.append(d.ident)
                failed = True
            if failed:
                sys.stderr.write(f"\n----- log of {d.ident} -----\n{log[-6000:]}\n")
        if not failed:
            shutil.rmtree(c.dir, ignore_errors=True)
    if sanitizer_reports:
        pytest.fail(f"sanitizer reports in the logs of {', '.join(sanitizer_reports)}")


@pytest.fixture
def cluster(make_cluster):
    return make_cluster()
