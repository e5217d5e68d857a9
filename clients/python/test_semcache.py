#!/usr/bin/python3
"""test_semcache.py --server PATH/TO/semcached [--doc docs/PROTOCOL.md]
[--transcript]

The Python client against a real semcached on a free 127.0.0.1 port (and an
ipc:// socket): every operation, every error code a client can provoke, raw
framing (pipelining, oversize and garbage messages, a broken connection),
and the byte-by-byte session of PROTOCOL.md section 6, which must match the
live server exactly. Prints "N passed, N failed" last; exits 1 on a failure.

--transcript prints that session from the live server instead of testing
(paste it into PROTOCOL.md when the wire format changes on purpose)."""
import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, HERE)
import msgpack  # noqa: E402

import semcache  # noqa: E402
from semcache import Client, SemcacheError, connect  # noqa: E402
from testports import free_port  # noqa: E402,F401 (the tests import it)
import testtmp  # noqa: E402

# The temporary files of every test that imports this one in a directory
# of its process's (testtmp.py), which goes even when the process is killed.
testtmp.use()

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
        if e.code != code:
            print(f"  (got {e.code}: {e.message})", file=sys.stderr)
        return e.code == code
    return False


def embed_table(argv, prog):
    """The path after --table when that file is there; else None, once
    prog has said how to make it and counted itself failed."""
    table = argv[argv.index("--table") + 1]
    if os.path.exists(table):
        return table
    print(f"{prog}: no table at {table}: make it with "
          f"scripts/fetch-embeddings.sh {table}", file=sys.stderr)
    print(f"{prog}: 0 passed, 1 failed")
    return None


def wait_started(proc, port, log_path, timeout=60, http_port=None):
    """Waits until the semcached of proc answers a ping on port, and when
    http_port is given until its HTTP front accepts a connection too
    (semcached answers nng only once HTTP listens, test_startstop checks
    it: this second wait costs one connect, and a test that needs HTTP
    says so here); raises RuntimeError naming log_path when it exits or
    the timeout passes (60 s by default: a replay under ASan and load)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with Client("127.0.0.1", port, timeout=2) as c:
                c.ping()
            break
        except (OSError, semcache.ProtocolError):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("semcached did not start; see " + log_path)
            time.sleep(0.05)
    if http_port is not None and not wait_http(
            http_port, deadline - time.monotonic(), proc):
        raise RuntimeError("semcached's HTTP front did not start; see " +
                           log_path)


def wait_http(hport, timeout=60, proc=None):
    """Whether something accepts a connection on 127.0.0.1:hport within
    timeout seconds (False at once when proc, given, has exited).
    semcached answers nng only once its HTTP front listens (it once
    answered a moment before, and a test that waited on nng alone met a
    refused HTTP connection); kept where tests use HTTP, at the cost of
    one connect."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", hport), timeout=2).close()
            return True
        except OSError:
            if (proc is not None and proc.poll() is not None) or \
                    time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def wait_client(port):
    for _ in range(100):
        try:
            return Client("127.0.0.1", port, timeout=5)
        except OSError:
            time.sleep(0.05)
    return None


# ---- the session of PROTOCOL.md section 6 ------------------------------

def hexdump(b):
    return "\n".join(b[i:i + 16].hex(" ") for i in range(0, len(b), 16))


def transcript(port):
    """Runs the documented session on a fresh server and returns the text
    of the code block in PROTOCOL.md section 6."""
    log = []
    c = Client("127.0.0.1", port, timeout=5,
               trace=lambda d, b: log.append((d, b)))
    steps = [("handshake", None)]
    c.ping()
    steps.append(("ping", None))
    c.insert("faq", "30 days", text="return policy?", vec=[0.6, 0.8, 0.0])
    steps.append(("insert", None))
    r = c.lookup("faq", vec=[0.6, 0.79, 0.05])
    assert r["hit"] and r["layer"] == "semantic", r
    steps.append(("lookup (semantic hit)", None))
    c.call({"v": 2, "op": "ping"})
    steps.append(("an error reply (protocol version 2)", None))
    c.close()
    out = []
    for i, (title, _) in enumerate(steps):
        (d1, req), (d2, rep) = log[2 * i], log[2 * i + 1]
        assert (d1, d2) == ("send", "recv")
        out.append(f"### {title}")
        out.append(f"client -> server ({len(req)} bytes):")
        out.append(hexdump(req))
        out.append(f"server -> client ({len(rep)} bytes):")
        out.append(hexdump(rep))
        out.append("")
    return "\n".join(out).rstrip("\n")


def check_doc(doc_path, text):
    try:
        with open(doc_path) as f:
            doc = f.read()
    except OSError as e:
        check(False, f"read {doc_path}: {e}")
        return
    ok = ("```\n" + text + "\n```") in doc
    check(ok, "PROTOCOL.md section 6 matches the live server byte for byte")
    if not ok:
        print("  live session (run with --transcript to print it):",
              file=sys.stderr)
        print(text, file=sys.stderr)


def test_readme_methods():
    """The README names every public method of Client (close aside)."""
    with open(os.path.join(HERE, "README.md")) as f:
        readme = f.read()
    missing = [m for m in dir(Client) if not m.startswith("_")
               and m != "close" and callable(getattr(Client, m))
               and f"`{m}`" not in readme and f"`{m}(" not in readme]
    check(not missing, f"README.md names every method (missing: {missing})")


# ---- raw SP over a plain socket ---------------------------------------

def raw_conn(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(semcache.HANDSHAKE)
    peer = b""
    while len(peer) < 8:
        chunk = s.recv(8 - len(peer))
        if not chunk:
            break
        peer += chunk
    return s, peer


def closed_by_peer(s):
    """True when the server closes the connection (EOF) within 5 s."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def raw_reply(s):
    def exact(n):
        b = b""
        while len(b) < n:
            chunk = s.recv(n - len(b))
            if not chunk:
                raise EOFError
            b += chunk
        return b
    (n,) = struct.unpack(">Q", exact(8))
    return exact(n)


def test_raw(port):
    s, peer = raw_conn(port)
    check(peer == bytes.fromhex("0053500000310000"), "REP handshake bytes")
    # A request that is not a map gets an error reply.
    s.sendall(struct.pack(">QI", 5, 0x80007777) + b"\x01")
    body = raw_reply(s)
    check(body[:4] == struct.pack(">I", 0x80007777)
          and msgpack.unpackb(body[4:])["error"]["code"] == "bad_request",
          "non-map request answered with bad_request")
    # Bytes after the map.
    req = msgpack.packb({"v": 1, "op": "ping"}) + b"\xc0"
    s.sendall(struct.pack(">QI", 4 + len(req), 0x80000001) + req)
    rep = msgpack.unpackb(raw_reply(s)[4:])
    check(not rep["ok"] and rep["error"]["code"] == "bad_request",
          "bytes after the request map -> bad_request")
    # A message shorter than a request id: nng's REP closes the pipe.
    s.sendall(struct.pack(">Q", 2) + b"\x80\x00")
    check(closed_by_peer(s), "a message without a request id closes the connection")
    s.close()
    # A length over --recv-max: closed before anything is allocated.
    s, _ = raw_conn(port)
    s.sendall(struct.pack(">Q", 64 << 20) + b"\x80\x00\x00\x01")
    check(closed_by_peer(s), "a message over --recv-max closes the connection")
    s.close()
    # A peer that is not REQ (here PAIR, 0x0010) is refused.
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"\x00SP\x00\x00\x10\x00\x00")
    got, eof = b"", False
    try:
        while len(got) <= 8:
            chunk = s.recv(64)
            if not chunk:
                eof = True
                break
            got += chunk
    except (socket.timeout, ConnectionResetError) as e:
        eof = isinstance(e, ConnectionResetError)
    check(eof and got in (b"", semcache.HANDSHAKE[:5] + b"\x31\x00\x00"),
          "a peer that is not REQ is disconnected")
    s.close()


# ---- the client -----------------------------------------------------

def make_cert(tmp):
    """A self-signed certificate for 127.0.0.1 (cert + key in one PEM, as
    --tls-cert wants), or None without the openssl command."""
    if shutil.which("openssl") is None:
        return None
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                        "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if r.returncode != 0:
        return None
    both = os.path.join(tmp, "both.pem")
    with open(both, "w") as f:
        f.write(open(cert).read() + open(key).read())
    return cert, both


def server_keepalive(port, client):
    """The `ss` line of the server's ends of connections to 127.0.0.1:port
    once client (connected) has been answered, waiting up to 5 s for their
    TCP timer to read "keepalive"; None without the ss command."""
    ss = shutil.which("ss")
    if ss is None:
        return None
    client.ping()
    line = ""
    for _ in range(50):  # until the reply is acknowledged
        out = subprocess.run([ss, "-tnoH", "state", "established",
                              f"( sport = :{port} )"],
                             capture_output=True, text=True).stdout
        line = " ".join(out.split())
        if "timer:(keepalive" in line:
            break
        time.sleep(0.1)
    return line


def serve_one(handle):
    """A listening socket on 127.0.0.1 and a thread that accepts one
    client, runs handle(sock) on it (an OSError ends it) and closes it."""
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", free_port()))
    lst.listen(1)

    def run():
        s, _ = lst.accept()
        try:
            handle(s)
        except OSError:
            pass
        s.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return lst, t


def fake_server(replies):
    """A listening socket and a thread that answers each request of one
    client with the next of replies (objects to pack), echoing its id."""
    def serve(s):
        s.recv(8)
        s.sendall(b"\x00SP\x00\x00\x31\x00\x00")
        for rep in replies:
            head = b""
            while len(head) < 8:
                head += s.recv(8 - len(head))
            (n,) = struct.unpack(">Q", head)
            msg = b""
            while len(msg) < n:
                msg += s.recv(n - len(msg))
            body = msg[:4] + msgpack.packb(rep)
            s.sendall(struct.pack(">Q", len(body)) + body)

    return serve_one(serve)


def test_broken_replies():
    """Replies of the right frame with the wrong fields: ProtocolError, as
    the README promises, not AttributeError or KeyError."""
    cases = [
        ("ping", (), {"ok": False, "error": "boom"}),
        ("ping", (), {"ok": False}),
        ("ping", (), {"ok": False, "error": {"code": 5, "message": "x"}}),
        # As libsemcache (test_e2e.c, test_fake_server): SC_EPROTO.
        ("ping", (), {"ok": False, "error": {"message": "x"}}),
        ("ping", (), {"ok": False, "error": {"code": "range", "message": 7}}),
        # A lookup result is checked as libsemcache checks it
        # (test_e2e.c, test_fake_server): these once came back as dicts.
        ("lookup", ("ns", "q"), {"ok": True, "result": {
            "hit": True, "response": b"x"}}),
        ("lookup", ("ns", "q"), {"ok": True, "result": {
            "hit": True, "entry": 7}}),
        ("lookup", ("ns", "q"), {"ok": True, "result": {
            "hit": True, "entry": 7, "response": "a str"}}),
        ("lookup", ("ns", "q"), {"ok": True, "result": {
            "hit": "yes", "entry": 7, "response": b"x"}}),
        ("lookup", ("ns", "q"), {"ok": True, "result": {
            "hit": False, "response": b"x"}}),
        ("lookup", ("ns", "q"), {"ok": True, "result": {
            "layer": "none"}}),
        ("lookup", ("ns", "q"), {"ok": True, "result": {
            "hit": True, "entry": -1, "response": b"x"}}),
        ("lookup", ("ns", "q"), {"ok": True, "result": {
            "hit": False, "similarity": "0.5"}}),
        ("insert", ("ns", "r"), {"ok": True, "result": {}}),
        ("insert", ("ns", "r"), {"ok": True, "result": {"entry": "7"}}),
        ("ns_list", (), {"ok": True, "result": {}}),
        ("lookup_batch", ("ns", [{"text": "q"}]),
         {"ok": True, "result": {"results": 3}}),
        ("insert_batch", ("ns", [{"text": "q", "response": "r"}]),
         {"ok": True, "result": {}}),
        ("insert", ("ns", "r"), {"ok": True, "result": {"entry": -1}}),
        # A batch's items are checked as the single op's reply is (they
        # once came back as they were: a hit without its response, a str
        # response, a list shorter than the items sent).
        ("lookup_batch", ("ns", [{"text": "q"}]),
         {"ok": True, "result": {"results": [{"ok": True, "result": {
             "hit": True, "entry": 7}}]}}),
        ("lookup_batch", ("ns", [{"text": "q"}]),
         {"ok": True, "result": {"results": [{"ok": True, "result": {
             "hit": True, "entry": 7, "response": "a str"}}]}}),
        ("lookup_batch", ("ns", [{"text": "q"}, {"text": "p"}]),
         {"ok": True, "result": {"results": [{"ok": True, "result": {
             "hit": False}}]}}),
        ("lookup_batch", ("ns", [{"text": "q"}]),
         {"ok": True, "result": {"results": [5]}}),
        ("lookup_batch", ("ns", [{"text": "q"}]),
         {"ok": True, "result": {"results": [{"ok": True}]}}),
        ("lookup_batch", ("ns", [{"text": "q"}]),
         {"ok": True, "result": {"results": [{"ok": False,
                                              "error": "boom"}]}}),
        ("insert_batch", ("ns", [{"text": "q", "response": "r"}]),
         {"ok": True, "result": {"results": [{"ok": True, "result": {
             "entry": "7"}}]}}),
    ]
    for op, args, rep in cases:
        lst, t = fake_server([rep])
        c = Client("127.0.0.1", lst.getsockname()[1], timeout=5.0)
        try:
            getattr(c, op)(*args)
            got = "no exception"
        except semcache.ProtocolError:
            got = "ProtocolError"
        except Exception as e:  # noqa: BLE001 - what is wrong is the type
            got = type(e).__name__
        check(got == "ProtocolError", f"{op} given {rep}: {got}")
        c.close()
        t.join(5)
        lst.close()
    # A well-formed refusal is still the server's error.
    lst, t = fake_server([{"ok": False,
                           "error": {"code": "range", "message": "m"}}])
    c = Client("127.0.0.1", lst.getsockname()[1], timeout=5.0)
    check(raises("range", c.ping), "a well-formed refusal is SemcacheError")
    c.close()
    t.join(5)
    lst.close()
    # Well-formed batch items, a refusal among them, are handed back.
    good = [{"ok": True, "result": {"hit": False, "layer": "none"}},
            {"ok": False, "error": {"code": "dim", "message": "m"}}]
    lst, t = fake_server([{"ok": True, "result": {"results": good}}])
    c = Client("127.0.0.1", lst.getsockname()[1], timeout=5.0)
    check(c.lookup_batch("ns", [{"text": "q"}, {"text": "p"}]) == good,
          "well-formed batch results are returned as they came")
    c.close()
    t.join(5)
    lst.close()
    # A code without a message is the server's error too, as in C.
    lst, t = fake_server([{"ok": False, "error": {"code": "range"}}])
    c = Client("127.0.0.1", lst.getsockname()[1], timeout=5.0)
    check(raises("range", c.ping), "a refusal without a message")
    c.close()
    t.join(5)
    lst.close()


def test_slow_handshake():
    """A server that sends its 8-byte handshake a byte every 0.9 s: the
    client's time-out (1 s) is a deadline for the whole connect, not for
    each byte (7 s in all, every byte within 1 s of the one before). A
    client timing each byte would complete the handshake: the check is
    that the connect raised its time-out (TimeoutError) after at least
    1 s, before the last byte was sent, with no bound that load can
    break; the trickle stops once the connect has returned."""
    stop = threading.Event()
    sent = []

    def trickle(s):
        for b in b"\x00SP\x00\x00\x31\x00\x00":
            s.sendall(bytes([b]))
            sent.append(b)
            if stop.wait(0.9):
                return

    lst, t = serve_one(trickle)
    t0 = time.monotonic()
    try:
        Client("127.0.0.1", lst.getsockname()[1], timeout=1.0).close()
        got = "connected"
    except Exception as e:  # noqa: BLE001 - the test reports it
        got = repr(e)
        timed_out = isinstance(e, TimeoutError)
    else:
        timed_out = False
    dt = time.monotonic() - t0
    n = len(sent)
    stop.set()
    check(timed_out and n < 8 and dt >= 0.9,
          f"a trickled handshake times out at connect ({got} after "
          f"{dt:.1f} s, {n} of 8 bytes sent)")
    t.join(5)
    lst.close()


def test_tls_connect_deadline():
    """A tls+tcp:// connect whose TCP connect is slow (0.9 s: a SYN
    retransmitted, here a delay in socket.create_connection) to a peer
    that then never does its TLS handshake: the time-out (1 s) is one
    deadline for the TCP connect and the handshake, not 1 s for each
    (1.9 s before). Checked without a bound load can break: the TLS
    handshake starts with at most what is left of the time-out (1 s
    less the 0.9 s connect, a sleep that load only makes longer) on the
    socket, or not at all, and the call raises its time-out
    (TimeoutError) while the peer still holds its side, released only
    once the call has returned."""
    release, let_go = threading.Event(), threading.Event()
    lst, t = serve_one(lambda s: (s.recv(1 << 16), release.wait(30),
                                  let_go.set()))
    real = socket.create_connection
    ctx = ssl.create_default_context()
    handshake_timeouts = []

    class Probe:
        """ctx, noting the socket's time-out as the handshake starts."""
        def wrap_socket(self, s, **kw):
            handshake_timeouts.append(s.gettimeout())
            return ctx.wrap_socket(s, **kw)

    def slow_connect(*args, **kw):
        time.sleep(0.9)
        return real(*args, **kw)

    socket.create_connection = slow_connect
    t0 = time.monotonic()
    try:
        connect(f"tls+tcp://127.0.0.1:{lst.getsockname()[1]}", timeout=1.0,
                tls=Probe()).close()
        got = "connected"
    except Exception as e:  # noqa: BLE001 - the test reports it
        got = repr(e)
        timed_out = isinstance(e, TimeoutError)
    else:
        timed_out = False
    finally:
        socket.create_connection = real
    dt = time.monotonic() - t0
    held = not let_go.is_set()
    release.set()
    check(timed_out and held and dt >= 0.9
          and all(x is not None and x <= 0.1 for x in handshake_timeouts),
          f"a slow TCP connect and a stalled TLS handshake time out in "
          f"one time-out ({got} after {dt:.2f} s, the peer holding: {held}, "
          f"handshake time-out {handshake_timeouts})")
    lst.close()
    t.join(5)


def test_close_mid_call():
    """close() from another thread in the middle of a call: the call
    raises OSError or ProtocolError, not AttributeError (the call once
    found self._sock None at its next step), and a call blocked on a
    reply that never comes is woken at once, not at its time-out."""
    def close_from_another_thread(c):
        th = threading.Thread(target=c.close)
        th.start()
        th.join()

    lst, t = fake_server([{"ok": True, "result": {}}])
    sends = []

    def trace(direction, data):
        if direction == "send":
            sends.append(data)
            if len(sends) == 2:  # the request, after the SP handshake
                close_from_another_thread(c)

    c = Client("127.0.0.1", lst.getsockname()[1], timeout=5.0, trace=trace)
    try:
        c.ping()
        got = "no exception"
    except (OSError, semcache.ProtocolError):
        got = "OSError/ProtocolError"
    except Exception as e:  # noqa: BLE001 - what is wrong is the type
        got = type(e).__name__
    check(got == "OSError/ProtocolError",
          f"close() from another thread before the request is sent: {got}")
    c.close()
    lst.close()
    t.join(5)

    # The peer holds the reply until the call has returned, the time-out
    # (20 s) is 66 times the 0.3 s of the close: the call must end by
    # the close, neither by the peer nor by its time-out.
    release, let_go = threading.Event(), threading.Event()
    lst, t = serve_one(lambda s: (s.recv(8),
                                  s.sendall(b"\x00SP\x00\x00\x31\x00\x00"),
                                  s.recv(1 << 16), release.wait(30),
                                  let_go.set()))
    c = Client("127.0.0.1", lst.getsockname()[1], timeout=20.0)
    timer = threading.Timer(0.3, c.close)
    timer.start()
    t0 = time.monotonic()
    try:
        c.ping()
        got = "no exception"
    except TimeoutError:
        got = "TimeoutError"
    except (OSError, semcache.ProtocolError):
        got = "OSError/ProtocolError"
    except Exception as e:  # noqa: BLE001
        got = type(e).__name__
    dt = time.monotonic() - t0
    held = not let_go.is_set()
    release.set()
    timer.join()
    check(got == "OSError/ProtocolError" and held,
          f"close() from another thread wakes a waiting call: {got} after "
          f"{dt:.1f} s, the peer holding its reply: {held}")
    lst.close()
    t.join(5)


def test_batch_reply_cap(port):
    """A lookup_batch whose hits would make a huge reply (1024 hits of a
    1 MiB response: 1 GiB from a 15 KB request) is answered up to 64 MiB
    of hits; its other hits are too_big, each its own error, and the same
    hit alone is served."""
    with Client("127.0.0.1", port, timeout=60) as c:
        c.insert("faq", b"z" * ((1 << 20) - 64), vec=[0.11, 0.7, 0.2])
        s0 = c.stats("faq")
        res = c.lookup_batch("faq", [{"vec": [0.11, 0.7, 0.2]}] * 80)
        ok = sum(1 for r in res if r.get("ok") and r["result"]["hit"])
        big = sum(1 for r in res if not r.get("ok") and
                  r.get("error", {}).get("code") == "too_big")
        check(len(res) == 80 and 60 <= ok <= 64 and ok + big == 80,
              f"a batch of 80 1 MiB hits: {ok} served, {big} too_big")
        # Only the hits served are counted (before, all 80 were: stats,
        # the entry's hit count and the ledger's savings).
        s1 = c.stats("faq")
        counted = s1["semantic_hits"] - s0["semantic_hits"]
        looked = s1["lookups"] - s0["lookups"]
        check(counted == ok and looked == ok,
              f"a batch of 80 1 MiB hits: {counted} hits and {looked} "
              f"lookups counted for {ok} served")
        r = c.lookup("faq", vec=[0.11, 0.7, 0.2])
        check(r["hit"] and len(r["response"]) == (1 << 20) - 64,
              "alone, the same hit is served")
        check(r["hit_count"] == ok + 1,
              f"the entry's hit count is {r['hit_count']} after {ok} + 1 "
              f"served")
        # An insert refused after it made its namespace (a response over
        # the default cap) leaves no namespace behind: the slot it took
        # under --max-namespaces (8, all used here but one) is free again.
        c.ns_drop("flood3")
        try:
            c.insert("made-and-refused", b"q" * (2 << 20), vec=[1, 2, 3])
            code = None
        except SemcacheError as e:
            code = e.code
        check(code == "too_big" and "made-and-refused" not in c.ns_list(),
              f"a refused first insert leaves no namespace ({code}, "
              f"{c.ns_list()})")
        check(c.insert("after-refused", b"ok", vec=[1, 2, 3]) > 0,
              "the namespace slot is free for the next one")


def test_tls(tls_port, cert):
    ctx = ssl.create_default_context(cafile=cert)
    with connect(f"tls+tcp://127.0.0.1:{tls_port}", tls=ctx) as tc:
        check(tc.ping()["version"] == 1, "tls+tcp:// ping")
        r = tc.lookup("faq", vec=[0.3, 0.4, 0.5])
        check(r["hit"] and r["response"] == b"over ipc", "tls+tcp:// lookup")
    try:
        connect(f"tls+tcp://127.0.0.1:{tls_port}").close()  # system CAs
        refused = False
    except ssl.SSLError:
        refused = True
    check(refused, "tls+tcp:// verifies the server's certificate")


def test_restart(server, tmp):
    """A server restarted between two calls: the next call finds its
    connection closed before sending and connects afresh (it once raised
    ProtocolError, for a request that never left). A healthy connection
    is kept: one handshake for two calls."""
    port = free_port()
    data = os.path.join(tmp, "restart")
    os.mkdir(data)
    args = [server, "--listen", f"tcp://127.0.0.1:{port}", "--data-dir", data]
    log = os.path.join(tmp, "restart.log")
    handshakes = []
    procs = []
    try:
        for _ in range(2):
            with open(log, "a") as f:
                procs.append(subprocess.Popen(args, stderr=f))
            wait_started(procs[-1], port, log)
            if len(procs) == 1:
                c = Client("127.0.0.1", port, timeout=5, trace=lambda d, b:
                           handshakes.append(b) if b == semcache.HANDSHAKE
                           else None)
                c.ping()
                c.ping()
                check(len(handshakes) == 1,
                      f"two calls, {len(handshakes)} handshakes")
                procs[-1].send_signal(signal.SIGTERM)
                procs[-1].wait(timeout=10)
        try:
            got = c.ping()["version"] == 1
        except (OSError, semcache.ProtocolError) as e:
            got = repr(e)
        check(got is True and len(handshakes) == 2,
              f"the first call after a server restart: {got}")
        c.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_busy_pipelined():
    """retries=N re-sends a call only when it sent one request. A
    pipelined call closed before any reply may have had its first
    requests carried out: semcached reads and runs them, then closes the
    connection at a later one over its --recv-max (an insert of 2 MB
    after a small one, --recv-max 1 MiB, did so in 3 runs of 12). Its
    retry once re-ran them: the small insert was made up to 3 times."""
    got = []

    def serve():
        for _ in range(4):
            try:
                s, _ = lst.accept()
            except OSError:
                return
            try:
                s.recv(8)
                s.sendall(b"\x00SP\x00\x00\x31\x00\x00")
                n = struct.unpack(">Q", s.recv(8, socket.MSG_WAITALL))[0]
                got.append(s.recv(n, socket.MSG_WAITALL))
                # The next request is "over --recv-max": closed unread,
                # the first one's reply not sent yet.
            except OSError:
                pass
            s.close()

    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", free_port()))
    lst.listen(4)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    c = Client("127.0.0.1", lst.getsockname()[1], timeout=5, retries=3)
    try:
        c.call_many([{"v": 1, "op": "insert", "ns": "faq", "text": "a",
                      "response": "r"},
                     {"v": 1, "op": "insert", "ns": "faq", "text": "b",
                      "response": "x" * 100000}])
        err = "answered"
    except semcache.ServerBusy as e:
        err = str(e)
    except (OSError, semcache.ProtocolError) as e:
        err = repr(e)
    c.close()
    lst.close()
    t.join(10)
    check(len(got) == 1,
          f"a pipelined call is not re-sent: the peer read {len(got)} "
          f"first requests ({err})")
    check("ServerBusy" not in err and "may have" in err,
          f"its error says some may have run: {err}")


@contextlib.contextmanager
def own_server(server, tmp, name, *args):
    """A semcached of one test's own: a free port, data in tmp/name, its
    log in tmp/name.log; yields (proc, port, log) once it answers, and
    stops it with SIGTERM (killed past 10 s) when the block ends."""
    port = free_port()
    data = os.path.join(tmp, name)
    os.mkdir(data)
    log = os.path.join(tmp, name + ".log")
    with open(log, "a") as f:
        proc = subprocess.Popen([server, "--listen", f"tcp://127.0.0.1:{port}",
                                 "--data-dir", data, *args], stderr=f)
    try:
        wait_started(proc, port, log)
        yield proc, port, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_max_clients(server, tmp):
    """A server at its --max-clients cap closes a new connection right
    after the handshake: the call raises ServerBusy (a ProtocolError)
    naming the cap, and with retries=N it connects again, with backoff,
    until a place is free (it once raised "connection closed by the
    server", with no retry)."""
    with own_server(server, tmp, "maxclients",
                    "--max-clients", "1") as (_, port, log):
        # retries: the connection before it may not be counted out yet.
        first = Client("127.0.0.1", port, timeout=5, retries=20)
        first.ping()
        c = Client("127.0.0.1", port, timeout=5)
        try:
            c.ping()
            got = "answered"
        except semcache.ServerBusy as e:
            got = str(e)
        except (OSError, semcache.ProtocolError) as e:
            got = repr(e)
        check("--max-clients" in got and "--recv-max" not in got,
              f"a client past --max-clients raises ServerBusy ({got})")
        c.close()
        c = Client("127.0.0.1", port, timeout=5, retries=8)
        t = threading.Timer(0.3, first.close)
        t.start()
        t0 = time.monotonic()
        try:
            got = c.ping()["version"] == 1
        except (OSError, semcache.ProtocolError) as e:
            got = repr(e)
        dt = time.monotonic() - t0
        t.join()
        # At least the 0.3 s the place was held; no upper bound (load
        # only makes it longer), the 8 retries (4.55 s of waits) bound it.
        check(got is True and 0.25 < dt,
              f"retries=8 connects again once a place is free "
              f"({got}, {dt:.2f} s)")
        c.close()
        # retries: the connection before it may not be counted out yet.
        first = Client("127.0.0.1", port, timeout=5, retries=20)
        first.ping()
        connects = []
        c = Client("127.0.0.1", port, timeout=5, retries=2,
                   trace=lambda d, data: connects.append(data)
                   if d == "send" and data == semcache.HANDSHAKE else None)
        t0 = time.monotonic()
        try:
            c.ping()
            got = "answered"
        except semcache.ServerBusy as e:
            got = "ServerBusy"
        dt = time.monotonic() - t0
        # Bounded by its count of connects, not by a time load can
        # stretch: the one in Client() and one for each of its 3 tries
        # (the first try may still take that one, when the server's
        # close has not come yet); at least the 0.05 + 0.1 s of its waits.
        check(got == "ServerBusy" and 3 <= len(connects) <= 4 and 0.1 < dt,
              f"retries are bounded: ServerBusy after 2 ({got}, "
              f"{len(connects)} connects, {dt:.2f} s)")
        c.close()
        first.close()
        try:
            Client("127.0.0.1", port, timeout=5, retries=-1)
            got = "taken"
        except ValueError:
            got = "ValueError"
        check(got == "ValueError", f"retries=-1 is refused ({got})")
    with open(log) as f:
        text = f.read()
    check("1 client at once is the cap (--max-clients)" in text,
          f"the refusal's log line counts in the singular: {text[-600:]!r}")


def test_recv_max_lowered(server, tmp):
    """A server started with --recv-max below the client's 4 MiB closes
    the connection of a larger request with no reply, as one at its
    --max-clients cap does: the ServerBusy raised gives the request's
    size and names --recv-max (it named only --max-clients)."""
    with own_server(server, tmp, "recvmax",
                    "--recv-max", "65536") as (_, port, log):
        c = Client("127.0.0.1", port, timeout=5)
        try:
            c.insert("big", "x" * 100000, vec=[1.0, 0.0])
            got = "answered"
        except semcache.ServerBusy as e:
            got = str(e)
        except (OSError, semcache.ProtocolError) as e:
            got = repr(e)
        check("--recv-max" in got and "--max-clients" in got
              and re.search(r"a request of 1000\d\d bytes", got),
              f"a request over a lowered --recv-max is named so ({got})")
        check(c.ping()["version"] == 1, "the next call connects again")
        c.close()


def test_stop_log(server, tmp):
    """The line semcached logs at its stop counts in the singular when
    one request was served (it said "served 1 requests")."""
    with own_server(server, tmp, "stoplog",
                    "--threads", "1") as (_, port, log):
        pass  # one ping answered
    with open(log) as f:
        text = f.read()
    # The stop line reads the count as SIGTERM comes: the ping's reply
    # may be counted just after (then "served 0 requests").
    m = re.search(r"semcached: served (\d+) (requests?) \(", text)
    check(m is not None and (m.group(2) == "request") == (m.group(1) == "1")
          and "1 worker," in text,
          f"one request served, one worker thread, in the singular: "
          f"{text[-600:]!r}")


def run(c, port, ipc_path, tls_port, cert):
    check(c.ping()["server"].startswith("semcached"), "ping")
    check(c.ping()["version"] == 1, "ping version")
    e1 = c.insert("faq", "30 days", text="What is the return policy?",
                  vec=[0.9, 0.1, 0.2], model="gpt-4o", feature="support",
                  user="u1", input_tokens=12, output_tokens=40)
    check(isinstance(e1, int) and e1 > 0, "insert returns an entry id")
    r = c.lookup("faq", text="  what is the RETURN policy? ")
    check(r["hit"] and r["layer"] == "exact" and r["entry"] == e1
          and r["reason"] is None and r["similarity"] == 1.0, "exact hit")
    check(r["response"] == b"30 days" and r["input_tokens"] == 12
          and r["output_tokens"] == 40 and r["model"] == "gpt-4o"
          and r["feature"] == "support" and r["user"] == "u1", "hit payload")
    r = c.lookup("faq", vec=[0.85, 0.15, 0.2])
    check(r["hit"] and r["layer"] == "semantic" and r["similarity"] > 0.99
          and r["hit_count"] == 2, "semantic hit, hit_count")
    import array
    r = c.lookup("faq", vec=array.array("f", [0.85, 0.15, 0.2]))
    check(r["hit"], "vector as array('f')")
    r = c.lookup("faq", vec=[-0.2, 1.0, 0.0])
    check(not r["hit"] and r["reason"] == "below_threshold"
          and r["layer"] == "none" and isinstance(r["best"], float),
          "miss below threshold")
    r = c.lookup("faq", vec=[-0.2, 1.0, 0.0], threshold=-1.0)
    check(r["hit"], "per-request threshold")
    r = c.lookup("faq", vec=[0.9, 0.1, 0.2], scope="other")
    check(not r["hit"] and r["reason"] == "no_candidate" and r["best"] is None,
          "scope isolation")
    r = c.lookup("never-made", vec=[1.0])
    check(not r["hit"] and r["reason"] == "no_namespace", "lookup: no_namespace miss")
    check(raises("dim", c.lookup, "faq", vec=[1.0, 2.0]), "dim error")
    check(raises("not_found", c.delete, 987654), "not_found error")
    e2 = c.insert("faq", "gone", vec=[0.1, 0.9, 0.9])
    c.delete(e2)
    check(not c.lookup("faq", vec=[0.1, 0.9, 0.9])["hit"], "delete")

    # TTL: a fraction of a second, and never.
    c.insert("ttl", "short", vec=[1.0, 0.0], ttl=0.2)
    c.insert("ttl", "forever", vec=[0.0, 1.0], ttl=-1)
    check(c.lookup("ttl", vec=[1.0, 0.0])["hit"], "ttl: hit before expiry")
    time.sleep(0.5)
    check(not c.lookup("ttl", vec=[1.0, 0.0])["hit"], "ttl: expired never served")
    check(c.lookup("ttl", vec=[0.0, 1.0])["hit"], "ttl -1: never expires")
    check(raises("range", c.insert, "ttl", "x", vec=[1.0, 1.0], ttl=-5),
          "ttl < 0 (not -1) -> range")

    res = c.insert_batch("batch", [
        {"response": f"answer {i}", "vec": [1.0, float(i), 0.5]} for i in range(10)])
    check(len(res) == 10 and all(x["ok"] for x in res), "insert_batch")
    res = c.lookup_batch("batch", [{"vec": [1.0, float(i), 0.5]} for i in range(10)]
                         + [{"vec": [1.0, 2.0]}, {"vec": [1.0], "ns": "faq"}])
    check(all(x["ok"] and x["result"]["hit"] for x in res[:10]),
          "lookup_batch hits")
    check([x["result"]["response"] for x in res[:3]]
          == [b"answer 0", b"answer 1", b"answer 2"], "lookup_batch order")
    check(not res[10]["ok"] and res[10]["error"]["code"] == "dim",
          "lookup_batch per-item error")
    check(not res[11]["ok"] and res[11]["error"]["code"] == "dim",
          "lookup_batch item overrides ns")
    res = c.lookup_batch("batch", iter([{"vec": [1.0, 1.0, 0.5]}]),
                         scope="s2")  # items: any iterable
    check(res[0]["ok"] and not res[0]["result"]["hit"], "batch-level scope")
    check(raises("bad_request", c.lookup_batch, "batch", []), "empty batch")

    c.ns_create("cfg", dim=3, storage="int8", threshold=0.5, ttl=60,
                ttl_mode="sliding", margin=0.01, max_entries=100)
    check("cfg" in c.ns_list(), "ns_create / ns_list")
    check(raises("dim", c.insert, "cfg", "x", vec=[1.0, 0.0]),
          "dim fixed at creation")
    check(raises("namespace_exists", c.ns_create, "cfg"), "namespace_exists")
    c.ns_configure("cfg", threshold=0.8)
    check(raises("bad_request", c.ns_configure, "cfg", dim=4),
          "ns_configure refuses dim")
    check(raises("bad_request", c.ns_create, "bad name!"), "bad namespace name")
    check(raises("bad_request", c.ns_create, "x", storage="f64"), "bad storage")
    c.ns_drop("cfg")
    check("cfg" not in c.ns_list(), "ns_drop")

    c.feedback(e1)
    r = c.lookup("faq", vec=[0.9, 0.1, 0.2])
    check(not r["hit"], "feedback quarantines")
    s = c.stats("faq")
    check(s["exact_hits"] == 1 and s["false_hits"] == 1 and s["lookups"] >= 6
          and s["quarantined"] == 1, "stats counters")
    check(isinstance(s["histogram"], list)
          and all(len(b) == 3 for b in s["histogram"])
          and sum(b[2] for b in s["histogram"]) == s["lookups"], "histogram sums")
    check(c.stats()["namespaces"] >= 3, "stats of all namespaces")
    check(raises("no_namespace", c.stats, "never-made"), "stats: no_namespace")
    c.flush("batch")
    check(c.stats("batch")["entries"] == 0 and c.stats("faq")["entries"] > 0,
          "flush one namespace")
    c.flush()
    check(c.stats()["entries"] == 0, "flush all")

    # Every error code a client can provoke.
    check(raises("zero_vector", c.insert, "faq", "x", vec=[0.0, 0.0, 0.0]),
          "zero_vector")
    nan_vec = struct.pack("<3f", 1.0, float("nan"), 0.0)  # bytes pass through
    check(raises("nan", c.lookup, "faq", vec=nan_vec), "nan in a vector")
    check(raises("nan", c.lookup, "faq", vec=[1.0, 0, 0], threshold=float("inf")),
          "nan: infinite threshold")
    check(raises("range", c.lookup, "faq", vec=[1.0, 0.0, 0.0], threshold=2.0),
          "range")
    c.ns_create("small", max_response_bytes=10)
    check(raises("too_big", c.insert, "small", "x" * 11, vec=[1.0]), "too_big")
    check(raises("too_big", c.insert, "small", "x", vec=[1.0], model="m" * 300),
          "too_big tag")
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
    check(raises("bad_request", c.delete, "seven"), "bad_request (wrong type)")

    # Raw requests: id echo, version, unknown op.
    rep = c.call({"v": 1, "op": "ping", "id": 42})
    check(rep["ok"] and rep["id"] == 42, "id echoed")
    rep = c.call({"v": 2, "op": "ping", "id": 7})
    check(rep["error"]["code"] == "version" and rep["id"] == 7, "version")
    check(c.call({"op": "ping"})["error"]["code"] == "version", "missing v")
    check(c.call({"v": 1, "op": "nope"})["error"]["code"] == "unknown_op",
          "unknown op")
    check(c.call({"v": 1, "op": "ping", "future": [1, {"x": 2}]})["ok"],
          "unknown keys ignored")

    # A request that cannot be packed raises before any is sent: the
    # insert before it once ran while call_many raised TypeError.
    pv = [0.31, -0.77, 0.12]
    try:
        c.call_many([{"v": 1, "op": "insert", "ns": "faq",
                      "response": b"packed-first",
                      "vec": semcache.pack_vec(pv)},
                     {"v": 1, "op": "ping", "x": {1, 2}}])
        got = "no exception"
    except TypeError:
        got = "TypeError"
    stored = False
    for _ in range(20):  # the insert, if sent, races this lookup
        r = c.lookup("faq", vec=pv)
        stored = r["hit"] and r["response"] == b"packed-first"
        if stored:
            break
        time.sleep(0.05)
    check(got == "TypeError" and not stored,
          f"an unpackable request: {got}, the insert before it "
          f"{'ran' if stored else 'not sent'}")

    # Pipelining: many requests in flight on one connection.
    reqs = [{"v": 1, "op": "ping", "id": i} for i in range(32)]
    reps = c.call_many(reqs)
    check([r["id"] for r in reps] == list(range(32)) and all(r["ok"] for r in reps),
          "32 pipelined requests, matched by request id")

    # Many more than a server queues per connection (--reply-queue-len,
    # 1024 by default; 64 on stock nng): the client keeps WINDOW in
    # flight, and every reply comes back (with all 3000 sent at once, 5-15%
    # of them were dropped by a server that queued 64).
    c.insert("faq", b"x" * 2000, vec=[0.11, 0.5, 0.2])
    reqs = [{"v": 1, "op": "lookup", "ns": "faq",
             "vec": semcache.pack_vec([0.11, 0.5, 0.2]), "id": i}
            for i in range(3000)]
    reps = c.call_many(reqs)
    check([r["id"] for r in reps] == list(range(3000))
          and all(r["ok"] and r["result"]["hit"] for r in reps),
          "3000 pipelined lookups, every reply")

    # A tag that is not UTF-8 (a C client may store one): the reply is
    # read, the byte kept as a surrogate.
    body = msgpack.packb({"v": 1, "op": "insert", "ns": "faq",
                          "vec": semcache.pack_vec([0.9, 0.05, 0.4]),
                          "response": b"r", "model": "caf\udce9"},
                         use_bin_type=True, unicode_errors="surrogateescape")
    with c._lock:
        c._send(c._frame(struct.pack(">I", 0x80000001) + body))
        c._read_frame()
    r = c.lookup("faq", vec=[0.9, 0.05, 0.4])
    check(r["hit"] and r["model"] == "caf\udce9",
          "a non-UTF-8 tag in a reply")
    # Sent back as it came (feedback's tags are the ones the lookup gave):
    # the same bytes, not UnicodeEncodeError and a closed connection.
    try:
        e = c.insert("faq", b"r2", vec=[0.05, 0.1, 0.99], model=r["model"],
                     feature=r["model"])
        r2 = c.lookup("faq", vec=[0.05, 0.1, 0.99], feature=r["model"])
        c.feedback(r2["entry"], feature=r["model"])
        got = (r2["entry"] == e and r2["model"] == "caf\udce9"
               and r2["feature"] == "caf\udce9")
    except Exception as ex:  # noqa: BLE001 - the test reports it
        got = repr(ex)
    check(got is True, f"a non-UTF-8 tag sent back: {got}")

    # A server that sends its reply a byte at a time (a frame of 10000
    # bytes announced, then a byte every 0.05 s for 20 s, 20 times the
    # time-out, or until the call has returned): the time-out is a
    # deadline for the reply, not for each byte. The call must raise its
    # time-out (TimeoutError) after at least 1 s while the bytes still
    # come; one timing each byte would get "connection closed" at 20 s.
    stop = threading.Event()
    dripping = threading.Event()

    def drip(s):
        s.recv(8)
        s.sendall(b"\x00SP\x00\x00\x31\x00\x00")
        s.recv(1 << 16)
        s.sendall(struct.pack(">Q", 10000))
        dripping.set()
        for _ in range(400):
            if stop.wait(0.05):
                break
            s.sendall(b"\x00")
        dripping.clear()

    lst, t = serve_one(drip)
    slow = semcache.Client("127.0.0.1", lst.getsockname()[1], timeout=1.0)
    t0 = time.monotonic()
    try:
        slow.ping()
        got = "answered"
    except Exception as e:  # noqa: BLE001 - the test reports it
        got = repr(e)
        timed_out = isinstance(e, TimeoutError)
    else:
        timed_out = False
    dt = time.monotonic() - t0
    still = dripping.is_set()
    stop.set()
    check(timed_out and still and dt >= 0.9,
          f"a dripping server times out ({got} after {dt:.1f} s, the "
          f"server still dripping: {still})")
    slow.close()
    t.join(5)
    lst.close()

    # A connection broken during a call (the server closes one whose
    # request is over --recv-max, 4 MiB): the call raises, saying why (it
    # once was a bare BrokenPipeError or "connection closed by the
    # server"), and the next one reconnects.
    for n in (5 << 20, 40 << 20):
        try:
            c.insert("faq", b"r" * n, vec=[0.2, 0.2, 0.9])
            got = "no exception"
        except (OSError, semcache.ProtocolError) as e:
            got = repr(e)
        check("--recv-max" in got and "ProtocolError" in got,
              f"a request over --recv-max: {got}")
        check(c.ping()["version"] == 1, "reconnect after a broken connection")
    # One broken between calls is found before a request is sent on it.
    c._sock.shutdown(socket.SHUT_RDWR)
    try:
        got = c.ping()["version"] == 1
    except (OSError, semcache.ProtocolError) as e:
        got = repr(e)
    check(got is True, f"a connection broken while idle: {got}")

    # ipc://: the same protocol with a 0x01 byte before each length.
    with connect(f"ipc://{ipc_path}") as ic:
        ic.insert("faq", "over ipc", vec=[0.3, 0.4, 0.5])
        r = ic.lookup("faq", vec=[0.3, 0.4, 0.5])
        check(r["hit"] and r["response"] == b"over ipc", "ipc:// client")

    if cert is not None:
        test_tls(tls_port, cert)
    else:
        print("test_semcache: no openssl command, tls+tcp:// not tested",
              file=sys.stderr)

    test_raw(port)
    test_broken_replies()
    test_slow_handshake()
    test_tls_connect_deadline()
    test_close_mid_call()
    test_readme_methods()
    test_batch_reply_cap(port)
    test_busy_pipelined()
    check(c.ping()["version"] == 1, "still serving after hostile peers")


def main():
    argv = sys.argv
    server = argv[argv.index("--server") + 1]
    doc = (argv[argv.index("--doc") + 1] if "--doc" in argv else
           os.path.join(HERE, "..", "..", "docs", "PROTOCOL.md"))
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="semcache-py-")
    # Under 108 bytes, whatever TMPDIR's length.
    ipc_path = os.path.join(testtmp.short_dir(100), "sc.ipc")
    args = [server, "--listen", f"tcp://127.0.0.1:{port}",
            "--listen", f"ipc://{ipc_path}", "--max-namespaces", "8",
            "--data-dir", tmp]
    tls = make_cert(tmp)
    tls_port = None
    if tls is not None:
        tls_port = free_port()
        args += ["--listen", f"tls+tcp://127.0.0.1:{tls_port}",
                 "--tls-cert", tls[1]]
    proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    try:
        c = wait_client(port)
        check(c is not None, "connect")
        if c is not None:
            c.close()
            # First, on the fresh server: the documented session.
            text = transcript(port)
            if "--transcript" in argv:
                print(text)
                return 0
            check_doc(doc, text)
            c = Client("127.0.0.1", port, timeout=5)
            run(c, port, ipc_path, tls_port, tls and tls[0])
            c.close()
            test_restart(server, tmp)
            test_max_clients(server, tmp)
            test_stop_log(server, tmp)
            test_recv_max_lowered(server, tmp)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            check(proc.wait(timeout=10) == 0, "semcached exits 0 on SIGTERM")
        except subprocess.TimeoutExpired:
            proc.kill()
            check(False, "semcached exits on SIGTERM")
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"test_semcache: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
