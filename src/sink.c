/* sink.c - destination queues and their one flush per loop iteration
 * (see hypha/sink.h). */
#include "hypha/sink.h"

#include <errno.h>
#include <sys/ioctl.h>
#include <stdint.h>

#include "hypha/log.h"
#include "hypha/net.h"
#include "hypha/tls.h"
#include "hypha/tlv.h"

static void write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_sink_flush(w->data);
}

void hy_sink_init(hy_sink *s, hy_sinks *set, hy_flow *flow, hy_sink_role role, uint64_t limit, hy_overflow policy,
                  hy_drops *drops)
{
    hy_fanq_init(&s->q);
    s->fd = -1;
    s->is_socket = false;
    s->tls = NULL;
    s->role = role;
    s->limit = limit;
    s->policy = policy;
    s->over = false;
    s->dirty = false;
    s->set = set;
    s->flow = flow;
    s->own = NULL;
    s->drops = drops;
    s->hold = s->broken = false;
    s->frames = s->bytes = 0;
    s->on_error = NULL;
    s->on_over = NULL;
    s->on_written = NULL;
    s->owner = NULL;
    s->next_dirty = NULL;
    ev_io_init(&s->ww, write_cb, -1, EV_WRITE);
    s->ww.data = s;
}

static void unlist(hy_sink *s)
{
    if (!s->dirty)
        return;
    for (hy_sink **pp = &s->set->dirty; *pp; pp = &(*pp)->next_dirty)
        if (*pp == s) {
            *pp = s->next_dirty;
            break;
        }
    s->dirty = false;
}

/* Over or back under its limit: the sources that feed it learn it. */
static void set_over(hy_sink *s, bool over)
{
    if (s->over == over)
        return;
    s->over = over;
    if (s->on_over) {
        s->on_over(s, over);
        return;
    }
    if (s->own)
        hy_flow_set_always(s->flow, s->own, over);
    hy_flow_block(s->flow, over);
}

void hy_sink_free(hy_sink *s)
{
    if (s->set) {
        ev_io_stop(s->set->loop, &s->ww);
        unlist(s);
    }
    if (s->over && s->role == HY_SINK_WORKER)
        set_over(s, false);
    hy_fanq_free(&s->q);
}

static void mark_dirty(hy_sink *s)
{
    if (s->dirty)
        return;
    s->dirty = true;
    s->next_dirty = s->set->dirty;
    s->set->dirty = s;
}

void hy_sink_set_fd(hy_sink *s, int fd, bool is_socket)
{
    ev_io_stop(s->set->loop, &s->ww);
    s->fd = fd;
    s->is_socket = is_socket;
    s->broken = false;
    if (fd >= 0)
        ev_io_set(&s->ww, fd, EV_WRITE);
    if (fd >= 0 && hy_fanq_pending(&s->q))
        mark_dirty(s); /* frames held for it go out now */
}

static void accepted(hy_sink *s, size_t len, size_t frames)
{
    s->frames += frames;
    s->bytes += len - frames * HY_TLV_HEADER;
    mark_dirty(s);
}

/* Logged at the 1st, 10th, 100th ... frame the queue dropped. */
static void count_queue_full(hy_sink *s, uint64_t oldest, uint64_t newest)
{
    hy_drops *d = s->drops;
    uint64_t before = d->n[HY_DROP_QUEUE_OLDEST] + d->n[HY_DROP_QUEUE_NEWEST];
    d->n[HY_DROP_QUEUE_OLDEST] += oldest;
    d->n[HY_DROP_QUEUE_NEWEST] += newest;
    if (!hy_log_mark(before, before + oldest + newest))
        return;
    hy_log(HY_WARN, "router", "queue full: frames dropped", d->k1, d->v1, d->k2, d->v2, "policy",
           hy_overflow_str(s->policy), "dropped_oldest", HY_U64(d->n[HY_DROP_QUEUE_OLDEST]), "dropped_newest",
           HY_U64(d->n[HY_DROP_QUEUE_NEWEST]), NULL);
}

/* One frame into a worker's queue under its overflow policy. */
static void push_one(hy_sink *s, const uint8_t *frame, size_t len, uint16_t type_id)
{
    uint64_t oldest = s->q.dropped_oldest, newest = s->q.dropped_newest;
    hy_push_result r = hy_fanq_push(&s->q, frame, len, s->limit, s->policy);
    if (s->q.dropped_oldest != oldest || s->q.dropped_newest != newest)
        count_queue_full(s, s->q.dropped_oldest - oldest, s->q.dropped_newest - newest);
    if (r == HY_PUSH_NOMEM) {
        hy_drops_add(s->drops, HY_DROP_NO_MEMORY, type_id, 1);
        return;
    }
    if (r == HY_PUSH_DROPPED)
        return;
    accepted(s, len, 1);
    if (r == HY_PUSH_OVER)
        set_over(s, true);
}

static void push_worker(hy_sink *s, hy_rbuf *b, const uint8_t *data, size_t len, size_t frames, uint16_t type_id)
{
    if ((s->fd < 0 || s->broken) && !s->hold) {
        hy_drops_add(s->drops, s->fd < 0 ? HY_DROP_NOT_RUNNING : HY_DROP_EXITED, type_id, frames);
        return;
    }
    if (frames == 1) {
        push_one(s, data, len, type_id);
        return;
    }
    if (hy_fanq_bytes(&s->q) + len > s->limit) {
        /* Near the limit the policy decides frame by frame. */
        for (size_t off = 0; off < len;) {
            hy_frame f;
            long n = hy_tlv_parse(data + off, len - off, UINT32_MAX, &f);
            if (n <= 0)
                break; /* whole frames only: cannot happen */
            push_one(s, data + off, (size_t)n, f.type);
            off += (size_t)n;
        }
        return;
    }
    if (hy_fanq_push_run(&s->q, b, data, len) == HY_PUSH_NOMEM) {
        hy_drops_add(s->drops, HY_DROP_NO_MEMORY, type_id, frames);
        return;
    }
    accepted(s, len, frames);
}

hy_push_result hy_sink_push(hy_sink *s, hy_rbuf *b, const uint8_t *data, size_t len, size_t frames,
                            uint16_t type_id)
{
    if (s->role == HY_SINK_WORKER) {
        push_worker(s, b, data, len, frames, type_id);
        return HY_PUSH_QUEUED;
    }
    bool over = hy_fanq_bytes(&s->q) + len > s->limit;
    hy_push_result r = hy_fanq_push_run(&s->q, b, data, len);
    if (r == HY_PUSH_QUEUED && over)
        r = HY_PUSH_OVER;
    if (r == HY_PUSH_NOMEM && s->role == HY_SINK_UPSTREAM)
        return r;
    if (s->role == HY_SINK_CLIENT && r == HY_PUSH_NOMEM) {
        s->on_error(s, 0, "out of memory");
        return r;
    }
    if (s->role == HY_SINK_CLIENT && r == HY_PUSH_OVER) {
        /* One read can bring more than queue.limit at once: a client is too
         * slow only if its queue is still over the limit once its socket
         * has taken what it can. */
        accepted(s, len, frames);
        hy_sink_flush(s);
        if (hy_fanq_bytes(&s->q) > s->limit)
            s->on_error(s, 0, "too slow: its queue passed queue.limit");
        return r;
    }
    accepted(s, len, frames);
    if (r == HY_PUSH_OVER)
        set_over(s, true);
    return r;
}

void hy_sink_push_control(hy_sink *s, const uint8_t *frame, size_t len)
{
    if (s->fd < 0 || s->broken || hy_fanq_push_run(&s->q, NULL, frame, len) < 0)
        return;
    mark_dirty(s);
}

void hy_sink_count_unread(hy_sink *s)
{
    int unread = 0;
    if (s->fd < 0 || !s->q.hist.keep || ioctl(s->fd, FIONREAD, &unread) < 0 || unread <= 0)
        return;
    size_t n = hy_fanq_unread_frames(&s->q, (size_t)unread);
    hy_fanq_forget_written(&s->q); /* counted once */
    if (n)
        hy_drops_add(s->drops, HY_DROP_EXITED, 0, n);
}

size_t hy_sink_reclaim(hy_sink *s, size_t unread)
{
    hy_fanq_reclaim_res r = hy_fanq_reclaim(&s->q, unread);
    if (r.cut)
        hy_drops_add(s->drops, HY_DROP_EXITED, 0, r.cut);
    if (r.nomem)
        hy_drops_add(s->drops, HY_DROP_NO_MEMORY, 0, r.nomem);
    if (s->policy == HY_OVERFLOW_BLOCK && hy_fanq_bytes(&s->q) > s->limit)
        set_over(s, true);
    return r.frames;
}

void hy_sink_recheck(hy_sink *s)
{
    if (hy_fanq_bytes(&s->q) > s->limit && (s->role != HY_SINK_WORKER || s->policy == HY_OVERFLOW_BLOCK))
        set_over(s, true);
    if (hy_fanq_pending(&s->q))
        mark_dirty(s);
}

void hy_sink_clear(hy_sink *s, hy_drop why)
{
    size_t n = hy_fanq_clear(&s->q);
    if (n)
        hy_drops_add(s->drops, why, 0, n);
    ev_io_stop(s->set->loop, &s->ww);
    set_over(s, false);
}

/* Until the fd takes more: over TLS, whatever OpenSSL waits for (a write
 * may need the peer's bytes first). */
static void wait_writable(hy_sink *s)
{
    int ev = s->tls ? s->tls->want : EV_WRITE;
    if (ev_is_active(&s->ww) && (s->ww.events & (EV_READ | EV_WRITE)) == ev)
        return;
    ev_io_stop(s->set->loop, &s->ww);
    ev_io_set(&s->ww, s->fd, ev);
    ev_io_start(s->set->loop, &s->ww);
}

void hy_sink_flush(hy_sink *s)
{
    if (s->fd < 0 || s->broken || (hy_fanq_pending(&s->q) == 0 && !(s->tls && hy_tls_wpending(s->tls)))) {
        ev_io_stop(s->set->loop, &s->ww);
        if (s->fd >= 0 && !s->broken && s->role == HY_SINK_WORKER)
            set_over(s, false);
        return;
    }
    hy_net_wr r = s->tls ? hy_tls_write_fanq(s->tls, &s->q) : hy_net_write_fanq(s->fd, &s->q, s->is_socket);
    if (r == HY_NET_WR_ERROR) {
        if (s->on_error)
            s->on_error(s, errno, NULL);
        else { /* EPIPE: its stdin is closed (it died, or closed it): neither what is queued nor what
                * its pipe held is delivered */
            hy_sink_count_unread(s);
            hy_sink_clear(s, HY_DROP_EXITED);
        }
        return;
    }
    if (r == HY_NET_WR_AGAIN)
        wait_writable(s);
    else
        ev_io_stop(s->set->loop, &s->ww);
    if (s->on_written)
        s->on_written(s);
    if (s->over && hy_fanq_bytes(&s->q) <= s->limit)
        set_over(s, false); /* drained below the limit: sources may go on */
}

void hy_sink_taken(hy_sink *s, size_t unread)
{
    size_t sent = s->q.sent;
    hy_fanq_taken(&s->q, unread < sent ? sent - unread : 0);
    if (s->over && hy_fanq_bytes(&s->q) <= s->limit)
        set_over(s, false);
}

void hy_sinks_flush(hy_sinks *set)
{
    while (set->dirty) {
        hy_sink *s = set->dirty;
        set->dirty = s->next_dirty;
        s->dirty = false;
        s->next_dirty = NULL;
        hy_sink_flush(s);
    }
}
