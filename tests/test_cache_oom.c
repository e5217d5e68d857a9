/* test_cache_oom.c - the cache where one allocation fails: an insert
 * refused (by its journal) after making its scope's index, with no memory
 * to keep that index for a close after the locks (close_later closes it at
 * once): nothing uses the index after that close. realloc is wrapped
 * (--wrap=realloc); a use after free shows under AddressSanitizer. */
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
    return test_summary("test_cache_oom");
}
