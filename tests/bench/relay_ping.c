/* relay_ping.c - round-trip latency probe for the relay benchmark
 * (bench_relay.py).
 *
 *   relay_ping stdio OUT WARMUP K [--wait]
 *       frames out on stdout, echoes in on stdin: as a hyphad worker, or
 *       with socat on the other end of both pipes
 *   relay_ping connect PATH HEX OUT WARMUP K
 *       connect to a bus socket, send the handshake `u16 LE 32 | digest`
 *
 * Sends one frame (type 1001, 64-byte payload `u32 0 | u64 seq | filler`),
 * waits for it to come back, and repeats: WARMUP untimed rounds, then K timed
 * ones (CLOCK_MONOTONIC around write .. last byte read). Control frames
 * (type 0, from hyphad) are skipped; anything else that is not the frame just
 * sent is an error. Writes one JSON object to OUT:
 * {"n", "min_ns", "p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns", "mean_ns"}.
 * --wait: afterwards read stdin until EOF (a hyphad worker must not exit).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchutil.h"

#define TYPE 1001
#define SIZE 64
#define FLEN (BU_HDR + SIZE)

static int in_fd = 0, out_fd = 1;
static uint8_t rbuf[1 << 16];
static size_t rhead, rtail;

static void die(const char *what)
{
    fprintf(stderr, "relay_ping: FAIL: %s: %s\n", what, errno ? strerror(errno) : "");
    exit(1);
}

/* Exactly n bytes from in_fd, through a small buffer. 0 at EOF. */
static int read_exact(uint8_t *dst, size_t n)
{
    while (n > 0) {
        if (rhead == rtail) {
            ssize_t r = bu_read(in_fd, rbuf, sizeof rbuf);
            if (r <= 0)
                return 0;
            rhead = 0;
            rtail = (size_t)r;
        }
        size_t take = rtail - rhead < n ? rtail - rhead : n;
        memcpy(dst, rbuf + rhead, take);
        rhead += take;
        dst += take;
        n -= take;
    }
    return 1;
}

static void write_all(const uint8_t *p, size_t n)
{
    if (bu_write_all(out_fd, p, n) < 0)
        die("write");
}

static void round_trip(uint8_t *frame, uint64_t seq)
{
    bu_put_u64(frame + 10, seq);
    write_all(frame, FLEN);
    for (;;) {
        uint8_t h[BU_HDR];
        if (!read_exact(h, BU_HDR))
            die("EOF waiting for the echo");
        uint16_t type = bu_get_u16(h);
        uint32_t len = bu_get_u32(h + 2);
        if (type == 0) { /* control frame from hyphad: skip */
            uint8_t skip[512];
            while (len > 0) {
                size_t k = len < sizeof skip ? len : sizeof skip;
                if (!read_exact(skip, k))
                    die("EOF in a control frame");
                len -= (uint32_t)k;
            }
            continue;
        }
        uint8_t p[SIZE];
        errno = 0;
        if (type != TYPE || len != SIZE)
            die("unexpected frame type or length");
        if (!read_exact(p, SIZE))
            die("EOF in the echo");
        if (bu_get_u64(p + 4) != seq) {
            fprintf(stderr, "relay_ping: FAIL: echo of seq %llu while waiting for %llu\n",
                    (unsigned long long)bu_get_u64(p + 4), (unsigned long long)seq);
            exit(1);
        }
        return;
    }
}

static int cmp_ll(const void *a, const void *b)
{
    const long long *x = a, *y = b;
    return *x < *y ? -1 : *x > *y;
}

static long long pct(const long long *v, size_t n, double p)
{
    size_t k = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return v[k < n ? k : n - 1];
}

int main(int argc, char **argv)
{
    const char *out;
    long warm, k;
    int wait_eof = 0;
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 5 && !strcmp(argv[1], "stdio")) {
        out = argv[2];
        warm = atol(argv[3]);
        k = atol(argv[4]);
        wait_eof = argc >= 6 && !strcmp(argv[5], "--wait");
    } else if (argc >= 7 && !strcmp(argv[1], "connect") && strlen(argv[3]) == BU_DIGEST_HEX) {
        out = argv[4];
        warm = atol(argv[5]);
        k = atol(argv[6]);
        int fd = bu_connect_unix(argv[2]);
        if (fd < 0)
            die("connect");
        in_fd = out_fd = fd;
        uint8_t hs[BU_HS_LEN];
        bu_handshake(hs, argv[3]);
        write_all(hs, sizeof hs);
    } else {
        fprintf(stderr, "usage: relay_ping stdio OUT WARMUP K [--wait]\n"
                        "       relay_ping connect PATH HEX OUT WARMUP K\n");
        return 2;
    }
    if (k < 1)
        return 2;
    long long *t = malloc((size_t)k * sizeof *t);
    if (!t)
        die("malloc");
    uint8_t frame[FLEN];
    bu_fill_frames(frame, 1, TYPE, SIZE, 0);
    uint64_t seq = 0;
    for (long i = 0; i < warm; i++)
        round_trip(frame, seq++);
    for (long i = 0; i < k; i++) {
        long long a = bu_now_ns();
        round_trip(frame, seq++);
        t[i] = bu_now_ns() - a;
    }
    double sum = 0;
    for (long i = 0; i < k; i++)
        sum += (double)t[i];
    qsort(t, (size_t)k, sizeof *t, cmp_ll);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    FILE *f = fopen(tmp, "w");
    if (!f)
        die("open OUT");
    fprintf(f,
            "{\"n\": %ld, \"min_ns\": %lld, \"p50_ns\": %lld, \"p90_ns\": %lld, \"p99_ns\": %lld, "
            "\"p999_ns\": %lld, \"max_ns\": %lld, \"mean_ns\": %.0f}\n",
            k, t[0], pct(t, (size_t)k, 50), pct(t, (size_t)k, 90), pct(t, (size_t)k, 99), pct(t, (size_t)k, 99.9),
            t[k - 1], sum / (double)k);
    if (fclose(f) != 0 || rename(tmp, out) != 0)
        die("write OUT");
    free(t);
    if (wait_eof) {
        /* hyphad sends a shutdown control frame, then EOF */
        bu_drain(in_fd);
    }
    return 0;
}
