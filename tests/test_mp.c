/* test_mp.c - the bounded msgpack reader of proto/mp.h against msgpack-c's
 * packer (every type and length form), against hostile bytes (truncation at
 * every offset, lengths beyond the buffer, depth beyond the cap, the
 * reserved byte, skipping past any depth), and vectors' little-endian round
 * trip. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "proto/mp.h"
#include "test_util.h"

static msgpack_sbuffer sb;
static msgpack_packer pk;

static void reset(void)
{
    msgpack_sbuffer_clear(&sb);
}

static mp_reader reader(void)
{
    mp_reader r;
    mp_reader_init(&r, sb.data, sb.size);
    return r;
}

static void test_integers(void)
{
    const int64_t vals[] = {0,      1,      127,         128,        255,
                            256,    65535,  65536,       4294967295, 4294967296,
                            -1,     -32,    -33,         -128,       -129,
                            -32768, -32769, -2147483648, INT64_MIN,  INT64_MAX};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        reset();
        msgpack_pack_int64(&pk, vals[i]);
        mp_reader r = reader();
        int64_t got;
        CHECK(mp_read_int(&r, &got) == 0 && got == vals[i]);
        CHECK(r.p == r.end);
        r = reader();
        uint64_t u;
        CHECK_EQ_INT(mp_read_uint(&r, &u) == 0, vals[i] >= 0);
        r = reader();
        double d;
        CHECK(mp_read_number(&r, &d) == 0 && d == (double)vals[i]);
    }
    reset();
    msgpack_pack_uint64(&pk, UINT64_MAX);
    mp_reader r = reader();
    uint64_t u;
    int64_t s;
    CHECK(mp_read_uint(&r, &u) == 0 && u == UINT64_MAX);
    r = reader();
    CHECK_EQ_INT(mp_read_int(&r, &s), -1);  /* does not fit int64 */
    CHECK(r.p == (const uint8_t *)sb.data); /* nothing consumed */
}

static void test_floats_and_others(void)
{
    reset();
    msgpack_pack_float(&pk, 0.25f);
    msgpack_pack_double(&pk, -1e300);
    msgpack_pack_nil(&pk);
    msgpack_pack_true(&pk);
    msgpack_pack_false(&pk);
    mp_reader r = reader();
    double d;
    bool b;
    CHECK(mp_read_number(&r, &d) == 0 && d == 0.25);
    CHECK(mp_read_number(&r, &d) == 0 && d == -1e300);
    CHECK_EQ_INT(mp_read_bool(&r, &b), -1); /* nil is not a bool */
    CHECK_EQ_INT(mp_read_nil(&r), 0);
    CHECK(mp_read_bool(&r, &b) == 0 && b);
    CHECK(mp_read_bool(&r, &b) == 0 && !b);
    CHECK(r.p == r.end);
    CHECK(mp_peek(&r) == MP_INVALID);
}

static void test_lengths(void)
{
    /* Every length form of str, bin, array and map. */
    const uint32_t lens[] = {0, 1, 31, 32, 255, 256, 65535, 65536};
    char *blob = malloc(70000);
    memset(blob, 'x', 70000);
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        uint32_t n = lens[i];
        reset();
        mp_put_strn(&pk, blob, n);
        mp_put_bin(&pk, blob, n);
        msgpack_pack_array(&pk, n);
        for (uint32_t j = 0; j < n; j++) {
            msgpack_pack_nil(&pk);
        }
        msgpack_pack_map(&pk, n);
        for (uint32_t j = 0; j < n; j++) {
            msgpack_pack_nil(&pk);
            msgpack_pack_true(&pk);
        }
        mp_reader r = reader();
        const char *s;
        const uint8_t *bb;
        uint32_t got;
        CHECK(mp_read_str(&r, &s, &got) == 0 && got == n);
        CHECK(mp_read_bin(&r, &bb, &got) == 0 && got == n);
        mp_reader save = r;
        CHECK(mp_read_array(&r, &got) == 0 && got == n);
        r = save;
        CHECK_EQ_INT(mp_skip(&r), 0); /* the array */
        CHECK_EQ_INT(mp_skip(&r), 0); /* the map */
        CHECK(r.p == r.end);
    }
    free(blob);
}

/* Every prefix of a valid message fails to read as a whole, cleanly. */
static void test_truncation(void)
{
    reset();
    msgpack_pack_map(&pk, 3);
    mp_put_key(&pk, "a");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_double(&pk, 1.5);
    mp_put_str(&pk, "hello world, a longer string");
    mp_put_key(&pk, "b");
    float v[3] = {1, 2, 3};
    mp_put_vec(&pk, v, 3);
    mp_put_key(&pk, "c");
    msgpack_pack_int64(&pk, -123456789012LL);
    int bad = 0;
    for (size_t cut = 0; cut < sb.size; cut++) {
        mp_reader r;
        mp_reader_init(&r, sb.data, cut);
        bad += mp_skip(&r) == 0;
    }
    CHECK_EQ_INT(bad, 0);
    mp_reader r = reader();
    CHECK_EQ_INT(mp_skip(&r), 0);
    CHECK(r.p == r.end);
}

static void test_hostile(void)
{
    /* Declared lengths beyond the bytes present. */
    const uint8_t str32[] = {0xdb, 0xff, 0xff, 0xff, 0xff, 'a'};
    const uint8_t bin32[] = {0xc6, 0x80, 0x00, 0x00, 0x00, 0};
    const uint8_t arr32[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0};
    const uint8_t map32[] = {0xdf, 0x00, 0x00, 0x00, 0x02, 0xc0, 0xc0, 0xc0};
    const uint8_t ext32[] = {0xc9, 0xff, 0xff, 0xff, 0xff, 1, 0};
    const uint8_t reserved[] = {0xc1};
    const uint8_t *cases[] = {str32, bin32, arr32, map32, ext32, reserved};
    const size_t sizes[] = {sizeof(str32), sizeof(bin32), sizeof(arr32),
                            sizeof(map32), sizeof(ext32), sizeof(reserved)};
    for (int i = 0; i < 6; i++) {
        mp_reader r;
        mp_reader_init(&r, cases[i], sizes[i]);
        CHECK_EQ_INT(mp_skip(&r), -1);
        CHECK(r.p == cases[i]); /* nothing consumed on failure */
    }
    uint32_t n;
    mp_reader r;
    mp_reader_init(&r, arr32, sizeof(arr32));
    CHECK_EQ_INT(mp_read_array(&r, &n), -1);
    mp_reader_init(&r, map32, sizeof(map32));
    CHECK_EQ_INT(mp_read_map(&r, &n), -1); /* 2 entries need 4 bytes */

    /* Fixext and ext are skipped whole. */
    const uint8_t fixext[] = {0xd5, 7, 1, 2, 0xc3};
    mp_reader_init(&r, fixext, sizeof(fixext));
    CHECK_EQ_INT(mp_skip(&r), 0);
    CHECK(mp_peek(&r) == MP_BOOL);

    /* Depth: MP_MAX_DEPTH nested arrays pass, one more does not. */
    uint8_t deep[64];
    for (int depth = MP_MAX_DEPTH; depth <= MP_MAX_DEPTH + 1; depth++) {
        for (int i = 0; i < depth; i++) {
            deep[i] = 0x91;
        }
        deep[depth] = 0xc0;
        mp_reader_init(&r, deep, (size_t)depth + 1);
        CHECK_EQ_INT(mp_skip(&r), depth <= MP_MAX_DEPTH ? 0 : -1);
    }

    /* mp_skip_any: any depth, no recursion (a million levels pass), a
     * map's values too; a truncated or hostile value is refused with
     * nothing consumed. */
    size_t levels = 1000000;
    uint8_t *big = malloc(levels + 8);
    CHECK(big != NULL);
    memset(big, 0x91, levels);
    big[levels] = 0x81; /* {nil: true} at the bottom */
    big[levels + 1] = 0xc0;
    big[levels + 2] = 0xc3;
    big[levels + 3] = 0xc2; /* the next value */
    mp_reader_init(&r, big, levels + 4);
    CHECK_EQ_INT(mp_skip_any(&r), 0);
    CHECK(r.p == big + levels + 3);
    CHECK_EQ_INT(mp_skip(&r), 0);
    mp_reader_init(&r, big, levels + 2); /* the map's value cut off */
    CHECK_EQ_INT(mp_skip_any(&r), -1);
    CHECK(r.p == big);
    free(big);
    for (int i = 0; i < 6; i++) {
        mp_reader_init(&r, cases[i], sizes[i]);
        CHECK_EQ_INT(mp_skip_any(&r), -1);
        CHECK(r.p == cases[i]);
    }

    /* C strings: too long, or with a NUL inside, are refused. */
    char out[8];
    reset();
    mp_put_str(&pk, "12345678");
    r = reader();
    CHECK_EQ_INT(mp_read_cstr(&r, out, sizeof(out)), -2);
    reset();
    mp_put_strn(&pk, "ab\0cd", 5);
    r = reader();
    CHECK_EQ_INT(mp_read_cstr(&r, out, sizeof(out)), -2);
    reset();
    mp_put_str(&pk, "1234567");
    r = reader();
    CHECK(mp_read_cstr(&r, out, sizeof(out)) == 0 &&
          strcmp(out, "1234567") == 0);
}

static void test_vec(void)
{
    float v[5] = {1.0f, -2.5f, 3.25e-8f, INFINITY, 0.0f};
    reset();
    mp_put_vec(&pk, v, 5);
    mp_reader r = reader();
    const uint8_t *b;
    uint32_t n;
    CHECK(mp_read_bin(&r, &b, &n) == 0 && n == 20);
    /* Little-endian float32 on the wire, whatever the host. */
    CHECK(b[0] == 0x00 && b[1] == 0x00 && b[2] == 0x80 && b[3] == 0x3f);
    float back[5];
    mp_get_vec(b, n, back);
    CHECK(memcmp(back, v, sizeof(v)) == 0);
}

int main(void)
{
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    test_integers();
    test_floats_and_others();
    test_lengths();
    test_truncation();
    test_hostile();
    test_vec();
    msgpack_sbuffer_destroy(&sb);
    return test_summary("test_mp");
}
