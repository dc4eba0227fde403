/* control.h - the control socket: one JSON request per line, one JSON reply
 * per line (docs/control.md), served on hyphad's libev loop.
 *
 * Only hyphad's own uid and root are served (SO_PEERCRED). Every client is
 * bounded: a request line of at most 64 KiB, 10 s to send a request, 4 MiB
 * of unread replies (then its requests are not read until it reads; `tap`
 * and `tail -f` skip and count lines instead), 64 connections at once.
 * Nothing a client does can block the loop: every fd is non-blocking.
 */
#ifndef HYPHA_CONTROL_H
#define HYPHA_CONTROL_H

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hypha/err.h"
#include "hypha/net.h"

struct hy_sup;
struct hy_ctl_client;

#define HY_CTL_MAX_REQUEST (64u * 1024)
#define HY_CTL_MAX_CLIENTS 64u
#define HY_CTL_IDLE_S 10.0
#define HY_CTL_MAX_PENDING (4u << 20)

typedef struct hy_ctl {
    struct hy_sup *sup;
    struct ev_loop *loop;
    hy_acceptor acc;             /* the socket; its file is unlinked at the end */
    uint8_t *tap_bits;           /* the union of every tapping client's (owned; the bus reads it) */
    struct hy_ctl_client *clients; /* owned list */
    size_t nclients;
    uint64_t refused;            /* other uids turned away */
    /* Reload is the daemon's (it owns the topology): fills `reply` with
     * started/stopped/restarted/unchanged, or returns -1 with err. */
    int (*reload)(void *ud, json_t *reply, hy_err *err);
    /* Upgrade in place with the binary at path (NULL: the same): refused
     * (-1, err), or under way once the reply is written. */
    int (*upgrade)(void *ud, const char *path, json_t *reply, hy_err *err);
    void *reload_ud;             /* both's */
} hy_ctl;

/* Binds the socket (mode from the topology) and starts accepting. */
int hy_ctl_start(hy_ctl *c, struct hy_sup *s, hy_err *err);
void hy_ctl_stop(hy_ctl *c);

#endif
