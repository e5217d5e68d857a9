/* cap.h - how far a backend's slot arrays shrink once compacted, one rule
 * for flat's and an IVF index's (index/flat.c, index/ivf.c). Not part of
 * index.h: backends only. */
#ifndef SC_CAP_H
#define SC_CAP_H

#include <stddef.h>

/* The slots an array of cap of them, used of them live and no tombstone
 * left, falls to: once used fills a quarter of cap or less, the smallest
 * power of two (min at least, min a power of two) that leaves room for
 * 2 used, so that the rows can double before the array grows again and
 * must halve before the next shrink, and a count that moves about one
 * boundary does not resize at each step. 0 when it stays as it is. */
static inline size_t sc_cap_shrunk(size_t cap, size_t used, size_t min)
{
    if (cap <= min || used * 4 > cap) {
        return 0;
    }
    size_t ncap = min;
    while (ncap < 2 * used) {
        ncap *= 2;
    }
    return ncap;
}

#endif
