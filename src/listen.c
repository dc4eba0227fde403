/* listen.c - listen endpoints and their clients (see hypha/listen.h). */
#define _GNU_SOURCE
#include "hypha/listen.h"

#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <inttypes.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hypha/listen_hs.h"
#include "hypha/log.h"
#include "hypha/upgrade.h"
#include "hypha/route.h"
#include "hypha/units.h"

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
    ((hy_listener *)c->listener)->nclients--;
    snprintf(c->why, sizeof c->why, "%s", why);
    hy_flow_open(c->ls->flow, &c->src, false);
    ev_timer_stop(c->ls->loop, &c->timer);
    ev_timer_stop(c->ls->loop, &c->frame_w);
    ev_io_stop(c->ls->loop, &c->tls_w);
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
    ev_timer_stop(ls->loop, &c->frame_w);
    ev_io_stop(ls->loop, &c->tls_w);
    ev_clear_pending(ls->loop, &c->timer);
    ev_clear_pending(ls->loop, &c->frame_w);
    ev_clear_pending(ls->loop, &c->tls_w);
    hy_tls_end(&c->tls);
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

/* On the bus: it receives every frame from now on. */
static void join(hy_client *c)
{
    hy_log(HY_INFO, COMP, "listen client connected", "client", c->name, "handshake",
           hy_listen_handshake_str(c->mode), "peer", c->peer[0] ? c->peer : "local", c->tls.ssl ? "subject" : NULL,
           c->tls.peer, NULL);
    hy_bus_add_client(c->ls->bus, &c->member);
}

/* Its first bytes are told apart: frames from now on, read as flow.c says. */
static void set_ready(hy_client *c)
{
    c->ready = true;
    ev_timer_stop(c->ls->loop, &c->timer);
    hy_flow_set_always(c->ls->flow, &c->src, false);
}

static void refuse(hy_client *c, hy_hs_verdict v)
{
    hy_listen *ls = c->ls;
    char got[2 * HY_DIGEST_LEN + 1] = "";
    for (size_t i = 2; i < c->hs_len; i++)
        snprintf(got + 2 * (i - 2), 3, "%02x", c->hs[i]);
    ls->refused++;
    ((hy_listener *)c->listener)->refused_handshake++;
    hy_log(HY_ERROR, COMP, "listen client refused: schema digest mismatch", "client", c->name, "client_schema",
           v == HY_HS_MISMATCH ? got : "(not a Mycelium handshake)", "schema", ls->topo->schema->digest_hex,
           "handshake", hy_listen_handshake_str(c->mode), NULL);
    doom(c, "schema digest mismatch");
}

/* `digest`: the first 34 bytes, checked whole. */
static hy_hs_verdict digest_verdict(const hy_client *c)
{
    if (c->hs_len < HY_HANDSHAKE_LEN)
        return HY_HS_MORE;
    if (hy_le16(c->hs) != 32)
        return HY_HS_GARBAGE;
    return memcmp(c->hs + 2, c->ls->topo->schema->digest, 32) == 0 ? HY_HS_DIGEST : HY_HS_MISMATCH;
}

/* The first bytes of a `digest` or `auto` client, up to 34 kept in c->hs.
 * Returns the bytes of p used up (the rest are frames), or -1 once refused.
 * Told to be frames from byte 0, the bytes kept from earlier reads are fed
 * to the decoder here and p is left whole. */
static long take_first(hy_client *c, const uint8_t *p, size_t n)
{
    hy_listen *ls = c->ls;
    size_t before = c->hs_len;
    size_t take = HY_HANDSHAKE_LEN - c->hs_len < n ? HY_HANDSHAKE_LEN - c->hs_len : n;
    memcpy(c->hs + c->hs_len, p, take);
    c->hs_len += take;
    hy_hs_verdict v = c->mode == HY_LISTEN_HS_AUTO ? hy_listen_hs_classify(ls->topo->schema, c->hs, c->hs_len)
                                                   : digest_verdict(c);
    switch (v) {
    case HY_HS_MORE:
        if (before == 0 && c->mode == HY_LISTEN_HS_AUTO) /* auto: the deadline runs from the first byte */
            ev_timer_start(ls->loop, &c->timer);
        return (long)take;
    case HY_HS_DIGEST:
        set_ready(c);
        if (c->mode == HY_LISTEN_HS_DIGEST)
            join(c);
        else
            hy_log(HY_INFO, COMP, "listen client handshake", "client", c->name, "handshake", "digest", NULL);
        return (long)take;
    case HY_HS_FRAMES:
        set_ready(c);
        hy_log(HY_INFO, COMP, "listen client handshake", "client", c->name, "handshake", "none", NULL);
        if (before) {
            hy_tlv_status st = hy_tlv_feed(&c->dec, c->hs, before, on_frame, c);
            if (st != HY_TLV_OK) { /* 5 bytes or less: never a whole frame, never corrupt */
                doom(c, "out of memory");
                return -1;
            }
        }
        return 0;
    case HY_HS_MISMATCH:
    case HY_HS_GARBAGE:
        break;
    }
    refuse(c, v);
    return -1;
}

static void closed(hy_client *c)
{
    if (hy_tlv_finish(&c->dec) == HY_TLV_PARTIAL)
        doom(c, "closed in the middle of a frame");
    else
        doom(c, c->ready || c->hs_len == 0 ? "closed" : "closed before the handshake");
}

static void wait_tls(hy_client *c)
{
    ev_io_stop(c->ls->loop, &c->tls_w);
    ev_io_set(&c->tls_w, c->fd, c->tls.want);
    ev_io_start(c->ls->loop, &c->tls_w);
}

/* ---- a frame once started ------------------------------------------------ */

static const hy_listen_spec *spec_of(const hy_client *c)
{
    return &c->ls->topo->listen[((const hy_listener *)c->listener)->index];
}

/* Seconds the frame being sent has taken, less the time hyphad held the
 * client back (it cannot finish a frame nobody reads). */
static double frame_age(const hy_client *c)
{
    double held = hy_flow_paused_s(c->ls->flow, &c->src) - c->frame_paused;
    return ev_now(c->ls->loop) - c->frame_at - held;
}

/* After a feed: a frame left half-received starts the deadline (once per
 * frame); none stops it. */
static void watch_frame(hy_client *c)
{
    uint64_t ms = spec_of(c)->frame_timeout_ms;
    if (c->dec.have == 0 || ms == 0) {
        ev_timer_stop(c->ls->loop, &c->frame_w);
        return;
    }
    if (ev_is_active(&c->frame_w) && c->frame_mark == c->dec.frames)
        return;
    c->frame_at = ev_now(c->ls->loop);
    c->frame_paused = hy_flow_paused_s(c->ls->flow, &c->src);
    c->frame_mark = c->dec.frames;
    ev_timer_stop(c->ls->loop, &c->frame_w);
    ev_timer_set(&c->frame_w, (double)ms / 1000.0, 0.0);
    ev_timer_start(c->ls->loop, &c->frame_w);
}

static void frame_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    hy_client *c = w->data;
    double left = (double)spec_of(c)->frame_timeout_ms / 1000.0 - frame_age(c);
    if (c->doomed)
        return;
    if (left > 0.0005) { /* held back meanwhile: the time left */
        ev_timer_set(w, left, 0.0);
        ev_timer_start(loop, w);
        return;
    }
    hy_listener *l = (hy_listener *)c->listener;
    char t[24], why[128];
    l->frame_timeouts++;
    hy_format_duration(spec_of(c)->frame_timeout_ms, t, sizeof t);
    snprintf(why, sizeof why, "a frame not whole within listen.frame_timeout (%s): %zu of %zu bytes", t,
             c->dec.have, c->dec.have >= HY_TLV_HEADER ? HY_TLV_HEADER + (size_t)hy_le32(c->dec.buf + 2) : 0);
    doom(c, why);
}

/* A frame over max_frame (or a length no frame has): the stream is unusable. */
static void too_long(hy_client *c)
{
    char why[128];
    ((hy_listener *)c->listener)->too_long++;
    snprintf(why, sizeof why, "a frame of %u bytes, over listen.max_frame (%u)", (unsigned)c->dec.bad_len,
             (unsigned)spec_of(c)->max_frame);
    doom(c, why);
}

/* 1: go on reading; 0: stop. */
static int read_once(hy_client *c)
{
    uint8_t *buf;
    size_t cap;
    ssize_t n = hy_bus_read(c->ls->bus, c->fd, c->tls.ssl ? &c->tls : NULL, &buf, &cap);
    if (n < 0) {
        if (errno == EAGAIN && c->tls.ssl && c->tls.want == EV_WRITE)
            wait_tls(c); /* OpenSSL must write before it reads on */
        else if (errno != EAGAIN && errno != ENOMEM)
            doom(c, c->tls.ssl && errno == EPROTO ? c->tls.reason : strerror(errno));
        return 0;
    }
    if (n == 0) {
        closed(c);
        return 0;
    }
    const uint8_t *p = buf;
    size_t len = (size_t)n;
    if (!c->ready) {
        long used = take_first(c, p, len);
        if (used < 0)
            return 0;
        p += used;
        len -= (size_t)used;
    }
    hy_tlv_status st = len ? hy_tlv_feed(&c->dec, p, len, on_frame, c) : HY_TLV_OK;
    if (st == HY_TLV_CORRUPT) {
        too_long(c);
        return 0;
    }
    if (st == HY_TLV_NOMEM) {
        doom(c, "out of memory");
        return 0;
    }
    watch_frame(c);
    return (size_t)n == cap || (len == 0 && !c->doomed) || hy_tls_pending(&c->tls);
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    hy_client *c = w->data;
    for (int rounds = 0; rounds < READ_ROUNDS && !c->doomed && hy_flow_may_read(c->ls->flow, &c->src); rounds++)
        if (!read_once(c))
            return;
    if (!c->doomed && hy_tls_pending(&c->tls))
        ev_feed_event(loop, w, EV_READ); /* decrypted and waiting: no fd event will come for it */
}

static bool tls_buffered(const hy_source *s)
{
    const hy_client *c = (const hy_client *)((const char *)s - offsetof(hy_client, src));
    return hy_tls_pending(&c->tls);
}

/* Past TLS (if any): the endpoint's own handshake rules, then frames. */
static void client_begin(hy_client *c)
{
    hy_listen *ls = c->ls;
    if (c->tls.ssl)
        c->sink.tls = &c->tls;
    if (c->mode == HY_LISTEN_HS_NONE) {
        c->ready = true;
    } else {
        c->src.always = true; /* the first bytes are always read */
        if (c->mode == HY_LISTEN_HS_DIGEST) {
            ev_timer_set(&c->timer, HANDSHAKE_TIMEOUT_S, 0.0);
            ev_timer_start(ls->loop, &c->timer);
        }
    }
    /* `auto` and `none` serve a client that never sends a byte: on the bus now */
    if (c->mode != HY_LISTEN_HS_DIGEST)
        join(c);
    hy_flow_open(ls->flow, &c->src, true);
}

/* ---- TLS: the client verified before a byte of it is read ------------------ */

static void tls_refused(hy_client *c, hy_tls_fail why, const char *reason)
{
    hy_listener *l = (hy_listener *)c->listener;
    uint64_t n = ++l->tls_fail[why];
    c->ls->refused++;
    if (hy_log_mark(n - 1, n))
        hy_log(HY_WARN, COMP, "listen client refused: TLS handshake failed", "client", c->name, "peer", c->peer,
               "why", hy_tls_fail_str(why), "error", reason, "total", HY_U64(n), NULL);
    char msg[sizeof c->why];
    snprintf(msg, sizeof msg, "TLS handshake failed: %s", reason);
    doom(c, msg);
}

static void tls_step(hy_client *c)
{
    int r = hy_tls_handshake(&c->tls);
    if (r < 0) {
        tls_refused(c, c->tls.fail, c->tls.reason);
    } else if (r == 0) {
        wait_tls(c);
    } else {
        ev_io_stop(c->ls->loop, &c->tls_w);
        ev_timer_stop(c->ls->loop, &c->timer);
        client_begin(c);
    }
}

static void tls_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    hy_client *c = w->data;
    if (c->doomed)
        return;
    if (!c->tls.open) {
        tls_step(c);
        return;
    }
    ev_io_stop(loop, w); /* a read that had to write first goes on */
    read_cb(loop, &c->rw, EV_READ);
}

static void start_tls(hy_client *c, const hy_tls_ctx *ctx)
{
    hy_err e;
    if (hy_tls_start(&c->tls, ctx, c->fd, NULL, &e) < 0) {
        tls_refused(c, HY_TLS_FAIL_OTHER, e.msg);
        return;
    }
    ev_timer_set(&c->timer, (double)spec_of(c)->tls->handshake_timeout_ms / 1000.0, 0.0);
    ev_timer_start(c->ls->loop, &c->timer);
    tls_step(c);
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
    if (c->tls.ssl && !c->tls.open) {
        tls_refused(c, HY_TLS_FAIL_TIMEOUT, "no TLS handshake within listen.tls.handshake_timeout");
        return;
    }
    c->ls->refused++;
    ((hy_listener *)c->listener)->refused_handshake++;
    hy_log(HY_ERROR, COMP, "listen client refused: no handshake within 5s", "client", c->name, "bytes",
           HY_U64(c->hs_len), "handshake", hy_listen_handshake_str(c->mode), NULL);
    doom(c, "no handshake within 5s");
}

static void sink_error(hy_sink *s, int err, const char *why)
{
    hy_client *c = s->owner;
    if (why) {
        c->ls->slow++;
        ((hy_listener *)c->listener)->slow++;
    }
    doom(c, why ? why : strerror(err));
}

size_t hy_listen_fd_reserve(const hy_topology *t)
{
    size_t n = HY_LISTEN_FD_BASE;
    for (size_t i = 0; i < t->nworkers; i++)
        n += HY_LISTEN_FD_PER_INSTANCE * t->workers[i].instances;
    return n;
}

/* fds open now: /proc/self/fd, less the one reading it. Without /proc, the
 * fd just accepted (the lowest free one) is all that is known: fds 0..fd
 * are open. */
static size_t fds_in_use(int fd)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return errno == EMFILE || errno == ENFILE ? SIZE_MAX : (size_t)fd + 1;
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n ? n - 1 : 0;
}

/* The new client `fd` leaves the reserve free: in use + reserve <= limit. */
static bool fds_to_spare(const hy_listen *ls, int fd, size_t *in_use, size_t *limit)
{
    struct rlimit rl;
    *in_use = *limit = 0;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
        return true;
    *limit = (size_t)rl.rlim_cur;
    *in_use = fds_in_use(fd);
    return *in_use != SIZE_MAX && *in_use + hy_listen_fd_reserve(ls->topo) <= *limit;
}

/* Closed at once, counted, logged at the 1st, 10th, 100th ... of its kind. */
static void refuse_at_accept(hy_listener *l, int fd, uint64_t *count, const char *why, size_t in_use, size_t limit)
{
    hy_listen *ls = l->ls;
    close(fd);
    ls->refused++;
    uint64_t before = (*count)++;
    if (hy_log_mark(before, *count))
        hy_log(HY_WARN, COMP, "listen client refused", "endpoint", l->name, "why", why, "max_clients",
               HY_U64(ls->topo->listen[l->index].max_clients), "fds_in_use", HY_U64(in_use), "fd_limit",
               HY_U64(limit), "fd_reserve", HY_U64(hy_listen_fd_reserve(ls->topo)), "total", HY_U64(*count), NULL);
}

/* Who connected, for the log: a TCP peer's address and port. */
static void peer_name(int fd, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "";
    out[0] = '\0';
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
        return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, len, "%s:%u", host, (unsigned)ntohs(in->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, len, "[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
    }
}

/* A client on fd, counted, its watchers ready, nothing read yet. NULL
 * (fd closed, logged) when out of memory. */
static hy_client *client_new(hy_listener *l, int fd)
{
    hy_listen *ls = l->ls;
    const hy_listen_spec *spec = &ls->topo->listen[l->index];
    hy_client *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        hy_log(HY_ERROR, COMP, "out of memory for a listen client: refused", "endpoint", l->name, NULL);
        return NULL;
    }
    c->ls = ls;
    c->listener = l;
    c->fd = fd;
    c->mode = spec->handshake;
    snprintf(c->name, sizeof c->name, "%s#%" PRIu64, l->name, ++ls->next_id);
    peer_name(fd, c->peer, sizeof c->peer);
    hy_drops_init(&c->drops, COMP, "from", c->name, NULL, NULL);
    c->origin = (hy_origin){c->name, &c->drops};
    c->member.sink = &c->sink;
    hy_tlv_decoder_init(&c->dec, spec->max_frame);
    hy_sink_init(&c->sink, &ls->bus->sinks, ls->flow, HY_SINK_CLIENT, ls->topo->defaults.queue_limit,
                 HY_OVERFLOW_BLOCK, &c->drops);
    hy_sink_set_fd(&c->sink, fd, true);
    c->sink.on_error = sink_error;
    c->sink.owner = c;
    ev_io_init(&c->rw, read_cb, fd, EV_READ);
    ev_timer_init(&c->timer, timer_cb, HANDSHAKE_TIMEOUT_S, 0.0);
    ev_init(&c->frame_w, frame_cb);
    c->rw.data = c->timer.data = c->frame_w.data = c;
    c->next = ls->clients;
    ls->clients = c;
    ls->nclients++;
    ls->accepted++;
    l->nclients++;
    l->accepted++;
    hy_flow_add(ls->flow, &c->src, &c->rw, HY_SRC_CLIENT);
    c->src.buffered = tls_buffered;
    ev_io_init(&c->tls_w, tls_cb, fd, EV_READ);
    c->tls_w.data = c;
    return c;
}

static void on_accept(hy_acceptor *a, int fd)
{
    hy_listener *l = a->data;
    hy_listen *ls = l->ls;
    const hy_listen_spec *spec = &ls->topo->listen[l->index];
    size_t in_use, limit;
    if (l->nclients >= spec->max_clients) {
        refuse_at_accept(l, fd, &l->refused_full, "max_clients reached", 0, 0);
        return;
    }
    if (!fds_to_spare(ls, fd, &in_use, &limit)) {
        refuse_at_accept(l, fd, &l->refused_fds, "too few fds left: they are kept for the workers", in_use, limit);
        return;
    }
    hy_client *c = client_new(l, fd);
    if (!c)
        return;
    if (l->tls_ctx)
        start_tls(c, l->tls_ctx);
    else
        client_begin(c);
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
        l->index = i;
        hy_endpoint_str(&t->listen[i].ep, l->name, sizeof l->name);
        if (t->listen[i].tls && !(l->tls_ctx = hy_tls_ctx_new(t->listen[i].tls, true, err)))
            return -1;
        if (hy_acceptor_open(&l->acc, loop, &t->listen[i].ep, "listen", COMP, err) < 0) {
            hy_tls_ctx_free(l->tls_ctx);
            return -1;
        }
        ls->n++;
        l->acc.on_accept = on_accept;
        l->acc.data = l;
        l->acc.pause_s = ACCEPT_PAUSE_S;
    }
    return 0;
}

/* ---- an upgrade: clients carried across --------------------------------- */

int hy_listen_save(const hy_listen *ls, hy_ustate *u, size_t *left)
{
    json_t *list = json_array();
    *left = 0;
    if (!list || json_object_set_new(u->root, "listen_clients", list) < 0)
        return -1;
    for (const hy_client *c = ls->clients; c; c = c->next) {
        if (!c->ready || c->doomed || c->tls.ssl) { /* mid-handshake, or TLS state: it reconnects */
            (*left)++;
            continue;
        }
        json_t *q;
        uint8_t *p = hy_ustate_reserve(u, hy_fanq_save(&c->sink.q, NULL), &q);
        if (!p)
            return -1;
        hy_fanq_save(&c->sink.q, p);
        json_t *o = json_pack("{s:I,s:s,s:o,s:s,s:s,s:I,s:I,s:o,s:I,s:o,s:I,s:I}", "listener", (json_int_t)c->listener->index,
                              "endpoint", c->listener->name, "fd", hy_ustate_fd(u, c->fd), "name", c->name, "peer",
                              c->peer, "frames_in", (json_int_t)c->frames_in, "bytes_in", (json_int_t)c->bytes_in,
                              "queue", q, "sent", (json_int_t)c->sink.q.sent, "dec",
                              hy_ustate_bytes(u, hy_tlv_pending_bytes(&c->dec), hy_tlv_pending(&c->dec)),
                              "frames_out", (json_int_t)c->sink.frames, "bytes_out", (json_int_t)c->sink.bytes);
        if (!o || json_array_append_new(list, o) < 0)
            return -1;
    }
    return 0;
}

static int no_frame(void *ud, const hy_frame *f)
{
    (void)ud;
    (void)f;
    return 1;
}

static int adopt_client(hy_listen *ls, const hy_ustate *u, const json_t *o)
{
    size_t i = (size_t)json_integer_value(json_object_get(o, "listener")), nq, nd;
    int fd = hy_ustate_getfd(json_object_get(o, "fd"));
    if (i >= ls->n || fd < 0 || strcmp(ls->l[i].name, json_string_value(json_object_get(o, "endpoint")) ?: ""))
        return -1;
    hy_client *c = client_new(&ls->l[i], fd);
    const uint8_t *q = hy_ustate_get(u, json_object_get(o, "queue"), &nq);
    const uint8_t *d = hy_ustate_get(u, json_object_get(o, "dec"), &nd);
    if (!c || !q || !d || hy_fanq_restore(&c->sink.q, q, nq, (size_t)json_integer_value(json_object_get(o, "sent")), 0) < 0 ||
        (nd && hy_tlv_feed(&c->dec, d, nd, no_frame, c) != HY_TLV_OK))
        return -1;
    snprintf(c->name, sizeof c->name, "%s", json_string_value(json_object_get(o, "name")) ?: c->name);
    snprintf(c->peer, sizeof c->peer, "%s", json_string_value(json_object_get(o, "peer")) ?: "");
    c->frames_in = (uint64_t)json_integer_value(json_object_get(o, "frames_in"));
    c->bytes_in = (uint64_t)json_integer_value(json_object_get(o, "bytes_in"));
    c->sink.frames = (uint64_t)json_integer_value(json_object_get(o, "frames_out"));
    c->sink.bytes = (uint64_t)json_integer_value(json_object_get(o, "bytes_out"));
    c->ready = true;
    hy_bus_add_client(ls->bus, &c->member);
    hy_flow_open(ls->flow, &c->src, true);
    hy_sink_recheck(&c->sink);
    return 0;
}

int hy_listen_start(hy_listen *ls)
{
    const hy_ustate *u = hy_upgrade_restoring();
    size_t k;
    json_t *o;
    json_array_foreach(u ? json_object_get(u->root, "listen_clients") : NULL, k, o)
    {
        if (adopt_client(ls, u, o) < 0)
            return -1;
    }
    for (size_t i = 0; i < ls->n; i++) {
        hy_acceptor_start(&ls->l[i].acc);
        hy_log(HY_INFO, COMP, "listening", "endpoint", ls->l[i].name, "clients", HY_U64(ls->l[i].nclients), NULL);
    }
    return 0;
}

size_t hy_listen_clients(const hy_listen *ls, size_t i) { return ls->l[i].nclients; }

void hy_listen_retopo(hy_listen *ls, const hy_topology *t)
{
    ls->topo = t;
    for (size_t i = 0; i < ls->n; i++) {
        hy_listener *l = &ls->l[i];
        hy_err e;
        hy_tls_ctx *c = t->listen[i].tls ? hy_tls_ctx_new(t->listen[i].tls, true, &e) : NULL;
        if (t->listen[i].tls && !c) {
            hy_log(HY_ERROR, COMP, "listen TLS files could not be read again: the old ones stay", "endpoint",
                   l->name, "error", e.msg, NULL);
            continue;
        }
        hy_tls_ctx_free(l->tls_ctx); /* its clients hold their own reference */
        l->tls_ctx = c;
    }
}

void hy_listen_free(hy_listen *ls)
{
    while (ls->clients) {
        hy_client *c = ls->clients;
        ls->clients = c->next;
        client_free(c);
    }
    for (size_t i = 0; i < ls->n; i++) {
        hy_acceptor_close(&ls->l[i].acc);
        hy_tls_ctx_free(ls->l[i].tls_ctx);
    }
    free(ls->l);
    ls->l = NULL;
    ls->n = 0;
}
