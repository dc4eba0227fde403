/* upstream.h - hyphad's one connection to the Mycelium bus.
 *
 * Connect (every address tried, net.c); with `handshake: digest` send the
 * digest handshake and hold frames back for a short probation (a bus that
 * refuses the digest closes in that time, and then no frame was written to
 * it); with `handshake: none` (a Mycelium endpoint that reads none) send
 * nothing first and have no probation. Then write the queue (its sink) and
 * read the bus's frames into the bus. What was written stays queued until
 * the kernel says the bus took it (SIOCOUTQ: on a Unix socket, read by the
 * bus process; on TCP, acknowledged by the bus host), so a lost connection
 * sends again, whole, every frame not known taken (counted as resent), and
 * reconnects with backoff between reconnect.initial and reconnect.max.
 * docs/reliability.md says what that promises.
 */
#ifndef HYPHA_UPSTREAM_H
#define HYPHA_UPSTREAM_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "hypha/bus.h"
#include "hypha/drops.h"
#include "hypha/flow.h"
#include "hypha/net.h"
#include "hypha/sink.h"
#include "hypha/tls.h"
#include "hypha/tlv.h"
#include "hypha/topology.h"

#define HY_HANDSHAKE_LEN 34u /* u16 LE 32 | 32-byte schema digest */

typedef enum hy_up_state { HY_UP_DOWN, HY_UP_CONNECTING, HY_UP_CONNECTED } hy_up_state;

const char *hy_up_state_str(hy_up_state st);

typedef struct hy_upstream {
    struct ev_loop *loop;
    const hy_topology *topo;     /* not owned */
    hy_bus *bus;
    hy_flow *flow;
    uint64_t *rng;               /* jitter for the reconnect delay (the supervisor's) */
    hy_connector conn;
    int fd;                      /* -1 when down (owned) */
    ev_io rw, ww;                /* ww: the handshake, while the socket is full */
    ev_timer timer;              /* reconnect delay, or the probation (digest only) */
    ev_timer taken_w;            /* asks again how much the bus took, while some is not known taken */
    double asked_at;             /* ev_now() when it last asked */
    hy_source src;
    hy_sink sink;                /* frames for the bus; its fd is set after the probation */
    hy_tlv_decoder dec;
    hy_drops drops;              /* frames from the bus that failed the checks */
    hy_origin origin;
    hy_tls_ctx *tls_ctx;         /* upstream.tls (owned; made again at a reload), or NULL: plaintext */
    hy_tls tls;                  /* the connection's (tls.ssl NULL: none) */
    ev_io tls_w;                 /* the TLS handshake, waiting for the socket */
    uint64_t tls_fail[HY_TLS_FAIL__COUNT]; /* handshakes failed, by why */
    char tls_peer[256];          /* the last server certificate's subject */
    time_t tls_peer_not_after;   /* and its end */
    uint8_t hs[HY_HANDSHAKE_LEN];
    size_t hs_sent;
    hy_up_state state;
    bool probation;              /* connected, handshake sent, frames held back */
    bool taken_unknown;          /* SIOCOUTQ failed on this connection (logged once) */
    uint32_t failures;           /* consecutive failed attempts */
    double since;                /* ev_now() at connect */
    double down_since;           /* ev_now() when the bus was last lost (or hyphad started) */
    uint64_t connects, disconnects;
    uint64_t frames_in, bytes_in;
    uint64_t resent;             /* frames written, not known taken, sent again after a reconnect */
    char name[160];              /* "unix:/path" or "tcp:host:port" */
} hy_upstream;

int hy_upstream_init(hy_upstream *u, struct ev_loop *loop, const hy_topology *t, hy_bus *bus, hy_flow *flow,
                     uint64_t *rng, hy_err *err);
/* A reload: the new topology, its TLS files read again (on failure the old
 * context stays, logged). */
void hy_upstream_retopo(hy_upstream *u, const hy_topology *t);
/* Connect; after an upgrade, adopt the connection and queue the state
 * holds instead (-1: it does not fit). */
int hy_upstream_start(hy_upstream *u);
/* Its queue, counters and (plain, past the handshake) connection into an
 * upgrade's state. -1 on ENOMEM. */
struct hy_ustate;
int hy_upstream_save(const hy_upstream *u, struct hy_ustate *st);
void hy_upstream_free(hy_upstream *u);
/* Connected and past the probation. */
bool hy_upstream_ready(const hy_upstream *u);

#endif
