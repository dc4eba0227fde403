/* relay.h - the data plane put together: back-pressure (flow.c), fan-out
 * (bus.c), the upstream connection (upstream.c) and the listen endpoints
 * (listen.c). The supervisor owns one; its workers are sources and sinks
 * of the same bus.
 */
#ifndef HYPHA_RELAY_H
#define HYPHA_RELAY_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

#include "hypha/bus.h"
#include "hypha/err.h"
#include "hypha/flow.h"
#include "hypha/listen.h"
#include "hypha/topology.h"
#include "hypha/upstream.h"
#include "hypha/view.h"

typedef struct hy_relay {
    const hy_topology *topo;     /* not owned */
    hy_flow flow;
    hy_bus bus;
    hy_upstream up;              /* used when topo->has_upstream */
    hy_listen listen;
} hy_relay;

/* Binds the listen endpoints (an error if one cannot be served) and prepares
 * the upstream client; nothing connects until hy_relay_start. */
int hy_relay_init(hy_relay *r, struct ev_loop *loop, const hy_topology *t, uint64_t *rng, hy_err *err);
int hy_relay_start(hy_relay *r, hy_err *err);
void hy_relay_free(hy_relay *r);
/* The topology was replaced by a reload (same schema and endpoints). */
void hy_relay_retopo(hy_relay *r, const hy_topology *t);

/* Upstream bytes still queued (for a graceful exit). */
size_t hy_relay_upstream_pending(const hy_relay *r);
bool hy_relay_upstream_connected(const hy_relay *r);
/* One log line each for the upstream and the listen endpoints. */
void hy_relay_log_counters(const hy_relay *r);
/* The links' part of a snapshot: up, and one entry per listen endpoint
 * (listen must have room for topo->nlisten). */
/* -1 when out of memory. */
int hy_relay_view(const hy_relay *r, double now, hy_up_view *up, hy_listen_view *listen);

#endif
