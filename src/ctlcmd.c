/* ctlcmd.c - the control commands: status, health, restart/stop/start,
 * reload, tail, tap, metrics (docs/control.md). Each reads the supervisor
 * through its accessors and a snapshot, and answers with one line. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl_int.h"
#include "hypha/decode.h"
#include "hypha/health.h"
#include "hypha/log.h"
#include "hypha/metrics.h"
#include "hypha/relay.h"
#include "hypha/status.h"
#include "hypha/supervisor.h"

#define COMP "control"
#define TAIL_DEFAULT 10

/* ---- names ------------------------------------------------------------- */

/* "risk" (every instance) or "risk[1]". Fills a malloc'd array. */
static int resolve(hy_ctl *c, const char *name, hy_instance ***out, size_t *nout, char *why, size_t whylen)
{
    const hy_sup *s = c->sup;
    char base[256];
    long want = -1;
    const char *br = strchr(name, '[');
    size_t blen = br ? (size_t)(br - name) : strlen(name);
    if (blen >= sizeof base || blen == 0) {
        snprintf(why, whylen, "'%s' is not a worker name", name);
        return -1;
    }
    memcpy(base, name, blen);
    base[blen] = '\0';
    if (br) {
        char *end;
        errno = 0;
        want = strtol(br + 1, &end, 10);
        if (errno || end == br + 1 || *end != ']' || end[1] != '\0' || want < 0) {
            snprintf(why, whylen, "'%s': an instance is written name[N], e.g. %s[0]", name, base);
            return -1;
        }
    }
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
        if (hy_inst_retiring(in) || strcmp(hy_inst_worker(in), base) != 0)
            continue;
        worker_known = true;
        if (want < 0 || (long)hy_inst_index(in) == want)
            sel[n++] = in;
    }
    if (n == 0) {
        free(sel);
        if (worker_known) {
            const hy_worker_spec *w = hy_topology_find_worker(hy_sup_topology(s), base);
            snprintf(why, whylen, "%s has no instance %ld (it has %u: %s[0] to %s[%u])", base, want,
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
static hy_instance **resolve_or_reply(hy_ctl_client *cl, const char *name, size_t *n)
{
    hy_instance **sel;
    char why[1024];
    if (resolve(cl->ctl, name, &sel, n, why, sizeof why) < 0) {
        hy_ctl_send_error(cl, "%s", why);
        return NULL;
    }
    return sel;
}

static const char *str_arg(json_t *req, const char *key) { return json_string_value(json_object_get(req, key)); }

/* ---- commands ------------------------------------------------------------ */

/* The health line of every instance and link, now. */
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

static void cmd_status(hy_ctl_client *cl, json_t *req)
{
    hy_ctl *c = cl->ctl;
    json_t *jn = json_object_get(req, "name");
    hy_instance **sel = NULL;
    size_t n = 0;
    if (jn && !json_is_null(jn)) {
        if (!json_is_string(jn)) {
            hy_ctl_send_error(cl, "status: 'name' must be a string");
            return;
        }
        if (!(sel = resolve_or_reply(cl, json_string_value(jn), &n)))
            return;
    }
    hy_snapshot snap;
    int rc = hy_sup_snapshot(c->sup, ev_now(c->loop), sel, n, &snap);
    free(sel);
    if (rc < 0) {
        hy_ctl_send_error(cl, "out of memory");
        return;
    }
    json_t *j = json_is_true(json_object_get(req, "table")) ? hy_status_table(&snap) : hy_status_json(&snap);
    json_object_set_new(j, "health", health_json(c, n ? NULL : &snap, false)); /* all shown: judged on the same */
    hy_snapshot_free(&snap);
    hy_ctl_send_json(cl, j);
}

static void cmd_health(hy_ctl_client *cl) { hy_ctl_send_json(cl, health_json(cl->ctl, NULL, true)); }

static void cmd_operate(hy_ctl_client *cl, json_t *req, const char *cmd)
{
    hy_ctl *c = cl->ctl;
    const char *name = str_arg(req, "name");
    if (!name) {
        hy_ctl_send_error(cl, "%s needs a worker: {\"cmd\":\"%s\",\"name\":\"NAME\"} (NAME or NAME[i])", cmd, cmd);
        return;
    }
    if (hy_sup_shutting_down(c->sup)) {
        hy_ctl_send_error(cl, "hyphad is shutting down");
        return;
    }
    size_t n;
    hy_instance **sel = resolve_or_reply(cl, name, &n);
    if (!sel)
        return;
    hy_log(HY_INFO, COMP, "operator command", "command", cmd, "name", name, "uid", HY_U64(cl->uid), NULL);
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++) {
        if (cmd[2] == 'o') /* stop */
            hy_sup_stop_instance(sel[i]);
        else if (cmd[0] == 'r')
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
             cmd[2] == 'o' ? "stopping" : cmd[0] == 'r' ? "restarting" : "starting", name, n, n == 1 ? "" : "s");
    hy_ctl_send_json(cl, json_pack("{s:b,s:o,s:s}", "ok", 1, "instances", list, "message", msg));
}

static void cmd_reload(hy_ctl_client *cl)
{
    hy_ctl *c = cl->ctl;
    if (!c->reload) {
        hy_ctl_send_error(cl, "reload is not available");
        return;
    }
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

static void cmd_tail(hy_ctl_client *cl, json_t *req)
{
    hy_ctl *c = cl->ctl;
    const char *name = str_arg(req, "name");
    json_t *jl = json_object_get(req, "lines");
    json_t *jf = json_object_get(req, "follow");
    if (!name) {
        hy_ctl_send_error(cl, "tail needs a worker: {\"cmd\":\"tail\",\"name\":\"NAME\",\"lines\":10}");
        return;
    }
    if ((jl && !json_is_integer(jl)) || (jf && !json_is_boolean(jf))) {
        hy_ctl_send_error(cl, "tail: 'lines' is a number and 'follow' true or false");
        return;
    }
    json_int_t want = jl ? json_integer_value(jl) : TAIL_DEFAULT;
    if (want < 0)
        want = 0;
    size_t n;
    hy_instance **sel = resolve_or_reply(cl, name, &n);
    if (!sel)
        return;
    /* The last `want` lines of the selected instances, in the order they
     * were written: every line carries a hyphad-wide sequence number. */
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
        for (size_t j = total > (size_t)want ? total - (size_t)want : 0; j < total; j++)
            json_array_append_new(lines, line_json(hy_inst_worker(all[j].in), hy_inst_index(all[j].in), all[j].line->text,
                                                     all[j].line->len));
    }
    free(all);
    bool follow = jf && json_is_true(jf);
    if (follow) {
        char base[256];
        const char *br = strchr(name, '[');
        snprintf(base, sizeof base, "%.*s", br ? (int)(br - name) : (int)strlen(name), name);
        cl->follow = strdup(base);
        cl->follow_inst = br ? (int)hy_inst_index(sel[0]) : -1;
        if (cl->follow) {
            cl->mode = CL_TAIL;
            ev_timer_stop(c->loop, &cl->idle);
        }
    }
    free(sel);
    hy_ctl_send_json(cl, json_pack("{s:b,s:o,s:b}", "ok", 1, "lines", lines ? lines : json_array(), "follow", follow));
}

void hy_ctl_on_line(void *ud, const char *worker, unsigned index, const char *line, size_t len)
{
    hy_ctl *c = ud;
    for (hy_ctl_client *cl = c->clients; cl; cl = cl->next) {
        if (cl->mode != CL_TAIL || strcmp(cl->follow, worker) != 0 ||
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

static void cmd_tap(hy_ctl_client *cl, json_t *req)
{
    hy_ctl *c = cl->ctl;
    const hy_schema *schema = hy_sup_topology(c->sup)->schema;
    json_t *types = json_object_get(req, "types");
    json_t *jc = json_object_get(req, "count");
    if (!json_is_array(types) || json_array_size(types) == 0) {
        hy_ctl_send_error(cl, "tap needs types: {\"cmd\":\"tap\",\"types\":[\"TypeName\" or id, ...]}");
        return;
    }
    if (jc && !json_is_null(jc) && (!json_is_integer(jc) || json_integer_value(jc) <= 0)) {
        hy_ctl_send_error(cl, "tap: 'count' must be a number above 0");
        return;
    }
    uint8_t *bits = calloc(TAP_BITS_BYTES, 1);
    json_t *names = json_array();
    if (!bits || !names) {
        free(bits);
        json_decref(names);
        hy_ctl_send_error(cl, "out of memory");
        return;
    }
    size_t i;
    json_t *v;
    json_array_foreach(types, i, v)
    {
        const hy_message *m = hy_decode_type(schema, v);
        if (!m) {
            char *txt = json_dumps(v, JSON_ENCODE_ANY);
            char known[512] = "";
            size_t k = 0;
            for (size_t j = 0; j < schema->nmsgs && k < sizeof known; j++)
                k += (size_t)snprintf(known + k, sizeof known - k, "%s%s (%u)", j ? ", " : "", schema->msgs[j].name,
                                      schema->msgs[j].type_id);
            hy_ctl_send_error(cl, "tap: the schema has no message %s (it has: %s)", txt ? txt : "?", known);
            free(txt);
            free(bits);
            json_decref(names);
            return;
        }
        bits[m->type_id >> 3] |= (uint8_t)(1u << (m->type_id & 7));
        json_array_append_new(names, json_string(m->name));
    }
    free(cl->tap_bits);
    cl->tap_bits = bits;
    cl->tap_count = jc && json_is_integer(jc);
    cl->tap_left = cl->tap_count ? (uint64_t)json_integer_value(jc) : 0;
    cl->mode = CL_TAP;
    ev_timer_stop(c->loop, &cl->idle);
    hy_ctl_send_json(cl, json_pack("{s:b,s:o}", "ok", 1, "types", names));
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

void hy_ctl_dispatch(hy_ctl_client *cl, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!req) {
        hy_ctl_send_error(cl, "not JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        return;
    }
    const char *cmd = json_is_object(req) ? str_arg(req, "cmd") : NULL;
    if (!json_is_object(req))
        hy_ctl_send_error(cl, "a request is a JSON object: {\"cmd\": \"status\"}");
    else if (!cmd)
        hy_ctl_send_error(cl, "the request has no \"cmd\" (status, health, restart, stop, start, reload, tail, tap, metrics)");
    else if (cl->mode != CL_REQUESTS)
        hy_ctl_send_error(cl, "this connection is streaming (tail -f or tap): open another one");
    else if (strcmp(cmd, "status") == 0)
        cmd_status(cl, req);
    else if (strcmp(cmd, "health") == 0)
        cmd_health(cl);
    else if (strcmp(cmd, "restart") == 0 || strcmp(cmd, "stop") == 0 || strcmp(cmd, "start") == 0)
        cmd_operate(cl, req, cmd);
    else if (strcmp(cmd, "reload") == 0)
        cmd_reload(cl);
    else if (strcmp(cmd, "tail") == 0)
        cmd_tail(cl, req);
    else if (strcmp(cmd, "tap") == 0)
        cmd_tap(cl, req);
    else if (strcmp(cmd, "metrics") == 0)
        cmd_metrics(cl);
    else
        hy_ctl_send_error(cl, "unknown command '%s' (status, health, restart, stop, start, reload, tail, tap, metrics)", cmd);
    json_decref(req);
}


/* The relay's tap bits: the union of every tapping client's. */
void hy_ctl_tap_recompute(hy_ctl *c)
{
    uint8_t *bits = NULL;
    for (hy_ctl_client *cl = c->clients; cl; cl = cl->next) {
        if (cl->mode != CL_TAP || cl->dead)
            continue;
        if (!bits && !(bits = calloc(TAP_BITS_BYTES, 1)))
            break;
        for (size_t i = 0; i < TAP_BITS_BYTES; i++)
            bits[i] |= cl->tap_bits[i];
    }
    hy_bus_set_tap(&hy_sup_relay(c->sup)->bus, bits, on_frame, c);
    free(c->tap_bits);
    c->tap_bits = bits;
}
