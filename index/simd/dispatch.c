/* dispatch.c - picks the SIMD tier once per process: the best the CPU and
 * the OS support (CPUID plus XGETBV, so a kernel that does not save AVX-512
 * state is respected), lowered by SEMCACHE_SIMD when a test or a benchmark
 * asks for it. The one place in the tree that knows which tiers exist. */
#include <cpuid.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/simd/simd.h"

static const char *const tier_names[SC_TIER_COUNT] = {"scalar", "avx2",
                                                      "avx512"};

const char *sc_simd_tier_name(sc_simd_tier tier)
{
    if ((int)tier < 0 || tier >= SC_TIER_COUNT) {
        return NULL;
    }
    return tier_names[tier];
}

int sc_simd_tier_parse(const char *name)
{
    if (name == NULL) {
        return -1;
    }
    for (int i = 0; i < SC_TIER_COUNT; i++) {
        if (strcmp(name, tier_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

static unsigned long long xgetbv0(void)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

typedef struct cpu {
    int avx2, avx512, vnni;
} cpu;

/* AVX2 tier: AVX2, FMA and F16C, with XMM and YMM state enabled by the OS
 * (XCR0 bits 1, 2). AVX-512 tier: F, BW, VL and DQ (avx512.c is compiled with
 * -mavx512dq, so the compiler may emit DQ instructions there), plus opmask,
 * ZMM_Hi256 and Hi16_ZMM state (XCR0 bits 5, 6, 7). VNNI: CPUID.7.0:ECX[11]. */
static cpu probe_once(void)
{
    cpu c = {0, 0, 0};
    unsigned a, b, cx, d;
    if (!__get_cpuid(1, &a, &b, &cx, &d)) {
        return c;
    }
    int osxsave = (cx >> 27) & 1;
    int fma = (cx >> 12) & 1;
    int f16c = (cx >> 29) & 1;
    int avx = (cx >> 28) & 1;
    if (!osxsave || !avx) {
        return c;
    }
    unsigned long long xcr0 = xgetbv0();
    int os_avx = (xcr0 & 0x6) == 0x6;      /* XMM and YMM state */
    int os_avx512 = (xcr0 & 0xe6) == 0xe6; /* plus opmask, ZMM_Hi256, Hi16 */
    if (!__get_cpuid_count(7, 0, &a, &b, &cx, &d)) {
        return c;
    }
    int avx2 = (b >> 5) & 1;
    int f = (b >> 16) & 1;
    int bw = (b >> 30) & 1;
    int vl = (b >> 31) & 1;
    int dq = (b >> 17) & 1;
    c.avx2 = os_avx && avx2 && fma && f16c;
    c.avx512 = c.avx2 && os_avx512 && f && bw && vl && dq;
    c.vnni = c.avx512 && ((cx >> 11) & 1);
    return c;
}

/* CPUID is cheap on bare metal but a trap into the hypervisor in a VM, so
 * the CPU is probed once per process. */
static pthread_once_t probe_done = PTHREAD_ONCE_INIT;
static cpu probed;

static void do_probe(void)
{
    probed = probe_once();
}

static cpu probe(void)
{
    pthread_once(&probe_done, do_probe);
    return probed;
}

sc_simd_tier sc_simd_best_supported(void)
{
    cpu c = probe();
    if (c.avx512 && sc_simd_avx512_kernels(c.vnni) != NULL) {
        return SC_TIER_AVX512;
    }
    if (c.avx2 && sc_simd_avx2_kernels() != NULL) {
        return SC_TIER_AVX2;
    }
    return SC_TIER_SCALAR;
}

const sc_simd_kernels *sc_simd_get(sc_simd_tier tier)
{
    if ((int)tier < 0 || tier > sc_simd_best_supported()) {
        return NULL;
    }
    switch (tier) {
    case SC_TIER_SCALAR:
        return sc_simd_scalar_kernels();
    case SC_TIER_AVX2:
        return sc_simd_avx2_kernels();
    case SC_TIER_AVX512:
        return sc_simd_avx512_kernels(probe().vnni);
    default:
        return NULL;
    }
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const sc_simd_kernels *active;

static void choose(void)
{
    sc_simd_tier best = sc_simd_best_supported();
    sc_simd_tier want = best;
    const char *env = getenv("SEMCACHE_SIMD");
    if (env != NULL && env[0] != '\0') {
        int t = sc_simd_tier_parse(env);
        if (t < 0) {
            fprintf(stderr,
                    "semcache: SEMCACHE_SIMD=%s is not one of scalar, "
                    "avx2, avx512; using %s\n",
                    env, tier_names[best]);
        } else if ((sc_simd_tier)t > best) {
            fprintf(stderr,
                    "semcache: SEMCACHE_SIMD=%s is beyond this CPU; "
                    "using %s\n",
                    env, tier_names[best]);
        } else {
            want = (sc_simd_tier)t;
        }
    }
    active = sc_simd_get(want);
    if (getenv("SEMCACHE_SIMD_LOG") != NULL) {
        fprintf(stderr, "semcache: simd kernels %s (best supported: %s)\n",
                active->name, tier_names[best]);
    }
}

const sc_simd_kernels *sc_simd_active(void)
{
    pthread_once(&once, choose);
    return active;
}
