/* cgroup.h - cgroup2 directories that hold a worker and all it starts.
 *
 * A process can leave its process group (setsid, setpgid, a daemon's
 * double fork) but not its cgroup: everything a worker started is in the
 * worker instance's cgroup, and one write of "1" to its cgroup.kill
 * (Linux 5.14) SIGKILLs all of it. The layout is
 *
 *     <base>/hypha-<hyphad's pid>/<worker>-<index>/
 *
 * where <base> is hyphad's own cgroup (hy_cgroup_self) or a configured
 * directory. hyphad stays in <base>; nothing is ever written to a
 * cgroup.subtree_control, so no controller is enabled and cgroup v2's
 * no-internal-process rule never applies. These are a few system calls on
 * small files each; what allocates says so.
 */
#ifndef HYPHA_CGROUP_H
#define HYPHA_CGROUP_H

#include <stdbool.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "hypha/err.h"

typedef struct hy_cgroup {
    char *top;  /* <base>/hypha-<pid>, made by hy_cgroup_open (owned); NULL: not used */
    bool adopt; /* set before hy_cgroup_open after an upgrade: hypha-<pid> holds our
                   workers already and is kept as it is, never emptied */
} hy_cgroup;

/* hyphad's own cgroup2 directory: the `0::/path` line of /proc/self/cgroup
 * under the cgroup2 mount of /proc/self/mountinfo (or /proc/mounts). 0, or
 * -1 with err saying why there is none. */
int hy_cgroup_self(char *out, size_t len, hy_err *err);

/* Make (or reuse, emptied) <base>/hypha-<pid> and check that it can hold
 * workers: <base> is a cgroup2 directory, the new one has cgroup.kill, and
 * both cgroup.procs are writable. 0 with cg->top set (malloc'd), or -1 with
 * err naming the directory and the reason; nothing is left behind. */
int hy_cgroup_open(hy_cgroup *cg, const char *base, hy_err *err);

/* Kill everything under `top`, wait up to timeout_ms for it to be empty,
 * then remove every directory in it and itself. 0, or -1 with err (what is
 * left). Best effort, for hyphad's exit and for the warden. */
int hy_cgroup_remove_tree(const char *top, int timeout_ms, hy_err *err);
/* hy_cgroup_remove_tree of cg->top, then cg->top freed. */
int hy_cgroup_close(hy_cgroup *cg, int timeout_ms, hy_err *err);

/* "<top>/<name>-<index>" (malloc'd); NULL on ENOMEM. */
char *hy_cgroup_child(const hy_cgroup *cg, const char *name, unsigned index);

/* mkdir `dir`; one that exists already is reused, emptied first (its
 * cgroup.kill). 0, or -1 with err. */
int hy_cgroup_make(const char *dir, hy_err *err);
/* rmdir: fails (EBUSY) while a process is in it. 0, or -1 with err and errno. */
int hy_cgroup_remove(const char *dir, hy_err *err);

/* Write "1" to its cgroup.kill: SIGKILL to every process in it and below,
 * sent before the write returns. 0, or -1 with err. */
int hy_cgroup_kill(const char *dir, hy_err *err);

/* The processes in it now (cgroup.procs): *n of them, the first `max` in
 * pids (which may be NULL when max is 0). Allocates while reading. 0, or
 * -1 with err. */
int hy_cgroup_pids(const char *dir, pid_t *pids, size_t max, size_t *n, hy_err *err);

/* Wait until `populated 0` in its cgroup.events (poll(2) on the file: the
 * kernel wakes it when the value changes), at most timeout_ms. true when
 * it is empty. Zombies do not count: an exited process has left it. */
bool hy_cgroup_wait_empty(const char *dir, int timeout_ms);

#endif
