/* metrics.c - the Prometheus text exposition of a snapshot (see
 * hypha/metrics.h; httpd.c serves it over HTTP). One family at a time:
 * HELP, TYPE, then every sample, so families are never interleaved. */
#define _GNU_SOURCE
#include "hypha/metrics.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hypha/health.h"
#include "hypha/supervisor.h"
#include "hypha/version.h"

#define COMP "metrics"

/* ---- a growing text buffer ---------------------------------------------- */

typedef struct buf {
    char *p;
    size_t len, cap;
    bool oom;
} buf;

/* Room for n more bytes and a NUL; false (and oom set) when memory runs out. */
static bool reserve(buf *b, size_t n)
{
    if (b->oom)
        return false;
    if (b->len + n + 1 <= b->cap)
        return true;
    size_t cap = b->cap * 2 + n + 1;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void bprintf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(buf *b, const char *fmt, ...)
{
    for (size_t need = 0; reserve(b, need);) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        need = (size_t)n;
    }
}

static void bput(buf *b, const char *p, size_t n)
{
    if (!reserve(b, n))
        return;
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void bstr(buf *b, const char *s) { bput(b, s, strlen(s)); }

static void bu64(buf *b, unsigned long long v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do
        tmp[--i] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    bput(b, tmp + i, sizeof tmp - i);
}

/* A label value: backslash, double quote and newline escaped. */
static void blabel(buf *b, const char *v)
{
    while (*v) {
        size_t run = strcspn(v, "\\\"\n");
        bput(b, v, run);
        v += run;
        if (!*v)
            break;
        bstr(b, *v == '\\' ? "\\\\" : *v == '"' ? "\\\"" : "\\n");
        v++;
    }
}

static void family(buf *b, const char *name, const char *type, const char *help)
{
    bprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* `{worker="risk",instance="1"` (escaped once per instance and render). */
typedef struct labels {
    char text[400];
    size_t len;
} labels;

static void inst_labels(const hy_inst_view *in, labels *l)
{
    buf b = {.p = malloc(sizeof l->text), .cap = sizeof l->text};
    l->len = 0;
    if (!b.p)
        return;
    bstr(&b, "{worker=\"");
    blabel(&b, in->spec->name);
    bprintf(&b, "\",instance=\"%u\"", in->index);
    if (!b.oom && b.len < sizeof l->text) { /* names are at most 64 bytes: it fits */
        memcpy(l->text, b.p, b.len);
        l->len = b.len;
    }
    free(b.p);
}

static void inst_sample(buf *b, const char *name, const labels *l, const char *extra_k, const char *extra_v,
                        unsigned long long v)
{
    bstr(b, name);
    bput(b, l->text, l->len);
    if (extra_k) {
        bput(b, ",", 1);
        bstr(b, extra_k);
        bput(b, "=\"", 2);
        blabel(b, extra_v);
        bput(b, "\"", 1);
    }
    bput(b, "} ", 2);
    bu64(b, v);
    bput(b, "\n", 1);
}

typedef unsigned long long (*inst_get)(const hy_inst_view *);
static unsigned long long g_ready(const hy_inst_view *in) { return in->state == HY_ST_RUNNING; }
static unsigned long long g_restarts(const hy_inst_view *in) { return in->restarts; }
static unsigned long long g_fin(const hy_inst_view *in) { return in->frames_in; }
static unsigned long long g_bin(const hy_inst_view *in) { return in->bytes_in; }
static unsigned long long g_fout(const hy_inst_view *in) { return in->frames_out; }
static unsigned long long g_bout(const hy_inst_view *in) { return in->bytes_out; }
static unsigned long long g_proto(const hy_inst_view *in) { return in->protocol_errors; }
static unsigned long long g_qbytes(const hy_inst_view *in) { return in->queue_bytes; }
static unsigned long long g_qframes(const hy_inst_view *in) { return in->queue_frames; }
static unsigned long long g_reclaimed(const hy_inst_view *in) { return in->reclaimed; }

static void inst_family(buf *b, const hy_snapshot *s, const labels *ls, const char *name, const char *type,
                        const char *help, inst_get get)
{
    family(b, name, type, help);
    for (size_t i = 0; i < s->ninst; i++)
        inst_sample(b, name, &ls[i], NULL, NULL, get(&s->inst[i]));
}

static void workers(buf *b, const hy_snapshot *s, const labels *ls)
{
    family(b, "hypha_worker_state", "gauge", "1 for the instance's current state, 0 for the others.");
    for (size_t i = 0; i < s->ninst; i++)
        for (int st = HY_ST_STARTING; st <= HY_ST_STOPPED; st++)
            inst_sample(b, "hypha_worker_state", &ls[i], "state", hy_state_str((hy_state)st),
                        s->inst[i].state == (hy_state)st);
    inst_family(b, s, ls, "hypha_worker_ready", "gauge", "1 when the instance is running (ready).", g_ready);
    inst_family(b, s, ls, "hypha_worker_restarts_total", "counter", "Processes started after the first.", g_restarts);
    inst_family(b, s, ls, "hypha_worker_frames_in_total", "counter", "Frames delivered to the worker's stdin.", g_fin);
    inst_family(b, s, ls, "hypha_worker_bytes_in_total", "counter", "Payload bytes delivered to the worker.", g_bin);
    inst_family(b, s, ls, "hypha_worker_frames_out_total", "counter", "Frames the worker published that were accepted.",
                g_fout);
    inst_family(b, s, ls, "hypha_worker_bytes_out_total", "counter", "Payload bytes the worker published.", g_bout);
    family(b, "hypha_worker_dropped_frames_total", "counter", "Frames from or for the worker that were dropped.");
    for (size_t i = 0; i < s->ninst; i++)
        for (int d = 0; d < HY_DROP__COUNT; d++)
            inst_sample(b, "hypha_worker_dropped_frames_total", &ls[i], "reason", hy_drop_str((hy_drop)d),
                        s->inst[i].drops.n[d]);
    inst_family(b, s, ls, "hypha_worker_protocol_errors_total", "counter",
                "Corrupt streams and malformed control frames from the worker.", g_proto);
    inst_family(b, s, ls, "hypha_worker_queue_bytes", "gauge", "Bytes waiting for the worker's stdin.", g_qbytes);
    inst_family(b, s, ls, "hypha_worker_queue_frames", "gauge", "Frames waiting for the worker's stdin.", g_qframes);
    inst_family(b, s, ls, "hypha_worker_reclaimed_frames_total", "counter",
                "Frames a dead process never read, taken back from its stdin pipe for the next (queue.hold).",
                g_reclaimed);
}

static void counter(buf *b, const char *name, const char *type, const char *help, unsigned long long v)
{
    family(b, name, type, help);
    bprintf(b, "%s %llu\n", name, v);
}

/* name{endpoint="...",reason="..."} v */
static void endpoint_reason(buf *b, const char *name, const char *endpoint, const char *reason, uint64_t v)
{
    bprintf(b, "%s{endpoint=\"", name);
    blabel(b, endpoint);
    bprintf(b, "\",reason=\"%s\"} %llu\n", reason, (unsigned long long)v);
}

static void links(buf *b, const hy_snapshot *s)
{
    const hy_up_view *u = &s->up;
    if (s->topo->has_upstream) {
        counter(b, "hypha_upstream_connected", "gauge", "1 while the bus connection is up (handshake done).", u->ready);
        counter(b, "hypha_upstream_connects_total", "counter", "Connections made to the bus.", u->connects);
        counter(b, "hypha_upstream_disconnects_total", "counter", "Connections to the bus lost.", u->disconnects);
        counter(b, "hypha_upstream_buffered_bytes", "gauge", "Bytes held for the bus.", u->buffered);
        counter(b, "hypha_upstream_frames_out_total", "counter", "Frames queued for the bus.", u->frames_out);
        counter(b, "hypha_upstream_frames_taken_total", "counter",
                "Frames the bus took (read by it over Unix, acknowledged by its host over TCP).", u->frames_taken);
        counter(b, "hypha_upstream_frames_resent_total", "counter",
                "Frames written but not known taken when the connection was lost, sent again.", u->frames_resent);
        counter(b, "hypha_upstream_unconfirmed_bytes", "gauge", "Bytes written to the bus, not yet known taken.",
                u->unconfirmed);
        counter(b, "hypha_upstream_bytes_out_total", "counter", "Payload bytes queued for the bus.", u->bytes_out);
        counter(b, "hypha_upstream_frames_in_total", "counter", "Frames received from the bus and accepted.",
                u->frames_in);
        counter(b, "hypha_upstream_bytes_in_total", "counter", "Payload bytes received from the bus.", u->bytes_in);
        family(b, "hypha_upstream_dropped_frames_total", "counter", "Frames from the bus that were dropped.");
        bprintf(b, "hypha_upstream_dropped_frames_total{reason=\"unknown-type\"} %llu\n",
                (unsigned long long)u->drops.n[HY_DROP_UNKNOWN_TYPE]);
        bprintf(b, "hypha_upstream_dropped_frames_total{reason=\"wrong-size\"} %llu\n",
                (unsigned long long)u->drops.n[HY_DROP_WRONG_SIZE]);
    }
    if (s->nlisten) {
        family(b, "hypha_listen_clients", "gauge", "Clients connected to a listen endpoint.");
        for (size_t i = 0; i < s->nlisten; i++) {
            bprintf(b, "hypha_listen_clients{endpoint=\"");
            blabel(b, s->listen[i].name);
            bprintf(b, "\"} %zu\n", s->listen[i].clients);
        }
        family(b, "hypha_listen_accepted_total", "counter", "Clients accepted by a listen endpoint.");
        for (size_t i = 0; i < s->nlisten; i++) {
            bprintf(b, "hypha_listen_accepted_total{endpoint=\"");
            blabel(b, s->listen[i].name);
            bprintf(b, "\"} %llu\n", (unsigned long long)s->listen[i].accepted);
        }
        family(b, "hypha_listen_refused_total", "counter",
               "Clients refused: a wrong or missing handshake, max_clients, the workers' fd reserve.");
        for (size_t i = 0; i < s->nlisten; i++) {
            const hy_listen_view *l = &s->listen[i];
            endpoint_reason(b, "hypha_listen_refused_total", l->name, "handshake", l->refused_handshake);
            endpoint_reason(b, "hypha_listen_refused_total", l->name, "max-clients", l->refused_full);
            endpoint_reason(b, "hypha_listen_refused_total", l->name, "fd-reserve", l->refused_fds);
        }
        family(b, "hypha_listen_too_slow_total", "counter", "Clients dropped because their queue passed the limit.");
        for (size_t i = 0; i < s->nlisten; i++) {
            bprintf(b, "hypha_listen_too_slow_total{endpoint=\"");
            blabel(b, s->listen[i].name);
            bprintf(b, "\"} %llu\n", (unsigned long long)s->listen[i].too_slow);
        }
        family(b, "hypha_listen_bounds_dropped_total", "counter",
               "Clients dropped by their bounds: a frame not whole within frame_timeout, a frame over max_frame.");
        for (size_t i = 0; i < s->nlisten; i++) {
            const hy_listen_view *l = &s->listen[i];
            endpoint_reason(b, "hypha_listen_bounds_dropped_total", l->name, "frame-timeout", l->frame_timeouts);
            endpoint_reason(b, "hypha_listen_bounds_dropped_total", l->name, "max-frame", l->too_long);
        }
    }
}

/* Each TLS link: the upstream, then the listen endpoints in order. */
typedef struct tls_link {
    const char *name;
    const hy_tls_view *v;
} tls_link;

static size_t tls_links(const hy_snapshot *s, tls_link *out, size_t max)
{
    size_t n = 0;
    if (s->topo->has_upstream && s->up.tls.on && n < max)
        out[n++] = (tls_link){"upstream", &s->up.tls};
    for (size_t i = 0; i < s->nlisten && n < max; i++)
        if (s->listen[i].tls.on)
            out[n++] = (tls_link){s->listen[i].name, &s->listen[i].tls};
    return n;
}

static void expiry_sample(buf *b, const char *link, const char *cert, time_t not_after, time_t wall)
{
    if (!not_after)
        return;
    bprintf(b, "hypha_tls_cert_expiry_seconds{link=\"");
    blabel(b, link);
    bprintf(b, "\",cert=\"%s\"} %lld\n", cert, (long long)(not_after - wall));
}

static void tls(buf *b, const hy_snapshot *s)
{
    tls_link l[64];
    size_t n = tls_links(s, l, 64);
    if (!n)
        return;
    family(b, "hypha_tls_cert_expiry_seconds", "gauge",
           "Seconds until a certificate expires (negative: expired): hyphad's own, or the server's it last saw.");
    for (size_t i = 0; i < n; i++) {
        expiry_sample(b, l[i].name, "own", l[i].v->cert_not_after, s->wall);
        if (l[i].v->peer_subject)
            expiry_sample(b, l[i].name, "server", l[i].v->peer_not_after, s->wall);
    }
    family(b, "hypha_tls_handshake_failures_total", "counter", "TLS handshakes that failed, by why.");
    for (size_t i = 0; i < n; i++)
        for (int f = 0; f < HY_TLS_FAIL__COUNT; f++) {
            bprintf(b, "hypha_tls_handshake_failures_total{link=\"");
            blabel(b, l[i].name);
            bprintf(b, "\",reason=\"%s\"} %llu\n", hy_tls_fail_str((hy_tls_fail)f),
                    (unsigned long long)l[i].v->fail[f]);
        }
}

char *hy_metrics_render(const hy_snapshot *s, size_t *len)
{
    const hy_topology *t = s->topo;
    buf b = {.p = malloc(16384), .cap = 16384};
    labels *ls = calloc(s->ninst ? s->ninst : 1, sizeof *ls);
    if (!b.p || !ls) {
        free(b.p);
        free(ls);
        return NULL;
    }
    b.p[0] = '\0';
    for (size_t i = 0; i < s->ninst; i++)
        inst_labels(&s->inst[i], &ls[i]);
    family(&b, "hypha_info", "gauge", "hyphad's version, schema digest and mode (always 1).");
    bprintf(&b, "hypha_info{version=\"%s\",schema=\"%s\",mode=\"%s\"} 1\n", HYPHA_VERSION, t->schema->digest_hex,
            t->has_upstream ? "upstream" : "embedded");
    family(&b, "hypha_uptime_seconds", "gauge", "Seconds since hyphad started.");
    bprintf(&b, "hypha_uptime_seconds %.3f\n", s->uptime_s);
    char reason[512];
    family(&b, "hypha_health", "gauge", "0 healthy, 1 degraded, 2 unhealthy (as hyphactl health).");
    bprintf(&b, "hypha_health %d\n", (int)hy_health_eval(s, reason, sizeof reason));
    workers(&b, s, ls);
    links(&b, s);
    tls(&b, s);
    free(ls);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

char *hy_metrics_text(const struct hy_sup *sup, double now, size_t *len)
{
    hy_snapshot snap;
    if (hy_sup_snapshot(sup, now, NULL, 0, &snap) < 0)
        return NULL;
    char *text = hy_metrics_render(&snap, len);
    hy_snapshot_free(&snap);
    return text;
}
