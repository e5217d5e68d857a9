/* dispatch.h - one request message in, one reply message out: decodes the
 * msgpack request (docs/PROTOCOL.md), validates every field, calls the
 * cache, and encodes the reply. Thread-safe; the cache does the locking. */
#ifndef SC_DISPATCH_H
#define SC_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/cache.h"
#include "proto/server.h"

#define SC_PROTO_VERSION   1
#define SC_PROTO_MAX_ITEMS 1024
#define SC_SERVER_NAME     "semcached 0.1.0"
/* report: rows in a page when the request gives no 'limit', and the most
 * it may ask for (a row is about 800 bytes of msgpack, 1.2 KB of JSON). */
#define SC_DISPATCH_REPORT_ROWS     1000u
#define SC_DISPATCH_REPORT_ROWS_MAX 10000u

typedef struct sc_dispatch sc_dispatch;

/* cache is borrowed and must outlive the dispatcher. */
sc_err sc_dispatch_open(sc_cache *cache, sc_dispatch **out);
void sc_dispatch_close(sc_dispatch *d);

/* Gives the dispatcher the cost ledger and its prices (borrowed; both must
 * outlive it) for the "report" op. */
void sc_dispatch_set_ledger(sc_dispatch *d, sc_ledger *ledger,
                            const sc_prices *prices);

/* A cost target: the most a request should cost with the cache, in
 * dollars, for a namespace or a feature tag. The report flags rows above
 * theirs. */
typedef enum sc_cost_target_kind {
    SC_COST_TARGET_NS = 0,
    SC_COST_TARGET_FEATURE = 1
} sc_cost_target_kind;
typedef struct sc_cost_target {
    int kind; /* sc_cost_target_kind */
    char name[SC_CACHE_TAG_MAX + 1];
    double usd_per_request;
} sc_cost_target;

/* t[0..n) is borrowed and must outlive the dispatcher. */
void sc_dispatch_set_cost_targets(sc_dispatch *d, const sc_cost_target *t,
                                  size_t n);

/* Names the embedder table's path (copied; NULL = none) in the message of
 * a no_embedder error, so that a client learns how to get one. */
void sc_dispatch_set_embed_hint(sc_dispatch *d, const char *path);

/* Access keys (docs/CONFIG.md "keys"). A grant names one namespace, or a
 * prefix when its pattern ended in '*' (kept here without the '*'; "" with
 * prefix = every namespace). Write implies read; admin implies everything
 * and is the only right to ns_create, ns_configure, ns_drop, ns_list, and
 * flush, stats and report of every namespace. */
#define SC_KEY_MIN      16
#define SC_KEY_MAX      256
#define SC_KEY_NAME_MAX 63
typedef struct sc_key_grant {
    char pattern[SC_CACHE_NS_NAME_MAX + 1];
    bool prefix;
    bool write;
} sc_key_grant;
typedef struct sc_key {
    uint8_t secret[SC_KEY_MAX];     /* zero beyond len */
    uint32_t len;                   /* SC_KEY_MIN..SC_KEY_MAX */
    char name[SC_KEY_NAME_MAX + 1]; /* for logs and metrics; not secret */
    bool admin;
    sc_key_grant
        *grants; /* grants[0..ngrants), owned by whoever owns the key */
    size_t ngrants;
} sc_key;

/* Makes every request but ping carry one of keys[0..n) in its "key" field
 * (n = 0: no keys, every request is served, as before). keys is borrowed
 * and must outlive the dispatcher. The request's key is compared with every
 * configured key over SC_KEY_MAX bytes, in constant time: neither which key
 * matched nor how long it is shows in the time taken. Errors: SC_ENOMEM
 * (the keys in force are unchanged). */
sc_err sc_dispatch_set_keys(sc_dispatch *d, const sc_key *keys, size_t n);

/* The same while serving (a SIGHUP's reload): keys[0..n) replace the keys
 * in force at once for new requests; a request already running goes on
 * with the set it started with. When no request uses the set any more it
 * is released: release(ctx) is called (NULL: keys are borrowed and never
 * released), from whichever thread let go of it last. With n = 0,
 * release(ctx) is called at once and every request is served. Errors:
 * SC_ENOMEM, with the keys in force unchanged and nothing released. */
sc_err sc_dispatch_replace_keys(sc_dispatch *d, const sc_key *keys, size_t n,
                                void (*release)(void *ctx), void *ctx);

/* The access-key check for a front that calls the cache itself (the
 * OpenAI proxy, proxy.h): whether key[0..n) (NULL = none given) may read
 * (write false: a lookup) or write (an insert) namespace ns, by the rules
 * of sc_dispatch_set_keys. Without configured keys everything is allowed.
 * Refusals are counted as the dispatcher's own. key is borrowed for the
 * call and compared in constant time. */
typedef enum sc_dispatch_access {
    SC_ACCESS_OK = 0,
    SC_ACCESS_UNAUTHORIZED = 1, /* no key, or not a configured one */
    SC_ACCESS_FORBIDDEN = 2     /* a valid key without the right */
} sc_dispatch_access;
sc_dispatch_access sc_dispatch_check_key(sc_dispatch *d, const char *key,
                                         size_t n, const char *ns,
                                         bool write);

/* Whether key[0..n) may write namespace ns, by the same rules, counting
 * nothing: for a front that asks before it knows whether it will write,
 * and that refuses no request for the want of it (the proxy, which serves
 * a read-only key and only leaves its answers unstored). */
bool sc_dispatch_may_write(sc_dispatch *d, const char *key, size_t n,
                           const char *ns);

/* The same for what only an admin key may see (the HTTP front's /report
 * and /metrics pages, which span every namespace): SC_ACCESS_OK without
 * configured keys or with an admin key. Refusals are counted. */
sc_dispatch_access sc_dispatch_check_admin(sc_dispatch *d, const char *key,
                                           size_t n);

/* An sc_server_handler (server.h): arg is the sc_dispatch. Always writes
 * a reply (an error reply for bad input) and returns 0, except when out of
 * memory. *reply is malloc'd; the caller frees it. */
int sc_dispatch_handle(void *arg, const uint8_t *req, size_t len,
                       uint8_t **reply, size_t *reply_len);

/* sc_dispatch_handle without the key check, for requests the process
 * makes itself (GET /report of the HTTP front), never for a client's. */
int sc_dispatch_handle_trusted(sc_dispatch *d, const uint8_t *req, size_t len,
                               uint8_t **reply, size_t *reply_len);

/* An sc_server_batch_handler (server.h): answers each of msgs[0..n) as
 * sc_dispatch_handle would, but the single lookups among them that name
 * the same namespace run as one sc_cache_lookup_many, so that the vectors
 * of one scope share one index scan. Requests of a batch are concurrent:
 * the others run first, then the lookups. msgs[i].undo is set for a reply
 * that carries hits (lookup, lookup_batch), else NULL: the caller calls
 * its done once the reply is sent (true) or dropped (false), and a dropped
 * reply's hits are taken back from the ledger (sc_cache_hit_undone). done
 * may run on any thread; with sent true it touches nothing but the undo
 * (the server's after close, server.h). */
void sc_dispatch_handle_many(void *arg, sc_server_msg *msgs, size_t n);

/* An sc_server_handler for sc_server_config's handler_busy: from a reply
 * the server refused (refused/len, one of this dispatch's replies), writes
 * {"id"?, "ok": false, "error": {"code": "busy", ...}} into *reply, whose
 * message says the request was carried out (its changes made)
 * (malloc'd; the caller frees it), echoing the refused reply's id. Returns
 * 0, or -1 out of memory. */
int sc_dispatch_busy_reply(void *arg, const uint8_t *refused, size_t len,
                           uint8_t **reply, size_t *reply_len);

/* Requests that got an error reply, by cause, since open. */
typedef struct sc_dispatch_counts {
    uint64_t requests;
    uint64_t bad_requests; /* malformed, wrong types, failed validation */
    uint64_t errors;       /* well-formed, refused by the cache */
    uint64_t unauthorized; /* no key, or not a configured one */
    uint64_t forbidden;    /* (batch items) a valid key without the right */
} sc_dispatch_counts;
void sc_dispatch_get_counts(sc_dispatch *d, sc_dispatch_counts *out);

/* The wire code of an sc_err ("dim", "not_found", ...). */
const char *sc_dispatch_errcode(sc_err e);

#endif
