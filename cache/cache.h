/* cache.h - the semantic cache: namespaces of entries matched first by exact
 * prompt text, then by cosine similarity of the prompt's embedding, only
 * within their own (namespace, scope). TTL, LRU capacity, hit accounting and
 * feedback live here. Every function is thread-safe. */
#ifndef SC_CACHE_H
#define SC_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/ledger.h"
#include "common/sc_error.h"
#include "index/index.h"

/* Size caps on what a caller may store (bytes, excluding any NUL). */
#define SC_CACHE_NS_NAME_MAX      128u  /* namespace names: [A-Za-z0-9._:-]+ */
#define SC_CACHE_SCOPE_MAX        1024u /* scope strings */
#define SC_CACHE_TEXT_MAX         (1u << 20)  /* prompt text */
#define SC_CACHE_TAG_MAX          256u        /* model, feature and user tags */
#define SC_CACHE_RESPONSE_DEFAULT (1u << 20)  /* per-namespace default cap */
#define SC_CACHE_RESPONSE_LIMIT   (64u << 20) /* the most a cap may be set to */
/* The most tokens one call may say it took, in or out (SC_ERANGE beyond):
 * far above any model's, and 2^32 hits of such calls before a ledger sum
 * could wrap. */
#define SC_CACHE_TOKENS_MAX       UINT64_C(4294967295)
#define SC_CACHE_TTL_NEVER        (-1) /* sc_cache_item.ttl_ms: never expires */

/* ---- the cache ----------------------------------------------------------*/

typedef struct sc_cache sc_cache;

/* Milliseconds since some epoch; must not go backwards by much. */
typedef uint64_t (*sc_cache_clock_fn)(void *arg);

/* An embedder the cache turns text into vectors with, when a request brings
 * text and no vector (the daemon wires embed/ in; tests may give a fake).
 * Every function is called from many threads at once. */
typedef struct sc_cache_embedder {
    const char *model; /* "name@version" namespaces record; borrowed */
    uint32_t dim;      /* floats embed writes */
    float threshold;   /* default threshold of namespaces of this model */
    float margin;      /* default margin of namespaces of this model */
    /* Writes the unit vector of text[0..len) to out (dim floats). */
    sc_err (*embed)(void *arg, const char *text, size_t len, float *out);
    /* Optional (NULL = the cosine): the similarity each candidate is
     * judged by (threshold, margin, ranking), from the query's prompt text
     * and, for each of n candidates, its text and its cosine with the
     * query: out[i] for candidate i, in [-1, 1] (the cache takes a value
     * that is not finite as the cosine). One call per lookup, so the query
     * is read once. stats is the scope's (below) or NULL. Used only for
     * namespaces of this model and entries that kept their text. Arrays
     * hold n items and are borrowed for the call. */
    void (*rescore)(void *arg, const void *stats, const char *qtext,
                    size_t qlen, const void *qprep, size_t n,
                    const char *const *ctexts, const size_t *clens,
                    const void *const *cpreps, const float *cosines,
                    float *out);
    void *arg; /* passed to every function here */
    bool vote; /* judge this model's candidates by response vote
                  (cache/vote.h, its defaults; the margin still applies)
                  instead of the best candidate and the margin alone */
    /* Optional, all four or none: statistics of each scope's stored texts
     * for rescore (the built-in embedder's word document frequencies), per
     * scope so that one scope's texts never move another's similarities.
     * stats_new makes a scope's (NULL: out of memory, the insert that made
     * the scope is refused); stats_count counts an entry's text in (delta
     * +1, when it is stored or restored) or out (-1, however it goes),
     * under the namespace's lock, as rescore is called, and returns false
     * when it could not count a text in (out of memory; the entry is kept
     * and its text never counted out); stats_free frees
     * it with its scope. stats_bytes says the memory it holds now, which
     * counts in the byte caps (max_bytes) and in the stats' bytes. */
    void *(*stats_new)(void *arg);
    void (*stats_free)(void *arg, void *stats);
    bool (*stats_count)(void *arg, void *stats, const char *text, size_t len,
                        const void *prep, int delta);
    size_t (*stats_bytes)(void *arg, const void *stats);
    /* Optional (with the four above): a copy of stats (NULL: out of
     * memory), freed with stats_free. An insert that a byte cap cannot
     * hold with its scope's statistics as they are counts texts out of a
     * copy to tell whether evicting the rest would make room, and is
     * refused (too_big) before anything changes when it would not. Without
     * it such an insert is stored, and the cap may then evict it at once
     * (after what it replaced: that answer is gone). */
    void *(*stats_clone)(void *arg, const void *stats);
    /* Optional: whether model names an earlier version of this embedder
     * (same method, other version or table) whose namespaces are moved to
     * this model on restore: each restored entry's text is embedded again
     * with embed, and an entry without text is not restored (its vector
     * cannot be compared with this model's). Only where dim matches. */
    bool (*supersedes)(void *arg, const char *model);
    /* Optional, all three or none (used with rescore): a text prepared
     * once for rescore and stats_count (the built-in embedder's signature,
     * embed.h sc_embed_sig), so that what runs under a namespace's lock
     * never reads a whole text, however long. The cache prepares, outside
     * its locks, the text of each entry stored with a vector of this
     * model (kept with the entry, prep_bytes counted in its bytes and the
     * byte caps, until it goes or is reported wrong: feedback) and of
     * each lookup with such a vector; rescore and
     * stats_count get those as qprep, cpreps[i] and prep (NULL where a
     * text was not prepared: use the text), and then only entries with a
     * prepared text are counted in the scope's statistics. prep_new
     * returns NULL when out of memory: that insert or lookup fails with
     * SC_ENOMEM. */
    void *(*prep_new)(void *arg, const char *text, size_t len);
    void (*prep_free)(void *arg, void *prep);
    size_t (*prep_bytes)(void *arg, const void *prep);
} sc_cache_embedder;

struct sc_cache_entry_info;
struct sc_ns_config;

/* What a journal (cache/persist.h) is told: one change of the cache's
 * durable state. Pointers are valid during the append call only. */
typedef enum sc_cache_change_kind {
    SC_CHANGE_NS_PUT = 1, /* ns created or reconfigured: cfg */
    SC_CHANGE_NS_DROP,    /* ns and its entries gone */
    SC_CHANGE_INSERT,     /* entry stored (entry; replaces the same text) */
    SC_CHANGE_REMOVE,     /* entry id deleted, expired or evicted */
    SC_CHANGE_QUARANTINE, /* entry id reported wrong */
    SC_CHANGE_FLUSH       /* every entry of ns gone */
} sc_cache_change_kind;

typedef struct sc_cache_change {
    sc_cache_change_kind kind;
    const char *ns;
    const struct sc_ns_config *cfg;          /* NS_PUT */
    bool had_vector;                         /* NS_PUT: dim is fixed */
    /* NS_PUT of a making for which the cache's ledger wrote a base
     * (sc_ledger_ns_made): the journal logs that base and the name's row
     * (sc_ledger_export_ns) with the namespace's record, as one run that
     * no write of the log splits, so that they are as durable as the
     * namespace once its seq is committed, not only with the ledger's
     * next save. Set only between the journal's make_begin and make_end
     * (where it has them). */
    bool ledger_base;
    const struct sc_cache_entry_info *entry; /* INSERT */
    uint64_t id;                             /* REMOVE, QUARANTINE */
} sc_cache_change;

/* Where the cache writes its changes ahead of acknowledging them. */
typedef struct sc_cache_journal {
    /* Records ch; called with the locks that order the change held (the
     * namespace's), so records come in the order the changes happened. It
     * must not call into the cache. *seq receives a number commit takes.
     * An error (the journal can no longer write) refuses the change: the
     * cache leaves itself as it was and returns the error (SC_EIO). Removals
     * the cache makes by itself (expiry, eviction) go ahead regardless. */
    sc_err (*append)(void *arg, const sc_cache_change *ch, uint64_t *seq);
    /* Waits, with no cache lock held, until the record seq is as durable as
     * the journal promises; the caller acknowledges only afterwards. */
    sc_err (*commit)(void *arg, uint64_t seq);
    void *arg;
    /* Optional (NULL = none). A namespace making whose name has a row in
     * the cache's ledger (sc_cache_ns_create; a base is likely) calls
     * make_begin before it takes any cache lock (one that finds a base to
     * write without it, a charge having made the row meanwhile, lets the
     * cache's lock go, calls it and starts over), and make_end once it has
     * released them, before commit: a journal whose base append (ledger_base)
     * must wait for a lock of its own (persist's, held for the whole of the
     * ledger's once-a-second save) takes it here, outside the cache's lock, so
     * that the making waits for it alone and lookups and inserts on every
     * namespace do not wait behind the making. They must not call into the
     * cache. */
    void (*make_begin)(void *arg);
    void (*make_end)(void *arg);
} sc_cache_journal;

typedef struct sc_cache_config {
    uint32_t max_namespaces; /* flood guard; default 1024 */
    uint32_t max_scopes;     /* per namespace; default 4096 (restores
                                are not capped: see sc_cache_restore_ns) */
    uint64_t max_entries;    /* over all namespaces; 0 = unlimited (default) */
    uint64_t max_bytes;      /* over all namespaces; 0 = unlimited; 1 GiB */
    sc_cache_clock_fn clock; /* NULL = CLOCK_REALTIME in milliseconds */
    void *clock_arg;         /* borrowed; passed to clock, must outlive cache */
    const sc_cache_embedder *embedder; /* NULL = none; borrowed, and it and
                                          its strings must outlive cache */
    sc_ledger *ledger;        /* NULL = none; borrowed, must outlive the cache:
                                 every insert, lookup and false hit is counted
                                 there in tokens and dollars */
    bool text_needs_embedder; /* with no embedder, text alone that would be
                                 embedded is refused (SC_ENOEMBED) rather
                                 than kept to the exact layer */
    const char *embedder_prefix;     /* NULL = none: the start of every model id
                                        the embedder may have ("name@"). With no
                                        embedder, a namespace whose model starts
                                        so is the missing embedder's: text alone
                                        would be embedded there, not kept to the
                                        exact layer as in another model's.
                                        Borrowed, must outlive the cache */
    const sc_cache_journal *journal; /* NULL = none; borrowed, must outlive
                                        the cache */
} sc_cache_config;

/* Fills cfg with the defaults above. */
void sc_cache_config_init(sc_cache_config *cfg);

/* Creates an empty cache. cfg is copied (NULL = defaults). On success *out is
 * owned by the caller and freed with sc_cache_close; on failure *out is
 * untouched. Errors: SC_EINVAL, SC_ENOMEM. */
sc_err sc_cache_open(const sc_cache_config *cfg, sc_cache **out);

/* Frees the cache and everything in it. No other call may be in progress;
 * results still held keep their own references and stay valid. */
void sc_cache_close(sc_cache *c);

/* ---- namespaces ---------------------------------------------------------*/

typedef enum sc_ttl_mode {
    SC_TTL_ABSOLUTE = 0, /* expires ttl after insertion */
    SC_TTL_SLIDING = 1   /* each hit moves expiry to hit time + ttl */
} sc_ttl_mode;

typedef struct sc_ns_config {
    uint32_t dim;       /* 1..SC_INDEX_MAX_DIM, or 0 = fixed at first vector */
    sc_storage storage; /* vector storage of the namespace's indexes */
    /* The index backend of each of its scopes (sc_index_params): "flat"
     * ("" = flat, the default), "auto" (exact scan until train_min vectors,
     * then IVF-Flat trained in the background), "ivf-flat" or "ivf-sq8".
     * All but flat need f32 storage. In a build without FAISS "ivf-flat"
     * and "ivf-sq8" are refused (SC_ENOTSUP) and "auto" serves by flat scan
     * (sc_index_backend_available tells which). */
    char backend[16];
    uint32_t nlist;      /* IVF lists, 0 = about sqrt(N); at most 65536 */
    uint32_t nprobe;     /* lists a query visits, 0 = 16; at most 65536 */
    uint32_t train_min;  /* vectors before training, 0 = 20000 (index.h) */
    float threshold;     /* cosine a semantic hit needs; default 0.90 */
    float margin;        /* 0 = off; see sc_cache_lookup; 0..2 */
    bool auto_threshold; /* true (default): a namespace of the embedder's
                            model uses the embedder's threshold instead */
    bool auto_margin;    /* the same for the margin */
    int vote; /* judge candidates by response vote (cache/vote.h): 1 on,
                 0 off (the best candidate and the margin rule), -1 (the
                 default) = the embedder's choice in its namespaces, off
                 elsewhere */
    /* The embedding model of the namespace's vectors: "" = not fixed yet
     * (the first vector fixes it: the embedder's model for text the cache
     * embedded, else the item's embed_model, "" = unnamed). Once fixed,
     * vectors of any other model are refused (SC_EMODEL). */
    char embed_model[SC_CACHE_TAG_MAX + 1];
    uint64_t ttl_ms; /* default entry TTL; 0 = entries never expire */
    sc_ttl_mode ttl_mode;
    uint64_t max_entries;        /* 0 = unlimited (overall caps still apply) */
    uint64_t max_bytes;          /* 0 = unlimited (overall caps still apply) */
    uint64_t max_response_bytes; /* 1..SC_CACHE_RESPONSE_LIMIT; default 1 MiB */
} sc_ns_config;

/* Fills cfg with the defaults: dim 0, f32, flat, threshold 0.90, margin 0 (both
 * following the embedder's defaults in a namespace of its model), model not
 * fixed, no TTL, absolute mode, no per-namespace caps, responses up to
 * 1 MiB. */
void sc_cache_ns_config_init(sc_ns_config *cfg);

/* Whether s is a namespace name: 1..SC_CACHE_NS_NAME_MAX bytes of
 * A-Z a-z 0-9 . _ : - */
bool sc_cache_ns_name_ok(const char *s);

/* Creates namespace name with cfg (both copied; cfg NULL = defaults); the
 * cache's ledger, when it has one, is told (sc_ledger_ns_made). Errors:
 * SC_EINVAL (bad name or config: unknown backend, an IVF backend with other
 * storage than f32), SC_ERANGE (dim, threshold, margin, response cap, nlist,
 * nprobe), SC_ENOTSUP (an IVF backend this build lacks), SC_ENSEXIST,
 * SC_ENSFULL (max_namespaces reached), SC_ENOMEM. */
sc_err sc_cache_ns_create(sc_cache *c, const char *name,
                          const sc_ns_config *cfg);

/* The same, for an insert into a namespace that did not exist: *serial is
 * set to the new namespace's, for sc_cache_ns_drop_unused should the
 * insert fail. Errors: those of sc_cache_ns_create; SC_EINVAL (serial
 * NULL). */
sc_err sc_cache_ns_create_for_insert(sc_cache *c, const char *name,
                                     const sc_ns_config *cfg, uint64_t *serial);

/* Replaces the namespace's threshold, margin, TTL, mode and caps with cfg's
 * (copied). dim, storage, backend, nlist and train_min may change only while
 * the namespace has never held a vector; otherwise cfg's must be 0 / equal
 * (dim) and equal (the others), else SC_EINVAL. nprobe may change at any
 * time: every scope's index takes it at once, for its searches that begin
 * after, waiting for no training's held round. Lowered caps evict at once
 * (LRU first). A new TTL applies to entries inserted from now on; a new mode
 * to hits from now on. Errors: SC_ENONS, SC_EINVAL, SC_ERANGE, SC_ENOTSUP.
 * On error nothing changes. */
sc_err sc_cache_ns_configure(sc_cache *c, const char *name,
                             const sc_ns_config *cfg);

/* Changes cfg's fields that an update means to change; returns SC_OK, or
 * an error that sc_cache_ns_update returns with nothing changed. */
typedef sc_err (*sc_cache_ns_edit_fn)(sc_ns_config *cfg, void *arg);

/* sc_cache_ns_configure with the namespace's current config (dim as fixed
 * so far) as edit(cfg, arg) changes it: read, edited and written under the
 * namespace's lock, so concurrent updates of different fields all take
 * (a get_config, then a configure, would write back the values it read
 * over another's change). edit runs with the cache's locks held: it must
 * not call into the cache, nor block. Errors: SC_EINVAL (edit NULL), edit's,
 * those of sc_cache_ns_configure. On error nothing changes. */
sc_err sc_cache_ns_update(sc_cache *c, const char *name,
                          sc_cache_ns_edit_fn edit, void *arg);

/* Whether sc_cache_ns_configure would take cfg for the namespace, without
 * changing anything (a start-up checks a whole configuration first).
 * Errors: those of sc_cache_ns_configure but the journal's. */
sc_err sc_cache_ns_check(sc_cache *c, const char *name,
                         const sc_ns_config *cfg);

/* Copies the namespace's current config (dim as fixed so far) into *out.
 * Errors: SC_ENONS, SC_EINVAL. */
sc_err sc_cache_ns_get_config(sc_cache *c, const char *name, sc_ns_config *out);

/* Removes the namespace and all its entries and counters (not its cost
 * ledger rows: money spent stays spent). Errors: SC_ENONS. */
sc_err sc_cache_ns_drop(sc_cache *c, const char *name);

/* The same, for an insert that made the namespace (serial, from
 * sc_cache_ns_create_for_insert) and then failed: only while that
 * namespace is unused since, that is, no insert into it took and no
 * configure changed it (one answered ok keeps it). Errors: SC_EINVAL
 * (serial 0), SC_ENONS (gone, or another of its name since), SC_EEXIST
 * (used: kept). */
sc_err sc_cache_ns_drop_unused(sc_cache *c, const char *name, uint64_t serial);

/* Copies up to cap namespace names, sorted, into names (caller's buffer) and
 * sets *count to how many exist (may exceed cap). */
sc_err sc_cache_ns_list(sc_cache *c, char (*names)[SC_CACHE_NS_NAME_MAX + 1],
                        size_t cap, size_t *count);

/* ---- entries ------------------------------------------------------------*/

/* What sc_cache_insert stores. Every pointer is borrowed for the call only:
 * the cache copies what it keeps. */
typedef struct sc_cache_item {
    const char *scope; /* NUL-terminated, <= SC_CACHE_SCOPE_MAX; NULL="" */
    const char *text;  /* prompt text (any bytes), or NULL */
    size_t text_len;   /* <= SC_CACHE_TEXT_MAX */
    const float *vec;  /* prompt embedding (dim floats), or NULL */
    uint32_t dim;      /* floats in vec */
    const char *embed_model; /* the model vec came from; NULL = "" */
    const void *response;    /* opaque bytes, may be NULL when response_len 0 */
    size_t response_len;     /* <= the namespace's max_response_bytes */
    const char *model;       /* optional tags, NUL-terminated, each */
    const char *feature;     /*   <= SC_CACHE_TAG_MAX bytes; NULL = "" */
    const char *user;
    uint64_t input_tokens; /* what the answer cost, for the ledger; both 0 =
                              not given: estimated from the bytes of text
                              and response, and marked so */
    uint64_t output_tokens;
    int64_t ttl_ms; /* 0 = namespace default, > 0 = this entry's TTL,
                       SC_CACHE_TTL_NEVER = never expires */
} sc_cache_item;

/* Stores one entry in namespace ns and sets *id (may be NULL) to its id:
 * unique in the cache, never reused. text feeds the exact layer (text that
 * normalises to nothing counts as none), vec the semantic layer; at least
 * one is required. Text with no vector is embedded by the cache's embedder
 * when the namespace is of the embedder's model or has no model yet (the
 * vector is then of the embedder's model; text with no usable word, the
 * embedder's SC_EZEROVEC, stays in the exact layer; other embedder errors
 * are returned as they are). In a namespace of another model, or with no
 * embedder, text alone is kept in the exact layer only (or, with no
 * embedder and text_needs_embedder, refused with SC_ENOEMBED). Inserting text
 * whose normal form an entry of the same (ns, scope) already has replaces that
 * entry (it is deleted first, counted as "replaced"; its id is gone; a
 * quarantined entry has left the exact layer and is not replaced). The first
 * vector fixes a dim-0 namespace's dimension and an unfixed namespace's
 * embedding model. Caps may evict LRU entries, here or in other namespaces.
 * Errors: SC_ENONS, SC_EINVAL (neither text nor vector, NULL with a length,
 * ttl_ms < -1), SC_ERANGE (ttl_ms), SC_EDIM, SC_EMODEL (the vector's model
 * is not the namespace's), SC_ENOEMBED, SC_ENONFINITE, SC_EZEROVEC,
 * SC_ETOOBIG (a string, the response or the whole entry over its cap; or
 * an entry that fits the namespace's or the cache's max_bytes alone but
 * not with its scope's text statistics, the embedder's stats_bytes, even
 * were every other entry evicted), SC_ESCOPEFULL, SC_EFULL (the ids are
 * used up: SC_CACHE_ID_LIMIT), SC_ENOMEM. On error the
 * cache is unchanged (an entry the insert would replace stays), except
 * in a race: an entry that the caps still evict at once (everything else
 * first; another scope's statistics kept by a lookup in flight) is said
 * to be SC_ETOOBIG, and what it replaced is gone. */
sc_err sc_cache_insert(sc_cache *c, const char *ns, const sc_cache_item *item,
                       uint64_t *id);

/* Tests only: fn(arg) is called by each sc_cache_insert of a vector into
 * a scope's index that existed before it, just before it adds the vector
 * (an index training's held round may make that add wait), holding no
 * lock of the namespace's but its inserts' own, from now on (NULL =
 * none). */
void sc_cache_set_index_add_hook(void (*fn)(void *arg), void *arg);

/* Tests only: fn(arg) is called just before each removal of an entry's
 * vector from its scope's index (a delete, expiry, eviction, replace,
 * quarantine or flush; an index training's held round may make it wait),
 * holding no lock of the namespace's, from now on (NULL = none). */
void sc_cache_set_index_remove_hook(void (*fn)(void *arg), void *arg);

/* Deletes entry id. Errors: SC_ENOTFOUND. */
sc_err sc_cache_delete(sc_cache *c, uint64_t id);

/* Reports that a hit served from entry id was wrong: the entry is
 * quarantined (leaves both layers at once, never served again; the record
 * stays, counted, until deleted, expired or evicted, and goes to the least
 * recent end of the LRU order: the caps evict quarantined entries before
 * any live one, the last reported first) and a false hit is
 * counted (sc_cache_stats.false_hits). The ledger charges the false hit
 * (the entry's call, once, however often it was served) only when the
 * entry may have been served: one never served since it was inserted has
 * had no hit credited, so nothing is taken back. A restored entry counts
 * as served (hits are not logged: its hit count may miss some). Idempotent:
 * a second report of the same entry counts nothing. Errors: SC_ENOTFOUND. */
sc_err sc_cache_feedback(sc_cache *c, uint64_t id);
/* The same, naming the tags of the lookup the wrong hit was served to, so
 * that the cost ledger charges the false hit to the rows its hit was
 * credited to: each tag given (non-NULL) replaces the entry's own, as the
 * lookup's tags did when the hit was counted. */
sc_err sc_cache_feedback_tagged(sc_cache *c, uint64_t id, const char *feature,
                                const char *user);

/* Deletes every entry of namespace ns (NULL = of every namespace); configs
 * and counters stay. Errors: SC_ENONS; the journal's, when it refuses a
 * namespace's flush: that namespace keeps its entries, and with ns NULL
 * so do those after it, while those before it stay flushed (each
 * namespace's flush is durable on its own). */
sc_err sc_cache_flush(sc_cache *c, const char *ns);

/* Removes every entry whose expiry time is <= now_ms (0 = the cache's clock)
 * and returns how many. Uses each namespace's expiry heap: cost is
 * O(namespaces + expired * log entries), never a scan of the entries. */
size_t sc_cache_expire(sc_cache *c, uint64_t now_ms);

/* ---- lookup -------------------------------------------------------------*/

/* Reply bytes that the hits of several lookups share (a lookup_batch's
 * reply), taken by the hits in the queries' order (an exact hit after a
 * semantic search is judged after it, its entry found again): once one hit
 * is served, a hit whose response, tags and SC_CACHE_HIT_OVERHEAD no
 * longer fit in left is not served, nor counted anywhere (stats, its
 * entry, the ledger): its lookup fails SC_ETOOBIG, and made again later it
 * is served. Used by one thread at a time. */
#define SC_CACHE_HIT_OVERHEAD 512u
typedef struct sc_cache_budget {
    size_t left;
    bool served;
} sc_cache_budget;

typedef struct sc_cache_query {
    const char *scope; /* as in sc_cache_item */
    const char *text;  /* for the exact layer, or NULL */
    size_t text_len;
    const float *vec; /* for the semantic layer, or NULL */
    uint32_t dim;
    const char *embed_model; /* the model vec came from; NULL = "" */
    uint64_t embed_tokens;   /* the ledger: tokens the client paid to embed
                                vec (0 = estimated from text, if any), at
                                most SC_CACHE_TOKENS_MAX (SC_ERANGE) */
    const char *feature;     /* the ledger: tags the lookup is counted under;
                                NULL = the served entry's ("" on a miss) */
    const char *user;
    bool has_threshold; /* use threshold below instead of the namespace's */
    float threshold;    /* finite, in [-1, 1] */
    sc_cache_budget *budget; /* NULL = none */
} sc_cache_query;

typedef enum sc_layer {
    SC_LAYER_NONE = 0,
    SC_LAYER_EXACT = 1,
    SC_LAYER_SEMANTIC = 2
} sc_layer;

typedef enum sc_miss_reason {
    SC_MISS_NONE = 0,            /* a hit */
    SC_MISS_NO_CANDIDATE = 1,    /* nothing servable in (ns, scope) */
    SC_MISS_BELOW_THRESHOLD = 2, /* best similarity < threshold */
    SC_MISS_AMBIGUOUS = 3        /* the margin rule refused the best */
} sc_miss_reason;

typedef struct sc_cache_result {
    bool hit;
    sc_layer layer;
    sc_miss_reason reason;
    float similarity;      /* of the served entry: 1 for exact; 0 on a miss */
    float best_similarity; /* best servable candidate, hit or miss; NAN when
                              reason is SC_MISS_NO_CANDIDATE */
    /* On a hit, the entry's: */
    uint64_t id;
    const void *response; /* response_len bytes; NULL on a miss */
    size_t response_len;
    const char *model; /* NUL-terminated, "" when unset */
    const char *feature;
    const char *user;
    uint64_t input_tokens;
    uint64_t output_tokens;
    bool tokens_estimated; /* the two above were estimated from bytes */
    uint64_t created_ms;
    uint64_t hit_count;  /* including this hit */
    uint64_t expires_ms; /* 0 = never */
    void *priv_;         /* the reference sc_cache_result_fini drops */
} sc_cache_result;

/* Looks q up in namespace ns (q and what it points to are borrowed for the
 * call only): the exact layer first (normalised text), then the semantic
 * layer (similarity >= threshold). Text with no vector is embedded, or
 * meets the exact layer only, or is refused, by the rules of insert. The
 * similarity is the cosine, or
 * in a namespace of the embedder's model with a rescore function, the
 * rescored cosine of each candidate that kept its text (candidates are
 * ranked by it; of equal similarities the older entry, the lower id,
 * ranks first, so the same one is served after a restart). The
 * threshold and margin are the query's or the
 * namespace's; a namespace of the embedder's model with auto_threshold
 * (auto_margin) uses the embedder's. Margin rule: when the namespace's margin
 * m > 0, a semantic hit with similarity s is refused (an ambiguous miss) if
 * another servable candidate with similarity >= s - m holds a different
 * response (compared by 64-bit hash and length). Expired entries met on the
 * way are removed; quarantined ones are never seen. Text that normalises to
 * nothing, and a vector sent to a namespace with no dimension yet, find
 * nothing. A hit refreshes the entry's LRU position (and its expiry, in
 * sliding mode). On success *res is filled; on a hit its pointers
 * (response, tags) hold a reference of their own that stays valid, even
 * after the entry goes, until sc_cache_result_fini(res). Call fini after
 * every successful lookup (a no-op after a miss). Errors (nothing counted,
 * *res zeroed): SC_ENONS, SC_EINVAL (no text or vector, bad threshold),
 * SC_ETOOBIG (scope or text), SC_EDIM, SC_EMODEL, SC_ENOEMBED,
 * SC_ENONFINITE, SC_EZEROVEC, SC_ENOMEM, or the embedder's error. */
sc_err sc_cache_lookup(sc_cache *c, const char *ns, const sc_cache_query *q,
                       sc_cache_result *res);

/* Drops the reference a lookup result holds; res becomes a miss. */
void sc_cache_result_fini(sc_cache_result *res);

/* Hit r of a lookup in namespace ns was not delivered (its bytes are no
 * answer, serving it ran out of memory, or its reply could not be sent;
 * r not yet finished): the
 * ledger takes back that one hit's avoided dollars, as a false hit's, under
 * the lookup's tags (each non-NULL one replaces r's, as they did when the
 * hit was counted). Charged once per call, not per entry, so each of two
 * lookups that met the same entry is taken back. With quarantine the
 * entry is also quarantined, as by sc_cache_feedback but charged nothing
 * more; without, the entry is left alone. Errors: SC_EINVAL (r no hit);
 * with quarantine, SC_ENOTFOUND and the journal's (the charge stands). */
sc_err sc_cache_hit_undone(sc_cache *c, const char *ns,
                           const sc_cache_result *r, const char *feature,
                           const char *user, bool quarantine);

/* n lookups in namespace ns at once: as n calls of sc_cache_lookup, but the
 * semantic searches of queries that share a scope run as one batched index
 * search. res[i] and rcs[i] receive query i's result and code (fini every
 * res[i] whose rcs[i] is SC_OK). Returns SC_OK, or SC_EINVAL / SC_ENOMEM
 * for the call as a whole; a missing namespace is SC_ENONS in every rcs[i]. */
sc_err sc_cache_lookup_many(sc_cache *c, const char *ns,
                            const sc_cache_query *qs, size_t n,
                            sc_cache_result *res, sc_err *rcs);

/* ---- accounting ---------------------------------------------------------*/

/* Histogram of every lookup's best similarity, hits and misses alike:
 *   bin 0          no candidate was seen (best_similarity NAN)
 *   bin 1          best < 0
 *   bins 2..81     [0.00, 0.80) in steps of 0.01
 *   bins 82..281   [0.800, 1.000] in steps of 0.001 (1.0 in the last bin)
 * Finer near the top, where thresholds live. Exact hits count as 1.0. */
#define SC_CACHE_HIST_BINS 282u

/* The bin a similarity falls in (NAN -> 0). */
unsigned sc_cache_hist_bin(float similarity);

/* The bounds [lo, hi) of bin; bin 0 gives NANs, bin 1 gives [-1, 0). */
void sc_cache_hist_range(unsigned bin, double *lo, double *hi);

typedef struct sc_cache_stats {
    uint64_t namespaces; /* 1, or how many for "all" */
    uint64_t lookups;    /* = exact_hits + semantic_hits + misses */
    uint64_t exact_hits;
    uint64_t semantic_hits;
    uint64_t misses; /* including the ambiguous ones */
    uint64_t ambiguous_misses;
    uint64_t inserts;
    uint64_t replaced; /* entries replaced by a same-text insert */
    uint64_t deletes;  /* by sc_cache_delete */
    uint64_t expirations;
    uint64_t evictions;   /* by a namespace or an overall cap */
    uint64_t flushed;     /* by sc_cache_flush */
    uint64_t false_hits;  /* entries reported wrong (each once) */
    uint64_t quarantined; /* entries quarantined now */
    uint64_t entries;     /* now, quarantined included; = inserts -
                             replaced - deletes - expirations -
                             evictions - flushed */
    uint64_t bytes;       /* now, see below */
    uint64_t scopes;      /* now */
    /* IVF trainings abandoned (too few live vectors at their copy; the
     * next trigger tries again): sc_index_get_train_stats's abandoned,
     * of the scopes' indexes open now and of those closed before (one
     * abandoned while its index's close waited for it included, counted
     * once that close returns). */
    uint64_t ivf_abandoned;
    /* Now: IVF scopes that the caps keep from training: untrained, none
     * in flight, automatic (train_min not SC_INDEX_TRAIN_MANUAL), and the
     * namespace's or the cache's caps below the rows and bytes their next
     * training waits for; worked out at each read (a restore's too). The
     * first insert into one logs a line, once a namespace
     * (docs/CONFIG.md). */
    uint64_t ivf_untrained_capped;
    uint64_t hist[SC_CACHE_HIST_BINS];
} sc_cache_stats;

/* Fills *out for namespace ns, or summed over all when ns is NULL (then
 * entries and bytes are the cache's own totals, read at one instant; the
 * other fields are each namespace's, read one after another). bytes is
 * approximate: response, text, tags, the vector as the scope's index holds
 * it (sc_index_vector_bytes: an int8 vector also has an f16 copy, an IVF
 * one FAISS's copy at its lists' capacity bound, twice its size), and
 * the entry's bookkeeping (about 300 bytes); plus the scopes' text
 * statistics (the embedder's stats_bytes); not scopes' indexes' slack.
 * Errors: SC_ENONS. */
sc_err sc_cache_stats_get(sc_cache *c, const char *ns, sc_cache_stats *out);

/* ---- iteration (persistence, cost ledger) -------------------------------*/

/* A snapshot of one entry. Every pointer is valid only during the callback. */
typedef struct sc_cache_entry_info {
    const char *embed_model; /* the namespace's model of vec ("" = unnamed) */
    uint64_t ttl_ms;         /* the entry's TTL (sliding mode), 0 = none */
    bool tokens_estimated;   /* input/output_tokens were estimated */
    uint64_t id;
    const char *ns;
    const char *scope;
    const char *text; /* NULL when the entry has none */
    size_t text_len;
    const float *vec; /* unit vector as stored (dim floats), or NULL */
    uint32_t dim;
    const void *response;
    size_t response_len;
    const char *model;
    const char *feature;
    const char *user;
    uint64_t input_tokens;
    uint64_t output_tokens;
    uint64_t created_ms;
    uint64_t last_hit_ms; /* 0 = never hit */
    uint64_t hit_count;
    uint64_t expires_ms; /* 0 = never */
    bool quarantined;
    /* Restore only: vec is the index's own (a snapshot's, as
     * sc_cache_foreach_entry gave it), a unit vector already, taken as it
     * is rather than normalised again (which would move it by a rounding,
     * an f16 one by a step of f16), unless it is not one within rounding.
     * false: vec as a client gave it (a logged insert), normalised as an
     * insert does. */
    bool vec_unit;
} sc_cache_entry_info;

/* Returns non-zero to stop the iteration. */
typedef int (*sc_cache_entry_fn)(const sc_cache_entry_info *e, void *arg);

/* Calls fn for every entry of ns (NULL = all namespaces), in no set order,
 * with that namespace locked: fn must not call into the cache. Errors:
 * SC_ENONS, SC_ENOMEM. */
sc_err sc_cache_foreach_entry(sc_cache *c, const char *ns, sc_cache_entry_fn fn,
                              void *arg);

/* ---- restore (cache/persist.c) -----------------------------------------*/

/* Puts namespace name in the state cfg describes: created when missing
 * (max_namespaces does not apply: what was saved comes back, and new
 * namespaces are refused until there are fewer than the cap), else its config
 * replaced as a whole (a lowered cap is applied by sc_cache_enforce_caps);
 * had_vector fixes cfg->dim and storage as a first vector would. Neither
 * journal nor ledger hears of it. A namespace of a model the embedder
 * supersedes (sc_cache_embedder) takes the embedder's model instead, and
 * its saved IVF trainings are refused (SC_EMODEL: it trains again). Errors:
 * as sc_cache_ns_create. */
sc_err sc_cache_restore_ns(sc_cache *c, const char *name,
                           const sc_ns_config *cfg, bool had_vector);

/* Puts entry e back as it was, with its id, times, hit count and
 * quarantine, into namespace e->ns (which must exist): the same rules as
 * sc_cache_insert (the same text in the same scope replaces), except that
 * caps are left to sc_cache_enforce_caps (an entry larger than a cap
 * included) and a quarantined entry replaces nothing,
 * but its namespace's response cap is not applied and neither journal nor
 * ledger hears of it. An entry whose id is present already is left as it is
 * (*added false), and so is one gone before a restored snapshot was taken
 * (sc_cache_restore_snapshot_end); one that expired by now_ms is not restored
 * (*added false), but the live entry of its text in its scope goes all the
 * same, as its insert replaced it (a replaced answer never comes back). Later
 * ids are allotted above every restored one. added may be NULL. An entry whose
 * vector is of a model the embedder supersedes comes back with its text
 * embedded again; without text, or with one the embedder refuses, it is left
 * out (SC_OK, *added false) and counted (below). Errors: as sc_cache_insert,
 * and SC_EINVAL for id 0 or UINT64_MAX (never given out), checked first: such
 * an entry takes no id, not even one left out. */
sc_err sc_cache_restore_entry(sc_cache *c, const sc_cache_entry_info *e,
                              uint64_t now_ms, bool *added);

/* A snapshot's entries are all restored (its end record read, or, under
 * --repair, the file's end reached without it: those read): from now
 * on an entry restored (from the logs replayed over it) whose id is at most
 * the highest of its namespace's entries in the snapshot, and that is not
 * present, is passed over (SC_OK, *added false): it was gone when the
 * snapshot read its namespace, and so was what it replaced. A flush, or a
 * drop, of the namespace ends this for it. */
void sc_cache_restore_snapshot_end(sc_cache *c);

/* A snapshot's entries are all restored (its end record read, or, under
 * --repair, the file's end reached without it; before any log is
 * replayed): the cache's LRU order, which the overall caps evict
 * by, is made the entries' last use (last hit, or insert when never hit)
 * across namespaces, the quarantined ones least recent of all. Each
 * namespace's own order, as the snapshot wrote it, is kept within it
 * (equal times, or times out of order where the clock went back, do not
 * reorder it): a merge of the namespaces' lists; of entries of two
 * namespaces with equal times, the one of the lower id (inserted first)
 * is less recent. The quarantined ones are merged from the least recent
 * end by the same rule reversed: the one used last (of equal times, the
 * higher id) is the least recent of all. The running cache puts the last
 * reported there; report times are in no file, so this is its order only
 * where the entries were reported in the order of their last use (each
 * report right after its hit). Late feedback, reports in another order
 * than the hits, or a report on an entry never hit (its insert its last
 * use) can give the quarantined entries of different namespaces another
 * order than the running cache's (each namespace's own is kept). Entries
 * restored later (the logs) come after, as they are restored. Waits for
 * every call in flight (it holds the cache for writing). O(n log k) for n
 * entries of k namespaces; allocates a cursor per namespace, and without
 * the memory for them merges in log2(k) passes instead, to the same
 * order. */
void sc_cache_restore_lru(sc_cache *c);

/* A logged feedback replayed: entry id quarantined as sc_cache_feedback
 * does, but the ledger does not hear of it (its own logged rows, which
 * follow, hold the false hit; with no such row, the false hit is lost with
 * the rest of the ledger's last second before a crash). */
sc_err sc_cache_restore_quarantine(sc_cache *c, uint64_t id);

/* What restoring moved to the embedder's model (sc_cache_embedder's
 * supersedes): namespaces and entries re-embedded, and entries left out
 * for having no text. */
typedef struct sc_cache_reembed_counts {
    uint64_t namespaces;
    uint64_t entries;
    uint64_t dropped;
} sc_cache_reembed_counts;
void sc_cache_reembed_counts_get(sc_cache *c, sc_cache_reembed_counts *out);

/* A namespace's scopes whose index is a trained IVF one, for a snapshot:
 * fn is called for each with the namespace locked (it may call
 * sc_index_save_training on ix, which is quick, and nothing of the cache).
 * serial: the namespace's from sc_cache_ns_state (one dropped and made
 * again since is SC_ENONS), or 0 for whichever has the name now. A non-OK
 * return from fn stops the walk and is returned. Errors also: SC_ENONS. */
typedef sc_err (*sc_cache_scope_index_fn)(void *arg, const char *scope,
                                          sc_index *ix);
sc_err sc_cache_scope_indexes(sc_cache *c, const char *ns, uint64_t serial,
                              sc_cache_scope_index_fn fn, void *arg);

/* Restore: the index of (ns, scope) takes the training saved at path
 * (sc_index_load_training), so it need not train again. Errors: SC_ENONS,
 * SC_ENOTFOUND (no such scope, or it has no index), SC_EMODEL (the
 * namespace was re-embedded: sc_cache_restore_ns), and the index's. */
sc_err sc_cache_restore_training(sc_cache *c, const char *ns,
                                 const char *scope, const char *path);

/* How many scopes of ns (NULL = all) have a trained IVF index now. */
size_t sc_cache_trained_scopes(sc_cache *c, const char *ns);

/* The longest chain of ns's exact-layer table (0 when ns does not exist):
 * for tests. */
size_t sc_cache_exact_longest_chain(sc_cache *c, const char *ns);

/* Evicts (LRU first) until every namespace's caps and the overall ones
 * hold: restores do not evict as they go, since a snapshot replayed with
 * its log holds, midway, entries that later records remove. */
void sc_cache_enforce_caps(sc_cache *c);

/* Entry ids are below this (2^53): exact as JSON numbers (doubles), for
 * clients that read them so. An insert that would give out this id is
 * refused (SC_EFULL); ids are never reused, so that is the end of the
 * cache's ids (docs/PROTOCOL.md, insert). */
#define SC_CACHE_ID_LIMIT (1ull << 53)

/* The id the next new entry gets, for a snapshot; and, on restore, ids
 * below next taken as used (given out before, to entries gone since), so
 * that no id is ever given out twice. */
uint64_t sc_cache_next_id(sc_cache *c);
void sc_cache_reserve_ids(sc_cache *c, uint64_t next);

/* The namespace's config and whether its dim is fixed, for a snapshot, and
 * (serial not NULL) its serial: a number no other namespace of this cache,
 * of that name or another, has had or will have. Errors: SC_ENONS. */
sc_err sc_cache_ns_state(sc_cache *c, const char *name, sc_ns_config *cfg,
                         bool *had_vector, uint64_t *serial);

/* Calls fn for every entry of namespace ns, in no set order, a chunk of
 * entries at a time with the namespace locked and the cache free in
 * between (after each chunk, between() runs with no lock held when not
 * NULL), so lookups and writes go on while a snapshot is written. An entry
 * that comes or goes meanwhile may or may not be seen, but none is given
 * that came after start() began: start() (when not NULL) runs once, with no
 * lock held, once the entries to visit are chosen and before the first, so
 * the namespace's state read there (sc_cache_ns_state) holds every entry
 * given: the dim, storage and backend of its vectors, which the first
 * vector fixed. serial: as for sc_cache_scope_indexes; the scan stops, with
 * the entries so far, if that namespace is dropped midway (never giving
 * one of another of its name). fn must not call into the cache. Errors:
 * SC_ENONS, SC_ENOMEM, or start()'s or between()'s error. */
sc_err sc_cache_scan_entries(sc_cache *c, const char *ns, uint64_t serial,
                             sc_err (*start)(void *arg), sc_cache_entry_fn fn,
                             sc_err (*between)(void *arg), void *arg);

/* ---- text ---------------------------------------------------------------*/

/* Writes the exact layer's normal form of in[0..n) to out (room for n bytes)
 * and returns its length: leading and trailing whitespace trimmed, each run
 * of ASCII whitespace made one space, ASCII letters lower-cased; other bytes
 * (UTF-8 included) kept as they are. */
size_t sc_cache_text_normalise(const char *in, size_t n, char *out);

/* ---- an entry's namespace (access keys) --------------------------------*/

/* Writes the name of entry id's namespace into out. Errors: SC_ENOTFOUND. */
sc_err sc_cache_entry_ns(sc_cache *c, uint64_t id,
                         char out[SC_CACHE_NS_NAME_MAX + 1]);

#endif
