/* server.c - nng REP socket, listeners and worker pool (see server.h).
 * The socket is raw: a worker blocks in nng_recvmsg (nng wakes it
 * directly), then takes every other request already waiting, without
 * blocking, and hands them to the handler as one batch; each reply keeps
 * its request's header, which routes it back. A busy server so pays one
 * wake-up per batch, and lookups in a batch can share one index scan. No
 * request work runs inside nng's callbacks. */
#define _GNU_SOURCE
#include "proto/server.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/tls/tls.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/sc_hook.h"
#include "common/sc_plural.h"

#define DEFAULT_THREADS 16
#define DEFAULT_QUEUE   SC_SERVER_MAX_BATCH

/* The client count, apart from the server: nng calls pipe_event from its
 * own threads until the socket is closed, and a close left running (see
 * stop) may call it after the server is freed, so then this is kept. */
typedef struct clients {
    uint64_t connected; /* atomically */
    uint64_t refused;   /* atomically */
    uint64_t max;
    uint64_t slow; /* slow_clients() when last logged, atomically */
    unsigned reply_timeout_ms;
} clients;

typedef struct worker {
    struct sc_server *s;
    nng_aio *aio; /* its receive: sc_server_close can cancel it */
    pthread_t tid;
} worker;

struct sc_server {
    nng_socket sock;
    nng_listener lst[SC_SERVER_MAX_LISTEN];
    unsigned nlst;
    worker *w;         /* wanted of them */
    unsigned wanted;   /* workers to run */
    unsigned nworkers; /* started */
    sc_server_handler handler;
    sc_server_batch_handler handler_many;
    sc_server_handler handler_busy;
    void *handler_arg;
    uint64_t served;
    uint64_t dropped;
    uint64_t busy_answered; /* refused past reply_total_max, answered */
    uint64_t busy_dropped;  /* ... and not answered */
    clients *cl;
    struct undo_gate *gate; /* NULL without the patched nng */
    int closing; /* set (atomically) by sc_server_close */
};

unsigned sc_server_stuck_closes;
unsigned sc_server_late_closes;
unsigned sc_server_late_frees;

static void count(uint64_t *n)
{
    __atomic_add_fetch(n, 1, __ATOMIC_RELAXED);
}

/* True when n is 1, 10, 100...: a cause of disconnects is logged at those
 * counts, not once per client. */
static int power_of_ten(uint64_t n)
{
    uint64_t at = 1;
    while (at < n && at <= UINT64_MAX / 10) {
        at *= 10;
    }
    return at == n;
}

/* Clients nng closed for not reading their replies (the patched nng's
 * counts; see sc_server_slow_clients). */
static void slow_clients(nng_socket sock, uint64_t *over, uint64_t *stalled)
{
    *over = *stalled = 0;
#ifdef SC_NNG_PATCHED
    (void)nng_socket_get_uint64(sock, NNG_OPT_REP0_SENDQ_CLOSED, over);
    (void)nng_socket_get_uint64(sock, NNG_OPT_REP0_SEND_TIMEDOUT, stalled);
#else
    (void)sock;
#endif
}

/* A pipe is gone: was it one nng closed for leaving its replies unread?
 * Said at the 1st, 10th, 100th... such client. */
static void note_slow_clients(nng_socket sock, clients *cl)
{
    uint64_t over, stalled;
    slow_clients(sock, &over, &stalled);
    uint64_t n = over + stalled;
    uint64_t prev = __atomic_load_n(&cl->slow, __ATOMIC_RELAXED);
    while (n > prev &&
           !__atomic_compare_exchange_n(&cl->slow, &prev, n, 0,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    if (n <= prev) {
        return;
    }
    for (uint64_t i = prev + 1; i <= n; i++) {
        if (power_of_ten(i)) {
            fprintf(stderr,
                    "semcached: an nng client disconnected for leaving its "
                    "replies unread (%llu so far: %llu past "
                    "--reply-queue-max, %llu with a reply not written "
                    "within %g s)\n",
                    (unsigned long long)n, (unsigned long long)over,
                    (unsigned long long)stalled, cl->reply_timeout_ms / 1000.0);
            break;
        }
    }
}

/* A pipe is counted when its handshake is done (before the socket uses
 * it) and uncounted when it goes; nng 1.5.2 reports the removal of every
 * pipe it reported added, the refused ones too. Past the cap, the new pipe
 * is closed before it carries a request. */
static void pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    clients *cl = arg;
    if (ev == NNG_PIPE_EV_REM_POST) {
        __atomic_sub_fetch(&cl->connected, 1, __ATOMIC_RELAXED);
        note_slow_clients(nng_pipe_socket(p), cl);
        return;
    }
    uint64_t n = __atomic_add_fetch(&cl->connected, 1, __ATOMIC_RELAXED);
    if (n > cl->max) {
        nng_pipe_close(p);
        uint64_t r = __atomic_add_fetch(&cl->refused, 1, __ATOMIC_RELAXED);
        /* Said at the 1st, 10th, 100th... refusal, not once per client. */
        if (power_of_ten(r)) {
            fprintf(stderr,
                    "semcached: an nng client refused (%llu so far): %llu "
                    "%s at once is the cap (--max-clients)\n",
                    (unsigned long long)r, (unsigned long long)cl->max,
                    sc_plural(cl->max, "client", "clients"));
        }
    }
}

/* The tests' failure hooks: a send (sc_server_set_send_hook) and a
 * reply's own message (sc_server_set_copy_hook). */
typedef SC_HOOK(bool, (void *)) fail_hook;
static fail_hook send_hook, copy_hook;

void sc_server_set_send_hook(bool (*fail)(void *arg), void *arg)
{
    SC_HOOK_SET(send_hook, fail, arg);
}

void sc_server_set_copy_hook(bool (*fail)(void *arg), void *arg)
{
    SC_HOOK_SET(copy_hook, fail, arg);
}

/* True when h is set and says to fail. */
static bool hook_fails(fail_hook *h)
{
    bool (*fail)(void *) = atomic_load(&h->fn);
    return fail != NULL && fail(atomic_load(&h->arg));
}

#ifdef SC_NNG_PATCHED
/* The undos of replies nng holds (see reply_done): each such reply holds a
 * reference, the server one. While open, an undo runs under the read lock;
 * stop closes the gate (the write lock: it waits for those running) once
 * nng's close returned or was left running and the workers are joined, so
 * an undo nng runs later (a close left running) only frees its memory:
 * what it would take back from may be gone by then. */
typedef struct undo_gate {
    pthread_rwlock_t lk;
    bool open;
    uint64_t refs; /* atomically */
} undo_gate;

static undo_gate *gate_new(void)
{
    undo_gate *g = calloc(1, sizeof(*g));
    if (g != NULL && pthread_rwlock_init(&g->lk, NULL) != 0) {
        free(g);
        return NULL;
    }
    if (g != NULL) {
        g->open = true;
        g->refs = 1;
    }
    return g;
}

static void gate_rele(undo_gate *g)
{
    if (g != NULL && __atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        pthread_rwlock_destroy(&g->lk);
        free(g);
    }
}

static void gate_close(undo_gate *g)
{
    if (g != NULL) {
        pthread_rwlock_wrlock(&g->lk);
        g->open = false;
        pthread_rwlock_unlock(&g->lk);
        gate_rele(g);
    }
}

/* nng freed a reply that carried an undo (nng_msg_set_done, the patched
 * nng's): sent when a transport wrote it whole, false when it was freed
 * unwritten (dropped past --reply-queue-len, or queued or part written
 * when its connection or the socket closed). Runs on whatever nng thread
 * freed it, possibly under nng's locks: the undo only takes the ledger's
 * lock, and calls nothing of nng's. */
static void reply_done(void *arg, bool sent)
{
    sc_server_undo *u = arg;
    undo_gate *g = u->server_;
    pthread_rwlock_rdlock(&g->lk);
    u->done(u, sent || !g->open);
    pthread_rwlock_unlock(&g->lk);
    gate_rele(g);
}
#else
typedef struct undo_gate undo_gate;
static void gate_close(undo_gate *g)
{
    (void)g;
}
#endif

/* Bytes of buffer past twice a reply's length that it may keep from its
 * request: a short reply to a big request goes in a message of its own. */
#define REPLY_SLACK 4096

/* Hands *mp (the request; its header routes the reply) to nng with body,
 * len bytes, as reply, and undo (NULL: none) with it: on 0, nng holds undo
 * and does it when it frees the reply (reply_done); otherwise it is still
 * the caller's. Returns 0, NNG_ENOSPC when the replies held for every
 * client are at reply_total_max (the patched nng refuses it), or another
 * nng error. On failure *mp is still the caller's, to reuse or free; it
 * may be a new message then (the old one freed), holding the header.
 *
 * The request's buffer is kept when the reply fits it without much to
 * spare (the common case: a small request, or a reply as big). A reply
 * much shorter than its request's buffer (a short error to a request of
 * up to --recv-max) goes in a fresh message sized to it, or, when that
 * cannot be allocated, in the request's after all. It held the
 * request's buffer while queued: 1000 short replies to 128 KiB requests
 * held 126 MiB, which nng counted as their 40 KB of length (the patched
 * nng now counts buffers against reply_queue_max and reply_total_max: it
 * would disconnect such a client instead, or refuse replies). */
static int send_reply(sc_server *s, nng_msg **mp, const uint8_t *body,
                      size_t len, sc_server_undo *undo)
{
    nng_msg *m = *mp;
    nng_msg_clear(m);
    if (nng_msg_capacity(m) > 2 * len + REPLY_SLACK) {
        nng_msg *r = NULL;
        int rv = hook_fails(&copy_hook) ? NNG_ENOMEM : nng_msg_alloc(&r, 0);
        if (rv == 0) {
            rv = nng_msg_header_append(r, nng_msg_header(m),
                                       nng_msg_header_len(m));
        }
        if (rv == 0) {
            nng_msg_set_pipe(r, nng_msg_get_pipe(m));
            nng_msg_free(m);
            *mp = m = r;
        } else {
            /* No memory for the copy: the reply goes in the request's
             * buffer after all (it holds more than the reply, so the
             * append needs no allocation), rather than no reply. */
            nng_msg_free(r); /* NULL-safe */
        }
    }
    int rv = nng_msg_append(m, body, len);
    if (rv != 0) {
        return rv;
    }
#ifdef SC_NNG_PATCHED
    /* Set before the send: nng may write and free the reply before
     * nng_sendmsg returns. */
    if (undo != NULL) {
        undo->server_ = s->gate;
        __atomic_add_fetch(&s->gate->refs, 1, __ATOMIC_RELAXED);
        /* What the undo holds is counted with the reply by nng's reply
         * bounds, as its buffer is: a client's unread replies hold both. */
        nng_msg_set_done(m, reply_done, undo, undo->held);
    }
    rv = nng_sendmsg(s->sock, m, 0);
    if (rv != 0 && undo != NULL) {
        nng_msg_set_done(m, NULL, NULL, 0);
        gate_rele(s->gate);
    }
    return rv;
#else
    (void)undo;
    return nng_sendmsg(s->sock, m, 0);
#endif
}

/* A reply refused past reply_total_max: the short error reply instead, if
 * the handler makes one and it fits. True when m went to nng. */
static bool send_busy(sc_server *s, nng_msg **mp, const sc_server_msg *msg)
{
    uint8_t *b = NULL;
    size_t blen = 0;
    bool sent = s->handler_busy != NULL &&
                s->handler_busy(s->handler_arg, msg->reply, msg->reply_len, &b,
                                &blen) == 0 &&
                b != NULL && send_reply(s, mp, b, blen, NULL) == 0;
    free(b);
    count(sent ? &s->busy_answered : &s->busy_dropped);
    return sent;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    sc_server *s = w->s;
    nng_msg *batch[SC_SERVER_MAX_BATCH];
    sc_server_msg msgs[SC_SERVER_MAX_BATCH];
    for (;;) {
        if (__atomic_load_n(&s->closing, __ATOMIC_ACQUIRE)) {
            break;
        }
        /* The blocking receive, on an aio of our own: the close cancels it
         * even when nng's socket close cannot finish (see below). */
        nng_recv_aio(s->sock, w->aio);
        nng_aio_wait(w->aio);
        int rv = nng_aio_result(w->aio);
        if (rv == 0) {
            batch[0] = nng_aio_get_msg(w->aio);
            nng_aio_set_msg(w->aio, NULL);
        }
        /* A socket closed while this worker was busy is gone: nng answers
         * NNG_ENOENT then, not NNG_ECLOSED. Either way, leave. */
        if (rv == NNG_ECLOSED || rv == NNG_ENOENT ||
            __atomic_load_n(&s->closing, __ATOMIC_ACQUIRE)) {
            if (rv == 0) {
                nng_msg_free(batch[0]);
            }
            break;
        }
        if (rv != 0) {
            /* A receive that failed (a message over the size cap, a pipe
             * that went away) is one client's problem: keep serving. */
            count(&s->dropped);
            continue;
        }
        /* Whatever else is waiting joins this batch. */
        size_t n = 1;
        while (n < SC_SERVER_MAX_BATCH &&
               nng_recvmsg(s->sock, &batch[n], NNG_FLAG_NONBLOCK) == 0) {
            n++;
        }
        for (size_t i = 0; i < n; i++) {
            msgs[i] = (sc_server_msg){.req = nng_msg_body(batch[i]),
                                      .len = nng_msg_len(batch[i])};
        }
        if (s->handler_many != NULL) {
            s->handler_many(s->handler_arg, msgs, n);
        } else {
            for (size_t i = 0; i < n; i++) {
                msgs[i].rc =
                    s->handler(s->handler_arg, msgs[i].req, msgs[i].len,
                               &msgs[i].reply, &msgs[i].reply_len);
            }
        }
        for (size_t i = 0; i < n; i++) {
            nng_msg *m = batch[i];
            bool sent = false, busy = false;
            /* The undo goes with the reply where nng can say whether it
             * was written (s->gate: the patched nng's), and is done here
             * otherwise. */
            sc_server_undo *held = s->gate != NULL ? msgs[i].undo : NULL;
            /* Reuse the request message: its header holds the routing
             * back (the socket is raw, so the header is ours to keep). */
            if (msgs[i].rc == 0 && msgs[i].reply != NULL &&
                !hook_fails(&send_hook)) {
                /* Counted before the send, taken back if it fails: once
                 * nng has it, the client may read it before this thread
                 * runs again, and a count read then (the stop line's)
                 * must have it. */
                count(&s->served);
                int rv =
                    send_reply(s, &m, msgs[i].reply, msgs[i].reply_len, held);
                if (rv == 0) {
                    sent = true;
                } else {
                    held = NULL;
                    __atomic_sub_fetch(&s->served, 1, __ATOMIC_RELAXED);
                    if (rv == NNG_ENOSPC) {
                        busy = send_busy(s, &m, &msgs[i]);
                    }
                }
            }
            if (!sent && !busy) {
                nng_msg_free(m);
                count(&s->dropped);
            }
            free(msgs[i].reply);
            /* A reply dropped here, or refused for a short one, takes back
             * what it carried (a lookup's hits in the ledger): the client
             * never gets it. One nng holds is done when nng frees it. */
            if (msgs[i].undo != NULL && (!sent || held == NULL)) {
                msgs[i].undo->done(msgs[i].undo, sent);
            }
        }
    }
    return NULL;
}

static void stop(sc_server *s, uint64_t *served, uint64_t *dropped);

static int start_listener(sc_server *s, const char *url, const char *cert)
{
    nng_listener l;
    int rv = nng_listener_create(&l, s->sock, url);
    if (rv != 0) {
        /* A scheme nng lacks, or a URL it cannot read: say the forms. */
        bool form =
            rv == NNG_ENOTSUP || rv == NNG_EADDRINVAL || rv == NNG_EINVAL;
        fprintf(stderr, "semcached: cannot listen on %s: %s%s\n", url,
                nng_strerror(rv),
                form ? " (a URL is tcp://HOST:PORT, ipc:///PATH or "
                       "tls+tcp://HOST:PORT)"
                     : "");
        return rv;
    }
    if (strncmp(url, "tls+", 4) == 0) {
        nng_tls_config *tls = NULL;
        if (cert == NULL) {
            fprintf(stderr, "semcached: %s needs --tls-cert FILE\n", url);
            nng_listener_close(l);
            return NNG_EINVAL;
        }
        rv = nng_tls_config_alloc(&tls, NNG_TLS_MODE_SERVER);
        if (rv == 0) {
            rv = nng_tls_config_cert_key_file(tls, cert, NULL);
        }
        if (rv == 0) {
            rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, tls);
        }
        if (tls != NULL) {
            nng_tls_config_free(tls); /* the listener holds its own ref */
        }
        if (rv != 0) {
            fprintf(stderr, "semcached: TLS set-up for %s failed (%s): %s\n",
                    url, cert, nng_strerror(rv));
            nng_listener_close(l);
            return rv;
        }
    }
    /* TCP keep-alive probes find a client whose host went away without
     * closing (powered off, cut off): its pipe is closed then, rather than
     * held for the life of the process. A transport without TCP (ipc://)
     * refuses the option, which leaves its listener as it was. */
    (void)nng_listener_set_bool(l, NNG_OPT_TCP_KEEPALIVE, true);
    rv = nng_listener_start(l, 0);
    if (rv != 0) {
        fprintf(stderr, "semcached: cannot listen on %s: %s\n", url,
                nng_strerror(rv));
        nng_listener_close(l);
        return rv;
    }
    s->lst[s->nlst++] = l;
    fprintf(stderr, "semcached: listening on %s\n", url);
    return 0;
}

sc_err sc_server_open(const sc_server_config *cfg, sc_server **out)
{
    if (cfg == NULL || cfg->handler == NULL ||
        cfg->nlisten > SC_SERVER_MAX_LISTEN) {
        return SC_EINVAL;
    }
    sc_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return SC_ENOMEM;
    }
    s->handler = cfg->handler;
    s->handler_many = cfg->handler_many;
    s->handler_busy = cfg->handler_busy;
    s->handler_arg = cfg->handler_arg;
    unsigned nthreads = cfg->threads ? cfg->threads : DEFAULT_THREADS;
    size_t recv_max = cfg->recv_max ? cfg->recv_max : SC_SERVER_DEFAULT_RECVMAX;
    /* Requests nng holds for the workers beyond what the pipes hold: a
     * bound on memory too (each up to recv_max bytes). */
    int qlen = cfg->queue == 0     ? DEFAULT_QUEUE
               : cfg->queue > 8192 ? 8192
                                   : (int)cfg->queue;
    sc_err rc = SC_ENOMEM;
    s->cl = calloc(1, sizeof(*s->cl));
    if (s->cl == NULL) {
        goto fail_free;
    }
    s->cl->max =
        cfg->max_clients ? cfg->max_clients : SC_SERVER_DEFAULT_MAX_CLIENTS;
    s->cl->reply_timeout_ms = cfg->reply_timeout_ms
                                  ? cfg->reply_timeout_ms
                                  : SC_SERVER_REPLY_TIMEOUT_MS;
#ifdef SC_NNG_PATCHED
    if ((s->gate = gate_new()) == NULL) {
        goto fail_free;
    }
#endif
    rc = SC_EIO;
    if (nng_rep0_open_raw(&s->sock) != 0) {
        goto fail_free;
    }
    if (nng_pipe_notify(s->sock, NNG_PIPE_EV_ADD_PRE, pipe_event, s->cl) != 0 ||
        nng_pipe_notify(s->sock, NNG_PIPE_EV_REM_POST, pipe_event, s->cl) !=
            0) {
        goto fail_sock;
    }
    /* Debian's nng 1.5.2 accepts messages of any size unless told: a client
     * could otherwise make the server allocate whatever it claims. */
    if (nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, recv_max) != 0 ||
        nng_socket_set_int(s->sock, NNG_OPT_RECVBUF, qlen) != 0 ||
        nng_socket_set_int(s->sock, NNG_OPT_SENDBUF, qlen) != 0) {
        goto fail_sock;
    }
#ifdef SC_NNG_PATCHED
    /* nng keeps up to 64 replies for a client while it writes them, with
     * no time limit, and drops more: one that sends requests and reads
     * nothing would hold 64 of the largest replies (4 GiB) for as long as
     * it stays connected. The patched nng disconnects it past either
     * bound; with the bytes bounded, it queues up to reply_queue_len
     * replies rather than 64, and counts the replies dropped past that.
     * Many such clients together are bounded by the replies held for all
     * of them: past reply_total_max nng refuses a new one (see
     * worker_main). */
    if (nng_socket_set_size(s->sock, NNG_OPT_REP0_SENDQ_MAX,
                            cfg->reply_queue_max
                                ? cfg->reply_queue_max
                                : SC_SERVER_DEFAULT_REPLY_QUEUE_MAX) != 0 ||
        nng_socket_set_int(s->sock, NNG_OPT_REP0_SENDQ_LEN,
                           (int)(cfg->reply_queue_len
                                     ? cfg->reply_queue_len
                                     : SC_SERVER_DEFAULT_REPLY_QUEUE_LEN)) !=
            0 ||
        nng_socket_set_ms(s->sock, NNG_OPT_REP0_SEND_TIMEOUT,
                          (nng_duration)s->cl->reply_timeout_ms) != 0 ||
        nng_socket_set_size(s->sock, NNG_OPT_REP0_SEND_TOTAL_MAX,
                            cfg->reply_total_max
                                ? cfg->reply_total_max
                                : SC_SERVER_DEFAULT_REPLY_TOTAL_MAX) != 0) {
        goto fail_sock;
    }
#endif
    unsigned n = cfg->nlisten;
    for (unsigned i = 0; i < (n ? n : 1); i++) {
        const char *url = n ? cfg->listen[i] : SC_SERVER_DEFAULT_URL;
        if (start_listener(s, url, cfg->tls_cert) != 0) {
            goto fail_sock;
        }
    }
    rc = SC_ENOMEM;
    s->w = calloc(nthreads, sizeof(worker));
    if (s->w == NULL) {
        goto fail_sock;
    }
    s->wanted = nthreads;
    if (!cfg->start_later && (rc = sc_server_start(s)) != SC_OK) {
        stop(s, NULL, NULL);
        return rc;
    }
    *out = s;
    return SC_OK;

fail_sock:
    nng_close(s->sock);
fail_free:
    gate_close(s->gate);
    free(s->cl);
    free(s);
    return rc;
}

/* Debian 12's own nng 1.5.2 can hang in nng_close for ever: a pipe closed
 * while one of its transfers completes can leave the protocol's receive on
 * the transport's queue with nothing to finish it, and the socket waits
 * for the pipe (nng's reaper thread stays stuck in xrep0_pipe_stop). The
 * nng semcached links is patched for that and for a receive started while
 * the socket closes, which parked on the closed queue and was later
 * cancelled into freed memory (scripts/patches; test_dispatch's closes
 * under load found both). On the system library the close still runs on a
 * thread of its own and the server waits for it at most
 * SC_SERVER_CLOSE_WAIT_MS: the workers have left by then (the socket's
 * queues are closed before the pipes are waited for), so the server can be
 * freed; the stuck close keeps only the socket id. The patched nng's close
 * finishes, but can outlast the wait on a busy machine: its work passes
 * through several of nng's threads, each of which may wait for a CPU
 * (test_dispatch's TLS closes under AddressSanitizer, 2 cores at a load
 * of 20: closes of 0.3-0.7 s used 14-34 ms of CPU, their threads 0.7-1.8
 * s waiting to run). One left running says when it ends. */
typedef struct closer {
    nng_socket sock;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int left; /* the waiter gave up on it */
    int refs; /* the closer thread and the waiter */
    struct timespec began;
    void *own; /* the server's clients table: freed here once nng_close
                * returns, if left (its pipe_event may run until then) */
} closer;

static void closer_rele(closer *c)
{
    pthread_mutex_lock(&c->mu);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last) {
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        free(c);
    }
}

static void *closer_main(void *arg)
{
    closer *c = arg;
    nng_close(c->sock);
    pthread_mutex_lock(&c->mu);
    c->done = 1;
    int left = c->left;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (left) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long ms = (now.tv_sec - c->began.tv_sec) * 1000LL +
                       (now.tv_nsec - c->began.tv_nsec) / 1000000;
        fprintf(stderr,
                "semcached: the nng socket left running closed after all, "
                "%lld ms after its close began\n",
                ms);
        if (c->own != NULL) {
            free(c->own);
            __atomic_add_fetch(&sc_server_late_frees, 1, __ATOMIC_RELEASE);
        }
        __atomic_add_fetch(&sc_server_late_closes, 1, __ATOMIC_RELEASE);
    }
    closer_rele(c);
    return NULL;
}

static void deadline_in(struct timespec *ts, unsigned ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* 1 when the socket closed in time, 0 when the close was left running.
 * own (may be NULL) is what nng's callbacks may use until nng_close
 * returns: the caller frees it on 1; on 0 the close left running owns it
 * and frees it when nng_close returns. */
static int close_socket_bounded(nng_socket sock, unsigned wait_ms, void *own)
{
    closer *c = calloc(1, sizeof(*c));
    pthread_t t;
    if (c == NULL) {
        nng_close(sock); /* no memory for the bound: close unbounded */
        return 1;
    }
    c->sock = sock;
    c->own = own;
    c->refs = 2;
    clock_gettime(CLOCK_MONOTONIC, &c->began);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (pthread_create(&t, NULL, closer_main, c) != 0) {
        c->refs = 1;
        closer_main(c);
        return 1;
    }
    pthread_detach(t);
    struct timespec until;
    deadline_in(&until, wait_ms);
    pthread_mutex_lock(&c->mu);
    while (!c->done) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &until) != 0) {
            break; /* ETIMEDOUT */
        }
    }
    int done = c->done;
    c->left = !done;
    if (!done) {
        /* Counted before the closer can see left and count it late:
         * a reader of late, then stuck, never finds late ahead. */
        __atomic_add_fetch(&sc_server_stuck_closes, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&c->mu);
    closer_rele(c);
    return done;
}

/* Stops the workers, closes the socket and frees s; served and dropped
 * (either may be NULL) get the final counts, read once every worker is
 * joined. Each worker sees `closing` before its next receive; one waiting
 * in a receive has it cancelled, again and again until it is joined (a
 * worker that was just about to receive when cancelled is caught by the
 * next round). */
static void stop(sc_server *s, uint64_t *served, uint64_t *dropped)
{
    __atomic_store_n(&s->closing, 1, __ATOMIC_RELEASE);
    for (unsigned i = 0; i < s->nworkers; i++) {
        nng_aio_cancel(s->w[i].aio);
    }
    int closed = close_socket_bounded(s->sock, SC_SERVER_CLOSE_WAIT_MS, s->cl);
    if (closed) {
        free(s->cl);
    } else {
        /* s->cl is the close's now: it may still report pipes, and frees
         * it once nng_close returns. */
#ifdef SC_NNG_PATCHED
        fprintf(stderr,
                "semcached: the nng socket did not close within %u ms (on "
                "a busy machine nng's threads can wait that long for a "
                "CPU); going on without it\n",
                SC_SERVER_CLOSE_WAIT_MS);
#else
        fprintf(stderr,
                "semcached: the nng socket did not close within %u ms (a "
                "known hang of Debian's unpatched nng 1.5.2 when clients "
                "are mid-request); going on without it\n",
                SC_SERVER_CLOSE_WAIT_MS);
#endif
    }
    for (unsigned i = 0; i < s->nworkers; i++) {
        for (;;) {
            struct timespec until;
            deadline_in(&until, 50);
            if (pthread_timedjoin_np(s->w[i].tid, NULL, &until) == 0) {
                break;
            }
            nng_aio_cancel(s->w[i].aio);
        }
        nng_aio_free(s->w[i].aio);
    }
    /* Undos of replies nng frees from here on (a close left running) only
     * free their memory: the caller may close the cache they take back
     * from once this returns. After the workers: none attaches more. */
    gate_close(s->gate);
    if (served != NULL) {
        *served = __atomic_load_n(&s->served, __ATOMIC_RELAXED);
    }
    if (dropped != NULL) {
        *dropped = __atomic_load_n(&s->dropped, __ATOMIC_RELAXED);
    }
    free(s->w);
    free(s);
}

sc_err sc_server_start(sc_server *s)
{
    for (; s->nworkers < s->wanted; s->nworkers++) {
        worker *w = &s->w[s->nworkers];
        w->s = s;
        if (nng_aio_alloc(&w->aio, NULL, NULL) != 0) {
            return SC_ENOMEM;
        }
        if (pthread_create(&w->tid, NULL, worker_main, w) != 0) {
            nng_aio_free(w->aio);
            return SC_ENOMEM;
        }
    }
    return SC_OK;
}

void sc_server_close(sc_server *s)
{
    if (s != NULL) {
        stop(s, NULL, NULL);
    }
}

void sc_server_close_counts(sc_server *s, uint64_t *served, uint64_t *dropped)
{
    *served = *dropped = 0;
    if (s == NULL) {
        return;
    }
    stop(s, served, dropped);
}

void sc_server_counts(sc_server *s, uint64_t *served, uint64_t *dropped)
{
    *served = __atomic_load_n(&s->served, __ATOMIC_RELAXED);
    *dropped = __atomic_load_n(&s->dropped, __ATOMIC_RELAXED);
}

void sc_server_clients(sc_server *s, uint64_t *connected, uint64_t *refused)
{
    *connected = __atomic_load_n(&s->cl->connected, __ATOMIC_RELAXED);
    *refused = __atomic_load_n(&s->cl->refused, __ATOMIC_RELAXED);
}

void sc_server_slow_clients(sc_server *s, uint64_t *over, uint64_t *stalled)
{
    slow_clients(s->sock, over, stalled);
}

uint64_t sc_server_replies_dropped(sc_server *s)
{
    uint64_t n = 0;
#ifdef SC_NNG_PATCHED
    (void)nng_socket_get_uint64(s->sock, NNG_OPT_REP0_SENDQ_DROPPED, &n);
#else
    (void)s;
#endif
    return n;
}

void sc_server_busy(sc_server *s, uint64_t *answered, uint64_t *dropped,
                    uint64_t *held)
{
    *answered = __atomic_load_n(&s->busy_answered, __ATOMIC_RELAXED);
    *dropped = __atomic_load_n(&s->busy_dropped, __ATOMIC_RELAXED);
    *held = 0;
#ifdef SC_NNG_PATCHED
    (void)nng_socket_get_uint64(s->sock, NNG_OPT_REP0_SEND_TOTAL, held);
#endif
}
