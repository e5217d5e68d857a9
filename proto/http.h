/* http.h - the HTTP front of semcached (docs/HTTP.md), on nng's HTTP server:
 * GET /healthz, /metrics (Prometheus text), /report (JSON), and POST /v1/<op>
 * taking and returning JSON. A JSON body is parsed with libjansson and
 * translated into the msgpack request of docs/PROTOCOL.md, which goes
 * through the one request decoder there is (sc_dispatch_handle); its reply
 * is translated back. Nothing here validates a field the dispatcher checks. */
#ifndef SC_HTTP_H
#define SC_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>

#include "cache/cache.h"
#include "common/sc_error.h"
#include "proto/dispatch.h"
#include "proto/metrics.h"

#define SC_HTTP_DEFAULT_BODY_MAX (4u << 20)
/* The most JSON objects and arrays, together, a request body may hold;
 * one more is 413 too_big, refused before the body is parsed. A valid
 * request holds 2 plus 2 per batch item (the item and its "vec"), at
 * most 2050; this leaves room for fields the server ignores. jansson
 * spends about 200 bytes on each object and 100 on each array, 70 and 40
 * times their text ("{},"): without the cap a 4 MiB body of them held
 * 300 MB for its parse, on each worker at once (docs/HTTP.md 1.1). */
#define SC_HTTP_MAX_CONTAINERS 16384u
/* What jansson may hold while it parses a request body of n bytes; one
 * allocation more is 413 too_big ("parsing the body needs more than
 * ..."), never out of memory. A value costs jansson its 16 to 24 bytes
 * and a slot in its array or object: real numbers ("0.0123") and words
 * 1.5 to 8 times their text, a one-digit number 16 times, an empty
 * string 25 times, so that a 4 MiB body of "", held 106 MB for its parse,
 * on each worker at once (docs/HTTP.md 1.1). The 4 MiB cover what the
 * container cap lets through (16384 objects of about 200 bytes). */
#define SC_HTTP_PARSE_FACTOR 8u
#define SC_HTTP_PARSE_FLOOR  ((size_t)4 << 20)
#define SC_HTTP_PARSE_BUDGET(n)                                                \
    ((size_t)SC_HTTP_PARSE_FACTOR * (n) + SC_HTTP_PARSE_FLOOR)
/* A request body must arrive within this long of its headers. */
#define SC_HTTP_BODY_TIMEOUT_MS 10000
/* A request's head must arrive within this long of the connection or of
 * the previous response, or the connection is closed: an idle keep-alive
 * connection too (with the patched nng only: Debian's own has no such
 * limit; README; semcached's --http-read-timeout). */
#define SC_HTTP_DEFAULT_READ_TIMEOUT_MS 30000
/* A response must be written within this long of its first byte, or the
 * connection is closed: a client that stops reading a big answer holds
 * neither its connection nor the answer's memory longer (patched nng
 * only; semcached's --http-write-timeout). */
#define SC_HTTP_DEFAULT_WRITE_TIMEOUT_MS 30000
/* How long a stop waits for the answers handlers have given back, or are
 * giving, to be written before it closes their connections too (patched
 * nng only: Debian's own cuts them at once). Long enough for an answer a
 * client is reading to reach it (seconds for the largest at LAN speeds),
 * short enough that a client that stopped reading holds a SIGTERM stop
 * for 2 s, not for the whole write time-out (30 s by default), well
 * within the 10 s a container runtime gives before SIGKILL. */
#define SC_HTTP_STOP_GRACE_MS 2000
/* At most this many HTTP connections are held open at once: one accepted
 * at the cap closes the one that has waited longest for a request head, or
 * itself when all are busy with a request (patched nng only). */
#define SC_HTTP_DEFAULT_MAX_CONNS 1024
/* Requests (POST /v1/<op>, GET /report) run on the front's own threads,
 * not on nng's, which the nng socket's clients need (docs/HTTP.md
 * section 5); at most SC_HTTP_DEFAULT_QUEUE wait for one, and one more is
 * answered 503 busy. */
#define SC_HTTP_DEFAULT_WORKERS 4
#define SC_HTTP_MAX_WORKERS     1024
#define SC_HTTP_DEFAULT_QUEUE   256
#define SC_HTTP_MAX_QUEUE       65536

/* Writes text to out (an in-memory stream; what is written goes on the
 * page as it is). Called from nng's threads (/metrics) or the front's
 * workers (/report), possibly several at once. A
 * return other than SC_OK makes the request answer 500. */
typedef sc_err (*sc_http_write_fn)(void *arg, FILE *out);

/* Writes the body of GET /report; query is the URL's query string, as
 * sent ("" = none: sc_http_query_get reads it). SC_OK answers 200 with
 * what was written; SC_EINVAL answers 400 with it (the hook writes the
 * error's JSON); any other code answers 500. */
typedef sc_err (*sc_http_report_fn)(void *arg, const char *query, FILE *out);

/* The value of parameter name in query ("a=1&b=x%20y"), percent-decoded
 * ('+' is a space) into out[cap]. Returns 1 when found, 0 when absent, -1
 * when its value is not valid percent-encoding, holds a NUL byte or does
 * not fit in cap. The first of a repeated name wins. */
int sc_http_query_get(const char *query, const char *name, char *out,
                      size_t cap);

/* Writes j as every JSON body of the front is written (compact, 15
 * significant digits, a final newline): for report_hook. SC_EIO. */
struct json_t;
sc_err sc_http_write_json(FILE *out, const struct json_t *j);

/* The msgpack value buf[0..len) (a reply) as the front answers it in
 * JSON: a str or bin value that is not UTF-8 is a map's "<key>_base64"
 * (base64 of its bytes), or in an array the base64 in its place. NULL
 * when malformed or out of memory: for report_hook. */
struct json_t *sc_http_msgpack_json(const uint8_t *buf, size_t len);

/* json_dumps(j, flags) that is whole or nothing: the text (made by
 * jansson's allocator, which is semcached's malloc and free: the caller
 * frees it with free()), or NULL when j is
 * NULL or any part of the text ran out of memory. jansson's own writers go
 * on past an object's key they could not write (its return is not
 * checked), so that json_dumps can hand out a text missing a key, the
 * writes after it having fit. Every JSON text semcached sends, hashes or
 * stores is made by this. */
char *sc_http_json_dumps(const struct json_t *j, size_t flags);

/* Installs, once, the allocator jansson uses in the process (malloc and
 * free, each failure noted for sc_http_json_loadb). sc_http_open and
 * sc_proxy_open call it, before their threads start; nothing else may set
 * jansson's allocator (json_set_alloc_funcs) after it. */
void sc_http_json_init(void);

/* Whether the JSON text b[0..n) opens more than cap objects and arrays,
 * counting the brackets outside strings (escapes honoured), so that a
 * parse's cost stays near that of its numbers and strings: jansson takes
 * about 200 bytes for each object and 100 for each array, 70 and 40
 * times their text ("{},"). Text that is not JSON is counted as it comes
 * (the parse refuses it after). The HTTP front caps its bodies at
 * SC_HTTP_MAX_CONTAINERS, the proxy's by their size (docs/PROXY.md). */
bool sc_http_json_containers_over(const char *b, size_t n, size_t cap);

/* json_loadb(buf, n, flags, err) that tells running out of memory from bad
 * input: the value (the caller's), or NULL with *oom set when any of
 * jansson's allocations failed in the parse or jansson said so, else NULL
 * with *oom false: the text is not JSON (err, when not NULL, says where).
 * jansson reports some of a parse's out of memory as malformed JSON
 * ("invalid token near ...", line -1), and a token whose buffer could not
 * grow comes out a byte short of a successful parse (its lexer does not
 * check the growth): both are out of memory here, never bad input or a
 * value. Every JSON text semcached reads off the network or the cache is
 * parsed by this. */
struct json_error_t;
struct json_t *sc_http_json_loadb(const char *buf, size_t n, size_t flags,
                                  struct json_error_t *err, bool *oom);

/* sc_http_json_loadb whose parse may hold at most budget bytes of
 * jansson's allocations at once (malloc_usable_size of each as glibc's
 * malloc gives it, less what the parse freed; 0 = no limit): past it, NULL with
 * *over set and *oom not, whatever jansson said. *over is false otherwise. The
 * budget is the calling thread's, for this call only. */
struct json_t *sc_http_json_loadb_max(const char *buf, size_t n, size_t flags,
                                      size_t budget, struct json_error_t *err,
                                      bool *oom, bool *over);

/* For tests: fail(arg, len) is asked before each of jansson's allocations
 * (of len bytes), on any thread; true fails it as malloc's out of memory
 * would, noted as one (NULL: none). */
void sc_http_set_json_alloc_hook(bool (*fail)(void *arg, size_t len),
                                 void *arg);

/* json_object_set_new(o, key, v) for a JSON value built in steps: v is
 * o's, or freed, in every case. The first failure (o or v NULL, out of
 * memory) sets *failed, and every set after it is refused (v freed), so
 * the builder checks *failed once, at the end, and takes its out-of-memory
 * path: a value missing a member is never used as if whole. Returns
 * !*failed. */
bool sc_http_json_set(struct json_t *o, const char *key, struct json_t *v,
                      bool *failed);

typedef struct sc_http_config {
    /* "HOST:PORT" ("127.0.0.1:8080", "[::1]:8080") or "http://HOST:PORT";
     * borrowed for sc_http_open. Port 0 is refused. */
    const char *addr;
    sc_dispatch *dispatch; /* borrowed; must outlive the sc_http */
    sc_cache *cache;       /* borrowed, the dispatcher's; must outlive it */
    size_t body_max;       /* largest POST body; 0 = SC_HTTP_DEFAULT_BODY_MAX */
    /* How long a request's head may take, from the connection or the
     * previous response (so also how long a keep-alive connection may
     * stay idle); past it the connection is closed, with no answer. 0 =
     * SC_HTTP_DEFAULT_READ_TIMEOUT_MS. */
    unsigned read_timeout_ms;
    /* How long the write of a response may take, from its first byte;
     * past it the connection is closed. 0 =
     * SC_HTTP_DEFAULT_WRITE_TIMEOUT_MS. */
    unsigned write_timeout_ms;
    /* How long the stop (sc_http_close) waits for the answers under way
     * to be written before it closes their connections too; 0 =
     * SC_HTTP_STOP_GRACE_MS. */
    unsigned stop_grace_ms;
    /* Connections held open at once, those of the proxy on the same
     * address included; 0 = SC_HTTP_DEFAULT_MAX_CONNS. */
    unsigned max_conns;
    /* Threads that run requests; 0 = SC_HTTP_DEFAULT_WORKERS, at most
     * SC_HTTP_MAX_WORKERS. */
    unsigned workers;
    /* Requests that may wait for one of them (each holds its body); 0 =
     * SC_HTTP_DEFAULT_QUEUE, at most SC_HTTP_MAX_QUEUE. */
    unsigned queue_max;
    /* Where request latencies go (borrowed; must outlive the sc_http), so
     * that one recorder holds both fronts' and /metrics shows both. NULL =
     * the sc_http makes one of its own, reachable with sc_http_metrics. */
    sc_metrics *metrics;
    /* Optional: appends lines to /metrics after the cache's and the
     * latency histograms (the cost ledger's dollars, say). Each metric it
     * writes needs its own # HELP and # TYPE lines before its samples, and
     * a name no other part of the page uses; label values through
     * sc_metrics_put_label. */
    sc_http_write_fn metrics_hook;
    /* Optional: writes the whole body of GET /report, one JSON object.
     * NULL = the cache's statistics: {"server", "total", "namespaces"}. */
    sc_http_report_fn report_hook;
    void *hook_arg; /* passed to both hooks; borrowed */
    /* true: sc_http_open sets up every route but does not listen;
     * sc_http_start does (or the start of a proxy on the same address,
     * sc_proxy_open, which then listens with its route in too). So that
     * a client that sees /healthz answered finds every route. */
    bool start_later;
} sc_http_config;

typedef struct sc_http sc_http;

/* SC_OK when addr is an address sc_http_open takes: "HOST:PORT"
 * ("127.0.0.1:8080", "[::1]:8080") or "http://HOST:PORT", with a port
 * 1..65535 written out; SC_EINVAL otherwise. Opens nothing: for checking
 * a configuration before anything starts. */
sc_err sc_http_addr_check(const char *addr);

/* What an address refused by sc_http_addr_check should have been, for
 * messages. */
#define SC_HTTP_ADDR_FORM                                                      \
    "must be HOST:PORT with a port 1..65535 (127.0.0.1:8080, [::1]:8080)"

/* Listens on cfg->addr and starts serving (cfg is copied; with
 * cfg->start_later, not yet: see sc_http_start). On success *out
 * is the caller's, closed with sc_http_close; on failure *out is untouched
 * and nothing is left listening or running. Errors: SC_EINVAL (no
 * dispatcher or cache, a bad address, workers or queue_max over the cap),
 * SC_EIO (listen failed: the port is taken, or
 * another sc_http of this process serves it),
 * SC_ENOMEM. */
sc_err sc_http_open(const sc_http_config *cfg, sc_http **out);

/* Listens on the address of an sc_http opened with start_later (a no-op
 * once done; if a proxy on the address listens already, counted only).
 * SC_EIO when the address cannot be listened on (the message went to
 * stderr); the caller then closes h. */
sc_err sc_http_start(sc_http *h);

/* Answers the requests still waiting for a worker 503 shutting_down,
 * waits for the workers to finish the ones they run, stops listening,
 * drops every connection but those whose answers are being written (with
 * the patched nng), which it lets out for stop_grace_ms at most and then
 * drops too (counted: sc_http_stop_cut). A no-op once done; h stays open
 * (sc_http_close frees it). */
void sc_http_stop(sc_http *h);

/* Ends the stop's grace: a sc_http_stop under way on another thread closes
 * at once the connections whose answers it was letting out (counted as
 * cut) and returns; one to come lets none out. Safe from any thread until
 * sc_http_close; for a second SIGTERM, of an operator who will not wait.
 * Returns whether there was a grace to end: false once the stop's grace
 * is over (passed or ended), and always with the system's nng, whose stop
 * has no grace. */
bool sc_http_end_grace(sc_http *h);

/* After sc_http_stop: how many answers the stop cut, closing their
 * connections before they were all written (their clients read the end of
 * the connection): those still being written when the grace ran out or
 * was ended (sc_http_end_grace), the proxy's on the same address
 * included. May count an answer whose last bytes went out just as the
 * grace ended. Always 0 with the system's nng, which cannot tell (and has
 * no grace: its stop cuts every answer not yet written). */
unsigned sc_http_stop_cut(const sc_http *h);

/* After sc_http_stop: how many answers the stop was letting out whose
 * write failed before the grace's end (the write time-out, a client gone):
 * lost too, but not cut by the stop, and not in sc_http_stop_cut. Always
 * 0 with the system's nng. */
unsigned sc_http_stop_failed(const sc_http *h);

/* The grace the stop gives the answers under way, in ms (stop_grace_ms or
 * its default); 0 with the system's nng, whose stop has none. */
unsigned sc_http_stop_grace_ms(const sc_http *h);

/* Stops h as sc_http_stop does (unless done), waits until no handler is
 * running, then frees h. Afterwards the dispatcher and cache may go. */
void sc_http_close(sc_http *h);

/* Requests waiting for a worker now, being run now, and answered 503 busy
 * (the queue full) since open. */
void sc_http_pool_counts(sc_http *h, unsigned *queued, unsigned *running,
                         uint64_t *refused);

/* The ops POST /v1/<op> serves (sc_http_nops of them), in a fixed order. */
extern const char *const sc_http_ops[];
extern const size_t sc_http_nops;

/* Runs body[0..n) as POST /v1/<op> does, with no connection: the JSON
 * request (auth: the value of its Authorization header, or NULL) through
 * d, and the reply back. op is one of sc_http_ops (the URL routes only
 * those; another gets the dispatcher's unknown_op). Returns the HTTP
 * status and sets *out to the reply's bytes, malloc'd (*out_len of them:
 * JSON and a newline), which the caller frees; *out is NULL only when out
 * of memory (status 500). */
int sc_http_exec(sc_dispatch *d, const char *op, const char *body, size_t n,
                 const char *auth, char **out, size_t *out_len);

/* The latency recorder h writes to (cfg->metrics, or its own); valid
 * until sc_http_close. */
sc_metrics *sc_http_metrics(sc_http *h);

/* The HTTP status of a wire error code ("bad_request" -> 400, ...; see
 * docs/HTTP.md); an unknown code is 500. */
int sc_http_status_of(const char *code);

/* The reason phrase of an HTTP status that nng 1.5.2 lacks (413, 422) or
 * gets wrong (its entry for 502 is keyed 400: "Unknown HTTP Status"), to
 * set on a response; NULL = nng's own is right. */
const char *sc_http_reason(uint16_t status);

/* When req carries "Expect: 100-continue", sends the interim "100
 * Continue" on conn, before the body is read: curl asks for it for bodies
 * over 1 MiB, and otherwise waits a second before it sends the body. Call
 * once the request is accepted (not for one refused before its body). */
void sc_http_continue(nng_http_req *req, nng_http_conn *conn);

/* Reads a Content-Length header's value v (NULL: no header, a length of
 * 0): digits, with spaces or tabs around them. Returns 0 with *len set
 * (SIZE_MAX when it is over max, whatever follows the digits), or -1 when
 * v is not such a number. Never overflows. */
int sc_http_content_length(const char *v, size_t max, size_t *len);

#endif
