/* bus.h - where an accepted frame goes: the upstream queue, the queues of
 * the workers subscribed to its type, every listen client.
 *
 * With an upstream, frames from workers and clients go upstream only (and
 * also locally with `echo: false`); frames from the bus go to local
 * subscribers and clients. In embedded mode hyphad is the bus: every frame
 * goes to every subscriber and every client.
 *
 * Sources read into the bus's read buffer (hy_bus_rbuf), a shared,
 * reference-counted buffer (rbuf.h): destination queues hold references to
 * the frames in it, not copies, so a frame fanned out to a hundred workers
 * is in memory once. Consecutive frames of one read from one source that go
 * to the same destinations are queued as one run (one queue operation per
 * destination, not one per frame). A pending run is queued before the next
 * buffer is handed out, before routes change, before its source goes away
 * and before the sinks are written: hy_bus_rbuf, hy_bus_subs_changed,
 * hy_bus_forget and the flush watcher are the only places that end it. A
 * buffer still referenced by a queue is never read into again: the next
 * read gets another (from the pool, rbuf.c).
 */
#ifndef HYPHA_BUS_H
#define HYPHA_BUS_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hypha/drops.h"
#include "hypha/rbuf.h"
#include "hypha/route.h"
#include "hypha/sink.h"

/* Who sent a frame: for tap, and for counting a frame the bus could not take. */
typedef struct hy_origin {
    const char *label;           /* "risk[0]", the upstream endpoint, a listen client */
    hy_drops *drops;
} hy_origin;

/* An observer of accepted frames (`hyphactl tap`). */
typedef void (*hy_tap_fn)(void *ud, const char *from, uint16_t type_id, const uint8_t *payload, uint32_t len);

typedef struct hy_bus_client {
    hy_sink *sink;
    struct hy_bus_client *next, *prev;
} hy_bus_client;

typedef struct hy_bus {
    struct ev_loop *loop;
    bool has_upstream;
    bool local_feed;             /* worker and client frames also go to local subscribers */
    hy_sink *up;                 /* the upstream queue (not owned); NULL in embedded mode */
    hy_sinks sinks;              /* every destination's dirty list */
    ev_prepare flush_w;
    hy_rbuf *cur;                /* the read buffer (one reference is the bus's) */
    hy_routes routes;
    hy_sub *subs;                /* subscribers, in instance order (not owned) */
    hy_sub *subs_tail;
    hy_bus_client *clients;      /* listen clients past their handshake (not owned) */
    /* the pending runs: upstream, and local */
    const uint8_t *run;
    size_t run_len, run_frames;
    const hy_origin *run_src;
    const uint8_t *lrun;
    size_t lrun_len, lrun_frames;
    const hy_route *lrun_route;
    uint16_t lrun_type;
    /* tap: one bit per type id; NULL when nobody taps (one pointer test per frame) */
    uint8_t *tap_bits;           /* not owned */
    hy_tap_fn tap_fn;
    void *tap_ud;
} hy_bus;

int hy_bus_init(hy_bus *b, struct ev_loop *loop, bool has_upstream, bool local_feed);
void hy_bus_start(hy_bus *b);
void hy_bus_free(hy_bus *b);

/* The read buffer, for one read(2); any pending run is queued first. NULL
 * when memory runs out (the source is read again at its next wakeup). */
uint8_t *hy_bus_rbuf(hy_bus *b, size_t *size);
/* One read(2) of fd (through tls, if not NULL) into the read buffer (EINTR
 * retried): the bytes read, 0 at EOF, or -1 with errno (EAGAIN: nothing now;
 * ENOMEM: no buffer, read again later). *buf and *cap say where they went. */
struct hy_tls;
ssize_t hy_bus_read(hy_bus *b, int fd, struct hy_tls *tls, uint8_t **buf, size_t *cap);
static inline bool hy_bus_in_rbuf(const hy_bus *b, const uint8_t *p)
{
    return b->cur && p >= b->cur->data && p < b->cur->data + b->cur->cap;
}

/* A checked frame (header and payload contiguous). `upward`: from a worker
 * or a client (goes upstream, and locally when local_feed); otherwise from
 * the bus (goes locally). */
void hy_bus_publish(hy_bus *b, const hy_origin *from, const uint8_t *frame, size_t len, uint16_t type_id,
                    bool upward);

/* Subscribers and clients come and go; routes are rebuilt at once. */
void hy_bus_add_sub(hy_bus *b, hy_sub *s);
void hy_bus_remove_sub(hy_bus *b, hy_sub *s);
void hy_bus_subs_changed(hy_bus *b);
void hy_bus_add_client(hy_bus *b, hy_bus_client *c);
void hy_bus_remove_client(hy_bus *b, hy_bus_client *c);
/* `o` is going away: its pending run is queued now. */
void hy_bus_forget(hy_bus *b, const hy_origin *o);

void hy_bus_set_tap(hy_bus *b, uint8_t *bits, hy_tap_fn fn, void *ud);

#endif
