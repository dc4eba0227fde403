/* listen.c - listen endpoints and their clients (see hypha/listen.h). */
#define _GNU_SOURCE
#include "hypha/listen.h"

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hypha/log.h"
#include "hypha/route.h"

#define COMP "relay"
#define HANDSHAKE_TIMEOUT_S 5.0
#define ACCEPT_PAUSE_S 1.0
#define READ_ROUNDS 16

/* Stop everything now; freed from its own timer. */
static void doom(hy_client *c, const char *why)
{
    if (c->doomed)
        return;
    c->doomed = true;
    snprintf(c->why, sizeof c->why, "%s", why);
    hy_flow_open(c->ls->flow, &c->src, false);
    ev_timer_stop(c->ls->loop, &c->timer);
    ev_io_stop(c->ls->loop, &c->sink.ww);
    hy_bus_remove_client(c->ls->bus, &c->member);
    ev_feed_event(c->ls->loop, &c->timer, EV_TIMER);
}

static void client_free(hy_client *c)
{
    hy_listen *ls = c->ls;
    hy_bus_forget(ls->bus, &c->origin);
    hy_bus_remove_client(ls->bus, &c->member);
    hy_flow_remove(ls->flow, &c->src);
    ev_timer_stop(ls->loop, &c->timer);
    ev_clear_pending(ls->loop, &c->timer);
    ev_clear_pending(ls->loop, &c->rw);
    hy_sink_free(&c->sink);
    hy_tlv_decoder_free(&c->dec);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

static void client_drop(hy_client *c)
{
    hy_listen *ls = c->ls;
    for (hy_client **pp = &ls->clients; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            ls->nclients--;
            break;
        }
    bool plain = strcmp(c->why, "closed") == 0;
    hy_log(plain ? HY_INFO : HY_WARN, COMP, "listen client disconnected", "client", c->name, "why", c->why,
           "frames_in", HY_U64(c->frames_in), "frames_out", HY_U64(c->sink.frames), NULL);
    client_free(c);
}

static int on_frame(void *ud, const hy_frame *f)
{
    hy_client *c = ud;
    if (!hy_route_check_in(c->ls->topo->schema, f, &c->drops))
        return 0;
    c->frames_in++;
    c->bytes_in += f->len;
    hy_bus_publish(c->ls->bus, &c->origin, f->payload - HY_TLV_HEADER, HY_TLV_HEADER + f->len, f->type, true);
    return 0;
}

/* The first 34 bytes: u16 LE 32 and the digest. Returns bytes used, or -1. */
static long take_handshake(hy_client *c, const uint8_t *p, size_t n)
{
    hy_listen *ls = c->ls;
    size_t take = HY_HANDSHAKE_LEN - c->hs_len < n ? HY_HANDSHAKE_LEN - c->hs_len : n;
    memcpy(c->hs + c->hs_len, p, take);
    c->hs_len += take;
    if (c->hs_len < HY_HANDSHAKE_LEN)
        return (long)take;
    unsigned dlen = hy_le16(c->hs);
    if (dlen != 32 || memcmp(c->hs + 2, ls->topo->schema->digest, 32) != 0) {
        char got[65];
        for (int i = 0; i < 32; i++)
            snprintf(got + 2 * i, 3, "%02x", c->hs[2 + i]);
        ls->refused++;
        hy_log(HY_ERROR, COMP, "listen client refused: schema digest mismatch", "client", c->name, "client_schema",
               dlen == 32 ? got : "(not a Mycelium handshake)", "schema", ls->topo->schema->digest_hex, NULL);
        doom(c, "schema digest mismatch");
        return -1;
    }
    c->ready = true;
    ev_timer_stop(ls->loop, &c->timer);
    hy_log(HY_INFO, COMP, "listen client connected", "client", c->name, NULL);
    hy_bus_add_client(ls->bus, &c->member);
    hy_flow_set_always(ls->flow, &c->src, false); /* from now on flow.c decides */
    return (long)take;
}

static void closed(hy_client *c)
{
    if (hy_tlv_finish(&c->dec) == HY_TLV_PARTIAL)
        doom(c, "closed in the middle of a frame");
    else
        doom(c, c->ready ? "closed" : "closed before the handshake");
}

/* 1: go on reading; 0: stop. */
static int read_once(hy_client *c)
{
    uint8_t *buf;
    size_t cap;
    ssize_t n = hy_bus_read(c->ls->bus, c->fd, &buf, &cap);
    if (n < 0) {
        if (errno != EAGAIN && errno != ENOMEM)
            doom(c, strerror(errno));
        return 0;
    }
    if (n == 0) {
        closed(c);
        return 0;
    }
    const uint8_t *p = buf;
    size_t len = (size_t)n;
    if (!c->ready) {
        long used = take_handshake(c, p, len);
        if (used < 0)
            return 0;
        p += used;
        len -= (size_t)used;
    }
    hy_tlv_status st = len ? hy_tlv_feed(&c->dec, p, len, on_frame, c) : HY_TLV_OK;
    if (st == HY_TLV_CORRUPT || st == HY_TLV_NOMEM) {
        doom(c, st == HY_TLV_CORRUPT ? "corrupt stream (frame length over the limit)" : "out of memory");
        return 0;
    }
    return (size_t)n == cap || (len == 0 && !c->doomed);
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_client *c = w->data;
    for (int rounds = 0; rounds < READ_ROUNDS && !c->doomed && hy_flow_may_read(c->ls->flow, &c->src); rounds++)
        if (!read_once(c))
            return;
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_client *c = w->data;
    if (c->doomed) {
        client_drop(c);
        return;
    }
    c->ls->refused++;
    doom(c, "no handshake within 5s");
}

static void sink_error(hy_sink *s, int err, const char *why)
{
    hy_client *c = s->owner;
    if (why)
        c->ls->slow++;
    doom(c, why ? why : strerror(err));
}

static void on_accept(hy_acceptor *a, int fd)
{
    hy_listener *l = a->data;
    hy_listen *ls = l->ls;
    hy_client *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        hy_log(HY_ERROR, COMP, "out of memory for a listen client: refused", "endpoint", l->name, NULL);
        return;
    }
    c->ls = ls;
    c->listener = l;
    c->fd = fd;
    snprintf(c->name, sizeof c->name, "%s#%" PRIu64, l->name, ++ls->next_id);
    hy_drops_init(&c->drops, COMP, "from", c->name, NULL, NULL);
    c->origin = (hy_origin){c->name, &c->drops};
    c->member.sink = &c->sink;
    hy_tlv_decoder_init(&c->dec, 0);
    hy_sink_init(&c->sink, &ls->bus->sinks, ls->flow, HY_SINK_CLIENT, ls->topo->defaults.queue_limit,
                 HY_OVERFLOW_BLOCK, &c->drops);
    hy_sink_set_fd(&c->sink, fd, true);
    c->sink.on_error = sink_error;
    c->sink.owner = c;
    ev_io_init(&c->rw, read_cb, fd, EV_READ);
    ev_timer_init(&c->timer, timer_cb, HANDSHAKE_TIMEOUT_S, 0.0);
    c->rw.data = c->timer.data = c;
    c->next = ls->clients;
    ls->clients = c;
    ls->nclients++;
    ls->accepted++;
    hy_flow_add(ls->flow, &c->src, &c->rw, HY_SRC_CLIENT);
    c->src.always = true; /* the handshake is always read */
    hy_flow_open(ls->flow, &c->src, true);
    ev_timer_start(ls->loop, &c->timer);
}

int hy_listen_init(hy_listen *ls, struct ev_loop *loop, const hy_topology *t, hy_bus *bus, hy_flow *flow, hy_err *err)
{
    memset(ls, 0, sizeof *ls);
    ls->loop = loop;
    ls->topo = t;
    ls->bus = bus;
    ls->flow = flow;
    if (t->nlisten && !(ls->l = calloc(t->nlisten, sizeof *ls->l)))
        return hy_err_set(err, "out of memory");
    for (size_t i = 0; i < t->nlisten; i++) {
        hy_listener *l = &ls->l[i];
        l->ls = ls;
        hy_endpoint_str(&t->listen[i], l->name, sizeof l->name);
        if (hy_acceptor_open(&l->acc, loop, &t->listen[i], "listen", COMP, err) < 0)
            return -1;
        ls->n++;
        l->acc.on_accept = on_accept;
        l->acc.data = l;
        l->acc.pause_s = ACCEPT_PAUSE_S;
    }
    return 0;
}

void hy_listen_start(hy_listen *ls)
{
    for (size_t i = 0; i < ls->n; i++) {
        hy_acceptor_start(&ls->l[i].acc);
        hy_log(HY_INFO, COMP, "listening", "endpoint", ls->l[i].name, NULL);
    }
}

size_t hy_listen_clients(const hy_listen *ls, size_t i)
{
    size_t n = 0;
    for (const hy_client *c = ls->clients; c; c = c->next)
        n += c->listener == &ls->l[i] && !c->doomed;
    return n;
}

void hy_listen_retopo(hy_listen *ls, const hy_topology *t) { ls->topo = t; }

void hy_listen_free(hy_listen *ls)
{
    while (ls->clients) {
        hy_client *c = ls->clients;
        ls->clients = c->next;
        client_free(c);
    }
    for (size_t i = 0; i < ls->n; i++)
        hy_acceptor_close(&ls->l[i].acc);
    free(ls->l);
    ls->l = NULL;
    ls->n = 0;
}
