/* metrics.h - Prometheus text exposition (format 0.0.4) of hyphad's state,
 * for `hyphactl metrics` and the HTTP endpoint (httpd.h).
 *
 * Rendered on demand from a snapshot: nothing is updated for metrics on the
 * hot path. Metric names are in docs/control.md.
 */
#ifndef HYPHA_METRICS_H
#define HYPHA_METRICS_H

#include <stddef.h>

#include "hypha/view.h"

/* The exposition text (malloc'd, NUL-terminated; *len without the NUL), or
 * NULL when memory runs out. */
char *hy_metrics_render(const hy_snapshot *s, size_t *len);
/* The same from a fresh snapshot of the whole supervisor at `now`. */
struct hy_sup;
char *hy_metrics_text(const struct hy_sup *s, double now, size_t *len);

#endif
