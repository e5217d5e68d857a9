/* idmap.c - id -> slot hash table for the flat index (see idmap.h). */
#include "index/idmap.h"

#include <stdlib.h>

#include "index/index.h"

/* Slots of the first table, and the fewest: two ids. Small, as each small
 * scope of the cache has an index, and a table of its own. */
#define MIN_CAP 4

static uint64_t mix(uint64_t x)
{
    /* splitmix64's finaliser: ids are often sequential, so spread them. */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

void sc_idmap_init(sc_idmap *m)
{
    m->keys = NULL;
    m->vals = NULL;
    m->used = NULL;
    m->cap = 0;
    m->count = 0;
}

void sc_idmap_fini(sc_idmap *m)
{
    free(m->keys);
    free(m->vals);
    free(m->used);
    sc_idmap_init(m);
}

static size_t find(const sc_idmap *m, uint64_t id, int *found)
{
    size_t mask = m->cap - 1;
    size_t i = (size_t)mix(id) & mask;
    while (m->used[i]) {
        if (m->keys[i] == id) {
            *found = 1;
            return i;
        }
        i = (i + 1) & mask;
    }
    *found = 0;
    return i;
}

/* Moves every id into a new table of ncap slots (a power of two that keeps
 * the load at or below 1/2). SC_ENOMEM leaves m as it was. */
static sc_err rehash(sc_idmap *m, size_t ncap)
{
    sc_idmap n;
    n.keys = malloc(ncap * sizeof(*n.keys));
    n.vals = malloc(ncap * sizeof(*n.vals));
    n.used = calloc(ncap, 1);
    if (n.keys == NULL || n.vals == NULL || n.used == NULL) {
        free(n.keys);
        free(n.vals);
        free(n.used);
        return SC_ENOMEM;
    }
    n.cap = ncap;
    n.count = 0;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->used[i]) {
            int found;
            size_t j = find(&n, m->keys[i], &found);
            n.used[j] = 1;
            n.keys[j] = m->keys[i];
            n.vals[j] = m->vals[i];
            n.count++;
        }
    }
    sc_idmap_fini(m);
    *m = n;
    return SC_OK;
}

static sc_err grow(sc_idmap *m)
{
    return rehash(m, m->cap ? m->cap * 2 : MIN_CAP);
}

void sc_idmap_shrink(sc_idmap *m)
{
    /* A put doubles the table past a load of 1/2 (to about 1/4); only a
     * load of 1/8 shrinks it, back to at most 1/4. */
    if (m->cap <= MIN_CAP || m->count * 8 > m->cap) {
        return;
    }
    size_t ncap = MIN_CAP;
    while (ncap < m->count * 4) {
        ncap *= 2;
    }
    (void)rehash(m, ncap); /* out of memory: still right, only larger */
}

sc_err sc_idmap_put(sc_idmap *m, uint64_t id, uint32_t slot)
{
    /* An id already there is only updated: no growth, so this cannot
     * fail (a compaction moving rows relies on it). */
    if (m->cap > 0) {
        int found;
        size_t i = find(m, id, &found);
        if (found) {
            m->vals[i] = slot;
            return SC_OK;
        }
    }
    /* Keep the load under 1/2: linear probing degrades fast beyond that. */
    if ((m->count + 1) * SC_IDMAP_SLOTS_PER_ID > m->cap) {
        sc_err rc = grow(m);
        if (rc != SC_OK) {
            return rc;
        }
    }
    int found;
    size_t i = find(m, id, &found);
    if (!found) {
        m->used[i] = 1;
        m->keys[i] = id;
        m->count++;
    }
    m->vals[i] = slot;
    return SC_OK;
}

int sc_idmap_get(const sc_idmap *m, uint64_t id, uint32_t *slot)
{
    if (m->cap == 0) {
        return 0;
    }
    int found;
    size_t i = find(m, id, &found);
    if (found) {
        *slot = m->vals[i];
    }
    return found;
}

int sc_idmap_del(sc_idmap *m, uint64_t id)
{
    if (m->cap == 0) {
        return 0;
    }
    int found;
    size_t i = find(m, id, &found);
    if (!found) {
        return 0;
    }
    /* Backward shift: pull later members of the probe run into the hole so
     * that no lookup ever stops early at it. */
    size_t mask = m->cap - 1;
    size_t hole = i;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!m->used[j]) {
            break;
        }
        size_t home = (size_t)mix(m->keys[j]) & mask;
        /* Move j into the hole unless its home lies cyclically in (hole, j]. */
        int stays = (hole <= j) ? (home > hole && home <= j)
                                : (home > hole || home <= j);
        if (!stays) {
            m->keys[hole] = m->keys[j];
            m->vals[hole] = m->vals[j];
            hole = j;
        }
    }
    m->used[hole] = 0;
    m->count--;
    return 1;
}

size_t sc_idmap_footprint(const sc_idmap *m)
{
    if (m->cap == 0) {
        return 0;
    }
    return sc_index_heap_bytes(m->cap * sizeof(*m->keys)) +
           sc_index_heap_bytes(m->cap * sizeof(*m->vals)) +
           sc_index_heap_bytes(m->cap);
}
