/* simd.h - the similarity kernels behind the flat index, one table per tier.
 *
 * Intrinsics live only in index/simd/<isa>.c. scalar.c is always built and is
 * the reference every other tier is tested against. dispatch.c picks the best
 * tier once (CPUID plus the OS's XGETBV check); SEMCACHE_SIMD=scalar|avx2|
 * avx512 forces a lower tier (a higher one than the CPU has is refused). */
#ifndef SC_SIMD_H
#define SC_SIMD_H

#include <stddef.h>
#include <stdint.h>

typedef enum sc_simd_tier {
    SC_TIER_SCALAR = 0,
    SC_TIER_AVX2 = 1,   /* AVX2 + FMA + F16C */
    SC_TIER_AVX512 = 2, /* AVX-512 F/BW/VL (+ VNNI for int8 when present) */
    SC_TIER_COUNT
} sc_simd_tier;

/* All "rows" kernels compute, for i in [0, n), the dot product of the query
 * q (d elements) with the row base + i * stride (stride in elements, >= d),
 * and write it to out[i]. d may be any value >= 1: kernels handle tails. No
 * alignment is required of any pointer. The caller owns every buffer. */
typedef struct sc_simd_kernels {
    const char *name; /* "scalar", "avx2", "avx512", "avx512-vnni" */
    sc_simd_tier tier;

    float (*dot_f32)(const float *a, const float *b, size_t d);
    void (*dot_f32_rows)(const float *q, const float *base, size_t stride,
                         size_t n, size_t d, float *out);
    /* A tile of dot products for batches: out[i * ldo + j] is the dot
     * product of query qs + i * qstride with row base + j * stride, for
     * i < nq and j < n. d must be a multiple of 16, and the queries and
     * rows must hold zeros between their true dimension and d (the flat
     * index pads rows so; callers pad the queries). */
    void (*dot_f32_tile)(const float *qs, size_t qstride, size_t nq,
                         const float *base, size_t stride, size_t n, size_t d,
                         float *out, size_t ldo);
    /* Rows are IEEE half precision (binary16) bit patterns; q is f32. */
    void (*dot_f16_rows)(const float *q, const uint16_t *base, size_t stride,
                         size_t n, size_t d, float *out);
    /* Exact integer dot products of int8 codes. q and rows hold values in
     * [-127, 127] (-128 is never produced by the quantiser; kernels may assume
     * its absence). */
    void (*dot_i8_rows)(const int8_t *q, const int8_t *base, size_t stride,
                        size_t n, size_t d, int32_t *out);
    /* Conversions between f32 and f16 bit patterns, round to nearest even. */
    void (*f32_to_f16)(const float *src, uint16_t *dst, size_t n);
    void (*f16_to_f32)(const uint16_t *src, float *dst, size_t n);
    /* Sum of n floats; used by the benchmark to measure read bandwidth. */
    float (*sum_f32)(const float *p, size_t n);
} sc_simd_kernels;

/* Near 1, the f32 kernels' sums can miss a unit vector's cosine with itself
 * by about d ulps (1 - 4e-5 was seen at d = 3718 on the scalar tier), so
 * an exact match could fall short of a threshold of 1. Searches re-score a
 * kept f32 row whose kernel score reaches sc_simd_near_one(d) with
 * sc_simd_exact_cos: summed in double in a fixed order (the same bits on
 * every tier), and exactly 1 for a vector with itself. It returns 0 when
 * either vector is zero. */
float sc_simd_exact_cos(const float *a, const float *b, size_t d);

static inline float sc_simd_near_one(size_t d)
{
    return 1.0f - (float)(d + 16) * 0x1p-24f;
}

/* Kernel tables by tier. A tier the build left out, or that the running CPU
 * lacks, yields NULL. Tables are static: never freed. */
const sc_simd_kernels *sc_simd_get(sc_simd_tier tier);

/* The best tier the CPU and OS support, ignoring SEMCACHE_SIMD. */
sc_simd_tier sc_simd_best_supported(void);

/* The active table: chosen on first call (thread-safe) from the CPU and the
 * environment variable SEMCACHE_SIMD, then fixed for the process. */
const sc_simd_kernels *sc_simd_active(void);

/* "scalar", "avx2", "avx512"; NULL for an unknown value. */
const char *sc_simd_tier_name(sc_simd_tier tier);

/* Parses a tier name; returns -1 when unknown. */
int sc_simd_tier_parse(const char *name);

/* Per-tier tables, defined by the ISA files (NULL-returning where not built).
 */
const sc_simd_kernels *sc_simd_scalar_kernels(void);
const sc_simd_kernels *sc_simd_avx2_kernels(void);
const sc_simd_kernels *sc_simd_avx512_kernels(int with_vnni);

#endif
