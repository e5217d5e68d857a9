/* pass.h - a search's scan in holds of its index's lock, for the backends
 * of index/ (flat's scans, and an IVF index's exact scan before its first
 * training). The scan reads its rows a hold at a time and lets the lock go
 * between holds (sc_index_yield), so that a writer waits for one hold, not
 * for the whole scan. Not part of index.h: backends only. */
#ifndef SC_PASS_H
#define SC_PASS_H

#include <stdbool.h>
#include <stddef.h>

#include "index/index.h"

/* One search's scan: its progress runs over rows 0..end (of each share,
 * when split across threads). The backend embeds it first in its own
 * struct and casts back in the callbacks. */
typedef struct sc_pass sc_pass;
struct sc_pass {
    /* Empties the collectors and returns where progress ends: at the
     * start, and at each start over (rows may have come and gone). */
    size_t (*begin)(sc_pass *p);
    /* Scans rows of progress [lo, hi) into the collectors. */
    void (*scan)(sc_pass *p, size_t lo, size_t hi);
    /* After a pause, with the lock held again: false when what the pass
     * has collected no longer holds (rows it holds moved, or one it
     * collected was removed) and it must start over; true when it may go
     * on, after it has taken up again any pointer into the backend's
     * arrays that a writer may have moved. */
    bool (*resumed)(sc_pass *p);
};

/* Rows of progress a hold reads for nq queries of dim dimensions over rows
 * of row_bytes each: at most 2^24 multiply-adds of the queries and 4 MiB
 * of rows, a multiple of unit (the scan's block of rows: holds start where
 * a scan without pauses starts its blocks, so the scores are the same),
 * and at least one unit. */
size_t sc_pass_hold_rows(size_t nq, size_t dim, size_t row_bytes, size_t unit);

/* Runs p in holds of per rows of progress, calling y (NULL: none) between
 * them. When p->resumed says so, the pass starts over, at most twice; past
 * that it holds the lock to its end, so that it always ends. A scan of one
 * hold or less never pauses. */
void sc_pass_run(sc_pass *p, size_t per, const sc_index_yield *y);

#endif
