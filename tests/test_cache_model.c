/* test_cache_model.c - the cache core against a plain reference model.
 * Part one, one thread: random inserts, lookups, deletes, feedback,
 * flushes, expiry, reconfiguration, drops and clock moves on a fake clock;
 * after every step the ids served, miss reasons, hit counts, expiry times
 * (absolute and sliding), LRU eviction under caps and every stats counter
 * must match the model's. Part two: threads mixing every call, then the
 * stats recounted from the entries and the caps checked. Fixed seeds. */
#define _GNU_SOURCE
#include "cache/cache.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define D 8

/* Part one's size: seeds x ops, a few ms a seed (more seeds by hand:
 * test_cache_model SEEDS). */
#define MODEL_SEEDS 100
#define MODEL_OPS   3000
#define MODEL_NNS   2
#define MODEL_MAXE  4096 /* model slots: more than MODEL_OPS inserts */

/* A seed's details stop after this many mismatches: its state has parted
 * from the model's and the rest would only repeat the first. */
#define SEED_FAIL_CAP 10
/* Mismatch messages printed in all, so a broken cache prints a page. */
#define PRINT_CAP 30

/* Part two's size. */
#define MT_RUNS    2
#define MT_THREADS 4
#define MT_OPS     20000
#define MT_NNS     3
#define MT_MAXID   (MT_THREADS * MT_OPS + 16)

/* Bytes an entry is charged: K + text_len + response_len, where K depends
 * on whether it has a vector; and a scope (of a 1-byte name) while it has
 * entries: k_scope, and k_ix more while an entry's vector is in its index
 * (calibrate() measures them all). */
static uint64_t k_novec, k_vec, k_scope, k_ix;

static uint64_t fake_clock(void *arg)
{
    return atomic_load((_Atomic uint64_t *)arg);
}

static const char *words[] = {"hello", "Hello ",  "  HELLO",
                              "world", "foo bar", "foo   bar",
                              "baz",   "qux",     "   "};
static const char *resps[] = {"r0", "resp1", "response-two", "r3xx"};

static void basis(float *v, int k)
{
    memset(v, 0, sizeof(float) * D);
    v[k] = 1.0f;
}

/* ---- part one: the model ---- */

typedef struct ment {
    bool live;
    uint64_t id;
    int ns, scope;
    char norm[32]; /* normalised text, "" for none */
    size_t text_len;
    int vec; /* basis vector index, -1 for none */
    int resp;
    size_t resp_len;
    uint64_t expires, ttl, seq, hits; /* seq: LRU order, larger is newer */
    bool quar;
    uint64_t qseq; /* when it was quarantined, larger is later */
    uint64_t bytes;
} ment;

typedef struct mns {
    uint64_t max_entries, max_bytes, ttl;
    int mode;
    float margin;
    uint64_t entries, bytes, quarantined;
    uint64_t lookups, exact, sem, misses, inserts, replaced, deletes,
        expirations, evictions, flushed, false_hits;
    uint64_t hist[SC_CACHE_HIST_BINS];
} mns;

/* One seed's world: the cache under test and the model beside it. M is in
 * insertion order, so its ids ascend (the cache numbers from 1 upwards). */
static struct {
    sc_cache *c;
    _Atomic uint64_t now;
    uint64_t rs; /* the seed's generator */
    ment M[MODEL_MAXE];
    int nm;
    mns NS[MODEL_NNS];
    uint64_t gmax_entries, gmax_bytes, seqc;
    uint64_t seed;
    long op;
    int fails; /* this seed's mismatches */
} w;

static int printed;

/* What the seeds made happen, all together: each must have happened, or
 * the generator has stopped reaching a path the model checks. */
static struct {
    uint64_t exact, sem, ambiguous, below, evictions, expirations, replaced,
        slid, toobig;
} seen;

static const char *nsname[MODEL_NNS] = {"a", "b"};

static void mismatch(const char *fmt, ...)
{
    w.fails++;
    CHECK_COUNT(test_failed);
    if (printed++ >= PRINT_CAP) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "seed %llu op %ld: ", (unsigned long long)w.seed, w.op);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static unsigned rn(unsigned n)
{
    return (unsigned)(test_rand(&w.rs) % n);
}

static void mremove(ment *e, uint64_t *counter)
{
    mns *s = &w.NS[e->ns];
    e->live = false;
    s->entries--;
    s->bytes -= e->bytes;
    if (e->quar) {
        s->quarantined--;
    }
    (*counter)++;
}

/* The live entries of (ns, scope); a scope that has none is gone, with its
 * index. */
static int scope_live(int ns, int scope)
{
    int n = 0;
    for (int i = 0; i < w.nm; i++) {
        n += w.M[i].live && w.M[i].ns == ns && w.M[i].scope == scope;
    }
    return n;
}

/* Whether (ns, scope) has an index: while a live entry's vector is in it
 * (a quarantined entry's is not); the last one to go takes it along. */
static bool scope_ix(int ns, int scope)
{
    for (int i = 0; i < w.nm; i++) {
        const ment *e = &w.M[i];
        if (e->live && !e->quar && e->vec >= 0 && e->ns == ns &&
            e->scope == scope) {
            return true;
        }
    }
    return false;
}

/* What the namespace counts: its entries and its live scopes. */
static uint64_t ns_bytes(int ns)
{
    uint64_t b = w.NS[ns].bytes;
    for (int sc = 0; sc < 2; sc++) {
        if (scope_live(ns, sc) > 0) {
            b += k_scope + (scope_ix(ns, sc) ? k_ix : 0);
        }
    }
    return b;
}

static uint64_t gentries(void)
{
    uint64_t n = 0;
    for (int i = 0; i < MODEL_NNS; i++) {
        n += w.NS[i].entries;
    }
    return n;
}

static uint64_t gbytes(void)
{
    uint64_t n = 0;
    for (int i = 0; i < MODEL_NNS; i++) {
        n += ns_bytes(i);
    }
    return n;
}

/* Whether the caps take a before b: a quarantined entry went to the
 * least recent end when it was reported, so quarantined ones go first,
 * the last reported first; then the least recently used. */
static bool evicted_before(const ment *a, const ment *b)
{
    if (a->quar != b->quar) {
        return a->quar;
    }
    return a->quar ? a->qseq > b->qseq : a->seq < b->seq;
}

/* The live entry of namespace ns (-1: of all) the caps take next. */
static ment *lru_tail(int ns)
{
    ment *t = NULL;
    for (int i = 0; i < w.nm; i++) {
        ment *e = &w.M[i];
        if (e->live && (ns < 0 || e->ns == ns) &&
            (t == NULL || evicted_before(e, t))) {
            t = e;
        }
    }
    return t;
}

static void m_ns_caps(int ns)
{
    mns *s = &w.NS[ns];
    while ((s->max_entries != 0 && s->entries > s->max_entries) ||
           (s->max_bytes != 0 && ns_bytes(ns) > s->max_bytes)) {
        ment *t = lru_tail(ns);
        if (t == NULL) {
            break;
        }
        mremove(t, &s->evictions);
        seen.evictions++;
    }
}

static void m_global_caps(void)
{
    while ((w.gmax_entries != 0 && gentries() > w.gmax_entries) ||
           (w.gmax_bytes != 0 && gbytes() > w.gmax_bytes)) {
        ment *t = lru_tail(-1);
        if (t == NULL) {
            break;
        }
        mremove(t, &w.NS[t->ns].evictions);
        seen.evictions++;
    }
}

static void m_reap(int ns, uint64_t now)
{
    for (int i = 0; i < w.nm; i++) {
        ment *e = &w.M[i];
        if (e->live && e->ns == ns && e->expires != 0 && e->expires <= now) {
            mremove(e, &w.NS[ns].expirations);
            seen.expirations++;
        }
    }
}

static ment *find(uint64_t id)
{
    int lo = 0, hi = w.nm;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (w.M[mid].id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo < w.nm && w.M[lo].id == id && w.M[lo].live) {
        return &w.M[lo];
    }
    return NULL;
}

static void norm(const char *in, char *out)
{
    size_t n = sc_cache_text_normalise(in, strlen(in), out);
    out[n] = 0;
}

static bool same_key(const ment *e, int ns, int scope, const char *nt)
{
    return e->live && !e->quar && e->ns == ns && e->scope == scope &&
           strcmp(e->norm, nt) == 0;
}

static bool candidate(const ment *e, int ns, int scope)
{
    return e->live && !e->quar && e->ns == ns && e->scope == scope &&
           e->vec >= 0;
}

static void do_insert(void)
{
    int ns = (int)rn(MODEL_NNS), scope = (int)rn(2);
    const char *text = rn(4) != 0 ? words[rn(9)] : NULL;
    int vec = rn(3) != 0 ? (int)rn(3) : -1;
    if (text == NULL && vec < 0) {
        vec = 0;
    }
    int resp = (int)rn(4);
    int64_t ttl = rn(3) == 0 ? (int64_t)rn(5) * 100 : rn(5) == 0 ? -1 : 0;
    float v[D];
    if (vec >= 0) {
        basis(v, vec);
    }
    char sn[2] = {(char)('x' + scope), 0};
    sc_cache_item it;
    memset(&it, 0, sizeof(it));
    it.scope = sn;
    it.text = text;
    it.text_len = text != NULL ? strlen(text) : 0;
    it.vec = vec >= 0 ? v : NULL;
    it.dim = vec >= 0 ? D : 0;
    it.response = resps[resp];
    it.response_len = strlen(resps[resp]);
    it.ttl_ms = ttl;
    uint64_t id = 0;
    char nt[64] = "";
    if (text != NULL) {
        norm(text, nt);
    }
    bool keyed = nt[0] != 0;
    sc_err rc = sc_cache_insert(w.c, nsname[ns], &it, &id);
    if (!keyed && vec < 0) {
        /* only blanks and no vector: nothing to find it by */
        if (rc != SC_EINVAL) {
            mismatch("insert without key or vector: rc %d", rc);
        }
        return;
    }
    uint64_t b = (vec >= 0 ? k_vec : k_novec) + it.text_len + it.response_len;
    mns *s = &w.NS[ns];
    /* Alone it keeps its scope, and the scope's index as it is now. */
    bool ix = vec >= 0 || scope_ix(ns, scope);
    uint64_t alone = b + k_scope + (ix ? k_ix : 0);
    if ((s->max_bytes != 0 && alone > s->max_bytes) ||
        (w.gmax_bytes != 0 && alone > w.gmax_bytes)) {
        if (rc != SC_ETOOBIG) {
            mismatch("insert over a byte cap: rc %d", rc);
        }
        seen.toobig++;
        return;
    }
    if (rc != SC_OK) {
        mismatch("insert rc %d", rc);
        return;
    }
    if (w.nm > 0 && id <= w.M[w.nm - 1].id) {
        mismatch("insert id %llu not above %llu", (unsigned long long)id,
                 (unsigned long long)w.M[w.nm - 1].id);
    }
    ment *e = &w.M[w.nm++];
    memset(e, 0, sizeof(*e));
    e->live = true;
    e->id = id;
    e->ns = ns;
    e->scope = scope;
    strcpy(e->norm, nt);
    e->text_len = it.text_len;
    e->vec = vec;
    e->resp = resp;
    e->resp_len = it.response_len;
    e->ttl = ttl == -1 ? 0 : ttl > 0 ? (uint64_t)ttl : s->ttl;
    e->expires = e->ttl != 0 ? w.now + e->ttl : 0;
    e->seq = ++w.seqc;
    e->bytes = b;
    s->entries++;
    s->bytes += b;
    s->inserts++;
    if (keyed) {
        /* the same text in the same scope replaces the older entry */
        for (int i = 0; i < w.nm - 1; i++) {
            if (same_key(&w.M[i], ns, scope, nt)) {
                mremove(&w.M[i], &s->replaced);
                seen.replaced++;
            }
        }
    }
    m_ns_caps(ns);
    m_global_caps();
}

/* The semantic layer's expectations. Basis vectors give similarity 1 (same
 * basis) or 0, so the best is known exactly; with 8 candidates or fewer
 * the hit, the reason and the margin rule are predicted too. Returns the
 * entry served, or NULL. */
static ment *check_semantic(int ns, int scope, int vec, float thr,
                            const sc_cache_result *r, float *mbest)
{
    mns *s = &w.NS[ns];
    ment *served = NULL;
    int ncand = 0, n1 = 0;
    for (int i = 0; i < w.nm; i++) {
        if (candidate(&w.M[i], ns, scope)) {
            ncand++;
            if (vec >= 0 && w.M[i].vec == vec) {
                n1++;
            }
        }
    }
    if (vec < 0 || ncand == 0) {
        if (r->hit) {
            mismatch("hit %llu without candidates", (unsigned long long)r->id);
        }
        if (r->reason != SC_MISS_NO_CANDIDATE) {
            mismatch("reason %d, want no_candidate", r->reason);
        }
        return NULL;
    }
    float best = n1 > 0 ? 1.0f : 0.0f;
    *mbest = best;
    if (r->hit) {
        ment *h = find(r->id);
        if (h == NULL || !candidate(h, ns, scope)) {
            mismatch("semantic hit on a non-candidate %llu",
                     (unsigned long long)r->id);
        } else {
            float sim = h->vec == vec ? 1.0f : 0.0f;
            if (sim < thr) {
                mismatch("hit below the threshold");
            }
            if (sim < best) {
                mismatch("served worse than the best");
            }
            served = h;
        }
    } else if (best >= thr && s->margin == 0) {
        mismatch("semantic miss though best %f >= threshold %f (reason %d)",
                 best, thr, r->reason);
    }
    if (ncand > 8) {
        return served;
    }
    bool amb = false;
    if (best >= thr && s->margin > 0) {
        /* ambiguous: a candidate within the margin of the best with another
         * response than a best one (any of tied bests may be served) */
        int rb = -1;
        for (int i = 0; i < w.nm; i++) {
            const ment *e = &w.M[i];
            if (candidate(e, ns, scope) &&
                (e->vec == vec ? 1.0f : 0.0f) == best) {
                if (rb < 0) {
                    rb = e->resp;
                } else if (rb != e->resp) {
                    amb = true;
                }
            }
        }
        for (int i = 0; i < w.nm; i++) {
            const ment *e = &w.M[i];
            if (candidate(e, ns, scope) &&
                (e->vec == vec ? 1.0f : 0.0f) >= best - s->margin &&
                e->resp != rb) {
                amb = true;
            }
        }
    }
    bool want_hit = best >= thr && !amb;
    if (want_hit != r->hit) {
        mismatch("hit %d, want %d (best %f threshold %f margin %f reason %d)",
                 r->hit, want_hit, best, thr, s->margin, r->reason);
    }
    if (!want_hit) {
        if (best < thr) {
            seen.below++;
        } else {
            seen.ambiguous++;
        }
    }
    if (!want_hit && r->reason != (best < thr ? SC_MISS_BELOW_THRESHOLD
                                              : SC_MISS_AMBIGUOUS)) {
        mismatch("miss reason %d (best %f threshold %f)", r->reason, best, thr);
    }
    return served;
}

static void do_lookup(void)
{
    int ns = (int)rn(MODEL_NNS), scope = (int)rn(2);
    const char *text = rn(3) != 0 ? words[rn(9)] : NULL;
    int vec = rn(3) != 0 ? (int)rn(3) : -1;
    if (text == NULL && vec < 0) {
        vec = 1;
    }
    bool has_thr = rn(4) == 0;
    float thr = has_thr ? (rn(2) != 0 ? -0.5f : 1.0f) : 0.9f;
    float v[D];
    if (vec >= 0) {
        basis(v, vec);
    }
    char sn[2] = {(char)('x' + scope), 0};
    sc_cache_query q;
    memset(&q, 0, sizeof(q));
    q.scope = sn;
    q.text = text;
    q.text_len = text != NULL ? strlen(text) : 0;
    q.vec = vec >= 0 ? v : NULL;
    q.dim = vec >= 0 ? D : 0;
    q.has_threshold = has_thr;
    q.threshold = thr;
    sc_cache_result r;
    sc_err rc = sc_cache_lookup(w.c, nsname[ns], &q, &r);
    if (rc != SC_OK) {
        mismatch("lookup rc %d", rc);
        return;
    }
    mns *s = &w.NS[ns];
    m_reap(ns, w.now); /* a lookup reaps its namespace's expired entries */
    s->lookups++;
    char nt[64] = "";
    if (text != NULL) {
        norm(text, nt);
    }
    ment *ex = NULL;
    if (nt[0] != 0) {
        for (int i = 0; i < w.nm; i++) {
            if (same_key(&w.M[i], ns, scope, nt)) {
                ex = &w.M[i];
            }
        }
    }
    ment *served = NULL;
    float mbest = NAN;
    if (ex != NULL) {
        mbest = 1.0f;
        if (!r.hit || r.layer != SC_LAYER_EXACT || r.id != ex->id) {
            mismatch("want an exact hit on %llu, got hit %d layer %d id %llu",
                     (unsigned long long)ex->id, r.hit, r.layer,
                     (unsigned long long)r.id);
        }
        served = ex;
    } else if (r.hit && r.layer == SC_LAYER_EXACT) {
        mismatch("exact hit %llu the model lacks", (unsigned long long)r.id);
    } else {
        served = check_semantic(ns, scope, vec, thr, &r, &mbest);
    }
    if (served != NULL) {
        if (!r.hit) {
            mismatch("miss, want a hit");
        }
        if (served->expires != 0 && served->expires <= w.now) {
            mismatch("served an expired entry");
        }
        if (r.layer == SC_LAYER_EXACT) {
            s->exact++;
            seen.exact++;
        } else {
            s->sem++;
            seen.sem++;
        }
        served->hits++;
        served->seq = ++w.seqc;
        if (s->mode == SC_TTL_SLIDING && served->ttl != 0 &&
            served->expires != 0 && w.now + served->ttl > served->expires) {
            served->expires = w.now + served->ttl;
            seen.slid++;
        }
        if (r.hit_count != served->hits) {
            mismatch("hit_count %llu, want %llu",
                     (unsigned long long)r.hit_count,
                     (unsigned long long)served->hits);
        }
        if (r.expires_ms != served->expires) {
            mismatch("expires %llu, want %llu",
                     (unsigned long long)r.expires_ms,
                     (unsigned long long)served->expires);
        }
    } else {
        s->misses++;
    }
    s->hist[sc_cache_hist_bin(mbest)]++;
    if (!(isnan(mbest) && isnan(r.best_similarity)) &&
        mbest != r.best_similarity) {
        mismatch("best_similarity %f, want %f", r.best_similarity, mbest);
    }
    sc_cache_result_fini(&r);
}

static void do_delete(void)
{
    uint64_t id =
        w.nm > 0 && rn(4) != 0 ? w.M[rn((unsigned)w.nm)].id : rn(1000) + 1;
    ment *e = find(id);
    sc_err rc = sc_cache_delete(w.c, id);
    if (e != NULL) {
        if (rc != SC_OK) {
            mismatch("delete %llu rc %d", (unsigned long long)id, rc);
        }
        mremove(e, &w.NS[e->ns].deletes);
    } else if (rc != SC_ENOTFOUND) {
        mismatch("delete of absent %llu rc %d", (unsigned long long)id, rc);
    }
}

static void do_feedback(void)
{
    if (w.nm == 0) {
        return;
    }
    uint64_t id = w.M[rn((unsigned)w.nm)].id;
    ment *e = find(id);
    sc_err rc = sc_cache_feedback(w.c, id);
    if (e != NULL) {
        if (rc != SC_OK) {
            mismatch("feedback %llu rc %d", (unsigned long long)id, rc);
        }
        if (!e->quar) {
            e->quar = true;
            e->qseq = ++w.seqc;
            if (e->vec >= 0) { /* its vector leaves the index */
                e->bytes -= k_vec - k_novec;
                w.NS[e->ns].bytes -= k_vec - k_novec;
            }
            w.NS[e->ns].quarantined++;
            w.NS[e->ns].false_hits++;
        }
    } else if (rc != SC_ENOTFOUND) {
        mismatch("feedback on absent %llu rc %d", (unsigned long long)id, rc);
    }
}

static void do_flush(void)
{
    int ns = (int)rn(MODEL_NNS);
    if (sc_cache_flush(w.c, nsname[ns]) != SC_OK) {
        mismatch("flush %s", nsname[ns]);
    }
    for (int i = 0; i < w.nm; i++) {
        if (w.M[i].live && w.M[i].ns == ns) {
            mremove(&w.M[i], &w.NS[ns].flushed);
        }
    }
}

static void do_expire(void)
{
    size_t n = sc_cache_expire(w.c, 0);
    size_t m = 0;
    for (int ns = 0; ns < MODEL_NNS; ns++) {
        uint64_t before = w.NS[ns].expirations;
        m_reap(ns, w.now);
        m += w.NS[ns].expirations - before;
    }
    if (n != m) {
        mismatch("expire removed %zu, want %zu", n, m);
    }
}

static void do_configure(void)
{
    int ns = (int)rn(MODEL_NNS);
    mns *s = &w.NS[ns];
    sc_ns_config cfg;
    if (sc_cache_ns_get_config(w.c, nsname[ns], &cfg) != SC_OK) {
        mismatch("get_config %s", nsname[ns]);
        return;
    }
    s->max_entries = rn(3) != 0 ? 0 : rn(10) + 1;
    /* now and then a cap a vector entry cannot fit under (too_big) */
    s->max_bytes = rn(3) != 0   ? 0
                   : rn(8) == 0 ? k_vec
                                : (uint64_t)(rn(6) + 1) * 700;
    s->ttl = rn(2) != 0 ? 0 : rn(5) * 100;
    s->mode = (int)rn(2);
    s->margin = rn(3) == 0 ? 0.5f : 0.0f;
    cfg.max_entries = s->max_entries;
    cfg.max_bytes = s->max_bytes;
    cfg.ttl_ms = s->ttl;
    cfg.ttl_mode = s->mode;
    cfg.margin = s->margin;
    sc_err rc = sc_cache_ns_configure(w.c, nsname[ns], &cfg);
    if (rc != SC_OK) {
        mismatch("configure %s rc %d", nsname[ns], rc);
    }
    m_ns_caps(ns); /* lowered caps evict at once */
}

static void do_drop(void)
{
    int ns = (int)rn(MODEL_NNS);
    if (sc_cache_ns_drop(w.c, nsname[ns]) != SC_OK) {
        mismatch("drop %s", nsname[ns]);
    }
    for (int i = 0; i < w.nm; i++) {
        if (w.M[i].live && w.M[i].ns == ns) {
            w.M[i].live = false;
        }
    }
    memset(&w.NS[ns], 0, sizeof(w.NS[ns]));
    sc_ns_config cfg;
    sc_cache_ns_config_init(&cfg);
    cfg.dim = D;
    if (sc_cache_ns_create(w.c, nsname[ns], &cfg) != SC_OK) {
        mismatch("create %s", nsname[ns]);
    }
}

static int visit(const sc_cache_entry_info *e, void *arg)
{
    int *n = arg;
    int ns = strcmp(e->ns, "a") == 0 ? 0 : 1;
    n[ns]++;
    ment *m = find(e->id);
    if (m == NULL) {
        mismatch("the cache has entry %llu, the model not",
                 (unsigned long long)e->id);
        return 0;
    }
    if (m->ns != ns || m->quar != e->quarantined ||
        m->expires != e->expires_ms || m->hits != e->hit_count) {
        mismatch("entry %llu: quarantined %d/%d expires %llu/%llu hits "
                 "%llu/%llu (cache/model)",
                 (unsigned long long)e->id, e->quarantined, m->quar,
                 (unsigned long long)e->expires_ms,
                 (unsigned long long)m->expires,
                 (unsigned long long)e->hit_count, (unsigned long long)m->hits);
    }
    return 0;
}

#define EQ(field, want)                                                        \
    do {                                                                       \
        if (st.field != (want)) {                                              \
            mismatch("ns %s %s %llu, want %llu", nsname[ns], #field,           \
                     (unsigned long long)st.field,                             \
                     (unsigned long long)(want));                              \
        }                                                                      \
    } while (0)

/* Every entry and every counter against the model. */
static void check_all(void)
{
    int n[MODEL_NNS] = {0};
    sc_cache_foreach_entry(w.c, NULL, visit, n);
    sc_cache_stats g;
    sc_cache_stats_get(w.c, NULL, &g);
    uint64_t se = 0, sb = 0;
    for (int ns = 0; ns < MODEL_NNS; ns++) {
        sc_cache_stats st;
        sc_cache_stats_get(w.c, nsname[ns], &st);
        const mns *s = &w.NS[ns];
        se += st.entries;
        sb += st.bytes;
        EQ(entries, s->entries);
        EQ(bytes, ns_bytes(ns));
        EQ(quarantined, s->quarantined);
        EQ(lookups, s->lookups);
        EQ(exact_hits, s->exact);
        EQ(semantic_hits, s->sem);
        EQ(misses, s->misses);
        EQ(inserts, s->inserts);
        EQ(replaced, s->replaced);
        EQ(deletes, s->deletes);
        EQ(expirations, s->expirations);
        EQ(evictions, s->evictions);
        EQ(flushed, s->flushed);
        EQ(false_hits, s->false_hits);
        EQ(entries, (uint64_t)n[ns]);
        EQ(entries, st.inserts - st.replaced - st.deletes - st.expirations -
                        st.evictions - st.flushed);
        EQ(lookups, st.exact_hits + st.semantic_hits + st.misses);
        uint64_t hs = 0;
        for (unsigned i = 0; i < SC_CACHE_HIST_BINS; i++) {
            hs += st.hist[i];
            if (st.hist[i] != s->hist[i]) {
                mismatch("ns %s hist[%u] %llu, want %llu", nsname[ns], i,
                         (unsigned long long)st.hist[i],
                         (unsigned long long)s->hist[i]);
            }
        }
        EQ(lookups, hs);
    }
    if (g.entries != se || g.bytes != sb) {
        mismatch("global entries/bytes %llu/%llu, namespaces' sum %llu/%llu",
                 (unsigned long long)g.entries, (unsigned long long)g.bytes,
                 (unsigned long long)se, (unsigned long long)sb);
    }
    if ((w.gmax_entries != 0 && g.entries > w.gmax_entries) ||
        (w.gmax_bytes != 0 && g.bytes > w.gmax_bytes)) {
        mismatch("over the global caps: %llu entries, %llu bytes",
                 (unsigned long long)g.entries, (unsigned long long)g.bytes);
    }
}

static void run_seed(uint64_t seed)
{
    memset(&w, 0, sizeof(w));
    w.seed = seed;
    w.rs = seed;
    atomic_store(&w.now, 1000);
    sc_cache_config cfg;
    sc_cache_config_init(&cfg);
    w.gmax_entries = rn(2) != 0 ? 0 : rn(20) + 1;
    w.gmax_bytes = rn(2) != 0 ? 0 : (uint64_t)(rn(10) + 2) * 700;
    cfg.max_entries = w.gmax_entries;
    cfg.max_bytes = w.gmax_bytes;
    cfg.clock = fake_clock;
    cfg.clock_arg = &w.now;
    if (sc_cache_open(&cfg, &w.c) != SC_OK) {
        mismatch("open");
        return;
    }
    for (int i = 0; i < MODEL_NNS; i++) {
        sc_ns_config nc;
        sc_cache_ns_config_init(&nc);
        nc.dim = D;
        if (sc_cache_ns_create(w.c, nsname[i], &nc) != SC_OK) {
            mismatch("create %s", nsname[i]);
        }
    }
    for (w.op = 0; w.op < MODEL_OPS && w.nm < MODEL_MAXE - 1; w.op++) {
        int before = w.fails;
        unsigned k = rn(100);
        if (k < 40) {
            do_insert();
        } else if (k < 75) {
            do_lookup();
        } else if (k < 80) {
            do_delete();
        } else if (k < 85) {
            do_feedback();
        } else if (k < 87) {
            do_flush();
        } else if (k < 90) {
            do_expire();
        } else if (k < 94) {
            do_configure();
        } else if (k < 95) {
            do_drop();
        } else {
            atomic_fetch_add(&w.now, rn(200));
        }
        check_all();
        if (w.fails == before) {
            CHECK_COUNT(test_passed); /* one step whose every result agreed */
        }
        if (w.fails >= SEED_FAIL_CAP) {
            fprintf(stderr, "seed %llu: stopped at op %ld\n",
                    (unsigned long long)seed, w.op);
            break;
        }
    }
    sc_cache_close(w.c);
    w.c = NULL;
}

/* The bytes an entry costs beyond its text and response, with and without
 * a vector: measured, since they follow the cache's struct sizes. */
static void calibrate(void)
{
    sc_cache *t = NULL;
    sc_cache_config cfg;
    sc_cache_config_init(&cfg);
    CHECK_EQ_INT(sc_cache_open(&cfg, &t), SC_OK);
    sc_ns_config nc;
    sc_cache_ns_config_init(&nc);
    nc.dim = D;
    CHECK_EQ_INT(sc_cache_ns_create(t, "a", &nc), SC_OK);
    sc_cache_item it;
    memset(&it, 0, sizeof(it));
    /* Two entries of 5 bytes (text and response) in a scope "y": the
     * second costs its K, the first its scope's bytes too. */
    it.scope = "y";
    it.text = "abc";
    it.text_len = 3;
    it.response = "r0";
    it.response_len = 2;
    sc_cache_stats st;
    uint64_t b[5] = {0};
    const char *texts[4] = {"abc", "abd", "abe", "abf"};
    float v[D];
    basis(v, 0);
    for (int i = 0; i < 4; i++) {
        if (i == 2) { /* then two with a vector in a scope "z" */
            it.vec = v;
            it.dim = D;
            it.scope = "z";
        }
        it.text = texts[i];
        CHECK_EQ_INT(sc_cache_insert(t, "a", &it, NULL), SC_OK);
        sc_cache_stats_get(t, "a", &st);
        b[i + 1] = st.bytes;
    }
    k_novec = b[2] - b[1] - 5;
    k_scope = b[1] - k_novec - 5;
    k_vec = b[4] - b[3] - 5;
    k_ix = b[3] - b[2] - k_vec - 5 - k_scope;
    CHECK(k_vec > k_novec);
    CHECK(k_scope > 0 && k_ix > 0);
    sc_cache_close(t);
}

/* ---- part two: threads ---- */

static const char *mt_nsname[MT_NNS] = {"a", "b", "c"};

static struct {
    sc_cache *c;
    _Atomic uint64_t now;
    /* what each id was inserted with: 1 a vector, 2 none; 0 unknown. Each
     * thread writes only the ids it got; read once the threads stop. */
    unsigned char kind[MT_MAXID];
    bool drop;
} mt;

typedef struct mt_arg {
    pthread_t th;
    uint64_t seed;
    int fails;
} mt_arg;

static void *mt_worker(void *p)
{
    mt_arg *a = p;
    uint64_t s = a->seed;
    for (int i = 0; i < MT_OPS; i++) {
        unsigned k = (unsigned)(test_rand(&s) % 100);
        const char *ns = mt_nsname[test_rand(&s) % MT_NNS];
        char sn[2] = {(char)('x' + test_rand(&s) % 3), 0};
        float v[D];
        basis(v, (int)(test_rand(&s) % D));
        if (k < 45) {
            sc_cache_item it;
            memset(&it, 0, sizeof(it));
            it.scope = sn;
            const char *t =
                test_rand(&s) % 4 != 0 ? words[test_rand(&s) % 8] : NULL;
            it.text = t;
            it.text_len = t != NULL ? strlen(t) : 0;
            bool vec = t == NULL || test_rand(&s) % 2 != 0;
            it.vec = vec ? v : NULL;
            it.dim = vec ? D : 0;
            const char *r = resps[test_rand(&s) % 4];
            it.response = r;
            it.response_len = strlen(r);
            it.ttl_ms =
                test_rand(&s) % 3 == 0 ? (int64_t)(test_rand(&s) % 500) : 0;
            uint64_t id = 0;
            sc_err rc = sc_cache_insert(mt.c, ns, &it, &id);
            if (rc == SC_OK && id < MT_MAXID) {
                mt.kind[id] = vec ? 1 : 2;
            } else if (rc != SC_OK && rc != SC_ETOOBIG && rc != SC_ENONS) {
                /* ENONS: a drop in another thread, between drop and create */
                fprintf(stderr, "thread insert rc %d\n", rc);
                a->fails++;
            }
        } else if (k < 80) {
            sc_cache_query q;
            memset(&q, 0, sizeof(q));
            q.scope = sn;
            const char *t =
                test_rand(&s) % 2 != 0 ? words[test_rand(&s) % 8] : NULL;
            q.text = t;
            q.text_len = t != NULL ? strlen(t) : 0;
            q.vec = v;
            q.dim = D;
            uint64_t before = atomic_load(&mt.now);
            sc_cache_result r;
            sc_err rc = sc_cache_lookup(mt.c, ns, &q, &r);
            if (rc == SC_OK) {
                /* the clock only moves on: what was served had not expired
                 * when the call began */
                if (r.hit && r.expires_ms != 0 && r.expires_ms <= before) {
                    fprintf(stderr, "thread: served %llu expired at %llu\n",
                            (unsigned long long)r.id,
                            (unsigned long long)r.expires_ms);
                    a->fails++;
                }
                if (r.hit && r.hit_count == 0) {
                    fprintf(stderr, "thread: a hit with hit_count 0\n");
                    a->fails++;
                }
                sc_cache_result_fini(&r);
            } else if (rc != SC_ENONS) {
                fprintf(stderr, "thread lookup rc %d\n", rc);
                a->fails++;
            }
        } else if (k < 85) {
            (void)sc_cache_delete(mt.c, test_rand(&s) % 20000);
        } else if (k < 88) {
            (void)sc_cache_feedback(mt.c, test_rand(&s) % 20000);
        } else if (k < 89) {
            (void)sc_cache_flush(mt.c, ns);
        } else if (k < 92) {
            (void)sc_cache_expire(mt.c, 0);
        } else if (k < 95) {
            sc_ns_config cfg;
            if (sc_cache_ns_get_config(mt.c, ns, &cfg) == SC_OK) {
                cfg.max_entries =
                    test_rand(&s) % 3 != 0 ? 0 : test_rand(&s) % 50 + 1;
                cfg.max_bytes =
                    test_rand(&s) % 3 != 0 ? 0 : (test_rand(&s) % 40 + 1) * 700;
                cfg.ttl_ms = test_rand(&s) % 2 != 0 ? 0 : test_rand(&s) % 500;
                cfg.ttl_mode = (int)(test_rand(&s) % 2);
                (void)sc_cache_ns_configure(mt.c, ns, &cfg);
            }
        } else if (k < 96 && mt.drop) {
            (void)sc_cache_ns_drop(mt.c, ns);
            sc_ns_config cfg;
            sc_cache_ns_config_init(&cfg);
            cfg.dim = D;
            (void)sc_cache_ns_create(mt.c, ns, &cfg);
        } else {
            atomic_fetch_add(&mt.now, test_rand(&s) % 20);
        }
    }
    return NULL;
}

typedef struct mt_count {
    uint64_t n[MT_NNS], b[MT_NNS];
    bool scope[MT_NNS][3]; /* has an entry: counts its scope's bytes */
    int unknown;
} mt_count;

static int mt_visit(const sc_cache_entry_info *e, void *arg)
{
    mt_count *x = arg;
    int ns = e->ns[0] - 'a';
    if (ns < 0 || ns >= MT_NNS || e->id >= MT_MAXID || mt.kind[e->id] == 0) {
        x->unknown++;
        return 0;
    }
    x->n[ns]++;
    if (e->scope != NULL && e->scope[0] >= 'x' && e->scope[0] <= 'z') {
        x->scope[ns][e->scope[0] - 'x'] = true;
    } else {
        x->unknown++;
    }
    x->b[ns] +=
        (mt.kind[e->id] == 1 ? k_vec : k_novec) + e->text_len + e->response_len;
    return 0;
}

/* Threads mixing every call; once they stop, the stats recounted from the
 * entries, the identities between counters, every cap, and a flush. */
static void run_threads(uint64_t seed, bool drop)
{
    memset(&mt, 0, sizeof(mt));
    mt.drop = drop;
    atomic_store(&mt.now, 1000);
    uint64_t s = seed;
    sc_cache_config cfg;
    sc_cache_config_init(&cfg);
    uint64_t gmax_e = test_rand(&s) % 2 != 0 ? 0 : test_rand(&s) % 200 + 1;
    uint64_t gmax_b =
        test_rand(&s) % 2 != 0 ? 0 : (test_rand(&s) % 100 + 2) * 700;
    cfg.max_entries = gmax_e;
    cfg.max_bytes = gmax_b;
    cfg.clock = fake_clock;
    cfg.clock_arg = &mt.now;
    CHECK_EQ_INT(sc_cache_open(&cfg, &mt.c), SC_OK);
    if (mt.c == NULL) {
        return;
    }
    for (int i = 0; i < MT_NNS; i++) {
        sc_ns_config nc;
        sc_cache_ns_config_init(&nc);
        nc.dim = D;
        CHECK_EQ_INT(sc_cache_ns_create(mt.c, mt_nsname[i], &nc), SC_OK);
    }
    mt_arg args[MT_THREADS];
    for (int i = 0; i < MT_THREADS; i++) {
        args[i].seed = seed * 1000 + (uint64_t)i;
        args[i].fails = 0;
        CHECK_EQ_INT(pthread_create(&args[i].th, NULL, mt_worker, &args[i]), 0);
    }
    int fails = 0;
    for (int i = 0; i < MT_THREADS; i++) {
        pthread_join(args[i].th, NULL);
        fails += args[i].fails;
    }
    CHECK_EQ_INT(fails, 0);

    mt_count x;
    memset(&x, 0, sizeof(x));
    sc_cache_foreach_entry(mt.c, NULL, mt_visit, &x);
    CHECK_EQ_INT(x.unknown, 0);
    sc_cache_stats g;
    sc_cache_stats_get(mt.c, NULL, &g);
    uint64_t te = 0, tb = 0;
    for (int i = 0; i < MT_NNS; i++) {
        sc_cache_stats st;
        sc_ns_config nc;
        CHECK_EQ_INT(sc_cache_stats_get(mt.c, mt_nsname[i], &st), SC_OK);
        CHECK_EQ_INT(sc_cache_ns_get_config(mt.c, mt_nsname[i], &nc), SC_OK);
        te += st.entries;
        tb += st.bytes;
        CHECK_EQ_INT(st.entries, x.n[i]);
        /* Each live scope: k_scope, and k_ix once a vector made its index
         * (which one did is not known here). */
        uint64_t sb = 0;
        for (int k = 0; k < 3; k++) {
            sb += x.scope[i][k] ? k_scope : 0;
        }
        CHECK(st.bytes >= x.b[i] + sb);
        CHECK(st.bytes <= x.b[i] + sb + (sb / k_scope) * k_ix);
        CHECK_EQ_INT(st.entries, st.inserts - st.replaced - st.deletes -
                                     st.expirations - st.evictions -
                                     st.flushed);
        CHECK_EQ_INT(st.lookups, st.exact_hits + st.semantic_hits + st.misses);
        CHECK(nc.max_entries == 0 || st.entries <= nc.max_entries);
        CHECK(nc.max_bytes == 0 || st.bytes <= nc.max_bytes);
    }
    CHECK_EQ_INT(g.entries, te);
    CHECK_EQ_INT(g.bytes, tb);
    CHECK(gmax_e == 0 || g.entries <= gmax_e);
    CHECK(gmax_b == 0 || g.bytes <= gmax_b);
    CHECK_EQ_INT(sc_cache_flush(mt.c, NULL), SC_OK);
    sc_cache_stats_get(mt.c, NULL, &g);
    CHECK_EQ_INT(g.entries, 0);
    CHECK_EQ_INT(g.bytes, 0);
    sc_cache_close(mt.c);
    mt.c = NULL;
}

int main(int argc, char **argv)
{
    int seeds = argc > 1 ? atoi(argv[1]) : MODEL_SEEDS;
    calibrate();
    for (uint64_t seed = 1; seed <= (uint64_t)seeds; seed++) {
        run_seed(seed);
    }
    CHECK(seen.exact > 0);
    CHECK(seen.sem > 0);
    CHECK(seen.ambiguous > 0);
    CHECK(seen.below > 0);
    CHECK(seen.evictions > 0);
    CHECK(seen.expirations > 0);
    CHECK(seen.replaced > 0);
    CHECK(seen.slid > 0);
    CHECK(seen.toobig > 0);
    for (uint64_t r = 1; r <= MT_RUNS; r++) {
        run_threads(r, r % 2 == 0); /* the second run drops namespaces too */
    }
    char name[96];
    snprintf(name, sizeof(name),
             "test_cache_model (%d seeds x %d ops, %d threaded runs)", seeds,
             MODEL_OPS, MT_RUNS);
    return test_summary(name);
}
