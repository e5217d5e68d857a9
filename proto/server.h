/* server.h - the nng REQ/REP front of semcached: listeners, a pool of
 * worker threads (one nng context each), and the receive-size cap.
 * What a request means is not its business: each message goes to a
 * handler, whose reply goes back to the same context. */
#ifndef SC_SERVER_H
#define SC_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "common/sc_error.h"

#define SC_SERVER_MAX_LISTEN      8
#define SC_SERVER_DEFAULT_URL     "tcp://127.0.0.1:7700"
#define SC_SERVER_DEFAULT_RECVMAX (4u << 20)

/* Writes the reply to `req` (len bytes, borrowed for the call) into *reply,
 * a malloc'd buffer the server frees; *reply_len its size. Returns 0, or
 * non-zero to drop the request without a reply (the server counts it). */
typedef int (*sc_server_handler)(void *arg, const uint8_t *req, size_t len,
                                 uint8_t **reply, size_t *reply_len);

typedef struct sc_server_config {
    const char *listen[SC_SERVER_MAX_LISTEN]; /* URLs; none = the default */
    unsigned nlisten;
    unsigned threads;     /* workers = requests served at once; 0 = 16 */
    size_t recv_max;      /* bytes; 0 = SC_SERVER_DEFAULT_RECVMAX */
    const char *tls_cert; /* PEM file with certificate and key, for tls+tcp */
    sc_server_handler handler;
    void *handler_arg;
} sc_server_config;

typedef struct sc_server sc_server;

/* Opens the socket, listens on every URL and starts the workers. Errors:
 * SC_EINVAL (bad URL or config), SC_EIO (listen failed: the message went to
 * stderr), SC_ENOMEM. On failure nothing is left running. */
sc_err sc_server_open(const sc_server_config *cfg, sc_server **out);

/* Closes the socket, lets the workers finish their current request, joins
 * them and frees the server. */
void sc_server_close(sc_server *s);

/* Requests served and dropped since open. */
void sc_server_counts(sc_server *s, uint64_t *served, uint64_t *dropped);

#endif
