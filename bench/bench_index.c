/* bench_index.c - "how fast is the index?": the flat index, per storage type
 * and SIMD tier, against FAISS IndexFlatIP and against the machine's own
 * streaming read bandwidth, one thread, on clustered synthetic data.
 *
 * A process fixes its SIMD tier once (SEMCACHE_SIMD), so the parent measures
 * bandwidth and then re-runs itself once per tier (`--child-tier T`); each
 * child prints raw "ROW" lines and the parent prints the table or JSON. */
#define _GNU_SOURCE
#include <cblas.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench_util.h"
#include "index/index.h"
#include "index/simd/simd.h"

#ifdef SEMCACHE_HAVE_FAISS
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
void omp_set_num_threads(int);
#define HAVE_FAISS 1
#else
#define HAVE_FAISS 0
#endif

/* OpenBLAS's own API; the sc_index library links OpenBLAS for f32 batches
 * and FAISS uses it too, so its kernel choice is printed in the header. */
void openblas_set_num_threads(int);
char *openblas_get_corename(void);

#define MAX_LIST        16
#define DEFAULT_BATCH   64u
#define MAX_BATCH       4096u
#define DEFAULT_SECONDS 0.5
#define QUICK_SECONDS   0.2
#define MIN_SINGLE      3     /* timed single queries, however slow */
#define MAX_TIMED       2000  /* timed queries per measurement, at most */
#define SCALAR_MAX_N    10000 /* default: the scalar tier only up to this N */
#define REF_CAND        4     /* sgemm candidates re-scored in double */
#define TIE_EPS         1e-6  /* equal similarities: either id agrees */
#define NO_ID           UINT64_MAX

/* Synthetic data: unit vectors around N_CENTRES random unit centres, with a
 * share of near-duplicates of earlier vectors (paraphrases in a cache), so
 * nearest-neighbour similarities sit around 0.8-0.9 (near-duplicates
 * ~0.99) and about a quarter of queries have a runner-up within 0.01. */
#define SEED        0x5eedcac4e5eedULL
#define N_CENTRES   1000
#define DUP_SHARE   0.15 /* vectors that copy an earlier one plus noise */
#define DUP_NOISE   0.1  /* norm of a near-duplicate's noise: cos ~0.995 */
#define NOISE_MIN   0.35 /* norm of a vector's noise around its centre */
#define NOISE_SPAN  0.25
#define QNOISE_MIN  0.15 /* norm of a query's noise around its base vector */
#define QNOISE_SPAN 0.30

typedef struct opts {
    size_t ns[MAX_LIST];
    unsigned nn;
    unsigned ds[MAX_LIST];
    unsigned nd;
    int storages[3];
    unsigned nstor;
    int tiers[SC_TIER_COUNT];
    unsigned ntiers;
    int all_tiers;
    int quick;
    int json;
    unsigned batch;
    double seconds;
    int child_tier; /* -1: this is the parent */
    int child_faiss;
    int ivf;                    /* --backend ivf */
    unsigned nprobes[MAX_LIST]; /* --nprobe */
    unsigned nnp;
    unsigned nlist;      /* --nlist, 0 = about sqrt(N) */
    size_t flat_queries; /* ivf: --flat-queries, 0 = all of them */
    int ivf_kinds;       /* ivf: --ivf-kinds bits, 1 = ivf-flat, 2 = sq8 */
} opts;

/* The data's shape: --centres and --noise change them. */
static size_t g_centres = N_CENTRES;
static double g_noise_min = NOISE_MIN, g_noise_span = NOISE_SPAN;
static double g_qnoise_min = QNOISE_MIN, g_qnoise_span = QNOISE_SPAN;

/* One measured configuration, as a child reports it. */
typedef struct row {
    char bench[16]; /* "flat" or "faiss" */
    size_t n;
    unsigned d;
    char storage[8];
    char tier[16];   /* "-" for FAISS */
    char kernel[24]; /* kernel table name, "-" for FAISS */
    char mode[8];    /* "single" or "batch" */
    unsigned batch;
    double ms;        /* per query */
    double agree;     /* top-1 agreement with exact search */
    double simerr;    /* max |top-1 similarity - exact| */
    unsigned agree_q; /* queries the agreement is over */
    unsigned timed_q; /* queries timed */
    double build_s;
    size_t mem;
} row;

typedef struct rows {
    row *a;
    size_t n;
    size_t cap;
} rows;

/* ---- arguments ------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_index [--quick] [--json] [--n LIST] [--d LIST]\n"
            "                   [--storage LIST] [--tiers LIST] [--all-tiers]\n"
            "                   [--batch N] [--seconds S] [--help]\n"
            "\n"
            "Times the flat index (one thread, k=1) per storage type and SIMD\n"
            "tier against FAISS IndexFlatIP and the measured streaming read\n"
            "bandwidth, on clustered synthetic unit vectors.\n"
            "\n"
            "  --quick         N=1k,100k at d=384, shorter measurements\n"
            "  --json          one JSON object per line instead of a table\n"
            "  --n LIST        vector counts, e.g. 1k,10k,100k,1M "
            "(default all four)\n"
            "  --d LIST        dimensions (default 384,1536), 1..%u\n"
            "  --storage LIST  f32,f16,int8 (default all)\n"
            "  --tiers LIST    scalar,avx2,avx512 (default: avx2 and avx512\n"
            "                  where present, scalar only at N<=10k)\n"
            "  --all-tiers     every tier the CPU has, at every N\n"
            "  --batch N       queries per batch call, 1..%u (default %u)\n"
            "  --seconds S     target time per measurement (default %.1f,\n"
            "                  %.1f with --quick)\n"
            "  --backend B     flat (default) or ivf: FAISS IVF-Flat and\n"
            "                  IVF-SQ8 through sc_index against flat f32 in\n"
            "                  the same run (recall@1, queries/s, vs_flat)\n"
            "  --nprobe LIST   ivf: lists visited per query (default\n"
            "                  1,2,4,8,16,32,64)\n"
            "  --nlist N       ivf: inverted lists (default about sqrt(N))\n"
            "  --flat-queries N  ivf: queries flat is timed and scored on\n"
            "                  (default all; flat at 1M is slow)\n"
            "  --ivf-kinds LIST  ivf: ivf-flat,ivf-sq8 (default both)\n"
            "  --centres N     synthetic data: cluster centres (default 1000)\n"
            "  --noise LO,HI   norm of a vector's noise around its centre\n"
            "                  (default 0.35,0.60; larger = clusters overlap)\n"
            "  --qnoise LO,HI  norm of a query's noise around its base vector\n"
            "                  (default 0.15,0.45)\n",
            SC_INDEX_MAX_DIM, MAX_BATCH, DEFAULT_BATCH, DEFAULT_SECONDS,
            QUICK_SECONDS);
}

static int bad_arg(const char *flag, const char *val, const char *why)
{
    fprintf(stderr, "bench_index: %s '%s': %s (try --help)\n", flag,
            val ? val : "", why);
    return -1;
}

/* Splits a comma-separated list into items of at most 31 characters. */
static int split_list(const char *flag, const char *s, char items[][32],
                      unsigned *count)
{
    *count = 0;
    if (s == NULL || *s == '\0') {
        return bad_arg(flag, s, "empty list");
    }
    const char *p = s;
    for (;;) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= 32) {
            return bad_arg(flag, s, "empty or overlong item");
        }
        if (*count == MAX_LIST) {
            return bad_arg(flag, s, "too many items");
        }
        memcpy(items[*count], p, len);
        items[*count][len] = '\0';
        (*count)++;
        if (p[len] == '\0') {
            break;
        }
        p += len + 1;
    }
    return 0;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_uint(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? -1 : x > y;
}

static int parse_ns(opts *o, const char *s)
{
    char items[MAX_LIST][32];
    unsigned c;
    if (split_list("--n", s, items, &c) != 0) {
        return -1;
    }
    o->nn = 0;
    for (unsigned i = 0; i < c; i++) {
        unsigned long long v;
        if (sc_bench_parse_count(items[i], &v) != 0 || v > 1000000000ULL) {
            return bad_arg("--n", items[i],
                           "want a count 1..1G such as 1000, 100k or 1M");
        }
        o->ns[o->nn++] = (size_t)v;
    }
    qsort(o->ns, o->nn, sizeof(o->ns[0]), cmp_size);
    unsigned w = 0;
    for (unsigned i = 0; i < o->nn; i++) {
        if (w == 0 || o->ns[w - 1] != o->ns[i]) {
            o->ns[w++] = o->ns[i];
        }
    }
    o->nn = w;
    return 0;
}

static int parse_ds(opts *o, const char *s)
{
    char items[MAX_LIST][32];
    unsigned c;
    if (split_list("--d", s, items, &c) != 0) {
        return -1;
    }
    o->nd = 0;
    for (unsigned i = 0; i < c; i++) {
        unsigned long long v;
        if (sc_bench_parse_count(items[i], &v) != 0 || v > SC_INDEX_MAX_DIM) {
            return bad_arg("--d", items[i], "want a dimension 1..4096");
        }
        o->ds[o->nd++] = (unsigned)v;
    }
    qsort(o->ds, o->nd, sizeof(o->ds[0]), cmp_uint);
    unsigned w = 0;
    for (unsigned i = 0; i < o->nd; i++) {
        if (w == 0 || o->ds[w - 1] != o->ds[i]) {
            o->ds[w++] = o->ds[i];
        }
    }
    o->nd = w;
    return 0;
}

static int parse_storages(opts *o, const char *s)
{
    char items[MAX_LIST][32];
    unsigned c;
    if (split_list("--storage", s, items, &c) != 0) {
        return -1;
    }
    int seen[3] = {0, 0, 0};
    for (unsigned i = 0; i < c; i++) {
        int st = sc_storage_parse(items[i]);
        if (st < 0) {
            return bad_arg("--storage", items[i], "want f32, f16 or int8");
        }
        seen[st] = 1;
    }
    o->nstor = 0;
    for (int st = 0; st < 3; st++) {
        if (seen[st]) {
            o->storages[o->nstor++] = st;
        }
    }
    return 0;
}

static int parse_tiers(opts *o, const char *s)
{
    char items[MAX_LIST][32];
    unsigned c;
    if (split_list("--tiers", s, items, &c) != 0) {
        return -1;
    }
    int seen[SC_TIER_COUNT] = {0};
    sc_simd_tier best = sc_simd_best_supported();
    for (unsigned i = 0; i < c; i++) {
        int t = sc_simd_tier_parse(items[i]);
        if (t < 0) {
            return bad_arg("--tiers", items[i], "want scalar, avx2 or avx512");
        }
        if (t > (int)best || sc_simd_get((sc_simd_tier)t) == NULL) {
            return bad_arg("--tiers", items[i],
                           "this CPU or build does not have that tier");
        }
        seen[t] = 1;
    }
    /* Best first: FAISS runs in the first child. */
    o->ntiers = 0;
    for (int t = SC_TIER_COUNT - 1; t >= 0; t--) {
        if (seen[t]) {
            o->tiers[o->ntiers++] = t;
        }
    }
    return 0;
}

/* Accepts "--flag value" and "--flag=value". */
static int parse_args(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof(*o));
    o->child_tier = -1;
    o->batch = DEFAULT_BATCH;
    const char *n_arg = NULL, *d_arg = NULL, *s_arg = NULL, *t_arg = NULL;
    const char *sec_arg = NULL;
    for (int i = 1; i < argc; i++) {
        char flag[64];
        const char *val = NULL;
        const char *eq = strchr(argv[i], '=');
        if (strncmp(argv[i], "--", 2) == 0 && eq != NULL &&
            (size_t)(eq - argv[i]) < sizeof(flag)) {
            snprintf(flag, sizeof(flag), "%.*s", (int)(eq - argv[i]), argv[i]);
            val = eq + 1;
        } else {
            snprintf(flag, sizeof(flag), "%s", argv[i]);
        }
        int takes =
            strcmp(flag, "--n") == 0 || strcmp(flag, "--d") == 0 ||
            strcmp(flag, "--storage") == 0 || strcmp(flag, "--tiers") == 0 ||
            strcmp(flag, "--batch") == 0 || strcmp(flag, "--seconds") == 0 ||
            strcmp(flag, "--child-tier") == 0 ||
            strcmp(flag, "--backend") == 0 || strcmp(flag, "--nprobe") == 0 ||
            strcmp(flag, "--nlist") == 0 ||
            strcmp(flag, "--flat-queries") == 0 ||
            strcmp(flag, "--ivf-kinds") == 0 ||
            strcmp(flag, "--centres") == 0 || strcmp(flag, "--noise") == 0 ||
            strcmp(flag, "--qnoise") == 0;
        if (takes && val == NULL) {
            if (i + 1 >= argc) {
                return bad_arg(flag, "", "needs a value");
            }
            val = argv[++i];
        } else if (!takes && val != NULL) {
            return bad_arg(flag, val, "takes no value");
        }
        if (strcmp(flag, "--help") == 0 || strcmp(flag, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(flag, "--quick") == 0) {
            o->quick = 1;
        } else if (strcmp(flag, "--json") == 0) {
            o->json = 1;
        } else if (strcmp(flag, "--all-tiers") == 0) {
            o->all_tiers = 1;
        } else if (strcmp(flag, "--child-faiss") == 0) {
            o->child_faiss = 1;
        } else if (strcmp(flag, "--n") == 0) {
            n_arg = val;
        } else if (strcmp(flag, "--d") == 0) {
            d_arg = val;
        } else if (strcmp(flag, "--storage") == 0) {
            s_arg = val;
        } else if (strcmp(flag, "--tiers") == 0) {
            t_arg = val;
        } else if (strcmp(flag, "--seconds") == 0) {
            sec_arg = val;
        } else if (strcmp(flag, "--batch") == 0) {
            unsigned long long b;
            if (sc_bench_parse_count(val, &b) != 0 || b > MAX_BATCH) {
                return bad_arg(flag, val, "want a batch size 1..4096");
            }
            o->batch = (unsigned)b;
        } else if (strcmp(flag, "--backend") == 0) {
            if (strcmp(val, "ivf") == 0) {
                o->ivf = 1;
            } else if (strcmp(val, "flat") != 0) {
                return bad_arg(flag, val, "want flat or ivf");
            }
        } else if (strcmp(flag, "--nprobe") == 0) {
            char items[MAX_LIST][32];
            unsigned k;
            if (split_list(flag, val, items, &k) != 0) {
                return -1;
            }
            o->nnp = 0;
            for (unsigned j = 0; j < k; j++) {
                unsigned long long x;
                if (sc_bench_parse_count(items[j], &x) != 0 || x < 1 ||
                    x > 65536) {
                    return bad_arg(flag, items[j], "want 1..65536");
                }
                o->nprobes[o->nnp++] = (unsigned)x;
            }
        } else if (strcmp(flag, "--nlist") == 0) {
            unsigned long long x;
            if (sc_bench_parse_count(val, &x) != 0 || x > 65536) {
                return bad_arg(flag, val, "want 0..65536");
            }
            o->nlist = (unsigned)x;
        } else if (strcmp(flag, "--flat-queries") == 0) {
            unsigned long long x;
            if (sc_bench_parse_count(val, &x) != 0 || x > 1000000) {
                return bad_arg(flag, val, "want 0..1M");
            }
            o->flat_queries = (size_t)x;
        } else if (strcmp(flag, "--ivf-kinds") == 0) {
            char items[MAX_LIST][32];
            unsigned k;
            if (split_list(flag, val, items, &k) != 0) {
                return -1;
            }
            o->ivf_kinds = 0;
            for (unsigned j = 0; j < k; j++) {
                if (strcmp(items[j], "ivf-flat") == 0) {
                    o->ivf_kinds |= 1;
                } else if (strcmp(items[j], "ivf-sq8") == 0) {
                    o->ivf_kinds |= 2;
                } else {
                    return bad_arg(flag, items[j], "want ivf-flat or ivf-sq8");
                }
            }
        } else if (strcmp(flag, "--centres") == 0) {
            unsigned long long x;
            if (sc_bench_parse_count(val, &x) != 0 || x < 1 || x > 1000000) {
                return bad_arg(flag, val, "want 1..1M");
            }
            g_centres = (size_t)x;
        } else if (strcmp(flag, "--noise") == 0 ||
                   strcmp(flag, "--qnoise") == 0) {
            double lo, hi;
            char tail;
            if (sscanf(val, "%lf,%lf%c", &lo, &hi, &tail) != 2 ||
                !(lo >= 0.0 && hi >= lo && hi <= 10.0)) {
                return bad_arg(flag, val,
                               "want LO,HI with 0 <= LO <= HI <= 10");
            }
            *(flag[2] == 'q' ? &g_qnoise_min : &g_noise_min) = lo;
            *(flag[2] == 'q' ? &g_qnoise_span : &g_noise_span) = hi - lo;
        } else if (strcmp(flag, "--child-tier") == 0) {
            o->child_tier = sc_simd_tier_parse(val);
            if (o->child_tier < 0) {
                return bad_arg(flag, val, "unknown tier");
            }
        } else {
            return bad_arg("argument", argv[i], "unknown");
        }
    }
    if (parse_ns(o, n_arg ? n_arg : o->quick ? "1k,100k" : "1k,10k,100k,1M")) {
        return -1;
    }
    if (parse_ds(o, d_arg ? d_arg : o->quick ? "384" : "384,1536") != 0) {
        return -1;
    }
    if (parse_storages(o, s_arg ? s_arg : "f32,f16,int8") != 0) {
        return -1;
    }
    if (t_arg != NULL && parse_tiers(o, t_arg) != 0) {
        return -1;
    }
    if (t_arg != NULL && o->all_tiers) {
        return bad_arg("--all-tiers", "", "conflicts with --tiers");
    }
    o->seconds = o->quick ? QUICK_SECONDS : DEFAULT_SECONDS;
    if (sec_arg != NULL) {
        char *end;
        errno = 0;
        double s = strtod(sec_arg, &end);
        if (errno != 0 || *end != '\0' || !(s >= 0.01 && s <= 60.0)) {
            return bad_arg("--seconds", sec_arg, "want 0.01..60");
        }
        o->seconds = s;
    }
    return 0;
}

/* ---- synthetic data -------------------------------------------------- */

typedef struct rng {
    uint64_t s;
    int have_spare;
    double spare;
} rng;

static void rng_init(rng *r, uint64_t seed)
{
    r->s = seed;
    r->have_spare = 0;
    r->spare = 0.0;
}

/* splitmix64 */
static uint64_t rng_next(rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1), never 0: Box-Muller takes its log. */
static double rng_unit(rng *r)
{
    return ((double)(rng_next(r) >> 11) + 0.5) * 0x1.0p-53;
}

/* Standard normal, Box-Muller, both values of a pair used. Single precision
 * math: generating 1.5e9 values for N=1M, d=1536 is the slowest part of a
 * run, and float is ample for synthetic noise (tails to 5.9 sigma). */
static float rng_gauss(rng *r)
{
    if (r->have_spare) {
        r->have_spare = 0;
        return (float)r->spare;
    }
    uint64_t x = rng_next(r);
    float u = ((float)(x >> 40) + 0.5f) * 0x1.0p-24f;
    float v = (float)((x >> 16) & 0xffffffu) * 0x1.0p-24f;
    float rad = sqrtf(-2.0f * logf(u));
    float sn, cs;
    sincosf(6.2831853f * v, &sn, &cs);
    r->spare = rad * sn;
    r->have_spare = 1;
    return rad * cs;
}

static void normalise(float *x, unsigned d)
{
    double ss = 0.0;
    for (unsigned i = 0; i < d; i++) {
        ss += (double)x[i] * x[i];
    }
    float inv = (float)(1.0 / sqrt(ss));
    for (unsigned i = 0; i < d; i++) {
        x[i] *= inv;
    }
}

/* x = base + gaussian noise of expected norm `norm`, normalised. */
static void perturb(rng *r, const float *base, double norm, unsigned d,
                    float *x)
{
    double sigma = norm / sqrt((double)d);
    for (unsigned i = 0; i < d; i++) {
        x[i] = base[i] + (float)sigma * rng_gauss(r);
    }
    normalise(x, d);
}

/* Fills data with n unit vectors of dimension d and, when label is not NULL,
 * label[i] with row i's centre (a near-duplicate takes its source's). Row i
 * depends only on rows before it, so the first m rows of a set of n are the
 * set of m. */
static int gen_data(unsigned d, size_t n, float *data, uint32_t *label)
{
    rng r;
    rng_init(&r, SEED ^ ((uint64_t)d * 0x100000001b3ULL));
    float *centres = malloc(g_centres * d * sizeof(float));
    if (centres == NULL) {
        return -1;
    }
    for (size_t c = 0; c < g_centres; c++) {
        float *x = centres + c * d;
        for (unsigned i = 0; i < d; i++) {
            x[i] = rng_gauss(&r);
        }
        normalise(x, d);
    }
    for (size_t i = 0; i < n; i++) {
        float *x = data + i * d;
        if (i >= g_centres && rng_unit(&r) < DUP_SHARE) {
            size_t j = (size_t)(rng_next(&r) % i);
            perturb(&r, data + j * d, DUP_NOISE, d, x);
            if (label != NULL) {
                label[i] = label[j];
            }
        } else {
            size_t c = (size_t)(rng_next(&r) % g_centres);
            double norm = g_noise_min + g_noise_span * rng_unit(&r);
            perturb(&r, centres + c * d, norm, d, x);
            if (label != NULL) {
                label[i] = (uint32_t)c;
            }
        }
    }
    free(centres);
    return 0;
}

/* nq unit queries, each a random one of the first n vectors plus noise,
 * then `batch` more rows repeating the first ones, so that a batch may
 * start anywhere in [0, nq) and read contiguous rows. */
static void gen_queries(const float *data, size_t n, unsigned d, size_t nq,
                        unsigned batch, float *qs, size_t *base)
{
    rng r;
    rng_init(&r, SEED ^ ((uint64_t)n * 0x9e3779b97f4a7c15ULL) ^
                     ((uint64_t)d << 40) ^ 0xfeedULL);
    for (size_t i = 0; i < nq; i++) {
        size_t b = (size_t)(rng_next(&r) % n);
        if (base != NULL) {
            base[i] = b;
        }
        double norm = g_qnoise_min + g_qnoise_span * rng_unit(&r);
        perturb(&r, data + b * d, norm, d, qs + i * d);
    }
    for (size_t i = 0; i < batch; i++) {
        memcpy(qs + (nq + i) * d, qs + (i % nq) * d, d * sizeof(float));
    }
}

/* Queries used for agreement (and cycled through by the timing loops):
 * enough to resolve 0.995, fewer where the exact reference is costly. */
static size_t queries_for(size_t n, unsigned d, int quick)
{
    double budget = quick ? 2e10 : 5e10;
    double q = budget / ((double)n * d);
    double hi = quick ? 500 : 1000;
    if (q > hi) {
        q = hi;
    }
    if (q < 100) {
        q = 100;
    }
    return (size_t)q;
}

/* ---- exact reference ------------------------------------------------- */

static double ddot(const float *a, const float *b, unsigned d)
{
    double s = 0.0;
    for (unsigned i = 0; i < d; i++) {
        s += (double)a[i] * b[i];
    }
    return s;
}

/* Exact top-1 of each query over the first n rows: sgemm picks REF_CAND
 * candidates per query, double precision picks among them (lower id on a
 * tie). */
static int exact_top1(const float *data, size_t n, unsigned d, const float *qs,
                      size_t nq, uint64_t *ref_id, double *ref_sim)
{
    const size_t rb = 2048;
    float *s = malloc(nq * rb * sizeof(float));
    float *cs = malloc(nq * REF_CAND * sizeof(float));
    size_t *ci = malloc(nq * REF_CAND * sizeof(size_t));
    if (s == NULL || cs == NULL || ci == NULL) {
        free(s);
        free(cs);
        free(ci);
        return -1;
    }
    for (size_t i = 0; i < nq * REF_CAND; i++) {
        cs[i] = -FLT_MAX;
        ci[i] = SIZE_MAX;
    }
    for (size_t b = 0; b < n; b += rb) {
        size_t nb = n - b < rb ? n - b : rb;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)nb,
                    (int)d, 1.0f, qs, (int)d, data + b * d, (int)d, 0.0f, s,
                    (int)nb);
        for (size_t q = 0; q < nq; q++) {
            float *qc = cs + q * REF_CAND;
            size_t *qi = ci + q * REF_CAND;
            const float *row = s + q * nb;
            for (size_t j = 0; j < nb; j++) {
                float v = row[j];
                if (v <= qc[REF_CAND - 1]) {
                    continue;
                }
                int k = REF_CAND - 1;
                while (k > 0 && qc[k - 1] < v) {
                    qc[k] = qc[k - 1];
                    qi[k] = qi[k - 1];
                    k--;
                }
                qc[k] = v;
                qi[k] = b + j;
            }
        }
    }
    for (size_t q = 0; q < nq; q++) {
        ref_id[q] = NO_ID;
        ref_sim[q] = -INFINITY;
        for (int k = 0; k < REF_CAND; k++) {
            size_t id = ci[q * REF_CAND + k];
            if (id == SIZE_MAX) {
                continue;
            }
            double v = ddot(qs + q * d, data + id * d, d);
            if (v > ref_sim[q] || (v == ref_sim[q] && id < ref_id[q])) {
                ref_sim[q] = v;
                ref_id[q] = id;
            }
        }
    }
    free(s);
    free(cs);
    free(ci);
    return 0;
}

/* Agreement of got_id with the exact top-1 (a different id of equal exact
 * similarity agrees too) and the largest error of the reported similarity. */
static void score(const float *data, unsigned d, const float *qs, size_t nq,
                  const uint64_t *ref_id, const double *ref_sim,
                  const uint64_t *got_id, const float *got_sim, double *agree,
                  double *maxerr)
{
    size_t ok = 0;
    double err = 0.0;
    for (size_t q = 0; q < nq; q++) {
        if (got_id[q] == NO_ID) {
            err = INFINITY;
            continue;
        }
        if (got_id[q] == ref_id[q] ||
            fabs(ddot(qs + q * d, data + got_id[q] * d, d) - ref_sim[q]) <=
                TIE_EPS) {
            ok++;
        }
        double e = fabs((double)got_sim[q] - ref_sim[q]);
        if (e > err) {
            err = e;
        }
    }
    *agree = (double)ok / (double)nq;
    *maxerr = err;
}

/* ---- engines: our index and FAISS behind one shape ------------------- */

typedef struct engine engine;
struct engine {
    void *h;
    unsigned cap;     /* most queries one `many` call takes */
    sc_hit *hits;     /* ours: cap hits */
    unsigned *nhits;  /* ours: cap counts */
    float *fdist;     /* FAISS: cap distances */
    int64_t *flabels; /* FAISS: cap labels */
    int (*one)(engine *e, const float *q, uint64_t *id, float *sim);
    int (*many)(engine *e, const float *qs, size_t nq, uint64_t *ids,
                float *sims);
};

static int ours_one(engine *e, const float *q, uint64_t *id, float *sim)
{
    sc_hit hit;
    unsigned nh = 0;
    sc_err rc = sc_index_search(e->h, q, 1, -1.0f, &hit, &nh);
    if (rc != SC_OK) {
        fprintf(stderr, "bench_index: sc_index_search: %s\n", sc_strerror(rc));
        return -1;
    }
    *id = nh ? hit.id : NO_ID;
    *sim = nh ? hit.similarity : NAN;
    return 0;
}

static int ours_many(engine *e, const float *qs, size_t nq, uint64_t *ids,
                     float *sims)
{
    sc_err rc =
        sc_index_search_batch(e->h, qs, nq, 1, -1.0f, e->hits, e->nhits);
    if (rc != SC_OK) {
        fprintf(stderr, "bench_index: sc_index_search_batch: %s\n",
                sc_strerror(rc));
        return -1;
    }
    for (size_t i = 0; i < nq; i++) {
        ids[i] = e->nhits[i] ? e->hits[i].id : NO_ID;
        sims[i] = e->nhits[i] ? e->hits[i].similarity : NAN;
    }
    return 0;
}

#if HAVE_FAISS
static int faiss_fail(const char *what)
{
    /* The next FAISS call overwrites the message: copy it first. */
    const char *m = faiss_get_last_error();
    char msg[256];
    snprintf(msg, sizeof(msg), "%s", m ? m : "unknown error");
    fprintf(stderr, "bench_index: %s: %s\n", what, msg);
    return -1;
}

static int faiss_many(engine *e, const float *qs, size_t nq, uint64_t *ids,
                      float *sims)
{
    if (faiss_Index_search(e->h, (idx_t)nq, qs, 1, e->fdist, e->flabels) != 0) {
        return faiss_fail("faiss_Index_search");
    }
    for (size_t i = 0; i < nq; i++) {
        ids[i] = e->flabels[i] < 0 ? NO_ID : (uint64_t)e->flabels[i];
        sims[i] = e->fdist[i];
    }
    return 0;
}

static int faiss_one(engine *e, const float *q, uint64_t *id, float *sim)
{
    return faiss_many(e, q, 1, id, sim);
}
#endif

/* ---- timing ---------------------------------------------------------- */

typedef struct ctx {
    const opts *o;
    const char *tier;
    const char *kernel;
    const float *data;
    size_t n;
    unsigned d;
    const float *qs; /* nq + batch rows, see gen_queries */
    size_t nq;
    const uint64_t *ref_id;
    const double *ref_sim;
    uint64_t *s_id, *b_id; /* nq results each: single and batch calls */
    float *s_sim, *b_sim;
} ctx;

static size_t clamp_count(double want, size_t lo, size_t hi)
{
    if (!(want < (double)hi)) {
        return hi;
    }
    size_t m = (size_t)ceil(want);
    return m < lo ? lo : m;
}

/* Times one query per call, cycling through the query set; the first pass
 * over the set is recorded into s_id/s_sim. Returns queries covered. */
static int time_single(const ctx *c, engine *e, double *ms, size_t *timed,
                       size_t *covered)
{
    uint64_t id;
    float sim;
    size_t w = 0;
    double t0 = sc_bench_now(), el;
    /* Warm-up: caches, pages, branch predictors; and a time estimate. */
    do {
        if (e->one(e, c->qs + (w % c->nq) * c->d, &id, &sim) != 0) {
            return -1;
        }
        w++;
        el = sc_bench_now() - t0;
    } while (w < 10 && el < 0.05);
    size_t m =
        clamp_count(c->o->seconds / (el / (double)w), MIN_SINGLE, MAX_TIMED);
    t0 = sc_bench_now();
    for (size_t i = 0; i < m; i++) {
        size_t qi = i % c->nq;
        if (e->one(e, c->qs + qi * c->d, &id, &sim) != 0) {
            return -1;
        }
        if (i < c->nq) {
            c->s_id[qi] = id;
            c->s_sim[qi] = sim;
        }
    }
    el = sc_bench_now() - t0;
    *ms = el * 1e3 / (double)m;
    *timed = m;
    *covered = m < c->nq ? m : c->nq;
    return 0;
}

/* Times batch calls of o->batch queries; batch j starts at query
 * j*batch mod nq. Records the first pass into b_id/b_sim, then scores the
 * rest of the set (untimed) with more batch calls. */
static int time_batch(const ctx *c, engine *e, double *ms, size_t *timed)
{
    size_t bsz = c->o->batch;
    uint64_t *ids = malloc(bsz * sizeof(uint64_t));
    float *sims = malloc(bsz * sizeof(float));
    if (ids == NULL || sims == NULL) {
        free(ids);
        free(sims);
        return -1;
    }
    int rc = -1;
    size_t w = 0;
    double t0 = sc_bench_now(), el;
    do {
        if (e->many(e, c->qs + ((w * bsz) % c->nq) * c->d, bsz, ids, sims)) {
            goto out;
        }
        w++;
        el = sc_bench_now() - t0;
    } while (w < 3 && el < 0.05);
    size_t cap = MAX_TIMED / bsz > 0 ? MAX_TIMED / bsz : 1;
    size_t m = clamp_count(c->o->seconds / (el / (double)w), 1, cap);
    t0 = sc_bench_now();
    for (size_t j = 0; j < m; j++) {
        size_t first = j * bsz;
        if (e->many(e, c->qs + (first % c->nq) * c->d, bsz, ids, sims)) {
            goto out;
        }
        for (size_t t = 0; t < bsz && first + t < c->nq; t++) {
            c->b_id[first + t] = ids[t];
            c->b_sim[first + t] = sims[t];
        }
    }
    el = sc_bench_now() - t0;
    *ms = el * 1e3 / (double)(m * bsz);
    *timed = m * bsz;
    for (size_t i = m * bsz; i < c->nq; i += bsz) {
        size_t k = c->nq - i < bsz ? c->nq - i : bsz;
        if (e->many(e, c->qs + i * c->d, k, c->b_id + i, c->b_sim + i)) {
            goto out;
        }
    }
    rc = 0;
out:
    free(ids);
    free(sims);
    return rc;
}

static void emit(const ctx *c, const char *bench, const char *storage,
                 const char *tier, const char *kernel, const char *mode,
                 unsigned batch, double ms, double agree, double simerr,
                 size_t timed, double build_s, size_t mem)
{
    printf("ROW %s %zu %u %s %s %s %s %u %.9g %.9g %.9g %zu %zu %.6g %zu\n",
           bench, c->n, c->d, storage, tier, kernel, mode, batch, ms, agree,
           simerr, c->nq, timed, build_s, mem);
    fflush(stdout);
}

/* Single then batch measurements of one engine, and their agreement. */
static int measure(const ctx *c, engine *e, const char *bench,
                   const char *storage, const char *tier, const char *kernel,
                   double build_s, size_t mem)
{
    double ms_s, ms_b, agree, err;
    size_t timed_s, timed_b, covered;
    if (time_single(c, e, &ms_s, &timed_s, &covered) != 0 ||
        time_batch(c, e, &ms_b, &timed_b) != 0) {
        return -1;
    }
    /* The single row's agreement: single-call answers where the timing
     * loop reached them, batch-call answers for the rest of the set. */
    for (size_t i = covered; i < c->nq; i++) {
        c->s_id[i] = c->b_id[i];
        c->s_sim[i] = c->b_sim[i];
    }
    score(c->data, c->d, c->qs, c->nq, c->ref_id, c->ref_sim, c->s_id, c->s_sim,
          &agree, &err);
    emit(c, bench, storage, tier, kernel, "single", 1, ms_s, agree, err,
         timed_s, build_s, mem);
    score(c->data, c->d, c->qs, c->nq, c->ref_id, c->ref_sim, c->b_id, c->b_sim,
          &agree, &err);
    emit(c, bench, storage, tier, kernel, "batch", c->o->batch, ms_b, agree,
         err, timed_b, build_s, mem);
    return 0;
}

static int run_ours(const ctx *c, sc_storage st)
{
    sc_index_params p;
    sc_index_params_init(&p);
    p.dim = c->d;
    p.storage = st;
    p.threads = 1;
    sc_index *ix;
    sc_err rc = sc_index_open(&p, &ix);
    if (rc != SC_OK) {
        fprintf(stderr, "bench_index: sc_index_open: %s\n", sc_strerror(rc));
        return -1;
    }
    int ret = -1;
    engine e = {0};
    e.h = ix;
    e.cap = c->o->batch;
    e.one = ours_one;
    e.many = ours_many;
    e.hits = malloc(e.cap * sizeof(sc_hit));
    e.nhits = malloc(e.cap * sizeof(unsigned));
    if (e.hits == NULL || e.nhits == NULL) {
        goto out;
    }
    double t0 = sc_bench_now();
    for (size_t i = 0; i < c->n; i++) {
        rc = sc_index_add(ix, i, c->data + i * c->d);
        if (rc != SC_OK) {
            fprintf(stderr, "bench_index: sc_index_add: %s\n", sc_strerror(rc));
            goto out;
        }
    }
    double build_s = sc_bench_now() - t0;
    ret = measure(c, &e, "flat", sc_storage_name(st), c->tier, c->kernel,
                  build_s, sc_index_memory(ix));
out:
    free(e.hits);
    free(e.nhits);
    sc_index_close(ix);
    return ret;
}

#if HAVE_FAISS
static int run_faiss(const ctx *c)
{
    FaissIndexFlatIP *idx = NULL;
    if (faiss_IndexFlatIP_new_with(&idx, (idx_t)c->d) != 0) {
        return faiss_fail("faiss_IndexFlatIP_new_with");
    }
    int ret = -1;
    engine e = {0};
    e.h = idx;
    e.cap = c->o->batch;
    e.one = faiss_one;
    e.many = faiss_many;
    e.fdist = malloc(e.cap * sizeof(float));
    e.flabels = malloc(e.cap * sizeof(int64_t));
    if (e.fdist == NULL || e.flabels == NULL) {
        goto out;
    }
    double t0 = sc_bench_now();
    if (faiss_Index_add(idx, (idx_t)c->n, c->data) != 0) {
        faiss_fail("faiss_Index_add");
        goto out;
    }
    double build_s = sc_bench_now() - t0;
    ret = measure(c, &e, "faiss", "f32", "-", "-", build_s,
                  c->n * c->d * sizeof(float));
out:
    free(e.fdist);
    free(e.flabels);
    faiss_Index_free(idx);
    return ret;
}
#endif

/* ---- child: one tier, every configuration ---------------------------- */

/* Bytes one size needs at its peak: the data plus one f32 copy of it. */
static double need_bytes(size_t n, unsigned d)
{
    return 2.0 * (double)n * d * sizeof(float) + 64.0 * (double)n;
}

static int child_main(const opts *o)
{
    const sc_simd_kernels *k = sc_simd_active();
    if (k == NULL || (int)k->tier != o->child_tier) {
        fprintf(stderr,
                "bench_index: asked for tier %s but the index runs %s "
                "(SEMCACHE_SIMD=%s)\n",
                sc_simd_tier_name((sc_simd_tier)o->child_tier),
                k ? k->name : "none",
                getenv("SEMCACHE_SIMD") ? getenv("SEMCACHE_SIMD") : "");
        return 1;
    }
    const char *tier = sc_simd_tier_name(k->tier);
    sc_bench_machine m;
    sc_bench_machine_read(&m);
    double mem_ok = m.mem_bytes ? 0.85 * (double)m.mem_bytes : INFINITY;
    int failed = 0;
    for (unsigned di = 0; di < o->nd; di++) {
        unsigned d = o->ds[di];
        size_t nmax = 0;
        for (unsigned ni = 0; ni < o->nn; ni++) {
            if (need_bytes(o->ns[ni], d) <= mem_ok) {
                nmax = o->ns[ni];
            } else {
                fprintf(stderr,
                        "bench_index: skipping n=%zu d=%u: needs %.1f GiB, "
                        "machine has %.1f GiB\n",
                        o->ns[ni], d, need_bytes(o->ns[ni], d) / 1073741824.0,
                        (double)m.mem_bytes / 1073741824.0);
            }
        }
        if (nmax == 0) {
            continue;
        }
        fprintf(stderr, "[%s] d=%u: generating %zu vectors\n", tier, d, nmax);
        float *data = malloc(nmax * d * sizeof(float));
        if (data == NULL || gen_data(d, nmax, data, NULL) != 0) {
            fprintf(stderr, "bench_index: out of memory for n=%zu d=%u\n", nmax,
                    d);
            free(data);
            failed = 1;
            continue;
        }
        for (unsigned ni = 0; ni < o->nn && o->ns[ni] <= nmax; ni++) {
            size_t n = o->ns[ni];
            size_t nq = queries_for(n, d, o->quick);
            float *qs = malloc((nq + o->batch) * d * sizeof(float));
            uint64_t *ids = malloc(3 * nq * sizeof(uint64_t));
            double *ref_sim = malloc(nq * sizeof(double));
            float *sims = malloc(2 * nq * sizeof(float));
            if (qs == NULL || ids == NULL || ref_sim == NULL || sims == NULL) {
                fprintf(stderr, "bench_index: out of memory\n");
                failed = 1;
                goto next;
            }
            gen_queries(data, n, d, nq, o->batch, qs, NULL);
            if (exact_top1(data, n, d, qs, nq, ids, ref_sim) != 0) {
                fprintf(stderr, "bench_index: out of memory\n");
                failed = 1;
                goto next;
            }
            fprintf(stderr, "[%s] n=%zu d=%u: %zu queries\n", tier, n, d, nq);
            ctx c = {.o = o,
                     .tier = tier,
                     .kernel = k->name,
                     .data = data,
                     .n = n,
                     .d = d,
                     .qs = qs,
                     .nq = nq,
                     .ref_id = ids,
                     .ref_sim = ref_sim,
                     .s_id = ids + nq,
                     .b_id = ids + 2 * nq,
                     .s_sim = sims,
                     .b_sim = sims + nq};
            for (unsigned si = 0; si < o->nstor; si++) {
                if (run_ours(&c, (sc_storage)o->storages[si]) != 0) {
                    failed = 1;
                }
            }
#if HAVE_FAISS
            if (o->child_faiss && run_faiss(&c) != 0) {
                failed = 1;
            }
#endif
        next:
            free(qs);
            free(ids);
            free(ref_sim);
            free(sims);
        }
        free(data);
    }
    return failed;
}

/* ---- parent: bandwidth, children, table ------------------------------ */

/* Best-of-passes single-thread read bandwidth in GB/s (1e9 bytes) of a
 * plain AVX2 sum over a buffer of 4x L3, at least 1 GiB. */
static double probe_bandwidth(size_t l3, int passes, size_t *bytes_out,
                              const char **kernel)
{
    size_t bytes = (size_t)1 << 30;
    if (4 * l3 > bytes) {
        bytes = 4 * l3;
    }
    size_t count = bytes / sizeof(float);
    *bytes_out = count * sizeof(float);
    const sc_simd_kernels *k = sc_simd_get(SC_TIER_AVX2);
    if (k == NULL) {
        k = sc_simd_get(SC_TIER_SCALAR);
    }
    *kernel = k->name;
    float *buf = malloc(count * sizeof(float));
    if (buf == NULL) {
        return NAN;
    }
    /* Writes every page, so the timed passes read real memory. */
    for (size_t i = 0; i < count; i++) {
        buf[i] = (float)(i & 7) * 0.125f;
    }
    volatile float sink = 0.0f;
    double best = INFINITY;
    for (int p = 0; p < passes; p++) {
        double t0 = sc_bench_now();
        sink += k->sum_f32(buf, count);
        double t = sc_bench_now() - t0;
        if (t < best) {
            best = t;
        }
    }
    (void)sink;
    free(buf);
    return (double)*bytes_out / best / 1e9;
}

static int rows_push(rows *r, const row *x)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 64;
        row *a = realloc(r->a, cap * sizeof(row));
        if (a == NULL) {
            return -1;
        }
        r->a = a;
        r->cap = cap;
    }
    r->a[r->n++] = *x;
    return 0;
}

static int parse_row(const char *line, row *x)
{
    memset(x, 0, sizeof(*x));
    int got = sscanf(line,
                     "ROW %15s %zu %u %7s %15s %23s %7s %u %lf %lf %lf %u %u "
                     "%lf %zu",
                     x->bench, &x->n, &x->d, x->storage, x->tier, x->kernel,
                     x->mode, &x->batch, &x->ms, &x->agree, &x->simerr,
                     &x->agree_q, &x->timed_q, &x->build_s, &x->mem);
    return got == 15 ? 0 : -1;
}

static void join_sizes(char *out, size_t cap, const size_t *v, unsigned n)
{
    size_t len = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < n && len < cap; i++) {
        len +=
            (size_t)snprintf(out + len, cap - len, "%s%zu", i ? "," : "", v[i]);
    }
}

/* Runs this program as a child for one tier; appends its rows. */
static int run_child(const opts *o, int tier, const size_t *ns, unsigned nn,
                     int with_faiss, rows *out)
{
    char nlist[MAX_LIST * 12], dlist[MAX_LIST * 6], slist[32], bstr[16],
        sstr[32];
    size_t dv[MAX_LIST];
    for (unsigned i = 0; i < o->nd; i++) {
        dv[i] = o->ds[i];
    }
    join_sizes(nlist, sizeof(nlist), ns, nn);
    join_sizes(dlist, sizeof(dlist), dv, o->nd);
    slist[0] = '\0';
    for (unsigned i = 0; i < o->nstor; i++) {
        strcat(slist, i ? "," : "");
        strcat(slist, sc_storage_name((sc_storage)o->storages[i]));
    }
    snprintf(bstr, sizeof(bstr), "%u", o->batch);
    snprintf(sstr, sizeof(sstr), "%.17g", o->seconds);
    const char *tname = sc_simd_tier_name((sc_simd_tier)tier);
    char *argv[20];
    int a = 0;
    argv[a++] = "bench_index";
    argv[a++] = "--child-tier";
    argv[a++] = (char *)tname;
    argv[a++] = "--n";
    argv[a++] = nlist;
    argv[a++] = "--d";
    argv[a++] = dlist;
    argv[a++] = "--storage";
    argv[a++] = slist;
    argv[a++] = "--batch";
    argv[a++] = bstr;
    argv[a++] = "--seconds";
    argv[a++] = sstr;
    if (o->quick) {
        argv[a++] = "--quick";
    }
    if (with_faiss) {
        argv[a++] = "--child-faiss";
    }
    argv[a] = NULL;

    int fds[2];
    if (pipe(fds) != 0) {
        perror("bench_index: pipe");
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("bench_index: fork");
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        if (dup2(fds[1], STDOUT_FILENO) < 0) {
            _exit(127);
        }
        close(fds[1]);
        setenv("SEMCACHE_SIMD", tname, 1);
        setenv("OMP_NUM_THREADS", "1", 1);
        setenv("OPENBLAS_NUM_THREADS", "1", 1);
        execv("/proc/self/exe", argv);
        perror("bench_index: execv /proc/self/exe");
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    if (f == NULL) {
        close(fds[0]);
        waitpid(pid, NULL, 0);
        return -1;
    }
    int bad = 0;
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, f) > 0) {
        row x;
        if (strncmp(line, "ROW ", 4) == 0 && parse_row(line, &x) == 0) {
            if (rows_push(out, &x) != 0) {
                bad = 1;
            }
        } else {
            fprintf(stderr, "%s", line); /* not ours: pass it on */
        }
    }
    free(line);
    fclose(f);
    int status;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_index: the %s child failed (%s %d)\n", tname,
                WIFSIGNALED(status) ? "signal" : "exit",
                WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        bad = 1;
    }
    return bad ? -1 : 0;
}

static int storage_bytes(const char *name)
{
    switch (sc_storage_parse(name)) {
    case SC_STORAGE_F32:
        return 4;
    case SC_STORAGE_F16:
        return 2;
    case SC_STORAGE_I8:
        return 1;
    }
    return 4;
}

static int tier_rank(const char *t)
{
    return strcmp(t, "-") == 0 ? -1 : sc_simd_tier_parse(t);
}

static int cmp_row(const void *pa, const void *pb)
{
    const row *a = pa, *b = pb;
    if (a->d != b->d) {
        return a->d < b->d ? -1 : 1;
    }
    if (a->n != b->n) {
        return a->n < b->n ? -1 : 1;
    }
    int c = strcmp(b->mode, a->mode); /* "single" before "batch" */
    if (c != 0) {
        return c;
    }
    c = strcmp(b->bench, a->bench); /* "flat" before "faiss" */
    if (c != 0) {
        return c;
    }
    int sa = sc_storage_parse(a->storage), sb = sc_storage_parse(b->storage);
    if (sa != sb) {
        return sa - sb;
    }
    return tier_rank(b->tier) - tier_rank(a->tier); /* best tier first */
}

static const row *find_row(const rows *r, const char *bench, size_t n,
                           unsigned d, const char *storage, const char *tier,
                           const char *mode)
{
    for (size_t i = 0; i < r->n; i++) {
        const row *x = &r->a[i];
        if (x->n == n && x->d == d && strcmp(x->bench, bench) == 0 &&
            strcmp(x->mode, mode) == 0 &&
            (storage == NULL || strcmp(x->storage, storage) == 0) &&
            (tier == NULL || strcmp(x->tier, tier) == 0)) {
            return x;
        }
    }
    return NULL;
}

/* The derived columns of one row; NAN where not applicable. */
typedef struct derived {
    double qps, gbps, bw_fraction, faiss_ms, vs_faiss, vs_f32;
} derived;

static derived derive(const rows *r, const row *x, double bw)
{
    derived v;
    v.qps = 1e3 / x->ms;
    v.gbps =
        (double)x->n * x->d * storage_bytes(x->storage) / (x->ms * 1e-3) / 1e9;
    v.bw_fraction = v.gbps / bw;
    v.faiss_ms = NAN;
    v.vs_faiss = NAN;
    v.vs_f32 = NAN;
    if (strcmp(x->bench, "flat") == 0) {
        const row *f = find_row(r, "faiss", x->n, x->d, NULL, NULL, x->mode);
        if (f != NULL) {
            v.faiss_ms = f->ms;
            v.vs_faiss = f->ms / x->ms;
        }
        const row *b = find_row(r, "flat", x->n, x->d, "f32", x->tier, x->mode);
        if (b != NULL) {
            v.vs_f32 = b->ms / x->ms;
        }
    }
    return v;
}

static void print_json_row(const rows *r, const row *x, double bw)
{
    derived v = derive(r, x, bw);
    int faiss = strcmp(x->bench, "faiss") == 0;
    int single = strcmp(x->mode, "single") == 0;
    sc_bench_json j;
    sc_bench_json_begin(&j);
    sc_bench_json_str(&j, "bench", faiss ? "faiss_flat_ip" : "index_flat");
    sc_bench_json_int(&j, "n", (long long)x->n);
    sc_bench_json_int(&j, "d", x->d);
    sc_bench_json_str(&j, "storage", x->storage);
    sc_bench_json_str(&j, "tier", faiss ? NULL : x->tier);
    sc_bench_json_str(&j, "kernel", faiss ? NULL : x->kernel);
    sc_bench_json_str(&j, "mode", x->mode);
    sc_bench_json_num(&j, "batch", single ? NAN : (double)x->batch);
    sc_bench_json_int(&j, "k", 1);
    sc_bench_json_int(&j, "threads", 1);
    sc_bench_json_num(&j, "ms_per_query", x->ms);
    sc_bench_json_num(&j, "queries_per_s", v.qps);
    sc_bench_json_num(&j, "gbps", v.gbps);
    sc_bench_json_num(&j, "bw_gbps", bw);
    sc_bench_json_num(&j, "bw_fraction", v.bw_fraction);
    sc_bench_json_num(&j, "faiss_ms_per_query", v.faiss_ms);
    sc_bench_json_num(&j, "vs_faiss", v.vs_faiss);
    sc_bench_json_num(&j, "vs_f32", v.vs_f32);
    sc_bench_json_num(&j, "top1_agreement", x->agree);
    sc_bench_json_num(&j, "sim_max_err", x->simerr);
    sc_bench_json_int(&j, "agreement_queries", x->agree_q);
    sc_bench_json_int(&j, "timed_queries", x->timed_q);
    sc_bench_json_num(&j, "build_s", x->build_s);
    sc_bench_json_int(&j, "memory_bytes", (long long)x->mem);
    sc_bench_json_end(&j, stdout);
}

static void fmt_num(char *buf, size_t cap, const char *fmt, double v)
{
    if (isfinite(v)) {
        snprintf(buf, cap, fmt, v);
    } else {
        snprintf(buf, cap, "-");
    }
}

static void print_table(const rows *r, double bw)
{
    printf("\n%8s %5s %-5s %-7s %-6s %5s %10s %9s %7s %5s %10s %8s %6s %7s "
           "%8s\n",
           "N", "d", "store", "tier", "mode", "batch", "us/query", "q/s",
           "GB/s", "bw%", "faiss us", "vsFAISS", "vsf32", "top1", "sim err");
    const row *prev = NULL;
    for (size_t i = 0; i < r->n; i++) {
        const row *x = &r->a[i];
        if (prev != NULL && (prev->n != x->n || prev->d != x->d ||
                             strcmp(prev->mode, x->mode) != 0)) {
            printf("\n");
        }
        prev = x;
        derived v = derive(r, x, bw);
        int faiss = strcmp(x->bench, "faiss") == 0;
        char batch[16], fms[16], vsf[16], vs32[16], bwp[16];
        snprintf(batch, sizeof(batch), "%u", x->batch);
        fmt_num(fms, sizeof(fms), "%10.2f", v.faiss_ms * 1e3);
        fmt_num(vsf, sizeof(vsf), "%8.2f", v.vs_faiss);
        fmt_num(vs32, sizeof(vs32), "%6.2f", v.vs_f32);
        fmt_num(bwp, sizeof(bwp), "%4.0f%%", 100.0 * v.bw_fraction);
        printf("%8zu %5u %-5s %-7s %-6s %5s %10.2f %9.0f %7.2f %5s %10s %8s "
               "%6s %7.4f %8.1e\n",
               x->n, x->d, x->storage, faiss ? "FAISS" : x->tier, x->mode,
               batch, x->ms * 1e3, v.qps, v.gbps, bwp, fms, vsf, vs32, x->agree,
               x->simerr);
    }
}

typedef struct target {
    const char *what;
    const char *mode;
    size_t n;
    const char *storage;
    const char *metric; /* bw_fraction, vs_faiss, vs_f32, agree, us */
    int at_most;        /* 1: value <= limit passes; 0: >= */
    double limit;
} target;

static void print_targets(const rows *r, const opts *o, double bw)
{
    static const target ts[] = {
        {"single, N=100k, d=384, f32: bw_fraction", "single", 100000, "f32",
         "bw_fraction", 0, 0.85},
        {"single, N=100k, d=384, f32: vs_faiss", "single", 100000, "f32",
         "vs_faiss", 0, 3.5},
        {"single, N=100k, d=384, f16: vs_f32 (queries/s)", "single", 100000,
         "f16", "vs_f32", 0, 1.8},
        {"single, N=100k, d=384, f16: top1_agreement", "single", 100000, "f16",
         "agree", 0, 0.995},
        {"single, N=100k, d=384, int8: vs_f32 (queries/s)", "single", 100000,
         "int8", "vs_f32", 0, 3.0},
        {"single, N=100k, d=384, int8: top1_agreement", "single", 100000,
         "int8", "agree", 0, 0.995},
        {"batch of 64, N=100k, d=384, f32: vs_faiss", "batch", 100000, "f32",
         "vs_faiss", 0, 2.0},
        {"single, N=1k, d=384, f32: us/query", "single", 1000, "f32", "us", 1,
         25.0},
        {"single, N=1k, d=384, int8: us/query", "single", 1000, "int8", "us", 1,
         10.0},
    };
    /* Targets speak of the machine's best tier among those measured. */
    const char *best = NULL;
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->a[i].bench, "flat") == 0 &&
            (best == NULL || tier_rank(r->a[i].tier) > tier_rank(best))) {
            best = r->a[i].tier;
        }
    }
    if (!o->json) {
        printf("\ntargets (one thread, tier %s):\n", best ? best : "-");
    }
    for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) {
        const target *t = &ts[i];
        const row *x = NULL;
        const char *why = "not measured";
        if (best != NULL &&
            !(strcmp(t->mode, "batch") == 0 && o->batch != 64)) {
            x = find_row(r, "flat", t->n, 384, t->storage, best, t->mode);
        } else if (best != NULL) {
            why = "not measured: run with --batch 64";
        }
        double v = NAN;
        if (x != NULL) {
            derived dv = derive(r, x, bw);
            if (strcmp(t->metric, "bw_fraction") == 0) {
                v = dv.bw_fraction;
            } else if (strcmp(t->metric, "vs_faiss") == 0) {
                v = dv.vs_faiss;
                why = "FAISS not built";
            } else if (strcmp(t->metric, "vs_f32") == 0) {
                v = dv.vs_f32;
                why = "f32 not measured";
            } else if (strcmp(t->metric, "agree") == 0) {
                v = x->agree;
            } else {
                v = x->ms * 1e3;
            }
        }
        const char *res = !isfinite(v) ? "SKIP"
                          : (t->at_most ? v <= t->limit : v >= t->limit)
                              ? "PASS"
                              : "FAIL";
        if (o->json) {
            sc_bench_json j;
            sc_bench_json_begin(&j);
            sc_bench_json_str(&j, "bench", "target");
            sc_bench_json_str(&j, "target", t->what);
            sc_bench_json_str(&j, "tier", best);
            sc_bench_json_num(&j, "value", v);
            sc_bench_json_str(&j, "op", t->at_most ? "<=" : ">=");
            sc_bench_json_num(&j, "limit", t->limit);
            sc_bench_json_str(&j, "result", res);
            sc_bench_json_end(&j, stdout);
        } else {
            char val[32], note[64] = "";
            fmt_num(val, sizeof(val), "%.3f", v);
            if (!isfinite(v)) {
                snprintf(note, sizeof(note), " (%s)", why);
            }
            printf("  %-48s %s %-6g %9s  %s%s\n", t->what,
                   t->at_most ? "<=" : ">=", t->limit, val, res, note);
        }
    }
}

typedef struct plan {
    int tier;
    size_t ns[MAX_LIST];
    unsigned nn;
    int faiss;
} plan;

static unsigned make_plans(const opts *o, plan *p)
{
    sc_simd_tier best = sc_simd_best_supported();
    unsigned np = 0;
    int tiers[SC_TIER_COUNT];
    unsigned nt = 0;
    if (o->ntiers > 0) {
        memcpy(tiers, o->tiers, o->ntiers * sizeof(int));
        nt = o->ntiers;
    } else {
        for (int t = (int)best; t >= 0; t--) {
            if (sc_simd_get((sc_simd_tier)t) != NULL) {
                tiers[nt++] = t;
            }
        }
    }
    for (unsigned i = 0; i < nt; i++) {
        plan *x = &p[np];
        x->tier = tiers[i];
        x->nn = 0;
        x->faiss = 0;
        /* By default scalar, being slow, only runs where data is small;
         * unless it is all the CPU has. */
        int limit = o->ntiers == 0 && !o->all_tiers &&
                    tiers[i] == SC_TIER_SCALAR && best != SC_TIER_SCALAR;
        for (unsigned k = 0; k < o->nn; k++) {
            if (!limit || o->ns[k] <= SCALAR_MAX_N) {
                x->ns[x->nn++] = o->ns[k];
            }
        }
        if (x->nn > 0) {
            np++;
        }
    }
    /* FAISS does not depend on the tier: run it once, in the first child
     * that covers every N. */
    for (unsigned i = 0; i < np && HAVE_FAISS; i++) {
        if (p[i].nn == o->nn) {
            p[i].faiss = 1;
            break;
        }
    }
    return np;
}

static void print_header(const opts *o, const sc_bench_machine *m,
                         const plan *p, unsigned np, double bw, size_t bw_bytes,
                         const char *bw_kernel, int passes)
{
    char tiers[128] = "";
    size_t len = 0;
    for (unsigned i = 0; i < np; i++) {
        char lim[32] = "";
        if (p[i].nn != o->nn) {
            snprintf(lim, sizeof(lim), " (N<=%zu)", p[i].ns[p[i].nn - 1]);
        }
        len += (size_t)snprintf(
            tiers + len, sizeof(tiers) - len, "%s%s%s", i ? ", " : "",
            sc_simd_tier_name((sc_simd_tier)p[i].tier), lim);
        if (len >= sizeof(tiers)) {
            break;
        }
    }
    const char *best = sc_simd_tier_name(sc_simd_best_supported());
    if (o->json) {
        sc_bench_json j;
        sc_bench_json_begin(&j);
        sc_bench_json_str(&j, "bench", "machine");
        sc_bench_json_str(&j, "cpu", m->cpu);
        sc_bench_json_int(&j, "cores", m->cores);
        sc_bench_json_int(&j, "l3_bytes", (long long)m->l3_bytes);
        sc_bench_json_int(&j, "mem_bytes", (long long)m->mem_bytes);
        sc_bench_json_str(&j, "date", m->date);
        sc_bench_json_str(&j, "tiers", tiers);
        sc_bench_json_str(&j, "best_tier", best);
        sc_bench_json_bool(&j, "faiss", HAVE_FAISS);
        sc_bench_json_str(&j, "openblas_core", openblas_get_corename());
        sc_bench_json_int(&j, "threads", 1);
        sc_bench_json_end(&j, stdout);
        sc_bench_json_begin(&j);
        sc_bench_json_str(&j, "bench", "bandwidth");
        sc_bench_json_num(&j, "bw_gbps", bw);
        sc_bench_json_int(&j, "buffer_bytes", (long long)bw_bytes);
        sc_bench_json_str(&j, "kernel", bw_kernel);
        sc_bench_json_int(&j, "passes", passes);
        sc_bench_json_end(&j, stdout);
        return;
    }
    printf("bench_index: flat index vs FAISS IndexFlatIP vs memory "
           "bandwidth (one thread, k=1, threshold -1)\n");
    printf("machine:   %s, %ld cores, L3 %.0f MiB, RAM %.1f GiB, %s\n", m->cpu,
           m->cores, (double)m->l3_bytes / 1048576.0,
           (double)m->mem_bytes / 1073741824.0, m->date);
    printf("tiers:     %s (best supported: %s); FAISS: %s; OpenBLAS core: "
           "%s\n",
           tiers, best, HAVE_FAISS ? "yes" : "not built",
           openblas_get_corename());
    printf("bandwidth: %.2f GB/s (%s sum over %.0f MiB, best of %d)\n", bw,
           bw_kernel, (double)bw_bytes / 1048576.0, passes);
    printf("data:      %zu clustered centres, %.0f%% near-duplicates, unit "
           "vectors; queries are perturbed base vectors\n",
           g_centres, 100.0 * DUP_SHARE);
    printf("columns:   GB/s = stored bytes scanned per second; bw%% = GB/s "
           "over bandwidth; vsFAISS = FAISS time / ours;\n"
           "           vsf32 = q/s over f32's (same tier); top1 = agreement "
           "with exact f32 search; sim err = max |sim - exact|\n");
    fflush(stdout);
}

/* ---- --backend ivf: FAISS IVF through sc_index against flat f32 ------- */

#if HAVE_FAISS
typedef struct ivf_row {
    char backend[12];
    size_t n;
    unsigned d, nlist, nprobe;
    double recall, qps, vs_flat, build_s;
    unsigned batch;
    double bqps, bvs_flat; /* batch calls: q/s, over flat's batch q/s */
    double bsame; /* queries whose batch answer equals the single one */
} ivf_row;

/* Single-query throughput over the query set (k = 1, threshold -1), cycling
 * for about o->seconds; the first pass gives each query's top-1 id. */
static double ivf_time(const opts *o, sc_index *ix, const float *qs, size_t nq,
                       unsigned d, uint64_t *ids, float *sims)
{
    size_t done = 0;
    double t0 = sc_bench_now(), el = 0.0;
    while (done < nq || (el < o->seconds && done < 200000)) {
        size_t qi = done % nq;
        sc_hit h;
        unsigned nh = 0;
        if (sc_index_search(ix, qs + qi * d, 1, -1.0f, &h, &nh) != SC_OK) {
            return -1.0;
        }
        if (done < nq) {
            ids[qi] = nh ? h.id : NO_ID;
            sims[qi] = nh ? h.similarity : NAN;
        }
        done++;
        el = sc_bench_now() - t0;
    }
    return (double)done / el;
}

/* Batch throughput: calls of bsz queries (k = 1, threshold -1), call j
 * starting at query j*bsz mod nq (qs holds nq + bsz rows), for about
 * o->seconds and at least one pass; the first pass gives each query's
 * top-1. hits and nh hold bsz entries. */
static double ivf_time_batch(const opts *o, sc_index *ix, const float *qs,
                             size_t nq, unsigned d, unsigned bsz, sc_hit *hits,
                             unsigned *nh, uint64_t *ids, float *sims)
{
    size_t done = 0;
    double t0 = sc_bench_now(), el = 0.0;
    while (done < nq || (el < o->seconds && done < 200000)) {
        size_t start = done % nq;
        if (sc_index_search_batch(ix, qs + start * d, bsz, 1, -1.0f, hits,
                                  nh) != SC_OK) {
            return -1.0;
        }
        for (size_t i = 0; done < nq && i < bsz && start + i < nq; i++) {
            ids[start + i] = nh[i] ? hits[i].id : NO_ID;
            sims[start + i] = nh[i] ? hits[i].similarity : NAN;
        }
        done += bsz;
        el = sc_bench_now() - t0;
    }
    return (double)done / el;
}

/* Share of queries whose batch top-1 (id and similarity) is the single's. */
static double same_share(const uint64_t *a, const float *as, const uint64_t *b,
                         const float *bs, size_t nq)
{
    size_t same = 0;
    for (size_t i = 0; i < nq; i++) {
        same +=
            a[i] == b[i] && (as[i] == bs[i] || (isnan(as[i]) && isnan(bs[i])));
    }
    return (double)same / (double)nq;
}

static sc_index *ivf_build(const char *backend, const opts *o,
                           const float *data, size_t n, unsigned d,
                           double *build_s)
{
    sc_index_params p;
    sc_index_params_init(&p);
    p.backend = backend;
    p.dim = d;
    p.nlist = o->nlist;
    p.train_min = SC_INDEX_TRAIN_MANUAL;
    sc_index *ix = NULL;
    sc_err rc = sc_index_open(&p, &ix);
    double t0 = sc_bench_now();
    for (size_t i = 0; rc == SC_OK && i < n; i++) {
        rc = sc_index_add(ix, i, data + i * d);
    }
    if (rc == SC_OK && strcmp(backend, "flat") != 0) {
        /* Training and adding may use both cores; queries use one. */
        omp_set_num_threads(2);
        rc = sc_index_train(ix);
        omp_set_num_threads(1);
    }
    if (rc != SC_OK) {
        fprintf(stderr, "bench_index: %s N=%zu d=%u: %s\n", backend, n, d,
                sc_strerror(rc));
        sc_index_close(ix);
        return NULL;
    }
    *build_s = sc_bench_now() - t0;
    return ix;
}

static void ivf_print(const opts *o, const ivf_row *r)
{
    if (o->json) {
        sc_bench_json j;
        sc_bench_json_begin(&j);
        sc_bench_json_str(&j, "bench", "ivf");
        sc_bench_json_str(&j, "backend", r->backend);
        sc_bench_json_int(&j, "n", (long long)r->n);
        sc_bench_json_int(&j, "d", r->d);
        sc_bench_json_int(&j, "nlist", r->nlist);
        sc_bench_json_int(&j, "nprobe", r->nprobe);
        sc_bench_json_num(&j, "recall_at_1", r->recall);
        sc_bench_json_num(&j, "queries_per_s", r->qps);
        sc_bench_json_num(&j, "vs_flat", r->vs_flat);
        sc_bench_json_num(&j, "build_s", r->build_s);
        sc_bench_json_int(&j, "batch", r->batch);
        sc_bench_json_num(&j, "batch_queries_per_s", r->bqps);
        sc_bench_json_num(&j, "batch_vs_flat_batch", r->bvs_flat);
        sc_bench_json_num(&j, "batch_equals_single", r->bsame);
        sc_bench_json_end(&j, stdout);
    } else {
        printf("| %zu | %u | %s | %u | %u | %.4f | %.0f | %.2f | %.0f | %.2f "
               "| %.3f | %.1f |\n",
               r->n, r->d, r->backend, r->nlist, r->nprobe, r->recall, r->qps,
               r->vs_flat, r->bqps, r->bvs_flat, r->bsame, r->build_s);
    }
    fflush(stdout);
}

static int ivf_main(const opts *o)
{
    static const unsigned def_np[] = {1, 2, 4, 8, 16, 32, 64};
    unsigned nnp = o->nnp ? o->nnp : 7;
    const unsigned *nps = o->nnp ? o->nprobes : def_np;
    sc_bench_machine m;
    sc_bench_machine_read(&m);
    if (!o->json) {
        printf("bench_index --backend ivf: FAISS IVF (via sc_index, exact "
               "re-scoring) against flat f32, one query thread, k=1\n");
        printf("Machine: %s, %ld cores, %.0f GiB; run %s; tier %s\n", m.cpu,
               m.cores, (double)m.mem_bytes / (1u << 30), m.date,
               sc_simd_active()->name);
        printf("Data: %zu centres, noise norm %.2f..%.2f around them, %.0f%% "
               "near-duplicates; query noise %.2f..%.2f around a base "
               "vector\n\n",
               g_centres, g_noise_min, g_noise_min + g_noise_span,
               100.0 * DUP_SHARE, g_qnoise_min, g_qnoise_min + g_qnoise_span);
        printf("Single: one query a call; batch: %u queries a call "
               "(sc_index_search_batch), batch vs_flat over flat's batch "
               "q/s, batch=single the share of queries answered alike\n\n",
               o->batch);
        printf("| N | d | backend | nlist | nprobe | recall@1 | queries/s | "
               "vs_flat | batch q/s | batch vs_flat | batch=single | "
               "build s |\n");
        printf("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
               "\n");
    }
    int failed = 0;
    for (unsigned di = 0; di < o->nd; di++) {
        for (unsigned ni = 0; ni < o->nn; ni++) {
            size_t n = o->ns[ni];
            unsigned d = o->ds[di];
            size_t nq = o->quick ? 300 : 1000;
            float *data = malloc(n * d * sizeof(float));
            unsigned bsz = o->batch;
            float *qs = malloc((nq + bsz) * d * sizeof(float));
            uint64_t *bids = malloc(nq * sizeof(uint64_t));
            float *bsims = malloc(nq * sizeof(float));
            sc_hit *bhits = malloc(bsz * sizeof(sc_hit));
            unsigned *bnh = malloc(bsz * sizeof(unsigned));
            uint64_t *ref = malloc(nq * sizeof(uint64_t));
            double *refs = malloc(nq * sizeof(double));
            uint64_t *ids = malloc(nq * sizeof(uint64_t));
            float *sims = malloc(nq * sizeof(float));
            uint32_t *label = malloc(n * sizeof(uint32_t));
            size_t *base = malloc(nq * sizeof(size_t));
            if (!data || !qs || !ref || !refs || !ids || !sims || !label ||
                !base || !bids || !bsims || !bhits || !bnh ||
                gen_data(d, n, data, label) != 0) {
                fprintf(stderr, "bench_index: no memory for N=%zu d=%u\n", n,
                        d);
                failed = 1;
                goto next;
            }
            gen_queries(data, n, d, nq, bsz, qs, base);
            if (exact_top1(data, n, d, qs, nq, ref, refs) != 0) {
                failed = 1;
                goto next;
            }
            /* How hard the data is: queries whose exact top-1 is not the
             * vector they were made from, and not even of its centre. */
            size_t not_base = 0, other_centre = 0;
            for (size_t q = 0; q < nq; q++) {
                not_base += ref[q] != base[q];
                other_centre += label[ref[q]] != label[base[q]];
            }
            {
                fprintf(stderr,
                        "bench_index: N=%zu d=%u: exact top-1 is not the "
                        "query's base vector for %.1f%% of %zu queries, of "
                        "another centre for %.1f%%\n",
                        n, d, 100.0 * (double)not_base / (double)nq, nq,
                        100.0 * (double)other_centre / (double)nq);
            }
            double bs, agree, err, flat_qps;
            sc_index *ix = ivf_build("flat", o, data, n, d, &bs);
            if (ix == NULL) {
                failed = 1;
                goto next;
            }
            size_t fq =
                o->flat_queries && o->flat_queries < nq ? o->flat_queries : nq;
            flat_qps = ivf_time(o, ix, qs, fq, d, ids, sims);
            double flat_bqps =
                ivf_time_batch(o, ix, qs, fq, d, bsz, bhits, bnh, bids, bsims);
            sc_index_close(ix);
            score(data, d, qs, fq, ref, refs, ids, sims, &agree, &err);
            ivf_row fr = {"flat",
                          n,
                          d,
                          0,
                          0,
                          agree,
                          flat_qps,
                          1.0,
                          bs,
                          bsz,
                          flat_bqps,
                          1.0,
                          same_share(ids, sims, bids, bsims, fq)};
            ivf_print(o, &fr);
            static const char *const kinds[] = {"ivf-flat", "ivf-sq8"};
            int kmask = o->ivf_kinds ? o->ivf_kinds : 3;
            for (int k = 0; k < 2; k++) {
                if (!(kmask & (1 << k))) {
                    continue;
                }
                ix = ivf_build(kinds[k], o, data, n, d, &bs);
                if (ix == NULL) {
                    failed = 1;
                    continue;
                }
                unsigned nlist = o->nlist;
                if (nlist == 0) {
                    nlist = (unsigned)floor(sqrt((double)n) + 0.5);
                }
                for (unsigned pi = 0; pi < nnp; pi++) {
                    if (nps[pi] > nlist) {
                        continue;
                    }
                    sc_index_set_nprobe(ix, nps[pi]);
                    double qps = ivf_time(o, ix, qs, nq, d, ids, sims);
                    score(data, d, qs, nq, ref, refs, ids, sims, &agree, &err);
                    double bq = ivf_time_batch(o, ix, qs, nq, d, bsz, bhits,
                                               bnh, bids, bsims);
                    ivf_row r = {"",
                                 n,
                                 d,
                                 nlist,
                                 nps[pi],
                                 agree,
                                 qps,
                                 qps / flat_qps,
                                 bs,
                                 bsz,
                                 bq,
                                 bq / flat_bqps,
                                 same_share(ids, sims, bids, bsims, nq)};
                    snprintf(r.backend, sizeof(r.backend), "%s", kinds[k]);
                    ivf_print(o, &r);
                }
                sc_index_close(ix);
            }
        next:
            free(data);
            free(qs);
            free(ref);
            free(refs);
            free(ids);
            free(sims);
            free(label);
            free(base);
            free(bids);
            free(bsims);
            free(bhits);
            free(bnh);
        }
    }
    return failed;
}
#else
static int ivf_main(const opts *o)
{
    (void)o;
    fprintf(stderr, "bench_index: --backend ivf needs a build with FAISS\n");
    return 2;
}
#endif

int main(int argc, char **argv)
{
    /* Before anything can start a thread pool: one thread everywhere. */
    setenv("OMP_NUM_THREADS", "1", 1);
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    openblas_set_num_threads(1);
#if HAVE_FAISS
    omp_set_num_threads(1);
#endif
    opts o;
    if (parse_args(argc, argv, &o) != 0) {
        return 2;
    }
    if (o.child_tier >= 0) {
        return child_main(&o);
    }
    if (o.ivf) {
        return ivf_main(&o);
    }

    sc_bench_machine m;
    sc_bench_machine_read(&m);
    plan plans[SC_TIER_COUNT];
    unsigned np = make_plans(&o, plans);
    if (np == 0) {
        fprintf(stderr, "bench_index: no tier to run\n");
        return 2;
    }
    int passes = o.quick ? 3 : 5;
    size_t bw_bytes;
    const char *bw_kernel;
    double bw = probe_bandwidth(m.l3_bytes, passes, &bw_bytes, &bw_kernel);
    if (!isfinite(bw)) {
        fprintf(stderr, "bench_index: no memory for the bandwidth buffer\n");
        return 1;
    }
    print_header(&o, &m, plans, np, bw, bw_bytes, bw_kernel, passes);

    rows r = {0};
    int failed = 0;
    for (unsigned i = 0; i < np; i++) {
        if (run_child(&o, plans[i].tier, plans[i].ns, plans[i].nn,
                      plans[i].faiss, &r) != 0) {
            failed = 1;
        }
    }
    qsort(r.a, r.n, sizeof(row), cmp_row);
    if (o.json) {
        for (size_t i = 0; i < r.n; i++) {
            print_json_row(&r, &r.a[i], bw);
        }
    } else {
        print_table(&r, bw);
    }
    print_targets(&r, &o, bw);
    free(r.a);
    return failed;
}
