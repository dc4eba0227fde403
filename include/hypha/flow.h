/* flow.h - back-pressure in one place: who may be read now.
 *
 * A source is anything hyphad reads frames from: a worker's stdout, the
 * upstream bus, a listen client. flow.c is the only code that starts or
 * stops their read watchers, from two facts:
 *  - the upstream queue is over `upstream.buffer` (bus slow or down):
 *    workers and clients, whose frames go upstream, are not read;
 *  - some worker queue is over its `queue.limit` under `block`: the sources
 *    that feed workers are not read (the upstream; and in embedded mode or
 *    with `echo: false`, the other workers and the clients).
 * A source marked `always` is read whatever the pressure: a worker over its
 * own limit (a transform publishes while handling its input, and pausing it
 * would deadlock; docs/routing.md) and a client still in its handshake.
 */
#ifndef HYPHA_FLOW_H
#define HYPHA_FLOW_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum hy_src_kind { HY_SRC_WORKER, HY_SRC_UPSTREAM, HY_SRC_CLIENT } hy_src_kind;

typedef struct hy_source {
    ev_io *w;                    /* its read watcher (the owner's; fd set by it) */
    hy_src_kind kind;
    bool open;                   /* it has an fd to read */
    bool always;                 /* read whatever the pressure */
    bool paused;                 /* open, but held back by the pressure */
    double paused_at;            /* ev_now() when it was last held back */
    double paused_s;             /* seconds held back before that, in all */
    /* Bytes of it already read and waiting inside hyphad (decrypted TLS):
     * when it may be read again, it is, without waiting for its fd. NULL: none. */
    bool (*buffered)(const struct hy_source *s);
    struct hy_source *next, *prev;
} hy_source;

typedef struct hy_flow {
    struct ev_loop *loop;
    bool local_feed;             /* worker and client frames also reach workers */
    bool up_full;                /* the upstream queue is over upstream.buffer */
    int blocked;                 /* worker queues over their limit under `block` */
    hy_source *sources;          /* not owned */
} hy_flow;

void hy_flow_init(hy_flow *f, struct ev_loop *loop, bool local_feed);
void hy_flow_add(hy_flow *f, hy_source *s, ev_io *w, hy_src_kind kind);
void hy_flow_remove(hy_flow *f, hy_source *s);
/* The source got (open) or lost its fd: its watcher is started if it may be read. */
void hy_flow_open(hy_flow *f, hy_source *s, bool open);
void hy_flow_set_always(hy_flow *f, hy_source *s, bool always);
bool hy_flow_may_read(const hy_flow *f, const hy_source *s);
/* Seconds this source has been held back by the pressure so far, in all
 * (a worker's heartbeat deadline does not run meanwhile: back-pressure is
 * not a fault). */
double hy_flow_paused_s(const hy_flow *f, const hy_source *s);
/* A worker queue went over (+1) or back under (-1) its limit under `block`. */
void hy_flow_block(hy_flow *f, bool over);
/* The upstream queue went over or back under upstream.buffer. */
void hy_flow_up_full(hy_flow *f, bool full);

#endif
