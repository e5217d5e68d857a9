/* sc_vec.h - room in a growable array: the one copy of the "full? double
 * the capacity, check count * size, realloc, keep the old block on
 * failure" step that the cache's queues, the heap, the snapshot writer's
 * buffer and the servers' lists share. The caller keeps its own pointer,
 * count and capacity; this only makes the room. */
#ifndef SC_VEC_H
#define SC_VEC_H

#include <stddef.h>

#include "common/sc_error.h"

/* Makes room for `more` elements beyond the first n of *pa, an array of
 * *cap elements of es bytes each (pa is the address of the caller's
 * pointer, any object pointer type; *pa may be NULL with *cap 0). Needs
 * n <= *cap, es >= 1 and first >= 1.
 *
 * SC_OK: *cap - n >= more. Where that already held, nothing changed;
 * otherwise the capacity became the smallest of first, 2 first, 4 first,
 * ... (or of *cap, 2 *cap, ... where *cap is not 0) that holds n + more,
 * the array was moved by realloc (its first n elements kept, the rest
 * uninitialised) and *pa and *cap say the new block.
 * SC_ENOMEM: n + more, that doubling or the capacity times es would pass
 * SIZE_MAX, or realloc failed; *pa and *cap are as they were, the old
 * block still the caller's. */
sc_err sc_vec_reserve(void *pa, size_t *cap, size_t n, size_t more, size_t es,
                      size_t first);

/* sc_vec_reserve with es taken from the array: `a` is the caller's pointer
 * (an lvalue, such as s->items) and `cap` its capacity (a size_t lvalue). */
#define SC_VEC_RESERVE(a, cap, n, more, first)                                 \
    sc_vec_reserve(&(a), &(cap), (n), (more), sizeof(*(a)), (first))

#endif
