/* embed_internal.h - knobs of the sentence-vector method, for the test, the
 * benchmark and the offline evaluation tool (bench/embed_eval.c) only. The
 * server uses embed.h, whose functions run sc_embed_params_default. Changing
 * a default changes the vectors: bump SC_EMBED_METHOD_VERSION with it. */
#ifndef SC_EMBED_INTERNAL_H
#define SC_EMBED_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "embed/embed.h"

#define SC_EMBED_METHOD_NAME    "wink-sg100d-sif"
/* 3: ',' only as thousands mark; 4: tokens hashed whole past 64 bytes, and
 * no thousands mark after a decimal point */
#define SC_EMBED_METHOD_VERSION "5"

typedef struct sc_embed_params {
    /* Sentence vector. */
    float sif_a;     /* weight a / (a + p(w)); 0 = plain unweighted average
                        (version 1: 1e-3) */
    unsigned ncomp;  /* common components removed (<= the table's) */
    bool oov_hash;   /* OOV words and numbers get a hashed pseudo-random
                        vector; false = they are skipped */
    float oov_scale; /* hashed vector norm, times the mean word norm */
    bool skip_punct; /* punctuation tokens add nothing */
    bool unit_words; /* word vectors normalised before weighting */
    /* Rescore. */
    float align_a;       /* the alignment's word weight a / (a + p(w)); 0 =
                            unweighted (version 1 shared sif_a) */
    float lex_weight;    /* penalty per unit of unmatched content mass */
    float lex_pow;       /* penalty = lex_weight * (unmatched / mass)^lex_pow */
    float lex_tau;       /* a word whose best match has cosine >= tau counts as
                            matched; below, it is unmatched in proportion */
    float num_penalty;   /* a number on one side only */
    float neg_penalty;   /* negations on one side only */
    float qword_penalty; /* question words (how, why, ...) differ */
    float align_weight;  /* similarity = (1 - w) cosine + w alignment, the
                            F1 of both directions' SIF-weighted best word
                            matches; 0 = the cosine alone */
    bool cap_cosine;     /* the result never exceeds the cosine */
    float trigram;       /* unknown words match by character-trigram Dice
                            when it is >= this; 0 = off (exact match only) */
    float align_base;    /* two different words' cosine s counts as
                            max(0, (s - b) / (1 - b)) in the alignment
                            (BERTScore's baseline rescaling); 0 = raw s */
    unsigned letter_rank;     /* a one-letter word the table lacks ("a",
                                 "i") weighs as the word of this frequency
                                 rank in the alignment; 0 = as the rarest */
    unsigned letter_rank_vec; /* the same in the sentence vector */
    /* Word vectors for the alignment's word cosines (nwords x dim, rank
     * order, each row unit or zero); NULL = the table's. */
    const float *align_vecs;
    /* Optional corpus weighting of the alignment: each content token's
     * weight is multiplied by idf(idf_ctx, token hash). NULL = none. */
    float (*idf)(const void *idf_ctx, uint64_t token_hash);
    const void *idf_ctx;
} sc_embed_params;

void sc_embed_params_default(sc_embed_params *p);

sc_err sc_embed_text_p(const sc_embed *e, const sc_embed_params *p,
                       const char *text, size_t len, float *out);
float sc_embed_rescore_p(const sc_embed *e, const sc_embed_params *p,
                         const char *qtext, size_t qlen, const char *ctext,
                         size_t clen, float cosine);
void sc_embed_rescore_many_p(const sc_embed *e, const sc_embed_params *p,
                             const char *qtext, size_t qlen, size_t n,
                             const char *const *ctexts, const size_t *clens,
                             const float *cosines, float *out);

/* Writes the normalised tokens of text, each followed by one space, into
 * buf[0..cap) (NUL-terminated, truncated to fit); tokens found in the table
 * are bare, OOV words are prefixed '~', numbers '#'. Returns the count. */
size_t sc_embed_debug_tokens(const sc_embed *e, const char *text, size_t len,
                             char *buf, size_t cap);

/* One token as sc_embed_text reads it, for the test's reference copy of
 * the sentence vector. */
typedef struct sc_embed_tok_info {
    uint64_t hash; /* of all its bytes, as sc_embed_text hashes it */
    const char *s; /* its first n bytes, normalised (valid during fn) */
    size_t n;      /* bytes kept, at most 64 */
    bool cut;      /* longer than 64 bytes (never looked up in the table) */
    int kind;      /* SC_EMBED_TOK_* */
} sc_embed_tok_info;
enum { SC_EMBED_TOK_WORD, SC_EMBED_TOK_NUM, SC_EMBED_TOK_PUNCT };

/* Calls fn(ctx, t) for each token of text[0..len), in order. */
void sc_embed_debug_each_token(const sc_embed *e, const char *text, size_t len,
                               void (*fn)(void *ctx,
                                          const sc_embed_tok_info *t),
                               void *ctx);

/* What sc_embed_open derives from the table and sc_embed_text reads:
 * borrowed from e, valid until sc_embed_close. */
typedef struct sc_embed_consts {
    const float *probs; /* nwords word probabilities */
    const float *comp;  /* ncomp x dim common components */
    uint32_t ncomp;
    const float *inv_norm; /* nwords: 1 / |v_i| (0 for a zero vector) */
    float mean_norm;       /* mean |v_i| */
    float p_min;           /* the probability OOV words get */
} sc_embed_consts;
void sc_embed_debug_consts(const sc_embed *e, sc_embed_consts *out);

/* The distinct content-token hashes of text (as the rescore sees them:
 * no punctuation, no negations), at most cap; returns the count. */
size_t sc_embed_content_hashes(const sc_embed *e, const char *text, size_t len,
                               uint64_t *out, size_t cap);

/* The idf callback (params.idf) of a const sc_embed_df *, and its prior
 * (SC_EMBED_DF_PRIOR by default), for the evaluation tool. */
void sc_embed_df_set_prior(sc_embed_df *df, double prior);
/* The longest run of occupied slots in df's table, for the test of its
 * hashing (a lookup scans at most that many). */
size_t sc_embed_df_longest_run(const sc_embed_df *df);
float sc_embed_df_idf(const void *df, uint64_t token_hash);

/* The top ncomp eigenvectors (unit, largest entry positive) of the
 * symmetric dim x dim matrix m, row by row into out; m is deflated. */
void sc_embed_top_eigen(double *m, uint32_t dim, uint32_t ncomp, float *out);

/* The table's word vectors (rank order), dim and word count. */
const float *sc_embed_vectors(const sc_embed *e, uint32_t *dim,
                              uint32_t *nwords);

/* The table index of word[0..len), or -1. */
long sc_embed_lookup(const sc_embed *e, const char *word, size_t len);

#endif
