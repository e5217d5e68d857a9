#!/usr/bin/python3
"""fake_upstream.py - a fake OpenAI-style API on 127.0.0.1 for the proxy's
tests (tests/test_proxy.py): POST /v1/chat/completions and /v1/embeddings,
standard library only. It records every call (path, headers, body) and
answers by its current mode:

  ok         200, a chat.completion: "Answer to: <last user message>",
             finish_reason stop, usage 11 prompt / 7 completion tokens
             (streamed as server-sent events when the request says
             stream: true, with usage when stream_options asks for it)
  error      500 with an OpenAI error body
  rate       429 with an OpenAI error body
  status     `status` (502 by default) with an OpenAI error body
  truncated  200, finish_reason length
  tool       200, a tool call (finish_reason tool_calls)
  garbage    200, a body that is not JSON
  empty      `status` with no body at all (Content-Length: 0; streams too)
  slow       as ok after `delay` seconds, or nothing when the caller
             closes the connection first (counted in `cuts`)
  cut        (streams) a few events, then the connection closes without
             [DONE]
  refusal    (streams) the answer as delta.refusal pieces, content null,
             finish_reason stop
  logprobs   (streams) as ok, each event with choices[0].logprobs
  big        (streams) as ok, then 48 MB more of content, as fast as the
             proxy takes it; (plain) 200 with 1 MB of content
  afterdone  (streams) as ok, then one more content chunk after
             data: [DONE]
  joined     (streams) as ok, but the first two content chunks in one
             event (two data lines): a client joins them and cannot parse
             the event
  errevent   (streams) as ok, with an "event: error" event before
             data: [DONE]
  azure      (streams) as ok, opened as Azure OpenAI opens it: a
             prompt-filter chunk with no choices, id "", model "" and
             created 0
  trickle    (streams) the head, then an SSE comment ": ping" every
             `delay` seconds, `pings` times (None: for as long as the
             connection lasts), then the answer as ok; (plain) a 200 head
             whose body comes one byte every `delay` seconds, padded with
             spaces to last `hold` seconds

A call whose caller closes the connection before the answer is all out
(a slow call waited for, a write that fails) is counted in `cuts`: the
caller gave up, not the fake. `delay` (slow) and `hold` (trickle) are
the longest a call is held; a test of a caller's time-out sets them far
above it, as a guard only: a caller that never gives up then fails its
test instead of hanging.

Run alone (python3 fake_upstream.py [PORT]) it prints its URL and serves
in mode ok until killed; with no PORT (and in FakeUpstream() with none)
it takes one as the tests take theirs (clients/python/testports.py: of
SEMCACHE_TEST_PORTS, below the kernel's ephemeral range, in a slot
locked against other runs), never the kernel's (a bind to port 0)."""
import hashlib
import http.server
import json
import math
import os
import select
import socket
import socketserver
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "clients", "python"))
import testports  # noqa: E402


def answer_text(body):
    msgs = body.get("messages") or []
    last = msgs[-1].get("content") if msgs else ""
    if isinstance(last, list):
        last = "\n".join(p.get("text", "") for p in last)
    return f"Answer to: {last}"


def fake_embedding(text, dim=64):
    """A deterministic bag-of-words vector: texts sharing words are close."""
    v = [0.0] * dim
    for w in text.lower().replace("?", " ").replace(".", " ").split():
        h = hashlib.sha256(w.encode()).digest()
        for i in range(dim):
            v[i] += (h[i % 32] - 127.5) / 127.5
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / n for x in v]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, status, obj, raw=None):
        data = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        try:
            self.answer()
        except (BrokenPipeError, ConnectionResetError):
            # The proxy gave up (a timeout test): nothing to say.
            self.server.fake.count_cut()
            self.close_connection = True

    def closed_within(self, seconds):
        """Waits up to seconds for the caller to close the connection:
        True when it did (it gave up on the call), False when it is still
        open then."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.connection], [], [], left)
            if not r:
                continue
            try:
                if self.connection.recv(1, socket.MSG_PEEK) == b"":
                    return True
            except (ConnectionResetError, BrokenPipeError):
                return True
            time.sleep(0.05)  # bytes of a next request: not a close

    def answer(self):
        fake = self.server.fake
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with fake.lock:
            fake.calls.append((self.path, dict(self.headers), body))
            mode = fake.mode
        if self.path == "/v1/embeddings":
            text = body["input"]
            self.send_json(200, {
                "object": "list",
                "data": [{"object": "embedding", "index": 0,
                          "embedding": fake_embedding(text)}],
                "model": body["model"],
                "usage": {"prompt_tokens": fake.embed_tokens,
                          "total_tokens": fake.embed_tokens}})
            return
        if self.path != "/v1/chat/completions" or body is None:
            self.send_json(404, {"error": {"message": "no such path"}})
            return
        if mode == "slow":
            if self.closed_within(fake.delay):
                fake.count_cut()
                self.close_connection = True
                return
            mode = "ok"
        if mode in ("error", "rate", "status"):
            code = {"error": 500, "rate": 429}.get(mode, fake.status)
            self.send_json(code, {
                "error": {"message": f"fake {mode}", "type": "server_error",
                          "param": None, "code": mode}})
            return
        if mode == "empty":
            self.send_response(fake.status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if mode == "garbage":
            self.send_json(200, None, raw=b"<html>not json</html>")
            return
        if mode == "trickle" and not body.get("stream"):
            data = json.dumps({"object": "chat.completion"}).encode()
            data += b" " * max(0, int(fake.hold / fake.delay) - len(data))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(fake.delay)
            return
        text = answer_text(body)
        finish = {"truncated": "length", "tool": "tool_calls"}.get(mode,
                                                                   "stop")
        if body.get("stream"):
            self.stream(body, text, finish, cut=(mode == "cut"), mode=mode)
            return
        msg = {"role": "assistant", "content": text}
        if mode == "big":
            msg["content"] = text + " " + "x" * (1 << 20)
        if mode == "tool":
            msg = {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "lookup", "arguments": "{}"}}]}
        self.send_json(200, {
            "id": f"chatcmpl-fake-{len(fake.calls)}",
            "object": "chat.completion", "created": 1700000000,
            "model": body.get("model"),
            "choices": [{"index": 0, "message": msg,
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7,
                      "total_tokens": 18}})

    def stream(self, body, text, finish, cut, mode="ok"):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        if mode == "trickle":
            fake = self.server.fake
            n = 0
            while fake.pings is None or n < fake.pings:
                self.wfile.write(b": ping\n\n")
                self.wfile.flush()
                n += 1
                time.sleep(fake.delay)
        base = {"id": "chatcmpl-fake-stream", "object": "chat.completion.chunk",
                "created": 1700000000, "model": body.get("model")}
        words = text.split(" ")
        if mode == "big":
            words += ["x" * 2000] * 24000
        events = [dict(base, choices=[{"index": 0, "delta": {
            "role": "assistant", "content": ""}, "finish_reason": None}])]
        for i, w in enumerate(words):
            piece = w if i == 0 else " " + w
            delta = {"content": piece}
            if mode == "refusal":
                delta = {"content": None, "refusal": piece}
            # choices2: every other piece comes as a second choice's, one
            # choice per chunk (an upstream that ignored n = 1).
            choice = {"index": i % 2 if mode == "choices2" else 0,
                      "delta": delta, "finish_reason": None}
            if mode == "logprobs":
                choice["logprobs"] = {"content": [
                    {"token": piece, "logprob": -0.5, "bytes": None,
                     "top_logprobs": []}]}
            events.append(dict(base, choices=[choice]))
        events.append(dict(base, choices=[{"index": 0, "delta": {},
                                           "finish_reason": finish}]))
        if mode == "azure":
            events.insert(0, {"choices": [], "created": 0, "id": "",
                              "model": "", "object": "",
                              "prompt_filter_results": [{
                                  "prompt_index": 0,
                                  "content_filter_results": {}}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(dict(base, choices=[], usage={
                "prompt_tokens": 11, "completion_tokens": 7,
                "total_tokens": 18}))
        if cut:
            events = events[:3]
        for i, e in enumerate(events):
            # joined: events 1 and 2 as one event of two data lines.
            end = b"\n" if mode == "joined" and i == 1 else b"\n\n"
            self.wfile.write(b"data: " + json.dumps(e).encode() + end)
            self.wfile.flush()
            if mode != "big":
                time.sleep(0.01)
        if mode == "errevent":
            self.wfile.write(b'event: error\ndata: {"message": "overloaded"}'
                             b"\n\n")
        if not cut:
            self.wfile.write(b"data: [DONE]\n\n")
        if mode == "afterdone":
            late = dict(base, choices=[{"index": 0, "delta": {
                "content": " (after DONE)"}, "finish_reason": None}])
            self.wfile.write(b"data: " + json.dumps(late).encode() + b"\n\n")
        self.wfile.flush()
        self.close_connection = True


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeUpstream:
    """Serves on 127.0.0.1:port (None: testports.free_port()) in a thread
    of its own."""

    def __init__(self, port=None):
        if port is None:
            port = testports.free_port()
        self.lock = threading.Lock()
        self.calls = []
        self.cuts = 0  # calls whose caller closed before the answer was out
        self.mode = "ok"
        self.delay = 3.0
        self.hold = 3.0  # trickle (plain): the body lasts this long
        self.status = 502
        self.pings = None  # trickle: comments before the answer; None: ever
        self.embed_tokens = 5  # the usage /v1/embeddings reports
        self.httpd = Server(("127.0.0.1", port), Handler)
        self.httpd.fake = self
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)
        self.thread.start()

    def chat_calls(self):
        with self.lock:
            return sum(1 for c in self.calls
                       if c[0] == "/v1/chat/completions")

    def count_cut(self):
        with self.lock:
            self.cuts += 1

    def cut_calls(self):
        with self.lock:
            return self.cuts

    def embed_calls(self):
        with self.lock:
            return sum(1 for c in self.calls if c[0] == "/v1/embeddings")

    def last(self):
        with self.lock:
            return self.calls[-1] if self.calls else None

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":
    try:
        f = FakeUpstream(int(sys.argv[1]) if len(sys.argv) > 1 else None)
    except testports.PortsError as e:
        sys.exit(f"fake_upstream: {e}")
    print(f.url, flush=True)
    f.thread.join()
