/* config.h - semcached's configuration: the defaults, a JSON file
 * (--config FILE) on top of them, and command-line flags on top of that.
 * The file is hostile input like any other: unknown keys, wrong types and
 * out-of-range values are refused with a message naming the key. */
#ifndef SC_CONFIG_H
#define SC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cache/cache.h"
#include "cache/persist.h"
#include "common/sc_error.h"
#include "proto/dispatch.h"
#include "proto/server.h"

#define SC_CONFIG_DEFAULT_DATA_DIR "/var/lib/semcached"
#define SC_CONFIG_EMBED_FILE       "embeddings.sctab" /* = SC_EMBED_DEFAULT_FILE */
#define SC_CONFIG_STATE_DIR        "state" /* under data_dir */
#define SC_CONFIG_PROXY_KEYS       9       /* keys of the "proxy" object */
#define SC_CONFIG_MAX_NS           256 /* namespaces the files may declare */
#define SC_CONFIG_PATH_MAX         4096
#define SC_CONFIG_MAX_KEYS         1024 /* access keys */
#define SC_CONFIG_MAX_GRANTS       256  /* namespace patterns per key */

/* A namespace the configuration creates at start-up. */
typedef struct sc_config_ns {
    char name[SC_CACHE_NS_NAME_MAX + 1];
    sc_ns_config cfg;
} sc_config_ns;

typedef struct sc_config {
    /* Listener URLs and TLS certificate: strings owned by the config. */
    char *listen[SC_SERVER_MAX_LISTEN];
    unsigned nlisten;
    unsigned threads;  /* 0 = the server's default */
    unsigned max_clients; /* 0 = SC_SERVER_DEFAULT_MAX_CLIENTS */
    size_t recv_max;   /* 0 = the server's default */
    size_t reply_queue_max; /* 0 = SC_SERVER_DEFAULT_REPLY_QUEUE_MAX */
    unsigned reply_queue_len; /* 0 = SC_SERVER_DEFAULT_REPLY_QUEUE_LEN */
    size_t reply_total_max; /* 0 = SC_SERVER_DEFAULT_REPLY_TOTAL_MAX */
    unsigned reply_timeout_ms; /* 0 = SC_SERVER_REPLY_TIMEOUT_MS */
    char *tls_cert;    /* NULL = none */
    char *http;        /* HTTP address HOST:PORT, NULL = none */
    unsigned http_max_conns; /* 0 = SC_HTTP_DEFAULT_MAX_CONNS */
    unsigned http_stop_grace_ms; /* 0 = SC_HTTP_STOP_GRACE_MS */
    unsigned http_read_timeout_ms;  /* 0 = SC_HTTP_DEFAULT_READ_TIMEOUT_MS */
    unsigned http_write_timeout_ms; /* 0 = SC_HTTP_DEFAULT_WRITE_TIMEOUT_MS */
    char *prices;      /* price table file, NULL = the one compiled in */
    char *data_dir;    /* never NULL after sc_config_init */
    char *embed_table; /* NULL = data_dir/SC_CONFIG_EMBED_FILE */
    /* Persistence (docs/PERSISTENCE.md): on by default, in
     * data_dir/SC_CONFIG_STATE_DIR. */
    bool persist;
    sc_fsync fsync;         /* default everysec */
    bool fsync_given;       /* set by --fsync or "fsync" */
    bool repair;            /* flag only: --repair */
    bool snapshot_at_stop;  /* default true: a snapshot as it stops */
    uint64_t compact_bytes; /* 0 = SC_PERSIST_COMPACT_MIN_DEFAULT */
    /* The "proxy" object (docs/PROXY.md) as semcached's proxy flags and
     * their values, proxy_args[2i] the flag ("--upstream"), [2i + 1] the
     * value, checked by sc_proxy_parse_flag at load; owned. */
    char *proxy_args[2 * SC_CONFIG_PROXY_KEYS];
    unsigned nproxy_args; /* strings in proxy_args */
    sc_cache_config cache;
    sc_config_ns *ns; /* ns[0..nns), owned */
    size_t nns;
    sc_cost_target *targets; /* targets[0..ntargets), owned */
    size_t ntargets;
    /* Access keys, keys[0..nkeys), owned with their grants; the secrets
     * are wiped by sc_config_fini. None = every request is served. */
    sc_key *keys;
    size_t nkeys;
} sc_config;

/* A plain numeric setting: a flag and its configuration key that take
 * one whole number in [min, max] into one field of a struct. The table
 * sc_config_nums holds every one of sc_config, so that the flag parser
 * (semcached.c), the file's parser (sc_config_load), their messages and
 * --help share each range: a range written once cannot differ between
 * flag and key. The proxy's numeric flags (and their keys of the "proxy"
 * object, which sc_proxy_parse_flag parses as the flags) are rows of the
 * same type in proxy.c's table, into sc_proxy_config, checked by the same
 * sc_config_num_parse; sc_config_load takes those keys and their flags
 * from that table (proxy.h, sc_proxy_num_by_key), not a list of its own.
 * Settings parsed otherwise (addresses, paths, enums) are in neither. */
typedef struct sc_config_num {
    const char *flag; /* "--reply-timeout"; NULL: a key with no flag */
    const char *key;  /* "reply_timeout" */
    uint64_t min, max;
    const char *unit; /* "ms", "bytes" or "": said after the range */
    size_t offset;    /* of the field in its struct (sc_config here) */
    size_t size;      /* of that field: 4 or 8 bytes */
    size_t of;        /* sizeof that struct: sc_config_num_parse refuses a
                         struct of another size (sc_config's and
                         sc_proxy_config's differ: proxy.c asserts it) */
} sc_config_num;

/* A row of such a table: flag, key, min, max, unit and the field of
 * struct type (its offset and size, and the struct's size). */
#define SC_CONFIG_NUM(type, flag, key, lo, hi, unit, field)                    \
    {                                                                          \
        flag, key, lo, hi, unit, offsetof(type, field),                        \
            sizeof(((type *)0)->field), sizeof(type)                           \
    }

/* The table, sc_config_nums[0..sc_config_nnums); static, never NULL. */
extern const sc_config_num sc_config_nums[];
extern const size_t sc_config_nnums;

/* The entry of flag ("--threads") or of key ("threads"); NULL if none. */
const sc_config_num *sc_config_num_by_flag(const char *flag);
const sc_config_num *sc_config_num_by_key(const char *key);

/* Writes n's range as messages and --help say it, "1024..2^30 bytes",
 * "100..3600000 ms", "1 or more bytes" (max 2^63 - 1), into out (cap
 * bytes, truncated to fit). */
void sc_config_num_range(const sc_config_num *n, char *out, size_t cap);

/* Sets n's field of the struct at base, size bytes (sizeof an sc_config
 * for a row of sc_config_nums, of an sc_proxy_config for one of proxy.c's
 * table), from a flag's value: decimal digits only (no sign, space,
 * fraction or suffix), in n's range. Returns SC_OK, or SC_EINVAL with
 * "must be RANGE" (sc_config_num_range) in msg (cap bytes) and the struct
 * unchanged. A row of another struct's table (n->of is not size) is
 * refused the same way, with "is not a setting of this struct" in msg,
 * before anything is read or written at base: a daemon row given an
 * sc_proxy_config would write past it. sc_config_load reads a key's JSON
 * integer into the same field through the same range check and message. */
sc_err sc_config_num_parse(void *base, size_t size, const sc_config_num *n,
                           const char *value, char *msg, size_t cap);

/* Fills cfg with the defaults. Errors: SC_ENOMEM. */
sc_err sc_config_init(sc_config *cfg);

/* Frees what cfg owns, wiping the keys' secrets first; cfg may then be
 * init'ed again. */
void sc_config_fini(sc_config *cfg);

/* Reads the JSON file at path on top of cfg. Keys (all optional):
 *   the numeric settings of sc_config_nums, each a JSON integer in its
 *                 range (threads, max_clients, recv_max, reply_queue_max,
 *                 reply_queue_len, reply_total_max, reply_timeout,
 * http_max_conns, http_stop_grace, http_read_timeout, http_write_timeout,
 *                 compact_bytes, max_namespaces, max_bytes, max_entries:
 *                 docs/CONFIG.md says what each does)
 *   listen        string or array of strings (replaces the listeners)
 *   tls_cert      path
 *   http          HOST:PORT of the HTTP front (docs/HTTP.md)
 *   prices        path of a price table (data/prices.json shows the form)
 *   data_dir      path
 *   embed_table   path
 *   persist       bool (default true): keep the cache in data_dir/state
 *   fsync         "always", "everysec" (default) or "no"
 *   proxy         {upstream, upstream_timeout (ms),
 *                  upstream_max_duration (ms), ns, workers, history,
 *                  store, embed_model}: the OpenAI proxy's flags
 *   cost_targets  {"namespaces": {NAME: dollars}, "features": {TAG:
 *                  dollars}}: the most a request should cost
 *   namespaces    {"NAME": {dim, storage, threshold, margin, ttl (seconds),
 *                  ttl_mode, max_entries, max_bytes, max_response_bytes}}
 *   keys          [{key: SECRET (16..256 bytes), name: LABEL, read: [NS or
 *                  PREFIX*], write: [...], admin: bool}] (docs/CONFIG.md)
 *   keys_file     path of a JSON file holding such an array (added to keys)
 * On error returns SC_EINVAL (or SC_EIO when the file cannot be read) and
 * writes a one-line reason naming the file, line and key into msg (cap
 * bytes); cfg may then hold part of the file and should be fini'ed. No
 * message ever holds a key's secret. */
sc_err sc_config_load(sc_config *cfg, const char *path, char *msg, size_t cap);

/* The settings a build on the system's nng (SEMCACHE_NNG_PATCHED=OFF, no
 * SC_NNG_PATCHED) cannot apply: reply_queue_max, reply_queue_len,
 * reply_total_max, reply_timeout, http_max_conns, http_stop_grace,
 * http_read_timeout and http_write_timeout. When nng_patched is false, writes
 * into f one warning line for each of them that cfg sets (non-zero: a flag or
 * key gave it; the defaults are 0), naming its flag and key and what that nng
 * does instead (http_max_conns "has no effect" without cfg->http; with
 * it, it still sets descriptors aside, out of the nng clients' cap, and
 * its line says so). Returns the number of lines: 0 when nng_patched or when
 * cfg sets none. f may be NULL: the lines are then only counted. The
 * caller decides what to do with them: semcached warns and starts (a
 * file shared with patched builds still serves; the defaults of these
 * settings are not applied there either). */
unsigned sc_config_warn_unpatched(const sc_config *cfg, bool nng_patched,
                                  FILE *f);

/* Writes into f (not NULL) which nng this build runs on, one line:
 * "semcached: nng VERSION, patched (N patches of scripts/patches, linked
 * static)" or "semcached: nng VERSION, the system's library (not
 * patched)", version as nng_version() gives it, npatches the patches
 * built in (SC_NNG_NPATCHES; unused when not nng_patched). On the
 * system's nng, then one warning line, whatever cfg sets, naming the
 * settings of sc_config_warn_unpatched whose protections are off there,
 * defaults included, each with what that nng does instead (the four HTTP
 * ones only when cfg->http is set: without an HTTP front they protect
 * nothing), and after it sc_config_warn_unpatched's lines for those cfg
 * sets. Returns the number of warning lines written: 0 when nng_patched,
 * else 1 plus sc_config_warn_unpatched's count. */
unsigned sc_config_log_nng(const sc_config *cfg, bool nng_patched,
                           const char *version, unsigned npatches, FILE *f);

/* Replaces *slot (a string owned by cfg) with a copy of value. */
sc_err sc_config_set_str(char **slot, const char *value);

/* The embedder table's path: embed_table, or data_dir/SC_CONFIG_EMBED_FILE,
 * written into out (cap bytes). Returns SC_ETOOBIG when it does not fit. */
sc_err sc_config_embed_path(const sc_config *cfg, char *out, size_t cap);

/* The state directory: data_dir/SC_CONFIG_STATE_DIR, into out. Returns
 * SC_ETOOBIG when it does not fit. */
sc_err sc_config_state_path(const sc_config *cfg, char *out, size_t cap);

#endif
