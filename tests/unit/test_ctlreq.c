/* test_ctlreq.c - a control request before it is run (hypha/ctlreq.h):
 * lines cut from a client's bytes, the refusals in docs/control.md's order,
 * NAME and NAME[i], tail's and tap's arguments, and the reply to a refusal.
 * The schema is the wire vectors' examples contracts. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>
#include <limits.h>

#include "hypha/ctlreq.h"
#include "hypha/schema.h"
#include "testdir.h"

static char dir[PATH_MAX];
static hy_schema *schema;
static hy_ctl_facts facts;
static hy_ctl_req req;
static char why[HY_CTL_WHY_MAX];

static int setup(void **state)
{
    (void)state;
    char path[PATH_MAX + 32];
    hy_err err = {{0}};
    if (hy_test_mkdtemp("ctlreq", dir) < 0 ||
        hy_test_copy_vector(dir, "mycelium-examples.contracts.yaml", "contracts.yaml") < 0)
        return -1;
    snprintf(path, sizeof path, "%s/contracts.yaml", dir);
    schema = hy_schema_load(path, &err);
    return schema ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    hy_schema_free(schema);
    return hy_test_rmtree(dir);
}

/* Before each test: a connection that takes requests, hyphad running. */
static int fresh(void **state)
{
    (void)state;
    facts = (hy_ctl_facts){schema, false, false, true, true};
    return 0;
}

static int parse(const char *line) { return hy_ctl_req_parse(line, strlen(line), &facts, &req, why, sizeof why); }

static void refused(const char *line, const char *expect)
{
    if (parse(line) == 0)
        fail_msg("accepted: %s", line);
    assert_string_equal(why, expect);
    assert_null(req.json); /* nothing held */
}

static void refused_prefix(const char *line, const char *prefix)
{
    if (parse(line) == 0)
        fail_msg("accepted: %s", line);
    if (strncmp(why, prefix, strlen(prefix)) != 0)
        fail_msg("%s: got '%s'", line, why);
}

static void accepted(const char *line)
{
    if (parse(line) < 0)
        fail_msg("%s: refused: %s", line, why);
}

/* ---- lines ------------------------------------------------------------------ */

static void test_lines(void **state)
{
    (void)state;
    size_t len = 99;
    assert_int_equal(hy_ctl_next_line("ab\ncd", 5, false, &len), 3);
    assert_int_equal(len, 2);
    assert_int_equal(hy_ctl_next_line("ab\r\n", 4, false, &len), 4);
    assert_int_equal(len, 2);
    assert_int_equal(hy_ctl_next_line("\r\n", 2, false, &len), 2);
    assert_int_equal(len, 0); /* blank: no request */
    assert_int_equal(hy_ctl_next_line("abc", 3, false, &len), 0);
    assert_int_equal(hy_ctl_next_line("abc\r", 4, true, &len), 4); /* the last line, at EOF */
    assert_int_equal(len, 3);
    assert_int_equal(hy_ctl_next_line("a\r\rb\n", 5, false, &len), 5);
    assert_int_equal(len, 4); /* only the last \r goes */
}

/* ---- the request: JSON, object, cmd, streaming, unknown --------------------------- */

static void test_refusal_order(void **state)
{
    (void)state;
    refused_prefix("{\"cmd\":", "not JSON: ");
    refused_prefix("{\"cmd\":\"status\",\"cmd\":\"health\"}", "not JSON: duplicate object key");
    refused_prefix("\xff", "not JSON: ");
    refused("[{\"cmd\":\"status\"}]", "a request is a JSON object: {\"cmd\": \"status\"}");
    refused_prefix("\"status\"", "not JSON: '[' or '{' expected");
    refused("{}", "the request has no \"cmd\" (status, health, restart, stop, start, signal, reload, upgrade, tail, tap, metrics)");
    refused("{\"cmd\":7}", "the request has no \"cmd\" (status, health, restart, stop, start, signal, reload, upgrade, tail, tap, metrics)");
    refused("{\"cmd\":\"dance\"}",
            "unknown command 'dance' (status, health, restart, stop, start, signal, reload, upgrade, tail, tap, metrics)");
    facts.streaming = true; /* before the command is looked at */
    refused("{\"cmd\":\"dance\"}", "this connection is streaming (tail -f or tap): open another one");
    refused("{\"cmd\":\"tail\"}", "this connection is streaming (tail -f or tap): open another one");
    refused("{}", "the request has no \"cmd\" (status, health, restart, stop, start, signal, reload, upgrade, tail, tap, metrics)");
}

static void test_plain_commands(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        hy_ctl_cmd cmd;
    } cases[] = {{"{\"cmd\":\"health\"}", HY_CTL_HEALTH},
                 {"{\"cmd\":\"metrics\",\"extra\":[1,{}]}", HY_CTL_METRICS}, /* unknown keys are ignored */
                 {" {\"cmd\" : \"reload\"} ", HY_CTL_RELOAD}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        accepted(cases[i].line);
        assert_int_equal(req.cmd, cases[i].cmd);
        assert_null(req.name);
        hy_ctl_req_free(&req);
    }
    facts.can_reload = false;
    refused("{\"cmd\":\"reload\"}", "reload is not available");
}

/* ---- NAME ------------------------------------------------------------------------ */

static void test_selectors(void **state)
{
    (void)state;
    hy_ctl_sel sel;
    assert_int_equal(hy_ctl_sel_parse("risk", &sel, why, sizeof why), 0);
    assert_string_equal(sel.base, "risk");
    assert_int_equal(sel.index, -1);
    assert_int_equal(hy_ctl_sel_parse("risk[12]", &sel, why, sizeof why), 0);
    assert_string_equal(sel.base, "risk");
    assert_int_equal(sel.index, 12);
    /* a number that fits: parsed; the lookup says there is no such instance */
    assert_int_equal(hy_ctl_sel_parse("a[99999999999]", &sel, why, sizeof why), 0);
    assert_int_equal(sel.index, 99999999999L);
    static const char *const bad[] = {"a[", "a[]", "a[1", "a[1]x", "a[1x]", "a[-1]", "a[99999999999999999999]",
                                      "a[0][1]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char expect[128];
        if (hy_ctl_sel_parse(bad[i], &sel, why, sizeof why) == 0)
            fail_msg("accepted %s", bad[i]);
        snprintf(expect, sizeof expect, "'%s': an instance is written name[N], e.g. a[0]", bad[i]);
        assert_string_equal(why, expect);
    }
    assert_int_equal(hy_ctl_sel_parse("[0]", &sel, why, sizeof why), -1);
    assert_string_equal(why, "'[0]' is not a worker name");
    assert_int_equal(hy_ctl_sel_parse("", &sel, why, sizeof why), -1);
    assert_string_equal(why, "'' is not a worker name");
    char name[HY_CTL_NAME_MAX + 1];
    memset(name, 'w', HY_CTL_NAME_MAX - 1);
    name[HY_CTL_NAME_MAX - 1] = '\0'; /* 255 bytes: the longest */
    assert_int_equal(hy_ctl_sel_parse(name, &sel, why, sizeof why), 0);
    name[HY_CTL_NAME_MAX - 1] = 'w';
    name[HY_CTL_NAME_MAX] = '\0';
    assert_int_equal(hy_ctl_sel_parse(name, &sel, why, sizeof why), -1);
}

static void test_status(void **state)
{
    (void)state;
    accepted("{\"cmd\":\"status\"}");
    assert_int_equal(req.cmd, HY_CTL_STATUS);
    assert_null(req.name);
    assert_false(req.table);
    hy_ctl_req_free(&req);
    accepted("{\"cmd\":\"status\",\"name\":null,\"table\":true}");
    assert_null(req.name);
    assert_true(req.table);
    hy_ctl_req_free(&req);
    accepted("{\"cmd\":\"status\",\"name\":\"risk[1]\",\"table\":1}"); /* only true is true */
    assert_string_equal(req.name, "risk[1]");
    assert_string_equal(req.sel.base, "risk");
    assert_int_equal(req.sel.index, 1);
    assert_false(req.table);
    hy_ctl_req_free(&req);
    refused("{\"cmd\":\"status\",\"name\":5}", "status: 'name' must be a string");
    refused("{\"cmd\":\"status\",\"name\":\"[0]\"}", "'[0]' is not a worker name");
}

static void test_operate(void **state)
{
    (void)state;
    accepted("{\"cmd\":\"restart\",\"name\":\"risk\"}");
    assert_int_equal(req.cmd, HY_CTL_RESTART);
    assert_string_equal(req.cmd_name, "restart");
    assert_int_equal(req.sel.index, -1);
    hy_ctl_req_free(&req);
    accepted("{\"cmd\":\"stop\",\"name\":\"risk[0]\"}");
    assert_int_equal(req.cmd, HY_CTL_STOP);
    hy_ctl_req_free(&req);
    refused("{\"cmd\":\"start\"}", "start needs a worker: {\"cmd\":\"start\",\"name\":\"NAME\"} (NAME or NAME[i])");
    refused("{\"cmd\":\"stop\",\"name\":[]}", "stop needs a worker: {\"cmd\":\"stop\",\"name\":\"NAME\"} (NAME or NAME[i])");
    refused("{\"cmd\":\"stop\",\"name\":\"a[\"}", "'a[': an instance is written name[N], e.g. a[0]");
    facts.shutting_down = true; /* after the name's presence, before its form */
    refused("{\"cmd\":\"stop\",\"name\":\"a[\"}", "hyphad is shutting down");
    refused("{\"cmd\":\"stop\"}", "stop needs a worker: {\"cmd\":\"stop\",\"name\":\"NAME\"} (NAME or NAME[i])");
    accepted("{\"cmd\":\"status\",\"name\":\"risk\"}"); /* only the three are refused */
    hy_ctl_req_free(&req);
}

static void test_signal(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        int sig;
    } good[] = {{"{\"cmd\":\"signal\",\"name\":\"risk\",\"signal\":\"HUP\"}", SIGHUP},
                {"{\"cmd\":\"signal\",\"name\":\"risk[1]\",\"signal\":\"sigusr1\"}", SIGUSR1},
                {"{\"cmd\":\"signal\",\"name\":\"all\",\"signal\":15}", 15},
                {"{\"cmd\":\"signal\",\"name\":\"all\",\"signal\":64}", 64}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        accepted(good[i].line);
        assert_int_equal(req.cmd, HY_CTL_SIGNAL);
        assert_int_equal(req.signal, good[i].sig);
        hy_ctl_req_free(&req);
    }
    static const char *const not_a_signal[] = {"{\"cmd\":\"signal\",\"name\":\"r\",\"signal\":0}",
                                               "{\"cmd\":\"signal\",\"name\":\"r\",\"signal\":65}",
                                               "{\"cmd\":\"signal\",\"name\":\"r\",\"signal\":\"FOO\"}",
                                               "{\"cmd\":\"signal\",\"name\":\"r\",\"signal\":[1]}"};
    for (size_t i = 0; i < sizeof not_a_signal / sizeof not_a_signal[0]; i++)
        refused_prefix(not_a_signal[i], "signal: '");
    refused("{\"cmd\":\"signal\",\"name\":\"r\"}",
            "signal needs a worker and a signal: {\"cmd\":\"signal\",\"name\":\"NAME\",\"signal\":\"HUP\"}");
    facts.shutting_down = true;
    refused("{\"cmd\":\"signal\",\"name\":\"r\",\"signal\":\"HUP\"}", "hyphad is shutting down");
}

static void test_all(void **state)
{
    (void)state;
    accepted("{\"cmd\":\"restart\",\"name\":\"all\"}");
    assert_string_equal(req.sel.base, "all");
    assert_int_equal(req.sel.index, -1);
    hy_ctl_req_free(&req);
    refused("{\"cmd\":\"status\",\"name\":\"all[0]\"}",
            "'all[0]': `all` is every instance of every worker, it takes no [N]");
}

static void test_tail(void **state)
{
    (void)state;
    accepted("{\"cmd\":\"tail\",\"name\":\"risk\"}");
    assert_int_equal(req.cmd, HY_CTL_TAIL);
    assert_int_equal(req.lines, 10);
    assert_false(req.follow);
    hy_ctl_req_free(&req);
    accepted("{\"cmd\":\"tail\",\"name\":\"risk[2]\",\"lines\":-5,\"follow\":true}");
    assert_int_equal(req.lines, 0);
    assert_true(req.follow);
    assert_int_equal(req.sel.index, 2);
    hy_ctl_req_free(&req);
    accepted("{\"cmd\":\"tail\",\"name\":\"risk\",\"lines\":9223372036854775807}");
    assert_true(req.lines == INT64_MAX);
    hy_ctl_req_free(&req);
    refused("{\"cmd\":\"tail\",\"lines\":1}", "tail needs a worker: {\"cmd\":\"tail\",\"name\":\"NAME\",\"lines\":10}");
    static const char *const bad[] = {"{\"cmd\":\"tail\",\"name\":\"r\",\"lines\":\"5\"}",
                                      "{\"cmd\":\"tail\",\"name\":\"r\",\"lines\":5.0}",
                                      "{\"cmd\":\"tail\",\"name\":\"r\",\"lines\":null}",
                                      "{\"cmd\":\"tail\",\"name\":\"r\",\"follow\":1}",
                                      "{\"cmd\":\"tail\",\"name\":\"[0]\",\"follow\":\"yes\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        refused(bad[i], "tail: 'lines' is a number and 'follow' true or false");
    refused_prefix("{\"cmd\":\"tail\",\"name\":\"r\",\"lines\":99999999999999999999}", "not JSON: ");
}

static bool tapped(const hy_ctl_req *r, unsigned id) { return r->tap_bits[id >> 3] & (1u << (id & 7)); }

static void test_tap(void **state)
{
    (void)state;
    accepted("{\"cmd\":\"tap\",\"types\":[\"CounterUpdate\",1001,\"1003\",1001]}");
    assert_int_equal(req.cmd, HY_CTL_TAP);
    assert_true(tapped(&req, 1001) && tapped(&req, 1002) && tapped(&req, 1003));
    assert_false(tapped(&req, 1000) || tapped(&req, 1004));
    char *names = json_dumps(req.tap_names, JSON_COMPACT);
    assert_string_equal(names, "[\"CounterUpdate\",\"TextMessage\",\"BatchOperation\",\"TextMessage\"]");
    free(names);
    assert_int_equal(req.tap_count, 0);
    hy_ctl_req_free(&req);
    accepted("{\"cmd\":\"tap\",\"types\":[1002],\"count\":3}");
    assert_int_equal(req.tap_count, 3);
    hy_ctl_req_free(&req);
    accepted("{\"cmd\":\"tap\",\"types\":[1002],\"count\":null}");
    assert_int_equal(req.tap_count, 0);
    hy_ctl_req_free(&req);
    static const char *const no_types[] = {"{\"cmd\":\"tap\"}", "{\"cmd\":\"tap\",\"types\":[]}",
                                           "{\"cmd\":\"tap\",\"types\":\"TextMessage\"}"};
    for (size_t i = 0; i < sizeof no_types / sizeof no_types[0]; i++)
        refused(no_types[i], "tap needs types: {\"cmd\":\"tap\",\"types\":[\"TypeName\" or id, ...]}");
    static const char *const bad_count[] = {"{\"cmd\":\"tap\",\"types\":[1],\"count\":0}",
                                            "{\"cmd\":\"tap\",\"types\":[1],\"count\":-1}",
                                            "{\"cmd\":\"tap\",\"types\":[1],\"count\":\"3\"}",
                                            "{\"cmd\":\"tap\",\"types\":[1],\"count\":1.5}"};
    for (size_t i = 0; i < sizeof bad_count / sizeof bad_count[0]; i++)
        refused(bad_count[i], "tap: 'count' must be a number above 0"); /* before the types are looked up */
    refused("{\"cmd\":\"tap\",\"types\":[1001,{\"a\":[1]}]}",
            "tap: the schema has no message {\"a\": [1]} (it has: TextMessage (1001), CounterUpdate (1002), "
            "BatchOperation (1003))");
    refused_prefix("{\"cmd\":\"tap\",\"types\":[0]}", "tap: the schema has no message 0 (");
    refused_prefix("{\"cmd\":\"tap\",\"types\":[65536]}", "tap: the schema has no message 65536 (");
}

/* ---- the reply to a refusal ----------------------------------------------------------- */

static void test_upgrade(void **state)
{
    (void)state;
    accepted("{\"cmd\":\"upgrade\"}");
    assert_int_equal(req.cmd, HY_CTL_UPGRADE);
    assert_null(req.path);
    hy_ctl_req_free(&req);
    accepted("{\"cmd\":\"upgrade\",\"path\":\"/usr/local/bin/hyphad\"}");
    assert_string_equal(req.path, "/usr/local/bin/hyphad");
    hy_ctl_req_free(&req);
    accepted("{\"cmd\":\"upgrade\",\"path\":null}");
    assert_null(req.path);
    hy_ctl_req_free(&req);
    static const char bad[] = "upgrade: 'path' is the new binary's absolute path: "
                              "{\"cmd\":\"upgrade\",\"path\":\"/usr/bin/hyphad\"}";
    refused("{\"cmd\":\"upgrade\",\"path\":\"hyphad\"}", bad);
    refused("{\"cmd\":\"upgrade\",\"path\":7}", bad);
    facts.shutting_down = true;
    refused("{\"cmd\":\"upgrade\"}", "hyphad is shutting down");
    facts.shutting_down = false;
    facts.can_upgrade = false;
    refused("{\"cmd\":\"upgrade\"}", "upgrade is not available");
}

static void test_error_json(void **state)
{
    (void)state;
    json_t *j = hy_ctl_error_json("no worker named 'x'");
    char *text = json_dumps(j, JSON_COMPACT);
    assert_string_equal(text, "{\"ok\":false,\"error\":\"no worker named 'x'\"}");
    free(text);
    json_decref(j);
}

/* A refusal whose text was cut inside a character still says why: the bad
 * byte becomes '?' (jansson writes no string that is not UTF-8, and the
 * reply was "out of memory"; found by fuzz_control). */
static void expect_error(const char *msg, const char *prefix, const char *suffix)
{
    json_t *j = hy_ctl_error_json(msg);
    const char *e = json_string_value(json_object_get(j, "error"));
    assert_non_null(e);
    assert_false(json_is_true(json_object_get(j, "ok")));
    if (strncmp(e, prefix, strlen(prefix)) != 0 || strlen(e) < strlen(suffix) ||
        strcmp(e + strlen(e) - strlen(suffix), suffix) != 0)
        fail_msg("'%s' should start with '%s' and end with '%s'", e, prefix, suffix);
    json_decref(j);
}

static void test_refusal_cut_inside_a_character(void **state)
{
    (void)state;
    char line[4096] = "{\"cmd\":\"x";
    for (int i = 0; i < 700; i++)
        strcat(line, "\xc3\xa9"); /* é */
    strcat(line, "\"}");
    refused_prefix(line, "unknown command 'x\xc3\xa9");
    assert_int_equal(strlen(why), HY_CTL_WHY_MAX - 1); /* cut after 630 é and half of one */
    assert_null(json_string(why));
    expect_error(why, "unknown command 'x\xc3\xa9", "\xc3\xa9?");

    expect_error("caf\xc3 \xff\xfe ok \xe2\x82", "caf? ?? ok ??", "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_lines, fresh),          cmocka_unit_test_setup(test_refusal_order, fresh),
        cmocka_unit_test_setup(test_plain_commands, fresh), cmocka_unit_test_setup(test_selectors, fresh),
        cmocka_unit_test_setup(test_status, fresh),         cmocka_unit_test_setup(test_operate, fresh),
        cmocka_unit_test_setup(test_tail, fresh),           cmocka_unit_test_setup(test_tap, fresh),
        cmocka_unit_test_setup(test_signal, fresh),         cmocka_unit_test_setup(test_all, fresh),
        cmocka_unit_test_setup(test_upgrade, fresh),        cmocka_unit_test_setup(test_error_json, fresh),     cmocka_unit_test_setup(test_refusal_cut_inside_a_character, fresh),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
