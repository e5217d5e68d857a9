/* client.h - libsemcache, the C client of semcached: synchronous and
 * thread-safe (each call uses its own nng context on one shared socket).
 * Every call returns an sc_err; when the server refused a request the code
 * is SC_EREMOTE and *err (optional) holds the server's code and message
 * (a refusal without a str code, or with a message not a str, is
 * SC_EPROTO: docs/PROTOCOL.md 2.3).
 *
 * Out-parameters are written on every return, whatever the error (the
 * request builders excepted, see below): on failure a pointer is NULL, a
 * length or id 0, a string "", *err's code and message "" unless the code
 * is SC_EREMOTE, and an sc_client_result all zero with best NAN. A caller
 * may free what a call hands back without looking at the code first. */
#ifndef SC_CLIENT_H
#define SC_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/sc_error.h"

typedef struct sc_client sc_client;

/* The server's refusal: a wire code ("dim", "not_found"...) and message. */
typedef struct sc_client_error {
    char code[32];
    char message[160];
} sc_client_error;

/* Connects to url (tcp://, ipc://; NULL = tcp://127.0.0.1:7700). Each call
 * waits at most timeout_ms for its reply (0 = 5000), a wait for one of the
 * connection's 32 slots included (a server queues at most
 * --reply-queue-len replies per connection, 64 at the least: PROTOCOL.md
 * 1.3; for more parallel calls, open more clients). Replies up to 1 GiB. The
 * connection is made in the background and re-made if it drops. Errors:
 * SC_EINVAL (bad URL), SC_ECONN, SC_ENOMEM (*out NULL). */
sc_err sc_client_open(const char *url, int timeout_ms, sc_client **out);
void sc_client_close(sc_client *c);

/* Sends key (copied; NULL = none) as the "key" field of every request
 * from now on, sc_client_call's raw ones included (docs/PROTOCOL.md,
 * "Access keys"). Call before sharing c between threads. Errors:
 * SC_ENOMEM (the old key is kept). */
sc_err sc_client_set_key(sc_client *c, const char *key);

/* Sends one raw msgpack request and returns the raw reply in *reply
 * (malloc'd, the caller frees; NULL and *reply_len 0 on any error).
 * SC_ECONN when no connection to the server was up by the time-out (or
 * another transport failure), SC_ETIMEDOUT when one was and no reply came
 * (or no slot freed); SC_EINVAL when a key is
 * set and req is not a msgpack map. */
sc_err sc_client_call(sc_client *c, const void *req, size_t len,
                      uint8_t **reply, size_t *reply_len);

/* What to store (insert) or look for (lookup). Pointers are borrowed for
 * the call. At least one of text and vec. */
typedef struct sc_client_item {
    const char *scope; /* NULL = "" */
    const char *text;  /* NUL-terminated, or NULL */
    const float *vec;  /* dim floats, or NULL */
    uint32_t dim;
    const char *embed_model; /* the model vec came from, or NULL (unnamed) */
    const void *response;    /* insert only */
    size_t response_len;
    double ttl_s; /* insert: 0 = namespace default, -1 = never */
    const char *model; /* insert, optional */
    /* The ledger's tags, optional: an insert's are the entry's; a
     * lookup's are the ones its hit or miss is counted under (a hit with
     * none counts under the served entry's). */
    const char *feature, *user;
    uint64_t input_tokens, output_tokens;
    bool has_threshold; /* lookup: override the namespace's threshold */
    float threshold;
} sc_client_item;

typedef struct sc_client_result {
    bool hit;
    char layer[16];  /* "exact", "semantic", "none" */
    char reason[32]; /* "" on a hit, else "below_threshold"... */
    float similarity;
    float best; /* NAN when there was no candidate */
    uint64_t entry;
    uint8_t *response; /* malloc'd copy on a hit (caller frees), else NULL */
    size_t response_len;
    char model[257];
    uint64_t input_tokens, output_tokens, hit_count;
} sc_client_result;

sc_err sc_client_ping(sc_client *c, char *server, size_t cap,
                      sc_client_error *err);
sc_err sc_client_insert(sc_client *c, const char *ns, const sc_client_item *it,
                        uint64_t *entry, sc_client_error *err);
/* *res is filled; res->response is the caller's to free on SC_OK (NULL on
 * a miss) and NULL on any error. A reply breaking that (no bool "hit", a
 * hit without its entry or bin response, a miss with a response) is
 * SC_EPROTO, as the Python client's ProtocolError. */
sc_err sc_client_lookup(sc_client *c, const char *ns, const sc_client_item *it,
                        sc_client_result *res, sc_client_error *err);
sc_err sc_client_delete(sc_client *c, uint64_t entry, sc_client_error *err);
sc_err sc_client_feedback(sc_client *c, uint64_t entry, sc_client_error *err);
/* feedback naming the tags the wrong hit's lookup gave (NULL = none), so
 * that the ledger charges the false hit where the hit was counted. */
sc_err sc_client_feedback_tagged(sc_client *c, uint64_t entry,
                                 const char *feature, const char *user,
                                 sc_client_error *err);
/* ns NULL = every namespace. */
sc_err sc_client_flush(sc_client *c, const char *ns, sc_client_error *err);
/* Removes namespace ns and its entries (an admin operation). */
sc_err sc_client_ns_drop(sc_client *c, const char *ns, sc_client_error *err);

/* stats: the raw reply (msgpack, malloc'd, the caller frees) for callers
 * that print it; *reply NULL and *reply_len 0 on any error, SC_EREMOTE
 * included. */
sc_err sc_client_stats(sc_client *c, const char *ns, uint8_t **reply,
                       size_t *reply_len, sc_client_error *err);

/* report: the cost report (ns NULL = all; by "ns", "feature", "user" or
 * NULL), the raw reply as stats gives it. */
sc_err sc_client_report(sc_client *c, const char *ns, const char *by,
                        uint8_t **reply, size_t *reply_len,
                        sc_client_error *err);

/* report, one page of its rows: those whose key is above after (NULL =
 * from the first), at most limit of them (0 = the server's default, 1000;
 * at most 10000). The result's "more" counts the rows after the page and
 * its "next" (nil on the last page) is the after of the next one. */
sc_err sc_client_report_page(sc_client *c, const char *ns, const char *by,
                             const char *after, uint64_t limit, uint8_t **reply,
                             size_t *reply_len, sc_client_error *err);

/* Request builders, shared with tests and benchmarks: encode one request
 * (a msgpack map) into a new malloc'd buffer, *buf and *len on success (the
 * caller frees). *buf is overwritten, never read, grown or freed: a buffer
 * it held is the caller's still. On failure (SC_EINVAL: ns NULL, neither
 * text nor vec; SC_ENOMEM) *buf and *len are untouched. */
sc_err sc_client_build_insert(const char *ns, const sc_client_item *it,
                              uint8_t **buf, size_t *len);
sc_err sc_client_build_lookup(const char *ns, const sc_client_item *it,
                              uint8_t **buf, size_t *len);

#endif
