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
#include <unistd.h>

#include "benchutil.h"

#define MAXCONN 64
#define FAN_TYPE 1001
#define FAN_SIZE 64

typedef struct client {
    int fd;
    bu_hs hs;
} client;

static void fanout(int fd, unsigned long long count)
{
    char line[64];
    printf("connected\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        exit(1);
    const size_t flen = BU_HDR + FAN_SIZE, nf = (1u << 20) / flen;
    uint8_t *buf = malloc(nf * flen);
    if (!buf)
        exit(1);
    bu_fill_frames(buf, nf, FAN_TYPE, FAN_SIZE, 0); /* producer id 0 */
    long long t0 = bu_now_ns();
    printf("t0 %lld\n", t0);
    fflush(stdout);
    if (bu_send_frames(fd, buf, nf, flen, count) < 0) {
        fprintf(stderr, "relay_bus: write: %s\n", strerror(errno));
        exit(1);
    }
    printf("sent %lld\n", bu_now_ns());
    fflush(stdout);
    free(buf);
}

int main(int argc, char **argv)
{
    if (argc < 3 || strlen(argv[2]) != BU_DIGEST_HEX) {
        fprintf(stderr, "usage: relay_bus PATH HEXDIGEST [--fanout COUNT]\n");
        return 2;
    }
    uint8_t digest[32];
    bu_digest(digest, argv[2]);
    long long fan = -1;
    if (argc >= 5 && !strcmp(argv[3], "--fanout"))
        fan = atoll(argv[4]);
    signal(SIGPIPE, SIG_IGN);

    int lfd = bu_listen_unix(argv[1]);
    if (lfd < 0) {
        perror("relay_bus: listen");
        return 1;
    }
    printf("listening\n");
    fflush(stdout);

    client cl[MAXCONN];
    int ep = epoll_create1(EPOLL_CLOEXEC);
    bu_epoll_add(ep, lfd, MAXCONN);
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
                int slot = 0;
                while (slot < MAXCONN && cl[slot].fd >= 0)
                    slot++;
                if (slot == MAXCONN) { /* no room: refuse it */
                    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                    if (fd >= 0)
                        close(fd);
                    continue;
                }
                cl[slot].fd = bu_accept(lfd, ep, (uint32_t)slot);
                cl[slot].hs.have = 0;
                continue;
            }
            client *c = &cl[k];
            ssize_t n = read(c->fd, buf, sizeof buf);
            if (n < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (n <= 0) {
                bu_unwatch(ep, c->fd);
                c->fd = -1;
                if (fanned)
                    return 0; /* fan-out done and the client left */
                continue;
            }
            const uint8_t *p = buf;
            size_t len = (size_t)n;
            int hs = bu_hs_feed(&c->hs, digest, &p, &len);
            if (hs < 0) {
                fprintf(stderr, "relay_bus: bad handshake: dropping the client\n");
                bu_unwatch(ep, c->fd);
                c->fd = -1;
                continue;
            }
            if (hs > 0 && fan >= 0 && !fanned) {
                fanned = 1;
                fanout(c->fd, (unsigned long long)fan);
            }
            if (len == 0 || fan >= 0)
                continue;
            if (bu_write_all(c->fd, p, len) < 0) {
                bu_unwatch(ep, c->fd);
                c->fd = -1;
            }
        }
    }
}
