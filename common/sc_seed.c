/* sc_seed.c - see sc_seed.h. */
#define _GNU_SOURCE
#include "common/sc_seed.h"

#include <sys/random.h>
#include <sys/types.h>
#include <time.h>

uint64_t sc_seed_secret(const void *salt)
{
    uint64_t seed;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) ==
        (ssize_t)sizeof(seed)) {
        return seed;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^
           (uint64_t)(uintptr_t)salt;
}
