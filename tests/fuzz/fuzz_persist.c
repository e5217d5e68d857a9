/* fuzz_persist.c - libFuzzer target over the snapshot and log loader
 * (sc_persist_replay): a hostile file must be refused with a message or
 * replayed into a cache that stays whole (its entries can be listed, looked
 * up and the cache closed without a leak). The first byte picks how the
 * rest is read: bit 0 snapshot or log, bit 1 the last log (torn tail may
 * be cut), bit 2 repair, bit 3 an embedder "fz@2" of 16 floats that
 * supersedes "fz@" models (restore then moves their namespaces: seeds
 * moved-*, from tests/test_persist.c). Seeds v3-* are files of format
 * version 3 (SEMCACHE_PERSIST_SEEDS=DIR build/test_persist leaves them in
 * DIR; a control byte put before each), v3-log-stale-* one whose last log
 * ends in another log's records; the others, of versions 1 and 2, were
 * written by earlier builds and stay as old-format inputs. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache.h"
#include "cache/ledger.h"
#include "cache/persist.h"
#include "tests/fz_model.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_persist: %s\n", what);
    abort();
}

typedef struct seen {
    size_t n;
    bool moving;
} seen;

static int visit(const sc_cache_entry_info *e, void *arg)
{
    seen *v = arg;
    if (e->id == 0 || (e->vec != NULL && e->dim == 0)) {
        die("restored entry malformed");
    }
    if (v->moving && e->vec != NULL && e->dim == FZ_DIM &&
        e->embed_model != NULL && strncmp(e->embed_model, "fz@", 3) == 0 &&
        strcmp(e->embed_model, "fz@2") != 0) {
        die("an entry of a superseded model was restored unmoved");
    }
    v->n++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    uint8_t mode = data[0];
    sc_cache_config cc;
    sc_cache_config_init(&cc);
    cc.max_namespaces = 16;
    cc.max_bytes = 64u << 20;
    sc_prices *prices = NULL;
    sc_ledger *ledger = NULL;
    sc_cache *c = NULL;
    if (sc_prices_default(&prices) != SC_OK ||
        sc_ledger_open(prices, &ledger) != SC_OK) {
        die("setup");
    }
    cc.ledger = ledger;
    sc_cache_embedder em = {.model = "fz@2",
                            .dim = FZ_DIM,
                            .embed = fz_embed,
                            .supersedes = fz_supersedes};
    if (mode & 8) {
        cc.embedder = &em;
    }
    if (sc_cache_open(&cc, &c) != SC_OK) {
        die("cache open");
    }
    sc_persist_load_stats st;
    memset(&st, 0, sizeof(st));
    char msg[512];
    msg[0] = '\0';
    size_t valid = 0;
    sc_err rc = sc_persist_replay(
        c, ledger, (mode & 1) ? SC_PERSIST_SNAPSHOT : SC_PERSIST_LOG,
        data + 1, size - 1, (mode & 2) != 0, (mode & 4) != 0,
        1700000000000ull, NULL, &st, &valid, msg, sizeof(msg));
    if (rc != SC_OK && rc != SC_ENOMEM && msg[0] == '\0') {
        die("refused without a message");
    }
    if (valid > size - 1) {
        die("valid length past the end");
    }
    seen v = {0, (mode & 8) != 0};
    if (sc_cache_foreach_entry(c, NULL, visit, &v) != SC_OK) {
        die("foreach failed");
    }
    sc_cache_stats s;
    if (sc_cache_stats_get(c, NULL, &s) != SC_OK || s.entries != v.n) {
        die("entry count differs from the entries listed");
    }
    sc_ledger_counts t;
    (void)sc_ledger_sum(ledger, NULL, SC_LEDGER_BY_NS, &t, NULL, NULL);
    sc_cache_close(c);
    sc_ledger_close(ledger);
    sc_prices_free(prices);
    return 0;
}
