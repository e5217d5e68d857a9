/* bench_proxy.c - bench_service --proxy: the latency of a hit through the
 * OpenAI-compatible proxy against a direct call to an upstream that answers
 * at once (an nng HTTP server in a process of its own, so that the proxy's
 * figures are its own overhead), at N entries, p50 and p99, with the same
 * libcurl client (one connection, kept alive) for both. */
#define _GNU_SOURCE
#include "bench/bench_proxy.h"

#include <curl/curl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>

#include "bench/bench_util.h"
#include "tests/test_ports.h"
#include "tests/test_tmp.h"

/* ---- the instant upstream -------------------------------------------- */

/* Answers every chat completion at once with a short answer that names a
 * hash of the request, so each question has its own answer. */
static void fake_cb(nng_aio *aio)
{
    nng_http_req *req = nng_aio_get_input(aio, 0);
    void *body;
    size_t n;
    nng_http_req_get_data(req, &body, &n);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ ((const unsigned char *)body)[i]) * 1099511628211ull;
    }
    char out[512];
    int len = snprintf(
        out, sizeof(out),
        "{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\","
        "\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{"
        "\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
        "\"Answer %016llx.\"},\"finish_reason\":\"stop\"}],\"usage\":{"
        "\"prompt_tokens\":20,\"completion_tokens\":40,\"total_tokens\":60}}",
        (unsigned long long)h);
    nng_http_res *res;
    if (nng_http_res_alloc(&res) != 0) {
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    nng_http_res_set_header(res, "Content-Type", "application/json");
    nng_http_res_copy_data(res, out, (size_t)len);
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

/* The fake upstream in a child process (before this one uses nng). */
static pid_t fake_spawn(int port)
{
    pid_t pid = fork();
    if (pid != 0) {
        return pid;
    }
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, NULL);
    char u[64];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d", port);
    nng_url *url;
    nng_http_server *srv;
    nng_http_handler *hd;
    if (nng_url_parse(&url, u) != 0 || nng_http_server_hold(&srv, url) != 0 ||
        nng_http_handler_alloc(&hd, "/v1/chat/completions", fake_cb) != 0 ||
        nng_http_handler_set_method(hd, "POST") != 0 ||
        nng_http_server_add_handler(srv, hd) != 0 ||
        nng_http_server_start(srv) != 0) {
        fprintf(stderr,
                "bench_service: the fake upstream cannot listen on "
                "%s\n",
                u);
        _exit(1);
    }
    int sig;
    sigwait(&term, &sig);
    nng_http_server_stop(srv);
    nng_http_server_release(srv);
    nng_url_free(url);
    _exit(0);
}

/* ---- the client ------------------------------------------------------- */

typedef struct reply {
    char xsc[160];
    size_t bytes;
} reply;

static size_t sink(char *d, size_t sz, size_t nm, void *arg)
{
    ((reply *)arg)->bytes += sz * nm;
    (void)d;
    return sz * nm;
}

static size_t head_cb(char *d, size_t sz, size_t nm, void *arg)
{
    size_t n = sz * nm;
    reply *r = arg;
    if (n > 12 && strncasecmp(d, "x-semcache: ", 12) == 0) {
        size_t k = n - 12;
        while (k > 0 && (d[12 + k - 1] == '\r' || d[12 + k - 1] == '\n')) {
            k--;
        }
        snprintf(r->xsc, sizeof(r->xsc), "%.*s", (int)k, d + 12);
    }
    return n;
}

/* Question i of the set: 25 verbs x 20 things x 20 endings = 10000
 * distinct English questions; alt words it the other way round. */
static void question(long i, int alt, char *out, size_t cap)
{
    static const char *verb[] = {
        "return", "cancel",   "track",   "change",   "replace",
        "repair", "send",     "order",   "find",     "pay for",
        "insure", "exchange", "ship",    "clean",    "sell",
        "rent",   "update",   "recycle", "register", "unlock",
        "open",   "reset",    "protect", "upgrade",  "donate"};
    static const char *thing[] = {"bicycle", "laptop",   "jacket",   "phone",
                                  "ticket",  "sofa",     "camera",   "watch",
                                  "printer", "guitar",   "tablet",   "mattress",
                                  "oven",    "boots",    "stroller", "kettle",
                                  "monitor", "backpack", "heater",   "blender"};
    static const char *tail[] = {"after a week",
                                 "from abroad",
                                 "without a receipt",
                                 "before Friday",
                                 "at the airport",
                                 "during the holidays",
                                 "for my mother",
                                 "on your website",
                                 "in another city",
                                 "by phone",
                                 "after the warranty",
                                 "with a gift card",
                                 "before moving house",
                                 "from my car",
                                 "at night",
                                 "for a refund",
                                 "in the shop",
                                 "by post",
                                 "after it broke",
                                 "on a weekend"};
    long v = i % 25, t = (i / 25) % 20, e = (i / 500) % 20;
    snprintf(out, cap, "%s do I %s my %s %s?", alt ? "How can" : "How", verb[v],
             thing[t], tail[e]);
}

/* One chat completion of question q; skip / no_store: the x-semcache
 * headers. */
static int call(CURL *c, const char *url, const char *q, bool skip,
                bool no_store, reply *r)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\","
             "\"content\":\"%s\"}]}",
             q);
    struct curl_slist *h =
        curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    if (skip) {
        h = curl_slist_append(h, "x-semcache-skip: 1");
    }
    if (no_store) {
        h = curl_slist_append(h, "x-semcache-no-store: 1");
    }
    memset(r, 0, sizeof(*r));
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, head_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    return cc == CURLE_OK && status == 200 ? 0 : -1;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct row {
    const char *what;
    double p50, p99, mean;
    long n, hits, errors;
} row;

/* kind: 0 direct upstream, 1 exact hits, 2 semantic hits (paraphrases), 3
 * passed through (skip, no-store). Latency over the calls counted. */
static row measure(CURL *c, const char *url, int kind, long entries,
                   long samples, const char *what)
{
    row r = {.what = what};
    double *lat = malloc((size_t)samples * sizeof(double));
    uint64_t rng = 42 + (uint64_t)kind;
    char q[256];
    reply rp;
    for (long i = 0; lat != NULL && i < samples; i++) {
        long k = (long)(sc_bench_rand(&rng) % (uint64_t)entries);
        question(k, kind == 2, q, sizeof(q));
        double t0 = sc_bench_now();
        int rc = call(c, url, q, kind == 3, kind == 3, &rp);
        double dt = sc_bench_now() - t0;
        if (rc != 0) {
            r.errors++;
            continue;
        }
        bool hit = strncmp(rp.xsc, "hit", 3) == 0;
        r.hits += hit;
        if (kind == 0 || kind == 3 || hit) {
            lat[r.n++] = dt * 1e6;
        }
    }
    if (r.n > 0) {
        qsort(lat, (size_t)r.n, sizeof(double), cmp_d);
        r.p50 = lat[r.n / 2];
        r.p99 = lat[(size_t)((double)r.n * 0.99)];
        double s = 0;
        for (long i = 0; i < r.n; i++) {
            s += lat[i];
        }
        r.mean = s / (double)r.n;
    }
    free(lat);
    return r;
}

int bench_proxy(const char *server, const char *table, long entries,
                long samples, int json)
{
    /* The tests' ports (SEMCACHE_TEST_PORTS, below the kernel's ephemeral
     * range, in slots locked against other runs): a port 0 bind handed out
     * and released is any outgoing connection's before the server binds it. */
    int up = sc_test_port_take("bench_service");
    int http = up < 0 ? -1 : sc_test_port_take("bench_service");
    int nport = http < 0 ? -1 : sc_test_port_take("bench_service");
    if (nport < 0 || sc_test_tmp_dir("bench_service") == NULL) {
        return 1;
    }
    pid_t fake = fake_spawn(up);
    if (fake < 0) {
        return 1;
    }
    char listen[64], haddr[64], upurl[64];
    snprintf(listen, sizeof(listen), "tcp://127.0.0.1:%d", nport);
    snprintf(haddr, sizeof(haddr), "127.0.0.1:%d", http);
    snprintf(upurl, sizeof(upurl), "http://127.0.0.1:%d", up);
    /* A data directory of its own: nothing restored, nothing left (in
     * this process's, tests/test_tmp.h: a run killed leaves it to the
     * next to remove). */
    char dir[256];
    sc_test_tmp_path("bench_service", dir, sizeof(dir), "proxy-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        kill(fake, SIGTERM);
        waitpid(fake, NULL, 0);
        return 1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        execl(server, server, "--listen", listen, "--http", haddr, "--upstream",
              upurl, "--embed-table", table, "--data-dir", dir, (char *)NULL);
        perror("exec semcached");
        _exit(127);
    }
    int status = 1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *c = curl_easy_init();
    char purl[96], durl[96], q[256];
    snprintf(purl, sizeof(purl), "http://%s/v1/chat/completions", haddr);
    snprintf(durl, sizeof(durl), "%s/v1/chat/completions", upurl);
    reply rp;
    int ready = 0;
    for (int i = 0; i < 100 && !ready; i++) {
        question(0, 0, q, sizeof(q));
        ready = call(c, durl, q, false, false, &rp) == 0 &&
                call(c, purl, "ping?", true, true, &rp) == 0;
        if (!ready) {
            usleep(100000);
        }
    }
    if (!ready) {
        fprintf(stderr, "bench_service: semcached or the fake upstream did "
                        "not start\n");
        goto out;
    }
    double t0 = sc_bench_now();
    long failed = 0;
    for (long i = 0; i < entries; i++) {
        /* Stored without a lookup: near neighbours would hit. */
        question(i, 0, q, sizeof(q));
        if (call(c, purl, q, true, false, &rp) != 0 ||
            strstr(rp.xsc, "stored=yes") == NULL) {
            failed++;
        }
    }
    double fill_s = sc_bench_now() - t0;
    if (failed > 0) {
        fprintf(stderr, "bench_service: %ld of %ld preloads not stored\n",
                failed, entries);
        goto out;
    }
    row rows[4] = {
        measure(c, durl, 0, entries, samples, "direct upstream"),
        measure(c, purl, 1, entries, samples, "proxy hit (exact)"),
        measure(c, purl, 2, entries, samples, "proxy hit (semantic)"),
        measure(c, purl, 3, entries, samples, "proxy pass-through"),
    };
    if (!json) {
        sc_bench_machine m;
        sc_bench_machine_read(&m);
        printf("proxy: %s, %ld cores; %ld entries preloaded through the "
               "proxy in %.1f s; %ld requests per row, one in flight, one "
               "kept-alive libcurl connection\n",
               m.cpu, m.cores, entries, fill_s, samples);
        printf("%-22s %9s %9s %9s %7s %8s %8s %7s\n", "path", "p50 us",
               "p99 us", "mean us", "hit%", "p50/dir", "p99/dir", "errors");
    }
    for (int i = 0; i < 4; i++) {
        const row *r = &rows[i];
        double hitpct = 100.0 * (double)r->hits / (double)samples;
        if (json) {
            sc_bench_json j;
            sc_bench_json_begin(&j);
            sc_bench_json_str(&j, "bench", "proxy");
            sc_bench_json_str(&j, "path", r->what);
            sc_bench_json_int(&j, "entries", entries);
            sc_bench_json_int(&j, "samples", samples);
            sc_bench_json_num(&j, "p50_us", r->p50);
            sc_bench_json_num(&j, "p99_us", r->p99);
            sc_bench_json_num(&j, "mean_us", r->mean);
            sc_bench_json_num(&j, "hit_fraction", hitpct / 100.0);
            sc_bench_json_num(&j, "p50_vs_direct", r->p50 / rows[0].p50);
            sc_bench_json_num(&j, "p99_vs_direct", r->p99 / rows[0].p99);
            sc_bench_json_int(&j, "errors", r->errors);
            sc_bench_json_end(&j, stdout);
        } else {
            printf("%-22s %9.1f %9.1f %9.1f %7.1f %8.2f %8.2f %7ld\n", r->what,
                   r->p50, r->p99, r->mean, hitpct, r->p50 / rows[0].p50,
                   r->p99 / rows[0].p99, r->errors);
        }
    }
    status = rows[1].errors + rows[2].errors + rows[0].errors > 0 ? 1 : 0;
out:
    curl_easy_cleanup(c);
    curl_global_cleanup();
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    kill(fake, SIGTERM);
    waitpid(fake, NULL, 0);
    /* No shell: TMPDIR may hold any name. */
    sc_test_tmp_remove(dir);
    return status;
}
