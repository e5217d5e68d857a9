/* client.c - libsemcache (client.h): request encoding with msgpack-c's
 * packer, replies read with the bounded reader of mp.h, transport by an nng
 * REQ socket with one context per call. */
#define _GNU_SOURCE /* explicit_bzero */
#include "proto/client.h"

#include <math.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "proto/mp.h"

#define PROTO_VERSION 1
/* A hit can carry a 64 MiB response (SC_CACHE_RESPONSE_LIMIT) and a batch
 * several: as the Python client, 1 GiB. */
#define REPLY_MAX (1u << 30)
/* Requests in flight on the connection at most: a server queues at most
 * --reply-queue-len replies per connection (1024 by default, 64 at the
 * least and on the system's nng) and drops the rest (PROTOCOL.md, 1.3);
 * 32 stays under the least, and callers past it wait for a slot (within
 * their time-out). */
#define MAX_IN_FLIGHT 32

struct sc_client {
    nng_socket sock;
    int timeout_ms;
    char *key; /* sent as "key" with every request; NULL = none */
    size_t key_len;
    nng_mtx *mu;
    nng_cv *cv; /* a slot freed */
    unsigned in_flight;
    /* Connections up now: an exchange that timed out with none is
     * SC_ECONN (nothing reached), not a silent server. Counted from
     * ADD_PRE, the event nng pairs with every REM_POST (a pipe refused
     * before ADD_POST gets the REM_POST too). */
    atomic_uint pipes;
};

static void pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p;
    sc_client *c = arg;
    if (ev == NNG_PIPE_EV_ADD_PRE) {
        atomic_fetch_add(&c->pipes, 1);
    } else if (ev == NNG_PIPE_EV_REM_POST) {
        atomic_fetch_sub(&c->pipes, 1);
    }
}

/* nng's result for a failed exchange as ours. */
static sc_err exchange_error(const sc_client *c, int rv)
{
    if (rv != NNG_ETIMEDOUT) {
        return SC_ECONN;
    }
    return atomic_load(&c->pipes) == 0 ? SC_ECONN : SC_ETIMEDOUT;
}

/* Takes a slot by deadline (nng_clock ms, as the exchange's); false when
 * none came by then. */
static bool slot_take(sc_client *c, nng_time deadline)
{
    nng_mtx_lock(c->mu);
    while (c->in_flight >= MAX_IN_FLIGHT) {
        if (nng_cv_until(c->cv, deadline) == NNG_ETIMEDOUT &&
            c->in_flight >= MAX_IN_FLIGHT) {
            nng_mtx_unlock(c->mu);
            return false;
        }
    }
    c->in_flight++;
    nng_mtx_unlock(c->mu);
    return true;
}

static void slot_give(sc_client *c)
{
    nng_mtx_lock(c->mu);
    c->in_flight--;
    nng_cv_wake1(c->cv);
    nng_mtx_unlock(c->mu);
}

static void client_free(sc_client *c)
{
    if (c->cv != NULL) {
        nng_cv_free(c->cv);
    }
    if (c->mu != NULL) {
        nng_mtx_free(c->mu);
    }
    free(c);
}

/* nng 1.5.2 sets itself up on its first call, with a flag read outside
 * its lock (posix_thread.c, nni_plat_init): threads that open their first
 * clients at once race on it (ThreadSanitizer reports it). Its first call
 * is made once here, so every later one is ordered after the set-up. */
static pthread_once_t nng_once = PTHREAD_ONCE_INIT;

static void nng_first_call(void)
{
    (void)nng_clock();
}

sc_err sc_client_open(const char *url, int timeout_ms, sc_client **out)
{
    *out = NULL;
    pthread_once(&nng_once, nng_first_call);
    sc_client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return SC_ENOMEM;
    }
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    if (nng_mtx_alloc(&c->mu) != 0 || nng_cv_alloc(&c->cv, c->mu) != 0 ||
        nng_req0_open(&c->sock) != 0) {
        client_free(c);
        return SC_ENOMEM;
    }
    nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, REPLY_MAX);
    /* A request is not resent on a slow reply: the timeout decides. */
    nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    if (nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_PRE, pipe_event, c) != 0 ||
        nng_pipe_notify(c->sock, NNG_PIPE_EV_REM_POST, pipe_event, c) != 0) {
        nng_close(c->sock);
        client_free(c);
        return SC_ENOMEM;
    }
    int rv = nng_dial(c->sock, url ? url : "tcp://127.0.0.1:7700", NULL,
                      NNG_FLAG_NONBLOCK);
    if (rv != 0) {
        nng_close(c->sock);
        client_free(c);
        return rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP ? SC_EINVAL : SC_ECONN;
    }
    *out = c;
    return SC_OK;
}

void sc_client_close(sc_client *c)
{
    if (c != NULL) {
        nng_close(c->sock);
        sc_client_set_key(c, NULL);
        client_free(c);
    }
}

sc_err sc_client_set_key(sc_client *c, const char *key)
{
    char *copy = NULL;
    size_t n = key != NULL ? strlen(key) : 0;
    if (key != NULL && (copy = malloc(n + 1)) == NULL) {
        return SC_ENOMEM;
    }
    if (copy != NULL) {
        memcpy(copy, key, n + 1);
    }
    if (c->key != NULL) {
        explicit_bzero(c->key, c->key_len);
        free(c->key);
    }
    c->key = copy;
    c->key_len = n;
    return SC_OK;
}

/* The packed request into *out (malloc'd, the caller frees); SC_ENOMEM,
 * nothing kept and *out untouched, when a write failed (mp.h). */
static sc_err pb_take(mp_buf *pb, uint8_t **out, size_t *len)
{
    return mp_buf_take(pb, out, len) == 0 ? SC_OK : SC_ENOMEM;
}

/* req[0..len) with "key" added to its top-level map, in *out (malloc'd,
 * *out_len bytes). Returns SC_EINVAL when req does not start with a map. */
static sc_err with_key(const sc_client *c, const uint8_t *req, size_t len,
                       uint8_t **out, size_t *out_len)
{
    uint32_t n;
    size_t hdr;
    if (len >= 1 && (req[0] & 0xf0) == 0x80) {
        n = req[0] & 0x0f;
        hdr = 1;
    } else if (len >= 3 && req[0] == 0xde) {
        n = (uint32_t)req[1] << 8 | req[2];
        hdr = 3;
    } else if (len >= 5 && req[0] == 0xdf) {
        n = (uint32_t)req[1] << 24 | (uint32_t)req[2] << 16 |
            (uint32_t)req[3] << 8 | req[4];
        hdr = 5;
    } else {
        return SC_EINVAL;
    }
    if (n == UINT32_MAX) {
        return SC_EINVAL;
    }
    mp_buf pb;
    mp_buf_init(&pb);
    msgpack_packer *pk = &pb.pk;
    msgpack_pack_map(pk, n + 1);
    mp_put_key(pk, "key");
    msgpack_pack_str(pk, c->key_len);
    msgpack_pack_str_body(pk, c->key, c->key_len);
    msgpack_pack_str_body(pk, req + hdr, len - hdr); /* raw append */
    return pb_take(&pb, out, out_len);
}

sc_err sc_client_call(sc_client *c, const void *req, size_t len,
                      uint8_t **reply, size_t *reply_len)
{
    nng_ctx ctx;
    nng_aio *aio = NULL;
    nng_msg *msg = NULL;
    sc_err rc = SC_ENOMEM; /* what the allocations below fail with */
    uint8_t *keyed = NULL;
    *reply = NULL;
    *reply_len = 0;
    if (c->key != NULL) {
        size_t klen;
        sc_err krc = with_key(c, req, len, &keyed, &klen);
        if (krc != SC_OK) {
            return krc;
        }
        req = keyed;
        len = klen;
    }
    /* One deadline for the whole exchange, waiting for a slot and
     * connecting included: nng counts an aio's time-out from each
     * operation's start, so each gets what the one before left. */
    nng_time deadline = nng_clock() + (nng_time)c->timeout_ms;
    if (!slot_take(c, deadline)) {
        rc = SC_ETIMEDOUT;
        goto out_keyed;
    }
    if (nng_ctx_open(&ctx, c->sock) != 0) {
        rc = SC_ENOMEM;
        goto out_slot;
    }
    if (nng_aio_alloc(&aio, NULL, NULL) != 0) {
        goto out_ctx;
    }
    nng_time start = nng_clock();
    nng_aio_set_timeout(aio, start < deadline ? (nng_duration)(deadline - start)
                                              : 1);
    if (nng_msg_alloc(&msg, 0) != 0) {
        goto out_aio;
    }
    if (nng_msg_append(msg, req, len) != 0) {
        nng_msg_free(msg);
        goto out_aio;
    }
    nng_aio_set_msg(aio, msg);
    nng_ctx_send(ctx, aio);
    nng_aio_wait(aio);
    int rv = nng_aio_result(aio);
    if (rv != 0) {
        nng_msg_free(msg);
        rc = exchange_error(c, rv);
        goto out_aio;
    }
    nng_time now = nng_clock();
    /* At least 1 ms: a send that took all the time leaves the reply none. */
    nng_aio_set_timeout(aio,
                        now < deadline ? (nng_duration)(deadline - now) : 1);
    nng_ctx_recv(ctx, aio);
    nng_aio_wait(aio);
    rv = nng_aio_result(aio);
    if (rv != 0) {
        rc = exchange_error(c, rv);
        goto out_aio;
    }
    msg = nng_aio_get_msg(aio);
    *reply_len = nng_msg_len(msg);
    *reply = malloc(*reply_len ? *reply_len : 1);
    if (*reply == NULL) {
        nng_msg_free(msg);
        goto out_aio;
    }
    memcpy(*reply, nng_msg_body(msg), *reply_len);
    nng_msg_free(msg);
    rc = SC_OK;
out_aio:
    nng_aio_free(aio);
out_ctx:
    nng_ctx_close(ctx);
out_slot:
    slot_give(c);
out_keyed:
    if (keyed != NULL) {
        explicit_bzero(keyed, len);
        free(keyed);
    }
    return rc;
}

/* ---- building requests ---------------------------------------------- */

static void begin(msgpack_packer *pk, const char *op, size_t extra)
{
    msgpack_pack_map(pk, 2 + extra);
    mp_put_key(pk, "v");
    msgpack_pack_uint32(pk, PROTO_VERSION);
    mp_put_key(pk, "op");
    mp_put_str(pk, op);
}

static size_t count_item_fields(const sc_client_item *it, int insert)
{
    size_t n = (it->scope != NULL) + (it->text != NULL) + (it->vec != NULL) +
               (it->vec != NULL && it->embed_model != NULL) +
               (it->feature != NULL) + (it->user != NULL);
    if (insert) {
        n += 1 + (it->ttl_s != 0) + (it->model != NULL) +
             (it->input_tokens != 0) + (it->output_tokens != 0);
    } else {
        n += it->has_threshold;
    }
    return n;
}

/* The ledger's tags (NULL = not sent). */
static void put_tags(msgpack_packer *pk, const char *feature, const char *user)
{
    if (feature != NULL) {
        mp_put_key(pk, "feature");
        mp_put_str(pk, feature);
    }
    if (user != NULL) {
        mp_put_key(pk, "user");
        mp_put_str(pk, user);
    }
}

static void put_item_fields(msgpack_packer *pk, const sc_client_item *it,
                            int insert)
{
    if (it->scope != NULL) {
        mp_put_key(pk, "scope");
        mp_put_str(pk, it->scope);
    }
    if (it->text != NULL) {
        mp_put_key(pk, "text");
        mp_put_str(pk, it->text);
    }
    if (it->vec != NULL) {
        mp_put_key(pk, "vec");
        mp_put_vec(pk, it->vec, it->dim);
        if (it->embed_model != NULL) {
            mp_put_key(pk, "embed_model");
            mp_put_str(pk, it->embed_model);
        }
    }
    put_tags(pk, it->feature, it->user);
    if (insert) {
        mp_put_key(pk, "response");
        mp_put_bin(pk, it->response, it->response_len);
        if (it->ttl_s != 0) {
            mp_put_key(pk, "ttl");
            msgpack_pack_double(pk, it->ttl_s);
        }
        if (it->model != NULL) {
            mp_put_key(pk, "model");
            mp_put_str(pk, it->model);
        }
        if (it->input_tokens != 0) {
            mp_put_key(pk, "input_tokens");
            msgpack_pack_uint64(pk, it->input_tokens);
        }
        if (it->output_tokens != 0) {
            mp_put_key(pk, "output_tokens");
            msgpack_pack_uint64(pk, it->output_tokens);
        }
    } else if (it->has_threshold) {
        mp_put_key(pk, "threshold");
        msgpack_pack_float(pk, it->threshold);
    }
}

static sc_err build_item(const char *op, const char *ns,
                         const sc_client_item *it, int insert, uint8_t **buf,
                         size_t *len)
{
    if (ns == NULL || it == NULL || (it->text == NULL && it->vec == NULL)) {
        return SC_EINVAL;
    }
    mp_buf pb;
    mp_buf_init(&pb);
    msgpack_packer *pk = &pb.pk;
    begin(pk, op, 1 + count_item_fields(it, insert));
    mp_put_key(pk, "ns");
    mp_put_str(pk, ns);
    put_item_fields(pk, it, insert);
    return pb_take(&pb, buf, len);
}

sc_err sc_client_build_insert(const char *ns, const sc_client_item *it,
                              uint8_t **buf, size_t *len)
{
    return build_item("insert", ns, it, 1, buf, len);
}

sc_err sc_client_build_lookup(const char *ns, const sc_client_item *it,
                              uint8_t **buf, size_t *len)
{
    return build_item("lookup", ns, it, 0, buf, len);
}

/* ---- reading replies ------------------------------------------------ */

static int key_is(const char *k, uint32_t n, const char *want)
{
    return strlen(want) == n && memcmp(k, want, n) == 0;
}

static void copy_str(mp_reader *r, char *out, size_t cap)
{
    const char *s;
    uint32_t n;
    if (mp_read_str(r, &s, &n) != 0) {
        mp_skip(r);
        out[0] = '\0';
        return;
    }
    size_t m = n < cap - 1 ? n : cap - 1;
    memcpy(out, s, m);
    out[m] = '\0';
}

/* Checks {"ok": ..., "result"| "error"}; leaves *result positioned at the
 * result map. A refusal without an "error" map holding a str "code" (and
 * a str "message", if any) is SC_EPROTO, not SC_EREMOTE with no code. */
static sc_err open_reply(const uint8_t *buf, size_t len, mp_reader *result,
                         sc_client_error *err)
{
    mp_reader r;
    mp_reader_init(&r, buf, len);
    uint32_t n;
    if (mp_read_map(&r, &n) != 0) {
        return SC_EPROTO;
    }
    bool ok = false, have_ok = false, have_result = false, have_code = false;
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t kn;
        if (mp_read_str(&r, &k, &kn) != 0) {
            return SC_EPROTO;
        }
        if (key_is(k, kn, "ok")) {
            if (mp_read_bool(&r, &ok) != 0) {
                return SC_EPROTO;
            }
            have_ok = true;
        } else if (key_is(k, kn, "result")) {
            *result = r;
            have_result = true;
            if (mp_skip(&r) != 0) {
                return SC_EPROTO;
            }
        } else if (key_is(k, kn, "error")) {
            uint32_t en;
            if (mp_read_map(&r, &en) != 0) {
                return SC_EPROTO;
            }
            for (uint32_t j = 0; j < en; j++) {
                const char *ek;
                uint32_t ekn;
                if (mp_read_str(&r, &ek, &ekn) != 0) {
                    return SC_EPROTO;
                }
                bool is_code = key_is(ek, ekn, "code");
                if (is_code || key_is(ek, ekn, "message")) {
                    if (mp_peek(&r) != MP_STR) {
                        return SC_EPROTO;
                    }
                    mp_reader whole = r;
                    if (mp_skip(&whole) != 0) {
                        return SC_EPROTO; /* cut short */
                    }
                    have_code |= is_code;
                    if (err == NULL) {
                        r = whole;
                    } else if (is_code) {
                        copy_str(&r, err->code, sizeof(err->code));
                    } else {
                        copy_str(&r, err->message, sizeof(err->message));
                    }
                } else if (mp_skip(&r) != 0) {
                    return SC_EPROTO;
                }
            }
        } else if (mp_skip(&r) != 0) {
            return SC_EPROTO;
        }
    }
    if (!have_ok) {
        return SC_EPROTO;
    }
    if (!ok) {
        /* PROTOCOL.md 2.3: a refusal carries {"code": str, "message": str};
         * as the Python client, the message may be missing, not the code. */
        return have_code ? SC_EREMOTE : SC_EPROTO;
    }
    return have_result ? SC_OK : SC_EPROTO;
}

/* Clears a call's *err (optional) before anything can fail: client.h
 * promises it defined on every return. */
static void err_clear(sc_client_error *err)
{
    if (err != NULL) {
        err->code[0] = err->message[0] = '\0';
    }
}

/* Sends req (freed) and opens the reply; *raw (if given) keeps the reply
 * bytes, NULL and *raw_len 0 on any error. */
static sc_err roundtrip(sc_client *c, uint8_t *req, size_t len, uint8_t **raw,
                        size_t *raw_len, mp_reader *result,
                        sc_client_error *err)
{
    uint8_t *reply = NULL;
    size_t reply_len = 0;
    sc_err rc = sc_client_call(c, req, len, &reply, &reply_len);
    free(req);
    if (rc != SC_OK) {
        return rc;
    }
    rc = open_reply(reply, reply_len, result, err);
    if (rc != SC_OK || raw == NULL) {
        free(reply);
        return rc;
    }
    *raw = reply;
    *raw_len = reply_len;
    return SC_OK;
}

/* roundtrip for the request packed in pb. */
static sc_err send_packed(sc_client *c, mp_buf *pb, uint8_t **raw,
                          size_t *raw_len, mp_reader *result,
                          sc_client_error *err)
{
    if (raw != NULL) {
        *raw = NULL;
        *raw_len = 0;
    }
    err_clear(err);
    uint8_t *req;
    size_t len;
    if (pb_take(pb, &req, &len) != SC_OK) {
        return SC_ENOMEM;
    }
    return roundtrip(c, req, len, raw, raw_len, result, err);
}

/* A request of op with the fields given (NULL = not sent). */
static sc_err simple_tagged(sc_client *c, const char *op, const char *ns,
                            const uint64_t *entry, const char *feature,
                            const char *user, sc_client_error *err)
{
    mp_buf pb;
    mp_buf_init(&pb);
    msgpack_packer *pk = &pb.pk;
    begin(pk, op,
          (ns != NULL) + (entry != NULL) + (feature != NULL) + (user != NULL));
    if (ns != NULL) {
        mp_put_key(pk, "ns");
        mp_put_str(pk, ns);
    }
    if (entry != NULL) {
        mp_put_key(pk, "entry");
        msgpack_pack_uint64(pk, *entry);
    }
    put_tags(pk, feature, user);
    uint8_t *raw;
    size_t raw_len;
    mp_reader res;
    sc_err rc = send_packed(c, &pb, &raw, &raw_len, &res, err);
    free(raw);
    return rc;
}

static sc_err simple(sc_client *c, const char *op, const char *ns,
                     const uint64_t *entry, sc_client_error *err)
{
    return simple_tagged(c, op, ns, entry, NULL, NULL, err);
}

sc_err sc_client_delete(sc_client *c, uint64_t entry, sc_client_error *err)
{
    return simple(c, "delete", NULL, &entry, err);
}

sc_err sc_client_feedback(sc_client *c, uint64_t entry, sc_client_error *err)
{
    return simple(c, "feedback", NULL, &entry, err);
}

sc_err sc_client_feedback_tagged(sc_client *c, uint64_t entry,
                                 const char *feature, const char *user,
                                 sc_client_error *err)
{
    return simple_tagged(c, "feedback", NULL, &entry, feature, user, err);
}

sc_err sc_client_flush(sc_client *c, const char *ns, sc_client_error *err)
{
    return simple(c, "flush", ns, NULL, err);
}

sc_err sc_client_ns_drop(sc_client *c, const char *ns, sc_client_error *err)
{
    err_clear(err);
    if (ns == NULL) {
        return SC_EINVAL;
    }
    return simple(c, "ns_drop", ns, NULL, err);
}

sc_err sc_client_stats(sc_client *c, const char *ns, uint8_t **reply,
                       size_t *reply_len, sc_client_error *err)
{
    mp_buf pb;
    mp_buf_init(&pb);
    msgpack_packer *pk = &pb.pk;
    begin(pk, "stats", ns != NULL);
    if (ns != NULL) {
        mp_put_key(pk, "ns");
        mp_put_str(pk, ns);
    }
    mp_reader res;
    return send_packed(c, &pb, reply, reply_len, &res, err);
}

sc_err sc_client_report(sc_client *c, const char *ns, const char *by,
                        uint8_t **reply, size_t *reply_len,
                        sc_client_error *err)
{
    return sc_client_report_page(c, ns, by, NULL, 0, reply, reply_len, err);
}

sc_err sc_client_report_page(sc_client *c, const char *ns, const char *by,
                             const char *after, uint64_t limit, uint8_t **reply,
                             size_t *reply_len, sc_client_error *err)
{
    mp_buf pb;
    mp_buf_init(&pb);
    msgpack_packer *pk = &pb.pk;
    begin(pk, "report",
          (ns != NULL) + (by != NULL) + (after != NULL) + (limit != 0));
    if (ns != NULL) {
        mp_put_key(pk, "ns");
        mp_put_str(pk, ns);
    }
    if (by != NULL) {
        mp_put_key(pk, "by");
        mp_put_str(pk, by);
    }
    if (after != NULL) {
        mp_put_key(pk, "after");
        mp_put_str(pk, after);
    }
    if (limit != 0) {
        mp_put_key(pk, "limit");
        msgpack_pack_uint64(pk, limit);
    }
    mp_reader res;
    return send_packed(c, &pb, reply, reply_len, &res, err);
}

/* Positions r (at a result map) on the value of key. Returns 0, 1 when
 * the map has no such key, or -1 when the map is malformed. */
static int find_key(mp_reader *r, const char *key)
{
    uint32_t n;
    if (mp_read_map(r, &n) != 0) {
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t kn;
        if (mp_read_str(r, &k, &kn) != 0) {
            return -1;
        }
        if (key_is(k, kn, key)) {
            return 0;
        }
        if (mp_skip(r) != 0) {
            return -1;
        }
    }
    return 1;
}

sc_err sc_client_ping(sc_client *c, char *server, size_t cap,
                      sc_client_error *err)
{
    mp_buf pb;
    mp_buf_init(&pb);
    msgpack_packer *pk = &pb.pk;
    begin(pk, "ping", 0);
    if (server != NULL && cap > 0) {
        server[0] = '\0';
    }
    uint8_t *raw;
    size_t raw_len;
    mp_reader r;
    sc_err rc = send_packed(c, &pb, &raw, &raw_len, &r, err);
    if (rc != SC_OK) {
        return rc;
    }
    int found = find_key(&r, "server");
    if (found < 0) {
        rc = SC_EPROTO;
    } else if (found == 0 && server != NULL && cap > 0) {
        copy_str(&r, server, cap);
    }
    free(raw);
    return rc;
}

/* Sends the item request of op and opens its reply: on SC_OK, r reads
 * *raw, which the caller frees. */
static sc_err item_call(sc_client *c, const char *op, const char *ns,
                        const sc_client_item *it, int insert, uint8_t **raw,
                        mp_reader *r, sc_client_error *err)
{
    uint8_t *req;
    size_t len, raw_len;
    err_clear(err);
    *raw = NULL;
    sc_err rc = build_item(op, ns, it, insert, &req, &len);
    if (rc != SC_OK) {
        return rc;
    }
    return roundtrip(c, req, len, raw, &raw_len, r, err);
}

sc_err sc_client_insert(sc_client *c, const char *ns, const sc_client_item *it,
                        uint64_t *entry, sc_client_error *err)
{
    if (entry != NULL) {
        *entry = 0;
    }
    uint8_t *raw;
    mp_reader r;
    sc_err rc = item_call(c, "insert", ns, it, 1, &raw, &r, err);
    if (rc != SC_OK) {
        return rc;
    }
    uint64_t id;
    rc = SC_EPROTO;
    if (find_key(&r, "entry") == 0 && mp_read_uint(&r, &id) == 0) {
        if (entry != NULL) {
            *entry = id;
        }
        rc = SC_OK;
    }
    free(raw);
    return rc;
}

sc_err sc_client_lookup(sc_client *c, const char *ns, const sc_client_item *it,
                        sc_client_result *res, sc_client_error *err)
{
    memset(res, 0, sizeof(*res));
    res->best = NAN;
    uint8_t *raw;
    mp_reader r;
    sc_err rc = item_call(c, "lookup", ns, it, 0, &raw, &r, err);
    if (rc != SC_OK) {
        return rc;
    }
    uint32_t n;
    if (mp_read_map(&r, &n) != 0) {
        free(raw);
        return SC_EPROTO;
    }
    bool has_entry = false, has_hit = false;
    for (uint32_t i = 0; i < n && rc == SC_OK; i++) {
        const char *k;
        uint32_t kn;
        double v;
        if (mp_read_str(&r, &k, &kn) != 0) {
            rc = SC_EPROTO;
        } else if (key_is(k, kn, "hit")) {
            rc = mp_read_bool(&r, &res->hit) == 0 ? SC_OK : SC_EPROTO;
            has_hit = true;
        } else if (key_is(k, kn, "layer")) {
            copy_str(&r, res->layer, sizeof(res->layer));
        } else if (key_is(k, kn, "reason") && mp_peek(&r) == MP_STR) {
            copy_str(&r, res->reason, sizeof(res->reason));
        } else if (key_is(k, kn, "model")) {
            copy_str(&r, res->model, sizeof(res->model));
        } else if (key_is(k, kn, "similarity")) {
            rc = mp_read_number(&r, &v) == 0 ? SC_OK : SC_EPROTO;
            res->similarity = (float)v;
        } else if (key_is(k, kn, "best") && mp_peek(&r) != MP_NIL) {
            rc = mp_read_number(&r, &v) == 0 ? SC_OK : SC_EPROTO;
            res->best = (float)v;
        } else if (key_is(k, kn, "entry")) {
            rc = mp_read_uint(&r, &res->entry) == 0 ? SC_OK : SC_EPROTO;
            has_entry = rc == SC_OK;
        } else if (key_is(k, kn, "input_tokens")) {
            rc = mp_read_uint(&r, &res->input_tokens) == 0 ? SC_OK : SC_EPROTO;
        } else if (key_is(k, kn, "output_tokens")) {
            rc = mp_read_uint(&r, &res->output_tokens) == 0 ? SC_OK : SC_EPROTO;
        } else if (key_is(k, kn, "hit_count")) {
            rc = mp_read_uint(&r, &res->hit_count) == 0 ? SC_OK : SC_EPROTO;
        } else if (key_is(k, kn, "response")) {
            const uint8_t *b;
            uint32_t bn;
            if (mp_read_bin(&r, &b, &bn) != 0 || res->response != NULL) {
                rc = SC_EPROTO; /* not bin, or a second one */
            } else {
                res->response = malloc(bn ? bn : 1);
                if (res->response == NULL) {
                    rc = SC_ENOMEM;
                } else {
                    memcpy(res->response, b, bn);
                    res->response_len = bn;
                }
            }
        } else if (mp_skip(&r) != 0) {
            rc = SC_EPROTO;
        }
    }
    free(raw);
    if (rc == SC_OK && !has_hit) {
        rc = SC_EPROTO; /* PROTOCOL.md: every result says hit or miss */
    }
    if (rc == SC_OK && res->hit && (res->response == NULL || !has_entry)) {
        rc = SC_EPROTO; /* a hit names its entry and carries the response */
    }
    if (rc == SC_OK && !res->hit && res->response != NULL) {
        rc = SC_EPROTO; /* a miss has none (client.h: NULL on a miss) */
    }
    if (rc != SC_OK) { /* nothing half-read for the caller */
        free(res->response);
        memset(res, 0, sizeof(*res));
        res->best = NAN;
    }
    return rc;
}
