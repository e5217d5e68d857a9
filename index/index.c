/* index.c - the sc_index wrappers: validation, normalisation, locking, and
 * the table of backends. Backends see only unit vectors of the right
 * dimension and are called under the index's read or write lock (but
 * train, train_stats and set_nprobe, which order themselves). */
#define _GNU_SOURCE
#include "index/index.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct sc_index {
    const sc_index_backend *be;
    void *state;
    uint32_t dim;
    sc_storage storage;
    pthread_rwlock_t lock;
};

static const sc_index_backend *const backends[] = {
    &sc_index_flat_backend,
    &sc_index_ivf_flat_backend,
    &sc_index_ivf_sq8_backend,
    &sc_index_auto_backend,
};

void sc_index_params_init(sc_index_params *p)
{
    memset(p, 0, sizeof(*p));
    p->backend = "flat";
    p->storage = SC_STORAGE_F32;
    p->threads = 1;
}

const sc_index_backend *sc_index_backend_find(const char *name)
{
    if (name == NULL) {
        name = "flat";
    }
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
        if (strcmp(backends[i]->name, name) == 0) {
            return backends[i];
        }
    }
    return NULL;
}

int sc_index_backend_available(const char *name)
{
    const sc_index_backend *be = sc_index_backend_find(name);
    /* A backend that is not built links with open/close/load only. */
    return be != NULL && be->add != NULL && be->search != NULL;
}

const char *sc_storage_name(sc_storage s)
{
    switch (s) {
    case SC_STORAGE_F32:
        return "f32";
    case SC_STORAGE_F16:
        return "f16";
    case SC_STORAGE_I8:
        return "int8";
    }
    return "unknown";
}

int sc_storage_parse(const char *name)
{
    if (name == NULL) {
        return -1;
    }
    if (strcmp(name, "f32") == 0) {
        return SC_STORAGE_F32;
    }
    if (strcmp(name, "f16") == 0) {
        return SC_STORAGE_F16;
    }
    if (strcmp(name, "int8") == 0 || strcmp(name, "i8") == 0) {
        return SC_STORAGE_I8;
    }
    return -1;
}

/* Opens with be->open, or be->load from path when path is not NULL. */
static sc_err index_open(const sc_index_params *p, const char *path,
                         sc_index **out)
{
    if (p == NULL || out == NULL) {
        return SC_EINVAL;
    }
    if (p->dim < 1 || p->dim > SC_INDEX_MAX_DIM) {
        return SC_ERANGE;
    }
    if (p->storage != SC_STORAGE_F32 && p->storage != SC_STORAGE_F16 &&
        p->storage != SC_STORAGE_I8) {
        return SC_EINVAL;
    }
    const sc_index_backend *be = sc_index_backend_find(p->backend);
    if (be == NULL) {
        return SC_EINVAL;
    }
    sc_index *ix = calloc(1, sizeof(*ix));
    if (ix == NULL) {
        return SC_ENOMEM;
    }
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* Writers must not starve under a steady stream of lookups. */
    pthread_rwlockattr_setkind_np(&attr,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int prc = pthread_rwlock_init(&ix->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (prc != 0) {
        free(ix);
        return SC_ENOMEM;
    }
    sc_err rc = path == NULL       ? be->open(p, &ix->state)
                : be->load == NULL ? SC_ENOTSUP
                                   : be->load(p, path, &ix->state);
    if (rc != SC_OK) {
        pthread_rwlock_destroy(&ix->lock);
        free(ix);
        return rc;
    }
    ix->be = be;
    ix->dim = p->dim;
    ix->storage = p->storage;
    *out = ix;
    return SC_OK;
}

sc_err sc_index_open(const sc_index_params *p, sc_index **out)
{
    return index_open(p, NULL, out);
}

sc_err sc_index_load(const sc_index_params *p, const char *path, sc_index **out)
{
    if (path == NULL) {
        return SC_EINVAL;
    }
    return index_open(p, path, out);
}

sc_err sc_index_save_training(sc_index *ix, const char *path)
{
    if (ix == NULL || path == NULL) {
        return SC_EINVAL;
    }
    if (ix->be->save_training == NULL) {
        return SC_ENOTSUP;
    }
    pthread_rwlock_rdlock(&ix->lock);
    sc_err rc = ix->be->save_training(ix->state, path);
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

sc_err sc_index_load_training(sc_index *ix, const char *path)
{
    if (ix == NULL || path == NULL) {
        return SC_EINVAL;
    }
    if (ix->be->load_training == NULL) {
        return SC_ENOTSUP;
    }
    pthread_rwlock_wrlock(&ix->lock);
    sc_err rc = ix->be->load_training(ix->state, path);
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

sc_err sc_index_save(sc_index *ix, const char *path)
{
    if (ix == NULL || path == NULL) {
        return SC_EINVAL;
    }
    if (ix->be->save == NULL) {
        return SC_ENOTSUP;
    }
    /* A write lock: the file must be one consistent state. */
    pthread_rwlock_wrlock(&ix->lock);
    sc_err rc = ix->be->save(ix->state, path);
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

sc_err sc_index_train(sc_index *ix)
{
    if (ix == NULL) {
        return SC_EINVAL;
    }
    if (ix->be->train == NULL) {
        return SC_ENOTSUP;
    }
    /* Not under ix->lock: the training takes long, and a writer queued
     * behind a reader that waits for it would hold every search back (the
     * lock prefers writers). The backend keeps its own locks for the
     * training and the swap (ivf.c: tmu, sw). */
    return ix->be->train(ix->state);
}

int sc_index_trained(sc_index *ix)
{
    if (ix == NULL || ix->be->trained == NULL) {
        return 0;
    }
    pthread_rwlock_rdlock(&ix->lock);
    int t = ix->be->trained(ix->state);
    pthread_rwlock_unlock(&ix->lock);
    return t;
}

int sc_index_changes_may_wait(sc_index *ix)
{
    if (ix == NULL || ix->be->training == NULL) {
        return 0;
    }
    /* Not ix->lock: a change waiting for a round holds it (for reading),
     * and a writer queued behind that would hold this back. */
    return ix->be->training(ix->state);
}

sc_err sc_index_get_train_stats(sc_index *ix, sc_index_train_stats *out)
{
    if (ix == NULL || out == NULL) {
        return SC_EINVAL;
    }
    if (ix->be->train_stats == NULL) {
        return SC_ENOTSUP;
    }
    /* The backend's own lock only: like sc_index_train, not ix->lock. */
    return ix->be->train_stats(ix->state, out);
}

sc_err sc_index_set_nprobe(sc_index *ix, uint32_t nprobe)
{
    if (ix == NULL) {
        return SC_EINVAL;
    }
    if (ix->be->set_nprobe == NULL) {
        return SC_ENOTSUP;
    }
    if (nprobe < 1 || nprobe > 65536) {
        return SC_ERANGE;
    }
    /* No lock, like sc_index_get_train_stats: the backend keeps nprobe
     * in an atomic that each search reads once. Taking ix->lock for
     * writing waited for an IVF add waiting out a held round, and held
     * every search behind it (the lock prefers writers). */
    return ix->be->set_nprobe(ix->state, nprobe);
}

void sc_index_close(sc_index *ix)
{
    if (ix == NULL) {
        return;
    }
    ix->be->close(ix->state);
    pthread_rwlock_destroy(&ix->lock);
    free(ix);
}

sc_err sc_index_close_stats(sc_index *ix, sc_index_train_stats *out)
{
    if (ix == NULL || out == NULL) {
        sc_index_close(ix);
        return SC_EINVAL;
    }
    memset(out, 0, sizeof(*out));
    if (ix->be->stop != NULL) {
        ix->be->stop(ix->state);
    }
    sc_err rc = sc_index_get_train_stats(ix, out);
    sc_index_close(ix);
    return rc;
}

/* Checks v and writes v / |v| to out. The norm is summed in double so that
 * large or tiny components neither overflow nor lose the result. */
static sc_err normalise(const float *v, uint32_t dim, float *out)
{
    double ss = 0.0;
    for (uint32_t i = 0; i < dim; i++) {
        if (!isfinite(v[i])) {
            return SC_ENONFINITE;
        }
        ss += (double)v[i] * (double)v[i];
    }
    if (!(ss > 0.0)) {
        return SC_EZEROVEC;
    }
    double inv = 1.0 / sqrt(ss);
    for (uint32_t i = 0; i < dim; i++) {
        out[i] = (float)((double)v[i] * inv);
    }
    return SC_OK;
}

static sc_err check_search(unsigned k, float threshold)
{
    if (k < 1 || k > SC_INDEX_MAX_K) {
        return SC_ERANGE;
    }
    if (isnan(threshold)) {
        return SC_EINVAL;
    }
    return SC_OK;
}

/* The wrapper's lock for an add or a remove: for writing, or for reading
 * when the backend orders them itself (locks_itself). An IVF add held
 * this one for writing while it waited for a training's held replay
 * round (up to 256 rows added, on one thread), and every search queued
 * behind it here (the lock prefers writers) waited as long. */
static void lock_change(sc_index *ix)
{
    if (ix->be->locks_itself) {
        pthread_rwlock_rdlock(&ix->lock);
    } else {
        pthread_rwlock_wrlock(&ix->lock);
    }
}

sc_err sc_index_add(sc_index *ix, uint64_t id, const float *vec)
{
    if (ix == NULL || vec == NULL) {
        return SC_EINVAL;
    }
    float unit[SC_INDEX_MAX_DIM];
    sc_err rc = normalise(vec, ix->dim, unit);
    if (rc != SC_OK) {
        return rc;
    }
    lock_change(ix);
    rc = ix->be->add(ix->state, id, unit);
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

/* How far a stored vector's squared norm may be from 1 and still be taken
 * as it is: an f16 vector read back is within about 1e-3 of it. */
#define STORED_NORM_SLACK 1e-2

sc_err sc_index_add_stored(sc_index *ix, uint64_t id, const float *vec)
{
    if (ix == NULL || vec == NULL) {
        return SC_EINVAL;
    }
    double ss = 0.0;
    for (uint32_t i = 0; i < ix->dim; i++) {
        ss += (double)vec[i] * (double)vec[i];
    }
    /* A NaN or infinite component fails the test, and normalise says so. */
    if (!(fabs(ss - 1.0) <= STORED_NORM_SLACK)) {
        return sc_index_add(ix, id, vec);
    }
    lock_change(ix);
    sc_err rc = ix->be->add(ix->state, id, vec);
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

sc_err sc_index_remove(sc_index *ix, uint64_t id)
{
    if (ix == NULL) {
        return SC_EINVAL;
    }
    lock_change(ix);
    sc_err rc = ix->be->remove(ix->state, id);
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

sc_err sc_index_get(sc_index *ix, uint64_t id, float *out)
{
    if (ix == NULL || out == NULL) {
        return SC_EINVAL;
    }
    pthread_rwlock_rdlock(&ix->lock);
    sc_err rc = ix->be->get(ix->state, id, out);
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

static struct {
    void (*_Atomic fn)(void *);
    void *_Atomic arg;
} yield_hook;

void sc_index_set_yield_hook(void (*fn)(void *arg), void *arg)
{
    atomic_store(&yield_hook.arg, arg);
    atomic_store(&yield_hook.fn, fn);
}

/* A search's pause: writers queued on the lock (it prefers them) get it
 * before this reader takes it again. */
static void search_yield(void *arg)
{
    sc_index *ix = arg;
    pthread_rwlock_unlock(&ix->lock);
    void (*fn)(void *) = atomic_load(&yield_hook.fn);
    if (fn != NULL) {
        fn(atomic_load(&yield_hook.arg));
    }
    pthread_rwlock_rdlock(&ix->lock);
}

sc_err sc_index_search(sc_index *ix, const float *q, unsigned k,
                       float threshold, sc_hit *hits, unsigned *nhits)
{
    if (ix == NULL || q == NULL || hits == NULL || nhits == NULL) {
        return SC_EINVAL;
    }
    sc_err rc = check_search(k, threshold);
    if (rc != SC_OK) {
        return rc;
    }
    float unit[SC_INDEX_MAX_DIM];
    rc = normalise(q, ix->dim, unit);
    if (rc != SC_OK) {
        return rc;
    }
    /* A flat scan of 120,000 x 1000 held the read lock for 50 ms, and a
     * writer (and, the lock preferring writers, every reader after it)
     * waited as long: the backend lets it go between blocks of rows. */
    const sc_index_yield y = {search_yield, ix};
    pthread_rwlock_rdlock(&ix->lock);
    rc = ix->be->search(ix->state, unit, k, threshold, hits, nhits, &y);
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

sc_err sc_index_search_batch(sc_index *ix, const float *qs, size_t nq,
                             unsigned k, float threshold, sc_hit *hits,
                             unsigned *nhits)
{
    if (ix == NULL ||
        (nq > 0 && (qs == NULL || hits == NULL || nhits == NULL))) {
        return SC_EINVAL;
    }
    sc_err rc = check_search(k, threshold);
    if (rc != SC_OK || nq == 0) {
        return rc;
    }
    if (nq > SIZE_MAX / sizeof(float) / ix->dim) {
        return SC_ERANGE;
    }
    float *units = malloc(nq * ix->dim * sizeof(float));
    if (units == NULL) {
        return SC_ENOMEM;
    }
    for (size_t i = 0; i < nq; i++) {
        rc = normalise(qs + i * ix->dim, ix->dim, units + i * ix->dim);
        if (rc != SC_OK) {
            free(units);
            return rc;
        }
    }
    /* A flat batch of 64 queries at 120,000 x 1000 held the read lock for
     * 200 ms, and an insert waited as long: the backend lets it go between
     * blocks of rows instead. */
    const sc_index_yield y = {search_yield, ix};
    pthread_rwlock_rdlock(&ix->lock);
    rc = ix->be->search_batch(ix->state, units, nq, k, threshold, hits, nhits,
                              &y);
    pthread_rwlock_unlock(&ix->lock);
    free(units);
    return rc;
}

sc_err sc_index_compact(sc_index *ix)
{
    if (ix == NULL) {
        return SC_EINVAL;
    }
    pthread_rwlock_wrlock(&ix->lock);
    sc_err rc = ix->be->compact(ix->state);
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

size_t sc_index_count(sc_index *ix)
{
    pthread_rwlock_rdlock(&ix->lock);
    size_t n = ix->be->count(ix->state);
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

size_t sc_index_memory(sc_index *ix)
{
    pthread_rwlock_rdlock(&ix->lock);
    size_t n = ix->be->memory(ix->state);
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

size_t sc_index_list_bytes(sc_index *ix)
{
    if (ix->be->list_bytes == NULL) {
        return 0;
    }
    pthread_rwlock_rdlock(&ix->lock);
    size_t n = ix->be->list_bytes(ix->state);
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

size_t sc_index_heap_bytes(size_t n)
{
    if (n == 0) {
        return 0;
    }
    size_t b = (n + 8 + 15) / 16 * 16;
    return b < 32 ? 32 : b;
}

size_t sc_index_fixed_bytes(const sc_index_params *p)
{
    if (sc_index_vector_bytes(p) == 0) {
        return 0;
    }
    const sc_index_backend *be = sc_index_backend_find(p->backend);
    return sc_index_heap_bytes(sizeof(struct sc_index)) +
           (be->fixed_bytes != NULL ? be->fixed_bytes(p) : 0);
}

size_t sc_index_vector_bytes(const sc_index_params *p)
{
    if (p == NULL || p->dim < 1 || p->dim > SC_INDEX_MAX_DIM ||
        (p->storage != SC_STORAGE_F32 && p->storage != SC_STORAGE_F16 &&
         p->storage != SC_STORAGE_I8)) {
        return 0;
    }
    const sc_index_backend *be = sc_index_backend_find(p->backend);
    if (be == NULL || be->vector_bytes == NULL ||
        !sc_index_backend_available(p->backend)) {
        return 0;
    }
    return be->vector_bytes(p);
}

uint32_t sc_index_dim(const sc_index *ix)
{
    return ix->dim;
}

sc_storage sc_index_storage(const sc_index *ix)
{
    return ix->storage;
}

const char *sc_index_backend_name(const sc_index *ix)
{
    return ix->be->name;
}
