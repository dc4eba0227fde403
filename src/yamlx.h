/* yamlx.h - checked access to a libyaml document (internal).
 *
 * Both loaders (contracts, topology) read a whole YAML document with libyaml's
 * loader and then walk it with these helpers, which turn every surprise into a
 * `file:line:col: message` error pointing at the offending node.
 */
#ifndef HYPHA_YAMLX_H
#define HYPHA_YAMLX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "hypha/err.h"

typedef struct hy_ydoc {
    const char *file;     /* name used in messages (not owned) */
    yaml_document_t doc;
    bool loaded;
    hy_err *err;
} hy_ydoc;

/* Parse data as one YAML document. An empty document is an error. */
int hy_ydoc_load(hy_ydoc *y, const char *file, const uint8_t *data, size_t len, hy_err *err);
void hy_ydoc_free(hy_ydoc *y);
yaml_node_t *hy_ydoc_root(hy_ydoc *y);
yaml_node_t *hy_ynode(hy_ydoc *y, int id);

/* Report an error at n; returns -1. */
int hy_yerr(hy_ydoc *y, const yaml_node_t *n, const char *fmt, ...) HY_PRINTF(3, 4);

/* A C identifier: a letter or '_', then letters, digits and '_' (field
 * names in contracts, environment variable names in topologies). */
bool hy_is_ident(const char *s);

static inline size_t hy_yline(const yaml_node_t *n) { return n->start_mark.line + 1; }
static inline size_t hy_ycol(const yaml_node_t *n) { return n->start_mark.column + 1; }

bool hy_yis_map(const yaml_node_t *n);
bool hy_yis_seq(const yaml_node_t *n);
bool hy_yis_scalar(const yaml_node_t *n);
/* A plain scalar `~`, `null` or empty. */
bool hy_yis_null(const yaml_node_t *n);
const char *hy_ykind(const yaml_node_t *n); /* "a mapping", "a list", ... */
const char *hy_ystr(const yaml_node_t *n);  /* scalar text */

/* Require n to be a mapping / list / scalar, naming `what` otherwise. */
int hy_yexpect_map(hy_ydoc *y, const yaml_node_t *n, const char *what);
int hy_yexpect_seq(hy_ydoc *y, const yaml_node_t *n, const char *what);
int hy_yexpect_scalar(hy_ydoc *y, const yaml_node_t *n, const char *what);

/* Check a mapping: scalar keys, no duplicates, and (when allowed != NULL)
 * only keys from the NULL-terminated list `allowed`. */
int hy_ymap_check(hy_ydoc *y, const yaml_node_t *map, const char *what,
                  const char *const *allowed);
/* Value node of `key` in a mapping, or NULL. */
yaml_node_t *hy_ymap_get(hy_ydoc *y, const yaml_node_t *map, const char *key);
/* The key node whose value is `value` (for positions), or NULL. */
yaml_node_t *hy_ymap_key_of(hy_ydoc *y, const yaml_node_t *map, const char *key);

/* "123" or "0x7b" (no sign, no spaces; a leading 0 is still decimal). */
int hy_parse_uint(const char *s, uint64_t *out);

/* Typed scalars. `what` names the setting in messages ("backoff.factor"). */
int hy_yget_uint(hy_ydoc *y, const yaml_node_t *n, const char *what,
                 uint64_t min, uint64_t max, uint64_t *out);
int hy_yget_double(hy_ydoc *y, const yaml_node_t *n, const char *what,
                   double min, double max, double *out);
int hy_yget_bool(hy_ydoc *y, const yaml_node_t *n, const char *what, bool *out);
int hy_yget_duration(hy_ydoc *y, const yaml_node_t *n, const char *what, uint64_t *out_ms);
int hy_yget_size(hy_ydoc *y, const yaml_node_t *n, const char *what, uint64_t *out);
/* A non-empty string scalar. */
int hy_yget_str(hy_ydoc *y, const yaml_node_t *n, const char *what, const char **out);

#endif
