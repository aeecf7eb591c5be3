"""availd_client: ask availd from Python.

Two ways in, as proto/README.md describes them:

Client -- request-reply on intake's ROUTER (`endpoints.intake_router`):
    with Client("ipc:///run/availd/intake.sock") as c:
        c.check("example.com")            # -> {"name": ..., "status": ...}
        c.check_many(["a.com", "b.net"])  # -> answers in order; any number
                                          #    of names, 1,000 per request

    It uses a DEALER with a fixed routing id and asks again with the same id
    when no answer came within the deadline plus a margin, reconnecting
    first, so an intake restart costs a delay, not an answer.

Pusher -- push and subscribe (`intake_pull`, `intake_results`), asyncio:
    async with Pusher(pull, results) as p:    # subscribes, waits for the pong
        await p.push(["a.com", "b.net"])
        async for answer in p.answers():      # each the moment it is final
            ...

    A subscriber that does not read loses answers past intake's high-water
    mark (1,000 messages): read promptly, ask again for what is missing.

Needs pyzmq and msgpack (Debian: python3-zmq, python3-msgpack).
"""
import itertools
import os
import time

import msgpack
import zmq
import zmq.asyncio

__all__ = ["Client", "Pusher", "AvaildError", "BATCH_MAX"]

PROTO_VERSION = 1
BATCH_MAX = 1000          # names in one check (the protocol's bound)
DEFAULT_DEADLINE_MS = 10000


class AvaildError(Exception):
    """availd gave no answer in the time allowed, or one that cannot be read."""


def _new_prefix():
    return f"py-{os.getpid()}-{os.urandom(4).hex()}"


def _check(rid, names, fresh, raw, deadline_ms):
    msg = {"t": "check", "v": PROTO_VERSION, "id": rid}
    if isinstance(names, str):
        msg["name"] = names
    else:
        msg["names"] = list(names)
    if fresh:
        msg["fresh"] = True
    if raw:
        msg["raw"] = True
    if deadline_ms:
        msg["deadline_ms"] = int(deadline_ms)
    return msgpack.packb(msg)


def _unpack(frame):
    try:
        m = msgpack.unpackb(frame, raw=False)
    except (ValueError, msgpack.exceptions.ExtraData) as e:
        raise AvaildError(f"an answer that is not msgpack: {e}") from None
    if not isinstance(m, dict):
        raise AvaildError("an answer that is not a map")
    return m


class Client:
    """Request-reply. Not thread-safe: one per thread (ZeroMQ sockets are not)."""

    def __init__(self, endpoint, routing_id=None, deadline_ms=DEFAULT_DEADLINE_MS, margin_s=2.0, attempts=3,
                 context=None):
        self.endpoint = endpoint
        self.routing_id = (routing_id or _new_prefix()).encode()
        self.deadline_ms = deadline_ms
        self.margin_s = margin_s
        self.attempts = attempts
        self._ctx = context or zmq.Context.instance()
        self._ids = itertools.count(1)
        self._prefix = self.routing_id.decode(errors="replace")
        self._sock = None
        self._connect()

    def _connect(self):
        if self._sock is not None:
            self._sock.close(linger=0)
        s = self._ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.ROUTING_ID, self.routing_id)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(self.endpoint)
        self._sock = s

    def close(self):
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _ask(self, names, fresh, raw, deadline_ms):
        """Sends one check and returns its reply, asking again (same id,
        after reconnecting) when none came in time."""
        if self._sock is None:
            raise AvaildError("the client is closed")
        deadline_ms = deadline_ms or self.deadline_ms
        rid = f"{self._prefix}-{next(self._ids)}"
        frame = _check(rid, names, fresh, raw, deadline_ms)
        for attempt in range(self.attempts):
            if attempt:
                self._connect()
            self._sock.send(frame)
            wait_until = time.monotonic() + deadline_ms / 1000 + self.margin_s
            while True:
                left = wait_until - time.monotonic()
                if left <= 0 or not self._sock.poll(int(left * 1000) + 1):
                    break
                reply = _unpack(self._sock.recv())
                if reply.get("id") == rid and reply.get("t") in ("answer", "answers"):
                    return reply
                # a late reply to a request that was already asked again: not ours now
        raise AvaildError(f"no answer from {self.endpoint} for {rid} after {self.attempts} attempts")

    def check(self, name, fresh=False, raw=False, deadline_ms=None):
        """The answer for one name (a dict: name, query, status, reason...)."""
        return self._ask(name, fresh, raw, deadline_ms)

    def check_many(self, names, fresh=False, deadline_ms=None):
        """Answers for names, in their order; BATCH_MAX per request."""
        names = list(names)
        out = []
        for start in range(0, len(names), BATCH_MAX):
            chunk = names[start:start + BATCH_MAX]
            reply = self._ask(chunk, fresh, False, deadline_ms)
            answers = sorted(reply.get("answers") or [], key=lambda a: a.get("idx", 0))
            if len(answers) != len(chunk):
                raise AvaildError(f"{len(answers)} answers for {len(chunk)} names")
            out.extend(answers)
        return out

    def ping(self, timeout_s=5.0):
        """True when intake answered a ping within timeout_s."""
        rid = f"{self._prefix}-ping-{next(self._ids)}"
        self._sock.send(msgpack.packb({"t": "ping", "v": PROTO_VERSION, "id": rid}))
        end = time.monotonic() + timeout_s
        while (left := end - time.monotonic()) > 0 and self._sock.poll(int(left * 1000) + 1):
            reply = _unpack(self._sock.recv())
            if reply.get("t") == "pong" and reply.get("id") == rid:
                return True
        return False


class Pusher:
    """Push checks and receive the published answers (asyncio)."""

    def __init__(self, pull_endpoint, results_endpoint, prefix=None, context=None):
        self.prefix = prefix or _new_prefix()
        self._ctx = context or zmq.asyncio.Context.instance()
        self._push = self._ctx.socket(zmq.PUSH)
        self._push.setsockopt(zmq.LINGER, 1000)
        self._push.connect(pull_endpoint)
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.SUBSCRIBE, self.prefix.encode())
        self._sub.connect(results_endpoint)
        self._ids = itertools.count(1)
        self._pending = {}      # id -> names still to come

    async def connect(self, timeout_s=10.0):
        """Waits until intake publishes to us (the ping/pong handshake):
        answers published before would be lost (ZeroMQ's slow joiner)."""
        rid = f"{self.prefix}-hello"
        ping = msgpack.packb({"t": "ping", "v": PROTO_VERSION, "id": rid})
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            await self._push.send(ping)
            if await self._sub.poll(100):
                topic, body = await self._sub.recv_multipart()
                m = _unpack(body)
                if m.get("t") == "pong" and m.get("id") == rid:
                    return self
        raise AvaildError(f"no pong within {timeout_s} s: is intake running?")

    async def __aenter__(self):
        return await self.connect()

    async def __aexit__(self, *exc):
        self.close()

    def close(self):
        self._push.close()
        self._sub.close()

    async def push(self, names, fresh=False, deadline_ms=None):
        """Pushes a check of one name or a batch; returns its id."""
        names = [names] if isinstance(names, str) else list(names)
        if not 1 <= len(names) <= BATCH_MAX:
            raise ValueError(f"1 to {BATCH_MAX} names per push")
        rid = f"{self.prefix}-{next(self._ids)}"
        self._pending[rid] = len(names)
        await self._push.send(_check(rid, names[0] if len(names) == 1 else names, fresh, False, deadline_ms))
        return rid

    @property
    def pending(self):
        """How many answers pushed checks still await."""
        return sum(self._pending.values())

    async def answers(self, timeout_s=None):
        """Yields each answer as it comes, until every pushed name has one
        (or nothing came for timeout_s: AvaildError)."""
        while self._pending:
            if not await self._sub.poll(None if timeout_s is None else int(timeout_s * 1000)):
                raise AvaildError(f"no answer within {timeout_s} s; {self.pending} missing")
            topic, body = await self._sub.recv_multipart()
            m = _unpack(body)
            rid = m.get("id")
            if m.get("t") != "answer" or rid not in self._pending:
                continue
            self._pending[rid] -= 1
            if not self._pending[rid]:
                del self._pending[rid]
            yield m


def check(endpoint, name, **kw):
    """One name, one call: Client(endpoint).check(name)."""
    with Client(endpoint) as c:
        return c.check(name, **kw)


if __name__ == "__main__":  # pragma: no cover
    import sys
    if len(sys.argv) < 3:
        sys.exit("usage: availd_client.py ROUTER_ENDPOINT NAME...")
    with Client(sys.argv[1]) as client:
        for answer in client.check_many(sys.argv[2:]):
            print(answer["name"] or answer["query"], answer["status"], answer.get("reason", ""))
