/* htab.h - an intrusive chained hash table for the cache's own maps (ids,
 * exact keys, scopes, namespaces). The caller embeds an sc_hnode in its
 * object, hashes the key itself and compares keys while walking a chain.
 * Not thread-safe: the owner's lock guards it. */
#ifndef SC_HTAB_H
#define SC_HTAB_H

#include <stddef.h>
#include <stdint.h>

#include "common/sc_error.h"

typedef struct sc_hnode {
    struct sc_hnode *next;
    uint64_t hash;
} sc_hnode;

typedef struct sc_htab {
    sc_hnode **buckets; /* owned */
    size_t mask;        /* buckets - 1; a power of two less one */
    size_t count;
} sc_htab;

/* Allocates a small table. Errors: SC_ENOMEM (t left zeroed). */
sc_err sc_htab_init(sc_htab *t);

/* Frees the buckets, never the nodes (they belong to the caller). */
void sc_htab_fini(sc_htab *t);

/* Links n (n->hash set by the caller). Never fails: when the table cannot
 * grow it keeps its size and chains get longer. */
void sc_htab_insert(sc_htab *t, sc_hnode *n);

/* Unlinks n, which must be in t. */
void sc_htab_remove(sc_htab *t, sc_hnode *n);

/* The first node of hash's chain, or NULL; walk on with sc_htab_next. */
sc_hnode *sc_htab_first(const sc_htab *t, uint64_t hash);
sc_hnode *sc_htab_next(sc_hnode *n, uint64_t hash);

/* A 64-bit mix (splitmix64's finaliser) for integer keys. */
static inline uint64_t sc_htab_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* The most nodes one chain holds (a lookup walks at most one chain). */
size_t sc_htab_longest_chain(const sc_htab *t);

/* Calls fn(node, arg) on every node; fn may unlink the node it is given. */
void sc_htab_each(sc_htab *t, void (*fn)(sc_hnode *n, void *arg), void *arg);

#endif
