/* test_dispatch.c - sc_dispatch_handle_many against sc_dispatch_handle: two
 * caches filled alike answer the same messages, one by one on one, as
 * batches on the other (the server's batch path, where single lookups of a
 * namespace share one index scan); every reply must match byte for byte.
 * Also: a server with the batch handler answers concurrent clients, and
 * sc_server_close returns while clients are mid-request, and with the
 * patched nng every nng close finishes (nng 1.5.2's hang), within 25 s,
 * those the server left running past its wait included. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto/client.h"
#include "proto/dispatch.h"
#include "proto/mp.h"
#include "proto/server.h"
#include "test_ports.h"
#include "test_tmp.h"
#include "test_util.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>
#include <nng/supplemental/tls/tls.h>
#include <time.h>

/* This run's directory (test_tmp.h's, made by main): its
 * ipc:// sockets and certificate files live there, by the names
 * tmp_path() hands out. It goes when the run ends: at exit, before the
 * _exit of a run that leaves a stuck close, and on SIGINT, SIGTERM or
 * SIGHUP (not on SIGKILL or a crash: that directory is left). */
static char tmp_dir[64];
static pid_t tmp_owner; /* the process that made it: a fork does not own it */
static const char *tmp_names[16]; /* names tmp_path() handed out */
static int tmp_nnames;

/* Writes tmp_dir/name into buf (name: a string literal, not freed). */
static void tmp_path(char *buf, size_t size, const char *name)
{
    int i = 0;
    while (i < tmp_nnames && strcmp(tmp_names[i], name) != 0) {
        i++;
    }
    if (i == tmp_nnames &&
        tmp_nnames < (int)(sizeof(tmp_names) / sizeof(tmp_names[0]))) {
        tmp_names[tmp_nnames++] = name;
    }
    snprintf(buf, size, "%s/%s", tmp_dir, name);
}

/* Unlinks tmp_dir/name for each name handed out, and what make_cert
 * makes beside a name, then removes the directory: only unlink and rmdir,
 * so that a signal handler may call it. */
static void tmp_dir_unlink_names(void)
{
    static const char *const suffixes[] = {"", ".crt", ".key"};
    for (int i = 0; i < tmp_nnames; i++) {
        for (size_t k = 0; k < sizeof(suffixes) / sizeof(suffixes[0]); k++) {
            char path[128];
            /* snprintf is not async-signal-safe: copy by hand. */
            size_t n = 0;
            for (const char *p = tmp_dir; *p != '\0' && n < 64; p++) {
                path[n++] = *p;
            }
            path[n++] = '/';
            for (const char *p = tmp_names[i]; *p != '\0' && n < 112; p++) {
                path[n++] = *p;
            }
            for (const char *p = suffixes[k]; *p != '\0' && n < 127; p++) {
                path[n++] = *p;
            }
            path[n] = '\0';
            unlink(path);
        }
    }
    rmdir(tmp_dir);
}

/* Removes tmp_dir and all in it, in the process that made it. */
static void tmp_dir_remove(void)
{
    if (tmp_dir[0] == '\0' || getpid() != tmp_owner) {
        return;
    }
    DIR *dir = opendir(tmp_dir);
    if (dir != NULL) {
        struct dirent *e;
        while ((e = readdir(dir)) != NULL) {
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                unlinkat(dirfd(dir), e->d_name, 0);
            }
        }
        closedir(dir);
    }
    if (rmdir(tmp_dir) != 0) {
        fprintf(stderr, "dispatch: cannot remove %s\n", tmp_dir);
    }
    tmp_dir[0] = '\0';
}

static void tmp_dir_on_signal(int sig)
{
    if (tmp_dir[0] != '\0' && getpid() == tmp_owner) {
        tmp_dir_unlink_names();
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Makes tmp_dir and sees that it goes when the run ends; false, said on
 * stderr, when it cannot be made. */
static bool tmp_dir_make(void)
{
    /* The process's own (test_tmp.h): left by a SIGKILL, the next test
     * run removes it. Short (under /tmp when $TMPDIR's is long):
     * tmp_dir_unlink_names() copies 64 bytes. */
    const char *dir = sc_test_tmp_short_dir("dispatch", 60);
    if (dir == NULL) {
        return false;
    }
    snprintf(tmp_dir, sizeof(tmp_dir), "%s", dir);
    tmp_owner = getpid();
    atexit(tmp_dir_remove);
    signal(SIGINT, tmp_dir_on_signal);
    signal(SIGTERM, tmp_dir_on_signal);
    signal(SIGHUP, tmp_dir_on_signal);
    return true;
}

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
 * lookup without ns, other ops and malformed messages, and per-item errors
 * in a missing namespace. */
static size_t make_mix(req *rs, size_t cap)
{
    size_t n = 0;
    for (unsigned k = 0; n + 14 <= cap; k++) {
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
        /* An item's own error and a missing namespace: the item's first,
         * alone or with others (a zero vector; a bad threshold). */
        rs[n++] = raw_req("\x84\xa1v\x01\xa2op\xa6lookup\xa2ns\xa2zz\xa3vec"
                          "\xc4\x04\x00\x00\x00\x00",
                          30);
        rs[n++] = lookup_req("zz", NULL, 3, 0, 0, 0, DIM, 3.0, NULL);
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
            if (msgs[i].undo != NULL) {
                msgs[i].undo->done(msgs[i].undo, true);
            }
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
    char path[64], url[80];
    tmp_path(path, sizeof(path), "batches.ipc");
    snprintf(url, sizeof(url), "ipc://%s", path);
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
    /* Every reply is counted before it is handed to nng: no wait. */
    uint64_t served = 0, dropped = 0;
    sc_server_counts(srv, &served, &dropped);
    CHECK_EQ_INT(served, NC * 200);
    CHECK_EQ_INT(dropped, 0);
    sc_server_close(srv);
    sc_dispatch_close(d);
    sc_cache_close(cache);
}

/* A server with the one-by-one handler on the dispatcher of a filled
 * cache, listening on ipc:// at tmp_dir/NAME.ipc. */
typedef struct ipc_server {
    char path[96], url[112];
    sc_cache *cache;
    sc_dispatch *d;
    sc_server_config cfg; /* its listen names url: the struct stays put */
    sc_server *srv;       /* NULL when the open failed */
} ipc_server;

/* Opens the server on tmp_dir/name (a string literal) with threads
 * workers, started unless start_later. */
static void ipc_server_open(ipc_server *h, const char *name, unsigned threads,
                            bool start_later)
{
    tmp_path(h->path, sizeof(h->path), name);
    snprintf(h->url, sizeof(h->url), "ipc://%s", h->path);
    h->d = open_filled(&h->cache);
    h->cfg = (sc_server_config){.listen = {h->url},
                                .nlisten = 1,
                                .threads = threads,
                                .handler = sc_dispatch_handle,
                                .handler_arg = h->d,
                                .start_later = start_later};
    h->srv = NULL;
    CHECK(sc_server_open(&h->cfg, &h->srv) == SC_OK);
}

/* The rest, once the caller has closed the server. */
static void ipc_server_fini(ipc_server *h)
{
    sc_dispatch_close(h->d);
    sc_cache_close(h->cache);
    unlink(h->path);
}

/* A reply the client has read is in sc_server_counts at once, and in the
 * final counts of sc_server_close_counts. The count once came after the
 * send, so a client could read its reply before the count had it:
 * semcached's stop line then said "served 0" for a request answered just
 * before SIGTERM. Pings one at a time, each count read as its reply
 * arrives. */
static void test_served_counted(void)
{
    ipc_server h;
    ipc_server_open(&h, "served.ipc", 1, false);
    sc_server *srv = h.srv;
    sc_client *k = NULL;
    CHECK(srv != NULL && sc_client_open(h.url, 5000, &k) == SC_OK);
    enum { N = 20000 };
    int answered = 0, behind = 0;
    for (int i = 0; k != NULL && i < N; i++) {
        char name[64];
        if (sc_client_ping(k, name, sizeof(name), NULL) != SC_OK) {
            break;
        }
        answered++;
        uint64_t served, dropped;
        sc_server_counts(srv, &served, &dropped);
        behind += served < (uint64_t)answered;
    }
    CHECK_EQ_INT(answered, N);
    CHECK_EQ_INT(behind, 0);
    sc_client_close(k);
    uint64_t served = 0, dropped = 1;
    sc_server_close_counts(srv, &served, &dropped);
    CHECK_EQ_INT(served, N);
    CHECK_EQ_INT(dropped, 0);
    ipc_server_fini(&h);
}

/* A server opened with start_later listens (a client connects) but runs
 * no worker until sc_server_start: a request sent before it is not
 * answered (polled without blocking for a while), and is once the server
 * starts; so is a ping sent then. A close without a start leaves nothing
 * running. */
static void test_start_later(void)
{
    /* Opened and closed unstarted. */
    ipc_server h;
    ipc_server_open(&h, "later.ipc", 2, true);
    sc_server *srv = h.srv;
    uint64_t served = 1, dropped = 1;
    sc_server_close_counts(srv, &served, &dropped);
    CHECK_EQ_INT(served, 0);
    CHECK_EQ_INT(dropped, 0);
    unlink(h.path);
    /* Opened, a client in, then started: its ping is answered. */
    srv = NULL;
    sc_client *k = NULL;
    CHECK(sc_server_open(&h.cfg, &srv) == SC_OK);
    CHECK(srv != NULL && sc_client_open(h.url, 10000, &k) == SC_OK);
    /* A raw request sent before the start: not answered until then (any
     * reply, an error one included, would be an answer). */
    nng_socket raw;
    bool raw_ok = nng_req0_open(&raw) == 0;
    CHECK(raw_ok);
    if (raw_ok) {
        nng_socket_set_ms(raw, NNG_OPT_SENDTIMEO, 10000);
        nng_socket_set_ms(raw, NNG_OPT_RECVTIMEO, 10000);
        char buf[8] = "early";
        CHECK(nng_dial(raw, h.url, NULL, 0) == 0);
        CHECK(nng_send(raw, buf, sizeof(buf), 0) == 0);
        int early = 0;
        for (int i = 0; i < 50 && !early; i++) {
            void *r = NULL;
            size_t rl = 0;
            int rv = nng_recv(raw, &r, &rl, NNG_FLAG_ALLOC | NNG_FLAG_NONBLOCK);
            if (rv == 0) {
                nng_free(r, rl);
                early = 1;
            } else {
                CHECK(rv == NNG_EAGAIN);
                nng_msleep(10);
            }
        }
        CHECK(early == 0); /* not answered before the start */
    }
    CHECK(srv != NULL && sc_server_start(srv) == SC_OK);
    CHECK(srv != NULL && sc_server_start(srv) == SC_OK); /* a no-op */
    if (raw_ok) {
        void *r = NULL;
        size_t rl = 0;
        CHECK(nng_recv(raw, &r, &rl, NNG_FLAG_ALLOC) == 0); /* answered now */
        if (r != NULL) {
            nng_free(r, rl);
        }
        nng_close(raw);
    }
    char name[64];
    CHECK(k != NULL && sc_client_ping(k, name, sizeof(name), NULL) == SC_OK);
    sc_client_close(k);
    sc_server_close_counts(srv, &served, &dropped);
    CHECK_EQ_INT(served, raw_ok ? 2 : 1); /* the raw one's error answer */
    ipc_server_fini(&h);
}

/* ---- closing a server while requests are in flight ---------------------
 * sc_server_close must return however the workers stand: idle in a
 * receive, handling a batch, or between the two. Each round opens a
 * server, lets raw REQ clients hammer it, and closes it mid-flight. A
 * close that never returns (a worker stuck in a receive on the closed
 * socket did that) holds the test until ctest's time-out fails it; a
 * watchdog names the round on stderr once a close has taken over 10 s.
 * Built with the patched nng (SC_NNG_PATCHED), every nng close must
 * finish too: nng 1.5.2's own close stuck for good within the first 20
 * rounds of every run (scripts/patches/nng-1.5.2-pipe-close-race.patch
 * has the cause), which the server's bounded close only works around. A
 * close the server left running past SC_SERVER_CLOSE_WAIT_MS is waited
 * for before the next round: on a busy machine a close that finishes can
 * take longer than that bound (under AddressSanitizer, with the load at 9,
 * one in 150 took over 2 s and failed the test when it wanted none left
 * running). The wait ends at LATE_CLOSE_MAX_MS, a hang detector (see
 * there), which fails the test. With every close finished,
 * the process exits normally, so the sanitizer build checks these closes
 * for use after free (nng-1.5.2-msgq-closed.patch) and leaks
 * (nng-1.5.2-reap-on-close.patch) too. */

/* nng closes sc_server_close left running that have not finished yet. */
static unsigned closes_running(void)
{
    /* late first: the server counts a close stuck before it can count it
     * late, so stuck read after late is never the smaller (the guard
     * keeps a wrap out whatever the order). */
    unsigned late = __atomic_load_n(&sc_server_late_closes, __ATOMIC_ACQUIRE);
    unsigned stuck = __atomic_load_n(&sc_server_stuck_closes, __ATOMIC_ACQUIRE);
    return stuck > late ? stuck - late : 0;
}

/* How long a close may take, from sc_server_close's call until nng's
 * close, left running or not, has finished. This detects a close that
 * hangs or waits out one of nng's timers (the server's reply time-out,
 * SC_SERVER_REPLY_TIMEOUT_MS = 30 s, is the shortest a close could wait
 * on), not a slow machine: a close is a few hand-offs between nng's
 * threads, and the slowest of 3,300 TLS closes under AddressSanitizer on
 * 2 cores at a load of 21 took 0.93 s, the work itself 14-34 ms of CPU.
 * Without it a close that ends after 30 s would pass. */
#ifdef SC_NNG_PATCHED
enum { LATE_CLOSE_MAX_MS = 25000 };

/* Waits until no close is left running, at most until LATE_CLOSE_MAX_MS
 * after since (an nng_clock() time): the ms from since until then, or -1
 * when one still runs at that point. */
static long long wait_closes(nng_time since)
{
    for (;;) {
        nng_time now = nng_clock();
        if (closes_running() == 0) {
            return (long long)(now - since);
        }
        if (now - since > LATE_CLOSE_MAX_MS) {
            return -1;
        }
        usleep(1000);
    }
}
#endif

/* Every close that was left running and has finished freed the clients
 * table its server left to it (else each leaks it: LeakSanitizer finds
 * that at exit, this check in any build). */
static void check_late_frees(void)
{
    CHECK_EQ_INT(__atomic_load_n(&sc_server_late_frees, __ATOMIC_ACQUIRE),
                 __atomic_load_n(&sc_server_late_closes, __ATOMIC_ACQUIRE));
}

static int echo(void *arg, const uint8_t *req, size_t len, uint8_t **reply,
                size_t *reply_len)
{
    (void)arg;
    *reply = malloc(len ? len : 1);
    if (*reply == NULL) {
        return 1;
    }
    memcpy(*reply, req, len);
    *reply_len = len;
    return 0;
}

/* One REQ socket dialing url (tls+tcp://: encrypted with the test's own
 * certificate, not verified); 0 on success. */
static int hammer_open(const char *url, nng_socket *s)
{
    if (nng_req0_open(s) != 0) {
        return -1;
    }
    nng_socket_set_ms(*s, NNG_OPT_RECVTIMEO, 100);
    nng_socket_set_ms(*s, NNG_OPT_SENDTIMEO, 100);
    nng_socket_set_ms(*s, NNG_OPT_RECONNMINT, 1);
    nng_socket_set_ms(*s, NNG_OPT_RECONNMAXT, 5);
    nng_dialer d;
    if (nng_dialer_create(&d, *s, url) != 0) {
        return -1;
    }
    if (strncmp(url, "tls+", 4) == 0) {
        nng_tls_config *tls = NULL;
        if (nng_tls_config_alloc(&tls, NNG_TLS_MODE_CLIENT) != 0 ||
            nng_tls_config_auth_mode(tls, NNG_TLS_AUTH_MODE_NONE) != 0 ||
            nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, tls) != 0) {
            return -1;
        }
        nng_tls_config_free(tls); /* the dialer holds its own ref */
    }
    return nng_dialer_start(d, NNG_FLAG_NONBLOCK) == 0 ? 0 : -1;
}

/* The clients run in a child process (this program with --hammer URL),
 * as real clients do: nng_close waits for the socket's pipes to go, and
 * REQ sockets of the same process blocked in a send would hold that up
 * in nng 1.5.2 whatever the server did. Each thread sends and waits for
 * the reply, again and again; a dialer whose server went redials. Over
 * tls+tcp:// on Debian's own nng the clients stall for good after some
 * tens of rounds: each dialer keeps a pipe whose TCP stream the server's
 * close failed, and never redials
 * (scripts/patches/nng-1.5.2-tls-conn-closed.patch). */
static void *hammer_main(void *arg)
{
    const char *url = arg;
    nng_socket s;
    if (hammer_open(url, &s) != 0) {
        return NULL;
    }
    for (;;) {
        char buf[32] = "ping";
        if (nng_send(s, buf, sizeof(buf), 0) == 0) {
            void *r = NULL;
            size_t rl = 0;
            if (nng_recv(s, &r, &rl, NNG_FLAG_ALLOC) == 0) {
                nng_free(r, rl);
            }
        }
    }
    return NULL;
}

static int hammer_run(const char *url)
{
    enum { NH = 6 };
    pthread_t t[NH];
    /* nng sets itself up on its first call, with a flag read outside its
     * lock: made here, before the threads, as sc_client_open does. */
    (void)nng_clock();
    for (int i = 0; i < NH; i++) {
        pthread_create(&t[i], NULL, hammer_main, (void *)url);
    }
    pause();
    return 0;
}

static int close_round = -1;
static int close_done = 1;

/* Says (once a round) which round's close has run for over 10 s: the
 * test then waits on, and ctest's time-out fails a close that never ends. */
static void *watchdog_main(void *arg)
{
    (void)arg;
    int last = -2, said = 0;
    time_t since = time(NULL);
    for (;;) {
        usleep(100000);
        int r = __atomic_load_n(&close_round, __ATOMIC_ACQUIRE);
        if (r == -3) {
            return NULL;
        }
        if (r != last || __atomic_load_n(&close_done, __ATOMIC_ACQUIRE)) {
            last = r;
            said = 0;
            since = time(NULL);
        } else if (!said && time(NULL) - since > 10) {
            fprintf(stderr,
                    "dispatch: the close of round %d has run for over 10 s "
                    "(%u nng closes left running)\n",
                    r, closes_running());
            said = 1;
        }
    }
}

/* A self-signed certificate and its key in one PEM file (as --tls-cert
 * wants) at path, made with the openssl command; 0 without it. */
static int make_cert(const char *path)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt "
             "ec_paramgen_curve:prime256v1 -nodes -keyout %s.key -out %s.crt "
             "-days 2 -subj /CN=127.0.0.1 >/dev/null 2>&1 && cat %s.crt "
             "%s.key >%s && rm -f %s.crt %s.key",
             path, path, path, path, path, path, path);
    return system(cmd) == 0;
}

/* This process's 4 TCP ports (pick_ports() fills them), each bound and
 * released over and over by one test (test_close_under_load: 150 times).
 * They must lie below Linux's ephemeral range (ip_local_port_range,
 * 32768 up by default): there the kernel hands a released number to
 * other tests' connections and binds to port 0, which then hold it when
 * a round re-opens. */
static int ports[4];

/* The k-th (0..3) of this process's ports. */
static int test_port(int k)
{
    return ports[k];
}

/* Fills ports[] with the 4 ports of one slot of SEMCACHE_TEST_PORTS
 * (test_ports.h: by default 20000 up to the ephemeral range), taken only
 * whole, locked (the runs of the tests on the host, C or Python, however
 * their pids fall, never share a slot) and all 4 free now (skipping what
 * another test's listener holds). A run never takes a port of the next
 * slot, which another run may have locked and be binding and releasing.
 * False, said on stderr, when the range is malformed, reaches the
 * ephemeral range or has no such slot. */
static bool pick_ports(void)
{
    int lo, hi;
    if (!sc_test_ports_range("dispatch", &lo, &hi) ||
        !sc_test_ports_slot("dispatch", ports)) {
        return false;
    }
    fprintf(stderr, "dispatch: TCP ports %d, %d, %d, %d (of %d-%d)\n", ports[0],
            ports[1], ports[2], ports[3], lo, hi);
    return true;
}

/* Over tls+tcp:// with cert (a PEM file), over tcp:// when NULL. */
static void test_close_under_load(const char *self, const char *cert)
{
    char url[64];
    /* The port is bound and released 150 times (see ports[]). */
    snprintf(url, sizeof(url), "%s://127.0.0.1:%d",
             cert != NULL ? "tls+tcp" : "tcp",
             test_port(cert != NULL));
    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        execl(self, self, "--hammer", url, (char *)NULL);
        _exit(127);
    }
    CHECK(child > 0);
    if (child <= 0) {
        return;
    }
    __atomic_store_n(&close_round, -1, __ATOMIC_RELEASE);
    __atomic_store_n(&close_done, 1, __ATOMIC_RELEASE);
    pthread_t wd;
    pthread_create(&wd, NULL, watchdog_main, NULL);
    enum { ROUNDS = 150 };
    int served_rounds = 0, rounds = 0, unserved_run = 0;
#ifdef SC_NNG_PATCHED
    long long slowest = 0; /* ms, sc_server_close's call to nng's end */
    bool hung = false;
#endif
    for (int round = 0; round < ROUNDS; round++) {
        sc_server_config cfg;
        memset(&cfg, 0, sizeof(cfg));
        cfg.listen[0] = url;
        cfg.nlisten = 1;
        cfg.tls_cert = cert;
        cfg.threads = 1 + (unsigned)(round % 4);
        cfg.handler = echo;
        sc_server *srv = NULL;
        CHECK(sc_server_open(&cfg, &srv) == SC_OK);
        if (srv == NULL) {
            break;
        }
        /* Wait for the clients to reconnect and be served, then close
         * at a point that varies with the round. The first round waits
         * for the client process to start too: up to 10 s on a loaded
         * machine (unpatched, nng 1.5.2's close can stick in any round,
         * round 0 included, which ends the loop: an unserved round 0
         * would then fail the test for the machine's load alone). */
        uint64_t served = 0, dropped;
        int wait_ms = round == 0 ? 10000 : 400;
        for (int w = 0; w < wait_ms && served == 0; w++) {
            usleep(1000);
            sc_server_counts(srv, &served, &dropped);
        }
        usleep((useconds_t)((round % 7) * 300));
        served_rounds += served > 0;
        unserved_run = served > 0 ? 0 : unserved_run + 1;
        __atomic_store_n(&close_done, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&close_round, round, __ATOMIC_RELEASE);
#ifdef SC_NNG_PATCHED
        nng_time began = nng_clock();
#endif
        sc_server_close(srv);
#ifdef SC_NNG_PATCHED
        /* A close left running (a busy machine) must still finish; the
         * next round waits for it, as its listener may hold the port. */
        long long took = wait_closes(began);
        if (took < 0) {
            fprintf(stderr,
                    "dispatch: the close of round %d has not finished "
                    "within %d s\n",
                    round, LATE_CLOSE_MAX_MS / 1000);
            hung = true;
        }
        slowest = took > slowest ? took : slowest;
#endif
        __atomic_store_n(&close_done, 1, __ATOMIC_RELEASE);
        rounds++;
#ifdef SC_NNG_PATCHED
        if (hung) {
            break;
        }
#endif
#ifndef SC_NNG_PATCHED
        if (closes_running() > 0) {
            /* nng's one reaper thread is stuck for good now: later
             * closes in this process would all be left running too. */
            break;
        }
        if (cert != NULL && unserved_run == 5) {
            /* The TLS clients have stalled (see hammer_main): the
             * closes are no longer under load. */
            break;
        }
#endif
    }
    __atomic_store_n(&close_round, -3, __ATOMIC_RELEASE);
    pthread_join(wd, NULL);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    /* The closes were under load: most rounds had served requests (on
     * Debian's own nng over TLS, at least one before the clients
     * stalled). */
#ifdef SC_NNG_PATCHED
    CHECK(!hung);
    CHECK(rounds == ROUNDS && served_rounds > rounds / 2);
    check_late_frees();
#else
    if (cert == NULL) {
        CHECK(rounds > 0 && served_rounds > rounds / 2);
    } else {
        CHECK(served_rounds >= 1);
    }
#endif
#ifdef SC_NNG_PATCHED
    fprintf(stderr,
            "dispatch: %s: %d closes under load, %d served first, the "
            "slowest ended %lld ms after sc_server_close's call; %u nng "
            "closes in this process left running past %u ms (a busy "
            "machine), %u of them still running\n",
            url, rounds, served_rounds, slowest,
            __atomic_load_n(&sc_server_stuck_closes, __ATOMIC_RELAXED),
            SC_SERVER_CLOSE_WAIT_MS, closes_running());
#else
    fprintf(stderr,
            "dispatch: %s: %d closes under load, %d served first; %u nng "
            "closes in this process left running past %u ms (nng 1.5.2's "
            "hang), %u of them still running\n",
            url, rounds, served_rounds,
            __atomic_load_n(&sc_server_stuck_closes, __ATOMIC_RELAXED),
            SC_SERVER_CLOSE_WAIT_MS, closes_running());
#endif
}

/* ---- peers that leave while their request waits -----------------------
 * A busy server (one slow worker, a queue of one) holds each pipe's last
 * request until the worker takes it; the pipe asks for the next one only
 * then. Clients killed meanwhile must still have their pipes reaped: each
 * holds a descriptor (and over TLS its TLS buffers). nng 1.5.2 never
 * marked a TLS connection whose TCP stream had failed as closed, so a
 * receive started after the failure waited for ever on the stopped TCP
 * aio (scripts/patches/nng-1.5.2-tls-conn-closed.patch); tcp:// and
 * ipc:// are checked alike. With the patched nng, the descriptors the
 * process holds must come back to what they were before the clients. */

static int slow_echo(void *arg, const uint8_t *req, size_t len, uint8_t **reply,
                     size_t *reply_len)
{
    usleep(20000);
    return echo(arg, req, len, reply, reply_len);
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        return -1;
    }
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n;
}

/* ---- the cap on clients (max_clients) -------------------------------
 * Past it, a client is disconnected as soon as its handshake is done and
 * counted as refused; its dialer tries again and gets in once another
 * client has gone. The clients are in this process: each is idle when a
 * socket closes. */

/* One echo round trip on s within ms; 0 on success. */
static int roundtrip(nng_socket s, int ms)
{
    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, ms);
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, ms);
    char buf[8] = "ping";
    void *r = NULL;
    size_t rl = 0;
    if (nng_send(s, buf, sizeof(buf), 0) != 0 ||
        nng_recv(s, &r, &rl, NNG_FLAG_ALLOC) != 0) {
        return -1;
    }
    int ok = rl == sizeof(buf) && memcmp(r, buf, rl) == 0;
    nng_free(r, rl);
    return ok ? 0 : -1;
}

static void test_max_clients(void)
{
    char path[64], url[80];
    tmp_path(path, sizeof(path), "cap.ipc");
    snprintf(url, sizeof(url), "ipc://%s", path);
    sc_server_config cfg = {.listen = {url},
                            .nlisten = 1,
                            .threads = 1,
                            .max_clients = 2,
                            .handler = echo};
    sc_server *srv = NULL;
    CHECK(sc_server_open(&cfg, &srv) == SC_OK);
    if (srv == NULL) {
        return;
    }
    nng_socket c[3];
    for (int i = 0; i < 3; i++) {
        CHECK(nng_req0_open(&c[i]) == 0);
        nng_socket_set_ms(c[i], NNG_OPT_RECONNMINT, 20);
        nng_socket_set_ms(c[i], NNG_OPT_RECONNMAXT, 50);
        if (i < 2) {
            CHECK(nng_dial(c[i], url, NULL, 0) == 0);
            CHECK(roundtrip(c[i], 2000) == 0);
        } else {
            CHECK(nng_dial(c[i], url, NULL, NNG_FLAG_NONBLOCK) == 0);
        }
    }
    uint64_t connected = 0, refused = 0;
    for (int t = 0; t < 100 && refused == 0; t++) {
        usleep(20000);
        sc_server_clients(srv, &connected, &refused);
    }
    int third = roundtrip(c[2], 300);
    int first = roundtrip(c[0], 2000);
    sc_server_clients(srv, &connected, &refused);
    fprintf(stderr,
            "dispatch: cap of 2 clients: the third %s, %llu refusals, %llu "
            "connected\n",
            third == 0 ? "served" : "not served", (unsigned long long)refused,
            (unsigned long long)connected);
    CHECK(third != 0);
    CHECK(first == 0);
    CHECK(refused >= 1);
    CHECK(connected <= 3); /* a refused one counts until it is gone */
    /* One goes: the third gets in on its dialer's next try. */
    nng_close(c[1]);
    CHECK(roundtrip(c[2], 3000) == 0);
    CHECK(roundtrip(c[0], 2000) == 0);
    /* A refused try of the third's may still be on its way out. */
    sc_server_clients(srv, &connected, &refused);
    for (int t = 0; t < 100 && connected != 2; t++) {
        usleep(20000);
        sc_server_clients(srv, &connected, &refused);
    }
    CHECK_EQ_INT(connected, 2);
    nng_close(c[0]);
    nng_close(c[2]);
    for (int t = 0; t < 100 && connected != 0; t++) {
        usleep(20000);
        sc_server_clients(srv, &connected, &refused);
    }
    CHECK_EQ_INT(connected, 0);
    sc_server_close(srv);
}

/* url: where to listen; cert: the PEM file for tls+tcp://, else NULL. */
static void test_peers_leave(const char *self, const char *url,
                             const char *cert)
{
    sc_server_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.listen[0] = url;
    cfg.nlisten = 1;
    cfg.tls_cert = cert;
    cfg.threads = 1;
    cfg.queue = 1;
    cfg.handler = slow_echo;
    sc_server *srv = NULL;
    CHECK(sc_server_open(&cfg, &srv) == SC_OK);
    if (srv == NULL) {
        return;
    }
    int base = open_fds();
    int left = 0;
    for (int round = 0; round < 8; round++) {
        pid_t child = fork();
        if (child == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            execl(self, self, "--hammer", url, (char *)NULL);
            _exit(127);
        }
        CHECK(child > 0);
        if (child <= 0) {
            break;
        }
        uint64_t served0, served, dropped;
        sc_server_counts(srv, &served0, &dropped);
        served = served0;
        for (int w = 0; w < 10000 && served < served0 + 10; w++) {
            usleep(1000);
            sc_server_counts(srv, &served, &dropped);
        }
        CHECK(served >= served0 + 10); /* the clients were served */
        usleep((useconds_t)(round * 7000));
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        /* The worker drains the queue (6 requests at most, 20 ms each)
         * and the pipes of the dead clients go. */
        int now = -1;
        for (int w = 0; w < 100 && (now = open_fds()) > base; w++) {
            usleep(50000);
        }
        if (now > base) {
            left = now - base;
            fprintf(stderr,
                    "dispatch: %s round %d: %d descriptors of dead "
                    "clients left open\n",
                    url, round, left);
            break;
        }
    }
#ifdef SC_NNG_PATCHED
    CHECK(left == 0);
#endif
    sc_server_close(srv);
}

/* ---- keys replaced while serving (SIGHUP) --------------------------- */

static int released[4];

static void release_cb(void *ctx)
{
    released[(int *)ctx - released]++;
}

static sc_key key_of(const char *secret, bool admin)
{
    sc_key k;
    memset(&k, 0, sizeof(k));
    k.len = (uint32_t)strlen(secret);
    memcpy(k.secret, secret, k.len);
    snprintf(k.name, sizeof(k.name), "k%.8s", secret);
    k.admin = admin;
    return k;
}

/* Each set of keys is released once, when replaced (no request holds it
 * here) or at close; the keys in force answer at once. */
static void test_replace_keys(void)
{
    sc_cache *c;
    CHECK(sc_cache_open(NULL, &c) == SC_OK);
    sc_dispatch *d;
    CHECK(sc_dispatch_open(c, &d) == SC_OK);
    const char *A = "aaaaaaaaaaaaaaaaaaaa", *B = "bbbbbbbbbbbbbbbbbbbb",
               *C = "cccccccccccccccccccc";
    sc_key ka = key_of(A, true), kb = key_of(B, true), kc = key_of(C, true);
    CHECK(sc_dispatch_check_admin(d, NULL, 0) == SC_ACCESS_OK); /* open */
    CHECK(sc_dispatch_set_keys(d, &ka, 1) == SC_OK);
    CHECK(sc_dispatch_check_admin(d, A, 20) == SC_ACCESS_OK);
    CHECK(sc_dispatch_check_admin(d, B, 20) == SC_ACCESS_UNAUTHORIZED);
    CHECK(sc_dispatch_replace_keys(d, &kb, 1, release_cb, &released[0]) ==
          SC_OK);
    CHECK(sc_dispatch_check_admin(d, A, 20) == SC_ACCESS_UNAUTHORIZED);
    CHECK(sc_dispatch_check_key(d, B, 20, "faq", true) == SC_ACCESS_OK);
    CHECK_EQ_INT(released[0], 0);
    CHECK(sc_dispatch_replace_keys(d, &kc, 1, release_cb, &released[1]) ==
          SC_OK);
    CHECK_EQ_INT(released[0], 1);
    CHECK(sc_dispatch_check_admin(d, B, 20) == SC_ACCESS_UNAUTHORIZED);
    CHECK(sc_dispatch_check_admin(d, C, 20) == SC_ACCESS_OK);
    /* No keys: open again; the empty set is released at once. */
    CHECK(sc_dispatch_replace_keys(d, NULL, 0, release_cb, &released[2]) ==
          SC_OK);
    CHECK_EQ_INT(released[1], 1);
    CHECK_EQ_INT(released[2], 1);
    CHECK(sc_dispatch_check_admin(d, NULL, 0) == SC_ACCESS_OK);
    CHECK(sc_dispatch_replace_keys(d, &kb, 1, release_cb, &released[3]) ==
          SC_OK);
    CHECK(sc_dispatch_check_admin(d, NULL, 0) == SC_ACCESS_UNAUTHORIZED);
    sc_dispatch_close(d);
    CHECK_EQ_INT(released[3], 1);
    CHECK_EQ_INT(released[0] + released[1] + released[2], 3);
    sc_cache_close(c);
}

/* The reply's "id" and "ok": 1 with *id when it has an id, 0 when not,
 * -1 when the reply is not a map with a bool ok. */
static int reply_id(const uint8_t *rep, size_t n, uint64_t *id, bool *ok)
{
    mp_reader r;
    mp_reader_init(&r, rep, n);
    uint32_t nk;
    int has = 0, has_ok = 0;
    if (mp_read_map(&r, &nk) != 0) {
        return -1;
    }
    for (uint32_t i = 0; i < nk; i++) {
        const char *k;
        uint32_t kn;
        if (mp_read_str(&r, &k, &kn) != 0) {
            return -1;
        }
        if (kn == 2 && memcmp(k, "id", 2) == 0) {
            has = mp_read_uint(&r, id) == 0 ? 1 : -1;
        } else if (kn == 2 && memcmp(k, "ok", 2) == 0) {
            has_ok = mp_read_bool(&r, ok) == 0;
        } else if (mp_skip(&r) != 0) {
            return -1;
        }
    }
    return has_ok && has >= 0 ? has : -1;
}

/* Sends the request in sb (destroyed) to d, checking that it is answered;
 * reply_id of the answer. */
static int send_for_id(sc_dispatch *d, msgpack_sbuffer *sb, uint64_t *id,
                       bool *ok)
{
    uint8_t *rep = NULL;
    size_t rl = 0;
    CHECK(sc_dispatch_handle(d, (const uint8_t *)sb->data, sb->size, &rep,
                             &rl) == 0);
    int has = reply_id(rep, rl, id, ok);
    free(rep);
    msgpack_sbuffer_destroy(sb);
    return has;
}

/* A field nobody reads may hold a value nested 16 levels deep, not 17
 * (docs/PROTOCOL.md section 4), alike in a request and in a batch item;
 * a refused request, for the depth or for a field of the wrong type after
 * such items, still has its id echoed. */
static void test_nesting(void)
{
    sc_cache *c;
    CHECK(sc_cache_open(NULL, &c) == SC_OK);
    sc_dispatch *d;
    CHECK(sc_dispatch_open(c, &d) == SC_OK);
    for (int batch = 0; batch < 2; batch++) {
        for (int levels = 16; levels <= 17; levels++) {
            for (int bad = 0; bad < 2; bad++) {
                msgpack_sbuffer sb;
                msgpack_packer pk;
                begin(&sb, &pk, batch ? "lookup_batch" : "lookup",
                      (batch ? 3 : 4) + (size_t)bad, 0, 0);
                mp_put_key(&pk, "ns");
                mp_put_str(&pk, "a");
                if (batch) {
                    mp_put_key(&pk, "items");
                    msgpack_pack_array(&pk, 1);
                    msgpack_pack_map(&pk, 2);
                }
                mp_put_key(&pk, "text");
                mp_put_str(&pk, "hi");
                mp_put_key(&pk, "x");
                for (int i = 0; i < levels; i++) {
                    msgpack_pack_array(&pk, 1);
                }
                msgpack_pack_nil(&pk);
                if (bad) {
                    mp_put_key(&pk, "scope");
                    msgpack_pack_uint32(&pk, 5); /* not a string */
                }
                mp_put_key(&pk, "id");
                msgpack_pack_uint64(&pk, 9);
                uint64_t id = 0;
                bool ok = true;
                int has = send_for_id(d, &sb, &id, &ok);
                /* Refused at 17, with the id after it echoed all the
                 * same. */
                CHECK(has == 1 && id == 9);
                CHECK(ok == (levels == 16 && !bad));
            }
        }
    }
    sc_dispatch_close(d);
    sc_cache_close(c);
}

/* A request refused for a bad field still gets its id back, wherever the
 * id is in the map; an id that is not a uint is not echoed (as 0 or
 * otherwise). */
static void test_error_ids(void)
{
    sc_cache *c;
    CHECK(sc_cache_open(NULL, &c) == SC_OK);
    sc_dispatch *d;
    CHECK(sc_dispatch_open(c, &d) == SC_OK);
    for (int form = 0; form < 3; form++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        begin(&sb, &pk, "lookup", 3, 0, 0);
        mp_put_key(&pk, "ns");
        mp_put_str(&pk, "a");
        mp_put_key(&pk, "text");
        if (form == 2) {
            mp_put_str(&pk, "fine");
        } else {
            msgpack_pack_uint32(&pk, 5); /* not a string */
        }
        mp_put_key(&pk, "id");
        if (form == 0) {
            msgpack_pack_uint64(&pk, 7);
        } else {
            mp_put_str(&pk, "x");
        }
        uint64_t id = 0;
        bool ok = true;
        int has = send_for_id(d, &sb, &id, &ok);
        if (form == 0) {
            CHECK(has == 1 && id == 7 && !ok); /* after the bad text */
        } else {
            CHECK(has == 0 && !ok); /* "x" is no id */
        }
    }
    /* A repeated id: the last one counts, as for every key. */
    for (int form = 0; form < 2; form++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        begin(&sb, &pk, "ping", 2, 0, 0);
        mp_put_key(&pk, "id");
        if (form == 0) {
            msgpack_pack_uint64(&pk, 5);
        } else {
            mp_put_str(&pk, "x");
        }
        mp_put_key(&pk, "id");
        if (form == 0) {
            mp_put_str(&pk, "x");
        } else {
            msgpack_pack_uint64(&pk, 5);
        }
        uint64_t id = 0;
        bool ok = true;
        int has = send_for_id(d, &sb, &id, &ok);
        if (form == 0) {
            CHECK(has == 0 && !ok); /* 5, then "x": no id */
        } else {
            CHECK(has == 1 && id == 5); /* "x", then 5 */
        }
    }
    /* A namespace TTL under a millisecond is 1 ms, not 0 ("never"). */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    begin(&sb, &pk, "ns_create", 2, 0, 0);
    mp_put_key(&pk, "ns");
    mp_put_str(&pk, "short");
    mp_put_key(&pk, "ttl");
    msgpack_pack_double(&pk, 0.0004);
    uint8_t *rep = NULL;
    size_t rl = 0;
    CHECK(sc_dispatch_handle(d, (const uint8_t *)sb.data, sb.size, &rep, &rl) ==
          0);
    free(rep);
    msgpack_sbuffer_destroy(&sb);
    sc_ns_config nc;
    CHECK(sc_cache_ns_get_config(c, "short", &nc) == SC_OK && nc.ttl_ms == 1);
    sc_dispatch_close(d);
    sc_cache_close(c);
}

/* Sends r (freed) to d; whether the reply is ok. (No CHECK: threads call
 * it.) */
static int send_ok(sc_dispatch *d, req r)
{
    uint8_t *rep = NULL;
    size_t rl = 0;
    int ok = sc_dispatch_handle(d, r.data, r.len, &rep, &rl) == 0 &&
             rep != NULL && memmem(rep, rl, "\xa2ok\xc3", 4) != NULL;
    free(rep);
    free(r.data);
    return ok;
}

/* An ns_configure of ns setting one uint field. */
static req configure_req(const char *ns, const char *field, uint64_t v)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    begin(&sb, &pk, "ns_configure", 2, 0, 0);
    mp_put_key(&pk, "ns");
    mp_put_str(&pk, ns);
    mp_put_key(&pk, field);
    msgpack_pack_uint64(&pk, v);
    return finish(&sb);
}

typedef struct configurer {
    sc_dispatch *d;
    sc_cache *c;
    const char *field; /* max_entries or max_response_bytes */
    int rounds;
    int lost; /* own value found lower than last written: overwritten */
    pthread_barrier_t *start;
} configurer;

static void *configurer_main(void *arg)
{
    configurer *cf = arg;
    bool entries = strcmp(cf->field, "max_entries") == 0;
    pthread_barrier_wait(cf->start);
    for (int i = 1; i <= cf->rounds; i++) {
        uint64_t v = (uint64_t)i + (entries ? 0 : 1000);
        if (!send_ok(cf->d, configure_req("cfg", cf->field, v))) {
            cf->lost = -1;
            return NULL;
        }
        sc_ns_config nc;
        if (sc_cache_ns_get_config(cf->c, "cfg", &nc) != SC_OK) {
            cf->lost = -1;
            return NULL;
        }
        /* Only this thread writes its field, each time higher. */
        cf->lost += (entries ? nc.max_entries : nc.max_response_bytes) < v;
    }
    return NULL;
}

/* Two ns_configure requests of one namespace at once, each of its own
 * field: both changes take. (The dispatcher read the whole config, set
 * the request's fields and wrote it all back, so one could put back the
 * other's field as it had read it: a change answered ok, lost, and
 * journaled so.) A race, so a stress test: each thread raises its field
 * ROUNDS times and reads it back after each ok. */
#define ROUNDS 200000
static void test_configure_race(void)
{
    sc_cache *c;
    CHECK(sc_cache_open(NULL, &c) == SC_OK);
    sc_dispatch *d;
    CHECK(sc_dispatch_open(c, &d) == SC_OK);
    CHECK(sc_cache_ns_create(c, "cfg", NULL) == SC_OK);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    configurer cf[2] = {{d, c, "max_entries", ROUNDS, 0, &start},
                        {d, c, "max_response_bytes", ROUNDS, 0, &start}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        CHECK(pthread_create(&t[i], NULL, configurer_main, &cf[i]) == 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
    }
    pthread_barrier_destroy(&start);
    CHECK_EQ_INT(cf[0].lost, 0);
    CHECK_EQ_INT(cf[1].lost, 0);
    sc_ns_config nc;
    CHECK(sc_cache_ns_get_config(c, "cfg", &nc) == SC_OK);
    CHECK(nc.max_entries == ROUNDS && nc.max_response_bytes == ROUNDS + 1000);
    /* A field that may not change is refused as before, the namespace as
     * it was; a missing namespace is no_namespace. */
    CHECK(!send_ok(d, configure_req("cfg", "dim", 4)));
    CHECK(!send_ok(d, configure_req("cfg", "max_response_bytes", 0)));
    CHECK(!send_ok(d, configure_req("nope", "max_entries", 3)));
    CHECK(sc_cache_ns_get_config(c, "cfg", &nc) == SC_OK);
    CHECK(nc.max_entries == ROUNDS && nc.max_response_bytes == ROUNDS + 1000);
    sc_dispatch_close(d);
    sc_cache_close(c);
}

/* The admin's ns_configure that embed_configuring sends from inside an
 * insert's embedding (after the insert made its namespace, before the
 * insert fails): armed while hook_d is set. */
static sc_dispatch *hook_d;
static int hook_ok;

static sc_err embed_configuring(void *arg, const char *text, size_t len,
                                float *out)
{
    (void)arg;
    (void)text;
    (void)len;
    for (int j = 0; j < 4; j++) {
        out[j] = j == 0 ? 1.0f : 0.0f;
    }
    if (hook_d != NULL) {
        hook_ok = send_ok(hook_d, configure_req("fresh", "max_entries", 5));
    }
    return SC_OK;
}

/* An insert into a new namespace, too big for its default response cap:
 * the namespace it made goes again, unless an ns_configure of it was
 * answered ok meanwhile (that one is kept, with its setting). */
static void test_failed_insert_keeps_configured(void)
{
    sc_cache_embedder em = {.model = "fake@1",
                            .dim = 4,
                            .threshold = 0.9f,
                            .embed = embed_configuring};
    sc_cache_config cc;
    sc_cache_config_init(&cc);
    cc.embedder = &em;
    sc_cache *c;
    CHECK(sc_cache_open(&cc, &c) == SC_OK);
    sc_dispatch *d;
    CHECK(sc_dispatch_open(c, &d) == SC_OK);
    size_t big = ((size_t)1 << 20) + 1; /* over the default 1 MiB cap */
    char *resp = calloc(1, big);
    CHECK(resp != NULL);
    for (int round = 0; round < 2; round++) {
        const char *ns = round == 0 ? "lone" : "fresh";
        hook_d = round == 0 ? NULL : d;
        hook_ok = 0;
        msgpack_sbuffer sb;
        msgpack_packer pk;
        begin(&sb, &pk, "insert", 3, 0, 0);
        mp_put_key(&pk, "ns");
        mp_put_str(&pk, ns);
        mp_put_key(&pk, "text");
        mp_put_str(&pk, "what is the capital of france");
        mp_put_key(&pk, "response");
        mp_put_bin(&pk, resp, big);
        uint8_t *rep = NULL;
        size_t rl = 0;
        CHECK(sc_dispatch_handle(d, (const uint8_t *)sb.data, sb.size, &rep,
                                 &rl) == 0);
        CHECK(rep != NULL && memmem(rep, rl, "too_big", 7) != NULL);
        free(rep);
        msgpack_sbuffer_destroy(&sb);
        hook_d = NULL;
        sc_ns_config nc;
        if (round == 0) {
            /* Nobody touched it: taken back. */
            CHECK(sc_cache_ns_get_config(c, ns, &nc) == SC_ENONS);
        } else {
            CHECK(hook_ok);
            CHECK(sc_cache_ns_get_config(c, ns, &nc) == SC_OK &&
                  nc.max_entries == 5);
        }
    }
    free(resp);
    sc_dispatch_close(d);
    sc_cache_close(c);
}

/* ---- a client that does not read its replies ----------------------
 * nng writes a reply with no time limit: a client that sends a request
 * and reads nothing held its reply, and up to 63 more queued behind it,
 * for as long as it stayed connected. The patched nng closes it once a
 * reply has not been written within reply_timeout_ms, and counts it. */

#define BIG_REPLY ((size_t)32 << 20)

static int big_reply(void *arg, const uint8_t *req, size_t len, uint8_t **reply,
                     size_t *reply_len)
{
    (void)arg;
    (void)req;
    (void)len;
    *reply = calloc(1, BIG_REPLY);
    *reply_len = BIG_REPLY;
    return *reply == NULL;
}

/* A raw SP REQ peer connected to the Unix socket at path, its handshake
 * done: the caller writes frames (type 1, length, request id, body). */
static int raw_req_peer(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    const uint8_t hs[8] = {0, 'S', 'P', 0, 0, 0x30, 0, 0};
    uint8_t got[8];
    CHECK(write(fd, hs, sizeof(hs)) == (ssize_t)sizeof(hs));
    CHECK(read(fd, got, sizeof(got)) == (ssize_t)sizeof(got));
    return fd;
}

static void test_unread_reply(void)
{
    char path[64], url[80];
    tmp_path(path, sizeof(path), "unread.ipc");
    snprintf(url, sizeof(url), "ipc://%s", path);
    sc_server_config cfg = {.listen = {url},
                            .nlisten = 1,
                            .threads = 1,
                            .reply_timeout_ms = 300,
                            .handler = big_reply};
    sc_server *srv = NULL;
    CHECK(sc_server_open(&cfg, &srv) == SC_OK);
    if (srv == NULL) {
        return;
    }
    /* A raw SP peer over the Unix socket: the handshake, then one request
     * (type 1, its length, request id 1), and nothing read after. */
    int fd = raw_req_peer(path);
    const uint8_t req[] = {1,    0, 0, 0, 0,   0,   0,   0,  8,
                           0x80, 0, 0, 1, 'p', 'i', 'n', 'g'};
    CHECK(write(fd, req, sizeof(req)) == (ssize_t)sizeof(req));
    uint64_t over = 0, stalled = 0;
    for (int t = 0; t < 150 && stalled == 0; t++) {
        usleep(20000);
        sc_server_slow_clients(srv, &over, &stalled);
    }
    uint64_t connected = 1, refused = 0;
    for (int t = 0; t < 100 && connected != 0; t++) {
        usleep(20000);
        sc_server_clients(srv, &connected, &refused);
    }
    fprintf(stderr,
            "dispatch: a client that reads none of its 32 MiB reply: %llu "
            "closed for the reply time-out, %llu connected\n",
            (unsigned long long)stalled, (unsigned long long)connected);
#ifdef SC_NNG_PATCHED
    CHECK_EQ_INT(stalled, 1);
    CHECK_EQ_INT(over, 0);
    CHECK_EQ_INT(connected, 0);
#endif
    close(fd);
    sc_server_close(srv);
}

/* ---- hits whose reply is not sent -------------------------------------
 * A lookup counts its hit, and the dollars it avoided, in the ledger as
 * the cache serves it; a reply the server then drops (nng_msg_append or
 * nng_sendmsg failed) never reaches the client, so the ledger takes those
 * dollars back as a false hit's, under the lookup's tags. */

static const char *const undo_prices =
    "{\"date\": \"2026-01-01\", \"cpu_hour\": 0, \"models\": {\"m\": "
    "{\"input\": 2.0, \"output\": 8.0}}}";

/* A cache with a ledger of undo_prices, and its dispatcher. */
typedef struct priced {
    sc_prices *pz;
    sc_ledger *lg;
    sc_cache *cache;
    sc_dispatch *d;
} priced;

static void priced_open(priced *p)
{
    char msg[256];
    memset(p, 0, sizeof(*p));
    CHECK(sc_prices_parse(undo_prices, strlen(undo_prices), "t", &p->pz, msg,
                          sizeof(msg)) == SC_OK &&
          sc_ledger_open(p->pz, &p->lg) == SC_OK);
    sc_cache_config cc;
    sc_cache_config_init(&cc);
    cc.ledger = p->lg;
    CHECK(sc_cache_open(&cc, &p->cache) == SC_OK &&
          sc_dispatch_open(p->cache, &p->d) == SC_OK);
}

static void priced_close(priced *p)
{
    sc_dispatch_close(p->d);
    sc_cache_close(p->cache);
    sc_ledger_close(p->lg);
    sc_prices_free(p->pz);
}

/* Entry i (as insert_req) of model m in ns, its response resp[0..rn),
 * tokens in and out given (both 0: not given, so estimated from the
 * response's bytes). */
static req priced_insert_full(const char *ns, unsigned i, const char *resp,
                              size_t rn, uint64_t in, uint64_t out)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    bool given = in != 0 || out != 0;
    begin(&sb, &pk, "insert", given ? 6 : 4, 0, 0);
    mp_put_key(&pk, "ns");
    mp_put_str(&pk, ns);
    float v[DIM];
    vec_of(i, v);
    mp_put_key(&pk, "vec");
    mp_put_vec(&pk, v, DIM);
    mp_put_key(&pk, "response");
    mp_put_bin(&pk, resp, rn);
    mp_put_key(&pk, "model");
    mp_put_str(&pk, "m");
    if (given) {
        mp_put_key(&pk, "input_tokens");
        msgpack_pack_uint64(&pk, in);
        mp_put_key(&pk, "output_tokens");
        msgpack_pack_uint64(&pk, out);
    }
    return finish(&sb);
}

/* Entry i (as insert_req) of model m with 1000 tokens in and out, its
 * response resp[0..rn). */
static req priced_insert_of(const char *ns, unsigned i, const char *resp,
                            size_t rn)
{
    return priced_insert_full(ns, i, resp, rn, 1000, 1000);
}

static req priced_insert(const char *ns, unsigned i)
{
    return priced_insert_of(ns, i, "an answer", 9);
}

/* A lookup_batch of entries 0 and 1 of ns, the first item tagged f1. */
static req batch_of_two(const char *ns)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    begin(&sb, &pk, "lookup_batch", 2, 0, 0);
    mp_put_key(&pk, "ns");
    mp_put_str(&pk, ns);
    mp_put_key(&pk, "items");
    msgpack_pack_array(&pk, 2);
    for (unsigned i = 0; i < 2; i++) {
        float v[DIM];
        vec_of(i, v);
        v[0] += 0.01f;
        msgpack_pack_map(&pk, i == 0 ? 2 : 1);
        mp_put_key(&pk, "vec");
        mp_put_vec(&pk, v, DIM);
        if (i == 0) {
            mp_put_key(&pk, "feature");
            mp_put_str(&pk, "f1");
        }
    }
    return finish(&sb);
}

static void f1_row(void *arg, const char *key, const sc_ledger_counts *c)
{
    if (strcmp(key, "f1") == 0) {
        *(sc_ledger_counts *)arg = *c;
    }
}

static bool send_fails_now(void *arg)
{
    return __atomic_load_n((bool *)arg, __ATOMIC_ACQUIRE);
}

/* A server of d, one worker, on a fresh ipc socket named name, and a
 * client *s dialed to it whose receives give up after recv_ms. Returns
 * the server (NULL when it did not open). */
static sc_server *dispatch_served(sc_dispatch *d, const char *name,
                                  nng_socket *s, int recv_ms)
{
    char path[64], url[80];
    tmp_path(path, sizeof(path), name);
    snprintf(url, sizeof(url), "ipc://%s", path);
    sc_server_config cfg = {.listen = {url},
                            .nlisten = 1,
                            .threads = 1,
                            .handler = sc_dispatch_handle,
                            .handler_many = sc_dispatch_handle_many,
                            .handler_arg = d};
    sc_server *srv = NULL;
    CHECK(sc_server_open(&cfg, &srv) == SC_OK);
    CHECK(nng_req0_open(s) == 0 && nng_dial(*s, url, NULL, 0) == 0);
    nng_socket_set_ms(*s, NNG_OPT_RECVTIMEO, recv_ms);
    return srv;
}

static void test_undelivered_hits(void)
{
    priced pr;
    priced_open(&pr);
    sc_dispatch *d = pr.d;
    sc_ledger *lg = pr.lg;
    for (unsigned i = 0; i < 2; i++) {
        req r = priced_insert("u", i);
        uint8_t *rep = NULL;
        size_t rl = 0;
        CHECK(sc_dispatch_handle(d, r.data, r.len, &rep, &rl) == 0);
        free(rep);
        free(r.data);
    }
    const double usd = (1000 * 2.0 + 1000 * 8.0) / 1e6;

    /* The batch handler: two plain lookups (one index scan) and a
     * lookup_batch of two hits; the first and the last replies dropped. */
    req rs[3] = {lookup_req("u", NULL, 0, 0, 1, 1, DIM, -9, NULL),
                 lookup_req("u", NULL, 1, 0, 1, 2, DIM, -9, NULL),
                 batch_of_two("u")};
    sc_server_msg msgs[3];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < 3; i++) {
        msgs[i].req = rs[i].data;
        msgs[i].len = rs[i].len;
    }
    sc_dispatch_handle_many(d, msgs, 3);
    for (int i = 0; i < 3; i++) {
        CHECK(msgs[i].rc == 0 && msgs[i].undo != NULL);
        if (msgs[i].undo != NULL) {
            msgs[i].undo->done(msgs[i].undo, i == 1);
        }
        free(msgs[i].reply);
        free(rs[i].data);
    }
    sc_ledger_counts t, f;
    CHECK(sc_ledger_sum(lg, "u", SC_LEDGER_BY_NS, &t, NULL, NULL) == SC_OK);
    CHECK_EQ_INT(t.semantic_hits, 4);
    CHECK_EQ_INT(t.false_hits, 3);
    CHECK(fabs(t.usd_avoided - 4 * usd) < 1e-12 &&
          fabs(t.usd_false_hits - 3 * usd) < 1e-12);
    /* Under the lookup's tags: the batch's first item is f1's. */
    memset(&f, 0, sizeof(f));
    CHECK(sc_ledger_sum(lg, "u", SC_LEDGER_BY_FEATURE, &t, f1_row, &f) ==
          SC_OK);
    CHECK(f.semantic_hits == 1 && f.false_hits == 1 &&
          fabs(f.usd_false_hits - usd) < 1e-12);

    /* Through the server: a reply it cannot hand to nng. */
    nng_socket s = NNG_SOCKET_INITIALIZER;
    sc_server *srv = dispatch_served(d, "undo.ipc", &s, 300);
    bool fail = true;
    sc_server_set_send_hook(send_fails_now, &fail);
    for (int round = 0; round < 2 && srv != NULL; round++) {
        req r = round == 0 ? lookup_req("u", NULL, 0, 0, 0, 0, DIM, -9, NULL)
                           : batch_of_two("u");
        void *rep = NULL;
        size_t rl = 0;
        CHECK(nng_send(s, r.data, r.len, 0) == 0);
        CHECK_EQ_INT(nng_recv(s, &rep, &rl, NNG_FLAG_ALLOC), NNG_ETIMEDOUT);
        free(r.data);
    }
    uint64_t served = 0, dropped = 0;
    for (int i = 0; i < 100 && srv != NULL && dropped < 2; i++) {
        sc_server_counts(srv, &served, &dropped);
        usleep(10000);
    }
    CHECK_EQ_INT(dropped, 2);
    CHECK(sc_ledger_sum(lg, "u", SC_LEDGER_BY_NS, &t, NULL, NULL) == SC_OK);
    CHECK_EQ_INT(t.semantic_hits, 7);
    CHECK_EQ_INT(t.false_hits, 6);
    CHECK(fabs(t.usd_false_hits - 6 * usd) < 1e-12);
    /* Sent again: served, and its hit stays counted. */
    __atomic_store_n(&fail, false, __ATOMIC_RELEASE);
    req r = lookup_req("u", NULL, 1, 0, 0, 0, DIM, -9, NULL);
    void *rep = NULL;
    size_t rl = 0;
    CHECK(nng_send(s, r.data, r.len, 0) == 0);
    CHECK(nng_recv(s, &rep, &rl, NNG_FLAG_ALLOC) == 0);
    nng_free(rep, rl);
    free(r.data);
    CHECK(sc_ledger_sum(lg, "u", SC_LEDGER_BY_NS, &t, NULL, NULL) == SC_OK);
    CHECK_EQ_INT(t.semantic_hits, 8);
    CHECK_EQ_INT(t.false_hits, 6);
    sc_server_set_send_hook(NULL, NULL);
    nng_close(s);
    sc_server_close(srv);
    priced_close(&pr);
}

/* Entry i of model m in ns, tokens in and out given (both 0: not given,
 * so estimated from the bytes: 0 in, 3 out for the 9-byte answer). */
static req priced_insert_tokens(const char *ns, unsigned i, uint64_t in,
                                uint64_t out)
{
    return priced_insert_full(ns, i, "an answer", 9, in, out);
}

/* A lookup_batch of n items of ns (no tags) hitting entries a and b by
 * turns; a == b: n hits of one entry under the same tags. */
static req batch_by_turns(const char *ns, unsigned n, unsigned a, unsigned b)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    begin(&sb, &pk, "lookup_batch", 2, 0, 0);
    mp_put_key(&pk, "ns");
    mp_put_str(&pk, ns);
    mp_put_key(&pk, "items");
    msgpack_pack_array(&pk, n);
    for (unsigned i = 0; i < n; i++) {
        float v[DIM];
        vec_of(i % 2 == 0 ? a : b, v);
        v[0] += 0.01f;
        msgpack_pack_map(&pk, 1);
        mp_put_key(&pk, "vec");
        mp_put_vec(&pk, v, DIM);
    }
    return finish(&sb);
}

/* Handles batch r on pr, then drops its reply unsent; returns what its
 * undo held (0: none). */
static size_t batch_dropped(priced *pr, req r)
{
    sc_server_msg m;
    memset(&m, 0, sizeof(m));
    m.req = r.data;
    m.len = r.len;
    sc_dispatch_handle_many(pr->d, &m, 1);
    CHECK(m.rc == 0 && m.undo != NULL);
    size_t held = 0;
    if (m.undo != NULL) {
        held = m.undo->held;
        m.undo->done(m.undo, false);
    }
    free(m.reply);
    free(r.data);
    return held;
}

static void insert_ok(priced *pr, req in)
{
    uint8_t *rep = NULL;
    size_t rl = 0;
    CHECK(sc_dispatch_handle(pr->d, in.data, in.len, &rep, &rl) == 0);
    free(rep);
    free(in.data);
}

/* Hits of entries whose tags are the same but whose tokens differ are not
 * one run: each is taken back with its own tokens. Two entries of ns "t"
 * (1000 in and out; 10 in, 20 out) by turns, 64 hits dropped: the false
 * hits' dollars are the hits' avoided dollars, 32 of each (with tokens
 * left out of the merge rule, 64 of the first entry's). Two of ns "e"
 * alike but for tokens_estimated (0 in, 3 out estimated from the answer's
 * bytes; the same given): the ledger prices both the same, but they are
 * not one record either, so the batch holds more than a batch of one. */
static void test_undo_tokens(void)
{
    priced pr;
    priced_open(&pr);
    insert_ok(&pr, priced_insert_tokens("t", 0, 1000, 1000));
    insert_ok(&pr, priced_insert_tokens("t", 1, 10, 20));
    batch_dropped(&pr, batch_by_turns("t", 64, 0, 1));
    sc_ledger_counts t;
    CHECK(sc_ledger_sum(pr.lg, "t", SC_LEDGER_BY_NS, &t, NULL, NULL) == SC_OK);
    const double usd0 = (1000 * 2.0 + 1000 * 8.0) / 1e6;
    const double usd1 = (10 * 2.0 + 20 * 8.0) / 1e6;
    CHECK_EQ_INT(t.semantic_hits, 64);
    CHECK_EQ_INT(t.false_hits, 64);
    CHECK_EQ_INT(t.false_hits_unpriced, 0);
    CHECK(fabs(t.usd_avoided - 32 * (usd0 + usd1)) < 1e-9);
    CHECK(fabs(t.usd_false_hits - 32 * (usd0 + usd1)) < 1e-9);
    if (fabs(t.usd_false_hits - t.usd_avoided) >= 1e-9) {
        fprintf(stderr, "undo_tokens: usd_false_hits %.6f, usd_avoided %.6f\n",
                t.usd_false_hits, t.usd_avoided);
    }

    insert_ok(&pr, priced_insert_tokens("e", 0, 0, 0)); /* estimated */
    insert_ok(&pr, priced_insert_tokens("e", 1, 0, 3)); /* given */
    size_t one = batch_dropped(&pr, batch_by_turns("e", 64, 0, 0));
    size_t two = batch_dropped(&pr, batch_by_turns("e", 64, 0, 1));
    CHECK(sc_ledger_sum(pr.lg, "e", SC_LEDGER_BY_NS, &t, NULL, NULL) == SC_OK);
    const double usd3 = 3 * 8.0 / 1e6;
    CHECK_EQ_INT(t.semantic_hits, 128);
    CHECK_EQ_INT(t.hits_estimated, 64 + 32);
    CHECK_EQ_INT(t.false_hits, 128);
    CHECK(fabs(t.usd_false_hits - 128 * usd3) < 1e-12);
    /* 64 records (an allocation of names each, 16 bytes and more, and a
     * bigger array), against one. */
    CHECK(one > 0 && two > one + 63 * 16);
    if (!(two > one + 63 * 16)) {
        fprintf(stderr, "undo_tokens: held %zu by turns, %zu for one entry\n",
                two, one);
    }
    priced_close(&pr);
}

/* The undo of a reply with many hits alike keeps one record of them, with
 * a count (it kept ~928 bytes a hit, which nng did not count against
 * --reply-queue-max), says what it holds (undo->held, which the server
 * hands to nng to count with the reply), and takes every hit back. */
static void test_undo_compact(void)
{
    priced pr;
    priced_open(&pr);
    insert_ok(&pr, priced_insert("u", 0));
    const double usd = (1000 * 2.0 + 1000 * 8.0) / 1e6;
    for (int round = 0; round < 2; round++) {
        req r = batch_by_turns("u", 256, 0, 0);
        sc_server_msg m;
        memset(&m, 0, sizeof(m));
        m.req = r.data;
        m.len = r.len;
        sc_dispatch_handle_many(pr.d, &m, 1);
        CHECK(m.rc == 0 && m.undo != NULL);
        if (m.undo != NULL) {
            /* One record: well under 1 KiB (was 256 x 928 bytes). */
            CHECK(m.undo->held > 0 && m.undo->held < 1024);
            m.undo->done(m.undo, round == 1);
        }
        free(m.reply);
        free(r.data);
        sc_ledger_counts t;
        CHECK(sc_ledger_sum(pr.lg, "u", SC_LEDGER_BY_NS, &t, NULL, NULL) ==
              SC_OK);
        CHECK_EQ_INT(t.semantic_hits, 256 * (round + 1));
        CHECK_EQ_INT(t.false_hits, 256);
        CHECK(fabs(t.usd_false_hits - 256 * usd) < 1e-9);
    }
    priced_close(&pr);
}

/* ---- a short reply whose own message cannot be allocated ---------------
 * A short reply to a big request goes in a message of its own, to free the
 * request's buffer; when that message cannot be allocated, the reply goes
 * in the request's message (no allocation needed), not nowhere. */

static bool copy_fails_now(void *arg)
{
    __atomic_add_fetch((int *)arg, 1, __ATOMIC_ACQ_REL);
    return true;
}

static void test_reply_copy_oom(void)
{
    sc_dispatch *d = NULL;
    sc_cache *c = NULL;
    CHECK(sc_cache_open(NULL, &c) == SC_OK);
    CHECK(sc_dispatch_open(c, &d) == SC_OK);
    nng_socket s = NNG_SOCKET_INITIALIZER; /* 5 s to reply: a hang guard */
    sc_server *srv = dispatch_served(d, "copyoom.ipc", &s, 5000);
    int asked = 0;
    sc_server_set_copy_hook(copy_fails_now, &asked);
    /* A ping padded to 32 KiB (an ignored key): its reply is short. */
    static char pad[32 << 10];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    begin(&sb, &pk, "ping", 1, 1, 7);
    mp_put_key(&pk, "pad");
    mp_put_bin(&pk, pad, sizeof(pad));
    req r = finish(&sb);
    void *rep = NULL;
    size_t rl = 0;
    CHECK(srv != NULL && nng_send(s, r.data, r.len, 0) == 0);
    CHECK_EQ_INT(nng_recv(s, &rep, &rl, NNG_FLAG_ALLOC), 0);
    CHECK(rep != NULL && rl < 256 && memmem(rep, rl, "\xa2ok\xc3", 4) != NULL);
    nng_free(rep, rl);
    free(r.data);
    CHECK_EQ_INT(__atomic_load_n(&asked, __ATOMIC_ACQUIRE), 1);
    uint64_t served = 0, dropped = 0;
    if (srv != NULL) {
        sc_server_counts(srv, &served, &dropped);
    }
    CHECK_EQ_INT(dropped, 0);
    sc_server_set_copy_hook(NULL, NULL);
    nng_close(s);
    sc_server_close(srv);
    sc_dispatch_close(d);
    sc_cache_close(c);
}

/* ---- replies held for every client together ----------------------------
 * Each client's unread replies are capped (reply_queue_max), but many slow
 * readers together could make the server hold their sum. Past
 * reply_total_max a reply is refused: the request is answered "busy" when
 * that short reply fits, the bytes held stay under the bound, other
 * clients are served, and the hits of refused replies are taken back. */

#define TOTAL_RESP ((size_t)512 << 10)
#define TOTAL_SLOW 8

static void test_reply_total(void)
{
    priced pr;
    priced_open(&pr);
    char *big = calloc(1, TOTAL_RESP);
    req ins = priced_insert_of("t", 0, big, TOTAL_RESP);
    uint8_t *rep0 = NULL;
    size_t rl0 = 0;
    CHECK(sc_dispatch_handle(pr.d, ins.data, ins.len, &rep0, &rl0) == 0);
    free(rep0);
    free(ins.data);
    free(big);
    /* Room for four big replies and some small ones, not a fifth. */
    const size_t max = 4 * (TOTAL_RESP + 1024) + (64 << 10);
    char path[64], url[80];
    tmp_path(path, sizeof(path), "total.ipc");
    snprintf(url, sizeof(url), "ipc://%s", path);
    sc_server_config cfg = {.listen = {url},
                            .nlisten = 1,
                            .threads = 1,
                            .reply_total_max = max,
                            .handler = sc_dispatch_handle,
                            .handler_many = sc_dispatch_handle_many,
                            .handler_busy = sc_dispatch_busy_reply,
                            .handler_arg = pr.d};
    sc_server *srv = NULL;
    CHECK(sc_server_open(&cfg, &srv) == SC_OK);
    if (srv == NULL) {
        priced_close(&pr);
        return;
    }
    /* Slow readers: raw SP peers that send two hitting lookups each and
     * read nothing. */
    int fds[TOTAL_SLOW];
    req lk = lookup_req("t", NULL, 0, 0, 1, 7, DIM, -9, NULL);
    uint8_t frame[4096];
    CHECK(lk.len + 13 <= sizeof(frame));
    frame[0] = 1;
    uint64_t flen = lk.len + 4;
    for (int b = 0; b < 8; b++) {
        frame[1 + b] = (uint8_t)(flen >> (56 - 8 * b));
    }
    memcpy(frame + 13, lk.data, lk.len);
    for (int i = 0; i < TOTAL_SLOW; i++) {
        fds[i] = raw_req_peer(path);
        for (uint32_t k = 0; k < 2; k++) {
            uint32_t rid = 0x80000000u | (uint32_t)(i * 2 + k + 1);
            frame[9] = (uint8_t)(rid >> 24);
            frame[10] = (uint8_t)(rid >> 16);
            frame[11] = (uint8_t)(rid >> 8);
            frame[12] = (uint8_t)rid;
            CHECK(write(fds[i], frame, lk.len + 13) ==
                  (ssize_t)(lk.len + 13));
        }
    }
    free(lk.data);
    uint64_t answered = 0, dropped = 0, held = 0, most = 0;
    for (int t = 0; t < 300 && answered + dropped < 2 * TOTAL_SLOW - 4;
         t++) {
        usleep(10000);
        sc_server_busy(srv, &answered, &dropped, &held);
        most = held > most ? held : most;
    }
    sc_server_busy(srv, &answered, &dropped, &held);
    most = held > most ? held : most;
    fprintf(stderr,
            "dispatch: %d slow readers, 16 replies of 512 KiB: %llu refused "
            "and answered busy, %llu dropped, %llu bytes held (most %llu, "
            "bound %zu)\n",
            TOTAL_SLOW, (unsigned long long)answered,
            (unsigned long long)dropped, (unsigned long long)held,
            (unsigned long long)most, max);
#ifdef SC_NNG_PATCHED
    CHECK_EQ_INT(answered + dropped, 2 * TOTAL_SLOW - 4);
    CHECK(most <= max && held >= 4 * TOTAL_RESP);
    /* Another client: a ping is served; a big lookup is answered busy,
     * its id echoed. */
    nng_socket s = NNG_SOCKET_INITIALIZER;
    CHECK(nng_req0_open(&s) == 0 && nng_dial(s, url, NULL, 0) == 0);
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 2000);
    msgpack_sbuffer psb;
    msgpack_packer ppk;
    begin(&psb, &ppk, "ping", 0, 0, 0);
    req pg = finish(&psb);
    void *rep = NULL;
    size_t rl = 0;
    CHECK(nng_send(s, pg.data, pg.len, 0) == 0);
    CHECK(nng_recv(s, &rep, &rl, NNG_FLAG_ALLOC) == 0);
    CHECK(rep != NULL && memmem(rep, rl, "\xa2ok\xc3", 4) != NULL);
    nng_free(rep, rl);
    free(pg.data);
    lk = lookup_req("t", NULL, 0, 0, 1, 99, DIM, -9, NULL);
    rep = NULL;
    CHECK(nng_send(s, lk.data, lk.len, 0) == 0);
    CHECK(nng_recv(s, &rep, &rl, NNG_FLAG_ALLOC) == 0);
    CHECK(rep != NULL && rl < 512 && memmem(rep, rl, "busy", 4) != NULL &&
          memmem(rep, rl, "\xa2id\x63", 4) != NULL);
    nng_free(rep, rl);
    free(lk.data);
    nng_close(s);
    /* Hits: every lookup's counted, but only the four sent are savings
     * (the worker takes back the last one after its busy reply went). */
    sc_ledger_counts t;
    memset(&t, 0, sizeof(t));
    for (int i = 0; i < 200 && t.false_hits < 2 * TOTAL_SLOW + 1 - 4; i++) {
        CHECK(sc_ledger_sum(pr.lg, "t", SC_LEDGER_BY_NS, &t, NULL, NULL) ==
              SC_OK);
        usleep(10000);
    }
    CHECK_EQ_INT(t.semantic_hits + t.exact_hits, 2 * TOTAL_SLOW + 1);
    CHECK_EQ_INT(t.false_hits, 2 * TOTAL_SLOW + 1 - 4);
    /* Lookups that ran and were answered busy are no errors of the cache's
     * (their refusals are the server's count, above). */
    sc_dispatch_counts k;
    sc_dispatch_get_counts(pr.d, &k);
    CHECK_EQ_INT(k.errors, 0);
    /* A change refused its reply is made all the same: an insert_batch
     * whose reply (24 entries, and 1000 items of the wrong dimension, each
     * with its error) no longer fits is answered busy, and the busy reply
     * says that the request was carried out, not to try it again. */
    sc_cache_stats st0, st1;
    CHECK(sc_cache_stats_get(pr.cache, "t", &st0) == SC_OK);
    msgpack_sbuffer bsb;
    msgpack_packer bpk;
    begin(&bsb, &bpk, "insert_batch", 2, 1, 42);
    mp_put_key(&bpk, "ns");
    mp_put_str(&bpk, "t");
    mp_put_key(&bpk, "items");
    msgpack_pack_array(&bpk, 1024);
    for (unsigned i = 0; i < 1024; i++) {
        float v[DIM];
        vec_of(1000 + i, v);
        msgpack_pack_map(&bpk, 2);
        mp_put_key(&bpk, "vec");
        mp_put_vec(&bpk, v, i < 24 ? DIM : 3);
        mp_put_key(&bpk, "response");
        mp_put_bin(&bpk, "b", 1);
    }
    req bt = finish(&bsb);
    nng_socket s2 = NNG_SOCKET_INITIALIZER;
    CHECK(nng_req0_open(&s2) == 0 && nng_dial(s2, url, NULL, 0) == 0);
    nng_socket_set_ms(s2, NNG_OPT_RECVTIMEO, 2000);
    rep = NULL;
    rl = 0;
    CHECK(nng_send(s2, bt.data, bt.len, 0) == 0);
    CHECK(nng_recv(s2, &rep, &rl, NNG_FLAG_ALLOC) == 0);
    CHECK(rep != NULL && memmem(rep, rl, "busy", 4) != NULL &&
          memmem(rep, rl, "\xa2id\x2a", 4) != NULL);
    CHECK(rep != NULL && memmem(rep, rl, "carried out", 11) != NULL);
    nng_free(rep, rl);
    free(bt.data);
    nng_close(s2);
    CHECK(sc_cache_stats_get(pr.cache, "t", &st1) == SC_OK);
    CHECK_EQ_INT(st1.inserts - st0.inserts, 24);
#endif
    /* The slow readers read every reply, their connections still open: as
     * each reply is written nng takes back what it counted for it, so the
     * count falls to 0 before any pipe closes (a pipe's close takes back
     * what it still counts, which would hide sends that take back less
     * than was added). The loop is a hang guard, not a timing. */
    static uint8_t sink[1 << 16];
    for (int t = 0; t < 1000; t++) {
        for (int i = 0; i < TOTAL_SLOW; i++) {
            while (recv(fds[i], sink, sizeof(sink), MSG_DONTWAIT) > 0) {
            }
        }
        sc_server_busy(srv, &answered, &dropped, &held);
        if (held == 0) {
            break;
        }
        usleep(10000);
    }
    CHECK_EQ_INT(held, 0);
    /* The slow readers gone, nothing is counted either. */
    for (int i = 0; i < TOTAL_SLOW; i++) {
        close(fds[i]);
    }
    for (int t = 0; t < 200 && held != 0; t++) {
        usleep(10000);
        sc_server_busy(srv, &answered, &dropped, &held);
    }
    CHECK_EQ_INT(held, 0);
    sc_server_close(srv);
    priced_close(&pr);
}

/* ---- replies that run out of memory while packed ---------------------
 * msgpack's sbuffer keeps what it had when it cannot grow, and a later,
 * smaller write may succeed: a reply whose copy of a response failed went
 * out without those bytes (rc 0; the fields after them read as the
 * response), its hits counted as served. Such a reply is none (rc -1),
 * and the server's drop takes its hits back. */

static bool big_write_fails(void *arg, size_t len)
{
    return len >= *(const size_t *)arg;
}

static void test_reply_oom(void)
{
    priced pr;
    priced_open(&pr);
    sc_dispatch *d = pr.d;
    sc_ledger *lg = pr.lg;
    static char big[4096];
    memset(big, 'r', sizeof(big));
    for (unsigned i = 0; i < 2; i++) {
        req r = priced_insert_of("u", i, big, sizeof(big));
        uint8_t *rep = NULL;
        size_t rl = 0;
        CHECK(sc_dispatch_handle(d, r.data, r.len, &rep, &rl) == 0);
        free(rep);
        free(r.data);
    }
    size_t min = sizeof(big) / 2; /* the response's copies fail */
    mp_set_alloc_hook(big_write_fails, &min);
    /* One by one: no reply (the server counts it dropped). */
    req r = lookup_req("u", NULL, 0, 0, 1, 1, DIM, -9, NULL);
    uint8_t *rep = NULL;
    size_t rl = 0;
    CHECK(sc_dispatch_handle(d, r.data, r.len, &rep, &rl) != 0);
    CHECK(rep == NULL);
    free(rep);
    free(r.data);
    /* The batch handler: a plain lookup and a lookup_batch of two hits,
     * dropped as the server drops a reply it did not get. */
    req rs[2] = {lookup_req("u", NULL, 1, 0, 1, 2, DIM, -9, NULL),
                 batch_of_two("u")};
    sc_server_msg msgs[2];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < 2; i++) {
        msgs[i].req = rs[i].data;
        msgs[i].len = rs[i].len;
    }
    sc_dispatch_handle_many(d, msgs, 2);
    for (int i = 0; i < 2; i++) {
        CHECK(msgs[i].rc != 0 && msgs[i].reply == NULL);
        CHECK(msgs[i].undo != NULL);
        if (msgs[i].undo != NULL) {
            msgs[i].undo->done(msgs[i].undo, msgs[i].rc == 0);
        }
        free(msgs[i].reply);
        free(rs[i].data);
    }
    mp_set_alloc_hook(NULL, NULL);
    sc_ledger_counts t;
    CHECK(sc_ledger_sum(lg, "u", SC_LEDGER_BY_NS, &t, NULL, NULL) == SC_OK);
    CHECK_EQ_INT(t.semantic_hits, 4);
    CHECK_EQ_INT(t.false_hits, 3);
    /* With memory again: the whole response. */
    r = lookup_req("u", NULL, 0, 0, 0, 0, DIM, -9, NULL);
    CHECK(sc_dispatch_handle(d, r.data, r.len, &rep, &rl) == 0);
    CHECK(rep != NULL && rl > sizeof(big) &&
          memmem(rep, rl, big, sizeof(big)) != NULL);
    free(rep);
    free(r.data);
    priced_close(&pr);
}

/* ---- the report's rows come a page at a time -------------------------
 * The ledger holds up to 2^20 rows; a report of them all in one reply was
 * some 600 MiB, past --reply-total-max and every client's receive cap. */

/* The value of key in the map o, or NULL. */
static const msgpack_object *map_get(const msgpack_object *o, const char *key)
{
    if (o == NULL || o->type != MSGPACK_OBJECT_MAP) {
        return NULL;
    }
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR &&
            kv->key.via.str.size == strlen(key) &&
            memcmp(kv->key.via.str.ptr, key, strlen(key)) == 0) {
            return &kv->val;
        }
    }
    return NULL;
}

/* Sends report (by user; after and limit when given) and unpacks the
 * reply into *up, whose strings point into the reply: it stays in
 * page_raw until the next call. The reply's "ok" in *ok. */
static uint8_t *page_raw;

static const msgpack_object *report_page(sc_dispatch *d, const char *after,
                                         int64_t limit, msgpack_unpacked *up,
                                         bool *ok)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    begin(&sb, &pk, "report", 1 + (after != NULL) + (limit >= 0), 0, 0);
    mp_put_key(&pk, "by");
    mp_put_str(&pk, "user");
    if (after != NULL) {
        mp_put_key(&pk, "after");
        mp_put_str(&pk, after);
    }
    if (limit >= 0) {
        mp_put_key(&pk, "limit");
        msgpack_pack_uint64(&pk, (uint64_t)limit);
    }
    uint8_t *rep = NULL;
    size_t rl = 0;
    CHECK(sc_dispatch_handle(d, (uint8_t *)sb.data, sb.size, &rep, &rl) == 0);
    msgpack_sbuffer_destroy(&sb);
    msgpack_unpacked_init(up);
    CHECK(msgpack_unpack_next(up, (const char *)rep, rl, NULL) ==
          MSGPACK_UNPACK_SUCCESS);
    free(page_raw);
    page_raw = rep;
    const msgpack_object *o = map_get(&up->data, "ok");
    *ok = o != NULL && o->type == MSGPACK_OBJECT_BOOLEAN && o->via.boolean;
    return map_get(&up->data, "result");
}

static uint64_t obj_uint(const msgpack_object *o)
{
    return o != NULL && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? o->via.u64
                                                                   : UINT64_MAX;
}

static void test_report_pages(void)
{
    priced pr;
    priced_open(&pr);
    sc_dispatch_set_ledger(pr.d, pr.lg, pr.pz);
    /* 2,500 users in namespace a, every tenth also in b: their rows of
     * both namespaces are one row of the report. */
    enum { USERS = 2500 };
    for (unsigned i = 0; i < USERS; i++) {
        char u[32];
        snprintf(u, sizeof(u), "user-%05u", i);
        sc_ledger_lookup ev = {0};
        sc_ledger_tags t = {"a", NULL, u};
        sc_ledger_lookup_done(pr.lg, &t, &ev, 1000 + i);
        if (i % 10 == 0) {
            t.ns = "b";
            sc_ledger_lookup_done(pr.lg, &t, &ev, 1000 + i);
        }
    }
    const uint64_t lookups = USERS + USERS / 10;

    /* No limit: the default page, the total still over every row. */
    msgpack_unpacked up;
    bool ok;
    const msgpack_object *res = report_page(pr.d, NULL, -1, &up, &ok);
    const msgpack_object *rows = map_get(res, "rows");
    CHECK(ok && rows != NULL && rows->type == MSGPACK_OBJECT_ARRAY);
    CHECK_EQ_INT(rows != NULL ? rows->via.array.size : 0,
                 SC_DISPATCH_REPORT_ROWS);
    CHECK_EQ_INT(obj_uint(map_get(res, "more")),
                 USERS - SC_DISPATCH_REPORT_ROWS);
    CHECK_EQ_INT(obj_uint(map_get(map_get(res, "total"), "requests")), lookups);
    const msgpack_object *next = map_get(res, "next");
    CHECK(next != NULL && next->type == MSGPACK_OBJECT_STR &&
          next->via.str.size == 10 &&
          memcmp(next->via.str.ptr, "user-00999", 10) == 0);
    msgpack_unpacked_destroy(&up);

    /* Pages of 700, each after the last: every row once, in name order,
     * the last page with no next. */
    char after[64] = "";
    unsigned seen = 0, pages = 0;
    uint64_t requests = 0;
    for (bool last = false; !last && pages < 10; pages++) {
        res = report_page(pr.d, pages ? after : NULL, 700, &up, &ok);
        rows = map_get(res, "rows");
        CHECK(ok && rows != NULL && rows->type == MSGPACK_OBJECT_ARRAY);
        for (uint32_t i = 0; rows != NULL && i < rows->via.array.size; i++) {
            const msgpack_object *k = map_get(&rows->via.array.ptr[i], "key");
            char want[32];
            snprintf(want, sizeof(want), "user-%05u", seen);
            CHECK(k != NULL && k->type == MSGPACK_OBJECT_STR &&
                  k->via.str.size == strlen(want) &&
                  memcmp(k->via.str.ptr, want, strlen(want)) == 0);
            uint64_t n = obj_uint(map_get(&rows->via.array.ptr[i], "requests"));
            CHECK_EQ_INT(n, seen % 10 == 0 ? 2 : 1);
            requests += n;
            seen++;
        }
        uint64_t more = obj_uint(map_get(res, "more"));
        CHECK_EQ_INT(more, USERS - seen);
        next = map_get(res, "next");
        last = more == 0;
        if (last) {
            CHECK(next != NULL && next->type == MSGPACK_OBJECT_NIL);
        } else if (next != NULL && next->type == MSGPACK_OBJECT_STR &&
                   next->via.str.size < sizeof(after)) {
            memcpy(after, next->via.str.ptr, next->via.str.size);
            after[next->via.str.size] = '\0';
        } else {
            CHECK(!"a page with more rows names its next");
            last = true;
        }
        msgpack_unpacked_destroy(&up);
    }
    CHECK_EQ_INT(seen, USERS);
    CHECK_EQ_INT(pages, 4);
    CHECK_EQ_INT(requests, lookups);

    /* A limit of 0 or over the most is refused. */
    res = report_page(pr.d, NULL, 0, &up, &ok);
    CHECK(!ok);
    msgpack_unpacked_destroy(&up);
    res = report_page(pr.d, NULL, SC_DISPATCH_REPORT_ROWS_MAX + 1, &up, &ok);
    CHECK(!ok);
    msgpack_unpacked_destroy(&up);
    /* After the last key: no rows, the total still whole. */
    res = report_page(pr.d, "user-99999", 5, &up, &ok);
    rows = map_get(res, "rows");
    CHECK(ok && rows != NULL && rows->via.array.size == 0 &&
          obj_uint(map_get(res, "more")) == 0);
    CHECK_EQ_INT(obj_uint(map_get(map_get(res, "total"), "requests")), lookups);
    msgpack_unpacked_destroy(&up);
    free(page_raw);
    page_raw = NULL;
    priced_close(&pr);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--hammer") == 0) {
        return hammer_run(argv[2]);
    }
    if (!pick_ports() || !tmp_dir_make()) {
        return 1;
    }
    test_replace_keys();
    test_error_ids();
    test_nesting();
    test_configure_race();
    test_failed_insert_keeps_configured();
    test_same_replies();
    test_server_batches();
    test_served_counted();
    test_start_later();
    test_max_clients();
    test_unread_reply();
    test_undelivered_hits();
    test_undo_compact();
    test_undo_tokens();
    test_report_pages();
    test_reply_copy_oom();
    test_reply_total();
    test_reply_oom();
    test_close_under_load(argv[0], NULL);
    char leave_url[80];
    snprintf(leave_url, sizeof(leave_url), "tcp://127.0.0.1:%d",
             test_port(3));
    test_peers_leave(argv[0], leave_url, NULL);
    char leave_path[64];
    tmp_path(leave_path, sizeof(leave_path), "leave.ipc");
    snprintf(leave_url, sizeof(leave_url), "ipc://%s", leave_path);
    test_peers_leave(argv[0], leave_url, NULL);
    /* The same over TLS, when the openssl command can make a certificate
     * (test_tls.py skips alike without it). */
    char cert[64];
    tmp_path(cert, sizeof(cert), "cert.pem");
#ifdef SC_NNG_PATCHED
    /* A close the tests above left running (a busy machine) may still hold
     * a port or nng's reaper: wait for it as the rounds do. The bound is
     * counted from here, so it is looser for those closes than in the
     * rounds. */
    bool closed = wait_closes(nng_clock()) >= 0;
    CHECK(closed);
#else
    bool closed = closes_running() == 0; /* nng 1.5.2's hang is for good */
#endif
    if (!closed) {
        fprintf(stderr, "dispatch: TLS rounds skipped (a close is stuck)\n");
    } else if (make_cert(cert)) {
        test_close_under_load(argv[0], cert);
        char tls_url[64];
        snprintf(tls_url, sizeof(tls_url), "tls+tcp://127.0.0.1:%d",
                 test_port(2));
        test_peers_leave(argv[0], tls_url, cert);
        unlink(cert);
    } else {
        fprintf(stderr, "dispatch: SKIP the TLS rounds: the openssl command "
                        "cannot make a certificate\n");
    }
    check_late_frees();
    int rc = test_summary("dispatch");
    if (closes_running() > 0) {
        tmp_dir_remove(); /* _exit runs no atexit handler */
        fflush(NULL);
        _exit(rc); /* nng's exit handler would wait on the stuck close */
    }
    return rc;
}
