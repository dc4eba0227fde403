/* test_log.c - a worker's stderr line in hyphad's log: the level it starts
 * with (sd-daemon priorities, Python's logging names), in both formats. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "hypha/log.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

typedef struct level_case {
    const char *line;
    hy_log_level level;
    size_t skip;
} level_case;

static void line_levels(void **state)
{
    (void)state;
    static const level_case cases[] = {
        {"<0>emergency", HY_ERROR, 3}, {"<3>err", HY_ERROR, 3},   {"<4>careful", HY_WARN, 3},
        {"<5>notice", HY_INFO, 3},     {"<6>info", HY_INFO, 3},    {"<7>noise", HY_DEBUG, 3},
        {"<8>not a priority", HY_INFO, 0}, {"<4", HY_INFO, 0},     {"DEBUG x", HY_DEBUG, 6},
        {"INFO started", HY_INFO, 5},  {"WARNING slow", HY_WARN, 8}, {"ERROR handler failed", HY_ERROR, 6},
        {"CRITICAL down", HY_ERROR, 9}, {"ERROR", HY_INFO, 0},     {"ERROR ", HY_INFO, 0},
        {"ERRORS are words", HY_INFO, 0}, {"error lower case", HY_INFO, 0}, {"", HY_INFO, 0},
        {"plain line", HY_INFO, 0},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        size_t skip = 99;
        hy_log_level l = hy_log_line_level(cases[i].line, strlen(cases[i].line), &skip);
        if (l != cases[i].level || skip != cases[i].skip)
            fail_msg("'%s': level %d skip %zu, wanted %d and %zu", cases[i].line, l, skip, cases[i].level,
                     cases[i].skip);
    }
}

static char *logged(hy_log_format fmt, hy_log_level min, const char *line)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    hy_log_init(f, fmt, min);
    hy_log_worker_line("risk", 1, line, strlen(line), 0);
    hy_log_init(stderr, HY_LOG_TEXT, HY_INFO);
    fclose(f);
    return buf;
}

/* A JSON line starts with {"time":"YYYY-MM-DDTHH:MM:SS.mmmZ", (UTC, now):
 * checked, then cut out so that the rest can be compared exactly. */
static char *without_time(char *line)
{
    static const char head[] = "{\"time\":\"";
    const size_t stamp = 24; /* 2026-12-01T12:00:00.123Z */
    if (strncmp(line, head, sizeof head - 1) != 0)
        fail_msg("no time first: %s", line);
    const char *t = line + sizeof head - 1;
    for (size_t i = 0; i < stamp; i++) {
        char c = t[i];
        bool ok = i == 4 || i == 7 ? c == '-' : i == 10 ? c == 'T' : i == 13 || i == 16 ? c == ':'
                  : i == 19 ? c == '.' : i == 23 ? c == 'Z' : c >= '0' && c <= '9';
        if (!ok)
            fail_msg("time '%.24s' is not RFC 3339 UTC with milliseconds (at %zu)", t, i);
    }
    if (strncmp(t + stamp, "\",", 2) != 0)
        fail_msg("time not followed by the next key: %s", line);
    struct tm tm = {0};
    assert_non_null(strptime(t, "%Y-%m-%dT%H:%M:%S", &tm));
    time_t when = timegm(&tm), now = time(NULL);
    if (when > now + 1 || when < now - 5)
        fail_msg("time %.24s is not now (%lld)", t, (long long)now);
    memmove(line + 1, t + stamp + 2, strlen(t + stamp + 2) + 1);
    return line;
}

static void json_lines_carry_the_time_first(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    hy_log_init(f, HY_LOG_JSON, HY_INFO);
    hy_log(HY_WARN, "supervisor", "exited", "worker", "risk", NULL);
    hy_log_init(stderr, HY_LOG_TEXT, HY_INFO);
    fclose(f);
    assert_string_equal(without_time(buf), "{\"level\":\"warn\",\"component\":\"supervisor\",\"msg\":\"exited\","
                                           "\"worker\":\"risk\"}\n");
    free(buf);
    /* text: no time (journald adds it) */
    buf = NULL;
    f = open_memstream(&buf, &len);
    assert_non_null(f);
    hy_log_init(f, HY_LOG_TEXT, HY_INFO);
    hy_log(HY_WARN, "supervisor", "exited", "worker", "risk", NULL);
    hy_log_init(stderr, HY_LOG_TEXT, HY_INFO);
    fclose(f);
    assert_string_equal(buf, "warn supervisor exited worker=risk\n");
    free(buf);
}

/* --log-level: its words, and lines below the minimum are not written. */
static void levels_by_name(void **state)
{
    (void)state;
    static const char *const words[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        hy_log_level l = HY_ERROR;
        assert_int_equal(hy_log_level_parse(words[i], &l), 0);
        assert_int_equal(l, (hy_log_level)i);
    }
    hy_log_level l = HY_WARN;
    assert_int_equal(hy_log_level_parse("warning", &l), -1);
    assert_int_equal(hy_log_level_parse("INFO", &l), -1);
    assert_int_equal(hy_log_level_parse("", &l), -1);
    assert_int_equal(l, HY_WARN);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    hy_log_init(f, HY_LOG_TEXT, HY_WARN);
    hy_log(HY_INFO, "supervisor", "started", NULL);
    hy_log(HY_WARN, "supervisor", "slow", NULL);
    hy_log_worker_line("risk", 0, "INFO hello", 10, 0);
    hy_log_worker_line("risk", 0, "ERROR lost", 10, 0);
    hy_log_init(stderr, HY_LOG_TEXT, HY_INFO);
    fclose(f);
    assert_string_equal(buf, "warn supervisor slow\nerror risk[0] lost\n");
    free(buf);
}

static void worker_lines_in_both_formats(void **state)
{
    (void)state;
    char *t = logged(HY_LOG_TEXT, HY_INFO, "WARNING queue is deep");
    assert_string_equal(t, "warn risk[1] queue is deep\n");
    free(t);
    t = logged(HY_LOG_JSON, HY_INFO, "<3>lost the exchange");
    assert_string_equal(without_time(t), "{\"level\":\"error\",\"component\":\"risk[1]\",\"worker\":\"risk\",\"instance\":\"1\","
                           "\"msg\":\"lost the exchange\"}\n");
    free(t);
    t = logged(HY_LOG_TEXT, HY_INFO, "print() output");
    assert_string_equal(t, "info risk[1] print() output\n");
    free(t);
    t = logged(HY_LOG_TEXT, HY_INFO, "DEBUG chatty"); /* under --log-level info: not logged */
    assert_string_equal(t, "");
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(line_levels),
        cmocka_unit_test(worker_lines_in_both_formats),
        cmocka_unit_test(json_lines_carry_the_time_first),
        cmocka_unit_test(levels_by_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
