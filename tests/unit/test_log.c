/* test_log.c - a worker's stderr line in hyphad's log: the level it starts
 * with (sd-daemon priorities, Python's logging names), in both formats. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static void worker_lines_in_both_formats(void **state)
{
    (void)state;
    char *t = logged(HY_LOG_TEXT, HY_INFO, "WARNING queue is deep");
    assert_string_equal(t, "warn risk[1] queue is deep\n");
    free(t);
    t = logged(HY_LOG_JSON, HY_INFO, "<3>lost the exchange");
    assert_string_equal(t, "{\"level\":\"error\",\"component\":\"risk[1]\",\"worker\":\"risk\",\"instance\":\"1\","
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
