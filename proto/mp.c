/* mp.c - bounded msgpack reading and writing helpers (see mp.h). */
#include "proto/mp.h"

#include <stdatomic.h>
#include <string.h>

#include "common/sc_hook.h"

void mp_reader_init(mp_reader *r, const void *buf, size_t len)
{
    r->p = buf;
    r->end = r->p + len;
}

static size_t left(const mp_reader *r)
{
    return (size_t)(r->end - r->p);
}

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

mp_type mp_peek(const mp_reader *r)
{
    if (left(r) == 0) {
        return MP_INVALID;
    }
    uint8_t b = r->p[0];
    if (b <= 0x7f || b == 0xcc || b == 0xcd || b == 0xce || b == 0xcf) {
        return MP_UINT;
    }
    if (b >= 0xe0 || (b >= 0xd0 && b <= 0xd3)) {
        return MP_INT;
    }
    if ((b & 0xf0) == 0x80 || b == 0xde || b == 0xdf) {
        return MP_MAP;
    }
    if ((b & 0xf0) == 0x90 || b == 0xdc || b == 0xdd) {
        return MP_ARRAY;
    }
    if ((b & 0xe0) == 0xa0 || (b >= 0xd9 && b <= 0xdb)) {
        return MP_STR;
    }
    switch (b) {
    case 0xc0:
        return MP_NIL;
    case 0xc2:
    case 0xc3:
        return MP_BOOL;
    case 0xc4:
    case 0xc5:
    case 0xc6:
        return MP_BIN;
    case 0xca:
    case 0xcb:
        return MP_FLOAT;
    case 0xc7:
    case 0xc8:
    case 0xc9:
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        return MP_EXT;
    default:
        return MP_INVALID;
    }
}

int mp_read_nil(mp_reader *r)
{
    if (left(r) < 1 || r->p[0] != 0xc0) {
        return -1;
    }
    r->p++;
    return 0;
}

int mp_read_bool(mp_reader *r, bool *v)
{
    if (left(r) < 1 || (r->p[0] != 0xc2 && r->p[0] != 0xc3)) {
        return -1;
    }
    *v = r->p[0] == 0xc3;
    r->p++;
    return 0;
}

/* Reads any integer into a sign flag and magnitude. */
static int read_integer(mp_reader *r, int *neg, uint64_t *mag)
{
    if (left(r) < 1) {
        return -1;
    }
    uint8_t b = r->p[0];
    int n;
    if (b <= 0x7f) {
        *neg = 0;
        *mag = b;
        r->p++;
        return 0;
    }
    if (b >= 0xe0) {
        *neg = 1;
        *mag = (uint64_t)(-(int64_t)(int8_t)b);
        r->p++;
        return 0;
    }
    switch (b) {
    case 0xcc:
    case 0xd0:
        n = 1;
        break;
    case 0xcd:
    case 0xd1:
        n = 2;
        break;
    case 0xce:
    case 0xd2:
        n = 4;
        break;
    case 0xcf:
    case 0xd3:
        n = 8;
        break;
    default:
        return -1;
    }
    if (left(r) < (size_t)n + 1) {
        return -1;
    }
    uint64_t raw = be(r->p + 1, n);
    if (b >= 0xd0) {
        /* Signed: sign-extend from n bytes. */
        int64_t s;
        if (n == 8) {
            memcpy(&s, &raw, sizeof(s));
        } else {
            uint64_t sign = 1ull << (8 * n - 1);
            s = (int64_t)((raw ^ sign) - sign);
        }
        *neg = s < 0;
        *mag = s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
    } else {
        *neg = 0;
        *mag = raw;
    }
    r->p += n + 1;
    return 0;
}

int mp_read_uint(mp_reader *r, uint64_t *v)
{
    mp_reader save = *r;
    int neg;
    uint64_t mag;
    if (read_integer(r, &neg, &mag) != 0 || (neg && mag != 0)) {
        *r = save;
        return -1;
    }
    *v = mag;
    return 0;
}

int mp_read_int(mp_reader *r, int64_t *v)
{
    mp_reader save = *r;
    int neg;
    uint64_t mag;
    if (read_integer(r, &neg, &mag) != 0) {
        *r = save;
        return -1;
    }
    if (neg) {
        if (mag > (uint64_t)INT64_MAX + 1) {
            *r = save;
            return -1;
        }
        *v = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        if (mag > (uint64_t)INT64_MAX) {
            *r = save;
            return -1;
        }
        *v = (int64_t)mag;
    }
    return 0;
}

int mp_read_number(mp_reader *r, double *v)
{
    if (left(r) >= 5 && r->p[0] == 0xca) {
        uint32_t raw = (uint32_t)be(r->p + 1, 4);
        float f;
        memcpy(&f, &raw, sizeof(f));
        *v = f;
        r->p += 5;
        return 0;
    }
    if (left(r) >= 9 && r->p[0] == 0xcb) {
        uint64_t raw = be(r->p + 1, 8);
        memcpy(v, &raw, sizeof(*v));
        r->p += 9;
        return 0;
    }
    mp_reader save = *r;
    int neg;
    uint64_t mag;
    if (read_integer(r, &neg, &mag) != 0) {
        *r = save;
        return -1;
    }
    *v = neg ? -(double)mag : (double)mag;
    return 0;
}

/* Reads a length-prefixed header: fix (mask), 8-, 16- or 32-bit forms. */
static int read_len(mp_reader *r, uint8_t fixbase, uint8_t fixmask, uint8_t b8,
                    uint8_t b16, uint8_t b32, uint32_t *len)
{
    if (left(r) < 1) {
        return -1;
    }
    uint8_t b = r->p[0];
    if (fixmask != 0 && (b & (uint8_t)~fixmask) == fixbase) {
        *len = b & fixmask;
        r->p++;
        return 0;
    }
    int n = b == b8 && b8 ? 1 : b == b16 ? 2 : b == b32 ? 4 : 0;
    if (n == 0 || left(r) < (size_t)n + 1) {
        return -1;
    }
    *len = (uint32_t)be(r->p + 1, n);
    r->p += n + 1;
    return 0;
}

static int read_blob(mp_reader *r, int str, const uint8_t **b, uint32_t *len)
{
    mp_reader save = *r;
    int rc = str ? read_len(r, 0xa0, 0x1f, 0xd9, 0xda, 0xdb, len)
                 : read_len(r, 0, 0, 0xc4, 0xc5, 0xc6, len);
    if (rc != 0 || *len > left(r)) {
        *r = save;
        return -1;
    }
    *b = r->p;
    r->p += *len;
    return 0;
}

int mp_read_str(mp_reader *r, const char **s, uint32_t *len)
{
    return read_blob(r, 1, (const uint8_t **)s, len);
}

int mp_read_bin(mp_reader *r, const uint8_t **b, uint32_t *len)
{
    return read_blob(r, 0, b, len);
}

int mp_read_bytes(mp_reader *r, const uint8_t **b, uint32_t *len)
{
    if (read_blob(r, 1, b, len) == 0) {
        return 0;
    }
    return read_blob(r, 0, b, len);
}

int mp_read_array(mp_reader *r, uint32_t *n)
{
    mp_reader save = *r;
    if (read_len(r, 0x90, 0x0f, 0, 0xdc, 0xdd, n) != 0 || *n > left(r)) {
        *r = save;
        return -1;
    }
    return 0;
}

int mp_read_map(mp_reader *r, uint32_t *n)
{
    mp_reader save = *r;
    if (read_len(r, 0x80, 0x0f, 0, 0xde, 0xdf, n) != 0 ||
        (uint64_t)*n * 2 > left(r)) {
        *r = save;
        return -1;
    }
    return 0;
}

static int skip(mp_reader *r, int depth)
{
    if (depth > MP_MAX_DEPTH) {
        return -1;
    }
    uint32_t n;
    const uint8_t *b;
    switch (mp_peek(r)) {
    case MP_NIL:
        return mp_read_nil(r);
    case MP_BOOL: {
        bool v;
        return mp_read_bool(r, &v);
    }
    case MP_UINT:
    case MP_INT:
    case MP_FLOAT: {
        double v;
        return mp_read_number(r, &v);
    }
    case MP_STR:
    case MP_BIN:
        return mp_read_bytes(r, &b, &n);
    case MP_ARRAY:
        if (mp_read_array(r, &n) != 0) {
            return -1;
        }
        for (uint32_t i = 0; i < n; i++) {
            if (skip(r, depth + 1) != 0) {
                return -1;
            }
        }
        return 0;
    case MP_MAP:
        if (mp_read_map(r, &n) != 0) {
            return -1;
        }
        for (uint32_t i = 0; i < 2 * n; i++) {
            if (skip(r, depth + 1) != 0) {
                return -1;
            }
        }
        return 0;
    case MP_EXT: {
        uint8_t t = r->p[0];
        size_t fixed = t == 0xd4   ? 1
                       : t == 0xd5 ? 2
                       : t == 0xd6 ? 4
                       : t == 0xd7 ? 8
                       : t == 0xd8 ? 16
                                   : 0;
        if (fixed) {
            if (left(r) < fixed + 2) {
                return -1;
            }
            r->p += fixed + 2;
            return 0;
        }
        int nb = t == 0xc7 ? 1 : t == 0xc8 ? 2 : 4;
        if (left(r) < (size_t)nb + 2) {
            return -1;
        }
        uint64_t len = be(r->p + 1, nb);
        if (len > left(r) - (size_t)nb - 2) {
            return -1;
        }
        r->p += nb + 2 + len;
        return 0;
    }
    case MP_INVALID:
    default:
        return -1;
    }
}

static int skip_from(mp_reader *r, int depth)
{
    mp_reader save = *r;
    if (skip(r, depth) != 0) {
        *r = save;
        return -1;
    }
    return 0;
}

int mp_skip(mp_reader *r)
{
    return skip_from(r, 0);
}

int mp_skip_item(mp_reader *r)
{
    return skip_from(r, -1); /* the item's map: its values at depth 0 */
}

int mp_skip_any(mp_reader *r)
{
    mp_reader save = *r;
    /* Values still to pass: a container's header adds its own, so no
     * recursion and no depth; each takes a byte at least, so the count is
     * bounded by the bytes left and cannot overflow. */
    uint64_t todo = 1;
    while (todo > 0) {
        todo--;
        uint32_t n;
        int rc;
        switch (mp_peek(r)) {
        case MP_ARRAY:
            rc = mp_read_array(r, &n);
            todo += n;
            break;
        case MP_MAP:
            rc = mp_read_map(r, &n);
            todo += 2 * (uint64_t)n;
            break;
        default:
            rc = skip(r, 0); /* a scalar */
            break;
        }
        if (rc != 0 || todo > left(r)) {
            *r = save;
            return -1;
        }
    }
    return 0;
}

int mp_read_cstr(mp_reader *r, char *out, size_t cap)
{
    mp_reader save = *r;
    const char *s;
    uint32_t n;
    if (mp_read_str(r, &s, &n) != 0) {
        return -1;
    }
    if ((size_t)n + 1 > cap || memchr(s, 0, n) != NULL) {
        *r = save;
        return -2;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

static SC_HOOK(bool, (void *, size_t)) alloc_hook;

void mp_set_alloc_hook(bool (*fail)(void *arg, size_t len), void *arg)
{
    SC_HOOK_SET(alloc_hook, fail, arg);
}

static int buf_write(void *data, const char *p, size_t len)
{
    mp_buf *b = data;
    bool (*fail)(void *, size_t) = atomic_load(&alloc_hook.fn);
    if (!b->failed && fail != NULL && fail(atomic_load(&alloc_hook.arg), len)) {
        b->failed = true;
    }
    if (b->failed || msgpack_sbuffer_write(&b->sb, p, len) != 0) {
        b->failed = true;
        return -1;
    }
    return 0;
}

void mp_buf_init(mp_buf *b)
{
    msgpack_sbuffer_init(&b->sb);
    b->failed = false;
    msgpack_packer_init(&b->pk, b, buf_write);
}

void mp_buf_clear(mp_buf *b)
{
    b->sb.size = 0;
}

int mp_buf_take(mp_buf *b, uint8_t **out, size_t *len)
{
    if (b->failed || b->sb.data == NULL) {
        mp_buf_fini(b);
        return -1;
    }
    *out = (uint8_t *)b->sb.data;
    *len = b->sb.size;
    return 0;
}

void mp_buf_fini(mp_buf *b)
{
    msgpack_sbuffer_destroy(&b->sb);
    msgpack_sbuffer_init(&b->sb);
}

void mp_put_part(msgpack_packer *pk, const mp_buf *part)
{
    if (part->failed) {
        ((mp_buf *)pk->data)->failed = true;
    } else if (part->sb.size > 0) {
        msgpack_pack_str_body(pk, part->sb.data, part->sb.size);
    }
}

void mp_put_strn(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void mp_put_str(msgpack_packer *pk, const char *s)
{
    mp_put_strn(pk, s, strlen(s));
}

void mp_put_key(msgpack_packer *pk, const char *key)
{
    mp_put_str(pk, key);
}

void mp_put_bin(msgpack_packer *pk, const void *b, size_t n)
{
    msgpack_pack_bin(pk, n);
    msgpack_pack_bin_body(pk, b, n);
}

void mp_put_vec(msgpack_packer *pk, const float *v, size_t n)
{
    uint8_t tmp[4096 * 4];
    msgpack_pack_bin(pk, n * 4);
    size_t done = 0;
    while (done < n) {
        size_t chunk = n - done < 4096 ? n - done : 4096;
        for (size_t i = 0; i < chunk; i++) {
            uint32_t u;
            memcpy(&u, &v[done + i], 4);
            tmp[4 * i] = (uint8_t)u;
            tmp[4 * i + 1] = (uint8_t)(u >> 8);
            tmp[4 * i + 2] = (uint8_t)(u >> 16);
            tmp[4 * i + 3] = (uint8_t)(u >> 24);
        }
        msgpack_pack_bin_body(pk, tmp, chunk * 4);
        done += chunk;
    }
}

void mp_get_vec(const uint8_t *b, size_t len, float *out)
{
    for (size_t i = 0; i < len / 4; i++) {
        uint32_t u = (uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 |
                     (uint32_t)b[4 * i + 2] << 16 |
                     (uint32_t)b[4 * i + 3] << 24;
        memcpy(&out[i], &u, 4);
    }
}
