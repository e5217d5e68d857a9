/* The fake built-in model "fz@2" that test_persist and fuzz_persist share:
 * FZ_DIM floats, each byte of a text adding to one bucket, and it
 * supersedes every "fz@" model. test_persist writes state under "fz@1"
 * that fuzz_persist takes as seeds, so both must embed alike. */
#ifndef SC_TESTS_FZ_MODEL_H
#define SC_TESTS_FZ_MODEL_H

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "cache/cache.h"

#define FZ_DIM 16

static sc_err fz_embed(void *arg, const char *text, size_t len, float *out)
{
    (void)arg;
    memset(out, 0, FZ_DIM * sizeof(float));
    double n = 0;
    for (size_t i = 0; i < len; i++) {
        out[(unsigned char)text[i] % FZ_DIM] += 1.0f;
    }
    for (int d = 0; d < FZ_DIM; d++) {
        n += (double)out[d] * out[d];
    }
    if (n == 0) {
        return SC_EZEROVEC;
    }
    for (int d = 0; d < FZ_DIM; d++) {
        out[d] = (float)(out[d] / sqrt(n));
    }
    return SC_OK;
}

static bool fz_supersedes(void *arg, const char *model)
{
    (void)arg;
    return strncmp(model, "fz@", 3) == 0;
}

#endif
