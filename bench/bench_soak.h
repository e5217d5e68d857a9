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

#endif
