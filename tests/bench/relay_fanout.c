/* relay_fanout.c - baseline for the relay fan-out benchmark (bench_relay.py):
 * the least a relay must do to give one bus stream to N local processes.
 *
 *   relay_fanout PATH HEX N BYTES COUNTER [ARGS...]
 *
 * Starts N copies of `COUNTER ARGS...`, each with its stdin on a pipe and
 * HYPHA_INSTANCE=0..N-1 in its environment; connects to the bus at PATH and
 * sends the handshake `u16 LE 32 | digest HEX`; then reads the stream in
 * 256 KiB reads and writes each read, as is, to every pipe in turn (blocking
 * writes, no parsing, no queues). After BYTES bytes it closes the pipes,
 * waits for the counters and exits 0 if they all exited 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "benchutil.h"

int main(int argc, char **argv)
{
    if (argc < 6 || strlen(argv[2]) != BU_DIGEST_HEX) {
        fprintf(stderr, "usage: relay_fanout PATH HEX N BYTES COUNTER [ARGS...]\n");
        return 2;
    }
    int n = atoi(argv[3]);
    unsigned long long total = strtoull(argv[4], NULL, 0), got = 0;
    if (n < 1)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    int *fds = calloc((size_t)n, sizeof *fds);
    pid_t *pids = calloc((size_t)n, sizeof *pids);
    if (!fds || !pids)
        return 1;
    for (int i = 0; i < n; i++) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0) {
            perror("relay_fanout: pipe");
            return 1;
        }
        pid_t pid = fork();
        if (pid < 0) {
            perror("relay_fanout: fork");
            return 1;
        }
        if (pid == 0) {
            char num[16];
            snprintf(num, sizeof num, "%d", i);
            setenv("HYPHA_INSTANCE", num, 1);
            dup2(p[0], 0);
            execv(argv[5], argv + 5);
            _exit(127);
        }
        close(p[0]);
        fds[i] = p[1];
        pids[i] = pid;
    }

    int fd = bu_connect_unix(argv[1]);
    if (fd < 0) {
        perror("relay_fanout: connect");
        return 1;
    }
    uint8_t hs[BU_HS_LEN];
    bu_handshake(hs, argv[2]);
    if (bu_write_all(fd, hs, sizeof hs) < 0)
        return 1;

    static uint8_t buf[1 << 18];
    int rc = 0;
    while (got < total) {
        size_t want = total - got < sizeof buf ? (size_t)(total - got) : sizeof buf;
        ssize_t r = bu_read(fd, buf, want);
        if (r <= 0) {
            fprintf(stderr, "relay_fanout: FAIL: the bus closed after %llu of %llu bytes\n", got, total);
            rc = 1;
            break;
        }
        got += (unsigned long long)r;
        for (int i = 0; i < n; i++)
            if (bu_write_all(fds[i], buf, (size_t)r) < 0) {
                fprintf(stderr, "relay_fanout: FAIL: write to counter %d: %s\n", i, strerror(errno));
                return 1;
            }
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    for (int i = 0; i < n; i++) {
        int st;
        while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR) {
        }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            rc = 1;
    }
    close(fd);
    return rc;
}
