/* fuzz_dispatch.c - libFuzzer target over the request decoder: every input
 * is one request (and, split at 0xff 0x00 markers, a batch of requests) for
 * sc_dispatch_handle / sc_dispatch_handle_many over a real in-process cache
 * with small caps, a fake embedder (so text paths run) and a cost ledger.
 * Every reply must be one well-formed msgpack map holding "ok", and the
 * cache's counters must stay consistent; otherwise abort(). */
#define FZ_NAME "fuzz_dispatch"
#include "fz_dispatch.h"
#include "proto/mp.h"

/* A reply: exactly one map, nothing after it, with a bool "ok" key; an
 * error reply's "error" holds str "code" and "message". */
static void check_reply(const uint8_t *b, size_t n)
{
    mp_reader r;
    mp_reader_init(&r, b, n);
    uint32_t entries;
    if (mp_read_map(&r, &entries) != 0) {
        die("reply is not a map");
    }
    int has_ok = 0;
    for (uint32_t i = 0; i < entries; i++) {
        const char *k;
        uint32_t kl;
        if (mp_read_str(&r, &k, &kl) != 0) {
            die("reply key is not a str");
        }
        if (kl == 2 && memcmp(k, "ok", 2) == 0) {
            bool ok;
            if (mp_read_bool(&r, &ok) != 0) {
                die("reply ok is not a bool");
            }
            has_ok = 1;
        } else if (kl == 5 && memcmp(k, "error", 5) == 0) {
            uint32_t m;
            if (mp_read_map(&r, &m) != 0) {
                die("reply error is not a map");
            }
            for (uint32_t j = 0; j < m; j++) {
                const char *s;
                uint32_t sl;
                if (mp_read_str(&r, &s, &sl) != 0 ||
                    mp_read_str(&r, &s, &sl) != 0) {
                    die("reply error entry is not str: str");
                }
            }
        } else if (mp_skip(&r) != 0) {
            die("reply value is malformed");
        }
    }
    if (!has_ok) {
        die("reply has no ok");
    }
    if (r.p != r.end) {
        die("bytes after the reply map");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_tick();
    uint8_t *reply = NULL;
    size_t rlen = 0;
    if (sc_dispatch_handle(disp, data, size, &reply, &rlen) != 0) {
        die("handle failed");
    }
    check_reply(reply, rlen);
    free(reply);

    /* The same bytes as a batch: split at each 0xff 0x00 pair (0xff alone
     * is a valid negative fixint, the pair rarely ends a real message). */
    sc_server_msg msgs[SC_SERVER_MAX_BATCH];
    size_t n = 0, start = 0;
    for (size_t i = 0; i + 1 < size && n + 1 < SC_SERVER_MAX_BATCH; i++) {
        if (data[i] == 0xff && data[i + 1] == 0x00) {
            msgs[n++] =
                (sc_server_msg){data + start, i - start, NULL, 0, 0, NULL};
            start = i + 2;
            i++;
        }
    }
    if (n > 0) {
        msgs[n++] =
            (sc_server_msg){data + start, size - start, NULL, 0, 0, NULL};
        sc_dispatch_handle_many(disp, msgs, n);
        for (size_t i = 0; i < n; i++) {
            if (msgs[i].rc != 0) {
                die("handle_many failed");
            }
            check_reply(msgs[i].reply, msgs[i].reply_len);
            free(msgs[i].reply);
            if (msgs[i].undo != NULL) {
                msgs[i].undo->done(msgs[i].undo, true);
            }
        }
    }
    check_cache();
    return 0;
}
