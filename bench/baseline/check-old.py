#!/usr/bin/python3
"""Checks availd-old.pl (or anything speaking availd's line gateway protocol)
against availd-test-registry: 200 concurrent queries whose right answers are
known from the registry's rules, then the same 200 again, which must be
answered from the cache (the registry's !stats proves it was not asked).

    check-old.py --port 4343 --registry-port N [--clients 200]

Talks to 127.0.0.1 only. Exit status 0 when every answer is right.
"""
import argparse
import asyncio
import json
import os
import sys

HOST = "127.0.0.1"


def registry_truth(name):
    h = 0x811C9DC5
    for b in name.encode().lower():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return "available" if h % 2 == 0 else "registered"


def cases(tag, n):
    """n (query, expected answer after the name, cached on a second round?)"""
    out = []
    kinds = [
        ("free-{i}-{t}.test", "available", True),
        ("taken-{i}-{t}.test", "registered", True),
        ("reserved-{i}-{t}.test", "reserved", True),
        ("limit-{i}-{t}.test", "unknown rate_limited", False),
        ("garbage-{i}-{t}.test", "unknown unparseable", False),
        ("plain{i}-{t}.example", None, True),          # the truth rule
        ("Taken-{i}-{t}.TEST.", "registered", True),    # case and root dot
        ("bad_{i}-{t}.test", "invalid bad_character", False),
        ("-bad{i}-{t}.test", "invalid bad_hyphen", False),
        ("single{i}{t}", "invalid single_label", False),
    ]
    for i in range(n):
        pattern, expected, cached = kinds[i % len(kinds)]
        q = pattern.format(i=i, t=tag)
        if expected is None:
            expected = registry_truth(q)
        out.append((q, expected, cached))
    return out


async def ask(port, query, timeout):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    try:
        writer.write(query.encode() + b"\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)   # until the server closes
    finally:
        writer.close()
    return data.decode(errors="replace")


async def registry_control(port, command):
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(command.encode() + b"\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data.decode()


async def round_(port, todo, timeout):
    replies = await asyncio.gather(*(ask(port, q, timeout) for q, _, _ in todo), return_exceptions=True)
    bad = 0
    for (q, expected, _), reply in zip(todo, replies):
        want = f"{q} {expected}\r\n"
        if isinstance(reply, Exception) or reply != want:
            bad += 1
            if bad <= 10:
                print(f"  WRONG: {q!r}: got {reply!r}, want {want!r}", file=sys.stderr)
    return bad


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=4343)
    ap.add_argument("--registry-port", type=int, required=True)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()

    tag = os.urandom(4).hex()
    todo = cases(tag, args.clients)
    await registry_control(args.registry_port, "!reset")
    failed = False
    for rnd in (1, 2):
        t0 = asyncio.get_running_loop().time()
        bad = await round_(args.port, todo, args.timeout)
        took = asyncio.get_running_loop().time() - t0
        stats = json.loads(await registry_control(args.registry_port, "!stats"))
        print(f"round {rnd}: {len(todo)} concurrent queries, {len(todo) - bad} right, {bad} wrong, "
              f"{took:.2f} s; registry asked {stats['total']} times so far")
        failed |= bad > 0
    # Round 1 asks the registry once per valid name; round 2 only for the
    # names whose answers are not cached (rate-limited, unparseable).
    names = stats["names"]
    for q, expected, cached in todo:
        norm = q.lower().rstrip(".")
        if expected.startswith("invalid"):
            want = 0
        else:
            want = 1 if cached else 2
        got = names.get(norm, 0)
        if got != want:
            failed = True
            print(f"  REGISTRY COUNT: {norm}: asked {got} times, want {want}", file=sys.stderr)
    hits = sum(1 for q, e, c in todo if c)
    print(f"round 2 answered {hits} of {len(todo)} from the cache (registry not asked again)"
          if not failed else "FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
