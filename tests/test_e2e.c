/* test_e2e.c - starts the real semcached on an ipc:// address and talks to
 * it with libsemcache: every op, scope isolation, exact before semantic,
 * hostile messages (garbage, truncations, huge declared lengths, deep
 * nesting, wrong types, NaN, wrong dimension, oversized), after each of
 * which the server must still answer; 32 concurrent clients mixing inserts
 * and lookups; and a clean exit on SIGTERM.
 * usage: test_e2e PATH/TO/semcached */
#define _GNU_SOURCE
#include <math.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "proto/client.h"
#include "proto/mp.h"
#include "test_ports.h"
#include "test_tmp.h"
#include "test_util.h"

/* "ipc://DIR/NAME.ipc" into buf, DIR this process's directory
 * (test_tmp.h): its sockets go at the exit, and after a SIGKILL at the
 * next sweep (they were /tmp/test_e2e_NAME_PID.ipc, left there). Exits 1
 * when there is none. */
static void ipc_url(char *buf, size_t size, const char *name)
{
    /* 80: room for the names within sockaddr_un's 107 bytes. */
    const char *dir = sc_test_tmp_short_dir("test_e2e", 80);
    if (dir == NULL ||
        (size_t)snprintf(buf, size, "ipc://%s/%s.ipc", dir, name) >= size) {
        fprintf(stderr, "test_e2e: no room for the ipc:// path of %s\n", name);
        exit(1);
    }
}

static char url[128];

/* A free port of SEMCACHE_TEST_PORTS no other test process is handed
 * (test_ports.h); the test stops when there is none. */
static int free_port(void)
{
    return sc_test_port("e2e");
}

/* Over tcp://: on Debian's own nng 1.5.2 (a build with
 * SEMCACHE_NNG_PATCHED=OFF) a peer that closes mid-handshake can stop an
 * ipc:// listener (README), which a loaded machine can trigger when the
 * oversized-message test makes a client reconnect; ipc:// is covered by
 * test_cli, test_hostile.py and the Python client. */
static pid_t start_server(const char *bin)
{
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", free_port());
    pid_t pid = fork();
    if (pid == 0) {
        /* A data directory of its own: no embedder table there, and
         * nothing kept (test_persist and test_crash cover persistence). */
        execl(bin, bin, "--listen", url, "--threads", "8", "--recv-max",
              "1048576", "--data-dir", "/nonexistent/semcache-e2e",
              "--persist", "off", (char *)NULL);
        perror("exec semcached");
        _exit(127);
    }
    return pid;
}

static sc_client *connect_ready(void)
{
    sc_client *c = NULL;
    if (sc_client_open(url, 2000, &c) != SC_OK) {
        return NULL;
    }
    /* The server may still be starting: ping until it answers. */
    for (int i = 0; i < 50; i++) {
        if (sc_client_ping(c, NULL, 0, NULL) == SC_OK) {
            return c;
        }
        usleep(100000);
    }
    sc_client_close(c);
    return NULL;
}

/* Sends raw bytes; returns the reply's "ok" (1/0), -1 if no valid reply. */
static int raw_ok(sc_client *c, const void *msg, size_t len, char *code,
                  size_t cap)
{
    uint8_t *reply = NULL;
    size_t rlen = 0;
    if (sc_client_call(c, msg, len, &reply, &rlen) != SC_OK) {
        return -1;
    }
    mp_reader r;
    mp_reader_init(&r, reply, rlen);
    uint32_t n;
    int ok = -1;
    if (code != NULL) {
        code[0] = '\0';
    }
    if (mp_read_map(&r, &n) == 0) {
        for (uint32_t i = 0; i < n; i++) {
            const char *k;
            uint32_t kn;
            if (mp_read_str(&r, &k, &kn) != 0) {
                break;
            }
            bool b;
            if (kn == 2 && memcmp(k, "ok", 2) == 0 &&
                mp_read_bool(&r, &b) == 0) {
                ok = b;
            } else if (kn == 5 && memcmp(k, "error", 5) == 0) {
                uint32_t en;
                mp_read_map(&r, &en);
                for (uint32_t j = 0; j < en; j++) {
                    const char *ek;
                    uint32_t ekn;
                    mp_read_str(&r, &ek, &ekn);
                    if (ekn == 4 && memcmp(ek, "code", 4) == 0 && code) {
                        mp_read_cstr(&r, code, cap);
                    } else {
                        mp_skip(&r);
                    }
                }
            } else {
                mp_skip(&r);
            }
        }
    }
    free(reply);
    return ok;
}

static void test_ops(sc_client *c)
{
    float v1[4] = {1, 0, 0, 0.1f};
    float near1[4] = {0.95f, 0.05f, 0, 0.1f};
    float far[4] = {0, 0, 1, 0};
    sc_client_error err;
    sc_client_item it;
    memset(&it, 0, sizeof(it));
    it.text = "How do I send a product back?";
    it.vec = v1;
    it.dim = 4;
    it.response = "Use the returns form.";
    it.response_len = strlen(it.response);
    it.model = "gpt-4o";
    it.input_tokens = 20;
    it.output_tokens = 50;
    uint64_t e1 = 0;
    CHECK_EQ_INT(sc_client_insert(c, "faq", &it, &e1, &err), SC_OK);
    CHECK(e1 > 0);

    /* Same vector, another scope: a separate entry. */
    sc_client_item other = it;
    other.scope = "model=b";
    other.response = "B's answer";
    other.response_len = strlen(other.response);
    uint64_t e2 = 0;
    CHECK_EQ_INT(sc_client_insert(c, "faq", &other, &e2, &err), SC_OK);
    CHECK(e2 != e1);

    sc_client_result res;
    sc_client_item q;
    memset(&q, 0, sizeof(q));
    q.text = "how do I send a   product BACK?";
    CHECK_EQ_INT(sc_client_lookup(c, "faq", &q, &res, &err), SC_OK);
    CHECK(res.hit && strcmp(res.layer, "exact") == 0 && res.entry == e1);
    CHECK(res.input_tokens == 20 && res.output_tokens == 50);
    CHECK(strcmp(res.model, "gpt-4o") == 0);
    free(res.response);

    q.text = NULL;
    q.vec = near1;
    q.dim = 4;
    CHECK_EQ_INT(sc_client_lookup(c, "faq", &q, &res, &err), SC_OK);
    CHECK(res.hit && strcmp(res.layer, "semantic") == 0 && res.entry == e1);
    CHECK(res.response_len == strlen("Use the returns form.") &&
          memcmp(res.response, "Use the returns form.", res.response_len) == 0);
    CHECK(res.similarity > 0.9f && res.similarity <= 1.0f);
    free(res.response);

    /* The scope decides which entry answers. */
    q.scope = "model=b";
    CHECK_EQ_INT(sc_client_lookup(c, "faq", &q, &res, &err), SC_OK);
    CHECK(res.hit && res.entry == e2);
    free(res.response);
    q.scope = "model=c";
    CHECK_EQ_INT(sc_client_lookup(c, "faq", &q, &res, &err), SC_OK);
    CHECK(!res.hit && strcmp(res.reason, "no_candidate") == 0);
    q.scope = NULL;

    q.vec = far;
    CHECK_EQ_INT(sc_client_lookup(c, "faq", &q, &res, &err), SC_OK);
    CHECK(!res.hit && strcmp(res.reason, "below_threshold") == 0);
    /* A per-request threshold override lets the far one through. */
    q.has_threshold = true;
    q.threshold = -1.0f;
    CHECK_EQ_INT(sc_client_lookup(c, "faq", &q, &res, &err), SC_OK);
    CHECK(res.hit);
    free(res.response);
    q.has_threshold = false;

    /* Wrong dimension, unknown namespace, unknown entry. */
    q.dim = 3;
    CHECK_EQ_INT(sc_client_lookup(c, "faq", &q, &res, &err), SC_EREMOTE);
    CHECK(strcmp(err.code, "dim") == 0);
    q.dim = 4;
    CHECK_EQ_INT(sc_client_lookup(c, "nowhere", &q, &res, &err), SC_OK);
    CHECK(!res.hit && strcmp(res.reason, "no_namespace") == 0);
    CHECK_EQ_INT(sc_client_delete(c, 999999, &err), SC_EREMOTE);
    CHECK(strcmp(err.code, "not_found") == 0);

    /* Feedback quarantines: the hit is never served again. */
    CHECK_EQ_INT(sc_client_feedback(c, e1, &err), SC_OK);
    q.vec = near1;
    CHECK_EQ_INT(sc_client_lookup(c, "faq", &q, &res, &err), SC_OK);
    CHECK(!res.hit || res.entry != e1);
    if (res.hit) {
        free(res.response);
    }
    CHECK_EQ_INT(sc_client_delete(c, e2, &err), SC_OK);

    uint8_t *raw = NULL;
    size_t rlen = 0;
    CHECK_EQ_INT(sc_client_stats(c, "faq", &raw, &rlen, &err), SC_OK);
    CHECK(raw != NULL && rlen > 50);
    free(raw);
    CHECK_EQ_INT(sc_client_flush(c, "faq", &err), SC_OK);
}

/* Builds {"v":1,"op":OP,...} with a few custom fields for hostile tests. */
static size_t build(uint8_t *out, size_t cap, const char *op, int version,
                    const char *key, int kind)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, key ? 4 : 3);
    mp_put_key(&pk, "v");
    msgpack_pack_int(&pk, version);
    mp_put_key(&pk, "op");
    mp_put_str(&pk, op);
    mp_put_key(&pk, "ns");
    mp_put_str(&pk, "hostile");
    if (key) {
        mp_put_key(&pk, key);
        float nanv[2] = {1.0f, NAN};
        switch (kind) {
        case 0: /* wrong type: an integer where a string/bin belongs */
            msgpack_pack_int(&pk, 42);
            break;
        case 1: /* NaN inside a vector */
            mp_put_vec(&pk, nanv, 2);
            break;
        case 2: /* a vector of 6 bytes */
            mp_put_bin(&pk, "abcdef", 6);
            break;
        default: /* NaN threshold */
            msgpack_pack_double(&pk, NAN);
            break;
        }
    }
    size_t n = sb.size < cap ? sb.size : cap;
    memcpy(out, sb.data, n);
    msgpack_sbuffer_destroy(&sb);
    return n;
}

static void test_hostile(sc_client *c)
{
    char code[32];
    uint8_t m[512];
    size_t n;
    CHECK_EQ_INT(raw_ok(c, "garbage!", 8, code, sizeof(code)), 0);
    CHECK(strcmp(code, "bad_request") == 0);
    CHECK_EQ_INT(raw_ok(c, "", 0, code, sizeof(code)), 0);

    n = build(m, sizeof(m), "ping", 2, NULL, 0);
    CHECK_EQ_INT(raw_ok(c, m, n, code, sizeof(code)), 0);
    CHECK(strcmp(code, "version") == 0);
    n = build(m, sizeof(m), "explode", 1, NULL, 0);
    CHECK_EQ_INT(raw_ok(c, m, n, code, sizeof(code)), 0);
    CHECK(strcmp(code, "unknown_op") == 0);
    n = build(m, sizeof(m), "lookup", 1, "vec", 0);
    CHECK_EQ_INT(raw_ok(c, m, n, code, sizeof(code)), 0);
    CHECK(strcmp(code, "bad_request") == 0);
    n = build(m, sizeof(m), "lookup", 1, "vec", 1);
    CHECK_EQ_INT(raw_ok(c, m, n, code, sizeof(code)), 0);
    CHECK(strcmp(code, "nan") == 0);
    n = build(m, sizeof(m), "lookup", 1, "vec", 2);
    CHECK_EQ_INT(raw_ok(c, m, n, code, sizeof(code)), 0);
    n = build(m, sizeof(m), "lookup", 1, "threshold", 3);
    CHECK_EQ_INT(raw_ok(c, m, n, code, sizeof(code)), 0);
    CHECK(strcmp(code, "nan") == 0);

    /* Every truncation of a valid insert gets an error reply. */
    float v[4] = {1, 2, 3, 4};
    sc_client_item it;
    memset(&it, 0, sizeof(it));
    it.vec = v;
    it.dim = 4;
    it.response = "r";
    it.response_len = 1;
    /* The builders write a new buffer (client.h): one *buf held before is
     * neither appended to nor freed, and a failure leaves *buf alone. */
    uint8_t *req = malloc(8);
    CHECK(req != NULL);
    uint8_t *before = req;
    size_t len = 8;
    it.vec = NULL;
    CHECK_EQ_INT(sc_client_build_insert("trunc", &it, &req, &len), SC_EINVAL);
    CHECK(req == before && len == 8);
    it.vec = v;
    CHECK_EQ_INT(sc_client_build_insert("trunc", &it, &req, &len), SC_OK);
    CHECK(req != before && len > 8 && (req[0] & 0xf0) == 0x80);
    free(before);
    int bad = 0;
    for (size_t cut = 0; cut < len; cut++) {
        bad += raw_ok(c, req, cut, NULL, 0) != 0;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(raw_ok(c, req, len, NULL, 0), 1);
    free(req);

    /* Declared lengths far beyond the bytes present. */
    const uint8_t huge_map[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'v', 1};
    const uint8_t huge_str[] = {0x81, 0xdb, 0xff, 0xff, 0xff, 0xf0, 'x'};
    const uint8_t huge_arr[] = {0x83, 0xa1, 'v',  0x01, 0xa2, 'o',  'p', 0xac,
                                'l',  'o',  'o',  'k',  'u',  'p',  '_', 'b',
                                'a',  't',  'c',  'h',  0xa5, 'i',  't', 'e',
                                'm',  's',  0xdd, 0x7f, 0xff, 0xff, 0xff};
    CHECK_EQ_INT(raw_ok(c, huge_map, sizeof(huge_map), NULL, 0), 0);
    CHECK_EQ_INT(raw_ok(c, huge_str, sizeof(huge_str), NULL, 0), 0);
    CHECK_EQ_INT(raw_ok(c, huge_arr, sizeof(huge_arr), NULL, 0), 0);

    /* Nesting 1000 deep inside an unknown key. */
    uint8_t deep[1100];
    size_t dn = 0;
    deep[dn++] = 0x83;
    deep[dn++] = 0xa1;
    deep[dn++] = 'v';
    deep[dn++] = 0x01;
    deep[dn++] = 0xa2;
    deep[dn++] = 'o';
    deep[dn++] = 'p';
    deep[dn++] = 0xa4;
    memcpy(deep + dn, "ping", 4);
    dn += 4;
    deep[dn++] = 0xa1;
    deep[dn++] = 'x';
    for (int i = 0; i < 1000; i++) {
        deep[dn++] = 0x91; /* array of one */
    }
    deep[dn++] = 0xc0;
    CHECK_EQ_INT(raw_ok(c, deep, dn, code, sizeof(code)), 0);

    /* Random byte flips of a valid message: any reply, never a crash. */
    CHECK_EQ_INT(sc_client_build_insert("flips", &it, &req, &len), SC_OK);
    uint64_t seed = 9;
    int answered = 0;
    for (int i = 0; i < 300; i++) {
        uint8_t copy[256];
        memcpy(copy, req, len);
        copy[test_rand(&seed) % len] ^= (uint8_t)(1 + test_rand(&seed) % 255);
        answered += raw_ok(c, copy, len, NULL, 0) >= 0;
    }
    CHECK_EQ_INT(answered, 300);
    free(req);

    /* A message over --recv-max (1 MiB) is dropped, not answered; the
     * client's own timeout ends the wait. */
    size_t big = 2u << 20;
    uint8_t *huge = calloc(1, big);
    sc_client *c2;
    CHECK_EQ_INT(sc_client_open(url, 500, &c2), SC_OK);
    CHECK_EQ_INT(raw_ok(c2, huge, big, NULL, 0), -1);
    sc_client_close(c2);
    free(huge);

    /* After all that, the server still answers. */
    CHECK_EQ_INT(sc_client_ping(c, NULL, 0, NULL), SC_OK);
}

typedef struct conc {
    int thread;
    int failures;
    int hits;
} conc;

static void *client_thread(void *arg)
{
    conc *t = arg;
    sc_client *c;
    if (sc_client_open(url, 5000, &c) != SC_OK) {
        t->failures++;
        return NULL;
    }
    /* 32 connections arrive at once: wait until this one is up (each ping
     * waits up to the client's 5 s timeout, connecting included). */
    int up = 0;
    for (int i = 0; i < 5 && !up; i++) {
        up = sc_client_ping(c, NULL, 0, NULL) == SC_OK;
        if (!up) {
            usleep(100000);
        }
    }
    if (!up) {
        fprintf(stderr, "client %d: no answer to ping\n", t->thread);
        t->failures++;
        sc_client_close(c);
        return NULL;
    }
    char ns[32];
    snprintf(ns, sizeof(ns), "conc%d", t->thread % 4);
    for (int i = 0; i < 60 && t->failures < 3; i++) {
        float v[8];
        for (int j = 0; j < 8; j++) {
            v[j] = (float)((t->thread * 131 + i * 7 + j * 3) % 17) - 8.0f;
        }
        v[0] += 20.0f; /* never all zero */
        sc_client_item it;
        memset(&it, 0, sizeof(it));
        it.vec = v;
        it.dim = 8;
        sc_client_error err;
        if (i % 3 == 0) {
            char resp[32];
            snprintf(resp, sizeof(resp), "t%d-%d", t->thread, i);
            it.response = resp;
            it.response_len = strlen(resp);
            uint64_t id;
            sc_err rc = sc_client_insert(c, ns, &it, &id, &err);
            if (rc != SC_OK) {
                if (t->failures++ == 0) {
                    fprintf(stderr, "client %d: insert: %s %s %s\n", t->thread,
                            sc_strerror(rc), rc == SC_EREMOTE ? err.code : "",
                            rc == SC_EREMOTE ? err.message : "");
                }
            }
        } else {
            sc_client_result res;
            sc_err rc = sc_client_lookup(c, ns, &it, &res, &err);
            if (rc != SC_OK) {
                if (t->failures++ == 0) {
                    fprintf(stderr, "client %d: lookup: %s %s\n", t->thread,
                            sc_strerror(rc), rc == SC_EREMOTE ? err.code : "");
                }
            } else if (res.hit) {
                t->hits++;
                free(res.response);
            }
        }
    }
    sc_client_close(c);
    return NULL;
}

static void test_concurrent(void)
{
    pthread_t th[32];
    conc t[32];
    for (int i = 0; i < 32; i++) {
        t[i] = (conc){i, 0, 0};
        pthread_create(&th[i], NULL, client_thread, &t[i]);
    }
    int failures = 0, hits = 0;
    for (int i = 0; i < 32; i++) {
        pthread_join(th[i], NULL);
        failures += t[i].failures;
        hits += t[i].hits;
    }
    CHECK_EQ_INT(failures, 0);
    CHECK(hits > 0);
}

/* One client shared by many threads (client.h: thread-safe): more calls
 * in flight than the server queues replies for on one connection (64,
 * past which it drops them); the client keeps 32 in flight, so every call
 * is answered. Without that, 151 of 2000 calls of 200 threads timed out. */
typedef struct shared_arg {
    sc_client *c;
    int failures;
} shared_arg;

static void *shared_thread(void *arg)
{
    shared_arg *a = arg;
    float v[8] = {3, 1, 4, 1, 5, 9, 2, 6};
    sc_client_item it;
    memset(&it, 0, sizeof(it));
    it.vec = v;
    it.dim = 8;
    for (int i = 0; i < 10; i++) {
        sc_client_result res;
        sc_client_error err;
        sc_err rc = sc_client_lookup(a->c, "shared", &it, &res, &err);
        if (rc != SC_OK || !res.hit) {
            a->failures++;
        }
        if (rc == SC_OK) {
            free(res.response);
        }
    }
    return NULL;
}

static void test_shared_client(sc_client *c)
{
    static char big[4000];
    memset(big, 'r', sizeof(big));
    float v[8] = {3, 1, 4, 1, 5, 9, 2, 6};
    sc_client_item it;
    memset(&it, 0, sizeof(it));
    it.vec = v;
    it.dim = 8;
    it.response = big;
    it.response_len = sizeof(big);
    uint64_t id;
    CHECK_EQ_INT(sc_client_insert(c, "shared", &it, &id, NULL), SC_OK);
    enum { NT = 160 };
    pthread_t th[NT];
    shared_arg a[NT];
    for (int i = 0; i < NT; i++) {
        a[i] = (shared_arg){c, 0};
        CHECK(pthread_create(&th[i], NULL, shared_thread, &a[i]) == 0);
    }
    int failures = 0;
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        failures += a[i].failures;
    }
    CHECK_EQ_INT(failures, 0);
}

/* ---- out-parameters on failure ----------------------------------------- */

/* Every call's out-parameters are defined on every error (client.h): a
 * caller that frees *reply whatever the code must not free garbage.
 * stats and report once set *reply only when a reply came, so a time-out
 * left the caller's uninitialised pointer there; insert left *entry, ping
 * the server string, and a call refused before sending (SC_EINVAL) the
 * caller's *err. Each out-parameter starts as garbage here, on a client
 * that reaches no server (nothing listens at its URL). */
static void test_outs_on_error(void)
{
    sc_client *c = (sc_client *)&c; /* garbage */
    CHECK_EQ_INT(sc_client_open("bogus://x", 100, &c), SC_EINVAL);
    CHECK(c == NULL);
    char url[128];
    ipc_url(url, sizeof(url), "nobody");
    CHECK_EQ_INT(sc_client_open(url, 100, &c), SC_OK);
    if (c == NULL) {
        return;
    }
    static uint8_t junk[1];
    uint8_t *reply = junk;
    size_t len = 77;
    sc_client_error err;
    memset(&err, 'x', sizeof(err));
    CHECK_EQ_INT(sc_client_stats(c, NULL, &reply, &len, &err), SC_ECONN);
    CHECK(reply == NULL && len == 0 && err.code[0] == '\0' &&
          err.message[0] == '\0');
    reply = junk;
    len = 77;
    CHECK_EQ_INT(sc_client_report(c, NULL, "user", &reply, &len, NULL),
                 SC_ECONN);
    CHECK(reply == NULL && len == 0);
    reply = junk;
    len = 77;
    CHECK_EQ_INT(sc_client_call(c, "\x80", 1, &reply, &len), SC_ECONN);
    CHECK(reply == NULL && len == 0);
    char server[16];
    memset(server, 'x', sizeof(server));
    CHECK_EQ_INT(sc_client_ping(c, server, sizeof(server), NULL), SC_ECONN);
    CHECK(server[0] == '\0');
    float v[3] = {1, 0, 0};
    sc_client_item it = {
        .vec = v, .dim = 3, .response = "r", .response_len = 1};
    uint64_t id = 77;
    CHECK_EQ_INT(sc_client_insert(c, "ns", &it, &id, NULL), SC_ECONN);
    CHECK(id == 0);
    /* Refused before anything is sent: *err is still cleared. */
    id = 77;
    memset(&err, 'x', sizeof(err));
    CHECK_EQ_INT(sc_client_insert(c, NULL, &it, &id, &err), SC_EINVAL);
    CHECK(id == 0 && err.code[0] == '\0' && err.message[0] == '\0');
    memset(&err, 'x', sizeof(err));
    CHECK_EQ_INT(sc_client_ns_drop(c, NULL, &err), SC_EINVAL);
    CHECK(err.code[0] == '\0' && err.message[0] == '\0');
    sc_client_result res;
    memset(&res, 'x', sizeof(res));
    CHECK_EQ_INT(sc_client_lookup(c, "ns", &it, &res, NULL), SC_ECONN);
    CHECK(res.response == NULL && !res.hit && res.entry == 0 &&
          isnan(res.best));
    sc_client_close(c);
}

/* A time-out says which it was: with no connection up (nothing listens,
 * or the server went away) SC_ECONN, "cannot reach the server"; with one
 * up and no reply, SC_ETIMEDOUT, "the server did not answer in time". */
static void test_silent_or_gone(void)
{
    char url[128];
    ipc_url(url, sizeof(url), "silent");
    nng_socket rep;
    CHECK_EQ_INT(nng_rep0_open(&rep), 0);
    CHECK_EQ_INT(nng_listen(rep, url, NULL, 0), 0);
    sc_client *c = NULL;
    CHECK_EQ_INT(sc_client_open(url, 300, &c), SC_OK);
    if (c == NULL) {
        nng_close(rep);
        return;
    }
    uint8_t *reply = NULL;
    size_t len = 0;
    /* The request arrives (the connection is up) and is never answered. */
    CHECK_EQ_INT(sc_client_call(c, "\x80", 1, &reply, &len), SC_ETIMEDOUT);
    nng_msg *m = NULL;
    CHECK_EQ_INT(nng_recvmsg(rep, &m, NNG_FLAG_NONBLOCK), 0);
    if (m != NULL) {
        nng_msg_free(m);
    }
    /* The server goes away: nothing to wait for any more. */
    nng_close(rep);
    CHECK_EQ_INT(sc_client_call(c, "\x80", 1, &reply, &len), SC_ECONN);
    CHECK(reply == NULL && len == 0);
    sc_client_close(c);
}

/* ---- a hostile server: the client's checks of what comes back ---------- */

typedef struct fake_reply {
    const char *bytes; /* msgpack, hand-encoded */
    size_t len;
} fake_reply;

typedef struct fake_srv {
    nng_socket sock;
    const fake_reply *replies;
    size_t n;
} fake_srv;

/* Answers each request with the next reply, as given. */
static void *fake_main(void *arg)
{
    fake_srv *f = arg;
    for (size_t i = 0; i < f->n; i++) {
        char *req = NULL;
        size_t len = 0;
        if (nng_recv(f->sock, &req, &len, NNG_FLAG_ALLOC) != 0) {
            return NULL;
        }
        nng_free(req, len);
        if (nng_send(f->sock, (void *)f->replies[i].bytes, f->replies[i].len,
                     0) != 0) {
            return NULL;
        }
    }
    return NULL;
}

#define R(lit)                                                                 \
    {                                                                          \
        lit, sizeof(lit) - 1                                                   \
    }

/* Replies with the right frame and wrong contents: each call fails with
 * SC_EPROTO (no crash, no leak under ASan); a well-formed refusal is the
 * server's error, a well-formed hit is served. */
static void test_fake_server(void)
{
    /* {"ok":true,"result":{...}} with the result's map given. */
#define OKR(n, body) "\x82\xa2ok\xc3\xa6result" n body
    static const fake_reply replies[] = {
        /* lookups */
        R(OKR("\x82", "\xa3hit\xc3\xa8response\xc4\x01x")), /* no entry */
        R(OKR("\x82", "\xa3hit\xc3\xa5"
                      "entry\x07")), /* no response */
        R(OKR("\x84", "\xa3hit\xc3\xa5"
                      "entry\x07\xa8response\xc4\x01x"
                      "\xa8response\xc4\x01y")), /* two responses */
        R(OKR("\x81", "\xa3hit\xa3yes")),        /* hit not a bool */
        /* a miss, and a response all the same */
        R(OKR("\x82", "\xa8response\xc4\x01x\xa3hit\xc2")),
        R("\x82\xa2ok\xc3\xa6result\x05"),        /* result not a map */
        R("\x82\xa2ok\xc3\xa6result\x81\xa3hit"), /* cut short */
        R("\xc1\xc1\xc1"),                        /* not msgpack */
        R("\x81\xa6result\x80"),                  /* no "ok" */
        R("\x82\xa2ok\xc2\xa5"
          "error\x82\xa4"
          "code\xa5range\xa7message"
          "\xa1m"), /* a refusal */
        /* refusals without their error: {"ok": false}, a code that is
         * not a str, no code, a message that is not a str (each was
         * SC_EREMOTE with an empty code: PROTOCOL.md 2.3 says a refusal
         * carries both, and the Python client said ProtocolError); a
         * code alone is the server's error, as in Python. */
        R("\x81\xa2ok\xc2"),
        R("\x82\xa2ok\xc2\xa5"
          "error\x82\xa4"
          "code\x05\xa7message\xa1m"),
        R("\x82\xa2ok\xc2\xa5"
          "error\x81\xa7message\xa1m"),
        R("\x82\xa2ok\xc2\xa5"
          "error\x82\xa4"
          "code\xa5range\xa7message\x07"),
        R("\x82\xa2ok\xc2\xa5"
          "error\x81\xa4"
          "code\xa5range"),
        /* a hit whose response is a str, not bin; no "hit" at all
         * (SC_OK, and a miss, before: PROTOCOL.md has response bin and
         * hit in every result, and Python says ProtocolError) */
        R(OKR("\x83", "\xa3hit\xc3\xa5"
                      "entry\x07\xa8response\xa2ok")),
        R(OKR("\x81", "\xa5layer\xa4none")),
        R(OKR("\x83", "\xa3hit\xc3\xa5"
                      "entry\x07\xa8response\xc4\x02ok")),
        /* inserts */
        R(OKR("\x80", "")), /* no entry */
        R(OKR("\x81", "\xa5"
                      "entry\xa1"
                      "7")), /* entry not a uint */
    };
    const sc_err want[] = {SC_EPROTO, SC_EPROTO,  SC_EPROTO,  SC_EPROTO,
                           SC_EPROTO, SC_EPROTO,  SC_EPROTO,  SC_EPROTO,
                           SC_EPROTO, SC_EREMOTE, SC_EPROTO,  SC_EPROTO,
                           SC_EPROTO, SC_EPROTO,  SC_EREMOTE, SC_EPROTO,
                           SC_EPROTO, SC_OK,      SC_EPROTO,  SC_EPROTO};
    const size_t nlook = 18, n = sizeof(replies) / sizeof(replies[0]);
    char url[128];
    ipc_url(url, sizeof(url), "fake");
    fake_srv f = {.replies = replies, .n = n};
    CHECK_EQ_INT(nng_rep0_open(&f.sock), 0);
    CHECK_EQ_INT(nng_listen(f.sock, url, NULL, 0), 0);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, fake_main, &f) == 0);
    sc_client *c = NULL;
    CHECK_EQ_INT(sc_client_open(url, 5000, &c), SC_OK);
    float v[3] = {1, 0, 0};
    sc_client_item it = {
        .vec = v, .dim = 3, .response = "r", .response_len = 1};
    for (size_t i = 0; i < n && c != NULL; i++) {
        sc_client_error err;
        memset(&err, 0, sizeof(err));
        sc_err rc;
        if (i < nlook) {
            sc_client_result res;
            rc = sc_client_lookup(c, "ns", &it, &res, &err);
            if (rc != SC_OK) {
                CHECK(res.response == NULL); /* nothing for the caller */
            } else {
                CHECK(res.hit && res.entry == 7 && res.response_len == 2 &&
                      memcmp(res.response, "ok", 2) == 0);
                free(res.response);
            }
        } else {
            uint64_t id = 0;
            rc = sc_client_insert(c, "ns", &it, &id, &err);
        }
        if (rc != want[i]) {
            fprintf(stderr, "fake reply %zu: %s, not %s\n", i, sc_strerror(rc),
                    sc_strerror(want[i]));
        }
        CHECK_EQ_INT(rc, want[i]);
        if (i == 9) {
            CHECK(strcmp(err.code, "range") == 0 &&
                  strcmp(err.message, "m") == 0);
        } else if (want[i] == SC_EREMOTE) {
            CHECK(strcmp(err.code, "range") == 0 && err.message[0] == '\0');
        }
    }
    sc_client_close(c);
    pthread_join(th, NULL);
    nng_close(f.sock);
#undef OKR
}

#if !defined(__SANITIZE_ADDRESS__)
/* The process's virtual size in bytes (VmSize), 0 if unknown. */
static size_t vm_size(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kb = 0;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "VmSize: %zu kB", &kb) == 1) {
            break;
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return kb * 1024;
}
#endif

/* A request that runs out of memory midway is SC_ENOMEM, not a request
 * with bytes missing. msgpack's buffer keeps what it had when it cannot
 * grow, and the builders once checked only that it held something: a
 * 64 MiB response whose copy could not fit went out as a short request,
 * SC_OK. In a child whose address space leaves room for the response
 * and not for the buffer's growth to twice its size. Not under ASan (its
 * shadow reserves terabytes: no cap works). */
static void test_build_oom(void)
{
#if defined(__SANITIZE_ADDRESS__)
    fprintf(stderr, "test_e2e: out-of-memory build skipped (ASan)\n");
#else
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        size_t n = 64u << 20;
        char *big = malloc(n);
        if (big == NULL) {
            _exit(3);
        }
        memset(big, 'r', n);
        struct rlimit rl;
        rl.rlim_cur = rl.rlim_max = vm_size() + (96u << 20);
        if (vm_size() == 0 || setrlimit(RLIMIT_AS, &rl) != 0) {
            _exit(3);
        }
        float v[3] = {1, 0, 0};
        sc_client_item it;
        memset(&it, 0, sizeof(it));
        it.vec = v;
        it.dim = 3;
        it.response = big;
        it.response_len = n;
        uint8_t *req = NULL;
        size_t len = 0;
        sc_err rc = sc_client_build_insert("oom", &it, &req, &len);
        _exit(rc == SC_ENOMEM && req == NULL ? 0 : rc == SC_OK ? 1 : 2);
    }
    int status = 0;
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "  out-of-memory build: child status %d\n", status);
    }
#endif
}

/* The child of test_call_oom, a fresh process (exec'd: nng is not
 * fork-safe): a keyed call whose reply arrives but cannot be copied out.
 * Exit 0 for SC_ENOMEM; 1 for SC_OK (the call once said so, *reply NULL,
 * since the key's copy had set its result: a ping then read a NULL
 * reply); 2 another error; 3 the set-up failed. */
static int call_oom_child(const char *fake_url)
{
#if defined(__SANITIZE_ADDRESS__)
    (void)fake_url;
    return 3;
#else
    static const char ping[] = "\x82\xa1v\x01\xa2op\xa4ping";
    /* One malloc arena: a thread's first allocation would otherwise
     * reserve a 64 MiB arena of its own under the cap below, and nng's
     * receive of the big reply failed in 2 runs of 5 (SC_ECONN). */
    mallopt(M_ARENA_MAX, 1);
    sc_client *c = NULL;
    uint8_t *reply = NULL;
    size_t len = 0;
    if (sc_client_open(fake_url, 10000, &c) != SC_OK ||
        sc_client_set_key(c, "k") != SC_OK ||
        sc_client_call(c, ping, sizeof(ping) - 1, &reply, &len) != SC_OK) {
        return 3; /* a small reply first: nng's threads are up */
    }
    free(reply);
    /* Room for nng's 64 MiB message and not for its copy. */
    struct rlimit rl;
    rl.rlim_cur = rl.rlim_max = vm_size() + (96u << 20);
    if (vm_size() == 0 || setrlimit(RLIMIT_AS, &rl) != 0) {
        return 3;
    }
    sc_err rc = sc_client_call(c, ping, sizeof(ping) - 1, &reply, &len);
    if (rc != SC_ENOMEM) {
        fprintf(stderr, "  out-of-memory call: %s\n", sc_errname(rc));
    }
    return rc == SC_ENOMEM ? 0 : rc == SC_OK ? 1 : 2;
#endif
}

/* A call out of memory for its reply's copy is SC_ENOMEM, with a key set
 * as without one. In a child (call_oom_child) capped by RLIMIT_AS, this
 * process the fake server sending a 64 MiB reply. Not under ASan (see
 * test_build_oom). */
static void test_call_oom(void)
{
#if defined(__SANITIZE_ADDRESS__)
    fprintf(stderr, "test_e2e: out-of-memory call skipped (ASan)\n");
#else
    size_t big_len = 64u << 20;
    char *big = calloc(1, big_len);
    CHECK(big != NULL);
    if (big == NULL) {
        return;
    }
    fake_reply replies[] = {R("\x82\xa2ok\xc3\xa6result\x80"), {big, big_len}};
    char fake_url[128];
    ipc_url(fake_url, sizeof(fake_url), "oom");
    fake_srv f = {.replies = replies, .n = 2};
    CHECK_EQ_INT(nng_rep0_open(&f.sock), 0);
    CHECK_EQ_INT(nng_listen(f.sock, fake_url, NULL, 0), 0);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, fake_main, &f) == 0);
    char *args[] = {"test_e2e", "--call-oom", fake_url, NULL};
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        execv("/proc/self/exe", args);
        _exit(4);
    }
    int status = 0;
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "  out-of-memory call: child status %d\n", status);
    }
    nng_close(f.sock); /* ends fake_main if the child left early */
    pthread_join(th, NULL);
    free(big);
#endif
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--call-oom") == 0) {
        _exit(call_oom_child(argv[2]));
    }
    if (argc < 2) {
        fprintf(stderr, "usage: test_e2e PATH/TO/semcached\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    pid_t pid = start_server(argv[1]);
    sc_client *c = connect_ready();
    fprintf(stderr, "test_e2e: connected: %s\n", c != NULL ? "yes" : "no");
    CHECK(c != NULL);
    if (c != NULL) {
        char server[64];
        CHECK_EQ_INT(sc_client_ping(c, server, sizeof(server), NULL), SC_OK);
        CHECK(strncmp(server, "semcached", 9) == 0);
        /* Progress on stderr: a run that hangs says where. */
        fprintf(stderr, "test_e2e: ops\n");
        test_ops(c);
        fprintf(stderr, "test_e2e: hostile input\n");
        test_hostile(c);
        fprintf(stderr, "test_e2e: 32 concurrent clients\n");
        test_concurrent();
        fprintf(stderr, "test_e2e: one client, 160 threads\n");
        test_shared_client(c);
        fprintf(stderr, "test_e2e: out-parameters on failure\n");
        test_outs_on_error();
        test_silent_or_gone();
        fprintf(stderr, "test_e2e: hostile replies from a fake server\n");
        test_fake_server();
        test_build_oom();
        test_call_oom();
        fprintf(stderr, "test_e2e: shutdown\n");
        sc_client_close(c);
    }
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return test_summary("test_e2e");
}
