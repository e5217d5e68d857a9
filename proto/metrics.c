/* metrics.c - latency histograms per (transport, op): one fixed table of
 * relaxed atomic counters, so recording never takes a lock and writing
 * the page never blocks a request. */
#define _POSIX_C_SOURCE 200809L
#include "proto/metrics.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto/mp.h"

static const double bounds[SC_METRICS_NBUCKETS] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,   0.05,   0.1,     0.25,   0.5,   1.0,    2.5};

/* The ops of docs/PROTOCOL.md; the last slot is "other". */
static const char *const ops[] = {
    "ping",         "insert",       "lookup",    "delete",       "feedback",
    "lookup_batch", "insert_batch", "ns_create", "ns_configure", "ns_drop",
    "ns_list",      "stats",        "flush",     "report",       "other"};
#define NOPS (sizeof(ops) / sizeof(ops[0]))

static const char *const transports[] = {"nng", "http"};

typedef struct series {
    /* Not cumulative: bucket[i] counts observations in (bounds[i-1],
     * bounds[i]], bucket[NBUCKETS] those above the last bound. */
    atomic_uint_fast64_t bucket[SC_METRICS_NBUCKETS + 1];
    atomic_uint_fast64_t sum_ns;
} series;

struct sc_metrics {
    series s[2][NOPS];
};

sc_err sc_metrics_open(sc_metrics **out)
{
    sc_metrics *m = malloc(sizeof(*m));
    if (m == NULL) {
        return SC_ENOMEM;
    }
    for (size_t t = 0; t < 2; t++) {
        for (size_t o = 0; o < NOPS; o++) {
            for (size_t b = 0; b <= SC_METRICS_NBUCKETS; b++) {
                atomic_init(&m->s[t][o].bucket[b], 0);
            }
            atomic_init(&m->s[t][o].sum_ns, 0);
        }
    }
    *out = m;
    return SC_OK;
}

void sc_metrics_close(sc_metrics *m)
{
    free(m);
}

double sc_metrics_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static size_t op_index(const char *op, size_t n)
{
    for (size_t i = 0; i + 1 < NOPS; i++) {
        if (strlen(ops[i]) == n && memcmp(ops[i], op, n) == 0) {
            return i;
        }
    }
    return NOPS - 1;
}

static void observe_index(sc_metrics *m, sc_metrics_transport t, size_t op,
                          double seconds)
{
    if (m == NULL) {
        return;
    }
    if (!(seconds > 0.0)) { /* negative, zero or NaN */
        seconds = 0.0;
    }
    if (seconds > 1e6) { /* keeps the nanosecond sum from overflowing */
        seconds = 1e6;
    }
    size_t b = 0;
    while (b < SC_METRICS_NBUCKETS && seconds > bounds[b]) {
        b++;
    }
    series *s = &m->s[t == SC_METRICS_HTTP ? 1 : 0][op];
    atomic_fetch_add_explicit(&s->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_ns, (uint_fast64_t)(seconds * 1e9),
                              memory_order_relaxed);
}

void sc_metrics_observe(sc_metrics *m, sc_metrics_transport t, const char *op,
                        double seconds)
{
    size_t i = op == NULL ? NOPS - 1 : op_index(op, strlen(op));
    observe_index(m, t, i, seconds);
}

void sc_metrics_observe_request(sc_metrics *m, sc_metrics_transport t,
                                const uint8_t *req, size_t len, double seconds)
{
    size_t idx = NOPS - 1;
    mp_reader r;
    uint32_t n;
    mp_reader_init(&r, req, len);
    if (mp_read_map(&r, &n) == 0) {
        for (uint32_t i = 0; i < n; i++) {
            const char *k, *v;
            uint32_t kn, vn;
            if (mp_read_str(&r, &k, &kn) != 0) {
                break;
            }
            if (kn == 2 && memcmp(k, "op", 2) == 0 &&
                mp_read_str(&r, &v, &vn) == 0) {
                idx = op_index(v, vn); /* a repeated key's last wins */
                continue;
            }
            if (mp_skip(&r) != 0) {
                break;
            }
        }
    }
    observe_index(m, t, idx, seconds);
}

void sc_metrics_put_label(FILE *out, const char *v)
{
    fputc('"', out);
    for (const char *p = v; *p != '\0'; p++) {
        if (*p == '\\') {
            fputs("\\\\", out);
        } else if (*p == '"') {
            fputs("\\\"", out);
        } else if (*p == '\n') {
            fputs("\\n", out);
        } else {
            fputc(*p, out);
        }
    }
    fputc('"', out);
}

sc_err sc_metrics_write(sc_metrics *m, FILE *out)
{
    static const char *name = "semcache_request_duration_seconds";
    fprintf(out,
            "# HELP %s Time to serve one request, by op and transport "
            "(decoding, the cache, encoding).\n# TYPE %s histogram\n",
            name, name);
    for (size_t t = 0; t < 2; t++) {
        for (size_t o = 0; o < NOPS; o++) {
            series *s = &m->s[t][o];
            uint64_t cum[SC_METRICS_NBUCKETS + 1], total = 0;
            for (size_t b = 0; b <= SC_METRICS_NBUCKETS; b++) {
                total +=
                    atomic_load_explicit(&s->bucket[b], memory_order_relaxed);
                cum[b] = total;
            }
            if (total == 0) {
                continue;
            }
            uint64_t sum_ns =
                atomic_load_explicit(&s->sum_ns, memory_order_relaxed);
            for (size_t b = 0; b <= SC_METRICS_NBUCKETS; b++) {
                fprintf(out, "%s_bucket{op=\"%s\",transport=\"%s\",le=\"", name,
                        ops[o], transports[t]);
                if (b < SC_METRICS_NBUCKETS) {
                    fprintf(out, "%g", bounds[b]);
                } else {
                    fputs("+Inf", out);
                }
                fprintf(out, "\"} %llu\n", (unsigned long long)cum[b]);
            }
            fprintf(out, "%s_sum{op=\"%s\",transport=\"%s\"} %.9f\n", name,
                    ops[o], transports[t], (double)sum_ns * 1e-9);
            fprintf(out, "%s_count{op=\"%s\",transport=\"%s\"} %llu\n", name,
                    ops[o], transports[t], (unsigned long long)total);
        }
    }
    return ferror(out) ? SC_EIO : SC_OK;
}
