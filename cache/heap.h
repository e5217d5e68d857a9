/* heap.h - an intrusive binary min-heap of 64-bit keys: the cache's expiry
 * queue. Each node knows its slot, so a node can be removed or re-keyed in
 * O(log n) (sliding TTL) without searching. Not thread-safe. */
#ifndef SC_HEAP_H
#define SC_HEAP_H

#include <stddef.h>
#include <stdint.h>

#include "common/sc_error.h"

#define SC_HEAP_NONE SIZE_MAX /* sc_heap_node.slot when not in a heap */

typedef struct sc_heap_node {
    uint64_t key;
    size_t slot;
} sc_heap_node;

typedef struct sc_heap {
    sc_heap_node **a; /* owned array of borrowed nodes */
    size_t n, cap;
} sc_heap;

void sc_heap_init(sc_heap *h);
void sc_heap_fini(sc_heap *h); /* frees the array, not the nodes */

/* Makes room for one more node, so that a later push cannot fail.
 * Errors: SC_ENOMEM. */
sc_err sc_heap_reserve(sc_heap *h);

/* Adds node (key set) after a successful sc_heap_reserve. */
void sc_heap_push(sc_heap *h, sc_heap_node *node);

/* The node with the smallest key, or NULL. */
sc_heap_node *sc_heap_top(const sc_heap *h);

/* Removes node, which must be in h; its slot becomes SC_HEAP_NONE. */
void sc_heap_remove(sc_heap *h, sc_heap_node *node);

/* Restores order after node->key changed. */
void sc_heap_fix(sc_heap *h, sc_heap_node *node);

#endif
