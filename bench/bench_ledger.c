/* bench_ledger.c - "how long does the once-a-second save stall a lookup?":
 * the cost ledger with N namespaces (one insert each: its namespace's,
 * feature's and user's rows), a thread charging it flat out as lookups and
 * inserts do, and changed-only exports (persist's tick) after K namespaces
 * changed: each export's time, its holds of the ledger's lock (from the
 * test hooks: a hold begins at the export's start or in the hold hook and
 * ends before the page hook) and the charging thread's longest wait.
 *
 *   bench_ledger [--namespaces N] [--changed K] [--ticks T] [--no-charger]
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/ledger.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const sc_ledger_call one_call = {
    .model = "gpt-4o", .input_tokens = 1, .output_tokens = 1};

#define HOLDS_MAX 1000000

typedef struct bench {
    sc_ledger *l;
    atomic_int phase; /* 0 idle, 1 measured, 2 stop */
    double worst;     /* the charger's longest call while measured */
    long charges;     /* its calls while measured */
    size_t rows;      /* rows the export gave */
    double hold_start, *holds;
    long nholds;
} bench;

static void *charger(void *arg)
{
    bench *b = arg;
    sc_ledger_tags t = {.ns = "hot"};
    while (atomic_load(&b->phase) != 2) {
        double a = now_s();
        sc_ledger_insert(b->l, &t, &one_call, 1000);
        double d = now_s() - a;
        if (atomic_load(&b->phase) == 1) {
            b->charges++;
            b->worst = d > b->worst ? d : b->worst;
        }
    }
    return NULL;
}

static void count_row(void *arg, const sc_ledger_row_state *row,
                      const sc_ledger_hour *hour)
{
    (void)hour;
    ((bench *)arg)->rows += row != NULL;
}

static void on_hold(void *arg)
{
    bench *b = arg;
    b->hold_start = now_s();
}

static void on_gap(void *arg, bool picked)
{
    (void)picked;
    bench *b = arg;
    if (b->nholds < HOLDS_MAX) {
        b->holds[b->nholds++] = now_s() - b->hold_start;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void tick(bench *b, const char *what)
{
    b->worst = 0;
    b->charges = 0;
    b->rows = 0;
    b->nholds = 0;
    atomic_store(&b->phase, 1);
    double a = now_s();
    b->hold_start = a;
    uint64_t mark = sc_ledger_export(b->l, true, count_row, b);
    double d = now_s() - a;
    atomic_store(&b->phase, 0);
    sc_ledger_export_saved(b->l, mark);
    on_gap(b, false); /* the last hold, to the export's return */
    qsort(b->holds, (size_t)b->nholds, sizeof(double), cmp_double);
    printf("%-24s %9zu rows  %8.1f ms  %7ld holds  median %7.3f ms  "
           "longest %8.2f ms  charger %8.2f ms (%ld charges)\n",
           what, b->rows, d * 1e3, b->nholds, b->holds[b->nholds / 2] * 1e3,
           b->holds[b->nholds - 1] * 1e3, b->worst * 1e3, b->charges);
}

int main(int argc, char **argv)
{
    long n = 1000000, changed = 1000, ticks = 5;
    bool charge = true;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--namespaces") == 0 && i + 1 < argc) {
            n = atol(argv[++i]);
        } else if (strcmp(argv[i], "--changed") == 0 && i + 1 < argc) {
            changed = atol(argv[++i]);
        } else if (strcmp(argv[i], "--ticks") == 0 && i + 1 < argc) {
            ticks = atol(argv[++i]);
        } else if (strcmp(argv[i], "--no-charger") == 0) {
            charge = false;
        } else {
            fprintf(stderr,
                    "usage: bench_ledger [--namespaces N] [--changed K] "
                    "[--ticks T] [--no-charger]\n");
            return 2;
        }
    }
    if (n < 1 || changed < 0 || ticks < 0) {
        fprintf(stderr, "bench_ledger: N >= 1, K >= 0, T >= 0\n");
        return 2;
    }
    sc_prices *p = NULL;
    bench b = {0};
    b.holds = malloc(HOLDS_MAX * sizeof(double));
    if (b.holds == NULL || sc_prices_default(&p) != SC_OK ||
        sc_ledger_open(p, &b.l) != SC_OK) {
        fprintf(stderr, "bench_ledger: out of memory\n");
        return 1;
    }
    char ns[32];
    for (long i = 0; i < n; i++) {
        snprintf(ns, sizeof(ns), "ns%07ld", i);
        sc_ledger_tags t = {.ns = ns};
        sc_ledger_insert(b.l, &t, &one_call, 1000);
    }
    sc_ledger_set_hold_hook(b.l, on_hold, &b);
    sc_ledger_set_page_hook(b.l, on_gap, &b);
    pthread_t th;
    if (charge && pthread_create(&th, NULL, charger, &b) != 0) {
        charge = false;
    }
    tick(&b, "first (every row)");
    char what[64];
    for (long k = 0; k < ticks; k++) {
        for (long i = 0; i < changed; i++) {
            snprintf(ns, sizeof(ns), "ns%07ld", (i * 7919 + k) % n);
            sc_ledger_tags t = {.ns = ns};
            sc_ledger_insert(b.l, &t, &one_call, 1000);
        }
        snprintf(what, sizeof(what), "tick (%ld changed)", changed);
        tick(&b, what);
    }
    atomic_store(&b.phase, 2);
    if (charge) {
        pthread_join(th, NULL);
    }
    sc_ledger_close(b.l);
    sc_prices_free(p);
    free(b.holds);
    return 0;
}
