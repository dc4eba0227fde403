/* sup_upgrade.c - the supervisor's part of an in-place upgrade: every
 * instance (its process, pipes, queues, counters, timers) and the warden
 * written into the state, and adopted from it by the new hyphad
 * (hypha/upgrade.h). Times are ev_now() values, which are wall-clock
 * seconds: they mean the same on both sides of the exec.
 */
#include <stdlib.h>
#include <string.h>

#include "hypha/log.h"
#include "hypha/upgrade.h"
#include "instance.h"

#define COMP "supervisor"

/* ---- is it a moment to upgrade? -------------------------------------------- */

int hy_sup_upgrade_ready(const hy_sup *s, char *why, size_t len)
{
    if (s->shutting_down) {
        snprintf(why, len, "hyphad is shutting down");
        return -1;
    }
    if (s->nretired) {
        snprintf(why, len, "a reload is still retiring instances: try again in a moment");
        return -1;
    }
    for (size_t i = 0; i < s->ninst; i++) {
        const hy_instance *in = s->inst[i];
        const char *busy = in->state == HY_ST_STOPPING             ? "is stopping"
                           : in->out_held || in->out_next >= 0    ? "has an exited process's output still to read"
                           : in->retiring || in->pending          ? "is being replaced by a reload"
                           : in->stdin_watch >= 0                 ? "is stopping"
                                                                  : NULL;
        if (busy) {
            snprintf(why, len, "%s %s: try again in a moment", in->label, busy);
            return -1;
        }
    }
    return 0;
}

/* ---- saving ------------------------------------------------------------------ */

static json_t *timer_at(const hy_instance *in, const ev_timer *t)
{
    if (!ev_is_active(t))
        return json_null();
    return json_real(ev_now(in->sup->loop) + ev_timer_remaining(in->sup->loop, (ev_timer *)t));
}

static json_t *queue_bytes(hy_ustate *u, const hy_fanq *q, bool history)
{
    json_t *ref;
    size_t n = history ? hy_fanq_save_history(q, NULL) : hy_fanq_save(q, NULL);
    uint8_t *p = hy_ustate_reserve(u, n, &ref);
    if (!p)
        return NULL;
    if (history)
        hy_fanq_save_history(q, p);
    else
        hy_fanq_save(q, p);
    return ref;
}

static json_t *save_counts(const hy_instance *in)
{
    json_t *drops = json_array();
    for (int i = 0; i < HY_DROP__COUNT; i++)
        json_array_append_new(drops, json_integer((json_int_t)in->drops.n[i]));
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "frames_out", (json_int_t)in->frames_out, "bytes_out",
                     (json_int_t)in->bytes_out, "protocol_errors", (json_int_t)in->protocol_errors, "reclaimed",
                     (json_int_t)in->reclaimed, "frames_in", (json_int_t)in->in.frames, "bytes_in",
                     (json_int_t)in->in.bytes, "drops", drops);
}

static json_t *save_life(const hy_instance *in)
{
    json_t *gu = json_array();
    for (uint32_t k = 0; k < in->giveup.count; k++) { /* oldest first */
        uint32_t at = (in->giveup.head + in->giveup.cap - in->giveup.count + k) % in->giveup.cap;
        json_array_append_new(gu, json_integer((json_int_t)in->giveup.times[at]));
    }
    return json_pack("{s:i,s:I,s:I,s:b,s:b,s:i,s:i,s:i,s:i,s:s,s:f,s:f,s:f,s:o,s:o,s:b,s:s,s:o,s:b}", "state",
                     (int)in->state, "n", (json_int_t)in->n, "restarts", (json_int_t)in->restarts, "retrying",
                     in->retrying, "ever_started", in->ever_started, "kill_reason", (int)in->kill_reason,
                     "last_reason", (int)in->last_reason, "last_code", in->last_code, "last_signal",
                     in->last_signal, "spawn_error", in->spawn_error, "started_at", in->started_at, "last_exit_at",
                     in->last_exit_at, "last_heartbeat", in->last_heartbeat, "timer", timer_at(in, &in->timer),
                     "hb_timer", timer_at(in, &in->hb_timer), "waiting", in->waiting, "waiting_for",
                     in->waiting_for, "giveup", gu, "forked", in->forked);
}

static json_t *save_pipes(hy_ustate *u, const hy_instance *in)
{
    json_t *q = queue_bytes(u, &in->in.q, false), *h = queue_bytes(u, &in->in.q, true);
    json_t *dec = hy_ustate_bytes(u, hy_tlv_pending_bytes(&in->dec), hy_tlv_pending(&in->dec));
    json_t *err = hy_ustate_bytes(u, in->errline, in->errlen);
    json_t *subs = json_array();
    for (size_t k = 0; k < in->sub.nids; k++)
        json_array_append_new(subs, json_integer(in->sub.ids[k]));
    return json_pack("{s:o,s:o,s:o,s:o,s:o?,s:I,s:o?,s:o?,s:o?,s:I,s:o,s:b,s:b,s:f}", "in", hy_ustate_fd(u, in->in.fd),
                     "out", hy_ustate_fd(u, in->out_fd), "err", hy_ustate_fd(u, in->err_fd), "status",
                     hy_ustate_fd(u, in->status_fd), "queue", q, "sent", (json_int_t)in->in.q.sent, "hist", h,
                     "dec", dec, "errline", err, "errcut", (json_int_t)in->errcut, "subs", subs, "hold",
                     in->in.hold, "broken", in->in.broken, "hold_until", in->hold_until);
}

int hy_sup_save(hy_sup *s, hy_ustate *u, hy_err *err)
{
    /* The fork servers do not cross (their instances do): the new hyphad
     * starts its own at the next start of a preloaded worker. */
    hy_forksrv_free_all(s);
    json_t *list = json_array();
    if (!list)
        return hy_err_set(err, "upgrade state: out of memory");
    json_object_set_new(u->root, "instances", list);
    for (size_t i = 0; i < s->ninst; i++) {
        const hy_instance *in = s->inst[i];
        json_t *o = json_pack("{s:s,s:i,s:I,s:o,s:o,s:o}", "worker", in->name, "index", (int)in->index, "pid",
                              (json_int_t)in->pid, "life", save_life(in), "counts", save_counts(in), "pipes",
                              save_pipes(u, in));
        if (!o || json_array_append_new(list, o) < 0)
            return hy_err_set(err, "upgrade state: out of memory saving %s", in->label);
    }
    if (s->topo->has_upstream && hy_upstream_save(&s->relay.up, u) < 0)
        return hy_err_set(err, "upgrade state: out of memory saving the upstream");
    size_t left = 0;
    if (hy_listen_save(&s->relay.listen, u, &left) < 0)
        return hy_err_set(err, "upgrade state: out of memory saving the listen clients");
    if (left)
        hy_log(HY_WARN, COMP, "upgrade: listen clients in their handshake or on TLS are closed (they reconnect)",
               "clients", HY_U64(left), NULL);
    json_object_set_new(u->root, "started_at", json_real(s->started_at));
    json_object_set_new(u->root, "topology_digest", json_string(s->topo->file_digest));
    json_object_set_new(u->root, "schema_digest", json_string(s->topo->schema->digest_hex));
    json_object_set_new(u->root, "cgroup_top", s->cg.top ? json_string(s->cg.top) : json_null());
    json_t *w = json_pack("{s:I,s:o}", "pid", (json_int_t)s->warden.pid, "fd", hy_ustate_fd(u, s->warden.fd));
    if (!w || json_object_set_new(u->root, "warden", w) < 0)
        return hy_err_set(err, "upgrade state: out of memory");
    return 0;
}

/* ---- adopting ------------------------------------------------------------------ */

static hy_instance *find(hy_sup *s, const char *name, unsigned index)
{
    for (size_t i = 0; i < s->ninst; i++)
        if (strcmp(s->inst[i]->name, name) == 0 && s->inst[i]->index == index)
            return s->inst[i];
    return NULL;
}

static void arm(hy_instance *in, ev_timer *t, const json_t *at)
{
    if (!json_is_number(at))
        return;
    double left = json_number_value(at) - ev_now(in->sup->loop);
    ev_timer_set(t, left > 0 ? left : 0, 0.0);
    ev_timer_start(in->sup->loop, t);
}

static void adopt_life(hy_instance *in, const json_t *l)
{
    in->state = (hy_state)json_integer_value(json_object_get(l, "state"));
    in->n = (uint32_t)json_integer_value(json_object_get(l, "n"));
    in->restarts = (uint32_t)json_integer_value(json_object_get(l, "restarts"));
    in->retrying = json_is_true(json_object_get(l, "retrying"));
    in->ever_started = json_is_true(json_object_get(l, "ever_started"));
    in->kill_reason = (hy_exit_reason)json_integer_value(json_object_get(l, "kill_reason"));
    in->last_reason = (hy_exit_reason)json_integer_value(json_object_get(l, "last_reason"));
    in->last_code = (int)json_integer_value(json_object_get(l, "last_code"));
    in->last_signal = (int)json_integer_value(json_object_get(l, "last_signal"));
    snprintf(in->spawn_error, sizeof in->spawn_error, "%s",
             json_string_value(json_object_get(l, "spawn_error")) ?: "");
    in->started_at = json_number_value(json_object_get(l, "started_at"));
    in->last_exit_at = json_number_value(json_object_get(l, "last_exit_at"));
    in->waiting = json_is_true(json_object_get(l, "waiting"));
    in->forked = json_is_true(json_object_get(l, "forked"));
    snprintf(in->waiting_for, sizeof in->waiting_for, "%s",
             json_string_value(json_object_get(l, "waiting_for")) ?: "");
    size_t k;
    json_t *v;
    json_array_foreach(json_object_get(l, "giveup"), k, v)
    {
        (void)hy_giveup_record(&in->giveup, (uint64_t)json_integer_value(v), 0);
    }
    arm(in, &in->timer, json_object_get(l, "timer"));
    if (in->pid > 0) {
        hy_inst_heartbeat(in); /* its pause clock starts again here */
        in->last_heartbeat = json_number_value(json_object_get(l, "last_heartbeat"));
        arm(in, &in->hb_timer, json_object_get(l, "hb_timer"));
    }
}

static void adopt_counts(hy_instance *in, const json_t *c)
{
    in->frames_out = (uint64_t)json_integer_value(json_object_get(c, "frames_out"));
    in->bytes_out = (uint64_t)json_integer_value(json_object_get(c, "bytes_out"));
    in->protocol_errors = (uint64_t)json_integer_value(json_object_get(c, "protocol_errors"));
    in->reclaimed = (uint64_t)json_integer_value(json_object_get(c, "reclaimed"));
    in->in.frames = (uint64_t)json_integer_value(json_object_get(c, "frames_in"));
    in->in.bytes = (uint64_t)json_integer_value(json_object_get(c, "bytes_in"));
    json_t *d = json_object_get(c, "drops");
    for (int i = 0; i < HY_DROP__COUNT && i < (int)json_array_size(d); i++)
        in->drops.n[i] = (uint64_t)json_integer_value(json_array_get(d, (size_t)i));
}

static int adopt_pipes(hy_instance *in, const hy_ustate *u, const json_t *p)
{
    hy_wio_carried c = {
        .in_fd = hy_ustate_getfd(json_object_get(p, "in")),
        .out_fd = hy_ustate_getfd(json_object_get(p, "out")),
        .err_fd = hy_ustate_getfd(json_object_get(p, "err")),
        .status_fd = hy_ustate_getfd(json_object_get(p, "status")),
        .sent = (size_t)json_integer_value(json_object_get(p, "sent")),
        .errcut = (size_t)json_integer_value(json_object_get(p, "errcut")),
    };
    c.queue = hy_ustate_get(u, json_object_get(p, "queue"), &c.nqueue);
    c.hist = hy_ustate_get(u, json_object_get(p, "hist"), &c.nhist);
    c.dec = hy_ustate_get(u, json_object_get(p, "dec"), &c.ndec);
    c.errline = hy_ustate_get(u, json_object_get(p, "errline"), &c.nerr);
    if (!c.queue || !c.hist || !c.dec || !c.errline || hy_wio_adopt(in, &c) < 0)
        return -1;
    json_t *subs = json_object_get(p, "subs");
    size_t n = json_array_size(subs);
    uint16_t *ids = n ? calloc(n, sizeof *ids) : NULL;
    for (size_t k = 0; ids && k < n; k++)
        ids[k] = (uint16_t)json_integer_value(json_array_get(subs, k));
    int rc = n && (!ids || hy_sub_change(&in->sub, ids, n, true) < 0) ? -1 : 0;
    free(ids);
    if (n)
        hy_bus_subs_changed(&in->sup->relay.bus);
    in->in.hold = json_is_true(json_object_get(p, "hold"));
    in->in.broken = json_is_true(json_object_get(p, "broken"));
    in->hold_until = json_number_value(json_object_get(p, "hold_until"));
    if (in->in.hold)
        arm(in, &in->hold_timer, json_object_get(p, "hold_until"));
    return rc;
}

int hy_sup_adopt(hy_sup *s, const hy_ustate *u, hy_err *err)
{
    /* What runs is what the files said when hyphad loaded them: a file
     * changed since is a reload's business, before or after. */
    if (strcmp(json_string_value(json_object_get(u->root, "topology_digest")) ?: "", s->topo->file_digest) != 0)
        return hy_err_set(err, "%s changed on disk since hyphad loaded it: run `hyphactl reload` first (or put "
                               "it back), then upgrade", s->topo->path);
    if (strcmp(json_string_value(json_object_get(u->root, "schema_digest")) ?: "", s->topo->schema->digest_hex) != 0)
        return hy_err_set(err, "%s changed on disk since hyphad loaded it: run `hyphactl reload` first (or put "
                               "it back), then upgrade", s->topo->schema_path);
    if (json_is_number(json_object_get(u->root, "started_at")))
        s->started_at = json_number_value(json_object_get(u->root, "started_at"));
    json_t *w = json_object_get(u->root, "warden");
    s->warden.pid = (pid_t)json_integer_value(json_object_get(w, "pid"));
    s->warden.fd = hy_ustate_getfd(json_object_get(w, "fd"));
    if (s->warden.pid <= 0 || s->warden.fd < 0)
        return hy_err_set(err, "the state has no warden");
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(u->root, "instances"), i, o)
    {
        const char *name = json_string_value(json_object_get(o, "worker"));
        unsigned index = (unsigned)json_integer_value(json_object_get(o, "index"));
        hy_instance *in = name ? find(s, name, index) : NULL;
        if (!in)
            return hy_err_set(err, "%s[%u] runs but the topology on disk no longer has it: reload first",
                              name ? name : "?", index);
        in->adopted = true;
        in->pid = (pid_t)json_integer_value(json_object_get(o, "pid"));
        adopt_life(in, json_object_get(o, "life"));
        adopt_counts(in, json_object_get(o, "counts"));
        if (adopt_pipes(in, u, json_object_get(o, "pipes")) < 0)
            return hy_err_set(err, "%s: its pipes or queues could not be adopted", in->label);
    }
    return 0;
}
