/* test_backoff.c - restart delays, jitter and the give-up window. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "hypha/backoff.h"

static hy_policy policy(uint64_t initial, double factor, uint64_t max, double jitter)
{
    hy_policy p;
    hy_policy_builtin(&p);
    p.backoff_initial_ms = initial;
    p.backoff_factor = factor;
    p.backoff_max_ms = max;
    p.backoff_jitter = jitter;
    return p;
}

static void test_growth_and_cap(void **state)
{
    (void)state;
    hy_policy p = policy(100, 2.0, 30000, 0.0);
    uint64_t want[] = {100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000};
    for (uint32_t n = 0; n < sizeof want / sizeof want[0]; n++)
        assert_int_equal(hy_backoff_delay_ms(&p, n, 0.0), want[n]);
    /* huge n: capped, not inf/NaN */
    assert_int_equal(hy_backoff_delay_ms(&p, 5000, 0.0), 30000);
    p = policy(0, 2.0, 0, 0.5);
    assert_int_equal(hy_backoff_delay_ms(&p, 3, 1.0), 0); /* backoff 0 stays 0 */
    p = policy(250, 1.0, 1000, 0.0);
    assert_int_equal(hy_backoff_delay_ms(&p, 7, 0.0), 250); /* factor 1: constant */
}

static void test_jitter_bounds(void **state)
{
    (void)state;
    hy_policy p = policy(1000, 2.0, 30000, 0.2);
    assert_int_equal(hy_backoff_delay_ms(&p, 0, -1.0), 800);
    assert_int_equal(hy_backoff_delay_ms(&p, 0, 1.0), 1200);
    assert_int_equal(hy_backoff_delay_ms(&p, 0, 0.5), 1100);
    assert_int_equal(hy_backoff_delay_ms(&p, 10, 1.0), 36000); /* jitter after the cap */
    /* draws are spread over [-1, 1] */
    uint64_t st = 12345;
    double lo = 1, hi = -1, sum = 0;
    for (int i = 0; i < 100000; i++) {
        double u = hy_rand_signed(&st);
        assert_true(u >= -1.0 && u <= 1.0);
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
        sum += u;
    }
    assert_true(lo < -0.99 && hi > 0.99);
    assert_true(sum / 100000 > -0.02 && sum / 100000 < 0.02);
    uint64_t zero = 0;
    (void)hy_rand_signed(&zero);
    assert_true(zero != 0); /* a zero state would stick at zero */
}

static void test_giveup_window(void **state)
{
    (void)state;
    hy_giveup g;
    assert_int_equal(hy_giveup_init(&g, 3), 0);
    /* 3 failures are tolerated; the 4th within 10s gives up */
    assert_false(hy_giveup_record(&g, 1000, 10000));
    assert_false(hy_giveup_record(&g, 2000, 10000));
    assert_false(hy_giveup_record(&g, 3000, 10000));
    assert_true(hy_giveup_record(&g, 4000, 10000));
    hy_giveup_clear(&g);
    /* spread out: never 4 within 10s */
    assert_false(hy_giveup_record(&g, 0, 10000));
    assert_false(hy_giveup_record(&g, 4000, 10000));
    assert_false(hy_giveup_record(&g, 8000, 10000));
    assert_false(hy_giveup_record(&g, 12000, 10000)); /* oldest (0) is 12s back */
    assert_true(hy_giveup_record(&g, 13000, 10000));  /* 4000..13000: 9s */
    hy_giveup_free(&g);

    assert_int_equal(hy_giveup_init(&g, 0), 0); /* 0: never give up */
    for (int i = 0; i < 100; i++)
        assert_false(hy_giveup_record(&g, (uint64_t)i, 10000));
    hy_giveup_free(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_growth_and_cap),
        cmocka_unit_test(test_jitter_bounds),
        cmocka_unit_test(test_giveup_window),
    };
    return cmocka_run_group_tests_name("backoff", tests, NULL, NULL);
}
