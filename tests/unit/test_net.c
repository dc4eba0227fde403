/* test_net.c - net.c against real sockets and a real ev_loop: writing a
 * queue (EPIPE with SIGPIPE at its default, partial writes in order), the
 * acceptor (Unix, TCP, the EMFILE pause, what close unlinks) and the
 * connector (Unix, every address in turn, refused, timed out, cancelled,
 * on_done only from the loop). The loop runs until a condition holds or a
 * deadline timer fires; nothing sleeps.
 *
 * getaddrinfo is interposed (below) for two made-up host names, so trying
 * the next address is exercised on every machine, not only where
 * "localhost" gives ::1 first. Every other name goes to the real one. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "hypha/log.h"
#include "hypha/net.h"
#include "hypha/tlv.h"
#include "testdir.h"

#define DEADLINE_S 5.0

/* ---- interposed getaddrinfo ------------------------------------------------ */

/* "first-refused.test": 127.0.0.1:fake_dead_port, then 127.0.0.1:<service>.
 * "first-unbindable.test": 192.0.2.1 (TEST-NET-1, on no interface), then
 * 127.0.0.1, both at <service>. */
static char fake_dead_port[8];
static struct addrinfo *fake_list; /* the one handed out, for freeaddrinfo */

static int real_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                            struct addrinfo **res)
{
    static int (*fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
    if (!fn)
        *(void **)&fn = dlsym(RTLD_NEXT, "getaddrinfo");
    return fn(node, service, hints, res);
}

static void real_freeaddrinfo(struct addrinfo *ai)
{
    static void (*fn)(struct addrinfo *);
    if (!fn)
        *(void **)&fn = dlsym(RTLD_NEXT, "freeaddrinfo");
    fn(ai);
}

/* "slow.test": 127.0.0.1 after SLOW_RESOLVE_US, as a slow DNS server answers. */
#define SLOW_RESOLVE_US 300000

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
    const char *first_host = NULL, *first_port = service;
    if (node && strcmp(node, "slow.test") == 0) {
        usleep(SLOW_RESOLVE_US); /* the stimulus: a lookup that takes its time */
        return real_getaddrinfo("127.0.0.1", service, hints, res);
    }
    if (node && strcmp(node, "first-refused.test") == 0) {
        first_host = "127.0.0.1";
        first_port = fake_dead_port;
    } else if (node && strcmp(node, "first-unbindable.test") == 0) {
        first_host = "192.0.2.1";
    }
    if (!first_host)
        return real_getaddrinfo(node, service, hints, res);
    struct addrinfo h = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM,
                         .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *a = NULL, *b = NULL;
    int rc = real_getaddrinfo(first_host, first_port, &h, &a);
    if (rc != 0)
        return rc;
    if ((rc = real_getaddrinfo("127.0.0.1", service, &h, &b)) != 0) {
        real_freeaddrinfo(a);
        return rc;
    }
    a->ai_next = b;
    *res = fake_list = a;
    return 0;
}

void freeaddrinfo(struct addrinfo *ai)
{
    if (ai && ai == fake_list) { /* two lists chained: free each */
        struct addrinfo *b = ai->ai_next;
        ai->ai_next = NULL;
        real_freeaddrinfo(b);
        fake_list = NULL;
    }
    real_freeaddrinfo(ai);
}

/* ---- the loop -------------------------------------------------------------- */

#include "deadline.h"

/* Run the loop until *n >= want or max_s passed. True if reached. */
static bool run_until(struct ev_loop *loop, const int *n, int want, double max_s)
{
    deadline d;
    deadline_start(loop, &d, max_s);
    while (*n < want && !d.expired)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &d.t);
    return *n >= want;
}

/* Run the loop for s seconds (to see that something does NOT happen). */
static void run_for(struct ev_loop *loop, double s)
{
    int never = 0;
    (void)run_until(loop, &never, 1, s);
}

/* ---- helpers ---------------------------------------------------------------- */

static bool is_nonblock_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
    return fl >= 0 && fdfl >= 0 && (fl & O_NONBLOCK) && (fdfl & FD_CLOEXEC);
}

static int sockopt_int(int fd, int level, int opt)
{
    int v = -1;
    socklen_t len = sizeof v;
    assert_int_equal(getsockopt(fd, level, opt, &v, &len), 0);
    return v;
}

static uint16_t local_port(int fd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    return ntohs(sa.sin_port);
}

/* A blocking client connected to the Unix path or 127.0.0.1:port. */
static int client_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static int client_tcp(uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* A TCP socket bound to 127.0.0.1 but not listening: connecting to its port
 * is refused, and nothing else can listen there while it is open. */
static int dead_port(uint16_t *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    *port = local_port(fd);
    return fd;
}

static bool wait_readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n;
    while ((n = poll(&p, 1, (int)(DEADLINE_S * 1000))) < 0 && errno == EINTR)
        ;
    return n == 1;
}

/* What a sends, b reads. */
static void assert_connected(int a, int b)
{
    assert_int_equal(send(a, "ping", 4, MSG_NOSIGNAL), 4);
    char buf[8];
    assert_true(wait_readable(b));
    assert_int_equal(recv(b, buf, sizeof buf, 0), 4);
    assert_memory_equal(buf, "ping", 4);
}

/* hyphad's log into memory, to check what is said and how often. */
typedef struct logcap {
    char *buf;
    size_t len;
    FILE *f;
} logcap;

static void log_capture(logcap *l)
{
    l->buf = NULL;
    l->len = 0;
    l->f = open_memstream(&l->buf, &l->len);
    assert_non_null(l->f);
    hy_log_init(l->f, HY_LOG_TEXT, HY_INFO);
}

/* How many times needle was logged so far. */
static int log_count(logcap *l, const char *needle)
{
    fflush(l->f);
    int n = 0;
    for (const char *p = l->buf; p && (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static void log_release(logcap *l)
{
    hy_log_init(stderr, HY_LOG_TEXT, HY_INFO);
    fclose(l->f);
    free(l->buf);
}

/* ---- writing a queue --------------------------------------------------------- */

/* Frame i: type i+1 (mod 65536), a payload of 1..2000 bytes all derived from i. */
static size_t mkframe(uint8_t *out, size_t cap, unsigned i)
{
    uint8_t payload[2048];
    uint32_t len = 1 + (i * 7919u) % 2000u;
    for (uint32_t j = 0; j < len; j++)
        payload[j] = (uint8_t)(i * 31u + j);
    return hy_tlv_encode(out, cap, (uint16_t)(i + 1), payload, len);
}

static void test_write_queue_epipe_not_sigpipe(void **state)
{
    (void)state;
    struct sigaction old, dfl = {.sa_handler = SIG_DFL};
    assert_int_equal(sigaction(SIGPIPE, &dfl, &old), 0);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    close(sv[1]);
    hy_fanq q;
    hy_fanq_init(&q);
    uint8_t f[4096];
    size_t n = mkframe(f, sizeof f, 3);
    assert_int_equal(hy_fanq_push(&q, f, n, 1 << 20, HY_OVERFLOW_DROP_NEWEST), HY_PUSH_QUEUED);
    errno = 0;
    assert_int_equal(hy_net_write_fanq(sv[0], &q, true), HY_NET_WR_ERROR); /* alive: no SIGPIPE */
    assert_int_equal(errno, EPIPE);
    assert_int_equal(hy_fanq_pending(&q), n); /* nothing consumed */
    close(sv[0]);

    /* A pipe is written with write(2): EPIPE when SIGPIPE is ignored. */
    struct sigaction ign = {.sa_handler = SIG_IGN};
    assert_int_equal(sigaction(SIGPIPE, &ign, NULL), 0);
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    close(p[0]);
    errno = 0;
    assert_int_equal(hy_net_write_fanq(p[1], &q, false), HY_NET_WR_ERROR);
    assert_int_equal(errno, EPIPE);
    close(p[1]);
    assert_int_equal(sigaction(SIGPIPE, &old, NULL), 0);
    hy_fanq_free(&q);
}

/* Read what sv has into got (grown); returns the bytes read. */
static size_t drain(int fd, uint8_t **got, size_t *len, size_t *cap)
{
    size_t before = *len;
    for (;;) {
        if (*cap - *len < 65536) {
            *cap = *cap * 2 + 65536;
            *got = realloc(*got, *cap);
            assert_non_null(*got);
        }
        ssize_t n = read(fd, *got + *len, *cap - *len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
            return *len - before;
        }
        assert_true(n > 0);
        *len += (size_t)n;
    }
}

/* Queue frames 0, 1, ... 64 at a time, writing after each batch, until the
 * socket is full; *want gets the same bytes (malloc'd). Returns *wlen. */
static size_t fill_until_again(int fd, hy_fanq *q, uint8_t **want)
{
    uint8_t f[4096];
    size_t wlen = 0, wcap = 0;
    unsigned frames = 0;
    hy_net_wr rc = HY_NET_WR_DONE;
    while (rc != HY_NET_WR_AGAIN) {
        assert_true(wlen < (64u << 20)); /* a socket buffer is not that deep */
        for (int k = 0; k < 64; k++, frames++) {
            size_t n = mkframe(f, sizeof f, frames);
            assert_int_equal(hy_fanq_push(q, f, n, 1u << 30, HY_OVERFLOW_BLOCK), HY_PUSH_QUEUED);
            if (wlen + n > wcap) {
                wcap = (wlen + n) * 2;
                *want = realloc(*want, wcap);
                assert_non_null(*want);
            }
            memcpy(*want + wlen, f, n);
            wlen += n;
        }
        rc = hy_net_write_fanq(fd, q, true);
        assert_true(rc == HY_NET_WR_AGAIN || rc == HY_NET_WR_DONE);
    }
    return wlen;
}

static void test_write_queue_partial_writes_in_order(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    int small = 16384;
    assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    hy_fanq q;
    hy_fanq_init(&q);
    uint8_t *want = NULL, *got = NULL;
    size_t glen = 0, gcap = 0;
    size_t wlen = fill_until_again(sv[0], &q, &want);
    assert_true(hy_fanq_pending(&q) > 0 && hy_fanq_pending(&q) < wlen); /* some went, some wait */
    hy_net_wr rc = HY_NET_WR_AGAIN;
    int rounds = 0;
    for (;; rounds++) {
        assert_true(rounds < 100000);
        drain(sv[1], &got, &glen, &gcap);
        /* The peer has exactly what left the queue: the frames, in order, so far. */
        assert_int_equal(glen + hy_fanq_pending(&q), wlen);
        assert_memory_equal(got, want, glen);
        if (rc == HY_NET_WR_DONE)
            break;
        rc = hy_net_write_fanq(sv[0], &q, true);
        assert_true(rc == HY_NET_WR_AGAIN || rc == HY_NET_WR_DONE);
    }
    assert_true(rounds >= 1); /* it really was written in parts */
    assert_int_equal(glen, wlen);
    assert_int_equal(hy_fanq_bytes(&q), 0);
    assert_int_equal(hy_net_write_fanq(sv[0], &q, true), HY_NET_WR_DONE); /* empty: nothing to do */
    free(want);
    free(got);
    hy_fanq_free(&q);
    close(sv[0]);
    close(sv[1]);
}

/* ---- accepting ----------------------------------------------------------------- */

typedef struct accepted {
    int fds[16];
    int n;
    bool bad_flags;
    double at; /* ev_time() of the last one */
} accepted;

static void on_accept(hy_acceptor *a, int fd)
{
    accepted *acc = a->data;
    if (!is_nonblock_cloexec(fd))
        acc->bad_flags = true;
    acc->at = ev_time();
    if (acc->n < 16)
        acc->fds[acc->n++] = fd;
    else
        close(fd);
}

static void close_accepted(accepted *acc)
{
    for (int i = 0; i < acc->n; i++)
        close(acc->fds[i]);
    acc->n = 0;
}

static void test_acceptor_unix(void **state)
{
    (void)state;
    char dir[PATH_MAX], path[PATH_MAX + 32], name[PATH_MAX + 40];
    assert_int_equal(hy_test_mkdtemp("net", dir), 0);
    snprintf(path, sizeof path, "%s/run/hy.sock", dir); /* its directory is made */
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    hy_acceptor a;
    hy_err err = {{0}};
    accepted acc = {.n = 0};
    assert_int_equal(hy_acceptor_open_unix(&a, loop, path, "listen", "test", &err), 0);
    snprintf(name, sizeof name, "unix:%s", path);
    assert_string_equal(a.name, name);
    assert_true(is_nonblock_cloexec(a.fd));
    a.on_accept = on_accept;
    a.data = &acc;
    hy_acceptor_start(&a);
    int cl[3];
    for (int i = 0; i < 3; i++)
        cl[i] = client_unix(path);
    assert_true(run_until(loop, &acc.n, 3, DEADLINE_S));
    assert_false(acc.bad_flags);
    for (int i = 0; i < 3; i++)
        assert_connected(cl[i], acc.fds[i]);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    hy_acceptor_close(&a);
    assert_int_equal(a.fd, -1);
    assert_int_equal(lstat(path, &st), -1); /* unlinked */
    assert_int_equal(errno, ENOENT);
    hy_acceptor_close(&a); /* twice is harmless */
    for (int i = 0; i < 3; i++)
        close(cl[i]);
    close_accepted(&acc);
    ev_loop_destroy(loop);
    hy_test_rmtree(dir);
}

static void test_acceptor_unix_stale_and_foreign_files(void **state)
{
    (void)state;
    char dir[PATH_MAX], path[PATH_MAX + 32], file[PATH_MAX + 32];
    assert_int_equal(hy_test_mkdtemp("net", dir), 0);
    snprintf(path, sizeof path, "%s/hy.sock", dir);
    snprintf(file, sizeof file, "%s/plain", dir);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    /* A socket file nobody serves (a dead hyphad's) is replaced. */
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int stale = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(stale, (struct sockaddr *)&sa, sizeof sa), 0);
    close(stale);
    hy_acceptor a;
    hy_err err = {{0}};
    assert_int_equal(hy_acceptor_open_unix(&a, loop, path, "listen", "test", &err), 0);
    /* Another process takes the path over: close must leave its file alone. */
    assert_int_equal(unlink(path), 0);
    int other = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(other, (struct sockaddr *)&sa, sizeof sa), 0);
    logcap log;
    log_capture(&log);
    hy_acceptor_close(&a);
    assert_int_equal(log_count(&log, "socket file replaced by another: leaving it"), 1);
    log_release(&log);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    close(other);
    /* A file that is not a socket is never removed: open fails, naming it. */
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(hy_acceptor_open_unix(&a, loop, file, "control socket", "test", &err), -1);
    assert_non_null(strstr(err.msg, "control socket "));
    assert_non_null(strstr(err.msg, file));
    assert_int_equal(a.fd, -1);
    hy_acceptor_close(&a); /* harmless after a failed open */
    assert_int_equal(lstat(file, &st), 0);
    ev_loop_destroy(loop);
    hy_test_rmtree(dir);
}

static void test_acceptor_tcp(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    hy_endpoint ep = {.kind = HY_EP_TCP, .host = "127.0.0.1", .port = 0};
    hy_acceptor a, b;
    hy_err err = {{0}};
    accepted acc = {.n = 0};
    assert_int_equal(hy_acceptor_open(&a, loop, &ep, "listen", "test", &err), 0);
    assert_string_equal(a.name, "tcp:127.0.0.1:0");
    assert_true(is_nonblock_cloexec(a.fd));
    assert_int_equal(sockopt_int(a.fd, SOL_SOCKET, SO_REUSEADDR), 1);
    uint16_t port = local_port(a.fd);
    a.on_accept = on_accept;
    a.data = &acc;
    hy_acceptor_start(&a);
    int cl[2] = {client_tcp(port), client_tcp(port)};
    assert_true(run_until(loop, &acc.n, 2, DEADLINE_S));
    assert_false(acc.bad_flags);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(sockopt_int(acc.fds[i], IPPROTO_TCP, TCP_NODELAY), 1);
        assert_int_equal(sockopt_int(acc.fds[i], SOL_SOCKET, SO_KEEPALIVE), 1);
        assert_connected(cl[i], acc.fds[i]);
    }
    /* The port is taken: the error names the endpoint and the address. */
    ep.port = port;
    assert_int_equal(hy_acceptor_open(&b, loop, &ep, "metrics", "test", &err), -1);
    char want[96];
    snprintf(want, sizeof want, "metrics tcp:127.0.0.1:%u: bind 127.0.0.1:%u: %s", port, port, strerror(EADDRINUSE));
    assert_string_equal(err.msg, want);
    hy_acceptor_close(&b);
    hy_acceptor_close(&a);
    for (int i = 0; i < 2; i++)
        close(cl[i]);
    close_accepted(&acc);
    ev_loop_destroy(loop);
}

static void test_acceptor_tcp_tries_every_address(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    uint16_t port;
    int holder = dead_port(&port); /* a port free for 127.0.0.1... */
    close(holder);                 /* ...now released for the acceptor */
    hy_endpoint ep = {.kind = HY_EP_TCP, .host = "first-unbindable.test", .port = port};
    hy_acceptor a;
    hy_err err = {{0}};
    accepted acc = {.n = 0};
    assert_int_equal(hy_acceptor_open(&a, loop, &ep, "listen", "test", &err), 0);
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(a.fd, (struct sockaddr *)&sa, &len), 0);
    assert_int_equal(ntohl(sa.sin_addr.s_addr), INADDR_LOOPBACK); /* the second address */
    a.on_accept = on_accept;
    a.data = &acc;
    hy_acceptor_start(&a);
    int cl = client_tcp(port);
    assert_true(run_until(loop, &acc.n, 1, DEADLINE_S));
    hy_acceptor_close(&a);
    close(cl);
    close_accepted(&acc);
    ev_loop_destroy(loop);
}

/* The lowest fd number free now: every one below it is in use. */
static int lowest_free_fd(void)
{
    int fd = fcntl(0, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) /* stdin closed: 0 is free */
        return 0;
    close(fd);
    return fd;
}

/* Lower RLIMIT_NOFILE so accept fails with EMFILE, run until it has paused
 * twice (it resumed by itself and failed again), put the limit back. */
static void pause_twice_out_of_fds(struct ev_loop *loop, hy_acceptor *a)
{
    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = (rlim_t)lowest_free_fd(); /* no fd left for accept */
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    deadline d;
    deadline_start(loop, &d, DEADLINE_S);
    while (a->pauses < 2 && !d.expired)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &d.t);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
}

static void test_acceptor_emfile_pause(void **state)
{
    (void)state;
    char dir[PATH_MAX], path[PATH_MAX + 32];
    assert_int_equal(hy_test_mkdtemp("net", dir), 0);
    snprintf(path, sizeof path, "%s/hy.sock", dir);
    logcap log;
    log_capture(&log);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    hy_acceptor a;
    hy_err err = {{0}};
    accepted acc = {.n = 0};
    assert_int_equal(hy_acceptor_open_unix(&a, loop, path, "listen", "test", &err), 0);
    a.on_accept = on_accept;
    a.data = &acc;
    a.pause_s = 0.05;
    hy_acceptor_start(&a);
    int cl = client_unix(path); /* waits in the backlog */
    double t0 = ev_time();
    pause_twice_out_of_fds(loop, &a);
    assert_true(a.pauses >= 2); /* logged once, though */
    assert_int_equal(a.fail_err, EMFILE);
    assert_int_equal(acc.n, 0);
    assert_false(ev_is_active(&a.w));   /* not accepting... */
    assert_true(ev_is_active(&a.pause)); /* ...until the pause ends */
    assert_int_equal(log_count(&log, "accept failed"), 1);
    assert_int_equal(log_count(&log, a.name), 1);
    assert_int_equal(log_count(&log, strerror(EMFILE)), 1);

    /* The limit is back: after its pause it accepts without being told. */
    assert_true(run_until(loop, &acc.n, 1, DEADLINE_S));
    assert_true(acc.at - t0 >= 2 * a.pause_s * 0.9);
    assert_int_equal(a.fail_err, 0);
    assert_true(ev_is_active(&a.w));
    assert_int_equal(log_count(&log, "accepting again"), 1);
    assert_int_equal(log_count(&log, "pauses=2"), 1);
    assert_int_equal(log_count(&log, "accept failed"), 1);
    assert_connected(cl, acc.fds[0]);

    hy_acceptor_close(&a);
    close(cl);
    close_accepted(&acc);
    ev_loop_destroy(loop);
    log_release(&log);
    hy_test_rmtree(dir);
}

/* ---- connecting ------------------------------------------------------------------ */

typedef struct outcome {
    int n;          /* on_done calls */
    int fd, err;
    char reason[128];
    bool in_start;  /* set around hy_connector_start */
    bool reentered; /* on_done ran inside hy_connector_start */
    bool was_active;
    const hy_endpoint *retry; /* on_done starts again here, once */
} outcome;

static void on_done(hy_connector *c, int fd, int err, const char *reason)
{
    outcome *o = c->data;
    if (o->in_start)
        o->reentered = true;
    o->was_active = c->active;
    o->n++;
    o->fd = fd;
    o->err = err;
    snprintf(o->reason, sizeof o->reason, "%s", reason ? reason : "");
    if (o->retry) {
        const hy_endpoint *ep = o->retry;
        o->retry = NULL;
        hy_connector_start(c, ep);
    }
}

static void start(hy_connector *c, outcome *o, const hy_endpoint *ep)
{
    o->in_start = true;
    hy_connector_start(c, ep);
    o->in_start = false;
    assert_int_equal(o->n, 0); /* never from within start */
}

static void test_connector_unix(void **state)
{
    (void)state;
    char dir[PATH_MAX], path[PATH_MAX + 32];
    assert_int_equal(hy_test_mkdtemp("net", dir), 0);
    snprintf(path, sizeof path, "%s/bus.sock", dir);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    hy_acceptor a;
    hy_err err = {{0}};
    accepted acc = {.n = 0};
    assert_int_equal(hy_acceptor_open_unix(&a, loop, path, "listen", "test", &err), 0);
    a.on_accept = on_accept;
    a.data = &acc;
    hy_acceptor_start(&a);
    hy_connector c;
    outcome o = {.fd = -1};
    hy_connector_init(&c, loop, 2.0, on_done, &o);
    hy_endpoint ep = {.kind = HY_EP_UNIX, .path = path};
    start(&c, &o, &ep);
    assert_true(run_until(loop, &o.n, 1, DEADLINE_S));
    assert_false(o.reentered);
    assert_false(o.was_active);
    assert_true(o.fd >= 0);
    assert_int_equal(o.err, 0);
    assert_true(is_nonblock_cloexec(o.fd));
    assert_true(run_until(loop, &acc.n, 1, DEADLINE_S));
    assert_connected(o.fd, acc.fds[0]);
    assert_connected(acc.fds[0], o.fd);
    close(o.fd);
    hy_connector_cancel(&c); /* idle: harmless */
    hy_acceptor_close(&a);
    close_accepted(&acc);
    ev_loop_destroy(loop);
    hy_test_rmtree(dir);
}

static void test_connector_localhost(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    hy_endpoint lep = {.kind = HY_EP_TCP, .host = "127.0.0.1", .port = 0};
    hy_acceptor a;
    hy_err err = {{0}};
    accepted acc = {.n = 0};
    assert_int_equal(hy_acceptor_open(&a, loop, &lep, "listen", "test", &err), 0);
    a.on_accept = on_accept;
    a.data = &acc;
    hy_acceptor_start(&a);
    uint16_t port = local_port(a.fd);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo("localhost", NULL, &hints, &ai) == 0) {
        print_message("localhost resolves to %s first%s\n", ai->ai_family == AF_INET6 ? "::1" : "127.0.0.1",
                      ai->ai_family == AF_INET6 ? ": the next address is tried" : "");
        freeaddrinfo(ai);
    }
    hy_connector c;
    outcome o = {.fd = -1};
    hy_connector_init(&c, loop, 2.0, on_done, &o);
    hy_endpoint ep = {.kind = HY_EP_TCP, .host = "localhost", .port = port};
    start(&c, &o, &ep);
    assert_true(run_until(loop, &o.n, 1, DEADLINE_S));
    assert_false(o.reentered);
    assert_true(o.fd >= 0);
    assert_int_equal(o.err, 0);
    assert_true(is_nonblock_cloexec(o.fd));
    assert_int_equal(sockopt_int(o.fd, IPPROTO_TCP, TCP_NODELAY), 1);
    assert_int_equal(sockopt_int(o.fd, SOL_SOCKET, SO_KEEPALIVE), 1);
    assert_true(run_until(loop, &acc.n, 1, DEADLINE_S));
    assert_connected(o.fd, acc.fds[0]);
    close(o.fd);
    hy_acceptor_close(&a);
    close_accepted(&acc);
    ev_loop_destroy(loop);
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    (*(int *)w->data)++;
}

/* A slow name lookup does not stop the loop: timers keep firing while it
 * runs, and the connection comes once the answer does. */
static void test_connector_resolves_off_the_loop(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    hy_endpoint lep = {.kind = HY_EP_TCP, .host = "127.0.0.1", .port = 0};
    hy_acceptor a;
    hy_err err = {{0}};
    accepted acc = {.n = 0};
    assert_int_equal(hy_acceptor_open(&a, loop, &lep, "listen", "test", &err), 0);
    a.on_accept = on_accept;
    a.data = &acc;
    hy_acceptor_start(&a);
    int ticks = 0;
    ev_timer tick;
    ev_timer_init(&tick, tick_cb, 0.02, 0.02);
    tick.data = &ticks;
    ev_timer_start(loop, &tick);
    hy_connector c;
    outcome o = {.fd = -1};
    hy_connector_init(&c, loop, 2.0, on_done, &o);
    hy_endpoint ep = {.kind = HY_EP_TCP, .host = "slow.test", .port = local_port(a.fd)};
    start(&c, &o, &ep);
    assert_true(run_until(loop, &o.n, 1, DEADLINE_S));
    int during = ticks;
    ev_timer_stop(loop, &tick);
    assert_true(during >= 5); /* 300 ms of lookup: the 20 ms timer went on */
    assert_true(o.fd >= 0);
    assert_true(run_until(loop, &acc.n, 1, DEADLINE_S));
    close(o.fd);
    /* cancelled while resolving: no answer, ever, and nothing leaks */
    outcome o2 = {.fd = -1};
    hy_connector c2;
    hy_connector_init(&c2, loop, 2.0, on_done, &o2);
    start(&c2, &o2, &ep);
    hy_connector_cancel(&c2);
    run_for(loop, 0.5);
    assert_int_equal(o2.n, 0);
    hy_acceptor_close(&a);
    close_accepted(&acc);
    ev_loop_destroy(loop);
}

static void test_connector_next_address_after_refused(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    uint16_t dead;
    int holder = dead_port(&dead);
    snprintf(fake_dead_port, sizeof fake_dead_port, "%u", dead);
    hy_endpoint lep = {.kind = HY_EP_TCP, .host = "127.0.0.1", .port = 0};
    hy_acceptor a;
    hy_err err = {{0}};
    accepted acc = {.n = 0};
    assert_int_equal(hy_acceptor_open(&a, loop, &lep, "listen", "test", &err), 0);
    a.on_accept = on_accept;
    a.data = &acc;
    hy_acceptor_start(&a);
    hy_connector c;
    outcome o = {.fd = -1};
    hy_connector_init(&c, loop, 2.0, on_done, &o);
    /* 127.0.0.1:dead first (refused), then 127.0.0.1:port. */
    hy_endpoint ep = {.kind = HY_EP_TCP, .host = "first-refused.test", .port = local_port(a.fd)};
    start(&c, &o, &ep);
    assert_true(run_until(loop, &o.n, 1, DEADLINE_S));
    assert_true(o.fd >= 0);
    assert_int_equal(o.err, 0);
    struct sockaddr_in peer;
    socklen_t len = sizeof peer;
    assert_int_equal(getpeername(o.fd, (struct sockaddr *)&peer, &len), 0);
    assert_int_equal(ntohs(peer.sin_port), local_port(a.fd));
    assert_null(fake_list); /* the list was freed */
    close(o.fd);
    hy_acceptor_close(&a);
    close(holder);
    close_accepted(&acc);
    ev_loop_destroy(loop);
}

static void test_connector_failures(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    hy_connector c;
    outcome o = {.fd = 0};
    hy_connector_init(&c, loop, 2.0, on_done, &o);
    /* Nobody listens on the port. */
    uint16_t dead;
    int holder = dead_port(&dead);
    hy_endpoint tcp = {.kind = HY_EP_TCP, .host = "127.0.0.1", .port = dead};
    start(&c, &o, &tcp);
    assert_true(run_until(loop, &o.n, 1, DEADLINE_S));
    assert_false(o.reentered);
    assert_int_equal(o.fd, -1);
    assert_int_equal(o.err, ECONNREFUSED);
    assert_string_equal(o.reason, "connect failed");
    /* No socket file: found out inside start, told from the loop. */
    char path[] = "/nonexistent-hypha-test/bus.sock";
    hy_endpoint nofile = {.kind = HY_EP_UNIX, .path = path};
    o.n = 0;
    o.fd = 0;
    start(&c, &o, &nofile);
    assert_true(c.failed); /* known at once: the owner can say "down", not "connecting" */
    assert_true(run_until(loop, &o.n, 1, DEADLINE_S));
    assert_false(c.failed);
    assert_int_equal(o.fd, -1);
    assert_int_equal(o.err, ENOENT);
    assert_string_equal(o.reason, "connect failed");
    /* A path too long for sun_path. */
    char lng[200];
    memset(lng, 'x', sizeof lng - 1);
    lng[0] = '/';
    lng[sizeof lng - 1] = '\0';
    hy_endpoint toolong = {.kind = HY_EP_UNIX, .path = lng};
    o.n = 0;
    start(&c, &o, &toolong);
    assert_true(run_until(loop, &o.n, 1, DEADLINE_S));
    assert_int_equal(o.fd, -1);
    assert_int_equal(o.err, ENAMETOOLONG);
    assert_string_equal(o.reason, "socket path too long");
    /* on_done may start the connector again: it is idle by then. */
    o.n = 0;
    o.retry = &nofile;
    start(&c, &o, &tcp);
    assert_true(run_until(loop, &o.n, 2, DEADLINE_S));
    assert_int_equal(o.err, ENOENT); /* the second outcome */
    run_for(loop, 0.05);
    assert_int_equal(o.n, 2);
    close(holder);
    ev_loop_destroy(loop);
}

static void test_connector_cancel(void **state)
{
    (void)state;
    char dir[PATH_MAX], path[PATH_MAX + 32];
    assert_int_equal(hy_test_mkdtemp("net", dir), 0);
    snprintf(path, sizeof path, "%s/bus.sock", dir);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    hy_acceptor a;
    hy_err err = {{0}};
    accepted acc = {.n = 0};
    assert_int_equal(hy_acceptor_open_unix(&a, loop, path, "listen", "test", &err), 0);
    a.on_accept = on_accept;
    a.data = &acc;
    hy_acceptor_start(&a);
    hy_connector c;
    outcome o = {.fd = -1};
    hy_connector_init(&c, loop, 2.0, on_done, &o);
    /* A deferred failure, cancelled before the loop runs: never told. */
    char lng[200];
    memset(lng, 'x', sizeof lng - 1);
    lng[0] = '/';
    lng[sizeof lng - 1] = '\0';
    hy_endpoint toolong = {.kind = HY_EP_UNIX, .path = lng};
    start(&c, &o, &toolong);
    hy_connector_cancel(&c);
    /* A connection made, cancelled: its fd is closed (the server sees EOF). */
    hy_endpoint ep = {.kind = HY_EP_UNIX, .path = path};
    start(&c, &o, &ep);
    assert_true(c.fd >= 0);
    hy_connector_cancel(&c);
    assert_int_equal(c.fd, -1);
    assert_false(c.active);
    assert_true(run_until(loop, &acc.n, 1, DEADLINE_S));
    char b;
    assert_true(wait_readable(acc.fds[0]));
    assert_int_equal(read(acc.fds[0], &b, 1), 0);
    /* Started twice: the first attempt is abandoned, one outcome. */
    start(&c, &o, &toolong);
    start(&c, &o, &ep);
    assert_true(run_until(loop, &o.n, 1, DEADLINE_S));
    run_for(loop, 0.05);
    assert_int_equal(o.n, 1);
    assert_true(o.fd >= 0);
    close(o.fd);
    hy_acceptor_close(&a);
    close_accepted(&acc);
    ev_loop_destroy(loop);
    hy_test_rmtree(dir);
}

/* Linux drops a SYN while the accept queue is full, so a connect to a
 * listener with backlog 0 and one unaccepted connection hangs. */
static void test_connector_timeout(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(l, 0), 0);
    uint16_t port = local_port(l);
    int fill[2];
    for (int i = 0; i < 2; i++) {
        sa.sin_port = htons(port);
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(connect(fill[i], (struct sockaddr *)&sa, sizeof sa) == 0 || errno == EINPROGRESS);
    }
    hy_connector c;
    outcome o = {.fd = 0};
    hy_connector_init(&c, loop, 0.2, on_done, &o);
    hy_endpoint ep = {.kind = HY_EP_TCP, .host = "127.0.0.1", .port = port};
    double t0 = ev_time();
    start(&c, &o, &ep);
    assert_true(run_until(loop, &o.n, 1, DEADLINE_S));
    if (o.err == 0) { /* this kernel took it after all: nothing to time out */
        close(o.fd);
        print_message("the kernel accepted past the backlog: timeout not exercised\n");
    } else {
        assert_int_equal(o.fd, -1);
        assert_int_equal(o.err, ETIMEDOUT);
        assert_string_equal(o.reason, "connect timed out");
        assert_true(ev_time() - t0 >= 0.2 * 0.9);
    }
    close(fill[0]);
    close(fill[1]);
    close(l);
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_queue_epipe_not_sigpipe),
        cmocka_unit_test(test_write_queue_partial_writes_in_order),
        cmocka_unit_test(test_acceptor_unix),
        cmocka_unit_test(test_acceptor_unix_stale_and_foreign_files),
        cmocka_unit_test(test_acceptor_tcp),
        cmocka_unit_test(test_acceptor_tcp_tries_every_address),
        cmocka_unit_test(test_acceptor_emfile_pause),
        cmocka_unit_test(test_connector_unix),
        cmocka_unit_test(test_connector_localhost),
        cmocka_unit_test(test_connector_resolves_off_the_loop),
        cmocka_unit_test(test_connector_next_address_after_refused),
        cmocka_unit_test(test_connector_failures),
        cmocka_unit_test(test_connector_cancel),
        cmocka_unit_test(test_connector_timeout),
    };
    return cmocka_run_group_tests_name("net", tests, NULL, NULL);
}
