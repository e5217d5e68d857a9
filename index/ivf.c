/* ivf.c - the FAISS IVF backends ("ivf-flat", "ivf-sq8", "auto") over
 * FAISS's C API. Every vector is also kept here in f32 under a slot number,
 * which is its FAISS label: until trained, searches scan those rows exactly;
 * once trained, FAISS proposes candidates and they are re-scored exactly from
 * the rows, so thresholds mean what they mean for flat. Training runs in a
 * background thread on a copy it takes in steps under the read lock; the
 * swap is atomic and replays what happened meanwhile. Deletes are tombstones,
 * removed from FAISS in batches; a search asks FAISS for as many more
 * candidates as it takes to get past them, and past a run of FAISS scores tied
 * at the re-score cutoff (cand_limit). */
#define _GNU_SOURCE
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sc_vec.h"
#include "index/cap.h"
#include "index/idmap.h"
#include "index/index.h"
#include "index/pass.h"
#include "index/simd/simd.h"

#ifdef SEMCACHE_HAVE_FAISS
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/clone_index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>
#include <omp.h>
#include <sys/stat.h>
#include <xxhash.h>

#define DEFAULT_NPROBE    16
#define DEFAULT_RERANK    32
#define MAX_CAND          4096
#define DEFAULT_TRAIN_MIN 20000
#define MIN_PER_LIST      39 /* FAISS warns below 39 training points a list */
#define SAMPLE_PER_LIST   64 /* k-means sample: FAISS caps at 256 anyway */
#define MAX_NLIST         65536
#define RETRAIN_GROWTH    4 /* auto nlist: retrain when N grew this much */
#define REMOVE_BATCH_MIN  256
/* Rows a FAISS add takes at once (a training's, a load's): a close
 * cancels a training between two, and FAISS's interrupt callback inside
 * one. Not smaller: FAISS assigns an add of fewer than 20 rows without
 * BLAS, whose scores can differ in the last bit, so the chunk bounds are
 * part of what index a training makes, the same since this was 65,536. */
#define ADD_CHUNK 65536
/* Slots a training copies (or rows it replays) under one hold of the read
 * lock, whatever the index's size: 1.5 MiB of rows at dim 384. */
#define COPY_STEP 1024
/* Rows added during a training that the swap itself adds, under the write
 * lock, on one thread: the rest go into the new index before, under read
 * holds. Below FAISS's threshold for BLAS (20 queries). */
#define SWAP_TAIL 16
/* Read-held replay rounds; adds still outpacing the replay after them
 * go into the new index as they come, and the backlog left is replayed
 * in held rounds of HELD_STEP rows (catch_up_held). */
#define MAX_CATCHUP       64
/* Rows a held replay round adds, on one thread: FAISS's OpenMP team for
 * an add of 1,024, on busy cores, stalled such a round (then a write
 * hold) for up to 2.5 s (searches waited that long); 256 on one thread,
 * 1.1 s at most beside a load of 18, as long as the waits during the
 * copy. Adds and removes wait for a round; searches no longer do. */
#define HELD_STEP         256
/* Condition variables a turn's takers wait on (qcv): more waiters than
 * that share them, and wake with one another. */
#define QSLOTS            8
#define FILE_MAGIC        "SCIVF001"

enum { S_FREE = 0, S_LIVE = 1, S_DEAD = 2 };

/* A slot's inc while a training runs: not in its copy (yet), in the new
 * index (copied, or replayed from tlog), or added after the training began
 * (in tlog, replayed into the new index before or at the swap; never
 * copied, so the copy holds at most the vectors live when it began). */
enum { I_OUT = 0, I_NEW = 1, I_LOGGED = 2 };

typedef enum kind { K_FLAT, K_SQ8 } kind;

typedef struct u32vec {
    uint32_t *a;
    size_t n, cap;
} u32vec;

typedef struct ivf {
    uint32_t dim;
    size_t stride; /* floats per row, padded like flat's f32 rows */
    kind kind;
    int auto_nlist;
    uint32_t nlist_cfg;
    /* Lists a query visits: read once by each search and passed to FAISS
     * with it (sc_faiss_ivf_search), so that ivf_set_nprobe takes no lock
     * and waits for nothing (a held round, an add's turn); FAISS's own
     * nprobe field is never set nor read. Relaxed: it orders nothing. */
    _Atomic uint32_t nprobe;
    uint32_t rerank;
    uint32_t train_min;
    const sc_simd_kernels *kern;

    /* Under sw: searches read-lock it; add, remove, compact and the swap at
     * the end of a training write-lock it. A training's copy steps and
     * replay rounds read-lock it and write inc[], which only the training
     * thread touches under a read lock (searches never read it; everyone
     * else writes it under the write lock). */
    pthread_rwlock_t sw;
    /* Turns: an add or a remove takes one before sw, and so does each of
     * a training's held replay rounds (catch_up_held), which then holds
     * sw for reading only: adds and removes wait for the round, searches
     * do not. First come, first served (a ticket lock: qnext is the next
     * ticket, qserve the one served): one change at most waits on sw for
     * writing, so that the searches queued there get in between any two,
     * and the changes queued when a round ends get in before the next.
     * qround: the turn served is a held round's. Under qmu. The wrapper
     * takes its lock for reading around add and remove (locks_itself),
     * so that one waiting here holds no search back there. Ticket t
     * waits on qcv[t % QSLOTS], so that a turn given wakes its taker
     * alone (one cv woke every waiter, on busy cores a convoy). */
    pthread_mutex_t qmu;
    pthread_cond_t qcv[QSLOTS];
    uint64_t qnext, qserve;
    bool qround;
    size_t n, cap; /* slots used / allocated */
    size_t nlive;
    float *rows;    /* cap * stride */
    uint64_t *ids;  /* slot -> id */
    uint8_t *state; /* slot -> S_* */
    uint8_t *inc;   /* slot -> I_*: where a training has it */
    sc_idmap map;   /* id -> slot */
    u32vec freel;   /* S_FREE slots below n */
    u32vec pend;    /* S_DEAD slots: tombstones, maybe still in FAISS */
    /* Times S_DEAD slots were freed for reuse (free_slot): an exact scan
     * that let sw go meanwhile may hold one of them as a candidate, now
     * another row (exact_resumed). freed: slot -> the low 32 bits of
     * reclaims when it was last freed (0: never), so that the scan starts
     * over only when one of its own candidates was freed. */
    uint64_t reclaims;
    uint32_t *freed;
    /* Compactions that renumbered the slots (shrink): a scan that let sw
     * go meanwhile starts over. */
    uint64_t shrinks;
    u32vec tlog;    /* slots added while a training runs */
    FaissIndex *fx; /* NULL until trained */
    size_t trained_n;
    /* What the last training made, before any vector went in (a copy:
     * centroids and, for SQ8, the quantiser's ranges): saved with
     * snapshots, so a restart need not train again. NULL until trained. */
    FaissIndex *tmpl;

    /* Training: tmu guards the thread handle and `training`. */
    pthread_mutex_t tmu;
    pthread_t th;
    int th_joinable;
    /* Also read under sw, and with no lock by ivf_training (an atomic
     * for that alone). */
    atomic_int training;
    atomic_int cancel; /* set by close: the training stops at its next step */
    sc_err train_rc;   /* result of the last training */
    char ferr[256];    /* last FAISS message, copied at once */
    size_t failed_at;  /* live count when training last failed */
    /* The live count an automatic training waits for after one was
     * abandoned (0: none): what a list needs (nlist x MIN_PER_LIST) and
     * as many more as that copy fell short by (maybe_train). Under sw. */
    size_t retry_at;
    size_t copy_short; /* training thread: its copy's shortfall, if any */
    float *copy;       /* the thread's rows, ncopy * dim */
    int64_t *copy_lab; /* their slots */
    uint64_t *copy_id; /* their ids: the k-means sample is taken in id order */
    size_t ncopy;
    size_t copy_cap; /* rows the copy has room for: nlive when it began */
    size_t copy_end; /* slots the copy walks: n when it began */
    uint32_t copy_nlist;
    /* The training's new index once its replay goes to held rounds
     * (catch_up_held): an add goes into it as well, in its turn (qmu),
     * instead of into tlog. NULL otherwise. nfx_rc: such an add failed
     * (the training then fails with it). Set and read in a turn; cleared
     * by the swap under sw for writing. */
    FaissIndex *nfx;
    sc_err nfx_rc;
    /* The counters ivf_train_stats reports, atomics read and written
     * relaxed, so that a stats read takes no lock (it would wait out a
     * swap, and the cache calls it under ns->mu):
     * rows the last swap added under the write lock; replay rounds the
     * last training held it through; rows in fx (note_fx_rows, under sw
     * for writing); trainings ended: swapped in, abandoned (SC_ERANGE),
     * failed. Each is true on its own, not all at one instant. */
    atomic_size_t swap_rows;
    atomic_size_t held_rounds;
    _Atomic uint64_t fx_rows;
    _Atomic uint64_t n_trained, n_abandoned, n_failed;
    /* What the training holds (ivf_train_stats' trained_bytes): FAISS's
     * fixed part of fx and of tmpl (faiss_fixed), or while a training
     * runs, at least what its own will hold, charged at its start
     * (start_training); set under sw for writing (note_trained), read
     * with no lock, as the counters above. */
    _Atomic uint64_t trained_bytes;
    /* What an automatic training waits for beyond train_min and its
     * lists' rows: retry_at, and twice failed_at (maybe_train); set with
     * them, read with no lock by ivf_train_stats (its wait_rows). */
    _Atomic uint64_t wait_floor;
} ivf;

/* Relaxed atomics: counters only, ordering nothing else. */
#define CNT_ADD(p, d) atomic_fetch_add_explicit((p), (d), memory_order_relaxed)
#define CNT_SET(p, x) atomic_store_explicit((p), (x), memory_order_relaxed)
#define CNT_GET(p)    atomic_load_explicit((p), memory_order_relaxed)

/* After fx changed, under sw for writing: what ivf_train_stats reports. */
static void note_fx_rows(ivf *v)
{
    CNT_SET(&v->fx_rows,
            v->fx != NULL ? (uint64_t)faiss_Index_ntotal(v->fx) : 0);
}

static sc_err vec_push(u32vec *v, uint32_t x)
{
    sc_err rc = SC_VEC_RESERVE(v->a, v->cap, v->n, 1, 64);
    if (rc == SC_OK) {
        v->a[v->n++] = x;
    }
    return rc;
}

/* Copies FAISS's message before anything can overwrite it; the error code
 * itself never leaves this file. */
static sc_err faiss_fail(ivf *v, const char *what)
{
    const char *m = faiss_get_last_error();
    snprintf(v->ferr, sizeof(v->ferr), "%s: %s", what, m ? m : "?");
    return SC_EBACKEND;
}

static uint32_t nlist_for(const ivf *v, size_t n)
{
    if (!v->auto_nlist) {
        return v->nlist_cfg;
    }
    double r = floor(sqrt((double)n) + 0.5);
    if (r > (double)n / MIN_PER_LIST) {
        r = floor((double)n / MIN_PER_LIST);
    }
    if (r < 1) {
        r = 1;
    }
    return r > MAX_NLIST ? MAX_NLIST : (uint32_t)r;
}

/* ---- open / close ------------------------------------------------------ */

/* Floats per row: padded like flat's f32 rows. */
static size_t stride_for(uint32_t dim)
{
    return (dim + 15u) / 16u * 16u;
}

static sc_err ivf_open_kind(const sc_index_params *p, kind k, int is_auto,
                            void **out)
{
    if (p->storage != SC_STORAGE_F32 || p->nlist > MAX_NLIST ||
        p->nprobe > MAX_NLIST) {
        return SC_EINVAL;
    }
    ivf *v = calloc(1, sizeof(*v));
    if (v == NULL) {
        return SC_ENOMEM;
    }
    v->dim = p->dim;
    v->stride = stride_for(p->dim);
    v->kind = k;
    v->auto_nlist = p->nlist == 0;
    v->nlist_cfg = p->nlist;
    atomic_init(&v->nprobe, p->nprobe ? p->nprobe : DEFAULT_NPROBE);
    v->rerank = p->rerank ? p->rerank : DEFAULT_RERANK;
    if (v->rerank > MAX_CAND) {
        v->rerank = MAX_CAND;
    }
    v->train_min = p->train_min ? p->train_min : DEFAULT_TRAIN_MIN;
    (void)is_auto;
    v->kern = sc_simd_active();
    sc_idmap_init(&v->map);
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* The swap must not starve under a steady stream of searches. */
    pthread_rwlockattr_setkind_np(&attr,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int prc = pthread_rwlock_init(&v->sw, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (prc != 0) {
        free(v);
        return SC_ENOMEM;
    }
    if (pthread_mutex_init(&v->tmu, NULL) != 0) {
        goto fail_tmu;
    }
    if (pthread_mutex_init(&v->qmu, NULL) != 0) {
        goto fail_qmu;
    }
    int ncv = 0;
    while (ncv < QSLOTS && pthread_cond_init(&v->qcv[ncv], NULL) == 0) {
        ncv++;
    }
    if (ncv < QSLOTS) {
        goto fail_qcv;
    }
    *out = v;
    return SC_OK;
fail_qcv:
    while (ncv > 0) {
        pthread_cond_destroy(&v->qcv[--ncv]);
    }
    pthread_mutex_destroy(&v->qmu);
fail_qmu:
    pthread_mutex_destroy(&v->tmu);
fail_tmu:
    pthread_rwlock_destroy(&v->sw);
    free(v);
    return SC_ENOMEM;
}

static sc_err open_flat(const sc_index_params *p, void **out)
{
    return ivf_open_kind(p, K_FLAT, 0, out);
}

static sc_err open_sq8(const sc_index_params *p, void **out)
{
    return ivf_open_kind(p, K_SQ8, 0, out);
}

static sc_err open_auto(const sc_index_params *p, void **out)
{
    return ivf_open_kind(p, K_FLAT, 1, out);
}

/* The tests' event hook (sc_index_set_training_event_hook). */
static struct {
    void (*_Atomic fn)(void *, sc_index_train_event);
    void *_Atomic arg;
} event_hook;

void sc_index_set_training_event_hook(void (*fn)(void *arg,
                                                 sc_index_train_event ev),
                                      void *arg)
{
    atomic_store(&event_hook.arg, arg);
    atomic_store(&event_hook.fn, fn);
}

static void event(sc_index_train_event ev)
{
    void (*f)(void *, sc_index_train_event) = atomic_load(&event_hook.fn);
    if (f != NULL) {
        f(atomic_load(&event_hook.arg), ev);
    }
}

/* Waits for this thread's turn (see qmu): round, a training's held
 * replay round. A change queued behind a held round says so to the
 * event hook (SC_TRAIN_EV_QUEUED) before it waits. */
static void turn_take(ivf *v, bool round)
{
    pthread_mutex_lock(&v->qmu);
    uint64_t t = v->qnext++;
    if (t != v->qserve && v->qround && !round) {
        pthread_mutex_unlock(&v->qmu);
        event(SC_TRAIN_EV_QUEUED);
        pthread_mutex_lock(&v->qmu);
    }
    while (t != v->qserve) {
        pthread_cond_wait(&v->qcv[t % QSLOTS], &v->qmu);
    }
    v->qround = round;
    pthread_mutex_unlock(&v->qmu);
}

/* Hands the turn to the next ticket, whoever waits for it. */
static void turn_give(ivf *v)
{
    pthread_mutex_lock(&v->qmu);
    v->qserve++;
    v->qround = false;
    pthread_cond_broadcast(&v->qcv[v->qserve % QSLOTS]);
    pthread_mutex_unlock(&v->qmu);
}

static void join_training(ivf *v)
{
    pthread_mutex_lock(&v->tmu);
    if (v->th_joinable) {
        pthread_t th = v->th;
        v->th_joinable = 0;
        pthread_mutex_unlock(&v->tmu);
        pthread_join(th, NULL);
        return;
    }
    pthread_mutex_unlock(&v->tmu);
}

/* A training in flight stops at its next step (cancelled): its work would
 * be thrown away. One past its last step ends as it would have (trained,
 * abandoned or failed), and is counted. */
static void ivf_stop(void *state)
{
    ivf *v = state;
    /* Once an index: sc_index_close_stats stops it, then closes it. */
    if (atomic_exchange(&v->cancel, 1) == 0) {
        event(SC_TRAIN_EV_CANCEL);
    }
    join_training(v);
}

static void ivf_close(void *state)
{
    ivf *v = state;
    ivf_stop(v);
    if (v->fx != NULL) {
        faiss_Index_free(v->fx);
    }
    if (v->tmpl != NULL) {
        faiss_Index_free(v->tmpl);
    }
    free(v->rows);
    free(v->ids);
    free(v->state);
    free(v->inc);
    free(v->freed);
    free(v->freel.a);
    free(v->pend.a);
    free(v->tlog.a);
    sc_idmap_fini(&v->map);
    for (int i = 0; i < QSLOTS; i++) {
        pthread_cond_destroy(&v->qcv[i]);
    }
    pthread_mutex_destroy(&v->qmu);
    pthread_mutex_destroy(&v->tmu);
    pthread_rwlock_destroy(&v->sw);
    free(v);
}

/* ---- storage ------------------------------------------------------------ */

/* Grows the slot arrays to nc > cap slots. */
static sc_err grow(ivf *v, size_t nc)
{
    float *r = realloc(v->rows, nc * v->stride * sizeof(float));
    if (r == NULL) {
        return SC_ENOMEM;
    }
    v->rows = r;
    uint64_t *ids = realloc(v->ids, nc * sizeof(*ids));
    if (ids == NULL) {
        return SC_ENOMEM;
    }
    v->ids = ids;
    uint8_t *st = realloc(v->state, nc);
    if (st == NULL) {
        return SC_ENOMEM;
    }
    v->state = st;
    uint8_t *inc = realloc(v->inc, nc);
    if (inc == NULL) {
        return SC_ENOMEM;
    }
    memset(inc + v->cap, 0, nc - v->cap);
    v->inc = inc;
    uint32_t *fr = realloc(v->freed, nc * sizeof(*fr));
    if (fr == NULL) {
        return SC_ENOMEM;
    }
    memset(fr + v->cap, 0, (nc - v->cap) * sizeof(*fr));
    v->freed = fr;
    v->cap = nc;
    return SC_OK;
}

static sc_err fx_add(ivf *v, FaissIndex *fx, size_t n, const float *x,
                     const int64_t *lab)
{
    if (faiss_Index_add_with_ids(fx, (idx_t)n, x, (const idx_t *)lab) != 0) {
        return faiss_fail(v, "add_with_ids");
    }
    return SC_OK;
}

/* fx_add on one thread, for a few rows under the write lock. FAISS opens an
 * OpenMP team for every add, which for a row or a few costs far more than
 * the add (and stalls on busy cores). The setting is the calling thread's
 * own and is put back. */
static sc_err fx_add_serial(ivf *v, FaissIndex *fx, size_t n, const float *x,
                            const int64_t *lab)
{
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    sc_err rc = fx_add(v, fx, n, x, lab);
    omp_set_num_threads(nt);
    return rc;
}

/* Adds one stored row to a FAISS index (rows are padded: copy dim floats). */
static sc_err fx_add_slot(ivf *v, FaissIndex *fx, uint32_t slot)
{
    int64_t lab = slot;
    return fx_add_serial(v, fx, 1, v->rows + (size_t)slot * v->stride, &lab);
}

/* Frees tombstone s for reuse, in the round of reclaims that is
 * v->reclaims + 1 (the caller counts it once it has freed them all).
 * Under sw for writing. */
static void free_slot(ivf *v, uint32_t s)
{
    v->state[s] = S_FREE;
    v->freed[s] = (uint32_t)(v->reclaims + 1);
    /* The free list has room: every pending slot was once below n. On a
     * failure the slot is not reusable, but never served: it is S_FREE. */
    (void)vec_push(&v->freel, s);
}

/* faiss_check.cpp: cuts each list of an IVF index whose capacity is more
 * than twice its size to its size; the index unchanged when its lists are
 * not FAISS's arrays (a list left larger is still correct, and counted:
 * ivf_memory reads the capacity). */
void sc_faiss_ivf_trim_lists(void *index);

/* Removes every pending tombstone from FAISS in one pass over the lists
 * (IDSelectorBatch), cuts the lists the removes left more than half empty
 * (sc_faiss_ivf_trim_lists: a remove keeps a list's capacity, so under
 * topic drift the lists would keep the capacity they once reached) and
 * frees the slots. Then, lists growing by doubling, each holds at most
 * twice its size: the bound the byte caps charge (sc_index_vector_bytes).
 * Caller holds sw for writing and no training runs (its copy may hold
 * those slots); after a training's swap v->fx is its new index. */
static sc_err flush_removals(ivf *v)
{
    if (v->pend.n == 0) {
        return SC_OK;
    }
    if (v->fx != NULL) {
        int64_t *lab = malloc(v->pend.n * sizeof(*lab));
        if (lab == NULL) {
            return SC_ENOMEM;
        }
        for (size_t i = 0; i < v->pend.n; i++) {
            lab[i] = v->pend.a[i];
        }
        FaissIDSelectorBatch *sel = NULL;
        if (faiss_IDSelectorBatch_new(&sel, v->pend.n, (const idx_t *)lab) !=
            0) {
            free(lab);
            return faiss_fail(v, "IDSelectorBatch_new");
        }
        size_t nrem = 0;
        int frc =
            faiss_Index_remove_ids(v->fx, (const FaissIDSelector *)sel, &nrem);
        sc_err rc = frc != 0 ? faiss_fail(v, "remove_ids") : SC_OK;
        faiss_IDSelector_free((FaissIDSelector *)sel);
        free(lab);
        note_fx_rows(v);
        if (rc != SC_OK) {
            return rc;
        }
        sc_faiss_ivf_trim_lists(v->fx);
    }
    for (size_t i = 0; i < v->pend.n; i++) {
        free_slot(v, v->pend.a[i]);
    }
    v->pend.n = 0;
    v->reclaims++;
    return SC_OK;
}

static size_t remove_batch(const ivf *v)
{
    size_t b = v->nlive / 32;
    return b < REMOVE_BATCH_MIN ? REMOVE_BATCH_MIN : b;
}

/* What the first add allocates, and the fewest slots a shrink leaves: one,
 * as flat's. A small index (a scope of a few vectors) then holds slots
 * for them, at most twice what the byte caps charge (sc_index_vector_bytes
 * counts a slot a vector); it took 1,024 slots at its first add, and kept
 * them at a shrink (at dim 384, 1.6 MB that no cap charged). Doubling
 * from one to 1,024 reallocates the slot arrays 10 times more. */
#define MIN_CAP 1

/* The slots an add into a full index (no free slot) grows the arrays to:
 * twice cap, unless tombstones take some of them. A trained index's wait
 * for a batch (remove_batch) to leave FAISS in one pass over its lists,
 * a training's for its swap (its copy and replay may hold their slots,
 * so they are not freed before). Doubled then, an index at a steady live
 * count of a power of two under churn (a remove and an add at a time)
 * doubled at its first add: 16,384 x 1024 trained, 202.2 to 273.6 MB
 * counted (210.5 MB now). Such an index grows by room for a batch, or
 * for the tombstones waiting if more (a training's), and at least cap/16,
 * so that a live count rising with deletes beside it reallocates the
 * arrays a bounded number of times a doubling. The slots taken are those
 * doubling took (n, n + 1, ...): only the capacity differs. */
static size_t grow_to(const ivf *v)
{
    if (v->cap == 0) {
        return MIN_CAP;
    }
    if (v->pend.n == 0) {
        return v->cap * 2;
    }
    size_t step = remove_batch(v);
    if (step < v->pend.n) {
        step = v->pend.n;
    }
    if (step < v->cap / 16) {
        step = v->cap / 16;
    }
    return step < v->cap ? v->cap + step : v->cap * 2;
}

/* ---- training ----------------------------------------------------------- */

static size_t faiss_fixed(const ivf *v, FaissIndex *x);

/* faiss_check.cpp: what sc_faiss_ivf_fixed_bytes will say of an IVF index
 * of nlist lists once trained (sq8: IVF-SQ8), before it is made. */
size_t sc_faiss_ivf_fixed_bound(int sq8, unsigned dim, size_t nlist);

/* Under sw for writing, fx or tmpl just changed (or a training ended
 * without changing them): trained_bytes is what they hold. */
static void note_trained(ivf *v)
{
    uint64_t b = 0;
    if (v->fx != NULL) {
        b += faiss_fixed(v, v->fx);
    }
    if (v->tmpl != NULL) {
        b += faiss_fixed(v, v->tmpl);
    }
    CNT_SET(&v->trained_bytes, b);
}

/* Under sw for writing, retry_at or failed_at just changed. */
static void note_wait_floor(ivf *v)
{
    uint64_t w = v->retry_at;
    if (v->failed_at != 0 && 2 * (uint64_t)v->failed_at > w) {
        w = 2 * (uint64_t)v->failed_at;
    }
    CNT_SET(&v->wait_floor, w);
}

/* For the training thread: has close asked it to stop? */
static bool cancelled(ivf *v)
{
    return atomic_load_explicit(&v->cancel, memory_order_relaxed) != 0;
}

static int stop_asked(void *arg)
{
    return cancelled(arg);
}

/* faiss_check.cpp: FAISS's k-means and adds on this thread stop (fail
 * with "computation interrupted") once fn(arg) returns non-zero. */
int sc_faiss_stop_when(int (*fn)(void *), void *arg);

typedef struct by_id {
    uint64_t id;
    size_t i;
} by_id;

static int by_id_cmp(const void *x, const void *y)
{
    const by_id *a = x;
    const by_id *b = y;
    return (a->id > b->id) - (a->id < b->id);
}

/* Trains an index on x[0..n) (ids[i] the id of row i, lab[i] its slot) and
 * adds them. The k-means sample is drawn, and handed to FAISS, in id order:
 * FAISS's k-means (its initial centroids are points picked by position)
 * makes other centroids from the same points in another order, and the
 * rows' slot order is not what a restart keeps (a restored index takes its
 * vectors in the snapshot's order), so a training at the same point after
 * a restart would otherwise give other answers. */
static sc_err build_index(ivf *v, const float *x, const int64_t *lab,
                          const uint64_t *ids, size_t n, uint32_t nlist,
                          FaissIndex **out, FaissIndex **tmpl)
{
    char desc[64];
    snprintf(desc, sizeof(desc), "IVF%u,%s", nlist,
             v->kind == K_SQ8 ? "SQ8" : "Flat");
    FaissIndex *fx = NULL;
    if (faiss_index_factory(&fx, (int)v->dim, desc, METRIC_INNER_PRODUCT) !=
        0) {
        return faiss_fail(v, "index_factory");
    }
    /* k-means on a strided sample: the data arrive in no particular order,
     * and FAISS would subsample to 256 points a list anyway. */
    size_t ns = (size_t)nlist * SAMPLE_PER_LIST;
    if (ns > n) {
        ns = n;
    }
    float *sample = malloc(ns * v->dim * sizeof(float));
    by_id *ord = malloc(n * sizeof(*ord));
    if (sample == NULL || ord == NULL) {
        free(sample);
        free(ord);
        faiss_Index_free(fx);
        return SC_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        ord[i].id = ids[i];
        ord[i].i = i;
    }
    qsort(ord, n, sizeof(*ord), by_id_cmp);
    for (size_t i = 0; i < ns; i++) {
        size_t j = ord[(size_t)((double)i * (double)n / (double)ns)].i;
        memcpy(sample + i * v->dim, x + j * v->dim, v->dim * sizeof(float));
    }
    free(ord);
    int frc = faiss_Index_train(fx, (idx_t)ns, sample);
    free(sample);
    if (frc != 0) {
        sc_err rc = cancelled(v) ? SC_ECANCELED : faiss_fail(v, "train");
        faiss_Index_free(fx);
        return rc;
    }
    FaissIndexIVF *iv = faiss_IndexIVF_cast(fx);
    if (iv == NULL) {
        faiss_Index_free(fx);
        return SC_EBACKEND;
    }
    /* Trained and still empty: the copy costs the centroids only. */
    if (faiss_clone_index(fx, tmpl) != 0) {
        sc_err rc = faiss_fail(v, "clone_index");
        faiss_Index_free(fx);
        return rc;
    }
    for (size_t i = 0; i < n; i += ADD_CHUNK) {
        size_t m = n - i < ADD_CHUNK ? n - i : ADD_CHUNK;
        sc_err rc = cancelled(v) ? SC_ECANCELED
                                 : fx_add(v, fx, m, x + i * v->dim, lab + i);
        if (rc != SC_OK && cancelled(v)) {
            rc = SC_ECANCELED;
        }
        if (rc != SC_OK) {
            faiss_Index_free(fx);
            faiss_Index_free(*tmpl);
            *tmpl = NULL;
            return rc;
        }
    }
    *out = fx;
    return SC_OK;
}

static struct {
    void (*_Atomic fn)(void *);
    void *_Atomic arg;
} training_hook, step_hook;

void sc_index_set_training_hook(void (*fn)(void *arg), void *arg)
{
    atomic_store(&training_hook.arg, arg);
    atomic_store(&training_hook.fn, fn);
}

void sc_index_set_training_step_hook(void (*fn)(void *arg), void *arg)
{
    atomic_store(&step_hook.arg, arg);
    atomic_store(&step_hook.fn, fn);
}

static void call_hook(void (*_Atomic *fn)(void *), void *_Atomic *arg)
{
    void (*f)(void *) = atomic_load(fn);
    if (f != NULL) {
        f(atomic_load(arg));
    }
}

#define STEP_HOOK() call_hook(&step_hook.fn, &step_hook.arg)

/* Copies the rows live when the training began into v->copy, COPY_STEP
 * slots a read hold of sw, so that no hold grows with the index: between
 * steps adds, removes and searches go on. Each copied slot becomes I_NEW.
 * A row deleted before its step is left out (the swap frees its
 * tombstone); one deleted after stays in the copy and becomes a tombstone
 * the swap keeps; one added meanwhile is I_LOGGED, never copied, and
 * replayed from tlog (catch_up, swap_in). Training thread only. */
static sc_err copy_live(ivf *v)
{
    size_t cap = v->copy_cap;
    v->copy = malloc(cap * v->dim * sizeof(float));
    v->copy_lab = malloc(cap * sizeof(*v->copy_lab));
    v->copy_id = malloc(cap * sizeof(*v->copy_id));
    if (v->copy == NULL || v->copy_lab == NULL || v->copy_id == NULL) {
        return SC_ENOMEM;
    }
    size_t m = 0;
    sc_err rc = SC_OK;
    for (size_t b = 0; b < v->copy_end && rc == SC_OK; b += COPY_STEP) {
        if (cancelled(v)) {
            rc = SC_ECANCELED;
            break;
        }
        size_t e = v->copy_end - b < COPY_STEP ? v->copy_end : b + COPY_STEP;
        /* The step's part of the copy touched first, without the lock: its
         * page faults (a fresh mapping) took longer than the copy. */
        size_t room = cap - m < COPY_STEP ? cap - m : COPY_STEP;
        memset(v->copy + m * v->dim, 0, room * v->dim * sizeof(float));
        pthread_rwlock_rdlock(&v->sw);
        for (size_t s = b; s < e; s++) {
            if (v->state[s] != S_LIVE || v->inc[s] != I_OUT) {
                continue;
            }
            /* A live I_OUT slot was live when the training began (an add
             * since makes it I_LOGGED): never more than cap of them. */
            if (m == cap) {
                rc = SC_EFULL;
                break;
            }
            memcpy(v->copy + m * v->dim, v->rows + s * v->stride,
                   v->dim * sizeof(float));
            v->copy_id[m] = v->ids[s];
            v->copy_lab[m++] = (int64_t)s;
            v->inc[s] = I_NEW;
        }
        pthread_rwlock_unlock(&v->sw);
        STEP_HOOK();
    }
    v->ncopy = m;
    return rc;
}

static void free_copy(ivf *v)
{
    free(v->copy);
    free(v->copy_lab);
    free(v->copy_id);
    v->copy = NULL;
    v->copy_lab = NULL;
    v->copy_id = NULL;
}

/* Gathers into x and lab the rows of tlog[*done..end) still live and
 * I_LOGGED, each then I_NEW (a delete after that leaves a tombstone the
 * swap keeps), and moves *done to end. Caller holds sw. */
static size_t gather_logged(ivf *v, size_t *done, size_t end, float *x,
                            int64_t *lab)
{
    size_t m = 0;
    for (size_t i = *done; i < end; i++) {
        uint32_t s = v->tlog.a[i];
        if (v->state[s] == S_LIVE && v->inc[s] == I_LOGGED) {
            memcpy(x + m * v->dim, v->rows + (size_t)s * v->stride,
                   v->dim * sizeof(float));
            lab[m++] = s;
            v->inc[s] = I_NEW;
        }
    }
    *done = end;
    return m;
}

/* The replay of a backlog that read-held rounds did not shorten (adds
 * outpacing them), bounded, in held rounds: each holds a turn (qmu), so
 * that no add or remove runs meanwhile, and sw for reading only, so that
 * searches do (nothing they read changes: the round writes inc[] and the
 * new index, which searches never read):
 *  - the first round sets v->nfx = fx and notes end0 = tlog.n; from then
 *    on an add goes into fx as it comes (ivf_add, in its own turn) and
 *    not into tlog, so the backlog is tlog[*done..end0) and never grows;
 *  - each round gathers and adds HELD_STEP rows of it at most (on this
 *    thread alone), then gives its turn back:
 *    ceil((end0 - *done) / HELD_STEP) rounds in all, no round longer
 *    than one add of HELD_STEP rows; its next turn comes after every add
 *    and remove queued meanwhile (turns are first come, first served).
 *    Before, a round held sw for writing: searches waited for it too,
 *    and (the wrapper's lock taken by an add for writing while it waited)
 *    for the add queued behind it;
 *  - the swap adds none of the backlog: tlog past end0 holds only adds
 *    made after one's own add into fx failed (nfx_rc), and the training
 *    then fails (swap_in) rather than swap in an index that lacks it.
 * Between rounds fx is touched only in a turn, by this thread or an add,
 * never by both at once. */
static sc_err catch_up_held(ivf *v, FaissIndex *fx, size_t *done, float *x,
                            int64_t *lab)
{
    turn_take(v, true);
    pthread_rwlock_rdlock(&v->sw);
    v->nfx = fx;
    v->nfx_rc = SC_OK;
    size_t end0 = v->tlog.n;
    sc_err rc = SC_OK;
    for (;;) {
        if (v->nfx_rc != SC_OK) {
            rc = v->nfx_rc;
            pthread_rwlock_unlock(&v->sw);
            turn_give(v);
            break;
        }
        size_t end = end0 - *done > HELD_STEP ? *done + HELD_STEP : end0;
        size_t m = gather_logged(v, done, end, x, lab);
        event(SC_TRAIN_EV_HELD);
        rc = m ? fx_add_serial(v, fx, m, x, lab) : SC_OK;
        CNT_ADD(&v->held_rounds, 1);
        pthread_rwlock_unlock(&v->sw);
        turn_give(v);
        STEP_HOOK();
        if (rc != SC_OK || *done == end0) {
            break;
        }
        if (cancelled(v)) {
            rc = SC_ECANCELED;
            break;
        }
        turn_take(v, true);
        pthread_rwlock_rdlock(&v->sw);
    }
    return rc;
}

/* Adds to fx the rows of tlog[*done..) still live and I_LOGGED, up to
 * COPY_STEP of them gathered under one read hold of sw (the add itself
 * runs without the lock: fx is the training thread's), until SWAP_TAIL or
 * fewer are left for the swap. After MAX_CATCHUP rounds (adds outpacing
 * them) the rest goes in in held rounds (catch_up_held), so that the
 * swap never adds the backlog under its write lock. */
static sc_err catch_up(ivf *v, FaissIndex *fx, size_t *done)
{
    float *x = malloc((size_t)COPY_STEP * v->dim * sizeof(float));
    int64_t *lab = malloc((size_t)COPY_STEP * sizeof(*lab));
    sc_err rc = x == NULL || lab == NULL ? SC_ENOMEM : SC_OK;
    bool caught = false;
    for (int r = 0; r < MAX_CATCHUP && rc == SC_OK; r++) {
        if (cancelled(v)) {
            rc = SC_ECANCELED;
            break;
        }
        pthread_rwlock_rdlock(&v->sw);
        size_t end = v->tlog.n;
        if (end - *done <= SWAP_TAIL) {
            pthread_rwlock_unlock(&v->sw);
            caught = true;
            break;
        }
        if (end - *done > COPY_STEP) {
            end = *done + COPY_STEP;
        }
        size_t m = gather_logged(v, done, end, x, lab);
        pthread_rwlock_unlock(&v->sw);
        rc = m ? fx_add(v, fx, m, x, lab) : SC_OK;
        STEP_HOOK();
    }
    if (rc == SC_OK && !caught) {
        rc = catch_up_held(v, fx, done, x, lab);
    }
    free(x);
    free(lab);
    return rc;
}

/* Swaps a freshly trained index in, under sw for writing: adds the rows of
 * tlog[done..) (added while it trained, past catch_up) still live, keeps
 * as tombstones the rows the new index holds (I_NEW) deleted meanwhile,
 * frees the other tombstones (the new index never held them). What it
 * does grows with the changes made during the training's last step, not
 * with the index; the old index comes back in *old, for the caller to free
 * once the lock is let go. */
static sc_err swap_in(ivf *v, FaissIndex *fx, size_t done, FaissIndex **old)
{
    if (v->nfx_rc != SC_OK) {
        return v->nfx_rc; /* an add into fx failed: fx lacks its row */
    }
    size_t m = 0;
    size_t nt = v->tlog.n - done;
    float *x = malloc((nt + 1) * v->dim * sizeof(float));
    int64_t *lab = malloc((nt + 1) * sizeof(*lab));
    if (x == NULL || lab == NULL) {
        free(x);
        free(lab);
        return SC_ENOMEM;
    }
    for (size_t i = done; i < v->tlog.n; i++) {
        uint32_t s = v->tlog.a[i];
        if (v->state[s] == S_LIVE && v->inc[s] == I_LOGGED) {
            memcpy(x + m * v->dim, v->rows + (size_t)s * v->stride,
                   v->dim * sizeof(float));
            lab[m++] = s;
        }
    }
    /* SWAP_TAIL rows at most, and those of the adds queued on the lock
     * meanwhile; none after catch_up_held (adds went into fx). */
    CNT_SET(&v->swap_rows, m);
    sc_err rc = m == 0           ? SC_OK
                : m <= SWAP_TAIL ? fx_add_serial(v, fx, m, x, lab)
                                 : fx_add(v, fx, m, x, lab);
    free(x);
    free(lab);
    if (rc != SC_OK) {
        return rc;
    }
    size_t keep = 0;
    for (size_t i = 0; i < v->pend.n; i++) {
        uint32_t s = v->pend.a[i];
        if (v->inc[s] == I_NEW) {
            v->pend.a[keep++] = s;
        } else {
            free_slot(v, s);
        }
    }
    v->reclaims += keep < v->pend.n;
    v->pend.n = keep;
    *old = v->fx;
    v->fx = fx;
    return SC_OK;
}

/* What the copy ended with is what the training has: the rows live at
 * its start, less those deleted before their step. An automatic nlist is
 * taken from the rows copied; a fixed one needs MIN_PER_LIST of them a
 * list (fewer, and FAISS warns, or fails below one a list). Too few: the
 * training is abandoned (SC_ERANGE), the index keeps what it had, and the
 * next trigger tries again: sc_index_train at once, an automatic one once
 * the live count reaches what the lists need plus the shortfall (kept in
 * copy_short, for train_main's retry_at). Training thread only. */
static sc_err check_copied(ivf *v)
{
    uint32_t nlist = v->auto_nlist ? nlist_for(v, v->ncopy) : v->copy_nlist;
    v->copy_short = 0;
    if (v->ncopy == 0 || v->ncopy < (size_t)nlist * MIN_PER_LIST) {
        v->copy_short = (size_t)nlist * MIN_PER_LIST - v->ncopy;
        v->copy_nlist = nlist;
        fprintf(stderr,
                "semcache: ivf training abandoned: %zu vectors left live at "
                "its copy, %zu needed for %u lists; the index keeps its "
                "training, the next automatic one waits for %zu live\n",
                v->ncopy, (size_t)nlist * MIN_PER_LIST, nlist,
                (size_t)nlist * MIN_PER_LIST + v->copy_short);
        return SC_ERANGE;
    }
    v->copy_nlist = nlist;
    return SC_OK;
}

static bool flush_and_shrink(ivf *v, sc_err *rc);
static void trim_shrunk(bool shrank);

static void *train_main(void *arg)
{
    ivf *v = arg;
    call_hook(&training_hook.fn, &training_hook.arg);
    FaissIndex *fx = NULL, *tmpl = NULL;
    /* Without it a close waits for the k-means and the adds to end. */
    (void)sc_faiss_stop_when(stop_asked, v);
    sc_err rc = copy_live(v);
    if (rc == SC_OK) {
        rc = check_copied(v);
    }
    if (rc == SC_OK) {
        rc = build_index(v, v->copy, v->copy_lab, v->copy_id, v->ncopy,
                         v->copy_nlist, &fx, &tmpl);
    }
    size_t ncopy = v->ncopy;
    free_copy(v);
    size_t done = 0;
    CNT_SET(&v->held_rounds, 0);
    CNT_SET(&v->swap_rows, 0);
    if (rc == SC_OK) {
        rc = catch_up(v, fx, &done);
    }
    /* Under the lock only what the last steps changed: whatever grows with
     * the index (the old one, a failed new one) is freed after it. */
    FaissIndex *old = NULL, *old_tmpl = NULL;
    pthread_rwlock_wrlock(&v->sw);
    if (rc == SC_OK) {
        rc = swap_in(v, fx, done, &old);
    }
    if (rc == SC_OK) {
        CNT_ADD(&v->n_trained, 1);
        v->retry_at = 0;
        note_wait_floor(v);
        note_fx_rows(v);
        v->trained_n = ncopy;
        old_tmpl = v->tmpl;
        v->tmpl = tmpl;
    } else {
        old = fx;
        old_tmpl = tmpl;
        /* Abandoned (too few rows copied) is not a failure: the next
         * trigger, on the rows live then, tries again. */
        if (rc == SC_ERANGE) {
            CNT_ADD(&v->n_abandoned, 1);
            v->retry_at = (size_t)v->copy_nlist * MIN_PER_LIST + v->copy_short;
            note_wait_floor(v);
        } else if (rc != SC_ECANCELED && !cancelled(v)) {
            /* A close's cancel counts as none, whatever the step it
             * stopped came back with: a FAISS add it interrupted says
             * SC_EBACKEND. */
            CNT_ADD(&v->n_failed, 1);
            v->failed_at = v->nlive;
            note_wait_floor(v);
        }
    }
    /* What it charged from its start becomes what is held: its own
     * index and training, or, where it did not swap in, the old ones. */
    note_trained(v);
    v->nfx = NULL;
    v->nfx_rc = SC_OK;
    /* Every slot I_OUT again: a byte a slot. */
    memset(v->inc, I_OUT, v->cap);
    v->tlog.n = 0;
    v->train_rc = rc;
    v->training = 0;
    /* Deletes made while it ran waited for it (the swap freed those the
     * new index never held): shrink now if few rows are left live, as a
     * remove's batch does, rather than wait for one (20,000 x 64 cut to
     * 2,000 meanwhile kept 10.8 of 20.3 MB until 256 more removes).
     * Trained or not: the tombstones left are all in v->fx. */
    bool shrank = false;
    if (sc_cap_shrunk(v->cap, v->nlive, MIN_CAP) != 0) {
        shrank = flush_and_shrink(v, NULL);
    }
    pthread_rwlock_unlock(&v->sw);
    trim_shrunk(shrank);
    event(SC_TRAIN_EV_END);
    if (old != NULL) {
        faiss_Index_free(old);
    }
    if (old_tmpl != NULL) {
        faiss_Index_free(old_tmpl);
    }
    return NULL;
}

/* Starts a background training, which copies the live rows itself
 * (copy_live). Caller holds sw for writing and tmu. */
static sc_err start_training(ivf *v)
{
    uint32_t nlist = nlist_for(v, v->nlive);
    if (v->nlive < (size_t)nlist * MIN_PER_LIST || v->nlive == 0) {
        return SC_ERANGE;
    }
    v->copy_cap = v->nlive;
    v->copy_end = v->n;
    v->ncopy = 0;
    v->copy_nlist = nlist;
    v->tlog.n = 0;
    v->training = 1;
    /* Its index and training (two copies of the centroids) charged from
     * now, in the caps too (the cache reads it after the add that started
     * it): the swap comes later, on another thread, where nothing tells
     * the cache. From nlist for the live count now: an automatic nlist
     * taken from the rows copied is no larger. A retraining is charged
     * the larger of the old and the new, not both (as the transient copy
     * is not). */
    uint64_t want =
        2 * (uint64_t)sc_faiss_ivf_fixed_bound(v->kind == K_SQ8, v->dim, nlist);
    if (want > CNT_GET(&v->trained_bytes)) {
        CNT_SET(&v->trained_bytes, want);
    }
    if (v->th_joinable) {
        /* The previous thread has finished (training was 0): reap it. */
        pthread_join(v->th, NULL);
        v->th_joinable = 0;
    }
    if (pthread_create(&v->th, NULL, train_main, v) != 0) {
        v->training = 0;
        note_trained(v);
        return SC_ENOMEM;
    }
    v->th_joinable = 1;
    event(SC_TRAIN_EV_BEGIN);
    return SC_OK;
}

/* After an add, under sw for writing: time to (re)train? */
static void maybe_train(ivf *v)
{
    if (v->training || v->train_min == SC_INDEX_TRAIN_MANUAL) {
        return;
    }
    if (v->failed_at != 0 && v->nlive < 2 * v->failed_at) {
        return;
    }
    /* After an abandoned training: what a list needs, and as many more
     * as its copy fell short by, so that a start losing as many rows
     * again before its copy still trains. Without it a scope at its
     * namespace's byte cap, whose training's charge (at the insert that
     * starts it) evicts its own rows below 39 a list, began and
     * abandoned a training each time it refilled (217 in 3,000 inserts,
     * docs/CONFIG.md): now it waits, for good if the cap never lets it
     * grow that far. */
    if (v->nlive < v->retry_at) {
        return;
    }
    int want;
    if (v->fx == NULL) {
        want = v->nlive >= v->train_min &&
               v->nlive >= (size_t)nlist_for(v, v->nlive) * MIN_PER_LIST;
    } else {
        want = v->auto_nlist && v->nlive >= RETRAIN_GROWTH * v->trained_n;
    }
    if (want && pthread_mutex_trylock(&v->tmu) == 0) {
        (void)start_training(v);
        pthread_mutex_unlock(&v->tmu);
    }
}

static sc_err ivf_train(void *state)
{
    ivf *v = state;
    pthread_mutex_lock(&v->tmu);
    pthread_rwlock_wrlock(&v->sw);
    sc_err rc = SC_OK;
    if (!v->training) {
        rc = start_training(v);
    }
    pthread_rwlock_unlock(&v->sw);
    if (rc == SC_OK && v->th_joinable) {
        pthread_join(v->th, NULL);
        v->th_joinable = 0;
    }
    pthread_mutex_unlock(&v->tmu);
    if (rc != SC_OK) {
        return rc;
    }
    pthread_rwlock_rdlock(&v->sw);
    rc = v->train_rc;
    pthread_rwlock_unlock(&v->sw);
    return rc;
}

static int ivf_trained(const void *state)
{
    ivf *v = (ivf *)state;
    pthread_rwlock_rdlock(&v->sw);
    int t = v->fx != NULL;
    pthread_rwlock_unlock(&v->sw);
    return t;
}

/* No lock: sw and the turns are what a held round holds. */
static int ivf_training(const void *state)
{
    const ivf *v = state;
    return atomic_load_explicit(&v->training, memory_order_relaxed);
}

static sc_err ivf_train_stats(void *state, sc_index_train_stats *out)
{
    ivf *v = state;
    /* No lock: the counters are atomics (see their field). */
    memset(out, 0, sizeof(*out));
    out->trainings = CNT_GET(&v->n_trained);
    out->abandoned = CNT_GET(&v->n_abandoned);
    out->failed = CNT_GET(&v->n_failed);
    out->faiss_rows = CNT_GET(&v->fx_rows);
    out->last_held_rounds = CNT_GET(&v->held_rounds);
    out->last_swap_rows = CNT_GET(&v->swap_rows);
    out->trained_bytes = CNT_GET(&v->trained_bytes);
    /* The rows maybe_train waits for, untrained: train_min, nlist's rows
     * (an automatic nlist for n rows is at most n / MIN_PER_LIST, so
     * MIN_PER_LIST), and the wait after an abandoned or failed one. */
    if (out->trained_bytes == 0 && !atomic_load(&v->training) &&
        v->train_min != SC_INDEX_TRAIN_MANUAL) {
        uint64_t n = v->train_min;
        uint64_t lists =
            (uint64_t)(v->auto_nlist ? 1 : v->nlist_cfg) * MIN_PER_LIST;
        uint64_t floor_n = CNT_GET(&v->wait_floor);
        n = n > lists ? n : lists;
        n = n > floor_n ? n : floor_n;
        out->wait_rows = n;
        out->wait_bytes =
            2 * (uint64_t)sc_faiss_ivf_fixed_bound(v->kind == K_SQ8, v->dim,
                                                   nlist_for(v, (size_t)n));
    }
    return SC_OK;
}

/* No lock: the searches that begin after it returns visit nprobe lists;
 * one in flight keeps the nprobe it began with (a batch too, for all its
 * queries). Before, it wrote FAISS's field under sw for writing, and
 * waited for a held round (and, in the wrapper, for an add waiting for
 * its turn), holding every search that came after it. */
static sc_err ivf_set_nprobe(void *state, uint32_t nprobe)
{
    ivf *v = state;
    atomic_store_explicit(&v->nprobe, nprobe, memory_order_relaxed);
    return SC_OK;
}

/* ---- add / remove / get -------------------------------------------------- */

static sc_err ivf_add(void *state, uint64_t id, const float *unit)
{
    ivf *v = state;
    turn_take(v, false);
    pthread_rwlock_wrlock(&v->sw);
    uint32_t slot;
    sc_err rc = SC_OK;
    if (sc_idmap_get(&v->map, id, &slot)) {
        rc = SC_EEXIST;
        goto out;
    }
    /* Full, untrained, tombstones pending: free them for reuse rather than
     * double the arrays (16,384 rows of dim 1024 with a remove and an add
     * at a time went from 67 to 135 MB, the tombstones waiting for a
     * batch of 512). Cheap without FAISS to remove them from; a paused
     * scan drops any of them it collected (exact_resumed).
     * Not while a training runs (its copy may hold those slots), nor
     * once trained (each would be a pass of FAISS's remove over its
     * lists, one an add under such churn): grow_to gives those room for
     * a batch of tombstones rather than double. */
    if (v->freel.n == 0 && v->n == v->cap && v->pend.n > 0 && v->fx == NULL &&
        !v->training) {
        (void)flush_removals(v);
    }
    int reuse = v->freel.n > 0;
    if (reuse) {
        slot = v->freel.a[v->freel.n - 1];
    } else {
        if (v->n >= UINT32_MAX) {
            rc = SC_EFULL;
            goto out;
        }
        if (v->n == v->cap && (rc = grow(v, grow_to(v))) != SC_OK) {
            goto out;
        }
        slot = (uint32_t)v->n;
    }
    /* During a training: replayed into its index from tlog, or, once its
     * replay goes to held rounds (catch_up_held), added into it here. */
    bool direct = v->training && v->nfx != NULL;
    bool logged = v->training && !direct;
    if (logged && (rc = vec_push(&v->tlog, UINT32_MAX)) != SC_OK) {
        goto out;
    }
    if ((rc = sc_idmap_put(&v->map, id, slot)) != SC_OK) {
        if (logged) {
            v->tlog.n--;
        }
        goto out;
    }
    float *row = v->rows + (size_t)slot * v->stride;
    memcpy(row, unit, v->dim * sizeof(float));
    memset(row + v->dim, 0, (v->stride - v->dim) * sizeof(float));
    if (v->fx != NULL && (rc = fx_add_slot(v, v->fx, slot)) != SC_OK) {
        sc_idmap_del(&v->map, id);
        if (logged) {
            v->tlog.n--;
        }
        goto out;
    }
    if (v->fx != NULL) {
        note_fx_rows(v);
    }
    if (logged) {
        v->tlog.a[v->tlog.n - 1] = slot;
    }
    /* After the live index's add, so that a failure here leaves it whole:
     * the add stands, the training fails (swap_in). */
    if (direct && (v->nfx_rc = fx_add_slot(v, v->nfx, slot)) != SC_OK) {
        v->nfx = NULL;
        direct = false;
    }
    if (reuse) {
        v->freel.n--;
    } else {
        v->n++;
    }
    v->ids[slot] = id;
    v->state[slot] = S_LIVE;
    /* During a training: in its index or replayed into it, never copied
     * (I_OUT after a failed direct add: the training fails). */
    v->inc[slot] = logged ? I_LOGGED : direct ? I_NEW : I_OUT;
    v->nlive++;
    maybe_train(v);
out:
    pthread_rwlock_unlock(&v->sw);
    turn_give(v);
    return rc;
}

static sc_err ivf_remove(void *state, uint64_t id)
{
    ivf *v = state;
    turn_take(v, false);
    pthread_rwlock_wrlock(&v->sw);
    uint32_t slot;
    sc_err rc = SC_OK;
    bool shrank = false;
    if (!sc_idmap_get(&v->map, id, &slot)) {
        rc = SC_ENOTFOUND;
        goto out;
    }
    /* A tombstone, untrained too: an exact scan paused meanwhile may hold
     * the slot as a candidate, and a slot reused at once would give it
     * another row under the same slot. flush_removals frees tombstones in
     * batches (exact_resumed: a scan that collected one drops it). */
    if ((rc = vec_push(&v->pend, slot)) != SC_OK) {
        goto out;
    }
    v->state[slot] = S_DEAD; /* never served from here on */
    sc_idmap_del(&v->map, id);
    v->nlive--;
    if (!v->training && v->pend.n >= remove_batch(v)) {
        /* A failure leaves tombstones that searches still filter. Once
         * freed, the slots shrink if few are live, as at a compaction:
         * nothing else compacts an IVF index (flat's remove compacts
         * flat), so a scope cut from 100,000 to 10,000 kept its peak. */
        shrank = flush_and_shrink(v, NULL);
    }
out:
    pthread_rwlock_unlock(&v->sw);
    turn_give(v);
    trim_shrunk(shrank);
    return rc;
}

static sc_err ivf_get(void *state, uint64_t id, float *out)
{
    ivf *v = state;
    pthread_rwlock_rdlock(&v->sw);
    uint32_t slot;
    sc_err rc = SC_ENOTFOUND;
    if (sc_idmap_get(&v->map, id, &slot)) {
        memcpy(out, v->rows + (size_t)slot * v->stride, v->dim * sizeof(float));
        rc = SC_OK;
    }
    pthread_rwlock_unlock(&v->sw);
    return rc;
}

/* faiss_check.cpp: relabels every entry of an IVF index's lists (label
 * l becomes to[l], l < n) and gives back the lists' spare capacity; -1,
 * the index unchanged, when a label is out of range or unmapped or the
 * lists are not FAISS's arrays. */
int sc_faiss_ivf_relabel(void *index, const uint32_t *to, size_t n);

/* Shrinks an array of cap elements of size es to ncap < cap of them; one
 * that cannot shrink stays as it was, larger than needed. */
static void *shrunk(void *a, size_t ncap, size_t es)
{
    void *r = realloc(a, ncap * es);
    return r != NULL ? r : a;
}

/* Just compacted (no tombstone left, no training): once the live rows fill
 * a quarter of the slots or less, they are renumbered 0..nlive-1 in slot
 * order, FAISS's lists relabelled to match and cut to their size
 * (sc_faiss_ivf_relabel: no row encoded or assigned again, so every
 * answer stays the same), and cap falls to the smallest power of two
 * (MIN_CAP at least) that leaves room for 2 nlive, as flat's does: the
 * live count must double before the arrays grow, and halve before the
 * next shrink. Large arrays shrink in place (realloc of an mmap'd block
 * unmaps its tail); FAISS's lists and the id map give theirs back to
 * malloc, whose free pages the caller hands back to the system
 * (malloc_trim). Returns whether it shrank. Under sw for writing: at a
 * compaction, at a remove's batch of tombstones freed, and at a
 * training's end. */
static bool shrink(ivf *v)
{
    size_t ncap = sc_cap_shrunk(v->cap, v->nlive, MIN_CAP);
    if (v->training || v->pend.n != 0 || ncap == 0) {
        return false;
    }
    uint32_t *to = malloc(v->n * sizeof(*to));
    if (to == NULL) {
        return false;
    }
    uint32_t w = 0;
    for (size_t s = 0; s < v->n; s++) {
        to[s] = v->state[s] == S_LIVE ? w++ : UINT32_MAX;
    }
    if (v->fx != NULL && sc_faiss_ivf_relabel(v->fx, to, v->n) != 0) {
        free(to);
        return false;
    }
    /* Rows move down only (to[s] <= s): each lands on a slot read
     * before. */
    for (size_t s = 0; s < v->n; s++) {
        uint32_t t = to[s];
        if (t == UINT32_MAX || t == s) {
            continue;
        }
        memcpy(v->rows + (size_t)t * v->stride, v->rows + s * v->stride,
               v->stride * sizeof(float));
        v->ids[t] = v->ids[s];
        /* The id is in the map already: this only overwrites. */
        (void)sc_idmap_put(&v->map, v->ids[t], t);
    }
    free(to);
    v->n = w;
    memset(v->state, S_LIVE, w);
    memset(v->inc, I_OUT, ncap);
    memset(v->freed, 0, ncap * sizeof(*v->freed));
    v->rows = shrunk(v->rows, ncap, v->stride * sizeof(float));
    v->ids = shrunk(v->ids, ncap, sizeof(*v->ids));
    v->state = shrunk(v->state, ncap, 1);
    v->inc = shrunk(v->inc, ncap, 1);
    v->freed = shrunk(v->freed, ncap, sizeof(*v->freed));
    v->cap = ncap;
    /* Empty, and as long as the slots were: built again as needed. */
    u32vec *lists[] = {&v->freel, &v->pend, &v->tlog};
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        free(lists[i]->a);
        *lists[i] = (u32vec){0};
    }
    v->shrinks++;
    sc_idmap_shrink(&v->map);
    return true;
}

/* The steps a remove's batch, a compaction and a training's end share,
 * under sw for writing with no training running: the tombstones freed
 * (flush_removals, whose code goes to *rc unless rc is NULL) and, if that
 * worked, the index shrunk (shrink). Returns whether it shrank: the caller
 * then calls trim_shrunk once it has let sw go. A failed flush leaves
 * tombstones that searches still filter. */
static bool flush_and_shrink(ivf *v, sc_err *rc)
{
    sc_err frc = flush_removals(v);
    if (rc != NULL) {
        *rc = frc;
    }
    return frc == SC_OK && shrink(v);
}

/* After flush_and_shrink, outside sw (an add or remove waits on it, not a
 * search; the wrapper's lock may still be held): FAISS's lists went back
 * to malloc in pieces it may keep resident, handed back to the system
 * (100,000 x 384 ivf-flat cut to 10,000: VmRSS 136.1 MB without this,
 * 130.8 with; the compaction 32 and 38 ms, one run each). */
static void trim_shrunk(bool shrank)
{
    if (shrank) {
        malloc_trim(0);
    }
}

/* Frees the tombstones (out of FAISS too), then gives back what the live
 * rows no longer need: slots and FAISS's lists (shrink), id map slots
 * (sc_idmap_shrink). During a training it does nothing: the training's
 * copy and replay hold slot numbers; its end frees the tombstones and
 * shrinks (train_main). */
static sc_err ivf_compact(void *state)
{
    ivf *v = state;
    pthread_rwlock_wrlock(&v->sw);
    sc_err rc = SC_OK;
    bool shrank = false;
    if (!v->training) {
        shrank = flush_and_shrink(v, &rc);
        sc_idmap_shrink(&v->map);
    }
    pthread_rwlock_unlock(&v->sw);
    trim_shrunk(shrank);
    return rc;
}

static size_t ivf_count(const void *state)
{
    ivf *v = (ivf *)state;
    pthread_rwlock_rdlock(&v->sw);
    size_t n = v->nlive;
    pthread_rwlock_unlock(&v->sw);
    return n;
}

/* Our part of a slot: the f32 row, the id, the state and inc flags, the
 * round it was last freed in. */
static size_t slot_bytes(size_t stride)
{
    return stride * sizeof(float) + sizeof(uint64_t) + 2 + sizeof(uint32_t);
}

/* FAISS's part of a vector once trained, as sc_index_vector_bytes counts
 * it: its code in an inverted list (an f32 copy for IVF-Flat, a byte a
 * dimension for SQ8) and its label, at the lists' capacity bound. Each
 * list is a pair of std::vector that FAISS appends to an entry at a time
 * (a bulk add too), and whose capacity at least doubles when full: a list
 * holds up to twice what it uses (measured over all lists: 1.5 to 1.6
 * times). The byte caps charge each vector the bound, so that they bound
 * FAISS's lists from above (docs/CONFIG.md, "What an IVF vector counts");
 * ivf_memory counts what the lists hold. */
#define LIST_GROWTH 2
static size_t faiss_bytes(kind k, uint32_t dim)
{
    return LIST_GROWTH *
           ((k == K_SQ8 ? dim : dim * sizeof(float)) + sizeof(int64_t));
}

/* faiss_check.cpp: the bytes an IVF index's lists hold, codes and labels
 * at their capacity (the C API shows neither); -1 when the lists are not
 * FAISS's arrays. */
int sc_faiss_ivf_list_bytes(const void *index, size_t *bytes);

/* What fx's lists hold: their capacity, read from FAISS (a shrink cuts it
 * to their size: twice that was counted before), or where it cannot be
 * read, its bound (faiss_bytes: twice what they use). */
static size_t list_bytes(const ivf *v)
{
    size_t b;
    if (sc_faiss_ivf_list_bytes(v->fx, &b) != 0) {
        b = (size_t)faiss_Index_ntotal(v->fx) * faiss_bytes(v->kind, v->dim);
    }
    return b;
}

/* faiss_check.cpp: what an IVF index holds beside its lists' codes and
 * labels (its objects, the lists' table, the centroids, SQ8's ranges);
 * -1 when it is not an IVF index of FAISS's arrays and a flat quantiser. */
int sc_faiss_ivf_fixed_bytes(const void *index, size_t *bytes);

/* What a trained FAISS index x holds beside its lists' codes and labels,
 * or where FAISS's objects are not the ones expected, its centroids
 * alone. */
static size_t faiss_fixed(const ivf *v, FaissIndex *x)
{
    size_t b;
    if (sc_faiss_ivf_fixed_bytes(x, &b) != 0) {
        b = faiss_IndexIVF_nlist(faiss_IndexIVF_cast(x)) * v->dim *
            sizeof(float);
    }
    return b;
}

/* Our struct (its locks and condition variables), slots, id map and the
 * free, tombstone and training-log lists of slots at their capacity and,
 * once trained, FAISS's lists at theirs: a list's room is counted as it
 * grows (by doubling, ahead of use) and as a shrink gives it back; and
 * FAISS's fixed part (faiss_fixed: the centroids above all) twice, in the
 * index and in the training kept for snapshots (tmpl). Takes O(nlist)
 * for the lists. Not counted: searches' scratch, a training's transient
 * copy and new index. */
static size_t ivf_memory(const void *state)
{
    ivf *v = (ivf *)state;
    pthread_rwlock_rdlock(&v->sw);
    size_t b = sc_index_heap_bytes(sizeof(*v)) +
               v->cap * slot_bytes(v->stride) +
               v->map.cap * SC_IDMAP_SLOT_BYTES +
               (v->freel.cap + v->pend.cap + v->tlog.cap) * sizeof(uint32_t);
    if (v->fx != NULL) {
        b += list_bytes(v) + faiss_fixed(v, v->fx);
    }
    if (v->tmpl != NULL) {
        b += faiss_fixed(v, v->tmpl);
    }
    pthread_rwlock_unlock(&v->sw);
    return b;
}

/* The cache's count of an index beside its vectors: our struct, its locks
 * and QSLOTS condition variables (1,216 bytes on x86-64 glibc, 1,232 as
 * malloc takes them). Not the centroids, which a scope holds only once
 * trained (2 x nlist x dim x 4 bytes): sc_index_memory counts them, and
 * the cache charges them from the train stats' trained_bytes. */
static size_t ivf_fixed_bytes(const sc_index_params *p)
{
    (void)p;
    return sc_index_heap_bytes(sizeof(ivf));
}

static size_t ivf_list_bytes(const void *state)
{
    ivf *v = (ivf *)state;
    pthread_rwlock_rdlock(&v->sw);
    size_t b = v->fx != NULL ? list_bytes(v) : 0;
    pthread_rwlock_unlock(&v->sw);
    return b;
}

/* One live vector with every slot and the id map full, trained: our slot
 * and the id map's slots as ivf_memory counts them, and FAISS's copy at
 * its lists' capacity bound (faiss_bytes; ivf_memory counts the lists'
 * capacity itself). "auto" counts as trained from the start, since it
 * trains as it grows. */
static size_t vector_bytes_kind(const sc_index_params *p, kind k)
{
    if (p->storage != SC_STORAGE_F32) {
        return 0; /* ivf_open_kind refuses it */
    }
    return slot_bytes(stride_for(p->dim)) +
           SC_IDMAP_SLOTS_PER_ID * SC_IDMAP_SLOT_BYTES + faiss_bytes(k, p->dim);
}

static size_t vector_bytes_flat(const sc_index_params *p)
{
    return vector_bytes_kind(p, K_FLAT);
}

static size_t vector_bytes_sq8(const sc_index_params *p)
{
    return vector_bytes_kind(p, K_SQ8);
}

/* ---- search ------------------------------------------------------------- */

typedef struct cand {
    float s;
    uint32_t slot;
} cand;

/* Best first: higher scores, then smaller ids, so which of a run of equal
 * scores make the k does not depend on their slots, which a restart
 * changes. The ids are read only at equal scores. */
static int cand_cmp(const ivf *v, const cand *a, const cand *b)
{
    if (a->s != b->s) {
        return a->s > b->s ? -1 : 1;
    }
    uint64_t ia = v->ids[a->slot];
    uint64_t ib = v->ids[b->slot];
    return (ia > ib) - (ia < ib);
}

/* Keeps the best k of c[0..*n) after adding (s, slot): c stays sorted. */
static void top_push(const ivf *v, cand *c, unsigned *n, unsigned k, float s,
                     uint32_t slot)
{
    cand x = {s, slot};
    if (*n == k && cand_cmp(v, &x, &c[k - 1]) >= 0) {
        return;
    }
    unsigned i = *n < k ? (*n)++ : k - 1;
    while (i > 0 && cand_cmp(v, &x, &c[i - 1]) < 0) {
        c[i] = c[i - 1];
        i--;
    }
    c[i] = x;
}

/* The score flat's f32 search gives the same row: the same kernel and row
 * layout, and near 1 the same exact re-score (simd.h). */
static float exact_from(const ivf *v, const float *q, uint32_t slot, float s)
{
    return s >= sc_simd_near_one(v->dim)
               ? sc_simd_exact_cos(q, v->rows + (size_t)slot * v->stride,
                                   v->dim)
               : s;
}

static float exact(const ivf *v, const float *q, uint32_t slot)
{
    float s;
    v->kern->dot_f32_rows(q, v->rows + (size_t)slot * v->stride, v->stride, 1,
                          v->dim, &s);
    return exact_from(v, q, slot, s);
}

static void emit(const ivf *v, const cand *c, unsigned n, float threshold,
                 sc_hit *hits, unsigned *nhits)
{
    unsigned out = 0;
    for (unsigned i = 0; i < n; i++) {
        if (c[i].s >= threshold) {
            float s = c[i].s;
            hits[out].similarity = s > 1.0f ? 1.0f : (s < -1.0f ? -1.0f : s);
            hits[out].id = v->ids[c[i].slot];
            out++;
        }
    }
    *nhits = out;
}

/* ---- the exact scan before training ------------------------------------
 * Until trained, a search scans every kept row exactly, as flat's f32 scan
 * scores them, and like flat's it reads them in holds of the locks
 * (sc_pass_run): between holds it lets sw go and then the index's lock
 * (the wrapper's yield), so that an insert waits for one hold, not for the
 * scan (a batch of 64 at 20,000 x 1000 held both 535 ms). A batch reads
 * each block of rows once for all its queries. */
#define EXACT_BLOCK 256 /* rows scored per kernel call */

/* Candidates a query keeps: k and as many spares, so that a removal of
 * one of them in a pause drops it rather than start the scan over (at
 * threshold 0, k 8, 20,000 x 1000, batches of 64 beside 500 to 5,000
 * removes and adds a second started over 1.25 to 2 times each, and 50
 * to 100% of them held the locks to their end; none since). */
#define EXACT_SPARE(k) (k)

/* A bound on what a query's candidates once left out (evicted or never
 * let in, the list full): the full list's last entry at the end of a
 * hold, so every row left out ranks below it, and every row the scan
 * read that ranks above it, live, is in the list. Id, not slot: the slot
 * may be another row's. */
typedef struct floor_key {
    float s;
    uint64_t id;
    bool set; /* false: the list was never full, nothing left out */
} floor_key;

typedef struct exact_pass {
    sc_pass sp; /* first: what sc_pass_run sees */
    ivf *v;
    const float *qs; /* nq unit queries, dim floats each */
    size_t nq;
    unsigned k;
    unsigned kk; /* k + EXACT_SPARE(k): what each list holds */
    float threshold;
    cand *top; /* query i's best, sorted: top[i * kk ..], nt[i] */
    unsigned *nt;
    floor_key *fl; /* query i's */
    /* v->reclaims when the pass began (or began over) or last resumed:
     * every candidate was live then, in the row it was scored on. */
    uint64_t reclaims;
    uint64_t shrinks; /* v->shrinks when it began: slots renumbered since? */
} exact_pass;

static size_t exact_begin(sc_pass *sp)
{
    exact_pass *e = (exact_pass *)sp;
    memset(e->nt, 0, e->nq * sizeof(*e->nt));
    for (size_t i = 0; i < e->nq; i++) {
        e->fl[i].set = false;
    }
    e->reclaims = e->v->reclaims;
    e->shrinks = e->v->shrinks;
    return e->v->n;
}

/* Whether (s, slot) ranks below f (cand_cmp's order): a row the list,
 * not full after candidates were dropped, must not take, since rows left
 * out that rank above it may come first. */
static bool below_floor(const ivf *v, const floor_key *f, float s,
                        uint32_t slot)
{
    if (!f->set || s != f->s) {
        return f->set && s < f->s;
    }
    return v->ids[slot] > f->id;
}

/* Rows [lo, hi) against every query; lo is a multiple of EXACT_BLOCK, so
 * the kernel sees the blocks a scan without pauses sees. v->rows and
 * v->ids are read afresh: an add in a pause may have moved them. */
static void exact_scan(sc_pass *sp, size_t lo, size_t hi)
{
    exact_pass *e = (exact_pass *)sp;
    const ivf *v = e->v;
    float sc[EXACT_BLOCK];
    for (size_t b = lo; b < hi; b += EXACT_BLOCK) {
        size_t nb = hi - b < EXACT_BLOCK ? hi - b : EXACT_BLOCK;
        for (size_t i = 0; i < e->nq; i++) {
            const float *q = e->qs + i * v->dim;
            v->kern->dot_f32_rows(q, v->rows + b * v->stride, v->stride, nb,
                                  v->dim, sc);
            for (size_t r = 0; r < nb; r++) {
                if (v->state[b + r] != S_LIVE) {
                    continue;
                }
                float s = exact_from(v, q, (uint32_t)(b + r), sc[r]);
                if (s >= e->threshold &&
                    (e->nt[i] == e->kk ||
                     !below_floor(v, &e->fl[i], s, (uint32_t)(b + r)))) {
                    top_push(v, e->top + i * e->kk, &e->nt[i], e->kk, s,
                             (uint32_t)(b + r));
                }
            }
        }
    }
    /* A full list's last is at least as good as all it left out (while
     * full its last only gets better): the floor, read while every
     * candidate is live, before a pause may free one of their slots. */
    for (size_t i = 0; i < e->nq; i++) {
        if (e->nt[i] == e->kk) {
            const cand *c = &e->top[i * e->kk + e->kk - 1];
            e->fl[i] = (floor_key){c->s, v->ids[c->slot], true};
        }
    }
}

/* After a pause: a candidate removed meanwhile (a tombstone now) would be
 * answered; one whose slot was freed meanwhile (in one of the rounds of
 * reclaims after e->reclaims) may now be another row. Either is dropped,
 * and the others keep their order: they are still the best of the rows
 * read that rank above the floor, and still live. The pass goes on while
 * each query keeps k of them (or never left a row out); with fewer, a row
 * it left out may be among the best k, and it starts over. So a removal
 * of a candidate costs a restart only past EXACT_SPARE(k) of one query's
 * in the scan. Tombstones freed that it did not collect change nothing
 * it holds (it started over at every round of reclaims, and past 1,500
 * removes/s at 20,000 x 1000 ran out of restarts and held the locks to
 * its end). Rows added meanwhile go past end, or into slots freed before,
 * which it may or may not have passed: they may be missed. */
static bool exact_resumed(sc_pass *sp)
{
    exact_pass *e = (exact_pass *)sp;
    const ivf *v = e->v;
    uint64_t rounds = v->reclaims - e->reclaims;
    if (v->shrinks != e->shrinks) {
        /* A compaction renumbered the slots (shrink): no slot it holds is
         * the row it was, and its end may be past the rows. */
        return false;
    }
    if (rounds >= UINT32_MAX) {
        return false; /* freed[]'s 32 bits cannot tell them apart */
    }
    /* Slot s was freed in one of those rounds when freed[s] is one of
     * e->reclaims + 1 .. e->reclaims + rounds (mod 2^32). A slot never
     * freed (0) may seem one after 2^32 rounds: a candidate too many
     * dropped. */
    uint32_t after = (uint32_t)e->reclaims + 1;
    for (size_t i = 0; i < e->nq; i++) {
        cand *c = e->top + i * e->kk;
        unsigned keep = 0;
        for (unsigned j = 0; j < e->nt[i]; j++) {
            uint32_t s = c[j].slot;
            if (v->state[s] == S_LIVE &&
                (uint32_t)(v->freed[s] - after) >= rounds) {
                c[keep++] = c[j];
            }
        }
        e->nt[i] = keep;
        if (e->fl[i].set && keep < e->k) {
            return false;
        }
    }
    e->reclaims = v->reclaims;
    return true;
}

/* A pause of the exact scan: the locks go in the reverse of the order the
 * search took them (the index's lock, then sw: every caller's order, an
 * insert's taking a turn between the two) and come back in that order.
 * Taking sw back first would deadlock: this reader holding sw and waiting
 * for the index's lock behind a queued writer of it (a compaction, a
 * save: the lock prefers writers), which waits for another search's read
 * hold of it, which waits for sw behind a queued swap (sw prefers writers
 * too), which waits for this reader's sw. */
typedef struct exact_pause {
    ivf *v;
    const sc_index_yield *y; /* the wrapper's: lets the index's lock go */
} exact_pause;

static void exact_yield(void *arg)
{
    exact_pause *ep = arg;
    pthread_rwlock_unlock(&ep->v->sw);
    ep->y->fn(ep->y->arg);
    pthread_rwlock_rdlock(&ep->v->sw);
}

/* The exact scan of the kept rows for nq queries, before training.
 * Caller holds sw for reading (let go and taken again between holds when y
 * is not NULL); v->fx may be set when it returns (a training swapped in
 * during a pause), and the answer is the exact scan's all the same. */
static sc_err search_exact(ivf *v, const float *qs, size_t nq, unsigned k,
                           float threshold, sc_hit *hits, unsigned *nhits,
                           const sc_index_yield *y)
{
    cand one[SC_INDEX_MAX_K + EXACT_SPARE(SC_INDEX_MAX_K)];
    unsigned one_nt;
    floor_key one_fl;
    unsigned kk = k + EXACT_SPARE(k);
    cand *top = one;
    unsigned *nt = &one_nt;
    floor_key *fl = &one_fl;
    if (nq > 1) {
        top = malloc(nq * kk * sizeof(*top));
        nt = malloc(nq * sizeof(*nt));
        fl = malloc(nq * sizeof(*fl));
        if (top == NULL || nt == NULL || fl == NULL) {
            free(top);
            free(nt);
            free(fl);
            return SC_ENOMEM;
        }
    }
    exact_pass e = {{exact_begin, exact_scan, exact_resumed},
                    v,
                    qs,
                    nq,
                    k,
                    kk,
                    threshold,
                    top,
                    nt,
                    fl,
                    0,
                    0};
    exact_pause ep = {v, y};
    const sc_index_yield ey = {exact_yield, &ep};
    size_t per =
        sc_pass_hold_rows(nq, v->dim, v->stride * sizeof(float), EXACT_BLOCK);
    sc_pass_run(&e.sp, per, y != NULL ? &ey : NULL);
    for (size_t i = 0; i < nq; i++) {
        emit(v, top + i * kk, nt[i] < k ? nt[i] : k, threshold, hits + i * k,
             nhits + i);
    }
    if (nq > 1) {
        free(top);
        free(nt);
        free(fl);
    }
    return SC_OK;
}

/* Candidates asked of FAISS first: rerank (at least k) and one more, which
 * tells whether the last of them ties with what FAISS did not return
 * (rescore), at most what the index holds. */
static size_t first_kc(const ivf *v, unsigned k, size_t total)
{
    size_t kc = (v->rerank > k ? v->rerank : k) + 1;
    return kc > total ? total : kc;
}

/* Live candidates re-scored exactly: rerank, at least k. */
static size_t rerank_n(const ivf *v, unsigned k)
{
    return v->rerank > k ? v->rerank : k;
}

/* The most candidates one query may ask of FAISS: enough to get past
 * every tombstone FAISS still holds (all are in pend: removals reach FAISS
 * in batches, and none while a training runs), so that tombstones never
 * hide a live vector the probed lists hold; at least MAX_CAND, at most what
 * the index holds. */
static size_t cand_limit(const ivf *v, unsigned k, size_t total)
{
    size_t want = rerank_n(v, k) + 1; /* first_kc's one more */
    size_t lim = v->pend.n + want > MAX_CAND ? v->pend.n + want : MAX_CAND;
    return lim > total ? total : lim;
}

/* Re-scores exactly into top[0..*nt) the first rerank_n live candidates of
 * FAISS's kc, lab[0..kc) (best first, FAISS's scores dist[0..kc)), as if
 * the tombstones among them were not there: a deleted vector changes no
 * answer (nor does a restart, which leaves them behind); and after them
 * every one whose FAISS score equals the last one's. Which of a run of
 * equal scores (ivf-sq8: vectors with the same codes) FAISS returns
 * depends on the order they went in, which a restart changes: the whole
 * run is taken, so the answer does not, up to lim candidates (at least
 * MAX_CAND). Returns 1 when more candidates (up to lim, cand_limit) should
 * be asked for: tombstones left fewer live ones than that, or the run of
 * ties may go on past kc. */
static int rescore(const ivf *v, const float *q, const float *dist,
                   const idx_t *lab, size_t kc, size_t lim, unsigned k,
                   float threshold, cand *top, unsigned *nt)
{
    size_t dead = 0, got = 0, want = rerank_n(v, k);
    float cut = 0.0f; /* FAISS's score of the want-th live candidate */
    size_t i = 0;
    *nt = 0;
    for (; i < kc && lab[i] >= 0; i++) {
        if (got - dead >= want && dist[i] != cut) {
            break;
        }
        got++;
        /* A label past the slots (a loaded FAISS index's ids are taken
         * from the file) counts as a dead one, never read. */
        if ((uint64_t)lab[i] >= v->n) {
            dead++;
            continue;
        }
        uint32_t s = (uint32_t)lab[i];
        if (v->state[s] != S_LIVE) {
            dead++;
            continue;
        }
        if (got - dead == want) {
            cut = dist[i];
        }
        float e = exact(v, q, s);
        if (e >= threshold) {
            top_push(v, top, nt, k, e, s);
        }
    }
    /* Every candidate read: with enough live ones, the last ties the
     * cut (or is the cut), and the run may go on past kc. */
    if (i < kc || kc >= lim) {
        return 0;
    }
    return got - dead >= want || dead > 0;
}

static size_t grow_kc(size_t kc, size_t lim)
{
    return kc * 4 > lim ? lim : kc * 4;
}

/* FAISS's search of n queries, visiting nprobe lists (v->nprobe, read
 * once by the caller). */
int sc_faiss_ivf_search(const void *index, int64_t n, const float *x, int64_t k,
                        size_t nprobe, float *dist, int64_t *lab);

/* One trained query from kc candidates on, growing kc while tombstones
 * crowd them out, visiting nprobe lists. Caller holds sw for reading;
 * v->fx != NULL. */
static sc_err search_from(ivf *v, const float *q, unsigned k, float threshold,
                          uint32_t nprobe, size_t kc, sc_hit *hits,
                          unsigned *nhits)
{
    size_t lim = cand_limit(v, k, (size_t)faiss_Index_ntotal(v->fx));
    cand top[SC_INDEX_MAX_K];
    unsigned nt = 0;
    /* On the stack: a query allocates nothing (48 KiB at MAX_CAND), unless
     * more tombstones than that stand in its way. */
    float sdist[MAX_CAND];
    idx_t slab[MAX_CAND];
    float *dist = sdist;
    idx_t *lab = slab;
    sc_err rc = SC_OK;
    while (kc > 0) {
        if (kc > MAX_CAND && dist == sdist) {
            dist = malloc(lim * sizeof(*dist));
            lab = malloc(lim * sizeof(*lab));
            if (dist == NULL || lab == NULL) {
                rc = SC_ENOMEM;
                break;
            }
        }
        if (sc_faiss_ivf_search(v->fx, 1, q, (int64_t)kc, nprobe, dist, lab) !=
            0) {
            /* Search is const in FAISS; v->ferr is not written from here
             * (readers run concurrently), the message is dropped. */
            rc = SC_EBACKEND;
            break;
        }
        if (!rescore(v, q, dist, lab, kc, lim, k, threshold, top, &nt)) {
            break;
        }
        kc = grow_kc(kc, lim);
    }
    if (dist != sdist) {
        free(dist);
        free(lab);
    }
    if (rc == SC_OK) {
        emit(v, top, nt, threshold, hits, nhits);
    }
    return rc;
}

/* Caller holds sw for reading (let go in pauses of an exact scan). */
static sc_err search_one(ivf *v, const float *q, unsigned k, float threshold,
                         sc_hit *hits, unsigned *nhits, const sc_index_yield *y)
{
    if (v->fx == NULL) {
        return search_exact(v, q, 1, k, threshold, hits, nhits, y);
    }
    size_t total = (size_t)faiss_Index_ntotal(v->fx);
    return search_from(v, q, k, threshold,
                       atomic_load_explicit(&v->nprobe, memory_order_relaxed),
                       first_kc(v, k, total), hits, nhits);
}

static sc_err ivf_search(void *state, const float *q, unsigned k,
                         float threshold, sc_hit *hits, unsigned *nhits,
                         const sc_index_yield *y)
{
    /* A probe scans a few lists: never long enough to pause. Before
     * training the exact scan of the kept rows pauses (search_exact). */
    ivf *v = state;
    pthread_rwlock_rdlock(&v->sw);
    sc_err rc = search_one(v, q, k, threshold, hits, nhits, y);
    pthread_rwlock_unlock(&v->sw);
    return rc;
}

/* Most bytes of FAISS results one batched call asks for: queries go to FAISS
 * in chunks of at most this many results' worth. */
#define BATCH_RESULT_BYTES (4u << 20)

/* A trained batch goes to FAISS as one search of many queries (the coarse
 * quantizer becomes one matrix product, FAISS may spread the queries over
 * its threads), then each query's candidates are re-scored exactly as a
 * single search does, and a query whose candidates were crowded out by
 * tombstones goes on alone exactly as it would have, so batch and single
 * answers agree. (FAISS scores the centroids of 20+ queries with BLAS, of
 * one with direct dot products: a centroid tie within rounding at the
 * nprobe-th list could make a batch probe another list.) */
static sc_err ivf_search_batch(void *state, const float *qs, size_t nq,
                               unsigned k, float threshold, sc_hit *hits,
                               unsigned *nhits, const sc_index_yield *y)
{
    /* A probe scans a few lists: never long enough to pause. Before
     * training the exact scan of the kept rows pauses (search_exact). */
    ivf *v = state;
    pthread_rwlock_rdlock(&v->sw);
    sc_err rc = SC_OK;
    if (v->fx == NULL) {
        rc = search_exact(v, qs, nq, k, threshold, hits, nhits, y);
        goto out;
    }
    size_t total = (size_t)faiss_Index_ntotal(v->fx);
    size_t kc = first_kc(v, k, total);
    size_t lim = cand_limit(v, k, total);
    /* One nprobe for the whole batch, its queries that go on alone too. */
    uint32_t np = atomic_load_explicit(&v->nprobe, memory_order_relaxed);
    size_t chunk =
        BATCH_RESULT_BYTES / (kc ? kc : 1) / (sizeof(float) + sizeof(idx_t));
    if (chunk == 0) {
        chunk = 1;
    }
    if (chunk > nq) {
        chunk = nq;
    }
    float *dist = kc ? malloc(chunk * kc * sizeof(*dist)) : NULL;
    idx_t *lab = kc ? malloc(chunk * kc * sizeof(*lab)) : NULL;
    if (kc == 0 || dist == NULL || lab == NULL) {
        /* Empty index, or no memory for the batch: one query at a time
         * gives the same answers. */
        free(dist);
        free(lab);
        for (size_t i = 0; i < nq && rc == SC_OK; i++) {
            rc = search_from(v, qs + i * v->dim, k, threshold, np, kc,
                             hits + i * k, nhits + i);
        }
        goto out;
    }
    for (size_t b = 0; b < nq && rc == SC_OK; b += chunk) {
        size_t nb = nq - b < chunk ? nq - b : chunk;
        const float *bq = qs + b * v->dim;
        if (sc_faiss_ivf_search(v->fx, (int64_t)nb, bq, (int64_t)kc, np, dist,
                                lab) != 0) {
            rc = SC_EBACKEND;
            break;
        }
        for (size_t i = 0; i < nb && rc == SC_OK; i++) {
            const float *q = bq + i * v->dim;
            cand top[SC_INDEX_MAX_K];
            unsigned nt = 0;
            if (rescore(v, q, dist + i * kc, lab + i * kc, kc, lim, k,
                        threshold, top, &nt)) {
                rc = search_from(v, q, k, threshold, np, grow_kc(kc, lim),
                                 hits + (b + i) * k, nhits + b + i);
            } else {
                emit(v, top, nt, threshold, hits + (b + i) * k, nhits + b + i);
            }
        }
    }
    free(dist);
    free(lab);
out:
    pthread_rwlock_unlock(&v->sw);
    return rc;
}

/* A training file is hostile like any file: FAISS reads its quantizer as
 * given and trusts it when adding (a list number past nlist writes past
 * the inverted lists). Its quantizer must have this dimension and exactly
 * nlist centroids, nlist within ours. */
static bool quantizer_ok(FaissIndexIVF *iv, uint32_t dim)
{
    size_t nlist = faiss_IndexIVF_nlist(iv);
    FaissIndex *q = faiss_IndexIVF_quantizer(iv);
    return q != NULL && nlist >= 1 && nlist <= MAX_NLIST &&
           faiss_Index_d(q) == (int)dim &&
           faiss_Index_ntotal(q) == (idx_t)nlist;
}

/* The same for how vectors are encoded, which FAISS also takes from the
 * file (faiss_check.cpp). */
int sc_faiss_ivf_codes_ok(const void *index, int sq8, unsigned dim);

static bool code_size_ok(FaissIndexIVF *iv, kind k, uint32_t dim)
{
    return sc_faiss_ivf_codes_ok(iv, k == K_SQ8, dim) == 1;
}

/* Caps a trained_n from a file, so that RETRAIN_GROWTH times it cannot
 * wrap (a larger one only means "no retraining"). */
static size_t trained_n_of(uint64_t tn)
{
    return tn > SIZE_MAX / RETRAIN_GROWTH ? SIZE_MAX / RETRAIN_GROWTH
                                          : (size_t)tn;
}

/* ---- save / load ---------------------------------------------------------
 * File: magic "SCIVF001", u32 dim, u32 kind, u64 nslots, then per slot u8
 * state (free or live) and, when live, u64 id and dim f32; then u8 trained
 * and, when 1, u64 trained_n and the FAISS index (faiss_write_index), whose
 * labels are those slots. Tombstones are flushed first, so the FAISS index
 * holds exactly the live slots. Host byte order: a local snapshot. */

static sc_err ivf_save(void *state, const char *path)
{
    ivf *v = state;
    /* A training in flight would swap under us: wait for it. */
    join_training(v);
    pthread_rwlock_wrlock(&v->sw);
    FILE *f = NULL;
    sc_err rc = flush_removals(v);
    if (rc != SC_OK) {
        goto out;
    }
    f = fopen(path, "wb");
    if (f == NULL) {
        rc = SC_EIO;
        goto out;
    }
    uint32_t hdr[2] = {v->dim, (uint32_t)v->kind};
    uint64_t ns = v->n;
    int ok = fwrite(FILE_MAGIC, 8, 1, f) == 1 && fwrite(hdr, 8, 1, f) == 1 &&
             fwrite(&ns, 8, 1, f) == 1;
    for (size_t s = 0; ok && s < v->n; s++) {
        uint8_t live = v->state[s] == S_LIVE;
        ok = fwrite(&live, 1, 1, f) == 1;
        if (ok && live) {
            ok = fwrite(&v->ids[s], 8, 1, f) == 1 &&
                 fwrite(v->rows + s * v->stride, sizeof(float), v->dim, f) ==
                     v->dim;
        }
    }
    uint8_t tr = v->fx != NULL;
    uint64_t tn = v->trained_n;
    ok = ok && fwrite(&tr, 1, 1, f) == 1;
    if (ok && tr) {
        ok = fwrite(&tn, 8, 1, f) == 1;
        if (ok && faiss_write_index(v->fx, f) != 0) {
            rc = faiss_fail(v, "write_index");
        }
    }
    if (!ok && rc == SC_OK) {
        rc = SC_EIO;
    }
out:
    if (f != NULL && fclose(f) != 0 && rc == SC_OK) {
        rc = SC_EIO;
    }
    pthread_rwlock_unlock(&v->sw);
    return rc;
}

static sc_err ivf_load_kind(const sc_index_params *p, kind k, int is_auto,
                            const char *path, void **out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return SC_EIO;
    }
    void *st = NULL;
    sc_err rc = ivf_open_kind(p, k, is_auto, &st);
    if (rc != SC_OK) {
        fclose(f);
        return rc;
    }
    ivf *v = st;
    char magic[8];
    uint32_t hdr[2];
    uint64_t ns;
    if (fread(magic, 8, 1, f) != 1 || memcmp(magic, FILE_MAGIC, 8) != 0 ||
        fread(hdr, 8, 1, f) != 1 || fread(&ns, 8, 1, f) != 1) {
        rc = SC_EBADFILE;
        goto fail;
    }
    if (hdr[0] != v->dim) {
        rc = SC_EDIM;
        goto fail;
    }
    if (hdr[1] != (uint32_t)k || ns >= UINT32_MAX) {
        rc = SC_EBADFILE;
        goto fail;
    }
    for (uint64_t i = 0; i < ns; i++) {
        /* Doubling as the rows come (a file that lies about ns fails at
         * its end, having grown at most twice what it held), but never
         * past the file's ns slots: a save of an index grown by a batch
         * (grow_to) loads at its size, not doubled to a power of two. */
        size_t nc = v->cap ? v->cap * 2 : MIN_CAP;
        if (nc > ns && ns > v->cap) {
            nc = (size_t)ns;
        }
        if (v->n == v->cap && (rc = grow(v, nc)) != SC_OK) {
            goto fail;
        }
        uint8_t live;
        if (fread(&live, 1, 1, f) != 1 || live > 1) {
            rc = SC_EBADFILE;
            goto fail;
        }
        float *row = v->rows + v->n * v->stride;
        memset(row, 0, v->stride * sizeof(float));
        uint32_t slot = (uint32_t)v->n;
        if (!live) {
            if ((rc = vec_push(&v->freel, slot)) != SC_OK) {
                goto fail;
            }
            v->state[slot] = S_FREE;
            v->n++;
            continue;
        }
        uint64_t id;
        uint32_t dummy;
        if (fread(&id, 8, 1, f) != 1 ||
            fread(row, sizeof(float), v->dim, f) != v->dim ||
            sc_idmap_get(&v->map, id, &dummy)) {
            rc = SC_EBADFILE;
            goto fail;
        }
        for (uint32_t j = 0; j < v->dim; j++) {
            if (!isfinite(row[j])) {
                rc = SC_EBADFILE;
                goto fail;
            }
        }
        if ((rc = sc_idmap_put(&v->map, id, slot)) != SC_OK) {
            goto fail;
        }
        v->ids[slot] = id;
        v->state[slot] = S_LIVE;
        v->n++;
        v->nlive++;
    }
    uint8_t tr;
    if (fread(&tr, 1, 1, f) != 1 || tr > 1) {
        rc = SC_EBADFILE;
        goto fail;
    }
    if (tr) {
        uint64_t tn;
        FaissIndex *fx = NULL;
        if (fread(&tn, 8, 1, f) != 1) {
            rc = SC_EBADFILE;
            goto fail;
        }
        if (faiss_read_index(f, 0, &fx) != 0) {
            rc = faiss_fail(v, "read_index");
            goto fail;
        }
        FaissIndexIVF *iv = faiss_IndexIVF_cast(fx);
        if (iv == NULL || faiss_Index_d(fx) != (int)v->dim ||
            (uint64_t)faiss_Index_ntotal(fx) != v->nlive ||
            !quantizer_ok(iv, v->dim) || !code_size_ok(iv, k, v->dim)) {
            faiss_Index_free(fx);
            rc = SC_EBADFILE;
            goto fail;
        }
        v->fx = fx;
        note_fx_rows(v);
        note_trained(v);
        v->trained_n = trained_n_of(tn);
    }
    fclose(f);
    *out = v;
    return SC_OK;
fail:
    fclose(f);
    ivf_close(v);
    return rc;
}

static sc_err load_flat(const sc_index_params *p, const char *path, void **o)
{
    return ivf_load_kind(p, K_FLAT, 0, path, o);
}

static sc_err load_sq8(const sc_index_params *p, const char *path, void **o)
{
    return ivf_load_kind(p, K_SQ8, 0, path, o);
}

static sc_err load_auto(const sc_index_params *p, const char *path, void **o)
{
    return ivf_load_kind(p, K_FLAT, 1, path, o);
}

/* ---- the training alone (kept with cache snapshots) ---------------------
 * File: magic "SCIVT002", u32 dim, u32 kind, u64 trained_n, u64 length and
 * u64 XXH3-64 of the FAISS part, then that part: the trained, empty FAISS
 * index (faiss_write_index). Host byte order. Version 1 (no length and
 * checksum) is refused: the cache then trains again. */

#define TRAIN_MAGIC "SCIVT002"

static sc_err ivf_save_training(void *state, const char *path)
{
    ivf *v = state;
    pthread_rwlock_rdlock(&v->sw);
    sc_err rc = SC_OK;
    if (v->tmpl == NULL) {
        rc = SC_ENOTSUP; /* not trained (or loaded from a whole save) */
        goto out;
    }
    /* The FAISS part first, in memory, for its length and checksum. */
    char *part = NULL;
    size_t plen = 0;
    FILE *m = open_memstream(&part, &plen);
    if (m == NULL) {
        rc = SC_ENOMEM;
        goto out;
    }
    if (faiss_write_index(v->tmpl, m) != 0) {
        rc = faiss_fail(v, "write_index");
    }
    if (fclose(m) != 0 && rc == SC_OK) {
        rc = SC_ENOMEM;
    }
    FILE *f = rc == SC_OK ? fopen(path, "wb") : NULL;
    if (rc == SC_OK && f == NULL) {
        rc = SC_EIO;
    }
    if (f != NULL) {
        uint32_t hdr[2] = {v->dim, (uint32_t)v->kind};
        uint64_t tail[3] = {v->trained_n, plen, XXH3_64bits(part, plen)};
        if (fwrite(TRAIN_MAGIC, 8, 1, f) != 1 || fwrite(hdr, 8, 1, f) != 1 ||
            fwrite(tail, 8, 3, f) != 3 ||
            (plen > 0 && fwrite(part, plen, 1, f) != 1)) {
            rc = SC_EIO;
        }
        if (fclose(f) != 0 && rc == SC_OK) {
            rc = SC_EIO;
        }
    }
    free(part);
out:
    pthread_rwlock_unlock(&v->sw);
    return rc;
}

static sc_err ivf_load_training(void *state, const char *path)
{
    ivf *v = state;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return SC_EIO;
    }
    char magic[8];
    uint32_t hdr[2];
    uint64_t tail[3]; /* trained_n, the FAISS part's length and checksum */
    FaissIndex *t = NULL;
    char *part = NULL;
    sc_err rc = SC_OK;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        rc = SC_EIO;
    } else if (fread(magic, 8, 1, f) != 1 ||
               memcmp(magic, TRAIN_MAGIC, 8) != 0 || fread(hdr, 8, 1, f) != 1 ||
               fread(tail, 8, 3, f) != 3) {
        rc = SC_EBADFILE;
    } else if (hdr[0] != v->dim) {
        rc = SC_EDIM;
    } else if (hdr[1] != (uint32_t)v->kind || tail[1] == 0 ||
               tail[1] != (uint64_t)sb.st_size - 40) {
        rc = SC_EBADFILE;
    } else if ((part = malloc(tail[1])) == NULL) {
        rc = SC_ENOMEM;
    } else if (fread(part, tail[1], 1, f) != 1 ||
               XXH3_64bits(part, tail[1]) != tail[2]) {
        rc = SC_EBADFILE;
    }
    fclose(f);
    uint64_t tn = tail[0];
    if (rc == SC_OK) {
        FILE *m = fmemopen(part, tail[1], "rb");
        if (m == NULL) {
            rc = SC_ENOMEM;
        } else {
            if (faiss_read_index(m, 0, &t) != 0) {
                rc = faiss_fail(v, "read_index");
            }
            fclose(m);
        }
    }
    free(part);
    if (rc == SC_OK &&
        (faiss_IndexIVF_cast(t) == NULL || faiss_Index_d(t) != (int)v->dim ||
         faiss_Index_ntotal(t) != 0 || !faiss_Index_is_trained(t) ||
         !quantizer_ok(faiss_IndexIVF_cast(t), v->dim) ||
         !code_size_ok(faiss_IndexIVF_cast(t), v->kind, v->dim))) {
        rc = SC_EBADFILE;
    }
    FaissIndex *fx = NULL;
    if (rc == SC_OK && faiss_clone_index(t, &fx) != 0) {
        rc = faiss_fail(v, "clone_index");
    }
    if (rc != SC_OK) {
        if (t != NULL) {
            faiss_Index_free(t);
        }
        return rc;
    }
    /* A training in flight would swap its own index in after ours. */
    join_training(v);
    pthread_rwlock_wrlock(&v->sw);
    /* Every live row into the trained index, in chunks; tombstones are
     * not carried over (the new index never held them). */
    float *x = malloc((size_t)ADD_CHUNK * v->dim * sizeof(float));
    int64_t *lab = malloc((size_t)ADD_CHUNK * sizeof(*lab));
    rc = x == NULL || lab == NULL ? SC_ENOMEM : SC_OK;
    size_t m = 0;
    for (size_t s = 0; s < v->n && rc == SC_OK; s++) {
        if (v->state[s] == S_LIVE) {
            memcpy(x + m * v->dim, v->rows + s * v->stride,
                   v->dim * sizeof(float));
            lab[m++] = (int64_t)s;
        }
        if (m == ADD_CHUNK || (s + 1 == v->n && m > 0)) {
            rc = fx_add(v, fx, m, x, lab);
            m = 0;
        }
    }
    free(x);
    free(lab);
    if (rc == SC_OK) {
        for (size_t i = 0; i < v->pend.n; i++) {
            free_slot(v, v->pend.a[i]);
        }
        v->reclaims += v->pend.n > 0;
        v->pend.n = 0;
        if (v->fx != NULL) {
            faiss_Index_free(v->fx);
        }
        v->fx = fx;
        note_fx_rows(v);
        if (v->tmpl != NULL) {
            faiss_Index_free(v->tmpl);
        }
        v->tmpl = t;
        note_trained(v);
        /* Restores load a training into an empty index, then add: the
         * training was made on tn vectors, however many are here yet. */
        v->trained_n = trained_n_of(tn);
    } else {
        faiss_Index_free(fx);
        faiss_Index_free(t);
    }
    pthread_rwlock_unlock(&v->sw);
    return rc;
}

#define IVF_OPS(open_fn, load_fn, bytes_fn)                                    \
    .locks_itself = 1, .vector_bytes = bytes_fn, .open = open_fn,              \
    .close = ivf_close, .add = ivf_add, .remove = ivf_remove, .get = ivf_get,  \
    .search = ivf_search, .search_batch = ivf_search_batch,                    \
    .compact = ivf_compact, .count = ivf_count, .memory = ivf_memory,          \
    .list_bytes = ivf_list_bytes, .fixed_bytes = ivf_fixed_bytes,              \
    .train = ivf_train, .trained = ivf_trained, .training = ivf_training,      \
    .train_stats = ivf_train_stats, .stop = ivf_stop,                          \
    .set_nprobe = ivf_set_nprobe, .save = ivf_save, .load = load_fn,           \
    .save_training = ivf_save_training, .load_training = ivf_load_training

const sc_index_backend sc_index_ivf_flat_backend = {
    .name = "ivf-flat",
    .version = "1",
    IVF_OPS(open_flat, load_flat, vector_bytes_flat)};
const sc_index_backend sc_index_ivf_sq8_backend = {
    .name = "ivf-sq8",
    .version = "1",
    IVF_OPS(open_sq8, load_sq8, vector_bytes_sq8)};
const sc_index_backend sc_index_auto_backend = {
    .name = "auto",
    .version = "1",
    IVF_OPS(open_auto, load_auto, vector_bytes_flat)};

#else /* !SEMCACHE_HAVE_FAISS: the backends link and say "not supported". */

void sc_index_set_training_hook(void (*fn)(void *arg), void *arg)
{
    (void)fn;
    (void)arg;
}

void sc_index_set_training_step_hook(void (*fn)(void *arg), void *arg)
{
    (void)fn;
    (void)arg;
}

void sc_index_set_training_event_hook(void (*fn)(void *arg,
                                                 sc_index_train_event ev),
                                      void *arg)
{
    (void)fn;
    (void)arg;
}

static sc_err nofaiss_open(const sc_index_params *p, void **state)
{
    (void)p;
    (void)state;
    return SC_ENOTSUP;
}

static sc_err nofaiss_load(const sc_index_params *p, const char *path,
                           void **state)
{
    (void)p;
    (void)path;
    (void)state;
    return SC_ENOTSUP;
}

/* Never called: open fails first. */
static void nofaiss_close(void *state)
{
    (void)state;
}

#define NOFAISS_OPS                                                            \
    .open = nofaiss_open, .close = nofaiss_close, .load = nofaiss_load

const sc_index_backend sc_index_ivf_flat_backend = {
    .name = "ivf-flat", .version = "0 (built without FAISS)", NOFAISS_OPS};
const sc_index_backend sc_index_ivf_sq8_backend = {
    .name = "ivf-sq8", .version = "0 (built without FAISS)", NOFAISS_OPS};
const sc_index_backend sc_index_auto_backend = {
    .name = "auto", .version = "0 (built without FAISS)", NOFAISS_OPS};

#endif
