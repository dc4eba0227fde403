/* exitplan.c - what an exit means and what comes next (see hypha/exitplan.h).
 * Owns the classification of an exit (reason, code, signal) and the restart
 * decision after it. Pure: no clock, no randomness, no I/O; the caller brings
 * the facts (and the jitter draw) and carries out the verdict. */
#include "hypha/exitplan.h"

#include <sys/wait.h>

#include "hypha/backoff.h"

#define N_MAX 64u /* the backoff exponent stops growing here */

static const char *const reason_names[HY_EXIT__COUNT] = {
    [HY_EXIT_NONE] = "",
    [HY_EXIT_EXIT] = "exit",
    [HY_EXIT_SIGNAL] = "signal",
    [HY_EXIT_SPAWN] = "spawn",
    [HY_EXIT_PROTOCOL] = "protocol",
    [HY_EXIT_HEARTBEAT] = "heartbeat",
    [HY_EXIT_SCHEMA] = "schema",
};

const char *hy_exit_reason_str(hy_exit_reason r)
{
    if ((int)r < 0 || r >= HY_EXIT__COUNT)
        return "";
    return reason_names[r];
}

static bool killed_for_a_reason(hy_exit_reason r)
{
    return (int)r > (int)HY_EXIT_NONE && r < HY_EXIT__COUNT;
}

/* Spawn failure first, then a reason hyphad killed it for, then a signal,
 * then an exit: the order handle_exit() has always used. */
static void classify(const hy_exit_facts *f, hy_exit_verdict *v)
{
    int ws = f->wstatus;
    v->code = -1;
    v->signal = 0;
    if (f->no_process || f->spawn_failed) {
        v->reason = HY_EXIT_SPAWN;
        if (!f->no_process && WIFEXITED(ws))
            v->code = WEXITSTATUS(ws);
    } else if (killed_for_a_reason(f->killed_for)) {
        v->reason = f->killed_for;
        if (WIFSIGNALED(ws))
            v->signal = WTERMSIG(ws);
        else
            v->code = WEXITSTATUS(ws);
    } else if (WIFSIGNALED(ws)) {
        v->reason = HY_EXIT_SIGNAL;
        v->signal = WTERMSIG(ws);
    } else {
        v->reason = HY_EXIT_EXIT;
        v->code = WEXITSTATUS(ws);
    }
    v->clean = v->reason == HY_EXIT_EXIT && v->code == 0;
}

static bool is_stop(const hy_exit_facts *f)
{
    return f->stopping || f->shutting_down;
}

/* restart: never, or on-failure after a clean exit. */
static bool stays_exited(const hy_policy *p, bool clean)
{
    return p->restart == HY_RESTART_NEVER || (p->restart == HY_RESTART_ON_FAILURE && clean);
}

bool hy_exit_resets(const hy_policy *p, uint64_t uptime_ms)
{
    return uptime_ms >= p->backoff_reset_after_ms;
}

bool hy_exit_counts(const hy_policy *p, const hy_exit_facts *f)
{
    hy_exit_verdict v;
    classify(f, &v);
    return !is_stop(f) && !stays_exited(p, v.clean);
}

/* Not stopping, and the policy restarts: give up, or back off. */
static void decide_restart(const hy_policy *p, const hy_exit_facts *f, hy_exit_verdict *v)
{
    bool retrying = f->retrying;
    v->reset_history = hy_exit_resets(p, f->uptime_ms);
    if (v->reset_history) {
        v->n = 0;
        retrying = false;
    }
    if (f->over_give_up || retrying) {
        v->next = HY_NEXT_FAILED;
        v->delay_ms = p->give_up_retry_after_ms;
        return;
    }
    v->delay_ms = hy_backoff_delay_ms(p, v->n, f->jitter_u);
    if (v->n < N_MAX)
        v->n++;
    v->next = v->delay_ms == 0 && !f->no_process ? HY_NEXT_SPAWN_NOW : HY_NEXT_BACKOFF;
}

hy_exit_verdict hy_exit_plan(const hy_policy *p, const hy_exit_facts *f)
{
    hy_exit_verdict v = {0};
    classify(f, &v);
    v.n = f->n;
    if (is_stop(f))
        v.next = f->start_after_stop && !f->shutting_down ? HY_NEXT_STOPPED_START : HY_NEXT_STOPPED;
    else if (stays_exited(p, v.clean))
        v.next = HY_NEXT_EXITED;
    else
        decide_restart(p, f, &v);
    return v;
}
