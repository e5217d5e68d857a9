/* fuzz_http.c - libFuzzer target over the HTTP front's JSON path
 * (sc_http_exec, what POST /v1/<op> runs): the JSON body parsed, translated
 * into a msgpack request, run by the dispatcher of fz_dispatch.h, and its
 * reply translated back. An input is one request: its first byte picks the
 * op from the URL's (or one no route has), its second the Authorization
 * header, the rest is the body. The reply must be one JSON object and a
 * newline, with a bool "ok"; the status 200 exactly when ok is true, else
 * the status of its error code (docs/HTTP.md), which holds a "code" and a
 * "message" string; no reply of ours may fail to translate; and the
 * cache's counters must stay consistent. Otherwise abort(). */
#define FZ_NAME "fuzz_http"
#include "fz_dispatch.h"

#include <jansson.h>

#include "proto/http.h"

static const char *const auths[] = {NULL, "Bearer k1", "bearer   ",
                                    "Basic a2V5"};

static void check_http(int status, const char *out, size_t len)
{
    if (out == NULL) {
        if (status != 500) {
            die("no reply, yet not a 500");
        }
        return; /* out of memory */
    }
    if (len == 0 || out[len - 1] != '\n') {
        die("reply does not end with a newline");
    }
    json_error_t jerr;
    /* A stored NUL comes back as \u0000 (docs/HTTP.md): allowed. */
    json_t *j = json_loadb(out, len - 1, JSON_ALLOW_NUL, &jerr);
    if (j == NULL || !json_is_object(j)) {
        die("reply is not one JSON object");
    }
    json_t *ok = json_object_get(j, "ok");
    if (!json_is_boolean(ok)) {
        die("reply has no bool ok");
    }
    if (json_is_true(ok)) {
        if (status != 200) {
            die("ok with a status other than 200");
        }
    } else {
        json_t *err = json_object_get(j, "error");
        const char *code = json_string_value(json_object_get(err, "code"));
        const char *msg = json_string_value(json_object_get(err, "message"));
        if (code == NULL || msg == NULL) {
            die("error reply without code and message strings");
        }
        if (status != sc_http_status_of(code)) {
            die("the status is not its error code's");
        }
        if (strcmp(msg, "cannot translate the reply") == 0) {
            die("a reply of the dispatcher did not translate");
        }
    }
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_tick();
    if (size < 2) {
        return 0;
    }
    /* POST /v1/<op>'s ops, and past them one no route has. */
    size_t k = data[0] % (sc_http_nops + 1);
    const char *op = k < sc_http_nops ? sc_http_ops[k] : "no_such_op";
    const char *auth = auths[data[1] % (sizeof(auths) / sizeof(auths[0]))];
    char *out = NULL;
    size_t len = 0;
    int status = sc_http_exec(disp, op, (const char *)data + 2, size - 2, auth,
                              &out, &len);
    check_http(status, out, len);
    free(out);
    check_cache();
    return 0;
}
