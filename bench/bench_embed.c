/* bench_embed.c - "how fast is the built-in embedder?": prompts embedded per
 * second on one core, over real short prompts (every text of the labelled
 * sets in the data directory), the shipped method side by side with a plain
 * unweighted average of word vectors in the same run, plus the rescore and
 * the counting of a scope's document frequencies.
 *
 *   bench_embed [--table FILE] [--data DIR] [--seconds S] [--json] */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_util.h"
#include "embed/embed.h"
#include "embed/table.h"
#include "embed/embed_internal.h"

typedef struct prompts {
    char **text;
    size_t *len;
    size_t n, cap, bytes;
} prompts;

static void add(prompts *p, const char *s)
{
    if (s == NULL) {
        return;
    }
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 4096;
        p->text = realloc(p->text, p->cap * sizeof(char *));
        p->len = realloc(p->len, p->cap * sizeof(size_t));
        if (p->text == NULL || p->len == NULL) {
            fprintf(stderr, "bench_embed: out of memory\n");
            exit(1);
        }
    }
    p->text[p->n] = strdup(s);
    p->len[p->n] = strlen(s);
    p->bytes += p->len[p->n];
    p->n++;
}

static void load_dir(const char *dir, prompts *p)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return;
    }
    struct dirent *de;
    char path[4096], *line = NULL;
    size_t cap = 0;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n < 6 || strcmp(de->d_name + n - 6, ".jsonl") != 0) {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL) {
            continue;
        }
        while (getline(&line, &cap, f) > 0) {
            json_t *o = json_loads(line, 0, NULL);
            if (o == NULL) {
                continue;
            }
            add(p, json_string_value(json_object_get(o, "text")));
            add(p, json_string_value(json_object_get(o, "a")));
            add(p, json_string_value(json_object_get(o, "b")));
            json_decref(o);
        }
        fclose(f);
    }
    free(line);
    closedir(d);
}

static volatile float sink;

/* Embeds every prompt, over and over, for at least secs seconds. */
static double rate(const sc_embed *e, const sc_embed_params *par,
                   const prompts *p, double secs, size_t *done)
{
    float out[1024];
    size_t n = 0;
    double t0 = sc_bench_now(), t;
    do {
        for (size_t i = 0; i < p->n; i++) {
            if (sc_embed_text_p(e, par, p->text[i], p->len[i], out) == 0) {
                sink += out[0];
            }
        }
        n += p->n;
        t = sc_bench_now();
    } while (t - t0 < secs);
    *done = n;
    return n / (t - t0);
}

/* Pairs of neighbouring prompts; with df, weighted by its counts (what the
 * cache does: df then holds every prompt, as one scope would). */
static double rescore_rate(const sc_embed *e, const sc_embed_df *df,
                           const prompts *p, double secs, size_t *done)
{
    size_t n = 0;
    double t0 = sc_bench_now(), t;
    do {
        for (size_t i = 0; i + 1 < p->n; i++) {
            sink += sc_embed_rescore_df(e, df, p->text[i], p->len[i],
                                        p->text[i + 1], p->len[i + 1], 0.9f);
        }
        n += p->n - 1;
        t = sc_bench_now();
    } while (t - t0 < secs);
    *done = n;
    return n / (t - t0);
}

/* A lookup's candidates: prompt i against the KC prompts after it, with
 * df, the way the cache judges them: one call per candidate (BY_CALLS),
 * one sc_embed_rescore_many call per lookup, the query tokenised once
 * (BY_MANY), or one sc_embed_rescore_sigs call from signatures made
 * beforehand, what the cache does under its lock since signatures
 * (BY_SIGS: sigs[i] is prompt i's; NULL for the others). Pairs (query,
 * candidate) per second. */
#define KC 8
enum lookup_way { BY_CALLS, BY_MANY, BY_SIGS };

static double lookup_rate(const sc_embed *e, const sc_embed_df *df,
                          const prompts *p, enum lookup_way way,
                          sc_embed_sig *const *sigs, double secs, size_t *done)
{
    size_t n = 0;
    double t0 = sc_bench_now(), t;
    const float cosine[KC] = {0.9f,  0.89f, 0.88f, 0.87f,
                              0.86f, 0.85f, 0.84f, 0.83f};
    float out[KC];
    do {
        for (size_t i = 0; i + KC < p->n; i++) {
            if (way == BY_SIGS) {
                sc_embed_rescore_sigs(e, df, sigs[i], KC,
                                      (const sc_embed_sig *const *)&sigs[i + 1],
                                      cosine, out);
            } else if (way == BY_MANY) {
                sc_embed_rescore_many(e, df, p->text[i], p->len[i], KC,
                                      (const char *const *)&p->text[i + 1],
                                      &p->len[i + 1], cosine, out);
            } else {
                for (size_t k = 0; k < KC; k++) {
                    out[k] = sc_embed_rescore_df(e, df, p->text[i], p->len[i],
                                                 p->text[i + 1 + k],
                                                 p->len[i + 1 + k], cosine[k]);
                }
            }
            sink += out[0] + out[KC - 1];
        }
        n += (p->n - KC) * KC;
        t = sc_bench_now();
    } while (t - t0 < secs);
    *done = n;
    return n / (t - t0);
}

/* Signatures made (and freed) per second: what an insert or a lookup of
 * the built-in model's namespaces adds outside the locks. */
static double sig_rate(const sc_embed *e, const prompts *p, double secs,
                       size_t *done)
{
    size_t n = 0;
    double t0 = sc_bench_now(), t;
    do {
        for (size_t i = 0; i < p->n; i++) {
            sc_embed_sig *g = NULL;
            if (sc_embed_sig_new(e, p->text[i], p->len[i], &g) == SC_OK) {
                sink += (float)sc_embed_sig_bytes(g);
                sc_embed_sig_free(g);
            }
        }
        n += p->n;
        t = sc_bench_now();
    } while (t - t0 < secs);
    *done = n;
    return n / (t - t0);
}

/* The prompts joined by spaces, again and again, to fill big[0..cap);
 * its length. */
static size_t join_prompts(const prompts *p, char *big, size_t cap)
{
    size_t len = 0;
    for (size_t i = 0; len < cap; i = (i + 1) % p->n) {
        size_t k = p->len[i] + 1 < cap - len ? p->len[i] : cap - len - 1;
        memcpy(big + len, p->text[i], k);
        len += k;
        big[len++] = ' ';
    }
    return len;
}

/* One lookup's rescore of a 1 MiB stored text (the prompts joined) against
 * a short query: from the texts, as before signatures, and from their
 * signatures; seconds per call of each into *by_text and *by_sig. */
static void long_text(const sc_embed *e, const prompts *p, double *by_text,
                      double *by_sig)
{
    size_t cap = (size_t)1 << 20;
    char *big = malloc(cap);
    if (big == NULL) {
        fprintf(stderr, "bench_embed: out of memory\n");
        exit(1);
    }
    size_t len = join_prompts(p, big, cap);
    sc_embed_sig *q = NULL, *c = NULL;
    if (sc_embed_sig_new(e, p->text[0], p->len[0], &q) != SC_OK ||
        sc_embed_sig_new(e, big, len, &c) != SC_OK) {
        fprintf(stderr, "bench_embed: out of memory\n");
        exit(1);
    }
    const char *bp = big;
    const sc_embed_sig *cc = c;
    float cosine = 0.9f, out;
    int reps = 20;
    double t0 = sc_bench_now();
    for (int r = 0; r < reps; r++) {
        sc_embed_rescore_many(e, NULL, p->text[0], p->len[0], 1, &bp, &len,
                              &cosine, &out);
        sink += out;
    }
    double t1 = sc_bench_now();
    for (int r = 0; r < reps * 1000; r++) {
        sc_embed_rescore_sigs(e, NULL, q, 1, &cc, &cosine, &out);
        sink += out;
    }
    double t2 = sc_bench_now();
    *by_text = (t1 - t0) / reps;
    *by_sig = (t2 - t1) / (reps * 1000);
    sc_embed_sig_free(q);
    sc_embed_sig_free(c);
    free(big);
}

/* Seconds to embed and to sign one text, the best of 5 runs of each. */
static void big_text(const sc_embed *e, const char *text, size_t len,
                     double *embed_s, double *sig_s)
{
    float v[SC_EMBED_MAX_DIM];
    *embed_s = *sig_s = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = sc_bench_now();
        sc_err rc = sc_embed_text(e, text, len, v);
        double t1 = sc_bench_now();
        sc_embed_sig *g = NULL;
        if (rc != SC_OK || sc_embed_sig_new(e, text, len, &g) != SC_OK) {
            fprintf(stderr, "bench_embed: a 1 MiB text: %s\n",
                    sc_strerror(rc != SC_OK ? rc : SC_ENOMEM));
            exit(1);
        }
        double t2 = sc_bench_now();
        sc_embed_sig_free(g);
        sink += v[0];
        *embed_s = t1 - t0 < *embed_s ? t1 - t0 : *embed_s;
        *sig_s = t2 - t1 < *sig_s ? t2 - t1 : *sig_s;
    }
}

/* 1 MiB texts a client may send: the prompts joined, and the repeats a
 * hostile one would pick (a hyphen chain of one-letter unknown words, a
 * chain of known words, one unknown word again and again, and one run of
 * numbers that a letter ends: the last byte of each is put in last). */
#define N_BIG 5
static const char *const big_name[N_BIG] = {"prompts", "a-a-a-...",
                                            "state-of-the-art-...",
                                            "zqx zqx ...", "1.1.1...1x"};
static const char *const big_unit[N_BIG] = {NULL, "a-", "state-of-the-art-",
                                            "zqx ", "1."};
static const char big_last[N_BIG] = {0, 0, 0, 0, 'x'};

static void big_texts(const sc_embed *e, const prompts *p, double *embed_s,
                      double *sig_s)
{
    size_t cap = (size_t)1 << 20;
    char *big = malloc(cap);
    if (big == NULL) {
        fprintf(stderr, "bench_embed: out of memory\n");
        exit(1);
    }
    for (int k = 0; k < N_BIG; k++) {
        size_t len = 0;
        if (big_unit[k] == NULL) {
            len = join_prompts(p, big, cap);
        } else {
            size_t ul = strlen(big_unit[k]);
            for (; len < cap; len++) {
                big[len] = big_unit[k][len % ul];
            }
            if (big_last[k] != 0) {
                big[len - 1] = big_last[k];
            }
        }
        big_text(e, big, len, &embed_s[k], &sig_s[k]);
    }
    free(big);
}

/* A scope's document frequencies as the cache keeps them: every prompt
 * counted in as it is stored, then out as it is evicted. Texts (in and
 * out once each) per second. */
static double df_rate(const sc_embed *e, const prompts *p, double secs,
                      size_t *done)
{
    size_t n = 0;
    double t0 = sc_bench_now(), t;
    do {
        sc_embed_df *df = sc_embed_df_new();
        if (df == NULL) {
            fprintf(stderr, "bench_embed: out of memory\n");
            exit(1);
        }
        for (size_t i = 0; i < p->n; i++) {
            sc_embed_df_count(df, e, p->text[i], p->len[i], 1);
        }
        for (size_t i = 0; i < p->n; i++) {
            sc_embed_df_count(df, e, p->text[i], p->len[i], -1);
        }
        sink += (float)sc_embed_df_bytes(df);
        sc_embed_df_free(df);
        n += p->n;
        t = sc_bench_now();
    } while (t - t0 < secs);
    *done = n;
    return n / (t - t0);
}

static double median3(const double *v)
{
    double a = v[0], b = v[1], c = v[2];
    return a < b ? (b < c ? b : a < c ? c : a) : (a < c ? a : b < c ? c : b);
}

int main(int argc, char **argv)
{
    const char *table = "build/data/" SC_EMBED_DEFAULT_FILE;
    const char *dir = "../shared/data";
    double secs = 2.0;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--table") == 0 && i + 1 < argc) {
            table = argv[++i];
        } else if (strcmp(argv[i], "--data") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            secs = atof(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench_embed [--table FILE] [--data DIR] "
                            "[--seconds S] [--json]\n");
            return 2;
        }
    }
    sc_embed *e;
    sc_err rc = sc_embed_open(table, &e);
    if (rc != SC_OK) {
        fprintf(stderr, "bench_embed: %s: %s\n%s\n", table, sc_strerror(rc),
                SC_EMBED_HOWTO);
        return 1;
    }
    prompts p = {0};
    load_dir(dir, &p);
    if (p.n == 0) {
        fprintf(stderr,
                "bench_embed: no prompts under %s (the labelled sets are "
                "not in the repository: README.md, \"Benchmarks\", says "
                "where to get them)\n",
                dir);
        return 1;
    }
    sc_bench_machine m;
    sc_bench_machine_read(&m);
    sc_embed_params ship, plain;
    sc_embed_params_default(&ship);
    sc_embed_params_default(&plain);
    plain.sif_a = 0;
    plain.ncomp = 0;
    plain.oov_hash = false;
    size_t n1, n2, n3;
    /* Warm the pages the prompts touch, then measure. */
    rate(e, &ship, &p, 0.2, &n1);
    double r_plain = rate(e, &plain, &p, secs, &n1);
    double r_ship = rate(e, &ship, &p, secs, &n2);
    double r_res = rescore_rate(e, NULL, &p, secs, &n3);
    sc_embed_df *df = sc_embed_df_new();
    for (size_t i = 0; df != NULL && i < p.n; i++) {
        sc_embed_df_count(df, e, p.text[i], p.len[i], 1);
    }
    size_t n4, n5, n6, n7;
    double r_df = rescore_rate(e, df, &p, secs, &n4);
    /* The two ways of judging a lookup's candidates, alternately three
     * times each (so that neither gets the warmer caches or the quieter
     * moment of a shared machine); the median of each. */
    double ro[3], rm[3];
    size_t k5, k6;
    n5 = n6 = 0;
    for (int r = 0; r < 3; r++) {
        ro[r] = lookup_rate(e, df, &p, BY_CALLS, NULL, secs / 3, &k5);
        rm[r] = lookup_rate(e, df, &p, BY_MANY, NULL, secs / 3, &k6);
        n5 += k5;
        n6 += k6;
    }
    double r_one = median3(ro), r_many = median3(rm);
    /* From signatures, as the cache rescores since they came. */
    sc_embed_sig **sigs = calloc(p.n, sizeof(*sigs));
    for (size_t i = 0; i < p.n; i++) {
        if (sigs == NULL ||
            sc_embed_sig_new(e, p.text[i], p.len[i], &sigs[i]) != SC_OK) {
            fprintf(stderr, "bench_embed: out of memory\n");
            return 1;
        }
    }
    size_t n8, n9;
    double r_sig = lookup_rate(e, df, &p, BY_SIGS, sigs, secs, &n8);
    for (size_t i = 0; i < p.n; i++) {
        sc_embed_sig_free(sigs[i]);
    }
    free(sigs);
    double r_signew = sig_rate(e, &p, secs, &n9);
    double long_text_s, long_sig_s;
    long_text(e, &p, &long_text_s, &long_sig_s);
    sc_embed_df_free(df);
    double r_count = df_rate(e, &p, secs, &n7);
    double big_embed[N_BIG], big_sig[N_BIG];
    big_texts(e, &p, big_embed, big_sig);
    double avg = (double)p.bytes / p.n;
    if (!json) {
        printf("bench_embed: %s, %s, 1 thread, %zu prompts (mean %.0f "
               "bytes), model %s\n",
               m.cpu, m.date, p.n, avg, sc_embed_model(e));
        printf("%-28s %12s %14s %8s\n", "method", "prompts", "prompts/s",
               "ratio");
        printf("%-28s %12zu %14.0f %8.2f\n", "plain average", n1, r_plain, 1.0);
        printf("%-28s %12zu %14.0f %8.2f\n", "sif + common comp (shipped)", n2,
               r_ship, r_ship / r_plain);
        printf("%-28s %12zu %14.0f %8.2f\n", "rescore (pairs)", n3, r_res,
               r_res / r_plain);
        printf("%-28s %12zu %14.0f %8.2f\n", "rescore + scope idf (pairs)", n4,
               r_df, r_df / r_plain);
        printf("%-28s %12zu %14.0f %8.2f\n", "8 candidates, 8 calls", n5, r_one,
               r_one / r_plain);
        printf("%-28s %12zu %14.0f %8.2f  (%.2fx 8 calls)\n",
               "8 candidates, rescore_many", n6, r_many, r_many / r_plain,
               r_many / r_one);
        printf("%-28s %12zu %14.0f %8.2f\n", "df count, in + out (texts)", n7,
               r_count, r_count / r_plain);
        printf("%-28s %12zu %14.0f %8.2f  (%.2fx rescore_many)\n",
               "8 candidates, signatures", n8, r_sig, r_sig / r_plain,
               r_sig / r_many);
        printf("%-28s %12zu %14.0f %8.2f\n", "signature made (texts)", n9,
               r_signew, r_signew / r_plain);
        printf("1 MiB stored text, one rescore: %.3f ms from the text, "
               "%.4f ms from signatures (%.0fx)\n",
               long_text_s * 1e3, long_sig_s * 1e3, long_text_s / long_sig_s);
        printf("%-28s %10s %8s %10s %8s\n", "1 MiB text (best of 5)",
               "embed ms", "ratio", "sign ms", "ratio");
        for (int k = 0; k < N_BIG; k++) {
            printf("%-28s %10.2f %8.2f %10.2f %8.2f\n", big_name[k],
                   big_embed[k] * 1e3, big_embed[k] / big_embed[0],
                   big_sig[k] * 1e3, big_sig[k] / big_sig[0]);
        }
    } else {
        const char *names[9] = {
            "plain_average", "shipped",       "rescore",
            "rescore_idf",   "lookup8_calls", "lookup8_many",
            "df_count",      "lookup8_sigs",  "sig_new"};
        double rates[9] = {r_plain, r_ship,  r_res, r_df,    r_one,
                           r_many,  r_count, r_sig, r_signew};
        size_t ns[9] = {n1, n2, n3, n4, n5, n6, n7, n8, n9};
        for (int i = 0; i < 9; i++) {
            sc_bench_json j;
            sc_bench_json_begin(&j);
            sc_bench_json_str(&j, "bench", "embed");
            sc_bench_json_str(&j, "method", names[i]);
            sc_bench_json_str(&j, "model", sc_embed_model(e));
            sc_bench_json_str(&j, "cpu", m.cpu);
            sc_bench_json_int(&j, "threads", 1);
            sc_bench_json_int(&j, "items", (long long)ns[i]);
            sc_bench_json_num(&j, "per_second", rates[i]);
            sc_bench_json_num(&j, "ratio_to_plain", rates[i] / r_plain);
            sc_bench_json_num(&j, "mean_prompt_bytes", avg);
            sc_bench_json_end(&j, stdout);
        }
        sc_bench_json j;
        sc_bench_json_begin(&j);
        sc_bench_json_str(&j, "bench", "embed");
        sc_bench_json_str(&j, "method", "rescore_1mib_text");
        sc_bench_json_str(&j, "cpu", m.cpu);
        sc_bench_json_num(&j, "ms_from_text", long_text_s * 1e3);
        sc_bench_json_num(&j, "ms_from_signatures", long_sig_s * 1e3);
        sc_bench_json_num(&j, "ratio", long_text_s / long_sig_s);
        sc_bench_json_end(&j, stdout);
        for (int k = 0; k < N_BIG; k++) {
            sc_bench_json_begin(&j);
            sc_bench_json_str(&j, "bench", "embed");
            sc_bench_json_str(&j, "method", "text_1mib");
            sc_bench_json_str(&j, "text", big_name[k]);
            sc_bench_json_str(&j, "cpu", m.cpu);
            sc_bench_json_num(&j, "embed_ms", big_embed[k] * 1e3);
            sc_bench_json_num(&j, "sign_ms", big_sig[k] * 1e3);
            sc_bench_json_num(&j, "embed_ratio_to_prompts",
                              big_embed[k] / big_embed[0]);
            sc_bench_json_num(&j, "sign_ratio_to_prompts",
                              big_sig[k] / big_sig[0]);
            sc_bench_json_end(&j, stdout);
        }
    }
    for (size_t i = 0; i < p.n; i++) {
        free(p.text[i]);
    }
    free(p.text);
    free(p.len);
    sc_embed_close(e);
    return 0;
}
