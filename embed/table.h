/* table.h - the on-disk layout of the embedder's word table (private to
 * embed/: the builder writes it, sc_embed_open maps and validates it).
 *
 * One little-endian file: a fixed header, then sections, each starting on an
 * 8-byte boundary, in this order: buckets, string offsets, strings, vectors,
 * probabilities, components. Every count, offset and size in the header is
 * checked against the file before anything is read through it. */
#ifndef SC_EMBED_TABLE_H
#define SC_EMBED_TABLE_H

#include <stdint.h>

#define SC_EMBED_MAGIC        "SCEMBTAB" /* 8 bytes, no NUL */
#define SC_EMBED_VERSION      1u
#define SC_EMBED_ENDIAN       0x01020304u
#define SC_EMBED_MAX_WORDS    (1u << 24) /* 16M words */
#define SC_EMBED_MAX_DIM      1024u
#define SC_EMBED_MAX_WORD_LEN 255u /* bytes per vocabulary word */
#define SC_EMBED_MAX_COMP     8u   /* stored common components */
#define SC_EMBED_VEC_F32      0u

typedef struct sc_embed_header {
    char magic[8];         /* SC_EMBED_MAGIC */
    uint32_t version;      /* SC_EMBED_VERSION */
    uint32_t endian;       /* SC_EMBED_ENDIAN as written by the builder */
    uint32_t header_size;  /* sizeof(sc_embed_header) */
    uint32_t dim;          /* 1..SC_EMBED_MAX_DIM */
    uint32_t nwords;       /* 1..SC_EMBED_MAX_WORDS; word i has rank i */
    uint32_t nbuckets;     /* power of two, >= 2 * nwords */
    uint32_t vec_type;     /* SC_EMBED_VEC_F32 */
    uint32_t ncomp;        /* 0..SC_EMBED_MAX_COMP */
    uint64_t file_size;    /* the whole file */
    uint64_t buckets_off;  /* nbuckets u64: (hash >> 32) << 32 | (index + 1),
                              0 = empty; linear probing from hash & mask */
    uint64_t stroff_off;   /* nwords + 1 u32, non-decreasing, into strings */
    uint64_t strings_off;  /* strings_size bytes, words back to back */
    uint64_t strings_size; /* == the last string offset */
    uint64_t vectors_off;  /* nwords * dim f32, word i at i * dim */
    uint64_t probs_off;    /* nwords f32: unigram probability of word i */
    uint64_t comp_off;     /* ncomp * dim f32: unit common components */
    char source[64];       /* NUL-terminated: where the vectors came from */
    uint64_t checksum;     /* XXH3_64bits of the file with this field 0 */
} sc_embed_header;

/* Where a section starts, rounded up to 8 bytes. */
#define SC_EMBED_ALIGN(x) (((x) + 7u) & ~(uint64_t)7u)

#endif
