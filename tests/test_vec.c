/* test_vec.c - sc_vec_reserve (common/sc_vec.h): growth by doubling from
 * the first capacity, contents kept; n + more, the doubling and capacity
 * times element size refused where they would pass SIZE_MAX (no realloc
 * made); a failed realloc (realloc wrapped, --wrap=realloc) leaving the
 * caller's pointer, capacity and contents as they were. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/sc_vec.h"
#include "test_util.h"

void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);

static int calls;     /* reallocs asked for */
static int fail_next; /* the next realloc returns NULL */
static size_t last_size;

void *__wrap_realloc(void *p, size_t n)
{
    calls++;
    last_size = n;
    if (fail_next) {
        fail_next = 0;
        return NULL;
    }
    return __real_realloc(p, n);
}

typedef struct three {
    uint64_t a, b, c;
} three;

/* Pushing one at a time from nothing: 8, 16, 32, ... and every value kept. */
static void test_growth(void)
{
    three *a = NULL;
    size_t n = 0, cap = 0;
    int grew = 0;
    for (uint64_t i = 0; i < 100; i++) {
        int before = calls;
        CHECK_EQ_INT(SC_VEC_RESERVE(a, cap, n, 1, 8), SC_OK);
        if (calls != before) {
            grew++;
            CHECK_EQ_INT(last_size, cap * sizeof(three));
        }
        a[n++] = (three){i, i * 2, i * 3};
    }
    /* 8 16 32 64 128 */
    CHECK_EQ_INT(grew, 5);
    CHECK_EQ_INT(cap, 128);
    int ok = 1;
    for (uint64_t i = 0; i < n; i++) {
        ok &= a[i].a == i && a[i].b == i * 2 && a[i].c == i * 3;
    }
    CHECK(ok);
    /* Room already there: nothing moves, no realloc. */
    three *was = a;
    int before = calls;
    CHECK_EQ_INT(SC_VEC_RESERVE(a, cap, n, cap - n, 8), SC_OK);
    CHECK(a == was);
    CHECK_EQ_INT(cap, 128);
    CHECK_EQ_INT(calls, before);
    /* Many at once: doubled until it holds them, in one realloc. */
    CHECK_EQ_INT(SC_VEC_RESERVE(a, cap, n, 1000, 8), SC_OK);
    CHECK_EQ_INT(cap, 2048);
    CHECK_EQ_INT(calls, before + 1);
    CHECK(a[99].a == 99 && a[99].c == 297);
    free(a);

    /* A first capacity that is not a power of two: 3, 6, 12. */
    char *b = NULL;
    size_t bcap = 0;
    CHECK_EQ_INT(SC_VEC_RESERVE(b, bcap, 0, 2, 3), SC_OK);
    CHECK_EQ_INT(bcap, 3);
    CHECK_EQ_INT(SC_VEC_RESERVE(b, bcap, 3, 5, 3), SC_OK);
    CHECK_EQ_INT(bcap, 12);
    /* Doubling goes on from the capacity held, not from `first` again:
     * 12 full, with another first (8) given, becomes 24, not 16. */
    CHECK_EQ_INT(SC_VEC_RESERVE(b, bcap, 12, 1, 8), SC_OK);
    CHECK_EQ_INT(bcap, 24);
    free(b);
}

/* Sizes that pass SIZE_MAX are refused before any realloc, the caller's
 * state untouched (a wrapped size would be a block too small, or a
 * realloc to 0 bytes that frees it). */
static void test_overflow(void)
{
    three *a = NULL;
    size_t n = 0, cap = 0;
    CHECK_EQ_INT(SC_VEC_RESERVE(a, cap, n, 4, 4), SC_OK);
    three *was = a;
    a[0].a = 42;
    n = 1;
    int before = calls;

    /* n + more past SIZE_MAX. */
    CHECK_EQ_INT(SC_VEC_RESERVE(a, cap, n, SIZE_MAX, 4), SC_ENOMEM);
    /* capacity * 24 past SIZE_MAX though the count fits. */
    CHECK_EQ_INT(SC_VEC_RESERVE(a, cap, n, SIZE_MAX / 24, 4), SC_ENOMEM);
    CHECK_EQ_INT(calls, before);
    CHECK(a == was);
    CHECK_EQ_INT(cap, 4);
    CHECK_EQ_INT(a[0].a, 42);
    free(a);

    /* (SIZE_MAX / 3 + 1) * 3 wraps to 2: refused, not a 2-byte block. */
    char(*p)[3] = NULL;
    size_t pcap = 0;
    CHECK_EQ_INT(SC_VEC_RESERVE(p, pcap, 0, 1, SIZE_MAX / 3 + 1), SC_ENOMEM);
    CHECK(p == NULL);
    CHECK_EQ_INT(pcap, 0);
    /* 2^60 elements of 16 bytes wrap to 0. */
    char(*q)[16] = NULL;
    size_t qcap = 0;
    CHECK_EQ_INT(SC_VEC_RESERVE(q, qcap, 0, 1, (size_t)1 << 60), SC_ENOMEM);
    CHECK(q == NULL);
    CHECK_EQ_INT(qcap, 0);
    /* The doubling itself past SIZE_MAX: a capacity above SIZE_MAX / 2,
     * full (a block never allocated: no realloc may touch it). */
    char stand_in[1];
    char *s = stand_in;
    size_t scap = SIZE_MAX / 2 + 1;
    CHECK_EQ_INT(SC_VEC_RESERVE(s, scap, scap, 1, 8), SC_ENOMEM);
    CHECK(s == stand_in);
    CHECK_EQ_INT(scap, SIZE_MAX / 2 + 1);
    CHECK_EQ_INT(calls, before);
}

/* A realloc that fails leaves pointer, capacity and contents as they
 * were; the next try grows as if nothing had happened. */
static void test_alloc_failure(void)
{
    uint32_t *a = NULL;
    size_t cap = 0;
    fail_next = 1;
    CHECK_EQ_INT(SC_VEC_RESERVE(a, cap, 0, 1, 16), SC_ENOMEM);
    CHECK(a == NULL);
    CHECK_EQ_INT(cap, 0);
    CHECK_EQ_INT(fail_next, 0); /* the failure was met */

    CHECK_EQ_INT(SC_VEC_RESERVE(a, cap, 0, 16, 16), SC_OK);
    CHECK_EQ_INT(cap, 16);
    for (uint32_t i = 0; i < 16; i++) {
        a[i] = i * 7;
    }
    uint32_t *was = a;
    fail_next = 1;
    CHECK_EQ_INT(SC_VEC_RESERVE(a, cap, 16, 1, 16), SC_ENOMEM);
    CHECK_EQ_INT(fail_next, 0);
    CHECK(a == was);
    CHECK_EQ_INT(cap, 16);
    int ok = 1;
    for (uint32_t i = 0; i < 16; i++) {
        ok &= a[i] == i * 7;
    }
    CHECK(ok);
    CHECK_EQ_INT(SC_VEC_RESERVE(a, cap, 16, 1, 16), SC_OK);
    CHECK_EQ_INT(cap, 32);
    CHECK_EQ_INT(a[15], 105);
    free(a);
}

int main(void)
{
    test_growth();
    test_overflow();
    test_alloc_failure();
    return test_summary("test_vec");
}
