/* test_simd.c - every SIMD kernel table the CPU can run, against a double
 * precision reference and the scalar tier: awkward lengths, padded rows whose
 * padding holds NaN or 127 (a kernel that reads past d fails), unaligned
 * pointers, duplicate and constant rows, extreme int8 values, every f16 bit
 * pattern, f32 -> f16 rounding, and SEMCACHE_SIMD. Lacking tiers are skipped.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "index/simd/simd.h"
#include "test_util.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define MAXROWS  17

static const size_t dims[] = {1,  2,  3,  7,  8,   9,   15,   16,   17,  31,
                              33, 63, 64, 65, 383, 384, 1536, 4095, 4096};
static const size_t rows[] = {0, 1, 2, 3, 4, 5, 17};

static const uint16_t F16_NAN = 0x7e00;

/* A float dot product summed in any order, with or without FMA, is within a
 * few units of 2^-24 times sqrt(d) of sum |a_i b_i| in practice; the bound
 * below is loose enough for that and still far below one dropped term. */
static int close_enough(float got, double want, double abs_sum, size_t d)
{
    double tol = abs_sum * 1e-6 * (4.0 + sqrt((double)d)) + 1e-30;
    return fabs((double)got - want) <= tol;
}

static float *alloc_f32(size_t n)
{
    float *p = malloc((n + 1) * sizeof(float));
    if (p == NULL) {
        abort();
    }
    return p;
}

/* f32 rows and the single dot product: random data, rows one float past an
 * aligned address and the query too, NaN padding between d and stride. */
static void test_f32(const sc_simd_kernels *k, uint64_t *seed)
{
    int bad = 0;
    for (size_t di = 0; di < NELEM(dims); di++) {
        size_t d = dims[di];
        size_t stride = d + 5;
        for (size_t ri = 0; ri < NELEM(rows); ri++) {
            size_t n = rows[ri];
            float *buf = alloc_f32(n * stride + 1);
            float *qbuf = alloc_f32(d + 1);
            float *base = buf + 1, *q = qbuf + 1;
            for (size_t i = 0; i < n * stride; i++) {
                base[i] = (i % stride) < d ? test_randf(seed) : NAN;
            }
            for (size_t i = 0; i < d; i++) {
                q[i] = test_randf(seed);
            }
            float got[MAXROWS + 1];
            got[n] = 12345.0f; /* canary: nothing past out[n - 1] is written */
            k->dot_f32_rows(q, base, stride, n, d, got);
            for (size_t r = 0; r < n; r++) {
                double want = 0, abs_sum = 0;
                for (size_t i = 0; i < d; i++) {
                    double p = (double)q[i] * base[r * stride + i];
                    want += p;
                    abs_sum += fabs(p);
                }
                int ok = close_enough(got[r], want, abs_sum, d) &&
                         close_enough(k->dot_f32(q, base + r * stride, d), want,
                                      abs_sum, d);
                if (!ok && bad++ == 0) {
                    fprintf(stderr,
                            "  f32 d=%zu n=%zu row %zu: got %g want %g\n", d, n,
                            r, (double)got[r], want);
                }
            }
            bad += got[n] != 12345.0f;
            free(buf);
            free(qbuf);
        }
    }
    CHECK_EQ_INT(bad, 0);
}

/* f16 rows: the same shapes, NaN (0x7e00) in the padding. */
static void test_f16(const sc_simd_kernels *ref, const sc_simd_kernels *k,
                     uint64_t *seed)
{
    int bad = 0;
    for (size_t di = 0; di < NELEM(dims); di++) {
        size_t d = dims[di];
        size_t stride = d + 3;
        for (size_t ri = 0; ri < NELEM(rows); ri++) {
            size_t n = rows[ri];
            uint16_t *buf = malloc((n * stride + 1) * sizeof(uint16_t));
            float *qbuf = alloc_f32(d + 1);
            uint16_t *base = buf + 1;
            float *q = qbuf + 1;
            for (size_t i = 0; i < n * stride; i++) {
                float v = test_randf(seed);
                ref->f32_to_f16(&v, &base[i], 1);
                if (i % stride >= d) {
                    base[i] = F16_NAN;
                }
            }
            for (size_t i = 0; i < d; i++) {
                q[i] = test_randf(seed);
            }
            float got[MAXROWS + 1];
            got[n] = 12345.0f;
            k->dot_f16_rows(q, base, stride, n, d, got);
            for (size_t r = 0; r < n; r++) {
                double want = 0, abs_sum = 0;
                for (size_t i = 0; i < d; i++) {
                    float x;
                    ref->f16_to_f32(&base[r * stride + i], &x, 1);
                    want += (double)q[i] * x;
                    abs_sum += fabs((double)q[i] * x);
                }
                if (!close_enough(got[r], want, abs_sum, d) && bad++ == 0) {
                    fprintf(stderr,
                            "  f16 d=%zu n=%zu row %zu: got %g want %g\n", d, n,
                            r, (double)got[r], want);
                }
            }
            bad += got[n] != 12345.0f;
            free(buf);
            free(qbuf);
        }
    }
    CHECK_EQ_INT(bad, 0);
}

/* int8 rows: exact results. Mode 0 random, 1 all +127 against a query of
 * all -127, 2 alternating +-127; padding holds 127 throughout. */
static void test_i8(const sc_simd_kernels *k, uint64_t *seed)
{
    int bad = 0;
    for (size_t di = 0; di < NELEM(dims); di++) {
        size_t d = dims[di];
        size_t stride = d + 7;
        for (size_t ri = 0; ri < NELEM(rows); ri++) {
            size_t n = rows[ri];
            for (int mode = 0; mode < 3; mode++) {
                int8_t *buf = malloc(n * stride + 1);
                int8_t *qbuf = malloc(d + 1);
                int8_t *base = buf + 1, *q = qbuf + 1;
                for (size_t i = 0; i < n * stride; i++) {
                    int v = (int)(test_rand(seed) % 255) - 127;
                    if (mode == 1) {
                        v = 127;
                    } else if (mode == 2) {
                        v = (i & 1) ? -127 : 127;
                    }
                    base[i] = (int8_t)((i % stride) < d ? v : 127);
                }
                for (size_t i = 0; i < d; i++) {
                    q[i] = mode ? (int8_t)-127
                                : (int8_t)((int)(test_rand(seed) % 255) - 127);
                }
                int32_t got[MAXROWS + 1];
                got[n] = 12345;
                k->dot_i8_rows(q, base, stride, n, d, got);
                for (size_t r = 0; r < n; r++) {
                    int64_t want = 0;
                    for (size_t i = 0; i < d; i++) {
                        want += (int64_t)q[i] * base[r * stride + i];
                    }
                    if (got[r] != want && bad++ == 0) {
                        fprintf(stderr,
                                "  i8 d=%zu n=%zu mode %d row %zu: got %ld "
                                "want %ld\n",
                                d, n, mode, r, (long)got[r], (long)want);
                    }
                }
                bad += got[n] != 12345;
                free(buf);
                free(qbuf);
            }
        }
    }
    CHECK_EQ_INT(bad, 0);

    /* +-127 everywhere at d = 4096: the largest sums the quantiser allows,
     * checked against the closed form. */
    size_t d = 4096;
    int8_t *q = malloc(d), *x = malloc(3 * d);
    for (size_t i = 0; i < d; i++) {
        q[i] = 127;
        x[i] = 127;
        x[d + i] = -127;
        x[2 * d + i] = (int8_t)((i & 1) ? -127 : 127);
    }
    int32_t out[3];
    k->dot_i8_rows(q, x, d, 3, d, out);
    CHECK_EQ_INT(out[0], 4096 * 127 * 127);
    CHECK_EQ_INT(out[1], -4096 * 127 * 127);
    CHECK_EQ_INT(out[2], 0);
    for (size_t i = 0; i < d; i++) {
        q[i] = -127;
    }
    k->dot_i8_rows(q, x, d, 3, d, out);
    CHECK_EQ_INT(out[0], -4096 * 127 * 127);
    CHECK_EQ_INT(out[1], 4096 * 127 * 127);
    free(q);
    free(x);
}

/* Duplicate rows give bit-identical results wherever they sit (in a group
 * of four or among the last rows), so equal vectors always rank as ties;
 * constant vectors give the closed form (small integers: exact). */
static void test_dup_const(const sc_simd_kernels *k, uint64_t *seed)
{
    const size_t ds[] = {3, 17, 384, 1001};
    for (size_t di = 0; di < NELEM(ds); di++) {
        size_t d = ds[di], n = 9, stride = d + 1;
        float *q = alloc_f32(d), *x = alloc_f32(n * stride);
        for (size_t i = 0; i < d; i++) {
            q[i] = test_randf(seed);
        }
        for (size_t r = 0; r < n; r++) {
            memcpy(x + r * stride, q, d * sizeof(float));
            x[r * stride + d] = NAN;
        }
        float out[9];
        k->dot_f32_rows(q, x, stride, n, d, out);
        int same = 1;
        for (size_t r = 1; r < n; r++) {
            same &= memcmp(&out[r], &out[0], sizeof(float)) == 0;
        }
        CHECK(same);
        CHECK(out[0] > 0.0f);

        uint16_t *hd = malloc(n * stride * sizeof(uint16_t));
        k->f32_to_f16(q, hd, d);
        for (size_t r = 0; r < n; r++) {
            memcpy(hd + r * stride, hd, d * sizeof(uint16_t));
            hd[r * stride + d] = F16_NAN;
        }
        k->dot_f16_rows(q, hd, stride, n, d, out);
        same = 1;
        for (size_t r = 1; r < n; r++) {
            same &= memcmp(&out[r], &out[0], sizeof(float)) == 0;
        }
        CHECK(same);
        free(hd);

        for (size_t i = 0; i < d; i++) {
            q[i] = 2.0f;
        }
        for (size_t i = 0; i < n * stride; i++) {
            x[i] = (i % stride) < d ? 3.0f : NAN;
        }
        k->dot_f32_rows(q, x, stride, n, d, out);
        int exact = 1;
        for (size_t r = 0; r < n; r++) {
            exact &= out[r] == 6.0f * (float)d;
        }
        CHECK(exact);

        uint16_t *h = malloc(n * stride * sizeof(uint16_t));
        for (size_t i = 0; i < n * stride; i++) {
            h[i] = (i % stride) < d ? 0x4200 /* 3.0 */ : F16_NAN;
        }
        k->dot_f16_rows(q, h, stride, n, d, out);
        exact = 1;
        for (size_t r = 0; r < n; r++) {
            exact &= out[r] == 6.0f * (float)d;
        }
        CHECK(exact);
        free(h);
        free(q);
        free(x);
    }
}

/* The batch tile kernel: d a multiple of 16, NaN past d in every row and
 * query (the contract says zeros, but a kernel must not read them at all). */
static void test_tile(const sc_simd_kernels *k, uint64_t *seed)
{
    int bad = 0;
    const size_t ds[] = {16, 32, 48, 384};
    const size_t nqs[] = {1, 2, 3, 4, 5, 9};
    const size_t ns[] = {1, 3, 4, 7, 33};
    for (size_t a = 0; a < NELEM(ds); a++) {
        for (size_t b = 0; b < NELEM(nqs); b++) {
            for (size_t c = 0; c < NELEM(ns); c++) {
                size_t d = ds[a], nq = nqs[b], n = ns[c];
                size_t stride = d + 16, ldo = n + 3;
                float *qs = alloc_f32(nq * stride);
                float *base = alloc_f32(n * stride);
                float *got = alloc_f32(nq * ldo);
                for (size_t i = 0; i < nq * stride; i++) {
                    qs[i] = (i % stride) < d ? test_randf(seed) : NAN;
                }
                for (size_t i = 0; i < n * stride; i++) {
                    base[i] = (i % stride) < d ? test_randf(seed) : NAN;
                }
                for (size_t i = 0; i < nq * ldo; i++) {
                    got[i] = 12345.0f;
                }
                k->dot_f32_tile(qs, stride, nq, base, stride, n, d, got, ldo);
                for (size_t i = 0; i < nq; i++) {
                    for (size_t j = 0; j < ldo; j++) {
                        if (j >= n) {
                            bad += got[i * ldo + j] != 12345.0f;
                            continue;
                        }
                        double want = 0, abs_sum = 0;
                        for (size_t t = 0; t < d; t++) {
                            double p = (double)qs[i * stride + t] *
                                       base[j * stride + t];
                            want += p;
                            abs_sum += fabs(p);
                        }
                        bad +=
                            !close_enough(got[i * ldo + j], want, abs_sum, d);
                    }
                }
                free(qs);
                free(base);
                free(got);
            }
        }
    }
    CHECK_EQ_INT(bad, 0);
}

static int same_float(float a, float b)
{
    if (isnan(a) || isnan(b)) {
        return isnan(a) && isnan(b);
    }
    return memcmp(&a, &b, sizeof(a)) == 0;
}

static int is_f16_nan(uint16_t h)
{
    return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* Conversions against the scalar reference: every f16 bit pattern; f32 ->
 * f16 on special values, on every f16 value's rounding midpoints and their
 * neighbours (the ties that round to even), and on a sweep of f32 bits. */
static void test_f16_conv(const sc_simd_kernels *ref, const sc_simd_kernels *k)
{
    static uint16_t h[65536];
    static float want[65536], got[65536];
    for (uint32_t i = 0; i < 65536; i++) {
        h[i] = (uint16_t)i;
    }
    ref->f16_to_f32(h, want, 65536);
    k->f16_to_f32(h + 1, got + 1, 65535); /* unaligned, odd count */
    k->f16_to_f32(h, got, 1);
    int bad = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        bad += !same_float(got[i], want[i]);
    }
    CHECK_EQ_INT(bad, 0);

    /* f32 -> f16 round trip of every non-NaN half. */
    static uint16_t back[65536];
    k->f32_to_f16(want, back, 65536);
    bad = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        bad += is_f16_nan(h[i]) ? !is_f16_nan(back[i]) : back[i] != h[i];
    }
    CHECK_EQ_INT(bad, 0);

    /* Midpoints between neighbouring finite halves (ties: round to even),
     * one f32 ulp either side of them, and the halves themselves. */
    enum { NSWEEP = 1 << 20 };
    size_t cap = 5 * 65536 + NSWEEP + 64;
    float *f = alloc_f32(cap);
    size_t m = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        if ((i & 0x7c00) == 0x7c00 || (i & 0x7fff) == 0x7bff) {
            continue;
        }
        float lo = want[i], hi = want[i + 1];
        float mid = (float)(((double)lo + (double)hi) / 2.0);
        f[m++] = lo;
        f[m++] = mid;
        f[m++] = nextafterf(mid, INFINITY);
        f[m++] = nextafterf(mid, -INFINITY);
    }
    /* A sweep of f32 bit patterns, every exponent and sign. */
    for (uint32_t i = 0; i < NSWEEP; i++) {
        f[m++] = bits_f32(i * 4099u + 17u);
    }
    const float special[] = {
        0.0f,       -0.0f,           1.0f,          -1.0f,    65504.0f,
        65519.99f,  65520.0f,        -65520.0f,     1e10f,    -1e-10f,
        INFINITY,   -INFINITY,       NAN,           -NAN,     0x1p-24f,
        0x1p-25f,   0x1.000002p-25f, 0x1.8p-25f,    0x1p-14f, 0x1.ff8p-15f,
        0x1.002p0f, 0x1.006p0f,      3.4028235e38f, 1.4e-45f};
    for (size_t i = 0; i < NELEM(special); i++) {
        f[m++] = special[i];
    }
    f[m++] = bits_f32(0x7f800001u); /* signalling NaN */
    f[m++] = bits_f32(0xffc00001u);
    uint16_t *hw = malloc(m * sizeof(uint16_t));
    uint16_t *hg = malloc((m + 1) * sizeof(uint16_t));
    ref->f32_to_f16(f, hw, m);
    k->f32_to_f16(f, hg + 1, m); /* unaligned destination */
    bad = 0;
    for (size_t i = 0; i < m; i++) {
        int ok =
            hw[i] == hg[i + 1] || (is_f16_nan(hw[i]) && is_f16_nan(hg[i + 1]));
        if (!ok && bad++ == 0) {
            fprintf(stderr, "  f32->f16 %a: got 0x%04x want 0x%04x\n",
                    (double)f[i], hg[i + 1], hw[i]);
        }
    }
    CHECK_EQ_INT(bad, 0);
    free(hw);
    free(hg);
    free(f);
}

/* The scalar reference on values whose halves are known by hand, so that
 * the reference itself is checked, not only the tiers against it. */
static void test_scalar_known(const sc_simd_kernels *ref)
{
    static const struct {
        float f;
        uint16_t h;
    } cases[] = {
        {1.0f, 0x3c00},         {-2.0f, 0xc000},
        {0.0f, 0x0000},         {-0.0f, 0x8000},
        {65504.0f, 0x7bff},     {65519.99f, 0x7bff},
        {65520.0f, 0x7c00},     {1e10f, 0x7c00},
        {-1e10f, 0xfc00},       {INFINITY, 0x7c00},
        {-INFINITY, 0xfc00},    {0x1p-24f, 0x0001},
        {0x1p-25f, 0x0000},     {0x1.000002p-25f, 0x0001},
        {0x1.8p-24f, 0x0002},   {0x1.4p-23f, 0x0002},
        {0x1p-14f, 0x0400},     {0x1.ff8p-15f, 0x03ff},
        {0x1.ffcp-15f, 0x0400}, {0x1.ff0p-15f, 0x03fe},
        {0x1.ff4p-15f, 0x03fe}, {0x1.002p0f, 0x3c00},
        {0x1.006p0f, 0x3c02},   {0x1.0021p0f, 0x3c01},
        {0.1f, 0x2e66},         {1e-8f, 0x0000},
        {-0x1p-26f, 0x8000},
    };
    for (size_t i = 0; i < NELEM(cases); i++) {
        uint16_t h;
        ref->f32_to_f16(&cases[i].f, &h, 1);
        if (h != cases[i].h) {
            fprintf(stderr, "  scalar f32->f16 %a: got 0x%04x want 0x%04x\n",
                    (double)cases[i].f, h, cases[i].h);
        }
        CHECK_EQ_INT(h, cases[i].h);
    }
    uint16_t h;
    float nan = NAN, back;
    ref->f32_to_f16(&nan, &h, 1);
    CHECK(is_f16_nan(h));
    h = 0x0001;
    ref->f16_to_f32(&h, &back, 1);
    CHECK(back == 0x1p-24f);
    h = 0x03ff;
    ref->f16_to_f32(&h, &back, 1);
    CHECK(back == 0x1.ff8p-15f);
    h = 0xfc00;
    ref->f16_to_f32(&h, &back, 1);
    CHECK(isinf(back) && back < 0);
    h = 0x7c01;
    ref->f16_to_f32(&h, &back, 1);
    CHECK(isnan(back));
}

static void test_sum(const sc_simd_kernels *k)
{
    static float v[4099];
    for (size_t i = 0; i < NELEM(v); i++) {
        v[i] = (float)(i % 7) * 0.5f;
    }
    const size_t ns[] = {0, 1, 7, 8, 15, 16, 17, 31, 63, 64, 65, 1000, 4098};
    int bad = 0;
    for (size_t i = 0; i < NELEM(ns); i++) {
        double want = 0;
        for (size_t j = 0; j < ns[i]; j++) {
            want += v[1 + j];
        }
        /* Halves of small integers: every partial sum is exact. */
        bad += k->sum_f32(v + 1, ns[i]) != (float)want;
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_parse(void)
{
    CHECK_EQ_INT(sc_simd_tier_parse("scalar"), SC_TIER_SCALAR);
    CHECK_EQ_INT(sc_simd_tier_parse("avx2"), SC_TIER_AVX2);
    CHECK_EQ_INT(sc_simd_tier_parse("avx512"), SC_TIER_AVX512);
    CHECK_EQ_INT(sc_simd_tier_parse("avx1024"), -1);
    CHECK_EQ_INT(sc_simd_tier_parse("avx"), -1);
    CHECK_EQ_INT(sc_simd_tier_parse("avx2 "), -1);
    CHECK_EQ_INT(sc_simd_tier_parse(""), -1);
    CHECK_EQ_INT(sc_simd_tier_parse(NULL), -1);
    for (int t = 0; t < SC_TIER_COUNT; t++) {
        CHECK_EQ_INT(sc_simd_tier_parse(sc_simd_tier_name((sc_simd_tier)t)), t);
    }
    CHECK(sc_simd_tier_name(SC_TIER_COUNT) == NULL);
    CHECK(sc_simd_get(SC_TIER_COUNT) == NULL);
    CHECK(sc_simd_get(SC_TIER_SCALAR) == sc_simd_scalar_kernels());
}

/* SEMCACHE_SIMD picks the tier once per process, so each value is tried in
 * a child that has not chosen yet. A tier above the CPU's, or an unknown
 * name, falls back to the best supported. */
static int active_tier_with(const char *env)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (env != NULL) {
            setenv("SEMCACHE_SIMD", env, 1);
        } else {
            unsetenv("SEMCACHE_SIMD");
        }
        /* The refusal warning is expected here; keep the test log clean. */
        if (freopen("/dev/null", "w", stderr) == NULL) {
            _exit(100);
        }
        const sc_simd_kernels *k = sc_simd_active();
        _exit(k != NULL && sc_simd_active() == k ? (int)k->tier : 101);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st)) {
        return -1;
    }
    return WEXITSTATUS(st);
}

static void test_env(void)
{
    int best = (int)sc_simd_best_supported();
    CHECK_EQ_INT(active_tier_with(NULL), best);
    CHECK_EQ_INT(active_tier_with(""), best);
    CHECK_EQ_INT(active_tier_with("bogus"), best);
    CHECK_EQ_INT(active_tier_with("scalar"), SC_TIER_SCALAR);
    for (int t = SC_TIER_AVX2; t < SC_TIER_COUNT; t++) {
        int want = t <= best ? t : best;
        CHECK_EQ_INT(active_tier_with(sc_simd_tier_name((sc_simd_tier)t)),
                     want);
    }
}

static void test_table(const sc_simd_kernels *ref, const sc_simd_kernels *k,
                       uint64_t seed)
{
    printf("  testing kernels %s\n", k->name);
    test_f32(k, &seed);
    test_f16(ref, k, &seed);
    test_i8(k, &seed);
    test_dup_const(k, &seed);
    test_tile(k, &seed);
    test_f16_conv(ref, k);
    test_sum(k);
}

int main(void)
{
    const sc_simd_kernels *ref = sc_simd_scalar_kernels();
    CHECK(ref != NULL && ref->tier == SC_TIER_SCALAR);
    test_parse();
    test_env();
    test_scalar_known(ref);

    sc_simd_tier best = sc_simd_best_supported();
    for (int t = SC_TIER_SCALAR; t < SC_TIER_COUNT; t++) {
        const char *name = sc_simd_tier_name((sc_simd_tier)t);
        const sc_simd_kernels *k = sc_simd_get((sc_simd_tier)t);
        if (k == NULL) {
            CHECK(t > (int)best);
            printf("%s: skipped (CPU lacks it)\n", name);
            continue;
        }
        printf("%s:\n", name);
        CHECK(k->tier == (sc_simd_tier)t);
        test_table(ref, k, 1000 + (uint64_t)t);
        if (t == SC_TIER_AVX512) {
            /* With VNNI the tier's table is "avx512-vnni"; the plain one
             * runs on this CPU too and is tested as well. */
            const sc_simd_kernels *plain = sc_simd_avx512_kernels(0);
            CHECK(strcmp(plain->name, "avx512") == 0);
            CHECK(strcmp(sc_simd_avx512_kernels(1)->name, "avx512-vnni") == 0);
            if (plain != k) {
                test_table(ref, plain, 2000);
            } else {
                printf("  avx512-vnni: skipped (CPU lacks it)\n");
            }
        }
    }
    return test_summary("test_simd");
}
