"""semcache.py - a Python client for semcached with no nng binding.

It speaks nng's SP framing itself (docs/PROTOCOL.md, section 1) over a plain
TCP socket, TLS for tls+tcp:// URLs (Python's ssl module), or a Unix socket
for ipc:// URLs: the 8-byte handshake, a 64-bit
big-endian length before each message (ipc:// puts a 0x01 byte before it),
and a 32-bit request id with its high bit set at the front of each request
and reply. Bodies are msgpack (Debian's python3-msgpack).

    from semcache import Client
    with Client("127.0.0.1", 7700) as c:     # or connect("tcp://...:7700")
        entry = c.insert("faq", "30 days", text="What is the return policy?",
                         vec=[0.9, 0.1, 0.2])
        r = c.lookup("faq", vec=[0.85, 0.15, 0.2])
        if r["hit"]:
            print(r["response"])            # bytes

A Client is one connection. Calls from several threads are serialised by a
lock; give each thread its own Client for parallel requests. After a
time-out or a broken connection the call raises and the socket is closed;
the next call connects afresh (a request is never re-sent by the client,
but for retries=N after ServerBusy). A connection the server closed
between calls (a restart) is found before a request is sent on it, and
that call connects afresh. A connection the server closes before any
reply (at its --max-clients cap it closes a new one right after the
handshake) raises ServerBusy, a ProtocolError, when the call sent one
request (a call_many that sent several raises a plain ProtocolError: the
first ones may have been carried out before a later one closed it).
"""
import array
import itertools
import math
import socket
import ssl
import struct
import sys
import threading
import time

import msgpack

PROTO_VERSION = 1
REQ = 0x0030
REP = 0x0031
HANDSHAKE = b"\x00SP\x00" + struct.pack(">H", REQ) + b"\x00\x00"
MAX_DIM = 4096
# semcached's default --recv-max: it closes, without a reply, a connection
# sent a longer message (docs/PROTOCOL.md, 1.4).
RECV_MAX = 4 << 20
# The lowest --recv-max semcached takes: a message no longer than this is
# under every server's cap.
RECV_MAX_MIN = 1024
# Requests in flight on one connection at most: a server queues at most
# --reply-queue-len replies per connection (1024 by default, never fewer
# than 64; 64 on the system's nng) and drops the rest (docs/PROTOCOL.md,
# 1.3). 32 stays under the least any server queues.
WINDOW = 32

__all__ = ["Client", "connect", "SemcacheError", "ProtocolError",
           "ServerBusy", "pack_vec", "unpack_vec"]
# Client(retries=N): the first wait after ServerBusy, doubled for each
# retry up to the last.
RETRY_FIRST = 0.05
RETRY_MAX = 1.0


class SemcacheError(Exception):
    """The server refused a request: .code is the wire code ("dim",
    "not_found", ...), .message the server's words."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ProtocolError(Exception):
    """The peer broke the SP framing or sent a malformed reply."""


class ServerBusy(ProtocolError):
    """The server closed the connection before any reply came on it. At
    its --max-clients cap semcached closes a new connection right after
    the handshake, before it reads a request (docs/PROTOCOL.md, 1.1): the
    likely cause. A server stopping, or dying, between the handshake and
    its first reply looks the same, so the request may have been carried
    out then. So does a request over a --recv-max set lower than the
    default 4 MiB: for a request over 1024 bytes (the lowest cap) the
    message names that cause too, with the request's size. Client(...,
    retries=N) connects again and re-sends."""


def pack_vec(vec):
    """A vector as the wire wants it: little-endian float32 bytes (sent as
    msgpack bin, never an array). Accepts a sequence of numbers, an
    array('f'), or bytes already in that form (passed through)."""
    if isinstance(vec, (bytes, bytearray, memoryview)):
        b = bytes(vec)
        if not b or len(b) % 4 or len(b) // 4 > MAX_DIM:
            raise ValueError("a packed vector is 4..16384 bytes, a multiple of 4")
        return b
    if isinstance(vec, array.array) and vec.typecode == "f":
        a = array.array("f", vec)
    else:
        a = array.array("f", [float(x) for x in vec])
    if not 1 <= len(a) <= MAX_DIM:
        raise ValueError(f"a vector has 1..{MAX_DIM} elements")
    if any(not math.isfinite(x) for x in a):
        raise ValueError("a vector may not hold NaN or Inf")
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def unpack_vec(b):
    """The inverse of pack_vec: a list of floats."""
    return list(struct.unpack(f"<{len(b) // 4}f", b))


def connect(url="tcp://127.0.0.1:7700", timeout=5.0, **kw):
    """A Client for a tcp://HOST:PORT, tls+tcp://HOST:PORT or ipc:///PATH
    URL. For tls+tcp:// pass tls=ssl.SSLContext (say, one made with
    ssl.create_default_context(cafile="cert.pem"), the server's
    certificate without its key); the default verifies
    against the system's CAs."""
    for scheme in ("tcp://", "tls+tcp://"):
        if url.startswith(scheme):
            host, sep, port = url[len(scheme):].rpartition(":")
            if not sep or not port.isdigit():
                raise ValueError(f"bad URL: {url}")
            if scheme == "tls+tcp://" and kw.get("tls") is None:
                kw["tls"] = True
            return Client(host.strip("[]") or "127.0.0.1", int(port), timeout,
                          **kw)
    if url.startswith("ipc://"):
        return Client(timeout=timeout, ipc_path=url[len("ipc://"):], **kw)
    raise ValueError(f"unsupported URL (tcp://, tls+tcp://, ipc://): {url}")


class Client:
    """One SP REQ connection to semcached.

    tls: None for plain TCP; an ssl.SSLContext, or True for
    ssl.create_default_context(), for a tls+tcp:// listener (server_hostname
    defaults to host). key: the access key (str) sent as "key" with every
    request, for a server configured with keys (docs/CONFIG.md). retries:
    how many times a call that raised ServerBusy connects again and
    re-sends its requests, after 0.05 s, then twice as long each time (at
    most 1 s); 0 (the default) never re-sends. trace, if given, is called as trace(direction, data) with direction
    "send" or "recv" and the exact bytes of each handshake and each framed
    message, as they cross the socket. Strings travel as UTF-8; the server
    does not check it, so a string of a reply that is not UTF-8 comes back
    with its undecodable bytes as surrogates ("\\udce9"), and a str holding
    them (a lookup's tags, given back to feedback) is sent as those bytes."""

    def __init__(self, host="127.0.0.1", port=7700, timeout=5.0, *,
                 ipc_path=None, tls=None, server_hostname=None, trace=None,
                 reply_max=1 << 30, key=None, retries=0):
        self._addr = (host, port)
        self._key = key
        self._tls = ssl.create_default_context() if tls is True else tls
        self._tls_name = server_hostname or host
        self._ipc = ipc_path
        self._timeout = timeout
        self._trace = trace
        self._reply_max = reply_max
        if not isinstance(retries, int) or retries < 0:
            raise ValueError("retries is an int >= 0")
        self._retries = retries
        self._replied = False  # a reply came on this connection
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._deadline = None
        self._sock = None
        # One deadline for the whole set-up, as call_many's reconnect has:
        # a server sending its handshake a byte at a time cannot hold it
        # longer than timeout.
        self._arm()
        try:
            self._connect()
        finally:
            self._deadline = None

    # ---- connection -----------------------------------------------------

    def _connect(self):
        # Each step (connect, TLS handshake, SP handshake) gets what is
        # left of the one deadline (_arm), not a time-out of its own.
        if self._ipc is not None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(self._remaining())
                s.connect(self._ipc)
            except OSError:
                s.close()
                raise
        else:
            s = socket.create_connection(self._addr,
                                         timeout=self._remaining())
            try:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self._tls is not None:
                    s.settimeout(self._remaining())
                    s = self._tls.wrap_socket(
                        s, server_hostname=self._tls_name)
            except BaseException:
                s.close()
                raise
        self._sock = s
        self._replied = False
        try:
            self._send(HANDSHAKE)
            peer = self._recv_exact(8)
            if self._trace:
                self._trace("recv", peer)
            if peer[:4] != b"\x00SP\x00" or peer[6:8] != b"\x00\x00":
                raise ProtocolError(f"not an SP peer: {peer.hex(' ')}")
            if struct.unpack(">H", peer[4:6])[0] != REP:
                raise ProtocolError(f"peer is not a REP socket: {peer.hex(' ')}")
        except BaseException:
            self.close()
            raise

    def close(self):
        """Closes the connection. From another thread, a call in progress
        then raises OSError or ProtocolError at once (shutdown wakes a
        blocked read); the next call connects afresh."""
        s, self._sock = self._sock, None
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # never connected, or the peer is gone already
            s.close()

    def _live(self):
        """The socket, or ConnectionAbortedError (an OSError) once
        close() ran, from another thread say, in the middle of a call."""
        s = self._sock
        if s is None:
            raise ConnectionAbortedError("the client was closed")
        return s

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- transport ------------------------------------------------------

    def _arm(self):
        self._deadline = (None if self._timeout is None
                          else time.monotonic() + self._timeout)

    def _remaining(self):
        """Seconds left of the call's deadline (None: no time-out);
        socket.timeout when none are."""
        if self._deadline is None:
            return None
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        return left

    def _left(self):
        """Sets the socket's time-out to what is left of the call's
        deadline (the whole call shares one: a server that sends a byte
        at a time cannot hold it longer)."""
        s = self._live()
        if self._deadline is not None:
            s.settimeout(self._remaining())
        return s

    def _send(self, data):
        if self._trace:
            self._trace("send", data)
        self._left().sendall(data)

    def _recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self._left().recv(min(n - len(buf), 1 << 20))
            if not chunk:
                e = ProtocolError("connection closed by the server")
                e.peer_closed = True  # call_many: say why, when it can
                raise e
            buf += chunk
        return bytes(buf)

    def _idle_ok(self):
        """Whether the connection, idle between calls, can take a request:
        False when the server closed it meanwhile (a restart, say) or sent
        something nobody asked for. One non-blocking read."""
        s = self._sock
        if s is None:
            return False  # close() from another thread just now
        try:
            s.settimeout(0)
            s.recv(1)
            return False  # b"": closed; a byte: not a reply to anything
        except (ssl.SSLWantReadError, BlockingIOError):
            return True  # nothing to read: open and quiet
        except OSError:
            return False  # reset, or TLS broken
        finally:
            s.settimeout(None)  # _left sets the call's deadline

    def _frame(self, payload):
        head = struct.pack(">Q", len(payload))
        return (b"\x01" + head if self._ipc is not None else head) + payload

    def _read_frame(self):
        """One message: returns (request id, msgpack body)."""
        hlen = 9 if self._ipc is not None else 8
        head = self._recv_exact(hlen)
        if hlen == 9 and head[0] != 1:
            raise ProtocolError(f"ipc message type {head[0]} is not 1")
        (length,) = struct.unpack(">Q", head[-8:])
        if length < 4 or length > self._reply_max:
            raise ProtocolError(f"reply length {length} out of range")
        msg = self._recv_exact(length)
        if self._trace:
            self._trace("recv", head + msg)
        (rid,) = struct.unpack(">I", msg[:4])
        return rid, msg[4:]

    def _next_id(self):
        return 0x80000000 | (next(self._ids) & 0x7FFFFFFF)

    @staticmethod
    def _decode(body):
        try:
            # Strings are not checked for UTF-8 by the server (tags a C
            # client stored, say): undecodable bytes come back as
            # surrogates, not as an error for the whole reply, and are
            # sent back as the same bytes (call_many).
            reply = msgpack.unpackb(body, raw=False, strict_map_key=False,
                                    unicode_errors="surrogateescape")
        except Exception as e:  # msgpack raises several types
            raise ProtocolError(f"reply is not msgpack: {e}") from None
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            raise ProtocolError("a reply is a map with a boolean 'ok'")
        return reply

    def call_many(self, requests):
        """Sends request maps on this connection, pipelined (at most WINDOW
        in flight), and reads every reply. The server may answer them in
        any order; they are matched by request id. Returns the raw reply
        maps, in the order of requests. The client's time-out is a
        deadline for the connection's set-up and for each reply (with the
        requests sent before it), however slowly the server sends."""
        # Every request is packed before the first is sent: one that
        # cannot be (a set in it, say) raises with nothing sent, not once
        # the requests before it were carried out, their replies unread.
        bodies = [self._pack(req) for req in requests]
        with self._lock:
            wait = RETRY_FIRST
            for attempt in range(self._retries + 1):
                try:
                    return self._call_many(bodies)
                except ServerBusy:
                    if attempt == self._retries:
                        raise
                time.sleep(wait)
                wait = min(wait * 2, RETRY_MAX)

    def _call_many(self, bodies):
        """call_many's one try, under the lock: the reply maps."""
        sent = 0
        try:
            if self._sock is not None and not self._idle_ok():
                self.close()  # nothing was sent on it in this call
            if self._sock is None:
                self._arm()
                self._connect()
            ids = [self._next_id() for _ in bodies]
            pending = set()
            got = {}
            while sent < len(ids) or pending:
                self._arm()
                while sent < len(ids) and len(pending) < WINDOW:
                    i, sent = sent, sent + 1  # counted once tried
                    self._send(self._frame(struct.pack(">I", ids[i])
                                           + bodies[i]))
                    pending.add(ids[i])
                rid, body = self._read_frame()
                if rid not in pending:
                    raise ProtocolError(f"reply id {rid:#x} was not asked for")
                pending.discard(rid)
                self._replied = True
                got[rid] = self._decode(body)
            return [got[rid] for rid in ids]
        except BaseException as e:
            # A time-out may leave half a frame in the socket: the
            # connection cannot be trusted after it.
            # No reply on this connection yet, and not closed by close()
            # from another thread.
            unanswered = self._sock is not None and not self._replied
            self.close()
            big = max((len(b) + 4 for b in bodies[:sent]), default=0)
            closed = (getattr(e, "peer_closed", False)
                      or isinstance(e, (ConnectionError, ssl.SSLError)))
            if big > RECV_MAX and closed:
                raise ProtocolError(
                    f"the server closed the connection after a request "
                    f"of {big} bytes: it closes one sent a message over "
                    f"its --recv-max ({RECV_MAX} bytes by default)"
                ) from e
            if closed and unanswered and sent > 1:
                # Not ServerBusy, which is re-sent: semcached carries out
                # the requests it reads, so it may have run the first of
                # these before one after them closed the connection (over
                # its --recv-max, say), their replies not yet sent.
                raise ProtocolError(
                    f"the server closed the connection before any reply "
                    f"to {sent} pipelined requests: it may be at its "
                    f"--max-clients cap, or one of them closed it (one "
                    f"over its --recv-max) after the ones before it were "
                    f"carried out; they may have been, so they are not "
                    f"re-sent") from e
            if closed and unanswered and sent > 0 and big > RECV_MAX_MIN:
                # The same close answers a request over a --recv-max set
                # lower than RECV_MAX: which one it was, the client cannot
                # tell, so the error names both.
                raise ServerBusy(
                    f"the server closed the connection before any reply "
                    f"to a request of {big} bytes: either that is over "
                    f"its --recv-max (4 MiB by default, may be set as low "
                    f"as {RECV_MAX_MIN} bytes; then no retry helps), or "
                    f"it is at its --max-clients cap (it closes a new "
                    f"connection right after the handshake) or stopping; "
                    f"connect again later (Client(..., retries=N) "
                    f"does)") from e
            if closed and unanswered and sent > 0:
                raise ServerBusy(
                    "the server closed the connection before any reply "
                    "on it: most likely it is at its --max-clients cap "
                    "(it closes a new connection right after the "
                    "handshake), or it is stopping; connect again "
                    "later (Client(..., retries=N) does)") from e
            raise
        finally:
            self._deadline = None

    def _pack(self, req):
        """The msgpack body of request map req, with the client's key."""
        if self._key is not None and "key" not in req:
            req = {**req, "key": self._key}
        # A str holding surrogates (undecodable bytes of a reply: _decode)
        # goes back as those bytes.
        return msgpack.packb(req, use_bin_type=True,
                             unicode_errors="surrogateescape")

    def call(self, request):
        """Sends one request map and returns the reply map, raw (ok or
        not): the way to send fields this client does not know."""
        return self.call_many([request])[0]

    def _op(self, op, **fields):
        req = {"v": PROTO_VERSION, "op": op}
        req.update({k: v for k, v in fields.items() if v is not None})
        reply = self.call(req)
        if not reply["ok"]:
            raise SemcacheError(*self._refusal(reply))
        result = reply.get("result")
        if not isinstance(result, dict):
            raise ProtocolError("a successful reply carries a 'result' map")
        return result

    @staticmethod
    def _refusal(reply):
        """(code, message) of a refusal: its "error" map with a str
        "code" and a str "message" ("" when absent); else ProtocolError."""
        err = reply.get("error")
        code = err.get("code") if isinstance(err, dict) else None
        message = err.get("message", "") if isinstance(err, dict) else None
        if not isinstance(code, str) or not isinstance(message, str):
            raise ProtocolError("a refusal carries an 'error' map with "
                                "a string 'code' and 'message'")
        return code, message

    @staticmethod
    def _field(result, key, kind):
        """result[key], which must be a kind; else ProtocolError."""
        v = result.get(key)
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            raise ProtocolError(f"the result has no {kind.__name__} {key!r}")
        return v

    # ---- operations -----------------------------------------------------

    @staticmethod
    def _item(text=None, vec=None, scope=None, response=None, **more):
        item = {"text": text, "scope": scope, **more}
        if vec is not None:
            item["vec"] = pack_vec(vec)
        if response is not None:
            item["response"] = (response.encode() if isinstance(response, str)
                                else bytes(response))
        return {k: v for k, v in item.items() if v is not None}

    def ping(self):
        """{"version": 1, "server": "semcached X.Y.Z"}"""
        return self._op("ping")

    def insert(self, ns, response, text=None, vec=None, scope=None, ttl=None,
               model=None, feature=None, user=None, input_tokens=None,
               output_tokens=None, embed_model=None):
        """Stores response (str or bytes); returns the new entry id. ttl in
        seconds: None = the namespace's default, -1 = never expires.
        embed_model names the model vec came from (text alone is embedded
        by the server)."""
        item = self._item(text, vec, scope, response, ttl=ttl, model=model,
                          feature=feature, user=user,
                          input_tokens=input_tokens,
                          output_tokens=output_tokens,
                          embed_model=embed_model)
        return self._check_insert(self._op("insert", ns=ns, **item))["entry"]

    def lookup(self, ns, text=None, vec=None, scope=None, threshold=None,
               embed_model=None, embed_tokens=None, feature=None, user=None):
        """The result map: "hit", "layer", "similarity", "best", "reason",
        and on a hit "entry", "response" (bytes), tags and token counts.
        For the cost ledger: embed_tokens (what embedding vec cost), and
        feature / user tags to count the lookup under."""
        return self._check_lookup(
            self._op("lookup", ns=ns,
                     **self._item(text, vec, scope, threshold=threshold,
                                  embed_model=embed_model,
                                  embed_tokens=embed_tokens,
                                  feature=feature, user=user)))

    @staticmethod
    def _check_insert(r):
        """An insert result: a uint "entry" (as sc_client_insert reads
        it). Else ProtocolError."""
        v = r.get("entry")
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ProtocolError(f"insert result: no uint 'entry': {r!r:.200}")
        return r

    @staticmethod
    def _check_lookup(r):
        """A lookup result as libsemcache checks it (sc_client_lookup):
        a bool "hit"; numbers and ids of their types; a hit with its
        "entry" and its bin "response", a miss with no response.
        Else ProtocolError."""
        def bad(what):
            raise ProtocolError(f"lookup result: {what}: {r!r:.200}")

        def num(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        if not isinstance(r.get("hit"), bool):
            bad("no bool 'hit'")
        if "similarity" in r and not num(r["similarity"]):
            bad("'similarity' not a number")
        if "best" in r and r["best"] is not None and not num(r["best"]):
            bad("'best' not a number or nil")
        for k in ("entry", "input_tokens", "output_tokens", "hit_count"):
            v = r.get(k, 0)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                bad(f"{k!r} not a uint")
        if "response" in r and not isinstance(r["response"], bytes):
            bad("'response' not bin")
        if r["hit"] and ("entry" not in r or "response" not in r):
            bad("a hit without its 'entry' or 'response'")
        if not r["hit"] and "response" in r:
            bad("a miss with a 'response'")
        return r

    def report(self, ns=None, by=None, limit=None, after=None):
        """The cost report: {"total": {...}, "rows": [...], "more", "next",
        "timeline": [...], "prices_date", "cpu_hour", "by"}
        (docs/PROTOCOL.md). "rows" is one page in name order: at most
        limit rows (server default 1000, at most 10000) whose key is
        above after; "more" rows follow it, and "next" (None on the last
        page) is the after of the next page. report_rows reads them all."""
        return self._op("report", ns=ns, by=by, limit=limit, after=after)

    def report_rows(self, ns=None, by=None, limit=10000):
        """Every row of the report, page by page, in name order."""
        after = None
        while True:
            page = self.report(ns=ns, by=by, limit=limit, after=after)
            yield from page["rows"]
            after = page.get("next")
            if after is None:
                return

    def delete(self, entry):
        self._op("delete", entry=entry)

    def feedback(self, entry, feature=None, user=None):
        """Reports a wrong hit: the entry is quarantined. feature / user:
        the tags the hit's lookup gave, so that the cost ledger charges the
        false hit where the hit was counted (default: the entry's)."""
        self._op("feedback", entry=entry, feature=feature, user=user)

    def lookup_batch(self, ns, items, scope=None):
        """items: dicts with text / vec / scope / threshold (and ns, to
        override the batch's). Returns one dict per item:
        {"ok": True, "result": {...}} or {"ok": False, "error": {...}}."""
        items = [self._item(**it) for it in items]  # any iterable
        return self._check_batch(
            self._op("lookup_batch", ns=ns, scope=scope, items=items),
            len(items), self._check_lookup)

    def insert_batch(self, ns, items, scope=None):
        """items: dicts with the keyword arguments of insert (response
        required). Returns one dict per item, as lookup_batch does; a
        successful item's result is {"entry": id}."""
        items = [self._item(**it) for it in items]  # any iterable
        return self._check_batch(
            self._op("insert_batch", ns=ns, scope=scope, items=items),
            len(items), self._check_insert)

    @classmethod
    def _check_batch(cls, result, n, check):
        """A batch's "results": one per item of the n sent, each a map
        with a bool "ok" and either a "result" map that check (the single
        op's) accepts or an "error" map as _refusal wants it. Else
        ProtocolError: a short list, or a malformed item, would hand the
        caller answers that are not the server's for its items."""
        results = cls._field(result, "results", list)
        if len(results) != n:
            raise ProtocolError(f"{len(results)} batch results for {n} items")
        for i, it in enumerate(results):
            if not isinstance(it, dict) or not isinstance(it.get("ok"), bool):
                raise ProtocolError(f"batch result {i}: not a map with a "
                                    f"bool 'ok': {it!r:.200}")
            if not it["ok"]:
                cls._refusal(it)
            elif isinstance(it.get("result"), dict):
                check(it["result"])
            else:
                raise ProtocolError(f"batch result {i}: no 'result' map")
        return results

    def ns_create(self, ns, **cfg):
        """cfg: dim, storage ("f32" | "f16" | "int8"), threshold, margin,
        ttl, ttl_mode ("absolute" | "sliding"), max_entries, max_bytes,
        max_response_bytes."""
        self._op("ns_create", ns=ns, **cfg)

    def ns_configure(self, ns, **cfg):
        """cfg as ns_create, less dim and storage."""
        self._op("ns_configure", ns=ns, **cfg)

    def ns_drop(self, ns):
        self._op("ns_drop", ns=ns)

    def ns_list(self):
        return self._field(self._op("ns_list"), "namespaces", list)

    def stats(self, ns=None):
        """Counters of one namespace, or of all (ns=None)."""
        return self._op("stats", ns=ns)

    def flush(self, ns=None):
        """Removes the entries of one namespace, or of all (ns=None)."""
        self._op("flush", ns=ns)
