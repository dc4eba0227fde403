/* benchutil.c - helpers shared by the relay benchmark programs; see
 * benchutil.h. */
#define _GNU_SOURCE
#include "benchutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

long long bu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void bu_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

void bu_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

void bu_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

uint16_t bu_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

uint32_t bu_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t bu_get_u64(const uint8_t *p) { return (uint64_t)bu_get_u32(p) | (uint64_t)bu_get_u32(p + 4) << 32; }

void bu_fill_frames(uint8_t *buf, size_t nf, uint16_t type, uint32_t size, uint32_t id)
{
    size_t flen = BU_HDR + (size_t)size;
    memset(buf, 0xA5, nf * flen);
    for (size_t j = 0; j < nf; j++) {
        uint8_t *f = buf + j * flen;
        bu_put_u16(f, type);
        bu_put_u32(f + 2, size);
        bu_put_u32(f + 6, id);
    }
}

int bu_send_frames(int fd, uint8_t *buf, size_t nf, size_t flen, uint64_t count)
{
    uint64_t seq = 0;
    while (seq < count) {
        size_t k = count - seq < nf ? (size_t)(count - seq) : nf;
        for (size_t j = 0; j < k; j++)
            bu_put_u64(buf + j * flen + 10, seq++);
        if (bu_write_all(fd, buf, k * flen) < 0)
            return -1;
    }
    return 0;
}

static unsigned hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return (unsigned)(ch - '0');
    if (ch >= 'a' && ch <= 'f')
        return (unsigned)(ch - 'a' + 10);
    if (ch >= 'A' && ch <= 'F')
        return (unsigned)(ch - 'A' + 10);
    return ~0u; /* as before: a bad digit makes a digest no one sends */
}

void bu_digest(uint8_t out[32], const char *hex)
{
    for (int k = 0; k < 32; k++)
        out[k] = (uint8_t)(hexval(hex[2 * k]) << 4 | hexval(hex[2 * k + 1]));
}

void bu_handshake(uint8_t out[BU_HS_LEN], const char *hex)
{
    out[0] = 32;
    out[1] = 0;
    bu_digest(out + 2, hex);
}

int bu_hs_feed(bu_hs *h, const uint8_t digest[32], const uint8_t **p, size_t *len)
{
    if (h->have >= BU_HS_LEN)
        return 0;
    size_t take = BU_HS_LEN - h->have < *len ? BU_HS_LEN - h->have : *len;
    memcpy(h->buf + h->have, *p, take);
    h->have += take;
    *p += take;
    *len -= take;
    if (h->have < BU_HS_LEN)
        return 0;
    return h->buf[0] == 32 && h->buf[1] == 0 && memcmp(h->buf + 2, digest, 32) == 0 ? 1 : -1;
}

static int fail_close(int fd)
{
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

static int bind_listen(int fd, const struct sockaddr *sa, socklen_t len)
{
    return bind(fd, sa, len) < 0 || listen(fd, 64) < 0 ? -1 : 0;
}

static int do_connect(int fd, const struct sockaddr *sa, socklen_t len) { return connect(fd, sa, len); }

/* A Unix stream socket on which `then` (bind_listen or do_connect) was done
 * with path's address; -1 if either failed (errno set). */
static int unix_socket(const char *path, int (*then)(int, const struct sockaddr *, socklen_t))
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (then(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        return fail_close(fd);
    return fd;
}

int bu_listen_unix(const char *path)
{
    unlink(path);
    return unix_socket(path, bind_listen);
}

int bu_connect_unix(const char *path) { return unix_socket(path, do_connect); }

int bu_listen_tcp_loopback(int port, int *bound)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind_listen(fd, (struct sockaddr *)&sa, len) < 0 || getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
        return fail_close(fd);
    *bound = ntohs(sa.sin_port);
    return fd;
}

int bu_epoll_add(int ep, int fd, uint32_t tag)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = tag};
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

int bu_accept(int lfd, int ep, uint32_t tag)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0)
        bu_epoll_add(ep, fd, tag);
    return fd;
}

void bu_unwatch(int ep, int fd)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
}

int bu_write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

ssize_t bu_read(int fd, void *buf, size_t n)
{
    ssize_t r;
    while ((r = read(fd, buf, n)) < 0 && errno == EINTR) {
    }
    return r;
}

void bu_drain(int fd)
{
    char sink[4096];
    while (bu_read(fd, sink, sizeof sink) > 0) {
    }
}
