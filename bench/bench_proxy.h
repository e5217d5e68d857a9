/* bench_proxy.h - bench_service --proxy: "what does the OpenAI proxy cost
 * on a hit?" (bench_proxy.c). */
#ifndef SC_BENCH_PROXY_H
#define SC_BENCH_PROXY_H

/* Starts an instant fake upstream (an nng HTTP server in a child process)
 * and semcached (server, with the embedder table at table) with --http and
 * --upstream pointing at it, preloads entries questions through the proxy,
 * then times, one request in flight, samples calls each of: the fake
 * upstream called directly, exact and semantic hits through the proxy, and
 * misses passed through (x-semcache-skip, no-store). Prints a table, or one
 * JSON object per line with json. Returns the exit status. */
int bench_proxy(const char *server, const char *table, long entries,
                long samples, int json);

#endif
