/* status.h - what `hyphactl status` shows, as JSON (the reply's body).
 *
 * Built from the supervisor and relay state on demand; nothing is kept up to
 * date for it, so an idle control plane costs the relay nothing.
 */
#ifndef HYPHA_STATUS_H
#define HYPHA_STATUS_H

#include <jansson.h>

#include "hypha/supervisor.h"

/* One instance: state, pid, uptime, restarts, last exit, counters, queue. */
json_t *hy_status_instance(const hy_instance *in, double now);
/* The whole reply: hyphad, upstream, listen, workers (all, or `sel`). */
json_t *hy_status_json(const hy_sup *s, double now, hy_instance *const *sel, size_t nsel);
/* The same for people (`{"cmd":"status","table":true}`): "workers" is
 * replaced by "rows" (a header row, then one row of text per instance) and
 * "notes" (drops by reason, for instances with drops). */
json_t *hy_status_table(const hy_sup *s, double now, hy_instance *const *sel, size_t nsel);
/* "exit", "heartbeat", ... and how: {"reason","code","signal","ago_s"} or null. */
json_t *hy_status_last_exit(const hy_instance *in, double now);

#endif
