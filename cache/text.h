/* text.h - the exact layer's text handling: the normal form of a prompt
 * (sc_cache_text_normalise, in cache.h), the 128-bit key of (scope, normal
 * form), and comparing a stored raw text with a normal form in place. */
#ifndef SC_CACHE_TEXT_H
#define SC_CACHE_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sc_text_key {
    uint64_t lo, hi;
} sc_text_key;

/* The key of normal-form text norm[0..norm_len) in scope[0..scope_len):
 * the text's 128-bit XXH3 seeded with the scope's 64-bit XXH3, so moving
 * bytes across the boundary gives another key. */
sc_text_key sc_cache_text_key(const char *scope, size_t scope_len,
                              const char *norm, size_t norm_len);

/* True when raw[0..n) normalises to exactly norm[0..norm_len). Allocates
 * nothing. */
bool sc_cache_text_norm_equal(const char *raw, size_t n, const char *norm,
                              size_t norm_len);

/* A 64-bit hash of arbitrary bytes (responses, scope and namespace names). */
uint64_t sc_cache_hash64(const void *p, size_t n);

#endif
