/* dispatch.c - request decoding, validation and execution (dispatch.h).
 * Fields are read with the bounded reader of mp.h; a batch is decoded and
 * executed one item at a time, so its memory does not grow with what the
 * message claims. */
#define _GNU_SOURCE /* explicit_bzero */
#include "proto/dispatch.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sc_vec.h"
#include "proto/mp.h"

struct sc_dispatch {
    sc_cache *cache;
    const sc_cost_target *targets; /* borrowed */
    size_t ntargets;
    sc_ledger *ledger; /* NULL = no report */
    const sc_prices *prices;
    sc_dispatch_counts counts;
    /* The access keys in force (NULL = none: open), and the lock that
     * guards the pointer and every set's reference count. */
    struct keyset *ks;
    pthread_mutex_t ks_mu;
    char embed_hint[256]; /* how to get the embedder, for no_embedder */
};

/* One request's (or one batch item's) fields. */
typedef struct item {
    char ns[SC_CACHE_NS_NAME_MAX + 1];
    char scope[SC_CACHE_SCOPE_MAX + 1];
    char model[SC_CACHE_TAG_MAX + 1];
    char feature[SC_CACHE_TAG_MAX + 1];
    char user[SC_CACHE_TAG_MAX + 1];
    char embed_model[SC_CACHE_TAG_MAX + 1];
    char storage[16];
    char backend[16]; /* ns_create: index backend, nlist, nprobe, train_min */
    bool has_backend, has_nlist, has_nprobe, has_train_min;
    uint64_t nlist, nprobe, train_min;
    char ttl_mode[16];
    bool has_ns, has_scope, has_text, has_vec, has_response, has_ttl,
        has_threshold, has_entry, has_dim, has_storage, has_margin,
        has_ttl_mode, has_max_entries, has_max_bytes, has_max_response,
        has_embed_model, has_feature, has_user, has_by, has_vote, vote,
        has_after, has_limit;
    char by[16];
    char after[SC_CACHE_TAG_MAX + 1]; /* report: the page's start */
    uint64_t limit;                   /* report: rows in the page */
    const char *text;
    uint32_t text_len;
    float vec[SC_INDEX_MAX_DIM];
    uint32_t dim;
    const uint8_t *response;
    uint32_t response_len;
    double ttl;
    double threshold;
    double margin;
    uint64_t entry, input_tokens, output_tokens, embed_tokens;
    uint64_t dimcfg, max_entries, max_bytes, max_response;
} item;

/* Error state while decoding: the wire code and a message naming the
 * field. */
typedef struct err {
    const char *code;
    char msg[160];
} err;

static int fail(err *e, const char *code, const char *fmt, ...)
{
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return -1;
}

const char *sc_dispatch_errcode(sc_err e)
{
    switch (e) {
    case SC_OK:
        return "ok";
    case SC_EDIM:
        return "dim";
    case SC_EZEROVEC:
        return "zero_vector";
    case SC_ENONFINITE:
        return "nan";
    case SC_ENOTFOUND:
        return "not_found";
    case SC_ERANGE:
        return "range";
    case SC_ENONS:
        return "no_namespace";
    case SC_ENSEXIST:
        return "namespace_exists";
    case SC_ENSFULL:
    case SC_ESCOPEFULL:
    case SC_EFULL:
        return "full";
    case SC_ETOOBIG:
        return "too_big";
    case SC_EMODEL:
        return "model_mismatch";
    case SC_ENOEMBED:
        return "no_embedder";
    case SC_EIO:
        return "io_error";
    case SC_EINVAL:
    case SC_EEXIST:
        return "bad_request";
    default:
        return "internal";
    }
}

sc_err sc_dispatch_open(sc_cache *cache, sc_dispatch **out)
{
    sc_dispatch *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        return SC_ENOMEM;
    }
    pthread_mutex_init(&d->ks_mu, NULL);
    d->cache = cache;
    sc_dispatch_set_embed_hint(d, NULL);
    *out = d;
    return SC_OK;
}

void sc_dispatch_set_ledger(sc_dispatch *d, sc_ledger *ledger,
                            const sc_prices *prices)
{
    d->ledger = ledger;
    d->prices = prices;
}

void sc_dispatch_set_cost_targets(sc_dispatch *d, const sc_cost_target *t,
                                  size_t n)
{
    d->targets = t;
    d->ntargets = n;
}

void sc_dispatch_set_embed_hint(sc_dispatch *d, const char *path)
{
    if (path == NULL) {
        snprintf(d->embed_hint, sizeof(d->embed_hint),
                 "no embedder is loaded: send 'vec', or make the embedder's "
                 "table with scripts/fetch-embeddings.sh (README)");
    } else if (snprintf(d->embed_hint, sizeof(d->embed_hint),
                        "no embedder is loaded: send 'vec', or make its "
                        "table with scripts/fetch-embeddings.sh %s and "
                        "restart",
                        path) >= (int)sizeof(d->embed_hint)) {
        /* Never a path cut short: a command that makes the table where
         * the server does not look for it. */
        snprintf(d->embed_hint, sizeof(d->embed_hint),
                 "no embedder is loaded: send 'vec', or make its table with "
                 "scripts/fetch-embeddings.sh at the path the server's "
                 "start-up log names, and restart");
    }
}

static void ks_release(sc_dispatch *d, struct keyset *ks);

void sc_dispatch_close(sc_dispatch *d)
{
    if (d == NULL) {
        return;
    }
    ks_release(d, d->ks); /* the dispatcher's own reference */
    pthread_mutex_destroy(&d->ks_mu);
    free(d);
}

void sc_dispatch_get_counts(sc_dispatch *d, sc_dispatch_counts *out)
{
    out->requests = __atomic_load_n(&d->counts.requests, __ATOMIC_RELAXED);
    out->bad_requests =
        __atomic_load_n(&d->counts.bad_requests, __ATOMIC_RELAXED);
    out->errors = __atomic_load_n(&d->counts.errors, __ATOMIC_RELAXED);
    out->unauthorized =
        __atomic_load_n(&d->counts.unauthorized, __ATOMIC_RELAXED);
    out->forbidden = __atomic_load_n(&d->counts.forbidden, __ATOMIC_RELAXED);
}

/* ---- access keys ---------------------------------------------------- */

/* A set of keys in force. A request holds a reference for as long as it
 * uses a key of the set (its grants), so that a set replaced meanwhile is
 * released only when the last request using it is done. */
typedef struct keyset {
    const sc_key *keys; /* keys[0..n), n > 0 */
    size_t n;
    unsigned refs;              /* under ks_mu */
    void (*release)(void *ctx); /* frees keys; NULL = borrowed */
    void *ctx;
} keyset;

/* The keys in force, with a reference (NULL: none, every request is
 * served). */
static keyset *ks_acquire(sc_dispatch *d)
{
    pthread_mutex_lock(&d->ks_mu);
    keyset *ks = d->ks;
    if (ks != NULL) {
        ks->refs++;
    }
    pthread_mutex_unlock(&d->ks_mu);
    return ks;
}

static void ks_release(sc_dispatch *d, keyset *ks)
{
    if (ks == NULL) {
        return;
    }
    pthread_mutex_lock(&d->ks_mu);
    bool last = --ks->refs == 0;
    pthread_mutex_unlock(&d->ks_mu);
    if (last) {
        if (ks->release != NULL) {
            ks->release(ks->ctx);
        }
        free(ks);
    }
}

sc_err sc_dispatch_replace_keys(sc_dispatch *d, const sc_key *keys, size_t n,
                                void (*release)(void *ctx), void *ctx)
{
    keyset *ks = NULL;
    if (n > 0) {
        if ((ks = calloc(1, sizeof(*ks))) == NULL) {
            return SC_ENOMEM;
        }
        *ks = (keyset){keys, n, 1, release, ctx};
    } else if (release != NULL) {
        release(ctx); /* nothing to keep */
    }
    pthread_mutex_lock(&d->ks_mu);
    keyset *old = d->ks;
    d->ks = ks;
    pthread_mutex_unlock(&d->ks_mu);
    ks_release(d, old); /* the dispatcher's reference to the old set */
    return SC_OK;
}

sc_err sc_dispatch_set_keys(sc_dispatch *d, const sc_key *keys, size_t n)
{
    return sc_dispatch_replace_keys(d, keys, n, NULL, NULL);
}

/* The key of ks equal to k[0..n), or NULL. Every key is compared over all
 * SC_KEY_MAX bytes, with no branch on the data and no early exit, so the
 * time taken depends on the number of keys only. */
static const sc_key *find_key(const keyset *ks, const uint8_t *k, uint32_t n)
{
    uint8_t pad[SC_KEY_MAX];
    memset(pad, 0, sizeof(pad));
    memcpy(pad, k, n <= SC_KEY_MAX ? n : 0); /* too long: matches none */
    uintptr_t found = 0;
    for (size_t i = 0; i < ks->n; i++) {
        const sc_key *key = &ks->keys[i];
        uint32_t acc = key->len ^ n;
        for (size_t j = 0; j < SC_KEY_MAX; j++) {
            acc |= (uint32_t)(key->secret[j] ^ pad[j]);
        }
        /* mask = all ones when acc == 0, else 0. */
        uintptr_t mask =
            (uintptr_t)0 - (uintptr_t)(((acc | (0u - acc)) >> 31) ^ 1u);
        found = (found & ~mask) | ((uintptr_t)key & mask);
    }
    explicit_bzero(pad, sizeof(pad));
    return (const sc_key *)found;
}

/* Whether key (NULL = no keys are checked) may read, or write, ns. */
static bool ns_allowed(const sc_key *key, const char *ns, bool write)
{
    if (key == NULL || key->admin) {
        return true;
    }
    for (size_t i = 0; i < key->ngrants; i++) {
        const sc_key_grant *g = &key->grants[i];
        if (write && !g->write) {
            continue;
        }
        if (g->prefix ? strncmp(ns, g->pattern, strlen(g->pattern)) == 0
                      : strcmp(ns, g->pattern) == 0) {
            return true;
        }
    }
    return false;
}

/* The configured key key[0..n) is (d has keys), or NULL, counted as an
 * unauthorized request when count. */
static const sc_key *known_key(sc_dispatch *d, const keyset *ks,
                               const char *key, size_t n, bool count)
{
    const sc_key *k = key != NULL && n <= UINT32_MAX
                          ? find_key(ks, (const uint8_t *)key, (uint32_t)n)
                          : NULL;
    if (k == NULL && count) {
        __atomic_add_fetch(&d->counts.unauthorized, 1, __ATOMIC_RELAXED);
    }
    return k;
}

/* What key[0..n) may do: read (or write) ns, or, with ns NULL, what only
 * an admin key may. Refusals are counted when count. */
static sc_dispatch_access check_access(sc_dispatch *d, const char *key,
                                       size_t n, const char *ns, bool write,
                                       bool count)
{
    keyset *ks = ks_acquire(d);
    sc_dispatch_access a = SC_ACCESS_OK;
    if (ks != NULL) {
        const sc_key *k = known_key(d, ks, key, n, count);
        if (k == NULL) {
            a = SC_ACCESS_UNAUTHORIZED;
        } else if (ns != NULL ? !ns_allowed(k, ns, write) : !k->admin) {
            if (count) {
                __atomic_add_fetch(&d->counts.forbidden, 1, __ATOMIC_RELAXED);
            }
            a = SC_ACCESS_FORBIDDEN;
        }
    }
    ks_release(d, ks);
    return a;
}

sc_dispatch_access sc_dispatch_check_key(sc_dispatch *d, const char *key,
                                         size_t n, const char *ns, bool write)
{
    return check_access(d, key, n, ns != NULL ? ns : "", write, true);
}

bool sc_dispatch_may_write(sc_dispatch *d, const char *key, size_t n,
                           const char *ns)
{
    return check_access(d, key, n, ns != NULL ? ns : "", true, false) ==
           SC_ACCESS_OK;
}

sc_dispatch_access sc_dispatch_check_admin(sc_dispatch *d, const char *key,
                                           size_t n)
{
    return check_access(d, key, n, NULL, false, true);
}

/* ---- decoding ------------------------------------------------------- */

static int key_is(const char *k, uint32_t n, const char *want)
{
    return strlen(want) == n && memcmp(k, want, n) == 0;
}

/* A string field that fits in out[cap]. A field that takes one of a few
 * words (word: storage, backend, ttl_mode, by) calls a string too long
 * for any of them a bad value, as a short wrong one is (bad_request), not
 * a string over a cap (too_big). */
static int get_cstr(mp_reader *r, const char *key, char *out, size_t cap,
                    bool *has, bool word, err *e)
{
    int rc = mp_read_cstr(r, out, cap);
    if (rc == -1) {
        return fail(e, "bad_request", "field '%s' must be a string", key);
    }
    if (rc == -2 && word) {
        return fail(e, "bad_request", "field '%s' is not one of its values",
                    key);
    }
    if (rc == -2) {
        return fail(e, "too_big",
                    "field '%s' is longer than %zu bytes or "
                    "holds a NUL byte",
                    key, cap - 1);
    }
    *has = true;
    return 0;
}

static int get_uint(mp_reader *r, const char *key, uint64_t *out, bool *has,
                    err *e)
{
    if (mp_read_uint(r, out) != 0) {
        return fail(e, "bad_request",
                    "field '%s' must be a non-negative integer", key);
    }
    if (has != NULL) {
        *has = true;
    }
    return 0;
}

static int get_number(mp_reader *r, const char *key, double *out, bool *has,
                      err *e)
{
    if (mp_read_number(r, out) != 0) {
        return fail(e, "bad_request", "field '%s' must be a number", key);
    }
    if (!isfinite(*out)) {
        return fail(e, "nan", "field '%s' is NaN or infinite", key);
    }
    *has = true;
    return 0;
}

/* Reads the fields of one map (the request, or one batch item) into it.
 * Keys it does not know are skipped: newer clients may send more. */
static int parse_fields(mp_reader *r, uint32_t nkeys, item *it, err *e)
{
    for (uint32_t i = 0; i < nkeys; i++) {
        const char *k;
        uint32_t kn;
        if (mp_read_str(r, &k, &kn) != 0) {
            return fail(e, "bad_request", "map keys must be strings");
        }
        int rc = 0;
        if (key_is(k, kn, "ns")) {
            rc = get_cstr(r, "ns", it->ns, sizeof(it->ns), &it->has_ns, false,
                          e);
        } else if (key_is(k, kn, "scope")) {
            rc = get_cstr(r, "scope", it->scope, sizeof(it->scope),
                          &it->has_scope, false, e);
        } else if (key_is(k, kn, "model")) {
            bool h;
            rc = get_cstr(r, "model", it->model, sizeof(it->model), &h, false,
                          e);
        } else if (key_is(k, kn, "feature")) {
            rc = get_cstr(r, "feature", it->feature, sizeof(it->feature),
                          &it->has_feature, false, e);
        } else if (key_is(k, kn, "user")) {
            rc = get_cstr(r, "user", it->user, sizeof(it->user), &it->has_user,
                          false, e);
        } else if (key_is(k, kn, "vote")) {
            if (mp_read_bool(r, &it->vote) != 0) {
                return fail(e, "bad_request", "field 'vote' must be a bool");
            }
            it->has_vote = true;
        } else if (key_is(k, kn, "by")) {
            rc =
                get_cstr(r, "by", it->by, sizeof(it->by), &it->has_by, true, e);
        } else if (key_is(k, kn, "after")) {
            rc = get_cstr(r, "after", it->after, sizeof(it->after),
                          &it->has_after, false, e);
        } else if (key_is(k, kn, "limit")) {
            rc = get_uint(r, "limit", &it->limit, &it->has_limit, e);
        } else if (key_is(k, kn, "embed_tokens")) {
            rc = get_uint(r, "embed_tokens", &it->embed_tokens, NULL, e);
        } else if (key_is(k, kn, "embed_model")) {
            rc = get_cstr(r, "embed_model", it->embed_model,
                          sizeof(it->embed_model), &it->has_embed_model, false,
                          e);
        } else if (key_is(k, kn, "backend")) {
            rc = get_cstr(r, "backend", it->backend, sizeof(it->backend),
                          &it->has_backend, true, e);
        } else if (key_is(k, kn, "nlist")) {
            rc = get_uint(r, "nlist", &it->nlist, &it->has_nlist, e);
        } else if (key_is(k, kn, "nprobe")) {
            rc = get_uint(r, "nprobe", &it->nprobe, &it->has_nprobe, e);
        } else if (key_is(k, kn, "train_min")) {
            rc =
                get_uint(r, "train_min", &it->train_min, &it->has_train_min, e);
        } else if (key_is(k, kn, "storage")) {
            rc = get_cstr(r, "storage", it->storage, sizeof(it->storage),
                          &it->has_storage, true, e);
        } else if (key_is(k, kn, "ttl_mode")) {
            rc = get_cstr(r, "ttl_mode", it->ttl_mode, sizeof(it->ttl_mode),
                          &it->has_ttl_mode, true, e);
        } else if (key_is(k, kn, "text")) {
            if (mp_read_str(r, &it->text, &it->text_len) != 0) {
                return fail(e, "bad_request", "field 'text' must be a string");
            }
            if (it->text_len > SC_CACHE_TEXT_MAX) {
                return fail(e, "too_big", "field 'text' is over %u bytes",
                            SC_CACHE_TEXT_MAX);
            }
            it->has_text = true;
        } else if (key_is(k, kn, "vec")) {
            const uint8_t *b;
            uint32_t n;
            if (mp_read_bin(r, &b, &n) != 0) {
                return fail(e, "bad_request",
                            "field 'vec' must be bin "
                            "(little-endian float32)");
            }
            if (n == 0 || n % 4 != 0 || n / 4 > SC_INDEX_MAX_DIM) {
                return fail(e, "bad_request",
                            "field 'vec' must hold 1..%u float32 (got %u "
                            "bytes)",
                            SC_INDEX_MAX_DIM, n);
            }
            it->dim = n / 4;
            mp_get_vec(b, n, it->vec);
            for (uint32_t j = 0; j < it->dim; j++) {
                if (!isfinite(it->vec[j])) {
                    return fail(e, "nan",
                                "field 'vec' holds NaN or Inf at "
                                "index %u",
                                j);
                }
            }
            it->has_vec = true;
        } else if (key_is(k, kn, "response")) {
            if (mp_read_bytes(r, &it->response, &it->response_len) != 0) {
                return fail(e, "bad_request",
                            "field 'response' must be bin or string");
            }
            it->has_response = true;
        } else if (key_is(k, kn, "ttl")) {
            rc = get_number(r, "ttl", &it->ttl, &it->has_ttl, e);
        } else if (key_is(k, kn, "threshold")) {
            rc = get_number(r, "threshold", &it->threshold, &it->has_threshold,
                            e);
        } else if (key_is(k, kn, "margin")) {
            rc = get_number(r, "margin", &it->margin, &it->has_margin, e);
        } else if (key_is(k, kn, "entry")) {
            rc = get_uint(r, "entry", &it->entry, &it->has_entry, e);
        } else if (key_is(k, kn, "input_tokens")) {
            rc = get_uint(r, "input_tokens", &it->input_tokens, NULL, e);
        } else if (key_is(k, kn, "output_tokens")) {
            rc = get_uint(r, "output_tokens", &it->output_tokens, NULL, e);
        } else if (key_is(k, kn, "dim")) {
            rc = get_uint(r, "dim", &it->dimcfg, &it->has_dim, e);
        } else if (key_is(k, kn, "max_entries")) {
            rc = get_uint(r, "max_entries", &it->max_entries,
                          &it->has_max_entries, e);
        } else if (key_is(k, kn, "max_bytes")) {
            rc =
                get_uint(r, "max_bytes", &it->max_bytes, &it->has_max_bytes, e);
        } else if (key_is(k, kn, "max_response_bytes")) {
            rc = get_uint(r, "max_response_bytes", &it->max_response,
                          &it->has_max_response, e);
        } else if (mp_skip(r) != 0) {
            return fail(e, "bad_request", "malformed value of field '%.*s'",
                        (int)(kn < 64 ? kn : 64), k);
        }
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* ---- replies -------------------------------------------------------- */

static void put_error(msgpack_packer *pk, const char *code, const char *msg)
{
    mp_put_key(pk, "error");
    msgpack_pack_map(pk, 2);
    mp_put_key(pk, "code");
    mp_put_str(pk, code);
    mp_put_key(pk, "message");
    mp_put_str(pk, msg);
}

/* {"ok": false, "error": {...}} for one batch item. */
static void put_item_error(msgpack_packer *pk, const char *code,
                           const char *msg)
{
    msgpack_pack_map(pk, 2);
    mp_put_key(pk, "ok");
    msgpack_pack_false(pk);
    put_error(pk, code, msg);
}

static void put_bool_kv(msgpack_packer *pk, const char *k, bool v)
{
    mp_put_key(pk, k);
    if (v) {
        msgpack_pack_true(pk);
    } else {
        msgpack_pack_false(pk);
    }
}

static void put_uint_kv(msgpack_packer *pk, const char *k, uint64_t v)
{
    mp_put_key(pk, k);
    msgpack_pack_uint64(pk, v);
}

/* ---- operations ----------------------------------------------------- */

/* The outcome of one operation: the cache's code (and a message) or OK. */
typedef struct outcome {
    sc_err rc;
    const char *code; /* set for validation errors, else from rc */
    char msg[256];
} outcome;

static int need_ns(const item *it, outcome *o)
{
    if (!it->has_ns) {
        o->code = "bad_request";
        snprintf(o->msg, sizeof(o->msg), "field 'ns' is required");
        return -1;
    }
    return 0;
}

/* A namespace name refused: say what a name may be. */
static int bad_ns_name(outcome *o)
{
    o->code = "bad_request";
    snprintf(o->msg, sizeof(o->msg),
             "namespace names are 1..%u bytes of A-Z a-z 0-9 . _ : -",
             SC_CACHE_NS_NAME_MAX);
    return -1;
}

static int need_text_or_vec(const item *it, outcome *o)
{
    if (!it->has_text && !it->has_vec) {
        o->code = "bad_request";
        snprintf(o->msg, sizeof(o->msg), "give 'text', 'vec' or both");
        return -1;
    }
    return 0;
}

static const char *reason_name(sc_miss_reason r)
{
    switch (r) {
    case SC_MISS_NO_CANDIDATE:
        return "no_candidate";
    case SC_MISS_BELOW_THRESHOLD:
        return "below_threshold";
    case SC_MISS_AMBIGUOUS:
        return "ambiguous";
    default:
        return NULL;
    }
}

/* Executes an insert; on success packs its result map. */
static int do_insert(sc_dispatch *d, const item *it, msgpack_packer *pk,
                     outcome *o)
{
    if (need_ns(it, o) != 0 || need_text_or_vec(it, o) != 0) {
        return -1;
    }
    if (!it->has_response) {
        o->code = "bad_request";
        snprintf(o->msg, sizeof(o->msg), "field 'response' is required");
        return -1;
    }
    sc_cache_item ci;
    memset(&ci, 0, sizeof(ci));
    ci.scope = it->scope;
    ci.text = it->has_text ? it->text : NULL;
    ci.text_len = it->text_len;
    ci.vec = it->has_vec ? it->vec : NULL;
    ci.dim = it->has_vec ? it->dim : 0;
    ci.embed_model = it->embed_model;
    ci.response = it->response;
    ci.response_len = it->response_len;
    ci.model = it->model;
    ci.feature = it->feature;
    ci.user = it->user;
    ci.input_tokens = it->input_tokens;
    ci.output_tokens = it->output_tokens;
    if (it->has_ttl) {
        if (it->ttl == -1) {
            ci.ttl_ms = SC_CACHE_TTL_NEVER;
        } else if (it->ttl < 0 || it->ttl > 1e10) {
            o->code = "range";
            snprintf(o->msg, sizeof(o->msg),
                     "field 'ttl' must be 0..1e10 seconds, or -1 for never");
            return -1;
        } else {
            ci.ttl_ms = (int64_t)(it->ttl * 1000.0);
            if (it->ttl > 0 && ci.ttl_ms == 0) {
                ci.ttl_ms = 1;
            }
        }
    }
    uint64_t id = 0;
    o->rc = sc_cache_insert(d->cache, it->ns, &ci, &id);
    if (o->rc == SC_ENONS) {
        /* Namespaces come into being with their first insert, on defaults
         * (dimension fixed by this first vector). */
        sc_ns_config cfg;
        sc_cache_ns_config_init(&cfg);
        uint64_t serial = 0;
        sc_err crc =
            sc_cache_ns_create_for_insert(d->cache, it->ns, &cfg, &serial);
        if (crc == SC_EINVAL) {
            return bad_ns_name(o);
        }
        if (crc != SC_OK && crc != SC_ENSEXIST) {
            o->rc = crc;
            return -1;
        }
        o->rc = sc_cache_insert(d->cache, it->ns, &ci, &id);
        if (o->rc != SC_OK && crc == SC_OK) {
            /* A refused insert leaves nothing behind: the namespace it
             * made goes again (it would otherwise hold one of
             * --max-namespaces), unless another insert or an ns_configure
             * took meanwhile (whose ok would otherwise be undone). */
            (void)sc_cache_ns_drop_unused(d->cache, it->ns, serial);
        }
    }
    if (o->rc != SC_OK) {
        return -1;
    }
    msgpack_pack_map(pk, 1);
    put_uint_kv(pk, "entry", id);
    return 0;
}

/* Checks a lookup's fields and fills q (pointing into it). */
static int lookup_query(const item *it, sc_cache_query *q, outcome *o)
{
    if (need_ns(it, o) != 0 || need_text_or_vec(it, o) != 0) {
        return -1;
    }
    memset(q, 0, sizeof(*q));
    q->scope = it->scope;
    q->text = it->has_text ? it->text : NULL;
    q->text_len = it->text_len;
    q->vec = it->has_vec ? it->vec : NULL;
    q->dim = it->has_vec ? it->dim : 0;
    q->embed_model = it->embed_model;
    q->embed_tokens = it->embed_tokens;
    q->feature = it->has_feature ? it->feature : NULL;
    q->user = it->has_user ? it->user : NULL;
    if (it->has_threshold) {
        if (it->threshold < -1.0 || it->threshold > 1.0) {
            o->code = "range";
            snprintf(o->msg, sizeof(o->msg),
                     "field 'threshold' must be in [-1, 1]");
            return -1;
        }
        q->has_threshold = true;
        q->threshold = (float)it->threshold;
    }
    return 0;
}

/* Packs a lookup's result map; SC_ENONS (nothing was ever stored there) is
 * a miss, said plainly. */
static void pack_lookup(msgpack_packer *pk, sc_err rc,
                        const sc_cache_result *res)
{
    if (rc == SC_ENONS) {
        msgpack_pack_map(pk, 5);
        mp_put_key(pk, "hit");
        msgpack_pack_false(pk);
        mp_put_key(pk, "layer");
        mp_put_str(pk, "none");
        mp_put_key(pk, "similarity");
        msgpack_pack_float(pk, 0.0f);
        mp_put_key(pk, "best");
        msgpack_pack_nil(pk);
        mp_put_key(pk, "reason");
        mp_put_str(pk, "no_namespace");
        return;
    }
    msgpack_pack_map(pk, res->hit ? 14 : 5);
    put_bool_kv(pk, "hit", res->hit);
    mp_put_key(pk, "layer");
    mp_put_str(pk, res->layer == SC_LAYER_EXACT      ? "exact"
                   : res->layer == SC_LAYER_SEMANTIC ? "semantic"
                                                     : "none");
    mp_put_key(pk, "similarity");
    msgpack_pack_float(pk, res->similarity);
    mp_put_key(pk, "best");
    if (isnan(res->best_similarity)) {
        msgpack_pack_nil(pk);
    } else {
        msgpack_pack_float(pk, res->best_similarity);
    }
    mp_put_key(pk, "reason");
    const char *reason = reason_name(res->reason);
    if (reason == NULL) {
        msgpack_pack_nil(pk);
    } else {
        mp_put_str(pk, reason);
    }
    if (res->hit) {
        put_uint_kv(pk, "entry", res->id);
        mp_put_key(pk, "response");
        mp_put_bin(pk, res->response, res->response_len);
        mp_put_key(pk, "model");
        mp_put_str(pk, res->model);
        mp_put_key(pk, "feature");
        mp_put_str(pk, res->feature);
        mp_put_key(pk, "user");
        mp_put_str(pk, res->user);
        put_uint_kv(pk, "input_tokens", res->input_tokens);
        put_uint_kv(pk, "output_tokens", res->output_tokens);
        put_bool_kv(pk, "tokens_estimated", res->tokens_estimated);
        put_uint_kv(pk, "hit_count", res->hit_count);
    }
}

/* The hits a reply carries (an sc_server_undo): the cache counted each,
 * and the dollars it avoided, at its lookup; a reply that is not sent
 * takes them back (sc_cache_hit_undone, under the lookup's tags). Each hit
 * keeps what that needs (its tags, model and tokens), copied, not the
 * result's reference: nng may hold the reply (and this) after the entry
 * goes, or after the cache closes (server.h). A hit like the one before
 * it (same names, tokens: a batch that hits one entry again and again) is
 * counted in that one's record; a record is 40 bytes and its four names,
 * as long as they are, in one allocation. What it holds (base.held) is
 * counted by nng with the reply (--reply-queue-max, --reply-total-max). */
typedef struct undo_hit {
    char *names; /* ns, feature (the lookup's, else the entry's), user,
                  * model: each NUL-terminated, one after the other */
    uint64_t input_tokens, output_tokens;
    uint32_t count; /* hits taken back as this one */
    uint32_t names_len;
    bool tokens_estimated;
} undo_hit;

typedef struct hits {
    sc_server_undo base; /* first: the server's handle */
    sc_cache *cache;
    size_t n, cap;
    undo_hit *h;
} hits;

/* A malloc'd block's bytes beyond what was asked, as counted in
 * base.held (glibc: a 16-byte header, rounded to 16). */
#define HITS_ALLOC_OVERHEAD 16

static void hits_done(sc_server_undo *u, bool sent)
{
    hits *hs = (hits *)u;
    for (size_t i = 0; i < hs->n; i++) {
        undo_hit *h = &hs->h[i];
        const char *ns = h->names;
        const char *feature = ns + strlen(ns) + 1;
        const char *user = feature + strlen(feature) + 1;
        const char *model = user + strlen(user) + 1;
        sc_cache_result r = {.hit = true,
                             .model = model,
                             .feature = feature,
                             .user = user,
                             .input_tokens = h->input_tokens,
                             .output_tokens = h->output_tokens,
                             .tokens_estimated = h->tokens_estimated};
        for (uint32_t k = 0; !sent && k < h->count; k++) {
            sc_cache_hit_undone(hs->cache, ns, &r, NULL, NULL, false);
        }
        free(h->names);
    }
    free(hs->h);
    free(hs);
}

/* Appends NUL-terminated src (NULL: ""; a tag is never longer than max:
 * the cache refuses longer ones) and its NUL at buf[*at]. */
static void put_name(char *buf, size_t *at, const char *src, size_t max)
{
    size_t n = src != NULL ? strnlen(src, max) : 0;
    memcpy(buf + *at, src != NULL ? src : "", n);
    buf[*at + n] = '\0';
    *at += n + 1;
}

/* Keeps hit *r of item it's lookup in *hp (made on the first), or, with
 * hp NULL (a caller that sends its reply itself) or out of memory, drops
 * it: such a hit stays counted whatever becomes of the reply. *r is
 * finished either way. */
static void keep_hit(sc_cache *c, hits **hp, const item *it, sc_cache_result *r)
{
    if (!r->hit) {
        return; /* a miss holds nothing */
    }
    hits *hs = hp != NULL ? *hp : NULL;
    if (hp != NULL && hs == NULL && (hs = calloc(1, sizeof(*hs))) != NULL) {
        hs->base.done = hits_done;
        hs->base.held = sizeof(*hs) + HITS_ALLOC_OVERHEAD;
        hs->cache = c;
        *hp = hs;
    }
    if (hs == NULL) {
        sc_cache_result_fini(r);
        return;
    }
    /* The names, packed; at most four names and their NULs. */
    char buf[SC_CACHE_NS_NAME_MAX + 3 * SC_CACHE_TAG_MAX + 4];
    size_t len = 0;
    put_name(buf, &len, it->ns, SC_CACHE_NS_NAME_MAX);
    put_name(buf, &len, it->has_feature ? it->feature : r->feature,
             SC_CACHE_TAG_MAX);
    put_name(buf, &len, it->has_user ? it->user : r->user, SC_CACHE_TAG_MAX);
    put_name(buf, &len, r->model, SC_CACHE_TAG_MAX);
    undo_hit *last = hs->n > 0 ? &hs->h[hs->n - 1] : NULL;
    if (last != NULL && last->count < UINT32_MAX && last->names_len == len &&
        memcmp(last->names, buf, len) == 0 &&
        last->input_tokens == r->input_tokens &&
        last->output_tokens == r->output_tokens &&
        last->tokens_estimated == r->tokens_estimated) {
        last->count++;
        sc_cache_result_fini(r);
        return;
    }
    size_t cap0 = hs->cap;
    char *names = malloc(len);
    if (names == NULL || SC_VEC_RESERVE(hs->h, hs->cap, hs->n, 1, 1) != SC_OK) {
        free(names);
        sc_cache_result_fini(r);
        return;
    }
    memcpy(names, buf, len);
    undo_hit *h = &hs->h[hs->n++];
    h->names = names;
    h->names_len = (uint32_t)len;
    h->count = 1;
    h->input_tokens = r->input_tokens;
    h->output_tokens = r->output_tokens;
    h->tokens_estimated = r->tokens_estimated;
    hs->base.held += len + HITS_ALLOC_OVERHEAD;
    if (hs->cap != cap0) { /* the array grew: count its new size */
        hs->base.held += (hs->cap - cap0) * sizeof(undo_hit) +
                         (cap0 == 0 ? HITS_ALLOC_OVERHEAD : 0);
    }
    sc_cache_result_fini(r);
}

static int do_lookup(sc_dispatch *d, const item *it, msgpack_packer *pk,
                     outcome *o, hits **hp)
{
    sc_cache_query q;
    if (lookup_query(it, &q, o) != 0) {
        return -1;
    }
    sc_cache_result res;
    o->rc = sc_cache_lookup(d->cache, it->ns, &q, &res);
    if (o->rc != SC_OK && o->rc != SC_ENONS) {
        return -1;
    }
    pack_lookup(pk, o->rc, &res);
    if (o->rc == SC_OK) {
        keep_hit(d->cache, hp, it, &res);
    }
    o->rc = SC_OK;
    return 0;
}

/* The index fields of apply_ns_config: backend, nlist and train_min at
 * creation only, nprobe at any time. */
static int apply_ns_backend(const item *it, sc_ns_config *cfg, int create,
                            outcome *o)
{
    if (!create && (it->has_backend || it->has_nlist || it->has_train_min)) {
        snprintf(o->msg, sizeof(o->msg),
                 "'backend', 'nlist' and 'train_min' are fixed when a "
                 "namespace is created");
        return -1;
    }
    if ((it->has_nlist && it->nlist > 65536) ||
        (it->has_nprobe && it->nprobe > 65536) ||
        (it->has_train_min && it->train_min > UINT32_MAX)) {
        o->code = "range";
        snprintf(o->msg, sizeof(o->msg),
                 "'nlist' and 'nprobe' must be 0..65536, 'train_min' "
                 "0..2^32-1");
        return -1;
    }
    if (it->has_backend) {
        if (sc_index_backend_find(it->backend) == NULL) {
            snprintf(o->msg, sizeof(o->msg),
                     "field 'backend' must be flat, auto, ivf-flat or "
                     "ivf-sq8");
            return -1;
        }
        if (strcmp(it->backend, "auto") != 0 &&
            !sc_index_backend_available(it->backend)) {
            o->code = "not_supported";
            snprintf(o->msg, sizeof(o->msg),
                     "backend '%s' needs a server built with FAISS; this one "
                     "has none ('flat', or 'auto', which scans flat here)",
                     it->backend);
            return -1;
        }
        memcpy(cfg->backend, it->backend, sizeof(cfg->backend));
    }
    if (cfg->backend[0] != '\0' && strcmp(cfg->backend, "flat") != 0 &&
        cfg->storage != SC_STORAGE_F32) {
        snprintf(o->msg, sizeof(o->msg),
                 "backend '%s' needs storage f32 (got %s)", cfg->backend,
                 sc_storage_name(cfg->storage));
        return -1;
    }
    if (it->has_nlist) {
        cfg->nlist = (uint32_t)it->nlist;
    }
    if (it->has_nprobe) {
        cfg->nprobe = (uint32_t)it->nprobe;
    }
    if (it->has_train_min) {
        cfg->train_min = (uint32_t)it->train_min;
    }
    return 0;
}

/* Applies the namespace fields of it to cfg. create: dim and storage too. */
static int apply_ns_config(const item *it, sc_ns_config *cfg, int create,
                           outcome *o)
{
    o->code = "bad_request";
    if (!create && (it->has_dim || it->has_storage)) {
        snprintf(o->msg, sizeof(o->msg),
                 "'dim' and 'storage' are fixed when a namespace is created");
        return -1;
    }
    if (it->has_dim) {
        if (it->dimcfg > SC_INDEX_MAX_DIM) {
            o->code = "range";
            snprintf(o->msg, sizeof(o->msg), "field 'dim' must be 0..%u",
                     SC_INDEX_MAX_DIM);
            return -1;
        }
        cfg->dim = (uint32_t)it->dimcfg;
    }
    if (it->has_storage) {
        int s = sc_storage_parse(it->storage);
        if (s < 0) {
            snprintf(o->msg, sizeof(o->msg),
                     "field 'storage' must be f32, f16 or int8");
            return -1;
        }
        cfg->storage = (sc_storage)s;
    }
    if (apply_ns_backend(it, cfg, create, o) != 0) {
        return -1;
    }
    if (it->has_threshold) {
        cfg->threshold = (float)it->threshold;
        cfg->auto_threshold = false;
    }
    if (it->has_margin) {
        cfg->margin = (float)it->margin;
        cfg->auto_margin = false;
    }
    if (it->has_vote) {
        cfg->vote = it->vote ? 1 : 0;
    }
    if (it->has_embed_model) {
        if (!create) {
            snprintf(o->msg, sizeof(o->msg),
                     "'embed_model' is fixed when a namespace is created or "
                     "by its first vector");
            return -1;
        }
        memcpy(cfg->embed_model, it->embed_model, sizeof(cfg->embed_model));
    }
    if (it->has_ttl) {
        if (it->ttl < 0 || it->ttl > 1e10) {
            o->code = "range";
            snprintf(o->msg, sizeof(o->msg),
                     "field 'ttl' must be 0..1e10 seconds");
            return -1;
        }
        cfg->ttl_ms = (uint64_t)(it->ttl * 1000.0);
        if (it->ttl > 0 && cfg->ttl_ms == 0) {
            cfg->ttl_ms = 1; /* under a millisecond is not "never" */
        }
    }
    if (it->has_ttl_mode) {
        if (strcmp(it->ttl_mode, "absolute") == 0) {
            cfg->ttl_mode = SC_TTL_ABSOLUTE;
        } else if (strcmp(it->ttl_mode, "sliding") == 0) {
            cfg->ttl_mode = SC_TTL_SLIDING;
        } else {
            snprintf(o->msg, sizeof(o->msg),
                     "field 'ttl_mode' must be absolute or sliding");
            return -1;
        }
    }
    if (it->has_max_entries) {
        cfg->max_entries = it->max_entries;
    }
    if (it->has_max_bytes) {
        cfg->max_bytes = it->max_bytes;
    }
    if (it->has_max_response) {
        cfg->max_response_bytes = it->max_response;
    }
    o->code = NULL;
    return 0;
}

/* ns_configure's request, for edit_ns_config. */
typedef struct configure_edit {
    const item *it;
    outcome *o;
    bool refused; /* apply_ns_config refused it: o says why */
} configure_edit;

/* sc_cache_ns_edit_fn: applies an ns_configure's fields to the namespace's
 * config (under its lock; apply_ns_config only checks and copies). */
static sc_err edit_ns_config(sc_ns_config *cfg, void *arg)
{
    configure_edit *ce = arg;
    if (apply_ns_config(ce->it, cfg, 0, ce->o) != 0) {
        ce->refused = true;
        return SC_EINVAL;
    }
    return SC_OK;
}

static void pack_stats(msgpack_packer *pk, const sc_cache_stats *s)
{
    msgpack_pack_map(pk, 20);
    put_uint_kv(pk, "namespaces", s->namespaces);
    put_uint_kv(pk, "lookups", s->lookups);
    put_uint_kv(pk, "exact_hits", s->exact_hits);
    put_uint_kv(pk, "semantic_hits", s->semantic_hits);
    put_uint_kv(pk, "misses", s->misses);
    put_uint_kv(pk, "ambiguous_misses", s->ambiguous_misses);
    put_uint_kv(pk, "inserts", s->inserts);
    put_uint_kv(pk, "replaced", s->replaced);
    put_uint_kv(pk, "deletes", s->deletes);
    put_uint_kv(pk, "expirations", s->expirations);
    put_uint_kv(pk, "evictions", s->evictions);
    put_uint_kv(pk, "flushed", s->flushed);
    put_uint_kv(pk, "false_hits", s->false_hits);
    put_uint_kv(pk, "quarantined", s->quarantined);
    put_uint_kv(pk, "entries", s->entries);
    put_uint_kv(pk, "bytes", s->bytes);
    put_uint_kv(pk, "scopes", s->scopes);
    /* As /metrics' semcache_ivf_trainings_abandoned_total. */
    put_uint_kv(pk, "ivf_trainings_abandoned", s->ivf_abandoned);
    /* As /metrics' semcache_ivf_untrained_capped_scopes. */
    put_uint_kv(pk, "ivf_untrained_capped", s->ivf_untrained_capped);
    /* Only the bins that saw a lookup: [lo, hi, count]; bin 0 (no
     * candidate) has lo = hi = NaN, sent as nil. */
    mp_put_key(pk, "histogram");
    unsigned used = 0;
    for (unsigned b = 0; b < SC_CACHE_HIST_BINS; b++) {
        used += s->hist[b] != 0;
    }
    msgpack_pack_array(pk, used);
    for (unsigned b = 0; b < SC_CACHE_HIST_BINS; b++) {
        if (s->hist[b] == 0) {
            continue;
        }
        double lo, hi;
        sc_cache_hist_range(b, &lo, &hi);
        msgpack_pack_array(pk, 3);
        if (isnan(lo)) {
            msgpack_pack_nil(pk);
            msgpack_pack_nil(pk);
        } else {
            msgpack_pack_double(pk, lo);
            msgpack_pack_double(pk, hi);
        }
        msgpack_pack_uint64(pk, s->hist[b]);
    }
}

/* ---- the cost report ------------------------------------------------ */

/* A number, nil when it is undefined (NaN) or infinite. */
static void put_num(msgpack_packer *pk, double v)
{
    if (isfinite(v)) {
        msgpack_pack_double(pk, v);
    } else {
        msgpack_pack_nil(pk);
    }
}

static void put_num_kv(msgpack_packer *pk, const char *k, double v)
{
    mp_put_key(pk, k);
    put_num(pk, v);
}

#define REPORT_FIELDS 34

/* One row of the report: the ledger's counts and what they imply. */
/* The cost target per request set for (kind, name), or NAN. */
static double target_of(const sc_dispatch *d, int kind, const char *name)
{
    for (size_t i = 0; name != NULL && i < d->ntargets; i++) {
        if (d->targets[i].kind == kind &&
            strcmp(d->targets[i].name, name) == 0) {
            return d->targets[i].usd_per_request;
        }
    }
    return NAN;
}

static void pack_report_row(msgpack_packer *pk, const char *key,
                            const sc_ledger_counts *c, double target)
{
    sc_ledger_report r;
    sc_ledger_derive(c, &r);
    bool has_target = isfinite(target);
    msgpack_pack_map(pk, REPORT_FIELDS + (key != NULL) + 2 * has_target);
    if (key != NULL) {
        mp_put_key(pk, "key");
        mp_put_str(pk, key);
    }
    if (has_target) {
        /* Flagged when the cost per request with the cache is above it. */
        put_num_kv(pk, "target_usd_per_request", target);
        put_bool_kv(pk, "over_target",
                    isfinite(r.usd_per_request) && r.usd_per_request > target);
    }
    put_uint_kv(pk, "requests", c->lookups);
    put_uint_kv(pk, "exact_hits", c->exact_hits);
    put_uint_kv(pk, "semantic_hits", c->semantic_hits);
    put_num_kv(pk, "hit_rate", r.hit_rate);
    put_num_kv(pk, "exact_hit_rate", r.exact_hit_rate);
    put_num_kv(pk, "semantic_hit_rate", r.semantic_hit_rate);
    put_uint_kv(pk, "tokens_in_avoided", c->tokens_in_avoided);
    put_uint_kv(pk, "tokens_out_avoided", c->tokens_out_avoided);
    put_uint_kv(pk, "hits_estimated", c->hits_estimated);
    put_uint_kv(pk, "hits_unpriced", c->hits_unpriced);
    put_num_kv(pk, "usd_avoided", c->usd_avoided);
    put_num_kv(pk, "usd_embed", c->usd_embed);
    put_num_kv(pk, "usd_lookup", c->usd_lookup);
    put_num_kv(pk, "usd_spent", r.usd_spent);
    put_num_kv(pk, "usd_net", r.usd_net);
    put_num_kv(pk, "return_on_spend", r.return_on_spend);
    put_num_kv(pk, "break_even_hit_rate", r.break_even_hit_rate);
    put_uint_kv(pk, "false_hits", c->false_hits);
    put_uint_kv(pk, "false_hits_unpriced", c->false_hits_unpriced);
    put_num_kv(pk, "usd_false_hits", c->usd_false_hits);
    put_uint_kv(pk, "inserts", c->inserts);
    put_uint_kv(pk, "inserts_unpriced", c->inserts_unpriced);
    put_uint_kv(pk, "inserts_estimated", c->inserts_estimated);
    put_num_kv(pk, "embed_cpu_s", c->embed_cpu_s);
    put_num_kv(pk, "lookup_cpu_s", c->lookup_cpu_s);
    put_uint_kv(pk, "embed_tokens", c->embed_tokens);
    put_uint_kv(pk, "embed_unpriced", c->embed_unpriced);
    put_num_kv(pk, "usd_per_call", r.usd_per_call);
    put_num_kv(pk, "usd_per_request", r.usd_per_request);
    put_num_kv(pk, "days", r.days);
    put_num_kv(pk, "lookups_per_day", r.lookups_per_day);
    const char *months[2] = {"month_without", "month_with"};
    const double *bills[2] = {r.month_without, r.month_with};
    for (int m = 0; m < 2; m++) {
        mp_put_key(pk, months[m]);
        msgpack_pack_array(pk, 3);
        for (int i = 0; i < 3; i++) {
            put_num(pk, bills[m][i]);
        }
    }
    put_uint_kv(pk, "first_ms", c->first_ms);
}

typedef struct report_rows {
    msgpack_packer *pk;
    size_t n;
    const sc_dispatch *d;
    int kind;   /* the rows' sc_ledger_by */
    char *last; /* the last row's key (malloc'd), NULL = none */
    bool oom;   /* last could not be copied */
} report_rows;

/* Packs each row aside, counting them: the array's length comes first. */
static void pack_row(void *arg, const char *key, const sc_ledger_counts *c)
{
    report_rows *rr = arg;
    pack_report_row(rr->pk, key, c,
                    rr->kind == SC_LEDGER_BY_USER
                        ? NAN
                        : target_of(rr->d,
                                    rr->kind == SC_LEDGER_BY_NS
                                        ? SC_COST_TARGET_NS
                                        : SC_COST_TARGET_FEATURE,
                                    key));
    rr->n++;
    free(rr->last);
    if ((rr->last = strdup(key)) == NULL) {
        rr->oom = true;
    }
}

/* The report: the total, the rows by namespace, feature or user, and the
 * hourly timeline. */
static int do_report(sc_dispatch *d, const item *it, msgpack_packer *pk,
                     outcome *o)
{
    if (d->ledger == NULL) {
        o->code = "internal";
        snprintf(o->msg, sizeof(o->msg), "this server keeps no ledger");
        return -1;
    }
    sc_ledger_by by = SC_LEDGER_BY_NS;
    if (it->has_by) {
        if (strcmp(it->by, "feature") == 0) {
            by = SC_LEDGER_BY_FEATURE;
        } else if (strcmp(it->by, "user") == 0) {
            by = SC_LEDGER_BY_USER;
        } else if (strcmp(it->by, "ns") != 0) {
            o->code = "bad_request";
            snprintf(o->msg, sizeof(o->msg),
                     "field 'by' must be ns, feature or user");
            return -1;
        }
    }
    /* The rows come a page at a time: all 2^20 rows the ledger may hold
     * in one reply, some 900 MiB, would be past --reply-total-max and
     * every client's receive cap. */
    uint64_t limit = it->has_limit ? it->limit : SC_DISPATCH_REPORT_ROWS;
    if (limit == 0 || limit > SC_DISPATCH_REPORT_ROWS_MAX) {
        o->code = "bad_request";
        snprintf(o->msg, sizeof(o->msg), "field 'limit' must be 1..%u",
                 SC_DISPATCH_REPORT_ROWS_MAX);
        return -1;
    }
    const char *ns = it->has_ns ? it->ns : NULL;
    sc_ledger_counts total;
    mp_buf rows;
    mp_buf_init(&rows);
    report_rows rr = {&rows.pk, 0, d, (int)by, NULL, false};
    size_t more = 0;
    if ((o->rc = sc_ledger_sum_page(
             d->ledger, ns, by, it->has_after ? it->after : NULL, (size_t)limit,
             &total, pack_row, &rr, &more)) != SC_OK ||
        (rr.oom && (o->rc = SC_ENOMEM) != SC_OK)) {
        free(rr.last);
        mp_buf_fini(&rows);
        return -1;
    }
    sc_ledger_hour *hours = malloc(24 * 31 * sizeof(*hours));
    if (hours == NULL) {
        free(rr.last);
        mp_buf_fini(&rows);
        o->rc = SC_ENOMEM;
        return -1;
    }
    /* The timeline is the whole server's (the ledger keeps no hours per
     * namespace): a report of one namespace, which a key that may read
     * only that one can ask for, must not show the others' traffic. */
    size_t nh = ns == NULL ? sc_ledger_timeline(d->ledger, hours, 24 * 31) : 0;
    msgpack_pack_map(pk, 8);
    mp_put_key(pk, "prices_date");
    mp_put_str(pk, sc_prices_date(d->prices));
    put_num_kv(pk, "cpu_hour", sc_prices_cpu_hour(d->prices));
    mp_put_key(pk, "by");
    mp_put_str(pk, by == SC_LEDGER_BY_NS        ? "ns"
                   : by == SC_LEDGER_BY_FEATURE ? "feature"
                                                : "user");
    mp_put_key(pk, "total");
    pack_report_row(pk, NULL, &total, target_of(d, SC_COST_TARGET_NS, ns));
    mp_put_key(pk, "rows");
    msgpack_pack_array(pk, rr.n);
    mp_put_part(pk, &rows);
    mp_buf_fini(&rows);
    /* The rows after this page, and the key to send as 'after' for the
     * next one (nil on the last page). */
    put_uint_kv(pk, "more", more);
    mp_put_key(pk, "next");
    if (more > 0) {
        mp_put_str(pk, rr.last);
    } else {
        msgpack_pack_nil(pk);
    }
    free(rr.last);
    mp_put_key(pk, "timeline");
    msgpack_pack_array(pk, nh);
    for (size_t i = 0; i < nh; i++) {
        msgpack_pack_array(pk, 5);
        msgpack_pack_uint64(pk, hours[i].hour_ms);
        msgpack_pack_uint64(pk, hours[i].lookups);
        msgpack_pack_uint64(pk, hours[i].hits);
        msgpack_pack_double(pk, hours[i].usd_avoided);
        msgpack_pack_double(pk, hours[i].usd_spent);
    }
    free(hours);
    return 0;
}

/* Runs a single (non-batch) op. Packs the result map on success. */
static int run_op(sc_dispatch *d, const char *op, const item *it,
                  msgpack_packer *pk, outcome *o, hits **hp)
{
    if (strcmp(op, "ping") == 0) {
        msgpack_pack_map(pk, 2);
        put_uint_kv(pk, "version", SC_PROTO_VERSION);
        mp_put_key(pk, "server");
        mp_put_str(pk, SC_SERVER_NAME);
        return 0;
    }
    if (strcmp(op, "insert") == 0) {
        return do_insert(d, it, pk, o);
    }
    if (strcmp(op, "lookup") == 0) {
        return do_lookup(d, it, pk, o, hp);
    }
    if (strcmp(op, "delete") == 0 || strcmp(op, "feedback") == 0) {
        if (!it->has_entry) {
            o->code = "bad_request";
            snprintf(o->msg, sizeof(o->msg), "field 'entry' is required");
            return -1;
        }
        o->rc =
            op[0] == 'd'
                ? sc_cache_delete(d->cache, it->entry)
                : sc_cache_feedback_tagged(d->cache, it->entry,
                                           it->has_feature ? it->feature : NULL,
                                           it->has_user ? it->user : NULL);
        if (o->rc != SC_OK) {
            return -1;
        }
        msgpack_pack_map(pk, 0);
        return 0;
    }
    if (strcmp(op, "ns_create") == 0 || strcmp(op, "ns_configure") == 0) {
        int create = op[3] == 'c' && op[4] == 'r';
        if (need_ns(it, o) != 0) {
            return -1;
        }
        if (create) {
            if (!sc_cache_ns_name_ok(it->ns)) {
                return bad_ns_name(o);
            }
            sc_ns_config cfg;
            sc_cache_ns_config_init(&cfg);
            if (apply_ns_config(it, &cfg, 1, o) != 0) {
                return -1;
            }
            o->rc = sc_cache_ns_create(d->cache, it->ns, &cfg);
        } else {
            /* The fields not given keep their values, also against a
             * concurrent ns_configure of others: applied under the
             * namespace's lock, not read, edited and written back. */
            configure_edit ce = {.it = it, .o = o};
            o->rc = sc_cache_ns_update(d->cache, it->ns, edit_ns_config, &ce);
            if (ce.refused) {
                return -1; /* o says why */
            }
        }
        if (o->rc != SC_OK) {
            return -1;
        }
        msgpack_pack_map(pk, 0);
        return 0;
    }
    if (strcmp(op, "ns_drop") == 0) {
        if (need_ns(it, o) != 0) {
            return -1;
        }
        if ((o->rc = sc_cache_ns_drop(d->cache, it->ns)) != SC_OK) {
            return -1;
        }
        msgpack_pack_map(pk, 0);
        return 0;
    }
    if (strcmp(op, "ns_list") == 0) {
        size_t cap = 64, n = 0;
        char(*names)[SC_CACHE_NS_NAME_MAX + 1] = NULL;
        for (;;) {
            names = malloc(cap * sizeof(*names));
            if (names == NULL) {
                o->rc = SC_ENOMEM;
                return -1;
            }
            o->rc = sc_cache_ns_list(d->cache, names, cap, &n);
            if (o->rc != SC_OK || n <= cap) {
                break;
            }
            free(names);
            cap = n;
        }
        if (o->rc != SC_OK) {
            free(names);
            return -1;
        }
        msgpack_pack_map(pk, 1);
        mp_put_key(pk, "namespaces");
        msgpack_pack_array(pk, n);
        for (size_t i = 0; i < n; i++) {
            mp_put_str(pk, names[i]);
        }
        free(names);
        return 0;
    }
    if (strcmp(op, "report") == 0) {
        return do_report(d, it, pk, o);
    }
    if (strcmp(op, "stats") == 0) {
        sc_cache_stats *s = malloc(sizeof(*s));
        if (s == NULL) {
            o->rc = SC_ENOMEM;
            return -1;
        }
        o->rc = sc_cache_stats_get(d->cache, it->has_ns ? it->ns : NULL, s);
        if (o->rc == SC_OK) {
            pack_stats(pk, s);
        }
        free(s);
        return o->rc == SC_OK ? 0 : -1;
    }
    if (strcmp(op, "flush") == 0) {
        o->rc = sc_cache_flush(d->cache, it->has_ns ? it->ns : NULL);
        if (o->rc != SC_OK) {
            return -1;
        }
        msgpack_pack_map(pk, 0);
        return 0;
    }
    o->code = "unknown_op";
    snprintf(o->msg, sizeof(o->msg), "unknown op '%s'", op);
    return -1;
}

/* Fills o's wire code and message from its sc_err, unless validation set
 * them. it: the request or item that failed (names the models of a
 * model_mismatch). */
static void outcome_message(sc_dispatch *d, const item *it, outcome *o)
{
    if (o->code != NULL) {
        return;
    }
    o->code = sc_dispatch_errcode(o->rc);
    sc_ns_config cfg;
    if (o->rc == SC_ENOEMBED) {
        snprintf(o->msg, sizeof(o->msg), "%s", d->embed_hint);
    } else if (o->rc == SC_EMODEL && it != NULL &&
               sc_cache_ns_get_config(d->cache, it->ns, &cfg) == SC_OK) {
        snprintf(o->msg, sizeof(o->msg),
                 "namespace holds vectors of embedding model '%.40s'; this "
                 "request's are of '%.40s'%s",
                 cfg.embed_model[0] ? cfg.embed_model : "(unnamed)",
                 it->has_vec
                     ? (it->embed_model[0] ? it->embed_model : "(unnamed)")
                     : "the built-in embedder",
                 /* Naming helps only a vector that has no name. */
                 it->has_vec && it->embed_model[0] == '\0'
                     ? " (name it with 'embed_model')"
                     : "");
    } else if (o->rc == SC_EIO) {
        snprintf(o->msg, sizeof(o->msg),
                 "not written to the state log, so not made: changes are "
                 "refused until the server restarts (its log says why); "
                 "lookups go on");
    } else {
        snprintf(o->msg, sizeof(o->msg), "%s", sc_strerror(o->rc));
    }
}

#define LOOKUP_CHUNK 64 /* batch lookups decoded and run together */

static void put_item_ok(msgpack_packer *pk, const mp_buf *result)
{
    msgpack_pack_map(pk, 2);
    mp_put_key(pk, "ok");
    msgpack_pack_true(pk);
    mp_put_key(pk, "result");
    mp_put_part(pk, result);
}

/* Reads one batch item into it, applying the top-level ns and scope.
 * Returns -1 with *e set when the item is malformed. */
static int read_item(sc_dispatch *d, const item *top, mp_reader *items,
                     item *it, err *e)
{
    uint32_t nk;
    memset(it, 0, sizeof(*it));
    e->code = NULL;
    if (mp_read_map(items, &nk) != 0) {
        fail(e, "bad_request", "batch item is not a map");
    } else {
        parse_fields(items, nk, it, e);
    }
    if (e->code != NULL) {
        __atomic_add_fetch(&d->counts.bad_requests, 1, __ATOMIC_RELAXED);
        return -1;
    }
    if (!it->has_ns && top->has_ns) {
        memcpy(it->ns, top->ns, sizeof(it->ns));
        it->has_ns = true;
    }
    if (!it->has_scope && top->has_scope) {
        memcpy(it->scope, top->scope, sizeof(it->scope));
        it->has_scope = true;
    }
    return 0;
}

/* Item i was malformed: its error, then one for each later item, which
 * cannot be found reliably after it. */
static void put_rest_broken(msgpack_packer *pk, const err *e, uint32_t i,
                            uint32_t n)
{
    put_item_error(pk, e->code, e->msg);
    for (i++; i < n; i++) {
        put_item_error(pk, "bad_request",
                       "not decoded: an earlier item was malformed");
    }
}

/* A batch item the key may not touch: answered "forbidden", counted. */
static int item_forbidden(sc_dispatch *d, const sc_key *key, const item *it,
                          bool write, outcome *o)
{
    if (!it->has_ns || ns_allowed(key, it->ns, write)) {
        return 0;
    }
    __atomic_add_fetch(&d->counts.forbidden, 1, __ATOMIC_RELAXED);
    o->code = "forbidden";
    snprintf(o->msg, sizeof(o->msg), "key '%s' may not %s namespace '%s'",
             key->name, write ? "write" : "read", it->ns);
    return -1;
}

static void batch_inserts(sc_dispatch *d, const sc_key *key, const item *top,
                          mp_reader *items, uint32_t n, msgpack_packer *pk,
                          mp_buf *tmp)
{
    item *it = malloc(sizeof(*it));
    for (uint32_t i = 0; i < n; i++) {
        if (it == NULL) {
            put_item_error(pk, "internal", "out of memory");
            continue;
        }
        err e;
        if (read_item(d, top, items, it, &e) != 0) {
            put_rest_broken(pk, &e, i, n);
            break;
        }
        outcome o = {SC_OK, NULL, ""};
        mp_buf_clear(tmp);
        if (item_forbidden(d, key, it, true, &o) != 0) {
            put_item_error(pk, o.code, o.msg);
        } else if (do_insert(d, it, &tmp->pk, &o) == 0) {
            put_item_ok(pk, tmp);
        } else {
            __atomic_add_fetch(&d->counts.errors, 1, __ATOMIC_RELAXED);
            outcome_message(d, it, &o);
            put_item_error(pk, o.code, o.msg);
        }
    }
    free(it);
}

/* Lookups go LOOKUP_CHUNK at a time to sc_cache_lookup_many, so that the
 * vectors of one scope are searched as one batch; memory stays bounded by
 * the chunk whatever the message claims. */
/* The most a lookup_batch reply holds of hits: past it a hit is answered
 * too_big (looked up again alone, or in a smaller batch, it is served). A
 * request of 15 KB could otherwise ask for 1024 hits of a 1 MiB response,
 * a 1 GiB reply built and queued in memory (PROTOCOL.md 1.4). The first
 * hit of a batch is always served, whatever its size. The cache keeps the
 * count (sc_cache_budget), so that a hit not served is not counted either:
 * judged here after the lookup, it had been, in the stats, its entry's
 * hit count and the ledger's savings, and again when looked up again. */
#define BATCH_REPLY_MAX ((size_t)64 << 20)

static void batch_lookups(sc_dispatch *d, const sc_key *key, const item *top,
                          mp_reader *items, uint32_t n, msgpack_packer *pk,
                          mp_buf *tmp, hits **hp)
{
    sc_cache_budget budget = {BATCH_REPLY_MAX, false};
    item *its = malloc(LOOKUP_CHUNK * sizeof(item));
    sc_cache_query qs[LOOKUP_CHUNK];
    sc_cache_result res[LOOKUP_CHUNK];
    sc_err rcs[LOOKUP_CHUNK];
    outcome os[LOOKUP_CHUNK];
    if (its == NULL) {
        for (uint32_t i = 0; i < n; i++) {
            put_item_error(pk, "internal", "out of memory");
        }
        return;
    }
    int broken = 0;
    err bad = {NULL, ""};
    for (uint32_t base = 0; base < n && !broken; base += LOOKUP_CHUNK) {
        uint32_t m = n - base < LOOKUP_CHUNK ? n - base : LOOKUP_CHUNK;
        uint32_t got = 0;
        int valid[LOOKUP_CHUNK];
        /* Decode the chunk; a malformed item ends the batch after the
         * items before it are answered. */
        for (; got < m; got++) {
            os[got] = (outcome){SC_OK, NULL, ""};
            if (read_item(d, top, items, &its[got], &bad) != 0) {
                broken = 1;
                break;
            }
            valid[got] =
                item_forbidden(d, key, &its[got], false, &os[got]) == 0 &&
                lookup_query(&its[got], &qs[got], &os[got]) == 0;
            qs[got].budget = &budget;
        }
        /* Run runs of consecutive valid items that share a namespace. */
        for (uint32_t i = 0; i < got;) {
            if (!valid[i]) {
                i++;
                continue;
            }
            uint32_t j = i + 1;
            while (j < got && valid[j] && strcmp(its[j].ns, its[i].ns) == 0) {
                j++;
            }
            sc_err rc = sc_cache_lookup_many(d->cache, its[i].ns, qs + i, j - i,
                                             res + i, rcs + i);
            for (uint32_t k = i; k < j; k++) {
                if (rc != SC_OK) {
                    rcs[k] = rc;
                }
            }
            i = j;
        }
        for (uint32_t i = 0; i < got; i++) {
            if (!valid[i]) {
                outcome_message(d, &its[i], &os[i]);
                put_item_error(pk, os[i].code, os[i].msg);
                continue;
            }
            if (rcs[i] == SC_ETOOBIG) {
                put_item_error(pk, "too_big",
                               "the batch's reply reached its 64 MiB of "
                               "hits: look this item up again");
                continue;
            }
            if (rcs[i] != SC_OK && rcs[i] != SC_ENONS) {
                __atomic_add_fetch(&d->counts.errors, 1, __ATOMIC_RELAXED);
                outcome o = {rcs[i], NULL, ""};
                outcome_message(d, &its[i], &o);
                put_item_error(pk, o.code, o.msg);
                continue;
            }
            mp_buf_clear(tmp);
            pack_lookup(&tmp->pk, rcs[i], &res[i]);
            put_item_ok(pk, tmp);
            if (rcs[i] == SC_OK) {
                keep_hit(d->cache, hp, &its[i], &res[i]);
            }
        }
        if (broken) {
            put_rest_broken(pk, &bad, base + got, n);
        }
    }
    free(its);
}

/* Checks the request's key (k[0..kn) when has_key) against what op needs
 * (docs/PROTOCOL.md, "Access keys") and sets *out to the key (NULL when no
 * keys are configured). Batch items are checked one by one as they run.
 * Returns -1 with *e set, and counted, when the request is refused. */
static int authorize(sc_dispatch *d, const keyset *ks, const char *op,
                     const item *it, bool has_key, const uint8_t *k,
                     uint32_t kn, const sc_key **out, err *e)
{
    *out = NULL;
    if (ks == NULL || strcmp(op, "ping") == 0) {
        return 0;
    }
    const sc_key *key = has_key ? find_key(ks, k, kn) : NULL;
    if (key == NULL) {
        __atomic_add_fetch(&d->counts.unauthorized, 1, __ATOMIC_RELAXED);
        return fail(e, "unauthorized",
                    has_key ? "the key is not one this server knows"
                            : "this server wants a key: field 'key'");
    }
    *out = key;
    enum { OPEN, READ, WRITE, ADMIN } need = OPEN;
    const char *ns = it->has_ns ? it->ns : NULL;
    char ens[SC_CACHE_NS_NAME_MAX + 1];
    if (strcmp(op, "lookup") == 0) {
        need = READ;
    } else if (strcmp(op, "insert") == 0) {
        need = WRITE;
    } else if (strcmp(op, "delete") == 0 || strcmp(op, "feedback") == 0) {
        /* The entry's namespace. An id that is no entry now is answered
         * here, not by the op: ids are given out in order, and an entry
         * inserted meanwhile in a namespace the key may not touch would
         * otherwise be deleted or quarantined by it unchecked. An id found
         * stays in its namespace (ids are never given out again). */
        if (it->has_entry &&
            sc_cache_entry_ns(d->cache, it->entry, ens) != SC_OK) {
            return fail(e, "not_found", "%s", sc_strerror(SC_ENOTFOUND));
        }
        ns = it->has_entry ? ens : NULL;
        need = WRITE;
    } else if (strcmp(op, "stats") == 0 || strcmp(op, "report") == 0) {
        need = ns != NULL ? READ : ADMIN;
    } else if (strcmp(op, "flush") == 0) {
        need = ns != NULL ? WRITE : ADMIN;
    } else if (strcmp(op, "ns_create") == 0 ||
               strcmp(op, "ns_configure") == 0 || strcmp(op, "ns_drop") == 0 ||
               strcmp(op, "ns_list") == 0) {
        need = ADMIN;
    }
    if (need == ADMIN && !key->admin) {
        __atomic_add_fetch(&d->counts.forbidden, 1, __ATOMIC_RELAXED);
        return fail(e, "forbidden", "key '%s' is not an admin key, which %s%s",
                    key->name, op,
                    strcmp(op, "stats") == 0 || strcmp(op, "report") == 0 ||
                            strcmp(op, "flush") == 0
                        ? " of every namespace needs (name one with 'ns')"
                        : " needs");
    }
    if ((strcmp(op, "delete") == 0 || strcmp(op, "feedback") == 0) &&
        ns != NULL && !ns_allowed(key, ns, false)) {
        /* An entry of a namespace the key may not even read is, to it, no
         * entry at all: "forbidden", or another message than an unknown
         * id's, would say that the id exists. */
        __atomic_add_fetch(&d->counts.forbidden, 1, __ATOMIC_RELAXED);
        return fail(e, "not_found", "%s", sc_strerror(SC_ENOTFOUND));
    }
    if ((need == READ || need == WRITE) && ns != NULL &&
        !ns_allowed(key, ns, need == WRITE)) {
        __atomic_add_fetch(&d->counts.forbidden, 1, __ATOMIC_RELAXED);
        return fail(e, "forbidden", "key '%s' may not %s namespace '%s'",
                    key->name, need == WRITE ? "write" : "read", ns);
    }
    return 0;
}

/* The request's "id", looked for in the whole top-level map (skipping
 * every other value, at any depth, so a field refused for its nesting
 * still has the id after it echoed): whether there is one that is a uint. */
static bool find_id(const uint8_t *req, size_t len, uint64_t *id)
{
    mp_reader r;
    mp_reader_init(&r, req, len);
    uint32_t n;
    if (mp_read_map(&r, &n) != 0) {
        return false;
    }
    bool found = false;
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t kn;
        if (mp_read_str(&r, &k, &kn) != 0) {
            return found; /* what came before the damage */
        }
        /* A repeated key's last value counts, as in decoding: an id that
         * a later one that is not a uint replaces is not echoed. */
        if (key_is(k, kn, "id")) {
            mp_reader at = r;
            found = mp_read_uint(&at, id) == 0;
        }
        if (mp_skip_any(&r) != 0) {
            return found;
        }
    }
    return found;
}

/* A reply's map head: the request's id when it had one, and the "ok"
 * key, whose value the caller packs next (then "result" or "error"). */
static void put_reply_head(msgpack_packer *pk, bool has_id, uint64_t id)
{
    msgpack_pack_map(pk, has_id ? 3 : 2);
    if (has_id) {
        put_uint_kv(pk, "id", id);
    }
    mp_put_key(pk, "ok");
}

static int handle_ks(sc_dispatch *d, const keyset *ks, const uint8_t *req,
                     size_t len, uint8_t **reply, size_t *reply_len,
                     bool trusted, hits **hp)
{
    __atomic_add_fetch(&d->counts.requests, 1, __ATOMIC_RELAXED);
    /* A reply whose packing failed (no memory) is none: rc -1, and a
     * lookup's hits are taken back by whoever drops it (sc_server_undo). */
    mp_buf sb, tmp;
    mp_buf_init(&sb);
    mp_buf_init(&tmp);
    msgpack_packer *pk = &sb.pk;

    item *it = calloc(1, sizeof(*it));
    err e = {NULL, ""};
    uint64_t version = 0, id = 0;
    bool has_version = false, has_id = false;
    char op[32] = "";
    mp_reader items = {NULL, NULL};
    uint32_t nitems = 0;
    bool has_items = false;
    const uint8_t *keyp = NULL; /* into req; never copied, never logged */
    uint32_t keyn = 0;
    bool has_key = false;

    mp_reader r;
    mp_reader_init(&r, req, len);
    uint32_t nkeys;
    if (it == NULL) {
        fail(&e, "internal", "out of memory");
    } else if (mp_read_map(&r, &nkeys) != 0) {
        fail(&e, "bad_request", "a request is one msgpack map");
    } else {
        /* Protocol keys first, then everything else through parse_fields
         * one key at a time (it skips what it does not know). */
        for (uint32_t i = 0; i < nkeys && e.code == NULL; i++) {
            mp_reader at = r;
            const char *k;
            uint32_t kn;
            if (mp_read_str(&r, &k, &kn) != 0) {
                fail(&e, "bad_request", "map keys must be strings");
            } else if (key_is(k, kn, "v")) {
                if (mp_read_uint(&r, &version) != 0) {
                    fail(&e, "bad_request",
                         "field 'v' must be an integer 0..2^64-1");
                }
                has_version = true;
            } else if (key_is(k, kn, "id")) {
                if (mp_read_uint(&r, &id) != 0) {
                    fail(&e, "bad_request",
                         "field 'id' must be an integer 0..2^64-1");
                } else {
                    has_id = true; /* one that is not a uint is not echoed */
                }
            } else if (key_is(k, kn, "op")) {
                int rc = mp_read_cstr(&r, op, sizeof(op));
                if (rc != 0) {
                    fail(&e, rc == -2 ? "unknown_op" : "bad_request",
                         "field 'op' must be a short string");
                }
            } else if (key_is(k, kn, "key")) {
                const char *ks;
                if (mp_read_str(&r, &ks, &keyn) != 0) {
                    fail(&e, "bad_request", "field 'key' must be a string");
                } else {
                    keyp = (const uint8_t *)ks;
                    has_key = true;
                }
            } else if (key_is(k, kn, "items")) {
                if (mp_read_array(&r, &nitems) != 0) {
                    fail(&e, "bad_request", "field 'items' must be an array");
                } else {
                    items = r;
                    has_items = true;
                    /* Skip the items now; they are decoded when run. */
                    for (uint32_t j = 0; j < nitems && e.code == NULL; j++) {
                        if (mp_skip_item(&r) != 0) {
                            fail(&e, "bad_request", "malformed batch item %u",
                                 j);
                        }
                    }
                }
            } else {
                r = at;
                parse_fields(&r, 1, it, &e);
            }
        }
        if (e.code == NULL && r.p != r.end) {
            fail(&e, "bad_request", "%zu bytes after the request map",
                 (size_t)(r.end - r.p));
        }
    }
    if (e.code == NULL && !has_version) {
        fail(&e, "version", "field 'v' is required; this server speaks %d",
             SC_PROTO_VERSION);
    } else if (e.code == NULL && version != SC_PROTO_VERSION) {
        fail(&e, "version",
             "protocol version %llu is not supported; this server speaks %d",
             (unsigned long long)version, SC_PROTO_VERSION);
    } else if (e.code == NULL && op[0] == '\0') {
        fail(&e, "bad_request", "field 'op' is required");
    }

    int is_batch =
        strcmp(op, "lookup_batch") == 0 || strcmp(op, "insert_batch") == 0;
    if (e.code == NULL && is_batch) {
        if (!has_items || nitems == 0 || nitems > SC_PROTO_MAX_ITEMS) {
            fail(&e, "bad_request", "field 'items' must hold 1..%d maps",
                 SC_PROTO_MAX_ITEMS);
        }
    }

    if (e.code != NULL) {
        /* The decoding stopped at a bad field: an id after it is still
         * the request's, and its reply carries it (the last one, as for
         * every key: none when that one is not a uint). */
        has_id = find_id(req, len, &id);
    }

    const sc_key *key = NULL;
    bool refused = false; /* by the key check, counted there */
    if (e.code == NULL && !trusted &&
        authorize(d, ks, op, it, has_key, keyp, keyn, &key, &e) != 0) {
        refused = true;
    }

    put_reply_head(pk, has_id, id);
    if (e.code != NULL) {
        if (!refused) {
            __atomic_add_fetch(&d->counts.bad_requests, 1, __ATOMIC_RELAXED);
        }
        msgpack_pack_false(pk);
        put_error(pk, e.code, e.msg);
    } else if (is_batch) {
        msgpack_pack_true(pk);
        mp_put_key(pk, "result");
        msgpack_pack_map(pk, 1);
        mp_put_key(pk, "results");
        msgpack_pack_array(pk, nitems);
        if (op[0] == 'i') {
            batch_inserts(d, key, it, &items, nitems, pk, &tmp);
        } else {
            batch_lookups(d, key, it, &items, nitems, pk, &tmp, hp);
        }
    } else {
        /* The result is packed aside: an op may fail after starting it. */
        outcome o = {SC_OK, NULL, ""};
        if (run_op(d, op, it, &tmp.pk, &o, hp) == 0) {
            msgpack_pack_true(pk);
            mp_put_key(pk, "result");
            mp_put_part(pk, &tmp);
        } else {
            __atomic_add_fetch(o.code ? &d->counts.bad_requests
                                      : &d->counts.errors,
                               1, __ATOMIC_RELAXED);
            outcome_message(d, it, &o);
            msgpack_pack_false(pk);
            put_error(pk, o.code, o.msg);
        }
    }
    free(it);
    mp_buf_fini(&tmp);
    return mp_buf_take(&sb, reply, reply_len);
}

/* A request holds the keys in force while it runs: a key it matched stays
 * valid (with its grants) however the keys are replaced meanwhile. The
 * hits its reply carries go to *hp (hp NULL: nowhere). */
static int handle(sc_dispatch *d, const uint8_t *req, size_t len,
                  uint8_t **reply, size_t *reply_len, bool trusted, hits **hp)
{
    keyset *ks = trusted ? NULL : ks_acquire(d);
    int rc = handle_ks(d, ks, req, len, reply, reply_len, trusted, hp);
    ks_release(d, ks);
    return rc;
}

int sc_dispatch_handle(void *arg, const uint8_t *req, size_t len,
                       uint8_t **reply, size_t *reply_len)
{
    return handle(arg, req, len, reply, reply_len, false, NULL);
}

int sc_dispatch_handle_trusted(sc_dispatch *d, const uint8_t *req, size_t len,
                               uint8_t **reply, size_t *reply_len)
{
    return handle(d, req, len, reply, reply_len, true, NULL);
}

/* ---- many requests at once ------------------------------------------ */

/* Reads req into it and q when it is a plain single lookup ({"v": 1,
 * "op": "lookup", "id"?, and lookup fields}, keys in any order) that
 * decodes and validates cleanly. Anything else returns -1 and goes through
 * sc_dispatch_handle, which answers it as it always has (errors included):
 * only the happy path is taken here, so both paths give the same reply. */
static int plain_lookup(const keyset *ks, const uint8_t *req, size_t len,
                        item *it, sc_cache_query *q, uint64_t *id, bool *has_id)
{
    mp_reader r;
    mp_reader_init(&r, req, len);
    uint32_t nkeys;
    if (mp_read_map(&r, &nkeys) != 0) {
        return -1;
    }
    uint64_t version = 0;
    bool has_version = false, is_lookup = false, has_key = false;
    const char *key = NULL;
    uint32_t keyn = 0;
    *has_id = false;
    err e = {NULL, ""};
    for (uint32_t i = 0; i < nkeys; i++) {
        mp_reader at = r;
        const char *k;
        uint32_t kn;
        if (mp_read_str(&r, &k, &kn) != 0) {
            return -1;
        }
        if (key_is(k, kn, "v")) {
            if (mp_read_uint(&r, &version) != 0) {
                return -1;
            }
            has_version = true;
        } else if (key_is(k, kn, "id")) {
            if (mp_read_uint(&r, id) != 0) {
                return -1;
            }
            *has_id = true;
        } else if (key_is(k, kn, "op")) {
            char op[32];
            if (mp_read_cstr(&r, op, sizeof(op)) != 0) {
                return -1;
            }
            is_lookup = strcmp(op, "lookup") == 0;
        } else if (key_is(k, kn, "key")) {
            if (mp_read_str(&r, &key, &keyn) != 0) {
                return -1;
            }
            has_key = true;
        } else if (key_is(k, kn, "items")) {
            return -1;
        } else {
            r = at;
            if (parse_fields(&r, 1, it, &e) != 0 || e.code != NULL) {
                return -1;
            }
        }
    }
    outcome o = {SC_OK, NULL, ""};
    if (r.p != r.end || !has_version || version != SC_PROTO_VERSION ||
        !is_lookup || lookup_query(it, q, &o) != 0) {
        return -1;
    }
    if (ks != NULL) {
        /* Refusals are answered (and counted) by sc_dispatch_handle. */
        const sc_key *k =
            has_key ? find_key(ks, (const uint8_t *)key, keyn) : NULL;
        if (k == NULL || !ns_allowed(k, it->ns, false)) {
            return -1;
        }
    }
    return 0;
}

/* Packs the reply sc_dispatch_handle gives a lookup that returned rc. */
static int pack_lookup_reply(sc_dispatch *d, const item *it, bool has_id,
                             uint64_t id, sc_err rc, const sc_cache_result *res,
                             sc_server_msg *m)
{
    mp_buf sb;
    mp_buf_init(&sb);
    msgpack_packer *pk = &sb.pk;
    put_reply_head(pk, has_id, id);
    if (rc == SC_OK || rc == SC_ENONS) {
        msgpack_pack_true(pk);
        mp_put_key(pk, "result");
        pack_lookup(pk, rc, res);
    } else {
        __atomic_add_fetch(&d->counts.errors, 1, __ATOMIC_RELAXED);
        outcome o = {rc, NULL, ""};
        outcome_message(d, it, &o);
        msgpack_pack_false(pk);
        put_error(pk, o.code, o.msg);
    }
    return mp_buf_take(&sb, &m->reply, &m->reply_len);
}

void sc_dispatch_handle_many(void *arg, sc_server_msg *msgs, size_t n)
{
    sc_dispatch *d = arg;
    /* Chunks in order, each no larger than the arrays below. */
    for (; n > SC_SERVER_MAX_BATCH; n -= SC_SERVER_MAX_BATCH) {
        sc_dispatch_handle_many(arg, msgs, SC_SERVER_MAX_BATCH);
        msgs += SC_SERVER_MAX_BATCH;
    }
    /* Plain lookups are collected; the rest are answered one by one. */
    item *its = n > 1 ? malloc(n * sizeof(item)) : NULL;
    sc_cache_query qs[SC_SERVER_MAX_BATCH];
    sc_cache_result res[SC_SERVER_MAX_BATCH];
    sc_err rcs[SC_SERVER_MAX_BATCH];
    uint64_t ids[SC_SERVER_MAX_BATCH];
    bool has_ids[SC_SERVER_MAX_BATCH];
    size_t at[SC_SERVER_MAX_BATCH]; /* message of each collected lookup */
    size_t nl = 0;
    keyset *ks = ks_acquire(d);
    for (size_t i = 0; i < n; i++) {
        msgs[i].undo = NULL;
        if (its != NULL) {
            /* Everything but the vector, which is read for dim floats. */
            item *it = &its[nl];
            memset(it, 0, offsetof(item, vec));
            memset((char *)it + offsetof(item, vec) + sizeof(it->vec), 0,
                   sizeof(item) - offsetof(item, vec) - sizeof(it->vec));
            if (plain_lookup(ks, msgs[i].req, msgs[i].len, it, &qs[nl],
                             &ids[nl], &has_ids[nl]) == 0) {
                at[nl++] = i;
                continue;
            }
        }
        hits *hs = NULL;
        msgs[i].rc = handle(d, msgs[i].req, msgs[i].len, &msgs[i].reply,
                            &msgs[i].reply_len, false, &hs);
        msgs[i].undo = hs != NULL ? &hs->base : NULL;
    }
    ks_release(d, ks); /* the lookups collected passed its check */
    /* One sc_cache_lookup_many per namespace: the vectors of a scope are
     * searched as one batch. */
    bool done[SC_SERVER_MAX_BATCH] = {false};
    size_t grp[SC_SERVER_MAX_BATCH];
    sc_cache_query gq[SC_SERVER_MAX_BATCH];
    for (size_t i = 0; i < nl; i++) {
        if (done[i]) {
            continue;
        }
        size_t g = 0;
        for (size_t j = i; j < nl; j++) {
            if (!done[j] && strcmp(its[j].ns, its[i].ns) == 0) {
                done[j] = true;
                grp[g] = j;
                gq[g] = qs[j];
                g++;
            }
        }
        sc_cache_result gres[SC_SERVER_MAX_BATCH];
        sc_err grcs[SC_SERVER_MAX_BATCH];
        sc_err rc =
            sc_cache_lookup_many(d->cache, its[i].ns, gq, g, gres, grcs);
        for (size_t k = 0; k < g; k++) {
            res[grp[k]] = gres[k];
            rcs[grp[k]] = rc != SC_OK ? rc : grcs[k];
        }
    }
    for (size_t i = 0; i < nl; i++) {
        sc_server_msg *m = &msgs[at[i]];
        __atomic_add_fetch(&d->counts.requests, 1, __ATOMIC_RELAXED);
        m->rc = pack_lookup_reply(d, &its[i], has_ids[i], ids[i], rcs[i],
                                  &res[i], m);
        if (rcs[i] == SC_OK) {
            hits *hs = NULL;
            keep_hit(d->cache, &hs, &its[i], &res[i]);
            m->undo = hs != NULL ? &hs->base : NULL;
        }
    }
    free(its);
}

int sc_dispatch_busy_reply(void *arg, const uint8_t *refused, size_t len,
                           uint8_t **reply, size_t *reply_len)
{
    (void)arg;
    uint64_t id = 0;
    /* The refused reply is one of ours: its "id" is the request's. */
    bool has_id = find_id(refused, len, &id);
    /* Not an error of the cache's (counts.errors): the request was
     * counted when it ran; the refusal is the server's count. */
    mp_buf sb;
    mp_buf_init(&sb);
    msgpack_packer *pk = &sb.pk;
    put_reply_head(pk, has_id, id);
    msgpack_pack_false(pk);
    /* The request was carried out: only its reply is withheld. Said, so
     * that a client does not repeat a change that was made (an
     * insert_batch's entries stored again). */
    put_error(pk, "busy",
              "the server holds too many unread replies "
              "(--reply-total-max): the request was carried out, its reply "
              "withheld; repeat a read, not a change");
    return mp_buf_take(&sb, reply, reply_len);
}
