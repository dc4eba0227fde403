/* relay_sink.c - the receiving end of the relay throughput benchmark
 * (bench_relay.py): a Unix socket server that counts and checks frames.
 *
 *   relay_sink PATH NCONN TYPE SIZE PRODUCERS PER_PRODUCER
 *              [--handshake HEX] [--timeout SECONDS]
 *
 * Listens on PATH, accepts NCONN connections; with --handshake each one must
 * start with `u16 LE 32 | 32-byte digest` equal to HEX (what hyphad sends).
 * Prints "listening" once bound and "connected" once all NCONN connections
 * are in (and their handshakes read), then reads every connection and checks
 * each frame: type TYPE, length SIZE, payload `u32 id | u64 seq` with
 * id < PRODUCERS and seq exactly the next one expected from that producer.
 * When PRODUCERS * PER_PRODUCER frames have arrived it prints one JSON line
 * {"frames", "payload_bytes", "wire_bytes", "elapsed_ns"} where elapsed runs
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
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define HS_LEN 34
#define PREFIX 18 /* header + u32 id + u64 seq */
#define MAXCONN 256
#define RBUF (1u << 20)
#define LINGER_NS 200000000LL /* after the last frame, for extra ones */

typedef struct conn {
    int fd;
    size_t hs_have;
    uint8_t hs[HS_LEN];
    size_t have;           /* bytes of the current frame seen */
    size_t flen;           /* its total length, once the header is in */
    uint8_t pre[PREFIX];
} conn;

static uint16_t want_type;
static uint32_t want_size;
static uint32_t nprod;
static uint64_t *next_seq;
static uint64_t frames, expect;

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p) { return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }

static void fail(const char *fmt, unsigned long long a, unsigned long long b, unsigned long long c)
{
    fprintf(stderr, "relay_sink: FAIL: ");
    fprintf(stderr, fmt, a, b, c);
    fprintf(stderr, " (after %llu good frames)\n", (unsigned long long)frames);
    exit(1);
}

/* Walk a chunk of a connection's stream; frames are checked once their
 * first PREFIX bytes are in and counted once complete. */
static void feed(conn *c, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (c->have < PREFIX) {
            size_t take = PREFIX - c->have < n ? PREFIX - c->have : n;
            memcpy(c->pre + c->have, p, take);
            c->have += take;
            p += take;
            n -= take;
            if (c->have < PREFIX)
                return;
            uint16_t type = (uint16_t)(c->pre[0] | c->pre[1] << 8);
            uint32_t len = get_u32(c->pre + 2);
            if (type != want_type || len != want_size)
                fail("frame type %llu length %llu (want %llu)", type, len, want_size);
            uint32_t id = get_u32(c->pre + 6);
            uint64_t seq = get_u64(c->pre + 10);
            if (id >= nprod)
                fail("producer id %llu out of range (%llu producers)%llu", id, nprod, 0);
            if (seq != next_seq[id])
                fail("producer %llu: seq %llu, expected %llu (lost, duplicated or reordered)", id, seq,
                     next_seq[id]);
            next_seq[id]++;
            c->flen = 6 + (size_t)len;
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

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: relay_sink PATH NCONN TYPE SIZE PRODUCERS PER_PRODUCER [--handshake HEX] "
                        "[--timeout S]\n");
        return 2;
    }
    const char *path = argv[1];
    int nconn = atoi(argv[2]);
    want_type = (uint16_t)strtoul(argv[3], NULL, 0);
    want_size = (uint32_t)strtoul(argv[4], NULL, 0);
    nprod = (uint32_t)strtoul(argv[5], NULL, 0);
    uint64_t per = strtoull(argv[6], NULL, 0);
    expect = (uint64_t)nprod * per;
    uint8_t digest[32];
    int handshake = 0;
    double timeout_s = 120;
    for (int i = 7; i < argc; i++) {
        if (!strcmp(argv[i], "--handshake") && i + 1 < argc) {
            const char *h = argv[++i];
            if (strlen(h) != 64)
                return 2;
            for (int k = 0; k < 32; k++)
                digest[k] = (uint8_t)(hexval(h[2 * k]) << 4 | hexval(h[2 * k + 1]));
            handshake = 1;
        } else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            timeout_s = atof(argv[++i]);
        } else {
            fprintf(stderr, "relay_sink: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (nconn < 1 || nconn > MAXCONN || want_size < 12 || nprod == 0)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    next_seq = calloc(nprod, sizeof *next_seq);
    conn *conns = calloc((size_t)nconn, sizeof *conns);
    uint8_t *buf = malloc(RBUF);
    if (!next_seq || !conns || !buf)
        return 1;

    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    unlink(path);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 64) < 0) {
        perror("relay_sink: listen");
        return 1;
    }
    printf("listening\n");
    fflush(stdout);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    int accepted = 0, ready = 0, open_conns = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)MAXCONN};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    long long t_first = 0, t_last = 0, deadline = now_ns() + (long long)(timeout_s * 1e9);
    int done = 0;
    for (;;) {
        struct epoll_event evs[64];
        long long left_ms = (deadline - now_ns()) / 1000000;
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
            if (k == MAXCONN) {
                int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                if (fd < 0)
                    continue;
                if (accepted >= nconn) {
                    fprintf(stderr, "relay_sink: FAIL: more than %d connections\n", nconn);
                    return 1;
                }
                conns[accepted].fd = fd;
                struct epoll_event cev = {.events = EPOLLIN, .data.u32 = (uint32_t)accepted};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                accepted++;
                open_conns++;
                if (!handshake && ++ready == nconn) {
                    printf("connected\n");
                    fflush(stdout);
                }
                continue;
            }
            conn *c = &conns[k];
            ssize_t n = read(c->fd, buf, RBUF);
            if (n < 0) {
                if (errno == EINTR || errno == EAGAIN)
                    continue;
                perror("relay_sink: read");
                return 1;
            }
            if (n == 0) {
                if (c->have) {
                    fprintf(stderr, "relay_sink: FAIL: connection closed in the middle of a frame\n");
                    return 1;
                }
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                open_conns--;
                continue;
            }
            const uint8_t *p = buf;
            size_t len = (size_t)n;
            if (handshake && c->hs_have < HS_LEN) {
                size_t take = HS_LEN - c->hs_have < len ? HS_LEN - c->hs_have : len;
                memcpy(c->hs + c->hs_have, p, take);
                c->hs_have += take;
                p += take;
                len -= take;
                if (c->hs_have == HS_LEN) {
                    if (c->hs[0] != 32 || c->hs[1] != 0 || memcmp(c->hs + 2, digest, 32) != 0) {
                        fprintf(stderr, "relay_sink: FAIL: bad handshake\n");
                        return 1;
                    }
                    if (++ready == nconn) {
                        printf("connected\n");
                        fflush(stdout);
                    }
                }
            }
            if (len == 0)
                continue;
            if (done) {
                fprintf(stderr, "relay_sink: FAIL: %zu bytes after the last expected frame\n", len);
                return 1;
            }
            if (!t_first)
                t_first = now_ns();
            feed(c, p, len);
            if (frames >= expect && !done) {
                /* Stay a moment: a frame sent twice would arrive now. */
                t_last = now_ns();
                done = 1;
                deadline = t_last + LINGER_NS;
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
    printf("{\"frames\": %llu, \"payload_bytes\": %llu, \"wire_bytes\": %llu, \"elapsed_ns\": %lld}\n",
           (unsigned long long)frames, (unsigned long long)(frames * want_size),
           (unsigned long long)(frames * (6 + (uint64_t)want_size)), t_last - t_first);
    fflush(stdout);
    (void)open_conns;
    unlink(path);
    return 0;
}
