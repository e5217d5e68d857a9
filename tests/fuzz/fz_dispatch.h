/* fz_dispatch.h - the in-process server that fuzz_dispatch and fuzz_http
 * drive: a cache with small caps, a fake embedder (so text paths run), a
 * cost ledger and a dispatcher over them, on a fake clock; and the checks
 * that its counters stay consistent. Each includer gets its own copy (all
 * static), set up on its first input. FZ_NAME names the includer in
 * abort messages. */
#ifndef FZ_DISPATCH_H
#define FZ_DISPATCH_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache.h"
#include "cache/ledger.h"
#include "proto/dispatch.h"

#define FDIM 4
#define EDIM 8

static sc_cache *cache;
static sc_dispatch *disp;
static sc_ledger *ledger;
static sc_prices *prices;
static uint64_t fake_now = 1700000000000ull;

static uint64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

/* Text -> a unit vector of EDIM floats from a hash of its bytes; text with
 * no letter or digit has no usable token, as with the real embedder. */
static sc_err fake_embed(void *arg, const char *text, size_t len, float *out)
{
    (void)arg;
    uint64_t h = 1469598103934665603ull;
    int usable = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)text[i];
        usable |=
            (ch >= '0' && ch <= '9') || ((ch | 32) >= 'a' && (ch | 32) <= 'z');
        h = (h ^ ch) * 1099511628211ull;
    }
    if (!usable) {
        return SC_EZEROVEC;
    }
    double norm = 0;
    for (int d = 0; d < EDIM; d++) {
        h = h * 6364136223846793005ull + 1442695040888963407ull;
        out[d] = (float)((double)(h >> 11) / 9007199254740992.0) + 0.01f;
        norm += (double)out[d] * out[d];
    }
    for (int d = 0; d < EDIM; d++) {
        out[d] = (float)(out[d] / sqrt(norm));
    }
    return SC_OK;
}

static void fake_rescore(void *arg, const void *stats, const char *q, size_t ql,
                         const void *qprep, size_t n, const char *const *c,
                         const size_t *cl, const void *const *cprep,
                         const float *cosine, float *out)
{
    (void)arg;
    (void)stats;
    (void)q;
    (void)qprep;
    (void)c;
    (void)cprep;
    for (size_t i = 0; i < n; i++) {
        out[i] = ql == cl[i] ? cosine[i] : cosine[i] * 0.99f;
    }
}

static const sc_cache_embedder embedder = {.model = "fake@1",
                                           .dim = EDIM,
                                           .threshold = 0.8f,
                                           .margin = 0.01f,
                                           .embed = fake_embed,
                                           .rescore = fake_rescore};

static void die(const char *what)
{
    fprintf(stderr, "%s: %s\n", FZ_NAME, what);
    abort();
}

static void setup(void)
{
    sc_cache_config cfg;
    sc_cache_config_init(&cfg);
    cfg.max_namespaces = 8;
    cfg.max_scopes = 16;
    cfg.max_entries = 256;
    cfg.max_bytes = 1u << 20;
    cfg.clock = fake_clock;
    cfg.embedder = &embedder;
    if (sc_prices_default(&prices) != SC_OK ||
        sc_ledger_open(prices, &ledger) != SC_OK) {
        die("ledger");
    }
    cfg.ledger = ledger;
    if (sc_cache_open(&cfg, &cache) != SC_OK ||
        sc_dispatch_open(cache, &disp) != SC_OK) {
        die("open");
    }
    sc_dispatch_set_ledger(disp, ledger, prices);
    sc_dispatch_set_embed_hint(disp, "/nonexistent/embeddings.sctab");
    /* "v": vectors of dimension FDIM; "t": the embedder's text namespace. */
    sc_ns_config ns;
    sc_cache_ns_config_init(&ns);
    ns.dim = FDIM;
    ns.ttl_ms = 2000;
    if (sc_cache_ns_create(cache, "v", &ns) != SC_OK) {
        die("ns v");
    }
    for (int i = 0; i < 4; i++) {
        float v[FDIM] = {1, 0, 0, 0};
        v[i] += 0.5f;
        char resp[16];
        snprintf(resp, sizeof(resp), "answer %d", i);
        sc_cache_item it = {0};
        it.vec = v;
        it.dim = FDIM;
        it.response = resp;
        it.response_len = strlen(resp);
        it.text = resp;
        it.text_len = strlen(resp);
        if (sc_cache_insert(cache, "v", &it, NULL) != SC_OK) {
            die("insert v");
        }
    }
    sc_cache_ns_config_init(&ns);
    ns.max_entries = 32;
    if (sc_cache_ns_create(cache, "t", &ns) != SC_OK) {
        die("ns t");
    }
    sc_cache_item it = {0};
    it.text = "how do i return a product";
    it.text_len = strlen(it.text);
    it.response = "use the form";
    it.response_len = 12;
    if (sc_cache_insert(cache, "t", &it, NULL) != SC_OK) {
        die("insert t");
    }
}

static void check_stats(const char *ns)
{
    sc_cache_stats st;
    if (sc_cache_stats_get(cache, ns, &st) != SC_OK) {
        die("stats");
    }
    if (st.lookups != st.exact_hits + st.semantic_hits + st.misses) {
        die("lookups != hits + misses");
    }
    if (st.ambiguous_misses > st.misses || st.quarantined > st.entries) {
        die("sub-counts exceed their totals");
    }
    uint64_t h = 0;
    for (unsigned i = 0; i < SC_CACHE_HIST_BINS; i++) {
        h += st.hist[i];
    }
    if (h != st.lookups) {
        die("histogram does not add up to lookups");
    }
    if (ns != NULL && st.entries != st.inserts - st.replaced - st.deletes -
                                        st.expirations - st.evictions -
                                        st.flushed) {
        die("entries != inserts - removals");
    }
}

static void check_cache(void)
{
    char names[16][SC_CACHE_NS_NAME_MAX + 1];
    size_t count = 0;
    if (sc_cache_ns_list(cache, names, 16, &count) != SC_OK || count > 8) {
        die("ns_list / max_namespaces");
    }
    for (size_t i = 0; i < count; i++) {
        check_stats(names[i]);
    }
    check_stats(NULL);
}

/* Time moves half a second per input, so TTLs expire now and then. */
static void fz_tick(void)
{
    if (cache == NULL) {
        setup();
    }
    fake_now += 500;
    if (fake_now % 4000 == 0) {
        sc_cache_expire(cache, 0);
    }
}

#endif
