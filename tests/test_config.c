/* test_config.c - semcached's configuration file (proto/config.h): every
 * key read, flags' defaults kept where the file is silent, every kind of
 * bad file refused with a message naming the key, and the warnings for the
 * settings a build on the system's nng cannot apply. */
#define _GNU_SOURCE
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/config.h"
#include "proto/proxy.h"
#include "tests/test_tmp.h"
#include "tests/test_util.h"

static char dir[256]; /* this run's (test_tmp.h) config-XXXXXX */

/* Writes text to a file in the test's folder and returns its path. */
static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
    return path;
}

/* Loads text as a config; returns the code, msg gets the reason. */
static sc_err load(const char *text, sc_config *cfg, char *msg, size_t cap)
{
    sc_config_init(cfg);
    msg[0] = '\0';
    return sc_config_load(cfg, write_file("c.json", text), msg, cap);
}

/* The proxy flags cfg holds (n of them, flags and values), parsed into
 * *pc as semcached parses them; false (and a failed check) if not n. */
static bool proxy_of(const sc_config *cfg, unsigned n, sc_proxy_config *pc)
{
    CHECK_EQ_INT(cfg->nproxy_args, n);
    if (cfg->nproxy_args != n) {
        return false;
    }
    sc_proxy_config_init(pc);
    char why[128];
    for (unsigned i = 0; i < n; i += 2) {
        CHECK(sc_proxy_parse_flag(pc, cfg->proxy_args[i],
                                  cfg->proxy_args[i + 1], why,
                                  sizeof(why)) == 1);
    }
    return true;
}

static void test_good(void)
{
    sc_config cfg;
    char msg[512];
    sc_err rc = load(
        "{\"listen\": [\"tcp://127.0.0.1:7711\", \"ipc:///tmp/x.sock\"],\n"
        " \"threads\": 4, \"recv_max\": 65536, \"tls_cert\": \"/c.pem\",\n"
        " \"data_dir\": \"/srv/sc\", \"max_namespaces\": 7,\n"
        " \"http_max_conns\": 300, \"max_clients\": 5000,\n"
        " \"http_stop_grace\": 600000, \"http_write_timeout\": 45000,\n"
        " \"http_read_timeout\": 20000,\n"
        " \"reply_queue_max\": 268435456, \"reply_queue_len\": 4096,\n"
        " \"reply_total_max\": 536870912, \"reply_timeout\": 5000,\n"
        " \"persist\": false, \"fsync\": \"always\", \"compact_bytes\": "
        "2097152,\n"
        " \"snapshot_at_stop\": false,\n"
        " \"proxy\": {\"upstream\": \"http://127.0.0.1:9\", \"workers\": 3,\n"
        "   \"history\": \"single\", \"store\": \"stop,length\"},\n"
        " \"max_bytes\": 1000000, \"max_entries\": 500,\n"
        " \"namespaces\": {\"faq\": {\"dim\": 384, \"storage\": \"int8\",\n"
        "   \"threshold\": 0.85, \"margin\": 0.02, \"ttl\": 3600,\n"
        "   \"ttl_mode\": \"sliding\", \"max_entries\": 10, \"max_bytes\": "
        "99,\n"
        "   \"max_response_bytes\": 4096, \"embed_model\": \"mini@2\",\n"
        "   \"vote\": false},\n"
        "  \"other\": {}}}\n",
        &cfg, msg, sizeof(msg));
    CHECK_EQ_INT(rc, SC_OK);
    if (rc != SC_OK) {
        fprintf(stderr, "  %s\n", msg);
    }
    CHECK_EQ_INT(cfg.nlisten, 2);
    CHECK(cfg.nlisten == 2 && strcmp(cfg.listen[1], "ipc:///tmp/x.sock") == 0);
    CHECK_EQ_INT(cfg.threads, 4);
    CHECK_EQ_INT(cfg.recv_max, 65536);
    CHECK_EQ_INT(cfg.http_max_conns, 300);
    CHECK_EQ_INT(cfg.http_stop_grace_ms, 600000);
    CHECK_EQ_INT(cfg.http_write_timeout_ms, 45000);
    CHECK_EQ_INT(cfg.http_read_timeout_ms, 20000);
    CHECK_EQ_INT(cfg.max_clients, 5000);
    CHECK_EQ_INT(cfg.reply_queue_max, 268435456);
    CHECK_EQ_INT(cfg.reply_queue_len, 4096);
    CHECK_EQ_INT(cfg.reply_total_max, 536870912);
    CHECK_EQ_INT(cfg.reply_timeout_ms, 5000);
    CHECK(cfg.tls_cert != NULL && strcmp(cfg.tls_cert, "/c.pem") == 0);
    CHECK(strcmp(cfg.data_dir, "/srv/sc") == 0);
    CHECK(!cfg.persist);
    CHECK(!cfg.snapshot_at_stop);
    CHECK_EQ_INT(cfg.fsync, SC_FSYNC_ALWAYS);
    CHECK_EQ_INT(cfg.compact_bytes, 2097152);
    sc_proxy_config pc;
    if (proxy_of(&cfg, 8, &pc)) {
        CHECK(pc.upstream != NULL &&
              strcmp(pc.upstream, "http://127.0.0.1:9") == 0);
        CHECK_EQ_INT(pc.workers, 3);
        CHECK_EQ_INT(pc.history, SC_PROXY_HISTORY_SINGLE);
        CHECK(pc.store_truncated && !pc.store_tool_calls);
    }
    char state[256];
    CHECK(sc_config_state_path(&cfg, state, sizeof(state)) == SC_OK &&
          strcmp(state, "/srv/sc/state") == 0);
    CHECK(sc_config_state_path(&cfg, state, 8) == SC_ETOOBIG);
    CHECK_EQ_INT(cfg.cache.max_namespaces, 7);
    CHECK_EQ_INT(cfg.cache.max_bytes, 1000000);
    CHECK_EQ_INT(cfg.cache.max_entries, 500);
    CHECK_EQ_INT(cfg.nns, 2);
    if (cfg.nns == 2) {
        const sc_ns_config *n = &cfg.ns[0].cfg;
        CHECK(strcmp(cfg.ns[0].name, "faq") == 0);
        CHECK_EQ_INT(n->dim, 384);
        CHECK_EQ_INT(n->storage, SC_STORAGE_I8);
        CHECK(fabsf(n->threshold - 0.85f) < 1e-6f);
        CHECK(fabsf(n->margin - 0.02f) < 1e-6f);
        CHECK_EQ_INT(n->ttl_ms, 3600000);
        CHECK_EQ_INT(n->ttl_mode, SC_TTL_SLIDING);
        CHECK_EQ_INT(n->max_entries, 10);
        CHECK_EQ_INT(n->max_bytes, 99);
        CHECK_EQ_INT(n->max_response_bytes, 4096);
        CHECK(strcmp(n->embed_model, "mini@2") == 0);
        CHECK(!n->auto_threshold && !n->auto_margin);
        CHECK_EQ_INT(n->vote, 0);
        /* A namespace that says nothing gets the namespace defaults. */
        sc_ns_config def;
        sc_cache_ns_config_init(&def);
        CHECK(memcmp(&cfg.ns[1].cfg, &def, sizeof(def)) == 0);
    }
    char path[256];
    CHECK_EQ_INT(sc_config_embed_path(&cfg, path, sizeof(path)), SC_OK);
    CHECK(strcmp(path, "/srv/sc/" SC_CONFIG_EMBED_FILE) == 0);
    CHECK_EQ_INT(sc_config_embed_path(&cfg, path, 5), SC_ETOOBIG);
    sc_config_fini(&cfg);

    /* A TTL under a millisecond is 1 ms, not 0 ("never expires"). */
    CHECK_EQ_INT(load("{\"namespaces\": {\"n\": {\"ttl\": 0.0004}}}", &cfg, msg,
                      sizeof(msg)),
                 SC_OK);
    CHECK(cfg.nns == 1 && cfg.ns[0].cfg.ttl_ms == 1);
    sc_config_fini(&cfg);

    /* Empty object: every default stays. */
    CHECK_EQ_INT(load("{}", &cfg, msg, sizeof(msg)), SC_OK);
    sc_cache_config cdef;
    sc_cache_config_init(&cdef);
    CHECK_EQ_INT(cfg.nlisten, 0);
    CHECK_EQ_INT(cfg.threads, 0);
    CHECK(strcmp(cfg.data_dir, SC_CONFIG_DEFAULT_DATA_DIR) == 0);
    CHECK(cfg.persist && cfg.fsync == SC_FSYNC_EVERYSEC && !cfg.repair &&
          cfg.compact_bytes == 0 && cfg.snapshot_at_stop);
    CHECK_EQ_INT(cfg.cache.max_bytes, cdef.max_bytes);
    CHECK_EQ_INT(cfg.cache.max_namespaces, cdef.max_namespaces);
    sc_config_fini(&cfg);

    /* The price table, the HTTP front, a namespace's index backend. */
    CHECK_EQ_INT(load("{\"prices\": \"/p.json\", \"http\": \"127.0.0.1:8080\","
                      " \"namespaces\": {\"big\": {\"backend\": \"auto\","
                      " \"nlist\": 64, \"nprobe\": 8, \"train_min\": 500}}}",
                      &cfg, msg, sizeof(msg)),
                 SC_OK);
    CHECK(cfg.prices != NULL && strcmp(cfg.prices, "/p.json") == 0);
    CHECK(cfg.http != NULL && strcmp(cfg.http, "127.0.0.1:8080") == 0);
    CHECK_EQ_INT(cfg.nns, 1);
    if (cfg.nns == 1) {
        CHECK(strcmp(cfg.ns[0].cfg.backend, "auto") == 0);
        CHECK_EQ_INT(cfg.ns[0].cfg.nlist, 64);
        CHECK_EQ_INT(cfg.ns[0].cfg.nprobe, 8);
        CHECK_EQ_INT(cfg.ns[0].cfg.train_min, 500);
    }
    sc_config_fini(&cfg);

    /* Cost targets. */
    CHECK_EQ_INT(load("{\"cost_targets\": {\"features\": {\"chat\": 0.002},"
                      " \"namespaces\": {\"faq\": 0.001}},"
                      " \"proxy\": {\"upstream\": \"http://127.0.0.1:9\","
                      " \"history\": \"single\", \"workers\": 3}}",
                      &cfg, msg, sizeof(msg)),
                 SC_OK);
    CHECK_EQ_INT(cfg.ntargets, 2);
    if (cfg.ntargets == 2) {
        int f = cfg.targets[0].kind == SC_COST_TARGET_FEATURE ? 0 : 1;
        CHECK(strcmp(cfg.targets[f].name, "chat") == 0 &&
              cfg.targets[f].usd_per_request == 0.002);
        CHECK(cfg.targets[1 - f].kind == SC_COST_TARGET_NS &&
              strcmp(cfg.targets[1 - f].name, "faq") == 0);
    }
    /* A second --config file (semcached's base.json, then local.json):
     * its target for faq replaces the first file's, which the dispatcher
     * would otherwise match first and keep. */
    CHECK_EQ_INT(sc_config_load(&cfg,
                                write_file("local.json",
                                           "{\"cost_targets\": "
                                           "{\"namespaces\": {\"faq\": "
                                           "1e-9, \"docs\": 0.5}},\n"
                                           " \"proxy\": {\"workers\": 5}}"),
                                msg, sizeof(msg)),
                 SC_OK);
    CHECK_EQ_INT(cfg.ntargets, 3);
    int faq_targets = 0;
    for (size_t i = 0; i < cfg.ntargets; i++) {
        if (cfg.targets[i].kind == SC_COST_TARGET_NS &&
            strcmp(cfg.targets[i].name, "faq") == 0) {
            faq_targets++;
            CHECK(cfg.targets[i].usd_per_request == 1e-9);
        }
    }
    CHECK_EQ_INT(faq_targets, 1);
    /* Its proxy keys replace the first file's of the same name; the
     * others (the upstream) stay. */
    if (proxy_of(&cfg, 6, &pc)) {
        CHECK(pc.upstream != NULL &&
              strcmp(pc.upstream, "http://127.0.0.1:9") == 0);
        CHECK_EQ_INT(pc.workers, 5);
        CHECK_EQ_INT(pc.history, SC_PROXY_HISTORY_SINGLE);
    }
    sc_config_fini(&cfg);

    /* A single listen string, and embed_table overriding the data dir. */
    CHECK_EQ_INT(load("{\"listen\": \"tcp://127.0.0.1:1\", "
                      "\"embed_table\": \"/t.bin\"}",
                      &cfg, msg, sizeof(msg)),
                 SC_OK);
    CHECK(cfg.nlisten == 1 && strcmp(cfg.listen[0], "tcp://127.0.0.1:1") == 0);
    CHECK_EQ_INT(sc_config_embed_path(&cfg, path, sizeof(path)), SC_OK);
    CHECK(strcmp(path, "/t.bin") == 0);
    sc_config_fini(&cfg);
}

/* Each bad file is refused, and the message names what is wrong. */
static void test_bad(void)
{
    static const struct {
        const char *text;
        const char *says;
    } cases[] = {
        {"", "c.json"},
        {"{\"threads\": 4", "c.json"},
        {"[1, 2]", "one JSON object"},
        {"{\"thread\": 4}", "'thread': unknown key"},
        {"{\"threads\": 0}", "'threads'"},
        {"{\"threads\": 2000}", "'threads'"},
        {"{\"threads\": 2.5}", "'threads'"},
        {"{\"threads\": \"4\"}", "'threads'"},
        {"{\"threads\": -1}", "'threads'"},
        {"{\"recv_max\": 10}", "'recv_max'"},
        {"{\"reply_queue_max\": 1000}", "'reply_queue_max'"},
        {"{\"reply_queue_len\": 63}", "'reply_queue_len'"},
        {"{\"reply_queue_len\": 1048577}", "'reply_queue_len'"},
        {"{\"reply_queue_len\": \"1024\"}", "'reply_queue_len'"},
        {"{\"reply_total_max\": 1000}", "'reply_total_max'"},
        {"{\"reply_timeout\": 99}", "'reply_timeout'"},
        {"{\"reply_timeout\": 3600001}", "'reply_timeout'"},
        {"{\"http_max_conns\": 0}", "'http_max_conns'"},
        {"{\"max_clients\": 0}", "'max_clients'"},
        {"{\"max_clients\": \"10\"}", "'max_clients'"},
        {"{\"http_max_conns\": 2000000}", "'http_max_conns'"},
        {"{\"http_stop_grace\": 0}", "'http_stop_grace'"},
        {"{\"http_stop_grace\": 3600001}", "'http_stop_grace'"},
        {"{\"http_write_timeout\": 0}", "'http_write_timeout'"},
        {"{\"http_write_timeout\": 99}", "'http_write_timeout'"},
        {"{\"http_write_timeout\": 3600001}", "'http_write_timeout'"},
        {"{\"http_write_timeout\": \"1000\"}", "'http_write_timeout'"},
        {"{\"http_read_timeout\": 0}",
         "'http_read_timeout': must be 100..3600000"},
        {"{\"http_read_timeout\": 99}",
         "'http_read_timeout': must be 100..3600000"},
        {"{\"http_read_timeout\": 3600001}",
         "'http_read_timeout': must be 100..3600000"},
        {"{\"http_read_timeout\": -5}",
         "'http_read_timeout': must be a non-negative integer"},
        {"{\"http_read_timeout\": 300.5}",
         "'http_read_timeout': must be a non-negative integer"},
        {"{\"http_read_timeout\": \"1000\"}",
         "'http_read_timeout': must be a non-negative integer"},
        {"{\"threads\": 4, \"threads\": 5}",
         "duplicate object key near '\"threads\"'"},
        {"{\"proxy\": {\"upstream\": \"ftp://example\"}}", "'proxy.upstream'"},
        {"{\"proxy\": {\"ns\": \"bad name!\"}}", "'proxy.ns'"},
        {"{\"listen\": []}", "'listen'"},
        {"{\"listen\": [1]}", "'listen'"},
        {"{\"listen\": [\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\","
         "\"i\"]}",
         "'listen'"},
        {"{\"listen\": \"\"}", "'listen'"},
        {"{\"data_dir\": null}", "'data_dir'"},
        {"{\"persist\": 1}", "'persist'"},
        {"{\"snapshot_at_stop\": \"no\"}", "'snapshot_at_stop'"},
        {"{\"fsync\": \"sometimes\"}", "'fsync'"},
        {"{\"fsync\": true}", "'fsync'"},
        {"{\"compact_bytes\": 1000}", "'compact_bytes'"},
        {"{\"proxy\": []}", "'proxy'"},
        {"{\"proxy\": {\"upstreams\": \"x\"}}", "'proxy.upstreams'"},
        {"{\"proxy\": {\"history\": \"all\"}}", "'proxy.history'"},
        {"{\"proxy\": {\"workers\": \"4\"}}", "'proxy.workers'"},
        {"{\"proxy\": {\"upstream_timeout\": 0}}", "'proxy.upstream_timeout'"},
        {"{\"proxy\": {\"upstream_max_duration\": 0}}",
         "'proxy.upstream_max_duration'"},
        {"{\"max_bytes\": 0}", "'max_bytes'"},
        {"{\"namespaces\": []}", "'namespaces'"},
        {"{\"namespaces\": {\"a b\": {}}}", "namespaces.a b"},
        {"{\"namespaces\": {\"\": {}}}", "namespaces."},
        {"{\"namespaces\": {\"n\": 1}}", "must be an object"},
        {"{\"namespaces\": {\"n\": {\"dim\": 5000}}}", "namespaces.n.dim"},
        {"{\"namespaces\": {\"n\": {\"storage\": \"f64\"}}}",
         "namespaces.n.storage"},
        {"{\"namespaces\": {\"n\": {\"threshold\": 1.5}}}",
         "namespaces.n.threshold"},
        {"{\"namespaces\": {\"n\": {\"margin\": -0.1}}}",
         "namespaces.n.margin"},
        {"{\"namespaces\": {\"n\": {\"ttl\": -1}}}", "namespaces.n.ttl"},
        {"{\"namespaces\": {\"n\": {\"ttl_mode\": \"lazy\"}}}",
         "namespaces.n.ttl_mode"},
        {"{\"namespaces\": {\"n\": {\"max_response_bytes\": 0}}}",
         "namespaces.n.max_response_bytes"},
        {"{\"namespaces\": {\"n\": {\"vote\": 1}}}", "namespaces.n.vote"},
        {"{\"cost_targets\": {\"users\": {}}}", "cost_targets.users"},
        {"{\"namespaces\": {\"n\": {\"backend\": \"bogus\"}}}",
         "namespaces.n.backend"},
        {"{\"namespaces\": {\"n\": {\"nprobe\": 70000}}}",
         "namespaces.n.nprobe"},
        {"{\"namespaces\": {\"n\": {\"train_min\": -1}}}",
         "namespaces.n.train_min"},
        {"{\"prices\": 3}", "'prices'"},
        {"{\"http\": \"\"}", "'http'"},
        /* Not an address the HTTP front takes: refused here, naming the
         * key, not after the nng listeners started. */
        {"{\"http\": \"nope\"}", "'http': must be HOST:PORT"},
        {"{\"http\": \"127.0.0.1\"}", "'http': must be HOST:PORT"},
        {"{\"http\": \"127.0.0.1:0\"}", "'http': must be HOST:PORT"},
        {"{\"http\": \"127.0.0.1:99999\"}", "'http': must be HOST:PORT"},
        {"{\"cost_targets\": {\"features\": {\"f\": -1}}}",
         "cost_targets.features.f"},
        {"{\"namespaces\": {\"n\": {\"embed_model\": 3}}}",
         "namespaces.n.embed_model"},
        {"{\"namespaces\": {\"n\": {\"treshold\": 0.9}}}",
         "namespaces.n.treshold': unknown key"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sc_config cfg;
        char msg[512];
        sc_err rc = load(cases[i].text, &cfg, msg, sizeof(msg));
        CHECK(rc == SC_EINVAL);
        if (strstr(msg, cases[i].says) == NULL) {
            CHECK_COUNT(test_failed);
            fprintf(stderr, "case %zu (%s): message '%s' lacks '%s'\n", i,
                    cases[i].text, msg, cases[i].says);
        } else {
            CHECK_COUNT(test_passed);
        }
        sc_config_fini(&cfg);
    }

    /* A file that is not there. */
    sc_config cfg;
    char msg[512];
    sc_config_init(&cfg);
    char path[512];
    snprintf(path, sizeof(path), "%s/missing.json", dir);
    CHECK_EQ_INT(sc_config_load(&cfg, path, msg, sizeof(msg)), SC_EIO);
    CHECK(strstr(msg, "missing.json") != NULL);
    /* No position where there is none: jansson's -1:-1 for a file it
     * could not open read as a line and column ("FILE:-1:-1"). Looked
     * for as ":-1": the temporary directory's random name can hold "-1"
     * ("config-1a2b3c"), and failed 6 runs of 150 so. */
    CHECK(strstr(msg, ":-1") == NULL);
    CHECK(strstr(msg, "No such file") != NULL);
    sc_config_fini(&cfg);

    /* The same under a path of over 300 bytes (two names of 150 that are
     * not there): the reason is still said (jansson's own text, cut at
     * 160 bytes, lost it past ~130). */
    sc_config_init(&cfg);
    char lpath[1024], lmsg[1024];
    snprintf(lpath, sizeof(lpath), "%s/%0150d/%0150d/missing.json", dir, 0, 0);
    CHECK_EQ_INT(sc_config_load(&cfg, lpath, lmsg, sizeof(lmsg)), SC_EIO);
    CHECK(strstr(lmsg, "missing.json") != NULL);
    CHECK(strstr(lmsg, "No such file") != NULL);
    sc_config_fini(&cfg);

    /* A keys_file that is not there: the same, under its key. */
    sc_config_init(&cfg);
    char kpath[512];
    snprintf(kpath, sizeof(kpath), "%s/kf.json", dir);
    FILE *kf = fopen(kpath, "w");
    CHECK(kf != NULL);
    if (kf != NULL) {
        fprintf(kf, "{\"keys_file\": \"%s/missing-keys.json\"}", dir);
        fclose(kf);
    }
    CHECK_EQ_INT(sc_config_load(&cfg, kpath, msg, sizeof(msg)), SC_EINVAL);
    CHECK(strstr(msg, "key 'keys_file'") != NULL);
    CHECK(strstr(msg, "missing-keys.json: ") != NULL);
    CHECK(strstr(msg, ":-1") == NULL);
    sc_config_fini(&cfg);
    unlink(kpath);

    /* More namespaces than a file may declare. */
    size_t cap = 64 + SC_CONFIG_MAX_NS * 16;
    char *big = malloc(cap);
    size_t n = (size_t)snprintf(big, cap, "{\"namespaces\": {");
    for (int i = 0; i <= SC_CONFIG_MAX_NS; i++) {
        n += (size_t)snprintf(big + n, cap - n, "%s\"n%d\": {}", i ? ", " : "",
                              i);
    }
    snprintf(big + n, cap - n, "}}");
    CHECK_EQ_INT(load(big, &cfg, msg, sizeof(msg)), SC_EINVAL);
    CHECK(strstr(msg, "at most") != NULL);
    sc_config_fini(&cfg);

    /* The cap is on all the files together (docs/CONFIG.md), and the
     * message says so: a second file of fewer than the cap, refused, is
     * not itself over it. */
    int half = SC_CONFIG_MAX_NS / 2 + 8;
    char paths[2][512];
    for (int f = 0; f < 2; f++) {
        n = (size_t)snprintf(big, cap, "{\"namespaces\": {");
        for (int i = 0; i < half; i++) {
            n += (size_t)snprintf(big + n, cap - n, "%s\"f%dn%d\": {}",
                                  i ? ", " : "", f, i);
        }
        snprintf(big + n, cap - n, "}}");
        snprintf(paths[f], sizeof(paths[f]), "%s",
                 write_file(f == 0 ? "half0.json" : "half1.json", big));
    }
    sc_config_init(&cfg);
    CHECK_EQ_INT(sc_config_load(&cfg, paths[0], msg, sizeof(msg)), SC_OK);
    CHECK_EQ_INT(sc_config_load(&cfg, paths[1], msg, sizeof(msg)), SC_EINVAL);
    CHECK(strstr(msg, "half1.json") != NULL);
    CHECK(strstr(msg, "together") != NULL);
    sc_config_fini(&cfg);
    free(big);
}

/* The HTTP time-outs' ranges, 100..3600000 ms, taken at both ends (their
 * refusals just past them are in test_bad); a file without them leaves 0,
 * the front's defaults (SC_HTTP_DEFAULT_READ_TIMEOUT_MS and
 * SC_HTTP_DEFAULT_WRITE_TIMEOUT_MS). Each key sets its own field and
 * leaves the other's alone. */
static void test_http_timeouts(void)
{
    static const struct {
        const char *text;
        unsigned read_ms, write_ms;
    } cases[] = {
        {"{}", 0, 0},
        {"{\"http_write_timeout\": 100}", 0, 100},
        {"{\"http_write_timeout\": 3600000}", 0, 3600000},
        {"{\"http_read_timeout\": 100}", 100, 0},
        {"{\"http_read_timeout\": 3600000}", 3600000, 0},
        {"{\"http_read_timeout\": 300, \"http_write_timeout\": 7000}", 300,
         7000},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sc_config cfg;
        char msg[512];
        sc_err rc = load(cases[i].text, &cfg, msg, sizeof(msg));
        CHECK_EQ_INT(rc, SC_OK);
        if (rc != SC_OK) {
            fprintf(stderr, "  %s: %s\n", cases[i].text, msg);
        }
        CHECK_EQ_INT(cfg.http_read_timeout_ms, cases[i].read_ms);
        CHECK_EQ_INT(cfg.http_write_timeout_ms, cases[i].write_ms);
        sc_config_fini(&cfg);
    }
}

/* The field n names in cfg, read at its size. */
static uint64_t num_field(const sc_config *cfg, const sc_config_num *n)
{
    const char *p = (const char *)cfg + n->offset;
    if (n->size == sizeof(uint32_t)) {
        uint32_t u;
        memcpy(&u, p, sizeof(u));
        return u;
    }
    uint64_t u;
    memcpy(&u, p, sizeof(u));
    return u;
}

/* sc_config_nums, the numeric settings' one table: each row's flag is its
 * key's name (--reply-timeout, reply_timeout), found by both lookups; its
 * field holds its max; the flag's text and the key's JSON integer land
 * in the same field at min and max, and min - 1 and max + 1 are refused
 * by both in the same words, the field left as it was. */
static void test_nums(void)
{
    CHECK(sc_config_nnums >= 14);
    CHECK(sc_config_num_by_flag("--listen") == NULL);
    CHECK(sc_config_num_by_key("listen") == NULL);
    CHECK(sc_config_num_by_flag("threads") == NULL);
    for (size_t i = 0; i < sc_config_nnums; i++) {
        const sc_config_num *n = &sc_config_nums[i];
        CHECK(sc_config_num_by_key(n->key) == n);
        if (n->flag != NULL) {
            char key[64];
            snprintf(key, sizeof(key), "%s", n->flag + 2);
            for (char *c = key; *c != '\0'; c++) {
                *c = *c == '-' ? '_' : *c;
            }
            CHECK(strncmp(n->flag, "--", 2) == 0 && strcmp(key, n->key) == 0);
            CHECK(sc_config_num_by_flag(n->flag) == n);
        }
        CHECK(n->size == sizeof(uint32_t) || n->size == sizeof(uint64_t));
        CHECK(n->min <= n->max && n->max <= (UINT64_MAX >> 1));
        CHECK(n->size == sizeof(uint64_t) || n->max <= UINT32_MAX);
        char range[80];
        sc_config_num_range(n, range, sizeof(range));
        uint64_t vals[4] = {n->min - 1, n->min, n->max, n->max + 1};
        for (int j = n->min == 0 ? 1 : 0; j < 4; j++) {
            bool ok = j == 1 || j == 2;
            char text[64], json[128], msg[512], fmsg[128];
            snprintf(text, sizeof(text), "%llu", (unsigned long long)vals[j]);
            snprintf(json, sizeof(json), "{\"%s\": %s}", n->key, text);
            sc_config a, b;
            sc_config_init(&a);
            uint64_t before = num_field(&a, n);
            sc_err frc =
                sc_config_num_parse(&a, sizeof(a), n, text, fmsg, sizeof(fmsg));
            sc_err krc = load(json, &b, msg, sizeof(msg));
            if (vals[j] > (UINT64_MAX >> 1)) {
                krc = ok ? SC_OK : SC_EINVAL; /* no JSON integer */
                snprintf(msg, sizeof(msg), "%s", fmsg);
            }
            CHECK_EQ_INT(frc, ok ? SC_OK : SC_EINVAL);
            CHECK_EQ_INT(krc, ok ? SC_OK : SC_EINVAL);
            if (ok) {
                CHECK_EQ_INT(num_field(&a, n), vals[j]);
                CHECK_EQ_INT(num_field(&b, n), vals[j]);
            } else {
                char want[128];
                snprintf(want, sizeof(want), "must be %s", range);
                CHECK(strcmp(fmsg, want) == 0);
                CHECK(strstr(msg, want) != NULL);
                CHECK_EQ_INT(num_field(&a, n), before);
            }
            sc_config_fini(&a);
            sc_config_fini(&b);
        }
        sc_config a;
        sc_config_init(&a);
        char fmsg[128];
        static const char *const junk[] = {
            "", "-1", " 1", "+1", "1.5", "1k", "18446744073709551616"};
        for (size_t j = 0; j < sizeof(junk) / sizeof(junk[0]); j++) {
            CHECK_EQ_INT(sc_config_num_parse(&a, sizeof(a), n, junk[j], fmsg,
                                             sizeof(fmsg)),
                         SC_EINVAL);
        }
        sc_config_fini(&a);
    }
    char range[80];
    sc_config_num_range(sc_config_num_by_key("recv_max"), range, sizeof(range));
    CHECK(strcmp(range, "1024..2^30 bytes") == 0);
    sc_config_num_range(sc_config_num_by_key("reply_queue_max"), range,
                        sizeof(range));
    CHECK(strcmp(range, "1 MiB..2^40 bytes") == 0);
    sc_config_num_range(sc_config_num_by_key("max_bytes"), range,
                        sizeof(range));
    CHECK(strcmp(range, "1..2^63-1 bytes") == 0);
    sc_config_num_range(sc_config_num_by_key("http_stop_grace"), range,
                        sizeof(range));
    CHECK(strcmp(range, "1..3600000 ms") == 0);
}

/* The two writers of the lines about the nng a build uses. */
enum nng_writer { WARN_UNPATCHED, LOG_NNG };

/* The lines sc_config_warn_unpatched, or sc_config_log_nng (for nng 1.5.2
 * with 14 patches), writes for cfg, in a string (malloc'd, the caller
 * frees it); *n gets the writer's return value. */
static char *lines_of(enum nng_writer w, const sc_config *cfg, bool patched,
                      unsigned *n)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL) {
        perror("open_memstream");
        exit(1);
    }
    *n = w == LOG_NNG ? sc_config_log_nng(cfg, patched, "1.5.2", 14, f)
                      : sc_config_warn_unpatched(cfg, patched, f);
    fclose(f);
    return buf;
}

/* The warning line sc_config_warn_unpatched writes for a setting: its
 * flag, key, effect and what the system's nng does instead, whole. */
#define UNPATCHED_LINE(flag_key, effect, instead)                              \
    "semcached: warning: " flag_key " " effect                                 \
    ": this build uses the system's nng, which " instead                       \
    " (build with SEMCACHE_NNG_PATCHED=ON)\n"

/* The settings a build on the system's nng cannot apply: set by a key (or
 * a flag, which fills the same field), each is named on a warning line of
 * its own on such a build, that line compared whole (its flag, key and
 * texts), and on none on the patched one; the defaults, and the settings
 * both builds apply, on none either way. http_max_conns has two lines:
 * without http it has no effect; with it, it still sets descriptors
 * aside (semcached.c's conn_caps). */
static void test_unpatched_warnings(void)
{
    static const struct {
        const char *text, *flag, *line;
    } cases[] = {
        {"{\"reply_queue_max\": 1048576}", "--reply-queue-max",
         UNPATCHED_LINE("--reply-queue-max (reply_queue_max)", "has no effect",
                        "keeps up to 64 replies a client, of any size")},
        {"{\"reply_queue_len\": 1024}", "--reply-queue-len",
         UNPATCHED_LINE("--reply-queue-len (reply_queue_len)", "has no effect",
                        "queues at most 64 replies a client and drops more")},
        {"{\"reply_total_max\": 1048576}", "--reply-total-max",
         UNPATCHED_LINE("--reply-total-max (reply_total_max)", "has no effect",
                        "sets no bound on the replies held for all clients "
                        "together")},
        {"{\"reply_timeout\": 30000}", "--reply-timeout",
         UNPATCHED_LINE("--reply-timeout (reply_timeout)", "has no effect",
                        "writes an nng reply with no time limit")},
        {"{\"http_max_conns\": 10}", "--http-max-conns",
         UNPATCHED_LINE("--http-max-conns (http_max_conns)", "has no effect",
                        "has no cap on HTTP connections")},
        {"{\"http_max_conns\": 10, \"http\": \"127.0.0.1:8080\"}",
         "--http-max-conns",
         UNPATCHED_LINE("--http-max-conns (http_max_conns)",
                        "caps no HTTP connection (it only sets descriptors "
                        "aside, out of the nng clients' cap)",
                        "has no cap on HTTP connections")},
        {"{\"http_stop_grace\": 2000}", "--http-stop-grace",
         UNPATCHED_LINE("--http-stop-grace (http_stop_grace)", "has no effect",
                        "stops at once, cutting the HTTP answers not yet "
                        "written")},
        {"{\"http_read_timeout\": 30000}", "--http-read-timeout",
         UNPATCHED_LINE("--http-read-timeout (http_read_timeout)",
                        "has no effect",
                        "waits for a request's head with no time limit")},
        {"{\"http_write_timeout\": 30000}", "--http-write-timeout",
         UNPATCHED_LINE("--http-write-timeout (http_write_timeout)",
                        "has no effect",
                        "writes an HTTP answer with no time limit")},
    };
    size_t ncases = sizeof(cases) / sizeof(cases[0]);
    char msg[512];
    unsigned n;
    char *out;
    for (size_t i = 0; i < ncases; i++) {
        sc_config cfg;
        sc_err rc = load(cases[i].text, &cfg, msg, sizeof(msg));
        CHECK_EQ_INT(rc, SC_OK);
        out = lines_of(WARN_UNPATCHED, &cfg, false, &n);
        CHECK_EQ_INT(n, 1);
        CHECK(strcmp(out, cases[i].line) == 0);
        if (n != 1 || strcmp(out, cases[i].line) != 0) {
            fprintf(stderr, "  %s:\n  got:  %s  want: %s", cases[i].text, out,
                    cases[i].line);
        }
        free(out);
        out = lines_of(WARN_UNPATCHED, &cfg, true, &n);
        CHECK_EQ_INT(n, 0);
        CHECK(out[0] == '\0');
        free(out);
        CHECK_EQ_INT(sc_config_warn_unpatched(&cfg, false, NULL), 1);
        sc_config_fini(&cfg);
    }

    /* All 8 together, the fields set directly as parse_args sets them
     * from flags: the 8 lines in order, the http_max_conns one as http
     * is given or not. */
    for (int http = 0; http < 2; http++) {
        sc_config cfg;
        sc_config_init(&cfg);
        cfg.reply_queue_max = 1u << 20;
        cfg.reply_queue_len = 64;
        cfg.reply_total_max = 1u << 20;
        cfg.reply_timeout_ms = 100;
        cfg.http_max_conns = 1;
        cfg.http_stop_grace_ms = 1;
        cfg.http_read_timeout_ms = 100;
        cfg.http_write_timeout_ms = 100;
        if (http) {
            CHECK_EQ_INT(sc_config_set_str(&cfg.http, "127.0.0.1:8080"), SC_OK);
        }
        char want[4096] = "";
        for (size_t i = 0; i < ncases; i++) {
            bool with_http = strstr(cases[i].text, "\"http\":") != NULL;
            if (with_http == (http != 0) ||
                strcmp(cases[i].flag, "--http-max-conns") != 0) {
                strcat(want, cases[i].line);
            }
        }
        out = lines_of(WARN_UNPATCHED, &cfg, false, &n);
        CHECK_EQ_INT(n, 8);
        CHECK(strcmp(out, want) == 0);
        if (strcmp(out, want) != 0) {
            fprintf(stderr, "  all 8, http %d:\n  got:\n%s  want:\n%s", http,
                    out, want);
        }
        free(out);
        out = lines_of(WARN_UNPATCHED, &cfg, true, &n);
        CHECK_EQ_INT(n, 0);
        CHECK(out[0] == '\0');
        free(out);
        sc_config_fini(&cfg);
    }

    /* The defaults, and settings both builds apply: no line. */
    const char *silent[] = {
        "{}",
        "{\"max_clients\": 10, \"recv_max\": 4096, \"threads\": 2, "
        "\"http\": \"127.0.0.1:8080\"}",
    };
    for (size_t i = 0; i < sizeof(silent) / sizeof(silent[0]); i++) {
        sc_config cfg;
        CHECK_EQ_INT(load(silent[i], &cfg, msg, sizeof(msg)), SC_OK);
        for (int patched = 0; patched < 2; patched++) {
            out = lines_of(WARN_UNPATCHED, &cfg, patched != 0, &n);
            CHECK_EQ_INT(n, 0);
            CHECK(out[0] == '\0');
            free(out);
        }
        sc_config_fini(&cfg);
    }
}

/* The start's line naming the nng: on the patched build that line alone,
 * whatever is set; on the system's, after it one warning, set or not,
 * naming the protections off there (the HTTP ones only with http), then
 * sc_config_warn_unpatched's line for each setting given. Compared
 * whole. */
static void test_log_nng(void)
{
#define OFF_HEAD                                                               \
    "semcached: warning: this build uses the system's nng, which applies "     \
    "none of these protections, their defaults included: "                     \
    "reply_queue_max (it keeps up to 64 replies a client, of any size), "      \
    "reply_queue_len (it queues at most 64 replies a client and drops "        \
    "more), reply_total_max (it sets no bound on the replies held for all clients "   \
    "together), reply_timeout (it writes an nng reply with no time limit)"
#define OFF_HTTP                                                               \
    ", http_max_conns (it has no cap on HTTP connections), http_stop_grace "   \
    "(it stops at once, cutting the HTTP answers not yet written), "           \
    "http_read_timeout (it waits for a request's head with no time limit), "   \
    "http_write_timeout (it writes an HTTP answer with no time limit)"
#define OFF_TAIL " (build with SEMCACHE_NNG_PATCHED=ON)\n"
    static const struct {
        const char *text;
        const char *system;
        unsigned n;
    } cases[] = {
        {"{}",
         "semcached: nng 1.5.2, the system's library (not patched)\n" OFF_HEAD
             OFF_TAIL,
         1},
        {"{\"http\": \"127.0.0.1:8080\"}",
         "semcached: nng 1.5.2, the system's library (not patched)\n" OFF_HEAD
             OFF_HTTP OFF_TAIL,
         1},
        {"{\"http\": \"127.0.0.1:8080\", \"http_write_timeout\": 5000}",
         "semcached: nng 1.5.2, the system's library (not patched)\n" OFF_HEAD
             OFF_HTTP OFF_TAIL UNPATCHED_LINE(
                 "--http-write-timeout (http_write_timeout)", "has no effect",
                 "writes an HTTP answer with no time limit"),
         2},
    };
#undef OFF_HEAD
#undef OFF_HTTP
#undef OFF_TAIL
    char msg[512];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sc_config cfg;
        CHECK_EQ_INT(load(cases[i].text, &cfg, msg, sizeof(msg)), SC_OK);
        unsigned n;
        char *out = lines_of(LOG_NNG, &cfg, true, &n);
        const char *want = "semcached: nng 1.5.2, patched (14 patches of "
                           "scripts/patches, linked static)\n";
        CHECK_EQ_INT(n, 0);
        CHECK(strcmp(out, want) == 0);
        if (strcmp(out, want) != 0) {
            fprintf(stderr, "  %s, patched:\n  got:  %s  want: %s",
                    cases[i].text, out, want);
        }
        free(out);
        out = lines_of(LOG_NNG, &cfg, false, &n);
        CHECK_EQ_INT(n, cases[i].n);
        CHECK(strcmp(out, cases[i].system) == 0);
        if (strcmp(out, cases[i].system) != 0) {
            fprintf(stderr, "  %s, system:\n  got:\n%s  want:\n%s",
                    cases[i].text, out, cases[i].system);
        }
        free(out);
        sc_config_fini(&cfg);
    }
}

/* The proxy's numeric keys of the "proxy" object, as docs/PROXY.md names
 * them, and their flags and fields: proxy.c's table (sc_proxy_num_at) is
 * their one source, which sc_config_load reads. Each key is found by
 * sc_proxy_num_by_key with its flag and field, is taken from a file as
 * its flag (its max lands in its field), and its max + 1 is refused with
 * the key named; every row of the table is one of them. A key renamed in
 * the table fails here. */
static void test_proxy_nums(void)
{
    static const struct {
        const char *key, *flag;
        size_t offset, size;
    } want[] = {
#define ROW(k, f, field)                                                       \
    {k, f, offsetof(sc_proxy_config, field),                                   \
     sizeof(((sc_proxy_config *)0)->field)}
        ROW("upstream_timeout", "--upstream-timeout", timeout_ms),
        ROW("upstream_max_duration", "--upstream-max-duration",
            max_duration_ms),
        ROW("client_timeout", "--proxy-client-timeout", client_timeout_ms),
        ROW("workers", "--proxy-workers", workers),
#undef ROW
    };
    enum { NWANT = sizeof(want) / sizeof(want[0]) };
    CHECK_EQ_INT(SC_PROXY_NNUMS, NWANT);
    CHECK(sc_proxy_num_at(SC_PROXY_NNUMS) == NULL);
    CHECK(sc_proxy_num_by_key("upstream") == NULL);
    for (size_t i = 0; i < SC_PROXY_NNUMS; i++) {
        const sc_config_num *n = sc_proxy_num_at(i);
        CHECK(n != NULL);
        if (n == NULL) {
            continue;
        }
        bool known = false;
        for (size_t j = 0; j < NWANT; j++) {
            known = known || strcmp(n->key, want[j].key) == 0;
        }
        CHECK(known);
        CHECK(sc_proxy_num_by_key(n->key) == n);
    }
    for (size_t j = 0; j < NWANT; j++) {
        const sc_config_num *n = sc_proxy_num_by_key(want[j].key);
        CHECK(n != NULL);
        if (n == NULL) {
            fprintf(stderr, "proxy key %s: not in proxy.c's table\n",
                    want[j].key);
            continue;
        }
        CHECK(strcmp(n->flag, want[j].flag) == 0);
        CHECK_EQ_INT(n->offset, want[j].offset);
        CHECK_EQ_INT(n->size, want[j].size);
        char json[160], msg[512], val[32];
        snprintf(val, sizeof(val), "%llu", (unsigned long long)n->max);
        snprintf(json, sizeof(json), "{\"proxy\": {\"%s\": %s}}", want[j].key,
                 val);
        sc_config cfg;
        CHECK_EQ_INT(load(json, &cfg, msg, sizeof(msg)), SC_OK);
        sc_proxy_config pc;
        if (proxy_of(&cfg, 2, &pc)) {
            CHECK(strcmp(cfg.proxy_args[0], want[j].flag) == 0);
            CHECK(strcmp(cfg.proxy_args[1], val) == 0);
            const char *p = (const char *)&pc + want[j].offset;
            uint64_t got = 0;
            if (want[j].size == sizeof(uint32_t)) {
                uint32_t u;
                memcpy(&u, p, sizeof(u));
                got = u;
            } else {
                memcpy(&got, p, sizeof(got));
            }
            CHECK_EQ_INT(got, n->max);
        }
        sc_config_fini(&cfg);
        snprintf(json, sizeof(json), "{\"proxy\": {\"%s\": %llu}}", want[j].key,
                 (unsigned long long)n->max + 1);
        char name[80];
        snprintf(name, sizeof(name), "'proxy.%s'", want[j].key);
        CHECK_EQ_INT(load(json, &cfg, msg, sizeof(msg)), SC_EINVAL);
        CHECK(strstr(msg, name) != NULL && strstr(msg, "must be") != NULL);
        sc_config_fini(&cfg);
    }
}

/* A row of one struct's table given another struct is refused, nothing
 * read or written there: each row of sc_config_nums with an
 * sc_proxy_config on the heap, just its size (a row past its end wrote
 * there before: ASan's heap-buffer-overflow), each of proxy.c's rows with
 * an sc_config, and a row with its own struct but a wrong size. A value
 * in the row's range, so that only the struct can refuse it. */
static void test_num_other_struct(void)
{
    char msg[128], v[32];
    for (size_t i = 0; i < sc_config_nnums; i++) {
        const sc_config_num *n = &sc_config_nums[i];
        sc_proxy_config *pc = malloc(sizeof(*pc));
        sc_proxy_config before;
        if (pc == NULL) {
            perror("malloc");
            exit(1);
        }
        sc_proxy_config_init(pc);
        memcpy(&before, pc, sizeof(before));
        snprintf(v, sizeof(v), "%llu", (unsigned long long)n->max);
        msg[0] = '\0';
        CHECK_EQ_INT(
            sc_config_num_parse(pc, sizeof(*pc), n, v, msg, sizeof(msg)),
            SC_EINVAL);
        CHECK(strcmp(msg, "is not a setting of this struct") == 0);
        CHECK(memcmp(pc, &before, sizeof(before)) == 0);
        free(pc);
    }
    for (size_t i = 0; i < SC_PROXY_NNUMS; i++) {
        const sc_config_num *n = sc_proxy_num_at(i);
        sc_config cfg, before;
        sc_config_init(&cfg);
        memcpy(&before, &cfg, sizeof(before));
        snprintf(v, sizeof(v), "%llu", (unsigned long long)n->max);
        msg[0] = '\0';
        CHECK_EQ_INT(
            sc_config_num_parse(&cfg, sizeof(cfg), n, v, msg, sizeof(msg)),
            SC_EINVAL);
        CHECK(strcmp(msg, "is not a setting of this struct") == 0);
        CHECK(memcmp(&cfg, &before, sizeof(before)) == 0);
        sc_config_fini(&cfg);
    }
    sc_config cfg;
    sc_config_init(&cfg);
    const sc_config_num *n = &sc_config_nums[0];
    snprintf(v, sizeof(v), "%llu", (unsigned long long)n->max);
    CHECK_EQ_INT(
        sc_config_num_parse(&cfg, sizeof(cfg) - 1, n, v, msg, sizeof(msg)),
        SC_EINVAL);
    CHECK_EQ_INT(sc_config_num_parse(&cfg, sizeof(cfg), n, v, msg, sizeof(msg)),
                 SC_OK);
    sc_config_fini(&cfg);
}

/* The fields of sc_proxy_config the proxy's other flags set. */
enum proxy_field { F_UPSTREAM, F_NS, F_HISTORY, F_STORE, F_EMBED_MODEL };

/* Whether pc's field f holds what test_proxy_strs' good value for it
 * sets: the string itself, history "single", both store flags. */
static bool proxy_field_is(const sc_proxy_config *pc, enum proxy_field f,
                           const char *good)
{
    switch (f) {
    case F_UPSTREAM:
        return pc->upstream != NULL && strcmp(pc->upstream, good) == 0;
    case F_NS:
        return pc->ns != NULL && strcmp(pc->ns, good) == 0;
    case F_HISTORY:
        return pc->history == SC_PROXY_HISTORY_SINGLE;
    case F_STORE:
        return pc->store_tool_calls && pc->store_truncated;
    case F_EMBED_MODEL:
        return pc->embed_model != NULL && strcmp(pc->embed_model, good) == 0;
    }
    return false;
}

/* The proxy's other keys of the "proxy" object, as docs/PROXY.md names
 * them, and their flags: proxy.c's second table (sc_proxy_str_at) is
 * their one source, which sc_config_load reads (sc_proxy_flag_by_key,
 * which gives the numeric keys' flags too). Each key is taken from a file
 * as its flag with its value, and a bad value is refused with the key
 * named, in the flag's own words, which begin with the flag itself; every
 * row of the table is one of them. The good value, which the defaults do
 * not hold, is then in its field of the sc_proxy_config the file's flags
 * are parsed into (and --proxy-store stop clears both store flags). A key
 * or flag renamed in the table, a parser naming another, or one that does
 * not set its field, fails here. */
static void test_proxy_strs(void)
{
    static const struct {
        const char *key, *flag, *good, *bad;
        enum proxy_field field;
    } want[] = {
        {"upstream", "--upstream", "http://127.0.0.1:9", "ftp://x", F_UPSTREAM},
        {"ns", "--proxy-ns", "chat2", "a b", F_NS},
        {"history", "--proxy-history", "single", "all", F_HISTORY},
        {"store", "--proxy-store", "stop,tool_calls,length", "stop,errors",
         F_STORE},
        {"embed_model", "--proxy-embed-model", "text-embedding-3-small", "",
         F_EMBED_MODEL},
    };
    enum { NWANT = sizeof(want) / sizeof(want[0]) };
    CHECK_EQ_INT(SC_PROXY_NSTRS, NWANT);
    const char *flag = "unset";
    CHECK(sc_proxy_str_at(SC_PROXY_NSTRS, &flag) == NULL);
    CHECK(strcmp(flag, "unset") == 0);
    CHECK(sc_proxy_flag_by_key("proxy-ns") == NULL);
    CHECK(sc_proxy_flag_by_key("--proxy-ns") == NULL);
    for (size_t i = 0; i < SC_PROXY_NSTRS; i++) {
        const char *key = sc_proxy_str_at(i, &flag);
        CHECK(key != NULL);
        if (key == NULL) {
            continue;
        }
        bool known = false;
        for (size_t j = 0; j < NWANT; j++) {
            known = known || (strcmp(key, want[j].key) == 0 &&
                              strcmp(flag, want[j].flag) == 0);
        }
        CHECK(known);
        CHECK(sc_proxy_flag_by_key(key) == flag);
        CHECK(sc_proxy_num_by_key(key) == NULL);
    }
    for (size_t i = 0; i < SC_PROXY_NNUMS; i++) {
        const sc_config_num *n = sc_proxy_num_at(i);
        CHECK(n != NULL && sc_proxy_flag_by_key(n->key) == n->flag);
    }
    for (size_t j = 0; j < NWANT; j++) {
        const char *got = sc_proxy_flag_by_key(want[j].key);
        CHECK(got != NULL && strcmp(got, want[j].flag) == 0);
        char json[160], msg[512];
        snprintf(json, sizeof(json), "{\"proxy\": {\"%s\": \"%s\"}}",
                 want[j].key, want[j].good);
        sc_config cfg;
        CHECK_EQ_INT(load(json, &cfg, msg, sizeof(msg)), SC_OK);
        sc_proxy_config pc;
        sc_proxy_config_init(&pc);
        CHECK(!proxy_field_is(&pc, want[j].field, want[j].good));
        if (proxy_of(&cfg, 2, &pc)) {
            CHECK(strcmp(cfg.proxy_args[0], want[j].flag) == 0);
            CHECK(strcmp(cfg.proxy_args[1], want[j].good) == 0);
            bool set = proxy_field_is(&pc, want[j].field, want[j].good);
            CHECK(set);
            if (!set) {
                fprintf(stderr, "  %s %s: its field not set\n", want[j].flag,
                        want[j].good);
            }
        }
        if (want[j].field == F_STORE) {
            CHECK_EQ_INT(sc_proxy_parse_flag(&pc, want[j].flag, "stop", msg,
                                             sizeof(msg)),
                         1);
            CHECK(!pc.store_tool_calls && !pc.store_truncated);
        }
        sc_config_fini(&cfg);
        snprintf(json, sizeof(json), "{\"proxy\": {\"%s\": \"%s\"}}",
                 want[j].key, want[j].bad);
        CHECK_EQ_INT(load(json, &cfg, msg, sizeof(msg)), SC_EINVAL);
        char why[256], name[80];
        why[0] = '\0';
        sc_proxy_config_init(&pc);
        CHECK_EQ_INT(sc_proxy_parse_flag(&pc, want[j].flag, want[j].bad, why,
                                         sizeof(why)),
                     -1);
        /* The flag's refusal names its own flag first (not the key, nor
         * another flag: a parser given the row's key wrote "ns must be"
         * into both, which a comparison of the two alone let through),
         * and the file's ends in "key 'proxy.KEY': " and that refusal. */
        size_t fl = strlen(want[j].flag);
        bool flag_first = strncmp(why, want[j].flag, fl) == 0 && why[fl] == ' ';
        snprintf(name, sizeof(name), "key 'proxy.%s': ", want[j].key);
        size_t ml = strlen(msg), nl = strlen(name), wl = strlen(why);
        bool file_ends = ml >= nl + wl &&
                         strncmp(msg + ml - wl - nl, name, nl) == 0 &&
                         strcmp(msg + ml - wl, why) == 0;
        CHECK(flag_first);
        CHECK(file_ends);
        if (!flag_first || !file_ends) {
            fprintf(stderr, "  %s: %s / %s\n", want[j].key, msg, why);
        }
        sc_config_fini(&cfg);
    }
}

int main(void)
{
    sc_test_tmp_path("config", dir, sizeof(dir), "config-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_good();
    test_bad();
    test_http_timeouts();
    test_nums();
    test_proxy_nums();
    test_proxy_strs();
    test_num_other_struct();
    test_unpatched_warnings();
    test_log_nng();
    /* No shell: TMPDIR may hold any name (a quote in it made "rm -rf"
     * remove a directory beside it). */
    if (sc_test_tmp_remove(dir) != 0) {
        fprintf(stderr, "could not remove %s\n", dir);
    }
    return test_summary("config");
}
