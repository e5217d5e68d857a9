/* htab.c - the intrusive chained hash table of htab.h. Grows by doubling at
 * load 1; a failed growth is harmless (chains just get longer). */
#include "cache/htab.h"

#include <stdlib.h>

#define HTAB_INITIAL 16u

sc_err sc_htab_init(sc_htab *t)
{
    t->buckets = calloc(HTAB_INITIAL, sizeof(*t->buckets));
    t->count = 0;
    if (t->buckets == NULL) {
        t->mask = 0;
        return SC_ENOMEM;
    }
    t->mask = HTAB_INITIAL - 1;
    return SC_OK;
}

void sc_htab_fini(sc_htab *t)
{
    free(t->buckets);
    t->buckets = NULL;
    t->mask = 0;
    t->count = 0;
}

static void grow(sc_htab *t)
{
    size_t nb = (t->mask + 1) * 2;
    if (nb > SIZE_MAX / sizeof(sc_hnode *)) {
        return;
    }
    sc_hnode **b = calloc(nb, sizeof(*b));
    if (b == NULL) {
        return;
    }
    for (size_t i = 0; i <= t->mask; i++) {
        sc_hnode *n = t->buckets[i];
        while (n != NULL) {
            sc_hnode *next = n->next;
            size_t j = (size_t)n->hash & (nb - 1);
            n->next = b[j];
            b[j] = n;
            n = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->mask = nb - 1;
}

void sc_htab_insert(sc_htab *t, sc_hnode *n)
{
    if (t->count >= t->mask + 1) {
        grow(t);
    }
    size_t i = (size_t)n->hash & t->mask;
    n->next = t->buckets[i];
    t->buckets[i] = n;
    t->count++;
}

void sc_htab_remove(sc_htab *t, sc_hnode *n)
{
    sc_hnode **pp = &t->buckets[(size_t)n->hash & t->mask];
    while (*pp != NULL) {
        if (*pp == n) {
            *pp = n->next;
            n->next = NULL;
            t->count--;
            return;
        }
        pp = &(*pp)->next;
    }
}

sc_hnode *sc_htab_first(const sc_htab *t, uint64_t hash)
{
    sc_hnode *n = t->buckets[(size_t)hash & t->mask];
    while (n != NULL && n->hash != hash) {
        n = n->next;
    }
    return n;
}

sc_hnode *sc_htab_next(sc_hnode *n, uint64_t hash)
{
    n = n->next;
    while (n != NULL && n->hash != hash) {
        n = n->next;
    }
    return n;
}

size_t sc_htab_longest_chain(const sc_htab *t)
{
    size_t best = 0;
    for (size_t i = 0; i <= t->mask && t->buckets != NULL; i++) {
        size_t n = 0;
        for (const sc_hnode *x = t->buckets[i]; x != NULL; x = x->next) {
            n++;
        }
        best = n > best ? n : best;
    }
    return best;
}

void sc_htab_each(sc_htab *t, void (*fn)(sc_hnode *n, void *arg), void *arg)
{
    for (size_t i = 0; i <= t->mask && t->buckets != NULL; i++) {
        sc_hnode *n = t->buckets[i];
        while (n != NULL) {
            sc_hnode *next = n->next; /* fn may unlink n */
            fn(n, arg);
            n = next;
        }
    }
}
