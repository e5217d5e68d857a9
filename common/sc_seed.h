/* sc_seed.h - a process-local secret for seeding hash tables whose keys a
 * client picks (texts, tags), so that keys cannot be chosen offline to
 * share one chain or run. */
#ifndef SC_SEED_H
#define SC_SEED_H

#include <stdint.h>

/* 64 random bits from getrandom; where that fails (no entropy yet, an old
 * kernel), the monotonic clock mixed with salt's address, unknown outside
 * the process all the same. */
uint64_t sc_seed_secret(const void *salt);

#endif
