#!/usr/bin/python3
"""test_proxy.py --server PATH/TO/semcached --table PATH/TO/embeddings.sctab

The OpenAI-compatible caching proxy (docs/PROXY.md) end to end: a real
semcached started with --http and --upstream in front of a fake upstream
(tests/fake_upstream.py) that this test runs on 127.0.0.1 and that counts
its calls. Repeated and paraphrased questions reach the upstream once;
errors, truncated and tool-call answers are never served from the cache;
the scope keeps models, parameters, system prompts, tools and
conversations apart; streams pass through, are stored when complete and
not when cut, and are served from the cache as streams; the x-semcache-*
headers, access keys, timeouts and upstream embeddings work. Prints "N
passed, N failed" last; exits 1 on a failure."""
import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "clients", "python"))
from fake_upstream import FakeUpstream  # noqa: E402
from test_semcache import check, free_port, wait_client  # noqa: E402
import test_semcache  # noqa: E402

MODEL = "gpt-4o-mini"
# The cache in memory only where the daemon can persist (these tests are
# about the proxy, and leave nothing on disk).
PERSIST = []


class Proxy:
    """A semcached with the proxy on; stopped with stop()."""

    def __init__(self, server, table, upstream, *extra):
        # A data directory of its own: nothing restored from another run.
        self.dir = tempfile.mkdtemp(prefix="semcache-proxy-")
        self.port = free_port()
        nport = free_port()
        # upstream None: the configuration file (in extra) names it.
        up = ["--upstream", upstream] if upstream is not None else []
        self.proc = subprocess.Popen(
            [server, "--listen", f"tcp://127.0.0.1:{nport}", "--http",
             f"127.0.0.1:{self.port}", *up,
             "--embed-table", table, "--data-dir", self.dir, *PERSIST,
             *extra],
            stderr=subprocess.PIPE, text=True)
        self.client = wait_client(nport)
        # The nng socket listens before the HTTP front and the proxy's
        # route are up: wait for the route (a 400 to an empty object).
        ready = False
        for _ in range(200):
            try:
                ready = self.post(None, raw=b"{}")[0] == 400
            except OSError:
                pass
            if ready:
                break
            time.sleep(0.05)
        check(self.client is not None and ready,
              f"semcached {' '.join(extra)} starts")

    def post(self, body, headers=None, raw=None, path="/v1/chat/completions"):
        """(status, headers dict with lower-case names, body bytes)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        data = raw if raw is not None else json.dumps(body).encode()
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        c.request("POST", path, body=data, headers=h)
        r = c.getresponse()
        out = r.read()
        hs = {k.lower(): v for k, v in r.getheaders()}
        c.close()
        return r.status, hs, out

    def chat(self, text, headers=None, **fields):
        body = {"model": MODEL,
                "messages": [{"role": "user", "content": text}]}
        body.update(fields)
        st, hs, out = self.post(body, headers)
        try:
            j = json.loads(out)
        except ValueError:
            j = None
        return st, hs, j

    def get(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.request("GET", path)
        r = c.getresponse()
        out = r.read()
        c.close()
        return out.decode()

    def inserts(self):
        """semcache_inserts_total summed over namespaces, from /metrics."""
        n = 0
        for line in self.get("/metrics").splitlines():
            if line.startswith("semcache_inserts_total{"):
                n += int(float(line.rsplit(" ", 1)[1]))
        return n

    def wait_inserts(self, want, seconds=10.0):
        """Waits until at least want entries were inserted (a stream is
        stored after its last byte was relayed); True when they were."""
        end = time.time() + seconds
        while self.inserts() < want:
            if time.time() > end:
                return False
            time.sleep(0.02)
        return True

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            check(False, "semcached exits on SIGTERM")
        check(self.proc.returncode == 0,
              f"semcached exits 0 (status {self.proc.returncode})")
        if self.proc.returncode != 0:
            print(err[-4000:], file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)
        return err


def content(j):
    try:
        return j["choices"][0]["message"]["content"]
    except (TypeError, KeyError, IndexError):
        return None


def timed_chat(p, text):
    """p.chat(text) as another client behind held workers sees it: the
    status (None when the connection failed), the body (or the error) and
    the seconds it took."""
    t0 = time.time()
    try:
        st, _, j = p.chat(text)
    except OSError as e:
        st, j = None, str(e)
    return st, j, time.time() - t0


def xsc(hs):
    return hs.get("x-semcache", "")


# How long the fake holds a call that a test's time-out should cut (0.5 to
# 3 s here): a guard only, far past any time-out it checks, so that a
# proxy that never cuts fails the check (the fake answers then) instead of
# hanging. It stays under the 30 s its HTTP clients wait for an answer.
HOLD = 20.0


def cut_seen(fake, want):
    """Waits (a guard of 10 s) until the fake has counted want calls cut
    by their caller (fake_upstream.py's `cuts`); True when it has."""
    end = time.monotonic() + 10
    while fake.cut_calls() < want and time.monotonic() < end:
        time.sleep(0.02)
    return fake.cut_calls() >= want


def read_stream(port, body, headers=None):
    """(status, headers, list of parsed events, saw [DONE])."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    c.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
              headers=h)
    r = c.getresponse()
    hs = {k.lower(): v for k, v in r.getheaders()}
    try:
        raw = r.read()
    except http.client.IncompleteRead as e:
        raw = e.partial
    c.close()
    events, done = [], False
    for block in raw.decode().split("\n\n"):
        for line in block.split("\n"):
            if not line.startswith("data: "):
                continue
            d = line[6:]
            if d == "[DONE]":
                done = True
            else:
                events.append(json.loads(d))
    return r.status, hs, events, done


def stream_text(events):
    out = ""
    for e in events:
        for ch in e.get("choices", []):
            out += ch.get("delta", {}).get("content") or ""
    return out


def status_line(port, text):
    """The status line of the answer to a chat request, read raw."""
    body = json.dumps({"model": MODEL, "messages": [
        {"role": "user", "content": text}]}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: " +
                  str(len(body)).encode() + b"\r\n\r\n" + body)
        got = b""
        while b"\r\n" not in got:
            d = s.recv(4096)
            if not d:
                break
            got += d
    return got.split(b"\r\n", 1)[0].decode(errors="replace")


def test_basics(p, fake):
    fake.mode = "ok"
    q = "How do I send a product back?"
    st, hs, j = p.chat(q, headers={"Authorization": "Bearer sk-upstream-1"})
    check(st == 200 and content(j) == f"Answer to: {q}", "a miss is answered")
    check(xsc(hs) == "miss; stored=yes", f"miss header ({xsc(hs)})")
    check(fake.chat_calls() == 1, "the miss went upstream")
    path, uh, _ = fake.last()
    check(uh.get("Authorization") == "Bearer sk-upstream-1",
          "Authorization reaches the upstream unchanged")
    check(j["id"] == "chatcmpl-fake-1", "the upstream answer is unchanged")
    # Repeated: the exact layer, no upstream call.
    st, hs, j2 = p.chat(q)
    check(st == 200 and content(j2) == content(j), "a repeat is served")
    check(xsc(hs) == "hit; layer=exact; similarity=1.000",
          f"exact hit header ({xsc(hs)})")
    check(hs.get("x-semcache-entry", "").isdigit(), "the entry id is given")
    check(j2["id"] != j["id"] and j2["object"] == "chat.completion" and
          j2["usage"]["prompt_tokens"] == 11, "a hit in OpenAI's format")
    # Paraphrased: the semantic layer.
    st, hs, j3 = p.chat("How can I send a product back?")
    check(st == 200 and content(j3) == content(j),
          "a paraphrase is served the same answer")
    check(xsc(hs).startswith("hit; layer=semantic; similarity=0.9"),
          f"semantic hit header ({xsc(hs)})")
    check(fake.chat_calls() == 1, "repeat and paraphrase reached upstream once")
    # The ledger got the exact token counts of usage: two hits of 11 + 7.
    m = p.get("/metrics")
    check('semcache_tokens_avoided_total{ns="chat",kind="input"} 22' in m and
          'semcache_tokens_avoided_total{ns="chat",kind="output"} 14' in m,
          "the ledger counts the usage field's tokens exactly")
    # A different question is a miss.
    st, hs, _ = p.chat("What payment methods do you accept?")
    check(xsc(hs).startswith("miss") and fake.chat_calls() == 2,
          "an unrelated question goes upstream")


def test_scope(p, fake):
    fake.mode = "ok"
    q = "Where can I track my order?"
    base = fake.chat_calls()
    p.chat(q)
    check(fake.chat_calls() == base + 1, "scope: first ask goes upstream")

    def miss(what, headers=None, q=q, **fields):
        n = fake.chat_calls()
        st, hs, _ = p.chat(q, headers=headers, **fields)
        check(st == 200 and xsc(hs).startswith("miss") and
              fake.chat_calls() == n + 1, f"scope: {what} is a miss "
              f"({xsc(hs)})")

    def hit(what, q=q, **fields):
        n = fake.chat_calls()
        st, hs, _ = p.chat(q, **fields)
        check(st == 200 and xsc(hs).startswith("hit") and
              fake.chat_calls() == n, f"scope: {what} is a hit ({xsc(hs)})")

    hit("the same request")
    miss("another model", model="gpt-4o")
    miss("another temperature", temperature=0.2)
    hit("temperature 0.2 again", temperature=0.2)
    hit("temperature 0.2 written 0.20", temperature=0.20)
    miss("temperature 1", temperature=1)
    hit("temperature 1.0 (same as 1)", temperature=1.0)
    miss("top_p", top_p=0.5)
    miss("max_tokens", max_tokens=50)
    miss("response_format", response_format={"type": "json_object"})
    tools = [{"type": "function", "function": {"name": "track", "parameters":
                                               {"type": "object"}}}]
    miss("tools", tools=tools)
    hit("the same tools", tools=tools)
    tools2 = [{"type": "function", "function": {"name": "cancel",
                                                "parameters":
                                                {"type": "object"}}}]
    miss("other tools", tools=tools2)
    sys1 = [{"role": "system", "content": "You are a shop assistant."},
            {"role": "user", "content": q}]
    miss("a system prompt", messages=sys1)
    hit("the same system prompt", messages=sys1)
    sys2 = [{"role": "system", "content": "You are a pirate."},
            {"role": "user", "content": q}]
    miss("another system prompt", messages=sys2)
    # Not cacheable at all: n > 1, last message not the user's.
    n = fake.chat_calls()
    st, hs, _ = p.chat(q, n=2)
    st2, hs2, _ = p.chat(q, n=2)
    check(xsc(hs) == "bypass; reason=n" and xsc(hs2) == "bypass; reason=n" and
          fake.chat_calls() == n + 2, f"n=2 passes through ({xsc(hs)})")


def test_multi_turn(p, fake):
    fake.mode = "ok"
    a = [{"role": "user", "content": "I bought a blue jacket."},
         {"role": "assistant", "content": "Nice, how can I help?"},
         {"role": "user", "content": "Can I return it?"}]
    b = [{"role": "user", "content": "I bought a concert ticket."},
         {"role": "assistant", "content": "Nice, how can I help?"},
         {"role": "user", "content": "Can I return it?"}]
    n = fake.chat_calls()
    p.chat("", messages=a)
    st, hs, _ = p.chat("", messages=a)
    check(xsc(hs).startswith("hit") and fake.chat_calls() == n + 1,
          f"identical earlier turns: served from the cache ({xsc(hs)})")
    st, hs, _ = p.chat("", messages=b)
    check(xsc(hs).startswith("miss") and fake.chat_calls() == n + 2,
          f"other earlier turns: not served ({xsc(hs)})")
    st, hs, _ = p.chat("Can I return it?")
    check(xsc(hs).startswith("miss") and fake.chat_calls() == n + 3,
          f"the last turn alone is not the conversation's ({xsc(hs)})")


def test_admission(p, fake):
    for mode, status, why in (("error", 500, "status"),
                              ("rate", 429, "status"),
                              ("truncated", 200, "truncated"),
                              ("tool", 200, "tool_calls"),
                              ("garbage", 200, "not_json")):
        fake.mode = mode
        q = f"Admission question about {mode} answers?"
        n = fake.chat_calls()
        st, hs, j = p.chat(q)
        check(st == status, f"{mode}: the upstream's status {status} is "
              f"relayed (got {st})")
        check(xsc(hs).startswith("miss") and
              xsc(hs).endswith(f"; stored=no; reason={why}"),
              f"{mode}: not stored ({xsc(hs)})")
        st, hs, _ = p.chat(q)
        check(xsc(hs).startswith("miss") and fake.chat_calls() == n + 2,
              f"{mode}: never served from the cache")
        fake.mode = "ok"
        st, hs, j = p.chat(q)
        check(content(j) == f"Answer to: {q}" and fake.chat_calls() == n + 3,
              f"{mode}: a good answer afterwards is fetched and stored")
        st, hs, _ = p.chat(q)
        check(xsc(hs).startswith("hit"), f"{mode}: and then served")
    # Relayed statuses nng 1.5.2 has no right reason phrase for.
    for code, reason in ((502, "Bad Gateway"), (422, "Unprocessable Entity")):
        fake.mode, fake.status = "status", code
        line = status_line(p.port, f"Relayed status {code} question?")
        check(line == f"HTTP/1.1 {code} {reason}",
              f"a relayed {code} reads {reason!r} ({line!r})")
    # A status outside 100-599 is none to relay: a 502 that says so (not
    # "upstream_unreachable: No error"), plain or streamed.
    fake.mode, fake.status = "status", 999
    for stream in (False, True):
        q = f"Status 999 question, streamed {stream}?"
        st, hs, j = p.chat(q, stream=stream)
        err = (j or {}).get("error") or {}
        check(st == 502 and err.get("code") == "upstream_bad_status" and
              "999" in err.get("message", "") and
              xsc(hs).endswith("stored=no; reason=upstream_failed"),
              f"a status 999 (stream {stream}) is 502 upstream_bad_status "
              f"({st}, {err})")
    fake.status = 502
    fake.mode = "ok"
    # The error body is relayed unchanged.
    fake.mode = "error"
    st, hs, j = p.chat("One more question about errors?")
    check(j == {"error": {"message": "fake error", "type": "server_error",
                          "param": None, "code": "error"}},
          "the upstream's error body is relayed unchanged")
    fake.mode = "ok"


def test_empty_body(p, fake):
    """An upstream answer with no body (a 503 from a load balancer, a 204)
    is relayed with its status and an empty body on a connection that
    stays usable, not dropped, and is never stored."""
    for code, stream in ((503, False), (200, False), (204, False),
                         (503, True), (200, True)):
        fake.mode, fake.status = "empty", code
        q = f"Empty body question {code} {stream}?"
        body = json.dumps({"model": MODEL, "stream": stream, "messages": [
            {"role": "user", "content": q}]}).encode()
        c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=30)
        got = []
        try:
            for _ in range(2):  # twice on one connection: it stays usable
                c.request("POST", "/v1/chat/completions", body=body,
                          headers={"Content-Type": "application/json"})
                r = c.getresponse()
                got.append((r.status, r.getheader("x-semcache", ""),
                            r.read()))
        except (OSError, http.client.HTTPException) as e:
            got.append(("error", repr(e), b""))
        c.close()
        why = "status" if code != 200 else (
            "not_a_stream" if stream else "not_json")
        check(len(got) == 2 and all(
            g[0] == code and g[2] == b"" and g[1].startswith("miss") and
            g[1].endswith(f"; stored=no; reason={why}") for g in got),
            f"an empty {code} (stream {stream}) is relayed, twice on one "
            f"connection, not stored ({got})")
    fake.mode, fake.status = "ok", 502


def error_of(out):
    """The "error" object of an OpenAI-style error body, or {}."""
    try:
        return json.loads(out)["error"]
    except (ValueError, KeyError, TypeError):
        return {}


def test_containers(p, fake):
    """A body that opens more JSON objects and arrays than one per 16 bytes
    of it (16384 at least) is refused 413 too_big before its parse (a body
    of "{}," held 300 MB in jansson's tree); a long real conversation, more
    objects than 16384 but each of more bytes, is served. A body of tiny
    values whose parse needs more than 16 times its size plus 4 MiB is
    413 too_big; as many real numbers are served."""
    n = fake.chat_calls()
    body = {"model": MODEL, "x": [{}] * 100000,
            "messages": [{"role": "user", "content": "Containers?"}]}
    st, _, out = p.post(body)
    err = error_of(out)
    check(st == 413 and err.get("code") == "too_big" and
          "JSON objects and arrays" in err.get("message", "") and
          fake.chat_calls() == n,
          f"100000 empty objects: 413 too_big, nothing upstream ({st}, {err})")
    turns = [{"role": "user" if i % 2 == 0 else "assistant",
              "content": f"turn {i} of a long conversation"}
             for i in range(20000)]
    turns.append({"role": "user", "content": "And the last question?"})
    n = fake.chat_calls()
    st, _, out = p.post({"model": MODEL, "messages": turns})
    check(st == 200 and fake.chat_calls() == n + 1,
          f"20001 messages, each its own object: served ({st})")
    # Tiny values: their parse is capped at 16 times the body plus 4 MiB
    # (400000 empty strings, 1.2 MB written compactly, cost jansson some
    # 30 MB, 24 times their text).
    n = fake.chat_calls()
    tiny = {"model": MODEL, "x": [""] * 400000,
            "messages": [{"role": "user", "content": "Tiny?"}]}
    st, _, out = p.post(None, raw=json.dumps(tiny, separators=(",", ":"))
                        .encode())
    err = error_of(out)
    check(st == 413 and err.get("code") == "too_big" and
          "parsing the body needs more than" in err.get("message", "") and
          fake.chat_calls() == n,
          f"400000 empty strings: 413 too_big, nothing upstream ({st}, {err})")
    st, _, out = p.post({"model": MODEL, "x": [0.5] * 200000,
                         "messages": [{"role": "user", "content": "Reals?"}]})
    check(st == 200, f"200000 real numbers: served ({st})")


def test_stream(p, fake):
    fake.mode = "ok"
    q = "What is the refund window for shoes?"
    body = {"model": MODEL, "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": q}]}
    n = fake.chat_calls()
    k = p.inserts()
    st, hs, ev, done = read_stream(p.port, body)
    check(st == 200 and hs.get("content-type") == "text/event-stream",
          "a stream passes through as server-sent events")
    check(done and stream_text(ev) == f"Answer to: {q}" and
          xsc(hs).startswith("miss"), f"the whole stream arrives ({xsc(hs)})")
    check(ev[0]["id"] == "chatcmpl-fake-stream", "stream events unchanged")
    check(fake.chat_calls() == n + 1, "the stream went upstream")
    check(p.wait_inserts(k + 1), "a completed stream is stored")
    # The assembled answer serves a plain request...
    st, hs, j = p.chat(q)
    check(xsc(hs).startswith("hit") and content(j) == f"Answer to: {q}" and
          j["usage"]["completion_tokens"] == 7,
          f"a completed stream was assembled and stored ({xsc(hs)})")
    # ...and a streaming one, as a stream.
    st, hs, ev, done = read_stream(p.port, body)
    check(st == 200 and done and stream_text(ev) == f"Answer to: {q}" and
          xsc(hs).startswith("hit"),
          f"a stored answer is served as a stream ({xsc(hs)})")
    check(ev[-1].get("usage", {}).get("prompt_tokens") == 11 and
          ev[-2]["choices"][0]["finish_reason"] == "stop",
          "the served stream ends with finish_reason and usage")
    check(fake.chat_calls() == n + 1, "streams reached upstream once")
    # A plain answer served to a streaming client.
    p.chat("Do you ship to Norway?")
    m = fake.chat_calls()
    st, hs, ev, done = read_stream(p.port, dict(body, messages=[
        {"role": "user", "content": "Do you ship to Norway?"}]))
    check(done and stream_text(ev) == "Answer to: Do you ship to Norway?" and
          fake.chat_calls() == m, "a plain answer is served as a stream")
    # An interrupted stream is relayed as it came and not stored.
    fake.mode = "cut"
    q2 = "Can I change my delivery address?"
    body2 = dict(body, messages=[{"role": "user", "content": q2}])
    n = fake.chat_calls()
    st, hs, ev, done = read_stream(p.port, body2)
    check(not done and len(ev) == 3, "a cut stream reaches the client cut")
    fake.mode = "ok"
    time.sleep(0.2)
    st, hs, j = p.chat(q2)
    check(xsc(hs).startswith("miss") and fake.chat_calls() == n + 2,
          f"an interrupted stream was not stored ({xsc(hs)})")
    # A truncated stream is not stored either.
    fake.mode = "truncated"
    q3 = "How long is the warranty on laptops?"
    n = fake.chat_calls()
    read_stream(p.port, dict(body, messages=[{"role": "user", "content": q3}]))
    fake.mode = "ok"
    time.sleep(0.2)
    st, hs, j = p.chat(q3)
    check(xsc(hs).startswith("miss") and fake.chat_calls() == n + 2,
          "a stream that ended in finish_reason length was not stored")
    # A stream the stored answer could not hold whole (a refusal, with no
    # content at all; logprobs the request asked for; a second choice, one
    # per chunk, whose pieces would be merged into the first's; events
    # after data: [DONE], which clients do not read, so it would serve more
    # than the client saw; two chunks in one event, which a client joins
    # into data it cannot parse; an "event: error" event) is relayed, not
    # stored.
    for mode, q4 in (("refusal", "Can you write my exam for me?"),
                     ("logprobs", "How sure are you about the sizes?"),
                     ("choices2", "Which two colours does it come in?"),
                     ("afterdone", "Can I collect my order from a store?"),
                     ("joined", "Do you ship parcels to Iceland?"),
                     ("errevent", "Is the blue kettle back in stock?")):
        fake.mode = mode
        n = fake.chat_calls()
        st, hs, ev, done = read_stream(p.port, dict(body, messages=[
            {"role": "user", "content": q4}]))
        check(st == 200 and done, f"a {mode} stream is relayed whole")
        fake.mode = "ok"
        time.sleep(0.2)
        st, hs, j = p.chat(q4)
        check(xsc(hs).startswith("miss") and fake.chat_calls() == n + 2,
              f"a {mode} stream was not stored ({xsc(hs)})")
    # A stream opened with Azure OpenAI's prompt-filter chunk (no choices,
    # id and model "", created 0): the stored answer takes its model from
    # the chunks that have one.
    fake.mode = "azure"
    q5 = "Do you price match other shops?"
    k = p.inserts()
    st, hs, ev, done = read_stream(p.port, dict(body, messages=[
        {"role": "user", "content": q5}]))
    check(st == 200 and done and ev[0].get("prompt_filter_results") and
          stream_text(ev) == f"Answer to: {q5}", "an Azure stream is relayed")
    fake.mode = "ok"
    check(p.wait_inserts(k + 1), "an Azure stream is stored")
    st, hs, j = p.chat(q5)
    check(xsc(hs).startswith("hit") and j["model"] == MODEL,
          f"a stored Azure stream keeps its model ({j.get('model')!r})")
    st, hs, ev, done = read_stream(p.port, dict(body, messages=[
        {"role": "user", "content": q5}]))
    check(done and ev and all(e.get("model") == MODEL for e in ev),
          "and serves it as a stream with its model")
    # An upstream error to a streaming request is relayed, not a stream.
    fake.mode = "error"
    st, hs, ev, done = read_stream(p.port, dict(body, messages=[
        {"role": "user", "content": "Stream error question?"}]))
    check(st == 500 and not done and "stored=no" in xsc(hs),
          f"an error to a stream request is relayed ({st}, {xsc(hs)})")
    fake.mode = "ok"


def test_headers(p, fake):
    fake.mode = "ok"
    q = "What are your opening hours on Sunday?"
    p.chat(q)
    n = fake.chat_calls()
    st, hs, _ = p.chat(q, headers={"x-semcache-skip": "1"})
    check(xsc(hs) == "miss; lookup=skipped; stored=yes" and
          fake.chat_calls() == n + 1, f"x-semcache-skip ({xsc(hs)})")
    q2 = "Is gift wrapping available for orders?"
    st, hs, _ = p.chat(q2, headers={"x-semcache-no-store": "1"})
    check(xsc(hs).startswith("miss") and
          xsc(hs).endswith("; stored=no; reason=no_store"),
          f"x-semcache-no-store ({xsc(hs)})")
    st, hs, _ = p.chat(q2)
    check(xsc(hs).startswith("miss") and xsc(hs).endswith("stored=yes"),
          f"no-store stored nothing ({xsc(hs)})")
    # Threshold: the paraphrase hits at the default, not at 0.999.
    st, hs, _ = p.chat("What are the opening hours on Sunday?",
                       headers={"x-semcache-threshold": "0.999"})
    check(xsc(hs).startswith("miss"), f"x-semcache-threshold 0.999 ({xsc(hs)})")
    # (In a namespace of its own: one candidate, no margin rule.)
    p.chat(q, headers={"x-semcache-namespace": "thr"})
    st, hs, _ = p.chat("When do you open on Sundays?",
                       headers={"x-semcache-threshold": "0.3",
                                "x-semcache-namespace": "thr"})
    check(xsc(hs).startswith("hit; layer=semantic"),
          f"x-semcache-threshold 0.3 ({xsc(hs)})")
    # Namespace: another namespace holds nothing yet.
    n = fake.chat_calls()
    st, hs, _ = p.chat(q, headers={"x-semcache-namespace": "faq-2"})
    check(xsc(hs).startswith("miss") and fake.chat_calls() == n + 1,
          "x-semcache-namespace keeps namespaces apart")
    st, hs, _ = p.chat(q, headers={"x-semcache-namespace": "faq-2"})
    check(xsc(hs).startswith("hit"), "and serves within its namespace")
    # Feature and user tags reach the ledger.
    q3 = "Do you offer student discounts?"
    tags = {"x-semcache-feature": "support-bot", "x-semcache-user": "u42"}
    p.chat(q3, headers=tags)
    p.chat(q3, headers=tags)
    rep = p.client.report(ns="chat", by="feature")
    rows = {r.get("key"): r for r in rep.get("rows", [])}
    check("support-bot" in rows and rows["support-bot"]["requests"] >= 1,
          f"the feature tag is a ledger row ({sorted(rows)})")
    rep = p.client.report(ns="chat", by="user")
    rows = {r.get("key"): r for r in rep.get("rows", [])}
    check("u42" in rows, f"the user tag is a ledger row ({sorted(rows)})")
    # Bad headers and bodies: OpenAI-style 400s.
    for h, v in (("x-semcache-threshold", "2"), ("x-semcache-threshold", "x"),
                 ("x-semcache-skip", "maybe"),
                 ("x-semcache-namespace", "bad name!")):
        st, hs, j = p.chat(q, headers={h: v})
        check(st == 400 and j["error"]["type"] == "invalid_request_error",
              f"{h}: {v} is 400")
    # A yes/no header's refusal lists what it takes (docs/PROXY.md, 4),
    # and each of those is taken.
    for h in ("x-semcache-skip", "x-semcache-no-store"):
        st, hs, j = p.chat(q, headers={h: "maybe"})
        check(st == 400 and j["error"]["message"] ==
              f"{h} must be 1, 0, true, false, yes or no",
              f"{h}: maybe says what it takes ({j})")
        for v in ("1", "0", "true", "FALSE", "yes", "No"):
            st, hs, j = p.chat(q, headers={h: v, "x-semcache-no-store": "1"}
                               if h == "x-semcache-skip" else {h: v})
            check(st == 200, f"{h}: {v} is taken ({st})")
    for raw, what in ((b"{not json", "malformed JSON"),
                      (b"[1,2]", "not an object"),
                      (b'{"model": "m"}', "no messages"),
                      (b'{"messages": [{"role": "user", "content": "x"}]}',
                       "no model"),
                      (b'{"model": "m", "messages": [1]}', "a bad message"),
                      # What the JSON parser refuses (docs/PROXY.md, 6).
                      (b'{"model": "m", "messages": [{"role": "user", '
                       b'"content": "a\\u0000b"}]}', "\\u0000 in a string"),
                      (b'{"model": "m", "messages": [{"role": "user", '
                       b'"content": "\\ud800"}]}', "a lone surrogate"),
                      (b'{"model": "m", "seed": 9223372036854775808, '
                       b'"messages": [{"role": "user", "content": "x"}]}',
                       "an integer over 2^63 - 1"),
                      (b'{"model": "m", "temperature": 1e400, '
                       b'"messages": [{"role": "user", "content": "x"}]}',
                       "a real that overflows")):
        n = fake.chat_calls()
        st, hs, out = p.post(None, raw=raw)
        j = json.loads(out)
        check(st == 400 and j["error"]["type"] == "invalid_request_error" and
              fake.chat_calls() == n, f"{what}: 400, nothing upstream")
    # Over the cap: refused from the headers, before any of it is read.
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 5242880\r\n\r\n{")
        head = s.recv(4096).decode(errors="replace")
    check(head.startswith("HTTP/1.1 413") and "too_big" in head,
          f"a body over the cap is 413 ({head[:40]!r})")
    # Expect: 100-continue (curl, for bodies over 1 MiB): the interim
    # answer comes at once, the body after it, then the final answer.
    body = json.dumps({"model": MODEL, "messages": [
        {"role": "user", "content": q}]}).encode()
    with socket.create_connection(("127.0.0.1", p.port), timeout=2) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  b"Expect: 100-continue\r\nContent-Type: application/json"
                  b"\r\nContent-Length: " + str(len(body)).encode() +
                  b"\r\n\r\n")
        try:
            interim = s.recv(25).decode(errors="replace")
        except socket.timeout:
            interim = "(nothing in 2 s)"
        s.sendall(body)
        s.settimeout(10)
        final = s.recv(4096).decode(errors="replace")
    check(interim == "HTTP/1.1 100 Continue\r\n\r\n" and
          final.startswith("HTTP/1.1 200"),
          f"Expect: 100-continue answered ({interim!r}, {final[:20]!r})")


# The scope of a lone user question with no other field but model and
# messages (docs/PROXY.md, 1: XXH3 of "{}\n", of nothing, and H 0);
# tests/test_proxy_scope.c checks that sc_proxy_derive makes it.
LONE_SCOPE = f"oai1|{MODEL}|pdaa13e4f205dc5ba|s2d06800538d394c2|h{0:016x}"


def test_junk_entry(p, fake):
    """An entry of the proxy's scope and text whose bytes are no
    chat.completion (another client's insert) is not served: the request
    goes upstream, and the ledger takes back the hit its lookup counted,
    as a false hit's; the entry is quarantined, not hit again."""
    fake.mode = "ok"
    ns = "junk"
    q, q2 = "Which carriers do you ship with?", "Do you ship to Norway?"
    for t in (q, q2):
        p.client.insert(ns, b"not a chat.completion", text=t,
                        scope=LONE_SCOPE, model=MODEL, input_tokens=1000,
                        output_tokens=1000)
    h = {"x-semcache-namespace": ns, "x-semcache-no-store": "1",
         "x-semcache-feature": "junk-bot"}
    n = fake.chat_calls()
    st, hs, j = p.chat(q, headers=h)
    check(st == 200 and content(j) == f"Answer to: {q}" and
          xsc(hs).startswith("miss") and fake.chat_calls() == n + 1,
          f"junk bytes are not served: the request goes upstream ({xsc(hs)})")
    st, hs, j = p.chat(q, headers=h)
    check(st == 200 and xsc(hs).startswith("miss") and
          fake.chat_calls() == n + 2,
          f"a second ask goes upstream too ({xsc(hs)})")
    body = {"model": MODEL, "stream": True,
            "messages": [{"role": "user", "content": q2}]}
    st, hs, ev, done = read_stream(p.port, body, h)
    check(st == 200 and done and stream_text(ev) == f"Answer to: {q2}" and
          fake.chat_calls() == n + 3,
          f"nor served to a stream ({xsc(hs)})")
    tot = p.client.report(ns=ns).get("total", {})
    hits = tot.get("exact_hits", 0) + tot.get("semantic_hits", 0)
    avoided, taken = tot.get("usd_avoided", 0), tot.get("usd_false_hits", 0)
    check(hits == 2 and tot.get("false_hits") == 2 and avoided > 0 and
          abs(avoided - taken) < 1e-12,
          f"the ledger takes back what junk hits claimed (hits {hits}, "
          f"false {tot.get('false_hits')}, ${avoided} - ${taken})")
    rows = {r.get("key"): r for r in
            p.client.report(ns=ns, by="feature").get("rows", [])}
    check(rows.get("junk-bot", {}).get("false_hits") == 2,
          "under the lookup's tags")
    st = p.client.stats(ns)
    check(st.get("quarantined") == 2, f"both quarantined ({st})")


def test_refused_store(p, fake):
    """An answer the cache refuses in a namespace its store would have
    made leaves no namespace behind (one of --max-namespaces), as a
    refused wire insert does not."""
    fake.mode = "ok"
    # Text just under the 1 MiB text cap: the answer echoes it, and is
    # over the namespace's 1 MiB response cap.
    q = "Why? " * ((1 << 20) // 5 - 10)
    st, hs, j = p.chat(q, headers={"x-semcache-namespace": "refused"})
    check(st == 200 and content(j) == f"Answer to: {q}" and
          xsc(hs).endswith("stored=no; reason=too_big"),
          f"an answer over the response cap is not stored ({xsc(hs)[:60]})")
    names = p.client.ns_list()
    check("refused" not in names,
          f"and leaves no namespace behind ({names})")


def test_timeout(server, table, fake):
    """A slow upstream is cut at --upstream-timeout: the fake holds the
    call until the proxy closes it (HOLD, a guard only, else), so the 502
    can only come from the proxy giving up, whatever the machine's speed."""
    p = Proxy(server, table, fake.url, "--upstream-timeout", "500")
    fake.mode, fake.delay = "slow", HOLD
    q = "Why is my parcel so slow?"
    cuts = fake.cut_calls()
    st, hs, j = p.chat(q)
    err = j.get("error") or {} if isinstance(j, dict) else {}
    check(st == 502 and err.get("code") == "upstream_timeout" and
          "within 500 ms" in err.get("message", ""),
          f"a slow upstream is 502 upstream_timeout ({st}, {err})")
    check(cut_seen(fake, cuts + 1),
          "the proxy closed the slow call before the upstream answered")
    fake.mode, fake.delay = "ok", 3.0
    n = fake.chat_calls()
    st, hs, j = p.chat(q)
    check(xsc(hs).endswith("stored=yes") and fake.chat_calls() == n + 1,
          "a timed-out answer was not stored")
    p.stop()
    # Nothing listening upstream: 502 with a clear error.
    p = Proxy(server, table, f"http://127.0.0.1:{free_port()}/v1")
    st, hs, j = p.chat("Anyone there?")
    check(st == 502 and j["error"]["code"] == "upstream_unreachable" and
          "failed" in j["error"]["message"], "an unreachable upstream is 502")
    line = status_line(p.port, "Anyone there at all?")
    check(line == "HTTP/1.1 502 Bad Gateway",
          f"the proxy's 502 reads 'Bad Gateway' ({line!r})")
    p.stop()


def scrape(p):
    """The proxy's lines of /metrics: {'name{labels}': value}."""
    out = {}
    for line in p.get("/metrics").splitlines():
        if line.startswith("semcache_proxy_"):
            k, v = line.rsplit(" ", 1)
            out[k] = int(float(v))
    return out


FAIL_CODES = ("upstream_timeout", "upstream_unreachable", "upstream_too_big",
              "upstream_bad_status", "shutting_down")
OWN_STATUSES = ("400", "411", "413", "500", "503")


def raw_status(port, head):
    """The status of the answer to the raw request head (no body sent)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(head)
        got = b""
        while b"\r\n" not in got:
            d = s.recv(4096)
            if not d:
                break
            got += d
        return int(got.split(b" ", 2)[1]) if got else None
    finally:
        s.close()


def stream_conn(port, text):
    """A socket with a streamed chat request sent, its receive buffer
    small: what it does not read holds the proxy's writes."""
    body = json.dumps({"model": MODEL, "stream": True, "messages": [
        {"role": "user", "content": text}]}).encode()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
              b"Content-Type: application/json\r\nContent-Length: " +
              str(len(body)).encode() + b"\r\n\r\n" + body)
    return s


def deltas(before, after):
    """The series that changed, and by how much (0s left out)."""
    return {k: after[k] - before.get(k, 0) for k in after
            if after[k] != before.get(k, 0)}


def test_metrics(server, table, fake):
    """The proxy's counters and queues in GET /metrics (docs/HTTP.md), by
    exact deltas over a miss, a hit, and each upstream failure the fake
    upstream makes: a timeout (plain, and a stream cut at
    --upstream-max-duration), an answer over --recv-max, a status outside
    100-599, and a closed port."""
    p = Proxy(server, table, fake.url, "--upstream-timeout", "500",
              "--upstream-max-duration", "1500", "--recv-max", "262144",
              "--proxy-client-timeout", "1000")
    fake.mode = "ok"

    def settled():
        # The gauges back at 0: a request answered just before (the
        # route's probe of a Proxy just started) may still hold a worker,
        # whose release would count as a -1 of the step's. 5 s: a guard.
        end = time.time() + 5
        while True:
            m = scrape(p)
            if (all(v == 0 for k, v in m.items()
                    if k.startswith(("semcache_proxy_busy",
                                     "semcache_proxy_queued"))) or
                    time.time() > end):
                return m
            time.sleep(0.02)

    m = settled()
    want = ["semcache_proxy_" + n + "_total" for n in (
        "requests", "hits", "upstream_calls", "stored", "embedding_calls",
        "streams_cut")]
    want += [f'semcache_proxy_upstream_failures_total{{code="{c}"}}'
             for c in FAIL_CODES]
    want += [f'semcache_proxy_error_answers_total{{status="{c}"}}'
             for c in OWN_STATUSES]
    want += [f'semcache_proxy_streams_dropped_total{{reason="{r}"}}'
             for r in ("client_gone", "client_timeout")]
    want += [f'semcache_proxy_{g}{{stage="{s}"}}' for g in ("queued", "busy")
             for s in ("lookup", "upstream")]
    # One request: Proxy's probe for the route (a 400 to "{}").
    check(sorted(m) == sorted(want) and
          m["semcache_proxy_requests_total"] == 1 and
          m['semcache_proxy_error_answers_total{status="400"}'] == 1 and
          sum(m.values()) == 2,
          f"/metrics has the proxy's series, 0 at start but the probe ({m})")

    def step(what, expect, act):
        before = settled()
        act()
        # A worker may count its job done just after its answer is out.
        end = time.time() + 5
        while True:
            d = deltas(before, scrape(p))
            if d == expect or time.time() > end:
                break
            time.sleep(0.02)
        check(d == expect, f"metrics: {what} ({d})")

    R, H, U, S = ("semcache_proxy_requests_total", "semcache_proxy_hits_total",
                  "semcache_proxy_upstream_calls_total",
                  "semcache_proxy_stored_total")

    def F(code):
        return f'semcache_proxy_upstream_failures_total{{code="{code}"}}'
    q = "How are the proxy's metrics counted?"
    step("a miss is a request, an upstream call and a store",
         {R: 1, U: 1, S: 1}, lambda: p.chat(q))
    step("a hit is a request and a hit", {R: 1, H: 1}, lambda: p.chat(q))

    def slow():
        # Held until the proxy closes it (HOLD, a guard only, else).
        fake.mode, fake.delay = "slow", HOLD
        cuts = fake.cut_calls()
        st, hs, j = p.chat("Is a slow answer counted?")
        fake.mode, fake.delay = "ok", 3.0
        check(st == 502 and j["error"]["code"] == "upstream_timeout",
              f"metrics: the slow call is 502 upstream_timeout ({st})")
        check(cut_seen(fake, cuts + 1), "metrics: the slow call was cut")
    step("a timeout", {R: 1, U: 1, F("upstream_timeout"): 1}, slow)

    def big():
        fake.mode = "big"
        st, hs, j = p.chat("Is a big answer counted?")
        fake.mode = "ok"
        check(st == 502 and j["error"]["code"] == "upstream_too_big",
              f"metrics: the big answer is 502 upstream_too_big ({st})")
    step("an answer over the cap", {R: 1, U: 1, F("upstream_too_big"): 1},
         big)

    def bad_status():
        fake.mode, fake.status = "status", 999
        st, hs, j = p.chat("Is a bad status counted?")
        fake.mode, fake.status = "ok", 502
        check(st == 502 and j["error"]["code"] == "upstream_bad_status",
              f"metrics: status 999 is 502 upstream_bad_status ({st})")
    step("a status outside 100-599",
         {R: 1, U: 1, F("upstream_bad_status"): 1}, bad_status)

    def cut():
        fake.mode, fake.delay, fake.pings = "trickle", 0.3, None
        st, hs, ev, done = read_stream(p.port, {
            "model": MODEL, "stream": True, "messages": [
                {"role": "user", "content": "Is a cut stream counted?"}]})
        fake.mode, fake.pings = "ok", None
        check(st == 200 and done is False,
              f"metrics: the trickling stream is cut ({st}, {done})")
    step("a stream cut at --upstream-max-duration",
         {R: 1, U: 1, F("upstream_timeout"): 1,
          "semcache_proxy_streams_cut_total": 1}, cut)

    # The queues: a call in flight holds one upstream worker.
    fake.mode, fake.delay = "slow", 0.4
    t = threading.Thread(target=p.chat, args=("Who holds a worker?",),
                         daemon=True)
    before = scrape(p)
    t.start()
    seen = {}
    end = time.time() + 5
    while time.time() < end:
        seen = scrape(p)
        if seen.get('semcache_proxy_busy{stage="upstream"}') == 1:
            break
        time.sleep(0.01)
    t.join(10)
    fake.mode = "ok"
    check(seen.get('semcache_proxy_busy{stage="upstream"}') == 1 and
          before.get('semcache_proxy_busy{stage="upstream"}') == 0,
          "metrics: a call in flight is one busy upstream worker")
    end = time.time() + 5
    while time.time() < end:
        seen = scrape(p)
        if not any(seen[k] for k in seen if "_total" not in k) and seen:
            break
        time.sleep(0.02)
    check(not any(seen[k] for k in seen if "_total" not in k),
          "metrics: and none once it is answered")

    # The proxy's own error answers, by status.
    def E(status):
        return f'semcache_proxy_error_answers_total{{status="{status}"}}'
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
    step("a body that is not JSON is a 400", {R: 1, E(400): 1},
         lambda: check(p.post(None, raw=b"{not json")[0] == 400,
                       "metrics: a body that is not JSON is answered 400"))
    step("a chunked body is a 411", {R: 1, E(411): 1},
         lambda: check(raw_status(p.port, head + b"Transfer-Encoding: "
                                  b"chunked\r\n\r\n0\r\n\r\n") == 411,
                       "metrics: a chunked body is answered 411"))
    step("a body over --recv-max is a 413", {R: 1, E(413): 1},
         lambda: check(raw_status(p.port, head + b"Content-Length: "
                                  b"300000\r\n\r\n") == 413,
                       "metrics: a body over the cap is answered 413"))

    # Streams the client's side cuts: it leaves, or stops reading past
    # --proxy-client-timeout (1 s). Neither is an upstream failure. A
    # proxy of its own, whose upstream limits are far past the client's:
    # with the 500 ms and 1.5 s above, a loaded machine (a Python fake
    # late with its next chunk, buffers slow to fill) let the upstream's
    # limit fire first (upstream_timeout instead of client_timeout, once
    # in a ctest run at a load of 20).
    p.stop()
    p = Proxy(server, table, fake.url, "--upstream-timeout", "10000",
              "--upstream-max-duration", "30000", "--recv-max", "262144",
              "--proxy-client-timeout", "1000")

    def D(reason):
        return f'semcache_proxy_streams_dropped_total{{reason="{reason}"}}'

    def gone():
        fake.mode = "big"
        s = stream_conn(p.port, "Does a client that leaves count?")
        check(s.recv(4096).startswith(b"HTTP/1.1 200"),
              "metrics: the big stream starts")
        s.close()
        time.sleep(0.5)
        fake.mode = "ok"
    step("a stream whose client leaves", {R: 1, U: 1, D("client_gone"): 1},
         gone)

    def stalled():
        fake.mode = "big"
        before = scrape(p).get(D("client_timeout"), 0)
        s = stream_conn(p.port, "Does a client that stops reading count?")
        # Nothing read: a write waits past 1 s. Closed once counted (a
        # guard of 30 s), not after a set time a loaded machine may need.
        end = time.monotonic() + 30
        while (scrape(p).get(D("client_timeout"), 0) == before and
               time.monotonic() < end):
            time.sleep(0.05)
        s.close()
        fake.mode = "ok"
    step("a stream whose client stops reading",
         {R: 1, U: 1, D("client_timeout"): 1}, stalled)

    p.stop()
    p = Proxy(server, table, f"http://127.0.0.1:{free_port()}/v1")
    step("an unreachable upstream",
         {R: 1, U: 1, F("upstream_unreachable"): 1},
         lambda: p.chat("Is a closed port counted?"))
    p.stop()


def test_trickle(server, table, fake):
    """An upstream that trickles a stream (an SSE comment every 0.3 s, for
    ever) holds its worker only --upstream-max-duration: with both workers
    held by such streams, a plain miss behind them is still answered; the
    streams are ended as a cut stream is (no [DONE]) and are not stored.
    Comments are no silence: a stream that pings for longer than
    --upstream-timeout before its answer is relayed whole and stored."""
    p = Proxy(server, table, fake.url, "--proxy-workers", "2",
              "--upstream-timeout", "1000", "--upstream-max-duration", "3000")
    fake.mode, fake.delay, fake.pings = "trickle", 0.3, None
    n0, cuts = fake.chat_calls(), fake.cut_calls()
    got = {}

    def ask(i):
        t0 = time.time()
        try:
            st, hs, ev, done = read_stream(p.port, {
                "model": MODEL, "stream": True, "messages": [
                    {"role": "user", "content": f"Trickle {i}?"}]})
            got[i] = (st, done, time.time() - t0)
        except OSError as e:
            got[i] = (str(e), None, time.time() - t0)

    ts = [threading.Thread(target=ask, args=(i,), daemon=True)
          for i in range(2)]
    for t in ts:
        t.start()
    end = time.time() + 10
    while fake.chat_calls() < n0 + 2 and time.time() < end:
        time.sleep(0.02)
    fake.mode = "ok"
    # The streams ping for ever: only their cut frees a worker for the
    # miss (timed_chat's 30 s wait for an answer is a hang guard only).
    st, j, dt = timed_chat(p, "Is anyone served behind trickles?")
    check(st == 200 and
          content(j) == "Answer to: Is anyone served behind trickles?",
          f"a miss behind two trickling streams is served ({st}, {dt:.1f} s)")
    if st != 200:
        p.stop()  # its workers are still held: the rest cannot run
        return
    for t in ts:
        t.join(10)
    # 2.5 s, a lower bound (a slow machine only adds to it): they were not
    # cut at --upstream-timeout's 1 s.
    for i in range(2):
        st, done, dt = got.get(i, (None, None, 0.0))
        check(st == 200 and done is False and 2.5 < dt,
              f"a trickling stream is ended at --upstream-max-duration "
              f"without [DONE] ({st}, {done}, {dt:.1f} s)")
    check(cut_seen(fake, cuts + 2),
          f"the proxy closed both trickling streams upstream "
          f"({fake.cut_calls() - cuts} cut)")
    n = fake.chat_calls()
    st, hs, ev, done = read_stream(p.port, {
        "model": MODEL, "stream": True, "messages": [
            {"role": "user", "content": "Trickle 0?"}]})
    check(done and fake.chat_calls() == n + 1 and
          xsc(hs).startswith("miss"),
          f"a stream ended at --upstream-max-duration was not stored "
          f"({xsc(hs)})")
    # Pings for 1.8 s, over --upstream-timeout's 1 s, then the answer.
    fake.mode, fake.pings = "trickle", 6
    q = "Is a pinging stream kept?"
    st, hs, ev, done = read_stream(p.port, {
        "model": MODEL, "stream": True, "messages": [
            {"role": "user", "content": q}]})
    check(st == 200 and done and stream_text(ev) == f"Answer to: {q}",
          "SSE comments keep a stream past --upstream-timeout")
    fake.mode, fake.pings = "ok", None
    n = fake.chat_calls()
    p.wait_inserts(1)
    st, hs, j = p.chat(q, stream=False)
    check(st == 200 and xsc(hs).startswith("hit") and fake.chat_calls() == n,
          f"and it is stored ({xsc(hs)})")
    # A plain call is bounded by the smaller of the two: its body trickles
    # for HOLD s (a guard only), within --upstream-timeout but far past
    # --upstream-max-duration, so only the latter can cut it.
    p.stop()
    p = Proxy(server, table, fake.url, "--upstream-timeout", "600000",
              "--upstream-max-duration", "1000")
    fake.mode, fake.delay, fake.hold = "trickle", 0.2, HOLD
    cuts = fake.cut_calls()
    st, hs, j = p.chat("Is a trickling plain answer cut?")
    err = j.get("error") or {} if isinstance(j, dict) else {}
    check(st == 502 and err.get("code") == "upstream_timeout" and
          "within 1000 ms" in err.get("message", ""),
          f"a trickling plain answer is 502 upstream_timeout at "
          f"--upstream-max-duration ({st}, {err})")
    check(cut_seen(fake, cuts + 1),
          "the proxy closed the trickling answer before its end")
    fake.mode, fake.hold = "ok", 3.0
    p.stop()


def test_slow_reader(server, table, fake):
    """A streaming client that reads a little before each write would time
    out keeps its worker only --proxy-client-timeout in all: with one
    worker, a plain miss behind it is still answered."""
    p = Proxy(server, table, fake.url, "--proxy-workers", "1",
              "--proxy-client-timeout", "3000")
    fake.mode = "big"
    body = json.dumps({"model": MODEL, "stream": True, "messages": [
        {"role": "user", "content": "Tell me everything."}]}).encode()
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 << 10)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
              b"Content-Type: application/json\r\nContent-Length: " +
              str(len(body)).encode() + b"\r\n\r\n" + body)
    stop, unpaced = threading.Event(), threading.Event()
    got, eof = [0], [False]
    cuts = fake.cut_calls()

    def trickle():
        # 1 MB/s: a blocked write of the proxy finds room again (a third
        # of its socket's send buffer, at most 4 MB here) well within the
        # time-out, so only a budget over the whole stream lets the worker
        # go before the stream's end, 48 s away.
        t0 = time.time()
        try:
            while not stop.is_set():
                if (not unpaced.is_set() and
                        got[0] > (time.time() - t0) * 1e6):
                    time.sleep(0.01)
                    continue
                d = s.recv(65536)
                if not d:
                    eof[0] = True
                    break
                got[0] += len(d)
        except OSError:
            eof[0] = True

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    time.sleep(1.0)
    fake.mode = "ok"
    # Only the stream's cut frees the one worker before the stream's end,
    # 48 s away (timed_chat's 30 s wait for an answer is a hang guard).
    st, j, dt = timed_chat(p, "Is anyone else served?")
    check(st == 200 and content(j) == "Answer to: Is anyone else served?",
          f"a miss behind a slow stream reader is served "
          f"({st}, {dt:.1f} s, {got[0]} bytes read by the slow reader)")
    unpaced.set()  # what the proxy had sent, read at once, then the end
    t.join(30)  # a hang guard
    check(eof[0] and got[0] < 48e6,
          f"the slow reader's stream was cut ({got[0]} bytes, "
          f"{'ended' if eof[0] else 'still open'})")
    check(cut_seen(fake, cuts + 1), "and its upstream call with it")
    stop.set()
    s.close()
    t.join(5)
    p.stop()


def test_stop_stream(server, table, fake):
    """SIGTERM while a stream's client has stopped reading: the stream is
    cut, and semcached does not wait out the client's budget (120 s)."""
    p = Proxy(server, table, fake.url, "--proxy-client-timeout", "120000")
    fake.mode = "big"
    body = json.dumps({"model": MODEL, "stream": True, "messages": [
        {"role": "user", "content": "Tell me everything, slowly."}]}).encode()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", p.port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
              b"Content-Type: application/json\r\nContent-Length: " +
              str(len(body)).encode() + b"\r\n\r\n" + body)
    time.sleep(1.5)  # the stream runs, its writes blocked: nothing is read
    # stop() checks that semcached exits 0 within 30 s, a hang guard a
    # quarter of the client's budget; the stop line says it cut the stream.
    err = p.stop()
    check("the stop cut 1 proxy stream;" in err,
          "SIGTERM with a stalled stream client cuts the stream: "
          + next((ln for ln in err.splitlines() if "the stop cut" in ln),
                 "no stop line"))
    s.close()
    fake.mode = "ok"


def test_policy_single(server, table, fake):
    p = Proxy(server, table, fake.url, "--proxy-history", "single")
    msgs = [{"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Can I return it?"}]
    n = fake.chat_calls()
    p.chat("", messages=msgs)
    st, hs, _ = p.chat("", messages=msgs)
    check(xsc(hs) == "bypass; reason=multi_turn" and fake.chat_calls() == n + 2,
          f"--proxy-history single: multi-turn passes through ({xsc(hs)})")
    p.chat("Can I return it?")
    st, hs, _ = p.chat("Can I return it?")
    check(xsc(hs).startswith("hit"), "--proxy-history single: single turns hit")
    p.stop()


def test_config_file(server, table, fake, tmp):
    """The "proxy" object of --config turns the proxy on, as the flags do;
    a flag overrides it."""
    conf = os.path.join(tmp, "proxy.json")
    with open(conf, "w") as f:
        json.dump({"proxy": {"upstream": fake.url, "history": "single",
                             "workers": 2}}, f)
    msgs = [{"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Where is my parcel?"}]
    p = Proxy(server, table, None, "--config", conf)
    st, hs, _ = p.chat("", messages=msgs)
    check(st == 200 and xsc(hs) == "bypass; reason=multi_turn",
          f"config proxy.upstream and proxy.history single ({xsc(hs)})")
    p.stop()
    p = Proxy(server, table, None, "--config", conf, "--proxy-history",
              "exact")
    p.chat("", messages=msgs)
    st, hs, _ = p.chat("", messages=msgs)
    check(xsc(hs).startswith("hit"),
          f"--proxy-history overrides the file's ({xsc(hs)})")
    p.stop()


def test_keys(server, table, fake, tmp):
    rw = "proxy-writer-key-0123456789"
    ro = "proxy-reader-key-0123456789"
    adm = "proxy-admin-key-0123456789"
    conf = os.path.join(tmp, "keys.json")
    with open(conf, "w") as f:
        json.dump({"keys": [{"key": rw, "name": "writer", "write": ["chat"]},
                            {"key": ro, "name": "reader", "read": ["chat"]},
                            {"key": adm, "name": "ops", "admin": True}]},
                  f)

    def forbidden():
        c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=30)
        c.request("GET", "/metrics", headers={"Authorization": f"Bearer {adm}"})
        out = c.getresponse().read().decode()
        c.close()
        for line in out.splitlines():
            if line.startswith('semcache_requests_refused_total'
                               '{reason="forbidden"} '):
                return int(line.rsplit(" ", 1)[1])
        return None

    p = Proxy(server, table, fake.url, "--config", conf)
    n = fake.chat_calls()
    st, hs, j = p.chat("Keyed question one?")
    check(st == 401 and j["error"]["code"] == "unauthorized" and
          fake.chat_calls() == n, "no key: 401, nothing upstream")
    st, hs, j = p.chat("Keyed question one?",
                       headers={"x-semcache-key": "wrong-key-0123456789"})
    check(st == 401, "an unknown key: 401")
    st, hs, j = p.chat("Keyed question one?",
                       headers={"x-semcache-key": ro,
                                "x-semcache-namespace": "other"})
    check(st == 403 and j["error"]["code"] == "forbidden",
          "a key without the namespace: 403")
    st, hs, j = p.chat("Keyed question one?", headers={"x-semcache-key": ro})
    check(st == 200 and xsc(hs).endswith("stored=no; reason=forbidden"),
          f"a read-only key: answered, not stored ({xsc(hs)})")
    st, hs, j = p.chat("Keyed question one?",
                       headers={"x-semcache-key": rw,
                                "Authorization": "Bearer sk-up"})
    check(xsc(hs).endswith("stored=yes"), "a write key stores")
    _, uh, _ = fake.last()
    check("x-semcache-key" not in {k.lower() for k in uh} and
          uh.get("Authorization") == "Bearer sk-up",
          "the semcache key stays here; the upstream key goes on")
    st, hs, j = p.chat("Keyed question one?", headers={"x-semcache-key": ro})
    check(xsc(hs).startswith("hit"), "a read key reads")
    # A read-only key's requests are served, not refused: its hits, and a
    # miss it may not store, count no "forbidden" refusal (the one above,
    # the 403, is the only one).
    f0 = forbidden()
    for _ in range(3):
        st, hs, j = p.chat("Keyed question one?",
                           headers={"x-semcache-key": ro})
        check(xsc(hs).startswith("hit"), f"a read key hits ({xsc(hs)})")
    st, hs, j = p.chat("Which countries do you deliver parcels to?",
                       headers={"x-semcache-key": ro})
    check(xsc(hs).endswith("stored=no; reason=forbidden"),
          f"a read key's miss is not stored ({xsc(hs)})")
    f1 = forbidden()
    check(f0 == 1 and f1 == 1, f"a read key's hits and misses are no "
          f"forbidden refusals (metrics: {f0}, then {f1})")
    err = p.stop()
    check(rw not in err and ro not in err and "sk-up" not in err and
          adm not in err, "no key appears in the log")
    check("2 unauthorized, 1 forbidden)" in err,
          f"the shutdown log counts the refusals alone "
          f"({err.strip().splitlines()[-1] if err.strip() else ''})")


def test_upstream_embed(server, table, fake):
    p = Proxy(server, table, fake.url, "--proxy-embed-model",
              "text-embedding-3-small")
    q = "How do I reset my password?"
    c0, e0 = fake.chat_calls(), fake.embed_calls()
    st, hs, _ = p.chat(q)
    st, hs2, _ = p.chat("how do I RESET my password?")
    st, hs3, _ = p.chat("How do I reset my password please?")
    check(fake.chat_calls() == c0 + 1, "upstream embeddings: one chat call")
    check(fake.embed_calls() == e0 + 3, "one embedding call per lookup")
    check(xsc(hs2).startswith("hit; layer=exact") and
          xsc(hs3).startswith("hit; layer=semantic"),
          f"exact and semantic hits ({xsc(hs2)}, {xsc(hs3)})")
    rep = p.client.report(ns="chat")
    tot = rep.get("total", {})
    # 3 lookups of 5 tokens (the proxy makes its namespace at start-up,
    # so the first lookup is counted too), at $0.02 per million.
    check(tot.get("embed_tokens") == 15 and
          abs(tot.get("usd_embed", 0) - 15 * 0.02e-6) < 1e-12,
          f"the embedding spend is in the ledger ({tot.get('embed_tokens')}, "
          f"{tot.get('usd_embed')})")
    # x-semcache-skip skips the lookup, not the store: the answer is
    # embedded all the same, stored, and then served.
    q2 = "Can I pay for my order with a gift card?"
    c0, e0 = fake.chat_calls(), fake.embed_calls()
    st, hs, _ = p.chat(q2, headers={"x-semcache-skip": "1"})
    check(st == 200 and xsc(hs) == "miss; lookup=skipped; stored=yes" and
          fake.embed_calls() == e0 + 1,
          f"upstream embeddings: a skipped lookup is still stored ({xsc(hs)})")
    st, hs, _ = p.chat(q2)
    check(xsc(hs).startswith("hit; layer=exact") and
          fake.chat_calls() == c0 + 1,
          f"upstream embeddings: and then served ({xsc(hs)})")
    # An embedding's usage past what the ledger takes (over 2^32 - 1
    # tokens) is no count: estimated, and the lookup still made, so the
    # same question again is a hit (it was a silent miss every time).
    fake.embed_tokens = 5_000_000_000
    q3 = "Which bank cards do you take?"
    c0 = fake.chat_calls()
    st, hs, _ = p.chat(q3)
    check(st == 200 and xsc(hs).startswith("miss") and
          xsc(hs).endswith("; stored=yes"),
          f"upstream embeddings: a bogus usage is stored ({xsc(hs)})")
    st, hs, _ = p.chat(q3)
    check(xsc(hs).startswith("hit; layer=exact") and
          fake.chat_calls() == c0 + 1,
          f"upstream embeddings: a bogus usage is still looked up ({xsc(hs)})")
    fake.embed_tokens = 5
    # Skipped and not to be stored: no embedding call at all.
    e0 = fake.embed_calls()
    st, hs, _ = p.chat(q2, headers={"x-semcache-skip": "1",
                                    "x-semcache-no-store": "1"})
    check(xsc(hs) == "miss; lookup=skipped; stored=no; reason=no_store" and
          fake.embed_calls() == e0,
          f"upstream embeddings: skip and no-store embed nothing ({xsc(hs)})")
    p.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--table", required=True)
    a = ap.parse_args()
    if not os.path.exists(a.table):
        print(f"test_proxy: no embedder table at {a.table} (make it with "
              f"scripts/fetch-embeddings.sh {a.table})", file=sys.stderr)
        return 1
    usage = subprocess.run([a.server, "--help"], capture_output=True,
                           text=True).stdout
    if "--persist" in usage:
        PERSIST.extend(["--persist", "off"])
    fake = FakeUpstream(free_port())
    tmp = tempfile.mkdtemp(prefix="semcache-proxy-")
    p = Proxy(a.server, a.table, fake.url)
    try:
        for t in (test_basics, test_scope, test_multi_turn, test_admission,
                  test_empty_body, test_containers, test_stream, test_headers,
                  test_junk_entry, test_refused_store):
            t(p, fake)
    finally:
        err = p.stop()
    check("sk-upstream-1" not in err, "the upstream key is never logged")
    test_timeout(a.server, a.table, fake)
    test_slow_reader(a.server, a.table, fake)
    test_trickle(a.server, a.table, fake)
    test_metrics(a.server, a.table, fake)
    test_stop_stream(a.server, a.table, fake)
    test_policy_single(a.server, a.table, fake)
    try:
        test_keys(a.server, a.table, fake, tmp)
        test_config_file(a.server, a.table, fake, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # it holds a test key file
    test_upstream_embed(a.server, a.table, fake)
    fake.stop()
    p_, f_ = test_semcache.passed, test_semcache.failed
    print(f"test_proxy: {p_} passed, {f_} failed")
    return 1 if f_ else 0


if __name__ == "__main__":
    sys.exit(main())
