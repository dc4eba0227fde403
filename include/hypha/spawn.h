/* spawn.h - start one worker process, exactly.
 *
 * The child gets its own process group, a parent-death signal (SIGKILL), the
 * default signal dispositions and an empty signal mask, the file-descriptor
 * limit hyphad started with, its cgroup if it is given one (joined first of
 * all, so nothing it starts can be outside it), and exactly fds 0-2: stdin and stdout are pipes
 * to hyphad (frames), stderr a pipe (log lines). argv is exec'd directly,
 * never through a shell. Whether exec worked is learnt asynchronously from a
 * close-on-exec status pipe: EOF means the program is running; a record means
 * a step failed, with its errno, and the child has exited 127.
 */
#ifndef HYPHA_SPAWN_H
#define HYPHA_SPAWN_H

#include <stdbool.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "hypha/err.h"

#define HY_SPAWN_MAX_LIMITS 16

/* Who the child becomes and its limits, all numbers (names are looked up by
 * the parent: a vfork child calls nothing but system calls). Applied in
 * this order: limits, umask, groups, gid, uid; then the parent-death
 * signal (a change of credentials clears it) and chdir (as the new user). */
typedef struct hy_spawn_creds {
    bool drop_caps;          /* hyphad is not root but holds capabilities: the worker gets none */
    bool set_ids;
    uid_t uid;
    gid_t gid;
    const gid_t *groups;
    size_t ngroups;
    bool set_umask;
    mode_t umask;
    size_t nlimits;
    struct {
        int resource;
        struct rlimit rl;
    } limits[HY_SPAWN_MAX_LIMITS];
} hy_spawn_creds;

typedef struct hy_spawn_req {
    const char *path;       /* absolute path of the program */
    char *const *argv;
    char *const *envp;
    const char *cwd;        /* NULL: inherit */
    size_t pipe_size;       /* F_SETPIPE_SZ for its stdin and stdout; 0: the kernel's default (64 KiB) */
    const char *cgroup_procs; /* NULL or "": none; else the cgroup.procs the child writes "0" to
                                 (failure: stage "cgroup") */
    const hy_spawn_creds *creds; /* NULL: as hyphad (failures: stages "setrlimit", "setgroups",
                                    "setgid", "setuid") */
    const int *stdin_fd;    /* NULL: its stdin is a pipe from hyphad; else this fd (the caller's:
                               a fork server's socket), and res->in_fd is -1 */
} hy_spawn_req;

typedef struct hy_spawn_res {
    pid_t pid;              /* also the process group id */
    int in_fd;              /* worker's stdin: write end, O_NONBLOCK */
    int out_fd;             /* worker's stdout: read end, O_NONBLOCK */
    int err_fd;             /* worker's stderr: read end, O_NONBLOCK */
    int status_fd;          /* spawn status: read end, O_NONBLOCK */
} hy_spawn_res;             /* every fd close-on-exec */

typedef enum hy_spawn_stage {
    HY_SPAWN_OK = 0,
    HY_SPAWN_PENDING = 1,   /* nothing to read yet */
    HY_SPAWN_FAILED = 2,    /* *stage_name and *errnum say what */
} hy_spawn_state;

/* hyphad is not root and holds capabilities (its workers get none). */
bool hy_spawn_holds_caps(void);

/* Remember hyphad's original RLIMIT_NOFILE for children, then raise the soft
 * limit to the hard one for hyphad itself (it holds 4 fds per worker). */
void hy_spawn_init_limits(void);

/* Fork and exec. On failure to even fork/pipe, returns -1 with err (no
 * child). Otherwise 0; the child's fate arrives on status_fd. */
int hy_spawn(const hy_spawn_req *req, hy_spawn_res *res, hy_err *err);

/* The size of each worker's stdin and stdout pipes, for `instances`
 * workers: 256 KiB, so that one of hyphad's 256 KiB reads fits whole on
 * either side (fan-out to 100 workers 0.18x -> 0.93x of a tee; one worker's
 * 64 B frames to the bus 1.0x -> 1.8x of socat: docs/performance.md), but
 * all of them together within a budget: half of fs.pipe-user-pages-soft for
 * an unprivileged user (past it, that user's new pipes get two pages), 64
 * MiB for root (which the soft limit does not hold). Halved until it fits;
 * 0 (the kernel's 64 KiB) when nothing larger does. */
size_t hy_spawn_pipe_size(size_t instances);

/* Close every fd >= lowfd except `keep` (-1: none). Async-signal-safe;
 * for a freshly forked child. */
void hy_close_fds_from(int lowfd, int keep);

/* Read the status pipe (non-blocking). */
hy_spawn_state hy_spawn_status(int status_fd, const char **stage_name, int *errnum);

#endif
