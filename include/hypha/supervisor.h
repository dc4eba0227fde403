/* supervisor.h - runs the workers of a topology on a libev loop.
 *
 * Each worker instance is a small state machine:
 *
 *   starting -> running -> (exit) -> backoff -> starting ...
 *                                 -> failed  (gave up; retried every retry_after)
 *                                 -> exited  (restart never, or on-failure after exit 0)
 *   any live state -> stopping -> stopped    (operator or shutdown)
 *
 * Exits are learnt from SIGCHLD (a pid-0 child watcher, which also reaps
 * orphans when hyphad is a subreaper), never from pipe EOF. Every deadline is
 * a libev timer. The instance struct embeds its watchers; callbacks find it
 * from the watcher's `data`.
 */
#ifndef HYPHA_SUPERVISOR_H
#define HYPHA_SUPERVISOR_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "hypha/backoff.h"
#include "hypha/outq.h"
#include "hypha/relay.h"
#include "hypha/tlv.h"
#include "hypha/topology.h"
#include "hypha/warden.h"

typedef enum hy_state {
    HY_ST_STARTING,
    HY_ST_RUNNING,
    HY_ST_EXITED,
    HY_ST_BACKOFF,
    HY_ST_FAILED,
    HY_ST_STOPPING,
    HY_ST_STOPPED,
} hy_state;

#define HY_ERRLINE_MAX 4096 /* worker stderr lines are cut past this */

typedef struct hy_sup hy_sup;

/* The last lines a worker wrote to stderr, for `hyphactl tail`: a ring of at
 * most HY_TAIL_LINES lines and HY_TAIL_BYTES bytes; oldest go first. */
#define HY_TAIL_LINES 1000u
#define HY_TAIL_BYTES (64u * 1024)

typedef struct hy_tail_line {
    char *text;                  /* owned, NUL-terminated */
    size_t len;
    uint64_t seq;                /* hyphad-wide order of stderr lines */
} hy_tail_line;

typedef struct hy_tail {
    hy_tail_line *slot;          /* HY_TAIL_LINES slots, allocated on first use (owned) */
    size_t head, n;              /* oldest slot, lines held */
    size_t bytes;
} hy_tail;

typedef struct hy_instance {
    hy_sup *sup;
    const hy_worker_spec *spec;  /* owned by the topology */
    unsigned index;
    char label[96];              /* "risk[1]" */
    char idx[12];                /* "1" */
    hy_state state;
    pid_t pid;                   /* 0: no process */
    char **envp;                 /* owned */
    int in_fd, out_fd, err_fd, status_fd; /* -1 when closed */
    ev_io out_w, err_w, status_w;
    ev_timer timer;              /* start_timeout, backoff or retry_after */
    ev_timer stop_timer;         /* stop escalation */
    int stop_stage;              /* 0 none, 1 EOF sent, 2 signalled, 3 SIGKILLed */
    bool start_after_stop;       /* restart: start again once stopped */
    hy_tlv_decoder dec;
    char errline[HY_ERRLINE_MAX];
    size_t errlen, errcut;
    double started_at;           /* ev_now() at spawn */
    uint32_t n;                  /* backoff exponent */
    uint32_t restarts;           /* spawns after the first */
    hy_giveup giveup;
    bool retrying;               /* a retry_after attempt from failed */
    const char *kill_reason;     /* set when hyphad killed it: protocol, ... */
    char spawn_error[192];       /* set when exec or a step before it failed */
    int last_code;               /* exit status, or -1 */
    int last_signal;             /* terminating signal, or 0 */
    char last_reason[16];        /* exit, signal, protocol, spawn, ... */
    uint64_t frames_out, bytes_out, protocol_errors;
    hy_outq outq;                /* frames waiting for its stdin */
    ev_io in_w;                  /* stdin writable */
    bool blocking;               /* its queue is over the limit (policy block) */
    uint16_t *subs;              /* subscribed at run time: hello, subscribe (owned, sorted) */
    size_t nsubs;
    bool dirty;                  /* its queue was written to since the last flush */
    uint16_t last_type;          /* one-entry cache of the outbound checks */
    const hy_message *last_msg;
    bool last_allowed;
    double last_heartbeat;       /* ev_now() of its last heartbeat (or spawn) */
    uint64_t frames_in, bytes_in;
    uint64_t drops[HY_DROP__COUNT];
    ev_timer hb_timer;           /* heartbeat watchdog (heartbeat.timeout > 0) */
    double last_exit_at;         /* ev_now() of the last exit, 0 before any */
    bool ever_started;           /* spawned at least once (systemd readiness) */
    bool retiring;               /* removed or changed by a reload: freed once stopped */
    bool pending;                /* made by a reload: starts once its predecessor is gone */
    hy_tail tail;                /* recent stderr lines */
} hy_instance;

struct hy_sup {
    struct ev_loop *loop;
    const hy_topology *topo;     /* not owned */
    hy_instance **inst;          /* owned, each allocated alone: watchers never move */
    size_t ninst;
    struct hy_topology **retired; /* replaced by a reload, still used by retiring instances (owned) */
    size_t nretired;
    ev_timer gc_w;               /* frees retired instances outside any iteration */
    double started_at;           /* ev_now() when hyphad started */
    uint64_t line_seq;           /* stderr lines kept so far (hy_tail_line.seq) */
    /* Observers (the control plane): a worker stderr line; state changes. */
    void (*on_line)(hy_sup *, hy_instance *, const char *line, size_t len);
    void (*on_change)(hy_sup *);
    void *line_ud;               /* for on_line */
    ev_child child_w;
    hy_warden warden;
    uint64_t rng;
    bool shutting_down;
    void (*on_all_stopped)(hy_sup *); /* after hy_sup_stop_all, once idle */
    ev_timer start_w;            /* starts instances in batches */
    int blocked;                 /* destinations over their limit (block) */
    size_t next_start;           /* next instance hy_sup_start_all will spawn */
    uint8_t *rbuf;               /* shared read buffer (owned) */
    size_t rbuf_size;
    hy_relay relay;
};

int hy_sup_init(hy_sup *s, struct ev_loop *loop, const hy_topology *t, hy_err *err);
void hy_sup_start_all(hy_sup *s);
/* Graceful stop of every instance, in parallel; calls on_all_stopped. */
void hy_sup_stop_all(hy_sup *s);
/* SIGKILL every live worker group now (second SIGTERM). */
void hy_sup_kill_all(hy_sup *s);
/* Live processes (any state with a pid). */
size_t hy_sup_live(const hy_sup *s);
void hy_sup_free(hy_sup *s);

/* For the relay: queue a whole frame for a worker's stdin (its queue policy
 * applies); count a drop against a worker; write its queue now. */
void hy_sup_deliver(hy_instance *dest, const uint8_t *frame, size_t len, uint16_t type_id);
/* `frames` whole frames back to back (type_id: the first one's, for logs). */
void hy_sup_deliver_run(hy_instance *dest, const uint8_t *data, size_t len, size_t frames, uint16_t type_id);
void hy_sup_count_drop(hy_instance *in, hy_drop why, uint16_t type_id, uint64_t n);
void hy_sup_flush(hy_instance *in);

const char *hy_state_str(hy_state st);

/* Operator commands (hyphactl). start: run it now if it is not running,
 * clearing backoff, give-up and `failed`; stop: graceful stop, stays stopped;
 * restart: stop if running, then start (as start). */
void hy_sup_start_instance(hy_instance *in);
void hy_sup_stop_instance(hy_instance *in);
void hy_sup_restart_instance(hy_instance *in);

/* Reload: apply `t` (a newly loaded topology; ownership passes to the
 * supervisor's caller as the current one, the old one is kept until no
 * instance uses it). The caller has checked that only workers differ.
 * Fills the names of workers started/stopped/restarted/unchanged into the
 * four arrays (jansson arrays, appended to). */
struct json_t;
int hy_sup_reload(hy_sup *s, const hy_topology *t, struct json_t *started, struct json_t *stopped,
                  struct json_t *restarted, struct json_t *unchanged, hy_err *err);

/* The ring of recent stderr lines: iterate from oldest (0) to newest (n-1). */
const hy_tail_line *hy_tail_get(const hy_tail *t, size_t i);

#endif
