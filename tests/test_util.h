/* test_util.h - the few helpers every test program shares: CHECK counts a
 * pass or a failure (and says where), test_summary prints the closing
 * "N passed, N failed" line and gives main its exit code. CHECK may run on
 * several threads at once: the counts are atomic. */
#ifndef SC_TEST_UTIL_H
#define SC_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>

static int test_passed; /* atomically: CHECK_COUNT */
static int test_failed; /* atomically: CHECK_COUNT */

/* One more pass or failure, from any thread: a plain ++ from two threads
 * can lose one, and a failure lost is a test that passes when it failed. */
#define CHECK_COUNT(n) __atomic_add_fetch(&(n), 1, __ATOMIC_RELAXED)

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (cond) {                                                            \
            CHECK_COUNT(test_passed);                                          \
        } else {                                                               \
            CHECK_COUNT(test_failed);                                          \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
        }                                                                      \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                     \
    do {                                                                       \
        long long va_ = (long long)(a), vb_ = (long long)(b);                  \
        if (va_ == vb_) {                                                      \
            CHECK_COUNT(test_passed);                                          \
        } else {                                                               \
            CHECK_COUNT(test_failed);                                          \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n",  \
                    __FILE__, __LINE__, #a, #b, va_, vb_);                     \
        }                                                                      \
    } while (0)

static inline int test_summary(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, test_passed, test_failed);
    return test_failed == 0 ? 0 : 1;
}

/* splitmix64: a small, seedable generator so every run sees the same data. */
static inline uint64_t test_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static inline float test_randf(uint64_t *s)
{
    return (float)((double)(test_rand(s) >> 11) / 4503599627370496.0 - 1.0);
}

#endif
