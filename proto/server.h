/* server.h - the nng REQ/REP front of semcached: listeners, a pool of nng
 * contexts served by a few worker threads, and the receive-size cap.
 * What a request means is not its business: each message goes to a
 * handler, whose reply goes back to the same context. */
#ifndef SC_SERVER_H
#define SC_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/sc_error.h"

#define SC_SERVER_MAX_LISTEN      8
#define SC_SERVER_DEFAULT_URL     "tcp://127.0.0.1:7700"
#define SC_SERVER_DEFAULT_RECVMAX (4u << 20)
/* nng clients connected at once (over every listener): each holds a
 * descriptor. One past it is disconnected as soon as its handshake is
 * done, and its nng dialer tries again later. */
#define SC_SERVER_DEFAULT_MAX_CLIENTS 10000u
/* Bytes of replies one nng client may leave unread (queued, or being
 * written into its socket): a reply past it disconnects the client. Twice
 * the largest reply (a 64 MiB response, or a lookup_batch's 64 MiB of
 * hits), so that a client reading as it should is never cut off by one big
 * reply; a reply is always taken when the client holds none. */
#define SC_SERVER_DEFAULT_REPLY_QUEUE_MAX ((size_t)128 << 20)
/* Replies nng may queue for one client (waiting to be written); past it a
 * reply is dropped and counted (sc_server_replies_dropped), the client
 * kept. Stock nng's 64 dropped the replies of a client with more requests
 * in flight, however small they were; the bytes are capped above, so the
 * count can be deeper. A client's queue starts at 64 and doubles up to
 * this as its replies wait: a list of 8 bytes a reply (8 KiB at 1024),
 * kept by a connection that got there until it closes. Each queued reply
 * also holds nng's message and a buffer of up to twice its length plus
 * 4 KiB (a reply much shorter than its request's buffer is copied into
 * one of its own), both counted against reply_queue_max and
 * reply_total_max (the patched nng counts a reply's buffer, and 128
 * bytes for its message, not its length): 1024 short replies hold about
 * 0.2 to 4.2 MiB. */
#define SC_SERVER_DEFAULT_REPLY_QUEUE_LEN 1024u
/* Bytes of replies the server may hold for all nng clients together
 * (handed to nng and not yet written): a reply past it is refused, the
 * request answered with a short error reply if that fits (handler_busy),
 * else dropped. Twice reply_queue_max's default: a few slow readers cannot
 * make the server hold more, whatever their number. A reply is always
 * taken when none is held. */
#define SC_SERVER_DEFAULT_REPLY_TOTAL_MAX ((size_t)256 << 20)
/* The longest the write of one reply may take (from its start); past it
 * the client is disconnected. As the HTTP front's write time-out. */
#define SC_SERVER_REPLY_TIMEOUT_MS 30000u

/* Writes the reply to `req` (len bytes, borrowed for the call) into *reply,
 * a malloc'd buffer the server frees; *reply_len its size. Returns 0, or
 * non-zero to drop the request without a reply (the server counts it). */
typedef int (*sc_server_handler)(void *arg, const uint8_t *req, size_t len,
                                 uint8_t **reply, size_t *reply_len);

/* What a reply carries that its handler counted as served before the
 * reply went out (a lookup's hits, in the cost ledger), to be taken back
 * if it does not go out. The handler's, embedded first in a struct of its
 * own. done(u, sent) is called once, and frees u; false when the reply
 * was dropped (no reply, or nng could not take it: out of memory, the
 * socket closing). With the patched nng (SC_NNG_PATCHED) nng holds u with
 * the reply and calls done when it frees it, on one of its own threads,
 * possibly under its locks (done must not block, nor call nng): sent when
 * a transport wrote the reply whole, false when nng dropped it (past
 * --reply-queue-len) or its connection or the socket closed first; once
 * sc_server_close has returned, sent is true whatever became of it (done
 * must then touch nothing but u). With the system's nng, done is called
 * once the reply is handed to nng, sent true: nng may still drop it, and
 * says nothing per reply (docs/PROTOCOL.md 1.3). */
typedef struct sc_server_undo {
    void (*done)(struct sc_server_undo *u, bool sent);
    /* The bytes u holds, all told (allocator overhead included, roughly):
     * with the patched nng they are counted with the reply against
     * --reply-queue-max and --reply-total-max (and in
     * semcache_nng_reply_bytes) while nng holds it. Fixed once set. */
    size_t held;
    void *server_; /* the server's, while nng holds the reply */
} sc_server_undo;

/* One request of a batch: req/len in (borrowed for the call), reply,
 * reply_len and rc out, as for sc_server_handler; undo out (NULL: none),
 * finished by whoever sends the reply (the server: after the send). */
typedef struct sc_server_msg {
    const uint8_t *req;
    size_t len;
    uint8_t *reply;
    size_t reply_len;
    int rc;
    sc_server_undo *undo;
} sc_server_msg;

/* Optional: handles the n requests a worker found waiting, at once (so that
 * lookups among them can share one index scan). Must fill every msgs[i] as
 * the single handler would; replies go back in any order. */
typedef void (*sc_server_batch_handler)(void *arg, sc_server_msg *msgs,
                                        size_t n);

#define SC_SERVER_MAX_BATCH 64 /* most requests one worker takes at once */

typedef struct sc_server_config {
    const char *listen[SC_SERVER_MAX_LISTEN]; /* URLs; none = the default */
    unsigned nlisten;
    /* Worker threads = batches handled at once; 0 = 16. A worker takes
     * every request waiting (up to SC_SERVER_MAX_BATCH) each time it
     * wakes, so a busy server handles requests in batches; workers beyond
     * the CPUs mostly make the batches smaller. */
    unsigned threads;
    unsigned queue;       /* requests waiting for a worker, 1..8192;
                             0 = SC_SERVER_MAX_BATCH */
    size_t recv_max;      /* bytes; 0 = SC_SERVER_DEFAULT_RECVMAX */
    const char *tls_cert; /* PEM file with certificate and key, for tls+tcp */
    unsigned max_clients; /* 0 = SC_SERVER_DEFAULT_MAX_CLIENTS */
    /* These need the patched nng (SC_NNG_PATCHED); the system's keeps up
     * to 64 replies a client, however large, with no time limit. */
    size_t reply_queue_max;    /* 0 = SC_SERVER_DEFAULT_REPLY_QUEUE_MAX */
    unsigned reply_queue_len;  /* 64..2^20; 0 = ..._DEFAULT_REPLY_QUEUE_LEN */
    unsigned reply_timeout_ms; /* 0 = SC_SERVER_REPLY_TIMEOUT_MS */
    size_t reply_total_max;    /* 0 = SC_SERVER_DEFAULT_REPLY_TOTAL_MAX */
    sc_server_handler handler;
    sc_server_batch_handler handler_many; /* NULL = handler, one by one */
    /* Optional: a reply refused for reply_total_max is passed as req (its
     * bytes, borrowed for the call), and the short reply written into
     * *reply (malloc'd, the server frees it) goes in its place, if it fits
     * under the bound; non-zero, or NULL here: the request goes unanswered.
     * Either way the refused reply's undo is done with sent false. */
    sc_server_handler handler_busy;
    void *handler_arg;
    /* true: sc_server_open listens but starts no worker, and nothing is
     * answered until sc_server_start: clients connect, and their requests
     * wait in nng, meanwhile. So a caller with other fronts to open (the
     * HTTP one) opens them in between, and a client that saw an nng reply
     * finds every front open. false: sc_server_open starts them. */
    bool start_later;
} sc_server_config;

typedef struct sc_server sc_server;

/* Opens the socket, listens on every URL and starts the workers (with
 * cfg->start_later, not yet: sc_server_start does). Errors: SC_EINVAL (bad
 * URL or config), SC_EIO (listen failed: the message went to stderr),
 * SC_ENOMEM. On failure nothing is left running. */
sc_err sc_server_open(const sc_server_config *cfg, sc_server **out);

/* Starts the workers of a server opened with start_later: from here on
 * requests are answered, those that waited first. A no-op once started.
 * SC_ENOMEM when a thread cannot start (those started serve; the caller
 * closes the server). */
sc_err sc_server_start(sc_server *s);

/* Closes the socket, lets the workers finish their current request, joins
 * them and frees the server. The socket's close is waited for at most
 * SC_SERVER_CLOSE_WAIT_MS (Debian's unpatched nng 1.5.2 can hang there,
 * see server.c); one left running is said on stderr and counted in
 * sc_server_stuck_closes, and once it finishes, in sc_server_late_closes
 * too (and in sc_server_late_frees once it has freed what the server left
 * to it). With the patched nng every close finishes, but on a busy machine
 * it can take longer than the wait: its work is done by several of nng's
 * threads in turn, each of which may wait for a CPU. */
void sc_server_close(sc_server *s);

/* sc_server_close, then the final counts (as sc_server_counts): those of
 * every request a worker took before the close, its reply sent or
 * dropped. A NULL s is a no-op that sets both to 0. */
void sc_server_close_counts(sc_server *s, uint64_t *served, uint64_t *dropped);

#ifndef SC_SERVER_CLOSE_WAIT_MS
#define SC_SERVER_CLOSE_WAIT_MS 2000u
#endif
/* A close is counted stuck before it can be counted late: read late
 * first, then stuck, and stuck is never the smaller. */
extern unsigned sc_server_stuck_closes; /* left running; read atomically */
extern unsigned sc_server_late_closes;  /* of those, finished since; ditto */
/* Of those, the ones that freed the server's clients table when they
 * finished (the closed server leaves it to them); ditto. */
extern unsigned sc_server_late_frees;

/* Requests served and dropped since open. A reply is counted served
 * before it is handed to nng (and taken back if nng refuses it), so a
 * reply a client has read is always in the count. */
void sc_server_counts(sc_server *s, uint64_t *served, uint64_t *dropped);

/* nng clients connected now (refused ones included until they are gone),
 * and those refused since open for being past max_clients. */
void sc_server_clients(sc_server *s, uint64_t *connected, uint64_t *refused);

/* nng clients disconnected since open for leaving their replies unread:
 * past reply_queue_max (*over), or a reply not written within the reply
 * time-out (*stalled). Both 0 on the system's nng, which has no such
 * bound. */
void sc_server_slow_clients(sc_server *s, uint64_t *over, uint64_t *stalled);

/* Replies nng dropped since open because their connection already had
 * reply_queue_len waiting to be written (the client sent more than it
 * read, or a stall ended in a burst). The connection stays open; the
 * client's calls for them time out. 0 on the system's nng, which drops
 * them past 64, uncounted. */
uint64_t sc_server_replies_dropped(sc_server *s);

/* Replies refused since open for reply_total_max: answered with
 * handler_busy's short reply (*answered) or not at all (*dropped, counted
 * in sc_server_counts' dropped too); and the bytes the replies nng holds
 * now take, over every client (*held: each reply's buffer capacity + 128
 * for its message, as reply_total_max counts them). All 0 on the system's
 * nng, which has no such bound. */
void sc_server_busy(sc_server *s, uint64_t *answered, uint64_t *dropped,
                    uint64_t *held);

/* For tests: fail(arg) is asked, from any worker, before each reply is
 * handed to nng; true drops the reply as nng's out of memory would (NULL:
 * none). */
void sc_server_set_send_hook(bool (*fail)(void *arg), void *arg);

/* For tests: fail(arg) is asked before a short reply to a big request is
 * copied into a message of its own; true fails that message's allocation
 * as nng's out of memory would (the reply then goes in the request's
 * message). NULL: none. */
void sc_server_set_copy_hook(bool (*fail)(void *arg), void *arg);

#endif
