/* reload.h - what a reload may change, decided without touching anything.
 *
 * A reload re-reads the topology and applies the difference to the running
 * workers (supervisor.c does that). These pure checks decide whether two
 * worker definitions are the same, and refuse a new topology that changes
 * what cannot change under a running hyphad: the schema, the upstream, the
 * listen endpoints, the control socket, the metrics endpoint and `cgroup`.
 * The reload plan says, from the same comparison, what becomes of each
 * running instance and which instances to make; supervisor.c carries it out.
 */
#ifndef HYPHA_RELOAD_H
#define HYPHA_RELOAD_H

#include <stdbool.h>
#include <stddef.h>

#include "hypha/err.h"
#include "hypha/topology.h"

/* Same in every respect that matters to a running instance (where it is
 * defined in the file does not matter). */
bool hy_worker_spec_equal(const hy_worker_spec *a, const hy_worker_spec *b);

/* 0 if `next` may replace `cur`; else -1 and a sentence naming the first
 * setting that would need a restart of hyphad. */
int hy_reload_check(const hy_topology *cur, const hy_topology *next, hy_err *err);

/* ---- the reload plan: what a reload does to the running instances ---- */

/* One running instance as the plan sees it. */
typedef struct hy_reload_inst {
    const hy_worker_spec *spec;  /* the spec it runs: in `old`, or in an older topology when retiring */
    unsigned index;
    bool retiring;               /* already retiring from an earlier reload: left alone */
    bool operator_stopped;       /* stopped by an operator (state stopped, started at least once,
                                    not waiting to start): a changed definition leaves the new
                                    instance stopped too, as systemd leaves a stopped unit stopped */
    bool idle;                   /* stopped with nothing to come (never started, or by an operator; not
                                    pending, not waiting): an autostart: false worker's changed
                                    definition leaves it so; otherwise its new instance starts */
} hy_reload_inst;

typedef enum hy_reload_action {
    HY_RELOAD_LEAVE,             /* retiring already, or not of `old`: untouched */
    HY_RELOAD_KEEP,              /* same definition: the same process goes on, rebound to new_spec */
    HY_RELOAD_RETIRE,            /* removed or changed: stopped, then freed */
} hy_reload_action;

typedef struct hy_reload_fresh {
    const hy_worker_spec *spec;  /* in `next` */
    unsigned index;
    bool start;                  /* false: stays stopped (its predecessor was stopped by an operator) */
} hy_reload_fresh;

typedef struct hy_reload_plan {
    hy_reload_action *action;    /* one per current instance, in their order (owned) */
    const hy_worker_spec **new_spec; /* KEEP: the spec in `next`; else NULL (owned array) */
    hy_reload_fresh *fresh;      /* instances of new and changed workers, in `next`'s order (owned) */
    size_t nfresh;
    /* Worker names, for the reply and the log: stopped point into `old`, the
     * others into `next`. */
    const char **started, **stopped, **restarted, **unchanged; /* owned arrays */
    size_t nstarted, nstopped, nrestarted, nunchanged;
} hy_reload_plan;

/* The difference between `old` and `next` applied to `cur` (ncur instances):
 * workers only in next are started, workers only in old stopped, workers whose
 * definition differs (hy_worker_spec_equal) restarted (old instances retired,
 * new ones made), the others unchanged (kept). Pure: reads, allocates the plan,
 * changes nothing. 0, or -1 with err (out of memory) and *plan empty. */
int hy_reload_plan_make(const hy_topology *old, const hy_topology *next, const hy_reload_inst *cur, size_t ncur,
                        hy_reload_plan *plan, hy_err *err);
void hy_reload_plan_free(hy_reload_plan *plan);

#endif
