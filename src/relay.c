/* relay.c - the data plane's parts wired together (see hypha/relay.h). */
#include "hypha/relay.h"

#include <stdlib.h>
#include <string.h>

#include "hypha/log.h"
#include "hypha/upgrade.h"

int hy_relay_init(hy_relay *r, struct ev_loop *loop, const hy_topology *t, uint64_t *rng, hy_err *err)
{
    memset(r, 0, sizeof *r);
    r->topo = t;
    hy_flow_init(&r->flow, loop, !t->has_upstream || !t->upstream_echo);
    if (hy_bus_init(&r->bus, loop, t->has_upstream, r->flow.local_feed) < 0)
        return hy_err_set(err, "out of memory");
    if (t->has_upstream && hy_upstream_init(&r->up, loop, t, &r->bus, &r->flow, rng, err) < 0)
        return -1;
    return hy_listen_init(&r->listen, loop, t, &r->bus, &r->flow, err);
}

int hy_relay_start(hy_relay *r, hy_err *err)
{
    const hy_ustate *st = hy_upgrade_restoring();
    if (st && !r->topo->has_upstream && json_object_get(st->root, "upstream"))
        return hy_err_set(err, "the topology on disk has no upstream, the running one has: reload first");
    hy_bus_start(&r->bus);
    if (hy_listen_start(&r->listen) < 0)
        return hy_err_set(err, "the listen clients' state could not be adopted (other endpoints in the topology?)");
    if (r->topo->has_upstream && hy_upstream_start(&r->up) < 0)
        return hy_err_set(err, "the upstream's state could not be adopted (another upstream in the topology?)");
    return 0;
}

void hy_relay_free(hy_relay *r)
{
    if (!r->topo)
        return;
    hy_listen_free(&r->listen);
    hy_upstream_free(&r->up);
    hy_bus_free(&r->bus);
    r->topo = NULL;
}

void hy_relay_retopo(hy_relay *r, const hy_topology *t)
{
    r->topo = t;
    if (t->has_upstream)
        hy_upstream_retopo(&r->up, t);
    hy_listen_retopo(&r->listen, t);
}

size_t hy_relay_upstream_pending(const hy_relay *r)
{
    return r->topo->has_upstream ? hy_sink_bytes(&r->up.sink) : 0;
}

bool hy_relay_upstream_connected(const hy_relay *r) { return r->topo->has_upstream && r->up.state == HY_UP_CONNECTED; }

void hy_relay_log_counters(const hy_relay *r)
{
    if (r->topo->has_upstream) {
        const hy_upstream *u = &r->up;
        char dr[256];
        const char *buffered = HY_U64(hy_sink_bytes(&u->sink));
        hy_log(HY_INFO, "relay", "upstream counters", "upstream", u->name, "frames_out", HY_U64(u->sink.frames),
               "frames_taken", HY_U64(u->sink.frames - hy_fanq_untaken_frames(&u->sink.q)), "frames_resent", HY_U64(u->resent), "frames_in",
               HY_U64(u->frames_in), "connects", HY_U64(u->connects), "dropped",
               hy_drops_format(&u->drops, ",", dr, sizeof dr), "buffered_bytes", buffered, NULL);
        if (hy_sink_bytes(&u->sink))
            hy_log(HY_ERROR, "relay", "exiting with frames the bus never received", "upstream", u->name, "state",
                   hy_up_state_str(u->state), "buffered_bytes", buffered, NULL);
    }
    const hy_listen *ls = &r->listen;
    if (ls->n)
        hy_log(HY_INFO, "relay", "listen counters", "accepted", HY_U64(ls->accepted), "refused", HY_U64(ls->refused),
               "too_slow", HY_U64(ls->slow), "connected", HY_U64(ls->nclients), NULL);
    for (size_t i = 0; i < ls->n; i++) {
        const hy_listener *l = &ls->l[i];
        if (l->refused_full || l->refused_fds)
            hy_log(HY_INFO, "relay", "listen refusals", "endpoint", l->name, "handshake",
                   HY_U64(l->refused_handshake), "max_clients", HY_U64(l->refused_full), "fd_reserve",
                   HY_U64(l->refused_fds), NULL);
    }
}

static void tls_view(const hy_tls_ctx *c, const uint64_t *fail, hy_tls_view *v)
{
    v->on = c != NULL;
    v->mutual = c && c->mutual;
    v->cert_subject = c ? c->subject : "";
    v->cert_not_after = c ? c->not_after : 0;
    v->peer_subject = NULL; /* a client's own view: set by the upstream */
    memcpy(v->fail, fail, sizeof v->fail);
}

/* Every client, with its certificate's subject. */
static int clients_view(const hy_listen *ls, size_t i, hy_listen_view *v)
{
    size_t n = hy_listen_clients(ls, i), k = 0;
    if (!(v->who = calloc(n ? n : 1, sizeof *v->who)))
        return -1;
    for (const hy_client *c = ls->clients; c && k < n; c = c->next)
        if (c->listener == &ls->l[i] && !c->doomed)
            v->who[k++] = (hy_client_view){c->name, c->tls.peer};
    v->nwho = k;
    return 0;
}

static void up_view(const hy_upstream *u, double now, hy_up_view *v)
{
    v->name = u->name;
    v->connected = u->state == HY_UP_CONNECTED;
    v->ready = hy_upstream_ready(u);
    v->state = v->connected && u->probation ? "handshake" : hy_up_state_str(u->state);
    v->state_for_s = now - (v->connected ? u->since : u->down_since);
    v->down_for_s = now - u->down_since;
    v->connects = u->connects;
    v->disconnects = u->disconnects;
    v->buffered = hy_sink_bytes(&u->sink);
    v->back_pressure = u->sink.over;
    v->frames_out = u->sink.frames;
    v->bytes_out = u->sink.bytes;
    v->frames_in = u->frames_in;
    v->bytes_in = u->bytes_in;
    v->frames_taken = u->sink.frames - hy_fanq_untaken_frames(&u->sink.q);
    v->frames_resent = u->resent;
    v->unconfirmed = hy_fanq_unconfirmed(&u->sink.q);
    v->drops = u->drops;
    tls_view(u->tls_ctx, u->tls_fail, &v->tls);
    v->tls.peer_subject = u->tls_peer;
    v->tls.peer_not_after = u->tls_peer_not_after;
}

int hy_relay_view(const hy_relay *r, double now, hy_up_view *up, hy_listen_view *listen)
{
    memset(up, 0, sizeof *up);
    if (r->topo->has_upstream)
        up_view(&r->up, now, up);
    for (size_t i = 0; i < r->listen.n; i++) {
        const hy_listener *l = &r->listen.l[i];
        const hy_listen_spec *spec = &r->topo->listen[i];
        listen[i] = (hy_listen_view){
            .name = l->name,
            .handshake = hy_listen_handshake_str(spec->handshake),
            .max_clients = spec->max_clients,
            .clients = hy_listen_clients(&r->listen, i),
            .accepted = l->accepted,
            .refused_handshake = l->refused_handshake,
            .refused_full = l->refused_full,
            .refused_fds = l->refused_fds,
            .too_slow = l->slow,
            .frame_timeouts = l->frame_timeouts,
            .too_long = l->too_long,
            .max_frame = spec->max_frame,
            .frame_timeout_ms = spec->frame_timeout_ms,
        };
        tls_view(l->tls_ctx, l->tls_fail, &listen[i].tls);
        if (clients_view(&r->listen, i, &listen[i]) < 0)
            return -1;
    }
    return 0;
}
