/* net.h - the one home of socket boilerplate, in the spirit of Redis's
 * anet.c: write a frame queue out until EAGAIN, accept with a pause after
 * EMFILE, listen on a Unix or TCP endpoint, connect trying every address.
 * Every fd made here is non-blocking and close-on-exec; every failure is
 * reported where it happens, naming its object.
 */
#ifndef HYPHA_NET_H
#define HYPHA_NET_H

#include <ev.h>
#include <netdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/un.h>

#include "hypha/err.h"
#include "hypha/fanq.h"
#include "hypha/topology.h"

/* ---- writing a queue ------------------------------------------------------ */

typedef enum hy_net_wr {
    HY_NET_WR_DONE = 0,    /* the queue is empty */
    HY_NET_WR_AGAIN = 1,   /* the fd is full: wait for EV_WRITE */
    HY_NET_WR_ERROR = -1,  /* the peer is gone or the fd failed: errno says why */
} hy_net_wr;

/* Write what `q` holds to fd until it is empty or the fd would block,
 * consuming what was written (writev, up to 64 segments a call); EINTR is
 * retried. `is_socket`: sendmsg(2) with MSG_NOSIGNAL, so a closed peer is
 * EPIPE, never SIGPIPE; a pipe is written with writev(2) (hyphad ignores
 * SIGPIPE for its pipes: hyphad.c). */
hy_net_wr hy_net_write_fanq(int fd, hy_fanq *q, bool is_socket);

/* ---- accepting ------------------------------------------------------------ */

/* A listening socket on a libev loop. Each accepted connection (fd
 * non-blocking, close-on-exec; TCP_NODELAY on for TCP) goes to on_accept,
 * at most HY_ACCEPT_BATCH per wakeup so a flood of clients cannot starve
 * the loop.
 *
 * When accept fails for another reason than EAGAIN/EINTR/ECONNABORTED (or
 * a network error Linux passes on from the new connection, EPROTO,
 * ENETDOWN, ...: accept(2) says to retry those), that is EMFILE, ENFILE,
 * ENOBUFS, ENOMEM, it stops accepting for `pause_s` seconds, then resumes
 * by itself. It logs once when such a streak starts (or its error
 * changes), naming `name` and the error, and once when a connection is
 * accepted again (with the number of pauses).
 *
 * The owner sets on_accept, data and pause_s (1 s by default) after
 * hy_acceptor_open and before hy_acceptor_start, and a priority on `w` if
 * it wants one. on_accept may call hy_acceptor_close(a), not free `a`:
 * accepting stops there. */
#define HY_ACCEPT_BATCH 64

typedef struct hy_acceptor {
    struct ev_loop *loop;
    int fd;                      /* listening socket (owned), -1 when closed */
    ev_io w;
    ev_timer pause;
    double pause_s;
    const char *component;       /* log component: "relay", "control", "metrics" */
    char name[160];              /* "unix:/path" or "tcp:host:port", for logs */
    void (*on_accept)(struct hy_acceptor *a, int fd);
    void *data;                  /* the owner's */
    bool unlink_on_close;        /* the Unix socket file was made here */
    char *path;                  /* that file (owned) */
    dev_t dev;                   /* ... and its identity: close leaves alone */
    ino_t ino;                   /*     a file another process put there */
    bool tcp;                    /* TCP_NODELAY on each accepted fd */
    int fail_err;                /* errno of the failing streak, 0 none */
    unsigned long pauses;        /* pauses in that streak */
    struct hy_acceptor *next_open; /* the list of open acceptors (net.c) */
} hy_acceptor;

/* Bind and listen on `ep` (Unix: hy_unix_listen's rules, a stale socket
 * replaced; TCP: SO_REUSEADDR, every address getaddrinfo gives tried in
 * order until one binds), then initialise `a` (not started). `what` starts
 * error messages ("listen", "control socket", "metrics"). 0, or -1 with err;
 * after a failure `a` is closed (hy_acceptor_close is harmless). */
int hy_acceptor_open(hy_acceptor *a, struct ev_loop *loop, const hy_endpoint *ep, const char *what,
                     const char *component, hy_err *err);
/* The same for a Unix socket path. */
int hy_acceptor_open_unix(hy_acceptor *a, struct ev_loop *loop, const char *path, const char *what,
                          const char *component, hy_err *err);
void hy_acceptor_start(hy_acceptor *a);
/* Stop, close, and unlink its socket file when it made one and it is still
 * the same file (not one another process has put there since). Safe twice. */
void hy_acceptor_close(hy_acceptor *a);
/* An upgrade carries every open listening socket by its name: after it,
 * hy_acceptor_open* adopts the one of the same name instead of binding. */
struct hy_ustate;
int hy_acceptors_save(struct hy_ustate *u);

/* ---- connecting ----------------------------------------------------------- */

/* A non-blocking connect to `ep` that tries every address getaddrinfo gives
 * (TCP; the name is resolved off the loop, resolve.h) in order, each with its own deadline of `timeout_s`, until one
 * connects. On success on_done(c, fd, 0, NULL) gets the connected fd
 * (non-blocking, close-on-exec; TCP_NODELAY and SO_KEEPALIVE on for TCP);
 * the fd is then the caller's. When every address failed on_done(c, -1,
 * errno_of_the_last_failure, short_reason) is called ("connect timed out",
 * "connect failed", a getaddrinfo message, "socket path too long", "socket
 * failed", "setsockopt failed"; a getaddrinfo failure comes with ENXIO, or
 * EAGAIN, ENOMEM, or the errno of EAI_SYSTEM). on_done is always called from
 * the loop, never from within hy_connector_start; the connector is idle by
 * then, so on_done may start it again or free it. getaddrinfo itself is
 * synchronous: a slow resolver blocks the loop (as before this module). A
 * timeout_s <= 0 means no deadline. */
typedef struct hy_connector {
    struct ev_loop *loop;
    double timeout_s;
    ev_io w;                     /* writable: connected or failed */
    ev_timer timer;              /* this address's deadline; also defers on_done */
    struct addrinfo *ai, *next;  /* owned list, the address being tried */
    struct hy_resolve *resolving; /* the name being resolved off the loop, or NULL */
    bool lookup_failed;          /* the last failure was the name lookup: `reason` is its message */
    int fd;                      /* the attempt in flight, -1 none */
    int last_err;
    char reason[128];
    void (*on_done)(struct hy_connector *c, int fd, int err, const char *reason);
    void *data;
    bool active;
    bool failed;                 /* every address has failed: on_done comes at the next loop turn */
    struct addrinfo un_ai;       /* a Unix endpoint as a one-entry list */
    struct sockaddr_un un;
} hy_connector;

void hy_connector_init(hy_connector *c, struct ev_loop *loop, double timeout_s,
                       void (*on_done)(hy_connector *, int, int, const char *), void *data);
/* Starting a connector that is active abandons the attempt in flight. */
void hy_connector_start(hy_connector *c, const hy_endpoint *ep);
/* Abandon an attempt in flight (its fd is closed); on_done is not called. */
void hy_connector_cancel(hy_connector *c);

#endif
