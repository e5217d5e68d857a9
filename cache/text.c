/* text.c - prompt normalisation and hashing for the exact layer.
 * Hashing is xxHash's XXH3 (Debian's libxxhash): well kept, very fast on
 * short and long inputs alike, and well distributed; the 128-bit variant
 * makes accidental key collisions negligible (stored text is compared too). */
#include "cache/text.h"

#include "cache/cache.h"

#include <string.h>
#include <xxhash.h>

/* Walks raw text yielding its normal form one byte at a time. */
typedef struct norm_it {
    const unsigned char *p;
    size_t n, i;
    bool started; /* a non-space byte was seen: spaces now count */
    bool pending; /* a run of whitespace waits to become one space */
} norm_it;

static bool is_ws(unsigned char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' ||
           ch == '\f';
}

/* The next byte of the normal form, or -1 at its end. */
static int norm_next(norm_it *it)
{
    while (it->i < it->n) {
        unsigned char ch = it->p[it->i];
        if (is_ws(ch)) {
            it->i++;
            it->pending = it->started;
            continue;
        }
        if (it->pending) {
            /* Emit the space and leave ch for the next call; trailing runs
             * are never emitted, which is the trim. */
            it->pending = false;
            return ' ';
        }
        it->i++;
        it->started = true;
        if (ch >= 'A' && ch <= 'Z') {
            ch = (unsigned char)(ch - 'A' + 'a');
        }
        return ch;
    }
    return -1;
}

size_t sc_cache_text_normalise(const char *in, size_t n, char *out)
{
    norm_it it = {(const unsigned char *)in, n, 0, false, false};
    size_t len = 0;
    int ch;
    while ((ch = norm_next(&it)) >= 0) {
        out[len++] = (char)ch;
    }
    return len;
}

bool sc_cache_text_norm_equal(const char *raw, size_t n, const char *norm,
                              size_t norm_len)
{
    norm_it it = {(const unsigned char *)raw, n, 0, false, false};
    for (size_t i = 0; i < norm_len; i++) {
        int ch = norm_next(&it);
        if (ch < 0 || (unsigned char)ch != (unsigned char)norm[i]) {
            return false;
        }
    }
    return norm_next(&it) < 0;
}

sc_text_key sc_cache_text_key(const char *scope, size_t scope_len,
                              const char *norm, size_t norm_len)
{
    /* The scope's own hash (seeded with its length) seeds the text's: no
     * allocation, no concatenation, and the same pair always gives the same
     * key. Entries also record their scope, which lookups compare. */
    XXH64_hash_t seed =
        XXH3_64bits_withSeed(scope, scope_len, (XXH64_hash_t)scope_len);
    XXH128_hash_t h = XXH3_128bits_withSeed(norm, norm_len, seed);
    sc_text_key k = {h.low64, h.high64};
    return k;
}

uint64_t sc_cache_hash64(const void *p, size_t n)
{
    return XXH3_64bits(p, n);
}
