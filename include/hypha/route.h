/* route.h - which frames are accepted, and who receives them.
 *
 * The checks: a frame from a worker must be of a known type, exactly its
 * size, and in the worker's `publish` list; a frame from the bus or a
 * listen client must be of a known type (never a control frame) and exactly
 * its size. A frame that fails is counted against its source.
 *
 * The table: for each type id, the worker stdin sinks subscribed to it (the
 * topology's `subscribe` plus what the worker asked for at run time),
 * rebuilt whenever a subscription changes. Pure: no I/O.
 */
#ifndef HYPHA_ROUTE_H
#define HYPHA_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hypha/drops.h"
#include "hypha/schema.h"
#include "hypha/tlv.h"
#include "hypha/topology.h"

struct hy_sink;

/* One subscriber: a worker instance's stdin and what it subscribes to. */
typedef struct hy_sub {
    struct hy_sink *sink;
    const uint16_t *fixed;       /* the topology's `subscribe` (not owned) */
    size_t nfixed;
    uint16_t *ids;               /* subscribed at run time: hello, subscribe (owned, sorted, unique) */
    size_t nids;
    struct hy_sub *next, *prev;
} hy_sub;

typedef struct hy_route {
    uint16_t type_id;
    struct hy_sink **sinks;      /* subscribers (owned array) */
    size_t n;
} hy_route;

typedef struct hy_routes {
    hy_route *r;                 /* sorted by type id (owned) */
    size_t n;
} hy_routes;

/* From every subscriber in the list. -1 on ENOMEM (the table is then empty). */
int hy_routes_build(hy_routes *t, const hy_sub *subs);
const hy_route *hy_routes_find(const hy_routes *t, uint16_t type_id);
void hy_routes_free(hy_routes *t);

/* Add (hello, subscribe) or remove (unsubscribe) sorted unique ids. -1 on ENOMEM. */
int hy_sub_change(hy_sub *s, const uint16_t *ids, size_t n, bool add);
void hy_sub_clear(hy_sub *s);

/* A one-entry cache of the outbound checks: a worker writes runs of one type. */
typedef struct hy_pubcheck {
    uint16_t type;
    const hy_message *msg;       /* NULL: empty */
    bool allowed;
} hy_pubcheck;

/* A worker's frame: true if it may go on; else counted in d. */
bool hy_route_check_out(hy_pubcheck *c, const hy_schema *schema, const hy_worker_spec *w, const hy_frame *f,
                        hy_drops *d);
/* A frame from the bus or a listen client. */
bool hy_route_check_in(const hy_schema *schema, const hy_frame *f, hy_drops *d);

/* Binary search in a sorted array of type ids. */
bool hy_ids_have(const uint16_t *ids, size_t n, uint16_t id);
/* Sort ids in place and drop repeats; returns how many are left. */
size_t hy_ids_sort_unique(uint16_t *ids, size_t n);

#endif
