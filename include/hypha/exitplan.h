/* exitplan.h - what an exit means and what happens next, decided without
 * touching anything: no clock, no randomness, no I/O. worker.c gathers the
 * facts, asks hy_exit_plan, then carries out the verdict (logs, timers,
 * spawn). Unit-tested in tests/unit/test_exitplan.c.
 */
#ifndef HYPHA_EXITPLAN_H
#define HYPHA_EXITPLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "hypha/topology.h"

/* Why a process ended, as status, health, logs and metrics name it. */
typedef enum hy_exit_reason {
    HY_EXIT_NONE = 0,      /* it never exited yet */
    HY_EXIT_EXIT,          /* it exited by itself (any status) */
    HY_EXIT_SIGNAL,        /* a signal hyphad did not send for a reason of its own */
    HY_EXIT_SPAWN,         /* exec or a step before it failed, or no process at all */
    HY_EXIT_PROTOCOL,      /* hyphad killed it: corrupt stream */
    HY_EXIT_HEARTBEAT,     /* hyphad killed it: no heartbeat in time */
    HY_EXIT_SCHEMA,        /* hyphad killed it: hello with another schema digest */
    HY_EXIT__COUNT,
} hy_exit_reason;

/* "exit", "signal", "spawn", "protocol", "heartbeat", "schema"; "" for NONE. */
const char *hy_exit_reason_str(hy_exit_reason r);

/* What comes after an exit. */
typedef enum hy_exit_next {
    HY_NEXT_STOPPED,       /* it was being stopped (operator, reload, shutdown): stays stopped */
    HY_NEXT_STOPPED_START, /* it was being restarted by an operator: stopped, then spawned at once */
    HY_NEXT_EXITED,        /* restart never, or on-failure after a clean exit */
    HY_NEXT_FAILED,        /* gave up: parked; retried after retry_after (0: never) */
    HY_NEXT_BACKOFF,       /* spawned again after delay_ms (a timer) */
    HY_NEXT_SPAWN_NOW,     /* delay 0 and a real process exited: spawned again at once */
} hy_exit_next;

typedef struct hy_exit_facts {
    int wstatus;               /* from waitpid; ignored when no_process */
    bool no_process;           /* the spawn itself failed: there was no child */
    bool spawn_failed;         /* the status pipe reported a failed step (exec, chdir, ...) */
    hy_exit_reason killed_for; /* PROTOCOL, HEARTBEAT or SCHEMA when hyphad killed it; else NONE */
    bool stopping;             /* in state stopping, or hyphad is shutting down */
    bool start_after_stop;     /* an operator's restart: start again once stopped */
    bool shutting_down;        /* hyphad is stopping: never start again */
    uint64_t uptime_ms;        /* since spawn; 0 when no_process */
    uint32_t n;                /* backoff exponent before this exit */
    bool retrying;             /* this process was a retry_after attempt from failed */
    bool over_give_up;         /* recording this exit in the give-up window (after a reset,
                                  if reset_history) makes more than give_up.failures exits
                                  within give_up.within: see hy_exit_plan's note */
    double jitter_u;           /* the jitter draw in [-1, 1] (hy_rand_signed) */
} hy_exit_facts;

typedef struct hy_exit_verdict {
    hy_exit_reason reason;
    int code;                  /* exit status, or -1 (signalled, or no process) */
    int signal;                /* terminating signal, or 0 */
    bool clean;                /* reason EXIT with status 0 */
    hy_exit_next next;
    bool reset_history;        /* it had been up >= reset_after: backoff exponent, retrying
                                  and the give-up window start afresh (before recording) */
    uint32_t n;                /* the backoff exponent after this exit */
    uint64_t delay_ms;         /* BACKOFF: the delay; FAILED: retry_after (0 = never) */
} hy_exit_verdict;

/* Decide. The give-up window is stateful (hy_giveup in backoff.h), so the
 * caller computes over_give_up with the same reset rule: it is
 * (uptime_ms >= policy.backoff_reset_after_ms ? a fresh window : the current one)
 * with this exit recorded. hy_exit_plan gives up when over_give_up, or when
 * `retrying` and the history was not reset (a retry that failed again). */
hy_exit_verdict hy_exit_plan(const hy_policy *p, const hy_exit_facts *f);

/* Helpers for the caller's give-up window, by the same rules hy_exit_plan
 * applies, so that over_give_up is computed exactly as today:
 *
 *     if (hy_exit_counts(p, &f)) {
 *         if (hy_exit_resets(p, f.uptime_ms))
 *             hy_giveup_clear(&g);
 *         f.over_give_up = hy_giveup_record(&g, now_ms, p->give_up_within_ms);
 *     }
 *
 * hy_exit_counts: the exit reaches the restart decision (not a stop, and the
 * restart policy restarts after it); only such exits are recorded in the
 * window. hy_exit_resets: uptime_ms >= backoff.reset_after. */
bool hy_exit_counts(const hy_policy *p, const hy_exit_facts *f);
bool hy_exit_resets(const hy_policy *p, uint64_t uptime_ms);

#endif
