/* avx2.c - AVX2 + FMA + F16C kernels. Target pragmas (and CMake's per-file
 * flags) keep these instructions out of the rest of the binary, which stays
 * baseline x86-64; dispatch.c calls in here only when the CPU has all three
 * and the OS saves YMM state. */
#include <immintrin.h>
#include <string.h>

#include "index/simd/simd.h"

/* The file compiles with or without -mavx2 -mfma -mf16c: GCC takes a target
 * pragma, clang an attribute applied to every function defined below. */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))),         \
                             apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

/* Lane mask with the first r (0..8) lanes set, for masked loads of tails:
 * nothing past a row's d-th element is ever read. */
static __m256i tail_mask(size_t r)
{
    static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                  0,  0,  0,  0,  0,  0,  0,  0};
    return _mm256_loadu_si256((const __m256i *)(m + 8 - r));
}

static float hsum(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v);
    __m128 hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

static int32_t hsum_i32(__m256i v)
{
    __m128i x = _mm_add_epi32(_mm256_castsi256_si128(v),
                              _mm256_extracti128_si256(v, 1));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0x4e));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0xb1));
    return _mm_cvtsi128_si32(x);
}

static float dot_f32(const float *a, const float *b, size_t d)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        s0 =
            _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8),
                             _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16),
                             _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24),
                             _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= d; i += 8) {
        s0 =
            _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    }
    if (i < d) {
        __m256i m = tail_mask(d - i);
        s1 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m),
                             _mm256_maskload_ps(b + i, m), s1);
    }
    return hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

static __m256 load_h8(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* The r < 8 halves of a row's tail at p widened, the rest of the lanes 0.
 * AVX2 has no masked 16-bit load: when the 8 halves lie within the rows
 * (before end, the last row's last half + 1) they are read whole and the
 * lanes past r cleared (whatever they held, NaN included); else copied. */
static __m256 tail_h8(const uint16_t *p, size_t r, const uint16_t *end,
                      __m256i tm)
{
    if (p + 8 <= end) {
        return _mm256_and_ps(load_h8(p), _mm256_castsi256_ps(tm));
    }
    uint16_t t[8] = {0};
    memcpy(t, p, r * sizeof(*t));
    return load_h8(t);
}

/* The f32 and f16 scans below are one loop; they differ only in how 8
 * elements of a row are loaded and widened to f32. esize (4 for f32, 2 for
 * f16) is a constant at every call, so the choice folds away. */
static inline __m256 load_row(const void *x, size_t i, size_t esize)
{
    return esize == 4 ? _mm256_loadu_ps((const float *)x + i)
                      : load_h8((const uint16_t *)x + i);
}

/* The d - body < 8 elements of a row's tail, the other lanes 0. end bounds
 * the f16 rows (tail_h8); f32 tails are masked loads and ignore it. */
static inline __m256 tail_row(const void *x, size_t body, size_t d,
                              const void *end, __m256i tm, size_t esize)
{
    return esize == 4 ? _mm256_maskload_ps((const float *)x + body, tm)
                      : tail_h8((const uint16_t *)x + body, d - body, end, tm);
}

/* One row summed exactly as a lane of the four-row pass below sums it, so
 * that a row's score does not depend on where it sits in the scan. */
static inline __attribute__((always_inline)) float
row_dot(const float *q, const void *x, size_t esize, size_t body, size_t d,
        const void *end, __m256i tm)
{
    __m256 a = _mm256_setzero_ps();
    for (size_t i = 0; i < body; i += 8) {
        a = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load_row(x, i, esize), a);
    }
    if (body < d) {
        a = _mm256_fmadd_ps(_mm256_maskload_ps(q + body, tm),
                            tail_row(x, body, d, end, tm, esize), a);
    }
    return hsum(a);
}

/* Four rows per pass share each load of q and keep four independent FMA
 * chains in flight; the d % 8 tail of all four rows is one masked step.
 * Rows are esize bytes an element, stride elements apart. A row's score is
 * what the batch path (f16 rows widened to f32, then dot_f32_tile) gives,
 * bit for bit. */
static inline __attribute__((always_inline)) void
dot_rows(const float *q, const void *base, size_t esize, size_t stride,
         size_t n, size_t d, float *out)
{
    const size_t body = d & ~(size_t)7;
    const __m256i tm = tail_mask(d - body);
    const size_t rb = stride * esize; /* bytes from one row to the next */
    const char *end =
        n > 0 ? (const char *)base + (n - 1) * rb + d * esize : base;
    size_t r = 0;
    for (; r + 4 <= n; r += 4) {
        const char *x0 = (const char *)base + r * rb;
        const char *x1 = x0 + rb;
        const char *x2 = x1 + rb;
        const char *x3 = x2 + rb;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (size_t i = 0; i < body; i += 8) {
            __m256 qv = _mm256_loadu_ps(q + i);
            a0 = _mm256_fmadd_ps(qv, load_row(x0, i, esize), a0);
            a1 = _mm256_fmadd_ps(qv, load_row(x1, i, esize), a1);
            a2 = _mm256_fmadd_ps(qv, load_row(x2, i, esize), a2);
            a3 = _mm256_fmadd_ps(qv, load_row(x3, i, esize), a3);
        }
        if (body < d) {
            __m256 qv = _mm256_maskload_ps(q + body, tm);
            a0 = _mm256_fmadd_ps(qv, tail_row(x0, body, d, end, tm, esize), a0);
            a1 = _mm256_fmadd_ps(qv, tail_row(x1, body, d, end, tm, esize), a1);
            a2 = _mm256_fmadd_ps(qv, tail_row(x2, body, d, end, tm, esize), a2);
            a3 = _mm256_fmadd_ps(qv, tail_row(x3, body, d, end, tm, esize), a3);
        }
        out[r] = hsum(a0);
        out[r + 1] = hsum(a1);
        out[r + 2] = hsum(a2);
        out[r + 3] = hsum(a3);
    }
    for (; r < n; r++) {
        out[r] =
            row_dot(q, (const char *)base + r * rb, esize, body, d, end, tm);
    }
}

static void dot_f32_rows(const float *q, const float *base, size_t stride,
                         size_t n, size_t d, float *out)
{
    dot_rows(q, base, sizeof(*base), stride, n, d, out);
}

static void dot_f16_rows(const float *q, const uint16_t *base, size_t stride,
                         size_t n, size_t d, float *out)
{
    dot_rows(q, base, sizeof(*base), stride, n, d, out);
}

/* 2 queries x 4 rows per pass: 8 accumulators plus 6 loads fit in the 16
 * ymm registers, and each load feeds several FMAs. */
static void dot_f32_tile(const float *qs, size_t qstride, size_t nq,
                         const float *base, size_t stride, size_t n, size_t d,
                         float *out, size_t ldo)
{
    size_t i = 0;
    for (; i + 2 <= nq; i += 2) {
        const float *q0 = qs + i * qstride;
        const float *q1 = q0 + qstride;
        size_t j = 0;
        for (; j + 4 <= n; j += 4) {
            const float *r0 = base + j * stride;
            const float *r1 = r0 + stride;
            const float *r2 = r1 + stride;
            const float *r3 = r2 + stride;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
            __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
            __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
            __m256 b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
            for (size_t t = 0; t < d; t += 8) {
                __m256 x0 = _mm256_loadu_ps(q0 + t);
                __m256 x1 = _mm256_loadu_ps(q1 + t);
                __m256 y = _mm256_loadu_ps(r0 + t);
                a0 = _mm256_fmadd_ps(x0, y, a0);
                b0 = _mm256_fmadd_ps(x1, y, b0);
                y = _mm256_loadu_ps(r1 + t);
                a1 = _mm256_fmadd_ps(x0, y, a1);
                b1 = _mm256_fmadd_ps(x1, y, b1);
                y = _mm256_loadu_ps(r2 + t);
                a2 = _mm256_fmadd_ps(x0, y, a2);
                b2 = _mm256_fmadd_ps(x1, y, b2);
                y = _mm256_loadu_ps(r3 + t);
                a3 = _mm256_fmadd_ps(x0, y, a3);
                b3 = _mm256_fmadd_ps(x1, y, b3);
            }
            float *o0 = out + i * ldo + j;
            float *o1 = o0 + ldo;
            o0[0] = hsum(a0);
            o0[1] = hsum(a1);
            o0[2] = hsum(a2);
            o0[3] = hsum(a3);
            o1[0] = hsum(b0);
            o1[1] = hsum(b1);
            o1[2] = hsum(b2);
            o1[3] = hsum(b3);
        }
        /* The rows left over summed as the single-query scan sums them
         * (dot_f32 adds in another order): a batch's scores are the
         * single search's, bit for bit. */
        const size_t body = d & ~(size_t)7;
        const __m256i tm = tail_mask(d - body);
        for (; j < n; j++) {
            const float *x = base + j * stride;
            out[i * ldo + j] = row_dot(q0, x, sizeof(*x), body, d, NULL, tm);
            out[(i + 1) * ldo + j] =
                row_dot(q1, x, sizeof(*x), body, d, NULL, tm);
        }
    }
    for (; i < nq; i++) {
        dot_f32_rows(qs + i * qstride, base, stride, n, d, out + i * ldo);
    }
}

/* int8: widen to int16 and multiply-add pairs into int32 (vpmaddwd). This
 * is exact; vpmaddubsw would saturate at 127 * 255 * 2. */
static void dot_i8_rows(const int8_t *q, const int8_t *base, size_t stride,
                        size_t n, size_t d, int32_t *out)
{
    for (size_t r = 0; r < n; r++) {
        const int8_t *row = base + r * stride;
        __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
        size_t i = 0;
        for (; i + 32 <= d; i += 32) {
            __m256i qa =
                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + i)));
            __m256i ra = _mm256_cvtepi8_epi16(
                _mm_loadu_si128((const __m128i *)(row + i)));
            __m256i qb = _mm256_cvtepi8_epi16(
                _mm_loadu_si128((const __m128i *)(q + i + 16)));
            __m256i rb = _mm256_cvtepi8_epi16(
                _mm_loadu_si128((const __m128i *)(row + i + 16)));
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(qa, ra));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(qb, rb));
        }
        for (; i + 16 <= d; i += 16) {
            __m256i qa =
                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + i)));
            __m256i ra = _mm256_cvtepi8_epi16(
                _mm_loadu_si128((const __m128i *)(row + i)));
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(qa, ra));
        }
        int32_t s = hsum_i32(_mm256_add_epi32(s0, s1));
        for (; i < d; i++) {
            s += (int32_t)q[i] * (int32_t)row[i];
        }
        out[r] = s;
    }
}

static void f32_to_f16(const float *src, uint16_t *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i),
                                    _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(dst + i), h);
    }
    for (; i < n; i++) {
        dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
    }
}

static void f16_to_f32(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(dst + i, load_h8(src + i));
    }
    for (; i < n; i++) {
        dst[i] = _cvtsh_ss(src[i]);
    }
}

static float sum_f32(const float *p, size_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(p + i));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(p + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_loadu_ps(p + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_loadu_ps(p + i + 24));
    }
    float s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) {
        s += p[i];
    }
    return s;
}

static const sc_simd_kernels avx2_kernels = {
    .name = "avx2",
    .tier = SC_TIER_AVX2,
    .dot_f32 = dot_f32,
    .dot_f32_rows = dot_f32_rows,
    .dot_f32_tile = dot_f32_tile,
    .dot_f16_rows = dot_f16_rows,
    .dot_i8_rows = dot_i8_rows,
    .f32_to_f16 = f32_to_f16,
    .f16_to_f32 = f16_to_f32,
    .sum_f32 = sum_f32,
};

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

const sc_simd_kernels *sc_simd_avx2_kernels(void)
{
    return &avx2_kernels;
}
