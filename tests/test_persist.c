/* test_persist.c - cache/persist: every kind of change survives a restart
 * (log replay, snapshot + log, ids going on above the restored ones, the
 * ledger's sums); a torn last record is cut and measured, and so is a
 * tail of another log's records (stale blocks after power loss), never
 * applied; files of format versions 1 and 2 still load; a corrupt record
 * in the middle is refused, and skipped with repair; compaction while
 * writers and readers run loses nothing; fsync=always has synced every
 * acknowledged record; a second server cannot take the directory.
 * With SEMCACHE_PERSIST_SEEDS=DIR it also leaves a log and a snapshot in
 * DIR (the fuzzer's seed corpus is made so). */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <xxhash.h>
#include <unistd.h>

#include "cache/cache.h"
#include "cache/ledger.h"
#include "cache/persist.h"
#include "index/index.h"
#include "test_tmp.h"
#include "test_util.h"
#include "tests/fz_model.h"

#define DIM FZ_DIM
/* A file's header in format version 3 (with its nonce); 16 before. */
#define HDR 24

/* The header's length of the file d (at least 8 bytes of it). */
static size_t hdr_len(const uint8_t *d)
{
    return (d[6] | d[7] << 8) < 3 ? 16 : HDR;
}

/* The key a file's records are checked with: XXH32 of its header from
 * version 3 on, 0 before (cache/persist.c). */
static uint32_t file_key(const uint8_t *d)
{
    return hdr_len(d) == HDR ? XXH32(d, HDR, 0x53434c47u) : 0;
}

static char root[256];

typedef struct world {
    sc_prices *prices;
    sc_ledger *ledger;
    sc_persist *p;
    sc_cache *c;
    sc_persist_load_stats st;
    sc_err load_rc;
    char msg[1024];
} world;

/* The last line a world's persister logged that holds "new ids start at"
 * (a --repair start's), "" when none since it was cleared. */
static char world_ids_line[1024];
/* The last "--repair skipped ... not applied" line (a file of format 1 or
 * 2 whose records after its damage are dropped). */
static char world_dropped_line[1024];

static void quiet_log(void *arg, const char *line)
{
    (void)arg;
    if (strstr(line, "not applied") != NULL) {
        snprintf(world_dropped_line, sizeof(world_dropped_line), "%s", line);
    }
    if (strstr(line, "new ids start at") != NULL) {
        snprintf(world_ids_line, sizeof(world_ids_line), "%s", line);
    }
}

/* The N of world_ids_line's "new ids start at N", 0 when none. */
static uint64_t world_ids_start(void)
{
    const char *at = strstr(world_ids_line, "new ids start at ");
    return at != NULL ? strtoull(at + 17, NULL, 10) : 0;
}

/* The embedder the next world_open gives its cache (NULL = none), and its
 * overall byte cap (0 = the default). */
static const sc_cache_embedder *world_em;
static uint64_t world_max_bytes, world_max_entries;
static uint32_t world_max_ns, world_max_scopes; /* 0 = the defaults */
static uint64_t world_compact_min;              /* 0 = the default */
/* The next world_open's cache reads world_now as its clock when set. */
static bool world_fake_clock;
static _Atomic uint64_t world_now;

static uint64_t world_clock(void *arg)
{
    (void)arg;
    return atomic_load(&world_now);
}

/* Opens dir's state into w: persist, cache, load. Returns the load's code. */
static sc_err world_open(world *w, const char *dir, sc_fsync fs, bool repair)
{
    memset(w, 0, sizeof(*w));
    if (sc_prices_default(&w->prices) != SC_OK ||
        sc_ledger_open(w->prices, &w->ledger) != SC_OK) {
        return SC_ENOMEM;
    }
    sc_persist_config pc = {.dir = dir,
                            .fsync = fs,
                            .repair = repair,
                            .log = quiet_log,
                            .compact_min_bytes = world_compact_min};
    sc_err rc = sc_persist_open(&pc, &w->p, w->msg, sizeof(w->msg));
    if (rc != SC_OK) {
        return rc;
    }
    sc_cache_config cc;
    sc_cache_config_init(&cc);
    cc.ledger = w->ledger;
    cc.journal = sc_persist_journal(w->p);
    cc.embedder = world_em;
    if (world_max_bytes != 0) {
        cc.max_bytes = world_max_bytes;
    }
    cc.max_entries = world_max_entries;
    if (world_fake_clock) {
        cc.clock = world_clock;
    }
    if (world_max_ns != 0) {
        cc.max_namespaces = world_max_ns;
    }
    if (world_max_scopes != 0) {
        cc.max_scopes = world_max_scopes;
    }
    if ((rc = sc_cache_open(&cc, &w->c)) != SC_OK) {
        return rc;
    }
    w->load_rc = sc_persist_load(w->p, w->c, w->ledger, &w->st, w->msg,
                                 sizeof(w->msg));
    return w->load_rc;
}

static void world_close(world *w)
{
    sc_persist_close(w->p);
    sc_cache_close(w->c);
    sc_ledger_close(w->ledger);
    sc_prices_free(w->prices);
    memset(w, 0, sizeof(*w));
}

static void vec_of(uint64_t seed, float *v)
{
    uint64_t s = seed * 7919u + 1;
    for (int i = 0; i < DIM; i++) {
        v[i] = test_randf(&s);
    }
}

static sc_err put(sc_cache *c, const char *ns, const char *text,
                  const char *resp, bool with_vec, uint64_t seed,
                  uint64_t *id)
{
    float v[DIM];
    vec_of(seed, v);
    sc_cache_item it = {
        .text = text,
        .text_len = text != NULL ? strlen(text) : 0,
        .vec = with_vec ? v : NULL,
        .dim = with_vec ? DIM : 0,
        .response = resp,
        .response_len = strlen(resp),
        .model = "gpt-4o-mini",
        .feature = "faq",
        .user = "u1",
        .input_tokens = 100,
        .output_tokens = 50,
    };
    return sc_cache_insert(c, ns, &it, id);
}

static void le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static void le64(uint8_t *p, uint64_t v)
{
    le32(p, (uint32_t)v);
    le32(p + 4, (uint32_t)(v >> 32));
}

/* The response served to text in ns ("" on a miss), in out. */
static bool served_text(sc_cache *c, const char *ns, const char *text,
                        char *out, size_t cap)
{
    sc_cache_query q = {.text = text, .text_len = strlen(text)};
    sc_cache_result r;
    out[0] = '\0';
    if (sc_cache_lookup(c, ns, &q, &r) != SC_OK) {
        return false;
    }
    bool hit = r.hit;
    if (hit) {
        snprintf(out, cap, "%.*s", (int)r.response_len,
                 (const char *)r.response);
    }
    sc_cache_result_fini(&r);
    return hit;
}

static bool served_vec(sc_cache *c, const char *ns, uint64_t seed,
                       uint64_t *id)
{
    float v[DIM];
    vec_of(seed, v);
    sc_cache_query q = {.vec = v, .dim = DIM};
    sc_cache_result r;
    if (sc_cache_lookup(c, ns, &q, &r) != SC_OK) {
        return false;
    }
    bool hit = r.hit && r.layer == SC_LAYER_SEMANTIC;
    *id = r.id;
    sc_cache_result_fini(&r);
    return hit;
}

static uint64_t entries_of(sc_cache *c, const char *ns)
{
    sc_cache_stats s;
    return sc_cache_stats_get(c, ns, &s) == SC_OK ? s.entries : UINT64_MAX;
}

static void fresh_dir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", root, name);
    /* No shell: TMPDIR may hold any name. */
    if (sc_test_tmp_remove(out) != 0) {
        fprintf(stderr, "cannot clear %s\n", out);
    }
}

/* A fresh dir named name under root (in dir, of cap bytes), its state
 * opened into w with fsync fs, and namespace ns made in it. */
static void fresh_ns(world *w, char *dir, size_t cap, const char *name,
                     sc_fsync fs, const char *ns)
{
    fresh_dir(dir, cap, name);
    CHECK(world_open(w, dir, fs, false) == SC_OK);
    CHECK(sc_cache_ns_create(w->c, ns, NULL) == SC_OK);
}

static long file_size(const char *dir, const char *name)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static void copy_seed(const char *dir, const char *name, const char *to)
{
    char cmd[1400];
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && cp '%s/%s' '%s/seed-%s'", to,
             dir, name, to, name);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot copy a seed\n");
    }
}

/* Every kind of change, then a restart: the state comes back as it was. */
static void test_round_trip(bool compact_between)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir), compact_between ? "rt-snap" : "rt-log");
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    CHECK(!w.st.snapshot && w.st.records == 0);
    sc_ns_config nc;
    sc_cache_ns_config_init(&nc);
    nc.threshold = 0.8f;
    CHECK(sc_cache_ns_create(w.c, "a", &nc) == SC_OK);
    CHECK(sc_cache_ns_create(w.c, "b", NULL) == SC_OK);
    CHECK(sc_cache_ns_create(w.c, "gone", NULL) == SC_OK);
    uint64_t id1, id2, id3, id4, id5, idb, idg;
    CHECK(put(w.c, "a", "return policy", "30 days", true, 1, &id1) == SC_OK);
    CHECK(put(w.c, "a", "shipping cost", "free over 50", true, 2, &id2) ==
          SC_OK);
    CHECK(put(w.c, "a", "to delete", "x", true, 3, &id3) == SC_OK);
    CHECK(put(w.c, "a", "wrong one", "bad answer", true, 4, &id4) == SC_OK);
    CHECK(put(w.c, "a", "text only", "exact layer", false, 0, &id5) == SC_OK);
    CHECK(put(w.c, "b", "flushed", "y", true, 6, &idb) == SC_OK);
    CHECK(put(w.c, "gone", "dropped", "z", true, 7, &idg) == SC_OK);
    /* The same text again replaces the first entry. */
    uint64_t id1b;
    CHECK(put(w.c, "a", "return policy", "30 days, v2", true, 1, &id1b) ==
          SC_OK);
    CHECK(sc_cache_delete(w.c, id3) == SC_OK);
    CHECK(sc_cache_feedback(w.c, id4) == SC_OK);
    CHECK(sc_cache_flush(w.c, "b") == SC_OK);
    CHECK(sc_cache_ns_drop(w.c, "gone") == SC_OK);
    nc.threshold = 0.75f;
    nc.ttl_ms = 3600u * 1000u;
    CHECK(sc_cache_ns_configure(w.c, "a", &nc) == SC_OK);
    char buf[128];
    CHECK(served_text(w.c, "a", "return policy", buf, sizeof(buf)));
    CHECK(served_text(w.c, "a", "shipping cost", buf, sizeof(buf)));
    sc_ledger_counts before;
    CHECK(sc_ledger_sum(w.ledger, NULL, SC_LEDGER_BY_NS, &before, NULL,
                        NULL) == SC_OK);
    if (compact_between) {
        CHECK(sc_persist_compact(w.p) == SC_OK);
        uint64_t id6;
        CHECK(put(w.c, "a", "after snapshot", "later", true, 8, &id6) ==
              SC_OK);
        CHECK(sc_cache_delete(w.c, id2) == SC_OK);
        CHECK(put(w.c, "a", "shipping cost", "free over 50", true, 2, &id2) ==
              SC_OK);
        CHECK(sc_ledger_sum(w.ledger, NULL, SC_LEDGER_BY_NS, &before, NULL,
                            NULL) == SC_OK);
    }
    uint64_t entries_a = entries_of(w.c, "a");
    const char *seeds = getenv("SEMCACHE_PERSIST_SEEDS");
    world_close(&w);
    if (seeds != NULL) {
        copy_seed(dir, compact_between ? "log.2" : "log.1", seeds);
        if (compact_between) {
            copy_seed(dir, "snap.2", seeds);
        }
    }
    if (compact_between) {
        CHECK(file_size(dir, "snap.2") > 0);
        CHECK(file_size(dir, "log.1") < 0); /* compacted away */
    }

    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    CHECK(w.st.snapshot == compact_between);
    CHECK(w.st.torn_bytes == 0 && w.st.corrupt_records == 0);
    CHECK_EQ_INT(entries_of(w.c, "a"), entries_a);
    CHECK(served_text(w.c, "a", "return policy", buf, sizeof(buf)));
    CHECK(strcmp(buf, "30 days, v2") == 0);
    CHECK(served_text(w.c, "a", "shipping cost", buf, sizeof(buf)));
    CHECK(strcmp(buf, "free over 50") == 0);
    CHECK(served_text(w.c, "a", "text only", buf, sizeof(buf)));
    CHECK(strcmp(buf, "exact layer") == 0);
    CHECK(!served_text(w.c, "a", "to delete", buf, sizeof(buf)));
    CHECK(!served_text(w.c, "a", "wrong one", buf, sizeof(buf)));
    uint64_t got = 0;
    CHECK(served_vec(w.c, "a", 1, &got) && got == id1b);
    CHECK(!served_vec(w.c, "a", 4, &got) || got != id4); /* quarantined */
    CHECK(sc_cache_feedback(w.c, id4) == SC_OK); /* still there, counted */
    CHECK(sc_cache_delete(w.c, id3) == SC_ENOTFOUND);
    CHECK_EQ_INT(entries_of(w.c, "b"), 0);
    CHECK(sc_cache_ns_get_config(w.c, "gone", &nc) == SC_ENONS);
    CHECK(sc_cache_ns_get_config(w.c, "a", &nc) == SC_OK);
    CHECK(fabsf(nc.threshold - 0.75f) < 1e-6f);
    CHECK(nc.dim == DIM && nc.ttl_ms == 3600u * 1000u);
    if (compact_between) {
        CHECK(served_text(w.c, "a", "after snapshot", buf, sizeof(buf)));
    }
    /* New ids go on above every restored one. */
    uint64_t idn;
    CHECK(put(w.c, "a", "new after restart", "n", true, 9, &idn) == SC_OK);
    CHECK(idn > id1b && idn > idg);
    /* The ledger's sums came back (the insert just made adds one). */
    sc_ledger_counts after;
    CHECK(sc_ledger_sum(w.ledger, NULL, SC_LEDGER_BY_NS, &after, NULL,
                        NULL) == SC_OK);
    CHECK_EQ_INT(after.inserts, before.inserts + 1);
    CHECK_EQ_INT(after.lookups, before.lookups + 7 + (compact_between ? 1 : 0));
    CHECK(fabs(after.usd_inserted - before.usd_inserted) < 1e-3);
    CHECK_EQ_INT(after.false_hits, before.false_hits);
    world_close(&w);
}

/* One feature row's false hits (UINT64_MAX: no such row). */
typedef struct row_pick {
    const char *tag;
    uint64_t false_hits;
} row_pick;

static void pick_row(void *arg, const char *key, const sc_ledger_counts *cnt)
{
    row_pick *rp = arg;
    if (strcmp(key, rp->tag) == 0) {
        rp->false_hits = cnt->false_hits;
    }
}

static uint64_t feature_false_hits(sc_ledger *l, const char *tag)
{
    sc_ledger_counts t;
    row_pick rp = {tag, UINT64_MAX};
    CHECK(sc_ledger_sum(l, "a", SC_LEDGER_BY_FEATURE, &t, pick_row, &rp) ==
          SC_OK);
    return rp.false_hits;
}

static void ignore_row(void *arg, const sc_ledger_row_state *row,
                       const sc_ledger_hour *hour)
{
    (void)arg;
    (void)row;
    (void)hour;
}

/* A false hit charged to the tags of its lookup stays there after a
 * restart: replaying the quarantine must not charge the entry's own row,
 * which no later ledger record corrects when it did not change after the
 * snapshot. */
static void test_feedback_tags(void)
{
    char dir[512];
    world w;
    fresh_ns(&w, dir, sizeof(dir), "fb-tags", SC_FSYNC_EVERYSEC, "a");
    uint64_t id;
    CHECK(put(w.c, "a", "return policy", "30 days", true, 1, &id) == SC_OK);
    CHECK(sc_persist_compact(w.p) == SC_OK); /* the "faq" row in a snapshot */
    /* Rows marked as logged, as the once-a-second tick leaves them (its
     * records would repeat what the snapshot holds): the close then logs
     * only the rows the lookup and the feedback change. */
    sc_ledger_export_saved(w.ledger,
                           sc_ledger_export(w.ledger, true, ignore_row, NULL));
    float v[DIM];
    vec_of(1, v);
    sc_cache_query q = {.vec = v, .dim = DIM, .feature = "web"};
    sc_cache_result r;
    CHECK(sc_cache_lookup(w.c, "a", &q, &r) == SC_OK && r.hit);
    sc_cache_result_fini(&r);
    CHECK(sc_cache_feedback_tagged(w.c, id, "web", NULL) == SC_OK);
    CHECK_EQ_INT(feature_false_hits(w.ledger, "web"), 1);
    CHECK_EQ_INT(feature_false_hits(w.ledger, "faq"), 0);
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    CHECK_EQ_INT(feature_false_hits(w.ledger, "web"), 1);
    CHECK_EQ_INT(feature_false_hits(w.ledger, "faq"), 0);
    sc_ledger_counts t;
    CHECK(sc_ledger_sum(w.ledger, "a", SC_LEDGER_BY_NS, &t, NULL, NULL) ==
          SC_OK);
    CHECK_EQ_INT(t.false_hits, 1);
    CHECK(!served_vec(w.c, "a", 1, &id)); /* still quarantined */
    world_close(&w);
}

/* The ledger's rows whose records could not be logged for want of memory
 * stay to be logged: a once-a-second tick that fails (its own buffer, or
 * the log's when it appends them: min_bytes 0 fails both, 100 only the
 * append of the run) must not leave them as saved, or the restart brings
 * back the sums from before the lookups. */
static atomic_int oom_fails;

static bool fail_alloc(void *arg, size_t more)
{
    if (more < *(const size_t *)arg) {
        return false;
    }
    atomic_fetch_add(&oom_fails, 1);
    return true;
}

static void test_ledger_oom(size_t min_bytes)
{
    char dir[512];
    world w;
    fresh_ns(&w, dir, sizeof(dir),
             min_bytes == 0 ? "ledger-oom" : "ledger-oom2", SC_FSYNC_EVERYSEC,
             "a");
    uint64_t id, got;
    CHECK(put(w.c, "a", "return policy", "30 days", true, 1, &id) == SC_OK);
    /* Lookups log nothing but the ledger's rows: only the tick's fail. */
    sc_persist_set_alloc_hook(fail_alloc, &min_bytes);
    for (int i = 0; i < 3; i++) {
        CHECK(served_vec(w.c, "a", 1, &got) && got == id);
    }
    /* Two failed ticks: the second began after the last lookup. */
    atomic_store(&oom_fails, 0);
    for (int i = 0; i < 500 && atomic_load(&oom_fails) < 2; i++) {
        usleep(10 * 1000);
    }
    CHECK(atomic_load(&oom_fails) >= 2);
    sc_persist_set_alloc_hook(NULL, NULL);
    sc_ledger_counts t0, t1;
    CHECK(sc_ledger_sum(w.ledger, NULL, SC_LEDGER_BY_NS, &t0, NULL, NULL) ==
          SC_OK);
    CHECK_EQ_INT(t0.semantic_hits, 3);
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    CHECK(sc_ledger_sum(w.ledger, NULL, SC_LEDGER_BY_NS, &t1, NULL, NULL) ==
          SC_OK);
    CHECK_EQ_INT(t1.lookups, t0.lookups);
    CHECK_EQ_INT(t1.semantic_hits, 3);
    CHECK(t1.usd_avoided > 0 && t1.usd_avoided == t0.usd_avoided);
    sc_ledger_hour h[4]; /* the lookups' hour, or two across its end */
    size_t nh = sc_ledger_timeline(w.ledger, h, 4);
    uint64_t hits = 0;
    for (size_t i = 0; i < nh; i++) {
        hits += h[i].hits;
    }
    CHECK_EQ_INT(hits, 3);
    world_close(&w);
}

/* feedback charges a false hit only for an entry that may have been
 * served, and restarts keep that straight. Hits are not logged, so an
 * entry served and then restored from the log has a hit count of 0: its
 * feedback after the restart still takes back the hit the ledger credited.
 * An entry reported without ever being served is charged nothing, before
 * the restart or by the replay, and stays quarantined. */
static void test_feedback_unserved(void)
{
    char dir[512];
    world w;
    fresh_ns(&w, dir, sizeof(dir), "fb-unserved", SC_FSYNC_EVERYSEC, "a");
    uint64_t never, served, got = 0;
    CHECK(put(w.c, "a", "never asked", "n", true, 1, &never) == SC_OK);
    CHECK(put(w.c, "a", "asked once", "s", true, 2, &served) == SC_OK);
    CHECK(served_vec(w.c, "a", 2, &got) && got == served);
    CHECK(sc_cache_feedback(w.c, never) == SC_OK);
    CHECK_EQ_INT(feature_false_hits(w.ledger, "faq"), 0);
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    CHECK(!w.st.snapshot);
    CHECK_EQ_INT(feature_false_hits(w.ledger, "faq"), 0);
    CHECK(!served_vec(w.c, "a", 1, &got) || got != never);
    CHECK(sc_cache_feedback(w.c, served) == SC_OK);
    sc_ledger_counts t;
    CHECK(sc_ledger_sum(w.ledger, "a", SC_LEDGER_BY_NS, &t, NULL, NULL) ==
          SC_OK);
    CHECK_EQ_INT(t.semantic_hits, 1);
    CHECK_EQ_INT(t.false_hits, 1);
    CHECK(t.usd_false_hits > 0 &&
          fabs(t.usd_false_hits - t.usd_avoided) < 1e-12);
    world_close(&w);
}

/* Snapshots of quarantined entries and of entries over a cap lowered
 * since: the server starts, and nothing live is lost.
 * - a quarantined entry stored with a vector and no text is saved with
 *   neither (the quarantine took it out of the index);
 * - a quarantined entry and a live one of the same text: the quarantined
 *   one replaces nothing, in whatever order the snapshot holds them (16
 *   pairs: the order is the id table's);
 * - an entry larger than the overall cap the server now starts with. */
static void test_restore_quarantined(void)
{
    char dir[512];
    world w;
    fresh_ns(&w, dir, sizeof(dir), "quarantined", SC_FSYNC_EVERYSEC, "a");
    uint64_t vid;
    CHECK(put(w.c, "a", NULL, "vector only", true, 1, &vid) == SC_OK);
    CHECK(sc_cache_feedback(w.c, vid) == SC_OK);
    char text[32];
    for (int i = 0; i < 16; i++) {
        snprintf(text, sizeof(text), "question %d", i);
        uint64_t qa, qb;
        CHECK(put(w.c, "a", text, "wrong", false, 0, &qa) == SC_OK);
        CHECK(sc_cache_feedback(w.c, qa) == SC_OK);
        CHECK(put(w.c, "a", text, "right", false, 0, &qb) == SC_OK);
    }
    char big[200000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    sc_ns_config nc;
    sc_cache_ns_config_init(&nc);
    nc.max_response_bytes = sizeof(big);
    CHECK(sc_cache_ns_create(w.c, "big", &nc) == SC_OK);
    CHECK(put(w.c, "big", "large", big, false, 0, NULL) == SC_OK);
    CHECK(sc_persist_compact(w.p) == SC_OK);
    world_close(&w);

    world_max_bytes = 100000;
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    world_max_bytes = 0;
    CHECK(w.st.snapshot);
    sc_cache_stats st;
    CHECK(sc_cache_stats_get(w.c, "a", &st) == SC_OK);
    CHECK_EQ_INT(st.entries, 33);
    CHECK_EQ_INT(st.quarantined, 17);
    int right = 0;
    char buf[64];
    for (int i = 0; i < 16; i++) {
        snprintf(text, sizeof(text), "question %d", i);
        right += served_text(w.c, "a", text, buf, sizeof(buf)) &&
                 strcmp(buf, "right") == 0;
    }
    CHECK_EQ_INT(right, 16);
    CHECK_EQ_INT(entries_of(w.c, "big"), 0); /* evicted by the lower cap */
    world_close(&w);
}

/* A quarantined entry stays the first the caps take after a restart,
 * from the log (its feedback replayed) and from a snapshot (written
 * least recent first), in its namespace and in the cache's order: the
 * entry reported after its hit goes, not the older live ones. */
static void test_quarantined_evicted_first(bool compact)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir), compact ? "qfirst-snap" : "qfirst-log");
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    char name[8], buf[64];
    for (int k = 0; k < 4; k++) {
        snprintf(name, sizeof(name), "x%d", k);
        CHECK(sc_cache_ns_create(w.c, name, NULL) == SC_OK);
        CHECK(put(w.c, name, "good", "right", false, 0, NULL) == SC_OK);
    }
    CHECK(sc_cache_ns_create(w.c, "y", NULL) == SC_OK);
    uint64_t q;
    CHECK(put(w.c, "y", "older", "right", false, 0, NULL) == SC_OK);
    CHECK(put(w.c, "y", "bad", "wrong", false, 0, &q) == SC_OK);
    CHECK(served_text(w.c, "y", "bad", buf, sizeof(buf)));
    CHECK(sc_cache_feedback(w.c, q) == SC_OK);
    CHECK(put(w.c, "y", "newer", "right", false, 0, NULL) == SC_OK);
    if (compact) {
        CHECK(sc_persist_compact(w.p) == SC_OK);
    }
    world_close(&w);

    /* Overall: the cap holds what was saved; one more insert, into the
     * namespace of the oldest live entries, takes the quarantined one. */
    world_max_entries = 7;
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    world_max_entries = 0;
    CHECK(w.st.snapshot == compact);
    CHECK_EQ_INT(entries_of(w.c, "y"), 3);
    CHECK(put(w.c, "x0", "more", "right", false, 0, NULL) == SC_OK);
    CHECK(sc_cache_delete(w.c, q) == SC_ENOTFOUND);
    for (int k = 0; k < 4; k++) {
        snprintf(name, sizeof(name), "x%d", k);
        CHECK(served_text(w.c, name, "good", buf, sizeof(buf)));
    }
    world_close(&w);

    /* The namespace's own cap, lowered: the quarantined one goes first. */
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    CHECK(put(w.c, "y", "bad", "wrong again", false, 0, &q) == SC_OK);
    CHECK(served_text(w.c, "y", "bad", buf, sizeof(buf)));
    CHECK(sc_cache_feedback(w.c, q) == SC_OK);
    if (compact) {
        CHECK(sc_persist_compact(w.p) == SC_OK);
    }
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    sc_ns_config nc;
    CHECK(sc_cache_ns_get_config(w.c, "y", &nc) == SC_OK);
    nc.max_entries = 2;
    CHECK(sc_cache_ns_configure(w.c, "y", &nc) == SC_OK);
    CHECK(sc_cache_delete(w.c, q) == SC_ENOTFOUND);
    CHECK(served_text(w.c, "y", "older", buf, sizeof(buf)));
    CHECK(served_text(w.c, "y", "newer", buf, sizeof(buf)));
    world_close(&w);
}

/* A restart with lower namespace and scope caps: every saved namespace and
 * scope comes back (from the log, and from a snapshot), and new ones are
 * refused until below the caps. */
static void test_restore_lower_caps(bool compact)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir), compact ? "caps-snap" : "caps-log");
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    const char *names[3] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        CHECK(sc_cache_ns_create(w.c, names[i], NULL) == SC_OK);
        CHECK(put(w.c, names[i], "shared text", names[i], true, 1 + i, NULL) ==
              SC_OK);
    }
    sc_cache_item it = {.text = "in scope two",
                        .text_len = 12,
                        .scope = "two",
                        .response = "s2",
                        .response_len = 2};
    CHECK(sc_cache_insert(w.c, "a", &it, NULL) == SC_OK);
    if (compact) {
        CHECK(sc_persist_compact(w.p) == SC_OK);
    }
    world_close(&w);
    world_max_ns = 1;
    world_max_scopes = 1;
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    world_max_ns = world_max_scopes = 0;
    char buf[64];
    for (int i = 0; i < 3; i++) {
        CHECK(served_text(w.c, names[i], "shared text", buf, sizeof(buf)) &&
              strcmp(buf, names[i]) == 0);
    }
    sc_cache_query q = {.text = "in scope two", .text_len = 12, .scope = "two"};
    sc_cache_result r;
    CHECK(sc_cache_lookup(w.c, "a", &q, &r) == SC_OK && r.hit);
    sc_cache_result_fini(&r);
    CHECK(sc_cache_ns_create(w.c, "d", NULL) == SC_ENSFULL);
    it.scope = "three";
    CHECK(sc_cache_insert(w.c, "a", &it, NULL) == SC_ESCOPEFULL);
    world_close(&w);
}

/* Appends bytes to the end of dir/name. */
static void append_bytes(const char *dir, const char *name, const void *b,
                         size_t n)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "ab");
    CHECK(f != NULL);
    if (f != NULL) {
        CHECK(fwrite(b, 1, n, f) == n);
        fclose(f);
    }
}

static void flip_byte(const char *dir, const char *name, long at)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    unsigned char b;
    CHECK(pread(fd, &b, 1, at) == 1);
    b ^= 0x5a;
    CHECK(pwrite(fd, &b, 1, at) == 1);
    close(fd);
}

static void fill(sc_cache *c, int n, uint64_t seed0)
{
    for (int i = 0; i < n; i++) {
        char t[64], r[64];
        snprintf(t, sizeof(t), "question %d", i);
        snprintf(r, sizeof(r), "answer %d", i);
        CHECK(put(c, "default", t, r, true, seed0 + (uint64_t)i, NULL) ==
              SC_OK);
    }
}

/* A fresh directory `name` under root (its path in dir[cap]), a cache on
 * it in w with namespace "default" holding fill's n entries. */
static void fresh_filled(world *w, char *dir, size_t cap, const char *name,
                         sc_fsync fs, int n, uint64_t seed0)
{
    fresh_dir(dir, cap, name);
    CHECK(world_open(w, dir, fs, false) == SC_OK);
    CHECK(sc_cache_ns_create(w->c, "default", NULL) == SC_OK);
    fill(w->c, n, seed0);
}

static int count_served(sc_cache *c, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        char t[64], r[64], want[64];
        snprintf(t, sizeof(t), "question %d", i);
        snprintf(want, sizeof(want), "answer %d", i);
        k += served_text(c, "default", t, r, sizeof(r)) &&
             strcmp(r, want) == 0;
    }
    return k;
}

/* A record cut short by a crash: cut off, its bytes counted, the rest kept;
 * the log then goes on from the cut. */
static void test_torn_tail(void)
{
    char dir[512];
    world w;
    fresh_filled(&w, dir, sizeof(dir), "torn", SC_FSYNC_ALWAYS, 20, 100);
    world_close(&w);
    long size = file_size(dir, "log.1");
    /* Half a record: a frame that claims 500 bytes, 37 of them there. */
    unsigned char torn[45] = {0xf4, 0x01, 0, 0, 0x12, 0x34, 0x56, 0x78, 3};
    append_bytes(dir, "log.1", torn, sizeof(torn));
    CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_OK);
    CHECK_EQ_INT(w.st.torn_bytes, sizeof(torn));
    CHECK_EQ_INT(count_served(w.c, 20), 20);
    CHECK_EQ_INT(file_size(dir, "log.1"), size);
    uint64_t id;
    CHECK(put(w.c, "default", "after the cut", "kept", true, 999, &id) ==
          SC_OK);
    world_close(&w);
    /* A torn tail of zeros (the file grew, its data never came). */
    unsigned char zeros[300] = {0};
    append_bytes(dir, "log.1", zeros, sizeof(zeros));
    CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_OK);
    CHECK_EQ_INT(w.st.torn_bytes, sizeof(zeros));
    char buf[64];
    CHECK(served_text(w.c, "default", "after the cut", buf, sizeof(buf)));
    CHECK_EQ_INT(count_served(w.c, 20), 20);
    world_close(&w);
}

/* What a crash leaves in the directory, cleaned up at load: a last log
 * made but empty (the crash came before its header: a compaction's new
 * log), and the training files of a snapshot that was never renamed into
 * place. */
static void test_crash_leftovers(void)
{
    char dir[512];
    world w;
    fresh_filled(&w, dir, sizeof(dir), "leftovers", SC_FSYNC_ALWAYS, 5, 400);
    world_close(&w);
    append_bytes(dir, "log.2", "", 0);
    append_bytes(dir, "snap.7.ivf.0", "stale", 5);
    CHECK_EQ_INT(file_size(dir, "log.2"), 0);
    CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_OK);
    CHECK_EQ_INT(w.st.logs, 2);
    CHECK_EQ_INT(count_served(w.c, 5), 5);
    CHECK_EQ_INT(file_size(dir, "snap.7.ivf.0"), -1);
    uint64_t id;
    CHECK(put(w.c, "default", "into log 2", "kept", true, 999, &id) == SC_OK);
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_OK);
    char buf[64];
    CHECK(served_text(w.c, "default", "into log 2", buf, sizeof(buf)));
    CHECK_EQ_INT(count_served(w.c, 5), 5);
    world_close(&w);
}

/* dir holds 5 entries in log.1 and a torn log.2 of len bytes after it:
 * the start cuts log.2 (its bytes counted as torn), begins it again with
 * a whole header of this version and appends to it, and the next start
 * serves what was appended, with nothing torn. */
static void check_torn_log2(const char *dir, size_t len)
{
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_OK);
    if (w.load_rc != SC_OK) {
        fprintf(stderr, "  log.2 of %zu bytes: %s\n", len, w.msg);
    }
    CHECK_EQ_INT(w.st.torn_bytes, len);
    CHECK_EQ_INT(w.st.logs, 2);
    CHECK_EQ_INT(count_served(w.c, 5), 5);
    CHECK_EQ_INT(file_size(dir, "log.2"), HDR);
    uint64_t id;
    CHECK(put(w.c, "default", "into log 2", "kept", true, 999, &id) == SC_OK);
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_OK);
    CHECK_EQ_INT(w.st.torn_bytes, 0);
    char buf[64];
    CHECK(served_text(w.c, "default", "into log 2", buf, sizeof(buf)));
    CHECK_EQ_INT(count_served(w.c, 5), 5);
    world_close(&w);
}

/* A last log cut by a crash while its header was written, 8 to 23 bytes
 * whose version bytes are garbage (zeros where the data never came, or
 * what the blocks held; its magic too): no record fits in it, so it is cut and
 * begun again, its bytes counted as torn, not refused as a bad version. A whole
 * header with a bad version is still refused, naming the file: in a log
 * that is not the last, and in the last one (a later build's log). */
static void test_torn_header(void)
{
    static const struct {
        size_t len;
        uint8_t v0, v1;
        uint8_t fill;
        bool magic; /* false: zeros there too */
    } cuts[] = {
        {8, 0xff, 0xff, 0, true},     {12, 0, 0, 0, true},
        {16, 0x37, 0x9a, 0xee, true}, {16, 9, 0, 0, true},
        {20, 0, 0, 0x11, true},       {23, 0xbe, 0xef, 0xab, true},
        {18, 0, 0, 0, false},
    };
    for (size_t k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
        char dir[512], name[32];
        snprintf(name, sizeof(name), "tornhdr%zu", k);
        world w;
        fresh_filled(&w, dir, sizeof(dir), name, SC_FSYNC_ALWAYS, 5, 400);
        world_close(&w);
        uint8_t h[HDR];
        memset(h, cuts[k].fill, sizeof(h));
        if (cuts[k].magic) {
            memcpy(h, "SCLOG", 6);
        }
        h[6] = cuts[k].v0;
        h[7] = cuts[k].v1;
        append_bytes(dir, "log.2", h, cuts[k].len);
        check_torn_log2(dir, cuts[k].len);
        if (k == 0) {
            /* log.1's whole header with a bad version, log.2 after it. */
            flip_byte(dir, "log.1", 7);
            CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) ==
                  SC_EBADVERSION);
            CHECK(strstr(w.msg, "/log.1: format version") != NULL);
            world_close(&w);
            flip_byte(dir, "log.1", 7);
            /* The last log's whole header with a bad version. */
            flip_byte(dir, "log.2", 7);
            CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) ==
                  SC_EBADVERSION);
            CHECK(strstr(w.msg, "/log.2: format version") != NULL);
            world_close(&w);
            flip_byte(dir, "log.2", 7);
            CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_OK);
            char buf[64];
            CHECK(served_text(w.c, "default", "into log 2", buf, sizeof(buf)));
            world_close(&w);
        }
    }
}

/* The key of dir/log.1 (its header read). */
static uint32_t log_key(const char *dir)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/log.1", dir);
    uint8_t h[HDR];
    FILE *f = fopen(path, "rb");
    size_t n = f != NULL ? fread(h, 1, sizeof(h), f) : 0;
    if (f != NULL) {
        fclose(f);
    }
    CHECK(n >= 16 && n >= hdr_len(h));
    return n >= 16 && n >= hdr_len(h) ? file_key(h) : 0;
}

/* A frame of a whole valid record "drop namespace ns", in a file of key,
 * into out (room for 8 + 5 + 128 bytes); returns its length. A client does
 * not know a file's key (random), but the tests plant records that would
 * verify, the worst case. */
static size_t planted_drop(uint8_t *out, const char *ns, uint32_t key)
{
    size_t nl = strlen(ns), bn = 1 + 4 + nl;
    uint8_t *body = out + 8;
    body[0] = 2; /* NS_DROP */
    body[1] = (uint8_t)nl;
    body[2] = body[3] = body[4] = 0;
    memcpy(body + 5, ns, nl);
    uint32_t ck = XXH32(body, bn, 0x53434c47u) ^ key;
    for (int i = 0; i < 4; i++) {
        out[i] = (uint8_t)(bn >> (8 * i));
        out[4 + i] = (uint8_t)(ck >> (8 * i));
    }
    return 8 + bn;
}

/* Responses go into the log as they came, so a client can put bytes in one
 * that read as a whole valid record (here: drop namespace "victim"). When
 * the record holding them is torn by a crash, it is cut at start-up (a
 * field of it runs past the end of the file: the record being written),
 * without --repair and without searching inside it; when it is whole but
 * damaged, the start is refused and --repair drops it whole. Searching
 * inside it applied the planted record. */
static void test_planted_record(void)
{
    uint8_t frame[160];
    const size_t rl = 200000;
    char *resp = malloc(rl + 1);
    memset(resp, 'x', rl);
    resp[rl] = '\0';
    for (int round = 0; round < 2; round++) {
        char dir[512];
        fresh_dir(dir, sizeof(dir), "planted");
        world w;
        CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_OK);
        memcpy(resp + 16, frame, planted_drop(frame, "victim", log_key(dir)));
        CHECK(sc_cache_ns_create(w.c, "victim", NULL) == SC_OK);
        CHECK(sc_cache_ns_create(w.c, "att", NULL) == SC_OK);
        CHECK(put(w.c, "victim", "secret question", "victim answer", true, 1,
                  NULL) == SC_OK);
        long before = file_size(dir, "log.1"); /* written: fsync always */
        sc_cache_item it = {.text = "attacker",
                            .text_len = 8,
                            .response = resp,
                            .response_len = rl};
        CHECK(sc_cache_insert(w.c, "att", &it, NULL) == SC_OK);
        world_close(&w);
        CHECK(file_size(dir, "log.1") > before + (long)rl);
        char path[600];
        snprintf(path, sizeof(path), "%s/log.1", dir);
        char buf[64];
        if (round == 0) {
            /* Torn: the file ends 4 KiB past the planted record. The
             * start goes on without --repair, the torn record cut (it
             * begins at `before`, or a ledger flush's rows later), the
             * planted drop inside it not applied. */
            CHECK(truncate(path, before + 4096) == 0);
            CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
            CHECK(w.st.torn_bytes > 4096 - 1024 && w.st.torn_bytes <= 4096);
            CHECK_EQ_INT(w.st.corrupt_records, 0);
            CHECK_EQ_INT(file_size(dir, "log.1"),
                         before + 4096 - (long)w.st.torn_bytes);
            CHECK(served_text(w.c, "victim", "secret question", buf,
                              sizeof(buf)));
            CHECK(strcmp(buf, "victim answer") == 0);
            CHECK(entries_of(w.c, "att") == 0);
            /* The log goes on from the cut. */
            CHECK(put(w.c, "victim", "after the cut", "kept", true, 2, NULL) ==
                  SC_OK);
            world_close(&w);
            CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
            CHECK_EQ_INT(w.st.torn_bytes, 0);
            CHECK(
                served_text(w.c, "victim", "after the cut", buf, sizeof(buf)));
            CHECK(served_text(w.c, "victim", "secret question", buf,
                              sizeof(buf)));
            world_close(&w);
            continue;
        }
        /* Whole, a byte of it changed (its checksum fails): valid-looking
         * records follow (the planted one, the ledger's): refused as
         * corrupt, so that a damaged record never hides real ones; then
         * --repair drops the bad record whole, the planted one in it
         * unapplied. */
        flip_byte(dir, "log.1", before + 100000);
        CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_ECHECKSUM);
        CHECK(strstr(w.msg, "valid records follow it") != NULL);
        world_close(&w);
        CHECK(world_open(&w, dir, SC_FSYNC_NO, true) == SC_OK);
        CHECK_EQ_INT(w.st.corrupt_records, 1);
        CHECK(served_text(w.c, "victim", "secret question", buf, sizeof(buf)));
        CHECK(strcmp(buf, "victim answer") == 0);
        CHECK(entries_of(w.c, "att") == 0);
        world_close(&w);
    }
    free(resp);
}

/* dir/name's bytes (malloc'd; NULL if unreadable), *len their count. */
static uint8_t *read_all(const char *dir, const char *name, size_t *len)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *d = malloc(n > 0 ? (size_t)n : 1);
    *len = d != NULL ? fread(d, 1, (size_t)n, f) : 0;
    fclose(f);
    return d;
}

/* dir/name made to hold a's n bytes and then b's m. */
static void write_two(const char *dir, const char *name, const uint8_t *a,
                      size_t n, const uint8_t *b, size_t m)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f != NULL) {
        CHECK(fwrite(a, 1, n, f) == n && (m == 0 || fwrite(b, 1, m, f) == m));
        fclose(f);
    }
}

/* A last log of a whole header's length or more that is all zeros: a
 * crash left the file extended where its header (and records) never came.
 * Nothing in it is readable, so it is torn like a shorter one: cut, begun
 * again with a header, appended to. An all-zero log that is not the last,
 * and a last one of 24 bytes of garbage, are still refused. */
static void test_zeroed_log(void)
{
    static const size_t lens[] = {HDR, 4096};
    static uint8_t zeros[4096];
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        char dir[512], name[32];
        snprintf(name, sizeof(name), "zeroed%zu", k);
        world w;
        fresh_filled(&w, dir, sizeof(dir), name, SC_FSYNC_ALWAYS, 5, 400);
        world_close(&w);
        append_bytes(dir, "log.2", zeros, lens[k]);
        check_torn_log2(dir, lens[k]);
        if (k == 0) {
            /* All zeros in a log before the last: refused. */
            long n1 = file_size(dir, "log.1");
            CHECK(n1 > 0 && (size_t)n1 <= sizeof(zeros));
            write_two(dir, "log.1", zeros, (size_t)n1, NULL, 0);
            CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_EBADFILE);
            CHECK(strstr(w.msg, "/log.1: not a semcached log") != NULL);
            world_close(&w);
        } else {
            /* The last log's 24 bytes of garbage: refused. */
            uint8_t junk[HDR];
            memset(junk, 0x11, sizeof(junk));
            append_bytes(dir, "log.3", junk, sizeof(junk));
            CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_EBADFILE);
            CHECK(strstr(w.msg, "/log.3: not a semcached log") != NULL);
            world_close(&w);
        }
    }
}

/* Whether ns exists in c. */
static bool ns_there(sc_cache *c, const char *ns)
{
    sc_ns_config nc;
    return sc_cache_ns_get_config(c, ns, &nc) == SC_OK;
}

/* A crash the moment a making's namespace record is written (append_hook
 * flushes the log then and copies it, as a kill -9 there would leave it):
 * the name's base went in the log only after its record, a flush between
 * the two (the tick's, another writer's commit) wrote the namespace without
 * its base, and after the restart the name's sums of the dropped namespace
 * counted as the new one's ((dropped) went down). The two are one run. */
typedef struct crash_copy {
    sc_persist *p;
    const char *dir, *to;
    int copies;
} crash_copy;

static void copy_at_ns_put(void *arg, int kind)
{
    crash_copy *cc = arg;
    if (kind != SC_CHANGE_NS_PUT || cc->copies > 0) {
        return;
    }
    cc->copies++;
    CHECK(sc_persist_sync(cc->p) == SC_OK);
    char cmd[1400];
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && cp '%s'/log.* '%s'/", cc->to,
             cc->dir, cc->to);
    CHECK(system(cmd) == 0);
}

static void test_made_with_base(void)
{
    char dir[512], crash[512];
    fresh_dir(dir, sizeof(dir), "made-base");
    fresh_dir(crash, sizeof(crash), "made-base-crash");
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    CHECK(sc_cache_ns_create(w.c, "a", NULL) == SC_OK);
    uint64_t id;
    CHECK(put(w.c, "a", "return policy", "30 days", true, 1, &id) == SC_OK);
    float v[DIM];
    vec_of(1, v);
    sc_cache_query q = {.vec = v, .dim = DIM};
    sc_cache_result r;
    CHECK(sc_cache_lookup(w.c, "a", &q, &r) == SC_OK && r.hit);
    sc_cache_result_fini(&r);
    CHECK(sc_cache_ns_drop(w.c, "a") == SC_OK);
    sc_ledger_counts row;
    CHECK(sc_ledger_sum(w.ledger, "a", SC_LEDGER_BY_NS, &row, NULL, NULL) ==
          SC_OK);
    CHECK(row.lookups == 1 && row.last_ms != 0);
    crash_copy cc = {.p = w.p, .dir = dir, .to = crash};
    sc_persist_set_append_hook(copy_at_ns_put, &cc);
    CHECK(sc_cache_ns_create(w.c, "a", NULL) == SC_OK);
    sc_persist_set_append_hook(NULL, NULL);
    CHECK_EQ_INT(cc.copies, 1);
    sc_ledger_counts base;
    sc_ledger_ns_base(w.ledger, "a", &base);
    CHECK(base.lookups == 1 && base.last_ms == row.last_ms);
    world_close(&w);
    /* The restart from the log as the crash left it. */
    CHECK(world_open(&w, crash, SC_FSYNC_EVERYSEC, false) == SC_OK);
    CHECK(ns_there(w.c, "a"));
    sc_ledger_ns_base(w.ledger, "a", &base);
    CHECK_EQ_INT(base.lookups, 1);
    CHECK(base.last_ms == row.last_ms);
    world_close(&w);
}

/* A namespace making during the ledger's once-a-second save: the making
 * waits for the save (its base is logged in order with the save's rows),
 * but with no cache lock held, so that a lookup and an ns_list on other
 * namespaces go ahead meanwhile. Before, the making waited for the save's
 * lock under the cache's global write lock, and every lookup, insert and
 * ns_list waited out the rest of the save (at 300,000 namespaces, a
 * quarter changed a second, ns_list stalled up to 450 ms). Here the save
 * is held, between two of its holds of the ledger, until the making waits
 * for it and a lookup and an ns_list have returned; before, they waited
 * for the save, which waited for them: a deadlock, which the guard below
 * (10 s, not a measure of speed) turns into a failed check. A name never
 * seen, which makes no base, is made without waiting for the save at
 * all. */
typedef struct stall {
    world *w;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int hooked;        /* page hooks run */
    bool making_waits; /* the making is about to wait for the save */
    bool looked;       /* the lookup and ns_list returned */
    bool looked_in_save;
    bool save_done; /* the page hook that held the save returned */
    sc_err made_rc, lookup_rc, list_rc;
    bool hit;
    pthread_t maker, looker;
    /* A name never seen ("fresh": no base) made meanwhile. */
    pthread_t fresh;
    bool fresh_done, fresh_in_save;
    sc_err fresh_rc;
} stall;

static void stall_signal(stall *st, bool *flag)
{
    pthread_mutex_lock(&st->mu);
    *flag = true;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

static void stall_wait(stall *st, const bool *flag)
{
    pthread_mutex_lock(&st->mu);
    while (!*flag) {
        pthread_cond_wait(&st->cv, &st->mu);
    }
    pthread_mutex_unlock(&st->mu);
}

static void stall_making(void *arg)
{
    stall_signal(arg, &((stall *)arg)->making_waits);
}

static void *stall_maker(void *arg)
{
    stall *st = arg;
    st->made_rc = sc_cache_ns_create(st->w->c, "a", NULL);
    return NULL;
}

static void *stall_fresh(void *arg)
{
    stall *st = arg;
    st->fresh_rc = sc_cache_ns_create(st->w->c, "fresh", NULL);
    stall_signal(st, &st->fresh_done);
    return NULL;
}

/* Waits for *flag for at most 10 s (a deadlock's guard, not a measure of
 * speed); returns whether it came. */
static bool stall_wait_guarded(stall *st, const bool *flag)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&st->mu);
    while (!*flag && pthread_cond_timedwait(&st->cv, &st->mu, &until) == 0) {
    }
    bool came = *flag;
    pthread_mutex_unlock(&st->mu);
    return came;
}

static void *stall_looker(void *arg)
{
    stall *st = arg;
    float v[DIM];
    vec_of(2, v);
    sc_cache_query q = {.vec = v, .dim = DIM};
    sc_cache_result r;
    st->lookup_rc = sc_cache_lookup(st->w->c, "b", &q, &r);
    if (st->lookup_rc == SC_OK) {
        st->hit = r.hit;
        sc_cache_result_fini(&r);
    }
    static char names[4][SC_CACHE_NS_NAME_MAX + 1];
    size_t n = 0;
    st->list_rc = sc_cache_ns_list(st->w->c, names, 4, &n);
    stall_signal(st, &st->looked);
    return NULL;
}

/* The save's page hook (persister thread, ledger_mu held, the ledger's
 * lock not): the first time, the making and the lookups, made while the
 * save waits here. */
static void stall_page(void *arg, bool picked)
{
    (void)picked;
    stall *st = arg;
    if (st->hooked++ != 0) {
        return;
    }
    /* A name with no row makes no base: it need not wait for the save. */
    CHECK(pthread_create(&st->fresh, NULL, stall_fresh, st) == 0);
    st->fresh_in_save = stall_wait_guarded(st, &st->fresh_done);
    pthread_mutex_lock(&st->mu);
    st->making_waits = false; /* "fresh"'s, where it waited */
    pthread_mutex_unlock(&st->mu);
    CHECK(pthread_create(&st->maker, NULL, stall_maker, st) == 0);
    stall_wait(st, &st->making_waits);
    CHECK(pthread_create(&st->looker, NULL, stall_looker, st) == 0);
    st->looked_in_save = stall_wait_guarded(st, &st->looked);
    stall_signal(st, &st->save_done);
}

/* A making of a name with no ledger row when it looked, whose row a charge
 * made before its base (the making not begun: it holds the cache's lock
 * when it finds it has a base to write), against a making of a name with
 * a row (begun: the save's lock taken, then waiting for the cache's).
 * The first took the save's lock under the cache's: each waited for the
 * other, and every lookup and save after them (a review's test, 3 runs of
 * 3). Now the first lets the cache's lock go and takes the save's first.
 * The order is set with sleeps (no hook sits where a thread waits for a
 * lock): they decide only whether the old deadlock is reached, not the
 * outcome with the fix; a hang is a failed check after 10 s. */
typedef struct relock_run {
    world *w;
    atomic_int armed, in_hook, release, x_hooked, y_done, x_done;
    atomic_int puts;
    crash_copy cc; /* the log as y's record left it (the third NS_PUT) */
    sc_err y_rc, x_rc;
} relock_run;

static void relock_append(void *arg, int kind)
{
    relock_run *d = arg;
    int one = 1;
    /* z's, then x's, then y's: y waits for the save's lock x holds. */
    if (kind == SC_CHANGE_NS_PUT && atomic_fetch_add(&d->puts, 1) == 2) {
        copy_at_ns_put(&d->cc, kind);
    }
    if (kind == SC_CHANGE_NS_PUT &&
        atomic_compare_exchange_strong(&d->armed, &one, 0)) {
        atomic_store(&d->in_hook, 1); /* the cache's lock held here */
        while (!atomic_load(&d->release)) {
            usleep(1000);
        }
    }
}

static void relock_making(void *arg)
{
    atomic_store(&((relock_run *)arg)->x_hooked, 1);
}

static void *relock_z(void *arg)
{
    relock_run *d = arg;
    (void)sc_cache_ns_create(d->w->c, "z", NULL);
    return NULL;
}

static void *relock_y(void *arg)
{
    relock_run *d = arg;
    d->y_rc = sc_cache_ns_create(d->w->c, "y", NULL);
    atomic_store(&d->y_done, 1);
    return NULL;
}

static void *relock_x(void *arg)
{
    relock_run *d = arg;
    d->x_rc = sc_cache_ns_create(d->w->c, "x", NULL);
    atomic_store(&d->x_done, 1);
    return NULL;
}

static void test_making_relock(void)
{
    char dir[512], crash[512];
    fresh_dir(dir, sizeof(dir), "making-relock");
    fresh_dir(crash, sizeof(crash), "making-relock-crash");
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    sc_ledger_call call = {
        .model = "gpt-4o-mini", .input_tokens = 10, .output_tokens = 10};
    sc_ledger_tags tx = {.ns = "x"}; /* a row: x's making is begun */
    sc_ledger_insert(w.ledger, &tx, &call, 1000);
    static relock_run d;
    memset(&d, 0, sizeof(d));
    d.w = &w;
    d.cc = (crash_copy){.p = w.p, .dir = dir, .to = crash};
    atomic_store(&d.armed, 1);
    sc_persist_set_append_hook(relock_append, &d);
    pthread_t z, y, x;
    pthread_create(&z, NULL, relock_z, &d);
    while (!atomic_load(&d.in_hook)) {
        usleep(1000);
    }
    pthread_create(&y, NULL, relock_y, &d); /* no row: waits, not begun */
    usleep(200000);
    sc_ledger_tags ty = {.ns = "y"}; /* a charge racing y's making */
    sc_ledger_insert(w.ledger, &ty, &call, 1000);
    sc_persist_set_making_hook(relock_making, &d);
    pthread_create(&x, NULL, relock_x, &d); /* the save's lock, then waits */
    while (!atomic_load(&d.x_hooked)) {
        usleep(1000);
    }
    usleep(200000);
    atomic_store(&d.release, 1);
    for (int i = 0;
         i < 1000 && !(atomic_load(&d.y_done) && atomic_load(&d.x_done)); i++) {
        usleep(10000);
    }
    bool done = atomic_load(&d.y_done) && atomic_load(&d.x_done);
    CHECK(done);
    if (!done) {
        fprintf(stderr,
                "test_persist: makings of y and x deadlocked "
                "(y %d, x %d)\n",
                atomic_load(&d.y_done), atomic_load(&d.x_done));
        _exit(1); /* the threads cannot be joined */
    }
    pthread_join(z, NULL);
    pthread_join(y, NULL);
    pthread_join(x, NULL);
    CHECK(d.y_rc == SC_OK && d.x_rc == SC_OK);
    sc_persist_set_append_hook(NULL, NULL);
    sc_persist_set_making_hook(NULL, NULL);
    /* y's base (its charge) went with its record, after the relock: a
     * restart from the log as y's record left it has it. */
    CHECK_EQ_INT(d.cc.copies, 1);
    sc_ledger_counts base, got;
    sc_ledger_ns_base(w.ledger, "y", &base);
    CHECK(base.inserts == 1 && base.last_ms == 1000);
    world_close(&w);
    CHECK(world_open(&w, crash, SC_FSYNC_EVERYSEC, false) == SC_OK);
    CHECK(ns_there(w.c, "y"));
    sc_ledger_ns_base(w.ledger, "y", &got);
    CHECK(got.inserts == base.inserts && got.last_ms == base.last_ms);
    world_close(&w);
}

static void test_made_during_save(void)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir), "made-during-save");
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    CHECK(sc_cache_ns_create(w.c, "a", NULL) == SC_OK);
    CHECK(put(w.c, "a", "return policy", "30 days", true, 1, NULL) == SC_OK);
    float v[DIM];
    vec_of(1, v);
    sc_cache_query q = {.vec = v, .dim = DIM};
    sc_cache_result r;
    CHECK(sc_cache_lookup(w.c, "a", &q, &r) == SC_OK && r.hit);
    sc_cache_result_fini(&r);
    CHECK(sc_cache_ns_drop(w.c, "a") == SC_OK); /* "a" made again: a base */
    CHECK(sc_cache_ns_create(w.c, "b", NULL) == SC_OK);
    CHECK(put(w.c, "b", "opening hours", "9 to 5", true, 2, NULL) == SC_OK);
    /* Rows enough, changed, for a save of several holds. */
    sc_ledger_set_page_chunk(w.ledger, 8);
    sc_ledger_call call = {
        .model = "gpt-4o-mini", .input_tokens = 10, .output_tokens = 10};
    for (int i = 0; i < 200; i++) {
        char ns[32];
        snprintf(ns, sizeof(ns), "n%03d", i);
        sc_ledger_tags t = {.ns = ns};
        sc_ledger_insert(w.ledger, &t, &call, 1000);
    }
    stall st = {.w = &w};
    pthread_mutex_init(&st.mu, NULL);
    pthread_cond_init(&st.cv, NULL);
    sc_persist_set_making_hook(stall_making, &st);
    sc_ledger_set_page_hook(w.ledger, stall_page, &st);
    stall_wait(&st, &st.save_done); /* the next tick's save */
    CHECK(st.looked_in_save);
    CHECK(st.fresh_in_save);
    sc_ledger_set_page_hook(w.ledger, NULL, NULL);
    /* The making went on once the save ended. */
    pthread_join(st.maker, NULL);
    pthread_join(st.looker, NULL);
    pthread_join(st.fresh, NULL);
    CHECK_EQ_INT(st.fresh_rc, SC_OK);
    CHECK(ns_there(w.c, "fresh"));
    CHECK(ns_there(w.c, "a"));
    sc_persist_set_making_hook(NULL, NULL);
    CHECK_EQ_INT(st.made_rc, SC_OK);
    CHECK_EQ_INT(st.lookup_rc, SC_OK);
    CHECK(st.hit);
    CHECK_EQ_INT(st.list_rc, SC_OK);
    world_close(&w);
    /* Its base was logged with it. */
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    CHECK(ns_there(w.c, "a"));
    sc_ledger_counts base;
    sc_ledger_ns_base(w.ledger, "a", &base);
    CHECK_EQ_INT(base.lookups, 1);
    world_close(&w);
    pthread_cond_destroy(&st.cv);
    pthread_mutex_destroy(&st.mu);
}

/* Stale bytes at the end of the last log, as power loss can leave them
 * (the file's size grew, its data never came, and the blocks it was given
 * still hold an older file's): here whole valid records of log.1, the log
 * of this same server before a compaction (namespace "ghost" made with an
 * entry, then dropped), copied after log.2's records, from a record's
 * start or from 3 bytes before it (mid-record, as a block would). They
 * belong to another file: cut as a torn tail, with and without --repair,
 * and never applied. In a log that is not the last they are corrupt:
 * refused, and --repair drops them unapplied. Before the records were
 * bound to their file, they read as valid: applied with no word (from a
 * record's start), or refused and then applied by --repair. */
static void test_stale_tail(void)
{
    char dir[512];
    world w;
    fresh_filled(&w, dir, sizeof(dir), "stale", SC_FSYNC_ALWAYS, 5, 1100);
    long a = file_size(dir, "log.1");
    CHECK(sc_cache_ns_create(w.c, "ghost", NULL) == SC_OK);
    CHECK(put(w.c, "ghost", "ghost question", "ghost answer", true, 1200,
              NULL) == SC_OK);
    long b = file_size(dir, "log.1"); /* written: fsync always */
    CHECK(sc_cache_ns_drop(w.c, "ghost") == SC_OK);
    world_close(&w);
    size_t oldlen = 0;
    uint8_t *old = read_all(dir, "log.1", &oldlen);
    CHECK(old != NULL && a > 16 && b > a && (size_t)b <= oldlen);
    CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_OK);
    CHECK(sc_persist_compact(w.p) == SC_OK); /* snap.2, log.2 */
    for (int i = 5; i < 8; i++) {
        char t[64], r[64];
        snprintf(t, sizeof(t), "question %d", i);
        snprintf(r, sizeof(r), "answer %d", i);
        CHECK(put(w.c, "default", t, r, true, 1100 + (uint64_t)i, NULL) ==
              SC_OK);
    }
    world_close(&w);
    CHECK(file_size(dir, "log.1") < 0);
    size_t len2 = 0, snaplen = 0;
    uint8_t *log2 = read_all(dir, "log.2", &len2);
    uint8_t *snap = read_all(dir, "snap.2", &snaplen);
    CHECK(log2 != NULL && snap != NULL);
    if (old == NULL || log2 == NULL || snap == NULL || b <= a || a < 16) {
        free(old);
        free(log2);
        free(snap);
        return;
    }
    char msg[512];
    for (int from = 0; from < 2; from++) {
        const uint8_t *stale = old + a - (from ? 3 : 0);
        size_t sl = (size_t)(b - a) + (from ? 3 : 0);
        for (int repair = 0; repair < 2; repair++) {
            write_two(dir, "log.2", log2, len2, stale, sl);
            const char *seeds = getenv("SEMCACHE_PERSIST_SEEDS");
            if (seeds != NULL && from == 1 && repair == 0) {
                char to[600];
                snprintf(to, sizeof(to), "%s/stale", seeds);
                copy_seed(dir, "log.2", to);
            }
            sc_err rc = world_open(&w, dir, SC_FSYNC_ALWAYS, repair);
            if (rc != SC_OK || w.st.torn_bytes != sl ||
                ns_there(w.c, "ghost")) {
                fprintf(stderr,
                        "stale tail (from %d, repair %d): %s (%s), torn %llu "
                        "of %zu, ghost %s\n",
                        from, repair, sc_strerror(rc), w.msg,
                        (unsigned long long)w.st.torn_bytes, sl,
                        ns_there(w.c, "ghost") ? "applied" : "not applied");
            }
            CHECK_EQ_INT(rc, SC_OK);
            CHECK_EQ_INT(file_size(dir, "log.2"), (long)len2); /* cut */
            CHECK_EQ_INT(w.st.torn_bytes, sl);
            CHECK_EQ_INT(w.st.corrupt_records, 0);
            CHECK(!ns_there(w.c, "ghost"));
            CHECK_EQ_INT(count_served(w.c, 8), 8);
            world_close(&w);
        }
        /* Not the last log: corrupt; --repair drops it, unapplied. */
        uint8_t *d = malloc(len2 + sl);
        memcpy(d, log2, len2);
        memcpy(d + len2, stale, sl);
        for (int repair = 0; repair < 2; repair++) {
            sc_cache *c;
            CHECK(sc_cache_open(NULL, &c) == SC_OK);
            sc_persist_load_stats st;
            memset(&st, 0, sizeof(st));
            CHECK_EQ_INT(sc_persist_replay(c, NULL, SC_PERSIST_SNAPSHOT, snap,
                                           snaplen, false, false, 0, NULL, &st,
                                           NULL, msg, sizeof(msg)),
                         SC_OK);
            sc_err rc =
                sc_persist_replay(c, NULL, SC_PERSIST_LOG, d, len2 + sl, false,
                                  repair, 0, NULL, &st, NULL, msg, sizeof(msg));
            if (repair) {
                CHECK_EQ_INT(rc, SC_OK);
                CHECK_EQ_INT(st.corrupt_records, 1);
                CHECK_EQ_INT(st.corrupt_bytes, sl);
            } else {
                CHECK_EQ_INT(rc, SC_ECHECKSUM);
                CHECK(strstr(msg, "not the end of the last log") != NULL);
            }
            CHECK(!ns_there(c, "ghost"));
            sc_cache_close(c);
        }
        free(d);
    }
    free(old);
    free(log2);
    free(snap);
}

/* The seed tests/fuzz/corpus/fuzz_persist/name after its control byte
 * (malloc'd; NULL if unreadable), *len its length. */
static uint8_t *read_seed(const char *name, size_t *len)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus/fuzz_persist",
             SC_SOURCE_DIR);
    size_t n = 0;
    uint8_t *d = read_all(dir, name, &n);
    CHECK(d != NULL && n > 17);
    if (d == NULL || n <= 17) {
        free(d);
        return NULL;
    }
    memmove(d, d + 1, n - 1);
    *len = n - 1;
    return d;
}

/* The format version of dir/name (0: unreadable). */
static unsigned file_version(const char *dir, const char *name)
{
    size_t n = 0;
    uint8_t *d = read_all(dir, name, &n);
    unsigned v = d != NULL && n >= 8 ? (unsigned)(d[6] | d[7] << 8) : 0;
    free(d);
    return v;
}

/* Files an earlier build wrote (the fuzz seeds snapshot-v2, a version 2
 * snapshot, and log-after-snapshot, a version 1 log, both of
 * test_round_trip with a compaction, the log with a torn tail) load; the
 * log's tail is cut and it is not appended to (no client's bytes written
 * under the plain checksum): the changes go to log.3, of this version,
 * and all loads again (log.2 not the last log any more); the next
 * compaction writes both files in this version, with their nonce. Before
 * 2026-12-06 log.2 was appended to in its format until that compaction. */
static void test_old_format_goes_on(void)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir), "oldformat");
    CHECK(mkdir(dir, 0700) == 0);
    size_t sn = 0, ln = 0;
    uint8_t *snap = read_seed("snapshot-v2", &sn);
    uint8_t *log = read_seed("log-after-snapshot", &ln);
    if (snap == NULL || log == NULL) {
        free(snap);
        free(log);
        return;
    }
    CHECK(snap[6] == 2 && log[6] == 1 && snap[8] == 2 && log[8] == 2);
    write_two(dir, "snap.2", snap, sn, NULL, 0);
    /* A torn tail: a record's size and half its checksum. */
    uint8_t *torn = malloc(ln + 6);
    CHECK(torn != NULL);
    if (torn == NULL) {
        free(snap);
        free(log);
        return;
    }
    memcpy(torn, log, ln);
    le32(torn + ln, 40);
    torn[ln + 4] = 0x5a;
    torn[ln + 5] = 0xa5;
    write_two(dir, "log.2", torn, ln + 6, NULL, 0);
    free(torn);
    world w;
    char buf[64];
    CHECK_EQ_INT(world_open(&w, dir, SC_FSYNC_ALWAYS, false), SC_OK);
    /* The log's records all verified (none corrupt); they are of another
     * run than the snapshot's, so their entries are passed over. */
    CHECK(w.st.snapshot && w.st.logs == 1 && w.st.torn_bytes == 6 &&
          w.st.corrupt_records == 0);
    CHECK(w.st.generation == 3);
    CHECK(served_text(w.c, "a", "return policy", buf, sizeof(buf)));
    CHECK(strcmp(buf, "30 days, v2") == 0);
    CHECK(put(w.c, "a", "added after version 1", "kept", true, 21, NULL) ==
          SC_OK);
    world_close(&w);
    CHECK_EQ_INT(file_version(dir, "log.2"), 1);
    CHECK_EQ_INT(file_size(dir, "log.2"), (long)ln);
    CHECK_EQ_INT(file_version(dir, "log.3"), 3);
    CHECK(file_size(dir, "log.3") > 24);
    CHECK_EQ_INT(world_open(&w, dir, SC_FSYNC_ALWAYS, false), SC_OK);
    CHECK(w.st.logs == 2 && w.st.torn_bytes == 0 && w.st.corrupt_records == 0);
    CHECK(w.st.generation == 3);
    CHECK(served_text(w.c, "a", "added after version 1", buf, sizeof(buf)));
    CHECK(sc_persist_compact(w.p) == SC_OK);
    CHECK(put(w.c, "a", "added to version 3", "kept", true, 22, NULL) == SC_OK);
    world_close(&w);
    CHECK_EQ_INT(file_version(dir, "snap.4"), 3);
    CHECK_EQ_INT(file_version(dir, "log.4"), 3);
    CHECK(file_size(dir, "log.2") < 0 && file_size(dir, "snap.2") < 0 &&
          file_size(dir, "log.3") < 0);
    CHECK_EQ_INT(world_open(&w, dir, SC_FSYNC_ALWAYS, false), SC_OK);
    CHECK(w.st.torn_bytes == 0 && w.st.corrupt_records == 0);
    CHECK(served_text(w.c, "a", "added after version 1", buf, sizeof(buf)));
    CHECK(served_text(w.c, "a", "added to version 3", buf, sizeof(buf)));
    CHECK(served_text(w.c, "a", "return policy", buf, sizeof(buf)));
    world_close(&w);
    free(snap);
    free(log);
}

/* The offsets of a log's records (at most cap of them, stepped by their
 * sizes from the header on); returns how many. */
static size_t record_offsets(const uint8_t *d, size_t len, size_t *at,
                             size_t cap)
{
    size_t k = 0;
    for (size_t o = hdr_len(d); o + 9 <= len && k < cap; k++) {
        at[k] = o;
        o += 8 + ((uint32_t)d[o] | (uint32_t)d[o + 1] << 8 |
                  (uint32_t)d[o + 2] << 16 | (uint32_t)d[o + 3] << 24);
    }
    return k;
}

/* The offset of d's last entry record (its first when first), 0 when
 * none. */
static size_t entry_at(const uint8_t *d, size_t len, bool first)
{
    size_t at[64], entry = 0;
    size_t nrec = record_offsets(d, len, at, 64);
    for (size_t i = 0; i < nrec && !(first && entry != 0); i++) {
        if (d[at[i] + 8] == 3) { /* REC_ENTRY */
            entry = at[i];
        }
    }
    return entry;
}

/* What a --repair test damages in a snapshot: its length, and the
 * offsets of its last record and of one of its entry records. */
typedef struct snap_recs {
    size_t len;
    size_t last;
    size_t entry;
} snap_recs;

/* dir's snap.2 read into r, r->entry its last entry record (its first
 * when first). Checks that it is read, that it holds min_rec records or
 * more, its end record last (min_rec 0: not checked), and that it holds
 * an entry. Returns whether it was read. */
static bool snap_entry(const char *dir, size_t min_rec, bool first,
                       snap_recs *r)
{
    memset(r, 0, sizeof(*r));
    uint8_t *d = read_all(dir, "snap.2", &r->len);
    CHECK(d != NULL);
    if (d == NULL) {
        return false;
    }
    size_t at[64];
    size_t nrec = record_offsets(d, r->len, at, 64);
    if (min_rec > 0) { /* REC_SNAP_END last */
        CHECK(nrec >= min_rec && d[at[nrec - 1] + 8] == 9);
    }
    r->last = nrec > 0 ? at[nrec - 1] : 0;
    r->entry = entry_at(d, r->len, first);
    CHECK(r->entry > 0);
    free(d);
    return true;
}

/* The damages snap_damage does, by number, for a failing test to say. */
static const char *const damage_what[3] = {"cut", "end flipped",
                                           "entry flipped"};

/* Damages dir's snap.2, read into r, as a --repair test asks: damage 0
 * cuts it to cut bytes, 1 flips a byte of its last record (its end
 * record), 2 one of r->entry's. */
static void snap_damage(const char *dir, int damage, off_t cut,
                        const snap_recs *r)
{
    if (damage == 0) {
        char path[600];
        snprintf(path, sizeof(path), "%s/snap.2", dir);
        CHECK(truncate(path, cut) == 0);
    } else {
        flip_byte(dir, "snap.2", (long)(damage == 1 ? r->last : r->entry) + 9);
    }
}

/* A record of every type a log holds, torn at each of its bytes (the last
 * of the last log), an entry's response holding a planted valid record:
 * cut without --repair, nothing from its start on applied. The same
 * record whole as the last but for its size, damaged to run past the end
 * of the file: refused (its fields end with the file: not a tear), and
 * nothing cut. */
static void test_torn_every_type(void)
{
    char dir[512];
    world w;
    fresh_dir(dir, sizeof(dir), "tornall");
    CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_OK);
    CHECK(sc_cache_ns_create(w.c, "victim", NULL) == SC_OK);
    CHECK(sc_cache_ns_create(w.c, "gone", NULL) == SC_OK);
    CHECK(put(w.c, "victim", "secret question", "victim answer", true, 1,
              NULL) == SC_OK);
    uint8_t resp[200];
    memset(resp, 'x', sizeof(resp));
    planted_drop(resp + 8, "victim", log_key(dir));
    float v[DIM];
    vec_of(3, v);
    sc_cache_item it = {.text = "attacker",
                        .text_len = 8,
                        .vec = v,
                        .dim = DIM,
                        .response = resp,
                        .response_len = sizeof(resp),
                        .model = "m",
                        .feature = "f",
                        .user = "u"};
    CHECK(sc_cache_insert(w.c, "victim", &it, NULL) == SC_OK);
    uint64_t id;
    CHECK(put(w.c, "victim", "q2", "a2", true, 2, &id) == SC_OK);
    CHECK(sc_cache_feedback(w.c, id) == SC_OK);
    CHECK(sc_cache_delete(w.c, id) == SC_OK);
    CHECK(sc_cache_flush(w.c, "gone") == SC_OK);
    CHECK(sc_cache_ns_drop(w.c, "gone") == SC_OK);
    char got[64];
    CHECK(served_text(w.c, "victim", "secret question", got, sizeof(got)));
    world_close(&w); /* the ledger's rows and hours */
    size_t len = 0;
    uint8_t *d = read_all(dir, "log.1", &len);
    CHECK(d != NULL);
    if (d == NULL) {
        return;
    }
    size_t at[64];
    size_t nrec = record_offsets(d, len, at, 64);
    unsigned seen = 0;
    uint8_t *buf = malloc(len);
    char msg[512];
    for (size_t i = 0; i < nrec; i++) {
        size_t end = i + 1 < nrec ? at[i + 1] : len;
        seen |= 1u << d[at[i] + 8];
        for (size_t cut = at[i] + 1; cut < end; cut++) {
            sc_cache *c;
            CHECK(sc_cache_open(NULL, &c) == SC_OK);
            sc_persist_load_stats st;
            memset(&st, 0, sizeof(st));
            size_t valid = 0;
            sc_err rc =
                sc_persist_replay(c, NULL, SC_PERSIST_LOG, d, cut, true, false,
                                  0, NULL, &st, &valid, msg, sizeof(msg));
            if (rc != SC_OK || valid != at[i] || st.records != i ||
                st.torn_bytes != cut - at[i]) {
                fprintf(stderr, "record %zu (type %u) cut at %zu: %s (%s)\n", i,
                        d[at[i] + 8], cut - at[i], sc_strerror(rc),
                        rc != SC_OK ? msg : "");
                CHECK(false);
            }
            sc_cache_close(c);
        }
        /* Whole, but its size runs 100 bytes past the end of the file. */
        memcpy(buf, d, end);
        uint32_t bad = (uint32_t)(end - at[i] - 8 + 100);
        for (int b = 0; b < 4; b++) {
            buf[at[i] + b] = (uint8_t)(bad >> (8 * b));
        }
        sc_cache *c;
        CHECK(sc_cache_open(NULL, &c) == SC_OK);
        sc_persist_load_stats st;
        memset(&st, 0, sizeof(st));
        size_t valid = 0;
        CHECK(sc_persist_replay(c, NULL, SC_PERSIST_LOG, buf, end, true, false,
                                0, NULL, &st, &valid, msg,
                                sizeof(msg)) == SC_ECHECKSUM);
        CHECK(strstr(msg, "damaged size") != NULL);
        CHECK_EQ_INT(valid, end);
        CHECK_EQ_INT(st.torn_bytes, 0);
        sc_cache_close(c);
    }
    /* NS_PUT, NS_DROP, ENTRY, REMOVE, QUARANTINE, FLUSH, LEDGER_ROW and
     * LEDGER_HOUR: every type a log holds. */
    CHECK_EQ_INT(seen, 0x1feu);
    free(buf);
    free(d);
}

/* A record in the middle of the last log whose size is damaged to run
 * past the end of the file, or to end inside the last record: the load is
 * refused, not cut as a torn tail (that silently lost every acknowledged
 * record after it). */
static void test_damaged_size(void)
{
    for (int round = 0; round < 2; round++) {
        char dir[512];
        world w;
        fresh_filled(&w, dir, sizeof(dir), "badsize", SC_FSYNC_ALWAYS, 5, 800);
        long at = file_size(dir, "log.1"); /* the 6th entry's frame */
        fill(w.c, 40, 800);
        world_close(&w);
        long size = file_size(dir, "log.1");
        /* Its size field: past the end, or up to 3 bytes before it. */
        uint32_t n = round == 0 ? (uint32_t)(size - at + 100)
                                : (uint32_t)(size - at - 8 - 3);
        char path[600];
        snprintf(path, sizeof(path), "%s/log.1", dir);
        int fd = open(path, O_RDWR);
        CHECK(fd >= 0 && pwrite(fd, &n, 4, at) == 4);
        close(fd);
        CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_ECHECKSUM);
        CHECK(strstr(w.msg, "valid records follow it") != NULL);
        world_close(&w);
        CHECK_EQ_INT(file_size(dir, "log.1"), size); /* nothing cut */
    }
    /* The last record of the last log, its size damaged to run past the
     * end of the file: nothing valid follows it, but its fields end with
     * the file, so it is whole (a record being written has a field that
     * runs past the end): refused, not cut as a torn tail. */
    char dir[512];
    world w;
    fresh_filled(&w, dir, sizeof(dir), "badsize", SC_FSYNC_ALWAYS, 5, 800);
    world_close(&w);
    size_t len = 0;
    uint8_t *d = read_all(dir, "log.1", &len);
    size_t at[64];
    size_t nrec = d != NULL ? record_offsets(d, len, at, 64) : 0;
    CHECK(nrec > 5);
    if (nrec > 5) {
        uint32_t n = (uint32_t)(len - at[nrec - 1] - 8 + 100);
        char path[600];
        snprintf(path, sizeof(path), "%s/log.1", dir);
        int fd = open(path, O_RDWR);
        CHECK(fd >= 0 && pwrite(fd, &n, 4, (off_t)at[nrec - 1]) == 4);
        close(fd);
        CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_ECHECKSUM);
        CHECK(strstr(w.msg, "damaged size") != NULL);
        world_close(&w);
        CHECK_EQ_INT(file_size(dir, "log.1"), (long)len); /* nothing cut */
        CHECK(world_open(&w, dir, SC_FSYNC_NO, true) == SC_OK);
        CHECK_EQ_INT(w.st.corrupt_records, 1);
        CHECK_EQ_INT(count_served(w.c, 5), 5);
        world_close(&w);
    }
    free(d);
}

/* A snapshot keeps the LRU order: entries touched before it and the newest
 * outlive the others when a lower cap evicts after the restart. (The ids
 * were written in hash-table order, and a restore reads them back as
 * recency.) */
static void test_lru_order(void)
{
    char dir[512];
    world w;
    fresh_filled(&w, dir, sizeof(dir), "lru", SC_FSYNC_NO, 20, 900);
    char buf[64];
    for (int i = 0; i < 5; i++) {
        char t[64];
        snprintf(t, sizeof(t), "question %d", i);
        CHECK(served_text(w.c, "default", t, buf, sizeof(buf)));
    }
    CHECK(sc_persist_compact(w.p) == SC_OK);
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    CHECK_EQ_INT(w.st.snapshot, 1);
    sc_ns_config nc;
    CHECK(sc_cache_ns_get_config(w.c, "default", &nc) == SC_OK);
    nc.max_entries = 10;
    CHECK(sc_cache_ns_configure(w.c, "default", &nc) == SC_OK);
    char kept[21];
    for (int i = 0; i < 20; i++) {
        char t[64];
        snprintf(t, sizeof(t), "question %d", i);
        kept[i] = served_text(w.c, "default", t, buf, sizeof(buf)) ? '1' : '0';
    }
    kept[20] = '\0';
    CHECK(strcmp(kept, "11111000000000011111") == 0);
    if (strcmp(kept, "11111000000000011111") != 0) {
        fprintf(stderr, "kept after the restart: %s\n", kept);
    }
    world_close(&w);
}

/* After a restart from a snapshot, the overall cap evicts by the entries'
 * last use across namespaces (their last hit, or their insert), not
 * namespace by namespace in the order the snapshot holds them; a
 * quarantined entry still goes first, and an entry logged after the
 * snapshot is the most recent. */
static void test_lru_across_namespaces(void)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir), "lru-across");
    world_fake_clock = true;
    atomic_store(&world_now, 1000000);
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    const char *names[3] = {"a", "b", "c"};
    for (int k = 0; k < 3; k++) {
        CHECK(sc_cache_ns_create(w.c, names[k], NULL) == SC_OK);
    }
    /* 12 entries inserted in turn, a0 b0 c0 a1 ..., a second apart. */
    uint64_t ids[12];
    char text[32], buf[64];
    for (int i = 0; i < 12; i++) {
        atomic_fetch_add(&world_now, 1000);
        snprintf(text, sizeof(text), "q%d", i);
        CHECK(put(w.c, names[i % 3], text, "r", false, 0, &ids[i]) == SC_OK);
    }
    /* Hits, later, on some of them, again interleaved across namespaces. */
    const int hits[5] = {4, 0, 9, 2, 7};
    for (int h = 0; h < 5; h++) {
        atomic_fetch_add(&world_now, 1000);
        snprintf(text, sizeof(text), "q%d", hits[h]);
        CHECK(served_text(w.c, names[hits[h] % 3], text, buf, sizeof(buf)));
    }
    /* Entry 6 ("a"), hit last of all, then reported: still the first to go. */
    atomic_fetch_add(&world_now, 1000);
    CHECK(served_text(w.c, "a", "q6", buf, sizeof(buf)));
    CHECK(sc_cache_feedback(w.c, ids[6]) == SC_OK);
    CHECK(sc_persist_compact(w.p) == SC_OK);
    /* After the snapshot, in the log: the most recent whatever its time. */
    uint64_t late;
    atomic_store(&world_now, 1000);
    CHECK(put(w.c, "b", "late", "r", false, 0, &late) == SC_OK);
    world_close(&w);

    /* The least recent first: the quarantined 6, then the never hit in
     * insert order, then the hit ones in hit order, then the logged one. */
    const int order[12] = {6, 1, 3, 5, 8, 10, 11, 4, 0, 9, 2, 7};
    world_max_entries = 13;
    atomic_store(&world_now, 2000000);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    world_max_entries = 0;
    CHECK(w.st.snapshot);
    char gone[14], want[14], ns[SC_CACHE_NS_NAME_MAX + 1];
    for (int j = 0; j <= 13; j++) {
        /* After j more inserts the j least recent are gone, none else. */
        for (int i = 0; i < 12; i++) {
            gone[i] =
                sc_cache_entry_ns(w.c, ids[i], ns) == SC_ENOTFOUND ? 'x' : '.';
            want[i] = '.';
        }
        for (int i = 0; i < j && i < 12; i++) {
            want[order[i]] = 'x';
        }
        gone[12] = sc_cache_entry_ns(w.c, late, ns) == SC_ENOTFOUND ? 'x' : '.';
        want[12] = j > 12 ? 'x' : '.';
        gone[13] = want[13] = '\0';
        CHECK(strcmp(gone, want) == 0);
        if (strcmp(gone, want) != 0) {
            fprintf(stderr, "after %d inserts gone %s, want %s\n", j, gone,
                    want);
            break;
        }
        snprintf(text, sizeof(text), "new %d", j);
        CHECK(put(w.c, "c", text, "r", false, 0, NULL) == SC_OK);
    }
    world_close(&w);
    world_fake_clock = false;
}

/* The LRU order a restart makes, against the running cache's: entries of
 * two namespaces inserted in turn in the same millisecond (ties: the
 * running cache has them in insert order, which ids follow), and three
 * entries of both reported in turn, each just after a hit (the running
 * cache puts each at the least recent end as it is reported, so the last
 * reported goes first). One directory's cache evicts as it runs; another,
 * of the same calls, evicts after a restart from its snapshot: the same
 * order. Before, both ties went by the namespace table's order (live ones
 * of one namespace before the other's, the quarantined namespace by
 * namespace): a different order whichever namespace came first. */
static void lru_ties_calls(world *w, uint64_t ids[6])
{
    const char *names[3] = {"a", "b", "c"};
    for (int k = 0; k < 3; k++) {
        CHECK(sc_cache_ns_create(w->c, names[k], NULL) == SC_OK);
    }
    atomic_store(&world_now, 1000000);
    char text[32], buf[64];
    for (int i = 0; i < 6; i++) {
        snprintf(text, sizeof(text), "t%d", i);
        CHECK(put(w->c, names[i % 2], text, "r", false, 0, &ids[i]) == SC_OK);
    }
    /* a0, then b0, then a1: hit, then reported. */
    const int bad[3] = {0, 1, 2};
    for (int q = 0; q < 3; q++) {
        atomic_fetch_add(&world_now, 1000);
        snprintf(text, sizeof(text), "t%d", bad[q]);
        CHECK(served_text(w->c, names[bad[q] % 2], text, buf, sizeof(buf)));
        atomic_fetch_add(&world_now, 1000);
        CHECK(sc_cache_feedback(w->c, ids[bad[q]]) == SC_OK);
    }
}

/* The order in which w's cache (capped at 6 entries) evicts ids[0..5] as
 * entries are inserted into "c": order[j], an index into ids, -1 when not
 * one alone went. */
static void lru_ties_evict(world *w, const uint64_t ids[6], int order[6])
{
    char text[32], ns[SC_CACHE_NS_NAME_MAX + 1];
    bool was[6] = {false};
    atomic_fetch_add(&world_now, 1000);
    for (int j = 0; j < 6; j++) {
        snprintf(text, sizeof(text), "new %d", j);
        CHECK(put(w->c, "c", text, "r", false, 0, NULL) == SC_OK);
        order[j] = -1;
        for (int i = 0; i < 6; i++) {
            bool gone = sc_cache_entry_ns(w->c, ids[i], ns) == SC_ENOTFOUND;
            if (gone && !was[i]) {
                order[j] = order[j] == -1 ? i : -2;
            }
            was[i] = gone;
        }
    }
}

static void test_lru_ties(void)
{
    char run_dir[512], dir[512];
    fresh_dir(run_dir, sizeof(run_dir), "lru-ties-run");
    fresh_dir(dir, sizeof(dir), "lru-ties");
    world_fake_clock = true;
    world_max_entries = 6;
    uint64_t ids[6], run_ids[6];
    int running[6], restored[6];
    world w;
    CHECK(world_open(&w, run_dir, SC_FSYNC_NO, false) == SC_OK);
    lru_ties_calls(&w, run_ids);
    lru_ties_evict(&w, run_ids, running);
    world_close(&w);

    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    lru_ties_calls(&w, ids);
    CHECK(sc_persist_compact(w.p) == SC_OK);
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    CHECK(w.st.snapshot && w.st.logs == 1 && w.st.entries_restored == 6);
    lru_ties_evict(&w, ids, restored);
    world_close(&w);
    world_max_entries = 0;
    world_fake_clock = false;

    /* The last reported first (a1, b0, a0), then the live in insert
     * order (b1, a2, b2). */
    static const int want[6] = {2, 1, 0, 3, 4, 5};
    CHECK(memcmp(running, want, sizeof(want)) == 0);
    CHECK(memcmp(restored, want, sizeof(want)) == 0);
    if (memcmp(running, want, sizeof(want)) != 0 ||
        memcmp(restored, want, sizeof(want)) != 0) {
        fprintf(stderr, "lru ties: evicted running");
        for (int i = 0; i < 6; i++) {
            fprintf(stderr, " %d", running[i]);
        }
        fprintf(stderr, ", restored");
        for (int i = 0; i < 6; i++) {
            fprintf(stderr, " %d", restored[i]);
        }
        fprintf(stderr, " (want 2 1 0 3 4 5)\n");
    }
}

/* The same with a hit whose time is older than its namespace's other
 * entries (its clock read before theirs, or the clock set back): the
 * overall order keeps the namespace's own, which the snapshot holds, and
 * merges the namespaces by time around it. */
static void test_lru_across_clock_back(void)
{
    char dir[512];
    world_fake_clock = true;
    world w;
    fresh_ns(&w, dir, sizeof(dir), "lru-back", SC_FSYNC_NO, "a");
    CHECK(sc_cache_ns_create(w.c, "b", NULL) == SC_OK);
    /* a0 at 10 s, a1 at 20 s, b0 at 25 s, a2 at 30 s; a0 hit "at 5 s". */
    uint64_t ids[4], at[4] = {10000, 20000, 25000, 30000};
    const char *ns_of[4] = {"a", "a", "b", "a"};
    const char *texts[4] = {"a0", "a1", "b0", "a2"};
    for (int i = 0; i < 4; i++) {
        atomic_store(&world_now, at[i]);
        CHECK(put(w.c, ns_of[i], texts[i], "r", false, 0, &ids[i]) == SC_OK);
    }
    char buf[64], ns[SC_CACHE_NS_NAME_MAX + 1];
    atomic_store(&world_now, 5000);
    CHECK(served_text(w.c, "a", "a0", buf, sizeof(buf)));
    CHECK(sc_persist_compact(w.p) == SC_OK);
    world_close(&w);

    /* "a"'s own order, least recent first: a1, a2, a0 (hit last). */
    const int order[4] = {1, 2, 3, 0};
    world_max_entries = 4;
    atomic_store(&world_now, 40000);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    world_max_entries = 0;
    for (int j = 0; j < 4; j++) {
        char text[32];
        snprintf(text, sizeof(text), "new %d", j);
        CHECK(put(w.c, "b", text, "r", false, 0, NULL) == SC_OK);
        for (int i = 0; i < 4; i++) {
            bool went =
                sc_cache_entry_ns(w.c, ids[order[i]], ns) == SC_ENOTFOUND;
            CHECK(went == (i <= j));
            if (went != (i <= j)) {
                fprintf(stderr, "after %d inserts %s %s\n", j + 1,
                        texts[order[i]], went ? "gone" : "kept");
            }
        }
    }
    world_close(&w);
    world_fake_clock = false;
}

/* The same after a damaged snapshot loaded with --repair, its end record
 * not read: cut short by a byte (torn), a byte of the end record flipped,
 * or a byte of its last entry's record flipped (that entry skipped, so
 * the end record's count is refused). The entries read are still ordered
 * by last use across namespaces (before, namespace by namespace). */
static void test_lru_across_repaired(int damage)
{
    char dir[512], name[32];
    snprintf(name, sizeof(name), "lru-repair%d", damage);
    world_fake_clock = true;
    world w;
    fresh_ns(&w, dir, sizeof(dir), name, SC_FSYNC_NO, "a");
    CHECK(sc_cache_ns_create(w.c, "b", NULL) == SC_OK);
    /* a0 b0 a1 b1 a2 b2 at 1 to 6 s. */
    const char *texts[6] = {"a0", "b0", "a1", "b1", "a2", "b2"};
    uint64_t ids[6];
    for (int i = 0; i < 6; i++) {
        atomic_store(&world_now, 1000 * (uint64_t)(i + 1));
        CHECK(put(w.c, i % 2 == 0 ? "a" : "b", texts[i], "r", false, 0,
                  &ids[i]) == SC_OK);
    }
    CHECK(sc_persist_compact(w.p) == SC_OK);
    world_close(&w);

    snap_recs r;
    if (!snap_entry(dir, 7, false, &r)) {
        world_fake_clock = false;
        return;
    }
    snap_damage(dir, damage, (off_t)r.len - 1, &r);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) != SC_OK);
    world_close(&w);

    /* Every entry read is held (the entry flipped: its namespace's most
     * recent lost), then 2 inserts take the 2 least recent: a0 and b0,
     * not the first namespace's two oldest. */
    int restored = damage == 2 ? 5 : 6;
    world_max_entries = (uint64_t)restored;
    atomic_store(&world_now, 40000);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, true) == SC_OK);
    world_max_entries = 0;
    CHECK(w.st.snapshot);
    CHECK(w.st.corrupt_records >= 1);
    CHECK_EQ_INT(entries_of(w.c, "a") + entries_of(w.c, "b"), restored);
    CHECK(sc_cache_ns_create(w.c, "c", NULL) == SC_OK);
    CHECK(put(w.c, "c", "new 0", "r", false, 0, NULL) == SC_OK);
    CHECK(put(w.c, "c", "new 1", "r", false, 0, NULL) == SC_OK);
    char gone[5], ns[SC_CACHE_NS_NAME_MAX + 1];
    for (int i = 0; i < 4; i++) {
        gone[i] =
            sc_cache_entry_ns(w.c, ids[i], ns) == SC_ENOTFOUND ? 'x' : '.';
    }
    gone[4] = '\0';
    CHECK(strcmp(gone, "xx..") == 0);
    if (strcmp(gone, "xx..") != 0) {
        fprintf(stderr, "repaired (%s): a0 b0 a1 b1 gone %s, want xx..\n",
                damage_what[damage], gone);
    }
    world_close(&w);
    world_fake_clock = false;
}

/* A snapshot loaded by --repair without its end record, which held the
 * next id: ids are never given out twice all the same, not those of
 * entries gone before the snapshot (e5, deleted), nor of ones in its
 * damaged part (e4, damages 0 and 2). Damage 0 cuts the file inside e4's
 * record, 1 flips a byte of the end record (both lose the next id: new ids skip
 * far above what was read), 2 flips one of e4's (the end record, refused for
 * its count, still says the next id: taken as it is). */
static void test_repaired_ids(int damage)
{
    char dir[512], name[32];
    snprintf(name, sizeof(name), "ids-repair%d", damage);
    world w;
    fresh_ns(&w, dir, sizeof(dir), name, SC_FSYNC_NO, "a");
    uint64_t ids[6];
    for (int i = 0; i < 6; i++) {
        char t[16];
        snprintf(t, sizeof(t), "e%d", i);
        CHECK(put(w.c, "a", t, "r", false, 0, &ids[i]) == SC_OK);
    }
    CHECK(sc_cache_delete(w.c, ids[5]) == SC_OK);
    CHECK(sc_persist_compact(w.p) == SC_OK);
    world_close(&w);

    snap_recs r; /* r.entry: e4, written last */
    if (!snap_entry(dir, 7, false, &r)) {
        return;
    }
    snap_damage(dir, damage, (off_t)r.entry + 12, &r);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) != SC_OK);
    world_close(&w);

    CHECK(world_open(&w, dir, SC_FSYNC_NO, true) == SC_OK);
    CHECK(w.st.snapshot);
    CHECK(w.st.corrupt_records >= 1);
    CHECK_EQ_INT(entries_of(w.c, "a"), damage == 1 ? 5 : 4);
    char ns[SC_CACHE_NS_NAME_MAX + 1];
    CHECK((sc_cache_entry_ns(w.c, ids[4], ns) == SC_ENOTFOUND) ==
          (damage != 1));
    uint64_t id = 0;
    CHECK(put(w.c, "a", "new", "r", false, 0, &id) == SC_OK);
    if (damage == 2) {
        CHECK_EQ_INT(id, ids[5] + 1);
        CHECK_EQ_INT(w.st.ids_skipped, 0);
    } else {
        /* 2^32 above the highest id read: e3's (cut inside e4), e4's
         * (the end record flipped). */
        uint64_t top = damage == 0 ? ids[3] : ids[4];
        CHECK(id > ids[5]);
        CHECK(w.st.ids_skipped == 1ull << 32);
        CHECK(id == top + 1 + (1ull << 32));
    }
    if (id <= ids[5]) {
        fprintf(stderr, "repaired (%s): new id %llu, %llu given out before\n",
                damage_what[damage], (unsigned long long)id,
                (unsigned long long)ids[5]);
    }
    world_close(&w);
}

/* A version 2 snapshot (the plain XXH32: anyone can make a record that
 * verifies) whose last entry's size is damaged, with an end record a
 * client planted in that entry's response: --repair finds it, searching
 * byte by byte inside the bad record, and must not take its next id (nor
 * that of the real end record, refused for its count: in a version 2 file
 * it proves nothing). New ids skip 2^32 above the highest read, inserts
 * take, and the next compaction's snapshot loads. Planted: count 99 (wrong)
 * and next id UINT64_MAX - 1; or the right count (3, the entries read
 * before the damaged one) and next id 2^53 or UINT64_MAX - 1, which was
 * taken before 2026-12-06 (every insert full from then on, and that next
 * id carried into the version 3 snapshot of the next compaction). */
static void test_repaired_planted_end(uint64_t count, uint64_t next_id)
{
    char dir[512], name[64];
    snprintf(name, sizeof(name), "ids-planted-%llu-%llu",
             (unsigned long long)count, (unsigned long long)next_id);
    fresh_dir(dir, sizeof(dir), name);
    CHECK(mkdir(dir, 0700) == 0);
    size_t sn = 0;
    uint8_t *snap = read_seed("snapshot-v2", &sn);
    if (snap == NULL) {
        return;
    }
    size_t last_entry = entry_at(snap, sn, false);
    CHECK(last_entry > 0 && snap[6] == 2);
    /* The end frame, put after the entry's type byte. */
    uint8_t end[8 + 17];
    le32(end, 17);
    end[8] = 9; /* REC_SNAP_END */
    le64(end + 9, count);
    le64(end + 17, next_id);
    le32(end + 4, XXH32(end + 8, 17, 0x53434c47u));
    size_t cut = last_entry + 9;
    uint8_t *d = malloc(sn + sizeof(end));
    CHECK(d != NULL);
    if (d == NULL) {
        free(snap);
        return;
    }
    memcpy(d, snap, cut);
    memcpy(d + cut, end, sizeof(end));
    memcpy(d + cut + sizeof(end), snap + cut, sn - cut);
    d[last_entry + 3] |= 0x80; /* the size's high byte */
    write_two(dir, "snap.2", d, sn + sizeof(end), NULL, 0);
    free(d);
    free(snap);

    world w;
    world_ids_line[0] = '\0';
    sc_err rc = world_open(&w, dir, SC_FSYNC_NO, true);
    CHECK_EQ_INT(rc, SC_OK);
    if (rc != SC_OK) {
        fprintf(stderr, "%s: %s\n", name, w.msg);
        world_close(&w);
        return;
    }
    CHECK(w.st.snapshot && w.st.corrupt_records >= 1);
    CHECK(w.st.entries_restored == 3);
    CHECK(w.st.ids_skipped == 1ull << 32);
    CHECK(w.st.ids_end_refused && !w.st.ids_range_end);
    CHECK(strstr(world_ids_line, "end record was refused") != NULL);
    /* The seed's ids are small: new ones start 2^32 above them. */
    uint64_t next = sc_cache_next_id(w.c), id = 0;
    CHECK(next > 1ull << 32 && next < (1ull << 32) + 1000);
    CHECK(world_ids_start() == next);
    CHECK(put(w.c, "a", "after the repair", "r", false, 0, &id) == SC_OK);
    CHECK_EQ_INT(id, next);
    if (id == 0 || id >= SC_CACHE_ID_LIMIT) {
        fprintf(stderr, "%s: new id %llu\n", name, (unsigned long long)id);
    }
    CHECK(sc_persist_compact(w.p) == SC_OK);
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    char buf[64];
    CHECK(served_text(w.c, "a", "after the repair", buf, sizeof(buf)));
    CHECK(sc_cache_next_id(w.c) == next + 1);
    CHECK(put(w.c, "a", "after the compaction", "r", false, 0, &id) == SC_OK);
    world_close(&w);
}

/* A snapshot without its end record whose highest id is within 2^32 of
 * the end of the id range (SC_CACHE_ID_LIMIT): the skip would pass it, so
 * --repair loads it with new ids starting at the end: no insert takes,
 * what was read is served, and the start-up line says so (before, new ids
 * went on from past 2^53; then for a while the load was refused). One
 * 2^32 + 1 below the end skips 2^32 as ever, to the end. */
static void test_repaired_ids_range_end(void)
{
    for (int near = 0; near < 2; near++) {
        char dir[512], name[32];
        snprintf(name, sizeof(name), "ids-end%d", near);
        world w;
        fresh_ns(&w, dir, sizeof(dir), name, SC_FSYNC_NO, "a");
        /* near: the highest id 2^32 below the end (a skip passes it);
         * else 2^32 + 1 (the skip's next id is the end). */
        uint64_t top = SC_CACHE_ID_LIMIT - (1ull << 32) - (near ? 0 : 1);
        sc_cache_reserve_ids(w.c, top);
        uint64_t id = 0;
        CHECK(put(w.c, "a", "e0", "r0", false, 0, &id) == SC_OK);
        CHECK(id == top);
        CHECK(sc_persist_compact(w.p) == SC_OK);
        world_close(&w);
        char path[600];
        snprintf(path, sizeof(path), "%s/snap.2", dir);
        long len = file_size(dir, "snap.2");
        CHECK(len > 0 && truncate(path, (off_t)len - 1) == 0);
        world_ids_line[0] = '\0';
        sc_err rc = world_open(&w, dir, SC_FSYNC_NO, true);
        if (rc != SC_OK) {
            fprintf(stderr, "ids-end%d: %s\n", near, w.msg);
        }
        CHECK_EQ_INT(rc, SC_OK);
        CHECK(w.st.ids_range_end == (near == 1));
        CHECK(!w.st.ids_end_refused);
        CHECK(w.st.ids_skipped == (1ull << 32) - (near ? 1 : 0));
        CHECK(sc_cache_next_id(w.c) == SC_CACHE_ID_LIMIT);
        CHECK(world_ids_start() == SC_CACHE_ID_LIMIT);
        CHECK(strstr(world_ids_line, "lost with its end record") != NULL);
        CHECK((strstr(world_ids_line, "end of the id range") != NULL) ==
              (near == 1));
        CHECK(put(w.c, "a", "e1", "r", false, 0, &id) == SC_EFULL);
        char buf[64];
        CHECK(served_text(w.c, "a", "e0", buf, sizeof(buf)));
        CHECK(strcmp(buf, "r0") == 0);
        world_close(&w);
    }
}

/* An older build's state (ids went on past 2^53): entries of ids 1 and
 * 2^64 - 2, and so a snapshot (format 3, keyed) whose end record's next id
 * is 2^64 - 1. A plain start loads it (it refused it before, and so the
 * snapshot of every compaction after a --repair: such a directory needed
 * --repair at every start), and so does --repair: both entries served, no
 * insert takes (no id given out twice, none wraps), and the start-up line
 * says so. Then --repair, a compaction, and a plain start again. */
static void test_repaired_ids_past_end(void)
{
    char dir[512];
    world w;
    fresh_ns(&w, dir, sizeof(dir), "ids-past-end", SC_FSYNC_NO, "a");
    uint64_t id = 0;
    CHECK(put(w.c, "a", "e0", "r0", false, 0, &id) == SC_OK);
    CHECK(id == 1);
    /* What the older build's insert after sc_cache_reserve_ids(c,
     * UINT64_MAX - 1) made (this build's insert is full there). */
    sc_cache_reserve_ids(w.c, UINT64_MAX - 1);
    CHECK(put(w.c, "a", "e1", "r1", false, 0, &id) == SC_EFULL);
    sc_cache_entry_info e;
    memset(&e, 0, sizeof(e));
    e.id = UINT64_MAX - 1;
    e.ns = "a";
    e.text = "e1";
    e.text_len = 2;
    e.response = "r1";
    e.response_len = 2;
    e.created_ms = 1;
    bool added = false;
    CHECK(sc_cache_restore_entry(w.c, &e, 2, &added) == SC_OK && added);
    CHECK(sc_cache_next_id(w.c) == UINT64_MAX);
    CHECK(sc_persist_compact(w.p) == SC_OK);
    world_close(&w);

    /* 0: a plain start of the older build's snapshot; 1: --repair, then a
     * compaction; 2: a plain start of that compaction's snapshot. */
    for (int step = 0; step < 3; step++) {
        bool repair = step == 1;
        world_ids_line[0] = '\0';
        sc_err rc = world_open(&w, dir, SC_FSYNC_NO, repair);
        if (rc != SC_OK) {
            fprintf(stderr, "ids-past-end, step %d: %s\n", step, w.msg);
        }
        CHECK_EQ_INT(rc, SC_OK);
        if (rc != SC_OK) {
            world_close(&w);
            continue;
        }
        /* The end record verified: taken, not refused nor lost. */
        CHECK(!w.st.ids_range_end && !w.st.ids_end_refused);
        CHECK(w.st.ids_skipped == 0 && w.st.corrupt_records == 0);
        CHECK(sc_cache_next_id(w.c) == UINT64_MAX);
        CHECK(world_ids_start() == UINT64_MAX);
        CHECK(strstr(world_ids_line, "end of the id range") != NULL);
        CHECK(strstr(world_ids_line, "full") != NULL);
        char buf[64];
        CHECK(served_text(w.c, "a", "e0", buf, sizeof(buf)));
        CHECK(strcmp(buf, "r0") == 0);
        CHECK(served_text(w.c, "a", "e1", buf, sizeof(buf)));
        CHECK(strcmp(buf, "r1") == 0);
        CHECK(put(w.c, "a", "e2", "r2", false, 0, &id) == SC_EFULL);
        CHECK(sc_cache_next_id(w.c) == UINT64_MAX);
        if (repair) {
            CHECK(sc_persist_compact(w.p) == SC_OK);
        }
        world_close(&w);
    }
}

/* A version 2 snapshot (the seed snapshot-v2) whose end record holds the
 * right count and a next id of 2^64 - 1 (an older build's, whose ids went
 * up to 2^64 - 2): a plain start loads it as one of version 3, its entries
 * served, no insert taken (full), the start-up line saying so; so does the
 * plain start after a compaction. Before 2026-12-06 a plain start refused
 * it (a guard of this one value against a planted end record: a planted
 * 2^53 was taken, to the same effect). */
static void test_v2_end_past_range(void)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir), "v2-end-past");
    CHECK(mkdir(dir, 0700) == 0);
    size_t sn = 0;
    uint8_t *d = read_seed("snapshot-v2", &sn);
    if (d == NULL) {
        return;
    }
    /* The end record is the file's last: size 17, REC_SNAP_END (9). */
    uint8_t *end = d + sn - 25;
    CHECK(d[6] == 2 && sn > 25 && end[0] == 17 && end[8] == 9);
    le64(end + 17, UINT64_MAX);
    le32(end + 4, XXH32(end + 8, 17, 0x53434c47u));
    write_two(dir, "snap.2", d, sn, NULL, 0);
    free(d);
    size_t ln = 0;
    uint8_t *log = read_seed("log-after-snapshot", &ln);
    if (log == NULL) {
        return;
    }
    write_two(dir, "log.2", log, ln, NULL, 0);
    free(log);
    for (int step = 0; step < 2; step++) {
        world w;
        world_ids_line[0] = '\0';
        sc_err rc = world_open(&w, dir, SC_FSYNC_NO, false);
        if (rc != SC_OK) {
            fprintf(stderr, "v2-end-past, step %d: %s\n", step, w.msg);
        }
        CHECK_EQ_INT(rc, SC_OK);
        if (rc != SC_OK) {
            world_close(&w);
            return;
        }
        CHECK(!w.st.ids_end_refused && w.st.ids_skipped == 0 &&
              w.st.corrupt_records == 0);
        CHECK(sc_cache_next_id(w.c) == UINT64_MAX);
        CHECK(strstr(world_ids_line, "full") != NULL);
        char buf[64];
        CHECK(served_text(w.c, "a", "return policy", buf, sizeof(buf)));
        CHECK(strcmp(buf, "30 days, v2") == 0);
        CHECK(put(w.c, "a", "one more", "r", false, 0, NULL) == SC_EFULL);
        if (step == 0) {
            CHECK(sc_persist_compact(w.p) == SC_OK);
        }
        world_close(&w);
    }
    /* log.2 (version 1) was not appended to: the first start began log.3,
     * and its compaction wrote snap.4. */
    CHECK_EQ_INT(file_version(dir, "snap.4"), 3);
}

/* A snapshot cut inside its last entry, and an insert logged after it:
 * each --repair start (the snapshot is still the damaged one) skips 2^32
 * above the highest id it holds, and the log's inserts (the new entries
 * of the starts before) raise the next id past that: no id is given out
 * twice, the skips do not add up, and the start-up line's "new ids start
 * at N" is said after the logs (it was said before them: N an id given
 * out already on the second start). */
static void test_repaired_ids_logged(void)
{
    char dir[512];
    world w;
    fresh_ns(&w, dir, sizeof(dir), "ids-logged", SC_FSYNC_NO, "a");
    uint64_t ids[6];
    for (int i = 0; i < 5; i++) {
        char t[16];
        snprintf(t, sizeof(t), "e%d", i);
        CHECK(put(w.c, "a", t, "r", false, 0, &ids[i]) == SC_OK);
    }
    CHECK(sc_persist_compact(w.p) == SC_OK);
    CHECK(put(w.c, "a", "e5", "r", false, 0, &ids[5]) == SC_OK);
    world_close(&w);
    snap_recs r; /* r.entry: e4, written last */
    if (!snap_entry(dir, 0, false, &r)) {
        return;
    }
    snap_damage(dir, 0, (off_t)r.entry + 12, &r);

    /* e0..e3 read: the highest id read is ids[3]. */
    uint64_t first = ids[3] + 1 + (1ull << 32),
             want[3] = {first, first + 1, first + 2};
    uint64_t got[3] = {0, 0, 0};
    for (int start = 0; start < 3; start++) {
        world_ids_line[0] = '\0';
        CHECK(world_open(&w, dir, SC_FSYNC_NO, true) == SC_OK);
        CHECK(w.st.ids_skipped == 1ull << 32);
        char ns[SC_CACHE_NS_NAME_MAX + 1];
        CHECK(sc_cache_entry_ns(w.c, ids[5], ns) == SC_OK);
        CHECK(world_ids_start() == sc_cache_next_id(w.c));
        if (world_ids_start() != sc_cache_next_id(w.c)) {
            fprintf(stderr,
                    "repaired, start %d: said new ids start at %llu, "
                    "next id %llu\n",
                    start, (unsigned long long)world_ids_start(),
                    (unsigned long long)sc_cache_next_id(w.c));
        }
        char t[16];
        snprintf(t, sizeof(t), "new%d", start);
        CHECK(put(w.c, "a", t, "r", false, 0, &got[start]) == SC_OK);
        CHECK(got[start] == want[start]);
        if (start == 1) {
            /* Deleted: its id, in the log only, is not given out again. */
            CHECK(sc_cache_delete(w.c, got[start]) == SC_OK);
        }
        world_close(&w);
    }
    CHECK(got[1] > got[0] && got[2] > got[1]);
}

/* A record in the middle with a bad byte: refused, naming where; with
 * repair, skipped (one record) and everything after it kept. */
static void test_mid_corruption(void)
{
    char dir[512];
    world w;
    fresh_filled(&w, dir, sizeof(dir), "corrupt", SC_FSYNC_NO, 40, 500);
    world_close(&w);
    long size = file_size(dir, "log.1");
    flip_byte(dir, "log.1", size / 2);
    sc_err rc = world_open(&w, dir, SC_FSYNC_NO, false);
    CHECK(rc == SC_ECHECKSUM || rc == SC_EBADFILE);
    CHECK(strstr(w.msg, "corrupt record at byte") != NULL);
    CHECK(strstr(w.msg, "--repair") != NULL);
    world_close(&w);
    CHECK_EQ_INT(file_size(dir, "log.1"), size); /* nothing cut */
    CHECK(world_open(&w, dir, SC_FSYNC_NO, true) == SC_OK);
    CHECK_EQ_INT(w.st.corrupt_records, 1);
    CHECK(w.st.corrupt_bytes > 0);
    CHECK_EQ_INT(count_served(w.c, 40), 39);
    world_close(&w);

    /* A bad snapshot is refused too. */
    fresh_filled(&w, dir, sizeof(dir), "badsnap", SC_FSYNC_NO, 10, 700);
    CHECK(sc_persist_compact(w.p) == SC_OK);
    world_close(&w);
    flip_byte(dir, "snap.2", file_size(dir, "snap.2") / 2);
    rc = world_open(&w, dir, SC_FSYNC_NO, false);
    CHECK(rc == SC_ECHECKSUM || rc == SC_EBADFILE);
    CHECK(strstr(w.msg, "snap.2") != NULL);
    world_close(&w);
    /* A missing log of the snapshot's generation is refused as well. */
    char path[600];
    fresh_dir(dir, sizeof(dir), "nolog");
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    CHECK(sc_cache_ns_create(w.c, "default", NULL) == SC_OK);
    CHECK(sc_persist_compact(w.p) == SC_OK);
    world_close(&w);
    snprintf(path, sizeof(path), "%s/log.2", dir);
    CHECK(unlink(path) == 0);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_EBADFILE);
    CHECK(strstr(w.msg, "missing") != NULL);
    world_close(&w);
}

typedef struct writer_arg {
    sc_cache *c;
    int base, n;
    int acked;
} writer_arg;

static void *writer(void *arg)
{
    writer_arg *a = arg;
    for (int i = 0; i < a->n; i++) {
        char t[64], r[64];
        snprintf(t, sizeof(t), "question %d", a->base + i);
        snprintf(r, sizeof(r), "answer %d", a->base + i);
        if (put(a->c, "default", t, r, true, (uint64_t)(a->base + i), NULL) ==
            SC_OK) {
            a->acked++;
        }
    }
    return NULL;
}

typedef struct reader_arg {
    sc_cache *c;
    atomic_int *stop; /* the main thread sets it once the writers are done */
    long lookups;
} reader_arg;

static void *reader(void *arg)
{
    reader_arg *a = arg;
    while (!atomic_load_explicit(a->stop, memory_order_relaxed)) {
        char buf[64];
        (void)served_text(a->c, "default", "question 3", buf, sizeof(buf));
        a->lookups++;
    }
    return NULL;
}

/* Compactions while writers and a reader run: after a restart every
 * acknowledged insert is there; old files are gone. fsync=always has
 * fsynced every record an insert acknowledged. */
static void test_compact_under_load(void)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir), "compact");
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_OK);
    CHECK(sc_cache_ns_create(w.c, "default", NULL) == SC_OK);
    enum { WRITERS = 3, PER = 400 };
    writer_arg wa[WRITERS];
    pthread_t wt[WRITERS], rt;
    atomic_int stop = 0;
    reader_arg ra = {w.c, &stop, 0};
    pthread_create(&rt, NULL, reader, &ra);
    for (int i = 0; i < WRITERS; i++) {
        wa[i] = (writer_arg){w.c, i * PER, PER, 0};
        pthread_create(&wt[i], NULL, writer, &wa[i]);
    }
    int compactions = 0;
    for (int k = 0; k < 5; k++) {
        usleep(20000);
        compactions += sc_persist_compact(w.p) == SC_OK;
    }
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(wt[i], NULL);
    }
    atomic_store_explicit(&stop, 1, memory_order_relaxed);
    pthread_join(rt, NULL);
    CHECK_EQ_INT(compactions, 5);
    CHECK(ra.lookups > 0);
    int acked = 0;
    for (int i = 0; i < WRITERS; i++) {
        acked += wa[i].acked;
    }
    CHECK_EQ_INT(acked, WRITERS * PER);
    sc_persist_stats ps;
    sc_persist_get_stats(w.p, &ps);
    CHECK(ps.synced >= (uint64_t)acked);
    CHECK_EQ_INT(ps.generation, 6);
    world_close(&w);
    CHECK(file_size(dir, "snap.6") > 0 && file_size(dir, "log.6") > 0);
    CHECK(file_size(dir, "snap.5") < 0 && file_size(dir, "log.5") < 0);
    CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_OK);
    CHECK(w.st.snapshot);
    CHECK_EQ_INT(count_served(w.c, WRITERS * PER), WRITERS * PER);
    CHECK_EQ_INT(entries_of(w.c, "default"), WRITERS * PER);
    world_close(&w);
}

/* Entries whose TTL ran out while the server was down are not restored. */
static void test_expired_while_down(void)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir), "ttl");
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    CHECK(sc_cache_ns_create(w.c, "default", NULL) == SC_OK);
    sc_cache_item it = {.text = "long lived",
                        .text_len = 10,
                        .response = "r",
                        .response_len = 1,
                        .ttl_ms = 3600000};
    CHECK(sc_cache_insert(w.c, "default", &it, NULL) == SC_OK);
    it.text = "short lived";
    it.text_len = 11;
    it.ttl_ms = 50;
    uint64_t short_id = 0, next_id = 0;
    CHECK(sc_cache_insert(w.c, "default", &it, &short_id) == SC_OK);
    world_close(&w);
    usleep(120000);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    CHECK_EQ_INT(w.st.entries_restored, 1);
    CHECK_EQ_INT(w.st.entries_expired, 1);
    char buf[16];
    CHECK(served_text(w.c, "default", "long lived", buf, sizeof(buf)));
    CHECK(!served_text(w.c, "default", "short lived", buf, sizeof(buf)));
    /* The expired entry's id, the newest, is not given out again: a
     * client holding it must not reach another entry with it. */
    it.text = "new";
    it.text_len = 3;
    it.ttl_ms = 0;
    CHECK(sc_cache_insert(w.c, "default", &it, &next_id) == SC_OK);
    CHECK(next_id > short_id);
    /* The same for the newest entry deleted, then a compaction: the
     * snapshot holds no record of it, only the next id. */
    CHECK(sc_cache_delete(w.c, next_id) == SC_OK);
    CHECK(sc_persist_compact(w.p) == SC_OK);
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    CHECK(w.st.snapshot);
    CHECK_EQ_INT(w.st.entries_restored, 1);
    uint64_t after = 0;
    it.text = "newer";
    it.text_len = 5;
    CHECK(sc_cache_insert(w.c, "default", &it, &after) == SC_OK);
    CHECK(after > next_id);
    world_close(&w);
}

/* An entry replaced by one with a TTL: once the replacer has expired
 * (here while the server runs, and again while it is down), a restart
 * does not bring the replaced answer back, whether the replaced entry is
 * in the log or in a snapshot. */
static void test_expired_replacer(bool compact_between)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir), compact_between ? "ttlrep-snap" : "ttlrep-log");
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    CHECK(sc_cache_ns_create(w.c, "default", NULL) == SC_OK);
    const char *t = "what is the refund policy";
    sc_cache_item it = {.text = t,
                        .text_len = strlen(t),
                        .response = "old answer",
                        .response_len = 10,
                        .ttl_ms = SC_CACHE_TTL_NEVER};
    CHECK(sc_cache_insert(w.c, "default", &it, NULL) == SC_OK);
    /* A second text kept by both, so that the namespace is not empty. */
    sc_cache_item keep = it;
    keep.text = "opening hours";
    keep.text_len = 13;
    CHECK(sc_cache_insert(w.c, "default", &keep, NULL) == SC_OK);
    if (compact_between) {
        CHECK(sc_persist_compact(w.p) == SC_OK);
    }
    it.response = "new answer";
    it.ttl_ms = 50;
    CHECK(sc_cache_insert(w.c, "default", &it, NULL) == SC_OK);
    CHECK_EQ_INT(entries_of(w.c, "default"), 2);
    usleep(120000);
    CHECK_EQ_INT(sc_cache_expire(w.c, 0), 1); /* expired while running */
    char buf[32];
    CHECK(!served_text(w.c, "default", t, buf, sizeof(buf)));
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    CHECK(!served_text(w.c, "default", t, buf, sizeof(buf)));
    CHECK_EQ_INT(entries_of(w.c, "default"), 1);
    CHECK(served_text(w.c, "default", "opening hours", buf, sizeof(buf)));
    /* The same with the replacer expiring while the server is down. */
    it.response = "third answer";
    it.ttl_ms = SC_CACHE_TTL_NEVER;
    CHECK(sc_cache_insert(w.c, "default", &it, NULL) == SC_OK);
    it.response = "fourth answer";
    it.ttl_ms = 50;
    CHECK(sc_cache_insert(w.c, "default", &it, NULL) == SC_OK);
    world_close(&w);
    usleep(120000);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    CHECK(!served_text(w.c, "default", t, buf, sizeof(buf)));
    CHECK_EQ_INT(entries_of(w.c, "default"), 1);
    world_close(&w);
}

static sc_err put_model(sc_cache *c, const char *ns, const char *text,
                        uint32_t dim, uint64_t seed)
{
    float v[DIM + 1];
    vec_of(seed, v);
    v[DIM] = 0.5f;
    sc_cache_item it = {.text = text,
                        .text_len = text != NULL ? strlen(text) : 0,
                        .vec = v,
                        .dim = dim,
                        .embed_model = "fz@1",
                        .response = "r",
                        .response_len = 1};
    return sc_cache_insert(c, ns, &it, NULL);
}

/* State saved with vectors of "fz@1" comes back moved to "fz@2", from a
 * log and from a snapshot: texts embedded again, the entry without text
 * left out (a snapshot's entry count still checks), the namespace of
 * another dimension as it was. */
static void test_moved_model(bool compact_between)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir), compact_between ? "mv-snap" : "mv-log");
    world w;
    world_em = NULL;
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    CHECK(sc_cache_ns_create(w.c, "m", NULL) == SC_OK);
    CHECK(sc_cache_ns_create(w.c, "w", NULL) == SC_OK);
    CHECK(put_model(w.c, "m", "return policy", DIM, 1) == SC_OK);
    CHECK(put_model(w.c, "m", "shipping cost", DIM, 2) == SC_OK);
    CHECK(put_model(w.c, "w", "wide one", DIM + 1, 4) == SC_OK);
    /* No text: dropped at the move. Its id is the highest given, and stays
     * used (a client may hold it: a delete of it must not hit another). */
    CHECK(put_model(w.c, "m", NULL, DIM, 3) == SC_OK);
    if (compact_between) {
        CHECK(sc_persist_compact(w.p) == SC_OK);
    }
    uint64_t next_before = sc_cache_next_id(w.c);
    world_close(&w);
    const char *seeds = getenv("SEMCACHE_PERSIST_SEEDS");
    if (seeds != NULL) {
        char to[600];
        snprintf(to, sizeof(to), "%s/moved", seeds);
        copy_seed(dir, compact_between ? "snap.2" : "log.1", to);
    }

    sc_cache_embedder em = {.model = "fz@2",
                            .dim = DIM,
                            .embed = fz_embed,
                            .supersedes = fz_supersedes};
    world_em = &em;
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    CHECK_EQ_INT(w.st.snapshot, compact_between);
    sc_cache_reembed_counts rc;
    sc_cache_reembed_counts_get(w.c, &rc);
    CHECK_EQ_INT(rc.namespaces, 1);
    CHECK_EQ_INT(rc.entries, 2);
    CHECK_EQ_INT(rc.dropped, 1);
    CHECK(sc_cache_next_id(w.c) >= next_before);
    CHECK_EQ_INT(entries_of(w.c, "m"), 2);
    CHECK_EQ_INT(entries_of(w.c, "w"), 1);
    sc_ns_config nc;
    CHECK(sc_cache_ns_get_config(w.c, "m", &nc) == SC_OK);
    CHECK(strcmp(nc.embed_model, "fz@2") == 0);
    CHECK(sc_cache_ns_get_config(w.c, "w", &nc) == SC_OK);
    CHECK(strcmp(nc.embed_model, "fz@1") == 0);
    /* The text's own vector now: its bytes in another order match it. */
    char buf[8];
    CHECK(served_text(w.c, "m", "policy return", buf, sizeof(buf)));
    /* A compaction writes the moved state; the next start moves nothing. */
    CHECK(sc_persist_compact(w.p) == SC_OK);
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    sc_cache_reembed_counts_get(w.c, &rc);
    CHECK_EQ_INT(rc.namespaces + rc.entries + rc.dropped, 0);
    CHECK_EQ_INT(entries_of(w.c, "m"), 2);
    CHECK(served_text(w.c, "m", "policy return", buf, sizeof(buf)));
    world_close(&w);
    world_em = NULL;
}

/* The embedder of model fz@2 (threshold 0.9) that replaces fz@1. */
static sc_cache_embedder fz2_embedder(void)
{
    sc_cache_embedder em = {.model = "fz@2",
                            .dim = DIM,
                            .threshold = 0.9f,
                            .embed = fz_embed,
                            .supersedes = fz_supersedes};
    return em;
}

/* Ids present in a cache (sc_cache_foreach_entry). */
typedef struct {
    uint64_t ids[64];
    size_t n;
} id_list;

static int list_id(const sc_cache_entry_info *e, void *arg)
{
    id_list *l = arg;
    if (l->n < 64) {
        l->ids[l->n++] = e->id;
    }
    return 0;
}

/* An entry of a model the embedder supersedes, without text (left out),
 * restored with id 0 or UINT64_MAX (never given out): refused (SC_EINVAL)
 * before it takes an id. Before, the left-out branch raised the next id
 * past it first: id UINT64_MAX made it wrap to 0, and the inserts after
 * took 0, then the ids of entries still served. */
static void test_restore_id_ends(void)
{
    sc_cache_embedder em = fz2_embedder();
    sc_cache_config cc;
    sc_cache_config_init(&cc);
    cc.embedder = &em;
    const uint64_t bad_ids[2] = {UINT64_MAX, 0};
    for (int b = 0; b < 2; b++) {
        sc_cache *c = NULL;
        CHECK(sc_cache_open(&cc, &c) == SC_OK);
        if (c == NULL) {
            return;
        }
        CHECK(sc_cache_ns_create(c, "a", NULL) == SC_OK);
        uint64_t id1 = 0;
        sc_cache_item it = {
            .text = "hello", .text_len = 5, .response = "r", .response_len = 1};
        CHECK(sc_cache_insert(c, "a", &it, &id1) == SC_OK);
        uint64_t next = sc_cache_next_id(c);
        float v[DIM] = {1};
        sc_cache_entry_info e = {.id = bad_ids[b],
                                 .ns = "a",
                                 .scope = "",
                                 .embed_model = "fz@1",
                                 .vec = v,
                                 .dim = DIM,
                                 .response = "x",
                                 .response_len = 1,
                                 .created_ms = 1};
        bool added = true;
        CHECK_EQ_INT(sc_cache_restore_entry(c, &e, 2, &added), SC_EINVAL);
        CHECK(!added);
        CHECK_EQ_INT(sc_cache_next_id(c), next);
        sc_cache_reembed_counts rc;
        sc_cache_reembed_counts_get(c, &rc);
        CHECK_EQ_INT(rc.dropped, 0);
        /* New ids are new: none of them is 0 or the first entry's. */
        for (int i = 0; i < 3; i++) {
            char t[16];
            snprintf(t, sizeof(t), "new %d", i);
            sc_cache_item n = {.text = t,
                               .text_len = strlen(t),
                               .response = "r",
                               .response_len = 1};
            uint64_t id = 0;
            CHECK(sc_cache_insert(c, "a", &n, &id) == SC_OK);
            CHECK(id != 0 && id != id1 && id >= next);
        }
        char ns[SC_CACHE_NS_NAME_MAX + 1];
        CHECK_EQ_INT(sc_cache_entry_ns(c, id1, ns), SC_OK);
        id_list all = {.n = 0};
        sc_cache_foreach_entry(c, NULL, list_id, &all);
        CHECK_EQ_INT(all.n, 4);
        sc_cache_close(c);
    }
}

/* A damaged log record at d + n of the given size field and a checksum
 * that fails (10 bytes, a record type of 3); returns n past it. */
static size_t put_damaged(uint8_t *d, size_t n, uint32_t size)
{
    le32(d + n, size);
    le32(d + n + 4, 0x12345678u);
    d[n + 8] = 3;
    d[n + 9] = 0;
    return n + 10;
}

/* Writes at d + n a frame of format 1 or 2 (plain XXH32) holding an entry
 * record of namespace "m" with id, of the model fz@1 (replaced by fz@2)
 * and without text: what a client could plant in a response. Returns the
 * offset after it (d has room for 256 + DIM * 4 more bytes). */
static size_t plant_entry(uint8_t *d, size_t n, uint64_t id)
{
    size_t at = n;
    n += 8;
#define PU8(v)  (d[n++] = (uint8_t)(v))
#define PU32(v) (le32(d + n, (uint32_t)(v)), n += 4)
#define PU64(v) (le64(d + n, (uint64_t)(v)), n += 8)
#define PSTR(s) (PU32(strlen(s)), memcpy(d + n, s, strlen(s)), n += strlen(s))
    PU8(3); /* REC_ENTRY */
    PU64(id);
    PSTR("m");
    PSTR("");
    PU8(0);
    PU32(0); /* no text */
    PSTR("fz@1");
    PU32(DIM);
    for (int i = 0; i < DIM; i++) {
        float f = i == 0 ? 1.0f : 0.0f;
        uint32_t u;
        memcpy(&u, &f, 4);
        PU32(u);
    }
    PU32(1);
    PU8('x');
    PSTR("");
    PSTR("");
    PSTR("");
    PU64(0);
    PU64(0);
    PU8(0);
    PU64(1);
    PU64(0);
    PU64(0);
    PU64(0);
    PU64(0);
    PU8(0);
#undef PU8
#undef PU32
#undef PU64
#undef PSTR
    uint32_t len = (uint32_t)(n - at - 8);
    le32(d + at, len);
    le32(d + at + 4, XXH32(d + at + 8, len, 0x53434c47u));
    return n;
}

/* A format 1 log (the fuzz seed moved-log) with a damaged record, then an
 * entry record a client planted (plain XXH32: the bytes of a response in a
 * log of format 1 or 2, which a server still appends to) of the replaced
 * model, without text, with id UINT64_MAX or 0: --repair's search finds
 * it, and it is a bad record (counted, skipped), taking no id. Before, id
 * UINT64_MAX made the next id wrap to 0, and new inserts took the ids of
 * entries served. Without the damaged record (!damaged), the shape of a
 * log of a build before 2026-12-06 whose next id had reached 2^64 - 1 (its
 * inserts gave out 2^64 - 1, then 0): a plain replay refuses the record
 * (fields out of bounds; that build counted it superseded), and --repair
 * skips it, counted corrupt, as above. */
static void test_planted_id_end(bool damaged)
{
    sc_cache_embedder em = fz2_embedder();
    size_t sn = 0;
    uint8_t *seed = read_seed("moved-log", &sn);
    if (seed == NULL) {
        return;
    }
    CHECK(seed[6] == 1);
    const uint64_t bad_ids[2] = {UINT64_MAX, 0};
    for (int b = 0; b < 2; b++) {
        size_t cap = sn + 2048, n = sn;
        uint8_t *d = malloc(cap);
        CHECK(d != NULL);
        if (d == NULL) {
            break;
        }
        memcpy(d, seed, sn);
        if (damaged) {
            /* A damaged record: an implausible size. */
            n = put_damaged(d, n, 0xfffffff0u);
        }
        n = plant_entry(d, n, bad_ids[b]);
        /* Then a drop of namespace "m" whose checksum holds over one byte
         * more than its fields (refused: fields out of bounds), and a
         * whole one. Reached in order (!damaged), each refused record's
         * own checked size gives a true boundary: the whole drop is
         * applied (from 2026-12-06 to the fix every later record of the
         * file was refused: a drop or delete lost, deleted data back).
         * After the damaged record, none is (a client's bytes, maybe). */
        size_t at = n;
        size_t dn = planted_drop(d + at, "m", 0);
        d[at + dn] = 0x7f;
        le32(d + at, (uint32_t)(dn - 8 + 1));
        le32(d + at + 4, XXH32(d + at + 8, dn - 8 + 1, 0x53434c47u));
        n += dn + 1;
        n += planted_drop(d + n, "m", 0);
        CHECK(n <= cap);

        sc_cache_config cc;
        sc_cache_config_init(&cc);
        cc.embedder = &em;
        sc_cache *c = NULL;
        CHECK(sc_cache_open(&cc, &c) == SC_OK);
        if (c == NULL) {
            free(d);
            break;
        }
        sc_persist_load_stats st;
        memset(&st, 0, sizeof(st));
        char msg[512] = "";
        size_t valid = 0;
        if (!damaged) {
            /* A plain start refuses it, naming the record. */
            sc_cache *c0 = NULL;
            CHECK(sc_cache_open(&cc, &c0) == SC_OK);
            if (c0 != NULL) {
                CHECK_EQ_INT(sc_persist_replay(c0, NULL, SC_PERSIST_LOG, d, n,
                                               true, false, 1700000000000ull,
                                               NULL, &st, &valid, msg,
                                               sizeof(msg)),
                             SC_EBADFILE);
                CHECK(strstr(msg, "fields out of bounds") != NULL);
                sc_cache_close(c0);
            }
            memset(&st, 0, sizeof(st));
            valid = 0;
        }
        CHECK(sc_persist_replay(c, NULL, SC_PERSIST_LOG, d, n, true, true,
                                1700000000000ull, NULL, &st, &valid, msg,
                                sizeof(msg)) == SC_OK);
        /* The damaged and the planted, or the older build's entry and
         * the drop of one byte more alone. */
        if (damaged) {
            CHECK(st.corrupt_records >= 2u);
        } else {
            CHECK_EQ_INT(st.corrupt_records, 2);
            CHECK_EQ_INT(st.old_format_dropped, 0);
        }
        sc_ns_config ncfg;
        bool m_there = sc_cache_ns_get_config(c, "m", &ncfg) == SC_OK;
        CHECK(m_there == damaged);
        uint64_t next = sc_cache_next_id(c);
        CHECK(next > 1 && next < 1000);
        id_list have = {.n = 0};
        sc_cache_foreach_entry(c, NULL, list_id, &have);
        CHECK(have.n > 0);
        for (size_t i = 0; i < have.n; i++) {
            CHECK(have.ids[i] < next);
        }
        CHECK(sc_cache_ns_create(c, "z", NULL) == SC_OK);
        for (int i = 0; i < 3; i++) {
            char t[16];
            snprintf(t, sizeof(t), "new %d", i);
            sc_cache_item it = {.text = t,
                                .text_len = strlen(t),
                                .response = "r",
                                .response_len = 1};
            uint64_t id = 0;
            CHECK(sc_cache_insert(c, "z", &it, &id) == SC_OK);
            CHECK(id >= next);
            for (size_t k = 0; k < have.n; k++) {
                CHECK(id != have.ids[k]);
            }
        }
        id_list all = {.n = 0};
        sc_cache_foreach_entry(c, NULL, list_id, &all);
        CHECK_EQ_INT(all.n, have.n + 3);
        sc_cache_close(c);
        free(d);
    }
    free(seed);
}

/* A format 1 log (the fuzz seed moved-log) with a damaged record, then
 * records a client planted in a row (plain XXH32: a response's bytes):
 * entries of the replaced model with ids 2^60 and 2^53 - 1 (at and past
 * the end of the id range: taken, they raised the next id there and every
 * insert was full from then on, for good, as the id stays in later
 * snapshots), and a drop of namespace "m". The damaged record's size is
 * implausible (the search starts at its next byte, inside it), or
 * plausible and short, its extent ending where the planted records begin
 * (a damaged size landing inside a response). --repair applies none of
 * them: each is counted corrupt and as dropped (old_format_dropped),
 * the entries of the seed stay, the next id stays low, inserts take.
 * Before 2026-12-06 all three were applied. */
static void test_planted_old_log(bool plausible)
{
    sc_cache_embedder em = fz2_embedder();
    size_t sn = 0;
    uint8_t *seed = read_seed("moved-log", &sn);
    if (seed == NULL) {
        return;
    }
    CHECK(seed[6] == 1);
    sc_cache_config cc;
    sc_cache_config_init(&cc);
    cc.embedder = &em;
    sc_persist_load_stats st;
    char msg[512] = "";
    size_t valid = 0;
    /* The seed's own entries, replayed alone. */
    id_list want = {.n = 0};
    sc_cache *c = NULL;
    CHECK(sc_cache_open(&cc, &c) == SC_OK);
    if (c == NULL) {
        free(seed);
        return;
    }
    memset(&st, 0, sizeof(st));
    CHECK(sc_persist_replay(c, NULL, SC_PERSIST_LOG, seed, sn, true, false,
                            1700000000000ull, NULL, &st, &valid, msg,
                            sizeof(msg)) == SC_OK);
    sc_cache_foreach_entry(c, NULL, list_id, &want);
    CHECK(want.n > 0);
    sc_cache_close(c);

    size_t cap = sn + 2048, n = sn;
    uint8_t *d = malloc(cap);
    CHECK(d != NULL);
    if (d == NULL) {
        free(seed);
        return;
    }
    memcpy(d, seed, sn);
    /* The damaged record: an implausible size, or a plausible one of 2
     * bytes (a bad checksum), whose extent ends where the planted begin. */
    n = put_damaged(d, n, plausible ? 2u : 0xfffffff0u);
    n = plant_entry(d, n, 1ull << 60);
    n = plant_entry(d, n, SC_CACHE_ID_LIMIT - 1);
    size_t at = n;
    le32(d + at, 6);
    d[at + 8] = 2; /* REC_NS_DROP */
    le32(d + at + 9, 1);
    d[at + 13] = 'm';
    le32(d + at + 4, XXH32(d + at + 8, 6, 0x53434c47u));
    n += 14;
    CHECK(n <= cap);

    c = NULL;
    CHECK(sc_cache_open(&cc, &c) == SC_OK);
    if (c != NULL) {
        memset(&st, 0, sizeof(st));
        CHECK(sc_persist_replay(c, NULL, SC_PERSIST_LOG, d, n, true, true,
                                1700000000000ull, NULL, &st, &valid, msg,
                                sizeof(msg)) == SC_OK);
        CHECK_EQ_INT(st.old_format_dropped, 3);
        CHECK_EQ_INT(st.corrupt_records, 4);
        uint64_t next = sc_cache_next_id(c);
        CHECK(next > 1 && next < 1000);
        if (next >= 1000) {
            fprintf(stderr, "planted-old-log(%d): next id %llu\n",
                    (int)plausible, (unsigned long long)next);
        }
        id_list have = {.n = 0};
        sc_cache_foreach_entry(c, NULL, list_id, &have);
        CHECK_EQ_INT(have.n, want.n);
        for (size_t i = 0; i < have.n && i < want.n; i++) {
            CHECK(have.ids[i] == want.ids[i]);
        }
        CHECK(sc_cache_ns_create(c, "z", NULL) == SC_OK);
        sc_cache_item it = {
            .text = "new", .text_len = 3, .response = "r", .response_len = 1};
        uint64_t id = 0;
        CHECK_EQ_INT(sc_cache_insert(c, "z", &it, &id), SC_OK);
        CHECK(id >= next && id < 1000);
        sc_cache_close(c);
    }
    free(d);
    free(seed);
}

/* A version 2 snapshot (the seed snapshot-v2) whose last entry's size is
 * damaged, with a copy of that entry (its namespace, text and response:
 * a client's choice) planted in its response with id 2^60 or 2^53 - 1,
 * alone or followed by a planted end record of the right count (4, with
 * the planted entry) and a next id of 2^53. --repair applies neither: the
 * three entries before the damaged one are restored, the end record is
 * refused, new ids start 2^32 above the highest read, inserts take, and
 * the start-up line says how many records were not applied. Before
 * 2026-12-06 the planted entry was restored and served, and its id made
 * every insert full (carried into the next compaction's snapshot). */
static void test_planted_old_snapshot(uint64_t planted_id, bool with_end)
{
    char dir[512], name[64];
    snprintf(name, sizeof(name), "old-planted-%llu-%d",
             (unsigned long long)planted_id, (int)with_end);
    fresh_dir(dir, sizeof(dir), name);
    CHECK(mkdir(dir, 0700) == 0);
    size_t sn = 0;
    uint8_t *snap = read_seed("snapshot-v2", &sn);
    if (snap == NULL) {
        return;
    }
    size_t last_entry = entry_at(snap, sn, false);
    CHECK(last_entry > 0 && snap[6] == 2);
    uint32_t en = rd32(snap + last_entry);
    CHECK(last_entry + 8 + en <= sn);
    size_t pn = 8 + (size_t)en + (with_end ? 8 + 17 : 0);
    uint8_t *plant = malloc(pn);
    uint8_t *d = malloc(sn + pn);
    CHECK(plant != NULL && d != NULL);
    if (plant == NULL || d == NULL) {
        free(plant);
        free(d);
        free(snap);
        return;
    }
    memcpy(plant, snap + last_entry, 8 + (size_t)en);
    le64(plant + 9, planted_id); /* after the frame and the type byte */
    le32(plant + 4, XXH32(plant + 8, en, 0x53434c47u));
    if (with_end) {
        uint8_t *end = plant + 8 + en;
        le32(end, 17);
        end[8] = 9; /* REC_SNAP_END */
        le64(end + 9, 4);
        le64(end + 17, SC_CACHE_ID_LIMIT);
        le32(end + 4, XXH32(end + 8, 17, 0x53434c47u));
    }
    size_t cut = last_entry + 9;
    memcpy(d, snap, cut);
    memcpy(d + cut, plant, pn);
    memcpy(d + cut + pn, snap + cut, sn - cut);
    d[last_entry + 3] |= 0x80; /* the size's high byte */
    write_two(dir, "snap.2", d, sn + pn, NULL, 0);
    free(d);
    free(plant);
    free(snap);

    world w;
    world_ids_line[0] = '\0';
    world_dropped_line[0] = '\0';
    sc_err rc = world_open(&w, dir, SC_FSYNC_NO, true);
    CHECK_EQ_INT(rc, SC_OK);
    if (rc != SC_OK) {
        fprintf(stderr, "%s: %s\n", name, w.msg);
        world_close(&w);
        return;
    }
    CHECK(w.st.snapshot);
    CHECK_EQ_INT(w.st.entries_restored, 3);
    /* The planted entry (and end record), then the genuine namespace
     * record and end record after the damaged entry: lost with it. */
    CHECK_EQ_INT(w.st.old_format_dropped, with_end ? 4u : 3u);
    CHECK(w.st.ids_end_refused && !w.st.ids_range_end);
    CHECK(w.st.ids_skipped == 1ull << 32);
    CHECK(strstr(world_dropped_line, "not applied") != NULL &&
          strstr(world_dropped_line, "format 2") != NULL);
    id_list have = {.n = 0};
    sc_cache_foreach_entry(w.c, NULL, list_id, &have);
    CHECK_EQ_INT(have.n, 3);
    for (size_t i = 0; i < have.n; i++) {
        CHECK(have.ids[i] < 1000);
    }
    uint64_t next = sc_cache_next_id(w.c), id = 0;
    CHECK(next > 1ull << 32 && next < (1ull << 32) + 1000);
    CHECK_EQ_INT(put(w.c, "a", "after the repair", "r", false, 0, &id), SC_OK);
    CHECK(id == next);
    if (next >= (1ull << 32) + 1000) {
        fprintf(stderr, "%s: next id %llu\n", name, (unsigned long long)next);
    }
    CHECK(sc_persist_compact(w.p) == SC_OK);
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    CHECK(sc_cache_next_id(w.c) == next + 1);
    CHECK_EQ_INT(put(w.c, "a", "after the compaction", "r", false, 0, &id),
                 SC_OK);
    world_close(&w);
}

/* Word statistics for fz@1 (sc_cache_embedder.stats_*): a count of
 * texts, claiming 4000 bytes and 100 a text. */
static void *st_new(void *arg)
{
    (void)arg;
    return calloc(1, sizeof(long));
}

static void st_free(void *arg, void *st)
{
    (void)arg;
    free(st);
}

static bool st_count(void *arg, void *st, const char *text, size_t len,
                     const void *prep, int delta)
{
    (void)arg;
    (void)text;
    (void)len;
    (void)prep;
    *(long *)st += delta;
    return true;
}

static size_t st_bytes(void *arg, const void *st)
{
    (void)arg;
    return 4000 + 100 * (size_t) * (const long *)st;
}

/* An insert replacing an entry of its text that the namespace's byte cap
 * refuses (it fits alone, not with its scope's statistics): the old entry
 * is served, and so it is after a restart (nothing was logged). Once the
 * new entry was logged, then its eviction: the old one was gone, live and
 * replayed. */
static void test_refused_replace(bool compact_between)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir), compact_between ? "rr-snap" : "rr-log");
    sc_cache_embedder em = {.model = "fz@1",
                            .dim = DIM,
                            .embed = fz_embed,
                            .stats_new = st_new,
                            .stats_free = st_free,
                            .stats_count = st_count,
                            .stats_bytes = st_bytes};
    world_em = &em;
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    const char *t = "how do i send a product back";
    CHECK(sc_cache_ns_create(w.c, "probe", NULL) == SC_OK);
    CHECK(put(w.c, "probe", t, "a", false, 0, NULL) == SC_OK);
    sc_cache_stats st;
    CHECK(sc_cache_stats_get(w.c, "probe", &st) == SC_OK);
    CHECK(sc_cache_ns_drop(w.c, "probe") == SC_OK);
    sc_ns_config nc;
    sc_cache_ns_config_init(&nc);
    nc.max_bytes = st.bytes + 1000;
    CHECK(sc_cache_ns_create(w.c, "r", &nc) == SC_OK);
    uint64_t id;
    CHECK(put(w.c, "r", t, "old answer", false, 0, &id) == SC_OK);
    char big[2501];
    memset(big, 'n', 2500);
    big[2500] = '\0';
    CHECK(put(w.c, "r", t, big, false, 0, NULL) == SC_ETOOBIG);
    char buf[16];
    CHECK(served_text(w.c, "r", t, buf, sizeof(buf)));
    CHECK(strcmp(buf, "old answer") == 0);
    CHECK_EQ_INT(entries_of(w.c, "r"), 1);
    if (compact_between) {
        CHECK(sc_persist_compact(w.p) == SC_OK);
    }
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    CHECK_EQ_INT(entries_of(w.c, "r"), 1);
    CHECK(served_text(w.c, "r", t, buf, sizeof(buf)));
    CHECK(strcmp(buf, "old answer") == 0);
    /* Its id is the old one's: the same entry, not a copy. */
    sc_cache_query q = {.text = t, .text_len = strlen(t)};
    sc_cache_result r;
    CHECK(sc_cache_lookup(w.c, "r", &q, &r) == SC_OK && r.hit && r.id == id);
    sc_cache_result_fini(&r);
    world_close(&w);
    world_em = NULL;
}

/* The parent of a path, synced after a mkdir: the parent is found for
 * each form of path (the durability itself needs a power cut to see). */
static void test_sync_parent(void)
{
    char dir[512], sub[600];
    fresh_dir(dir, sizeof(dir), "syncparent");
    CHECK(mkdir(dir, 0700) == 0);
    snprintf(sub, sizeof(sub), "%s/made", dir);
    CHECK(sc_persist_sync_parent(sub) == SC_OK);
    snprintf(sub, sizeof(sub), "%s/made//", dir);
    CHECK(sc_persist_sync_parent(sub) == SC_OK);
    CHECK(sc_persist_sync_parent("relative") == SC_OK); /* "." */
    CHECK(sc_persist_sync_parent("/") == SC_OK);
    snprintf(sub, sizeof(sub), "%s/no-such-dir/made", dir);
    CHECK(sc_persist_sync_parent(sub) == SC_EIO);
}

/* A compaction by the persister's own thread (the log grew) takes its
 * place in the once-a-second flush: the log must still be fsynced
 * (everysec) while the snapshot is written, and stats must not wait for
 * the compaction. The snapshot is slowed by its test hook (1.2 s before
 * the namespace's entries and after each chunk of 256; it holds at least
 * 2). */
static atomic_int snap_calls;

static void slow_snapshot(void *arg, const char *ns)
{
    (void)arg;
    (void)ns;
    atomic_fetch_add(&snap_calls, 1);
    usleep(1200 * 1000);
}

static void test_fsync_during_compaction(void)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir), "compactsync");
    world_compact_min = 64 * 1024;
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    world_compact_min = 0;
    CHECK(sc_cache_ns_create(w.c, "default", NULL) == SC_OK);
    atomic_store(&snap_calls, 0);
    sc_persist_set_snapshot_hook(slow_snapshot, NULL);
    fill(w.c, 1000, 3000); /* about 100 KB of log: the thread compacts */
    for (int i = 0; i < 400 && atomic_load(&snap_calls) == 0; i++) {
        usleep(10 * 1000);
    }
    CHECK(atomic_load(&snap_calls) > 0); /* the snapshot is being written */
    uint64_t id;
    CHECK(put(w.c, "default", "during the snapshot", "x", true, 1, &id) ==
          SC_OK);
    sc_persist_stats a, b;
    sc_persist_get_stats(w.p, &a);
    CHECK_EQ_INT(a.compactions, 0); /* stats answered while it runs */
    usleep(1600 * 1000);
    sc_persist_get_stats(w.p, &b);
    CHECK_EQ_INT(b.compactions, 0); /* still running */
    CHECK(b.fsyncs > a.fsyncs);
    CHECK(b.synced >= a.appended);
    sc_persist_set_snapshot_hook(NULL, NULL);
    world_close(&w);
}

/* One directory, one server. */
static void test_lock(void)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir), "lock");
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    sc_persist *second = NULL;
    char msg[512] = "";
    sc_persist_config pc = {.dir = dir, .log = quiet_log};
    CHECK(sc_persist_open(&pc, &second, msg, sizeof(msg)) == SC_EIO);
    CHECK(second == NULL && strstr(msg, "in use") != NULL);
    world_close(&w);
    CHECK(sc_persist_open(&pc, &second, msg, sizeof(msg)) == SC_OK);
    sc_persist_close(second);
}

/* The loader on hostile bytes: never crashes, says what is wrong. */
static void test_replay_garbage(void)
{
    sc_cache *c;
    CHECK(sc_cache_open(NULL, &c) == SC_OK);
    sc_persist_load_stats st;
    memset(&st, 0, sizeof(st));
    char msg[256];
    uint8_t junk[64];
    uint64_t s = 42;
    for (size_t i = 0; i < sizeof(junk); i++) {
        junk[i] = (uint8_t)test_rand(&s);
    }
    CHECK(sc_persist_replay(c, NULL, SC_PERSIST_LOG, junk, sizeof(junk), true,
                            false, 0, NULL, &st, NULL, msg,
                            sizeof(msg)) == SC_EBADFILE);
    /* A bad version: refused in a log that is not the last, and in the
     * last one with a whole header; in the last one shorter than a whole
     * header, torn (test_torn_header). */
    uint8_t hdr[16] = {'S', 'C', 'L', 'O', 'G', 0, 9, 0};
    CHECK(sc_persist_replay(c, NULL, SC_PERSIST_LOG, hdr, sizeof(hdr), false,
                            false, 0, NULL, &st, NULL, msg,
                            sizeof(msg)) == SC_EBADVERSION);
    CHECK(strstr(msg, "version 9") != NULL);
    uint8_t hdr9[HDR + 4] = {'S', 'C', 'L', 'O', 'G', 0, 9, 0};
    CHECK(sc_persist_replay(c, NULL, SC_PERSIST_LOG, hdr9, HDR, true, false, 0,
                            NULL, &st, NULL, msg,
                            sizeof(msg)) == SC_EBADVERSION);
    CHECK(sc_persist_replay(c, NULL, SC_PERSIST_LOG, hdr9, sizeof(hdr9), true,
                            false, 0, NULL, &st, NULL, msg,
                            sizeof(msg)) == SC_EBADVERSION);
    CHECK(strstr(msg, "version 9") != NULL);
    memset(&st, 0, sizeof(st));
    size_t cut = 99;
    CHECK(sc_persist_replay(c, NULL, SC_PERSIST_LOG, hdr9, HDR - 1, true, false,
                            0, NULL, &st, &cut, msg, sizeof(msg)) == SC_OK);
    CHECK(cut == 0 && st.torn_bytes == HDR - 1);
    hdr[6] = 1;
    size_t valid = 0;
    CHECK(sc_persist_replay(c, NULL, SC_PERSIST_LOG, hdr, sizeof(hdr), true,
                            false, 0, NULL, &st, &valid, msg, sizeof(msg)) == SC_OK);
    CHECK_EQ_INT(valid, sizeof(hdr));
    /* A version 3 header cut before its nonce's end: torn in the last log
     * (nothing in it yet), bad anywhere else; version 1's whole 16 bytes
     * are not (above). */
    hdr[6] = 3;
    memset(&st, 0, sizeof(st));
    CHECK(sc_persist_replay(c, NULL, SC_PERSIST_LOG, hdr, sizeof(hdr), true,
                            false, 0, NULL, &st, &valid, msg,
                            sizeof(msg)) == SC_OK);
    CHECK(valid == 0 && st.torn_bytes == sizeof(hdr));
    CHECK(sc_persist_replay(c, NULL, SC_PERSIST_LOG, hdr, sizeof(hdr), false,
                            false, 0, NULL, &st, &valid, msg,
                            sizeof(msg)) == SC_EBADFILE);
    uint8_t snap[16] = {'S', 'C', 'S', 'N', 'P', 0, 1, 0};
    CHECK(sc_persist_replay(c, NULL, SC_PERSIST_SNAPSHOT, snap, sizeof(snap),
                            false, false, 0, NULL, &st, NULL, msg,
                            sizeof(msg)) == SC_EBADFILE);
    CHECK(strstr(msg, "no end record") != NULL);
    sc_cache_close(c);
}

/* Appends at d + n a format 2 log's NS_PUT record (plain XXH32) of
 * namespace name with index backend backend; returns the new length. */
static size_t v2_ns_put(uint8_t *d, size_t n, const char *name,
                        const char *backend)
{
    size_t at = n;
    n += 8;
    uint8_t *b = d + n;
    size_t k = 0;
    b[k++] = 1; /* REC_NS_PUT */
    le32(b + k, (uint32_t)strlen(name));
    memcpy(b + k + 4, name, strlen(name));
    k += 4 + strlen(name);
    b[k++] = 0;     /* had_vector */
    le32(b + k, 0); /* dim */
    k += 4;
    b[k++] = 0; /* f32 */
    le32(b + k, (uint32_t)strlen(backend));
    memcpy(b + k + 4, backend, strlen(backend));
    k += 4 + strlen(backend);
    memset(b + k, 0, 12); /* nlist, nprobe, train_min */
    k += 12;
    float th = 0.9f, mg = 0.0f;
    memcpy(b + k, &th, 4);
    memcpy(b + k + 4, &mg, 4);
    k += 8;
    b[k++] = 1;     /* auto_threshold */
    b[k++] = 1;     /* auto_margin */
    b[k++] = 0xff;  /* vote -1 */
    le32(b + k, 0); /* embed_model "" */
    k += 4;
    memset(b + k, 0, 8); /* ttl_ms */
    k += 8;
    b[k++] = 0;           /* absolute */
    memset(b + k, 0, 16); /* max_entries, max_bytes */
    k += 16;
    memset(b + k, 0, 8);
    b[k + 2] = 0x10; /* max_response_bytes 1 MiB */
    k += 8;
    le32(d + at, (uint32_t)k);
    le32(d + at + 4, XXH32(b, k, 0x53434c47u));
    return n + k;
}

/* A log whose namespace has an IVF backend (a build with FAISS wrote it):
 * a build without FAISS refuses the start, saying so, rather than drop
 * the namespace (and, in a real log, every entry of it) in silence;
 * repair drops it and counts it. A build with FAISS restores it. The
 * log is of format 2 (plain XXH32), and two flat namespaces follow it in
 * sequence: the refused record's frame checked out and was reached in
 * order, so its own size gives a true boundary, and repair restores them
 * (it refused every later record of the file from 2026-12-06 to the fix:
 * a later delete or drop lost). */
static void test_backend_lacking(void)
{
    uint8_t d[512];
    size_t n = 0;
    memcpy(d, "SCLOG\0\2\0\1\0\0\0\0\0\0\0", 16);
    n = 16;
    n = v2_ns_put(d, n, "vecs", "ivf-flat");
    n = v2_ns_put(d, n, "keep", "flat");
    n = v2_ns_put(d, n, "keep2", "flat");
    bool have = sc_index_backend_available("ivf-flat") != 0;
    for (int repair = 0; repair < 2; repair++) {
        sc_cache *c;
        CHECK(sc_cache_open(NULL, &c) == SC_OK);
        sc_persist_load_stats st;
        memset(&st, 0, sizeof(st));
        char msg[512] = "";
        size_t valid = 0;
        sc_err rc =
            sc_persist_replay(c, NULL, SC_PERSIST_LOG, d, n, true, repair, 0,
                              NULL, &st, &valid, msg, sizeof(msg));
        sc_ns_config cfg;
        bool there = sc_cache_ns_get_config(c, "vecs", &cfg) == SC_OK;
        bool keep = sc_cache_ns_get_config(c, "keep", &cfg) == SC_OK;
        bool keep2 = sc_cache_ns_get_config(c, "keep2", &cfg) == SC_OK;
        if (have) {
            CHECK_EQ_INT(rc, SC_OK);
            CHECK(there);
            CHECK(keep && keep2);
        } else if (!repair) {
            CHECK_EQ_INT(rc, SC_ENOTSUP);
            CHECK(strstr(msg, "FAISS") != NULL);
            CHECK(strstr(msg, "byte 16") != NULL);
        } else {
            CHECK_EQ_INT(rc, SC_OK);
            CHECK(!there);
            CHECK(keep);
            CHECK(keep2);
            CHECK_EQ_INT(st.corrupt_records, 1);
            CHECK_EQ_INT(st.old_format_dropped, 0);
            CHECK_EQ_INT(st.records, 2);
        }
        sc_cache_close(c);
    }
    /* The same refused record followed by a damaged one (a plausible size,
     * a checksum that fails): the next record after it is found by a
     * search, so it is not applied (a client's bytes, maybe), in either
     * build under --repair. */
    n = 16;
    n = v2_ns_put(d, n, "vecs", "ivf-flat");
    n = put_damaged(d, n, 2);
    n = v2_ns_put(d, n, "keep", "flat");
    sc_cache *c;
    CHECK(sc_cache_open(NULL, &c) == SC_OK);
    sc_persist_load_stats st;
    memset(&st, 0, sizeof(st));
    char msg[512] = "";
    size_t valid = 0;
    CHECK_EQ_INT(sc_persist_replay(c, NULL, SC_PERSIST_LOG, d, n, true, true, 0,
                                   NULL, &st, &valid, msg, sizeof(msg)),
                 SC_OK);
    sc_ns_config cfg;
    CHECK((sc_cache_ns_get_config(c, "vecs", &cfg) == SC_OK) == have);
    CHECK(sc_cache_ns_get_config(c, "keep", &cfg) != SC_OK);
    CHECK_EQ_INT(st.old_format_dropped, 1);
    sc_cache_close(c);
}

typedef struct v1_top {
    uint64_t id;
    char ns[SC_CACHE_NS_NAME_MAX + 1];
} v1_top;

/* The highest id, and its namespace. */
static int v1_highest(const sc_cache_entry_info *e, void *arg)
{
    v1_top *t = arg;
    if (e->id > t->id) {
        t->id = e->id;
        snprintf(t->ns, sizeof(t->ns), "%s", e->ns);
    }
    return 0;
}

/* Format version 1 (before a snapshot's end record held the next id) is
 * still read: the fuzz seed tests/fuzz/corpus/fuzz_persist/snapshot is one
 * such snapshot (after its control byte), written by an earlier build. */
static void test_format_v1(void)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/fuzz_persist/snapshot",
             SC_SOURCE_DIR);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (f == NULL) {
        return;
    }
    static uint8_t d[1 << 16];
    size_t n = fread(d, 1, sizeof(d), f);
    fclose(f);
    CHECK(n > 17 && d[7] == 1 && d[8] == 0); /* version 1, little-endian */
    sc_cache *c;
    CHECK(sc_cache_open(NULL, &c) == SC_OK);
    sc_persist_load_stats st;
    memset(&st, 0, sizeof(st));
    char msg[256] = "";
    sc_err rc =
        sc_persist_replay(c, NULL, SC_PERSIST_SNAPSHOT, d + 1, n - 1, false,
                          false, 0, NULL, &st, NULL, msg, sizeof(msg));
    if (rc != SC_OK) {
        fprintf(stderr, "version 1 snapshot: %s\n", msg);
    }
    CHECK_EQ_INT(rc, SC_OK);
    CHECK(st.entries_restored > 0);
    /* Version 1 gave an id out again once its entry had expired: a logged
     * insert of an id below the snapshot's highest that it does not hold
     * is restored, not passed over as one gone before the snapshot. */
    v1_top top = {0, ""};
    CHECK_EQ_INT(sc_cache_foreach_entry(c, NULL, v1_highest, &top), SC_OK);
    uint64_t id = 1;
    char where[SC_CACHE_NS_NAME_MAX + 1];
    while (id < top.id && sc_cache_entry_ns(c, id, where) == SC_OK) {
        id++;
    }
    CHECK(id < top.id);
    sc_cache_entry_info e;
    memset(&e, 0, sizeof(e));
    e.id = id;
    e.ns = top.ns;
    e.text = "a reused id";
    e.text_len = strlen(e.text);
    e.response = "r";
    e.response_len = 1;
    e.created_ms = 1;
    bool added = false;
    CHECK_EQ_INT(sc_cache_restore_entry(c, &e, 2, &added), SC_OK);
    CHECK(added);
    sc_cache_close(c);
}

/* A disk that fills up (RLIMIT_FSIZE makes write() fail): the insert that
 * met it is refused (io_error) and not served, later changes are refused at
 * once, lookups go on; every insert acknowledged before is there after a
 * restart. */
static void test_write_failure(void)
{
    char dir[512];
    world w;
    fresh_filled(&w, dir, sizeof(dir), "full", SC_FSYNC_ALWAYS, 10, 300);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = (rlim_t)file_size(dir, "log.1") + 1500;
    signal(SIGXFSZ, SIG_IGN);
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    int acked = 10, refused_at = -1;
    for (int i = 10; i < 200 && refused_at < 0; i++) {
        char t[64], r[64];
        snprintf(t, sizeof(t), "question %d", i);
        snprintf(r, sizeof(r), "answer %d", i);
        sc_err rc = put(w.c, "default", t, r, true, 300 + (uint64_t)i, NULL);
        if (rc == SC_OK) {
            acked++;
        } else {
            CHECK(rc == SC_EIO);
            refused_at = i;
        }
    }
    CHECK(refused_at > 10);
    char buf[64], t[64];
    snprintf(t, sizeof(t), "question %d", refused_at);
    CHECK(!served_text(w.c, "default", t, buf, sizeof(buf)));
    CHECK(put(w.c, "default", "later", "x", true, 1, NULL) == SC_EIO);
    CHECK(sc_cache_ns_create(w.c, "other", NULL) == SC_EIO);
    CHECK(sc_cache_ns_get_config(w.c, "other", NULL) != SC_OK);
    CHECK_EQ_INT(count_served(w.c, acked), acked); /* lookups go on */
    sc_persist_stats ps;
    sc_persist_get_stats(w.p, &ps);
    CHECK(ps.failed);
    CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_OK);
    CHECK_EQ_INT(count_served(w.c, acked), acked);
    CHECK(!served_text(w.c, "default", "later", buf, sizeof(buf)));
    world_close(&w);
}

/* Writers that share the log's group commits when the disk fills up: a
 * batch of several writers' records can fail part way, or after another
 * writer's record in it was already made durable. Every insert
 * acknowledged is there after a restart, and no refused one is, in each
 * of several rounds. */
#define FULL_WRITERS 4
typedef struct full_writer {
    sc_cache *c;
    int t;
    int n;          /* inserts tried */
    int refused_at; /* its first refused one, -1 = none */
    uint64_t acked[400];
} full_writer;

static void *full_write(void *arg)
{
    full_writer *fw = arg;
    fw->refused_at = -1;
    for (fw->n = 0; fw->n < 400; fw->n++) {
        char t[64], r[64];
        snprintf(t, sizeof(t), "writer %d question %d", fw->t, fw->n);
        snprintf(r, sizeof(r), "answer %d/%d", fw->t, fw->n);
        uint64_t id = 0;
        sc_err rc = put(fw->c, "default", t, r, false, 0, &id);
        if (rc != SC_OK) {
            fw->refused_at = rc == SC_EIO ? fw->n : -2;
            break;
        }
        fw->acked[fw->n] = id;
    }
    return NULL;
}

static void test_write_failure_shared(void)
{
    signal(SIGXFSZ, SIG_IGN);
    for (int round = 0; round < 6; round++) {
        char dir[512], name[32];
        snprintf(name, sizeof(name), "fullshared%d", round);
        fresh_dir(dir, sizeof(dir), name);
        world w;
        CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_OK);
        CHECK(sc_cache_ns_create(w.c, "default", NULL) == SC_OK);
        struct rlimit old, lim;
        getrlimit(RLIMIT_FSIZE, &old);
        lim = old;
        lim.rlim_cur = (rlim_t)file_size(dir, "log.1") + 6000 + 997 * round;
        CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
        full_writer fw[FULL_WRITERS];
        pthread_t th[FULL_WRITERS];
        for (int t = 0; t < FULL_WRITERS; t++) {
            fw[t] = (full_writer){.c = w.c, .t = t};
            pthread_create(&th[t], NULL, full_write, &fw[t]);
        }
        for (int t = 0; t < FULL_WRITERS; t++) {
            pthread_join(th[t], NULL);
        }
        CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
        world_close(&w);
        CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_OK);
        int lost = 0, back = 0;
        for (int t = 0; t < FULL_WRITERS; t++) {
            CHECK(fw[t].refused_at >= 0);
            for (int i = 0; i < fw[t].n; i++) {
                char q[64], buf[64];
                snprintf(q, sizeof(q), "writer %d question %d", t, i);
                lost += !served_text(w.c, "default", q, buf, sizeof(buf));
            }
            if (fw[t].refused_at >= 0) {
                char q[64], buf[64];
                snprintf(q, sizeof(q), "writer %d question %d", t,
                         fw[t].refused_at);
                back += served_text(w.c, "default", q, buf, sizeof(buf));
            }
        }
        if (lost != 0 || back != 0) {
            fprintf(stderr,
                    "round %d: %d acknowledged inserts lost, %d refused ones "
                    "back\n",
                    round, lost, back);
        }
        CHECK_EQ_INT(lost, 0);
        CHECK_EQ_INT(back, 0);
        world_close(&w);
    }
}

/* The state directory deleted under a running cache: every later write
 * would go to a file no restart can read. Persistence fails loudly
 * instead (changes refused, as for a full disk), at once with fsync
 * always, within a tick (1 s) otherwise; lookups go on. */
static void test_dir_removed(sc_fsync fs)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir),
              fs == SC_FSYNC_ALWAYS ? "gone-always" : "gone-everysec");
    world w;
    CHECK(world_open(&w, dir, fs, false) == SC_OK);
    CHECK(sc_cache_ns_create(w.c, "default", NULL) == SC_OK);
    fill(w.c, 10, 300);
    sc_persist_stats ps;
    sc_persist_get_stats(w.p, &ps);
    CHECK(!ps.failed);
    CHECK(sc_test_tmp_remove(dir) == 0);
    CHECK(access(dir, F_OK) != 0);
    sc_err rc = put(w.c, "default", "after", "x", true, 1, NULL);
    if (fs == SC_FSYNC_ALWAYS) {
        CHECK(rc == SC_EIO);
    }
    for (int i = 0; i < 50 && !ps.failed; i++) {
        usleep(100000);
        sc_persist_get_stats(w.p, &ps);
    }
    CHECK(ps.failed);
    CHECK(put(w.c, "default", "later", "x", true, 2, NULL) == SC_EIO);
    CHECK_EQ_INT(count_served(w.c, 10), 10); /* lookups go on */
    world_close(&w);
}

/* Changes made while a snapshot is written, between a namespace's record
 * and its entries (the snapshot's test hook runs there): each comes back
 * after a restart, with the config it was made in. A namespace configured
 * before its first vector (storage, threshold, TTL, cap; a dimension in
 * round dim) must not have its configure replayed over a snapshot that
 * holds its old config with the new vector: its storage is then fixed, so
 * the configure was refused (counted as superseded) and every later one
 * with it, and a dimension changed made the snapshot unloadable. Also a
 * namespace dropped and made again (with another dimension and storage)
 * before and while the snapshot reaches it, and entries deleted, given
 * feedback and inserted meanwhile. */
static sc_cache *meanwhile_c;
static char meanwhile_done[8][SC_CACHE_NS_NAME_MAX + 1];
static int meanwhile_ndone;
static uint64_t meanwhile_ids[2]; /* "a": to delete, to quarantine */

static sc_err put_dim(sc_cache *c, const char *ns, const char *text,
                      uint32_t dim, uint64_t seed)
{
    float v[DIM];
    vec_of(seed, v);
    sc_cache_item it = {.text = text,
                        .text_len = strlen(text),
                        .vec = v,
                        .dim = dim,
                        .response = text,
                        .response_len = strlen(text)};
    return sc_cache_insert(c, ns, &it, NULL);
}

/* Drops ns and makes it again, 8 floats and i8, with one entry "new". */
static void remake(sc_cache *c, const char *ns)
{
    sc_ns_config nc;
    sc_cache_ns_config_init(&nc);
    nc.dim = 8;
    nc.storage = SC_STORAGE_I8;
    CHECK(sc_cache_ns_drop(c, ns) == SC_OK);
    CHECK(sc_cache_ns_create(c, ns, &nc) == SC_OK);
    CHECK(put_dim(c, ns, "new", 8, 40) == SC_OK);
}

static void meanwhile_hook(void *arg, const char *ns)
{
    (void)arg;
    sc_cache *c = meanwhile_c;
    for (int i = 0; i < meanwhile_ndone; i++) {
        if (strcmp(meanwhile_done[i], ns) == 0) {
            return; /* only before its entries */
        }
    }
    if (meanwhile_ndone < 8) {
        snprintf(meanwhile_done[meanwhile_ndone++], SC_CACHE_NS_NAME_MAX + 1,
                 "%s", ns);
    }
    sc_ns_config nc;
    if (strcmp(ns, "a") == 0) {
        CHECK(sc_cache_delete(c, meanwhile_ids[0]) == SC_OK);
        CHECK(sc_cache_feedback(c, meanwhile_ids[1]) == SC_OK);
        CHECK(put_dim(c, "a", "a4", DIM, 14) == SC_OK);
        remake(c, "e"); /* before the snapshot reaches it */
    } else if (strcmp(ns, "b") == 0 || strcmp(ns, "c") == 0) {
        CHECK(sc_cache_ns_get_config(c, ns, &nc) == SC_OK);
        nc.dim = DIM;
        nc.storage = SC_STORAGE_F16;
        nc.threshold = 0.75f;
        nc.auto_threshold = false;
        nc.ttl_ms = 3600 * 1000;
        nc.max_entries = 50;
        CHECK(sc_cache_ns_configure(c, ns, &nc) == SC_OK);
        CHECK(put_dim(c, ns, "first", DIM, 20) == SC_OK);
        nc.threshold = 0.8f; /* a configure after the first vector */
        CHECK(sc_cache_ns_configure(c, ns, &nc) == SC_OK);
    } else if (strcmp(ns, "d") == 0) {
        remake(c, "d"); /* its record written, its entries not */
    }
}

static void same_config(sc_cache *c, const char *ns, const sc_ns_config *want)
{
    sc_ns_config got;
    CHECK(sc_cache_ns_get_config(c, ns, &got) == SC_OK);
    CHECK_EQ_INT(got.dim, want->dim);
    CHECK_EQ_INT(got.storage, want->storage);
    CHECK(got.threshold == want->threshold);
    CHECK(got.auto_threshold == want->auto_threshold);
    CHECK_EQ_INT(got.ttl_ms, want->ttl_ms);
    CHECK_EQ_INT(got.max_entries, want->max_entries);
}

static void test_snapshot_meanwhile(bool dim)
{
    char dir[512];
    world w;
    fresh_ns(&w, dir, sizeof(dir), dim ? "meanwhile-dim" : "meanwhile",
             SC_FSYNC_EVERYSEC, "a");
    CHECK(put(w.c, "a", "a1", "a1", true, 11, &meanwhile_ids[0]) == SC_OK);
    CHECK(put(w.c, "a", "a2", "a2", true, 12, &meanwhile_ids[1]) == SC_OK);
    CHECK(put(w.c, "a", "a3", "a3", true, 13, NULL) == SC_OK);
    CHECK(sc_cache_ns_create(w.c, "b", NULL) == SC_OK); /* no vector yet */
    if (dim) {
        sc_ns_config nc;
        sc_cache_ns_config_init(&nc);
        nc.dim = 8; /* the configure makes it DIM */
        CHECK(sc_cache_ns_create(w.c, "c", &nc) == SC_OK);
    }
    for (int i = 0; i < 2; i++) {
        const char *ns = i == 0 ? "d" : "e";
        CHECK(sc_cache_ns_create(w.c, ns, NULL) == SC_OK);
        CHECK(put(w.c, ns, "old", "old", true, 30, NULL) == SC_OK);
    }
    meanwhile_c = w.c;
    meanwhile_ndone = 0;
    sc_persist_set_snapshot_hook(meanwhile_hook, NULL);
    CHECK(sc_persist_compact(w.p) == SC_OK);
    sc_persist_set_snapshot_hook(NULL, NULL);
    CHECK_EQ_INT(meanwhile_ndone, dim ? 5 : 4);
    const char *names[] = {"a", "b", "c", "d", "e"};
    sc_ns_config want[5];
    for (int i = 0; i < 5; i++) {
        if (i != 2 || dim) {
            CHECK(sc_cache_ns_get_config(w.c, names[i], &want[i]) == SC_OK);
        }
    }
    CHECK(want[1].storage == SC_STORAGE_F16 && want[1].threshold == 0.8f);
    world_close(&w);

    sc_err rc = world_open(&w, dir, SC_FSYNC_EVERYSEC, false);
    CHECK_EQ_INT(rc, SC_OK);
    if (rc != SC_OK) {
        fprintf(stderr, "  %s\n", w.msg);
        world_close(&w);
        return;
    }
    CHECK(w.st.snapshot);
    char buf[64];
    for (int i = 0; i < 5; i++) {
        if (i != 2 || dim) {
            same_config(w.c, names[i], &want[i]);
        }
    }
    CHECK(!served_text(w.c, "a", "a1", buf, sizeof(buf))); /* deleted */
    CHECK(!served_text(w.c, "a", "a2", buf, sizeof(buf))); /* quarantined */
    CHECK(served_text(w.c, "a", "a3", buf, sizeof(buf)));
    CHECK(served_text(w.c, "a", "a4", buf, sizeof(buf)));
    sc_cache_stats st;
    CHECK(sc_cache_stats_get(w.c, "a", &st) == SC_OK);
    CHECK_EQ_INT(st.entries, 3);
    CHECK_EQ_INT(st.quarantined, 1);
    for (int i = 1; i < 5; i++) {
        if (i == 2 && !dim) {
            continue;
        }
        bool remade = i >= 3;
        CHECK_EQ_INT(entries_of(w.c, names[i]), 1);
        CHECK(served_text(w.c, names[i], remade ? "new" : "first", buf,
                          sizeof(buf)));
        CHECK(!served_text(w.c, names[i], "old", buf, sizeof(buf)));
        /* Its vector, of the namespace's dimension, is served. */
        float v[DIM];
        vec_of(remade ? 40 : 20, v);
        sc_cache_query q = {.vec = v, .dim = remade ? 8 : DIM};
        sc_cache_result r;
        CHECK(sc_cache_lookup(w.c, names[i], &q, &r) == SC_OK);
        CHECK(r.hit && r.layer == SC_LAYER_SEMANTIC);
        sc_cache_result_fini(&r);
    }
    world_close(&w);
}

/* Entries inserted while a snapshot is written, before it reaches their
 * namespace, one replacing another of its text: the snapshot holds the
 * replacer, the new log both inserts. Replayed over the snapshot, the
 * replaced one's insert must not come back: not beside a replacer that
 * was quarantined meanwhile (its text then served the replaced answer),
 * nor in place of a live one (whose hit count, kept by the snapshot only,
 * went with it). A flush meanwhile, replayed, takes what the snapshot
 * holds, and the inserts logged after it come back. */
static sc_cache *replaced_c;
static bool replaced_done;
static uint64_t replaced_ids[2]; /* "b"'s replacer, "c"'s */

static void replaced_hook(void *arg, const char *ns)
{
    (void)arg;
    if (replaced_done || strcmp(ns, "a") != 0) {
        return;
    }
    replaced_done = true;
    sc_cache *c = replaced_c;
    const char *t = "what is the refund policy";
    for (int i = 0; i < 2; i++) {
        const char *ns2 = i == 0 ? "b" : "c";
        CHECK(put(c, ns2, t, "old answer", false, 0, NULL) == SC_OK);
        CHECK(put(c, ns2, t, "new answer", false, 0, &replaced_ids[i]) ==
              SC_OK);
    }
    CHECK(sc_cache_feedback(c, replaced_ids[0]) == SC_OK);
    char buf[32];
    CHECK(served_text(c, "c", t, buf, sizeof(buf)));
    /* A flush replayed takes what the snapshot holds of "d": the insert
     * logged after it comes back all the same. */
    CHECK(sc_cache_flush(c, "d") == SC_OK);
    CHECK(put(c, "d", t, "after flush", false, 0, NULL) == SC_OK);
}

static int hits_of(const sc_cache_entry_info *e, void *arg)
{
    uint64_t *hits = arg;
    if (e->id == replaced_ids[1]) {
        *hits = e->hit_count;
    }
    return 0;
}

/* A fresh dir named name (in dir, of cap bytes) opened into w with fsync
 * fs: namespaces "a" to "d" each hold "opening hours", then a compaction
 * whose snapshot replaced_hook runs in. */
static void replaced_compacted(world *w, char *dir, size_t cap,
                               const char *name, sc_fsync fs)
{
    fresh_dir(dir, cap, name);
    CHECK(world_open(w, dir, fs, false) == SC_OK);
    const char *names[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++) {
        CHECK(sc_cache_ns_create(w->c, names[i], NULL) == SC_OK);
        CHECK(put(w->c, names[i], "opening hours", "9 to 5", false, 0, NULL) ==
              SC_OK);
    }
    replaced_c = w->c;
    replaced_done = false;
    sc_persist_set_snapshot_hook(replaced_hook, NULL);
    CHECK(sc_persist_compact(w->p) == SC_OK);
    sc_persist_set_snapshot_hook(NULL, NULL);
    CHECK(replaced_done);
}

static void test_replaced_meanwhile(void)
{
    char dir[512];
    world w;
    replaced_compacted(&w, dir, sizeof(dir), "replaced-meanwhile",
                       SC_FSYNC_EVERYSEC);
    const char *t = "what is the refund policy";
    char buf[32];
    CHECK(!served_text(w.c, "b", t, buf, sizeof(buf)));
    CHECK_EQ_INT(entries_of(w.c, "b"), 2);
    uint64_t hits = 0;
    CHECK(sc_cache_foreach_entry(w.c, "c", hits_of, &hits) == SC_OK);
    CHECK_EQ_INT(hits, 1);
    /* A crash: no snapshot at stop, the log holds every change. */
    world_close(&w);

    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    CHECK(w.st.snapshot);
    CHECK(!served_text(w.c, "b", t, buf, sizeof(buf)));
    CHECK_EQ_INT(entries_of(w.c, "b"), 2);
    sc_cache_stats st;
    CHECK(sc_cache_stats_get(w.c, "b", &st) == SC_OK);
    CHECK_EQ_INT(st.quarantined, 1);
    hits = 0;
    CHECK(sc_cache_foreach_entry(w.c, "c", hits_of, &hits) == SC_OK);
    CHECK_EQ_INT(hits, 1);
    CHECK_EQ_INT(entries_of(w.c, "c"), 2);
    CHECK(served_text(w.c, "c", t, buf, sizeof(buf)));
    CHECK(strcmp(buf, "new answer") == 0);
    CHECK_EQ_INT(entries_of(w.c, "d"), 1);
    CHECK(served_text(w.c, "d", t, buf, sizeof(buf)));
    CHECK(strcmp(buf, "after flush") == 0);
    world_close(&w);
}

/* The same with the snapshot damaged and loaded by --repair without its
 * end record, which sealed its ids (sc_cache_restore_snapshot_end): the
 * replaced answer's insert, logged before the snapshot read "b", must
 * still not come back beside its quarantined replacer. Damage 0 cuts the
 * end record's last byte, 1 flips one of its bytes, 2 flips one of "a"'s
 * entry (the end record is then refused for its count). */
static void test_repaired_replaced(int damage)
{
    char dir[512], name[32];
    snprintf(name, sizeof(name), "replaced-repair%d", damage);
    world w;
    replaced_compacted(&w, dir, sizeof(dir), name, SC_FSYNC_NO);
    world_close(&w);

    snap_recs r; /* r.entry: "a"'s */
    if (!snap_entry(dir, 2, true, &r)) {
        return;
    }
    snap_damage(dir, damage, (off_t)r.len - 1, &r);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) != SC_OK);
    world_close(&w);

    CHECK(world_open(&w, dir, SC_FSYNC_NO, true) == SC_OK);
    CHECK(w.st.snapshot);
    CHECK(w.st.corrupt_records >= 1);
    const char *t = "what is the refund policy";
    char buf[32] = "";
    bool served = served_text(w.c, "b", t, buf, sizeof(buf));
    CHECK(!served);
    if (served) {
        fprintf(stderr, "repaired (%s): \"b\" serves \"%s\"\n",
                damage_what[damage], buf);
    }
    CHECK_EQ_INT(entries_of(w.c, "b"), 2);
    sc_cache_stats st;
    CHECK(sc_cache_stats_get(w.c, "b", &st) == SC_OK);
    CHECK_EQ_INT(st.quarantined, 1);
    CHECK_EQ_INT(entries_of(w.c, "a"), damage == 2 ? 0 : 1);
    world_close(&w);
}

/* Restores do not evict midway: a snapshot replayed with its log may hold,
 * for a while, entries that later records remove (the soak found one
 * evicted that way). Caps apply once, at the end. */
static void test_restore_caps(void)
{
    sc_cache_config cc;
    sc_cache_config_init(&cc);
    cc.max_entries = 3;
    sc_cache *c;
    CHECK(sc_cache_open(&cc, &c) == SC_OK);
    sc_ns_config nc;
    sc_cache_ns_config_init(&nc);
    CHECK(sc_cache_restore_ns(c, "default", &nc, false) == SC_OK);
    for (uint64_t id = 1; id <= 5; id++) {
        char t[16];
        snprintf(t, sizeof(t), "q%llu", (unsigned long long)id);
        sc_cache_entry_info e = {.id = id, .ns = "default", .scope = "",
                                 .text = t, .text_len = strlen(t),
                                 .response = "r", .response_len = 1,
                                 .embed_model = "", .created_ms = 1};
        bool added = false;
        CHECK(sc_cache_restore_entry(c, &e, 2, &added) == SC_OK && added);
    }
    CHECK_EQ_INT(entries_of(c, "default"), 5);
    CHECK(sc_cache_delete(c, 4) == SC_OK && sc_cache_delete(c, 5) == SC_OK);
    sc_cache_enforce_caps(c);
    char buf[8];
    CHECK(served_text(c, "default", "q1", buf, sizeof(buf)));
    CHECK(served_text(c, "default", "q3", buf, sizeof(buf)));
    CHECK_EQ_INT(entries_of(c, "default"), 3);
    /* Now over the cap by one: the end's enforcement evicts the oldest. */
    sc_cache_entry_info e6 = {.id = 6, .ns = "default", .scope = "",
                              .text = "q6", .text_len = 2, .response = "r",
                              .response_len = 1, .embed_model = ""};
    CHECK(sc_cache_restore_entry(c, &e6, 2, NULL) == SC_OK);
    sc_cache_enforce_caps(c);
    CHECK_EQ_INT(entries_of(c, "default"), 3);
    CHECK(served_text(c, "default", "q6", buf, sizeof(buf)));
    /* An id restored twice (a snapshot and its log) is kept once. */
    bool added = true;
    CHECK(sc_cache_restore_entry(c, &e6, 2, &added) == SC_OK && !added);
    CHECK_EQ_INT(entries_of(c, "default"), 3);
    /* New ids go on above restored ones. */
    uint64_t id;
    sc_cache_item it = {.text = "fresh", .text_len = 5, .response = "r",
                        .response_len = 1};
    CHECK(sc_cache_insert(c, "default", &it, &id) == SC_OK && id == 7);
    sc_cache_close(c);
}

/* A crash in the middle of a compaction: log.3 begun, snap.3 still a .tmp.
 * The start deletes the .tmp, loads snap.2, replays log.2 then log.3. */
static void test_crash_mid_compaction(void)
{
    char dir[512], path[600];
    world w;
    fresh_filled(&w, dir, sizeof(dir), "midcompact", SC_FSYNC_ALWAYS, 10, 800);
    CHECK(sc_persist_compact(w.p) == SC_OK); /* snap.2, log.2 */
    for (int i = 10; i < 15; i++) {
        char t[64], r[64];
        snprintf(t, sizeof(t), "question %d", i);
        snprintf(r, sizeof(r), "answer %d", i);
        CHECK(put(w.c, "default", t, r, true, 800 + (uint64_t)i, NULL) ==
              SC_OK);
    }
    world_close(&w);
    /* log.3: log.2's header with generation 3; a half-written snap.3.tmp. */
    unsigned char hdr[HDR];
    snprintf(path, sizeof(path), "%s/log.2", dir);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL && fread(hdr, 1, HDR, f) == HDR);
    if (f != NULL) {
        fclose(f);
    }
    hdr[8] = 3;
    snprintf(path, sizeof(path), "%s/log.3", dir);
    f = fopen(path, "wb");
    CHECK(f != NULL && fwrite(hdr, 1, HDR, f) == HDR);
    if (f != NULL) {
        fclose(f);
    }
    append_bytes(dir, "snap.3.tmp", "SCSNP", 5);
    CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_OK);
    CHECK(w.st.snapshot && w.st.logs == 2);
    CHECK_EQ_INT(w.st.generation, 3);
    CHECK_EQ_INT(w.st.torn_bytes, 0);
    CHECK_EQ_INT(count_served(w.c, 15), 15);
    CHECK(file_size(dir, "snap.3.tmp") < 0);
    /* Writes go on in log.3, and survive the next start. */
    CHECK(put(w.c, "default", "question 15", "answer 15", true, 815, NULL) ==
          SC_OK);
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_ALWAYS, false) == SC_OK);
    CHECK_EQ_INT(count_served(w.c, 16), 16);
    world_close(&w);
}

/* An IVF namespace's config: 4 lists, trained at 200 rows. */
static void ivf_config(sc_ns_config *nc)
{
    sc_cache_ns_config_init(nc);
    snprintf(nc->backend, sizeof(nc->backend), "ivf-flat");
    nc->nlist = 4;
    nc->train_min = 200;
}

/* n entries of ns, texts v0, v1... with vectors of seeds seed, seed+1...,
 * each put checked. */
static void put_numbered(sc_cache *c, const char *ns, int n, uint64_t seed)
{
    for (int i = 0; i < n; i++) {
        char t[32];
        snprintf(t, sizeof(t), "v%d", i);
        CHECK(put(c, ns, t, "r", true, seed + (uint64_t)i, NULL) == SC_OK);
    }
}

/* An IVF namespace's training is kept with the snapshot (a small file
 * beside it): after a restart its index is trained at once, without
 * training again, and serves; the next compaction keeps it again. */
static void test_ivf_training(void)
{
    if (!sc_index_backend_available("ivf-flat")) {
        printf("test_persist: no FAISS in this build: IVF training skipped\n");
        return;
    }
    char dir[512];
    fresh_dir(dir, sizeof(dir), "ivf");
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    sc_ns_config nc;
    ivf_config(&nc);
    nc.threshold = 0.99f;
    CHECK(sc_cache_ns_create(w.c, "big", &nc) == SC_OK);
    put_numbered(w.c, "big", 400, 5000);
    for (int i = 0; i < 400 && sc_cache_trained_scopes(w.c, "big") == 0;
         i++) {
        usleep(50000); /* the training runs in the background */
    }
    CHECK_EQ_INT(sc_cache_trained_scopes(w.c, "big"), 1);
    CHECK(sc_persist_compact(w.p) == SC_OK);
    CHECK(file_size(dir, "snap.2.ivf.0") > 0);
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    CHECK_EQ_INT(w.st.trainings, 1);
    CHECK_EQ_INT(w.st.trainings_failed, 0);
    /* Trained as soon as it is loaded: no training ran meanwhile. */
    CHECK_EQ_INT(sc_cache_trained_scopes(w.c, "big"), 1);
    int hits = 0;
    for (int i = 0; i < 400; i += 7) {
        uint64_t id = 0;
        hits += served_vec(w.c, "big", 5000 + (uint64_t)i, &id);
    }
    CHECK_EQ_INT(hits, 58); /* every probed vector finds itself */
    CHECK(sc_persist_compact(w.p) == SC_OK);
    CHECK(file_size(dir, "snap.3.ivf.0") > 0);
    CHECK(file_size(dir, "snap.2.ivf.0") < 0);
    world_close(&w);
    /* A damaged training file: the index trains again, nothing is lost. */
    char path[600];
    snprintf(path, sizeof(path), "%s/snap.3.ivf.0", dir);
    FILE *f = fopen(path, "r+b");
    if (f != NULL) {
        fputs("garbage!", f);
        fclose(f);
    }
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    CHECK_EQ_INT(w.st.trainings_failed, 1);
    CHECK_EQ_INT(entries_of(w.c, "big"), 400);
    world_close(&w);
}

/* ivf_untrained_capped after a restart: an IVF scope whose namespace's
 * max_entries (100) is below its training's rows (train_min 200) is
 * counted from the restore on, before any insert (worked out from the
 * caps at each read). It was a flag an insert set, lost on a restart:
 * 0 until the next insert. */
static void test_ivf_cap_untrained_restored(void)
{
    if (!sc_index_backend_available("ivf-flat")) {
        return;
    }
    char dir[512];
    fresh_dir(dir, sizeof(dir), "ivfcap");
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    sc_ns_config nc;
    ivf_config(&nc);
    nc.max_entries = 100;
    CHECK(sc_cache_ns_create(w.c, "cap", &nc) == SC_OK);
    put_numbered(w.c, "cap", 150, 7000);
    sc_cache_stats st;
    CHECK_EQ_INT(sc_cache_stats_get(w.c, "cap", &st), SC_OK);
    CHECK_EQ_INT(st.ivf_untrained_capped, 1);
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    CHECK_EQ_INT(entries_of(w.c, "cap"), 100);
    CHECK_EQ_INT(sc_cache_stats_get(w.c, "cap", &st), SC_OK);
    CHECK_EQ_INT(st.ivf_untrained_capped, 1);
    CHECK_EQ_INT(sc_cache_stats_get(w.c, NULL, &st), SC_OK);
    CHECK_EQ_INT(st.ivf_untrained_capped, 1);
    world_close(&w);
}

/* Only the names persist writes are its files: "log.01" (a copy, or a
 * hand's) is not generation 1 a second time. It read as one, and the log
 * was replayed twice, once from the copy. */
static void test_noncanonical_names(void)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir), "names");
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    CHECK(sc_cache_ns_create(w.c, "default", NULL) == SC_OK);
    for (uint64_t i = 0; i < 3; i++) {
        char t[32];
        snprintf(t, sizeof(t), "question %llu", (unsigned long long)i);
        CHECK(put(w.c, "default", t, t, true, i + 1, NULL) == SC_OK);
    }
    world_close(&w);
    char cmd[2200];
    snprintf(cmd, sizeof(cmd),
             "cp '%s/log.1' '%s/log.01' && cp '%s/log.1' '%s/snap.001'", dir,
             dir, dir, dir);
    CHECK(system(cmd) == 0);
    CHECK_EQ_INT(world_open(&w, dir, SC_FSYNC_NO, false), SC_OK);
    CHECK_EQ_INT(w.st.logs, 1);
    CHECK(!w.st.snapshot);
    CHECK_EQ_INT(w.st.entries_restored, 3);
    CHECK_EQ_INT(w.st.superseded, 0);
    world_close(&w);
}

/* A cancelled compaction (a second SIGTERM during the stop's snapshot)
 * stops at its next chunk and keeps the old files. The log it began goes
 * again when nothing was written to it: before, each failed compaction
 * left one more log generation. One that was written to stays, and
 * holds its change. Later compactions are refused at once. */
static world *cancel_w;
static bool cancel_insert;

static void cancel_hook(void *arg, const char *ns)
{
    (void)ns;
    if (arg != NULL) {
        /* The snapshot's name taken as a failure ends it (the directory's
         * fsync after the rename failed): a start needs log.2 with it. */
        FILE *f = fopen(arg, "w");
        CHECK(f != NULL);
        if (f != NULL) {
            fclose(f);
        }
    }
    if (cancel_insert) {
        CHECK(put(cancel_w->c, "default", "meanwhile", "meanwhile", true, 77,
                  NULL) == SC_OK);
        CHECK(sc_persist_sync(cancel_w->p) == SC_OK); /* into log.2 */
    }
    sc_persist_cancel_compactions(cancel_w->p);
}

static void test_compact_cancelled(bool insert)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir), insert ? "cancel-insert" : "cancel");
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    CHECK(sc_cache_ns_create(w.c, "default", NULL) == SC_OK);
    fill(w.c, 600, 1000); /* three chunks of entries */
    long before = file_size(dir, "log.1");
    cancel_w = &w;
    cancel_insert = insert;
    sc_persist_set_snapshot_hook(cancel_hook, NULL);
    CHECK_EQ_INT(sc_persist_compact(w.p), SC_ECANCELED);
    sc_persist_set_snapshot_hook(NULL, NULL);
    CHECK(file_size(dir, "snap.2") < 0 && file_size(dir, "snap.2.tmp") < 0);
    sc_persist_stats st;
    sc_persist_get_stats(w.p, &st);
    CHECK_EQ_INT(st.compactions, 0);
    if (insert) {
        CHECK_EQ_INT(st.generation, 2); /* it holds "meanwhile" */
        CHECK(file_size(dir, "log.2") > HDR);
    } else {
        CHECK_EQ_INT(st.generation, 1);
        CHECK(file_size(dir, "log.2") < 0);
    }
    CHECK_EQ_INT(sc_persist_compact(w.p), SC_ECANCELED); /* refused at once */
    sc_persist_get_stats(w.p, &st);
    CHECK_EQ_INT(st.generation, insert ? 2 : 1);
    uint64_t id;
    CHECK(put(w.c, "default", "after", "after", true, 78, &id) == SC_OK);
    CHECK(sc_persist_sync(w.p) == SC_OK);
    if (!insert) {
        CHECK(file_size(dir, "log.1") > before); /* log.1 goes on */
    }
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    CHECK_EQ_INT(entries_of(w.c, "default"), 600 + 1 + (insert ? 1 : 0));
    char out[64];
    CHECK(served_text(w.c, "default", "after", out, sizeof(out)));
    CHECK(!insert ||
          served_text(w.c, "default", "meanwhile", out, sizeof(out)));
    CHECK(sc_persist_compact(w.p) == SC_OK); /* a new server compacts */
    world_close(&w);
}

static void test_compact_failed_named(void)
{
    char dir[512], snap[600];
    fresh_dir(dir, sizeof(dir), "cancel-named");
    snprintf(snap, sizeof(snap), "%s/snap.2", dir);
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_EVERYSEC, false) == SC_OK);
    CHECK(sc_cache_ns_create(w.c, "default", NULL) == SC_OK);
    fill(w.c, 10, 2000);
    cancel_w = &w;
    cancel_insert = false;
    sc_persist_set_snapshot_hook(cancel_hook, snap);
    CHECK_EQ_INT(sc_persist_compact(w.p), SC_ECANCELED);
    sc_persist_set_snapshot_hook(NULL, NULL);
    sc_persist_stats st;
    sc_persist_get_stats(w.p, &st);
    CHECK_EQ_INT(st.generation, 2); /* log.2 kept beside snap.2 */
    CHECK(file_size(dir, "log.2") == HDR);
    world_close(&w);
    unlink(snap);
}

/* A restored vector is the one the live cache held, bit for bit, and so is
 * every similarity to it: restoring normalised the stored unit vector
 * again, moving an f32 component by a rounding and an f16 one by a step of
 * f16 (a similarity by about 1e-4), at every restart, from a log and from
 * a snapshot alike. */
typedef struct vec_bit {
    uint64_t id;
    float v[DIM];
} vec_bit;

typedef struct vec_bits {
    vec_bit e[40];
    int n;
} vec_bits;

static int keep_vec(const sc_cache_entry_info *e, void *arg)
{
    vec_bits *b = arg;
    if (b->n < 40 && e->vec != NULL && e->dim == DIM) {
        b->e[b->n].id = e->id;
        memcpy(b->e[b->n++].v, e->vec, sizeof(float) * DIM);
    }
    return 0;
}

static int by_vec_id(const void *a, const void *b)
{
    uint64_t x = ((const vec_bit *)a)->id, y = ((const vec_bit *)b)->id;
    return x < y ? -1 : x > y;
}

/* ns's vectors as the cache holds them, by id. */
static void vec_bits_of(sc_cache *c, const char *ns, vec_bits *b)
{
    memset(b, 0, sizeof(*b));
    CHECK(sc_cache_foreach_entry(c, ns, keep_vec, b) == SC_OK);
    qsort(b->e, (size_t)b->n, sizeof(vec_bit), by_vec_id);
}

/* Vectors whose components are mostly equal: rounding them to f16 moves
 * their norm by as much as it moves each (the errors add up rather than
 * cancel), so normalising them again moves them by a step of f16. */
static sc_err put_flat(sc_cache *c, const char *ns, int i)
{
    float v[DIM];
    for (int d = 0; d < DIM; d++) {
        v[d] = (float)((d * 7 + i * 3) % 5) - 2.0f + 0.05f * (float)(i % 3);
    }
    v[i % DIM] += 3.0f;
    if (i % 5 == 0) {
        /* a client's vector of a norm near 1, not 1: the log holds it as
         * the client sent it, to be normalised again after a restart */
        double ss = 0;
        for (int d = 0; d < DIM; d++) {
            ss += (double)v[d] * v[d];
        }
        for (int d = 0; d < DIM; d++) {
            v[d] = (float)(v[d] * sqrt(0.995 / ss));
        }
    }
    sc_cache_item it = {
        .vec = v, .dim = DIM, .response = "r", .response_len = 1};
    return sc_cache_insert(c, ns, &it, NULL);
}

static float best_sim(sc_cache *c, const char *ns, uint64_t seed)
{
    float q[DIM];
    vec_of(seed, q);
    sc_cache_query qu = {.vec = q, .dim = DIM};
    sc_cache_result r;
    CHECK(sc_cache_lookup(c, ns, &qu, &r) == SC_OK);
    float s = r.best_similarity;
    sc_cache_result_fini(&r);
    return s;
}

static void test_vector_bits(bool compact_between)
{
    static const sc_storage st[3] = {SC_STORAGE_F32, SC_STORAGE_F16,
                                     SC_STORAGE_I8};
    static const char *ns[3] = {"f32", "f16", "i8"};
    char dir[512];
    fresh_dir(dir, sizeof(dir), compact_between ? "bits-snap" : "bits-log");
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    for (int k = 0; k < 3; k++) {
        sc_ns_config nc;
        sc_cache_ns_config_init(&nc);
        nc.dim = DIM;
        nc.storage = st[k];
        CHECK(sc_cache_ns_create(w.c, ns[k], &nc) == SC_OK);
        for (int i = 0; i < 40; i++) {
            CHECK(put_flat(w.c, ns[k], i) == SC_OK);
        }
    }
    if (compact_between) {
        CHECK(sc_persist_compact(w.p) == SC_OK);
    }
    static vec_bits live[3], back[3];
    float sim[3][20];
    for (int k = 0; k < 3; k++) {
        vec_bits_of(w.c, ns[k], &live[k]);
        for (int q = 0; q < 20; q++) {
            sim[k][q] = best_sim(w.c, ns[k], 5000 + (uint64_t)q);
        }
    }
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    for (int k = 0; k < 3; k++) {
        vec_bits_of(w.c, ns[k], &back[k]);
        CHECK_EQ_INT(back[k].n, 40);
        int moved = 0, sims = 0;
        for (int i = 0; i < 40 && i < back[k].n; i++) {
            moved += back[k].e[i].id != live[k].e[i].id ||
                     memcmp(back[k].e[i].v, live[k].e[i].v,
                            sizeof(float) * DIM) != 0;
        }
        for (int q = 0; q < 20; q++) {
            sims += best_sim(w.c, ns[k], 5000 + (uint64_t)q) != sim[k][q];
        }
        if (moved != 0 || sims != 0) {
            fprintf(stderr, "%s (%s): %d vectors and %d similarities moved\n",
                    ns[k], compact_between ? "snapshot" : "log", moved, sims);
        }
        CHECK_EQ_INT(moved, 0);
        CHECK_EQ_INT(sims, 0);
    }
    world_close(&w);
}

/* copies entries of one vector (seed), each with its own answer: a lookup
 * is served the same one, the oldest, after a restart as before it.
 *
 * Two copies (a client that sends vectors only, inserting the same prompt
 * twice): the index ranked equal similarities by slot, and a snapshot
 * writes entries least recent first, so the restart put them in another
 * order and the other answer was served; candidates are now ranked by id.
 *
 * More copies than the index hands the cache (8), e.g. 20: the lookup
 * serves the oldest, which makes it the most recent, so the snapshot
 * writes it last and a restart puts it in the last slot. The index ranked
 * ties by slot and handed over the 8 in the first slots, without the
 * oldest: after the restart the second was served. Equal scores now rank
 * by id in the index too. */
static void test_ties_after_restart(const char *ns, int copies, int seed)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir), ns);
    world w;
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    sc_ns_config nc;
    sc_cache_ns_config_init(&nc);
    nc.dim = DIM;
    CHECK(sc_cache_ns_create(w.c, ns, &nc) == SC_OK);
    uint64_t first = 0;
    for (int i = 0; i < copies; i++) {
        char resp[16];
        snprintf(resp, sizeof(resp), "answer %d", i);
        uint64_t id = 0;
        CHECK(put(w.c, ns, NULL, resp, true, seed, &id) == SC_OK);
        if (i == 0) {
            first = id;
        }
    }
    float q[DIM];
    vec_of(seed, q);
    sc_cache_query qu = {.vec = q, .dim = DIM};
    sc_cache_result r;
    uint64_t before = 0, after = 0;
    CHECK(sc_cache_lookup(w.c, ns, &qu, &r) == SC_OK && r.hit);
    before = r.id;
    sc_cache_result_fini(&r);
    CHECK(sc_persist_compact(w.p) == SC_OK);
    world_close(&w);
    CHECK(world_open(&w, dir, SC_FSYNC_NO, false) == SC_OK);
    CHECK(sc_cache_lookup(w.c, ns, &qu, &r) == SC_OK && r.hit);
    after = r.id;
    sc_cache_result_fini(&r);
    CHECK_EQ_INT(before, first); /* the oldest of equals */
    CHECK_EQ_INT(after, before);
    world_close(&w);
}

int main(void)
{
    /* This run's (test_tmp.h), not one named by the pid alone: a run
     * killed left its own, which a later run of that pid took for its. */
    sc_test_tmp_path("persist", root, sizeof(root), "persist");
    mkdir(root, 0700);
    test_round_trip(false);
    test_round_trip(true);
    test_torn_tail();
    test_planted_record();
    test_stale_tail();
    test_old_format_goes_on();
    test_damaged_size();
    test_torn_every_type();
    test_lru_order();
    test_lru_across_namespaces();
    test_lru_across_clock_back();
    test_lru_ties();
    test_lru_across_repaired(0);
    test_lru_across_repaired(1);
    test_lru_across_repaired(2);
    test_repaired_ids(0);
    test_repaired_ids(1);
    test_repaired_ids(2);
    test_repaired_planted_end(99, UINT64_MAX - 1);
    test_repaired_planted_end(3, SC_CACHE_ID_LIMIT);
    test_repaired_planted_end(3, UINT64_MAX - 1);
    test_v2_end_past_range();
    test_repaired_ids_logged();
    test_repaired_ids_range_end();
    test_repaired_ids_past_end();
    test_crash_leftovers();
    test_torn_header();
    test_zeroed_log();
    test_mid_corruption();
    test_compact_under_load();
    test_expired_while_down();
    test_expired_replacer(false);
    test_expired_replacer(true);
    test_moved_model(false);
    test_moved_model(true);
    test_restore_id_ends();
    test_planted_id_end(true);
    test_planted_id_end(false);
    test_planted_old_log(false);
    test_planted_old_log(true);
    test_planted_old_snapshot(1ull << 60, false);
    test_planted_old_snapshot(SC_CACHE_ID_LIMIT - 1, false);
    test_planted_old_snapshot(1ull << 60, true);
    test_planted_old_snapshot(SC_CACHE_ID_LIMIT - 1, true);
    test_lock();
    test_sync_parent();
    test_fsync_during_compaction();
    test_write_failure();
    test_write_failure_shared();
    test_dir_removed(SC_FSYNC_ALWAYS);
    test_dir_removed(SC_FSYNC_EVERYSEC);
    test_restore_caps();
    test_crash_mid_compaction();
    test_ivf_training();
    test_ivf_cap_untrained_restored();
    test_replay_garbage();
    test_format_v1();
    test_backend_lacking();
    test_feedback_tags();
    test_ledger_oom(0);
    test_ledger_oom(100);
    test_feedback_unserved();
    test_made_with_base();
    test_made_during_save();
    test_making_relock();
    test_restore_quarantined();
    test_quarantined_evicted_first(false);
    test_quarantined_evicted_first(true);
    test_restore_lower_caps(false);
    test_restore_lower_caps(true);
    test_refused_replace(false);
    test_refused_replace(true);
    test_snapshot_meanwhile(false);
    test_snapshot_meanwhile(true);
    test_replaced_meanwhile();
    test_repaired_replaced(0);
    test_repaired_replaced(1);
    test_repaired_replaced(2);
    test_noncanonical_names();
    test_compact_cancelled(false);
    test_compact_cancelled(true);
    test_compact_failed_named();
    test_vector_bits(false);
    test_vector_bits(true);
    test_ties_after_restart("tie", 2, 77);
    test_ties_after_restart("ties", 20, 78);
    if (sc_test_tmp_remove(root) != 0) {
        fprintf(stderr, "cannot remove %s\n", root);
    }
    return test_summary("test_persist");
}
