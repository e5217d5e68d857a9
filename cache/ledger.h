/* ledger.h - what the cache earns: a price table (dollars per million
 * tokens of each LLM and embedding model, and per CPU-hour for the built-in
 * embedder), and a ledger that turns every insert, lookup and reported
 * false hit into tokens and dollars, per namespace, per feature tag, per
 * user tag and overall, with an hourly timeline. Thread-safe. */
#ifndef SC_LEDGER_H
#define SC_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/sc_error.h"

/* ---- prices -------------------------------------------------------------*/

typedef struct sc_prices sc_prices;

typedef struct sc_price {
    double input, cached_input, output; /* dollars per million tokens */
} sc_price;

/* Parses a price table (JSON, data/prices.json shows the form: "date",
 * "cpu_hour", "models": {name: {input, output, cached_input}},
 * "embedding_models": {name: dollars}). json[0..len) is borrowed; name
 * labels messages. Unknown keys, negative or non-finite prices, duplicate
 * keys are refused: SC_EINVAL with a reason in msg (cap bytes). */
sc_err sc_prices_parse(const char *json, size_t len, const char *name,
                       sc_prices **out, char *msg, size_t cap);

/* Reads and parses the file at path (SC_EIO when it cannot be read). */
sc_err sc_prices_load(const char *path, sc_prices **out, char *msg, size_t cap);

/* The table that ships with semcached (data/prices.json, compiled in). */
sc_err sc_prices_default(sc_prices **out);

void sc_prices_free(sc_prices *p);

/* The price of an LLM model; false (and *out zeroed) when the table does
 * not have it: its cost is unknown, never zero. */
bool sc_prices_llm(const sc_prices *p, const char *model, sc_price *out);

/* Dollars per million tokens of an embedding model; false when unknown. */
bool sc_prices_embedding(const sc_prices *p, const char *model, double *out);

double sc_prices_cpu_hour(const sc_prices *p);
const char *sc_prices_date(const sc_prices *p); /* owned by p */

/* Tokens in n bytes of text when nobody counted them: one per four bytes,
 * rounded up (the usual rule of thumb for English). */
uint64_t sc_ledger_estimate_tokens(size_t bytes);

/* ---- the ledger ---------------------------------------------------------*/

typedef struct sc_ledger sc_ledger;

/* prices is borrowed and must outlive the ledger. */
sc_err sc_ledger_open(const sc_prices *prices, sc_ledger **out);
void sc_ledger_close(sc_ledger *l);

/* The ledger's rows are capped at 2^20, about 500 bytes each with their
 * hash table and outside --max-bytes (measured 2026-12-04 at the cap: 514
 * MiB resident; a report or a /metrics scrape briefly needs 200 bytes a
 * row more). Past the cap, a feature or user tag that has no row yet is
 * counted in its namespace's "(other)" row, while tags that have a row
 * keep counting in it, and a restore brings every saved row back. Tests
 * lower the cap with this. */
void sc_ledger_set_max_rows(sc_ledger *l, size_t n);

/* The longest run of occupied slots in the ledger's row table (a row's
 * lookup scans at most its run): for tests. */
size_t sc_ledger_longest_run(sc_ledger *l);

/* The LLM call behind an entry. */
typedef struct sc_ledger_call {
    const char *model; /* "" or NULL = unknown: its cost is unknown */
    uint64_t input_tokens, output_tokens;
    bool estimated; /* the tokens were estimated from bytes */
} sc_ledger_call;

/* Where an event is counted: its namespace and its feature and user tags
 * (NULL or "" = untagged). Strings are borrowed for the call. */
typedef struct sc_ledger_tags {
    const char *ns, *feature, *user;
} sc_ledger_tags;

/* An insert: the LLM call that produced the stored response. */
void sc_ledger_insert(sc_ledger *l, const sc_ledger_tags *t,
                      const sc_ledger_call *call, uint64_t now_ms);

typedef struct sc_ledger_lookup {
    int layer;               /* 0 miss, 1 exact hit, 2 semantic hit */
    sc_ledger_call served;   /* on a hit: the served entry's call */
    double embed_cpu_s;      /* the built-in embedder's time */
    const char *embed_model; /* the client's embedding model, or NULL */
    uint64_t embed_tokens;   /* its tokens (0 = none given) */
    bool embed_estimated;    /* embed_tokens were estimated */
    double lookup_cpu_s;     /* the lookup's own time */
} sc_ledger_lookup;

void sc_ledger_lookup_done(sc_ledger *l, const sc_ledger_tags *t,
                           const sc_ledger_lookup *ev, uint64_t now_ms);

/* A hit reported wrong, or one the proxy or the nng server could not
 * deliver (sc_cache_hit_undone): its avoided cost was never really
 * avoided. */
void sc_ledger_false_hit(sc_ledger *l, const sc_ledger_tags *t,
                         const sc_ledger_call *call);

/* The sums of one key. Dollars count priced events only; the *_unpriced
 * counts say how many events have an unknown cost. */
typedef struct sc_ledger_counts {
    uint64_t lookups, exact_hits, semantic_hits;
    uint64_t tokens_in_avoided, tokens_out_avoided;
    uint64_t hits_estimated; /* hits whose tokens were estimated */
    uint64_t hits_unpriced;  /* hits of a model with no price */
    double usd_avoided;
    uint64_t inserts, inserts_unpriced, inserts_estimated;
    double usd_inserted; /* what the calls behind inserts cost */
    double embed_cpu_s, lookup_cpu_s;
    uint64_t embed_tokens, embed_unpriced, embed_estimated;
    double usd_embed, usd_lookup;
    uint64_t false_hits, false_hits_unpriced;
    double usd_false_hits;
    uint64_t first_ms, last_ms; /* first and last event, 0 = none */
} sc_ledger_counts;

/* Adds every sum of *b to *a (first_ms and last_ms widen to cover both). */
void sc_ledger_counts_add(sc_ledger_counts *a, const sc_ledger_counts *b);

/* A namespace was made (sc_cache_ns_create said SC_OK; not a restore):
 * its row's sums so far, those of earlier namespaces of its name made and
 * dropped, become its base, which a reader such as /metrics subtracts so
 * that the new namespace's counters start at zero while the sums of the
 * dropped ones stay where they were. The rows themselves go on, so report
 * keeps a name's sums over all its namespaces. A name with no row yet
 * gets no base. The base is a row of its own, SC_LEDGER_KIND_BASE,
 * exported and restored with the others; out of memory it is not made.
 * Returns whether a base was written (a journal then logs it, and the
 * name's row, with the namespace's record: sc_cache_change's
 * ledger_base). */
bool sc_ledger_ns_made(sc_ledger *l, const char *ns);

/* Whether name ns has a row of its own (sc_ledger_ns_made would write a
 * base), as of now: a making asks first, to wait for the journal's lock
 * only where a base is likely. */
bool sc_ledger_ns_has_row(sc_ledger *l, const char *ns);

/* Copies the base of namespace ns into *out: zeros when it has none. */
void sc_ledger_ns_base(sc_ledger *l, const char *ns, sc_ledger_counts *out);

typedef enum sc_ledger_by {
    SC_LEDGER_BY_NS = 0, /* one row per namespace */
    SC_LEDGER_BY_FEATURE = 1,
    SC_LEDGER_BY_USER = 2
} sc_ledger_by;

/* The kind of a namespace's base row (sc_ledger_ns_made) in an export:
 * never a breakdown's row nor in a total. */
#define SC_LEDGER_KIND_BASE 3

/* Sums over everything (ns NULL) or one namespace into *total, and calls
 * fn for each row of the breakdown by (namespace, feature or user; within
 * ns when given), in name order. fn's strings last for the call. Returns
 * SC_ENOMEM, or SC_OK. */
typedef void (*sc_ledger_row_fn)(void *arg, const char *key,
                                 const sc_ledger_counts *c);
sc_err sc_ledger_sum(sc_ledger *l, const char *ns, sc_ledger_by by,
                     sc_ledger_counts *total, sc_ledger_row_fn fn, void *arg);

/* sc_ledger_sum for one page of the breakdown: fn is called for the rows
 * whose key is above after in name order (strcmp; NULL = from the first),
 * at most limit of them (0 = all), and *more (when not NULL) gets how many
 * rows come after the page. *total is still over every row. A page costs
 * a sort of the rows above after: reading 2^20 rows in pages of 10,000
 * takes some seconds in all. The lock is never held long: the rows are
 * picked a bounded number of slots a hold, sorted without it, and summed
 * a bounded number of rows a hold, the page's before the total's, and
 * an insert or lookup that waits for one of these holds has the lock
 * before the next (sc_ledger_lock_stats). The page, *more and *total are over
 * the rows that existed when the call began (a row made during it, a new
 * namespace's or tag's, is in none of them: the next call has it), each row
 * with its sums as of the hold that read it; a row's sums are never more than
 * the total's. */
sc_err sc_ledger_sum_page(sc_ledger *l, const char *ns, sc_ledger_by by,
                          const char *after, size_t limit,
                          sc_ledger_counts *total, sc_ledger_row_fn fn,
                          void *arg, size_t *more);

/* For tests: fn(arg, picked) runs in every sc_ledger_sum_page between two
 * holds of the lock: with picked false between two holds of the pick,
 * with picked true once the rows are picked and sorted, before they are
 * summed, and between two holds of the sums; and with picked false in
 * every changed-only sc_ledger_export between two of its holds. It may
 * call the ledger. NULL = none. */
void sc_ledger_set_page_hook(sc_ledger *l, void (*fn)(void *, bool), void *arg);

/* For tests: fn(arg) runs under the lock at the start of every hold of a
 * bulk read (sc_ledger_sum_page, a changed-only sc_ledger_export) after
 * its first, once as many locks as waited when its last hold ended have
 * had their turn; it must not call the ledger. NULL = none. */
void sc_ledger_set_hold_hook(sc_ledger *l, void (*fn)(void *), void *arg);

/* How many locks of the ledger found it taken and waited (contended), how
 * many of them have had it since (served), and how many bulk reads wait
 * for their turn now: a bulk read's next hold waits until as many locks
 * as waited when its last hold ended are served. Reads no lock: a hook
 * may call it. */
void sc_ledger_lock_stats(sc_ledger *l, uint64_t *contended, uint64_t *served,
                          unsigned *bulk_waiting);

/* For tests: fn(arg) runs in every lock of the ledger that finds it
 * taken, once counted in contended and before it waits; it must not call
 * the ledger. NULL = none. */
void sc_ledger_set_lock_hook(sc_ledger *l, void (*fn)(void *), void *arg);

/* For tests: the slots of the row table a page's pick, or a changed-only
 * export, reads in one hold of the lock (0 = the default, 16,384); a
 * page's sums read a quarter as many rows a hold (at least 1), and an
 * export gives at most as many rows a hold. */
void sc_ledger_set_page_chunk(sc_ledger *l, size_t slots);

/* The hourly timeline over everything: up to cap hours, oldest first. */
typedef struct sc_ledger_hour {
    uint64_t hour_ms; /* start of the hour */
    uint64_t lookups, hits;
    double usd_avoided, usd_spent;
} sc_ledger_hour;
size_t sc_ledger_timeline(sc_ledger *l, sc_ledger_hour *out, size_t cap);

/* ---- persistence (cache/persist.c) -------------------------------------*/

/* One row of the ledger as it stands: (kind, namespace, tag) and its sums. */
typedef struct sc_ledger_row_state {
    int kind; /* sc_ledger_by, or SC_LEDGER_KIND_BASE */
    const char *ns, *tag;
    sc_ledger_counts c;
} sc_ledger_row_state;

/* Receives a row (hour NULL) or an hour of the timeline (row NULL); the
 * pointers last for the call. */
typedef void (*sc_ledger_state_fn)(void *arg, const sc_ledger_row_state *row,
                                   const sc_ledger_hour *hour);

/* Calls fn for every row and timeline hour, or with changed_only for those
 * changed since the last changed-only export its caller confirmed with
 * sc_ledger_export_saved, under the ledger's lock: fn must not call the
 * ledger. Returns the export's mark (0 without changed_only). An export
 * not confirmed (its records could not be stored: out of memory, say)
 * leaves its rows to the next one, which takes them again.
 *
 * Every row is given in one hold of the lock (a snapshot's, once a
 * generation). The changed-only export (once a second) takes it in short
 * holds, as a report page does (sc_ledger_set_page_chunk's slots, and at
 * most a quarter as many rows given, a hold; a lookup or insert that
 * waits for a hold has the lock before the next), so that nothing waits
 * out a scan of the whole table: in one hold it took 64 ms to 441 ms at
 * 10^6 namespaces (3 * 10^6 rows; a loaded 2-core machine). Each row is
 * given with its sums as of the hold that read it. (A caller that holds
 * a lock of its own over the whole export, as persist does to keep its
 * runs in order, must not be waited for under a lock that lookups take:
 * persist's namespace making takes it before the cache's lock.) Every
 * row changed before the export began is in it; a row changed while it
 * runs is in it or not, and is left changed for the next export either
 * way, so that when this one is confirmed nothing is lost. Where the
 * table grew (new rows) between two holds, the scan starts over, and rows
 * given already may be given again, newer: the last given of a row is its
 * state. The hours are given in the last hold. */
uint64_t sc_ledger_export(sc_ledger *l, bool changed_only,
                          sc_ledger_state_fn fn, void *arg);

/* Calls fn for namespace ns's own row and its base (those it has) as
 * they are now, under the lock that orders changes, without a scan of
 * the table (a changed-only export reads every slot, a short hold after
 * another: 0.2 s to 0.3 s in all at 10^6 namespaces) and without marking
 * them saved: the next changed-only export takes them again. Returns how
 * many rows it gave. */
size_t sc_ledger_export_ns(sc_ledger *l, const char *ns, sc_ledger_state_fn fn,
                           void *arg);

/* The changed-only export of mark (and every one before it) is stored:
 * the rows it took are not taken again unless they change. */
void sc_ledger_export_saved(sc_ledger *l, uint64_t mark);

/* Sets the row (kind, ns, tag) to *c, made when new (a restore: the last
 * state written wins); kind is an sc_ledger_by or SC_LEDGER_KIND_BASE.
 * Errors: SC_EINVAL (kind), SC_ENOMEM. */
sc_err sc_ledger_import_row(sc_ledger *l, int kind, const char *ns,
                            const char *tag, const sc_ledger_counts *c);

/* Sets the timeline's hour h->hour_ms (a multiple of an hour) to *h; an
 * hour older than the timeline holds is ignored. Errors: SC_EINVAL. */
sc_err sc_ledger_import_hour(sc_ledger *l, const sc_ledger_hour *h);

/* ---- the report ---------------------------------------------------------*/

/* What the report derives from one row's counts. */
typedef struct sc_ledger_report {
    double hit_rate, exact_hit_rate, semantic_hit_rate;
    double usd_spent;           /* embeddings and lookups */
    double usd_net;             /* avoided - false hits - spent */
    double return_on_spend;     /* (avoided - false hits) / spent; NAN if 0 */
    double usd_per_hit;         /* mean avoided per priced hit; NAN if none */
    double usd_per_lookup;      /* mean spend per lookup; NAN if none */
    double break_even_hit_rate; /* usd_per_lookup / usd_per_hit */
    double usd_per_call;        /* mean cost of an LLM call (inserts, else
                                   hits); NAN when unknown */
    double days;                /* observed span, at least one hour */
    double lookups_per_day;
    /* Monthly (30 days) bill at 1x, 10x and 100x the observed traffic,
     * without the cache (every lookup an LLM call) and with it (the misses,
     * plus the spend), at the observed hit rate; NAN when unknown. */
    double month_without[3], month_with[3];
    double usd_per_request; /* with the cache: (misses x call + spend) / n */
} sc_ledger_report;

void sc_ledger_derive(const sc_ledger_counts *c, sc_ledger_report *r);

#endif
