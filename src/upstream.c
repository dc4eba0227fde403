/* upstream.c - the bus connection (see hypha/upstream.h). */
#define _GNU_SOURCE
#include "hypha/upstream.h"

#include <errno.h>
#include <stddef.h>
#include <linux/sockios.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hypha/backoff.h"
#include "hypha/log.h"
#include "hypha/upgrade.h"
#include "hypha/route.h"

#define COMP "relay"
#define CONNECT_TIMEOUT_S 5.0
#define PROBATION_S 0.25      /* after the handshake, before the first frame */
#define READ_ROUNDS 16
#define SNDBUF_MAX (4u << 20) /* kernel send buffer asked for the socket */
#define TAKEN_POLL_S 0.01     /* asking what the bus took, while some is not known taken */
#define TAKEN_GAP_S 0.001     /* and after a write, at most this often */

const char *hy_up_state_str(hy_up_state st)
{
    switch (st) {
    case HY_UP_DOWN: return "down";
    case HY_UP_CONNECTING: return "connecting";
    case HY_UP_CONNECTED: return "connected";
    }
    return "?";
}

bool hy_upstream_ready(const hy_upstream *u) { return u->state == HY_UP_CONNECTED && !u->probation; }

static void connect_now(hy_upstream *u)
{
    hy_connector_start(&u->conn, &u->topo->upstream);
    /* A Unix socket nobody serves fails at once (the connector says so at
     * the next loop turn): the bus is down, not being connected to. */
    u->state = u->conn.failed ? HY_UP_DOWN : HY_UP_CONNECTING;
}

static void schedule(hy_upstream *u)
{
    hy_policy p;
    hy_policy_builtin(&p);
    p.backoff_initial_ms = u->topo->reconnect_initial_ms;
    p.backoff_max_ms = u->topo->reconnect_max_ms;
    p.backoff_factor = 2.0;
    p.backoff_jitter = 0.2;
    uint64_t d = hy_backoff_delay_ms(&p, u->failures ? u->failures - 1 : 0, hy_rand_signed(u->rng));
    u->state = HY_UP_DOWN;
    ev_timer_stop(u->loop, &u->timer);
    ev_timer_set(&u->timer, (double)d / 1000.0, 0.0);
    ev_timer_start(u->loop, &u->timer);
}

static void close_fd(hy_upstream *u)
{
    ev_timer_stop(u->loop, &u->taken_w);
    hy_flow_open(u->flow, &u->src, false);
    ev_io_stop(u->loop, &u->ww);
    ev_io_stop(u->loop, &u->tls_w);
    hy_sink_set_fd(&u->sink, -1, true);
    u->sink.tls = NULL;
    hy_tls_end(&u->tls);
    if (u->fd >= 0)
        close(u->fd);
    u->fd = -1;
}

/* What to do about a close right after the handshake. A Mycelium endpoint
 * that reads no handshake takes its 34 bytes for a frame header (type 32, a
 * length from the digest's first bytes), finds it corrupt and closes: just
 * what a digest mismatch looks like from here. Every Mycelium TCP endpoint
 * is of that kind; over Unix only PythonBridgeService reads the digest. */
static const char *suspect_fix(const hy_upstream *u)
{
    if (u->topo->upstream.kind == HY_EP_TCP)
        return "Mycelium's TCP endpoints (bind_tcp_endpoint, topology.toml endpoints) read no handshake: "
               "set upstream.handshake: none; if the bus is a hyphad listen endpoint, give both the same "
               "contracts file";
    return "if the bus is an endpoint that reads no handshake (Mycelium's bind_unix_endpoint, topology.toml "
           "endpoints), set upstream.handshake: none; if it is PythonBridgeService, give both the same "
           "contracts file";
}

static void log_lost(hy_upstream *u, bool suspect, const char *why, int err, size_t resend)
{
    const char *b = HY_U64(hy_sink_bytes(&u->sink));
    const char *again = HY_U64(resend);
    if (suspect)
        hy_log(HY_ERROR, COMP,
               "upstream closed the connection right after the handshake: a schema digest mismatch (the "
               "bus and hyphad load different contracts files), or the bus stopped",
               "upstream", u->name, "schema", u->topo->schema->digest_hex, "fix", suspect_fix(u),
               "buffered_bytes", b, NULL);
    else
        hy_log(HY_WARN, COMP, "upstream connection lost: reconnecting", "upstream", u->name, "error",
               err ? strerror(err) : why, "buffered_bytes", b, "resend_frames", again, NULL);
}

/* The connection is gone (or never came): keep what is queued, retry. */
static void lost(hy_upstream *u, const char *why, int err)
{
    bool was_up = u->state == HY_UP_CONNECTED;
    close_fd(u);
    ev_timer_stop(u->loop, &u->timer);
    /* What the bus was not known to have taken goes again, whole: a partly
     * written frame never reached it, and the kernel dropped what it held
     * for a bus that died. */
    size_t resend = hy_fanq_rewind(&u->sink.q);
    u->resent += resend;
    if (was_up) {
        /* A Mycelium bus closes on a bad digest right after the handshake,
         * during the probation. A close after it is an ordinary loss. */
        bool suspect = u->probation;
        u->disconnects++;
        u->probation = false;
        u->failures = suspect ? u->failures + 1 : 1;
        if (!suspect)
            u->down_since = ev_now(u->loop);
        log_lost(u, suspect, why, err, resend);
    } else {
        u->failures++;
        if (hy_log_mark(u->failures - 1, u->failures))
            hy_log(HY_WARN, COMP, "upstream unreachable: retrying", "upstream", u->name, "error",
                   err ? strerror(err) : why, "attempts", HY_U64(u->failures), "buffered_bytes",
                   HY_U64(hy_sink_bytes(&u->sink)), NULL);
    }
    schedule(u);
}

/* ---- connected: handshake, probation, frames ---------------------------- */

/* ww waits for the socket: to write the handshake, or (TLS) to read again
 * once OpenSSL could write what a read needed. */
static void wait_ww(hy_upstream *u, int events)
{
    ev_io_stop(u->loop, &u->ww);
    ev_io_set(&u->ww, u->fd, events);
    ev_io_start(u->loop, &u->ww);
}

/* 0: sent (or waiting for the socket); -1: the socket failed. */
static int send_handshake(hy_upstream *u)
{
    while (u->hs_sent < HY_HANDSHAKE_LEN) {
        const uint8_t *p = u->hs + u->hs_sent;
        size_t left = HY_HANDSHAKE_LEN - u->hs_sent;
        ssize_t n = u->tls.ssl ? hy_tls_write(&u->tls, p, left) : send(u->fd, p, left, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            wait_ww(u, u->tls.ssl ? u->tls.want : EV_WRITE);
            return 0;
        }
        if (n < 0)
            return -1;
        u->hs_sent += (size_t)n;
    }
    ev_io_stop(u->loop, &u->ww);
    return 0;
}

/* ---- what the bus took ---------------------------------------------------- */

/* The peer shut its side or is gone: from then on the kernel may have freed
 * what it held for it, and SIOCOUTQ reads as if the bus had taken it. */
static bool peer_gone(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) != 0; /* an event, or poll failed: not to be trusted */
}

/* SIOCOUTQ is what the socket still holds: on a Unix socket, what the bus
 * process has not read; on TCP, what the bus host has not acknowledged. The
 * frames before it are let go. An answer is trusted only if the peer was
 * still there after it was given. */
static void ask_taken(hy_upstream *u)
{
    const hy_fanq *q = &u->sink.q;
    int unread = 0;
    if (u->fd < 0 || u->sink.fd < 0)
        return;
    u->asked_at = ev_now(u->loop);
    if (ioctl(u->fd, SIOCOUTQ, &unread) < 0 || unread < 0) {
        if (!u->taken_unknown)
            hy_log(HY_WARN, COMP, "cannot ask the kernel what the bus took (SIOCOUTQ): frames count as taken once written",
                   "upstream", u->name, "error", strerror(errno), NULL);
        u->taken_unknown = true;
        unread = 0;
    } else if (u->tls.ssl) {
        unread = (int)hy_tls_plain_unread(&u->tls, (uint64_t)unread); /* the socket's bytes are TLS records */
    }
    if ((size_t)unread < q->sent && q->sent - (size_t)unread > q->acked && peer_gone(u->fd))
        return;
    hy_sink_taken(&u->sink, (size_t)unread);
    if (hy_fanq_unconfirmed(q) == 0)
        ev_timer_stop(u->loop, &u->taken_w);
    else if (!ev_is_active(&u->taken_w))
        ev_timer_again(u->loop, &u->taken_w);
}

static void taken_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    ask_taken(w->data);
}

/* After a write: asked at most every TAKEN_GAP_S (two syscalls), the timer
 * asking meanwhile. */
static void sink_written(hy_sink *s)
{
    hy_upstream *u = s->owner;
    if (ev_now(u->loop) - u->asked_at >= TAKEN_GAP_S)
        ask_taken(u);
    else if (!ev_is_active(&u->taken_w))
        ev_timer_again(u->loop, &u->taken_w);
}

/* From here the queue is written to the bus. */
static void end_probation(hy_upstream *u)
{
    u->probation = false;
    ev_timer_stop(u->loop, &u->timer);
    hy_sink_set_fd(&u->sink, u->fd, true);
    u->sink.tls = u->tls.ssl ? &u->tls : NULL;
    hy_sink_flush(&u->sink);
}

static void on_connected(hy_upstream *u, int fd)
{
    /* A deep kernel buffer lets one socket keep up with many workers. FORCE
     * needs CAP_NET_ADMIN; otherwise the kernel caps it at net.core.wmem_max. */
    int want = (int)(u->topo->upstream_buffer < SNDBUF_MAX ? u->topo->upstream_buffer : SNDBUF_MAX);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &want, sizeof want) < 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
    bool digest = u->topo->upstream_handshake == HY_UP_HANDSHAKE_DIGEST;
    u->fd = fd;
    u->state = HY_UP_CONNECTED;
    u->since = ev_now(u->loop);
    u->connects++;
    u->hs_sent = 0;
    u->taken_unknown = false;
    hy_tlv_decoder_reset(&u->dec);
    hy_log(HY_INFO, COMP, "upstream connected", "upstream", u->name, "handshake",
           hy_up_handshake_str(u->topo->upstream_handshake), "failed_attempts", HY_U64(u->failures),
           "buffered_bytes", HY_U64(hy_sink_bytes(&u->sink)), NULL);
    ev_io_set(&u->rw, fd, EV_READ);
    ev_io_set(&u->ww, fd, EV_WRITE);
    hy_flow_open(u->flow, &u->src, true);
    if (!digest) {
        /* frames from byte 0: nothing to send first, no refusal to wait for */
        end_probation(u);
        return;
    }
    u->probation = true;
    ev_timer_set(&u->timer, PROBATION_S, 0.0);
    ev_timer_start(u->loop, &u->timer);
    if (send_handshake(u) < 0)
        lost(u, "write failed", errno);
}

/* ---- TLS: the server verified before anything is written ------------------ */

static const char *tls_fix(hy_tls_fail f)
{
    switch (f) {
    case HY_TLS_FAIL_UNTRUSTED:
        return "the server's certificate is not signed by upstream.tls.ca (without ca: by the system store): give "
               "the CA that signs it";
    case HY_TLS_FAIL_HOST_NAME:
        return "the server's certificate is not for this name: set upstream.tls.server_name to a name it carries";
    case HY_TLS_FAIL_EXPIRED: return "the server's certificate has expired: renew it";
    case HY_TLS_FAIL_NOT_YET_VALID: return "the server's certificate is not valid yet: check both clocks";
    case HY_TLS_FAIL_NO_CERTIFICATE: return "the server wants a client certificate: give upstream.tls.cert and key";
    case HY_TLS_FAIL_NOT_TLS:
    case HY_TLS_FAIL_TIMEOUT:
        return "the server does not speak TLS there: point upstream.tcp at its TLS port (stunnel's accept), or "
               "remove upstream.tls";
    default: return "see the error";
    }
}

static void tls_failed(hy_upstream *u, hy_tls_fail why, const char *reason)
{
    uint64_t n = ++u->tls_fail[why];
    if (hy_log_mark(n - 1, n))
        hy_log(HY_ERROR, COMP, "upstream TLS handshake failed", "upstream", u->name, "why", hy_tls_fail_str(why),
               "error", reason, "fix", tls_fix(why), "total", HY_U64(n), NULL);
    lost(u, "TLS handshake failed", 0);
}

static void tls_step(hy_upstream *u)
{
    int r = hy_tls_handshake(&u->tls);
    if (r < 0) {
        tls_failed(u, u->tls.fail, u->tls.reason);
        return;
    }
    if (r == 0) {
        ev_io_stop(u->loop, &u->tls_w);
        ev_io_set(&u->tls_w, u->fd, u->tls.want);
        ev_io_start(u->loop, &u->tls_w);
        return;
    }
    ev_io_stop(u->loop, &u->tls_w);
    ev_timer_stop(u->loop, &u->timer);
    snprintf(u->tls_peer, sizeof u->tls_peer, "%s", u->tls.peer);
    u->tls_peer_not_after = u->tls.peer_not_after;
    hy_log(HY_INFO, COMP, "upstream TLS established", "upstream", u->name, "server", u->tls.peer, "protocol",
           hy_tls_version(&u->tls), NULL);
    on_connected(u, u->fd);
}

static void tls_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    tls_step(w->data);
}

static void start_tls(hy_upstream *u, int fd)
{
    const char *name = u->topo->upstream_tls->server_name ? u->topo->upstream_tls->server_name
                                                           : u->topo->upstream.host;
    hy_err e;
    u->fd = fd; /* closed by lost() if the handshake fails */
    if (hy_tls_start(&u->tls, u->tls_ctx, fd, name, &e) < 0) {
        tls_failed(u, HY_TLS_FAIL_OTHER, e.msg);
        return;
    }
    ev_timer_stop(u->loop, &u->timer);
    ev_timer_set(&u->timer, (double)u->topo->upstream_tls->handshake_timeout_ms / 1000.0, 0.0);
    ev_timer_start(u->loop, &u->timer);
    tls_step(u);
}

static void connect_done(hy_connector *c, int fd, int err, const char *reason)
{
    hy_upstream *u = c->data;
    if (fd < 0)
        lost(u, reason, c->lookup_failed ? 0 : err); /* the lookup's own message says more than its errno */
    else if (u->tls_ctx)
        start_tls(u, fd);
    else
        on_connected(u, fd);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_upstream *u = w->data;
    if (u->state == HY_UP_CONNECTED && u->probation)
        end_probation(u); /* still open: the bus took the handshake */
    else if (u->state == HY_UP_DOWN)
        connect_now(u);
    else if (u->state == HY_UP_CONNECTING && u->tls.ssl && !u->tls.open)
        tls_failed(u, HY_TLS_FAIL_TIMEOUT, "no TLS handshake within upstream.tls.handshake_timeout");
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents);

/* The socket can take more: the rest of the digest handshake, or (TLS) a
 * read that had to write first goes on. */
static void ww_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    hy_upstream *u = w->data;
    if (u->topo->upstream_handshake == HY_UP_HANDSHAKE_DIGEST && u->hs_sent < HY_HANDSHAKE_LEN) {
        if (send_handshake(u) < 0)
            lost(u, "write failed", errno);
        return;
    }
    ev_io_stop(loop, w);
    read_cb(loop, &u->rw, EV_READ);
}

static void sink_error(hy_sink *s, int err, const char *why)
{
    (void)why;
    lost(s->owner, "write failed", err);
}

/* Past upstream.buffer: workers and clients wait until it drains. */
static void sink_over(hy_sink *s, bool over)
{
    hy_upstream *u = s->owner;
    const char *b = HY_U64(hy_sink_bytes(s));
    if (over)
        hy_log(HY_WARN, COMP, "upstream buffer full: pausing workers until it drains", "state",
               hy_up_state_str(u->state), "buffered_bytes", b, NULL);
    else
        hy_log(HY_INFO, COMP, "upstream buffer drained: workers resume", "buffered_bytes", b, NULL);
    hy_flow_up_full(u->flow, over);
}

static int on_frame(void *ud, const hy_frame *f)
{
    hy_upstream *u = ud;
    if (!hy_route_check_in(u->topo->schema, f, &u->drops))
        return 0;
    u->frames_in++;
    u->bytes_in += f->len;
    hy_bus_publish(u->bus, &u->origin, f->payload - HY_TLV_HEADER, HY_TLV_HEADER + f->len, f->type, false);
    return 0;
}

/* 1: go on reading; 0: stop (would block, or the connection is gone). */
static int read_once(hy_upstream *u)
{
    uint8_t *buf;
    size_t cap;
    ssize_t n = hy_bus_read(u->bus, u->fd, u->tls.ssl ? &u->tls : NULL, &buf, &cap);
    if (n < 0) {
        if (errno == EAGAIN && u->tls.ssl && u->tls.want == EV_WRITE)
            wait_ww(u, EV_WRITE); /* OpenSSL must write before it reads on */
        else if (errno != EAGAIN && errno != ENOMEM)
            lost(u, u->tls.ssl && errno == EPROTO ? u->tls.reason : "read failed", errno == EPROTO ? 0 : errno);
        return 0;
    }
    if (n == 0) {
        lost(u, "closed by the bus", 0);
        return 0;
    }
    if (u->probation) /* it talks to us: it took the handshake */
        end_probation(u);
    hy_tlv_status st = hy_tlv_feed(&u->dec, buf, (size_t)n, on_frame, u);
    if (st == HY_TLV_CORRUPT || st == HY_TLV_NOMEM) {
        char why[96];
        snprintf(why, sizeof why, "corrupt stream from the bus (frame length %u)", (unsigned)u->dec.bad_len);
        lost(u, st == HY_TLV_NOMEM ? "out of memory assembling a frame" : why, 0);
        return 0;
    }
    return (size_t)n == cap || hy_tls_pending(&u->tls);
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    hy_upstream *u = w->data;
    for (int rounds = 0; rounds < READ_ROUNDS && hy_flow_may_read(u->flow, &u->src); rounds++)
        if (!read_once(u))
            return;
    if (u->fd >= 0 && hy_tls_pending(&u->tls))
        ev_feed_event(loop, w, EV_READ); /* decrypted and waiting: no fd event will come for it */
}

static bool tls_buffered(const hy_source *s)
{
    const hy_upstream *u = (const hy_upstream *)((const char *)s - offsetof(hy_upstream, src));
    return hy_tls_pending(&u->tls);
}

int hy_upstream_init(hy_upstream *u, struct ev_loop *loop, const hy_topology *t, hy_bus *bus, hy_flow *flow,
                     uint64_t *rng, hy_err *err)
{
    memset(u, 0, sizeof *u);
    if (t->upstream_tls && !(u->tls_ctx = hy_tls_ctx_new(t->upstream_tls, false, err)))
        return -1;
    u->loop = loop;
    u->topo = t;
    u->bus = bus;
    u->flow = flow;
    u->rng = rng;
    u->fd = -1;
    hy_endpoint_str(&t->upstream, u->name, sizeof u->name);
    hy_drops_init(&u->drops, COMP, "from", u->name, NULL, NULL);
    u->origin = (hy_origin){u->name, &u->drops};
    hy_tlv_decoder_init(&u->dec, 0);
    hy_sink_init(&u->sink, &bus->sinks, flow, HY_SINK_UPSTREAM, t->upstream_buffer, HY_OVERFLOW_BLOCK, &u->drops);
    u->sink.on_error = sink_error;
    u->sink.on_over = sink_over;
    u->sink.on_written = sink_written;
    u->sink.q.keep = true;
    u->sink.owner = u;
    u->hs[0] = 32;
    u->hs[1] = 0;
    memcpy(u->hs + 2, t->schema->digest, 32);
    ev_io_init(&u->rw, read_cb, -1, EV_READ);
    ev_io_init(&u->ww, ww_cb, -1, EV_WRITE);
    ev_io_init(&u->tls_w, tls_cb, -1, EV_READ);
    ev_init(&u->timer, timer_cb);
    ev_init(&u->taken_w, taken_cb);
    u->taken_w.repeat = TAKEN_POLL_S;
    u->rw.data = u->ww.data = u->timer.data = u->taken_w.data = u->tls_w.data = u;
    hy_flow_add(flow, &u->src, &u->rw, HY_SRC_UPSTREAM);
    u->src.buffered = tls_buffered;
    hy_connector_init(&u->conn, loop, CONNECT_TIMEOUT_S, connect_done, u);
    u->down_since = ev_now(loop);
    bus->up = &u->sink;
    return 0;
}

/* ---- an upgrade: the same connection, adopted ------------------------------ */

int hy_upstream_save(const hy_upstream *u, hy_ustate *st)
{
    json_t *ref;
    size_t n = hy_fanq_save(&u->sink.q, NULL);
    uint8_t *p = hy_ustate_reserve(st, n, &ref);
    if (!p)
        return -1;
    hy_fanq_save(&u->sink.q, p);
    /* A plain connection past its handshake goes across; TLS state cannot
     * (the new hyphad connects again and sends what was not known taken). */
    bool carry = u->state == HY_UP_CONNECTED && !u->probation && !u->tls.ssl && u->fd >= 0;
    json_t *drops = json_array();
    for (int i = 0; i < HY_DROP__COUNT; i++)
        json_array_append_new(drops, json_integer((json_int_t)u->drops.n[i]));
    json_t *o = json_pack("{s:s,s:o,s:I,s:I,s:o,s:o,s:f,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:I,s:I}", "name", u->name, "queue",
                          ref, "sent", (json_int_t)u->sink.q.sent, "acked", (json_int_t)u->sink.q.acked, "fd",
                          carry ? hy_ustate_fd(st, u->fd) : json_null(), "dec",
                          hy_ustate_bytes(st, hy_tlv_pending_bytes(&u->dec), carry ? hy_tlv_pending(&u->dec) : 0),
                          "since", u->since, "down_since", u->down_since, "connects", (json_int_t)u->connects,
                          "disconnects", (json_int_t)u->disconnects, "frames_in", (json_int_t)u->frames_in, "bytes_in",
                          (json_int_t)u->bytes_in, "resent", (json_int_t)u->resent, "failures",
                          (json_int_t)u->failures, "drops", drops, "frames_out", (json_int_t)u->sink.frames,
                          "bytes_out", (json_int_t)u->sink.bytes);
    return o && json_object_set_new(st->root, "upstream", o) == 0 ? 0 : -1;
}

static int no_frame(void *ud, const hy_frame *f)
{
    (void)ud;
    (void)f;
    return 1;
}

/* -1: the state does not fit (the caller goes back to the old hyphad). */
static int adopt(hy_upstream *u, const hy_ustate *st, const json_t *o)
{
    size_t n, ndec;
    const uint8_t *q = hy_ustate_get(st, json_object_get(o, "queue"), &n);
    const uint8_t *dec = hy_ustate_get(st, json_object_get(o, "dec"), &ndec);
    if (!q || !dec || strcmp(json_string_value(json_object_get(o, "name")) ?: "", u->name) != 0 ||
        hy_fanq_restore(&u->sink.q, q, n, (size_t)json_integer_value(json_object_get(o, "sent")),
                        (size_t)json_integer_value(json_object_get(o, "acked"))) < 0)
        return -1;
    u->connects = (uint64_t)json_integer_value(json_object_get(o, "connects"));
    u->disconnects = (uint64_t)json_integer_value(json_object_get(o, "disconnects"));
    u->frames_in = (uint64_t)json_integer_value(json_object_get(o, "frames_in"));
    u->bytes_in = (uint64_t)json_integer_value(json_object_get(o, "bytes_in"));
    u->resent = (uint64_t)json_integer_value(json_object_get(o, "resent"));
    u->failures = (uint32_t)json_integer_value(json_object_get(o, "failures"));
    u->sink.frames = (uint64_t)json_integer_value(json_object_get(o, "frames_out"));
    u->sink.bytes = (uint64_t)json_integer_value(json_object_get(o, "bytes_out"));
    u->down_since = json_number_value(json_object_get(o, "down_since"));
    json_t *d = json_object_get(o, "drops");
    for (int i = 0; i < HY_DROP__COUNT && i < (int)json_array_size(d); i++)
        u->drops.n[i] = (uint64_t)json_integer_value(json_array_get(d, (size_t)i));
    int fd = hy_ustate_getfd(json_object_get(o, "fd"));
    if (fd < 0) { /* connected again, as after a loss: what was not known taken goes again */
        u->resent += hy_fanq_rewind(&u->sink.q);
        hy_sink_recheck(&u->sink);
        connect_now(u);
        return 0;
    }
    if (ndec && hy_tlv_feed(&u->dec, dec, ndec, no_frame, u) != HY_TLV_OK)
        return -1;
    u->fd = fd;
    u->state = HY_UP_CONNECTED;
    u->since = json_number_value(json_object_get(o, "since"));
    ev_io_set(&u->rw, fd, EV_READ);
    ev_io_set(&u->ww, fd, EV_WRITE);
    hy_flow_open(u->flow, &u->src, true);
    hy_sink_set_fd(&u->sink, fd, true);
    hy_sink_recheck(&u->sink);
    if (hy_fanq_unconfirmed(&u->sink.q))
        ev_timer_again(u->loop, &u->taken_w);
    return 0;
}

int hy_upstream_start(hy_upstream *u)
{
    const hy_ustate *st = hy_upgrade_restoring();
    json_t *o = st ? json_object_get(st->root, "upstream") : NULL;
    if (o)
        return adopt(u, st, o);
    connect_now(u);
    return 0;
}

void hy_upstream_retopo(hy_upstream *u, const hy_topology *t)
{
    u->topo = t;
    if (!t->upstream_tls)
        return;
    hy_err e;
    hy_tls_ctx *c = hy_tls_ctx_new(t->upstream_tls, false, &e);
    if (!c) {
        hy_log(HY_ERROR, COMP, "upstream TLS files could not be read again: the old ones stay", "upstream", u->name,
               "error", e.msg, NULL);
        return;
    }
    hy_tls_ctx_free(u->tls_ctx); /* the connection holds its own reference */
    u->tls_ctx = c;
}

void hy_upstream_free(hy_upstream *u)
{
    if (!u->loop)
        return;
    hy_connector_cancel(&u->conn);
    ev_timer_stop(u->loop, &u->timer);
    close_fd(u);
    hy_flow_remove(u->flow, &u->src);
    hy_sink_free(&u->sink);
    hy_tlv_decoder_free(&u->dec);
    hy_tls_ctx_free(u->tls_ctx);
    u->tls_ctx = NULL;
    u->bus->up = NULL;
    u->loop = NULL;
}
