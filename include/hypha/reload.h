/* reload.h - what a reload may change, decided without touching anything.
 *
 * A reload re-reads the topology and applies the difference to the running
 * workers (supervisor.c does that). These pure checks decide whether two
 * worker definitions are the same, and refuse a new topology that changes
 * what cannot change under a running hyphad: the schema, the upstream, the
 * listen endpoints, the control socket and the metrics endpoint.
 */
#ifndef HYPHA_RELOAD_H
#define HYPHA_RELOAD_H

#include <stdbool.h>

#include "hypha/err.h"
#include "hypha/topology.h"

/* Same in every respect that matters to a running instance (where it is
 * defined in the file does not matter). */
bool hy_worker_spec_equal(const hy_worker_spec *a, const hy_worker_spec *b);

/* 0 if `next` may replace `cur`; else -1 and a sentence naming the first
 * setting that would need a restart of hyphad. */
int hy_reload_check(const hy_topology *cur, const hy_topology *next, hy_err *err);

#endif
