/* supervisor.h - runs the workers of a topology on a libev loop.
 *
 * Each worker instance is a small state machine (worker.c):
 *
 *   starting -> running -> (exit) -> backoff -> starting ...
 *                                 -> failed  (gave up; retried every retry_after)
 *                                 -> exited  (restart never, or on-failure after exit 0)
 *   any live state -> stopping -> stopped    (operator or shutdown)
 *
 * Exits are learnt from SIGCHLD (a pid-0 child watcher, which also reaps
 * orphans when hyphad is a subreaper), never from pipe EOF. The supervisor
 * is opaque: the control plane names instances through the accessors below
 * and reads state through a snapshot (hypha/view.h).
 */
#ifndef HYPHA_SUPERVISOR_H
#define HYPHA_SUPERVISOR_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hypha/err.h"
#include "hypha/tail.h"
#include "hypha/topology.h"
#include "hypha/view.h"

typedef struct hy_sup hy_sup;
typedef struct hy_instance hy_instance;
struct hy_relay;
struct json_t;

/* Who hears of what happens (the daemon and the control plane). */
typedef struct hy_sup_observers {
    void (*on_change)(void *ud);  /* an instance changed state */
    void *ud;
    /* a worker wrote a line to stderr */
    void (*on_line)(void *ud, const char *worker, unsigned index, const char *line, size_t len);
    void *line_ud;
} hy_sup_observers;

/* Makes every instance (stopped) and the relay (listen endpoints bound).
 * NULL with err. `t` stays the caller's. */
hy_sup *hy_sup_new(struct ev_loop *loop, const hy_topology *t, hy_err *err);
void hy_sup_free(hy_sup *s);
/* -1 with err only after an upgrade, when the state does not fit. */
int hy_sup_start_all(hy_sup *s, hy_err *err);
/* An upgrade: 0 if now is a moment for one, else -1 and why (something is
 * in the middle of a change: try again); then everything it supervises into
 * the state (-1 with err on ENOMEM). */
struct hy_ustate;
int hy_sup_upgrade_ready(const hy_sup *s, char *why, size_t len);
int hy_sup_save(hy_sup *s, struct hy_ustate *u, hy_err *err);
/* Graceful stop of every instance, in parallel; `done` once none is left. */
void hy_sup_stop_all(hy_sup *s, void (*done)(hy_sup *));
/* SIGKILL every live worker group now (second SIGTERM). */
void hy_sup_kill_all(hy_sup *s);
/* Live processes (any state with a pid). */
size_t hy_sup_live(const hy_sup *s);
bool hy_sup_shutting_down(const hy_sup *s);
/* Some exited process's output still waits in its pipe (back-pressure). */
bool hy_sup_output_held(const hy_sup *s);
/* Every instance was started once (or waits for a predecessor): systemd READY. */
bool hy_sup_all_started(const hy_sup *s);

hy_sup_observers *hy_sup_observe(hy_sup *s);
/* The contracts file's watcher, for snapshots (stays the caller's; NULL: none). */
struct hy_schemawatch;
void hy_sup_set_schemawatch(hy_sup *s, const struct hy_schemawatch *w);
const hy_topology *hy_sup_topology(const hy_sup *s);
struct hy_relay *hy_sup_relay(hy_sup *s);

/* Instances in table order, for naming (retiring ones included). */
size_t hy_sup_count(const hy_sup *s);
hy_instance *hy_sup_at(const hy_sup *s, size_t i);
const char *hy_inst_worker(const hy_instance *in);
unsigned hy_inst_index(const hy_instance *in);
bool hy_inst_retiring(const hy_instance *in);
const hy_tail *hy_inst_tail(const hy_instance *in);

/* A snapshot of the instances `sel` (NULL: all) and the links, at `now`. */
int hy_sup_snapshot(const hy_sup *s, double now, hy_instance *const *sel, size_t nsel, hy_snapshot *out);

/* Operator commands (hyphactl). start: run it now if it is not running,
 * clearing backoff, give-up and `failed`; stop: graceful stop, stays
 * stopped; restart: stop if running, then start (as start). Each returns
 * the instance's state and pid after the command. */
void hy_sup_start_instance(hy_instance *in);
void hy_sup_stop_instance(hy_instance *in);
void hy_sup_restart_instance(hy_instance *in);
/* preload: worker's fork server is replaced (its modules imported again). */
void hy_sup_restart_preload(hy_sup *s, const char *worker);
/* hyphactl signal: sig to the instance's process group; false when it has
 * no process. */
bool hy_sup_signal_instance(hy_instance *in, int sig);
hy_state hy_inst_state(const hy_instance *in);
pid_t hy_inst_pid(const hy_instance *in);

/* Reload: apply `t` (a newly loaded topology; it becomes the current one
 * and stays the caller's; the old one passes to the supervisor, kept until
 * no instance uses it). The caller has checked that only workers differ
 * (hy_reload_check). Appends the names of workers started, stopped,
 * restarted and unchanged to the four jansson arrays. */
int hy_sup_reload(hy_sup *s, const hy_topology *t, struct json_t *started, struct json_t *stopped,
                  struct json_t *restarted, struct json_t *unchanged, hy_err *err);

#endif
