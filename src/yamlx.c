/* yamlx.c - checked access to a libyaml document (see yamlx.h). */
#include "yamlx.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hypha/units.h"

int hy_ydoc_load(hy_ydoc *y, const char *file, const uint8_t *data, size_t len, hy_err *err)
{
    memset(y, 0, sizeof *y);
    y->file = file;
    y->err = err;
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return hy_err_set(err, "%s: out of memory initialising the YAML parser", file);
    yaml_parser_set_input_string(&parser, data, len);
    if (!yaml_parser_load(&parser, &y->doc)) {
        const char *problem = parser.problem ? parser.problem : "invalid YAML";
        yaml_mark_t m = parser.problem_mark;
        if (parser.context)
            hy_err_at(err, file, m.line + 1, m.column + 1, "YAML syntax error: %s %s",
                      problem, parser.context);
        else
            hy_err_at(err, file, m.line + 1, m.column + 1, "YAML syntax error: %s", problem);
        yaml_parser_delete(&parser);
        return -1;
    }
    y->loaded = true;
    if (!yaml_document_get_root_node(&y->doc)) {
        yaml_parser_delete(&parser);
        return hy_err_at(err, file, 1, 1, "file is empty");
    }
    /* A second document would be silently ignored: refuse it. */
    yaml_document_t extra;
    if (!yaml_parser_load(&parser, &extra)) {
        yaml_mark_t m = parser.problem_mark;
        hy_err_at(err, file, m.line + 1, m.column + 1, "YAML syntax error: %s",
                  parser.problem ? parser.problem : "invalid YAML");
        yaml_parser_delete(&parser);
        return -1;
    }
    yaml_node_t *second = yaml_document_get_root_node(&extra);
    if (second) {
        hy_err_at(err, file, second->start_mark.line + 1, second->start_mark.column + 1,
                  "a second YAML document: this file must hold exactly one");
        yaml_document_delete(&extra);
        yaml_parser_delete(&parser);
        return -1;
    }
    yaml_document_delete(&extra);
    yaml_parser_delete(&parser);
    return 0;
}

void hy_ydoc_free(hy_ydoc *y)
{
    if (y->loaded)
        yaml_document_delete(&y->doc);
    y->loaded = false;
}

yaml_node_t *hy_ydoc_root(hy_ydoc *y) { return yaml_document_get_root_node(&y->doc); }
yaml_node_t *hy_ynode(hy_ydoc *y, int id) { return yaml_document_get_node(&y->doc, id); }

int hy_yerr(hy_ydoc *y, const yaml_node_t *n, const char *fmt, ...)
{
    char msg[HY_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t line = n ? hy_yline(n) : 1, col = n ? hy_ycol(n) : 1;
    return hy_err_at(y->err, y->file, line, col, "%s", msg);
}

bool hy_yis_map(const yaml_node_t *n) { return n && n->type == YAML_MAPPING_NODE; }
bool hy_yis_seq(const yaml_node_t *n) { return n && n->type == YAML_SEQUENCE_NODE; }
bool hy_yis_scalar(const yaml_node_t *n) { return n && n->type == YAML_SCALAR_NODE; }

bool hy_yis_null(const yaml_node_t *n)
{
    if (!hy_yis_scalar(n) || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = hy_ystr(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
           !strcmp(s, "NULL");
}

const char *hy_ykind(const yaml_node_t *n)
{
    if (!n)
        return "nothing";
    switch (n->type) {
    case YAML_MAPPING_NODE: return "a mapping";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_SCALAR_NODE: return hy_yis_null(n) ? "null" : "a scalar";
    default: return "nothing";
    }
}

const char *hy_ystr(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

int hy_yexpect_map(hy_ydoc *y, const yaml_node_t *n, const char *what)
{
    if (hy_yis_map(n))
        return 0;
    return hy_yerr(y, n, "%s must be a mapping, not %s", what, hy_ykind(n));
}

int hy_yexpect_seq(hy_ydoc *y, const yaml_node_t *n, const char *what)
{
    if (hy_yis_seq(n))
        return 0;
    return hy_yerr(y, n, "%s must be a list, not %s", what, hy_ykind(n));
}

int hy_yexpect_scalar(hy_ydoc *y, const yaml_node_t *n, const char *what)
{
    if (hy_yis_scalar(n) && !hy_yis_null(n)) {
        if (strlen(hy_ystr(n)) != n->data.scalar.length)
            return hy_yerr(y, n, "%s contains a NUL character", what);
        return 0;
    }
    return hy_yerr(y, n, "%s must be a value, not %s", what, hy_ykind(n));
}

/* Levenshtein distance, capped: only used to suggest a close key. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 99;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = prev + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}

int hy_ymap_check(hy_ydoc *y, const yaml_node_t *map, const char *what,
                  const char *const *allowed)
{
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = hy_ynode(y, p->key);
        if (!hy_yis_scalar(k))
            return hy_yerr(y, k, "keys in %s must be plain names, not %s", what, hy_ykind(k));
        const char *ks = hy_ystr(k);
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
            yaml_node_t *k2 = hy_ynode(y, q->key);
            if (hy_yis_scalar(k2) && strcmp(hy_ystr(k2), ks) == 0)
                return hy_yerr(y, k, "duplicate key '%s' in %s (first at line %zu)", ks,
                               what, hy_yline(k2));
        }
        if (!allowed)
            continue;
        bool ok = false;
        const char *best = NULL;
        size_t best_d = 3;
        for (const char *const *a = allowed; *a; a++) {
            if (strcmp(*a, ks) == 0) {
                ok = true;
                break;
            }
            size_t d = edit_distance(*a, ks);
            if (d < best_d) {
                best_d = d;
                best = *a;
            }
        }
        if (ok)
            continue;
        char list[512];
        size_t n = 0;
        list[0] = '\0';
        for (const char *const *a = allowed; *a && n < sizeof list; a++) {
            int w = snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "", *a);
            if (w < 0)
                break;
            n += (size_t)w;
        }
        if (best)
            return hy_yerr(y, k, "unknown key '%s' in %s (did you mean '%s'?)", ks, what, best);
        return hy_yerr(y, k, "unknown key '%s' in %s (expected one of: %s)", ks, what, list);
    }
    return 0;
}

yaml_node_t *hy_ymap_key_of(hy_ydoc *y, const yaml_node_t *map, const char *key)
{
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = hy_ynode(y, p->key);
        if (hy_yis_scalar(k) && strcmp(hy_ystr(k), key) == 0)
            return k;
    }
    return NULL;
}

yaml_node_t *hy_ymap_get(hy_ydoc *y, const yaml_node_t *map, const char *key)
{
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = hy_ynode(y, p->key);
        if (hy_yis_scalar(k) && strcmp(hy_ystr(k), key) == 0)
            return hy_ynode(y, p->value);
    }
    return NULL;
}

int hy_parse_uint(const char *s, uint64_t *out)
{
    /* Decimal, or hex with 0x; a leading zero does not mean octal. Digits
     * only: no sign, no spaces (strtoull would skip or accept them). */
    bool hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
    const char *d = hex ? s + 2 : s;
    if (!(hex ? isxdigit((unsigned char)*d) : isdigit((unsigned char)*d)))
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(d, &end, hex ? 16 : 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

int hy_yget_uint(hy_ydoc *y, const yaml_node_t *n, const char *what,
                 uint64_t min, uint64_t max, uint64_t *out)
{
    if (hy_yexpect_scalar(y, n, what) < 0)
        return -1;
    const char *s = hy_ystr(n);
    uint64_t v;
    if (hy_parse_uint(s, &v) < 0)
        return hy_yerr(y, n, "%s must be a whole number from %llu to %llu, not '%s'", what,
                       (unsigned long long)min, (unsigned long long)max, s);
    if (v < min || v > max)
        return hy_yerr(y, n, "%s must be from %llu to %llu, not %llu", what,
                       (unsigned long long)min, (unsigned long long)max, (unsigned long long)v);
    *out = v;
    return 0;
}

int hy_yget_double(hy_ydoc *y, const yaml_node_t *n, const char *what,
                   double min, double max, double *out)
{
    if (hy_yexpect_scalar(y, n, what) < 0)
        return -1;
    const char *s = hy_ystr(n);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || *s == ' ')
        return hy_yerr(y, n, "%s must be a number, not '%s'", what, s);
    if (v < min || v > max)
        return hy_yerr(y, n, "%s must be from %g to %g, not %s", what, min, max, s);
    *out = v;
    return 0;
}

int hy_yget_bool(hy_ydoc *y, const yaml_node_t *n, const char *what, bool *out)
{
    if (hy_yexpect_scalar(y, n, what) < 0)
        return -1;
    const char *s = hy_ystr(n);
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE") || !strcmp(s, "yes") ||
        !strcmp(s, "on")) {
        *out = true;
        return 0;
    }
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE") || !strcmp(s, "no") ||
        !strcmp(s, "off")) {
        *out = false;
        return 0;
    }
    return hy_yerr(y, n, "%s must be true or false, not '%s'", what, s);
}

int hy_yget_duration(hy_ydoc *y, const yaml_node_t *n, const char *what, uint64_t *out_ms)
{
    if (hy_yexpect_scalar(y, n, what) < 0)
        return -1;
    char why[160];
    if (hy_parse_duration_ms(hy_ystr(n), out_ms, why, sizeof why) < 0)
        return hy_yerr(y, n, "%s: bad duration '%s': %s", what, hy_ystr(n), why);
    return 0;
}

int hy_yget_size(hy_ydoc *y, const yaml_node_t *n, const char *what, uint64_t *out)
{
    if (hy_yexpect_scalar(y, n, what) < 0)
        return -1;
    char why[160];
    if (hy_parse_size(hy_ystr(n), out, why, sizeof why) < 0)
        return hy_yerr(y, n, "%s: bad size '%s': %s", what, hy_ystr(n), why);
    return 0;
}

int hy_yget_str(hy_ydoc *y, const yaml_node_t *n, const char *what, const char **out)
{
    if (hy_yexpect_scalar(y, n, what) < 0)
        return -1;
    *out = hy_ystr(n);
    return 0;
}

bool hy_is_ident(const char *s)
{
    if (!(isalpha((unsigned char)*s) || *s == '_'))
        return false;
    for (s++; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_'))
            return false;
    return true;
}
