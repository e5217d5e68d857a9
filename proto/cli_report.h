/* cli_report.h - semcache-cli's cost report: the "report" op's reply read
 * into a jansson tree, printed for people or drawn as SVG. */
#ifndef SC_CLI_REPORT_H
#define SC_CLI_REPORT_H

#include <jansson.h>
#include <stdio.h>

#include "proto/mp.h"

/* A msgpack value as a new jansson tree (the caller decrefs it); NULL on a
 * malformed value or one nested deeper than MP_MAX_DEPTH. bin becomes a
 * string of its bytes. */
json_t *sc_cli_mp_to_json(mp_reader *r, int depth);

/* Prints the report (the reply's result map) to f. ns names the scope of
 * the report (NULL = all). Returns 0, or -1 when res is not a report. */
int sc_cli_print_report(const json_t *res, const char *ns, FILE *f);

/* Writes an SVG of the report's timeline (cumulative dollars avoided and
 * spent) and of stats' best-similarity histogram to path. 0 or -1. */
int sc_cli_report_svg(const json_t *res, const json_t *stats, const char *path);

#endif
