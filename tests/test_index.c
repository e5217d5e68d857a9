/* test_index.c - the cosine index against a double-precision brute force:
 * validation, every storage type, threshold edges, delete and re-insert,
 * compaction (and the memory it gives back), batch against single, split
 * scans, a batch and a single search that let the lock go between blocks
 * of rows (rows removed, added and compacted in their pauses), and
 * concurrent search with writers and with compactions that shrink the
 * index. Run once per SIMD tier (ctest sets SEMCACHE_SIMD); exits 77 when
 * the CPU lacks the tier asked for.
 */
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "index/index.h"
#include "index/simd/simd.h"
#include "test_mem.h"
#include "test_util.h"

/* Exact cosine in double of unnormalised a and b. */
static double cosd(const float *a, const float *b, size_t d)
{
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < d; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return ab / sqrt(aa * bb);
}

static sc_index *open_ix(uint32_t dim, sc_storage st, uint32_t threads)
{
    sc_index_params p;
    sc_index_params_init(&p);
    p.dim = dim;
    p.storage = st;
    p.threads = threads;
    sc_index *ix = NULL;
    sc_err rc = sc_index_open(&p, &ix);
    CHECK_EQ_INT(rc, SC_OK);
    return ix;
}

static float *random_vectors(size_t n, size_t d, uint64_t seed)
{
    float *v = malloc((n * d + 1) * sizeof(float)); /* never 0 bytes */
    uint64_t s = seed;
    for (size_t i = 0; i < n * d; i++) {
        v[i] = test_randf(&s);
    }
    return v;
}

static void test_validation(void)
{
    sc_index_params p;
    sc_index_params_init(&p);
    sc_index *ix = NULL;
    p.dim = 0;
    CHECK_EQ_INT(sc_index_open(&p, &ix), SC_ERANGE);
    p.dim = SC_INDEX_MAX_DIM + 1;
    CHECK_EQ_INT(sc_index_open(&p, &ix), SC_ERANGE);
    p.dim = 4;
    p.storage = (sc_storage)7;
    CHECK_EQ_INT(sc_index_open(&p, &ix), SC_EINVAL);
    p.storage = SC_STORAGE_F32;
    p.backend = "nosuch";
    CHECK_EQ_INT(sc_index_open(&p, &ix), SC_EINVAL);
    CHECK(ix == NULL);

    ix = open_ix(4, SC_STORAGE_F32, 1);
    float zero[4] = {0, 0, 0, 0};
    float nan4[4] = {1, NAN, 0, 0};
    float inf4[4] = {1, 0, INFINITY, 0};
    float ok[4] = {1, 2, 3, 4};
    CHECK_EQ_INT(sc_index_add(ix, 1, zero), SC_EZEROVEC);
    CHECK_EQ_INT(sc_index_add(ix, 1, nan4), SC_ENONFINITE);
    CHECK_EQ_INT(sc_index_add(ix, 1, inf4), SC_ENONFINITE);
    CHECK_EQ_INT(sc_index_count(ix), 0);
    CHECK_EQ_INT(sc_index_add(ix, 1, ok), SC_OK);
    CHECK_EQ_INT(sc_index_add(ix, 1, ok), SC_EEXIST);
    CHECK_EQ_INT(sc_index_count(ix), 1);

    sc_hit hits[SC_INDEX_MAX_K];
    unsigned nh = 99;
    CHECK_EQ_INT(sc_index_search(ix, ok, 0, 0.5f, hits, &nh), SC_ERANGE);
    CHECK_EQ_INT(sc_index_search(ix, ok, SC_INDEX_MAX_K + 1, 0.5f, hits, &nh),
                 SC_ERANGE);
    CHECK_EQ_INT(sc_index_search(ix, ok, 1, NAN, hits, &nh), SC_EINVAL);
    CHECK_EQ_INT(sc_index_search(ix, zero, 1, 0.5f, hits, &nh), SC_EZEROVEC);
    CHECK_EQ_INT(sc_index_search(ix, nan4, 1, 0.5f, hits, &nh), SC_ENONFINITE);
    CHECK_EQ_INT(sc_index_remove(ix, 2), SC_ENOTFOUND);
    float out[4];
    CHECK_EQ_INT(sc_index_get(ix, 2, out), SC_ENOTFOUND);

    /* Stored vectors are normalised: a scaled copy matches with cosine 1. */
    float big[4] = {1000, 2000, 3000, 4000};
    CHECK_EQ_INT(sc_index_search(ix, big, 1, 0.999f, hits, &nh), SC_OK);
    CHECK_EQ_INT(nh, 1);
    CHECK(nh == 1 && hits[0].id == 1 &&
          fabsf(hits[0].similarity - 1.0f) < 1e-6f);
    CHECK_EQ_INT(sc_index_get(ix, 1, out), SC_OK);
    double norm = 0;
    for (int i = 0; i < 4; i++) {
        norm += (double)out[i] * out[i];
    }
    CHECK(fabs(norm - 1.0) < 1e-6);

    /* Tiny and huge components normalise without overflow or underflow. */
    float tiny[4] = {1e-30f, 0, 0, 0};
    float huge[4] = {3e38f, 3e38f, 0, 0};
    CHECK_EQ_INT(sc_index_add(ix, 2, tiny), SC_OK);
    CHECK_EQ_INT(sc_index_add(ix, 3, huge), SC_OK);
    CHECK_EQ_INT(sc_index_get(ix, 2, out), SC_OK);
    CHECK(fabsf(out[0] - 1.0f) < 1e-6f);
    sc_index_close(ix);

    CHECK(sc_storage_parse("f32") == SC_STORAGE_F32);
    CHECK(sc_storage_parse("f16") == SC_STORAGE_F16);
    CHECK(sc_storage_parse("int8") == SC_STORAGE_I8);
    CHECK(sc_storage_parse("f64") == -1);
}

/* Threshold edges: a hit exactly at the threshold counts, a hair above it
 * does not, and hits come sorted best first. */
static void test_threshold(sc_storage st)
{
    sc_index *ix = open_ix(2, st, 1);
    /* Unit vectors at known angles from (1, 0). */
    const double ang[] = {0.0, 0.3, 0.6, 0.9, 1.2, 2.0, 3.0};
    for (unsigned i = 0; i < 7; i++) {
        float v[2] = {(float)cos(ang[i]), (float)sin(ang[i])};
        CHECK_EQ_INT(sc_index_add(ix, 100 + i, v), SC_OK);
    }
    float q[2] = {1, 0};
    sc_hit hits[SC_INDEX_MAX_K];
    unsigned nh;
    CHECK_EQ_INT(sc_index_search(ix, q, 16, -1.0f, hits, &nh), SC_OK);
    CHECK_EQ_INT(nh, 7);
    for (unsigned i = 0; i + 1 < nh; i++) {
        CHECK(hits[i].similarity >= hits[i + 1].similarity);
    }
    CHECK(nh == 7 && hits[0].id == 100 && hits[6].id == 106);
    /* The similarity the index reports for id 102 is the edge. */
    float edge = 0;
    for (unsigned i = 0; i < nh; i++) {
        if (hits[i].id == 102) {
            edge = hits[i].similarity;
        }
    }
    CHECK_EQ_INT(sc_index_search(ix, q, 16, edge, hits, &nh), SC_OK);
    CHECK_EQ_INT(nh, 3);
    CHECK_EQ_INT(sc_index_search(ix, q, 16, nextafterf(edge, 2.0f), hits, &nh),
                 SC_OK);
    CHECK_EQ_INT(nh, 2);
    CHECK_EQ_INT(sc_index_search(ix, q, 2, -1.0f, hits, &nh), SC_OK);
    CHECK_EQ_INT(nh, 2);
    CHECK_EQ_INT(sc_index_search(ix, q, 16, 1.01f, hits, &nh), SC_OK);
    CHECK_EQ_INT(nh, 0);
    sc_index_close(ix);
}

/* A stored vector found again at threshold 1: the kernels' f32 sums missed
 * a unit vector's cosine with itself by up to 4e-5 (scalar, d = 3718), so
 * an exact match was a miss at threshold 1 until the kept rows were
 * re-scored exactly. Components of very different sizes make the sums
 * round most. The query may be any positive multiple of the vector. */
static int has_one(const sc_hit *h, unsigned n, uint64_t id)
{
    for (unsigned i = 0; i < n; i++) {
        if (h[i].id == id) {
            return h[i].similarity == 1.0f;
        }
    }
    return 0;
}

static void test_self_at_one(void)
{
    const size_t dims[] = {1, 2, 3, 7, 100, 384, 1536, 3718, 4096};
    uint64_t seed = 99;
    enum { N = SC_INDEX_MAX_K };
    for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
        size_t d = dims[di];
        float *v = random_vectors(N, d, 1000 + di);
        for (size_t r = 0; r < N; r++) {
            for (size_t i = 0; i < d; i++) {
                if (r % 3 == 1) {
                    v[r * d + i] *= i % 7 == 0 ? 1000.0f : 0.001f;
                } else if (r % 3 == 2) {
                    v[r * d + i] = 0.5f + 0.5f * test_randf(&seed);
                }
            }
        }
        sc_index *ix = open_ix((uint32_t)d, SC_STORAGE_F32, 1);
        for (size_t r = 0; r < N; r++) {
            CHECK_EQ_INT(sc_index_add(ix, 1 + r, v + r * d), SC_OK);
        }
        /* Other rows may tie at 1 (in few dimensions the scaled rows all
         * point along the first axis); the row itself must be among them. */
        sc_hit hits[N * N];
        unsigned nh[N];
        float *q = malloc(d * sizeof(float));
        int bad = 0;
        for (size_t r = 0; r < N; r++) {
            for (size_t i = 0; i < d; i++) {
                q[i] = v[r * d + i] * (r % 2 ? 3.0f : 1.0f);
            }
            CHECK_EQ_INT(sc_index_search(ix, q, N, 1.0f, hits, nh), SC_OK);
            bad += !has_one(hits, nh[0], 1 + r);
        }
        free(q);
        CHECK_EQ_INT(bad, 0);
        CHECK_EQ_INT(sc_index_search_batch(ix, v, N, N, 1.0f, hits, nh), SC_OK);
        bad = 0;
        for (size_t r = 0; r < N; r++) {
            bad += !has_one(hits + r * N, nh[r], 1 + r);
        }
        CHECK_EQ_INT(bad, 0);
        sc_index_close(ix);
        free(v);
    }
}

/* The same with near-duplicates stored beside the vector, ones whose
 * kernel score rounds above the vector's own (searched for with this
 * tier's kernel): they pushed the vector out of the k places before any
 * exact score was taken (a miss at threshold 1 with k = 8, and the
 * near-duplicate served first). The vector must come first, at 1, single
 * and batch. */
static void unit_of(const float *a, float *u, size_t d)
{
    double ss = 0;
    for (size_t i = 0; i < d; i++) {
        ss += (double)a[i] * a[i];
    }
    double inv = 1.0 / sqrt(ss);
    for (size_t i = 0; i < d; i++) {
        u[i] = (float)(a[i] * inv);
    }
}

static void test_self_among_near_duplicates(void)
{
    const sc_simd_kernels *kern = sc_simd_active();
    const size_t dims[] = {384, 1536};
    uint64_t seed = 12345;
    for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
        size_t d = dims[di];
        float *a = malloc(d * sizeof(float)), *ua = malloc(d * sizeof(float));
        float *ub = malloc(d * sizeof(float));
        float *near = malloc(8 * d * sizeof(float));
        int found = 0;
        for (int trial = 0; trial < 200 && found < 8; trial++) {
            /* Components of sizes 1e-4..1: the sums round most. */
            for (size_t i = 0; i < d; i++) {
                a[i] = (test_randf(&seed) - 0.5f) *
                       powf(10.0f, -4.0f * test_randf(&seed));
            }
            unit_of(a, ua, d);
            float self;
            kern->dot_f32_rows(ua, ua, d, 1, d, &self);
            found = 0;
            for (int t = 0; t < 5000 && found < 8; t++) {
                float *b = near + (size_t)found * d;
                memcpy(b, a, d * sizeof(float));
                size_t i = (size_t)(test_randf(&seed) * (float)d) % d;
                b[i] += (test_randf(&seed) - 0.5f) *
                        powf(10.0f, -4.0f * test_randf(&seed)) * fabsf(a[i]);
                unit_of(b, ub, d);
                float ab;
                kern->dot_f32_rows(ua, ub, d, 1, d, &ab);
                found += ab > self && sc_simd_exact_cos(ua, ub, d) < 1.0f;
            }
        }
        CHECK_EQ_INT(found, 8); /* the case exists on this tier */
        sc_index *ix = open_ix((uint32_t)d, SC_STORAGE_F32, 1);
        for (int j = 0; j < 8; j++) {
            CHECK_EQ_INT(sc_index_add(ix, 100 + j, near + (size_t)j * d),
                         SC_OK);
        }
        CHECK_EQ_INT(sc_index_add(ix, 1, a), SC_OK);
        sc_hit h[16];
        unsigned nh = 0;
        CHECK_EQ_INT(sc_index_search(ix, a, 8, 1.0f, h, &nh), SC_OK);
        CHECK(nh >= 1 && h[0].id == 1 && h[0].similarity == 1.0f);
        CHECK_EQ_INT(sc_index_search(ix, a, 8, -2.0f, h, &nh), SC_OK);
        CHECK(nh == 8 && h[0].id == 1 && h[0].similarity == 1.0f);
        CHECK_EQ_INT(sc_index_search(ix, a, 1, 1.0f, h, &nh), SC_OK);
        CHECK(nh == 1 && h[0].id == 1);
        float *two = malloc(2 * d * sizeof(float));
        memcpy(two, a, d * sizeof(float));
        memcpy(two + d, a, d * sizeof(float));
        unsigned nb[2] = {0, 0};
        CHECK_EQ_INT(sc_index_search_batch(ix, two, 2, 8, 1.0f, h, nb), SC_OK);
        CHECK(nb[0] >= 1 && h[0].id == 1 && h[0].similarity == 1.0f);
        free(two);
        sc_index_close(ix);
        free(near);
        free(ub);
        free(ua);
        free(a);
    }
}

/* Every storage type against brute force on random data of awkward sizes. */
static void test_against_bruteforce(sc_storage st, size_t n, size_t d,
                                    uint64_t seed)
{
    float *base = random_vectors(n, d, seed);
    float *qs = random_vectors(20, d, seed ^ 0xabc);
    /* Make half the queries near a stored vector, as real traffic is. */
    for (size_t i = 0; i < 10 && n > 0; i++) {
        size_t src = (i * 7919) % n;
        uint64_t s = seed + i;
        for (size_t j = 0; j < d; j++) {
            qs[i * d + j] = base[src * d + j] + 0.05f * test_randf(&s);
        }
    }
    sc_index *ix = open_ix((uint32_t)d, st, 1);
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ_INT(sc_index_add(ix, 1000 + i, base + i * d), SC_OK);
    }
    CHECK_EQ_INT(sc_index_count(ix), n);
    double tol = st == SC_STORAGE_F32 ? 1e-5 : 1e-3;
    int agree = 0;
    for (size_t qi = 0; qi < 20; qi++) {
        const float *q = qs + qi * d;
        sc_hit hits[SC_INDEX_MAX_K];
        unsigned nh;
        CHECK_EQ_INT(sc_index_search(ix, q, 5, -1.0f, hits, &nh), SC_OK);
        size_t want = n < 5 ? n : 5;
        CHECK_EQ_INT(nh, want);
        /* Reported similarities are the true cosines of the returned ids. */
        for (unsigned h = 0; h < nh; h++) {
            double truth = cosd(q, base + (hits[h].id - 1000) * d, d);
            CHECK(fabs(truth - hits[h].similarity) <= tol);
        }
        /* Top-1 is the best within tolerance. */
        double best = -2;
        for (size_t i = 0; i < n; i++) {
            double c = cosd(q, base + i * d, d);
            best = c > best ? c : best;
        }
        if (nh > 0) {
            double got = cosd(q, base + (hits[0].id - 1000) * d, d);
            CHECK(got >= best - 2 * tol);
            /* f32 must find the very best; quantised storage may swap
             * candidates that tie within its error bound. */
            agree += got >= best - (st == SC_STORAGE_F32 ? 1e-9 : tol);
        }
    }
    if (n > 0) {
        CHECK(agree >= 19); /* near-ties may swap under quantisation */
    }
    sc_index_close(ix);
    free(base);
    free(qs);
}

/* Duplicates and all-equal vectors: every copy ties at the same score. */
static void test_all_equal(sc_storage st)
{
    sc_index *ix = open_ix(9, st, 1);
    float v[9];
    for (int i = 0; i < 9; i++) {
        v[i] = 0.25f;
    }
    for (uint64_t id = 0; id < 40; id++) {
        CHECK_EQ_INT(sc_index_add(ix, id, v), SC_OK);
    }
    sc_hit hits[SC_INDEX_MAX_K];
    unsigned nh;
    CHECK_EQ_INT(sc_index_search(ix, v, 16, 0.999f, hits, &nh), SC_OK);
    CHECK_EQ_INT(nh, 16);
    for (unsigned i = 0; i < nh; i++) {
        CHECK(fabsf(hits[i].similarity - 1.0f) < 1e-3f);
        CHECK(hits[i].id < 40);
    }
    sc_index_close(ix);
}

/* Equal scores rank by id, the smaller first, on every path: which of a
 * run of ties make the k must not depend on the slots, which the order of
 * the adds sets (a restart adds in another order). ndup copies of one
 * vector, ids 1..ndup, among nfill random rows (ids from 1000000 on), are
 * added in ascending and in descending order into two indexes: single,
 * batched (one query, and tiles of three) and, with threads > 1, split
 * searches must all answer ids 1..8 in order. */
static void ties_add(sc_index *ix, const float *dup, const float *fill,
                     size_t ndup, size_t nfill, size_t d, int down)
{
    size_t n = ndup + nfill;
    for (size_t j = 0; j < n; j++) {
        size_t i = down ? n - 1 - j : j;
        /* Copies spread among the fillers: every few rows one. */
        size_t every = n / ndup;
        if (i % every == 0 && i / every < ndup) {
            CHECK_EQ_INT(sc_index_add(ix, 1 + i / every, dup), SC_OK);
        } else {
            CHECK_EQ_INT(sc_index_add(ix, 1000000 + i, fill + i * d), SC_OK);
        }
    }
}

static int ties_ok(const sc_hit *h, unsigned n, unsigned k)
{
    int bad = n != k;
    for (unsigned i = 0; i < n && i < k; i++) {
        bad += h[i].id != i + 1 || h[i].similarity < 0.999f;
    }
    return bad == 0;
}

/* A query off the copies (similarity about 0.8): the kernels' own sums
 * rank them, not the exact re-score near 1. Fillers may come first; of
 * the copies, ids 1, 2, ... in order, all at one similarity. */
static int ties_off_ok(const sc_hit *h, unsigned n, unsigned k)
{
    int bad = n != k;
    uint64_t want = 1;
    float s = 0.0f;
    for (unsigned i = 0; i < n && i < k; i++) {
        if (h[i].id < 1000000) {
            s = want == 1 ? h[i].similarity : s;
            bad += h[i].id != want || h[i].similarity != s;
            want++;
        }
    }
    return bad == 0 && want > 1;
}

static void test_ties_by_id(sc_storage st, size_t ndup, size_t nfill, size_t d,
                            uint32_t threads)
{
    float *dup = random_vectors(1, d, 4242);
    float *fill = random_vectors(ndup + nfill, d, 4343);
    sc_index *up = open_ix((uint32_t)d, st, threads);
    sc_index *down = open_ix((uint32_t)d, st, threads);
    ties_add(up, dup, fill, ndup, nfill, d, 0);
    ties_add(down, dup, fill, ndup, nfill, d, 1);
    const unsigned k = 8;
    float *qs = malloc(3 * d * sizeof(float));
    float *offs = malloc(3 * d * sizeof(float));
    uint64_t seed = 4444;
    for (size_t i = 0; i < 3; i++) {
        memcpy(qs + i * d, dup, d * sizeof(float));
    }
    for (size_t j = 0; j < d; j++) {
        offs[j] = dup[j] + 0.4f * test_randf(&seed);
    }
    memcpy(offs + d, offs, d * sizeof(float));
    memcpy(offs + 2 * d, offs, d * sizeof(float));
    sc_index *both[2] = {up, down};
    int failed = 0;
    for (int x = 0; x < 2; x++) {
        sc_hit h[3 * SC_INDEX_MAX_K];
        unsigned n[3];
        CHECK_EQ_INT(sc_index_search(both[x], dup, k, 0.5f, h, n), SC_OK);
        failed += !ties_ok(h, n[0], k);
        CHECK_EQ_INT(sc_index_search_batch(both[x], qs, 1, k, 0.5f, h, n),
                     SC_OK);
        failed += !ties_ok(h, n[0], k);
        CHECK_EQ_INT(sc_index_search_batch(both[x], qs, 3, k, 0.5f, h, n),
                     SC_OK);
        for (size_t i = 0; i < 3; i++) {
            failed += !ties_ok(h + i * k, n[i], k);
        }
    }
    for (int x = 0; x < 2; x++) {
        sc_hit h[3 * SC_INDEX_MAX_K];
        unsigned n[3];
        CHECK_EQ_INT(sc_index_search(both[x], offs, k, -1.0f, h, n), SC_OK);
        failed += !ties_off_ok(h, n[0], k);
        CHECK_EQ_INT(sc_index_search_batch(both[x], offs, 1, k, -1.0f, h, n),
                     SC_OK);
        failed += !ties_off_ok(h, n[0], k);
        CHECK_EQ_INT(sc_index_search_batch(both[x], offs, 3, k, -1.0f, h, n),
                     SC_OK);
        for (size_t i = 0; i < 3; i++) {
            failed += !ties_off_ok(h + i * k, n[i], k);
        }
    }
    if (failed) {
        fprintf(stderr, "ties: storage %d ndup %zu nfill %zu d %zu: %d wrong\n",
                (int)st, ndup, nfill, d, failed);
    }
    CHECK_EQ_INT(failed, 0);
    free(qs);
    free(offs);
    sc_index_close(up);
    sc_index_close(down);
    free(dup);
    free(fill);
}

/* Deleted ids are never served, re-insert works, and compaction (automatic
 * past a quarter dead, and explicit) keeps every id on its own vector. */
static void test_delete(sc_storage st)
{
    const size_t n = 5000, d = 17;
    /* A vector's match with itself: 1 for f32, within 5e-4 for f16/int8. */
    const float self = st == SC_STORAGE_F32 ? 0.9999f : 0.999f;
    float *base = random_vectors(n, d, 42);
    sc_index *ix = open_ix((uint32_t)d, st, 1);
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ_INT(sc_index_add(ix, i * 3 + 1, base + i * d), SC_OK);
    }
    sc_hit hits[SC_INDEX_MAX_K];
    unsigned nh;
    /* Remove every other vector: enough to trigger automatic compaction. */
    for (size_t i = 0; i < n; i += 2) {
        CHECK_EQ_INT(sc_index_remove(ix, i * 3 + 1), SC_OK);
    }
    CHECK_EQ_INT(sc_index_remove(ix, 1), SC_ENOTFOUND);
    CHECK_EQ_INT(sc_index_count(ix), n / 2);
    int served_dead = 0, lost_live = 0;
    for (size_t i = 0; i < n; i += 97) {
        CHECK_EQ_INT(sc_index_search(ix, base + i * d, 1, self, hits, &nh),
                     SC_OK);
        if (i % 2 == 0) {
            served_dead += nh > 0 && hits[0].id == i * 3 + 1;
        } else {
            lost_live += !(nh == 1 && hits[0].id == i * 3 + 1);
        }
    }
    CHECK_EQ_INT(served_dead, 0);
    CHECK_EQ_INT(lost_live, 0);
    /* get() after compaction returns each id's own vector. */
    float out[17];
    int wrong = 0;
    for (size_t i = 1; i < n; i += 2) {
        if (sc_index_get(ix, i * 3 + 1, out) != SC_OK ||
            cosd(out, base + i * d, d) < 0.999) {
            wrong++;
        }
    }
    CHECK_EQ_INT(wrong, 0);
    /* Re-insert a removed id with a different vector; it is found again. */
    CHECK_EQ_INT(sc_index_add(ix, 1, base + 1 * d), SC_OK);
    CHECK_EQ_INT(sc_index_search(ix, base + 1 * d, 2, self, hits, &nh), SC_OK);
    CHECK_EQ_INT(nh, 2); /* id 1 and id 4 now share a vector */
    /* A few more deletes, then an explicit compaction. */
    for (size_t i = 1; i < 200; i += 2) {
        CHECK_EQ_INT(sc_index_remove(ix, i * 3 + 1), SC_OK);
    }
    CHECK_EQ_INT(sc_index_compact(ix), SC_OK);
    CHECK_EQ_INT(sc_index_count(ix), n / 2 - 100 + 1);
    CHECK_EQ_INT(sc_index_search(ix, base + 301 * d, 1, self, hits, &nh),
                 SC_OK);
    CHECK(nh == 1 && hits[0].id == 301 * 3 + 1);
    CHECK_EQ_INT(sc_index_search(ix, base + 101 * d, 1, self, hits, &nh),
                 SC_OK);
    CHECK_EQ_INT(nh, 0);
    sc_index_close(ix);
    free(base);
}

/* A batch answers exactly what the same queries answer one by one: the
 * same ids and the same similarities, bit for bit (the cache batches the
 * lookups that arrive together, and a reply must not depend on that).
 * Row counts that leave rows over after the tiles' groups of four. */
static void test_batch(sc_storage st, size_t nq, size_t n, size_t d)
{
    float *base = random_vectors(n, d, 7);
    float *qs = random_vectors(nq, d, 8);
    /* Half the queries near the last rows, which the tiles' groups of four
     * leave over when n % 4 != 0: their scores are what is compared. */
    for (size_t i = 0; i < nq; i += 2) {
        const float *row = base + (n - 1 - i % 3) * d;
        for (size_t j = 0; j < d; j++) {
            qs[i * d + j] = row[j] + 0.05f * qs[i * d + j];
        }
    }
    sc_index *ix = open_ix((uint32_t)d, st, 1);
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ_INT(sc_index_add(ix, i, base + i * d), SC_OK);
    }
    /* Tombstones must be skipped by the batch path too. */
    for (size_t i = 0; i < n; i += 5) {
        CHECK_EQ_INT(sc_index_remove(ix, i), SC_OK);
    }
    const unsigned k = 8;
    sc_hit *bh = malloc(nq * k * sizeof(sc_hit));
    unsigned *bn = malloc(nq * sizeof(unsigned));
    CHECK_EQ_INT(sc_index_search_batch(ix, qs, nq, k, 0.1f, bh, bn), SC_OK);
    int mismatch = 0;
    for (size_t i = 0; i < nq; i++) {
        sc_hit sh[SC_INDEX_MAX_K];
        unsigned sn;
        CHECK_EQ_INT(sc_index_search(ix, qs + i * d, k, 0.1f, sh, &sn), SC_OK);
        if (sn != bn[i]) {
            mismatch++;
            continue;
        }
        for (unsigned j = 0; j < sn; j++) {
            /* The scalar tier's sgemm too: the rows it keeps are scored
             * again as the single scan scores them. */
            int same = memcmp(&sh[j].similarity, &bh[i * k + j].similarity,
                              sizeof(float)) == 0 &&
                       sh[j].id == bh[i * k + j].id;
            if (!same || bh[i * k + j].id % 5 == 0) {
                mismatch++;
            }
        }
    }
    CHECK_EQ_INT(mismatch, 0);
    free(bh);
    free(bn);
    sc_index_close(ix);
    free(base);
    free(qs);
}

/* What the yield hook does in test_batch_pauses, on the searching thread
 * while the batch has let the index's lock go. */
typedef struct pause_plan {
    sc_index *ix;
    const float *copy;   /* a vector to add copies of (or NULL) */
    uint64_t remove_one; /* at the first pause (UINT64_MAX: none) */
    int compact;         /* at the second pause: enough removals to compact */
    size_t d;
    unsigned calls;
} pause_plan;

static void pause_hook(void *arg)
{
    pause_plan *pp = arg;
    pp->calls++;
    if (pp->calls == 1 && pp->remove_one != UINT64_MAX) {
        CHECK_EQ_INT(sc_index_remove(pp->ix, pp->remove_one), SC_OK);
    }
    if (pp->calls == 1 && pp->copy != NULL) {
        for (uint64_t i = 0; i < 100; i++) {
            CHECK_EQ_INT(sc_index_add(pp->ix, 1000000 + i, pp->copy), SC_OK);
        }
    }
    if (pp->calls == 2 && pp->compact) {
        /* A quarter of the rows dead: the last removal compacts, moving
         * every row after the first one removed. */
        for (uint64_t id = 8192; id < 8192 + 4200; id++) {
            CHECK_EQ_INT(sc_index_remove(pp->ix, id), SC_OK);
        }
    }
}

/* Query i's batch hits are the single search's, on the index as it is
 * now, and none is id gone: a hit the scan had collected and lost to a
 * removal leaves its place to the next live row, as in a scan of the rows
 * live from the batch's start to its end. */
static int pause_mismatches(sc_index *ix, const float *qs, size_t nq, size_t d,
                            unsigned k, const sc_hit *bh, const unsigned *bn,
                            uint64_t gone)
{
    int mismatch = 0;
    for (size_t i = 0; i < nq; i++) {
        sc_hit sh[SC_INDEX_MAX_K];
        unsigned sn;
        CHECK_EQ_INT(sc_index_search(ix, qs + i * d, k, 0.1f, sh, &sn), SC_OK);
        mismatch += bn[i] != sn;
        for (unsigned j = 0; j < sn && j < bn[i]; j++) {
            mismatch += sh[j].id != bh[i * k + j].id ||
                        memcmp(&sh[j].similarity, &bh[i * k + j].similarity,
                               sizeof(float)) != 0 ||
                        bh[i * k + j].id == gone;
        }
    }
    return mismatch;
}

/* A batch lets the index's lock go between blocks of rows, so a writer
 * waits for a block, not the batch (a batch of 64 at 120,000 x 1000 held
 * it 200 ms). Changes made in the pauses: a row removed after the scan
 * collected it is not answered, and the next live row takes its place
 * (the batch starts over; it came out one hit short); rows added and a
 * compaction (the scan starts over) leave the batch answering as single
 * searches do after. */
static void test_batch_pauses(sc_storage st)
{
    const size_t n = 16384, d = 256, nq = 64;
    const unsigned k = 8;
    float *base = random_vectors(n, d, 21);
    float *qs = malloc(nq * d * sizeof(float));
    for (size_t i = 0; i < nq; i++) {
        memcpy(qs + i * d, base + (i * 37 % 8192) * d, d * sizeof(float));
    }
    sc_index *ix = open_ix((uint32_t)d, st, 1);
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ_INT(sc_index_add(ix, i, base + i * d), SC_OK);
    }
    sc_hit *bh = malloc(nq * k * sizeof(sc_hit));
    unsigned *bn = malloc(nq * sizeof(unsigned));
    /* Query 0 is row 0, in the first block: scored, then removed. */
    pause_plan pp = {ix, NULL, 0, 0, d, 0};
    sc_index_set_yield_hook(pause_hook, &pp);
    CHECK_EQ_INT(sc_index_search_batch(ix, qs, nq, k, 0.1f, bh, bn), SC_OK);
    sc_index_set_yield_hook(NULL, NULL);
    CHECK(pp.calls >= 2);
    CHECK(bn[0] == k && bh[0].id != 0);
    CHECK_EQ_INT(pause_mismatches(ix, qs, nq, d, k, bh, bn, 0), 0);
    /* 100 copies of query 1 added, then a compaction: the batch starts
     * over and finds the copies, after row 37 (query 1) itself, of the
     * smaller id. */
    pause_plan pc = {ix, qs + d, UINT64_MAX, 1, d, 0};
    sc_index_set_yield_hook(pause_hook, &pc);
    CHECK_EQ_INT(sc_index_search_batch(ix, qs, nq, k, 0.1f, bh, bn), SC_OK);
    sc_index_set_yield_hook(NULL, NULL);
    CHECK(pc.calls >= 2);
    CHECK(sc_index_count(ix) == n - 1 + 100 - 4200);
    CHECK(bn[1] == k && bh[k].id == 37 && bh[k + 1].id >= 1000000 &&
          bh[k + 1].similarity >= 0.999f);
    CHECK_EQ_INT(pause_mismatches(ix, qs, nq, d, k, bh, bn, UINT64_MAX), 0);
    free(bh);
    free(bn);
    sc_index_close(ix);
    free(base);
    free(qs);
}

/* A single search lets the lock go between blocks of rows too (one at
 * 120,000 x 1000 held it 50 ms): blocks of 4 MiB of rows, 16 of them here
 * at f32, 4 at int8. The same changes in its pauses as test_batch_pauses
 * makes, on one thread's scan and on one split across 4 (each pause then
 * comes after a block of each share's rows): a row removed after the scan
 * collected it is not answered and the next live row takes its place;
 * rows added and a compaction (the scan starts over, and sees the rows
 * added) leave it answering as a search does after; rows added without a
 * start over are not seen. */
static void test_single_pauses(sc_storage st, uint32_t threads, size_t n)
{
    const size_t d = 1024;
    const unsigned k = 8;
    float *base = random_vectors(n, d, 23);
    sc_index *ix = open_ix((uint32_t)d, st, threads);
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ_INT(sc_index_add(ix, i, base + i * d), SC_OK);
    }
    sc_hit h[SC_INDEX_MAX_K];
    unsigned nh = 0;
    /* Row 0 is in the first block: scored, then removed. */
    pause_plan pp = {ix, NULL, 0, 0, d, 0};
    sc_index_set_yield_hook(pause_hook, &pp);
    CHECK_EQ_INT(sc_index_search(ix, base, k, 0.1f, h, &nh), SC_OK);
    sc_index_set_yield_hook(NULL, NULL);
    CHECK(pp.calls >= 3);
    CHECK(nh == k && h[0].id != 0);
    CHECK_EQ_INT(pause_mismatches(ix, base, 1, d, k, h, &nh, 0), 0);
    /* 100 copies of row 37 added in the first pause: not seen. */
    const float *q = base + 37 * d;
    pause_plan pa = {ix, q, UINT64_MAX, 0, d, 0};
    sc_index_set_yield_hook(pause_hook, &pa);
    CHECK_EQ_INT(sc_index_search(ix, q, k, 0.1f, h, &nh), SC_OK);
    sc_index_set_yield_hook(NULL, NULL);
    CHECK(pa.calls >= 3);
    CHECK(nh >= 1 && h[0].id == 37);
    for (unsigned j = 0; j < nh; j++) {
        CHECK(h[j].id < 1000000);
    }
    for (uint64_t i = 0; i < 100 && pa.calls > 0; i++) {
        CHECK_EQ_INT(sc_index_remove(ix, 1000000 + i), SC_OK);
    }
    /* Added again in the first pause, then a compaction in the second:
     * the scan starts over and finds the copies, after row 37 itself. */
    pause_plan pc = {ix, q, UINT64_MAX, 1, d, 0};
    sc_index_set_yield_hook(pause_hook, &pc);
    CHECK_EQ_INT(sc_index_search(ix, q, k, 0.1f, h, &nh), SC_OK);
    sc_index_set_yield_hook(NULL, NULL);
    CHECK(pc.calls >= 3);
    CHECK(sc_index_count(ix) == n - 1 + 100 - 4200);
    CHECK(nh == k && h[0].id == 37 && h[1].id >= 1000000 &&
          h[1].similarity >= 0.999f);
    CHECK_EQ_INT(pause_mismatches(ix, q, 1, d, k, h, &nh, UINT64_MAX), 0);
    sc_index_close(ix);
    free(base);
}

/* A scan split across threads finds what one thread finds. */
static void test_split(sc_storage st)
{
    const size_t n = 24000, d = 384;
    float *base = random_vectors(n, d, 99);
    sc_index *one = open_ix((uint32_t)d, st, 1);
    sc_index *four = open_ix((uint32_t)d, st, 4);
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ_INT(sc_index_add(one, i, base + i * d), SC_OK);
        CHECK_EQ_INT(sc_index_add(four, i, base + i * d), SC_OK);
    }
    int mismatch = 0;
    for (size_t qi = 0; qi < 10; qi++) {
        sc_hit a[16], b[16];
        unsigned na, nb;
        const float *q = base + (qi * 2311 % n) * d;
        CHECK_EQ_INT(sc_index_search(one, q, 16, -1.0f, a, &na), SC_OK);
        CHECK_EQ_INT(sc_index_search(four, q, 16, -1.0f, b, &nb), SC_OK);
        mismatch += na != nb;
        for (unsigned i = 0; i < na && i < nb; i++) {
            mismatch +=
                a[i].id != b[i].id || a[i].similarity != b[i].similarity;
        }
    }
    CHECK_EQ_INT(mismatch, 0);
    sc_index_close(one);
    sc_index_close(four);
    free(base);
}

/* Concurrency: searchers run while a writer adds and removes. Stable ids
 * (never removed) must always be found; nothing may crash or race (the
 * sanitizer build runs this too). */
typedef struct conc {
    sc_index *ix;
    const float *base;
    size_t d, nstable;
    int failures;
    volatile int stop;
} conc;

static void *searcher(void *arg)
{
    conc *c = arg;
    int fails = 0;
    for (size_t it = 0; it < 400; it++) {
        size_t i = (it * 131) % c->nstable;
        sc_hit h[4];
        unsigned nh;
        if (sc_index_search(c->ix, c->base + i * c->d, 4, 0.999f, h, &nh) !=
                SC_OK ||
            nh < 1 || h[0].id != i) {
            fails++;
        }
    }
    __atomic_add_fetch(&c->failures, fails, __ATOMIC_RELAXED);
    return NULL;
}

static void *writer(void *arg)
{
    conc *c = arg;
    uint64_t s = 5;
    float v[64];
    for (uint64_t it = 0; it < 3000; it++) {
        for (size_t j = 0; j < c->d; j++) {
            v[j] = test_randf(&s);
        }
        uint64_t id = 1000000 + it;
        if (sc_index_add(c->ix, id, v) != SC_OK) {
            __atomic_add_fetch(&c->failures, 1, __ATOMIC_RELAXED);
        }
        if (it >= 10 && sc_index_remove(c->ix, id - 10) != SC_OK) {
            __atomic_add_fetch(&c->failures, 1, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

static void test_concurrent(sc_storage st)
{
    const size_t nstable = 2000, d = 64;
    float *base = random_vectors(nstable, d, 1234);
    sc_index *ix = open_ix((uint32_t)d, st, 1);
    for (size_t i = 0; i < nstable; i++) {
        CHECK_EQ_INT(sc_index_add(ix, i, base + i * d), SC_OK);
    }
    conc c = {ix, base, d, nstable, 0, 0};
    pthread_t t[5];
    for (int i = 0; i < 4; i++) {
        pthread_create(&t[i], NULL, searcher, &c);
    }
    pthread_create(&t[4], NULL, writer, &c);
    for (int i = 0; i < 5; i++) {
        pthread_join(t[i], NULL);
    }
    CHECK_EQ_INT(c.failures, 0);
    CHECK_EQ_INT(sc_index_count(ix), nstable + 10);
    sc_index_close(ix);
    free(base);
}

/* sc_index_vector_bytes is what sc_index_memory counts a vector: exactly,
 * with every slot in use (64 vectors fill the first allocation, and the id
 * map is then at its fullest load); int8 counts its f16 re-rank copy and
 * scale too. The cache's byte caps count this. */
static void test_vector_bytes(sc_storage st, uint32_t dim)
{
    sc_index_params p;
    sc_index_params_init(&p);
    p.dim = dim;
    p.storage = st;
    size_t vb = sc_index_vector_bytes(&p);
    size_t width = st == SC_STORAGE_F32 ? 4 : st == SC_STORAGE_F16 ? 2 : 1;
    CHECK(vb >= dim * width + sizeof(uint64_t));
    if (st == SC_STORAGE_I8) {
        CHECK(vb >= 3 * (size_t)dim + sizeof(float)); /* codes + f16 copy */
    }
    sc_index *ix = open_ix(dim, st, 1);
    float *v = random_vectors(64, dim, 31 + dim);
    for (size_t i = 0; i < 64; i++) {
        CHECK_EQ_INT(sc_index_add(ix, i, v + i * dim), SC_OK);
    }
    CHECK_EQ_INT(sc_index_memory(ix), 64 * vb);
    sc_index_close(ix);
    free(v);
    /* Nothing to count for what no index opens. */
    p.dim = 0;
    CHECK_EQ_INT(sc_index_vector_bytes(&p), 0);
    p.dim = dim;
    p.backend = "nope";
    CHECK_EQ_INT(sc_index_vector_bytes(&p), 0);
    CHECK_EQ_INT(sc_index_vector_bytes(NULL), 0);
}

/* id of base row i in test_shrink: the rows kept, 0, 200, 400..., keep
 * theirs; the others come back under new ids when the index grows again. */
static uint64_t shrink_id(size_t i, int again)
{
    return i % 200 == 0 || !again ? i + 1 : i + 1000001;
}

/* Every kept row (and, when again, every 97th row) is found by its own
 * vector under its id and get() gives it back; every 7th removed id is
 * gone from both. (Sampled: the scalar tier under ASan is slow.) */
static void shrink_check(sc_index *ix, const float *base, size_t n, size_t d,
                         int again)
{
    int lost = 0, wrong = 0, ghosts = 0;
    float *out = malloc(d * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        int live = (again && i % 97 == 0) || i % 200 == 0;
        if (!live && (again || i % 7 != 0)) {
            continue;
        }
        sc_hit hits[1];
        unsigned nh = 0;
        CHECK_EQ_INT(sc_index_search(ix, base + i * d, 1, 0.99f, hits, &nh),
                     SC_OK);
        if (live) {
            lost += !(nh == 1 && hits[0].id == shrink_id(i, again));
            wrong += sc_index_get(ix, shrink_id(i, again), out) != SC_OK ||
                     cosd(out, base + i * d, d) < 0.999;
        } else {
            ghosts += nh != 0 ||
                      sc_index_get(ix, shrink_id(i, 0), out) != SC_ENOTFOUND;
        }
    }
    CHECK_EQ_INT(lost, 0);
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(ghosts, 0);
    free(out);
}

/* An index of storage st holding n random rows of dimension d (seed),
 * ids shrink_id(i, 0): the rows in *base (the caller frees them), a
 * vector's bytes as sc_index_vector_bytes counts them in *vb. */
static sc_index *filled_ix(sc_storage st, size_t n, size_t d, uint64_t seed,
                           float **base, size_t *vb)
{
    sc_index_params p;
    sc_index_params_init(&p);
    p.dim = (uint32_t)d;
    p.storage = st;
    *vb = sc_index_vector_bytes(&p);
    *base = random_vectors(n, d, seed);
    sc_index *ix = open_ix((uint32_t)d, st, 1);
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ_INT(sc_index_add(ix, shrink_id(i, 0), *base + i * d), SC_OK);
    }
    return ix;
}

/* Many indexes of one vector each (the cache's small scopes) cost what
 * sc_index_vector_bytes and sc_index_fixed_bytes count for them, under
 * 1 KiB more than the vector, not a first allocation of 64 slots and a
 * page each: the heap they take within 1.25 times that, each (VmRSS
 * within 2 times). */
static void test_small_many(sc_storage st, uint32_t d)
{
#if HEAP_MEASURED
    enum { N = 4000 };
    sc_index_params p;
    sc_index_params_init(&p);
    p.dim = d;
    p.storage = st;
    const size_t each = sc_index_vector_bytes(&p) + sc_index_fixed_bytes(&p);
    /* Its structures: some hundreds of bytes, not a page. */
    CHECK(sc_index_fixed_bytes(&p) > sc_index_heap_bytes(sizeof(void *)));
    CHECK(sc_index_fixed_bytes(&p) <= 1024);
    float *v = random_vectors(1, d, 51 + d);
    sc_index **ix = malloc(N * sizeof(*ix));
    struct mallinfo2 m0 = mallinfo2();
    const long rss0 = rss_kb();
    for (size_t i = 0; i < N; i++) {
        ix[i] = open_ix(d, st, 1);
        CHECK_EQ_INT(sc_index_add(ix[i], i, v), SC_OK);
    }
    struct mallinfo2 m1 = mallinfo2();
    const long rss1 = rss_kb();
    double heap =
               (double)(m1.uordblks + m1.hblkhd - m0.uordblks - m0.hblkhd) / N,
           rss = (double)(rss1 - rss0) * 1024 / N;
    printf("test_small_many %s dim %u: counted %zu, heap %.0f, VmRSS %.0f "
           "bytes an index\n",
           sc_storage_name(st), d, each, heap, rss);
    CHECK(heap <= 1.25 * (double)each);
    /* Pages also hold what earlier tests freed and malloc kept: VmRSS
     * gets a looser bound than the heap (the old first allocations took
     * 7 to 14 times the count). */
    CHECK(rss0 == 0 || rss <= 2 * (double)each);
    for (size_t i = 0; i < N; i++) {
        sc_index_close(ix[i]);
    }
    free(ix);
    free(v);
#else
    (void)st;
    (void)d;
#endif
}

/* An index that grew to n rows and fell to n / 200 gives its memory back
 * on compaction: slots and id map shrink to what 2x the live rows need
 * (a power of two, at least 64), the pages go back to the OS (VmRSS
 * falls), every kept id still answers, and the index grows again as
 * before. A second compaction at once changes nothing (no thrash). */
static void test_shrink(sc_storage st)
{
    const size_t n = 20000, d = 384;
    size_t vb;
    float *base;
    sc_index *ix = filled_ix(st, n, d, 41, &base, &vb);
    const size_t full = sc_index_memory(ix);
    CHECK(full >= n * vb);
    const long rss_full = rss_kb();
    for (size_t i = 0; i < n; i++) {
        if (i % 200 != 0) {
            CHECK_EQ_INT(sc_index_remove(ix, shrink_id(i, 0)), SC_OK);
        }
    }
    CHECK_EQ_INT(sc_index_compact(ix), SC_OK);
    CHECK_EQ_INT(sc_index_count(ix), n / 200);
    /* 100 live rows: 256 slots and an id map of 512, i.e. full at 256. */
    CHECK_EQ_INT(sc_index_memory(ix), 256 * vb);
    const long rss_small = rss_kb();
    /* The rows alone were n * d bytes or more at every storage width. */
    CHECK(rss_full == 0 || rss_full - rss_small >= (long)(n * d / 2 / 1024));
    printf("test_shrink %s: memory %zu -> %zu bytes, VmRSS %ld -> %ld KiB\n",
           sc_storage_name(st), full, sc_index_memory(ix), rss_full, rss_small);
    CHECK_EQ_INT(sc_index_compact(ix), SC_OK);
    CHECK_EQ_INT(sc_index_memory(ix), 256 * vb);
    shrink_check(ix, base, n, d, 0);

    /* Grow again: the removed rows come back under new ids. */
    for (size_t i = 0; i < n; i++) {
        if (i % 200 != 0) {
            CHECK_EQ_INT(sc_index_add(ix, shrink_id(i, 1), base + i * d),
                         SC_OK);
        }
    }
    CHECK_EQ_INT(sc_index_count(ix), n);
    CHECK(sc_index_memory(ix) >= n * vb);
    shrink_check(ix, base, n, d, 1);
    for (size_t i = 0; i < n; i++) {
        if (i % 200 != 0) {
            CHECK_EQ_INT(sc_index_remove(ix, shrink_id(i, 1)), SC_OK);
        }
    }
    CHECK_EQ_INT(sc_index_compact(ix), SC_OK);
    CHECK_EQ_INT(sc_index_memory(ix), 256 * vb);
    shrink_check(ix, base, n, d, 0);
    sc_index_close(ix);
    free(base);
}

/* A small index compacts by itself too: one that grew to 1000 rows and fell
 * to 100 by deletes alone (no sc_index_compact) holds 256 slots, not its
 * peak 1024 with 900 dead rows whose bytes no cap counts. */
static void test_small_autocompact(sc_storage st)
{
    const size_t n = 1000, d = 64;
    size_t vb;
    float *base;
    sc_index *ix = filled_ix(st, n, d, 43, &base, &vb);
    CHECK_EQ_INT(sc_index_memory(ix), 1024 * vb);
    for (size_t i = 0; i < n; i++) {
        if (i % 10 != 0) {
            CHECK_EQ_INT(sc_index_remove(ix, shrink_id(i, 0)), SC_OK);
        }
    }
    CHECK_EQ_INT(sc_index_count(ix), n / 10);
    CHECK_EQ_INT(sc_index_memory(ix), 256 * vb);
    float *out = malloc(d * sizeof(float));
    size_t kept = 0;
    for (size_t i = 0; i < n; i += 10) {
        kept += sc_index_get(ix, shrink_id(i, 0), out) == SC_OK;
    }
    CHECK_EQ_INT(kept, n / 10);
    free(out);
    sc_index_close(ix);
    free(base);
}

/* Searches while deletes compact and shrink the index under them: a
 * writer fills the index with transient rows (the f32 scan is then large
 * enough to split across threads), deletes them all, so that automatic
 * compactions move rows and shrink() mremaps the regions smaller, and does
 * it again. Searchers (single, batch) and get() run throughout; the stable
 * rows must answer every time, and nothing may race (the TSan and ASan
 * builds run this): compaction holds the index's write lock, searches its
 * read lock, so no scan runs on a region being moved or unmapped. */
typedef struct shrinker {
    sc_index *ix;
    const float *base;
    size_t d, nstable;
    int failures;
    int stop;      /* atomically */
    long searches; /* atomically: done while the writer ran */
} shrinker;

static void *shrink_searcher(void *arg)
{
    shrinker *c = arg;
    int fails = 0;
    float *out = malloc(c->d * sizeof(float));
    for (size_t it = 0; !__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE); it++) {
        size_t i = (it * 131) % c->nstable;
        const float *q = c->base + i * c->d;
        sc_hit h[16];
        unsigned nh[4] = {0};
        if (it % 8 == 7) {
            /* A batch of 4 stable rows: each finds itself. */
            size_t i0 = i > c->nstable - 4 ? c->nstable - 4 : i;
            if (sc_index_search_batch(c->ix, c->base + i0 * c->d, 4, 4, 0.999f,
                                      h, nh) != SC_OK) {
                fails++;
                continue;
            }
            for (unsigned b = 0; b < 4; b++) {
                fails += nh[b] < 1 || h[b * 4].id != i0 + b;
            }
        } else if (sc_index_search(c->ix, q, 4, 0.999f, h, nh) != SC_OK ||
                   nh[0] < 1 || h[0].id != i) {
            fails++;
        }
        if (it % 3 == 0) {
            fails += sc_index_get(c->ix, i, out) != SC_OK ||
                     cosd(out, q, c->d) < 0.999;
        }
        __atomic_add_fetch(&c->searches, 1, __ATOMIC_RELAXED);
    }
    free(out);
    __atomic_add_fetch(&c->failures, fails, __ATOMIC_RELAXED);
    return NULL;
}

static void test_concurrent_shrink(sc_storage st)
{
    const size_t nstable = 512, ntrans = 24000, d = 128;
    float *base = random_vectors(nstable, d, 4321);
    float *trans = random_vectors(1024, d, 8765);
    sc_index *ix = open_ix((uint32_t)d, st, 4);
    for (size_t i = 0; i < nstable; i++) {
        CHECK_EQ_INT(sc_index_add(ix, i, base + i * d), SC_OK);
    }
    const size_t small = sc_index_memory(ix);
    shrinker c = {ix, base, d, nstable, 0, 0, 0};
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(pthread_create(&t[i], NULL, shrink_searcher, &c), 0);
    }
    int wfails = 0;
    size_t peak = 0;
    for (uint64_t round = 0; round < 2; round++) {
        uint64_t id0 = 1000000 + round * 100000;
        for (size_t j = 0; j < ntrans; j++) {
            wfails +=
                sc_index_add(ix, id0 + j, trans + (j % 1024) * d) != SC_OK;
        }
        size_t m = sc_index_memory(ix);
        peak = m > peak ? m : peak;
        /* A delete compacts once a quarter of the slots are dead; several
         * of those compactions also shrink the regions (the live rows
         * then fill a quarter of the slots or less). */
        for (size_t j = 0; j < ntrans; j++) {
            wfails += sc_index_remove(ix, id0 + j) != SC_OK;
        }
    }
    CHECK_EQ_INT(sc_index_compact(ix), SC_OK);
    __atomic_store_n(&c.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
    }
    CHECK_EQ_INT(wfails, 0);
    CHECK_EQ_INT(c.failures, 0);
    CHECK(c.searches > 0);
    CHECK_EQ_INT(sc_index_count(ix), nstable);
    /* Shrunk back: the peak was many times what is left. */
    CHECK(peak >= ntrans * sc_index_memory(ix) / nstable / 4);
    CHECK(sc_index_memory(ix) <= 2 * small);
    printf("test_concurrent_shrink %s: %ld searches, memory %zu -> %zu\n",
           sc_storage_name(st), c.searches, peak, sc_index_memory(ix));
    sc_index_close(ix);
    free(trans);
    free(base);
}

int main(int argc, char **argv)
{
    const char *want = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--tier") == 0 && i + 1 < argc) {
            want = argv[++i];
        }
    }
    const sc_simd_kernels *k = sc_simd_active();
    if (want != NULL) {
        int t = sc_simd_tier_parse(want);
        if (t < 0) {
            fprintf(stderr, "test_index: unknown tier %s\n", want);
            return 2;
        }
        if ((int)k->tier != t) {
            printf("test_index: tier %s skipped (this CPU runs %s)\n", want,
                   k->name);
            return 77;
        }
    }
    printf("test_index: kernels %s\n", k->name);

    /* First: the heap has not yet grown, so VmRSS shows what they take. */
    const sc_storage all[] = {SC_STORAGE_F32, SC_STORAGE_F16, SC_STORAGE_I8};
    for (int s = 0; s < 3; s++) {
        test_small_many(all[s], 16);
        test_small_many(all[s], 100);
        test_small_many(all[s], 384);
    }
    test_validation();
    test_self_at_one();
    test_self_among_near_duplicates();
    const sc_storage sts[] = {SC_STORAGE_F32, SC_STORAGE_F16, SC_STORAGE_I8};
    const size_t dims[] = {1, 2, 7, 8, 15, 17, 33, 100, 384};
    for (int s = 0; s < 3; s++) {
        test_threshold(sts[s]);
        test_all_equal(sts[s]);
        test_ties_by_id(sts[s], 20, 0, 17, 1);
        test_ties_by_id(sts[s], 24, 50, 17, 1);
        test_ties_by_id(sts[s], 20, 300, 64, 1);
        test_ties_by_id(sts[s], 100, 5000, 33, 1);   /* past int8's rerank */
        test_ties_by_id(sts[s], 200, 24000, 384, 4); /* split scans */
        for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
            test_against_bruteforce(sts[s], 0, dims[di], 1);
            test_against_bruteforce(sts[s], 1, dims[di], 2);
            test_against_bruteforce(sts[s], 300, dims[di], 3 + di);
        }
        test_against_bruteforce(sts[s], 700, 1536, 77);
        test_delete(sts[s]);
        test_batch(sts[s], 1, 3000, 65);
        test_batch(sts[s], 3, 3000, 65);
        test_batch(sts[s], 64, 3000, 65);
        test_batch(sts[s], 5, 3003, 100);
        test_batch(sts[s], 7, 1001, 17);
        test_batch(sts[s], 8, 1027, 384);
        test_batch_pauses(sts[s]);
        test_single_pauses(sts[s], 1, 16384);
        test_split(sts[s]);
        test_concurrent(sts[s]);
        test_vector_bytes(sts[s], 1);
        test_vector_bytes(sts[s], 384);
        test_vector_bytes(sts[s], 1000);
        test_shrink(sts[s]);
        test_small_autocompact(sts[s]);
        test_concurrent_shrink(sts[s]);
    }
    /* Split: a block is 4 MiB of every share's rows (f32: 4 per share).
     * 16385 rows are 4 shares of 4097, the last 4094 long: its last hold
     * ends 3 rows past the rows there were, where the copies go. */
    test_single_pauses(SC_STORAGE_F32, 4, 16384);
    test_single_pauses(SC_STORAGE_F32, 4, 16385);
    return test_summary("test_index");
}
