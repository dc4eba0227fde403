/* test_health.c - hy_health_eval against the rules of docs/control.md
 * "Health", on a snapshot built by hand: instances in chosen states, the
 * upstream's state set per case. Nothing is spawned or connected. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <ev.h>

#include "hypha/backoff.h"
#include "hypha/exitplan.h"
#include "hypha/health.h"
#include "hypha/upstream.h"
#include "hypha/view.h"
#include "hypha/topology.h"
#include "testdir.h"

static char base_dir[PATH_MAX];
static struct ev_loop *loop;

static int setup(void **state)
{
    (void)state;
    if (hy_test_mkdtemp("health", base_dir) < 0 ||
        hy_test_copy_vector(base_dir, "mycelium-examples.contracts.yaml", "contracts.yaml") < 0)
        return -1;
    loop = ev_loop_new(EVFLAG_AUTO);
    return loop ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (loop)
        ev_loop_destroy(loop);
    return hy_test_rmtree(base_dir);
}

/* w: 2 instances, restart never. v: 1 instance, on-failure, retried after
 * giving up. */
#define WORKERS                                                                      \
    "workers:\n"                                                                     \
    "  w:\n"                                                                         \
    "    command: [/bin/true]\n"                                                     \
    "    instances: 2\n"                                                             \
    "    restart: never\n"                                                           \
    "    give_up: {failures: 5, within: 1m, retry_after: 0}\n"                       \
    "  v:\n"                                                                         \
    "    command: [/bin/true]\n"                                                     \
    "    restart: on-failure\n"                                                      \
    "    give_up: {failures: 10, within: 1m, retry_after: 5m}\n"

static const char embedded_doc[] = "version: 1\nschema: contracts.yaml\ncontrol: {socket: ctl.sock}\n" WORKERS;
static const char upstream_doc[] = "version: 1\nschema: contracts.yaml\ncontrol: {socket: ctl.sock}\n"
                                   "upstream: {unix: up.sock, reconnect: {initial: 100ms, max: 10s}}\n" WORKERS;

static hy_topology *load_ok(const char *doc)
{
    hy_err err = {{0}};
    hy_topology *t = hy_topology_load_buffer("topo.yaml", base_dir, (const uint8_t *)doc, strlen(doc), &err);
    if (!t)
        fail_msg("load failed: %s", err.msg);
    return t;
}

/* What a supervisor and its relay would show a snapshot. */
typedef struct fake_relay {
    hy_up_state up_state;
    bool up_probation;
    double up_since, up_down_since;
    struct {
        char name[160];
    } up;
} fake_relay;

typedef struct fake_sup {
    const hy_topology *topo;
    hy_inst_view **inst;
    size_t ninst;
    fake_relay relay;
} fake_sup;

/* Every instance running and the upstream connected:
 * inst[0] w[0], inst[1] w[1], inst[2] v[0]. */
static fake_sup *make_sup(const hy_topology *t)
{
    fake_sup *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->topo = t;
    for (size_t i = 0; i < t->nworkers; i++)
        s->ninst += t->workers[i].instances;
    s->inst = calloc(s->ninst, sizeof *s->inst);
    assert_non_null(s->inst);
    size_t k = 0;
    for (size_t i = 0; i < t->nworkers; i++)
        for (unsigned j = 0; j < t->workers[i].instances; j++) {
            hy_inst_view *in = calloc(1, sizeof *in);
            char *label = calloc(1, 96);
            assert_non_null(in);
            assert_non_null(label);
            in->spec = &t->workers[i];
            in->index = j;
            snprintf(label, 96, "%s[%u]", t->workers[i].name, j);
            in->label = label;
            in->state = HY_ST_RUNNING;
            in->pid = 1000 + (pid_t)k;
            in->last_code = -1;
            in->retry_in_s = -1;
            in->spawn_error = "";
            s->inst[k++] = in;
        }
    s->relay.up_state = HY_UP_CONNECTED;
    s->relay.up_probation = false;
    s->relay.up_since = 50.0;
    s->relay.up_down_since = 40.0;
    snprintf(s->relay.up.name, sizeof s->relay.up.name, "unix:%s/up.sock", base_dir);
    return s;
}

static void free_sup(fake_sup *s)
{
    for (size_t i = 0; i < s->ninst; i++) {
        free((char *)s->inst[i]->label);
        free(s->inst[i]);
    }
    free(s->inst);
    free(s);
}

static hy_exit_reason reason_of(const char *r)
{
    for (int i = 0; i < HY_EXIT__COUNT; i++)
        if (strcmp(hy_exit_reason_str((hy_exit_reason)i), r) == 0)
            return (hy_exit_reason)i;
    fail_msg("no exit reason '%s'", r);
    return HY_EXIT_NONE;
}

/* An exit: as the supervisor records it. */
static void exited(hy_inst_view *in, hy_state st, const char *reason, int code, int sig)
{
    in->state = st;
    in->pid = 0;
    in->last_reason = reason_of(reason);
    in->last_code = code;
    in->last_signal = sig;
}

/* TLS facts and the wall clock the snapshots carry (test_certificates). */
static hy_tls_view fake_up_tls;
static time_t fake_wall;

/* The snapshot the supervisor would take at `now`. */
static hy_health eval_snapshot(const fake_sup *s, double now, char *out, size_t len)
{
    hy_snapshot snap = {.topo = s->topo, .ninst = s->ninst, .wall = fake_wall};
    snap.up.tls = fake_up_tls;
    snap.inst = calloc(s->ninst, sizeof *snap.inst);
    assert_non_null(snap.inst);
    for (size_t i = 0; i < s->ninst; i++)
        snap.inst[i] = *s->inst[i];
    snap.up.name = s->relay.up.name;
    snap.up.connected = s->relay.up_state == HY_UP_CONNECTED;
    snap.up.ready = snap.up.connected && !s->relay.up_probation;
    snap.up.down_for_s = now - s->relay.up_down_since;
    hy_health h = hy_health_eval(&snap, out, len);
    free(snap.inst);
    return h;
}

static char reason[512];

static hy_health eval(const fake_sup *s, double now)
{
    memset(reason, 0x5a, sizeof reason);
    hy_health h = eval_snapshot(s, now, reason, sizeof reason);
    /* one line, NUL-terminated */
    assert_non_null(memchr(reason, '\0', sizeof reason));
    assert_null(strchr(reason, '\n'));
    assert_true(reason[0] != '\0');
    return h;
}

#define assert_reason_has(text)                                                         \
    do {                                                                                \
        if (!strstr(reason, (text)))                                                    \
            fail_msg("reason '%s' does not contain '%s'", reason, (text));              \
    } while (0)
#define assert_reason_lacks(text)                                                       \
    do {                                                                                \
        if (strstr(reason, (text)))                                                     \
            fail_msg("reason '%s' contains '%s'", reason, (text));                      \
    } while (0)
#define assert_health(s, now, want)                                                     \
    do {                                                                                \
        hy_health h_ = eval((s), (now));                                                \
        if (h_ != (want))                                                               \
            fail_msg("health %s (%s), expected %s", hy_health_str(h_), reason,          \
                     hy_health_str(want));                                              \
    } while (0)

static void test_names(void **state)
{
    (void)state;
    assert_int_equal(HY_HEALTHY, 0);
    assert_int_equal(HY_DEGRADED, 1);
    assert_int_equal(HY_UNHEALTHY, 2);
    assert_string_equal(hy_health_str(HY_HEALTHY), "healthy");
    assert_string_equal(hy_health_str(HY_DEGRADED), "degraded");
    assert_string_equal(hy_health_str(HY_UNHEALTHY), "unhealthy");
}

/* Every instance running: healthy, in both modes. */
static void test_all_running(void **state)
{
    (void)state;
    hy_topology *t = load_ok(embedded_doc);
    fake_sup *s = make_sup(t);
    assert_int_equal(s->ninst, 3);
    assert_health(s, 100.0, HY_HEALTHY);
    /* embedded: the relay's upstream state means nothing */
    s->relay.up_state = HY_UP_DOWN;
    s->relay.up_down_since = 0.0;
    assert_health(s, 1000.0, HY_HEALTHY);
    free_sup(s);
    hy_topology_free(t);

    t = load_ok(upstream_doc);
    s = make_sup(t);
    assert_health(s, 100.0, HY_HEALTHY);
    assert_health(s, 100000.0, HY_HEALTHY); /* connected for long: still healthy */
    free_sup(s);
    hy_topology_free(t);
}

/* starting, backoff, stopping: degraded, naming the instance. */
static void test_degraded_states(void **state)
{
    (void)state;
    hy_topology *t = load_ok(embedded_doc);
    static const hy_state states[] = {HY_ST_STARTING, HY_ST_BACKOFF, HY_ST_STOPPING};
    for (size_t i = 0; i < 3; i++) {
        fake_sup *s = make_sup(t);
        hy_inst_view *in = s->inst[1];
        if (states[i] == HY_ST_BACKOFF) {
            exited(in, HY_ST_BACKOFF, "exit", 3, 0);
            in->restarts = 2;
        } else {
            in->state = states[i];
        }
        assert_health(s, 100.0, HY_DEGRADED);
        assert_reason_has("w[1]");
        assert_reason_lacks("w[0]");
        free_sup(s);
    }
    /* v[0] starting: named too */
    fake_sup *s = make_sup(t);
    s->inst[2]->state = HY_ST_STARTING;
    assert_health(s, 100.0, HY_DEGRADED);
    assert_reason_has("v[0]");
    free_sup(s);
    hy_topology_free(t);
}

/* A crash is named by its signal, whichever signal it is. */
static void test_signal_names(void **state)
{
    (void)state;
    hy_topology *t = load_ok(embedded_doc);
    fake_sup *s = make_sup(t);
    exited(s->inst[1], HY_ST_BACKOFF, "signal", -1, SIGSEGV);
    assert_health(s, 100.0, HY_DEGRADED);
    assert_reason_has("signal SEGV");
    exited(s->inst[1], HY_ST_BACKOFF, "heartbeat", -1, SIGKILL);
    assert_health(s, 100.0, HY_DEGRADED);
    assert_reason_has("heartbeat (signal KILL)");
    free_sup(s);
    hy_topology_free(t);
}

/* failed: unhealthy, "failed" in the reason with the instance. */
static void test_failed(void **state)
{
    (void)state;
    hy_topology *t = load_ok(embedded_doc);
    fake_sup *s = make_sup(t);
    exited(s->inst[1], HY_ST_FAILED, "exit", 3, 0);
    assert_health(s, 100.0, HY_UNHEALTHY);
    assert_reason_has("w[1]");
    assert_reason_has("failed");
    free_sup(s);

    /* failed, killed by a signal */
    s = make_sup(t);
    exited(s->inst[0], HY_ST_FAILED, "signal", -1, 9);
    assert_health(s, 100.0, HY_UNHEALTHY);
    assert_reason_has("w[0]");
    assert_reason_has("failed");
    free_sup(s);

    /* failed with a retry_after pending: says when it is retried */
    s = make_sup(t);
    hy_inst_view *v = s->inst[2];
    exited(v, HY_ST_FAILED, "exit", 3, 0);
    v->retry_in_s = 290.0; /* its retry_after timer: 290 s left */
    assert_health(s, ev_now(loop), HY_UNHEALTHY);
    assert_reason_has("v[0]");
    assert_reason_has("failed");
    assert_reason_has("retry in 4m");
    v->retry_in_s = -1;
    /* retry_after with its timer not running: still failed, still unhealthy */
    assert_health(s, 100.0, HY_UNHEALTHY);
    assert_reason_has("v[0] failed");
    free_sup(s);
    hy_topology_free(t);
}

/* exited with a failure, not to be restarted: unhealthy; exited cleanly or
 * stopped by the operator: healthy. */
static void test_exited_and_stopped(void **state)
{
    (void)state;
    hy_topology *t = load_ok(embedded_doc);
    fake_sup *s = make_sup(t);
    /* w is restart: never */
    assert_int_equal(s->inst[0]->spec->policy.restart, HY_RESTART_NEVER);
    exited(s->inst[0], HY_ST_EXITED, "exit", 1, 0);
    assert_health(s, 100.0, HY_UNHEALTHY);
    assert_reason_has("w[0]");
    free_sup(s);

    s = make_sup(t);
    exited(s->inst[1], HY_ST_EXITED, "signal", -1, 15);
    assert_health(s, 100.0, HY_UNHEALTHY);
    assert_reason_has("w[1]");
    free_sup(s);

    /* clean exits under never and on-failure */
    s = make_sup(t);
    exited(s->inst[0], HY_ST_EXITED, "exit", 0, 0);
    assert_health(s, 100.0, HY_HEALTHY);
    exited(s->inst[2], HY_ST_EXITED, "exit", 0, 0);
    assert_health(s, 100.0, HY_HEALTHY);
    exited(s->inst[1], HY_ST_EXITED, "exit", 0, 0);
    assert_health(s, 100.0, HY_HEALTHY); /* all of them */
    free_sup(s);

    /* operator stopped, whatever its last exit was */
    s = make_sup(t);
    exited(s->inst[1], HY_ST_STOPPED, "signal", -1, 15);
    assert_health(s, 100.0, HY_HEALTHY);
    exited(s->inst[2], HY_ST_STOPPED, "exit", 7, 0);
    assert_health(s, 100.0, HY_HEALTHY);
    exited(s->inst[0], HY_ST_STOPPED, "exit", 0, 0);
    assert_health(s, 100.0, HY_HEALTHY); /* every worker stopped */
    free_sup(s);

    /* stopped and a clean exit, in upstream mode */
    hy_topology *tu = load_ok(upstream_doc);
    s = make_sup(tu);
    exited(s->inst[0], HY_ST_STOPPED, "exit", 0, 0);
    exited(s->inst[2], HY_ST_EXITED, "exit", 0, 0);
    assert_health(s, 100.0, HY_HEALTHY);
    free_sup(s);
    hy_topology_free(tu);
    hy_topology_free(t);
}

/* The upstream: down for less than reconnect.max (10s) degraded, longer
 * unhealthy; connecting counts as down; connected but on probation is not
 * healthy. */
static void test_upstream(void **state)
{
    (void)state;
    hy_topology *t = load_ok(upstream_doc);
    assert_int_equal(t->reconnect_max_ms, 10000);
    fake_sup *s = make_sup(t);
    s->relay.up_state = HY_UP_DOWN;
    s->relay.up_down_since = 100.0;
    assert_health(s, 100.0, HY_DEGRADED);
    assert_reason_has("upstream");
    assert_health(s, 105.0, HY_DEGRADED);
    assert_reason_has("upstream");
    assert_health(s, 109.9, HY_DEGRADED);
    assert_health(s, 110.0, HY_DEGRADED); /* "longer than": exactly max is not yet */
    assert_health(s, 110.5, HY_UNHEALTHY);
    assert_reason_has("upstream");
    assert_health(s, 1000.0, HY_UNHEALTHY);
    assert_reason_has("upstream");

    s->relay.up_state = HY_UP_CONNECTING;
    assert_health(s, 105.0, HY_DEGRADED);
    assert_reason_has("upstream");
    assert_health(s, 115.0, HY_UNHEALTHY);
    assert_reason_has("upstream");

    /* connected, handshake sent, frames held back: not healthy yet */
    s->relay.up_state = HY_UP_CONNECTED;
    s->relay.up_probation = true;
    s->relay.up_since = 104.0;
    hy_health h = eval(s, 105.0);
    if (h == HY_HEALTHY)
        fail_msg("connected on probation is healthy: %s", reason);
    assert_int_equal(h, HY_DEGRADED);
    assert_reason_has("upstream");
    h = eval(s, 200.0);
    if (h == HY_HEALTHY)
        fail_msg("connected on probation is healthy: %s", reason);

    s->relay.up_probation = false;
    assert_health(s, 105.0, HY_HEALTHY);
    assert_health(s, 200.0, HY_HEALTHY);
    free_sup(s);
    hy_topology_free(t);
}

/* The first rule that applies wins: unhealthy over degraded, whatever the
 * order of the instances. */
static void test_unhealthy_wins(void **state)
{
    (void)state;
    hy_topology *t = load_ok(upstream_doc);
    fake_sup *s = make_sup(t);
    s->inst[0]->state = HY_ST_STARTING;     /* degraded, first */
    exited(s->inst[1], HY_ST_FAILED, "exit", 2, 0); /* unhealthy, after it */
    assert_health(s, 100.0, HY_UNHEALTHY);
    assert_reason_has("w[1]");
    assert_reason_has("failed");
    free_sup(s);

    s = make_sup(t);
    exited(s->inst[0], HY_ST_BACKOFF, "exit", 1, 0);
    s->inst[1]->state = HY_ST_STOPPING;
    exited(s->inst[2], HY_ST_FAILED, "exit", 4, 0);
    assert_health(s, 100.0, HY_UNHEALTHY);
    assert_reason_has("v[0]");
    free_sup(s);

    s = make_sup(t);
    s->inst[0]->state = HY_ST_STARTING;
    exited(s->inst[1], HY_ST_EXITED, "exit", 1, 0); /* w: restart never */
    assert_health(s, 100.0, HY_UNHEALTHY);
    assert_reason_has("w[1]");
    free_sup(s);

    /* upstream down long, a worker starting */
    s = make_sup(t);
    s->inst[0]->state = HY_ST_STARTING;
    s->relay.up_state = HY_UP_DOWN;
    s->relay.up_down_since = 10.0;
    assert_health(s, 100.0, HY_UNHEALTHY);
    assert_reason_has("upstream");
    /* upstream down briefly, a worker failed */
    s->relay.up_down_since = 99.0;
    exited(s->inst[2], HY_ST_FAILED, "exit", 1, 0);
    assert_health(s, 100.0, HY_UNHEALTHY);
    assert_reason_has("v[0]");
    /* upstream down briefly, a worker starting: degraded, naming either */
    exited(s->inst[2], HY_ST_STOPPED, "exit", 0, 0);
    assert_health(s, 100.0, HY_DEGRADED);
    free_sup(s);

    /* the first instance at fault is named */
    s = make_sup(t);
    s->inst[0]->state = HY_ST_STOPPING;
    s->inst[2]->state = HY_ST_STARTING;
    assert_health(s, 100.0, HY_DEGRADED);
    assert_reason_has("w[0]");
    free_sup(s);
    hy_topology_free(t);
}

/* A short reason buffer is filled, cut and terminated, never overrun. */
/* A certificate that ends within 7 days (or has ended): degraded, named. */
static void test_certificates(void **state)
{
    (void)state;
    hy_topology *t = load_ok(upstream_doc);
    fake_sup *s = make_sup(t);
    fake_wall = 1700000000;
    fake_up_tls = (hy_tls_view){.on = true, .cert_subject = "/CN=edge", .peer_subject = "/CN=bus"};
    fake_up_tls.cert_not_after = fake_wall + 8 * 86400;
    fake_up_tls.peer_not_after = fake_wall + 30 * 86400;
    assert_health(s, 100.0, HY_HEALTHY);
    fake_up_tls.cert_not_after = fake_wall + 7 * 86400; /* the boundary: within 7 days */
    assert_health(s, 100.0, HY_DEGRADED);
    assert_reason_has("TLS certificate of upstream (own /CN=edge) expires in 7d");
    fake_up_tls.cert_not_after = 0; /* none of its own */
    fake_up_tls.peer_not_after = fake_wall - 3600;
    assert_health(s, 100.0, HY_DEGRADED);
    assert_reason_has("TLS certificate of upstream (server /CN=bus) expired 1h ago");
    fake_up_tls.on = false; /* no TLS: the dates mean nothing */
    assert_health(s, 100.0, HY_HEALTHY);
    memset(&fake_up_tls, 0, sizeof fake_up_tls);
    free_sup(s);
    hy_topology_free(t);
}

static void test_short_reason(void **state)
{
    (void)state;
    hy_topology *t = load_ok(upstream_doc);
    fake_sup *s = make_sup(t);
    char buf[16];
    for (int c = 0; c < 4; c++) {
        if (c == 1)
            s->inst[1]->state = HY_ST_STARTING;
        if (c == 2)
            exited(s->inst[0], HY_ST_FAILED, "exit", 3, 0);
        if (c == 3) {
            s->inst[0]->state = s->inst[1]->state = HY_ST_RUNNING;
            s->relay.up_state = HY_UP_DOWN;
            s->relay.up_down_since = 0.0;
        }
        memset(buf, 'X', sizeof buf);
        (void)eval_snapshot(s, 100.0, buf, 8);
        assert_non_null(memchr(buf, '\0', 8));
        for (size_t i = 8; i < sizeof buf; i++)
            assert_int_equal(buf[i], 'X');
    }
    free_sup(s);
    hy_topology_free(t);
}


/* Drops: more than 10 % of the frames meant for an instance in the last
 * minute, and at least 100 of them, make hyphad degraded, naming it, the
 * share and the main reason. */
static void set_recent(hy_inst_view *in, uint64_t dropped, uint64_t routed, hy_drop main)
{
    in->recent = (hy_dropwin_delta){.span_s = 60.0, .routed = routed, .dropped = dropped, .main = main};
}

static void test_dropping(void **state)
{
    (void)state;
    hy_topology *t = load_ok(upstream_doc);
    fake_sup *s = make_sup(t);
    hy_inst_view *in = s->inst[1];
    set_recent(in, 99, 100, HY_DROP_QUEUE_NEWEST); /* 99 %, but fewer than 100 drops */
    assert_health(s, 100.0, HY_HEALTHY);
    set_recent(in, 100, 1000, HY_DROP_QUEUE_NEWEST); /* exactly 10 %: not more */
    assert_health(s, 100.0, HY_HEALTHY);
    set_recent(in, 101, 1000, HY_DROP_QUEUE_NEWEST);
    assert_health(s, 100.0, HY_DEGRADED);
    assert_string_equal(reason, "w[1] dropped 101 of 1000 frames meant for it in the last minute (10.1%, mostly "
                                "queue-full-newest)");
    set_recent(in, 1700, 2000, HY_DROP_NOT_RUNNING);
    assert_health(s, 100.0, HY_DEGRADED);
    assert_string_equal(reason, "w[1] dropped 1700 of 2000 frames meant for it in the last minute (85.0%, mostly "
                                "not-running)");
    /* stopped by an operator, or exited as asked: frames for it are no fault */
    in->state = HY_ST_STOPPED;
    assert_health(s, 100.0, HY_HEALTHY);
    exited(in, HY_ST_EXITED, "exit", 0, 0);
    assert_health(s, 100.0, HY_HEALTHY);
    in->state = HY_ST_RUNNING;
    in->retiring = true;
    assert_health(s, 100.0, HY_HEALTHY);
    in->retiring = false;
    /* a state rule comes first; an unhealthy one wins */
    s->inst[2]->state = HY_ST_STARTING;
    assert_health(s, 100.0, HY_DEGRADED);
    assert_reason_has("v[0] starting");
    exited(s->inst[0], HY_ST_FAILED, "exit", 1, 0);
    assert_health(s, 100.0, HY_UNHEALTHY);
    assert_reason_has("w[0] failed");
    free_sup(s);
    hy_topology_free(t);
}

/* give_up {failures: 3, within: 30s}: the 4th quick exit gives up (more
 * than 3), and the reason counts the exits that did it, 4, not the 3 of
 * the setting. The window and the plan are driven as worker.c drives them. */
static void test_give_up_count(void **state)
{
    (void)state;
    static const char doc[] = "version: 1\nschema: contracts.yaml\ncontrol: {socket: ctl.sock}\n"
                              "workers:\n"
                              "  g:\n"
                              "    command: [/bin/true]\n"
                              "    give_up: {failures: 3, within: 30s, retry_after: 0}\n";
    hy_topology *t = load_ok(doc);
    const hy_policy *p = &t->workers[0].policy;
    hy_giveup g;
    assert_int_equal(hy_giveup_init(&g, p->give_up_failures), 0);
    hy_exit_verdict v = {0};
    int exits = 0;
    for (; exits < 10; exits++) {
        hy_exit_facts f = {.wstatus = 1 << 8, .uptime_ms = 100, .n = v.n};
        assert_true(hy_exit_counts(p, &f));
        f.over_give_up = hy_giveup_record(&g, 1000u * (uint64_t)exits, p->give_up_within_ms);
        v = hy_exit_plan(p, &f);
        if (v.next == HY_NEXT_FAILED)
            break;
    }
    assert_int_equal(exits + 1, 4); /* gave up at the 4th exit */
    hy_giveup_free(&g);

    fake_sup *s = make_sup(t);
    exited(s->inst[0], HY_ST_FAILED, "exit", 1, 0);
    assert_health(s, 100.0, HY_UNHEALTHY);
    assert_string_equal(reason, "g[0] failed: 4 exits within 30s (last: exit status 1); not retried: hyphactl restart g");
    free_sup(s);
    hy_topology_free(t);
}

/* Waiting for an `after` worker, and a handler failing on every message:
 * degraded, named. */
static void test_waiting_and_failing_handlers(void **state)
{
    (void)state;
    hy_topology *t = load_ok(embedded_doc);
    fake_sup *s = make_sup(t);
    s->inst[1]->state = HY_ST_STOPPED;
    s->inst[1]->waiting = true;
    s->inst[1]->waiting_for = "v";
    assert_health(s, 100.0, HY_DEGRADED);
    assert_string_equal(reason, "w[1] waiting to start (after v, not ready yet)");
    free_sup(s);
    s = make_sup(t);
    s->inst[0]->handler_failing = true;
    s->inst[0]->fail_count = 25;
    s->inst[0]->fail_frames = 26;
    assert_health(s, 100.0, HY_DEGRADED);
    assert_string_equal(reason, "w[0] handler failed on 25 of the 26 messages sent to it since its last success");
    free_sup(s);
    hy_topology_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_all_running),
        cmocka_unit_test(test_degraded_states),
        cmocka_unit_test(test_signal_names),
        cmocka_unit_test(test_failed),
        cmocka_unit_test(test_exited_and_stopped),
        cmocka_unit_test(test_upstream),
        cmocka_unit_test(test_unhealthy_wins),
        cmocka_unit_test(test_short_reason),
        cmocka_unit_test(test_certificates),
        cmocka_unit_test(test_give_up_count),
        cmocka_unit_test(test_dropping),
        cmocka_unit_test(test_waiting_and_failing_handlers),
    };
    return cmocka_run_group_tests_name("health", tests, setup, teardown);
}
