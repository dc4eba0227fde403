/* flow.c - the single owner of "who may read now" (see hypha/flow.h). */
#include "hypha/flow.h"


void hy_flow_init(hy_flow *f, struct ev_loop *loop, bool local_feed)
{
    f->loop = loop;
    f->local_feed = local_feed;
    f->up_full = false;
    f->blocked = 0;
    f->sources = NULL;
}

static bool feeders_may_read(const hy_flow *f) { return !f->up_full && !(f->local_feed && f->blocked > 0); }

bool hy_flow_may_read(const hy_flow *f, const hy_source *s)
{
    if (!s->open)
        return false;
    if (s->always)
        return true;
    return s->kind == HY_SRC_UPSTREAM ? f->blocked == 0 : feeders_may_read(f);
}

/* Held back, or not any more: the time it was is kept. */
static void set_paused(hy_flow *f, hy_source *s, bool paused)
{
    if (s->paused == paused)
        return;
    double now = ev_now(f->loop);
    if (paused)
        s->paused_at = now;
    else
        s->paused_s += now - s->paused_at;
    s->paused = paused;
}

static void apply(hy_flow *f, hy_source *s)
{
    bool read = hy_flow_may_read(f, s);
    set_paused(f, s, s->open && !read);
    if (!read) {
        ev_io_stop(f->loop, s->w);
        return;
    }
    bool was = ev_is_active(s->w);
    ev_io_start(f->loop, s->w);
    if (!was && s->buffered && s->buffered(s))
        ev_feed_event(f->loop, s->w, EV_READ); /* bytes already read (TLS): no fd event will say so */
}

double hy_flow_paused_s(const hy_flow *f, const hy_source *s)
{
    return s->paused_s + (s->paused ? ev_now(f->loop) - s->paused_at : 0);
}

static void apply_all(hy_flow *f)
{
    for (hy_source *s = f->sources; s; s = s->next)
        apply(f, s);
}

void hy_flow_add(hy_flow *f, hy_source *s, ev_io *w, hy_src_kind kind)
{
    s->w = w;
    s->kind = kind;
    s->open = false;
    s->always = false;
    s->paused = false;
    s->paused_at = s->paused_s = 0;
    s->buffered = NULL;
    s->prev = NULL;
    s->next = f->sources;
    if (f->sources)
        f->sources->prev = s;
    f->sources = s;
}

void hy_flow_remove(hy_flow *f, hy_source *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else if (f->sources == s)
        f->sources = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
    if (s->w)
        ev_io_stop(f->loop, s->w);
}

void hy_flow_open(hy_flow *f, hy_source *s, bool open)
{
    s->open = open;
    apply(f, s);
}

void hy_flow_set_always(hy_flow *f, hy_source *s, bool always)
{
    if (s->always == always)
        return;
    s->always = always;
    apply(f, s);
}

void hy_flow_block(hy_flow *f, bool over)
{
    f->blocked += over ? 1 : -1;
    if (f->blocked <= 1) /* 0 -> 1 or 1 -> 0: what may be read changed */
        apply_all(f);
}

void hy_flow_up_full(hy_flow *f, bool full)
{
    if (f->up_full == full)
        return;
    f->up_full = full;
    apply_all(f);
}
