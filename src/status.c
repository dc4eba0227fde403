/* status.c - the status reply as JSON (see hypha/status.h). */
#include "hypha/status.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "hypha/health.h"
#include "hypha/units.h"
#include "hypha/version.h"

static json_t *u64(uint64_t v) { return json_integer((json_int_t)v); }

json_t *hy_status_last_exit(const hy_inst_view *in)
{
    if (in->last_reason == HY_EXIT_NONE)
        return json_null();
    json_t *o = json_object();
    json_object_set_new(o, "reason", json_string(hy_exit_reason_str(in->last_reason)));
    json_object_set_new(o, "code", in->last_code >= 0 ? json_integer(in->last_code) : json_null());
    const char *sn = in->last_signal ? hy_signal_abbrev(in->last_signal) : NULL;
    json_object_set_new(o, "signal", !in->last_signal ? json_null() : sn ? json_string(sn) : json_integer(in->last_signal));
    json_object_set_new(o, "ago_s", json_real(in->last_exit_ago_s));
    if (in->spawn_error && in->spawn_error[0])
        json_object_set_new(o, "error", json_string(in->spawn_error));
    return o;
}

static json_t *drops_json(const hy_drops *d)
{
    json_t *o = json_object();
    for (int i = 0; i < HY_DROP__COUNT; i++)
        json_object_set_new(o, hy_drop_str((hy_drop)i), u64(d->n[i]));
    return o;
}

json_t *hy_status_instance(const hy_inst_view *in, const hy_schema *schema)
{
    json_t *o = json_object();
    json_object_set_new(o, "worker", json_string(in->spec->name));
    json_object_set_new(o, "instance", json_integer(in->index));
    json_object_set_new(o, "state", json_string(in->pending ? "pending" : in->waiting ? "waiting" : hy_state_str(in->state)));
    if (in->waiting)
        json_object_set_new(o, "waiting_for", json_string(in->waiting_for));
    json_object_set_new(o, "ready", json_boolean(in->state == HY_ST_RUNNING));
    json_object_set_new(o, "pid", in->pid > 0 ? json_integer(in->pid) : json_null());
    json_object_set_new(o, "cgroup", in->cgroup ? json_string(in->cgroup) : json_null());
    json_object_set_new(o, "uptime_s", in->pid > 0 ? json_real(in->uptime_s) : json_null());
    json_object_set_new(o, "restarts", json_integer(in->restarts));
    json_object_set_new(o, "last_exit", hy_status_last_exit(in));
    json_object_set_new(o, "frames_in", u64(in->frames_in));
    json_object_set_new(o, "bytes_in", u64(in->bytes_in));
    json_object_set_new(o, "frames_out", u64(in->frames_out));
    json_object_set_new(o, "bytes_out", u64(in->bytes_out));
    json_object_set_new(o, "drops", drops_json(&in->drops));
    json_object_set_new(o, "dropped", u64(hy_drops_total(&in->drops)));
    json_object_set_new(o, "protocol_errors", u64(in->protocol_errors));
    json_object_set_new(o, "queue_bytes", u64(in->queue_bytes));
    json_object_set_new(o, "queue_frames", u64(in->queue_frames));
    json_object_set_new(o, "held", json_boolean(in->held));
    json_object_set_new(o, "reclaimed", u64(in->reclaimed));
    json_object_set_new(o, "forked", json_boolean(in->forked));
    json_t *subs = json_array();
    /* topology subscriptions, then run-time ones not already listed */
    for (size_t i = 0; i < in->spec->nsubscribe; i++) {
        const hy_message *m = hy_schema_find(schema, in->spec->subscribe[i]);
        json_array_append_new(subs, m ? json_string(m->name) : json_integer(in->spec->subscribe[i]));
    }
    for (size_t i = 0; i < in->nsubs; i++) {
        bool dup = false;
        for (size_t j = 0; j < in->spec->nsubscribe && !dup; j++)
            dup = in->spec->subscribe[j] == in->subs[i];
        if (dup)
            continue;
        const hy_message *m = hy_schema_find(schema, in->subs[i]);
        json_array_append_new(subs, m ? json_string(m->name) : json_integer(in->subs[i]));
    }
    json_object_set_new(o, "subscriptions", subs);
    json_object_set_new(o, "heartbeat_age_s",
                        in->heartbeat_age_s >= 0 ? json_real(in->heartbeat_age_s) : json_null());
    if (in->retiring)
        json_object_set_new(o, "retiring", json_true());
    return o;
}

static json_t *tls_json(const hy_tls_view *v)
{
    if (!v->on)
        return json_null();
    json_t *o = json_object();
    json_object_set_new(o, "cert", v->cert_subject[0] ? json_string(v->cert_subject) : json_null());
    json_object_set_new(o, "cert_not_after", v->cert_not_after ? json_integer(v->cert_not_after) : json_null());
    if (v->peer_subject)
        json_object_set_new(o, "server", v->peer_subject[0] ? json_string(v->peer_subject) : json_null());
    if (v->peer_subject)
        json_object_set_new(o, "server_not_after", v->peer_not_after ? json_integer(v->peer_not_after) : json_null());
    json_object_set_new(o, "client_certificates", json_boolean(v->mutual));
    json_t *f = json_object();
    for (int i = 0; i < HY_TLS_FAIL__COUNT; i++)
        json_object_set_new(f, hy_tls_fail_str((hy_tls_fail)i), u64(v->fail[i]));
    json_object_set_new(o, "failures", f);
    return o;
}

static json_t *upstream_json(const hy_snapshot *snap)
{
    const hy_topology *t = snap->topo;
    const hy_up_view *u = &snap->up;
    if (!t->has_upstream)
        return json_null();
    json_t *o = json_object();
    json_object_set_new(o, "endpoint", json_string(u->name));
    json_object_set_new(o, "state", json_string(u->state));
    json_object_set_new(o, "state_for_s", json_real(u->state_for_s));
    json_object_set_new(o, "handshake", json_string(hy_up_handshake_str(t->upstream_handshake)));
    json_object_set_new(o, "echo", json_boolean(t->upstream_echo));
    json_object_set_new(o, "connects", u64(u->connects));
    json_object_set_new(o, "disconnects", u64(u->disconnects));
    json_object_set_new(o, "buffered_bytes", u64(u->buffered));
    json_object_set_new(o, "buffer_limit", u64(t->upstream_buffer));
    json_object_set_new(o, "back_pressure", json_boolean(u->back_pressure));
    json_object_set_new(o, "frames_out", u64(u->frames_out));
    json_object_set_new(o, "frames_taken", u64(u->frames_taken));
    json_object_set_new(o, "frames_resent", u64(u->frames_resent));
    json_object_set_new(o, "unconfirmed_bytes", u64(u->unconfirmed));
    json_object_set_new(o, "bytes_out", u64(u->bytes_out));
    json_object_set_new(o, "frames_in", u64(u->frames_in));
    json_object_set_new(o, "bytes_in", u64(u->bytes_in));
    json_t *d = json_object();
    json_object_set_new(d, "unknown-type", u64(u->drops.n[HY_DROP_UNKNOWN_TYPE]));
    json_object_set_new(d, "wrong-size", u64(u->drops.n[HY_DROP_WRONG_SIZE]));
    json_object_set_new(o, "drops", d);
    json_object_set_new(o, "tls", tls_json(&u->tls));
    return o;
}

static json_t *listen_json(const hy_snapshot *snap)
{
    json_t *a = json_array();
    for (size_t i = 0; i < snap->nlisten; i++) {
        const hy_listen_view *l = &snap->listen[i];
        json_t *o = json_pack("{s:s,s:s,s:I,s:I,s:I}", "endpoint", l->name, "handshake", l->handshake,
                              "max_clients", (json_int_t)l->max_clients, "clients", (json_int_t)l->clients,
                              "accepted", (json_int_t)l->accepted);
        json_object_set_new(o, "too_slow", u64(l->too_slow));
        json_object_set_new(o, "frame_timeouts", u64(l->frame_timeouts));
        json_object_set_new(o, "too_long", u64(l->too_long));
        json_object_set_new(o, "max_frame", u64(l->max_frame));
        json_object_set_new(o, "frame_timeout_ms", u64(l->frame_timeout_ms));
        json_object_set_new(o, "tls", tls_json(&l->tls));
        json_t *who = json_array();
        for (size_t k = 0; k < l->nwho; k++)
            json_array_append_new(who, json_pack("{s:s,s:o}", "client", l->who[k].name, "subject",
                                                  l->who[k].subject[0] ? json_string(l->who[k].subject)
                                                                       : json_null()));
        json_object_set_new(o, "who", who);
        json_object_set_new(o, "refused", json_pack("{s:o,s:o,s:o}", "handshake", u64(l->refused_handshake),
                                                    "max_clients", u64(l->refused_full), "fd_reserve",
                                                    u64(l->refused_fds)));
        json_array_append_new(a, o);
    }
    return a;
}

/* The contracts file on disk beside the running digest; only when watched
 * (a snapshot outside hyphad has no file). */
static void schema_disk_json(json_t *h, const hy_schema_view *v)
{
    if (!v->file)
        return;
    json_object_set_new(h, "schema_file", json_string(v->file));
    json_object_set_new(h, "schema_on_disk", v->readable ? json_string(v->on_disk) : json_null());
    json_object_set_new(h, "schema_stale", json_boolean(v->stale));
}

/* Everything but the workers: shared by both forms. */
static json_t *status_base(const hy_snapshot *s)
{
    const hy_topology *t = s->topo;
    json_t *o = json_object();
    json_object_set_new(o, "ok", json_true());
    json_t *h = json_object();
    json_object_set_new(h, "pid", json_integer(getpid()));
    json_object_set_new(h, "version", json_string(HYPHA_VERSION));
    json_object_set_new(h, "uptime_s", json_real(s->uptime_s));
    json_object_set_new(h, "topology", json_string(t->path));
    json_object_set_new(h, "schema", json_string(t->schema->digest_hex));
    schema_disk_json(h, &s->schema);
    json_object_set_new(h, "mode", json_string(t->has_upstream ? "upstream" : "embedded"));
    json_object_set_new(o, "hyphad", h);
    json_object_set_new(o, "upstream", upstream_json(s));
    json_object_set_new(o, "listen", listen_json(s));
    return o;
}

json_t *hy_status_json(const hy_snapshot *s)
{
    json_t *o = status_base(s);
    json_t *w = json_array();
    for (size_t i = 0; i < s->ninst; i++)
        json_array_append_new(w, hy_status_instance(&s->inst[i], s->topo->schema));
    json_object_set_new(o, "workers", w);
    return o;
}

/* ---- the table form (hyphactl status): rows of text, formatted here ---- */

static const char *fmt_last_exit(const hy_inst_view *in, char *out, size_t len)
{
    if (in->last_reason == HY_EXIT_NONE)
        return "-";
    char how[160], ago[32];
    snprintf(out, len, "%s, %s ago", hy_exit_text(in, how, sizeof how),
             hy_format_age(in->last_exit_ago_s, ago, sizeof ago));
    return out;
}

/* Arrays of strings, not objects: hyphactl prints them as they are, and a
 * fresh process building hundreds of small objects costs more than the
 * request (page faults). */
json_t *hy_status_table(const hy_snapshot *s)
{
    json_t *o = status_base(s);
    json_t *rows = json_array(), *notes = json_array();
    json_array_append_new(rows, json_pack("[ssssssssss]", "INSTANCE", "STATE", "PID", "UPTIME", "RESTARTS",
                                          "LAST EXIT", "FRAMES IN", "FRAMES OUT", "DROPPED", "QUEUE"));
    for (size_t i = 0; i < s->ninst; i++) {
        const hy_inst_view *in = &s->inst[i];
        char st[128], pid[16] = "-", up[32] = "-", rs[16], le[224], fi[24], fo[24], dr[24], q[32];
        snprintf(st, sizeof st, "%s%s", in->pending ? "pending" : hy_state_str(in->state),
                 in->retiring ? " (reload)" : "");
        if (in->waiting)
            snprintf(st, sizeof st, "waiting (after %s)", in->waiting_for);
        if (in->pid > 0) {
            snprintf(pid, sizeof pid, "%d", (int)in->pid);
            hy_format_age(in->uptime_s, up, sizeof up);
        }
        snprintf(rs, sizeof rs, "%u", in->restarts);
        snprintf(fi, sizeof fi, "%llu", (unsigned long long)in->frames_in);
        snprintf(fo, sizeof fo, "%llu", (unsigned long long)in->frames_out);
        uint64_t dropped = hy_drops_total(&in->drops);
        snprintf(dr, sizeof dr, "%llu", (unsigned long long)dropped);
        json_array_append_new(rows, json_pack("[ssssssssss]", in->label, st, pid, up, rs,
                                              fmt_last_exit(in, le, sizeof le), fi, fo, dr,
                                              hy_format_bytes(in->queue_bytes, q, sizeof q)));
        if (dropped) { /* by reason, only where there are some */
            char line[512], by[400];
            snprintf(line, sizeof line, "%s dropped: %s", in->label, hy_drops_format(&in->drops, " ", by, sizeof by));
            json_array_append_new(notes, json_string(line));
        }
    }
    json_object_set_new(o, "rows", rows);
    json_object_set_new(o, "notes", notes);
    return o;
}
