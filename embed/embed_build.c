/* embed_build.c - converts a wink-style word-vector JSON file into the
 * embedder's binary table (embed/table.h). A small streaming JSON reader of
 * its own: the 300 MB wink file would take gigabytes as a jansson tree. It
 * also derives, from the vectors and ranks alone, the unigram probabilities
 * and the common components that sentence vectors remove. */
#define _POSIX_C_SOURCE 200809L
#include "embed/embed.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "common/sc_vec.h"
#include "embed/table.h"

#define MAX_DEPTH 64

typedef struct reader {
    FILE *f;
    unsigned char buf[1 << 16];
    size_t pos, len;
    int eof;
    uint64_t offset; /* of buf[pos], for messages */
    char *err;
    size_t errlen;
    int failed;
} reader;

static void fail(reader *r, const char *fmt, ...)
{
    if (r->failed) {
        return;
    }
    r->failed = 1;
    if (r->err != NULL && r->errlen > 0) {
        char msg[200];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        snprintf(r->err, r->errlen, "byte %llu: %s",
                 (unsigned long long)r->offset, msg);
    }
}

static int peek(reader *r)
{
    if (r->pos == r->len) {
        if (r->eof || r->failed) {
            return -1;
        }
        r->len = fread(r->buf, 1, sizeof(r->buf), r->f);
        r->pos = 0;
        if (r->len == 0) {
            r->eof = 1;
            return -1;
        }
    }
    return r->buf[r->pos];
}

static int next(reader *r)
{
    int c = peek(r);
    if (c >= 0) {
        r->pos++;
        r->offset++;
    }
    return c;
}

static int skip_ws(reader *r)
{
    int c;
    while ((c = peek(r)) == ' ' || c == '\t' || c == '\n' || c == '\r') {
        next(r);
    }
    return c;
}

static int expect(reader *r, int want)
{
    if (skip_ws(r) != want) {
        fail(r, "expected '%c'", want);
        return 0;
    }
    next(r);
    return 1;
}

/* A growable byte buffer. */
typedef struct bytes {
    char *p;
    size_t n, cap;
} bytes;

static int bytes_put(bytes *b, const void *src, size_t n)
{
    if (n == 0) {
        return 1; /* b->p may still be NULL: no memcpy to it */
    }
    if (SC_VEC_RESERVE(b->p, b->cap, b->n, n, 256) != SC_OK) {
        return 0;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
    return 1;
}

static void utf8_put(unsigned char *s, size_t *n, uint32_t cp)
{
    if (cp < 0x80) {
        s[(*n)++] = (unsigned char)cp;
    } else if (cp < 0x800) {
        s[(*n)++] = (unsigned char)(0xc0 | cp >> 6);
        s[(*n)++] = (unsigned char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        s[(*n)++] = (unsigned char)(0xe0 | cp >> 12);
        s[(*n)++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        s[(*n)++] = (unsigned char)(0x80 | (cp & 0x3f));
    } else {
        s[(*n)++] = (unsigned char)(0xf0 | cp >> 18);
        s[(*n)++] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        s[(*n)++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        s[(*n)++] = (unsigned char)(0x80 | (cp & 0x3f));
    }
}

static int hex4(reader *r, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int c = next(r);
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) {
            fail(r, "bad \\u escape");
            return 0;
        }
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return 1;
}

/* A JSON string into s[0..cap) (not NUL-terminated); *n its length. Longer
 * strings are an error (words are short). */
static int read_string(reader *r, unsigned char *s, size_t cap, size_t *n)
{
    *n = 0;
    if (!expect(r, '"')) {
        return 0;
    }
    for (;;) {
        int c = next(r);
        if (c < 0) {
            fail(r, "unterminated string");
            return 0;
        }
        if (*n + 4 > cap) {
            fail(r, "string longer than %zu bytes", cap - 4);
            return 0;
        }
        if (c == '"') {
            return 1;
        }
        if (c < 0x20) {
            fail(r, "control character in string");
            return 0;
        }
        if (c != '\\') {
            s[(*n)++] = (unsigned char)c;
            continue;
        }
        c = next(r);
        uint32_t cp;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            s[(*n)++] = (unsigned char)c;
            break;
        case 'b':
            s[(*n)++] = '\b';
            break;
        case 'f':
            s[(*n)++] = '\f';
            break;
        case 'n':
            s[(*n)++] = '\n';
            break;
        case 'r':
            s[(*n)++] = '\r';
            break;
        case 't':
            s[(*n)++] = '\t';
            break;
        case 'u':
            if (!hex4(r, &cp)) {
                return 0;
            }
            if (cp >= 0xd800 && cp < 0xdc00) {
                uint32_t lo;
                if (next(r) != '\\' || next(r) != 'u' || !hex4(r, &lo) ||
                    lo < 0xdc00 || lo >= 0xe000) {
                    fail(r, "bad surrogate pair");
                    return 0;
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                fail(r, "lone low surrogate");
                return 0;
            }
            utf8_put(s, n, cp);
            break;
        default:
            fail(r, "bad escape");
            return 0;
        }
    }
}

static int read_number(reader *r, double *out)
{
    char s[64];
    size_t n = 0;
    skip_ws(r);
    int c;
    while ((c = peek(r)) >= 0 &&
           (strchr("+-.eE", c) != NULL || (c >= '0' && c <= '9'))) {
        if (n + 1 >= sizeof(s)) {
            fail(r, "number too long");
            return 0;
        }
        s[n++] = (char)c;
        next(r);
    }
    s[n] = '\0';
    char *endp;
    errno = 0;
    double v = n ? strtod(s, &endp) : 0;
    if (n == 0 || *endp != '\0' || !isfinite(v)) {
        fail(r, "expected a finite number");
        return 0;
    }
    *out = v;
    return 1;
}

static int skip_value(reader *r, int depth)
{
    if (depth > MAX_DEPTH) {
        fail(r, "nested too deeply");
        return 0;
    }
    int c = skip_ws(r);
    unsigned char tmp[4096];
    size_t n;
    double d;
    if (c == '"') {
        /* Long strings: skip by hand. */
        next(r);
        while ((c = next(r)) != '"') {
            if (c < 0) {
                fail(r, "unterminated string");
                return 0;
            }
            if (c == '\\') {
                next(r);
            }
        }
        (void)tmp;
        (void)n;
        return 1;
    }
    if (c == '{' || c == '[') {
        int close = c == '{' ? '}' : ']';
        next(r);
        if (skip_ws(r) == close) {
            next(r);
            return 1;
        }
        for (;;) {
            if (close == '}') {
                if (!read_string(r, tmp, sizeof(tmp), &n) || !expect(r, ':')) {
                    return 0;
                }
            }
            if (!skip_value(r, depth + 1)) {
                return 0;
            }
            c = skip_ws(r);
            next(r);
            if (c == close) {
                return 1;
            }
            if (c != ',') {
                fail(r, "expected ',' or '%c'", close);
                return 0;
            }
        }
    }
    if (c == 't' || c == 'f' || c == 'n') {
        const char *w = c == 't' ? "true" : c == 'f' ? "false" : "null";
        for (const char *q = w; *q; q++) {
            if (next(r) != *q) {
                fail(r, "bad literal");
                return 0;
            }
        }
        return 1;
    }
    return read_number(r, &d);
}

/* ---- the parsed content -------------------------------------------------*/

typedef struct vocab {
    bytes words;  /* "words": strings back to back */
    bytes woff;   /* uint32 offsets, one per word, plus the end */
    bytes vkeys;  /* "vectors" keys back to back */
    bytes vkoff;  /* uint32 offsets */
    bytes vecs;   /* float[dim] per "vectors" entry */
    uint32_t dim; /* from "dimensions", or the first vector's length */
    int have_dim; /* 0 none yet, 1 from "dimensions", 2 from a vector */
    int have_words;
} vocab;

static int read_word_list(reader *r, vocab *v)
{
    unsigned char s[SC_EMBED_MAX_WORD_LEN + 8];
    size_t n;
    if (!expect(r, '[')) {
        return 0;
    }
    uint32_t off = 0;
    if (!bytes_put(&v->woff, &off, 4)) {
        fail(r, "out of memory");
        return 0;
    }
    if (skip_ws(r) == ']') {
        next(r);
        return 1;
    }
    for (;;) {
        if (!read_string(r, s, sizeof(s), &n)) {
            return 0;
        }
        if (v->woff.n / 4 > SC_EMBED_MAX_WORDS) {
            fail(r, "more than %u words", SC_EMBED_MAX_WORDS);
            return 0;
        }
        off = (uint32_t)(v->words.n + n);
        if (!bytes_put(&v->words, s, n) || !bytes_put(&v->woff, &off, 4)) {
            fail(r, "out of memory");
            return 0;
        }
        int c = skip_ws(r);
        next(r);
        if (c == ']') {
            return 1;
        }
        if (c != ',') {
            fail(r, "expected ',' or ']' in \"words\"");
            return 0;
        }
    }
}

static int read_vector(reader *r, vocab *v, float *tmp)
{
    if (!expect(r, '[')) {
        return 0;
    }
    size_t k = 0;
    if (skip_ws(r) == ']') {
        fail(r, "empty vector");
        return 0;
    }
    for (;;) {
        double d;
        if (!read_number(r, &d)) {
            return 0;
        }
        if (k < SC_EMBED_MAX_DIM + 8) {
            tmp[k] = (float)d;
            if (!isfinite(tmp[k])) {
                fail(r, "vector value out of float range");
                return 0;
            }
        }
        k++;
        int c = skip_ws(r);
        next(r);
        if (c == ']') {
            break;
        }
        if (c != ',') {
            fail(r, "expected ',' or ']' in a vector");
            return 0;
        }
    }
    if (!v->have_dim) {
        if (k > SC_EMBED_MAX_DIM) {
            fail(r, "vector longer than %u", SC_EMBED_MAX_DIM);
            return 0;
        }
        v->dim = (uint32_t)k;
        v->have_dim = 2;
    }
    /* wink appends the norm and the word index after the dim values: its
     * "dimensions" says where they start. Without it they would be read as
     * dimensions, so the vectors must then be of one length. */
    if (v->have_dim == 2 && k != v->dim) {
        fail(r, "vectors of %u and %zu values and no \"dimensions\"", v->dim,
             k);
        return 0;
    }
    if (k < v->dim) {
        fail(r, "vector shorter than %u", v->dim);
        return 0;
    }
    if (!bytes_put(&v->vecs, tmp, v->dim * sizeof(float))) {
        fail(r, "out of memory");
        return 0;
    }
    return 1;
}

static int read_vectors(reader *r, vocab *v)
{
    unsigned char s[SC_EMBED_MAX_WORD_LEN + 8];
    size_t n;
    float *tmp = malloc((SC_EMBED_MAX_DIM + 8) * sizeof(float));
    if (tmp == NULL) {
        fail(r, "out of memory");
        return 0;
    }
    int ok = 0;
    uint32_t off = 0;
    if (!expect(r, '{') || !bytes_put(&v->vkoff, &off, 4)) {
        goto out;
    }
    if (skip_ws(r) == '}') {
        next(r);
        ok = 1;
        goto out;
    }
    for (;;) {
        if (!read_string(r, s, sizeof(s), &n) || !expect(r, ':')) {
            goto out;
        }
        if (v->vkoff.n / 4 > SC_EMBED_MAX_WORDS) {
            fail(r, "more than %u vectors", SC_EMBED_MAX_WORDS);
            goto out;
        }
        if (!read_vector(r, v, tmp)) {
            goto out;
        }
        off = (uint32_t)(v->vkeys.n + n);
        if (!bytes_put(&v->vkeys, s, n) || !bytes_put(&v->vkoff, &off, 4)) {
            fail(r, "out of memory");
            goto out;
        }
        int c = skip_ws(r);
        next(r);
        if (c == '}') {
            ok = 1;
            goto out;
        }
        if (c != ',') {
            fail(r, "expected ',' or '}' in \"vectors\"");
            goto out;
        }
    }
out:
    free(tmp);
    return ok;
}

static int parse(reader *r, vocab *v)
{
    unsigned char key[256];
    size_t n;
    int have_vectors = 0;
    if (!expect(r, '{')) {
        return 0;
    }
    if (skip_ws(r) == '}') {
        fail(r, "empty object");
        return 0;
    }
    for (;;) {
        if (!read_string(r, key, sizeof(key), &n) || !expect(r, ':')) {
            return 0;
        }
        if (n == 10 && memcmp(key, "dimensions", 10) == 0) {
            double d;
            if (!read_number(r, &d)) {
                return 0;
            }
            if (d < 1 || d > SC_EMBED_MAX_DIM || d != floor(d) ||
                have_vectors) {
                fail(r, "bad \"dimensions\"");
                return 0;
            }
            v->dim = (uint32_t)d;
            v->have_dim = 1;
        } else if (n == 5 && memcmp(key, "words", 5) == 0 && !v->have_words) {
            if (!read_word_list(r, v)) {
                return 0;
            }
            v->have_words = 1;
        } else if (n == 7 && memcmp(key, "vectors", 7) == 0 && !have_vectors) {
            if (!read_vectors(r, v)) {
                return 0;
            }
            have_vectors = 1;
        } else if (!skip_value(r, 1)) {
            return 0;
        }
        int c = skip_ws(r);
        next(r);
        if (c == '}') {
            break;
        }
        if (c != ',') {
            fail(r, "expected ',' or '}'");
            return 0;
        }
    }
    if (skip_ws(r) != -1) {
        fail(r, "trailing bytes after the object");
        return 0;
    }
    if (!have_vectors || v->vkoff.n / 4 < 2) {
        fail(r, "no \"vectors\"");
        return 0;
    }
    return 1;
}

/* ---- building the table -------------------------------------------------*/

static void vocab_free(vocab *v)
{
    free(v->words.p);
    free(v->woff.p);
    free(v->vkeys.p);
    free(v->vkoff.p);
    free(v->vecs.p);
}

/* Open-addressing set of (hash, index) over strings, for building. */
static uint32_t probe(const uint64_t *b, uint32_t mask, uint64_t h,
                      const char *w, size_t n, const char *strs,
                      const uint32_t *so, int *found)
{
    uint32_t i = (uint32_t)h & mask;
    for (;;) {
        if (b[i] == 0) {
            *found = 0;
            return i;
        }
        if ((b[i] >> 32) == (h >> 32)) {
            uint32_t idx = (uint32_t)(b[i] & 0xffffffffu) - 1;
            /* n == 0: strs may be NULL (only empty words were kept). */
            if (so[idx + 1] - so[idx] == n &&
                (n == 0 || memcmp(strs + so[idx], w, n) == 0)) {
                *found = 1;
                return i;
            }
        }
        i = (i + 1) & mask;
    }
}

/* Top ncomp eigenvectors of the symmetric dim x dim matrix m (power
 * iteration with deflation; deterministic start); m is deflated. */
void sc_embed_top_eigen(double *m, uint32_t dim, uint32_t ncomp, float *out)
{
    double *x = malloc(dim * sizeof(double)), *y = malloc(dim * sizeof(double));
    if (x == NULL || y == NULL) {
        free(x);
        free(y);
        return;
    }
    for (uint32_t k = 0; k < ncomp; k++) {
        for (uint32_t d = 0; d < dim; d++) {
            x[d] = 1.0 + 0.01 * d;
        }
        double lambda = 0;
        for (int it = 0; it < 500; it++) {
            double s = 0;
            for (uint32_t i = 0; i < dim; i++) {
                double a = 0;
                for (uint32_t j = 0; j < dim; j++) {
                    a += m[(size_t)i * dim + j] * x[j];
                }
                y[i] = a;
                s += a * a;
            }
            s = sqrt(s);
            if (!(s > 0)) {
                break;
            }
            lambda = s;
            for (uint32_t d = 0; d < dim; d++) {
                x[d] = y[d] / s;
            }
        }
        /* Sign: make the largest entry positive, for reproducibility. */
        uint32_t big = 0;
        for (uint32_t d = 1; d < dim; d++) {
            if (fabs(x[d]) > fabs(x[big])) {
                big = d;
            }
        }
        double sg = x[big] < 0 ? -1.0 : 1.0;
        for (uint32_t d = 0; d < dim; d++) {
            out[(size_t)k * dim + d] = (float)(sg * x[d]);
        }
        for (uint32_t i = 0; i < dim; i++) {
            for (uint32_t j = 0; j < dim; j++) {
                m[(size_t)i * dim + j] -= lambda * x[i] * x[j];
            }
        }
    }
    free(x);
    free(y);
}

static void normalise_comp(float *c, uint32_t dim)
{
    double s = 0;
    for (uint32_t d = 0; d < dim; d++) {
        s += (double)c[d] * c[d];
    }
    s = sqrt(s);
    for (uint32_t d = 0; d < dim; d++) {
        c[d] = s > 0 ? (float)(c[d] / s) : (d == 0 ? 1.0f : 0.0f);
    }
}

static sc_err write_table(const vocab *v, const char *source,
                          const char *out_path, char *err, size_t errlen)
{
    sc_err rc = SC_ENOMEM;
    const char *strs;
    const uint32_t *so;
    uint32_t nw;
    uint32_t nv = (uint32_t)(v->vkoff.n / 4 - 1);
    const uint32_t *vko = (const uint32_t *)v->vkoff.p;
    uint32_t dim = v->dim;
    const float *vv = (const float *)v->vecs.p;
    uint32_t *order = NULL; /* rank -> vectors entry */
    uint64_t *vb = NULL;    /* set over the vectors' keys */
    uint64_t *buckets = NULL;
    uint32_t *stroff = NULL;
    char *strings = NULL;
    float *probs = NULL, *comp = NULL;
    double *m = NULL;
    FILE *f = NULL;
    char tmp[4096];
    tmp[0] = '\0';

    uint32_t vnb = 1;
    while (vnb / 2 < nv) {
        vnb *= 2;
    }
    vb = calloc(vnb, sizeof(uint64_t));
    order = malloc((size_t)nv * sizeof(uint32_t));
    if (vb == NULL || order == NULL) {
        goto out;
    }
    /* Index the vectors by key; duplicate keys keep their first vector. */
    for (uint32_t i = 0; i < nv; i++) {
        const char *w = v->vkeys.p + vko[i];
        size_t n = vko[i + 1] - vko[i];
        uint64_t h = XXH3_64bits(w, n);
        int found;
        uint32_t slot = probe(vb, vnb - 1, h, w, n, v->vkeys.p, vko, &found);
        if (!found) {
            vb[slot] = (h >> 32) << 32 | (uint64_t)(i + 1);
        }
    }
    /* Rank order: "words" first (the frequency order), then any vector
     * "words" did not list, in file order. Words without a vector and
     * repeated words are skipped. */
    uint32_t n = 0;
    uint8_t *taken = calloc(nv, 1);
    if (taken == NULL) {
        goto out;
    }
    if (v->have_words) {
        const uint32_t *wo = (const uint32_t *)v->woff.p;
        uint32_t nl = (uint32_t)(v->woff.n / 4 - 1);
        for (uint32_t i = 0; i < nl; i++) {
            const char *w = v->words.p + wo[i];
            size_t len = wo[i + 1] - wo[i];
            int found;
            if (len == 0 || len > SC_EMBED_MAX_WORD_LEN) {
                continue;
            }
            uint32_t slot = probe(vb, vnb - 1, XXH3_64bits(w, len), w, len,
                                  v->vkeys.p, vko, &found);
            if (found) {
                uint32_t e = (uint32_t)(vb[slot] & 0xffffffffu) - 1;
                if (!taken[e]) {
                    taken[e] = 1;
                    order[n++] = e;
                }
            }
        }
    }
    for (uint32_t i = 0; i < nv; i++) {
        const char *w = v->vkeys.p + vko[i];
        size_t len = vko[i + 1] - vko[i];
        int found;
        uint32_t slot = probe(vb, vnb - 1, XXH3_64bits(w, len), w, len,
                              v->vkeys.p, vko, &found);
        uint32_t e = (uint32_t)(vb[slot] & 0xffffffffu) - 1;
        if (len > 0 && len <= SC_EMBED_MAX_WORD_LEN && e == i && !taken[i]) {
            taken[i] = 1;
            order[n++] = i;
        }
    }
    free(taken);
    nw = n;
    if (nw == 0) {
        snprintf(err, errlen, "no usable word vectors");
        rc = SC_EBADFILE;
        goto out;
    }

    uint32_t nb = 1;
    while (nb / 2 < nw) {
        nb *= 2;
    }
    uint64_t strings_size = 0;
    for (uint32_t i = 0; i < nw; i++) {
        strings_size += vko[order[i] + 1] - vko[order[i]];
    }
    buckets = calloc(nb, sizeof(uint64_t));
    stroff = malloc(((size_t)nw + 1) * sizeof(uint32_t));
    strings = malloc(strings_size ? strings_size : 1);
    probs = malloc((size_t)nw * sizeof(float));
    uint32_t ncomp = SC_EMBED_MAX_COMP < dim ? SC_EMBED_MAX_COMP : dim;
    comp = calloc((size_t)ncomp * dim, sizeof(float));
    m = calloc((size_t)dim * dim, sizeof(double));
    if (!buckets || !stroff || !strings || !probs || !comp || !m) {
        goto out;
    }
    so = stroff;
    strs = strings;
    stroff[0] = 0;
    for (uint32_t i = 0; i < nw; i++) {
        const char *w = v->vkeys.p + vko[order[i]];
        size_t len = vko[order[i] + 1] - vko[order[i]];
        memcpy(strings + stroff[i], w, len);
        stroff[i + 1] = stroff[i] + (uint32_t)len;
        uint64_t h = XXH3_64bits(w, len);
        int found;
        uint32_t slot = probe(buckets, nb - 1, h, w, len, strs, so, &found);
        buckets[slot] = (h >> 32) << 32 | (uint64_t)(i + 1);
    }
    /* Zipf's law from the rank: p(r) = 1 / ((r + 1) H), H the harmonic
     * number of the vocabulary size, so the probabilities sum to one. */
    double harm = 0;
    for (uint32_t i = 0; i < nw; i++) {
        harm += 1.0 / (i + 1.0);
    }
    for (uint32_t i = 0; i < nw; i++) {
        probs[i] = (float)(1.0 / ((i + 1.0) * harm));
    }
    /* Common components: top eigenvectors of the second moment of the
     * SIF-weighted (a = 1e-3) sentence vector of a random bag of L = 10
     * words drawn by frequency: L sum p (w v)(w v)^T + L(L-1) mu mu^T, with
     * mu = sum p w v. Only the vectors and ranks go in. */
    {
        const double a = 1e-3, L = 10;
        double *mu = calloc(dim, sizeof(double));
        if (mu == NULL) {
            goto out;
        }
        for (uint32_t i = 0; i < nw; i++) {
            const float *x = vv + (size_t)order[i] * dim;
            double pw = probs[i], w = a / (a + pw);
            for (uint32_t d = 0; d < dim; d++) {
                mu[d] += pw * w * x[d];
            }
            for (uint32_t d = 0; d < dim; d++) {
                double xd = pw * w * w * x[d];
                for (uint32_t e = 0; e <= d; e++) {
                    m[(size_t)d * dim + e] += L * xd * x[e];
                }
            }
        }
        for (uint32_t d = 0; d < dim; d++) {
            for (uint32_t e = 0; e <= d; e++) {
                m[(size_t)d * dim + e] += L * (L - 1) * mu[d] * mu[e];
                m[(size_t)e * dim + d] = m[(size_t)d * dim + e];
            }
        }
        free(mu);
        sc_embed_top_eigen(m, dim, ncomp, comp);
        for (uint32_t k = 0; k < ncomp; k++) {
            normalise_comp(comp + (size_t)k * dim, dim);
        }
    }

    sc_embed_header h;
    memset(&h, 0, sizeof(h));
    memcpy(h.magic, SC_EMBED_MAGIC, 8);
    h.version = SC_EMBED_VERSION;
    h.endian = SC_EMBED_ENDIAN;
    h.header_size = sizeof(h);
    h.dim = dim;
    h.nwords = nw;
    h.nbuckets = nb;
    h.vec_type = SC_EMBED_VEC_F32;
    h.ncomp = ncomp;
    uint64_t off = SC_EMBED_ALIGN(sizeof(h));
    h.buckets_off = off;
    off = SC_EMBED_ALIGN(off + (uint64_t)nb * 8);
    h.stroff_off = off;
    off = SC_EMBED_ALIGN(off + ((uint64_t)nw + 1) * 4);
    h.strings_off = off;
    h.strings_size = strings_size;
    off = SC_EMBED_ALIGN(off + strings_size);
    h.vectors_off = off;
    off = SC_EMBED_ALIGN(off + (uint64_t)nw * dim * 4);
    h.probs_off = off;
    off = SC_EMBED_ALIGN(off + (uint64_t)nw * 4);
    h.comp_off = off;
    off = SC_EMBED_ALIGN(off + (uint64_t)ncomp * dim * 4);
    h.file_size = off;
    snprintf(h.source, sizeof(h.source), "%s", source ? source : "");

    /* The whole file in memory once, to checksum and write it. */
    unsigned char *img = calloc(1, off);
    if (img == NULL) {
        goto out;
    }
    memcpy(img + h.buckets_off, buckets, (size_t)nb * 8);
    memcpy(img + h.stroff_off, stroff, ((size_t)nw + 1) * 4);
    memcpy(img + h.strings_off, strings, strings_size);
    for (uint32_t i = 0; i < nw; i++) {
        memcpy(img + h.vectors_off + (uint64_t)i * dim * 4,
               vv + (size_t)order[i] * dim, (size_t)dim * 4);
    }
    memcpy(img + h.probs_off, probs, (size_t)nw * 4);
    memcpy(img + h.comp_off, comp, (size_t)ncomp * dim * 4);
    memcpy(img, &h, sizeof(h));
    h.checksum = XXH3_64bits(img, off);
    memcpy(img, &h, sizeof(h));

    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", out_path, (long)getpid());
    f = fopen(tmp, "wb");
    if (f == NULL) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        rc = SC_EIO;
        free(img);
        tmp[0] = '\0';
        goto out;
    }
    int ok = fwrite(img, 1, off, f) == off;
    free(img);
    ok = fflush(f) == 0 && ok;
    ok = fsync(fileno(f)) == 0 && ok;
    ok = fclose(f) == 0 && ok;
    f = NULL;
    if (!ok || rename(tmp, out_path) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", out_path, strerror(errno));
        rc = SC_EIO;
        goto out;
    }
    tmp[0] = '\0';
    rc = SC_OK;
out:
    if (rc == SC_ENOMEM) {
        snprintf(err, errlen, "out of memory");
    }
    if (tmp[0] != '\0') {
        unlink(tmp);
    }
    free(vb);
    free(order);
    free(buckets);
    free(stroff);
    free(strings);
    free(probs);
    free(comp);
    free(m);
    return rc;
}

sc_err sc_embed_build(const char *json_path, const char *out_path,
                      const char *source, char *err, size_t errlen)
{
    char dummy[1];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    if (json_path == NULL || out_path == NULL) {
        snprintf(err, errlen, "no input or output path");
        return SC_EINVAL;
    }
    reader *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(err, errlen, "out of memory");
        return SC_ENOMEM;
    }
    r->err = err;
    r->errlen = errlen;
    r->f = fopen(json_path, "rb");
    if (r->f == NULL) {
        snprintf(err, errlen, "cannot open %s: %s", json_path, strerror(errno));
        free(r);
        return SC_EIO;
    }
    vocab v;
    memset(&v, 0, sizeof(v));
    int ok = parse(r, &v);
    int rderr = ferror(r->f);
    fclose(r->f);
    sc_err rc;
    if (rderr) {
        snprintf(err, errlen, "cannot read %s", json_path);
        rc = SC_EIO;
    } else if (!ok) {
        rc = strstr(err, "more than") || strstr(err, "longer than")
                 ? SC_ERANGE
                 : SC_EBADFILE;
        if (strstr(err, "out of memory")) {
            rc = SC_ENOMEM;
        }
    } else {
        rc = write_table(&v, source, out_path, err, errlen);
    }
    vocab_free(&v);
    free(r);
    return rc;
}
