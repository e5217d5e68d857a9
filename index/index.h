/* index.h - vectors in, ids and cosine similarities out.
 *
 * An sc_index holds unit vectors of one fixed dimension under caller-chosen
 * 64-bit ids. Callers go through the sc_index_* wrappers, which validate and
 * L2-normalise every vector and then call a backend: a small table of
 * operations (flat SIMD scan by default; FAISS IVF slots in beside it).
 * All functions are thread-safe: many searches run at once while adds and
 * removes wait for a write lock. */
#ifndef SC_INDEX_H
#define SC_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "common/sc_error.h"

#define SC_INDEX_MAX_DIM 4096u
#define SC_INDEX_MAX_K   16u

typedef enum sc_storage {
    SC_STORAGE_F32 = 0,
    SC_STORAGE_F16 = 1,
    SC_STORAGE_I8 = 2 /* per-vector scalar quantisation, exact re-rank */
} sc_storage;

/* train_min value: train only when sc_index_train is called. */
#define SC_INDEX_TRAIN_MANUAL UINT32_MAX

typedef struct sc_index_params {
    /* "flat" (NULL = "flat"); "ivf-flat" or "ivf-sq8" (FAISS IVF, forced);
     * "auto" (exact scan until the namespace is large enough to train, then
     * IVF-Flat, trained in the background and swapped in atomically). The
     * FAISS backends take f32 storage only and, in a build without FAISS,
     * fail to open with SC_ENOTSUP. */
    const char *backend;
    uint32_t dim; /* 1..SC_INDEX_MAX_DIM */
    sc_storage storage;
    /* Quantised storage: how many best candidates are re-scored at full
     * precision per query. 0 = default (64). Ignored for f32. */
    uint32_t rerank;
    /* Most threads one search may use; 0 or 1 = the caller's thread only.
     * Splitting only happens when the scan is large enough to pay. */
    uint32_t threads;
    /* IVF backends. nlist: inverted lists, 0 = about sqrt(N) at training
     * time (and retrained as N grows 4x). nprobe: lists visited per query,
     * 0 = default (16). train_min: live vectors before the first automatic
     * background training, 0 = default (20000), never below 39 * nlist;
     * SC_INDEX_TRAIN_MANUAL = only sc_index_train trains. With IVF, rerank
     * is how many FAISS candidates are re-scored exactly (0 = 32). */
    uint32_t nlist;
    uint32_t nprobe;
    uint32_t train_min;
} sc_index_params;

/* Fills p with the defaults: flat, f32, rerank 0, threads 1; dim 0. */
void sc_index_params_init(sc_index_params *p);

typedef struct sc_hit {
    uint64_t id;
    float similarity; /* cosine in [-1, 1] */
} sc_hit;

typedef struct sc_index sc_index;

/* What a long search calls between blocks of rows: fn(arg) lets the
 * index's read lock go and takes it again, so that a writer waiting for it
 * gets in. When fn returns, the backend's state may have changed in any
 * way a writer changes it (rows added, removed, moved by a compaction,
 * arrays reallocated). */
typedef struct sc_index_yield {
    void (*fn)(void *arg);
    void *arg;
} sc_index_yield;

/* How an IVF index's trainings went, since it was opened. */
typedef struct sc_index_train_stats {
    /* Trainings ended since the index was opened: swapped in; abandoned
     * (their copy found fewer than 39 live vectors a list, SC_ERANGE: the
     * index keeps what it had, and the next trigger tries again); failed
     * (FAISS or memory: automatic ones then wait for the live count to
     * double). A training cancelled by the index's close is none. */
    uint64_t trainings;
    uint64_t abandoned;
    uint64_t failed;
    /* Rows the FAISS index holds now, tombstones not yet removed from it
     * included (0 untrained). */
    uint64_t faiss_rows;
    /* The last training's replay of the rows added during it: rounds
     * under the write lock (each of up to 256 rows: the backlog that 64
     * read-held rounds left), and rows its swap added under that lock. */
    uint64_t last_held_rounds;
    uint64_t last_swap_rows;
    /* Bytes its training holds: FAISS's fixed part (centroids, SQ8's
     * ranges, its objects and tables of lists) of the index and of the
     * training kept for snapshots, as sc_index_memory counts them; while
     * a training runs, at least what that training will hold once it
     * swaps in (counted from its start, from the nlist it began with). 0
     * untrained. What the cache's byte caps charge a scope's index for its
     * training (docs/CONFIG.md). */
    uint64_t trained_bytes;
    /* Untrained, no training in flight and train_min not manual: the live
     * count its next automatic training waits for (train_min, 39 rows a
     * list, and after an abandoned or failed one, the more it waits for),
     * and the trained_bytes that training will be charged from its start.
     * 0 otherwise. Read with no lock, as the rest. */
    uint64_t wait_rows;
    uint64_t wait_bytes;
} sc_index_train_stats;

/* The operations a backend provides. Wrappers have already validated the
 * arguments, normalised every vector, and hold the right lock. Each search
 * writes hits sorted by similarity, best first, only those >= threshold. */
typedef struct sc_index_backend {
    const char *name;
    const char *version;
    /* 1: the backend orders its adds and removes against its searches
     * itself (IVF: its own locks, which a training's replay rounds hold
     * without the wrapper's), and the wrappers take their lock for
     * reading around add and remove, as around a search. Holding it for
     * writing while it waited for such a round, an add held back every
     * search queued behind it (the lock prefers writers). 0: add and
     * remove run under the wrapper's lock for writing. */
    int locks_itself;
    sc_err (*open)(const sc_index_params *p, void **state);
    void (*close)(void *state);
    sc_err (*add)(void *state, uint64_t id, const float *unit);
    sc_err (*remove)(void *state, uint64_t id);
    sc_err (*get)(void *state, uint64_t id, float *out);
    /* y (NULL: none) may be called between blocks of rows, never inside
     * one; the answer is then that of a scan that saw every row live at
     * its start and still live at its end (rows added meanwhile may be
     * missed, rows removed meanwhile are never answered). */
    sc_err (*search)(void *state, const float *unit_q, unsigned k,
                     float threshold, sc_hit *hits, unsigned *nhits,
                     const sc_index_yield *y);
    /* qs: nq unit queries back to back; hits: nq * k slots; nhits: nq.
     * y: as search's, for each query. */
    sc_err (*search_batch)(void *state, const float *unit_qs, size_t nq,
                           unsigned k, float threshold, sc_hit *hits,
                           unsigned *nhits, const sc_index_yield *y);
    sc_err (*compact)(void *state);
    size_t (*count)(const void *state);
    size_t (*memory)(const void *state);
    /* Optional (NULL: 0): sc_index_list_bytes. */
    size_t (*list_bytes)(const void *state);
    /* Optional (NULL: 0): sc_index_fixed_bytes less the wrapper's own. */
    size_t (*fixed_bytes)(const sc_index_params *p);
    /* What one live vector costs in an index opened with p (validated),
     * counted as memory counts it; NULL in a backend that is not built. */
    size_t (*vector_bytes)(const sc_index_params *p);
    /* Optional (NULL: the wrappers answer SC_ENOTSUP, or "not trained"). */
    sc_err (*train)(void *state);
    int (*trained)(const void *state);
    /* Optional (NULL: 0): 1 while a training is in flight. Takes no lock
     * that a training's held replay round holds. */
    int (*training)(const void *state);
    sc_err (*train_stats)(void *state, sc_index_train_stats *out);
    /* Optional (NULL: nothing to stop): cancels a training in flight and
     * waits for it to end, before close; the state is then only closed. */
    void (*stop)(void *state);
    /* Optional. Called with no lock held (it must wait for nothing):
     * searches that begin after it returns use the new nprobe. */
    sc_err (*set_nprobe)(void *state, uint32_t nprobe);
    sc_err (*save)(void *state, const char *path);
    sc_err (*load)(const sc_index_params *p, const char *path, void **state);
    /* What training made, without the vectors (cache snapshots). */
    sc_err (*save_training)(void *state, const char *path);
    sc_err (*load_training)(void *state, const char *path);
} sc_index_backend;

/* Registered backends; NULL when the name is unknown. */
const sc_index_backend *sc_index_backend_find(const char *name);

/* 1 when name (NULL = "flat") is a registered backend this build can open,
 * 0 when it is unknown or not built (the FAISS backends without FAISS). */
int sc_index_backend_available(const char *name);
extern const sc_index_backend sc_index_flat_backend;
extern const sc_index_backend sc_index_ivf_flat_backend; /* "ivf-flat" */
extern const sc_index_backend sc_index_ivf_sq8_backend;  /* "ivf-sq8" */
extern const sc_index_backend sc_index_auto_backend;     /* "auto" */

/* Creates an empty index. On success *out is owned by the caller and freed
 * with sc_index_close; on failure *out is untouched. Errors: SC_EINVAL
 * (unknown backend or storage), SC_ERANGE (dim), SC_ENOMEM. */
sc_err sc_index_open(const sc_index_params *p, sc_index **out);

/* Frees ix. An IVF training in flight is cancelled (it stops at its next
 * step: a copy or replay step, a k-means iteration, a block of adds) and
 * waited for. */
void sc_index_close(sc_index *ix);

/* Frees ix as sc_index_close does, and fills *out (not NULL) with its
 * train stats as they stand once a training in flight has ended: one that
 * the close cancelled, or one that came to its end before it could (an
 * abandonment counted after an earlier sc_index_get_train_stats, which a
 * caller keeping counts past the index would miss otherwise). Returns
 * what sc_index_get_train_stats would (SC_ENOTSUP: *out zeroed); ix is
 * freed whatever it returns. */
sc_err sc_index_close_stats(sc_index *ix, sc_index_train_stats *out);

/* Copies vec (dim floats), normalised, under id. Errors: SC_ENONFINITE,
 * SC_EZEROVEC, SC_EEXIST (id present: remove it first), SC_ENOMEM. On
 * failure the index is unchanged. */
sc_err sc_index_add(sc_index *ix, uint64_t id, const float *vec);

/* The same, for a vector sc_index_get gave back (a restore): one already a
 * unit vector within rounding is stored as it is, not normalised again, so
 * that it comes back bit for bit (normalising again moves an f32 vector by
 * a rounding and an f16 one by a step of f16, and with it every similarity
 * to it); any other is normalised as sc_index_add does. Errors: as
 * sc_index_add's. */
sc_err sc_index_add_stored(sc_index *ix, uint64_t id, const float *vec);

/* Tombstones id; the slot is reclaimed by a later compaction, which never
 * changes ids (sc_index_compact). Flat compacts itself once a quarter of
 * its slots are dead; an IVF backend frees its tombstones (out of FAISS
 * too) in batches (the larger of 256 and a 32nd of the live count), then
 * shrinks as a compaction does; not during a training, whose end does
 * (it frees them all and shrinks once a quarter of the slots or fewer are
 * live; else those its new index never held). A
 * remove that shrinks holds the index's lock for a time linear in the
 * live rows times dim. Errors: SC_ENOTFOUND. */
sc_err sc_index_remove(sc_index *ix, uint64_t id);

/* Copies the stored (normalised, possibly quantised) vector of id into out
 * (dim floats). Errors: SC_ENOTFOUND. */
sc_err sc_index_get(sc_index *ix, uint64_t id, float *out);

/* Top-k (1..SC_INDEX_MAX_K) stored vectors whose cosine with q is >=
 * threshold, best first, into hits[0..*nhits). q need not be normalised.
 * A flat index lets its lock go between blocks of rows (4 MiB of rows
 * each, at most 2^24 multiply-adds, at least 256 rows; a scan split
 * across nt threads reads 4 MiB of each thread's share a block, nt x 4
 * MiB in all), so that a writer waits for one block, not the scan: the
 * answer may then miss rows added during the call, and never holds a row
 * removed during it (as search_batch's). So does an IVF index ("auto"
 * too) before its first training, whose exact scan lets go its own lock
 * and then the index's between blocks of 4 MiB of rows; once trained, a
 * search probes a few lists and holds them to its end.
 * Errors: SC_ERANGE (k), SC_EINVAL (NaN threshold), SC_ENONFINITE,
 * SC_EZEROVEC. */
sc_err sc_index_search(sc_index *ix, const float *q, unsigned k,
                       float threshold, sc_hit *hits, unsigned *nhits);

/* nq queries (dim floats each, back to back) in one call. Query i's hits go
 * to hits[i * k ..] and their count to nhits[i]. Same errors as search;
 * on error no result is meaningful. A flat index lets its lock go between
 * blocks of rows (about 2^24 multiply-adds of the batch each and 4 MiB
 * of rows at most, or one kernel block where that is more: 256 rows of
 * SIMD tiles, or on the scalar tier 4,096 rows of sgemm, 16 MiB of f32
 * rows at dim 1024), so that a writer waits for one block, not the
 * batch: an answer may then miss rows added during the call, and never
 * holds a row removed during it. An IVF index ("auto" too) does the same
 * before its first training (its exact scan reads each block of rows for
 * all the queries); once trained, a batch holds the lock to its end. */
sc_err sc_index_search_batch(sc_index *ix, const float *qs, size_t nq,
                             unsigned k, float threshold, sc_hit *hits,
                             unsigned *nhits);

/* For tests: fn(arg) runs each time a search, single or batched, has let
 * its index's lock go between blocks of rows, on the searching thread, before
 * it takes the lock again (it may change the index: add, remove, compact).
 * NULL: none. */
void sc_index_set_yield_hook(void (*fn)(void *arg), void *arg);

/* Reclaims tombstoned slots now (it also happens by itself as they pile up).
 * When the live vectors then fill a quarter of the slots or fewer, slots
 * and id map shrink to twice what they need (a power of two) and the
 * freed pages go back to the OS; sc_index_memory falls with
 * them. IVF backends shrink the same (live rows renumbered, FAISS's lists
 * relabelled in place and cut to their size, no answer changed), and
 * during a training do nothing (its end does it). Either holds the index's
 * lock for a time linear in the live rows times dim. Ids never change. */
sc_err sc_index_compact(sc_index *ix);

/* IVF backends: trains now on the live vectors (waiting for a background
 * training in flight) and swaps the trained index in; searches keep being
 * served meanwhile. Errors: SC_ENOTSUP (backend cannot train), SC_ERANGE
 * (fewer than 39 * nlist live vectors, at its start or, deletes made
 * meanwhile, in its copy of them: it is then abandoned, and the index
 * keeps the training it had; nlist 0 takes about sqrt(N) of the rows
 * copied), SC_EBACKEND (FAISS failed; the index still serves by exact
 * scan), SC_ENOMEM. */
sc_err sc_index_train(sc_index *ix);

/* Tests only: fn(arg) is called at the start of every background IVF
 * training, on its thread, from now on (NULL = none). Without FAISS it is
 * never called. */
void sc_index_set_training_hook(void (*fn)(void *arg), void *arg);

/* Tests only: fn(arg) is called on a background IVF training's thread after
 * each step of its copy of the live vectors and of its replay of the ones
 * added meanwhile (up to 1,024 rows each, taken under a read hold of
 * the index's lock, or 256 in a held round, adds and removes held back,
 * once adds outpace it), with no lock held, from now on (NULL = none). Without
 * FAISS it is never called. It may add to and remove from the index, but
 * not while another thread saves it or loads its training: those wait for
 * the training holding the index's lock, which the hook's add then waits
 * for (a deadlock). */
void sc_index_set_training_step_hook(void (*fn)(void *arg), void *arg);

/* Tests only: the points of a background IVF training that
 * sc_index_set_training_event_hook reports. */
typedef enum sc_index_train_event {
    /* On the training's thread, in each replay round that holds the
     * index's adds and removes back (once adds outpace the read-held
     * rounds), while it holds them, before the round's add. Searches go
     * on meanwhile. */
    SC_TRAIN_EV_HELD,
    /* On the closing thread, in the index's close (sc_index_close or
     * sc_index_close_stats), once it has asked the training in flight
     * (if any) to stop, before it waits for it: once an index. */
    SC_TRAIN_EV_CANCEL,
    /* On the training's thread as it ends, its outcome counted (what
     * sc_index_get_train_stats reads), no lock held: a close waits for
     * it to return, so the index may still be asked. */
    SC_TRAIN_EV_END,
    /* On an adding or removing thread whose add or remove finds a held
     * replay round (SC_TRAIN_EV_HELD) being served, its turn taken: it is
     * queued behind that round, and waits for it once the hook returns.
     * Not reported when the round is only queued ahead of it (it waits
     * all the same). It holds the
     * index's lock for reading meanwhile: the hook must not call the
     * index. */
    SC_TRAIN_EV_QUEUED,
    /* On the thread that starts a background training (the add that
     * begins an automatic one, or sc_index_train), once the training's
     * thread is created, before the add or sc_index_train returns,
     * holding the index's locks: the hook must not call the index. The
     * training's own thread may not have run yet (its training hook not
     * yet called). */
    SC_TRAIN_EV_BEGIN
} sc_index_train_event;

/* Tests only: fn(arg, ev) is called at each event ev of a background IVF
 * training, from now on (NULL = none). Without FAISS it is never
 * called. */
void sc_index_set_training_event_hook(void (*fn)(void *arg,
                                                 sc_index_train_event ev),
                                      void *arg);

/* 1 when searches go through a trained IVF index, else 0 (exact scan). */
int sc_index_trained(sc_index *ix);

/* 1 when an add or remove of ix may wait for a training's held replay
 * round (SC_TRAIN_EV_HELD): an IVF index with a background training in
 * flight; else 0 (a flat index, an IVF one between trainings). Cheap: it
 * waits for no lock, a round's least of all. A training that starts after
 * it answered 0 reaches its held rounds only after its copy and a replay
 * of the adds made meanwhile. */
int sc_index_changes_may_wait(sc_index *ix);

/* Fills *out. Errors: SC_EINVAL, SC_ENOTSUP (not an IVF index, or a build
 * without FAISS). */
sc_err sc_index_get_train_stats(sc_index *ix, sc_index_train_stats *out);

/* Lists visited per IVF query (1..65536), from the next search on; a
 * search in flight keeps the nprobe it began with. Takes no lock and
 * waits for nothing: not for a training's held round nor for a change
 * waiting for one, and it holds no search back. Errors: SC_ENOTSUP,
 * SC_ERANGE. */
sc_err sc_index_set_nprobe(sc_index *ix, uint32_t nprobe);

/* Writes the whole index (ids, f32 rows and, when trained, the FAISS index
 * through faiss_write_index) to path. Errors: SC_ENOTSUP, SC_EIO,
 * SC_EBACKEND. */
sc_err sc_index_save(sc_index *ix, const char *path);

/* Opens an index from a file sc_index_save wrote, with p's backend (which
 * must match the file's), dim and IVF settings. On success *out is owned by
 * the caller; on failure it is untouched. Errors: SC_ENOTSUP, SC_EIO,
 * SC_EBADFILE, SC_EDIM, SC_EBACKEND, SC_ENOMEM. */
sc_err sc_index_load(const sc_index_params *p, const char *path,
                     sc_index **out);

/* IVF backends: writes what the last training made, without the vectors
 * (the centroids and, for SQ8, the quantiser's ranges: small), so that a
 * restart need not train again. Searches go on meanwhile. Errors:
 * SC_ENOTSUP (not an IVF index, or not trained by this process), SC_EIO,
 * SC_EBACKEND. */
sc_err sc_index_save_training(sc_index *ix, const char *path);

/* Makes ix a trained index from a file sc_index_save_training wrote (same
 * backend kind and dim): its vectors are added to that training, which
 * replaces any ix had. For a restart: searches wait while it runs.
 * Errors: SC_ENOTSUP, SC_EIO, SC_EBADFILE, SC_EDIM, SC_EBACKEND,
 * SC_ENOMEM (ix is then as it was). */
sc_err sc_index_load_training(sc_index *ix, const char *path);

size_t sc_index_count(sc_index *ix);  /* live vectors */
/* Bytes held for vectors and ids, at their arrays' capacity; IVF
 * backends also count their struct, their lists of free slots, of
 * tombstones and of slots added during a training (at their capacity)
 * and, once trained, FAISS's lists at
 * their capacity (sc_index_list_bytes) and its fixed part twice (the index
 * and the training kept for snapshots): centroids, SQ8's ranges, its
 * objects and tables of lists. */
size_t sc_index_memory(sc_index *ix);

/* The part of sc_index_memory that FAISS's inverted lists hold (a trained
 * IVF index): each vector's code and label at the lists' capacity, which
 * grows by doubling (between once and twice what they use), stays after
 * removes until their batch leaves FAISS, which cuts each list holding
 * more than twice its size to its size, and falls to their size at a
 * shrink (sc_index_compact). 0 for
 * flat and an untrained index. Takes the index's lock for reading and
 * O(nlist) time. */
size_t sc_index_list_bytes(sc_index *ix);

/* What an index opened with p takes beyond what sc_index_vector_bytes
 * counts for its vectors, while it is small: its structures and, for flat,
 * its arrays rounded up to malloc chunks at one vector. Some hundreds of
 * bytes, more than a small vector: many indexes of a few vectors each take
 * mostly this. The cache counts it once for each scope's index. 0 for
 * invalid p. */
size_t sc_index_fixed_bytes(const sc_index_params *p);

/* What malloc(n) takes from the heap, as glibc counts it: n and an 8-byte
 * header rounded up to 16, at least 32 (0 for n = 0). */
size_t sc_index_heap_bytes(size_t n);

/* Bytes one live vector takes in an index opened with p: what
 * sc_index_memory counts for it once every slot is used. Flat: the row at
 * its storage width, padded to 64 bytes (int8 adds an f16 copy for the
 * re-rank and a float scale), its id, a tombstone flag and the id map's
 * slots (26 bytes). IVF: an f32 row padded to 16 floats, its id, two flags,
 * the round it was last freed in (4 bytes), the id map's slots, and
 * FAISS's own copy once trained (4 bytes a dimension for IVF-Flat and
 * "auto", 1 for SQ8, plus an 8-byte label) twice over: FAISS's inverted lists
 * grow by doubling, so their bound is counted (docs/CONFIG.md); counted from
 * the first vector. sc_index_memory counts the lists' capacity instead
 * (sc_index_list_bytes), between once and twice that (a batch of removes
 * cuts the lists left more than half empty), once just after a shrink.
 * Not counted: our arrays
 * grown ahead of use (they double, or, full of tombstones waiting to be freed,
 * grow by room for a batch of them), searches' scratch, a training's transient
 * copy. 0 when p is invalid or its backend is not built. */
size_t sc_index_vector_bytes(const sc_index_params *p);
uint32_t sc_index_dim(const sc_index *ix);
sc_storage sc_index_storage(const sc_index *ix);
const char *sc_index_backend_name(const sc_index *ix);

/* "f32", "f16", "int8"; parse returns -1 when unknown ("i8" is accepted). */
const char *sc_storage_name(sc_storage s);
int sc_storage_parse(const char *name);

#endif
