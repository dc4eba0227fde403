/* bus.c - fan-out of accepted frames to their destinations (see
 * hypha/bus.h). */
#include "hypha/bus.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hypha/log.h"
#include "hypha/tls.h"
#include "hypha/tlv.h"


static inline bool tapped(const hy_bus *b, uint16_t type_id)
{
    return b->tap_bits && (b->tap_bits[type_id >> 3] & (1u << (type_id & 7)));
}

/* ---- local delivery ---------------------------------------------------- */

static void deliver(hy_bus *b, const hy_route *rt, const uint8_t *data, size_t len, size_t frames, uint16_t type_id)
{
    hy_rbuf *shared = hy_bus_in_rbuf(b, data) ? b->cur : NULL;
    if (rt)
        for (size_t i = 0; i < rt->n; i++)
            hy_sink_push(rt->sinks[i], shared, data, len, frames, type_id);
    for (hy_bus_client *c = b->clients; c;) {
        hy_bus_client *next = c->next; /* a client that cannot keep up leaves the list */
        hy_sink_push(c->sink, shared, data, len, frames, type_id);
        c = next;
    }
}

static void end_local_run(hy_bus *b)
{
    if (!b->lrun_frames)
        return;
    size_t frames = b->lrun_frames;
    b->lrun_frames = 0;
    deliver(b, b->lrun_route, b->lrun, b->lrun_len, frames, b->lrun_type);
}

static void to_local(hy_bus *b, const uint8_t *frame, size_t len, uint16_t type_id)
{
    const hy_route *rt = hy_routes_find(&b->routes, type_id);
    bool in_place = hy_bus_in_rbuf(b, frame);
    if (in_place && b->lrun_frames && b->lrun + b->lrun_len == frame && b->lrun_route == rt) {
        b->lrun_len += len;
        b->lrun_frames++;
        return;
    }
    end_local_run(b);
    if (!in_place) {
        deliver(b, rt, frame, len, 1, type_id);
        return;
    }
    b->lrun = frame;
    b->lrun_len = len;
    b->lrun_frames = 1;
    b->lrun_route = rt;
    b->lrun_type = type_id;
}

/* ---- upstream ------------------------------------------------------------ */

/* Never drops; a queue that cannot grow counts the frames against their source. */
static void push_up(hy_bus *b, const uint8_t *data, size_t len, size_t frames, const hy_origin *src)
{
    hy_rbuf *shared = hy_bus_in_rbuf(b, data) ? b->cur : NULL;
    if (hy_sink_push(b->up, shared, data, len, frames, 0) == HY_PUSH_NOMEM)
        hy_drops_add(src->drops, HY_DROP_NO_MEMORY, 0, frames);
}

static void end_up_run(hy_bus *b)
{
    if (b->run_frames)
        push_up(b, b->run, b->run_len, b->run_frames, b->run_src);
    b->run = NULL;
    b->run_len = b->run_frames = 0;
    b->run_src = NULL;
}

static void to_upstream(hy_bus *b, const hy_origin *src, const uint8_t *frame, size_t len)
{
    bool in_place = hy_bus_in_rbuf(b, frame);
    if (in_place && b->run_src == src && b->run + b->run_len == frame) {
        b->run_len += len;
        b->run_frames++;
        return;
    }
    end_up_run(b);
    if (!in_place) {
        push_up(b, frame, len, 1, src);
        return;
    }
    b->run = frame;
    b->run_len = len;
    b->run_frames = 1;
    b->run_src = src;
}

static void end_runs(hy_bus *b)
{
    end_local_run(b);
    end_up_run(b);
}

void hy_bus_publish(hy_bus *b, const hy_origin *from, const uint8_t *frame, size_t len, uint16_t type_id,
                    bool upward)
{
    if (tapped(b, type_id))
        b->tap_fn(b->tap_ud, from->label, type_id, frame + HY_TLV_HEADER, (uint32_t)(len - HY_TLV_HEADER));
    if (upward && b->has_upstream)
        to_upstream(b, from, frame, len);
    if (!upward || b->local_feed)
        to_local(b, frame, len, type_id);
}

uint8_t *hy_bus_rbuf(hy_bus *b, size_t *size)
{
    end_runs(b);
    if (b->cur && b->cur->refs > 1) { /* queues hold frames in it: read into another */
        hy_rbuf_unref(b->cur);
        b->cur = NULL;
    }
    if (!b->cur && !(b->cur = hy_rbuf_new(HY_RBUF_READ_SIZE))) {
        hy_log(HY_ERROR, "relay", "out of memory for a read buffer: reading later", NULL);
        *size = 0;
        return NULL;
    }
    *size = b->cur->cap;
    return b->cur->data;
}

ssize_t hy_bus_read(hy_bus *b, int fd, struct hy_tls *tls, uint8_t **buf, size_t *cap)
{
    if (!(*buf = hy_bus_rbuf(b, cap))) {
        errno = ENOMEM;
        return -1;
    }
    if (tls)
        return hy_tls_read(tls, *buf, *cap);
    ssize_t n;
    do
        n = read(fd, *buf, *cap);
    while (n < 0 && errno == EINTR);
    return n;
}

void hy_bus_forget(hy_bus *b, const hy_origin *o)
{
    if (b->run_src == o)
        end_runs(b);
}

/* ---- subscribers and clients --------------------------------------------- */

void hy_bus_subs_changed(hy_bus *b)
{
    end_runs(b); /* a run points at a route; and earlier frames go by the old routes */
    hy_routes_build(&b->routes, b->subs);
}

void hy_bus_add_sub(hy_bus *b, hy_sub *s)
{
    s->next = NULL;
    s->prev = b->subs_tail;
    if (b->subs_tail)
        b->subs_tail->next = s;
    else
        b->subs = s;
    b->subs_tail = s;
}

void hy_bus_remove_sub(hy_bus *b, hy_sub *s)
{
    end_runs(b);
    if (s->prev)
        s->prev->next = s->next;
    else if (b->subs == s)
        b->subs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else if (b->subs_tail == s)
        b->subs_tail = s->prev;
    s->next = s->prev = NULL;
}

void hy_bus_add_client(hy_bus *b, hy_bus_client *c)
{
    c->prev = NULL;
    c->next = b->clients;
    if (b->clients)
        b->clients->prev = c;
    b->clients = c;
}

/* Unlinks c but leaves c->next alone, so a walk that is at c goes on. */
void hy_bus_remove_client(hy_bus *b, hy_bus_client *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (b->clients == c)
        b->clients = c->next;
    else
        return; /* not on the list */
    if (c->next)
        c->next->prev = c->prev;
    c->prev = NULL;
}

void hy_bus_set_tap(hy_bus *b, uint8_t *bits, hy_tap_fn fn, void *ud)
{
    b->tap_bits = bits;
    b->tap_fn = fn;
    b->tap_ud = ud;
}

/* ---- the flush: once per loop iteration ---------------------------------- */

static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_bus *b = w->data;
    end_runs(b);
    hy_sinks_flush(&b->sinks);
}

int hy_bus_init(hy_bus *b, struct ev_loop *loop, bool has_upstream, bool local_feed)
{
    memset(b, 0, sizeof *b);
    b->loop = loop;
    b->has_upstream = has_upstream;
    b->local_feed = local_feed;
    b->sinks.loop = loop;
    if (!(b->cur = hy_rbuf_new(HY_RBUF_READ_SIZE)))
        return -1;
    ev_prepare_init(&b->flush_w, flush_cb);
    b->flush_w.data = b;
    return 0;
}

void hy_bus_start(hy_bus *b) { ev_prepare_start(b->loop, &b->flush_w); }

void hy_bus_free(hy_bus *b)
{
    if (b->loop)
        ev_prepare_stop(b->loop, &b->flush_w);
    hy_routes_free(&b->routes);
    if (b->cur)
        hy_rbuf_unref(b->cur);
    b->cur = NULL;
}
