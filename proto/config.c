/* config.c - semcached's configuration file (config.h), parsed with
 * libjansson: a well-kept JSON parser from Debian, so that none of our own
 * has to be trusted with a file a person edits by hand. */
#define _GNU_SOURCE
#include "proto/config.h"

#include "proto/http.h"
#include "proto/proxy.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

sc_err sc_config_set_str(char **slot, const char *value)
{
    char *copy = strdup(value);
    if (copy == NULL) {
        return SC_ENOMEM;
    }
    free(*slot);
    *slot = copy;
    return SC_OK;
}

/* ---- the numeric settings (config.h, sc_config_num) ---------------- */

#define SC_NUM(flag, key, lo, hi, unit, field)                                 \
    SC_CONFIG_NUM(sc_config, flag, key, lo, hi, unit, field)

#define MIB     (1ull << 20)
#define NO_MAX  (UINT64_MAX >> 1) /* the largest JSON integer */
#define HOUR_MS 3600000u

const sc_config_num sc_config_nums[] = {
    SC_NUM("--threads", "threads", 1, 1024, "", threads),
    SC_NUM("--max-clients", "max_clients", 1, 1u << 20, "", max_clients),
    SC_NUM("--recv-max", "recv_max", 1024, 1ull << 30, "bytes", recv_max),
    SC_NUM("--reply-queue-max", "reply_queue_max", MIB, 1ull << 40, "bytes",
           reply_queue_max),
    SC_NUM("--reply-queue-len", "reply_queue_len", 64, 1u << 20, "",
           reply_queue_len),
    SC_NUM("--reply-total-max", "reply_total_max", MIB, 1ull << 40, "bytes",
           reply_total_max),
    SC_NUM("--reply-timeout", "reply_timeout", 100, HOUR_MS, "ms",
           reply_timeout_ms),
    SC_NUM("--http-max-conns", "http_max_conns", 1, 1u << 20, "",
           http_max_conns),
    SC_NUM("--http-stop-grace", "http_stop_grace", 1, HOUR_MS, "ms",
           http_stop_grace_ms),
    SC_NUM("--http-read-timeout", "http_read_timeout", 100, HOUR_MS, "ms",
           http_read_timeout_ms),
    SC_NUM("--http-write-timeout", "http_write_timeout", 100, HOUR_MS, "ms",
           http_write_timeout_ms),
    SC_NUM("--compact-bytes", "compact_bytes", MIB, 1ull << 50, "bytes",
           compact_bytes),
    SC_NUM("--max-namespaces", "max_namespaces", 1, 1u << 20, "",
           cache.max_namespaces),
    SC_NUM("--max-bytes", "max_bytes", 1, NO_MAX, "bytes", cache.max_bytes),
    SC_NUM(NULL, "max_entries", 0, NO_MAX, "", cache.max_entries),
};
const size_t sc_config_nnums =
    sizeof(sc_config_nums) / sizeof(sc_config_nums[0]);

const sc_config_num *sc_config_num_by_flag(const char *flag)
{
    for (size_t i = 0; i < sc_config_nnums; i++) {
        if (sc_config_nums[i].flag != NULL &&
            strcmp(sc_config_nums[i].flag, flag) == 0) {
            return &sc_config_nums[i];
        }
    }
    return NULL;
}

const sc_config_num *sc_config_num_by_key(const char *key)
{
    for (size_t i = 0; i < sc_config_nnums; i++) {
        if (strcmp(sc_config_nums[i].key, key) == 0) {
            return &sc_config_nums[i];
        }
    }
    return NULL;
}

/* One bound as the pages write it: 1 MiB (bytes), 2^30, 1024, and the
 * largest JSON integer as 2^63-1. */
static void bound(uint64_t v, bool bytes, char *out, size_t cap)
{
    int log2 = v != 0 && (v & (v - 1)) == 0 ? __builtin_ctzll(v) : -1;
    if (v == NO_MAX) {
        snprintf(out, cap, "2^63-1");
    } else if (bytes && v >= MIB && v % MIB == 0 && v < (1ull << 30)) {
        snprintf(out, cap, "%llu MiB", (unsigned long long)(v / MIB));
    } else if (log2 >= 20) {
        snprintf(out, cap, "2^%d", log2);
    } else {
        snprintf(out, cap, "%llu", (unsigned long long)v);
    }
}

void sc_config_num_range(const sc_config_num *n, char *out, size_t cap)
{
    bool bytes = strcmp(n->unit, "bytes") == 0;
    char lo[32], hi[32];
    bound(n->min, bytes, lo, sizeof(lo));
    bound(n->max, bytes, hi, sizeof(hi));
    snprintf(out, cap, "%s..%s%s%s", lo, hi, n->unit[0] ? " " : "", n->unit);
}

/* Sets n's field of the struct at base (size bytes) to v if n is a row
 * of that struct's table and v is in n's range; else SC_EINVAL with the
 * reason in msg. The flags' and the keys' one check, the proxy's
 * included. */
static sc_err num_set(void *base, size_t size, const sc_config_num *n,
                      uint64_t v, char *msg, size_t cap)
{
    if (n->of != size || n->offset > size || n->size > size - n->offset) {
        snprintf(msg, cap, "is not a setting of this struct");
        return SC_EINVAL;
    }
    if (v < n->min || v > n->max) {
        char range[80];
        sc_config_num_range(n, range, sizeof(range));
        snprintf(msg, cap, "must be %s", range);
        return SC_EINVAL;
    }
    char *field = (char *)base + n->offset;
    if (n->size == sizeof(uint32_t)) {
        uint32_t u = (uint32_t)v;
        memcpy(field, &u, sizeof(u));
    } else {
        memcpy(field, &v, sizeof(v));
    }
    return SC_OK;
}

sc_err sc_config_num_parse(void *base, size_t size, const sc_config_num *n,
                           const char *value, char *msg, size_t cap)
{
    /* Digits only: strtoull would skip spaces and take a sign (" -1" is
     * 2^64 - 1). Out of uint64_t's range is out of every setting's. */
    char *end;
    errno = 0;
    unsigned long long v =
        value[0] >= '0' && value[0] <= '9' ? strtoull(value, &end, 10) : 0;
    if (value[0] < '0' || value[0] > '9' || errno != 0 || *end != '\0') {
        v = UINT64_MAX;
    }
    return num_set(base, size, n, v, msg, cap);
}

/* A setting only the patched nng applies (scripts/patches): whether cfg
 * sets it, what it does on this build, what the system's nng does
 * instead, and whether it is the HTTP front's. */
typedef struct {
    const char *flag, *key;
    bool set;
    const char *effect, *instead;
    bool http;
} unpatched_setting;

enum { NUNPATCHED = 8 };

static void unpatched_settings(const sc_config *cfg,
                               unpatched_setting out[NUNPATCHED])
{
    const unpatched_setting all[NUNPATCHED] = {
        {"--reply-queue-max", "reply_queue_max", cfg->reply_queue_max != 0,
         "has no effect", "keeps up to 64 replies a client, of any size",
         false},
        {"--reply-queue-len", "reply_queue_len", cfg->reply_queue_len != 0,
         "has no effect", "queues at most 64 replies a client and drops more",
         false},
        {"--reply-total-max", "reply_total_max", cfg->reply_total_max != 0,
         "has no effect",
         "sets no bound on the replies held for all clients "
         "together",
         false},
        {"--reply-timeout", "reply_timeout", cfg->reply_timeout_ms != 0,
         "has no effect", "writes an nng reply with no time limit", false},
        /* With --http it still sets its share of descriptors aside, out
         * of the nng clients' cap (semcached.c, conn_caps); without, it
         * does nothing at all. */
        {"--http-max-conns", "http_max_conns", cfg->http_max_conns != 0,
         cfg->http != NULL ? "caps no HTTP connection (it only sets "
                             "descriptors aside, out of the nng clients' cap)"
                           : "has no effect",
         "has no cap on HTTP connections", true},
        {"--http-stop-grace", "http_stop_grace", cfg->http_stop_grace_ms != 0,
         "has no effect",
         "stops at once, cutting the HTTP answers not yet written", true},
        {"--http-read-timeout", "http_read_timeout",
         cfg->http_read_timeout_ms != 0, "has no effect",
         "waits for a request's head with no time limit", true},
        {"--http-write-timeout", "http_write_timeout",
         cfg->http_write_timeout_ms != 0, "has no effect",
         "writes an HTTP answer with no time limit", true},
    };
    memcpy(out, all, sizeof(all));
}

unsigned sc_config_warn_unpatched(const sc_config *cfg, bool nng_patched,
                                  FILE *f)
{
    if (nng_patched) {
        return 0;
    }
    unpatched_setting ignored[NUNPATCHED];
    unpatched_settings(cfg, ignored);
    unsigned n = 0;
    for (size_t i = 0; i < NUNPATCHED; i++) {
        if (!ignored[i].set) {
            continue;
        }
        n++;
        if (f != NULL) {
            fprintf(f,
                    "semcached: warning: %s (%s) %s: this build uses the "
                    "system's nng, which %s (build with "
                    "SEMCACHE_NNG_PATCHED=ON)\n",
                    ignored[i].flag, ignored[i].key, ignored[i].effect,
                    ignored[i].instead);
        }
    }
    return n;
}

unsigned sc_config_log_nng(const sc_config *cfg, bool nng_patched,
                           const char *version, unsigned npatches, FILE *f)
{
    if (nng_patched) {
        fprintf(f,
                "semcached: nng %s, patched (%u %s of scripts/patches, "
                "linked static)\n",
                version, npatches, npatches == 1 ? "patch" : "patches");
        return 0;
    }
    fprintf(f, "semcached: nng %s, the system's library (not patched)\n",
            version);
    /* Once, given or not: their defaults do not apply either, and a
     * reader of the log should not have to know which ones those are. */
    unpatched_setting off[NUNPATCHED];
    unpatched_settings(cfg, off);
    fprintf(f, "semcached: warning: this build uses the system's nng, "
               "which applies none of these protections, their defaults "
               "included:");
    const char *sep = " ";
    for (size_t i = 0; i < NUNPATCHED; i++) {
        if (off[i].http && cfg->http == NULL) {
            continue; /* no HTTP front: nothing of it to protect */
        }
        fprintf(f, "%s%s (it %s)", sep, off[i].key, off[i].instead);
        sep = ", ";
    }
    fprintf(f, " (build with SEMCACHE_NNG_PATCHED=ON)\n");
    return 1 + sc_config_warn_unpatched(cfg, false, f);
}

sc_err sc_config_init(sc_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    sc_cache_config_init(&cfg->cache);
    cfg->persist = true;
    cfg->snapshot_at_stop = true;
    cfg->fsync = SC_FSYNC_EVERYSEC;
    return sc_config_set_str(&cfg->data_dir, SC_CONFIG_DEFAULT_DATA_DIR);
}

void sc_config_fini(sc_config *cfg)
{
    for (unsigned i = 0; i < cfg->nlisten; i++) {
        free(cfg->listen[i]);
    }
    free(cfg->tls_cert);
    free(cfg->http);
    free(cfg->prices);
    free(cfg->data_dir);
    free(cfg->embed_table);
    for (unsigned i = 0; i < cfg->nproxy_args; i++) {
        free(cfg->proxy_args[i]);
    }
    free(cfg->ns);
    free(cfg->targets);
    for (size_t i = 0; i < cfg->nkeys; i++) {
        explicit_bzero(cfg->keys[i].secret, sizeof(cfg->keys[i].secret));
        free(cfg->keys[i].grants);
    }
    free(cfg->keys);
    memset(cfg, 0, sizeof(*cfg));
}

sc_err sc_config_embed_path(const sc_config *cfg, char *out, size_t cap)
{
    int n =
        cfg->embed_table != NULL
            ? snprintf(out, cap, "%s", cfg->embed_table)
            : snprintf(out, cap, "%s/%s", cfg->data_dir, SC_CONFIG_EMBED_FILE);
    return n < 0 || (size_t)n >= cap ? SC_ETOOBIG : SC_OK;
}

/* ---- parsing -------------------------------------------------------- */

typedef struct ctx {
    const char *path;
    char *msg;
    size_t cap;
} ctx;

static sc_err bad(ctx *x, const char *key, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    snprintf(x->msg, x->cap, "%s: key '%s': %s", x->path, key, why);
    return SC_EINVAL;
}

/* An integer in [lo, hi]. JSON numbers with a fraction are refused. */
static sc_err get_int(ctx *x, const char *key, json_t *v, uint64_t lo,
                      uint64_t hi, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        return bad(x, key, "must be a non-negative integer");
    }
    uint64_t n = (uint64_t)json_integer_value(v);
    if (n < lo || n > hi) {
        return bad(x, key, "must be %llu..%llu", (unsigned long long)lo,
                   (unsigned long long)hi);
    }
    *out = n;
    return SC_OK;
}

/* A numeric setting's key: a JSON integer in the range its flag takes,
 * refused in the same words. */
static sc_err get_num(ctx *x, sc_config *cfg, const sc_config_num *n, json_t *v)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        return bad(x, n->key, "must be a non-negative integer");
    }
    char why[128];
    if (num_set(cfg, sizeof(*cfg), n, (uint64_t)json_integer_value(v), why,
                sizeof(why)) != SC_OK) {
        return bad(x, n->key, "%s", why);
    }
    return SC_OK;
}

static sc_err get_real(ctx *x, const char *key, json_t *v, double lo, double hi,
                       double *out)
{
    if (!json_is_number(v)) {
        return bad(x, key, "must be a number");
    }
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi) {
        return bad(x, key, "must be in [%g, %g]", lo, hi);
    }
    *out = d;
    return SC_OK;
}

static sc_err get_bool(ctx *x, const char *key, json_t *v, bool *out)
{
    if (!json_is_boolean(v)) {
        return bad(x, key, "must be true or false");
    }
    *out = json_is_true(v);
    return SC_OK;
}

static sc_err get_str(ctx *x, const char *key, json_t *v, size_t max,
                      char **slot)
{
    if (!json_is_string(v)) {
        return bad(x, key, "must be a string");
    }
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n == 0 || n > max || strlen(s) != n) {
        return bad(x, key, "must be 1..%zu bytes with no NUL", max);
    }
    return sc_config_set_str(slot, s) == SC_OK ? SC_OK
                                               : bad(x, key, "out of memory");
}

/* "proxy": {key: value} as the proxy's flags, each checked as the flag's
 * value would be. The keys and their flags are proxy.c's, numeric
 * (sc_proxy_num_by_key) or not (sc_proxy_flag_by_key), not written here. */
static sc_err parse_proxy(ctx *x, sc_config *cfg, json_t *v)
{
    /* cfg->proxy_args holds one pair per key, of either kind. */
    _Static_assert(SC_PROXY_NSTRS + SC_PROXY_NNUMS == SC_CONFIG_PROXY_KEYS,
                   "SC_CONFIG_PROXY_KEYS counts the proxy's keys");
    if (!json_is_object(v)) {
        return bad(x, "proxy", "must be an object");
    }
    /* Key by key: a later --config file's proxy keys replace an earlier
     * one's and keep the others (its upstream, say). */
    const char *k;
    json_t *jv;
    json_object_foreach(v, k, jv)
    {
        char full[64];
        snprintf(full, sizeof(full), "proxy.%.50s", k);
        const sc_config_num *n = sc_proxy_num_by_key(k);
        const char *flag = sc_proxy_flag_by_key(k);
        if (flag == NULL) {
            return bad(x, full, "unknown key");
        }
        char num[32];
        const char *val;
        if (n != NULL) {
            if (!json_is_integer(jv) || json_integer_value(jv) < 0) {
                return bad(x, full, "must be a non-negative integer");
            }
            snprintf(num, sizeof(num), "%lld",
                     (long long)json_integer_value(jv));
            val = num;
        } else {
            if (!json_is_string(jv) ||
                strlen(json_string_value(jv)) != json_string_length(jv)) {
                return bad(x, full, "must be a string with no NUL");
            }
            val = json_string_value(jv);
        }
        sc_proxy_config scratch;
        sc_proxy_config_init(&scratch);
        char why[256];
        if (sc_proxy_parse_flag(&scratch, flag, val, why, sizeof(why)) != 1) {
            return bad(x, full, "%s", why);
        }
        unsigned at = 0;
        while (at < cfg->nproxy_args &&
               strcmp(cfg->proxy_args[at], flag) != 0) {
            at += 2;
        }
        if (at < cfg->nproxy_args) {
            char *dup = strdup(val);
            if (dup == NULL) {
                return bad(x, full, "out of memory");
            }
            free(cfg->proxy_args[at + 1]);
            cfg->proxy_args[at + 1] = dup;
            continue;
        }
        /* At most one pair per key: the array holds them all. */
        if ((cfg->proxy_args[at] = strdup(flag)) == NULL ||
            (cfg->proxy_args[at + 1] = strdup(val)) == NULL) {
            free(cfg->proxy_args[at]);
            cfg->proxy_args[at] = NULL;
            return bad(x, full, "out of memory");
        }
        cfg->nproxy_args += 2;
    }
    return SC_OK;
}

static sc_err parse_listen(ctx *x, sc_config *cfg, json_t *v)
{
    json_t *one[1] = {v};
    json_t **urls = one;
    size_t n = 1;
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n == 0 || n > SC_SERVER_MAX_LISTEN) {
            return bad(x, "listen", "must list 1..%d URLs",
                       SC_SERVER_MAX_LISTEN);
        }
        urls = NULL;
    }
    for (unsigned i = 0; i < cfg->nlisten; i++) {
        free(cfg->listen[i]);
        cfg->listen[i] = NULL;
    }
    cfg->nlisten = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *u = urls != NULL ? urls[i] : json_array_get(v, i);
        char *s = NULL;
        sc_err rc = get_str(x, "listen", u, 1024, &s);
        if (rc != SC_OK) {
            return rc;
        }
        cfg->listen[cfg->nlisten++] = s;
    }
    return SC_OK;
}

static sc_err parse_ns(ctx *x, sc_config *cfg, const char *name, json_t *o)
{
    char key[SC_CACHE_NS_NAME_MAX + 64];
    snprintf(key, sizeof(key), "namespaces.%s", name);
    if (strlen(name) == 0 || strlen(name) > SC_CACHE_NS_NAME_MAX) {
        return bad(x, key, "namespace names are 1..%u bytes",
                   SC_CACHE_NS_NAME_MAX);
    }
    for (const char *p = name; *p; p++) {
        int ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                 (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' ||
                 *p == ':' || *p == '-';
        if (!ok) {
            return bad(x, key, "namespace names hold A-Z a-z 0-9 . _ : -");
        }
    }
    if (!json_is_object(o)) {
        return bad(x, key, "must be an object");
    }
    if (cfg->nns == SC_CONFIG_MAX_NS) {
        /* The cap is on every --config file's together: say so, or a
         * second file of 200 reads as if it held too many itself. */
        return bad(x, key,
                   "at most %d namespaces in all the configuration files "
                   "together",
                   SC_CONFIG_MAX_NS);
    }
    for (size_t i = 0; i < cfg->nns; i++) {
        if (strcmp(cfg->ns[i].name, name) == 0) {
            return bad(x, key, "declared twice");
        }
    }
    sc_config_ns *grown = realloc(cfg->ns, (cfg->nns + 1) * sizeof(*grown));
    if (grown == NULL) {
        return bad(x, key, "out of memory");
    }
    cfg->ns = grown;
    sc_config_ns *n = &cfg->ns[cfg->nns];
    memset(n, 0, sizeof(*n));
    memcpy(n->name, name, strlen(name) + 1);
    sc_cache_ns_config_init(&n->cfg);

    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        char full[sizeof(key) + 64];
        snprintf(full, sizeof(full), "%s.%.40s", key, k);
        uint64_t u = 0;
        double d = 0;
        sc_err rc = SC_OK;
        if (strcmp(k, "dim") == 0) {
            if ((rc = get_int(x, full, v, 0, SC_INDEX_MAX_DIM, &u)) == SC_OK) {
                n->cfg.dim = (uint32_t)u;
            }
        } else if (strcmp(k, "storage") == 0) {
            int s =
                json_is_string(v) ? sc_storage_parse(json_string_value(v)) : -1;
            if (s < 0) {
                rc = bad(x, full, "must be f32, f16 or int8");
            } else {
                n->cfg.storage = (sc_storage)s;
            }
        } else if (strcmp(k, "backend") == 0) {
            const char *b = json_is_string(v) ? json_string_value(v) : "";
            if (sc_index_backend_find(b) == NULL) {
                rc = bad(x, full, "must be flat, auto, ivf-flat or ivf-sq8");
            } else if (strcmp(b, "auto") != 0 &&
                       !sc_index_backend_available(b)) {
                rc = bad(x, full,
                         "'%s' needs a server built with FAISS; this one has "
                         "none ('flat', or 'auto', which scans flat here)",
                         b);
            } else {
                snprintf(n->cfg.backend, sizeof(n->cfg.backend), "%s", b);
            }
        } else if (strcmp(k, "nlist") == 0 || strcmp(k, "nprobe") == 0) {
            if ((rc = get_int(x, full, v, 0, 65536, &u)) == SC_OK) {
                *(k[1] == 'l' ? &n->cfg.nlist : &n->cfg.nprobe) = (uint32_t)u;
            }
        } else if (strcmp(k, "train_min") == 0) {
            if ((rc = get_int(x, full, v, 0, UINT32_MAX, &u)) == SC_OK) {
                n->cfg.train_min = (uint32_t)u;
            }
        } else if (strcmp(k, "threshold") == 0) {
            if ((rc = get_real(x, full, v, -1, 1, &d)) == SC_OK) {
                n->cfg.threshold = (float)d;
                n->cfg.auto_threshold = false;
            }
        } else if (strcmp(k, "margin") == 0) {
            if ((rc = get_real(x, full, v, 0, 2, &d)) == SC_OK) {
                n->cfg.margin = (float)d;
                n->cfg.auto_margin = false;
            }
        } else if (strcmp(k, "ttl") == 0) {
            if ((rc = get_real(x, full, v, 0, 1e10, &d)) == SC_OK) {
                n->cfg.ttl_ms = (uint64_t)(d * 1000.0);
                if (d > 0 && n->cfg.ttl_ms == 0) {
                    n->cfg.ttl_ms = 1; /* under 1 ms is not "never" */
                }
            }
        } else if (strcmp(k, "ttl_mode") == 0) {
            const char *s = json_is_string(v) ? json_string_value(v) : "";
            if (strcmp(s, "absolute") == 0) {
                n->cfg.ttl_mode = SC_TTL_ABSOLUTE;
            } else if (strcmp(s, "sliding") == 0) {
                n->cfg.ttl_mode = SC_TTL_SLIDING;
            } else {
                rc = bad(x, full, "must be \"absolute\" or \"sliding\"");
            }
        } else if (strcmp(k, "vote") == 0) {
            bool vote = false;
            if ((rc = get_bool(x, full, v, &vote)) == SC_OK) {
                n->cfg.vote = vote ? 1 : 0;
            }
        } else if (strcmp(k, "embed_model") == 0) {
            char *m = NULL;
            if ((rc = get_str(x, full, v, SC_CACHE_TAG_MAX, &m)) == SC_OK) {
                memcpy(n->cfg.embed_model, m, strlen(m) + 1);
            }
            free(m);
        } else if (strcmp(k, "max_entries") == 0) {
            rc = get_int(x, full, v, 0, UINT64_MAX >> 1, &n->cfg.max_entries);
        } else if (strcmp(k, "max_bytes") == 0) {
            rc = get_int(x, full, v, 0, UINT64_MAX >> 1, &n->cfg.max_bytes);
        } else if (strcmp(k, "max_response_bytes") == 0) {
            rc = get_int(x, full, v, 1, SC_CACHE_RESPONSE_LIMIT,
                         &n->cfg.max_response_bytes);
        } else {
            rc = bad(x, full, "unknown key");
        }
        if (rc != SC_OK) {
            return rc;
        }
    }
    if (strcmp(n->cfg.backend, "") != 0 &&
        strcmp(n->cfg.backend, "flat") != 0 &&
        n->cfg.storage != SC_STORAGE_F32) {
        return bad(x, key, "backend '%s' needs storage f32", n->cfg.backend);
    }
    cfg->nns++;
    return SC_OK;
}

static sc_err parse_targets(ctx *x, sc_config *cfg, json_t *o)
{
    if (!json_is_object(o)) {
        return bad(x, "cost_targets", "must be an object");
    }
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        int kind = strcmp(k, "namespaces") == 0 ? SC_COST_TARGET_NS
                   : strcmp(k, "features") == 0 ? SC_COST_TARGET_FEATURE
                                                : -1;
        char key[64];
        snprintf(key, sizeof(key), "cost_targets.%.40s", k);
        if (kind < 0) {
            return bad(x, key, "unknown key (namespaces or features)");
        }
        if (!json_is_object(v)) {
            return bad(x, key, "must be an object of NAME: dollars");
        }
        const char *name;
        json_t *usd;
        json_object_foreach(v, name, usd)
        {
            char full[128];
            snprintf(full, sizeof(full), "%s.%.60s", key, name);
            double dv = 0;
            sc_err rc = get_real(x, full, usd, 0, 1e6, &dv);
            if (rc != SC_OK) {
                return rc;
            }
            if (strlen(name) == 0 || strlen(name) > SC_CACHE_TAG_MAX) {
                return bad(x, full, "names are 1..%u bytes", SC_CACHE_TAG_MAX);
            }
            /* A later --config file's target replaces an earlier one's,
             * as every other setting does: appended, it would never be
             * read (the dispatcher takes the first match). */
            size_t j = 0;
            while (j < cfg->ntargets &&
                   (cfg->targets[j].kind != kind ||
                    strcmp(cfg->targets[j].name, name) != 0)) {
                j++;
            }
            if (j < cfg->ntargets) {
                cfg->targets[j].usd_per_request = dv;
                continue;
            }
            if (cfg->ntargets >= SC_CONFIG_MAX_NS * 4) {
                return bad(x, full, "too many cost targets");
            }
            sc_cost_target *g =
                realloc(cfg->targets, (cfg->ntargets + 1) * sizeof(*g));
            if (g == NULL) {
                return bad(x, full, "out of memory");
            }
            cfg->targets = g;
            sc_cost_target *t = &g[cfg->ntargets++];
            memset(t, 0, sizeof(*t));
            t->kind = kind;
            memcpy(t->name, name, strlen(name) + 1);
            t->usd_per_request = dv;
        }
    }
    return SC_OK;
}

/* ---- access keys ---------------------------------------------------- */

/* jansson's error text without the "near '...'" that quotes the file,
 * which may hold a secret. */
static const char *quiet(json_error_t *je)
{
    /* A duplicate key's "near" text is the key itself, which the message
     * must name (CONFIG.md); other errors' may be a secret's value. */
    if (json_error_code(je) == json_error_duplicate_key) {
        return je->text;
    }
    char *near = strstr(je->text, " near '");
    if (near != NULL) {
        *near = '\0';
    }
    return je->text;
}

/* json_load_file() with duplicate keys refused, but a file that cannot
 * be opened is said in je->text as "cannot open: " and strerror(errno),
 * whole (line -1, position 0): jansson's own text quotes the path and is
 * cut at 160 bytes, which for a long path left the reason out. */
static json_t *load_json(const char *path, json_error_t *je)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        int err = errno;
        memset(je, 0, sizeof(*je));
        je->line = -1;
        je->column = -1;
        snprintf(je->text, sizeof(je->text), "cannot open: %s", strerror(err));
        return NULL;
    }
    json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES, je);
    fclose(f);
    return root;
}

/* Writes "FILE:LINE:COLUMN" for a parse error, or "FILE" alone where
 * jansson has no position (-1:-1: the file could not be opened or
 * read). */
static void at(char *out, size_t cap, const char *file, const json_error_t *je)
{
    if (je->line > 0) {
        snprintf(out, cap, "%s:%d:%d", file, je->line, je->column);
    } else {
        snprintf(out, cap, "%s", file);
    }
}

/* Appends the patterns of array v (read or write) to k's grants. */
static sc_err parse_grants(ctx *x, const char *key, sc_key *k, json_t *v,
                           bool write)
{
    if (!json_is_array(v)) {
        return bad(x, key, "must be an array of namespaces or PREFIX*");
    }
    size_t i;
    json_t *p;
    json_array_foreach(v, i, p)
    {
        const char *s = json_is_string(p) ? json_string_value(p) : NULL;
        size_t n = s != NULL ? strlen(s) : 0;
        bool prefix = n > 0 && s[n - 1] == '*';
        size_t m = n - prefix;
        if (s == NULL || n != json_string_length(p) || n == 0 ||
            m > SC_CACHE_NS_NAME_MAX) {
            return bad(x, key,
                       "names are 1..%u bytes, '*' at the end for "
                       "a prefix",
                       SC_CACHE_NS_NAME_MAX);
        }
        for (size_t j = 0; j < m; j++) {
            char c = s[j];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
                  c == '-')) {
                return bad(x, key,
                           "namespace names hold A-Z a-z 0-9 . _ : - "
                           "(and a '*' at the end for a prefix)");
            }
        }
        if (k->ngrants == SC_CONFIG_MAX_GRANTS) {
            return bad(x, key, "at most %d patterns a key",
                       SC_CONFIG_MAX_GRANTS);
        }
        sc_key_grant *g = realloc(k->grants, (k->ngrants + 1) * sizeof(*g));
        if (g == NULL) {
            return bad(x, key, "out of memory");
        }
        k->grants = g;
        g = &g[k->ngrants++];
        memset(g, 0, sizeof(*g));
        memcpy(g->pattern, s, m);
        g->prefix = prefix;
        g->write = write;
    }
    return SC_OK;
}

/* One key object of the "keys" array (index i). Messages name the key by
 * its index and name, never by its secret. */
static sc_err parse_key(ctx *x, sc_config *cfg, size_t i, json_t *o)
{
    char where[48];
    snprintf(where, sizeof(where), "keys[%zu]", i);
    if (!json_is_object(o)) {
        return bad(x, where,
                   "must be an object {key, name, read, write, "
                   "admin}");
    }
    if (cfg->nkeys == SC_CONFIG_MAX_KEYS) {
        return bad(x, where, "at most %d keys", SC_CONFIG_MAX_KEYS);
    }
    sc_key *grown = realloc(cfg->keys, (cfg->nkeys + 1) * sizeof(*grown));
    if (grown == NULL) {
        return bad(x, where, "out of memory");
    }
    cfg->keys = grown;
    sc_key *k = &cfg->keys[cfg->nkeys++]; /* counted now: fini frees it */
    memset(k, 0, sizeof(*k));
    const char *f;
    json_t *v;
    json_object_foreach(o, f, v)
    {
        char full[96];
        snprintf(full, sizeof(full), "%s.%.40s", where, f);
        sc_err rc = SC_OK;
        if (strcmp(f, "key") == 0) {
            size_t n = json_is_string(v) ? json_string_length(v) : 0;
            if (n < SC_KEY_MIN || n > SC_KEY_MAX ||
                strlen(json_string_value(v)) != n) {
                rc = bad(x, full,
                         "must be a string of %d..%d bytes with no "
                         "NUL",
                         SC_KEY_MIN, SC_KEY_MAX);
            } else {
                memcpy(k->secret, json_string_value(v), n);
                k->len = (uint32_t)n;
            }
        } else if (strcmp(f, "name") == 0) {
            size_t n = json_is_string(v) ? json_string_length(v) : 0;
            if (n == 0 || n > SC_KEY_NAME_MAX ||
                strlen(json_string_value(v)) != n) {
                rc = bad(x, full, "must be 1..%d bytes with no NUL",
                         SC_KEY_NAME_MAX);
            } else {
                memcpy(k->name, json_string_value(v), n + 1);
            }
        } else if (strcmp(f, "read") == 0 || strcmp(f, "write") == 0) {
            rc = parse_grants(x, full, k, v, f[0] == 'w');
        } else if (strcmp(f, "admin") == 0) {
            rc = get_bool(x, full, v, &k->admin);
        } else {
            rc = bad(x, full, "unknown key");
        }
        if (rc != SC_OK) {
            return rc;
        }
    }
    if (k->len == 0) {
        return bad(x, where, "needs 'key', the secret");
    }
    if (k->name[0] == '\0') {
        return bad(x, where, "needs 'name', a label for logs and metrics");
    }
    for (size_t j = 0; j + 1 < cfg->nkeys; j++) {
        const sc_key *o2 = &cfg->keys[j];
        if (strcmp(o2->name, k->name) == 0) {
            return bad(x, where, "the name '%s' is taken by another key",
                       k->name);
        }
        if (o2->len == k->len && memcmp(o2->secret, k->secret, k->len) == 0) {
            return bad(x, where, "the same secret as key '%s'", o2->name);
        }
    }
    return SC_OK;
}

static sc_err parse_keys(ctx *x, sc_config *cfg, json_t *v)
{
    if (!json_is_array(v)) {
        return bad(x, "keys",
                   "must be an array of {key, name, read, write, "
                   "admin}");
    }
    size_t i;
    json_t *o;
    json_array_foreach(v, i, o)
    {
        sc_err rc = parse_key(x, cfg, i, o);
        if (rc != SC_OK) {
            return rc;
        }
    }
    return SC_OK;
}

/* keys_file: a JSON file holding the "keys" array, so that the secrets
 * can live apart from the rest, readable by semcached only. */
static sc_err parse_keys_file(ctx *x, sc_config *cfg, json_t *v)
{
    char *file = NULL;
    sc_err rc = get_str(x, "keys_file", v, SC_CONFIG_PATH_MAX, &file);
    if (rc != SC_OK) {
        return rc;
    }
    json_error_t je;
    json_t *root = load_json(file, &je);
    if (root == NULL) {
        /* jansson's text names a position, never the file's content. */
        char where[SC_CONFIG_PATH_MAX + 32];
        at(where, sizeof(where), file, &je);
        snprintf(x->msg, x->cap, "%s: key 'keys_file': %s: %s", x->path, where,
                 quiet(&je));
        free(file);
        return SC_EINVAL;
    }
    ctx fx = {file, x->msg, x->cap};
    rc = parse_keys(&fx, cfg, root);
    json_decref(root);
    free(file);
    return rc;
}

sc_err sc_config_load(sc_config *cfg, const char *path, char *msg, size_t cap)
{
    ctx x = {path, msg, cap};
    json_error_t je;
    /* Duplicate keys are an error: which one wins would be a guess. */
    json_t *root = load_json(path, &je);
    if (root == NULL) {
        char where[SC_CONFIG_PATH_MAX + 32];
        at(where, sizeof(where), path, &je);
        snprintf(msg, cap, "%s: %s", where, quiet(&je));
        return je.line <= 0 && je.position == 0 ? SC_EIO : SC_EINVAL;
    }
    sc_err rc = SC_OK;
    if (!json_is_object(root)) {
        snprintf(msg, cap, "%s: the configuration is one JSON object", path);
        rc = SC_EINVAL;
    }
    const char *k;
    json_t *v;
    if (rc == SC_OK) {
        json_object_foreach(root, k, v)
        {
            const sc_config_num *num = sc_config_num_by_key(k);
            if (num != NULL) {
                rc = get_num(&x, cfg, num, v);
            } else if (strcmp(k, "listen") == 0) {
                rc = parse_listen(&x, cfg, v);
            } else if (strcmp(k, "tls_cert") == 0) {
                rc = get_str(&x, k, v, SC_CONFIG_PATH_MAX, &cfg->tls_cert);
            } else if (strcmp(k, "prices") == 0) {
                rc = get_str(&x, k, v, SC_CONFIG_PATH_MAX, &cfg->prices);
            } else if (strcmp(k, "http") == 0) {
                rc = get_str(&x, k, v, 1024, &cfg->http);
                if (rc == SC_OK && sc_http_addr_check(cfg->http) != SC_OK) {
                    rc = bad(&x, k, SC_HTTP_ADDR_FORM);
                }
            } else if (strcmp(k, "data_dir") == 0) {
                rc = get_str(&x, k, v, SC_CONFIG_PATH_MAX, &cfg->data_dir);
            } else if (strcmp(k, "embed_table") == 0) {
                rc = get_str(&x, k, v, SC_CONFIG_PATH_MAX, &cfg->embed_table);
            } else if (strcmp(k, "persist") == 0) {
                rc = get_bool(&x, k, v, &cfg->persist);
            } else if (strcmp(k, "snapshot_at_stop") == 0) {
                rc = get_bool(&x, k, v, &cfg->snapshot_at_stop);
            } else if (strcmp(k, "fsync") == 0) {
                if (!json_is_string(v) ||
                    !sc_persist_fsync_parse(json_string_value(v),
                                            &cfg->fsync)) {
                    rc = bad(&x, k,
                             "must be \"always\", \"everysec\" or \"no\"");
                }
                cfg->fsync_given = true;
            } else if (strcmp(k, "proxy") == 0) {
                rc = parse_proxy(&x, cfg, v);
            } else if (strcmp(k, "cost_targets") == 0) {
                rc = parse_targets(&x, cfg, v);
            } else if (strcmp(k, "keys") == 0) {
                rc = parse_keys(&x, cfg, v);
            } else if (strcmp(k, "keys_file") == 0) {
                rc = parse_keys_file(&x, cfg, v);
            } else if (strcmp(k, "namespaces") == 0) {
                if (!json_is_object(v)) {
                    rc = bad(&x, k, "must be an object of NAME: {...}");
                } else {
                    const char *nk;
                    json_t *nv;
                    json_object_foreach(v, nk, nv)
                    {
                        if ((rc = parse_ns(&x, cfg, nk, nv)) != SC_OK) {
                            break;
                        }
                    }
                }
            } else {
                rc = bad(&x, k, "unknown key");
            }
            if (rc != SC_OK) {
                break;
            }
        }
    }
    json_decref(root);
    return rc;
}

sc_err sc_config_state_path(const sc_config *cfg, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%s", cfg->data_dir, SC_CONFIG_STATE_DIR);
    return n < 0 || (size_t)n >= cap ? SC_ETOOBIG : SC_OK;
}
