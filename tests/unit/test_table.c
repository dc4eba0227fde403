/* test_table.c - aligned text tables. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

#include "hypha/table.h"

static char *render(const hy_table *t)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    hy_table_print(t, f);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static void test_columns_fit_the_widest_cell(void **state)
{
    (void)state;
    hy_table t;
    hy_table_init(&t, 3);
    hy_table_add(&t, (const char *const[]){"NAME", "STATE", "NOTE"});
    hy_table_add(&t, (const char *const[]){"risk", "running", "ok"});
    hy_table_add(&t, (const char *const[]){"a-much-longer-name", NULL, "±20%"});
    hy_table_add(&t, (const char *const[]){"é", "failed", ""});
    char *out = render(&t);
    assert_string_equal(out,
                        "NAME                STATE    NOTE\n"
                        "risk                running  ok\n"
                        "a-much-longer-name           ±20%\n"
                        "é                   failed\n");
    free(out);
    hy_table_free(&t);
}

static void test_empty(void **state)
{
    (void)state;
    hy_table t;
    hy_table_init(&t, 2);
    char *out = render(&t);
    assert_string_equal(out, "");
    free(out);
    hy_table_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_columns_fit_the_widest_cell),
        cmocka_unit_test(test_empty),
    };
    return cmocka_run_group_tests_name("table", tests, NULL, NULL);
}
