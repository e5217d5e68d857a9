/* bench_soak.c - `bench_service --soak SECONDS`: "does semcached hold up
 * under sustained load?" 64 requests in flight (one client thread each),
 * 80% lookups and 20% inserts, spread over two namespaces: "soak" with a
 * 2 s TTL (expiry runs) and "soak_lru" with a 1 MiB cap (LRU eviction runs,
 * whatever the machine's speed), on a server with a small --max-bytes. Every 10
 * s a line: lookups/s, inserts/s, p50/p99 latency of that interval, errors,
 * semcached's resident memory (VmRSS). At the end: totals; exits non-zero on
 * any error, a dead server, expiry or eviction that never ran, or an RSS at the
 * end over 2x the RSS after the first interval. */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench_soak.h"
#include "bench/bench_util.h"
#include "proto/client.h"
#include "proto/mp.h"
#include "tests/test_tmp.h"

#define SOAK_DIM       384
#define SOAK_INFLIGHT  64
#define SOAK_INTERVAL  10.0 /* seconds between report lines */
#define SOAK_TTL_S     2
#define SOAK_MAX_BYTES "16777216" /* the server's cap */
#define SOAK_COMPACT_BYTES "1048576" /* compactions every few seconds */
#define SOAK_NS_BYTES  1048576    /* soak_lru's cap: evicts past ~500 entries */
#define SC_DEFAULT_RECV_MAX "4194304"  /* semcached's --recv-max default */
#define RESTART_MAX_BYTES   "68719476736" /* --restart: no eviction */
#define SOAK_KEYS      20000u /* distinct prompts: lookups hit now and then */
#define HBUCKETS       512    /* latency histogram: 5% buckets from 1 us */

/* Counters of one interval (swapped out by the reporter) and of the run. */
typedef struct soak_counts {
    _Atomic uint64_t lookups, inserts, hits, errors;
    _Atomic uint64_t hist[HBUCKETS];
} soak_counts;

typedef struct soak {
    const char *url;
    double end;
    soak_counts iv, total;
    _Atomic int stop;
} soak;

static unsigned bucket_of(double sec)
{
    double us = sec * 1e6;
    if (us <= 1) {
        return 0;
    }
    unsigned b = (unsigned)(log(us) / log(1.05)) + 1;
    return b < HBUCKETS ? b : HBUCKETS - 1;
}

/* The upper edge of bucket b, in microseconds. */
static double bucket_us(unsigned b)
{
    return b == 0 ? 1 : pow(1.05, (double)b);
}

static double quantile(const uint64_t *h, double q)
{
    uint64_t n = 0;
    for (unsigned b = 0; b < HBUCKETS; b++) {
        n += h[b];
    }
    if (n == 0) {
        return NAN;
    }
    uint64_t want = (uint64_t)ceil(q * (double)n), seen = 0;
    for (unsigned b = 0; b < HBUCKETS; b++) {
        seen += h[b];
        if (seen >= want) {
            return bucket_us(b);
        }
    }
    return bucket_us(HBUCKETS - 1);
}

static void count(soak *s, int insert, int ok, int hit, double lat)
{
    soak_counts *cs[2] = {&s->iv, &s->total};
    for (int i = 0; i < 2; i++) {
        if (!ok) {
            atomic_fetch_add(&cs[i]->errors, 1);
            continue;
        }
        atomic_fetch_add(insert ? &cs[i]->inserts : &cs[i]->lookups, 1);
        if (hit) {
            atomic_fetch_add(&cs[i]->hits, 1);
        }
        atomic_fetch_add(&cs[i]->hist[bucket_of(lat)], 1);
    }
}

typedef struct worker {
    soak *s;
    int id;
} worker;

static void *soak_main(void *arg)
{
    worker *w = arg;
    soak *s = w->s;
    sc_client *c;
    if (sc_client_open(s->url, 5000, &c) != SC_OK) {
        count(s, 0, 0, 0, 0);
        return NULL;
    }
    uint64_t rs = 77 + (uint64_t)w->id * 1000003;
    float v[SOAK_DIM];
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    while (!atomic_load(&s->stop) && sc_bench_now() < s->end) {
        uint64_t r = sc_bench_rand(&rs);
        int insert = r % 100 < 20;
        uint64_t key = (r >> 8) % SOAK_KEYS;
        sc_bench_vec(key, v, SOAK_DIM);
        msgpack_sbuffer_clear(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, insert ? 5 : 4);
        mp_put_key(&pk, "v");
        msgpack_pack_uint32(&pk, 1);
        mp_put_key(&pk, "op");
        mp_put_str(&pk, insert ? "insert" : "lookup");
        mp_put_key(&pk, "ns");
        mp_put_str(&pk, key % 2 ? "soak_lru" : "soak");
        mp_put_key(&pk, "vec");
        mp_put_vec(&pk, v, SOAK_DIM);
        if (insert) {
            char resp[64];
            int n = snprintf(resp, sizeof(resp), "soak answer %llu",
                             (unsigned long long)key);
            mp_put_key(&pk, "response");
            mp_put_bin(&pk, resp, (size_t)n);
        }
        uint8_t *reply = NULL;
        size_t rlen = 0;
        double t0 = sc_bench_now();
        sc_err rc = sc_client_call(c, sb.data, sb.size, &reply, &rlen);
        double t1 = sc_bench_now();
        int ok = rc == SC_OK && memmem(reply, rlen, "\xa2ok\xc3", 4) != NULL;
        int hit = ok && !insert && memmem(reply, rlen, "\xa3hit\xc3", 5);
        if (!ok && rc == SC_OK && atomic_load(&s->total.errors) < 5) {
            fprintf(stderr, "bench_service: soak: error reply (%zu bytes)\n",
                    rlen);
        } else if (rc != SC_OK && atomic_load(&s->total.errors) < 5) {
            fprintf(stderr, "bench_service: soak: %s\n", sc_strerror(rc));
        }
        count(s, insert, ok, hit, t1 - t0);
        free(reply);
    }
    msgpack_sbuffer_destroy(&sb);
    sc_client_close(c);
    return NULL;
}

/* Resident memory of pid in KiB (VmRSS), 0 when unknown. */
static long rss_kb(pid_t pid)
{
    if (pid <= 0) {
        return 0;
    }
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = 0;
    if (f == NULL) {
        return 0;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = atol(line + 6);
        }
    }
    fclose(f);
    return kb;
}

/* One request; the reply is the caller's (NULL on a transport error). */
static uint8_t *call_once_ms(const char *url, const void *req, size_t len,
                             size_t *rlen, int timeout_ms)
{
    sc_client *c;
    uint8_t *reply = NULL;
    if (sc_client_open(url, timeout_ms, &c) != SC_OK) {
        return NULL;
    }
    if (sc_client_call(c, req, len, &reply, rlen) != SC_OK) {
        reply = NULL;
    }
    sc_client_close(c);
    return reply;
}

static uint8_t *call_once(const char *url, const void *req, size_t len,
                          size_t *rlen)
{
    return call_once_ms(url, req, len, rlen, 5000);
}

/* A uint field of a stats reply's result map (0 when absent). */
static uint64_t stat_field(const uint8_t *b, size_t n, const char *key)
{
    mp_reader r;
    uint32_t m, rm;
    mp_reader_init(&r, b, n);
    if (mp_read_map(&r, &m) != 0) {
        return 0;
    }
    for (uint32_t i = 0; i < m; i++) {
        const char *k;
        uint32_t kl;
        if (mp_read_str(&r, &k, &kl) != 0) {
            return 0;
        }
        if (kl == 6 && memcmp(k, "result", 6) == 0 &&
            mp_read_map(&r, &rm) == 0) {
            for (uint32_t j = 0; j < rm; j++) {
                uint64_t v;
                if (mp_read_str(&r, &k, &kl) != 0) {
                    return 0;
                }
                if (kl == strlen(key) && memcmp(k, key, kl) == 0 &&
                    mp_read_uint(&r, &v) == 0) {
                    return v;
                }
                if (mp_skip(&r) != 0) {
                    return 0;
                }
            }
            return 0;
        }
        if (mp_skip(&r) != 0) {
            return 0;
        }
    }
    return 0;
}

static int server_alive(pid_t pid)
{
    return pid <= 0 || waitpid(pid, NULL, WNOHANG) == 0;
}

/* Starts semcached on dir, persisting there with a small compaction size
 * so that compactions run all through the soak; its log (an "expired N
 * entries" line a second) is appended to dir/semcached.log, kept when the
 * soak fails. */
static pid_t start_server_with(const char *server, const char *url,
                               const char *threads, const char *dir,
                               const char *max_bytes, const char *compact,
                               const char *recv_max, const char *stop_snap)
{
    pid_t pid = fork();
    if (pid == 0) {
        char logp[300];
        snprintf(logp, sizeof(logp), "%s/semcached.log", dir);
        if (freopen(logp, "a", stderr) == NULL) {
            _exit(126);
        }
        execl(server, server, "--listen", url, "--threads", threads,
              "--max-bytes", max_bytes, "--data-dir", dir, "--compact-bytes",
              compact, "--recv-max", recv_max, "--snapshot-at-stop", stop_snap,
              (char *)NULL);
        perror("exec semcached");
        _exit(127);
    }
    return pid;
}

static pid_t start_server(const char *server, const char *url,
                          const char *threads, const char *dir)
{
    return start_server_with(server, url, threads, dir, SOAK_MAX_BYTES,
                             SOAK_COMPACT_BYTES, SC_DEFAULT_RECV_MAX, "on");
}

/* Waits up to ms milliseconds for a ping's answer: a new connection
 * every 10 ms or so, each given 50 ms for the first 10 s (a dialer left to
 * retry would reconnect at its own pace, which would blur a timed
 * restart), 1 s after that. */
static int wait_up_for(const char *addr, int ms)
{
    static const uint8_t ping[] = "\x82\xa1v\x01\xa2op\xa4ping";
    double t0 = sc_bench_now(), end = t0 + ms / 1000.0;
    while (sc_bench_now() < end) {
        size_t rl;
        /* After 10 s, a server that is up but slow (a sanitizer build on a
         * loaded machine) gets a second to answer. */
        int wait = sc_bench_now() - t0 < 10.0 ? 50 : 1000;
        uint8_t *rep = call_once_ms(addr, ping, sizeof(ping) - 1, &rl, wait);
        free(rep);
        if (rep != NULL) {
            return 1;
        }
        usleep(10000);
    }
    return 0;
}

static int wait_up(const char *addr)
{
    return wait_up_for(addr, 30000);
}

/* SIGTERM, then the exit status (-1 when it did not exit 0). */
static int stop_server(pid_t pid)
{
    int st = 0;
    kill(pid, SIGTERM);
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
        WEXITSTATUS(st) != 0) {
        fprintf(stderr, "bench_service: soak: semcached exited with status "
                        "%d\n", st);
        return -1;
    }
    return 0;
}

/* Lines of dir/semcached.log holding what. */
static unsigned log_count(const char *dir, const char *what)
{
    char logp[300], line[1024];
    snprintf(logp, sizeof(logp), "%s/semcached.log", dir);
    FILE *f = fopen(logp, "r");
    unsigned n = 0;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        n += strstr(line, what) != NULL;
    }
    if (f != NULL) {
        fclose(f);
    }
    return n;
}

/* Removes the soak's directory: its log and the persisted state (no
 * shell: TMPDIR may hold any name). */
static void remove_dir(const char *dir)
{
    sc_test_tmp_remove(dir);
}

int bench_soak(const char *server, const char *addr, const char *url,
               const char *threads, double seconds, int json)
{
    char dir[256];
    pid_t pid = -1;
    if (addr == NULL) {
        /* In this process's directory (tests/test_tmp.h): a run killed
         * leaves it to the next to remove. */
        sc_test_tmp_path("bench_service", dir, sizeof(dir), "soak-XXXXXX");
        if (mkdtemp(dir) == NULL) {
            perror("bench_service: mkdtemp");
            return 1;
        }
        pid = start_server(server, url, threads, dir);
        addr = url;
    }
    int up = wait_up(addr);
    int fail = !up;
    size_t rl = 0;
    uint8_t *rep = NULL;
    /* The namespaces: "soak" expires after 2 s, "soak_lru" evicts. */
    for (int k = 0; k < 2 && !fail; k++) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 5);
        mp_put_key(&pk, "v");
        msgpack_pack_uint32(&pk, 1);
        mp_put_key(&pk, "op");
        mp_put_str(&pk, "ns_create");
        mp_put_key(&pk, "ns");
        mp_put_str(&pk, k ? "soak_lru" : "soak");
        mp_put_key(&pk, "dim");
        msgpack_pack_uint32(&pk, SOAK_DIM);
        mp_put_key(&pk, k ? "max_bytes" : "ttl");
        msgpack_pack_uint32(&pk, k ? SOAK_NS_BYTES : SOAK_TTL_S);
        rep = call_once(addr, sb.data, sb.size, &rl);
        msgpack_sbuffer_destroy(&sb);
        if (rep == NULL || memmem(rep, rl, "\xa2ok\xc3", 4) == NULL) {
            fprintf(stderr, "bench_service: soak: ns_create failed (do "
                            "'soak' and 'soak_lru' exist already?)\n");
            fail = 1;
        }
        free(rep);
    }
    if (fail) {
        if (pid > 0) {
            kill(pid, SIGTERM);
            waitpid(pid, NULL, 0);
        }
        fprintf(stderr, "bench_service: soak: semcached did not start\n");
        return 1;
    }

    soak *s = calloc(1, sizeof(*s));
    s->url = addr;
    double t0 = sc_bench_now();
    s->end = t0 + seconds;
    long rss0 = rss_kb(pid), rss_first = 0, rss_max = rss0;
    if (!json) {
        printf("soak: %.0f s, %d requests in flight, 80%% lookups / 20%% "
               "inserts, d = %d, ttl %d s / max_bytes %d, --max-bytes %s; "
               "semcached RSS at start %.1f MiB\n",
               seconds, SOAK_INFLIGHT, SOAK_DIM, SOAK_TTL_S, SOAK_NS_BYTES,
               SOAK_MAX_BYTES, (double)rss0 / 1024);
        printf("%7s %11s %11s %9s %9s %7s %9s %9s\n", "t s", "lookups/s",
               "inserts/s", "p50 us", "p99 us", "errors", "entries", "rss MiB");
    } else {
        printf("{\"bench\":\"soak_start\",\"seconds\":%.0f,\"inflight\":%d,"
               "\"d\":%d,\"ttl_s\":%d,\"max_bytes\":%s,\"rss_kb\":%ld}\n",
               seconds, SOAK_INFLIGHT, SOAK_DIM, SOAK_TTL_S, SOAK_MAX_BYTES,
               rss0);
    }
    fflush(stdout);
    pthread_t tids[SOAK_INFLIGHT];
    worker ws[SOAK_INFLIGHT];
    for (int i = 0; i < SOAK_INFLIGHT; i++) {
        ws[i] = (worker){s, i};
        pthread_create(&tids[i], NULL, soak_main, &ws[i]);
    }
    static const uint8_t stats_req[] = "\x82\xa1v\x01\xa2op\xa5stats";
    double last = t0;
    int intervals = 0;
    while (last < s->end) {
        double next = last + SOAK_INTERVAL;
        if (next > s->end) {
            next = s->end;
        }
        while (sc_bench_now() < next) {
            usleep(50000);
            if (!server_alive(pid)) {
                break;
            }
        }
        double t = sc_bench_now();
        uint64_t h[HBUCKETS];
        for (unsigned b = 0; b < HBUCKETS; b++) {
            h[b] = atomic_exchange(&s->iv.hist[b], 0);
        }
        uint64_t lk = atomic_exchange(&s->iv.lookups, 0);
        uint64_t in = atomic_exchange(&s->iv.inserts, 0);
        uint64_t er = atomic_exchange(&s->iv.errors, 0);
        (void)atomic_exchange(&s->iv.hits, 0);
        long rss = rss_kb(pid);
        if (intervals++ == 0) {
            rss_first = rss;
        }
        rss_max = rss > rss_max ? rss : rss_max;
        rep = call_once(addr, stats_req, sizeof(stats_req) - 1, &rl);
        uint64_t entries = rep ? stat_field(rep, rl, "entries") : 0;
        free(rep);
        double el = t - last;
        if (json) {
            printf("{\"bench\":\"soak\",\"t_s\":%.1f,\"lookups_per_s\":%.1f,"
                   "\"inserts_per_s\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
                   "\"errors\":%llu,\"entries\":%llu,\"rss_kb\":%ld}\n",
                   t - t0, (double)lk / el, (double)in / el, quantile(h, 0.5),
                   quantile(h, 0.99), (unsigned long long)er,
                   (unsigned long long)entries, rss);
        } else {
            printf("%7.1f %11.0f %11.0f %9.0f %9.0f %7llu %9llu %9.1f\n",
                   t - t0, (double)lk / el, (double)in / el, quantile(h, 0.5),
                   quantile(h, 0.99), (unsigned long long)er,
                   (unsigned long long)entries, (double)rss / 1024);
        }
        fflush(stdout);
        last = t;
        if (!server_alive(pid)) {
            atomic_store(&s->stop, 1);
            break;
        }
    }
    atomic_store(&s->stop, 1);
    for (int i = 0; i < SOAK_INFLIGHT; i++) {
        pthread_join(tids[i], NULL);
    }
    double el = sc_bench_now() - t0;
    int alive = server_alive(pid);
    long rss1 = alive ? rss_kb(pid) : 0;
    rep = alive ? call_once(addr, stats_req, sizeof(stats_req) - 1, &rl) : NULL;
    uint64_t expired = rep ? stat_field(rep, rl, "expirations") : 0;
    uint64_t evicted = rep ? stat_field(rep, rl, "evictions") : 0;
    free(rep);
    uint64_t h[HBUCKETS];
    for (unsigned b = 0; b < HBUCKETS; b++) {
        h[b] = atomic_load(&s->total.hist[b]);
    }
    uint64_t lk = atomic_load(&s->total.lookups);
    uint64_t in = atomic_load(&s->total.inserts);
    uint64_t hits = atomic_load(&s->total.hits);
    uint64_t er = atomic_load(&s->total.errors);
    int bounded = pid <= 0 || rss1 <= 2 * rss_first;
    int ok = alive && er == 0 && bounded && expired > 0 && evicted > 0;
    /* The state survives: soak_lru (no TTL) holds after a restart exactly
     * the entries it held at the stop. */
    static const uint8_t lru_req[] =
        "\x83\xa1v\x01\xa2op\xa5stats\xa2ns\xa8soak_lru";
    uint64_t lru_before = 0, lru_after = UINT64_MAX;
    unsigned compactions = 0;
    int restored = -1; /* not checked (an outside server) */
    if (pid > 0) {
        if (alive) {
            rep = call_once(addr, lru_req, sizeof(lru_req) - 1, &rl);
            lru_before = rep ? stat_field(rep, rl, "entries") : 0;
            free(rep);
        }
        /* A clean shutdown too (under ASan: no leak at exit). */
        if (!alive || stop_server(pid) != 0) {
            ok = 0;
        }
        compactions = log_count(dir, "compacted:");
        if (ok) {
            pid = start_server(server, url, threads, dir);
            if (wait_up(addr)) {
                rep = call_once(addr, lru_req, sizeof(lru_req) - 1, &rl);
                lru_after = rep ? stat_field(rep, rl, "entries") : 0;
                free(rep);
            }
            restored = lru_after == lru_before && lru_before > 0;
            if (stop_server(pid) != 0 || !restored) {
                ok = 0;
            }
        }
    }
    if (json) {
        printf("{\"bench\":\"soak_total\",\"seconds\":%.1f,\"requests\":%llu,"
               "\"lookups\":%llu,\"inserts\":%llu,\"hits\":%llu,"
               "\"errors\":%llu,\"p50_us\":%.1f,\"p99_us\":%.1f,"
               "\"expirations\":%llu,\"evictions\":%llu,"
               "\"rss_start_kb\":%ld,\"rss_first_kb\":%ld,\"rss_max_kb\":%ld,"
               "\"rss_end_kb\":%ld,\"server_alive\":%s,"
               "\"compactions\":%u,\"lru_entries_at_stop\":%llu,"
               "\"lru_entries_restored\":%llu,\"ok\":%s}\n",
               el, (unsigned long long)(lk + in), (unsigned long long)lk,
               (unsigned long long)in, (unsigned long long)hits,
               (unsigned long long)er, quantile(h, 0.5), quantile(h, 0.99),
               (unsigned long long)expired, (unsigned long long)evicted, rss0,
               rss_first, rss_max, rss1, alive ? "true" : "false",
               compactions, (unsigned long long)lru_before,
               (unsigned long long)(restored >= 0 ? lru_after : 0),
               ok ? "true" : "false");
    } else {
        printf("soak: %llu requests in %.1f s (%llu lookups, %llu hits, %llu "
               "inserts), %llu errors, p50 %.0f us, p99 %.0f us; %llu "
               "expired, %llu evicted; semcached %s; RSS start %.1f MiB, "
               "after %.0f s %.1f MiB, max %.1f MiB, end %.1f MiB (%s)\n",
               (unsigned long long)(lk + in), el, (unsigned long long)lk,
               (unsigned long long)hits, (unsigned long long)in,
               (unsigned long long)er, quantile(h, 0.5), quantile(h, 0.99),
               (unsigned long long)expired, (unsigned long long)evicted,
               alive ? "alive" : "DEAD", (double)rss0 / 1024, SOAK_INTERVAL,
               (double)rss_first / 1024, (double)rss_max / 1024,
               (double)rss1 / 1024,
               bounded ? "bounded" : "over 2x the first interval's");
        if (restored >= 0) {
            printf("soak: persisted with %u compactions during the run; "
                   "after a restart soak_lru holds %llu entries, %llu at the "
                   "stop (%s)\n",
                   compactions, (unsigned long long)lru_after,
                   (unsigned long long)lru_before,
                   restored ? "all restored" : "MISMATCH");
        }
        printf("soak: %s\n", ok ? "PASS" : "FAIL");
    }
    free(s);
    if (pid > 0) {
        char logp[300];
        snprintf(logp, sizeof(logp), "%s/semcached.log", dir);
        char kept[512];
        if (ok) {
            remove_dir(dir);
        } else if (sc_test_tmp_keep("bench_service", dir, kept, sizeof(kept)) ==
                   0) {
            /* Out of the run directory, which goes at the exit. */
            fprintf(stderr, "bench_service: soak: semcached's log: %s/%s\n",
                    kept, "semcached.log");
        } else {
            fprintf(stderr, "bench_service: soak: semcached's log: %s\n", logp);
        }
    }
    return ok ? 0 : 1;
}

/* ---- bench_service --restart N ------------------------------------------
 * "How long is a persisted semcached down when it restarts?" For each of
 * three states, a server on a fresh directory is filled with n entries of
 * d = 384 (one namespace), stopped with SIGTERM and started again on the
 * same directory; the restart is timed from exec to the first answered
 * ping (semcached listens once the state is loaded), and the restored
 * namespace must hold all n. "log": no compaction (--compact-bytes past
 * the data), so the start replays the whole log; "snapshot": the smallest
 * --compact-bytes (1 MiB), so compactions run all through the fill (and
 * one at least has ended before the stop), and the start loads the newest
 * snapshot plus the log after it; both with --snapshot-at-stop off.
 * "stop": no compaction, and the snapshot semcached writes as it stops
 * (the default), so the stop takes longer and the start loads it alone.
 * Ratio: entries restored
 * per second over entries inserted per second in the same run. */

/* Bytes of dir/state's files whose names start with prefix. */
static uint64_t state_bytes(const char *dir, const char *prefix)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/state", dir);
    DIR *d = opendir(path);
    uint64_t n = 0;
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        struct stat st;
        char f[512];
        snprintf(f, sizeof(f), "%s/%s", path, de->d_name);
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 &&
            stat(f, &st) == 0 && S_ISREG(st.st_mode)) {
            n += (uint64_t)st.st_size;
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    return n;
}

/* The snapshot mode's wait: up to 120 s for a compaction to end (they
 * start from a once-a-second check), polling semcached's log, and, each
 * time, that semcached (pid, not yet reaped) still runs. Returns 0 when a
 * compaction ended, the time ran out, or filled is false (the fill
 * failed: nothing to wait for); -1 at once when semcached has exited,
 * reaped, said on stderr with how it ended (its log, in dir, is kept by
 * the caller: the mode fails). */
static int wait_compaction(pid_t pid, const char *dir, int filled)
{
    for (int w = 0; w < 1200; w++) {
        int st = 0;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            char how[64];
            if (WIFSIGNALED(st)) {
                snprintf(how, sizeof(how), "killed by signal %d", WTERMSIG(st));
            } else {
                snprintf(how, sizeof(how), "exit status %d",
                         WIFEXITED(st) ? WEXITSTATUS(st) : st);
            }
            fprintf(stderr,
                    "bench_service: restart: snapshot: semcached (pid %ld) "
                    "exited (%s) %s a compaction: not restarted (its log, "
                    "in the directory kept)\n",
                    (long)pid, how,
                    filled ? "while waiting for" : "in the fill, before");
            return -1;
        }
        if (!filled || log_count(dir, "compacted:") > 0) {
            return 0;
        }
        usleep(100000);
    }
    return 0;
}

int bench_restart(const char *server, const char *url, const char *threads,
                  uint64_t n, bench_fill_fn fill, int json)
{
    static const char *const modes[3] = {"log", "snapshot", "stop"};
    static const char *const compact[3] = {"1099511627776", "1048576",
                                           "1099511627776"};
    static const char *const stop_snap[3] = {"off", "off", "on"};
    static const uint8_t stats_req[] =
        "\x83\xa1v\x01\xa2op\xa5stats\xa2ns\xa7restart";
    int ok_all = 1;
    if (!json) {
        printf("restart: %llu entries of d = %d in one namespace, persisted "
               "(fsync everysec), SIGTERM, start again on the same data\n",
               (unsigned long long)n, SOAK_DIM);
        printf("%-9s %9s %12s %8s %10s %12s %7s %9s %8s %6s %9s %9s %s\n",
               "state", "entries", "inserts/s", "stop s", "restart s",
               "restored/s", "ratio", "snap MiB", "log MiB", "compct",
               "rss0 MiB", "rss1 MiB", "restored");
    }
    for (int m = 0; m < 3; m++) {
        char dir[256];
        sc_test_tmp_path("bench_service", dir, sizeof(dir), "restart-XXXXXX");
        if (mkdtemp(dir) == NULL) {
            perror("bench_service: mkdtemp");
            return 1;
        }
        int ok = 0;
        double fill_s = NAN, stop_s = NAN, start_s = NAN;
        long rss0 = 0, rss1 = 0;
        uint64_t restored = 0, snap = 0, logb = 0;
        unsigned compactions = 0;
        pid_t pid =
            start_server_with(server, url, threads, dir, RESTART_MAX_BYTES,
                              compact[m], SC_DEFAULT_RECV_MAX, stop_snap[m]);
        if (wait_up_for(url, 60000)) {
            double t0 = sc_bench_now();
            int filled = fill(url, "restart", n) == 0;
            fill_s = sc_bench_now() - t0;
            /* Snapshot: at least one compaction done before the stop;
             * a semcached that died meanwhile ends the mode at once (the
             * wait checked neither, and waited its 120 s). */
            int stopped = 0;
            if (m == 1 && wait_compaction(pid, dir, filled) != 0) {
                filled = 0;
            } else {
                rss0 = rss_kb(pid);
                t0 = sc_bench_now();
                stopped = stop_server(pid) == 0;
                stop_s = sc_bench_now() - t0;
            }
            pid = -1;
            snap = state_bytes(dir, "snap.");
            logb = state_bytes(dir, "log.");
            compactions = log_count(dir, "compacted:");
            if (filled && stopped) {
                t0 = sc_bench_now();
                pid = start_server_with(server, url, threads, dir,
                                        RESTART_MAX_BYTES, compact[m],
                                        SC_DEFAULT_RECV_MAX, stop_snap[m]);
                int up = wait_up_for(url, 600000);
                start_s = sc_bench_now() - t0;
                if (up) {
                    size_t rl;
                    uint8_t *rep =
                        call_once(url, stats_req, sizeof(stats_req) - 1, &rl);
                    restored = rep ? stat_field(rep, rl, "entries") : 0;
                    free(rep);
                    rss1 = rss_kb(pid);
                }
                /* Stopped whatever it restored: one left running (it was
                 * when restored != n) held the address, so the next
                 * modes could not listen, and outlived bench_service. */
                int stopped_again = up && stop_server(pid) == 0;
                ok = up && restored == n && stopped_again;
                if (up) {
                    pid = -1; /* reaped by stop_server(); else killed below */
                }
            }
        }
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        double ins = (double)n / fill_s, res = (double)n / start_s;
        if (json) {
            sc_bench_json j;
            sc_bench_json_begin(&j);
            sc_bench_json_str(&j, "bench", "restart");
            sc_bench_json_str(&j, "state", modes[m]);
            sc_bench_json_int(&j, "entries", (long long)n);
            sc_bench_json_int(&j, "d", SOAK_DIM);
            sc_bench_json_num(&j, "inserts_per_s", ins);
            sc_bench_json_num(&j, "stop_s", stop_s);
            sc_bench_json_num(&j, "restart_s", start_s);
            sc_bench_json_num(&j, "restored_per_s", res);
            sc_bench_json_num(&j, "restore_vs_insert", res / ins);
            sc_bench_json_int(&j, "snapshot_bytes", (long long)snap);
            sc_bench_json_int(&j, "log_bytes", (long long)logb);
            sc_bench_json_int(&j, "compactions", compactions);
            sc_bench_json_int(&j, "rss_kb_before", rss0);
            sc_bench_json_int(&j, "rss_kb_after", rss1);
            sc_bench_json_int(&j, "restored", (long long)restored);
            sc_bench_json_bool(&j, "ok", ok);
            sc_bench_json_end(&j, stdout);
        } else {
            printf("%-9s %9llu %12.0f %8.2f %10.2f %12.0f %7.2f %9.1f %8.1f "
                   "%6u %9.1f %9.1f %s\n",
                   modes[m], (unsigned long long)n, ins, stop_s, start_s, res,
                   res / ins, (double)snap / 1048576.0,
                   (double)logb / 1048576.0, compactions, (double)rss0 / 1024,
                   (double)rss1 / 1024, ok ? "all" : "MISSING");
            fflush(stdout);
        }
        char kept[512];
        if (ok) {
            remove_dir(dir);
        } else {
            /* Out of the run directory, which goes at the exit. */
            fprintf(
                stderr, "bench_service: restart: kept %s (semcached.log)\n",
                sc_test_tmp_keep("bench_service", dir, kept, sizeof(kept)) == 0
                    ? kept
                    : dir);
            ok_all = 0;
        }
    }
    return ok_all ? 0 : 1;
}
