/* test_reload.c - what a reload may change (hypha/reload.h, docs/control.md
 * "Reload"): worker definitions compared key by key, the top-level keys a
 * running hyphad refuses to change, and the plan that says what becomes of
 * each running instance. Topologies are loaded from buffers
 * against a temp directory holding the vectors' contracts files. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "hypha/reload.h"
#include "hypha/topology.h"
#include "testdir.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static char base_dir[PATH_MAX];

static int setup(void **state)
{
    (void)state;
    if (hy_test_mkdtemp("reload", base_dir) < 0)
        return -1;
    if (hy_test_copy_vector(base_dir, "mycelium-examples.contracts.yaml", "contracts.yaml") < 0 ||
        hy_test_copy_vector(base_dir, "mycelium-examples.contracts.yaml", "same.contracts.yaml") < 0 ||
        hy_test_copy_vector(base_dir, "mycelium-defi.contracts.yaml", "other.contracts.yaml") < 0)
        return -1;
    char dir[PATH_MAX + 8];
    snprintf(dir, sizeof dir, "%s/srv", base_dir);
    if (mkdir(dir, 0755) < 0)
        return -1;
    snprintf(dir, sizeof dir, "%s/srv2", base_dir);
    if (mkdir(dir, 0755) < 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return hy_test_rmtree(base_dir);
}

static hy_topology *load_ok(const char *doc)
{
    hy_err err = {{0}};
    hy_topology *t = hy_topology_load_buffer("topo.yaml", base_dir, (const uint8_t *)doc, strlen(doc), &err);
    if (!t)
        fail_msg("load failed: %s\n--- document ---\n%s", err.msg, doc);
    return t;
}

/* ---- worker definitions --------------------------------------------- */

#define WHDR "version: 1\nschema: contracts.yaml\ncontrol: {socket: ctl.sock}\n"

/* Worker a, one key per line, every key set. */
static const char *const a_lines[] = {
    "    command: [/bin/true, --x, \"1\"]\n",                                         /* 0 */
    "    cwd: srv\n",                                                                 /* 1 */
    "    env: {K: v, L: w}\n",                                                        /* 2 */
    "    instances: 2\n",                                                             /* 3 */
    "    subscribe: [TextMessage, CounterUpdate]\n",                                  /* 4 */
    "    publish: [BatchOperation]\n",                                                /* 5 */
    "    restart: on-failure\n",                                                      /* 6 */
    "    backoff: {initial: 100ms, factor: 2, max: 10s, jitter: 0.1, reset_after: 30s}\n", /* 7 */
    "    give_up: {failures: 5, within: 1m, retry_after: 5m}\n",                      /* 8 */
    "    stop: {signal: TERM, grace: 2s}\n",                                          /* 9 */
    "    start_timeout: 3s\n",                                                        /* 10 */
    "    heartbeat: {timeout: 10s}\n",                                                /* 11 */
    "    queue: {limit: 1MiB, overflow: drop-oldest}\n",                              /* 12 */
};

static const char b_block[] = "  b:\n    command: [/bin/sh, -c, \"exit 0\"]\n";

/* The document with worker a's line `idx` replaced by `repl` (idx < 0: none
 * replaced; repl "": the key removed), b after a unless `b_first`, `defaults`
 * as the defaults block. */
static char *worker_doc(const char *defaults, int idx, const char *repl, bool b_first)
{
    static char doc[8192];
    size_t n = (size_t)snprintf(doc, sizeof doc, "%s%sworkers:\n", WHDR, defaults);
    if (b_first)
        n += (size_t)snprintf(doc + n, sizeof doc - n, "%s", b_block);
    n += (size_t)snprintf(doc + n, sizeof doc - n, "  a:\n");
    for (size_t i = 0; i < N_ELEMS(a_lines); i++)
        n += (size_t)snprintf(doc + n, sizeof doc - n, "%s", (int)i == idx ? repl : a_lines[i]);
    if (!b_first)
        n += (size_t)snprintf(doc + n, sizeof doc - n, "%s", b_block);
    assert_true(n < sizeof doc);
    return doc;
}

static const char defaults_block[] = "defaults: {restart: always, stop: {grace: 5s}}\n";

/* Two identical documents: equal definitions, from different pointers. */
static void test_equal_identical(void **state)
{
    (void)state;
    hy_topology *t1 = load_ok(worker_doc(defaults_block, -1, NULL, false));
    hy_topology *t2 = load_ok(worker_doc(defaults_block, -1, NULL, false));
    assert_int_equal(t1->nworkers, 2);
    assert_int_equal(t2->nworkers, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_ptr_not_equal(&t1->workers[i], &t2->workers[i]);
        assert_ptr_not_equal(t1->workers[i].argv, t2->workers[i].argv);
        assert_true(hy_worker_spec_equal(&t1->workers[i], &t2->workers[i]));
        assert_true(hy_worker_spec_equal(&t2->workers[i], &t1->workers[i]));
        assert_true(hy_worker_spec_equal(&t1->workers[i], &t1->workers[i]));
    }
    assert_false(hy_worker_spec_equal(&t1->workers[0], &t2->workers[1]));
    assert_false(hy_worker_spec_equal(&t1->workers[1], &t2->workers[0]));
    hy_topology_free(t1);
    hy_topology_free(t2);
}

/* Where a worker is defined does not matter: b first, a's keys in another
 * order, comments and blank lines moving every line. */
static void test_equal_position(void **state)
{
    (void)state;
    hy_topology *t1 = load_ok(worker_doc(defaults_block, -1, NULL, false));
    hy_topology *t2 = load_ok(worker_doc(defaults_block, -1, NULL, true));
    const hy_worker_spec *a1 = hy_topology_find_worker(t1, "a"), *a2 = hy_topology_find_worker(t2, "a");
    const hy_worker_spec *b1 = hy_topology_find_worker(t1, "b"), *b2 = hy_topology_find_worker(t2, "b");
    assert_ptr_equal(a1, &t1->workers[0]);
    assert_ptr_equal(a2, &t2->workers[1]);
    assert_int_not_equal(a1->line, a2->line);
    assert_true(hy_worker_spec_equal(a1, a2));
    assert_true(hy_worker_spec_equal(b1, b2));

    /* a's keys reversed, after comments and blank lines */
    char doc[8192];
    size_t n = (size_t)snprintf(doc, sizeof doc, "# a comment\n\n%s%sworkers:\n%s\n  # here is a\n  a:\n",
                                WHDR, defaults_block, b_block);
    for (size_t i = N_ELEMS(a_lines); i-- > 0;)
        n += (size_t)snprintf(doc + n, sizeof doc - n, "%s", a_lines[i]);
    assert_true(n < sizeof doc);
    hy_topology *t3 = load_ok(doc);
    const hy_worker_spec *a3 = hy_topology_find_worker(t3, "a");
    assert_int_not_equal(a3->line, a1->line);
    assert_int_not_equal(a3->col, 0);
    assert_true(hy_worker_spec_equal(a1, a3));
    assert_true(hy_worker_spec_equal(b1, hy_topology_find_worker(t3, "b")));
    hy_topology_free(t1);
    hy_topology_free(t2);
    hy_topology_free(t3);
}

/* The same definition spelled differently resolves to the same values. */
static void test_equal_spelling(void **state)
{
    (void)state;
    static const struct { const char *name; int idx; const char *repl; } same[] = {
        {"cwd ./srv/", 1, "    cwd: ./srv/\n"},
        {"cwd absolute", 1, "    cwd: @D/srv\n"},
        {"subscribe by id, other order, repeated", 4, "    subscribe: [1002, TextMessage, 1001]\n"},
        {"publish by id", 5, "    publish: [0x3eb]\n"},
        {"durations in other units", 7,
         "    backoff: {initial: 0.1s, factor: 2.0, max: 10000ms, jitter: 0.10, reset_after: 0.5m}\n"},
        {"signal spelled SIGTERM", 9, "    stop: {signal: SIGTERM, grace: 2000ms}\n"},
        {"size in KiB", 12, "    queue: {limit: 1024KiB, overflow: drop-oldest}\n"},
        {"env as a block mapping", 2, "    env:\n      K: v\n      L: w\n"},
    };
    hy_topology *base = load_ok(worker_doc(defaults_block, -1, NULL, false));
    const hy_worker_spec *a0 = hy_topology_find_worker(base, "a");
    size_t bad = 0;
    for (size_t i = 0; i < N_ELEMS(same); i++) {
        char repl[PATH_MAX + 64];
        const char *at = strstr(same[i].repl, "@D");
        if (at)
            snprintf(repl, sizeof repl, "%.*s%s%s", (int)(at - same[i].repl), same[i].repl, base_dir, at + 2);
        else
            snprintf(repl, sizeof repl, "%s", same[i].repl);
        hy_topology *t = load_ok(worker_doc(defaults_block, same[i].idx, repl, false));
        if (!hy_worker_spec_equal(a0, hy_topology_find_worker(t, "a"))) {
            print_error("%s: not equal, but it is the same definition\n", same[i].name);
            bad++;
        }
        hy_topology_free(t);
    }
    hy_topology_free(base);
    assert_int_equal(bad, 0);
}

/* Any change to what a running instance sees: not equal. */
static void test_not_equal(void **state)
{
    (void)state;
    static const struct { const char *name; int idx; const char *repl; } diff[] = {
        {"command: program", 0, "    command: [/bin/false, --x, \"1\"]\n"},
        {"command: an argument", 0, "    command: [/bin/true, --x, \"2\"]\n"},
        {"command: one more argument", 0, "    command: [/bin/true, --x, \"1\", \"\"]\n"},
        {"command: one argument less", 0, "    command: [/bin/true, --x]\n"},
        {"cwd", 1, "    cwd: srv2\n"},
        {"cwd absent", 1, ""},
        {"env: a value", 2, "    env: {K: v, L: x}\n"},
        {"env: one more", 2, "    env: {K: v, L: w, M: \"\"}\n"},
        {"env: one less", 2, "    env: {K: v}\n"},
        {"env: a name", 2, "    env: {K: v, LL: w}\n"},
        {"env absent", 2, ""},
        {"instances", 3, "    instances: 3\n"},
        {"subscribe: other type", 4, "    subscribe: [TextMessage, BatchOperation]\n"},
        {"subscribe: one less", 4, "    subscribe: [TextMessage]\n"},
        {"subscribe: one more", 4, "    subscribe: [TextMessage, CounterUpdate, BatchOperation]\n"},
        {"subscribe absent", 4, ""},
        {"publish: other type", 5, "    publish: [CounterUpdate]\n"},
        {"publish: empty list", 5, "    publish: []\n"},
        {"publish absent (every type)", 5, ""},
        {"restart", 6, "    restart: never\n"},
        {"restart absent (from defaults: always)", 6, ""},
        {"backoff.initial", 7, "    backoff: {initial: 200ms, factor: 2, max: 10s, jitter: 0.1, reset_after: 30s}\n"},
        {"backoff.factor", 7, "    backoff: {initial: 100ms, factor: 3, max: 10s, jitter: 0.1, reset_after: 30s}\n"},
        {"backoff.max", 7, "    backoff: {initial: 100ms, factor: 2, max: 11s, jitter: 0.1, reset_after: 30s}\n"},
        {"backoff.jitter", 7, "    backoff: {initial: 100ms, factor: 2, max: 10s, jitter: 0.2, reset_after: 30s}\n"},
        {"backoff.reset_after", 7, "    backoff: {initial: 100ms, factor: 2, max: 10s, jitter: 0.1, reset_after: 31s}\n"},
        {"give_up.failures", 8, "    give_up: {failures: 6, within: 1m, retry_after: 5m}\n"},
        {"give_up.within", 8, "    give_up: {failures: 5, within: 2m, retry_after: 5m}\n"},
        {"give_up.retry_after", 8, "    give_up: {failures: 5, within: 1m, retry_after: 0}\n"},
        {"stop.signal", 9, "    stop: {signal: INT, grace: 2s}\n"},
        {"stop.grace", 9, "    stop: {signal: TERM, grace: 2001ms}\n"},
        {"stop.grace from defaults", 9, "    stop: {signal: TERM}\n"},
        {"start_timeout", 10, "    start_timeout: 4s\n"},
        {"heartbeat.timeout", 11, "    heartbeat: {timeout: 0}\n"},
        {"queue.limit", 12, "    queue: {limit: 2MiB, overflow: drop-oldest}\n"},
        {"queue.overflow drop-newest", 12, "    queue: {limit: 1MiB, overflow: drop-newest}\n"},
        {"queue.overflow block", 12, "    queue: {limit: 1MiB, overflow: block}\n"},
    };
    hy_topology *base = load_ok(worker_doc(defaults_block, -1, NULL, false));
    const hy_worker_spec *a0 = hy_topology_find_worker(base, "a");
    const hy_worker_spec *b0 = hy_topology_find_worker(base, "b");
    size_t bad = 0;
    for (size_t i = 0; i < N_ELEMS(diff); i++) {
        hy_topology *t = load_ok(worker_doc(defaults_block, diff[i].idx, diff[i].repl, false));
        const hy_worker_spec *a = hy_topology_find_worker(t, "a");
        if (hy_worker_spec_equal(a0, a) || hy_worker_spec_equal(a, a0)) {
            print_error("%s: equal, but the definition changed\n", diff[i].name);
            bad++;
        }
        /* b did not change */
        if (!hy_worker_spec_equal(b0, hy_topology_find_worker(t, "b"))) {
            print_error("%s: b is not equal, but only a changed\n", diff[i].name);
            bad++;
        }
        hy_topology_free(t);
    }
    hy_topology_free(base);

    /* `publish: []` (nothing) and no `publish` (every type) differ */
    hy_topology *none = load_ok(worker_doc(defaults_block, 5, "    publish: []\n", false));
    hy_topology *all = load_ok(worker_doc(defaults_block, 5, "", false));
    assert_false(hy_worker_spec_equal(hy_topology_find_worker(none, "a"), hy_topology_find_worker(all, "a")));
    hy_topology_free(none);
    hy_topology_free(all);

    /* the same body under two names: two different workers (HYPHA_WORKER,
     * labels and logs differ) */
    hy_topology *two = load_ok(WHDR "workers:\n  x: {command: [/bin/true]}\n  y: {command: [/bin/true]}\n");
    assert_false(hy_worker_spec_equal(&two->workers[0], &two->workers[1]));
    hy_topology_free(two);
    assert_int_equal(bad, 0);
}

/* A change of `defaults` reaches every worker that does not override the
 * key: their definitions are no longer equal; one that overrides it is. */
static void test_defaults_reach_workers(void **state)
{
    (void)state;
    static const struct { const char *name; const char *defaults; bool a_changes; } cases[] = {
        {"defaults.restart (a overrides it)", "defaults: {restart: never, stop: {grace: 5s}}\n", false},
        {"defaults.stop.grace (a overrides it)", "defaults: {restart: always, stop: {grace: 6s}}\n", false},
        {"defaults.heartbeat.timeout (a overrides it)",
         "defaults: {restart: always, stop: {grace: 5s}, heartbeat: {timeout: 1s}}\n", false},
        {"defaults.queue.overflow (a overrides it)",
         "defaults: {restart: always, stop: {grace: 5s}, queue: {overflow: block}}\n", false},
        {"defaults.start_timeout (a overrides it)",
         "defaults: {restart: always, stop: {grace: 5s}, start_timeout: 9s}\n", false},
    };
    hy_topology *base = load_ok(worker_doc(defaults_block, -1, NULL, false));
    const hy_worker_spec *a0 = hy_topology_find_worker(base, "a");
    const hy_worker_spec *b0 = hy_topology_find_worker(base, "b");
    size_t bad = 0;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        hy_topology *t = load_ok(worker_doc(cases[i].defaults, -1, NULL, false));
        bool a_eq = hy_worker_spec_equal(a0, hy_topology_find_worker(t, "a"));
        bool b_eq = hy_worker_spec_equal(b0, hy_topology_find_worker(t, "b"));
        if (a_eq == cases[i].a_changes) {
            print_error("%s: a %s\n", cases[i].name, a_eq ? "equal" : "not equal");
            bad++;
        }
        if (b_eq) {
            print_error("%s: b equal, but it inherits the changed key\n", cases[i].name);
            bad++;
        }
        hy_topology_free(t);
    }
    hy_topology_free(base);
    assert_int_equal(bad, 0);
}

/* ---- hy_reload_check -------------------------------------------------- */

/* Top-level lines; a case replaces one (or removes it: ""). */
static const char *const top_lines[] = {
    "version: 1\n",                                                                            /* 0 */
    "schema: contracts.yaml\n",                                                                /* 1 */
    "upstream: {unix: up.sock, echo: true, buffer: 1MiB, reconnect: {initial: 100ms, max: 5s}}\n", /* 2 */
    "listen: [{unix: bus.sock}, {tcp: \"127.0.0.1:9091\"}]\n",                                 /* 3 */
    "control: {socket: ctl.sock, mode: \"0600\"}\n",                                           /* 4 */
    "metrics: {listen: \"127.0.0.1:9464\"}\n",                                                 /* 5 */
    "defaults: {restart: on-failure}\n",                                                       /* 6 */
    "cgroup: auto\n",                                                                          /* 7 */
};

static const char plain_workers[] = "workers:\n"
                                    "  p:\n    command: [/bin/true]\n"
                                    "  q:\n    command: [/bin/true, q]\n    instances: 2\n";

static char *top_doc(int idx, const char *repl, const char *workers)
{
    static char doc[8192];
    size_t n = 0;
    for (size_t i = 0; i < N_ELEMS(top_lines); i++)
        n += (size_t)snprintf(doc + n, sizeof doc - n, "%s", (int)i == idx ? repl : top_lines[i]);
    n += (size_t)snprintf(doc + n, sizeof doc - n, "%s", workers);
    assert_true(n < sizeof doc);
    return doc;
}

/* Only workers (and defaults) differ: allowed. */
static void test_check_allowed(void **state)
{
    (void)state;
    static const struct { const char *name; int idx; const char *repl; const char *workers; } ok[] = {
        {"identical", -1, NULL, plain_workers},
        {"a worker added", -1, NULL, "workers:\n  p:\n    command: [/bin/true]\n"
                                     "  q:\n    command: [/bin/true, q]\n    instances: 2\n"
                                     "  r:\n    command: [/bin/false]\n"},
        {"a worker removed", -1, NULL, "workers:\n  p:\n    command: [/bin/true]\n"},
        {"no workers", -1, NULL, "workers: {}\n"},
        {"a worker changed", -1, NULL, "workers:\n  p:\n    command: [/bin/false]\n"
                                       "  q:\n    command: [/bin/true, q]\n    instances: 3\n"},
        {"defaults changed", 6, "defaults: {restart: never, queue: {limit: 4MiB}}\n", plain_workers},
        {"defaults removed", 6, "", plain_workers},
        {"cgroup: auto by default", 7, "", plain_workers},
        {"comments only", 0, "# a comment\nversion: 1\n", plain_workers},
        {"same contracts bytes, other file", 1, "schema: same.contracts.yaml\n", plain_workers},
        {"upstream.handshake: digest spelled out", 2,
         "upstream: {unix: up.sock, handshake: digest, echo: true, buffer: 1MiB, "
         "reconnect: {initial: 100ms, max: 5s}}\n",
         plain_workers},
        {"upstream spelled ./up.sock", 2,
         "upstream: {unix: ./up.sock, echo: yes, buffer: 1024KiB, reconnect: {initial: 0.1s, max: 5000ms}}\n",
         plain_workers},
    };
    hy_topology *cur = load_ok(top_doc(-1, NULL, plain_workers));
    size_t bad = 0;
    for (size_t i = 0; i < N_ELEMS(ok); i++) {
        hy_topology *next = load_ok(top_doc(ok[i].idx, ok[i].repl, ok[i].workers));
        hy_err err = {{0}};
        if (hy_reload_check(cur, next, &err) != 0) {
            print_error("%s: refused: %s\n", ok[i].name, err.msg);
            bad++;
        }
        hy_topology_free(next);
    }
    hy_topology_free(cur);
    assert_int_equal(bad, 0);
}

/* schema, upstream, listen, control, metrics, cgroup: refused, naming the key. */
static void test_check_refused(void **state)
{
    (void)state;
    static const struct { const char *name; int idx; const char *repl; const char *key; } refused[] = {
        {"schema: another contracts file", 1, "schema: other.contracts.yaml\n", "schema"},
        {"upstream: another socket", 2,
         "upstream: {unix: up2.sock, echo: true, buffer: 1MiB, reconnect: {initial: 100ms, max: 5s}}\n", "upstream"},
        {"upstream: tcp", 2,
         "upstream: {tcp: \"127.0.0.1:7000\", echo: true, buffer: 1MiB, reconnect: {initial: 100ms, max: 5s}}\n",
         "upstream"},
        {"upstream removed (embedded)", 2, "", "upstream"},
        {"upstream.handshake", 2,
         "upstream: {unix: up.sock, handshake: none, echo: true, buffer: 1MiB, reconnect: {initial: 100ms, max: 5s}}\n",
         "upstream.handshake"},
        {"upstream.echo", 2,
         "upstream: {unix: up.sock, echo: false, buffer: 1MiB, reconnect: {initial: 100ms, max: 5s}}\n", "upstream"},
        {"upstream.buffer", 2,
         "upstream: {unix: up.sock, echo: true, buffer: 2MiB, reconnect: {initial: 100ms, max: 5s}}\n", "upstream"},
        {"upstream.reconnect.initial", 2,
         "upstream: {unix: up.sock, echo: true, buffer: 1MiB, reconnect: {initial: 200ms, max: 5s}}\n", "upstream"},
        {"upstream.reconnect.max", 2,
         "upstream: {unix: up.sock, echo: true, buffer: 1MiB, reconnect: {initial: 100ms, max: 6s}}\n", "upstream"},
        {"listen: an endpoint changed", 3, "listen: [{unix: bus.sock}, {tcp: \"127.0.0.1:9092\"}]\n", "listen"},
        {"listen: host changed", 3, "listen: [{unix: bus.sock}, {tcp: \"127.0.0.2:9091\"}]\n", "listen"},
        {"listen: unix path changed", 3, "listen: [{unix: bus2.sock}, {tcp: \"127.0.0.1:9091\"}]\n", "listen"},
        {"listen: one removed", 3, "listen: [{unix: bus.sock}]\n", "listen"},
        {"listen: one added", 3, "listen: [{unix: bus.sock}, {tcp: \"127.0.0.1:9091\"}, {unix: b2.sock}]\n",
         "listen"},
        {"listen removed", 3, "", "listen"},
        {"listen: handshake auto to digest", 3,
         "listen: [{unix: bus.sock, handshake: digest}, {tcp: \"127.0.0.1:9091\"}]\n", "listen handshake"},
        {"listen: handshake auto to none", 3,
         "listen: [{unix: bus.sock}, {tcp: \"127.0.0.1:9091\", handshake: none}]\n", "listen handshake"},
        {"control.socket", 4, "control: {socket: ctl2.sock, mode: \"0600\"}\n", "control"},
        {"control.mode", 4, "control: {socket: ctl.sock, mode: \"0660\"}\n", "control"},
        {"metrics: another port", 5, "metrics: {listen: \"127.0.0.1:9465\"}\n", "metrics"},
        {"metrics removed", 5, "", "metrics"},
        {"cgroup: auto to off", 7, "cgroup: off\n", "cgroup"},
        {"cgroup: auto to a path", 7, "cgroup: /sys/fs/cgroup/hypha\n", "cgroup"},
    };
    hy_topology *cur = load_ok(top_doc(-1, NULL, plain_workers));
    size_t bad = 0;
    for (size_t i = 0; i < N_ELEMS(refused); i++) {
        hy_topology *next = load_ok(top_doc(refused[i].idx, refused[i].repl, plain_workers));
        hy_err err = {{0}};
        int rc = hy_reload_check(cur, next, &err);
        if (rc != -1) {
            print_error("%s: returned %d, expected -1\n", refused[i].name, rc);
            bad++;
        } else if (!strstr(err.msg, refused[i].key)) {
            print_error("%s: '%s' does not name '%s'\n", refused[i].name, err.msg, refused[i].key);
            bad++;
        }
        hy_topology_free(next);
    }
    /* the contracts refusal names the file and says to restart */
    hy_topology *other = load_ok(top_doc(1, "schema: other.contracts.yaml\n", plain_workers));
    hy_err serr = {{0}};
    assert_int_equal(hy_reload_check(cur, other, &serr), -1);
    if (!strstr(serr.msg, other->schema_path) || !strstr(serr.msg, "hyphad must be restarted"))
        fail_msg("the contracts refusal does not name %s or the restart: %s", other->schema_path, serr.msg);
    hy_topology_free(other);
    /* and the other way round: adding metrics, or an upstream, is refused too */
    hy_topology *noup = load_ok(top_doc(2, "", plain_workers));
    hy_topology *nomet = load_ok(top_doc(5, "", plain_workers));
    hy_err err = {{0}};
    assert_int_equal(hy_reload_check(noup, cur, &err), -1);
    assert_non_null(strstr(err.msg, "upstream"));
    assert_int_equal(hy_reload_check(nomet, cur, &err), -1);
    assert_non_null(strstr(err.msg, "metrics"));
    /* max_clients may change (it applies to new clients); so may spelling out the default handshake */
    hy_topology *more = load_ok(top_doc(3, "listen: [{unix: bus.sock, max_clients: 3, handshake: auto}, "
                                           "{tcp: \"127.0.0.1:9091\", max_clients: 1000}]\n", plain_workers));
    if (hy_reload_check(cur, more, &err) != 0)
        fail_msg("a max_clients change refused: %s", err.msg);
    hy_topology_free(more);
    /* embedded to embedded with the same rest: allowed */
    hy_topology *noup2 = load_ok(top_doc(2, "", "workers: {}\n"));
    if (hy_reload_check(noup, noup2, &err) != 0)
        fail_msg("embedded to embedded refused: %s", err.msg);
    /* one path for another */
    hy_topology *p1 = load_ok(top_doc(7, "cgroup: /sys/fs/cgroup/a\n", plain_workers));
    hy_topology *p2 = load_ok(top_doc(7, "cgroup: /sys/fs/cgroup/b\n", plain_workers));
    hy_topology *p1b = load_ok(top_doc(7, "cgroup: /sys/fs/cgroup//a/\n", plain_workers));
    assert_int_equal(hy_reload_check(p1, p2, &err), -1);
    assert_non_null(strstr(err.msg, "cgroup"));
    if (hy_reload_check(p1, p1b, &err) != 0)
        fail_msg("the same cgroup path spelled another way refused: %s", err.msg);
    hy_topology_free(p1);
    hy_topology_free(p2);
    hy_topology_free(p1b);
    hy_topology_free(noup);
    hy_topology_free(noup2);
    hy_topology_free(nomet);
    hy_topology_free(cur);
    assert_int_equal(bad, 0);
}

/* The upstream.echo refusal names echo itself, so the operator knows what
 * to put back. */
static void test_check_names_echo(void **state)
{
    (void)state;
    hy_topology *cur = load_ok(top_doc(-1, NULL, plain_workers));
    hy_topology *next = load_ok(top_doc(
        2, "upstream: {unix: up.sock, echo: false, buffer: 1MiB, reconnect: {initial: 100ms, max: 5s}}\n",
        plain_workers));
    hy_err err = {{0}};
    assert_int_equal(hy_reload_check(cur, next, &err), -1);
    if (!strstr(err.msg, "echo"))
        fail_msg("'%s' does not name echo", err.msg);
    hy_topology_free(next);
    hy_topology_free(cur);
}

/* ---- hy_reload_plan_make ------------------------------------------------ */

/* calloc fails at the n-th call from now (0: never): --wrap=calloc for this
 * test only, to check the plan's out-of-memory path. */
static unsigned calloc_fail_at;
void *__real_calloc(size_t n, size_t sz);
void *__wrap_calloc(size_t n, size_t sz);
void *__wrap_calloc(size_t n, size_t sz)
{
    if (calloc_fail_at && --calloc_fail_at == 0)
        return NULL;
    return __real_calloc(n, sz);
}

#define MAX_INST 32

/* A document of workers: each entry "name" or "name:N" (N instances) or
 * "name!" (another command), in this order. */
static hy_topology *load_workers(const char *const *ws, size_t n)
{
    char doc[4096];
    size_t k = (size_t)snprintf(doc, sizeof doc, "%sworkers:%s\n", WHDR, n ? "" : " {}");
    for (size_t i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s", ws[i]);
        unsigned inst = 1;
        bool other = false;
        char *c = strchr(name, ':');
        if (c) {
            inst = (unsigned)atoi(c + 1);
            *c = '\0';
        }
        if ((c = strchr(name, '!'))) {
            other = true;
            *c = '\0';
        }
        k += (size_t)snprintf(doc + k, sizeof doc - k, "  %s:\n    command: [/bin/true, %s]\n    instances: %u\n", name,
                              other ? "other" : "same", inst);
    }
    assert_true(k < sizeof doc);
    return load_ok(doc);
}
#define LOAD(...) load_workers((const char *const[]){__VA_ARGS__}, N_ELEMS(((const char *const[]){__VA_ARGS__})))

/* One running instance per index of every worker of t, in file order. */
static size_t instances_of(const hy_topology *t, hy_reload_inst *cur, size_t n)
{
    for (size_t i = 0; i < t->nworkers; i++)
        for (unsigned j = 0; j < t->workers[i].instances; j++) {
            assert_true(n < MAX_INST);
            cur[n++] = (hy_reload_inst){&t->workers[i], j, false, false, false};
        }
    return n;
}

static hy_reload_plan plan_ok(const hy_topology *old, const hy_topology *next, const hy_reload_inst *cur, size_t ncur)
{
    hy_reload_plan plan;
    hy_err err = {{0}};
    if (hy_reload_plan_make(old, next, cur, ncur, &plan, &err) != 0)
        fail_msg("plan failed: %s", err.msg);
    return plan;
}

/* names[0..n) are exactly the NULL-terminated `want`, in that order. */
static void names_are(const char *what, const char **names, size_t n, const char *const *want)
{
    size_t w = 0;
    while (want[w])
        w++;
    if (n != w)
        fail_msg("%s: %zu names, expected %zu", what, n, w);
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], want[i]) != 0)
            fail_msg("%s[%zu]: %s, expected %s", what, i, names[i], want[i]);
}
#define NAMES(what, arr, n, ...) names_are(what, arr, n, (const char *const[]){__VA_ARGS__, NULL})
#define NO_NAMES(what, arr, n) names_are(what, arr, n, (const char *const[]){NULL})

static void fresh_is(const hy_reload_fresh *f, const hy_topology *next, const char *name, unsigned index, bool start)
{
    assert_ptr_equal(f->spec, hy_topology_find_worker(next, name));
    assert_int_equal(f->index, index);
    assert_int_equal(f->start, start);
}

/* Same definitions, from another load: every instance kept, rebound to the
 * new topology's spec; nothing made. */
static void test_plan_unchanged(void **state)
{
    (void)state;
    hy_topology *old = LOAD("a:2", "b");
    hy_topology *next = LOAD("a:2", "b");
    hy_reload_inst cur[MAX_INST];
    size_t n = instances_of(old, cur, 0);
    hy_reload_plan plan = plan_ok(old, next, cur, n);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(plan.action[i], HY_RELOAD_KEEP);
        assert_ptr_equal(plan.new_spec[i], hy_topology_find_worker(next, cur[i].spec->name));
        assert_ptr_not_equal(plan.new_spec[i], cur[i].spec);
    }
    assert_int_equal(plan.nfresh, 0);
    NAMES("unchanged", plan.unchanged, plan.nunchanged, "a", "b");
    NO_NAMES("started", plan.started, plan.nstarted);
    NO_NAMES("stopped", plan.stopped, plan.nstopped);
    NO_NAMES("restarted", plan.restarted, plan.nrestarted);
    hy_reload_plan_free(&plan);
    hy_topology_free(next);
    hy_topology_free(old);
}

/* A changed definition: the old instances retire, fresh ones are made. */
static void test_plan_changed(void **state)
{
    (void)state;
    hy_topology *old = LOAD("a", "b:2");
    hy_topology *next = LOAD("a", "b!:2");
    hy_reload_inst cur[MAX_INST];
    size_t n = instances_of(old, cur, 0);
    hy_reload_plan plan = plan_ok(old, next, cur, n);
    assert_int_equal(plan.action[0], HY_RELOAD_KEEP);
    for (size_t i = 1; i < 3; i++) {
        assert_int_equal(plan.action[i], HY_RELOAD_RETIRE);
        assert_null(plan.new_spec[i]);
    }
    assert_int_equal(plan.nfresh, 2);
    fresh_is(&plan.fresh[0], next, "b", 0, true);
    fresh_is(&plan.fresh[1], next, "b", 1, true);
    NAMES("restarted", plan.restarted, plan.nrestarted, "b");
    NAMES("unchanged", plan.unchanged, plan.nunchanged, "a");
    NO_NAMES("started", plan.started, plan.nstarted);
    NO_NAMES("stopped", plan.stopped, plan.nstopped);
    hy_reload_plan_free(&plan);
    hy_topology_free(next);
    hy_topology_free(old);
}

/* A removed worker: its instances retire, its name is among the stopped
 * (pointing into the old topology). */
static void test_plan_removed(void **state)
{
    (void)state;
    hy_topology *old = LOAD("a:2", "b");
    hy_topology *next = LOAD("b");
    hy_reload_inst cur[MAX_INST];
    size_t n = instances_of(old, cur, 0);
    hy_reload_plan plan = plan_ok(old, next, cur, n);
    assert_int_equal(plan.action[0], HY_RELOAD_RETIRE);
    assert_int_equal(plan.action[1], HY_RELOAD_RETIRE);
    assert_int_equal(plan.action[2], HY_RELOAD_KEEP);
    assert_null(plan.new_spec[0]);
    assert_int_equal(plan.nfresh, 0);
    NAMES("stopped", plan.stopped, plan.nstopped, "a");
    assert_ptr_equal(plan.stopped[0], old->workers[0].name);
    NAMES("unchanged", plan.unchanged, plan.nunchanged, "b");
    NO_NAMES("started", plan.started, plan.nstarted);
    hy_reload_plan_free(&plan);

    /* every worker removed */
    hy_topology *none = load_workers(NULL, 0);
    plan = plan_ok(old, none, cur, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(plan.action[i], HY_RELOAD_RETIRE);
    NAMES("stopped", plan.stopped, plan.nstopped, "a", "b");
    hy_reload_plan_free(&plan);
    hy_topology_free(none);
    hy_topology_free(next);
    hy_topology_free(old);
}

/* An added worker: fresh instances, started; its name among the started. */
static void test_plan_added(void **state)
{
    (void)state;
    hy_topology *old = LOAD("a");
    hy_topology *next = LOAD("a", "c:2");
    hy_reload_inst cur[MAX_INST];
    size_t n = instances_of(old, cur, 0);
    hy_reload_plan plan = plan_ok(old, next, cur, n);
    assert_int_equal(plan.action[0], HY_RELOAD_KEEP);
    assert_int_equal(plan.nfresh, 2);
    fresh_is(&plan.fresh[0], next, "c", 0, true);
    fresh_is(&plan.fresh[1], next, "c", 1, true);
    NAMES("started", plan.started, plan.nstarted, "c");
    assert_ptr_equal(plan.started[0], next->workers[1].name);
    NAMES("unchanged", plan.unchanged, plan.nunchanged, "a");
    hy_reload_plan_free(&plan);

    /* from nothing at all */
    hy_topology *none = load_workers(NULL, 0);
    plan = plan_ok(none, next, NULL, 0);
    assert_int_equal(plan.nfresh, 3);
    NAMES("started", plan.started, plan.nstarted, "a", "c");
    hy_reload_plan_free(&plan);
    /* and nothing to nothing: an empty plan */
    plan = plan_ok(none, none, NULL, 0);
    assert_int_equal(plan.nfresh + plan.nstarted + plan.nstopped + plan.nrestarted + plan.nunchanged, 0);
    hy_reload_plan_free(&plan);
    hy_topology_free(none);
    hy_topology_free(next);
    hy_topology_free(old);
}

/* instances: 2 -> 3 or 2 -> 1 is a changed definition: all retire, the new
 * count is made. */
static void test_plan_instances_count(void **state)
{
    (void)state;
    static const unsigned counts[] = {3, 1};
    hy_topology *old = LOAD("a:2");
    hy_reload_inst cur[MAX_INST];
    size_t n = instances_of(old, cur, 0);
    for (size_t c = 0; c < N_ELEMS(counts); c++) {
        char w[16];
        snprintf(w, sizeof w, "a:%u", counts[c]);
        hy_topology *next = LOAD(w);
        hy_reload_plan plan = plan_ok(old, next, cur, n);
        assert_int_equal(plan.action[0], HY_RELOAD_RETIRE);
        assert_int_equal(plan.action[1], HY_RELOAD_RETIRE);
        assert_int_equal(plan.nfresh, counts[c]);
        for (unsigned j = 0; j < counts[c]; j++)
            fresh_is(&plan.fresh[j], next, "a", j, true);
        NAMES("restarted", plan.restarted, plan.nrestarted, "a");
        hy_reload_plan_free(&plan);
        hy_topology_free(next);
    }
    hy_topology_free(old);
}

/* A changed worker whose instance an operator had stopped: the new instance
 * of that index stays stopped; a retiring twin, or an instance of an older
 * topology, does not count. */
static void test_plan_operator_stopped(void **state)
{
    (void)state;
    hy_topology *older = LOAD("a:3");
    hy_topology *old = LOAD("a!:3");
    hy_topology *next = LOAD("a:3");
    hy_reload_inst cur[MAX_INST];
    /* first in the list, so that they would be found first: */
    /* still retiring from the reload before, stopped: not a predecessor */
    cur[0] = (hy_reload_inst){&older->workers[0], 2, true, true, false};
    /* of an older topology, not retiring (cannot happen today): not one either */
    cur[1] = (hy_reload_inst){&older->workers[0], 0, false, true, true};
    /* retiring, of `old` (cannot happen today), running: not one either */
    cur[2] = (hy_reload_inst){&old->workers[0], 1, true, false, false};
    size_t n = instances_of(old, cur, 3);
    cur[4].operator_stopped = true; /* a, index 1 */
    hy_reload_plan plan = plan_ok(old, next, cur, n);
    assert_int_equal(plan.nfresh, 3);
    fresh_is(&plan.fresh[0], next, "a", 0, true);
    fresh_is(&plan.fresh[1], next, "a", 1, false);
    fresh_is(&plan.fresh[2], next, "a", 2, true);
    assert_int_equal(plan.action[0], HY_RELOAD_LEAVE);
    assert_int_equal(plan.action[1], HY_RELOAD_LEAVE);
    assert_int_equal(plan.action[2], HY_RELOAD_LEAVE);
    assert_int_equal(plan.action[4], HY_RELOAD_RETIRE); /* retired all the same */
    hy_reload_plan_free(&plan);

    /* unchanged: an operator-stopped instance is simply kept, as it is */
    hy_topology *same = LOAD("a!:3");
    plan = plan_ok(old, same, cur, n);
    assert_int_equal(plan.nfresh, 0);
    assert_int_equal(plan.action[4], HY_RELOAD_KEEP);
    hy_reload_plan_free(&plan);
    hy_topology_free(same);
    hy_topology_free(next);
    hy_topology_free(old);
    hy_topology_free(older);
}

/* Instances already retiring are left alone, whatever the new topology says. */
static void test_plan_retiring_left_alone(void **state)
{
    (void)state;
    hy_topology *older = LOAD("a", "b");
    hy_topology *old = LOAD("a", "b!");
    hy_topology *next = LOAD("a");
    hy_reload_inst cur[MAX_INST];
    size_t n = instances_of(old, cur, 0);
    cur[n++] = (hy_reload_inst){&older->workers[1], 0, true, false, false}; /* b, retiring from before */
    cur[n++] = (hy_reload_inst){&old->workers[0], 0, true, false, false};   /* a of old, retiring all the same */
    hy_reload_plan plan = plan_ok(old, next, cur, n);
    assert_int_equal(plan.action[0], HY_RELOAD_KEEP);
    assert_int_equal(plan.action[1], HY_RELOAD_RETIRE);
    assert_int_equal(plan.action[2], HY_RELOAD_LEAVE);
    assert_int_equal(plan.action[3], HY_RELOAD_LEAVE);
    assert_null(plan.new_spec[2]);
    assert_null(plan.new_spec[3]);
    hy_reload_plan_free(&plan);
    hy_topology_free(next);
    hy_topology_free(old);
    hy_topology_free(older);
}

/* Names and fresh instances in file order: stopped, unchanged and restarted
 * in the old file's order, started and fresh in the new one's. */
static void test_plan_file_order(void **state)
{
    (void)state;
    hy_topology *old = LOAD("d", "c", "b", "a", "e", "h");
    hy_topology *next = LOAD("f", "h!", "a", "c!", "g", "b");
    hy_reload_inst cur[MAX_INST];
    size_t n = instances_of(old, cur, 0);
    hy_reload_plan plan = plan_ok(old, next, cur, n);
    NAMES("stopped", plan.stopped, plan.nstopped, "d", "e");
    NAMES("unchanged", plan.unchanged, plan.nunchanged, "b", "a");
    NAMES("restarted", plan.restarted, plan.nrestarted, "c", "h");
    NAMES("started", plan.started, plan.nstarted, "f", "g");
    static const char *const fresh[] = {"f", "h", "c", "g"};
    assert_int_equal(plan.nfresh, N_ELEMS(fresh));
    for (size_t i = 0; i < N_ELEMS(fresh); i++)
        fresh_is(&plan.fresh[i], next, fresh[i], 0, true);
    static const hy_reload_action want[] = {HY_RELOAD_RETIRE, HY_RELOAD_RETIRE, HY_RELOAD_KEEP,
                                            HY_RELOAD_KEEP,   HY_RELOAD_RETIRE, HY_RELOAD_RETIRE};
    assert_int_equal(n, N_ELEMS(want));
    for (size_t i = 0; i < n; i++)
        assert_int_equal(plan.action[i], want[i]);
    hy_reload_plan_free(&plan);
    hy_topology_free(next);
    hy_topology_free(old);
}

static bool plan_is_empty(const hy_reload_plan *p)
{
    return !p->action && !p->new_spec && !p->fresh && !p->started && !p->stopped && !p->restarted &&
           !p->unchanged && !p->nfresh && !p->nstarted && !p->nstopped && !p->nrestarted && !p->nunchanged;
}

/* Out of memory at each allocation in turn: -1, a message, an empty plan
 * (and nothing leaked: the sanitizer build checks that). */
static void test_plan_out_of_memory(void **state)
{
    (void)state;
    hy_topology *old = LOAD("a:2", "b", "d");
    hy_topology *next = LOAD("a:2", "b!", "c");
    hy_reload_inst cur[MAX_INST];
    size_t n = instances_of(old, cur, 0);
    unsigned failed = 0;
    for (unsigned k = 1; k < 100; k++) {
        hy_reload_plan plan;
        hy_err err = {{0}};
        calloc_fail_at = k;
        int rc = hy_reload_plan_make(old, next, cur, n, &plan, &err);
        bool hit = calloc_fail_at == 0;
        calloc_fail_at = 0;
        if (!hit) {
            assert_int_equal(rc, 0);
            hy_reload_plan_free(&plan);
            break;
        }
        assert_int_equal(rc, -1);
        assert_non_null(strstr(err.msg, "out of memory"));
        assert_true(plan_is_empty(&plan));
        hy_reload_plan_free(&plan); /* harmless on an empty plan */
        failed++;
    }
    assert_int_equal(failed, 7); /* every array of the plan */
    hy_topology_free(next);
    hy_topology_free(old);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal_identical),
        cmocka_unit_test(test_equal_position),
        cmocka_unit_test(test_equal_spelling),
        cmocka_unit_test(test_not_equal),
        cmocka_unit_test(test_defaults_reach_workers),
        cmocka_unit_test(test_check_allowed),
        cmocka_unit_test(test_check_refused),
        cmocka_unit_test(test_check_names_echo),
        cmocka_unit_test(test_plan_unchanged),
        cmocka_unit_test(test_plan_changed),
        cmocka_unit_test(test_plan_removed),
        cmocka_unit_test(test_plan_added),
        cmocka_unit_test(test_plan_instances_count),
        cmocka_unit_test(test_plan_operator_stopped),
        cmocka_unit_test(test_plan_retiring_left_alone),
        cmocka_unit_test(test_plan_file_order),
        cmocka_unit_test(test_plan_out_of_memory),
    };
    return cmocka_run_group_tests_name("reload", tests, setup, teardown);
}
