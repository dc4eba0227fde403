/* instance.h - the supervisor's private records: one worker instance, and
 * the supervisor that holds them. Shared by the worker files (sup.c,
 * worker.c, wio.c, wproto.c, inst.c) and nothing else: observers read a
 * snapshot (hypha/view.h), operators go through hypha/supervisor.h.
 *
 * Who owns what: sup.c allocates instances (each alone, so watchers never
 * move) and frees them; worker.c owns the process and its timers; wio.c
 * owns the pipes' fds and watchers; the instance's sink, source and
 * subscriber are registered with the relay for as long as it exists.
 */
#ifndef HYPHA_INSTANCE_H
#define HYPHA_INSTANCE_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "hypha/backoff.h"
#include "hypha/bus.h"
#include "hypha/cgroup.h"
#include "hypha/drops.h"
#include "hypha/exitplan.h"
#include "hypha/failstreak.h"
#include "hypha/relay.h"
#include "hypha/route.h"
#include "hypha/sink.h"
#include "hypha/supervisor.h"
#include "hypha/tail.h"
#include "hypha/tlv.h"
#include "hypha/topology.h"
#include "hypha/view.h"
#include "hypha/warden.h"

#define HY_ERRLINE_MAX 4096 /* worker stderr lines are cut past this */

/* The kinds of warning wproto.c gives about a worker's control frames, each
 * rate-limited on its own (hy_warn_mark). */
typedef enum hy_wproto_warn {
    HY_WW_MALFORMED,     /* not JSON, or no op */
    HY_WW_TOO_LARGE,     /* over the size or value cap: refused unparsed */
    HY_WW_UNKNOWN_OP,
    HY_WW_LIST,          /* a type list that is not an array, or over the cap */
    HY_WW_UNKNOWN_TYPES, /* names or ids the schema does not have */
    HY_WW_SCHEMA,        /* a hello with another schema digest */
    HY_WW__COUNT,
} hy_wproto_warn;

struct hy_instance {
    hy_sup *sup;
    const hy_worker_spec *spec;  /* owned by a topology the supervisor keeps */
    unsigned index;
    char name[72];               /* the worker's name (a copy: specs change on reload) */
    char label[96];              /* "risk[1]" */
    char idx[12];                /* "1" */
    hy_state state;
    pid_t pid;                   /* 0: no process */
    char **envp;                 /* owned */
    char *cgroup;                /* its cgroup2 directory (owned); NULL: cgroups not used (contain.c) */
    /* the pipes (wio.c) */
    int out_fd, err_fd, status_fd; /* -1 when closed; stdin's fd is in.fd */
    bool out_held;               /* out_fd is an exited process's pipe, read as the pressure allows */
    int out_next;                /* the next process's stdout, read once the held pipe is done (-1: none) */
    bool next_dead;              /* out_next's process exited too */
    bool spawn_deferred;         /* a restart waits for out_next to be free */
    bool exit_drain;             /* its pipe is being drained as its exit is handled */
    bool cut_at_exit;            /* that drain found the stream cut in a frame: the exit is a protocol one */
    int stdin_watch;             /* stopping: a read end of its stdin pipe, to learn at its exit what it never read */
    size_t stdin_partial;        /* bytes at the pipe's end that are not its history's: a frame cut by the
                                    stop, or the shutdown frame */
    /* its inbox between processes (hold.c) */
    ev_timer hold_timer;         /* the window's end */
    double hold_until;           /* ev_now() when the window closes; 0: not open */
    uint64_t reclaimed;          /* frames taken back from dead processes' pipes, all its life */
    uint64_t held_at_exit;       /* frames its queue kept for the next process at the last exit */
    ev_io out_w, err_w, status_w;
    hy_tlv_decoder dec;
    char errline[HY_ERRLINE_MAX];
    size_t errlen, errcut;
    hy_source src;               /* its stdout, as flow.c sees it */
    hy_sink in;                  /* frames for its stdin */
    hy_sub sub;                  /* what it receives */
    hy_origin origin;
    hy_pubcheck check;           /* the outbound checks' cache */
    hy_drops drops;
    hy_dropwin dropwin;          /* its last minute as a receiver, sampled by sup.c's drops_w */
    uint64_t frames_out, bytes_out, protocol_errors;
    hy_warn_count wwarn[HY_WW__COUNT]; /* wproto.c's warnings, for its whole life */
    /* the process's life (worker.c) */
    ev_timer timer;              /* start_timeout, backoff or retry_after */
    ev_timer stop_timer;         /* stop escalation */
    ev_timer hb_timer;           /* heartbeat watchdog (heartbeat.timeout > 0) */
    int stop_stage;              /* 0 none, 1 EOF sent, 2 signalled, 3 SIGKILLed */
    bool start_after_stop;       /* restart: start again once stopped */
    double started_at;           /* ev_now() at spawn */
    double last_heartbeat;       /* ev_now() of its last heartbeat (or spawn) */
    hy_failstreak fails;         /* its handler's failures (op stats) against the frames it was sent */
    double hb_paused;            /* its stdout's paused seconds (flow.c) at that moment */
    double last_exit_at;         /* ev_now() of the last exit, 0 before any */
    uint32_t n;                  /* backoff exponent */
    uint32_t restarts;           /* spawns after the first */
    hy_giveup giveup;
    bool retrying;               /* a retry_after attempt from failed */
    hy_exit_reason kill_reason;  /* set when hyphad killed it: protocol, heartbeat, schema */
    char spawn_error[192];       /* set when exec or a step before it failed */
    hy_exit_reason last_reason;
    int last_code;               /* exit status, or -1 */
    int last_signal;             /* terminating signal, or 0 */
    /* the table's (sup.c) */
    bool ever_started;           /* spawned at least once (systemd readiness) */
    bool retiring;               /* removed or changed by a reload: freed once stopped */
    bool pending;                /* made by a reload: starts once its predecessor is gone */
    bool waiting;                /* to start once its `after` workers are ready (sup.c) */
    bool adopted;                /* its state came across an upgrade: not started again */
    bool forked;                 /* its process was forked from its fork server (preload) */
    char waiting_for[72];        /* waiting: the first of them not ready yet */
    hy_tail tail;                /* recent stderr lines */
};

typedef struct hy_forksrv hy_forksrv;

struct hy_sup {
    struct ev_loop *loop;
    const hy_topology *topo;     /* the current one (the daemon's) */
    hy_instance **inst;          /* owned, each allocated alone */
    size_t ninst;
    struct hy_topology **retired; /* replaced by a reload, still used by retiring instances (owned) */
    size_t nretired;
    ev_timer gc_w;               /* frees retired instances outside any iteration */
    ev_timer start_w;            /* starts instances in batches */
    ev_timer drops_w;            /* samples every instance's drop window (health's drop rule) */
    size_t next_start;
    double started_at;
    uint64_t line_seq;           /* stderr lines kept so far (hy_tail_line.seq) */
    hy_sup_observers obs;
    ev_child child_w;
    hy_warden warden;
    hy_cgroup cg;                /* cg.top: hypha-<pid>, the instances' cgroups' parent; NULL: not used */
    uint64_t rng;
    bool shutting_down;
    void (*on_all_stopped)(hy_sup *);
    hy_relay relay;
    const struct hy_schemawatch *schemawatch; /* the daemon's, read by snapshots; NULL: none */
    hy_forksrv *forksrv;         /* preload: one fork server per worker that has one (forksrv.c; owned list) */
};

/* An instance became ready: instances waiting on `after` are looked at again
 * (from sup.c's gc watcher, outside any iteration). */

static inline void hy_sup_changed(hy_sup *s)
{
    if (s->obs.on_change)
        s->obs.on_change(s->obs.ud);
}

/* An upgrade's state adopted (sup_upgrade.c): the warden, and every
 * instance it names (matched by worker and index). -1 with err: the state
 * does not fit this topology. */
struct hy_ustate;
int hy_sup_adopt(hy_sup *s, const struct hy_ustate *u, hy_err *err);

/* ---- inst.c: the primitives every worker file uses ------------------------- */

/* Signal its process group (or the leader, if the group is gone); SIGKILL
 * also reaches what left the group (hy_contain_kill). */
void hy_inst_kill_group(hy_instance *in, int sig);
/* hyphad kills it for a reason of its own (once: the first reason stands). */
void hy_inst_kill_for(hy_instance *in, hy_exit_reason why);
/* starting -> running, `by` a ready frame or start_timeout. */
void hy_inst_ready(hy_instance *in, const char *by);
/* A heartbeat now (or the spawn): the watchdog's deadline starts again. */
void hy_inst_heartbeat(hy_instance *in);
/* Seconds since then that count: the time hyphad held its stdout back does not. */
double hy_inst_heartbeat_age(const hy_instance *in);
/* What went through this instance so far (all its processes): a line at each
 * exit (once its held output is read, if it was held), so the counts are in
 * the log before hyphactl exists. */
void hy_inst_log_counters(const hy_instance *in);

/* ---- contain.c: what a worker leaves behind goes with it ------------------- */

/* cgroup: auto, off or PATH decided (and said once, at INFO); -1 with err
 * only for a PATH hyphad cannot use. */
int hy_contain_setup(hy_sup *s, hy_err *err);
/* hyphad's exit: every instance's cgroup and hypha-<pid> removed. */
void hy_contain_teardown(hy_sup *s);
/* Its cgroup's path (not made yet). -1 on ENOMEM. */
int hy_contain_init(hy_instance *in);
/* Before a spawn: its cgroup made (or emptied) and `procs` its
 * cgroup.procs, for the child to join; "" without cgroups. -1 with err. */
int hy_contain_prepare(hy_instance *in, char *procs, size_t len, hy_err *err);
/* The SIGKILL of a stop, or hyphad's own kill: everything below the live
 * worker (its cgroup, or its descendants through /proc). */
void hy_contain_kill(hy_instance *in);
/* Its process `oldpid` has exited and been reaped: whatever it left (its
 * group, its cgroup, its orphans) is killed and logged. */
void hy_contain_reap(hy_instance *in, pid_t oldpid);
/* Its cgroup removed (best effort: what is still dying goes at exit). */
void hy_contain_free(hy_instance *in);

/* ---- wio.c: the pipes ----------------------------------------------------- */

void hy_wio_init(hy_instance *in);
/* A spawned process's pipes: stdin (into the sink), stdout, stderr, status. */
void hy_wio_attach(hy_instance *in, int in_fd, int out_fd, int err_fd, int status_fd);
/* An exited process's stdout waits behind a held one: no new process until it is read. */
bool hy_wio_slot_busy(const hy_instance *in);
/* The process is gone: learn a failed exec, read what is left, close all. */
void hy_wio_detach(hy_instance *in);
/* Stop: stdin EOF. What is queued for it is dropped as worker-exited, or,
 * held (an operator's restart with queue.hold), kept for the next process.
 * stopping: it is alive and will read to EOF; what it leaves unread if it
 * dies anyway is counted (or taken back) at its exit. `extra`: bytes
 * written straight to the pipe (the shutdown frame). */
void hy_wio_close_stdin(hy_instance *in, bool stopping, size_t extra);
void hy_wio_free(hy_instance *in);

/* Its process is gone (hy_worker_exited, after hy_wio_detach): `hold`,
 * what it never read of its stdin goes back to its queue for the next
 * process; else it is dropped (counted worker-exited, or hold-cancelled for
 * frames that were held). */
void hy_wio_release_stdin(hy_instance *in, bool hold);

/* What an upgrade carries of its pipes (sup_upgrade.c): fds (-1: closed),
 * its stdin queue (bytes, `sent` of them written) and history, the part of
 * a frame read from its stdout, the part of a line from its stderr. */
typedef struct hy_wio_carried {
    int in_fd, out_fd, err_fd, status_fd;
    const uint8_t *queue, *hist, *dec, *errline;
    size_t nqueue, sent, nhist, ndec, nerr, errcut;
} hy_wio_carried;
/* Adopt them (nothing is read or written yet). -1: out of memory, or the
 * bytes do not fit. */
int hy_wio_adopt(hy_instance *in, const hy_wio_carried *c);

/* ---- hold.c: its inbox between processes (queue.hold) ------------------ */

void hy_hold_init(hy_instance *in);
void hy_hold_free(hy_instance *in);
/* Its queue may be held now: queue.hold on, the window not over, neither
 * retiring nor hyphad exiting. */
bool hy_hold_may(const hy_instance *in);
/* An operator's restart is stopping it: its queue is kept for the next one. */
void hy_hold_stopping(hy_instance *in);
/* Its stdin pipe has no reader (EPIPE): the queue is kept, and dropped if it
 * is still alive when the window closes. */
void hy_hold_broken(hy_instance *in);
/* It exited; `restarting`: another process of it is coming. true: hold. */
bool hy_hold_exit(hy_instance *in, bool restarting);
/* A new process has the queue. */
void hy_hold_attached(hy_instance *in);
/* A process of it is ready: the window closes. */
void hy_hold_ready(hy_instance *in);
/* The restart is not coming (stopped, failed): what was held is dropped,
 * and so are its run-time subscriptions. */
void hy_hold_cancel(hy_instance *in);

/* ---- forksrv.c: preload ----------------------------------------------------- */

struct hy_spawn_res;
/* Its process forked from its worker's fork server (started here if there
 * is none): 1 with res (status_fd -1) and the process put into `procs`
 * (its cgroup.procs, "" none); 0: spawn it plainly (no preload, the server
 * not ready yet, gone, or turned off). */
int hy_forksrv_spawn(hy_instance *in, const char *procs, struct hy_spawn_res *res);
/* pid is one of the fork servers (running, or replaced and exiting). */
bool hy_forksrv_owns(const hy_sup *s, pid_t pid);
/* SIGCHLD for pid: true if it was a fork server's. */
bool hy_forksrv_exited(hy_sup *s, pid_t pid, int status);
/* `hyphactl restart --preload`: a new server for worker (the next spawn starts it). */
void hy_forksrv_restart(hy_sup *s, const char *worker);
/* Every server stopped (SIGKILL, reaped, off the warden's list) and freed:
 * hyphad's exit, or an upgrade's (its successor starts its own). */
void hy_forksrv_free_all(hy_sup *s);

/* ---- wproto.c: control frames ------------------------------------------ */

/* A control frame from the worker (hello, ready, heartbeat, subscribe...). */
void hy_wproto_on_frame(hy_instance *in, const hy_frame *f);
/* `shutdown` written straight to its stdin, best effort, before EOF: the
 * bytes written (in its pipe, not in its queue's history). */
size_t hy_wproto_send_shutdown(hy_instance *in);

/* ---- worker.c: one process's life ----------------------------------------- */

void hy_worker_init(hy_instance *in);
/* Its environment and give-up window. -1 on ENOMEM. */
int hy_worker_prepare(hy_instance *in);
void hy_worker_spawn(hy_instance *in);

/* SIGCHLD for its pid (wstatus from waitpid). */
void hy_worker_exited(hy_instance *in, int wstatus);
/* Graceful stop: shutdown, EOF, the stop signal, SIGKILL after grace. */
void hy_worker_stop(hy_instance *in);
/* An operator's start is a fresh story: no backoff, no give-up count. */
void hy_worker_clear_failures(hy_instance *in);
void hy_worker_free(hy_instance *in);

#endif
