"""semcache.py - a Python client for semcached with no nng binding.

It speaks nng's SP framing over a plain TCP socket (docs/PROTOCOL.md,
section 1): the 8-byte handshake, a 64-bit big-endian length before each
message, and a 32-bit request id with its high bit set at the front of each
request and reply. Bodies are msgpack (Debian's python3-msgpack).

    from semcache import Client
    c = Client("127.0.0.1", 7700)
    entry = c.insert("faq", "30 days", text="What is the return policy?",
                     vec=[0.9, 0.1, 0.2])
    r = c.lookup("faq", vec=[0.85, 0.15, 0.2])
    if r["hit"]:
        print(r["response"])

One Client is one connection and one request at a time; it is not shared
between threads (give each thread its own).
"""
import itertools
import math
import socket
import struct

import msgpack

PROTO_VERSION = 1
REQ = 0x0030
REP = 0x0031
_HANDSHAKE = b"\x00SP\x00" + struct.pack(">H", REQ) + b"\x00\x00"
_REPLY_MAX = 64 << 20


class SemcacheError(Exception):
    """The server refused a request: .code is the wire code ("dim",
    "not_found", ...), .message the server's words."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ProtocolError(Exception):
    """The peer broke the SP framing or sent a malformed reply."""


def pack_vec(vec):
    """A vector as msgpack bin of little-endian float32 (never an array)."""
    vals = [float(x) for x in vec]
    if not vals or len(vals) > 4096:
        raise ValueError("a vector has 1..4096 elements")
    if any(not math.isfinite(x) for x in vals):
        raise ValueError("a vector may not hold NaN or Inf")
    return struct.pack(f"<{len(vals)}f", *vals)


class Client:
    def __init__(self, host="127.0.0.1", port=7700, timeout=5.0):
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.settimeout(timeout)
        self._ids = itertools.count(1)
        self._sock.sendall(_HANDSHAKE)
        peer = self._recv_exact(8)
        if peer[:4] != b"\x00SP\x00" or peer[6:8] != b"\x00\x00":
            raise ProtocolError(f"not an SP peer: {peer.hex()}")
        if struct.unpack(">H", peer[4:6])[0] != REP:
            raise ProtocolError(f"peer is not a REP socket: {peer.hex()}")

    def close(self):
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- transport ------------------------------------------------------

    def _recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise ProtocolError("connection closed by the server")
            buf += chunk
        return bytes(buf)

    def call(self, request):
        """Sends one request map and returns the reply map, raw."""
        req_id = 0x80000000 | (next(self._ids) & 0x7FFFFFFF)
        body = struct.pack(">I", req_id) + msgpack.packb(request, use_bin_type=True)
        self._sock.sendall(struct.pack(">Q", len(body)) + body)
        while True:
            (length,) = struct.unpack(">Q", self._recv_exact(8))
            if length < 4 or length > _REPLY_MAX:
                raise ProtocolError(f"reply length {length} out of range")
            msg = self._recv_exact(length)
            (got_id,) = struct.unpack(">I", msg[:4])
            if got_id == req_id:
                break  # a stale reply to an earlier request is skipped
        reply = msgpack.unpackb(msg[4:], raw=False, strict_map_key=False)
        if not isinstance(reply, dict) or "ok" not in reply:
            raise ProtocolError("a reply is a map with 'ok'")
        return reply

    def _op(self, op, **fields):
        req = {"v": PROTO_VERSION, "op": op}
        req.update({k: v for k, v in fields.items() if v is not None})
        reply = self.call(req)
        if not reply["ok"]:
            err = reply.get("error") or {}
            raise SemcacheError(err.get("code", "?"), err.get("message", ""))
        return reply.get("result", {})

    # ---- operations -----------------------------------------------------

    @staticmethod
    def _item(text=None, vec=None, scope=None, **more):
        item = {"text": text, "scope": scope, **more}
        if vec is not None:
            item["vec"] = pack_vec(vec)
        return {k: v for k, v in item.items() if v is not None}

    def ping(self):
        return self._op("ping")

    def insert(self, ns, response, text=None, vec=None, scope=None, ttl=None,
               model=None, feature=None, user=None, input_tokens=None,
               output_tokens=None):
        if isinstance(response, str):
            response = response.encode()
        item = self._item(text, vec, scope, response=response, ttl=ttl,
                          model=model, feature=feature, user=user,
                          input_tokens=input_tokens, output_tokens=output_tokens)
        return self._op("insert", ns=ns, **item)["entry"]

    def lookup(self, ns, text=None, vec=None, scope=None, threshold=None):
        return self._op("lookup", ns=ns,
                        **self._item(text, vec, scope, threshold=threshold))

    def delete(self, entry):
        return self._op("delete", entry=entry)

    def feedback(self, entry):
        return self._op("feedback", entry=entry)

    def lookup_batch(self, ns, items):
        """items: dicts with text/vec/scope/threshold. Returns one dict per
        item: {"ok": True, "result": ...} or {"ok": False, "error": ...}."""
        return self._op("lookup_batch", ns=ns,
                        items=[self._item(**it) for it in items])["results"]

    def insert_batch(self, ns, items):
        out = []
        for it in items:
            it = dict(it)
            if isinstance(it.get("response"), str):
                it["response"] = it["response"].encode()
            out.append(self._item(**it))
        return self._op("insert_batch", ns=ns, items=out)["results"]

    def ns_create(self, ns, **cfg):
        return self._op("ns_create", ns=ns, **cfg)

    def ns_configure(self, ns, **cfg):
        return self._op("ns_configure", ns=ns, **cfg)

    def ns_drop(self, ns):
        return self._op("ns_drop", ns=ns)

    def ns_list(self):
        return self._op("ns_list")["namespaces"]

    def stats(self, ns=None):
        return self._op("stats", ns=ns)

    def flush(self, ns=None):
        return self._op("flush", ns=ns)
