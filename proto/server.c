/* server.c - nng REP socket, listeners and worker pool (see server.h).
 * Each worker owns one nng context and one aio and uses them
 * synchronously: no work runs inside nng's callbacks, and a slow request
 * holds up only its own worker. */
#define _GNU_SOURCE
#include "proto/server.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/tls/tls.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct worker {
    struct sc_server *srv;
    nng_ctx ctx;
    nng_aio *aio;
    pthread_t tid;
    int started;
} worker;

struct sc_server {
    nng_socket sock;
    nng_listener lst[SC_SERVER_MAX_LISTEN];
    unsigned nlst;
    worker *workers;
    unsigned nworkers;
    sc_server_handler handler;
    void *handler_arg;
    uint64_t served;
    uint64_t dropped;
};

static void *worker_main(void *arg)
{
    worker *w = arg;
    sc_server *s = w->srv;
    for (;;) {
        nng_ctx_recv(w->ctx, w->aio);
        nng_aio_wait(w->aio);
        int rv = nng_aio_result(w->aio);
        if (rv == NNG_ECLOSED) {
            break;
        }
        if (rv != 0) {
            /* A receive that failed (a message over the size cap, a pipe
             * that went away) is one client's problem: keep serving. */
            __atomic_add_fetch(&s->dropped, 1, __ATOMIC_RELAXED);
            continue;
        }
        nng_msg *msg = nng_aio_get_msg(w->aio);
        uint8_t *reply = NULL;
        size_t reply_len = 0;
        int hr = s->handler(s->handler_arg, nng_msg_body(msg), nng_msg_len(msg),
                            &reply, &reply_len);
        if (hr != 0 || reply == NULL) {
            nng_msg_free(msg);
            free(reply);
            __atomic_add_fetch(&s->dropped, 1, __ATOMIC_RELAXED);
            continue;
        }
        /* Reuse the request message: its header holds the routing back. */
        nng_msg_clear(msg);
        if (nng_msg_append(msg, reply, reply_len) != 0) {
            nng_msg_free(msg);
            free(reply);
            __atomic_add_fetch(&s->dropped, 1, __ATOMIC_RELAXED);
            continue;
        }
        free(reply);
        nng_aio_set_msg(w->aio, msg);
        nng_ctx_send(w->ctx, w->aio);
        nng_aio_wait(w->aio);
        if (nng_aio_result(w->aio) != 0) {
            nng_msg_free(nng_aio_get_msg(w->aio));
            if (nng_aio_result(w->aio) == NNG_ECLOSED) {
                break;
            }
            __atomic_add_fetch(&s->dropped, 1, __ATOMIC_RELAXED);
            continue;
        }
        __atomic_add_fetch(&s->served, 1, __ATOMIC_RELAXED);
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
    s->handler_arg = cfg->handler_arg;
    s->nworkers = cfg->threads ? cfg->threads : 16;
    size_t recv_max = cfg->recv_max ? cfg->recv_max : SC_SERVER_DEFAULT_RECVMAX;
    sc_err rc = SC_EIO;
    if (nng_rep0_open(&s->sock) != 0) {
        goto fail_free;
    }
    /* Debian's nng 1.5.2 accepts messages of any size unless told: a client
     * could otherwise make the server allocate whatever it claims. */
    if (nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, recv_max) != 0) {
        goto fail_sock;
    }
    unsigned n = cfg->nlisten;
    for (unsigned i = 0; i < (n ? n : 1); i++) {
        const char *url = n ? cfg->listen[i] : SC_SERVER_DEFAULT_URL;
        if (start_listener(s, url, cfg->tls_cert) != 0) {
            goto fail_sock;
        }
    }
    s->workers = calloc(s->nworkers, sizeof(worker));
    if (s->workers == NULL) {
        rc = SC_ENOMEM;
        goto fail_sock;
    }
    for (unsigned i = 0; i < s->nworkers; i++) {
        worker *w = &s->workers[i];
        w->srv = s;
        if (nng_aio_alloc(&w->aio, NULL, NULL) != 0 ||
            nng_ctx_open(&w->ctx, s->sock) != 0 ||
            pthread_create(&w->tid, NULL, worker_main, w) != 0) {
            rc = SC_ENOMEM;
            goto fail_workers;
        }
        w->started = 1;
    }
    *out = s;
    return SC_OK;

fail_workers:
    nng_close(s->sock);
    for (unsigned i = 0; i < s->nworkers; i++) {
        if (s->workers[i].started) {
            pthread_join(s->workers[i].tid, NULL);
        }
        if (s->workers[i].aio != NULL) {
            nng_aio_free(s->workers[i].aio);
        }
    }
    free(s->workers);
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
    /* Closing the socket fails every pending receive with NNG_ECLOSED. */
    nng_close(s->sock);
    for (unsigned i = 0; i < s->nworkers; i++) {
        pthread_join(s->workers[i].tid, NULL);
        nng_aio_free(s->workers[i].aio);
    }
    free(s->workers);
    free(s);
}

void sc_server_counts(sc_server *s, uint64_t *served, uint64_t *dropped)
{
    *served = __atomic_load_n(&s->served, __ATOMIC_RELAXED);
    *dropped = __atomic_load_n(&s->dropped, __ATOMIC_RELAXED);
}
