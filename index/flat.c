/* flat.c - the flat backend: every search scans every stored vector with the
 * SIMD kernels of index/simd, f32, f16 or int8 rows. Quantised int8 scans
 * pick candidates that are then re-scored from an f16 copy, so answers match
 * exact f32 search in practice. Deletes leave tombstones; compaction moves
 * rows down later, never changes ids, and gives memory back to the OS once
 * few rows are left. Batches of f32 queries go through OpenBLAS sgemm. */
#define _GNU_SOURCE
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "index/cap.h"
#include "index/idmap.h"
#include "index/index.h"
#include "index/pass.h"
#include "index/simd/simd.h"

#define BLOCK          256  /* rows scored per kernel call */
#define GEMM_ROWS      4096 /* rows per sgemm block in batch search */
#define TILE_ROWS      256  /* rows per SIMD tile block: stays in L2 */
#define DEFAULT_RERANK 64   /* int8 candidates re-scored per query */
#define MAX_RERANK     1024
#define COMPACT_DEAD_MIN 64         /* fewest dead rows a delete compacts */
#define I8_MARGIN      0.05f      /* int8 score error allowed below threshold */
#define SPLIT_BYTES    (8u << 20) /* scans smaller than this stay on one thread \
                                   */
#define SPLIT_MIN_ROWS 4096
#define MIN_CAP        1 /* slots of the first allocation, and the fewest */
/* Row arrays (codes, rr) smaller than this are malloc'd, 64-byte aligned;
 * from it on they are page-aligned regions that grow by mremap. A small
 * index (a scope of a few entries) then takes no whole page per array. */
#define REGION_MIN (16u << 10)

typedef struct flat {
    uint32_t dim;
    sc_storage storage;
    uint32_t rerank;
    uint32_t threads;
    const sc_simd_kernels *kern;

    size_t stride;   /* elements per stored row, padded to 64 bytes */
    size_t esize;    /* bytes per element of codes */
    size_t rrstride; /* int8: f16 elements per re-rank row */

    size_t n;     /* slots in use, live or dead */
    size_t cap;   /* slots allocated */
    size_t ndead; /* tombstoned slots */
    uint64_t moves; /* compactions so far: rows moved to other slots */

    unsigned char *codes; /* cap * stride * esize bytes (rows_resize) */
    uint16_t *rr;         /* int8: f16 copy of each row for re-ranking */
    size_t codes_len;     /* bytes held at codes: at least its cap rows */
    size_t rr_len;        /* bytes held at rr (0: none) */
    float *scales;        /* int8: per-row dequantisation factor */
    uint64_t *ids;        /* slot -> id */
    uint8_t *dead;        /* slot -> tombstone flag */
    sc_idmap map;         /* id -> slot */
} flat;

/* A bounded min-heap of (score, slot): keeps the best `cap` seen. Of equal
 * scores the smaller id is the better (ids[slot]), so which rows of a run of
 * ties make the cut does not depend on their slots, which a restart
 * changes. */
typedef struct cand {
    float s;
    uint32_t slot;
} cand;

typedef struct heap {
    cand *a;
    unsigned n;
    unsigned cap;
    const uint64_t *ids; /* slot -> id, for ties */
} heap;

/* Where a scan puts what it finds. For int8, `top` follows the k best
 * approximate scores, and a row is only a candidate within I8_MARGIN of the
 * k-th of them: rows further down cannot be in the exact top k, and most
 * rows of a scan never reach the heap at all. */
typedef struct collector {
    heap cand; /* what finish() returns (f32, f16) or re-scores (int8) */
    heap top;  /* int8 only */
    int near;  /* int8 only: apply the margin rule */
} collector;

/* What a scan needs of one query, prepared once. */
typedef struct prepq {
    const float *q; /* unit query */
    int8_t *q8;     /* int8: quantised query (stride elements) */
    float qscale;   /* int8: dequantisation factor of q8 */
    float floor;    /* minimum approximate score admitted */
} prepq;

/* ---- growable page-aligned regions ---------------------------------- */

static void *region_resize(void *p, size_t old_bytes, size_t new_bytes)
{
    if (new_bytes == 0) {
        new_bytes = 1;
    }
    void *r;
    if (p == NULL) {
        r = mmap(NULL, new_bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    } else {
        /* mremap moves pages instead of copying bytes: growing a 6 GB
         * index does not need 12 GB on the way. */
        /* A region of 0 bytes is mapped as 1 (above). */
        r = mremap(p, old_bytes ? old_bytes : 1, new_bytes, MREMAP_MAYMOVE);
    }
    if (r == MAP_FAILED) {
        return NULL;
    }
    if (new_bytes >= (2u << 20)) {
        /* Huge pages: a full scan then walks 512x fewer page-table entries
         * (a hint only; the kernel may refuse it). */
        (void)madvise(r, new_bytes, MADV_HUGEPAGE);
    }
    return r;
}

static void region_free(void *p, size_t bytes)
{
    if (p != NULL) {
        munmap(p, bytes ? bytes : 1);
    }
}

static size_t round_up(size_t x, size_t m)
{
    return (x + m - 1) / m * m;
}

/* Row arrays: malloc'd below REGION_MIN bytes, regions from there. The
 * kind follows from the size alone, so the length held says how to resize
 * or free one. Contents up to the smaller size are kept; NULL: out of
 * memory, p unchanged. */
static void *rows_resize(void *p, size_t old_bytes, size_t new_bytes)
{
    int was_region = p != NULL && old_bytes >= REGION_MIN;
    int is_region = new_bytes >= REGION_MIN;
    if (was_region && is_region) {
        return region_resize(p, old_bytes, new_bytes);
    }
    void *r = is_region ? region_resize(NULL, 0, new_bytes)
                        : aligned_alloc(64, round_up(new_bytes, 64));
    if (r == NULL) {
        return NULL;
    }
    if (p != NULL) {
        memcpy(r, p, old_bytes < new_bytes ? old_bytes : new_bytes);
        if (was_region) {
            region_free(p, old_bytes);
        } else {
            free(p);
        }
    }
    return r;
}

static void rows_free(void *p, size_t bytes)
{
    if (bytes >= REGION_MIN) {
        region_free(p, bytes);
    } else {
        free(p);
    }
}

/* What a row array of bytes takes: a malloc chunk (aligned_alloc may
 * leave up to 64 bytes in front), or whole pages. */
static size_t rows_held(size_t bytes)
{
    if (bytes == 0) {
        return 0;
    }
    if (bytes >= REGION_MIN) {
        return round_up(bytes, (size_t)sysconf(_SC_PAGESIZE));
    }
    return sc_index_heap_bytes(round_up(bytes, 64) + 64);
}

static size_t codes_bytes(const flat *f, size_t rows)
{
    return rows * f->stride * f->esize;
}

static size_t rr_bytes(const flat *f, size_t rows)
{
    return f->storage == SC_STORAGE_I8 ? rows * f->rrstride * 2 : 0;
}

/* ---- heap ----------------------------------------------------------- */

/* Whether (s, slot) ranks below c: a lower score, or the same score and a
 * larger id. The ids are read only at equal scores. */
static int worse(const heap *h, float s, uint32_t slot, const cand *c)
{
    return s < c->s || (s == c->s && h->ids[slot] > h->ids[c->slot]);
}

static void heap_push(heap *h, float s, uint32_t slot)
{
    cand c = {s, slot};
    if (h->n < h->cap) {
        unsigned i = h->n++;
        while (i > 0) {
            unsigned p = (i - 1) / 2;
            if (!worse(h, s, slot, &h->a[p])) {
                break;
            }
            h->a[i] = h->a[p];
            i = p;
        }
        h->a[i] = c;
        return;
    }
    if (!worse(h, h->a[0].s, h->a[0].slot, &c)) {
        return;
    }
    unsigned i = 0;
    for (;;) {
        unsigned l = 2 * i + 1;
        if (l >= h->n) {
            break;
        }
        unsigned m = l;
        if (l + 1 < h->n &&
            worse(h, h->a[l + 1].s, h->a[l + 1].slot, &h->a[l])) {
            m = l + 1;
        }
        if (!worse(h, h->a[m].s, h->a[m].slot, &c)) {
            break;
        }
        h->a[i] = h->a[m];
        i = m;
    }
    h->a[i] = c;
}

/* Lowest score the heap would still take. */
static float heap_bar(const heap *h, float floor)
{
    if (h->n < h->cap) {
        return floor;
    }
    return h->a[0].s > floor ? h->a[0].s : floor;
}

/* Best first: higher scores, then smaller ids (ids: slot -> id). */
static int cand_cmp(const void *x, const void *y, void *ids)
{
    const cand *a = x;
    const cand *b = y;
    if (a->s != b->s) {
        return a->s > b->s ? -1 : 1;
    }
    uint64_t ia = ((const uint64_t *)ids)[a->slot];
    uint64_t ib = ((const uint64_t *)ids)[b->slot];
    return (ia > ib) - (ia < ib);
}

/* ---- open / close --------------------------------------------------- */

static void flat_free(flat *f)
{
    rows_free(f->codes, f->codes_len);
    rows_free(f->rr, f->rr_len);
    free(f->scales);
    free(f->ids);
    free(f->dead);
    sc_idmap_fini(&f->map);
    free(f);
}

static void blas_one_thread(void)
{
    /* sgemm runs inside a request thread (scalar tier only): OpenBLAS's own
     * pool would only spin against the server's workers. */
    openblas_set_num_threads(1);
}

/* The row layout for p: element size, row stride (elements, padded to 64
 * bytes) and, for int8, the stride of the f16 re-rank rows. */
static void layout(const sc_index_params *p, size_t *esize, size_t *stride,
                   size_t *rrstride)
{
    *esize = p->storage == SC_STORAGE_F32   ? 4
             : p->storage == SC_STORAGE_F16 ? 2
                                            : 1;
    *stride = round_up(p->dim, 64 / *esize);
    *rrstride = round_up(p->dim, 32);
}

/* What one live vector costs, as flat_memory counts it with every slot and
 * the id map full: the row, for int8 also its f16 re-rank row and scale,
 * the id, the tombstone flag and the id map's slots. */
static size_t flat_vector_bytes(const sc_index_params *p)
{
    size_t esize, stride, rrstride;
    layout(p, &esize, &stride, &rrstride);
    size_t b = stride * esize + sizeof(uint64_t) + 1 +
               SC_IDMAP_SLOTS_PER_ID * SC_IDMAP_SLOT_BYTES;
    if (p->storage == SC_STORAGE_I8) {
        b += rrstride * sizeof(uint16_t) + sizeof(float);
    }
    return b;
}

static sc_err flat_open(const sc_index_params *p, void **state)
{
    static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
    pthread_once(&blas_once, blas_one_thread);
    flat *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        return SC_ENOMEM;
    }
    f->dim = p->dim;
    f->storage = p->storage;
    f->rerank = p->rerank ? p->rerank : DEFAULT_RERANK;
    if (f->rerank > MAX_RERANK) {
        f->rerank = MAX_RERANK;
    }
    f->threads = p->threads ? p->threads : 1;
    f->kern = sc_simd_active();
    layout(p, &f->esize, &f->stride, &f->rrstride);
    sc_idmap_init(&f->map);
    *state = f;
    return SC_OK;
}

static void flat_close(void *state)
{
    if (state != NULL) {
        flat_free(state);
    }
}

/* ---- add / remove / get --------------------------------------------- */

static sc_err grow(flat *f)
{
    size_t ncap = f->cap ? f->cap * 2 : MIN_CAP;
    if (ncap > UINT32_MAX) {
        return SC_EFULL;
    }
    uint64_t *ids = realloc(f->ids, ncap * sizeof(*ids));
    if (ids == NULL) {
        return SC_ENOMEM;
    }
    f->ids = ids;
    uint8_t *dead = realloc(f->dead, ncap);
    if (dead == NULL) {
        return SC_ENOMEM;
    }
    f->dead = dead;
    if (f->storage == SC_STORAGE_I8) {
        float *sc = realloc(f->scales, ncap * sizeof(*sc));
        if (sc == NULL) {
            return SC_ENOMEM;
        }
        f->scales = sc;
        uint16_t *rr = rows_resize(f->rr, f->rr_len, rr_bytes(f, ncap));
        if (rr == NULL) {
            return SC_ENOMEM;
        }
        f->rr = rr;
        f->rr_len = rr_bytes(f, ncap);
    }
    /* codes last: cap only changes once every array has room. */
    unsigned char *codes =
        rows_resize(f->codes, f->codes_len, codes_bytes(f, ncap));
    if (codes == NULL) {
        if (f->storage == SC_STORAGE_I8) {
            /* Give rr's new half back (kept, when that fails: rr_len
             * says its size, so the next grow or close still fits it). */
            size_t want = rr_bytes(f, f->cap);
            uint16_t *rr = rows_resize(f->rr, f->rr_len, want);
            if (rr != NULL) {
                f->rr = rr;
                f->rr_len = want;
            }
        }
        return SC_ENOMEM;
    }
    f->codes = codes;
    f->codes_len = codes_bytes(f, ncap);
    f->cap = ncap;
    return SC_OK;
}

/* Just compacted (n rows, all live): once they fill a quarter of the slots
 * or less, cap falls to the smallest power of two (MIN_CAP at least) that
 * leaves room for 2n (sc_cap_shrunk, index/cap.h's rule, an IVF index's
 * too). The regions' tails are unmapped
 * (mremap), so their pages go back to the OS at once. A region or array
 * that cannot shrink stays larger than cap needs, never smaller. */
static void shrink(flat *f)
{
    size_t ncap = sc_cap_shrunk(f->cap, f->n, MIN_CAP);
    if (ncap == 0) {
        return;
    }
    unsigned char *codes =
        rows_resize(f->codes, f->codes_len, codes_bytes(f, ncap));
    if (codes != NULL) {
        f->codes = codes;
        f->codes_len = codes_bytes(f, ncap);
    }
    if (f->storage == SC_STORAGE_I8) {
        uint16_t *rr = rows_resize(f->rr, f->rr_len, rr_bytes(f, ncap));
        if (rr != NULL) {
            f->rr = rr;
            f->rr_len = rr_bytes(f, ncap);
        }
        float *sc = realloc(f->scales, ncap * sizeof(*sc));
        if (sc != NULL) {
            f->scales = sc;
        }
    }
    uint64_t *ids = realloc(f->ids, ncap * sizeof(*ids));
    if (ids != NULL) {
        f->ids = ids;
    }
    uint8_t *dead = realloc(f->dead, ncap);
    if (dead != NULL) {
        f->dead = dead;
    }
    f->cap = ncap;
}

/* Scale so that the largest magnitude maps to 127; -128 is never used.
 * Branch-free rounding (half away from zero): signs are random, and a
 * branch per element costs more than the whole int8 scan of a small
 * index. */
static float quantise(const float *x, size_t d, int8_t *out)
{
    float m = 0.0f;
    for (size_t i = 0; i < d; i++) {
        float a = fabsf(x[i]);
        m = a > m ? a : m;
    }
    float scale = m > 0 ? m / 127.0f : 1.0f;
    float inv = 1.0f / scale;
    for (size_t i = 0; i < d; i++) {
        float v = x[i] * inv;
        v += copysignf(0.5f, v);
        v = v > 127.0f ? 127.0f : v;
        v = v < -127.0f ? -127.0f : v;
        out[i] = (int8_t)(int)v;
    }
    return scale;
}

static void write_row(flat *f, size_t slot, const float *unit)
{
    size_t d = f->dim;
    unsigned char *row = f->codes + slot * f->stride * f->esize;
    /* Padding stays zero so kernels that read whole rows are still exact. */
    memset(row, 0, f->stride * f->esize);
    switch (f->storage) {
    case SC_STORAGE_F32:
        memcpy(row, unit, d * sizeof(float));
        break;
    case SC_STORAGE_F16:
        f->kern->f32_to_f16(unit, (uint16_t *)row, d);
        break;
    case SC_STORAGE_I8: {
        uint16_t *rr = f->rr + slot * f->rrstride;
        memset(rr, 0, f->rrstride * 2);
        f->kern->f32_to_f16(unit, rr, d);
        f->scales[slot] = quantise(unit, d, (int8_t *)row);
        break;
    }
    }
}

static sc_err flat_add(void *state, uint64_t id, const float *unit)
{
    flat *f = state;
    uint32_t slot;
    if (sc_idmap_get(&f->map, id, &slot)) {
        return SC_EEXIST;
    }
    if (f->n == f->cap) {
        sc_err rc = grow(f);
        if (rc != SC_OK) {
            return rc;
        }
    }
    sc_err rc = sc_idmap_put(&f->map, id, (uint32_t)f->n);
    if (rc != SC_OK) {
        return rc;
    }
    write_row(f, f->n, unit);
    f->ids[f->n] = id;
    f->dead[f->n] = 0;
    f->n++;
    return SC_OK;
}

/* Moves every live row down over the tombstones before it. */
static void compact_rows(flat *f)
{
    size_t rowb = f->stride * f->esize;
    size_t w = 0;
    for (size_t r = 0; r < f->n; r++) {
        if (f->dead[r]) {
            continue;
        }
        if (w != r) {
            memcpy(f->codes + w * rowb, f->codes + r * rowb, rowb);
            if (f->storage == SC_STORAGE_I8) {
                memcpy(f->rr + w * f->rrstride, f->rr + r * f->rrstride,
                       f->rrstride * 2);
                f->scales[w] = f->scales[r];
            }
            f->ids[w] = f->ids[r];
            f->dead[w] = 0;
            /* The id is already in the map, so this only overwrites. */
            (void)sc_idmap_put(&f->map, f->ids[w], (uint32_t)w);
        }
        w++;
    }
    f->n = w;
    f->ndead = 0;
    f->moves++;
}

/* Moves live rows over the tombstones, then gives back what the rows left
 * no longer need: slots (shrink) and id map slots (sc_idmap_shrink). */
static sc_err flat_compact(void *state)
{
    flat *f = state;
    if (f->ndead > 0) {
        compact_rows(f);
    }
    shrink(f);
    sc_idmap_shrink(&f->map);
    return SC_OK;
}

static sc_err flat_remove(void *state, uint64_t id)
{
    flat *f = state;
    uint32_t slot;
    if (!sc_idmap_get(&f->map, id, &slot)) {
        return SC_ENOTFOUND;
    }
    sc_idmap_del(&f->map, id);
    f->dead[slot] = 1;
    f->ndead++;
    /* Compact once a quarter of the slots are dead: each row is then moved
     * at most a bounded number of times per delete, amortised. The floor
     * only spares a tiny index compactions of a handful of rows; it is
     * small so that many small scopes do not each keep dead rows (their
     * bytes are no longer counted against any cap) and their peak slots. */
    if (f->ndead >= COMPACT_DEAD_MIN && f->ndead * 4 >= f->n) {
        return flat_compact(f);
    }
    return SC_OK;
}

static sc_err flat_get(void *state, uint64_t id, float *out)
{
    flat *f = state;
    uint32_t slot;
    if (!sc_idmap_get(&f->map, id, &slot)) {
        return SC_ENOTFOUND;
    }
    const unsigned char *row = f->codes + (size_t)slot * f->stride * f->esize;
    switch (f->storage) {
    case SC_STORAGE_F32:
        memcpy(out, row, f->dim * sizeof(float));
        break;
    case SC_STORAGE_F16:
        f->kern->f16_to_f32((const uint16_t *)row, out, f->dim);
        break;
    case SC_STORAGE_I8:
        f->kern->f16_to_f32(f->rr + (size_t)slot * f->rrstride, out, f->dim);
        break;
    }
    return SC_OK;
}

static size_t flat_count(const void *state)
{
    const flat *f = state;
    return f->n - f->ndead;
}

static size_t flat_memory(const void *state)
{
    const flat *f = state;
    size_t b = f->codes_len + f->rr_len;
    b += f->cap * (sizeof(uint64_t) + 1);
    if (f->storage == SC_STORAGE_I8) {
        b += f->cap * sizeof(float);
    }
    b += f->map.cap * SC_IDMAP_SLOT_BYTES;
    return b;
}

/* What a flat index of one vector takes from the allocator beyond
 * flat_vector_bytes: its struct, and its arrays rounded up to malloc
 * chunks (the row 64-byte aligned), the id map at its first 4 slots. The
 * arrays' rounding stays about this as the index grows (a region's last
 * page is at most a quarter of its rows). */
static size_t flat_fixed_bytes(const sc_index_params *p)
{
    size_t esize, stride, rrstride;
    layout(p, &esize, &stride, &rrstride);
    size_t b = sc_index_heap_bytes(sizeof(flat)) + rows_held(stride * esize) +
               sc_index_heap_bytes(sizeof(uint64_t)) + sc_index_heap_bytes(1);
    if (p->storage == SC_STORAGE_I8) {
        b += rows_held(rrstride * sizeof(uint16_t)) +
             sc_index_heap_bytes(sizeof(float));
    }
    sc_idmap m = {.cap = 4};
    b += sc_idmap_footprint(&m);
    size_t vb = flat_vector_bytes(p);
    return b > vb ? b - vb : 0;
}

/* ---- search --------------------------------------------------------- */

/* Scores rows [lo, hi) against one prepared query into h. */
static float coll_bar(const collector *c, float floor)
{
    float bar = heap_bar(&c->cand, floor);
    if (c->near && c->top.n == c->top.cap) {
        float nb = c->top.a[0].s - I8_MARGIN;
        bar = nb > bar ? nb : bar;
    }
    return bar;
}

static void coll_push(collector *c, float s, uint32_t slot)
{
    heap_push(&c->cand, s, slot);
    if (c->near) {
        heap_push(&c->top, s, slot);
    }
}

/* Feeds n scores of rows first.. into c; skips tombstones. */
static void collect(const flat *f, collector *c, const float *scores,
                    size_t first, size_t n, float floor)
{
    float bar = coll_bar(c, floor);
    for (size_t i = 0; i < n; i++) {
        if (scores[i] >= bar && !f->dead[first + i]) {
            coll_push(c, scores[i], (uint32_t)(first + i));
            bar = coll_bar(c, floor);
        }
    }
}

/* f32 rows: a kernel score near 1 (simd.h) is replaced by the exact one
 * before the row competes for the k places, so that a stored vector, at
 * exactly 1, is never pushed out by a near-duplicate whose rounding scored
 * it a hair higher. Rows first.. of scores; q unpadded. */
static void exact_near_one(const flat *f, const float *q, float *scores,
                           size_t first, size_t n)
{
    const float one = sc_simd_near_one(f->dim);
    for (size_t i = 0; i < n; i++) {
        if (scores[i] >= one) {
            scores[i] = sc_simd_exact_cos(
                q, (const float *)f->codes + (first + i) * f->stride, f->dim);
        }
    }
}

/* Row slot's score against unit query q as scan_range gives it (f32 and
 * f16 rows). */
static float single_score(const flat *f, const float *q, size_t slot)
{
    float s;
    const unsigned char *row = f->codes + slot * f->stride * f->esize;
    if (f->storage == SC_STORAGE_F16) {
        f->kern->dot_f16_rows(q, (const uint16_t *)row, f->stride, 1, f->dim,
                              &s);
    } else {
        f->kern->dot_f32_rows(q, (const float *)row, f->stride, 1, f->dim, &s);
        exact_near_one(f, q, &s, slot, 1);
    }
    return s;
}

/* sgemm's sums (the scalar tier's batches) differ from the kernel's, and
 * from row to row by where a row falls in its block: equal rows may score
 * a few ulps apart, which would rank them by slot, not id. A row sgemm
 * scores within this of the bar is scored again as the single scan scores
 * it (the kernel, then exact_near_one), and competes with that score:
 * both sums are within d ulps of the true one (|q| = |row| = 1). */
static float gemm_slack(const flat *f)
{
    return 2.0f * (float)(f->dim + 16) * 0x1p-23f;
}

/* collect() for sgemm's scores: rows near the bar are pushed with the
 * score the single scan gives them. */
static void collect_gemm(const flat *f, collector *c, const float *q,
                         const float *scores, size_t first, size_t n,
                         float floor)
{
    const float slack = gemm_slack(f);
    float bar = coll_bar(c, floor);
    for (size_t i = 0; i < n; i++) {
        if (scores[i] >= bar - slack && !f->dead[first + i]) {
            float s = single_score(f, q, first + i);
            if (s >= bar) {
                coll_push(c, s, (uint32_t)(first + i));
                bar = coll_bar(c, floor);
            }
        }
    }
}

static void scan_range(const flat *f, const prepq *pq, size_t lo, size_t hi,
                       collector *c)
{
    float scores[BLOCK];
    int32_t iscores[BLOCK];
    const sc_simd_kernels *k = f->kern;
    size_t d = f->dim;
    for (size_t b = lo; b < hi; b += BLOCK) {
        size_t nb = hi - b < BLOCK ? hi - b : BLOCK;
        const unsigned char *rows = f->codes + b * f->stride * f->esize;
        switch (f->storage) {
        case SC_STORAGE_F32:
            k->dot_f32_rows(pq->q, (const float *)rows, f->stride, nb, d,
                            scores);
            exact_near_one(f, pq->q, scores, b, nb);
            break;
        case SC_STORAGE_F16:
            k->dot_f16_rows(pq->q, (const uint16_t *)rows, f->stride, nb, d,
                            scores);
            break;
        case SC_STORAGE_I8:
            k->dot_i8_rows(pq->q8, (const int8_t *)rows, f->stride, nb, d,
                           iscores);
            for (size_t i = 0; i < nb; i++) {
                scores[i] = (float)iscores[i] * pq->qscale * f->scales[b + i];
            }
            break;
        }
        collect(f, c, scores, b, nb, pq->floor);
    }
}

/* Collector storage for one query: heaps of capacity cap (candidates) and
 * k (int8's running top k), carved out of one caller-provided array. */
static void coll_init(collector *c, const flat *f, cand *buf, unsigned cap,
                      unsigned k)
{
    c->cand.a = buf;
    c->cand.n = 0;
    c->cand.cap = cap;
    c->cand.ids = f->ids;
    c->near = f->storage == SC_STORAGE_I8;
    c->top.a = buf + cap;
    c->top.n = 0;
    c->top.cap = k;
    c->top.ids = f->ids;
}

static unsigned cand_cap(const flat *f, unsigned k)
{
    if (f->storage == SC_STORAGE_I8) {
        return f->rerank > k ? f->rerank : k;
    }
    return k;
}

/* Whether a heap of cs[0..nc) holds a row removed since it was pushed
 * (no compaction since: the slots are those of the scan). */
static bool removed_cands(const flat *f, const collector *cs, size_t nc)
{
    for (size_t i = 0; i < nc; i++) {
        for (unsigned j = 0; j < cs[i].cand.n; j++) {
            if (f->dead[cs[i].cand.a[j].slot]) {
                return true;
            }
        }
        for (unsigned j = 0; j < cs[i].top.n; j++) {
            if (f->dead[cs[i].top.a[j].slot]) {
                return true;
            }
        }
    }
    return false;
}

/* ---- a scan in holds of the lock -------------------------------------
 * A search, single or batched, reads the rows in holds of the index's read
 * lock and lets it go between them (sc_pass_run), so that a writer waits
 * for one hold, not for the whole scan. A pass is one search's scan: its
 * progress runs over rows 0..end (of each share, when split across
 * threads), and its collectors are what a pause checks. */
typedef struct pass {
    sc_pass sp; /* first: what sc_pass_run sees */
    const flat *f;
    collector *cs; /* the collectors a pause checks: ncs of them */
    size_t ncs;
    uint64_t moves; /* f->moves when the pass began (or began over) */
} pass;

/* Rows of progress per hold for nq queries, a multiple of unit. */
static size_t hold_rows(const flat *f, size_t nq, size_t unit)
{
    return sc_pass_hold_rows(nq, f->dim, f->stride * f->esize, unit);
}

/* After a pause. A compaction met in it moved rows; a candidate removed
 * meanwhile keeps a place in its heap (and, int8, a rank in top that sets
 * the margin) that a live row of the rows scanned would have had: dropped
 * only by finish(), the answer came out short. Either way the pass starts
 * over. Without a compaction no slot is reused or lost: rows added go past
 * end, and are not seen unless the pass starts over. */
static bool flat_resumed(sc_pass *sp)
{
    pass *p = (pass *)sp;
    const flat *f = p->f;
    if (f->moves != p->moves || removed_cands(f, p->cs, p->ncs)) {
        return false;
    }
    for (size_t i = 0; i < p->ncs; i++) {
        p->cs[i].cand.ids = p->cs[i].top.ids = f->ids; /* maybe moved */
    }
    return true;
}

/* Threads one query's scan of f's rows is split across (1: not split):
 * only a scan large enough to pay for them. */
static unsigned split_threads(const flat *f)
{
    unsigned nt = f->threads;
    if (nt > f->n / SPLIT_MIN_ROWS) {
        nt = (unsigned)(f->n / SPLIT_MIN_ROWS);
    }
    if (nt <= 1 || codes_bytes(f, f->n) < SPLIT_BYTES) {
        return 1;
    }
    return nt;
}

typedef struct one_pass one_pass;

typedef struct split_job {
    const flat *f;
    const prepq *pq;
    size_t lo, hi;
    collector *c;
    one_pass *o; /* its worker's pass (share t > 0) */
} split_job;

/* One query's pass. Split, the rows are nt shares of `share` rows (the
 * last one shorter), share t with collector cs[t]: each hold scans rows
 * t * share + lo..hi of every share, one thread a share, and the shares'
 * heaps are merged in share order at the end. The shares end at n, the
 * rows there were when the pass began (or began over): nt * share may
 * pass it, and rows added in a pause must not be read. The threads of
 * shares 1.. are started once for the pass and wait between holds (a
 * thread started and joined per hold cost more than the split saved). */
struct one_pass {
    pass p;
    const prepq *pq;
    cand *bufs; /* maxt * (cc + k) candidates, for cs */
    unsigned cc, k;
    unsigned maxt;   /* collectors at p.cs */
    split_job *jobs; /* maxt > 1: maxt of them */
    pthread_t *tids;
    size_t share;
    size_t n; /* rows at the pass's (re)start */
    /* The workers: nw threads, for shares 1..nw (a share past them, or
     * past p.ncs, runs on the caller's thread, or not at all). A hold
     * bumps gen; each worker scans its job and counts left down. */
    unsigned nw;
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    unsigned long gen;
    unsigned left;
    bool quit;
};

static void *split_main(void *arg)
{
    split_job *j = arg;
    one_pass *o = j->o;
    unsigned long seen = 0;
    pthread_mutex_lock(&o->mu);
    for (;;) {
        while (o->gen == seen && !o->quit) {
            pthread_cond_wait(&o->go, &o->mu);
        }
        if (o->quit) {
            break;
        }
        seen = o->gen;
        pthread_mutex_unlock(&o->mu);
        if (j->c != NULL) {
            scan_range(j->f, j->pq, j->lo, j->hi, j->c);
        }
        pthread_mutex_lock(&o->mu);
        if (--o->left == 0) {
            pthread_cond_signal(&o->done);
        }
    }
    pthread_mutex_unlock(&o->mu);
    return NULL;
}

/* Starts the workers of a split pass (as many as start: nw). */
static void workers_start(one_pass *o)
{
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->go, NULL);
    pthread_cond_init(&o->done, NULL);
    o->gen = 0;
    o->quit = false;
    o->nw = 0;
    for (unsigned t = 1; t < o->maxt; t++) {
        o->jobs[t].o = o;
        o->jobs[t].c = NULL;
        if (pthread_create(&o->tids[t], NULL, split_main, &o->jobs[t]) != 0) {
            break;
        }
        o->nw++;
    }
}

static void workers_stop(one_pass *o)
{
    pthread_mutex_lock(&o->mu);
    o->quit = true;
    pthread_cond_broadcast(&o->go);
    pthread_mutex_unlock(&o->mu);
    for (unsigned t = 1; t <= o->nw; t++) {
        pthread_join(o->tids[t], NULL);
    }
    pthread_cond_destroy(&o->done);
    pthread_cond_destroy(&o->go);
    pthread_mutex_destroy(&o->mu);
}

static size_t one_begin(sc_pass *sp)
{
    one_pass *o = (one_pass *)sp;
    pass *p = &o->p;
    p->moves = p->f->moves;
    unsigned nt = split_threads(p->f);
    nt = nt < o->maxt ? nt : o->maxt;
    for (unsigned t = 0; t < nt; t++) {
        coll_init(&p->cs[t], p->f, o->bufs + (size_t)t * (o->cc + o->k), o->cc,
                  o->k);
    }
    p->ncs = nt;
    o->n = p->f->n;
    o->share = (o->n + nt - 1) / nt;
    return o->share;
}

static void one_scan(sc_pass *sp, size_t lo, size_t hi)
{
    one_pass *o = (one_pass *)sp;
    pass *p = &o->p;
    const flat *f = p->f;
    if (p->ncs == 1) {
        scan_range(f, o->pq, lo, hi, &p->cs[0]);
        return;
    }
    for (size_t t = 0; t < o->maxt; t++) {
        size_t base = t * o->share;
        split_job *j = &o->jobs[t];
        j->f = f;
        j->pq = o->pq;
        j->lo = base + lo < o->n ? base + lo : o->n;
        j->hi = base + hi < o->n ? base + hi : o->n;
        j->c = t < p->ncs ? &p->cs[t] : NULL;
    }
    if (o->nw > 0) {
        pthread_mutex_lock(&o->mu);
        o->left = o->nw;
        o->gen++;
        pthread_cond_broadcast(&o->go);
        pthread_mutex_unlock(&o->mu);
    }
    /* Share 0 runs on the caller's thread, and so does a share whose
     * thread could not be started: the answer is complete either way. */
    scan_range(f, o->pq, o->jobs[0].lo, o->jobs[0].hi, o->jobs[0].c);
    for (size_t t = o->nw + 1; t < p->ncs; t++) {
        const split_job *j = &o->jobs[t];
        scan_range(f, o->pq, j->lo, j->hi, j->c);
    }
    if (o->nw > 0) {
        pthread_mutex_lock(&o->mu);
        while (o->left > 0) {
            pthread_cond_wait(&o->done, &o->mu);
        }
        pthread_mutex_unlock(&o->mu);
    }
}

static void sort_cands(cand *a, unsigned n, const uint64_t *ids)
{
    void *arg = (void *)(uintptr_t)ids;
    if (n > 32) {
        qsort_r(a, n, sizeof(cand), cand_cmp, arg);
        return;
    }
    /* Insertion sort: the usual case is a handful of candidates. */
    for (unsigned i = 1; i < n; i++) {
        cand x = a[i];
        unsigned j = i;
        while (j > 0 && cand_cmp(&a[j - 1], &x, arg) > 0) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

/* Turns the candidates into sorted hits >= threshold. For int8 they are
 * first re-scored from the f16 copy, within 5e-4 of exact. (f32 rows near
 * 1 were scored exactly by the scan: exact_near_one.) */
static void finish(const flat *f, const float *q, collector *c, unsigned k,
                   float threshold, sc_hit *hits, unsigned *nhits)
{
    heap *h = &c->cand;
    if (f->storage == SC_STORAGE_I8) {
        for (unsigned i = 0; i < h->n; i++) {
            f->kern->dot_f16_rows(q, f->rr + (size_t)h->a[i].slot * f->rrstride,
                                  f->rrstride, 1, f->dim, &h->a[i].s);
        }
    }
    sort_cands(h->a, h->n, f->ids);
    unsigned out = 0;
    for (unsigned i = 0; i < h->n && out < k; i++) {
        /* A row a search collected may have been removed while it let
         * its lock go (sc_pass_run then starts over: a guard). */
        if (h->a[i].s >= threshold && !f->dead[h->a[i].slot]) {
            float s = h->a[i].s;
            /* Rounding can push a self-match a hair past 1. */
            hits[out].similarity = s > 1.0f ? 1.0f : (s < -1.0f ? -1.0f : s);
            hits[out].id = f->ids[h->a[i].slot];
            out++;
        }
    }
    *nhits = out;
}

/* The lowest kernel score a scan admits. An f32 row just short of a
 * threshold near 1 may still reach it once exact_near_one re-scores it. */
static float floor_for(const flat *f, float threshold)
{
    if (f->storage == SC_STORAGE_I8) {
        return threshold - I8_MARGIN;
    }
    float one = sc_simd_near_one(f->dim);
    return f->storage == SC_STORAGE_F32 && threshold > one ? one : threshold;
}

static sc_err flat_search(void *state, const float *q, unsigned k,
                          float threshold, sc_hit *hits, unsigned *nhits,
                          const sc_index_yield *y)
{
    flat *f = state;
    cand buf[MAX_RERANK + SC_INDEX_MAX_K];
    collector c;
    const unsigned cc = cand_cap(f, k);
    int8_t q8[SC_INDEX_MAX_DIM];
    prepq pq = {q, NULL, 0.0f, floor_for(f, threshold)};
    if (f->storage == SC_STORAGE_I8) {
        pq.q8 = q8;
        pq.qscale = quantise(q, f->dim, q8);
    }
    /* Not split: the pass collects into c itself. */
    one_pass o = {.p = {{one_begin, one_scan, flat_resumed}, f, &c, 1, 0},
                  .pq = &pq,
                  .bufs = buf,
                  .cc = cc,
                  .k = k,
                  .maxt = 1};
    collector *cs = NULL;
    unsigned maxt = split_threads(f);
    if (maxt > 1) {
        cs = calloc(maxt, sizeof(*cs));
        o.bufs = calloc((size_t)maxt * (cc + k), sizeof(cand));
        o.jobs = calloc(maxt, sizeof(*o.jobs));
        o.tids = calloc(maxt, sizeof(*o.tids));
        if (cs == NULL || o.bufs == NULL || o.jobs == NULL || o.tids == NULL) {
            free(o.tids);
            free(o.jobs);
            free(o.bufs);
            free(cs);
            return SC_ENOMEM;
        }
        o.p.cs = cs;
        o.maxt = maxt;
        workers_start(&o);
    }
    sc_pass_run(&o.p.sp, hold_rows(f, 1, BLOCK), y);
    if (maxt > 1) {
        workers_stop(&o);
        /* Merge in share order: the result does not depend on thread
         * timing. */
        coll_init(&c, f, buf, cc, k);
        for (size_t t = 0; t < o.p.ncs; t++) {
            const heap *h = &cs[t].cand;
            for (unsigned i = 0; i < h->n; i++) {
                coll_push(&c, h->a[i].s, h->a[i].slot);
            }
        }
        free(o.tids);
        free(o.jobs);
        free(o.bufs);
        free(cs);
    }
    finish(f, q, &c, k, threshold, hits, nhits);
    return SC_OK;
}

/* f32 and f16 batches: a tile of rows is scored against every query while
 * it sits in L2, by the SIMD tile kernel (f16 rows are widened to f32 once
 * per tile, not once per query), or by OpenBLAS sgemm on the scalar tier
 * (there sgemm is 10-20x faster: bench/RESULTS.md). The SIMD tiles sum
 * each row as the single scan does, so a batch's scores are the single
 * search's bit for bit; sgemm sums in another order, so the rows it puts
 * near the bar are scored again as the single scan does (collect_gemm).
 * A tiled holds a batch's buffers, made once for all its blocks. */
typedef struct tiled {
    int use_gemm;
    size_t rows; /* rows per tile (or sgemm block) */
    size_t d;    /* padded: the tile kernel wants d % 16 == 0 */
    int f16;
    float *s;    /* nq * rows scores */
    float *qp;   /* the queries, padded to d */
    float *wide; /* f16: one tile widened */
} tiled;

static void tiled_fini(tiled *t)
{
    free(t->wide);
    free(t->qp);
    free(t->s);
}

static sc_err tiled_init(tiled *t, const flat *f, const float *qs, size_t nq)
{
    t->use_gemm = f->kern->tier == SC_TIER_SCALAR;
    t->rows = t->use_gemm ? GEMM_ROWS : TILE_ROWS;
    t->d = f->stride;
    t->f16 = f->storage == SC_STORAGE_F16;
    t->s = malloc(nq * t->rows * sizeof(float));
    t->qp = malloc(nq * t->d * sizeof(float));
    t->wide = t->f16 ? malloc(t->rows * t->d * sizeof(float)) : NULL;
    if (t->s == NULL || t->qp == NULL || (t->f16 && t->wide == NULL)) {
        tiled_fini(t);
        return SC_ENOMEM;
    }
    for (size_t i = 0; i < nq; i++) {
        memcpy(t->qp + i * t->d, qs + i * f->dim, f->dim * sizeof(float));
        memset(t->qp + i * t->d + f->dim, 0, (t->d - f->dim) * sizeof(float));
    }
    return SC_OK;
}

/* Scores rows lo..hi (lo a multiple of t->rows) against every query. */
static void tiled_scan(const flat *f, const tiled *t, size_t nq, collector *cs,
                       const prepq *pqs, size_t lo, size_t hi)
{
    const size_t d = t->d;
    float *s = t->s;
    for (size_t b = lo; b < hi; b += t->rows) {
        size_t nb = hi - b < t->rows ? hi - b : t->rows;
        const float *block;
        if (t->f16) {
            /* f16 rows are padded with zeros to their stride, as are these. */
            f->kern->f16_to_f32((const uint16_t *)f->codes + b * d, t->wide,
                                nb * d);
            block = t->wide;
        } else {
            block = (const float *)f->codes + b * d;
        }
        if (t->use_gemm) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq,
                        (int)nb, (int)d, 1.0f, t->qp, (int)d, block, (int)d,
                        0.0f, s, (int)nb);
        } else {
            f->kern->dot_f32_tile(t->qp, d, nq, block, d, nb, d, s, nb);
        }
        for (size_t i = 0; i < nq; i++) {
            if (t->use_gemm) {
                collect_gemm(f, &cs[i], pqs[i].q, s + i * nb, b, nb,
                             pqs[i].floor);
                continue;
            }
            if (!t->f16) {
                exact_near_one(f, pqs[i].q, s + i * nb, b, nb);
            }
            collect(f, &cs[i], s + i * nb, b, nb, pqs[i].floor);
        }
    }
}

/* A batch's pass: every query's collector, over all rows at once. */
typedef struct batch_pass {
    pass p;
    const tiled *t; /* f32 and f16 tiles, or NULL */
    const prepq *pqs;
    cand *cbuf; /* nq * (cc + k) candidates, for p.cs */
    unsigned cc, k;
} batch_pass;

static size_t batch_begin(sc_pass *sp)
{
    batch_pass *bp = (batch_pass *)sp;
    pass *p = &bp->p;
    p->moves = p->f->moves;
    for (size_t i = 0; i < p->ncs; i++) {
        coll_init(&p->cs[i], p->f, bp->cbuf + i * (bp->cc + bp->k), bp->cc,
                  bp->k);
    }
    return p->f->n;
}

static void batch_scan(sc_pass *sp, size_t lo, size_t hi)
{
    batch_pass *bp = (batch_pass *)sp;
    pass *p = &bp->p;
    if (bp->t != NULL) {
        tiled_scan(p->f, bp->t, p->ncs, p->cs, bp->pqs, lo, hi);
        return;
    }
    /* Cache blocking: each block of rows is read from memory once and
     * scored against every query while it sits in L1/L2. */
    for (size_t b = lo; b < hi; b += BLOCK) {
        size_t e = hi - b < BLOCK ? hi : b + BLOCK;
        for (size_t i = 0; i < p->ncs; i++) {
            scan_range(p->f, &bp->pqs[i], b, e, &p->cs[i]);
        }
    }
}

static sc_err flat_search_batch(void *state, const float *qs, size_t nq,
                                unsigned k, float threshold, sc_hit *hits,
                                unsigned *nhits, const sc_index_yield *y)
{
    flat *f = state;
    unsigned cc = cand_cap(f, k);
    collector *cs = calloc(nq, sizeof(*cs));
    cand *cbuf = calloc(nq * (cc + k), sizeof(*cbuf));
    prepq *pqs = calloc(nq, sizeof(*pqs));
    int8_t *q8 = NULL;
    if (f->storage == SC_STORAGE_I8) {
        q8 = malloc(nq * f->dim);
    }
    sc_err rc = SC_OK;
    if (cs == NULL || cbuf == NULL || pqs == NULL ||
        (f->storage == SC_STORAGE_I8 && q8 == NULL)) {
        rc = SC_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < nq; i++) {
        pqs[i].q = qs + i * f->dim;
        pqs[i].floor = floor_for(f, threshold);
        if (q8 != NULL) {
            pqs[i].q8 = q8 + i * f->dim;
            pqs[i].qscale = quantise(pqs[i].q, f->dim, pqs[i].q8);
        }
    }
    const int tiles = f->storage != SC_STORAGE_I8 && nq >= 2;
    tiled t = {0};
    if (tiles && (rc = tiled_init(&t, f, qs, nq)) != SC_OK) {
        goto out;
    }
    /* A writer waits for one hold of rows, not for the batch (sc_pass_run). */
    batch_pass bp = {{{batch_begin, batch_scan, flat_resumed}, f, cs, nq, 0},
                     tiles ? &t : NULL,
                     pqs,
                     cbuf,
                     cc,
                     k};
    sc_pass_run(&bp.p.sp, hold_rows(f, nq, tiles ? t.rows : BLOCK), y);
    if (tiles) {
        tiled_fini(&t);
    }
    for (size_t i = 0; i < nq; i++) {
        finish(f, pqs[i].q, &cs[i], k, threshold, hits + i * k, &nhits[i]);
    }
out:
    free(q8);
    free(pqs);
    free(cbuf);
    free(cs);
    return rc;
}

const sc_index_backend sc_index_flat_backend = {
    .name = "flat",
    .version = "1",
    .open = flat_open,
    .close = flat_close,
    .add = flat_add,
    .remove = flat_remove,
    .get = flat_get,
    .search = flat_search,
    .search_batch = flat_search_batch,
    .compact = flat_compact,
    .count = flat_count,
    .memory = flat_memory,
    .fixed_bytes = flat_fixed_bytes,
    .vector_bytes = flat_vector_bytes,
};
