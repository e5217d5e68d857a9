/* mp.h - a bounded msgpack reader over untrusted bytes, and small writing
 * helpers over msgpack-c's packer.
 *
 * The reader never allocates: every length is checked against the bytes
 * left before it is used, so a message claiming a 4 GiB string or a map of
 * 2^32 entries costs nothing. msgpack-c's unpacker allocates what the
 * header claims, which is why requests are not decoded with it; replies and
 * requests are still written with its packer. */
#ifndef SC_MP_H
#define SC_MP_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MP_MAX_DEPTH 16 /* nesting a skipped value may have */

typedef struct mp_reader {
    const uint8_t *p;
    const uint8_t *end;
} mp_reader;

typedef enum mp_type {
    MP_NIL,
    MP_BOOL,
    MP_UINT,
    MP_INT, /* negative */
    MP_FLOAT,
    MP_STR,
    MP_BIN,
    MP_ARRAY,
    MP_MAP,
    MP_EXT,
    MP_INVALID /* no bytes left, or the reserved byte 0xc1 */
} mp_type;

void mp_reader_init(mp_reader *r, const void *buf, size_t len);

/* The type of the next value, without consuming it. */
mp_type mp_peek(const mp_reader *r);

/* Each reader consumes one value of its type and returns 0, or returns -1
 * and consumes nothing when the next value is of another type or runs past
 * the end. Pointers returned point into the buffer (borrowed). */
int mp_read_nil(mp_reader *r);
int mp_read_bool(mp_reader *r, bool *v);
int mp_read_uint(mp_reader *r, uint64_t *v); /* any non-negative integer */
int mp_read_int(mp_reader *r, int64_t *v);   /* any integer in int64 */
int mp_read_number(mp_reader *r, double *v); /* float or integer */
int mp_read_str(mp_reader *r, const char **s, uint32_t *len);
int mp_read_bin(mp_reader *r, const uint8_t **b, uint32_t *len);
int mp_read_bytes(mp_reader *r, const uint8_t **b, uint32_t *len); /* str|bin */
/* Container headers: *n is checked against the bytes left (each element
 * takes at least one byte, each map entry two), never trusted alone. */
int mp_read_array(mp_reader *r, uint32_t *n);
int mp_read_map(mp_reader *r, uint32_t *n);

/* Skips one value of any type, nested at most MP_MAX_DEPTH deep. */
int mp_skip(mp_reader *r);
/* Skips one batch item: a map (or any value) whose field values may each
 * be nested as deep as mp_skip allows a request's field value, so a field
 * is taken or refused for its depth alike in a batch item and alone. */
int mp_skip_item(mp_reader *r);
/* Skips one value nested to any depth, without recursion: for reading
 * past a value that a request is refused for, not for taking one. */
int mp_skip_any(mp_reader *r);

/* Copies a str value into out (cap bytes incl. the NUL). Returns 0, -1 on
 * a type or bounds error, -2 when the string is longer than cap - 1 or
 * holds a NUL byte. */
int mp_read_cstr(mp_reader *r, char *out, size_t cap);

/* Writing: thin helpers over msgpack_packer. */
void mp_put_str(msgpack_packer *pk, const char *s);
void mp_put_strn(msgpack_packer *pk, const char *s, size_t n);
void mp_put_bin(msgpack_packer *pk, const void *b, size_t n);
void mp_put_key(msgpack_packer *pk, const char *key); /* same as put_str */

/* Vectors travel as bin of little-endian float32. */
void mp_put_vec(msgpack_packer *pk, const float *v, size_t n);
/* Decodes such a bin (len bytes, len % 4 == 0) into out (len / 4 floats). */
void mp_get_vec(const uint8_t *b, size_t len, float *out);

#endif
