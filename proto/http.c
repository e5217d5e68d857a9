/* http.c - the HTTP front (http.h, docs/HTTP.md) on nng's HTTP server.
 * JSON bodies are parsed by libjansson, turned into the msgpack request of
 * docs/PROTOCOL.md and handed to sc_dispatch_handle, the one decoder and
 * validator of requests; its msgpack reply is turned back into JSON here.
 * nng reads no body for us: we check Content-Length against body_max first
 * (413 beyond it) and read the body ourselves, asynchronously. */
#define _POSIX_C_SOURCE 200809L
#include "proto/http.h"

#include <float.h>
#include <jansson.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>

#include "common/sc_hook.h"
#include "common/sc_plural.h"
#include "common/sc_utf8.h"
#include "proto/mp.h"
#include "proto/pool.h"

struct sc_http {
    nng_http_server *srv;
    sc_dispatch *dispatch;
    sc_cache *cache;
    size_t body_max;
    sc_metrics *metrics;
    bool own_metrics;
    sc_http_write_fn metrics_hook;
    sc_http_report_fn report_hook;
    void *hook_arg;
    /* Handlers whose data (a route) nng still holds: close waits for 0,
     * since a handler may run until nng lets go of it. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned live;
    /* The pool that runs requests off nng's threads (those serve the nng
     * socket too). */
    sc_pool *pool;
    unsigned queue_max;
    bool started;     /* sc_http_start counted a start of srv */
    bool stopped;     /* sc_http_stop has run */
    unsigned grace_ms; /* the stop's grace given to nng */
    unsigned stop_cut; /* answers the stop cut (sc_http_stop_cut) */
    unsigned stop_failed; /* their writes failed (sc_http_stop_failed) */
    char urlbuf[512]; /* the address, for messages */
};

typedef enum route_kind { R_HEALTHZ, R_METRICS, R_REPORT, R_OP } route_kind;

typedef struct route {
    sc_http *h;
    route_kind kind;
    const char *op; /* R_OP: the wire op (static) */
} route;

/* A request whose head (and body) is in, for a worker of the pool. */
typedef struct job {
    sc_pool_job link;
    route_kind kind; /* R_OP or R_REPORT */
    const char *op;  /* R_OP: the wire op (static) */
    nng_aio *aio;    /* the handler's, finished by whoever runs the job */
    char *body;      /* owned; NULL when there is none */
    size_t len;
} job;

/* The ops POST /v1/<op> serves: every op of docs/PROTOCOL.md. */
const char *const sc_http_ops[] = {
    "ping",    "insert",   "lookup",    "lookup_batch", "insert_batch",
    "delete",  "feedback", "ns_create", "ns_configure", "ns_drop",
    "ns_list", "stats",    "flush",     "report"};
const size_t sc_http_nops = sizeof(sc_http_ops) / sizeof(sc_http_ops[0]);

#define JSON_CTYPE "application/json"
#define PROM_CTYPE "text/plain; version=0.0.4; charset=utf-8"
#define DUMP_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

/* ---- jansson's allocator ---------------------------------------------- */

/* Every allocation of jansson's goes through json_alloc (installed once,
 * before the front's or the proxy's threads use jansson): a failure sets
 * the calling thread's json_oom, which sc_http_json_loadb clears before a
 * parse and reads after it. jansson reports some of a parse's out of
 * memory as bad input (its lexer's: "invalid token near ...", or line -1
 * with no text), so its error code alone cannot tell them apart. A parse
 * with a budget (json_budget, 0 = none) counts what it holds
 * (json_held of what it allocates, less what it frees) in json_used, and
 * an allocation past the budget fails as json_over, never as out of
 * memory. */
static _Thread_local bool json_oom;
static _Thread_local bool json_over;
static _Thread_local size_t json_budget;
static _Thread_local size_t json_used;

static SC_HOOK(bool, (void *, size_t)) json_alloc_hook;

/* What p holds as glibc's malloc counts it (malloc_usable_size: at least
 * 24, 8 short of a multiple of 16), whichever malloc gave it: a
 * sanitizer's answers the size asked for, which would let its builds take
 * bodies that glibc's refuse. Idempotent on glibc's own sizes. */
static size_t json_held(void *p)
{
    size_t u = malloc_usable_size(p);
    u = ((u + 8 + 15) & ~(size_t)15) - 8;
    return u < 24 ? 24 : u;
}

static void *json_alloc(size_t n)
{
    bool (*fail)(void *, size_t) = atomic_load(&json_alloc_hook.fn);
    void *p = fail != NULL && fail(atomic_load(&json_alloc_hook.arg), n)
                  ? NULL
                  : malloc(n);
    if (p == NULL) {
        json_oom = true;
    } else if (json_budget != 0) {
        size_t u = json_held(p);
        if (u > json_budget - json_used) {
            free(p);
            json_over = true;
            return NULL;
        }
        json_used += u;
    }
    return p;
}

static void json_free(void *p)
{
    if (p != NULL && json_budget != 0) {
        /* Something allocated before the parse and freed in it (none of
         * jansson's parser's) must not wrap the count. */
        size_t u = json_held(p);
        json_used = json_used > u ? json_used - u : 0;
    }
    free(p);
}

static pthread_once_t json_alloc_once = PTHREAD_ONCE_INIT;

static void json_alloc_install(void)
{
    json_set_alloc_funcs(json_alloc, json_free);
}

void sc_http_json_init(void)
{
    pthread_once(&json_alloc_once, json_alloc_install);
}

void sc_http_set_json_alloc_hook(bool (*fail)(void *arg, size_t len), void *arg)
{
    sc_http_json_init();
    SC_HOOK_SET(json_alloc_hook, fail, arg);
}

json_t *sc_http_json_loadb_max(const char *buf, size_t n, size_t flags,
                               size_t budget, json_error_t *err, bool *oom,
                               bool *over)
{
    json_error_t e;
    if (err == NULL) {
        err = &e;
    }
    sc_http_json_init();
    json_oom = false;
    json_over = false;
    json_used = 0;
    json_budget = budget;
    json_t *j = json_loadb(buf, n, flags, err);
    json_budget = 0;
    *over = json_over;
    *oom = !json_over &&
           (json_oom ||
            (j == NULL && json_error_code(err) == json_error_out_of_memory));
    if ((*oom || *over) && j != NULL) {
        /* Parsed, but not whole: jansson's lexer does not check its
         * token buffer's growth (lex_save), so a token that needed it
         * comes out one byte short. */
        json_decref(j);
        j = NULL;
    }
    return j;
}

json_t *sc_http_json_loadb(const char *buf, size_t n, size_t flags,
                           json_error_t *err, bool *oom)
{
    bool over;
    return sc_http_json_loadb_max(buf, n, flags, 0, err, oom, &over);
}

/* The text sc_http_json_dumps is making; the first failure is kept and
 * every later write refused. */
typedef struct dump_buf {
    char *p;
    size_t n, cap;
    bool failed;
} dump_buf;

static int dump_write(const char *s, size_t n, void *arg)
{
    dump_buf *b = arg;
    if (!b->failed && b->n + n + 1 > b->cap) {
        json_malloc_t jmalloc;
        json_free_t jfree;
        json_get_alloc_funcs(&jmalloc, &jfree);
        size_t cap = b->cap > 0 ? b->cap : 256;
        while (cap < b->n + n + 1) {
            cap *= 2;
        }
        char *q = jmalloc(cap);
        if (q == NULL) {
            b->failed = true;
        } else {
            if (b->n > 0) {
                memcpy(q, b->p, b->n);
            }
            jfree(b->p);
            b->p = q;
            b->cap = cap;
        }
    }
    if (b->failed) {
        return -1;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

char *sc_http_json_dumps(const json_t *j, size_t flags)
{
    dump_buf b = {NULL, 0, 0, false};
    if (j == NULL || json_dump_callback(j, dump_write, &b, flags) != 0 ||
        b.failed || b.p == NULL) {
        json_free_t jfree;
        json_get_alloc_funcs(NULL, &jfree);
        jfree(b.p);
        return NULL;
    }
    return b.p;
}

bool sc_http_json_set(json_t *o, const char *key, json_t *v, bool *failed)
{
    if (*failed) {
        json_decref(v);
    } else if (json_object_set_new(o, key, v) != 0) {
        *failed = true;
    }
    return !*failed;
}

sc_err sc_http_write_json(FILE *out, const json_t *j)
{
    char *s = sc_http_json_dumps(j, DUMP_FLAGS);
    sc_err rc = s != NULL && fputs(s, out) != EOF && fputc('\n', out) != EOF
                    ? SC_OK
                    : SC_EIO;
    free(s);
    return rc;
}

/* ---- replies --------------------------------------------------------- */

const char *sc_http_reason(uint16_t status)
{
    switch (status) {
    case 413:
        return "Payload Too Large";
    case 422:
        return "Unprocessable Entity";
    case 502:
        return "Bad Gateway";
    default:
        return NULL;
    }
}

/* Finishes the handler's aio with a response. close: the request's body
 * was not read, so the connection cannot carry another request. */
static void reply(nng_aio *aio, uint16_t status, const char *ctype,
                  const void *body, size_t len, bool close)
{
    nng_http_res *res;
    if (nng_http_res_alloc(&res) != 0) {
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    if (nng_http_res_set_status(res, status) != 0 ||
        (sc_http_reason(status) != NULL &&
         nng_http_res_set_reason(res, sc_http_reason(status)) != 0) ||
        nng_http_res_set_header(res, "Content-Type", ctype) != 0 ||
        (close && nng_http_res_set_header(res, "Connection", "close") != 0) ||
        nng_http_res_copy_data(res, body, len) != 0) {
        nng_http_res_free(res);
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

/* What a JSON reply sends: j (consumed) and a newline, malloc'd, or NULL
 * when out of memory. */
static char *json_text(json_t *j, size_t *len)
{
    char *s = sc_http_json_dumps(j, DUMP_FLAGS);
    json_decref(j);
    if (s == NULL) {
        return NULL;
    }
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (t == NULL) {
        free(s);
        return NULL;
    }
    t[n++] = '\n';
    t[n] = '\0';
    *len = n;
    return t;
}

static const char oom_reply[] = "{\"ok\":false,\"error\":{\"code\":"
                                "\"internal\",\"message\":\"out of "
                                "memory\"}}\n";

/* Replies with the JSON value j (consumed) and a newline. */
static void reply_json(nng_aio *aio, uint16_t status, json_t *j, bool close)
{
    size_t n = 0;
    char *s = json_text(j, &n);
    if (s == NULL) {
        reply(aio, 500, JSON_CTYPE, oom_reply, sizeof(oom_reply) - 1, close);
        return;
    }
    reply(aio, status, JSON_CTYPE, s, n, close);
    free(s);
}

/* {"ok": false, "error": {"code", "message"}}, or NULL when out of
 * memory. The message may quote client bytes (jansson's error text does):
 * anything outside printable ASCII becomes '?', so that it is always a
 * valid JSON string. */
static json_t *error_json(const char *code, const char *msg)
{
    char clean[512];
    sc_ascii_clean(clean, sizeof(clean), msg, strlen(msg));
    return json_pack("{s:b,s:{s:s,s:s}}", "ok", 0, "error", "code", code,
                     "message", clean);
}

static void reply_error(nng_aio *aio, uint16_t status, const char *code,
                        const char *msg, bool close)
{
    reply_json(aio, status, error_json(code, msg), close);
}

int sc_http_status_of(const char *code)
{
    static const struct {
        const char *code;
        int status;
    } map[] = {
        {"bad_request", 400},   {"version", 400},     {"unknown_op", 400},
        {"dim", 400},           {"nan", 400},         {"zero_vector", 400},
        {"too_big", 400},       {"range", 400},       {"model_mismatch", 400},
        {"no_namespace", 404},  {"not_found", 404},   {"namespace_exists", 409},
        {"full", 507},          {"no_embedder", 503}, {"internal", 500},
        {"unauthorized", 401},  {"forbidden", 403},   {"io_error", 503},
        {"not_supported", 501}, {"busy", 503},        {"shutting_down", 503},
    };
    for (size_t i = 0; code != NULL && i < sizeof(map) / sizeof(map[0]); i++) {
        if (strcmp(map[i].code, code) == 0) {
            return map[i].status;
        }
    }
    return 500;
}

typedef struct continue_write {
    nng_aio *aio;
    nng_iov iov;
} continue_write;

static void continue_done(void *arg)
{
    continue_write *cw = arg;
    nng_aio_reap(cw->aio); /* freeing it from its own callback would wait */
    free(cw);
}

void sc_http_continue(nng_http_req *req, nng_http_conn *conn)
{
    static char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
    const char *e = nng_http_req_get_header(req, "Expect");
    if (e == NULL || strcasecmp(e, "100-continue") != 0) {
        return;
    }
    continue_write *cw = calloc(1, sizeof(*cw));
    if (cw == NULL || nng_aio_alloc(&cw->aio, continue_done, cw) != 0) {
        free(cw); /* the client sends its body anyway, a second later */
        return;
    }
    cw->iov = (nng_iov){.iov_buf = line, .iov_len = sizeof(line) - 1};
    nng_aio_set_iov(cw->aio, 1, &cw->iov);
    nng_aio_set_timeout(cw->aio, SC_HTTP_BODY_TIMEOUT_MS);
    /* Queued before the final response, which nng writes after it. */
    nng_http_conn_write_all(conn, cw->aio);
}

int sc_http_content_length(const char *v, size_t max, size_t *len)
{
    *len = 0;
    if (v == NULL) {
        return 0;
    }
    while (*v == ' ' || *v == '\t') {
        v++;
    }
    if (*v < '0' || *v > '9') {
        return -1;
    }
    size_t n = 0;
    for (; *v >= '0' && *v <= '9'; v++) {
        if (n > max || n > (SIZE_MAX - 9) / 10) {
            *len = SIZE_MAX; /* over the cap: stop before overflowing */
            return 0;
        }
        n = n * 10 + (size_t)(*v - '0');
    }
    while (*v == ' ' || *v == '\t') {
        v++;
    }
    if (*v != '\0') {
        return -1;
    }
    *len = n > max ? SIZE_MAX : n;
    return 0;
}

/* ---- base64 (RFC 4648, standard alphabet, padded) --------------------- */

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* A malloc'd, NUL-terminated encoding of p[0..n), or NULL. */
static char *b64_encode(const uint8_t *p, size_t n)
{
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
    if (out == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) {
            v |= (uint32_t)p[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= p[i + 2];
        }
        *o++ = b64[(v >> 18) & 63];
        *o++ = b64[(v >> 12) & 63];
        *o++ = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? b64[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

static int b64_val(char c)
{
    const char *p = c != '\0' ? strchr(b64, c) : NULL;
    return p != NULL ? (int)(p - b64) : -1;
}

/* Decodes s[0..n) into out (room for n / 4 * 3 bytes); returns the length,
 * or -1 when s is not strict padded base64. */
static long b64_decode(const char *s, size_t n, uint8_t *out)
{
    if (n % 4 != 0) {
        return -1;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad > 0 || (v[k] = b64_val(s[i + k])) < 0) {
                return -1;
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
                     (uint32_t)v[2] << 6 | (uint32_t)v[3];
        /* Strict: the bits padding leaves over are zero ("QR==" is not
         * "QQ==" written another way). */
        if ((pad == 2 && (w & 0xffff) != 0) || (pad == 1 && (w & 0xff) != 0)) {
            return -1;
        }
        out[o++] = (uint8_t)(w >> 16);
        if (pad < 2) {
            out[o++] = (uint8_t)(w >> 8);
        }
        if (pad < 1) {
            out[o++] = (uint8_t)w;
        }
    }
    return (long)o;
}

/* ---- JSON -> msgpack request ------------------------------------------ */

typedef struct tr_err {
    const char *code;
    char msg[256];
    /* The request's first "vec", "response" or "after" that did not
     * translate (its wire name; NULL: none), sent as nil: its refusal is code
     * and msg when the dispatcher refuses that field (exec_json). */
    const char *field;
} tr_err;

static int tr_fail(tr_err *e, const char *code, const char *msg,
                   const char *key)
{
    e->code = code;
    snprintf(e->msg, sizeof(e->msg), msg, key);
    return -1;
}

static bool key_is(const char *k, size_t kn, const char *name)
{
    return strlen(name) == kn && memcmp(k, name, kn) == 0;
}

static int pack_value(msgpack_packer *pk, const json_t *v, int depth,
                      tr_err *e);

/* "vec": an array of numbers -> bin of little-endian float32. */
static int pack_vec(msgpack_packer *pk, const json_t *v, tr_err *e)
{
    if (!json_is_array(v)) {
        return tr_fail(e, "bad_request",
                       "field 'vec' must be an array of numbers", NULL);
    }
    size_t n = json_array_size(v);
    if (n == 0 || n > SC_INDEX_MAX_DIM) {
        e->code = "bad_request";
        snprintf(e->msg, sizeof(e->msg),
                 "field 'vec' must hold 1..%u numbers (got %zu)",
                 SC_INDEX_MAX_DIM, n);
        return -1;
    }
    float *f = malloc(n * sizeof(float));
    if (f == NULL) {
        return tr_fail(e, "internal", "out of memory", NULL);
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *x = json_array_get(v, i);
        if (!json_is_number(x)) {
            free(f);
            e->code = "bad_request";
            snprintf(e->msg, sizeof(e->msg),
                     "field 'vec' must be an array of numbers (element %zu "
                     "is not)",
                     i);
            return -1;
        }
        double d = json_number_value(x);
        /* Outside float32's range the conversion is undefined behaviour. */
        if (!(fabs(d) <= FLT_MAX)) {
            free(f);
            e->code = "range";
            snprintf(e->msg, sizeof(e->msg),
                     "field 'vec' element %zu is outside the float32 range", i);
            return -1;
        }
        f[i] = (float)d;
    }
    mp_put_vec(pk, f, n);
    free(f);
    return 0;
}

/* Where an object is: the request, a batch item (its fields translated as
 * the request's), or anything else (the value of a field the server does
 * not know, passed through as it is: the dispatcher skips it). */
typedef enum { OBJ_TOP, OBJ_ITEM, OBJ_OTHER } obj_kind;

/* The bytes of field (a string of padded base64, v) packed as a bin, or
 * as a str (which holds any bytes on the wire, JSON's strings only
 * UTF-8). */
static int pack_b64(msgpack_packer *pk, const json_t *v, bool bin,
                    const char *field, tr_err *e)
{
    size_t sn = json_is_string(v) ? json_string_length(v) : 0;
    uint8_t *b = malloc(sn / 4 * 3 + 1);
    long bn = -1;
    if (b == NULL) {
        return tr_fail(e, "internal", "out of memory", NULL);
    }
    if (json_is_string(v)) {
        bn = b64_decode(json_string_value(v), sn, b);
    }
    if (bn < 0) {
        free(b);
        return tr_fail(e, "bad_request",
                       "field '%s' must be a string of padded base64", field);
    }
    if (bin) {
        mp_put_bin(pk, b, (size_t)bn);
    } else {
        mp_put_strn(pk, (const char *)b, (size_t)bn);
    }
    free(b);
    return 0;
}

/* "response": a string -> bin; "response_base64": padded base64 -> bin. */
static int pack_response(msgpack_packer *pk, const json_t *v, bool b64,
                         tr_err *e)
{
    if (!b64) {
        if (!json_is_string(v)) {
            return tr_fail(e, "bad_request",
                           "field 'response' must be a string (binary "
                           "answers: 'response_base64')",
                           NULL);
        }
        mp_put_bin(pk, json_string_value(v), json_string_length(v));
        return 0;
    }
    return pack_b64(pk, v, true, "response_base64", e);
}

/* An object's members; at the top level (op != NULL) "v" (unless given)
 * and "op" (from the path) come first and a body "op" must agree. The
 * request's and each batch item's "vec", "response" and
 * "response_base64", and the request's "after_base64" (a report page's
 * after that is not UTF-8, as a reply's "next_base64" gives it: the
 * wire's "after" str of its bytes) are translated; nil takes the place of a
 * value the translation refuses, so that the dispatcher refuses the request (or
 * the batch item, and does not decode the items after it) where it
 * would on the wire: at its first malformed field, in the body's order.
 * The request's first such field is noted in e (exec_json). */
static int pack_object(msgpack_packer *pk, const json_t *o, const char *op,
                       obj_kind kind, int depth, tr_err *e)
{
    const char *k;
    size_t kn;
    json_t *v;
    size_t n = json_object_size(o);
    bool fields = kind != OBJ_OTHER;
    bool both = fields && json_object_get(o, "response") != NULL &&
                json_object_get(o, "response_base64") != NULL;
    bool both_after = kind == OBJ_TOP && json_object_get(o, "after") != NULL &&
                      json_object_get(o, "after_base64") != NULL;
    if (op != NULL) {
        const json_t *bop = json_object_get(o, "op");
        bool has_v = json_object_get(o, "v") != NULL;
        if (bop != NULL) {
            if (!json_is_string(bop) || strcmp(json_string_value(bop), op)) {
                return tr_fail(e, "bad_request",
                               "field 'op' must be absent or '%s', the op "
                               "the path names",
                               op);
            }
            n--;
        }
        msgpack_pack_map(pk, n + 1 + (has_v ? 0 : 1));
        if (!has_v) {
            mp_put_key(pk, "v");
            msgpack_pack_uint32(pk, SC_PROTO_VERSION);
        }
        mp_put_key(pk, "op");
        mp_put_str(pk, op);
    } else {
        msgpack_pack_map(pk, n);
    }
    json_object_keylen_foreach((json_t *)o, k, kn, v)
    {
        if (op != NULL && key_is(k, kn, "op")) {
            continue;
        }
        bool vec = fields && key_is(k, kn, "vec");
        bool resp = fields && key_is(k, kn, "response");
        bool b64 = fields && key_is(k, kn, "response_base64");
        bool after64 = kind == OBJ_TOP && key_is(k, kn, "after_base64");
        if (after64) {
            mp_put_key(pk, "after");
            tr_err one = {NULL, {0}, NULL};
            int rc =
                both_after
                    ? tr_fail(&one, "bad_request",
                              "give 'after' or 'after_base64', not both", NULL)
                    : pack_b64(pk, v, false, "after_base64", &one);
            if (rc != 0) {
                if (strcmp(one.code, "internal") == 0) {
                    *e = one;
                    return -1;
                }
                if (e->field == NULL) {
                    *e = one;
                    e->field = "after";
                }
                msgpack_pack_nil(pk);
            }
        } else if (vec || resp || b64) {
            /* Both refuse a value before they write any of it. */
            mp_put_key(pk, vec ? "vec" : "response");
            tr_err one = {NULL, {0}, NULL};
            int rc = both  ? tr_fail(&one, "bad_request",
                                     "give 'response' or 'response_base64', "
                                      "not both",
                                     NULL)
                     : vec ? pack_vec(pk, v, &one)
                           : pack_response(pk, v, b64, &one);
            if (rc != 0) {
                if (strcmp(one.code, "internal") == 0) {
                    *e = one;
                    return -1;
                }
                if (kind == OBJ_TOP && e->field == NULL) {
                    *e = one;
                    e->field = vec ? "vec" : "response";
                }
                msgpack_pack_nil(pk);
            }
        } else if (kind == OBJ_TOP && key_is(k, kn, "items") &&
                   json_is_array(v)) {
            /* A batch item's fields are at the depth of the request's
             * own (mp_skip_item). */
            size_t ni = json_array_size(v);
            mp_put_strn(pk, k, kn);
            msgpack_pack_array(pk, ni);
            for (size_t i = 0; i < ni; i++) {
                const json_t *x = json_array_get(v, i);
                int rc = json_is_object(x)
                             ? pack_object(pk, x, NULL, OBJ_ITEM, depth, e)
                             : pack_value(pk, x, depth, e);
                if (rc != 0) {
                    return -1;
                }
            }
        } else {
            mp_put_strn(pk, k, kn);
            if (pack_value(pk, v, depth + 1, e) != 0) {
                return -1;
            }
        }
    }
    return 0;
}

static int pack_value(msgpack_packer *pk, const json_t *v, int depth, tr_err *e)
{
    if (depth > MP_MAX_DEPTH) {
        /* Too deep: the dispatcher refuses any value here (mp_skip), a
         * nil as the rest, so the request (or its batch) is refused where
         * the wire would refuse it, after any field before it. */
        msgpack_pack_nil(pk);
        return 0;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return pack_object(pk, v, NULL, OBJ_OTHER, depth, e);
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        msgpack_pack_array(pk, n);
        for (size_t i = 0; i < n; i++) {
            if (pack_value(pk, json_array_get(v, i), depth + 1, e) != 0) {
                return -1;
            }
        }
        return 0;
    }
    case JSON_STRING:
        mp_put_strn(pk, json_string_value(v), json_string_length(v));
        return 0;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(v));
        return 0;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(v));
        return 0;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        return 0;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        return 0;
    case JSON_NULL:
        msgpack_pack_nil(pk);
        return 0;
    }
    return tr_fail(e, "bad_request", "unsupported JSON value", NULL);
}

/* ---- msgpack reply -> JSON -------------------------------------------- */

/* The shortest decimal that reads back as the same float32, as a double,
 * so that 0.99871f prints as 0.99871 rather than 0.998709976673126. */
static double short_float(double d)
{
    char buf[32];
    for (int p = 6; p <= 9; p++) {
        snprintf(buf, sizeof(buf), "%.*g", p, d);
        double back = strtod(buf, NULL);
        if ((float)back == (float)d) {
            return back;
        }
    }
    return d;
}

/* A str or bin value: a JSON string when it is valid UTF-8, else its
 * base64 (*encoded set: the caller's key gets "_base64"); NULL when out of
 * memory. Checked here, not by json_stringn's NULL, which is out of memory
 * too: a valid string is never sent as base64 for want of memory. */
static json_t *bytes_json(const uint8_t *b, uint32_t n, bool *encoded)
{
    *encoded = !sc_utf8_valid(b, n);
    if (!*encoded) {
        /* jansson's check is sc_utf8's (RFC 3629): done once. */
        return json_stringn_nocheck((const char *)b, n);
    }
    char *enc = b64_encode(b, n);
    json_t *s = enc != NULL ? json_string_nocheck(enc) : NULL;
    free(enc);
    return s;
}

static json_t *mp_json(mp_reader *r, int depth);

static json_t *mp_json_map(mp_reader *r, int depth)
{
    uint32_t n;
    if (mp_read_map(r, &n) != 0) {
        return NULL;
    }
    json_t *o = json_object();
    for (uint32_t i = 0; o != NULL && i < n; i++) {
        const char *k;
        uint32_t kn;
        json_t *v = NULL;
        if (mp_read_str(r, &k, &kn) != 0 || kn > 200) {
            json_decref(o);
            return NULL;
        }
        mp_type t = mp_peek(r);
        if (t == MP_STR || t == MP_BIN) {
            const uint8_t *b;
            uint32_t bn;
            if (mp_read_bytes(r, &b, &bn) != 0) {
                json_decref(o);
                return NULL;
            }
            bool encoded;
            if ((v = bytes_json(b, bn, &encoded)) == NULL) {
                json_decref(o);
                return NULL;
            }
            if (encoded) {
                /* Not UTF-8: "<key>_base64" carries the bytes instead. */
                char key[256];
                snprintf(key, sizeof(key), "%.*s_base64", (int)kn, k);
                if (json_object_set_new(o, key, v) != 0) {
                    json_decref(o);
                    return NULL;
                }
                continue;
            }
        } else if ((v = mp_json(r, depth + 1)) == NULL) {
            json_decref(o);
            return NULL;
        }
        if (json_object_setn_new(o, k, kn, v) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static json_t *mp_json(mp_reader *r, int depth)
{
    if (depth > MP_MAX_DEPTH) {
        return NULL;
    }
    switch (mp_peek(r)) {
    case MP_NIL:
        return mp_read_nil(r) == 0 ? json_null() : NULL;
    case MP_BOOL: {
        bool b;
        return mp_read_bool(r, &b) == 0 ? json_boolean(b) : NULL;
    }
    case MP_UINT: {
        uint64_t u;
        if (mp_read_uint(r, &u) != 0) {
            return NULL;
        }
        return u <= (uint64_t)INT64_MAX ? json_integer((json_int_t)u)
                                        : json_real((double)u);
    }
    case MP_INT: {
        int64_t i;
        return mp_read_int(r, &i) == 0 ? json_integer((json_int_t)i) : NULL;
    }
    case MP_FLOAT: {
        bool f32 = r->p[0] == 0xca;
        double d;
        if (mp_read_number(r, &d) != 0) {
            return NULL;
        }
        if (!isfinite(d)) {
            return json_null();
        }
        return json_real(f32 ? short_float(d) : d);
    }
    case MP_STR:
    case MP_BIN: {
        const uint8_t *b;
        uint32_t n;
        if (mp_read_bytes(r, &b, &n) != 0) {
            return NULL;
        }
        bool encoded; /* in an array: the base64 in the bytes' place */
        return bytes_json(b, n, &encoded);
    }
    case MP_ARRAY: {
        uint32_t n;
        if (mp_read_array(r, &n) != 0) {
            return NULL;
        }
        json_t *a = json_array();
        for (uint32_t i = 0; a != NULL && i < n; i++) {
            json_t *v = mp_json(r, depth + 1);
            if (v == NULL || json_array_append_new(a, v) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case MP_MAP:
        return mp_json_map(r, depth);
    default:
        return NULL;
    }
}

json_t *sc_http_msgpack_json(const uint8_t *buf, size_t len)
{
    mp_reader r;
    mp_reader_init(&r, buf, len);
    return mp_json(&r, 0);
}

/* ---- POST /v1/<op> ----------------------------------------------------- */

bool sc_http_json_containers_over(const char *b, size_t n, size_t cap)
{
    size_t count = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        if (in_str) {
            if (c == '\\') {
                i++; /* the escaped byte, a quote among them */
            } else if (c == '"') {
                in_str = false;
            }
        } else if (c == '"') {
            in_str = true;
        } else if ((c == '{' || c == '[') && ++count > cap) {
            return true;
        }
    }
    return false;
}

/* Runs body[0..n) as a JSON request of op (auth: the request's
 * Authorization header, or NULL) through d. Returns the HTTP status and
 * sets *out to the reply (NULL only when out of memory); *ran is set when
 * the dispatcher answered, the latency then worth recording. */
static int exec_json(sc_dispatch *d, const char *op, const char *body, size_t n,
                     const char *auth, json_t **out, bool *ran)
{
    json_error_t jerr;
    json_t *root = NULL;
    bool oom = false, over = false;
    size_t skip = 0;
    *ran = false;
    while (skip < n && (body[skip] == ' ' || body[skip] == '\t' ||
                        body[skip] == '\r' || body[skip] == '\n')) {
        skip++;
    }
    if (skip == n) {
        root = json_object(); /* no body: no fields (ping, ns_list, ...) */
    } else if (sc_http_json_containers_over(body + skip, n - skip,
                                            SC_HTTP_MAX_CONTAINERS)) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "the body holds more than %u JSON objects and arrays "
                 "(together); a request needs 2 plus 2 per batch item",
                 SC_HTTP_MAX_CONTAINERS);
        *out = error_json("too_big", msg);
        return 413;
    } else if ((root = sc_http_json_loadb_max(body, n, JSON_ALLOW_NUL,
                                              SC_HTTP_PARSE_BUDGET(n), &jerr,
                                              &oom, &over)) == NULL &&
               over) {
        char msg[320];
        snprintf(msg, sizeof(msg),
                 "parsing the body needs more than %zu bytes (%u times its "
                 "size plus %zu MiB): it holds too many small JSON values "
                 "(an empty string costs 25 times its text, a one-digit "
                 "number 16); send vector elements as real numbers, or the "
                 "batch in parts",
                 SC_HTTP_PARSE_BUDGET(n), SC_HTTP_PARSE_FACTOR,
                 SC_HTTP_PARSE_FLOOR >> 20);
        *out = error_json("too_big", msg);
        return 413;
    } else if (root == NULL && !oom) {
        char msg[320];
        snprintf(msg, sizeof(msg), "malformed JSON at line %d, column %d: %s",
                 jerr.line, jerr.column, jerr.text);
        *out = error_json("bad_request", msg);
        return 400;
    }
    if (root == NULL) {
        *out = error_json("internal", "out of memory");
        return 500;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        *out = error_json("bad_request", "the body must be a JSON object");
        return 400;
    }
    /* "Authorization: Bearer KEY" is the request's "key" field (a key in
     * the body wins). Not UTF-8: no key, so the dispatcher refuses it. */
    if (auth != NULL && strncasecmp(auth, "Bearer ", 7) == 0 &&
        json_object_get(root, "key") == NULL) {
        const char *t = auth + 7;
        while (*t == ' ') {
            t++;
        }
        bool failed = false;
        if (!sc_http_json_set(root, "key", json_string(t), &failed)) {
            /* Not sent without it: the dispatcher would refuse it 401. */
            json_decref(root);
            *out = error_json("internal", "out of memory");
            return 500;
        }
    }
    mp_buf sb;
    tr_err e = {NULL, {0}, NULL};
    mp_buf_init(&sb);
    /* Depths count as the dispatcher's skip of a field it does not know
     * counts them on the wire: a top-level field's value is at depth 0,
     * so a body is refused for its nesting exactly when the same request
     * in msgpack would be. */
    int trc = pack_object(&sb.pk, root, op, OBJ_TOP, -1, &e);
    if (trc != 0) {
        mp_buf_fini(&sb);
        *out = error_json(e.code, e.msg);
        /* The id is echoed as the dispatcher would echo it: a uint one
         * only, whatever field the body was refused for. */
        json_t *id = json_object_get(root, "id");
        bool failed = false;
        if (*out != NULL && json_is_integer(id) &&
            json_integer_value(id) >= 0) {
            sc_http_json_set(*out, "id", json_incref(id), &failed);
        }
        json_decref(root);
        if (failed) {
            json_decref(*out);
            *out = error_json("internal", "out of memory");
            return 500;
        }
        return sc_http_status_of(e.code);
    }
    json_decref(root);
    uint8_t *req = NULL, *rep = NULL;
    size_t qlen = 0, rlen = 0;
    int drc = -1;
    if (mp_buf_take(&sb, &req, &qlen) == 0) {
        drc = sc_dispatch_handle(d, req, qlen, &rep, &rlen);
        free(req);
    }
    if (drc != 0 || rep == NULL) {
        free(rep);
        *out = error_json("internal", "out of memory");
        return 500;
    }
    mp_reader r;
    mp_reader_init(&r, rep, rlen);
    json_t *j = mp_json(&r, 1);
    free(rep);
    if (j == NULL || !json_is_object(j)) {
        json_decref(j);
        *out = error_json("internal", "cannot translate the reply");
        return 500;
    }
    int status = 200;
    if (!json_is_true(json_object_get(j, "ok"))) {
        json_t *err = json_object_get(j, "error");
        const char *code = json_string_value(json_object_get(err, "code"));
        const char *msg = json_string_value(json_object_get(err, "message"));
        char want[32];
        snprintf(want, sizeof(want), "field '%s'", e.field ? e.field : "");
        /* Refused at the nil that stands for a field the translation
         * refused (no other field has its name in the message): the
         * translation's error, which says what was wrong in JSON's
         * terms ("range" for an element past float32, say). */
        if (e.field != NULL && code != NULL && msg != NULL &&
            strcmp(code, "bad_request") == 0 &&
            strncmp(msg, want, strlen(want)) == 0) {
            json_t *ne = error_json(e.code, e.msg);
            json_t *ie = json_object_get(ne, "error");
            if (ie == NULL || json_object_set(j, "error", ie) != 0) {
                json_decref(ne);
                json_decref(j);
                *out = error_json("internal", "out of memory");
                return 500;
            }
            json_decref(ne);
            code = e.code;
        }
        status = sc_http_status_of(code);
    }
    *ran = true;
    *out = j;
    return status;
}

int sc_http_exec(sc_dispatch *d, const char *op, const char *body, size_t n,
                 const char *auth, char **out, size_t *out_len)
{
    json_t *j = NULL;
    bool ran;
    int status = exec_json(d, op, body, n, auth, &j, &ran);
    *out = json_text(j, out_len);
    if (*out == NULL) {
        *out_len = sizeof(oom_reply) - 1;
        *out = malloc(sizeof(oom_reply));
        if (*out != NULL) {
            memcpy(*out, oom_reply, sizeof(oom_reply));
        }
        status = 500;
    }
    return status;
}

static void submit(sc_http *h, route_kind kind, const char *op, nng_aio *aio,
                   char *body, size_t len);

/* Runs body[0..n) as a request of op and replies. On a worker. */
static void run_op(sc_http *h, const char *op, nng_aio *aio, const char *body,
                   size_t n)
{
    double t0 = sc_metrics_now();
    const char *auth =
        nng_http_req_get_header(nng_aio_get_input(aio, 0), "Authorization");
    json_t *j = NULL;
    bool ran;
    int status = exec_json(h->dispatch, op, body, n, auth, &j, &ran);
    if (ran) {
        sc_metrics_observe(h->metrics, SC_METRICS_HTTP, op,
                           sc_metrics_now() - t0);
    }
    reply_json(aio, (uint16_t)status, j, false);
}

typedef struct body_read {
    sc_http *h;
    const char *op;
    nng_aio *haio; /* the handler's, finished once the body is in */
    nng_aio *aio;  /* ours, reading the body */
    char *buf;
    size_t len;
} body_read;

static void body_done(void *arg)
{
    body_read *br = arg;
    int rv = nng_aio_result(br->aio);
    if (rv == 0 && nng_aio_count(br->aio) == br->len) {
        submit(br->h, R_OP, br->op, br->haio, br->buf, br->len);
        br->buf = NULL; /* the job's now */
    } else if (rv == NNG_ETIMEDOUT) {
#ifdef SC_NNG_PATCHED
        /* Part of a request came, the rest not in time: 408 and the
         * connection closed (RFC 9110 15.5.9). The patched nng keeps the
         * connection open for it (nng-1.5.2-http-timeout-408.patch). */
        reply_error(br->haio, 408, "bad_request",
                    "the body did not arrive within 10 s of its head", true);
#else
        /* The system's nng closed the connection with the read. */
        nng_aio_finish(br->haio, rv);
#endif
    } else {
        /* Closed: drop the connection, no reply. */
        nng_aio_finish(br->haio, rv != 0 ? rv : NNG_ECLOSED);
    }
    free(br->buf);
    nng_aio_reap(br->aio); /* freeing it from its own callback would wait */
    free(br);
}

/* Media types a JSON body may come with: none, JSON, and what curl -d
 * and the like send by default. */
static bool ctype_ok(const char *ct)
{
    static const char *const ok[] = {"application/json", "text/plain",
                                     "application/x-www-form-urlencoded"};
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t')) {
        n--;
    }
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (strlen(ok[i]) == n && strncasecmp(ct, ok[i], n) == 0) {
            return true;
        }
    }
    return n >= 5 && strncasecmp(ct + n - 5, "+json", 5) == 0;
}

static void handle_op(sc_http *h, const char *op, nng_aio *aio)
{
    nng_http_req *req = nng_aio_get_input(aio, 0);
    nng_http_conn *conn = nng_aio_get_input(aio, 2);
    const char *ct = nng_http_req_get_header(req, "Content-Type");
    const char *cl = nng_http_req_get_header(req, "Content-Length");
    char msg[160];
    if (nng_http_req_get_header(req, "Transfer-Encoding") != NULL) {
        reply_error(aio, 411, "bad_request",
                    "send the body with a Content-Length, not chunked", true);
        return;
    }
    if (ct != NULL && !ctype_ok(ct)) {
        reply_error(aio, 415, "bad_request",
                    "the body must be JSON (Content-Type: application/json)",
                    true);
        return;
    }
    size_t len = 0;
    if (sc_http_content_length(cl, h->body_max, &len) != 0) {
        reply_error(aio, 400, "bad_request", "bad Content-Length", true);
        return;
    }
    if (len > h->body_max) {
        snprintf(msg, sizeof(msg), "the body is over the cap of %zu bytes",
                 h->body_max);
        reply_error(aio, 413, "too_big", msg, true);
        return;
    }
    if (len == 0) {
        submit(h, R_OP, op, aio, NULL, 0);
        return;
    }
    body_read *br = calloc(1, sizeof(*br));
    if (br == NULL || (br->buf = malloc(len)) == NULL ||
        nng_aio_alloc(&br->aio, body_done, br) != 0) {
        if (br != NULL) {
            free(br->buf);
        }
        free(br);
        reply_error(aio, 500, "internal", "out of memory", true);
        return;
    }
    br->h = h;
    br->op = op;
    br->haio = aio;
    br->len = len;
    nng_iov iov = {.iov_buf = br->buf, .iov_len = len};
    nng_aio_set_iov(br->aio, 1, &iov);
    nng_aio_set_timeout(br->aio, SC_HTTP_BODY_TIMEOUT_MS);
    sc_http_continue(req, conn);
    nng_http_conn_read_all(conn, br->aio);
}

/* ---- GET /healthz, /report, /metrics ----------------------------------- */

static void handle_healthz(sc_http *h, nng_aio *aio)
{
    /* A ping through the dispatcher: healthy means requests get answers. */
    static const uint8_t ping[] = {0x82, 0xa1, 'v', 0x01, 0xa2, 'o',
                                   'p',  0xa4, 'p', 'i',  'n',  'g'};
    uint8_t *rep = NULL;
    size_t rlen = 0;
    json_t *j = NULL;
    if (sc_dispatch_handle(h->dispatch, ping, sizeof(ping), &rep, &rlen) == 0) {
        mp_reader r;
        mp_reader_init(&r, rep, rlen);
        j = mp_json(&r, 1);
    }
    free(rep);
    if (j == NULL || !json_is_true(json_object_get(j, "ok"))) {
        json_decref(j);
        reply_error(aio, 503, "internal", "the dispatcher does not answer",
                    false);
        return;
    }
    json_decref(j);
    reply_json(aio, 200,
               json_pack("{s:b,s:s}", "ok", 1, "server", SC_SERVER_NAME),
               false);
}

/* Every namespace's name and stats, in name order; *n of them. */
typedef struct ns_stats {
    char name[SC_CACHE_NS_NAME_MAX + 1];
    sc_cache_stats st;
} ns_stats;

static sc_err collect_stats(sc_cache *c, ns_stats **out, size_t *n)
{
    size_t count = 0;
    sc_err rc = sc_cache_ns_list(c, NULL, 0, &count);
    if (rc != SC_OK) {
        return rc;
    }
    size_t cap = count + 8; /* a few created meanwhile */
    char(*names)[SC_CACHE_NS_NAME_MAX + 1] = malloc(cap * sizeof(*names));
    ns_stats *all = malloc(cap * sizeof(*all));
    if (names == NULL || all == NULL) {
        free(names);
        free(all);
        return SC_ENOMEM;
    }
    if ((rc = sc_cache_ns_list(c, names, cap, &count)) != SC_OK) {
        free(names);
        free(all);
        return rc;
    }
    size_t k = 0;
    for (size_t i = 0; i < count && i < cap; i++) {
        /* Dropped since the list was taken: leave it out. */
        if (sc_cache_stats_get(c, names[i], &all[k].st) == SC_OK) {
            memcpy(all[k].name, names[i], sizeof(all[k].name));
            k++;
        }
    }
    free(names);
    *out = all;
    *n = k;
    return SC_OK;
}

static json_t *stats_json(const sc_cache_stats *s)
{
    json_t *o = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,"
        "s:I,s:I,s:I}",
        "namespaces", (json_int_t)s->namespaces, "lookups",
        (json_int_t)s->lookups, "exact_hits", (json_int_t)s->exact_hits,
        "semantic_hits", (json_int_t)s->semantic_hits, "misses",
        (json_int_t)s->misses, "ambiguous_misses",
        (json_int_t)s->ambiguous_misses, "inserts", (json_int_t)s->inserts,
        "replaced", (json_int_t)s->replaced, "deletes", (json_int_t)s->deletes,
        "expirations", (json_int_t)s->expirations, "evictions",
        (json_int_t)s->evictions, "flushed", (json_int_t)s->flushed,
        "false_hits", (json_int_t)s->false_hits, "quarantined",
        (json_int_t)s->quarantined, "entries", (json_int_t)s->entries, "bytes",
        (json_int_t)s->bytes, "scopes", (json_int_t)s->scopes,
        "ivf_trainings_abandoned", (json_int_t)s->ivf_abandoned,
        "ivf_untrained_capped", (json_int_t)s->ivf_untrained_capped);
    json_t *hist = json_array();
    for (unsigned b = 0; o != NULL && hist != NULL && b < SC_CACHE_HIST_BINS;
         b++) {
        if (s->hist[b] == 0) {
            continue;
        }
        double lo, hi;
        sc_cache_hist_range(b, &lo, &hi);
        json_t *t = isnan(lo)
                        ? json_pack("[n,n,I]", (json_int_t)s->hist[b])
                        : json_pack("[f,f,I]", lo, hi, (json_int_t)s->hist[b]);
        if (t == NULL || json_array_append_new(hist, t) != 0) {
            json_decref(hist);
            hist = NULL;
        }
    }
    if (o == NULL || hist == NULL ||
        json_object_set_new(o, "histogram", hist)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Writes the default report: the cache's statistics. */
static sc_err write_report(sc_http *h, FILE *out)
{
    ns_stats *all = NULL;
    size_t n = 0;
    sc_cache_stats total;
    sc_err rc = sc_cache_stats_get(h->cache, NULL, &total);
    if (rc != SC_OK || (rc = collect_stats(h->cache, &all, &n)) != SC_OK) {
        return rc;
    }
    json_t *nss = json_object();
    for (size_t i = 0; nss != NULL && i < n; i++) {
        json_t *s = stats_json(&all[i].st);
        if (s == NULL || json_object_set_new(nss, all[i].name, s) != 0) {
            json_decref(nss);
            nss = NULL;
        }
    }
    free(all);
    json_t *t = stats_json(&total);
    if (nss == NULL || t == NULL) {
        json_decref(nss);
        json_decref(t);
        return SC_ENOMEM;
    }
    /* "o" steals t and nss, on failure too. */
    json_t *root = json_pack("{s:s,s:o,s:o}", "server", SC_SERVER_NAME, "total",
                             t, "namespaces", nss);
    if (root == NULL) {
        return SC_ENOMEM;
    }
    rc = sc_http_write_json(out, root);
    json_decref(root);
    return rc;
}

/* One per-namespace counter or gauge: its HELP, TYPE and a sample per ns. */
static void prom_family(FILE *out, const char *name, const char *type,
                        const char *help, const ns_stats *all, size_t n,
                        size_t off)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (size_t i = 0; i < n; i++) {
        uint64_t v;
        memcpy(&v, (const char *)&all[i].st + off, sizeof(v));
        fprintf(out, "%s{ns=", name);
        sc_metrics_put_label(out, all[i].name);
        fprintf(out, "} %llu\n", (unsigned long long)v);
    }
}

/* The best-similarity histogram's bucket bounds; each is a bound of the
 * cache's bins (sc_cache_hist_range), so the counts are exact. */
static const double sim_le[] = {0.0,  0.5,  0.6,  0.7,  0.8,  0.85, 0.9,   0.92,
                                0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 1.0};

static void prom_similarity(FILE *out, const ns_stats *all, size_t n)
{
    static const char *name = "semcache_best_similarity";
    fprintf(out,
            "# HELP %s Best similarity a lookup saw, hit or miss (lookups "
            "with no candidate are left out). Buckets count similarities "
            "below le; le=\"1\" includes 1. _sum is within half a bin "
            "(0.0005 above 0.8).\n# TYPE %s histogram\n",
            name, name);
    for (size_t i = 0; i < n; i++) {
        const sc_cache_stats *s = &all[i].st;
        uint64_t cum = 0;
        double sum = 0.0;
        unsigned b = 1;
        for (size_t k = 0; k < sizeof(sim_le) / sizeof(sim_le[0]); k++) {
            for (; b < SC_CACHE_HIST_BINS; b++) {
                double lo, hi;
                sc_cache_hist_range(b, &lo, &hi);
                if (hi > sim_le[k] + 1e-9) {
                    break;
                }
                cum += s->hist[b];
                sum += (double)s->hist[b] * (lo + hi) / 2.0;
            }
            fprintf(out, "%s_bucket{ns=", name);
            sc_metrics_put_label(out, all[i].name);
            fprintf(out, ",le=\"%g\"} %llu\n", sim_le[k],
                    (unsigned long long)cum);
        }
        fprintf(out, "%s_bucket{ns=", name);
        sc_metrics_put_label(out, all[i].name);
        fprintf(out, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        fprintf(out, "%s_sum{ns=", name);
        sc_metrics_put_label(out, all[i].name);
        fprintf(out, "} %.6f\n", sum);
        fprintf(out, "%s_count{ns=", name);
        sc_metrics_put_label(out, all[i].name);
        fprintf(out, "} %llu\n", (unsigned long long)cum);
    }
}

static sc_err write_metrics(sc_http *h, FILE *out)
{
    ns_stats *all = NULL;
    size_t n = 0;
    sc_err rc = collect_stats(h->cache, &all, &n);
    if (rc != SC_OK) {
        return rc;
    }
    fprintf(out,
            "# HELP semcache_namespaces Namespaces the cache holds.\n"
            "# TYPE semcache_namespaces gauge\nsemcache_namespaces %zu\n",
            n);
#define F(name, type, field, help)                                             \
    prom_family(out, name, type, help, all, n, offsetof(sc_cache_stats, field))
    F("semcache_lookups_total", "counter", lookups,
      "Lookups (hits and misses).");
    fprintf(out, "# HELP semcache_hits_total Hits, by layer.\n"
                 "# TYPE semcache_hits_total counter\n");
    for (size_t i = 0; i < n; i++) {
        fputs("semcache_hits_total{ns=", out);
        sc_metrics_put_label(out, all[i].name);
        fprintf(out, ",layer=\"exact\"} %llu\n",
                (unsigned long long)all[i].st.exact_hits);
        fputs("semcache_hits_total{ns=", out);
        sc_metrics_put_label(out, all[i].name);
        fprintf(out, ",layer=\"semantic\"} %llu\n",
                (unsigned long long)all[i].st.semantic_hits);
    }
    F("semcache_misses_total", "counter", misses,
      "Misses, the ambiguous ones included.");
    F("semcache_ambiguous_misses_total", "counter", ambiguous_misses,
      "Misses the margin rule made (a runner-up with another response).");
    F("semcache_inserts_total", "counter", inserts, "Entries inserted.");
    F("semcache_replaced_total", "counter", replaced,
      "Entries replaced by an insert of the same text.");
    F("semcache_deletes_total", "counter", deletes, "Entries deleted.");
    F("semcache_expirations_total", "counter", expirations,
      "Entries expired (TTL).");
    F("semcache_evictions_total", "counter", evictions,
      "Entries evicted by a cap (LRU).");
    F("semcache_flushed_total", "counter", flushed, "Entries flushed.");
    F("semcache_false_hits_total", "counter", false_hits,
      "Entries reported as wrong hits (feedback).");
    F("semcache_quarantined", "gauge", quarantined, "Entries quarantined now.");
    F("semcache_entries", "gauge", entries,
      "Entries held now, quarantined included.");
    F("semcache_bytes", "gauge", bytes, "Approximate bytes the entries use.");
    F("semcache_scopes", "gauge", scopes, "Scopes now.");
    F("semcache_ivf_trainings_abandoned_total", "counter", ivf_abandoned,
      "IVF trainings abandoned: too few live vectors at their copy (the "
      "next trigger tries again).");
    F("semcache_ivf_untrained_capped_scopes", "gauge", ivf_untrained_capped,
      "IVF scopes the namespace's caps keep from training: an insert "
      "evicted their own vectors before their training could begin.");
#undef F
    fprintf(out, "# HELP semcache_no_candidate_lookups_total Lookups that "
                 "found no candidate at all.\n"
                 "# TYPE semcache_no_candidate_lookups_total counter\n");
    for (size_t i = 0; i < n; i++) {
        fputs("semcache_no_candidate_lookups_total{ns=", out);
        sc_metrics_put_label(out, all[i].name);
        fprintf(out, "} %llu\n", (unsigned long long)all[i].st.hist[0]);
    }
    prom_similarity(out, all, n);
    free(all);
    if ((rc = sc_metrics_write(h->metrics, out)) != SC_OK) {
        return rc;
    }
    if (h->metrics_hook != NULL) {
        rc = h->metrics_hook(h->hook_arg, out);
    }
    return rc;
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

int sc_http_query_get(const char *query, const char *name, char *out,
                      size_t cap)
{
    size_t nl = strlen(name);
    for (const char *p = query; p != NULL && *p != '\0';) {
        const char *end = strchr(p, '&');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        if (n > nl && p[nl] == '=' && memcmp(p, name, nl) == 0) {
            size_t o = 0;
            for (size_t i = nl + 1; i < n; i++) {
                int c = (unsigned char)p[i];
                if (c == '+') {
                    c = ' ';
                } else if (c == '%') {
                    int hi = i + 2 < n ? hex_digit(p[i + 1]) : -1;
                    int lo = hi >= 0 ? hex_digit(p[i + 2]) : -1;
                    if (lo < 0 || (hi == 0 && lo == 0)) {
                        return -1;
                    }
                    c = hi * 16 + lo;
                    i += 2;
                }
                if (o + 1 >= cap) {
                    return -1;
                }
                out[o++] = (char)c;
            }
            if (cap == 0) {
                return -1;
            }
            out[o] = '\0';
            return 1;
        }
        p = end != NULL ? end + 1 : NULL;
    }
    return 0;
}

/* Runs write into an in-memory stream and replies with what it wrote.
 * /metrics on nng's thread (it reads counters), /report on a worker. */
static void reply_page(sc_http *h, nng_aio *aio, route_kind kind)
{
    /* Every namespace's figures: with access keys, an admin key's only,
     * given as "Authorization: Bearer KEY" (Prometheus: authorization). */
    const char *auth =
        nng_http_req_get_header(nng_aio_get_input(aio, 0), "Authorization");
    const char *key = NULL;
    if (auth != NULL && strncasecmp(auth, "Bearer ", 7) == 0) {
        key = auth + 7;
        while (*key == ' ') {
            key++;
        }
    }
    sc_dispatch_access acc =
        sc_dispatch_check_admin(h->dispatch, key, key ? strlen(key) : 0);
    if (acc != SC_ACCESS_OK) {
        reply_error(aio, acc == SC_ACCESS_UNAUTHORIZED ? 401 : 403,
                    acc == SC_ACCESS_UNAUTHORIZED ? "unauthorized"
                                                  : "forbidden",
                    acc == SC_ACCESS_UNAUTHORIZED
                        ? "this server has access keys: send an admin key "
                          "as Authorization: Bearer KEY"
                        : "this page spans every namespace: it needs an "
                          "admin key",
                    false);
        return;
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    if (out == NULL) {
        reply_error(aio, 500, "internal", "out of memory", false);
        return;
    }
    sc_err rc;
    if (kind == R_METRICS) {
        rc = write_metrics(h, out);
    } else if (h->report_hook != NULL) {
        const char *uri = nng_http_req_get_uri(nng_aio_get_input(aio, 0));
        const char *q = uri != NULL ? strchr(uri, '?') : NULL;
        rc = h->report_hook(h->hook_arg, q != NULL ? q + 1 : "", out);
    } else {
        rc = write_report(h, out);
    }
    if (ferror(out) && rc == SC_OK) {
        rc = SC_EIO;
    }
    if (fclose(out) != 0 && rc == SC_OK) {
        rc = SC_ENOMEM;
    }
    if (rc != SC_OK && !(rc == SC_EINVAL && kind == R_REPORT)) {
        free(buf);
        reply_error(aio, 500, "internal", sc_strerror(rc), false);
        return;
    }
    /* SC_EINVAL: the report hook refused the query and wrote why. */
    reply(aio, rc == SC_OK ? 200 : 400,
          kind == R_METRICS ? PROM_CTYPE : JSON_CTYPE, buf, len, false);
    free(buf);
}

/* ---- the pool ---------------------------------------------------------- */

/* nng calls handlers on its few system threads (two per CPU, at most 16),
 * which also carry every completion of the nng socket's I/O: a request run
 * there (a big batch to embed takes 100 ms and more) would stall every
 * nng client while semcached's workers sit idle. So a request whose body
 * is in is queued to threads of our own, which finish the handler's aio
 * (nng keeps the connection and its request until then). */

/* Queues the job of aio (body: malloc'd or NULL, owned from now on), or
 * answers 503 when the queue is full or the front is closing. */
static void submit(sc_http *h, route_kind kind, const char *op, nng_aio *aio,
                   char *body, size_t len)
{
    job *jb = malloc(sizeof(*jb));
    if (jb == NULL) {
        free(body);
        reply_error(aio, 500, "internal", "out of memory", false);
        return;
    }
    *jb = (job){{NULL}, kind, op, aio, body, len};
    sc_pool_verdict v = sc_pool_submit(h->pool, &jb->link);
    if (v != SC_POOL_QUEUED) {
        bool closing = v == SC_POOL_STOPPED;
        free(jb->body);
        free(jb);
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "the HTTP front has %u %s waiting already: try again",
                 h->queue_max, sc_plural(h->queue_max, "request", "requests"));
        reply_error(aio, 503, closing ? "shutting_down" : "busy",
                    closing ? "semcached is shutting down" : msg, closing);
    }
}

static void run_job(void *arg, void *local, sc_pool_job *link)
{
    sc_http *h = arg;
    job *jb = SC_POOL_ENTRY(link, job, link);
    (void)local;
    if (jb->kind == R_OP) {
        run_op(h, jb->op, jb->aio, jb->body != NULL ? jb->body : "", jb->len);
    } else {
        reply_page(h, jb->aio, jb->kind);
    }
    free(jb->body);
    free(jb);
}

/* A job still queued when the front closes. */
static void refuse_job(void *arg, sc_pool_job *link)
{
    job *jb = SC_POOL_ENTRY(link, job, link);
    (void)arg;
    reply_error(jb->aio, 503, "shutting_down", "semcached is shutting down",
                true);
    free(jb->body);
    free(jb);
}

void sc_http_pool_counts(sc_http *h, unsigned *queued, unsigned *running,
                         uint64_t *refused)
{
    sc_pool_counts(h->pool, queued, running, refused);
}

/* ---- the server ------------------------------------------------------- */

static void on_request(nng_aio *aio)
{
    nng_http_handler *hd = nng_aio_get_input(aio, 1);
    route *rt = nng_http_handler_get_data(hd);
    switch (rt->kind) {
    case R_HEALTHZ:
        handle_healthz(rt->h, aio);
        break;
    case R_METRICS:
        reply_page(rt->h, aio, rt->kind);
        break;
    case R_REPORT:
        submit(rt->h, R_REPORT, NULL, aio, NULL, 0);
        break;
    case R_OP:
        handle_op(rt->h, rt->op, aio);
        break;
    }
}

static void route_free(void *arg)
{
    route *rt = arg;
    sc_http *h = rt->h;
    free(rt);
    pthread_mutex_lock(&h->mu);
    h->live--;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static sc_err add_route(sc_http *h, const char *path, route_kind kind,
                        const char *op)
{
    nng_http_handler *hd;
    route *rt = malloc(sizeof(*rt));
    if (rt == NULL) {
        return SC_ENOMEM;
    }
    rt->h = h;
    rt->kind = kind;
    rt->op = op;
    if (nng_http_handler_alloc(&hd, path, on_request) != 0) {
        free(rt);
        return SC_ENOMEM;
    }
    if (nng_http_handler_set_data(hd, rt, route_free) != 0) {
        free(rt);
        nng_http_handler_free(hd);
        return SC_ENOMEM;
    }
    pthread_mutex_lock(&h->mu);
    h->live++;
    pthread_mutex_unlock(&h->mu);
    /* GETs take no body (nng answers 400 to one); POST bodies we read
     * ourselves, after checking their length. */
    int rv = kind == R_OP ? nng_http_handler_set_method(hd, "POST") : 0;
    if (rv == 0) {
        rv = nng_http_handler_collect_body(hd, kind != R_OP, 0);
    }
    if (rv == 0) {
        rv = nng_http_server_add_handler(h->srv, hd);
    }
    if (rv != 0) {
        nng_http_handler_free(hd); /* runs route_free */
        if (rv == NNG_EADDRINUSE) {
            fprintf(stderr, "semcached: %s is already served here\n", path);
            return SC_EIO;
        }
        return rv == NNG_ENOMEM ? SC_ENOMEM : SC_EINVAL;
    }
    return SC_OK;
}

/* Waits until nng has let go of every route, so that none runs after;
 * false when that took longer than seconds (0 = no limit). */
static bool wait_routes(sc_http *h, int seconds)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += seconds;
    pthread_mutex_lock(&h->mu);
    int rv = 0;
    while (h->live > 0 && rv == 0) {
        rv = seconds > 0 ? pthread_cond_timedwait(&h->cv, &h->mu, &until)
                         : pthread_cond_wait(&h->cv, &h->mu);
    }
    bool done = h->live == 0;
    pthread_mutex_unlock(&h->mu);
    return done;
}

static void http_free(sc_http *h)
{
    if (h->own_metrics) {
        sc_metrics_close(h->metrics);
    }
    sc_pool_close(h->pool);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* Parses "HOST:PORT" or "http://HOST:PORT" (a "/" after the port
 * allowed) into *url, the caller's (nng_url_free), writing the URL into
 * urlbuf (512 bytes). SC_EINVAL for any other form, a port left out (nng
 * would take 80), 0 or over 65535. */
static sc_err parse_addr(const char *a, char urlbuf[512], nng_url **url)
{
    int un = strncmp(a, "http://", 7) == 0
                 ? snprintf(urlbuf, 512, "%s", a)
                 : snprintf(urlbuf, 512, "http://%s", a);
    if (un < 0 || un >= 512) {
        return SC_EINVAL;
    }
    /* The port must be written out: nng would take 80 for none. */
    const char *hp = urlbuf + 7, *colon = strrchr(hp, ':');
    if (colon == NULL || strchr(colon, ']') != NULL) {
        return SC_EINVAL;
    }
    size_t digits = strspn(colon + 1, "0123456789");
    const char *after = colon + 1 + digits; /* nothing, or one "/" */
    if (digits == 0 || digits > 5 || atoi(colon + 1) > 65535 ||
        (after[0] != '\0' && strcmp(after, "/") != 0)) {
        return SC_EINVAL;
    }
    if (nng_url_parse(url, urlbuf) != 0) {
        return SC_EINVAL;
    }
    if ((*url)->u_hostname == NULL || (*url)->u_hostname[0] == '\0' ||
        (*url)->u_port == NULL || atoi((*url)->u_port) <= 0 ||
        ((*url)->u_path != NULL && (*url)->u_path[0] != '\0' &&
         strcmp((*url)->u_path, "/") != 0)) {
        nng_url_free(*url);
        return SC_EINVAL;
    }
    return SC_OK;
}

sc_err sc_http_addr_check(const char *addr)
{
    char urlbuf[512];
    nng_url *url;
    if (addr == NULL || parse_addr(addr, urlbuf, &url) != SC_OK) {
        return SC_EINVAL;
    }
    nng_url_free(url);
    return SC_OK;
}

sc_err sc_http_open(const sc_http_config *cfg, sc_http **out)
{
    if (cfg == NULL || out == NULL || cfg->addr == NULL ||
        cfg->dispatch == NULL || cfg->cache == NULL ||
        cfg->workers > SC_HTTP_MAX_WORKERS ||
        cfg->queue_max > SC_HTTP_MAX_QUEUE) {
        return SC_EINVAL;
    }
    sc_http_json_init();
    char urlbuf[512];
    nng_url *url;
    if (parse_addr(cfg->addr, urlbuf, &url) != SC_OK) {
        return SC_EINVAL;
    }
    sc_http *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        nng_url_free(url);
        return SC_ENOMEM;
    }
    h->dispatch = cfg->dispatch;
    h->cache = cfg->cache;
    h->body_max = cfg->body_max != 0 ? cfg->body_max : SC_HTTP_DEFAULT_BODY_MAX;
    h->metrics_hook = cfg->metrics_hook;
    h->report_hook = cfg->report_hook;
    h->hook_arg = cfg->hook_arg;
    h->queue_max = cfg->queue_max != 0 ? cfg->queue_max : SC_HTTP_DEFAULT_QUEUE;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    sc_pool_config pc = {
        .threads = cfg->workers != 0 ? cfg->workers : SC_HTTP_DEFAULT_WORKERS,
        .queue_max = h->queue_max,
        .run = run_job,
        .refuse = refuse_job,
        .arg = h,
    };
    sc_err rc = sc_pool_open(&pc, &h->pool);
    if (rc != SC_OK) {
        goto fail_pool;
    }
    if (cfg->metrics != NULL) {
        h->metrics = cfg->metrics;
    } else if ((rc = sc_metrics_open(&h->metrics)) != SC_OK) {
        goto fail_metrics;
    } else {
        h->own_metrics = true;
    }
    if (nng_http_server_hold(&h->srv, url) != 0) {
        rc = SC_EIO;
        goto fail_hold;
    }
#ifdef SC_NNG_PATCHED
    /* Connections that never send a whole request (a client gone without a
     * FIN, or one holding descriptors on purpose) are closed, and so are
     * keep-alive connections idle that long after their last answer. */
    unsigned read_ms = cfg->read_timeout_ms != 0
                           ? cfg->read_timeout_ms
                           : SC_HTTP_DEFAULT_READ_TIMEOUT_MS;
    nng_http_server_set_read_timeout(
        h->srv, read_ms > INT32_MAX ? INT32_MAX : (nng_duration)read_ms);
    /* Nor one that stops reading its answer (a knob of its own: a slow
     * reader of big answers may need more than a head does). */
    unsigned write_ms = cfg->write_timeout_ms != 0
                            ? cfg->write_timeout_ms
                            : SC_HTTP_DEFAULT_WRITE_TIMEOUT_MS;
    nng_http_server_set_write_timeout(
        h->srv, write_ms > INT32_MAX ? INT32_MAX : (nng_duration)write_ms);
    /* A stop lets the answers under way out, for a short time only. */
    h->grace_ms =
        cfg->stop_grace_ms != 0 ? cfg->stop_grace_ms : SC_HTTP_STOP_GRACE_MS;
    nng_http_server_set_stop_grace(h->srv, h->grace_ms > INT32_MAX
                                               ? INT32_MAX
                                               : (nng_duration)h->grace_ms);
    /* And HTTP clients alone cannot take every descriptor. */
    unsigned max_conns =
        cfg->max_conns != 0 ? cfg->max_conns : SC_HTTP_DEFAULT_MAX_CONNS;
    nng_http_server_set_max_conns(
        h->srv, max_conns > INT32_MAX ? INT32_MAX : (int)max_conns);
#endif
    if ((rc = add_route(h, "/healthz", R_HEALTHZ, NULL)) != SC_OK ||
        (rc = add_route(h, "/metrics", R_METRICS, NULL)) != SC_OK ||
        (rc = add_route(h, "/report", R_REPORT, NULL)) != SC_OK) {
        goto fail_routes;
    }
    for (size_t i = 0; i < sc_http_nops; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/v1/%s", sc_http_ops[i]);
        if ((rc = add_route(h, path, R_OP, sc_http_ops[i])) != SC_OK) {
            goto fail_routes;
        }
    }
    snprintf(h->urlbuf, sizeof(h->urlbuf), "%s", urlbuf);
    if (!cfg->start_later && (rc = sc_http_start(h)) != SC_OK) {
        goto fail_routes;
    }
    nng_url_free(url);
    *out = h;
    return SC_OK;

fail_routes:
    nng_http_server_release(h->srv); /* frees the routes added */
    (void)wait_routes(h, 0);
fail_hold:
    if (h->own_metrics) {
        sc_metrics_close(h->metrics);
        h->own_metrics = false;
    }
fail_metrics:
    sc_pool_close(h->pool); /* no route left: nothing was queued */
fail_pool:
    nng_url_free(url);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
    return rc;
}

sc_err sc_http_start(sc_http *h)
{
    if (h->started) {
        return SC_OK;
    }
    int rv = nng_http_server_start(h->srv);
    if (rv != 0) {
        fprintf(stderr, "semcached: cannot listen on %s: %s\n", h->urlbuf,
                nng_strerror(rv));
        return SC_EIO;
    }
    h->started = true;
    return SC_OK;
}

void sc_http_stop(sc_http *h)
{
    if (h->stopped) {
        return;
    }
    h->stopped = true;
    /* First, so that nng's stop (which waits for every connection, and so
     * for each handler's aio) finds no job queued behind a running one. */
    sc_pool_stop(h->pool);
    if (h->started) {
        /* nng counts starts: one not made must not be stopped. */
        nng_http_server_stop(h->srv);
#ifdef SC_NNG_PATCHED
        /* The proxy's answers are counted too when it shares srv (its
         * stop, sc_proxy_close, comes first and leaves the real one to
         * this last start). */
        int cut = 0;
        if (nng_http_server_get_stop_cut(h->srv, &cut) == 0 && cut > 0) {
            h->stop_cut = (unsigned)cut;
        }
        int failed = 0;
        if (nng_http_server_get_stop_failed(h->srv, &failed) == 0 &&
            failed > 0) {
            h->stop_failed = (unsigned)failed;
        }
#endif
    }
}

bool sc_http_end_grace(sc_http *h)
{
#ifdef SC_NNG_PATCHED
    return nng_http_server_end_stop_grace(h->srv) == 0;
#else
    (void)h; /* the system's nng stops at once: no grace to end */
    return false;
#endif
}

unsigned sc_http_stop_cut(const sc_http *h)
{
    return h->stop_cut;
}

unsigned sc_http_stop_failed(const sc_http *h)
{
    return h->stop_failed;
}

unsigned sc_http_stop_grace_ms(const sc_http *h)
{
    return h->grace_ms;
}

void sc_http_close(sc_http *h)
{
    if (h == NULL) {
        return;
    }
    sc_http_stop(h);
    nng_http_server_release(h->srv);
    if (!wait_routes(h, 10)) {
        /* nng 1.5.2 unpatched can keep a route for good when a request
         * arrives as the server stops (scripts/patches: http-stop-handler-
         * ref): h is left to it, and the shutdown goes on. */
        fprintf(stderr, "semcached: the HTTP front did not let go of a "
                        "route in 10 s; shutting down without it\n");
        return;
    }
    http_free(h);
}

sc_metrics *sc_http_metrics(sc_http *h)
{
    return h->metrics;
}
