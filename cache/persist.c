/* persist.c - the log, the snapshots, loading and compaction (persist.h).
 *
 * A file is a 24-byte header (6 bytes of magic, a 16-bit format version,
 * the 64-bit generation, a random 64-bit nonce) and then records. A record
 * is
 *     u32 size, u32 check, size bytes: a type byte, then its fields
 * with the check XXH32 of those size bytes XOR the file's key (XXH32 of
 * its header), so that a record verifies only in the file it was written
 * to. Numbers are little-endian; a string or byte run is a u32 length and
 * its bytes. */
#define _GNU_SOURCE
#include "cache/persist.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/sc_hook.h"
#include "common/sc_plural.h"
#include "common/sc_vec.h"

#define HDR_SIZE      24u
#define HDR_SIZE_V2   16u /* versions 1 and 2: no nonce */
#define FRAME_SIZE    8u
/* Version 3: the header holds a random nonce, and every record's check is
 * bound to its file by the header's key (rec_end), so that the bytes of
 * another file (an older log or snapshot whose blocks power loss exposed
 * at the end of this one, a copy) never read as valid records here.
 * Version 2: a snapshot's end record also holds the next entry id (so
 * that ids of entries gone before it are not given out again). Versions 1
 * and 2 (key 0: the plain XXH32) are read as before; a last log of one is
 * not appended to: the changes after a start go to a new log of this
 * version (before 2026-12-06 it was, until the next compaction). */
#define VERSION       3u
#define VERSION_MIN   1u
#define CHECK_SEED    0x53434c47u /* "SCLG" */
#define LOG_MAGIC     "SCLOG"     /* and a NUL: 6 bytes */
#define SNAP_MAGIC    "SCSNP"
/* The largest record: a response at its limit, text at its limit, the
 * largest vector, and the strings around them. */
#define RECORD_MAX                                                             \
    ((uint64_t)SC_CACHE_RESPONSE_LIMIT + SC_CACHE_TEXT_MAX +                   \
     4ull * SC_INDEX_MAX_DIM + 65536u)
/* The largest record of any type but an entry (names, tags, settings). */
#define SMALL_RECORD_MAX 65536u
#define DIR_CAP  4000u /* the directory's path */
#define PATH_CAP 4096u /* a file's in it */

enum rec_type {
    REC_NS_PUT = 1,
    REC_NS_DROP = 2,
    REC_ENTRY = 3,
    REC_REMOVE = 4,
    REC_QUARANTINE = 5,
    REC_FLUSH = 6,
    REC_LEDGER_ROW = 7,
    REC_LEDGER_HOUR = 8,
    REC_SNAP_END = 9,
    REC_TRAINING = 10 /* snapshots: (ns, scope) trained as file .ivf.K */
};

/* ---- encoding -----------------------------------------------------------*/

typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
    int oom;
    uint32_t key; /* of the file its records go to (0: sealed later) */
} wbuf;

static SC_HOOK(bool, (void *, size_t)) alloc_hook;

void sc_persist_set_alloc_hook(bool (*fail)(void *arg, size_t more), void *arg)
{
    SC_HOOK_SET(alloc_hook, fail, arg);
}

static SC_HOOK(void, (void *, int)) append_hook;

void sc_persist_set_append_hook(void (*fn)(void *arg, int kind), void *arg)
{
    SC_HOOK_SET(append_hook, fn, arg);
}

static SC_HOOK(void, (void *)) making_hook;

void sc_persist_set_making_hook(void (*fn)(void *arg), void *arg)
{
    SC_HOOK_SET(making_hook, fn, arg);
}

static void appended_hook(int kind)
{
    void (*fn)(void *, int) = atomic_load(&append_hook.fn);
    if (fn != NULL) {
        fn(atomic_load(&append_hook.arg), kind);
    }
}

static void wb_reserve(wbuf *b, size_t more)
{
    if (b->oom) {
        return;
    }
    bool (*fail)(void *, size_t) = atomic_load(&alloc_hook.fn);
    if (fail != NULL && fail(atomic_load(&alloc_hook.arg), more)) {
        b->oom = 1;
        return;
    }
    if (SC_VEC_RESERVE(b->p, b->cap, b->len, more, 4096) != SC_OK) {
        b->oom = 1;
    }
}

static void wb_bytes(wbuf *b, const void *src, size_t n)
{
    wb_reserve(b, n);
    if (!b->oom && n > 0) {
        memcpy(b->p + b->len, src, n);
        b->len += n;
    }
}

static void wb_u8(wbuf *b, uint8_t v)
{
    wb_bytes(b, &v, 1);
}

static void wb_u32(wbuf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
                    (uint8_t)(v >> 24)};
    wb_bytes(b, x, 4);
}

static void wb_u64(wbuf *b, uint64_t v)
{
    wb_u32(b, (uint32_t)v);
    wb_u32(b, (uint32_t)(v >> 32));
}

static void wb_f32(wbuf *b, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    wb_u32(b, v);
}

static void wb_f64(wbuf *b, double d)
{
    uint64_t v;
    memcpy(&v, &d, 8);
    wb_u64(b, v);
}

static void wb_run(wbuf *b, const void *p, size_t n)
{
    wb_u32(b, (uint32_t)n);
    wb_bytes(b, p, n);
}

static void wb_str(wbuf *b, const char *s)
{
    s = s != NULL ? s : "";
    wb_run(b, s, strlen(s));
}

/* Starts a record; rec_end fills in its frame. Returns its start. */
static size_t rec_begin(wbuf *b, uint8_t type)
{
    size_t at = b->len;
    wb_u32(b, 0);
    wb_u32(b, 0);
    wb_u8(b, type);
    return at;
}

static void put_u32_at(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void rec_end(wbuf *b, size_t at)
{
    if (b->oom) {
        return;
    }
    size_t n = b->len - at - FRAME_SIZE;
    put_u32_at(b->p + at, (uint32_t)n);
    put_u32_at(b->p + at + 4,
               XXH32(b->p + at + FRAME_SIZE, n, CHECK_SEED) ^ b->key);
}

static uint32_t get_u32(const uint8_t *p);

/* Binds the whole records p[0..len) to a file of key: the log's records
 * are encoded before it is known which log they go to (a compaction may
 * begin the next one, or fail and go back, in between), so they are
 * sealed as they are written. */
static void seal(uint8_t *p, size_t len, uint32_t key)
{
    for (size_t o = 0; o + FRAME_SIZE <= len;
         o += FRAME_SIZE + get_u32(p + o)) {
        put_u32_at(p + o + 4, get_u32(p + o + 4) ^ key);
    }
}

static void enc_ns_cfg(wbuf *b, const sc_ns_config *c)
{
    wb_u32(b, c->dim);
    wb_u8(b, (uint8_t)c->storage);
    wb_str(b, c->backend);
    wb_u32(b, c->nlist);
    wb_u32(b, c->nprobe);
    wb_u32(b, c->train_min);
    wb_f32(b, c->threshold);
    wb_f32(b, c->margin);
    wb_u8(b, c->auto_threshold);
    wb_u8(b, c->auto_margin);
    wb_u8(b, (uint8_t)(int8_t)c->vote);
    wb_str(b, c->embed_model);
    wb_u64(b, c->ttl_ms);
    wb_u8(b, (uint8_t)c->ttl_mode);
    wb_u64(b, c->max_entries);
    wb_u64(b, c->max_bytes);
    wb_u64(b, c->max_response_bytes);
}

static void enc_ns_put(wbuf *b, const char *name, const sc_ns_config *cfg,
                       bool had_vector)
{
    size_t at = rec_begin(b, REC_NS_PUT);
    wb_str(b, name);
    wb_u8(b, had_vector);
    enc_ns_cfg(b, cfg);
    rec_end(b, at);
}

static void enc_entry(wbuf *b, const sc_cache_entry_info *e)
{
    size_t at = rec_begin(b, REC_ENTRY);
    wb_u64(b, e->id);
    wb_str(b, e->ns);
    wb_str(b, e->scope);
    wb_u8(b, e->text != NULL);
    wb_run(b, e->text, e->text != NULL ? e->text_len : 0);
    wb_str(b, e->embed_model);
    uint32_t dim = e->vec != NULL ? e->dim : 0;
    wb_u32(b, dim);
    for (uint32_t i = 0; i < dim; i++) {
        wb_f32(b, e->vec[i]);
    }
    wb_run(b, e->response, e->response_len);
    wb_str(b, e->model);
    wb_str(b, e->feature);
    wb_str(b, e->user);
    wb_u64(b, e->input_tokens);
    wb_u64(b, e->output_tokens);
    wb_u8(b, e->tokens_estimated);
    wb_u64(b, e->created_ms);
    wb_u64(b, e->ttl_ms);
    wb_u64(b, e->expires_ms);
    wb_u64(b, e->last_hit_ms);
    wb_u64(b, e->hit_count);
    wb_u8(b, e->quarantined);
    rec_end(b, at);
}

static void enc_id(wbuf *b, uint8_t type, uint64_t id)
{
    size_t at = rec_begin(b, type);
    wb_u64(b, id);
    rec_end(b, at);
}

static void enc_name(wbuf *b, uint8_t type, const char *name)
{
    size_t at = rec_begin(b, type);
    wb_str(b, name);
    rec_end(b, at);
}

/* The ledger's counts, field by field (the order is the format). */
#define COUNT_U64S(X)                                                          \
    X(lookups) X(exact_hits) X(semantic_hits) X(tokens_in_avoided)             \
    X(tokens_out_avoided) X(hits_estimated) X(hits_unpriced) X(inserts)        \
    X(inserts_unpriced) X(inserts_estimated) X(embed_tokens)                   \
    X(embed_unpriced) X(embed_estimated) X(false_hits)                         \
    X(false_hits_unpriced) X(first_ms) X(last_ms)
#define COUNT_F64S(X)                                                          \
    X(usd_avoided) X(usd_inserted) X(embed_cpu_s) X(lookup_cpu_s) X(usd_embed) \
    X(usd_lookup) X(usd_false_hits)

static void enc_ledger(void *arg, const sc_ledger_row_state *row,
                       const sc_ledger_hour *hour)
{
    wbuf *b = arg;
    if (row != NULL) {
        size_t at = rec_begin(b, REC_LEDGER_ROW);
        wb_u8(b, (uint8_t)row->kind);
        wb_str(b, row->ns);
        wb_str(b, row->tag);
#define X(f) wb_u64(b, row->c.f);
        COUNT_U64S(X)
#undef X
#define X(f) wb_f64(b, row->c.f);
        COUNT_F64S(X)
#undef X
        rec_end(b, at);
    } else {
        size_t at = rec_begin(b, REC_LEDGER_HOUR);
        wb_u64(b, hour->hour_ms);
        wb_u64(b, hour->lookups);
        wb_u64(b, hour->hits);
        wb_f64(b, hour->usd_avoided);
        wb_f64(b, hour->usd_spent);
        rec_end(b, at);
    }
}

/* The key of a file of format version 3 from its header h[0..HDR_SIZE). */
static uint32_t hdr_key(const uint8_t *h)
{
    return XXH32(h, HDR_SIZE, CHECK_SEED);
}

/* 64 random bits: the kernel's, or where it has none to give (early at
 * boot, an old kernel) the clocks, the pid and a count, hashed. */
static uint64_t nonce64(void)
{
    uint64_t n;
    if (getrandom(&n, sizeof(n), GRND_NONBLOCK) == (ssize_t)sizeof(n)) {
        return n;
    }
    static atomic_uint_fast64_t count;
    struct timespec rt, mt;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mt);
    uint64_t mix[6] = {(uint64_t)rt.tv_sec, (uint64_t)rt.tv_nsec,
                       (uint64_t)mt.tv_sec, (uint64_t)mt.tv_nsec,
                       (uint64_t)getpid(),  atomic_fetch_add(&count, 1)};
    return XXH64(mix, sizeof(mix), CHECK_SEED);
}

/* A new file's header, with a nonce of its own; returns the file's key
 * (never 0, the key of versions 1 and 2, whose records would verify). */
static uint32_t enc_header(wbuf *b, const char *magic, uint64_t gen)
{
    uint8_t h[HDR_SIZE];
    uint32_t key = 0;
    memcpy(h, magic, 6); /* five letters and the NUL */
    h[6] = VERSION & 0xff;
    h[7] = VERSION >> 8;
    for (int i = 0; i < 8; i++) {
        h[8 + i] = (uint8_t)(gen >> (8 * i));
    }
    while (key == 0) {
        uint64_t nonce = nonce64();
        for (int i = 0; i < 8; i++) {
            h[16 + i] = (uint8_t)(nonce >> (8 * i));
        }
        key = hdr_key(h);
    }
    wb_bytes(b, h, HDR_SIZE);
    return key;
}

/* ---- decoding -----------------------------------------------------------*/

/* A record's body: len bytes by its size, of which the first have are in
 * the file (have < len only while a torn record is walked, torn_walk).
 * bad: a field was malformed or ran out; out: it ran out of bytes (the
 * file ended) within the record's size. */
typedef struct rbuf {
    const uint8_t *p;
    size_t len, at;
    int bad;
    size_t have;
    bool out;
} rbuf;

static const uint8_t *rb_take(rbuf *r, size_t n)
{
    if (r->bad || r->len - r->at < n) {
        r->bad = 1;
        return NULL;
    }
    if (r->have - r->at < n) {
        r->bad = 1;
        r->out = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->at;
    r->at += n;
    return p;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint8_t rb_u8(rbuf *r)
{
    const uint8_t *p = rb_take(r, 1);
    return p != NULL ? p[0] : 0;
}

static uint32_t rb_u32(rbuf *r)
{
    const uint8_t *p = rb_take(r, 4);
    return p != NULL ? get_u32(p) : 0;
}

static uint64_t rb_u64(rbuf *r)
{
    uint64_t lo = rb_u32(r);
    return lo | (uint64_t)rb_u32(r) << 32;
}

static float rb_f32(rbuf *r)
{
    uint32_t v = rb_u32(r);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

static double rb_f64(rbuf *r)
{
    uint64_t v = rb_u64(r);
    double d;
    memcpy(&d, &v, 8);
    return d;
}

/* A byte run of at most max bytes; *n its length. */
static const uint8_t *rb_run(rbuf *r, size_t max, size_t *n)
{
    uint32_t len = rb_u32(r);
    if (len > max) {
        r->bad = 1;
        return NULL;
    }
    *n = len;
    return rb_take(r, len);
}

/* A string of at most max bytes with no NUL, copied NUL-terminated into
 * out (room for max + 1). */
static void rb_str(rbuf *r, char *out, size_t max)
{
    size_t n = 0;
    const uint8_t *p = rb_run(r, max, &n);
    if (p == NULL || memchr(p, '\0', n) != NULL) {
        r->bad = 1;
        out[0] = '\0';
        return;
    }
    memcpy(out, p, n);
    out[n] = '\0';
}

static void dec_ns_cfg(rbuf *r, sc_ns_config *c)
{
    sc_cache_ns_config_init(c);
    c->dim = rb_u32(r);
    uint8_t st = rb_u8(r);
    if (st > SC_STORAGE_I8) {
        r->bad = 1;
    }
    c->storage = (sc_storage)st;
    rb_str(r, c->backend, sizeof(c->backend) - 1);
    c->nlist = rb_u32(r);
    c->nprobe = rb_u32(r);
    c->train_min = rb_u32(r);
    c->threshold = rb_f32(r);
    c->margin = rb_f32(r);
    c->auto_threshold = rb_u8(r) != 0;
    c->auto_margin = rb_u8(r) != 0;
    c->vote = (int8_t)rb_u8(r);
    rb_str(r, c->embed_model, SC_CACHE_TAG_MAX);
    c->ttl_ms = rb_u64(r);
    uint8_t mode = rb_u8(r);
    if (mode > SC_TTL_SLIDING) {
        r->bad = 1;
    }
    c->ttl_mode = (sc_ttl_mode)mode;
    c->max_entries = rb_u64(r);
    c->max_bytes = rb_u64(r);
    c->max_response_bytes = rb_u64(r);
}

/* The strings an entry record holds, decoded into room of their caps. */
typedef struct entry_strs {
    char ns[SC_CACHE_NS_NAME_MAX + 1];
    char scope[SC_CACHE_SCOPE_MAX + 1];
    char embed_model[SC_CACHE_TAG_MAX + 1];
    char model[SC_CACHE_TAG_MAX + 1];
    char feature[SC_CACHE_TAG_MAX + 1];
    char user[SC_CACHE_TAG_MAX + 1];
    float vec[SC_INDEX_MAX_DIM];
} entry_strs;

static void dec_entry(rbuf *r, entry_strs *s, sc_cache_entry_info *e)
{
    memset(e, 0, sizeof(*e));
    e->id = rb_u64(r);
    rb_str(r, s->ns, SC_CACHE_NS_NAME_MAX);
    rb_str(r, s->scope, SC_CACHE_SCOPE_MAX);
    bool has_text = rb_u8(r) != 0;
    size_t n = 0;
    const uint8_t *t = rb_run(r, SC_CACHE_TEXT_MAX, &n);
    e->text = has_text && t != NULL ? (const char *)t : NULL;
    e->text_len = has_text ? n : 0;
    rb_str(r, s->embed_model, SC_CACHE_TAG_MAX);
    e->dim = rb_u32(r);
    if (e->dim > SC_INDEX_MAX_DIM) {
        r->bad = 1;
        e->dim = 0;
    }
    for (uint32_t i = 0; i < e->dim; i++) {
        s->vec[i] = rb_f32(r);
    }
    e->vec = e->dim > 0 ? s->vec : NULL;
    const uint8_t *resp = rb_run(r, SC_CACHE_RESPONSE_LIMIT, &n);
    e->response = resp;
    e->response_len = resp != NULL ? n : 0;
    rb_str(r, s->model, SC_CACHE_TAG_MAX);
    rb_str(r, s->feature, SC_CACHE_TAG_MAX);
    rb_str(r, s->user, SC_CACHE_TAG_MAX);
    e->input_tokens = rb_u64(r);
    e->output_tokens = rb_u64(r);
    e->tokens_estimated = rb_u8(r) != 0;
    e->created_ms = rb_u64(r);
    e->ttl_ms = rb_u64(r);
    e->expires_ms = rb_u64(r);
    e->last_hit_ms = rb_u64(r);
    e->hit_count = rb_u64(r);
    e->quarantined = rb_u8(r) != 0;
    e->ns = s->ns;
    e->scope = s->scope;
    e->embed_model = s->embed_model;
    e->model = s->model;
    e->feature = s->feature;
    e->user = s->user;
}

static void dec_ns_put(rbuf *r, char *name, bool *had_vector, sc_ns_config *cfg)
{
    rb_str(r, name, SC_CACHE_NS_NAME_MAX);
    *had_vector = rb_u8(r) != 0;
    dec_ns_cfg(r, cfg);
}

/* A ledger row's tag: room for a tag and its kind's prefix. */
#define ROW_TAG_CAP (SC_CACHE_TAG_MAX + 16)

static void dec_ledger_row(rbuf *r, uint8_t *kind, char *name, char *tag,
                           sc_ledger_counts *cnt)
{
    memset(cnt, 0, sizeof(*cnt));
    *kind = rb_u8(r);
    rb_str(r, name, SC_CACHE_NS_NAME_MAX);
    rb_str(r, tag, ROW_TAG_CAP - 1);
#define X(f) cnt->f = rb_u64(r);
    COUNT_U64S(X)
#undef X
#define X(f) cnt->f = rb_f64(r);
    COUNT_F64S(X)
#undef X
}

static void dec_ledger_hour(rbuf *r, sc_ledger_hour *h)
{
    h->hour_ms = rb_u64(r);
    h->lookups = rb_u64(r);
    h->hits = rb_u64(r);
    h->usd_avoided = rb_f64(r);
    h->usd_spent = rb_f64(r);
}

/* ---- replay -------------------------------------------------------------*/

static void say(char *msg, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(char *msg, size_t cap, const char *fmt, ...)
{
    if (msg == NULL || cap == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, cap, fmt, ap);
    va_end(ap);
}

/* Whether a record's frame could start at off: a size within bounds for a
 * known type (only entries are large). A cheap test, so that the search
 * for the next record after a corrupt one hashes few offsets. */
static bool frame_plausible(const uint8_t *d, size_t len, size_t off)
{
    if (len - off < FRAME_SIZE + 1) {
        return false;
    }
    uint32_t n = get_u32(d + off);
    uint8_t type = d[off + FRAME_SIZE];
    if (n == 0 || n > RECORD_MAX || type < REC_NS_PUT || type > REC_TRAINING) {
        return false;
    }
    return type == REC_ENTRY || n <= SMALL_RECORD_MAX;
}

/* Whether a whole valid frame of a file of key starts at off. */
static bool frame_ok(const uint8_t *d, size_t len, size_t off, uint32_t key)
{
    if (!frame_plausible(d, len, off)) {
        return false;
    }
    uint32_t n = get_u32(d + off);
    if (len - off - FRAME_SIZE < n) {
        return false;
    }
    return (XXH32(d + off + FRAME_SIZE, n, CHECK_SEED) ^ key) ==
           get_u32(d + off + 4);
}

/* Bytes one search for the next record may hash: a response's bytes can
 * make many offsets look like big records (a hostile one, quadratic
 * work), so the search gives up past this (about 0.2 s). */
#define RESYNC_HASH_MAX (1ull << 30)

/* The next offset from `from` on where a valid frame starts, or len; or
 * SIZE_MAX when the search gave up (RESYNC_HASH_MAX) before finding one. */
static size_t next_valid(const uint8_t *d, size_t len, size_t from,
                         uint32_t key)
{
    uint64_t hashed = 0;
    for (size_t o = from; o + FRAME_SIZE <= len; o++) {
        if (!frame_plausible(d, len, o)) {
            continue;
        }
        uint32_t n = get_u32(d + o);
        if (len - o - FRAME_SIZE < n) {
            continue;
        }
        if ((hashed += n) > RESYNC_HASH_MAX) {
            return SIZE_MAX;
        }
        if (frame_ok(d, len, o, key)) {
            return o;
        }
    }
    return len;
}

/* How many ids a snapshot loaded without its end record (--repair) skips
 * above the highest it holds: the ids its server gave out to entries gone
 * before it, or lost with the damaged part, are not in the files any more.
 * Far more than one compaction's worth of inserts, and far from the end
 * of the id range (SC_CACHE_ID_LIMIT, 2^53) after many such repairs; where
 * a skip would pass it, new ids start at the end instead (none is given
 * out: inserts are full). */
#define IDS_LOST_GAP (1ull << 32)

typedef struct replay_ctx {
    sc_cache *c;
    sc_ledger *l;
    sc_persist_file kind;
    uint64_t now;
    const char *snap_path;
    sc_persist_load_stats *st;
    entry_strs strs;
    bool ended; /* a snapshot's end record was read */
    /* The next id of an end record refused for its entry count (--repair
     * skipped one of the snapshot's entries), 0 when none was read. Kept
     * only from a file of version 3 or later (a keyed check: a client
     * cannot forge a record that verifies) and from the file's last
     * record: one found elsewhere may lie inside a bad record's extent. */
    uint64_t end_next;
    /* An end record of the snapshot was read and refused (for its count,
     * its next id, or its fields), rather than missing (cut off, or lost
     * with a damaged part): said apart at start-up. */
    bool end_refused;
    bool at_end; /* the record being applied ends where the file does */
    /* A search (--repair, after a bad record) came before the record being
     * applied: it was not reached by stepping over records whose frames
     * checked (applied, or refused for their fields alone) from the
     * header, and in a file of version 1 or 2 (plain XXH32) may be a
     * client's bytes inside a bad record's extent. */
    bool searched;
    uint64_t snap_entries;
    unsigned version; /* the file's format version */
} replay_ctx;

/* Applies one record's body. Returns SC_OK, SC_EBADFILE (a field is out
 * of its bounds: corrupt although its checksum held), or SC_ENOMEM. A
 * record that no longer applies (its namespace went, its entry is gone)
 * counts as superseded: snapshots are taken while writes go on, so a log
 * may hold changes its snapshot holds already or that a later record
 * undid. */
static sc_err apply(replay_ctx *x, const uint8_t *body, size_t n)
{
    rbuf r = {body, n, 0, 0, n, false};
    uint8_t type = rb_u8(&r);
    sc_err rc = SC_OK;
    char name[SC_CACHE_NS_NAME_MAX + 1];
    if (x->ended) {
        return SC_EBADFILE; /* nothing may follow a snapshot's end */
    }
    if (x->version < 3 && x->searched) {
        /* A file of version 1 or 2 (the plain XXH32 holds over any bytes)
         * after --repair skipped a bad record: a record found by the
         * search, or by stepping from the bad one's claimed extent (its
         * size may be damaged and short, ending inside a response), or by
         * stepping over records found so, may be a client's bytes inside a
         * response, planted there (an entry with an id of 2^53 or more
         * makes every insert full from then on; a namespace drop, a flush
         * or a delete lose what they name). Nothing of it is applied: it
         * is a bad record, counted corrupt and said at start. An end
         * record so is refused, and the snapshot's next id is lost
         * (sc_persist_replay's end: the 2^32 skip). */
        x->end_refused = x->end_refused || (type == REC_SNAP_END &&
                                            x->kind == SC_PERSIST_SNAPSHOT);
        x->st->old_format_dropped++;
        return SC_EBADFILE;
    }
    switch (type) {
    case REC_NS_PUT: {
        sc_ns_config cfg;
        bool had_vector;
        dec_ns_put(&r, name, &had_vector, &cfg);
        if (r.bad || r.at != n) {
            return SC_EBADFILE;
        }
        rc = sc_cache_restore_ns(x->c, name, &cfg, had_vector);
        break;
    }
    case REC_NS_DROP:
    case REC_FLUSH:
        rb_str(&r, name, SC_CACHE_NS_NAME_MAX);
        if (r.bad || r.at != n || x->kind == SC_PERSIST_SNAPSHOT) {
            return SC_EBADFILE;
        }
        rc = type == REC_NS_DROP ? sc_cache_ns_drop(x->c, name)
                                 : sc_cache_flush(x->c, name);
        break;
    case REC_ENTRY: {
        sc_cache_entry_info e;
        dec_entry(&r, &x->strs, &e);
        /* Ids 0 and UINT64_MAX are never given out: a field out of its
         * bounds (a log's record too, not one superseded). */
        if (r.bad || r.at != n || e.id == 0 || e.id == UINT64_MAX) {
            return SC_EBADFILE;
        }
        /* A snapshot holds the index's vectors, a log the clients'. */
        e.vec_unit = x->kind == SC_PERSIST_SNAPSHOT;
        bool added = false;
        rc = sc_cache_restore_entry(x->c, &e, x->now, &added);
        if (rc == SC_OK) {
            x->snap_entries++;
            if (added) {
                x->st->entries_restored++;
            } else if (e.expires_ms != 0 && e.expires_ms <= x->now) {
                x->st->entries_expired++;
            }
        }
        break;
    }
    case REC_REMOVE:
    case REC_QUARANTINE: {
        uint64_t id = rb_u64(&r);
        if (r.bad || r.at != n || x->kind == SC_PERSIST_SNAPSHOT) {
            return SC_EBADFILE;
        }
        rc = type == REC_REMOVE ? sc_cache_delete(x->c, id)
                                : sc_cache_restore_quarantine(x->c, id);
        break;
    }
    case REC_LEDGER_ROW: {
        sc_ledger_counts cnt;
        char tag[ROW_TAG_CAP];
        uint8_t kind;
        dec_ledger_row(&r, &kind, name, tag, &cnt);
        if (r.bad || r.at != n) {
            return SC_EBADFILE;
        }
        if (x->l != NULL) {
            rc = sc_ledger_import_row(x->l, kind, name, tag, &cnt);
            rc = rc == SC_EINVAL ? SC_EBADFILE : rc;
        }
        return rc;
    }
    case REC_LEDGER_HOUR: {
        sc_ledger_hour h;
        dec_ledger_hour(&r, &h);
        if (r.bad || r.at != n) {
            return SC_EBADFILE;
        }
        if (x->l != NULL) {
            rc = sc_ledger_import_hour(x->l, &h);
            rc = rc == SC_EINVAL ? SC_EBADFILE : rc;
        }
        return rc;
    }
    case REC_TRAINING: {
        char sname[SC_CACHE_SCOPE_MAX + 1];
        rb_str(&r, name, SC_CACHE_NS_NAME_MAX);
        rb_str(&r, sname, SC_CACHE_SCOPE_MAX);
        uint64_t k = rb_u64(&r);
        if (r.bad || r.at != n || x->kind != SC_PERSIST_SNAPSHOT ||
            k > UINT32_MAX) {
            return SC_EBADFILE;
        }
        if (x->snap_path != NULL) {
            char path[PATH_CAP + 32];
            snprintf(path, sizeof(path), "%s.ivf.%llu", x->snap_path,
                     (unsigned long long)k);
            /* Not fatal: an index that cannot take its training trains
             * again, as it did the first time. */
            rc = sc_cache_restore_training(x->c, name, sname, path);
            if (rc == SC_ENOMEM) {
                return rc;
            }
            if (rc == SC_OK) {
                x->st->trainings++;
            } else {
                x->st->trainings_failed++;
            }
        }
        return SC_OK;
    }
    case REC_SNAP_END: {
        uint64_t entries = rb_u64(&r);
        uint64_t next_id = x->version >= 2 ? rb_u64(&r) : 0;
        /* A next id at or past SC_CACHE_ID_LIMIT (2^64 - 1: an older
         * build's, whose ids went on up to 2^64 - 2) is taken as any
         * other: no insert takes (full; said at start), in every version.
         * In a file of version 1 or 2 one reached after a search never
         * gets here (refused above, with every record past the damage). */
        if (r.bad || r.at != n || x->kind != SC_PERSIST_SNAPSHOT) {
            x->end_refused = x->kind == SC_PERSIST_SNAPSHOT;
            return SC_EBADFILE;
        }
        if (entries != x->snap_entries) {
            x->end_refused = true;
            /* An entry of the snapshot was skipped: refused. Where its
             * check is keyed (version 3: a client cannot plant one that
             * verifies) and it is the file's last record, it is this
             * snapshot's own end record, and its next id is still the
             * one the server would have given out, which --repair keeps
             * (sc_persist_replay's end). Else it may be a client's bytes
             * inside a bad record's extent (the plain XXH32 of versions 1
             * and 2 holds over any bytes), whose next id is not taken. */
            if (x->version >= 3 && x->at_end) {
                x->end_next = next_id > x->end_next ? next_id : x->end_next;
            }
            return SC_EBADFILE;
        }
        if (next_id > 0) {
            sc_cache_reserve_ids(x->c, next_id);
        }
        /* The cache's LRU order as the entries were last used, across
         * namespaces (the snapshot holds them namespace by namespace). */
        sc_cache_restore_lru(x->c);
        /* Version 1 gave the ids of entries expired while down out again,
         * so a logged insert at or below its highest id may be new. */
        if (x->version >= 2) {
            sc_cache_restore_snapshot_end(x->c);
        }
        x->ended = true;
        return SC_OK;
    }
    default:
        return SC_EBADFILE;
    }
    if (rc == SC_ENOMEM || rc == SC_ENOTSUP) {
        /* ENOTSUP: a namespace of an index backend this build lacks (one
         * with FAISS wrote it). Never superseded: in a log, taking it as
         * such would drop the namespace and every entry of it without a
         * word. */
        return rc;
    }
    if (rc != SC_OK) {
        if (x->kind == SC_PERSIST_SNAPSHOT) {
            /* A snapshot is one consistent-enough state: every record in
             * it must apply (an entry's namespace precedes it, ids are
             * unique). */
            return rc == SC_ENONS || rc == SC_ENOTFOUND || rc == SC_EDIM ||
                           rc == SC_EMODEL || rc == SC_EINVAL ||
                           rc == SC_ERANGE || rc == SC_ETOOBIG ||
                           rc == SC_ENONFINITE || rc == SC_EZEROVEC ||
                           rc == SC_ENSFULL || rc == SC_ESCOPEFULL ||
                           rc == SC_ENSEXIST
                       ? SC_EBADFILE
                       : rc;
        }
        x->st->superseded++;
    }
    return SC_OK;
}

/* How a torn_walk ended. */
typedef enum walk_end {
    WALK_OUT,   /* a field runs past the end of the file */
    WALK_WHOLE, /* the fields end inside the file (*end: where) */
    WALK_BAD    /* a field is malformed, or the type is none of a log's */
} walk_end;

/* Walks the fields of a log record whose size (n) runs past the end of
 * the file, over the `have` bytes of its body that are there, as apply()
 * reads them, applying nothing. The server writes every length field and
 * every fixed field; a client's bytes are only ever inside a run, which
 * the walk steps over by its length without reading it. So a record the
 * server wrote whole ends where its fields do, whatever a response
 * holds, and the walk runs out of bytes only where the file really ends
 * inside it. */
static walk_end torn_walk(replay_ctx *x, const uint8_t *body, size_t n,
                          size_t have, size_t *end)
{
    rbuf r = {body, n, 0, 0, have, false};
    char name[SC_CACHE_NS_NAME_MAX + 1];
    switch (rb_u8(&r)) {
    case REC_NS_PUT: {
        sc_ns_config cfg;
        bool had_vector;
        dec_ns_put(&r, name, &had_vector, &cfg);
        break;
    }
    case REC_NS_DROP:
    case REC_FLUSH:
        rb_str(&r, name, SC_CACHE_NS_NAME_MAX);
        break;
    case REC_ENTRY: {
        sc_cache_entry_info e;
        dec_entry(&r, &x->strs, &e);
        break;
    }
    case REC_REMOVE:
    case REC_QUARANTINE:
        (void)rb_u64(&r);
        break;
    case REC_LEDGER_ROW: {
        sc_ledger_counts cnt;
        char tag[ROW_TAG_CAP];
        uint8_t kind;
        dec_ledger_row(&r, &kind, name, tag, &cnt);
        break;
    }
    case REC_LEDGER_HOUR: {
        sc_ledger_hour h;
        dec_ledger_hour(&r, &h);
        break;
    }
    default:
        return WALK_BAD; /* a snapshot's record types, or none */
    }
    *end = r.at;
    return r.out ? WALK_OUT : r.bad ? WALK_BAD : WALK_WHOLE;
}

sc_err sc_persist_replay(sc_cache *c, sc_ledger *l, sc_persist_file kind,
                         const uint8_t *d, size_t len, bool last, bool repair,
                         uint64_t now_ms, const char *snap_path,
                         sc_persist_load_stats *st, size_t *valid_len,
                         char *msg, size_t cap)
{
    if (c == NULL || (d == NULL && len > 0) || st == NULL) {
        return SC_EINVAL;
    }
    const char *magic = kind == SC_PERSIST_SNAPSHOT ? SNAP_MAGIC : LOG_MAGIC;
    if (valid_len != NULL) {
        *valid_len = len;
    }
    bool magic_ok = len == 0 || memcmp(d, magic, len < 6 ? len : 6) == 0;
    unsigned version =
        len >= 8 ? (unsigned)d[6] | (unsigned)d[7] << 8 : VERSION;
    bool old_hdr =
        magic_ok && len >= HDR_SIZE_V2 && version >= VERSION_MIN && version < 3;
    bool zeros = len > 0 && d[0] == 0 && memcmp(d, d + 1, len - 1) == 0;
    if (kind == SC_PERSIST_LOG && last &&
        ((len < HDR_SIZE && !old_hdr) || zeros)) {
        /* The newest log, shorter than a header of this format and not a
         * whole header of version 1 or 2: a crash cut it while its header
         * was written (open_log writes the header before any record), and
         * what bytes it has may be zeros or garbage where the header's
         * never came, the version's too. No record fits in it, so cutting
         * it loses nothing; open_log writes the header again. So too one
         * of any length that is all zeros: a crash left the file extended
         * where its header never landed, and nothing in it can be read. */
        st->torn_bytes += len;
        if (valid_len != NULL) {
            *valid_len = 0;
        }
        return SC_OK;
    }
    if (magic_ok && (version < VERSION_MIN || version > VERSION)) {
        say(msg, cap, "format version %u, this build reads %u to %u", version,
            VERSION_MIN, VERSION);
        return SC_EBADVERSION;
    }
    size_t hdr = version < 3 ? HDR_SIZE_V2 : HDR_SIZE;
    if (len < hdr || !magic_ok) {
        say(msg, cap, "not a semcached %s (bad header)",
            kind == SC_PERSIST_SNAPSHOT ? "snapshot" : "log");
        return SC_EBADFILE;
    }
    replay_ctx *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        return SC_ENOMEM;
    }
    x->c = c;
    x->l = l;
    x->kind = kind;
    x->now = now_ms;
    x->snap_path = snap_path;
    x->st = st;
    x->version = version;
    /* Versions 1 and 2 checked records with the plain XXH32 (key 0). */
    const uint32_t key = version >= 3 ? hdr_key(d) : 0;
    sc_err rc = SC_OK;
    size_t off = hdr;
    /* Whether off was found by a search (--repair) rather than by stepping
     * over records whose frames checked from the header (a record refused
     * for its fields alone included: its checked size gives a true
     * boundary): then the frame at off may be a client's bytes, whose
     * fields are no evidence of a tear. */
    bool searched = false;
    while (off < len) {
        /* Whether the frame at off passed its check (its fields may still
         * be refused by apply). */
        bool framed = false;
        if (frame_ok(d, len, off, key)) {
            framed = true;
            uint32_t n = get_u32(d + off);
            x->at_end = len - off - FRAME_SIZE == n;
            x->searched = searched;
            rc = apply(x, d + off + FRAME_SIZE, n);
            if (rc == SC_ENOMEM) {
                break;
            }
            if (rc == SC_ENOTSUP && !repair) {
                say(msg, cap,
                    "record at byte %zu of %zu needs an index backend this "
                    "build lacks (ivf-flat, ivf-sq8: a build with FAISS "
                    "wrote it); start that build, or --repair to drop the "
                    "namespace and its entries",
                    off, len);
                break;
            }
            if (rc == SC_OK) {
                st->records++;
                off += FRAME_SIZE + n;
                continue;
            }
            /* A checksum that holds over fields that do not: corrupt all
             * the same (a bug's record, or a crafted file). */
        }
        /* The last log ending inside the extent of a record of plausible
         * size: its fields are walked as far as the file goes. A field
         * that runs past its end (torn_walk: a client cannot forge that)
         * is the record being written when the server stopped, and
         * whatever follows lies inside it (a response's bytes may read as
         * whole valid records). Fields that end where the file does are a
         * whole record whose size alone was damaged: refused, although
         * nothing follows it (a tear never ends them before its size:
         * the server writes the size they add up to). */
        walk_end w = WALK_BAD;
        size_t wend = 0;
        if (kind == SC_PERSIST_LOG && last && rc == SC_OK && !searched &&
            frame_plausible(d, len, off) &&
            len - off - FRAME_SIZE < get_u32(d + off)) {
            w = torn_walk(x, d + off + FRAME_SIZE, get_u32(d + off),
                          len - off - FRAME_SIZE, &wend);
        }
        bool damaged = w == WALK_WHOLE && wend == len - off - FRAME_SIZE;
        /* Else whether anything valid follows, searched from the next
         * byte: a damaged size must not hide the records after it. Not
         * needed for a record whose fields are refused under --repair
         * (never cut as torn; skipped below), as every record of a file of
         * version 1 or 2 after a search is (apply). */
        size_t any = w == WALK_OUT || (repair && rc == SC_EBADFILE)
                         ? len
                         : next_valid(d, len, off + 1, key);
        if (w == WALK_OUT || (any == len && kind == SC_PERSIST_LOG && last &&
                              rc == SC_OK && !damaged)) {
            /* Torn, or nothing valid follows: the record being written
             * when the server stopped. Cut it off. */
            st->torn_bytes += len - off;
            if (valid_len != NULL) {
                *valid_len = off;
            }
            break;
        }
        if (!repair) {
            say(msg, cap,
                "corrupt record at byte %zu of %zu (%s); %s; start with "
                "--repair to skip it and everything up to the next valid "
                "record after it",
                off, len,
                rc == SC_EBADFILE ? "fields out of bounds"
                                  : "checksum or size does not match",
                damaged           ? "its fields end with the file, before its "
                                    "size says (a damaged size)"
                : any == SIZE_MAX ? "what follows it could not be searched "
                                    "(too many record-like bytes)"
                : any < len       ? "valid records follow it"
                                  : "it is not the end of the last log");
            rc = rc == SC_EBADFILE ? SC_EBADFILE : SC_ECHECKSUM;
            break;
        }
        /* --repair: the next record is searched for after the bad one's
         * extent when its size is plausible, never inside it: responses
         * are written into the file as they came, so its body may hold
         * bytes that read as whole valid records (a client can put them
         * there: a planted "drop namespace" must not be applied). */
        size_t from = off + 1;
        if (frame_plausible(d, len, off)) {
            uint32_t n = get_u32(d + off);
            from = len - off - FRAME_SIZE < n ? len : off + FRAME_SIZE + n;
        }
        size_t next = from < len ? next_valid(d, len, from, key) : len;
        next = next == SIZE_MAX ? len : next;
        st->corrupt_records++;
        st->corrupt_bytes += next - off;
        /* A record whose frame passed its check, reached by stepping over
         * valid records from the header, and refused for its fields alone
         * (apply: SC_EBADFILE, e.g. an older build's ids; SC_ENOTSUP, a
         * namespace of a backend this build lacks): its own checked size
         * gives the next record's start, a true boundary, so a record
         * found exactly there was not searched for and is applied as any
         * (a version 1/2 file's later deletes and drops must not be lost:
         * deleted data would come back). Otherwise what follows was found
         * by a search, or by stepping from an unchecked size or from a
         * record itself found so: it may be a client's bytes. */
        searched = searched || !framed || next != from;
        rc = SC_OK;
        off = next;
    }
    if (rc == SC_OK && kind == SC_PERSIST_SNAPSHOT && !x->ended) {
        if (!repair) {
            say(msg, cap, "snapshot has no end record (truncated)");
            rc = SC_EBADFILE;
        } else {
            st->corrupt_records++;
            /* Ids must never be given out twice (PERSISTENCE.md). The end
             * record's next id covers the ids of entries gone before the
             * snapshot (deleted, expired, evicted); a refused one still
             * says it. Without it, the ids of the entries read are below
             * the next id already (sc_cache_restore_entry), but not those
             * of entries gone or lost in the damaged part: the next ids
             * skip IDS_LOST_GAP above them. Where that skip would pass the
             * end of the id range (SC_CACHE_ID_LIMIT), the next id is the
             * end, or above it for ids read past it (an older build's):
             * no insert takes from then on (SC_EFULL), so no id is given
             * out twice, and what was read is served all the same. */
            uint64_t next = x->end_next;
            st->ids_end_refused = x->end_refused;
            if (next == 0) {
                uint64_t top = sc_cache_next_id(c);
                if (top > SC_CACHE_ID_LIMIT - IDS_LOST_GAP) {
                    next = top > SC_CACHE_ID_LIMIT ? top : SC_CACHE_ID_LIMIT;
                    st->ids_range_end = true;
                } else {
                    next = top + IDS_LOST_GAP;
                }
                st->ids_skipped += next - top;
            }
            sc_cache_reserve_ids(c, next);
            /* What was read of it is in: the cache's LRU order across
             * namespaces by last use, as its end record would have made
             * it (the logs replayed next come after). */
            sc_cache_restore_lru(c);
            /* And its ids sealed, as its end record would have: a logged
             * insert at or below the highest id read of its namespace
             * that is not present is passed over (an entry gone before
             * the snapshot read the namespace, or one replaced by an
             * entry it holds). So is one that was in the damaged part,
             * which the log could have brought back: lost with it, as
             * one the log does not hold, rather than serve again an
             * answer replaced by a quarantined one. A namespace of which
             * nothing
             * was read is not sealed (its logged inserts all come
             * back, as after version 1). */
            if (x->version >= 2) {
                sc_cache_restore_snapshot_end(c);
            }
        }
    }
    free(x);
    return rc;
}

/* ---- the persister ------------------------------------------------------*/

struct sc_persist {
    sc_persist_config cfg;
    char dir[DIR_CAP];
    int dirfd, lockfd;
    sc_cache_journal journal;
    sc_cache *cache;
    sc_ledger *ledger;
    bool loaded;

    /* buf_mu: the records appended and not yet written. Innermost lock:
     * appends come with the cache's and the ledger's locks held. */
    pthread_mutex_t buf_mu;
    wbuf buf;
    uint64_t appended;
    /* ledger_mu: one export of ledger rows into the log at a time, held
     * until its run is appended and marked saved (flush_ledger), so that
     * runs come in the log in the order of their exports: an older run
     * appended after a newer one would be what a replay keeps. Taken
     * before the ledger's lock and buf_mu, and before the cache's locks:
     * a making takes it in j_make_begin, ahead of the cache's lock, for
     * its NS_PUT's ledger_base (under the cache's lock, a making that
     * waited out an export here made every lookup and insert wait too).
     * flush_ledger takes no cache lock. */
    pthread_mutex_t ledger_mu;
    atomic_int failed; /* errno of the write that failed, 0 = none */

    /* io_mu: the log file, and what of it is written and synced. */
    pthread_mutex_t io_mu;
    int fd;
    uint64_t gen;
    uint32_t key; /* the log's: its records are sealed with it */
    uint64_t written, synced, log_bytes, fsyncs;
    /* The records a commit may acknowledge: written, and with fsync
     * always synced too, before anything failed. */
    uint64_t confirmed;
    wbuf spare;

    /* One compaction at a time. The two counts are written under it and
     * read without it (stats, the thread's trigger). */
    pthread_mutex_t compact_mu;
    atomic_uint_fast64_t snapshot_bytes, compactions;
    atomic_bool cancel; /* sc_persist_cancel_compactions */
    /* Monotonic ms of the last once-a-second flush: a snapshot written by
     * the persister's own thread takes over the flushes meanwhile. */
    atomic_uint_fast64_t last_tick_ms;

    pthread_t thread;
    bool thread_on;
    pthread_mutex_t tick_mu;
    pthread_cond_t tick;
    bool stop;
};

static void plog(sc_persist *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void plog(sc_persist *p, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (p->cfg.log != NULL) {
        p->cfg.log(p->cfg.log_arg, line);
    } else {
        fprintf(stderr, "semcached: %s\n", line);
    }
}

bool sc_persist_fsync_parse(const char *s, sc_fsync *out)
{
    static const char *names[] = {"always", "everysec", "no"};
    for (int i = 0; i < 3; i++) {
        if (s != NULL && strcmp(s, names[i]) == 0) {
            *out = (sc_fsync)i;
            return true;
        }
    }
    return false;
}

const char *sc_persist_fsync_name(sc_fsync f)
{
    return f == SC_FSYNC_ALWAYS   ? "always"
           : f == SC_FSYNC_NO     ? "no"
                                  : "everysec";
}

/* The generation of a state file's name, prefix then a number as
 * file_path writes it (no sign, no leading zero): "log.01" or a copy named
 * so is not generation 1 a second time. */
static int name_gen(const char *name, const char *prefix, uint64_t *gen)
{
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) != 0 || name[pl] < '1' || name[pl] > '9') {
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long g = strtoull(name + pl, &end, 10);
    if (errno != 0 || *end != '\0' || g == 0) {
        return 0;
    }
    *gen = g;
    return 1;
}

static void file_path(const sc_persist *p, char *out, const char *kind,
                      uint64_t gen, const char *suffix)
{
    snprintf(out, PATH_CAP, "%s/%s.%llu%s", p->dir, kind,
             (unsigned long long)gen, suffix);
}

static sc_err write_all(int fd, const uint8_t *b, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return SC_EIO;
        }
        b += w;
        n -= (size_t)w;
    }
    return SC_OK;
}

static void fail(sc_persist *p, int err, const char *what)
{
    int zero = 0;
    if (atomic_compare_exchange_strong(&p->failed, &zero, err ? err : EIO)) {
        plog(p,
             "persistence failed (%s: %s): changes are refused from now on "
             "(restart once the disk is fixed)",
             what, strerror(err ? err : EIO));
    }
}

/* io_mu held: fails persistence when the log file has been removed from
 * under the server (its state directory deleted, say): every write would
 * go to a file no restart can read, and that loss would be silent. */
static void check_log_linked(sc_persist *p)
{
    struct stat sb;
    if (!atomic_load(&p->failed) && fstat(p->fd, &sb) == 0 &&
        sb.st_nlink == 0) {
        fail(p, ENOENT,
             "the log file was removed (was the state "
             "directory deleted?)");
    }
}

/* io_mu held, persistence failed: cuts the log back to its last whole
 * batch, so that the records of the batch that failed (refused to their
 * writers) are not restored either. Where the truncate fails too (an I/O
 * error rather than a full disk), a restart may still see some. */
static void cut_back(sc_persist *p)
{
    if (ftruncate(p->fd, (off_t)p->log_bytes) == 0) {
        (void)fdatasync(p->fd);
    }
}

/* io_mu held: writes every record appended so far; fsyncs when sync. */
static sc_err flush_locked(sc_persist *p, bool sync)
{
    if (atomic_load(&p->failed)) {
        return SC_EIO;
    }
    pthread_mutex_lock(&p->buf_mu);
    wbuf out = p->buf;
    p->buf = p->spare;
    p->buf.len = 0;
    uint64_t upto = p->appended;
    pthread_mutex_unlock(&p->buf_mu);
    seal(out.p, out.len, p->key);
    sc_err rc = write_all(p->fd, out.p, out.len);
    if (rc != SC_OK) {
        fail(p, errno, "writing the log");
        cut_back(p);
    } else {
        p->log_bytes += out.len;
        p->written = upto;
        if (sync && p->synced < upto) {
            if (fdatasync(p->fd) != 0) {
                fail(p, errno, "fsync of the log");
                rc = SC_EIO;
            } else {
                p->synced = upto;
                p->fsyncs++;
            }
        }
        if (sync) {
            check_log_linked(p);
            if (atomic_load(&p->failed)) {
                rc = SC_EIO;
            }
        }
        if (rc != SC_OK) {
            /* Refused, so not to come back: this batch's records out of
             * the log again, where the file still takes a truncate. */
            p->log_bytes -= out.len;
            cut_back(p);
        } else if (p->cfg.fsync != SC_FSYNC_ALWAYS || p->synced >= upto) {
            p->confirmed = upto;
        }
    }
    /* Keep the emptied buffer for the next swap, unless it grew large. */
    if (out.cap > (4u << 20)) {
        free(out.p);
        out = (wbuf){0};
    }
    out.len = 0;
    p->spare = out;
    return rc;
}

static void ledger_to(void *arg, const sc_ledger_row_state *row,
                      const sc_ledger_hour *hour);

/* The persister whose ledger_mu this thread holds for a namespace making
 * (j_make_begin to j_make_end), NULL = none. */
static _Thread_local sc_persist *making_in;

/* Takes ledger_mu for a making, which may wait out a whole export. */
static void lock_for_making(sc_persist *p)
{
    void (*fn)(void *) = atomic_load(&making_hook.fn);
    if (fn != NULL) {
        fn(atomic_load(&making_hook.arg));
    }
    pthread_mutex_lock(&p->ledger_mu);
}

/* With no cache lock held, before a namespace making takes the cache's:
 * ledger_mu, which its base's append needs (see j_append), so that the
 * making waits out a ledger save holding no cache lock. */
static void j_make_begin(void *arg)
{
    sc_persist *p = arg;
    if (p->ledger != NULL) {
        lock_for_making(p);
        making_in = p;
    }
}

static void j_make_end(void *arg)
{
    sc_persist *p = arg;
    if (making_in == p) {
        making_in = NULL;
        pthread_mutex_unlock(&p->ledger_mu);
    }
}

static sc_err j_append(void *arg, const sc_cache_change *ch, uint64_t *seq)
{
    sc_persist *p = arg;
    *seq = 0;
    if (!p->loaded) {
        return SC_OK; /* replaying: the records are on disk already */
    }
    if (atomic_load(&p->failed)) {
        return SC_EIO;
    }
    /* A making's base and its name's row: exported first, into a buffer
     * of their own (the export takes the ledger's lock, never held while
     * waiting for buf_mu's holders), then appended right after the
     * namespace's record under the same hold of buf_mu, so that no write
     * of the log has the one without the other. Under ledger_mu, as the
     * tick's exports are: runs come in the log in the order of their
     * exports. The making took it before the cache's lock (j_make_begin:
     * sc_cache_ns_create, finding a base to write without it, lets the
     * cache's lock go and takes it first); a caller with no make_begin
     * takes it here, which under a cache lock would wait on a making that
     * holds it and waits for that lock. The rows stay changed for the
     * tick, which logs them also where they cannot be appended here (out
     * of memory). */
    bool base =
        ch->kind == SC_CHANGE_NS_PUT && ch->ledger_base && p->ledger != NULL;
    bool take = base && making_in != p;
    wbuf rows = {0};
    if (take) {
        lock_for_making(p);
    }
    if (base) {
        (void)sc_ledger_export_ns(p->ledger, ch->ns, ledger_to, &rows);
    }
    pthread_mutex_lock(&p->buf_mu);
    size_t before = p->buf.len;
    switch (ch->kind) {
    case SC_CHANGE_NS_PUT:
        enc_ns_put(&p->buf, ch->ns, ch->cfg, ch->had_vector);
        break;
    case SC_CHANGE_NS_DROP:
        enc_name(&p->buf, REC_NS_DROP, ch->ns);
        break;
    case SC_CHANGE_FLUSH:
        enc_name(&p->buf, REC_FLUSH, ch->ns);
        break;
    case SC_CHANGE_INSERT:
        enc_entry(&p->buf, ch->entry);
        break;
    case SC_CHANGE_REMOVE:
        enc_id(&p->buf, REC_REMOVE, ch->id);
        break;
    case SC_CHANGE_QUARANTINE:
        enc_id(&p->buf, REC_QUARANTINE, ch->id);
        break;
    }
    sc_err rc = SC_OK;
    if (p->buf.oom) {
        p->buf.oom = 0;
        p->buf.len = before;
        rc = SC_ENOMEM;
    } else {
        if (rows.len > 0 && !rows.oom) {
            size_t rec_end = p->buf.len;
            wb_bytes(&p->buf, rows.p, rows.len);
            if (p->buf.oom) {
                p->buf.oom = 0;
                p->buf.len = rec_end; /* the record alone */
            }
        }
        *seq = ++p->appended;
    }
    pthread_mutex_unlock(&p->buf_mu);
    if (take) {
        pthread_mutex_unlock(&p->ledger_mu);
    }
    free(rows.p);
    if (rc == SC_OK) {
        appended_hook(ch->kind);
    }
    return rc;
}

static sc_err j_commit(void *arg, uint64_t seq)
{
    sc_persist *p = arg;
    bool sync = p->cfg.fsync == SC_FSYNC_ALWAYS;
    pthread_mutex_lock(&p->io_mu);
    sc_err rc = SC_OK;
    /* A record a flush confirmed before a later one failed (another
     * writer's, in the same group) is on disk: its change stands. */
    if (p->confirmed < seq) {
        rc = flush_locked(p, sync);
        if (rc == SC_OK && p->confirmed < seq) {
            rc = SC_EIO;
        }
    }
    pthread_mutex_unlock(&p->io_mu);
    return rc;
}

sc_err sc_persist_sync_parent(const char *path)
{
    char parent[PATH_CAP];
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') {
        n--; /* "a/b/" is a/b */
    }
    while (n > 0 && path[n - 1] != '/') {
        n--;
    }
    while (n > 1 && path[n - 1] == '/') {
        n--;
    }
    if (n >= sizeof(parent)) {
        return SC_ERANGE;
    }
    if (n == 0) {
        parent[0] = '.';
        n = 1;
    } else {
        memcpy(parent, path, n);
    }
    parent[n] = '\0';
    int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return SC_EIO;
    }
    int rc = fsync(fd);
    close(fd);
    return rc == 0 ? SC_OK : SC_EIO;
}

sc_err sc_persist_open(const sc_persist_config *cfg, sc_persist **out,
                       char *msg, size_t cap)
{
    if (cfg == NULL || out == NULL || cfg->dir == NULL ||
        cfg->dir[0] == '\0' || strlen(cfg->dir) >= DIR_CAP ||
        cfg->fsync > SC_FSYNC_NO) {
        say(msg, cap, "bad persistence settings");
        return SC_EINVAL;
    }
    sc_persist *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return SC_ENOMEM;
    }
    p->cfg = *cfg;
    p->cfg.dir = NULL;
    if (p->cfg.compact_min_bytes == 0) {
        p->cfg.compact_min_bytes = SC_PERSIST_COMPACT_MIN_DEFAULT;
    }
    if (p->cfg.compact_growth_pct == 0) {
        p->cfg.compact_growth_pct = 100;
    }
    snprintf(p->dir, sizeof(p->dir), "%s", cfg->dir);
    p->fd = p->dirfd = p->lockfd = -1;
    if (mkdir(p->dir, 0750) == 0) {
        /* A new directory's name is durable once its parent is synced:
         * without it a crash could lose the directory, and with it writes
         * acknowledged under fsync always. */
        (void)sc_persist_sync_parent(p->dir);
    } else if (errno != EEXIST) {
        say(msg, cap, "cannot make the state directory %s: %s", p->dir,
            strerror(errno));
        free(p);
        return SC_EIO;
    }
    p->dirfd = open(p->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    char path[PATH_CAP];
    snprintf(path, sizeof(path), "%s/LOCK", p->dir);
    if (p->dirfd >= 0) {
        p->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    }
    if (p->dirfd < 0 || p->lockfd < 0) {
        say(msg, cap, "cannot open the state directory %s: %s", p->dir,
            strerror(errno));
        goto fail;
    }
    if (flock(p->lockfd, LOCK_EX | LOCK_NB) != 0) {
        say(msg, cap,
            "the state directory %s is in use by another semcached (%s)",
            p->dir, strerror(errno));
        goto fail;
    }
    pthread_mutex_init(&p->buf_mu, NULL);
    pthread_mutex_init(&p->ledger_mu, NULL);
    pthread_mutex_init(&p->io_mu, NULL);
    pthread_mutex_init(&p->compact_mu, NULL);
    pthread_mutex_init(&p->tick_mu, NULL);
    pthread_cond_init(&p->tick, NULL);
    atomic_init(&p->failed, 0);
    p->journal =
        (sc_cache_journal){j_append, j_commit, p, j_make_begin, j_make_end};
    *out = p;
    return SC_OK;

fail:
    if (p->lockfd >= 0) {
        close(p->lockfd);
    }
    if (p->dirfd >= 0) {
        close(p->dirfd);
    }
    free(p);
    return SC_EIO;
}

const sc_cache_journal *sc_persist_journal(sc_persist *p)
{
    return &p->journal;
}

/* Maps the file at path (len 0: *data NULL). */
static sc_err map_file(const char *path, const uint8_t **data, size_t *len,
                       char *msg, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        say(msg, cap, "cannot read %s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return SC_EIO;
    }
    *len = (size_t)sb.st_size;
    *data = NULL;
    if (*len > 0) {
        void *m = mmap(NULL, *len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            say(msg, cap, "cannot map %s: %s", path, strerror(errno));
            close(fd);
            return SC_EIO;
        }
        madvise(m, *len, MADV_SEQUENTIAL);
        *data = m;
    }
    close(fd);
    return SC_OK;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static sc_err replay_path(sc_persist *p, const char *path, sc_persist_file kind,
                          bool last, sc_persist_load_stats *st, size_t *valid,
                          char *msg, size_t cap)
{
    const uint8_t *d;
    size_t len;
    sc_err rc = map_file(path, &d, &len, msg, cap);
    if (rc != SC_OK) {
        return rc;
    }
    char why[512] = "";
    uint64_t torn = st->torn_bytes, bad = st->corrupt_records;
    uint64_t old = st->old_format_dropped;
    unsigned version = len >= 8 ? (unsigned)d[6] | (unsigned)d[7] << 8 : 0;
    rc = sc_persist_replay(p->cache, p->ledger, kind, d, len, last,
                           p->cfg.repair, wall_ms(),
                           kind == SC_PERSIST_SNAPSHOT ? path : NULL, st,
                           valid, why, sizeof(why));
    if (d != NULL) {
        munmap((void *)d, len);
    }
    if (rc != SC_OK) {
        say(msg, cap, "%s: %s", path, why[0] ? why : sc_strerror(rc));
    } else {
        if (st->torn_bytes > torn) {
            plog(p, "%s: cut off a torn last record: %llu %s dropped", path,
                 (unsigned long long)(st->torn_bytes - torn),
                 sc_plural(st->torn_bytes - torn, "byte", "bytes"));
        }
        if (st->corrupt_records > bad && st->old_format_dropped > old) {
            /* A file of version 1 or 2: what its check passed past a
             * damaged record (one whose frame failed its check, or whose
             * record was found by a search) is not applied (apply;
             * PERSISTENCE.md). A whole record refused for its fields
             * alone, reached in order, is no damage: what follows it is
             * applied and not counted here. */
            plog(p,
                 "%s: --repair skipped %llu corrupt %s, %llu of them "
                 "valid-looking %s found past a damaged record of a format "
                 "%u file "
                 "(its plain checksum cannot tell them from a client's "
                 "bytes), not applied",
                 path, (unsigned long long)(st->corrupt_records - bad),
                 sc_plural(st->corrupt_records - bad, "record", "records"),
                 (unsigned long long)(st->old_format_dropped - old),
                 sc_plural(st->old_format_dropped - old, "record", "records"),
                 version);
        } else if (st->corrupt_records > bad) {
            plog(p, "%s: --repair skipped %llu corrupt %s", path,
                 (unsigned long long)(st->corrupt_records - bad),
                 sc_plural(st->corrupt_records - bad, "record", "records"));
        }
    }
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The format version in log gen's header, 0 when it has none. */
static unsigned log_version(sc_persist *p, uint64_t gen)
{
    char path[PATH_CAP];
    file_path(p, path, "log", gen, "");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    uint8_t h[8];
    ssize_t got = pread(fd, h, sizeof(h), 0);
    close(fd);
    if (got != (ssize_t)sizeof(h) || memcmp(h, LOG_MAGIC, 6) != 0) {
        return 0;
    }
    return (unsigned)h[6] | (unsigned)h[7] << 8;
}

/* Opens log gen for appending at valid (making it with a header when
 * new, or when a crash cut it inside its header); io_mu held or not yet
 * shared. The records then go on in the log's own format (a log of
 * version 1 or 2 is opened so only to cut its torn tail: start moves on
 * to a new log, never appends to one). */
static sc_err open_log(sc_persist *p, uint64_t gen, bool create, size_t valid,
                       char *msg, size_t cap)
{
    char path[PATH_CAP];
    file_path(p, path, "log", gen, "");
    int fd =
        open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0), 0640);
    if (fd < 0) {
        say(msg, cap, "cannot open %s: %s", path, strerror(errno));
        return SC_EIO;
    }
    sc_err rc = SC_OK;
    uint32_t key = 0;
    uint8_t h[HDR_SIZE];
    size_t hdr = HDR_SIZE;
    if (!create) {
        /* Its header as the load read it (valid covers it, or is 0). */
        ssize_t got = pread(fd, h, sizeof(h), 0);
        if (got >= 8 && (h[6] | h[7] << 8) < 3) {
            hdr = HDR_SIZE_V2;
        }
        if (valid >= hdr && (got < 0 || (size_t)got < hdr)) {
            rc = SC_EIO;
        } else if (valid >= hdr) {
            key = hdr == HDR_SIZE ? hdr_key(h) : 0;
        }
    }
    if (rc == SC_OK && create) {
        wbuf b = {0};
        key = enc_header(&b, LOG_MAGIC, gen);
        rc = b.oom ? SC_ENOMEM : write_all(fd, b.p, b.len);
        free(b.p);
        valid = HDR_SIZE;
        if (rc == SC_OK && (fsync(fd) != 0 || fsync(p->dirfd) != 0)) {
            rc = SC_EIO;
        }
    } else if (rc == SC_OK && valid < hdr) {
        /* Torn inside its header: a header of this version again. */
        wbuf b = {0};
        key = enc_header(&b, LOG_MAGIC, gen);
        if (ftruncate(fd, 0) != 0 || b.oom ||
            write_all(fd, b.p, b.len) != SC_OK || fsync(fd) != 0) {
            rc = SC_EIO;
        }
        free(b.p);
        valid = HDR_SIZE;
    } else if (rc == SC_OK) {
        struct stat sb;
        if (fstat(fd, &sb) != 0 ||
            ((size_t)sb.st_size != valid &&
             (ftruncate(fd, (off_t)valid) != 0 || fsync(fd) != 0))) {
            rc = SC_EIO;
        }
    }
    if (rc == SC_OK && lseek(fd, (off_t)valid, SEEK_SET) < 0) {
        rc = SC_EIO;
    }
    if (rc != SC_OK) {
        say(msg, cap, "cannot prepare %s: %s", path, strerror(errno));
        close(fd);
        if (create) {
            /* Left, it would be the last log and block the next one. */
            unlink(path);
            (void)fsync(p->dirfd);
        }
        return rc;
    }
    p->fd = fd;
    p->gen = gen;
    p->key = key;
    p->log_bytes = valid;
    return SC_OK;
}

static void *thread_main(void *arg);
static uint64_t mono_ms(void);
static uint64_t tick_flush(sc_persist *p);

/* The state directory, listed from its start. Not fdopendir(dup(dirfd)):
 * a dup shares its offset, so a second listing would see nothing. */
static DIR *list_dir(sc_persist *p)
{
    int fd = openat(p->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dp = fd >= 0 ? fdopendir(fd) : NULL;
    if (dp == NULL && fd >= 0) {
        close(fd);
    }
    return dp;
}

/* Removes the training files of every snapshot but generation keep's (a
 * crash between writing them and the snapshot's rename leaves some). */
static void remove_stale_trainings(sc_persist *p, uint64_t keep)
{
    DIR *dp = list_dir(p);
    if (dp == NULL) {
        return;
    }
    struct dirent *de;
    while ((de = readdir(dp)) != NULL) {
        const char *s = de->d_name;
        char *end;
        if (strncmp(s, "snap.", 5) != 0 || s[5] < '0' || s[5] > '9') {
            continue;
        }
        errno = 0;
        unsigned long long g = strtoull(s + 5, &end, 10);
        if (errno == 0 && strncmp(end, ".ivf.", 5) == 0 && g != keep) {
            unlinkat(p->dirfd, s, 0);
        }
    }
    closedir(dp);
}

sc_err sc_persist_load(sc_persist *p, sc_cache *c, sc_ledger *l,
                       sc_persist_load_stats *st_out, char *msg, size_t cap)
{
    if (p == NULL || c == NULL || p->cache != NULL) {
        return SC_EINVAL;
    }
    p->cache = c;
    p->ledger = l;
    sc_persist_load_stats st;
    memset(&st, 0, sizeof(st));
    DIR *dp = list_dir(p);
    if (dp == NULL) {
        say(msg, cap, "cannot list %s: %s", p->dir, strerror(errno));
        return SC_EIO;
    }
    uint64_t *logs = NULL, snap = 0;
    size_t nlogs = 0, logcap = 0;
    sc_err rc = SC_OK;
    struct dirent *de;
    while ((de = readdir(dp)) != NULL && rc == SC_OK) {
        uint64_t g;
        size_t nl = strlen(de->d_name);
        if (nl > 4 && strcmp(de->d_name + nl - 4, ".tmp") == 0) {
            /* A snapshot a crash left half written. */
            unlinkat(p->dirfd, de->d_name, 0);
        } else if (name_gen(de->d_name, "snap.", &g)) {
            snap = g > snap ? g : snap;
        } else if (name_gen(de->d_name, "log.", &g)) {
            if (SC_VEC_RESERVE(logs, logcap, nlogs, 1, 16) != SC_OK) {
                rc = SC_ENOMEM;
                break;
            }
            logs[nlogs++] = g;
        }
    }
    closedir(dp);
    if (rc != SC_OK) {
        free(logs);
        return rc;
    }
    if (nlogs > 1) {
        qsort(logs, nlogs, sizeof(*logs), cmp_u64);
    }
    char path[PATH_CAP];
    if (snap != 0) {
        file_path(p, path, "snap", snap, "");
        rc = replay_path(p, path, SC_PERSIST_SNAPSHOT, false, &st, NULL, msg,
                         cap);
        st.snapshot = rc == SC_OK;
        struct stat sb;
        if (rc == SC_OK && stat(path, &sb) == 0) {
            atomic_store(&p->snapshot_bytes, (uint64_t)sb.st_size);
        }
    }
    /* The logs of the snapshot's generation and later, which must follow
     * one another with none missing. */
    size_t first = 0;
    while (first < nlogs && logs[first] < snap) {
        first++;
    }
    if (rc == SC_OK && snap != 0 && (first == nlogs || logs[first] != snap)) {
        if (!p->cfg.repair) {
            say(msg, cap,
                "log.%llu, the log of the newest snapshot, is missing: "
                "changes after the snapshot may be lost (--repair starts "
                "from the snapshot and what logs there are)",
                (unsigned long long)snap);
            rc = SC_EBADFILE;
        }
    }
    size_t valid = 0;
    for (size_t i = first; i < nlogs && rc == SC_OK; i++) {
        if (i > first && logs[i] != logs[i - 1] + 1 && !p->cfg.repair) {
            say(msg, cap, "log.%llu is missing between log.%llu and log.%llu",
                (unsigned long long)(logs[i - 1] + 1),
                (unsigned long long)logs[i - 1], (unsigned long long)logs[i]);
            rc = SC_EBADFILE;
            break;
        }
        file_path(p, path, "log", logs[i], "");
        rc = replay_path(p, path, SC_PERSIST_LOG, i + 1 == nlogs, &st, &valid,
                         msg, cap);
        st.logs++;
    }
    if (rc == SC_OK && (st.ids_skipped > 0 || st.ids_range_end)) {
        /* Said once the logs are replayed: their inserts raise the next id
         * past the skip (on every start after the first that loads the
         * same damaged snapshot). */
        const char *why = st.ids_end_refused
                              ? "its end record was refused, and the "
                                "snapshot's next id with it"
                              : "the snapshot's next id was lost with its "
                                "end record";
        if (st.ids_range_end) {
            plog(p,
                 "snap.%llu: --repair: %s; new ids start at %llu (after the "
                 "logs), at or past the end of the id range (2^53): a skip "
                 "of 2^32 above the highest id it holds would pass it, so "
                 "no insert takes (full) and none is given out twice; "
                 "lookups are served",
                 (unsigned long long)snap, why,
                 (unsigned long long)sc_cache_next_id(p->cache));
        } else {
            plog(p,
                 "snap.%llu: --repair: %s; new ids start at %llu (after the "
                 "logs; %llu skipped above the highest id it holds), so that "
                 "none is given out twice",
                 (unsigned long long)snap, why,
                 (unsigned long long)sc_cache_next_id(p->cache),
                 (unsigned long long)st.ids_skipped);
        }
    } else if (rc == SC_OK && sc_cache_next_id(p->cache) >= SC_CACHE_ID_LIMIT) {
        /* The ids are used up: an older build's files (its ids went on
         * past the end, up to 2^64 - 2), or the snapshot of a start that
         * --repair loaded so. Loaded all the same, on a plain start too:
         * no insert takes, so no id is given out twice. */
        plog(p,
             "new ids start at %llu, at or past the end of the id range "
             "(2^53): no insert takes (full) and none is given out twice; "
             "lookups are served",
             (unsigned long long)sc_cache_next_id(p->cache));
    }
    if (rc == SC_OK) {
        remove_stale_trainings(p, snap);
        /* Files older than the snapshot are covered by it. */
        for (size_t i = 0; i < first; i++) {
            file_path(p, path, "log", logs[i], "");
            unlink(path);
        }
        unsigned v = first < nlogs ? log_version(p, logs[nlogs - 1]) : 0;
        if (first < nlogs && v >= VERSION_MIN && v < 3 &&
            valid >= HDR_SIZE_V2) {
            /* A last log of version 1 or 2 (plain XXH32): not appended to,
             * so that no client's bytes are written under a check any
             * bytes can pass (--repair could apply them: a planted
             * record). Its torn tail is cut (it is not the last log from
             * now on, where one would be refused), and the changes go to
             * the next log, of this version. */
            rc = open_log(p, logs[nlogs - 1], false, valid, msg, cap);
            if (rc == SC_OK) {
                close(p->fd);
                p->fd = -1;
                rc = open_log(p, logs[nlogs - 1] + 1, true, 0, msg, cap);
            }
            if (rc == SC_OK) {
                plog(p,
                     "log.%llu is of format version %u: new changes go to "
                     "log.%llu, of version %u",
                     (unsigned long long)logs[nlogs - 1], v,
                     (unsigned long long)p->gen, VERSION);
            }
        } else if (first < nlogs) {
            rc = open_log(p, logs[nlogs - 1], false, valid, msg, cap);
        } else {
            rc = open_log(p, snap != 0 ? snap : 1, true, 0, msg, cap);
        }
    }
    free(logs);
    if (rc != SC_OK) {
        return rc;
    }
    st.generation = p->gen;
    if (st_out != NULL) {
        *st_out = st;
    }
    p->loaded = true;
    /* Caps apply to the state as restored (what they evict is logged). */
    sc_cache_enforce_caps(c);
    if (pthread_create(&p->thread, NULL, thread_main, p) != 0) {
        say(msg, cap, "cannot start the persistence thread");
        p->loaded = false;
        return SC_ENOMEM;
    }
    p->thread_on = true;
    if (st.corrupt_records > 0 && st.superseded > 0) {
        /* Valid records that depended on a skipped one (an entry of a
         * namespace whose creation was skipped) are lost with it: said,
         * never dropped in silence. Replays count records a later state
         * overrides here too, so the count is an upper bound. */
        plog(p,
             "--repair: %llu valid %s did not apply (their namespace "
             "or entry was in a skipped record, or a later state overrides "
             "them)",
             (unsigned long long)st.superseded,
             sc_plural(st.superseded, "record", "records"));
    }
    plog(p,
         "state from %s: %s%llu %s, %llu %s, %llu %s restored "
         "(%llu expired while down), %llu IVF %s kept (%llu to "
         "retrain), fsync %s",
         p->dir, st.snapshot ? "a snapshot and " : "",
         (unsigned long long)st.logs, sc_plural(st.logs, "log", "logs"),
         (unsigned long long)st.records,
         sc_plural(st.records, "record", "records"),
         (unsigned long long)st.entries_restored,
         sc_plural(st.entries_restored, "entry", "entries"),
         (unsigned long long)st.entries_expired,
         (unsigned long long)st.trainings,
         sc_plural(st.trainings, "training", "trainings"),
         (unsigned long long)st.trainings_failed,
         sc_persist_fsync_name(p->cfg.fsync));
    return SC_OK;
}

/* ---- snapshots, compaction ---------------------------------------------*/

typedef struct snap_w {
    sc_persist *p;
    int fd;
    wbuf b;
    uint64_t entries, bytes;
    sc_err rc;
    const char *final; /* the snapshot's path once renamed */
    const char *ns;    /* the namespace being written */
    uint64_t serial;   /* and its serial (sc_cache_ns_state) */
    uint64_t ntrain;   /* training files written: final.ivf.0.. */
} snap_w;

/* Under the namespace's lock: the scope's IVF training to a file beside
 * the snapshot (small: centroids), and a record naming it. A training that
 * cannot be saved is left out: that index trains again after a restart. */
static sc_err snap_training(void *arg, const char *scope, sc_index *ix)
{
    snap_w *w = arg;
    char path[PATH_CAP + 32];
    snprintf(path, sizeof(path), "%s.ivf.%llu", w->final,
             (unsigned long long)w->ntrain);
    if (sc_index_save_training(ix, path) != SC_OK) {
        unlink(path);
        return SC_OK;
    }
    size_t at = rec_begin(&w->b, REC_TRAINING);
    wb_str(&w->b, w->ns);
    wb_str(&w->b, scope);
    wb_u64(&w->b, w->ntrain);
    rec_end(&w->b, at);
    w->ntrain++;
    return SC_OK;
}

/* fsyncs (sync) or removes the training files final.ivf.0..n-1. */
static sc_err trainings_done(const char *final, uint64_t n, bool sync)
{
    sc_err rc = SC_OK;
    for (uint64_t k = 0; k < n; k++) {
        char path[PATH_CAP + 32];
        snprintf(path, sizeof(path), "%s.ivf.%llu", final,
                 (unsigned long long)k);
        if (!sync) {
            unlink(path);
            continue;
        }
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) != 0) {
            rc = SC_EIO;
        }
        if (fd >= 0) {
            close(fd);
        }
    }
    return rc;
}

/* Removes final.ivf.0, .1, ... while they exist. */
static void trainings_remove(const char *final)
{
    for (uint64_t k = 0;; k++) {
        char path[PATH_CAP + 32];
        snprintf(path, sizeof(path), "%s.ivf.%llu", final,
                 (unsigned long long)k);
        if (unlink(path) != 0) {
            return;
        }
    }
}

static int snap_entry(const sc_cache_entry_info *e, void *arg)
{
    snap_w *w = arg;
    enc_entry(&w->b, e);
    w->entries++;
    return w->b.oom;
}

static sc_err snap_drain(void *arg)
{
    snap_w *w = arg;
    if (w->b.oom) {
        return SC_ENOMEM;
    }
    if (atomic_load(&w->p->cancel)) {
        return SC_ECANCELED;
    }
    if (write_all(w->fd, w->b.p, w->b.len) != SC_OK) {
        return SC_EIO;
    }
    w->bytes += w->b.len;
    w->b.len = 0;
    return SC_OK;
}

static void ledger_to(void *arg, const sc_ledger_row_state *row,
                      const sc_ledger_hour *hour)
{
    enc_ledger(arg, row, hour);
}

static SC_HOOK(void, (void *, const char *)) snapshot_hook;

/* Set in the persister's thread (thread_main). */
static _Thread_local bool persister_thread;

void sc_persist_set_snapshot_hook(void (*fn)(void *arg, const char *ns),
                                  void *arg)
{
    SC_HOOK_SET(snapshot_hook, fn, arg);
}

/* With nothing locked, the snapshot written out so far: the test hook, and
 * when the persister's own thread is the writer (an automatic compaction)
 * and a second has passed, its once-a-second flush done here, so that the
 * log keeps being fsynced (everysec) however long the snapshot takes. */
static void snap_pause(snap_w *w)
{
    void (*hook)(void *, const char *) = atomic_load(&snapshot_hook.fn);
    if (hook != NULL) {
        hook(atomic_load(&snapshot_hook.arg), w->ns);
    }
    sc_persist *p = w->p;
    if (persister_thread && mono_ms() - atomic_load(&p->last_tick_ms) >= 1000) {
        (void)tick_flush(p);
    }
}

/* A namespace's record and IVF trainings, once the entries the snapshot
 * holds of it are chosen (sc_cache_scan_entries' start). Its config read
 * here, not before, is the one those entries were stored in: one read
 * before them could predate a configure made before the namespace's first
 * vector, and a vector of the snapshot then fixes the old storage (or
 * another dim) in the restore, so that the configure, in the new log, no
 * longer applies (its replay refused as superseded; another dim made the
 * snapshot unloadable). The trainings before the entries: a restore then
 * makes each scope's index trained and empty, and its vectors go straight
 * into it (no training at restart, and none started meanwhile). Both of
 * this namespace only: one dropped and made again meanwhile (another dim,
 * maybe) is in the new log. */
static sc_err snap_ns(void *arg)
{
    snap_w *w = arg;
    sc_ns_config cfg;
    bool had;
    uint64_t serial;
    if (sc_cache_ns_state(w->p->cache, w->ns, &cfg, &had, &serial) != SC_OK ||
        serial != w->serial) {
        return SC_ENONS; /* dropped meanwhile: the log says so */
    }
    enc_ns_put(&w->b, w->ns, &cfg, had);
    sc_err rc =
        sc_cache_scope_indexes(w->p->cache, w->ns, serial, snap_training, w);
    if (rc == SC_OK) {
        rc = snap_drain(w);
    }
    if (rc == SC_OK) {
        snap_pause(w);
    }
    return rc;
}

/* Between two chunks of a namespace's entries. */
static sc_err snap_between(void *arg)
{
    snap_w *w = arg;
    sc_err rc = snap_drain(w);
    if (rc == SC_OK) {
        snap_pause(w);
    }
    return rc;
}

/* Writes the cache's state as snapshot gen. */
static sc_err write_snapshot(sc_persist *p, uint64_t gen, uint64_t *bytes)
{
    char tmp[PATH_CAP], path[PATH_CAP];
    file_path(p, tmp, "snap", gen, ".tmp");
    file_path(p, path, "snap", gen, "");
    snap_w w = {p, -1, {0}, 0, 0, SC_OK, path, NULL, 0, 0};
    w.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (w.fd < 0) {
        plog(p, "cannot write %s: %s", tmp, strerror(errno));
        return SC_EIO;
    }
    /* Its records carry its key from the start (rec_end). */
    w.b.key = enc_header(&w.b, SNAP_MAGIC, gen);
    /* The ledger first: the log's later sums then override it. */
    if (p->ledger != NULL) {
        sc_ledger_export(p->ledger, false, ledger_to, &w.b);
    }
    sc_err rc = snap_drain(&w);
    size_t count = 0, room = 0;
    char (*names)[SC_CACHE_NS_NAME_MAX + 1] = NULL;
    /* Every name, however many are made meanwhile: the list is sorted, so
     * one cut short could leave out any old namespace, not only new ones. */
    while (rc == SC_OK && (names == NULL || count > room)) {
        room = count + 64;
        free(names);
        names = calloc(room, sizeof(*names));
        rc = names == NULL ? SC_ENOMEM
                           : sc_cache_ns_list(p->cache, names, room, &count);
    }
    for (size_t i = 0; i < count && rc == SC_OK; i++) {
        sc_ns_config cfg;
        bool had;
        if (sc_cache_ns_state(p->cache, names[i], &cfg, &had, &w.serial) !=
            SC_OK) {
            continue; /* dropped meanwhile: the log says so */
        }
        /* Its record and trainings first (snap_ns), then its entries. */
        w.ns = names[i];
        rc = sc_cache_scan_entries(p->cache, names[i], w.serial, snap_ns,
                                   snap_entry, snap_between, &w);
        rc = rc == SC_ENONS ? SC_OK : rc;
        if (rc == SC_OK) {
            rc = snap_drain(&w);
        }
    }
    free(names);
    if (rc == SC_OK) {
        size_t at = rec_begin(&w.b, REC_SNAP_END);
        wb_u64(&w.b, w.entries);
        wb_u64(&w.b, sc_cache_next_id(p->cache));
        rec_end(&w.b, at);
        rc = snap_drain(&w);
    }
    if (rc == SC_OK && fsync(w.fd) != 0) {
        rc = SC_EIO;
    }
    if (close(w.fd) != 0 && rc == SC_OK) {
        rc = SC_EIO;
    }
    if (rc == SC_OK) {
        /* Every change the snapshot holds was appended before it was
         * seen: made durable now, or the snapshot is not taken, so that
         * it never holds a change its writer is told was refused. */
        pthread_mutex_lock(&p->io_mu);
        rc = flush_locked(p, true);
        pthread_mutex_unlock(&p->io_mu);
    }
    if (rc == SC_OK) {
        rc = trainings_done(path, w.ntrain, true);
    }
    free(w.b.p);
    if (rc == SC_OK && rename(tmp, path) != 0) {
        rc = SC_EIO;
    }
    if (rc == SC_OK && fsync(p->dirfd) != 0) {
        rc = SC_EIO;
    }
    if (rc != SC_OK) {
        plog(p, "snapshot %s failed: %s (%s); the log is kept", path,
             sc_strerror(rc), strerror(errno));
        unlink(tmp);
        (void)trainings_done(path, w.ntrain, false);
        return rc;
    }
    *bytes = w.bytes;
    return SC_OK;
}

/* compact_mu held, a compaction failed: appends go on to log old again,
 * and the new one it began goes, when nothing has been written to it
 * yet (left, each failed compaction would add a generation to read at
 * every start). Where anything has, or old cannot be opened, both stay. */
static void resume_log(sc_persist *p, uint64_t old, uint64_t old_bytes)
{
    pthread_mutex_lock(&p->io_mu);
    int newfd = p->fd;
    uint64_t gen = p->gen;
    char why[512];
    /* Records appended and not yet written go to old's end, in order.
     * Not when snap.G+1 took its name before the failure (the directory's
     * fsync after the rename failed): a start loads it with log.G+1, and
     * refuses it without. */
    char snap[PATH_CAP];
    file_path(p, snap, "snap", gen, "");
    if (gen == old + 1 && p->log_bytes == HDR_SIZE && access(snap, F_OK) != 0 &&
        errno == ENOENT && !atomic_load(&p->failed) &&
        open_log(p, old, false, old_bytes, why, sizeof(why)) == SC_OK) {
        close(newfd);
        char path[PATH_CAP];
        file_path(p, path, "log", gen, "");
        if (unlink(path) == 0) {
            (void)fsync(p->dirfd);
        }
        plog(p, "log.%llu goes on (log.%llu removed)", (unsigned long long)old,
             (unsigned long long)gen);
    }
    pthread_mutex_unlock(&p->io_mu);
}

sc_err sc_persist_compact(sc_persist *p)
{
    if (p == NULL || !p->loaded) {
        return SC_EINVAL;
    }
    pthread_mutex_lock(&p->compact_mu);
    if (atomic_load(&p->cancel)) {
        pthread_mutex_unlock(&p->compact_mu);
        return SC_ECANCELED;
    }
    /* Start the next log: every record before it is written and fsynced
     * to the old one, every change from here on goes to the new one, and
     * the snapshot taken next holds at least every change before. */
    pthread_mutex_lock(&p->io_mu);
    uint64_t old = p->gen;
    int oldfd = p->fd;
    sc_err rc = flush_locked(p, true);
    uint64_t old_bytes = p->log_bytes;
    char why[512] = "";
    if (rc == SC_OK) {
        rc = open_log(p, old + 1, true, 0, why, sizeof(why));
    }
    if (rc == SC_OK) {
        close(oldfd);
    }
    pthread_mutex_unlock(&p->io_mu);
    if (rc != SC_OK) {
        plog(p, "compaction: cannot start log.%llu: %s",
             (unsigned long long)(old + 1), why[0] ? why : sc_strerror(rc));
        pthread_mutex_unlock(&p->compact_mu);
        return rc;
    }
    uint64_t bytes = 0;
    rc = write_snapshot(p, old + 1, &bytes);
    if (rc == SC_OK) {
        /* The new snapshot and log hold everything: the old files go. */
        char path[PATH_CAP];
        for (uint64_t g = old; g >= 1; g--) {
            file_path(p, path, "log", g, "");
            bool had_log = unlink(path) == 0;
            file_path(p, path, "snap", g, "");
            trainings_remove(path);
            bool had_snap = unlink(path) == 0;
            if (!had_log && !had_snap) {
                break;
            }
        }
        fsync(p->dirfd);
        atomic_store(&p->snapshot_bytes, bytes);
        atomic_fetch_add(&p->compactions, 1);
        plog(p, "compacted: snap.%llu (%llu %s), log.%llu begun",
             (unsigned long long)(old + 1), (unsigned long long)bytes,
             sc_plural(bytes, "byte", "bytes"), (unsigned long long)(old + 1));
    } else {
        resume_log(p, old, old_bytes);
    }
    pthread_mutex_unlock(&p->compact_mu);
    return rc;
}

void sc_persist_cancel_compactions(sc_persist *p)
{
    if (p != NULL) {
        atomic_store(&p->cancel, true);
    }
}

/* Appends, as one record run, the ledger's rows changed since the last
 * export. SC_ENOMEM: the rows stay changed, for the next tick to log;
 * SC_EIO: persistence failed. */
static sc_err flush_ledger(sc_persist *p)
{
    if (p->ledger == NULL) {
        return SC_OK;
    }
    if (atomic_load(&p->failed)) {
        return SC_EIO;
    }
    pthread_mutex_lock(&p->ledger_mu);
    /* Into a buffer of its own, then appended as one run: the ledger's
     * lock is never held while waiting for buf_mu's holders. */
    wbuf b = {0};
    uint64_t mark = sc_ledger_export(p->ledger, true, ledger_to, &b);
    bool stored = b.len == 0 && !b.oom;
    pthread_mutex_lock(&p->buf_mu);
    if (b.len > 0 && !b.oom) {
        wb_bytes(&p->buf, b.p, b.len);
        if (p->buf.oom) {
            p->buf.oom = 0;
        } else {
            p->appended++;
            stored = true;
        }
    }
    pthread_mutex_unlock(&p->buf_mu);
    free(b.p);
    if (stored) {
        sc_ledger_export_saved(p->ledger, mark);
    }
    pthread_mutex_unlock(&p->ledger_mu);
    return stored ? SC_OK : SC_ENOMEM;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The once-a-second work: the ledger's changed rows logged, the log
 * written (and with everysec fsynced). Returns the log's size. */
static uint64_t tick_flush(sc_persist *p)
{
    atomic_store(&p->last_tick_ms, mono_ms());
    (void)flush_ledger(p);
    pthread_mutex_lock(&p->io_mu);
    (void)flush_locked(p, p->cfg.fsync != SC_FSYNC_NO);
    if (p->cfg.fsync == SC_FSYNC_NO) {
        check_log_linked(p); /* a syncing flush has checked */
    }
    uint64_t log_bytes = p->log_bytes;
    pthread_mutex_unlock(&p->io_mu);
    return log_bytes;
}

static void *thread_main(void *arg)
{
    sc_persist *p = arg;
    persister_thread = true;
    /* The log's size after a compaction failed: the next waits until the
     * log has grown as much again as a first would (one a second would
     * rewrite the snapshot to a full disk over and over, now that a failed
     * one goes on with the old log). */
    uint64_t failed_at = 0;
    pthread_mutex_lock(&p->tick_mu);
    while (!p->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&p->tick, &p->tick_mu, &until);
        if (p->stop) {
            break;
        }
        pthread_mutex_unlock(&p->tick_mu);
        uint64_t log_bytes = tick_flush(p);
        uint64_t grown = log_bytes > failed_at ? log_bytes - failed_at : 0;
        if (!atomic_load(&p->failed) && grown > p->cfg.compact_min_bytes &&
            grown > atomic_load(&p->snapshot_bytes) / 100 *
                        p->cfg.compact_growth_pct) {
            failed_at = 0;
            if (sc_persist_compact(p) != SC_OK) {
                sc_persist_stats st;
                sc_persist_get_stats(p, &st);
                failed_at = st.log_bytes;
            }
        }
        pthread_mutex_lock(&p->tick_mu);
    }
    pthread_mutex_unlock(&p->tick_mu);
    return NULL;
}

sc_err sc_persist_sync(sc_persist *p)
{
    if (p == NULL || !p->loaded) {
        return SC_EINVAL;
    }
    pthread_mutex_lock(&p->io_mu);
    sc_err rc = flush_locked(p, true);
    pthread_mutex_unlock(&p->io_mu);
    return rc;
}

void sc_persist_get_stats(sc_persist *p, sc_persist_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->fsync = p->cfg.fsync;
    pthread_mutex_lock(&p->buf_mu);
    out->appended = p->appended;
    pthread_mutex_unlock(&p->buf_mu);
    pthread_mutex_lock(&p->io_mu);
    out->generation = p->gen;
    out->written = p->written;
    out->synced = p->synced;
    out->log_bytes = p->log_bytes;
    out->fsyncs = p->fsyncs;
    pthread_mutex_unlock(&p->io_mu);
    /* Not under compact_mu: a compaction holds it for seconds. */
    out->snapshot_bytes = atomic_load(&p->snapshot_bytes);
    out->compactions = atomic_load(&p->compactions);
    out->failed = atomic_load(&p->failed) != 0;
}

void sc_persist_close(sc_persist *p)
{
    if (p == NULL) {
        return;
    }
    if (p->thread_on) {
        pthread_mutex_lock(&p->tick_mu);
        p->stop = true;
        pthread_cond_signal(&p->tick);
        pthread_mutex_unlock(&p->tick_mu);
        pthread_join(p->thread, NULL);
    }
    if (p->loaded) {
        (void)flush_ledger(p);
        if (sc_persist_sync(p) != SC_OK) {
            plog(p, "the last records could not be written: %s",
                 strerror(atomic_load(&p->failed)));
        }
    }
    if (p->fd >= 0) {
        close(p->fd);
    }
    free(p->buf.p);
    free(p->spare.p);
    pthread_cond_destroy(&p->tick);
    pthread_mutex_destroy(&p->tick_mu);
    pthread_mutex_destroy(&p->compact_mu);
    pthread_mutex_destroy(&p->io_mu);
    pthread_mutex_destroy(&p->ledger_mu);
    pthread_mutex_destroy(&p->buf_mu);
    close(p->lockfd); /* and with it the lock */
    close(p->dirfd);
    free(p);
}
