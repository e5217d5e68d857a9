/* embed.c - maps and validates the word table, tokenises prompts, builds
 * sentence vectors (SIF-weighted average minus common components) and
 * scores the lexical differences between two prompts (sc_embed_rescore).
 * Everything after sc_embed_open is read-only, hence thread-safe. */
#define _POSIX_C_SOURCE 200809L
#include "embed/embed.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "common/sc_seed.h"
#include "embed/embed_internal.h"
#include "embed/table.h"
#include "index/simd/simd.h"

/* Bytes of one token kept; a longer one keeps a hash of the rest (tok.over),
 * so two long tokens that share their first 64 bytes stay apart. */
#define TOK_MAX 64u
#define NO_WORD UINT32_MAX

struct sc_embed {
    void *map;
    size_t map_len;
    uint32_t dim, nwords, mask, ncomp;
    const uint64_t *buckets;
    const uint32_t *stroff;
    const char *strings;
    const float *vecs;
    const float *probs;
    const float *comp;
    float *inv_norm; /* owned: 1 / |v_i| (0 for a zero vector) */
    float mean_norm; /* mean |v_i| over the vocabulary */
    float p_min;     /* probability given to OOV words */
    /* The word-vector dot product of the rescore: the SIMD tier's
     * (index/simd), picked once as the flat index picks it. Symmetric in
     * its arguments bit for bit, so the rescore stays symmetric. */
    float (*dot)(const float *a, const float *b, size_t d);
    char model[96];
};

/* ---- opening and validating ---------------------------------------------*/

static int range_ok(uint64_t off, uint64_t size, uint64_t file_size)
{
    return off % 8 == 0 && off <= file_size && size <= file_size - off;
}

static int mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a != 0 && b > UINT64_MAX / a) {
        return 0;
    }
    *out = a * b;
    return 1;
}

static sc_err validate(const unsigned char *base, size_t len,
                       sc_embed_header *h)
{
    if (len < sizeof(*h)) {
        return SC_EBADFILE;
    }
    memcpy(h, base, sizeof(*h));
    if (memcmp(h->magic, SC_EMBED_MAGIC, 8) != 0) {
        return SC_EBADFILE;
    }
    if (h->version != SC_EMBED_VERSION) {
        return SC_EBADVERSION;
    }
    if (h->endian != SC_EMBED_ENDIAN || h->header_size != sizeof(*h) ||
        h->file_size != len) {
        return SC_EBADFILE;
    }
    /* The checksum first: past it, a bad field means a buggy builder. */
    sc_embed_header z = *h;
    z.checksum = 0;
    XXH3_state_t *st = XXH3_createState();
    if (st == NULL) {
        return SC_ENOMEM;
    }
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, &z, sizeof(z));
    XXH3_64bits_update(st, base + sizeof(z), len - sizeof(z));
    uint64_t sum = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    if (sum != h->checksum) {
        return SC_ECHECKSUM;
    }
    if (h->dim == 0 || h->dim > SC_EMBED_MAX_DIM || h->nwords == 0 ||
        h->nwords > SC_EMBED_MAX_WORDS || h->vec_type != SC_EMBED_VEC_F32 ||
        h->ncomp > SC_EMBED_MAX_COMP || h->nbuckets == 0 ||
        (h->nbuckets & (h->nbuckets - 1)) != 0 || h->nbuckets / 2 < h->nwords ||
        h->source[63] != '\0') {
        return SC_EBADFILE;
    }
    uint64_t n = h->nwords, fs = h->file_size, vbytes, cbytes;
    if (!mul_ok(n * h->dim, 4, &vbytes) ||
        !mul_ok(h->ncomp, h->dim * 4ull, &cbytes)) {
        return SC_EBADFILE;
    }
    if (h->buckets_off < sizeof(*h) ||
        !range_ok(h->buckets_off, (uint64_t)h->nbuckets * 8, fs) ||
        !range_ok(h->stroff_off, (n + 1) * 4, fs) ||
        !range_ok(h->strings_off, h->strings_size, fs) ||
        !range_ok(h->vectors_off, vbytes, fs) ||
        !range_ok(h->probs_off, n * 4, fs) ||
        !range_ok(h->comp_off, cbytes, fs)) {
        return SC_EBADFILE;
    }
    /* Sections in order and disjoint: each ends before the next starts. */
    uint64_t ends[6][2] = {
        {h->buckets_off, (uint64_t)h->nbuckets * 8},
        {h->stroff_off, (n + 1) * 4},
        {h->strings_off, h->strings_size},
        {h->vectors_off, vbytes},
        {h->probs_off, n * 4},
        {h->comp_off, cbytes},
    };
    for (int i = 1; i < 6; i++) {
        if (ends[i][0] < ends[i - 1][0] + ends[i - 1][1]) {
            return SC_EBADFILE;
        }
    }
    const uint32_t *so = (const uint32_t *)(base + h->stroff_off);
    if (so[0] != 0 || so[n] != h->strings_size) {
        return SC_EBADFILE;
    }
    for (uint64_t i = 0; i < n; i++) {
        if (so[i + 1] <= so[i] || so[i + 1] - so[i] > SC_EMBED_MAX_WORD_LEN) {
            return SC_EBADFILE;
        }
    }
    /* Every bucket names a word, and at least one is empty, so a probe for
     * a missing word always stops. */
    const uint64_t *b = (const uint64_t *)(base + h->buckets_off);
    uint64_t used = 0;
    for (uint64_t i = 0; i < h->nbuckets; i++) {
        if (b[i] != 0) {
            uint64_t idx = b[i] & 0xffffffffu;
            if (idx == 0 || idx > n) {
                return SC_EBADFILE;
            }
            used++;
        }
    }
    if (used != n) {
        return SC_EBADFILE;
    }
    const float *v = (const float *)(base + h->vectors_off);
    for (uint64_t i = 0; i < n * h->dim; i++) {
        if (!isfinite(v[i])) {
            return SC_EBADFILE;
        }
    }
    const float *p = (const float *)(base + h->probs_off);
    for (uint64_t i = 0; i < n; i++) {
        if (!(p[i] > 0.0f && p[i] <= 1.0f)) {
            return SC_EBADFILE;
        }
    }
    const float *c = (const float *)(base + h->comp_off);
    for (uint64_t k = 0; k < h->ncomp; k++) {
        double s = 0;
        for (uint32_t d = 0; d < h->dim; d++) {
            float x = c[k * h->dim + d];
            if (!isfinite(x)) {
                return SC_EBADFILE;
            }
            s += (double)x * x;
        }
        if (fabs(s - 1.0) > 1e-3) {
            return SC_EBADFILE;
        }
    }
    return SC_OK;
}

sc_err sc_embed_open(const char *path, sc_embed **out)
{
    if (path == NULL || out == NULL) {
        return SC_EINVAL;
    }
    sc_err err;
    /* Not blocking: a FIFO (or the like) is refused below, not waited on. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return SC_EIO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        err = SC_EIO;
        goto fail_fd;
    }
    if (sb.st_size < (off_t)sizeof(sc_embed_header)) {
        err = SC_EBADFILE;
        goto fail_fd;
    }
    if ((uint64_t)sb.st_size > SIZE_MAX / 2) {
        err = SC_EBADFILE;
        goto fail_fd;
    }
    size_t len = (size_t)sb.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        err = SC_EIO;
        goto fail_fd;
    }
    sc_embed_header h;
    err = validate(map, len, &h);
    if (err != SC_OK) {
        goto fail_map;
    }
    sc_embed *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        err = SC_ENOMEM;
        goto fail_map;
    }
    e->inv_norm = malloc((size_t)h.nwords * sizeof(float));
    if (e->inv_norm == NULL) {
        err = SC_ENOMEM;
        goto fail_e;
    }
    const unsigned char *base = map;
    e->map = map;
    e->map_len = len;
    e->dim = h.dim;
    e->nwords = h.nwords;
    e->mask = h.nbuckets - 1;
    e->ncomp = h.ncomp;
    e->buckets = (const uint64_t *)(base + h.buckets_off);
    e->stroff = (const uint32_t *)(base + h.stroff_off);
    e->strings = (const char *)(base + h.strings_off);
    e->vecs = (const float *)(base + h.vectors_off);
    e->probs = (const float *)(base + h.probs_off);
    e->comp = (const float *)(base + h.comp_off);
    double total = 0;
    float p_min = 1.0f;
    for (uint32_t i = 0; i < h.nwords; i++) {
        const float *v = e->vecs + (size_t)i * h.dim;
        double s = 0;
        for (uint32_t d = 0; d < h.dim; d++) {
            s += (double)v[d] * v[d];
        }
        double nrm = sqrt(s);
        total += nrm;
        e->inv_norm[i] = nrm > 0 ? (float)(1.0 / nrm) : 0.0f;
        if (e->probs[i] < p_min) {
            p_min = e->probs[i];
        }
    }
    e->mean_norm = (float)(total / h.nwords);
    if (!(e->mean_norm > 0)) {
        e->mean_norm = 1.0f;
    }
    e->p_min = p_min;
    e->dot = sc_simd_active()->dot_f32;
    snprintf(e->model, sizeof(e->model), "%s@%s.%08x", SC_EMBED_METHOD_NAME,
             SC_EMBED_METHOD_VERSION, (unsigned)(h.checksum & 0xffffffffu));
    close(fd);
    *out = e;
    return SC_OK;

fail_e:
    free(e);
fail_map:
    munmap(map, len);
fail_fd:
    close(fd);
    return err;
}

void sc_embed_close(sc_embed *e)
{
    if (e == NULL) {
        return;
    }
    munmap(e->map, e->map_len);
    free(e->inv_norm);
    free(e);
}

uint32_t sc_embed_dim(const sc_embed *e)
{
    return e != NULL ? e->dim : 0;
}

uint32_t sc_embed_words(const sc_embed *e)
{
    return e != NULL ? e->nwords : 0;
}

const char *sc_embed_model(const sc_embed *e)
{
    return e != NULL ? e->model : "";
}

const char *sc_embed_model_prefix(void)
{
    return SC_EMBED_METHOD_NAME "@";
}

bool sc_embed_model_superseded(const sc_embed *e, const char *model)
{
    const char *prefix = sc_embed_model_prefix();
    return e != NULL && model != NULL &&
           strncmp(model, prefix, strlen(prefix)) == 0 &&
           strcmp(model, e->model) != 0;
}

static uint32_t lookup(const sc_embed *e, const char *w, size_t n, uint64_t h)
{
    uint32_t i = (uint32_t)h & e->mask;
    /* validate() guarantees an empty bucket, so this stops. */
    for (;;) {
        uint64_t b = e->buckets[i];
        if (b == 0) {
            return NO_WORD;
        }
        if ((b >> 32) == (h >> 32)) {
            uint32_t idx = (uint32_t)(b & 0xffffffffu) - 1;
            uint32_t off = e->stroff[idx], end = e->stroff[idx + 1];
            if (end - off == n && memcmp(e->strings + off, w, n) == 0) {
                return idx;
            }
        }
        i = (i + 1) & e->mask;
    }
}

const float *sc_embed_vectors(const sc_embed *e, uint32_t *dim,
                              uint32_t *nwords)
{
    *dim = e->dim;
    *nwords = e->nwords;
    return e->vecs;
}

long sc_embed_lookup(const sc_embed *e, const char *word, size_t len)
{
    if (e == NULL || (word == NULL && len > 0)) {
        return -1;
    }
    uint32_t i = lookup(e, word, len, XXH3_64bits(word, len));
    return i == NO_WORD ? -1 : (long)i;
}

/* ---- tokenising ---------------------------------------------------------*/

enum tok_kind { TK_WORD, TK_NUM, TK_PUNCT };

typedef struct tok {
    char s[TOK_MAX];
    size_t n;
    uint64_t over; /* FNV-1a of the bytes past TOK_MAX; 0 = none */
    enum tok_kind kind;
} tok;

/* A token's hash: of its bytes, all of them (since model version 4). */
static uint64_t tok_hash(const tok *t)
{
    return t->over == 0 ? XXH3_64bits(t->s, t->n)
                        : XXH3_64bits_withSeed(t->s, t->n, t->over);
}

typedef struct tok_iter {
    const sc_embed *e;
    const unsigned char *p, *end;
    const char *pending; /* the second half of a contraction */
    /* The last hyphen chain ("a-b-c") a word was found in: its first word
     * and its end, so each word of a long chain does not scan it again. */
    const unsigned char *chain_lo, *chain_end;
    /* The last number run that ran into a word byte ("1.1.1x"): its first
     * byte and that word byte. A number starting inside it runs to the
     * same byte (no '.' or ',' it took is refused from a later start), so
     * it is a word at once, without scanning the run again. */
    const unsigned char *num_lo, *num_end;
} tok_iter;

static tok_iter tok_start(const sc_embed *e, const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text;
    return (tok_iter){.e = e, .p = p, .end = p + (text ? len : 0)};
}

static int is_alpha(unsigned c)
{
    return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}

static int is_digit(unsigned c)
{
    return c >= '0' && c <= '9';
}

/* A UTF-8 punctuation sequence at p mapped to its ASCII twin (curly quotes,
 * dashes), else 0; *adv says how many bytes it spans. */
static int utf8_punct(const unsigned char *p, const unsigned char *end,
                      size_t *adv)
{
    if (end - p >= 3 && p[0] == 0xe2 && p[1] == 0x80) {
        *adv = 3;
        switch (p[2]) {
        case 0x98:
        case 0x99:
            return '\'';
        case 0x9c:
        case 0x9d:
            return '"';
        case 0x93:
        case 0x94:
            return '-';
        case 0xa6:
            return '.';
        default:
            return 0;
        }
    }
    if (end - p >= 2 && p[0] == 0xc2 && p[1] == 0xa0) {
        *adv = 2;
        return ' ';
    }
    return 0;
}

/* Word bytes: ASCII letters and digits, and any non-ASCII byte that is not
 * one of the mapped punctuation sequences (so accented words stay whole and
 * invalid UTF-8 is just bytes). */
static size_t word_char(const unsigned char *p, const unsigned char *end)
{
    if (p >= end) {
        return 0;
    }
    if (is_alpha(*p) || is_digit(*p)) {
        return 1;
    }
    if (*p >= 0x80) {
        size_t adv;
        if (utf8_punct(p, end, &adv)) {
            return 0;
        }
        return 1;
    }
    return 0;
}

static void put(tok *t, unsigned char c)
{
    c = (unsigned char)((c >= 'A' && c <= 'Z') ? c | 0x20 : c);
    if (t->n < TOK_MAX) {
        t->s[t->n++] = (char)c;
    } else {
        uint64_t h = t->over != 0 ? t->over : 0xcbf29ce484222325ull;
        h = (h ^ c) * 0x100000001b3ull;
        t->over = h != 0 ? h : 1;
    }
}

static const unsigned char *scan_word(const unsigned char *p,
                                      const unsigned char *end, tok *t)
{
    size_t k;
    while ((k = word_char(p, end)) != 0) {
        put(t, *p);
        p += k;
    }
    return p;
}

/* An apostrophe (ASCII or curly) at p: its byte length, else 0. */
static size_t apostrophe(const unsigned char *p, const unsigned char *end)
{
    if (p < end && *p == '\'') {
        return 1;
    }
    size_t adv;
    if (p < end && *p >= 0x80 && utf8_punct(p, end, &adv) == '\'') {
        return adv;
    }
    return 0;
}

static int eq(const tok *t, const char *s)
{
    size_t n = strlen(s);
    return t->n == n && memcmp(t->s, s, n) == 0;
}

static int in_vocab(const sc_embed *e, const tok *t)
{
    return t->over == 0 &&
           lookup(e, t->s, t->n, XXH3_64bits(t->s, t->n)) != NO_WORD;
}

/* The next token into *t; 0 at the end. Lower case; "don't" -> "do" "not",
 * "we're" -> "we" "are", "'s" dropped; hyphenated compounds stay whole when
 * the table has them ("state-of-the-art"), else split; numbers keep their
 * decimal point and lose thousands separators ("1,000" -> "1000"). */
static int tok_next(tok_iter *it, tok *t)
{
    t->n = 0;
    t->over = 0;
    if (it->pending != NULL) {
        size_t n = strlen(it->pending);
        memcpy(t->s, it->pending, n);
        t->n = n;
        t->kind = TK_WORD;
        it->pending = NULL;
        return 1;
    }
    const unsigned char *p = it->p, *end = it->end;
    for (;;) {
        if (p >= end) {
            it->p = p;
            return 0;
        }
        size_t adv = 0;
        int m = *p >= 0x80 ? utf8_punct(p, end, &adv) : 0;
        if (*p <= ' ' || *p == 0x7f || m == ' ') {
            p += m == ' ' ? adv : 1;
            continue;
        }
        break;
    }
    if (is_digit(*p) &&
        (it->num_end == NULL || p < it->num_lo || p >= it->num_end)) {
        /* A number: digits with inner '.' between digits, and ',' as a
         * thousands separator only: three digits after it and no fourth
         * ("1,000" is 1000; "1,2,3" and "2,5" stay apart, not 123 and 25:
         * since model version 3). */
        const unsigned char *q = p;
        bool dot = false; /* no thousands mark after it: "0.5,100" is 2 */
        while (q < end) {
            if (is_digit(*q)) {
                put(t, *q);
                q++;
            } else if (*q == '.' && q + 1 < end && is_digit(q[1])) {
                put(t, '.');
                dot = true;
                q++;
            } else if (*q == ',' && !dot && end - q >= 4 && is_digit(q[1]) &&
                       is_digit(q[2]) && is_digit(q[3]) &&
                       (end - q == 4 || !is_digit(q[4]))) {
                q++;
            } else {
                break;
            }
        }
        if (word_char(q, end) == 0) {
            t->kind = TK_NUM;
            it->p = q;
            return 1;
        }
        /* "10th", "3d", "100k": one word. */
        t->n = 0;
        t->over = 0;
        it->num_lo = p;
        it->num_end = q;
    }
    size_t adv = 0;
    int m = *p >= 0x80 ? utf8_punct(p, end, &adv) : 0;
    if (word_char(p, end) == 0) {
        /* Punctuation, one character. */
        t->kind = TK_PUNCT;
        if (m != 0) {
            put(t, (unsigned char)m);
            p += adv;
        } else {
            put(t, *p);
            p++;
        }
        it->p = p;
        return 1;
    }
    t->kind = TK_WORD;
    const unsigned char *w = p; /* the word's first byte */
    p = scan_word(p, end, t);
    /* Hyphenated compound: keep it whole when the table knows it, so only
     * when the rest of the chain from this word fits a token (each byte is
     * a token byte). A chain's end is found once for all its words, so a
     * long chain ("a-a-a-...") costs linear time, and only its last few
     * words scan for a compound. */
    if (p < end && *p == '-' && word_char(p + 1, end) && t->over == 0) {
        if (it->chain_end == NULL || w < it->chain_lo || w >= it->chain_end) {
            const unsigned char *q = p;
            size_t k;
            while (q < end && *q == '-' && word_char(q + 1, end)) {
                q++;
                while ((k = word_char(q, end)) != 0) {
                    q += k;
                }
            }
            it->chain_lo = w;
            it->chain_end = q;
        }
        if ((size_t)(it->chain_end - w) < TOK_MAX) {
            tok c = *t;
            const unsigned char *q = p;
            while (q < end && *q == '-' && word_char(q + 1, end)) {
                put(&c, '-');
                q = scan_word(q + 1, end, &c);
            }
            if (in_vocab(it->e, &c)) {
                *t = c;
                p = q;
            }
        }
    }
    size_t ap = apostrophe(p, end);
    if (ap != 0 && is_alpha(p[ap < (size_t)(end - p) ? ap : 0])) {
        tok suf = {.n = 0};
        const unsigned char *q = scan_word(p + ap, end, &suf);
        const char *second = NULL;
        int known = 1;
        /* Not on a token cut at TOK_MAX: its last kept byte is not its
         * last (since model version 5). */
        if (eq(&suf, "t") && t->over == 0 && t->n >= 2 &&
            t->s[t->n - 1] == 'n') {
            t->n--; /* "don't" -> "do" + "not" */
            if (eq(t, "ca")) {
                t->s[t->n++] = 'n';
            } else if (eq(t, "wo")) {
                memcpy(t->s, "will", 4);
                t->n = 4;
            } else if (eq(t, "sha")) {
                memcpy(t->s, "shall", 5);
                t->n = 5;
            }
            second = "not";
        } else if (eq(&suf, "s")) {
            second = NULL;
        } else if (eq(&suf, "re")) {
            second = "are";
        } else if (eq(&suf, "m")) {
            second = "am";
        } else if (eq(&suf, "ve")) {
            second = "have";
        } else if (eq(&suf, "ll")) {
            second = "will";
        } else if (eq(&suf, "d")) {
            second = "would";
        } else {
            known = 0; /* "o'neill": the apostrophe splits two words */
        }
        if (known) {
            p = q;
            it->pending = second;
        }
    }
    it->p = p;
    return 1;
}

size_t sc_embed_debug_tokens(const sc_embed *e, const char *text, size_t len,
                             char *buf, size_t cap)
{
    tok_iter it = tok_start(e, text, len);
    tok t;
    size_t count = 0, used = 0;
    if (cap > 0) {
        buf[0] = '\0';
    }
    while (tok_next(&it, &t)) {
        count++;
        const char *pre = "";
        if (t.kind == TK_NUM) {
            pre = "#";
        } else if (!in_vocab(e, &t)) {
            pre = "~";
        }
        if (used >= cap) {
            continue; /* full: counted only */
        }
        int w = snprintf(buf + used, cap - used, "%s%.*s ", pre, (int)t.n, t.s);
        if (w > 0 && used + (size_t)w < cap) {
            used += (size_t)w;
        } else {
            buf[used] = '\0'; /* this token does not fit: cut before it */
            used = cap;
        }
    }
    return count;
}

void sc_embed_debug_each_token(const sc_embed *e, const char *text, size_t len,
                               void (*fn)(void *ctx,
                                          const sc_embed_tok_info *t),
                               void *ctx)
{
    tok_iter it = tok_start(e, text, len);
    tok t;
    while (tok_next(&it, &t)) {
        sc_embed_tok_info ti = {
            .hash = tok_hash(&t),
            .s = t.s,
            .n = t.n,
            .cut = t.over != 0,
            .kind = t.kind == TK_WORD  ? SC_EMBED_TOK_WORD
                    : t.kind == TK_NUM ? SC_EMBED_TOK_NUM
                                       : SC_EMBED_TOK_PUNCT,
        };
        fn(ctx, &ti);
    }
}

void sc_embed_debug_consts(const sc_embed *e, sc_embed_consts *out)
{
    *out = (sc_embed_consts){.probs = e->probs,
                             .comp = e->comp,
                             .ncomp = e->ncomp,
                             .inv_norm = e->inv_norm,
                             .mean_norm = e->mean_norm,
                             .p_min = e->p_min};
}

/* ---- sentence vectors ---------------------------------------------------*/

void sc_embed_params_default(sc_embed_params *p)
{
    /* Chosen on the cache files only (leave-one-out, bench/embed_eval.c
     * --dev); see the README's embedder section for the figures. */
    p->sif_a = 4e-4f; /* uSIF's a for this table (embed/README.md) */
    p->ncomp = 4;
    p->oov_hash = true;
    p->oov_scale = 0.25f;
    p->skip_punct = true;
    p->unit_words = false;
    p->lex_weight = 0.0f; /* version 1: 0.5 (the alignment replaced it) */
    p->lex_pow = 0.5f;
    p->lex_tau = 0.6f;
    p->num_penalty = 0.1f;
    p->neg_penalty = 0.1f;
    p->qword_penalty = 0.0f; /* tried: 0.05 lost on both dev sets */
    p->align_weight = 0.5f;
    p->align_a = 1e-3f;
    p->cap_cosine = false;
    p->trigram = 0.0f; /* tried: 0.5 changed nothing on dev */
    p->align_base = 0.0f;
    p->letter_rank = 0;
    p->letter_rank_vec = 0;
    p->align_vecs = NULL;
    p->idf = NULL;
    p->idf_ctx = NULL;
}

/* The pseudo-random vector of OOV token hash h, unscaled, into v: entry d
 * is the top half, as a signed integer, of splitmix64's (d + 1)-th output
 * from state h. The state after d + 1 steps is h + (d + 1) golden, so the
 * entries are independent of one another (the same numbers as stepping). */
static void make_hashed(float *v, uint32_t dim, uint64_t h)
{
    for (uint32_t d = 0; d < dim; d++) {
        uint64_t z = h + (uint64_t)(d + 1) * 0x9e3779b97f4a7c15ULL;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        v[d] = (float)(int32_t)(uint32_t)(z >> 32);
    }
}

/* The hashed vectors of the OOV tokens one sc_embed_text call has met,
 * direct-mapped by token hash: a text that repeats an unknown word ("zqx
 * zqx ...", "a-a-a-...") makes its vector once, where making one costs dim
 * splitmix steps and adding it dim multiply-adds. A vector is a function
 * of the hash alone, so the hash is the whole key. On the stack (the call
 * allocates nothing): at most OOV_MEMO_FLOATS floats, so fewer slots for a
 * wider table (4 at SC_EMBED_MAX_DIM). */
#define OOV_MEMO_FLOATS 4096u
#define OOV_MEMO_SLOTS  64u

typedef struct oov_memo {
    uint64_t key[OOV_MEMO_SLOTS];
    uint8_t full[OOV_MEMO_SLOTS];
    uint32_t mask; /* slots - 1 */
    float v[OOV_MEMO_FLOATS];
} oov_memo;

static void oov_memo_init(oov_memo *m, uint32_t dim)
{
    uint32_t slots = OOV_MEMO_SLOTS;
    while (slots > 1 && slots * dim > OOV_MEMO_FLOATS) {
        slots /= 2;
    }
    m->mask = slots - 1;
    memset(m->full, 0, slots);
}

static const float *oov_vector(oov_memo *m, uint32_t dim, uint64_t h)
{
    uint32_t i = (uint32_t)(h ^ (h >> 32)) & m->mask;
    float *v = m->v + (size_t)i * dim;
    if (!m->full[i] || m->key[i] != h) {
        make_hashed(v, dim, h);
        m->key[i] = h;
        m->full[i] = 1;
    }
    return v;
}

/* The factor of an OOV token of weight w: its hashed vector's entries are
 * uniform in [-sqrt3, sqrt3) once scaled, so its expected norm is norm. */
static float oov_scale(uint32_t dim, float w, float norm)
{
    return w * norm * 1.7320508f / sqrtf((float)dim) / 2147483648.0f;
}

/* acc += scale * v: each token still adds its products in its turn, so
 * the sum is the one that made every vector afresh, bit for bit. */
static void add_scaled(float *restrict acc, const float *restrict v,
                       uint32_t dim, float scale)
{
    for (uint32_t d = 0; d < dim; d++) {
        acc[d] += scale * v[d];
    }
}

/* The table index whose probability a token weighs by: its own, or for a
 * one-letter word missing from the table, that of rank `rank` (0: none). */
static uint32_t weight_index(const sc_embed *e, uint32_t idx, const tok *t,
                             unsigned rank)
{
    if (idx == NO_WORD && rank > 0 && rank < e->nwords && t->kind == TK_WORD &&
        t->n == 1) {
        return rank;
    }
    return idx;
}

/* SIF's weight a / (a + p(w)) of the word of rank idx; 1 when a is 0. */
static float word_weight(const sc_embed *e, float a, uint32_t idx)
{
    if (a <= 0) {
        return 1.0f;
    }
    float pw = idx == NO_WORD ? e->p_min : e->probs[idx];
    return a / (a + pw);
}

sc_err sc_embed_text_p(const sc_embed *e, const sc_embed_params *p,
                       const char *text, size_t len, float *out)
{
    if (e == NULL || p == NULL || out == NULL || (text == NULL && len > 0)) {
        return SC_EINVAL;
    }
    float acc[SC_EMBED_MAX_DIM];
    uint32_t dim = e->dim;
    memset(acc, 0, dim * sizeof(float));
    oov_memo memo;
    oov_memo_init(&memo, dim);
    tok_iter it = tok_start(e, text, len);
    tok t;
    size_t used = 0;
    while (tok_next(&it, &t)) {
        if (t.kind == TK_PUNCT && p->skip_punct) {
            continue;
        }
        uint64_t h = tok_hash(&t);
        uint32_t idx =
            t.kind == TK_NUM || t.over != 0 ? NO_WORD : lookup(e, t.s, t.n, h);
        float w = word_weight(e, p->sif_a,
                              weight_index(e, idx, &t, p->letter_rank_vec));
        if (idx == NO_WORD) {
            if (!p->oov_hash || t.kind == TK_PUNCT) {
                continue;
            }
            add_scaled(acc, oov_vector(&memo, dim, h), dim,
                       oov_scale(dim, w,
                                 p->oov_scale *
                                     (p->unit_words ? 1.0f : e->mean_norm)));
        } else {
            const float *v = e->vecs + (size_t)idx * dim;
            if (p->unit_words) {
                w *= e->inv_norm[idx];
            }
            for (uint32_t d = 0; d < dim; d++) {
                acc[d] += w * v[d];
            }
        }
        /* Punctuation alone does not make a prompt. */
        used += t.kind != TK_PUNCT;
    }
    if (used == 0) {
        return SC_EZEROVEC;
    }
    unsigned nc = p->ncomp < e->ncomp ? p->ncomp : e->ncomp;
    for (unsigned k = 0; k < nc; k++) {
        const float *u = e->comp + (size_t)k * dim;
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

sc_err sc_embed_text(const sc_embed *e, const char *text, size_t len,
                     float *out)
{
    sc_embed_params p;
    sc_embed_params_default(&p);
    return sc_embed_text_p(e, &p, text, len, out);
}

/* ---- rescoring ----------------------------------------------------------*/

typedef struct ctok {
    uint64_t h;   /* hash of the normal form */
    uint32_t idx; /* table index or NO_WORD */
    float w;      /* SIF weight */
    uint8_t num;  /* a number */
    uint8_t n;    /* bytes of s */
    char s[TOK_MAX];
} ctok;

typedef struct ctext {
    ctok t[SC_EMBED_RESCORE_TOKENS];
    unsigned n;
    unsigned neg;   /* negation words seen, in the whole text */
    unsigned qword; /* bit set of the question words seen (qwords[]) */
    bool cut;       /* content words past the first SC_EMBED_RESCORE_TOKENS */
    /* The numbers past those (distinct; tnum_over: more than fit). */
    uint64_t tnum[SC_EMBED_RESCORE_TOKENS];
    unsigned ntnum;
    bool tnum_over;
} ctext;

static int is_negation(const tok *t)
{
    static const char *const neg[] = {"not",     "no",      "never",  "cannot",
                                      "none",    "nothing", "nobody", "nowhere",
                                      "neither", "nor"};
    for (size_t i = 0; i < sizeof(neg) / sizeof(neg[0]); i++) {
        if (eq(t, neg[i])) {
            return 1;
        }
    }
    return 0;
}

/* Question words whose presence on one side only changes what is asked
 * ("how do i ..." vs "why do i ..."). */
static unsigned qword_bit(const tok *t)
{
    static const char *const qw[] = {"how",   "why", "what", "when",
                                     "where", "who", "which"};
    for (unsigned i = 0; i < sizeof(qw) / sizeof(qw[0]); i++) {
        if (eq(t, qw[i])) {
            return 1u << i;
        }
    }
    return 0;
}

/* Whether h is among c's first content tokens. */
static bool has_hash(const ctext *c, uint64_t h)
{
    for (unsigned i = 0; i < c->n; i++) {
        if (c->t[i].h == h) {
            return true;
        }
    }
    return false;
}

/* Whether h is among the numbers past c's first content tokens. */
static bool has_tail_number(const ctext *c, uint64_t h)
{
    for (unsigned i = 0; i < c->ntnum; i++) {
        if (c->tnum[i] == h) {
            return true;
        }
    }
    return false;
}

/* A number to the rescore: a number token, or a word that starts with a
 * digit ("3kg", "5s", "10th": since model version 5, when "3.5kg" and
 * "7.5kg" had no number penalty). */
static bool is_number(const tok *t)
{
    return t->kind == TK_NUM || (t->n > 0 && is_digit((unsigned char)t->s[0]));
}

/* Past the first SC_EMBED_RESCORE_TOKENS content tokens: notes that the
 * text goes on, and its numbers, so that what follows still counts. */
static void content_tail(ctext *c, const tok *t)
{
    uint64_t h = tok_hash(t);
    if (has_hash(c, h)) {
        return;
    }
    c->cut = true;
    if (!is_number(t)) {
        return;
    }
    if (has_tail_number(c, h)) {
        return;
    }
    if (c->ntnum < SC_EMBED_RESCORE_TOKENS) {
        c->tnum[c->ntnum++] = h;
    } else {
        c->tnum_over = true;
    }
}

/* The content tokens of text into *c; with p NULL their hashes only (no
 * table lookups, no weights: what counting a text's words needs). With p,
 * the whole text is read for negations and for numbers and words past
 * the first tokens (content_tail). */
static void content(const sc_embed *e, const sc_embed_params *p,
                    const char *text, size_t len, ctext *c)
{
    tok_iter it = tok_start(e, text, len);
    tok t;
    c->n = 0;
    c->neg = 0;
    c->qword = 0;
    c->cut = false;
    c->ntnum = 0;
    c->tnum_over = false;
    while ((c->n < SC_EMBED_RESCORE_TOKENS || p != NULL) && tok_next(&it, &t)) {
        if (t.kind == TK_PUNCT) {
            continue;
        }
        if (is_negation(&t)) {
            c->neg++;
            continue;
        }
        if (c->n == SC_EMBED_RESCORE_TOKENS) {
            content_tail(c, &t);
            continue;
        }
        c->qword |= qword_bit(&t);
        ctok *k = &c->t[c->n];
        k->h = tok_hash(&t);
        if (p != NULL) {
            k->idx = t.kind == TK_NUM || t.over != 0
                         ? NO_WORD
                         : lookup(e, t.s, t.n, k->h);
            k->w =
                word_weight(e, p->align_a,
                            weight_index(e, k->idx, &t, p->letter_rank));
            if (p->idf != NULL) {
                k->w *= p->idf(p->idf_ctx, k->h);
            }
        }
        k->num = is_number(&t);
        k->n = (uint8_t)t.n;
        memcpy(k->s, t.s, t.n);
        /* The same word twice counts once. */
        if (!has_hash(c, k->h)) {
            c->n++;
        }
    }
}

size_t sc_embed_content_hashes(const sc_embed *e, const char *text, size_t len,
                               uint64_t *out, size_t cap)
{
    if (e == NULL || (text == NULL && len > 0)) {
        return 0;
    }
    ctext c;
    content(e, NULL, text, len, &c);
    size_t n = c.n < cap ? c.n : cap;
    for (size_t i = 0; i < n; i++) {
        out[i] = c.t[i].h;
    }
    return n;
}

/* Dice coefficient of the character trigrams of two words, with boundary
 * marks ("^ab", "ab$"): 1 for equal strings, near 1 for a misspelling. */
static float trigram_dice(const ctok *a, const ctok *b)
{
    /* "^" s "$" has n trigrams; n <= TOK_MAX. */
    uint32_t ga[TOK_MAX], gb[TOK_MAX];
    unsigned na = a->n, nb = b->n;
    const ctok *w[2] = {a, b};
    uint32_t *g[2] = {ga, gb};
    for (int k = 0; k < 2; k++) {
        unsigned n = w[k]->n;
        for (unsigned i = 0; i < n; i++) {
            unsigned c0 = i == 0 ? '^' : (unsigned char)w[k]->s[i - 1];
            unsigned c1 = (unsigned char)w[k]->s[i];
            unsigned c2 = i + 1 < n ? (unsigned char)w[k]->s[i + 1] : '$';
            g[k][i] = c0 << 16 | c1 << 8 | c2;
        }
    }
    if (na == 0 || nb == 0) {
        return 0.0f;
    }
    /* Multiset intersection by marking matched trigrams of b. */
    unsigned char used[TOK_MAX] = {0};
    unsigned common = 0;
    for (unsigned i = 0; i < na; i++) {
        for (unsigned j = 0; j < nb; j++) {
            if (!used[j] && ga[i] == gb[j]) {
                used[j] = 1;
                common++;
                break;
            }
        }
    }
    return 2.0f * (float)common / (float)(na + nb);
}

static float word_sim(const sc_embed *e, const sc_embed_params *p,
                      const ctok *a, const ctok *b)
{
    if (a->h == b->h) {
        return 1.0f;
    }
    if (a->num || b->num) {
        return 0.0f;
    }
    if (a->idx == NO_WORD || b->idx == NO_WORD) {
        /* An unknown word (a misspelling, a name): its spelling. */
        if (p->trigram > 0 && a->n >= 4 && b->n >= 4) {
            float d = trigram_dice(a, b);
            return d >= p->trigram ? d : 0.0f;
        }
        return 0.0f;
    }
    const float *v = p->align_vecs != NULL ? p->align_vecs : e->vecs;
    const float *x = v + (size_t)a->idx * e->dim;
    const float *y = v + (size_t)b->idx * e->dim;
    float dot = e->dot(x, y, e->dim);
    /* A table of huge (finite) values can overflow the dot product: such
     * a pair matches nothing rather than poisoning the score. */
    float s = p->align_vecs != NULL
                  ? dot
                  : dot * (e->inv_norm[a->idx] * e->inv_norm[b->idx]);
    if (!isfinite(s)) {
        return 0.0f;
    }
    s = s > 1.0f ? 1.0f : s < -1.0f ? -1.0f : s;
    if (p->align_base > 0 && p->align_base < 1) {
        s = (s - p->align_base) / (1.0f - p->align_base);
        s = s < 0 ? 0 : s;
    }
    return s;
}

/* Of a against b: the unmatched content mass, the aligned mass (each word's
 * best match on b's side, SIF-weighted) and a's total mass; best[i] is a's
 * token i's best match. */
static void unmatched(const sc_embed_params *p, const ctext *a,
                      const float *best, double *miss, double *mass,
                      double *aligned, int *num_miss)
{
    for (unsigned i = 0; i < a->n; i++) {
        if (a->t[i].num && best[i] < 1.0f) {
            *num_miss = 1;
        }
        float u =
            best[i] >= p->lex_tau ? 0.0f : (p->lex_tau - best[i]) / p->lex_tau;
        *miss += a->t[i].w * u;
        *mass += a->t[i].w;
        *aligned += a->t[i].w * best[i];
    }
}

/* Each token's best match on the other side, both ways, from one pass over
 * the word pairs (word_sim is symmetric). */
static void best_matches(const sc_embed *e, const sc_embed_params *p,
                         const ctext *a, const ctext *b, float *best_a,
                         float *best_b)
{
    for (unsigned j = 0; j < b->n; j++) {
        best_b[j] = 0;
    }
    for (unsigned i = 0; i < a->n; i++) {
        float best = 0;
        for (unsigned j = 0; j < b->n; j++) {
            if (best >= 1.0f && best_b[j] >= 1.0f) {
                continue; /* neither can gain */
            }
            float s = word_sim(e, p, &a->t[i], &b->t[j]);
            if (s > best) {
                best = s;
            }
            if (s > best_b[j]) {
                best_b[j] = s;
            }
        }
        best_a[i] = best;
    }
}

/* Whether a has a number past its first tokens that b lacks (in its
 * first tokens or past them); a number past a full list counts as one. */
static bool tail_numbers_differ(const ctext *a, const ctext *b)
{
    if (a->tnum_over) {
        return true;
    }
    for (unsigned i = 0; i < a->ntnum; i++) {
        if (!has_hash(b, a->tnum[i]) && !has_tail_number(b, a->tnum[i])) {
            return true;
        }
    }
    return false;
}

/* The rescore of two tokenised texts; cosine is finite and in [-1, 1]. */
static float rescore_ctext(const sc_embed *e, const sc_embed_params *p,
                           const ctext *a, const ctext *b, float cosine)
{
    double miss = 0, mass = 0, al_a = 0, m_a = 0, al_b = 0, m_b = 0;
    int num_miss = 0;
    float best_a[SC_EMBED_RESCORE_TOKENS], best_b[SC_EMBED_RESCORE_TOKENS];
    best_matches(e, p, a, b, best_a, best_b);
    unmatched(p, a, best_a, &miss, &m_a, &al_a, &num_miss);
    unmatched(p, b, best_b, &miss, &m_b, &al_b, &num_miss);
    mass = m_a + m_b;
    double pen = mass > 0 && p->lex_weight > 0
                     ? p->lex_weight * pow(miss / mass, p->lex_pow)
                     : 0.0;
    if (!num_miss && (a->cut || b->cut)) {
        num_miss = tail_numbers_differ(a, b) || tail_numbers_differ(b, a);
    }
    if (num_miss) {
        pen += p->num_penalty;
    }
    if ((a->neg > 0) != (b->neg > 0)) {
        pen += p->neg_penalty;
    }
    if (a->qword != b->qword) {
        pen += p->qword_penalty;
    }
    double base = cosine;
    if (p->align_weight > 0 && m_a > 0 && m_b > 0) {
        /* The word alignment (BERTScore-like F1 of the two directions). */
        double ra = al_a / m_a, rb = al_b / m_b;
        double f = ra + rb > 0 ? 2 * ra * rb / (ra + rb) : 0;
        base = (1 - p->align_weight) * cosine + p->align_weight * f;
        /* A text cut at the first tokens: the alignment saw only them, so
         * it may lower the cosine but never raise it (since model version
         * 5: two prompts sharing a long instruction aligned fully, 1.0,
         * whatever followed it). */
        if ((p->cap_cosine || a->cut || b->cut) && base > cosine) {
            base = cosine;
        }
    }
    double r = base - pen;
    if (!isfinite(r)) {
        r = cosine; /* weights of a hostile table; the cosine stands */
    }
    if (r < -1.0) {
        r = -1.0;
    } else if (r > 1.0) {
        r = 1.0;
    }
    return (float)r;
}

/* The cosine as the rescore takes it: NaN stays NaN, the rest is clamped
 * to [-1, 1]. */
static float clamp_cosine(float cosine)
{
    return cosine > 1.0f ? 1.0f : cosine < -1.0f ? -1.0f : cosine;
}

/* Fills *c with candidate i's tokens; false where it has none (its cosine
 * then stands as it is). */
typedef bool (*cand_fn)(const void *arg, const sc_embed_params *p, size_t i,
                        ctext *c);

/* The rescore of n candidates against the query's tokens a (NULL where
 * there is nothing to compare: every cosine stands): a NaN cosine stays
 * NaN, the rest is clamped to [-1, 1] and, where cand gives the
 * candidate's tokens, rescored. The one loop of the rescores from texts
 * and from signatures, so that the two agree bit for bit. */
static void rescore_cands(const sc_embed *e, const sc_embed_params *p,
                          const ctext *a, size_t n, cand_fn cand,
                          const void *arg, const float *cosines, float *out)
{
    ctext b;
    for (size_t i = 0; i < n; i++) {
        float cosine = clamp_cosine(cosines[i]); /* NaN stays NaN */
        if (!isnan(cosine) && a != NULL && cand(arg, p, i, &b)) {
            cosine = rescore_ctext(e, p, a, &b, cosine);
        }
        out[i] = cosine;
    }
}

typedef struct cand_texts {
    const sc_embed *e;
    const char *const *texts;
    const size_t *lens;
} cand_texts;

static bool text_cand(const void *arg, const sc_embed_params *p, size_t i,
                      ctext *c)
{
    const cand_texts *t = arg;
    if (t->texts[i] == NULL && t->lens[i] > 0) {
        return false;
    }
    content(t->e, p, t->texts[i], t->lens[i], c);
    return true;
}

void sc_embed_rescore_many_p(const sc_embed *e, const sc_embed_params *p,
                             const char *qtext, size_t qlen, size_t n,
                             const char *const *ctexts, const size_t *clens,
                             const float *cosines, float *out)
{
    ctext a;
    const ctext *qa = NULL; /* none: every cosine stands */
    if (e != NULL && p != NULL && (qtext != NULL || qlen == 0)) {
        content(e, p, qtext, qlen, &a); /* once for every candidate */
        qa = &a;
    }
    cand_texts t = {e, ctexts, clens};
    rescore_cands(e, p, qa, n, text_cand, &t, cosines, out);
}

float sc_embed_rescore_p(const sc_embed *e, const sc_embed_params *p,
                         const char *qtext, size_t qlen, const char *ctext_,
                         size_t clen, float cosine)
{
    float r;
    sc_embed_rescore_many_p(e, p, qtext, qlen, 1, &ctext_, &clen, &cosine, &r);
    return r;
}

float sc_embed_rescore(const sc_embed *e, const char *qtext, size_t qlen,
                       const char *ctext, size_t clen, float cosine)
{
    sc_embed_params p;
    sc_embed_params_default(&p);
    return sc_embed_rescore_p(e, &p, qtext, qlen, ctext, clen, cosine);
}

/* ---- document frequencies ------------------------------------------------
 * Open addressing, linear probing, keys the tokens' XXH3 hashes (| 1, so
 * 0 marks an empty slot); a removal shifts the run after it back, so there
 * are no tombstones. Kept at most half full. */

struct sc_embed_df {
    uint64_t *key;
    uint32_t *count;
    uint64_t seed; /* random: where a token's count lives is not known
                      outside the process (df_home) */
    size_t cap;    /* a power of two, or 0 */
    size_t used;
    uint64_t docs;
    double prior; /* SC_EMBED_DF_PRIOR, or the evaluation tool's */
    /* Of docs and prior, kept by df_consts: BM25's largest idf (an unseen
     * word's) and the share m = docs / (docs + prior) of the idf. */
    double idf_top, mix;
};

static void df_consts(sc_embed_df *df)
{
    double n = (double)df->docs;
    df->idf_top = log(1.0 + (n + 0.5) / 0.5);
    df->mix = n > 0 ? n / (n + df->prior) : 0.0; /* no texts: SIF alone */
}

sc_embed_df *sc_embed_df_new(void)
{
    sc_embed_df *df = calloc(1, sizeof(sc_embed_df));
    if (df != NULL) {
        df->prior = SC_EMBED_DF_PRIOR;
        df_consts(df);
        df->seed = sc_seed_secret(df);
    }
    return df;
}

void sc_embed_df_set_prior(sc_embed_df *df, double prior)
{
    df->prior = prior;
    df_consts(df);
}

void sc_embed_df_free(sc_embed_df *df)
{
    if (df != NULL) {
        free(df->key);
        free(df->count);
        free(df);
    }
}

/* A token's home slot: every bit of its hash, mixed with the table's
 * secret seed (a 64-bit finaliser), decides it. A fixed multiply kept the
 * low bits' order, so a client could search offline for words that all
 * share one slot and make every count and idf a scan of one long run,
 * under the namespace's lock. */
static size_t df_home(const sc_embed_df *df, uint64_t k)
{
    k ^= df->seed;
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return (size_t)k & (df->cap - 1);
}

size_t sc_embed_df_longest_run(const sc_embed_df *df)
{
    size_t best = 0, run = 0;
    /* Twice round, so that a run across the end counts whole. */
    for (size_t i = 0; i < 2 * df->cap; i++) {
        run = df->key[i & (df->cap - 1)] != 0 ? run + 1 : 0;
        best = run > best ? run : best;
    }
    return best < df->cap ? best : df->cap;
}

/* The slot of k, or of the empty slot where it would go. */
static size_t df_find(const sc_embed_df *df, uint64_t k)
{
    size_t i = df_home(df, k);
    while (df->key[i] != 0 && df->key[i] != k) {
        i = (i + 1) & (df->cap - 1);
    }
    return i;
}

/* Moves df's tokens to tables of cap slots (a power of two, > used). */
static sc_err df_rehash(sc_embed_df *df, size_t cap)
{
    uint64_t *key = calloc(cap, sizeof(uint64_t));
    uint32_t *count = calloc(cap, sizeof(uint32_t));
    if (key == NULL || count == NULL) {
        free(key);
        free(count);
        return SC_ENOMEM;
    }
    sc_embed_df old = *df;
    df->key = key;
    df->count = count;
    df->cap = cap;
    for (size_t i = 0; i < old.cap; i++) {
        if (old.key[i] != 0) {
            size_t j = df_find(df, old.key[i]);
            df->key[j] = old.key[i];
            df->count[j] = old.count[i];
        }
    }
    free(old.key);
    free(old.count);
    return SC_OK;
}

static sc_err df_reserve(sc_embed_df *df, size_t more)
{
    size_t cap = df->cap ? df->cap : 64;
    while ((df->used + more) * 2 > cap) {
        if (cap > SIZE_MAX / 4 / sizeof(uint64_t)) {
            return SC_ENOMEM;
        }
        cap *= 2;
    }
    return cap == df->cap ? SC_OK : df_rehash(df, cap);
}

/* After removals: a table under an eighth full halves (down to 64 slots),
 * so that its memory follows the texts still counted. */
static void df_shrink(sc_embed_df *df)
{
    size_t cap = df->cap;
    while (cap > 64 && df->used * 8 < cap) {
        cap /= 2;
    }
    if (cap != df->cap) {
        (void)df_rehash(df, cap); /* out of memory: stays as big */
    }
}

static void df_erase(sc_embed_df *df, size_t i)
{
    /* Backward shift: move up each later entry of the run whose home is
     * not between the hole and it (cyclically). */
    size_t hole = i, j = i;
    for (;;) {
        j = (j + 1) & (df->cap - 1);
        if (df->key[j] == 0) {
            break;
        }
        size_t h = df_home(df, df->key[j]);
        if (((j - h) & (df->cap - 1)) >= ((j - hole) & (df->cap - 1))) {
            df->key[hole] = df->key[j];
            df->count[hole] = df->count[j];
            hole = j;
        }
    }
    df->key[hole] = 0;
    df->count[hole] = 0;
    df->used--;
}

/* Counts the n distinct content-token hashes h[] of one text in or out
 * of df (sc_embed_df_count). */
static sc_err df_count_hashes(sc_embed_df *df, const uint64_t *h, size_t n,
                              int delta)
{
    if (delta > 0) {
        if (df_reserve(df, n) != SC_OK) {
            return SC_ENOMEM;
        }
        for (size_t t = 0; t < n; t++) {
            size_t i = df_find(df, h[t] | 1);
            if (df->key[i] == 0) {
                df->key[i] = h[t] | 1;
                df->used++;
            }
            if (df->count[i] < UINT32_MAX) {
                df->count[i]++;
            }
        }
        df->docs++;
    } else if (delta < 0) {
        for (size_t t = 0; t < n && df->cap > 0; t++) {
            size_t i = df_find(df, h[t] | 1);
            if (df->key[i] != 0 && --df->count[i] == 0) {
                df_erase(df, i);
            }
        }
        if (df->docs > 0) {
            df->docs--;
        }
        df_shrink(df);
    }
    df_consts(df);
    return SC_OK;
}

sc_err sc_embed_df_count(sc_embed_df *df, const sc_embed *e, const char *text,
                         size_t len, int delta)
{
    if (df == NULL || e == NULL || (text == NULL && len > 0)) {
        return SC_EINVAL;
    }
    uint64_t h[SC_EMBED_RESCORE_TOKENS];
    size_t n =
        sc_embed_content_hashes(e, text, len, h, SC_EMBED_RESCORE_TOKENS);
    return df_count_hashes(df, h, n, delta);
}

sc_embed_df *sc_embed_df_clone(const sc_embed_df *df)
{
    if (df == NULL) {
        return NULL;
    }
    sc_embed_df *d = malloc(sizeof(*d));
    if (d == NULL) {
        return NULL;
    }
    *d = *df;
    d->key = NULL;
    d->count = NULL;
    if (df->cap > 0) {
        d->key = malloc(df->cap * sizeof(*d->key));
        d->count = malloc(df->cap * sizeof(*d->count));
        if (d->key == NULL || d->count == NULL) {
            sc_embed_df_free(d);
            return NULL;
        }
        memcpy(d->key, df->key, df->cap * sizeof(*d->key));
        memcpy(d->count, df->count, df->cap * sizeof(*d->count));
    }
    return d;
}

size_t sc_embed_df_bytes(const sc_embed_df *df)
{
    return df == NULL ? 0
                      : sizeof(*df) +
                            df->cap * (sizeof(*df->key) + sizeof(*df->count));
}

uint64_t sc_embed_df_docs(const sc_embed_df *df)
{
    return df != NULL ? df->docs : 0;
}

static uint32_t df_of(const sc_embed_df *df, uint64_t h)
{
    if (df == NULL || df->cap == 0) {
        return 0;
    }
    size_t i = df_find(df, h | 1);
    return df->key[i] != 0 ? df->count[i] : 0;
}

uint32_t sc_embed_df_token(const sc_embed_df *df, const char *token, size_t len)
{
    return token != NULL || len == 0 ? df_of(df, XXH3_64bits(token, len)) : 0;
}

float sc_embed_df_idf(const void *ctx, uint64_t h)
{
    const sc_embed_df *df = ctx;
    double n = (double)df->docs, d = (double)df_of(df, h);
    if (d > n) {
        d = n; /* counts of texts counted out more often than in */
    }
    /* BM25's idf over its largest value (an unseen word's), so 1 for the
     * rarest; mixed with 1 (SIF alone) by n / (n + prior): a few texts
     * say little about which words are common. */
    double idf = log(1.0 + (n - d + 0.5) / (d + 0.5));
    return (float)((1.0 - df->mix) + df->mix * idf / df->idf_top);
}

/* The default parameters, with the alignment weighted by df's idf (df
 * NULL: unweighted). */
static void df_params(const sc_embed_df *df, sc_embed_params *p)
{
    sc_embed_params_default(p);
    if (df != NULL) {
        p->idf = sc_embed_df_idf;
        p->idf_ctx = df;
    }
}

float sc_embed_rescore_df(const sc_embed *e, const sc_embed_df *df,
                          const char *qtext, size_t qlen, const char *ctext,
                          size_t clen, float cosine)
{
    float r;
    sc_embed_rescore_many(e, df, qtext, qlen, 1, &ctext, &clen, &cosine, &r);
    return r;
}

void sc_embed_rescore_many(const sc_embed *e, const sc_embed_df *df,
                           const char *qtext, size_t qlen, size_t n,
                           const char *const *ctexts, const size_t *clens,
                           const float *cosines, float *out)
{
    sc_embed_params p;
    df_params(df, &p);
    sc_embed_rescore_many_p(e, &p, qtext, qlen, n, ctexts, clens, cosines, out);
}

/* ---- signatures ----------------------------------------------------------
 * A text's ctext without what a df or the tokens' spellings add: t[0..n)
 * the content tokens (hash, table index with SIG_NUM for a number, SIF
 * weight before any idf), t[n..n + ntnum) the numbers past them (hash
 * only). */
#define SIG_NUM     0x80000000u /* in idx: a number */
#define SIG_NO_WORD 0x7fffffffu /* in idx: NO_WORD (table indexes < 2^24) */

typedef struct sig_tok {
    uint64_t h;
    uint32_t idx;
    float w;
} sig_tok;

struct sc_embed_sig {
    uint32_t n, ntnum, neg, qword;
    bool cut, tnum_over;
    sig_tok t[];
};

sc_err sc_embed_sig_new(const sc_embed *e, const char *text, size_t len,
                        sc_embed_sig **out)
{
    if (e == NULL || out == NULL || (text == NULL && len > 0)) {
        return SC_EINVAL;
    }
    sc_embed_params p;
    sc_embed_params_default(&p);
    ctext c;
    content(e, &p, text, len, &c);
    size_t n = (size_t)c.n + c.ntnum;
    sc_embed_sig *s = malloc(sizeof(*s) + n * sizeof(sig_tok));
    if (s == NULL) {
        return SC_ENOMEM;
    }
    s->n = c.n;
    s->ntnum = c.ntnum;
    s->neg = c.neg;
    s->qword = c.qword;
    s->cut = c.cut;
    s->tnum_over = c.tnum_over;
    for (unsigned i = 0; i < c.n; i++) {
        uint32_t idx = c.t[i].idx == NO_WORD ? SIG_NO_WORD : c.t[i].idx;
        s->t[i] =
            (sig_tok){c.t[i].h, idx | (c.t[i].num ? SIG_NUM : 0), c.t[i].w};
    }
    for (unsigned i = 0; i < c.ntnum; i++) {
        s->t[c.n + i] = (sig_tok){c.tnum[i], SIG_NO_WORD, 0.0f};
    }
    *out = s;
    return SC_OK;
}

void sc_embed_sig_free(sc_embed_sig *s)
{
    free(s);
}

size_t sc_embed_sig_bytes(const sc_embed_sig *s)
{
    return s == NULL ? 0
                     : sizeof(*s) + ((size_t)s->n + s->ntnum) * sizeof(sig_tok);
}

/* The ctext a signature was made from, with p's idf applied as content()
 * applies it (the same float operations, so the same weights). */
static void sig_ctext(const sc_embed_sig *s, const sc_embed_params *p, ctext *c)
{
    c->n = s->n;
    c->neg = s->neg;
    c->qword = s->qword;
    c->cut = s->cut;
    c->ntnum = s->ntnum;
    c->tnum_over = s->tnum_over;
    for (unsigned i = 0; i < s->n; i++) {
        ctok *k = &c->t[i];
        k->h = s->t[i].h;
        uint32_t idx = s->t[i].idx & ~SIG_NUM;
        k->num = (s->t[i].idx & SIG_NUM) != 0;
        k->idx = idx == SIG_NO_WORD ? NO_WORD : idx;
        k->w = s->t[i].w;
        if (p->idf != NULL) {
            k->w *= p->idf(p->idf_ctx, k->h);
        }
        k->n = 0; /* spellings are not kept: no trigram match */
    }
    for (unsigned i = 0; i < s->ntnum; i++) {
        c->tnum[i] = s->t[s->n + i].h;
    }
}

static bool sig_cand(const void *arg, const sc_embed_params *p, size_t i,
                     ctext *c)
{
    const sc_embed_sig *const *cs = arg;
    if (cs[i] == NULL) {
        return false;
    }
    sig_ctext(cs[i], p, c);
    return true;
}

void sc_embed_rescore_sigs(const sc_embed *e, const sc_embed_df *df,
                           const sc_embed_sig *q, size_t n,
                           const sc_embed_sig *const *cs, const float *cosines,
                           float *out)
{
    sc_embed_params p;
    df_params(df, &p);
    ctext a;
    const ctext *qa = NULL; /* none: every cosine stands */
    if (e != NULL && q != NULL) {
        sig_ctext(q, &p, &a);
        qa = &a;
    }
    rescore_cands(e, &p, qa, n, sig_cand, cs, cosines, out);
}

sc_err sc_embed_df_count_sig(sc_embed_df *df, const sc_embed_sig *s, int delta)
{
    if (df == NULL || s == NULL) {
        return SC_EINVAL;
    }
    uint64_t h[SC_EMBED_RESCORE_TOKENS];
    for (unsigned i = 0; i < s->n; i++) {
        h[i] = s->t[i].h;
    }
    return df_count_hashes(df, h, s->n, delta);
}
