/* net.c - socket boilerplate (see hypha/net.h): it owns writing a frame
 * queue out until EAGAIN, the accept loop with its pause after EMFILE, the
 * listening sockets (Unix through hy_unix_listen, TCP here) and the
 * non-blocking connect that tries every address in turn.
 */
#define _GNU_SOURCE
#include "hypha/net.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "hypha/log.h"
#include "hypha/resolve.h"
#include "hypha/upgrade.h"

#define LISTEN_BACKLOG 128
#define DEFAULT_PAUSE_S 1.0

/* ---- writing a queue ------------------------------------------------------ */

#define WRITE_IOV 64 /* segments per writev(2) */

hy_net_wr hy_net_write_fanq(int fd, hy_fanq *q, bool is_socket)
{
    struct iovec iov[WRITE_IOV];
    while (hy_fanq_pending(q) > 0) {
        int k = hy_fanq_iov(q, iov, WRITE_IOV);
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)k};
        ssize_t n = is_socket ? sendmsg(fd, &m, MSG_NOSIGNAL) : writev(fd, iov, k);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return HY_NET_WR_AGAIN;
            return HY_NET_WR_ERROR;
        }
        if (n == 0) { /* no progress on a non-empty write: never loop on it */
            errno = EIO;
            return HY_NET_WR_ERROR;
        }
        hy_fanq_consume(q, (size_t)n);
    }
    return HY_NET_WR_DONE;
}

/* ---- accepting ------------------------------------------------------------ */

/* Errors accept(2) reports for the connection it was about to return, not
 * for the listening socket: retry at once (accept(2), "Error handling"). */
static bool accept_retry(int e)
{
    switch (e) {
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
        return true;
    default:
        return false;
    }
}

/* accept failed for want of a resource: stop for pause_s. Logged when a
 * streak starts (or its error changes), not at every pause. */
static void accept_pause(hy_acceptor *a, int e)
{
    if (a->fail_err != e) {
        char s[32];
        snprintf(s, sizeof s, "%g", a->pause_s);
        hy_log(HY_ERROR, a->component, "accept failed: pausing this endpoint", "endpoint", a->name, "error",
               strerror(e), "pause_s", s, NULL);
    }
    a->fail_err = e;
    a->pauses++;
    ev_io_stop(a->loop, &a->w);
    ev_timer_stop(a->loop, &a->pause);
    ev_timer_set(&a->pause, a->pause_s, 0.0);
    ev_timer_start(a->loop, &a->pause);
}

/* A connection came after a failing streak: say it is over, once. */
static void accept_recovered(hy_acceptor *a)
{
    char n[24];
    snprintf(n, sizeof n, "%lu", a->pauses);
    hy_log(HY_INFO, a->component, "accepting again", "endpoint", a->name, "error_was", strerror(a->fail_err),
           "pauses", n, NULL);
    a->fail_err = 0;
    a->pauses = 0;
}

static int tcp_options(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) < 0)
        return -1;
    return 0;
}

/* Frames go out at once, and a peer that vanished is noticed: TCP_NODELAY
 * and SO_KEEPALIVE, for accepted and connected sockets alike. */
static void set_nodelay(hy_acceptor *a, int fd)
{
    if (tcp_options(fd) < 0)
        hy_log(HY_WARN, a->component, "accepted connection: cannot set TCP_NODELAY or SO_KEEPALIVE", "endpoint",
               a->name, "error", strerror(errno), NULL);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_acceptor *a = w->data;
    for (int i = 0; i < HY_ACCEPT_BATCH && a->fd >= 0; i++) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (accept_retry(errno))
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                accept_pause(a, errno);
            return;
        }
        if (a->fail_err)
            accept_recovered(a);
        if (a->tcp)
            set_nodelay(a, fd);
        a->on_accept(a, fd); /* may close a */
    }
}

static void pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    hy_acceptor *a = w->data;
    if (a->fd >= 0)
        ev_io_start(loop, &a->w);
}

/* Everything but the socket: `a` closed, ready for hy_acceptor_close. */
static void acceptor_init(hy_acceptor *a, struct ev_loop *loop, const char *component)
{
    memset(a, 0, sizeof *a);
    a->loop = loop;
    a->fd = -1;
    a->pause_s = DEFAULT_PAUSE_S;
    a->component = component;
    ev_io_init(&a->w, accept_cb, -1, EV_READ);
    ev_timer_init(&a->pause, pause_cb, DEFAULT_PAUSE_S, 0.0);
    a->w.data = a->pause.data = a;
}

/* Every open acceptor, for an upgrade to carry (hy_acceptors_save). */
static hy_acceptor *open_list;

static void acceptor_set_fd(hy_acceptor *a, int fd)
{
    a->fd = fd;
    ev_io_set(&a->w, fd, EV_READ);
    a->next_open = open_list;
    open_list = a;
}

static void acceptor_unlist(hy_acceptor *a)
{
    for (hy_acceptor **pp = &open_list; *pp; pp = &(*pp)->next_open)
        if (*pp == a) {
            *pp = a->next_open;
            break;
        }
    a->next_open = NULL;
}

int hy_acceptors_save(hy_ustate *u)
{
    json_t *l = json_object();
    if (!l || json_object_set_new(u->root, "listeners", l) < 0)
        return -1;
    for (hy_acceptor *a = open_list; a; a = a->next_open) {
        json_t *fd = hy_ustate_fd(u, a->fd);
        if (!fd || json_object_set_new(l, a->name, fd) < 0)
            return -1;
    }
    return 0;
}

/* After an upgrade: the same listening socket, with its backlog (nothing
 * bound, nothing unlinked). */
static bool adopt_listener(hy_acceptor *a)
{
    int fd = hy_upgrade_take_listener(a->name);
    if (fd < 0)
        return false;
    acceptor_set_fd(a, fd);
    return true;
}

int hy_acceptor_open_unix(hy_acceptor *a, struct ev_loop *loop, const char *path, const char *what,
                          const char *component, hy_err *err)
{
    acceptor_init(a, loop, component);
    snprintf(a->name, sizeof a->name, "unix:%s", path);
    if (!(a->path = strdup(path)))
        return hy_err_set(err, "%s %s: out of memory", what, path);
    if (adopt_listener(a)) {
        struct stat st;
        if (lstat(path, &st) == 0) { /* its file is still ours to remove at the end */
            a->dev = st.st_dev;
            a->ino = st.st_ino;
            a->unlink_on_close = true;
        }
        return 0;
    }
    int fd = hy_unix_listen(path, what, err);
    if (fd < 0) {
        hy_acceptor_close(a);
        return -1;
    }
    acceptor_set_fd(a, fd);
    struct stat st;
    if (lstat(path, &st) < 0) { /* someone removed it since bind: not ours to serve */
        hy_err_set(err, "%s %s: cannot stat the socket just made: %s", what, path, strerror(errno));
        hy_acceptor_close(a);
        return -1;
    }
    a->dev = st.st_dev;
    a->ino = st.st_ino;
    a->unlink_on_close = true;
    return 0;
}

/* "127.0.0.1:9000" or "[::1]:9000" for messages. */
static void addr_str(const struct addrinfo *ai, char *out, size_t len)
{
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        snprintf(out, len, "(address family %d)", ai->ai_family);
    else
        snprintf(out, len, ai->ai_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
}

/* `step` failed on this address (errno): append "step addr: reason" to
 * why, close fd if open. Returns -1. */
static int listen_failed(const struct addrinfo *ai, const char *step, int fd, char *why, size_t whylen)
{
    int e = errno;
    char addr[NI_MAXHOST + 16];
    if (fd >= 0)
        close(fd);
    addr_str(ai, addr, sizeof addr);
    size_t used = strlen(why);
    snprintf(why + used, whylen - used, "%s%s %s: %s", used ? "; " : "", step, addr, strerror(e));
    return -1;
}

/* One address: a listening socket, or -1 with what failed appended to why. */
static int tcp_listen_one(const struct addrinfo *ai, char *why, size_t whylen)
{
    int one = 1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return listen_failed(ai, "socket", fd, why, whylen);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        return listen_failed(ai, "setsockopt SO_REUSEADDR", fd, why, whylen);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0)
        return listen_failed(ai, "bind", fd, why, whylen);
    if (listen(fd, LISTEN_BACKLOG) < 0)
        return listen_failed(ai, "listen", fd, why, whylen);
    return fd;
}

static int acceptor_open_tcp(hy_acceptor *a, const hy_endpoint *ep, const char *what, hy_err *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *list = NULL;
    char port[8];
    snprintf(port, sizeof port, "%u", ep->port);
    int gai = getaddrinfo(ep->host, port, &hints, &list);
    if (gai != 0)
        return hy_err_set(err, "%s %s: %s", what, a->name,
                          gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
    char why[HY_ERR_MAX / 2] = "";
    int fd = -1;
    for (const struct addrinfo *ai = list; ai && fd < 0; ai = ai->ai_next)
        fd = tcp_listen_one(ai, why, sizeof why);
    freeaddrinfo(list);
    if (fd < 0)
        return hy_err_set(err, "%s %s: %s", what, a->name, why[0] ? why : "no address to listen on");
    acceptor_set_fd(a, fd);
    a->tcp = true;
    return 0;
}

int hy_acceptor_open(hy_acceptor *a, struct ev_loop *loop, const hy_endpoint *ep, const char *what,
                     const char *component, hy_err *err)
{
    if (ep->kind == HY_EP_UNIX)
        return hy_acceptor_open_unix(a, loop, ep->path, what, component, err);
    acceptor_init(a, loop, component);
    hy_endpoint_str(ep, a->name, sizeof a->name);
    if (adopt_listener(a)) {
        a->tcp = true;
        return 0;
    }
    return acceptor_open_tcp(a, ep, what, err);
}

void hy_acceptor_start(hy_acceptor *a)
{
    if (a->fd >= 0 && !ev_is_active(&a->pause))
        ev_io_start(a->loop, &a->w);
}

/* Remove the socket file if it is still the one bound here. */
static void unlink_ours(hy_acceptor *a)
{
    struct stat st;
    if (lstat(a->path, &st) < 0) {
        if (errno != ENOENT)
            hy_log(HY_WARN, a->component, "cannot stat the socket file: leaving it", "socket", a->path, "error",
                   strerror(errno), NULL);
        return;
    }
    if (st.st_dev != a->dev || st.st_ino != a->ino) {
        hy_log(HY_WARN, a->component, "socket file replaced by another: leaving it", "socket", a->path, NULL);
        return;
    }
    if (unlink(a->path) < 0 && errno != ENOENT)
        hy_log(HY_WARN, a->component, "cannot remove the socket file", "socket", a->path, "error", strerror(errno),
               NULL);
}

void hy_acceptor_close(hy_acceptor *a)
{
    ev_io_stop(a->loop, &a->w);
    ev_timer_stop(a->loop, &a->pause);
    if (a->fd >= 0)
        acceptor_unlist(a);
    if (a->fd >= 0 && close(a->fd) < 0)
        hy_log(HY_WARN, a->component, "closing the listening socket failed", "endpoint", a->name, "error",
               strerror(errno), NULL);
    a->fd = -1;
    if (a->unlink_on_close && a->path)
        unlink_ours(a);
    a->unlink_on_close = false;
    free(a->path);
    a->path = NULL;
}

/* ---- connecting ----------------------------------------------------------- */

static void conn_stop(hy_connector *c)
{
    ev_io_stop(c->loop, &c->w);
    ev_timer_stop(c->loop, &c->timer);
}

/* This address failed: remember why, close its fd, move to the next. */
static void drop_attempt(hy_connector *c, int e, const char *reason)
{
    conn_stop(c);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->last_err = e;
    snprintf(c->reason, sizeof c->reason, "%s", reason);
    c->next = c->next->ai_next;
}

/* The outcome: the connector is idle before on_done runs. */
static void finish(hy_connector *c, int fd, int e, const char *reason)
{
    conn_stop(c);
    if (c->ai)
        freeaddrinfo(c->ai);
    c->ai = c->next = NULL;
    c->fd = -1;
    c->active = false;
    c->failed = false;
    c->on_done(c, fd, e, reason);
}

/* Every address failed (or none was found): tell the owner from the loop. */
static void fail_later(hy_connector *c)
{
    c->failed = true;
    conn_stop(c);
    c->fd = -1;
    ev_timer_set(&c->timer, 0.0, 0.0);
    ev_timer_start(c->loop, &c->timer);
}

/* Start connecting to c->next. 0: in flight (or done, the write watcher
 * will say); -1: this address failed, errno and *reason say why. */
static int attempt(hy_connector *c, const char **reason)
{
    const struct addrinfo *ai = c->next;
    *reason = "socket failed";
    c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    *reason = "setsockopt failed";
    if (ai->ai_family != AF_UNIX && tcp_options(c->fd) < 0)
        return -1;
    *reason = "connect failed"; /* EAGAIN from a Unix socket: its backlog is full */
    if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS && errno != EINTR)
        return -1;
    ev_io_set(&c->w, c->fd, EV_WRITE); /* writable: connected or failed */
    ev_io_start(c->loop, &c->w);
    if (c->timeout_s > 0) {
        ev_timer_set(&c->timer, c->timeout_s, 0.0);
        ev_timer_start(c->loop, &c->timer);
    }
    return 0;
}

static void try_next(hy_connector *c)
{
    const char *reason;
    while (c->next) {
        if (attempt(c, &reason) == 0)
            return;
        drop_attempt(c, errno, reason);
    }
    fail_later(c);
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_connector *c = w->data;
    int e = 0;
    socklen_t len = sizeof e;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
        e = errno;
    if (e) {
        drop_attempt(c, e, "connect failed");
        try_next(c);
        return;
    }
    int fd = c->fd;
    c->fd = -1; /* the caller's now */
    finish(c, fd, 0, NULL);
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_connector *c = w->data;
    if (c->fd >= 0) {
        drop_attempt(c, ETIMEDOUT, "connect timed out");
        try_next(c);
    } else { /* the deferred outcome of a failure */
        finish(c, -1, c->last_err ? c->last_err : EIO, c->reason[0] ? c->reason : "connect failed");
    }
}

void hy_connector_init(hy_connector *c, struct ev_loop *loop, double timeout_s,
                       void (*on_done)(hy_connector *, int, int, const char *), void *data)
{
    memset(c, 0, sizeof *c);
    c->loop = loop;
    c->timeout_s = timeout_s;
    c->on_done = on_done;
    c->data = data;
    c->fd = -1;
    ev_io_init(&c->w, conn_write_cb, -1, EV_WRITE);
    ev_timer_init(&c->timer, conn_timer_cb, 0.0, 0.0);
    c->w.data = c->timer.data = c;
}

/* A getaddrinfo failure as an errno (the reason carries its message). */
static int gai_errno(int gai, int sys)
{
    switch (gai) {
    case EAI_SYSTEM:
        return sys ? sys : EIO;
    case EAI_AGAIN:
        return EAGAIN;
    case EAI_MEMORY:
        return ENOMEM;
    default:
        return ENXIO;
    }
}

/* c->next: the Unix path as a one-entry list, or 0 with the failure set. */
static int resolve_unix(hy_connector *c, const char *path)
{
    if (strlen(path) >= sizeof c->un.sun_path) {
        c->last_err = ENAMETOOLONG;
        snprintf(c->reason, sizeof c->reason, "socket path too long");
        return -1;
    }
    c->un.sun_family = AF_UNIX;
    memcpy(c->un.sun_path, path, strlen(path) + 1);
    c->un_ai = (struct addrinfo){.ai_family = AF_UNIX, .ai_socktype = SOCK_STREAM,
                                 .ai_addr = (struct sockaddr *)&c->un, .ai_addrlen = sizeof c->un};
    c->next = &c->un_ai;
    return 0;
}

/* The name's addresses came (off the loop): try them in turn. */
static void resolved(void *ud, struct addrinfo *ai, int gai, int sys)
{
    hy_connector *c = ud;
    c->resolving = NULL;
    if (gai != 0) {
        c->lookup_failed = true;
        c->last_err = gai_errno(gai, sys);
        snprintf(c->reason, sizeof c->reason, "%s", gai == EAI_SYSTEM ? strerror(c->last_err) : gai_strerror(gai));
        fail_later(c);
        return;
    }
    c->ai = c->next = ai;
    try_next(c);
}

static int resolve_tcp(hy_connector *c, const hy_endpoint *ep)
{
    if ((c->resolving = hy_resolve_start(c->loop, ep->host, ep->port, resolved, c)))
        return 1; /* the answer comes from the loop */
    c->last_err = errno;
    snprintf(c->reason, sizeof c->reason, "cannot resolve %s: %s", ep->host, strerror(errno));
    return -1;
}

void hy_connector_start(hy_connector *c, const hy_endpoint *ep)
{
    hy_connector_cancel(c);
    c->active = true;
    c->lookup_failed = false;
    c->last_err = 0;
    c->reason[0] = '\0';
    int rc = ep->kind == HY_EP_UNIX ? resolve_unix(c, ep->path) : resolve_tcp(c, ep);
    if (rc < 0)
        fail_later(c);
    else if (rc == 0)
        try_next(c);
}

void hy_connector_cancel(hy_connector *c)
{
    if (c->resolving)
        hy_resolve_cancel(c->resolving);
    c->resolving = NULL;
    conn_stop(c);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->ai)
        freeaddrinfo(c->ai);
    c->ai = c->next = NULL;
    c->active = false;
    c->failed = false;
}
