/* heap.c - the intrusive min-heap of heap.h: an array of node pointers,
 * each node holding its own slot so removal and re-keying need no search. */
#include "cache/heap.h"

#include <stdlib.h>

#include "common/sc_vec.h"

void sc_heap_init(sc_heap *h)
{
    h->a = NULL;
    h->n = 0;
    h->cap = 0;
}

void sc_heap_fini(sc_heap *h)
{
    for (size_t i = 0; i < h->n; i++) {
        h->a[i]->slot = SC_HEAP_NONE;
    }
    free(h->a);
    sc_heap_init(h);
}

sc_err sc_heap_reserve(sc_heap *h)
{
    return SC_VEC_RESERVE(h->a, h->cap, h->n, 1, 16);
}

static void place(sc_heap *h, size_t i, sc_heap_node *node)
{
    h->a[i] = node;
    node->slot = i;
}

static void sift_up(sc_heap *h, size_t i)
{
    sc_heap_node *node = h->a[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->a[p]->key <= node->key) {
            break;
        }
        place(h, i, h->a[p]);
        i = p;
    }
    place(h, i, node);
}

static void sift_down(sc_heap *h, size_t i)
{
    sc_heap_node *node = h->a[i];
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= h->n) {
            break;
        }
        size_t m = l;
        if (l + 1 < h->n && h->a[l + 1]->key < h->a[l]->key) {
            m = l + 1;
        }
        if (node->key <= h->a[m]->key) {
            break;
        }
        place(h, i, h->a[m]);
        i = m;
    }
    place(h, i, node);
}

void sc_heap_push(sc_heap *h, sc_heap_node *node)
{
    /* The caller reserved; a push without room is a bug, not an OOM. */
    if (h->n >= h->cap) {
        abort();
    }
    h->a[h->n] = node;
    node->slot = h->n;
    h->n++;
    sift_up(h, node->slot);
}

sc_heap_node *sc_heap_top(const sc_heap *h)
{
    return h->n > 0 ? h->a[0] : NULL;
}

void sc_heap_remove(sc_heap *h, sc_heap_node *node)
{
    size_t i = node->slot;
    node->slot = SC_HEAP_NONE;
    h->n--;
    if (i == h->n) {
        return;
    }
    place(h, i, h->a[h->n]);
    sc_heap_fix(h, h->a[i]);
}

void sc_heap_fix(sc_heap *h, sc_heap_node *node)
{
    size_t i = node->slot;
    if (i > 0 && h->a[(i - 1) / 2]->key > node->key) {
        sift_up(h, i);
    } else {
        sift_down(h, i);
    }
}
