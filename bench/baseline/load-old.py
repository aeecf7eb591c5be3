#!/usr/bin/python3
"""A small closed-loop load generator for availd's line gateway protocol
(availd-old.pl and availd-intake's TCP gateway alike): CLIENTS connections at
a time, each sending `NAME\r\n` and reading the answer until the server
closes, then the next, for DURATION seconds.

    load-old.py --port 4343 --mode hit|miss [--clients 50] [--duration 10]
                [--procs 2] [--pid PID]

  hit   the same --names registered names (taken-hN.test), asked once before
        the clock starts so that every timed query is a cache hit
  miss  a name never asked before on every query (taken-m<tag>-N.test), so
        every timed query goes to the registry

With --pid, samples every 0.5 s the summed VmRSS (and PSS) of that process
and its direct children, i.e. a Net::Server parent and its pool.

Talks to 127.0.0.1 only.
"""
import argparse
import asyncio
import multiprocessing
import os
import sys
import threading
import time

HOST = "127.0.0.1"


async def ask(port, name):
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(name.encode() + b"\r\n")
        data = await reader.read()
    finally:
        writer.close()
    return data


async def worker(port, names_iter, expect, deadline, stats, lat):
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        name = next(names_iter)
        t0 = loop.time()
        try:
            data = await asyncio.wait_for(ask(port, name), 30)
        except Exception as e:  # refused, reset, timeout
            stats["errors"] += 1
            kind = type(e).__name__
            stats["error_kinds"][kind] = stats["error_kinds"].get(kind, 0) + 1
            continue
        if data == f"{name} {expect}\r\n".encode():
            stats["ok"] += 1
            lat.append(loop.time() - t0)
        else:
            stats["wrong"] += 1
            if stats["wrong"] <= 3:
                print(f"wrong answer for {name}: {data!r}", file=sys.stderr)


def names_for(mode, tag, proc, n_names):
    if mode == "hit":
        i = proc
        while True:
            yield f"taken-h{i % n_names}.test"
            i += 7
    else:
        i = 0
        while True:
            yield f"taken-m{tag}-{proc}-{i}.test"
            i += 1


async def run_proc(port, mode, clients, duration, tag, proc, n_names, start_at):
    names = names_for(mode, tag, proc, n_names)
    stats = {"ok": 0, "wrong": 0, "errors": 0, "error_kinds": {}}
    lat = []
    # Wait for the common start so that all processes measure the same window.
    await asyncio.sleep(max(0.0, start_at - time.time()))
    deadline = asyncio.get_running_loop().time() + duration
    await asyncio.gather(*(worker(port, names, "registered", deadline, stats, lat) for _ in range(clients)))
    return stats, lat


def proc_main(args, tag, proc, clients, start_at, out):
    stats, lat = asyncio.run(run_proc(args.port, args.mode, clients, args.duration, tag, proc, args.names, start_at))
    out.put((stats, lat))


def family_memory(pid):
    """(summed VmRSS kB, summed PSS kB or None, process count) of pid and its children."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    for line in f:
                        if line.startswith("PPid:"):
                            if int(line.split()[1]) == pid:
                                pids.append(int(entry))
                            break
            except OSError:
                pass
    rss = 0
    pss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss, len(pids)


def sampler(pid, stop, samples):
    while not stop.is_set():
        samples.append(family_memory(pid))
        stop.wait(0.5)


async def warm(port, n_names):
    sem = asyncio.Semaphore(20)

    async def one(i):
        async with sem:
            await ask(port, f"taken-h{i}.test")

    await asyncio.gather(*(one(i) for i in range(n_names)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=4343)
    ap.add_argument("--mode", choices=("hit", "miss"), required=True)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--procs", type=int, default=2, help="load generator processes (default 2)")
    ap.add_argument("--names", type=int, default=1000, help="distinct names in hit mode")
    ap.add_argument("--pid", type=int, help="sum the memory of this process and its children")
    args = ap.parse_args()
    if not 0 < args.duration <= 120:
        ap.error("--duration must be in (0, 120]")

    if args.mode == "hit":
        t0 = time.time()
        asyncio.run(warm(args.port, args.names))
        print(f"warmed {args.names} names in {time.time() - t0:.1f} s")

    tag = os.urandom(3).hex()
    out = multiprocessing.Queue()
    start_at = time.time() + 0.5
    procs = []
    for p in range(args.procs):
        clients = args.clients // args.procs + (1 if p < args.clients % args.procs else 0)
        pr = multiprocessing.Process(target=proc_main, args=(args, tag, p, clients, start_at, out))
        pr.start()
        procs.append(pr)

    samples = []
    stop = threading.Event()
    th = None
    if args.pid:
        th = threading.Thread(target=sampler, args=(args.pid, stop, samples), daemon=True)
        th.start()

    total = {"ok": 0, "wrong": 0, "errors": 0}
    kinds = {}
    lat = []
    for _ in procs:
        s, l = out.get(timeout=args.duration + 120)
        for k in total:
            total[k] += s[k]
        for k, v in s["error_kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
        lat.extend(l)
    for pr in procs:
        pr.join(10)
    stop.set()
    if th:
        th.join()

    lat.sort()

    def pct(p):
        return 1000 * lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

    print(f"mode={args.mode} clients={args.clients} duration={args.duration:.0f}s: "
          f"{total['ok'] / args.duration:.0f} answers/s "
          f"(ok {total['ok']}, wrong {total['wrong']}, errors {total['errors']}); "
          f"latency p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms, max {pct(1.0):.1f} ms")
    if kinds:
        print("errors: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    if samples:
        rss = [s[0] for s in samples]
        pss = [s[1] for s in samples]
        n = [s[2] for s in samples]
        print(f"memory of pid {args.pid} + children: VmRSS sum max {max(rss) / 1024:.1f} MiB, "
              f"mean {sum(rss) / len(rss) / 1024:.1f} MiB; PSS sum max {max(pss) / 1024:.1f} MiB; "
              f"processes {min(n)}..{max(n)}")
    return 1 if total["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
