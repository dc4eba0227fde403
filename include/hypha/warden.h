/* warden.h - fate sharing: workers die with hyphad, even on `kill -9`.
 *
 * The parent-death signal reaches only a worker itself, not the processes it
 * started. So hyphad forks a tiny warden process at start-up that holds the
 * read end of a pipe only hyphad can write to. hyphad registers each worker's
 * process group with it. When the warden reads EOF without having been told
 * to quit, hyphad is gone: it SIGKILLs every registered group and, when
 * hyphad contains its workers in cgroups, writes cgroup.kill of the
 * hypha-<pid> cgroup (which reaches what left its group), removes those
 * cgroups once empty (waiting at most a second), and exits. It ignores
 * SIGINT/SIGTERM/SIGHUP/SIGUSR1/SIGUSR2 and lives in its own process group (and in hyphad's
 * cgroup, not its workers'), so a terminal's Ctrl-C or a group kill aimed
 * at hyphad does not take it first.
 */
#ifndef HYPHA_WARDEN_H
#define HYPHA_WARDEN_H

#include <sys/types.h>

#include "hypha/err.h"

typedef struct hy_warden {
    pid_t pid;   /* 0 when not running */
    int fd;      /* write end of the command pipe, close-on-exec; -1 if none */
} hy_warden;

/* cgroup_top: hyphad's hypha-<pid> cgroup, or NULL. */
int hy_warden_start(hy_warden *w, const char *cgroup_top, hy_err *err);
/* Register / forget a process group. -1 if the warden is gone (err set). */
int hy_warden_add(hy_warden *w, pid_t pgid, hy_err *err);
int hy_warden_remove(hy_warden *w, pid_t pgid, hy_err *err);
/* Clean shutdown: the warden exits without killing anything. */
void hy_warden_quit(hy_warden *w);

#endif
