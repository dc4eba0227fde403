/* test_exitplan.c - what an exit means and what comes next (hypha/exitplan.h):
 * the reason, code and signal of every kind of exit, and each verdict of
 * hy_exit_plan (stopped, exited, failed, backoff, at once) with the reset,
 * give-up and backoff-exponent rules that handle_exit() applies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "hypha/backoff.h"
#include "hypha/exitplan.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

#ifndef W_EXITCODE
#define W_EXITCODE(ret, sig) ((ret) << 8 | (sig))
#endif

static hy_policy policy(hy_restart_policy restart)
{
    hy_policy p;
    hy_policy_builtin(&p);
    p.restart = restart;
    p.backoff_initial_ms = 100;
    p.backoff_factor = 2.0;
    p.backoff_max_ms = 30000;
    p.backoff_jitter = 0.0;
    p.backoff_reset_after_ms = 30000;
    p.give_up_retry_after_ms = 300000;
    return p;
}

/* A process that ran 1s and exited with `code`. */
static hy_exit_facts exit_code(int code)
{
    return (hy_exit_facts){.wstatus = W_EXITCODE(code, 0), .uptime_ms = 1000};
}

/* A process that ran 1s and was killed by `sig`. */
static hy_exit_facts exit_signal(int sig)
{
    return (hy_exit_facts){.wstatus = W_EXITCODE(0, sig), .uptime_ms = 1000};
}

/* fork (or a step before the child existed) failed. */
static hy_exit_facts no_process(void)
{
    return (hy_exit_facts){.wstatus = -1, .no_process = true};
}

static void test_reason_str(void **state)
{
    (void)state;
    static const struct { hy_exit_reason r; const char *s; } names[] = {
        {HY_EXIT_NONE, ""},          {HY_EXIT_EXIT, "exit"},
        {HY_EXIT_SIGNAL, "signal"},  {HY_EXIT_SPAWN, "spawn"},
        {HY_EXIT_PROTOCOL, "protocol"}, {HY_EXIT_HEARTBEAT, "heartbeat"},
        {HY_EXIT_SCHEMA, "schema"},
    };
    assert_int_equal(N_ELEMS(names), HY_EXIT__COUNT);
    for (size_t i = 0; i < N_ELEMS(names); i++)
        assert_string_equal(hy_exit_reason_str(names[i].r), names[i].s);
    assert_string_equal(hy_exit_reason_str(HY_EXIT__COUNT), "");
    assert_string_equal(hy_exit_reason_str((hy_exit_reason)-1), "");
}

/* Spawn failure first, then hyphad's own kill reason, then a signal, then an
 * exit; code -1 when there is none, signal 0 when there is none. */
static void test_classify(void **state)
{
    (void)state;
    struct { const char *name; hy_exit_facts f; hy_exit_reason reason; int code, sig; bool clean; } cases[] = {
        {"no process", no_process(), HY_EXIT_SPAWN, -1, 0, false},
        {"exec failed: the child exited 127", exit_code(127), HY_EXIT_SPAWN, 127, 0, false},
        {"a step failed, child signalled", exit_signal(SIGKILL), HY_EXIT_SPAWN, -1, 0, false},
        {"spawn failure before a kill reason", exit_signal(SIGKILL), HY_EXIT_SPAWN, -1, 0, false},
        {"killed for heartbeat (signal)", exit_signal(SIGKILL), HY_EXIT_HEARTBEAT, -1, SIGKILL, false},
        {"killed for protocol, exited 3", exit_code(3), HY_EXIT_PROTOCOL, 3, 0, false},
        {"killed for schema, exited 0: not clean", exit_code(0), HY_EXIT_SCHEMA, 0, 0, false},
        {"kill reason before a signal", exit_signal(SIGTERM), HY_EXIT_PROTOCOL, -1, SIGTERM, false},
        {"signal", exit_signal(SIGSEGV), HY_EXIT_SIGNAL, -1, SIGSEGV, false},
        {"exit 0: clean", exit_code(0), HY_EXIT_EXIT, 0, 0, true},
        {"exit 2", exit_code(2), HY_EXIT_EXIT, 2, 0, false},
        {"exit 255", exit_code(255), HY_EXIT_EXIT, 255, 0, false},
    };
    cases[0].f.killed_for = HY_EXIT_PROTOCOL; /* no process: spawn, whatever else is set */
    cases[0].f.spawn_failed = true;
    cases[1].f.spawn_failed = true;
    cases[2].f.spawn_failed = true;
    cases[3].f.spawn_failed = true;
    cases[3].f.killed_for = HY_EXIT_HEARTBEAT;
    cases[4].f.killed_for = HY_EXIT_HEARTBEAT;
    cases[5].f.killed_for = HY_EXIT_PROTOCOL;
    cases[6].f.killed_for = HY_EXIT_SCHEMA;
    cases[7].f.killed_for = HY_EXIT_PROTOCOL;
    hy_policy p = policy(HY_RESTART_ALWAYS);
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        hy_exit_verdict v = hy_exit_plan(&p, &cases[i].f);
        if (v.reason != cases[i].reason || v.code != cases[i].code || v.signal != cases[i].sig ||
            v.clean != cases[i].clean)
            fail_msg("%s: reason %s code %d signal %d clean %d", cases[i].name, hy_exit_reason_str(v.reason), v.code,
                     v.signal, v.clean);
    }
    /* no process: wstatus is ignored */
    hy_exit_facts np = no_process();
    np.wstatus = W_EXITCODE(3, 0);
    hy_exit_verdict nv = hy_exit_plan(&p, &np);
    assert_int_equal(nv.reason, HY_EXIT_SPAWN);
    assert_int_equal(nv.code, -1);
    /* the same facts classify the same way on the stopping path */
    hy_exit_facts f = exit_signal(SIGTERM);
    f.stopping = true;
    hy_exit_verdict v = hy_exit_plan(&p, &f);
    assert_int_equal(v.reason, HY_EXIT_SIGNAL);
    assert_int_equal(v.signal, SIGTERM);
    assert_int_equal(v.code, -1);
}

/* Being stopped wins over everything else: the policy, a give-up, a reset. */
static void test_stopping(void **state)
{
    (void)state;
    hy_policy p = policy(HY_RESTART_ALWAYS);
    hy_exit_facts f = exit_signal(SIGTERM);
    f.stopping = true;
    f.n = 5;
    f.over_give_up = true;
    f.retrying = true;
    f.uptime_ms = 100000; /* over reset_after: no reset on this path */
    hy_exit_verdict v = hy_exit_plan(&p, &f);
    assert_int_equal(v.next, HY_NEXT_STOPPED);
    assert_int_equal(v.n, 5);
    assert_false(v.reset_history);
    assert_int_equal(v.delay_ms, 0);

    f.start_after_stop = true; /* an operator's restart */
    assert_int_equal(hy_exit_plan(&p, &f).next, HY_NEXT_STOPPED_START);

    p.restart = HY_RESTART_NEVER; /* restart never: still started again by the operator's restart */
    assert_int_equal(hy_exit_plan(&p, &f).next, HY_NEXT_STOPPED_START);
    f.start_after_stop = false;
    assert_int_equal(hy_exit_plan(&p, &f).next, HY_NEXT_STOPPED);

    /* a spawn failure while stopping is a stop too */
    hy_exit_facts np = no_process();
    np.stopping = true;
    v = hy_exit_plan(&p, &np);
    assert_int_equal(v.next, HY_NEXT_STOPPED);
    assert_int_equal(v.reason, HY_EXIT_SPAWN);
}

/* Shutting down: stopped, never started again, even mid-restart, and even
 * when the caller did not also set `stopping`. */
static void test_stopping_during_shutdown(void **state)
{
    (void)state;
    hy_policy p = policy(HY_RESTART_ALWAYS);
    hy_exit_facts f = exit_code(1);
    f.shutting_down = true;
    f.start_after_stop = true;
    f.stopping = true;
    assert_int_equal(hy_exit_plan(&p, &f).next, HY_NEXT_STOPPED);
    f.stopping = false;
    assert_int_equal(hy_exit_plan(&p, &f).next, HY_NEXT_STOPPED);
    f.start_after_stop = false;
    assert_int_equal(hy_exit_plan(&p, &f).next, HY_NEXT_STOPPED);
    assert_false(hy_exit_counts(&p, &f));
}

/* restart: never: any exit, clean or not, ends in exited. */
static void test_never(void **state)
{
    (void)state;
    hy_policy p = policy(HY_RESTART_NEVER);
    hy_exit_facts fs[] = {exit_code(0), exit_code(1), exit_signal(SIGKILL), no_process(), exit_code(0)};
    fs[4].killed_for = HY_EXIT_HEARTBEAT;
    for (size_t i = 0; i < N_ELEMS(fs); i++) {
        fs[i].n = 3;
        fs[i].over_give_up = true; /* not consulted */
        hy_exit_verdict v = hy_exit_plan(&p, &fs[i]);
        assert_int_equal(v.next, HY_NEXT_EXITED);
        assert_int_equal(v.n, 3);
        assert_int_equal(v.delay_ms, 0);
        assert_false(v.reset_history);
        assert_false(hy_exit_counts(&p, &fs[i]));
    }
}

/* restart: on-failure: exited after a clean exit only; anything else (a
 * signal, a code, hyphad's own kill even with code 0, a failed spawn) backs off. */
static void test_on_failure(void **state)
{
    (void)state;
    hy_policy p = policy(HY_RESTART_ON_FAILURE);
    hy_exit_facts clean = exit_code(0);
    hy_exit_verdict v = hy_exit_plan(&p, &clean);
    assert_int_equal(v.next, HY_NEXT_EXITED);
    assert_true(v.clean);
    assert_false(hy_exit_counts(&p, &clean));

    hy_exit_facts unclean[] = {exit_code(1), exit_signal(SIGSEGV), exit_code(0), no_process()};
    unclean[2].killed_for = HY_EXIT_PROTOCOL;
    for (size_t i = 0; i < N_ELEMS(unclean); i++) {
        v = hy_exit_plan(&p, &unclean[i]);
        assert_false(v.clean);
        assert_int_equal(v.next, HY_NEXT_BACKOFF);
        assert_int_equal(v.delay_ms, 100);
        assert_int_equal(v.n, 1);
        assert_true(hy_exit_counts(&p, &unclean[i]));
    }
    /* restart: always restarts after a clean exit too */
    p.restart = HY_RESTART_ALWAYS;
    v = hy_exit_plan(&p, &clean);
    assert_int_equal(v.next, HY_NEXT_BACKOFF);
    assert_true(hy_exit_counts(&p, &clean));
}

/* Backoff: delay(n), then n + 1. */
static void test_backoff(void **state)
{
    (void)state;
    hy_policy p = policy(HY_RESTART_ALWAYS);
    uint64_t want[] = {100, 200, 400, 800, 1600};
    for (uint32_t n = 0; n < N_ELEMS(want); n++) {
        hy_exit_facts f = exit_code(1);
        f.n = n;
        hy_exit_verdict v = hy_exit_plan(&p, &f);
        assert_int_equal(v.next, HY_NEXT_BACKOFF);
        assert_int_equal(v.delay_ms, want[n]);
        assert_int_equal(v.n, n + 1);
        assert_false(v.reset_history);
    }
}

/* uptime == reset_after resets (n from 0, no longer retrying); one ms less does not. */
static void test_reset_boundary(void **state)
{
    (void)state;
    hy_policy p = policy(HY_RESTART_ALWAYS);
    hy_exit_facts f = exit_code(1);
    f.n = 5;
    f.uptime_ms = 30000;
    hy_exit_verdict v = hy_exit_plan(&p, &f);
    assert_true(v.reset_history);
    assert_int_equal(v.next, HY_NEXT_BACKOFF);
    assert_int_equal(v.delay_ms, 100);
    assert_int_equal(v.n, 1);
    assert_true(hy_exit_resets(&p, 30000));

    f.uptime_ms = 29999;
    v = hy_exit_plan(&p, &f);
    assert_false(v.reset_history);
    assert_int_equal(v.delay_ms, 3200);
    assert_int_equal(v.n, 6);
    assert_false(hy_exit_resets(&p, 29999));

    /* no process: uptime 0, which resets only when reset_after is 0 */
    hy_exit_facts np = no_process();
    np.n = 2;
    assert_false(hy_exit_plan(&p, &np).reset_history);
    p.backoff_reset_after_ms = 0;
    v = hy_exit_plan(&p, &np);
    assert_true(v.reset_history);
    assert_int_equal(v.n, 1);
}

/* A retry_after attempt that fails again gives up again, unless it had been
 * up long enough to reset. */
static void test_retrying(void **state)
{
    (void)state;
    hy_policy p = policy(HY_RESTART_ALWAYS);
    hy_exit_facts f = exit_code(1);
    f.retrying = true;
    f.n = 4;
    f.uptime_ms = 29999;
    hy_exit_verdict v = hy_exit_plan(&p, &f);
    assert_int_equal(v.next, HY_NEXT_FAILED);
    assert_int_equal(v.delay_ms, 300000);
    assert_int_equal(v.n, 4);
    assert_false(v.reset_history);

    f.uptime_ms = 30000;
    v = hy_exit_plan(&p, &f);
    assert_true(v.reset_history);
    assert_int_equal(v.next, HY_NEXT_BACKOFF);
    assert_int_equal(v.delay_ms, 100);
    assert_int_equal(v.n, 1);
}

/* Over the give-up window: failed, retried after retry_after (0: never),
 * even after a reset (the caller's window already reflects it). */
static void test_give_up(void **state)
{
    (void)state;
    hy_policy p = policy(HY_RESTART_ALWAYS);
    hy_exit_facts f = exit_signal(SIGSEGV);
    f.over_give_up = true;
    f.n = 7;
    hy_exit_verdict v = hy_exit_plan(&p, &f);
    assert_int_equal(v.next, HY_NEXT_FAILED);
    assert_int_equal(v.delay_ms, 300000);
    assert_int_equal(v.n, 7);

    p.give_up_retry_after_ms = 0;
    v = hy_exit_plan(&p, &f);
    assert_int_equal(v.next, HY_NEXT_FAILED);
    assert_int_equal(v.delay_ms, 0);

    f.uptime_ms = 30000;
    v = hy_exit_plan(&p, &f);
    assert_int_equal(v.next, HY_NEXT_FAILED);
    assert_true(v.reset_history);
    assert_int_equal(v.n, 0);

    /* a give-up on no process at all */
    hy_exit_facts np = no_process();
    np.over_give_up = true;
    assert_int_equal(hy_exit_plan(&p, &np).next, HY_NEXT_FAILED);
}

/* Delay 0: at once when a process exited; through the timer when there was
 * none (spawning from there would recurse while fork keeps failing). */
static void test_delay_zero(void **state)
{
    (void)state;
    hy_policy p = policy(HY_RESTART_ALWAYS);
    p.backoff_initial_ms = 0;
    hy_exit_facts f = exit_code(1);
    hy_exit_verdict v = hy_exit_plan(&p, &f);
    assert_int_equal(v.next, HY_NEXT_SPAWN_NOW);
    assert_int_equal(v.delay_ms, 0);
    assert_int_equal(v.n, 1);

    hy_exit_facts sf = exit_code(127); /* exec failed, but a child existed */
    sf.spawn_failed = true;
    assert_int_equal(hy_exit_plan(&p, &sf).next, HY_NEXT_SPAWN_NOW);

    hy_exit_facts np = no_process();
    v = hy_exit_plan(&p, &np);
    assert_int_equal(v.next, HY_NEXT_BACKOFF);
    assert_int_equal(v.delay_ms, 0);
    assert_int_equal(v.n, 1);

    /* a delay that is not 0 is a timer even with a process */
    p.backoff_initial_ms = 1;
    assert_int_equal(hy_exit_plan(&p, &f).next, HY_NEXT_BACKOFF);
}

/* n stops at 64. */
static void test_n_capped(void **state)
{
    (void)state;
    hy_policy p = policy(HY_RESTART_ALWAYS);
    hy_exit_facts f = exit_code(1);
    f.n = 63;
    assert_int_equal(hy_exit_plan(&p, &f).n, 64);
    f.n = 64;
    hy_exit_verdict v = hy_exit_plan(&p, &f);
    assert_int_equal(v.n, 64);
    assert_int_equal(v.delay_ms, 30000);
}

/* The jitter draw goes to hy_backoff_delay_ms unchanged. */
static void test_jitter(void **state)
{
    (void)state;
    hy_policy p = policy(HY_RESTART_ALWAYS);
    p.backoff_jitter = 0.5;
    static const double us[] = {-1.0, -0.37, 0.0, 0.25, 0.999, 1.0};
    for (size_t i = 0; i < N_ELEMS(us); i++)
        for (uint32_t n = 0; n < 12; n += 3) {
            hy_exit_facts f = exit_code(1);
            f.n = n;
            f.jitter_u = us[i];
            hy_exit_verdict v = hy_exit_plan(&p, &f);
            assert_int_equal(v.delay_ms, hy_backoff_delay_ms(&p, n, us[i]));
        }
    hy_exit_facts f = exit_code(1);
    f.jitter_u = 1.0;
    assert_int_equal(hy_exit_plan(&p, &f).delay_ms, 150);
    f.jitter_u = -1.0;
    assert_int_equal(hy_exit_plan(&p, &f).delay_ms, 50);
}

/* The caller's give-up bookkeeping, driven the way exitplan.h says, gives up
 * after `failures` + 1 quick exits, as handle_exit() did. */
static void test_counts_with_window(void **state)
{
    (void)state;
    hy_policy p = policy(HY_RESTART_ALWAYS);
    p.give_up_failures = 3;
    p.give_up_within_ms = 60000;
    hy_giveup g;
    assert_int_equal(hy_giveup_init(&g, p.give_up_failures), 0);
    uint32_t n = 0;
    hy_exit_next seen[5];
    for (size_t i = 0; i < N_ELEMS(seen); i++) {
        hy_exit_facts f = exit_code(1);
        f.n = n;
        if (hy_exit_counts(&p, &f)) {
            if (hy_exit_resets(&p, f.uptime_ms))
                hy_giveup_clear(&g);
            f.over_give_up = hy_giveup_record(&g, 1000 * i, p.give_up_within_ms);
        }
        hy_exit_verdict v = hy_exit_plan(&p, &f);
        seen[i] = v.next;
        n = v.n;
    }
    hy_giveup_free(&g);
    assert_int_equal(seen[0], HY_NEXT_BACKOFF);
    assert_int_equal(seen[1], HY_NEXT_BACKOFF);
    assert_int_equal(seen[2], HY_NEXT_BACKOFF);
    assert_int_equal(seen[3], HY_NEXT_FAILED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reason_str),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_stopping),
        cmocka_unit_test(test_stopping_during_shutdown),
        cmocka_unit_test(test_never),
        cmocka_unit_test(test_on_failure),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_reset_boundary),
        cmocka_unit_test(test_retrying),
        cmocka_unit_test(test_give_up),
        cmocka_unit_test(test_delay_zero),
        cmocka_unit_test(test_n_capped),
        cmocka_unit_test(test_jitter),
        cmocka_unit_test(test_counts_with_window),
    };
    return cmocka_run_group_tests_name("exitplan", tests, NULL, NULL);
}
