/* snapshot.c - the observers' copy of the supervisor's and the relay's
 * state (see hypha/view.h): built on demand, nothing kept for it. */
#include <stdlib.h>
#include <string.h>

#include "hypha/schemawatch.h"
#include "instance.h"

static void inst_view(const hy_instance *in, double now, hy_inst_view *v)
{
    const hy_sup *s = in->sup;
    memset(v, 0, sizeof *v);
    v->spec = in->spec;
    v->index = in->index;
    v->label = in->label;
    v->state = in->state;
    v->pending = in->pending;
    v->waiting = in->waiting;
    v->waiting_for = in->waiting_for;
    v->retiring = in->retiring;
    v->ever_started = in->ever_started;
    v->pid = in->pid;
    v->cgroup = in->cgroup;
    v->uptime_s = in->pid > 0 ? now - in->started_at : 0;
    v->restarts = in->restarts;
    v->last_reason = in->last_reason;
    v->last_code = in->last_code;
    v->last_signal = in->last_signal;
    v->last_exit_ago_s = in->last_exit_at > 0 ? now - in->last_exit_at : 0;
    v->spawn_error = in->spawn_error;
    v->retry_in_s = -1;
    if (in->state == HY_ST_FAILED && ev_is_active(&in->timer))
        v->retry_in_s = ev_timer_remaining(s->loop, (ev_timer *)&in->timer);
    v->frames_in = in->in.frames;
    v->bytes_in = in->in.bytes;
    v->frames_out = in->frames_out;
    v->bytes_out = in->bytes_out;
    v->protocol_errors = in->protocol_errors;
    v->drops = in->drops;
    v->recent = hy_dropwin_since(&in->dropwin, now, in->in.frames, &in->drops);
    v->handler_failing = in->pid > 0 && hy_failstreak_failing(&in->fails, now, &v->fail_count, &v->fail_frames);
    v->queue_bytes = hy_fanq_bytes(&in->in.q);
    v->queue_frames = hy_fanq_frames(&in->in.q);
    v->held = in->in.hold;
    v->reclaimed = in->reclaimed;
    v->forked = in->pid > 0 && in->forked;
    v->subs = in->sub.ids;
    v->nsubs = in->sub.nids;
    v->heartbeat_age_s = in->pid > 0 && in->spec->policy.heartbeat_timeout_ms ? hy_inst_heartbeat_age(in) : -1;
}

int hy_sup_snapshot(const hy_sup *s, double now, hy_instance *const *sel, size_t nsel, hy_snapshot *out)
{
    memset(out, 0, sizeof *out);
    out->topo = s->topo;
    out->uptime_s = now - s->started_at;
    out->wall = time(NULL);
    size_t n = sel ? nsel : s->ninst;
    out->inst = calloc(n ? n : 1, sizeof *out->inst);
    out->listen = calloc(s->topo->nlisten ? s->topo->nlisten : 1, sizeof *out->listen);
    if (!out->inst || !out->listen) {
        hy_snapshot_free(out);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        inst_view(sel ? sel[i] : s->inst[i], now, &out->inst[i]);
    out->ninst = n;
    out->nlisten = s->topo->nlisten;
    if (hy_relay_view(&s->relay, now, &out->up, out->listen) < 0) {
        hy_snapshot_free(out);
        return -1;
    }
    hy_schemawatch_view(s->schemawatch, &out->schema);
    return 0;
}

void hy_snapshot_free(hy_snapshot *s)
{
    free(s->inst);
    for (size_t i = 0; i < s->nlisten; i++)
        free(s->listen[i].who);
    free(s->listen);
    memset(s, 0, sizeof *s);
}

const char *hy_state_str(hy_state st)
{
    switch (st) {
    case HY_ST_STARTING: return "starting";
    case HY_ST_RUNNING: return "running";
    case HY_ST_EXITED: return "exited";
    case HY_ST_BACKOFF: return "backoff";
    case HY_ST_FAILED: return "failed";
    case HY_ST_STOPPING: return "stopping";
    case HY_ST_STOPPED: return "stopped";
    }
    return "?";
}
