/* health.c - healthy, degraded or unhealthy, and why (see hypha/health.h).
 * Pure: reads a snapshot, changes nothing. */
#include "hypha/health.h"

#include <stdio.h>
#include <string.h>

#include "hypha/units.h"

const char *hy_health_str(hy_health h)
{
    switch (h) {
    case HY_HEALTHY: return "healthy";
    case HY_DEGRADED: return "degraded";
    case HY_UNHEALTHY: return "unhealthy";
    }
    return "?";
}

const char *hy_exit_text(const hy_inst_view *in, char *out, size_t len)
{
    char how[48];
    if (in->last_signal) {
        const char *sn = hy_signal_abbrev(in->last_signal);
        if (sn)
            snprintf(how, sizeof how, "signal %s", sn);
        else
            snprintf(how, sizeof how, "signal %d", in->last_signal);
    } else {
        snprintf(how, sizeof how, "exit status %d", in->last_code);
    }
    if (in->last_reason == HY_EXIT_EXIT || in->last_reason == HY_EXIT_SIGNAL)
        snprintf(out, len, "%s", how);
    else if (in->last_reason == HY_EXIT_SPAWN)
        snprintf(out, len, "spawn failed: %s", in->spawn_error && in->spawn_error[0] ? in->spawn_error : how);
    else
        snprintf(out, len, "%s (%s)", hy_exit_reason_str(in->last_reason), how);
    return out;
}

static bool clean_exit(const hy_inst_view *in)
{
    return in->last_reason == HY_EXIT_EXIT && in->last_code == 0;
}

/* An instance losing more than its share of the frames meant for it (a
 * subscriber that does not keep up, or one that keeps exiting): says so.
 * Stopped ones and clean exits are what was asked for; the frames for them
 * are counted, not a fault. */
static bool dropping(const hy_inst_view *in, char *reason, size_t len)
{
    const hy_dropwin_delta *r = &in->recent;
    if (in->retiring || in->state == HY_ST_STOPPED || in->state == HY_ST_EXITED)
        return false;
    if (r->dropped < HY_HEALTH_DROP_MIN || r->dropped * 100 <= r->routed * HY_HEALTH_DROP_PCT)
        return false;
    snprintf(reason, len, "%s dropped %llu of %llu frames meant for it in the last minute (%.1f%%, mostly %s)",
             in->label, (unsigned long long)r->dropped, (unsigned long long)r->routed,
             100.0 * (double)r->dropped / (double)r->routed, hy_drop_str(r->main));
    return true;
}

#define CERT_WARN_S (7 * 86400) /* a certificate that ends within a week makes hyphad degraded */

/* One certificate ending within CERT_WARN_S (or ended): says so in reason. */
static bool cert_ends_soon(const char *link, const char *whose, const char *subject, time_t not_after, time_t wall,
                           char *reason, size_t len)
{
    if (!not_after || not_after - wall > CERT_WARN_S)
        return false;
    char d[32];
    long long left = (long long)(not_after - wall);
    hy_format_duration((uint64_t)(left < 0 ? -left : left) * 1000u, d, sizeof d);
    snprintf(reason, len, "TLS certificate of %s (%s %s) %s %s%s", link, whose, subject,
             left < 0 ? "expired" : "expires in", d, left < 0 ? " ago" : "");
    return true;
}

static bool cert_expiring(const hy_snapshot *s, char *reason, size_t len)
{
    const hy_tls_view *u = &s->up.tls;
    if (s->topo->has_upstream && u->on &&
        (cert_ends_soon("upstream", "own", u->cert_subject, u->cert_not_after, s->wall, reason, len) ||
         cert_ends_soon("upstream", "server", u->peer_subject, u->peer_not_after, s->wall, reason, len)))
        return true;
    for (size_t i = 0; i < s->nlisten; i++) {
        const hy_tls_view *l = &s->listen[i].tls;
        if (l->on && cert_ends_soon(s->listen[i].name, "own", l->cert_subject, l->cert_not_after, s->wall, reason, len))
            return true;
    }
    return false;
}

/* An instance that is not serving as it should yet: in backoff, starting,
 * stopping, waiting to start, or with a handler that fails on nearly every
 * message. true with the reason. */
static bool not_serving(const hy_inst_view *in, char *reason, size_t len)
{
    char a[64];
    if (in->state == HY_ST_BACKOFF) {
        hy_exit_text(in, a, sizeof a);
        snprintf(reason, len, "%s in backoff after %s (restarts: %u)", in->label, a, in->restarts);
    } else if (in->state == HY_ST_STARTING || in->state == HY_ST_STOPPING || in->pending) {
        snprintf(reason, len, "%s %s", in->label, in->pending ? "waiting to start (reload)" : hy_state_str(in->state));
    } else if (in->waiting) {
        snprintf(reason, len, "%s waiting to start (after %s, not ready yet)", in->label, in->waiting_for);
    } else if (in->handler_failing) {
        snprintf(reason, len, "%s handler failed on %llu of the %llu messages sent to it since its last success",
                 in->label, (unsigned long long)in->fail_count, (unsigned long long)in->fail_frames);
    } else {
        return false;
    }
    return true;
}

hy_health hy_health_eval(const hy_snapshot *s, char *reason, size_t len)
{
    const hy_up_view *up = &s->up;
    const hy_topology *t = s->topo;
    char a[64], b[32], c[32];
    /* unhealthy */
    for (size_t i = 0; i < s->ninst; i++) {
        const hy_inst_view *in = &s->inst[i];
        if (in->retiring)
            continue;
        if (in->state == HY_ST_FAILED) {
            const hy_policy *p = &in->spec->policy;
            /* It gave up at more than `failures` exits within `within`:
             * failures + 1 of them (backoff.c's window holds that many). */
            unsigned exits = p->give_up_failures + 1;
            hy_exit_text(in, a, sizeof a);
            hy_format_duration(p->give_up_within_ms, b, sizeof b);
            if (p->give_up_retry_after_ms && in->retry_in_s >= 0) {
                double left = in->retry_in_s;
                hy_format_duration(left > 0 ? (uint64_t)(left * 1000.0) : 0, c, sizeof c);
                snprintf(reason, len, "%s failed: %u exits within %s (last: %s); retry in %s", in->label, exits, b,
                         a, c);
            } else {
                snprintf(reason, len, "%s failed: %u exits within %s (last: %s); not retried: hyphactl restart %s",
                         in->label, exits, b, a, in->spec->name);
            }
            return HY_UNHEALTHY;
        }
        if (in->state == HY_ST_EXITED && !clean_exit(in)) {
            hy_exit_text(in, a, sizeof a);
            snprintf(reason, len, "%s exited (%s) and will not be restarted (restart: %s)", in->label, a,
                     hy_restart_policy_str(in->spec->policy.restart));
            return HY_UNHEALTHY;
        }
    }
    bool up_ok = !t->has_upstream || up->ready;
    double down_for = up->down_for_s;
    if (!up_ok && down_for * 1000.0 > (double)t->reconnect_max_ms) {
        hy_format_duration((uint64_t)(down_for * 1000.0), b, sizeof b);
        snprintf(reason, len, "upstream %s down for %s (longer than reconnect.max)", up->name, b);
        return HY_UNHEALTHY;
    }
    /* degraded */
    for (size_t i = 0; i < s->ninst; i++)
        if (not_serving(&s->inst[i], reason, len))
            return HY_DEGRADED;
    for (size_t i = 0; i < s->ninst; i++)
        if (dropping(&s->inst[i], reason, len))
            return HY_DEGRADED;
    if (cert_expiring(s, reason, len))
        return HY_DEGRADED;
    if (!up_ok) {
        hy_format_duration((uint64_t)(down_for * 1000.0), b, sizeof b);
        snprintf(reason, len, "upstream %s %s for %s", up->name,
                 up->connected ? "connecting (handshake)" : "down", b);
        return HY_DEGRADED;
    }
    size_t running = 0, stopped = 0;
    for (size_t i = 0; i < s->ninst; i++) {
        running += s->inst[i].state == HY_ST_RUNNING;
        stopped += s->inst[i].state == HY_ST_STOPPED || s->inst[i].state == HY_ST_EXITED;
    }
    int n = snprintf(reason, len, "%zu of %zu instances running", running, s->ninst);
    if (stopped && n > 0 && (size_t)n < len)
        n += snprintf(reason + n, len - (size_t)n, " (%zu stopped or exited as asked)", stopped);
    if (n > 0 && (size_t)n < len)
        snprintf(reason + n, len - (size_t)n, t->has_upstream ? ", upstream connected" : ", embedded bus");
    return HY_HEALTHY;
}
