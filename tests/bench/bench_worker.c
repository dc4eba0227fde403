/* bench_worker.c - the smallest worker, for supervision benchmarks.
 *
 *   bench_worker stamp FILE   append "S <ns>" at entry and "E <ns>" just
 *                             before exiting: restart latency is the gap
 *                             from one E to the next S
 *   bench_worker start FILE   append "S <ns>", then sleep until killed
 *   bench_worker idle         sleep until killed
 * Times are CLOCK_MONOTONIC nanoseconds. One write(2) per line, O_APPEND.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void stamp(const char *file, char tag, long long t)
{
    int fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    char line[64];
    int n = snprintf(line, sizeof line, "%c %lld\n", tag, t);
    if (write(fd, line, (size_t)n) != n) {
        /* a benchmark stamp lost is visible as a missing sample */
    }
    close(fd);
}

int main(int argc, char **argv)
{
    long long t0 = now_ns();
    if (argc >= 3 && strcmp(argv[1], "stamp") == 0) {
        stamp(argv[2], 'S', t0);
        stamp(argv[2], 'E', now_ns());
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "start") == 0)
        stamp(argv[2], 'S', t0);
    else if (argc < 2 || strcmp(argv[1], "idle") != 0)
        return 2;
    for (;;)
        pause();
}
