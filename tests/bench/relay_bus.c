/* relay_bus.c - a minimal Mycelium-like bus for the relay benchmarks
 * (bench_relay.py).
 *
 *   relay_bus PATH HEX                      echo mode
 *   relay_bus PATH HEX --fanout COUNT       fan-out mode
 *
 * Listens on PATH. Every client must first send the handshake
 * `u16 LE 32 | 32-byte digest` equal to HEX (else it is dropped).
 *
 * Echo mode: every byte a client sends after its handshake is written back to
 * that client (a Mycelium endpoint echoes frames to their sender; with one
 * client that is the whole fan-out). Prints "listening" once bound.
 *
 * Fan-out mode: once the first client's handshake is in, prints "connected",
 * waits for a line on stdin (the start signal), prints "t0 <ns>" (CLOCK_MONOTONIC)
 * and writes COUNT frames of type 1001 with a 64-byte payload
 * `u32 0 | u64 seq | filler` in 1 MiB writes, prints "sent <ns>", then
 * discards what the client sends until it disconnects.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define HS_LEN 34
#define MAXCONN 64
#define FAN_TYPE 1001
#define FAN_SIZE 64

typedef struct client {
    int fd;
    size_t hs_have;
    uint8_t hs[HS_LEN];
} client;

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
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

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static void fanout(int fd, unsigned long long count)
{
    char line[64];
    printf("connected\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        exit(1);
    const size_t flen = 6 + FAN_SIZE, nf = (1u << 20) / flen;
    uint8_t *buf = malloc(nf * flen);
    if (!buf)
        exit(1);
    memset(buf, 0xA5, nf * flen);
    for (size_t j = 0; j < nf; j++) {
        uint8_t *f = buf + j * flen;
        f[0] = FAN_TYPE & 0xff;
        f[1] = FAN_TYPE >> 8;
        f[2] = FAN_SIZE;
        f[3] = f[4] = f[5] = 0;
        memset(f + 6, 0, 4); /* producer id 0 */
    }
    long long t0 = now_ns();
    printf("t0 %lld\n", t0);
    fflush(stdout);
    unsigned long long seq = 0;
    while (seq < count) {
        size_t k = count - seq < nf ? (size_t)(count - seq) : nf;
        for (size_t j = 0; j < k; j++, seq++)
            for (int b = 0; b < 8; b++)
                buf[j * flen + 10 + b] = (uint8_t)(seq >> (8 * b));
        if (write_all(fd, buf, k * flen) < 0) {
            fprintf(stderr, "relay_bus: write: %s\n", strerror(errno));
            exit(1);
        }
    }
    printf("sent %lld\n", now_ns());
    fflush(stdout);
    free(buf);
}

int main(int argc, char **argv)
{
    if (argc < 3 || strlen(argv[2]) != 64) {
        fprintf(stderr, "usage: relay_bus PATH HEXDIGEST [--fanout COUNT]\n");
        return 2;
    }
    uint8_t digest[32];
    for (int k = 0; k < 32; k++)
        digest[k] = (uint8_t)(hexval(argv[2][2 * k]) << 4 | hexval(argv[2][2 * k + 1]));
    long long fan = -1;
    if (argc >= 5 && !strcmp(argv[3], "--fanout"))
        fan = atoll(argv[4]);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", argv[1]);
    unlink(argv[1]);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 64) < 0) {
        perror("relay_bus: listen");
        return 1;
    }
    printf("listening\n");
    fflush(stdout);

    client cl[MAXCONN];
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = MAXCONN};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    for (int i = 0; i < MAXCONN; i++)
        cl[i].fd = -1;
    static uint8_t buf[1u << 18];
    int fanned = 0;
    for (;;) {
        struct epoll_event evs[16];
        int ne = epoll_wait(ep, evs, 16, -1);
        if (ne < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        for (int e = 0; e < ne; e++) {
            uint32_t k = evs[e].data.u32;
            if (k == MAXCONN) {
                int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                if (fd < 0)
                    continue;
                int slot = -1;
                for (int i = 0; i < MAXCONN && slot < 0; i++)
                    if (cl[i].fd < 0)
                        slot = i;
                if (slot < 0) {
                    close(fd);
                    continue;
                }
                cl[slot].fd = fd;
                cl[slot].hs_have = 0;
                struct epoll_event cev = {.events = EPOLLIN, .data.u32 = (uint32_t)slot};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                continue;
            }
            client *c = &cl[k];
            ssize_t n = read(c->fd, buf, sizeof buf);
            if (n < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (n <= 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                if (fanned)
                    return 0; /* fan-out done and the client left */
                continue;
            }
            const uint8_t *p = buf;
            size_t len = (size_t)n;
            if (c->hs_have < HS_LEN) {
                size_t take = HS_LEN - c->hs_have < len ? HS_LEN - c->hs_have : len;
                memcpy(c->hs + c->hs_have, p, take);
                c->hs_have += take;
                p += take;
                len -= take;
                if (c->hs_have == HS_LEN) {
                    if (c->hs[0] != 32 || c->hs[1] != 0 || memcmp(c->hs + 2, digest, 32) != 0) {
                        fprintf(stderr, "relay_bus: bad handshake: dropping the client\n");
                        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                        close(c->fd);
                        c->fd = -1;
                        continue;
                    }
                    if (fan >= 0 && !fanned) {
                        fanned = 1;
                        fanout(c->fd, (unsigned long long)fan);
                    }
                }
            }
            if (len == 0 || fan >= 0)
                continue;
            if (write_all(c->fd, p, len) < 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
            }
        }
    }
}
