/* test_simd.c - every SIMD tier the CPU has against the scalar reference:
 * awkward lengths (1, odd, not a multiple of 8 or 16, up to 4096), padded
 * rows whose padding holds NaN (a kernel that reads past d fails), unaligned
 * pointers, duplicates, extreme int8 values, every f16 bit pattern, and the
 * batch tile kernel. A tier the CPU lacks is reported as skipped. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "index/simd/simd.h"
#include "test_util.h"

static const size_t dims[] = {1,  2,  3,  7,   8,   9,   15,   16,   17,  31,
                              33, 63, 64, 65, 383, 384, 1536, 4095, 4096};
static const size_t rows[] = {0, 1, 2, 3, 4, 5, 17};

/* Relative tolerance for float sums taken in another order. */
static int close_enough(float got, float want, double scale)
{
    return fabs((double)got - (double)want) <= 1e-5 * scale + 1e-6;
}

static void test_f32(const sc_simd_kernels *ref, const sc_simd_kernels *k,
                     uint64_t *seed)
{
    int bad = 0;
    for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
        size_t d = dims[di];
        size_t stride = d + 5;
        for (size_t ri = 0; ri < sizeof(rows) / sizeof(rows[0]); ri++) {
            size_t n = rows[ri];
            /* +1 float: the rows start one float in, so nothing is aligned */
            float *buf = malloc((n * stride + 1) * sizeof(float) + 64);
            float *q = malloc((d + 1) * sizeof(float));
            float *base = buf + 1;
            for (size_t i = 0; i < n * stride; i++) {
                base[i] = (i % stride) < d ? test_randf(seed) : NAN;
            }
            for (size_t i = 0; i < d; i++) {
                q[i] = test_randf(seed);
            }
            float want[17], got[17];
            double scale = 0;
            for (size_t i = 0; i < d; i++) {
                scale += fabs(q[i]);
            }
            ref->dot_f32_rows(q, base, stride, n, d, want);
            k->dot_f32_rows(q, base, stride, n, d, got);
            for (size_t r = 0; r < n; r++) {
                bad += !close_enough(got[r], want[r], scale);
            }
            if (n > 0) {
                bad += !close_enough(k->dot_f32(q, base, d), want[0], scale);
            }
            free(buf);
            free(q);
        }
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_f16(const sc_simd_kernels *ref, const sc_simd_kernels *k,
                     uint64_t *seed)
{
    int bad = 0;
    for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
        size_t d = dims[di];
        size_t stride = d + 3;
        for (size_t ri = 0; ri < sizeof(rows) / sizeof(rows[0]); ri++) {
            size_t n = rows[ri];
            uint16_t *buf = malloc((n * stride + 1) * sizeof(uint16_t) + 64);
            uint16_t *base = buf + 1;
            float *q = malloc(d * sizeof(float));
            float tmp;
            for (size_t i = 0; i < n * stride; i++) {
                tmp = test_randf(seed);
                ref->f32_to_f16(&tmp, &base[i], 1);
                if (i % stride >= d) {
                    base[i] = 0x7e00; /* NaN in the padding */
                }
            }
            double scale = 0;
            for (size_t i = 0; i < d; i++) {
                q[i] = test_randf(seed);
                scale += fabs(q[i]);
            }
            float want[17], got[17];
            ref->dot_f16_rows(q, base, stride, n, d, want);
            k->dot_f16_rows(q, base, stride, n, d, got);
            for (size_t r = 0; r < n; r++) {
                bad += !close_enough(got[r], want[r], scale);
            }
            free(buf);
            free(q);
        }
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_i8(const sc_simd_kernels *ref, const sc_simd_kernels *k,
                    uint64_t *seed)
{
    int bad = 0;
    for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
        size_t d = dims[di];
        size_t stride = d + 7;
        for (size_t ri = 0; ri < sizeof(rows) / sizeof(rows[0]); ri++) {
            size_t n = rows[ri];
            for (int extreme = 0; extreme < 3; extreme++) {
                int8_t *buf = malloc(n * stride + 1 + 64);
                int8_t *base = buf + 1;
                int8_t *q = malloc(d + 1);
                for (size_t i = 0; i < n * stride; i++) {
                    int v = (int)(test_rand(seed) % 255) - 127;
                    if (extreme == 1) {
                        v = 127;
                    } else if (extreme == 2) {
                        v = (i & 1) ? -127 : 127;
                    }
                    /* Padding holds 127: read past d and the sum is off. */
                    base[i] = (int8_t)((i % stride) < d ? v : 127);
                }
                for (size_t i = 0; i < d; i++) {
                    q[i] = extreme ? (int8_t)-127
                                   : (int8_t)((int)(test_rand(seed) % 255) - 127);
                }
                int32_t want[17], got[17];
                ref->dot_i8_rows(q, base, stride, n, d, want);
                k->dot_i8_rows(q, base, stride, n, d, got);
                for (size_t r = 0; r < n; r++) {
                    bad += got[r] != want[r];
                }
                free(buf);
                free(q);
            }
        }
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_tile(const sc_simd_kernels *ref, const sc_simd_kernels *k,
                      uint64_t *seed)
{
    int bad = 0;
    const size_t ds[] = {16, 32, 48, 384};
    const size_t nqs[] = {1, 2, 3, 4, 5, 9};
    const size_t ns[] = {1, 3, 4, 7, 33};
    for (size_t a = 0; a < 4; a++) {
        for (size_t b = 0; b < 6; b++) {
            for (size_t c = 0; c < 5; c++) {
                size_t d = ds[a], nq = nqs[b], n = ns[c];
                size_t stride = d + 16, ldo = n + 3;
                float *qs = malloc(nq * stride * sizeof(float));
                float *base = malloc(n * stride * sizeof(float));
                float *want = malloc(nq * ldo * sizeof(float));
                float *got = malloc(nq * ldo * sizeof(float));
                for (size_t i = 0; i < nq * stride; i++) {
                    qs[i] = test_randf(seed);
                }
                for (size_t i = 0; i < n * stride; i++) {
                    base[i] = test_randf(seed);
                }
                ref->dot_f32_tile(qs, stride, nq, base, stride, n, d, want, ldo);
                k->dot_f32_tile(qs, stride, nq, base, stride, n, d, got, ldo);
                for (size_t i = 0; i < nq; i++) {
                    for (size_t j = 0; j < n; j++) {
                        bad += !close_enough(got[i * ldo + j], want[i * ldo + j],
                                             (double)d);
                    }
                }
                free(qs);
                free(base);
                free(want);
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

/* Every f16 bit pattern converts as the reference does, and f32 -> f16
 * rounds the same way on special and random values. */
static void test_f16_conv(const sc_simd_kernels *ref, const sc_simd_kernels *k,
                          uint64_t *seed)
{
    static uint16_t h[65536];
    static float want[65536], got[65536];
    for (uint32_t i = 0; i < 65536; i++) {
        h[i] = (uint16_t)i;
    }
    ref->f16_to_f32(h, want, 65536);
    k->f16_to_f32(h, got, 65536);
    int bad = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        bad += !same_float(got[i], want[i]);
    }
    CHECK_EQ_INT(bad, 0);

    float f[1000];
    const float special[] = {0.0f,     -0.0f,    1.0f,      -1.0f,
                             65504.0f, 65520.0f, 1e-8f,     5.96e-8f,
                             2.98e-8f, 6.1e-5f,  INFINITY,  -INFINITY,
                             NAN,      1e10f,    -1e-10f,   0.33333f};
    size_t ns = sizeof(special) / sizeof(special[0]);
    memcpy(f, special, sizeof(special));
    for (size_t i = ns; i < 1000; i++) {
        f[i] = test_randf(seed) * (float)(1 << (i % 20));
    }
    uint16_t hw[1000], hg[1000];
    ref->f32_to_f16(f, hw, 1000);
    k->f32_to_f16(f, hg, 1000);
    bad = 0;
    for (size_t i = 0; i < 1000; i++) {
        int nan_both = (hw[i] & 0x7c00) == 0x7c00 && (hw[i] & 0x3ff) &&
                       (hg[i] & 0x7c00) == 0x7c00 && (hg[i] & 0x3ff);
        bad += hw[i] != hg[i] && !nan_both;
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_sum(const sc_simd_kernels *ref, const sc_simd_kernels *k)
{
    float v[1001];
    for (int i = 0; i < 1001; i++) {
        v[i] = (float)(i % 7) * 0.5f;
    }
    CHECK(close_enough(k->sum_f32(v, 1001), ref->sum_f32(v, 1001), 3000.0));
}

int main(void)
{
    const sc_simd_kernels *ref = sc_simd_get(SC_TIER_SCALAR);
    CHECK(ref != NULL);
    CHECK(sc_simd_tier_parse("scalar") == SC_TIER_SCALAR);
    CHECK(sc_simd_tier_parse("avx2") == SC_TIER_AVX2);
    CHECK(sc_simd_tier_parse("avx512") == SC_TIER_AVX512);
    CHECK(sc_simd_tier_parse("avx1024") == -1);
    CHECK(sc_simd_tier_parse(NULL) == -1);
    CHECK(sc_simd_active() != NULL);
    CHECK(sc_simd_active()->tier <= sc_simd_best_supported());

    /* The scalar f16 conversion on known values. */
    uint16_t h;
    float one = 1.0f, back;
    ref->f32_to_f16(&one, &h, 1);
    CHECK_EQ_INT(h, 0x3c00);
    h = 0x0001; /* smallest subnormal */
    ref->f16_to_f32(&h, &back, 1);
    CHECK(back == 5.9604644775390625e-8f);

    for (int t = SC_TIER_SCALAR; t < SC_TIER_COUNT; t++) {
        const sc_simd_kernels *k = sc_simd_get((sc_simd_tier)t);
        if (k == NULL) {
            printf("%s: skipped (CPU lacks it)\n", sc_simd_tier_name(t));
            continue;
        }
        printf("%s: testing kernels %s\n", sc_simd_tier_name(t), k->name);
        uint64_t seed = 1000 + (uint64_t)t;
        test_f32(ref, k, &seed);
        test_f16(ref, k, &seed);
        test_i8(ref, k, &seed);
        test_tile(ref, k, &seed);
        test_f16_conv(ref, k, &seed);
        test_sum(ref, k);
        if (t == SC_TIER_AVX512 && k != sc_simd_avx512_kernels(0)) {
            /* This CPU has VNNI: test the plain AVX-512 table as well. */
            const sc_simd_kernels *plain = sc_simd_avx512_kernels(0);
            printf("avx512: testing kernels %s too\n", plain->name);
            test_i8(ref, plain, &seed);
            test_f32(ref, plain, &seed);
        }
    }
    return test_summary("test_simd");
}
