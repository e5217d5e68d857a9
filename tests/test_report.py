#!/usr/bin/python3
"""test_report.py --server PATH/TO/semcached --cli PATH/TO/semcache-cli

The cost ledger end to end: a scripted FAQ workload against a real
semcached with a price table made here, then the "report" op, whose figures
this test recomputes on its own from the workload and the prices; the
human report of semcache-cli; an unknown model's cost stays unknown; a bad
price table stops the start. The rows come a page at a time (a ledger of
2^20 rows in one reply was some 600 MiB, past every cap): over nng, the
CLI, GET /report and POST /v1/report alike. /metrics has dollar series for
live namespaces only, the dropped ones' summed in ns="(dropped)". Prints
"N passed, N failed" last."""
import base64
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(HERE, "..", "clients", "python"))
from test_semcache import (check, free_port, wait_client,  # noqa: E402
                           wait_http)
import test_semcache  # noqa: E402

PRICES = {
    "date": "2026-02-01",
    "cpu_hour": 0.36,
    "models": {"llm-a": {"input": 3.0, "output": 15.0},
               "llm-b": {"input": 0.2, "output": 0.8}},
    "embedding_models": {"emb": 0.05},
}


def near(a, b):
    return a is not None and abs(a - b) <= 1e-12 + 1e-9 * abs(b)


def usd(model, tin, tout):
    p = PRICES["models"][model]
    return (tin * p["input"] + tout * p["output"]) / 1e6


def http_get(hport, path):
    """(status, parsed JSON body) of GET path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{hport}{path}",
                                    timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def pages(c, cli, port, hport):
    """1,001 users more: the rows by user come in pages."""
    users = [f"u{i:04d}" for i in range(1001)]
    for u in users:
        c.lookup("faq", vec=[0.3, 0.3, 0.3, 0.9], user=u,
                 embed_model="emb")
    keys = [""] + users  # the earlier lookups are untagged
    rep = c.report(by="user")
    check(len(rep["rows"]) == 1000 and rep["more"] == len(keys) - 1000
          and rep["next"] == keys[999],
          f"the default page: {len(rep['rows'])} rows, more "
          f"{rep.get('more')}, next {rep.get('next')!r}")
    check(rep["total"]["requests"] == 8 + len(users),
          "the total is over every row")
    got = [r["key"] for r in c.report_rows(by="user", limit=300)]
    check(got == keys, f"report_rows reads every row once, in name order "
          f"({len(got)} of {len(keys)})")
    last = c.report(by="user", after=keys[-2], limit=5)
    check([r["key"] for r in last["rows"]] == keys[-1:]
          and last["more"] == 0 and last["next"] is None, "the last page")
    for bad in (0, 10001, -1, "5"):
        try:
            c.report(by="user", limit=bad)
            check(False, f"limit {bad!r} refused")
        except Exception as ex:  # noqa: BLE001 - SemcacheError expected
            check("bad_request" in str(ex) or "limit" in str(ex),
                  f"limit {bad!r} refused: {ex}")
    # The CLI: a page, and how many rows it left out.
    addr = f"tcp://127.0.0.1:{port}"
    out = subprocess.run([cli, "-a", addr, "report", "--by", "user",
                          "--limit", "5", "--after", "u0100"],
                         capture_output=True, text=True, timeout=30)
    check(out.returncode == 0 and "u0105" in out.stdout
          and "u0106" not in out.stdout and "u0100" not in out.stdout
          and "895 more rows" in out.stdout
          and "--after 'u0105'" in out.stdout,
          f"semcache-cli report --limit 5 --after: {out.stdout}{out.stderr}")
    out = subprocess.run([cli, "-a", addr, "report", "--by", "user",
                          "--limit", "0"],
                         capture_output=True, text=True, timeout=30)
    check(out.returncode == 2, "semcache-cli report --limit 0 is bad usage")
    # HTTP: GET /report takes the fields as query parameters, POST
    # /v1/report in its body; both answer as nng does.
    st, body = http_get(hport, "/report?by=user&limit=2&after=u0500")
    want = c.report(by="user", limit=2, after="u0500")
    check(st == 200 and [r["key"] for r in body["rows"]] == ["u0501", "u0502"]
          and body["more"] == want["more"] and body["next"] == "u0502",
          f"GET /report?by=user&limit=2&after=u0500: {st} "
          f"{str(body)[:200]}")
    st, body = http_get(hport, "/report")
    check(st == 200 and body["by"] == "ns" and len(body["rows"]) == 1
          and body["more"] == 0 and body["next"] is None,
          f"GET /report as before: {st}")
    st, body = http_get(hport, "/report?by=user&after=u%30999")
    check(st == 200 and [r["key"] for r in body["rows"]] == ["u1000"],
          "GET /report decodes its parameters")
    for q in ("limit=x", "limit=0", "by=nobody", "after=%zz"):
        st, body = http_get(hport, "/report?" + q)
        check(st == 400 and body["ok"] is False
              and body["error"]["code"] == "bad_request",
              f"GET /report?{q}: {st} {body}")
    # A parameter the front cannot decode is named, with what is wrong.
    for q, said in (("limit=x", "query parameter limit: not a decimal"),
                    ("after=%zz", "query parameter after: bad percent"),
                    ("limit=%zz", "query parameter limit: bad percent"),
                    ("limit=" + "9" * 30, "field 'limit' must be 1.."),
                    ("ns=" + "a" * 300, "query parameter ns: bad percent")):
        st, body = http_get(hport, "/report?" + q)
        check(st == 400 and body["error"]["message"].startswith(said),
              f"GET /report?{q[:20]} says why: {body}")
    # An ns the op refuses: the op's own error, as over nng.
    st, body = http_get(hport, "/report?ns=" + "a" * 200)
    check(st == 400 and body["error"]["code"] == "too_big",
          f"GET /report?ns=<200 bytes>: the op's too_big: {st} {body}")
    req = urllib.request.Request(
        f"http://127.0.0.1:{hport}/v1/report", method="POST",
        data=json.dumps({"by": "user", "limit": 3}).encode())
    with urllib.request.urlopen(req, timeout=30) as r:
        body = json.loads(r.read())["result"]
    check([r["key"] for r in body["rows"]] == keys[:3]
          and body["more"] == len(keys) - 3, "POST /v1/report pages")
    # The CLI's hint for the next page is one shell word that gives the
    # key back, whatever it holds: a quote, a backslash, a tab (bash's
    # $'...' for the tab: no POSIX quoting writes it printably).
    for u in ("v'a\\b", "v'c\tz", "w"):
        c.lookup("faq", vec=[0.3, 0.3, 0.3, 0.9], user=u, embed_model="emb")
    for after, want, sh in (("u1000", "v'a\\b", "/bin/sh"),
                            ("v'a\\b", "v'c\tz", "/bin/bash")):
        out = subprocess.run([cli, "-a", addr, "report", "--by", "user",
                              "--limit", "1", "--after", after],
                             capture_output=True, text=True, timeout=30)
        hint = [ln for ln in out.stdout.splitlines()
                if "after these: the next page" in ln]
        word = hint[0].split(" --after ", 1)[1] if hint else ""
        if after == "v'a\\b":  # one row after this page: "1 more row"
            check(hint and "... 1 more row after these" in hint[0],
                  f"one row more is said in the singular: {hint}")
        got = subprocess.run([sh, "-c", "printf %s " + word],
                             capture_output=True, text=True, timeout=30)
        check(out.returncode == 0 and got.returncode == 0
              and got.stdout == want,
              f"the --after hint {word!r} is a shell word for {want!r}: "
              f"{got.stdout!r} {got.stderr!r}")
    # A tag that is not UTF-8 (the server does not check it): GET /report
    # gives its row as POST /v1/report does, its key in "key_base64"
    # (the page once answered 500 "input/output error": no JSON string
    # holds it).
    pack = c._pack
    c._pack = lambda req: pack(req).replace(b"wZZ", b"w\xff\xfe")
    try:
        c.lookup("faq", vec=[0.3, 0.3, 0.3, 0.9], user="wZZ",
                 embed_model="emb")
    finally:
        c._pack = pack
    st, body = http_get(hport, "/report?by=user&after=w")
    check(st == 200 and body["rows"][0].get("key_base64") == "d//+"
          and "key" not in body["rows"][0],
          f"GET /report with a tag that is not UTF-8: {st} "
          f"{str(body)[:200]}")
    st, body = http_get(hport, "/report?by=user&after=v%27c%09z&limit=1")
    check(st == 200 and body["next"] == "w" and body["more"] == 1,
          f"the page before it: {st} {str(body)[:200]}")
    st, body = http_get(hport, "/report?by=user&after=w%FF%FE")
    check(st == 200 and body["rows"] == [] and body["next"] is None,
          f"GET /report after it, percent-encoded: {st} {str(body)[:200]}")


def post_report(hport, body):
    """POST /v1/report: (status, reply object)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{hport}/v1/report", method="POST",
        data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def walk(page_of, limit):
    """Every key of the rows by user as bytes, following each page's next
    (next_base64 for a key that is not UTF-8); None when a page fails or
    the walk does not end."""
    keys, after = [], None
    for _ in range(100):
        res = page_of(after, limit)
        if res is None:
            return None
        for r in res["rows"]:
            keys.append(r["key"].encode() if "key" in r
                        else base64.b64decode(r["key_base64"]))
        if res.get("next") is not None:
            after = res["next"].encode()
        elif res.get("next_base64") is not None:
            after = base64.b64decode(res["next_base64"])
        else:
            return keys
    return None


def pages_not_utf8(c, cli, port, hport):
    """Every client walks every page of a ledger with a tag that is not
    UTF-8 (w\xff\xfe, made in pages) and a tag after it: over nng (the
    Python client), the CLI's --after hint, GET /report and POST
    /v1/report (its after_base64)."""
    c.lookup("faq", vec=[0.3, 0.3, 0.3, 0.9], user="x", embed_model="emb")
    want = sorted(r["key"].encode("utf-8", "surrogateescape")
                  for r in c.report(by="user", limit=10000)["rows"])
    check(len(want) > 1000 and want[-2:] == [b"w\xff\xfe", b"x"],
          f"the rows by user end with the tag: {want[-3:]}")
    # Pages that end at the tag: the next page's after is its bytes.
    lim = want.index(b"w\xff\xfe") + 1
    got = [k.encode("utf-8", "surrogateescape")
           for k in (r["key"] for r in c.report_rows(by="user", limit=lim))]
    check(got == want, f"report_rows over nng reads past it ({len(got)} of "
          f"{len(want)})")

    def get_page(after, limit):
        q = f"by=user&limit={limit}"
        if after is not None:
            q += "&after=" + urllib.parse.quote_from_bytes(after, safe="")
        st, body = http_get(hport, "/report?" + q)
        return body if st == 200 else None

    def post_page(after, limit):
        body = {"by": "user", "limit": limit}
        if after is not None:
            try:
                body["after"] = after.decode()
            except UnicodeDecodeError:
                body["after_base64"] = base64.b64encode(after).decode()
        st, rep = post_report(hport, body)
        return rep["result"] if st == 200 else None

    got = walk(get_page, lim)
    check(got == want, f"GET /report pages past it ({len(got or [])} of "
          f"{len(want)})")
    # POST: a JSON string holds no such key; "after_base64" carries it,
    # as "next_base64" and "key_base64" do in replies. The walk once began
    # again at the first row for ever: the field was not known.
    got = walk(post_page, lim)
    check(got == want, f"POST /v1/report pages past it with after_base64 "
          f"({len(got or [])} of {len(want)})")
    st, rep = post_report(hport, {"by": "user", "limit": 1,
                                  "after_base64": "dw=="})  # "w"
    check(st == 200 and rep["result"]["rows"][0].get("key_base64") == "d//+"
          and rep["result"]["next_base64"] == "d//+"
          and rep["result"]["more"] == 1, f"after_base64 'w': {st} {rep}")
    for body, said in (({"after_base64": "d//"},
                        "field 'after_base64' must be a string of padded"),
                       ({"after_base64": 5},
                        "field 'after_base64' must be a string of padded"),
                       ({"after": "w", "after_base64": "dw=="},
                        "give 'after' or 'after_base64', not both")):
        st, rep = post_report(hport, body)
        check(st == 400 and rep["error"]["code"] == "bad_request"
              and rep["error"]["message"].startswith(said),
              f"POST /v1/report {body}: {st} {rep}")
    # The CLI: its hint for the next page is a shell word of the bytes,
    # and --after with them reads on.
    addr = f"tcp://127.0.0.1:{port}"
    out = subprocess.run([cli, "-a", addr, "report", "--by", "user",
                          "--limit", "1", "--after", "w"],
                         capture_output=True, timeout=30)
    hint = [ln for ln in out.stdout.splitlines() if b"more row" in ln]
    word = hint[0].split(b" --after ", 1)[1] if hint else b""
    got = subprocess.run([b"/bin/bash", b"-c", b"printf %s " + word],
                         capture_output=True, timeout=30)
    check(out.returncode == 0 and got.stdout == b"w\xff\xfe",
          f"the CLI's --after hint {word!r} gives the bytes: {got.stdout!r}")
    out = subprocess.run([cli.encode(), b"-a", addr.encode(), b"report",
                          b"--by", b"user", b"--after", got.stdout],
                         capture_output=True, timeout=30)
    check(out.returncode == 0 and b"  x " in out.stdout
          and b"\\xff" not in out.stdout,
          f"semcache-cli report --after it: {out.stdout[-300:]!r}")


def metric_series(hport, name):
    """{ns: value} of the series of name on GET /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{hport}/metrics",
                                timeout=30) as r:
        page = r.read().decode()
    out = {}
    for line in page.splitlines():
        if line.startswith(name + '{ns="'):
            ns = line[len(name) + 5:].split('"', 1)[0]
            out[ns] = float(line.rsplit(" ", 1)[1])
    return out


def dropped_series(c, port, hport):
    """/metrics has dollar series for live namespaces only: those of
    dropped ones are summed into ns="(dropped)", so churn of namespaces
    does not grow the page, while report keeps every row."""
    name = "semcache_dollars_avoided_total"
    before = metric_series(hport, name)
    made = [f"churn{i:02d}" for i in range(40)]
    for ns in made:
        c.ns_create(ns, dim=4)
        c.insert(ns, "R", vec=[1, 0, 0, 0], model="llm-a",
                 input_tokens=1000, output_tokens=100)
        c.lookup(ns, vec=[1, 0, 0, 0])
    one = usd("llm-a", 1000, 100)
    live = metric_series(hport, name)
    check(all(near(live.get(ns), one) for ns in made),
          "a live namespace's dollars have their own series")
    for ns in made[1:]:
        c.ns_drop(ns)
    after = metric_series(hport, name)
    check(set(after) == set(before) | {made[0], "(dropped)"},
          f"series after the drops: {sorted(after)}")
    check(near(after.get("(dropped)"), 39 * one),
          f"the dropped ones' dollars in one series: {after.get('(dropped)')}")
    tot = c._op("report")["total"]["usd_avoided"]
    check(near(sum(after.values()), tot),
          f"the series still add up to the report: {sum(after.values())} "
          f"vs {tot}")
    keys = {r["key"] for r in c._op("report", limit=10000)["rows"]}
    check(set(made) <= keys, "report keeps the dropped namespaces' rows")
    tok = metric_series(hport, "semcache_tokens_avoided_total")
    check(tok.get("(dropped)") is not None, "tokens are folded alike")
    # The page stays the same size however many come and go.
    with urllib.request.urlopen(f"http://127.0.0.1:{hport}/metrics",
                                timeout=30) as r:
        size = len(r.read())
    for i in range(40):
        ns = f"again{i:02d}"
        c.ns_create(ns, dim=4)
        c.insert(ns, "R", vec=[1, 0, 0, 0], model="llm-a",
                 input_tokens=1000, output_tokens=100)
        c.lookup(ns, vec=[1, 0, 0, 0])
        c.ns_drop(ns)
    with urllib.request.urlopen(f"http://127.0.0.1:{hport}/metrics",
                                timeout=30) as r:
        size2 = len(r.read())
    check(abs(size2 - size) < 200,
          f"churn leaves the page's size: {size} then {size2} bytes")
    after2 = metric_series(hport, name)
    check(near(after2.get("(dropped)"), 79 * one),
          "the (dropped) series only grows")
    c.ns_drop(made[0])


def ledger_series(hport):
    """{series line's name and labels: value} of the four ledger families
    on GET /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{hport}/metrics",
                                timeout=30) as r:
        page = r.read().decode()
    fams = ("semcache_dollars_avoided_total", "semcache_dollars_spent_total",
            "semcache_dollars_false_hits_total", "semcache_tokens_avoided_total")
    return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
            for ln in page.splitlines() if ln.startswith(fams)}


def remade_series(c, hport):
    """A namespace made again under a dropped one's name: no counter of
    /metrics goes down (the (dropped) series did, when the name's row
    left it), the new namespace's series start at zero, and report keeps
    the name's sums over both."""
    one = usd("llm-a", 1000, 100)
    avoided = 'semcache_dollars_avoided_total{ns="%s"}'
    steps = []

    def use(ns):
        c.insert(ns, "R", vec=[1, 0, 0, 0], model="llm-a",
                 input_tokens=1000, output_tokens=100, embed_model="emb")
        c.lookup(ns, vec=[1, 0, 0, 0], embed_model="emb", embed_tokens=10)

    def scrape(what):
        steps.append((what, ledger_series(hport)))

    c.ns_create("remade", dim=4)
    use("remade")
    scrape("made, used")
    c.ns_drop("remade")
    scrape("dropped")
    c.ns_create("remade", dim=4)
    scrape("made again")
    check(steps[-1][1].get(avoided % "remade") == 0.0,
          f"made again, its series start at zero: "
          f"{steps[-1][1].get(avoided % 'remade')}")
    use("remade")
    scrape("used again")
    check(near(steps[-1][1].get(avoided % "remade"), one),
          "then count its own hits only")
    c.ns_drop("remade")
    scrape("dropped again")
    c.ns_create("remade", dim=4)
    scrape("made a third time")
    for (w0, s0), (w1, s1) in zip(steps, steps[1:]):
        down = {k: (v, s1[k]) for k, v in s0.items()
                if k in s1 and s1[k] < v}
        gone = [k for k in s0 if k not in s1
                and '{ns="remade"' not in k]  # its own go with a drop
        check(not down and not gone,
              f"no counter goes down from {w0} to {w1}: {down} {gone}")
    d = [s[avoided % "(dropped)"] for _, s in steps]
    check(near(d[-1] - d[0], 2 * one),
          f"(dropped) took both dropped namespaces' dollars: {d}")
    rows = {r["key"]: r for r in c._op("report", limit=10000)["rows"]}
    check(near(rows["remade"]["usd_avoided"], 2 * one)
          and rows["remade"]["requests"] == 2,
          f"report keeps the name's sums over its namespaces: "
          f"{rows.get('remade')}")
    c.ns_drop("remade")


def metric_value(hport, line_name):
    """The value of the one series line_name (name and labels) on GET
    /metrics, or None."""
    with urllib.request.urlopen(f"http://127.0.0.1:{hport}/metrics",
                                timeout=30) as r:
        page = r.read().decode()
    for ln in page.splitlines():
        if ln.rsplit(" ", 1)[0] == line_name:
            return float(ln.rsplit(" ", 1)[1])
    return None


def remade_crash(server, prices, tmp):
    """kill -9 right after a namespace is dropped and made again: the base
    of the name (what it held, which /metrics keeps in ns="(dropped)") is
    durable with the namespace's making, so after the restart no counter
    is lower than before the kill. It was logged with the ledger's next
    second only, and lost with it: (dropped) went down by the name's
    dollars, and the new namespace's series jumped up by them."""
    data = os.path.join(tmp, "crash")
    os.makedirs(data)
    port, hport = free_port(), free_port()
    argv = [server, "--listen", f"tcp://127.0.0.1:{port}", "--prices",
            prices, "--data-dir", data, "--http", f"127.0.0.1:{hport}"]
    written = 'semcache_persist_records_total{state="written"}'
    one = usd("llm-a", 1000, 100)
    rounds = 3
    for rnd in range(rounds):
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        try:
            c = wait_client(port)
            up = c is not None and wait_http(hport, proc=proc)
            check(up, f"crash round {rnd}: connect")
            if not up:
                return
            ns = f"crashed{rnd}"
            c.ns_create(ns, dim=4)
            c.insert(ns, "R", vec=[1, 0, 0, 0], model="llm-a",
                     input_tokens=1000, output_tokens=100)
            c.lookup(ns, vec=[1, 0, 0, 0])
            # The row's sums logged by a tick (a record written with no
            # change of the client's; none when a tick logged them before
            # w0 was read), so that without the base made durable the kill
            # below loses the base, not these sums.
            w0 = metric_value(hport, written)
            deadline = time.monotonic() + 5
            while metric_value(hport, written) == w0 and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
            c.ns_drop(ns)
            c.ns_create(ns, dim=4)
            before = ledger_series(hport)
            c.close()
        finally:
            proc.kill()
            proc.communicate(timeout=30)
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        try:
            c = wait_client(port)
            up = c is not None and wait_http(hport, proc=proc)
            check(up, f"crash round {rnd}: restart")
            if not up:
                return
            after = ledger_series(hport)
            c.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
        down = {k: (v, after.get(k)) for k, v in before.items()
                if after.get(k) is None or after[k] < v}
        check(not down, f"crash round {rnd}: no counter goes down across "
              f"a kill -9 right after a drop and a making again: {down}")
        dropped = 'semcache_dollars_avoided_total{ns="(dropped)"}'
        mine = 'semcache_dollars_avoided_total{ns="%s"}' % ns
        check(near(after.get(dropped), (rnd + 1) * one)
              and after.get(mine) == 0.0,
              f"crash round {rnd}: (dropped) keeps the name's dollars, the "
              f"new namespace starts at zero: {after.get(dropped)} "
              f"{after.get(mine)}")


def main():
    argv = sys.argv
    server = argv[argv.index("--server") + 1]
    cli = argv[argv.index("--cli") + 1]
    tmp = tempfile.mkdtemp(prefix="semcache-report-")
    prices = os.path.join(tmp, "prices.json")
    with open(prices, "w") as f:
        json.dump(PRICES, f)
    port = free_port()
    hport = free_port()
    conf = os.path.join(tmp, "semcached.json")
    with open(conf, "w") as f:
        # Cost targets: "store" is cheap to serve (its one call is cheap),
        # "support" cannot meet a target of zero dollars.
        json.dump({"cost_targets": {"features": {"support": 0.0,
                                                 "store": 1.0},
                                    "namespaces": {"faq": 1e-12}}}, f)
    proc = subprocess.Popen([server, "--listen", f"tcp://127.0.0.1:{port}",
                             "--prices", prices, "--data-dir", tmp,
                             "--config", conf,
                             "--http", f"127.0.0.1:{hport}"],
                            stderr=subprocess.PIPE, text=True)
    try:
        c = wait_client(port)
        check(c is not None and wait_http(hport, proc=proc), "connect")
        # The workload. Entries: (text, vector, model, in, out, feature).
        faq = [("return policy", [1, 0, 0, 0], "llm-a", 800, 300, "support"),
               ("opening hours", [0, 1, 0, 0], "llm-b", 100, 50, "store"),
               ("who made you", [0, 0, 1, 0], "llm-z", 10, 10, "support")]
        ids = []
        for text, vec, model, tin, tout, feat in faq:
            ids.append(c.insert("faq", text.upper(), text=text, vec=vec,
                                model=model, input_tokens=tin,
                                output_tokens=tout, feature=feat,
                                embed_model="emb"))
        # Tokens not given: estimated from bytes (13 of text -> 4, 8 of
        # response -> 2), and said so in the hit.
        e4 = c.insert("faq", "ANSWER!!", text="free shipping?",
                      vec=[0, 0, 0, 1], model="llm-b", feature="store",
                      embed_model="emb")
        lookups = [  # (kwargs, served entry or None)
            (dict(text="Return policy"), 0),            # exact
            (dict(text="RETURN  POLICY"), 0),           # exact
            (dict(vec=[0.98, 0.05, 0, 0], embed_model="emb",
                  embed_tokens=6), 0),                  # semantic
            (dict(vec=[0.02, 0.99, 0, 0], embed_model="emb",
                  embed_tokens=4, feature="web"), 1),   # semantic, tagged
            (dict(text="who made you"), 2),             # unpriced model
            (dict(text="free shipping?"), 3),           # estimated tokens
            (dict(vec=[0.5, 0.5, 0.5, 0.5], embed_model="emb",
                  embed_tokens=9), None),               # a miss
            (dict(text="something else"), None),        # a miss
        ]
        for kw, want in lookups:
            r = c.lookup("faq", **kw)
            got = ids.index(r["entry"]) if r["hit"] and r["entry"] in ids \
                else (3 if r["hit"] and r["entry"] == e4 else None)
            check(got == want, f"lookup {kw} served {got}, want {want}")
            if want == 3:
                check(r["tokens_estimated"] is True
                      and r["input_tokens"] == 4 and r["output_tokens"] == 2,
                      "estimated tokens are said so in the hit")
            if want == 0:
                check(r["tokens_estimated"] is False, "given tokens")
        # The opening-hours hit was wrong; its lookup was tagged "web".
        c.feedback(ids[1], feature="web")

        rep = c._op("report")
        t = rep["total"]
        check(rep["prices_date"] == "2026-02-01", "the price table's date")
        a, b = usd("llm-a", 800, 300), usd("llm-b", 100, 50)
        est = usd("llm-b", 4, 2)
        check(t["requests"] == 8 and t["exact_hits"] == 4
              and t["semantic_hits"] == 2, f"counts {t}")
        check(near(t["usd_avoided"], 3 * a + b + est),
              f"dollars avoided {t['usd_avoided']} vs {3 * a + b + est}")
        check(t["hits_unpriced"] == 1, "the unknown model's hit is unpriced")
        check(t["hits_estimated"] == 1, "one hit's tokens were estimated")
        check(t["tokens_in_avoided"] == 3 * 800 + 100 + 10 + 4
              and t["tokens_out_avoided"] == 3 * 300 + 50 + 10 + 2,
              "tokens avoided")
        check(t["false_hits"] == 1 and near(t["usd_false_hits"], b),
              "the false hit and its cost")
        # Spend: client embeddings at $0.05 per million tokens, plus CPU
        # time at $0.36 an hour (= $0.0001 a second).
        check(t["embed_tokens"] == 6 + 4 + 9, "embedding tokens")
        cpu = 0.36 / 3600
        spent = (19 * 0.05 / 1e6 + t["embed_cpu_s"] * cpu
                 + t["lookup_cpu_s"] * cpu)
        check(near(t["usd_spent"], spent), f"spent {t['usd_spent']} {spent}")
        check(t["lookup_cpu_s"] > 0, "lookups' time is measured")
        net = 3 * a + b + est - b - spent
        check(near(t["usd_net"], net), "net saved")
        check(near(t["return_on_spend"], (3 * a + b + est - b) / spent),
              "return on spend")
        per_hit = (3 * a + b + est) / 5  # five priced hits
        check(near(t["break_even_hit_rate"], (spent / 8) / per_hit),
              "break-even hit rate = spend per lookup / saving per hit")
        call = (a + b + est) / 3  # priced inserts
        check(near(t["usd_per_call"], call), "mean LLM call")
        day = t["lookups_per_day"]
        check(near(t["month_without"][1], day * 30 * 10 * call)
              and near(t["month_with"][2],
                       day * 3000 * ((2 / 8) * call + spent / 8)),
              "monthly bills at 10x and 100x")
        rows = {r["key"]: r for r in c._op("report", by="feature")["rows"]}
        check(set(rows) == {"support", "store", "web", ""},
              f"rows by feature {sorted(rows)}")
        check(rows["support"]["requests"] == 4
              and near(rows["support"]["usd_avoided"], 3 * a)
              and rows["support"]["hits_unpriced"] == 1, "support row")
        check(near(rows["web"]["usd_avoided"], b), "a lookup's own tag")
        check(rows["web"]["false_hits"] == 1
              and near(rows["web"]["usd_false_hits"], b)
              and rows["store"]["false_hits"] == 0,
              "a false hit counts where feedback says its lookup counted")
        check(rows["support"]["over_target"] is True
              and rows["support"]["target_usd_per_request"] == 0.0,
              "a feature over its cost target is flagged")
        check(rows["store"]["over_target"] is False, "one under it is not")
        check("over_target" not in rows["web"], "no target, no flag")
        one = c._op("report", ns="faq")["total"]
        check(one["requests"] == 8 and one["over_target"] is True,
              "report of one namespace, flagged against its target")
        # --json gives the reply's figures as they are: every number reads
        # back as the same double (the CLI wrote 9 digits, so that
        # 0.000449999399266663 came out as 0.000449999399).
        out = subprocess.run([cli, "-a", f"tcp://127.0.0.1:{port}", "--json",
                              "report", "--by", "feature"],
                             capture_output=True, text=True, timeout=30)
        jt = json.loads(out.stdout)["result"]["total"] \
            if out.returncode == 0 else {}
        t2 = c._op("report")["total"]
        for k in ("usd_avoided", "usd_false_hits", "usd_per_call",
                  "usd_embed", "embed_cpu_s", "lookup_cpu_s", "usd_spent",
                  "usd_net", "return_on_spend", "break_even_hit_rate",
                  "requests", "tokens_in_avoided"):
            check(jt.get(k) == t2[k],
                  f"--json report {k}: {jt.get(k)!r} vs {t2[k]!r}")
        # The human report.
        out = subprocess.run([cli, "-a", f"tcp://127.0.0.1:{port}", "report",
                              "--by", "feature", "--svg",
                              os.path.join(tmp, "r.svg")],
                             capture_output=True, text=True, timeout=30)
        check(out.returncode == 0 and "requests              8" in out.stdout
              and "cost unknown" in out.stdout and "support" in out.stdout
              and "break-even hit rate" in out.stdout
              and "OVER TARGET" in out.stdout,
              f"semcache-cli report ({out.returncode}): {out.stdout}"
              f"{out.stderr}")
        with open(os.path.join(tmp, "r.svg")) as f:
            svg = f.read()
        check(svg.startswith("<svg") and "polyline" in svg
              and svg.rstrip().endswith("</svg>"), "report --svg")
        pages(c, cli, port, hport)
        pages_not_utf8(c, cli, port, hport)
        dropped_series(c, port, hport)
        remade_series(c, hport)
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=10)
            check(proc.returncode == 0, "semcached exits 0")
            check("prices of 2026-02-01 from " + prices in err,
                  "the log names the price table")
        except subprocess.TimeoutExpired:
            proc.kill()
            check(False, "semcached exits on SIGTERM")
    remade_crash(server, prices, tmp)
    # A bad price table stops the start, naming the problem.
    with open(prices, "w") as f:
        f.write('{"models": {"x": {"input": -1, "output": 2}}}')
    r = subprocess.run([server, "--listen", f"tcp://127.0.0.1:{free_port()}",
                        "--prices", prices, "--data-dir", tmp],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 1 and "models.x" in r.stderr,
          f"a bad price table stops the start: {r.stderr!r}")
    shutil.rmtree(tmp, ignore_errors=True)
    p, f = test_semcache.passed, test_semcache.failed
    print(f"test_report: {p} passed, {f} failed")
    return 1 if f else 0


if __name__ == "__main__":
    sys.exit(main())
