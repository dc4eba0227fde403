/* metrics.h - Prometheus text exposition (format 0.0.4) of hyphad's state,
 * for `hyphactl metrics` and the optional HTTP endpoint
 * (`metrics: {listen: HOST:PORT}`).
 *
 * Rendered on demand from the supervisor and relay counters: nothing is
 * updated for metrics on the hot path. Metric names are in docs/control.md.
 */
#ifndef HYPHA_METRICS_H
#define HYPHA_METRICS_H

#include <ev.h>
#include <stddef.h>

#include "hypha/err.h"

struct hy_sup;

/* The exposition text (malloc'd, NUL-terminated; *len without the NUL), or
 * NULL when memory runs out. */
char *hy_metrics_render(const struct hy_sup *s, double now, size_t *len);

/* The HTTP endpoint: a listening TCP socket; each connection gets one answer
 * and is closed. Requests are read up to 8 KiB and 5 s. */
typedef struct hy_metrics_http {
    struct hy_sup *sup;
    struct ev_loop *loop;
    int fd;
    ev_io w;
    ev_timer pause;              /* accept paused after EMFILE */
    struct hy_http_conn *conns;  /* owned list */
    size_t nconns;
    char name[96];
} hy_metrics_http;

int hy_metrics_http_start(hy_metrics_http *h, struct hy_sup *s, hy_err *err);
void hy_metrics_http_stop(hy_metrics_http *h);

#endif
