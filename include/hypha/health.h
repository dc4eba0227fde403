/* health.h - one word and one line for "is hypha all right?".
 *
 * The rules (docs/control.md): unhealthy when a worker failed (gave up), one
 * exited with a failure and will not be restarted, or the upstream has been
 * down longer than reconnect.max; degraded when a worker is starting, in
 * backoff or stopping, an instance dropped more than HY_HEALTH_DROP_PCT % of
 * the frames meant for it in the last minute (and at least
 * HY_HEALTH_DROP_MIN of them), a TLS certificate ends within 7 days, or the
 * upstream is down for less; healthy otherwise.
 * Operator-stopped workers and clean exits that were not to be restarted
 * count for nothing. The reason names the first instance or link at fault.
 */
#ifndef HYPHA_HEALTH_H
#define HYPHA_HEALTH_H

#include <stddef.h>

#include "hypha/view.h"

#define HY_HEALTH_DROP_PCT 10  /* share of an instance's frames dropped in the last minute... */
#define HY_HEALTH_DROP_MIN 100 /* ... and at least this many: a few drops of a trickle are no fault */

typedef enum hy_health { HY_HEALTHY = 0, HY_DEGRADED = 1, HY_UNHEALTHY = 2 } hy_health;

const char *hy_health_str(hy_health h);
/* Evaluates a snapshot of every instance; writes one line into reason. */
hy_health hy_health_eval(const hy_snapshot *s, char *reason, size_t len);

/* An instance's last exit for people, the one wording health, status and
 * hyphactl share: "exit status 3", "signal SEGV", "heartbeat (signal KILL)",
 * "spawn failed: No such file or directory". Returns out. */
const char *hy_exit_text(const hy_inst_view *in, char *out, size_t len);

#endif
