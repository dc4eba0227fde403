/* relay_bus.c - a minimal Mycelium-like bus for the relay benchmarks
 * (bench_relay.py).
 *
 *   relay_bus PATH HEX [--tcp PORT [--tls CERT KEY]]  echo mode
 *   relay_bus PATH HEX --fanout COUNT                 fan-out mode
 *
 * Listens on PATH and, with --tcp, also on 127.0.0.1:PORT (0: a free port);
 * with --tls the TCP clients speak TLS, the bus presenting CERT and KEY
 * (benchtls.h). Every client must first send the handshake
 * `u16 LE 32 | 32-byte digest` equal to HEX (else it is dropped).
 *
 * Echo mode: every byte a client sends after its handshake is written back to
 * that client (a Mycelium endpoint echoes frames to their sender; with one
 * client that is the whole fan-out). Prints "listening" once bound
 * ("listening 127.0.0.1:PORT" with --tcp, the port it got).
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

#include "benchtls.h"
#include "benchutil.h"

#define MAXCONN 64
#define TAG_UNIX MAXCONN /* epoll tags of the listening sockets */
#define TAG_TCP (MAXCONN + 1)
#define FAN_TYPE 1001
#define FAN_SIZE 64

typedef struct client {
    int fd;
    struct ssl_st *ssl; /* over TLS */
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

static uint8_t digest[32];
static long long fan = -1;
static int fanned;

static void drop(client *c, int ep)
{
    bt_free(c->ssl);
    c->ssl = NULL;
    bu_unwatch(ep, c->fd);
    c->fd = -1;
}

/* One read of a client: its handshake checked, the rest echoed (or, once
 * its handshake is in, the fan-out sent). 1 if OpenSSL holds more of it
 * (read again), 0 to wait for the socket. Exits when the fan-out is done
 * and the client left. */
static int step(client *c, int ep)
{
    static uint8_t buf[1u << 18];
    ssize_t n = bt_read(c->ssl, c->fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 0;
    if (n <= 0) {
        drop(c, ep);
        if (fanned)
            exit(0); /* fan-out done and the client left */
        return 0;
    }
    const uint8_t *p = buf;
    size_t len = (size_t)n;
    int hs = bu_hs_feed(&c->hs, digest, &p, &len);
    if (hs < 0) {
        fprintf(stderr, "relay_bus: bad handshake: dropping the client\n");
        drop(c, ep);
        return 0;
    }
    if (hs > 0 && fan >= 0 && !fanned) {
        fanned = 1;
        fanout(c->fd, (unsigned long long)fan);
    }
    if (len > 0 && fan < 0 && bt_write_all(c->ssl, c->fd, p, len) < 0) {
        drop(c, ep);
        return 0;
    }
    return bt_pending(c->ssl);
}

int main(int argc, char **argv)
{
    if (argc < 3 || strlen(argv[2]) != BU_DIGEST_HEX) {
        fprintf(stderr, "usage: relay_bus PATH HEXDIGEST [--tcp PORT [--tls CERT KEY]] [--fanout COUNT]\n");
        return 2;
    }
    bu_digest(digest, argv[2]);
    int tcp_port = -1;
    struct ssl_ctx_st *tls = NULL;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--fanout") && i + 1 < argc) {
            fan = atoll(argv[++i]);
        } else if (!strcmp(argv[i], "--tcp") && i + 1 < argc) {
            tcp_port = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--tls") && i + 2 < argc) {
            tls = bt_server(argv[i + 1], argv[i + 2]);
            i += 2;
        } else {
            fprintf(stderr, "relay_bus: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if ((tls && tcp_port < 0) || (tls && fan >= 0)) {
        fprintf(stderr, "relay_bus: --tls needs --tcp, and is for the echo mode only\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    int lfd = bu_listen_unix(argv[1]);
    if (lfd < 0) {
        perror("relay_bus: listen");
        return 1;
    }
    int tfd = -1, bound = 0;
    if (tcp_port >= 0 && (tfd = bu_listen_tcp_loopback(tcp_port, &bound)) < 0) {
        perror("relay_bus: listen tcp");
        return 1;
    }
    if (tfd >= 0)
        printf("listening 127.0.0.1:%d\n", bound);
    else
        printf("listening\n");
    fflush(stdout);

    client cl[MAXCONN];
    int ep = epoll_create1(EPOLL_CLOEXEC);
    bu_epoll_add(ep, lfd, TAG_UNIX);
    if (tfd >= 0)
        bu_epoll_add(ep, tfd, TAG_TCP);
    for (int i = 0; i < MAXCONN; i++)
        cl[i] = (client){.fd = -1};
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
            if (k == TAG_UNIX || k == TAG_TCP) {
                int from = k == TAG_TCP ? tfd : lfd, slot = 0;
                while (slot < MAXCONN && cl[slot].fd >= 0)
                    slot++;
                if (slot == MAXCONN) { /* no room: refuse it */
                    int fd = accept4(from, NULL, NULL, SOCK_CLOEXEC);
                    if (fd >= 0)
                        close(fd);
                    continue;
                }
                client *c = &cl[slot];
                *c = (client){.fd = bu_accept(from, ep, (uint32_t)slot)};
                if (c->fd < 0 || k != TAG_TCP || !tls)
                    continue;
                if (!(c->ssl = bt_accept(tls, c->fd)))
                    drop(c, ep);
                else if (bt_pending(c->ssl)) /* bytes that came with the handshake's last are read already */
                    while (step(c, ep)) {
                    }
                continue;
            }
            while (step(&cl[k], ep)) {
            }
        }
    }
}
