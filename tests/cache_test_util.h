/* cache_test_util.h - helpers of the tests that drive a cache: the ones
 * test_cache.c and test_http.c share. */
#ifndef SC_CACHE_TEST_UTIL_H
#define SC_CACHE_TEST_UTIL_H

#include <stdint.h>

#include "cache/cache.h"
#include "test_util.h"

/* What thin_entries deletes: ids[from] up to ids[to - 1] of c. ids is
 * borrowed: it must stay valid while the hook is set. */
typedef struct thin_arg {
    sc_cache *c;
    const uint64_t *ids;
    int from, to;
} thin_arg;

/* A training hook (sc_index_set_training_hook(thin_entries, &arg)) that
 * deletes the entries of a thin_arg before a training copies its rows,
 * each delete checked (SC_OK), so that the training finds them gone. */
static inline void thin_entries(void *arg)
{
    thin_arg *t = arg;
    for (int i = t->from; i < t->to; i++) {
        CHECK_EQ_INT(sc_cache_delete(t->c, t->ids[i]), SC_OK);
    }
}

#endif
