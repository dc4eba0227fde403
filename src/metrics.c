/* metrics.c - Prometheus text exposition and its small HTTP endpoint (see
 * hypha/metrics.h). One family at a time: HELP, TYPE, then every sample,
 * so families are never interleaved. */
#define _GNU_SOURCE
#include "hypha/metrics.h"

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hypha/health.h"
#include "hypha/log.h"
#include "hypha/supervisor.h"
#include "hypha/version.h"

#define COMP "metrics"

/* ---- a growing text buffer ---------------------------------------------- */

typedef struct buf {
    char *p;
    size_t len, cap;
    bool oom;
} buf;

static void bprintf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(buf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
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
        size_t cap = b->cap * 2 + (size_t)n + 1;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static void bput(buf *b, const char *p, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap * 2 + n + 1;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
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

static void inst_labels(const hy_instance *in, labels *l)
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

typedef unsigned long long (*inst_get)(const hy_instance *);
static unsigned long long g_ready(const hy_instance *in) { return in->state == HY_ST_RUNNING; }
static unsigned long long g_restarts(const hy_instance *in) { return in->restarts; }
static unsigned long long g_fin(const hy_instance *in) { return in->frames_in; }
static unsigned long long g_bin(const hy_instance *in) { return in->bytes_in; }
static unsigned long long g_fout(const hy_instance *in) { return in->frames_out; }
static unsigned long long g_bout(const hy_instance *in) { return in->bytes_out; }
static unsigned long long g_proto(const hy_instance *in) { return in->protocol_errors; }
static unsigned long long g_qbytes(const hy_instance *in) { return hy_outq_bytes(&in->outq); }
static unsigned long long g_qframes(const hy_instance *in) { return hy_outq_frames(&in->outq); }

static void inst_family(buf *b, const hy_sup *s, const labels *ls, const char *name, const char *type,
                        const char *help, inst_get get)
{
    family(b, name, type, help);
    for (size_t i = 0; i < s->ninst; i++)
        inst_sample(b, name, &ls[i], NULL, NULL, get(s->inst[i]));
}

char *hy_metrics_render(const hy_sup *s, double now, size_t *len)
{
    const hy_topology *t = s->topo;
    const hy_relay *r = &s->relay;
    buf b = {.p = malloc(16384), .cap = 16384};
    labels *ls = calloc(s->ninst ? s->ninst : 1, sizeof *ls);
    if (!b.p || !ls) {
        free(b.p);
        free(ls);
        return NULL;
    }
    b.p[0] = '\0';
    for (size_t i = 0; i < s->ninst; i++)
        inst_labels(s->inst[i], &ls[i]);

    family(&b, "hypha_info", "gauge", "hyphad's version, schema digest and mode (always 1).");
    bprintf(&b, "hypha_info{version=\"%s\",schema=\"%s\",mode=\"%s\"} 1\n", HYPHA_VERSION, t->schema->digest_hex,
            t->has_upstream ? "upstream" : "embedded");
    family(&b, "hypha_uptime_seconds", "gauge", "Seconds since hyphad started.");
    bprintf(&b, "hypha_uptime_seconds %.3f\n", now - s->started_at);
    char reason[512];
    family(&b, "hypha_health", "gauge", "0 healthy, 1 degraded, 2 unhealthy (as hyphactl health).");
    bprintf(&b, "hypha_health %d\n", (int)hy_health_eval(s, now, reason, sizeof reason));

    family(&b, "hypha_worker_state", "gauge", "1 for the instance's current state, 0 for the others.");
    for (size_t i = 0; i < s->ninst; i++)
        for (int st = HY_ST_STARTING; st <= HY_ST_STOPPED; st++)
            inst_sample(&b, "hypha_worker_state", &ls[i], "state", hy_state_str((hy_state)st),
                        s->inst[i]->state == (hy_state)st);
    inst_family(&b, s, ls, "hypha_worker_ready", "gauge", "1 when the instance is running (ready).", g_ready);
    inst_family(&b, s, ls, "hypha_worker_restarts_total", "counter", "Processes started after the first.", g_restarts);
    inst_family(&b, s, ls, "hypha_worker_frames_in_total", "counter", "Frames delivered to the worker's stdin.", g_fin);
    inst_family(&b, s, ls, "hypha_worker_bytes_in_total", "counter", "Payload bytes delivered to the worker.", g_bin);
    inst_family(&b, s, ls, "hypha_worker_frames_out_total", "counter", "Frames the worker published that were accepted.",
                g_fout);
    inst_family(&b, s, ls, "hypha_worker_bytes_out_total", "counter", "Payload bytes the worker published.", g_bout);
    family(&b, "hypha_worker_dropped_frames_total", "counter", "Frames from or for the worker that were dropped.");
    for (size_t i = 0; i < s->ninst; i++) {
        const hy_instance *in = s->inst[i];
        for (int d = 0; d < HY_DROP__COUNT; d++)
            inst_sample(&b, "hypha_worker_dropped_frames_total", &ls[i], "reason", hy_drop_str((hy_drop)d),
                        in->drops[d]);
        inst_sample(&b, "hypha_worker_dropped_frames_total", &ls[i], "reason", "queue-full-oldest",
                    in->outq.dropped_oldest);
        inst_sample(&b, "hypha_worker_dropped_frames_total", &ls[i], "reason", "queue-full-newest",
                    in->outq.dropped_newest);
    }
    inst_family(&b, s, ls, "hypha_worker_protocol_errors_total", "counter",
                "Corrupt streams and malformed control frames from the worker.", g_proto);
    inst_family(&b, s, ls, "hypha_worker_queue_bytes", "gauge", "Bytes waiting for the worker's stdin.", g_qbytes);
    inst_family(&b, s, ls, "hypha_worker_queue_frames", "gauge", "Frames waiting for the worker's stdin.", g_qframes);

    if (t->has_upstream) {
        family(&b, "hypha_upstream_connected", "gauge", "1 while the bus connection is up (handshake done).");
        bprintf(&b, "hypha_upstream_connected %d\n", r->up_state == HY_UP_CONNECTED && !r->up_probation);
        family(&b, "hypha_upstream_connects_total", "counter", "Connections made to the bus.");
        bprintf(&b, "hypha_upstream_connects_total %llu\n", (unsigned long long)r->up_connects);
        family(&b, "hypha_upstream_disconnects_total", "counter", "Connections to the bus lost.");
        bprintf(&b, "hypha_upstream_disconnects_total %llu\n", (unsigned long long)r->up_disconnects);
        family(&b, "hypha_upstream_buffered_bytes", "gauge", "Bytes held for the bus.");
        bprintf(&b, "hypha_upstream_buffered_bytes %zu\n", hy_outq_bytes(&r->up.q));
        family(&b, "hypha_upstream_frames_out_total", "counter", "Frames queued for the bus.");
        bprintf(&b, "hypha_upstream_frames_out_total %llu\n", (unsigned long long)r->up.frames_out);
        family(&b, "hypha_upstream_bytes_out_total", "counter", "Payload bytes queued for the bus.");
        bprintf(&b, "hypha_upstream_bytes_out_total %llu\n", (unsigned long long)r->up.bytes_out);
        family(&b, "hypha_upstream_frames_in_total", "counter", "Frames received from the bus and accepted.");
        bprintf(&b, "hypha_upstream_frames_in_total %llu\n", (unsigned long long)r->up.frames_in);
        family(&b, "hypha_upstream_bytes_in_total", "counter", "Payload bytes received from the bus.");
        bprintf(&b, "hypha_upstream_bytes_in_total %llu\n", (unsigned long long)r->up.bytes_in);
        family(&b, "hypha_upstream_dropped_frames_total", "counter", "Frames from the bus that were dropped.");
        bprintf(&b, "hypha_upstream_dropped_frames_total{reason=\"unknown-type\"} %llu\n",
                (unsigned long long)r->up.drops[HY_DROP_UNKNOWN_TYPE]);
        bprintf(&b, "hypha_upstream_dropped_frames_total{reason=\"wrong-size\"} %llu\n",
                (unsigned long long)r->up.drops[HY_DROP_WRONG_SIZE]);
    }
    if (r->nlisteners) {
        family(&b, "hypha_listen_clients", "gauge", "Clients connected to a listen endpoint.");
        for (size_t i = 0; i < r->nlisteners; i++) {
            size_t n = 0;
            for (const hy_peer *c = r->clients; c; c = c->next)
                n += c->listener == &r->listeners[i] && !c->doomed;
            bprintf(&b, "hypha_listen_clients{endpoint=\"");
            blabel(&b, r->listeners[i].name);
            bprintf(&b, "\"} %zu\n", n);
        }
    }
    free(ls);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* ---- HTTP endpoint ------------------------------------------------------- */

#define HTTP_MAX_REQUEST 8192
#define HTTP_TIMEOUT_S 5.0
#define HTTP_MAX_CONNS 16

typedef struct hy_http_conn {
    hy_metrics_http *h;
    int fd;
    ev_io rw, ww;
    ev_timer timer;
    char req[HTTP_MAX_REQUEST];
    size_t reqlen;
    char *out;                   /* the answer (owned) */
    size_t outlen, outoff;
    struct hy_http_conn *next;
} hy_http_conn;

static void conn_close(hy_http_conn *c)
{
    hy_metrics_http *h = c->h;
    ev_io_stop(h->loop, &c->rw);
    ev_io_stop(h->loop, &c->ww);
    ev_timer_stop(h->loop, &c->timer);
    close(c->fd);
    for (hy_http_conn **pp = &h->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    h->nconns--;
    free(c->out);
    free(c);
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_http_conn *c = w->data;
    while (c->outoff < c->outlen) {
        ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return;
            break;
        }
        c->outoff += (size_t)n;
    }
    conn_close(c);
}

static void answer(hy_http_conn *c, const char *status, const char *type, const char *body, size_t blen)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", status,
                     type, blen);
    c->out = malloc((size_t)n + blen);
    if (!c->out) {
        conn_close(c);
        return;
    }
    memcpy(c->out, head, (size_t)n);
    memcpy(c->out + n, body, blen);
    c->outlen = (size_t)n + blen;
    ev_io_stop(c->h->loop, &c->rw);
    ev_io_set(&c->ww, c->fd, EV_WRITE);
    ev_io_start(c->h->loop, &c->ww);
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    hy_http_conn *c = w->data;
    ssize_t n = recv(c->fd, c->req + c->reqlen, sizeof c->req - 1 - c->reqlen, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        conn_close(c);
        return;
    }
    c->reqlen += (size_t)n;
    c->req[c->reqlen] = '\0';
    if (!strstr(c->req, "\r\n\r\n") && !strstr(c->req, "\n\n")) {
        if (c->reqlen >= sizeof c->req - 1) {
            static const char msg[] = "request too large\n";
            answer(c, "431 Request Header Fields Too Large", "text/plain", msg, sizeof msg - 1);
        }
        return;
    }
    if (strncmp(c->req, "GET ", 4) != 0 && strncmp(c->req, "HEAD ", 5) != 0) {
        static const char msg[] = "only GET /metrics\n";
        answer(c, "405 Method Not Allowed", "text/plain", msg, sizeof msg - 1);
        return;
    }
    size_t len = 0;
    char *text = hy_metrics_render(c->h->sup, ev_now(loop), &len);
    if (!text) {
        static const char msg[] = "out of memory\n";
        answer(c, "500 Internal Server Error", "text/plain", msg, sizeof msg - 1);
        return;
    }
    bool head = strncmp(c->req, "HEAD ", 5) == 0;
    answer(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", text, head ? 0 : len);
    free(text);
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_close(w->data);
}

static void http_pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    hy_metrics_http *h = w->data;
    ev_io_start(loop, &h->w);
}

static void http_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    hy_metrics_http *h = w->data;
    for (;;) {
        int fd = accept4(h->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN) {
                hy_log(HY_ERROR, COMP, "accept failed: pausing the metrics endpoint for 1s", "endpoint", h->name,
                       "error", strerror(errno), NULL);
                ev_io_stop(loop, &h->w);
                ev_timer_set(&h->pause, 1.0, 0.0);
                ev_timer_start(loop, &h->pause);
            }
            return;
        }
        hy_http_conn *c = h->nconns < HTTP_MAX_CONNS ? calloc(1, sizeof *c) : NULL;
        if (!c) {
            close(fd); /* a scraper retries; hyphad keeps its fds */
            continue;
        }
        c->h = h;
        c->fd = fd;
        ev_io_init(&c->rw, conn_read_cb, fd, EV_READ);
        ev_init(&c->ww, conn_write_cb);
        ev_timer_init(&c->timer, conn_timer_cb, HTTP_TIMEOUT_S, 0.0);
        c->rw.data = c->ww.data = c->timer.data = c;
        c->next = h->conns;
        h->conns = c;
        h->nconns++;
        ev_io_start(loop, &c->rw);
        ev_timer_start(loop, &c->timer);
    }
}

int hy_metrics_http_start(hy_metrics_http *h, hy_sup *s, hy_err *err)
{
    memset(h, 0, sizeof *h);
    h->sup = s;
    h->loop = s->loop;
    h->fd = -1;
    const hy_endpoint *ep = &s->topo->metrics;
    hy_endpoint_str(ep, h->name, sizeof h->name);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
    char port[8];
    snprintf(port, sizeof port, "%u", ep->port);
    int rc = getaddrinfo(ep->host, port, &hints, &ai);
    if (rc != 0)
        return hy_err_set(err, "metrics %s: %s", h->name, gai_strerror(rc));
    int one = 1;
    rc = -1;
    if ((h->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
        hy_err_set(err, "metrics %s: socket: %s", h->name, strerror(errno));
    else if (setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        hy_err_set(err, "metrics %s: setsockopt: %s", h->name, strerror(errno));
    else if (bind(h->fd, ai->ai_addr, ai->ai_addrlen) < 0)
        hy_err_set(err, "metrics %s: bind: %s", h->name, strerror(errno));
    else if (listen(h->fd, 64) < 0)
        hy_err_set(err, "metrics %s: listen: %s", h->name, strerror(errno));
    else
        rc = 0;
    freeaddrinfo(ai);
    if (rc < 0) {
        if (h->fd >= 0)
            close(h->fd);
        h->fd = -1;
        return -1;
    }
    ev_io_init(&h->w, http_accept_cb, h->fd, EV_READ);
    ev_init(&h->pause, http_pause_cb);
    h->w.data = h->pause.data = h;
    ev_io_start(h->loop, &h->w);
    hy_log(HY_INFO, COMP, "serving Prometheus metrics at /metrics", "endpoint", h->name, NULL);
    return 0;
}

void hy_metrics_http_stop(hy_metrics_http *h)
{
    if (!h->loop)
        return;
    while (h->conns)
        conn_close(h->conns);
    ev_io_stop(h->loop, &h->w);
    ev_timer_stop(h->loop, &h->pause);
    if (h->fd >= 0)
        close(h->fd);
    h->fd = -1;
    h->loop = NULL;
}
