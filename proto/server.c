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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_THREADS 16
#define DEFAULT_QUEUE   SC_SERVER_MAX_BATCH

struct sc_server {
    nng_socket sock;
    nng_listener lst[SC_SERVER_MAX_LISTEN];
    unsigned nlst;
    pthread_t *tids;
    unsigned nworkers; /* started */
    sc_server_handler handler;
    sc_server_batch_handler handler_many;
    void *handler_arg;
    uint64_t served;
    uint64_t dropped;
    int closing; /* set (atomically) by sc_server_close */
};

static void count(uint64_t *n)
{
    __atomic_add_fetch(n, 1, __ATOMIC_RELAXED);
}

static void *worker_main(void *arg)
{
    sc_server *s = arg;
    nng_msg *batch[SC_SERVER_MAX_BATCH];
    sc_server_msg msgs[SC_SERVER_MAX_BATCH];
    for (;;) {
        int rv = nng_recvmsg(s->sock, &batch[0], 0);
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
            msgs[i] = (sc_server_msg){nng_msg_body(batch[i]),
                                      nng_msg_len(batch[i]), NULL, 0, 0};
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
            /* Reuse the request message: its header holds the routing
             * back (the socket is raw, so the header is ours to keep). */
            if (msgs[i].rc == 0 && msgs[i].reply != NULL) {
                nng_msg_clear(m);
                if (nng_msg_append(m, msgs[i].reply, msgs[i].reply_len) == 0 &&
                    nng_sendmsg(s->sock, m, 0) == 0) {
                    m = NULL;
                    count(&s->served);
                }
            }
            if (m != NULL) {
                nng_msg_free(m);
                count(&s->dropped);
            }
            free(msgs[i].reply);
        }
    }
    return NULL;
}

static int start_listener(sc_server *s, const char *url, const char *cert)
{
    nng_listener l;
    int rv = nng_listener_create(&l, s->sock, url);
    if (rv != 0) {
        fprintf(stderr, "semcached: cannot listen on %s: %s\n", url,
                nng_strerror(rv));
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
    s->handler_arg = cfg->handler_arg;
    unsigned nthreads = cfg->threads ? cfg->threads : DEFAULT_THREADS;
    size_t recv_max = cfg->recv_max ? cfg->recv_max : SC_SERVER_DEFAULT_RECVMAX;
    /* Requests nng holds for the workers beyond what the pipes hold: a
     * bound on memory too (each up to recv_max bytes). */
    int qlen = cfg->queue == 0     ? DEFAULT_QUEUE
               : cfg->queue > 8192 ? 8192
                                   : (int)cfg->queue;
    sc_err rc = SC_EIO;
    if (nng_rep0_open_raw(&s->sock) != 0) {
        goto fail_free;
    }
    /* Debian's nng 1.5.2 accepts messages of any size unless told: a client
     * could otherwise make the server allocate whatever it claims. */
    if (nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, recv_max) != 0 ||
        nng_socket_set_int(s->sock, NNG_OPT_RECVBUF, qlen) != 0 ||
        nng_socket_set_int(s->sock, NNG_OPT_SENDBUF, qlen) != 0) {
        goto fail_sock;
    }
    unsigned n = cfg->nlisten;
    for (unsigned i = 0; i < (n ? n : 1); i++) {
        const char *url = n ? cfg->listen[i] : SC_SERVER_DEFAULT_URL;
        if (start_listener(s, url, cfg->tls_cert) != 0) {
            goto fail_sock;
        }
    }
    rc = SC_ENOMEM;
    s->tids = calloc(nthreads, sizeof(pthread_t));
    if (s->tids == NULL) {
        goto fail_sock;
    }
    for (; s->nworkers < nthreads; s->nworkers++) {
        if (pthread_create(&s->tids[s->nworkers], NULL, worker_main, s) != 0) {
            goto fail_workers;
        }
    }
    *out = s;
    return SC_OK;

fail_workers:
    nng_close(s->sock);
    for (unsigned i = 0; i < s->nworkers; i++) {
        pthread_join(s->tids[i], NULL);
    }
    free(s->tids);
    free(s);
    return rc;
fail_sock:
    nng_close(s->sock);
fail_free:
    free(s);
    return rc;
}

void sc_server_close(sc_server *s)
{
    if (s == NULL) {
        return;
    }
    /* Closing the socket fails every pending receive with NNG_ECLOSED;
     * workers finish the batch in hand (its sends fail) and leave. */
    __atomic_store_n(&s->closing, 1, __ATOMIC_RELEASE);
    nng_close(s->sock);
    for (unsigned i = 0; i < s->nworkers; i++) {
        pthread_join(s->tids[i], NULL);
    }
    free(s->tids);
    free(s);
}

void sc_server_counts(sc_server *s, uint64_t *served, uint64_t *dropped)
{
    *served = __atomic_load_n(&s->served, __ATOMIC_RELAXED);
    *dropped = __atomic_load_n(&s->dropped, __ATOMIC_RELAXED);
}
