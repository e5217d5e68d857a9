/* bench_hitrate.c - "how often does semcached answer, and how often is the
 * answer wrong?" Drives a real semcached (started here, or --addr) through
 * libsemcache with labelled question sets (../shared/data/README.md): intent
 * sets (a cache file and a query file) in preload and stream mode, and pair
 * sets. Sends text only, so the server's built-in embedder does the work.
 * Prints a table per set, one JSON object per row with --json, and an SVG
 * plot of hit rate and precision against the threshold with --svg. */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <msgpack.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto/client.h"
#include "tests/test_tmp.h"

/* ---- data ----------------------------------------------------------- */

typedef struct rec {
    char *text;
    char *label; /* NULL: out of scope (queries) */
    char *b;     /* pairs: the second prompt */
    bool dup;    /* pairs */
} rec;

typedef struct set {
    rec *r;
    size_t n, cap;
} set;

static pid_t server_pid; /* the semcached this run started, or 0 */

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_hitrate: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
    }
    exit(1);
}

static char *dup_str(json_t *v, const char *path, size_t line, const char *key)
{
    if (!json_is_string(v)) {
        die("%s:%zu: \"%s\" must be a string", path, line, key);
    }
    char *s = strdup(json_string_value(v));
    if (s == NULL) {
        die("out of memory");
    }
    return s;
}

/* Reads a JSONL file: intent records ({"text", "label"}) or, when pairs,
 * pair records ({"a", "b", "duplicate"}). Any file of those formats works
 * (blank lines, CRLF line ends, a UTF-8 byte-order mark, as some editors
 * save, before the first line); a malformed line stops the run with its
 * line number. */
static void read_jsonl(const char *path, bool pairs, set *out)
{
    FILE *f = fopen(path, "r");
    if (f == NULL && errno == ENOENT) {
        die("%s: %s (the labelled sets are not in the repository: README.md, "
            "\"Benchmarks\", says where to get them)",
            path, strerror(errno));
    }
    if (f == NULL) {
        die("%s: %s", path, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t got;
    memset(out, 0, sizeof(*out));
    while ((got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        const char *text = line;
        if (lineno == 1 && got >= 3 && memcmp(line, "\xef\xbb\xbf", 3) == 0) {
            text += 3;
            got -= 3;
        }
        if (got == 0 || strspn(text, " \t\r\n") == (size_t)got) {
            continue;
        }
        json_error_t je;
        json_t *o = json_loadb(text, (size_t)got, 0, &je);
        if (o == NULL || !json_is_object(o)) {
            die("%s:%zu: not a JSON object (%s)", path, lineno,
                o == NULL ? je.text : "wrong type");
        }
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 1024;
            out->r = realloc(out->r, out->cap * sizeof(rec));
            if (out->r == NULL) {
                die("out of memory");
            }
        }
        rec *r = &out->r[out->n++];
        memset(r, 0, sizeof(*r));
        if (pairs) {
            r->text = dup_str(json_object_get(o, "a"), path, lineno, "a");
            r->b = dup_str(json_object_get(o, "b"), path, lineno, "b");
            json_t *d = json_object_get(o, "duplicate");
            if (!json_is_boolean(d)) {
                die("%s:%zu: \"duplicate\" must be true or false", path,
                    lineno);
            }
            r->dup = json_is_true(d);
        } else {
            r->text = dup_str(json_object_get(o, "text"), path, lineno, "text");
            json_t *l = json_object_get(o, "label");
            if (l == NULL) {
                die("%s:%zu: \"label\" is missing (null for out of scope)",
                    path, lineno);
            }
            r->label =
                json_is_null(l) ? NULL : dup_str(l, path, lineno, "label");
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    if (out->n == 0) {
        die("%s: no records", path);
    }
}

static void free_set(set *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->r[i].text);
        free(s->r[i].label);
        free(s->r[i].b);
    }
    free(s->r);
}

/* The set's name: the file's base name up to its first dot, as a part of
 * a namespace name: bytes outside [A-Za-z0-9_:-] become '_', at most 64
 * ("my set.queries.jsonl" is my_set). */
static char *set_name(const char *path)
{
    const char *b = strrchr(path, '/');
    b = b != NULL ? b + 1 : path;
    size_t n = strcspn(b, ".");
    if (n > 64) {
        n = 64;
    }
    char *out = strndup(b, n);
    if (out == NULL) {
        die("out of memory");
    }
    for (char *c = out; *c != '\0'; c++) {
        bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '_' || *c == ':' ||
                  *c == '-';
        *c = ok ? *c : '_';
    }
    if (out[0] == '\0') {
        free(out);
        out = strdup("set");
        if (out == NULL) {
            die("out of memory");
        }
    }
    return out;
}

/* ---- talking to the server ------------------------------------------ */

static sc_client *cli;
static unsigned long long ns_seq;
static int vote_opt = -1;     /* --vote: -1 = the server's default, 0, 1 */
static const char *model_opt; /* --model: the LLM inserts are tagged with */

static void ns_op(const char *op, const char *ns, int vote);

static const char *backend_opt;          /* --backend: the namespaces' index */
static unsigned long long train_min_opt; /* --train-min, 0 = the default */
static double settle_opt;                /* --settle: seconds after preload */
static FILE *decisions;                  /* --decisions: per-query lines */

/* A fresh namespace for one run; created explicitly when --vote or
 * --backend is given (else the first insert creates it on the server's
 * defaults). */
static void new_ns(char *out, size_t cap, const char *set, const char *mode)
{
    snprintf(out, cap, "hr.%s.%s.%llu", set, mode, ++ns_seq);
    if (vote_opt >= 0 || backend_opt != NULL) {
        ns_op("ns_create", out, vote_opt);
    }
}

/* Records the server cannot take (an empty text, or only spaces): an
 * insert of one stores nothing, a lookup of one is a miss. Said at the end. */
static unsigned long long unusable;

/* Returns the new entry's id, 0 when the text was not stored (unusable). */
static uint64_t insert_text(const char *ns, const char *scope, const char *text,
                            const char *resp)
{
    sc_client_item it;
    memset(&it, 0, sizeof(it));
    it.scope = scope;
    it.text = text;
    it.response = resp;
    it.response_len = strlen(resp);
    it.model = model_opt; /* tokens: estimated by the server from bytes */
    sc_client_error err;
    uint64_t id = 0;
    if (text[0] == '\0') {
        unusable++; /* nothing to embed: never stored */
        return 0;
    }
    sc_err rc = sc_client_insert(cli, ns, &it, &id, &err);
    if (rc == SC_EREMOTE && strcmp(err.code, "bad_request") == 0) {
        unusable++; /* e.g. only spaces: the server stores nothing */
        return 0;
    }
    if (rc != SC_OK) {
        die("insert into %s refused: %s: %s", ns,
            rc == SC_EREMOTE ? err.code : sc_strerror(rc),
            rc == SC_EREMOTE ? err.message : "");
    }
    return id;
}

/* One lookup's outcome: hit, the layer, the served label, the similarity
 * (the server's: rescored where it rescores) of the best candidate. */
typedef struct look {
    bool hit, exact;
    char *label; /* owned (look_free): the served response, NUL-terminated,
                    NULL on a miss; compared whole, whatever its length */
    size_t label_len;
    float sim;
} look;

static void look_free(look *l)
{
    free(l->label);
    l->label = NULL;
}

static look lookup_text(const char *ns, const char *scope, const char *text,
                        bool has_thr, float thr)
{
    sc_client_item it;
    memset(&it, 0, sizeof(it));
    it.scope = scope;
    it.text = text;
    it.has_threshold = has_thr;
    it.threshold = thr;
    sc_client_result res;
    sc_client_error err;
    if (text[0] == '\0') {
        unusable++; /* no text, no lookup: the cache cannot answer it */
        look miss = {false, false, NULL, 0, -2.0f};
        return miss;
    }
    sc_err rc = sc_client_lookup(cli, ns, &it, &res, &err);
    if (rc != SC_OK) {
        die("lookup in %s refused: %s: %s", ns,
            rc == SC_EREMOTE ? err.code : sc_strerror(rc),
            rc == SC_EREMOTE ? err.message : "");
    }
    look l = {res.hit, strcmp(res.layer, "exact") == 0, NULL, 0, res.best};
    if (res.hit) {
        l.label = malloc(res.response_len + 1);
        if (l.label == NULL) {
            die("out of memory");
        }
        memcpy(l.label, res.response, res.response_len);
        l.label[res.response_len] = '\0';
        l.label_len = res.response_len;
        l.sim = res.similarity;
    }
    free(res.response);
    return l;
}

/* {"v": 1, "op": OP, "ns": NS[, "vote": bool]}: the client has no call
 * for these. */
static void ns_op(const char *op, const char *ns, int vote)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    bool create = strcmp(op, "ns_create") == 0;
    bool be = create && backend_opt != NULL;
    bool tm = create && train_min_opt > 0;
    msgpack_pack_map(&pk, 3 + (vote >= 0) + be + tm);
    const char *kv[] = {"op", op, "ns", ns};
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_uint8(&pk, 1);
    for (int i = 0; i < 4; i++) {
        msgpack_pack_str_with_body(&pk, kv[i], strlen(kv[i]));
    }
    if (vote >= 0) {
        msgpack_pack_str_with_body(&pk, "vote", 4);
        vote ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    }
    if (be) {
        msgpack_pack_str_with_body(&pk, "backend", 7);
        msgpack_pack_str_with_body(&pk, backend_opt, strlen(backend_opt));
    }
    if (tm) {
        msgpack_pack_str_with_body(&pk, "train_min", 9);
        msgpack_pack_uint64(&pk, train_min_opt);
    }
    uint8_t *reply = NULL;
    size_t rlen = 0;
    /* {"ok": true, ...} starts 0x8_ 0xa2 'o' 'k' 0xc3. */
    if (sc_client_call(cli, sb.data, sb.size, &reply, &rlen) != SC_OK ||
        rlen < 5 || memcmp(reply + 1, "\xa2ok\xc3", 4) != 0) {
        die("%s %s failed", op, ns);
    }
    free(reply);
    msgpack_sbuffer_destroy(&sb);
}

static void drop_ns(const char *ns)
{
    ns_op("ns_drop", ns, -1);
}

/* ---- rows ----------------------------------------------------------- */

typedef struct row {
    const char *set, *mode;
    double threshold; /* NAN on the default row */
    bool is_default;
    size_t queries, hits, correct, exact, oos, oos_hits;
    /* pairs */
    double precision, recall, f1;
    size_t pairs;
} row;

static bool json_out;
static bool default_only; /* --default-only: stream mode's default row */

static double ratio(size_t a, size_t b)
{
    return b == 0 ? NAN : (double)a / (double)b;
}

static void put_num(const char *k, double v, bool last)
{
    if (isnan(v)) {
        printf("\"%s\": null%s", k, last ? "" : ", ");
    } else {
        printf("\"%s\": %.4f%s", k, v, last ? "" : ", ");
    }
}

static void print_intent_row(const row *r)
{
    double hr = ratio(r->hits, r->queries);
    double prec = ratio(r->correct, r->hits);
    double oos = ratio(r->oos_hits, r->oos);
    if (json_out) {
        printf("{\"bench\": \"hitrate\", \"set\": \"%s\", \"mode\": \"%s\", ",
               r->set, r->mode);
        put_num("threshold", r->threshold, false);
        put_num("hit_rate", hr, false);
        put_num("precision", prec, false);
        put_num("oos_false_hit_rate", oos, false);
        printf("\"queries\": %zu, \"hits\": %zu, \"correct_hits\": %zu, "
               "\"exact_hits\": %zu, \"oos_queries\": %zu, \"default\": %s}\n",
               r->queries, r->hits, r->correct, r->exact, r->oos,
               r->is_default ? "true" : "false");
    }
}

static void print_row(const row *r)
{
    if (json_out) {
        print_intent_row(r);
        return;
    }
    double hr = ratio(r->hits, r->queries);
    double prec = ratio(r->correct, r->hits);
    double oos = ratio(r->oos_hits, r->oos);
    char thr[32], precb[16] = "-", oosb[16] = "-";
    if (r->is_default) {
        snprintf(thr, sizeof(thr), "default");
    } else {
        snprintf(thr, sizeof(thr), "%.2f", r->threshold);
    }
    if (!isnan(prec)) {
        snprintf(precb, sizeof(precb), "%.1f%%", 100 * prec);
    }
    if (!isnan(oos)) {
        snprintf(oosb, sizeof(oosb), "%.1f%%", 100 * oos);
    }
    printf("| %s | %s | %s | %zu | %.1f%% | %s | %s | %zu |\n", r->set, r->mode,
           thr, r->queries, 100 * hr, precb, oosb, r->exact);
}

static void print_pair_row(const row *r)
{
    if (json_out) {
        printf("{\"bench\": \"hitrate\", \"set\": \"%s\", \"mode\": "
               "\"pairs\", ",
               r->set);
        put_num("threshold", r->threshold, false);
        put_num("precision", r->precision, false);
        put_num("recall", r->recall, false);
        put_num("f1", r->f1, false);
        printf("\"pairs\": %zu, \"default\": %s}\n", r->pairs,
               r->is_default ? "true" : "false");
        return;
    }
    char thr[32];
    if (r->is_default) {
        snprintf(thr, sizeof(thr), "default");
    } else {
        snprintf(thr, sizeof(thr), "%.2f", r->threshold);
    }
    printf("| %s | pairs | %s | %zu | %.3f | %.3f | %.3f |\n", r->set, thr,
           r->pairs, r->precision, r->recall, r->f1);
}

/* ---- the runs ------------------------------------------------------- */

typedef struct sweep {
    double lo, hi, step;
    size_t n;
} sweep;

static double sweep_at(const sweep *s, size_t i)
{
    return round((s->lo + (double)i * s->step) * 1e6) / 1e6;
}

static void count(row *r, const rec *q, const look *l)
{
    r->queries++;
    if (q->label == NULL) {
        r->oos++;
    }
    if (!l->hit) {
        return;
    }
    r->hits++;
    r->exact += l->exact;
    if (q->label == NULL) {
        r->oos_hits++;
    } else if (strlen(q->label) == l->label_len &&
               memcmp(q->label, l->label, l->label_len) == 0) {
        r->correct++;
    }
}

/* Preload: the cache file goes in once (each line with its label as the
 * answer); every query is looked up once
 * with threshold -1, which serves the best candidate unless the margin
 * rule refuses it, and for a threshold t the server would serve the same
 * candidate exactly when its similarity is >= t: so the sweep is read off
 * that one pass. The default row is a real pass at the server's settings,
 * and one sweep row is re-run for real to check the reading. */
static void run_preload(const char *name, const set *cache, const set *qs,
                        const sweep *sw, row *rows, row *def)
{
    char ns[160], oos_label[64];
    new_ns(ns, sizeof(ns), name, "preload");
    for (size_t i = 0; i < cache->n; i++) {
        const char *label = cache->r[i].label;
        if (label == NULL) {
            /* A cache line labelled null gets an answer of its own, as an
             * out-of-scope query does in stream mode: no query's label
             * matches it (not even ""), and two such lines are two
             * answers to the server's response vote, not one. */
            snprintf(oos_label, sizeof(oos_label), "\x01oos-cache-%zu", i);
            label = oos_label;
        }
        insert_text(ns, NULL, cache->r[i].text, label);
    }
    if (settle_opt > 0) {
        /* Let a background index build (--backend auto) finish. */
        usleep((useconds_t)(settle_opt * 1e6));
    }
    look *all = calloc(qs->n, sizeof(look));
    for (size_t i = 0; i < qs->n; i++) {
        all[i] = lookup_text(ns, NULL, qs->r[i].text, true, -1.0f);
    }
    for (size_t t = 0; t < sw->n; t++) {
        row *r = &rows[t];
        memset(r, 0, sizeof(*r));
        r->set = name;
        r->mode = "preload";
        r->threshold = sweep_at(sw, t);
        for (size_t i = 0; i < qs->n; i++) {
            look l = all[i];
            l.hit = l.hit && l.sim >= (float)r->threshold;
            count(r, &qs->r[i], &l);
        }
    }
    /* The check: the middle of the sweep, for real. */
    size_t mid = sw->n / 2;
    row chk = {0};
    for (size_t i = 0; i < qs->n; i++) {
        look l = lookup_text(ns, NULL, qs->r[i].text, true,
                             (float)rows[mid].threshold);
        count(&chk, &qs->r[i], &l);
        look_free(&l);
    }
    if (chk.hits != rows[mid].hits || chk.correct != rows[mid].correct) {
        die("preload sweep check failed at %.2f: %zu hits (%zu correct) for "
            "real, %zu (%zu) read off the sweep",
            rows[mid].threshold, chk.hits, chk.correct, rows[mid].hits,
            rows[mid].correct);
    }
    memset(def, 0, sizeof(*def));
    def->set = name;
    def->mode = "preload";
    def->threshold = NAN;
    def->is_default = true;
    for (size_t i = 0; i < qs->n; i++) {
        look l = lookup_text(ns, NULL, qs->r[i].text, false, 0);
        count(def, &qs->r[i], &l);
        if (decisions != NULL) {
            /* One line per query of the default row: set, index, hit, the
             * served label (for comparing two runs' decisions). */
            fprintf(decisions, "%s\t%zu\t%d\t%s\n", name, i, l.hit,
                    l.hit ? l.label : "");
        }
        look_free(&l);
    }
    for (size_t i = 0; i < qs->n; i++) {
        look_free(&all[i]);
    }
    free(all);
    drop_ns(ns);
}

/* Stream: queries in order; a miss is inserted with its label as the
 * answer (what an FAQ bot stores after calling the LLM; out-of-scope
 * queries are stored too, with an answer of their own). One fresh
 * namespace per threshold: the cache's contents depend on it. */
static void run_stream_one(const char *name, const set *qs, bool has_thr,
                           float thr, row *r)
{
    char ns[160];
    new_ns(ns, sizeof(ns), name, "stream");
    memset(r, 0, sizeof(*r));
    r->set = name;
    r->mode = "stream";
    r->threshold = has_thr ? thr : NAN;
    r->is_default = !has_thr;
    char oos_label[64];
    for (size_t i = 0; i < qs->n; i++) {
        look l = lookup_text(ns, NULL, qs->r[i].text, has_thr, thr);
        count(r, &qs->r[i], &l);
        bool hit = l.hit;
        look_free(&l);
        if (!hit) {
            const char *label = qs->r[i].label;
            if (label == NULL) {
                /* An out-of-scope question gets an answer of its own,
                 * which no other query's label matches. */
                snprintf(oos_label, sizeof(oos_label), "\x01oos-%zu", i);
                label = oos_label;
            }
            insert_text(ns, NULL, qs->r[i].text, label);
        }
    }
    if (!default_only) {
        drop_ns(ns); /* --default-only keeps it, for the server's report */
    }
}

/* In stream mode the first query of each label can never hit (nothing is
 * stored yet): the best hit rate any cache could reach. */
static double stream_ceiling(const set *qs)
{
    size_t firsts = 0;
    for (size_t i = 0; i < qs->n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen && qs->r[i].label != NULL; j++) {
            seen = qs->r[j].label != NULL &&
                   strcmp(qs->r[j].label, qs->r[i].label) == 0;
        }
        firsts += !seen;
    }
    return 1.0 - (double)firsts / (double)qs->n;
}

/* Pairs: each pair gets a scope of its own; a goes in, b is looked up with
 * threshold -1, so the server's similarity of b to a is known, and b would
 * hit at t exactly when it is >= t; then b is looked up at the server's
 * settings (the default row), and a is deleted (its scope goes with it). */
static void run_pairs(const char *name, const set *ps, const sweep *sw,
                      row *rows, row *def)
{
    char ns[160], scope[32];
    new_ns(ns, sizeof(ns), name, "pairs");
    float *sim = malloc(ps->n * sizeof(float));
    bool *dhit = malloc(ps->n * sizeof(bool));
    for (size_t i = 0; i < ps->n; i++) {
        snprintf(scope, sizeof(scope), "pair-%zu", i);
        uint64_t id = insert_text(ns, scope, ps->r[i].text, "a");
        look l = lookup_text(ns, scope, ps->r[i].b, true, -1.0f);
        sim[i] = l.hit ? l.sim : -2.0f;
        look_free(&l);
        l = lookup_text(ns, scope, ps->r[i].b, false, 0);
        dhit[i] = l.hit;
        look_free(&l);
        sc_client_error err;
        if (id != 0 && sc_client_delete(cli, id, &err) != SC_OK) {
            die("delete %llu failed", (unsigned long long)id);
        }
    }
    size_t pos = 0;
    for (size_t i = 0; i < ps->n; i++) {
        pos += ps->r[i].dup;
    }
    for (size_t t = 0; t <= sw->n; t++) {
        row *r = t < sw->n ? &rows[t] : def;
        memset(r, 0, sizeof(*r));
        r->set = name;
        r->mode = "pairs";
        r->pairs = ps->n;
        size_t tp = 0, fp = 0;
        if (t < sw->n) {
            r->threshold = sweep_at(sw, t);
            for (size_t i = 0; i < ps->n; i++) {
                bool hit = sim[i] >= (float)r->threshold;
                tp += hit && ps->r[i].dup;
                fp += hit && !ps->r[i].dup;
            }
        } else {
            r->threshold = NAN;
            r->is_default = true;
            for (size_t i = 0; i < ps->n; i++) {
                tp += dhit[i] && ps->r[i].dup;
                fp += dhit[i] && !ps->r[i].dup;
            }
        }
        r->precision = tp + fp ? (double)tp / (double)(tp + fp) : NAN;
        r->recall = pos ? (double)tp / (double)pos : NAN;
        r->f1 = tp ? 2.0 * r->precision * r->recall / (r->precision + r->recall)
                   : 0.0;
    }
    free(sim);
    free(dhit);
    drop_ns(ns);
}

/* ---- the plot ------------------------------------------------------- */

/* Hit rate (solid) and precision (dashed) against the threshold, one
 * colour per mode, for one set. */
static void write_svg(const char *path, const char *name, const sweep *sw,
                      row *const *series, const char *const *labels,
                      size_t nseries, bool pairs)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        die("%s: %s", path, strerror(errno));
    }
    const double W = 640, H = 440, L = 60, R = 20, T = 40, B = 90;
    const char *colour[] = {"#1f77b4", "#d62728", "#2ca02c"};
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
            "height=\"%.0f\" font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"%.0f\" y=\"24\" font-size=\"15\">%s: %s by "
            "threshold (built-in embedder)</text>\n",
            W, H, L, name,
            pairs ? "precision, recall, F1"
                  : "hit rate, "
                    "precision");
    double x0 = sw->lo, x1 = sweep_at(sw, sw->n - 1);
    if (x1 - x0 < 1e-9) { /* one threshold: a point in the middle */
        x0 -= 0.05;
        x1 += 0.05;
    }
#define PX(x) (L + ((x)-x0) / (x1 - x0) * (W - L - R))
#define PY(y) (H - B - (y) * (H - T - B))
    for (int g = 0; g <= 10; g++) {
        double y = g / 10.0;
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                "stroke=\"#ddd\"/><text x=\"%.1f\" y=\"%.1f\" "
                "text-anchor=\"end\">%d%%</text>\n",
                L, PY(y), W - R, PY(y), L - 6, PY(y) + 4, g * 10);
    }
    for (size_t t = 0; t < sw->n; t += (sw->n + 9) / 10) {
        double x = sweep_at(sw, t);
        fprintf(f,
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.2f"
                "</text>\n",
                PX(x), H - B + 18, x);
    }
    fprintf(f,
            "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">threshold"
            "</text>\n",
            (L + W - R) / 2, H - B + 34);
    double ly = H - B + 56; /* the legend, under the axis */
    for (size_t s = 0; s < nseries; s++) {
        const char *what[3] = {pairs ? "precision" : "hit rate",
                               pairs ? "recall" : "precision", "F1"};
        int curves = pairs ? 3 : 2;
        for (int c = 0; c < curves; c++) {
            fprintf(f,
                    "<polyline fill=\"none\" stroke=\"%s\" "
                    "stroke-width=\"2\"%s points=\"",
                    colour[s % 3],
                    c == 1   ? " stroke-dasharray=\"6,4\""
                    : c == 2 ? " stroke-dasharray=\"2,3\""
                             : "");
            for (size_t t = 0; t < sw->n; t++) {
                const row *r = &series[s][t];
                double y = pairs ? (c == 0   ? r->precision
                                    : c == 1 ? r->recall
                                             : r->f1)
                                 : (c == 0 ? ratio(r->hits, r->queries)
                                           : ratio(r->correct, r->hits));
                if (!isnan(y)) {
                    fprintf(f, "%.1f,%.1f ", PX(r->threshold), PY(y));
                }
            }
            fprintf(f, "\"/>\n");
            fprintf(f,
                    "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                    "stroke=\"%s\" stroke-width=\"2\"%s/><text x=\"%.1f\" "
                    "y=\"%.1f\">%s %s</text>\n",
                    L + c * 190.0, ly, L + c * 190.0 + 30, ly, colour[s % 3],
                    c == 1   ? " stroke-dasharray=\"6,4\""
                    : c == 2 ? " stroke-dasharray=\"2,3\""
                             : "",
                    L + c * 190.0 + 36, ly + 4, labels[s], what[c]);
        }
        ly += 18;
    }
#undef PX
#undef PY
    fprintf(f, "</svg>\n");
    fclose(f);
}

/* ---- main ----------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(
        f, "usage: bench_hitrate [--cache F --queries F]... [--pairs F]...\n"
           "                     [--mode preload|stream|both] [--sweep "
           "LO:HI:STEP]\n"
           "                     [--addr URL | --server PATH --table FILE]\n"
           "                     [--vote on|off] [--model M] [--default-only]\n"
           "                     [--backend flat|auto|ivf-flat|ivf-sq8]\n"
           "                     [--train-min N] [--settle S] [--decisions F]\n"
           "                     [--json] [--svg PREFIX]\n"
           "\n"
           "Intent sets (--cache and --queries, in pairs) run in preload "
           "and/or\n"
           "stream mode; pair sets (--pairs) give precision, recall and F1.\n"
           "Without --addr a semcached is started from --server (default\n"
           "build/semcached) with --embed-table FILE (default\n"
           "build/data/embeddings.sctab). --svg PREFIX writes "
           "PREFIX<set>.svg.\n"
           "--vote creates each namespace with the response vote on or "
           "off\n(default: the server's choice). --model tags every insert "
           "with an LLM\nmodel, so that the server's cost report prices "
           "the hits.\n--backend / --train-min create each namespace with "
           "that index; --settle\nwaits after preloading (a background "
           "build); --decisions writes the preload\ndefault row's "
           "hit/miss and label per query, to compare two runs.\n");
}

int main(int argc, char **argv)
{
    const char *caches[8], *queries[8], *pairs[8];
    size_t nc = 0, nq = 0, np = 0;
    const char *mode = "both", *addr = NULL, *svg = NULL;
    const char *server = "build/semcached";
    const char *table = "build/data/embeddings.sctab";
    sweep sw = {0.50, 0.98, 0.02, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--json") == 0) {
            json_out = true;
            continue;
        }
        if (strcmp(a, "--default-only") == 0) {
            default_only = true;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL) {
            usage(stderr);
            return 2;
        }
        i++;
        if (strcmp(a, "--cache") == 0 && nc < 8) {
            caches[nc++] = v;
        } else if (strcmp(a, "--queries") == 0 && nq < 8) {
            queries[nq++] = v;
        } else if (strcmp(a, "--pairs") == 0 && np < 8) {
            pairs[np++] = v;
        } else if (strcmp(a, "--model") == 0) {
            model_opt = v;
        } else if (strcmp(a, "--backend") == 0) {
            backend_opt = v;
        } else if (strcmp(a, "--train-min") == 0) {
            train_min_opt = strtoull(v, NULL, 10);
        } else if (strcmp(a, "--settle") == 0) {
            settle_opt = atof(v);
        } else if (strcmp(a, "--decisions") == 0) {
            if ((decisions = fopen(v, "w")) == NULL) {
                die("%s: %s", v, strerror(errno));
            }
        } else if (strcmp(a, "--vote") == 0) {
            if (strcmp(v, "on") != 0 && strcmp(v, "off") != 0) {
                fprintf(stderr, "bench_hitrate: --vote on|off\n");
                return 2;
            }
            vote_opt = strcmp(v, "on") == 0;
        } else if (strcmp(a, "--mode") == 0) {
            mode = v;
        } else if (strcmp(a, "--addr") == 0) {
            addr = v;
        } else if (strcmp(a, "--server") == 0) {
            server = v;
        } else if (strcmp(a, "--table") == 0) {
            table = v;
        } else if (strcmp(a, "--svg") == 0) {
            svg = v;
        } else if (strcmp(a, "--sweep") == 0) {
            if (sscanf(v, "%lf:%lf:%lf", &sw.lo, &sw.hi, &sw.step) != 3 ||
                !(sw.step > 0) || !(sw.lo < sw.hi) || sw.lo < -1 || sw.hi > 1) {
                fprintf(stderr, "bench_hitrate: --sweep LO:HI:STEP\n");
                return 2;
            }
        } else {
            usage(stderr);
            return 2;
        }
    }
    bool do_pre = strcmp(mode, "preload") == 0 || strcmp(mode, "both") == 0;
    bool do_str = strcmp(mode, "stream") == 0 || strcmp(mode, "both") == 0;
    if (default_only && (do_pre || np > 0)) {
        fprintf(stderr, "bench_hitrate: --default-only is for --mode stream "
                        "without --pairs\n");
        return 2;
    }
    if (nc != nq || (!do_pre && !do_str) || nc + np == 0) {
        usage(stderr);
        return 2;
    }
    sw.n = (size_t)floor((sw.hi - sw.lo) / sw.step + 1e-9) + 1;

    pid_t pid = 0;
    char url[128];
    if (addr == NULL) {
        if (access(table, R_OK) != 0) {
            die("no embedder table at %s: make it with "
                "scripts/fetch-embeddings.sh %s",
                table, table);
        }
        /* In this run's directory (test_tmp.h): gone at the exit, and
         * after a SIGKILL at the next sweep (/tmp/bench-hitrate-PID.ipc
         * was left there); 80: room for the name in sockaddr_un. */
        const char *dir = sc_test_tmp_short_dir("bench_hitrate", 80);
        if (dir == NULL) {
            return 1;
        }
        snprintf(url, sizeof(url), "ipc://%s/bench-hitrate.ipc", dir);
        pid = fork();
        server_pid = pid;
        if (pid == 0) {
            execl(server, server, "--listen", url, "--embed-table", table,
                  "--threads", "2", "--persist", "off", (char *)NULL);
            perror("exec semcached");
            _exit(127);
        }
        addr = url;
    }
    if (sc_client_open(addr, 30000, &cli) != SC_OK) {
        die("cannot open a client to %s", addr);
    }
    char who[128] = "";
    sc_client_error err;
    sc_err rc = SC_ECONN;
    for (int t = 0; t < 100 && rc != SC_OK; t++) {
        rc = sc_client_ping(cli, who, sizeof(who), &err);
        if (rc != SC_OK) {
            usleep(100000);
        }
    }
    if (rc != SC_OK) {
        die("no answer from %s", addr);
    }

    double t0 = (double)clock() / CLOCKS_PER_SEC;
    struct timespec w0, w1;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    if (!json_out) {
        printf("semcached at %s (%s); sweep %.2f..%.2f step %.2f\n\n", addr,
               who, sw.lo, sweep_at(&sw, sw.n - 1), sw.step);
    }
    for (size_t k = 0; k < nc; k++) {
        set cache, qs;
        read_jsonl(caches[k], false, &cache);
        read_jsonl(queries[k], false, &qs);
        char *name = set_name(queries[k]);
        row *pre = calloc(sw.n, sizeof(row));
        row *str = calloc(sw.n, sizeof(row));
        row pdef, sdef;
        if (!json_out) {
            printf("%s: %zu cached prompts, %zu queries\n\n", name, cache.n,
                   qs.n);
            printf("| set | mode | threshold | queries | hit rate | "
                   "precision | oos false hits | exact hits |\n"
                   "|---|---|---:|---:|---:|---:|---:|---:|\n");
        }
        if (do_pre) {
            run_preload(name, &cache, &qs, &sw, pre, &pdef);
            for (size_t t = 0; t < sw.n; t++) {
                print_row(&pre[t]);
            }
            print_row(&pdef);
        }
        if (do_str) {
            for (size_t t = 0; t < sw.n && !default_only; t++) {
                run_stream_one(name, &qs, true, (float)sweep_at(&sw, t),
                               &str[t]);
                print_row(&str[t]);
            }
            run_stream_one(name, &qs, false, 0, &sdef);
            print_row(&sdef);
            if (!json_out) {
                printf("\nstream mode: at most %.1f%% of queries can hit "
                       "right (the first of each label cannot)\n",
                       100 * stream_ceiling(&qs));
            }
        }
        if (!json_out) {
            printf("\n");
        }
        if (svg != NULL) {
            char path[512];
            snprintf(path, sizeof(path), "%s%s.svg", svg, name);
            row *series[2];
            const char *labels[2];
            size_t ns = 0;
            if (do_pre) {
                series[ns] = pre;
                labels[ns++] = "preload";
            }
            if (do_str) {
                series[ns] = str;
                labels[ns++] = "stream";
            }
            write_svg(path, name, &sw, series, labels, ns, false);
        }
        free(pre);
        free(str);
        free(name);
        free_set(&cache);
        free_set(&qs);
    }
    for (size_t k = 0; k < np; k++) {
        set ps;
        read_jsonl(pairs[k], true, &ps);
        char *name = set_name(pairs[k]);
        row *rows = calloc(sw.n, sizeof(row));
        row def;
        run_pairs(name, &ps, &sw, rows, &def);
        if (!json_out) {
            printf("%s: %zu pairs\n\n| set | mode | threshold | pairs | "
                   "precision | recall | F1 |\n|---|---|---:|---:|---:|---:|"
                   "---:|\n",
                   name, ps.n);
        }
        size_t best = 0;
        for (size_t t = 0; t < sw.n; t++) {
            print_pair_row(&rows[t]);
            best = rows[t].f1 > rows[best].f1 ? t : best;
        }
        print_pair_row(&def);
        if (!json_out) {
            printf("\nbest F1 %.3f at %.2f\n\n", rows[best].f1,
                   rows[best].threshold);
        }
        if (svg != NULL) {
            char path[512];
            snprintf(path, sizeof(path), "%s%s.svg", svg, name);
            row *series[1] = {rows};
            const char *labels[1] = {"pairs"};
            write_svg(path, name, &sw, series, labels, 1, true);
        }
        free(rows);
        free(name);
        free_set(&ps);
    }
    clock_gettime(CLOCK_MONOTONIC, &w1);
    if (!json_out) {
        printf("(%.1f s wall, %.1f s of this process's CPU)\n",
               (double)(w1.tv_sec - w0.tv_sec) +
                   (double)(w1.tv_nsec - w0.tv_nsec) * 1e-9,
               (double)clock() / CLOCKS_PER_SEC - t0);
    }
    if (unusable > 0) {
        fprintf(stderr,
                "bench_hitrate: %llu inserts or lookups of an empty text (or "
                "only spaces): not stored, counted as misses\n",
                unusable);
    }
    if (decisions != NULL) {
        fclose(decisions);
    }
    sc_client_close(cli);
    if (pid > 0) {
        kill(pid, SIGTERM);
        int st;
        waitpid(pid, &st, 0);
    }
    return 0;
}
