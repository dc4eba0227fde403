/* topology_int.h - what the topology loader's files share (internal).
 *
 * topology.c reads the document's root and top level (endpoints, upstream,
 * listen, control, metrics) and hands `defaults` and `workers` to
 * topology_worker.c; the calls go that way only. What both need - the
 * loader's state and a few small helpers - is here, static inline.
 */
#ifndef HYPHA_TOPOLOGY_INT_H
#define HYPHA_TOPOLOGY_INT_H

#include <stdint.h>
#include <stdio.h>

#include "fsutil.h"
#include "hypha/schema.h"
#include "hypha/tlv.h"
#include "hypha/topology.h"
#include "yamlx.h"

typedef struct loader {
    hy_ydoc y;
    hy_topology *t;
    char what[192]; /* scratch for qual() */
} loader;

/* "workers.risk." + "backoff.max": the setting's full name for messages.
 * Returns L->what, so use one per expression. */
static inline const char *qual(loader *L, const char *ctx, const char *key)
{
    snprintf(L->what, sizeof L->what, "%s%s", ctx, key);
    return L->what;
}

static inline int oom(loader *L, const yaml_node_t *n)
{
    return hy_yerr(&L->y, n, "out of memory");
}

/* A path scalar resolved against the topology's directory (malloc'd). */
static inline int get_path(loader *L, const yaml_node_t *n, const char *what, char **out)
{
    const char *s;
    if (hy_yget_str(&L->y, n, what, &s) < 0)
        return -1;
    if (!*s)
        return hy_yerr(&L->y, n, "%s must not be empty", what);
    if (!(*out = hy_path_join(L->t->dir, s)))
        return oom(L, n);
    return 0;
}

/* The largest message of the contracts with its frame header: no buffer or
 * queue may be smaller. */
static inline uint32_t largest_frame(const hy_schema *s)
{
    uint32_t max = 0;
    for (size_t i = 0; i < s->nmsgs; i++)
        if (s->msgs[i].size > max)
            max = s->msgs[i].size;
    return max + HY_TLV_HEADER;
}

/* ---- topology_worker.c -------------------------------------------------- */

/* `defaults` merged into the built-in policy in L->t->defaults; n may be NULL
 * (no `defaults:`): the built-ins are checked all the same. */
/* A `tls:` mapping (topology_tls.c); ctx is "upstream.tls." or "listen.tls.". */
int hy_parse_tls(loader *L, const yaml_node_t *m, const char *ctx, bool server, hy_tls_spec **out);
int hy_topo_parse_defaults(loader *L, const yaml_node_t *n, const yaml_node_t *root);
/* The `workers` mapping into L->t->workers, each with the defaults merged. */
int hy_topo_parse_workers(loader *L, const yaml_node_t *n);

/* ---- topology_proc.c ---------------------------------------------------- */

/* A worker's user, group, umask and rlimits into w->proc. */
int hy_topo_parse_proc(loader *L, const yaml_node_t *val, hy_worker_spec *w, const char *ctx);
void hy_worker_proc_free(hy_worker_proc *p);

/* ---- topology_env.c ------------------------------------------------------ */

/* `s` (the text of n) with ${VAR}, ${VAR:-default} and $$ expanded from
 * hyphad's environment, malloc'd into *out; an undefined variable is an
 * error at n naming `what` and the fix. */
int hy_topo_expand(loader *L, const yaml_node_t *n, const char *what, const char *s, char **out);
/* `env_file` (a path or a list) read and merged under w->env (already
 * parsed from `env`, which wins); w->env_files set. No `env_file`: nothing. */
int hy_topo_parse_env_files(loader *L, const yaml_node_t *val, hy_worker_spec *w, const char *ctx);
/* `autostart` and `after` (names only; hy_topo_check_after checks them). */
int hy_topo_parse_start(loader *L, const yaml_node_t *val, hy_worker_spec *w, const char *ctx);
/* Every `after` name is a worker, and no cycle: once all workers are parsed. */
int hy_topo_check_after(loader *L, const yaml_node_t *workers);

#endif
