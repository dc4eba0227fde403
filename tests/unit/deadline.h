/* deadline.h - a deadline on a libev loop for the tests that run one:
 * ev_run(EVRUN_ONCE) returns by then at the latest, so every wait is bounded
 * and nothing sleeps. Shared by test_net and test_sink. */
#ifndef HYPHA_TEST_DEADLINE_H
#define HYPHA_TEST_DEADLINE_H

#include <ev.h>
#include <stdbool.h>

typedef struct deadline {
    ev_timer t;
    bool expired;
} deadline;

static void deadline_expire_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    ((deadline *)w->data)->expired = true;
}

static inline void deadline_start(struct ev_loop *loop, deadline *d, double s)
{
    d->expired = false;
    ev_timer_init(&d->t, deadline_expire_cb, s, 0.0);
    d->t.data = d;
    ev_timer_start(loop, &d->t);
}

#endif
