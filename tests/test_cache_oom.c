/* test_cache_oom.c - the cache where one allocation fails: an insert
 * refused (by its journal) after making its scope's index, with no memory
 * to keep that index for a close after the locks (close_later closes it at
 * once): nothing uses the index after that close; and (with FAISS) a
 * delete from an IVF scope while its training runs, with no memory to
 * queue the vector's removal for after the locks (remove_later removes it
 * at once). realloc is wrapped (--wrap=realloc); a use after free shows
 * under AddressSanitizer. And the restore's LRU merge across namespaces,
 * with and without memory for its cursors (--wrap=malloc), to the same
 * order, ties included: on a fixed set and on seeded random ones against
 * a reference merge. */
#define _GNU_SOURCE
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/cache.h"
#include "index/index.h"
#include "test_util.h"

/* close_later's first list: 8 of { sc_index *, ix_tally *, uint64_t }
 * (cache/cache.c late_ix). Failed once, on the thread that armed it. */
#define LATE_LIST_BYTES (8 * (2 * sizeof(void *) + sizeof(uint64_t)))

/* remove_later's first queue: 8 of { ns *, scope *, sc_index *,
 * uint64_t } (cache/cache.c late_rm). Failed once, on the thread that
 * armed it. */
#define RM_LIST_BYTES (8 * (3 * sizeof(void *) + sizeof(uint64_t)))

static _Thread_local int armed, armed_rm;
static atomic_int injected, injected_rm;
/* Whether the journal refuses inserts (and arms the failure). */
static int refuse = 1;

void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n)
{
    if (armed && p == NULL && n == LATE_LIST_BYTES) {
        armed = 0;
        atomic_fetch_add(&injected, 1);
        return NULL;
    }
    if (armed_rm && p == NULL && n == RM_LIST_BYTES) {
        armed_rm = 0;
        atomic_fetch_add(&injected_rm, 1);
        return NULL;
    }
    return __real_realloc(p, n);
}

/* malloc is wrapped too (--wrap=malloc): while malloc_armed, every call
 * fails (sc_cache_restore_lru's cursors: it allocates nothing else). */
static _Thread_local int malloc_armed;
static atomic_int malloc_failed;

void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_malloc(size_t n)
{
    if (malloc_armed) {
        atomic_fetch_add(&malloc_failed, 1);
        return NULL;
    }
    return __real_malloc(n);
}

static _Atomic uint64_t fake_now;

static uint64_t fake_clock(void *arg)
{
    (void)arg;
    return atomic_load(&fake_now);
}

/* The restored entries of test_lru_merge, each namespace's least recent
 * first as a snapshot holds them. "a"'s third was hit with a clock read
 * before the second's hit (its last use older, its place more recent).
 * "b"'s second and "c"'s first were last used at the same time (40). */
static const struct {
    const char *ns;
    uint64_t created, hit;
    bool quarantined;
} lru_saved[9] = {
    {"a", 5, 95, true},   {"a", 10, 0, false}, {"a", 20, 60, false},
    {"a", 30, 5, false},  {"b", 15, 0, false}, {"b", 40, 0, false},
    {"b", 25, 70, false}, {"c", 40, 0, false}, {"c", 45, 0, false},
};

/* Restores one entry of a snapshot into c as the loader does: its text
 * "saved ..." (text), response "r", a hit count of 1 when it was hit;
 * checks it was added. */
static void restore_saved(sc_cache *c, uint64_t id, const char *ns,
                          const char *text, uint64_t created, uint64_t hit,
                          bool quarantined)
{
    sc_cache_entry_info e = {
        .id = id,
        .ns = ns,
        .scope = "",
        .text = text,
        .text_len = strlen(text),
        .response = "r",
        .response_len = 1,
        .model = "",
        .feature = "",
        .user = "",
        .embed_model = "",
        .created_ms = created,
        .last_hit_ms = hit,
        .hit_count = hit != 0,
        .quarantined = quarantined,
    };
    bool added = false;
    CHECK_EQ_INT(sc_cache_restore_entry(c, &e, 1000, &added), SC_OK);
    CHECK(added);
}

/* sc_cache_restore_lru on c, its cursors' malloc failing when fail:
 * checks that exactly one malloc failed then (none when not fail). */
static void restore_lru(sc_cache *c, bool fail)
{
    int failed0 = atomic_load(&malloc_failed);
    malloc_armed = fail;
    sc_cache_restore_lru(c);
    malloc_armed = 0;
    CHECK_EQ_INT(atomic_load(&malloc_failed) - failed0, fail ? 1 : 0);
}

/* Inserts "new i" (response "r") into ns of c: a change that makes the
 * overall cap evict the least recent entry. */
static void insert_new(sc_cache *c, const char *ns, int i)
{
    char text[32];
    snprintf(text, sizeof(text), "new %d", i);
    sc_cache_item it;
    memset(&it, 0, sizeof(it));
    it.text = text;
    it.text_len = strlen(text);
    it.response = "r";
    it.response_len = 1;
    CHECK_EQ_INT(sc_cache_insert(c, ns, &it, NULL), SC_OK);
}

/* sc_cache_restore_lru, with its cursors (fail false) or without memory
 * for them (true): the overall cap evicts the quarantined entry, then the
 * live ones by a merge of the namespaces' orders by last use. A sort by
 * last use would take "a"'s third (30) before the others' 40s, and the
 * restore order (namespace by namespace) all of "a" first. got[i]: the
 * index into lru_saved of the i-th evicted (-1: none, or more than one). */
static void test_lru_merge(bool fail, int got[9])
{
    sc_cache_config cfg;
    sc_cache_config_init(&cfg);
    cfg.max_entries = 9;
    cfg.clock = fake_clock;
    atomic_store(&fake_now, 1000);
    sc_cache *c = NULL;
    CHECK_EQ_INT(sc_cache_open(&cfg, &c), SC_OK);
    const char *names[3] = {"a", "b", "c"};
    for (int k = 0; k < 3; k++) {
        CHECK_EQ_INT(sc_cache_ns_create(c, names[k], NULL), SC_OK);
    }
    char text[32];
    for (int i = 0; i < 9; i++) {
        snprintf(text, sizeof(text), "saved %d", i);
        restore_saved(c, (uint64_t)i + 1, lru_saved[i].ns, text,
                      lru_saved[i].created, lru_saved[i].hit,
                      lru_saved[i].quarantined);
    }
    restore_lru(c, fail);
    bool was[9] = {false};
    char ns[SC_CACHE_NS_NAME_MAX + 1];
    for (int j = 0; j < 9; j++) {
        insert_new(c, "c", j);
        got[j] = -1;
        for (int i = 0; i < 9; i++) {
            bool gone =
                sc_cache_entry_ns(c, (uint64_t)i + 1, ns) == SC_ENOTFOUND;
            if (gone && !was[i]) {
                got[j] = got[j] == -1 ? i : -2;
            }
            was[i] = gone;
        }
    }
    sc_cache_close(c);
}

/* test_lru_merge with and without its cursors: the order as the merge
 * makes it, and the same both ways; the tie of 40 goes to the lower id,
 * "b"'s (inserted first), whatever the namespace table's order. */
static void test_lru_merge_both(void)
{
    /* Indexes into lru_saved, the first evicted first. */
    static const int b_first[9] = {0, 1, 4, 5, 7, 8, 2, 3, 6};
    int heap[9], pairs[9];
    test_lru_merge(false, heap);
    test_lru_merge(true, pairs);
    bool heap_ok = memcmp(heap, b_first, sizeof(heap)) == 0;
    bool same = memcmp(heap, pairs, sizeof(heap)) == 0;
    CHECK(heap_ok);
    CHECK(same);
    if (!heap_ok || !same) {
        fprintf(stderr, "evicted (indexes into lru_saved), heap:");
        for (int i = 0; i < 9; i++) {
            fprintf(stderr, " %d", heap[i]);
        }
        fprintf(stderr, "; pairs:");
        for (int i = 0; i < 9; i++) {
            fprintf(stderr, " %d", pairs[i]);
        }
        fprintf(stderr, "\n");
    }
}

/* ---- the merge, heap against pairs, on random restores ----------------*/

/* The ids a cache evicted, in order (its journal's removals). */
static uint64_t evicted[1024];
static size_t nevicted;

static sc_err rec_append(void *arg, const sc_cache_change *ch, uint64_t *seq)
{
    (void)arg;
    *seq = 0;
    if (ch->kind == SC_CHANGE_REMOVE && nevicted < 1024) {
        evicted[nevicted++] = ch->id;
    }
    return SC_OK;
}

static sc_err rec_commit(void *arg, uint64_t seq)
{
    (void)arg;
    (void)seq;
    return SC_OK;
}

static uint64_t rnd_state;

static uint64_t rnd(void)
{
    uint64_t z = (rnd_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#define RAND_NS_MAX 40
#define RAND_PER_NS 12

typedef struct rand_entry {
    uint64_t created, hit;
    bool quarantined;
} rand_entry;

typedef struct rand_state {
    int k;                                  /* namespaces "n0".. */
    int count[RAND_NS_MAX];                 /* entries of each, 0 or more */
    rand_entry e[RAND_NS_MAX][RAND_PER_NS]; /* least recent first */
    uint64_t first_id[RAND_NS_MAX];         /* e[i][j]'s id: + j */
    int total;
} rand_state;

/* A cache of st's namespaces (and "zz", empty), overall cap max_entries,
 * its removals recorded, with per_ns(i, j) restored for each of st's
 * entries; sc_cache_restore_lru run (its cursors' malloc failed when
 * fail); then as many inserts into "zz" as there are entries, each
 * evicting the least recent: evicted[] holds the order. */
static void rand_evict(const rand_state *st, bool fail, bool probe)
{
    sc_cache_journal j = {
        .append = rec_append, .commit = rec_commit, .arg = NULL};
    sc_cache_config cfg;
    sc_cache_config_init(&cfg);
    cfg.journal = &j;
    cfg.clock = fake_clock;
    cfg.max_namespaces = RAND_NS_MAX + 1;
    int total = probe ? st->k : st->total;
    cfg.max_entries = (uint64_t)total;
    atomic_store(&fake_now, 1000);
    sc_cache *c = NULL;
    CHECK_EQ_INT(sc_cache_open(&cfg, &c), SC_OK);
    char name[16], text[48];
    for (int i = 0; i < st->k; i++) {
        snprintf(name, sizeof(name), "n%d", i);
        CHECK_EQ_INT(sc_cache_ns_create(c, name, NULL), SC_OK);
    }
    CHECK_EQ_INT(sc_cache_ns_create(c, "zz", NULL), SC_OK);
    for (int i = 0; i < st->k; i++) {
        int n = probe ? 1 : st->count[i];
        for (int j = 0; j < n; j++) {
            snprintf(name, sizeof(name), "n%d", i);
            snprintf(text, sizeof(text), "saved %d %d", i, j);
            /* (a probe: one quarantined entry a namespace, never hit) */
            restore_saved(
                c, probe ? (uint64_t)i + 1 : st->first_id[i] + (uint64_t)j,
                name, text, probe ? 1 : st->e[i][j].created,
                probe ? 0 : st->e[i][j].hit, probe || st->e[i][j].quarantined);
        }
    }
    restore_lru(c, fail);
    nevicted = 0;
    for (int i = 0; i < total; i++) {
        insert_new(c, "zz", i);
    }
    CHECK_EQ_INT(nevicted, (size_t)total);
    sc_cache_close(c);
}

static uint64_t rand_last_use(const rand_entry *e)
{
    return e->hit > e->created ? e->hit : e->created;
}

/* Seeded restores of up to 40 namespaces (some empty, some of quarantined
 * entries only), times from a few values (ties within and across
 * namespaces, hits older than their inserts), a quarantined entry in
 * eight: the order sc_cache_restore_lru makes with its heap and without
 * memory for it (the merge two by two) is the same, and is the reference:
 * the quarantined ones first, taking each time the head of the
 * namespaces' remaining orders (the least recent end first) used last, of
 * equal last use the higher id (the running cache puts the last reported
 * furthest back, and a report follows a hit); then the live ones, taking
 * each time the head least recently used, of equal last use the lower id
 * (inserted first). The namespace table's order (the walk's, learnt from
 * one quarantined entry each) went into both ties before: checked to
 * differ from the ids' in some seeds, so that the reference tells. */
static void test_lru_merge_random(int seeds)
{
    static rand_state st;
    static uint64_t heap[1024], want[1024];
    int walk_differs = 0;
    for (int seed = 1; seed <= seeds; seed++) {
        rnd_state = (uint64_t)seed * 1000003u;
        memset(&st, 0, sizeof(st));
        st.k = 1 + (int)(rnd() % RAND_NS_MAX);
        uint64_t id = 1;
        for (int i = 0; i < st.k; i++) {
            st.first_id[i] = id;
            st.count[i] = rnd() % 4 == 0 ? 0 : (int)(rnd() % (RAND_PER_NS + 1));
            bool all_q = rnd() % 10 == 0;
            for (int j = 0; j < st.count[i]; j++) {
                rand_entry *e = &st.e[i][j];
                e->created = 1 + rnd() % 6;
                e->hit = rnd() % 2 == 0 ? 0 : 1 + rnd() % 8;
                e->quarantined = all_q || rnd() % 8 == 0;
            }
            id += (uint64_t)st.count[i];
            st.total += st.count[i];
        }
        if (st.total == 0) {
            st.count[0] = 1;
            st.e[0][0] = (rand_entry){3, 0, false};
            for (int i = 1; i < st.k; i++) {
                st.first_id[i]++;
            }
            st.total = 1;
        }
        /* The walk order: with one quarantined entry each, the namespaces'
         * order of eviction. */
        rand_evict(&st, false, true);
        int rank[RAND_NS_MAX];
        for (int i = 0; i < st.k; i++) {
            rank[i] = -1;
        }
        for (size_t x = 0; x < nevicted && x < (size_t)st.k; x++) {
            if (evicted[x] >= 1 && evicted[x] <= (uint64_t)st.k) {
                rank[evicted[x] - 1] = (int)x;
            }
        }
        int walk[RAND_NS_MAX];
        for (int i = 0; i < st.k; i++) {
            CHECK(rank[i] >= 0);
            walk[rank[i] >= 0 ? rank[i] : 0] = i;
        }
        for (int w = 0; w < st.k; w++) {
            walk_differs += walk[w] != w;
        }
        /* The reference: the quarantined (q 1), then the live (q 0). */
        size_t n = 0;
        for (int q = 1; q >= 0; q--) {
            int head[RAND_NS_MAX] = {0};
            for (;;) {
                int best = -1;
                uint64_t best_key = 0, best_id = 0;
                for (int i = 0; i < st.k; i++) {
                    while (head[i] < st.count[i] &&
                           st.e[i][head[i]].quarantined != (q == 1)) {
                        head[i]++;
                    }
                    if (head[i] == st.count[i]) {
                        continue;
                    }
                    uint64_t key = rand_last_use(&st.e[i][head[i]]);
                    uint64_t id = st.first_id[i] + (uint64_t)head[i];
                    bool before =
                        key != best_key ? key < best_key : id < best_id;
                    if (best < 0 || before != (q == 1)) {
                        best = i;
                        best_key = key;
                        best_id = id;
                    }
                }
                if (best < 0) {
                    break;
                }
                want[n++] = best_id;
                head[best]++;
            }
        }
        CHECK_EQ_INT(n, (size_t)st.total);
        rand_evict(&st, false, false);
        memcpy(heap, evicted, sizeof(heap));
        size_t nheap = nevicted;
        rand_evict(&st, true, false);
        bool same_heap =
            nheap == n && memcmp(heap, want, n * sizeof(*want)) == 0;
        bool same_pairs =
            nevicted == n && memcmp(evicted, want, n * sizeof(*want)) == 0;
        CHECK(same_heap);
        CHECK(same_pairs);
        if (!same_heap || !same_pairs) {
            fprintf(stderr,
                    "seed %d (%d namespaces, %d entries): the %s order is "
                    "not the reference\n",
                    seed, st.k, st.total,
                    !same_heap ? (!same_pairs ? "heap's and pairs'" : "heap's")
                               : "pairs'");
            return;
        }
    }
    CHECK(walk_differs > 0);
}

/* Refuses every insert (as a journal that can no longer write), arming
 * the failure for the rest of that insert. */
static sc_err j_append(void *arg, const sc_cache_change *ch, uint64_t *seq)
{
    (void)arg;
    *seq = 0;
    if (refuse && ch->kind == SC_CHANGE_INSERT) {
        armed = 1;
        return SC_EIO;
    }
    return SC_OK;
}

/* The training hook: holds the training at its start until posted. */
static sem_t go;

static void hold_training(void *arg)
{
    (void)arg;
    while (sem_wait(&go) != 0) {
    }
}

/* sc_cache_scope_indexes' callback: *arg becomes the (last) trained
 * index's live count, checked against FAISS's rows. */
static sc_err count_of(void *arg, const char *scope, sc_index *ix)
{
    (void)scope;
    sc_index_train_stats ts;
    CHECK_EQ_INT(sc_index_get_train_stats(ix, &ts), SC_OK);
    *(size_t *)arg = sc_index_count(ix);
    CHECK_EQ_INT(ts.faiss_rows, sc_index_count(ix));
    return SC_OK;
}

/* A vector of test_remove_unqueued's namespace: i's own direction. */
static void tvec(int i, float *v)
{
    for (int j = 0; j < 32; j++) {
        v[j] = (float)((i * 31 + j * 17) % 29) - 14.0f;
    }
    v[i % 32] += 40.0f;
}

/* A delete from an IVF scope while its training runs (held at its start
 * by the hook) queues its vector's removal for after the namespace's
 * mutex (remove_later); with no memory for the queue, the vector leaves
 * the index at once instead. The delete succeeds, the index (and once
 * trained, FAISS) holds the other vectors alone, the deleted one is not
 * served, the others are, and the
 * scope's pins are left as they were: every entry deleted, the scope goes
 * (0 scopes, 0 bytes). */
static void test_remove_unqueued(sc_cache *c)
{
    enum { TM = 700 };
    if (!sc_index_backend_available("ivf-flat")) {
        printf("built without FAISS: the IVF case skipped\n");
        return;
    }
    refuse = 0;
    sc_ns_config nc;
    sc_cache_ns_config_init(&nc);
    snprintf(nc.backend, sizeof(nc.backend), "ivf-flat");
    nc.nlist = 16;
    nc.nprobe = 16;
    nc.train_min = TM;
    nc.threshold = 0.99f;
    nc.auto_threshold = false;
    CHECK_EQ_INT(sc_cache_ns_create(c, "i", &nc), SC_OK);
    CHECK_EQ_INT(sem_init(&go, 0, 0), 0);
    sc_index_set_training_hook(hold_training, NULL);
    static uint64_t ids[TM];
    float v[32];
    sc_cache_item it;
    memset(&it, 0, sizeof(it));
    it.dim = 32;
    it.vec = v;
    it.response = "r";
    it.response_len = 1;
    for (int i = 0; i < TM; i++) {
        tvec(i, v);
        CHECK_EQ_INT(sc_cache_insert(c, "i", &it, &ids[i]), SC_OK);
    }
    /* The TM-th insert started the training, held at its start. */
    armed_rm = 1;
    CHECK_EQ_INT(sc_cache_delete(c, ids[0]), SC_OK);
    armed_rm = 0;
    CHECK_EQ_INT(atomic_load(&injected_rm), 1);
    CHECK_EQ_INT(sem_post(&go), 0);
    for (int w = 0; w < 2000 && sc_cache_trained_scopes(c, "i") == 0; w++) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    sc_index_set_training_hook(NULL, NULL);
    CHECK_EQ_INT(sc_cache_trained_scopes(c, "i"), 1);
    /* The index holds the other TM - 1, FAISS too (its copy never saw
     * the deleted row). */
    size_t n = 0;
    CHECK_EQ_INT(sc_cache_scope_indexes(c, "i", 0, count_of, &n), SC_OK);
    CHECK_EQ_INT(n, TM - 1);
    for (int i = 0; i < 2; i++) {
        sc_cache_query q;
        memset(&q, 0, sizeof(q));
        tvec(i, v);
        q.vec = v;
        q.dim = 32;
        sc_cache_result r;
        CHECK_EQ_INT(sc_cache_lookup(c, "i", &q, &r), SC_OK);
        CHECK(r.hit == (i == 1));
        CHECK(!r.hit || r.id == ids[1]);
        sc_cache_result_fini(&r);
    }
    for (int i = 1; i < TM; i++) {
        CHECK_EQ_INT(sc_cache_delete(c, ids[i]), SC_OK);
    }
    sc_cache_stats st;
    CHECK_EQ_INT(sc_cache_stats_get(c, "i", &st), SC_OK);
    CHECK_EQ_INT(st.entries, 0);
    CHECK_EQ_INT(st.scopes, 0);
    CHECK_EQ_INT(st.bytes, 0);
    sem_destroy(&go);
}

int main(void)
{
    sc_cache_journal j = {
        .append = j_append, .commit = rec_commit, .arg = NULL};
    sc_cache_config cfg;
    sc_cache_config_init(&cfg);
    cfg.journal = &j;
    sc_cache *c = NULL;
    CHECK_EQ_INT(sc_cache_open(&cfg, &c), SC_OK);
    CHECK_EQ_INT(sc_cache_ns_create(c, "n", NULL), SC_OK);
    float v[8] = {1, 0, 0, 0, 0, 0, 0, 0};
    sc_cache_item it;
    memset(&it, 0, sizeof(it));
    it.vec = v;
    it.dim = 8;
    it.scope = "z"; /* a new scope: the insert makes its index */
    it.response = "r";
    it.response_len = 1;
    CHECK_EQ_INT(sc_cache_insert(c, "n", &it, NULL), SC_EIO);
    armed = 0;
    /* The failure was met: a change of close_later's list fails here. */
    CHECK_EQ_INT(atomic_load(&injected), 1);
    sc_cache_stats st;
    CHECK_EQ_INT(sc_cache_stats_get(c, "n", &st), SC_OK);
    CHECK_EQ_INT(st.entries, 0);
    CHECK_EQ_INT(st.scopes, 0);
    test_remove_unqueued(c);
    sc_cache_close(c);
    test_lru_merge_both();
    test_lru_merge_random(200);
    return test_summary("test_cache_oom");
}
