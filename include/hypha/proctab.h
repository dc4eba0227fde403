/* proctab.h - the process table, as /proc shows it.
 *
 * Without a cgroup, what a worker left behind when it escaped its process
 * group (setsid, setpgid, a double fork) can only be found by its
 * ancestry: processes below a live worker, and hyphad's own children that
 * are not its workers (hyphad is a subreaper: orphans are reparented to
 * it). Reading is I/O; finding descendants and reading an environment
 * block are pure, for tests.
 */
#ifndef HYPHA_PROCTAB_H
#define HYPHA_PROCTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "hypha/err.h"

typedef struct hy_proc {
    pid_t pid, ppid, pgid;
} hy_proc;

typedef struct hy_proctab {
    hy_proc *p;  /* sorted by pid (owned) */
    size_t n;
} hy_proctab;

/* Every process now that has not exited (zombies are left out). 0, or -1
 * with err. */
int hy_proctab_read(hy_proctab *t, hy_err *err);
void hy_proctab_free(hy_proctab *t);

/* One /proc/PID/stat line: "pid (comm) state ppid pgrp ..." (comm may hold
 * spaces and parentheses). true with *p and *state. */
bool hy_proc_parse_stat(const char *line, hy_proc *p, char *state);

/* Extend take[] (one flag per process of t) from those taken to all their
 * descendants. */
void hy_proctab_descendants(const hy_proctab *t, bool *take);

/* The environment a process was started with (/proc/PID/environ):
 * malloc'd, *len bytes plus a NUL. NULL with err (gone, or another user's). */
char *hy_proc_environ(pid_t pid, size_t *len, hy_err *err);
/* The value of `key` in an environment block (NUL-separated KEY=VALUE
 * entries, `len` bytes), or NULL. */
const char *hy_env_find(const char *env, size_t len, const char *key);

#endif
