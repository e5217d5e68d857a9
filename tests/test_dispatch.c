/* test_dispatch.c - sc_dispatch_handle_many against sc_dispatch_handle: two
 * caches filled alike answer the same messages, one by one on one, as
 * batches on the other (the server's batch path, where single lookups of a
 * namespace share one index scan); every reply must match byte for byte.
 * Also: a server with the batch handler answers concurrent clients. */
#define _GNU_SOURCE
#include <msgpack.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/client.h"
#include "proto/dispatch.h"
#include "proto/mp.h"
#include "proto/server.h"
#include "test_util.h"

#define DIM     16
#define ENTRIES 40

static void vec_of(unsigned i, float *v)
{
    uint64_t s = i * 2654435761u + 7;
    for (int j = 0; j < DIM; j++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        v[j] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
    }
}

/* A request built by the caller's fill function, as one malloc'd buffer. */
typedef struct req {
    uint8_t *data;
    size_t len;
} req;

static req finish(msgpack_sbuffer *sb)
{
    req r = {(uint8_t *)sb->data, sb->size};
    return r;
}

static void begin(msgpack_sbuffer *sb, msgpack_packer *pk, const char *op,
                  size_t extra, int with_id, uint64_t id)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(pk, 2 + extra + (with_id != 0));
    if (with_id) {
        mp_put_key(pk, "id");
        msgpack_pack_uint64(pk, id);
    }
    mp_put_key(pk, "v");
    msgpack_pack_uint32(pk, 1);
    mp_put_key(pk, "op");
    mp_put_str(pk, op);
}

static req insert_req(const char *ns, const char *scope, unsigned i)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    begin(&sb, &pk, "insert", scope ? 5 : 4, 0, 0);
    mp_put_key(&pk, "ns");
    mp_put_str(&pk, ns);
    if (scope) {
        mp_put_key(&pk, "scope");
        mp_put_str(&pk, scope);
    }
    float v[DIM];
    vec_of(i, v);
    char text[32], resp[32];
    snprintf(text, sizeof(text), "prompt %u", i);
    snprintf(resp, sizeof(resp), "answer %u", i);
    mp_put_key(&pk, "text");
    mp_put_str(&pk, text);
    mp_put_key(&pk, "vec");
    mp_put_vec(&pk, v, DIM);
    mp_put_key(&pk, "response");
    mp_put_bin(&pk, resp, strlen(resp));
    return finish(&sb);
}

/* A lookup of entry i's vector, nudged (miss: far away), with options. */
static req lookup_req(const char *ns, const char *scope, unsigned i, int miss,
                      int with_id, uint64_t id, int dim, double threshold,
                      const char *text)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t extra = 2 + (scope != NULL) + (threshold > -5) + (text != NULL);
    begin(&sb, &pk, "lookup", extra, with_id, id);
    mp_put_key(&pk, "ns");
    mp_put_str(&pk, ns);
    if (scope) {
        mp_put_key(&pk, "scope");
        mp_put_str(&pk, scope);
    }
    if (text) {
        mp_put_key(&pk, "text");
        mp_put_str(&pk, text);
    }
    float v[DIM];
    vec_of(miss ? 100000 + i : i, v);
    v[0] += 0.01f;
    mp_put_key(&pk, "vec");
    mp_put_vec(&pk, v, (size_t)dim);
    if (threshold > -5) {
        mp_put_key(&pk, "threshold");
        msgpack_pack_double(&pk, threshold);
    }
    return finish(&sb);
}

static req raw_req(const void *p, size_t n)
{
    req r = {malloc(n), n};
    memcpy(r.data, p, n);
    return r;
}

static sc_dispatch *open_filled(sc_cache **cache)
{
    sc_dispatch *d = NULL;
    CHECK(sc_cache_open(NULL, cache) == SC_OK);
    CHECK(sc_dispatch_open(*cache, &d) == SC_OK);
    for (unsigned i = 0; i < ENTRIES; i++) {
        req r = i % 2 ? insert_req("a", NULL, i) : insert_req("b", "s1", i);
        uint8_t *rep = NULL;
        size_t rl = 0;
        CHECK(sc_dispatch_handle(d, r.data, r.len, &rep, &rl) == 0);
        CHECK(rep != NULL && memmem(rep, rl, "\xa2ok\xc3", 4) != NULL);
        free(rep);
        free(r.data);
    }
    return d;
}

/* The mix every batch is cut from: hits and misses in two namespaces and
 * scopes, repeated hits on one entry (hit_count), exact-layer hits, ids,
 * thresholds, a missing namespace, a wrong dimension, a bad threshold, a
 * lookup without ns, other ops and malformed messages. */
static size_t make_mix(req *rs, size_t cap)
{
    size_t n = 0;
    for (unsigned k = 0; n + 12 <= cap; k++) {
        /* Entry 4 takes the exact-layer hits and no semantic ones: within
         * one sc_cache_lookup_many an exact hit is judged before the
         * semantic hits, so hits of both kinds on one entry would count
         * its hit_count in another order (as in lookup_batch). */
        unsigned i = (k * 7) % ENTRIES;
        i = i == 4 ? 6 : i;
        const char *ns = i % 2 ? "a" : "b";
        const char *scope = i % 2 ? NULL : "s1";
        rs[n++] = lookup_req(ns, scope, i, 0, k % 3 == 0, 1000 + k, DIM, -9,
                             NULL);
        rs[n++] = lookup_req(ns, scope, i, 1, 0, 0, DIM, -9, NULL);
        rs[n++] = lookup_req("a", NULL, 1, 0, 1, k, DIM, -9, NULL);
        rs[n++] = lookup_req("b", "nope", 2, 0, 0, 0, DIM, -9, NULL);
        rs[n++] = lookup_req("b", "s1", 4, 0, 0, 0, DIM, 0.5, "prompt 4");
        rs[n++] = lookup_req("a", NULL, 3, 1, 0, 0, DIM, -1.0, NULL);
        rs[n++] = lookup_req("zz", NULL, 3, 0, 1, 7, DIM, -9, NULL);
        rs[n++] = lookup_req("a", NULL, 5, 0, 1, 8, DIM - 1, -9, NULL);
        rs[n++] = lookup_req("a", NULL, 5, 0, 0, 0, DIM, 3.0, NULL);
        rs[n++] = raw_req("\x83\xa1v\x01\xa2op\xa6lookup\xa3vec\xc4\x04"
                          "\x00\x00\x80\x3f",
                          24);
        rs[n++] = raw_req("\x82\xa1v\x01\xa2op\xa4ping", 12);
        rs[n++] = raw_req("\x93\x01\x02", 3 - (k % 2));
    }
    return n;
}

static void test_same_replies(void)
{
    sc_cache *ca, *cb;
    sc_dispatch *da = open_filled(&ca);
    sc_dispatch *db = open_filled(&cb);
    enum { N = 200 };
    req rs[N];
    size_t n = make_mix(rs, N);
    /* Batch sizes 1, 2, 3 ... and one over the server's maximum. */
    size_t sizes[] = {1, 2, 3, 5, 8, 13, 21, 34, SC_SERVER_MAX_BATCH + 6};
    size_t at = 0, si = 0, mismatches = 0, compared = 0;
    while (at < n) {
        size_t m = sizes[si++ % (sizeof(sizes) / sizeof(sizes[0]))];
        if (m > n - at) {
            m = n - at;
        }
        sc_server_msg *msgs = calloc(m, sizeof(*msgs));
        for (size_t i = 0; i < m; i++) {
            msgs[i].req = rs[at + i].data;
            msgs[i].len = rs[at + i].len;
        }
        sc_dispatch_handle_many(db, msgs, m);
        for (size_t i = 0; i < m; i++) {
            uint8_t *rep = NULL;
            size_t rl = 0;
            int rc = sc_dispatch_handle(da, rs[at + i].data, rs[at + i].len,
                                        &rep, &rl);
            compared++;
            if (rc != msgs[i].rc || rl != msgs[i].reply_len ||
                memcmp(rep, msgs[i].reply, rl) != 0) {
                mismatches++;
                fprintf(stderr, "reply %zu differs (batch of %zu)\n", at + i,
                        m);
            }
            free(rep);
            free(msgs[i].reply);
        }
        free(msgs);
        at += m;
    }
    CHECK_EQ_INT(compared, n);
    CHECK_EQ_INT(mismatches, 0);
    sc_dispatch_counts ka, kb;
    sc_dispatch_get_counts(da, &ka);
    sc_dispatch_get_counts(db, &kb);
    CHECK_EQ_INT(ka.requests, kb.requests);
    CHECK_EQ_INT(ka.bad_requests, kb.bad_requests);
    CHECK_EQ_INT(ka.errors, kb.errors);
    sc_cache_stats sa, sb;
    CHECK(sc_cache_stats_get(ca, NULL, &sa) == SC_OK);
    CHECK(sc_cache_stats_get(cb, NULL, &sb) == SC_OK);
    CHECK_EQ_INT(sa.lookups, sb.lookups);
    CHECK_EQ_INT(sa.semantic_hits, sb.semantic_hits);
    CHECK_EQ_INT(sa.exact_hits, sb.exact_hits);
    CHECK_EQ_INT(sa.misses, sb.misses);
    CHECK(sa.semantic_hits > 0 && sa.exact_hits > 0 && sa.misses > 0);
    for (size_t i = 0; i < n; i++) {
        free(rs[i].data);
    }
    sc_dispatch_close(da);
    sc_dispatch_close(db);
    sc_cache_close(ca);
    sc_cache_close(cb);
}

/* ---- through a real server with the batch handler -------------------- */

typedef struct cl {
    const char *url;
    int id;
    int ok, bad;
} cl;

static void *client_main(void *arg)
{
    cl *c = arg;
    sc_client *k;
    if (sc_client_open(c->url, 5000, &k) != SC_OK) {
        c->bad++;
        return NULL;
    }
    for (int j = 0; j < 200; j++) {
        unsigned i = (unsigned)(c->id * 31 + j) % ENTRIES;
        float v[DIM];
        vec_of(i, v);
        sc_client_item it = {0};
        it.scope = i % 2 ? NULL : "s1";
        it.vec = v;
        it.dim = DIM;
        sc_client_result res;
        memset(&res, 0, sizeof(res));
        sc_err rc = sc_client_lookup(k, i % 2 ? "a" : "b", &it, &res, NULL);
        char want[32];
        snprintf(want, sizeof(want), "answer %u", i);
        if (rc == SC_OK && res.hit && res.response_len == strlen(want) &&
            memcmp(res.response, want, res.response_len) == 0) {
            c->ok++;
        } else {
            c->bad++;
        }
        free(res.response);
    }
    sc_client_close(k);
    return NULL;
}

static void test_server_batches(void)
{
    sc_cache *cache;
    sc_dispatch *d = open_filled(&cache);
    char url[64];
    snprintf(url, sizeof(url), "ipc:///tmp/test-dispatch-%d.ipc", (int)getpid());
    sc_server_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.listen[0] = url;
    cfg.nlisten = 1;
    cfg.threads = 1; /* one worker: concurrent requests queue into batches */
    cfg.handler = sc_dispatch_handle;
    cfg.handler_many = sc_dispatch_handle_many;
    cfg.handler_arg = d;
    sc_server *srv = NULL;
    CHECK(sc_server_open(&cfg, &srv) == SC_OK);
    enum { NC = 8 };
    cl cs[NC];
    pthread_t t[NC];
    for (int i = 0; i < NC; i++) {
        cs[i] = (cl){url, i, 0, 0};
        pthread_create(&t[i], NULL, client_main, &cs[i]);
    }
    int ok = 0, bad = 0;
    for (int i = 0; i < NC; i++) {
        pthread_join(t[i], NULL);
        ok += cs[i].ok;
        bad += cs[i].bad;
    }
    CHECK_EQ_INT(ok, NC * 200);
    CHECK_EQ_INT(bad, 0);
    uint64_t served, dropped;
    sc_server_counts(srv, &served, &dropped);
    CHECK_EQ_INT(served, NC * 200);
    CHECK_EQ_INT(dropped, 0);
    sc_server_close(srv);
    sc_dispatch_close(d);
    sc_cache_close(cache);
}

int main(void)
{
    test_same_replies();
    test_server_batches();
    return test_summary("dispatch");
}
