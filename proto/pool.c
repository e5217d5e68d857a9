/* pool.c - a few threads of our own that run queued jobs in turn (pool.h):
 * one mutex over a FIFO of jobs linked through the jobs themselves, one
 * condition variable that wakes an idle thread. */
#include "proto/pool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct sc_pool {
    sc_pool_config cfg;
    pthread_t *tids;
    unsigned nthreads; /* started */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a job queued, or stopping */
    sc_pool_job *head, *tail;
    unsigned queued, running;
    uint64_t refused;
    bool stopping;
};

static void *pool_main(void *arg)
{
    sc_pool *pool = arg;
    void *local = pool->cfg.thread_start != NULL
                      ? pool->cfg.thread_start(pool->cfg.arg)
                      : NULL;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (pool->head == NULL && !pool->stopping) {
            pthread_cond_wait(&pool->cv, &pool->mu);
        }
        sc_pool_job *job = pool->head;
        if (job == NULL) {
            break; /* stopping; sc_pool_stop refuses what is left */
        }
        pool->head = job->next;
        if (pool->head == NULL) {
            pool->tail = NULL;
        }
        pool->queued--;
        pool->running++;
        pthread_mutex_unlock(&pool->mu);
        pool->cfg.run(pool->cfg.arg, local, job);
        pthread_mutex_lock(&pool->mu);
        pool->running--;
    }
    pthread_mutex_unlock(&pool->mu);
    if (pool->cfg.thread_stop != NULL) {
        pool->cfg.thread_stop(local);
    }
    return NULL;
}

sc_err sc_pool_open(const sc_pool_config *cfg, sc_pool **out)
{
    if (cfg == NULL || out == NULL || cfg->threads == 0 || cfg->run == NULL ||
        cfg->refuse == NULL) {
        return SC_EINVAL;
    }
    sc_pool *pool = calloc(1, sizeof(*pool));
    if (pool == NULL) {
        return SC_ENOMEM;
    }
    pool->cfg = *cfg;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    if ((pool->tids = calloc(cfg->threads, sizeof(*pool->tids))) == NULL) {
        sc_pool_close(pool);
        return SC_ENOMEM;
    }
    for (; pool->nthreads < cfg->threads; pool->nthreads++) {
        if (pthread_create(&pool->tids[pool->nthreads], NULL, pool_main,
                           pool) != 0) {
            sc_pool_close(pool); /* nothing was queued */
            return SC_ENOMEM;
        }
    }
    *out = pool;
    return SC_OK;
}

sc_pool_verdict sc_pool_submit(sc_pool *pool, sc_pool_job *job)
{
    sc_pool_verdict v = SC_POOL_QUEUED;
    pthread_mutex_lock(&pool->mu);
    if (pool->stopping) {
        v = SC_POOL_STOPPED;
    } else if (pool->cfg.queue_max != 0 &&
               pool->queued + pool->running >=
                   pool->cfg.threads + pool->cfg.queue_max) {
        v = SC_POOL_FULL;
        pool->refused++;
    } else {
        job->next = NULL;
        if (pool->tail != NULL) {
            pool->tail->next = job;
        } else {
            pool->head = job;
        }
        pool->tail = job;
        pool->queued++;
        pthread_cond_signal(&pool->cv);
    }
    pthread_mutex_unlock(&pool->mu);
    return v;
}

void sc_pool_stop(sc_pool *pool)
{
    pthread_mutex_lock(&pool->mu);
    pool->stopping = true;
    sc_pool_job *job = pool->head;
    pool->head = pool->tail = NULL;
    pool->queued = 0;
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    while (job != NULL) {
        sc_pool_job *next = job->next;
        pool->cfg.refuse(pool->cfg.arg, job);
        job = next;
    }
    for (unsigned i = 0; i < pool->nthreads; i++) {
        pthread_join(pool->tids[i], NULL);
    }
    pool->nthreads = 0;
}

void sc_pool_close(sc_pool *pool)
{
    if (pool == NULL) {
        return;
    }
    sc_pool_stop(pool);
    free(pool->tids);
    pthread_cond_destroy(&pool->cv);
    pthread_mutex_destroy(&pool->mu);
    free(pool);
}

void sc_pool_counts(sc_pool *pool, unsigned *queued, unsigned *running,
                    uint64_t *refused)
{
    pthread_mutex_lock(&pool->mu);
    *queued = pool->queued;
    *running = pool->running;
    *refused = pool->refused;
    pthread_mutex_unlock(&pool->mu);
}
