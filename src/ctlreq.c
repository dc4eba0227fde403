/* ctlreq.c - a control request before it is run (see hypha/ctlreq.h): lines
 * cut from a client's bytes, each parsed, its command named and its
 * arguments checked. Everything a client can get wrong is refused here,
 * with the sentence the reply carries; ctlcmd.c only looks names up and
 * acts. Pure: the facts a check needs (the schema, whether the connection
 * streams, whether hyphad is shutting down) are handed in.
 */
#include "hypha/ctlreq.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hypha/decode.h"
#include "hypha/topology.h"
#include "hypha/utf8.h"

#define TAIL_DEFAULT 10
#define COMMANDS "status, health, restart, stop, start, signal, reload, upgrade, tail, tap, metrics"

size_t hy_ctl_next_line(const char *buf, size_t n, bool eof, size_t *len)
{
    const char *nl = memchr(buf, '\n', n);
    if (!nl && !eof)
        return 0;
    size_t l = nl ? (size_t)(nl - buf) : n;
    *len = l && buf[l - 1] == '\r' ? l - 1 : l;
    return nl ? l + 1 : n;
}

static int refuse(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int refuse(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    return -1;
}

int hy_ctl_sel_parse(const char *name, hy_ctl_sel *sel, char *why, size_t whylen)
{
    const char *br = strchr(name, '[');
    size_t blen = br ? (size_t)(br - name) : strlen(name);
    if (blen >= sizeof sel->base || blen == 0)
        return refuse(why, whylen, "'%s' is not a worker name", name);
    memcpy(sel->base, name, blen);
    sel->base[blen] = '\0';
    sel->index = -1;
    if (br) {
        char *end;
        errno = 0;
        long want = strtol(br + 1, &end, 10);
        if (errno || end == br + 1 || *end != ']' || end[1] != '\0' || want < 0)
            return refuse(why, whylen, "'%s': an instance is written name[N], e.g. %s[0]", name, sel->base);
        sel->index = want;
        if (strcmp(sel->base, "all") == 0)
            return refuse(why, whylen, "'%s': `all` is every instance of every worker, it takes no [N]", name);
    }
    return 0;
}

static const char *str_arg(const json_t *req, const char *key)
{
    return json_string_value(json_object_get(req, key));
}

/* ---- each command's arguments ---------------------------------------------- */

static int args_status(hy_ctl_req *r, const hy_ctl_facts *f, char *why, size_t whylen)
{
    (void)f;
    json_t *jn = json_object_get(r->json, "name");
    r->table = json_is_true(json_object_get(r->json, "table"));
    if (!jn || json_is_null(jn))
        return 0;
    if (!json_is_string(jn))
        return refuse(why, whylen, "status: 'name' must be a string");
    r->name = json_string_value(jn);
    return hy_ctl_sel_parse(r->name, &r->sel, why, whylen);
}

/* restart, stop, start */
static int args_operate(hy_ctl_req *r, const hy_ctl_facts *f, char *why, size_t whylen)
{
    if (!(r->name = str_arg(r->json, "name")))
        return refuse(why, whylen, "%s needs a worker: {\"cmd\":\"%s\",\"name\":\"NAME\"} (NAME or NAME[i])",
                      r->cmd_name, r->cmd_name);
    if (f->shutting_down)
        return refuse(why, whylen, "hyphad is shutting down");
    json_t *pre = json_object_get(r->json, "preload");
    if (pre && (!json_is_boolean(pre) || r->cmd != HY_CTL_RESTART))
        return refuse(why, whylen, "'preload' is true or false, and only for restart (a new fork server first)");
    r->preload = json_is_true(pre);
    return hy_ctl_sel_parse(r->name, &r->sel, why, whylen);
}

/* signal NAME SIG: SIG a name (TERM, SIGHUP, usr1) or a number 1-64 */
static int args_signal(hy_ctl_req *r, const hy_ctl_facts *f, char *why, size_t whylen)
{
    json_t *js = json_object_get(r->json, "signal");
    if (!(r->name = str_arg(r->json, "name")) || !js)
        return refuse(why, whylen, "signal needs a worker and a signal: "
                                   "{\"cmd\":\"signal\",\"name\":\"NAME\",\"signal\":\"HUP\"}");
    if (json_is_integer(js) && json_integer_value(js) >= 1 && json_integer_value(js) <= 64)
        r->signal = (int)json_integer_value(js);
    else if (json_is_string(js))
        r->signal = hy_signal_parse(json_string_value(js));
    else
        r->signal = -1;
    if (r->signal < 0) {
        char cut[40];
        snprintf(cut, sizeof cut, "%s", json_is_string(js) ? json_string_value(js) : "that");
        return refuse(why, whylen, "signal: '%s' is not a signal (a number 1-64, or TERM, INT, HUP, QUIT, KILL, USR1, "
                                   "USR2, ABRT, ALRM, WINCH, CONT, STOP)", cut);
    }
    if (f->shutting_down)
        return refuse(why, whylen, "hyphad is shutting down");
    return hy_ctl_sel_parse(r->name, &r->sel, why, whylen);
}

static int args_reload(hy_ctl_req *r, const hy_ctl_facts *f, char *why, size_t whylen)
{
    (void)r;
    return f->can_reload ? 0 : refuse(why, whylen, "reload is not available");
}

static int args_upgrade(hy_ctl_req *r, const hy_ctl_facts *f, char *why, size_t whylen)
{
    json_t *p = json_object_get(r->json, "path");
    if (p && !json_is_null(p) && (!json_is_string(p) || json_string_value(p)[0] != '/'))
        return refuse(why, whylen, "upgrade: 'path' is the new binary's absolute path: "
                                   "{\"cmd\":\"upgrade\",\"path\":\"/usr/bin/hyphad\"}");
    r->path = json_is_string(p) ? json_string_value(p) : NULL;
    if (f->shutting_down)
        return refuse(why, whylen, "hyphad is shutting down");
    return f->can_upgrade ? 0 : refuse(why, whylen, "upgrade is not available");
}

static int args_tail(hy_ctl_req *r, const hy_ctl_facts *f, char *why, size_t whylen)
{
    (void)f;
    json_t *jl = json_object_get(r->json, "lines");
    json_t *jf = json_object_get(r->json, "follow");
    if (!(r->name = str_arg(r->json, "name")))
        return refuse(why, whylen, "tail needs a worker: {\"cmd\":\"tail\",\"name\":\"NAME\",\"lines\":10}");
    if ((jl && !json_is_integer(jl)) || (jf && !json_is_boolean(jf)))
        return refuse(why, whylen, "tail: 'lines' is a number and 'follow' true or false");
    json_int_t want = jl ? json_integer_value(jl) : TAIL_DEFAULT;
    r->lines = want < 0 ? 0 : (uint64_t)want;
    r->follow = jf && json_is_true(jf);
    return hy_ctl_sel_parse(r->name, &r->sel, why, whylen);
}

/* A type tap cannot name: the refusal lists what the schema has. */
static int unknown_type(const hy_schema *schema, const json_t *v, char *why, size_t whylen)
{
    char *txt = json_dumps(v, JSON_ENCODE_ANY);
    char known[512] = "";
    size_t k = 0;
    for (size_t j = 0; j < schema->nmsgs && k < sizeof known; j++)
        k += (size_t)snprintf(known + k, sizeof known - k, "%s%s (%u)", j ? ", " : "", schema->msgs[j].name,
                              schema->msgs[j].type_id);
    refuse(why, whylen, "tap: the schema has no message %s (it has: %s)", txt ? txt : "?", known);
    free(txt);
    return -1;
}

static int args_tap(hy_ctl_req *r, const hy_ctl_facts *f, char *why, size_t whylen)
{
    json_t *types = json_object_get(r->json, "types");
    json_t *jc = json_object_get(r->json, "count");
    if (!json_is_array(types) || json_array_size(types) == 0)
        return refuse(why, whylen, "tap needs types: {\"cmd\":\"tap\",\"types\":[\"TypeName\" or id, ...]}");
    if (jc && !json_is_null(jc) && (!json_is_integer(jc) || json_integer_value(jc) <= 0))
        return refuse(why, whylen, "tap: 'count' must be a number above 0");
    r->tap_bits = calloc(HY_CTL_TAP_BYTES, 1);
    r->tap_names = json_array();
    if (!r->tap_bits || !r->tap_names)
        return refuse(why, whylen, "out of memory");
    size_t i;
    json_t *v;
    json_array_foreach(types, i, v)
    {
        const hy_message *m = hy_decode_type(f->schema, v);
        if (!m)
            return unknown_type(f->schema, v, why, whylen);
        r->tap_bits[m->type_id >> 3] |= (uint8_t)(1u << (m->type_id & 7));
        json_array_append_new(r->tap_names, json_string(m->name));
    }
    r->tap_count = json_is_integer(jc) ? (uint64_t)json_integer_value(jc) : 0;
    return 0;
}

typedef struct command {
    const char *name;
    hy_ctl_cmd cmd;
    int (*args)(hy_ctl_req *r, const hy_ctl_facts *f, char *why, size_t whylen); /* NULL: none */
} command;

static const command commands[] = {
    {"status", HY_CTL_STATUS, args_status},    {"health", HY_CTL_HEALTH, NULL},
    {"restart", HY_CTL_RESTART, args_operate}, {"stop", HY_CTL_STOP, args_operate},
    {"start", HY_CTL_START, args_operate},     {"reload", HY_CTL_RELOAD, args_reload},
    {"tail", HY_CTL_TAIL, args_tail},          {"tap", HY_CTL_TAP, args_tap},
    {"metrics", HY_CTL_METRICS, NULL},         {"signal", HY_CTL_SIGNAL, args_signal},
    {"upgrade", HY_CTL_UPGRADE, args_upgrade},
};

/* ---- the request ------------------------------------------------------------- */

/* The object and its command; the arguments are the command's. */
static int parse_json(const char *line, size_t len, const hy_ctl_facts *f, hy_ctl_req *r, char *why, size_t whylen)
{
    json_error_t jerr;
    if (!(r->json = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr)))
        return refuse(why, whylen, "not JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
    if (!json_is_object(r->json))
        return refuse(why, whylen, "a request is a JSON object: {\"cmd\": \"status\"}");
    if (!(r->cmd_name = str_arg(r->json, "cmd")))
        return refuse(why, whylen, "the request has no \"cmd\" (" COMMANDS ")");
    if (f->streaming)
        return refuse(why, whylen, "this connection is streaming (tail -f or tap): open another one");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(r->cmd_name, commands[i].name) == 0) {
            r->cmd = commands[i].cmd;
            return commands[i].args ? commands[i].args(r, f, why, whylen) : 0;
        }
    }
    return refuse(why, whylen, "unknown command '%s' (" COMMANDS ")", r->cmd_name);
}

int hy_ctl_req_parse(const char *line, size_t len, const hy_ctl_facts *f, hy_ctl_req *req, char *why,
                     size_t whylen)
{
    memset(req, 0, sizeof *req);
    req->sel.index = -1;
    if (parse_json(line, len, f, req, why, whylen) < 0) {
        hy_ctl_req_free(req);
        return -1;
    }
    return 0;
}

void hy_ctl_req_free(hy_ctl_req *req)
{
    json_decref(req->json);
    json_decref(req->tap_names);
    free(req->tap_bits);
    memset(req, 0, sizeof *req);
    req->sel.index = -1;
}

json_t *hy_ctl_error_json(const char *msg)
{
    /* A name or a command the text quotes, cut to its buffer, may end
     * inside a character: jansson writes no string that is not UTF-8, and
     * the reply would be "out of memory" instead of the reason. */
    size_t n = strlen(msg);
    char *text = malloc(n + 1);
    if (!text)
        return NULL;
    for (size_t i = 0; i < n;) {
        size_t k = hy_utf8_seq((const uint8_t *)msg + i, n - i);
        if (k == 0) {
            text[i++] = '?';
            continue;
        }
        memcpy(text + i, msg + i, k);
        i += k;
    }
    text[n] = '\0';
    json_t *j = json_pack("{s:b,s:s}", "ok", 0, "error", text);
    free(text);
    return j;
}
