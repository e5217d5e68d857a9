/* cli_report.c - semcache-cli report: the server's cost report (the
 * "report" op) printed for people, and drawn as SVG (savings over time and
 * the best-similarity histogram). The reply is turned into a jansson tree
 * first, so that fields are read by name. */
#define _GNU_SOURCE
#include "proto/cli_report.h"

#include "cache/cache.h"
#include "common/sc_plural.h"
#include "common/sc_utf8.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

json_t *sc_cli_mp_to_json(mp_reader *r, int depth)
{
    if (depth > MP_MAX_DEPTH) {
        return NULL;
    }
    uint32_t n;
    const char *s;
    const uint8_t *b;
    double v;
    bool t;
    uint64_t u;
    switch (mp_peek(r)) {
    case MP_NIL:
        return mp_read_nil(r) == 0 ? json_null() : NULL;
    case MP_BOOL:
        return mp_read_bool(r, &t) == 0 ? json_boolean(t) : NULL;
    case MP_UINT:
        if (mp_read_uint(r, &u) != 0) {
            return NULL;
        }
        return u <= (uint64_t)INT64_MAX ? json_integer((json_int_t)u)
                                        : json_real((double)u);
    case MP_INT:
    case MP_FLOAT:
        if (mp_read_number(r, &v) != 0) {
            return NULL;
        }
        return isfinite(v) ? json_real(v) : json_null();
    case MP_STR:
        return mp_read_str(r, &s, &n) == 0 ? json_stringn_nocheck(s, n) : NULL;
    case MP_BIN:
        return mp_read_bin(r, &b, &n) == 0
                   ? json_stringn_nocheck((const char *)b, n)
                   : NULL;
    case MP_ARRAY: {
        if (mp_read_array(r, &n) != 0) {
            return NULL;
        }
        json_t *a = json_array();
        for (uint32_t i = 0; a != NULL && i < n; i++) {
            json_t *e = sc_cli_mp_to_json(r, depth + 1);
            if (e == NULL || json_array_append_new(a, e) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case MP_MAP: {
        if (mp_read_map(r, &n) != 0) {
            return NULL;
        }
        json_t *o = json_object();
        for (uint32_t i = 0; o != NULL && i < n; i++) {
            char key[128];
            if (mp_read_cstr(r, key, sizeof(key)) != 0) {
                json_decref(o);
                return NULL;
            }
            json_t *e = sc_cli_mp_to_json(r, depth + 1);
            if (e == NULL || json_object_set_new(o, key, e) != 0) {
                json_decref(o);
                return NULL;
            }
        }
        return o;
    }
    default:
        return NULL;
    }
}

static double num(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static unsigned long long cnt(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (unsigned long long)json_integer_value(v) : 0;
}

/* Dollars with enough digits to see small sums; "unknown" for NaN. */
static const char *usd(double v, char *buf, size_t cap)
{
    if (!isfinite(v)) {
        snprintf(buf, cap, "unknown");
    } else if (fabs(v) >= 100) {
        snprintf(buf, cap, "$%.2f", v);
    } else if (fabs(v) >= 0.01 || v == 0) {
        snprintf(buf, cap, "$%.4f", v);
    } else {
        snprintf(buf, cap, "$%.3g", v);
    }
    return buf;
}

static const char *pct(double v, char *buf, size_t cap)
{
    if (!isfinite(v)) {
        snprintf(buf, cap, "-");
    } else {
        snprintf(buf, cap, "%.2f%%", 100 * v);
    }
    return buf;
}

/* A tag as the terminal may show it: any client can name one (a lookup
 * makes its row), so control bytes (C0, DEL, UTF-8's C1) and bytes that
 * are not UTF-8 are written as \xNN, and a backslash as \\. out holds
 * 4 bytes per byte of s, plus 1. */
static const char *tag_text(const char *s, char *out, size_t cap)
{
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *end = p + strlen(s);
    size_t o = 0;
    while (p < end && o + 5 <= cap) {
        unsigned c = *p;
        size_t n = c < 0x80 ? 1 : sc_utf8_len(p, (size_t)(end - p));
        bool control =
            c < 0x20 || c == 0x7f || (n == 2 && c == 0xc2 && p[1] < 0xa0);
        if (c == '\\') {
            memcpy(out + o, "\\\\", 2);
            o += 2;
            p++;
            continue;
        }
        if (n == 0 || control) {
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
            p++;
            continue;
        }
        memcpy(out + o, p, n);
        o += n;
        p += n;
    }
    out[o] = '\0';
    return out;
}

/* Writes s as one shell word that gives s back when pasted: '...' with a
 * quote as '\'' when s is printable text, else bash's $'...' with
 * \xHH for control bytes and bytes that are not UTF-8 (which are not
 * written to the terminal as they are). */
static void put_shell_word(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *end = p + strlen(s);
    bool plain = true;
    for (const unsigned char *q = p; q < end && plain;) {
        size_t n = *q < 0x80 ? 1 : sc_utf8_len(q, (size_t)(end - q));
        plain = n != 0 && *q >= 0x20 && *q != 0x7f &&
                !(n == 2 && *q == 0xc2 && q[1] < 0xa0);
        q += n != 0 ? n : 1;
    }
    if (plain) {
        fputc('\'', f);
        for (; p < end; p++) {
            if (*p == '\'') {
                fputs("'\\''", f);
            } else {
                fputc(*p, f);
            }
        }
        fputc('\'', f);
        return;
    }
    fputs("$'", f);
    while (p < end) {
        unsigned c = *p;
        size_t n = c < 0x80 ? 1 : sc_utf8_len(p, (size_t)(end - p));
        bool control =
            c < 0x20 || c == 0x7f || (n == 2 && c == 0xc2 && p[1] < 0xa0);
        if (c == '\\' || c == '\'') {
            fprintf(f, "\\%c", (int)c);
            p++;
        } else if (n == 0 || control) {
            fprintf(f, "\\x%02x", c);
            p++;
        } else {
            fwrite(p, 1, n, f);
            p += n;
        }
    }
    fputc('\'', f);
}

static void print_totals(const json_t *t, FILE *f)
{
    char a[32], b[32], c[32];
    fprintf(f, "requests              %llu\n", cnt(t, "requests"));
    fprintf(f, "hit rate              %s (exact %s, semantic %s)\n",
            pct(num(t, "hit_rate"), a, sizeof(a)),
            pct(num(t, "exact_hit_rate"), b, sizeof(b)),
            pct(num(t, "semantic_hit_rate"), c, sizeof(c)));
    fprintf(f, "tokens avoided        %llu in, %llu out",
            cnt(t, "tokens_in_avoided"), cnt(t, "tokens_out_avoided"));
    if (cnt(t, "hits_estimated") > 0) {
        fprintf(f, " (%llu %s tokens estimated from bytes)",
                cnt(t, "hits_estimated"),
                sc_plural(cnt(t, "hits_estimated"), "hit's", "hits'"));
    }
    fprintf(f, "\ndollars avoided       %s",
            usd(num(t, "usd_avoided"), a, sizeof(a)));
    if (cnt(t, "hits_unpriced") > 0) {
        fprintf(f, " + %llu %s with no price: cost unknown",
                cnt(t, "hits_unpriced"),
                sc_plural(cnt(t, "hits_unpriced"), "hit of a model",
                          "hits of models"));
    }
    fprintf(f, "\ndollars spent         %s (embeddings %s, lookups %s)",
            usd(num(t, "usd_spent"), a, sizeof(a)),
            usd(num(t, "usd_embed"), b, sizeof(b)),
            usd(num(t, "usd_lookup"), c, sizeof(c)));
    if (cnt(t, "embed_unpriced") > 0) {
        fprintf(f, " + %llu %s of unknown price", cnt(t, "embed_unpriced"),
                sc_plural(cnt(t, "embed_unpriced"), "embedding", "embeddings"));
    }
    fprintf(f, "\nnet saved             %s\n",
            usd(num(t, "usd_net"), a, sizeof(a)));
    double ros = num(t, "return_on_spend");
    if (isfinite(ros)) {
        fprintf(f, "return on spend       %.1fx\n", ros);
    } else {
        fprintf(f, "return on spend       -\n");
    }
    fprintf(f, "break-even hit rate   %s\n",
            pct(num(t, "break_even_hit_rate"), a, sizeof(a)));
    fprintf(f, "false hits reported   %llu, costing %s\n", cnt(t, "false_hits"),
            usd(num(t, "usd_false_hits"), a, sizeof(a)));
    fprintf(f, "cost per request      %s with the cache, %s per LLM call\n",
            usd(num(t, "usd_per_request"), a, sizeof(a)),
            usd(num(t, "usd_per_call"), b, sizeof(b)));
    const json_t *wo = json_object_get(t, "month_without");
    const json_t *wi = json_object_get(t, "month_with");
    fprintf(f, "monthly bill at the observed %.0f requests/day:\n",
            num(t, "lookups_per_day"));
    fprintf(f, "  traffic  without cache   with cache   saved\n");
    static const char *scale[3] = {"1x", "10x", "100x"};
    for (size_t i = 0; i < 3; i++) {
        double x = json_number_value(json_array_get(wo, i));
        double y = json_number_value(json_array_get(wi, i));
        if (!json_is_number(json_array_get(wo, i)) ||
            !json_is_number(json_array_get(wi, i))) {
            x = y = NAN;
        }
        fprintf(f, "  %-7s %15s %12s %7s\n", scale[i], usd(x, a, sizeof(a)),
                usd(y, b, sizeof(b)), usd(x - y, c, sizeof(c)));
    }
}

int sc_cli_print_report(const json_t *res, const char *ns, FILE *f)
{
    const json_t *total = json_object_get(res, "total");
    const json_t *rows = json_object_get(res, "rows");
    const char *by = json_string_value(json_object_get(res, "by"));
    if (!json_is_object(total) || !json_is_array(rows) || by == NULL) {
        return -1;
    }
    /* A reply without the date says so, not "(null)". */
    const char *date = json_string_value(json_object_get(res, "prices_date"));
    fprintf(f,
            "semcached cost report: %s (prices of %s, CPU at $%.3f/hour)\n\n",
            ns != NULL ? ns : "all namespaces",
            date != NULL ? date : "an unknown date", num(res, "cpu_hour"));
    print_totals(total, f);
    fprintf(f, "\nby %s:\n  %-24s %9s %9s %12s %12s %12s\n", by, by, "requests",
            "hit rate", "avoided", "spent", "net");
    size_t i;
    const json_t *r;
    json_array_foreach(rows, i, r)
    {
        char a[32], b[32], c[32], d[32], k[4 * SC_CACHE_TAG_MAX + 8];
        const char *key = json_string_value(json_object_get(r, "key"));
        fprintf(f, "  %-24s %9llu %9s %12s %12s %12s",
                key == NULL || key[0] == '\0' ? "(untagged)"
                                              : tag_text(key, k, sizeof(k)),
                cnt(r, "requests"), pct(num(r, "hit_rate"), a, sizeof(a)),
                usd(num(r, "usd_avoided"), b, sizeof(b)),
                usd(num(r, "usd_spent"), c, sizeof(c)),
                usd(num(r, "usd_net"), d, sizeof(d)));
        if (json_is_true(json_object_get(r, "over_target"))) {
            fprintf(f, "  OVER TARGET: %s per request > %s",
                    usd(num(r, "usd_per_request"), a, sizeof(a)),
                    usd(num(r, "target_usd_per_request"), b, sizeof(b)));
        }
        fputc('\n', f);
    }
    /* A page of the rows: how many were left out, and how to go on. */
    const char *next = json_string_value(json_object_get(res, "next"));
    if (cnt(res, "more") > 0 && next != NULL) {
        fprintf(f,
                "  ... %llu more %s after these: the next page with "
                "--after ",
                cnt(res, "more"), sc_plural(cnt(res, "more"), "row", "rows"));
        put_shell_word(f, next);
        fputc('\n', f);
    }
    return 0;
}

int sc_cli_report_svg(const json_t *res, const json_t *stats, const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        return -1;
    }
    const double W = 720, H = 300, L = 90, R = 30, T = 40, B = 40;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
            "height=\"%.0f\" font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            W, 2 * H);
    /* Panel 1: cumulative dollars avoided and spent, hour by hour. */
    const json_t *tl = json_object_get(res, "timeline");
    size_t n = json_array_size(tl);
    double avoided = 0, spent = 0, top = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *h = json_array_get(tl, i);
        avoided += json_number_value(json_array_get(h, 3));
        spent += json_number_value(json_array_get(h, 4));
    }
    top = fmax(fmax(avoided, spent), 1e-9);
    fprintf(f,
            "<text x=\"%.0f\" y=\"24\" font-size=\"15\">Dollars avoided "
            "(green) and spent (red), cumulative, by hour</text>\n",
            L);
    fprintf(f,
            "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">$%.4g</text>"
            "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">$0</text>\n",
            L - 6, T + 4, top, L - 6, H - B);
    const char *colour[2] = {"#2ca02c", "#d62728"};
    for (int s = 0; s < 2; s++) {
        double acc = 0;
        fprintf(f,
                "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" "
                "points=\"%.1f,%.1f ",
                colour[s], L, H - B);
        for (size_t i = 0; i < n; i++) {
            const json_t *h = json_array_get(tl, i);
            acc += json_number_value(json_array_get(h, s == 0 ? 3 : 4));
            double x = L + (double)(i + 1) / (double)(n ? n : 1) * (W - L - R);
            double y = H - B - acc / top * (H - T - B);
            fprintf(f, "%.1f,%.1f ", x, y);
        }
        fprintf(f, "\"/>\n");
    }
    fprintf(f,
            "<text x=\"%.0f\" y=\"%.0f\">%zu %s; avoided $%.4g, spent "
            "$%.4g</text>\n",
            L, H - 12, n, sc_plural(n, "hour", "hours"), avoided, spent);
    /* Panel 2: the best-similarity histogram of every lookup. */
    const json_t *hist = json_object_get(stats, "histogram");
    double mx = 1;
    size_t i;
    const json_t *bin;
    /* Bins are 0.01 wide below 0.8 and 0.001 above: bars show lookups
     * per unit of similarity, so that widths do not distort them. */
    json_array_foreach(hist, i, bin)
    {
        const json_t *lo = json_array_get(bin, 0);
        if (json_is_number(lo)) {
            double w = json_number_value(json_array_get(bin, 1)) -
                       json_number_value(lo);
            mx = fmax(mx, json_number_value(json_array_get(bin, 2)) /
                              fmax(w, 1e-6));
        }
    }
    double y0 = H;
    fprintf(f,
            "<text x=\"%.0f\" y=\"%.0f\" font-size=\"15\">Best similarity "
            "of each lookup (hits and misses), per unit of similarity"
            "</text>\n",
            L, y0 + 24);
    json_array_foreach(hist, i, bin)
    {
        const json_t *lo = json_array_get(bin, 0);
        if (!json_is_number(lo)) {
            continue; /* no candidate at all */
        }
        double a = fmax(json_number_value(lo), 0.0);
        double b = json_number_value(json_array_get(bin, 1));
        double c = json_number_value(json_array_get(bin, 2)) /
                   fmax(b - json_number_value(lo), 1e-6);
        double x0 = L + a * (W - L - R), x1 = L + b * (W - L - R);
        double h = c / mx * (H - T - B);
        fprintf(f,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                "fill=\"#1f77b4\"/>\n",
                x0, y0 + H - B - h, fmax(x1 - x0, 1.0), h);
    }
    for (int g = 0; g <= 10; g++) {
        fprintf(f,
                "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%.1f"
                "</text>\n",
                L + g / 10.0 * (W - L - R), y0 + H - B + 16, g / 10.0);
    }
    fprintf(f, "</svg>\n");
    return fclose(f) == 0 ? 0 : -1;
}
