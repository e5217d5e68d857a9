/* scalar.c - the portable reference kernels. Every other tier is tested
 * against these; they are also the fallback on CPUs without AVX2. */
#include <math.h>
#include <string.h>

#include "index/simd/simd.h"

static float dot_f32(const float *a, const float *b, size_t d)
{
    float s = 0.0f;
    for (size_t i = 0; i < d; i++) {
        s += a[i] * b[i];
    }
    return s;
}

static void dot_f32_rows(const float *q, const float *base, size_t stride,
                         size_t n, size_t d, float *out)
{
    for (size_t r = 0; r < n; r++) {
        out[r] = dot_f32(q, base + r * stride, d);
    }
}

static void dot_f32_tile(const float *qs, size_t qstride, size_t nq,
                         const float *base, size_t stride, size_t n, size_t d,
                         float *out, size_t ldo)
{
    for (size_t i = 0; i < nq; i++) {
        dot_f32_rows(qs + i * qstride, base, stride, n, d, out + i * ldo);
    }
}

/* IEEE binary16 -> binary32, exact for every input. */
static float h2f(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {
            /* Subnormal: shift until the implicit bit appears. */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while ((man & 0x400u) == 0);
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) |
                   ((man & 0x3ffu) << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

/* binary32 -> binary16, round to nearest even, as F16C's VCVTPS2PH does. */
static uint16_t f2h(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exp = (x >> 23) & 0xffu;
    uint32_t man = x & 0x7fffffu;
    if (exp == 0xff) {
        /* Inf stays Inf; NaN stays NaN (quiet, payload kept where it fits). */
        return (uint16_t)(sign | 0x7c00u | (man ? (0x200u | (man >> 13)) : 0));
    }
    int e = (int)exp - 127 + 15;
    if (e >= 0x1f) {
        return (uint16_t)(sign | 0x7c00u);
    }
    if (e <= 0) {
        if (e < -10) {
            return (uint16_t)sign;
        }
        man |= 0x800000u;
        unsigned shift = (unsigned)(14 - e);
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u))) {
            half++;
        }
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) {
        half++; /* may carry into the exponent, up to Inf: correct */
    }
    return (uint16_t)(sign | half);
}

static void dot_f16_rows(const float *q, const uint16_t *base, size_t stride,
                         size_t n, size_t d, float *out)
{
    for (size_t r = 0; r < n; r++) {
        const uint16_t *row = base + r * stride;
        float s = 0.0f;
        for (size_t i = 0; i < d; i++) {
            s += q[i] * h2f(row[i]);
        }
        out[r] = s;
    }
}

static void dot_i8_rows(const int8_t *q, const int8_t *base, size_t stride,
                        size_t n, size_t d, int32_t *out)
{
    for (size_t r = 0; r < n; r++) {
        const int8_t *row = base + r * stride;
        int32_t s = 0;
        for (size_t i = 0; i < d; i++) {
            s += (int32_t)q[i] * (int32_t)row[i];
        }
        out[r] = s;
    }
}

static void f32_to_f16(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dst[i] = f2h(src[i]);
    }
}

static void f16_to_f32(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dst[i] = h2f(src[i]);
    }
}

static float sum_f32(const float *p, size_t n)
{
    float s = 0.0f;
    for (size_t i = 0; i < n; i++) {
        s += p[i];
    }
    return s;
}

/* simd.h. Products of two floats are exact in double; the sums run in four
 * lanes in a fixed order, so every tier and compiler gives the same bits. */
float sc_simd_exact_cos(const float *a, const float *b, size_t d)
{
    double ab[4] = {0}, aa[4] = {0}, bb[4] = {0};
    size_t i = 0;
    for (; i + 4 <= d; i += 4) {
        for (size_t j = 0; j < 4; j++) {
            double x = a[i + j], y = b[i + j];
            ab[j] += x * y;
            aa[j] += x * x;
            bb[j] += y * y;
        }
    }
    for (size_t j = 0; i < d; i++, j++) {
        double x = a[i], y = b[i];
        ab[j] += x * y;
        aa[j] += x * x;
        bb[j] += y * y;
    }
    double sab = (ab[0] + ab[1]) + (ab[2] + ab[3]);
    double saa = (aa[0] + aa[1]) + (aa[2] + aa[3]);
    double sbb = (bb[0] + bb[1]) + (bb[2] + bb[3]);
    if (!(saa > 0.0 && sbb > 0.0)) {
        return 0.0f;
    }
    /* a == b: sab == saa == sbb, so c is within an ulp of double 1. */
    double c = sab / (sqrt(saa) * sqrt(sbb));
    return c > 1.0 ? 1.0f : c < -1.0 ? -1.0f : (float)c;
}

static const sc_simd_kernels scalar_kernels = {
    .name = "scalar",
    .tier = SC_TIER_SCALAR,
    .dot_f32 = dot_f32,
    .dot_f32_rows = dot_f32_rows,
    .dot_f32_tile = dot_f32_tile,
    .dot_f16_rows = dot_f16_rows,
    .dot_i8_rows = dot_i8_rows,
    .f32_to_f16 = f32_to_f16,
    .f16_to_f32 = f16_to_f32,
    .sum_f32 = sum_f32,
};

const sc_simd_kernels *sc_simd_scalar_kernels(void)
{
    return &scalar_kernels;
}
