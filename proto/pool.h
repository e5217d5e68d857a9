/* pool.h - a few threads of our own that run queued jobs in turn. nng calls
 * handlers on its few system threads, which also carry every completion of
 * the nng socket's I/O: the HTTP front (proto/http.c) and the proxy
 * (proto/proxy.c) hand what takes a while to a pool, so that those threads
 * are never held up. */
#ifndef SC_POOL_H
#define SC_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "common/sc_error.h"

/* A job is a struct of the caller's with an sc_pool_job inside; the pool
 * links it in its queue and hands it back to run or refuse.
 * SC_POOL_ENTRY(job, type, member) is the struct it is in. */
typedef struct sc_pool_job {
    struct sc_pool_job *next;
} sc_pool_job;

#define SC_POOL_ENTRY(job, type, member)                                       \
    ((type *)(void *)((char *)(job)-offsetof(type, member)))

typedef struct sc_pool_config {
    unsigned threads;   /* 1 or more */
    unsigned queue_max; /* jobs that may wait while every thread is busy;
                           0 = no cap */
    /* Runs job on a pool thread, unlocked; the job is run's from then on.
     * local: what thread_start returned on this thread (NULL without). */
    void (*run)(void *arg, void *local, sc_pool_job *job);
    /* Answers a job still queued at sc_pool_stop (a 503), on the thread
     * that stops the pool; the job is refuse's from then on. */
    void (*refuse)(void *arg, sc_pool_job *job);
    /* Optional: state a thread keeps for itself, made on the thread before
     * its first job and handed to thread_stop once it has run its last. */
    void *(*thread_start)(void *arg);
    void (*thread_stop)(void *local);
    void *arg; /* borrowed; handed to run, refuse and thread_start */
} sc_pool_config;

typedef struct sc_pool sc_pool;

/* Starts cfg->threads threads (cfg is copied). On success *out is the
 * caller's, freed with sc_pool_close; on failure none is left running and
 * *out is untouched. Errors: SC_EINVAL, SC_ENOMEM (a thread or memory). */
sc_err sc_pool_open(const sc_pool_config *cfg, sc_pool **out);

/* What sc_pool_submit did with a job. */
typedef enum sc_pool_verdict {
    SC_POOL_QUEUED,  /* a thread will run it */
    SC_POOL_FULL,    /* queue_max wait with every thread busy: refused */
    SC_POOL_STOPPED, /* sc_pool_stop has begun: refused */
} sc_pool_verdict;

/* Queues job for a thread, from any thread. Queued, the job is the pool's
 * until it is handed to run or refuse; refused, it stays the caller's, who
 * answers it. Jobs not yet taken by an idle thread do not count against
 * queue_max. */
sc_pool_verdict sc_pool_submit(sc_pool *pool, sc_pool_job *job);

/* Refuses new jobs, hands those still queued to refuse, then waits for
 * each thread to finish the job it runs. Submitting stays safe until
 * sc_pool_close; a second stop does nothing. */
void sc_pool_stop(sc_pool *pool);

/* Stops pool if it is not yet, and frees it. NULL is a no-op. */
void sc_pool_close(sc_pool *pool);

/* Jobs waiting now, being run now, and refused as SC_POOL_FULL since open. */
void sc_pool_counts(sc_pool *pool, unsigned *queued, unsigned *running,
                    uint64_t *refused);

#endif
