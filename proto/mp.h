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

/* A message being packed: msgpack-c's sbuffer and a packer writing into
 * it, and whether a write failed (no memory). msgpack_sbuffer_write keeps
 * what it had when it cannot grow, and a later smaller write may then
 * succeed, so a message missing bytes in its middle would look whole (a
 * response's bytes gone, the fields after them read in its place). The
 * first failure is kept and every later write refused: what mp_buf_take
 * hands out is the whole message. Every request and reply is packed in
 * one. */
typedef struct mp_buf {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    bool failed;
} mp_buf;

/* b must stay where it is until mp_buf_take or mp_buf_fini: its packer
 * points at it. */
void mp_buf_init(mp_buf *b);
/* Empties b for the next message; a failure stays (b's messages are parts
 * of one whole, which a failure in any spoils). */
void mp_buf_clear(mp_buf *b);
/* The packed message into *out (malloc'd, the caller frees) and *len;
 * returns 0. Returns -1, b freed and *out untouched, when a write failed
 * or nothing was written. */
int mp_buf_take(mp_buf *b, uint8_t **out, size_t *len);
void mp_buf_fini(mp_buf *b);
/* Appends part's message, a value packed aside, to pk's as it is; pk must
 * be an mp_buf's packer. A part whose packing failed fails pk's message. */
void mp_put_part(msgpack_packer *pk, const mp_buf *part);

/* For tests: fail(arg, len) is asked before each write of len bytes into
 * an mp_buf; true fails it as msgpack_sbuffer_write's out of memory would
 * (NULL: none). */
void mp_set_alloc_hook(bool (*fail)(void *arg, size_t len), void *arg);

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
