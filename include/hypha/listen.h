/* listen.h - hyphad's own Mycelium-compatible endpoints (`listen:`).
 *
 * A client sends the digest handshake (u16 LE 32 | 32-byte digest, within
 * 5 s), then frames; it receives every frame the bus carries (its own
 * included) and its frames are routed like a worker's. One that cannot keep
 * up (its queue passes defaults.queue.limit) is dropped, never the bus
 * slowed for it. A client is freed only from its own watcher, so no walk
 * over the clients ever meets a freed one.
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
#include "hypha/topology.h"
#include "hypha/upstream.h"

struct hy_listen;

typedef struct hy_listener {
    struct hy_listen *ls;
    hy_acceptor acc;
    char name[96];
} hy_listener;

typedef struct hy_client {
    struct hy_listen *ls;
    const hy_listener *listener; /* where it connected */
    int fd;                      /* owned */
    ev_io rw;
    ev_timer timer;              /* the handshake deadline; fed to free it once doomed */
    hy_source src;
    hy_sink sink;
    hy_bus_client member;        /* on the bus's client list once past the handshake */
    hy_tlv_decoder dec;
    hy_drops drops;
    hy_origin origin;
    uint8_t hs[HY_HANDSHAKE_LEN];
    size_t hs_len;
    bool ready;                  /* handshake done */
    bool doomed;                 /* to be freed from its timer */
    char why[128];               /* why it was doomed (copied: strerror's buffer is reused) */
    char name[112];              /* "unix:/path#3" or "tcp:1.2.3.4:5#3" */
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
    uint64_t accepted, refused, slow;
} hy_listen;

/* Binds every endpoint (an error if one cannot be served); nothing is
 * accepted until hy_listen_start. */
int hy_listen_init(hy_listen *ls, struct ev_loop *loop, const hy_topology *t, hy_bus *bus, hy_flow *flow,
                   hy_err *err);
void hy_listen_start(hy_listen *ls);
void hy_listen_free(hy_listen *ls);
/* Clients of one endpoint that are not being dropped. */
size_t hy_listen_clients(const hy_listen *ls, size_t i);
void hy_listen_retopo(hy_listen *ls, const hy_topology *t);

#endif
