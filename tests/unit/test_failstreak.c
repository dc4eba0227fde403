/* test_failstreak.c - the "handler fails on every message" streak. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "hypha/failstreak.h"

static bool failing(const hy_failstreak *s, double now, uint64_t want_failed, uint64_t want_frames)
{
    uint64_t f = 0, n = 0;
    bool r = hy_failstreak_failing(s, now, &f, &n);
    if (r) {
        assert_int_equal(f, want_failed);
        assert_int_equal(n, want_frames);
    }
    return r;
}

static void every_message_fails(void **state)
{
    (void)state;
    hy_failstreak s = {0};
    assert_false(failing(&s, 1.0, 0, 0)); /* no report */
    /* 100 frames handled fine, then every one fails: a report a second */
    hy_failstreak_report(&s, 1, 101, 1.0);
    assert_false(failing(&s, 1.0, 0, 0)); /* one failure is not a pattern */
    for (uint64_t k = 2; k <= 12; k++)
        hy_failstreak_report(&s, k, 100 + k, (double)k);
    assert_true(failing(&s, 12.0, 12, 12));
    assert_true(failing(&s, 12.0 + HY_FAIL_STALE_S, 12, 12));
    assert_false(failing(&s, 12.1 + HY_FAIL_STALE_S, 0, 0)); /* no report for a minute: over */
}

static void successes_start_it_again(void **state)
{
    (void)state;
    hy_failstreak s = {0};
    for (uint64_t k = 1; k <= 20; k++)
        hy_failstreak_report(&s, k, k, (double)k);
    assert_true(failing(&s, 20.0, 20, 20));
    hy_failstreak_report(&s, 21, 60, 21.0); /* 40 frames, one failure: it handles again */
    assert_false(failing(&s, 21.0, 0, 0));
    /* one in two fails: not "every message" */
    for (uint64_t k = 22; k <= 60; k++)
        hy_failstreak_report(&s, k, 60 + 2 * (k - 21), (double)k);
    assert_false(failing(&s, 60.0, 0, 0));
}

static void a_restart_starts_from_zero(void **state)
{
    (void)state;
    hy_failstreak s = {0};
    for (uint64_t k = 1; k <= 15; k++)
        hy_failstreak_report(&s, k, k, (double)k);
    assert_true(failing(&s, 15.0, 15, 15));
    hy_failstreak_report(&s, 1, 16, 16.0); /* a new process: its count starts again */
    assert_false(failing(&s, 16.0, 0, 0));
    for (uint64_t k = 2; k <= 10; k++)
        hy_failstreak_report(&s, k, 15 + k, 15.0 + (double)k);
    assert_true(failing(&s, 25.0, 10, 10));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_message_fails),
        cmocka_unit_test(successes_start_it_again),
        cmocka_unit_test(a_restart_starts_from_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
