/* cli.c - semcache-cli: ping, insert, lookup, delete, feedback, stats,
 * report, flush and ns-drop against a running semcached, through
 * libsemcache. Human output by default, JSON with --json. Exit status 0 on
 * success (a miss is a success), 1 when the server refuses, 2 on bad
 * usage, 3 on transport, 4 on a local failure (a file it cannot write, no
 * memory). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sc_plural.h"
#include "common/sc_utf8.h"
#include "common/sc_vec.h"
#include "proto/cli_report.h"
#include "proto/client.h"
#include "proto/mp.h"

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: semcache-cli [-a ADDR] [-k KEY] [--json] [--timeout MS] "
        "COMMAND [ARGS]\n"
        "  ADDR defaults to tcp://127.0.0.1:7700\n"
        "  KEY: the access key, if the server wants one; better in the\n"
        "  SEMCACHE_KEY environment variable, off the process list\n"
        "commands:\n"
        "  ping\n"
        "  insert --ns NS (--text T and/or --vec 0.1,0.2,...) --response R\n"
        "         [--scope S] [--ttl SECONDS] [--model M] [--feature F] "
        "[--user U]\n"
        "         [--input-tokens N] [--output-tokens N] [--embed-model E]\n"
        "  lookup --ns NS (--text T and/or --vec ...) [--scope S] [--threshold "
        "X]\n"
        "         [--embed-model E] [--feature F] [--user U]\n"
        "  (--text alone is embedded by the server; with --vec too, the text\n"
        "   is the exact layer's and the vector is used as given;\n"
        "   --embed-model names the model a --vec came from)\n"
        "  delete ENTRY\n"
        "  feedback ENTRY [--feature F] [--user U]\n"
        "                          (report a wrong hit: quarantines the "
        "entry;\n"
        "                          the tags: those its lookup gave)\n"
        "  stats [--ns NS]\n"
        "  report [--ns NS] [--by feature|user] [--limit N] [--after KEY]\n"
        "         [--svg FILE]     (what the cache saved and spent, in "
        "dollars;\n"
        "                          rows in name order, N a page: default "
        "1000,\n"
        "                          at most 10000; --after the page's "
        "start)\n"
        "  flush [--ns NS]\n"
        "  ns-drop --ns NS          (remove a namespace and its entries)\n");
}

/* Writes s as a JSON string: a byte that is not part of well-formed UTF-8
 * (tags and names are any bytes) as U+FFFD, so the output stays JSON. */
static void json_str(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            printf("\\%c", ch);
        } else if (ch < 0x20 || ch == 0x7f) {
            printf("\\u%04x", ch);
        } else if (ch < 0x80) {
            putchar(ch);
        } else {
            size_t len = sc_utf8_len((const unsigned char *)s + i, n - i);
            if (len == 0) {
                fputs("\\ufffd", stdout);
            } else {
                fwrite(s + i, 1, len, stdout);
                i += len - 1;
            }
        }
    }
    putchar('"');
}

/* Writes bytes (a response: any bytes) as JSON: a string when they are
 * text (well-formed UTF-8, no control bytes but newline and tab), else an
 * array of the byte values, so that nothing is lost. */
static void json_bytes(const uint8_t *b, size_t n)
{
    size_t i = 0;
    while (i < n && (b[i] >= 0x20 || b[i] == '\n' || b[i] == '\t') &&
           b[i] != 0x7f) {
        size_t len = b[i] < 0x80 ? 1 : sc_utf8_len(b + i, n - i);
        if (len == 0) {
            break;
        }
        i += len;
    }
    if (i == n) {
        json_str((const char *)b, n);
        return;
    }
    putchar('[');
    for (size_t j = 0; j < n; j++) {
        printf(j ? ",%u" : "%u", b[j]);
    }
    putchar(']');
}

/* Writes a number as JSON: the fewest digits that read back as the same
 * double (or float, for single), so that --json gives the reply's figures
 * (%.9g cut 0.000449999399266663 to 0.000449999399); null when it is not
 * finite, which JSON cannot write. */
static void json_num(double v, bool single)
{
    if (!isfinite(v)) {
        printf("null");
        return;
    }
    char buf[40];
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(buf, sizeof(buf), "%.*g", digits, v);
        if (single ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v) {
            break;
        }
    }
    fputs(buf, stdout);
}

/* Prints one msgpack value as JSON (bin as json_bytes does). Returns -1 on
 * malformed input. */
static int json_value(mp_reader *r, int depth)
{
    if (depth > MP_MAX_DEPTH) {
        return -1;
    }
    uint32_t n;
    const char *s;
    const uint8_t *b;
    double v;
    bool t;
    switch (mp_peek(r)) {
    case MP_NIL:
        printf("null");
        return mp_read_nil(r);
    case MP_BOOL:
        if (mp_read_bool(r, &t) != 0) {
            return -1;
        }
        printf(t ? "true" : "false");
        return 0;
    case MP_UINT: {
        uint64_t u;
        if (mp_read_uint(r, &u) != 0) {
            return -1;
        }
        printf("%llu", (unsigned long long)u);
        return 0;
    }
    case MP_INT: {
        int64_t i; /* exact, not through a double */
        if (mp_read_int(r, &i) != 0) {
            return -1;
        }
        printf("%lld", (long long)i);
        return 0;
    }
    case MP_FLOAT: {
        bool single = r->p[0] == 0xca; /* msgpack's float 32 */
        if (mp_read_number(r, &v) != 0) {
            return -1;
        }
        json_num(v, single);
        return 0;
    }
    case MP_STR:
        if (mp_read_str(r, &s, &n) != 0) {
            return -1;
        }
        json_str(s, n);
        return 0;
    case MP_BIN:
        if (mp_read_bin(r, &b, &n) != 0) {
            return -1;
        }
        json_bytes(b, n);
        return 0;
    case MP_ARRAY:
        if (mp_read_array(r, &n) != 0) {
            return -1;
        }
        putchar('[');
        for (uint32_t i = 0; i < n; i++) {
            if (i) {
                putchar(',');
            }
            if (json_value(r, depth + 1) != 0) {
                return -1;
            }
        }
        putchar(']');
        return 0;
    case MP_MAP: {
        if (mp_read_map(r, &n) != 0) {
            return -1;
        }
        putchar('{');
        for (uint32_t i = 0; i < n; i++) {
            uint32_t kn;
            if (i) {
                putchar(',');
            }
            if (mp_read_str(r, &s, &kn) != 0) {
                return -1;
            }
            json_str(s, kn);
            putchar(':');
            if (json_value(r, depth + 1) != 0) {
                return -1;
            }
        }
        putchar('}');
        return 0;
    }
    default:
        return -1;
    }
}

/* Human stats: one "name value" line per counter of the reply's result. */
static sc_err print_stats(mp_reader *r)
{
    uint32_t n, m;
    const char *k;
    uint32_t kn;
    if (mp_read_map(r, &n) != 0) {
        return SC_EPROTO;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (mp_read_str(r, &k, &kn) != 0) {
            return SC_EPROTO;
        }
        if (kn != 6 || memcmp(k, "result", 6) != 0) {
            if (mp_skip(r) != 0) {
                return SC_EPROTO;
            }
            continue;
        }
        if (mp_read_map(r, &m) != 0) {
            return SC_EPROTO;
        }
        for (uint32_t j = 0; j < m; j++) {
            uint64_t u;
            uint32_t hn;
            if (mp_read_str(r, &k, &kn) != 0) {
                return SC_EPROTO;
            }
            if (mp_read_uint(r, &u) == 0) {
                printf("%-18.*s %llu\n", (int)kn, k, (unsigned long long)u);
            } else if (mp_read_array(r, &hn) == 0) {
                printf("%-18.*s %u non-empty %s (--json lists them)\n", (int)kn,
                       k, hn, sc_plural(hn, "bin", "bins"));
                for (uint32_t b = 0; b < hn; b++) {
                    if (mp_skip(r) != 0) {
                        return SC_EPROTO;
                    }
                }
            } else if (mp_skip(r) != 0) {
                return SC_EPROTO;
            }
        }
    }
    return SC_OK;
}

static int parse_vec(const char *s, float **out, uint32_t *dim)
{
    size_t cap = 0, n = 0;
    float *v = NULL;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        float x = strtof(p, &end);
        if (end == p || errno != 0 || !isfinite(x) || n == 4096 ||
            SC_VEC_RESERVE(v, cap, n, 1, 16) != SC_OK) {
            free(v);
            return -1;
        }
        v[n++] = x;
        p = end;
        if (*p == ',') {
            p++;
        } else if (*p != '\0') {
            free(v);
            return -1;
        }
    }
    if (n == 0) {
        free(v);
        return -1;
    }
    *out = v;
    *dim = (uint32_t)n;
    return 0;
}

/* Decimal digits and nothing else: strtoull alone skips leading spaces
 * and takes a sign, so " -1" would be 2^64 - 1 and
 * " -18446744073709551613" would be 3. */
static int parse_uint(const char *s, uint64_t *out)
{
    char *end;
    if (s[0] < '0' || s[0] > '9') {
        return -1;
    }
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0') {
        return -1;
    }
    *out = v;
    return 0;
}

/* A finite number and nothing else ("0,9", "abc", "1h", "" refused). */
static int parse_num(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v)) {
        return -1;
    }
    *out = v;
    return 0;
}

/* The reply's result map as a jansson tree, or NULL. */
static json_t *result_of(const uint8_t *raw, size_t len)
{
    mp_reader r;
    mp_reader_init(&r, raw, len);
    json_t *all = sc_cli_mp_to_json(&r, 0);
    json_t *res = json_incref(json_object_get(all, "result"));
    json_decref(all);
    return res;
}

/* semcache-cli report: asks for the report (and, for --svg, the stats'
 * histogram) and prints it. */
static sc_err run_report(sc_client *c, const char *ns, const char *by,
                         const char *after, uint64_t limit, const char *svg,
                         int json, sc_client_error *err)
{
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    sc_err rc =
        sc_client_report_page(c, ns, by, after, limit, &raw, &raw_len, err);
    if (rc != SC_OK) {
        return rc;
    }
    if (json) {
        mp_reader r;
        mp_reader_init(&r, raw, raw_len);
        rc = json_value(&r, 0) == 0 ? SC_OK : SC_EPROTO;
        putchar('\n');
    }
    json_t *res = result_of(raw, raw_len);
    free(raw);
    if (res == NULL) {
        return SC_EPROTO;
    }
    if (!json && sc_cli_print_report(res, ns, stdout) != 0) {
        rc = SC_EPROTO;
    }
    if (rc == SC_OK && svg != NULL) {
        rc = sc_client_stats(c, ns, &raw, &raw_len, err);
        json_t *st = rc == SC_OK ? result_of(raw, raw_len) : NULL;
        if (rc == SC_OK) {
            free(raw);
            if (st == NULL || sc_cli_report_svg(res, st, svg) != 0) {
                fprintf(stderr, "semcache-cli: cannot write %s\n", svg);
                rc = SC_EIO;
            }
        }
        json_decref(st);
    }
    json_decref(res);
    return rc;
}

/* The exit status of a failure (the header's list): the server refused
 * (1), bad usage (2), the server unreachable, silent or garbled (3), a
 * local failure (4: no memory, a file not written, anything else). */
static int exit_status(sc_err rc)
{
    switch (rc) {
    case SC_EREMOTE:
        return 1;
    case SC_EINVAL:
        return 2;
    case SC_ECONN:
    case SC_ETIMEDOUT:
    case SC_EPROTO:
        return 3;
    default:
        return 4;
    }
}

/* Says what failed on stderr and returns the exit status. A transport
 * error names addr, the server the user may not know was dialed; a
 * refusal for want of a key (none given: keyed false) says how to give
 * one, which the server's message, written for every client, cannot. */
static int report(sc_err rc, const sc_client_error *err, int json,
                  const char *addr, bool keyed)
{
    if (rc == SC_EREMOTE && err->code[0] == '\0') {
        /* An empty code (libsemcache said SC_EPROTO for a refusal
         * without an error map or a str code). */
        fprintf(stderr, "semcache-cli: malformed error reply from the "
                        "server\n");
        return exit_status(SC_EPROTO);
    }
    if (rc == SC_EREMOTE) {
        if (json) {
            printf("{\"ok\":false,\"error\":{\"code\":");
            json_str(err->code, strlen(err->code));
            printf(",\"message\":");
            json_str(err->message, strlen(err->message));
            printf("}}\n");
        }
        fprintf(stderr, "semcache-cli: %s%s%s\n", err->code,
                err->message[0] != '\0' ? ": " : "", err->message);
        if (!keyed && strcmp(err->code, "unauthorized") == 0) {
            fprintf(stderr, "semcache-cli: the server wants an access key: "
                            "SEMCACHE_KEY=KEY in the environment, or -k "
                            "KEY\n");
        }
        return 1;
    }
    if (rc == SC_ECONN) {
        fprintf(stderr,
                "semcache-cli: %s: %s (is semcached running there? -a ADDR "
                "names another)\n",
                addr, sc_strerror(rc));
    } else if (rc == SC_ETIMEDOUT) {
        fprintf(stderr,
                "semcache-cli: %s: %s (--timeout MS allows it longer)\n", addr,
                sc_strerror(rc));
    } else {
        fprintf(stderr, "semcache-cli: %s\n", sc_strerror(rc));
    }
    return exit_status(rc);
}

int main(int argc, char **argv)
{
    const char *addr = "tcp://127.0.0.1:7700";
    const char *key = getenv("SEMCACHE_KEY");
    int json = 0, timeout = 5000, i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-a") == 0 && i + 1 < argc) {
            addr = argv[++i];
        } else if (strcmp(argv[i], "-k") == 0 && i + 1 < argc) {
            key = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            uint64_t ms;
            if (parse_uint(argv[++i], &ms) != 0 || ms < 1 || ms > 3600000) {
                fprintf(stderr, "semcache-cli: --timeout wants 1..3600000 "
                                "(ms)\n");
                return 2;
            }
            timeout = (int)ms;
        } else if (strcmp(argv[i], "-h") == 0 ||
                   strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[i++];
    const char *ns = NULL;
    sc_client_item it;
    memset(&it, 0, sizeof(it));
    float *vec = NULL;
    const char *response = NULL;
    const char *positional = NULL, *extra = NULL; /* the first two words */
    const char *by = NULL, *svg = NULL, *after = NULL;
    uint64_t limit = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        double num = 0;
        if (a[0] != '-') {
            if (positional == NULL) {
                positional = a;
            } else if (extra == NULL) {
                extra = a;
            }
            takes = 0;
        } else if (strcmp(a, "--json") == 0) {
            json = 1; /* after the command too, as the README writes it */
            takes = 0;
        } else if (v == NULL) {
            fprintf(stderr, "semcache-cli: %s needs a value\n", a);
            free(vec);
            return 2;
        } else if (strcmp(a, "--ns") == 0) {
            ns = v;
        } else if (strcmp(a, "--text") == 0) {
            it.text = v;
        } else if (strcmp(a, "--vec") == 0) {
            free(vec); /* the last --vec given wins */
            vec = NULL;
            if (parse_vec(v, &vec, &it.dim) != 0) {
                fprintf(stderr, "semcache-cli: --vec wants 1..4096 finite "
                                "numbers separated by commas\n");
                return 2;
            }
            it.vec = vec;
        } else if (strcmp(a, "--response") == 0) {
            response = v;
        } else if (strcmp(a, "--scope") == 0) {
            it.scope = v;
        } else if (strcmp(a, "--ttl") == 0 || strcmp(a, "--threshold") == 0) {
            /* Strictly: "0,9" or "1h" read as 0 or 1 would look up or
             * store with a value nobody asked for. */
            if (parse_num(v, &num) != 0) {
                fprintf(stderr, "semcache-cli: %s wants a number, not '%s'\n",
                        a, v);
                free(vec);
                return 2;
            }
            if (strcmp(a, "--ttl") == 0) {
                it.ttl_s = num;
            } else {
                it.has_threshold = true;
                it.threshold = (float)num;
            }
        } else if (strcmp(a, "--model") == 0) {
            it.model = v;
        } else if (strcmp(a, "--by") == 0) {
            if (strcmp(v, "ns") != 0 && strcmp(v, "feature") != 0 &&
                strcmp(v, "user") != 0) {
                /* Bad usage (2), found before a server is asked. */
                fprintf(stderr,
                        "semcache-cli: --by wants feature, user or ns, not "
                        "'%s'\n",
                        v);
                free(vec);
                return 2;
            }
            by = v;
        } else if (strcmp(a, "--svg") == 0) {
            svg = v;
        } else if (strcmp(a, "--after") == 0) {
            after = v;
        } else if (strcmp(a, "--limit") == 0) {
            if (parse_uint(v, &limit) != 0 || limit == 0) {
                fprintf(stderr, "semcache-cli: --limit wants an integer of "
                                "1 or more\n");
                free(vec);
                return 2;
            }
        } else if (strcmp(a, "--embed-model") == 0) {
            it.embed_model = v;
        } else if (strcmp(a, "--feature") == 0) {
            it.feature = v;
        } else if (strcmp(a, "--user") == 0) {
            it.user = v;
        } else if (strcmp(a, "--input-tokens") == 0 ||
                   strcmp(a, "--output-tokens") == 0) {
            uint64_t n;
            if (parse_uint(v, &n) != 0) {
                fprintf(stderr, "semcache-cli: %s wants an integer\n", a);
                free(vec);
                return 2;
            }
            *(a[2] == 'i' ? &it.input_tokens : &it.output_tokens) = n;
        } else {
            fprintf(stderr, "semcache-cli: unknown option %s\n", a);
            free(vec);
            return 2;
        }
        i += takes;
    }

    /* Usage is checked before any connection is made. */
    const char *const known[] = {"ping",   "insert",   "lookup",
                                 "delete", "feedback", "flush",
                                 "stats",  "report",   "ns-drop"};
    int is_known = 0;
    for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++) {
        is_known |= strcmp(cmd, known[k]) == 0;
    }
    if (!is_known) {
        fprintf(stderr, "semcache-cli: unknown command %s\n", cmd);
        usage(stderr);
        free(vec);
        return 2;
    }
    /* A word is an entry id (delete, feedback) and nothing else: "flush
     * other" must not flush every namespace, nor "stats other" show the
     * totals, nor "delete 1 2" delete 2 alone. */
    int takes_id = strcmp(cmd, "delete") == 0 || strcmp(cmd, "feedback") == 0;
    const char *stray = takes_id ? extra : positional;
    if (stray != NULL) {
        if (takes_id) {
            fprintf(stderr,
                    "semcache-cli: %s takes one entry id; '%s' is a second\n",
                    cmd, stray);
        } else if (strcmp(cmd, "ping") == 0) {
            fprintf(stderr, "semcache-cli: ping takes no argument '%s'\n",
                    stray);
        } else {
            fprintf(stderr,
                    "semcache-cli: %s takes no argument '%s' (for a "
                    "namespace: --ns %s)\n",
                    cmd, stray, stray);
        }
        free(vec);
        return 2;
    }
    int ins = strcmp(cmd, "insert") == 0;
    if ((ins || strcmp(cmd, "lookup") == 0) &&
        (ns == NULL || (it.text == NULL && it.vec == NULL) ||
         (ins && response == NULL))) {
        fprintf(stderr, "semcache-cli: %s needs --ns, --text or --vec%s\n", cmd,
                ins ? ", and --response" : "");
        free(vec);
        return 2;
    }
    if (strcmp(cmd, "ns-drop") == 0 && ns == NULL) {
        fprintf(stderr, "semcache-cli: ns-drop needs --ns\n");
        free(vec);
        return 2;
    }
    uint64_t entry = 0;
    if ((strcmp(cmd, "delete") == 0 || strcmp(cmd, "feedback") == 0) &&
        (positional == NULL || parse_uint(positional, &entry) != 0)) {
        fprintf(stderr, "semcache-cli: %s needs an entry id\n", cmd);
        free(vec);
        return 2;
    }
    sc_client *c;
    sc_err rc = sc_client_open(addr, timeout, &c);
    if (rc != SC_OK) {
        fprintf(stderr, "semcache-cli: %s: %s\n", addr, sc_strerror(rc));
        free(vec);
        return exit_status(rc);
    }
    if (key != NULL && key[0] != '\0' &&
        (rc = sc_client_set_key(c, key)) != SC_OK) {
        fprintf(stderr, "semcache-cli: %s\n", sc_strerror(rc));
        sc_client_close(c);
        free(vec);
        return exit_status(rc);
    }
    sc_client_error err;
    int status = 0;
    if (strcmp(cmd, "ping") == 0) {
        char server[128];
        rc = sc_client_ping(c, server, sizeof(server), &err);
        if (rc == SC_OK) {
            if (json) {
                printf("{\"ok\":true,\"server\":");
                json_str(server, strlen(server));
                printf("}\n");
            } else {
                printf("pong from %s\n", server);
            }
        }
    } else if (strcmp(cmd, "insert") == 0 || strcmp(cmd, "lookup") == 0) {
        if (ins) {
            it.response = response;
            it.response_len = strlen(response);
            rc = sc_client_insert(c, ns, &it, &entry, &err);
            if (rc == SC_OK) {
                printf(json ? "{\"ok\":true,\"entry\":%llu}\n"
                            : "stored as entry %llu\n",
                       (unsigned long long)entry);
            }
        } else {
            sc_client_result res;
            rc = sc_client_lookup(c, ns, &it, &res, &err);
            if (rc == SC_OK && json) {
                /* layer and reason are the server's words: escaped. */
                printf("{\"ok\":true,\"hit\":%s,\"layer\":",
                       res.hit ? "true" : "false");
                json_str(res.layer, strlen(res.layer));
                printf(",\"similarity\":%.6f,\"best\":",
                       (double)res.similarity);
                if (isnan(res.best)) {
                    printf("null");
                } else {
                    printf("%.6f", (double)res.best);
                }
                if (res.hit) {
                    printf(",\"entry\":%llu,\"response\":",
                           (unsigned long long)res.entry);
                    json_bytes(res.response, res.response_len);
                } else {
                    printf(",\"reason\":");
                    json_str(res.reason, strlen(res.reason));
                }
                printf("}\n");
            } else if (rc == SC_OK && res.hit) {
                printf("hit (%s, similarity %.4f) entry %llu: %.*s\n",
                       res.layer, (double)res.similarity,
                       (unsigned long long)res.entry, (int)res.response_len,
                       (const char *)res.response);
            } else if (rc == SC_OK) {
                if (isnan(res.best)) {
                    printf("miss (%s)\n", res.reason);
                } else {
                    printf("miss (%s, best similarity %.4f)\n", res.reason,
                           (double)res.best);
                }
            }
            if (rc == SC_OK) {
                free(res.response);
            }
        }
    } else if (strcmp(cmd, "delete") == 0 || strcmp(cmd, "feedback") == 0) {
        rc = cmd[0] == 'd' ? sc_client_delete(c, entry, &err)
                           : sc_client_feedback_tagged(c, entry, it.feature,
                                                       it.user, &err);
        if (rc == SC_OK) {
            printf(json ? "{\"ok\":true}\n" : "%s %llu: done\n", cmd,
                   (unsigned long long)entry);
        }
    } else if (strcmp(cmd, "flush") == 0) {
        rc = sc_client_flush(c, ns, &err);
        if (rc == SC_OK) {
            printf(json ? "{\"ok\":true}\n" : "flushed %s\n",
                   ns ? ns : "every namespace");
        }
    } else if (strcmp(cmd, "ns-drop") == 0) {
        rc = sc_client_ns_drop(c, ns, &err);
        if (rc == SC_OK) {
            printf(json ? "{\"ok\":true}\n" : "dropped %s\n", ns);
        }
    } else if (strcmp(cmd, "report") == 0) {
        rc = run_report(c, ns, by, after, limit, svg, json, &err);
        if (rc == SC_EIO) {
            status = 4; /* the SVG could not be written (said) */
        }
    } else if (strcmp(cmd, "stats") == 0) {
        uint8_t *raw = NULL;
        size_t raw_len = 0;
        rc = sc_client_stats(c, ns, &raw, &raw_len, &err);
        if (rc == SC_OK) {
            mp_reader r;
            mp_reader_init(&r, raw, raw_len);
            rc = json ? (json_value(&r, 0) == 0 ? SC_OK : SC_EPROTO)
                      : print_stats(&r);
            if (json) {
                putchar('\n');
            }
            free(raw);
        }
    }
    if (status == 0 && rc != SC_OK) {
        status = report(rc, &err, json, addr, key != NULL && key[0] != '\0');
    }
    sc_client_close(c);
    free(vec);
    return status;
}
