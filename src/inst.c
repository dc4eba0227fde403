/* inst.c - the few things every worker file does to an instance: signal
 * its group, kill it for a reason, mark it ready (see instance.h). */
#include <errno.h>
#include <signal.h>

#include "hypha/log.h"
#include "instance.h"

#define COMP "supervisor"

void hy_inst_kill_group(hy_instance *in, int sig)
{
    if (in->pid <= 0)
        return;
    if (sig == SIGKILL)
        hy_contain_kill(in); /* and what left the group */
    if (kill(-in->pid, sig) < 0 && errno == ESRCH)
        (void)kill(in->pid, sig); /* group already gone; the leader may not be */
}

void hy_inst_kill_for(hy_instance *in, hy_exit_reason why)
{
    if (in->kill_reason != HY_EXIT_NONE)
        return;
    in->kill_reason = why;
    hy_inst_kill_group(in, SIGKILL);
}

void hy_inst_heartbeat(hy_instance *in)
{
    in->last_heartbeat = ev_now(in->sup->loop);
    in->hb_paused = hy_flow_paused_s(&in->sup->relay.flow, &in->src);
}

double hy_inst_heartbeat_age(const hy_instance *in)
{
    double paused = hy_flow_paused_s(&in->sup->relay.flow, &in->src) - in->hb_paused;
    return ev_now(in->sup->loop) - in->last_heartbeat - paused;
}

void hy_inst_ready(hy_instance *in, const char *by)
{
    if (in->state != HY_ST_STARTING)
        return;
    ev_timer_stop(in->sup->loop, &in->timer);
    in->state = HY_ST_RUNNING;
    hy_hold_ready(in); /* what was held for it has gone to it */
    hy_log(HY_INFO, COMP, "ready", "worker", in->spec->name, "instance", in->idx, "pid", HY_I64(in->pid), "by", by,
           NULL);
    /* A worker `after` it may start now: sup.c's sweep looks, from its own
     * watcher (an upward call from here would close a cycle of files). */
    ev_feed_event(in->sup->loop, &in->sup->gc_w, EV_TIMER);
    hy_sup_changed(in->sup);
}

void hy_inst_log_counters(const hy_instance *in)
{
    char drops[256];
    hy_log(HY_INFO, "router", "counters", "worker", in->name, "instance", in->idx, "frames_out",
           HY_U64(in->frames_out), "frames_in", HY_U64(in->in.frames), "dropped",
           hy_drops_format(&in->drops, ",", drops, sizeof drops), "held", HY_U64(in->held_at_exit), NULL);
}
