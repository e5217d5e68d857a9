/* proxy.c - the OpenAI-compatible caching proxy (proxy.h, docs/PROXY.md).
 * nng's HTTP server calls on_request on its own few threads, which also
 * carry every completion of the nng socket's I/O: there we only start
 * reading the body. Once it is in, the request is queued to our lookup
 * threads, which parse it, derive the scope and, for a plain request with
 * the built-in embedder, look it up and answer a hit at once. Everything
 * that waits on the network (upstream calls, upstream embeddings, streams)
 * is queued from there to our worker threads, each with its own libcurl
 * handle (so connections to the upstream are reused). A stream takes the
 * connection over (nng_http_hijack) and writes the server-sent events
 * itself. */
#define _GNU_SOURCE
#include "proto/proxy.h"

#include "common/sc_hook.h"
#include "common/sc_utf8.h"
#include "common/sc_vec.h"
#include "proto/config.h"
#include "proto/http.h"
#include "proto/pool.h"

#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <xxhash.h>

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <nng/supplemental/util/platform.h>

#define CHAT_PATH      "/v1/chat/completions"
#define BODY_TIMEOUT   10000 /* ms: a request body after its headers */
#define DUMP_CANON     (JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII)
#define MAX_TEXT_PARTS 256
/* A chat body may open one JSON object or array for each CONTAINER_BYTES
 * of its size (SC_HTTP_MAX_CONTAINERS at least) before it is parsed: a
 * real one spends more than that on each (a message's role and content,
 * a tool schema's keys), while a body of "{}," three bytes apiece made a
 * 4 MiB parse hold 300 MB (sc_http_json_containers_over). */
#define CONTAINER_BYTES 16
/* What jansson may hold while it parses a chat body of n bytes: 16n plus
 * 4 MiB (sc_http_json_loadb_max), one allocation more is 413 too_big. A
 * conversation of one-word messages costs 16 times its text, an empty
 * string 25 times: a 4 MiB body of "", held 106 MB for its parse. */
#define PARSE_FACTOR    16u
#define PARSE_BUDGET(n) ((size_t)PARSE_FACTOR * (n) + SC_HTTP_PARSE_FLOOR)

/* ---- configuration ---------------------------------------------------- */

void sc_proxy_config_init(sc_proxy_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->history = SC_PROXY_HISTORY_EXACT;
}

/* The proxy's numeric flags and their keys of the configuration's
 * "proxy" object: one range check and one refusal text ("must be
 * 1..3600000 ms") with the daemon's own (config.h, sc_config_num). The
 * keys are read here only: config.c's parse_proxy takes them, and their
 * flags, from this table (sc_proxy_num_by_key), as it takes the other
 * flags' from proxy_strs below (sc_proxy_flag_by_key). */
static const sc_config_num proxy_nums[] = {
    SC_CONFIG_NUM(sc_proxy_config, "--upstream-timeout", "upstream_timeout", 1,
                  3600000, "ms", timeout_ms),
    SC_CONFIG_NUM(sc_proxy_config, "--upstream-max-duration",
                  "upstream_max_duration", 1, SC_PROXY_MAX_MAX_DURATION_MS,
                  "ms", max_duration_ms),
    SC_CONFIG_NUM(sc_proxy_config, "--proxy-client-timeout", "client_timeout",
                  1, 3600000, "ms", client_timeout_ms),
    SC_CONFIG_NUM(sc_proxy_config, "--proxy-workers", "workers", 1,
                  SC_PROXY_MAX_WORKERS, "", workers),
};

_Static_assert(sizeof(proxy_nums) / sizeof(proxy_nums[0]) == SC_PROXY_NNUMS,
               "SC_PROXY_NNUMS counts proxy_nums");
/* sc_config_num_parse tells a row of this table from one of the daemon's
 * by its struct's size (sc_config_num's of). */
_Static_assert(sizeof(sc_proxy_config) != sizeof(sc_config),
               "sc_proxy_config and sc_config differ in size");

const sc_config_num *sc_proxy_num_at(size_t i)
{
    return i < SC_PROXY_NNUMS ? &proxy_nums[i] : NULL;
}

const sc_config_num *sc_proxy_num_by_key(const char *key)
{
    for (size_t i = 0; i < SC_PROXY_NNUMS; i++) {
        if (strcmp(key, proxy_nums[i].key) == 0) {
            return &proxy_nums[i];
        }
    }
    return NULL;
}

static bool ns_name_ok(const char *s);

/* The parsers of the proxy's other flags, one per flag: each takes value
 * into cfg (borrowed, as sc_proxy_parse_flag says) and returns true, or
 * writes its refusal, naming flag, into msg and returns false. */
static bool parse_upstream(sc_proxy_config *cfg, const char *flag,
                           const char *value, char *msg, size_t cap)
{
    /* Checked here, as sc_proxy_open checks it, so that a bad URL is
     * refused with the flag or key named before anything starts. */
    if ((strncmp(value, "http://", 7) != 0 &&
         strncmp(value, "https://", 8) != 0) ||
        strpbrk(value, " \r\n\t") != NULL) {
        snprintf(msg, cap,
                 "%s must be an http:// or https:// URL without spaces", flag);
        return false;
    }
    cfg->upstream = value;
    return true;
}

static bool parse_ns(sc_proxy_config *cfg, const char *flag, const char *value,
                     char *msg, size_t cap)
{
    if (!ns_name_ok(value)) {
        snprintf(msg, cap,
                 "%s must be a namespace name (1..%u bytes of "
                 "A-Z a-z 0-9 . _ : -)",
                 flag, SC_CACHE_NS_NAME_MAX);
        return false;
    }
    cfg->ns = value;
    return true;
}

static bool parse_history(sc_proxy_config *cfg, const char *flag,
                          const char *value, char *msg, size_t cap)
{
    if (strcmp(value, "exact") == 0) {
        cfg->history = SC_PROXY_HISTORY_EXACT;
    } else if (strcmp(value, "single") == 0) {
        cfg->history = SC_PROXY_HISTORY_SINGLE;
    } else if (strcmp(value, "ignore") == 0) {
        cfg->history = SC_PROXY_HISTORY_IGNORE;
    } else {
        snprintf(msg, cap, "%s must be exact, single or ignore", flag);
        return false;
    }
    return true;
}

static bool parse_store(sc_proxy_config *cfg, const char *flag,
                        const char *value, char *msg, size_t cap)
{
    cfg->store_tool_calls = cfg->store_truncated = false;
    const char *p = value;
    while (*p != '\0') {
        size_t k = strcspn(p, ",");
        if (k == 4 && strncmp(p, "stop", 4) == 0) {
        } else if (k == 10 && strncmp(p, "tool_calls", 10) == 0) {
            cfg->store_tool_calls = true;
        } else if (k == 6 && strncmp(p, "length", 6) == 0) {
            cfg->store_truncated = true;
        } else {
            snprintf(msg, cap, "%s takes a list of stop, tool_calls, length",
                     flag);
            return false;
        }
        p += k + (p[k] == ',');
    }
    return true;
}

static bool parse_embed_model(sc_proxy_config *cfg, const char *flag,
                              const char *value, char *msg, size_t cap)
{
    if (value[0] == '\0' || strlen(value) > SC_CACHE_TAG_MAX) {
        snprintf(msg, cap, "%s must be 1..%u bytes", flag, SC_CACHE_TAG_MAX);
        return false;
    }
    cfg->embed_model = value;
    return true;
}

/* The proxy's other flags (a URL, a name, a choice, a list) and their
 * keys of the configuration's "proxy" object: each pair written here
 * only, as proxy_nums writes the numeric ones, and taken by config.c's
 * parse_proxy through sc_proxy_flag_by_key. */
static const struct {
    const char *flag, *key;
    bool (*parse)(sc_proxy_config *cfg, const char *flag, const char *value,
                  char *msg, size_t cap);
} proxy_strs[] = {
    {"--upstream", "upstream", parse_upstream},
    {"--proxy-ns", "ns", parse_ns},
    {"--proxy-history", "history", parse_history},
    {"--proxy-store", "store", parse_store},
    {"--proxy-embed-model", "embed_model", parse_embed_model},
};

_Static_assert(sizeof(proxy_strs) / sizeof(proxy_strs[0]) == SC_PROXY_NSTRS,
               "SC_PROXY_NSTRS counts proxy_strs");

const char *sc_proxy_str_at(size_t i, const char **flag)
{
    if (i >= SC_PROXY_NSTRS) {
        return NULL;
    }
    *flag = proxy_strs[i].flag;
    return proxy_strs[i].key;
}

const char *sc_proxy_flag_by_key(const char *key)
{
    const sc_config_num *n = sc_proxy_num_by_key(key);
    if (n != NULL) {
        return n->flag;
    }
    for (size_t i = 0; i < SC_PROXY_NSTRS; i++) {
        if (strcmp(key, proxy_strs[i].key) == 0) {
            return proxy_strs[i].flag;
        }
    }
    return NULL;
}

int sc_proxy_parse_flag(sc_proxy_config *cfg, const char *flag,
                        const char *value, char *msg, size_t cap)
{
    for (size_t i = 0; i < SC_PROXY_NNUMS; i++) {
        if (strcmp(flag, proxy_nums[i].flag) == 0) {
            char why[80];
            if (sc_config_num_parse(cfg, sizeof(*cfg), &proxy_nums[i], value,
                                    why, sizeof(why)) != SC_OK) {
                snprintf(msg, cap, "%s %s", flag, why);
                return -1;
            }
            return 1;
        }
    }
    for (size_t i = 0; i < SC_PROXY_NSTRS; i++) {
        if (strcmp(flag, proxy_strs[i].flag) == 0) {
            return proxy_strs[i].parse(cfg, flag, value, msg, cap) ? 1 : -1;
        }
    }
    return 0;
}

/* ---- the derivation --------------------------------------------------- */

/* Top-level fields that do not change the answer, and so stay out of the
 * scope; every other field is in it, known or not (an upstream's own
 * parameters, say vLLM's top_k, change answers too). `model` and
 * `messages` enter the scope their own way; `n` other than 1 is not
 * cached. */
static const char *const unscoped_fields[] = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "n",
    "user",
    "metadata",
    "store",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
};

static bool is_unscoped(const char *k)
{
    for (size_t i = 0; i < sizeof(unscoped_fields) / sizeof(*unscoped_fields);
         i++) {
        if (strcmp(k, unscoped_fields[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* Of those, the real-valued ones: 1 and 1.0 mean the same. */
static const char *const real_params[] = {
    "temperature", "top_p", "presence_penalty", "frequency_penalty"};

static bool is_real_param(const char *k)
{
    for (size_t i = 0; i < sizeof(real_params) / sizeof(real_params[0]); i++) {
        if (strcmp(k, real_params[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* Feeds the canonical JSON of v into st; -1 when out of memory. */
static int hash_json(XXH3_state_t *st, const json_t *v)
{
    char *s = sc_http_json_dumps(v, DUMP_CANON | JSON_ENCODE_ANY);
    if (s == NULL) {
        return -1;
    }
    XXH3_64bits_update(st, s, strlen(s));
    XXH3_64bits_update(st, "\n", 1);
    free(s);
    return 0;
}

static bool is_system_role(const char *r)
{
    return strcmp(r, "system") == 0 || strcmp(r, "developer") == 0;
}

/* The text of a user message's content: a string, or an array of text
 * parts joined by newlines. Returns 0 and a malloc'd copy, 1 when the
 * content is not text alone, -1 when out of memory. */
static int content_text(const json_t *c, char **out, size_t *len)
{
    if (json_is_string(c)) {
        size_t n = json_string_length(c);
        char *t = malloc(n + 1);
        if (t == NULL) {
            return -1;
        }
        memcpy(t, json_string_value(c), n);
        t[n] = '\0';
        *out = t;
        *len = n;
        return 0;
    }
    if (!json_is_array(c) || json_array_size(c) == 0 ||
        json_array_size(c) > MAX_TEXT_PARTS) {
        return 1;
    }
    size_t total = 0, i;
    json_t *part;
    json_array_foreach(c, i, part)
    {
        const json_t *ty = json_object_get(part, "type");
        const json_t *tx = json_object_get(part, "text");
        if (!json_is_string(ty) || strcmp(json_string_value(ty), "text") != 0 ||
            !json_is_string(tx)) {
            return 1;
        }
        total += json_string_length(tx) + 1;
    }
    char *t = malloc(total + 1), *o = t;
    if (t == NULL) {
        return -1;
    }
    json_array_foreach(c, i, part)
    {
        const json_t *tx = json_object_get(part, "text");
        if (i > 0) {
            *o++ = '\n';
        }
        memcpy(o, json_string_value(tx), json_string_length(tx));
        o += json_string_length(tx);
    }
    *o = '\0';
    *out = t;
    *len = (size_t)(o - t);
    return 0;
}

static sc_err derive_fail(sc_proxy_plan *out, char *msg, size_t cap,
                          const char *why)
{
    free(out->text);
    memset(out, 0, sizeof(*out));
    snprintf(msg, cap, "%s", why);
    return SC_EINVAL;
}

static sc_err derive_oom(sc_proxy_plan *out, char *msg, size_t cap)
{
    (void)derive_fail(out, msg, cap, "out of memory");
    return SC_ENOMEM;
}

static void not_cacheable(sc_proxy_plan *out, const char *why)
{
    out->cacheable = false;
    out->why_not = why;
    free(out->text);
    out->text = NULL;
    out->text_len = 0;
}

sc_err sc_proxy_derive(const json_t *req, sc_proxy_history h,
                       sc_proxy_plan *out, char *msg, size_t cap)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(req)) {
        return derive_fail(out, msg, cap, "the body must be a JSON object");
    }
    const json_t *model = json_object_get(req, "model");
    const json_t *msgs = json_object_get(req, "messages");
    if (!json_is_string(model) || json_string_length(model) == 0) {
        return derive_fail(out, msg, cap,
                           "'model' is required and must be a string");
    }
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        return derive_fail(out, msg, cap,
                           "'messages' is required and must be a non-empty "
                           "array");
    }
    size_t i, nmsg = json_array_size(msgs);
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        if (!json_is_object(m) || !json_is_string(json_object_get(m, "role"))) {
            snprintf(msg, cap,
                     "messages[%zu] must be an object with a string 'role'", i);
            memset(out, 0, sizeof(*out));
            return SC_EINVAL;
        }
    }
    const json_t *st = json_object_get(req, "stream");
    if (st != NULL && !json_is_boolean(st) && !json_is_null(st)) {
        return derive_fail(out, msg, cap, "'stream' must be a boolean");
    }
    out->stream = json_is_true(st);
    const json_t *so = json_object_get(req, "stream_options");
    out->include_usage = json_is_true(json_object_get(so, "include_usage"));
    out->cacheable = true;
    if (json_string_length(model) > SC_CACHE_TAG_MAX ||
        strlen(json_string_value(model)) != json_string_length(model)) {
        not_cacheable(out, "model_name");
        snprintf(out->model, sizeof(out->model), "%s", "");
        return SC_OK;
    }
    memcpy(out->model, json_string_value(model), json_string_length(model));
    const json_t *n = json_object_get(req, "n");
    if (n != NULL && !json_is_null(n) &&
        !(json_is_integer(n) && json_integer_value(n) == 1)) {
        not_cacheable(out, "n");
        return SC_OK;
    }
    const json_t *last = json_array_get(msgs, nmsg - 1);
    if (strcmp(json_string_value(json_object_get(last, "role")), "user") != 0) {
        not_cacheable(out, "last_not_user");
        return SC_OK;
    }
    int crc = content_text(json_object_get(last, "content"), &out->text,
                           &out->text_len);
    if (crc < 0) {
        return derive_oom(out, msg, cap);
    }
    if (crc > 0) {
        not_cacheable(out, "non_text");
        return SC_OK;
    }
    if (out->text_len == 0 || out->text_len > SC_CACHE_TEXT_MAX) {
        not_cacheable(out, out->text_len == 0 ? "empty_text" : "text_size");
        return SC_OK;
    }
    /* Three hashes: the parameters, the system prompt, the earlier turns. */
    XXH3_state_t *hp = XXH3_createState(), *hs = XXH3_createState(),
                 *hh = XXH3_createState();
    json_t *params = json_object();
    int bad = hp == NULL || hs == NULL || hh == NULL || params == NULL;
    if (!bad) {
        XXH3_64bits_reset(hp);
        XXH3_64bits_reset(hs);
        XXH3_64bits_reset(hh);
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)req, key, v)
    {
        if (bad || is_unscoped(key)) {
            continue;
        }
        json_t *c = json_is_integer(v) && is_real_param(key)
                        ? json_real((double)json_integer_value(v))
                        : json_incref(v);
        bad = c == NULL || json_object_set_new(params, key, c);
    }
    bad = bad || hash_json(hp, params) != 0;
    /* The last message's fields beside its role and content (OpenAI's
     * `name`: "what is my name?" asked by alice and by bob). */
    if (!bad && json_object_size(last) > 2) {
        json_t *rest = json_object();
        bad = rest == NULL;
        json_object_foreach((json_t *)last, key, v)
        {
            if (!bad && strcmp(key, "role") != 0 &&
                strcmp(key, "content") != 0) {
                bad = json_object_set(rest, key, v) != 0;
            }
        }
        if (!bad) {
            XXH3_64bits_update(hp, "last\n", 5);
            bad = hash_json(hp, rest) != 0;
        }
        json_decref(rest);
    }
    size_t turns = 0;
    for (i = 0; !bad && i + 1 < nmsg; i++) {
        m = json_array_get(msgs, i);
        if (is_system_role(json_string_value(json_object_get(m, "role")))) {
            bad = hash_json(hs, m) != 0;
        } else {
            turns++;
            bad = hash_json(hh, m) != 0;
        }
    }
    uint64_t xp = bad ? 0 : XXH3_64bits_digest(hp);
    uint64_t xs = bad ? 0 : XXH3_64bits_digest(hs);
    uint64_t xh = bad ? 0 : XXH3_64bits_digest(hh);
    XXH3_freeState(hp);
    XXH3_freeState(hs);
    XXH3_freeState(hh);
    json_decref(params);
    if (bad) {
        return derive_oom(out, msg, cap);
    }
    if (turns > 0 && h == SC_PROXY_HISTORY_SINGLE) {
        not_cacheable(out, "multi_turn");
        return SC_OK;
    }
    if (turns == 0 || h == SC_PROXY_HISTORY_IGNORE) {
        xh = 0;
    }
    snprintf(out->scope, sizeof(out->scope),
             "oai1|%s|p%016llx|s%016llx|h%016llx", out->model,
             (unsigned long long)xp, (unsigned long long)xs,
             (unsigned long long)xh);
    return SC_OK;
}

void sc_proxy_plan_fini(sc_proxy_plan *p)
{
    if (p != NULL) {
        free(p->text);
        p->text = NULL;
    }
}

/* ---- the proxy -------------------------------------------------------- */

typedef struct preq preq;

struct sc_proxy {
    nng_http_server *srv;
    nng_http_handler *hd;
    sc_cache *cache;
    sc_dispatch *dispatch;
    char ns[SC_CACHE_NS_NAME_MAX + 1];
    char *chat_url, *embed_url;
    char embed_model[SC_CACHE_TAG_MAX + 1]; /* "" = the built-in embedder */
    uint32_t timeout_ms;
    uint32_t max_duration_ms;
    uint32_t client_timeout_ms;
    size_t body_max;
    sc_proxy_history history;
    bool store_tool_calls, store_truncated;
    sc_pool *workers; /* each with its own libcurl handle */
    sc_pool *lookers; /* the lookup threads */
    pthread_mutex_t mu;
    pthread_cond_t donecv; /* nlive, route_live */
    preq *live;            /* every request not yet answered */
    unsigned nlive;
    bool route_live; /* nng still holds our handler's data */
    bool closing;
    sc_proxy_counts counts;
    uint64_t seq;
};

/* One request, from its headers to its answer. */
struct preq {
    sc_proxy *p;
    preq *prev, *next; /* p->live */
    sc_pool_job job;   /* in p->lookers, then p->workers */
    bool body_in;      /* under p->mu: the body is read, or none was */
    nng_aio *haio;       /* the handler's */
    nng_http_req *req;   /* nng's until hijacked, then ours */
    nng_http_conn *conn; /* nng's until hijacked, then ours */
    bool hijacked;
    nng_aio *baio; /* reads the body */
    nng_aio *waio; /* writes a hijacked connection */
    nng_duration waited; /* ms the writes to it have taken, in all */
    bool dropped;        /* a write to it failed (counted once) */
    bool stop_cut;       /* the stop cut its stream (counted once) */
    char *body;
    size_t len;
    json_t *root;
    sc_proxy_plan plan;
    /* From the headers. */
    char *auth, *org, *project; /* forwarded upstream, never logged */
    char ns[SC_CACHE_NS_NAME_MAX + 1];
    char feature[SC_CACHE_TAG_MAX + 1], user[SC_CACHE_TAG_MAX + 1];
    bool has_feature, has_user;
    bool skip, no_store, has_threshold;
    float threshold;
    bool can_write;
    /* The lookup. */
    bool looked_up;
    float best; /* NAN = no candidate */
    float vec[SC_INDEX_MAX_DIM];
    uint32_t dim; /* 0 = the cache embeds the text */
    uint64_t embed_tokens;
};

static void count(sc_proxy *p, uint64_t *c)
{
    (void)p;
    __atomic_add_fetch(c, 1, __ATOMIC_RELAXED);
}

void sc_proxy_get_counts(sc_proxy *p, sc_proxy_counts *out)
{
    uint64_t *src = (uint64_t *)&p->counts, *dst = (uint64_t *)out;
    for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++) {
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    }
}

/* Unlinks and frees pr; its aio must be finished (or never begun). */
static void preq_done(preq *pr)
{
    sc_proxy *p = pr->p;
    /* Unlinked first: sc_proxy_close walks the list under the lock. */
    pthread_mutex_lock(&p->mu);
    if (pr->prev != NULL) {
        pr->prev->next = pr->next;
    } else {
        p->live = pr->next;
    }
    if (pr->next != NULL) {
        pr->next->prev = pr->prev;
    }
    pthread_mutex_unlock(&p->mu);
    if (pr->baio != NULL) {
        nng_aio_reap(pr->baio); /* may be its own callback's */
    }
    nng_aio_free(pr->waio);
    if (pr->hijacked) {
        nng_http_conn_close(pr->conn);
        nng_http_req_free(pr->req);
    }
    free(pr->body);
    json_decref(pr->root);
    sc_proxy_plan_fini(&pr->plan);
    if (pr->auth != NULL) {
        explicit_bzero(pr->auth, strlen(pr->auth));
    }
    free(pr->auth);
    free(pr->org);
    free(pr->project);
    free(pr);
    pthread_mutex_lock(&p->mu);
    p->nlive--;
    pthread_cond_broadcast(&p->donecv);
    pthread_mutex_unlock(&p->mu);
}

/* ---- replies ---------------------------------------------------------- */

/* Answers pr with a whole response and frees pr. xsc: the x-semcache
 * header (NULL = none); close: the body was not read. */
static void reply(preq *pr, uint16_t status, const char *ctype,
                  const void *body, size_t len, const char *xsc,
                  const char *entry, bool close)
{
    nng_http_res *res;
    int rv = nng_http_res_alloc(&res);
    if (rv == 0) {
        rv = nng_http_res_set_status(res, status);
        if (rv == 0 && sc_http_reason(status) != NULL) {
            rv = nng_http_res_set_reason(res, sc_http_reason(status));
        }
        rv = rv ? rv : nng_http_res_set_header(res, "Content-Type", ctype);
        if (rv == 0 && xsc != NULL) {
            rv = nng_http_res_set_header(res, "x-semcache", xsc);
        }
        if (rv == 0 && entry != NULL) {
            rv = nng_http_res_set_header(res, "x-semcache-entry", entry);
        }
        if (rv == 0 && close) {
            rv = nng_http_res_set_header(res, "Connection", "close");
        }
        /* An empty body (an upstream's 204, or its 503 with none) is set,
         * not copied: nng allocates no zero bytes, and its copy of none
         * fails as if out of memory, which drops the connection. */
        if (rv == 0) {
            rv = len > 0 ? nng_http_res_copy_data(res, body, len)
                         : nng_http_res_set_data(res, NULL, 0);
        }
        if (rv != 0) {
            nng_http_res_free(res);
        }
    }
    if (rv != 0) {
        nng_aio_finish(pr->haio, NNG_ENOMEM);
    } else {
        nng_aio_set_output(pr->haio, 0, res);
        nng_aio_finish(pr->haio, 0);
    }
    preq_done(pr);
}

/* The statuses of sc_proxy_counts.own, in its order. */
static const uint16_t own_status[SC_PROXY_OWN_N] = {400, 411, 413, 500, 503};

/* Counts an error answer of the proxy's own (none for 401, 403, 502). */
static void count_own(sc_proxy *p, uint16_t status)
{
    for (size_t i = 0; i < SC_PROXY_OWN_N; i++) {
        if (own_status[i] == status) {
            count(p, &p->counts.own[i]);
        }
    }
}

/* An OpenAI-style error: {"error": {"message", "type", "param", "code"}}.
 * The message may quote client bytes: non-printable ones become '?'. */
static void reply_error(preq *pr, uint16_t status, const char *type,
                        const char *code, const char *msg, const char *xsc,
                        bool close)
{
    sc_proxy *p = pr->p;
    char clean[512];
    sc_ascii_clean(clean, sizeof(clean), msg, strlen(msg));
    json_t *j = json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message", clean,
                          "type", type, "param", "code", code);
    char *s = sc_http_json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s == NULL) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\","
                                  "\"type\":\"semcache_error\",\"param\":null,"
                                  "\"code\":\"internal\"}}";
        count_own(p, 500);
        reply(pr, 500, "application/json", oom, sizeof(oom) - 1, xsc, NULL,
              close);
        return;
    }
    count_own(p, status);
    reply(pr, status, "application/json", s, strlen(s), xsc, NULL, close);
    free(s);
}

/* 503 shutting_down: the proxy closes (close: the connection too). */
static void reply_shutting_down(preq *pr, bool close)
{
    reply_error(pr, 503, "semcache_error", "shutting_down",
                "semcached is shutting down", NULL, close);
}

/* Counts pr's stream as cut by the stop, once (counts.stop_cut). */
static void count_stop_cut(preq *pr)
{
    if (!pr->stop_cut && !pr->dropped) {
        pr->stop_cut = true;
        count(pr->p, &pr->p->counts.stop_cut);
    }
}

/* Counts pr's stream as cut on the client's side by the failed write rv,
 * once: past the client time-out, or the connection failed (the client
 * left). A write failed during a stop is the stop's cut (stop_cut); one
 * we could not start for memory is neither. */
static void count_drop(preq *pr, int rv)
{
    sc_proxy *p = pr->p;
    if (rv == NNG_ENOMEM) {
        return;
    }
    if (__atomic_load_n(&p->closing, __ATOMIC_RELAXED)) {
        count_stop_cut(pr);
        return;
    }
    if (pr->dropped) {
        return;
    }
    pr->dropped = true;
    count(p, &p->counts.dropped[rv == NNG_ETIMEDOUT ? SC_PROXY_DROP_TIMEOUT
                                                    : SC_PROXY_DROP_GONE]);
}

/* Writes buf[0..n) to a hijacked connection; 0, or an nng error. The
 * writes of one stream share the client time-out: a client that reads
 * slowly, a little before each write would time out, still lets the
 * worker go once it has kept it waiting that long in all. */
static int conn_write(preq *pr, const void *buf, size_t n)
{
    nng_duration left = (nng_duration)pr->p->client_timeout_ms - pr->waited;
    if (left <= 0) {
        count_drop(pr, NNG_ETIMEDOUT);
        return NNG_ETIMEDOUT;
    }
    /* Started under p->mu, so that sc_proxy_close either aborts it or
     * finds closing set here first: a client that stops reading does not
     * hold a stop for its whole budget. */
    sc_proxy *p = pr->p;
    pthread_mutex_lock(&p->mu);
    if (p->closing) {
        pthread_mutex_unlock(&p->mu);
        count_stop_cut(pr);
        return NNG_ECLOSED;
    }
    if (pr->waio == NULL && nng_aio_alloc(&pr->waio, NULL, NULL) != 0) {
        pthread_mutex_unlock(&p->mu);
        return NNG_ENOMEM;
    }
    nng_iov iov = {.iov_buf = (void *)buf, .iov_len = n};
    nng_aio_set_iov(pr->waio, 1, &iov);
    nng_aio_set_timeout(pr->waio, left);
    nng_time t0 = nng_clock();
    nng_http_conn_write_all(pr->conn, pr->waio);
    pthread_mutex_unlock(&p->mu);
    nng_aio_wait(pr->waio);
    pr->waited += (nng_duration)(nng_clock() - t0);
    int rv = nng_aio_result(pr->waio);
    if (rv != 0) {
        count_drop(pr, rv);
    }
    return rv;
}

/* Takes the connection over and writes the head of an event stream. The
 * body ends when the connection closes (no Content-Length). */
static int start_stream(preq *pr, const char *xsc, const char *entry)
{
    if (nng_http_hijack(pr->conn) != 0) {
        return NNG_EINTERNAL;
    }
    pr->hijacked = true;
    nng_aio_finish(pr->haio, 0); /* no response: nng lets the session go */
    pr->haio = NULL;
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     "Cache-Control: no-cache\r\nConnection: close\r\n"
                     "x-semcache: %s\r\n%s%s%s\r\n",
                     xsc, entry != NULL ? "x-semcache-entry: " : "",
                     entry != NULL ? entry : "", entry != NULL ? "\r\n" : "");
    return conn_write(pr, head, (size_t)n);
}

/* Bytes gathered: an upstream body, a stream's text, a hit's events. */
typedef struct buf {
    char *p;
    size_t n, cap, max;
    bool over;
} buf;

static int buf_add(buf *b, const void *d, size_t n)
{
    if (b->n + n > b->max) {
        b->over = true;
        return -1;
    }
    /* n + 1 cannot pass SIZE_MAX: n is the size of an object in memory. */
    if (SC_VEC_RESERVE(b->p, b->cap, b->n, n + 1, 4096) != SC_OK) {
        return -1;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

/* ---- serving a hit ---------------------------------------------------- */

static void hit_header(const sc_cache_result *r, char *xsc, size_t cap,
                       char *entry, size_t ecap)
{
    snprintf(xsc, cap, "hit; layer=%s; similarity=%.3f",
             r->layer == SC_LAYER_EXACT ? "exact" : "semantic",
             (double)r->similarity);
    snprintf(entry, ecap, "%llu", (unsigned long long)r->id);
}

static SC_HOOK(bool, (void *)) hit_oom_hook;

void sc_proxy_set_hit_oom_hook(bool (*fail)(void *arg), void *arg)
{
    SC_HOOK_SET(hit_oom_hook, fail, arg);
}

/* The stored chat.completion with a fresh id and created time; NULL when
 * the bytes are not one (*bad set: the hit is not served) or out of
 * memory (*bad left alone). */
static json_t *hit_answer(sc_proxy *p, const sc_cache_result *r, bool *bad)
{
    bool (*fail)(void *) = atomic_load(&hit_oom_hook.fn);
    if (fail != NULL && fail(atomic_load(&hit_oom_hook.arg))) {
        return NULL;
    }
    bool oom;
    json_t *j = sc_http_json_loadb(r->response, r->response_len, 0, NULL, &oom);
    if (j == NULL) {
        *bad = !oom; /* a good entry is not junk for want of memory */
        return NULL;
    }
    if (!json_is_object(j) || !json_is_array(json_object_get(j, "choices")) ||
        !json_is_object(json_object_get(
            json_array_get(json_object_get(j, "choices"), 0), "message"))) {
        json_decref(j);
        *bad = true;
        return NULL;
    }
    uint64_t seq = __atomic_add_fetch(&p->seq, 1, __ATOMIC_RELAXED);
    char id[96];
    snprintf(id, sizeof(id), "chatcmpl-semcache-%llu-%llu",
             (unsigned long long)r->id, (unsigned long long)seq);
    bool failed = false;
    sc_http_json_set(j, "id", json_string(id), &failed);
    sc_http_json_set(j, "created", json_integer((json_int_t)time(NULL)),
                     &failed);
    if (failed) {
        json_decref(j); /* not served with the upstream's id and time */
        return NULL;
    }
    return j;
}

/* Answers a plain request from hit r; false when it could not, *bad set
 * when r's bytes are not an answer (pr is then still the caller's). */
static bool serve_hit(preq *pr, const sc_cache_result *r, bool *bad)
{
    json_t *j = hit_answer(pr->p, r, bad);
    char *s = sc_http_json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s == NULL) {
        return false;
    }
    char xsc[128], entry[32];
    hit_header(r, xsc, sizeof(xsc), entry, sizeof(entry));
    count(pr->p, &pr->p->counts.hits);
    reply(pr, 200, "application/json", s, strlen(s), xsc, entry, false);
    free(s);
    return true;
}

/* Appends chunk (consumed) to *ev as one event; false, *failed set, when
 * out of memory (or already). */
static bool add_event(buf *ev, json_t *chunk, bool *failed)
{
    char *s = *failed ? NULL : sc_http_json_dumps(chunk, JSON_COMPACT);
    json_decref(chunk);
    *failed = s == NULL || buf_add(ev, "data: ", 6) != 0 ||
              buf_add(ev, s, strlen(s)) != 0 || buf_add(ev, "\n\n", 2) != 0;
    free(s);
    return !*failed;
}

/* A chunk: base's members and choices (consumed); NULL when out of memory
 * (or already). */
static json_t *chunk_of(const json_t *base, json_t *choices, bool *failed)
{
    json_t *c = *failed ? NULL : json_deep_copy(base);
    sc_http_json_set(c, "choices", choices, failed);
    if (*failed) {
        json_decref(c);
        return NULL;
    }
    return c;
}

/* Answers a streaming request from hit r as a stream: one chunk with the
 * whole message, one with the finish reason, the usage when asked, then
 * [DONE]. Every event is made before the head is sent, so that running
 * out of memory for any of them is a hit not served, never a stream that
 * ends with [DONE] missing a part. false when r's bytes are not an answer
 * (*bad set) or memory ran out before the stream began (pr is then still
 * the caller's). */
static bool serve_hit_stream(preq *pr, const sc_cache_result *r, bool *bad)
{
    json_t *j = hit_answer(pr->p, r, bad);
    if (j == NULL) {
        return false;
    }
    bool failed = false;
    json_t *choice = json_array_get(json_object_get(j, "choices"), 0);
    json_t *msg = json_object_get(choice, "message");
    json_t *fin = json_object_get(choice, "finish_reason");
    json_t *delta = json_deep_copy(msg);
    json_t *calls = json_object_get(delta, "tool_calls");
    size_t i;
    json_t *tc;
    json_array_foreach(calls, i, tc)
    {
        sc_http_json_set(tc, "index", json_integer((json_int_t)i), &failed);
    }
    json_t *model = json_object_get(j, "model");
    json_t *base = json_pack(
        "{s:O,s:s,s:O,s:o}", "id", json_object_get(j, "id"), "object",
        "chat.completion.chunk", "created", json_object_get(j, "created"),
        "model",
        model != NULL ? json_incref(model) : json_string(pr->plan.model));
    failed |= base == NULL || delta == NULL;
    buf ev = {.max = SIZE_MAX};
    add_event(&ev,
              chunk_of(base,
                       json_pack("[{s:i,s:O,s:n}]", "index", 0, "delta", delta,
                                 "finish_reason"),
                       &failed),
              &failed);
    add_event(
        &ev,
        chunk_of(
            base,
            json_pack("[{s:i,s:{},s:o}]", "index", 0, "delta", "finish_reason",
                      fin != NULL ? json_incref(fin) : json_string("stop")),
            &failed),
        &failed);
    json_t *usage = json_object_get(j, "usage");
    if (pr->plan.include_usage && usage != NULL) {
        json_t *c3 = chunk_of(base, json_array(), &failed);
        sc_http_json_set(c3, "usage", json_incref(usage), &failed);
        add_event(&ev, c3, &failed);
    }
    failed |= buf_add(&ev, "data: [DONE]\n\n", 14) != 0;
    json_decref(delta);
    json_decref(base);
    json_decref(j);
    char xsc[128], entry[32];
    hit_header(r, xsc, sizeof(xsc), entry, sizeof(entry));
    if (failed || start_stream(pr, xsc, entry) != 0) {
        free(ev.p);
        if (!pr->hijacked) {
            return false; /* out of memory before the stream started */
        }
    } else {
        conn_write(pr, ev.p, ev.n);
        free(ev.p);
    }
    count(pr->p, &pr->p->counts.hits);
    preq_done(pr);
    return true;
}

/* ---- storing an answer ------------------------------------------------ */

/* Stores answer[0..n) under pr's scope and text; returns NULL when stored,
 * else why not (static). */
static const char *store(preq *pr, const char *answer, size_t n,
                         uint64_t in_tok, uint64_t out_tok)
{
    sc_proxy *p = pr->p;
    if (!pr->plan.cacheable) {
        return pr->plan.why_not;
    }
    if (pr->no_store) {
        return "no_store";
    }
    if (!pr->can_write) {
        return "forbidden";
    }
    if (p->embed_model[0] != '\0' && pr->dim == 0) {
        return "no_embedding";
    }
    sc_cache_item it = {
        .scope = pr->plan.scope,
        .text = pr->plan.text,
        .text_len = pr->plan.text_len,
        .vec = pr->dim > 0 ? pr->vec : NULL,
        .dim = pr->dim,
        .embed_model = pr->dim > 0 ? p->embed_model : NULL,
        .response = answer,
        .response_len = n,
        .model = pr->plan.model,
        .feature = pr->has_feature ? pr->feature : NULL,
        .user = pr->has_user ? pr->user : NULL,
        .input_tokens = in_tok,
        .output_tokens = out_tok,
    };
    sc_err rc = sc_cache_insert(p->cache, pr->ns, &it, NULL);
    if (rc == SC_ENONS) {
        uint64_t serial = 0;
        sc_err crc =
            sc_cache_ns_create_for_insert(p->cache, pr->ns, NULL, &serial);
        rc = crc;
        if (crc == SC_OK || crc == SC_ENSEXIST) {
            rc = sc_cache_insert(p->cache, pr->ns, &it, NULL);
        }
        if (rc != SC_OK && crc == SC_OK) {
            /* A refused answer leaves no namespace behind (it would hold
             * one of --max-namespaces), as a refused wire insert does,
             * unless another insert or a configure took in it meanwhile. */
            (void)sc_cache_ns_drop_unused(p->cache, pr->ns, serial);
        }
    }
    if (rc != SC_OK) {
        return sc_dispatch_errcode(rc);
    }
    count(p, &p->counts.stored);
    return NULL;
}

/* Whether a parsed upstream answer may be stored; NULL = yes, else why
 * not. */
static const char *admit(sc_proxy *p, const json_t *a)
{
    if (!json_is_object(a) || json_object_get(a, "error") != NULL) {
        return "error";
    }
    const json_t *ch = json_object_get(a, "choices");
    if (!json_is_array(ch) || json_array_size(ch) != 1) {
        return "choices";
    }
    const json_t *c0 = json_array_get(ch, 0);
    const json_t *msg = json_object_get(c0, "message");
    const char *fin = json_string_value(json_object_get(c0, "finish_reason"));
    if (!json_is_object(msg)) {
        return "no_message";
    }
    bool calls = json_object_get(msg, "tool_calls") != NULL &&
                 !json_is_null(json_object_get(msg, "tool_calls"));
    if (fin == NULL) {
        return "unfinished";
    }
    if (strcmp(fin, "tool_calls") == 0 || strcmp(fin, "function_call") == 0 ||
        calls) {
        if (!p->store_tool_calls) {
            return "tool_calls";
        }
    } else if (strcmp(fin, "length") == 0) {
        if (!p->store_truncated) {
            return "truncated";
        }
    } else if (strcmp(fin, "stop") != 0) {
        return "finish_reason";
    }
    if (!calls && !json_is_string(json_object_get(msg, "content"))) {
        return "no_content";
    }
    return NULL;
}

static uint64_t usage_of(const json_t *a, const char *k)
{
    const json_t *v = json_object_get(json_object_get(a, "usage"), k);
    return json_is_integer(v) && json_integer_value(v) > 0
               ? (uint64_t)json_integer_value(v)
               : 0;
}

/* ---- the upstream ----------------------------------------------------- */

static size_t collect_cb(char *d, size_t sz, size_t nm, void *arg)
{
    return buf_add(arg, d, sz * nm) == 0 ? sz * nm : 0;
}

static int progress_cb(void *arg, curl_off_t a, curl_off_t b, curl_off_t c,
                       curl_off_t d)
{
    (void)a, (void)b, (void)c, (void)d;
    sc_proxy *p = arg;
    return __atomic_load_n(&p->closing, __ATOMIC_RELAXED) ? 1 : 0;
}

/* The headers an upstream call carries: JSON, and the client's own
 * credentials, unchanged. NULL when out of memory. */
static struct curl_slist *upstream_headers(const preq *pr)
{
    struct curl_slist *h = NULL, *t;
    char line[8192];
    const char *fixed[] = {"Content-Type: application/json", "Expect:"};
    for (size_t i = 0; i < 2; i++) {
        if ((t = curl_slist_append(h, fixed[i])) == NULL) {
            goto oom;
        }
        h = t;
    }
    const struct {
        const char *name, *val;
    } fw[] = {{"Authorization", pr->auth},
              {"OpenAI-Organization", pr->org},
              {"OpenAI-Project", pr->project}};
    for (size_t i = 0; i < 3; i++) {
        if (fw[i].val == NULL) {
            continue;
        }
        snprintf(line, sizeof(line), "%s: %s", fw[i].name, fw[i].val);
        t = curl_slist_append(h, line);
        explicit_bzero(line, sizeof(line));
        if (t == NULL) {
            goto oom;
        }
        h = t;
    }
    return h;
oom:
    curl_slist_free_all(h);
    return NULL;
}

/* A plain call's limit: --upstream-timeout, within the whole call's. */
static uint32_t plain_limit(const sc_proxy *p)
{
    return p->timeout_ms < p->max_duration_ms ? p->timeout_ms
                                              : p->max_duration_ms;
}

static void setup_call(CURL *c, sc_proxy *p, const char *url,
                       struct curl_slist *hdrs, const char *body, size_t n,
                       bool stream)
{
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress_cb);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, p);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)p->timeout_ms);
    if (stream) {
        /* A stream may last: the limit is on silence, in whole seconds
         * (an SSE comment is no silence: upstreams send ": ping" to keep
         * a slow model's stream open), and on the whole call, so that an
         * upstream trickling bytes for ever cannot hold a worker longer. */
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME,
                         (long)((p->timeout_ms + 999) / 1000));
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)p->max_duration_ms);
    } else {
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)plain_limit(p));
    }
}

/* The message of a failed upstream call (a stream's when stream): cc, or
 * an answer whose status is outside 100-599, which is none to relay. Returns
 * the code's slot in sc_proxy_counts.fails. */
static sc_proxy_fail upstream_error(preq *pr, CURLcode cc, long status,
                                    const buf *b, bool stream, char *msg,
                                    size_t cap, const char **code)
{
    if (__atomic_load_n(&pr->p->closing, __ATOMIC_RELAXED)) {
        *code = "shutting_down";
        snprintf(msg, cap, "semcached is shutting down");
        return SC_PROXY_FAIL_SHUTTING_DOWN;
    }
    if (cc == CURLE_OPERATION_TIMEDOUT && stream) {
        *code = "upstream_timeout";
        snprintf(msg, cap,
                 "the upstream was silent for %u s, or its answer took "
                 "over %u ms in all",
                 (pr->p->timeout_ms + 999) / 1000, pr->p->max_duration_ms);
        return SC_PROXY_FAIL_TIMEOUT;
    }
    if (cc == CURLE_OPERATION_TIMEDOUT) {
        *code = "upstream_timeout";
        snprintf(msg, cap, "the upstream did not answer within %u ms",
                 plain_limit(pr->p));
        return SC_PROXY_FAIL_TIMEOUT;
    }
    if (b != NULL && b->over) {
        *code = "upstream_too_big";
        snprintf(msg, cap, "the upstream's answer is over the cap of %zu bytes",
                 pr->p->body_max);
        return SC_PROXY_FAIL_TOO_BIG;
    }
    if (cc == CURLE_OK) {
        *code = "upstream_bad_status";
        snprintf(msg, cap, "the upstream answered status %ld, not 100-599",
                 status);
        return SC_PROXY_FAIL_BAD_STATUS;
    }
    *code = "upstream_unreachable";
    snprintf(msg, cap, "the upstream call failed: %s", curl_easy_strerror(cc));
    return SC_PROXY_FAIL_UNREACHABLE;
}

/* Counts a failed upstream call under its code f; cut: a stream cut after
 * its head was relayed. */
static void count_fail(sc_proxy *p, sc_proxy_fail f, bool cut)
{
    count(p, &p->counts.errors);
    count(p, &p->counts.fails[f]);
    if (cut) {
        count(p, &p->counts.streams_cut);
    }
}

/* Embeds pr's text with the upstream's /v1/embeddings; 0, or -1 (the
 * request then goes upstream without the cache). */
static int upstream_embed(preq *pr, CURL *c)
{
    sc_proxy *p = pr->p;
    json_t *rq = json_pack("{s:s,s:s%}", "model", p->embed_model, "input",
                           pr->plan.text, pr->plan.text_len);
    char *body = sc_http_json_dumps(rq, JSON_COMPACT);
    json_decref(rq);
    struct curl_slist *h = body != NULL ? upstream_headers(pr) : NULL;
    if (h == NULL) {
        free(body);
        return -1;
    }
    buf b = {.max = p->body_max};
    setup_call(c, p, p->embed_url, h, body, strlen(body), false);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    count(p, &p->counts.embedding);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    free(body);
    int rc = -1;
    bool oom; /* either way no vector: not stored */
    json_t *a = cc == CURLE_OK && status == 200 && b.p != NULL
                    ? sc_http_json_loadb(b.p, b.n, 0, NULL, &oom)
                    : NULL;
    const json_t *e = json_object_get(
        json_array_get(json_object_get(a, "data"), 0), "embedding");
    size_t n = json_array_size(e);
    if (json_is_array(e) && n > 0 && n <= SC_INDEX_MAX_DIM) {
        rc = 0;
        for (size_t i = 0; i < n && rc == 0; i++) {
            const json_t *x = json_array_get(e, i);
            double d = json_number_value(x);
            if (!json_is_number(x) || !(fabs(d) <= 3.4e38)) {
                rc = -1; /* and no conversion: out of float's range */
            } else {
                pr->vec[i] = (float)d;
            }
        }
        if (rc == 0) {
            pr->dim = (uint32_t)n;
            pr->embed_tokens = usage_of(a, "prompt_tokens");
            if (pr->embed_tokens == 0) {
                pr->embed_tokens = usage_of(a, "total_tokens");
            }
            if (pr->embed_tokens > SC_CACHE_TOKENS_MAX) {
                /* No count the ledger takes (the lookup would be refused,
                 * a silent miss every time): estimated, as with none. */
                pr->embed_tokens = 0;
            }
        }
    }
    json_decref(a);
    free(b.p);
    return rc;
}

/* The x-semcache header of an answer that came from upstream. */
static void miss_header(const preq *pr, const char *why_not, char *xsc,
                        size_t cap)
{
    if (!pr->plan.cacheable) {
        snprintf(xsc, cap, "bypass; reason=%s", pr->plan.why_not);
        return;
    }
    char best[48] = "";
    if (pr->looked_up && !isnan(pr->best)) {
        snprintf(best, sizeof(best), "; best=%.3f", (double)pr->best);
    }
    snprintf(xsc, cap, "miss%s%s; stored=%s%s%s",
             pr->skip ? "; lookup=skipped" : "", best,
             why_not == NULL ? "yes" : "no", why_not != NULL ? "; reason=" : "",
             why_not != NULL ? why_not : "");
}

/* The chat request upstream, its body going to write(arg): the call's code,
 * HTTP status and content type (owned by c). false when its headers could
 * not be made (answered 500 then). */
static bool call_upstream(preq *pr, CURL *c, bool stream,
                          curl_write_callback write, void *arg, CURLcode *cc,
                          long *status, char **ctype)
{
    sc_proxy *p = pr->p;
    struct curl_slist *h = upstream_headers(pr);
    if (h == NULL) {
        reply_error(pr, 500, "semcache_error", "internal", "out of memory",
                    NULL, false);
        return false;
    }
    setup_call(c, p, p->chat_url, h, pr->body, pr->len, stream);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, arg);
    count(p, &p->counts.upstream);
    *cc = curl_easy_perform(c);
    curl_slist_free_all(h);
    *status = 0;
    *ctype = NULL;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, ctype);
    return true;
}

/* A plain request upstream: the answer goes back unchanged, and is stored
 * when admitted. */
static void forward_plain(preq *pr, CURL *c)
{
    sc_proxy *p = pr->p;
    buf b = {.max = p->body_max};
    CURLcode cc;
    long status;
    char *ctype;
    if (!call_upstream(pr, c, false, collect_cb, &b, &cc, &status, &ctype)) {
        return;
    }
    char xsc[256], msg[300];
    if (cc != CURLE_OK || status < 100 || status > 599) {
        const char *code;
        sc_proxy_fail f =
            upstream_error(pr, cc, status, &b, false, msg, sizeof(msg), &code);
        count_fail(p, f, false);
        miss_header(pr, "upstream_failed", xsc, sizeof(xsc));
        free(b.p);
        reply_error(pr, 502, "upstream_error", code, msg, xsc, false);
        return;
    }
    const char *why = NULL;
    if (status != 200) {
        why = "status";
    } else {
        bool oom;
        json_t *a =
            sc_http_json_loadb(b.p != NULL ? b.p : "", b.n, 0, NULL, &oom);
        why = a == NULL ? (oom ? sc_dispatch_errcode(SC_ENOMEM) : "not_json")
                        : admit(p, a);
        if (why == NULL) {
            why = store(pr, b.p, b.n, usage_of(a, "prompt_tokens"),
                        usage_of(a, "completion_tokens"));
        }
        json_decref(a);
    }
    miss_header(pr, why, xsc, sizeof(xsc));
    char ct[256];
    snprintf(ct, sizeof(ct), "%s",
             ctype != NULL && strpbrk(ctype, "\r\n") == NULL
                 ? ctype
                 : "application/json");
    reply(pr, (uint16_t)status, ct, b.p != NULL ? b.p : "", b.n, xsc, NULL,
          false);
    free(b.p);
}

/* A streaming request upstream: bytes are relayed as they come, and the
 * events are assembled into one chat.completion, stored when the stream
 * completed ([DONE]) with an admitted finish reason. */
typedef struct sse {
    preq *pr;
    CURL *c;
    bool started;  /* the client has our head */
    bool failed;   /* a write to the client failed */
    buf err;       /* a non-stream (error) answer, collected */
    buf line;      /* the event line being read */
    /* The event being read: its data lines, joined by '\n' as clients
     * join them, and whether it named a type other than "message". */
    buf data;
    bool has_data, typed;
    buf text;      /* the assembled message content */
    bool chunks;   /* a chunk came */
    /* Each from the first chunk that has it: Azure OpenAI opens a stream
     * with a prompt-filter chunk whose id and model are "", created 0. */
    json_t *id, *model, *created;
    char finish[32];
    bool done, tools, bad;
    /* A content delta came; something came that the stored answer would
     * not keep (a refusal, audio, logprobs, ...). */
    bool content, other;
    uint64_t in_tok, out_tok;
} sse;

/* One event's data, l[0..n), as a client gets it. */
static void sse_event(sse *s, const char *l, size_t n)
{
    if (n == 6 && strncmp(l, "[DONE]", 6) == 0) {
        s->done = true;
        return;
    }
    if (s->done) {
        /* Clients stop reading at [DONE]: a hit must not serve more than
         * they saw. */
        s->bad = true;
        return;
    }
    bool oom; /* either way the answer is not stored */
    json_t *j = sc_http_json_loadb(l, n, 0, NULL, &oom);
    if (!json_is_object(j) || json_object_get(j, "error") != NULL) {
        s->bad = true;
        json_decref(j);
        return;
    }
    s->chunks = true;
    json_t *f = json_object_get(j, "id");
    if (s->id == NULL && json_is_string(f) && json_string_length(f) > 0) {
        s->id = json_incref(f);
    }
    f = json_object_get(j, "model");
    if (s->model == NULL && json_is_string(f) && json_string_length(f) > 0) {
        s->model = json_incref(f);
    }
    f = json_object_get(j, "created");
    if (s->created == NULL && json_is_integer(f) && json_integer_value(f) > 0) {
        s->created = json_incref(f);
    }
    const json_t *u = json_object_get(j, "usage");
    if (json_is_object(u)) {
        s->in_tok = usage_of(j, "prompt_tokens");
        s->out_tok = usage_of(j, "completion_tokens");
    }
    const json_t *ch = json_object_get(j, "choices");
    const json_t *c0 = json_array_get(ch, 0);
    const json_t *ix = json_object_get(c0, "index");
    /* One choice is stored: a second, in the same chunk or in chunks of
     * its own, would be merged into the first's text. */
    if (json_array_size(ch) > 1 ||
        (ix != NULL && !(json_is_integer(ix) && json_integer_value(ix) == 0))) {
        s->bad = true;
    }
    const json_t *d = json_object_get(c0, "delta");
    const json_t *ct = json_object_get(d, "content");
    if (json_is_string(ct)) {
        s->content = true;
        if (buf_add(&s->text, json_string_value(ct), json_string_length(ct))) {
            s->bad = true;
        }
    }
    /* The stored answer is rebuilt from the content alone: a stream that
     * also carries anything else is relayed but not stored. */
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)d, k, v)
    {
        if (!json_is_null(v) && strcmp(k, "role") != 0 &&
            strcmp(k, "content") != 0 && strcmp(k, "tool_calls") != 0) {
            s->other = true;
        }
    }
    const json_t *lp = json_object_get(c0, "logprobs");
    if (lp != NULL && !json_is_null(lp)) {
        s->other = true;
    }
    if (json_object_get(d, "tool_calls") != NULL &&
        !json_is_null(json_object_get(d, "tool_calls"))) {
        s->tools = true;
    }
    const char *fin = json_string_value(json_object_get(c0, "finish_reason"));
    if (fin != NULL) {
        snprintf(s->finish, sizeof(s->finish), "%s", fin);
    }
    json_decref(j);
}

/* One line of the stream. Events are read as clients read them (the
 * WHATWG event-stream rules): the data lines of an event are joined and
 * parsed at the blank line that ends it, so an event whose lines are no
 * JSON together (two chunks in one event) is one a client could not
 * parse; an event of another type than "message" ("event: error") is not
 * a chunk; and an event the stream ends before dispatching (no blank line
 * after it) was never seen. */
static void sse_line(sse *s, const char *l, size_t n)
{
    if (n == 0) {
        if (s->has_data) {
            if (s->typed) {
                s->bad = true;
            } else {
                sse_event(s, s->data.p != NULL ? s->data.p : "", s->data.n);
            }
        }
        s->data.n = 0;
        s->has_data = s->typed = false;
        return;
    }
    size_t f = 0;
    while (f < n && l[f] != ':') {
        f++;
    }
    const char *v = f < n ? l + f + 1 : l + n;
    size_t vn = f < n ? n - f - 1 : 0;
    if (vn > 0 && *v == ' ') {
        v++, vn--;
    }
    if (f == 4 && strncmp(l, "data", 4) == 0) {
        if ((s->has_data && buf_add(&s->data, "\n", 1) != 0) ||
            buf_add(&s->data, v, vn) != 0) {
            s->bad = true;
        }
        s->has_data = true;
    } else if (f == 5 && strncmp(l, "event", 5) == 0) {
        s->typed = !(vn == 7 && strncmp(v, "message", 7) == 0);
    }
    /* Comments (":..."), id: and retry: lines change no answer. */
}

static size_t sse_cb(char *d, size_t sz, size_t nm, void *arg)
{
    sse *s = arg;
    size_t n = sz * nm;
    preq *pr = s->pr;
    if (!s->started && s->err.n == 0) {
        long status = 0;
        char *ctype = NULL;
        curl_easy_getinfo(s->c, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(s->c, CURLINFO_CONTENT_TYPE, &ctype);
        if (status == 200 && ctype != NULL &&
            strncasecmp(ctype, "text/event-stream", 17) == 0) {
            char xsc[256];
            miss_header(pr, NULL, xsc, sizeof(xsc));
            /* Whether it is stored is known only at the end. */
            char *semi = strstr(xsc, "; stored=");
            if (semi != NULL) {
                *semi = '\0';
            }
            if (start_stream(pr, xsc, NULL) != 0) {
                s->failed = true;
                return 0;
            }
            s->started = true;
        }
    }
    if (!s->started) {
        return buf_add(&s->err, d, n) == 0 ? n : 0;
    }
    if (conn_write(pr, d, n) != 0) {
        s->failed = true;
        return 0; /* the client left: stop the upstream call */
    }
    for (size_t i = 0; i < n; i++) {
        if (d[i] == '\n') {
            size_t ln = s->line.n;
            if (ln > 0 && s->line.p[ln - 1] == '\r') {
                ln--;
            }
            sse_line(s, s->line.p != NULL ? s->line.p : "", ln);
            s->line.n = 0;
        } else if (buf_add(&s->line, &d[i], 1) != 0) {
            s->bad = true;
            s->line.n = 0;
        }
    }
    return n;
}

static void forward_stream(preq *pr, CURL *c)
{
    sc_proxy *p = pr->p;
    sse s = {.pr = pr, .c = c};
    s.err.max = s.text.max = p->body_max;
    s.line.max = s.data.max = p->body_max;
    CURLcode cc;
    long status;
    char *ctype;
    if (!call_upstream(pr, c, true, sse_cb, &s, &cc, &status, &ctype)) {
        return;
    }
    char xsc[256], msg[300];
    if (!s.started && !s.failed) {
        /* Not a stream: an error answer (relayed), or a failed call. */
        if (cc != CURLE_OK || status < 100 || status > 599) {
            const char *code;
            sc_proxy_fail f = upstream_error(pr, cc, status, &s.err, true, msg,
                                             sizeof(msg), &code);
            count_fail(p, f, false);
            miss_header(pr, "upstream_failed", xsc, sizeof(xsc));
            reply_error(pr, 502, "upstream_error", code, msg, xsc, false);
        } else {
            miss_header(pr, status == 200 ? "not_a_stream" : "status", xsc,
                        sizeof(xsc));
            char ct[256];
            snprintf(ct, sizeof(ct), "%s",
                     ctype != NULL && strpbrk(ctype, "\r\n") == NULL
                         ? ctype
                         : "application/json");
            reply(pr, (uint16_t)status, ct, s.err.p != NULL ? s.err.p : "",
                  s.err.n, xsc, NULL, false);
        }
    } else if (!s.started) {
        /* The hijack or the head failed: the connection is gone. */
        if (pr->haio != NULL) {
            nng_aio_finish(pr->haio, NNG_ECLOSED);
        }
        preq_done(pr);
    } else {
        /* An event not ended by a blank line, [DONE] included, was not
         * dispatched to the client: a stream that ends so is not stored. */
        if (cc == CURLE_OK && s.done && !s.bad && !s.failed && s.chunks) {
            bool ok = strcmp(s.finish, "stop") == 0 ||
                      (strcmp(s.finish, "length") == 0 && p->store_truncated);
            if (ok && !s.tools && s.content && !s.other) {
                json_t *m = s.model, *id = s.id, *cr = s.created;
                json_t *a = json_pack(
                    "{s:o,s:s,s:o,s:o,s:[{s:i,s:{s:s,s:s%},s:s}]}", "id",
                    id != NULL ? json_incref(id) : json_null(), "object",
                    "chat.completion", "created",
                    cr != NULL ? json_incref(cr) : json_integer(0), "model",
                    m != NULL ? json_incref(m) : json_string(pr->plan.model),
                    "choices", "index", 0, "message", "role", "assistant",
                    "content", s.text.p != NULL ? s.text.p : "", s.text.n,
                    "finish_reason", s.finish);
                bool failed = a == NULL;
                if (s.in_tok > 0 || s.out_tok > 0) {
                    /* Not stored without it: its hits would lack usage. */
                    sc_http_json_set(
                        a, "usage",
                        json_pack("{s:I,s:I,s:I}", "prompt_tokens",
                                  (json_int_t)s.in_tok, "completion_tokens",
                                  (json_int_t)s.out_tok, "total_tokens",
                                  (json_int_t)(s.in_tok + s.out_tok)),
                        &failed);
                }
                char *enc = failed ? NULL : sc_http_json_dumps(a, JSON_COMPACT);
                if (enc != NULL) {
                    store(pr, enc, strlen(enc), s.in_tok, s.out_tok);
                }
                free(enc);
                json_decref(a);
            }
        } else if (cc != CURLE_OK && !s.failed) {
            const char *code;
            sc_proxy_fail f = upstream_error(pr, cc, status, NULL, true, msg,
                                             sizeof(msg), &code);
            /* Cut by the stop: one count, whichever abort came first (the
             * call's, here, or the client write's, in conn_write). */
            if (f == SC_PROXY_FAIL_SHUTTING_DOWN) {
                count_stop_cut(pr);
            } else {
                count_fail(p, f, true);
            }
        }
        preq_done(pr); /* closes the connection: the stream's end */
    }
    json_decref(s.id);
    json_decref(s.model);
    json_decref(s.created);
    free(s.err.p);
    free(s.line.p);
    free(s.data.p);
    free(s.text.p);
}

/* ---- the request's course ---------------------------------------------- */

/* Looks pr up; true when it was answered from a hit (pr is gone). */
static bool try_lookup(preq *pr)
{
    sc_proxy *p = pr->p;
    sc_cache_query q = {
        .scope = pr->plan.scope,
        .text = pr->plan.text,
        .text_len = pr->plan.text_len,
        .vec = pr->dim > 0 ? pr->vec : NULL,
        .dim = pr->dim,
        .embed_model = pr->dim > 0 ? p->embed_model : NULL,
        .embed_tokens = pr->embed_tokens,
        .feature = pr->has_feature ? pr->feature : NULL,
        .user = pr->has_user ? pr->user : NULL,
        .has_threshold = pr->has_threshold,
        .threshold = pr->threshold,
    };
    sc_cache_result r;
    pr->looked_up = true;
    pr->best = NAN;
    sc_err rc = sc_cache_lookup(p->cache, pr->ns, &q, &r);
    if (rc != SC_OK) {
        return false; /* no namespace yet, no embedder, ...: a miss */
    }
    pr->best = r.best_similarity;
    bool served = false, bad = false;
    if (r.hit) {
        served = pr->plan.stream ? serve_hit_stream(pr, &r, &bad)
                                 : serve_hit(pr, &r, &bad);
    }
    if (r.hit && !served) {
        /* A hit not delivered: bytes that are no chat.completion (an
         * insert by another client under the proxy's scope; *bad), or out
         * of memory before anything was sent. The request goes upstream,
         * so the hit the lookup counted, and the dollars it said were
         * avoided, are taken back as a false hit's are, under the lookup's
         * tags, once for this lookup (two lookups that met the same entry
         * at once are both taken back). Junk is quarantined, never to be
         * hit again; a good entry is left alone. */
        sc_cache_hit_undone(p->cache, pr->ns, &r,
                            pr->has_feature ? pr->feature : NULL,
                            pr->has_user ? pr->user : NULL, bad);
    }
    sc_cache_result_fini(&r);
    return served;
}

static void run_job(preq *pr, CURL *c)
{
    sc_proxy *p = pr->p;
    if (__atomic_load_n(&p->closing, __ATOMIC_RELAXED)) {
        reply_shutting_down(pr, false);
        return;
    }
    /* With upstream embeddings the vector serves the lookup and the
     * store: a skipped lookup is embedded all the same when its answer
     * may be stored (x-semcache-skip skips the lookup alone). */
    bool may_store = pr->plan.cacheable && !pr->no_store && pr->can_write;
    bool lookup = pr->plan.cacheable && !pr->skip && !pr->looked_up;
    bool embedded = p->embed_model[0] == '\0';
    if (!embedded && c != NULL && (lookup || may_store)) {
        embedded = upstream_embed(pr, c) == 0;
    }
    if (lookup && embedded && try_lookup(pr)) {
        return;
    }
    if (c == NULL) {
        reply_error(pr, 500, "semcache_error", "internal", "no upstream handle",
                    NULL, false);
    } else if (pr->plan.stream) {
        forward_stream(pr, c);
    } else {
        forward_plain(pr, c);
    }
}

/* Answers a request queued to a pool that stops. */
static void refuse(void *arg, sc_pool_job *job)
{
    preq *pr = SC_POOL_ENTRY(job, preq, job);
    (void)arg;
    reply_shutting_down(pr, false);
}

/* Queues pr to pool (p->lookers or p->workers), or answers 503 once the
 * pool stops, as the proxy closes. Not bounded here: what waits is bounded by
 * --http-max-conns, as the requests whose body is being read are. */
static void submit(sc_pool *pool, preq *pr)
{
    if (sc_pool_submit(pool, &pr->job) != SC_POOL_QUEUED) {
        refuse(NULL, &pr->job);
    }
}

static void *worker_start(void *arg)
{
    (void)arg;
    return curl_easy_init();
}

static void worker_stop(void *local)
{
    curl_easy_cleanup(local);
}

static void worker_run(void *arg, void *local, sc_pool_job *job)
{
    (void)arg;
    run_job(SC_POOL_ENTRY(job, preq, job), local);
}

static char *dup_header(nng_http_req *req, const char *name)
{
    const char *v = nng_http_req_get_header(req, name);
    return v != NULL ? strdup(v) : NULL;
}

/* A yes/no header: 1, 0, or -1 when it is neither. */
static int header_bool(const char *v)
{
    if (v == NULL) {
        return 0;
    }
    if (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 ||
        strcasecmp(v, "yes") == 0) {
        return 1;
    }
    if (strcmp(v, "0") == 0 || strcasecmp(v, "false") == 0 ||
        strcasecmp(v, "no") == 0) {
        return 0;
    }
    return -1;
}

static bool ns_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= SC_CACHE_NS_NAME_MAX &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                     "0123456789._:-") == n;
}

/* Reads the x-semcache-* headers into pr; 0, or -1 with a message. */
static int read_headers(preq *pr, char *msg, size_t cap)
{
    nng_http_req *req = pr->req;
    const char *v;
    int b;
    if ((b = header_bool(nng_http_req_get_header(req, "x-semcache-skip"))) <
        0) {
        snprintf(msg, cap,
                 "x-semcache-skip must be 1, 0, true, false, yes or no");
        return -1;
    }
    pr->skip = b;
    if ((b = header_bool(nng_http_req_get_header(req, "x-semcache-no-store"))) <
        0) {
        snprintf(msg, cap,
                 "x-semcache-no-store must be 1, 0, true, false, yes or no");
        return -1;
    }
    pr->no_store = b;
    if ((v = nng_http_req_get_header(req, "x-semcache-threshold")) != NULL) {
        char *end;
        float t = strtof(v, &end);
        if (end == v || *end != '\0' || !isfinite(t) || t < -1.0f || t > 1.0f) {
            snprintf(msg, cap,
                     "x-semcache-threshold must be a number in [-1, 1]");
            return -1;
        }
        pr->has_threshold = true;
        pr->threshold = t;
    }
    v = nng_http_req_get_header(req, "x-semcache-namespace");
    if (v != NULL && !ns_name_ok(v)) {
        snprintf(msg, cap,
                 "x-semcache-namespace must be 1..%u of [A-Za-z0-9._:-]",
                 SC_CACHE_NS_NAME_MAX);
        return -1;
    }
    snprintf(pr->ns, sizeof(pr->ns), "%s", v != NULL ? v : pr->p->ns);
    const char *tags[2] = {"x-semcache-feature", "x-semcache-user"};
    char *dst[2] = {pr->feature, pr->user};
    bool *has[2] = {&pr->has_feature, &pr->has_user};
    for (int i = 0; i < 2; i++) {
        if ((v = nng_http_req_get_header(req, tags[i])) == NULL) {
            continue;
        }
        if (strlen(v) > SC_CACHE_TAG_MAX) {
            snprintf(msg, cap, "%s is over %u bytes", tags[i],
                     SC_CACHE_TAG_MAX);
            return -1;
        }
        snprintf(dst[i], SC_CACHE_TAG_MAX + 1, "%s", v);
        *has[i] = true;
    }
    return 0;
}

/* The body is in: parse, check, answer a hit or queue the rest. On a
 * lookup thread: a big body takes a while to parse and to embed. */
static void process(preq *pr)
{
    sc_proxy *p = pr->p;
    if (__atomic_load_n(&p->closing, __ATOMIC_RELAXED)) {
        reply_shutting_down(pr, false);
        return;
    }
    char msg[320];
    json_error_t jerr;
    bool oom, over;
    size_t cap = pr->len / CONTAINER_BYTES;
    cap = cap > SC_HTTP_MAX_CONTAINERS ? cap : SC_HTTP_MAX_CONTAINERS;
    if (pr->body != NULL &&
        sc_http_json_containers_over(pr->body, pr->len, cap)) {
        snprintf(msg, sizeof(msg),
                 "the body holds more than %zu JSON objects and arrays "
                 "(together): one per %u bytes of the body, %u at least",
                 cap, CONTAINER_BYTES, SC_HTTP_MAX_CONTAINERS);
        reply_error(pr, 413, "invalid_request_error", "too_big", msg, NULL,
                    false);
        return;
    }
    pr->root =
        sc_http_json_loadb_max(pr->body != NULL ? pr->body : "", pr->len, 0,
                               PARSE_BUDGET(pr->len), &jerr, &oom, &over);
    if (over) {
        snprintf(msg, sizeof(msg),
                 "parsing the body needs more than %zu bytes (%u times its "
                 "size plus %zu MiB): it holds too many small JSON values "
                 "(an empty string costs 25 times its text)",
                 PARSE_BUDGET(pr->len), PARSE_FACTOR,
                 SC_HTTP_PARSE_FLOOR >> 20);
        reply_error(pr, 413, "invalid_request_error", "too_big", msg, NULL,
                    false);
        return;
    }
    if (pr->root == NULL && oom) {
        reply_error(pr, 500, "semcache_error", "internal", "out of memory",
                    NULL, false);
        return;
    }
    if (pr->root == NULL) {
        snprintf(msg, sizeof(msg), "malformed JSON at line %d, column %d: %s",
                 jerr.line, jerr.column, jerr.text);
        reply_error(pr, 400, "invalid_request_error", "bad_request", msg, NULL,
                    false);
        return;
    }
    sc_err rc =
        sc_proxy_derive(pr->root, p->history, &pr->plan, msg, sizeof(msg));
    if (rc != SC_OK) {
        reply_error(
            pr, rc == SC_EINVAL ? 400 : 500,
            rc == SC_EINVAL ? "invalid_request_error" : "semcache_error",
            rc == SC_EINVAL ? "bad_request" : "internal", msg, NULL, false);
        return;
    }
    if (read_headers(pr, msg, sizeof(msg)) != 0) {
        reply_error(pr, 400, "invalid_request_error", "bad_request", msg, NULL,
                    false);
        return;
    }
    /* Access keys: the proxy is no way around them. */
    const char *key = nng_http_req_get_header(pr->req, "x-semcache-key");
    if (p->dispatch != NULL) {
        size_t kn = key != NULL ? strlen(key) : 0;
        sc_dispatch_access ra =
            sc_dispatch_check_key(p->dispatch, key, kn, pr->ns, false);
        if (ra == SC_ACCESS_UNAUTHORIZED) {
            reply_error(pr, 401, "semcache_error", "unauthorized",
                        key != NULL
                            ? "the x-semcache-key is not one this server knows"
                            : "this server wants a key: x-semcache-key",
                        NULL, false);
            return;
        }
        if (ra == SC_ACCESS_FORBIDDEN) {
            snprintf(msg, sizeof(msg), "the key may not read namespace '%s'",
                     pr->ns);
            reply_error(pr, 403, "semcache_error", "forbidden", msg, NULL,
                        false);
            return;
        }
        /* Not a refusal: the request is served, its answer not stored
         * (stored=no; reason=forbidden), and nothing is counted. */
        pr->can_write = sc_dispatch_may_write(p->dispatch, key, kn, pr->ns);
    } else {
        pr->can_write = true;
    }
    if (pr->plan.cacheable && !pr->skip && !pr->plan.stream &&
        p->embed_model[0] == '\0') {
        if (try_lookup(pr)) {
            return;
        }
    }
    submit(p->workers, pr);
}

/* ---- the lookup threads ------------------------------------------------ */

/* nng calls on_request and body_done on its few system threads (two per
 * CPU, at most 16), which also carry every completion of the nng socket:
 * a request parsed and embedded there (100 ms and more for a big body)
 * would stall every nng client. So a request whose body is in is queued
 * to threads of our own, which finish the handler's aio. */

static void looker_run(void *arg, void *local, sc_pool_job *job)
{
    (void)arg;
    (void)local;
    process(SC_POOL_ENTRY(job, preq, job));
}

void sc_proxy_pool_counts(sc_proxy *p, unsigned *queued, unsigned *running)
{
    uint64_t refused;
    sc_pool_counts(p->lookers, queued, running, &refused);
}

sc_err sc_proxy_write_metrics(sc_proxy *p, FILE *out)
{
    static const char *const one[][2] = {
        {"requests", "chat completion requests the proxy received"},
        {"hits", "chat completion requests answered from the cache"},
        {"upstream_calls", "chat completion calls made upstream"},
        {"stored", "upstream answers the proxy stored"},
        {"embedding_calls", "/v1/embeddings calls made upstream"},
        {"streams_cut", "streams cut by an upstream failure after their head "
                        "was relayed (also in "
                        "semcache_proxy_upstream_failures_total)"}};
    static const char *const codes[SC_PROXY_FAIL_N] = {
        "upstream_timeout", "upstream_unreachable", "upstream_too_big",
        "upstream_bad_status", "shutting_down"};
    sc_proxy_counts c;
    sc_proxy_get_counts(p, &c);
    const uint64_t v[] = {c.requests, c.hits,      c.upstream,
                          c.stored,   c.embedding, c.streams_cut};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        fprintf(out,
                "# HELP semcache_proxy_%s_total %s\n"
                "# TYPE semcache_proxy_%s_total counter\n"
                "semcache_proxy_%s_total %llu\n",
                one[i][0], one[i][1], one[i][0], one[i][0],
                (unsigned long long)v[i]);
    }
    fputs("# HELP semcache_proxy_upstream_failures_total upstream calls "
          "that failed (a 502, or a stream cut), by code\n"
          "# TYPE semcache_proxy_upstream_failures_total counter\n",
          out);
    for (size_t i = 0; i < SC_PROXY_FAIL_N; i++) {
        fprintf(out,
                "semcache_proxy_upstream_failures_total{code=\"%s\"} %llu\n",
                codes[i], (unsigned long long)c.fails[i]);
    }
    fputs("# HELP semcache_proxy_error_answers_total error answers of the "
          "proxy's own, by status (401 and 403 are in "
          "semcache_requests_refused_total, 502 in "
          "semcache_proxy_upstream_failures_total)\n"
          "# TYPE semcache_proxy_error_answers_total counter\n",
          out);
    for (size_t i = 0; i < SC_PROXY_OWN_N; i++) {
        fprintf(out, "semcache_proxy_error_answers_total{status=\"%u\"} %llu\n",
                (unsigned)own_status[i], (unsigned long long)c.own[i]);
    }
    fprintf(out,
            "# HELP semcache_proxy_streams_dropped_total streams cut on the "
            "client's side: it left, or a write to it passed "
            "--proxy-client-timeout\n"
            "# TYPE semcache_proxy_streams_dropped_total counter\n"
            "semcache_proxy_streams_dropped_total{reason=\"client_gone\"} "
            "%llu\n"
            "semcache_proxy_streams_dropped_total{reason=\"client_timeout\"} "
            "%llu\n",
            (unsigned long long)c.dropped[SC_PROXY_DROP_GONE],
            (unsigned long long)c.dropped[SC_PROXY_DROP_TIMEOUT]);
    unsigned lq, lr, wq, wr;
    uint64_t refused;
    sc_pool_counts(p->lookers, &lq, &lr, &refused);
    sc_pool_counts(p->workers, &wq, &wr, &refused);
    fprintf(out,
            "# HELP semcache_proxy_queued requests waiting now for a proxy "
            "thread: a lookup thread, or an upstream worker\n"
            "# TYPE semcache_proxy_queued gauge\n"
            "semcache_proxy_queued{stage=\"lookup\"} %u\n"
            "semcache_proxy_queued{stage=\"upstream\"} %u\n"
            "# HELP semcache_proxy_busy proxy threads running a request now\n"
            "# TYPE semcache_proxy_busy gauge\n"
            "semcache_proxy_busy{stage=\"lookup\"} %u\n"
            "semcache_proxy_busy{stage=\"upstream\"} %u\n",
            lq, wq, lr, wr);
    return ferror(out) ? SC_EIO : SC_OK;
}

/* ---- nng's handler ------------------------------------------------------ */

static void body_done(void *arg)
{
    preq *pr = arg;
    int rv = nng_aio_result(pr->baio);
    if (rv != 0 || nng_aio_count(pr->baio) != pr->len) {
        /* Timed out, closed or aborted: drop the connection. */
        nng_aio_finish(pr->haio, rv != 0 ? rv : NNG_ECLOSED);
        preq_done(pr);
        return;
    }
    sc_proxy *p = pr->p;
    pthread_mutex_lock(&p->mu);
    pr->body_in = true; /* sc_proxy_close aborts the read no more */
    pthread_mutex_unlock(&p->mu);
    submit(p->lookers, pr);
}

static void on_request(nng_aio *aio)
{
    nng_http_handler *hd = nng_aio_get_input(aio, 1);
    sc_proxy *p = nng_http_handler_get_data(hd);
    preq *pr = calloc(1, sizeof(*pr));
    if (pr == NULL) {
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    pr->p = p;
    pr->haio = aio;
    pr->req = nng_aio_get_input(aio, 0);
    pr->conn = nng_aio_get_input(aio, 2);
    pr->best = NAN;
    pthread_mutex_lock(&p->mu);
    pr->next = p->live;
    if (p->live != NULL) {
        p->live->prev = pr;
    }
    p->live = pr;
    p->nlive++;
    bool closing = p->closing;
    pthread_mutex_unlock(&p->mu);
    count(p, &p->counts.requests);
    if (closing) {
        reply_shutting_down(pr, true);
        return;
    }
    nng_http_req *req = pr->req;
    if (nng_http_req_get_header(req, "Transfer-Encoding") != NULL) {
        reply_error(pr, 411, "invalid_request_error", "bad_request",
                    "send the body with a Content-Length, not chunked", NULL,
                    true);
        return;
    }
    const char *cl = nng_http_req_get_header(req, "Content-Length");
    size_t len = 0;
    if (sc_http_content_length(cl, p->body_max, &len) != 0) {
        reply_error(pr, 400, "invalid_request_error", "bad_request",
                    "bad Content-Length", NULL, true);
        return;
    }
    if (len > p->body_max) {
        char msg[128];
        snprintf(msg, sizeof(msg), "the body is over the cap of %zu bytes",
                 p->body_max);
        reply_error(pr, 413, "invalid_request_error", "too_big", msg, NULL,
                    true);
        return;
    }
    /* Copied now: the request is nng's until a hijack. */
    pr->auth = dup_header(req, "Authorization");
    pr->org = dup_header(req, "OpenAI-Organization");
    pr->project = dup_header(req, "OpenAI-Project");
    if (len == 0) {
        submit(p->lookers, pr);
        return;
    }
    if ((pr->body = malloc(len)) == NULL ||
        nng_aio_alloc(&pr->baio, body_done, pr) != 0) {
        reply_error(pr, 500, "semcache_error", "internal", "out of memory",
                    NULL, true);
        return;
    }
    pr->len = len;
    nng_iov iov = {.iov_buf = pr->body, .iov_len = len};
    nng_aio_set_iov(pr->baio, 1, &iov);
    nng_aio_set_timeout(pr->baio, BODY_TIMEOUT);
    sc_http_continue(req, pr->conn);
    /* Started under p->mu: a close that began since the check above would
     * find pr->baio not yet reading, abort nothing, and wait out the
     * read's time-out. The read completes on another thread. */
    pthread_mutex_lock(&p->mu);
    closing = p->closing;
    if (!closing) {
        nng_http_conn_read_all(pr->conn, pr->baio);
    }
    pthread_mutex_unlock(&p->mu);
    if (closing) {
        reply_shutting_down(pr, true);
    }
}

static void route_free(void *arg)
{
    sc_proxy *p = arg;
    pthread_mutex_lock(&p->mu);
    p->route_live = false;
    pthread_cond_broadcast(&p->donecv);
    pthread_mutex_unlock(&p->mu);
}

/* ---- open and close --------------------------------------------------- */

/* The two upstream URLs of base: <base>/v1/<path>, or <base>/<path> when
 * base ends in /v1. */
static char *upstream_url(const char *base, const char *path)
{
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/') {
        n--;
    }
    bool v1 = n >= 3 && strncmp(base + n - 3, "/v1", 3) == 0;
    char *u = NULL;
    if (asprintf(&u, "%.*s%s/%s", (int)n, base, v1 ? "" : "/v1", path) < 0) {
        return NULL;
    }
    return u;
}

static void proxy_free(sc_proxy *p)
{
    free(p->chat_url);
    free(p->embed_url);
    pthread_cond_destroy(&p->donecv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

sc_err sc_proxy_open(const sc_proxy_config *cfg, sc_proxy **out)
{
    if (cfg == NULL || out == NULL || cfg->addr == NULL ||
        cfg->upstream == NULL || cfg->cache == NULL ||
        (strncmp(cfg->upstream, "http://", 7) != 0 &&
         strncmp(cfg->upstream, "https://", 8) != 0) ||
        strpbrk(cfg->upstream, " \r\n\t") != NULL ||
        (cfg->ns != NULL && !ns_name_ok(cfg->ns)) ||
        (cfg->embed_model != NULL &&
         strlen(cfg->embed_model) > SC_CACHE_TAG_MAX) ||
        cfg->workers > SC_PROXY_MAX_WORKERS ||
        cfg->lookup_workers > SC_PROXY_MAX_LOOKUP_WORKERS || cfg->history > 2) {
        return SC_EINVAL;
    }
    sc_http_json_init();
    char urlbuf[512];
    int un = strncmp(cfg->addr, "http://", 7) == 0
                 ? snprintf(urlbuf, sizeof(urlbuf), "%s", cfg->addr)
                 : snprintf(urlbuf, sizeof(urlbuf), "http://%s", cfg->addr);
    if (un < 0 || (size_t)un >= sizeof(urlbuf)) {
        return SC_EINVAL;
    }
    nng_url *url;
    if (nng_url_parse(&url, urlbuf) != 0) {
        return SC_EINVAL;
    }
    sc_proxy *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        nng_url_free(url);
        return SC_ENOMEM;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->donecv, NULL);
    p->cache = cfg->cache;
    p->dispatch = cfg->dispatch;
    snprintf(p->ns, sizeof(p->ns), "%s",
             cfg->ns != NULL ? cfg->ns : SC_PROXY_DEFAULT_NS);
    snprintf(p->embed_model, sizeof(p->embed_model), "%s",
             cfg->embed_model != NULL ? cfg->embed_model : "");
    p->timeout_ms =
        cfg->timeout_ms != 0 ? cfg->timeout_ms : SC_PROXY_DEFAULT_TIMEOUT_MS;
    p->max_duration_ms = cfg->max_duration_ms != 0
                             ? cfg->max_duration_ms
                             : SC_PROXY_DEFAULT_MAX_DURATION_MS;
    p->client_timeout_ms = cfg->client_timeout_ms != 0
                               ? cfg->client_timeout_ms
                               : SC_PROXY_DEFAULT_CLIENT_TIMEOUT_MS;
    p->body_max =
        cfg->body_max != 0 ? cfg->body_max : SC_PROXY_DEFAULT_BODY_MAX;
    p->history = cfg->history;
    p->store_tool_calls = cfg->store_tool_calls;
    p->store_truncated = cfg->store_truncated;
    sc_pool_config wc = {
        .threads = cfg->workers != 0 ? cfg->workers : SC_PROXY_DEFAULT_WORKERS,
        .run = worker_run,
        .refuse = refuse,
        .thread_start = worker_start,
        .thread_stop = worker_stop,
    };
    sc_pool_config lc = {
        .threads = cfg->lookup_workers != 0 ? cfg->lookup_workers
                                            : SC_PROXY_DEFAULT_LOOKUP_WORKERS,
        .run = looker_run,
        .refuse = refuse,
    };
    sc_err rc = SC_ENOMEM;
    int rv;
    p->chat_url = upstream_url(cfg->upstream, "chat/completions");
    p->embed_url = upstream_url(cfg->upstream, "embeddings");
    if (p->chat_url == NULL || p->embed_url == NULL) {
        goto fail_alloc;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        goto fail_alloc;
    }
    /* Before the handler is added: the server may be the HTTP front's,
     * listening already, and a request queued at once. */
    if (sc_pool_open(&wc, &p->workers) != SC_OK ||
        sc_pool_open(&lc, &p->lookers) != SC_OK) {
        goto fail_pools;
    }
    if ((rv = nng_http_server_hold(&p->srv, url)) != 0) {
        fprintf(stderr, "semcached: cannot serve HTTP on %s: %s\n", cfg->addr,
                nng_strerror(rv));
        rc = rv == NNG_ENOMEM ? SC_ENOMEM : SC_EIO;
        goto fail_pools;
    }
    /* The default namespace exists from the start, so that every lookup
     * in it is counted in the ledger (a lookup of a namespace that does
     * not exist is not), the first one and its embedding spend included.
     * Made before the handler is added: once it is, a request may be
     * reading its body, and no failure may free what it points to. */
    rv = sc_cache_ns_create(p->cache, p->ns, NULL);
    if (rv != SC_OK && rv != SC_ENSEXIST) {
        rc = (sc_err)rv;
        goto fail_hold;
    }
    if (nng_http_handler_alloc(&p->hd, CHAT_PATH, on_request) != 0) {
        goto fail_hold;
    }
    p->route_live = true;
    if (nng_http_handler_set_data(p->hd, p, route_free) != 0 ||
        nng_http_handler_set_method(p->hd, "POST") != 0 ||
        nng_http_handler_collect_body(p->hd, false, 0) != 0) {
        goto fail_handler;
    }
    if ((rv = nng_http_server_add_handler(p->srv, p->hd)) != 0) {
        rc = rv == NNG_EADDRINUSE ? SC_EIO : SC_ENOMEM;
        if (rc == SC_EIO) {
            fprintf(stderr, "semcached: the route %s on %s is taken\n",
                    CHAT_PATH, cfg->addr);
        }
        goto fail_handler;
    }
    /* Counted by nng: when the sc_http's start already listens, this
     * cannot fail. When it is the first (a server of our own, or an
     * sc_http opened with start_later), it listens, and may fail: then
     * nothing listened, so no request can have reached the handler. */
    if ((rv = nng_http_server_start(p->srv)) != 0) {
        fprintf(stderr, "semcached: cannot listen on %s: %s\n", cfg->addr,
                nng_strerror(rv));
        rc = SC_EIO;
        goto fail_route;
    }
    nng_url_free(url);
    *out = p;
    return SC_OK;

fail_route:
    nng_http_server_del_handler(p->srv, p->hd);
fail_handler:
    nng_http_handler_free(p->hd); /* runs route_free */
fail_hold:
    nng_http_server_release(p->srv);
fail_pools:
    sc_pool_close(p->lookers); /* before their libcurl goes */
    sc_pool_close(p->workers);
    curl_global_cleanup();
fail_alloc:
    nng_url_free(url);
    proxy_free(p);
    return rc;
}

/* sc_proxy_close; final (NULL: none) gets the counts at the end. */
static void close_proxy(sc_proxy *p, sc_proxy_counts *final)
{
    if (p == NULL) {
        return;
    }
    /* No new requests reach us; queued ones are answered 503, calls in
     * flight are aborted by their progress callback, and streams are cut
     * (their writes aborted). */
    nng_http_server_del_handler(p->srv, p->hd);
    nng_http_handler_free(p->hd);
    pthread_mutex_lock(&p->mu);
    __atomic_store_n(&p->closing, true, __ATOMIC_RELAXED);
    for (preq *pr = p->live; pr != NULL; pr = pr->next) {
        if (!pr->body_in && pr->baio != NULL) {
            nng_aio_abort(pr->baio, NNG_ECLOSED);
        }
        if (pr->waio != NULL) {
            nng_aio_abort(pr->waio, NNG_ECLOSED); /* a stream's write */
        }
    }
    pthread_mutex_unlock(&p->mu);
    /* The lookup threads first: what they finish may still be queued to
     * a worker (run_job answers it 503 once closing is set). */
    sc_pool_stop(p->lookers);
    sc_pool_stop(p->workers);
    pthread_mutex_lock(&p->mu);
    while (p->nlive > 0 || p->route_live) {
        pthread_cond_wait(&p->donecv, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    nng_http_server_stop(p->srv);
    nng_http_server_release(p->srv);
    /* Only now: a body read to its end as we closed is still submitted. */
    sc_pool_close(p->lookers);
    sc_pool_close(p->workers);
    curl_global_cleanup();
    if (final != NULL) {
        sc_proxy_get_counts(p, final);
    }
    proxy_free(p);
}

void sc_proxy_close(sc_proxy *p)
{
    close_proxy(p, NULL);
}

void sc_proxy_close_counts(sc_proxy *p, sc_proxy_counts *out)
{
    memset(out, 0, sizeof(*out));
    close_proxy(p, out);
}
