"""The ports tests give their daemons: never one another process of the
run holds, never one outgoing connections can take meanwhile."""

import json
import subprocess
import sys

import ports


def ephemeral_low():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        return int(f.read().split()[0])


def test_ports_lie_below_the_ephemeral_range_and_repeat_nowhere():
    given = [ports.free_port() for _ in range(500)]
    assert len(set(given)) == len(given)
    assert all(ports.LOWEST <= p < ephemeral_low() for p in given)


def test_another_process_is_not_given_the_ports_this_one_holds():
    mine = {ports.free_port() for _ in range(1000)}
    code = "import json, ports; print(json.dumps([ports.free_port() for _ in range(3000)]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    theirs = set(json.loads(out.stdout))
    assert len(theirs) == 3000
    assert not mine & theirs
    # its locks went with it: this process may take every one of them now
    assert all(ports.reserve(p) for p in theirs)
