/* fuzz_embed_table.c - libFuzzer target over the embedder table loader:
 * sc_embed_open on the input as a file (a memfd, no disk). Because a
 * mutated table rarely keeps its checksum, each input is tried twice: as it
 * is, and with file_size and checksum fixed up, so that the structural
 * checks behind the checksum get fuzzed too. A table that opens must embed
 * a few strings into finite unit vectors and rescore within bounds. */
#define _GNU_SOURCE
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include "embed/embed.h"
#include "embed/table.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_embed_table: %s\n", what);
    abort();
}

static const char *const texts[] = {"how do i cancel my order?",
                                    "the",
                                    "",
                                    "  ,. !",
                                    "café 10th well-known",
                                    "\xff\xfe\x00 bytes",
                                    "call my phone please"};

static void use_table(sc_embed *e)
{
    uint32_t dim = sc_embed_dim(e);
    if (dim == 0 || dim > SC_EMBED_MAX_DIM || sc_embed_words(e) == 0 ||
        sc_embed_model(e) == NULL) {
        die("an opened table reports a bad shape");
    }
    float *a = malloc(sizeof(float) * dim), *b = malloc(sizeof(float) * dim);
    if (a == NULL || b == NULL) {
        die("malloc");
    }
    size_t nt = sizeof(texts) / sizeof(texts[0]);
    sc_embed_df *df = sc_embed_df_new(); /* NULL: the rescores go without */
    for (size_t i = 0; i < nt; i++) {
        size_t len = i == 5 ? 10 : strlen(texts[i]);
        sc_err rc = sc_embed_text(e, texts[i], len, a);
        if (rc == SC_EZEROVEC) {
            continue;
        }
        if (rc != SC_OK) {
            die("sc_embed_text failed on an opened table");
        }
        double norm = 0;
        for (uint32_t d = 0; d < dim; d++) {
            if (!isfinite(a[d])) {
                die("non-finite vector");
            }
            norm += (double)a[d] * a[d];
        }
        if (fabs(norm - 1.0) > 1e-3) {
            die("vector is not a unit vector");
        }
        size_t j = (i + 1) % nt;
        size_t jl = j == 5 ? 10 : strlen(texts[j]);
        if (sc_embed_text(e, texts[j], jl, b) == SC_OK) {
            double cos = 0;
            for (uint32_t d = 0; d < dim; d++) {
                cos += (double)a[d] * b[d];
            }
            float r =
                sc_embed_rescore(e, texts[i], len, texts[j], jl, (float)cos);
            if (!(r >= -1.0f && r <= 1.0f)) {
                die("rescore out of bounds");
            }
            /* With a scope's counts, as the cache rescores. */
            float rd = sc_embed_rescore_df(e, df, texts[i], len, texts[j], jl,
                                           (float)cos);
            if (!(rd >= -1.0f && rd <= 1.0f)) {
                die("rescore with df out of bounds");
            }
        }
        if (df != NULL && sc_embed_df_count(df, e, texts[i], len, 1) != SC_OK) {
            die("df count failed");
        }
    }
    /* Counted out again, every count is back to zero. */
    for (size_t i = 0; df != NULL && i < nt; i++) {
        size_t len = i == 5 ? 10 : strlen(texts[i]);
        sc_embed_df_count(df, e, texts[i], len, -1);
    }
    if (sc_embed_df_docs(df) != 0) {
        die("df docs not back to zero");
    }
    sc_embed_df_free(df);
    free(a);
    free(b);
}

static void try_open(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz_embed_table", MFD_CLOEXEC);
    if (fd < 0) {
        die("memfd_create");
    }
    if (size > 0 && write(fd, data, size) != (ssize_t)size) {
        die("write");
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    sc_embed *e = NULL;
    sc_err rc = sc_embed_open(path, &e);
    if (rc == SC_OK) {
        use_table(e);
        sc_embed_close(e);
    } else if (e != NULL) {
        die("failed open touched *out");
    }
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    try_open(data, size);
    if (size < sizeof(sc_embed_header) || size > (4u << 20)) {
        return 0;
    }
    uint8_t *copy = malloc(size);
    if (copy == NULL) {
        die("malloc");
    }
    memcpy(copy, data, size);
    sc_embed_header h;
    memcpy(&h, copy, sizeof(h));
    memcpy(h.magic, SC_EMBED_MAGIC, 8);
    h.version = SC_EMBED_VERSION;
    h.endian = SC_EMBED_ENDIAN;
    h.header_size = (uint32_t)sizeof(h);
    h.file_size = size;
    h.checksum = 0;
    XXH3_state_t *st = XXH3_createState();
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, &h, sizeof(h));
    XXH3_64bits_update(st, copy + sizeof(h), size - sizeof(h));
    h.checksum = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    memcpy(copy, &h, sizeof(h));
    try_open(copy, size);
    free(copy);
    return 0;
}
