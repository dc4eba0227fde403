/* warden.c - the fate-sharing helper process (see hypha/warden.h).
 *
 * Protocol on the pipe: fixed 8-byte records {op, pgid}: '+' register,
 * '-' forget, 'q' quit quietly. EOF without 'q' kills every registered group
 * and, when hyphad uses cgroups, everything under its hypha-<pid> cgroup
 * (the path is the warden's from the fork: no record carries it).
 */
#define _GNU_SOURCE
#include "hypha/warden.h"

#include "hypha/cgroup.h"
#include "hypha/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

struct rec {
    int32_t op;
    int32_t pgid;
};

#define CGROUP_WAIT_MS 1000 /* for the killed to be gone before their cgroups are removed */

/* hyphad is gone: take its workers with it. */
__attribute__((noreturn)) static void take_all(const pid_t *groups, size_t n, const char *cgroup_top)
{
    hy_err err;
    for (size_t i = 0; i < n; i++)
        kill(-groups[i], SIGKILL);
    if (cgroup_top) /* what left its group cannot leave its cgroup */
        (void)hy_cgroup_remove_tree(cgroup_top, CGROUP_WAIT_MS, &err);
    _exit(0);
}

static void warden_main(int rfd, const char *cgroup_top)
{
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGUSR1, SIG_IGN); /* `pkill -USR2 hyphad` (an upgrade) reaches it too: its cmdline is hyphad's */
    signal(SIGUSR2, SIG_IGN);
    (void)setpgid(0, 0);
    (void)prctl(PR_SET_NAME, "hyphad-warden");
    size_t cap = 64, n = 0;
    pid_t *groups = malloc(cap * sizeof *groups);
    for (;;) {
        struct rec r;
        ssize_t got = 0;
        while (got < (ssize_t)sizeof r) {
            ssize_t k = read(rfd, (char *)&r + got, sizeof r - (size_t)got);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                take_all(groups, n, cgroup_top);
            got += k;
        }
        if (r.op == 'q')
            _exit(0);
        if (r.op == '+' && r.pgid > 1) {
            if (n == cap) {
                pid_t *ng = groups ? realloc(groups, cap * 2 * sizeof *ng) : NULL;
                if (ng) {
                    groups = ng;
                    cap *= 2;
                }
            }
            if (groups && n < cap)
                groups[n++] = r.pgid;
        } else if (r.op == '-') {
            for (size_t i = 0; i < n; i++)
                if (groups[i] == r.pgid) {
                    groups[i] = groups[--n];
                    break;
                }
        }
    }
}

int hy_warden_start(hy_warden *w, const char *cgroup_top, hy_err *err)
{
    int p[2];
    w->pid = 0;
    w->fd = -1;
    if (pipe2(p, O_CLOEXEC) < 0)
        return hy_err_set(err, "warden pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(p[0]);
        close(p[1]);
        return hy_err_set(err, "warden fork: %s", strerror(e));
    }
    if (pid == 0) {
        close(p[1]);
        /* Keep only the pipe and stdio: a warden started while workers run
         * must not hold their pipes open (they would never see EOF). */
        hy_close_fds_from(3, p[0]);
        warden_main(p[0], cgroup_top);
    }
    close(p[0]);
    /* Never let a stuck warden block the loop: a full pipe is an error. */
    int fl = fcntl(p[1], F_GETFL);
    if (fl < 0 || fcntl(p[1], F_SETFL, fl | O_NONBLOCK) < 0) {
        int e = errno;
        close(p[1]);
        kill(pid, SIGKILL);
        return hy_err_set(err, "warden fcntl: %s", strerror(e));
    }
    w->pid = pid;
    w->fd = p[1];
    return 0;
}

static int send_rec(hy_warden *w, int op, pid_t pgid, hy_err *err)
{
    if (w->fd < 0)
        return hy_err_set(err, "warden is not running");
    struct rec r = {op, (int32_t)pgid};
    ssize_t k;
    do {
        k = write(w->fd, &r, sizeof r); /* 8 bytes < PIPE_BUF: atomic */
    } while (k < 0 && errno == EINTR);
    if (k != (ssize_t)sizeof r)
        return hy_err_set(err, "warden: %s", k < 0 ? strerror(errno) : "short write");
    return 0;
}

int hy_warden_add(hy_warden *w, pid_t pgid, hy_err *err) { return send_rec(w, '+', pgid, err); }
int hy_warden_remove(hy_warden *w, pid_t pgid, hy_err *err) { return send_rec(w, '-', pgid, err); }

void hy_warden_quit(hy_warden *w)
{
    hy_err err;
    if (w->fd >= 0) {
        (void)send_rec(w, 'q', 0, &err);
        close(w->fd);
        w->fd = -1;
    }
}
