/* idmap.h - an open-addressing hash table from 64-bit ids to slot numbers.
 *
 * Linear probing with backward-shift deletion (no tombstones), so lookups
 * stay short however many ids come and go. Used by the flat index to find a
 * vector's slot from its stable id. Not thread-safe: the index's lock guards
 * it. */
#ifndef SC_IDMAP_H
#define SC_IDMAP_H

#include <stddef.h>
#include <stdint.h>

#include "common/sc_error.h"

typedef struct sc_idmap {
    uint64_t *keys;
    uint32_t *vals;
    uint8_t *used;
    size_t cap; /* power of two, or 0 */
    size_t count;
} sc_idmap;

/* Bytes one slot takes (key, value, used flag). The load is kept at or below
 * 1/2, so a full table holds SC_IDMAP_SLOTS_PER_ID slots for each id (up to
 * twice that just after it doubled). */
#define SC_IDMAP_SLOT_BYTES   (sizeof(uint64_t) + sizeof(uint32_t) + 1)
#define SC_IDMAP_SLOTS_PER_ID 2

void sc_idmap_init(sc_idmap *m);
void sc_idmap_fini(sc_idmap *m);

/* Inserts or overwrites id -> slot. Overwriting never fails; inserting
 * may: SC_ENOMEM (map unchanged). */
sc_err sc_idmap_put(sc_idmap *m, uint64_t id, uint32_t slot);

/* Returns 1 and sets *slot when id is present, else 0. */
int sc_idmap_get(const sc_idmap *m, uint64_t id, uint32_t *slot);

/* Removes id; returns 1 when it was present. The table never shrinks by
 * itself: see sc_idmap_shrink. */
int sc_idmap_del(sc_idmap *m, uint64_t id);

/* Gives memory back once ids have gone: when the load has fallen to 1/8 or
 * less, moves the ids into the smallest table (a power of two, 4 slots at
 * least) that holds them at a load of 1/4 or less, so that the count must
 * double before a put grows it again. Ids keep their slot numbers (the
 * values); the table's own positions change. Out of memory leaves the map
 * as it was, larger than needed but correct. */
void sc_idmap_shrink(sc_idmap *m);

/* Bytes the table takes from malloc, chunk overheads included. */
size_t sc_idmap_footprint(const sc_idmap *m);

#endif
