#!/usr/bin/python3
"""A Python frontend of availd: the four ways in, with clients/python's
availd_client module (request-reply, batch, push + subscribe) and a plain
socket (the TCP line gateway).

    frontend.py -c /etc/availd/availd.yaml check example.com
    frontend.py -c availd.yaml batch a.com b.net c.org
    frontend.py -c availd.yaml push a.com b.net
    frontend.py -c availd.yaml gateway example.com

Each prints one line per name: NAME STATUS [REASON]. The endpoints come from
availd.yaml's `endpoints:` (ipc:// paths relative to `runtime_dir`), as
every daemon reads them; needs python3-yaml, python3-zmq, python3-msgpack.
"""
import argparse
import asyncio
import os
import socket
import sys

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
import availd_client  # noqa: E402


# availd's defaults for what availd.yaml does not say (proto/README.md).
DEFAULT_ENDPOINTS = {
    "intake_pull": "ipc://intake-pull.sock",
    "intake_router": "ipc://intake.sock",
    "intake_results": "ipc://intake-results.sock",
    "intake_gateway": "tcp://127.0.0.1:4300",
}


def endpoints(config_path):
    """availd.yaml's endpoints, ipc:// ones made absolute as availd does."""
    with open(config_path) as f:
        config = yaml.safe_load(f) or {}
    base = os.path.dirname(os.path.abspath(config_path))
    runtime = os.path.join(base, config.get("runtime_dir", "/run/availd"))
    out = {}
    for key, value in {**DEFAULT_ENDPOINTS, **(config.get("endpoints") or {})}.items():
        if isinstance(value, str) and value.startswith("ipc://") and not value.startswith("ipc:///"):
            value = "ipc://" + os.path.join(runtime, value[len("ipc://"):])
        out[key] = value
    return out


def line(answer):
    return " ".join(x for x in (answer.get("name") or answer.get("query"), answer["status"],
                                answer.get("reason", "")) if x)


def check(ep, names):
    # Request-reply: one answer per name; the client asks again with the
    # same id (and routing id) if intake restarts meanwhile.
    with availd_client.Client(ep["intake_router"]) as client:
        for name in names:
            print(line(client.check(name)))


def batch(ep, names):
    # One `answers` reply per 1,000 names, in the order asked.
    with availd_client.Client(ep["intake_router"]) as client:
        for answer in client.check_many(names):
            print(line(answer))


async def push(ep, names):
    # Subscribe, wait for the pong (ZeroMQ's slow joiner), then push: each
    # answer arrives the moment it is final, cached ones first.
    async with availd_client.Pusher(ep["intake_pull"], ep["intake_results"]) as pusher:
        await pusher.push(names)
        async for answer in pusher.answers(timeout_s=60):
            print(line(answer))


def gateway(ep, names):
    # The TCP line gateway: NAME\r\n in, NAME STATUS [reason]\r\n out, then close.
    host, port = ep["intake_gateway"][len("tcp://"):].rsplit(":", 1)
    host = "127.0.0.1" if host in ("*", "0.0.0.0") else host.strip("[]")
    for name in names:
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(name.encode() + b"\r\n")
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
        print(reply.decode(errors="replace").rstrip("\r\n"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default=os.environ.get("AVAILD_CONFIG", "/etc/availd/availd.yaml"))
    parser.add_argument("mode", choices=["check", "batch", "push", "gateway"])
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    ep = endpoints(args.config)
    try:
        if args.mode == "push":
            asyncio.run(push(ep, args.names))
        else:
            {"check": check, "batch": batch, "gateway": gateway}[args.mode](ep, args.names)
    except availd_client.AvaildError as e:
        sys.exit(f"frontend.py: {e}")


if __name__ == "__main__":
    main()
