/* bench_util.h - what every benchmark program shares: a monotonic clock, a
 * seedable generator and a deterministic vector set, the
 * machine description printed in each header, parsing of counts such as
 * "100k", and a writer for one-line JSON objects (one result per line). */
#ifndef SC_BENCH_UTIL_H
#define SC_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Seconds from CLOCK_MONOTONIC; only differences are meaningful. */
double sc_bench_now(void);

/* splitmix64: the next value of the seedable generator at *s. */
uint64_t sc_bench_rand(uint64_t *s);

/* Vector i of a deterministic data set (dim floats uniform in [-0.5, 0.5),
 * the same for a given i in every program), so lookups can aim at stored
 * entries. */
void sc_bench_vec(uint64_t i, float *v, int dim);

typedef struct sc_bench_machine {
    char cpu[128];    /* model name from /proc/cpuinfo, or "unknown" */
    long cores;       /* online logical CPUs */
    size_t l3_bytes;  /* last-level cache size; 0 when unknown */
    size_t mem_bytes; /* physical memory; 0 when unknown */
    char date[32];    /* now, UTC, ISO 8601 */
} sc_bench_machine;

/* Fills m from sysconf, /proc and /sys. Never fails: unknowns stay 0 or
 * "unknown". */
void sc_bench_machine_read(sc_bench_machine *m);

/* Parses a positive count: digits with an optional k (1e3), M (1e6) or
 * G (1e9) suffix, e.g. "100k", "1M". Returns 0 and sets *out, or -1 for
 * anything else (empty, sign, junk, zero, overflow). */
int sc_bench_parse_count(const char *s, unsigned long long *out);

/* One JSON object built into a fixed buffer, then written as one line. Keys
 * and string values are caller-owned and copied (escaped) at once. A line
 * that would overflow the buffer is truncated to a valid object. */
typedef struct sc_bench_json {
    char buf[4096];
    size_t len;
    int fields;
    int full;
} sc_bench_json;

void sc_bench_json_begin(sc_bench_json *j);
/* val NULL writes null. */
void sc_bench_json_str(sc_bench_json *j, const char *key, const char *val);
/* A NaN or infinite v writes null: NAN is how callers say "not applicable". */
void sc_bench_json_num(sc_bench_json *j, const char *key, double v);
void sc_bench_json_int(sc_bench_json *j, const char *key, long long v);
void sc_bench_json_bool(sc_bench_json *j, const char *key, int v);
/* Closes the object and writes it plus a newline to f, then flushes. */
void sc_bench_json_end(sc_bench_json *j, FILE *f);

#endif
