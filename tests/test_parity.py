#!/usr/bin/python3
"""test_parity.py --server PATH/TO/semcached --table PATH/TO/embeddings.sctab
                  [--seed N] [--count N] [--verbose]

The nng API and the HTTP API must agree (docs/HTTP.md: the JSON body "runs
through the same decoder and validator as a request on the nng socket").
Two fresh semcacheds get the same sequence of requests, one over nng
(msgpack, clients/python/semcache.py), the other over HTTP (JSON, urllib):
edge cases first, then random requests of every op, good and bad. Each
pair of replies must agree: success or error, the error code (and the HTTP
status docs/HTTP.md gives it), the id echoed, every result field (bytes as
the HTTP front writes them, float32s compared as float32), and stats,
ns_list and the ledger's counters afterwards. Prints "N passed, N failed"
last; exits 1 on a difference."""
import base64
import json
import math
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(HERE, "..", "clients", "python"))
from test_semcache import (check, embed_table, free_port,  # noqa: E402
                           wait_client, wait_http)
import test_semcache  # noqa: E402

VERBOSE = "--verbose" in sys.argv

# docs/HTTP.md, section 1.1: the status of a reply by its error code.
STATUS = {"bad_request": 400, "version": 400, "unknown_op": 400, "dim": 400,
          "nan": 400, "zero_vector": 400, "too_big": 400, "range": 400,
          "model_mismatch": 400, "unauthorized": 401, "forbidden": 403,
          "no_namespace": 404, "not_found": 404, "namespace_exists": 409,
          "no_embedder": 503, "io_error": 503, "busy": 503,
          "shutting_down": 503, "not_supported": 501, "full": 507}


class Bin:
    """A value sent as msgpack bin over nng and as the field's JSON form
    over HTTP ("response": a string when UTF-8, else response_base64)."""

    def __init__(self, b):
        self.b = b


class Vec:
    """A vector: float32 bin over nng, an array of numbers over HTTP."""

    def __init__(self, xs):
        self.xs = xs


class Raw:
    """A value each API writes its own way: nng_value over nng, json_value
    over HTTP (what the other cannot express, sent as its nearest)."""

    def __init__(self, nng_value, json_value):
        self.nng, self.json = nng_value, json_value


def to_nng(v):
    if isinstance(v, Raw):
        return v.nng
    if isinstance(v, Bin):
        return v.b
    if isinstance(v, Vec):
        return struct.pack(f"<{len(v.xs)}f", *v.xs)
    if isinstance(v, dict):
        return {k: to_nng(x) for k, x in v.items()}
    if isinstance(v, list):
        return [to_nng(x) for x in v]
    return v


def to_json(v):
    if isinstance(v, Raw):
        return v.json
    if isinstance(v, Vec):
        return list(v.xs)
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if isinstance(x, Bin):
                try:
                    out[k] = x.b.decode("utf-8")
                except UnicodeDecodeError:
                    out[k + "_base64"] = base64.b64encode(x.b).decode()
            else:
                out[k] = to_json(x)
        return out
    if isinstance(v, list):
        return [to_json(x) for x in v]
    return v


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def norm_nng(v):
    """An nng reply as the HTTP front writes it (docs/HTTP.md)."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if isinstance(x, (bytes, str)):
                b = x if isinstance(x, bytes) else x.encode(
                    "utf-8", "surrogateescape")
                try:
                    out[k] = b.decode("utf-8")
                except UnicodeDecodeError:
                    out[k + "_base64"] = base64.b64encode(b).decode()
            else:
                out[k] = norm_nng(x)
        return out
    if isinstance(v, list):
        return [norm_nng(x) for x in v]
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return norm(v)


def norm(v):
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, float):
        return None if not math.isfinite(v) else f32(v)
    if isinstance(v, dict):
        return {k: norm(x) for k, x in v.items()}
    if isinstance(v, list):
        return [norm(x) for x in v]
    return v


class Pair:
    def __init__(self, server, table, tmp, *args):
        self.procs = []
        self.nng = None
        self.http = None
        for side in ("nng", "http"):
            port, hport = free_port(), free_port()
            data = os.path.join(tmp, side + str(len(args)))
            os.mkdir(data)
            log = open(data + ".log", "w")
            proc = subprocess.Popen(
                [server, "--listen", f"tcp://127.0.0.1:{port}", "--http",
                 f"127.0.0.1:{hport}", "--embed-table", table, "--data-dir",
                 data, "--threads", "2", *args],
                stderr=log)
            log.close()
            self.procs.append((proc, data + ".log"))
            c = wait_client(port)
            if c is None or not wait_http(hport, proc=proc):
                raise RuntimeError("semcached does not answer")
            if side == "nng":
                self.nng = c
            else:
                self.http = f"http://127.0.0.1:{hport}"
                c.close()

    def call_nng(self, op, fields):
        req = {"v": 1, "op": op}
        req.update(to_nng(fields))
        return norm_nng(self.nng.call(req))

    def call_http(self, op, fields, auth=None):
        body = json.dumps(to_json(fields)).encode()
        rq = urllib.request.Request(f"{self.http}/v1/{op}", data=body,
                                    method="POST")
        if auth is not None:
            rq.add_header("Authorization", f"Bearer {auth}")
        try:
            with urllib.request.urlopen(rq, timeout=10) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        return status, norm(json.loads(text))

    def stop(self):
        self.nng.close()
        for p, _ in self.procs:
            p.send_signal(signal.SIGTERM)
        for p, log in self.procs:
            try:
                p.wait(timeout=30)  # a sanitizer build's leak check
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            check(p.returncode == 0,
                  f"semcached exits 0 on SIGTERM (status {p.returncode})")
            if p.returncode != 0:
                with open(log) as f:
                    print(f.read()[-4000:], file=sys.stderr)


# The ledger's figures that count each server's own CPU time.
TIMED = {"usd_embed", "usd_lookup", "usd_spent", "usd_net", "embed_cpu_s",
         "lookup_cpu_s", "return_on_spend", "break_even_hit_rate",
         "usd_per_request", "month_with", "over_target", "timeline",
         "first_ms", "days", "lookups_per_day", "month_without"}


def diff(a, b, path=""):
    """The first place two normalised replies differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k == "message" or k in TIMED:
                continue  # for people, or of each server's CPU time
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'nng' if k in a else 'http'}"
            d = diff(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} elements"
        for i, (x, y) in enumerate(zip(a, b)):
            d = diff(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    if a != b or type(a) is not type(b):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
                and not isinstance(a, bool) and not isinstance(b, bool) \
                and f32(a) == f32(b):
            return None
        return f"{path}: nng {a!r} vs http {b!r}"
    return None


def run(pair, op, fields, what=None, auth=None):
    """Sends op with fields both ways and checks the replies agree; auth:
    a key sent in the "key" field over nng, as "Authorization: Bearer"
    over HTTP."""
    a = pair.call_nng(op, fields if auth is None else {"key": auth, **fields})
    status, b = pair.call_http(op, fields, auth)
    what = what or f"{op} {json.dumps(to_json(fields))[:200]}"
    d = diff(a, b)
    check(d is None, f"{what}: {d}")
    if b.get("ok") is True:
        want = 200
    else:
        want = STATUS.get((b.get("error") or {}).get("code"), 500)
    check(status == want, f"{what}: HTTP status {status}, its code says "
          f"{want}")
    if VERBOSE:
        print(f"{what} -> {json.dumps(b)[:160]}")
    return a


# ---- the requests --------------------------------------------------------

def unit(rng, dim):
    return Vec([rng.uniform(-1, 1) for _ in range(dim)])


LONG_NS = "n" * 128


def deep(d, inner=1):
    """inner inside d arrays."""
    for _ in range(d):
        inner = [inner]
    return inner


def item(nng, http):
    """A batch item each API writes its own way."""
    return Raw(to_nng(nng), to_json(http))


def edge_cases():
    """(op, fields, what): the edge cases of docs/PROTOCOL.md, in order."""
    v3 = Vec([0.6, 0.8, 0.0])
    cases = [
        ("ping", {}),
        ("ns_list", {}),
        ("stats", {}),
        ("insert", {"ns": "e", "text": "return policy?", "vec": v3,
                    "response": Bin(b"30 days"), "model": "gpt-4o",
                    "input_tokens": 12, "output_tokens": 40}),
        ("lookup", {"ns": "e", "vec": Vec([0.6, 0.79, 0.05])}),
        ("lookup", {"ns": "e", "text": "Return  policy?"}),
        ("lookup", {"ns": "e", "vec": v3, "threshold": 1.5}),
        ("lookup", {"ns": "e", "vec": v3, "threshold": -1}),
        ("lookup", {"ns": "e", "vec": v3, "threshold": "0.5"}),
        ("lookup", {"ns": "e", "vec": v3, "threshold": 1e300}),
        ("lookup", {"ns": "e", "vec": Vec([1, 0])}),
        ("lookup", {"ns": "e", "vec": Vec([0, 0, 0])}),
        ("lookup", {"ns": "e", "vec": "abc"}),
        ("lookup", {"ns": "e", "vec": Vec([])}),
        ("lookup", {"ns": "e", "vec": Vec([0.1] * 4097)}),
        ("lookup", {"ns": "e"}),
        ("lookup", {"vec": v3}),
        ("lookup", {"ns": "nope", "vec": v3}),
        ("lookup", {"ns": "bad name!", "vec": v3}),
        ("lookup", {"ns": LONG_NS + "x", "vec": v3}),
        ("lookup", {"ns": "", "vec": v3}),
        ("lookup", {"ns": "e", "vec": v3, "scope": "s" * 1025}),
        ("lookup", {"ns": "e", "vec": v3, "scope": "a\u0000b"}),
        ("lookup", {"ns": "e", "vec": v3, "embed_tokens": -1}),
        ("lookup", {"ns": "e", "vec": v3, "embed_tokens": 2 ** 32}),
        ("lookup", {"ns": "e", "vec": v3, "embed_model": "other"}),
        ("lookup", {"ns": "e", "vec": v3, "unknown": {"x": [1, 2]}}),
        ("lookup", {"ns": "e", "vec": v3, "feature": 5}),
        ("lookup", {"ns": "e", "vec": v3, "v": 2}),
        ("lookup", {"ns": "e", "vec": v3, "v": "1"}),
        ("lookup", {"ns": "e", "vec": v3, "id": 7}),
        ("lookup", {"ns": "e", "vec": v3, "id": -7}),
        ("lookup", {"ns": "e", "vec": v3, "id": 2 ** 40, "threshold": "x"}),
        ("lookup", {"ns": "e", "vec": v3, "key": 5}),
        ("lookup", {"ns": "e", "text": "t" * (1 << 20 + 1)}),
        ("insert", {"ns": "e", "vec": v3}),
        ("insert", {"ns": "e", "response": Bin(b"x")}),
        ("insert", {"ns": "e", "vec": v3, "response": 5}),
        ("insert", {"ns": "e", "vec": v3, "response": Bin(b"\xff\xfe\x00\x01"),
                    "text": "binary"}),
        ("lookup", {"ns": "e", "text": "binary"}),
        ("insert", {"ns": "e", "vec": v3, "response": Bin(b"a\x00b"),
                    "text": "nul"}),
        ("lookup", {"ns": "e", "text": "nul"}),
        ("insert", {"ns": "e", "vec": v3, "response": Bin(b"r"), "ttl": -2}),
        ("insert", {"ns": "e", "vec": v3, "response": Bin(b"r"), "ttl": 1e11}),
        ("insert", {"ns": "e", "vec": v3, "response": Bin(b"r"), "ttl": -1}),
        ("insert", {"ns": "e", "vec": v3, "response": Bin(b"r"),
                    "input_tokens": 5.0}),
        ("insert", {"ns": "e", "vec": v3, "response": Bin(b"r"),
                    "input_tokens": 2 ** 32}),
        ("insert", {"ns": "e", "vec": v3, "response": Bin(b"r"),
                    "model": "m" * 257}),
        ("insert", {"ns": "e", "vec": Vec([1, 2, 3, 4]),
                    "response": Bin(b"r")}),
        ("insert", {"ns": "e", "vec": v3, "response": Bin(b"r"),
                    "embed_model": "other"}),
        ("insert", {"ns": LONG_NS, "vec": v3, "response": Bin(b"long")}),
        ("lookup", {"ns": LONG_NS, "vec": v3}),
        ("insert", {"ns": "t", "text": "How can I cancel my order?",
                    "response": Bin(b"cancel")}),
        ("lookup", {"ns": "t", "text": "I want to cancel my order"}),
        ("lookup", {"ns": "t", "text": "Where can I track my order?"}),
        ("lookup", {"ns": "t", "text": "cancel order", "threshold": 0.3}),
        ("lookup", {"ns": "t", "text": ""}),
        ("lookup", {"ns": "t", "vec": v3}),
        ("insert_batch", {"ns": "e", "items": [
            {"vec": v3, "response": Bin(b"b1"), "text": "b1"},
            {"vec": Vec([1, 0]), "response": Bin(b"b2")},
            {"ns": "e2", "vec": Vec([0, 1, 0]), "response": Bin(b"b3")}]}),
        ("lookup_batch", {"ns": "e", "items": [
            {"vec": v3}, {"vec": Vec([1, 0])}, {"text": "b1"},
            {"ns": "e2", "vec": Vec([0, 1, 0])}, {"ns": "zz", "vec": v3}]}),
        ("lookup_batch", {"ns": "e", "items": []}),
        ("lookup_batch", {"ns": "e", "items": {"vec": v3}}),
        ("lookup_batch", {"ns": "e"}),
        ("lookup_batch", {"ns": "e", "items": [{"vec": v3}] * 1025}),
        ("lookup_batch", {"ns": "e", "items": [{"vec": v3}, 5, {"vec": v3}]}),
        ("lookup_batch", {"ns": "e", "items": [
            {"vec": v3}, {"vec": v3, "threshold": "x"}, {"vec": v3}]}),
        # A vec or response the JSON front cannot translate, in an item:
        # that item is malformed, as on the wire, not the whole request.
        ("lookup_batch", {"ns": "e", "items": [
            {"vec": v3}, {"vec": "abc"}, {"vec": v3}]}),
        ("lookup_batch", {"ns": "e", "items": [
            {"vec": v3}, {"vec": Vec([])}, {"vec": v3}]}),
        ("insert_batch", {"ns": "e", "items": [
            {"vec": v3, "response": Bin(b"ok")},
            {"vec": v3, "response": 5}, {"vec": v3, "response": Bin(b"x")}]}),
        ("lookup_batch", {"ns": "e", "items": [
            {"vec": v3}, {"vec": Raw(None, [1e39, 0, 0])}, {"vec": v3}]}),
        # response_base64 is the HTTP front's: a bad one is as a bad
        # response on the wire.
        ("insert_batch", {"ns": "e", "items": [
            {"vec": v3, "response": Bin(b"ok")},
            item({"vec": v3, "response": None},
                 {"vec": v3, "response": "x", "response_base64": "eA=="}),
            {"vec": v3, "response": Bin(b"x")}]}),
        ("insert_batch", {"ns": "e", "items": [
            {"vec": v3, "response": Bin(b"ok")},
            item({"vec": v3, "response": None},
                 {"vec": v3, "response_base64": "not base64"}),
            {"vec": v3, "response": Bin(b"x")}]}),
        # The first field that fails to decode, in the body's order, is
        # the one refused.
        ("lookup", {"ns": LONG_NS + "x", "vec": "abc"}),
        ("lookup", {"vec": "abc", "ns": LONG_NS + "x"}),
        ("insert", {"ns": "e", "scope": "s" * 1025, "vec": v3,
                    "response": 5}),
        ("insert", {"ns": "e", "vec": v3, "response": 5, "text": 7}),
        ("lookup", {"ns": "e", "embed_tokens": 2 ** 64 - 1, "vec": []}),
        ("lookup_batch", {"ns": "e", "items": [
            {"ns": LONG_NS + "x", "vec": "abc"}, {"vec": v3}]}),
        # "vec" and "response" inside a field the server does not know are
        # skipped, as on the wire.
        ("lookup", {"ns": "e", "vec": v3, "meta": {"vec": "abc"}}),
        ("lookup", {"ns": "e", "vec": v3, "meta": [{"vec": [1, "a"]}]}),
        ("insert", {"ns": "e", "vec": v3, "response": Bin(b"m"),
                    "meta": {"response": 5, "response_base64": "!"}}),
        ("lookup_batch", {"ns": "e", "items": [
            {"vec": v3, "meta": {"vec": {}}}]}),
        # Nesting inside an ignored field: refused past 16 levels, at the
        # same depth in the request and in a batch item.
        *[("lookup", {"ns": "e", "vec": v3, "meta": deep(d)})
          for d in (15, 16, 17, 18)],
        *[("lookup", {"ns": "e", "vec": v3, "meta": deep(d, {"x": 1})})
          for d in (14, 15, 16, 17)],
        *[("lookup_batch", {"ns": "e", "items": [
            {"vec": v3}, {"vec": v3, "meta": deep(d)}, {"vec": v3}]})
          for d in (15, 16, 17, 18)],
        # ... where the wire would: after an earlier bad field, that one.
        ("lookup", {"ns": LONG_NS + "x", "vec": v3, "meta": deep(17)}),
        ("lookup", {"meta": deep(17), "ns": LONG_NS + "x", "vec": v3}),
        ("insert", {"ns": "e", "ttl": 1e11,
                    "vec": v3, "response": Bin(b"r"), "meta": deep(20)}),
        ("lookup_batch", {"scope": "s" * 1025, "items": [
            {"vec": v3, "meta": deep(17)}]}),
        ("lookup_batch", {"ns": "e", "items": [
            {"vec": v3, "scope": "s" * 1025, "meta": deep(17)}]}),
        ("delete", {"entry": 1}),
        ("delete", {"entry": 1}),
        ("delete", {"entry": -1}),
        ("delete", {"entry": "1"}),
        ("delete", {}),
        ("feedback", {"entry": 2, "feature": "f", "user": "u"}),
        ("feedback", {"entry": 2}),
        ("feedback", {"entry": 99999}),
        ("ns_create", {"ns": "c", "threshold": 0.8, "margin": 0.05, "dim": 4,
                       "storage": "f16", "ttl": 100, "ttl_mode": "sliding",
                       "max_entries": 10, "vote": False}),
        ("ns_create", {"ns": "c"}),
        ("ns_create", {"ns": "c2", "dim": 4097}),
        ("ns_create", {"ns": "c2", "storage": "f64"}),
        ("ns_create", {"ns": "c2", "backend": "ivf-flat"}),
        ("ns_create", {"ns": "c2", "backend": "auto", "storage": "int8"}),
        ("ns_create", {"ns": "c2", "margin": 3}),
        ("ns_create", {"ns": "c2", "max_response_bytes": 0}),
        ("ns_create", {"ns": "c2", "nlist": 70000}),
        ("ns_create", {"ns": "c2", "ttl_mode": "x" * 40}),
        ("ns_create", {}),
        ("ns_create", {"ns": "c3", "embed_model": "mine", "dim": 3}),
        ("insert", {"ns": "c3", "vec": v3, "response": Bin(b"r")}),
        ("insert", {"ns": "c3", "vec": v3, "response": Bin(b"r"),
                    "embed_model": "mine", "text": "q"}),
        ("lookup", {"ns": "c3", "text": "q"}),
        ("ns_configure", {"ns": "c", "threshold": 0.7, "max_bytes": 100000}),
        ("ns_configure", {"ns": "c", "dim": 3}),
        ("ns_configure", {"ns": "c", "threshold": -2}),
        ("ns_configure", {"ns": "missing", "threshold": 0.7}),
        ("ns_configure", {"ns": "c", "vote": 1}),
        ("insert", {"ns": "c", "vec": Vec([1, 0, 0, 0]), "response": Bin(b"c"),
                    "scope": "s1"}),
        ("lookup", {"ns": "c", "vec": Vec([1, 0.1, 0, 0]), "scope": "s1"}),
        ("lookup", {"ns": "c", "vec": Vec([1, 0.1, 0, 0]), "scope": "s2"}),
        ("stats", {"ns": "c"}),
        ("stats", {"ns": "missing"}),
        ("stats", {"ns": 5}),
        ("flush", {"ns": "c"}),
        ("flush", {"ns": "missing"}),
        ("ns_drop", {"ns": "c"}),
        ("ns_drop", {"ns": "c"}),
        ("ns_drop", {}),
        ("report", {"by": "feature"}),
        ("report", {"by": "nothing"}),
        ("report", {"by": "user", "limit": 1}),
        ("report", {"by": "feature", "after": "", "limit": 2}),
        ("report", {"after": "zzz"}),
        ("report", {"limit": 0}),
        ("report", {"limit": 10001}),
        ("report", {"limit": "5"}),
        ("report", {"after": 5}),
        ("ns_list", {}),
    ]
    return cases


ADMIN, WRITER, READER = "a" * 32, "w" * 32, "r" * 32
KEYS = {"keys": [{"key": ADMIN, "name": "admin", "admin": True},
                 {"key": WRITER, "name": "writer", "write": ["w:*"]},
                 {"key": READER, "name": "reader", "read": ["w:*", "r"]}]}


def keyed_cases():
    """(op, fields, auth) against a server with access keys (section 2.5
    of docs/PROTOCOL.md)."""
    v3 = Vec([0.6, 0.8, 0.0])
    ins = {"ns": "w:a", "vec": v3, "response": Bin(b"r"), "text": "q"}
    return [
        ("ping", {}, None),
        ("lookup", {"ns": "w:a", "vec": v3}, None),
        ("lookup", {"ns": "w:a", "vec": v3, "key": "x" * 32}, None),
        ("lookup", {"ns": "w:a", "vec": v3, "key": 5}, None),
        ("lookup", {"ns": "w:a", "vec": "abc"}, None),
        ("lookup", {"ns": "w:a", "vec": v3, "threshold": 9}, None),
        ("insert", ins, READER),
        ("insert", ins, WRITER),
        ("insert", {**ins, "key": WRITER}, None),
        ("insert", {**ins, "key": "bogus"}, WRITER),
        ("insert", {**ins, "ns": "r"}, WRITER),
        ("insert", {**ins, "response": 5}, None),
        ("insert", {**ins, "response": None}, READER),
        ("lookup", {"ns": "w:a", "text": "q"}, READER),
        ("lookup", {"ns": "r", "text": "q"}, READER),
        ("lookup", {"ns": "other", "text": "q"}, READER),
        ("lookup_batch", {"ns": "w:a", "items": [
            {"vec": v3}, {"ns": "x", "vec": v3}, {"vec": v3, "key": ADMIN}]},
         READER),
        ("insert_batch", {"ns": "w:b", "items": [
            {"vec": v3, "response": Bin(b"1")},
            {"ns": "r", "vec": v3, "response": Bin(b"2")}]}, WRITER),
        ("delete", {"entry": 1}, READER),
        ("feedback", {"entry": 1}, READER),
        ("delete", {"entry": 1}, WRITER),
        ("delete", {"entry": 2}, None),
        ("stats", {}, READER),
        ("stats", {"ns": "w:a"}, READER),
        ("stats", {"ns": "w:a"}, None),
        ("flush", {"ns": "w:a"}, READER),
        ("ns_create", {"ns": "w:c"}, WRITER),
        ("ns_create", {"ns": "w:c"}, ADMIN),
        ("ns_list", {}, READER),
        ("ns_list", {}, ADMIN),
        ("ns_drop", {"ns": "w:c"}, ADMIN),
        ("report", {"ns": "w:a"}, READER),
        ("report", {}, READER),
        ("stats", {}, ADMIN),
    ]


def documented(pair):
    """The differences docs/HTTP.md documents: each is checked to be as
    it says (nng reply code, HTTP status and code). Last: an insert may
    take on one side only."""
    run(pair, "ns_create", {"ns": "doc", "dim": 3})
    v3 = Vec([0.6, 0.8, 0.0])
    inf = struct.pack("<3f", 3.4e38, math.inf, 0)
    cases = [
        # A vec element past float32: "range" in JSON; on the wire the
        # float32 it rounds to is Inf, "nan".
        ("lookup", {"ns": "doc", "vec": inf}, "nan",
         '{"ns": "doc", "vec": [3.4e38, 1e39, 0]}', 400, "range"),
        # NaN and Infinity cannot be written in JSON.
        ("lookup", {"ns": "doc", "vec": v3, "threshold": math.nan}, "nan",
         '{"ns": "doc", "vec": [1, 0, 0], "threshold": NaN}', 400,
         "bad_request"),
        # JSON integers are signed 64-bit ones.
        ("delete", {"entry": 2 ** 63}, "not_found",
         '{"entry": 9223372036854775808}', 400, "bad_request"),
        ("insert", {"ns": "doc", "vec": v3, "response": b"r",
                    "input_tokens": 2 ** 64 - 1}, "range",
         '{"ns": "doc", "vec": [1, 0, 0], "response": "r", '
         '"input_tokens": 18446744073709551615}', 400, "bad_request"),
        # Strings need not be UTF-8 on the wire; JSON's must be.
        ("lookup", {"ns": "doc", "vec": v3,
                    "scope": b"\xff".decode("utf-8", "surrogateescape")},
         None, b'{"ns": "doc", "vec": [1, 0, 0], "scope": "\xff"}', 400,
         "bad_request"),
        # A msgpack array is not a vec; a JSON one is.
        ("lookup", {"ns": "doc", "vec": [0.6, 0.8, 0.0]}, "bad_request",
         '{"ns": "doc", "vec": [0.6, 0.8, 0.0]}', 200, None),
        # response_base64 is the HTTP front's; the wire ignores it.
        ("insert", {"ns": "doc", "vec": v3, "response_base64": "eA=="},
         "bad_request", '{"ns": "doc", "vec": [1, 0, 0], '
         '"response_base64": "eA=="}', 200, None),
        # The op comes from the path; v defaults to 1 over HTTP.
        ("ping", {"v": None}, "version", '{}', 200, None),
    ]
    for op, nreq, ncode, body, status, hcode in cases:
        req = {"v": 1, "op": op, **to_nng(nreq)}
        if req["v"] is None:
            del req["v"]
        a = norm_nng(pair.nng.call(req))
        got = None if a["ok"] else a["error"]["code"]
        check(got == ncode, f"documented: nng {op} {nreq!r:.80}: {got}, "
              f"want {ncode}")
        if isinstance(body, str):
            body = body.encode()
        rq = urllib.request.Request(f"{pair.http}/v1/{op}", data=body,
                                    method="POST")
        try:
            with urllib.request.urlopen(rq, timeout=10) as r:
                hs, text = r.status, r.read()
        except urllib.error.HTTPError as e:
            hs, text = e.code, e.read()
        b = json.loads(text)
        got = None if b["ok"] else b["error"]["code"]
        check(hs == status and got == hcode,
              f"documented: http {op} {body[:80]!r}: {hs} {got}, want "
              f"{status} {hcode}")


def random_case(rng, i):
    nss = ["r1", "r2", "rt", "e", LONG_NS, "bad/ns", ""]
    ns = rng.choice(nss[:3] * 4 + nss)
    dim = 4 if ns != "rt" else 100
    base = random.Random(ns).sample(range(dim), dim)

    def vec():
        r = rng.random()
        if r < 0.05:
            return Vec([0.0] * dim)
        if r < 0.1:
            return Vec([1.0] * (dim + rng.choice([-1, 1])))
        if r < 0.13:
            return rng.choice(["x", 5, [1, "a"], None, Vec([])])
        # Near one of four directions, so that lookups hit and miss.
        k = rng.randrange(4)
        xs = [0.05 * rng.uniform(-1, 1) for _ in range(dim)]
        xs[base[k]] += 1.0
        return Vec(xs)

    def text():
        words = ["cancel", "order", "track", "refund", "ship", "my", "the",
                 "where", "how", "do", "I", "return", "item", "Canada"]
        return " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))

    def maybe(f, d, p=0.3):
        if rng.random() < p:
            f[d[0]] = d[1]()

    op = rng.choice(["lookup"] * 4 + ["insert"] * 4 + [
        "lookup_batch", "insert_batch", "delete", "feedback", "stats",
        "ns_create", "ns_configure", "ns_drop", "flush", "ns_list",
        "report"])
    f = {"ns": ns}
    if op in ("lookup", "insert"):
        if ns == "rt" or rng.random() < 0.2:
            f["text"] = text()
        if ns != "rt" or rng.random() < 0.2:
            f["vec"] = vec()
        maybe(f, ("scope", lambda: rng.choice(["", "a", "b", "s" * 1025])))
        if op == "lookup":
            maybe(f, ("threshold", lambda: rng.choice(
                [0.5, 0.9, 0.99, 1, -1, 1.01, "x", 0.0])))
            maybe(f, ("embed_tokens", lambda: rng.choice([0, 10, -3])), 0.1)
        else:
            f["response"] = Bin(rng.choice(
                [b"a", b"b", b"\xff\x00", "é".encode(), b"resp %d" % i]))
            maybe(f, ("ttl", lambda: rng.choice([0, -1, 3600, 0.5e3, -5,
                                                 1e12, "1"])), 0.2)
            maybe(f, ("model", lambda: rng.choice(["gpt-4o", "x" * 300])),
                  0.2)
            maybe(f, ("input_tokens", lambda: rng.choice([1, 100, 2 ** 33,
                                                          1.5])), 0.2)
            maybe(f, ("output_tokens", lambda: rng.choice([1, 50])), 0.2)
        maybe(f, ("feature", lambda: rng.choice(["f1", "f2", ""])), 0.2)
        maybe(f, ("user", lambda: rng.choice(["u1", "u2"])), 0.2)
        if rng.random() < 0.05:
            del f["ns"]
    elif op in ("lookup_batch", "insert_batch"):
        items = []
        for _ in range(rng.randint(1, 5)):
            it = {}
            if ns == "rt" or rng.random() < 0.2:
                it["text"] = text()
            if ns != "rt":
                it["vec"] = vec()
            if op == "insert_batch":
                it["response"] = Bin(rng.choice([b"a", b"b", b"c"]))
            if rng.random() < 0.2:
                it["scope"] = rng.choice(["a", "b"])
            if rng.random() < 0.1:
                it["ns"] = rng.choice(nss)
            if op == "lookup_batch" and rng.random() < 0.2:
                it["threshold"] = rng.choice([0.5, 0.99, 2])
            items.append(it)
        f["items"] = items
    elif op in ("delete", "feedback"):
        f = {"entry": rng.choice([1, 2, 3, rng.randint(1, i + 2),
                                  rng.randint(1, i + 2), 0, 10 ** 6])}
    elif op == "ns_create":
        maybe(f, ("threshold", lambda: rng.choice([0.8, 0.95, 2])))
        maybe(f, ("margin", lambda: rng.choice([0, 0.02, -1])))
        maybe(f, ("dim", lambda: rng.choice([0, 4, 5000])))
        maybe(f, ("max_entries", lambda: rng.choice([0, 3, 20])))
        maybe(f, ("storage", lambda: rng.choice(["f32", "f16", "int8", "x"])))
        maybe(f, ("backend", lambda: rng.choice(["flat", "auto", "ivf-sq8",
                                                 7])), 0.1)
        maybe(f, ("ttl", lambda: rng.choice([0, 3600, -1, 1e11])), 0.2)
        maybe(f, ("vote", lambda: rng.choice([True, False, 0])), 0.2)
        maybe(f, ("max_response_bytes", lambda: rng.choice(
            [1, 4, 1 << 20, 1 << 27])), 0.2)
        maybe(f, ("embed_model", lambda: rng.choice(["", "m1"])), 0.1)
    elif op == "ns_configure":
        maybe(f, ("threshold", lambda: rng.choice([0.5, 0.9, 1.0, 7])), 0.6)
        maybe(f, ("margin", lambda: rng.choice([0, 0.05])))
        maybe(f, ("max_entries", lambda: rng.choice([0, 5, 50])))
        maybe(f, ("ttl_mode", lambda: rng.choice(["absolute", "sliding",
                                                  "other"])))
        maybe(f, ("max_response_bytes", lambda: rng.choice([0, 2, 64])),
              0.1)
        maybe(f, ("vote", lambda: rng.choice([True, False])), 0.1)
        maybe(f, ("nprobe", lambda: rng.choice([0, 8, 1 << 20])), 0.1)
        maybe(f, ("storage", lambda: "f16"), 0.05)
    elif op == "report":
        f = rng.choice([{}, f, {"by": rng.choice(["ns", "feature", "user",
                                                  "x"])}])
        maybe(f, ("limit", lambda: rng.choice([0, 1, 2, 1000, 10001])), 0.3)
        maybe(f, ("after", lambda: rng.choice(["", "a", "f1", "zz"])), 0.3)
    elif op == "ns_list":
        f = {}
    elif op in ("stats", "flush") and rng.random() < 0.3:
        f = {}
    return op, f


def main(argv):
    server = argv[argv.index("--server") + 1]
    table = embed_table(argv, "test_parity")
    if table is None:
        return 1
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 1
    count = int(argv[argv.index("--count") + 1]) if "--count" in argv else 400
    with tempfile.TemporaryDirectory() as tmp:
        pair = Pair(server, table, tmp)
        try:
            for op, fields in edge_cases():
                run(pair, op, fields)
            rng = random.Random(seed)
            for i in range(count):
                op, fields = random_case(rng, i)
                run(pair, op, fields, f"#{i} {op} "
                    f"{json.dumps(to_json(fields))[:160]}")
            # And what the two caches hold afterwards.
            names = pair.call_nng("ns_list", {})["result"]["namespaces"]
            run(pair, "ns_list", {})
            run(pair, "stats", {})
            for ns in names:
                run(pair, "stats", {"ns": ns})
            # The ledger: its counters (not its CPU-time dollars).
            a = pair.call_nng("report", {})["result"]
            _, b = pair.call_http("report", {})
            b = b["result"]
            keys = ("requests", "exact_hits", "semantic_hits", "inserts",
                    "false_hits", "tokens_in_avoided", "tokens_out_avoided",
                    "key")
            for x, y in zip([a["total"]] + a["rows"],
                            [b["total"]] + b["rows"]):
                check(diff({k: x.get(k) for k in keys},
                           {k: y.get(k) for k in keys}) is None,
                      f"report rows agree: {x.get('key')}")
            check(len(a["rows"]) == len(b["rows"]), "report: as many rows")
            documented(pair)  # last: the two caches differ after it
        finally:
            pair.stop()
        cfg = os.path.join(tmp, "keys.json")
        with open(cfg, "w") as f:
            json.dump(KEYS, f)
        pair = Pair(server, table, tmp, "--config", cfg)
        try:
            for op, fields, auth in keyed_cases():
                run(pair, op, fields, f"keyed {op} "
                    f"{json.dumps(to_json(fields))[:120]} auth "
                    f"{(auth or '-')[:1]}", auth)
        finally:
            pair.stop()
    p_, f_ = test_semcache.passed, test_semcache.failed
    print(f"{p_} passed, {f_} failed")
    return 1 if f_ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
