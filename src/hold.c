/* hold.c - a restarting instance's inbox (queue.hold): frames routed to it
 * between two processes wait in its queue for the next one, with what the
 * dead one never read of its stdin pipe (wio.c takes that back) in front.
 *
 * The window opens at the first exit after the instance was last ready and
 * closes when a process of it is ready again. While it is open and no
 * process has the queue, frames queue under queue.limit and its overflow
 * policy; when it closes with none (the restart took longer than
 * queue.hold), or when the restart is not coming after all (stopped,
 * failed, removed, hyphad exiting), what waits is dropped and counted with
 * a reason of its own. The run-time subscriptions (an SDK worker's hello)
 * stay while a restart is coming, held or not: the frames of those types
 * keep coming (held, or counted not-running), and the next process's
 * hello replaces them. docs/supervision.md says what survives a restart.
 */
#include "hypha/log.h"
#include "hypha/units.h"
#include "instance.h"

#define COMP "supervisor"

static double now_s(const hy_instance *in) { return ev_now(in->sup->loop); }

/* What it subscribed to at run time goes: no process will read those frames. */
static void drop_subs(hy_instance *in)
{
    if (!in->sub.nids)
        return;
    hy_sub_clear(&in->sub);
    hy_bus_subs_changed(&in->sup->relay.bus);
}

/* The held frames are dropped as `why`, and frames no longer wait. */
static void let_go(hy_instance *in, hy_drop why, const char *msg)
{
    size_t frames = hy_fanq_frames(&in->in.q);
    in->in.hold = false;
    ev_timer_stop(in->sup->loop, &in->hold_timer); /* hold_until stays: closed until it is ready again */
    hy_sink_clear(&in->in, why);
    if (frames)
        hy_log(HY_WARN, COMP, msg, "worker", in->name, "instance", in->idx, "frames", HY_U64(frames), "reason",
               hy_drop_str(why), NULL);
}

static void expired_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_instance *in = w->data;
    if (!in->in.hold)
        return;
    if (in->in.fd >= 0 && !in->in.broken)
        return; /* a process has the queue; the window closes when it is ready */
    char h[24];
    hy_format_duration(in->spec->policy.queue_hold_ms, h, sizeof h);
    char msg[160];
    bool closed = in->pid > 0 && in->in.broken; /* it closed its stdin and lives on: what it cannot read goes */
    if (closed)
        snprintf(msg, sizeof msg, "held frames dropped: its stdin is closed and it is still running after %s", h);
    else /* no process, or one still stopping for a restart */
        snprintf(msg, sizeof msg, "held frames dropped: not back within queue.hold (%s)", h);
    let_go(in, closed ? HY_DROP_EXITED : HY_DROP_HOLD_EXPIRED, msg);
}

static void arm(hy_instance *in)
{
    if (in->hold_until == 0)
        in->hold_until = now_s(in) + (double)in->spec->policy.queue_hold_ms / 1000.0;
    double left = in->hold_until - now_s(in);
    ev_timer_stop(in->sup->loop, &in->hold_timer);
    ev_timer_set(&in->hold_timer, left > 0 ? left : 0, 0.0);
    ev_timer_start(in->sup->loop, &in->hold_timer);
}

bool hy_hold_may(const hy_instance *in)
{
    return in->spec->policy.queue_hold_ms > 0 && !in->retiring && !in->sup->shutting_down &&
           (in->hold_until == 0 || now_s(in) < in->hold_until);
}

void hy_hold_stopping(hy_instance *in)
{
    if (!in->start_after_stop || !hy_hold_may(in))
        return;
    in->in.hold = true;
    arm(in);
}

void hy_hold_broken(hy_instance *in)
{
    in->in.hold = true;
    arm(in);
}

bool hy_hold_exit(hy_instance *in, bool restarting)
{
    if (!restarting || !hy_hold_may(in))
        return false;
    in->in.hold = true;
    arm(in);
    return true;
}

void hy_hold_attached(hy_instance *in) { in->in.hold = false; }

void hy_hold_ready(hy_instance *in)
{
    in->hold_until = 0;
    ev_timer_stop(in->sup->loop, &in->hold_timer);
}

void hy_hold_cancel(hy_instance *in)
{
    if (in->in.hold && in->pid <= 0)
        let_go(in, HY_DROP_HOLD_CANCELLED, "held frames dropped: the restart they waited for is not coming");
    if (in->pid <= 0)
        drop_subs(in);
    in->in.hold = false;
    in->hold_until = 0;
    ev_timer_stop(in->sup->loop, &in->hold_timer);
}

void hy_hold_init(hy_instance *in)
{
    ev_init(&in->hold_timer, expired_cb);
    in->hold_timer.data = in;
    in->hold_until = 0;
}

void hy_hold_free(hy_instance *in) { ev_timer_stop(in->sup->loop, &in->hold_timer); }
