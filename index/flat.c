/* flat.c - the flat backend: every search scans every stored vector with the
 * SIMD kernels of index/simd, f32, f16 or int8 rows. Quantised int8 scans
 * pick candidates that are then re-scored from an f16 copy, so answers match
 * exact f32 search in practice. Deletes leave tombstones; compaction moves
 * rows down later and never changes ids. Batches of f32 queries go through
 * OpenBLAS sgemm. */
#define _GNU_SOURCE
#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "index/idmap.h"
#include "index/index.h"
#include "index/simd/simd.h"

#define BLOCK 256            /* rows scored per kernel call */
#define GEMM_ROWS 4096       /* rows per sgemm block in batch search */
#define DEFAULT_RERANK 64    /* int8 candidates re-scored per query */
#define MAX_RERANK 1024
#define I8_MARGIN 0.05f      /* int8 score error allowed below threshold */
#define SPLIT_BYTES (8u << 20) /* scans smaller than this stay on one thread */
#define SPLIT_MIN_ROWS 4096

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

    unsigned char *codes; /* cap * stride * esize bytes, page aligned */
    uint16_t *rr;         /* int8: f16 copy of each row for re-ranking */
    float *scales;        /* int8: per-row dequantisation factor */
    uint64_t *ids;        /* slot -> id */
    uint8_t *dead;        /* slot -> tombstone flag */
    sc_idmap map;         /* id -> slot */
} flat;

/* A bounded min-heap of (score, slot): keeps the best `cap` seen. */
typedef struct cand {
    float s;
    uint32_t slot;
} cand;

typedef struct heap {
    cand *a;
    unsigned n;
    unsigned cap;
} heap;

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
        r = mremap(p, old_bytes, new_bytes, MREMAP_MAYMOVE);
    }
    return r == MAP_FAILED ? NULL : r;
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

static size_t codes_bytes(const flat *f, size_t rows)
{
    return rows * f->stride * f->esize;
}

static size_t rr_bytes(const flat *f, size_t rows)
{
    return f->storage == SC_STORAGE_I8 ? rows * f->rrstride * 2 : 0;
}

/* ---- heap ----------------------------------------------------------- */

static void heap_push(heap *h, float s, uint32_t slot)
{
    cand c = {s, slot};
    if (h->n < h->cap) {
        unsigned i = h->n++;
        while (i > 0) {
            unsigned p = (i - 1) / 2;
            if (h->a[p].s <= s) {
                break;
            }
            h->a[i] = h->a[p];
            i = p;
        }
        h->a[i] = c;
        return;
    }
    if (s <= h->a[0].s) {
        return;
    }
    unsigned i = 0;
    for (;;) {
        unsigned l = 2 * i + 1;
        if (l >= h->n) {
            break;
        }
        unsigned m = l;
        if (l + 1 < h->n && h->a[l + 1].s < h->a[l].s) {
            m = l + 1;
        }
        if (h->a[m].s >= s) {
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

static int cand_cmp(const void *x, const void *y)
{
    const cand *a = x;
    const cand *b = y;
    if (a->s != b->s) {
        return a->s > b->s ? -1 : 1;
    }
    return (a->slot > b->slot) - (a->slot < b->slot);
}

/* ---- open / close --------------------------------------------------- */

static void flat_free(flat *f)
{
    region_free(f->codes, codes_bytes(f, f->cap));
    region_free(f->rr, rr_bytes(f, f->cap));
    free(f->scales);
    free(f->ids);
    free(f->dead);
    sc_idmap_fini(&f->map);
    free(f);
}

static sc_err flat_open(const sc_index_params *p, void **state)
{
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
    f->esize = p->storage == SC_STORAGE_F32   ? 4
               : p->storage == SC_STORAGE_F16 ? 2
                                              : 1;
    f->stride = round_up(p->dim, 64 / f->esize);
    f->rrstride = round_up(p->dim, 32);
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
    size_t ncap = f->cap ? f->cap * 2 : 64;
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
        uint16_t *rr = region_resize(f->rr, rr_bytes(f, f->cap),
                                     rr_bytes(f, ncap));
        if (rr == NULL) {
            return SC_ENOMEM;
        }
        f->rr = rr;
    }
    /* codes last: cap only changes once every array has room. */
    unsigned char *codes = region_resize(f->codes, codes_bytes(f, f->cap),
                                         codes_bytes(f, ncap));
    if (codes == NULL) {
        if (f->storage == SC_STORAGE_I8) {
            /* Shrink rr back so that its size matches cap again. */
            uint16_t *rr = region_resize(f->rr, rr_bytes(f, ncap),
                                         rr_bytes(f, f->cap));
            if (rr != NULL) {
                f->rr = rr;
            }
        }
        return SC_ENOMEM;
    }
    f->codes = codes;
    f->cap = ncap;
    return SC_OK;
}

/* Scale so that the largest magnitude maps to 127; -128 is never used. */
static float quantise(const float *x, size_t d, int8_t *out)
{
    float m = 0.0f;
    for (size_t i = 0; i < d; i++) {
        float a = x[i] < 0 ? -x[i] : x[i];
        if (a > m) {
            m = a;
        }
    }
    float scale = m > 0 ? m / 127.0f : 1.0f;
    float inv = 1.0f / scale;
    for (size_t i = 0; i < d; i++) {
        float v = x[i] * inv;
        long r = (long)(v < 0 ? v - 0.5f : v + 0.5f);
        if (r > 127) {
            r = 127;
        }
        if (r < -127) {
            r = -127;
        }
        out[i] = (int8_t)r;
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

static sc_err flat_compact(void *state)
{
    flat *f = state;
    if (f->ndead == 0) {
        return SC_OK;
    }
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
     * at most a bounded number of times per delete, amortised. */
    if (f->ndead >= 1024 && f->ndead * 4 >= f->n) {
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
    size_t b = codes_bytes(f, f->cap) + rr_bytes(f, f->cap);
    b += f->cap * (sizeof(uint64_t) + 1);
    if (f->storage == SC_STORAGE_I8) {
        b += f->cap * sizeof(float);
    }
    b += f->map.cap * (sizeof(uint64_t) + sizeof(uint32_t) + 1);
    return b;
}

/* ---- search --------------------------------------------------------- */

/* Scores rows [lo, hi) against one prepared query into h. */
static void scan_range(const flat *f, const prepq *pq, size_t lo, size_t hi,
                       heap *h)
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
        float bar = heap_bar(h, pq->floor);
        for (size_t i = 0; i < nb; i++) {
            if (scores[i] >= bar && !f->dead[b + i]) {
                heap_push(h, scores[i], (uint32_t)(b + i));
                bar = heap_bar(h, pq->floor);
            }
        }
    }
}

typedef struct split_job {
    const flat *f;
    const prepq *pq;
    size_t lo, hi;
    heap h;
} split_job;

static void *split_main(void *arg)
{
    split_job *j = arg;
    scan_range(j->f, j->pq, j->lo, j->hi, &j->h);
    return NULL;
}

/* Scans all rows into h, across threads when the scan is large enough. */
static sc_err scan_all(const flat *f, const prepq *pq, heap *h)
{
    size_t live_bytes = codes_bytes(f, f->n);
    unsigned nt = f->threads;
    if (nt > f->n / SPLIT_MIN_ROWS) {
        nt = (unsigned)(f->n / SPLIT_MIN_ROWS);
    }
    if (nt <= 1 || live_bytes < SPLIT_BYTES) {
        scan_range(f, pq, 0, f->n, h);
        return SC_OK;
    }
    split_job *jobs = calloc(nt, sizeof(*jobs));
    pthread_t *tids = calloc(nt, sizeof(*tids));
    cand *bufs = calloc((size_t)nt * h->cap, sizeof(cand));
    if (jobs == NULL || tids == NULL || bufs == NULL) {
        free(jobs);
        free(tids);
        free(bufs);
        return SC_ENOMEM;
    }
    size_t per = (f->n + nt - 1) / nt;
    for (unsigned t = 0; t < nt; t++) {
        jobs[t].f = f;
        jobs[t].pq = pq;
        jobs[t].lo = t * per;
        jobs[t].hi = (t + 1) * per < f->n ? (t + 1) * per : f->n;
        jobs[t].h.a = bufs + (size_t)t * h->cap;
        jobs[t].h.cap = h->cap;
    }
    /* Share 0 runs on the caller's thread; a share whose thread cannot be
     * started runs there too, so the answer is complete either way. */
    uint8_t *started = calloc(nt, 1);
    for (unsigned t = 1; t < nt; t++) {
        if (started != NULL &&
            pthread_create(&tids[t], NULL, split_main, &jobs[t]) == 0) {
            started[t] = 1;
        }
    }
    split_main(&jobs[0]);
    for (unsigned t = 1; t < nt; t++) {
        if (started != NULL && started[t]) {
            pthread_join(tids[t], NULL);
        } else {
            split_main(&jobs[t]);
        }
    }
    free(started);
    for (unsigned t = 0; t < nt; t++) {
        for (unsigned i = 0; i < jobs[t].h.n; i++) {
            heap_push(h, jobs[t].h.a[i].s, jobs[t].h.a[i].slot);
        }
    }
    free(jobs);
    free(tids);
    free(bufs);
    return SC_OK;
}

/* Turns a heap of candidates into sorted hits >= threshold. For int8 the
 * candidates are first re-scored from the f16 copy. */
static void finish(const flat *f, const float *q, heap *h, unsigned k,
                   float threshold, sc_hit *hits, unsigned *nhits)
{
    if (f->storage == SC_STORAGE_I8) {
        for (unsigned i = 0; i < h->n; i++) {
            float s;
            f->kern->dot_f16_rows(q, f->rr + (size_t)h->a[i].slot * f->rrstride,
                                  f->rrstride, 1, f->dim, &s);
            h->a[i].s = s;
        }
    }
    qsort(h->a, h->n, sizeof(cand), cand_cmp);
    unsigned out = 0;
    for (unsigned i = 0; i < h->n && out < k; i++) {
        if (h->a[i].s >= threshold) {
            float s = h->a[i].s;
            /* Rounding can push a self-match a hair past 1. */
            hits[out].similarity = s > 1.0f ? 1.0f : (s < -1.0f ? -1.0f : s);
            hits[out].id = f->ids[h->a[i].slot];
            out++;
        }
    }
    *nhits = out;
}

static unsigned heap_cap(const flat *f, unsigned k)
{
    if (f->storage == SC_STORAGE_I8) {
        return f->rerank > k ? f->rerank : k;
    }
    return k;
}

static float floor_for(const flat *f, float threshold)
{
    return f->storage == SC_STORAGE_I8 ? threshold - I8_MARGIN : threshold;
}

static sc_err flat_search(void *state, const float *q, unsigned k,
                          float threshold, sc_hit *hits, unsigned *nhits)
{
    flat *f = state;
    cand buf[MAX_RERANK];
    heap h = {buf, 0, heap_cap(f, k)};
    int8_t q8[SC_INDEX_MAX_DIM];
    prepq pq = {q, NULL, 0.0f, floor_for(f, threshold)};
    if (f->storage == SC_STORAGE_I8) {
        pq.q8 = q8;
        pq.qscale = quantise(q, f->dim, q8);
    }
    sc_err rc = scan_all(f, &pq, &h);
    if (rc != SC_OK) {
        return rc;
    }
    finish(f, q, &h, k, threshold, hits, nhits);
    return SC_OK;
}

/* Batch through sgemm: f32 rows only. Scores a block of rows against all
 * queries at once, then feeds every query's heap. */
static sc_err batch_gemm(const flat *f, const float *qs, size_t nq,
                         heap *heaps, const prepq *pqs)
{
    size_t rows = f->n < GEMM_ROWS ? f->n : GEMM_ROWS;
    float *s = malloc(nq * (rows ? rows : 1) * sizeof(float));
    if (s == NULL) {
        return SC_ENOMEM;
    }
    const float *base = (const float *)f->codes;
    for (size_t b = 0; b < f->n; b += GEMM_ROWS) {
        size_t nb = f->n - b < GEMM_ROWS ? f->n - b : GEMM_ROWS;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)nb,
                    (int)f->dim, 1.0f, qs, (int)f->dim, base + b * f->stride,
                    (int)f->stride, 0.0f, s, (int)nb);
        for (size_t i = 0; i < nq; i++) {
            heap *h = &heaps[i];
            const float *row = s + i * nb;
            float bar = heap_bar(h, pqs[i].floor);
            for (size_t j = 0; j < nb; j++) {
                if (row[j] >= bar && !f->dead[b + j]) {
                    heap_push(h, row[j], (uint32_t)(b + j));
                    bar = heap_bar(h, pqs[i].floor);
                }
            }
        }
    }
    free(s);
    return SC_OK;
}

static sc_err flat_search_batch(void *state, const float *qs, size_t nq,
                                unsigned k, float threshold, sc_hit *hits,
                                unsigned *nhits)
{
    flat *f = state;
    unsigned hc = heap_cap(f, k);
    heap *heaps = calloc(nq, sizeof(*heaps));
    cand *cbuf = calloc(nq * hc, sizeof(*cbuf));
    prepq *pqs = calloc(nq, sizeof(*pqs));
    int8_t *q8 = NULL;
    if (f->storage == SC_STORAGE_I8) {
        q8 = malloc(nq * f->dim);
    }
    sc_err rc = SC_OK;
    if (heaps == NULL || cbuf == NULL || pqs == NULL ||
        (f->storage == SC_STORAGE_I8 && q8 == NULL)) {
        rc = SC_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < nq; i++) {
        heaps[i].a = cbuf + i * hc;
        heaps[i].cap = hc;
        pqs[i].q = qs + i * f->dim;
        pqs[i].floor = floor_for(f, threshold);
        if (q8 != NULL) {
            pqs[i].q8 = q8 + i * f->dim;
            pqs[i].qscale = quantise(pqs[i].q, f->dim, pqs[i].q8);
        }
    }
    if (f->storage == SC_STORAGE_F32 && nq >= 4) {
        rc = batch_gemm(f, qs, nq, heaps, pqs);
    } else {
        /* Cache blocking: each block of rows is read from memory once and
         * scored against every query while it sits in L1/L2. */
        for (size_t b = 0; b < f->n; b += BLOCK) {
            size_t e = f->n - b < BLOCK ? f->n : b + BLOCK;
            for (size_t i = 0; i < nq; i++) {
                scan_range(f, &pqs[i], b, e, &heaps[i]);
            }
        }
    }
    if (rc != SC_OK) {
        goto out;
    }
    for (size_t i = 0; i < nq; i++) {
        finish(f, pqs[i].q, &heaps[i], k, threshold, hits + i * k, &nhits[i]);
    }
out:
    free(q8);
    free(pqs);
    free(cbuf);
    free(heaps);
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
};
