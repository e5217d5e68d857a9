/* bench_util.c - clock, machine description, count parsing and JSON lines
 * for the benchmark programs. Nothing here allocates. */
#define _GNU_SOURCE
#include "bench/bench_util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double sc_bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

uint64_t sc_bench_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void sc_bench_vec(uint64_t i, float *v, int dim)
{
    uint64_t s = i * 7919 + 1;
    for (int j = 0; j < dim; j++) {
        v[j] = (float)((double)(sc_bench_rand(&s) >> 11) / 9007199254740992.0 -
                       0.5);
    }
}

static void read_cpu_model(char *out, size_t cap)
{
    snprintf(out, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f == NULL) {
        return;
    }
    char line[512];
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "model name", 10) != 0) {
            continue;
        }
        char *colon = strchr(line, ':');
        if (colon == NULL) {
            continue;
        }
        colon++;
        while (*colon == ' ' || *colon == '\t') {
            colon++;
        }
        size_t n = strcspn(colon, "\n");
        snprintf(out, cap, "%.*s", (int)n, colon);
        break;
    }
    fclose(f);
}

/* sysconf answers 0 on some kernels and in most VMs; /sys usually knows. */
static size_t read_l3_bytes(void)
{
    long v = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (v > 0) {
        return (size_t)v;
    }
    FILE *f = fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r");
    if (f == NULL) {
        return 0;
    }
    unsigned long long n = 0;
    char unit = 0;
    int got = fscanf(f, "%llu%c", &n, &unit);
    fclose(f);
    if (got < 1) {
        return 0;
    }
    if (got == 2 && (unit == 'K' || unit == 'k')) {
        n <<= 10;
    } else if (got == 2 && unit == 'M') {
        n <<= 20;
    }
    return (size_t)n;
}

void sc_bench_machine_read(sc_bench_machine *m)
{
    memset(m, 0, sizeof(*m));
    read_cpu_model(m->cpu, sizeof(m->cpu));
    m->cores = sysconf(_SC_NPROCESSORS_ONLN);
    m->l3_bytes = read_l3_bytes();
    long pages = sysconf(_SC_PHYS_PAGES);
    long psize = sysconf(_SC_PAGESIZE);
    if (pages > 0 && psize > 0) {
        m->mem_bytes = (size_t)pages * (size_t)psize;
    }
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm) != NULL) {
        strftime(m->date, sizeof(m->date), "%Y-%m-%dT%H:%M:%SZ", &tm);
    } else {
        snprintf(m->date, sizeof(m->date), "unknown");
    }
}

int sc_bench_parse_count(const char *s, unsigned long long *out)
{
    if (s == NULL || !isdigit((unsigned char)s[0])) {
        return -1;
    }
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0) {
        return -1;
    }
    unsigned long long mul = 1;
    if (*end == 'k' || *end == 'K') {
        mul = 1000ULL;
        end++;
    } else if (*end == 'm' || *end == 'M') {
        mul = 1000000ULL;
        end++;
    } else if (*end == 'g' || *end == 'G') {
        mul = 1000000000ULL;
        end++;
    }
    if (*end != '\0' || v == 0 || v > ~0ULL / mul) {
        return -1;
    }
    *out = v * mul;
    return 0;
}

/* ---- JSON lines ----------------------------------------------------- */

static void jput(sc_bench_json *j, const char *fmt, ...)
{
    if (j->full) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    /* Two bytes stay free for the closing "}" and the terminator. */
    size_t room = sizeof(j->buf) - 2 - j->len;
    int n = vsnprintf(j->buf + j->len, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room) {
        j->full = 1;
        j->buf[j->len] = '\0';
        return;
    }
    j->len += (size_t)n;
}

static void jstring(sc_bench_json *j, const char *s)
{
    jput(j, "\"");
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            jput(j, "\\%c", c);
        } else if (c < 0x20) {
            jput(j, "\\u%04x", c);
        } else {
            jput(j, "%c", c);
        }
    }
    jput(j, "\"");
}

static void jkey(sc_bench_json *j, const char *key)
{
    size_t mark = j->len;
    if (j->fields++ > 0) {
        jput(j, ",");
    }
    jstring(j, key);
    jput(j, ":");
    if (j->full) {
        j->len = mark;
        j->buf[mark] = '\0';
    }
}

void sc_bench_json_begin(sc_bench_json *j)
{
    j->len = 0;
    j->fields = 0;
    j->full = 0;
    j->buf[0] = '\0';
    jput(j, "{");
}

void sc_bench_json_str(sc_bench_json *j, const char *key, const char *val)
{
    size_t mark = j->len;
    jkey(j, key);
    if (val == NULL) {
        jput(j, "null");
    } else {
        jstring(j, val);
    }
    if (j->full) {
        j->len = mark; /* drop the partial field, keep the object valid */
        j->buf[mark] = '\0';
    }
}

void sc_bench_json_num(sc_bench_json *j, const char *key, double v)
{
    size_t mark = j->len;
    jkey(j, key);
    if (isfinite(v)) {
        jput(j, "%.6g", v);
    } else {
        jput(j, "null");
    }
    if (j->full) {
        j->len = mark;
        j->buf[mark] = '\0';
    }
}

void sc_bench_json_int(sc_bench_json *j, const char *key, long long v)
{
    size_t mark = j->len;
    jkey(j, key);
    jput(j, "%lld", v);
    if (j->full) {
        j->len = mark;
        j->buf[mark] = '\0';
    }
}

void sc_bench_json_bool(sc_bench_json *j, const char *key, int v)
{
    size_t mark = j->len;
    jkey(j, key);
    jput(j, "%s", v ? "true" : "false");
    if (j->full) {
        j->len = mark;
        j->buf[mark] = '\0';
    }
}

void sc_bench_json_end(sc_bench_json *j, FILE *f)
{
    j->buf[j->len++] = '}';
    j->buf[j->len] = '\0';
    fprintf(f, "%s\n", j->buf);
    fflush(f);
}
