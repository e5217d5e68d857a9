/* bench_soak.h - bench_service's --soak mode (bench_soak.c): sustained
 * load against a real semcached, with TTL expiry and eviction running. */
#ifndef SC_BENCH_SOAK_H
#define SC_BENCH_SOAK_H

/* Runs the soak for seconds against addr (or a semcached started from
 * server on url with that many worker threads); json: one object per
 * line. Returns the exit status: 0 when there was no error, the server
 * lived, expiry and eviction ran and memory stayed bounded. */
int bench_soak(const char *server, const char *addr, const char *url,
               const char *threads, double seconds, int json);

#include <stdint.h>

/* Fills namespace ns (made by the first insert) at url with n entries of
 * d = 384; 0 or -1. */
typedef int (*bench_fill_fn)(const char *url, const char *ns, uint64_t n);

/* bench_service --restart N: the restart time of a persisted semcached
 * holding n entries, from a whole log and from a snapshot (bench_soak.c).
 * Returns 0 when every entry came back both times. */
int bench_restart(const char *server, const char *url, const char *threads,
                  uint64_t n, bench_fill_fn fill, int json);

#endif
