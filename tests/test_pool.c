/* test_pool.c - sc_pool (proto/pool.c) on its own: jobs run in the order
 * they came, the queue cap refuses what is past it and counts it, a stop
 * refuses what still waits and lets running jobs finish, and each thread's
 * own state is made and handed back once. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "proto/pool.h"
#include "tests/test_util.h"

typedef struct job {
    sc_pool_job link;
    int id;
} job;

typedef struct state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool gate_open; /* jobs wait for it before they return */
    int order[256], nrun;
    int refused[256], nrefused;
    int started, stopped, bad_local;
} state;

static void *thread_start(void *arg)
{
    state *st = arg;
    pthread_mutex_lock(&st->mu);
    st->started++;
    pthread_mutex_unlock(&st->mu);
    return st; /* checked by run and thread_stop */
}

static void thread_stop(void *local)
{
    state *st = local;
    pthread_mutex_lock(&st->mu);
    st->stopped++;
    pthread_mutex_unlock(&st->mu);
}

static void run(void *arg, void *local, sc_pool_job *j)
{
    state *st = arg;
    job *jb = SC_POOL_ENTRY(j, job, link);
    pthread_mutex_lock(&st->mu);
    if (local != NULL && local != st) {
        st->bad_local++;
    }
    st->order[st->nrun++] = jb->id;
    pthread_cond_broadcast(&st->cv);
    while (!st->gate_open) {
        pthread_cond_wait(&st->cv, &st->mu);
    }
    pthread_mutex_unlock(&st->mu);
}

static void refuse(void *arg, sc_pool_job *j)
{
    state *st = arg;
    pthread_mutex_lock(&st->mu);
    st->refused[st->nrefused++] = SC_POOL_ENTRY(j, job, link)->id;
    pthread_mutex_unlock(&st->mu);
}

static void state_init(state *st, bool gate_open)
{
    *st = (state){.gate_open = gate_open};
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
}

static void state_fini(state *st)
{
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
}

static void gate(state *st, bool open)
{
    pthread_mutex_lock(&st->mu);
    st->gate_open = open;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

/* Waits (10 s at most: a hang guard, not a timing) until n jobs have
 * begun to run. */
static bool wait_running(state *st, int n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&st->mu);
    int rc = 0;
    while (st->nrun < n && rc == 0) {
        rc = pthread_cond_timedwait(&st->cv, &st->mu, &until);
    }
    bool ok = st->nrun >= n;
    pthread_mutex_unlock(&st->mu);
    return ok;
}

static void test_config(void)
{
    state st;
    state_init(&st, true);
    sc_pool_config cfg = {.threads = 1, .run = run, .refuse = refuse,
                          .arg = &st};
    sc_pool *pool = NULL;
    CHECK_EQ_INT(sc_pool_open(NULL, &pool), SC_EINVAL);
    CHECK_EQ_INT(sc_pool_open(&cfg, NULL), SC_EINVAL);
    cfg.threads = 0;
    CHECK_EQ_INT(sc_pool_open(&cfg, &pool), SC_EINVAL);
    cfg.threads = 1;
    cfg.run = NULL;
    CHECK_EQ_INT(sc_pool_open(&cfg, &pool), SC_EINVAL);
    cfg.run = run;
    cfg.refuse = NULL;
    CHECK_EQ_INT(sc_pool_open(&cfg, &pool), SC_EINVAL);
    CHECK(pool == NULL);
    sc_pool_close(NULL); /* a no-op */
    state_fini(&st);
}

/* A pool of run, refuse and the thread hooks over st; NULL (a failed
 * check) when it does not open. */
static sc_pool *open_pool(state *st, unsigned threads, unsigned queue_max)
{
    sc_pool_config cfg = {.threads = threads,
                          .queue_max = queue_max,
                          .run = run,
                          .refuse = refuse,
                          .thread_start = thread_start,
                          .thread_stop = thread_stop,
                          .arg = st};
    sc_pool *pool = NULL;
    CHECK_EQ_INT(sc_pool_open(&cfg, &pool), SC_OK);
    return pool;
}

/* One thread, no cap: 200 jobs run once each, in the order submitted. */
static void test_order(void)
{
    state st;
    state_init(&st, true);
    sc_pool *pool = open_pool(&st, 1, 0);
    if (pool == NULL) {
        return;
    }
    static job jobs[200];
    for (int i = 0; i < 200; i++) {
        jobs[i].id = i;
        CHECK_EQ_INT(sc_pool_submit(pool, &jobs[i].link), SC_POOL_QUEUED);
    }
    CHECK(wait_running(&st, 200));
    sc_pool_close(pool);
    CHECK_EQ_INT(st.nrun, 200);
    bool in_order = true;
    for (int i = 0; i < st.nrun; i++) {
        in_order = in_order && st.order[i] == i;
    }
    CHECK(in_order);
    CHECK_EQ_INT(st.nrefused, 0);
    CHECK_EQ_INT(st.started, 1);
    CHECK_EQ_INT(st.stopped, 1);
    CHECK_EQ_INT(st.bad_local, 0);
    state_fini(&st);
}

typedef struct stopper {
    sc_pool *pool;
    pthread_t t;
} stopper;

static void *stop_main(void *arg)
{
    sc_pool_stop(((stopper *)arg)->pool);
    return NULL;
}

/* Two threads and a queue of one: both threads held, one job waits, the
 * next is refused and counted; a stop refuses the waiting one at once,
 * waits for the held ones, and refuses anything submitted meanwhile. */
static void test_cap_and_stop(void)
{
    state st;
    state_init(&st, false);
    sc_pool *pool = open_pool(&st, 2, 1);
    if (pool == NULL) {
        return;
    }
    job jobs[6];
    for (int i = 0; i < 6; i++) {
        jobs[i].id = i;
    }
    CHECK_EQ_INT(sc_pool_submit(pool, &jobs[0].link), SC_POOL_QUEUED);
    CHECK_EQ_INT(sc_pool_submit(pool, &jobs[1].link), SC_POOL_QUEUED);
    CHECK(wait_running(&st, 2));
    CHECK_EQ_INT(sc_pool_submit(pool, &jobs[2].link), SC_POOL_QUEUED);
    CHECK_EQ_INT(sc_pool_submit(pool, &jobs[3].link), SC_POOL_FULL);
    CHECK_EQ_INT(sc_pool_submit(pool, &jobs[4].link), SC_POOL_FULL);
    unsigned queued, running;
    uint64_t refused;
    sc_pool_counts(pool, &queued, &running, &refused);
    CHECK_EQ_INT(queued, 1);
    CHECK_EQ_INT(running, 2);
    CHECK_EQ_INT(refused, 2);

    stopper s = {.pool = pool};
    CHECK(pthread_create(&s.t, NULL, stop_main, &s) == 0);
    /* The stop refuses job 2 before it waits for the held jobs. */
    bool refused_2 = false;
    for (int i = 0; i < 10000 && !refused_2; i++) {
        pthread_mutex_lock(&st.mu);
        refused_2 = st.nrefused == 1 && st.refused[0] == 2;
        pthread_mutex_unlock(&st.mu);
        if (!refused_2) {
            nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
        }
    }
    CHECK(refused_2);
    CHECK_EQ_INT(sc_pool_submit(pool, &jobs[5].link), SC_POOL_STOPPED);
    pthread_mutex_lock(&st.mu);
    CHECK_EQ_INT(st.stopped, 0); /* both threads still hold their job */
    pthread_mutex_unlock(&st.mu);
    gate(&st, true);
    pthread_join(s.t, NULL);
    CHECK_EQ_INT(st.nrun, 2);
    CHECK_EQ_INT(st.nrefused, 1);
    CHECK_EQ_INT(st.started, 2);
    CHECK_EQ_INT(st.stopped, 2);
    sc_pool_counts(pool, &queued, &running, &refused);
    CHECK_EQ_INT(queued, 0);
    CHECK_EQ_INT(running, 0);
    sc_pool_stop(pool); /* a second stop does nothing */
    sc_pool_close(pool);
    CHECK_EQ_INT(st.nrun, 2);
    CHECK_EQ_INT(st.nrefused, 1);
    CHECK_EQ_INT(st.stopped, 2);
    state_fini(&st);
}

int main(void)
{
    test_config();
    test_order();
    test_cap_and_stop();
    return test_summary("pool");
}
