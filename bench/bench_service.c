/* bench_service.c - "how fast is semcached over its socket?" Starts a real
 * semcached (or uses --addr), fills a namespace with N entries of d = 384,
 * then drives closed-loop lookups from C client threads (each request in
 * flight is one thread with one request outstanding), with a chosen
 * fraction of hits. In the same run it measures a bare nng REQ/REP echo
 * server with the same message sizes: the transport's floor. Prints a table,
 * or one JSON object per line with --json. */
#define _GNU_SOURCE
#include <math.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench_proxy.h"
#include "bench/bench_soak.h"
#include "bench/bench_util.h"
#include "proto/client.h"
#include "proto/mp.h"
#include "tests/test_ports.h"
#include "tests/test_tmp.h"

#define DIM 384

/* ---- the echo floor ------------------------------------------------- */

typedef struct echo {
    nng_socket sock;
    pthread_t tids[64];
    int n;
} echo;

static void *echo_main(void *arg)
{
    echo *e = arg;
    nng_ctx ctx;
    nng_aio *aio;
    if (nng_ctx_open(&ctx, e->sock) != 0 || nng_aio_alloc(&aio, NULL, NULL)) {
        return NULL;
    }
    for (;;) {
        nng_ctx_recv(ctx, aio);
        nng_aio_wait(aio);
        if (nng_aio_result(aio) != 0) {
            break;
        }
        /* Answer with a reply of a lookup's size: a short map. */
        nng_msg *m = nng_aio_get_msg(aio);
        nng_msg_clear(m);
        nng_msg_append(m, "\x83\xa2ok\xc3\xa6result\x80\xa2id\x00", 15);
        nng_aio_set_msg(aio, m);
        nng_ctx_send(ctx, aio);
        nng_aio_wait(aio);
        if (nng_aio_result(aio) != 0) {
            nng_msg_free(nng_aio_get_msg(aio));
        }
    }
    nng_aio_free(aio);
    return NULL;
}

/* Runs the echo in a process of its own, as semcached runs in its own:
 * neither shares the load generator's nng threads. Called before this
 * process uses nng (fork and nng's threads do not mix). Returns the
 * child's pid, or -1. */
static pid_t echo_spawn(const char *url, int threads)
{
    pid_t pid = fork();
    if (pid != 0) {
        return pid;
    }
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, NULL);
    echo e;
    if (nng_rep0_open(&e.sock) != 0 || nng_listen(e.sock, url, NULL, 0) != 0) {
        fprintf(stderr, "bench_service: echo server cannot listen on %s\n",
                url);
        _exit(1);
    }
    e.n = threads < 1 ? 1 : threads < 64 ? threads : 64;
    for (int i = 0; i < e.n; i++) {
        pthread_create(&e.tids[i], NULL, echo_main, &e);
    }
    int sig;
    sigwait(&term, &sig);
    nng_close(e.sock);
    for (int i = 0; i < e.n; i++) {
        pthread_join(e.tids[i], NULL);
    }
    _exit(0);
}

/* ---- load ----------------------------------------------------------- */

typedef struct load {
    const char *url;
    const char *ns;
    uint64_t entries;
    double hit_fraction;
    int batch;
    double seconds;
    int thread;
    /* results */
    uint64_t done;
    uint64_t errors;
    uint64_t hits;
    double *lat; /* per request, seconds */
    size_t nlat, caplat;
} load;

static void *load_main(void *arg)
{
    load *l = arg;
    sc_client *c;
    if (sc_client_open(l->url, 5000, &c) != SC_OK) {
        l->errors++;
        return NULL;
    }
    uint64_t s = 1000 + (uint64_t)l->thread;
    float *v = malloc(sizeof(float) * DIM * (size_t)l->batch);
    /* Requests are built before the clock starts and then cycled, so that
     * the load generator spends its time sending, not encoding. */
    enum { POOL = 32 };
    msgpack_sbuffer pool[POOL];
    for (int pi = 0; pi < POOL; pi++) {
        msgpack_sbuffer *sb = &pool[pi];
        msgpack_sbuffer_init(sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
        int batch = l->batch > 1;
        msgpack_pack_map(&pk, 4);
        mp_put_key(&pk, "v");
        msgpack_pack_uint32(&pk, 1);
        mp_put_key(&pk, "op");
        mp_put_str(&pk, batch ? "lookup_batch" : "lookup");
        mp_put_key(&pk, "ns");
        mp_put_str(&pk, l->ns);
        for (int b = 0; b < l->batch; b++) {
            float *x = v + (size_t)b * DIM;
            int hit = (double)(sc_bench_rand(&s) >> 11) / 9007199254740992.0 <
                      l->hit_fraction;
            sc_bench_vec(hit ? sc_bench_rand(&s) % l->entries
                             : l->entries + sc_bench_rand(&s) % 1000000,
                         x, DIM);
        }
        if (batch) {
            mp_put_key(&pk, "items");
            msgpack_pack_array(&pk, (size_t)l->batch);
            for (int b = 0; b < l->batch; b++) {
                msgpack_pack_map(&pk, 1);
                mp_put_key(&pk, "vec");
                mp_put_vec(&pk, v + (size_t)b * DIM, DIM);
            }
        } else {
            mp_put_key(&pk, "vec");
            mp_put_vec(&pk, v, DIM);
        }
    }
    double end = sc_bench_now() + l->seconds;
    for (unsigned next = 0; sc_bench_now() < end; next++) {
        msgpack_sbuffer *sb = &pool[next % POOL];
        uint8_t *reply = NULL;
        size_t rlen = 0;
        double t0 = sc_bench_now();
        sc_err rc = sc_client_call(c, sb->data, sb->size, &reply, &rlen);
        double t1 = sc_bench_now();
        if (rc != SC_OK || rlen < 4 ||
            memmem(reply, rlen, "\xa2ok\xc3", 4) == NULL) {
            l->errors++;
        } else {
            l->done += (uint64_t)l->batch;
            /* A hit's reply carries its response bytes. */
            const char *p = (const char *)reply;
            for (size_t i = 0; i + 5 <= rlen; i++) {
                if (memcmp(p + i, "\xa3hit\xc3", 5) == 0) {
                    l->hits++;
                }
            }
            if (l->nlat == l->caplat) {
                l->caplat = l->caplat ? l->caplat * 2 : 4096;
                l->lat = realloc(l->lat, l->caplat * sizeof(double));
            }
            l->lat[l->nlat++] = t1 - t0;
        }
        free(reply);
    }
    for (int pi = 0; pi < POOL; pi++) {
        msgpack_sbuffer_destroy(&pool[pi]);
    }
    free(v);
    sc_client_close(c);
    return NULL;
}

/* CPU seconds (user + system) used so far by this process, or by process
 * pid (from /proc; 0 when it cannot be read). */
static double cpu_self(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static double cpu_of(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    char buf[1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields 14 and 15 (utime, stime) follow the ")" that ends the name. */
    const char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
               &ut, &st) != 2) {
        return 0;
    }
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct result {
    double per_s, p50_us, p99_us;
    double client_cpu_us, server_cpu_us; /* per request */
    uint64_t errors, hits, done;
} result;

static result run_load(const char *url, const char *ns, uint64_t entries,
                       int clients, int batch, double hit_fraction,
                       double seconds, pid_t server)
{
    double cpu0 = cpu_self(), scpu0 = server > 0 ? cpu_of(server) : 0;
    load *ls = calloc((size_t)clients, sizeof(load));
    pthread_t *t = calloc((size_t)clients, sizeof(pthread_t));
    for (int i = 0; i < clients; i++) {
        ls[i] = (load){url, ns, entries, hit_fraction, batch, seconds, i,
                       0,   0,  0,       NULL,         0,     0};
        pthread_create(&t[i], NULL, load_main, &ls[i]);
    }
    double t0 = sc_bench_now();
    size_t nlat = 0;
    result r = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < clients; i++) {
        pthread_join(t[i], NULL);
        nlat += ls[i].nlat;
        r.errors += ls[i].errors;
        r.hits += ls[i].hits;
        r.done += ls[i].done;
    }
    double el = sc_bench_now() - t0;
    double reqs = r.done ? (double)r.done / batch : 1;
    r.client_cpu_us = (cpu_self() - cpu0) / reqs * 1e6;
    r.server_cpu_us =
        server > 0 ? (cpu_of(server) - scpu0) / reqs * 1e6 : (double)NAN;
    double *all = malloc((nlat ? nlat : 1) * sizeof(double));
    size_t k = 0;
    for (int i = 0; i < clients; i++) {
        memcpy(all + k, ls[i].lat, ls[i].nlat * sizeof(double));
        k += ls[i].nlat;
        free(ls[i].lat);
    }
    qsort(all, nlat, sizeof(double), cmp_d);
    r.per_s = (double)r.done / el;
    r.p50_us = nlat ? all[nlat / 2] * 1e6 : NAN;
    r.p99_us = nlat ? all[(size_t)((double)nlat * 0.99)] * 1e6 : NAN;
    free(all);
    free(ls);
    free(t);
    return r;
}

static int fill(const char *url, const char *ns, uint64_t n)
{
    sc_client *c;
    if (sc_client_open(url, 10000, &c) != SC_OK) {
        return -1;
    }
    float v[DIM];
    const uint64_t per = 256;
    for (uint64_t i = 0; i < n; i += per) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        uint64_t m = n - i < per ? n - i : per;
        msgpack_pack_map(&pk, 4);
        mp_put_key(&pk, "v");
        msgpack_pack_uint32(&pk, 1);
        mp_put_key(&pk, "op");
        mp_put_str(&pk, "insert_batch");
        mp_put_key(&pk, "ns");
        mp_put_str(&pk, ns);
        mp_put_key(&pk, "items");
        msgpack_pack_array(&pk, m);
        for (uint64_t j = 0; j < m; j++) {
            char resp[48];
            int rl = snprintf(resp, sizeof(resp), "answer %llu",
                              (unsigned long long)(i + j));
            sc_bench_vec(i + j, v, DIM);
            msgpack_pack_map(&pk, 2);
            mp_put_key(&pk, "vec");
            mp_put_vec(&pk, v, DIM);
            mp_put_key(&pk, "response");
            mp_put_bin(&pk, resp, (size_t)rl);
        }
        uint8_t *reply = NULL;
        size_t rlen;
        sc_err rc = sc_client_call(c, sb.data, sb.size, &reply, &rlen);
        msgpack_sbuffer_destroy(&sb);
        int bad = rc != SC_OK || memmem(reply, rlen, "\xa2ok\xc2", 4) != NULL;
        free(reply);
        if (bad) {
            sc_client_close(c);
            return -1;
        }
    }
    sc_client_close(c);
    return 0;
}

static void usage(void)
{
    printf(
        "usage: bench_service [--server PATH | --addr URL] [--quick] [--json]\n"
        "                     [--seconds S] [--hit-fraction F]\n"
        "                     [--transport ipc|tcp] [--threads N]\n"
        "                     [--entries N] [--clients N] [--batch N]\n"
        "Closed-loop lookups against semcached at 1k, 10k and 100k entries\n"
        "(d = 384), 1 and 32 clients, single lookups and lookup_batch of 64,\n"
        "beside a bare nng REQ/REP echo server (the transport's floor).\n"
        "--threads: semcached's workers; --entries/--clients/--batch run\n"
        "only the rows with that value.\n"
        "--soak S: S seconds of 64 requests in flight, 80%% lookups / 20%%\n"
        "inserts, 2 s TTL and a small --max-bytes; a line every 10 s; exits\n"
        "non-zero on any error or unbounded memory (bench_soak.c).\n"
        "--restart N: a persisted semcached filled with N entries (e.g.\n"
        "1M), stopped and started again: restart time from the whole log\n"
        "and from a snapshot, against the insert rate (bench_soak.c).\n"
        "--proxy [--table FILE] [--samples N]: hits through the OpenAI\n"
        "proxy at --entries (default 10000) against a direct call to an\n"
        "instant fake upstream (bench_proxy.c); FILE is the embedder table\n"
        "(default build/data/embeddings.sctab).\n"
        "TCP ports (--proxy, --transport tcp) are free ones of\n"
        "SEMCACHE_TEST_PORTS=LO-HI, as the tests take theirs (default 20000\n"
        "up to the kernel's ephemeral range; tests/test_ports.h).\n");
}

int main(int argc, char **argv)
{
    const char *server = "build/semcached";
    const char *addr = NULL;
    int json = 0, quick = 0;
    double seconds = 2.0, hitf = 0.5;
    long only_entries = 0, only_clients = 0, only_batch = 0;
    /* semcached's workers, and the echo's threads: one per CPU by default
     * (more only make the batches smaller on a small machine). */
    char threads_def[16];
    snprintf(threads_def, sizeof(threads_def), "%ld",
             sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN)
                                               : 2);
    const char *threads = threads_def;
    const char *transport = "ipc";
    double soak = 0; /* --soak SECONDS: bench_soak.c instead of the table */
    unsigned long long restart = 0; /* --restart N: likewise */
    int proxy = 0;   /* --proxy: bench_proxy.c instead of the table */
    const char *table = "build/data/embeddings.sctab";
    long samples = 2000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--server") == 0 && i + 1 < argc) {
            server = argv[++i];
        } else if (strcmp(argv[i], "--addr") == 0 && i + 1 < argc) {
            addr = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--quick") == 0) {
            quick = 1;
            seconds = 0.5;
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else if (strcmp(argv[i], "--hit-fraction") == 0 && i + 1 < argc) {
            hitf = atof(argv[++i]);
        } else if (strcmp(argv[i], "--entries") == 0 && i + 1 < argc) {
            only_entries = atol(argv[++i]);
        } else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc) {
            only_clients = atol(argv[++i]);
        } else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
            only_batch = atol(argv[++i]);
        } else if (strcmp(argv[i], "--transport") == 0 && i + 1 < argc) {
            transport = argv[++i];
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = argv[++i];
        } else if (strcmp(argv[i], "--soak") == 0 && i + 1 < argc) {
            soak = atof(argv[++i]);
        } else if (strcmp(argv[i], "--restart") == 0 && i + 1 < argc) {
            if (sc_bench_parse_count(argv[++i], &restart) != 0) {
                usage();
                return 2;
            }
        } else if (strcmp(argv[i], "--proxy") == 0) {
            proxy = 1;
        } else if (strcmp(argv[i], "--table") == 0 && i + 1 < argc) {
            table = argv[++i];
        } else if (strcmp(argv[i], "--samples") == 0 && i + 1 < argc) {
            samples = atol(argv[++i]);
        } else {
            usage();
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (proxy) {
        return bench_proxy(server, table,
                           only_entries > 0 ? only_entries : 10000,
                           samples > 0 ? samples : 2000, json);
    }
    /* Two ports (or paths) of our own: tcp's are the tests' (of
     * SEMCACHE_TEST_PORTS, test_ports.h), ipc's sockets in this run's
     * directory (test_tmp.h: gone at the exit, and after a SIGKILL at
     * the next sweep; they were /tmp/bench-service-PID.ipc, left there). */
    char url[128], echo_url[128];
    if (strcmp(transport, "tcp") == 0) {
        int port = sc_test_port_take("bench_service");
        int echo = port < 0 ? -1 : sc_test_port_take("bench_service");
        if (echo < 0) {
            return 1;
        }
        snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
        snprintf(echo_url, sizeof(echo_url), "tcp://127.0.0.1:%d", echo);
    } else if (strcmp(transport, "ipc") == 0) {
        /* 80: room for the names within sockaddr_un's 107 bytes. */
        const char *dir = sc_test_tmp_short_dir("bench_service", 80);
        if (dir == NULL) {
            return 1;
        }
        snprintf(url, sizeof(url), "ipc://%s/bench-service.ipc", dir);
        snprintf(echo_url, sizeof(echo_url), "ipc://%s/bench-echo.ipc", dir);
    } else {
        usage();
        return 2;
    }
    if (soak > 0) {
        return bench_soak(server, addr, url, threads, soak, json);
    }
    if (restart > 0) {
        return bench_restart(server, url, threads, restart, fill, json);
    }
    /* The echo gets as many threads as semcached's workers. */
    pid_t echo_pid = echo_spawn(echo_url, atoi(threads));
    if (echo_pid < 0) {
        fprintf(stderr, "bench_service: cannot start the echo server\n");
        return 1;
    }
    pid_t pid = -1;
    if (addr == NULL) {
        pid = fork();
        if (pid == 0) {
            /* Lookups are measured: the preload need not be kept. */
            execl(server, server, "--listen", url, "--threads", threads,
                  "--recv-max", "67108864", "--persist", "off", (char *)NULL);
            perror("exec semcached");
            _exit(127);
        }
        addr = url;
    }
    const char *wait_for[2] = {addr, echo_url};
    for (int w = 0; w < 2; w++) {
        sc_client *c;
        sc_client_open(wait_for[w], 200, &c);
        /* Any reply will do: the echo answers everything alike. */
        static const uint8_t ping[] = "\x82\xa1v\x01\xa2op\xa4ping";
        int up = 0;
        for (int i = 0; i < 100 && !up; i++) {
            uint8_t *reply = NULL;
            size_t rlen;
            up = sc_client_call(c, ping, sizeof(ping) - 1, &reply, &rlen) ==
                 SC_OK;
            free(reply);
            if (!up) {
                usleep(100000);
            }
        }
        sc_client_close(c);
        if (!up) {
            fprintf(stderr, "bench_service: %s did not start\n",
                    w == 0 ? "semcached" : "the echo server");
            kill(echo_pid, SIGTERM);
            if (pid > 0) {
                kill(pid, SIGTERM);
            }
            return 1;
        }
    }
    const uint64_t sizes[] = {1000, 10000, 100000};
    const int nsizes = quick ? 1 : 3;
    const int clients_list[] = {1, 32};
    if (!json) {
        printf("transport %s; cpu columns: CPU us per request of the server "
               "and of the load generator, ours then the echo's\n",
               transport);
        printf("%8s %4s %7s %5s %12s %9s %9s %12s %9s %8s %6s %6s %7s %7s %7s "
               "%7s %7s\n",
               "entries", "d", "clients", "batch", "lookups/s", "p50 us",
               "p99 us", "echo req/s", "echo p50", "vs_echo", "p50x", "hit%",
               "errors", "srv cpu", "cli cpu", "e.srv", "e.cli");
    }
    for (int si = 0; si < nsizes; si++) {
        if (only_entries != 0 && (uint64_t)only_entries != sizes[si]) {
            continue;
        }
        char ns[32];
        snprintf(ns, sizeof(ns), "bench%llu", (unsigned long long)sizes[si]);
        if (fill(addr, ns, sizes[si]) != 0) {
            fprintf(stderr, "bench_service: filling %s failed\n", ns);
            break;
        }
        for (int ci = 0; ci < 2; ci++) {
            for (int batch = 1; batch <= 64; batch *= 64) {
                int clients = clients_list[ci];
                if (batch > 1 && clients > 1) {
                    clients = 4; /* batches keep the server busy already */
                }
                if ((only_clients != 0 && only_clients != clients_list[ci]) ||
                    (only_batch != 0 && only_batch != batch)) {
                    continue;
                }
                result echo_r = run_load(echo_url, ns, sizes[si], clients,
                                         batch, hitf, seconds, echo_pid);
                result r = run_load(addr, ns, sizes[si], clients, batch, hitf,
                                    seconds, pid);
                /* The echo answers one message per request: compare
                 * requests, so a batch's floor is per message. */
                double echo_req = echo_r.per_s / batch;
                double req = r.per_s / batch;
                double vs = req / echo_req;
                double hitpct =
                    r.done ? 100.0 * (double)r.hits / (double)r.done : 0;
                if (json) {
                    printf("{\"bench\":\"service\",\"entries\":%llu,\"d\":%d,"
                           "\"clients\":%d,\"batch\":%d,\"lookups_per_s\":%.1f,"
                           "\"p50_us\":%.1f,\"p99_us\":%.1f,"
                           "\"echo_lookups_per_s\":%.1f,\"echo_p50_us\":%.1f,"
                           "\"vs_echo\":%.3f,\"p50_vs_echo\":%.3f,"
                           "\"hit_fraction\":%.3f,\"errors\":%llu,"
                           "\"transport\":\"%s\",\"server_cpu_us\":%.1f,"
                           "\"client_cpu_us\":%.1f,"
                           "\"echo_server_cpu_us\":%.1f,"
                           "\"echo_client_cpu_us\":%.1f}\n",
                           (unsigned long long)sizes[si], DIM, clients, batch,
                           r.per_s, r.p50_us, r.p99_us, echo_r.per_s,
                           echo_r.p50_us, vs, r.p50_us / echo_r.p50_us,
                           hitpct / 100.0,
                           (unsigned long long)(r.errors + echo_r.errors),
                           transport, r.server_cpu_us, r.client_cpu_us,
                           echo_r.server_cpu_us, echo_r.client_cpu_us);
                } else {
                    printf("%8llu %4d %7d %5d %12.0f %9.1f %9.1f %12.0f %9.1f "
                           "%8.3f %6.2f %6.1f %7llu %7.1f %7.1f %7.1f %7.1f\n",
                           (unsigned long long)sizes[si], DIM, clients, batch,
                           r.per_s, r.p50_us, r.p99_us, echo_r.per_s,
                           echo_r.p50_us, vs, r.p50_us / echo_r.p50_us, hitpct,
                           (unsigned long long)(r.errors + echo_r.errors),
                           r.server_cpu_us, r.client_cpu_us,
                           echo_r.server_cpu_us, echo_r.client_cpu_us);
                }
                fflush(stdout);
            }
        }
    }
    kill(echo_pid, SIGTERM);
    waitpid(echo_pid, NULL, 0);
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
    return 0;
}
