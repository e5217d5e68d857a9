/* test_gate.h - holds a background thread at a point while a test looks
 * at what the rest does meanwhile (the index's training hook: tests
 * test_cache and test_ivf). The held thread says it entered and waits
 * until the gate opens; the test waits for a flag, 10 s at most (a
 * deadlock detector, not a timing). Header only. */
#ifndef SC_TEST_GATE_H
#define SC_TEST_GATE_H

#include <pthread.h>
#include <stdbool.h>
#include <time.h>

typedef struct test_gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered, open, done; /* done: the test's own event */
} test_gate;

#define TEST_GATE_INIT                                                         \
    {                                                                          \
        .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER        \
    }

/* Sets *flag (a field of g) and wakes every waiter. */
static inline void test_gate_set(test_gate *g, bool *flag)
{
    pthread_mutex_lock(&g->mu);
    *flag = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* The hook: entered, then held until the gate opens. */
static inline void test_gate_hold(void *arg)
{
    test_gate *g = arg;
    test_gate_set(g, &g->entered);
    pthread_mutex_lock(&g->mu);
    while (!g->open) {
        pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
}

/* Waits (10 s at most: a hang guard, not a timing) until *flag (a field
 * of g); returns it. */
static inline bool test_gate_wait(test_gate *g, bool *flag)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&g->mu);
    while (!*flag && pthread_cond_timedwait(&g->cv, &g->mu, &until) == 0) {
    }
    bool v = *flag;
    pthread_mutex_unlock(&g->mu);
    return v;
}

#endif
