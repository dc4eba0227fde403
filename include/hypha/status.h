/* status.h - what `hyphactl status` shows, as JSON (the reply's body).
 *
 * Built from a snapshot (hypha/view.h) on demand; nothing is kept up to
 * date for it, so an idle control plane costs the relay nothing.
 */
#ifndef HYPHA_STATUS_H
#define HYPHA_STATUS_H

#include <jansson.h>

#include "hypha/schema.h"
#include "hypha/view.h"

/* One instance: state, pid, uptime, restarts, last exit, counters, queue. */
json_t *hy_status_instance(const hy_inst_view *in, const hy_schema *schema);
/* The whole reply: hyphad, upstream, listen, and the snapshot's workers. */
json_t *hy_status_json(const hy_snapshot *s);
/* The same for people (`{"cmd":"status","table":true}`): "workers" is
 * replaced by "rows" (a header row, then one row of text per instance) and
 * "notes" (drops by reason, for instances with drops). */
json_t *hy_status_table(const hy_snapshot *s);
/* "exit", "heartbeat", ... and how: {"reason","code","signal","ago_s"} or null. */
json_t *hy_status_last_exit(const hy_inst_view *in);

#endif
