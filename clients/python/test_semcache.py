#!/usr/bin/python3
"""test_semcache.py --server PATH/TO/semcached - the Python client against a
real semcached on a free 127.0.0.1 port: every operation, errors, a raw
framing check, and the server's clean exit. Prints "N passed, N failed"."""
import os
import signal
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from semcache import Client, SemcacheError  # noqa: E402

passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {what}", file=sys.stderr)


def raises(code, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except SemcacheError as e:
        return e.code == code
    return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    server = sys.argv[sys.argv.index("--server") + 1]
    port = free_port()
    proc = subprocess.Popen([server, "--listen", f"tcp://127.0.0.1:{port}",
                             "--max-namespaces", "8"],
                            stderr=subprocess.DEVNULL)
    try:
        c = None
        for _ in range(50):
            try:
                c = Client("127.0.0.1", port, timeout=5)
                break
            except OSError:
                time.sleep(0.1)
        check(c is not None, "connect")
        run(c)
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        check(proc.wait(timeout=10) == 0, "semcached exits 0 on SIGTERM")
    print(f"test_semcache: {passed} passed, {failed} failed")
    return 1 if failed else 0


def run(c):
    check(c.ping()["server"].startswith("semcached"), "ping")
    e1 = c.insert("faq", "30 days", text="What is the return policy?",
                  vec=[0.9, 0.1, 0.2], model="gpt-4o", input_tokens=12,
                  output_tokens=40)
    check(isinstance(e1, int) and e1 > 0, "insert returns an entry id")
    r = c.lookup("faq", text="  what is the RETURN policy? ")
    check(r["hit"] and r["layer"] == "exact" and r["entry"] == e1, "exact hit")
    check(r["response"] == b"30 days" and r["input_tokens"] == 12, "hit payload")
    r = c.lookup("faq", vec=[0.85, 0.15, 0.2])
    check(r["hit"] and r["layer"] == "semantic" and r["similarity"] > 0.99,
          "semantic hit")
    r = c.lookup("faq", vec=[-0.2, 1.0, 0.0])
    check(not r["hit"] and r["reason"] == "below_threshold", "miss below threshold")
    r = c.lookup("faq", vec=[-0.2, 1.0, 0.0], threshold=-1.0)
    check(r["hit"], "per-request threshold")
    r = c.lookup("faq", vec=[0.9, 0.1, 0.2], scope="other")
    check(not r["hit"] and r["reason"] == "no_candidate", "scope isolation")
    check(raises("dim", c.lookup, "faq", vec=[1.0, 2.0]), "dim error")
    check(raises("not_found", c.delete, 987654), "not_found error")

    res = c.insert_batch("batch", [
        {"response": f"answer {i}", "vec": [1.0, float(i), 0.5]} for i in range(10)])
    check(len(res) == 10 and all(x["ok"] for x in res), "insert_batch")
    res = c.lookup_batch("batch", [{"vec": [1.0, float(i), 0.5]} for i in range(10)]
                         + [{"vec": [1.0, 2.0]}])
    check(all(x["ok"] and x["result"]["hit"] for x in res[:10]), "lookup_batch hits")
    check(not res[10]["ok"] and res[10]["error"]["code"] == "dim",
          "lookup_batch per-item error")

    c.ns_create("cfg", dim=3, storage="int8", threshold=0.5, ttl=60,
                ttl_mode="sliding")
    check("cfg" in c.ns_list(), "ns_create / ns_list")
    check(raises("namespace_exists", c.ns_create, "cfg"), "namespace_exists")
    c.ns_configure("cfg", threshold=0.8)
    check(raises("bad_request", c.ns_configure, "cfg", dim=4),
          "dim fixed at creation")
    c.ns_drop("cfg")
    check("cfg" not in c.ns_list(), "ns_drop")

    c.feedback(e1)
    r = c.lookup("faq", vec=[0.9, 0.1, 0.2])
    check(not r["hit"], "feedback quarantines")
    s = c.stats("faq")
    check(s["exact_hits"] == 1 and s["false_hits"] == 1 and s["lookups"] >= 6,
          "stats counters")
    check(sum(b[2] for b in s["histogram"]) == s["lookups"], "histogram sums")
    c.flush()
    check(c.stats()["entries"] == 0, "flush")

    # Every error code a client can provoke.
    check(raises("zero_vector", c.insert, "faq", "x", vec=[0.0, 0.0, 0.0]),
          "zero_vector")
    check(raises("range", c.lookup, "faq", vec=[1.0, 0.0, 0.0], threshold=2.0),
          "range")
    c.ns_create("small", max_response_bytes=10)
    check(raises("too_big", c.insert, "small", "x" * 11, vec=[1.0]), "too_big")
    check(raises("no_namespace", c.ns_drop, "never-made"), "no_namespace")
    full = False
    for i in range(10):
        try:
            c.ns_create(f"flood{i}")
        except SemcacheError as e:
            full = e.code == "full"
            break
    check(full, "namespace flood cap -> full")
    check(raises("bad_request", c.insert, "faq", "x"), "bad_request (no text/vec)")

    # Raw protocol: a version the server does not speak, and an unknown op.
    check(c.call({"v": 2, "op": "ping"})["error"]["code"] == "version", "version")
    check(c.call({"v": 1, "op": "nope"})["error"]["code"] == "unknown_op",
          "unknown op")
    # A request that is not a map still gets an error reply.
    c._sock.sendall(struct.pack(">QI", 5, 0x80007777) + b"\x01")
    (n,) = struct.unpack(">Q", c._recv_exact(8))
    body = c._recv_exact(n)
    check(body[:4] == struct.pack(">I", 0x80007777) and b"bad_request" in body,
          "non-map request answered with bad_request")
    check(c.ping()["version"] == 1, "still serving")


if __name__ == "__main__":
    sys.exit(main())
