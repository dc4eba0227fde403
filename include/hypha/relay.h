/* relay.h - where frames go: the upstream bus connection, `listen` clients,
 * routes to subscribed workers, and back-pressure between them.
 *
 * Sources of frames: workers (their stdout, read by the supervisor), the
 * upstream bus, and listen clients. Destinations: the upstream queue, worker
 * stdin queues and client queues. Every destination is a hy_outq of whole
 * frames; a source never writes to a destination directly. Frames are queued
 * while a source's read buffer is processed, and every queue touched is
 * written once at the end of the loop iteration (an ev_prepare watcher), so
 * a burst of frames costs one write per destination, not one per frame.
 *
 * Back-pressure (no frame is dropped on a `block` path):
 *  - the upstream queue over `upstream.buffer` (bus slow or down): workers'
 *    stdout and clients are not read until it drains;
 *  - a worker's queue over its `queue.limit` under `block`: the sources that
 *    feed workers are not read (upstream; and in embedded mode or with
 *    `echo: false`, the other workers and the clients) until it drains.
 */
#ifndef HYPHA_RELAY_H
#define HYPHA_RELAY_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hypha/err.h"
#include "hypha/outq.h"
#include "hypha/tlv.h"
#include "hypha/topology.h"

#define HY_HANDSHAKE_LEN 34u /* u16 LE 32 | 32-byte schema digest */

/* Why a frame was not routed, or not delivered. */
typedef enum hy_drop {
    HY_DROP_UNKNOWN_TYPE,  /* type id not in the contracts */
    HY_DROP_WRONG_SIZE,    /* payload size differs from the message's */
    HY_DROP_NOT_ALLOWED,   /* type not in the worker's `publish` list */
    HY_DROP_NOT_RUNNING,   /* for a subscriber that was not running */
    HY_DROP_EXITED,        /* queued for a worker that exited first */
    HY_DROP_NO_MEMORY,     /* its queue could not grow */
    HY_DROP__COUNT,
} hy_drop;

const char *hy_drop_str(hy_drop d);

/* Subscribers of one type id. */
typedef struct hy_route {
    uint16_t type_id;
    uint32_t *inst;              /* instance indices (owned) */
    size_t n;
} hy_route;

struct hy_sup;
struct hy_instance;
struct hy_relay;

/* A socket carrying TLV frames: the upstream connection or a listen client. */
typedef struct hy_peer {
    struct hy_relay *relay;
    int fd;                      /* -1 when closed */
    ev_io rw, ww;
    ev_timer timer;              /* client: handshake deadline */
    hy_outq q;                   /* frames waiting to be written */
    hy_tlv_decoder dec;
    uint8_t hs[HY_HANDSHAKE_LEN];
    size_t hs_len;               /* client: received; upstream: sent */
    bool ready;                  /* handshake done */
    bool dirty;                  /* queued to since the last flush */
    bool doomed;                 /* client: to be closed at the next flush */
    const char *doom_reason;
    char name[96];               /* "unix:/path#3" or "tcp:1.2.3.4:5#3" */
    uint64_t frames_in, bytes_in;   /* received from it */
    uint64_t frames_out, bytes_out; /* queued for it */
    uint64_t drops[HY_DROP__COUNT];
    const struct hy_listener *listener; /* client: where it connected */
    struct hy_peer *next;
} hy_peer;

typedef struct hy_listener {
    struct hy_relay *relay;
    const hy_endpoint *ep;
    int fd;
    ev_io w;
    ev_timer pause;              /* accept paused after EMFILE */
    char name[96];
    bool unlink_on_close;
} hy_listener;

typedef enum hy_up_state { HY_UP_DOWN, HY_UP_CONNECTING, HY_UP_CONNECTED } hy_up_state;

/* An observer of accepted frames (`hyphactl tap`): `from` names the source
 * ("risk[0]", the upstream endpoint, a listen client). */
typedef void (*hy_tap_fn)(void *ud, const char *from, uint16_t type_id, const uint8_t *payload, uint32_t len);

typedef struct hy_relay {
    struct hy_sup *sup;
    struct ev_loop *loop;
    const hy_topology *topo;
    bool local_feed;             /* worker frames also go to local subscribers */

    hy_route *routes;            /* sorted by type id (owned) */
    size_t nroutes;

    ev_prepare flush_w;
    struct hy_instance **dirty;  /* worker queues touched (owned, ninst slots) */
    size_t ndirty;

    /* upstream */
    hy_peer up;
    hy_up_state up_state;
    ev_timer up_timer;           /* reconnect delay, or connect deadline */
    uint32_t up_failures;        /* consecutive failed attempts */
    double up_since;             /* ev_now() at connect */
    bool up_probation;           /* connected, handshake sent, frames held back */
    uint64_t up_connects, up_disconnects;
    bool up_full;                /* queue over upstream.buffer */
    const uint8_t *run;          /* worker frames not yet copied upstream */
    size_t run_len, run_frames;
    struct hy_instance *run_src;
    const uint8_t *lrun;         /* frames not yet delivered locally: same destinations */
    size_t lrun_len, lrun_frames;
    const hy_route *lrun_route;
    uint16_t lrun_type;

    /* listen */
    hy_listener *listeners;      /* owned, topo->nlisten */
    size_t nlisteners;
    hy_peer *clients;            /* owned list */
    size_t nclients;
    uint64_t next_client_id;
    uint64_t clients_accepted, clients_refused, clients_slow;

    /* tap: one bit per type id; NULL when nobody taps, so the relay pays one
     * pointer test per frame for the feature. */
    uint8_t *tap_bits;
    hy_tap_fn tap_fn;
    void *tap_ud;
    double up_down_since;        /* ev_now() when the bus was last lost (or hyphad started);
                                    a close during probation does not count as up */
    size_t ndirty_cap;           /* slots in `dirty` */
} hy_relay;

/* Binds the listen endpoints (an error if one cannot be served) and prepares
 * the upstream client; nothing connects until hy_relay_start. */
int hy_relay_init(hy_relay *r, struct hy_sup *s, hy_err *err);
void hy_relay_start(hy_relay *r);
void hy_relay_free(hy_relay *r);

/* Subscriptions changed (topology, hello, subscribe, unsubscribe, exit). */
void hy_relay_rebuild_routes(hy_relay *r);

/* A checked frame from a worker, header and payload contiguous. `in_place`:
 * it lies in the supervisor's read buffer, which stays unchanged until
 * hy_relay_end_batch, so consecutive frames are copied upstream at once. */
void hy_relay_from_worker(hy_relay *r, struct hy_instance *src, const uint8_t *frame,
                          size_t len, uint16_t type_id, bool in_place);
/* The read buffer is about to be reused. */
void hy_relay_end_batch(hy_relay *r);

/* A worker's stdin queue has data to write. */
void hy_relay_mark_dirty(hy_relay *r, struct hy_instance *in);

/* Which sources may be read changed (a queue went over or under its limit). */
void hy_relay_update_reading(hy_relay *r);
bool hy_relay_worker_may_read(const hy_relay *r, const struct hy_instance *in);

/* Upstream bytes still queued (for a graceful exit). */
size_t hy_relay_upstream_pending(const hy_relay *r);
bool hy_relay_upstream_connected(const hy_relay *r);
/* One log line each for the upstream and the listen endpoints. */
void hy_relay_log_counters(const hy_relay *r);

const char *hy_up_state_str(hy_up_state st);

/* Reload support: room for `n` worker instances; a retired instance is about
 * to be freed; the topology was replaced (same schema and endpoints). */
int hy_relay_reserve(hy_relay *r, size_t n, hy_err *err);
void hy_relay_forget(hy_relay *r, struct hy_instance *in);
void hy_relay_retopo(hy_relay *r, const hy_topology *t);

static inline bool hy_relay_tapped(const hy_relay *r, uint16_t type_id)
{
    return r->tap_bits && (r->tap_bits[type_id >> 3] & (1u << (type_id & 7)));
}

#endif
