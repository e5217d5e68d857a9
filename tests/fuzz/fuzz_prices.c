/* fuzz_prices.c - libFuzzer target over the price table parser
 * (sc_prices_parse): hostile JSON must be refused with a message, and a
 * table that parses must answer its queries with finite, non-negative
 * prices. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/ledger.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_prices: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sc_prices *p = NULL;
    char msg[256];
    msg[0] = '\0';
    sc_err rc = sc_prices_parse((const char *)data, size, "fuzz", &p, msg,
                                sizeof(msg));
    if (rc != SC_OK) {
        if (p != NULL) {
            die("failed parse set *out");
        }
        if (memchr(msg, '\0', sizeof(msg)) == NULL) {
            die("message not NUL-terminated");
        }
        return 0;
    }
    if (p == NULL || sc_prices_date(p) == NULL) {
        die("parsed table incomplete");
    }
    double cpu = sc_prices_cpu_hour(p);
    if (!isfinite(cpu) || cpu < 0) {
        die("bad cpu_hour");
    }
    /* Ask for a few names, and for names cut from the input itself. */
    const char *names[] = {"gpt-4o-mini", "", "text-embedding-3-small", "x"};
    char cut[64];
    size_t cl = size < sizeof(cut) - 1 ? size : sizeof(cut) - 1;
    memcpy(cut, data, cl);
    cut[cl] = '\0';
    for (int i = 0; i < 5; i++) {
        const char *n = i < 4 ? names[i] : cut;
        sc_price pr;
        double e;
        if (sc_prices_llm(p, n, &pr) &&
            (!isfinite(pr.input) || pr.input < 0 || !isfinite(pr.output) ||
             pr.output < 0 || !isfinite(pr.cached_input) ||
             pr.cached_input < 0)) {
            die("bad LLM price");
        }
        if (sc_prices_embedding(p, n, &e) && (!isfinite(e) || e < 0)) {
            die("bad embedding price");
        }
    }
    sc_prices_free(p);
    return 0;
}
