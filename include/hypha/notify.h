/* notify.h - systemd's notify protocol (Type=notify), without libsystemd.
 *
 * When NOTIFY_SOCKET is set, hyphad sends READY=1, STATUS=..., RELOADING=1,
 * STOPPING=1 and, when WATCHDOG_USEC is set, WATCHDOG=1 at half that
 * interval. hy_notify_init reads and then removes NOTIFY_SOCKET,
 * WATCHDOG_USEC and WATCHDOG_PID from the environment, so workers (whose
 * environment is built from hyphad's) never see them. Without systemd every
 * call does nothing.
 */
#ifndef HYPHA_NOTIFY_H
#define HYPHA_NOTIFY_H

#include <ev.h>
#include <stdbool.h>

typedef struct hy_notify {
    int fd;                      /* datagram socket, -1 when not under systemd */
    char path[108];              /* NOTIFY_SOCKET ('@' for the abstract namespace) */
    double watchdog_s;           /* WATCHDOG_USEC / 1e6, 0 when off */
    ev_timer watchdog_w;
    struct ev_loop *loop;
    char last_status[256];
} hy_notify;

/* Reads the environment (and unsets it). Never fails: a bad NOTIFY_SOCKET
 * is logged and ignored. */
void hy_notify_init(hy_notify *n);
void hy_notify_start(hy_notify *n, struct ev_loop *loop);
bool hy_notify_active(const hy_notify *n);
/* Sends one message ("READY=1\nSTATUS=..."); errors are logged once. */
void hy_notify_send(hy_notify *n, const char *msg);
/* STATUS=text, only when it changed. */
void hy_notify_status(hy_notify *n, const char *text);
void hy_notify_free(hy_notify *n);

#endif
