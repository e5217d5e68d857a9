/* bench_embed.c - "how fast is the built-in embedder?": prompts embedded per
 * second on one core, over real short prompts (every text of the labelled
 * sets in the data directory), the shipped method side by side with a plain
 * unweighted average of word vectors in the same run, plus the rescore.
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

int main(int argc, char **argv)
{
    const char *table = "build/data/" SC_EMBED_DEFAULT_FILE;
    const char *dir = "/work/shared/data";
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
        fprintf(stderr, "bench_embed: no prompts under %s\n", dir);
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
    size_t n4;
    double r_df = rescore_rate(e, df, &p, secs, &n4);
    sc_embed_df_free(df);
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
    } else {
        const char *names[4] = {"plain_average", "shipped", "rescore",
                                "rescore_idf"};
        double rates[4] = {r_plain, r_ship, r_res, r_df};
        size_t ns[4] = {n1, n2, n3, n4};
        for (int i = 0; i < 4; i++) {
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
    }
    for (size_t i = 0; i < p.n; i++) {
        free(p.text[i]);
    }
    free(p.text);
    free(p.len);
    sc_embed_close(e);
    return 0;
}
