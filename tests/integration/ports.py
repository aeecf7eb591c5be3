"""TCP ports on 127.0.0.1 for daemons a test or a benchmark starts.

A port found free by binding to port 0 and closing is only free for a
moment: it comes from the kernel's ephemeral range, so any outgoing
connection on the machine (a daemon connecting to its peers, another test
that ctest -j runs beside this one) may take it as its source port before
the daemon binds it. That happened in CI: "cannot bind tcp://127.0.0.1:41673:
Address already in use". So a port is taken from below the ephemeral range,
which connect() never hands out, and reserved with a one-byte POSIX lock
at offset `port` in a shared file: the lock holds while this process lives
and goes with it, also when it is killed, so nothing is left to clean up.
"""

import fcntl
import os
import random
import socket
import tempfile

LOCK_PATH = os.path.join(tempfile.gettempdir(), "availd-test-ports.lock")
LOWEST = 15000

_lock_file = None
_given = set()


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_HIGH = min(_ephemeral_low(), 65536)  # ports below this one


def reserve(port):
    """True when no other process holds `port`. POSIX locks do not conflict
    within one process, hence the set of ports this process gave out."""
    global _lock_file
    if port in _given:
        return False
    if _lock_file is None:
        _lock_file = open(LOCK_PATH, "a+b")
    try:
        fcntl.lockf(_lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port, os.SEEK_SET)
    except OSError:
        return False
    _given.add(port)
    return True


def _bindable(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port():
    """A port no other user of this function is given while this process
    lives, not bound now, and outside the range outgoing connections use."""
    count = _HIGH - LOWEST
    if count < 1000:
        raise RuntimeError(f"no room for test ports below the ephemeral range (it starts at {_HIGH})")
    start = random.randrange(count)
    for i in range(count):
        port = LOWEST + (start + i) % count
        if reserve(port) and _bindable(port):
            return port
    raise RuntimeError(f"no free port in {LOWEST}-{_HIGH - 1}")
