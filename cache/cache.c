/* cache.c - namespaces, scopes and entries of the semantic cache: the exact
 * and semantic layers, TTL (a min-heap per namespace), LRU capacity (a list
 * per namespace and one over the whole cache), accounting and feedback. */
#define _GNU_SOURCE
#include "cache/cache.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/sc_hook.h"
#include "common/sc_seed.h"
#include "common/sc_utf8.h"
#include "common/sc_vec.h"
#include "cache/heap.h"
#include "cache/htab.h"
#include "cache/text.h"
#include "cache/vote.h"

/* Locks, always taken in this order: c->lock (rwlock: the namespace table
 * and namespaces' lifetimes; every call holds it, read, throughout; create
 * and drop write), then, for an insert, its namespace's ns->imu (one insert
 * at a time), then one ns->mu (a namespace's entries, scopes, counters),
 * then c->gmu (the global LRU list, the id -> entry map, the totals). An
 * sc_index has its own lock and is always innermost. No call holds two
 * namespace mutexes. Vector searches run with only c->lock held: the scope
 * searched is pinned so that it and its index outlive the search. So does
 * an insert's add into an index that existed before it (with ns->imu), so
 * that the namespace's lookups do not wait for it (insert_entry), and the
 * removal of a vector from its index (delete, expiry, eviction, replace,
 * quarantine, flush): done once ns->mu is let go, before c->lock is
 * (remove_later, drain_removals). */

#define CONTAINER(ptr, type, member)                                           \
    ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* Candidates asked of the index per lookup: the best, a runner-up for the
 * margin rule, and room to skip entries that expired or went meanwhile. */
#define LOOKUP_K 8u

/* A search threshold below every cosine, so a miss still learns its best. */
#define SEARCH_ALL (-2.0f)

/* Most a TTL may be (about 292 million years): now + ttl cannot wrap. */
#define TTL_MAX        ((uint64_t)INT64_MAX / 2)
#define NLIST_MAX      65536u /* nlist and nprobe, as index/ivf.c takes them */
#define NPROBE_DEFAULT 16u    /* index.h's default, for a reset to 0 */

/* The tests' hooks: before an insert's add into an existing index
 * (sc_cache_set_index_add_hook), and before an entry's vector leaves its
 * index (sc_cache_set_index_remove_hook). */
typedef SC_HOOK(void, (void *)) hook;
static hook add_hook, remove_hook;

void sc_cache_set_index_add_hook(void (*fn)(void *arg), void *arg)
{
    SC_HOOK_SET(add_hook, fn, arg);
}

void sc_cache_set_index_remove_hook(void (*fn)(void *arg), void *arg)
{
    SC_HOOK_SET(remove_hook, fn, arg);
}

static void call_hook(hook *h)
{
    void (*f)(void *) = atomic_load(&h->fn);
    if (f != NULL) {
        f(atomic_load(&h->arg));
    }
}

/* ---- small intrusive list (circular, with a sentinel head) --------------*/

typedef struct lnode {
    struct lnode *prev, *next;
} lnode;

static void list_init(lnode *h)
{
    h->prev = h;
    h->next = h;
}

static bool list_empty(const lnode *h)
{
    return h->next == h;
}

static void list_unlink(lnode *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n;
    n->next = n;
}

static void list_push_front(lnode *h, lnode *n)
{
    n->next = h->next;
    n->prev = h;
    h->next->prev = n;
    h->next = n;
}

static void list_push_back(lnode *h, lnode *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}

/* ---- objects ------------------------------------------------------------*/

/* A response and its tags, immutable once built, shared by the entry and by
 * every lookup result that served it. */
typedef struct blob {
    atomic_size_t refs;
    size_t response_len;
    uint64_t response_hash;
    const char *model, *feature, *user; /* point into data */
    unsigned char data[];               /* response, then three C strings */
} blob;

typedef struct scope {
    sc_hnode node;  /* in ns->scopes */
    sc_index *ix;   /* NULL until the scope's first vector */
    size_t entries; /* entries in this scope, text-only ones included */
    size_t vectors; /* those of them whose vector is in ix (in_index) */
    size_t pins;    /* calls using the scope without holding ns->mu */
    size_t rm_pins; /* of them, vectors of its gone entries still in ix */
    /* Out of ns->scopes (no entries left) while rm_pins held it: freed,
     * index and all, by the last of them (drain_removals). */
    bool gone;
    /* Its index, let go (no vector left, entries still) while rm_pins
     * held it: counted no more, closed once the last of them is done. */
    sc_index *retired;
    /* What s's tally has of the trainings of ix (once gone) and of
     * retired, counted when they stopped being counted as the scope's
     * index (tally_count). */
    uint64_t ix_counted, retired_counted;
    void *stats;    /* the embedder's statistics of its texts, or NULL */
    uint64_t stats_bytes; /* their memory, as counted in the byte caps */
    /* The scope itself and what its index takes beyond the vectors its
     * entries count (sc_index_fixed_bytes, and an IVF index's training:
     * own_bytes_sync), as counted in the byte caps. */
    uint64_t own_bytes;
    /* The bytes of its last entry put in with a vector, as counted in
     * the caps: what cap_keeps_untrained takes a row of its training to
     * cost. 0 before any. */
    uint64_t row_bytes;
    /* The caps evicted one of its own vector entries while it held fewer
     * vectors than its index's training waits for (starved), when the
     * namespace had taken starved_ins inserts and starved_bytes bytes
     * (ns's inserts_bytes): cap_keeps_untrained says it capped once a
     * cap's worth more went in and it is still below them. Cleared by an
     * insert that finds it no longer below them. */
    bool starved;
    uint64_t starved_ins, starved_bytes;
    size_t name_len;
    char name[]; /* NUL-terminated */
} scope;

struct ns;

typedef struct entry {
    sc_hnode by_id;   /* in ns->ids */
    sc_hnode by_gid;  /* in c->ids (c->gmu) */
    sc_hnode by_key;  /* in ns->exact while in_exact */
    lnode lru;        /* ns->lru, most recent first */
    lnode glru;       /* c->lru (c->gmu), most recent first */
    sc_heap_node exp; /* ns->expiry while expires_ms != 0 */
    struct ns *ns;
    scope *sc;
    blob *payload;
    uint64_t id;
    sc_text_key key;
    uint64_t created_ms, last_hit_ms, hit_count, expires_ms, ttl_ms;
    uint64_t input_tokens, output_tokens;
    uint64_t bytes;
    bool in_index, in_exact, quarantined, tokens_estimated;
    /* Came back from saved state: hit_count may miss hits served since it
     * was saved (hits are not logged), so a hit_count of 0 does not say it
     * was never served (feedback). */
    bool restored;
    size_t text_len;
    bool has_text;
    bool in_stats; /* its text is counted in its scope's statistics */
    void *prep;    /* its text prepared by the embedder (prep_new), or NULL */
    /* Not in c->entries / c->bytes (c->gmu): an entry being replaced,
     * taken out of the totals when its successor went in, so that the
     * overall caps never count both (insert_entry). */
    bool uncounted;
    char text[]; /* raw prompt text, text_len bytes */
} entry;

typedef struct ns {
    sc_hnode node; /* in c->nss */
    pthread_mutex_t mu;
    /* Its inserts, one at a time, each from before ns->mu until its entry
     * is in and journaled: one may add its vector to an existing index
     * with ns->mu let go (a training's held round may make it wait), and
     * ids must still be given out in the order of the namespace's inserts
     * (restore_passed). Only inserts take it, always before ns->mu. */
    pthread_mutex_t imu;
    sc_ns_config cfg; /* cfg.dim: as fixed so far */
    bool had_vector;  /* an index was made: dim and storage are fixed */
    bool model_fixed; /* cfg.embed_model is fixed (given, or a vector's) */
    bool reembedded;  /* restored from a model the embedder supersedes */
    sc_htab ids;      /* id -> entry */
    sc_htab exact;    /* exact key -> entry */
    sc_htab scopes;   /* name -> scope */
    lnode lru;
    sc_heap expiry;
    uint64_t entries, bytes, quarantined;
    sc_cache_stats st; /* counters; the "now" fields are filled on read */
    /* cap_keeps_untrained's line has been written for one of its scopes
     * (once a namespace; again after its config is replaced). */
    bool cap_logged;
    /* The bytes of every entry put in so far (st.inserts counts them). */
    uint64_t inserts_bytes;
    /* What its scopes' closed indexes counted (ivf_abandoned), shared
     * with their closes, which may end after the namespace is gone. */
    struct ix_tally *gone_ix;
    /* The embedder, when it keeps statistics of each scope's texts (for
     * its rescore: per scope, so that one tenant's texts never move
     * another's similarities). */
    const sc_cache_embedder *stats_em;
    struct sc_cache *cache; /* the cache it is in (for its byte count) */
    uint64_t serial;        /* this namespace, not another of its name before */
    bool configured;        /* a configure took since it was made */
    /* Restores: the highest id of the entries restored into it so far,
     * and, once a snapshot is read to its end, that id then (0: none, or
     * a flush since): entries of ids up to it that are not present were
     * gone when the snapshot read the namespace (restore_passed). */
    uint64_t restore_top, snap_top;
    /* Being freed (ns_free): its indexes close with it, so its entries'
     * vectors are not taken out of them one by one. */
    bool closing;
    char name[SC_CACHE_NS_NAME_MAX + 1];
} ns;

struct sc_cache {
    sc_cache_config cfg;
    pthread_rwlock_t lock;
    sc_htab nss;
    pthread_mutex_t gmu;
    sc_htab ids;
    lnode lru;
    uint64_t entries, bytes;
    uint64_t ns_serial; /* the last namespace's serial (lock held) */
    atomic_uint_fast64_t next_id;
    uint64_t exact_seed; /* random: the exact tables' secret (exact_hash) */
    /* Restore's moves to the embedder's model (sc_cache_reembed_counts). */
    atomic_uint_fast64_t re_ns, re_entries, re_dropped;
};

typedef enum gone {
    GONE_DELETE,
    GONE_REPLACED,
    GONE_EXPIRED,
    GONE_EVICTED,
    GONE_FLUSH
} gone;

/* ---- defaults, validation -----------------------------------------------*/

static uint64_t realtime_ms(void *arg)
{
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t now_ms(const sc_cache *c)
{
    return c->cfg.clock(c->cfg.clock_arg);
}

void sc_cache_config_init(sc_cache_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_namespaces = 1024;
    cfg->max_scopes = 4096;
    cfg->max_entries = 0;
    cfg->max_bytes = (uint64_t)1 << 30;
    cfg->clock = NULL;
    cfg->clock_arg = NULL;
}

void sc_cache_ns_config_init(sc_ns_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->dim = 0;
    cfg->storage = SC_STORAGE_F32;
    cfg->threshold = 0.90f;
    cfg->margin = 0.0f;
    cfg->auto_threshold = true;
    cfg->auto_margin = true;
    cfg->vote = -1;
    cfg->ttl_ms = 0;
    cfg->ttl_mode = SC_TTL_ABSOLUTE;
    cfg->max_entries = 0;
    cfg->max_bytes = 0;
    cfg->max_response_bytes = SC_CACHE_RESPONSE_DEFAULT;
}

static sc_err check_ns_config(const sc_ns_config *cfg)
{
    if (cfg->dim > SC_INDEX_MAX_DIM) {
        return SC_ERANGE;
    }
    if (cfg->storage != SC_STORAGE_F32 && cfg->storage != SC_STORAGE_F16 &&
        cfg->storage != SC_STORAGE_I8) {
        return SC_EINVAL;
    }
    if (cfg->ttl_mode != SC_TTL_ABSOLUTE && cfg->ttl_mode != SC_TTL_SLIDING) {
        return SC_EINVAL;
    }
    if (!isfinite(cfg->threshold) || cfg->threshold < -1.0f ||
        cfg->threshold > 1.0f) {
        return SC_ERANGE;
    }
    if (!isfinite(cfg->margin) || cfg->margin < 0.0f || cfg->margin > 2.0f) {
        return SC_ERANGE;
    }
    if (cfg->ttl_ms > TTL_MAX) {
        return SC_ERANGE;
    }
    if (cfg->max_response_bytes < 1 ||
        cfg->max_response_bytes > SC_CACHE_RESPONSE_LIMIT) {
        return SC_ERANGE;
    }
    if (memchr(cfg->embed_model, '\0', sizeof(cfg->embed_model)) == NULL) {
        return SC_EINVAL;
    }
    if (cfg->vote < -1 || cfg->vote > 1) {
        return SC_EINVAL;
    }
    if (memchr(cfg->backend, '\0', sizeof(cfg->backend)) == NULL) {
        return SC_EINVAL;
    }
    if (cfg->backend[0] != '\0' && strcmp(cfg->backend, "flat") != 0) {
        if (sc_index_backend_find(cfg->backend) == NULL ||
            cfg->storage != SC_STORAGE_F32) {
            return SC_EINVAL;
        }
        if (strcmp(cfg->backend, "auto") != 0 &&
            !sc_index_backend_available(cfg->backend)) {
            return SC_ENOTSUP;
        }
    }
    if (cfg->nlist > NLIST_MAX || cfg->nprobe > NLIST_MAX) {
        return SC_ERANGE;
    }
    return SC_OK;
}

/* The backend the namespace asked for ("" is flat). */
static const char *backend_name(const sc_ns_config *cfg)
{
    return cfg->backend[0] != '\0' ? cfg->backend : "flat";
}

/* The backend a scope's index opens with: "auto" scans flat in a build
 * without FAISS. */
static const char *ns_backend(const sc_ns_config *cfg)
{
    const char *b = backend_name(cfg);
    return sc_index_backend_available(b) ? b : "flat";
}

/* The parameters s's scopes open their indexes with, for vectors of dim. */
static void index_params(const ns *s, uint32_t dim, sc_index_params *p)
{
    sc_index_params_init(p);
    p->dim = dim;
    p->storage = s->cfg.storage;
    p->backend = ns_backend(&s->cfg);
    p->nlist = s->cfg.nlist;
    p->nprobe = s->cfg.nprobe;
    p->train_min = s->cfg.train_min;
}

/* What a vector of dim costs s's index (sc_index_vector_bytes): not the
 * storage width alone, as int8 keeps an f16 copy too and IVF a FAISS one. */
static uint64_t vector_bytes(const ns *s, uint32_t dim)
{
    sc_index_params p;
    index_params(s, dim, &p);
    size_t b = sc_index_vector_bytes(&p);
    /* 0 only for a dim no index takes: the add fails then. */
    return b != 0 ? b : (uint64_t)dim * sizeof(float);
}

static void set_nprobe_node(sc_hnode *n, void *arg)
{
    scope *sc = CONTAINER(n, scope, node);
    if (sc->ix != NULL) {
        /* Flat (auto without FAISS) answers SC_ENOTSUP: nothing to set. */
        (void)sc_index_set_nprobe(sc->ix, *(const uint32_t *)arg);
    }
}

bool sc_cache_ns_name_ok(const char *s)
{
    if (s == NULL) {
        return false;
    }
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        unsigned char ch = (unsigned char)s[n];
        if (n >= SC_CACHE_NS_NAME_MAX) {
            return false;
        }
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
                  ch == ':' || ch == '-';
        if (!ok) {
            return false;
        }
    }
    return n > 0;
}

/* A short optional C string: sets *len, SC_ETOOBIG past cap. */
static sc_err check_str(const char *s, size_t cap, size_t *len)
{
    if (s == NULL) {
        *len = 0;
        return SC_OK;
    }
    size_t n = strnlen(s, (size_t)cap + 1);
    if (n > cap) {
        return SC_ETOOBIG;
    }
    *len = n;
    return SC_OK;
}

/* Checks a caller's vector: dimension in range, finite, not all zero. */
static sc_err check_vec(const float *v, uint32_t dim)
{
    if (dim < 1 || dim > SC_INDEX_MAX_DIM) {
        return SC_EDIM;
    }
    bool nonzero = false;
    for (uint32_t i = 0; i < dim; i++) {
        if (!isfinite(v[i])) {
            return SC_ENONFINITE;
        }
        nonzero |= v[i] != 0.0f;
    }
    return nonzero ? SC_OK : SC_EZEROVEC;
}

/* Normal form of text[0..len) in a new buffer (*out, caller frees; NULL when
 * len is 0). */
static sc_err normalise_copy(const char *text, size_t len, char **out,
                             size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (len == 0) {
        return SC_OK;
    }
    char *buf = malloc(len);
    if (buf == NULL) {
        return SC_ENOMEM;
    }
    *out_len = sc_cache_text_normalise(text, len, buf);
    *out = buf;
    return SC_OK;
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* ---- blobs --------------------------------------------------------------*/

static blob *blob_new(const void *resp, size_t resp_len, const char *model,
                      size_t ml, const char *feature, size_t fl,
                      const char *user, size_t ul)
{
    blob *b = malloc(sizeof(*b) + resp_len + ml + fl + ul + 3);
    if (b == NULL) {
        return NULL;
    }
    atomic_init(&b->refs, 1);
    b->response_len = resp_len;
    b->response_hash = sc_cache_hash64(resp_len > 0 ? resp : "", resp_len);
    unsigned char *p = b->data;
    if (resp_len > 0) {
        memcpy(p, resp, resp_len);
    }
    p += resp_len;
    const char *src[3] = {model, feature, user};
    size_t len[3] = {ml, fl, ul};
    const char **dst[3] = {&b->model, &b->feature, &b->user};
    for (int i = 0; i < 3; i++) {
        if (len[i] > 0) {
            memcpy(p, src[i], len[i]);
        }
        p[len[i]] = '\0';
        *dst[i] = (const char *)p;
        p += len[i] + 1;
    }
    return b;
}

static void blob_ref(blob *b)
{
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

static void blob_unref(blob *b)
{
    if (b != NULL &&
        atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) {
        free(b);
    }
}

static bool same_response(const blob *a, const blob *b)
{
    return a->response_len == b->response_len &&
           a->response_hash == b->response_hash;
}

/* ---- namespaces and scopes (callers hold the locks named) ---------------*/

/* c->lock held. */
static ns *ns_find(const sc_cache *c, const char *name)
{
    uint64_t h = sc_cache_hash64(name, strlen(name));
    for (sc_hnode *n = sc_htab_first(&c->nss, h); n != NULL;
         n = sc_htab_next(n, h)) {
        ns *s = CONTAINER(n, ns, node);
        if (strcmp(s->name, name) == 0) {
            return s;
        }
    }
    return NULL;
}

/* The namespace of that name, and of that serial unless it is 0; lock
 * held. */
static ns *ns_find_serial(sc_cache *c, const char *name, uint64_t serial)
{
    ns *s = ns_find(c, name);
    return s != NULL && (serial == 0 || s->serial == serial) ? s : NULL;
}

/* ns->mu held. */
static scope *scope_find(const ns *s, const char *name, size_t len)
{
    uint64_t h = sc_cache_hash64(name, len);
    for (sc_hnode *n = sc_htab_first(&s->scopes, h); n != NULL;
         n = sc_htab_next(n, h)) {
        scope *sc = CONTAINER(n, scope, node);
        if (sc->name_len == len && memcmp(sc->name, name, len) == 0) {
            return sc;
        }
    }
    return NULL;
}

/* ns->mu held, c->gmu not. Sets a count of the scope's (*field) to now,
 * in the namespace's and the cache's bytes too, so that the byte caps see
 * it. */
static void scope_count_set(ns *s, uint64_t *field, uint64_t now)
{
    uint64_t old = *field;
    if (now == old) {
        return;
    }
    *field = now;
    s->bytes = s->bytes - old + now;
    pthread_mutex_lock(&s->cache->gmu);
    s->cache->bytes = s->cache->bytes - old + now;
    pthread_mutex_unlock(&s->cache->gmu);
}

/* ns->mu held, c->gmu not. Counts the scope's statistics at their memory
 * now (0: freed). */
static void stats_bytes_set(ns *s, scope *sc, uint64_t now)
{
    scope_count_set(s, &sc->stats_bytes, now);
}

/* ns->mu held, c->gmu not. Counts the scope's own memory, once it is
 * made, whenever its index is made or closed and after each add into it:
 * its struct and name, and its index's beyond the vectors its entries
 * count (sc_index_fixed_bytes: structures, malloc chunks; with many small
 * scopes that is most of what they take: some hundreds of bytes each,
 * more than a small vector) and, for an IVF index, its training (the
 * train stats' trained_bytes: two copies of the centroids above all,
 * 2 x nlist x dim x 4 bytes). A training begins in the add that starts
 * it and is charged from there (the index reserves what it will hold),
 * so the caps see it at that insert, before its swap; what the index
 * holds once it ends (less, if it was abandoned) is charged at the next
 * add. Read without the index's lock. Released with the rest of
 * own_bytes when the index or the scope goes. */
static void own_bytes_sync(ns *s, scope *sc)
{
    uint64_t b = sc_index_heap_bytes(sizeof(*sc) + sc->name_len + 1);
    if (sc->ix != NULL) {
        sc_index_params p;
        index_params(s, sc_index_dim(sc->ix), &p);
        b += sc_index_fixed_bytes(&p);
        sc_index_train_stats ts;
        if (sc_index_get_train_stats(sc->ix, &ts) == SC_OK) {
            b += ts.trained_bytes;
        }
    }
    scope_count_set(s, &sc->own_bytes, b);
}

/* ns->mu held. Counts text in (delta 1) or out (-1) of the scope's
 * statistics, and their memory in the byte counts; false when it could
 * not be counted in. */
static bool stats_count(ns *s, scope *sc, const entry *e, int delta)
{
    const sc_cache_embedder *em = s->stats_em;
    bool ok = em->stats_count(em->arg, sc->stats, e->text, e->text_len, e->prep,
                              delta);
    stats_bytes_set(s, sc, em->stats_bytes(em->arg, sc->stats));
    return ok;
}

/* ns->mu held. Finds or makes the scope and pins it (*out); unpin with
 * scope_unpin. capped: max_scopes applies (not to a restore, which puts
 * back what was saved under the cap of its day). Errors: SC_ESCOPEFULL,
 * SC_ENOMEM. */
static sc_err scope_get(const sc_cache *c, ns *s, const char *name, size_t len,
                        bool capped, scope **out)
{
    scope *sc = scope_find(s, name, len);
    if (sc == NULL) {
        if (capped && s->scopes.count >= c->cfg.max_scopes) {
            return SC_ESCOPEFULL;
        }
        sc = calloc(1, sizeof(*sc) + len + 1);
        if (sc == NULL) {
            return SC_ENOMEM;
        }
        if (s->stats_em != NULL &&
            (sc->stats = s->stats_em->stats_new(s->stats_em->arg)) == NULL) {
            free(sc);
            return SC_ENOMEM;
        }
        if (sc->stats != NULL) {
            stats_bytes_set(
                s, sc, s->stats_em->stats_bytes(s->stats_em->arg, sc->stats));
        }
        memcpy(sc->name, name, len);
        sc->name[len] = '\0';
        sc->name_len = len;
        sc->node.hash = sc_cache_hash64(name, len);
        sc_htab_insert(&s->scopes, &sc->node);
        own_bytes_sync(s, sc);
    }
    sc->pins++;
    *out = sc;
    return SC_OK;
}

/* What a namespace's closed indexes counted: IVF trainings abandoned.
 * An index's count is read as its scope goes and again once its close
 * has waited for its training in flight, which may still be abandoned
 * meanwhile; the namespace may be dropped by then, so the count lives
 * here, freed by the last of the namespace and its indexes' closes. */
typedef struct ix_tally {
    _Atomic uint64_t abandoned;
    atomic_uint refs;
} ix_tally;

static ix_tally *tally_new(void)
{
    ix_tally *t = malloc(sizeof(*t));
    if (t != NULL) {
        atomic_init(&t->abandoned, 0);
        atomic_init(&t->refs, 1);
    }
    return t;
}

static void tally_unref(ix_tally *t)
{
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1) {
        free(t);
    }
}

/* Adds to t what ix counted beyond the `counted` read before, as ix's
 * close leaves it (a training past its last step when the close came ends
 * and counts), and frees ix. */
static void close_counted(sc_index *ix, ix_tally *t, uint64_t counted)
{
    sc_index_train_stats ts;
    if (sc_index_close_stats(ix, &ts) == SC_OK && ts.abandoned > counted) {
        atomic_fetch_add_explicit(&t->abandoned, ts.abandoned - counted,
                                  memory_order_relaxed);
    }
}

/* The indexes of the scopes this thread freed, closed once it releases
 * c->lock (cache_unlock): an IVF index's close waits for its training in
 * flight to stop at its next step (a k-means iteration, a block of adds:
 * up to some 0.3 s at 200,000 x 384), and under the lock every
 * namespace would wait (a writer queued on it stops new readers). Kept
 * per thread, so that the request that freed a scope waits for its close,
 * never another one that happens to release the lock next. Each with its
 * namespace's tally (a reference) and what the tally has of it. */
typedef struct late_ix {
    sc_index *ix;
    ix_tally *tally;
    uint64_t counted;
} late_ix;

static _Thread_local struct {
    late_ix *a;
    size_t n, cap;
} late;

/* ns->mu held: what ix's trainings came to, beyond the `counted` of it
 * s's tally has already, counts in the tally now. Returns what it has of
 * ix then. Made when ix stops being counted as a scope's index (it is
 * closed, retired, or its scope goes), so that ivf_abandoned, a total,
 * never goes down meanwhile. */
static uint64_t tally_count(ns *s, sc_index *ix, uint64_t counted)
{
    sc_index_train_stats ts;
    if (sc_index_get_train_stats(ix, &ts) == SC_OK && ts.abandoned > counted) {
        atomic_fetch_add_explicit(&s->gone_ix->abandoned,
                                  ts.abandoned - counted, memory_order_relaxed);
        counted = ts.abandoned;
    }
    return counted;
}

/* ns->mu held, under c->lock: ix (not NULL) leaves s, its tally having
 * `counted` of it already (tally_count). What its trainings came to
 * counts in s's tally now, and what they come to by its close (this
 * thread's next cache_unlock, or at once when there is no memory to keep
 * it) then. */
static void close_later(ns *s, sc_index *ix, uint64_t counted)
{
    counted = tally_count(s, ix, counted);
    if (SC_VEC_RESERVE(late.a, late.cap, late.n, 1, 8) != SC_OK) {
        close_counted(ix, s->gone_ix, counted);
        return;
    }
    atomic_fetch_add_explicit(&s->gone_ix->refs, 1, memory_order_relaxed);
    late.a[late.n++] = (late_ix){ix, s->gone_ix, counted};
}

/* With no cache lock held: closes the indexes close_later kept. */
static void close_late(void)
{
    for (size_t i = 0; i < late.n; i++) {
        close_counted(late.a[i].ix, late.a[i].tally, late.a[i].counted);
        tally_unref(late.a[i].tally);
    }
    late.n = 0;
    free(late.a);
    late.a = NULL;
    late.cap = 0;
}

/* The vectors of the entries this thread took out of their namespaces,
 * taken out of their scopes' indexes once it lets the namespace's mutex go
 * (drain_removals, from cache_unlock): an IVF index's remove waits for its
 * lock while a training holds it through a held replay round (index/ivf.c
 * catch_up_held), and under ns->mu every lookup of the namespace would
 * wait with it. Each keeps its scope pinned, so that the scope and its
 * index outlive it; its namespace outlives it as c->lock is held. Kept per
 * thread, so that the call that removed an entry is the one that waits. */
typedef struct late_rm {
    ns *s;
    scope *sc;
    sc_index *ix; /* sc->ix or sc->retired */
    uint64_t id;
} late_rm;

static _Thread_local struct {
    late_rm *a;
    size_t n, cap;
} rms;

static void scope_unpin(ns *s, scope *sc);

/* ns->mu held: e's vector (in sc's index) is to go. Queued for
 * drain_removals, or, without the memory to queue it, removed at once. */
static void remove_later(ns *s, scope *sc, uint64_t id)
{
    if (SC_VEC_RESERVE(rms.a, rms.cap, rms.n, 1, 8) != SC_OK) {
        /* Cannot fail: the id was added and only this path removes it. */
        (void)sc_index_remove(sc->ix, id);
        return;
    }
    sc->pins++;
    sc->rm_pins++;
    rms.a[rms.n++] = (late_rm){s, sc, sc->ix, id};
}

/* c->lock held, no ns->mu nor c->gmu: takes the queued vectors out of
 * their indexes, then unpins their scopes (each namespace's mutex taken
 * once per run of its removals). Ids are never given out twice, so a
 * search that finds one meanwhile finds no entry of it and passes it
 * over. */
static void drain_removals(void)
{
    for (size_t i = 0; i < rms.n; i++) {
        call_hook(&remove_hook);
        (void)sc_index_remove(rms.a[i].ix, rms.a[i].id);
    }
    for (size_t i = 0; i < rms.n;) {
        ns *s = rms.a[i].s;
        pthread_mutex_lock(&s->mu);
        for (; i < rms.n && rms.a[i].s == s; i++) {
            rms.a[i].sc->rm_pins--;
            scope_unpin(s, rms.a[i].sc);
        }
        pthread_mutex_unlock(&s->mu);
    }
    rms.n = 0;
    free(rms.a);
    rms.a = NULL;
    rms.cap = 0;
}

/* s is being freed with c->lock held for writing (or by the cache's
 * close): its queued removals are dropped, their scopes unpinned (a gone
 * one freed), as its indexes close with it. */
static void forget_removals(ns *s)
{
    size_t k = 0;
    for (size_t i = 0; i < rms.n; i++) {
        if (rms.a[i].s == s) {
            rms.a[i].sc->rm_pins--;
            scope_unpin(s, rms.a[i].sc);
        } else {
            rms.a[k++] = rms.a[i];
        }
    }
    rms.n = k;
}

/* Releases c->lock, then closes what was freed under it. Every ns->mu is
 * let go by then: the vectors of the entries removed under it go first. */
static void cache_unlock(sc_cache *c)
{
    if (rms.n > 0) {
        drain_removals();
    }
    pthread_rwlock_unlock(&c->lock);
    if (late.n > 0) {
        close_late();
    }
}

/* ns->mu held. A scope with no entries and no pins goes, index and all;
 * one whose entries hold no vector (quarantined ones, texts alone) loses
 * its index, as a restart would not make one for it: its memory and count
 * are then the same after a restart as before. Not a trained IVF index:
 * a snapshot keeps its training, and a restart makes it from that before
 * the scope's entries come back. Its vectors are counted here, not asked
 * of the index: an IVF index's count waits for its lock, which a training
 * holds through each held replay round, and every unpin would hold the
 * namespace's mutex as long. Unpinned, the scope has no insert in flight,
 * so the index holds exactly those vectors, and those of its gone entries
 * whose removals are queued (rm_pins). Pins of those removals alone do not
 * keep the scope in the namespace or its index counted: a scope with no
 * entries goes at once (gone, freed by the last of them), an index with
 * no vectors is retired (closed by the last of them), so that the caps
 * see what they saw when the removal was made at once. */
static void scope_maybe_free(ns *s, scope *sc)
{
    if (sc->rm_pins == 0 && sc->retired != NULL) {
        close_later(s, sc->retired, sc->retired_counted);
        sc->retired = NULL;
    }
    if (sc->gone || sc->pins > sc->rm_pins) {
        /* Gone: only its removals hold it. Else a call in flight. */
        if (sc->gone && sc->pins == 0) {
            if (sc->ix != NULL) {
                close_later(s, sc->ix, sc->ix_counted);
            }
            free(sc);
        }
        return;
    }
    /* Pinned by queued removals alone: no insert in flight. One index
     * retired at a time: another stays, counted, until they are done. */
    if (sc->entries > 0) {
        if (sc->ix != NULL && sc->vectors == 0 &&
            (sc->rm_pins == 0 || sc->retired == NULL) &&
            !sc_index_trained(sc->ix)) {
            if (sc->rm_pins > 0) {
                sc->retired = sc->ix;
                sc->retired_counted = tally_count(s, sc->ix, 0);
            } else {
                close_later(s, sc->ix, 0);
            }
            sc->ix = NULL;
            own_bytes_sync(s, sc);
        }
        return;
    }
    /* Its last entry went: the scope goes at once, so that it counts in
     * no cap and an insert of its name makes a new one; its index, with
     * removals of it still queued (rm_pins), once they are done. */
    sc_htab_remove(&s->scopes, &sc->node);
    if (sc->stats != NULL) {
        s->stats_em->stats_free(s->stats_em->arg, sc->stats);
        sc->stats = NULL;
        stats_bytes_set(s, sc, 0);
    }
    scope_count_set(s, &sc->own_bytes, 0);
    if (sc->ix != NULL) {
        sc->ix_counted = tally_count(s, sc->ix, 0);
    }
    sc->gone = true;
    scope_maybe_free(s, sc);
}

static void scope_unpin(ns *s, scope *sc)
{
    sc->pins--;
    scope_maybe_free(s, sc);
}

/* ns->mu held. */
static entry *entry_find(const ns *s, uint64_t id)
{
    uint64_t h = sc_htab_mix64(id);
    for (sc_hnode *n = sc_htab_first(&s->ids, h); n != NULL;
         n = sc_htab_next(n, h)) {
        entry *e = CONTAINER(n, entry, by_id);
        if (e->id == id) {
            return e;
        }
    }
    return NULL;
}

/* A text key's hash in a namespace's exact table: its low bits pick the
 * chain. The key is a fixed function of the scope and the text, so a
 * client could search offline for texts whose keys share their low bits:
 * one chain at every table size, walked by each insert and exact lookup
 * of the namespace and by each removal of one of them (a mass expiry is
 * then quadratic), under the namespace's lock. Mixed with the cache's
 * secret seed, the chain a key lands on is not known outside the
 * process. */
static uint64_t exact_hash(const sc_cache *c, sc_text_key key)
{
    return sc_htab_mix64(key.lo ^ c->exact_seed);
}

/* ns->mu held. The entry of (scope, normal-form text), or NULL. */
static entry *exact_find(const ns *s, const scope *sc, sc_text_key key,
                         const char *norm, size_t norm_len)
{
    uint64_t h = exact_hash(s->cache, key);
    for (sc_hnode *n = sc_htab_first(&s->exact, h); n != NULL;
         n = sc_htab_next(n, h)) {
        entry *e = CONTAINER(n, entry, by_key);
        if (e->key.hi == key.hi && e->sc == sc &&
            sc_cache_text_norm_equal(e->text, e->text_len, norm, norm_len)) {
            return e;
        }
    }
    return NULL;
}

/* ns->mu held. Takes e out of both layers (quarantine and removal). Its
 * vector leaves the index at once, unless the index may make the remove
 * wait for a training's held round (sc_index_changes_may_wait): then once
 * ns->mu is let go (remove_later), and until then a search may find its
 * id, which no entry of the exact layer or the id -> entry map has any
 * more. Only those are queued: a queued id is a dead candidate among a
 * search's k, and a thread's queue drains in order, so that one removal
 * waiting for a round held every later one, a flat index's too, and the
 * other namespaces' lookups false-missed behind their dead ids. */
static void entry_unmatchable(ns *s, entry *e)
{
    if (e->in_index) {
        if (s->closing) {
            /* Its indexes close with it. */
        } else if (sc_index_changes_may_wait(e->sc->ix)) {
            remove_later(s, e->sc, e->id);
        } else {
            /* Cannot fail: the id was added and only this path removes
             * it. */
            (void)sc_index_remove(e->sc->ix, e->id);
        }
        e->in_index = false;
        e->sc->vectors--;
    }
    if (e->in_exact) {
        sc_htab_remove(&s->exact, &e->by_key);
        e->in_exact = false;
    }
}

/* ---- the journal --------------------------------------------------------*/

/* Records ch in the journal, if there is one (locks ordering ch held). */
static sc_err journal_append(const sc_cache *c, const sc_cache_change *ch,
                             uint64_t *seq)
{
    *seq = 0;
    const sc_cache_journal *j = c->cfg.journal;
    return j != NULL ? j->append(j->arg, ch, seq) : SC_OK;
}

/* No cache lock held: waits until record seq is durable. */
static sc_err journal_commit(const sc_cache *c, uint64_t seq)
{
    const sc_cache_journal *j = c->cfg.journal;
    return j != NULL && seq != 0 ? j->commit(j->arg, seq) : SC_OK;
}

/* ns->mu held: journals a removal the cache made by itself. It goes ahead
 * whether or not the journal can take it: an entry that comes back after a
 * restart is expired or evicted again then. */
static void journal_removal(const sc_cache *c, const ns *s, uint64_t id)
{
    sc_cache_change ch = {.kind = SC_CHANGE_REMOVE, .ns = s->name, .id = id};
    uint64_t seq;
    (void)journal_append(c, &ch, &seq);
}

static void entry_info(const ns *s, const entry *e, const float *vec,
                       sc_cache_entry_info *info)
{
    const blob *b = e->payload;
    *info = (sc_cache_entry_info){
        .embed_model = s->cfg.embed_model,
        .ttl_ms = e->ttl_ms,
        .tokens_estimated = e->tokens_estimated,
        .id = e->id,
        .ns = s->name,
        .scope = e->sc->name,
        .text = e->has_text ? e->text : NULL,
        .text_len = e->text_len,
        .vec = vec,
        .dim = vec != NULL ? s->cfg.dim : 0,
        .response = b->data,
        .response_len = b->response_len,
        .model = b->model,
        .feature = b->feature,
        .user = b->user,
        .input_tokens = e->input_tokens,
        .output_tokens = e->output_tokens,
        .created_ms = e->created_ms,
        .last_hit_ms = e->last_hit_ms,
        .hit_count = e->hit_count,
        .expires_ms = e->expires_ms,
        .quarantined = e->quarantined,
    };
}

/* Raises the next id above id; to UINT64_MAX (the id range long used
 * up: no insert takes) for id UINT64_MAX, never wrapping to 0, which
 * would give every id out again. */
static void ids_above(sc_cache *c, uint64_t id)
{
    uint_fast64_t to = id == UINT64_MAX ? UINT64_MAX : (uint_fast64_t)id + 1;
    uint_fast64_t cur = atomic_load(&c->next_id);
    while (cur < to && !atomic_compare_exchange_weak(&c->next_id, &cur, to)) {
    }
}

uint64_t sc_cache_next_id(sc_cache *c)
{
    return atomic_load(&c->next_id);
}

void sc_cache_reserve_ids(sc_cache *c, uint64_t next)
{
    if (next > 1) {
        ids_above(c, next - 1);
    }
}

/* c->gmu not held: whether an entry with this id exists anywhere. */
static bool id_present(sc_cache *c, uint64_t id)
{
    uint64_t h = sc_htab_mix64(id);
    bool found = false;
    pthread_mutex_lock(&c->gmu);
    for (sc_hnode *n = sc_htab_first(&c->ids, h); n != NULL && !found;
         n = sc_htab_next(n, h)) {
        found = CONTAINER(n, entry, by_gid)->id == id;
    }
    pthread_mutex_unlock(&c->gmu);
    return found;
}

/* Whether texts sent with vectors of model are prepared for the
 * embedder's rescore (sc_cache_embedder.prep_new). */
static bool wants_prep(const sc_cache *c, const char *model)
{
    const sc_cache_embedder *em = c->cfg.embedder;
    return em != NULL && em->prep_new != NULL && em->rescore != NULL &&
           model != NULL && strcmp(model, em->model) == 0;
}

/* text prepared by the embedder; NULL: out of memory. */
static void *prep_text(const sc_cache *c, const char *text, size_t len)
{
    const sc_cache_embedder *em = c->cfg.embedder;
    return em->prep_new(em->arg, text, len);
}

static void prep_free(const sc_cache *c, void *prep)
{
    if (prep != NULL) {
        c->cfg.embedder->prep_free(c->cfg.embedder->arg, prep);
    }
}

static size_t prep_bytes(const sc_cache *c, const void *prep)
{
    return prep != NULL
               ? c->cfg.embedder->prep_bytes(c->cfg.embedder->arg, prep)
               : 0;
}

/* e's prepared text freed (before e is counted anywhere). */
static void prep_drop(const sc_cache *c, entry *e)
{
    prep_free(c, e->prep);
    e->prep = NULL;
}

/* ns->mu held, c->gmu not: e is never rescored again (reported wrong),
 * so its text leaves its scope's statistics and its prepared text is
 * freed, with its bytes: as a restore, which prepares no quarantined
 * entry, would have it. */
static void prep_release(sc_cache *c, ns *s, entry *e)
{
    if (e->prep == NULL) {
        return;
    }
    if (e->in_stats) {
        (void)stats_count(s, e->sc, e, -1);
        e->in_stats = false;
    }
    uint64_t b = prep_bytes(c, e->prep);
    prep_drop(c, e);
    e->bytes -= b;
    s->bytes -= b;
    pthread_mutex_lock(&c->gmu);
    if (!e->uncounted) {
        c->bytes -= b;
    }
    pthread_mutex_unlock(&c->gmu);
}

/* ns->mu held. Takes e out of both layers as a report that it is wrong
 * does: its prepared text and its vector go (the index drops the row), and
 * their bytes with them, so it counts as a snapshot restores it (without
 * its vector). */
static void quarantine_entry(sc_cache *c, ns *s, entry *e)
{
    uint64_t vb = e->in_index ? vector_bytes(s, s->cfg.dim) : 0;
    entry_unmatchable(s, e);
    prep_release(c, s, e);
    vb = vb < e->bytes ? vb : 0; /* never below what it counted */
    e->bytes -= vb;
    s->bytes -= vb;
    pthread_mutex_lock(&c->gmu);
    if (!e->uncounted) {
        c->bytes -= vb;
    }
    pthread_mutex_unlock(&c->gmu);
    e->quarantined = true;
    s->quarantined++;
    scope_maybe_free(s, e->sc);
}

/* ns->mu held, c->gmu not: e, quarantined, goes to the least recent end
 * of the cache's LRU order (and of its namespace's, with own_list): it is
 * never served again, so the caps take it before any live entry, however
 * recently it was served (a report comes just after a hit). A restore
 * keeps a namespace's order as its snapshot wrote it (quarantined entries
 * least recent already), so moves it in the cache's order only. */
static void lru_to_tail(sc_cache *c, ns *s, entry *e, bool own_list)
{
    if (own_list) {
        list_unlink(&e->lru);
        list_push_back(&s->lru, &e->lru);
    }
    pthread_mutex_lock(&c->gmu);
    list_unlink(&e->glru);
    list_push_back(&c->lru, &e->glru);
    pthread_mutex_unlock(&c->gmu);
}

/* Frees e, unlinked from everything. */
static void entry_free(const sc_cache *c, entry *e)
{
    prep_free(c, e->prep);
    free(e);
}

/* ns->mu held; the caps have just evicted one of sc's vector entries.
 * Marks sc starved (once, until an insert clears it) where it holds
 * fewer vectors than its untrained index's training waits for. */
/* Whether sc's untrained index still waits for rows it does not hold (a
 * manual train_min, a training done or under way: waits for none). */
static bool short_of_rows(const scope *sc, const sc_index_train_stats *ts)
{
    return ts->trained_bytes == 0 && ts->wait_rows != 0 &&
           sc->vectors < ts->wait_rows;
}

static void note_starved(const ns *s, scope *sc)
{
    sc_index_train_stats ts;
    if (sc->starved || sc->ix == NULL ||
        sc_index_get_train_stats(sc->ix, &ts) != SC_OK ||
        !short_of_rows(sc, &ts)) {
        return;
    }
    sc->starved = true;
    sc->starved_ins = s->st.inserts;
    sc->starved_bytes = s->inserts_bytes;
}

/* ns->mu held (c->gmu not). Unlinks e from everything, counts why, frees it;
 * its scope goes too when that was its last entry and nobody pins it. */
static void entry_remove(sc_cache *c, ns *s, entry *e, gone why)
{
    scope *sc = e->sc;
    bool was_indexed = e->in_index;
    if (sc->stats != NULL && e->in_stats) {
        (void)stats_count(s, sc, e, -1);
    }
    entry_unmatchable(s, e);
    sc_htab_remove(&s->ids, &e->by_id);
    if (e->exp.slot != SC_HEAP_NONE) {
        sc_heap_remove(&s->expiry, &e->exp);
    }
    list_unlink(&e->lru);
    pthread_mutex_lock(&c->gmu);
    list_unlink(&e->glru);
    sc_htab_remove(&c->ids, &e->by_gid);
    if (!e->uncounted) {
        c->entries--;
        c->bytes -= e->bytes;
    }
    pthread_mutex_unlock(&c->gmu);
    s->entries--;
    s->bytes -= e->bytes;
    if (e->quarantined) {
        s->quarantined--;
    }
    switch (why) {
    case GONE_DELETE:
        s->st.deletes++;
        break;
    case GONE_REPLACED:
        s->st.replaced++;
        break;
    case GONE_EXPIRED:
        s->st.expirations++;
        journal_removal(c, s, e->id);
        break;
    case GONE_EVICTED:
        s->st.evictions++;
        journal_removal(c, s, e->id);
        if (was_indexed) {
            note_starved(s, sc);
        }
        break;
    case GONE_FLUSH:
        s->st.flushed++;
        break;
    }
    blob_unref(e->payload);
    entry_free(c, e);
    sc->entries--;
    scope_maybe_free(s, sc);
}

static bool expired(const entry *e, uint64_t now)
{
    return e->expires_ms != 0 && now >= e->expires_ms;
}

/* ns->mu held. Evicts from the namespace's LRU tail down to its caps. */
static void ns_enforce_caps(sc_cache *c, ns *s)
{
    while (!list_empty(&s->lru) &&
           ((s->cfg.max_entries != 0 && s->entries > s->cfg.max_entries) ||
            (s->cfg.max_bytes != 0 && s->bytes > s->cfg.max_bytes))) {
        entry_remove(c, s, CONTAINER(s->lru.prev, entry, lru), GONE_EVICTED);
    }
}

/* The smaller of two caps, 0 for none. */
static uint64_t cap_min(uint64_t a, uint64_t b)
{
    return a == 0 ? b : b == 0 || a < b ? a : b;
}

/* ns->mu held; ts: sc's index's train stats. Whether the caps keep sc's
 * IVF index from ever training on its own: it holds no training nor has
 * one in flight, and the namespace's caps, or the cache-wide ones, are
 * below what its next training waits for (ts's wait_rows: train_min, 39
 * rows a list, after an abandoned training the more it waits for), the
 * rows counted at sc's last vector entry's bytes (row_bytes) and the
 * training's charge (wait_bytes) on top of what the scope and its index
 * take already (own_bytes, its text statistics). From the caps alone:
 * other scopes' entries, which the LRU evicts first, do not count; but a
 * scope the caps evicted below its rows (starved) that is still below
 * them a cap's worth of the namespace's inserts later (max_entries, or
 * max_bytes of entries) is said too: scopes taking turns keep each other
 * under their rows. Never an "auto" scope: an exact scan while it is
 * small is what it is for. */
static bool cap_keeps_untrained(const sc_cache *c, const ns *s, const scope *sc,
                                const sc_index_train_stats *ts)
{
    if (sc->ix == NULL || ts->trained_bytes != 0 || ts->wait_rows == 0) {
        return false;
    }
    if (strcmp(s->cfg.backend, "auto") == 0) {
        return false; /* an exact scan until it grows is what it is for */
    }
    uint64_t max_entries = cap_min(s->cfg.max_entries, c->cfg.max_entries);
    if (max_entries != 0 && max_entries < ts->wait_rows) {
        return true;
    }
    uint64_t max_bytes = cap_min(s->cfg.max_bytes, c->cfg.max_bytes);
    /* Evicted below its rows a cap's worth of inserts ago, and still
     * below them: scopes taking turns keep each other under them. (An
     * insert refused after it was counted takes st.inserts back down,
     * maybe below starved_ins: not wrapped.) */
    if (sc->starved && sc->vectors < ts->wait_rows &&
        ((max_entries != 0 && s->st.inserts >= sc->starved_ins &&
          s->st.inserts - sc->starved_ins >= max_entries) ||
         (max_bytes != 0 &&
          s->inserts_bytes - sc->starved_bytes >= max_bytes))) {
        return true;
    }
    if (max_bytes == 0 || sc->row_bytes == 0) {
        return false;
    }
    uint64_t need = sc->own_bytes + sc->stats_bytes +
                    ts->wait_rows * sc->row_bytes + ts->wait_bytes;
    return need > max_bytes;
}

/* The line an insert found to say (note_cap_untrained), written by the
 * insert once its locks are let go (cap_line_flush). */
static _Thread_local char cap_line[768];

/* ns->mu held; an insert into sc, kept, has just had the caps applied.
 * Where they keep sc untrained (cap_keeps_untrained), says so once a
 * namespace (cap_logged): the line is kept for cap_line_flush. Clears
 * sc's starved mark once it holds its rows. */
static void note_cap_untrained(const sc_cache *c, ns *s, scope *sc)
{
    sc_index_train_stats ts;
    if (sc->ix == NULL || sc_index_get_train_stats(sc->ix, &ts) != SC_OK) {
        return;
    }
    if (sc->starved && !short_of_rows(sc, &ts)) {
        sc->starved = false; /* it got its rows after all */
    }
    if (s->cap_logged || !cap_keeps_untrained(c, s, sc, &ts)) {
        return;
    }
    s->cap_logged = true;
    /* The scope's name is the client's: bytes outside printable ASCII
     * are written as '?', and at most 64 of them. */
    char name[65];
    sc_ascii_clean(name, sizeof(name), sc->name, sc->name_len);
    snprintf(cap_line, sizeof(cap_line),
             "semcache: namespace %s scope \"%s\": its caps are below "
             "the %llu rows and %llu bytes of training its IVF index "
             "waits for; it stays an exact scan until they are raised "
             "(said once a namespace; stats: ivf_untrained_capped; "
             "docs/CONFIG.md)\n",
             s->name, name, (unsigned long long)ts.wait_rows,
             (unsigned long long)ts.wait_bytes);
}

/* No lock held: writes the line note_cap_untrained kept, if any. */
static void cap_line_flush(void)
{
    if (cap_line[0] != '\0') {
        fputs(cap_line, stderr);
        cap_line[0] = '\0';
    }
}

/* ns->mu held; e just stored in its scope (its text counted in), not yet
 * journaled; spare: the entry of its text it replaces, or NULL. Whether
 * the byte caps can keep e: everything else may go first (e is the most
 * recent), its scope (own_bytes: over a cap with e, refused at once) and
 * its text statistics stay with it. Looked into only
 * where e and the statistics as they are exceed a cap: first with new
 * statistics of its text alone (no larger than its scope's once the rest
 * went: over the cap, refused at once, without a walk of the namespace),
 * then (with the embedder's stats_clone) by counting the scope's other
 * texts out of a copy of its statistics (spare's first, then from the
 * least recent) until e fits with what is left. The live statistics are
 * never touched: counting texts back in could grow their tables past
 * what they were, so a refused insert would have changed the bytes.
 * SC_OK (keep it), SC_ETOOBIG, SC_ENOMEM (no copy could be made). */
static sc_err fits_with_stats(const sc_cache *c, ns *s, entry *e, entry *spare)
{
    scope *sc = e->sc;
    uint64_t cap = s->cfg.max_bytes;
    if (c->cfg.max_bytes != 0 && (cap == 0 || c->cfg.max_bytes < cap)) {
        cap = c->cfg.max_bytes;
    }
    /* e alone keeps its scope, and the scope's index once made. */
    uint64_t own = e->bytes + sc->own_bytes;
    if (cap != 0 && own > cap) {
        return SC_ETOOBIG;
    }
    if (cap == 0 || sc->stats == NULL || own + sc->stats_bytes <= cap) {
        return SC_OK;
    }
    const sc_cache_embedder *em = s->stats_em;
    void *alone = em->stats_new(em->arg);
    if (alone != NULL) {
        /* (Not counted in, out of memory: the copy below tells.) */
        bool over =
            (!e->in_stats || em->stats_count(em->arg, alone, e->text,
                                             e->text_len, e->prep, 1)) &&
            own + em->stats_bytes(em->arg, alone) > cap;
        em->stats_free(em->arg, alone);
        if (over) {
            return SC_ETOOBIG;
        }
    }
    if (em->stats_clone == NULL) {
        return SC_OK; /* the caps after the append tell (cache.h) */
    }
    void *copy = em->stats_clone(em->arg, sc->stats);
    if (copy == NULL) {
        return SC_ENOMEM;
    }
    bool fits = false;
    if (spare != NULL && spare->in_stats) {
        (void)em->stats_count(em->arg, copy, spare->text, spare->text_len,
                              spare->prep, -1);
        fits = own + em->stats_bytes(em->arg, copy) <= cap;
    }
    for (lnode *n = s->lru.prev; !fits && n != &s->lru; n = n->prev) {
        entry *m = CONTAINER(n, entry, lru);
        if (m->sc == sc && m != e && m != spare && m->in_stats) {
            (void)em->stats_count(em->arg, copy, m->text, m->text_len, m->prep,
                                  -1);
            fits = own + em->stats_bytes(em->arg, copy) <= cap;
        }
    }
    em->stats_free(em->arg, copy);
    return fits ? SC_OK : SC_ETOOBIG;
}

/* c->gmu held. */
static bool over_global(const sc_cache *c)
{
    return (c->cfg.max_entries != 0 && c->entries > c->cfg.max_entries) ||
           (c->cfg.max_bytes != 0 && c->bytes > c->cfg.max_bytes);
}

/* c->lock held, no ns->mu. Evicts the least recently used entries of the
 * whole cache while an overall cap is exceeded; true when one of them was
 * entry watch (0: none). The tail's namespace must be
 * locked before its entry is touched, so the tail is noted under c->gmu,
 * then re-checked under its namespace's mutex (where nothing can move it). */
static bool global_enforce(sc_cache *c, uint64_t watch)
{
    bool took = false;
    for (unsigned tries = 0; tries < 1000000u; tries++) {
        pthread_mutex_lock(&c->gmu);
        if (!over_global(c) || list_empty(&c->lru)) {
            pthread_mutex_unlock(&c->gmu);
            return took;
        }
        entry *tail = CONTAINER(c->lru.prev, entry, glru);
        ns *s = tail->ns;
        uint64_t id = tail->id;
        pthread_mutex_unlock(&c->gmu);

        pthread_mutex_lock(&s->mu);
        entry *e = entry_find(s, id);
        if (e != NULL) {
            pthread_mutex_lock(&c->gmu);
            bool still = over_global(c) && c->lru.prev == &e->glru;
            /* The watched entry counts only as the cache's last one: under
             * concurrent inserts it may have aged to the tail. */
            bool last = c->lru.next == &e->glru;
            pthread_mutex_unlock(&c->gmu);
            if (still) {
                took |= id == watch && last;
                entry_remove(c, s, e, GONE_EVICTED);
            }
        }
        pthread_mutex_unlock(&s->mu);
    }
    return took;
}

typedef struct empty_scopes {
    scope *a[64];
    size_t n;
} empty_scopes;

static void find_empty(sc_hnode *n, void *arg)
{
    empty_scopes *e = arg;
    scope *sc = CONTAINER(n, scope, node);
    if (sc->entries == 0 && sc->pins == 0 && e->n < 64) {
        e->a[e->n++] = sc;
    }
}

/* ns->mu held, or s unreachable. Frees the scopes with no entries and no
 * pins (a restore's whose entries never came). */
static void free_empty_scopes(ns *s)
{
    empty_scopes e;
    do {
        e.n = 0;
        sc_htab_each(&s->scopes, find_empty, &e);
        for (size_t i = 0; i < e.n; i++) {
            scope_maybe_free(s, e.a[i]);
        }
    } while (e.n == 64);
}

/* Frees s; its scopes' indexes are closed by the next cache_unlock. */
static void ns_free(sc_cache *c, ns *s)
{
    s->closing = true;
    forget_removals(s);
    while (!list_empty(&s->lru)) {
        entry_remove(c, s, CONTAINER(s->lru.next, entry, lru), GONE_FLUSH);
    }
    free_empty_scopes(s);
    sc_heap_fini(&s->expiry);
    sc_htab_fini(&s->scopes);
    sc_htab_fini(&s->exact);
    sc_htab_fini(&s->ids);
    tally_unref(s->gone_ix);
    pthread_mutex_destroy(&s->imu);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Every namespace, for the calls that visit them all; c->lock held. */
typedef struct ns_visit {
    sc_cache *c;
    void (*fn)(sc_cache *c, ns *s, void *arg);
    void *arg;
} ns_visit;

static void visit_node(sc_hnode *n, void *arg)
{
    ns_visit *v = arg;
    v->fn(v->c, CONTAINER(n, ns, node), v->arg);
}

static void each_ns(sc_cache *c, void (*fn)(sc_cache *c, ns *s, void *arg),
                    void *arg)
{
    ns_visit v = {c, fn, arg};
    sc_htab_each(&c->nss, visit_node, &v);
}

/* ---- the cache ----------------------------------------------------------*/

sc_err sc_cache_open(const sc_cache_config *cfg, sc_cache **out)
{
    if (out == NULL) {
        return SC_EINVAL;
    }
    sc_cache_config def;
    if (cfg == NULL) {
        sc_cache_config_init(&def);
        cfg = &def;
    }
    if (cfg->max_namespaces < 1 || cfg->max_scopes < 1) {
        return SC_EINVAL;
    }
    const sc_cache_embedder *em = cfg->embedder;
    if (em != NULL &&
        (em->embed == NULL || em->model == NULL || em->model[0] == '\0' ||
         strnlen(em->model, SC_CACHE_TAG_MAX + 1) > SC_CACHE_TAG_MAX ||
         em->dim < 1 || em->dim > SC_INDEX_MAX_DIM ||
         !(em->threshold >= -1.0f && em->threshold <= 1.0f) ||
         !(em->margin >= 0.0f && em->margin <= 2.0f) ||
         (em->stats_new == NULL) != (em->stats_free == NULL) ||
         (em->stats_new == NULL) != (em->stats_count == NULL) ||
         (em->stats_new == NULL) != (em->stats_bytes == NULL) ||
         (em->stats_new == NULL && em->stats_clone != NULL) ||
         (em->prep_new == NULL) != (em->prep_free == NULL) ||
         (em->prep_new == NULL) != (em->prep_bytes == NULL))) {
        return SC_EINVAL;
    }
    sc_err rc = SC_ENOMEM;
    sc_cache *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        goto fail_alloc;
    }
    c->cfg = *cfg;
    if (c->cfg.clock == NULL) {
        c->cfg.clock = realtime_ms;
        c->cfg.clock_arg = NULL;
    }
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* Creating and dropping namespaces must not starve under lookups. */
    pthread_rwlockattr_setkind_np(&attr,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int prc = pthread_rwlock_init(&c->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (prc != 0) {
        goto fail_rwlock;
    }
    if (pthread_mutex_init(&c->gmu, NULL) != 0) {
        goto fail_mutex;
    }

    if ((rc = sc_htab_init(&c->nss)) != SC_OK) {
        goto fail_nss;
    }
    if ((rc = sc_htab_init(&c->ids)) != SC_OK) {
        goto fail_ids;
    }
    list_init(&c->lru);
    c->exact_seed = sc_seed_secret(c);
    atomic_init(&c->next_id, 1);
    atomic_init(&c->re_ns, 0);
    atomic_init(&c->re_entries, 0);
    atomic_init(&c->re_dropped, 0);
    *out = c;
    return SC_OK;

fail_ids:
    sc_htab_fini(&c->nss);
fail_nss:
    pthread_mutex_destroy(&c->gmu);
fail_mutex:
    pthread_rwlock_destroy(&c->lock);
fail_rwlock:
    free(c);
fail_alloc:
    return SC_ENOMEM;
}

static void drop_node(sc_hnode *n, void *arg)
{
    sc_cache *c = arg;
    ns *s = CONTAINER(n, ns, node);
    sc_htab_remove(&c->nss, n);
    ns_free(c, s);
}

void sc_cache_close(sc_cache *c)
{
    if (c == NULL) {
        return;
    }
    sc_htab_each(&c->nss, drop_node, c);
    close_late();
    sc_htab_fini(&c->ids);
    sc_htab_fini(&c->nss);
    pthread_mutex_destroy(&c->gmu);
    pthread_rwlock_destroy(&c->lock);
    free(c);
}

/* The model of a request's vector: the embedder's when the cache embedded
 * it, else the caller's (NULL = unnamed). */
static const char *vec_model(const sc_cache *c, bool embedded,
                             const char *given)
{
    if (embedded) {
        return c->cfg.embedder->model;
    }
    return given != NULL ? given : "";
}

/* Under s->mu: whether vectors of model may enter or query namespace s. */
static sc_err model_check(const ns *s, const char *model)
{
    if (s->model_fixed && strcmp(s->cfg.embed_model, model) != 0) {
        return SC_EMODEL;
    }
    return SC_OK;
}

/* Under s->mu: whether a vector the cache embedded (of model, dim floats)
 * may still enter or query s. Not when s took another model's vectors, or
 * a dimension, after the caller's peek (peek_policy): the text then meets
 * the exact layer only, for inserts and lookups alike. */
static bool embedded_fits(const ns *s, const char *model, uint32_t dim)
{
    return model_check(s, model) == SC_OK &&
           (s->cfg.dim == 0 || dim == s->cfg.dim);
}

/* Under s->mu: whether s holds the embedder's vectors. */
static bool ns_of_embedder(const sc_cache *c, const ns *s)
{
    return c->cfg.embedder != NULL && s->model_fixed &&
           strcmp(s->cfg.embed_model, c->cfg.embedder->model) == 0;
}

/* Under s->mu: whether s holds the vectors of the embedder the cache was
 * opened without (its table missing): text there waits for it. */
static bool ns_of_missing_embedder(const sc_cache *c, const ns *s)
{
    const char *p = c->cfg.embedder_prefix;
    return c->cfg.embedder == NULL && p != NULL && s->model_fixed &&
           strncmp(s->cfg.embed_model, p, strlen(p)) == 0;
}

/* Under s->mu: the threshold and margin in force in s. */
static float ns_threshold(const sc_cache *c, const ns *s)
{
    return s->cfg.auto_threshold && ns_of_embedder(c, s)
               ? c->cfg.embedder->threshold
               : s->cfg.threshold;
}

static float ns_margin(const sc_cache *c, const ns *s)
{
    return s->cfg.auto_margin && ns_of_embedder(c, s) ? c->cfg.embedder->margin
                                                      : s->cfg.margin;
}

/* Embeds text[0..len) with the cache's embedder into a new buffer (*out,
 * caller frees). */
static sc_err embed_text(const sc_cache *c, const char *text, size_t len,
                         float **out)
{
    const sc_cache_embedder *em = c->cfg.embedder;
    float *v = malloc((size_t)em->dim * sizeof(float));
    if (v == NULL) {
        return SC_ENOMEM;
    }
    sc_err rc = em->embed(em->arg, text, len, v);
    if (rc == SC_OK) {
        rc = check_vec(v, em->dim);
    }
    if (rc != SC_OK) {
        free(v);
        return rc;
    }
    *out = v;
    return SC_OK;
}

/* What text sent without a vector gets in a namespace. */
typedef enum embed_policy {
    EMBED_NO_NS,      /* no such namespace */
    EMBED_YES,        /* embed it: the namespace is of the embedder's model,
                         or not fixed yet */
    EMBED_EXACT_ONLY, /* the namespace holds another model's vectors: the
                         text can only meet the exact layer */
    EMBED_MISSING     /* it would be embedded, but there is no embedder */
} embed_policy;

/* Peeks at namespace nsname (taking and letting go its locks) to decide
 * whether text alone must be embedded. The namespace may change before the
 * caller locks it: the caller re-checks the model under its lock. */
static embed_policy peek_policy(sc_cache *c, const char *nsname)
{
    embed_policy pol = EMBED_NO_NS;
    pthread_rwlock_rdlock(&c->lock);
    ns *s = ns_find(c, nsname);
    if (s != NULL) {
        pthread_mutex_lock(&s->mu);
        if ((s->model_fixed && !ns_of_embedder(c, s) &&
             !ns_of_missing_embedder(c, s)) ||
            (c->cfg.embedder != NULL && s->cfg.dim != 0 &&
             s->cfg.dim != c->cfg.embedder->dim)) {
            /* Another model's, or made for vectors of another dimension
             * than the embedder's (no model fixed yet). */
            pol = EMBED_EXACT_ONLY;
        } else {
            pol = c->cfg.embedder != NULL ? EMBED_YES : EMBED_MISSING;
        }
        pthread_mutex_unlock(&s->mu);
    }
    cache_unlock(c);
    return pol;
}

/* ---- namespace calls ----------------------------------------------------*/

static sc_err ns_create(sc_cache *c, const char *name, const sc_ns_config *cfg,
                        bool journaled, uint64_t *serial);

sc_err sc_cache_ns_create(sc_cache *c, const char *name,
                          const sc_ns_config *cfg)
{
    return ns_create(c, name, cfg, true, NULL);
}

sc_err sc_cache_ns_create_for_insert(sc_cache *c, const char *name,
                                     const sc_ns_config *cfg, uint64_t *serial)
{
    return serial != NULL ? ns_create(c, name, cfg, true, serial) : SC_EINVAL;
}

/* serial: not NULL = set to the new namespace's on success. */
static sc_err ns_create(sc_cache *c, const char *name, const sc_ns_config *cfg,
                        bool journaled, uint64_t *serial)
{
    if (c == NULL || !sc_cache_ns_name_ok(name)) {
        return SC_EINVAL;
    }
    sc_ns_config def;
    if (cfg == NULL) {
        sc_cache_ns_config_init(&def);
        cfg = &def;
    }
    sc_err rc = check_ns_config(cfg);
    if (rc != SC_OK) {
        return rc;
    }
    ns *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return SC_ENOMEM;
    }
    rc = SC_ENOMEM;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        goto fail_mutex;
    }
    if (pthread_mutex_init(&s->imu, NULL) != 0) {
        goto fail_imu;
    }
    if (sc_htab_init(&s->ids) != SC_OK) {
        goto fail_ids;
    }
    if (sc_htab_init(&s->exact) != SC_OK) {
        goto fail_exact;
    }
    if (sc_htab_init(&s->scopes) != SC_OK) {
        goto fail_scopes;
    }
    if ((s->gone_ix = tally_new()) == NULL) {
        goto fail_tally;
    }
    if (c->cfg.embedder != NULL && c->cfg.embedder->stats_new != NULL) {
        s->stats_em = c->cfg.embedder;
    }
    s->cache = c;
    list_init(&s->lru);
    sc_heap_init(&s->expiry);
    s->cfg = *cfg;
    s->model_fixed = cfg->embed_model[0] != '\0';
    strcpy(s->name, name); /* sc_cache_ns_name_ok bounded it */
    s->node.hash = sc_cache_hash64(name, strlen(name));

    /* The journal's lock for the base's append (persist: the one its
     * ledger save holds for a whole export) before the cache's: waited
     * for under c->lock, every lookup and insert on every namespace waited
     * out the rest of the save behind the making (at 300,000 namespaces,
     * a quarter changed a second, ns_list stalled up to 1.2 s). Only
     * where the name has a row, i.e. a base is to be written: a name
     * never seen (most makings, an insert's first) does not wait out a
     * save. A row made for it between this look and the base (a charge
     * racing the making) sends the making back to take the journal's lock
     * first and the cache's again: taken under the cache's, it waited on
     * a making that held it and waited for the cache's (a deadlock a
     * review showed: every lookup and save stopped). */
    const sc_cache_journal *j = c->cfg.journal;
    bool begun = journaled && c->cfg.ledger != NULL && j != NULL &&
                 j->make_begin != NULL && j->make_end != NULL &&
                 sc_ledger_ns_has_row(c->cfg.ledger, name);
    if (begun) {
        j->make_begin(j->arg);
    }
relock:
    pthread_rwlock_wrlock(&c->lock);
    if (ns_find(c, name) != NULL) {
        rc = SC_ENSEXIST;
        goto fail_locked;
    }
    /* Not on a restore: a server restarted with a lower cap keeps every
     * saved namespace (new ones are refused until it is below). */
    if (journaled && c->nss.count >= c->cfg.max_namespaces) {
        rc = SC_ENSFULL;
        goto fail_locked;
    }
    /* A new namespace, not a restore (whose base the ledger restores
     * itself): what its name holds so far is of namespaces dropped before.
     * Before it can be found, so that no event of its own counts in that
     * base, and before its record, which the journal logs the base (and
     * the name's row) with: left to the ledger's next save, a crash within
     * that second lost it, and /metrics' (dropped) went down after the
     * restart; journaled after the record, a write of the log between the
     * two (the tick's, another writer's commit) could leave the namespace
     * on disk without it. Where the journal cannot take the rows (out of
     * memory), the next save logs them. Where the making fails after all,
     * the base stays unread (only a namespace of its name reads it) until
     * the next making writes it again. */
    bool base = journaled && c->cfg.ledger != NULL &&
                sc_ledger_ns_made(c->cfg.ledger, name);
    if (base && !begun && j != NULL && j->make_begin != NULL &&
        j->make_end != NULL) {
        /* The base is written again after the relock (the row's sums
         * then: nothing of this namespace's own can be in them, as it
         * cannot be found yet). */
        cache_unlock(c);
        j->make_begin(j->arg);
        begun = true;
        goto relock;
    }
    sc_cache_change ch = {.kind = SC_CHANGE_NS_PUT,
                          .ns = name,
                          .cfg = &s->cfg,
                          .ledger_base = base};
    uint64_t seq = 0;
    if (journaled && (rc = journal_append(c, &ch, &seq)) != SC_OK) {
        goto fail_locked;
    }
    s->serial = ++c->ns_serial;
    if (serial != NULL) {
        *serial = s->serial;
    }
    sc_htab_insert(&c->nss, &s->node);
    cache_unlock(c);
    if (begun) {
        j->make_end(j->arg);
    }
    return journal_commit(c, seq);

fail_locked:
    cache_unlock(c);
    if (begun) {
        j->make_end(j->arg);
    }
    tally_unref(s->gone_ix);
fail_tally:
    sc_htab_fini(&s->scopes);
fail_scopes:
    sc_htab_fini(&s->exact);
fail_exact:
    sc_htab_fini(&s->ids);
fail_ids:
    pthread_mutex_destroy(&s->imu);
fail_imu:
    pthread_mutex_destroy(&s->mu);
fail_mutex:
    free(s);
    return rc;
}

/* Sets the namespace's config to cfg, or (cfg NULL) to its current one as
 * edit(arg) changes it, read and written under s->mu. apply false: only
 * whether cfg would be taken (sc_cache_ns_check). */
static sc_err ns_configure(sc_cache *c, const char *name,
                           const sc_ns_config *cfg, sc_cache_ns_edit_fn edit,
                           void *arg, bool apply)
{
    if (c == NULL || name == NULL || (cfg == NULL && edit == NULL)) {
        return SC_EINVAL;
    }
    sc_err rc = cfg != NULL ? check_ns_config(cfg) : SC_OK;
    if (rc != SC_OK) {
        return rc;
    }
    pthread_rwlock_rdlock(&c->lock);
    ns *s = ns_find(c, name);
    if (s == NULL) {
        cache_unlock(c);
        return SC_ENONS;
    }
    pthread_mutex_lock(&s->mu);
    uint64_t seq = 0;
    sc_ns_config edited;
    if (cfg == NULL) {
        edited = s->cfg;
        if ((rc = edit(&edited, arg)) != SC_OK ||
            (rc = check_ns_config(&edited)) != SC_OK) {
            goto out;
        }
        cfg = &edited;
    }
    sc_ns_config next = *cfg;
    bool model_fixed = s->model_fixed;
    if (s->had_vector) {
        if ((cfg->dim != 0 && cfg->dim != s->cfg.dim) ||
            cfg->storage != s->cfg.storage ||
            strcmp(backend_name(cfg), backend_name(&s->cfg)) != 0 ||
            cfg->nlist != s->cfg.nlist || cfg->train_min != s->cfg.train_min) {
            rc = SC_EINVAL;
            goto out;
        }
        next.dim = s->cfg.dim;
    }
    if (s->model_fixed) {
        if (cfg->embed_model[0] != '\0' &&
            strcmp(cfg->embed_model, s->cfg.embed_model) != 0) {
            rc = SC_EINVAL;
            goto out;
        }
        memcpy(next.embed_model, s->cfg.embed_model, sizeof(next.embed_model));
    } else {
        model_fixed = next.embed_model[0] != '\0';
    }
    if (!apply) {
        pthread_mutex_unlock(&s->mu);
        cache_unlock(c);
        return SC_OK;
    }
    sc_cache_change ch = {.kind = SC_CHANGE_NS_PUT,
                          .ns = s->name,
                          .cfg = &next,
                          .had_vector = s->had_vector};
    if ((rc = journal_append(c, &ch, &seq)) != SC_OK) {
        goto out;
    }
    if (next.nprobe != s->cfg.nprobe) {
        uint32_t np = next.nprobe ? next.nprobe : NPROBE_DEFAULT;
        sc_htab_each(&s->scopes, set_nprobe_node, &np);
    }
    s->cfg = next;
    s->model_fixed = model_fixed;
    s->configured = true;
    s->cap_logged = false;
    ns_enforce_caps(c, s);
out:
    pthread_mutex_unlock(&s->mu);
    cache_unlock(c);
    return rc == SC_OK ? journal_commit(c, seq) : rc;
}

sc_err sc_cache_ns_configure(sc_cache *c, const char *name,
                             const sc_ns_config *cfg)
{
    return ns_configure(c, name, cfg, NULL, NULL, true);
}

sc_err sc_cache_ns_update(sc_cache *c, const char *name,
                          sc_cache_ns_edit_fn edit, void *arg)
{
    return edit != NULL ? ns_configure(c, name, NULL, edit, arg, true)
                        : SC_EINVAL;
}

sc_err sc_cache_ns_check(sc_cache *c, const char *name, const sc_ns_config *cfg)
{
    return ns_configure(c, name, cfg, NULL, NULL, false);
}

sc_err sc_cache_ns_get_config(sc_cache *c, const char *name, sc_ns_config *out)
{
    bool had_vector;
    return sc_cache_ns_state(c, name, out, &had_vector, NULL);
}

/* serial: 0 = drop the namespace whatever it holds; else only that one,
 * and only while unused since it was made (sc_cache_ns_drop_unused). */
static sc_err ns_drop(sc_cache *c, const char *name, uint64_t serial)
{
    if (c == NULL || name == NULL) {
        return SC_EINVAL;
    }
    /* The write lock waits out every call in flight, lookups' unlocked
     * searches included, so nothing can still point into the namespace;
     * it also orders this drop after any configure or insert of it. */
    pthread_rwlock_wrlock(&c->lock);
    ns *s = ns_find_serial(c, name, serial);
    sc_err rc = s != NULL ? SC_OK : SC_ENONS;
    if (s != NULL && serial != 0 &&
        (s->entries > 0 || s->st.inserts > 0 || s->configured)) {
        rc = SC_EEXIST;
    }
    uint64_t seq = 0;
    if (rc == SC_OK) {
        sc_cache_change ch = {.kind = SC_CHANGE_NS_DROP, .ns = s->name};
        rc = journal_append(c, &ch, &seq);
    }
    if (rc == SC_OK) {
        sc_htab_remove(&c->nss, &s->node);
        ns_free(c, s);
    }
    cache_unlock(c); /* closes its indexes: nothing can reach them now */
    return rc == SC_OK ? journal_commit(c, seq) : rc;
}

sc_err sc_cache_ns_drop(sc_cache *c, const char *name)
{
    return ns_drop(c, name, 0);
}

sc_err sc_cache_ns_drop_unused(sc_cache *c, const char *name, uint64_t serial)
{
    return serial != 0 ? ns_drop(c, name, serial) : SC_EINVAL;
}

/* Whether vectors of model (dim floats, 0 = not fixed yet) are to be
 * re-embedded with the embedder on restore: an earlier version of it. */
static bool superseded(const sc_cache *c, const char *model, uint32_t dim)
{
    const sc_cache_embedder *em = c->cfg.embedder;
    return em != NULL && em->supersedes != NULL && model != NULL &&
           model[0] != '\0' && strcmp(model, em->model) != 0 &&
           (dim == 0 || dim == em->dim) &&
           strlen(em->model) <= SC_CACHE_TAG_MAX &&
           em->supersedes(em->arg, model);
}

/* Under s->mu: counts namespace s as moved to the embedder's model, once. */
static void mark_moved(sc_cache *c, ns *s)
{
    if (!s->reembedded) {
        s->reembedded = true;
        atomic_fetch_add(&c->re_ns, 1);
    }
}

/* The same for namespace name, whose model a restored entry fixed (a log
 * holds its creation before its first vector). */
static void mark_moved_name(sc_cache *c, const char *name)
{
    pthread_rwlock_rdlock(&c->lock);
    ns *s = ns_find(c, name);
    if (s != NULL) {
        pthread_mutex_lock(&s->mu);
        mark_moved(c, s);
        pthread_mutex_unlock(&s->mu);
    }
    cache_unlock(c);
}

sc_err sc_cache_restore_ns(sc_cache *c, const char *name,
                           const sc_ns_config *cfg, bool had_vector)
{
    if (c == NULL || name == NULL || cfg == NULL) {
        return SC_EINVAL;
    }
    /* A namespace of an earlier version of the embedder takes its model:
     * its entries are re-embedded as they come back. */
    sc_ns_config moved;
    bool reembed = superseded(c, cfg->embed_model, cfg->dim);
    if (reembed) {
        moved = *cfg;
        strcpy(moved.embed_model, c->cfg.embedder->model);
        cfg = &moved;
    }
    sc_err rc = check_ns_config(cfg);
    if (rc != SC_OK) {
        return rc;
    }
    if (had_vector && cfg->dim == 0) {
        return SC_EINVAL;
    }
    pthread_rwlock_rdlock(&c->lock);
    ns *s = ns_find(c, name);
    if (s == NULL) {
        cache_unlock(c);
        if ((rc = ns_create(c, name, cfg, false, NULL)) != SC_OK) {
            return rc;
        }
        pthread_rwlock_rdlock(&c->lock);
        s = ns_find(c, name);
        if (s == NULL) {
            cache_unlock(c);
            return SC_ENONS;
        }
    }
    pthread_mutex_lock(&s->mu);
    sc_ns_config kept;
    if (s->had_vector && !had_vector && cfg->dim == 0) {
        /* A record made before the first vector, replayed after one that
         * fixed the dimension (a snapshot saw the vector, its log holds an
         * ns_configure made before it): a configure, the dimension kept. */
        kept = *cfg;
        kept.dim = s->cfg.dim;
        cfg = &kept;
    }
    if (s->had_vector &&
        ((cfg->dim != s->cfg.dim) || cfg->storage != s->cfg.storage ||
         strcmp(backend_name(cfg), backend_name(&s->cfg)) != 0)) {
        /* Vectors restored already fixed these otherwise. */
        rc = SC_EINVAL;
    } else {
        if (cfg->nprobe != s->cfg.nprobe) {
            uint32_t np = cfg->nprobe ? cfg->nprobe : NPROBE_DEFAULT;
            sc_htab_each(&s->scopes, set_nprobe_node, &np);
        }
        /* A model a restored vector fixed stays: a log replayed over its
         * snapshot may hold the namespace's earlier record, made before
         * its first vector, with no model. */
        char model[sizeof(s->cfg.embed_model)];
        bool keep_model = s->model_fixed && cfg->embed_model[0] == '\0';
        memcpy(model, s->cfg.embed_model, sizeof(model));
        s->cfg = *cfg;
        if (keep_model) {
            memcpy(s->cfg.embed_model, model, sizeof(model));
        }
        s->had_vector = s->had_vector || had_vector;
        s->model_fixed = s->model_fixed || cfg->embed_model[0] != '\0';
        if (reembed) {
            mark_moved(c, s);
        }
    }
    pthread_mutex_unlock(&s->mu);
    cache_unlock(c);
    return rc;
}

typedef struct scope_walk {
    sc_cache_scope_index_fn fn;
    void *arg;
    sc_err rc;
    size_t trained;
} scope_walk;

static void walk_scope(sc_hnode *n, void *arg)
{
    scope_walk *w = arg;
    scope *sc = CONTAINER(n, scope, node);
    if (w->rc == SC_OK && sc->ix != NULL && sc_index_trained(sc->ix)) {
        w->trained++;
        if (w->fn != NULL) {
            w->rc = w->fn(w->arg, sc->name, sc->ix);
        }
    }
}

sc_err sc_cache_scope_indexes(sc_cache *c, const char *nsname, uint64_t serial,
                              sc_cache_scope_index_fn fn, void *arg)
{
    if (c == NULL || nsname == NULL || fn == NULL) {
        return SC_EINVAL;
    }
    scope_walk w = {fn, arg, SC_OK, 0};
    pthread_rwlock_rdlock(&c->lock);
    ns *s = ns_find_serial(c, nsname, serial);
    if (s != NULL) {
        pthread_mutex_lock(&s->mu);
        sc_htab_each(&s->scopes, walk_scope, &w);
        pthread_mutex_unlock(&s->mu);
    }
    cache_unlock(c);
    return s == NULL ? SC_ENONS : w.rc;
}

static void count_trained(sc_cache *c, ns *s, void *arg)
{
    (void)c;
    scope_walk *w = arg;
    pthread_mutex_lock(&s->mu);
    sc_htab_each(&s->scopes, walk_scope, w);
    pthread_mutex_unlock(&s->mu);
}

size_t sc_cache_trained_scopes(sc_cache *c, const char *nsname)
{
    scope_walk w = {NULL, NULL, SC_OK, 0};
    pthread_rwlock_rdlock(&c->lock);
    if (nsname == NULL) {
        each_ns(c, count_trained, &w);
    } else {
        ns *s = ns_find(c, nsname);
        if (s != NULL) {
            count_trained(c, s, &w);
        }
    }
    cache_unlock(c);
    return w.trained;
}

size_t sc_cache_exact_longest_chain(sc_cache *c, const char *nsname)
{
    size_t n = 0;
    pthread_rwlock_rdlock(&c->lock);
    ns *s = ns_find(c, nsname);
    if (s != NULL) {
        pthread_mutex_lock(&s->mu);
        n = sc_htab_longest_chain(&s->exact);
        pthread_mutex_unlock(&s->mu);
    }
    cache_unlock(c);
    return n;
}

sc_err sc_cache_restore_training(sc_cache *c, const char *nsname,
                                 const char *scope_name, const char *path)
{
    if (c == NULL || nsname == NULL || scope_name == NULL || path == NULL) {
        return SC_EINVAL;
    }
    pthread_rwlock_rdlock(&c->lock);
    ns *s = ns_find(c, nsname);
    sc_err rc = s == NULL ? SC_ENONS : SC_OK;
    if (s != NULL) {
        pthread_mutex_lock(&s->mu);
        /* Before the scope's entries come back: its index is made here,
         * as their first insert would make it. A training of an earlier
         * model's vectors is not taken: the index trains again on the
         * re-embedded ones. */
        scope *sc = NULL;
        size_t len = strnlen(scope_name, SC_CACHE_SCOPE_MAX + 1);
        rc = s->reembedded ? SC_EMODEL
             : len > SC_CACHE_SCOPE_MAX || s->cfg.dim == 0
                 ? SC_EINVAL
                 : scope_get(c, s, scope_name, len, false, &sc);
        if (rc == SC_OK && sc->ix == NULL) {
            sc_index_params p;
            index_params(s, s->cfg.dim, &p);
            rc = sc_index_open(&p, &sc->ix);
        }
        if (rc == SC_OK) {
            rc = sc_index_load_training(sc->ix, path);
        }
        if (sc != NULL) {
            own_bytes_sync(s, sc);
            /* Kept while empty: its entries follow. One that gets none
             * (they all expired) goes in sc_cache_enforce_caps. */
            sc->pins--;
            if (rc != SC_OK) {
                scope_maybe_free(s, sc);
            }
        }
        pthread_mutex_unlock(&s->mu);
    }
    cache_unlock(c);
    return rc;
}

static void enforce_ns(sc_cache *c, ns *s, void *arg)
{
    (void)arg;
    pthread_mutex_lock(&s->mu);
    /* First the entries no cap can hold alone (caps lowered since they
     * were saved): evicting by age would take every older entry first. */
    for (lnode *n = s->lru.next, *next; n != &s->lru; n = next) {
        next = n->next;
        entry *e = CONTAINER(n, entry, lru);
        if ((s->cfg.max_bytes != 0 && e->bytes > s->cfg.max_bytes) ||
            (c->cfg.max_bytes != 0 && e->bytes > c->cfg.max_bytes)) {
            entry_remove(c, s, e, GONE_EVICTED);
        }
    }
    ns_enforce_caps(c, s);
    /* Scopes a restore made for entries that never came. */
    free_empty_scopes(s);
    pthread_mutex_unlock(&s->mu);
}

void sc_cache_enforce_caps(sc_cache *c)
{
    pthread_rwlock_rdlock(&c->lock);
    each_ns(c, enforce_ns, NULL);
    (void)global_enforce(c, 0);
    cache_unlock(c);
}

sc_err sc_cache_ns_state(sc_cache *c, const char *name, sc_ns_config *cfg,
                         bool *had_vector, uint64_t *serial)
{
    if (c == NULL || name == NULL || cfg == NULL || had_vector == NULL) {
        return SC_EINVAL;
    }
    pthread_rwlock_rdlock(&c->lock);
    ns *s = ns_find(c, name);
    if (s != NULL) {
        pthread_mutex_lock(&s->mu);
        *cfg = s->cfg;
        *had_vector = s->had_vector;
        pthread_mutex_unlock(&s->mu);
        if (serial != NULL) {
            *serial = s->serial;
        }
    }
    cache_unlock(c);
    return s != NULL ? SC_OK : SC_ENONS;
}

typedef struct name_list {
    const char **names;
    size_t n;
} name_list;

static void collect_name(sc_cache *c, ns *s, void *arg)
{
    (void)c;
    name_list *l = arg;
    l->names[l->n++] = s->name;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

sc_err sc_cache_ns_list(sc_cache *c, char (*names)[SC_CACHE_NS_NAME_MAX + 1],
                        size_t cap, size_t *count)
{
    if (c == NULL || count == NULL || (cap > 0 && names == NULL)) {
        return SC_EINVAL;
    }
    pthread_rwlock_rdlock(&c->lock);
    size_t total = c->nss.count;
    name_list l = {malloc((total > 0 ? total : 1) * sizeof(char *)), 0};
    if (l.names == NULL) {
        cache_unlock(c);
        return SC_ENOMEM;
    }
    each_ns(c, collect_name, &l);
    qsort(l.names, l.n, sizeof(*l.names), cmp_names);
    for (size_t i = 0; i < l.n && i < cap; i++) {
        strcpy(names[i], l.names[i]);
    }
    cache_unlock(c);
    free(l.names);
    *count = total;
    return SC_OK;
}

/* ---- insert -------------------------------------------------------------*/

static sc_err delete_entry(sc_cache *c, uint64_t id, bool force);

/* A restore of an entry that has expired by now (ro; item its fields):
 * not put back, but when it was inserted it replaced the live entry of
 * its text in its scope, whose replacement is not logged (the insert is
 * the record of it). That entry goes here too, as it did then, or a
 * replaced answer would come back after the one that replaced it
 * expired. Nothing is done when the entry itself is present (a snapshot
 * holds it with a later expiry: a sliding refresh). */
static sc_err restore_expired_replace(sc_cache *c, const char *nsname,
                                      const sc_cache_item *item,
                                      const sc_cache_entry_info *ro)
{
    if (ro->quarantined || item->text == NULL || item->text_len == 0 ||
        item->text_len > SC_CACHE_TEXT_MAX) {
        return SC_OK; /* it replaced nothing */
    }
    const char *scope_name = item->scope != NULL ? item->scope : "";
    size_t scope_len;
    if (check_str(scope_name, SC_CACHE_SCOPE_MAX, &scope_len) != SC_OK) {
        return SC_OK;
    }
    char *norm = NULL;
    size_t norm_len = 0;
    sc_err rc = normalise_copy(item->text, item->text_len, &norm, &norm_len);
    if (rc != SC_OK || norm_len == 0) {
        free(norm);
        return rc;
    }
    sc_text_key key = sc_cache_text_key(scope_name, scope_len, norm, norm_len);
    pthread_rwlock_rdlock(&c->lock);
    ns *s = ns_find(c, nsname);
    if (s != NULL) {
        pthread_mutex_lock(&s->mu);
        scope *sc = scope_find(s, scope_name, scope_len);
        entry *old = sc != NULL && !id_present(c, ro->id)
                         ? exact_find(s, sc, key, norm, norm_len)
                         : NULL;
        if (old != NULL) {
            entry_remove(c, s, old, GONE_REPLACED);
        }
        pthread_mutex_unlock(&s->mu);
    }
    cache_unlock(c);
    free(norm);
    return SC_OK;
}

/* sc_cache_insert, and (ro != NULL) sc_cache_restore_entry: ro then gives
 * the id, times, tokens and state the entry had. */
static sc_err insert_entry(sc_cache *c, const char *nsname,
                           const sc_cache_item *item,
                           const sc_cache_entry_info *ro, uint64_t ro_now,
                           bool *added, uint64_t *id_out)
{
    if (added != NULL) {
        *added = false;
    }
    if (c == NULL || nsname == NULL || item == NULL) {
        return SC_EINVAL;
    }
    if (ro != NULL && (ro->id == 0 || ro->id == UINT64_MAX)) {
        return SC_EINVAL;
    }
    if (ro != NULL && ro->expires_ms != 0 && ro->expires_ms <= ro_now) {
        ids_above(c, ro->id); /* its id stays used */
        /* Expired while the server was down (or since: its removal is
         * logged after it), but what it replaced went all the same. */
        return restore_expired_replace(c, nsname, item, ro);
    }
    size_t scope_len, ml, fl, ul;
    const char *scope_name = item->scope != NULL ? item->scope : "";
    sc_err rc = check_str(scope_name, SC_CACHE_SCOPE_MAX, &scope_len);
    if (rc == SC_OK) {
        rc = check_str(item->model, SC_CACHE_TAG_MAX, &ml);
    }
    if (rc == SC_OK) {
        rc = check_str(item->feature, SC_CACHE_TAG_MAX, &fl);
    }
    if (rc == SC_OK) {
        rc = check_str(item->user, SC_CACHE_TAG_MAX, &ul);
    }
    if (rc != SC_OK) {
        return rc;
    }
    if ((item->text == NULL && item->text_len > 0) ||
        (item->response == NULL && item->response_len > 0) ||
        item->ttl_ms < SC_CACHE_TTL_NEVER) {
        return SC_EINVAL;
    }
    if (item->text_len > SC_CACHE_TEXT_MAX ||
        item->response_len > SC_CACHE_RESPONSE_LIMIT) {
        return SC_ETOOBIG;
    }
    if (item->ttl_ms > 0 && (uint64_t)item->ttl_ms > TTL_MAX) {
        return SC_ERANGE;
    }
    if (ro == NULL && (item->input_tokens > SC_CACHE_TOKENS_MAX ||
                       item->output_tokens > SC_CACHE_TOKENS_MAX)) {
        /* The ledger's sums stay far from wrapping. (A restore takes what
         * an earlier build stored, rather than refuse to start.) */
        return SC_ERANGE;
    }
    if (item->vec != NULL && (rc = check_vec(item->vec, item->dim)) != SC_OK) {
        return rc;
    }

    /* Everything that can be built without the lock is built here. */
    char *norm = NULL;
    size_t norm_len = 0;
    if ((rc = normalise_copy(item->text, item->text_len, &norm, &norm_len)) !=
        SC_OK) {
        return rc;
    }
    /* Text that normalises to nothing gives no exact key. A quarantined
     * entry restored is in neither layer: a snapshot keeps it without its
     * vector, and one stored with a vector and no text has nothing else. */
    const bool quarantined = ro != NULL && ro->quarantined;
    bool keyed = norm_len > 0;
    if (!keyed && item->vec == NULL && !quarantined) {
        free(norm);
        return SC_EINVAL;
    }
    /* Text alone is embedded; text with no usable word stays in the exact
     * layer only. */
    const float *vec = item->vec;
    uint32_t dim = item->dim;
    float *own_vec = NULL;
    if (vec == NULL && ro == NULL) {
        embed_policy pol = peek_policy(c, nsname);
        rc = pol == EMBED_NO_NS                                   ? SC_ENONS
             : pol == EMBED_MISSING && c->cfg.text_needs_embedder ? SC_ENOEMBED
                                                                  : SC_OK;
        if (rc == SC_OK && pol == EMBED_YES) {
            rc = embed_text(c, item->text, item->text_len, &own_vec);
            rc = rc == SC_EZEROVEC ? SC_OK : rc;
        }
        if (rc != SC_OK) {
            free(norm);
            return rc;
        }
        vec = own_vec;
        dim = own_vec != NULL ? c->cfg.embedder->dim : 0;
    }
    const char *model = ro != NULL
                            ? (ro->embed_model != NULL ? ro->embed_model : "")
                            : vec_model(c, own_vec != NULL, item->embed_model);
    size_t model_len;
    if ((rc = check_str(model, SC_CACHE_TAG_MAX, &model_len)) != SC_OK) {
        free(own_vec);
        free(norm);
        return rc;
    }
    sc_text_key key = {0, 0};
    if (keyed) {
        key = sc_cache_text_key(scope_name, scope_len, norm, norm_len);
    }
    rc = SC_ENOMEM;
    /* Text that met the exact layer only, or was reported wrong, is never
     * rescored: not prepared (feedback frees a live entry's). */
    void *prep = NULL;
    if (item->text != NULL && vec != NULL && !quarantined &&
        wants_prep(c, model) &&
        (prep = prep_text(c, item->text, item->text_len)) == NULL) {
        goto fail_prep;
    }
    blob *b = blob_new(item->response, item->response_len, item->model, ml,
                       item->feature, fl, item->user, ul);
    if (b == NULL) {
        goto fail_blob;
    }
    entry *e = calloc(1, sizeof(*e) + item->text_len);
    if (e == NULL) {
        goto fail_entry;
    }
    if (item->text_len > 0) {
        memcpy(e->text, item->text, item->text_len);
    }
    e->text_len = item->text_len;
    e->has_text = item->text != NULL;
    e->prep = prep;
    prep = NULL; /* e's now */
    e->payload = b;
    e->key = key;
    e->input_tokens = item->input_tokens;
    e->output_tokens = item->output_tokens;
    if (ro != NULL) {
        e->tokens_estimated = ro->tokens_estimated;
    } else if (e->input_tokens == 0 && e->output_tokens == 0) {
        e->input_tokens = sc_ledger_estimate_tokens(item->text_len);
        e->output_tokens = sc_ledger_estimate_tokens(item->response_len);
        e->tokens_estimated = true;
    }
    e->exp.slot = SC_HEAP_NONE;
    list_init(&e->lru);
    list_init(&e->glru);

    pthread_rwlock_rdlock(&c->lock);
    ns *s = ns_find(c, nsname);
    if (s == NULL) {
        rc = SC_ENONS;
        goto fail_ns;
    }
    pthread_mutex_lock(&s->imu);
    pthread_mutex_lock(&s->mu);
    /* The time once the locks are held: a wait for them (a drop of a big
     * namespace, say) is not taken off the entry's TTL. */
    uint64_t now = now_ms(c);
    if (ro != NULL && id_present(c, ro->id)) {
        /* Restored already (a snapshot and the log both hold it). */
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_unlock(&s->imu);
        cache_unlock(c);
        entry_free(c, e);
        blob_unref(b);
        free(norm);
        return SC_OK;
    }
    if (ro == NULL && item->response_len > s->cfg.max_response_bytes) {
        rc = SC_ETOOBIG;
        goto fail_locked;
    }
    if (own_vec != NULL && !embedded_fits(s, model, dim)) {
        /* Another model's vector came first, since the peek, or the
         * namespace is of another dimension: the text can only serve the
         * exact layer (whatever that model's dim), and is never
         * rescored. */
        vec = NULL;
        dim = 0;
        prep_drop(c, e);
    }
    if (vec != NULL && s->cfg.dim != 0 && dim != s->cfg.dim) {
        rc = SC_EDIM;
        goto fail_locked;
    }
    if (vec != NULL && (rc = model_check(s, model)) != SC_OK) {
        goto fail_locked;
    }
    e->bytes = sizeof(*e) + sizeof(*b) + 32 + item->text_len +
               item->response_len + ml + fl + ul + 3 + prep_bytes(c, e->prep);
    if (vec != NULL) {
        e->bytes += vector_bytes(s, dim);
    }
    /* Not on a restore: caps lowered since it was saved evict it then
     * (sc_cache_enforce_caps), as the header says; a refusal here would
     * make the whole snapshot unreadable. */
    if (ro == NULL &&
        ((s->cfg.max_bytes != 0 && e->bytes > s->cfg.max_bytes) ||
         (c->cfg.max_bytes != 0 && e->bytes > c->cfg.max_bytes))) {
        rc = SC_ETOOBIG;
        goto fail_locked;
    }
    e->ttl_ms = item->ttl_ms == SC_CACHE_TTL_NEVER ? 0
                : item->ttl_ms > 0                 ? (uint64_t)item->ttl_ms
                                                   : s->cfg.ttl_ms;
    if (ro != NULL) {
        e->ttl_ms = ro->ttl_ms;
        e->expires_ms = ro->expires_ms;
    } else if (e->ttl_ms != 0) {
        e->expires_ms = add_sat(now, e->ttl_ms);
    }
    if (e->expires_ms != 0 && (rc = sc_heap_reserve(&s->expiry)) != SC_OK) {
        goto fail_locked;
    }
    scope *sc;
    if ((rc = scope_get(c, s, scope_name, scope_len, ro == NULL, &sc)) !=
        SC_OK) {
        goto fail_locked;
    }
    if (ro != NULL) {
        e->id = ro->id;
        ids_above(c, ro->id);
    } else {
        /* Never past the id range: ids are not reused, so once it is used
         * up no insert takes (and none wraps to 0 and on). */
        uint_fast64_t next = atomic_load(&c->next_id);
        do {
            if (next >= SC_CACHE_ID_LIMIT) {
                rc = SC_EFULL;
                goto fail_scope;
            }
        } while (!atomic_compare_exchange_weak(&c->next_id, &next, next + 1));
        e->id = next;
    }
    /* For the ledger, read before the entry can go (caps may evict it). */
    uint64_t e_in = e->input_tokens, e_out = e->output_tokens;
    bool e_est = e->tokens_estimated;
    /* What this insert fixes, kept to be put back if the journal refuses
     * it. */
    bool made_ix = false, had0 = s->had_vector, fixed0 = s->model_fixed;
    uint32_t dim0 = s->cfg.dim;
    char model0[sizeof(s->cfg.embed_model)];
    memcpy(model0, s->cfg.embed_model, sizeof(model0));
    if (vec != NULL) {
        if (sc->ix == NULL) {
            sc_index_params p;
            index_params(s, dim, &p);
            if ((rc = sc_index_open(&p, &sc->ix)) != SC_OK) {
                goto fail_scope;
            }
            made_ix = true;
        }
        /* Into an index that was there before, with s->mu let go: the add
         * may wait for the index's lock while a training holds it for a
         * held replay round, and the namespace's lookups must not wait
         * with it. What the mutex guards stays as it was meanwhile: the
         * scope is pinned (it and its index stay), the entry is in no
         * table (a lookup's search that finds its id passes it over, as
         * one made before the insert; no delete or eviction can reach
         * it), and s->imu keeps the other inserts, the only ones that
         * give out ids, fix the dimension and model or make an index,
         * out. Not the namespace's first vector (the dimension and model
         * are fixed then: a configure changes neither) nor a restore. */
        bool let_go = !made_ix && ro == NULL && s->had_vector && s->model_fixed;
        if (let_go) {
            pthread_mutex_unlock(&s->mu);
            call_hook(&add_hook);
        }
        /* A snapshot's vector is the unit vector the index gave out:
         * taken as it is, so that the restart leaves it bit for bit as it
         * was. A logged insert's is the client's, normalised as then. */
        rc = ro != NULL && ro->vec_unit
                 ? sc_index_add_stored(sc->ix, e->id, vec)
                 : sc_index_add(sc->ix, e->id, vec);
        if (let_go) {
            pthread_mutex_lock(&s->mu);
            /* Its TTL from now, as for a wait for the locks. */
            now = now_ms(c);
            if (e->ttl_ms != 0) {
                e->expires_ms = add_sat(now, e->ttl_ms);
            }
        }
        if (rc != SC_OK) {
            /* An index made for this vector goes with it: while no vector
             * has fixed the dimension, no index may outlive its insert. */
            if (made_ix) {
                sc_index_close(sc->ix);
                sc->ix = NULL;
            }
            goto fail_scope;
        }
        e->in_index = true;
        sc->vectors++;
        /* A new index, or a training begun or ended (its charge). */
        own_bytes_sync(s, sc);
        if (!s->had_vector) {
            s->had_vector = true;
            s->cfg.dim = dim;
        }
        if (!s->model_fixed) {
            s->model_fixed = true;
            memcpy(s->cfg.embed_model, model, model_len + 1);
        }
    }
    /* From here on nothing fails but the caps' check and the journal.
     * The same text in the same scope replaces the entry that had it,
     * once both took the insert (below); until then both are in the exact
     * table, under s->mu, where nothing else looks. */
    entry *replaced = NULL;
    if (keyed && !quarantined) {
        /* A quarantined entry left the exact layer when it was reported
         * and replaced nothing since: a live entry of its text stays. */
        replaced = exact_find(s, sc, key, norm, norm_len);
        e->by_key.hash = exact_hash(c, key);
        sc_htab_insert(&s->exact, &e->by_key);
        e->in_exact = true;
    }
    e->ns = s;
    e->sc = sc;
    e->created_ms = ro != NULL ? ro->created_ms : now;
    if (ro != NULL) {
        e->last_hit_ms = ro->last_hit_ms;
        e->hit_count = ro->hit_count;
        e->restored = true;
    }
    e->by_id.hash = sc_htab_mix64(e->id);
    e->by_gid.hash = e->by_id.hash;
    sc_htab_insert(&s->ids, &e->by_id);
    list_push_front(&s->lru, &e->lru);
    if (e->expires_ms != 0) {
        e->exp.key = e->expires_ms;
        sc_heap_push(&s->expiry, &e->exp);
    }
    sc->entries++;
    s->entries++;
    s->bytes += e->bytes;
    s->st.inserts++;
    s->inserts_bytes += e->bytes;
    if (sc->stats != NULL && e->has_text &&
        (e->prep != NULL || s->stats_em->prep_new == NULL)) {
        /* Not counted in (out of memory): its words weigh as unseen ones,
         * and it is never counted out, so the others' counts stay right.
         * With prepared texts, only those the rescore reads count. */
        e->in_stats = stats_count(s, sc, e, 1);
    }
    pthread_mutex_lock(&c->gmu);
    list_push_front(&c->lru, &e->glru);
    sc_htab_insert(&c->ids, &e->by_gid);
    c->entries++;
    c->bytes += e->bytes;
    if (replaced != NULL) {
        /* Counted once while both are here (the journal may take a
         * while): an insert elsewhere meanwhile must not evict for an
         * entry that is about to go. Under s->mu nothing else removes it. */
        replaced->uncounted = true;
        c->entries--;
        c->bytes -= replaced->bytes;
    }
    pthread_mutex_unlock(&c->gmu);
    uint64_t id = e->id, seq = 0;
    if (quarantined) {
        quarantine_entry(c, s, e);
        lru_to_tail(c, s, e, false);
    }
    if (ro == NULL) {
        sc_cache_entry_info info;
        entry_info(s, e, vec, &info);
        info.dim = vec != NULL ? dim : 0;
        sc_cache_change ch = {
            .kind = SC_CHANGE_INSERT, .ns = s->name, .entry = &info};
        rc = fits_with_stats(c, s, e, replaced);
        if (rc == SC_OK) {
            rc = journal_append(c, &ch, &seq);
        }
        if (rc != SC_OK) {
            /* Too big for a byte cap with its scope's statistics, or not
             * recorded: not kept, as if it never came. The entry it
             * would have replaced stays, and so does what it would have
             * fixed (the dim, the model, a first index). */
            entry_remove(c, s, e, GONE_DELETE);
            s->st.deletes--;
            s->st.inserts--;
            if (replaced != NULL) {
                pthread_mutex_lock(&c->gmu);
                replaced->uncounted = false;
                c->entries++;
                c->bytes += replaced->bytes;
                pthread_mutex_unlock(&c->gmu);
            }
            if (made_ix && sc->ix != NULL) {
                /* e's vector left it at once (entry_unmatchable): a fresh
                 * index is never training, so no queued removal points at
                 * it, and close_later may close it at once (with no
                 * memory to keep it). */
                close_later(s, sc->ix, 0);
                sc->ix = NULL;
                own_bytes_sync(s, sc);
            }
            s->had_vector = had0;
            s->model_fixed = fixed0;
            s->cfg.dim = dim0;
            memcpy(s->cfg.embed_model, model0, sizeof(model0));
            scope_unpin(s, sc);
            pthread_mutex_unlock(&s->mu);
            pthread_mutex_unlock(&s->imu);
            cache_unlock(c);
            free(own_vec);
            free(norm);
            return rc;
        }
    }
    if (replaced != NULL) {
        entry_remove(c, s, replaced, GONE_REPLACED);
    }
    if (e->in_index) {
        sc->row_bytes = e->bytes;
    }
    scope_unpin(s, sc);
    if (ro == NULL) {
        /* A restore applies the caps once, at its end: midway it may hold
         * entries that later records remove (sc_cache_enforce_caps). */
        ns_enforce_caps(c, s);
        entry *kept = entry_find(s, id);
        /* sc holds kept, so it is still there. */
        if (kept != NULL) {
            note_cap_untrained(c, s, sc);
        }
        if (kept == NULL) {
            /* Evicted at once all the same (fits_with_stats): another
             * scope's statistics outlived its entries, kept by a lookup
             * in flight. Said, not acknowledged; its eviction is
             * journaled (what it replaced is gone). */
            pthread_mutex_unlock(&s->mu);
            pthread_mutex_unlock(&s->imu);
            cache_unlock(c);
            (void)journal_commit(c, seq);
            free(own_vec);
            free(norm);
            return SC_ETOOBIG;
        }
    }
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&s->imu);
    if (ro == NULL && global_enforce(c, id)) {
        /* The same by the overall cap: everything else went first. */
        cache_unlock(c);
        (void)journal_commit(c, seq);
        free(own_vec);
        free(norm);
        return SC_ETOOBIG;
    }
    cache_unlock(c);
    if (added != NULL) {
        *added = true;
    }
    if (ro != NULL) {
        free(norm);
        return SC_OK;
    }
    if ((rc = journal_commit(c, seq)) != SC_OK) {
        /* Its record may not have reached the disk: not acknowledged, and
         * not served either. */
        (void)delete_entry(c, id, true);
        free(own_vec);
        free(norm);
        return rc;
    }
    if (id_out != NULL) {
        *id_out = id;
    }
    if (c->cfg.ledger != NULL) {
        sc_ledger_tags t = {nsname, item->feature, item->user};
        sc_ledger_call call = {item->model, e_in, e_out, e_est};
        sc_ledger_insert(c->cfg.ledger, &t, &call, now);
    }
    free(own_vec);
    free(norm);
    return SC_OK;

fail_scope:
    scope_unpin(s, sc);
fail_locked:
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&s->imu);
fail_ns:
    cache_unlock(c);
    entry_free(c, e);
fail_entry:
    blob_unref(b);
fail_blob:
    prep_free(c, prep);
fail_prep:
    free(own_vec);
    free(norm);
    return rc;
}

sc_err sc_cache_insert(sc_cache *c, const char *nsname,
                       const sc_cache_item *item, uint64_t *id_out)
{
    sc_err rc = insert_entry(c, nsname, item, NULL, 0, NULL, id_out);
    cap_line_flush();
    return rc;
}

static void seal_ns(sc_cache *c, ns *s, void *arg)
{
    (void)c;
    (void)arg;
    pthread_mutex_lock(&s->mu);
    s->snap_top = s->restore_top;
    pthread_mutex_unlock(&s->mu);
}

void sc_cache_restore_snapshot_end(sc_cache *c)
{
    if (c == NULL) {
        return;
    }
    pthread_rwlock_rdlock(&c->lock);
    each_ns(c, seal_ns, NULL);
    cache_unlock(c);
}

/* When e was last used: its last hit, or its insert when never hit. */
static uint64_t last_use(const entry *e)
{
    return e->last_hit_ms > e->created_ms ? e->last_hit_ms : e->created_ms;
}

/* Whether a goes before b in sc_cache_restore_lru's merge: used less
 * recently, or at the same millisecond and inserted first (ids are given
 * out in insert order, and the running cache has entries inserted in one
 * millisecond in that order). Never equal: ids are unique. */
static bool use_before(const entry *a, const entry *b)
{
    uint64_t x = last_use(a), y = last_use(b);
    return x != y ? x < y : a->id < b->id;
}

/* sc_cache_restore_lru's merge. Each namespace's live entries, walked
 * from its least recent end, are a run; the runs are merged by last use,
 * taking the least recent head each time (not sorted: a run stays in its
 * order where its times are not), a tie to the lower id (use_before). A
 * cursor per namespace in a heap when there is memory for them; else the
 * runs merged two by two, which gives the same order (a merge takes the
 * less recent of its two heads, so a merge of merges takes the least
 * recent of all) with nothing allocated, at log2(k) passes over the
 * entries. The quarantined entries are apart: their times (a hit just
 * before the report) would hold their namespace's live ones back. They
 * are merged two by two, each namespace's walked from its least recent
 * end too, but taking the head used last (a tie to the higher id): the
 * running cache puts each at the least recent end as it is reported
 * (lru_to_tail), so the last reported is the least recent of all, and a
 * report comes just after the hit whose time the entry keeps. */
typedef struct lru_cursor {
    uint64_t key; /* last_use(e) */
    entry *e;     /* its namespace's least recent live one not yet placed */
} lru_cursor;

typedef struct lru_merge {
    lru_cursor *h; /* NULL: the runs merged two by two */
    size_t n;
    /* The pairs' runs, linked through glru.next and ended by NULL, as a
     * binary counter: pending[i] holds 2^i runs merged, or none. */
    lnode *pending[64];
    /* The quarantined entries' runs so, the least recent first (the one
     * used last first: merge_runs' recent). */
    lnode *qpending[64];
} lru_merge;

static bool cursor_before(const lru_cursor *x, const lru_cursor *y)
{
    return x->key != y->key ? x->key < y->key : x->e->id < y->e->id;
}

static void cursor_sift(lru_cursor *h, size_t n, size_t i)
{
    for (;;) {
        size_t m = i, l = 2 * i + 1, r = l + 1;
        if (l < n && cursor_before(&h[l], &h[m])) {
            m = l;
        }
        if (r < n && cursor_before(&h[r], &h[m])) {
            m = r;
        }
        if (m == i) {
            return;
        }
        lru_cursor t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/* Runs merged taking the head used first (use_before), or with recent
 * the head used last. */
static lnode *merge_runs(lnode *a, lnode *b, bool recent)
{
    lnode head, *t = &head;
    while (a != NULL && b != NULL) {
        const entry *x = CONTAINER(a, entry, glru);
        const entry *y = CONTAINER(b, entry, glru);
        if (recent ? use_before(x, y) : use_before(y, x)) {
            t->next = b;
            b = b->next;
        } else {
            t->next = a;
            a = a->next;
        }
        t = t->next;
    }
    t->next = a != NULL ? a : b;
    return head.next;
}

/* The first live entry of s's list from n towards its most recent end,
 * or NULL. */
static entry *live_from(ns *s, lnode *n)
{
    for (; n != &s->lru; n = n->prev) {
        entry *e = CONTAINER(n, entry, lru);
        if (!e->quarantined) {
            return e;
        }
    }
    return NULL;
}

/* Adds run to the binary counter pending (lru_merge), merging as
 * merge_runs with recent. */
static void pending_add(lnode **pending, lnode *run, bool recent)
{
    size_t i = 0;
    for (; pending[i] != NULL; i++) {
        run = merge_runs(pending[i], run, recent);
        pending[i] = NULL;
    }
    pending[i] = run;
}

/* The runs of pending merged into one. */
static lnode *pending_all(lnode **pending, bool recent)
{
    lnode *run = NULL;
    for (size_t i = 0; i < 64; i++) {
        if (pending[i] != NULL) {
            run = merge_runs(pending[i], run, recent);
        }
    }
    return run;
}

/* c->lock held for writing. s's quarantined entries, and its run: a
 * cursor, or its live entries linked. */
static void lru_run(sc_cache *c, ns *s, void *arg)
{
    (void)c;
    lru_merge *m = arg;
    if (s->quarantined > 0) {
        /* From the least recent end: the last reported first. */
        lnode *q = NULL, **qtail = &q;
        for (lnode *n = s->lru.prev; n != &s->lru; n = n->prev) {
            entry *e = CONTAINER(n, entry, lru);
            if (e->quarantined) {
                *qtail = &e->glru;
                qtail = &e->glru.next;
            }
        }
        *qtail = NULL;
        if (q != NULL) {
            pending_add(m->qpending, q, true);
        }
    }
    if (m->h != NULL) {
        entry *e = live_from(s, s->lru.prev);
        if (e != NULL) {
            m->h[m->n] = (lru_cursor){.key = last_use(e), .e = e};
            m->n++;
        }
        return;
    }
    lnode *run = NULL, **tail = &run;
    for (entry *e = live_from(s, s->lru.prev); e != NULL;
         e = live_from(s, e->lru.prev)) {
        *tail = &e->glru;
        tail = &e->glru.next;
    }
    *tail = NULL;
    if (run != NULL) {
        pending_add(m->pending, run, false);
    }
}

/* The next live entry of the merge, least recent first, or NULL. */
static entry *lru_next(lru_merge *m)
{
    if (m->h == NULL) {
        lnode *n = m->pending[0];
        if (n == NULL) {
            return NULL;
        }
        m->pending[0] = n->next; /* read before n is placed */
        return CONTAINER(n, entry, glru);
    }
    if (m->n == 0) {
        return NULL;
    }
    entry *e = m->h[0].e, *next = live_from(e->ns, e->lru.prev);
    if (next == NULL) {
        m->h[0] = m->h[--m->n];
    } else {
        m->h[0].e = next;
        m->h[0].key = last_use(next);
        /* The one after it comes up in about k turns: asked of memory
         * now, the merge does not wait for it then (a third less time,
         * measured). */
        if (next->lru.prev != &next->ns->lru) {
            const entry *after = CONTAINER(next->lru.prev, entry, lru);
            __builtin_prefetch(&after->lru);
            __builtin_prefetch(&after->created_ms);
        }
    }
    cursor_sift(m->h, m->n, 0);
    return e;
}

void sc_cache_restore_lru(sc_cache *c)
{
    if (c == NULL) {
        return;
    }
    /* Written: nothing else runs while the cache's list is taken apart,
     * and every entry's fields can be read. */
    pthread_rwlock_wrlock(&c->lock);
    pthread_mutex_lock(&c->gmu);
    lru_merge m;
    memset(&m, 0, sizeof(m));
    if (c->nss.count > 0) {
        m.h = malloc(c->nss.count * sizeof(*m.h));
    }
    each_ns(c, lru_run, &m);
    if (m.h != NULL) {
        for (size_t i = m.n / 2; i-- > 0;) {
            cursor_sift(m.h, m.n, i);
        }
    } else {
        lnode *run = pending_all(m.pending, false);
        memset(m.pending, 0, sizeof(m.pending));
        m.pending[0] = run;
    }
    /* Every entry of the cache's list is in its namespace's: the list is
     * made again from its most recent end, pushed to in turn, the least
     * recent first: the quarantined ones (the one used last first, the
     * least recent of all as the last reported is in the running cache),
     * then the live ones before them. */
    list_init(&c->lru);
    for (lnode *n = pending_all(m.qpending, true), *next; n != NULL; n = next) {
        next = n->next;
        list_push_front(&c->lru, n);
    }
    for (entry *e; (e = lru_next(&m)) != NULL;) {
        list_push_front(&c->lru, &e->glru);
    }
    free(m.h);
    pthread_mutex_unlock(&c->gmu);
    cache_unlock(c);
}

/* A restore's first step, for entry id of namespace nsname: true when it
 * is to be passed over. A snapshot is taken while writes go on, so the
 * log replayed over it holds inserts made before the snapshot read a
 * namespace; one of an entry it does not hold (gone by then: deleted,
 * expired, evicted, or replaced by one it holds, which may since have
 * been quarantined) must not come back, nor take the entry of its text,
 * as its insert did then: the snapshot holds the state after that. Ids
 * are given out in the order of their namespace's inserts, so those are
 * the ids up to the highest the snapshot holds of the namespace. */
static bool restore_passed(sc_cache *c, const char *nsname, uint64_t id)
{
    bool pass = false;
    pthread_rwlock_rdlock(&c->lock);
    ns *s = ns_find(c, nsname);
    if (s != NULL) {
        pthread_mutex_lock(&s->mu);
        if (id <= s->snap_top) {
            pass = !id_present(c, id);
        } else if (id > s->restore_top) {
            s->restore_top = id;
        }
        pthread_mutex_unlock(&s->mu);
    }
    cache_unlock(c);
    if (pass) {
        ids_above(c, id);
    }
    return pass;
}

sc_err sc_cache_restore_entry(sc_cache *c, const sc_cache_entry_info *e,
                              uint64_t now_ms, bool *added)
{
    if (added != NULL) {
        *added = false;
    }
    /* Ids 0 and UINT64_MAX are never given out: refused here, before any
     * branch below takes the id (a vector of a superseded model left out
     * still raises the next id past it). */
    if (c == NULL || e == NULL || e->ns == NULL || e->id == 0 ||
        e->id == UINT64_MAX) {
        return SC_EINVAL;
    }
    if (restore_passed(c, e->ns, e->id)) {
        return SC_OK;
    }
    sc_cache_item item = {
        .scope = e->scope,
        .text = e->text,
        .text_len = e->text_len,
        .vec = e->vec,
        .dim = e->dim,
        .embed_model = e->embed_model,
        .response = e->response,
        .response_len = e->response_len,
        .model = e->model,
        .feature = e->feature,
        .user = e->user,
        .input_tokens = e->input_tokens,
        .output_tokens = e->output_tokens,
    };
    float *v = NULL;
    if (e->vec != NULL && superseded(c, e->embed_model, e->dim)) {
        /* An earlier version's vector: the text embedded again, or, with
         * no text (or none the embedder takes), not restored at all. */
        sc_err rc = e->text != NULL ? embed_text(c, e->text, e->text_len, &v)
                                    : SC_EINVAL;
        if (rc == SC_ENOMEM) {
            return rc;
        }
        if (rc != SC_OK) {
            atomic_fetch_add(&c->re_dropped, 1);
            mark_moved_name(c, e->ns);
            ids_above(c, e->id); /* never given out again (PERSISTENCE.md) */
            return SC_OK;
        }
        item.vec = v;
        item.embed_model = c->cfg.embedder->model;
    }
    /* A restored entry's model is taken from its info: the moved one's. */
    sc_cache_entry_info ro = *e;
    ro.vec = item.vec;
    ro.vec_unit = e->vec_unit && v == NULL; /* not the embedder's output */
    ro.embed_model = item.embed_model;
    bool in = false, moved = v != NULL;
    sc_err rc = insert_entry(c, e->ns, &item, &ro, now_ms, &in, NULL);
    free(v);
    if (rc == SC_OK && in && moved) {
        atomic_fetch_add(&c->re_entries, 1);
        mark_moved_name(c, e->ns);
    }
    if (added != NULL) {
        *added = in;
    }
    return rc;
}

void sc_cache_reembed_counts_get(sc_cache *c, sc_cache_reembed_counts *out)
{
    out->namespaces = c != NULL ? atomic_load(&c->re_ns) : 0;
    out->entries = c != NULL ? atomic_load(&c->re_entries) : 0;
    out->dropped = c != NULL ? atomic_load(&c->re_dropped) : 0;
}

/* ---- delete, feedback, flush, expire ------------------------------------*/

/* c->lock held. Finds entry id's namespace and locks it; returns the entry
 * (NULL when gone, namespace unlocked). */
static entry *lock_entry(sc_cache *c, uint64_t id, ns **out)
{
    ns *s = NULL;
    uint64_t h = sc_htab_mix64(id);
    pthread_mutex_lock(&c->gmu);
    for (sc_hnode *n = sc_htab_first(&c->ids, h); n != NULL;
         n = sc_htab_next(n, h)) {
        entry *e = CONTAINER(n, entry, by_gid);
        if (e->id == id) {
            s = e->ns; /* namespaces outlive c->lock's read hold */
            break;
        }
    }
    pthread_mutex_unlock(&c->gmu);
    if (s == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&s->mu);
    /* It may have gone between the two locks; ids are never reused, so
     * finding it again under the namespace's mutex settles it. */
    entry *e = entry_find(s, id);
    if (e == NULL) {
        pthread_mutex_unlock(&s->mu);
        return NULL;
    }
    *out = s;
    return e;
}

/* Deletes entry id; journaled first unless force (an insert the journal
 * failed to commit is taken back whatever the journal says). */
static sc_err delete_entry(sc_cache *c, uint64_t id, bool force)
{
    if (c == NULL) {
        return SC_EINVAL;
    }
    pthread_rwlock_rdlock(&c->lock);
    ns *s = NULL;
    entry *e = lock_entry(c, id, &s);
    sc_err rc = e != NULL ? SC_OK : SC_ENOTFOUND;
    uint64_t seq = 0;
    if (e != NULL) {
        sc_cache_change ch = {
            .kind = SC_CHANGE_REMOVE, .ns = s->name, .id = id};
        rc = journal_append(c, &ch, &seq);
        if (rc == SC_OK || force) {
            entry_remove(c, s, e, GONE_DELETE);
        }
        pthread_mutex_unlock(&s->mu);
    }
    cache_unlock(c);
    if (rc == SC_OK) {
        rc = journal_commit(c, seq);
    }
    return rc;
}

sc_err sc_cache_delete(sc_cache *c, uint64_t id)
{
    return delete_entry(c, id, false);
}

/* ledger: charge the false hit (not when a log replays it: the ledger's
 * own records hold it); feature, user: the lookup's tags, NULL = the
 * entry's, as a hit is credited (ledger_lookup). An entry known never to
 * have been served is quarantined but charged nothing: no hit of it was
 * credited, so there are no avoided dollars to take back. */
static sc_err feedback(sc_cache *c, uint64_t id, bool ledger,
                       const char *feature, const char *user)
{
    if (c == NULL) {
        return SC_EINVAL;
    }
    pthread_rwlock_rdlock(&c->lock);
    ns *s = NULL;
    entry *e = lock_entry(c, id, &s);
    sc_err rc = e != NULL ? SC_OK : SC_ENOTFOUND;
    uint64_t seq = 0;
    if (e != NULL && !e->quarantined) {
        sc_cache_change ch = {
            .kind = SC_CHANGE_QUARANTINE, .ns = s->name, .id = id};
        rc = journal_append(c, &ch, &seq);
    }
    if (e != NULL) {
        if (!e->quarantined && rc == SC_OK) {
            quarantine_entry(c, s, e);
            lru_to_tail(c, s, e, true);
            s->st.false_hits++;
            bool served = e->hit_count > 0 || e->restored;
            if (ledger && served && c->cfg.ledger != NULL) {
                const blob *b = e->payload;
                sc_ledger_tags t = {s->name,
                                    feature != NULL ? feature : b->feature,
                                    user != NULL ? user : b->user};
                sc_ledger_call call = {b->model, e->input_tokens,
                                       e->output_tokens, e->tokens_estimated};
                sc_ledger_false_hit(c->cfg.ledger, &t, &call);
            }
        }
        pthread_mutex_unlock(&s->mu);
    }
    cache_unlock(c);
    return rc == SC_OK ? journal_commit(c, seq) : rc;
}

sc_err sc_cache_feedback(sc_cache *c, uint64_t id)
{
    return feedback(c, id, true, NULL, NULL);
}

sc_err sc_cache_feedback_tagged(sc_cache *c, uint64_t id, const char *feature,
                                const char *user)
{
    return feedback(c, id, true, feature, user);
}

sc_err sc_cache_hit_undone(sc_cache *c, const char *ns,
                           const sc_cache_result *r, const char *feature,
                           const char *user, bool quarantine)
{
    if (c == NULL || ns == NULL || r == NULL || !r->hit) {
        return SC_EINVAL;
    }
    if (c->cfg.ledger != NULL) {
        sc_ledger_tags t = {ns, feature != NULL ? feature : r->feature,
                            user != NULL ? user : r->user};
        sc_ledger_call call = {r->model, r->input_tokens, r->output_tokens,
                               r->tokens_estimated};
        sc_ledger_false_hit(c->cfg.ledger, &t, &call);
    }
    return quarantine ? feedback(c, r->id, false, NULL, NULL) : SC_OK;
}

sc_err sc_cache_restore_quarantine(sc_cache *c, uint64_t id)
{
    return feedback(c, id, false, NULL, NULL);
}

typedef struct flush_arg {
    sc_err rc;    /* the first journal error */
    uint64_t seq; /* the last record to commit */
} flush_arg;

static void flush_ns(sc_cache *c, ns *s, void *arg)
{
    flush_arg *a = arg;
    if (a->rc != SC_OK) {
        return; /* a flush of all stops at the first refusal (cache.h) */
    }
    pthread_mutex_lock(&s->mu);
    sc_cache_change ch = {.kind = SC_CHANGE_FLUSH, .ns = s->name};
    uint64_t seq;
    sc_err rc = journal_append(c, &ch, &seq);
    if (rc != SC_OK) {
        a->rc = rc;
        pthread_mutex_unlock(&s->mu);
        return;
    }
    a->seq = seq > a->seq ? seq : a->seq;
    /* A flush replayed over a snapshot takes the entries it restored:
     * their inserts logged after it are restored again (restore_passed). */
    s->snap_top = 0;
    while (!list_empty(&s->lru)) {
        entry_remove(c, s, CONTAINER(s->lru.next, entry, lru), GONE_FLUSH);
    }
    pthread_mutex_unlock(&s->mu);
}

sc_err sc_cache_flush(sc_cache *c, const char *nsname)
{
    if (c == NULL) {
        return SC_EINVAL;
    }
    flush_arg a = {SC_OK, 0};
    pthread_rwlock_rdlock(&c->lock);
    if (nsname == NULL) {
        each_ns(c, flush_ns, &a);
    } else {
        ns *s = ns_find(c, nsname);
        if (s != NULL) {
            flush_ns(c, s, &a);
        } else {
            a.rc = SC_ENONS;
        }
    }
    cache_unlock(c);
    sc_err rc = journal_commit(c, a.seq);
    return a.rc != SC_OK ? a.rc : rc;
}

typedef struct expire_arg {
    uint64_t now;
    size_t n;
} expire_arg;

/* Under s->mu: removes s's entries whose TTL has run out by now; returns
 * how many. */
static size_t reap_expired(sc_cache *c, ns *s, uint64_t now)
{
    size_t n = 0;
    sc_heap_node *top;
    while ((top = sc_heap_top(&s->expiry)) != NULL && top->key <= now) {
        entry_remove(c, s, CONTAINER(top, entry, exp), GONE_EXPIRED);
        n++;
    }
    return n;
}

static void expire_ns(sc_cache *c, ns *s, void *arg)
{
    expire_arg *a = arg;
    pthread_mutex_lock(&s->mu);
    a->n += reap_expired(c, s, a->now);
    pthread_mutex_unlock(&s->mu);
}

size_t sc_cache_expire(sc_cache *c, uint64_t now)
{
    if (c == NULL) {
        return 0;
    }
    expire_arg a = {now != 0 ? now : now_ms(c), 0};
    pthread_rwlock_rdlock(&c->lock);
    each_ns(c, expire_ns, &a);
    cache_unlock(c);
    return a.n;
}

/* ---- lookup -------------------------------------------------------------*/

unsigned sc_cache_hist_bin(float similarity)
{
    if (isnan(similarity)) {
        return 0;
    }
    if (similarity < 0.0f) {
        return 1;
    }
    double s = similarity;
    if (s < 0.8) {
        unsigned b = (unsigned)(s * 100.0);
        return 2 + (b > 79 ? 79 : b);
    }
    double f = (s - 0.8) * 1000.0;
    return 82 + (f >= 199.0 ? 199u : (unsigned)f);
}

void sc_cache_hist_range(unsigned bin, double *lo, double *hi)
{
    double l = NAN, h = NAN;
    if (bin == 1) {
        l = -1.0;
        h = 0.0;
    } else if (bin >= 2 && bin < 82) {
        l = (bin - 2) / 100.0;
        h = (bin - 1) / 100.0;
    } else if (bin >= 82 && bin < SC_CACHE_HIST_BINS) {
        l = 0.8 + (bin - 82) / 1000.0;
        h = 0.8 + (bin - 81) / 1000.0;
    }
    if (lo != NULL) {
        *lo = l;
    }
    if (hi != NULL) {
        *hi = h;
    }
}

/* ns->mu held. What a hit does to its entry: recency, count, sliding TTL. */
static void entry_touch(sc_cache *c, ns *s, entry *e, uint64_t now)
{
    e->last_hit_ms = now;
    e->hit_count++;
    list_unlink(&e->lru);
    list_push_front(&s->lru, &e->lru);
    /* Never earlier: a hit that read the clock before a later one's may
     * be judged after it. */
    if (s->cfg.ttl_mode == SC_TTL_SLIDING && e->ttl_ms != 0 &&
        e->exp.slot != SC_HEAP_NONE &&
        add_sat(now, e->ttl_ms) > e->expires_ms) {
        e->expires_ms = add_sat(now, e->ttl_ms);
        e->exp.key = e->expires_ms;
        sc_heap_fix(&s->expiry, &e->exp);
    }
    pthread_mutex_lock(&c->gmu);
    list_unlink(&e->glru);
    list_push_front(&c->lru, &e->glru);
    pthread_mutex_unlock(&c->gmu);
}

static sc_err check_query(const sc_cache_query *q, size_t *scope_len)
{
    sc_err rc = check_str(q->scope != NULL ? q->scope : "", SC_CACHE_SCOPE_MAX,
                          scope_len);
    if (rc != SC_OK) {
        return rc;
    }
    if (q->text == NULL && q->text_len > 0) {
        return SC_EINVAL;
    }
    if (q->text_len > SC_CACHE_TEXT_MAX) {
        return SC_ETOOBIG;
    }
    if (q->text == NULL && q->vec == NULL) {
        return SC_EINVAL;
    }
    if (q->embed_tokens > SC_CACHE_TOKENS_MAX) {
        return SC_ERANGE; /* as an insert's tokens: the sums cannot wrap */
    }
    if (q->has_threshold && (!isfinite(q->threshold) || q->threshold < -1.0f ||
                             q->threshold > 1.0f)) {
        return SC_EINVAL;
    }
    if (q->vec != NULL) {
        return check_vec(q->vec, q->dim);
    }
    return SC_OK;
}

/* One lookup on its way through sc_cache_lookup / sc_cache_lookup_many:
 * prepare (no locks), open (namespace mutex: exact layer, scope pinned),
 * search (no mutex: the pin keeps the scope and its index alive), judge
 * (mutex again: candidates re-checked by id, since any may have gone). */
typedef struct pending {
    const sc_cache_query *q;
    sc_cache_result *res;
    sc_err rc;
    char *norm;
    size_t norm_len;
    size_t scope_len;
    sc_text_key key;
    const float *vec; /* q->vec, or own_vec: the query's text embedded */
    uint32_t dim;
    float *own_vec;
    void *prep;        /* the query's text prepared (prep_new), or NULL */
    double embed_s;    /* time spent embedding and preparing the query's text */
    const char *model; /* of vec */
    scope *sc;
    entry *served;
    float best;
    float threshold;
    bool search;
    bool again; /* an exact hit found again after the searches (lookup_run) */
    unsigned nh;
    sc_hit hits[LOOKUP_K];
} pending;

static void lookup_prepare(const sc_cache *c, embed_policy pol, pending *p,
                           const sc_cache_query *q, sc_cache_result *res)
{
    memset(p, 0, sizeof(*p));
    p->q = q;
    p->res = res;
    memset(res, 0, sizeof(*res));
    p->rc = check_query(q, &p->scope_len);
    if (p->rc != SC_OK) {
        return;
    }
    const char *scope_name = q->scope != NULL ? q->scope : "";
    p->rc = normalise_copy(q->text, q->text_len, &p->norm, &p->norm_len);
    if (p->rc == SC_OK && p->norm_len > 0) {
        p->key =
            sc_cache_text_key(scope_name, p->scope_len, p->norm, p->norm_len);
    }
    p->vec = q->vec;
    p->dim = q->vec != NULL ? q->dim : 0;
    if (p->rc == SC_OK && q->vec == NULL && p->norm_len > 0 &&
        pol == EMBED_MISSING && c->cfg.text_needs_embedder) {
        p->rc = SC_ENOEMBED;
    }
    if (p->rc == SC_OK && q->vec == NULL && p->norm_len > 0 &&
        pol == EMBED_YES) {
        /* Text with no usable word finds what the exact layer has. */
        double t0 = mono_s();
        sc_err erc = embed_text(c, q->text, q->text_len, &p->own_vec);
        p->embed_s = mono_s() - t0;
        if (erc == SC_OK) {
            p->vec = p->own_vec;
            p->dim = c->cfg.embedder->dim;
        } else if (erc != SC_EZEROVEC) {
            p->rc = erc;
        }
    }
    p->model = vec_model(c, p->own_vec != NULL, q->embed_model);
    if (p->rc == SC_OK &&
        strnlen(p->model, SC_CACHE_TAG_MAX + 1) > SC_CACHE_TAG_MAX) {
        p->rc = SC_ETOOBIG;
    }
    if (p->rc == SC_OK && p->vec != NULL && q->text != NULL &&
        wants_prep(c, p->model)) {
        /* Here, without locks: the rescore under the namespace's lock
         * then reads no text (sc_cache_embedder.prep_new). */
        double t0 = mono_s();
        p->prep = prep_text(c, q->text, q->text_len);
        p->embed_s += mono_s() - t0;
        if (p->prep == NULL) {
            p->rc = SC_ENOMEM;
        }
    }
}

/* What lookup_prepare made, freed. */
static void lookup_release(const sc_cache *c, pending *p)
{
    free(p->norm);
    free(p->own_vec);
    prep_free(c, p->prep);
}

/* Under s->mu: the exact layer, and whether the semantic layer must run. */
/* Under s->mu, p's scope pinned: p's text in the exact layer. A live
 * entry of it is served (p->served, the result an exact hit's); an expired
 * one goes, and the result stays as it was. */
static void exact_layer(sc_cache *c, ns *s, pending *p, uint64_t now)
{
    entry *e = exact_find(s, p->sc, p->key, p->norm, p->norm_len);
    if (e != NULL && expired(e, now)) {
        entry_remove(c, s, e, GONE_EXPIRED);
    } else if (e != NULL) {
        p->served = e;
        p->best = 1.0f;
        p->res->layer = SC_LAYER_EXACT;
        p->res->similarity = 1.0f;
        p->res->reason = SC_MISS_NONE;
    }
}

static void lookup_open(sc_cache *c, ns *s, pending *p, uint64_t now)
{
    const sc_cache_query *q = p->q;
    if (p->own_vec != NULL && !embedded_fits(s, p->model, p->dim)) {
        /* The namespace took another model's vectors, or another
         * dimension, since the peek: the exact layer only, as an insert. */
        p->vec = NULL;
        p->dim = 0;
    }
    if (p->vec != NULL && s->cfg.dim != 0 && p->dim != s->cfg.dim) {
        p->rc = SC_EDIM;
        return;
    }
    if (p->vec != NULL && (p->rc = model_check(s, p->model)) != SC_OK) {
        return;
    }
    p->threshold = q->has_threshold ? q->threshold : ns_threshold(c, s);
    p->best = NAN;
    p->res->reason = SC_MISS_NO_CANDIDATE;
    /* Lookups never make scopes: an unknown scope simply has nothing. */
    p->sc = scope_find(s, q->scope != NULL ? q->scope : "", p->scope_len);
    if (p->sc == NULL) {
        return;
    }
    p->sc->pins++;
    if (p->norm_len > 0) {
        exact_layer(c, s, p, now);
    }
    p->search = p->served == NULL && p->sc->ix != NULL && p->vec != NULL;
}

/* Under s->mu: in a namespace of the embedder's model, replaces each
 * candidate's cosine by the embedder's rescored similarity (for candidates
 * that kept their text, when the query has text) and re-sorts the
 * candidates by it, best first. */
static void rescore(const sc_cache *c, const ns *s, const pending *p,
                    entry **cand, float *sim, unsigned nc)
{
    const sc_cache_embedder *em = c->cfg.embedder;
    if (em == NULL || em->rescore == NULL || p->q->text == NULL ||
        !ns_of_embedder(c, s)) {
        return;
    }
    /* The candidates that kept their text, in one call. */
    const char *texts[LOOKUP_K];
    size_t lens[LOOKUP_K];
    const void *preps[LOOKUP_K];
    float cosine[LOOKUP_K], r[LOOKUP_K];
    unsigned at[LOOKUP_K], nt = 0;
    for (unsigned i = 0; i < nc; i++) {
        if (cand[i]->has_text) {
            texts[nt] = cand[i]->text;
            lens[nt] = cand[i]->text_len;
            preps[nt] = cand[i]->prep;
            cosine[nt] = sim[i];
            at[nt++] = i;
        }
    }
    if (nt > 0) {
        em->rescore(em->arg, p->sc != NULL ? p->sc->stats : NULL, p->q->text,
                    p->q->text_len, p->prep, nt, texts, lens, preps, cosine, r);
    }
    for (unsigned k = 0; k < nt; k++) {
        unsigned i = at[k];
        sim[i] = isfinite(r[k]) ? fmaxf(-1.0f, fminf(1.0f, r[k])) : sim[i];
    }
    /* Insertion sort: nc <= LOOKUP_K; stable, so ties keep index order. */
    for (unsigned i = 1; i < nc; i++) {
        entry *e = cand[i];
        float v = sim[i];
        unsigned j = i;
        for (; j > 0 && sim[j - 1] < v; j--) {
            cand[j] = cand[j - 1];
            sim[j] = sim[j - 1];
        }
        cand[j] = e;
        sim[j] = v;
    }
}

/* Whether a hit on b fits in the budget (the first always does); if so,
 * takes its bytes. */
static bool budget_take(sc_cache_budget *bu, const blob *b)
{
    size_t need = b->response_len + strlen(b->model) + strlen(b->feature) +
                  strlen(b->user) + SC_CACHE_HIT_OVERHEAD;
    if (bu->served && need > bu->left) {
        return false;
    }
    bu->served = true;
    bu->left = need < bu->left ? bu->left - need : 0;
    return true;
}

/* Under s->mu: judges the search's candidates, counts, fills the result,
 * unpins the scope. */
static void lookup_judge(sc_cache *c, ns *s, pending *p, uint64_t now)
{
    sc_cache_result *res = p->res;
    if (p->rc != SC_OK) {
        goto out;
    }
    if (p->search) {
        entry *cand[LOOKUP_K];
        float sim[LOOKUP_K];
        unsigned nc = 0;
        for (unsigned i = 0; i < p->nh; i++) {
            entry *e = entry_find(s, p->hits[i].id);
            if (e == NULL || e->quarantined || !e->in_index) {
                continue;
            }
            if (expired(e, now)) {
                entry_remove(c, s, e, GONE_EXPIRED);
                continue;
            }
            /* Equal similarities by id, the older first: the index ranks
             * them by its slots, whose order neither removals nor a
             * restart (a snapshot writes entries least recent first)
             * keep, and the answer served must not change with it. */
            unsigned j = nc;
            for (float v = p->hits[i].similarity;
                 j > 0 && sim[j - 1] == v && cand[j - 1]->id > e->id; j--) {
                cand[j] = cand[j - 1];
                sim[j] = sim[j - 1];
            }
            cand[j] = e;
            sim[j] = p->hits[i].similarity;
            nc++;
        }
        rescore(c, s, p, cand, sim, nc);
        bool vote =
            s->cfg.vote == 1 || (s->cfg.vote == -1 && c->cfg.embedder != NULL &&
                                 c->cfg.embedder->vote && ns_of_embedder(c, s));
        if (nc > 0 && vote) {
            /* The embedder's namespaces: the response vote of cache/vote.h
             * (it may serve a lower-ranked candidate of the winning
             * response). */
            sc_vote_key key[LOOKUP_K];
            for (unsigned i = 0; i < nc; i++) {
                key[i].hash = cand[i]->payload->response_hash;
                key[i].len = cand[i]->payload->response_len;
            }
            sc_vote_params vp;
            sc_vote_params_default(&vp);
            vp.margin = ns_margin(c, s);
            sc_vote_outcome why;
            int w = sc_vote_pick(sim, key, nc, p->threshold, &vp, &why);
            p->best = sim[0];
            res->reason = w >= 0 ? SC_MISS_NONE
                          : why == SC_VOTE_BELOW_THRESHOLD
                              ? SC_MISS_BELOW_THRESHOLD
                          : why == SC_VOTE_AMBIGUOUS ? SC_MISS_AMBIGUOUS
                                                     : SC_MISS_NO_CANDIDATE;
            if (w >= 0) {
                p->served = cand[w];
                res->layer = SC_LAYER_SEMANTIC;
                res->similarity = sim[w];
            }
        } else if (nc > 0) {
            p->best = sim[0];
            if (sim[0] < p->threshold) {
                res->reason = SC_MISS_BELOW_THRESHOLD;
            } else {
                res->reason = SC_MISS_NONE;
                float m = ns_margin(c, s);
                for (unsigned j = 1; m > 0.0f && j < nc; j++) {
                    if (sim[j] >= sim[0] - m &&
                        !same_response(cand[j]->payload, cand[0]->payload)) {
                        res->reason = SC_MISS_AMBIGUOUS;
                        break;
                    }
                }
            }
            if (res->reason == SC_MISS_NONE) {
                p->served = cand[0];
                res->layer = SC_LAYER_SEMANTIC;
                res->similarity = sim[0];
            }
        }
    }

    if (p->served != NULL && p->q->budget != NULL &&
        !budget_take(p->q->budget, p->served->payload)) {
        p->rc = SC_ETOOBIG; /* not served: nothing is counted */
        goto out;
    }
    s->st.lookups++;
    s->st.hist[sc_cache_hist_bin(p->best)]++;
    res->best_similarity = p->best;
    if (p->served != NULL) {
        entry *served = p->served;
        if (res->layer == SC_LAYER_EXACT) {
            s->st.exact_hits++;
        } else {
            s->st.semantic_hits++;
        }
        entry_touch(c, s, served, now);
        blob *b = served->payload;
        blob_ref(b);
        res->hit = true;
        res->id = served->id;
        res->response = b->data;
        res->response_len = b->response_len;
        res->model = b->model;
        res->feature = b->feature;
        res->user = b->user;
        res->input_tokens = served->input_tokens;
        res->output_tokens = served->output_tokens;
        res->tokens_estimated = served->tokens_estimated;
        res->created_ms = served->created_ms;
        res->hit_count = served->hit_count;
        res->expires_ms = served->expires_ms;
        res->priv_ = b;
    } else {
        s->st.misses++;
        if (res->reason == SC_MISS_AMBIGUOUS) {
            s->st.ambiguous_misses++;
        }
    }
out:
    if (p->sc != NULL) {
        scope_unpin(s, p->sc);
        p->sc = NULL;
    }
    if (p->rc != SC_OK) {
        memset(res, 0, sizeof(*res));
    }
}

/* Under s->mu, the exact hit lookup_open found for p when the mutex was
 * held before: found again (it may have gone meanwhile: a miss then, as
 * for a lookup a moment after its removal). */
static void exact_again(sc_cache *c, ns *s, pending *p, uint64_t now)
{
    p->again = false;
    p->best = NAN; /* a miss, as lookup_open begins, unless found again */
    p->res->layer = SC_LAYER_NONE;
    p->res->similarity = 0.0f;
    p->res->reason = SC_MISS_NO_CANDIDATE;
    exact_layer(c, s, p, now); /* its scope is pinned since lookup_open */
}

/* Runs prepared lookups p[0..n) in namespace nsname. The semantic searches
 * of lookups that share a scope go to the index as one batch. Lookups that
 * share a reply budget are judged in their order, so that the budget goes
 * to the first hits: an exact hit after a semantic search is found again
 * once the searches are done, not judged before the search's. */
static sc_err lookup_run(sc_cache *c, const char *nsname, pending *p, size_t n)
{
    pthread_rwlock_rdlock(&c->lock);
    ns *s = ns_find(c, nsname);
    if (s == NULL) {
        cache_unlock(c);
        return SC_ENONS;
    }
    pthread_mutex_lock(&s->mu);
    /* The time once the locks are held (a wait for them must not serve an
     * entry that expired meanwhile), and the expired entries gone before
     * the search: not yet reaped, they took the search's k places from
     * live candidates (a false miss, or a margin's rival pushed out). */
    uint64_t now = now_ms(c);
    reap_expired(c, s, now);
    size_t nsearch = 0;
    bool budget_searched = false; /* a search with a budget came before */
    for (size_t i = 0; i < n; i++) {
        if (p[i].rc == SC_OK) {
            lookup_open(c, s, &p[i], now);
            nsearch += p[i].search;
            if (p[i].search) {
                budget_searched |= p[i].q->budget != NULL;
            } else if (p[i].served != NULL && p[i].q->budget != NULL &&
                       budget_searched) {
                /* Its budget after the earlier searches' hits: it is
                 * found again then (its entry may go once the mutex is
                 * let go, so it is not kept). */
                p[i].served = NULL;
                p[i].again = true;
            } else {
                /* Judge now: an exact hit's entry may go as soon as the
                 * mutex is let go. */
                lookup_judge(c, s, &p[i], now);
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (rms.n > 0) {
        /* The expired entries' vectors out before the search, which they
         * would crowd as well. */
        drain_removals();
    }

    /* The scans, outside the mutex: one batch per index (scope). */
    sc_err rc = SC_OK;
    if (nsearch > 0) {
        size_t *idx = malloc(nsearch * sizeof(size_t));
        float *qs = NULL;
        sc_hit *hits = NULL;
        unsigned *nh = NULL;
        uint8_t *done = calloc(n, 1);
        uint32_t dim = 0;
        for (size_t i = 0; i < n && dim == 0; i++) {
            dim = p[i].search ? p[i].dim : 0;
        }
        if (idx != NULL && done != NULL) {
            qs = malloc(nsearch * dim * sizeof(float));
            hits = malloc(nsearch * LOOKUP_K * sizeof(sc_hit));
            nh = malloc(nsearch * sizeof(unsigned));
        }
        if (idx == NULL || done == NULL || qs == NULL || hits == NULL ||
            nh == NULL) {
            rc = SC_ENOMEM;
        }
        for (size_t i = 0; i < n && rc == SC_OK; i++) {
            if (!p[i].search || done[i]) {
                continue;
            }
            sc_index *ix = p[i].sc->ix;
            size_t g = 0;
            for (size_t j = i; j < n; j++) {
                if (p[j].search && !done[j] && p[j].sc->ix == ix) {
                    idx[g] = j;
                    memcpy(qs + g * dim, p[j].vec, dim * sizeof(float));
                    done[j] = 1;
                    g++;
                }
            }
            sc_err src =
                g == 1 ? sc_index_search(ix, qs, LOOKUP_K, SEARCH_ALL, hits, nh)
                       : sc_index_search_batch(ix, qs, g, LOOKUP_K, SEARCH_ALL,
                                               hits, nh);
            for (size_t k = 0; k < g; k++) {
                pending *pk = &p[idx[k]];
                if (src != SC_OK) {
                    pk->rc = src;
                    continue;
                }
                pk->nh = nh[k];
                memcpy(pk->hits, hits + k * LOOKUP_K, nh[k] * sizeof(sc_hit));
            }
        }
        free(idx);
        free(qs);
        free(hits);
        free(nh);
        free(done);
    }

    pthread_mutex_lock(&s->mu);
    now = now_ms(c); /* the scan took time: judge by the time now */
    for (size_t i = 0; i < n; i++) {
        if (p[i].again) {
            exact_again(c, s, &p[i], now);
            lookup_judge(c, s, &p[i], now);
            continue;
        }
        if (!p[i].search) {
            continue;
        }
        if (rc != SC_OK && p[i].rc == SC_OK) {
            p[i].rc = rc;
        }
        lookup_judge(c, s, &p[i], now);
    }
    pthread_mutex_unlock(&s->mu);
    cache_unlock(c);
    return SC_OK;
}

/* Counts a finished lookup in the ledger: the served entry's call, the
 * embedding's spend and the lookup's own time (spent: its share of it). */
static void ledger_lookup(sc_cache *c, const char *nsname, const pending *p,
                          const sc_cache_result *res, double spent_s)
{
    const sc_cache_query *q = p->q;
    sc_ledger_tags t = {nsname, q->feature, q->user};
    if (res->hit) {
        t.feature = t.feature != NULL ? t.feature : res->feature;
        t.user = t.user != NULL ? t.user : res->user;
    }
    sc_ledger_lookup ev;
    memset(&ev, 0, sizeof(ev));
    ev.layer = !res->hit ? 0 : res->layer == SC_LAYER_EXACT ? 1 : 2;
    if (res->hit) {
        ev.served = (sc_ledger_call){res->model, res->input_tokens,
                                     res->output_tokens, res->tokens_estimated};
    }
    ev.embed_cpu_s = p->embed_s;
    if (q->vec != NULL) {
        /* The client embedded: its model's price (unnamed = unknown). */
        ev.embed_model = q->embed_model != NULL ? q->embed_model : "";
        ev.embed_tokens = q->embed_tokens;
        if (ev.embed_tokens == 0) {
            ev.embed_tokens = sc_ledger_estimate_tokens(q->text_len);
            ev.embed_estimated = true;
        }
    }
    ev.lookup_cpu_s = spent_s > p->embed_s ? spent_s - p->embed_s : 0;
    sc_ledger_lookup_done(c->cfg.ledger, &t, &ev, now_ms(c));
}

sc_err sc_cache_lookup(sc_cache *c, const char *nsname, const sc_cache_query *q,
                       sc_cache_result *res)
{
    double t0 = mono_s();
    if (res != NULL) {
        memset(res, 0, sizeof(*res));
    }
    if (c == NULL || nsname == NULL || q == NULL || res == NULL) {
        return SC_EINVAL;
    }
    pending p;
    embed_policy pol = q->vec == NULL ? peek_policy(c, nsname) : EMBED_NO_NS;
    lookup_prepare(c, pol, &p, q, res);
    sc_err rc = p.rc;
    if (rc == SC_OK) {
        rc = lookup_run(c, nsname, &p, 1);
        if (rc == SC_OK) {
            rc = p.rc;
        }
    }
    if (rc == SC_OK && c->cfg.ledger != NULL) {
        ledger_lookup(c, nsname, &p, res, mono_s() - t0);
    }
    lookup_release(c, &p);
    if (rc != SC_OK) {
        memset(res, 0, sizeof(*res));
    }
    return rc;
}

sc_err sc_cache_lookup_many(sc_cache *c, const char *nsname,
                            const sc_cache_query *qs, size_t n,
                            sc_cache_result *res, sc_err *rcs)
{
    if (c == NULL || nsname == NULL ||
        (n > 0 && (qs == NULL || res == NULL || rcs == NULL))) {
        return SC_EINVAL;
    }
    if (n == 0) {
        return SC_OK;
    }
    double t0 = mono_s();
    pending *p = malloc(n * sizeof(*p));
    if (p == NULL) {
        return SC_ENOMEM;
    }
    embed_policy pol = EMBED_NO_NS;
    for (size_t i = 0; i < n && pol == EMBED_NO_NS; i++) {
        pol = qs[i].vec == NULL ? peek_policy(c, nsname) : EMBED_NO_NS;
    }
    for (size_t i = 0; i < n; i++) {
        lookup_prepare(c, pol, &p[i], &qs[i], &res[i]);
    }
    sc_err rc = lookup_run(c, nsname, p, n);
    /* The batch's own time, split evenly: each item's embedding (in the
     * time taken) is its own and charged to it alone. */
    double spent = mono_s() - t0;
    for (size_t i = 0; i < n; i++) {
        spent -= p[i].embed_s;
    }
    double share = spent > 0 ? spent / (double)n : 0;
    for (size_t i = 0; i < n; i++) {
        /* As sc_cache_lookup: an item's own error (found as it was
         * prepared) before the namespace's. */
        rcs[i] = p[i].rc != SC_OK ? p[i].rc : rc;
        if (rcs[i] == SC_OK && c->cfg.ledger != NULL) {
            ledger_lookup(c, nsname, &p[i], &res[i], share + p[i].embed_s);
        }
        if (rcs[i] != SC_OK) {
            memset(&res[i], 0, sizeof(res[i]));
        }
        lookup_release(c, &p[i]);
    }
    free(p);
    return SC_OK;
}

void sc_cache_result_fini(sc_cache_result *res)
{
    if (res == NULL) {
        return;
    }
    blob_unref(res->priv_);
    memset(res, 0, sizeof(*res));
}

/* ---- stats, iteration ---------------------------------------------------*/

typedef struct train_stats_arg {
    const sc_cache *c;
    const ns *s;
    sc_cache_stats *o;
} train_stats_arg;

static void add_train_stats(sc_hnode *n, void *arg)
{
    const train_stats_arg *a = arg;
    scope *sc = CONTAINER(n, scope, node);
    sc_index_train_stats ts;
    if (sc->ix != NULL && sc_index_get_train_stats(sc->ix, &ts) == SC_OK) {
        a->o->ivf_abandoned += ts.abandoned;
        a->o->ivf_untrained_capped += cap_keeps_untrained(a->c, a->s, sc, &ts);
    }
}

static void add_stats(sc_cache *c, ns *s, void *arg)
{
    sc_cache_stats *o = arg;
    pthread_mutex_lock(&s->mu);
    /* The scopes' indexes open now; the tally has the others. */
    train_stats_arg ta = {c, s, o};
    sc_htab_each(&s->scopes, add_train_stats, &ta);
    o->ivf_abandoned +=
        atomic_load_explicit(&s->gone_ix->abandoned, memory_order_relaxed);
    const sc_cache_stats *t = &s->st;
    o->namespaces++;
    o->lookups += t->lookups;
    o->exact_hits += t->exact_hits;
    o->semantic_hits += t->semantic_hits;
    o->misses += t->misses;
    o->ambiguous_misses += t->ambiguous_misses;
    o->inserts += t->inserts;
    o->replaced += t->replaced;
    o->deletes += t->deletes;
    o->expirations += t->expirations;
    o->evictions += t->evictions;
    o->flushed += t->flushed;
    o->false_hits += t->false_hits;
    o->quarantined += s->quarantined;
    o->entries += s->entries;
    o->bytes += s->bytes;
    o->scopes += s->scopes.count;
    for (unsigned i = 0; i < SC_CACHE_HIST_BINS; i++) {
        o->hist[i] += t->hist[i];
    }
    pthread_mutex_unlock(&s->mu);
}

sc_err sc_cache_stats_get(sc_cache *c, const char *nsname, sc_cache_stats *out)
{
    if (c == NULL || out == NULL) {
        return SC_EINVAL;
    }
    memset(out, 0, sizeof(*out));
    sc_err rc = SC_OK;
    pthread_rwlock_rdlock(&c->lock);
    if (nsname == NULL) {
        each_ns(c, add_stats, out);
        /* Namespaces were read one after another; the totals are one
         * consistent reading. */
        pthread_mutex_lock(&c->gmu);
        out->entries = c->entries;
        out->bytes = c->bytes;
        pthread_mutex_unlock(&c->gmu);
    } else {
        ns *s = ns_find(c, nsname);
        if (s != NULL) {
            add_stats(c, s, out);
        } else {
            rc = SC_ENONS;
        }
    }
    cache_unlock(c);
    return rc;
}

typedef struct foreach_arg {
    sc_cache_entry_fn fn;
    void *arg;
    float *vec; /* SC_INDEX_MAX_DIM floats */
    int stop;
} foreach_arg;

/* ns->mu held: calls fn with e's info; vec has room for SC_INDEX_MAX_DIM
 * floats. A quarantined entry has left its index: its vector went with it,
 * and it comes back, if at all, without one (it is never served). */
static int visit_entry(const ns *s, const entry *e, float *vec,
                       sc_cache_entry_fn fn, void *arg)
{
    bool has_vec = e->in_index && sc_index_get(e->sc->ix, e->id, vec) == SC_OK;
    sc_cache_entry_info info;
    entry_info(s, e, has_vec ? vec : NULL, &info);
    return fn(&info, arg);
}

static void foreach_ns(sc_cache *c, ns *s, void *arg)
{
    (void)c;
    foreach_arg *a = arg;
    if (a->stop) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    for (lnode *n = s->lru.next; n != &s->lru && !a->stop; n = n->next) {
        a->stop =
            visit_entry(s, CONTAINER(n, entry, lru), a->vec, a->fn, a->arg);
    }
    pthread_mutex_unlock(&s->mu);
}

sc_err sc_cache_foreach_entry(sc_cache *c, const char *nsname,
                              sc_cache_entry_fn fn, void *arg)
{
    if (c == NULL || fn == NULL) {
        return SC_EINVAL;
    }
    foreach_arg a = {fn, arg, malloc(SC_INDEX_MAX_DIM * sizeof(float)), 0};
    if (a.vec == NULL) {
        return SC_ENOMEM;
    }
    sc_err rc = SC_OK;
    pthread_rwlock_rdlock(&c->lock);
    if (nsname == NULL) {
        each_ns(c, foreach_ns, &a);
    } else {
        ns *s = ns_find(c, nsname);
        if (s != NULL) {
            foreach_ns(c, s, &a);
        } else {
            rc = SC_ENONS;
        }
    }
    cache_unlock(c);
    free(a.vec);
    return rc;
}

#define SCAN_CHUNK 256u

typedef struct id_list {
    uint64_t *ids;
    size_t n, cap;
    int oom;
} id_list;

static void push_id(id_list *l, uint64_t id)
{
    /* Once out of memory the list is never handed out: no retry. */
    if (l->oom || SC_VEC_RESERVE(l->ids, l->cap, l->n, 1, 1024) != SC_OK) {
        l->oom = 1;
        return;
    }
    l->ids[l->n++] = id;
}

sc_err sc_cache_scan_entries(sc_cache *c, const char *nsname, uint64_t serial,
                             sc_err (*start)(void *), sc_cache_entry_fn fn,
                             sc_err (*between)(void *), void *arg)
{
    if (c == NULL || nsname == NULL || fn == NULL) {
        return SC_EINVAL;
    }
    float *vec = malloc(SC_INDEX_MAX_DIM * sizeof(float));
    if (vec == NULL) {
        return SC_ENOMEM;
    }
    /* The ids first (8 bytes each, one short hold), then the entries a
     * chunk at a time, each looked up again: it may have gone meanwhile. */
    id_list l = {0};
    pthread_rwlock_rdlock(&c->lock);
    ns *s = ns_find_serial(c, nsname, serial);
    if (s != NULL) {
        /* Least recent first: a restore puts each entry it reads in front,
         * so the LRU order comes back as it was (PERSISTENCE.md). */
        pthread_mutex_lock(&s->mu);
        for (lnode *n = s->lru.prev; n != &s->lru && !l.oom; n = n->prev) {
            push_id(&l, CONTAINER(n, entry, lru)->id);
        }
        pthread_mutex_unlock(&s->mu);
    }
    cache_unlock(c);
    sc_err rc = s == NULL ? SC_ENONS : l.oom ? SC_ENOMEM : SC_OK;
    if (rc == SC_OK && start != NULL) {
        rc = start(arg);
    }
    for (size_t i = 0; i < l.n && rc == SC_OK; i += SCAN_CHUNK) {
        pthread_rwlock_rdlock(&c->lock);
        /* Found by name again: a namespace dropped meanwhile is not the
         * one of these ids, and a new one of that name holds none of them. */
        s = ns_find_serial(c, nsname, serial);
        if (s == NULL) {
            cache_unlock(c);
            break;
        }
        pthread_mutex_lock(&s->mu);
        int stop = 0;
        for (size_t k = i; k < l.n && k < i + SCAN_CHUNK && !stop; k++) {
            const entry *e = entry_find(s, l.ids[k]);
            if (e != NULL) {
                stop = visit_entry(s, e, vec, fn, arg);
            }
        }
        pthread_mutex_unlock(&s->mu);
        cache_unlock(c);
        if (stop) {
            break;
        }
        if (between != NULL) {
            rc = between(arg);
        }
    }
    free(l.ids);
    free(vec);
    return rc;
}

/* ---- an entry's namespace (access keys) --------------------------------*/

sc_err sc_cache_entry_ns(sc_cache *c, uint64_t id,
                         char out[SC_CACHE_NS_NAME_MAX + 1])
{
    if (c == NULL) {
        return SC_EINVAL;
    }
    pthread_rwlock_rdlock(&c->lock);
    ns *s = NULL;
    entry *e = lock_entry(c, id, &s);
    if (e != NULL) {
        memcpy(out, s->name, strlen(s->name) + 1);
        pthread_mutex_unlock(&s->mu);
    }
    cache_unlock(c);
    return e != NULL ? SC_OK : SC_ENOTFOUND;
}
