/* test_cache_oom.c - the cache where one allocation fails: an insert
 * refused (by its journal) after making its scope's index, with no memory
 * to keep that index for a close after the locks (close_later closes it at
 * once): nothing uses the index after that close. realloc is wrapped
 * (--wrap=realloc); a use after free shows under AddressSanitizer. And the
 * restore's LRU merge across namespaces, with and without memory for its
 * cursors (--wrap=malloc), to the same order. */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache.h"
#include "test_util.h"

/* close_later's first list: 8 of { sc_index *, ix_tally *, uint64_t }
 * (cache/cache.c late_ix). Failed once, on the thread that armed it. */
#define LATE_LIST_BYTES (8 * (2 * sizeof(void *) + sizeof(uint64_t)))

static _Thread_local int armed;
static atomic_int injected;

void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n)
{
    if (armed && p == NULL && n == LATE_LIST_BYTES) {
        armed = 0;
        atomic_fetch_add(&injected, 1);
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
 * before the second's hit (its last use older, its place more recent). */
static const struct {
    const char *ns;
    uint64_t created, hit;
    bool quarantined;
} lru_saved[9] = {
    {"a", 5, 95, true},   {"a", 10, 0, false}, {"a", 20, 60, false},
    {"a", 30, 5, false},  {"b", 15, 0, false}, {"b", 40, 0, false},
    {"b", 25, 70, false}, {"c", 35, 0, false}, {"c", 45, 0, false},
};

/* sc_cache_restore_lru, with its cursors (fail false) or without memory
 * for them (true): the overall cap evicts the quarantined entry, then the
 * live ones by a merge of the namespaces' orders by last use. A sort by
 * last use would take "a"'s third (30) before the others' 35 and 40, and
 * the restore order (namespace by namespace) all of "a" first. */
static void test_lru_merge(bool fail)
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
        sc_cache_entry_info e = {
            .id = (uint64_t)i + 1,
            .ns = lru_saved[i].ns,
            .scope = "",
            .text = text,
            .text_len = strlen(text),
            .response = "r",
            .response_len = 1,
            .model = "",
            .feature = "",
            .user = "",
            .embed_model = "",
            .created_ms = lru_saved[i].created,
            .last_hit_ms = lru_saved[i].hit,
            .hit_count = lru_saved[i].hit != 0,
            .quarantined = lru_saved[i].quarantined,
        };
        bool added = false;
        CHECK_EQ_INT(sc_cache_restore_entry(c, &e, 1000, &added), SC_OK);
        CHECK(added);
    }
    int failed0 = atomic_load(&malloc_failed);
    malloc_armed = fail;
    sc_cache_restore_lru(c);
    malloc_armed = 0;
    CHECK_EQ_INT(atomic_load(&malloc_failed) - failed0, fail ? 1 : 0);
    /* Indexes into lru_saved, the first evicted first. */
    const int order[9] = {0, 1, 4, 7, 5, 8, 2, 3, 6};
    char gone[10], want[10], ns[SC_CACHE_NS_NAME_MAX + 1];
    for (int j = 0; j <= 9; j++) {
        for (int i = 0; i < 9; i++) {
            gone[i] = sc_cache_entry_ns(c, (uint64_t)i + 1, ns) == SC_ENOTFOUND
                          ? 'x'
                          : '.';
            want[i] = '.';
        }
        for (int i = 0; i < j; i++) {
            want[order[i]] = 'x';
        }
        gone[9] = want[9] = '\0';
        CHECK(strcmp(gone, want) == 0);
        if (strcmp(gone, want) != 0) {
            fprintf(stderr, "%s: after %d inserts gone %s, want %s\n",
                    fail ? "pairs" : "heap", j, gone, want);
            break;
        }
        sc_cache_item it;
        memset(&it, 0, sizeof(it));
        snprintf(text, sizeof(text), "new %d", j);
        it.text = text;
        it.text_len = strlen(text);
        it.response = "r";
        it.response_len = 1;
        CHECK_EQ_INT(sc_cache_insert(c, "c", &it, NULL), SC_OK);
    }
    sc_cache_close(c);
}

/* Refuses every insert (as a journal that can no longer write), arming
 * the failure for the rest of that insert. */
static sc_err j_append(void *arg, const sc_cache_change *ch, uint64_t *seq)
{
    (void)arg;
    *seq = 0;
    if (ch->kind == SC_CHANGE_INSERT) {
        armed = 1;
        return SC_EIO;
    }
    return SC_OK;
}

static sc_err j_commit(void *arg, uint64_t seq)
{
    (void)arg;
    (void)seq;
    return SC_OK;
}

int main(void)
{
    sc_cache_journal j = {j_append, j_commit, NULL};
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
    sc_cache_close(c);
    test_lru_merge(false);
    test_lru_merge(true);
    return test_summary("test_cache_oom");
}
