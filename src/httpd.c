/* httpd.c - the metrics endpoint's small HTTP server (`metrics: {listen:
 * HOST:PORT}`): each connection gets one answer, GET or HEAD of the
 * Prometheus text (metrics.c renders it), and is closed. Requests are read
 * up to 8 KiB (then 431) and 2 s; at most 16 connections at once, and when
 * every slot is taken a new one takes the place of the oldest that is not
 * being answered (a slowloris client cannot lock scrapers out). */
#define _GNU_SOURCE
#include "hypha/httpd.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hypha/log.h"
#include "hypha/metrics.h"
#include "hypha/relay.h"
#include "hypha/supervisor.h"

#define COMP "metrics"

#define HTTP_MAX_REQUEST 8192
#define HTTP_HEADER_TIMEOUT_S 2.0 /* to send the whole request */
#define HTTP_WRITE_TIMEOUT_S 5.0  /* to read the answer */
#define HTTP_DRAIN_TIMEOUT_S 1.0  /* after an error answer: to close its side */
#define HTTP_DRAIN_MAX (256u << 10)
#define HTTP_MAX_CONNS 16

typedef enum { HC_READING, HC_WRITING, HC_DRAINING } hc_state;

typedef struct hy_http_conn {
    hy_metrics_http *h;
    int fd;
    ev_io rw, ww;
    ev_timer timer;
    hc_state state;
    bool drain;                  /* answered before its request was all read: drain before closing */
    ev_tstamp accepted;
    size_t drained;
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

static void set_timer(hy_http_conn *c, double s)
{
    ev_timer_stop(c->h->loop, &c->timer);
    ev_timer_set(&c->timer, s, 0.0);
    ev_timer_start(c->h->loop, &c->timer);
}

/* The answer is out. A connection answered before all of its request was
 * read (431) still has bytes coming: closing now would make the kernel
 * reset it, and the client could lose the answer. So its side is closed
 * (FIN after the answer) and what it still sends is read and dropped, up
 * to HTTP_DRAIN_MAX and HTTP_DRAIN_TIMEOUT_S, until it closes too. */
static void conn_answered(hy_http_conn *c)
{
    if (!c->drain) {
        conn_close(c);
        return;
    }
    (void)shutdown(c->fd, SHUT_WR);
    c->state = HC_DRAINING;
    ev_io_stop(c->h->loop, &c->ww);
    ev_io_start(c->h->loop, &c->rw);
    set_timer(c, HTTP_DRAIN_TIMEOUT_S);
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
            if (errno == EAGAIN) {
                ev_io_start(c->h->loop, &c->ww); /* the rest when it can take it */
                return;
            }
            conn_close(c);
            return;
        }
        c->outoff += (size_t)n;
    }
    conn_answered(c);
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
    c->state = HC_WRITING;
    ev_io_stop(c->h->loop, &c->rw);
    ev_io_set(&c->ww, c->fd, EV_WRITE);
    set_timer(c, HTTP_WRITE_TIMEOUT_S);
    conn_write_cb(c->h->loop, &c->ww, EV_WRITE); /* most answers fit at once */
    /* c may be gone */
}

/* Reads and drops what a draining connection still sends. */
static void conn_drain(hy_http_conn *c)
{
    char sink[16384];
    for (;;) {
        ssize_t n = recv(c->fd, sink, sizeof sink, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0 || (c->drained += (size_t)n) > HTTP_DRAIN_MAX) {
            conn_close(c);
            return;
        }
    }
}

/* One read of the request; answers once it is complete (or too large). c may be gone. */
static void conn_read(hy_http_conn *c)
{
    struct ev_loop *loop = c->h->loop;
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
            static const char msg[] = "request too large (the limit is 8192 bytes)\n";
            c->drain = true;
            answer(c, "431 Request Header Fields Too Large", "text/plain", msg, sizeof msg - 1);
        }
        return;
    }
    c->drain = true; /* a body, or a pipelined request, may follow: never reset */
    if (strncmp(c->req, "GET ", 4) != 0 && strncmp(c->req, "HEAD ", 5) != 0) {
        static const char msg[] = "only GET /metrics\n";
        answer(c, "405 Method Not Allowed", "text/plain", msg, sizeof msg - 1);
        return;
    }
    size_t len = 0;
    char *text = hy_metrics_text(c->h->sup, ev_now(loop), &len);
    if (!text) {
        static const char msg[] = "out of memory\n";
        answer(c, "500 Internal Server Error", "text/plain", msg, sizeof msg - 1);
        return;
    }
    bool head = strncmp(c->req, "HEAD ", 5) == 0;
    answer(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", text, head ? 0 : len);
    free(text);
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_http_conn *c = w->data;
    if (c->state == HC_DRAINING)
        conn_drain(c);
    else
        conn_read(c);
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_close(w->data);
}

/* Every slot is taken: close the oldest connection that is not being
 * answered (still sending its request, e.g. a slowloris client, or
 * draining after its answer), so that a scraper always gets in. false:
 * all of them are being answered. */
static bool make_room(hy_metrics_http *h)
{
    hy_http_conn *victim = NULL;
    for (hy_http_conn *c = h->conns; c; c = c->next)
        if (c->state != HC_WRITING && (!victim || c->accepted <= victim->accepted))
            victim = c; /* the list is newest first: <= keeps the oldest of a tie */
    if (!victim)
        return false;
    conn_close(victim);
    return true;
}

static void on_accept(hy_acceptor *a, int fd)
{
    hy_metrics_http *h = a->data;
    struct ev_loop *loop = h->loop;
    {
        hy_http_conn *c = h->nconns < HTTP_MAX_CONNS || make_room(h) ? calloc(1, sizeof *c) : NULL;
        if (!c) {
            close(fd); /* a scraper retries; hyphad keeps its fds */
            return;
        }
        c->h = h;
        c->fd = fd;
        c->state = HC_READING;
        c->accepted = ev_now(loop);
        ev_io_init(&c->rw, conn_read_cb, fd, EV_READ);
        ev_init(&c->ww, conn_write_cb);
        ev_timer_init(&c->timer, conn_timer_cb, HTTP_HEADER_TIMEOUT_S, 0.0);
        c->rw.data = c->ww.data = c->timer.data = c;
        c->next = h->conns;
        h->conns = c;
        h->nconns++;
        ev_io_start(loop, &c->rw);
        ev_timer_start(loop, &c->timer);
        conn_read(c); /* its request is usually there already: answered before a later accept can evict it */
    }
}

int hy_metrics_http_start(hy_metrics_http *h, hy_sup *s, hy_err *err)
{
    memset(h, 0, sizeof *h);
    h->sup = s;
    h->loop = hy_sup_relay(s)->bus.loop;
    const hy_endpoint *ep = &hy_sup_topology(s)->metrics;
    hy_endpoint_str(ep, h->name, sizeof h->name);
    if (hy_acceptor_open(&h->acc, h->loop, ep, "metrics", COMP, err) < 0)
        return -1;
    h->acc.on_accept = on_accept;
    h->acc.data = h;
    hy_acceptor_start(&h->acc);
    hy_log(HY_INFO, COMP, "serving Prometheus metrics at /metrics", "endpoint", h->name, NULL);
    return 0;
}

void hy_metrics_http_stop(hy_metrics_http *h)
{
    if (!h->loop)
        return;
    while (h->conns)
        conn_close(h->conns);
    hy_acceptor_close(&h->acc);
    h->loop = NULL;
}
