/* fuzz_mp.c - libFuzzer target over the bounded msgpack reader: the input
 * is walked with mp_skip (and mp_skip_any, which must agree with it), and
 * with every mp_read_* chosen by its bytes.
 * Every pointer a reader returns must lie inside the input, a failed read
 * must consume nothing, and a read must never move backwards. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/mp.h"

static const uint8_t *lo, *hi;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_mp: %s\n", what);
    abort();
}

static void inside(const void *p, uint32_t n)
{
    const uint8_t *b = p;
    if (n > 0 && (b < lo || b > hi || (size_t)(hi - b) < n)) {
        die("a returned span lies outside the input");
    }
}

/* One read of kind k; returns its result, checking the contract. */
static int read_one(mp_reader *r, unsigned k)
{
    const uint8_t *before = r->p;
    int rc = -1;
    const char *s;
    const uint8_t *b;
    uint32_t n;
    uint64_t u;
    int64_t i;
    double d;
    bool bo;
    char buf[32];
    switch (k % 13) {
    case 0: rc = mp_read_nil(r); break;
    case 1: rc = mp_read_bool(r, &bo); break;
    case 2: rc = mp_read_uint(r, &u); break;
    case 3: rc = mp_read_int(r, &i); break;
    case 4: rc = mp_read_number(r, &d); break;
    case 5:
        rc = mp_read_str(r, &s, &n);
        if (rc == 0) {
            inside(s, n);
        }
        break;
    case 6:
        rc = mp_read_bin(r, &b, &n);
        if (rc == 0) {
            inside(b, n);
        }
        break;
    case 7:
        rc = mp_read_bytes(r, &b, &n);
        if (rc == 0) {
            inside(b, n);
            if (n % 4 == 0 && n <= 4096) {
                float v[1024];
                mp_get_vec(b, n, v);
            }
        }
        break;
    case 8:
        rc = mp_read_array(r, &n);
        if (rc == 0 && (size_t)(r->end - r->p) < n) {
            die("array claims more elements than bytes left");
        }
        break;
    case 9:
        rc = mp_read_map(r, &n);
        if (rc == 0 && (size_t)(r->end - r->p) / 2 < n) {
            die("map claims more entries than bytes left");
        }
        break;
    case 10: rc = mp_read_cstr(r, buf, sizeof(buf)); break;
    case 11:
        (void)mp_peek(r);
        rc = mp_skip(r);
        break;
    default: {
        mp_type t = mp_peek(r);
        if (t == MP_INVALID && r->p < r->end && *r->p != 0xc1) {
            die("peek says invalid for a valid lead byte");
        }
        rc = mp_skip(r);
        break;
    }
    }
    if (r->p < before || r->p > r->end) {
        die("reader moved outside the buffer");
    }
    if (rc != 0 && r->p != before) {
        die("a failed read consumed bytes");
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lo = data;
    hi = data + size;
    /* Pass 1: skip values until the end or an error. */
    mp_reader r;
    mp_reader_init(&r, data, size);
    while (r.p < r.end && mp_skip(&r) == 0) {
    }
    /* Pass 1b: mp_skip_any takes every value mp_skip takes, ending at the
     * same byte, and consumes nothing when it fails. */
    mp_reader a;
    mp_reader_init(&r, data, size);
    mp_reader_init(&a, data, size);
    while (r.p < r.end) {
        const uint8_t *at = a.p;
        int any = mp_skip_any(&a);
        if (any != 0 && a.p != at) {
            abort();
        }
        if (mp_skip(&r) != 0) {
            break;
        }
        if (any != 0 || a.p != r.p) {
            abort();
        }
    }
    /* Pass 2: the first byte picks a stride through the read kinds; on a
     * failure skip one value (or stop). */
    if (size == 0) {
        return 0;
    }
    unsigned k = data[0];
    mp_reader_init(&r, data + 1, size - 1);
    for (int steps = 0; r.p < r.end && steps < 4096; steps++) {
        if (read_one(&r, k) != 0 && mp_skip(&r) != 0) {
            break;
        }
        k = k * 7 + 3;
    }
    /* Writing what we read back: pack and re-read a str and a bin. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    size_t half = size / 2;
    mp_put_strn(&pk, (const char *)data, half);
    mp_put_bin(&pk, data + half, size - half);
    mp_reader_init(&r, sb.data, sb.size);
    const char *s;
    const uint8_t *b;
    uint32_t n1, n2;
    if (mp_read_str(&r, &s, &n1) != 0 || n1 != half ||
        memcmp(s, data, half) != 0 || mp_read_bin(&r, &b, &n2) != 0 ||
        n2 != size - half || memcmp(b, data + half, n2) != 0 ||
        r.p != r.end) {
        die("what was packed does not read back");
    }
    msgpack_sbuffer_destroy(&sb);
    return 0;
}
