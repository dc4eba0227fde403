/* uprobe.c - the upgrade probe, beside the loop (see hypha/uprobe.h). */
#define _GNU_SOURCE
#include "hypha/uprobe.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void read_out(hy_probe *p)
{
    while (p->fd >= 0 && p->got < sizeof p->out - 1) {
        ssize_t n = read(p->fd, p->out + p->got, sizeof p->out - 1 - p->got);
        if (n > 0) {
            p->got += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || errno != EAGAIN) {
            ev_io_stop(p->loop, &p->rw);
            close(p->fd);
            p->fd = -1;
        }
        break;
    }
    p->out[p->got] = '\0';
}

static void rw_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    read_out(w->data);
}

/* Its watchers stopped, its stdout closed. */
static void idle(hy_probe *p)
{
    ev_child_stop(p->loop, &p->cw);
    ev_timer_stop(p->loop, &p->tw);
    if (p->fd >= 0) {
        ev_io_stop(p->loop, &p->rw);
        close(p->fd);
        p->fd = -1;
    }
    p->pid = 0;
}

static void finish(hy_probe *p, int status)
{
    read_out(p); /* what it wrote before it exited */
    idle(p);
    char why[256];
    bool ok = false;
    if (p->timed_out)
        snprintf(why, sizeof why, "it did not answer --upgrade-probe within %.0f s", HY_PROBE_TIMEOUT_S);
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || strncmp(p->out, HY_PROBE_LINE, strlen(HY_PROBE_LINE)))
        snprintf(why, sizeof why, "it does not answer --upgrade-probe as a hyphad does (%s %d)",
                 WIFEXITED(status) ? "exit" : "signal", WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    else
        ok = true;
    if (p->done)
        p->done(p, ok, ok ? NULL : why);
}

static void cw_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)loop;
    (void)revents;
    finish(w->data, w->rstatus);
}

static void tw_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_probe *p = w->data;
    p->timed_out = true;
    if (p->pid > 0)
        kill(-p->pid, SIGKILL); /* its exit comes through cw */
}

void hy_probe_init(hy_probe *p, struct ev_loop *loop)
{
    memset(p, 0, sizeof *p);
    p->loop = loop;
    p->fd = -1;
    ev_init(&p->rw, rw_cb);
    ev_init(&p->tw, tw_cb);
    p->rw.data = p->tw.data = p->cw.data = p;
}

bool hy_probe_running(const hy_probe *p) { return p->pid > 0; }

int hy_probe_start(hy_probe *p, const char *path, hy_err *err)
{
    int fds[2];
    if (p->pid > 0)
        return hy_err_set(err, "a probe is running already");
    if (pipe2(fds, O_CLOEXEC) < 0)
        return hy_err_set(err, "upgrade probe: pipe: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawnattr_t at; /* its own process group: a hung one is killed with what it started */
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&at, 0);
    char *argv[] = {(char *)path, "--upgrade-probe", NULL};
    pid_t pid;
    int e = posix_spawn(&pid, path, &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(fds[1]);
    if (e != 0) {
        close(fds[0]);
        return hy_err_set(err, "%s: cannot run it: %s", path, strerror(e));
    }
    int fl = fcntl(fds[0], F_GETFL);
    if (fl >= 0)
        (void)fcntl(fds[0], F_SETFL, fl | O_NONBLOCK);
    snprintf(p->path, sizeof p->path, "%s", path);
    p->pid = pid;
    p->fd = fds[0];
    p->got = 0;
    p->out[0] = '\0';
    p->timed_out = false;
    ev_io_set(&p->rw, p->fd, EV_READ);
    ev_io_start(p->loop, &p->rw);
    ev_child_init(&p->cw, cw_cb, pid, 0);
    p->cw.data = p;
    ev_child_start(p->loop, &p->cw);
    ev_timer_set(&p->tw, HY_PROBE_TIMEOUT_S, 0.0);
    ev_timer_start(p->loop, &p->tw);
    return 0;
}

void hy_probe_stop(hy_probe *p)
{
    if (p->pid > 0) {
        kill(-p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
    }
    idle(p);
}
