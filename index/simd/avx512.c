/* avx512.c - AVX-512 F/BW/VL kernels, with a VNNI (vpdpbusd) variant of the
 * int8 dot product. Target pragmas (and CMake's per-file flags) keep these
 * instructions out of the rest of the binary; dispatch.c calls in only after
 * CPUID and XGETBV agree. Tails use masked loads: nothing past d is read. */
#include "index/simd/simd.h"

#ifndef SC_NO_AVX512

#include <immintrin.h>

/* The file compiles with or without -mavx512*: GCC takes a target pragma,
 * clang an attribute applied to every function defined below. DQ is named
 * because CMake passes -mavx512dq (dispatch.c requires it). VNNI is not: it
 * is enabled on dot_i8_rows_vnni alone (VNNI_TARGET), which is reached only
 * through the "avx512-vnni" table, handed out when CPUID has it. */
#define AVX512_FEATURES "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"
#define VNNI_TARGET     __attribute__((target(AVX512_FEATURES ",avx512vnni")))
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target(AVX512_FEATURES))),         \
                             apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
/* GCC does not expand macros in this pragma: keep in step by hand. */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif

static __mmask16 mask16(size_t r)
{
    return (__mmask16)((1u << r) - 1u);
}

static __mmask64 mask64(size_t r)
{
    return r >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << r) - 1);
}

static float dot_f32(const float *a, const float *b, size_t d)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= d; i += 64) {
        s0 =
            _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16),
                             _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32),
                             _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48),
                             _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= d; i += 16) {
        s0 =
            _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    }
    if (i < d) {
        __mmask16 m = mask16(d - i);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i),
                             _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(
        _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static __m512 load_h16(const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

/* The f32 and f16 scans below are one loop; they differ only in how 16
 * elements of a row are loaded and widened to f32. esize (4 for f32, 2 for
 * f16) is a constant at every call, so the choice folds away. */
static inline __m512 load_row(const void *x, size_t i, size_t esize)
{
    return esize == 4 ? _mm512_loadu_ps((const float *)x + i)
                      : load_h16((const uint16_t *)x + i);
}

static inline __m512 maskz_load_row(__mmask16 m, const void *x, size_t i,
                                    size_t esize)
{
    return esize == 4 ? _mm512_maskz_loadu_ps(m, (const float *)x + i)
                      : _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(
                            m, (const uint16_t *)x + i));
}

/* One row summed exactly as a lane of the four-row pass below sums it, so
 * that a row's score does not depend on where it sits in the scan. */
static inline __attribute__((always_inline)) float
row_dot(const float *q, const void *x, size_t esize, size_t body, __mmask16 tm)
{
    __m512 a = _mm512_setzero_ps();
    for (size_t i = 0; i < body; i += 16) {
        a = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), load_row(x, i, esize), a);
    }
    if (tm != 0) {
        a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tm, q + body),
                            maskz_load_row(tm, x, body, esize), a);
    }
    return _mm512_reduce_add_ps(a);
}

/* Four rows per pass share each load of q and keep four independent FMA
 * chains and four load streams in flight; the d % 16 tail of all four rows
 * is one masked step. The prefetch runs two passes ahead, once per 64-byte
 * line, so that a scan from L3 or DRAM does not stall at the start of each
 * row. Rows are esize bytes an element, stride elements apart. */
static inline __attribute__((always_inline)) void
dot_rows(const float *q, const void *base, size_t esize, size_t stride,
         size_t n, size_t d, float *out)
{
    const size_t body = d & ~(size_t)15;
    const __mmask16 tm = mask16(d - body);
    const size_t rb = stride * esize; /* bytes from one row to the next */
    size_t r = 0;
    for (; r + 4 <= n; r += 4) {
        const char *x0 = (const char *)base + r * rb;
        const char *x1 = x0 + rb;
        const char *x2 = x1 + rb;
        const char *x3 = x2 + rb;
        const char *pf = x0 + 8 * rb;
        const int ahead = r + 12 <= n;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        for (size_t i = 0; i < body; i += 16) {
            __m512 qv = _mm512_loadu_ps(q + i);
            if (ahead && (i * esize) % 64 == 0) {
                _mm_prefetch(pf + i * esize, _MM_HINT_T0);
                _mm_prefetch(pf + rb + i * esize, _MM_HINT_T0);
                _mm_prefetch(pf + 2 * rb + i * esize, _MM_HINT_T0);
                _mm_prefetch(pf + 3 * rb + i * esize, _MM_HINT_T0);
            }
            a0 = _mm512_fmadd_ps(qv, load_row(x0, i, esize), a0);
            a1 = _mm512_fmadd_ps(qv, load_row(x1, i, esize), a1);
            a2 = _mm512_fmadd_ps(qv, load_row(x2, i, esize), a2);
            a3 = _mm512_fmadd_ps(qv, load_row(x3, i, esize), a3);
        }
        if (tm != 0) {
            __m512 qv = _mm512_maskz_loadu_ps(tm, q + body);
            a0 = _mm512_fmadd_ps(qv, maskz_load_row(tm, x0, body, esize), a0);
            a1 = _mm512_fmadd_ps(qv, maskz_load_row(tm, x1, body, esize), a1);
            a2 = _mm512_fmadd_ps(qv, maskz_load_row(tm, x2, body, esize), a2);
            a3 = _mm512_fmadd_ps(qv, maskz_load_row(tm, x3, body, esize), a3);
        }
        out[r] = _mm512_reduce_add_ps(a0);
        out[r + 1] = _mm512_reduce_add_ps(a1);
        out[r + 2] = _mm512_reduce_add_ps(a2);
        out[r + 3] = _mm512_reduce_add_ps(a3);
    }
    for (; r < n; r++) {
        out[r] = row_dot(q, (const char *)base + r * rb, esize, body, tm);
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

/* 4 queries x 4 rows per pass: 16 accumulators, and every load feeds four
 * FMAs, so the batch is bound by FMA throughput rather than by loads. */
static void dot_f32_tile(const float *qs, size_t qstride, size_t nq,
                         const float *base, size_t stride, size_t n, size_t d,
                         float *out, size_t ldo)
{
    size_t i = 0;
    for (; i + 4 <= nq; i += 4) {
        const float *q0 = qs + i * qstride;
        const float *q1 = q0 + qstride;
        const float *q2 = q1 + qstride;
        const float *q3 = q2 + qstride;
        size_t j = 0;
        for (; j + 4 <= n; j += 4) {
            const float *r0 = base + j * stride;
            const float *r1 = r0 + stride;
            const float *r2 = r1 + stride;
            const float *r3 = r2 + stride;
            __m512 c[16];
            for (int u = 0; u < 16; u++) {
                c[u] = _mm512_setzero_ps();
            }
            for (size_t t = 0; t < d; t += 16) {
                __m512 x0 = _mm512_loadu_ps(q0 + t);
                __m512 x1 = _mm512_loadu_ps(q1 + t);
                __m512 x2 = _mm512_loadu_ps(q2 + t);
                __m512 x3 = _mm512_loadu_ps(q3 + t);
                __m512 y = _mm512_loadu_ps(r0 + t);
                c[0] = _mm512_fmadd_ps(x0, y, c[0]);
                c[1] = _mm512_fmadd_ps(x1, y, c[1]);
                c[2] = _mm512_fmadd_ps(x2, y, c[2]);
                c[3] = _mm512_fmadd_ps(x3, y, c[3]);
                y = _mm512_loadu_ps(r1 + t);
                c[4] = _mm512_fmadd_ps(x0, y, c[4]);
                c[5] = _mm512_fmadd_ps(x1, y, c[5]);
                c[6] = _mm512_fmadd_ps(x2, y, c[6]);
                c[7] = _mm512_fmadd_ps(x3, y, c[7]);
                y = _mm512_loadu_ps(r2 + t);
                c[8] = _mm512_fmadd_ps(x0, y, c[8]);
                c[9] = _mm512_fmadd_ps(x1, y, c[9]);
                c[10] = _mm512_fmadd_ps(x2, y, c[10]);
                c[11] = _mm512_fmadd_ps(x3, y, c[11]);
                y = _mm512_loadu_ps(r3 + t);
                c[12] = _mm512_fmadd_ps(x0, y, c[12]);
                c[13] = _mm512_fmadd_ps(x1, y, c[13]);
                c[14] = _mm512_fmadd_ps(x2, y, c[14]);
                c[15] = _mm512_fmadd_ps(x3, y, c[15]);
            }
            for (int rr = 0; rr < 4; rr++) {
                for (int qq = 0; qq < 4; qq++) {
                    out[(i + qq) * ldo + j + rr] =
                        _mm512_reduce_add_ps(c[rr * 4 + qq]);
                }
            }
        }
        /* The rows left over summed as the single-query scan sums them
         * (dot_f32 adds in another order): a batch's scores are the
         * single search's, bit for bit. */
        const size_t body = d & ~(size_t)15;
        const __mmask16 tm = mask16(d - body);
        for (; j < n; j++) {
            for (size_t qq = 0; qq < 4; qq++) {
                out[(i + qq) * ldo + j] =
                    row_dot(qs + (i + qq) * qstride, base + j * stride,
                            sizeof(*base), body, tm);
            }
        }
    }
    for (; i < nq; i++) {
        dot_f32_rows(qs + i * qstride, base, stride, n, d, out + i * ldo);
    }
}

/* Bytes p[0..r) (r <= 32) widened to int16; the rest of the lanes are 0. */
static __m512i load_i8x32(const int8_t *p, __mmask32 m)
{
    return _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, p));
}

/* acc + vpmaddwd(a, b). The empty asm stops a compiler that was given VNNI
 * for the whole file (clang, with -mavx512vnni) from fusing the pair into
 * vpdpwssd, which would fault on AVX-512 CPUs without VNNI. It emits no
 * instruction. */
static __m512i madd_acc(__m512i acc, __m512i a, __m512i b)
{
    __m512i p = _mm512_madd_epi16(a, b);
    __asm__("" : "+v"(p));
    return _mm512_add_epi32(acc, p);
}

/* int8 without VNNI: widen to int16, vpmaddwd into int32. Exact: a pair of
 * products is at most 2 * 127 * 127, far from int32's range, and each lane
 * sums d / 32 pairs. Two rows per pass share the widened query. */
static void dot_i8_rows(const int8_t *q, const int8_t *base, size_t stride,
                        size_t n, size_t d, int32_t *out)
{
    const size_t body = d & ~(size_t)31;
    const size_t rest = d - body;
    const __mmask32 tm = rest ? (__mmask32)((1u << rest) - 1u) : 0;
    const __mmask32 all = ~(__mmask32)0;
    size_t r = 0;
    for (; r + 2 <= n; r += 2) {
        const int8_t *x0 = base + r * stride;
        const int8_t *x1 = x0 + stride;
        __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
        for (size_t i = 0; i < body; i += 32) {
            __m512i qv = load_i8x32(q + i, all);
            s0 = madd_acc(s0, qv, load_i8x32(x0 + i, all));
            s1 = madd_acc(s1, qv, load_i8x32(x1 + i, all));
        }
        if (tm != 0) {
            __m512i qv = load_i8x32(q + body, tm);
            s0 = madd_acc(s0, qv, load_i8x32(x0 + body, tm));
            s1 = madd_acc(s1, qv, load_i8x32(x1 + body, tm));
        }
        out[r] = _mm512_reduce_add_epi32(s0);
        out[r + 1] = _mm512_reduce_add_epi32(s1);
    }
    for (; r < n; r++) {
        const int8_t *x0 = base + r * stride;
        __m512i s0 = _mm512_setzero_si512();
        for (size_t i = 0; i < body; i += 32) {
            s0 = madd_acc(s0, load_i8x32(q + i, all), load_i8x32(x0 + i, all));
        }
        if (tm != 0) {
            s0 = madd_acc(s0, load_i8x32(q + body, tm),
                          load_i8x32(x0 + body, tm));
        }
        out[r] = _mm512_reduce_add_epi32(s0);
    }
}

/* int8 with VNNI: vpdpbusd multiplies unsigned by signed bytes. Each row
 * byte x is flipped to x + 128 with one XOR (it is then the unsigned
 * operand, the query the signed one), and 128 * sum(q), a constant of the
 * query, is taken back out: one vpdpbusd per 64 bytes. */
VNNI_TARGET static void dot_i8_rows_vnni(const int8_t *q, const int8_t *base,
                                         size_t stride, size_t n, size_t d,
                                         int32_t *out)
{
    int32_t qsum = 0;
    for (size_t i = 0; i < d; i++) {
        qsum += q[i];
    }
    const int32_t corr = 128 * qsum;
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    size_t r = 0;
    /* Four rows per pass: one row alone is a short dependency chain of
     * vpdpbusd, so independent rows keep the unit busy. */
    for (; r + 4 <= n; r += 4) {
        const int8_t *x0 = base + r * stride;
        __m512i p0 = _mm512_setzero_si512(), p1 = _mm512_setzero_si512();
        __m512i p2 = _mm512_setzero_si512(), p3 = _mm512_setzero_si512();
        size_t i = 0;
        for (; i + 64 <= d; i += 64) {
            __m512i qv = _mm512_loadu_si512(q + i);
            p0 = _mm512_dpbusd_epi32(
                p0, _mm512_xor_si512(_mm512_loadu_si512(x0 + i), flip), qv);
            p1 = _mm512_dpbusd_epi32(
                p1, _mm512_xor_si512(_mm512_loadu_si512(x0 + stride + i), flip),
                qv);
            p2 = _mm512_dpbusd_epi32(
                p2,
                _mm512_xor_si512(_mm512_loadu_si512(x0 + 2 * stride + i), flip),
                qv);
            p3 = _mm512_dpbusd_epi32(
                p3,
                _mm512_xor_si512(_mm512_loadu_si512(x0 + 3 * stride + i), flip),
                qv);
        }
        if (i < d) {
            /* Masked-off query bytes are 0, so the flipped padding adds 0. */
            __mmask64 m = mask64(d - i);
            __m512i qv = _mm512_maskz_loadu_epi8(m, q + i);
            const int8_t *xs[4] = {x0 + i, x0 + stride + i, x0 + 2 * stride + i,
                                   x0 + 3 * stride + i};
            p0 = _mm512_dpbusd_epi32(
                p0, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, xs[0]), flip),
                qv);
            p1 = _mm512_dpbusd_epi32(
                p1, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, xs[1]), flip),
                qv);
            p2 = _mm512_dpbusd_epi32(
                p2, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, xs[2]), flip),
                qv);
            p3 = _mm512_dpbusd_epi32(
                p3, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, xs[3]), flip),
                qv);
        }
        out[r] = _mm512_reduce_add_epi32(p0) - corr;
        out[r + 1] = _mm512_reduce_add_epi32(p1) - corr;
        out[r + 2] = _mm512_reduce_add_epi32(p2) - corr;
        out[r + 3] = _mm512_reduce_add_epi32(p3) - corr;
    }
    for (; r < n; r++) {
        const int8_t *row = base + r * stride;
        __m512i p0 = _mm512_setzero_si512();
        for (size_t i = 0; i < d; i += 64) {
            __mmask64 m = mask64(d - i);
            __m512i x =
                _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, row + i), flip);
            p0 = _mm512_dpbusd_epi32(p0, x, _mm512_maskz_loadu_epi8(m, q + i));
        }
        out[r] = _mm512_reduce_add_epi32(p0) - corr;
    }
}

static void f32_to_f16(const float *src, uint16_t *dst, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(src + i),
                                    _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_si256((__m256i *)(dst + i), h);
    }
    for (; i < n; i++) {
        dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
    }
}

static void f16_to_f32(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm512_storeu_ps(dst + i, load_h16(src + i));
    }
    for (; i < n; i++) {
        dst[i] = _cvtsh_ss(src[i]);
    }
}

static float sum_f32(const float *p, size_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_add_ps(s0, _mm512_loadu_ps(p + i));
        s1 = _mm512_add_ps(s1, _mm512_loadu_ps(p + i + 16));
        s2 = _mm512_add_ps(s2, _mm512_loadu_ps(p + i + 32));
        s3 = _mm512_add_ps(s3, _mm512_loadu_ps(p + i + 48));
    }
    float s = _mm512_reduce_add_ps(
        _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; i < n; i++) {
        s += p[i];
    }
    return s;
}

static const sc_simd_kernels avx512_kernels = {
    .name = "avx512",
    .tier = SC_TIER_AVX512,
    .dot_f32 = dot_f32,
    .dot_f32_rows = dot_f32_rows,
    .dot_f32_tile = dot_f32_tile,
    .dot_f16_rows = dot_f16_rows,
    .dot_i8_rows = dot_i8_rows,
    .f32_to_f16 = f32_to_f16,
    .f16_to_f32 = f16_to_f32,
    .sum_f32 = sum_f32,
};

static const sc_simd_kernels avx512_vnni_kernels = {
    .name = "avx512-vnni",
    .tier = SC_TIER_AVX512,
    .dot_f32 = dot_f32,
    .dot_f32_rows = dot_f32_rows,
    .dot_f32_tile = dot_f32_tile,
    .dot_f16_rows = dot_f16_rows,
    .dot_i8_rows = dot_i8_rows_vnni,
    .f32_to_f16 = f32_to_f16,
    .f16_to_f32 = f16_to_f32,
    .sum_f32 = sum_f32,
};

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

const sc_simd_kernels *sc_simd_avx512_kernels(int with_vnni)
{
    return with_vnni ? &avx512_vnni_kernels : &avx512_kernels;
}

#else /* SC_NO_AVX512: the compiler cannot build this tier. */

const sc_simd_kernels *sc_simd_avx512_kernels(int with_vnni)
{
    (void)with_vnni;
    return NULL;
}

#endif
