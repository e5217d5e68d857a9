/* metrics.h - request latency histograms per op and transport, recorded
 * lock-free from any thread, written in the Prometheus text exposition
 * format 0.0.4 (the HTTP front's GET /metrics, proto/http.h). The cache's own
 * counters are not kept here: /metrics reads them from sc_cache_stats_get. */
#ifndef SC_METRICS_H
#define SC_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/sc_error.h"

/* The latency histograms' upper bounds in seconds (the +Inf bucket comes on
 * top): 50 us .. 2.5 s. */
#define SC_METRICS_NBUCKETS 15

typedef enum sc_metrics_transport {
    SC_METRICS_NNG = 0, /* the nng REQ/REP front (proto/server.h) */
    SC_METRICS_HTTP = 1 /* the HTTP front (proto/http.h) */
} sc_metrics_transport;

typedef struct sc_metrics sc_metrics;

/* Creates an empty recorder. On success *out is the caller's, freed with
 * sc_metrics_close; on failure *out is untouched. Errors: SC_ENOMEM. */
sc_err sc_metrics_open(sc_metrics **out);

/* Frees m. No sc_metrics_observe* or sc_metrics_write may be in progress. */
void sc_metrics_close(sc_metrics *m);

/* A monotonic clock in seconds, for timing a request. */
double sc_metrics_now(void);

/* Records one request of op (a wire op name, borrowed for the call; an
 * unknown or NULL op is recorded as "other") that took seconds (negative
 * or NaN counts as 0). Thread-safe and lock-free: relaxed atomic adds. */
void sc_metrics_observe(sc_metrics *m, sc_metrics_transport t, const char *op,
                        double seconds);

/* The same for a raw msgpack request (req[0..len), borrowed, untrusted):
 * finds its top-level "op" with the bounded reader (proto/mp.h) and records
 * it, or "other" when the message has none or cannot be read. For a
 * handler wrapper on the nng path: time sc_dispatch_handle, then call
 * this. */
void sc_metrics_observe_request(sc_metrics *m, sc_metrics_transport t,
                                const uint8_t *req, size_t len, double seconds);

/* Writes semcache_request_duration_seconds (a histogram labelled op and
 * transport, only the series observed so far) with its # HELP and # TYPE
 * lines to out. Consistent per series: its +Inf bucket equals its _count.
 * Errors: SC_EIO (a write to out failed). */
sc_err sc_metrics_write(sc_metrics *m, FILE *out);

/* Writes v as a Prometheus label value, between double quotes, with
 * backslash, double quote and newline escaped (\\, \", \n). For hooks that
 * add metric lines of their own (sc_http_config.metrics_hook). */
void sc_metrics_put_label(FILE *out, const char *v);

#endif
