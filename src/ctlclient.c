/* ctlclient.c - hyphactl's connection to the control socket (see
 * ctlclient.h). */
#define _GNU_SOURCE
#include "ctlclient.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>



bool conn_quiet;

int unreachable(const char *path, const char *what, int e)
{
    if (conn_quiet)
        return EXIT_UNREACHABLE;
    fprintf(stderr, "hyphactl: cannot reach hyphad at %s: %s%s%s\n", path, what, e ? ": " : "", e ? strerror(e) : "");
    if (e == ENOENT || e == ECONNREFUSED)
        fprintf(stderr, "hyphactl: is hyphad running with this control socket? (--socket or --config)\n");
    return EXIT_UNREACHABLE;
}

static long long now_ms(void);
static long long deadline_in(int timeout_ms);
static int ms_until(long long deadline);

/* connect(2) within timeout_ms, however often a signal interrupts it. A
 * Unix socket whose listen queue is full answers a non-blocking connect
 * with EAGAIN (it never completes later, as TCP's EINPROGRESS does): tried
 * again every 20 ms until the deadline. 0, or -1 with errno (ETIMEDOUT). */
static int connect_within(int fd, const struct sockaddr_un *sa, int timeout_ms)
{
    long long deadline = deadline_in(timeout_ms);
    for (;;) {
        if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) == 0)
            return 0;
        int e = errno;
        if (e == EISCONN)
            return 0;
        if (e != EAGAIN && e != EINTR && e != EINPROGRESS && e != EALREADY)
            return -1;
        int left = ms_until(deadline);
        if (left == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (e == EINPROGRESS || e == EALREADY) { /* completes by itself: wait for it */
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            int pr = poll(&pfd, 1, left);
            if (pr < 0 && errno != EINTR)
                return -1;
            if (pr > 0) {
                int soerr = 0;
                socklen_t sl = sizeof soerr;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
                    return -1;
                if (soerr) {
                    errno = soerr;
                    return -1;
                }
                return 0;
            }
            continue;
        }
        if (e == EAGAIN) /* the queue is full: a slot may free up */
            (void)poll(NULL, 0, left < 20 ? left : 20);
    }
}

/* The server must be hyphad as we trust it: our own uid or root. Anyone
 * else may have put a socket where hyphad's should be (a directory another
 * user could write to); its answers would be forged. */
static int check_server(conn *c)
{
    struct ucred cred;
    socklen_t clen = sizeof cred;
    if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0)
        return unreachable(c->path, "cannot learn the server's uid (SO_PEERCRED)", errno);
    uid_t me = geteuid();
    if (cred.uid == me || cred.uid == 0)
        return EXIT_OK;
    fprintf(stderr,
            "hyphactl: refusing %s: it is served by uid %u (pid %d), which is neither yours (%u) nor root, so its "
            "answers cannot be trusted\n"
            "hyphactl: if that is hyphad's own user, run hyphactl as that user (sudo -u '#%u' hyphactl ...); "
            "otherwise another user has put a socket where hyphad's should be\n",
            c->path, (unsigned)cred.uid, (int)cred.pid, (unsigned)me, (unsigned)cred.uid);
    return EXIT_UNREACHABLE;
}

int conn_open(conn *c, const char *path)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->path = path;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "hyphactl: socket path too long: %s\n", path);
        return EXIT_USAGE;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if ((c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
        return unreachable(path, "socket", errno);
    int rc = EXIT_OK;
    if (connect_within(c->fd, &sa, CONNECT_TIMEOUT_MS) < 0) {
        int e = errno;
        rc = e == ETIMEDOUT ? unreachable(path, "connect: no connection within 5 s (hyphad is not accepting: its "
                                                "queue of new connections is full)", 0)
                            : unreachable(path, "connect", e);
    } else if ((rc = check_server(c)) == EXIT_OK) {
        int fl = fcntl(c->fd, F_GETFL);
        if (fl < 0 || fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK) < 0) /* the rest waits with poll(2) */
            rc = unreachable(path, "fcntl", errno);
    }
    if (rc != EXIT_OK) {
        close(c->fd);
        c->fd = -1;
    }
    return rc;
}

int conn_send(conn *c, json_t *req)
{
    char *text = json_dumps(req, JSON_COMPACT);
    if (!text) {
        fprintf(stderr, "hyphactl: out of memory\n");
        return EXIT_FAIL;
    }
    size_t len = strlen(text);
    text[len] = '\0';
    size_t off = 0;
    int rc = EXIT_OK;
    while (off <= len) { /* the text, then the newline */
        const char *p = off < len ? text + off : "\n";
        size_t n = off < len ? len - off : 1;
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            /* hyphad may have answered and closed before reading (a refused
             * uid, too many connections): its answer is still to be read. */
            rc = errno == EPIPE || errno == ECONNRESET ? -errno : unreachable(c->path, "send", errno);
            break;
        }
        off += (size_t)w;
        if (off == len + 1)
            break;
    }
    free(text);
    return rc;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A deadline timeout_ms from now (-1: none), and poll's timeout for it. */
static long long deadline_in(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

static int ms_until(long long deadline)
{
    if (deadline < 0)
        return -1;
    long long left = deadline - now_ms();
    return left > 0 ? (int)left : 0;
}

/* The next line, without its newline (valid until the next call). timeout_ms
 * < 0: wait forever; else give up after timeout_ms without data (a signal
 * that interrupts the wait does not restart it). Returns NULL at
 * EOF/timeout/error with *why set. */
char *conn_line(conn *c, int timeout_ms, const char **why)
{
    if (c->consumed) {
        memmove(c->buf, c->buf + c->consumed, c->len - c->consumed);
        c->len -= c->consumed;
        c->consumed = 0;
    }
    long long deadline = deadline_in(timeout_ms);
    for (;;) {
        char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
        if (nl) {
            *nl = '\0';
            c->consumed = (size_t)(nl - c->buf) + 1;
            return c->buf;
        }
        if (c->len + 65536 > c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 131072;
            if (cap > MAX_LINE) {
                *why = "reply too long";
                return NULL;
            }
            char *p = realloc(c->buf, cap);
            if (!p) {
                *why = "out of memory";
                return NULL;
            }
            c->buf = p;
            c->cap = cap;
        }
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, ms_until(deadline));
        if (pr < 0 && errno == EINTR)
            continue; /* with the time left */
        if (pr == 0) {
            *why = "no answer within 5 s";
            return NULL;
        }
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *why = n == 0 ? "hyphad closed the connection" : strerror(errno);
            return NULL;
        }
        c->len += (size_t)n;
        deadline = deadline_in(timeout_ms); /* data came: the timeout is for silence */
    }
}

void conn_close(conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
}

int conn_ask(const char *sock, json_t *req, json_t **reply, int timeout_ms)
{
    conn cn;
    int rc = conn_open(&cn, sock);
    /* conn_send: an exit code (said), or -errno when hyphad closed first,
     * whose answer is still to be read (as hyphactl.c's exchange does) */
    int sent = rc == EXIT_OK ? conn_send(&cn, req) : rc;
    json_decref(req);
    if (rc != EXIT_OK)
        return rc;
    if (sent > 0) {
        conn_close(&cn);
        return sent;
    }
    const char *why = NULL;
    char *line = conn_line(&cn, timeout_ms, &why);
    json_t *r = line ? json_loads(line, 0, NULL) : NULL;
    if (!line) {
        rc = unreachable(sock, why, 0);
    } else if (!json_is_object(r)) {
        if (!conn_quiet)
            fprintf(stderr, "hyphactl: hyphad's reply is not a JSON object\n");
        rc = EXIT_FAIL;
    } else if (!json_is_true(json_object_get(r, "ok"))) {
        if (!conn_quiet)
            fprintf(stderr, "hyphactl: %s\n", json_string_value(json_object_get(r, "error")));
        rc = EXIT_FAIL;
    }
    conn_close(&cn);
    if (rc != EXIT_OK) {
        json_decref(r);
        return rc;
    }
    *reply = r;
    return EXIT_OK;
}
