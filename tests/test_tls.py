#!/usr/bin/python3
"""test_tls.py - the tls+tcp:// listener (issue 6, part 4) with a
self-signed certificate this test makes with openssl: semcached --listen
tls+tcp://127.0.0.1:PORT --tls-cert FILE (and a plain tcp:// listener
beside it); the Python client over TLS verifying the certificate, with an
access key; a client that does not trust the certificate, or expects
another name, refused; a plain-TCP client and raw garbage on the TLS port
failing cleanly while the others go on being served; connections that
stall in the TLS handshake closed at the 10 s time-out. Skipped (77)
only when the openssl command is missing.

usage: test_tls.py --server build/semcached
"""
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "clients", "python"))

from semcache import Client, SemcacheError, connect  # noqa: E402
from test_semcache import check, free_port, make_cert  # noqa: E402
from test_semcache import server_keepalive  # noqa: E402
import test_semcache  # noqa: E402

KEY = "tls-test-key-0123456789abcdef"


def served(port, what):
    """A fresh plain client on port is answered within 2 s."""
    try:
        with Client("127.0.0.1", port, timeout=2, key=KEY) as c:
            r = c.lookup("faq", vec=[0.1, 0.2, 0.3])
            check(r["hit"], f"plain tcp:// still served {what}")
    except (OSError, SemcacheError) as e:
        check(False, f"plain tcp:// still served {what}: {e!r}")


def open_silent(tport):
    """Connections to the TLS port that stall in the TLS handshake: four
    send nothing, four send the first bytes of a hello and stop."""
    socks = []
    for i in range(8):
        s = socket.create_connection(("127.0.0.1", tport), timeout=3)
        if i % 2:
            s.sendall(b"\x16\x03\x01\x00\xc8\x01\x00")
        socks.append(s)
    return socks


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def check_silent_closed(socks, t_open, pid, base_fds):
    """The server ends a handshake that stalls at its 10 s time-out
    (docs/PROTOCOL.md, 1.1) over TLS too: each connection is closed, and
    while the clients still hold their ends, the server holds no more
    descriptors than before them (Debian's nng 1.5.2 kept them for ever:
    scripts/patches/nng-1.5.2-tls-cancel-timeout.patch)."""
    closed = 0
    for s in socks:
        s.settimeout(max(0.1, t_open + 15 - time.monotonic()))
        try:
            while s.recv(4096):
                pass
            closed += 1
        except ConnectionError:
            closed += 1
        except socket.timeout:
            pass
    check(closed == len(socks),
          f"TLS handshakes that stall are closed by the server "
          f"({closed} of {len(socks)} in 15 s)")
    now = open_fds(pid)
    for _ in range(30):
        if now <= base_fds:
            break
        time.sleep(0.1)
        now = open_fds(pid)
    check(now <= base_fds,
          f"the stalled handshakes' descriptors are released "
          f"({now} open, {base_fds} before them)")
    for s in socks:
        s.close()


def run(port, tport, cert, pid):
    ctx = ssl.create_default_context(cafile=cert)
    url = f"tls+tcp://127.0.0.1:{tport}"
    base_fds = open_fds(pid)
    silent, t_open = open_silent(tport), time.monotonic()
    # ---- a client that trusts the certificate ----------------------------
    with connect(url, tls=ctx, key=KEY) as tc:
        check(tc.ping()["version"] == 1, "TLS: ping")
        check(tc._sock.version() in ("TLSv1.2", "TLSv1.3"),
              f"TLS: negotiated {tc._sock.version()}")
        e = tc.insert("faq", vec=[0.1, 0.2, 0.3], response=b"over tls")
        check(e > 0, "TLS: insert with a key")
        r = tc.lookup("faq", vec=[0.1, 0.2, 0.3])
        check(r["hit"] and r["response"] == b"over tls", "TLS: lookup hits")
    with connect(url, tls=ctx) as tc:
        try:
            tc.lookup("faq", vec=[0.1, 0.2, 0.3])
            code = None
        except SemcacheError as err:
            code = err.code
        check(code == "unauthorized", "TLS does not stand in for a key")
    # ---- clients that must refuse the server -------------------------------
    try:
        connect(url, tls=True).close()  # the system's CAs only
        refused = False
    except ssl.SSLError:
        refused = True
    check(refused, "TLS: a client without the certificate refuses it")
    try:
        connect(url, tls=ctx, server_hostname="not-this-host").close()
        refused = False
    except ssl.SSLError:
        refused = True
    check(refused, "TLS: a client expecting another name refuses it")
    served(port, "after refused handshakes")

    # ---- plain clients on the TLS port fail cleanly ------------------------
    t0 = time.monotonic()
    why = None
    try:
        with Client("127.0.0.1", tport, timeout=2, key=KEY) as pc:
            pc.ping()
    except Exception as err:  # a reset, EOF or time-out: any is clean
        why = type(err).__name__
    # 5 s: a hang guard (the client's own 2 s time-outs end it sooner).
    check(why is not None and time.monotonic() - t0 < 5,
          f"a plain-TCP client on the TLS port fails promptly ({why})")
    served(port, "while a plain client hit the TLS port")
    with socket.create_connection(("127.0.0.1", tport), timeout=3) as s:
        s.sendall(b"\x00SP\x00\x00\x30\x00\x00" + b"garbage" * 100)
        try:
            data = s.recv(4096)
        except (socket.timeout, ConnectionError):
            data = b""
        check(data == b"" or data[:1] == b"\x15",
              "garbage on the TLS port: a TLS alert or a close, nothing else")
    served(port, "after garbage on the TLS port")
    with connect(url, tls=ctx, key=KEY) as tc:
        check(tc.lookup("faq", vec=[0.1, 0.2, 0.3])["hit"],
              "TLS still served after the plain clients")
        line = server_keepalive(tport, tc)
        if line is not None:
            check("timer:(keepalive" in line,
                  "TLS: the server's end has TCP keep-alive on "
                  f"({line[:120]!r})")
    check_silent_closed(silent, t_open, pid, base_fds)
    handshake_flood(url, ctx, tport, pid)


def handshake_flood(url, ctx, tport, pid):
    """300 connections that never start the TLS handshake: at most 128 of
    a listener's may be in their handshake (patched nng), so the first are
    closed as the later ones come, the server's descriptors grow by 128 at
    most, and a TLS client is served meanwhile."""
    before = open_fds(pid)
    socks = [socket.create_connection(("127.0.0.1", tport), timeout=3)
             for _ in range(300)]
    try:
        try:
            with connect(url, tls=ctx, key=KEY) as tc:
                ok = tc.lookup("faq", vec=[0.1, 0.2, 0.3])["hit"]
        except (OSError, SemcacheError) as e:
            print(f"  (TLS client during the flood: {e!r})", file=sys.stderr)
            ok = False
        check(ok, "TLS: a client served beside 300 connections in their "
                  "handshake")
        time.sleep(0.5)
        grew = open_fds(pid) - before
        socks[0].settimeout(2)
        try:
            first_closed = socks[0].recv(64) == b""
        except ConnectionResetError:
            first_closed = True
        except socket.timeout:
            first_closed = False
        print(f"  TLS handshake flood: the server's descriptors grew by "
              f"{grew}; the first closed: {first_closed}")
        check(grew <= 128 + 8, f"TLS: 300 connections in their handshake: "
                               f"the server's descriptors grew by {grew}")
        check(first_closed, "TLS: the first connection in its handshake is "
                            "closed to let the later ones in")
    finally:
        for s in socks:
            s.close()


def main(argv):
    server = argv[argv.index("--server") + 1]
    if shutil.which("openssl") is None:
        print("SKIP: the openssl command is missing; it makes the test's "
              "self-signed certificate")
        return 77
    tmp = tempfile.mkdtemp(prefix="semcache-tls-")
    try:
        pair = make_cert(tmp)
        check(pair is not None, "openssl makes a self-signed certificate")
        if pair is None:
            return 1
        cert, both = pair
        port, tport = free_port(), free_port()
        conf = os.path.join(tmp, "semcached.json")
        with open(conf, "w") as f:
            json.dump({"keys": [{"key": KEY, "name": "tls-test",
                                 "write": ["*"]}]}, f)
        log = open(os.path.join(tmp, "stderr"), "w+")
        proc = subprocess.Popen(
            [server, "--config", conf, "--data-dir", tmp,
             "--listen", f"tcp://127.0.0.1:{port}",
             "--listen", f"tls+tcp://127.0.0.1:{tport}", "--tls-cert", both],
            stderr=log)
        try:
            up = False
            for _ in range(200):
                try:
                    with Client("127.0.0.1", port, timeout=2) as c:
                        c.ping()
                    up = True
                    break
                except OSError:
                    time.sleep(0.05)
            check(up, "semcached starts with a tls+tcp:// listener")
            if up:
                run(port, tport, cert, proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                check(proc.wait(timeout=10) == 0,
                      "semcached exits 0 on SIGTERM")
            except subprocess.TimeoutExpired:
                proc.kill()
                check(False, "semcached exits on SIGTERM")
            log.seek(0)
            text = log.read()
            log.close()
            check(KEY not in text, "the key is not in the log")
            check("semcached: 1 access key: tls-test" in text,
                  "the log counts one key as 1 access key")
            if test_semcache.failed:
                print(text)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    p, f = test_semcache.passed, test_semcache.failed
    print(f"test_tls: {p} passed, {f} failed")
    return 1 if f else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
