/* persist.h - the cache's durable state in a data directory: an append-only
 * log of every change (namespaces, inserts, removals, quarantines, flushes,
 * and the cost ledger's sums), and snapshots the log is compacted into in
 * the background. docs/PERSISTENCE.md describes the files and the
 * guarantees of each fsync policy.
 *
 * Files in the directory: LOCK (held while a server uses it), log.<G> and
 * snap.<G> for generations G, and snap.<G>.ivf.<K>: the trainings of the
 * snapshot's IVF indexes (sc_index_save_training), so a restart need not
 * train them again. snap.G holds the state as it was when log.G
 * was begun (taken while writes went on: replaying log.G over it gives the
 * state), so the state is the newest snapshot, then every log of its
 * generation and later, in order. Every record carries a checksum bound
 * to its file (by a random nonce in the file's header), so that the
 * records of another file never verify in it. */
#ifndef SC_PERSIST_H
#define SC_PERSIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/cache.h"
#include "cache/ledger.h"
#include "common/sc_error.h"

/* When a change acknowledged to a client reaches the disk. In every policy
 * the record is written to the log (the kernel's page cache) before the
 * change is acknowledged, so a crash of semcached itself (kill -9) loses
 * nothing; the policies differ on a crash of the machine. */
typedef enum sc_fsync {
    SC_FSYNC_ALWAYS = 0,   /* fsync before acknowledging (group commit) */
    SC_FSYNC_EVERYSEC = 1, /* fsync once a second (the default) */
    SC_FSYNC_NO = 2        /* never fsync; the kernel writes back */
} sc_fsync;

/* "always", "everysec", "no" -> *out; false for anything else. */
bool sc_persist_fsync_parse(const char *s, sc_fsync *out);
const char *sc_persist_fsync_name(sc_fsync f);

#define SC_PERSIST_COMPACT_MIN_DEFAULT (64ull << 20)

typedef struct sc_persist_config {
    const char *dir; /* made (one level) when missing; borrowed for open */
    sc_fsync fsync;
    /* Start even when a record in the middle of a log, or a snapshot, is
     * corrupt: skip to the next valid record and say what was dropped. */
    bool repair;
    /* Compact when the log is larger than this (0 = 64 MiB) and larger
     * than compact_growth_pct percent of the last snapshot (0 = 100). */
    uint64_t compact_min_bytes;
    unsigned compact_growth_pct;
    /* One line per event (loaded, truncated, compacted, failed); NULL =
     * stderr with a "semcached: " prefix. Called from any thread. */
    void (*log)(void *arg, const char *line);
    void *log_arg;
} sc_persist_config;

typedef struct sc_persist sc_persist;

/* Opens (making it when missing) the directory and locks it against a
 * second server. Nothing is read yet. On failure *out is untouched and a
 * reason is in msg. Errors: SC_EINVAL, SC_EIO (cannot make, open or lock
 * it: the reason says which), SC_ENOMEM. */
/* fsyncs the directory that holds path (after making path: a new
 * directory's name is durable only then). SC_EIO, SC_ERANGE. */
sc_err sc_persist_sync_parent(const char *path);

sc_err sc_persist_open(const sc_persist_config *cfg, sc_persist **out,
                       char *msg, size_t cap);

/* The journal to put in sc_cache_config.journal before opening the cache
 * sc_persist_load is given. Valid until sc_persist_close. */
const sc_cache_journal *sc_persist_journal(sc_persist *p);

/* What loading found. */
typedef struct sc_persist_load_stats {
    uint64_t generation;       /* of the log appended to from now on */
    bool snapshot;             /* a snapshot was loaded */
    uint64_t logs;             /* log files replayed */
    uint64_t records;          /* valid records read, snapshot included */
    uint64_t entries_restored; /* entries put back */
    uint64_t entries_expired;  /* entries that expired while down */
    uint64_t superseded;       /* valid records a later state overrode */
    uint64_t torn_bytes;       /* dropped from the last log's torn tail */
    uint64_t corrupt_records;  /* bad records skipped (only with repair) */
    uint64_t corrupt_bytes;    /* the bytes they held */
    uint64_t old_format_dropped; /* of those, records whose check held that
                                    --repair found after a bad record of a
                                    file of version 1 or 2 (plain XXH32:
                                    maybe a client's bytes): not applied */
    uint64_t ids_skipped;      /* ids passed over: a snapshot's next id lost
                                  with its end record (only with repair) */
    bool ids_end_refused;      /* that end record was read and refused
                                  (else it was missing) */
    bool ids_range_end;        /* the skip would have passed the end of the
                                  id range (SC_CACHE_ID_LIMIT): the next id
                                  is the end, or above it for ids read past
                                  it, and no insert takes */
    uint64_t trainings;        /* IVF trainings taken from the snapshot */
    uint64_t trainings_failed; /* ones that could not be (retrained then) */
} sc_persist_load_stats;

/* Loads the newest snapshot and replays the logs into c and l (l may be
 * NULL), which must be empty and served by nobody yet, then appends to the
 * last log from here on, and starts the background thread (fsync once a
 * second in everysec, the ledger's sums once a second, compaction). A torn
 * last record of the last log (a crash while writing it: nothing valid
 * follows) is cut off and its size said; so is a last log shorter than a
 * whole header (a crash while its header was written: whatever its bytes,
 * no record fits in it), or all zeros whatever its length (extended by a
 * crash where no byte landed), which is begun again. A corrupt record anywhere
 * else, a bad snapshot, or a missing log is refused (SC_ECHECKSUM,
 * SC_EBADFILE, SC_EBADVERSION) with where it is in msg, unless
 * cfg.repair; so is a namespace of an index backend this build lacks
 * (SC_ENOTSUP: a build with FAISS wrote it), which repair drops with its
 * entries. Errors also: SC_EIO, SC_ENOMEM. st may be NULL. Call once. */
sc_err sc_persist_load(sc_persist *p, sc_cache *c, sc_ledger *l,
                       sc_persist_load_stats *st, char *msg, size_t cap);

/* Writes a snapshot now and starts a new log (what the background thread
 * does when the log has grown). Lookups and writes go on meanwhile; one
 * compaction runs at a time (a second call waits for it). Errors: SC_EIO
 * (the old files are then kept), SC_ENOMEM, SC_EINVAL (not loaded),
 * SC_ECANCELED (sc_persist_cancel_compactions). A compaction that fails
 * keeps the old files and the log they go on in: the new log it began
 * is removed again when nothing has been written to it yet, so that
 * failing compactions (a full disk) do not leave a generation each. */
sc_err sc_persist_compact(sc_persist *p);

/* Cuts short the compaction running now, at its next chunk of about
 * 256 entries, and refuses any later one (SC_ECANCELED): for a stop that
 * must not wait for its snapshot. The log keeps every change. Safe from
 * any thread; there is no undoing it. */
void sc_persist_cancel_compactions(sc_persist *p);

/* For tests: fn(arg, ns) is called, with nothing locked, while a snapshot
 * writes namespace ns: once its record and IVF trainings are written,
 * before its entries, and then between two chunks of its entries and after
 * the last (NULL: none). */
void sc_persist_set_snapshot_hook(void (*fn)(void *arg, const char *ns),
                                  void *arg);

/* For tests: fail(arg, more) is asked, from any thread, each time a record
 * is about to take `more` bytes of a buffer of the log's or a snapshot's;
 * true makes that one step fail as out of memory (NULL: none). */
void sc_persist_set_alloc_hook(bool (*fail)(void *arg, size_t more), void *arg);

/* For tests: fn(arg, kind) is called each time the journal has appended
 * a change of kind (an sc_cache_change_kind) to the log's buffer, after
 * it has, with the appender's cache locks held and none of the
 * persister's (NULL: none). */
void sc_persist_set_append_hook(void (*fn)(void *arg, int kind), void *arg);

/* For tests: fn(arg) is called in the thread of a namespace making
 * (sc_cache_ns_create of a name with a ledger row) right before it waits for
 * the lock the ledger's once-a-second save holds for the whole save, with none
 * of the persister's locks and none of the cache's held (NULL: none). */
void sc_persist_set_making_hook(void (*fn)(void *arg), void *arg);

/* Writes out and fsyncs every record appended so far, whatever the policy
 * (also done by sc_persist_close). Errors: SC_EIO. */
sc_err sc_persist_sync(sc_persist *p);

typedef struct sc_persist_stats {
    sc_fsync fsync;
    uint64_t generation;
    uint64_t appended; /* records appended since start */
    uint64_t written;  /* of them, written to the log file */
    uint64_t synced;   /* of them, fsynced */
    uint64_t log_bytes;      /* size of the current log */
    uint64_t snapshot_bytes; /* size of the newest snapshot, 0 = none */
    uint64_t compactions;    /* finished since start */
    uint64_t fsyncs;
    bool failed; /* a write or fsync failed: changes are refused (SC_EIO) */
} sc_persist_stats;

void sc_persist_get_stats(sc_persist *p, sc_persist_stats *out);

/* Stops the background thread, records the ledger's last sums, fsyncs and
 * closes the log, unlocks the directory, frees p. Call before closing the
 * cache and ledger given to sc_persist_load, after the last request. */
void sc_persist_close(sc_persist *p);

/* ---- the loader on its own (tests, fuzzing) ----------------------------*/

typedef enum sc_persist_file {
    SC_PERSIST_LOG = 0,
    SC_PERSIST_SNAPSHOT = 1
} sc_persist_file;

/* Replays one file's bytes data[0..len) (header included) into c and l (l
 * may be NULL), as sc_persist_load does each file. last: a log whose torn
 * tail may be cut (*valid_len then says where the valid part ends).
 * snap_path: a snapshot's own path, whose IVF trainings are the files
 * snap_path.ivf.K beside it (NULL: their records are checked, not used).
 * Adds to *st. Errors as sc_persist_load's, with where in msg. */
sc_err sc_persist_replay(sc_cache *c, sc_ledger *l, sc_persist_file kind,
                         const uint8_t *data, size_t len, bool last,
                         bool repair, uint64_t now_ms, const char *snap_path,
                         sc_persist_load_stats *st, size_t *valid_len,
                         char *msg, size_t cap);

#endif
