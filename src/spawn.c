/* spawn.c - fork/exec of workers (see hypha/spawn.h).
 *
 * Between fork and exec the child only makes async-signal-safe calls: the
 * environment and argv are prepared by the parent. A failing step writes one
 * fixed-size record {stage, errno} to the status pipe and _exits 127.
 */
#define _GNU_SOURCE
#include "hypha/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

enum {
    ST_SETPGID = 1, ST_PDEATHSIG, ST_DUP, ST_CHDIR, ST_EXEC, ST_PARENT, ST_CGROUP,
    ST_RLIMIT, ST_GROUPS, ST_SETGID, ST_SETUID, ST_CAPS, ST__LAST = ST_CAPS
};

static const char *stage_names[] = {
    [ST_SETPGID] = "setpgid", [ST_PDEATHSIG] = "prctl",     [ST_DUP] = "dup2",         [ST_CHDIR] = "chdir",
    [ST_EXEC] = "exec",       [ST_PARENT] = "parent died",  [ST_CGROUP] = "cgroup",    [ST_RLIMIT] = "setrlimit",
    [ST_GROUPS] = "setgroups", [ST_SETGID] = "setgid",      [ST_SETUID] = "setuid",    [ST_CAPS] = "capset",
};

struct status_rec {
    int stage;
    int errnum;
};

static struct rlimit child_nofile;
static int have_child_nofile;

bool hy_spawn_holds_caps(void)
{
    static int known = -1; /* asked once: hyphad's capabilities do not change */
    if (known < 0) {
        struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct d[2];
        known = geteuid() != 0 && syscall(SYS_capget, &h, d) == 0 &&
                (d[0].permitted | d[1].permitted | d[0].inheritable | d[1].inheritable) != 0;
    }
    return known == 1;
}

void hy_spawn_init_limits(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        child_nofile = rl;
        have_child_nofile = 1;
        if (rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            (void)setrlimit(RLIMIT_NOFILE, &rl); /* best effort: keep the old one */
        }
    }
}

/* Close every end opened so far and report `what` failed with errno e. */
static int fail_pipes(int pipes[4][2], const char *what, int e, hy_err *err)
{
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 2; k++)
            if (pipes[i][k] >= 0)
                close(pipes[i][k]);
    return hy_err_set(err, "%s: %s", what, strerror(e));
}

__attribute__((noreturn)) static void child_fail(int fd, int stage)
{
    struct status_rec r = {stage, errno};
    ssize_t w = write(fd, &r, sizeof r);
    (void)w;
    _exit(127);
}

/* Move fd out of the 0-2 range so dup2 onto 0-2 cannot clobber it. */
static int lift(int fd)
{
    if (fd > 2)
        return fd;
    int n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    return n;
}

void hy_close_fds_from(int lowfd, int keep)
{
    /* close_range(2) exists since Linux 5.9; fall back to a loop. */
#ifdef SYS_close_range
    bool ok = true;
    if (keep > lowfd)
        ok = syscall(SYS_close_range, (unsigned)lowfd, (unsigned)keep - 1, 0u) == 0;
    if (ok)
        ok = syscall(SYS_close_range, (unsigned)(keep >= lowfd ? keep + 1 : lowfd), ~0u, 0u) == 0;
    if (ok)
        return;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 1048576)
        max = 1048576;
    for (int fd = lowfd; fd < max; fd++)
        if (fd != keep)
            close(fd);
}

/* The child moves itself into its cgroup: "0" is "the writer". System
 * calls only; -1 with errno. */
static int join_cgroup(const char *procs)
{
    int fd = open(procs, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, "0", 1);
    int e = w == 1 ? 0 : w < 0 ? errno : EIO;
    close(fd);
    errno = e;
    return e ? -1 : 0;
}

/* Limits, umask and credentials (see hy_spawn_creds). The raw system
 * calls, not glibc's setuid family: glibc would signal every thread of
 * hyphad to change theirs too, and this vfork child shares hyphad's memory
 * but none of its threads. Returns 0, or the failed stage with errno set. */
static int become(const hy_spawn_creds *c)
{
    if (have_child_nofile)
        (void)setrlimit(RLIMIT_NOFILE, &child_nofile); /* hyphad's raised soft limit is not the worker's */
    if (!c)
        return 0;
    for (size_t i = 0; i < c->nlimits; i++)
        if (setrlimit(c->limits[i].resource, &c->limits[i].rl) < 0)
            return ST_RLIMIT;
    if (c->set_umask)
        umask(c->umask);
    if (!c->set_ids)
        return 0;
    if (syscall(SYS_setgroups, c->ngroups, c->groups) < 0)
        return ST_GROUPS;
    if (syscall(SYS_setresgid, c->gid, c->gid, c->gid) < 0)
        return ST_SETGID;
    if (syscall(SYS_setresuid, c->uid, c->uid, c->uid) < 0)
        return ST_SETUID;
    return 0;
}

/* A hyphad that holds capabilities without being root (systemd's
 * AmbientCapabilities=CAP_SETUID ...) passes none to its workers: a uid
 * change between two non-root users keeps them, and ambient ones survive
 * execve. */
static int drop_caps(void)
{
    (void)prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); /* EINVAL before Linux 4.3: none to clear */
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    return syscall(SYS_capset, &h, d) < 0 ? ST_CAPS : 0;
}

/* What the child needs, prepared by the parent before vfork. */
struct child_args {
    const hy_spawn_req *req;
    int in_r, out_w, err_w, status_w;
    pid_t parent;
};

/* The vfork child. A function of its own, never inlined and never returning,
 * so its locals live in a frame below hyphad's and cannot overwrite a
 * variable the parent reads once vfork returns. System calls only. */
__attribute__((noinline, noreturn)) static void child_exec(const struct child_args *a)
{
    int sfd = a->status_w;
    sigset_t none;
    sigemptyset(&none);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            (void)sigaction(sig, &dfl, NULL); /* our own table: no CLONE_SIGHAND */
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* First: contained before it can start anything. */
    if (a->req->cgroup_procs && a->req->cgroup_procs[0] && join_cgroup(a->req->cgroup_procs) < 0)
        child_fail(sfd, ST_CGROUP);
    if (setpgid(0, 0) < 0)
        child_fail(sfd, ST_SETPGID);
    int i = lift(a->in_r), o = lift(a->out_w), e = lift(a->err_w);
    sfd = lift(sfd);
    if (i < 0 || o < 0 || e < 0 || sfd < 0 || dup2(i, 0) < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
        child_fail(sfd >= 0 ? sfd : a->status_w, ST_DUP);
    int stage = become(a->req->creds);
    if (!stage && a->req->creds && a->req->creds->drop_caps)
        stage = drop_caps();
    if (stage)
        child_fail(sfd, stage);
    /* After the credentials: changing them clears the parent-death signal. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
        child_fail(sfd, ST_PDEATHSIG);
    if (getppid() != a->parent) {
        errno = ESRCH;
        child_fail(sfd, ST_PARENT);
    }
    if (a->req->cwd && chdir(a->req->cwd) < 0) /* as the worker's user */
        child_fail(sfd, ST_CHDIR);
    hy_close_fds_from(3, sfd); /* exactly 0-2 survive exec; sfd is CLOEXEC */
    execve(a->req->path, a->req->argv, a->req->envp);
    child_fail(sfd, ST_EXEC);
}

int hy_spawn(const hy_spawn_req *req, hy_spawn_res *res, hy_err *err)
{
    int pipes[4][2] = {{-1, -1}, {-1, -1}, {-1, -1}, {-1, -1}};
    int *in = pipes[0], *out = pipes[1], *er = pipes[2], *st = pipes[3];
    for (int i = req->stdin_fd ? 1 : 0; i < 4; i++)
        if (pipe2(pipes[i], O_CLOEXEC) < 0)
            return fail_pipes(pipes, "pipe", errno, err);
    int child_in = req->stdin_fd ? *req->stdin_fd : in[0]; /* the caller's is not closed here */
    pid_t parent = getpid();
    /* vfork: the child borrows hyphad's memory until exec, so there is no
     * page-table copy (what makes fork slow for a large parent). Safe here
     * because (1) every signal is blocked across it, so no libev handler
     * can run in the child on hyphad's memory, and (2) the child makes only
     * system calls until execve or _exit. Its errno writes land in ours,
     * which nothing reads after a successful vfork. */
    const struct child_args ca = {req, child_in, out[1], er[1], st[1], parent};
    sigset_t all, old;
    sigfillset(&all);
    if (sigprocmask(SIG_SETMASK, &all, &old) < 0)
        return fail_pipes(pipes, "sigprocmask", errno, err);
    pid_t pid = vfork();
    int vfork_errno = errno;
    if (pid != 0)
        sigprocmask(SIG_SETMASK, &old, NULL);
    if (pid < 0)
        return fail_pipes(pipes, "vfork", vfork_errno, err);
    if (pid == 0)
        child_exec(&ca);
    if (in[0] >= 0)
        close(in[0]);
    close(out[1]);
    close(er[1]);
    close(st[1]);
    int fds[4] = {in[1], out[0], er[0], st[0]};
    for (int i = req->stdin_fd ? 1 : 0; i < 4; i++) {
        int fl = fcntl(fds[i], F_GETFL);
        if (fl < 0 || fcntl(fds[i], F_SETFL, fl | O_NONBLOCK) < 0) {
            /* A blocking fd would stall the loop: give up this spawn. */
            int e = errno;
            kill(pid, SIGKILL);
            while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
            }
            for (int k = req->stdin_fd ? 1 : 0; k < 4; k++)
                close(fds[k]);
            return hy_err_set(err, "fcntl(O_NONBLOCK): %s", strerror(e));
        }
    }
    /* Also set the group from the parent: whichever runs first wins, and
     * killpg works as soon as hy_spawn returns. EACCES after exec is fine. */
    (void)setpgid(pid, pid);
    /* Best effort: refused (EPERM over the user's pipe budget, EBUSY), the
     * pipe keeps the default size and works the same, only slower. */
    if (req->pipe_size && !req->stdin_fd) {
        (void)fcntl(in[1], F_SETPIPE_SZ, (int)req->pipe_size);
        (void)fcntl(out[0], F_SETPIPE_SZ, (int)req->pipe_size);
    }
    res->pid = pid;
    res->in_fd = in[1];
    res->out_fd = out[0];
    res->err_fd = er[0];
    res->status_fd = st[0];
    return 0;
}

hy_spawn_state hy_spawn_status(int status_fd, const char **stage_name, int *errnum)
{
    struct status_rec r;
    ssize_t n;
    do {
        n = read(status_fd, &r, sizeof r);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN ? HY_SPAWN_PENDING : HY_SPAWN_OK;
    if (n == 0)
        return HY_SPAWN_OK;
    if (n != (ssize_t)sizeof r || r.stage <= 0 || r.stage > ST__LAST) {
        *stage_name = "spawn";
        *errnum = EIO;
        return HY_SPAWN_FAILED;
    }
    *stage_name = stage_names[r.stage];
    *errnum = r.errnum;
    return HY_SPAWN_FAILED;
}

#define PIPE_MAX (256u * 1024)
#define PIPE_DEFAULT (64u * 1024)
#define ROOT_PIPE_BUDGET (64u << 20) /* root is not held to the soft limit; hyphad holds itself to this */

size_t hy_spawn_pipe_size(size_t instances)
{
    static long soft_pages = -2; /* read once */
    if (soft_pages == -2) {
        soft_pages = 16384; /* the kernel's default, if /proc cannot say */
        FILE *f = fopen("/proc/sys/fs/pipe-user-pages-soft", "re");
        if (f) {
            long v;
            if (fscanf(f, "%ld", &v) == 1 && v >= 0)
                soft_pages = v;
            fclose(f);
        }
    }
    size_t budget = geteuid() == 0 ? ROOT_PIPE_BUDGET
                    : soft_pages > 0 ? (size_t)soft_pages * 4096 / 2
                                     : ROOT_PIPE_BUDGET;
    size_t size = PIPE_MAX;
    if (instances > 0)
        while (size > PIPE_DEFAULT && size * 2 * instances > budget)
            size /= 2; /* the kernel rounds to a power of two pages anyway */
    return size > PIPE_DEFAULT ? size : 0;
}
