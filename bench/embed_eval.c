/* embed_eval.c - offline evaluation of the built-in embedder, in-process:
 * embeds the labelled sets of ../shared/data (format: its README.md),
 * does a brute-force top-16 search, applies sc_embed_rescore to the
 * candidates and sweeps the threshold.
 *
 *   embed_eval --table FILE [--data DIR] [--dev|--test] [--sweep]
 *              [--stream T,...] [method knobs, see usage()]
 *
 * --dev (the default) uses only the .cache.jsonl files, leave-one-out: each
 * cache line is a query against all the others, correct when the labels
 * match. It is what method choices are made on. --test is preload mode
 * (NAME.cache.jsonl stored, NAME.queries.jsonl looked up) and the pair set:
 * it is for reporting only. */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embed/embed.h"
#include "embed/embed_internal.h"
/* The cache's decision rule, compiled in: embed_eval links sc_embed only. */
#include "cache/vote.c"

#define K 16

typedef struct set {
    size_t n;
    char **text;
    size_t *len;
    char **label; /* NULL = out of scope */
} set;

static int set_load(const char *path, set *s, int pairs, set *b, int **dup)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    char *line = NULL;
    size_t cap = 0, n = 0, alloc = 0;
    memset(s, 0, sizeof(*s));
    if (b != NULL) {
        memset(b, 0, sizeof(*b));
    }
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        if (o == NULL) {
            continue;
        }
        if (n == alloc) {
            alloc = alloc ? alloc * 2 : 1024;
            s->text = realloc(s->text, alloc * sizeof(char *));
            s->len = realloc(s->len, alloc * sizeof(size_t));
            s->label = realloc(s->label, alloc * sizeof(char *));
            if (pairs) {
                b->text = realloc(b->text, alloc * sizeof(char *));
                b->len = realloc(b->len, alloc * sizeof(size_t));
                *dup = realloc(*dup, alloc * sizeof(int));
            }
        }
        if (pairs) {
            const char *ta = json_string_value(json_object_get(o, "a"));
            const char *tb = json_string_value(json_object_get(o, "b"));
            s->text[n] = strdup(ta ? ta : "");
            s->len[n] = strlen(s->text[n]);
            s->label[n] = NULL;
            b->text[n] = strdup(tb ? tb : "");
            b->len[n] = strlen(b->text[n]);
            (*dup)[n] = json_is_true(json_object_get(o, "duplicate"));
        } else {
            const char *t = json_string_value(json_object_get(o, "text"));
            const char *l = json_string_value(json_object_get(o, "label"));
            s->text[n] = strdup(t ? t : "");
            s->len[n] = strlen(s->text[n]);
            s->label[n] = l ? strdup(l) : NULL;
        }
        n++;
        json_decref(o);
    }
    free(line);
    fclose(f);
    s->n = n;
    if (b != NULL) {
        b->n = n;
    }
    return 0;
}

static const sc_embed *E;
static sc_embed_params P;
static float rescore_floor = 0.3f;
static sc_vote_params V;    /* the cache's decision rule (cache/vote.h) */
static int per_label = 0;   /* --dev: store only the first N of each label */
static int kc = 8;          /* candidates the index hands over (the cache's) */
static size_t stream_n = 0; /* --dev stream: only the first N of the order */
static int use_idf = 0;     /* --idf 1: the alignment weighted by the stored
                               texts' idf (sc_embed_df), as the cache does */
static double idf_prior = SC_EMBED_DF_PRIOR; /* --idf-prior K */

static sc_embed_df *df_build(const set *s, const unsigned char *ok)
{
    sc_embed_df *df = sc_embed_df_new();
    sc_embed_df_set_prior(df, idf_prior);
    for (size_t i = 0; i < s->n; i++) {
        if (ok[i]) {
            sc_embed_df_count(df, E, s->text[i], s->len[i], 1);
        }
    }
    return df;
}

/* A response key per label, as the cache's hash and length; an
 * out-of-scope text (label NULL) has an answer of its own. */
static sc_vote_key label_key(const char *label, size_t self)
{
    sc_vote_key k = {0x9e3779b97f4a7c15ULL ^ self, UINT64_MAX};
    if (label != NULL) {
        uint64_t h = 1469598103934665603ULL;
        for (const char *c = label; *c; c++) {
            h = (h ^ (unsigned char)*c) * 1099511628211ULL;
        }
        k.hash = h;
        k.len = strlen(label);
    }
    return k;
}

/* Vectors of all texts; ok[i] = 0 when a text had no usable token. */
static float *embed_all(const set *s, unsigned char **ok)
{
    uint32_t dim = sc_embed_dim(E);
    float *v = calloc(s->n * dim, sizeof(float));
    *ok = calloc(s->n, 1);
    for (size_t i = 0; i < s->n; i++) {
        (*ok)[i] =
            sc_embed_text_p(E, &P, s->text[i], s->len[i], v + i * dim) == 0;
    }
    return v;
}

static float dot(const float *x, const float *y, uint32_t dim)
{
    float d = 0;
    for (uint32_t k = 0; k < dim; k++) {
        d += x[k] * y[k];
    }
    return d;
}

/* Adds candidate id of cosine d to the top kc: ts (descending) and ti,
 * *nt of them so far. */
static void top_add(float *ts, long *ti, int *nt, float d, long id)
{
    if (*nt < kc || d > ts[*nt - 1]) {
        int p = *nt < kc ? (*nt)++ : kc - 1;
        while (p > 0 && ts[p - 1] < d) {
            ts[p] = ts[p - 1];
            ti[p] = ti[p - 1];
            p--;
        }
        ts[p] = d;
        ti[p] = id;
    }
}

/* Query q of qs against its nt candidates of cs (ti, cosines ts): each
 * rescored with p where its cosine is at least min_cosine, into adj,
 * then the cache's rule at threshold -inf. The candidate served (an index
 * into ti and adj), -1 none. */
static int judge(const sc_embed_params *p, const set *qs, size_t q,
                 const set *cs, const long *ti, const float *ts, int nt,
                 float min_cosine, float *adj)
{
    sc_vote_key key[K];
    for (int t = 0; t < nt; t++) {
        float a = ts[t];
        if (a >= min_cosine) {
            a = sc_embed_rescore_p(E, p, qs->text[q], qs->len[q],
                                   cs->text[ti[t]], cs->len[ti[t]], ts[t]);
        }
        adj[t] = a;
        key[t] = label_key(cs->label[ti[t]], (size_t)ti[t]);
    }
    return sc_vote_pick(adj, key, (unsigned)nt, -INFINITY, &V, NULL);
}

typedef struct job {
    const set *qs, *cs;
    const float *qv, *cv;
    const unsigned char *qok, *cok;
    int loo;
    size_t from, to;
    sc_embed_params p; /* P, with this job's own df when --idf */
    sc_embed_df *df;   /* the stored texts' (leave-one-out: the query's
                          own text is counted out while it is judged) */
    float *score;      /* best adjusted similarity per query */
    long *best;        /* its candidate, -1 none */
    float *cosine;     /* its cosine */
} job;

static void *search_range(void *arg)
{
    job *j = arg;
    uint32_t dim = sc_embed_dim(E);
    for (size_t q = j->from; q < j->to; q++) {
        j->score[q] = -2;
        j->best[q] = -1;
        if (!j->qok[q]) {
            continue;
        }
        long ti[K];
        float ts[K];
        int nt = 0;
        const float *x = j->qv + q * dim;
        for (size_t c = 0; c < j->cs->n; c++) {
            if ((j->loo && c == q) || !j->cok[c]) {
                continue;
            }
            top_add(ts, ti, &nt, dot(x, j->cv + c * dim, dim), (long)c);
        }
        float adj[K];
        int self_out = j->df != NULL && j->loo && j->cok[q];
        if (self_out) {
            sc_embed_df_count(j->df, E, j->qs->text[q], j->qs->len[q], -1);
        }
        /* The cache's rule at threshold -inf: the served candidate's
         * similarity is then the score a threshold sweep compares. */
        int w = judge(&j->p, j->qs, q, j->cs, ti, ts, nt, rescore_floor, adj);
        if (self_out) {
            sc_embed_df_count(j->df, E, j->qs->text[q], j->qs->len[q], 1);
        }
        if (w >= 0) {
            j->score[q] = adj[w];
            j->best[q] = ti[w];
            j->cosine[q] = ts[w];
        }
    }
    return NULL;
}

static int threads = 2;

static void run_search(job *base)
{
    pthread_t th[16];
    job jobs[16];
    size_t n = base->qs->n, per = (n + threads - 1) / threads;
    for (int t = 0; t < threads; t++) {
        jobs[t] = *base;
        jobs[t].from = t * per < n ? t * per : n;
        jobs[t].to = (t + 1) * per < n ? (t + 1) * per : n;
        jobs[t].p = P;
        jobs[t].df = NULL;
        if (use_idf) {
            jobs[t].df = df_build(base->cs, base->cok);
            jobs[t].p.idf = sc_embed_df_idf;
            jobs[t].p.idf_ctx = jobs[t].df;
        }
        pthread_create(&th[t], NULL, search_range, &jobs[t]);
    }
    for (int t = 0; t < threads; t++) {
        pthread_join(th[t], NULL);
        sc_embed_df_free(jobs[t].df);
    }
}

typedef struct scored {
    float s;
    int good; /* a correct hit if served */
} scored;

static int cmp_desc(const void *a, const void *b)
{
    float x = ((const scored *)a)->s, y = ((const scored *)b)->s;
    return (x < y) - (x > y);
}

static int sweep = 0;
static int dump = 0; /* print this many query/best-candidate pairs */

/* Hit rate / precision over thresholds for one intent set. */
static void report_intent(const char *name, const char *mode, scored *r,
                          size_t n, size_t nscope)
{
    qsort(r, n, sizeof(*r), cmp_desc);
    const double want[3] = {0.97, 0.95, 0.90};
    double best_hit[3] = {0, 0, 0}, best_thr[3] = {NAN, NAN, NAN};
    size_t hits = 0, good = 0;
    for (size_t i = 0; i < n; i++) {
        hits++;
        good += r[i].good;
        if (i + 1 < n && r[i + 1].s == r[i].s) {
            continue;
        }
        double prec = (double)good / hits, hr = (double)hits / n;
        for (int k = 0; k < 3; k++) {
            if (prec >= want[k] && hr > best_hit[k]) {
                best_hit[k] = hr;
                best_thr[k] = r[i].s;
            }
        }
    }
    /* Ranking quality, threshold-free: the share of served candidates that
     * are right (top-1 accuracy over all queries) and the ROC-AUC of the
     * score between right and wrong served candidates. */
    size_t ngood = 0, nbad = 0;
    double auc = 0; /* (right, wrong) pairs ranked right first */
    for (size_t i = 0; i < n; i++) {
        if (r[i].good) {
            ngood++;
        } else if (r[i].s > -2) {
            nbad++;
            auc += (double)ngood;
        }
    }
    printf("%-14s %-5s top1 %5.1f%% auc %.3f", name, mode, 100.0 * ngood / n,
           ngood && nbad ? auc / ((double)ngood * nbad) : NAN);
    for (int k = 0; k < 3; k++) {
        printf("  P>=%.2f: hit %5.1f%% @%.3f", want[k], 100 * best_hit[k],
               best_thr[k]);
    }
    if (nscope < n) {
        printf("  (%zu of %zu in scope)", nscope, n);
    }
    printf("\n");
    /* Negatives only (no correct answer exists): false-hit rate. */
    if (sweep || nscope == 0) {
        printf("  thr   hit%%   prec%%  false-hit%%\n");
        for (int t = 70; t <= 99; t++) {
            double thr = t / 100.0;
            size_t h = 0, g = 0;
            for (size_t i = 0; i < n && r[i].s >= thr; i++) {
                h++;
                g += r[i].good;
            }
            if (!sweep && t % 5 != 0) {
                continue;
            }
            printf("  %.2f %6.1f %7.1f %8.2f\n", thr, 100.0 * h / n,
                   h ? 100.0 * g / h : 100.0, 100.0 * (h - g) / n);
        }
    }
}

static int label_eq(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* The order stream mode sends queries in: the file's for --test; for --dev
 * a fixed shuffle, since the cache files are sorted by label and a stream
 * of one label after another would flatter the cache. */
static size_t *stream_order(size_t n, int shuffle)
{
    size_t *o = malloc(n * sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
        o[i] = i;
    }
    uint64_t st = 12345;
    for (size_t i = n; shuffle && i > 1; i--) {
        st = st * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t j = (size_t)((st >> 33) % i), t = o[i - 1];
        o[i - 1] = o[j];
        o[j] = t;
    }
    return o;
}

/* v minus its projections on the k unit directions u (rows), normalised. */
static void project_out(float *v, uint32_t dim, const float *u, int k)
{
    for (int q = 0; q < k; q++) {
        float dot = 0;
        for (uint32_t d = 0; d < dim; d++) {
            dot += v[d] * u[(size_t)q * dim + d];
        }
        for (uint32_t d = 0; d < dim; d++) {
            v[d] -= dot * u[(size_t)q * dim + d];
        }
    }
    float nn = 0;
    for (uint32_t d = 0; d < dim; d++) {
        nn += v[d] * v[d];
    }
    nn = nn > 0 ? 1.0f / sqrtf(nn) : 0.0f;
    for (uint32_t d = 0; d < dim; d++) {
        v[d] *= nn;
    }
}

/* --scope-pc N: the top N directions of the stored sentence vectors'
 * second moment (SIF's own common components, from the set's texts
 * instead of the word table) projected out of every vector, renormalised. */
static int scope_pc = 0;
static void scope_pc_remove(float *cv, const unsigned char *cok, size_t cn,
                            float *qv, const unsigned char *qok, size_t qn)
{
    uint32_t dim = sc_embed_dim(E);
    double *m = calloc((size_t)dim * dim, sizeof(double));
    float *u = calloc((size_t)scope_pc * dim, sizeof(float));
    for (size_t i = 0; i < cn; i++) {
        if (!cok[i]) {
            continue;
        }
        const float *v = cv + i * dim;
        for (uint32_t a = 0; a < dim; a++) {
            for (uint32_t b = 0; b < dim; b++) {
                m[(size_t)a * dim + b] += (double)v[a] * v[b];
            }
        }
    }
    sc_embed_top_eigen(m, dim, (uint32_t)scope_pc, u);
    float *sets[2] = {cv, qv};
    const unsigned char *oks[2] = {cok, qok};
    size_t ns[2] = {cn, qok != NULL ? qn : 0};
    for (int t = 0; t < 2; t++) {
        for (size_t i = 0; i < ns[t]; i++) {
            if (!oks[t][i]) {
                continue;
            }
            project_out(sets[t] + i * dim, dim, u, scope_pc);
        }
    }
    free(m);
    free(u);
}

static void eval_intent(const char *dir, const char *name, int test,
                        const float *stream_thr, int nstream)
{
    char path[4096];
    set cs, qs;
    snprintf(path, sizeof(path), "%s/%s.cache.jsonl", dir, name);
    if (set_load(path, &cs, 0, NULL, NULL) != 0) {
        fprintf(stderr, "cannot read %s\n", path);
        return;
    }
    if (test) {
        snprintf(path, sizeof(path), "%s/%s.queries.jsonl", dir, name);
        if (set_load(path, &qs, 0, NULL, NULL) != 0) {
            fprintf(stderr, "cannot read %s\n", path);
            return;
        }
    } else {
        qs = cs;
    }
    unsigned char *cok, *qok;
    float *cv = embed_all(&cs, &cok);
    float *qv = test ? embed_all(&qs, &qok) : cv;
    if (scope_pc > 0) {
        scope_pc_remove(cv, cok, cs.n, qv, test ? qok : NULL, test ? qs.n : 0);
    }
    if (!test) {
        /* Queries are every line; with --per-label the stored side is the
         * first N lines of each label (a sparse cache, like one answer per
         * question), so cok becomes a copy. */
        qok = cok;
        if (per_label > 0) {
            cok = malloc(cs.n);
            for (size_t c = 0; c < cs.n; c++) {
                size_t seen = 0;
                for (size_t d = 0; d < c; d++) {
                    seen += label_eq(cs.label[c], cs.label[d]);
                }
                cok[c] = qok[c] && seen < (size_t)per_label;
            }
        }
    }
    size_t n = qs.n;
    job j = {&qs,
             &cs,
             qv,
             cv,
             qok,
             cok,
             !test,
             0,
             n,
             P,
             NULL,
             malloc(n * 4),
             malloc(n * sizeof(long)),
             malloc(n * 4)};
    run_search(&j);
    scored *r = malloc(n * sizeof(*r));
    size_t nscope = 0;
    for (size_t q = 0; q < n; q++) {
        /* In scope when some candidate could be right. */
        int scope = 0;
        for (size_t c = 0; c < cs.n && !scope; c++) {
            scope = ((!test && c == q) || !cok[c])
                        ? 0
                        : label_eq(qs.label[q], cs.label[c]);
        }
        nscope += scope;
        r[q].s = j.score[q];
        r[q].good =
            j.best[q] >= 0 && label_eq(qs.label[q], cs.label[j.best[q]]);
    }
    for (size_t q = 0; q < n && dump > 0; q += n / dump + 1) {
        if (j.best[q] >= 0) {
            printf("  [%s] cos %.3f adj %.3f  Q: %s\n      C: %s\n",
                   r[q].good ? "ok " : "BAD", j.cosine[q], j.score[q],
                   qs.text[q], cs.text[j.best[q]]);
        }
    }
    report_intent(name, test ? "test" : "dev", r, n, nscope);

    /* Stream mode: queries in order; on a miss the query is inserted. */
    uint32_t dim = sc_embed_dim(E);
    for (int t = 0; t < nstream; t++) {
        size_t *ins = malloc(n * sizeof(size_t)), nins = 0, hits = 0, good = 0;
        sc_embed_df *sdf = NULL; /* of the texts inserted so far */
        if (use_idf) {
            sdf = sc_embed_df_new();
            sc_embed_df_set_prior(sdf, idf_prior);
            P.idf = sc_embed_df_idf;
            P.idf_ctx = sdf;
        }
        size_t *order = stream_order(n, !test);
        size_t ns = stream_n > 0 && stream_n < n ? stream_n : n;
        for (size_t qi = 0; qi < ns; qi++) {
            size_t q = order[qi];
            float best = -2;
            long bi = -1;
            if (qok[q]) {
                float ts[K];
                long ti[K];
                int nt = 0;
                for (size_t m = 0; m < nins; m++) {
                    top_add(ts, ti, &nt,
                            dot(qv + q * dim, qv + ins[m] * dim, dim),
                            (long)ins[m]);
                }
                /* Every candidate rescored, whatever --floor says. */
                float adj[K];
                int w = judge(&P, &qs, q, &qs, ti, ts, nt, -INFINITY, adj);
                if (w >= 0) {
                    best = adj[w];
                    bi = ti[w];
                }
            }
            if (bi >= 0 && best >= stream_thr[t]) {
                hits++;
                good += label_eq(qs.label[q], qs.label[bi]);
                if (dump > 0) {
                    /* For bench/twins.py --stream-dump: line numbers
                     * (from 0) of the query and of the earlier query that
                     * served it, in the queries file (--test). */
                    printf("  stream @%.3f hit: query %zu <- query %ld\n",
                           stream_thr[t], q, bi);
                }
            } else if (qok[q]) {
                ins[nins++] = q;
                if (sdf != NULL) {
                    sc_embed_df_count(sdf, E, qs.text[q], qs.len[q], 1);
                }
            }
        }
        P.idf = NULL;
        sc_embed_df_free(sdf);
        printf("%-14s %-5s stream @%.3f: hit %5.1f%% precision %5.1f%%\n", name,
               test ? "test" : "dev", stream_thr[t], 100.0 * hits / ns,
               hits ? 100.0 * good / hits : 100.0);
        free(ins);
        free(order);
    }
    /* Preload mode at the stream thresholds too, for the default check. */
    for (int t = 0; t < nstream; t++) {
        size_t h = 0, g = 0;
        for (size_t q = 0; q < n; q++) {
            if (r[q].s >= stream_thr[t]) {
                h++;
                g += r[q].good;
            }
        }
        printf("%-14s %-5s preload @%.3f: hit %5.1f%% precision %5.1f%%\n",
               name, test ? "test" : "dev", stream_thr[t], 100.0 * h / n,
               h ? 100.0 * g / h : 100.0);
    }
    free(r);
    free(j.score);
    free(j.best);
    free(j.cosine);
    free(cv);
    free(cok);
    if (test || per_label > 0) {
        free(qok);
    }
    if (test) {
        free(qv);
    }
}

static void eval_pairs(const char *dir, const char *name,
                       const float *stream_thr, int nstream)
{
    char path[4096];
    set a, b;
    int *dup = NULL;
    snprintf(path, sizeof(path), "%s/%s.pairs.jsonl", dir, name);
    if (set_load(path, &a, 1, &b, &dup) != 0) {
        fprintf(stderr, "cannot read %s\n", path);
        return;
    }
    unsigned char *aok, *bok;
    float *av = embed_all(&a, &aok), *bv = embed_all(&b, &bok);
    uint32_t dim = sc_embed_dim(E);
    size_t n = a.n, npos = 0;
    scored *r = malloc(n * sizeof(*r));
    for (size_t i = 0; i < n; i++) {
        float d = -1;
        if (aok[i] && bok[i]) {
            d = sc_embed_rescore_p(E, &P, a.text[i], a.len[i], b.text[i],
                                   b.len[i],
                                   dot(av + i * dim, bv + i * dim, dim));
        }
        r[i].s = d;
        r[i].good = dup[i];
        npos += dup[i] != 0;
    }
    qsort(r, n, sizeof(*r), cmp_desc);
    /* ROC-AUC by ranks; best F1 over thresholds. */
    double auc = 0, f1best = 0, f1thr = NAN, pbest = 0, rbest = 0;
    size_t tp = 0, fp = 0, nneg = n - npos;
    for (size_t i = 0; i < n; i++) {
        if (r[i].good) {
            tp++;
        } else {
            fp++;
            auc += tp;
        }
        if (i + 1 < n && r[i + 1].s == r[i].s) {
            continue;
        }
        double prec = (double)tp / (tp + fp), rec = (double)tp / npos;
        double f1 = prec + rec > 0 ? 2 * prec * rec / (prec + rec) : 0;
        if (f1 > f1best) {
            f1best = f1;
            f1thr = r[i].s;
            pbest = prec;
            rbest = rec;
        }
    }
    auc = nneg && npos ? auc / ((double)npos * nneg) : NAN;
    printf("%-14s test   ROC-AUC %.3f  best F1 %.3f @%.3f (P %.3f R %.3f)\n",
           name, auc, f1best, f1thr, pbest, rbest);
    for (int t = 0; t < nstream; t++) {
        size_t h = 0, g = 0;
        for (size_t i = 0; i < n; i++) {
            if (r[i].s >= stream_thr[t]) {
                h++;
                g += r[i].good;
            }
        }
        double prec = h ? (double)g / h : 1, rec = (double)g / npos;
        printf("%-14s test   @%.3f: precision %.3f recall %.3f F1 %.3f\n", name,
               stream_thr[t], prec, rec,
               prec + rec > 0 ? 2 * prec * rec / (prec + rec) : 0);
    }
    free(r);
    free(av);
    free(bv);
    free(aok);
    free(bok);
    free(dup);
}

/* All-but-the-top (Mu & Viswanath, ICLR 2018) word vectors for the
 * alignment: minus the mean of the top n words, minus their top d
 * principal directions, normalised. */
static float *abtt_vectors(const sc_embed *e, int d, uint32_t n, int wmean)
{
    uint32_t dim, nw;
    const float *v = sc_embed_vectors(e, &dim, &nw);
    if (n == 0 || n > nw) {
        n = nw;
    }
    double *mu = calloc(dim, sizeof(double));
    double *c = calloc((size_t)dim * dim, sizeof(double));
    float *out = malloc((size_t)nw * dim * sizeof(float));
    float *u = calloc((size_t)(d > 0 ? d : 1) * dim, sizeof(float));
    for (uint32_t i = 0; i < n; i++) {
        for (uint32_t k = 0; k < dim; k++) {
            mu[k] += v[(size_t)i * dim + k];
        }
    }
    for (uint32_t k = 0; k < dim; k++) {
        mu[k] /= n;
    }
    double *x = malloc(dim * sizeof(double));
    for (uint32_t i = 0; i < n; i++) {
        for (uint32_t k = 0; k < dim; k++) {
            x[k] = v[(size_t)i * dim + k] - mu[k];
        }
        for (uint32_t a = 0; a < dim; a++) {
            for (uint32_t b = a; b < dim; b++) {
                c[(size_t)a * dim + b] += x[a] * x[b];
            }
        }
    }
    for (uint32_t a = 0; a < dim; a++) {
        for (uint32_t b = 0; b < a; b++) {
            c[(size_t)a * dim + b] = c[(size_t)b * dim + a];
        }
    }
    if (d > 0) {
        sc_embed_top_eigen(c, dim, (uint32_t)d, u);
    }
    for (uint32_t i = 0; i < nw; i++) {
        float *o = out + (size_t)i * dim;
        for (uint32_t k = 0; k < dim; k++) {
            o[k] = v[(size_t)i * dim + k] - (wmean ? (float)mu[k] : 0.0f);
        }
        project_out(o, dim, u, d);
    }
    free(mu);
    free(c);
    free(u);
    free(x);
    return out;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: embed_eval --table FILE [--data DIR] [--dev|--test] "
            "[--set NAME] [--sweep] [--stream T,T...] [--threads N]\n"
            "  knobs: --a SIF_A (0 = plain mean) --align-a A --ncomp N "
            "--oov 0|1 --oov-scale X --punct 0|1 --unit 0|1\n"
            "         --lex W --pow P --lex-tau T --num P --neg P --floor F\n"
            "         --qword P --align W --cap 0|1 --trigram D --align-base B "
            "--idf 0|1 --idf-prior K --letter R --letter-vec R\n"
            "         --abtt D --abtt-n N --abtt-mean 0|1\n"
            "  rule (cache/vote.h): --k N (candidates, 8) --tau T (0 = no "
            "vote) --rho R --margin M --window W\n"
            "  --per-label N: --dev with only N stored lines per label\n"
            "  --stream-n N: stream only the first N queries of the order\n"
            "  --dump N: print about N served queries with their candidate,\n"
            "            and every stream hit (bench/twins.py reads both)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *table = NULL, *dir = "../shared/data", *only = NULL;
    int abtt_d = -1, abtt_mean = 1;
    uint32_t abtt_n = 0;
    int test = 0;
    float st[8];
    int nst = 0;
    sc_embed_params_default(&P);
    sc_vote_params_default(&V);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define KNOB(flag) (strcmp(a, flag) == 0 && v != NULL && ++i)
        if (strcmp(a, "--test") == 0) {
            test = 1;
        } else if (strcmp(a, "--dev") == 0) {
            test = 0;
        } else if (strcmp(a, "--sweep") == 0) {
            sweep = 1;
        } else if (KNOB("--margin")) {
            V.margin = strtof(v, NULL);
        } else if (KNOB("--tau")) {
            V.tau = strtof(v, NULL);
        } else if (KNOB("--window")) {
            V.window = strtof(v, NULL);
        } else if (KNOB("--stream-n")) {
            stream_n = (size_t)atol(v);
        } else if (KNOB("--per-label")) {
            per_label = atoi(v);
        } else if (KNOB("--rho")) {
            V.rho = strtof(v, NULL);
        } else if (KNOB("--k")) {
            kc = atoi(v) < 1 ? 1 : atoi(v) > K ? K : atoi(v);
        } else if (KNOB("--dump")) {
            dump = atoi(v);
        } else if (KNOB("--table")) {
            table = v;
        } else if (KNOB("--data")) {
            dir = v;
        } else if (KNOB("--set")) {
            only = v;
        } else if (KNOB("--threads")) {
            threads = atoi(v) < 1 ? 1 : atoi(v) > 16 ? 16 : atoi(v);
        } else if (KNOB("--stream")) {
            char *s = strdup(v), *save = NULL;
            for (char *t = strtok_r(s, ",", &save); t && nst < 8;
                 t = strtok_r(NULL, ",", &save)) {
                st[nst++] = strtof(t, NULL);
            }
            free(s);
        } else if (KNOB("--align-a")) {
            P.align_a = strtof(v, NULL);
        } else if (KNOB("--a")) {
            P.sif_a = strtof(v, NULL);
        } else if (KNOB("--ncomp")) {
            P.ncomp = (unsigned)atoi(v);
        } else if (KNOB("--oov")) {
            P.oov_hash = atoi(v) != 0;
        } else if (KNOB("--oov-scale")) {
            P.oov_scale = strtof(v, NULL);
        } else if (KNOB("--punct")) {
            P.skip_punct = atoi(v) == 0;
        } else if (KNOB("--unit")) {
            P.unit_words = atoi(v) != 0;
        } else if (KNOB("--lex")) {
            P.lex_weight = strtof(v, NULL);
        } else if (KNOB("--pow")) {
            P.lex_pow = strtof(v, NULL);
        } else if (KNOB("--lex-tau")) {
            P.lex_tau = strtof(v, NULL);
        } else if (KNOB("--num")) {
            P.num_penalty = strtof(v, NULL);
        } else if (KNOB("--qword")) {
            P.qword_penalty = strtof(v, NULL);
        } else if (KNOB("--align")) {
            P.align_weight = strtof(v, NULL);
        } else if (KNOB("--cap")) {
            P.cap_cosine = atoi(v) != 0;
        } else if (KNOB("--idf")) {
            use_idf = atoi(v) != 0;
        } else if (KNOB("--letter")) {
            P.letter_rank = (unsigned)atoi(v);
        } else if (KNOB("--letter-vec")) {
            P.letter_rank_vec = (unsigned)atoi(v);
        } else if (KNOB("--idf-prior")) {
            idf_prior = strtod(v, NULL);
        } else if (KNOB("--scope-pc")) {
            scope_pc = atoi(v);
        } else if (KNOB("--abtt")) {
            abtt_d = atoi(v);
        } else if (KNOB("--abtt-n")) {
            abtt_n = (uint32_t)atol(v);
        } else if (KNOB("--abtt-mean")) {
            abtt_mean = atoi(v);
        } else if (KNOB("--align-base")) {
            P.align_base = strtof(v, NULL);
        } else if (KNOB("--trigram")) {
            P.trigram = strtof(v, NULL);
        } else if (KNOB("--neg")) {
            P.neg_penalty = strtof(v, NULL);
        } else if (KNOB("--floor")) {
            rescore_floor = strtof(v, NULL);
        } else {
            usage();
        }
#undef KNOB
    }
    if (table == NULL) {
        usage();
    }
    sc_embed *e;
    sc_err rc = sc_embed_open(table, &e);
    if (rc != SC_OK) {
        fprintf(stderr, "embed_eval: %s: %s\n", table, sc_strerror(rc));
        return 1;
    }
    E = e;
    float *abtt = NULL;
    if (abtt_d >= 0) {
        abtt = abtt_vectors(e, abtt_d, abtt_n, abtt_mean);
        P.align_vecs = abtt;
    }
    const char *intent[] = {"gptcache_mock", "banking77"};
    for (int s = 0; s < 2; s++) {
        if (only == NULL || strcmp(only, intent[s]) == 0) {
            eval_intent(dir, intent[s], test, st, nst);
        }
    }
    if (test && (only == NULL || strcmp(only, "qqp_meancache") == 0)) {
        eval_pairs(dir, "qqp_meancache", st, nst);
    }
    sc_embed_close(e);
    free(abtt);
    return 0;
}
