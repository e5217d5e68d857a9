/* test_embed.c - the built-in embedder on a tiny table built here from a
 * tiny JSON (no download): the converter, tokenisation, known-answer
 * vectors computed independently, unit norm, OOV words and numbers, hostile
 * text, threads, every kind of corrupt table, and the rescore; with
 * --table PATH, sentence vectors against a reference copy on that table
 * too (ctest passes the real one). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "embed/embed.h"
#include "embed/embed_internal.h"
#include "embed/table.h"
#include "tests/test_tmp.h"
#include "tests/test_util.h"

#define DIM 48

/* Vocabulary in frequency order (rank = position). */
static const char *const vocab[] = {
    "the",  ",",      ".",      "do",         "i",       "my",    "how",
    "not",  "?",      "can",    "will",       "is",      "order", "are",
    "we",   "well",   "known",  "well-known", "cancel",  "track", "card",
    "lost", "stolen", "please", "!",          "have",    "am",    "would",
    "call", "phone",  "shall",  "new",        "account", "open",  "close",
    "10th", "café",   "'",      "-",          "\""};
#define NV (sizeof(vocab) / sizeof(vocab[0]))

static float vec[NV][DIM];
static char dir[256], json_path[300], table_path[300];

static void make_vectors(void)
{
    uint64_t s = 42;
    for (size_t i = 0; i < NV; i++) {
        for (int d = 0; d < DIM; d++) {
            /* Nearly one-hot, so distinct words are nearly orthogonal;
             * short binary fractions, exact in the JSON and as floats. */
            vec[i][d] = (float)((long)(test_randf(&s) * 50)) / 1024.0f +
                        (d == (int)i ? 1.0f + (float)i / 64.0f : 0.0f);
        }
    }
    /* "phone" and "call" are near-synonyms: almost the same vector;
     * "track" is the opposite of "cancel". */
    for (int d = 0; d < DIM; d++) {
        vec[29][d] = vec[28][d] + (d == 0 ? 0.0625f : 0.0f);
        vec[19][d] = -vec[18][d];
    }
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            fputc('\\', f);
        }
        fputc(*s, f);
    }
    fputc('"', f);
}

/* The wink layout: header numbers, "words", "vectors" {word: [dim values,
 * norm, index]}, "unkVector". The vectors come in reverse order so that
 * only "words" gives the rank. */
static void write_json(const char *path)
{
    FILE *f = fopen(path, "w");
    fprintf(f,
            "{\"precision\":8,\"l2NormIndex\":%d,\"wordIndex\":%d,"
            "\"size\":%zu,\"dimensions\":%d,\"words\":[",
            DIM, DIM + 1, NV, DIM);
    for (size_t i = 0; i < NV; i++) {
        fprintf(f, "%s", i ? "," : "");
        json_str(f, vocab[i]);
    }
    fprintf(f, "],\"nested\":{\"a\":[1,{\"b\":null}],\"c\":\"x\\\"y\"},"
               "\"vectors\":{");
    for (size_t k = 0; k < NV; k++) {
        size_t i = NV - 1 - k;
        fprintf(f, "%s", k ? "," : "");
        json_str(f, vocab[i]);
        fprintf(f, ":[");
        for (int d = 0; d < DIM; d++) {
            fprintf(f, "%s%.9g", d ? "," : "", vec[i][d]);
        }
        fprintf(f, ",1.5,%zu]", i);
    }
    fprintf(f, "},\"unkVector\":[0,0,0,0,0,0,0,-1]}\n");
    fclose(f);
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

static void spit(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
}

/* ---- the converter ------------------------------------------------------*/

static sc_embed *E;

static void test_build(void)
{
    char err[256];
    CHECK_EQ_INT(
        sc_embed_build(json_path, table_path, "test", err, sizeof(err)), SC_OK);
    CHECK_EQ_INT(sc_embed_open(table_path, &E), SC_OK);
    CHECK_EQ_INT(sc_embed_dim(E), DIM);
    CHECK_EQ_INT(sc_embed_words(E), NV);
    CHECK(strncmp(sc_embed_model(E), SC_EMBED_METHOD_NAME "@",
                  strlen(SC_EMBED_METHOD_NAME) + 1) == 0);
    /* Another version or table of this method is superseded; this model,
     * another method's and a near-miss name are not. */
    CHECK(!sc_embed_model_superseded(E, sc_embed_model(E)));
    CHECK(sc_embed_model_superseded(E, SC_EMBED_METHOD_NAME "@1.00000000"));
    CHECK(sc_embed_model_superseded(E, SC_EMBED_METHOD_NAME "@"));
    CHECK(!sc_embed_model_superseded(E, SC_EMBED_METHOD_NAME));
    CHECK(!sc_embed_model_superseded(E, "text-embedding-3-small"));
    CHECK(!sc_embed_model_superseded(E, ""));
    CHECK(!sc_embed_model_superseded(E, NULL));
    CHECK(!sc_embed_model_superseded(NULL, SC_EMBED_METHOD_NAME "@1.0"));
    for (size_t i = 0; i < NV; i++) {
        CHECK_EQ_INT(sc_embed_lookup(E, vocab[i], strlen(vocab[i])), i);
    }
    CHECK_EQ_INT(sc_embed_lookup(E, "nope", 4), -1);
    CHECK_EQ_INT(sc_embed_lookup(E, "", 0), -1);
    /* Deterministic: the same input gives the same bytes. */
    char again[320];
    snprintf(again, sizeof(again), "%s/again.sctab", dir);
    CHECK_EQ_INT(sc_embed_build(json_path, again, "test", err, sizeof(err)),
                 SC_OK);
    size_t n1, n2;
    unsigned char *a = slurp(table_path, &n1), *b = slurp(again, &n2);
    CHECK(a && b && n1 == n2 && memcmp(a, b, n1) == 0);
    free(a);
    free(b);
    unlink(again);

    /* Malformed JSON: every truncation, and some bad documents. */
    size_t jn;
    unsigned char *j = slurp(json_path, &jn);
    char bad[320];
    snprintf(bad, sizeof(bad), "%s/bad.json", dir);
    int refused = 0, tries = 0;
    for (size_t cut = 0; cut + 2 < jn; cut += 1 + cut / 64) {
        spit(bad, j, cut);
        tries++;
        refused +=
            sc_embed_build(bad, again, NULL, err, sizeof(err)) == SC_EBADFILE;
    }
    CHECK_EQ_INT(refused, tries);
    CHECK(access(again, F_OK) != 0); /* nothing left behind */
    free(j);
    const char *docs[] = {
        "",
        "[]",
        "{}",
        "{\"dimensions\":2,\"vectors\":{\"a\":[1]}}",
        "{\"dimensions\":2,\"vectors\":{\"a\":[1,nan]}}",
        "{\"dimensions\":2,\"vectors\":{\"a\":[1,1e999]}}",
        "{\"dimensions\":0,\"vectors\":{\"a\":[1]}}",
        "{\"vectors\":{\"a\":[1,2]}} x",
        "{\"vectors\":{\"a\":[1,2,3,0.5,7],\"b\":[1,2,3,0.5,7,1,8]}}",
        "{\"vectors\":{\"a\":[1,2,3,4],\"b\":[1,2,3]}}",
        "{\"vectors\":{\"a\":[1,2],}}",
        "{\"vectors\":{\"a\\ud800\":[1,2]}}",
        "{\"vectors\":{\"a\":[1,2]},\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
        "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        spit(bad, docs[i], strlen(docs[i]));
        sc_err rc = sc_embed_build(bad, again, NULL, err, sizeof(err));
        CHECK(rc == SC_EBADFILE);
        if (rc != SC_EBADFILE) {
            fprintf(stderr, "  doc %zu: %s\n", i, sc_errname(rc));
        }
    }
    /* An empty word first: nothing copied into a buffer not made yet
     * (memcpy to NULL, caught by UBSan). A table of it, or a refusal. */
    const char *empty = "{\"dimensions\":2,\"vectors\":{\"\":[1,2]}}";
    spit(bad, empty, strlen(empty));
    sc_err erc = sc_embed_build(bad, again, NULL, err, sizeof(err));
    CHECK(erc == SC_OK || erc == SC_EBADFILE);
    unlink(again);
    /* A minimal good one: no "words", rank = file order; escapes decoded. */
    const char *ok = "{\"vectors\":{\"\\u00e9t\\u00e9\":[1,2],\"b\":[0,1]}}";
    spit(bad, ok, strlen(ok));
    CHECK_EQ_INT(sc_embed_build(bad, again, NULL, err, sizeof(err)), SC_OK);
    sc_embed *m;
    CHECK_EQ_INT(sc_embed_open(again, &m), SC_OK);
    if (m != NULL) {
        CHECK_EQ_INT(sc_embed_dim(m), 2);
        CHECK_EQ_INT(sc_embed_lookup(m, "\xc3\xa9t\xc3\xa9", 5), 0);
        CHECK_EQ_INT(sc_embed_lookup(m, "b", 1), 1);
        sc_embed_close(m);
    }
    unlink(again);
    unlink(bad);
    CHECK_EQ_INT(
        sc_embed_build("/nonexistent/x.json", again, NULL, err, sizeof(err)),
        SC_EIO);
    CHECK_EQ_INT(sc_embed_build(NULL, again, NULL, NULL, 0), SC_EINVAL);
}

/* ---- tokenisation -------------------------------------------------------*/

static void tokens_are(const char *text, const char *want)
{
    char buf[512];
    sc_embed_debug_tokens(E, text, strlen(text), buf, sizeof(buf));
    int same = strcmp(buf, want) == 0;
    CHECK(same);
    if (!same) {
        fprintf(stderr, "  tokens of \"%s\": \"%s\", want \"%s\"\n", text, buf,
                want);
    }
}

static void test_tokens(void)
{
    tokens_are("How do I CANCEL my Order?", "how do i cancel my order ? ");
    tokens_are("  don't\tcancel\n", "do not cancel ");
    tokens_are("don\xe2\x80\x99t", "do not "); /* curly apostrophe */
    tokens_are("can't won't shan't", "can not will not shall not ");
    tokens_are("we're i'm i've we'll i'd it's",
               "we are i am i have we will i would ~it ");
    tokens_are("o'neill", "~o ' ~neill ");
    tokens_are("well-known foo-bar", "well-known ~foo - ~bar ");
    tokens_are("1,000 and 3.5, 42.", "#1000 ~and #3.5 , #42 . ");
    /* ',' between digits is a thousands mark only before three digits
     * and no fourth: a list or a decimal comma stays apart. */
    tokens_are("1,2,3 and 2,5", "#1 , #2 , #3 ~and #2 , #5 ");
    tokens_are("12,345.6 3,1415 1,000,000", "#12345.6 #3 , #1415 #1000000 ");
    /* Nor after a decimal point (version 4): "0.5,100" was 0.5100. */
    tokens_are("0.5,100 3.141,592", "#0.5 , #100 #3.141 , #592 ");
    tokens_are("the 10th card", "the 10th card ");
    tokens_are("CAF\xc3\xa9 CAF\xc3\x89", "caf\xc3\xa9 ~caf\xc3\x89 ");
    tokens_are("\xe2\x80\x9cquoted\xe2\x80\x9d", "\" ~quoted \" ");
    tokens_are("", "");
    tokens_are("!!", "! ! ");
    /* A token longer than the cap is cut, not overrun. */
    char longw[300];
    memset(longw, 'x', sizeof(longw) - 1);
    longw[sizeof(longw) - 1] = '\0';
    char buf[512];
    CHECK_EQ_INT(
        sc_embed_debug_tokens(E, longw, strlen(longw), buf, sizeof(buf)), 1);
    CHECK_EQ_INT(strlen(buf), 1 + 64 + 1);
    /* "n't" is read off a whole token only: a token cut at 64 bytes whose
     * 64th byte is 'n' gained a "not" (since model version 5). */
    char cutn[128];
    memset(cutn, 'a', 63);
    strcpy(cutn + 63, "nb't go");
    CHECK(sc_embed_debug_tokens(E, cutn, strlen(cutn), buf, sizeof(buf)) > 0);
    CHECK(strstr(buf, "not") == NULL);
    /* A buffer that fills midway: cut at a token, never written past (the
     * heap copy lets ASan see one byte over). */
    char *small = malloc(8);
    CHECK(small != NULL);
    if (small != NULL) {
        CHECK_EQ_INT(sc_embed_debug_tokens(E, "the cat the cat", 15, small, 8),
                     4);
        CHECK(strcmp(small, "the ") == 0);
        CHECK(memchr(small, '\0', 8) != NULL);
        free(small);
    }
}

/* ---- sentence vectors ---------------------------------------------------*/

static const sc_embed_header *hdr(const unsigned char *t)
{
    return (const sc_embed_header *)t;
}

/* The expected vector, computed here from the JSON's numbers, Zipf ranks
 * and the table's stored components. */
static void expect_vec(const unsigned char *tab, const int *ids, int n,
                       const sc_embed_params *p, double *out)
{
    const sc_embed_header *h = hdr(tab);
    double harm = 0;
    for (size_t i = 0; i < NV; i++) {
        harm += 1.0 / (i + 1.0);
    }
    double s[DIM] = {0};
    for (int k = 0; k < n; k++) {
        double pw = 1.0 / ((ids[k] + 1.0) * harm);
        double w = p->sif_a > 0 ? p->sif_a / (p->sif_a + pw) : 1.0;
        for (int d = 0; d < DIM; d++) {
            s[d] += w * vec[ids[k]][d];
        }
    }
    const float *comp = (const float *)(tab + h->comp_off);
    for (unsigned c = 0; c < p->ncomp && c < h->ncomp; c++) {
        double dot = 0;
        for (int d = 0; d < DIM; d++) {
            dot += s[d] * comp[c * DIM + d];
        }
        for (int d = 0; d < DIM; d++) {
            s[d] -= dot * comp[c * DIM + d];
        }
    }
    double nrm = 0;
    for (int d = 0; d < DIM; d++) {
        nrm += s[d] * s[d];
    }
    for (int d = 0; d < DIM; d++) {
        out[d] = s[d] / sqrt(nrm);
    }
}

static double maxdiff(const float *a, const double *b)
{
    double m = 0;
    for (int d = 0; d < DIM; d++) {
        m = fmax(m, fabs(a[d] - b[d]));
    }
    return m;
}

static double norm(const float *a)
{
    double s = 0;
    for (int d = 0; d < DIM; d++) {
        s += (double)a[d] * a[d];
    }
    return sqrt(s);
}

static double cosf8(const float *a, const float *b)
{
    double s = 0;
    for (int d = 0; d < DIM; d++) {
        s += (double)a[d] * b[d];
    }
    return s / (norm(a) * norm(b));
}

static void test_vectors(void)
{
    size_t tn;
    unsigned char *tab = slurp(table_path, &tn);
    const sc_embed_header *h = hdr(tab);
    float out[DIM];
    double want[DIM];
    sc_embed_params p;
    sc_embed_params_default(&p);

    /* The components: unit, and the first is the top eigenvector of the
     * matrix the builder documents (checked against random directions). */
    CHECK(h->ncomp >= 1);
    {
        const double a = 1e-3, L = 10;
        double harm = 0, mu[DIM] = {0}, m[DIM][DIM] = {{0}};
        for (size_t i = 0; i < NV; i++) {
            harm += 1.0 / (i + 1.0);
        }
        for (size_t i = 0; i < NV; i++) {
            double pw = 1.0 / ((i + 1.0) * harm), w = a / (a + pw);
            for (int d = 0; d < DIM; d++) {
                mu[d] += pw * w * vec[i][d];
                for (int e = 0; e < DIM; e++) {
                    m[d][e] += L * pw * w * w * vec[i][d] * vec[i][e];
                }
            }
        }
        for (int d = 0; d < DIM; d++) {
            for (int e = 0; e < DIM; e++) {
                m[d][e] += L * (L - 1) * mu[d] * mu[e];
            }
        }
        const float *u = (const float *)(tab + h->comp_off);
        double uMu = 0;
        for (int d = 0; d < DIM; d++) {
            for (int e = 0; e < DIM; e++) {
                uMu += u[d] * m[d][e] * u[e];
            }
        }
        uint64_t s = 7;
        int top = 1;
        for (int t = 0; t < 200; t++) {
            double x[DIM], xn = 0, xMx = 0;
            for (int d = 0; d < DIM; d++) {
                x[d] = test_randf(&s);
                xn += x[d] * x[d];
            }
            for (int d = 0; d < DIM; d++) {
                for (int e = 0; e < DIM; e++) {
                    xMx += x[d] * m[d][e] * x[e];
                }
            }
            top &= xMx / xn <= uMu * (1 + 1e-4);
        }
        CHECK(top);
    }

    /* "how do i cancel my order": ranks 6 3 4 18 5 12. */
    const char *t1 = "How do I cancel my order";
    int ids1[] = {6, 3, 4, 18, 5, 12};
    CHECK_EQ_INT(sc_embed_text(E, t1, strlen(t1), out), SC_OK);
    expect_vec(tab, ids1, 6, &p, want);
    CHECK(maxdiff(out, want) < 1e-5);
    CHECK(fabs(norm(out) - 1) < 1e-5);
    /* Plain average, no component: the same words. */
    sc_embed_params plain = p;
    plain.sif_a = 0;
    plain.ncomp = 0;
    CHECK_EQ_INT(sc_embed_text_p(E, &plain, t1, strlen(t1), out), SC_OK);
    expect_vec(tab, ids1, 6, &plain, want);
    CHECK(maxdiff(out, want) < 1e-5);
    /* Contractions and case: "DON'T cancel" = "do not cancel". */
    float o2[DIM];
    CHECK_EQ_INT(sc_embed_text(E, "DON'T cancel", 12, out), SC_OK);
    CHECK_EQ_INT(sc_embed_text(E, "do not cancel", 13, o2), SC_OK);
    CHECK(memcmp(out, o2, sizeof(out)) == 0);
    int ids2[] = {3, 7, 18};
    expect_vec(tab, ids2, 3, &p, want);
    CHECK(maxdiff(out, want) < 1e-5);

    /* OOV words and numbers: a fixed hashed vector, so they count. */
    float a[DIM], b[DIM], c[DIM];
    CHECK_EQ_INT(sc_embed_text(E, "cancel my zyzzyva", 17, a), SC_OK);
    CHECK_EQ_INT(sc_embed_text(E, "cancel my zyzzyva", 17, b), SC_OK);
    CHECK(memcmp(a, b, sizeof(a)) == 0);
    CHECK_EQ_INT(sc_embed_text(E, "cancel my", 9, c), SC_OK);
    CHECK(cosf8(a, c) < 0.999);
    CHECK_EQ_INT(sc_embed_text(E, "12345", 5, a), SC_OK);
    CHECK(fabs(norm(a) - 1) < 1e-5);
    CHECK_EQ_INT(sc_embed_text(E, "zyzzyva", 7, a), SC_OK);
    CHECK_EQ_INT(sc_embed_text(E, "qwertyuiop", 10, b), SC_OK);
    CHECK(cosf8(a, b) < 0.9);
    sc_embed_params nooov = p;
    nooov.oov_hash = false;
    CHECK_EQ_INT(sc_embed_text_p(E, &nooov, "zyzzyva", 7, a), SC_EZEROVEC);

    /* Nothing usable: an error, and out untouched. */
    float keep[DIM];
    for (int d = 0; d < DIM; d++) {
        keep[d] = out[d] = 7.0f;
    }
    CHECK_EQ_INT(sc_embed_text(E, "", 0, out), SC_EZEROVEC);
    CHECK_EQ_INT(sc_embed_text(E, NULL, 0, out), SC_EZEROVEC);
    CHECK_EQ_INT(sc_embed_text(E, " \t\r\n ", 5, out), SC_EZEROVEC);
    CHECK_EQ_INT(sc_embed_text(E, "?!, .", 5, out), SC_EZEROVEC);
    CHECK(memcmp(out, keep, sizeof(out)) == 0);
    CHECK_EQ_INT(sc_embed_text(E, NULL, 3, out), SC_EINVAL);
    CHECK_EQ_INT(sc_embed_text(E, "x", 1, NULL), SC_EINVAL);
    CHECK_EQ_INT(sc_embed_text(NULL, "x", 1, out), SC_EINVAL);
    /* NUL bytes are just separators. */
    CHECK_EQ_INT(sc_embed_text(E, "cancel\0order", 12, a), SC_OK);
    CHECK_EQ_INT(sc_embed_text(E, "cancel order", 12, b), SC_OK);
    CHECK(memcmp(a, b, sizeof(a)) == 0);

    /* Garbage and huge input: never a crash, a unit vector or EZEROVEC. */
    uint64_t s = 99;
    size_t big = 1u << 20;
    char *g = malloc(big);
    int fine = 1;
    for (int round = 0; round < 200; round++) {
        size_t n = test_rand(&s) % 300;
        for (size_t i = 0; i < n; i++) {
            g[i] = (char)test_rand(&s);
        }
        sc_err rc = sc_embed_text(E, g, n, out);
        fine &=
            rc == SC_EZEROVEC || (rc == SC_OK && fabs(norm(out) - 1) < 1e-4);
    }
    for (size_t i = 0; i < big; i++) {
        g[i] = (char)test_rand(&s);
    }
    sc_err rc = sc_embed_text(E, g, big, out);
    fine &= rc == SC_OK && fabs(norm(out) - 1) < 1e-4;
    memset(g, 0xff, big);
    rc = sc_embed_text(E, g, big, out);
    fine &= rc == SC_OK; /* one long (truncated) OOV word */
    for (size_t i = 0; i < big; i++) {
        g[i] = "cancel my order "[i % 16];
    }
    rc = sc_embed_text(E, g, big, out);
    fine &= rc == SC_OK && fabs(norm(out) - 1) < 1e-4;
    CHECK(fine);
    /* Truncated UTF-8 at the end of the text. */
    CHECK_EQ_INT(sc_embed_text(E, "card \xe2\x80", 7, out), SC_OK);
    CHECK_EQ_INT(sc_embed_text(E, "\xe2", 1, out), SC_OK);
    free(g);
    free(tab);
}

/* ---- threads ------------------------------------------------------------*/

static const char *const texts[] = {
    "how do i cancel my order", "track my card please",    "my card was stolen",
    "I lost my phone",          "open a new account",      "zyzzyva 42 things",
    "well-known card",          "do not close my account!"};
#define NT (sizeof(texts) / sizeof(texts[0]))
static float ref[NT][DIM];

static void *worker(void *arg)
{
    int *bad = arg;
    float out[DIM];
    for (int r = 0; r < 2000; r++) {
        size_t i = (size_t)r % NT;
        if (sc_embed_text(E, texts[i], strlen(texts[i]), out) != SC_OK ||
            memcmp(out, ref[i], sizeof(out)) != 0) {
            (*bad)++;
        }
        float x =
            sc_embed_rescore(E, texts[i], strlen(texts[i]), texts[(i + 1) % NT],
                             strlen(texts[(i + 1) % NT]), 0.9f);
        if (!(x <= 0.9f)) {
            (*bad)++;
        }
    }
    return NULL;
}

static void test_threads(void)
{
    for (size_t i = 0; i < NT; i++) {
        sc_embed_text(E, texts[i], strlen(texts[i]), ref[i]);
    }
    pthread_t th[4];
    int bad[4] = {0};
    for (int t = 0; t < 4; t++) {
        pthread_create(&th[t], NULL, worker, &bad[t]);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
    }
    CHECK_EQ_INT(bad[0] + bad[1] + bad[2] + bad[3], 0);
}

/* ---- corrupt tables -----------------------------------------------------*/

static char corrupt_path[320];

static sc_err open_bytes(const unsigned char *b, size_t n)
{
    spit(corrupt_path, b, n);
    sc_embed *e = NULL;
    sc_err rc = sc_embed_open(corrupt_path, &e);
    if (rc == SC_OK) {
        sc_embed_close(e);
    }
    return rc;
}

/* Applies edit to a copy of the header, re-checksums, and opens. */
static sc_err with_header(const unsigned char *tab, size_t n,
                          void (*edit)(sc_embed_header *, unsigned char *),
                          int fix_sum)
{
    unsigned char *c = malloc(n);
    memcpy(c, tab, n);
    sc_embed_header h;
    memcpy(&h, c, sizeof(h));
    edit(&h, c);
    if (fix_sum) {
        h.checksum = 0;
        memcpy(c, &h, sizeof(h));
        h.checksum = XXH3_64bits(c, n);
    }
    memcpy(c, &h, sizeof(h));
    sc_err rc = open_bytes(c, n);
    free(c);
    return rc;
}

static void e_none(sc_embed_header *h, unsigned char *b)
{
    (void)h;
    (void)b;
}
static void e_magic(sc_embed_header *h, unsigned char *b)
{
    (void)b;
    h->magic[0] = 'X';
}
static void e_version(sc_embed_header *h, unsigned char *b)
{
    (void)b;
    h->version = 2;
}
static void e_endian(sc_embed_header *h, unsigned char *b)
{
    (void)b;
    h->endian = 0x04030201u;
}
static void e_dim0(sc_embed_header *h, unsigned char *b)
{
    (void)b;
    h->dim = 0;
}
static void e_dimbig(sc_embed_header *h, unsigned char *b)
{
    (void)b;
    h->dim = 0x40000000u;
}
static void e_nwords(sc_embed_header *h, unsigned char *b)
{
    (void)b;
    h->nwords = 0xffffffffu;
}
static void e_nwords_more(sc_embed_header *h, unsigned char *b)
{
    (void)b;
    h->nwords += 1;
}
static void e_nbuckets(sc_embed_header *h, unsigned char *b)
{
    (void)b;
    h->nbuckets -= 1;
}
static void e_nbuckets_small(sc_embed_header *h, unsigned char *b)
{
    (void)b;
    h->nbuckets = 32; /* a power of two, but < 2 * nwords */
}
static void e_vecoff(sc_embed_header *h, unsigned char *b)
{
    (void)b;
    h->vectors_off = h->file_size;
}
static void e_vecoff_huge(sc_embed_header *h, unsigned char *b)
{
    (void)b;
    h->vectors_off = UINT64_MAX - 7;
}
static void e_misaligned(sc_embed_header *h, unsigned char *b)
{
    (void)b;
    h->probs_off += 4;
}
static void e_overlap(sc_embed_header *h, unsigned char *b)
{
    (void)b;
    h->stroff_off = h->buckets_off;
}
static void e_strsize(sc_embed_header *h, unsigned char *b)
{
    (void)b;
    h->strings_size = UINT64_MAX;
}
static void e_ncomp(sc_embed_header *h, unsigned char *b)
{
    (void)b;
    h->ncomp = SC_EMBED_MAX_COMP + 1;
}
static void e_vectype(sc_embed_header *h, unsigned char *b)
{
    (void)b;
    h->vec_type = 7;
}
static void e_filesize(sc_embed_header *h, unsigned char *b)
{
    (void)b;
    h->file_size += 8;
}
static void e_source(sc_embed_header *h, unsigned char *b)
{
    (void)b;
    memset(h->source, 'a', sizeof(h->source));
}
static void e_stroff_order(sc_embed_header *h, unsigned char *b)
{
    uint32_t *so = (uint32_t *)(b + h->stroff_off);
    uint32_t t = so[2];
    so[2] = so[3];
    so[3] = t;
}
static void e_stroff_end(sc_embed_header *h, unsigned char *b)
{
    uint32_t *so = (uint32_t *)(b + h->stroff_off);
    so[h->nwords] += 1;
}
static void e_bucket_idx(sc_embed_header *h, unsigned char *b)
{
    uint64_t *bk = (uint64_t *)(b + h->buckets_off);
    for (uint32_t i = 0; i < h->nbuckets; i++) {
        if (bk[i] != 0) {
            bk[i] = (bk[i] & ~0xffffffffull) | (h->nwords + 1ull);
            break;
        }
    }
}
static void e_bucket_full(sc_embed_header *h, unsigned char *b)
{
    /* Every bucket used: a probe would never stop. */
    uint64_t *bk = (uint64_t *)(b + h->buckets_off);
    for (uint32_t i = 0; i < h->nbuckets; i++) {
        if (bk[i] == 0) {
            bk[i] = 1;
        }
    }
}
static void e_nan(sc_embed_header *h, unsigned char *b)
{
    float nan = NAN;
    memcpy(b + h->vectors_off + 4 * 5, &nan, 4);
}
static void e_inf_prob(sc_embed_header *h, unsigned char *b)
{
    float z = 0;
    memcpy(b + h->probs_off + 4 * 3, &z, 4);
}
static void e_comp(sc_embed_header *h, unsigned char *b)
{
    float two = 2;
    memcpy(b + h->comp_off, &two, 4);
}

static void test_corrupt(void)
{
    size_t n;
    unsigned char *tab = slurp(table_path, &n);
    const sc_embed_header *h = hdr(tab);
    snprintf(corrupt_path, sizeof(corrupt_path), "%s/corrupt.sctab", dir);
    CHECK_EQ_INT(open_bytes(tab, n), SC_OK);

    /* Truncation at every length, section boundaries included. */
    int refused = 0;
    for (size_t cut = 0; cut < n; cut++) {
        refused += open_bytes(tab, cut) != SC_OK;
    }
    CHECK_EQ_INT(refused, n);
    uint64_t bounds[] = {sizeof(*h),     h->buckets_off, h->stroff_off,
                         h->strings_off, h->vectors_off, h->probs_off,
                         h->comp_off};
    for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++) {
        sc_err rc = open_bytes(tab, bounds[i]);
        CHECK(rc == SC_EBADFILE);
    }
    /* Longer than it says. */
    unsigned char *longer = calloc(1, n + 8);
    memcpy(longer, tab, n);
    CHECK_EQ_INT(open_bytes(longer, n + 8), SC_EBADFILE);
    free(longer);

    /* Every single bit flip somewhere in each byte is caught. */
    unsigned char *c = malloc(n);
    refused = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(c, tab, n);
        c[i] ^= (unsigned char)(1u << (i % 8));
        refused += open_bytes(c, n) != SC_OK;
    }
    CHECK_EQ_INT(refused, n);
    memcpy(c, tab, n);
    c[h->vectors_off + 9] ^= 0x10;
    CHECK_EQ_INT(open_bytes(c, n), SC_ECHECKSUM);
    free(c);

    /* Bad fields behind a good checksum: a buggy or hostile builder. */
    CHECK_EQ_INT(with_header(tab, n, e_none, 1), SC_OK);
    CHECK_EQ_INT(with_header(tab, n, e_magic, 1), SC_EBADFILE);
    CHECK_EQ_INT(with_header(tab, n, e_version, 1), SC_EBADVERSION);
    CHECK_EQ_INT(with_header(tab, n, e_version, 0), SC_EBADVERSION);
    void (*bad[])(sc_embed_header *, unsigned char *) = {
        e_endian,         e_dim0,         e_dimbig,
        e_nwords,         e_nwords_more,  e_nbuckets,
        e_nbuckets_small, e_vecoff,       e_vecoff_huge,
        e_misaligned,     e_overlap,      e_strsize,
        e_ncomp,          e_vectype,      e_filesize,
        e_source,         e_stroff_order, e_stroff_end,
        e_bucket_idx,     e_bucket_full,  e_nan,
        e_inf_prob,       e_comp};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sc_err rc = with_header(tab, n, bad[i], 1);
        CHECK(rc == SC_EBADFILE);
        if (rc != SC_EBADFILE) {
            fprintf(stderr, "  edit %zu: %s\n", i, sc_errname(rc));
        }
        /* And without fixing the checksum it is refused too. */
        CHECK(with_header(tab, n, bad[i], 0) != SC_OK);
    }
    /* Not a file, or none at all. */
    sc_embed *e = (sc_embed *)&n;
    CHECK_EQ_INT(sc_embed_open(dir, &e), SC_EIO);
    CHECK_EQ_INT(sc_embed_open("/nonexistent/t.sctab", &e), SC_EIO);
    CHECK(e == (sc_embed *)&n); /* untouched on failure */
    CHECK_EQ_INT(sc_embed_open(NULL, &e), SC_EINVAL);
    CHECK_EQ_INT(sc_embed_open(table_path, NULL), SC_EINVAL);
    sc_embed_close(NULL);
    unlink(corrupt_path);
    free(tab);
}

/* ---- rescore ------------------------------------------------------------*/

static float rs(const char *a, const char *b, float cosine)
{
    return sc_embed_rescore(E, a, strlen(a), b, strlen(b), cosine);
}

static float cosw(int i, int j)
{
    double d = 0, x = 0, y = 0;
    for (int k = 0; k < DIM; k++) {
        d += (double)vec[i][k] * vec[j][k];
        x += (double)vec[i][k] * vec[i][k];
        y += (double)vec[j][k] * vec[j][k];
    }
    return (float)(d / sqrt(x * y));
}

static float rsp(const sc_embed_params *p, const char *a, const char *b,
                 float cosine)
{
    return sc_embed_rescore_p(E, p, a, strlen(a), b, strlen(b), cosine);
}

static int near(float a, float b)
{
    return fabsf(a - b) < 1e-5f;
}

static void test_rescore(void)
{
    sc_embed_params p;
    sc_embed_params_default(&p);
    const float w = p.align_weight;
    CHECK(w > 0.0f && w < 1.0f);
    const char *q = "how do i cancel my order";
    /* Identical texts align fully: (1 - w) cosine + w. */
    CHECK(near(rs(q, q, 0.93f), (1 - w) * 0.93f + w));
    CHECK(near(rs("How do I cancel my ORDER?", q, 0.97f), (1 - w) * 0.97f + w));
    /* Known answers with one word a side: the alignment is the words'
     * cosine (0 when negative: "track" is the opposite of "cancel"). */
    CHECK(near(rs("cancel", "track", 0.8f), (1 - w) * 0.8f));
    CHECK(near(rs("call", "phone", 0.8f), (1 - w) * 0.8f + w * cosw(28, 29)));
    CHECK(near(rs("card", "lost", 0.5f),
               (1 - w) * 0.5f + w * fmaxf(0.0f, cosw(20, 21))));
    /* With the alignment off, the cosine alone (no lexical penalty). */
    sc_embed_params off = p;
    off.align_weight = 0.0f;
    CHECK(rsp(&off, q, "how do i track my order", 0.95f) == 0.95f);
    /* A different content word is pushed down, symmetrically. */
    float same = rs(q, q, 0.95f);
    float x = rs(q, "how do i track my order", 0.95f);
    CHECK(x < same - 0.03f);
    CHECK(x == rs("how do i track my order", q, 0.95f));
    /* A near-synonym costs less than an unrelated word. */
    float syn = rs("call my card", "phone my card", 0.95f);
    float unrel = rs("call my card", "lost my card", 0.95f);
    CHECK(syn > unrel);
    /* The alignment weighs its words with align_a; sif_a, the sentence
     * vector's, does not enter the rescore (it is given the cosine). */
    sc_embed_params sa = p;
    sa.sif_a = p.sif_a * 3;
    CHECK(rsp(&sa, "call my card", "phone my card", 0.95f) == syn);
    sc_embed_params aa = p;
    aa.align_a = 10.0f; /* about equal weights, not rank-proportional ones */
    CHECK(!near(rsp(&aa, "call my card", "phone my card", 0.95f), syn));
    /* Numbers and negation: their penalties on top of the alignment. */
    float n5 = rs("cancel order 5", "cancel order 5", 0.98f);
    float n6 = rs("cancel order 5", "cancel order 6", 0.98f);
    CHECK(n6 < n5 - p.num_penalty);
    sc_embed_params nonum = p;
    nonum.num_penalty = 0.0f;
    CHECK(near(rsp(&nonum, "cancel order 5", "cancel order 6", 0.98f),
               n6 + p.num_penalty));
    float neg = rs("not cancel my order", "cancel my order", 0.98f);
    CHECK(near(neg, (1 - w) * 0.98f + w - p.neg_penalty));
    CHECK(rs("don't cancel my order", "do not cancel my order", 0.98f) ==
          rs("do not cancel my order", "do not cancel my order", 0.98f));
    /* The question-word penalty (off by default): "how" vs "why". */
    sc_embed_params qw = p;
    qw.qword_penalty = 0.25f;
    CHECK(near(rsp(&qw, "how cancel order", "why cancel order", 0.9f),
               rsp(&p, "how cancel order", "why cancel order", 0.9f) - 0.25f));
    CHECK(near(rsp(&qw, "how cancel order", "how cancel order", 0.9f),
               rsp(&p, "how cancel order", "how cancel order", 0.9f)));
    /* Character trigrams (off by default) match a misspelt unknown word:
     * "orderr" vs "order" share 4 of 6 + 5 trigrams (Dice 8/11). */
    sc_embed_params tg = p;
    tg.trigram = 0.5f;
    float t0 = rsp(&p, "cancel orderr", "cancel order", 0.9f);
    float t1 = rsp(&tg, "cancel orderr", "cancel order", 0.9f);
    CHECK(t1 > t0);
    CHECK(t1 == rsp(&tg, "cancel order", "cancel orderr", 0.9f));
    tg.trigram = 0.8f; /* 8/11 < 0.8: no match */
    CHECK(rsp(&tg, "cancel orderr", "cancel order", 0.9f) == t0);
    /* The cap keeps the result at or below the cosine. */
    sc_embed_params cap = p;
    cap.cap_cosine = true;
    CHECK(rsp(&cap, q, q, 0.9f) == 0.9f);
    CHECK(rsp(&cap, q, "how do i track my order", 0.9f) < 0.9f);
    /* A number with a unit is a number ("3.5kg" is 3 . 5kg: both
     * digit-led): its penalty applies (since model version 5). */
    CHECK(near(rsp(&nonum, "send 3.5kg parcel", "send 7.5kg parcel", 0.98f),
               rs("send 3.5kg parcel", "send 7.5kg parcel", 0.98f) +
                   p.num_penalty));
    CHECK(near(rsp(&nonum, "timeout 1s", "timeout 2s", 0.98f),
               rs("timeout 1s", "timeout 2s", 0.98f) + p.num_penalty));
    /* Past the first SC_EMBED_RESCORE_TOKENS content words (a long shared
     * instruction, then the text it is about): the alignment saw the
     * instruction only, so it must not lift the cosine, and negations and
     * numbers after it still count (since model version 5; they scored
     * 0.5 cosine + 0.5 whatever followed). */
    char head[600] = "";
    for (int i = 0; i < 40; i++) {
        char wd[16];
        snprintf(wd, sizeof(wd), "zq%dx ", i);
        strcat(head, wd);
    }
    char ta[800], tb[800];
    snprintf(ta, sizeof(ta), "%s our new factory opened", head);
    snprintf(tb, sizeof(tb), "%s customer churn fell", head);
    CHECK(rs(ta, tb, 0.87f) <= 0.87f);
    CHECK(rs(ta, ta, 0.9f) <= 0.9f);
    snprintf(ta, sizeof(ta), "%s the merger was approved", head);
    snprintf(tb, sizeof(tb), "%s the merger was not approved", head);
    CHECK(near(rs(ta, tb, 0.99f), rs(ta, ta, 0.99f) - p.neg_penalty));
    snprintf(ta, sizeof(ta), "%s revenue grew 4 percent", head);
    snprintf(tb, sizeof(tb), "%s revenue grew 40 percent", head);
    CHECK(near(rsp(&nonum, ta, tb, 0.99f), rs(ta, tb, 0.99f) + p.num_penalty));
    CHECK(near(rs(ta, ta, 0.99f), rsp(&nonum, ta, ta, 0.99f)));
    CHECK(rs(ta, tb, 0.99f) == rs(tb, ta, 0.99f));
    /* Range, NaN, NULL. */
    CHECK(rs("zyzzyva", "qwerty", -0.99f) >= -1.0f);
    CHECK(rs("a", "b", 1.5f) <= 1.0f);
    CHECK(isnan(rs("a", "b", NAN)));
    CHECK(sc_embed_rescore(E, NULL, 0, NULL, 0, 0.9f) == 0.9f);
    CHECK(sc_embed_rescore(NULL, q, strlen(q), q, strlen(q), 0.8f) == 0.8f);
    float y = sc_embed_rescore(E, NULL, 5, q, strlen(q), 0.8f);
    CHECK(y == 0.8f);
    /* In range, finite and symmetric on garbage too. */
    uint64_t s = 5;
    int ok = 1;
    char a[200], b[200];
    for (int r = 0; r < 500; r++) {
        size_t na = test_rand(&s) % sizeof(a), nb = test_rand(&s) % sizeof(b);
        for (size_t i = 0; i < na; i++) {
            a[i] = (char)test_rand(&s);
        }
        for (size_t i = 0; i < nb; i++) {
            b[i] = (r % 2) ? (char)test_rand(&s) : "cancel 1 my "[i % 12];
        }
        float cs = test_randf(&s) * 2.0f - 1.0f;
        float v = sc_embed_rescore(E, a, na, b, nb, cs);
        float u = sc_embed_rescore(E, b, nb, a, na, cs);
        float t = sc_embed_rescore_p(E, &tg, a, na, b, nb, cs);
        ok &= v >= -1.0f && v <= 1.0f && isfinite(v) && v == u;
        ok &= t >= -1.0f && t <= 1.0f && isfinite(t);
    }
    CHECK(ok);
    /* Symmetric bit for bit on words of the table, whose norms are not
     * powers of two (the two inverse norms were multiplied in the order of
     * the arguments: 1 ulp apart). */
    const char *words[] = {"cancel", "track",  "my",    "order", "card",
                           "lost",   "call",   "phone", "how",   "do",
                           "i",      "please", "the",   "cat"};
    const size_t nw = sizeof(words) / sizeof(words[0]);
    int asym = 0;
    for (int r = 0; r < 3000; r++) {
        a[0] = b[0] = '\0';
        for (int k = 0; k < 1 + (int)(test_rand(&s) % 5); k++) {
            strcat(a, words[test_rand(&s) % nw]);
            strcat(a, " ");
        }
        for (int k = 0; k < 1 + (int)(test_rand(&s) % 5); k++) {
            strcat(b, words[test_rand(&s) % nw]);
            strcat(b, " ");
        }
        float cs = test_randf(&s) * 2.0f - 1.0f;
        asym += rs(a, b, cs) != rs(b, a, cs);
    }
    CHECK_EQ_INT(asym, 0);
    /* Tokens longer than 64 bytes that share their first 64 are two
     * tokens (they were one, cut: two such prompts scored 1). */
    char la[160], lb[160];
    memset(la, 'q', 140);
    la[140] = '\0';
    memcpy(lb, la, sizeof(la));
    lb[120] = 'z';
    float va[SC_EMBED_MAX_DIM], vb[SC_EMBED_MAX_DIM];
    CHECK_EQ_INT(sc_embed_text(E, la, strlen(la), va), SC_OK);
    CHECK_EQ_INT(sc_embed_text(E, lb, strlen(lb), vb), SC_OK);
    CHECK(cosf8(va, vb) < 0.99);
    CHECK(rs(la, lb, (float)cosf8(va, vb)) < 0.99f);
    CHECK(rs(la, la, 1.0f) == 1.0f);
    /* A hyphen chain: its end is found once for all its words, so a 1 MiB
     * chain is tokenised in linear time (it took about 500 s, and the
     * rescore twice that, when each word scanned the rest of the chain). */
    size_t nc = 1u << 20;
    char *chain = malloc(nc + 1);
    CHECK(chain != NULL);
    if (chain != NULL) {
        for (size_t i = 0; i < nc; i++) {
            chain[i] = i % 2 ? '-' : 'a';
        }
        chain[nc] = '\0';
        CHECK_EQ_INT(sc_embed_text(E, chain, nc, va), SC_OK);
        float x = sc_embed_rescore(E, chain, nc, "a cat", 5, 0.5f);
        CHECK(isfinite(x));
        sc_embed_df *df = sc_embed_df_new();
        CHECK(df != NULL);
        CHECK_EQ_INT(sc_embed_df_count(df, E, chain, nc, 1), SC_OK);
        sc_embed_df_free(df);
        free(chain);
    }
    /* A number run that ends in a word byte ("1.1.1x", "1,000,000x") is
     * words and punctuation; each number in it once ran to its end before
     * turning out a word, so 1 MiB of "1." took about 10 min (256 KiB:
     * 50 s a text-only lookup) and 3 passes of it a lookup. Now linear,
     * the tokens unchanged. */
    tokens_are("1.1.1x", "~1 . ~1 . ~1x ");
    tokens_are("1,000,000x 2.5", "~1 , ~000 , ~000x #2.5 ");
    const char *units[] = {"1.", "1,000"};
    for (int u = 0; u < 2; u++) {
        size_t ul = strlen(units[u]);
        char *run = malloc(nc + 1);
        CHECK(run != NULL);
        if (run == NULL) {
            break;
        }
        for (size_t i = 0; i + 1 < nc; i++) {
            run[i] = units[u][i % ul];
        }
        run[nc - 1] = 'x';
        run[nc] = '\0';
        CHECK_EQ_INT(sc_embed_text(E, run, nc, va), SC_OK);
        CHECK(isfinite(sc_embed_rescore(E, run, nc, "1 cat", 5, 0.5f)));
        sc_embed_df *df = sc_embed_df_new();
        CHECK(df != NULL);
        CHECK_EQ_INT(sc_embed_df_count(df, E, run, nc, 1), SC_OK);
        sc_embed_df_free(df);
        free(run);
    }
}

/* ---- document frequencies (sc_embed_df) ------------------------------- */

static float rsd(const sc_embed_df *df, const char *a, const char *b,
                 float cosine)
{
    return sc_embed_rescore_df(E, df, a, strlen(a), b, strlen(b), cosine);
}

static uint32_t dft(const sc_embed_df *df, const char *w)
{
    return sc_embed_df_token(df, w, strlen(w));
}

static void count(sc_embed_df *df, const char *t, int delta)
{
    CHECK_EQ_INT(sc_embed_df_count(df, E, t, strlen(t), delta), SC_OK);
}

/* Twenty texts that all say "my card" (a bank's FAQ's common words). */
static void count_cards(sc_embed_df *df)
{
    for (int i = 0; i < 20; i++) {
        char t[64];
        snprintf(t, sizeof(t), "my card %s", i % 2 ? "please" : "account");
        count(df, t, 1);
    }
}

/* The words pool[pick[0..per)], each followed by a space, into text. */
static void pool_text(char *text, size_t cap, char (*pool)[8], const int *pick,
                      int per)
{
    size_t n = 0;
    text[0] = '\0';
    for (int k = 0; k < per && n < cap; k++) {
        n += (size_t)snprintf(text + n, cap - n, "%s ", pool[pick[k]]);
    }
}

/* Words a client picked so that, under a fixed slot function (the hash
 * times a constant, its top bits masked: what df_home was), all share one
 * home slot at every table size up to 4096: with the table's secret seed
 * they spread, and no lookup scans a long run. */
static void test_df_flood(void)
{
    sc_embed_df *df = sc_embed_df_new();
    CHECK(df != NULL);
    if (df == NULL) {
        return;
    }
    int found = 0;
    uint64_t want = 0;
    char w[16];
    for (uint32_t i = 0; found < 300 && i < 50000000; i++) {
        uint32_t x = i;
        int n = 0;
        w[n++] = 'q';
        do {
            w[n++] = (char)('a' + x % 26);
            x /= 26;
        } while (x > 0);
        w[n] = '\0';
        uint64_t k = XXH3_64bits(w, (size_t)n) | 1;
        uint64_t home = ((k * 0x9e3779b97f4a7c15ULL) >> 17) & 4095;
        if (found == 0) {
            want = home;
        }
        if (home == want) {
            CHECK_EQ_INT(sc_embed_df_count(df, E, w, (size_t)n, 1), SC_OK);
            found++;
        }
    }
    CHECK_EQ_INT(found, 300);
    size_t run = sc_embed_df_longest_run(df);
    fprintf(stderr,
            "embed: 300 words of one fixed-function slot: longest "
            "run %zu\n",
            run);
    CHECK(run < 40);
    sc_embed_df_free(df);
}

static void test_df(void)
{
    CHECK_EQ_INT(sc_embed_df_count(NULL, E, "x", 1, 1), SC_EINVAL);
    sc_embed_df *df = sc_embed_df_new();
    CHECK(df != NULL);
    if (df == NULL) {
        return;
    }
    CHECK_EQ_INT(sc_embed_df_count(df, NULL, "x", 1, 1), SC_EINVAL);
    CHECK_EQ_INT(sc_embed_df_docs(df), 0);
    /* Content tokens as the rescore reads them: lower case, punctuation
     * and negations left out, a token twice in one text counted once. */
    count(df, "My card, my CARD was lost!", 1);
    count(df, "my card is not blocked", 1);
    CHECK_EQ_INT(sc_embed_df_docs(df), 2);
    CHECK_EQ_INT(dft(df, "card"), 2);
    CHECK_EQ_INT(dft(df, "my"), 2);
    CHECK_EQ_INT(dft(df, "lost"), 1);
    CHECK_EQ_INT(dft(df, "blocked"), 1);
    CHECK_EQ_INT(dft(df, "not"), 0);
    CHECK_EQ_INT(dft(df, ","), 0);
    count(df, "my card was lost", -1);
    CHECK_EQ_INT(sc_embed_df_docs(df), 1);
    CHECK_EQ_INT(dft(df, "card"), 1);
    CHECK_EQ_INT(dft(df, "lost"), 0);
    CHECK_EQ_INT(dft(df, "was"), 0);
    /* Counting out what was never in stops at zero. */
    count(df, "zebra crossing", -1);
    count(df, "zebra crossing", -1);
    CHECK_EQ_INT(dft(df, "zebra"), 0);
    CHECK_EQ_INT(sc_embed_df_docs(df), 0);
    count(df, "my card is not blocked", -1);
    CHECK_EQ_INT(dft(df, "card"), 0);
    CHECK_EQ_INT(dft(df, "blocked"), 0);

    /* Many tokens in and half of them out again: every count as counted
     * by hand (the table grows, and removals shift runs back). */
    enum { POOL = 3000, TEXTS = 2500, PER = 5 };
    size_t empty_bytes = sc_embed_df_bytes(df);
    CHECK(empty_bytes > 0);
    static char pool[POOL][8];
    static int want[POOL];
    static int pick[TEXTS][PER];
    uint64_t st = 99;
    for (int i = 0; i < POOL; i++) {
        for (int k = 0; k < 6; k++) {
            st = st * 6364136223846793005ULL + 1442695040888963407ULL;
            pool[i][k] = (char)('a' + (st >> 33) % 26);
        }
        pool[i][6] = '\0';
    }
    for (int t = 0; t < TEXTS; t++) {
        char text[PER * 8];
        for (int k = 0; k < PER; k++) {
            st = st * 6364136223846793005ULL + 1442695040888963407ULL;
            pick[t][k] = (int)((st >> 33) % (t % 2 ? 200 : POOL));
        }
        pool_text(text, sizeof(text), pool, pick[t], PER);
        count(df, text, 1);
    }
    /* Pool words can collide (equal strings): count by string. */
    for (int t = 0; t < TEXTS; t += 2) {
        char text[PER * 8];
        pool_text(text, sizeof(text), pool, pick[t], PER);
        count(df, text, -1);
    }
    int bad = 0;
    for (int i = 0; i < POOL; i++) {
        want[i] = 0;
        for (int t = 1; t < TEXTS; t += 2) {
            int in = 0;
            for (int k = 0; k < PER && !in; k++) {
                in = strcmp(pool[pick[t][k]], pool[i]) == 0;
            }
            want[i] += in;
        }
        bad += (int)dft(df, pool[i]) != want[i];
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(sc_embed_df_docs(df), TEXTS / 2);
    /* Its memory as the byte caps count it: at least a slot (8-byte key,
     * 4-byte count) per distinct token, and at most eight once removals
     * have shrunk the table. */
    size_t distinct = 0;
    for (int i = 0; i < POOL; i++) {
        int first = 1;
        for (int j = 0; j < i && first; j++) {
            first = strcmp(pool[i], pool[j]) != 0;
        }
        distinct += first && want[i] > 0;
    }
    size_t bytes = sc_embed_df_bytes(df);
    CHECK(bytes >= empty_bytes + distinct * 12);
    CHECK(bytes <= empty_bytes + 8 * distinct * 12 + 64 * 12);
    CHECK_EQ_INT(sc_embed_df_bytes(NULL), 0);
    /* All out: the smallest table, and the counts still right. */
    for (int t = 1; t < TEXTS; t += 2) {
        char text[PER * 8];
        pool_text(text, sizeof(text), pool, pick[t], PER);
        count(df, text, -1);
        if (t == TEXTS / 2 + 1) {
            bad = 0;
            for (int i = 0; i < POOL; i++) {
                int w = 0;
                for (int u = t + 2; u < TEXTS; u += 2) {
                    int in = 0;
                    for (int k = 0; k < PER && !in; k++) {
                        in = strcmp(pool[pick[u][k]], pool[i]) == 0;
                    }
                    w += in;
                }
                bad += (int)dft(df, pool[i]) != w;
            }
            CHECK_EQ_INT(bad, 0);
        }
    }
    CHECK_EQ_INT(sc_embed_df_docs(df), 0);
    CHECK(sc_embed_df_bytes(df) <= empty_bytes + 64 * 12);
    sc_embed_df_free(df);

    /* An empty df weights every word alike: the plain rescore. */
    df = sc_embed_df_new();
    const char *a = "how do i cancel my card", *b = "how do i track my order";
    CHECK(near(rsd(df, a, b, 0.9f), rs(a, b, 0.9f)));
    CHECK(rsd(NULL, a, b, 0.9f) == rs(a, b, 0.9f));
    /* Words every stored text has weigh less, the rare ones more: two
     * texts that share only the common words score lower than without
     * the counts, two that share the rare word higher. */
    count_cards(df);
    count(df, "lost", 1);
    count(df, "stolen", 1);
    float common = rsd(df, "my card lost", "my card stolen", 0.9f);
    CHECK(common < rs("my card lost", "my card stolen", 0.9f));
    float rare = rsd(df, "my card lost", "lost", 0.9f);
    CHECK(rare > rs("my card lost", "lost", 0.9f));
    /* Still symmetric and in range. */
    CHECK(common == rsd(df, "my card stolen", "my card lost", 0.9f));
    CHECK(common >= -1.0f && common <= 1.0f && rare >= -1.0f && rare <= 1.0f);
    /* A df's weights follow its texts however it got there: counted in
     * and out again, or only in, the same scores bit for bit (its idf
     * constants are kept as texts come and go), and a new prior applies
     * at once. */
    sc_embed_df *fresh = sc_embed_df_new();
    CHECK(fresh != NULL);
    if (fresh != NULL) {
        count_cards(fresh);
        count(fresh, "lost", 1);
        count(df, "my card was stolen abroad", 1);
        count(df, "stolen", -1);
        count(df, "my card was stolen abroad", -1);
        count(fresh, "my card was stolen abroad", 1);
        count(fresh, "my card was stolen abroad", -1);
        CHECK_EQ_INT(sc_embed_df_docs(df), 21);
        CHECK_EQ_INT(sc_embed_df_docs(fresh), 21);
        count(df, "lost", -1);
        count(df, "lost", 1);
        count(df, "stolen", 1);
        count(df, "zebra crossing", 1);
        count(df, "zebra crossing", -1); /* the last change a removal */
        count(fresh, "stolen", 1);
        CHECK_EQ_INT(sc_embed_df_docs(df), 22);
        const char *x = "my card lost", *y = "card stolen abroad";
        CHECK(rsd(df, x, y, 0.8f) == rsd(fresh, x, y, 0.8f));
        CHECK(rsd(df, x, y, 0.8f) != rs(x, y, 0.8f));
        sc_embed_df_set_prior(df, 1e9);
        CHECK(rsd(df, x, y, 0.8f) != rsd(fresh, x, y, 0.8f));
        CHECK(near(rsd(df, x, y, 0.8f), rs(x, y, 0.8f)));
        sc_embed_df_set_prior(fresh, 1e9);
        CHECK(rsd(df, x, y, 0.8f) == rsd(fresh, x, y, 0.8f));
        sc_embed_df_free(fresh);
    }
    sc_embed_df_free(df);
    sc_embed_df_free(NULL);
}

/* One query against many candidates: each result the pairwise rescore's,
 * bit for bit, with and without a df, on real words and on garbage; NaN,
 * out-of-range cosines and NULL texts as the pairwise call takes them. */
static void test_rescore_many(void)
{
    enum { N = 9 };
    sc_embed_df *df = sc_embed_df_new();
    CHECK(df != NULL);
    if (df == NULL) {
        return;
    }
    count(df, "my card was lost", 1);
    count(df, "how do i cancel my order", 1);
    count(df, "track my order 5 please", 1);
    const char *words[] = {"cancel", "track", "my",    "order", "card",
                           "lost",   "call",  "phone", "not",   "5",
                           "6",      "how",   "do",    "i",     "zyzzyva",
                           "?",      "don't", "CARD",  "please"};
    const size_t nw = sizeof(words) / sizeof(words[0]);
    uint64_t s = 11;
    int same = 1, rounds = 0;
    char q[256], cbuf[N][256];
    const char *ct[N];
    size_t cl[N];
    float cs[N], out[N];
    for (int r = 0; r < 300; r++) {
        /* Real words mostly; every fifth round raw bytes. */
        size_t ql = 0;
        for (int k = 0, nk = 1 + (int)(test_rand(&s) % 10); k < nk; k++) {
            ql += (size_t)snprintf(q + ql, sizeof(q) - ql, "%s ",
                                   words[test_rand(&s) % nw]);
        }
        for (int i = 0; i < N; i++) {
            size_t l = 0;
            if (r % 5 == 4) {
                l = test_rand(&s) % 200;
                for (size_t b = 0; b < l; b++) {
                    cbuf[i][b] = (char)test_rand(&s);
                }
            } else {
                for (int k = 0, nk = (int)(test_rand(&s) % 12); k < nk; k++) {
                    l += (size_t)snprintf(cbuf[i] + l, sizeof(cbuf[i]) - l,
                                          "%s ", words[test_rand(&s) % nw]);
                }
            }
            ct[i] = cbuf[i];
            cl[i] = l;
            cs[i] = test_randf(&s) * 2.4f - 1.2f;
        }
        cs[r % N] = r % 3 == 0 ? NAN : cs[r % N];
        if (r % 7 == 0) {
            ct[(r + 1) % N] = NULL; /* NULL with a length: the cosine */
        }
        for (int d = 0; d < 2; d++) {
            const sc_embed_df *use = d ? df : NULL;
            sc_embed_rescore_many(E, use, q, ql, N, ct, cl, cs, out);
            for (int i = 0; i < N; i++) {
                float want =
                    sc_embed_rescore_df(E, use, q, ql, ct[i], cl[i], cs[i]);
                same &= isnan(want)
                            ? isnan(out[i])
                            : memcmp(&want, &out[i], sizeof(float)) == 0;
            }
            rounds++;
        }
    }
    CHECK(same);
    CHECK_EQ_INT(rounds, 600);
    /* No embedder, or a NULL query with a length: the cosines, clamped. */
    const char *two[2] = {"cancel my order", "track my order"};
    size_t twol[2] = {15, 14};
    float c2[2] = {1.5f, 0.25f}, o2[2] = {0, 0};
    sc_embed_rescore_many(NULL, NULL, "x", 1, 2, two, twol, c2, o2);
    CHECK(o2[0] == 1.0f && o2[1] == 0.25f);
    sc_embed_rescore_many(E, df, NULL, 3, 2, two, twol, c2, o2);
    CHECK(o2[0] == 1.0f && o2[1] == 0.25f);
    /* n = 0 writes nothing. */
    o2[0] = 7.0f;
    sc_embed_rescore_many(E, df, "x", 1, 0, two, twol, c2, o2);
    CHECK(o2[0] == 7.0f);
    sc_embed_df_free(df);
}

/* A random text of nk tokens into buf: words of the table and not, numbers
 * with and without units, negations, punctuation; many distinct, so that
 * long ones run past SC_EMBED_RESCORE_TOKENS content tokens. */
static size_t sig_text(uint64_t *s, char *buf, size_t cap, int nk)
{
    static const char *words[] = {"cancel", "track", "my",  "order", "card",
                                  "lost",   "not",   "how", "don't", "CARD",
                                  "never",  "?",     ",",   "please"};
    size_t l = 0;
    for (int k = 0; k < nk && l + 32 < cap; k++) {
        unsigned v = (unsigned)(test_rand(s) % 60);
        switch (test_rand(s) % 4) {
        case 0:
            l += (size_t)snprintf(buf + l, cap - l, "%u ", v);
            break;
        case 1:
            l += (size_t)snprintf(buf + l, cap - l, "%ukg ", v);
            break;
        case 2:
            l += (size_t)snprintf(buf + l, cap - l, "w%u ", v);
            break;
        default:
            l += (size_t)snprintf(
                buf + l, cap - l, "%s ",
                words[test_rand(s) % (sizeof(words) / sizeof(words[0]))]);
        }
    }
    return l;
}

/* Signatures: rescoring them gives, bit for bit, what rescoring the texts
 * gives, with and without a df, short texts and long ones (numbers and
 * words past the first 32 content tokens, more distinct numbers than are
 * kept); counting them in a df counts what the texts count; their memory
 * stays bounded however long the text. */
static void test_sigs(void)
{
    enum { N = 8 };
    sc_embed_df *df = sc_embed_df_new(), *df_sig = sc_embed_df_new();
    CHECK(df != NULL && df_sig != NULL);
    if (df == NULL || df_sig == NULL) {
        sc_embed_df_free(df);
        sc_embed_df_free(df_sig);
        return;
    }
    uint64_t s = 29;
    char q[4096], cbuf[N][4096];
    const char *ct[N];
    size_t cl[N];
    float cs[N], want[N], got[N];
    sc_embed_sig *qs = NULL, *sigs[N] = {NULL};
    int same = 1, rounds = 0, cut = 0;
    for (int r = 0; r < 400; r++) {
        int longer = r % 3 == 0 ? 150 : 12;
        size_t ql =
            sig_text(&s, q, sizeof(q), 1 + (int)(test_rand(&s) % longer));
        CHECK_EQ_INT(sc_embed_sig_new(E, q, ql, &qs), SC_OK);
        for (int i = 0; i < N; i++) {
            int nk = (int)(test_rand(&s) % (size_t)(i % 2 ? 150 : 12));
            cl[i] = sig_text(&s, cbuf[i], sizeof(cbuf[i]), nk);
            ct[i] = cbuf[i];
            cs[i] = test_randf(&s) * 1.2f;
            CHECK_EQ_INT(sc_embed_sig_new(E, ct[i], cl[i], &sigs[i]), SC_OK);
            cut +=
                sc_embed_sig_bytes(sigs[i]) > 24 + 16 * SC_EMBED_RESCORE_TOKENS;
            if (r % 4 == 0) {
                /* The df, from the texts and from their signatures. */
                CHECK_EQ_INT(sc_embed_df_count(df, E, ct[i], cl[i], 1), SC_OK);
                CHECK_EQ_INT(sc_embed_df_count_sig(df_sig, sigs[i], 1), SC_OK);
            }
        }
        cs[r % N] = r % 5 == 0 ? NAN : cs[r % N];
        for (int d = 0; d < 2; d++) {
            sc_embed_rescore_many(E, d ? df : NULL, q, ql, N, ct, cl, cs, want);
            sc_embed_rescore_sigs(E, d ? df_sig : NULL, qs, N,
                                  (const sc_embed_sig *const *)sigs, cs, got);
            for (int i = 0; i < N; i++) {
                same &= isnan(want[i])
                            ? isnan(got[i])
                            : memcmp(&want[i], &got[i], sizeof(float)) == 0;
            }
            rounds++;
        }
        sc_embed_sig_free(qs);
        for (int i = 0; i < N; i++) {
            sc_embed_sig_free(sigs[i]);
        }
    }
    CHECK(same);
    CHECK_EQ_INT(rounds, 800);
    CHECK(cut > 0); /* some carried numbers past their first tokens */
    CHECK_EQ_INT(sc_embed_df_docs(df_sig), sc_embed_df_docs(df));
    CHECK(sc_embed_df_bytes(df_sig) == sc_embed_df_bytes(df));
    const char *probe[] = {"cancel", "card", "5", "5kg", "w7", "w59", "how"};
    for (size_t i = 0; i < sizeof(probe) / sizeof(probe[0]); i++) {
        CHECK_EQ_INT(sc_embed_df_token(df_sig, probe[i], strlen(probe[i])),
                     sc_embed_df_token(df, probe[i], strlen(probe[i])));
    }
    /* A copy: the same counts, idfs and bytes, and its own tables. */
    sc_embed_df *cp = sc_embed_df_clone(df_sig);
    CHECK(cp != NULL);
    if (cp != NULL) {
        CHECK_EQ_INT(sc_embed_df_docs(cp), sc_embed_df_docs(df_sig));
        CHECK(sc_embed_df_bytes(cp) == sc_embed_df_bytes(df_sig));
        const char *q1 = "cancel my card 5 w7", *c1 = "track my card 6 w59";
        float a1 = sc_embed_rescore_df(E, df_sig, q1, strlen(q1), c1,
                                       strlen(c1), 0.8f);
        float a2 =
            sc_embed_rescore_df(E, cp, q1, strlen(q1), c1, strlen(c1), 0.8f);
        CHECK(memcmp(&a1, &a2, sizeof(float)) == 0);
        uint32_t before = sc_embed_df_token(df_sig, "card", 4);
        CHECK_EQ_INT(sc_embed_df_count(cp, E, "card card", 9, -1), SC_OK);
        CHECK_EQ_INT(sc_embed_df_token(df_sig, "card", 4), before);
        CHECK_EQ_INT(sc_embed_df_token(cp, "card", 4),
                     before > 0 ? before - 1 : 0);
        sc_embed_df_free(cp);
    }
    CHECK(sc_embed_df_clone(NULL) == NULL);
    sc_embed_df *empty = sc_embed_df_new(), *ecp = sc_embed_df_clone(empty);
    CHECK(ecp != NULL && sc_embed_df_docs(ecp) == 0);
    sc_embed_df_free(ecp);
    sc_embed_df_free(empty);
    /* Counted out by signature as by text. */
    sc_embed_sig *one = NULL;
    CHECK_EQ_INT(sc_embed_sig_new(E, "cancel my card 5", 16, &one), SC_OK);
    uint32_t c0 = sc_embed_df_token(df_sig, "cancel", 6);
    CHECK_EQ_INT(sc_embed_df_count_sig(df_sig, one, 1), SC_OK);
    CHECK_EQ_INT(sc_embed_df_token(df_sig, "cancel", 6), c0 + 1);
    CHECK_EQ_INT(sc_embed_df_count_sig(df_sig, one, -1), SC_OK);
    CHECK_EQ_INT(sc_embed_df_token(df_sig, "cancel", 6), c0);

    /* A long hostile text: its signature stays small, and rescoring it
     * against itself gives what its text gives. */
    size_t big = 1u << 20;
    char *h = malloc(big);
    CHECK(h != NULL);
    if (h != NULL) {
        size_t l = 0;
        for (unsigned k = 0; l + 16 < big; k++) {
            l += (size_t)snprintf(h + l, big - l, "%u w%u-", k, k % 97);
        }
        sc_embed_sig *hs = NULL;
        CHECK_EQ_INT(sc_embed_sig_new(E, h, l, &hs), SC_OK);
        CHECK(sc_embed_sig_bytes(hs) <= 24 + 16 * 2 * SC_EMBED_RESCORE_TOKENS);
        const char *hp = h;
        float c1 = 0.9f, w1, g1;
        const sc_embed_sig *hsc = hs;
        sc_embed_rescore_many(E, NULL, h, l, 1, &hp, &l, &c1, &w1);
        sc_embed_rescore_sigs(E, NULL, hs, 1, &hsc, &c1, &g1);
        CHECK(memcmp(&w1, &g1, sizeof(float)) == 0);
        sc_embed_sig_free(hs);
        free(h);
    }

    /* NULL signatures, or no embedder: the cosine, clamped. */
    float c2[2] = {1.5f, 0.25f}, o2[2] = {0, 0};
    const sc_embed_sig *two[2] = {one, NULL};
    sc_embed_rescore_sigs(E, NULL, NULL, 2, two, c2, o2);
    CHECK(o2[0] == 1.0f && o2[1] == 0.25f);
    sc_embed_rescore_sigs(E, NULL, one, 2, two, c2, o2);
    CHECK(o2[1] == 0.25f);
    sc_embed_rescore_sigs(NULL, NULL, one, 2, two, c2, o2);
    CHECK(o2[0] == 1.0f && o2[1] == 0.25f);
    /* Errors. */
    sc_embed_sig *x = NULL;
    CHECK_EQ_INT(sc_embed_sig_new(NULL, "a", 1, &x), SC_EINVAL);
    CHECK_EQ_INT(sc_embed_sig_new(E, NULL, 1, &x), SC_EINVAL);
    CHECK_EQ_INT(sc_embed_sig_new(E, "a", 1, NULL), SC_EINVAL);
    CHECK(x == NULL);
    CHECK_EQ_INT(sc_embed_sig_new(E, NULL, 0, &x), SC_OK); /* empty text */
    CHECK_EQ_INT(sc_embed_sig_bytes(NULL), 0);
    CHECK_EQ_INT(sc_embed_df_count_sig(NULL, x, 1), SC_EINVAL);
    CHECK_EQ_INT(sc_embed_df_count_sig(df_sig, NULL, 1), SC_EINVAL);
    sc_embed_sig_free(x);
    sc_embed_sig_free(NULL);
    sc_embed_sig_free(one);
    sc_embed_df_free(df);
    sc_embed_df_free(df_sig);
}

/* ---- the sentence vector against its reference --------------------------*/

/* A copy of sc_embed_text_p as it was before OOV vectors were memoised
 * (model version 5): each OOV token's vector made afresh, 100 splitmix
 * steps a word, on the library's tokens and constants. The library must
 * give the same floats, bit for bit, and the same return code. */
static uint64_t ref_splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void ref_add_hashed(float *acc, uint32_t dim, uint64_t h, float w,
                           float norm)
{
    uint64_t s = h;
    float scale = w * norm * 1.7320508f / sqrtf((float)dim) / 2147483648.0f;
    for (uint32_t d = 0; d < dim; d++) {
        int32_t r = (int32_t)(uint32_t)(ref_splitmix(&s) >> 32);
        acc[d] += scale * (float)r;
    }
}

typedef struct ref_ctx {
    const sc_embed *e;
    const sc_embed_params *p;
    sc_embed_consts c;
    const float *vecs;
    uint32_t dim, nwords;
    float acc[SC_EMBED_MAX_DIM];
    size_t used;
} ref_ctx;

static float ref_weight(const ref_ctx *r, float a, long idx)
{
    if (a <= 0) {
        return 1.0f;
    }
    float pw = idx < 0 ? r->c.p_min : r->c.probs[idx];
    return a / (a + pw);
}

static void ref_tok(void *ctx, const sc_embed_tok_info *t)
{
    ref_ctx *r = ctx;
    const sc_embed_params *p = r->p;
    if (t->kind == SC_EMBED_TOK_PUNCT && p->skip_punct) {
        return;
    }
    long idx = t->kind == SC_EMBED_TOK_NUM || t->cut
                   ? -1
                   : sc_embed_lookup(r->e, t->s, t->n);
    long widx = idx;
    if (idx < 0 && p->letter_rank_vec > 0 && p->letter_rank_vec < r->nwords &&
        t->kind == SC_EMBED_TOK_WORD && t->n == 1) {
        widx = (long)p->letter_rank_vec;
    }
    float w = ref_weight(r, p->sif_a, widx);
    if (idx < 0) {
        if (!p->oov_hash || t->kind == SC_EMBED_TOK_PUNCT) {
            return;
        }
        ref_add_hashed(r->acc, r->dim, t->hash, w,
                       p->oov_scale * (p->unit_words ? 1.0f : r->c.mean_norm));
    } else {
        const float *v = r->vecs + (size_t)idx * r->dim;
        if (p->unit_words) {
            w *= r->c.inv_norm[idx];
        }
        for (uint32_t d = 0; d < r->dim; d++) {
            r->acc[d] += w * v[d];
        }
    }
    r->used += t->kind != SC_EMBED_TOK_PUNCT;
}

static sc_err ref_embed(const sc_embed *e, const sc_embed_params *p,
                        const char *text, size_t len, float *out)
{
    static ref_ctx r; /* 4 KiB of acc: off the stack */
    memset(&r, 0, sizeof(r));
    r.e = e;
    r.p = p;
    sc_embed_debug_consts(e, &r.c);
    r.vecs = sc_embed_vectors(e, &r.dim, &r.nwords);
    sc_embed_debug_each_token(e, text, len, ref_tok, &r);
    if (r.used == 0) {
        return SC_EZEROVEC;
    }
    uint32_t dim = r.dim;
    float *acc = r.acc;
    unsigned nc = p->ncomp < r.c.ncomp ? p->ncomp : r.c.ncomp;
    for (unsigned k = 0; k < nc; k++) {
        const float *u = r.c.comp + (size_t)k * dim;
        float dot = 0;
        for (uint32_t d = 0; d < dim; d++) {
            dot += acc[d] * u[d];
        }
        for (uint32_t d = 0; d < dim; d++) {
            acc[d] -= dot * u[d];
        }
    }
    double s = 0;
    for (uint32_t d = 0; d < dim; d++) {
        s += (double)acc[d] * acc[d];
    }
    if (!(s > 1e-30) || !isfinite(s)) {
        return SC_EZEROVEC;
    }
    float inv = (float)(1.0 / sqrt(s));
    for (uint32_t d = 0; d < dim; d++) {
        out[d] = acc[d] * inv;
    }
    return SC_OK;
}

/* Words for random texts: known ones (of the tiny table, or common English
 * for the real one), and unknown ones, a few of them one letter. */
static const char *const known_words[] = {"the",
                                          "cancel",
                                          "my",
                                          "order",
                                          "card",
                                          "how",
                                          "do",
                                          "i",
                                          "not",
                                          "phone",
                                          "call",
                                          "new",
                                          "well-known",
                                          "account",
                                          "café",
                                          "10th",
                                          "state-of-the-art",
                                          "bank",
                                          "money",
                                          "transfer",
                                          "why",
                                          "is"};
static const char *const oov_words[] = {
    "zqx",   "zyzzyva", "qwxv", "a",     "b",    "x",      "ñandú",
    "flurb", "kj",      "zzz",  "blorp", "quux", "wibble", "q"};

/* A random word into w (at most 90 bytes); returns its length. */
static size_t rand_word(uint64_t *s, char *w)
{
    uint64_t r = test_rand(s);
    size_t n;
    switch (r % 8) {
    case 0:
    case 1:
    case 2: {
        const char *k = known_words[(r >> 8) % (sizeof(known_words) /
                                                sizeof(known_words[0]))];
        n = strlen(k);
        memcpy(w, k, n);
        break;
    }
    case 3:
    case 4: {
        const char *k =
            oov_words[(r >> 8) % (sizeof(oov_words) / sizeof(oov_words[0]))];
        n = strlen(k);
        memcpy(w, k, n);
        break;
    }
    case 5: { /* a fresh unknown word, now and then over 64 bytes */
        n = 1 + (r >> 8) % ((r >> 20) % 16 == 0 ? 90 : 9);
        for (size_t i = 0; i < n; i++) {
            w[i] = (char)('a' + test_rand(s) % 26);
        }
        break;
    }
    case 6: { /* a number: thousands marks, decimals, "10th" */
        static const char *const nums[] = {"1,000", "3.14",    "42",
                                           "10th",  "0.5,100", "1.1.1x",
                                           "2,5",   "100k",    "7"};
        const char *k = nums[(r >> 8) % (sizeof(nums) / sizeof(nums[0]))];
        n = strlen(k);
        memcpy(w, k, n);
        break;
    }
    default: { /* bytes: Unicode, punctuation, NULs, invalid UTF-8 */
        static const char *const odd[] = {"\xe2\x80\x99",
                                          "\xe2\x80\x9c",
                                          "\xe2\x80\x94",
                                          "\xc2\xa0",
                                          "\xff\xfe",
                                          "\xc3\xa9t\xc3\xa9",
                                          "don't",
                                          "we're",
                                          "o'neill",
                                          "?",
                                          "!",
                                          ",",
                                          "\"",
                                          "\0",
                                          "\xe6\x97\xa5\xe6\x9c\xac",
                                          "CANCEL",
                                          "Zqx"};
        size_t k = (r >> 8) % (sizeof(odd) / sizeof(odd[0]));
        n = k == 13 ? 1 : strlen(odd[k]);
        memcpy(w, odd[k], n);
        break;
    }
    }
    return n;
}

/* Up to 40 random words, each followed by a separator, into buf[0..cap);
 * returns the length. */
static size_t rand_text(uint64_t *s, char *buf, size_t cap)
{
    size_t words = test_rand(s) % 40, len = 0;
    char w[128];
    for (size_t i = 0; i < words; i++) {
        size_t n = rand_word(s, w);
        if (len + n + 1 > cap) {
            break;
        }
        memcpy(buf + len, w, n);
        len += n;
        static const char seps[] = {' ', ' ', ' ', '-', '-', ',', '.', '\''};
        buf[len++] = seps[test_rand(s) % sizeof(seps)];
    }
    if (len > 0 && test_rand(s) % 2) {
        len--; /* no separator at the end, half the time */
    }
    return len;
}

/* Embeds text with p, by the library and by the reference: the same code,
 * and the same floats, bit for bit. */
static int same_as_ref(const sc_embed *e, const sc_embed_params *p,
                       const char *text, size_t len)
{
    float a[SC_EMBED_MAX_DIM], b[SC_EMBED_MAX_DIM];
    uint32_t dim = sc_embed_dim(e);
    for (uint32_t d = 0; d < dim; d++) {
        a[d] = b[d] = 7.0f;
    }
    sc_err ra = sc_embed_text_p(e, p, text, len, a);
    sc_err rb = ref_embed(e, p, text, len, b);
    return ra == rb && memcmp(a, b, dim * sizeof(float)) == 0;
}

/* big[0..cap): unit again and again, its last byte last when not 0. */
static void fill_big(char *big, size_t cap, const char *unit, char last)
{
    size_t ul = strlen(unit);
    for (size_t i = 0; i < cap; i++) {
        big[i] = unit[i % ul];
    }
    if (last != 0) {
        big[cap - 1] = last;
    }
}

static void test_vs_ref(const sc_embed *e, unsigned texts)
{
    sc_embed_params ps[6];
    for (int i = 0; i < 6; i++) {
        sc_embed_params_default(&ps[i]);
    }
    ps[1].unit_words = true;
    ps[2].letter_rank_vec = 3;
    ps[3].sif_a = 0;
    ps[3].ncomp = 0;
    ps[4].oov_scale = 1.0f;
    ps[4].skip_punct = false;
    ps[5].oov_hash = false;
    uint64_t s = 0x5eed;
    char buf[4096];
    unsigned bad = 0;
    for (unsigned i = 0; i < texts; i++) {
        size_t len = rand_text(&s, buf, sizeof(buf));
        bad += !same_as_ref(e, &ps[i % 6], buf, len);
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(same_as_ref(e, &ps[0], "", 0));
    CHECK(same_as_ref(e, &ps[0], NULL, 0));
    CHECK(same_as_ref(e, &ps[0], "zqx", 3));

    /* Many distinct unknown words, over and over: more than any memo holds,
     * so vectors are made, kept, replaced and made again. */
    size_t cap = 1u << 20;
    char *big = malloc(cap);
    CHECK(big != NULL);
    if (big == NULL) {
        return;
    }
    size_t len = 0;
    while (len + 12 < cap) {
        unsigned k = (unsigned)(test_rand(&s) % 300);
        int n = snprintf(big + len, 12, "zq%u ", k);
        len += (size_t)n;
    }
    CHECK(same_as_ref(e, &ps[0], big, len));
    CHECK(same_as_ref(e, &ps[2], big, len));
    /* The hostile repeats of bench_embed, 1 MiB each. */
    static const char *const units[] = {"a-", "zqx ", "zqx a zqx b ",
                                        "state-of-the-art-", "1."};
    for (size_t k = 0; k < sizeof(units) / sizeof(units[0]); k++) {
        fill_big(big, cap, units[k], k == 4 ? 'x' : 0);
        CHECK(same_as_ref(e, &ps[k % 3], big, cap));
    }
    free(big);
}

int main(int argc, char **argv)
{
    /* --table PATH: the real table too, for the reference comparison. */
    const char *real = NULL;
    if (argc == 3 && strcmp(argv[1], "--table") == 0) {
        real = argv[2];
    } else if (argc != 1) {
        fprintf(stderr, "usage: test_embed [--table PATH]\n");
        return 2;
    }
    sc_test_tmp_path("embed", dir, sizeof(dir), "embed"); /* test_tmp.h */
    mkdir(dir, 0700);
    snprintf(json_path, sizeof(json_path), "%s/tiny.json", dir);
    snprintf(table_path, sizeof(table_path), "%s/tiny.sctab", dir);
    make_vectors();
    write_json(json_path);
    test_build();
    if (E == NULL) {
        return test_summary("embed");
    }
    test_tokens();
    test_vectors();
    test_threads();
    test_corrupt();
    test_rescore();
    test_df();
    test_df_flood();
    test_rescore_many();
    test_sigs();
    test_vs_ref(E, 20000);
    sc_embed_close(E);
    if (real != NULL) {
        sc_embed *R = NULL;
        CHECK_EQ_INT(sc_embed_open(real, &R), SC_OK);
        if (R != NULL) {
            test_vs_ref(R, 5000);
            sc_embed_close(R);
        }
    }
    unlink(json_path);
    unlink(table_path);
    rmdir(dir);
    return test_summary("embed");
}
