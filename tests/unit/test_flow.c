/* test_flow.c - back-pressure (hypha/flow.h) on a real ev_loop: read
 * watchers on pipe fds are started and stopped by the rules in flow.h, and
 * ev_is_active says which are on.
 *
 *  - up_full pauses workers and clients, never the upstream;
 *  - a blocked worker queue pauses the upstream always, and workers and
 *    clients only with local_feed;
 *  - `always` overrides both; a closed source is never started. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "hypha/flow.h"

/* One source of each kind, each with a read watcher on its own pipe. */
typedef struct rig {
    struct ev_loop *loop;
    hy_flow f;
    int fds[3][2];
    ev_io w[3];
    hy_source src[3]; /* worker, upstream, client */
} rig;

enum { WK, UP, CL };

static void nop_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

static rig *rig_new(bool local_feed, bool open)
{
    rig *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(r->loop);
    hy_flow_init(&r->f, r->loop, local_feed);
    const hy_src_kind kinds[3] = {HY_SRC_WORKER, HY_SRC_UPSTREAM, HY_SRC_CLIENT};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pipe2(r->fds[i], O_NONBLOCK | O_CLOEXEC), 0);
        ev_io_init(&r->w[i], nop_cb, r->fds[i][0], EV_READ);
        hy_flow_add(&r->f, &r->src[i], &r->w[i], kinds[i]);
        assert_false(ev_is_active(&r->w[i])); /* added: not open yet */
    }
    if (open)
        for (int i = 0; i < 3; i++)
            hy_flow_open(&r->f, &r->src[i], true);
    return r;
}

static void rig_free(rig *r)
{
    for (int i = 0; i < 3; i++) {
        hy_flow_remove(&r->f, &r->src[i]);
        close(r->fds[i][0]);
        close(r->fds[i][1]);
    }
    ev_loop_destroy(r->loop);
    free(r);
}

/* Which watchers are active, as "wuc" with '-' for a stopped one. */
static void assert_active(const rig *r, const char *want)
{
    char got[4] = "---";
    const char names[3] = {'w', 'u', 'c'};
    for (int i = 0; i < 3; i++) {
        if (ev_is_active(&r->w[i]))
            got[i] = names[i];
        assert_int_equal(ev_is_active(&r->w[i]) != 0, hy_flow_may_read(&r->f, &r->src[i]));
    }
    assert_string_equal(got, want);
}

static void test_open_starts_close_stops(void **state)
{
    (void)state;
    rig *r = rig_new(false, false);
    assert_ptr_equal(r->src[WK].w, &r->w[WK]);
    assert_int_equal(r->src[UP].kind, HY_SRC_UPSTREAM);
    assert_active(r, "---");
    hy_flow_open(&r->f, &r->src[UP], true);
    assert_active(r, "-u-");
    hy_flow_open(&r->f, &r->src[WK], true);
    hy_flow_open(&r->f, &r->src[CL], true);
    assert_active(r, "wuc");
    hy_flow_open(&r->f, &r->src[WK], false);
    assert_active(r, "-uc");
    hy_flow_open(&r->f, &r->src[WK], true);
    assert_active(r, "wuc");
    rig_free(r);
}

static void test_up_full_pauses_workers_and_clients(void **state)
{
    (void)state;
    for (int lf = 0; lf < 2; lf++) { /* the same with or without local_feed */
        rig *r = rig_new(lf, true);
        assert_active(r, "wuc");
        hy_flow_up_full(&r->f, true);
        assert_true(r->f.up_full);
        assert_active(r, "-u-");
        hy_flow_up_full(&r->f, true); /* again: no change */
        assert_active(r, "-u-");
        hy_flow_up_full(&r->f, false);
        assert_active(r, "wuc");
        rig_free(r);
    }
}

static void test_blocked_pauses_upstream_always(void **state)
{
    (void)state;
    /* no local_feed (upstream with echo): only the upstream feeds workers */
    rig *r = rig_new(false, true);
    hy_flow_block(&r->f, true);
    assert_int_equal(r->f.blocked, 1);
    assert_active(r, "w-c");
    hy_flow_block(&r->f, false);
    assert_int_equal(r->f.blocked, 0);
    assert_active(r, "wuc");
    rig_free(r);

    /* local_feed (embedded, or echo: false): everyone feeds workers */
    r = rig_new(true, true);
    hy_flow_block(&r->f, true);
    assert_active(r, "---");
    hy_flow_block(&r->f, false);
    assert_active(r, "wuc");
    rig_free(r);
}

static void test_blocked_counts_queues(void **state)
{
    (void)state;
    rig *r = rig_new(true, true);
    hy_flow_block(&r->f, true);
    hy_flow_block(&r->f, true); /* a second queue over */
    assert_int_equal(r->f.blocked, 2);
    assert_active(r, "---");
    hy_flow_block(&r->f, false); /* one still over */
    assert_int_equal(r->f.blocked, 1);
    assert_active(r, "---");
    hy_flow_block(&r->f, false);
    assert_active(r, "wuc");
    rig_free(r);
}

static void test_both_pressures(void **state)
{
    (void)state;
    rig *r = rig_new(false, true);
    hy_flow_up_full(&r->f, true);
    hy_flow_block(&r->f, true);
    assert_active(r, "---");
    hy_flow_up_full(&r->f, false); /* still blocked: upstream paused */
    assert_active(r, "w-c");
    hy_flow_up_full(&r->f, true);
    hy_flow_block(&r->f, false); /* still full: workers and clients paused */
    assert_active(r, "-u-");
    hy_flow_up_full(&r->f, false);
    assert_active(r, "wuc");
    rig_free(r);
}

static void test_always_overrides(void **state)
{
    (void)state;
    rig *r = rig_new(true, true);
    hy_flow_up_full(&r->f, true);
    hy_flow_block(&r->f, true);
    assert_active(r, "---");
    hy_flow_set_always(&r->f, &r->src[WK], true); /* a worker over its own limit */
    assert_true(r->src[WK].always);
    assert_active(r, "w--");
    hy_flow_set_always(&r->f, &r->src[CL], true); /* a client in its handshake */
    hy_flow_set_always(&r->f, &r->src[UP], true);
    assert_active(r, "wuc");
    hy_flow_up_full(&r->f, false);
    hy_flow_block(&r->f, true);
    assert_active(r, "wuc");
    hy_flow_set_always(&r->f, &r->src[WK], false); /* back to the rules: paused */
    assert_active(r, "-uc");
    hy_flow_set_always(&r->f, &r->src[CL], false);
    hy_flow_set_always(&r->f, &r->src[UP], false);
    assert_active(r, "---");
    hy_flow_block(&r->f, false);
    hy_flow_block(&r->f, false);
    assert_active(r, "wuc");
    rig_free(r);
}

static void test_closed_never_started(void **state)
{
    (void)state;
    rig *r = rig_new(true, false);
    /* always does not open it */
    for (int i = 0; i < 3; i++)
        hy_flow_set_always(&r->f, &r->src[i], true);
    assert_active(r, "---");
    /* nor does the pressure going away */
    hy_flow_up_full(&r->f, true);
    hy_flow_up_full(&r->f, false);
    hy_flow_block(&r->f, true);
    hy_flow_block(&r->f, false);
    assert_active(r, "---");
    for (int i = 0; i < 3; i++)
        hy_flow_set_always(&r->f, &r->src[i], false);
    hy_flow_up_full(&r->f, true);
    hy_flow_up_full(&r->f, false);
    assert_active(r, "---");
    /* opened, then closed under always: stopped */
    hy_flow_set_always(&r->f, &r->src[UP], true);
    hy_flow_open(&r->f, &r->src[UP], true);
    assert_active(r, "-u-");
    hy_flow_open(&r->f, &r->src[UP], false);
    assert_active(r, "---");
    rig_free(r);
}

static void test_open_under_pressure(void **state)
{
    (void)state;
    /* a source that gets its fd while the pressure is on waits for it to end */
    rig *r = rig_new(false, false);
    hy_flow_up_full(&r->f, true);
    hy_flow_block(&r->f, true);
    for (int i = 0; i < 3; i++)
        hy_flow_open(&r->f, &r->src[i], true);
    assert_active(r, "---");
    hy_flow_up_full(&r->f, false);
    assert_active(r, "w-c");
    hy_flow_block(&r->f, false);
    assert_active(r, "wuc");
    rig_free(r);
}

static void test_remove_stops_and_forgets(void **state)
{
    (void)state;
    rig *r = rig_new(false, true);
    assert_active(r, "wuc");
    /* the middle of the list, then the head, then the last */
    hy_flow_remove(&r->f, &r->src[UP]);
    assert_false(ev_is_active(&r->w[UP]));
    assert_true(ev_is_active(&r->w[WK]));
    assert_true(ev_is_active(&r->w[CL]));
    /* no longer managed: the pressure does not start or stop it */
    hy_flow_block(&r->f, true);
    hy_flow_block(&r->f, false);
    assert_false(ev_is_active(&r->w[UP]));
    hy_flow_up_full(&r->f, true);
    assert_false(ev_is_active(&r->w[WK]));
    assert_false(ev_is_active(&r->w[CL]));
    hy_flow_up_full(&r->f, false);
    assert_true(ev_is_active(&r->w[WK]));
    assert_true(ev_is_active(&r->w[CL]));
    hy_flow_remove(&r->f, &r->src[CL]); /* the head (added last) */
    assert_false(ev_is_active(&r->w[CL]));
    assert_ptr_equal(r->f.sources, &r->src[WK]);
    hy_flow_remove(&r->f, &r->src[WK]);
    assert_false(ev_is_active(&r->w[WK]));
    assert_null(r->f.sources);
    hy_flow_up_full(&r->f, true);
    hy_flow_up_full(&r->f, false);
    for (int i = 0; i < 3; i++)
        assert_false(ev_is_active(&r->w[i]));
    /* added back: managed again */
    for (int i = 0; i < 3; i++) {
        hy_flow_add(&r->f, &r->src[i], &r->w[i], i == UP ? HY_SRC_UPSTREAM : i == WK ? HY_SRC_WORKER : HY_SRC_CLIENT);
        hy_flow_open(&r->f, &r->src[i], true);
    }
    assert_active(r, "wuc");
    rig_free(r);
}

static int fired[3];

static void count_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    fired[(int)(intptr_t)w->data]++;
}

/* The watchers flow.c starts are the ones the loop runs: a paused source
 * with data waiting is not called back; once resumed, it is. */
static void test_paused_source_not_called(void **state)
{
    (void)state;
    rig *r = rig_new(false, false);
    for (int i = 0; i < 3; i++) {
        ev_set_cb(&r->w[i], count_cb);
        r->w[i].data = (void *)(intptr_t)i;
        fired[i] = 0;
        assert_int_equal(write(r->fds[i][1], "x", 1), 1);
        hy_flow_open(&r->f, &r->src[i], true);
    }
    hy_flow_up_full(&r->f, true);
    ev_run(r->loop, EVRUN_NOWAIT);
    assert_int_equal(fired[WK], 0);
    assert_int_equal(fired[UP], 1);
    assert_int_equal(fired[CL], 0);
    hy_flow_up_full(&r->f, false);
    hy_flow_block(&r->f, true);
    ev_run(r->loop, EVRUN_NOWAIT);
    assert_int_equal(fired[WK], 1);
    assert_int_equal(fired[UP], 1);
    assert_int_equal(fired[CL], 1);
    rig_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_starts_close_stops),
        cmocka_unit_test(test_up_full_pauses_workers_and_clients),
        cmocka_unit_test(test_blocked_pauses_upstream_always),
        cmocka_unit_test(test_blocked_counts_queues),
        cmocka_unit_test(test_both_pressures),
        cmocka_unit_test(test_always_overrides),
        cmocka_unit_test(test_closed_never_started),
        cmocka_unit_test(test_open_under_pressure),
        cmocka_unit_test(test_remove_stops_and_forgets),
        cmocka_unit_test(test_paused_source_not_called),
    };
    return cmocka_run_group_tests_name("flow", tests, NULL, NULL);
}
