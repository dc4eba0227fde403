/* drops.c - drop counters, their text form and their log rule (see
 * hypha/drops.h). */
#include "hypha/drops.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "hypha/log.h"
#include "hypha/utf8.h"

const char *hy_drop_str(hy_drop d)
{
    switch (d) {
    case HY_DROP_UNKNOWN_TYPE: return "unknown-type";
    case HY_DROP_WRONG_SIZE: return "wrong-size";
    case HY_DROP_NOT_ALLOWED: return "not-allowed";
    case HY_DROP_NOT_RUNNING: return "not-running";
    case HY_DROP_EXITED: return "worker-exited";
    case HY_DROP_NO_MEMORY: return "out-of-memory";
    case HY_DROP_QUEUE_OLDEST: return "queue-full-oldest";
    case HY_DROP_QUEUE_NEWEST: return "queue-full-newest";
    case HY_DROP_HOLD_EXPIRED: return "hold-expired";
    case HY_DROP_HOLD_CANCELLED: return "hold-cancelled";
    case HY_DROP__COUNT: break;
    }
    return "?";
}

bool hy_log_mark(uint64_t before, uint64_t after)
{
    uint64_t mark = 1;
    while (mark <= before && mark <= UINT64_MAX / 10)
        mark *= 10;
    return after >= mark && before < mark;
}

bool hy_warn_mark(hy_warn_count *c, uint64_t *suppressed)
{
    uint64_t before = c->total;
    if (c->total < UINT64_MAX)
        c->total++;
    if (!hy_log_mark(before, c->total)) {
        *suppressed = 0;
        return false;
    }
    /* Lines at 1, 10, 100 ...: the ones in between were not logged. */
    *suppressed = c->total - c->logged - 1;
    c->logged = c->total;
    return true;
}

const char *hy_log_cut(char *out, size_t max, const char *s, size_t len)
{
    if (len <= max) {
        memcpy(out, s, len);
        out[len] = '\0';
        return out;
    }
    size_t n = max;
    /* Not inside a UTF-8 sequence: back up over continuation bytes. */
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    memcpy(out, s, n);
    memcpy(out + n, "...", 4);
    return out;
}

const char *hy_log_escape_bytes(char *out, const uint8_t *p, size_t n, bool more)
{
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == '\\') {
            *o++ = '\\';
            *o++ = '\\';
        } else if (c >= 0x20 && c < 0x7f) {
            *o++ = (char)c;
        } else {
            *o++ = '\\';
            *o++ = 'x';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    if (more) {
        memcpy(o, "\xe2\x80\xa6", 3); /* … */
        o += 3;
    }
    *o = '\0';
    return out;
}

bool hy_bytes_look_like_text(const uint8_t *p, size_t n)
{
    size_t texty = 0;
    for (size_t i = 0; i < n;) {
        size_t seq = p[i] >= 0x80 ? hy_utf8_seq(p + i, n - i) : 0;
        if (seq > 1 || (p[i] >= 0x20 && p[i] < 0x7f) || p[i] == '\t' || p[i] == '\n' || p[i] == '\r') {
            texty += seq > 1 ? seq : 1;
            i += seq > 1 ? seq : 1;
        } else {
            i++;
        }
    }
    return n > 0 && texty * 4 >= n * 3;
}

void hy_drops_init(hy_drops *d, const char *component, const char *k1, const char *v1, const char *k2,
                   const char *v2)
{
    memset(d, 0, sizeof *d);
    d->component = component;
    d->k1 = k1;
    d->v1 = v1;
    d->k2 = k2;
    d->v2 = v2;
}

static hy_type_namer namer;
static const void *namer_ud;

void hy_drops_set_namer(hy_type_namer f, const void *ud)
{
    namer = f;
    namer_ud = ud;
}

void hy_drops_add(hy_drops *d, hy_drop why, uint16_t type_id, uint64_t n)
{
    uint64_t before = d->n[why];
    d->n[why] += n;
    if (why == HY_DROP_QUEUE_OLDEST || why == HY_DROP_QUEUE_NEWEST || !hy_log_mark(before, d->n[why]))
        return;
    const char *reason = hy_drop_str(why);
    const char *name = namer ? namer(namer_ud, type_id) : NULL;
    char type[24], total[24];
    hy_log_u64(type, type_id);
    hy_log_u64(total, d->n[why]);
    /* type_name=TradeTick beside type=2001 when the contracts know it;
     * without it, "total" moves up and a NULL key ends the list. */
    const char *ka = name ? "type_name" : "total", *va = name ? name : total, *kb = name ? "total" : NULL;
    if (d->k2)
        hy_log(HY_WARN, d->component, "frame dropped", d->k1, d->v1, d->k2, d->v2, "reason", reason, "type", type,
               ka, va, kb, total, NULL);
    else
        hy_log(HY_WARN, d->component, "frame dropped", d->k1, d->v1, "reason", reason, "type", type, ka, va, kb,
               total, NULL);
}

bool hy_drop_for_receiver(hy_drop d)
{
    return d == HY_DROP_NOT_RUNNING || d == HY_DROP_EXITED || d == HY_DROP_NO_MEMORY || d == HY_DROP_QUEUE_OLDEST ||
           d == HY_DROP_QUEUE_NEWEST || d == HY_DROP_HOLD_EXPIRED || d == HY_DROP_HOLD_CANCELLED;
}

void hy_dropwin_record(hy_dropwin *w, double now, uint64_t accepted, const hy_drops *d)
{
    hy_dropwin_sample *s = &w->s[w->head];
    s->at = now;
    s->accepted = accepted;
    memcpy(s->n, d->n, sizeof s->n);
    w->head = (w->head + 1) % HY_DROPWIN_SLOTS;
    if (w->count < HY_DROPWIN_SLOTS)
        w->count++;
}

hy_dropwin_delta hy_dropwin_since(const hy_dropwin *w, double now, uint64_t accepted, const hy_drops *d)
{
    static const hy_dropwin_sample zero;
    /* the oldest sample: at head once the ring is full, at 0 before */
    const hy_dropwin_sample *base = w->count == 0 ? &zero
                                    : &w->s[w->count == HY_DROPWIN_SLOTS ? w->head : 0];
    hy_dropwin_delta out = {.span_s = w->count ? now - base->at : 0, .main = HY_DROP_QUEUE_NEWEST};
    uint64_t most = 0, unqueued = 0;
    for (int i = 0; i < HY_DROP__COUNT; i++) {
        if (!hy_drop_for_receiver((hy_drop)i))
            continue;
        uint64_t n = d->n[i] - base->n[i];
        out.dropped += n;
        if (i != HY_DROP_QUEUE_OLDEST && i != HY_DROP_EXITED && i != HY_DROP_HOLD_EXPIRED &&
            i != HY_DROP_HOLD_CANCELLED)
            unqueued += n; /* never reached its queue */
        if (n > most) {
            most = n;
            out.main = (hy_drop)i;
        }
    }
    out.routed = accepted - base->accepted + unqueued;
    if (out.routed < out.dropped) /* frames accepted before the window, dropped in it */
        out.routed = out.dropped;
    return out;
}

uint64_t hy_drops_total(const hy_drops *d)
{
    uint64_t t = 0;
    for (int i = 0; i < HY_DROP__COUNT; i++)
        t += d->n[i];
    return t;
}

const char *hy_drops_format(const hy_drops *d, const char *sep, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < HY_DROP__COUNT && used < len; i++)
        if (d->n[i])
            used += (size_t)snprintf(out + used, len - used, "%s%s=%" PRIu64, used ? sep : "",
                                     hy_drop_str((hy_drop)i), d->n[i]);
    if (!used)
        snprintf(out, len, "none");
    return out;
}
