/* bench_spawn_baseline.c - what the OS alone costs, for comparison:
 *
 *   bench_spawn_baseline respawn N WORKER FILE
 *       run `WORKER stamp FILE` N times, respawning as soon as waitpid
 *       returns (the floor under any supervisor's restart latency)
 *   bench_spawn_baseline burst N WORKER FILE
 *       start N `WORKER start FILE` at once (the floor under start-up time),
 *       wait until FILE has N lines, kill them all
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t spawn(const char *worker, const char *mode, const char *file)
{
    pid_t p = fork();
    if (p == 0) {
        execl(worker, worker, mode, file, (char *)NULL);
        _exit(127);
    }
    return p;
}

static int count_lines(const char *file)
{
    FILE *f = fopen(file, "r");
    if (!f)
        return 0;
    int n = 0, c;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 5)
        return 2;
    int n = atoi(argv[2]);
    const char *worker = argv[3], *file = argv[4];
    if (strcmp(argv[1], "respawn") == 0) {
        for (int i = 0; i < n; i++) {
            pid_t p = spawn(worker, "stamp", file);
            if (p < 0)
                return 1;
            while (waitpid(p, NULL, 0) < 0)
                if (errno != EINTR)
                    return 1;
        }
        return 0;
    }
    if (strcmp(argv[1], "burst") == 0) {
        pid_t *pids = calloc((size_t)n, sizeof *pids);
        if (!pids)
            return 1;
        for (int i = 0; i < n; i++)
            pids[i] = spawn(worker, "start", file);
        struct timespec ms = {0, 1000000};
        while (count_lines(file) < n)
            nanosleep(&ms, NULL);
        for (int i = 0; i < n; i++)
            if (pids[i] > 0)
                kill(pids[i], SIGKILL);
        for (int i = 0; i < n; i++)
            if (pids[i] > 0)
                waitpid(pids[i], NULL, 0);
        free(pids);
        return 0;
    }
    return 2;
}
