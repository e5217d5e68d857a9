/* pass.c - a search's scan in holds of its index's lock (pass.h): the one
 * loop that flat's single and batch searches and an untrained IVF index's
 * exact scans pause in. */
#include "index/pass.h"

/* Multiply-adds of a search between two pauses, at least one block of
 * rows: half a millisecond of AVX-512 tiles, so that a writer waits about
 * that long for a batch, not the whole of it. */
#define YIELD_WORK ((size_t)1 << 24)
/* Bytes of rows a search reads between two pauses, at least one block: a
 * single query does one multiply-add per element read, so its scan is
 * bound by memory, and 2^24 of them (64 MiB of f32 rows) would hold the
 * lock for milliseconds. 4 MiB is about 0.4 ms at 10 GB/s. */
#define YIELD_BYTES ((size_t)4 << 20)
/* Times one search starts over (for a compaction, which moves rows, or a
 * removal of a row it had collected); past them it holds the lock to its
 * end, so that it always ends. */
#define YIELD_RESTARTS 2

size_t sc_pass_hold_rows(size_t nq, size_t dim, size_t row_bytes, size_t unit)
{
    size_t per = YIELD_WORK / (nq * dim);
    size_t by_bytes = YIELD_BYTES / row_bytes;
    per = per < by_bytes ? per : by_bytes;
    return per < unit ? unit : per / unit * unit;
}

void sc_pass_run(sc_pass *p, size_t per, const sc_index_yield *y)
{
    size_t end = p->begin(p);
    unsigned restarts = 0;
    for (size_t lo = 0; lo < end;) {
        size_t hi = end - lo < per ? end : lo + per;
        p->scan(p, lo, hi);
        lo = hi;
        if (lo == end || y == NULL || restarts == YIELD_RESTARTS) {
            continue;
        }
        y->fn(y->arg);
        if (!p->resumed(p)) {
            restarts++;
            end = p->begin(p);
            lo = 0;
        }
    }
}
