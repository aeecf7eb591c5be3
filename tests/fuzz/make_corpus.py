#!/usr/bin/python3
"""Writes the seed corpus of fuzz_proto: one valid message of every type,
and a few near misses. Run once; the files are committed."""
import msgpack, os, sys

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "proto")
os.makedirs(out, exist_ok=True)
seeds = {
    "check": {"t": "check", "v": 1, "id": "r1", "name": "example.com"},
    "check_batch": {"t": "check", "v": 1, "id": "r2", "names": ["a.de", "b.com", "bücher.de"],
                    "fresh": True, "deadline_ms": 2000},
    "check_internal": {"t": "check", "v": 1, "id": "9", "name": "x.net", "rid": 77, "idx": 3},
    "answer": {"t": "answer", "v": 1, "id": "r1", "name": "example.com", "status": "registered",
               "source": "whois", "registry": "verisign", "at": 1790000000000, "latency_us": 51000},
    "answer_unknown": {"t": "answer", "v": 1, "id": "r1", "name": "x.de", "status": "unknown",
                       "reason": "timeout", "source": "none", "at": 1, "raw": "% limit", "rid": 2, "idx": 0},
    "ready": {"t": "ready", "v": 1, "registry": "denic", "credit": 1000, "pid": 42},
    "heartbeat": {"t": "heartbeat", "v": 1, "registry": "denic", "credit": 12},
    "bye": {"t": "bye", "v": 1, "registry": "denic"},
    "error": {"t": "error", "v": 1, "daemon": "querier-denic", "registry": "denic", "level": "warning",
              "code": "rate_limited", "text": "backing off 60 s", "at": 5, "pid": 9},
    "put": {"t": "put", "v": 1, "id": "", "name": "a.de", "status": "available", "source": "whois",
            "at": 3, "ttl_s": 60, "timing": True, "latency_us": 4000},
    "ctl": {"t": "ctl", "v": 1, "cmd": "recent", "limit": 10, "level": "err"},
    "ctl_reply": {"t": "ctl_reply", "v": 1, "ok": False, "error": "no"},
    "newer_version": {"t": "answer", "v": 7, "id": "z", "name": "q.io", "status": "available",
                      "future": {"nested": [1, 2, 3]}},
    "missing_v": {"t": "check", "id": "a", "name": "b"},
    "wrong_type": {"t": "check", "v": 1, "id": 5, "name": "b"},
}
for name, msg in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(msgpack.packb(msg, use_bin_type=True))
with open(os.path.join(out, "array_bomb"), "wb") as f:
    f.write(b"\xdd\xff\xff\xff\xff")
with open(os.path.join(out, "not_msgpack"), "wb") as f:
    f.write(b"example.com\r\n")
print("wrote", len(seeds) + 2, "seeds to", out)
