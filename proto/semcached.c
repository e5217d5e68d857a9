/* semcached.c - the daemon: parses its flags, opens the cache, serves the
 * protocol on every --listen URL, expires entries once a second, reloads
 * its access keys on SIGHUP, and shuts down cleanly on SIGTERM or SIGINT.
 * One log line per event on stderr. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache/cache.h"
#include "cache/persist.h"
#include "common/sc_plural.h"
#include "common/sc_vec.h"
#include "embed/embed.h"
#include "index/simd/simd.h"
#include "proto/cli_report.h"
#include "proto/config.h"
#include "proto/dispatch.h"
#include "proto/http.h"
#include "proto/proxy.h"
#include "proto/metrics.h"
#include "proto/server.h"

/* Raises the soft limit on open descriptors to the hard one (at most
 * 2^20): each client holds one, and only select() needs the usual 1024,
 * which neither nng nor semcached uses. Returns the limit in force, 0 when
 * unknown. */
static unsigned long raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return 0;
    }
    rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (1u << 20)
                      ? (rlim_t)(1u << 20)
                      : rl.rlim_max;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        struct rlimit nl = {want, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &nl) == 0) {
            rl.rlim_cur = want;
        }
    }
    return rl.rlim_cur == RLIM_INFINITY ? 1ul << 20
                                        : (unsigned long)rl.rlim_cur;
}

/* Descriptors the caps below leave for the state files, the embedder's
 * table and nng's own (the proxy's upstream connections, one a worker,
 * are kept out besides). */
#define FD_RESERVE 64

/* The caps on connections: HTTP's the configured one but at most half of
 * the descriptors past FD_RESERVE, nng clients' the configured one but at
 * most what HTTP leaves of those; so clients of both kinds at their caps
 * still leave FD_RESERVE descriptors. nofile 0 (unknown) caps nothing
 * further. */
static void conn_caps(unsigned http_conf, unsigned nng_conf, bool http_on,
                      unsigned long nofile, unsigned *http_cap,
                      unsigned *nng_cap)
{
    unsigned long room = nofile > FD_RESERVE + 2 ? nofile - FD_RESERVE : 2;
    unsigned long h = http_conf != 0 ? http_conf : SC_HTTP_DEFAULT_MAX_CONNS;
    unsigned long n = nng_conf != 0 ? nng_conf : SC_SERVER_DEFAULT_MAX_CLIENTS;
    if (nofile != 0 && h > room / 2) {
        h = room / 2;
    }
    if (nofile != 0 && n > room - (http_on ? h : 0)) {
        n = room - (http_on ? h : 0);
    }
    *http_cap = (unsigned)h;
    *nng_cap = (unsigned)n;
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: semcached [--config FILE] [--listen URL]... [--threads N]\n"
        "                 [--max-clients N]\n"
        "                 [--http HOST:PORT] [--http-max-conns N]\n"
        "                 [--http-stop-grace MS] [--http-read-timeout MS]\n"
        "                 [--http-write-timeout MS]\n"
        "                 [--prices FILE]\n"
        "                 [--data-dir DIR] [--embed-table FILE]\n"
        "                 [--recv-max BYTES] [--reply-queue-max BYTES]\n"
        "                 [--reply-queue-len N]\n"
        "                 [--reply-total-max BYTES] [--reply-timeout MS]\n"
        "                 [--tls-cert FILE]\n"
        "                 [--max-namespaces N] [--max-bytes BYTES]\n"
        "                 [--persist on|off] [--fsync always|everysec|no]\n"
        "                 [--compact-bytes BYTES] [--repair]\n"
        "                 [--snapshot-at-stop on|off]\n"
        "\n"
        "  --config FILE       JSON configuration (docs/CONFIG.md); flags "
        "override it;\n"
        "                      SIGHUP reads it again for its access keys\n"
        "  --listen URL        tcp://HOST:PORT, ipc:///PATH or "
        "tls+tcp://HOST:PORT\n"
        "                      (repeatable; default %s)\n"
        "  --threads N         worker threads (default one per CPU, at most\n"
        "                      64)\n"
        "  --max-clients N     nng clients connected at once (default %u,\n"
        "                      at most what the descriptor limit leaves)\n"
        "  --http HOST:PORT    also serve HTTP: JSON ops, /metrics, /report,\n"
        "                      /healthz (docs/HTTP.md)\n"
        "  --http-max-conns N  HTTP connections held open at once (default\n"
        "                      %u, at most half what the descriptor limit\n"
        "                      leaves)\n"
        "  --http-stop-grace MS  how long a stop lets the HTTP answers being\n"
        "                      written out (default %u); a\n"
        "                      second SIGTERM or SIGINT ends it at once\n"
        "  --http-read-timeout MS  the longest a request's head may take to\n"
        "                      arrive, from the connection or the previous\n"
        "                      answer, before the connection is closed\n"
        "                      (default %u)\n"
        "  --http-write-timeout MS  the longest the write of one HTTP answer\n"
        "                      may take before its connection is closed\n"
        "                      (default %u)\n"
        "  --prices FILE       price table for the cost ledger (default: the\n"
        "                      dated table compiled in, data/prices.json)\n"
        "  --data-dir DIR      where semcached keeps its files (default %s)\n"
        "  --embed-table FILE  the built-in embedder's table (default\n"
        "                      DIR/%s)\n"
        "  --recv-max BYTES    largest request accepted (default %u)\n"
        "  --reply-queue-max BYTES  replies an nng client may leave unread\n"
        "                      before it is disconnected (default 128 MiB)\n"
        "  --reply-queue-len N  replies queued for one nng client; past it a\n"
        "                      reply is dropped and counted\n"
        "                      (default %u)\n"
        "  --reply-total-max BYTES  replies held for all nng clients "
        "together;\n"
        "                      past it a reply is refused with a short "
        "\"busy\"\n"
        "                      error (default 256 MiB)\n"
        "  --reply-timeout MS  the longest the write of one reply may take\n"
        "                      before its client is disconnected (default\n"
        "                      30000)\n"
        "  --tls-cert FILE     PEM certificate and key for tls+tcp:// "
        "listeners\n"
        "  --persist on|off    keep the cache in DIR/" SC_CONFIG_STATE_DIR
        " across restarts\n"
        "                      (default on; docs/PERSISTENCE.md)\n"
        "  --fsync MODE        always: fsync before a write is acknowledged;\n"
        "                      everysec (default): once a second; no: never\n"
        "  --compact-bytes N   log size that starts a background compaction\n"
        "                      (default 64 MiB)\n"
        "  --repair            start even past corrupt records, dropping them\n"
        "                      (each is reported)\n"
        "  --snapshot-at-stop on|off  write a snapshot on SIGTERM/SIGINT,\n"
        "                      keeping hit counts, LRU order and sliding TTLs\n"
        "                      (default on; off: a faster stop)\n"
        "  --max-namespaces N  cap on namespaces (default 1024)\n"
        "  --max-bytes BYTES   cap on the whole cache (default 1 GiB; LRU "
        "beyond)\n"
        "  --upstream URL      with --http: serve POST /v1/chat/completions\n"
        "                      as an OpenAI-compatible caching proxy of URL;\n"
        "                      its flags --upstream-timeout MS,\n"
        "                      --upstream-max-duration MS,\n"
        "                      --proxy-client-timeout MS, --proxy-ns NS,\n"
        "                      --proxy-workers N,\n"
        "                      --proxy-history exact|single|ignore,\n"
        "                      --proxy-store stop[,tool_calls][,length],\n"
        "                      --proxy-embed-model MODEL (docs/PROXY.md)\n",
        SC_SERVER_DEFAULT_URL, SC_SERVER_DEFAULT_MAX_CLIENTS,
        SC_HTTP_DEFAULT_MAX_CONNS, SC_HTTP_STOP_GRACE_MS,
        SC_HTTP_DEFAULT_READ_TIMEOUT_MS, SC_HTTP_DEFAULT_WRITE_TIMEOUT_MS,
        SC_CONFIG_DEFAULT_DATA_DIR, SC_CONFIG_EMBED_FILE,
        SC_SERVER_DEFAULT_RECVMAX, SC_SERVER_DEFAULT_REPLY_QUEUE_LEN);
    /* The ranges from the tables the flags and the keys are parsed by,
     * the daemon's (config.h) and then the proxy's (proxy.h), so that
     * --help cannot say another. */
    fprintf(f, "\nnumeric flags take a whole number in the range of their "
               "config key:\n");
    for (size_t i = 0; i < sc_config_nnums + SC_PROXY_NNUMS; i++) {
        const sc_config_num *n = i < sc_config_nnums
                                     ? &sc_config_nums[i]
                                     : sc_proxy_num_at(i - sc_config_nnums);
        char range[80];
        if (n->flag != NULL) {
            sc_config_num_range(n, range, sizeof(range));
            fprintf(f, "  %-22s %s\n", n->flag, range);
        }
    }
}

/* The built-in embedder as the cache calls it. */
static sc_err embed_fn(void *arg, const char *text, size_t len, float *out)
{
    return sc_embed_text(arg, text, len, out);
}

static bool supersedes_fn(void *arg, const char *model)
{
    return sc_embed_model_superseded(arg, model);
}

/* With the texts' signatures, made outside the cache's locks (prep_fn):
 * the cache always has them for this model's entries and lookups. A text
 * without one (none is expected) is read as it is. */
static void rescore_fn(void *arg, const void *stats, const char *q, size_t qn,
                       const void *qsig, size_t n, const char *const *c,
                       const size_t *cn, const void *const *csigs,
                       const float *cosine, float *out)
{
    bool all = qsig != NULL;
    for (size_t i = 0; i < n && all; i++) {
        all = csigs[i] != NULL;
    }
    if (all) {
        sc_embed_rescore_sigs(arg, stats, qsig, n,
                              (const sc_embed_sig *const *)csigs, cosine, out);
        return;
    }
    sc_embed_rescore_many(arg, stats, q, qn, n, c, cn, cosine, out);
}

static void *prep_fn(void *arg, const char *text, size_t len)
{
    sc_embed_sig *s = NULL;
    return sc_embed_sig_new(arg, text, len, &s) == SC_OK ? s : NULL;
}

static void prep_free_fn(void *arg, void *prep)
{
    (void)arg;
    sc_embed_sig_free(prep);
}

static size_t prep_bytes_fn(void *arg, const void *prep)
{
    (void)arg;
    return sc_embed_sig_bytes(prep);
}

/* Each namespace's word document frequencies (embed.h: sc_embed_df). */
static void *stats_new_fn(void *arg)
{
    (void)arg;
    return sc_embed_df_new();
}

static void stats_free_fn(void *arg, void *stats)
{
    (void)arg;
    sc_embed_df_free(stats);
}

static bool stats_count_fn(void *arg, void *stats, const char *text, size_t len,
                           const void *sig, int delta)
{
    /* Out of memory for an add: that text's words count as unseen, which
     * only weights them a little higher (the cache then never counts it
     * out); nothing else depends on it. */
    return (sig != NULL
                ? sc_embed_df_count_sig(stats, sig, delta)
                : sc_embed_df_count(stats, arg, text, len, delta)) == SC_OK;
}

static void *stats_clone_fn(void *arg, const void *stats)
{
    (void)arg;
    return sc_embed_df_clone(stats);
}

static size_t stats_bytes_fn(void *arg, const void *stats)
{
    (void)arg;
    return sc_embed_df_bytes(stats);
}

/* Opens the embedder's table. A missing table is no error: text-only
 * requests are then refused with a message saying how to make it, and
 * vector requests work. A table that is there but bad stops the start.
 * Returns 0 or -1. */
static int open_embedder(const sc_config *conf, char *path, size_t cap,
                         sc_embed **out)
{
    *out = NULL;
    if (sc_config_embed_path(conf, path, cap) != SC_OK) {
        fprintf(stderr, "semcached: the embedder table's path is too long\n");
        return -1;
    }
    /* Only a table that is not there is no error: one that cannot be
     * reached (a directory not searchable, a loop) stops the start, as a
     * damaged one does, rather than leave text unserved in silence. */
    struct stat st;
    int missing = stat(path, &st) != 0 ? errno : 0;
    if (missing != 0 && missing != ENOENT) {
        fprintf(stderr, "semcached: cannot reach the embedder table %s: %s\n",
                path, strerror(missing));
        return -1;
    }
    if (missing == ENOENT) {
        fprintf(stderr,
                "semcached: no embedder table at %s: requests with text and "
                "no vector will be refused (no_embedder); make it with "
                "scripts/fetch-embeddings.sh %s\n",
                path, path);
        return 0;
    }
    sc_err rc = sc_embed_open(path, out);
    if (rc != SC_OK) {
        fprintf(stderr,
                "semcached: cannot use the embedder table %s: %s (remake it "
                "with scripts/fetch-embeddings.sh %s)\n",
                path, sc_strerror(rc), path);
        return -1;
    }
    fprintf(
        stderr, "semcached: embedder %s (%u words, %u dimensions) from %s\n",
        sc_embed_model(*out), sc_embed_words(*out), sc_embed_dim(*out), path);
    return 0;
}

/* The nng front's handlers: the dispatcher's, timed into the metrics that
 * /metrics shows. */
typedef struct front {
    sc_dispatch *disp;
    sc_metrics *metrics;
    sc_ledger *ledger;
    sc_cache *cache;     /* which namespaces live, for /metrics */
    sc_persist *persist; /* NULL = in memory only */
    sc_server *srv;      /* set once it is open, before the HTTP front */
    /* The proxy, for /metrics: set once it is open, and NULL again before
     * it closes, under proxy_mu, which a scrape holds while it reads it. */
    pthread_mutex_t proxy_mu;
    sc_proxy *proxy;
} front;

static void front_set_proxy(front *f, sc_proxy *p)
{
    pthread_mutex_lock(&f->proxy_mu);
    f->proxy = p;
    pthread_mutex_unlock(&f->proxy_mu);
}

/* Says which restored namespaces still hold the built-in embedder's
 * vectors of an earlier version (or of another table): those restore could
 * not move (another dimension). Their text requests are not embedded, so
 * they get exact hits only until dropped and refilled. */
static void warn_superseded(sc_cache *cache, const sc_embed *emb)
{
    size_t n = 0;
    if (emb == NULL || sc_cache_ns_list(cache, NULL, 0, &n) != SC_OK ||
        n == 0) {
        return;
    }
    char(*names)[SC_CACHE_NS_NAME_MAX + 1] = malloc(n * sizeof(*names));
    if (names == NULL || sc_cache_ns_list(cache, names, n, &n) != SC_OK) {
        free(names);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        sc_ns_config cfg;
        if (sc_cache_ns_get_config(cache, names[i], &cfg) == SC_OK &&
            sc_embed_model_superseded(emb, cfg.embed_model)) {
            fprintf(stderr,
                    "semcached: warning: namespace %s holds vectors of the "
                    "built-in embedder's model %s, which cannot be moved to "
                    "the loaded %s (another dimension): its text requests "
                    "get exact hits only. Drop it (semcache-cli ns-drop) and "
                    "let it refill to give them semantic hits again (README, "
                    "\"Upgrading\")\n",
                    names[i], cfg.embed_model, sc_embed_model(emb));
        }
    }
    free(names);
}

static int timed_handle(void *arg, const uint8_t *req, size_t len,
                        uint8_t **reply, size_t *reply_len)
{
    front *f = arg;
    double t0 = sc_metrics_now();
    int rc = sc_dispatch_handle(f->disp, req, len, reply, reply_len);
    sc_metrics_observe_request(f->metrics, SC_METRICS_NNG, req, len,
                               sc_metrics_now() - t0);
    return rc;
}

static int busy_reply(void *arg, const uint8_t *refused, size_t len,
                      uint8_t **reply, size_t *reply_len)
{
    front *f = arg;
    return sc_dispatch_busy_reply(f->disp, refused, len, reply, reply_len);
}

static void timed_handle_many(void *arg, sc_server_msg *msgs, size_t n)
{
    front *f = arg;
    double t0 = sc_metrics_now();
    sc_dispatch_handle_many(f->disp, msgs, n);
    /* Each request of a batch waited for the whole batch. */
    double dt = sc_metrics_now() - t0;
    for (size_t i = 0; i < n; i++) {
        sc_metrics_observe_request(f->metrics, SC_METRICS_NNG, msgs[i].req,
                                   msgs[i].len, dt);
    }
}

/* GET /report: the "report" op through the dispatcher, as JSON; the query
 * parameters ns, by, after and limit are its fields (docs/HTTP.md 3). */
static sc_err http_report(void *arg, const char *query, FILE *out)
{
    front *f = arg;
    static const char *const names[4] = {"ns", "by", "after", "limit"};
    char vals[4][SC_CACHE_TAG_MAX + 1];
    int has[4];
    const char *bad = NULL;
    const char *why = ": bad percent-encoding, a %00, or over 256 bytes "
                      "decoded";
    uint64_t limit = 0;
    for (int i = 0; i < 4; i++) {
        has[i] = sc_http_query_get(query, names[i], vals[i], sizeof(vals[i]));
        if (has[i] < 0 && bad == NULL) {
            bad = names[i];
        }
    }
    if (bad == NULL && has[3] == 1) {
        char *end = NULL;
        errno = 0;
        limit = strtoull(vals[3], &end, 10);
        if (vals[3][0] < '0' || vals[3][0] > '9' || *end != '\0') {
            bad = "limit";
            why = ": not a decimal number";
        } else if (errno == ERANGE) {
            /* A decimal number past 2^64-1: the op refuses it with its
             * range, as it does any other over its cap. */
            limit = UINT64_MAX;
        }
    }
    if (bad != NULL) {
        json_t *e =
            json_pack("{s:b,s:{s:s,s:s++}}", "ok", 0, "error", "code",
                      "bad_request", "message", "query parameter ", bad, why);
        sc_err rc = e != NULL ? sc_http_write_json(out, e) : SC_ENOMEM;
        json_decref(e);
        return rc == SC_OK ? SC_EINVAL : rc;
    }
    mp_buf b;
    mp_buf_init(&b);
    msgpack_pack_map(&b.pk, 2 + (has[0] == 1) + (has[1] == 1) + (has[2] == 1) +
                                (has[3] == 1));
    mp_put_key(&b.pk, "v");
    msgpack_pack_uint32(&b.pk, SC_PROTO_VERSION);
    mp_put_key(&b.pk, "op");
    mp_put_str(&b.pk, "report");
    for (int i = 0; i < 3; i++) {
        if (has[i] == 1) {
            mp_put_key(&b.pk, names[i]);
            mp_put_str(&b.pk, vals[i]);
        }
    }
    if (has[3] == 1) {
        mp_put_key(&b.pk, "limit");
        msgpack_pack_uint64(&b.pk, limit);
    }
    uint8_t *req = NULL, *reply = NULL;
    size_t req_len = 0, len = 0;
    if (mp_buf_take(&b, &req, &req_len) != 0) {
        return SC_ENOMEM;
    }
    /* The operator's page, made in-process: no client key to check. */
    int hrc = sc_dispatch_handle_trusted(f->disp, req, req_len, &reply, &len);
    free(req);
    if (hrc != 0) {
        return SC_ENOMEM;
    }
    /* As POST /v1/report answers it: a tag that is not UTF-8 (the server
     * does not check tags) is its row's "key_base64", since no JSON string
     * can hold it. */
    json_t *j = sc_http_msgpack_json(reply, len);
    free(reply);
    json_t *res = json_object_get(j, "result");
    /* Refused (a bad by or limit, an unknown ns): the error, answered 400. */
    sc_err rc = res != NULL ? sc_http_write_json(out, res)
                : j != NULL ? sc_http_write_json(out, j)
                            : SC_ENOMEM;
    if (rc == SC_OK && res == NULL) {
        rc = SC_EINVAL;
    }
    json_decref(j);
    return rc;
}

/* The ledger's rows by namespace, copied out in one pass for /metrics. */
typedef struct metric_rows {
    size_t n, ns_cap, c_cap;
    char **ns;
    sc_ledger_counts *c;
    int oom;
} metric_rows;

static void metric_row(void *arg, const char *ns, const sc_ledger_counts *c)
{
    metric_rows *m = arg;
    if (m->oom) {
        return;
    }
    if (SC_VEC_RESERVE(m->ns, m->ns_cap, m->n, 1, 16) != SC_OK ||
        SC_VEC_RESERVE(m->c, m->c_cap, m->n, 1, 16) != SC_OK) {
        m->oom = 1;
        return;
    }
    if ((m->ns[m->n] = strdup(ns)) == NULL) {
        m->oom = 1;
        return;
    }
    m->c[m->n++] = *c;
}

/* One series' value in a row: dollars avoided, spent, lost to false hits,
 * tokens in, tokens out. */
static double metric_value(int which, const sc_ledger_counts *c)
{
    return which == 0   ? c->usd_avoided
           : which == 1 ? c->usd_embed + c->usd_lookup
                        : c->usd_false_hits;
}

/* The six sums /metrics shows of a ledger row, split at the namespace's
 * base (sc_ledger_ns_made): *before gets what namespaces of its name made
 * and dropped before held (at most the row's), *mine the rest. */
static void split_at_base(const sc_ledger_counts *row,
                          const sc_ledger_counts *base, sc_ledger_counts *mine,
                          sc_ledger_counts *before)
{
    memset(mine, 0, sizeof(*mine));
    memset(before, 0, sizeof(*before));
#define SPLIT(f)                                                               \
    before->f = base->f < row->f ? base->f : row->f;                           \
    mine->f = row->f - before->f;
    SPLIT(usd_avoided)
    SPLIT(usd_embed)
    SPLIT(usd_lookup)
    SPLIT(usd_false_hits)
    SPLIT(tokens_in_avoided)
    SPLIT(tokens_out_avoided)
#undef SPLIT
}

/* /metrics: the ledger's dollars and tokens, per namespace. */
static sc_err http_metrics(void *arg, FILE *out)
{
    front *f = arg;
    static const char *help[4][2] = {
        {"semcache_dollars_avoided_total",
         "LLM spend avoided by hits, in dollars (priced models only)"},
        {"semcache_dollars_spent_total",
         "embedding and lookup spend, in dollars"},
        {"semcache_dollars_false_hits_total",
         "avoided dollars of hits later reported wrong"},
        {"semcache_tokens_avoided_total", "LLM tokens avoided by hits"}};
    metric_rows m = {0};
    sc_ledger_counts total;
    sc_err rc =
        sc_ledger_sum(f->ledger, NULL, SC_LEDGER_BY_NS, &total, metric_row, &m);
    rc = rc == SC_OK && m.oom ? SC_ENOMEM : rc;
    /* The ledger keeps the rows of dropped namespaces (their money stays
     * in the report), but a series per namespace ever seen grew the page
     * without bound under churn: those rows are summed into one series,
     * ns="(dropped)" (no namespace can take that name). The namespaces
     * are looked up after the sum, so one made since has no series yet
     * rather than counting as dropped. A namespace made again under a
     * dropped one's name shows only its own sums: the ledger's row of the
     * name goes on, and what it held when the namespace was made (its
     * base) stays in (dropped), which took it back out and so went down
     * (a reset to Prometheus' rate()). Summed in name order (the rows
     * come so), (dropped) never goes down: a drop raises a name's term
     * from its base to its row, a making again keeps it (the base is the
     * row then), and floating-point addition is monotonic in each term. */
    sc_ledger_counts gone = {0};
    size_t live = 0, ngone = 0, nbased = 0;
    for (size_t i = 0; i < m.n && rc == SC_OK; i++) {
        sc_ns_config cfg;
        if (sc_cache_ns_get_config(f->cache, m.ns[i], &cfg) == SC_OK) {
            sc_ledger_counts base, before, row = m.c[i];
            sc_ledger_ns_base(f->ledger, m.ns[i], &base);
            split_at_base(&row, &base, &m.c[live], &before);
            sc_ledger_counts_add(&gone, &before);
            nbased += base.last_ms != 0;
            char *keep = m.ns[i];
            m.ns[i] = m.ns[live];
            m.ns[live++] = keep;
            continue;
        }
        sc_ledger_counts_add(&gone, &m.c[i]);
        ngone++;
    }
    if (rc == SC_OK && ngone == 0 && nbased > 0) {
        /* Every dropped name is made again: (dropped) holds their bases,
         * in a slot of its own. */
        metric_row(&m, "(dropped)", &gone);
        rc = m.oom ? SC_ENOMEM : SC_OK;
        live = m.n;
    }
    size_t nrows = m.n; /* every name, to free */
    if (rc == SC_OK && ngone > 0) {
        /* The first gone name's slot (at live) now holds "(dropped)". */
        char *name = strdup("(dropped)");
        if (name == NULL) {
            rc = SC_ENOMEM;
        } else {
            free(m.ns[live]);
            m.ns[live] = name;
            m.c[live++] = gone;
        }
    }
    m.n = rc == SC_OK ? live : m.n;
    for (int w = 0; w < 4 && rc == SC_OK; w++) {
        fprintf(out, "# HELP %s %s\n# TYPE %s counter\n", help[w][0],
                help[w][1], help[w][0]);
        /* The tokens family holds two series: input, then output. */
        for (int k = w; k <= (w == 3 ? 4 : w); k++) {
            for (size_t i = 0; i < m.n; i++) {
                fprintf(out, "%s{ns=", help[w][0]);
                sc_metrics_put_label(out, m.ns[i]);
                if (k >= 3) {
                    fprintf(out, ",kind=\"%s\"", k == 3 ? "input" : "output");
                }
                if (k >= 3) {
                    /* Token counts exactly: %.9g moved a billion tokens
                     * in steps of ten. */
                    fprintf(
                        out, "} %llu\n",
                        (unsigned long long)(k == 3
                                                 ? m.c[i].tokens_in_avoided
                                                 : m.c[i].tokens_out_avoided));
                } else {
                    fprintf(out, "} %.15g\n", metric_value(k, &m.c[i]));
                }
            }
        }
    }
    for (size_t i = 0; i < nrows; i++) {
        free(m.ns[i]);
    }
    free(m.ns);
    free(m.c);
    if (rc != SC_OK) {
        return rc;
    }
    if (f->persist != NULL) {
        sc_persist_stats ps;
        sc_persist_get_stats(f->persist, &ps);
        fprintf(out,
                "# HELP semcache_persist_records_total log records appended, "
                "written to the file, and fsynced, since start\n"
                "# TYPE semcache_persist_records_total counter\n"
                "semcache_persist_records_total{state=\"appended\"} %llu\n"
                "semcache_persist_records_total{state=\"written\"} %llu\n"
                "semcache_persist_records_total{state=\"synced\"} %llu\n"
                "# HELP semcache_persist_log_bytes size of the current log\n"
                "# TYPE semcache_persist_log_bytes gauge\n"
                "semcache_persist_log_bytes %llu\n"
                "# HELP semcache_persist_compactions_total compactions since "
                "start\n"
                "# TYPE semcache_persist_compactions_total counter\n"
                "semcache_persist_compactions_total %llu\n"
                "# HELP semcache_persist_failed 1 when a write or fsync "
                "failed and changes are refused\n"
                "# TYPE semcache_persist_failed gauge\n"
                "semcache_persist_failed %d\n",
                (unsigned long long)ps.appended, (unsigned long long)ps.written,
                (unsigned long long)ps.synced,
                (unsigned long long)ps.log_bytes,
                (unsigned long long)ps.compactions, ps.failed ? 1 : 0);
    }
    sc_dispatch_counts dc;
    sc_dispatch_get_counts(f->disp, &dc);
    fprintf(out,
            "# HELP semcache_requests_refused_total requests refused by the "
            "access-key check\n"
            "# TYPE semcache_requests_refused_total counter\n"
            "semcache_requests_refused_total{reason=\"unauthorized\"} %llu\n"
            "semcache_requests_refused_total{reason=\"forbidden\"} %llu\n",
            (unsigned long long)dc.unauthorized,
            (unsigned long long)dc.forbidden);
    uint64_t connected, refused;
    sc_server_clients(f->srv, &connected, &refused);
    fprintf(out,
            "# HELP semcache_nng_clients nng clients connected now\n"
            "# TYPE semcache_nng_clients gauge\n"
            "semcache_nng_clients %llu\n"
            "# HELP semcache_nng_clients_refused_total nng clients "
            "disconnected for being past --max-clients\n"
            "# TYPE semcache_nng_clients_refused_total counter\n"
            "semcache_nng_clients_refused_total %llu\n",
            (unsigned long long)connected, (unsigned long long)refused);
    uint64_t over, stalled;
    sc_server_slow_clients(f->srv, &over, &stalled);
    fprintf(out,
            "# HELP semcache_nng_clients_slow_total nng clients disconnected "
            "for leaving their replies unread\n"
            "# TYPE semcache_nng_clients_slow_total counter\n"
            "semcache_nng_clients_slow_total{reason=\"queue\"} %llu\n"
            "semcache_nng_clients_slow_total{reason=\"timeout\"} %llu\n"
            "# HELP semcache_nng_replies_dropped_total replies dropped for a "
            "client that already had --reply-queue-len replies waiting to "
            "be written\n"
            "# TYPE semcache_nng_replies_dropped_total counter\n"
            "semcache_nng_replies_dropped_total %llu\n",
            (unsigned long long)over, (unsigned long long)stalled,
            (unsigned long long)sc_server_replies_dropped(f->srv));
    uint64_t answered, refused_dropped, held;
    sc_server_busy(f->srv, &answered, &refused_dropped, &held);
    fprintf(out,
            "# HELP semcache_nng_replies_refused_total replies refused for "
            "being past --reply-total-max, answered with a busy error or "
            "not at all\n"
            "# TYPE semcache_nng_replies_refused_total counter\n"
            "semcache_nng_replies_refused_total{answer=\"busy\"} %llu\n"
            "semcache_nng_replies_refused_total{answer=\"none\"} %llu\n"
            "# HELP semcache_nng_reply_bytes bytes held by replies to nng "
            "clients not yet written: each reply's buffer (capacity) + 128\n"
            "# TYPE semcache_nng_reply_bytes gauge\n"
            "semcache_nng_reply_bytes %llu\n",
            (unsigned long long)answered, (unsigned long long)refused_dropped,
            (unsigned long long)held);
    sc_err prc = SC_OK;
    pthread_mutex_lock(&f->proxy_mu);
    if (f->proxy != NULL) {
        prc = sc_proxy_write_metrics(f->proxy, out);
    }
    pthread_mutex_unlock(&f->proxy_mu);
    return prc;
}

/* A signal another thread took (see main); the main loop reads it within
 * its 1 s tick. A SIGTERM or SIGINT is not overwritten by a later SIGHUP. */
static atomic_int noted_signal;

static void note_signal(int s)
{
    int cur = atomic_load(&noted_signal);
    while (cur != SIGTERM && cur != SIGINT &&
           !atomic_compare_exchange_weak(&noted_signal, &cur, s)) {
    }
}

/* The next signal of sigs within ms, taken by this thread or noted by
 * another (note_signal); 0 when none came. */
static int next_signal(const sigset_t *sigs, long ms)
{
    struct timespec tick = {ms / 1000, ms % 1000 * 1000 * 1000};
    int s = sigtimedwait(sigs, NULL, &tick);
    return s > 0 ? s : atomic_exchange(&noted_signal, 0);
}

/* A stop's step run on a thread while the main thread watches for a
 * second SIGTERM or SIGINT (the first began the stop), for an operator or
 * a supervisor that will not wait: work(arg), and at the first such
 * signal meanwhile second(arg, sig), once. */
typedef struct watched {
    void (*work)(void *);
    void *arg;
    atomic_bool done;
} watched;

static void *watched_main(void *p)
{
    watched *w = p;
    w->work(w->arg);
    atomic_store(&w->done, true);
    return NULL;
}

/* false when no thread could start (work not run: the caller runs it
 * unwatched); else true once work has returned, *came saying whether a
 * second signal came. */
static bool run_watched(void (*work)(void *), void (*second)(void *, int),
                        void *arg, const sigset_t *sigs, bool *came)
{
    watched w = {work, arg, false};
    pthread_t t;
    *came = false;
    if (pthread_create(&t, NULL, watched_main, &w) != 0) {
        return false;
    }
    while (!atomic_load(&w.done)) {
        int sig = next_signal(sigs, 50);
        if (!*came && (sig == SIGTERM || sig == SIGINT)) {
            *came = true;
            second(arg, sig);
        }
    }
    pthread_join(t, NULL);
    return true;
}

typedef struct stop_snap {
    sc_persist *persist;
    sc_err rc;
} stop_snap;

static void stop_snap_work(void *arg)
{
    stop_snap *s = arg;
    fprintf(stderr, "semcached: writing a snapshot at stop (a second "
                    "SIGTERM or SIGINT cancels it)\n");
    s->rc = sc_persist_compact(s->persist);
}

static void stop_snap_second(void *arg, int sig)
{
    stop_snap *s = arg;
    fprintf(stderr, "semcached: %s received again: cancelling the snapshot\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT");
    sc_persist_cancel_compactions(s->persist);
}

/* The snapshot of a clean stop, which a million entries make last
 * seconds: a second SIGTERM or SIGINT meanwhile cuts it short (the log
 * has every change). */
static sc_err snapshot_at_stop(sc_persist *persist, const sigset_t *sigs)
{
    stop_snap s = {persist, SC_OK};
    bool came;
    if (!run_watched(stop_snap_work, stop_snap_second, &s, sigs, &came)) {
        return sc_persist_compact(persist);
    }
    return s.rc;
}

typedef struct stop_http {
    sc_http *http;
    bool ended;
} stop_http;

static void stop_http_work(void *arg)
{
    stop_http *s = arg;
    sc_http_stop(s->http);
}

static void stop_http_second(void *arg, int sig)
{
    stop_http *s = arg;
    s->ended = sc_http_end_grace(s->http);
    fprintf(stderr, "semcached: %s received again%s\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT",
            s->ended ? ": ending the HTTP stop's grace" : "");
}

/* The HTTP front's stop, which lets the answers being written out for its
 * grace (a client that does not read holds it that long): a second
 * SIGTERM or SIGINT meanwhile (or since the first: it waits, blocked)
 * ends the grace if one is running. *second says whether one came (the
 * snapshot at stop is then left out), *ended whether it ended a grace
 * (with the system's nng, or once the grace is over, there is none to
 * end). */
static void http_stop_watched(sc_http *http, const sigset_t *sigs, bool *second,
                              bool *ended)
{
    stop_http s = {http, false};
    if (!run_watched(stop_http_work, stop_http_second, &s, sigs, second)) {
        sc_http_stop(http);
    }
    *ended = s.ended;
}

/* The --config files, in order, for a SIGHUP's reload of the keys. */
#define MAX_CONFIGS 16
static const char *config_paths[MAX_CONFIGS];
static unsigned nconfig;

/* Logs the keys' names (a secret is never written anywhere). */
static void log_keys(const char *what, const sc_key *keys, size_t n)
{
    if (n == 0) {
        fprintf(stderr,
                "semcached: %sno access keys: every request is served "
                "(listen on 127.0.0.1, or configure keys)\n",
                what);
        return;
    }
    fprintf(stderr, "semcached: %s%zu access key%s:", what, n,
            n == 1 ? "" : "s");
    for (size_t i = 0; i < n; i++) {
        fprintf(stderr, " %s%s", keys[i].name, keys[i].admin ? " (admin)" : "");
    }
    fprintf(stderr, "\n");
}

/* The start's keys stay in the start's configuration (freed at exit);
 * once replaced and unused, their secrets are wiped. */
static void config_wipe_keys(void *ctx)
{
    sc_config *cfg = ctx;
    for (size_t i = 0; i < cfg->nkeys; i++) {
        explicit_bzero(cfg->keys[i].secret, sizeof(cfg->keys[i].secret));
    }
}

/* A configuration read again for its keys, owned by the dispatcher until
 * no request uses them. */
static void config_release(void *ctx)
{
    sc_config_fini(ctx); /* wipes the secrets */
    free(ctx);
}

/* SIGHUP: the --config files are read again, in order, and their keys
 * (keys, keys_file) replace the keys in force; any other setting that
 * changed waits for a restart. A file that does not read or validate
 * changes nothing. */
static void reload_keys(sc_dispatch *disp)
{
    if (nconfig == 0) {
        fprintf(stderr, "semcached: SIGHUP: no --config file, so no keys to "
                        "reload\n");
        return;
    }
    sc_config *cfg = malloc(sizeof(*cfg));
    if (cfg == NULL || sc_config_init(cfg) != SC_OK) {
        fprintf(stderr, "semcached: SIGHUP: out of memory: the keys in force "
                        "stay\n");
        free(cfg);
        return;
    }
    for (unsigned i = 0; i < nconfig; i++) {
        char msg[512];
        if (sc_config_load(cfg, config_paths[i], msg, sizeof(msg)) != SC_OK) {
            fprintf(stderr,
                    "semcached: SIGHUP: bad configuration: %s: the keys in "
                    "force stay\n",
                    msg);
            config_release(cfg);
            return;
        }
    }
    const sc_key *keys = cfg->keys;
    size_t n = cfg->nkeys;
    if (sc_dispatch_replace_keys(disp, keys, n, config_release, cfg) != SC_OK) {
        fprintf(stderr, "semcached: SIGHUP: out of memory: the keys in force "
                        "stay\n");
        config_release(cfg);
        return;
    }
    /* With n > 0 the dispatcher holds cfg until the next reload, which only
     * this thread makes; with n = 0 log_keys reads no key. */
    log_keys("SIGHUP: keys reloaded: ", keys, n);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* flag's value v, "on" or "off", into *out; -1 (said) for anything else. */
static int on_off(const char *flag, const char *v, bool *out)
{
    if (strcmp(v, "on") != 0 && strcmp(v, "off") != 0) {
        fprintf(stderr, "semcached: %s must be on or off\n", flag);
        return -1;
    }
    *out = strcmp(v, "on") == 0;
    return 0;
}

/* Applies the command line to cfg: the --config file first, wherever it
 * stands, then every other flag in order, so that flags override the file.
 * Returns -1 to exit 0 (--help), 0 to go on, or the exit status (2). */
static int parse_args(int argc, char **argv, sc_config *cfg,
                      sc_proxy_config *pcfg)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return -1;
        }
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            char msg[512];
            if (nconfig == MAX_CONFIGS) {
                fprintf(stderr, "semcached: at most %d --config files\n",
                        MAX_CONFIGS);
                return 2;
            }
            config_paths[nconfig++] = argv[i + 1];
            if (sc_config_load(cfg, argv[i + 1], msg, sizeof(msg)) != SC_OK) {
                fprintf(stderr, "semcached: bad configuration: %s\n", msg);
                return 2;
            }
            fprintf(stderr, "semcached: configuration read from %s\n",
                    argv[i + 1]);
        }
    }
    /* The file's "proxy" settings, which the flags below override. */
    for (unsigned i = 0; i + 1 < cfg->nproxy_args; i += 2) {
        char msg[256];
        if (sc_proxy_parse_flag(pcfg, cfg->proxy_args[i],
                                cfg->proxy_args[i + 1], msg,
                                sizeof(msg)) != 1) {
            fprintf(stderr, "semcached: bad configuration: %s\n", msg);
            return 2;
        }
    }
    bool listen_flag = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        const sc_config_num *num;
        sc_err rc = SC_OK;
        char pmsg[256];
        int prc;
        if (strcmp(a, "--repair") == 0) {
            cfg->repair = true;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, "semcached: %s needs a value (or unknown flag)\n",
                    a);
            usage(stderr);
            return 2;
        }
        if (strcmp(a, "--config") == 0) {
            /* read above */
        } else if (strcmp(a, "--listen") == 0) {
            if (!listen_flag) {
                /* Flags replace the file's listeners rather than add. */
                for (unsigned j = 0; j < cfg->nlisten; j++) {
                    free(cfg->listen[j]);
                    cfg->listen[j] = NULL;
                }
                cfg->nlisten = 0;
                listen_flag = true;
            }
            if (cfg->nlisten == SC_SERVER_MAX_LISTEN) {
                fprintf(stderr, "semcached: at most %d --listen URLs\n",
                        SC_SERVER_MAX_LISTEN);
                return 2;
            }
            rc = sc_config_set_str(&cfg->listen[cfg->nlisten], v);
            cfg->nlisten += rc == SC_OK;
        } else if ((num = sc_config_num_by_flag(a)) != NULL) {
            if (sc_config_num_parse(cfg, sizeof(*cfg), num, v, pmsg,
                                    sizeof(pmsg)) != SC_OK) {
                fprintf(stderr, "semcached: %s %s\n", a, pmsg);
                return 2;
            }
        } else if (strcmp(a, "--tls-cert") == 0) {
            rc = sc_config_set_str(&cfg->tls_cert, v);
        } else if (strcmp(a, "--prices") == 0) {
            rc = sc_config_set_str(&cfg->prices, v);
        } else if (strcmp(a, "--http") == 0) {
            if (sc_http_addr_check(v) != SC_OK) {
                fprintf(stderr, "semcached: --http " SC_HTTP_ADDR_FORM "\n");
                return 2;
            }
            rc = sc_config_set_str(&cfg->http, v);
        } else if (strcmp(a, "--data-dir") == 0) {
            rc = sc_config_set_str(&cfg->data_dir, v);
        } else if (strcmp(a, "--embed-table") == 0) {
            rc = sc_config_set_str(&cfg->embed_table, v);
        } else if (strcmp(a, "--persist") == 0) {
            if (on_off(a, v, &cfg->persist) != 0) {
                return 2;
            }
        } else if (strcmp(a, "--snapshot-at-stop") == 0) {
            if (on_off(a, v, &cfg->snapshot_at_stop) != 0) {
                return 2;
            }
        } else if (strcmp(a, "--fsync") == 0) {
            if (!sc_persist_fsync_parse(v, &cfg->fsync)) {
                fprintf(stderr, "semcached: --fsync must be always, everysec "
                                "or no\n");
                return 2;
            }
            cfg->fsync_given = true;
        } else if ((prc = sc_proxy_parse_flag(pcfg, a, v, pmsg,
                                              sizeof(pmsg))) != 0) {
            if (prc < 0) {
                fprintf(stderr, "semcached: %s\n", pmsg);
                return 2;
            }
        } else {
            fprintf(stderr, "semcached: unknown flag %s\n", a);
            usage(stderr);
            return 2;
        }
        if (rc != SC_OK) {
            fprintf(stderr, "semcached: %s\n", sc_strerror(rc));
            return 2;
        }
        i++;
    }
    return 0;
}

int main(int argc, char **argv)
{
    sc_config conf;
    if (sc_config_init(&conf) != SC_OK) {
        fprintf(stderr, "semcached: out of memory\n");
        return 1;
    }
    sc_proxy_config pcfg;
    sc_proxy_config_init(&pcfg);
    int prc = parse_args(argc, argv, &conf, &pcfg);
    if (prc != 0) {
        sc_config_fini(&conf);
        return prc < 0 ? 0 : prc;
    }
    if (pcfg.upstream != NULL && conf.http == NULL) {
        /* A configuration error: said before anything is loaded. */
        fprintf(stderr, "semcached: --upstream needs --http HOST:PORT\n");
        sc_config_fini(&conf);
        return 2;
    }
    /* Settings that nothing will use: said, so that a typo in a listener
     * or a forgotten --persist off does not pass in silence. */
    bool tls_listener = false;
    for (unsigned i = 0; i < conf.nlisten; i++) {
        tls_listener |= strncmp(conf.listen[i], "tls+", 4) == 0;
    }
    if (conf.tls_cert != NULL && !tls_listener) {
        fprintf(stderr, "semcached: --tls-cert is for tls+tcp:// listeners "
                        "and none is given: ignored\n");
    }
    if (!conf.persist &&
        (conf.repair || conf.compact_bytes != 0 || conf.fsync_given)) {
        fprintf(stderr, "semcached: --repair, --compact-bytes and --fsync "
                        "act on the saved state, and persistence is off: "
                        "ignored\n");
    }
    /* Which nng this build runs on, and on the system's the protections
     * it cannot give, given or not: a warning, not a refusal, so that a
     * configuration shared with patched builds still starts. */
#ifdef SC_NNG_PATCHED
    (void)sc_config_log_nng(&conf, true, nng_version(), SC_NNG_NPATCHES,
                            stderr);
#else
    (void)sc_config_log_nng(&conf, false, nng_version(), 0, stderr);
#endif
    sc_server_config scfg;
    memset(&scfg, 0, sizeof(scfg));
    for (unsigned i = 0; i < conf.nlisten; i++) {
        scfg.listen[i] = conf.listen[i];
    }
    scfg.nlisten = conf.nlisten;
    scfg.threads = conf.threads;
    if (scfg.threads == 0) {
        /* One worker per CPU: each takes every request waiting when it
         * wakes, so more workers than CPUs only make batches smaller. */
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        scfg.threads = ncpu < 1 ? 1 : ncpu > 64 ? 64 : (unsigned)ncpu;
    }
    scfg.recv_max = conf.recv_max;
    scfg.reply_queue_max = conf.reply_queue_max;
    scfg.reply_queue_len = conf.reply_queue_len;
    scfg.reply_total_max = conf.reply_total_max;
    scfg.reply_timeout_ms = conf.reply_timeout_ms;
    scfg.tls_cert = conf.tls_cert;
    unsigned long nofile = raise_nofile();
    /* Each proxy worker keeps one upstream connection open: kept out of
     * the clients' share, beside FD_RESERVE. */
    unsigned long upstream_fds = pcfg.upstream == NULL ? 0
                                 : pcfg.workers != 0   ? pcfg.workers
                                                     : SC_PROXY_DEFAULT_WORKERS;
    unsigned http_cap, nng_cap;
    conn_caps(conf.http_max_conns, conf.max_clients, conf.http != NULL,
              nofile == 0             ? 0
              : nofile > upstream_fds ? nofile - upstream_fds
                                      : 1,
              &http_cap, &nng_cap);
    scfg.max_clients = nng_cap;
    sc_cache_config ccfg = conf.cache;
    char embed_path[SC_CONFIG_PATH_MAX + 64];
    int status = 1;
    sc_embed *emb = NULL;
    sc_prices *prices = NULL;
    sc_ledger *ledger = NULL;
    sc_cache *cache = NULL;
    sc_persist *persist = NULL;
    sc_dispatch *disp = NULL;
    sc_metrics *metrics = NULL;
    sc_server *srv = NULL;
    sc_http *http = NULL;
    sc_proxy *proxy = NULL;
    front fr;
    sc_cache_embedder hook;
    sc_err rc;
    if (open_embedder(&conf, embed_path, sizeof(embed_path), &emb) != 0) {
        goto out_conf;
    }
    if (emb != NULL) {
        hook = (sc_cache_embedder){
            .model = sc_embed_model(emb),
            .dim = sc_embed_dim(emb),
            .threshold = SC_EMBED_THRESHOLD,
            .margin = SC_EMBED_MARGIN,
            .embed = embed_fn,
            .rescore = rescore_fn,
            .arg = emb,
            .vote = true,
            .stats_new = stats_new_fn,
            .stats_free = stats_free_fn,
            .stats_count = stats_count_fn,
            .stats_bytes = stats_bytes_fn,
            .stats_clone = stats_clone_fn,
            .supersedes = supersedes_fn,
            .prep_new = prep_fn,
            .prep_free = prep_free_fn,
            .prep_bytes = prep_bytes_fn,
        };
        ccfg.embedder = &hook;
    }
    ccfg.text_needs_embedder = true;
    ccfg.embedder_prefix = sc_embed_model_prefix();
    char pmsg[512];
    rc = conf.prices != NULL
             ? sc_prices_load(conf.prices, &prices, pmsg, sizeof(pmsg))
             : sc_prices_default(&prices);
    if (rc != SC_OK) {
        fprintf(stderr, "semcached: bad price table: %s\n",
                conf.prices != NULL ? pmsg : sc_strerror(rc));
        goto out_conf;
    }
    if ((rc = sc_ledger_open(prices, &ledger)) != SC_OK) {
        fprintf(stderr, "semcached: cannot open the ledger: %s\n",
                sc_strerror(rc));
        goto out_conf;
    }
    fprintf(stderr, "semcached: prices of %s from %s\n", sc_prices_date(prices),
            conf.prices != NULL ? conf.prices : "the table compiled in");
    ccfg.ledger = ledger;

    /* Signals are taken synchronously by the main thread (sigtimedwait);
     * every thread started from here on inherits the blocked mask. Threads
     * libraries started before main (OpenBLAS's pool) do not block them,
     * and the kernel hands a signal the main thread blocks at that moment
     * (it is not in sigtimedwait) to one of those: with the default action
     * a second SIGHUP during a reload, or a SIGTERM during the expiry
     * tick, killed the process. A handler there notes it for the main
     * loop instead. */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = note_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (conf.persist) {
        char state[SC_CONFIG_PATH_MAX + 64], msg[1024];
        if (sc_config_state_path(&conf, state, sizeof(state)) != SC_OK) {
            fprintf(stderr, "semcached: the data directory's path is too "
                            "long\n");
            goto out_conf;
        }
        if (mkdir(conf.data_dir, 0750) == 0) {
            (void)sc_persist_sync_parent(conf.data_dir); /* durable name */
        } else if (errno != EEXIST) {
            fprintf(stderr,
                    "semcached: cannot make the data directory %s: %s "
                    "(--data-dir DIR, or --persist off to keep the cache in "
                    "memory only)\n",
                    conf.data_dir, strerror(errno));
            goto out_conf;
        }
        sc_persist_config pc = {
            .dir = state,
            .fsync = conf.fsync,
            .repair = conf.repair,
            .compact_min_bytes = conf.compact_bytes,
        };
        if ((rc = sc_persist_open(&pc, &persist, msg, sizeof(msg))) != SC_OK) {
            fprintf(stderr,
                    "semcached: %s (--persist off keeps the cache in memory "
                    "only)\n",
                    msg);
            goto out_conf;
        }
        ccfg.journal = sc_persist_journal(persist);
    } else {
        fprintf(stderr, "semcached: persistence off: the cache is lost when "
                        "semcached stops\n");
    }
    rc = sc_cache_open(&ccfg, &cache);
    if (rc != SC_OK) {
        fprintf(stderr, "semcached: cannot open the cache: %s\n",
                sc_strerror(rc));
        goto out_cache;
    }
    if (persist != NULL) {
        char msg[1024] = "";
        rc = sc_persist_load(persist, cache, ledger, NULL, msg, sizeof(msg));
        if (rc != SC_OK) {
            fprintf(stderr, "semcached: cannot load the saved state: %s\n",
                    msg[0] ? msg : sc_strerror(rc));
            goto out_cache;
        }
        sc_cache_reembed_counts rc_re;
        sc_cache_reembed_counts_get(cache, &rc_re);
        if (rc_re.namespaces > 0) {
            /* Saved at once, so the next start need not do it again. */
            sc_err crc = sc_persist_compact(persist);
            fprintf(stderr,
                    "semcached: %llu %s of an earlier version of the "
                    "built-in embedder moved to %s: %llu stored %s "
                    "embedded again, %llu %s without text left out%s%s\n",
                    (unsigned long long)rc_re.namespaces,
                    sc_plural(rc_re.namespaces, "namespace", "namespaces"),
                    sc_embed_model(emb), (unsigned long long)rc_re.entries,
                    sc_plural(rc_re.entries, "text", "texts"),
                    (unsigned long long)rc_re.dropped,
                    sc_plural(rc_re.dropped, "entry", "entries"),
                    crc == SC_OK ? "; saved" : "; not saved yet: ",
                    crc == SC_OK ? "" : sc_strerror(crc));
        }
    }
    /* The configuration's namespaces: all of them checked against the
     * restored ones before any is changed, so that a refused start leaves
     * the saved state as it was (a lowered cap evicts, and is logged). */
    for (size_t i = 0; i < conf.nns; i++) {
        sc_ns_config have;
        if (sc_cache_ns_get_config(cache, conf.ns[i].name, &have) == SC_OK &&
            (rc = sc_cache_ns_check(cache, conf.ns[i].name, &conf.ns[i].cfg)) !=
                SC_OK) {
            fprintf(stderr,
                    "semcached: namespace %s of the configuration does "
                    "not fit the saved one (dim, storage, backend, nlist "
                    "or train_min differ): %s; nothing was changed\n",
                    conf.ns[i].name, sc_strerror(rc));
            goto out_cache;
        }
    }
    for (size_t i = 0; i < conf.nns; i++) {
        sc_ns_config have;
        if (sc_cache_ns_get_config(cache, conf.ns[i].name, &have) == SC_OK) {
            /* Restored: the file's settings apply to it as they stand. */
            rc = sc_cache_ns_configure(cache, conf.ns[i].name,
                                       &conf.ns[i].cfg);
            if (rc != SC_OK) {
                fprintf(stderr,
                        "semcached: namespace %s of the configuration "
                        "cannot be applied: %s\n",
                        conf.ns[i].name, sc_strerror(rc));
                goto out_cache;
            }
            continue;
        }
        rc = sc_cache_ns_create(cache, conf.ns[i].name, &conf.ns[i].cfg);
        if (rc != SC_OK) {
            fprintf(stderr, "semcached: cannot create namespace %s: %s\n",
                    conf.ns[i].name, sc_strerror(rc));
            goto out_cache;
        }
        fprintf(stderr,
                "semcached: namespace %s created from the "
                "configuration\n",
                conf.ns[i].name);
    }
    warn_superseded(cache, emb);
    if ((rc = sc_dispatch_open(cache, &disp)) != SC_OK) {
        fprintf(stderr, "semcached: %s\n", sc_strerror(rc));
        goto out_cache;
    }
    if (emb == NULL) {
        sc_dispatch_set_embed_hint(disp, embed_path);
    }
    sc_dispatch_set_ledger(disp, ledger, prices);
    sc_dispatch_set_cost_targets(disp, conf.targets, conf.ntargets);
    if ((rc = sc_dispatch_replace_keys(disp, conf.keys, conf.nkeys,
                                       config_wipe_keys, &conf)) != SC_OK) {
        fprintf(stderr, "semcached: %s\n", sc_strerror(rc));
        goto out_disp;
    }
    log_keys("", conf.keys, conf.nkeys);
    if ((rc = sc_metrics_open(&metrics)) != SC_OK) {
        fprintf(stderr, "semcached: %s\n", sc_strerror(rc));
        goto out_disp;
    }
    fr = (front){
        disp, metrics, ledger, cache, persist, NULL, PTHREAD_MUTEX_INITIALIZER,
        NULL};
    scfg.handler = timed_handle;
    scfg.handler_many = timed_handle_many;
    scfg.handler_busy = busy_reply;
    scfg.handler_arg = &fr;
    /* nng listens from here, but answers only once the HTTP front and the
     * proxy are open too (sc_server_start below): a client that saw an
     * nng reply finds HTTP listening, and one that saw /healthz answered
     * finds nng listening. /metrics needs srv, so it is made first. */
    scfg.start_later = true;
    if ((rc = sc_server_open(&scfg, &srv)) != SC_OK) {
        fprintf(stderr, "semcached: cannot start the server: %s\n",
                sc_strerror(rc));
        goto out_metrics;
    }
    fr.srv = srv;
    if (conf.http != NULL) {
        sc_http_config hcfg = {
            .addr = conf.http,
            .dispatch = disp,
            .cache = cache,
            .body_max = conf.recv_max,
            .max_conns = http_cap,
            .stop_grace_ms = conf.http_stop_grace_ms,       /* 0: the default */
            .read_timeout_ms = conf.http_read_timeout_ms,   /* 0: also */
            .write_timeout_ms = conf.http_write_timeout_ms, /* 0: also */
            /* As many as the nng socket's: HTTP requests run on these, off
             * the nng threads that socket's I/O needs (docs/HTTP.md 5). */
            .workers = scfg.threads,
            .metrics = metrics,
            .metrics_hook = http_metrics,
            .report_hook = http_report,
            .hook_arg = &fr,
            /* Listening once the proxy's route is in too (below): a
             * client that saw /healthz answered finds every route. */
            .start_later = true,
        };
        if ((rc = sc_http_open(&hcfg, &http)) != SC_OK) {
            fprintf(stderr, "semcached: cannot serve HTTP on %s: %s\n",
                    conf.http, sc_strerror(rc));
            goto out_server;
        }
    }
    if (pcfg.upstream != NULL) {
        pcfg.addr = conf.http;
        pcfg.cache = cache;
        pcfg.dispatch = disp;
        pcfg.body_max = conf.recv_max;
        /* As many as the HTTP front's: requests are parsed, embedded and
         * looked up on these, off nng's threads (docs/PROXY.md 8). */
        pcfg.lookup_workers = scfg.threads;
        /* With the sc_http opened to start later, the proxy's open is
         * what listens: its SC_EIO (the address taken, ...) comes with a
         * line naming the address and the cause. */
        if ((rc = sc_proxy_open(&pcfg, &proxy)) != SC_OK) {
            if (rc == SC_EIO) {
                fprintf(stderr,
                        "semcached: cannot serve HTTP on %s (with "
                        "the proxy): the line above says why\n",
                        conf.http);
            } else {
                fprintf(stderr, "semcached: cannot start the proxy of %s: %s\n",
                        pcfg.upstream, sc_strerror(rc));
            }
            goto out_server;
        }
        front_set_proxy(&fr, proxy);
    }
    if (http != NULL && (rc = sc_http_start(http)) != SC_OK) {
        /* SC_EIO alone: sc_http_start said which address and why. */
        fprintf(stderr,
                "semcached: cannot serve HTTP on %s: the line above "
                "says why\n",
                conf.http);
        goto out_server;
    }
    /* Said once it listens (an address taken stops before, with a line
     * naming it and the cause). */
    if (http != NULL) {
#ifdef SC_NNG_PATCHED
        fprintf(stderr,
                "semcached: HTTP on %s (at most %u %s at once; "
                "descriptor limit %lu)\n",
                conf.http, http_cap,
                sc_plural(http_cap, "connection", "connections"), nofile);
#else
        fprintf(stderr,
                "semcached: HTTP on %s (no cap on connections: the system's "
                "nng; descriptor limit %lu)\n",
                conf.http, nofile);
#endif
    }
    if (proxy != NULL) {
        fprintf(stderr, "semcached: OpenAI-compatible proxy on %s%s\n",
                conf.http, "/v1/chat/completions");
    }
    if ((rc = sc_server_start(srv)) != SC_OK) {
        fprintf(stderr, "semcached: cannot start the server's workers: %s\n",
                sc_strerror(rc));
        goto out_server;
    }
    /* Every listener accepts by now, and nng answers. */
    fprintf(stderr,
            "semcached: ready (%s, simd %s, %u %s, at most %u nng "
            "%s at once; descriptor limit %lu)\n",
            SC_SERVER_NAME, sc_simd_active()->name, scfg.threads,
            sc_plural(scfg.threads, "worker", "workers"), nng_cap,
            sc_plural(nng_cap, "client", "clients"), nofile);

    int sig = 0;
    while (sig == 0) {
        int s = next_signal(&sigs, 1000);
        if (s == SIGTERM || s == SIGINT) {
            sig = s;
            break;
        }
        if (s == SIGHUP) {
            reload_keys(disp);
        }
        /* Once a second: entries past their TTL leave without a scan. */
        size_t gone = sc_cache_expire(cache, now_ms());
        if (gone > 0) {
            fprintf(stderr, "semcached: expired %zu %s\n", gone,
                    sc_plural(gone, "entry", "entries"));
        }
    }
    fprintf(stderr, "semcached: %s received, shutting down\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT");
    front_set_proxy(&fr, NULL);
    bool had_proxy = proxy != NULL;
    sc_proxy_counts pc;
    sc_proxy_close_counts(proxy, &pc);
    proxy = NULL;
    bool second = false; /* a second signal came: no snapshot either */
    if (http != NULL) {
        bool ended = false; /* it ended the HTTP stop's grace */
        http_stop_watched(http, &sigs, &second, &ended);
        /* An answer the grace did not see out: its client read the end of
         * the connection, which no scrape shows. */
        unsigned cut = sc_http_stop_cut(http);
        double grace_s = sc_http_stop_grace_ms(http) / 1000.0;
        if (cut > 0 && ended) {
            fprintf(stderr,
                    "semcached: the HTTP stop cut %u %s not written: a "
                    "second signal ended its %g s grace\n",
                    cut, sc_plural(cut, "answer", "answers"), grace_s);
        } else if (cut > 0) {
            fprintf(stderr,
                    "semcached: the HTTP stop cut %u %s not written within "
                    "its %g s grace\n",
                    cut, sc_plural(cut, "answer", "answers"), grace_s);
        }
        /* Not cut by the stop: lost to the write time-out or a client
         * that left while the grace let the answer out. */
        unsigned failed = sc_http_stop_failed(http);
        if (failed > 0) {
            fprintf(stderr,
                    "semcached: during the HTTP stop's %g s grace, %u %s "
                    "failed (the write time-out, or the client gone)\n",
                    grace_s, failed,
                    failed == 1 ? "answer's write" : "answers' writes");
        }
    }
    sc_http_close(http);
    http = NULL;
    /* Read once the workers are joined: a request taken before the signal
     * and answered during the stop is in the line too. */
    uint64_t served, dropped;
    sc_server_close_counts(srv, &served, &dropped);
    srv = NULL;
    sc_dispatch_counts dc;
    sc_dispatch_get_counts(disp, &dc);
    fprintf(stderr,
            "semcached: served %llu %s (%llu bad, %llu refused, "
            "%llu unauthorized, %llu forbidden), dropped %llu\n",
            (unsigned long long)served,
            sc_plural(served, "request", "requests"),
            (unsigned long long)dc.bad_requests, (unsigned long long)dc.errors,
            (unsigned long long)dc.unauthorized,
            (unsigned long long)dc.forbidden, (unsigned long long)dropped);
    if (had_proxy) {
        /* What the stop cut, which no scrape shows: /metrics leaves the
         * proxy out before the stop aborts anything (docs/HTTP.md). */
        uint64_t aborted = pc.fails[SC_PROXY_FAIL_SHUTTING_DOWN];
        uint64_t refused = pc.own[4]; /* 400, 411, 413, 500, 503 */
        fprintf(stderr,
                "semcached: the stop cut %llu proxy %s; answered %llu "
                "upstream %s aborted 502 and %llu %s 503 "
                "shutting_down\n",
                (unsigned long long)pc.stop_cut,
                sc_plural(pc.stop_cut, "stream", "streams"),
                (unsigned long long)aborted,
                sc_plural(aborted, "call", "calls"),
                (unsigned long long)refused,
                sc_plural(refused, "request", "requests"));
    }
    if (persist != NULL && conf.snapshot_at_stop) {
        /* Hit counts, the LRU order and sliding-TTL refreshes are kept by
         * snapshots only (the log has every change but these): one written
         * now keeps them across a clean restart. The log holds every
         * change whatever happens here. */
        double t0 = (double)now_ms();
        sc_err crc = second ? SC_ECANCELED : snapshot_at_stop(persist, &sigs);
        if (crc == SC_OK) {
            fprintf(stderr, "semcached: snapshot written at stop (%.1f s)\n",
                    ((double)now_ms() - t0) / 1000.0);
        } else {
            char why[128] = "snapshot at stop cancelled";
            if (crc != SC_ECANCELED) {
                snprintf(why, sizeof(why), "no snapshot at stop (%s)",
                         sc_strerror(crc));
            }
            fprintf(stderr,
                    "semcached: %s: every change is in the log, but hit "
                    "counts, the LRU order and sliding-TTL refreshes since "
                    "the last one are lost\n",
                    why);
        }
    }
    status = 0;
out_server:
    front_set_proxy(&fr, NULL);
    sc_proxy_close(proxy);
    sc_http_close(http);
    sc_server_close(srv);
out_metrics:
    sc_metrics_close(metrics);
out_disp:
    sc_dispatch_close(disp);
out_cache:
    /* The log's last records are written before the cache goes. */
    sc_persist_close(persist);
    sc_cache_close(cache);
out_conf:
    sc_ledger_close(ledger);
    sc_prices_free(prices);
    sc_embed_close(emb);
    sc_config_fini(&conf);
    if (__atomic_load_n(&sc_server_stuck_closes, __ATOMIC_RELAXED) > 0) {
        /* Everything is written and closed; nng's exit handler would
         * wait for the stuck socket close (server.c) for ever. */
        fflush(NULL);
        _exit(status);
    }
    return status;
}
