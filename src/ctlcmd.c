/* ctlcmd.c - the control commands: status, health, restart/stop/start,
 * reload, tail, tap, metrics (docs/control.md). A request comes here parsed
 * and checked (ctlreq.c); each command looks its NAME up among the
 * instances, reads the supervisor through its accessors and a snapshot,
 * and answers with one line. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl_int.h"
#include "hypha/ctlreq.h"
#include "hypha/decode.h"
#include "hypha/health.h"
#include "hypha/log.h"
#include "hypha/metrics.h"
#include "hypha/relay.h"
#include "hypha/status.h"
#include "hypha/supervisor.h"
#include "hypha/upgrade.h"

#define COMP "control"

/* ---- names ------------------------------------------------------------- */

/* The instances a parsed NAME selects (retiring ones are not named), in a
 * malloc'd array; -1 with why when there are none. */
static int resolve(hy_ctl *c, const hy_ctl_sel *want, hy_instance ***out, size_t *nout, char *why, size_t whylen)
{
    const hy_sup *s = c->sup;
    const char *base = want->base;
    bool every = strcmp(base, "all") == 0; /* a topology cannot name a worker `all` */
    size_t ninst = hy_sup_count(s);
    hy_instance **sel = calloc(ninst ? ninst : 1, sizeof *sel);
    if (!sel) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    size_t n = 0;
    bool worker_known = false;
    for (size_t i = 0; i < ninst; i++) {
        hy_instance *in = hy_sup_at(s, i);
        if (hy_inst_retiring(in) || (!every && strcmp(hy_inst_worker(in), base) != 0))
            continue;
        worker_known = true;
        if (want->index < 0 || (long)hy_inst_index(in) == want->index)
            sel[n++] = in;
    }
    if (n == 0) {
        free(sel);
        if (every) {
            snprintf(why, whylen, "`all`: the topology has no workers");
            return -1;
        }
        if (worker_known) {
            const hy_worker_spec *w = hy_topology_find_worker(hy_sup_topology(s), base);
            snprintf(why, whylen, "%s has no instance %ld (it has %u: %s[0] to %s[%u])", base, want->index,
                     w ? w->instances : 0, base, base, w && w->instances ? w->instances - 1 : 0);
            return -1;
        }
        int k = snprintf(why, whylen, "no worker named '%s' (workers:", base);
        const hy_topology *t = hy_sup_topology(s);
        for (size_t i = 0; i < t->nworkers && k > 0 && (size_t)k < whylen; i++)
            k += snprintf(why + k, whylen - (size_t)k, "%s %s", i ? "," : "", t->workers[i].name);
        if (k > 0 && (size_t)k < whylen)
            snprintf(why + k, whylen - (size_t)k, "%s)", t->nworkers ? "" : " none");
        return -1;
    }
    *out = sel;
    *nout = n;
    return 0;
}

/* resolve(), answering the client with the reason when it fails. */
static hy_instance **resolve_or_reply(hy_ctl_client *cl, const hy_ctl_sel *want, size_t *n)
{
    hy_instance **sel;
    char why[HY_CTL_WHY_MAX];
    if (resolve(cl->ctl, want, &sel, n, why, sizeof why) < 0) {
        hy_ctl_send_error(cl, "%s", why);
        return NULL;
    }
    return sel;
}

/* ---- commands ------------------------------------------------------------ */

/* Health judged on `all` (a snapshot of every instance), or on a fresh one. */
static json_t *health_json(hy_ctl *c, const hy_snapshot *all, bool with_ok)
{
    hy_snapshot snap;
    char reason[512];
    if (!all && hy_sup_snapshot(c->sup, ev_now(c->loop), NULL, 0, &snap) < 0)
        return NULL;
    hy_health h = hy_health_eval(all ? all : &snap, reason, sizeof reason);
    if (!all)
        hy_snapshot_free(&snap);
    if (with_ok)
        return json_pack("{s:b,s:s,s:i,s:s}", "ok", 1, "health", hy_health_str(h), "code", (int)h, "reason", reason);
    return json_pack("{s:s,s:i,s:s}", "health", hy_health_str(h), "code", (int)h, "reason", reason);
}

static void cmd_status(hy_ctl_client *cl, const hy_ctl_req *req)
{
    hy_ctl *c = cl->ctl;
    hy_instance **sel = NULL;
    size_t n = 0;
    if (req->name && !(sel = resolve_or_reply(cl, &req->sel, &n)))
        return;
    hy_snapshot snap;
    int rc = hy_sup_snapshot(c->sup, ev_now(c->loop), sel, n, &snap);
    free(sel);
    if (rc < 0) {
        hy_ctl_send_error(cl, "out of memory");
        return;
    }
    json_t *j = req->table ? hy_status_table(&snap) : hy_status_json(&snap);
    json_object_set_new(j, "health", health_json(c, n ? NULL : &snap, false)); /* all shown: judged on the same */
    json_object_set_new(j, "upgrade", hy_upgrade_status());
    hy_snapshot_free(&snap);
    hy_ctl_send_json(cl, j);
}

static void cmd_health(hy_ctl_client *cl) { hy_ctl_send_json(cl, health_json(cl->ctl, NULL, true)); }

/* restart, stop, start */
static void cmd_operate(hy_ctl_client *cl, const hy_ctl_req *req)
{
    size_t n;
    hy_instance **sel = resolve_or_reply(cl, &req->sel, &n);
    if (!sel)
        return;
    hy_log(HY_INFO, COMP, "operator command", "command", req->cmd_name, "name", req->name, "uid", HY_U64(cl->uid),
           NULL);
    json_t *list = json_array();
    for (size_t i = 0; req->preload && i < n; i++) /* before the instances: they are forked from the new one */
        hy_sup_restart_preload(cl->ctl->sup, hy_inst_worker(sel[i]));
    for (size_t i = 0; i < n; i++) {
        if (req->cmd == HY_CTL_STOP)
            hy_sup_stop_instance(sel[i]);
        else if (req->cmd == HY_CTL_RESTART)
            hy_sup_restart_instance(sel[i]);
        else
            hy_sup_start_instance(sel[i]);
        pid_t pid = hy_inst_pid(sel[i]);
        json_array_append_new(list, json_pack("{s:s,s:i,s:s,s:o}", "worker", hy_inst_worker(sel[i]), "instance",
                                              (int)hy_inst_index(sel[i]), "state", hy_state_str(hy_inst_state(sel[i])),
                                              "pid", pid > 0 ? json_integer(pid) : json_null()));
    }
    free(sel);
    char msg[512];
    snprintf(msg, sizeof msg, "%s: %s (%zu instance%s)",
             req->cmd == HY_CTL_STOP      ? "stopping"
             : req->cmd == HY_CTL_RESTART ? "restarting"
                                          : "starting",
             req->name, n, n == 1 ? "" : "s");
    hy_ctl_send_json(cl, json_pack("{s:b,s:o,s:s}", "ok", 1, "instances", list, "message", msg));
}

static void cmd_signal(hy_ctl_client *cl, const hy_ctl_req *req)
{
    size_t n;
    hy_instance **sel = resolve_or_reply(cl, &req->sel, &n);
    if (!sel)
        return;
    const char *sig = hy_signal_abbrev(req->signal);
    char num[16];
    snprintf(num, sizeof num, "%d", req->signal);
    hy_log(HY_INFO, COMP, "operator command", "command", "signal", "name", req->name, "signal", sig ? sig : num,
           "uid", HY_U64(cl->uid), NULL);
    json_t *list = json_array();
    size_t sent = 0;
    for (size_t i = 0; i < n; i++) {
        pid_t pid = hy_inst_pid(sel[i]);
        if (hy_sup_signal_instance(sel[i], req->signal)) /* its process group, as the stop signal goes */
            sent++;
        json_array_append_new(list, json_pack("{s:s,s:i,s:s,s:o,s:b}", "worker", hy_inst_worker(sel[i]), "instance",
                                              (int)hy_inst_index(sel[i]), "state", hy_state_str(hy_inst_state(sel[i])),
                                              "pid", pid > 0 ? json_integer(pid) : json_null(), "signalled", pid > 0));
    }
    free(sel);
    char msg[512];
    snprintf(msg, sizeof msg, "sent SIG%s to %s (%zu of %zu instance%s running)", sig ? sig : num, req->name, sent, n,
             n == 1 ? "" : "s");
    hy_ctl_send_json(cl, json_pack("{s:b,s:o,s:s}", "ok", 1, "instances", list, "message", msg));
}

static void cmd_reload(hy_ctl_client *cl)
{
    hy_ctl *c = cl->ctl;
    json_t *reply = json_object();
    hy_err err = {{0}};
    if (!reply || c->reload(c->reload_ud, reply, &err) < 0) {
        json_decref(reply);
        hy_ctl_send_error(cl, "%s", err.msg[0] ? err.msg : "out of memory");
        return;
    }
    json_object_set_new(reply, "ok", json_true());
    hy_ctl_send_json(cl, reply);
}

static void cmd_upgrade(hy_ctl_client *cl, const hy_ctl_req *req)
{
    hy_ctl *c = cl->ctl;
    json_t *reply = json_object();
    hy_err err = {{0}};
    if (!reply || c->upgrade(c->reload_ud, req->path, reply, &err) < 0) {
        json_decref(reply);
        hy_ctl_send_error(cl, "%s", err.msg[0] ? err.msg : "out of memory");
        return;
    }
    json_object_set_new(reply, "ok", json_true());
    hy_ctl_send_json(cl, reply);
}

static json_t *line_json(const char *worker, unsigned index, const char *text, size_t len)
{
    json_t *o = json_object();
    json_object_set_new(o, "worker", json_string(worker));
    json_object_set_new(o, "instance", json_integer(index));
    /* Worker output may be any bytes: jansson wants UTF-8. */
    json_t *l = json_stringn(text, len);
    if (!l) {
        char *fixed = malloc(len + 1);
        if (fixed) {
            for (size_t i = 0; i < len; i++)
                fixed[i] = (unsigned char)text[i] < 0x80 && text[i] ? text[i] : '?';
            l = json_stringn(fixed, len);
            free(fixed);
        }
    }
    json_object_set_new(o, "line", l ? l : json_string(""));
    return o;
}

typedef struct tail_pick {
    const hy_instance *in;
    const hy_tail_line *line;
} tail_pick;

static int cmp_pick(const void *a, const void *b)
{
    uint64_t x = ((const tail_pick *)a)->line->seq, y = ((const tail_pick *)b)->line->seq;
    return x < y ? -1 : x > y;
}

/* The last `want` lines of the selected instances, in the order they were
 * written: every line carries a hyphad-wide sequence number. NULL on ENOMEM. */
static json_t *tail_lines(hy_instance *const *sel, size_t n, uint64_t want)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += hy_inst_tail(sel[i])->n;
    json_t *lines = json_array();
    tail_pick *all = total ? malloc(total * sizeof *all) : NULL;
    if (lines && (all || !total)) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < hy_inst_tail(sel[i])->n; j++)
                all[k++] = (tail_pick){sel[i], hy_tail_get(hy_inst_tail(sel[i]), j)};
        if (total)
            qsort(all, total, sizeof *all, cmp_pick);
        for (size_t j = total > want ? total - (size_t)want : 0; j < total; j++)
            json_array_append_new(lines, line_json(hy_inst_worker(all[j].in), hy_inst_index(all[j].in),
                                                   all[j].line->text, all[j].line->len));
    }
    free(all);
    return lines;
}

static void cmd_tail(hy_ctl_client *cl, const hy_ctl_req *req)
{
    hy_ctl *c = cl->ctl;
    size_t n;
    hy_instance **sel = resolve_or_reply(cl, &req->sel, &n);
    if (!sel)
        return;
    json_t *lines = tail_lines(sel, n, req->lines);
    if (req->follow) {
        cl->follow = strdup(req->sel.base);
        cl->follow_inst = req->sel.index >= 0 ? (int)hy_inst_index(sel[0]) : -1;
        if (cl->follow) {
            cl->mode = CL_TAIL;
            ev_timer_stop(c->loop, &cl->idle);
        }
    }
    free(sel);
    hy_ctl_send_json(cl,
                     json_pack("{s:b,s:o,s:b}", "ok", 1, "lines", lines ? lines : json_array(), "follow", req->follow));
}

void hy_ctl_on_line(void *ud, const char *worker, unsigned index, const char *line, size_t len)
{
    hy_ctl *c = ud;
    for (hy_ctl_client *cl = c->clients; cl; cl = cl->next) {
        if (cl->mode != CL_TAIL || (strcmp(cl->follow, worker) != 0 && strcmp(cl->follow, "all") != 0) ||
            (cl->follow_inst >= 0 && (unsigned)cl->follow_inst != index))
            continue;
        hy_ctl_stream_line(cl, line_json(worker, index, line, len));
    }
}

static void on_frame(void *ud, const char *from, uint16_t type_id, const uint8_t *payload, uint32_t len)
{
    hy_ctl *c = ud;
    const hy_message *m = hy_schema_find(hy_sup_topology(c->sup)->schema, type_id);
    json_t *fields = NULL;
    for (hy_ctl_client *cl = c->clients; cl; cl = cl->next) {
        if (cl->mode != CL_TAP || !(cl->tap_bits[type_id >> 3] & (1u << (type_id & 7))))
            continue;
        if (cl->tap_count && cl->tap_left == 0)
            continue;
        if (!fields && !(fields = hy_decode_json(m, payload, len)))
            fields = json_null();
        json_t *o = json_pack("{s:s,s:i,s:s,s:I,s:O}", "type", m ? m->name : "?", "type_id", (int)type_id, "from",
                              from, "size", (json_int_t)len, "fields", fields);
        hy_ctl_stream_line(cl, o);
        if (cl->tap_count && --cl->tap_left == 0) {
            cl->closing = true; /* its last frame: closed once written */
            if (hy_ctl_pending(cl) == 0) {
                cl->dead = true;
                ev_feed_event(c->loop, &cl->idle, EV_TIMER);
            } else { /* one that never reads it is dropped at the deadline */
                ev_timer_again(c->loop, &cl->idle);
            }
        }
    }
    json_decref(fields);
}

/* The request's bit set and names become the client's: it streams. */
static void cmd_tap(hy_ctl_client *cl, hy_ctl_req *req)
{
    hy_ctl *c = cl->ctl;
    free(cl->tap_bits);
    cl->tap_bits = req->tap_bits;
    req->tap_bits = NULL;
    cl->tap_count = req->tap_count > 0;
    cl->tap_left = req->tap_count;
    cl->mode = CL_TAP;
    ev_timer_stop(c->loop, &cl->idle);
    hy_ctl_send_json(cl, json_pack("{s:b,s:O}", "ok", 1, "types", req->tap_names));
    hy_ctl_tap_recompute(c);
}

static void cmd_metrics(hy_ctl_client *cl)
{
    hy_ctl *c = cl->ctl;
    size_t len;
    char *text = hy_metrics_text(c->sup, ev_now(c->loop), &len);
    if (!text) {
        hy_ctl_send_error(cl, "out of memory");
        return;
    }
    hy_ctl_send_json(cl, json_pack("{s:b,s:s%}", "ok", 1, "text", text, len));
    free(text);
}

/* A request that passed its checks. */
static void run(hy_ctl_client *cl, hy_ctl_req *req)
{
    switch (req->cmd) {
    case HY_CTL_STATUS: cmd_status(cl, req); break;
    case HY_CTL_HEALTH: cmd_health(cl); break;
    case HY_CTL_RESTART:
    case HY_CTL_STOP:
    case HY_CTL_START: cmd_operate(cl, req); break;
    case HY_CTL_RELOAD: cmd_reload(cl); break;
    case HY_CTL_TAIL: cmd_tail(cl, req); break;
    case HY_CTL_TAP: cmd_tap(cl, req); break;
    case HY_CTL_METRICS: cmd_metrics(cl); break;
    case HY_CTL_SIGNAL: cmd_signal(cl, req); break;
    case HY_CTL_UPGRADE: cmd_upgrade(cl, req); break;
    }
}

void hy_ctl_dispatch(hy_ctl_client *cl, const char *line, size_t len)
{
    hy_ctl *c = cl->ctl;
    hy_ctl_facts facts = {hy_sup_topology(c->sup)->schema, cl->mode != CL_REQUESTS, hy_sup_shutting_down(c->sup),
                          c->reload != NULL, c->upgrade != NULL};
    hy_ctl_req req;
    char why[HY_CTL_WHY_MAX];
    if (hy_ctl_req_parse(line, len, &facts, &req, why, sizeof why) < 0) {
        hy_ctl_send_error(cl, "%s", why);
        return;
    }
    run(cl, &req);
    hy_ctl_req_free(&req);
}

/* The relay's tap bits: the union of every tapping client's. */
void hy_ctl_tap_recompute(hy_ctl *c)
{
    uint8_t *bits = NULL;
    for (hy_ctl_client *cl = c->clients; cl; cl = cl->next) {
        if (cl->mode != CL_TAP || cl->dead)
            continue;
        if (!bits && !(bits = calloc(HY_CTL_TAP_BYTES, 1)))
            break;
        for (size_t i = 0; i < HY_CTL_TAP_BYTES; i++)
            bits[i] |= cl->tap_bits[i];
    }
    hy_bus_set_tap(&hy_sup_relay(c->sup)->bus, bits, on_frame, c);
    free(c->tap_bits);
    c->tap_bits = bits;
}
