#!/usr/bin/python3
"""test_keys.py - access keys (issue 6, part 4) against a real semcached
started with --config on a free 127.0.0.1 port: no key and a wrong key are
"unauthorized"; a read key looks up but does not insert; prefix grants; a
batch with one forbidden item; delete and feedback checked against the
entry's namespace; admin-only ops; the C client (semcache-cli, -k and
SEMCACHE_KEY); the HTTP front (Authorization: Bearer, 401/403, the refusal
counters on /metrics); SIGHUP's reload of the keys (a rotated key, a bad
file, reloads under load); and no secret anywhere in semcached's stderr.

usage: test_keys.py --server build/semcached --cli build/semcache-cli
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "clients", "python"))

from semcache import Client, SemcacheError  # noqa: E402
from test_semcache import check, free_port  # noqa: E402
import test_semcache  # noqa: E402

ADMIN = "admin-secret-0123456789abcdef"
RW_A = "team-a-writer-key-000000000001"
RO = "reader-only-key-of-faq-000000002"
ROTATED = "reader-key-after-rotation-0000003"
SECRETS = [ADMIN, RW_A, RO, ROTATED]



def code_of(fn):
    """The wire error code fn raises, or None when it succeeds."""
    try:
        fn()
    except SemcacheError as e:
        return e.code
    return None


def wait_up(port):
    for _ in range(200):
        try:
            c = Client("127.0.0.1", port, timeout=5)
            c.ping()
            return c
        except OSError:
            time.sleep(0.05)
    return None


def http(port, path, body=None, key=None):
    """(status, parsed JSON or text) of a request to the HTTP front."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 method="POST" if data is not None else "GET")
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def run(port, hport, cli):
    V = [0.1, 0.2, 0.3]
    W = [0.3, 0.1, 0.2]

    # ---- unauthorized: no key, a wrong key, a key of the wrong length ----
    with Client("127.0.0.1", port) as c:
        check(c.ping()["version"] == 1, "ping needs no key")
        check(code_of(lambda: c.lookup("faq", vec=V)) == "unauthorized",
              "no key: unauthorized")
        check(code_of(lambda: c.stats()) == "unauthorized",
              "no key, stats: unauthorized")
    for bad in ["wrong-key-wrong-key-wrong", RO[:-1], RO + "x", "x" * 300, ""]:
        with Client("127.0.0.1", port, key=bad) as c:
            check(code_of(lambda: c.lookup("faq", vec=V)) == "unauthorized",
                  f"a wrong key ({len(bad)} bytes): unauthorized")
    with Client("127.0.0.1", port) as c:
        r = c.call({"v": 1, "op": "lookup", "ns": "faq", "vec": b"\0" * 12,
                    "key": 12})
        check(not r["ok"] and r["error"]["code"] == "bad_request",
              "a key that is not a string: bad_request")

    # ---- admin: namespace ops ----------------------------------------------
    admin = Client("127.0.0.1", port, key=ADMIN)
    admin.ns_create("faq", dim=3)
    admin.ns_create("team-a:docs", dim=3)
    admin.ns_create("team-b:docs", dim=3)
    check(sorted(admin.ns_list()) ==
          ["faq", "team-a:docs", "team-b:docs"], "admin: ns_create, ns_list")
    e_faq = admin.insert("faq", vec=V, response=b"faq answer")
    e_b = admin.insert("team-b:docs", vec=V, response=b"b answer")

    # ---- a read key ---------------------------------------------------------
    ro = Client("127.0.0.1", port, key=RO)
    r = ro.lookup("faq", vec=V)
    check(r["hit"] and r["response"] == b"faq answer", "read key: lookup hits")
    check(code_of(lambda: ro.insert("faq", vec=W, response=b"x")) ==
          "forbidden", "read key: insert forbidden")
    check(code_of(lambda: ro.lookup("team-a:docs", vec=V)) == "forbidden",
          "read key: other namespace forbidden")
    check(code_of(lambda: ro.delete(e_faq)) == "forbidden",
          "read key: delete forbidden")
    check(code_of(lambda: ro.feedback(e_faq)) == "forbidden",
          "read key: feedback forbidden")
    check(code_of(lambda: ro.stats("faq")) is None,
          "read key: stats of its namespace")
    check(code_of(lambda: ro.stats()) == "forbidden",
          "read key: stats of all needs admin")
    check(code_of(lambda: ro.flush("faq")) == "forbidden",
          "read key: flush forbidden")
    check(code_of(lambda: ro.ns_list()) == "forbidden",
          "read key: ns_list needs admin")

    # ---- a prefix write key -------------------------------------------------
    rw = Client("127.0.0.1", port, key=RW_A)
    ea = rw.insert("team-a:docs", vec=V, response=b"a answer")
    check(rw.lookup("team-a:docs", vec=V)["hit"], "prefix key: write implies read")
    ea2 = rw.insert("team-a:new", vec=W, response=b"new")
    check(ea2 > 0, "prefix key: insert creates team-a:new")
    check(code_of(lambda: rw.insert("team-b:docs", vec=W, response=b"x")) ==
          "forbidden", "prefix key: team-b forbidden")
    check(code_of(lambda: rw.insert("team-a", vec=W, response=b"x")) ==
          "forbidden", "prefix 'team-a:*' does not cover 'team-a'")
    check(code_of(lambda: rw.lookup("faq", vec=V)) == "forbidden",
          "prefix key: faq forbidden")
    check(code_of(lambda: rw.delete(e_b)) == "not_found",
          "prefix key: team-b's entry, which it may not read, is not_found")
    check(code_of(lambda: rw.feedback(e_b)) == "not_found",
          "prefix key: feedback on team-b's entry: not_found")
    check(code_of(lambda: rw.feedback(ea)) is None,
          "prefix key: feedback on its own entry")
    check(code_of(lambda: rw.delete(ea2)) is None,
          "prefix key: delete of its own entry")
    check(code_of(lambda: rw.delete(999999)) == "not_found",
          "prefix key: delete of no entry: not_found")

    def message_of(fn):
        try:
            fn()
        except SemcacheError as e:
            return e.message
        return None

    # The same words for an entry it may not read as for no entry at all:
    # another message would tell it that the id exists.
    hidden, none = message_of(lambda: rw.delete(e_b)), \
        message_of(lambda: rw.delete(999999))
    check(hidden is not None and hidden == none,
          f"not_found says the same for a hidden entry ({hidden!r}) and "
          f"no entry ({none!r})")
    check(code_of(lambda: rw.flush("team-a:new")) is None,
          "prefix key: flush of its namespace")
    check(code_of(lambda: rw.flush()) == "forbidden",
          "prefix key: flush of all needs admin")
    for op in ("ns_create", "ns_configure", "ns_drop"):
        r = rw.call({"v": 1, "op": op, "ns": "team-a:docs", "ttl": 5})
        check(not r["ok"] and r["error"]["code"] == "forbidden",
              f"prefix key: {op} needs admin")

    # ---- batches: one forbidden item -----------------------------------------
    r = rw.call({"v": 1, "op": "insert_batch", "items": [
        {"ns": "team-a:docs", "vec": b"\0\0\x80?" * 3, "response": b"1"},
        {"ns": "team-b:docs", "vec": b"\0\0\x80?" * 3, "response": b"2"},
        {"ns": "team-a:docs", "vec": b"\0\0\0@" + b"\0\0\x80?" * 2,
         "response": b"3"}]})
    res = r["ok"] and r["result"]["results"]
    check(res and [x["ok"] for x in res] == [True, False, True] and
          res[1]["error"]["code"] == "forbidden",
          "insert_batch: the forbidden item alone is refused")
    check(admin.stats("team-b:docs")["entries"] == 1,
          "insert_batch: nothing written to team-b")
    r = ro.call({"v": 1, "op": "lookup_batch", "items": [
        {"ns": "faq", "vec": b"\xcd\xcc\xcc=\xcd\xccL>\x9a\x99\x99>"},
        {"ns": "team-a:docs", "vec": b"\xcd\xcc\xcc=\xcd\xccL>\x9a\x99\x99>"}]})
    res = r["ok"] and r["result"]["results"]
    check(res and res[0]["ok"] and res[0]["result"]["hit"] and
          not res[1]["ok"] and res[1]["error"]["code"] == "forbidden",
          "lookup_batch: the forbidden item alone is refused")
    r = Client("127.0.0.1", port).call({"v": 1, "op": "lookup_batch",
                                        "items": [{"ns": "faq", "vec": b"\0" * 12}]})
    check(not r["ok"] and r["error"]["code"] == "unauthorized",
          "lookup_batch without a key: unauthorized")

    # ---- pipelined plain lookups (the server's batched path) ---------------
    reqs = [{"v": 1, "op": "lookup", "ns": ns, "vec":
             b"\xcd\xcc\xcc=\xcd\xccL>\x9a\x99\x99>"}
            for ns in ("faq", "team-a:docs", "faq", "team-b:docs")]
    got = ro.call_many(reqs)
    check([g["ok"] for g in got] == [True, False, True, False] and
          got[1]["error"]["code"] == "forbidden",
          "pipelined lookups: each checked")
    with Client("127.0.0.1", port) as c:
        got = c.call_many(reqs[:2])
        check(all(not g["ok"] and g["error"]["code"] == "unauthorized"
                  for g in got), "pipelined lookups without a key")

    # ---- admin can do everything ---------------------------------------------
    check(admin.lookup("team-a:docs", vec=V)["hit"], "admin: reads any namespace")
    check(code_of(lambda: admin.stats()) is None, "admin: stats of all")
    check(admin.call({"v": 1, "op": "report"})["ok"], "admin: report of all")
    check(not rw.call({"v": 1, "op": "report"})["ok"],
          "prefix key: report of all needs admin")
    r = rw.call({"v": 1, "op": "report", "ns": "team-a:docs"})
    check(r["ok"], "prefix key: report of its namespace")
    check(r["result"]["timeline"] == [],
          "prefix key: its report has no timeline (the server's hours would "
          "show the other namespaces' traffic)")
    check(len(admin.call({"v": 1, "op": "report"})["result"]["timeline"]) > 0,
          "admin: the report of all has the timeline")
    check(code_of(lambda: admin.ns_drop("team-a:new")) is None, "admin: ns_drop")

    # ---- the C client ----------------------------------------------------------
    addr = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "SEMCACHE_KEY"}
    p = subprocess.run([cli, "-a", addr, "--json", "lookup", "--ns", "faq",
                        "--vec", "0.1,0.2,0.3"], capture_output=True,
                       text=True, env=env)
    check(p.returncode == 1 and "unauthorized" in p.stderr,
          "semcache-cli without a key: unauthorized")
    # ... and told how to give one (the server's message names the wire
    # field, which a CLI user does not write).
    check("SEMCACHE_KEY=KEY in the environment, or -k KEY" in p.stderr,
          f"semcache-cli without a key says how to give one ({p.stderr})")
    p = subprocess.run([cli, "-a", addr, "-k", RO, "--json", "lookup", "--ns",
                        "faq", "--vec", "0.1,0.2,0.3"], capture_output=True,
                       text=True, env=env)
    check(p.returncode == 0 and '"hit":true' in p.stdout.replace(" ", ""),
          "semcache-cli -k KEY: lookup hits")
    p = subprocess.run([cli, "-a", addr, "--json", "insert", "--ns", "faq",
                        "--vec", "0.5,0.2,0.3", "--response", "r"],
                       capture_output=True, text=True,
                       env={**env, "SEMCACHE_KEY": RO})
    check(p.returncode == 1 and "forbidden" in p.stderr,
          "semcache-cli with SEMCACHE_KEY: a read key's insert forbidden")
    p = subprocess.run([cli, "-a", addr, "stats"], capture_output=True,
                       text=True, env={**env, "SEMCACHE_KEY": ADMIN})
    check(p.returncode == 0, "semcache-cli with SEMCACHE_KEY=admin: stats")

    # ---- the HTTP front ----------------------------------------------------------
    body = {"ns": "faq", "vec": V}
    st, j = http(hport, "/v1/lookup", body)
    check(st == 401 and j["error"]["code"] == "unauthorized",
          "HTTP without a key: 401")
    st, j = http(hport, "/v1/lookup", body, key="nope-nope-nope-nope")
    check(st == 401, "HTTP with a wrong Bearer key: 401")
    st, j = http(hport, "/v1/lookup", body, key=RO)
    check(st == 200 and j["result"]["hit"], "HTTP Bearer read key: lookup")
    st, j = http(hport, "/v1/insert", {**body, "response": "x"}, key=RO)
    check(st == 403 and j["error"]["code"] == "forbidden",
          "HTTP Bearer read key: insert 403")
    st, j = http(hport, "/v1/lookup", {**body, "key": RO})
    check(st == 200, "HTTP: the key in the JSON body")
    st, _ = http(hport, "/healthz")
    check(st == 200, "HTTP /healthz needs no key")
    st, j = http(hport, "/report")
    check(st == 401 and j["error"]["code"] == "unauthorized",
          f"HTTP GET /report without a key: {st}")
    st, j = http(hport, "/report", key=RO)
    check(st == 403 and j["error"]["code"] == "forbidden",
          f"HTTP GET /report with a read key: {st}")
    st, j = http(hport, "/metrics", key=RW_A)
    check(st == 403, f"HTTP GET /metrics with a namespace key: {st}")
    st, j = http(hport, "/report", key=ADMIN)
    check(st == 200 and "total" in j, "HTTP GET /report with the admin key")
    st, j = http(hport, "/v1/report", {}, key=RW_A)
    check(st == 403 and j["error"]["code"] == "forbidden",
          f"HTTP POST /v1/report of all with a namespace key: {st}")
    st, j = http(hport, "/v1/report", {"ns": "team-a:docs"}, key=RW_A)
    check(st == 200 and j["ok"] and
          [r["key"] for r in j["result"]["rows"]] == ["team-a:docs"],
          f"HTTP POST /v1/report of its namespace with a namespace key: {st}")
    st, text = http(hport, "/metrics", key=ADMIN)
    una = [ln for ln in str(text).splitlines()
           if ln.startswith('semcache_requests_refused_total{reason="unauthorized"}')]
    forb = [ln for ln in str(text).splitlines()
            if ln.startswith('semcache_requests_refused_total{reason="forbidden"}')]
    check(st == 200 and una and int(float(una[0].split()[1])) >= 10 and
          forb and int(float(forb[0].split()[1])) >= 15,
          f"/metrics counts refusals ({una} {forb})")
    for c in (admin, ro, rw):
        c.close()


def wait_log(log, want, after, timeout=10):
    """Whether the log shows want past offset after, within timeout s."""
    end = time.time() + timeout
    while time.time() < end:
        log.seek(after)
        if want in log.read():
            return True
        time.sleep(0.05)
    return False


def reload(proc, port, hport, log, keyfile):
    """SIGHUP reads the --config files again for their keys: a rotated key
    is in and the old one out at once, a bad file changes nothing, and
    requests running meanwhile are served throughout."""
    V = [0.1, 0.2, 0.3]
    with open(keyfile, "w") as f:
        json.dump([{"key": ROTATED, "name": "faq-reader-2",
                    "read": ["faq"]}], f)
    at = log.seek(0, os.SEEK_END)
    proc.send_signal(signal.SIGHUP)
    check(wait_log(log, "SIGHUP: keys reloaded: 3 access keys", at),
          "SIGHUP: the log says the keys were reloaded")
    with Client("127.0.0.1", port, key=RO) as c:
        check(code_of(lambda: c.lookup("faq", vec=V)) == "unauthorized",
              "SIGHUP: the key taken out of the file is refused")
    with Client("127.0.0.1", port, key=ROTATED) as c:
        r = c.lookup("faq", vec=V)
        check(r["hit"] and r["response"] == b"faq answer",
              "SIGHUP: the key put in the file is served")
        check(code_of(lambda: c.insert("faq", vec=V, response=b"x")) ==
              "forbidden", "SIGHUP: with its grants (read only)")
    status, _ = http(hport, "/metrics", key=ROTATED)
    check(status == 403, f"SIGHUP: HTTP knows the new key ({status})")
    # A file that does not validate: the keys in force stay.
    with open(keyfile, "w") as f:
        f.write("[{\"key\": \"short\"")
    at = log.seek(0, os.SEEK_END)
    proc.send_signal(signal.SIGHUP)
    check(wait_log(log, "SIGHUP: bad configuration", at) and
          wait_log(log, "the keys in force stay", at),
          "SIGHUP: a bad keys file is reported")
    with Client("127.0.0.1", port, key=ROTATED) as c:
        check(c.lookup("faq", vec=V)["hit"],
              "SIGHUP: after a bad file the keys in force still serve")
    # Reloads while requests run: every lookup of the admin key (in every
    # set) is served, and no set is freed under a request using it.
    sets = ([{"key": ROTATED, "name": "faq-reader-2", "read": ["faq"]}],
            [{"key": RO, "name": "faq-reader", "read": ["faq"]}])
    errors, done = [], []

    def hammer():
        try:
            with Client("127.0.0.1", port, key=ADMIN) as c:
                for _ in range(1500):
                    if not c.lookup("faq", vec=V)["hit"]:
                        errors.append("miss")
                    if c.lookup_batch("faq", [{"vec": V}] * 4) is None:
                        errors.append("batch")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
        done.append(1)

    import threading
    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    n = 0
    while len(done) < len(threads):
        with open(keyfile, "w") as f:
            json.dump(sets[n % 2], f)
        proc.send_signal(signal.SIGHUP)
        n += 1
        time.sleep(0.02)
    for t in threads:
        t.join()
    check(not errors and n >= 5, f"SIGHUP: {n} reloads while 3 clients "
          f"looked up: errors {errors[:3]}")
    print(f"  SIGHUP: rotated key in, old out, bad file kept the keys; {n} "
          "reloads under 3 clients' lookups, none failed")

    # A burst of signals with no pause: most arrive while the main thread
    # is busy reloading, when the kernel gives them to a thread that a
    # library started before main (OpenBLAS's). The server must take them
    # as signals still, not die of them (it did: status 129).
    for _ in range(2000):
        proc.send_signal(signal.SIGHUP)
    time.sleep(1.5)
    check(proc.poll() is None,
          f"SIGHUP: a burst of 2000 leaves the server running "
          f"({proc.returncode})")
    if proc.poll() is None:
        with Client("127.0.0.1", port, key=ADMIN) as c:
            check(c.lookup("faq", vec=V)["hit"],
                  "SIGHUP: after the burst, served")


def main(argv):
    server = argv[argv.index("--server") + 1]
    cli = argv[argv.index("--cli") + 1]
    tmp = tempfile.mkdtemp(prefix="semcache-keys-")
    port, hport = free_port(), free_port()
    conf = os.path.join(tmp, "semcached.json")
    keyfile = os.path.join(tmp, "keys.json")
    with open(keyfile, "w") as f:
        json.dump([{"key": RO, "name": "faq-reader", "read": ["faq"]}], f)
    with open(conf, "w") as f:
        json.dump({"listen": f"tcp://127.0.0.1:{port}",
                   "http": f"127.0.0.1:{hport}",
                   "keys_file": keyfile,
                   "keys": [{"key": ADMIN, "name": "ops", "admin": True},
                            {"key": RW_A, "name": "team-a",
                             "write": ["team-a:*"]}]}, f)
    # Bad key configurations are refused at start, without the secret.
    bad = os.path.join(tmp, "bad.json")
    for keys, what in (([{"key": "short", "name": "x"}], "a short key"),
                       ([{"key": RW_A, "name": "a"}, {"key": RW_A, "name": "b"}],
                        "a secret twice"),
                       ([{"key": RW_A, "name": "a", "read": ["bad ns"]}],
                        "a bad pattern"),
                       ([{"key": RW_A}], "a key without a name")):
        with open(bad, "w") as f:
            json.dump({"keys": keys}, f)
        p = subprocess.run([server, "--config", bad, "--data-dir", tmp,
                            "--listen", f"tcp://127.0.0.1:{free_port()}"],
                           capture_output=True, text=True, timeout=20)
        check(p.returncode == 2 and "bad configuration" in p.stderr and
              RW_A not in p.stderr, f"config with {what} refused: "
              f"{p.stderr.strip().splitlines()[-1] if p.stderr else ''}")
    # Appending: the test reads it (seeking) while semcached writes to it.
    log = open(os.path.join(tmp, "stderr"), "a+")
    proc = subprocess.Popen([server, "--config", conf, "--data-dir", tmp],
                            stderr=log)
    try:
        c = wait_up(port)
        check(c is not None, "semcached starts with keys")
        if c is not None:
            c.close()
            run(port, hport, cli)
            reload(proc, port, hport, log, keyfile)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            check(proc.wait(timeout=10) == 0, "semcached exits 0 on SIGTERM")
        except subprocess.TimeoutExpired:
            proc.kill()
            check(False, "semcached exits on SIGTERM")
        log.seek(0)
        text = log.read()
        log.close()
        check("3 access keys" in text and "ops (admin)" in text,
              "the log names the keys")
        check(not any(s in text for s in SECRETS) and
              not any(s[:12] in text for s in SECRETS),
              "no secret (nor its start) in semcached's stderr")
        check("unauthorized" in text, "the shutdown line counts refusals")
        shutil.rmtree(tmp, ignore_errors=True)
    p, f = test_semcache.passed, test_semcache.failed
    print(f"test_keys: {p} passed, {f} failed")
    return 1 if f else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
