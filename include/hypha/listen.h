/* listen.h - hyphad's own Mycelium-compatible endpoints (`listen:`).
 *
 * What a client sends first depends on the entry's `handshake`: `digest`,
 * the digest handshake (u16 LE 32 | 32-byte digest, within 5 s) before
 * frames; `none`, frames from byte 0; `auto` (default), either, told apart
 * by its first bytes (hypha/listen_hs.h). A client receives every frame the
 * bus carries (its own included) from the moment it joins the bus (after
 * the handshake with `digest`, at once otherwise: a Rust client may never
 * send a byte) and its frames are routed like a worker's. One that cannot
 * keep up (its queue passes defaults.queue.limit) is dropped, never the bus
 * slowed for it. A client is freed only from its own watcher, so no walk
 * over the clients ever meets a freed one.
 *
 * A connection past the entry's `max_clients`, or one that would leave
 * fewer free fds than the workers' reserve (hy_listen_fd_reserve), is closed
 * at once and counted.
 */
#ifndef HYPHA_LISTEN_H
#define HYPHA_LISTEN_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "hypha/bus.h"
#include "hypha/drops.h"
#include "hypha/flow.h"
#include "hypha/net.h"
#include "hypha/sink.h"
#include "hypha/tlv.h"
#include "hypha/tls.h"
#include "hypha/topology.h"
#include "hypha/upstream.h"

struct hy_listen;

typedef struct hy_listener {
    struct hy_listen *ls;
    size_t index;                /* in topo->listen */
    hy_acceptor acc;
    char name[96];
    size_t nclients;             /* clients not being dropped */
    uint64_t accepted;
    uint64_t refused_handshake;  /* wrong digest, not a handshake, none in time */
    uint64_t refused_full;       /* past max_clients */
    uint64_t refused_fds;        /* would eat into the workers' fd reserve */
    uint64_t slow;               /* dropped: too slow */
    uint64_t frame_timeouts;     /* dropped: a frame not whole within frame_timeout */
    uint64_t too_long;           /* dropped: a frame over max_frame */
    hy_tls_ctx *tls_ctx;         /* listen[].tls (owned; made again at a reload), or NULL */
    uint64_t tls_fail[HY_TLS_FAIL__COUNT]; /* clients refused by the TLS handshake, by why */
} hy_listener;

typedef struct hy_client {
    struct hy_listen *ls;
    const hy_listener *listener; /* where it connected */
    int fd;                      /* owned */
    ev_io rw;
    ev_timer timer;              /* the handshake deadline; fed to free it once doomed */
    ev_timer frame_w;            /* a frame once started: listen.frame_timeout */
    hy_tls tls;                  /* its TLS (tls.ssl NULL: plaintext) */
    ev_io tls_w;                 /* the TLS handshake (or a read that must write first), waiting */
    double frame_at;             /* ev_now() when the frame it is sending started */
    double frame_paused;         /* hy_flow_paused_s() then: time hyphad held it back does not count */
    uint64_t frame_mark;         /* the decoder's frame count then */
    hy_source src;
    hy_sink sink;
    hy_bus_client member;        /* on the bus's client list once past the handshake */
    hy_tlv_decoder dec;
    hy_drops drops;
    hy_origin origin;
    hy_listen_handshake mode;    /* its endpoint's, when it connected */
    uint8_t hs[HY_HANDSHAKE_LEN]; /* the first bytes, until they are told apart */
    size_t hs_len;
    bool ready;                  /* past the handshake (or told to have none): frames */
    bool doomed;                 /* to be freed from its timer */
    char why[128];               /* why it was doomed (copied: strerror's buffer is reused) */
    char name[112];              /* "unix:/path#3" or "tcp:1.2.3.4:5#3" (the endpoint, and which client) */
    char peer[64];               /* a TCP client's address, "10.0.0.7:51234" or "[::1]:51234" ("" over Unix) */
    uint64_t frames_in, bytes_in;
    struct hy_client *next;
} hy_client;

typedef struct hy_listen {
    struct ev_loop *loop;
    const hy_topology *topo;     /* not owned */
    hy_bus *bus;
    hy_flow *flow;
    hy_listener *l;              /* owned, topo->nlisten */
    size_t n;
    hy_client *clients;          /* owned list */
    size_t nclients;
    uint64_t next_id;
    uint64_t accepted, refused, slow; /* all endpoints' */
} hy_listen;

/* fds kept free for the workers and the control plane: a client is refused
 * when the fds in use (its own included) plus this would pass RLIMIT_NOFILE.
 * HY_LISTEN_FD_BASE covers one spawn's peak (8: four pipes) and the control
 * plane (8: hyphactl connections, a reload reading its files); each worker
 * instance adds its 4 pipe ends, so that every instance can be respawned at
 * once (those that run hold theirs already: conservative by that much). */
#define HY_LISTEN_FD_BASE 16u
#define HY_LISTEN_FD_PER_INSTANCE 4u
size_t hy_listen_fd_reserve(const hy_topology *t);

/* Binds every endpoint (an error if one cannot be served); nothing is
 * accepted until hy_listen_start. */
int hy_listen_init(hy_listen *ls, struct ev_loop *loop, const hy_topology *t, hy_bus *bus, hy_flow *flow,
                   hy_err *err);
/* Start accepting; after an upgrade, first adopt the clients the state
 * holds (-1: they do not fit this topology's endpoints). */
int hy_listen_start(hy_listen *ls);
/* The clients past their handshake and without TLS into an upgrade's
 * state (*left: the others, which the exec closes). -1 on ENOMEM. */
struct hy_ustate;
int hy_listen_save(const hy_listen *ls, struct hy_ustate *u, size_t *left);
void hy_listen_free(hy_listen *ls);
/* Clients of one endpoint that are not being dropped. */
size_t hy_listen_clients(const hy_listen *ls, size_t i);
void hy_listen_retopo(hy_listen *ls, const hy_topology *t);

#endif
