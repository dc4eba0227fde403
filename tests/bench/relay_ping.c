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
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define TYPE 1001
#define SIZE 64
#define FLEN (6 + SIZE)

static int in_fd = 0, out_fd = 1;
static uint8_t rbuf[1 << 16];
static size_t rhead, rtail;

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

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
            ssize_t r = read(in_fd, rbuf, sizeof rbuf);
            if (r < 0 && errno == EINTR)
                continue;
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
    while (n > 0) {
        ssize_t w = write(out_fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die("write");
        }
        p += w;
        n -= (size_t)w;
    }
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void round_trip(uint8_t *frame, uint64_t seq)
{
    for (int b = 0; b < 8; b++)
        frame[10 + b] = (uint8_t)(seq >> (8 * b));
    write_all(frame, FLEN);
    for (;;) {
        uint8_t h[6];
        if (!read_exact(h, 6))
            die("EOF waiting for the echo");
        uint16_t type = (uint16_t)(h[0] | h[1] << 8);
        uint32_t len = (uint32_t)h[2] | (uint32_t)h[3] << 8 | (uint32_t)h[4] << 16 | (uint32_t)h[5] << 24;
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
        if (get_u64(p + 4) != seq) {
            fprintf(stderr, "relay_ping: FAIL: echo of seq %llu while waiting for %llu\n",
                    (unsigned long long)get_u64(p + 4), (unsigned long long)seq);
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
    const char *out;
    long warm, k;
    int wait_eof = 0;
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 5 && !strcmp(argv[1], "stdio")) {
        out = argv[2];
        warm = atol(argv[3]);
        k = atol(argv[4]);
        wait_eof = argc >= 6 && !strcmp(argv[5], "--wait");
    } else if (argc >= 7 && !strcmp(argv[1], "connect") && strlen(argv[3]) == 64) {
        out = argv[4];
        warm = atol(argv[5]);
        k = atol(argv[6]);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", argv[2]);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
            die("connect");
        in_fd = out_fd = fd;
        uint8_t hs[34] = {32, 0};
        for (int i = 0; i < 32; i++)
            hs[2 + i] = (uint8_t)(hexval(argv[3][2 * i]) << 4 | hexval(argv[3][2 * i + 1]));
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
    memset(frame, 0xA5, sizeof frame);
    frame[0] = TYPE & 0xff;
    frame[1] = TYPE >> 8;
    frame[2] = SIZE;
    frame[3] = frame[4] = frame[5] = 0;
    memset(frame + 6, 0, 4);
    uint64_t seq = 0;
    for (long i = 0; i < warm; i++)
        round_trip(frame, seq++);
    for (long i = 0; i < k; i++) {
        long long a = now_ns();
        round_trip(frame, seq++);
        t[i] = now_ns() - a;
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
        uint8_t sink[4096];
        for (;;) {
            ssize_t n = read(in_fd, sink, sizeof sink);
            if (n == 0 || (n < 0 && errno != EINTR))
                break;
        }
    }
    return 0;
}
