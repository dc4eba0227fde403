/* relay_sink.c - the receiving end of the relay throughput benchmark
 * (bench_relay.py): a Unix (and TCP, or TLS) socket server that counts and
 * checks frames.
 *
 *   relay_sink PATH NCONN TYPE SIZE PRODUCERS PER_PRODUCER
 *              [--handshake HEX] [--timeout SECONDS] [--tcp PORT]
 *              [--tls CERT KEY]
 *
 * Listens on PATH and, with --tcp, also on 127.0.0.1:PORT (0: a free port);
 * with --tls the TCP connections are TLS, the server presenting CERT and
 * KEY (benchtls.h). Accepts NCONN connections in all, on either; with
 * --handshake each one must
 * start with `u16 LE 32 | 32-byte digest` equal to HEX (what hyphad sends).
 * Prints "listening" once bound ("listening 127.0.0.1:PORT" with --tcp, the
 * port it got) and "connected" once all NCONN connections
 * are in (and their handshakes read), then reads every connection and checks
 * each frame: type TYPE, length SIZE, payload `u32 id | u64 seq` with
 * id < PRODUCERS and seq exactly the next one expected from that producer.
 * When PRODUCERS * PER_PRODUCER frames have arrived it prints one JSON line
 * {"frames", "payload_bytes", "wire_bytes", "elapsed_ns"} (with --tls also
 * "tls": the protocol and cipher every TLS connection agreed, "mixed" if
 * they differ) where elapsed runs
 * from the first frame byte read to the last, and exits 0 after 200 ms in
 * which nothing more arrived. A bad frame, a
 * lost/duplicated/reordered one or a timeout exits 1 with a message.
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

#define MAXCONN 256
#define TAG_UNIX MAXCONN /* epoll tags of the listening sockets */
#define TAG_TCP (MAXCONN + 1)
#define RBUF (1u << 20)
#define LINGER_NS 200000000LL /* after the last frame, for extra ones */

typedef struct conn {
    int fd;
    struct ssl_st *ssl;    /* over TLS */
    bu_hs hs;
    size_t have;           /* bytes of the current frame seen */
    size_t flen;           /* its total length, once the header is in */
    uint8_t pre[BU_PREFIX];
} conn;

static uint16_t want_type;
static uint32_t want_size;
static uint32_t nprod;
static uint64_t *next_seq;
static uint64_t frames, expect;
/* the connections and how far they are */
static int nconn, ready, handshake, done;
static uint8_t digest[32];
static uint8_t *buf;
static long long t_first, t_last, deadline;
static char tls_agreed[64];

static void fail(const char *fmt, unsigned long long a, unsigned long long b, unsigned long long c)
{
    fprintf(stderr, "relay_sink: FAIL: ");
    fprintf(stderr, fmt, a, b, c);
    fprintf(stderr, " (after %llu good frames)\n", (unsigned long long)frames);
    exit(1);
}

/* Walk a chunk of a connection's stream; frames are checked once their
 * first BU_PREFIX bytes are in and counted once complete. */
static void feed(conn *c, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (c->have < BU_PREFIX) {
            size_t take = BU_PREFIX - c->have < n ? BU_PREFIX - c->have : n;
            memcpy(c->pre + c->have, p, take);
            c->have += take;
            p += take;
            n -= take;
            if (c->have < BU_PREFIX)
                return;
            uint16_t type = bu_get_u16(c->pre);
            uint32_t len = bu_get_u32(c->pre + 2);
            if (type != want_type || len != want_size)
                fail("frame type %llu length %llu (want %llu)", type, len, want_size);
            uint32_t id = bu_get_u32(c->pre + 6);
            uint64_t seq = bu_get_u64(c->pre + 10);
            if (id >= nprod)
                fail("producer id %llu out of range (%llu producers)%llu", id, nprod, 0);
            if (seq != next_seq[id])
                fail("producer %llu: seq %llu, expected %llu (lost, duplicated or reordered)", id, seq,
                     next_seq[id]);
            next_seq[id]++;
            c->flen = BU_HDR + (size_t)len;
        }
        size_t take = c->flen - c->have < n ? c->flen - c->have : n;
        c->have += take;
        p += take;
        n -= take;
        if (c->have == c->flen) {
            c->have = 0;
            frames++;
        }
    }
}

/* One more connection is in (its handshake read): "connected" once all NCONN are. */
static void connected(void)
{
    if (++ready == nconn) {
        printf("connected\n");
        fflush(stdout);
    }
}

/* The TLS handshake of a new connection, and what it agreed noted. */
static void tls_accept(conn *c, struct ssl_ctx_st *tls)
{
    if (!(c->ssl = bt_accept(tls, c->fd)))
        exit(1);
    char agreed[sizeof tls_agreed];
    bt_describe(c->ssl, agreed, sizeof agreed);
    if (!tls_agreed[0])
        snprintf(tls_agreed, sizeof tls_agreed, "%s", agreed);
    else if (strcmp(agreed, tls_agreed))
        snprintf(tls_agreed, sizeof tls_agreed, "mixed");
}

/* One read of a connection, its bytes checked: 1 if OpenSSL holds more of
 * it (read again), 0 to wait for the socket. Exits on a failure. */
static int step(conn *c, int ep)
{
    ssize_t n = bt_read(c->ssl, c->fd, buf, RBUF);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN)
            return 0;
        perror("relay_sink: read");
        exit(1);
    }
    if (n == 0) {
        if (c->have) {
            fprintf(stderr, "relay_sink: FAIL: connection closed in the middle of a frame\n");
            exit(1);
        }
        bt_free(c->ssl);
        c->ssl = NULL;
        bu_unwatch(ep, c->fd);
        c->fd = -1;
        return 0;
    }
    const uint8_t *p = buf;
    size_t len = (size_t)n;
    if (handshake) {
        int hs = bu_hs_feed(&c->hs, digest, &p, &len);
        if (hs < 0) {
            fprintf(stderr, "relay_sink: FAIL: bad handshake\n");
            exit(1);
        }
        if (hs > 0)
            connected();
    }
    if (len > 0) {
        if (done) {
            fprintf(stderr, "relay_sink: FAIL: %zu bytes after the last expected frame\n", len);
            exit(1);
        }
        if (!t_first)
            t_first = bu_now_ns();
        feed(c, p, len);
        if (frames >= expect && !done) {
            /* Stay a moment: a frame sent twice would arrive now. */
            t_last = bu_now_ns();
            done = 1;
            deadline = t_last + LINGER_NS;
        }
    }
    return bt_pending(c->ssl);
}

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: relay_sink PATH NCONN TYPE SIZE PRODUCERS PER_PRODUCER [--handshake HEX] "
                        "[--timeout S] [--tcp PORT] [--tls CERT KEY]\n");
        return 2;
    }
    const char *path = argv[1];
    nconn = atoi(argv[2]);
    want_type = (uint16_t)strtoul(argv[3], NULL, 0);
    want_size = (uint32_t)strtoul(argv[4], NULL, 0);
    nprod = (uint32_t)strtoul(argv[5], NULL, 0);
    uint64_t per = strtoull(argv[6], NULL, 0);
    expect = (uint64_t)nprod * per;
    double timeout_s = 120;
    int tcp_port = -1;
    struct ssl_ctx_st *tls = NULL;
    for (int i = 7; i < argc; i++) {
        if (!strcmp(argv[i], "--handshake") && i + 1 < argc) {
            const char *h = argv[++i];
            if (strlen(h) != BU_DIGEST_HEX)
                return 2;
            bu_digest(digest, h);
            handshake = 1;
        } else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            timeout_s = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--tcp") && i + 1 < argc) {
            tcp_port = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--tls") && i + 2 < argc) {
            tls = bt_server(argv[i + 1], argv[i + 2]);
            i += 2;
        } else {
            fprintf(stderr, "relay_sink: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (nconn < 1 || nconn > MAXCONN || want_size < 12 || nprod == 0 || (tls && tcp_port < 0))
        return 2;
    signal(SIGPIPE, SIG_IGN);
    next_seq = calloc(nprod, sizeof *next_seq);
    conn *conns = calloc((size_t)nconn, sizeof *conns);
    buf = malloc(RBUF);
    if (!next_seq || !conns || !buf)
        return 1;

    int lfd = bu_listen_unix(path);
    if (lfd < 0) {
        perror("relay_sink: listen");
        return 1;
    }
    int tfd = -1, bound = 0;
    if (tcp_port >= 0 && (tfd = bu_listen_tcp_loopback(tcp_port, &bound)) < 0) {
        perror("relay_sink: listen tcp");
        return 1;
    }
    if (tfd >= 0)
        printf("listening 127.0.0.1:%d\n", bound);
    else
        printf("listening\n");
    fflush(stdout);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    int accepted = 0;
    bu_epoll_add(ep, lfd, TAG_UNIX);
    if (tfd >= 0)
        bu_epoll_add(ep, tfd, TAG_TCP);
    deadline = bu_now_ns() + (long long)(timeout_s * 1e9);
    for (;;) {
        struct epoll_event evs[64];
        long long left_ms = (deadline - bu_now_ns()) / 1000000;
        if (left_ms <= 0 && done)
            break; /* lingered: nothing extra came */
        if (left_ms <= 0) {
            fprintf(stderr, "relay_sink: FAIL: timed out with %llu of %llu frames (%d connections)\n",
                    (unsigned long long)frames, (unsigned long long)expect, accepted);
            return 1;
        }
        int ne = epoll_wait(ep, evs, 64, (int)(left_ms > 1000 ? 1000 : left_ms));
        if (ne < 0 && errno != EINTR) {
            perror("relay_sink: epoll_wait");
            return 1;
        }
        for (int e = 0; e < ne; e++) {
            uint32_t k = evs[e].data.u32;
            if (k == TAG_UNIX || k == TAG_TCP) {
                int fd = bu_accept(k == TAG_TCP ? tfd : lfd, ep, (uint32_t)accepted);
                if (fd < 0)
                    continue;
                if (accepted >= nconn) {
                    fprintf(stderr, "relay_sink: FAIL: more than %d connections\n", nconn);
                    return 1;
                }
                conn *c = &conns[accepted++];
                c->fd = fd;
                if (!handshake)
                    connected();
                if (k == TAG_TCP && tls) {
                    tls_accept(c, tls);
                    /* Bytes that came with the handshake's last are read already. */
                    if (bt_pending(c->ssl))
                        while (step(c, ep)) {
                        }
                }
                continue;
            }
            while (step(&conns[k], ep)) {
            }
        }
    }
    for (uint32_t i = 0; i < nprod; i++)
        if (next_seq[i] != per) {
            fprintf(stderr, "relay_sink: FAIL: producer %u sent %llu frames, expected %llu\n", i,
                    (unsigned long long)next_seq[i], (unsigned long long)per);
            return 1;
        }
    for (int i = 0; i < accepted; i++)
        if (conns[i].have) {
            fprintf(stderr, "relay_sink: FAIL: a partial frame after the last one\n");
            return 1;
        }
    printf("{\"frames\": %llu, \"payload_bytes\": %llu, \"wire_bytes\": %llu, \"elapsed_ns\": %lld",
           (unsigned long long)frames, (unsigned long long)(frames * want_size),
           (unsigned long long)(frames * (BU_HDR + (uint64_t)want_size)), t_last - t_first);
    if (tls)
        printf(", \"tls\": \"%s\"", tls_agreed);
    printf("}\n");
    fflush(stdout);
    unlink(path);
    return 0;
}
