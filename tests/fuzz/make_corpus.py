#!/usr/bin/python3
"""make_corpus.py - (re)writes the fuzz targets' seed corpora under
tests/fuzz/corpus/: a valid request of every operation of docs/PROTOCOL.md
(the session of its section 6 included) and a few batches for fuzz_dispatch
and fuzz_mp, a tiny embedder table (built by semcache-embed-build from a
tiny JSON), data/prices.json, valid configuration files, and for fuzz_http
the same requests as JSON bodies (first byte: the op's index in its list,
second: the Authorization header's) with a few malformed ones, and chat
completion requests for fuzz_proxy.

usage: tests/fuzz/make_corpus.py [--embed-build build/semcache-embed-build]
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def vec(*xs):
    return struct.pack("<%df" % len(xs), *xs)


def deep(n):
    x = 1
    for _ in range(n):
        x = [x]
    return x


def requests(as_dicts=False):
    v4 = vec(1.0, 0.5, 0.0, 0.0)
    r = {
        # The session of docs/PROTOCOL.md section 6.
        "session_ping": {"v": 1, "op": "ping"},
        "session_insert": {"v": 1, "op": "insert", "ns": "faq",
                           "text": "return policy?",
                           "vec": vec(0.6, 0.8, 0.0), "response": b"30 days"},
        "session_lookup": {"v": 1, "op": "lookup", "ns": "faq",
                           "vec": vec(0.6, 0.79, 0.05)},
        "session_v2": {"v": 2, "op": "ping"},
        # Every operation, on the target's namespaces "v" (dim 4) and "t".
        "insert_vec": {"v": 1, "op": "insert", "ns": "v", "vec": v4,
                       "response": b"answer", "scope": "s1", "ttl": 1.5,
                       "model": "gpt-4o-mini", "feature": "f", "user": "u",
                       "input_tokens": 10, "output_tokens": 20,
                       "embed_model": ""},
        "insert_text": {"v": 1, "op": "insert", "ns": "t",
                        "text": "how can I return a product?",
                        "response": b"use the form", "ttl": 0},
        "lookup_vec": {"v": 1, "op": "lookup", "ns": "v", "vec": v4,
                       "threshold": 0.5, "embed_tokens": 3, "feature": "f",
                       "user": "u", "scope": ""},
        "lookup_text": {"v": 1, "op": "lookup", "ns": "t",
                        "text": "how do i return a product"},
        "delete": {"v": 1, "op": "delete", "entry": 1},
        "feedback": {"v": 1, "op": "feedback", "entry": 2},
        "lookup_batch": {"v": 1, "op": "lookup_batch", "ns": "v", "items": [
            {"vec": v4}, {"vec": vec(0, 1, 0, 0), "scope": "s1"},
            {"text": "answer 1"}]},
        "insert_batch": {"v": 1, "op": "insert_batch", "ns": "v", "items": [
            {"vec": vec(0, 0, 1, 0), "response": b"a"},
            {"vec": vec(0, 0, 0, 1), "response": b"b", "text": "b"}]},
        "ns_create": {"v": 1, "op": "ns_create", "ns": "n1", "dim": 4,
                      "storage": "int8", "threshold": 0.8, "margin": 0.02,
                      "embed_model": "m@1", "ttl": 60, "ttl_mode": "sliding",
                      "max_entries": 10, "max_bytes": 100000,
                      "max_response_bytes": 1000},
        "ns_configure": {"v": 1, "op": "ns_configure", "ns": "v",
                         "threshold": 0.7, "margin": 0.0, "ttl": 2,
                         "ttl_mode": "absolute", "max_entries": 100,
                         "max_bytes": 0, "max_response_bytes": 4096},
        "ns_drop": {"v": 1, "op": "ns_drop", "ns": "n1"},
        "ns_list": {"v": 1, "op": "ns_list"},
        "stats": {"v": 1, "op": "stats", "ns": "v"},
        "stats_all": {"v": 1, "op": "stats"},
        "report": {"v": 1, "op": "report", "by": "feature"},
        "report_ns": {"v": 1, "op": "report", "ns": "t", "by": "user"},
        "report_page": {"v": 1, "op": "report", "by": "user", "limit": 2,
                        "after": "u"},
        "report_after_ns": {"v": 1, "op": "report", "ns": "v",
                            "after": "", "limit": 10000},
        "report_limit_bad": {"v": 1, "op": "report", "by": "feature",
                             "limit": 10001, "after": "f" * 300},
        "flush": {"v": 1, "op": "flush", "ns": "t"},
        # Refusals: each should reach its error path.
        "unknown_op": {"v": 1, "op": "frobnicate"},
        "nan_vec": {"v": 1, "op": "lookup", "ns": "v",
                    "vec": vec(float("nan"), 0, 0, 0)},
        "wrong_dim": {"v": 1, "op": "insert", "ns": "v", "vec": vec(1, 0),
                      "response": b"x"},
        "wrong_type": {"v": 1, "op": "insert", "ns": 7, "vec": "abc",
                       "response": 3},
        "deep": {"v": 1, "op": "ping", "x": deep(18)},
    }
    if as_dicts:
        return r
    out = {k: msgpack.packb(v, use_bin_type=True) for k, v in r.items()}
    # Hand-made bytes: a truncated map, a map claiming 2^32 entries.
    out["truncated"] = out["insert_vec"][:-3]
    out["huge_map"] = b"\xdf\xff\xff\xff\xff\xa1v\x01"
    # Batches for sc_dispatch_handle_many: messages split at ff 00.
    sep = b"\xff\x00"
    out["batch_lookups"] = sep.join([out["lookup_vec"], out["lookup_text"],
                                     out["lookup_vec"], out["session_lookup"]])
    out["batch_mixed"] = sep.join([out["insert_vec"], out["lookup_vec"],
                                   out["delete"], out["stats"]])
    return out


# sc_http_ops (proto/http.c) in its order, then the one fuzz_http.c takes
# for an index past them, which no route has.
HTTP_OPS = ["ping", "insert", "lookup", "lookup_batch", "insert_batch",
            "delete", "feedback", "ns_create", "ns_configure", "ns_drop",
            "ns_list", "stats", "flush", "report", "no_such_op"]


def to_json(x, key=None):
    """A msgpack request's value as the HTTP front's JSON takes it: "vec"
    bins as arrays of numbers, other bins as strings."""
    if isinstance(x, dict):
        return {k: to_json(v, k) for k, v in x.items()}
    if isinstance(x, list):
        return [to_json(v) for v in x]
    if isinstance(x, bytes):
        if key == "vec":
            return list(struct.unpack("<%df" % (len(x) // 4), x))
        return x.decode("utf-8")
    return x


def http_requests():
    out = {}
    for name, r in requests(as_dicts=True).items():
        op = r["op"] if r["op"] in HTTP_OPS else "no_such_op"
        body = {k: v for k, v in to_json(r).items() if k not in ("v", "op")}
        if r["v"] != 1:
            body["v"] = r["v"]
        text = json.dumps(body, allow_nan=True).replace("NaN", "1e39")
        out[name] = bytes([HTTP_OPS.index(op), 0]) + text.encode()
    insert = HTTP_OPS.index("insert")
    extra = {
        "empty": (HTTP_OPS.index("ns_list"), 0, b""),
        "bearer": (HTTP_OPS.index("ping"), 1, b"{}"),
        "bearer_blank": (HTTP_OPS.index("stats"), 2, b'{"ns": "v"}'),
        "basic": (HTTP_OPS.index("ping"), 3, b'{"key": "k2"}'),
        "malformed": (insert, 0, b'{"ns": "v", "vec": [1, 0,'),
        "not_object": (insert, 0, b'[1, 2, 3]'),
        "nul_inside": (insert, 0, b'{"ns": "t", "text": "a\\u0000b", '
                                   b'"response": "x"}'),
        "base64": (insert, 0, b'{"ns": "v", "vec": [0, 1, 1, 0], '
                              b'"response_base64": "aGVsbG8="}'),
        "base64_bad": (insert, 0, b'{"ns": "v", "vec": [0, 1, 1, 0], '
                                  b'"response_base64": "aGVsbG8"}'),
        "both_responses": (insert, 0, b'{"ns": "v", "vec": [1, 1, 0, 0], '
                                      b'"response": "a", '
                                      b'"response_base64": "YQ=="}'),
        "op_mismatch": (insert, 0, b'{"op": "lookup", "ns": "v"}'),
        "vec_not_numbers": (HTTP_OPS.index("lookup"), 0,
                            b'{"ns": "v", "vec": [1, "a", null, true]}'),
    }
    for name, (op, auth, body) in extra.items():
        out[name] = bytes([op, auth]) + body
    return out


def chat_requests():
    user = {"role": "user", "content": "How do I return a product?"}
    sys_ = {"role": "system", "content": "You are a shop's assistant."}
    return {
        "single": {"model": "gpt-4o-mini", "messages": [user]},
        "params": {"model": "gpt-4o", "messages": [sys_, user],
                   "temperature": 0, "top_p": 1.0, "max_tokens": 50,
                   "seed": 7, "stop": ["\n"], "stream": True,
                   "stream_options": {"include_usage": True},
                   "response_format": {"type": "json_object"},
                   "tools": [{"type": "function", "function": {
                       "name": "f", "parameters": {"type": "object"}}}]},
        "multi_turn": {"model": "m", "messages": [
            user, {"role": "assistant", "content": "Use the form."},
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "And"},
                                         {"type": "text", "text": "then?"}]}]},
        "image": {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:,"}}]}]},
        "last_assistant": {"model": "m", "messages": [
            user, {"role": "assistant", "content": "x"}]},
        "n2": {"model": "m", "n": 2, "messages": [user]},
        "empty_text": {"model": "m", "messages": [
            {"role": "user", "content": ""}]},
        "no_model": {"messages": [user]},
        "bad_role": {"model": "m", "messages": [{"role": 1}]},
        "bad_stream": {"model": "m", "stream": "yes", "messages": [user]},
        "long_model": {"model": "m" * 300, "messages": [user]},
    }


def tiny_table_json(path):
    words = ["the", "how", "do", "i", "return", "a", "product", "cancel",
             "my", "order", "track", "call", "phone", "please", "10th", "café"]
    dim = 8
    vectors = {}
    for i, w in enumerate(words):
        v = [((i * 7 + d * 3) % 11) / 16.0 for d in range(dim)]
        v[i % dim] += 1.0
        vectors[w] = v
    with open(path, "w") as f:
        json.dump({"dimensions": dim, "words": words, "vectors": vectors}, f,
                  ensure_ascii=False)


def write(d, name, data):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--embed-build",
                    default=os.path.join(ROOT, "build", "semcache-embed-build"))
    a = ap.parse_args()
    corpus = os.path.join(HERE, "corpus")
    for t in ("fuzz_dispatch", "fuzz_mp", "fuzz_embed_table", "fuzz_prices",
              "fuzz_config", "fuzz_http", "fuzz_proxy"):
        shutil.rmtree(os.path.join(corpus, t), ignore_errors=True)
    for name, data in requests().items():
        write(os.path.join(corpus, "fuzz_dispatch"), name + ".mp", data)
        # fuzz_mp: the first byte picks the read kinds.
        write(os.path.join(corpus, "fuzz_mp"), name + ".mp", b"\x0b" + data)
    for name, data in http_requests().items():
        write(os.path.join(corpus, "fuzz_http"), name + ".req", data)
    for name, body in chat_requests().items():
        write(os.path.join(corpus, "fuzz_proxy"), name + ".json",
              json.dumps(body).encode())
    write(os.path.join(corpus, "fuzz_proxy"), "nul_role.json",
          b'{"model": "m", "messages": [{"role": "user\\u0000x", '
          b'"content": "a\\u0000b"}]}')
    with tempfile.TemporaryDirectory() as tmp:
        js = os.path.join(tmp, "tiny.json")
        tab = os.path.join(tmp, "tiny.sctab")
        tiny_table_json(js)
        subprocess.run([a.embed_build, "--source", "fuzz", js, tab],
                       check=True, stdout=subprocess.DEVNULL)
        with open(tab, "rb") as f:
            write(os.path.join(corpus, "fuzz_embed_table"), "tiny.sctab",
                  f.read())
    with open(os.path.join(ROOT, "data", "prices.json"), "rb") as f:
        write(os.path.join(corpus, "fuzz_prices"), "prices.json", f.read())
    write(os.path.join(corpus, "fuzz_prices"), "small.json",
          b'{"date":"2025-01-01","cpu_hour":0.05,"models":{"m":{"input":1,'
          b'"output":2,"cached_input":0.5}},"embedding_models":{"e":0.02}}')
    cfg = {"listen": ["tcp://127.0.0.1:7700", "ipc:///run/semcached.sock"],
           "threads": 16, "data_dir": "/var/lib/semcached",
           "embed_table": "/var/lib/semcached/embeddings.sctab",
           "recv_max": 4194304, "tls_cert": "/etc/semcached/server.pem",
           "http": "127.0.0.1:8080", "http_max_conns": 1024,
           "max_clients": 10000,
           "prices": "/etc/semcached/prices.json",
           "max_namespaces": 1024, "max_bytes": 1073741824, "max_entries": 0,
           "namespaces": {
               "faq": {"threshold": 0.85, "margin": 0.02, "ttl": 86400},
               "docs": {"dim": 384, "storage": "int8",
                        "embed_model": "all-MiniLM-L6-v2",
                        "max_entries": 100000, "ttl_mode": "sliding",
                        "ttl": 3600, "max_bytes": 1000000,
                        "max_response_bytes": 65536}}}
    write(os.path.join(corpus, "fuzz_config"), "full.json",
          json.dumps(cfg, indent=1).encode())
    write(os.path.join(corpus, "fuzz_config"), "small.json",
          b'{"listen": "tcp://127.0.0.1:7701", "threads": 2}')
    return 0


if __name__ == "__main__":
    sys.exit(main())
