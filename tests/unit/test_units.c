/* test_units.c - duration and size notations: parsing, formatting, round trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "hypha/units.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

typedef struct good_case {
    const char *text;
    uint64_t value;
} good_case;

typedef struct bad_case {
    const char *text;
    const char *why; /* the exact reason */
} bad_case;

#define WHY_DUR_NUMBER "expected a number followed by a unit (ms, s, m, h, d), e.g. 100ms or 5s"
#define WHY_DUR_MISSING "missing unit (ms, s, m, h, d), e.g. 5s"
#define WHY_DUR_UNIT "unknown unit (use ms, s, m, h or d)"
#define WHY_DUR_WHOLE "durations are counted in whole milliseconds"
#define WHY_SIZE_NUMBER "expected a number with an optional unit (B, KiB, MiB, GiB, KB, MB, GB), e.g. 8MiB"
#define WHY_SIZE_UNIT "unknown unit (use B, KiB, MiB, GiB, KB, MB or GB)"

typedef int (*parse_fn)(const char *, uint64_t *, char *, size_t);

static void check_good(parse_fn parse, const good_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 0xdeadbeef;
        char why[160] = "untouched";
        if (parse(c[i].text, &v, why, sizeof why) != 0)
            fail_msg("'%s' rejected: %s", c[i].text, why);
        if (v != c[i].value)
            fail_msg("'%s' gave %llu, expected %llu", c[i].text, (unsigned long long)v,
                     (unsigned long long)c[i].value);
    }
}

/* A rejected input leaves *out alone and says exactly why. */
static void check_bad(parse_fn parse, const bad_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 12345;
        char why[160] = "";
        if (parse(c[i].text, &v, why, sizeof why) != -1)
            fail_msg("'%s' accepted as %llu", c[i].text, (unsigned long long)v);
        assert_int_equal(v, 12345);
        if (strcmp(why, c[i].why) != 0)
            fail_msg("'%s': reason '%s', expected '%s'", c[i].text, why, c[i].why);
    }
}

/* ---- durations ---------------------------------------------------------- */

static void test_duration_valid(void **state)
{
    (void)state;
    static const good_case cases[] = {
        {"100ms", 100},      {"5s", 5000},          {"1.5s", 1500},
        {"1m30s", 90000},    {"0", 0},              {"2h", 7200000},
        {"1d", 86400000},    {"0s", 0},             {"0ms", 0},
        {"0.001s", 1},       {"1.25m", 75000},      {"1h1m1s1ms", 3661001},
        {"1d2h", 93600000},  {"250ms", 250},        {"0.5h", 1800000},
        {"1.000000s", 1000}, {"90s", 90000},        {"007s", 7000},
        /* the largest whole-second value the microsecond arithmetic holds */
        {"18446744073709s", 18446744073709000ull},
    };
    check_good(hy_parse_duration_ms, cases, N_ELEMS(cases));
}

static void test_duration_invalid(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        {"5", WHY_DUR_MISSING},
        {"5x", WHY_DUR_UNIT},
        {"5S", WHY_DUR_UNIT},         /* units are lower case */
        {"5sec", WHY_DUR_UNIT},
        {"1e3ms", WHY_DUR_UNIT},
        {"-1s", WHY_DUR_NUMBER},
        {"", "empty duration"},
        {"1.2345678s", "at most 6 decimals"},
        {"1.s", WHY_DUR_NUMBER},
        {".5s", WHY_DUR_NUMBER},
        {" 5s", WHY_DUR_NUMBER},
        {"s", WHY_DUR_NUMBER},
        {"5 s", "no space between number and unit: write 5s, not 5 s"},
        {"00", WHY_DUR_MISSING},      /* only a bare "0" has no unit */
        {"1s5", WHY_DUR_MISSING},
        {"0.5ms", WHY_DUR_WHOLE},
        {"1.234567s", WHY_DUR_WHOLE},
        {"1.0001s", WHY_DUR_WHOLE},
        /* overflow: the digits themselves do not fit in 64 bits */
        {"99999999999999999999s", "number too large"},
        /* overflow: the number fits, number * unit does not */
        {"213503983d", "duration too large"},
        {"18446744073710s", "duration too large"},
        /* overflow: each part fits, the sum does not */
        {"213503982d213503982d", "duration too large"},
    };
    check_bad(hy_parse_duration_ms, cases, N_ELEMS(cases));
}

static void test_duration_null_and_short_why(void **state)
{
    (void)state;
    uint64_t v = 7;
    char why[8];
    assert_int_equal(hy_parse_duration_ms(NULL, &v, why, sizeof why), -1);
    assert_string_equal(why, "empty d"); /* cut to the buffer, NUL-terminated */
    assert_int_equal(v, 7);
    /* no buffer for the reason at all */
    assert_int_equal(hy_parse_duration_ms("5x", &v, NULL, 0), -1);
    assert_int_equal(hy_parse_duration_ms("5x", &v, why, 0), -1);
    assert_int_equal(v, 7);
}

static void test_format_duration(void **state)
{
    (void)state;
    static const good_case cases[] = {
        {"0s", 0},           {"1ms", 1},      {"100ms", 100},           {"1s", 1000},
        {"1s500ms", 1500},   {"5s", 5000},    {"1m30s", 90000},         {"1m", 60000},
        {"2h", 7200000},     {"1d", 86400000}, {"1d1h1m1s1ms", 90061001}, {"1h1s", 3601000},
        {"7d", 604800000},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        char buf[64];
        assert_ptr_equal(hy_format_duration(cases[i].value, buf, sizeof buf), buf);
        assert_string_equal(buf, cases[i].text);
    }
}

/* A short buffer is cut and NUL-terminated; nothing past it is written. */
static void test_format_duration_truncates(void **state)
{
    (void)state;
    char buf[16];
    memset(buf, 'X', sizeof buf);
    hy_format_duration(90061001, buf, 6);
    assert_string_equal(buf, "1d1h1");
    for (size_t i = 6; i < sizeof buf; i++)
        assert_int_equal(buf[i], 'X');
}

static void test_duration_round_trip(void **state)
{
    (void)state;
    static const uint64_t fixed[] = {
        0, 1, 999, 1000, 1001, 59999, 60000, 3599999, 3600000, 86399999, 86400000,
        86400001, 90061001, 31536000000ull, 18446744073709000ull,
    };
    char buf[64];
    uint64_t back;
    for (size_t i = 0; i < N_ELEMS(fixed); i++) {
        hy_format_duration(fixed[i], buf, sizeof buf);
        if (hy_parse_duration_ms(buf, &back, NULL, 0) != 0 || back != fixed[i])
            fail_msg("%llu -> '%s' does not parse back", (unsigned long long)fixed[i], buf);
    }
    /* a spread of values with every unit in play */
    for (uint64_t v = 0; v < 200000000ull; v = v * 3 + 7) {
        hy_format_duration(v, buf, sizeof buf);
        assert_int_equal(hy_parse_duration_ms(buf, &back, NULL, 0), 0);
        assert_int_equal(back, v);
    }
    /* parse then format gives the canonical spelling */
    static const struct { const char *in, *out; } canon[] = {
        {"90s", "1m30s"}, {"1.5s", "1s500ms"}, {"0", "0s"}, {"24h", "1d"}, {"0.25m", "15s"},
        {"5s1m", "1m5s"},
    };
    for (size_t i = 0; i < N_ELEMS(canon); i++) {
        assert_int_equal(hy_parse_duration_ms(canon[i].in, &back, NULL, 0), 0);
        assert_string_equal(hy_format_duration(back, buf, sizeof buf), canon[i].out);
    }
}

/* ---- sizes ---------------------------------------------------------------- */

static void test_size_valid(void **state)
{
    (void)state;
    static const good_case cases[] = {
        {"8MiB", 8388608},
        {"1KiB", 1024},
        {"64KB", 64000},
        {"512", 512},
        {"1.5KiB", 1536},
        {"0", 0},
        {"0B", 0},
        {"10B", 10},
        {"1GiB", 1073741824ull},
        {"3MB", 3000000},
        {"2GB", 2000000000ull},
        {"0.5MiB", 524288},
        {"1.5KB", 1500},
        {"8 MiB", 8388608}, /* a space before the unit is allowed */
        {"17179869183GiB", 17179869183ull << 30},
        {"1844674407370955160", 1844674407370955160ull},
    };
    check_good(hy_parse_size, cases, N_ELEMS(cases));
}

static void test_size_invalid(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        {"1.3B", "size is not a whole number of bytes"},
        {"1.0001KiB", "size is not a whole number of bytes"},
        {"MiB", WHY_SIZE_NUMBER},
        {"", "empty size"},
        {"-1", WHY_SIZE_NUMBER},
        {"lots", WHY_SIZE_NUMBER},
        {" 8MiB", WHY_SIZE_NUMBER},
        {"1.0000001KB", "at most 6 decimals"},
        {"8mib", WHY_SIZE_UNIT}, /* units are case-sensitive */
        {"8MiBs", WHY_SIZE_UNIT},
        {"16EiB", WHY_SIZE_UNIT},
        {"8MiB ", WHY_SIZE_UNIT},
        {"1TB", WHY_SIZE_UNIT},
        {"17179869184GiB", "size too large"},
        {"99999999999999999999", "number too large"},
    };
    check_bad(hy_parse_size, cases, N_ELEMS(cases));
    char why[16];
    uint64_t v = 3;
    assert_int_equal(hy_parse_size(NULL, &v, why, sizeof why), -1);
    assert_string_equal(why, "empty size");
    assert_int_equal(v, 3);
}

static void test_format_size(void **state)
{
    (void)state;
    static const good_case cases[] = {
        {"0B", 0},         {"1B", 1},           {"1000B", 1000},          {"1500B", 1500},
        {"1KiB", 1024},    {"1536B", 1536},     {"64000B", 64000},        {"3KiB", 3072},
        {"8MiB", 8 << 20}, {"1025KiB", 1049600}, {"1GiB", 1ull << 30},     {"4GiB", 4ull << 30},
        {"18446744073709551615B", UINT64_MAX},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        char buf[64];
        assert_ptr_equal(hy_format_size(cases[i].value, buf, sizeof buf), buf);
        assert_string_equal(buf, cases[i].text);
    }
}

/* The forms hyphactl's tables show. */
static void test_format_age_and_bytes(void **state)
{
    (void)state;
    static const struct { double s; const char *want; } ages[] = {
        {0, "0.0s"}, {-3, "0.0s"}, {2.54, "2.5s"}, {59.94, "59.9s"}, {60, "1m00s"}, {184, "3m04s"},
        {3599, "59m59s"}, {3600, "1h00m"}, {3720, "1h02m"}, {86399, "23h59m"}, {86400, "1d00h"},
        {3 * 86400 + 7200, "3d02h"},
    };
    char buf[32];
    for (size_t i = 0; i < sizeof ages / sizeof ages[0]; i++)
        assert_string_equal(hy_format_age(ages[i].s, buf, sizeof buf), ages[i].want);
    static const struct { uint64_t n; const char *want; } sizes[] = {
        {0, "0 B"}, {512, "512 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"},
        {8u << 20, "8.0 MiB"}, {(uint64_t)5 << 40, "5.0 TiB"}, {(uint64_t)5 << 50, "5120.0 TiB"},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        assert_string_equal(hy_format_bytes(sizes[i].n, buf, sizeof buf), sizes[i].want);
}

static void test_size_round_trip(void **state)
{
    (void)state;
    static const uint64_t fixed[] = {
        0, 1, 1023, 1024, 1025, 64000, 1048575, 1048576, 8388608, 1073741823,
        1073741824, 5ull << 30, 1ull << 63, 17179869183ull << 30, 1844674407370955160ull,
    };
    char buf[64];
    uint64_t back;
    for (size_t i = 0; i < N_ELEMS(fixed); i++) {
        hy_format_size(fixed[i], buf, sizeof buf);
        if (hy_parse_size(buf, &back, NULL, 0) != 0 || back != fixed[i])
            fail_msg("%llu -> '%s' does not parse back", (unsigned long long)fixed[i], buf);
    }
    /* a spread of values, each also scaled to whole KiB and MiB */
    for (uint64_t v = 0; v < (1ull << 40); v = v * 3 + 1) {
        for (unsigned shift = 0; shift <= 20; shift += 10) {
            uint64_t x = v << shift;
            hy_format_size(x, buf, sizeof buf);
            assert_int_equal(hy_parse_size(buf, &back, NULL, 0), 0);
            assert_int_equal(back, x);
        }
    }
    static const struct { const char *in, *out; } canon[] = {
        {"1.5KiB", "1536B"}, {"1024KiB", "1MiB"}, {"0.5GiB", "512MiB"}, {"4096", "4KiB"},
        {"64KB", "64000B"}, {"1048576B", "1MiB"},
    };
    for (size_t i = 0; i < N_ELEMS(canon); i++) {
        assert_int_equal(hy_parse_size(canon[i].in, &back, NULL, 0), 0);
        assert_string_equal(hy_format_size(back, buf, sizeof buf), canon[i].out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_valid),
        cmocka_unit_test(test_duration_invalid),
        cmocka_unit_test(test_duration_null_and_short_why),
        cmocka_unit_test(test_format_duration),
        cmocka_unit_test(test_format_duration_truncates),
        cmocka_unit_test(test_duration_round_trip),
        cmocka_unit_test(test_size_valid),
        cmocka_unit_test(test_size_invalid),
        cmocka_unit_test(test_format_size),
        cmocka_unit_test(test_size_round_trip),
        cmocka_unit_test(test_format_age_and_bytes),
    };
    return cmocka_run_group_tests_name("units", tests, NULL, NULL);
}
