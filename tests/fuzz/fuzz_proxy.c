/* fuzz_proxy.c - libFuzzer target over the OpenAI proxy's derivation
 * (sc_proxy_derive): what a chat completion request means to the cache.
 * An input is a request body, parsed as the proxy parses it but with NULs
 * allowed in strings (more than it lets through), derived under each
 * history policy. A plan must be
 * whole: cacheable with a text of 1..SC_CACHE_TEXT_MAX bytes (NUL after)
 * and a scope "oai1|MODEL|pHASH|sHASH|hHASH" of exactly that shape, or not
 * cacheable with a reason and no text; a refusal leaves a zeroed plan and
 * a message. The same request must derive the same plan twice; the
 * policies may differ only in the history hash (EXACT, IGNORE) or in
 * refusing more than one turn (SINGLE). Otherwise abort(). */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proxy.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_proxy: %s\n", what);
    abort();
}

static bool is_hex16(const char *s)
{
    for (int i = 0; i < 16; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return false;
        }
    }
    return true;
}

/* The length of s up to its NUL, or cap when it has none. */
static size_t bounded_len(const char *s, size_t cap)
{
    const char *z = memchr(s, '\0', cap);
    return z != NULL ? (size_t)(z - s) : cap;
}

/* Checks one plan; returns the offset of its history hash in the scope
 * (the scope's tail), or 0 when not cacheable. */
static size_t check_plan(sc_err rc, const sc_proxy_plan *p, const char *msg)
{
    if (rc == SC_ENOMEM) {
        return 0;
    }
    if (rc == SC_EINVAL) {
        static const sc_proxy_plan zero;
        if (memcmp(p, &zero, sizeof(zero)) != 0) {
            die("a refused request left a plan");
        }
        if (msg[0] == '\0') {
            die("a refused request without a message");
        }
        return 0;
    }
    if (rc != SC_OK) {
        die("an error other than EINVAL or ENOMEM");
    }
    if (!p->cacheable) {
        if (p->why_not == NULL || p->text != NULL || p->text_len != 0) {
            die("not cacheable, yet no reason or a text");
        }
        return 0;
    }
    if (p->text == NULL || p->text_len == 0 ||
        p->text_len > SC_CACHE_TEXT_MAX || p->text[p->text_len] != '\0') {
        die("a cacheable plan's text is not 1..max bytes with a NUL after");
    }
    size_t ml = bounded_len(p->model, sizeof(p->model));
    size_t sl = bounded_len(p->scope, sizeof(p->scope));
    if (ml == 0 || ml > SC_CACHE_TAG_MAX) {
        die("a cacheable plan without a model");
    }
    /* oai1| MODEL |p 16 |s 16 |h 16 */
    const char *s = p->scope;
    if (sl != 5 + ml + 3 * 18 || memcmp(s, "oai1|", 5) != 0 ||
        memcmp(s + 5, p->model, ml) != 0 || s[5 + ml] != '|' ||
        s[6 + ml] != 'p' || !is_hex16(s + 7 + ml) || s[23 + ml] != '|' ||
        s[24 + ml] != 's' || !is_hex16(s + 25 + ml) || s[41 + ml] != '|' ||
        s[42 + ml] != 'h' || !is_hex16(s + 43 + ml)) {
        die("the scope is not oai1|MODEL|pHASH|sHASH|hHASH");
    }
    return 43 + ml;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *req = json_loadb((const char *)data, size, JSON_ALLOW_NUL, &jerr);
    if (req == NULL) {
        return 0;
    }
    static const sc_proxy_history hs[3] = {SC_PROXY_HISTORY_EXACT,
                                           SC_PROXY_HISTORY_SINGLE,
                                           SC_PROXY_HISTORY_IGNORE};
    sc_proxy_plan p[3], again;
    sc_err rc[3];
    size_t tail[3];
    for (int k = 0; k < 3; k++) {
        char msg[256] = "";
        rc[k] = sc_proxy_derive(req, hs[k], &p[k], msg, sizeof(msg));
        tail[k] = check_plan(rc[k], &p[k], msg);
    }
    char msg[256] = "";
    sc_err rc2 = sc_proxy_derive(req, SC_PROXY_HISTORY_EXACT, &again, msg,
                                 sizeof(msg));
    if (rc2 == SC_OK && rc[0] == SC_OK &&
        (again.cacheable != p[0].cacheable ||
         strcmp(again.scope, p[0].scope) != 0 ||
         again.text_len != p[0].text_len ||
         (again.text != NULL &&
          memcmp(again.text, p[0].text, again.text_len) != 0))) {
        die("the same request derived two plans");
    }
    sc_proxy_plan_fini(&again);
    if (rc[0] == SC_OK && rc[2] == SC_OK) {
        /* EXACT and IGNORE differ in the history hash alone. */
        if (p[0].cacheable != p[2].cacheable ||
            (tail[0] && (tail[0] != tail[2] ||
                         memcmp(p[0].scope, p[2].scope, tail[0]) != 0 ||
                         p[0].text_len != p[2].text_len))) {
            die("EXACT and IGNORE differ beyond the history hash");
        }
        if (tail[2] && strcmp(p[2].scope + tail[2], "0000000000000000") != 0) {
            die("IGNORE hashed the history");
        }
    }
    if (rc[0] == SC_OK && rc[1] == SC_OK && p[1].cacheable) {
        /* SINGLE serves only what has no earlier turn: EXACT's scope. */
        if (strcmp(p[0].scope, p[1].scope) != 0) {
            die("SINGLE and EXACT differ on a single turn");
        }
    }
    if (rc[1] == SC_OK && !p[1].cacheable && rc[0] == SC_OK &&
        p[0].cacheable &&
        strcmp(p[0].scope + tail[0], "0000000000000000") == 0) {
        die("SINGLE refused a request with no earlier turn");
    }
    for (int k = 0; k < 3; k++) {
        sc_proxy_plan_fini(&p[k]);
    }
    json_decref(req);
    return 0;
}
