/* notify.c - systemd's notify protocol (see hypha/notify.h): a datagram to
 * the socket named by NOTIFY_SOCKET, nothing more. */
#define _GNU_SOURCE
#include "hypha/notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "hypha/log.h"

#define COMP "systemd"

void hy_notify_init(hy_notify *n)
{
    memset(n, 0, sizeof *n);
    n->fd = -1;
    const char *sock = getenv("NOTIFY_SOCKET");
    const char *wd = getenv("WATCHDOG_USEC");
    const char *wpid = getenv("WATCHDOG_PID");
    if (wd && (!wpid || atol(wpid) == (long)getpid())) {
        char *end;
        unsigned long long us = strtoull(wd, &end, 10);
        if (*end == '\0' && us > 0)
            n->watchdog_s = (double)us / 1e6;
    }
    if (sock && *sock) {
        if ((sock[0] != '/' && sock[0] != '@') || strlen(sock) >= sizeof n->path) {
            hy_log(HY_WARN, COMP, "NOTIFY_SOCKET is not a socket path: ignored", "value", sock, NULL);
        } else if ((n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0) {
            hy_log(HY_WARN, COMP, "cannot create the notify socket", "error", strerror(errno), NULL);
        } else {
            snprintf(n->path, sizeof n->path, "%s", sock);
        }
    }
    if (n->fd < 0)
        n->watchdog_s = 0;
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}

bool hy_notify_active(const hy_notify *n) { return n->fd >= 0; }

void hy_notify_send(hy_notify *n, const char *msg)
{
    if (n->fd < 0)
        return;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t plen = strlen(n->path);
    memcpy(sa.sun_path, n->path, plen);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace */
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (n->path[0] == '@' ? 0 : 1));
    ssize_t w;
    do
        w = sendto(n->fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
    while (w < 0 && errno == EINTR);
    if (w < 0) {
        static int warned;
        if (!warned++)
            hy_log(HY_WARN, COMP, "cannot notify systemd", "socket", n->path, "error", strerror(errno), NULL);
    }
}

void hy_notify_status(hy_notify *n, const char *text)
{
    if (n->fd < 0 || strncmp(n->last_status, text, sizeof n->last_status - 1) == 0)
        return;
    snprintf(n->last_status, sizeof n->last_status, "%s", text);
    char msg[300];
    snprintf(msg, sizeof msg, "STATUS=%s", n->last_status);
    hy_notify_send(n, msg);
}

static void watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_notify_send(w->data, "WATCHDOG=1");
}

void hy_notify_start(hy_notify *n, struct ev_loop *loop)
{
    n->loop = loop;
    if (n->fd < 0 || n->watchdog_s <= 0)
        return;
    ev_timer_init(&n->watchdog_w, watchdog_cb, 0.0, n->watchdog_s / 2);
    n->watchdog_w.data = n;
    ev_timer_start(loop, &n->watchdog_w);
}

void hy_notify_free(hy_notify *n)
{
    if (n->loop)
        ev_timer_stop(n->loop, &n->watchdog_w);
    if (n->fd >= 0)
        close(n->fd);
    n->fd = -1;
}
