/* uprobe.h - before an upgrade, `PATH --upgrade-probe` must answer as a
 * hyphad does (a line starting "hyphad upgrade-probe", exit 0): a binary
 * that cannot even start is refused before anything is handed over. It
 * runs beside the loop, never blocking it (a binary that hangs is killed at
 * the deadline). */
#ifndef HYPHA_UPROBE_H
#define HYPHA_UPROBE_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "hypha/err.h"

#define HY_PROBE_LINE "hyphad upgrade-probe"
#define HY_PROBE_TIMEOUT_S 3.0

typedef struct hy_probe {
    struct ev_loop *loop;
    pid_t pid;                   /* 0: none running */
    int fd;                      /* its stdout (-1: closed) */
    ev_child cw;
    ev_io rw;
    ev_timer tw;
    bool timed_out;
    char out[128];
    size_t got;
    char path[4096];
    /* It answered (ok), or not (why says how); the probe is idle again. */
    void (*done)(struct hy_probe *p, bool ok, const char *why);
    void *data;
} hy_probe;

void hy_probe_init(hy_probe *p, struct ev_loop *loop);
/* Run `path --upgrade-probe`. -1 with err if it cannot be started (or one
 * is running already). */
int hy_probe_start(hy_probe *p, const char *path, hy_err *err);
bool hy_probe_running(const hy_probe *p);
/* hyphad exits: a probe still running is killed. */
void hy_probe_stop(hy_probe *p);

#endif
