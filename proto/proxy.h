/* proxy.h - an OpenAI-compatible caching proxy (docs/PROXY.md): POST
 * /v1/chat/completions on the HTTP front's address. Each request's scope
 * (model, answer-changing parameters, system prompt, tools, earlier turns
 * by policy) and text (the last user message) are derived here; a hit is
 * answered from the cache at once, a miss goes to the upstream API (libcurl,
 * on a pool of worker threads) and a complete answer is stored with the
 * token counts of its usage field. No request's work runs on nng's threads
 * (they carry the nng socket's I/O too): the derivation, the embedding and
 * the lookup run on a pool of lookup threads of the proxy's own. */
#ifndef SC_PROXY_H
#define SC_PROXY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cache/cache.h"
#include "common/sc_error.h"
#include "proto/dispatch.h"

#define SC_PROXY_DEFAULT_NS         "chat"
#define SC_PROXY_DEFAULT_TIMEOUT_MS 60000u
/* The longest a streaming client may keep its worker waiting to write, in
 * all, over one stream (--proxy-client-timeout). */
#define SC_PROXY_DEFAULT_CLIENT_TIMEOUT_MS 30000u
/* The longest one upstream call may last, however steadily the upstream
 * sends (--upstream-max-duration): 10 minutes, which a long stream of a
 * slow model fits. */
#define SC_PROXY_DEFAULT_MAX_DURATION_MS 600000u
#define SC_PROXY_MAX_MAX_DURATION_MS     86400000u
#define SC_PROXY_DEFAULT_WORKERS    8u
#define SC_PROXY_MAX_WORKERS        256u
#define SC_PROXY_DEFAULT_BODY_MAX   (4u << 20)
/* Threads that parse, embed and look requests up (semcached: --threads). */
#define SC_PROXY_DEFAULT_LOOKUP_WORKERS 4u
#define SC_PROXY_MAX_LOOKUP_WORKERS     1024u

/* How earlier turns (messages before the last user message, other than
 * system and developer messages) enter the scope. */
typedef enum sc_proxy_history {
    /* Default: a hash of the earlier turns is part of the scope, so an
     * answer is reused only in a conversation whose earlier turns are
     * identical (single-turn requests have none). */
    SC_PROXY_HISTORY_EXACT = 0,
    /* Only single-turn requests use the cache; others pass through. */
    SC_PROXY_HISTORY_SINGLE = 1,
    /* Earlier turns are ignored: the last user message alone is matched.
     * Replays answers into other conversations; opt in knowingly. */
    SC_PROXY_HISTORY_IGNORE = 2
} sc_proxy_history;

typedef struct sc_proxy_config {
    /* "HOST:PORT" of the HTTP front (sc_http_open must have opened it in
     * this process: the proxy adds its route to the same nng server), and
     * the upstream's base URL ("http://HOST:PORT" or ".../v1"; the proxy
     * posts to <base>/v1/chat/completions, or <base>/chat/completions when
     * the base ends in /v1). Both borrowed for sc_proxy_open. */
    const char *addr;
    const char *upstream;
    sc_cache *cache;       /* borrowed; must outlive the proxy */
    sc_dispatch *dispatch; /* borrowed, for its access keys; NULL = none */
    const char *ns;        /* default namespace; NULL = SC_PROXY_DEFAULT_NS;
                              copied */
    uint32_t timeout_ms;   /* an upstream call's limit (for a stream: the
                              longest silence); 0 = the default */
    uint32_t client_timeout_ms; /* a stream's client's writes, in all;
                                   0 = the default */
    uint32_t max_duration_ms;   /* an upstream call's whole length, a
                                   stream's included; 0 = the default */
    unsigned workers;      /* threads that call the upstream; 0 = default */
    /* Threads that parse a request whose body is in, derive its plan,
     * embed it (the built-in embedder) and look it up, answering hits
     * there and queuing the rest to the workers; 0 =
     * SC_PROXY_DEFAULT_LOOKUP_WORKERS, at most SC_PROXY_MAX_LOOKUP_WORKERS. */
    unsigned lookup_workers;
    size_t body_max;       /* largest request body and upstream answer;
                              0 = SC_PROXY_DEFAULT_BODY_MAX */
    sc_proxy_history history;
    bool store_tool_calls; /* store answers that end in tool calls */
    bool store_truncated;  /* store answers cut by max_tokens ("length") */
    /* NULL = lookups embed with the cache's built-in embedder; else the
     * upstream's /v1/embeddings with this model (copied), its tokens
     * counted in the ledger as embedding spend. */
    const char *embed_model;
} sc_proxy_config;

/* Fills cfg with the defaults (every pointer NULL). */
void sc_proxy_config_init(sc_proxy_config *cfg);

/* Takes the proxy flags of semcached: --upstream URL, --upstream-timeout
 * MS, --upstream-max-duration MS, --proxy-client-timeout MS, --proxy-ns
 * NS, --proxy-workers N,
 * --proxy-history exact|single|ignore, --proxy-store
 * stop[,tool_calls][,length], --proxy-embed-model MODEL. Returns 1 when
 * flag is one of them and value is good (value is borrowed: it must
 * outlive cfg), 0 when flag is not a proxy flag, -1 with a message in msg
 * (cap bytes) when value is bad. */
int sc_proxy_parse_flag(sc_proxy_config *cfg, const char *flag,
                        const char *value, char *msg, size_t cap);

/* The rows of proxy.c's table of the numeric flags above (config.h,
 * struct sc_config_num: flag, key of the configuration's "proxy" object,
 * range, field of sc_proxy_config and sizeof it, so that
 * sc_config_num_parse refuses them with another struct): the one source
 * of those keys, which sc_config_load's "proxy" object takes from here.
 * sc_proxy_num_at(i) is row i of SC_PROXY_NNUMS (NULL past the end);
 * sc_proxy_num_by_key the row of key ("workers"), NULL if none. Static,
 * never freed. */
#define SC_PROXY_NNUMS 4
struct sc_config_num;
const struct sc_config_num *sc_proxy_num_at(size_t i);
const struct sc_config_num *sc_proxy_num_by_key(const char *key);

/* The other flags above (a URL, a name, a choice, a list) and their keys
 * of the "proxy" object, SC_PROXY_NSTRS pairs in proxy.c's second table:
 * sc_proxy_str_at(i) returns row i's key ("ns") and sets *flag to its
 * flag ("--proxy-ns"), or returns NULL past the end, *flag untouched.
 * sc_proxy_flag_by_key returns the flag of any key of the "proxy" object,
 * numeric or not, NULL if none: sc_config_load takes the keys from here.
 * Static strings, never freed. */
#define SC_PROXY_NSTRS 5
const char *sc_proxy_str_at(size_t i, const char **flag);
const char *sc_proxy_flag_by_key(const char *key);

typedef struct sc_proxy sc_proxy;

/* Adds POST /v1/chat/completions to the HTTP server at cfg->addr and starts
 * the workers; the server listens from here on, if it did not already. cfg is
 * copied. On success *out is the caller's, closed with sc_proxy_close before
 * the sc_http of the same address; on failure *out is untouched. Errors:
 * SC_EINVAL (a missing or bad field, an upstream URL that is not http:// or
 * https://), SC_EIO (the route is taken, nothing serves addr, or addr cannot
 * be listened on: the message went to stderr), SC_ENOMEM. */
sc_err sc_proxy_open(const sc_proxy_config *cfg, sc_proxy **out);

/* Removes the route, answers queued requests 503 (those waiting for a
 * lookup thread at once, those waiting for a worker as the workers take
 * them), aborts upstream calls in flight (their clients get 502, streams
 * are cut), waits until no request is running (a lookup in progress
 * finishes first), then frees p. NULL is a no-op. */
void sc_proxy_close(sc_proxy *p);

/* The codes of a failed upstream call (docs/PROXY.md): the 502's error
 * code, or the cause of a stream cut after its head was relayed. */
typedef enum sc_proxy_fail {
    SC_PROXY_FAIL_TIMEOUT = 0,       /* upstream_timeout */
    SC_PROXY_FAIL_UNREACHABLE = 1,   /* upstream_unreachable */
    SC_PROXY_FAIL_TOO_BIG = 2,       /* upstream_too_big */
    SC_PROXY_FAIL_BAD_STATUS = 3,    /* upstream_bad_status */
    SC_PROXY_FAIL_SHUTTING_DOWN = 4, /* shutting_down */
    SC_PROXY_FAIL_N = 5
} sc_proxy_fail;

/* The proxy's own error answers, by status (docs/HTTP.md): 400 and 411
 * bad_request, 413 too_big, 500 internal, 503 shutting_down. Its 401 and
 * 403 are counted by the dispatcher, its 502s in fails. */
enum { SC_PROXY_OWN_N = 5 };

/* Why a stream (a hit's, or one relayed) was cut on the client's side. */
typedef enum sc_proxy_drop {
    SC_PROXY_DROP_GONE = 0,    /* client_gone: its connection failed */
    SC_PROXY_DROP_TIMEOUT = 1, /* client_timeout: --proxy-client-timeout */
    SC_PROXY_DROP_N = 2
} sc_proxy_drop;

/* Counters since open, for tests, logs and /metrics. */
typedef struct sc_proxy_counts {
    uint64_t requests;  /* chat completion requests received */
    uint64_t hits;      /* answered from the cache */
    uint64_t upstream;  /* chat completion calls made upstream */
    uint64_t stored;    /* answers stored */
    uint64_t errors;    /* upstream failures: answered 502, or a stream cut
                           after its head was relayed */
    uint64_t embedding; /* /v1/embeddings calls made upstream */
    uint64_t fails[SC_PROXY_FAIL_N]; /* errors by code; they sum to it */
    uint64_t streams_cut; /* of errors: streams cut after their head */
    uint64_t own[SC_PROXY_OWN_N];      /* error answers of its own */
    uint64_t dropped[SC_PROXY_DROP_N]; /* streams the client's side cut */
    /* Streams (a hit's, or one relayed) cut by sc_proxy_close once begun,
     * their head sent or not (a head's write that finds the stop begun is
     * refused, and the client gets the connection's end alone): a write to
     * the client aborted or refused by the stop, or the upstream call of a
     * relayed one aborted, whichever came first; each
     * counted once, here only (not in errors, fails or streams_cut, so
     * that fails[shutting_down] counts 502 answers alone). Never in
     * /metrics, which the stop leaves first: for the stop line. */
    uint64_t stop_cut;
} sc_proxy_counts;
void sc_proxy_get_counts(sc_proxy *p, sc_proxy_counts *out);

/* sc_proxy_close, then *out = the final counts, those of what the close
 * cut included (stop_cut; the 502s of fails[SC_PROXY_FAIL_SHUTTING_DOWN]
 * and the 503s in own, answered shutting_down). A NULL p is a no-op that
 * zeroes *out. */
void sc_proxy_close_counts(sc_proxy *p, sc_proxy_counts *out);

/* Writes the proxy's families of GET /metrics (docs/HTTP.md): its
 * counters, and its two thread pools' queued and running requests, with
 * their # HELP and # TYPE lines, to out. Reads relaxed atomics and takes
 * each pool's lock for a moment: never waits for a request. Errors: SC_EIO
 * (a write to out failed). */
sc_err sc_proxy_write_metrics(sc_proxy *p, FILE *out);

/* The lookup threads' queue now: requests whose body is in waiting for
 * one, and requests one runs (for tests). */
void sc_proxy_pool_counts(sc_proxy *p, unsigned *queued, unsigned *running);

/* For tests: fail(arg) is asked, from any thread, each time a hit is about
 * to be turned into its answer; true makes that step run out of memory
 * (NULL: none). */
void sc_proxy_set_hit_oom_hook(bool (*fail)(void *arg), void *arg);

/* ---- the derivation (exposed for tests) -------------------------------*/

/* What a request means to the cache. */
typedef struct sc_proxy_plan {
    bool cacheable;      /* false: pass through, no lookup, no store */
    const char *why_not; /* static reason when not cacheable ("multi_turn",
                            "n", "non_text", "last_not_user", ...) */
    bool stream;         /* "stream": true */
    bool include_usage;  /* "stream_options": {"include_usage": true} */
    char model[SC_CACHE_TAG_MAX + 1];
    char scope[SC_CACHE_SCOPE_MAX + 1];
    char *text; /* the last user message (malloc'd, text_len bytes, NUL
                   after), or NULL when not cacheable */
    size_t text_len;
} sc_proxy_plan;

/* Derives the plan of chat completion request req (borrowed for the call)
 * under history policy h. The scope is "oai1|MODEL|pHASH|sHASH|hHASH",
 * each HASH a 64-bit XXH3 (XXH3_64bits) of canonical JSON (sorted keys,
 * integers of real-valued parameters as reals): of every top-level field
 * but those that do not change the answer (model, messages, stream,
 * stream_options, n, user, metadata, store, service_tier,
 * prompt_cache_key, safety_identifier), then of the last message's fields
 * other than role and content; of the system and developer messages; and
 * of the earlier turns (EXACT; 0 under IGNORE or when there are none). On
 * success *out is filled (sc_proxy_plan_fini frees its text). Errors: SC_EINVAL
 * with a reason in msg (cap bytes) when req is not a chat completion
 * request (no model string, no non-empty messages array, a message that is
 * not an object with a string role), SC_ENOMEM; *out is then zeroed. */
sc_err sc_proxy_derive(const json_t *req, sc_proxy_history h,
                       sc_proxy_plan *out, char *msg, size_t cap);
void sc_proxy_plan_fini(sc_proxy_plan *p);

#endif
