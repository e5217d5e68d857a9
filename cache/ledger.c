/* ledger.c - the price table and the cost ledger (ledger.h). Rows live in
 * one open-addressing table keyed by (kind, namespace, tag) under one
 * mutex: an event touches three rows (its namespace's, its feature's and
 * its user's), each a few additions. */
#define _GNU_SOURCE
#include "cache/ledger.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "cache/prices_default.h"
#include "common/sc_seed.h"

/* ---- prices ---------------------------------------------------------- */

typedef struct named_price {
    char *name;
    sc_price p; /* an embedding model's: p.input alone */
} named_price;

/* The priced models of one kind: v[0..n). */
typedef struct price_list {
    named_price *v;
    size_t n;
} price_list;

struct sc_prices {
    char *date;
    double cpu_hour;
    price_list llm, emb;
};

static void list_free(price_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].name);
    }
    free(l->v);
}

void sc_prices_free(sc_prices *p)
{
    if (p == NULL) {
        return;
    }
    list_free(&p->llm);
    list_free(&p->emb);
    free(p->date);
    free(p);
}

static bool price_ok(json_t *v, double *out)
{
    if (!json_is_number(v)) {
        return false;
    }
    double d = json_number_value(v);
    if (!isfinite(d) || d < 0 || d > 1e6) {
        return false;
    }
    *out = d;
    return true;
}

/* Reads model mk's price from v into *pr; false, with the reason in msg,
 * where it is malformed. */
typedef bool (*price_fn)(json_t *v, const char *mk, sc_price *pr,
                         const char *name, char *msg, size_t cap);

static bool llm_price(json_t *v, const char *mk, sc_price *pr, const char *name,
                      char *msg, size_t cap)
{
    if (!json_is_object(v) ||
        !price_ok(json_object_get(v, "input"), &pr->input) ||
        !price_ok(json_object_get(v, "output"), &pr->output)) {
        snprintf(msg, cap,
                 "%s: models.%.64s needs input and output dollars >= 0", name,
                 mk);
        return false;
    }
    json_t *ci = json_object_get(v, "cached_input");
    pr->cached_input = pr->input;
    if (ci != NULL && !price_ok(ci, &pr->cached_input)) {
        snprintf(msg, cap, "%s: models.%.64s.cached_input must be >= 0", name,
                 mk);
        return false;
    }
    if (json_object_size(v) > 2u + (ci != NULL)) {
        snprintf(msg, cap,
                 "%s: models.%.64s: only input, output and cached_input", name,
                 mk);
        return false;
    }
    return true;
}

static bool embedding_price(json_t *v, const char *mk, sc_price *pr,
                            const char *name, char *msg, size_t cap)
{
    if (!price_ok(v, &pr->input)) {
        snprintf(msg, cap, "%s: embedding_models.%.64s must be dollars >= 0",
                 name, mk);
        return false;
    }
    return true;
}

/* Fills l (empty) from the JSON object models, each model's price read by
 * read: SC_EINVAL with the reason in msg, SC_ENOMEM. On failure the
 * models read so far stay in l, for list_free. */
static sc_err list_parse(json_t *models, price_fn read, price_list *l,
                         const char *name, char *msg, size_t cap)
{
    size_t n = json_object_size(models);
    l->v = calloc(n ? n : 1, sizeof(*l->v));
    if (l->v == NULL) {
        return SC_ENOMEM;
    }
    const char *mk;
    json_t *mv;
    json_object_foreach(models, mk, mv)
    {
        named_price *np = &l->v[l->n];
        if (!read(mv, mk, &np->p, name, msg, cap)) {
            return SC_EINVAL;
        }
        if ((np->name = strdup(mk)) == NULL) {
            return SC_ENOMEM;
        }
        l->n++;
    }
    return SC_OK;
}

sc_err sc_prices_parse(const char *json, size_t len, const char *name,
                       sc_prices **out, char *msg, size_t cap)
{
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        snprintf(msg, cap, "%s:%d:%d: %s", name, je.line, je.column, je.text);
        return SC_EINVAL;
    }
    sc_err rc = SC_EINVAL;
    sc_prices *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        json_decref(root);
        return SC_ENOMEM;
    }
    if (!json_is_object(root)) {
        snprintf(msg, cap, "%s: a price table is one JSON object", name);
        goto out;
    }
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v)
    {
        if (strcmp(k, "date") == 0 || strcmp(k, "currency") == 0 ||
            strcmp(k, "unit") == 0 || strcmp(k, "note") == 0) {
            if (!json_is_string(v)) {
                snprintf(msg, cap, "%s: '%s' must be a string", name, k);
                goto out;
            }
            if (strcmp(k, "currency") == 0 &&
                strcmp(json_string_value(v), "USD") != 0) {
                snprintf(msg, cap, "%s: only USD prices are supported", name);
                goto out;
            }
            if (strcmp(k, "date") == 0 &&
                (p->date = strdup(json_string_value(v))) == NULL) {
                rc = SC_ENOMEM;
                goto out;
            }
        } else if (strcmp(k, "cpu_hour") == 0) {
            if (!price_ok(v, &p->cpu_hour)) {
                snprintf(msg, cap, "%s: 'cpu_hour' must be dollars >= 0", name);
                goto out;
            }
        } else if (strcmp(k, "models") == 0 && json_is_object(v)) {
            sc_err lrc = list_parse(v, llm_price, &p->llm, name, msg, cap);
            if (lrc != SC_OK) {
                rc = lrc;
                goto out;
            }
        } else if (strcmp(k, "embedding_models") == 0 && json_is_object(v)) {
            sc_err lrc =
                list_parse(v, embedding_price, &p->emb, name, msg, cap);
            if (lrc != SC_OK) {
                rc = lrc;
                goto out;
            }
        } else {
            snprintf(msg, cap, "%s: unknown or malformed key '%.64s'", name, k);
            goto out;
        }
    }
    if (p->date == NULL && (p->date = strdup("undated")) == NULL) {
        rc = SC_ENOMEM;
        goto out;
    }
    rc = SC_OK;
out:
    json_decref(root);
    if (rc != SC_OK) {
        sc_prices_free(p);
        return rc;
    }
    *out = p;
    return SC_OK;
}

sc_err sc_prices_load(const char *path, sc_prices **out, char *msg, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(msg, cap, "%s: cannot be read", path);
        return SC_EIO;
    }
    char *buf = NULL;
    size_t n = 0, got;
    char chunk[8192];
    while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (n + got > (1u << 20)) {
            fclose(f);
            free(buf);
            snprintf(msg, cap, "%s: over 1 MiB", path);
            return SC_EINVAL;
        }
        char *grown = realloc(buf, n + got);
        if (grown == NULL) {
            fclose(f);
            free(buf);
            return SC_ENOMEM;
        }
        buf = grown;
        memcpy(buf + n, chunk, got);
        n += got;
    }
    fclose(f);
    sc_err rc = sc_prices_parse(buf != NULL ? buf : "", n, path, out, msg, cap);
    free(buf);
    return rc;
}

sc_err sc_prices_default(sc_prices **out)
{
    char msg[256];
    return sc_prices_parse((const char *)sc_prices_default_json,
                           sizeof(sc_prices_default_json) - 1,
                           "data/prices.json", out, msg, sizeof(msg));
}

/* Model's entry in l; NULL when it has none. */
static const named_price *list_find(const price_list *l, const char *model)
{
    if (model == NULL || model[0] == '\0') {
        return NULL;
    }
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->v[i].name, model) == 0) {
            return &l->v[i];
        }
    }
    return NULL;
}

bool sc_prices_llm(const sc_prices *p, const char *model, sc_price *out)
{
    const named_price *np = p != NULL ? list_find(&p->llm, model) : NULL;
    *out = np != NULL ? np->p : (sc_price){0};
    return np != NULL;
}

bool sc_prices_embedding(const sc_prices *p, const char *model, double *out)
{
    const named_price *np = p != NULL ? list_find(&p->emb, model) : NULL;
    *out = np != NULL ? np->p.input : 0;
    return np != NULL;
}

double sc_prices_cpu_hour(const sc_prices *p)
{
    return p != NULL ? p->cpu_hour : 0;
}

const char *sc_prices_date(const sc_prices *p)
{
    return p != NULL ? p->date : "none";
}

uint64_t sc_ledger_estimate_tokens(size_t bytes)
{
    return ((uint64_t)bytes + 3) / 4;
}

/* ---- the ledger ------------------------------------------------------ */

#define HOURS    (24u * 31u) /* the timeline: a month of hours */
#define HOUR_MS  3600000ull
#define MAX_ROWS (1u << 20) /* new tags beyond this count as "(other)" */
/* The slots a report page's pick, or a changed-only export (the
 * once-a-second save), reads in one hold of the lock: about
 * 0.5 ms to 1 ms of a lookup's wait (a whole table at the cap, 2^21
 * slots, took 50 ms to 120 ms). Its sums read a quarter as many rows a
 * hold (SUM_ROWS): a row read at its slot is a cache miss or two, one
 * found by its hash (the table grew meanwhile) some more. */
#define PAGE_CHUNK 16384u
#define SUM_ROWS(chunk) ((chunk) / 4 > 0 ? (chunk) / 4 : 1)

typedef struct row {
    uint64_t hash; /* 0 = empty slot */
    int kind;      /* sc_ledger_by */
    uint32_t born; /* l->used when it was made: rows made after a report
                      page began are not in it (sc_ledger_sum_page) */
    uint64_t changed; /* the export epoch of its last change, 0 = none */
    char *ns, *tag;
    sc_ledger_counts c;
} row;

struct sc_ledger {
    const sc_prices *prices;
    pthread_mutex_t mu;
    row *rows;
    size_t cap, used;
    uint64_t seed;   /* random: where a row lives is not known outside the
                        process (row_hash) */
    size_t max_rows; /* MAX_ROWS; tests lower it */
    sc_ledger_hour hours[HOURS];
    uint64_t hour_changed[HOURS]; /* as row.changed */
    /* Changes are stamped with epoch; a changed-only export starts the
     * next epoch as it begins and takes the rows changed after saved, and
     * saved moves up to an export's epoch only when its caller says it
     * was stored. */
    uint64_t epoch, saved;
    uint64_t grows;                  /* times the table grew (its rows moved) */
    size_t page_chunk; /* slots a report page or an export reads a hold */
    void (*page_hook)(void *, bool); /* sc_ledger_set_page_hook */
    void *page_hook_arg;
    void (*hold_hook)(void *); /* sc_ledger_set_hold_hook */
    void *hold_hook_arg;
    /* Turns for the bulk reads (a report page, /metrics' sum, the save),
     * which take the lock hold after hold: glibc's mutex is not fair, and
     * one that unlocks and locks again at once mostly gets it back, so an
     * insert waited out nearly whole /metrics sums (0.75 s to 3.7 s at
     * 10^6 namespaces). A lock that finds the mutex taken counts itself
     * in contended before it waits and in served once it has it; a bulk
     * read notes contended as it unlocks and, before its next hold, waits
     * on turn (bulk_waiting of them) until as many have been served. The
     * uncontended lock is one trylock, as a lock is. */
    atomic_uint_fast64_t contended, served;
    pthread_cond_t turn;
    atomic_uint bulk_waiting;
    void (*lock_hook)(void *); /* sc_ledger_set_lock_hook */
    void *lock_hook_arg;
};

sc_err sc_ledger_open(const sc_prices *prices, sc_ledger **out)
{
    sc_ledger *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        return SC_ENOMEM;
    }
    l->cap = 64;
    l->rows = calloc(l->cap, sizeof(row));
    if (l->rows == NULL || pthread_mutex_init(&l->mu, NULL) != 0) {
        free(l->rows);
        free(l);
        return SC_ENOMEM;
    }
    if (pthread_cond_init(&l->turn, NULL) != 0) {
        pthread_mutex_destroy(&l->mu);
        free(l->rows);
        free(l);
        return SC_ENOMEM;
    }
    l->seed = sc_seed_secret(l);
    l->prices = prices;
    l->max_rows = MAX_ROWS;
    l->page_chunk = PAGE_CHUNK;
    l->epoch = 1;
    *out = l;
    return SC_OK;
}

/* Takes l->mu; a caller that had to wait counts in contended and served
 * (the bulk reads' turns). */
static void ledger_lock(sc_ledger *l)
{
    if (pthread_mutex_trylock(&l->mu) == 0) {
        return;
    }
    atomic_fetch_add(&l->contended, 1);
    /* Read without the mutex (this lock waits for it): a test sets the
     * hook while other threads lock, so the pointer is atomic, its arg
     * stored before it. */
    void (*hook)(void *) = __atomic_load_n(&l->lock_hook, __ATOMIC_ACQUIRE);
    if (hook != NULL) {
        hook(__atomic_load_n(&l->lock_hook_arg, __ATOMIC_RELAXED));
    }
    pthread_mutex_lock(&l->mu);
    atomic_fetch_add(&l->served, 1);
    if (l->bulk_waiting > 0) {
        pthread_cond_broadcast(&l->turn);
    }
}

/* Ends one hold of a bulk read: returns the turn its next hold waits for,
 * every lock that was waiting now. */
static uint64_t bulk_unlock(sc_ledger *l)
{
    uint64_t turn = atomic_load(&l->contended);
    pthread_mutex_unlock(&l->mu);
    return turn;
}

/* Begins the next hold of a bulk read once as many locks as were waiting
 * when its last hold ended (turn, bulk_unlock) have had the mutex. served
 * counts locks, not which: a lock that came later and found the mutex
 * taken can use up the turn of one that waited before it, which may then
 * wait out another hold; but the read no longer takes the mutex straight
 * back hold after hold, and, waiting for no lock that came later, it
 * cannot be starved. */
static void bulk_lock(sc_ledger *l, uint64_t turn)
{
    pthread_mutex_lock(&l->mu);
    while (atomic_load(&l->served) < turn) {
        l->bulk_waiting++;
        pthread_cond_wait(&l->turn, &l->mu);
        l->bulk_waiting--;
    }
    if (l->hold_hook != NULL) {
        l->hold_hook(l->hold_hook_arg);
    }
}

void sc_ledger_lock_stats(sc_ledger *l, uint64_t *contended, uint64_t *served,
                          unsigned *bulk_waiting)
{
    *contended = atomic_load(&l->contended);
    *served = atomic_load(&l->served);
    *bulk_waiting = atomic_load(&l->bulk_waiting);
}

void sc_ledger_set_lock_hook(sc_ledger *l, void (*fn)(void *), void *arg)
{
    ledger_lock(l);
    __atomic_store_n(&l->lock_hook_arg, arg, __ATOMIC_RELAXED);
    __atomic_store_n(&l->lock_hook, fn, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&l->mu);
}

void sc_ledger_set_max_rows(sc_ledger *l, size_t n)
{
    ledger_lock(l);
    l->max_rows = n;
    pthread_mutex_unlock(&l->mu);
}

size_t sc_ledger_longest_run(sc_ledger *l)
{
    ledger_lock(l);
    size_t best = 0, run = 0;
    /* Twice round, so that a run across the end counts whole. */
    for (size_t i = 0; i < 2 * l->cap; i++) {
        run = l->rows[i & (l->cap - 1)].hash != 0 ? run + 1 : 0;
        best = run > best ? run : best;
    }
    pthread_mutex_unlock(&l->mu);
    return best < l->cap ? best : l->cap;
}

void sc_ledger_close(sc_ledger *l)
{
    if (l == NULL) {
        return;
    }
    for (size_t i = 0; i < l->cap; i++) {
        free(l->rows[i].ns);
        free(l->rows[i].tag);
    }
    free(l->rows);
    pthread_cond_destroy(&l->turn);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

/* A row's hash, seeded with the ledger's secret: its low bits pick the
 * row's home slot. Unseeded, a client could search offline for user or
 * feature tags that all share one home slot at every table size, and make
 * each new tag's row_get a scan of one run of thousands of rows, under
 * l->mu, which every lookup and insert of the server takes. */
static uint64_t row_hash(const sc_ledger *l, int kind, const char *ns,
                         const char *tag)
{
    /* Names are capped (namespace 128 bytes, tags 256) by the cache; longer
     * ones hash by their first bytes, and row_is compares them whole. */
    char buf[1 + 2 * 512];
    size_t nl = strnlen(ns, 511), tl = strnlen(tag, 511);
    buf[0] = (char)kind;
    memcpy(buf + 1, ns, nl);
    buf[1 + nl] = '\0';
    memcpy(buf + 2 + nl, tag, tl);
    uint64_t h = XXH3_64bits_withSeed(buf, 2 + nl + tl, l->seed);
    return h != 0 ? h : 1;
}

static bool row_is(const row *r, uint64_t h, int kind, const char *ns,
                   const char *tag)
{
    return r->hash == h && r->kind == kind && strcmp(r->ns, ns) == 0 &&
           strcmp(r->tag, tag) == 0;
}

static void grow(sc_ledger *l)
{
    size_t ncap = l->cap * 2;
    row *nr = calloc(ncap, sizeof(row));
    if (nr == NULL) {
        return; /* stays full-ish; lookups still find a slot below */
    }
    for (size_t i = 0; i < l->cap; i++) {
        if (l->rows[i].hash != 0) {
            size_t j = l->rows[i].hash & (ncap - 1);
            while (nr[j].hash != 0) {
                j = (j + 1) & (ncap - 1);
            }
            nr[j] = l->rows[i];
        }
    }
    free(l->rows);
    l->rows = nr;
    l->cap = ncap;
    l->grows++;
}

/* Under l->mu: the row of (kind, ns, tag), made when new; NULL when out of
 * memory. Once max_rows rows exist, a feature or user tag with no row yet
 * is counted in its namespace's "(other)" row (unless `exact`: a restore
 * brings back the rows it saved); tags that have a row keep it. */
static row *row_get_as(sc_ledger *l, int kind, const char *ns, const char *tag,
                       bool exact)
{
    uint64_t h = row_hash(l, kind, ns, tag);
    size_t j = h & (l->cap - 1);
    while (l->rows[j].hash != 0) {
        if (row_is(&l->rows[j], h, kind, ns, tag)) {
            return &l->rows[j];
        }
        j = (j + 1) & (l->cap - 1);
    }
    if (!exact && l->used >= l->max_rows && kind != SC_LEDGER_BY_NS &&
        strcmp(tag, "(other)") != 0) {
        return row_get_as(l, kind, ns, "(other)", false);
    }
    if ((l->used + 1) * 4 > l->cap * 3) {
        size_t cap0 = l->cap;
        grow(l);
        if (l->cap != cap0) {
            return row_get_as(l, kind, ns, tag, exact); /* slots moved */
        }
        /* No memory to grow: slot j is free still, up to a margin. */
        if ((l->used + 1) * 4 > l->cap * 3 + l->cap / 8) {
            return NULL;
        }
    }
    row *r = &l->rows[j];
    r->ns = strdup(ns);
    r->tag = strdup(tag);
    if (r->ns == NULL || r->tag == NULL) {
        free(r->ns);
        free(r->tag);
        r->ns = r->tag = NULL;
        return NULL;
    }
    r->hash = h;
    r->kind = kind;
    r->born = (uint32_t)l->used;
    memset(&r->c, 0, sizeof(r->c));
    l->used++;
    return r;
}

static row *row_get(sc_ledger *l, int kind, const char *ns, const char *tag)
{
    return row_get_as(l, kind, ns, tag, false);
}

/* The three rows an event with tags t counts in. Making a row may grow
 * the table, which moves every row: when it moved, the rows are looked up
 * again (they all exist by then, so the second pass cannot grow it). */
static size_t rows_of_once(sc_ledger *l, const sc_ledger_tags *t, row **out);

static size_t rows_of(sc_ledger *l, const sc_ledger_tags *t, row **out)
{
    const row *before = l->rows;
    size_t n = rows_of_once(l, t, out);
    if (l->rows != before) {
        n = rows_of_once(l, t, out);
    }
    for (size_t i = 0; i < n; i++) {
        out[i]->changed = l->epoch; /* every caller counts something */
    }
    return n;
}

static size_t rows_of_once(sc_ledger *l, const sc_ledger_tags *t, row **out)
{
    const char *ns = t->ns != NULL ? t->ns : "";
    size_t n = 0;
    out[n] = row_get(l, SC_LEDGER_BY_NS, ns, "");
    n += out[n] != NULL;
    out[n] = row_get(l, SC_LEDGER_BY_FEATURE, ns,
                     t->feature != NULL ? t->feature : "");
    n += out[n] != NULL;
    out[n] = row_get(l, SC_LEDGER_BY_USER, ns, t->user != NULL ? t->user : "");
    n += out[n] != NULL;
    return n;
}

/* Under l->mu: the row of (kind, ns, tag), or NULL when there is none;
 * never makes one. */
static row *row_find(sc_ledger *l, int kind, const char *ns, const char *tag)
{
    uint64_t h = row_hash(l, kind, ns, tag);
    for (size_t j = h & (l->cap - 1); l->rows[j].hash != 0;
         j = (j + 1) & (l->cap - 1)) {
        if (row_is(&l->rows[j], h, kind, ns, tag)) {
            return &l->rows[j];
        }
    }
    return NULL;
}

bool sc_ledger_ns_made(sc_ledger *l, const char *ns)
{
    bool made = false;
    ledger_lock(l);
    if (row_find(l, SC_LEDGER_BY_NS, ns, "") != NULL) {
        /* Made first: making it may grow the table and move the rows. */
        row *b = row_get_as(l, SC_LEDGER_KIND_BASE, ns, "", true);
        const row *r = row_find(l, SC_LEDGER_BY_NS, ns, "");
        if (b != NULL && r != NULL) {
            b->c = r->c;
            b->changed = l->epoch;
            made = true;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return made;
}

bool sc_ledger_ns_has_row(sc_ledger *l, const char *ns)
{
    ledger_lock(l);
    bool has = row_find(l, SC_LEDGER_BY_NS, ns, "") != NULL;
    pthread_mutex_unlock(&l->mu);
    return has;
}

void sc_ledger_ns_base(sc_ledger *l, const char *ns, sc_ledger_counts *out)
{
    ledger_lock(l);
    const row *b = row_find(l, SC_LEDGER_KIND_BASE, ns, "");
    if (b != NULL) {
        *out = b->c;
    } else {
        memset(out, 0, sizeof(*out));
    }
    pthread_mutex_unlock(&l->mu);
}

static void stamp(sc_ledger_counts *c, uint64_t now)
{
    if (c->first_ms == 0 || now < c->first_ms) {
        c->first_ms = now;
    }
    if (now > c->last_ms) {
        c->last_ms = now;
    }
}

/* The dollars of a call; false when its model has no price. */
static bool call_usd(const sc_prices *p, const sc_ledger_call *call,
                     double *usd)
{
    sc_price pr;
    if (!sc_prices_llm(p, call->model, &pr)) {
        *usd = 0;
        return false;
    }
    *usd = ((double)call->input_tokens * pr.input +
            (double)call->output_tokens * pr.output) /
           1e6;
    return true;
}

static sc_ledger_hour *hour_of(sc_ledger *l, uint64_t now)
{
    uint64_t h = now / HOUR_MS;
    sc_ledger_hour *b = &l->hours[h % HOURS];
    if (b->hour_ms != h * HOUR_MS) {
        memset(b, 0, sizeof(*b));
        b->hour_ms = h * HOUR_MS;
    }
    l->hour_changed[h % HOURS] = l->epoch;
    return b;
}

void sc_ledger_insert(sc_ledger *l, const sc_ledger_tags *t,
                      const sc_ledger_call *call, uint64_t now_ms)
{
    if (l == NULL) {
        return;
    }
    double usd;
    bool priced = call_usd(l->prices, call, &usd);
    ledger_lock(l);
    row *rs[3];
    size_t n = rows_of(l, t, rs);
    for (size_t i = 0; i < n; i++) {
        sc_ledger_counts *c = &rs[i]->c;
        c->inserts++;
        c->inserts_unpriced += !priced;
        c->inserts_estimated += call->estimated;
        c->usd_inserted += usd;
        stamp(c, now_ms);
    }
    pthread_mutex_unlock(&l->mu);
}

void sc_ledger_lookup_done(sc_ledger *l, const sc_ledger_tags *t,
                           const sc_ledger_lookup *ev, uint64_t now_ms)
{
    if (l == NULL) {
        return;
    }
    bool hit = ev->layer != 0;
    double avoided = 0;
    bool priced = hit && call_usd(l->prices, &ev->served, &avoided);
    double cpu = sc_prices_cpu_hour(l->prices) / 3600.0;
    double usd_embed = ev->embed_cpu_s * cpu;
    bool embed_unpriced = false;
    if (ev->embed_model != NULL) {
        double per;
        if (sc_prices_embedding(l->prices, ev->embed_model, &per)) {
            usd_embed += (double)ev->embed_tokens * per / 1e6;
        } else {
            embed_unpriced = true;
        }
    }
    double usd_lookup = ev->lookup_cpu_s * cpu;
    ledger_lock(l);
    row *rs[3];
    size_t n = rows_of(l, t, rs);
    for (size_t i = 0; i < n; i++) {
        sc_ledger_counts *c = &rs[i]->c;
        c->lookups++;
        c->exact_hits += ev->layer == 1;
        c->semantic_hits += ev->layer == 2;
        if (hit) {
            c->tokens_in_avoided += ev->served.input_tokens;
            c->tokens_out_avoided += ev->served.output_tokens;
            c->hits_estimated += ev->served.estimated;
            c->hits_unpriced += !priced;
            c->usd_avoided += avoided;
        }
        c->embed_cpu_s += ev->embed_cpu_s;
        c->lookup_cpu_s += ev->lookup_cpu_s;
        c->embed_tokens += ev->embed_tokens;
        c->embed_unpriced += embed_unpriced;
        c->embed_estimated += ev->embed_estimated;
        c->usd_embed += usd_embed;
        c->usd_lookup += usd_lookup;
        stamp(c, now_ms);
    }
    sc_ledger_hour *b = hour_of(l, now_ms);
    b->lookups++;
    b->hits += hit;
    b->usd_avoided += avoided;
    b->usd_spent += usd_embed + usd_lookup;
    pthread_mutex_unlock(&l->mu);
}

void sc_ledger_false_hit(sc_ledger *l, const sc_ledger_tags *t,
                         const sc_ledger_call *call)
{
    if (l == NULL) {
        return;
    }
    double usd;
    bool priced = call_usd(l->prices, call, &usd);
    ledger_lock(l);
    row *rs[3];
    size_t n = rows_of(l, t, rs);
    for (size_t i = 0; i < n; i++) {
        sc_ledger_counts *c = &rs[i]->c;
        c->false_hits++;
        c->false_hits_unpriced += !priced;
        c->usd_false_hits += usd;
    }
    pthread_mutex_unlock(&l->mu);
}

void sc_ledger_counts_add(sc_ledger_counts *a, const sc_ledger_counts *b)
{
    a->lookups += b->lookups;
    a->exact_hits += b->exact_hits;
    a->semantic_hits += b->semantic_hits;
    a->tokens_in_avoided += b->tokens_in_avoided;
    a->tokens_out_avoided += b->tokens_out_avoided;
    a->hits_estimated += b->hits_estimated;
    a->hits_unpriced += b->hits_unpriced;
    a->usd_avoided += b->usd_avoided;
    a->inserts += b->inserts;
    a->inserts_unpriced += b->inserts_unpriced;
    a->inserts_estimated += b->inserts_estimated;
    a->usd_inserted += b->usd_inserted;
    a->embed_cpu_s += b->embed_cpu_s;
    a->lookup_cpu_s += b->lookup_cpu_s;
    a->embed_tokens += b->embed_tokens;
    a->embed_unpriced += b->embed_unpriced;
    a->embed_estimated += b->embed_estimated;
    a->usd_embed += b->usd_embed;
    a->usd_lookup += b->usd_lookup;
    a->false_hits += b->false_hits;
    a->false_hits_unpriced += b->false_hits_unpriced;
    a->usd_false_hits += b->usd_false_hits;
    if (b->first_ms != 0 && (a->first_ms == 0 || b->first_ms < a->first_ms)) {
        a->first_ms = b->first_ms;
    }
    if (b->last_ms > a->last_ms) {
        a->last_ms = b->last_ms;
    }
}

/* A row of the breakdown as the pick takes it: its namespace and tag (the
 * row's own strings: rows are never removed and their strings live as
 * long as the ledger, so they stay valid after the lock), and its slot
 * while the table does not grow. Its key is the namespace by namespace,
 * else the tag. */
typedef struct picked {
    const char *ns, *tag;
    size_t slot;
} picked;

static int cmp_by_ns(const void *a, const void *b)
{
    return strcmp(((const picked *)a)->ns, ((const picked *)b)->ns);
}

static int cmp_by_tag(const void *a, const void *b)
{
    return strcmp(((const picked *)a)->tag, ((const picked *)b)->tag);
}

static const char *picked_key(const picked *p, sc_ledger_by by)
{
    return by == SC_LEDGER_BY_NS ? p->ns : p->tag;
}

/* Whether r is a row of namespace ns (of any, NULL) that was made before
 * the page began (used0 rows then): the rows a page and its total read. */
static bool row_in(const row *r, const char *ns, size_t used0)
{
    return r->hash != 0 && r->born < used0 &&
           (ns == NULL || strcmp(r->ns, ns) == 0);
}

sc_err sc_ledger_sum(sc_ledger *l, const char *ns, sc_ledger_by by,
                     sc_ledger_counts *total, sc_ledger_row_fn fn, void *arg)
{
    return sc_ledger_sum_page(l, ns, by, NULL, 0, total, fn, arg, NULL);
}

/* The page is taken in short holds of the lock, so that every insert and
 * lookup, which counts in the ledger, waits for neither a scan of the
 * whole table (2^21 slots at the cap: 50 ms to 120 ms in one hold), nor a
 * sort, nor a copy of every row's sums:
 *
 * 1. the pick: the rows above after (their namespace, tag and slot, 24
 *    bytes a row) and the namespace rows the total sums, l->page_chunk
 *    slots a hold;
 * 2. after sorting and merging the keys without the lock: the sums of the
 *    page's rows and then of the total's, SUM_ROWS a hold, each read at
 *    its slot, or found by its hash when the table grew since the pick.
 *    In one hold, the total's read of one row per namespace held the
 *    lock 11 ms to 52 ms at 10^5 namespaces and 0.1 s to 0.3 s at 10^6,
 *    and a /metrics sum (every namespace's row as well) 27 ms to 0.4 s
 *    and 2.2 s to 4.3 s (a loaded 2-core machine). A hold of 4,096 rows
 *    took a median 0.4 ms, read in slot order (the total's), 6 ms to
 *    25 ms in name order (/metrics' rows: a cache and TLB miss each).
 *
 * Only rows made before the page began are read (row.born < used0), so
 * the page, more and the total are over one set of rows, the ledger as
 * the page began, whatever is made while it is read, with the sums of 2.
 * A row made between two chunks could land in a slot already read or one
 * still to read: the filter keeps it out either way. When the table grows
 * between two chunks its rows move, some into slots already read, so the
 * pick starts over: the table only doubles, about 15 times in a ledger's
 * life from 64 slots to the cap's 2^21, so a page starts over at most as
 * often. The sums need no start over: a row is found again by its hash.
 * Each row's sums are as of its own hold, and sums only grow, so with
 * the page's rows read before the total's (every event counts in its
 * namespace's row as in its tags', at once) a row's sums, or a page's,
 * are never more than the total's. */
sc_err sc_ledger_sum_page(sc_ledger *l, const char *ns, sc_ledger_by by,
                          const char *after, size_t limit,
                          sc_ledger_counts *total, sc_ledger_row_fn fn,
                          void *arg, size_t *more)
{
    memset(total, 0, sizeof(*total));
    if (more != NULL) {
        *more = 0;
    }
    ledger_lock(l);
    size_t used0 = l->used, chunk = l->page_chunk;
    uint64_t grows = l->grows;
    void (*hook)(void *, bool) = l->page_hook;
    void *hook_arg = l->page_hook_arg;
    uint64_t turn = bulk_unlock(l);
    /* At most used0 rows are read, whatever is made meanwhile. */
    picked *rows = malloc((used0 + 1) * sizeof(picked));
    picked *nss = malloc((used0 + 1) * sizeof(picked));
    if (rows == NULL || nss == NULL) {
        free(nss);
        free(rows);
        return SC_ENOMEM;
    }
    size_t n = 0, nn = 0;
    for (size_t i = 0;;) {
        bulk_lock(l, turn);
        if (l->grows != grows) {
            grows = l->grows; /* its rows moved: start over */
            i = n = nn = 0;
        }
        size_t end = l->cap - i > chunk ? i + chunk : l->cap;
        for (; i < end; i++) {
            const row *r = &l->rows[i];
            if (!row_in(r, ns, used0)) {
                continue;
            }
            if (r->kind == SC_LEDGER_BY_NS) {
                nss[nn++] = (picked){r->ns, r->tag, i};
            }
            if ((int)by != r->kind) {
                continue;
            }
            /* By tag within all namespaces, a tag's rows are summed over
             * namespaces below: merged by sorting, not by a search for
             * each, which took seconds for 40,000 users with every insert
             * and lookup waiting. Rows of earlier pages are left out
             * before the sort: every row of one tag is in or out
             * together, so the merge below is whole. */
            const char *key = by == SC_LEDGER_BY_NS ? r->ns : r->tag;
            if (after != NULL && strcmp(key, after) <= 0) {
                continue;
            }
            rows[n++] = (picked){r->ns, r->tag, i};
        }
        bool done = i == l->cap;
        turn = bulk_unlock(l);
        if (done) {
            break;
        }
        if (hook != NULL) {
            hook(hook_arg, false);
        }
    }
    /* The page: its first `page` keys, whose rows are rows[0..np). */
    size_t np = 0, page = 0, keys = 0;
    if (fn != NULL) {
        qsort(rows, n, sizeof(picked),
              by == SC_LEDGER_BY_NS ? cmp_by_ns : cmp_by_tag);
        for (size_t i = 0; i < n; i++) {
            if (i == 0 || strcmp(picked_key(&rows[i - 1], by),
                                 picked_key(&rows[i], by)) != 0) {
                if (limit == 0 || keys < limit) {
                    page++;
                }
                keys++;
            }
            if (keys == page) {
                np = i + 1;
            }
        }
    }
    /* The page's distinct keys, their sums, and which key each row of
     * rows[0..np) is summed in. */
    const char **pkeys = malloc((page + 1) * sizeof(*pkeys));
    sc_ledger_counts *sums = calloc(page + 1, sizeof(*sums));
    size_t *dest = malloc((np + 1) * sizeof(size_t));
    if (pkeys == NULL || sums == NULL || dest == NULL) {
        free(dest);
        free(sums);
        free(pkeys);
        free(nss);
        free(rows);
        return SC_ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < np; i++) {
        const char *key = picked_key(&rows[i], by);
        if (k == 0 || strcmp(pkeys[k - 1], key) != 0) {
            pkeys[k++] = key;
        }
        dest[i] = k - 1;
    }
    if (hook != NULL) {
        hook(hook_arg, true);
    }
    /* rows[0..np) and then nss[0..nn), a bounded number a hold. */
    const size_t per = SUM_ROWS(chunk);
    for (size_t i = 0; i < np + nn;) {
        if (i > 0 && hook != NULL) {
            hook(hook_arg, true);
        }
        bulk_lock(l, turn);
        /* The rows are where the pick found them unless the table grew
         * since (a lookup of each: about three times as long). */
        bool moved = l->grows != grows;
        size_t end = np + nn - i > per ? i + per : np + nn;
        for (; i < end; i++) {
            const picked *pk = i < np ? &rows[i] : &nss[i - np];
            int kind = i < np ? (int)by : SC_LEDGER_BY_NS;
            const row *r =
                moved ? row_find(l, kind, pk->ns, pk->tag) : &l->rows[pk->slot];
            if (r != NULL) {
                sc_ledger_counts_add(i < np ? &sums[dest[i]] : total, &r->c);
            }
        }
        turn = bulk_unlock(l);
    }
    for (size_t i = 0; i < page; i++) {
        fn(arg, pkeys[i], &sums[i]);
    }
    if (more != NULL) {
        *more = keys - page;
    }
    free(dest);
    free(sums);
    free(pkeys);
    free(nss);
    free(rows);
    return SC_OK;
}

void sc_ledger_set_page_hook(sc_ledger *l, void (*fn)(void *, bool), void *arg)
{
    ledger_lock(l);
    l->page_hook = fn;
    l->page_hook_arg = arg;
    pthread_mutex_unlock(&l->mu);
}

void sc_ledger_set_hold_hook(sc_ledger *l, void (*fn)(void *), void *arg)
{
    ledger_lock(l);
    l->hold_hook = fn;
    l->hold_hook_arg = arg;
    pthread_mutex_unlock(&l->mu);
}

void sc_ledger_set_page_chunk(sc_ledger *l, size_t slots)
{
    ledger_lock(l);
    l->page_chunk = slots != 0 ? slots : PAGE_CHUNK;
    pthread_mutex_unlock(&l->mu);
}

size_t sc_ledger_timeline(sc_ledger *l, sc_ledger_hour *out, size_t cap)
{
    ledger_lock(l);
    /* A slot is cleared only when a later hour lands on it: hours of a
     * month before the newest are still there after a quiet spell, and
     * left out. */
    uint64_t newest = 0;
    for (size_t i = 0; i < HOURS; i++) {
        if (l->hours[i].lookups != 0 && l->hours[i].hour_ms > newest) {
            newest = l->hours[i].hour_ms;
        }
    }
    size_t n = 0;
    for (size_t i = 0; i < HOURS; i++) {
        if (l->hours[i].lookups != 0 && n < cap &&
            l->hours[i].hour_ms + (uint64_t)HOURS * HOUR_MS > newest) {
            out[n++] = l->hours[i];
        }
    }
    pthread_mutex_unlock(&l->mu);
    /* Oldest first. */
    for (size_t i = 1; i < n; i++) {
        sc_ledger_hour h = out[i];
        size_t j = i;
        for (; j > 0 && out[j - 1].hour_ms > h.hour_ms; j--) {
            out[j] = out[j - 1];
        }
        out[j] = h;
    }
    return n;
}

void sc_ledger_derive(const sc_ledger_counts *c, sc_ledger_report *r)
{
    memset(r, 0, sizeof(*r));
    double n = (double)c->lookups;
    double hits = (double)(c->exact_hits + c->semantic_hits);
    double priced_hits = hits - (double)c->hits_unpriced;
    r->hit_rate = n > 0 ? hits / n : NAN;
    r->exact_hit_rate = n > 0 ? (double)c->exact_hits / n : NAN;
    r->semantic_hit_rate = n > 0 ? (double)c->semantic_hits / n : NAN;
    r->usd_spent = c->usd_embed + c->usd_lookup;
    r->usd_net = c->usd_avoided - c->usd_false_hits - r->usd_spent;
    r->return_on_spend =
        r->usd_spent > 0 ? (c->usd_avoided - c->usd_false_hits) / r->usd_spent
                         : NAN;
    r->usd_per_hit = priced_hits > 0 ? c->usd_avoided / priced_hits : NAN;
    r->usd_per_lookup = n > 0 ? r->usd_spent / n : NAN;
    r->break_even_hit_rate =
        r->usd_per_hit > 0 ? r->usd_per_lookup / r->usd_per_hit : NAN;
    double priced_inserts = (double)(c->inserts - c->inserts_unpriced);
    r->usd_per_call =
        priced_inserts > 0 ? c->usd_inserted / priced_inserts : r->usd_per_hit;
    double span_ms =
        c->last_ms > c->first_ms ? (double)(c->last_ms - c->first_ms) : 0;
    r->days = fmax(span_ms, (double)HOUR_MS) / 86400000.0;
    r->lookups_per_day = n / r->days;
    static const double scale[3] = {1, 10, 100};
    for (int i = 0; i < 3; i++) {
        double month = r->lookups_per_day * 30.0 * scale[i];
        r->month_without[i] = month * r->usd_per_call;
        r->month_with[i] = month * (1.0 - r->hit_rate) * r->usd_per_call +
                           month * r->usd_per_lookup;
    }
    r->usd_per_request =
        n > 0 ? ((n - hits) * r->usd_per_call + r->usd_spent) / n : NAN;
}

/* ---- persistence ----------------------------------------------------- */

/* A changed-only export reads the table in short holds, as a report page's
 * pick does (l->page_chunk slots a hold, and at most SUM_ROWS of them
 * given to fn, whose copy and encoding of a row is most of a hold's time),
 * taking its turn between holds (bulk_lock): in one hold it kept every
 * insert and lookup waiting 64 ms to 441 ms at 10^6 namespaces (3 * 10^6
 * rows, 2^22 slots; a loaded 2-core machine), once a second; a hold of
 * 16,384 slots took a median 0.23 ms to 0.29 ms, 256 of them about as
 * long in all as the one. Its mark is the epoch it ends, taken in its first
 * hold, so that a row changed from then on is stamped after the mark and stays
 * changed for the next export, whether this one read it before or after the
 * change; every row changed before (changed <= mark) is still in the
 * table, and is read in a later hold at its slot. A table that grew
 * between two holds moved its rows, some into slots already read, so the
 * scan starts over (at most about 15 times in a ledger's life, as a
 * page's pick), giving again rows given before: the later is the newer.
 * The timeline's hours, a month of them, are read in the last hold. */
static uint64_t export_changed(sc_ledger *l, sc_ledger_state_fn fn, void *arg)
{
    ledger_lock(l);
    uint64_t mark = l->epoch++, saved = l->saved, grows = l->grows;
    size_t chunk = l->page_chunk, per = SUM_ROWS(chunk);
    void (*hook)(void *, bool) = l->page_hook;
    void *hook_arg = l->page_hook_arg;
    for (size_t i = 0;;) {
        if (l->grows != grows) {
            grows = l->grows; /* its rows moved: start over */
            i = 0;
        }
        size_t end = l->cap - i > chunk ? i + chunk : l->cap, given = 0;
        for (; i < end && given < per; i++) {
            const row *r = &l->rows[i];
            if (r->hash == 0 || r->changed <= saved) {
                continue;
            }
            sc_ledger_row_state st = {r->kind, r->ns, r->tag, r->c};
            fn(arg, &st, NULL);
            given++;
        }
        if (i == l->cap) {
            break;
        }
        uint64_t turn = bulk_unlock(l);
        if (hook != NULL) {
            hook(hook_arg, false);
        }
        bulk_lock(l, turn);
    }
    for (size_t i = 0; i < HOURS; i++) {
        if (l->hours[i].hour_ms != 0 && l->hour_changed[i] > saved) {
            fn(arg, NULL, &l->hours[i]);
        }
    }
    pthread_mutex_unlock(&l->mu);
    return mark;
}

uint64_t sc_ledger_export(sc_ledger *l, bool changed_only,
                          sc_ledger_state_fn fn, void *arg)
{
    if (changed_only) {
        return export_changed(l, fn, arg);
    }
    ledger_lock(l);
    for (size_t i = 0; i < l->cap; i++) {
        row *r = &l->rows[i];
        if (r->hash != 0) {
            sc_ledger_row_state st = {r->kind, r->ns, r->tag, r->c};
            fn(arg, &st, NULL);
        }
    }
    for (size_t i = 0; i < HOURS; i++) {
        if (l->hours[i].hour_ms != 0) {
            fn(arg, NULL, &l->hours[i]);
        }
    }
    pthread_mutex_unlock(&l->mu);
    return 0;
}

size_t sc_ledger_export_ns(sc_ledger *l, const char *ns, sc_ledger_state_fn fn,
                           void *arg)
{
    static const int kinds[2] = {SC_LEDGER_BY_NS, SC_LEDGER_KIND_BASE};
    size_t n = 0;
    ledger_lock(l);
    for (int i = 0; i < 2; i++) {
        const row *r = row_find(l, kinds[i], ns, "");
        if (r != NULL) {
            sc_ledger_row_state st = {r->kind, r->ns, r->tag, r->c};
            fn(arg, &st, NULL);
            n++;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return n;
}

void sc_ledger_export_saved(sc_ledger *l, uint64_t mark)
{
    ledger_lock(l);
    if (mark < l->epoch && mark > l->saved) {
        l->saved = mark;
    }
    pthread_mutex_unlock(&l->mu);
}

sc_err sc_ledger_import_row(sc_ledger *l, int kind, const char *ns,
                            const char *tag, const sc_ledger_counts *c)
{
    if (l == NULL || ns == NULL || tag == NULL || c == NULL ||
        (kind != SC_LEDGER_BY_NS && kind != SC_LEDGER_BY_FEATURE &&
         kind != SC_LEDGER_BY_USER && kind != SC_LEDGER_KIND_BASE)) {
        return SC_EINVAL;
    }
    ledger_lock(l);
    row *r = row_get_as(l, kind, ns, tag, true);
    if (r != NULL) {
        r->c = *c;
    }
    pthread_mutex_unlock(&l->mu);
    return r != NULL ? SC_OK : SC_ENOMEM;
}

sc_err sc_ledger_import_hour(sc_ledger *l, const sc_ledger_hour *h)
{
    if (l == NULL || h == NULL || h->hour_ms % HOUR_MS != 0) {
        return SC_EINVAL;
    }
    ledger_lock(l);
    sc_ledger_hour *b = &l->hours[(h->hour_ms / HOUR_MS) % HOURS];
    if (h->hour_ms >= b->hour_ms) {
        *b = *h;
    }
    pthread_mutex_unlock(&l->mu);
    return SC_OK;
}
