/* sink.h - where frames wait to be written: a worker's stdin, the upstream
 * bus, a listen client. One queue (hy_fanq) per destination, its overflow
 * rule, and one flush per loop iteration.
 *
 * Frames are pushed while a read is processed; a pushed sink goes on its
 * set's dirty list and is written once, from bus.c's ev_prepare, so a burst
 * of frames costs one write per destination, not one per frame. What a sink
 * does when it cannot take more depends on its role:
 *  - worker: `queue.overflow` (drop-oldest, drop-newest: counted; block:
 *    queued past the limit and flow.c pauses the sources that feed workers);
 *  - upstream: never drops; past `upstream.buffer` flow.c pauses the
 *    workers and clients;
 *  - client: one that cannot keep up is failed (on_error) and dropped.
 * A worker sink without an fd drops frames as not-running, unless it is
 * held (`hold`: its instance is restarting, queue.hold), when they wait in
 * its queue for the next process; an upstream sink without one holds them
 * until the bus is back.
 */
#ifndef HYPHA_SINK_H
#define HYPHA_SINK_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hypha/drops.h"
#include "hypha/flow.h"
#include "hypha/fanq.h"
#include "hypha/rbuf.h"
#include "hypha/topology.h"

typedef enum hy_sink_role { HY_SINK_WORKER, HY_SINK_UPSTREAM, HY_SINK_CLIENT } hy_sink_role;

struct hy_sinks;

typedef struct hy_sink {
    hy_fanq q;
    int fd;                      /* not owned; -1: none */
    bool is_socket;              /* written with send(MSG_NOSIGNAL) */
    struct hy_tls *tls;          /* written through TLS (not owned), or NULL */
    hy_sink_role role;
    uint64_t limit;              /* queue.limit, or upstream.buffer */
    hy_overflow policy;
    bool over;                   /* past its limit (block, upstream): sources paused */
    bool dirty;                  /* on the set's dirty list */
    ev_io ww;                    /* writable, while the fd is full */
    struct hy_sinks *set;
    hy_flow *flow;
    hy_source *own;              /* worker: its own stdout, read while its queue is over */
    hy_drops *drops;             /* worker: its counters (queue-full, not-running, exited) */
    bool hold;                   /* worker: with no fd (or a broken one) frames still queue, for the next process */
    bool broken;                 /* worker: its reader is gone (on_error kept the queue): nothing is written */
    uint64_t frames, bytes;      /* accepted for it: frames and payload bytes */
    /* A write failed (err = errno, why NULL) or a client could not keep up
     * (why says how). NULL: the queue is dropped as worker-exited. */
    void (*on_error)(struct hy_sink *s, int err, const char *why);
    /* It went over or back under its limit (NULL: a worker's, which
     * pauses the sources that feed workers). */
    void (*on_over)(struct hy_sink *s, bool over);
    /* Bytes went out (NULL: nothing to do): a `keep` queue's owner asks
     * the kernel how much of them the reader took (hy_sink_taken). */
    void (*on_written)(struct hy_sink *s);
    void *owner;
    struct hy_sink *next_dirty;
} hy_sink;

/* The dirty list: flushed once per loop iteration by its owner (bus.c). */
typedef struct hy_sinks {
    struct ev_loop *loop;
    hy_sink *dirty;
} hy_sinks;

void hy_sink_init(hy_sink *s, hy_sinks *set, hy_flow *flow, hy_sink_role role, uint64_t limit, hy_overflow policy,
                  hy_drops *drops);
/* Stops its watcher, leaves the dirty list, frees the queue. */
void hy_sink_free(hy_sink *s);
/* Point it at an fd (-1: none). Queued frames stay. */
void hy_sink_set_fd(hy_sink *s, int fd, bool is_socket);

/* `frames` whole frames back to back (type_id: the first one's, for logs),
 * under the role's rule; `b`: the shared buffer they lie in (referenced,
 * not copied), or NULL. HY_PUSH_NOMEM for an upstream sink is the caller's
 * to count against the source; every other drop is counted here. */
hy_push_result hy_sink_push(hy_sink *s, hy_rbuf *b, const uint8_t *data, size_t len, size_t frames,
                            uint16_t type_id);
/* A control frame for a worker: past any limit, never dropped. */
void hy_sink_push_control(hy_sink *s, const uint8_t *frame, size_t len);
/* Write what is queued now (until the fd would block). */
void hy_sink_flush(hy_sink *s);
/* A `keep` queue: of what was written, all but `unread` bytes were taken by
 * the reader. */
void hy_sink_taken(hy_sink *s, size_t unread);
/* A worker's reader is gone: the frames its stdin pipe still held (FIONREAD,
 * against the queue's history) are counted as dropped (worker-exited). */
void hy_sink_count_unread(hy_sink *s);
/* A worker's reader died with `unread` bytes in its pipe (FIONREAD, a
 * partly written first frame's included): the frames it never read go back
 * to the front of the queue for the next process (hy_fanq_reclaim); one it
 * read in part is counted worker-exited. Returns the frames taken back. */
size_t hy_sink_reclaim(hy_sink *s, size_t unread);
/* Its queue was filled from elsewhere (an upgrade's state): over its
 * limit it pauses its sources, and it is written at the next flush. */
void hy_sink_recheck(hy_sink *s);
/* Drop everything queued, counting the frames as `why`. */
void hy_sink_clear(hy_sink *s, hy_drop why);
/* Payload bytes waiting, whole frames waiting (walks headers: not the hot path). */
static inline size_t hy_sink_bytes(const hy_sink *s) { return hy_fanq_bytes(&s->q); }

/* Write every dirty sink. */
void hy_sinks_flush(hy_sinks *set);

#endif
