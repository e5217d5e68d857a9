/* avx512.c - AVX-512 F/BW/VL kernels, with a VNNI (vpdpbusd) variant of the
 * int8 dot product. Per-file target flags keep these instructions out of the
 * rest of the binary; dispatch.c calls in only after CPUID and XGETBV agree.
 * Tails use masked loads, so nothing past a row's d-th element is read. */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")
#include <immintrin.h>

#include "index/simd/simd.h"

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
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16),
                             _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32),
                             _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48),
                             _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= d; i += 16) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    }
    if (i < d) {
        __mmask16 m = mask16(d - i);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i),
                             _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(
        _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static void dot_f32_rows(const float *q, const float *base, size_t stride,
                         size_t n, size_t d, float *out)
{
    size_t r = 0;
    if (d % 16 == 0) {
        /* Two rows per pass share each load of q: in-cache scans are
         * load-bound, so this is the difference at small N. */
        for (; r + 2 <= n; r += 2) {
            const float *x = base + r * stride;
            const float *y = x + stride;
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
            __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
            size_t i = 0;
            for (; i + 32 <= d; i += 32) {
                __m512 q0 = _mm512_loadu_ps(q + i);
                __m512 q1 = _mm512_loadu_ps(q + i + 16);
                a0 = _mm512_fmadd_ps(q0, _mm512_loadu_ps(x + i), a0);
                b0 = _mm512_fmadd_ps(q0, _mm512_loadu_ps(y + i), b0);
                a1 = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x + i + 16), a1);
                b1 = _mm512_fmadd_ps(q1, _mm512_loadu_ps(y + i + 16), b1);
            }
            if (i < d) {
                __m512 q0 = _mm512_loadu_ps(q + i);
                a0 = _mm512_fmadd_ps(q0, _mm512_loadu_ps(x + i), a0);
                b0 = _mm512_fmadd_ps(q0, _mm512_loadu_ps(y + i), b0);
            }
            out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
            out[r + 1] = _mm512_reduce_add_ps(_mm512_add_ps(b0, b1));
        }
    }
    for (; r < n; r++) {
        out[r] = dot_f32(q, base + r * stride, d);
    }
}

static __m512 load_h16(const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

static __m512 maskz_load_h16(__mmask16 m, const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

static void dot_f16_rows(const float *q, const uint16_t *base, size_t stride,
                         size_t n, size_t d, float *out)
{
    for (size_t r = 0; r < n; r++) {
        const uint16_t *row = base + r * stride;
        __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
        __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
        size_t i = 0;
        for (; i + 64 <= d; i += 64) {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), load_h16(row + i), s0);
            s1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 16),
                                 load_h16(row + i + 16), s1);
            s2 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 32),
                                 load_h16(row + i + 32), s2);
            s3 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 48),
                                 load_h16(row + i + 48), s3);
        }
        for (; i + 16 <= d; i += 16) {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), load_h16(row + i), s0);
        }
        if (i < d) {
            __mmask16 m = mask16(d - i);
            s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + i),
                                 maskz_load_h16(m, row + i), s1);
        }
        out[r] = _mm512_reduce_add_ps(
            _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    }
}

/* int8 without VNNI: widen to int16, vpmaddwd into int32. Exact. */
static void dot_i8_rows(const int8_t *q, const int8_t *base, size_t stride,
                        size_t n, size_t d, int32_t *out)
{
    for (size_t r = 0; r < n; r++) {
        const int8_t *row = base + r * stride;
        __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
        size_t i = 0;
        for (; i + 64 <= d; i += 64) {
            __m512i qa = _mm512_cvtepi8_epi16(
                _mm256_loadu_si256((const __m256i *)(q + i)));
            __m512i ra = _mm512_cvtepi8_epi16(
                _mm256_loadu_si256((const __m256i *)(row + i)));
            __m512i qb = _mm512_cvtepi8_epi16(
                _mm256_loadu_si256((const __m256i *)(q + i + 32)));
            __m512i rb = _mm512_cvtepi8_epi16(
                _mm256_loadu_si256((const __m256i *)(row + i + 32)));
            s0 = _mm512_add_epi32(s0, _mm512_madd_epi16(qa, ra));
            s1 = _mm512_add_epi32(s1, _mm512_madd_epi16(qb, rb));
        }
        for (; i < d; i += 32) {
            __mmask32 m = d - i >= 32 ? ~(__mmask32)0
                                      : (__mmask32)((1u << (d - i)) - 1u);
            __m512i qa = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, q + i));
            __m512i ra =
                _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, row + i));
            s0 = _mm512_add_epi32(s0, _mm512_madd_epi16(qa, ra));
        }
        out[r] = _mm512_reduce_add_epi32(_mm512_add_epi32(s0, s1));
    }
}

/* int8 with VNNI: vpdpbusd multiplies unsigned by signed bytes, so the query
 * goes in shifted by +128 and 128 * sum(row) is taken back out, the row sum
 * coming from a second vpdpbusd against a vector of ones. */
static void dot_i8_rows_vnni(const int8_t *q, const int8_t *base,
                             size_t stride, size_t n, size_t d, int32_t *out)
{
    uint8_t qoff[4096 + 64];
    size_t dd = d <= 4096 ? d : 4096;
    if (d > 4096) {
        dot_i8_rows(q, base, stride, n, d, out);
        return;
    }
    for (size_t i = 0; i < dd; i++) {
        qoff[i] = (uint8_t)(q[i] + 128);
    }
    const __m512i ones = _mm512_set1_epi8(1);
    for (size_t r = 0; r < n; r++) {
        const int8_t *row = base + r * stride;
        __m512i p0 = _mm512_setzero_si512(), p1 = _mm512_setzero_si512();
        __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
        size_t i = 0;
        for (; i + 128 <= d; i += 128) {
            __m512i x0 = _mm512_loadu_si512(row + i);
            __m512i x1 = _mm512_loadu_si512(row + i + 64);
            p0 = _mm512_dpbusd_epi32(p0, _mm512_loadu_si512(qoff + i), x0);
            p1 = _mm512_dpbusd_epi32(p1, _mm512_loadu_si512(qoff + i + 64), x1);
            s0 = _mm512_dpbusd_epi32(s0, ones, x0);
            s1 = _mm512_dpbusd_epi32(s1, ones, x1);
        }
        for (; i < d; i += 64) {
            __mmask64 m = mask64(d - i);
            __m512i x = _mm512_maskz_loadu_epi8(m, row + i);
            p0 = _mm512_dpbusd_epi32(p0, _mm512_maskz_loadu_epi8(m, qoff + i), x);
            s0 = _mm512_dpbusd_epi32(s0, ones, x);
        }
        __m512i p = _mm512_add_epi32(p0, p1);
        __m512i s = _mm512_add_epi32(s0, s1);
        out[r] = _mm512_reduce_add_epi32(p) - 128 * _mm512_reduce_add_epi32(s);
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
    .dot_f16_rows = dot_f16_rows,
    .dot_i8_rows = dot_i8_rows_vnni,
    .f32_to_f16 = f32_to_f16,
    .f16_to_f32 = f16_to_f32,
    .sum_f32 = sum_f32,
};

const sc_simd_kernels *sc_simd_avx512_kernels(int with_vnni)
{
    return with_vnni ? &avx512_vnni_kernels : &avx512_kernels;
}
