/* relay.c - upstream client, listen endpoints, routes and back-pressure
 * (see hypha/relay.h). */
#define _GNU_SOURCE
#include "hypha/relay.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "hypha/backoff.h"
#include "fsutil.h"
#include "hypha/log.h"
#include "hypha/supervisor.h"

#define COMP "relay"
#define HANDSHAKE_TIMEOUT_S 5.0
#define CONNECT_TIMEOUT_S 5.0
#define PROBATION_S 0.25      /* after the handshake, before the first frame: a refusing bus
                                 closes in that time, and then no frame was written to it */
#define ACCEPT_PAUSE_S 1.0
#define PEER_READ_ROUNDS 16
#define UP_SNDBUF_MAX (4u << 20) /* kernel send buffer asked for the upstream socket */

static void fmt_u(char *out, size_t len, unsigned long long v) { snprintf(out, len, "%llu", v); }

const char *hy_drop_str(hy_drop d)
{
    switch (d) {
    case HY_DROP_UNKNOWN_TYPE: return "unknown-type";
    case HY_DROP_WRONG_SIZE: return "wrong-size";
    case HY_DROP_NOT_ALLOWED: return "not-allowed";
    case HY_DROP_NOT_RUNNING: return "not-running";
    case HY_DROP_EXITED: return "worker-exited";
    case HY_DROP_NO_MEMORY: return "out-of-memory";
    case HY_DROP__COUNT: break;
    }
    return "?";
}

const char *hy_up_state_str(hy_up_state st)
{
    switch (st) {
    case HY_UP_DOWN: return "down";
    case HY_UP_CONNECTING: return "connecting";
    case HY_UP_CONNECTED: return "connected";
    }
    return "?";
}

/* True at the 1st, 10th, 100th ... occurrence: floods stay readable. */
static bool log_mark(uint64_t before, uint64_t after)
{
    uint64_t mark = 1;
    while (mark <= before)
        mark *= 10;
    return after >= mark;
}

static void peer_drop(hy_peer *p, hy_drop why, uint16_t type_id)
{
    uint64_t before = p->drops[why]++;
    if (log_mark(before, p->drops[why])) {
        char t[8], c[24];
        fmt_u(t, sizeof t, type_id);
        fmt_u(c, sizeof c, (unsigned long long)p->drops[why]);
        hy_log(HY_WARN, COMP, "frame dropped", "from", p->name, "reason", hy_drop_str(why), "type", t,
               "total", c, NULL);
    }
}

static void flush_local_run(hy_relay *r);

/* ---- routes ---------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;
    return *x < *y ? -1 : *x > *y;
}

static void free_routes(hy_relay *r)
{
    for (size_t i = 0; i < r->nroutes; i++)
        free(r->routes[i].inst);
    free(r->routes);
    r->routes = NULL;
    r->nroutes = 0;
}

/* Subscribers per type: each instance's topology `subscribe` plus what it
 * subscribed at run time (hello, subscribe). */
void hy_relay_rebuild_routes(hy_relay *r)
{
    hy_sup *s = r->sup;
    flush_local_run(r); /* it points at a route; and earlier frames go by the old routes */
    free_routes(r);
    size_t n = 0;
    for (size_t i = 0; i < s->ninst; i++)
        n += s->inst[i]->spec->nsubscribe + s->inst[i]->nsubs;
    if (n == 0)
        return;
    uint64_t *pairs = malloc(n * sizeof *pairs); /* type << 32 | instance */
    if (!pairs)
        goto oom;
    size_t k = 0;
    for (size_t i = 0; i < s->ninst; i++) {
        const hy_instance *in = s->inst[i];
        for (size_t j = 0; j < in->spec->nsubscribe; j++)
            pairs[k++] = (uint64_t)in->spec->subscribe[j] << 32 | i;
        for (size_t j = 0; j < in->nsubs; j++)
            pairs[k++] = (uint64_t)in->subs[j] << 32 | i;
    }
    qsort(pairs, n, sizeof *pairs, cmp_u64);
    size_t ntypes = 0;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || pairs[i] >> 32 != pairs[i - 1] >> 32)
            ntypes++;
    if (!(r->routes = calloc(ntypes, sizeof *r->routes))) {
        free(pairs);
        goto oom;
    }
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && pairs[j] >> 32 == pairs[i] >> 32)
            j++;
        hy_route *rt = &r->routes[r->nroutes++];
        rt->type_id = (uint16_t)(pairs[i] >> 32);
        if (!(rt->inst = malloc((j - i) * sizeof *rt->inst))) {
            free(pairs);
            goto oom;
        }
        for (size_t m = i; m < j; m++)
            if (rt->n == 0 || rt->inst[rt->n - 1] != (uint32_t)pairs[m])
                rt->inst[rt->n++] = (uint32_t)pairs[m]; /* topology and hello may both list it */
        i = j;
    }
    free(pairs);
    return;
oom:
    free_routes(r);
    hy_log(HY_ERROR, COMP, "out of memory building routes: no frame reaches a worker", NULL);
}

static const hy_route *find_route(const hy_relay *r, uint16_t type_id)
{
    size_t lo = 0, hi = r->nroutes;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->routes[mid].type_id == type_id)
            return &r->routes[mid];
        if (r->routes[mid].type_id < type_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- reading control ----------------------------------------------------- */

/* Sources whose frames reach worker queues pause while a `block` worker is
 * over its limit; sources whose frames go upstream pause while the upstream
 * queue is over `upstream.buffer`. A worker that is itself over its limit
 * keeps being read: a transform publishes while handling its input, and
 * pausing it would deadlock (see docs/routing.md). */
static bool feeders_may_read(const hy_relay *r)
{
    if (r->up_full)
        return false;
    return !(r->local_feed && r->sup->blocked > 0);
}

bool hy_relay_worker_may_read(const hy_relay *r, const hy_instance *in)
{
    return in->blocking || feeders_may_read(r);
}

static bool upstream_may_read(const hy_relay *r) { return r->sup->blocked == 0; }

static void peer_reading(hy_relay *r, hy_peer *p, bool on)
{
    if (p->fd < 0 || p->doomed)
        return;
    if (on)
        ev_io_start(r->loop, &p->rw);
    else
        ev_io_stop(r->loop, &p->rw);
}

void hy_relay_update_reading(hy_relay *r)
{
    hy_sup *s = r->sup;
    for (size_t i = 0; i < s->ninst; i++) {
        hy_instance *in = s->inst[i];
        if (in->out_fd < 0)
            continue;
        if (hy_relay_worker_may_read(r, in))
            ev_io_start(r->loop, &in->out_w);
        else
            ev_io_stop(r->loop, &in->out_w);
    }
    if (r->up_state == HY_UP_CONNECTED)
        peer_reading(r, &r->up, upstream_may_read(r));
    bool clients = feeders_may_read(r);
    for (hy_peer *c = r->clients; c; c = c->next)
        peer_reading(r, c, !c->ready || clients); /* the handshake is always read */
}

static void set_up_full(hy_relay *r, bool on)
{
    if (r->up_full == on)
        return;
    r->up_full = on;
    char b[24];
    fmt_u(b, sizeof b, (unsigned long long)hy_outq_bytes(&r->up.q));
    if (on)
        hy_log(HY_WARN, COMP, "upstream buffer full: pausing workers until it drains", "state",
               hy_up_state_str(r->up_state), "buffered_bytes", b, NULL);
    else
        hy_log(HY_INFO, COMP, "upstream buffer drained: workers resume", "buffered_bytes", b, NULL);
    hy_relay_update_reading(r);
}

/* ---- destinations ---------------------------------------------------------- */

void hy_relay_mark_dirty(hy_relay *r, hy_instance *in)
{
    if (in->dirty)
        return;
    in->dirty = true;
    r->dirty[r->ndirty++] = in; /* one slot per instance: never overflows */
}

static void doom(hy_peer *c, const char *why)
{
    if (c->doomed)
        return;
    c->doomed = true;
    c->doom_reason = why;
    ev_io_stop(c->relay->loop, &c->rw);
    ev_io_stop(c->relay->loop, &c->ww);
    ev_timer_stop(c->relay->loop, &c->timer);
}

/* Queue a frame for a listen client; one that cannot keep up is dropped. */
static void to_client(hy_relay *r, hy_peer *c, const uint8_t *frame, size_t len, size_t frames)
{
    if (!c->ready || c->doomed)
        return;
    hy_outq_result res = hy_outq_push(&c->q, frame, len, r->topo->defaults.queue_limit, HY_OVERFLOW_BLOCK);
    if (res == HY_OUTQ_OVER || res == HY_OUTQ_NOMEM) {
        r->clients_slow++;
        doom(c, res == HY_OUTQ_OVER ? "too slow: its queue passed queue.limit" : "out of memory");
        return;
    }
    c->frames_out += frames;
    c->bytes_out += len - frames * HY_TLV_HEADER;
    c->dirty = true;
}

/* Deliver frames to every subscribed worker and every listen client. */
static void deliver_now(hy_relay *r, const hy_route *rt, const uint8_t *data, size_t len, size_t frames,
                        uint16_t type_id)
{
    if (rt)
        for (size_t i = 0; i < rt->n; i++)
            hy_sup_deliver_run(r->sup->inst[rt->inst[i]], data, len, frames, type_id);
    for (hy_peer *c = r->clients; c; c = c->next)
        to_client(r, c, data, len, frames);
}

static void flush_local_run(hy_relay *r)
{
    if (!r->lrun_frames)
        return;
    size_t frames = r->lrun_frames;
    r->lrun_frames = 0;
    deliver_now(r, r->lrun_route, r->lrun, r->lrun_len, frames, r->lrun_type);
}

/* Consecutive frames of one read that go to the same destinations are
 * queued as one run: one copy per destination instead of one per frame
 * (fan-out to many workers is dominated by that). */
static void deliver_local(hy_relay *r, const uint8_t *frame, size_t len, uint16_t type_id, bool in_place)
{
    const hy_route *rt = find_route(r, type_id);
    if (in_place && r->lrun_frames && r->lrun + r->lrun_len == frame && r->lrun_route == rt) {
        r->lrun_len += len;
        r->lrun_frames++;
        return;
    }
    flush_local_run(r);
    if (!in_place) {
        deliver_now(r, rt, frame, len, 1, type_id);
        return;
    }
    r->lrun = frame;
    r->lrun_len = len;
    r->lrun_frames = 1;
    r->lrun_route = rt;
    r->lrun_type = type_id;
}

static bool in_rbuf(const hy_relay *r, const uint8_t *p)
{
    return p >= r->sup->rbuf && p < r->sup->rbuf + r->sup->rbuf_size;
}

/* Queue bytes (whole frames) for the bus; never drops. */
static void to_upstream(hy_relay *r, const uint8_t *data, size_t len, size_t frames, hy_instance *src, hy_peer *csrc)
{
    hy_outq_result res = hy_outq_push(&r->up.q, data, len, r->topo->upstream_buffer, HY_OVERFLOW_BLOCK);
    if (res == HY_OUTQ_NOMEM) {
        for (size_t i = 0; i < frames; i++) {
            if (src)
                hy_sup_count_drop(src, HY_DROP_NO_MEMORY, 0, 1);
            else if (csrc)
                peer_drop(csrc, HY_DROP_NO_MEMORY, 0);
        }
        return;
    }
    r->up.frames_out += frames;
    r->up.bytes_out += len - frames * HY_TLV_HEADER;
    r->up.dirty = true;
    if (res == HY_OUTQ_OVER)
        set_up_full(r, true);
}

void hy_relay_end_batch(hy_relay *r)
{
    flush_local_run(r);
    if (r->run_len)
        to_upstream(r, r->run, r->run_len, r->run_frames, r->run_src, NULL);
    r->run = NULL;
    r->run_len = r->run_frames = 0;
    r->run_src = NULL;
}

void hy_relay_from_worker(hy_relay *r, hy_instance *src, const uint8_t *frame, size_t len,
                          uint16_t type_id, bool in_place)
{
    if (hy_relay_tapped(r, type_id))
        r->tap_fn(r->tap_ud, src->label, type_id, frame + HY_TLV_HEADER, (uint32_t)(len - HY_TLV_HEADER));
    if (r->topo->has_upstream) {
        if (in_place && r->run_src == src && r->run + r->run_len == frame) {
            r->run_len += len;
            r->run_frames++;
        } else {
            hy_relay_end_batch(r);
            if (in_place) {
                r->run = frame;
                r->run_len = len;
                r->run_frames = 1;
                r->run_src = src;
            } else {
                to_upstream(r, frame, len, 1, src, NULL);
            }
        }
    }
    if (r->local_feed)
        deliver_local(r, frame, len, type_id, in_place);
}

/* ---- peers: common I/O --------------------------------------------------- */

static void close_peer_fd(hy_relay *r, hy_peer *p)
{
    ev_io_stop(r->loop, &p->rw);
    ev_io_stop(r->loop, &p->ww);
    ev_timer_stop(r->loop, &p->timer);
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
}

/* Write what is queued. 0: all written or would block; -1: the connection failed. */
static int peer_write(hy_relay *r, hy_peer *p)
{
    while (hy_outq_pending(&p->q) > 0) {
        ssize_t n = write(p->fd, hy_outq_data(&p->q), hy_outq_pending(&p->q));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                ev_io_start(r->loop, &p->ww);
                return 0;
            }
            return -1;
        }
        hy_outq_consume(&p->q, (size_t)n);
    }
    ev_io_stop(r->loop, &p->ww);
    return 0;
}

/* ---- upstream client ------------------------------------------------------- */

static void up_connect(hy_relay *r);

static void up_schedule(hy_relay *r)
{
    hy_policy p;
    hy_policy_builtin(&p);
    p.backoff_initial_ms = r->topo->reconnect_initial_ms;
    p.backoff_max_ms = r->topo->reconnect_max_ms;
    p.backoff_factor = 2.0;
    p.backoff_jitter = 0.2;
    uint64_t d = hy_backoff_delay_ms(&p, r->up_failures ? r->up_failures - 1 : 0, hy_rand_signed(&r->sup->rng));
    r->up_state = HY_UP_DOWN;
    ev_timer_stop(r->loop, &r->up_timer);
    ev_timer_set(&r->up_timer, (double)d / 1000.0, 0.0);
    ev_timer_start(r->loop, &r->up_timer);
}

/* The connection is gone (or never came): keep what is queued, retry. */
static void up_lost(hy_relay *r, const char *why, int err)
{
    bool was_up = r->up_state == HY_UP_CONNECTED;
    close_peer_fd(r, &r->up);
    ev_timer_stop(r->loop, &r->up_timer);
    /* The bus never got a frame that was partly written: send it whole again. */
    hy_outq_rewind(&r->up.q);
    char ep[160], b[24], n[16];
    hy_endpoint_str(&r->topo->upstream, ep, sizeof ep);
    fmt_u(b, sizeof b, (unsigned long long)hy_outq_bytes(&r->up.q));
    if (was_up) {
        r->up_disconnects++;
        /* A Mycelium bus closes on a bad digest right after reading the
         * handshake: during the probation, before any frame was written. A
         * close after it is an ordinary loss (frames in the socket then go
         * with the bus, as for any socket client). */
        bool suspect = r->up_probation;
        r->up_probation = false;
        if (suspect) {
            r->up_failures++;
            hy_log(HY_ERROR, COMP,
                   "upstream closed the connection right after the handshake: probably a schema "
                   "digest mismatch (the bus and hyphad load different contracts files)",
                   "upstream", ep, "schema", r->topo->schema->digest_hex, "buffered_bytes", b, NULL);
        } else {
            r->up_failures = 1;
            r->up_down_since = ev_now(r->loop);
            hy_log(HY_WARN, COMP, "upstream connection lost: reconnecting", "upstream", ep, "error",
                   err ? strerror(err) : why, "buffered_bytes", b, NULL);
        }
    } else {
        r->up_failures++;
        fmt_u(n, sizeof n, r->up_failures);
        if (log_mark(r->up_failures - 1, r->up_failures))
            hy_log(HY_WARN, COMP, "upstream unreachable: retrying", "upstream", ep, "error",
                   err ? strerror(err) : why, "attempts", n, "buffered_bytes", b, NULL);
    }
    r->up.ready = false;
    up_schedule(r);
    hy_relay_update_reading(r);
}

static void up_connected(hy_relay *r)
{
    ev_timer_stop(r->loop, &r->up_timer);
    r->up_state = HY_UP_CONNECTED;
    r->up_probation = false;
    r->up_since = ev_now(r->loop);
    r->up_connects++;
    r->up.hs_len = 0;
    hy_tlv_decoder_reset(&r->up.dec);
    char ep[160], b[24], n[16];
    hy_endpoint_str(&r->topo->upstream, ep, sizeof ep);
    fmt_u(b, sizeof b, (unsigned long long)hy_outq_bytes(&r->up.q));
    fmt_u(n, sizeof n, r->up_failures);
    hy_log(HY_INFO, COMP, "upstream connected", "upstream", ep, "failed_attempts", n, "buffered_bytes", b, NULL);
    ev_io_set(&r->up.rw, r->up.fd, EV_READ);
    ev_io_set(&r->up.ww, r->up.fd, EV_WRITE);
    r->up.dirty = true; /* the handshake now; frames after the probation */
    r->up_probation = true;
    ev_timer_set(&r->up_timer, PROBATION_S, 0.0);
    ev_timer_start(r->loop, &r->up_timer);
    hy_relay_update_reading(r);
}

/* Handshake first, then queued frames. */
static int up_flush(hy_relay *r)
{
    hy_peer *p = &r->up;
    while (p->hs_len < HY_HANDSHAKE_LEN) {
        ssize_t n = write(p->fd, p->hs + p->hs_len, HY_HANDSHAKE_LEN - p->hs_len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                ev_io_start(r->loop, &p->ww);
                return 0;
            }
            return -1;
        }
        p->hs_len += (size_t)n;
    }
    if (r->up_probation)
        return 0;
    if (peer_write(r, p) < 0)
        return -1;
    if (r->up_full && hy_outq_bytes(&p->q) <= r->topo->upstream_buffer)
        set_up_full(r, false);
    return 0;
}

static void up_probation_end(hy_relay *r)
{
    r->up_probation = false;
    ev_timer_stop(r->loop, &r->up_timer);
    r->up.dirty = true;
}

static void up_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_relay *r = w->data;
    if (r->up_state == HY_UP_CONNECTED && r->up_probation)
        up_probation_end(r); /* still open: the bus took the handshake */
    else if (r->up_state == HY_UP_CONNECTING)
        up_lost(r, "connect timed out", ETIMEDOUT);
    else if (r->up_state == HY_UP_DOWN)
        up_connect(r);
}

static void up_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_relay *r = w->data;
    if (r->up_state == HY_UP_CONNECTING) {
        int e = 0;
        socklen_t el = sizeof e;
        if (getsockopt(r->up.fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0)
            e = errno;
        ev_io_stop(r->loop, &r->up.ww);
        if (e) {
            up_lost(r, "connect failed", e);
            return;
        }
        up_connected(r);
        return;
    }
    if (up_flush(r) < 0)
        up_lost(r, "write failed", errno);
}

/* A frame from the bus or a client: a known type (never a control frame)
 * of exactly its size; anything else is dropped and counted against it. */
static bool peer_accepts(hy_peer *p, const hy_frame *f)
{
    const hy_message *m = hy_schema_find(p->relay->topo->schema, f->type);
    if (f->type == HY_TLV_CONTROL_TYPE || !m) {
        peer_drop(p, HY_DROP_UNKNOWN_TYPE, f->type);
        return false;
    }
    if (f->len != m->size) {
        peer_drop(p, HY_DROP_WRONG_SIZE, f->type);
        return false;
    }
    p->frames_in++;
    p->bytes_in += f->len;
    if (hy_relay_tapped(p->relay, f->type))
        p->relay->tap_fn(p->relay->tap_ud, p->name, f->type, f->payload, f->len);
    return true;
}

static int up_frame(void *ud, const hy_frame *f)
{
    hy_relay *r = ud;
    if (!peer_accepts(&r->up, f))
        return 0;
    const uint8_t *frame = f->payload - HY_TLV_HEADER;
    deliver_local(r, frame, HY_TLV_HEADER + f->len, f->type, in_rbuf(r, frame));
    return 0;
}

static void up_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_relay *r = w->data;
    hy_sup *s = r->sup;
    for (int rounds = 0; rounds < PEER_READ_ROUNDS && upstream_may_read(r); rounds++) {
        ssize_t n = read(r->up.fd, s->rbuf, s->rbuf_size);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                up_lost(r, "read failed", errno);
            return;
        }
        if (n == 0) {
            up_lost(r, "closed by the bus", 0);
            return;
        }
        if (r->up_probation) /* it talks to us: it took the handshake */
            up_probation_end(r);
        hy_tlv_status st = hy_tlv_feed(&r->up.dec, s->rbuf, (size_t)n, up_frame, r);
        hy_relay_end_batch(r); /* s->rbuf is reused next round */
        if (st == HY_TLV_CORRUPT || st == HY_TLV_NOMEM) {
            char why[96];
            snprintf(why, sizeof why, "corrupt stream from the bus (frame length %" PRIu32 ")", r->up.dec.bad_len);
            up_lost(r, st == HY_TLV_NOMEM ? "out of memory assembling a frame" : why, 0);
            return;
        }
        if ((size_t)n < s->rbuf_size)
            return;
    }
}

static void up_connect(hy_relay *r)
{
    const hy_endpoint *ep = &r->topo->upstream;
    int fd = -1, e = 0;
    if (ep->kind == HY_EP_UNIX) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(ep->path) >= sizeof sa.sun_path) {
            up_lost(r, "socket path too long", ENAMETOOLONG);
            return;
        }
        memcpy(sa.sun_path, ep->path, strlen(ep->path) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        /* EAGAIN: its backlog is full; nothing is in progress, so retry later */
        if (fd < 0 || (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS))
            e = errno;
    } else {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
        struct addrinfo *ai = NULL;
        char port[8];
        snprintf(port, sizeof port, "%u", ep->port);
        int gai = getaddrinfo(ep->host, port, &hints, &ai);
        if (gai != 0) {
            up_lost(r, gai_strerror(gai), 0);
            return;
        }
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0 || (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS))
            e = errno;
        freeaddrinfo(ai);
        if (fd >= 0 && !e) {
            int one = 1;
            (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
    }
    if (fd < 0 || e) {
        if (!e)
            e = EIO;
        if (fd >= 0)
            close(fd);
        up_lost(r, "connect failed", e);
        return;
    }
    /* A deep kernel buffer lets one socket keep up with many workers: the
     * default (~208 KiB) fills faster than the bus wakes up. FORCE needs
     * CAP_NET_ADMIN; otherwise the kernel caps it at net.core.wmem_max. */
    int want = (int)(r->topo->upstream_buffer < UP_SNDBUF_MAX ? r->topo->upstream_buffer : UP_SNDBUF_MAX);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &want, sizeof want) < 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
    r->up.fd = fd;
    r->up_state = HY_UP_CONNECTING;
    ev_io_set(&r->up.ww, fd, EV_WRITE);
    ev_io_set(&r->up.rw, fd, EV_READ);
    ev_io_start(r->loop, &r->up.ww); /* writable: connected or failed */
    ev_timer_stop(r->loop, &r->up_timer);
    ev_timer_set(&r->up_timer, CONNECT_TIMEOUT_S, 0.0);
    ev_timer_start(r->loop, &r->up_timer);
}

size_t hy_relay_upstream_pending(const hy_relay *r) { return hy_outq_bytes(&r->up.q); }

bool hy_relay_upstream_connected(const hy_relay *r) { return r->up_state == HY_UP_CONNECTED; }

static void drops_str(const uint64_t *drops, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (int d = 0; d < HY_DROP__COUNT && used < len; d++)
        if (drops[d])
            used += (size_t)snprintf(out + used, len - used, "%s%s=%" PRIu64, used ? "," : "",
                                     hy_drop_str((hy_drop)d), drops[d]);
    if (!used)
        snprintf(out, len, "none");
}

void hy_relay_log_counters(const hy_relay *r)
{
    char a[24], b[24], c[24], d[24], e[24], dr[256];
    if (r->topo->has_upstream) {
        fmt_u(a, sizeof a, (unsigned long long)r->up.frames_out);
        fmt_u(b, sizeof b, (unsigned long long)r->up.frames_in);
        fmt_u(c, sizeof c, (unsigned long long)r->up_connects);
        fmt_u(d, sizeof d, (unsigned long long)hy_outq_bytes(&r->up.q));
        drops_str(r->up.drops, dr, sizeof dr);
        hy_log(HY_INFO, COMP, "upstream counters", "upstream", r->up.name, "frames_out", a, "frames_in", b,
               "connects", c, "dropped", dr, "buffered_bytes", d, NULL);
        if (hy_outq_bytes(&r->up.q))
            hy_log(HY_ERROR, COMP, "exiting with frames the bus never received", "upstream", r->up.name,
                   "state", hy_up_state_str(r->up_state), "buffered_bytes", d, NULL);
    }
    if (r->nlisteners) {
        fmt_u(a, sizeof a, (unsigned long long)r->clients_accepted);
        fmt_u(b, sizeof b, (unsigned long long)r->clients_refused);
        fmt_u(c, sizeof c, (unsigned long long)r->clients_slow);
        fmt_u(e, sizeof e, (unsigned long long)r->nclients);
        hy_log(HY_INFO, COMP, "listen counters", "accepted", a, "refused", b, "too_slow", c, "connected", e, NULL);
    }
}

/* ---- listen clients ------------------------------------------------------ */

static void client_free(hy_relay *r, hy_peer *c)
{
    close_peer_fd(r, c);
    hy_outq_free(&c->q);
    hy_tlv_decoder_free(&c->dec);
    free(c);
}

static void client_drop(hy_relay *r, hy_peer *c)
{
    for (hy_peer **pp = &r->clients; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            r->nclients--;
            break;
        }
    }
    char in[24], out[24];
    fmt_u(in, sizeof in, (unsigned long long)c->frames_in);
    fmt_u(out, sizeof out, (unsigned long long)c->frames_out);
    hy_log(c->doom_reason && strcmp(c->doom_reason, "closed") != 0 ? HY_WARN : HY_INFO, COMP,
           "listen client disconnected", "client", c->name, "why", c->doom_reason ? c->doom_reason : "closed",
           "frames_in", in, "frames_out", out, NULL);
    client_free(r, c);
}

static int client_frame(void *ud, const hy_frame *f)
{
    hy_peer *c = ud;
    hy_relay *r = c->relay;
    if (!peer_accepts(c, f))
        return 0;
    const uint8_t *frame = f->payload - HY_TLV_HEADER;
    size_t len = HY_TLV_HEADER + f->len;
    if (r->topo->has_upstream)
        to_upstream(r, frame, len, 1, NULL, c);
    if (r->local_feed)
        deliver_local(r, frame, len, f->type, in_rbuf(r, frame));
    return 0;
}

/* The first 34 bytes: u16 LE 32 and the digest. Returns bytes used, or -1. */
static long client_handshake(hy_relay *r, hy_peer *c, const uint8_t *p, size_t n)
{
    size_t take = HY_HANDSHAKE_LEN - c->hs_len;
    if (take > n)
        take = n;
    memcpy(c->hs + c->hs_len, p, take);
    c->hs_len += take;
    if (c->hs_len < HY_HANDSHAKE_LEN)
        return (long)take;
    unsigned dlen = (unsigned)c->hs[0] | (unsigned)c->hs[1] << 8;
    if (dlen != 32 || memcmp(c->hs + 2, r->topo->schema->digest, 32) != 0) {
        char got[65];
        for (int i = 0; i < 32; i++)
            snprintf(got + 2 * i, 3, "%02x", c->hs[2 + i]);
        r->clients_refused++;
        hy_log(HY_ERROR, COMP, "listen client refused: schema digest mismatch", "client", c->name,
               "client_schema", dlen == 32 ? got : "(not a Mycelium handshake)", "schema",
               r->topo->schema->digest_hex, NULL);
        doom(c, "schema digest mismatch");
        return -1;
    }
    c->ready = true;
    ev_timer_stop(r->loop, &c->timer);
    hy_log(HY_INFO, COMP, "listen client connected", "client", c->name, NULL);
    if (!feeders_may_read(r))
        ev_io_stop(r->loop, &c->rw);
    return (long)take;
}

static void client_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_peer *c = w->data;
    hy_relay *r = c->relay;
    hy_sup *s = r->sup;
    for (int rounds = 0; rounds < PEER_READ_ROUNDS && !c->doomed; rounds++) {
        if (c->ready && !feeders_may_read(r))
            return;
        ssize_t n = read(c->fd, s->rbuf, s->rbuf_size);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                doom(c, strerror(errno));
            return;
        }
        if (n == 0) {
            if (hy_tlv_finish(&c->dec) == HY_TLV_PARTIAL)
                doom(c, "closed in the middle of a frame");
            else
                doom(c, c->ready ? "closed" : "closed before the handshake");
            return;
        }
        const uint8_t *p = s->rbuf;
        size_t len = (size_t)n;
        if (!c->ready) {
            long used = client_handshake(r, c, p, len);
            if (used < 0)
                return;
            p += used;
            len -= (size_t)used;
        }
        if (len == 0)
            continue;
        hy_tlv_status st = hy_tlv_feed(&c->dec, p, len, client_frame, c);
        hy_relay_end_batch(r);
        if (st == HY_TLV_CORRUPT || st == HY_TLV_NOMEM) {
            doom(c, st == HY_TLV_CORRUPT ? "corrupt stream (frame length over the limit)" : "out of memory");
            return;
        }
        if ((size_t)n < s->rbuf_size)
            return;
    }
}

static void client_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_peer *c = w->data;
    if (peer_write(c->relay, c) < 0)
        doom(c, strerror(errno));
}

static void client_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_peer *c = w->data;
    c->relay->clients_refused++;
    doom(c, "no handshake within 5s");
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    hy_listener *l = w->data;
    hy_relay *r = l->relay;
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN)
                return;
            hy_log(HY_ERROR, COMP, "accept failed: pausing this endpoint for 1s", "endpoint", l->name, "error",
                   strerror(errno), NULL);
            ev_io_stop(loop, &l->w);
            ev_timer_set(&l->pause, ACCEPT_PAUSE_S, 0.0);
            ev_timer_start(loop, &l->pause);
            return;
        }
        hy_peer *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            hy_log(HY_ERROR, COMP, "out of memory for a listen client: refused", "endpoint", l->name, NULL);
            continue;
        }
        if (l->ep->kind == HY_EP_TCP) {
            int one = 1;
            (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        c->relay = r;
        c->fd = fd;
        c->listener = l;
        hy_outq_init(&c->q);
        hy_tlv_decoder_init(&c->dec, 0);
        snprintf(c->name, sizeof c->name, "%s#%" PRIu64, l->name, ++r->next_client_id);
        ev_io_init(&c->rw, client_read_cb, fd, EV_READ);
        ev_io_init(&c->ww, client_write_cb, fd, EV_WRITE);
        ev_timer_init(&c->timer, client_timer_cb, HANDSHAKE_TIMEOUT_S, 0.0);
        c->rw.data = c->ww.data = c->timer.data = c;
        c->next = r->clients;
        r->clients = c;
        r->nclients++;
        r->clients_accepted++;
        ev_io_start(loop, &c->rw);
        ev_timer_start(loop, &c->timer);
    }
}

static void accept_pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    hy_listener *l = w->data;
    ev_io_start(loop, &l->w);
}

static int listen_unix(hy_listener *l, hy_err *err)
{
    l->fd = hy_unix_listen(l->ep->path, "listen", err);
    if (l->fd < 0)
        return -1;
    l->unlink_on_close = true;
    return 0;
}

static int listen_tcp(hy_listener *l, hy_err *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *ai = NULL;
    char port[8];
    snprintf(port, sizeof port, "%u", l->ep->port);
    int gai = getaddrinfo(l->ep->host, port, &hints, &ai);
    if (gai != 0)
        return hy_err_set(err, "listen %s: %s", l->name, gai_strerror(gai));
    l->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    int rc = -1;
    if (l->fd < 0)
        hy_err_set(err, "socket: %s", strerror(errno));
    else if (setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        hy_err_set(err, "setsockopt: %s", strerror(errno));
    else if (bind(l->fd, ai->ai_addr, ai->ai_addrlen) < 0)
        hy_err_set(err, "listen %s: bind: %s", l->name, strerror(errno));
    else if (listen(l->fd, 128) < 0)
        hy_err_set(err, "listen %s: %s", l->name, strerror(errno));
    else
        rc = 0;
    freeaddrinfo(ai);
    return rc;
}

/* ---- flushing: once per loop iteration ---------------------------------- */

static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_relay *r = w->data;
    hy_relay_end_batch(r);
    for (size_t i = 0; i < r->ndirty; i++) {
        hy_instance *in = r->dirty[i];
        in->dirty = false;
        hy_sup_flush(in);
    }
    r->ndirty = 0;
    if (r->up.dirty) {
        r->up.dirty = false;
        if (r->up_state == HY_UP_CONNECTED && up_flush(r) < 0)
            up_lost(r, "write failed", errno);
    }
    for (hy_peer **pp = &r->clients; *pp;) {
        hy_peer *c = *pp;
        if (c->dirty && !c->doomed) {
            c->dirty = false;
            if (peer_write(r, c) < 0)
                doom(c, strerror(errno));
        }
        if (c->doomed) {
            client_drop(r, c); /* unlinks c: *pp is now its successor */
            continue;
        }
        pp = &c->next;
    }
}

/* ---- setup --------------------------------------------------------------- */

int hy_relay_init(hy_relay *r, hy_sup *s, hy_err *err)
{
    memset(r, 0, sizeof *r);
    r->sup = s;
    r->loop = s->loop;
    r->topo = s->topo;
    const hy_topology *t = r->topo;
    r->local_feed = !t->has_upstream || !t->upstream_echo;
    r->up.fd = -1;
    r->up.relay = r;
    hy_outq_init(&r->up.q);
    hy_tlv_decoder_init(&r->up.dec, 0);
    if (t->has_upstream)
        hy_endpoint_str(&t->upstream, r->up.name, sizeof r->up.name);
    else
        snprintf(r->up.name, sizeof r->up.name, "upstream");
    r->up.hs[0] = 32;
    r->up.hs[1] = 0;
    memcpy(r->up.hs + 2, t->schema->digest, 32);
    ev_io_init(&r->up.rw, up_read_cb, -1, EV_READ);
    ev_io_init(&r->up.ww, up_write_cb, -1, EV_WRITE);
    r->up.rw.data = r->up.ww.data = r;
    ev_init(&r->up_timer, up_timer_cb);
    r->up_timer.data = r;
    ev_prepare_init(&r->flush_w, flush_cb);
    r->flush_w.data = r;
    if (hy_relay_reserve(r, s->ninst, err) < 0)
        return -1;
    r->up_down_since = ev_now(r->loop);
    if (t->nlisten && !(r->listeners = calloc(t->nlisten, sizeof *r->listeners)))
        return hy_err_set(err, "out of memory");
    for (size_t i = 0; i < t->nlisten; i++) {
        hy_listener *l = &r->listeners[i];
        l->relay = r;
        l->ep = &t->listen[i];
        l->fd = -1;
        r->nlisteners++;
        hy_endpoint_str(l->ep, l->name, sizeof l->name);
        if ((l->ep->kind == HY_EP_UNIX ? listen_unix(l, err) : listen_tcp(l, err)) < 0)
            return -1;
        ev_io_init(&l->w, accept_cb, l->fd, EV_READ);
        ev_timer_init(&l->pause, accept_pause_cb, ACCEPT_PAUSE_S, 0.0);
        l->w.data = l->pause.data = l;
    }
    hy_relay_rebuild_routes(r);
    return 0;
}

void hy_relay_start(hy_relay *r)
{
    ev_prepare_start(r->loop, &r->flush_w);
    for (size_t i = 0; i < r->nlisteners; i++) {
        ev_io_start(r->loop, &r->listeners[i].w);
        hy_log(HY_INFO, COMP, "listening", "endpoint", r->listeners[i].name, NULL);
    }
    if (r->topo->has_upstream)
        up_connect(r);
}

int hy_relay_reserve(hy_relay *r, size_t n, hy_err *err)
{
    if (n <= r->ndirty_cap)
        return 0;
    hy_instance **d = realloc(r->dirty, n * sizeof *d);
    if (!d)
        return hy_err_set(err, "out of memory");
    r->dirty = d;
    r->ndirty_cap = n;
    return 0;
}

void hy_relay_forget(hy_relay *r, hy_instance *in)
{
    if (r->run_src == in)
        hy_relay_end_batch(r);
    for (size_t i = 0; i < r->ndirty; i++)
        if (r->dirty[i] == in) {
            r->dirty[i] = r->dirty[--r->ndirty];
            break;
        }
    in->dirty = false;
}

void hy_relay_retopo(hy_relay *r, const hy_topology *t)
{
    r->topo = t;
    for (size_t i = 0; i < r->nlisteners; i++)
        r->listeners[i].ep = &t->listen[i];
}

void hy_relay_free(hy_relay *r)
{
    if (!r->sup)
        return;
    if (r->loop) {
        ev_prepare_stop(r->loop, &r->flush_w);
        ev_timer_stop(r->loop, &r->up_timer);
    }
    close_peer_fd(r, &r->up);
    hy_outq_free(&r->up.q);
    hy_tlv_decoder_free(&r->up.dec);
    while (r->clients) {
        hy_peer *c = r->clients;
        r->clients = c->next;
        client_free(r, c);
    }
    for (size_t i = 0; i < r->nlisteners; i++) {
        hy_listener *l = &r->listeners[i];
        ev_io_stop(r->loop, &l->w);
        ev_timer_stop(r->loop, &l->pause);
        if (l->fd >= 0)
            close(l->fd);
        if (l->unlink_on_close)
            (void)unlink(l->ep->path);
    }
    free(r->listeners);
    free(r->dirty);
    free(r->tap_bits);
    free_routes(r);
    memset(r, 0, sizeof *r);
}
