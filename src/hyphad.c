/* hyphad.c - the hypha supervisor daemon's entry point: options, then either
 * `--check` (validate and print the resolved topology) or running. Kept thin:
 * everything it does lives in the modules it calls. */
#define _GNU_SOURCE
#include <ev.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "hypha/control.h"
#include "hypha/health.h"
#include "hypha/httpd.h"
#include "hypha/log.h"
#include "hypha/metrics.h"
#include "hypha/notify.h"
#include "hypha/rbuf.h"
#include "hypha/relay.h"
#include "hypha/reload.h"
#include "hypha/schemawatch.h"
#include "hypha/spawn.h"
#include "hypha/supervisor.h"

#include "hypha/topology.h"
#include "hypha/topology_print.h"
#include "hypha/version.h"

/* Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage. */
enum { EXIT_CONFIG = 2 };

static void usage(FILE *out)
{
    fprintf(out,
            "usage: hyphad [options] TOPOLOGY.yaml     (or -c TOPOLOGY.yaml; options may follow it)\n"
            "       hyphad --check [--json] TOPOLOGY.yaml\n"
            "\n"
            "  -c, --config FILE  the topology file\n"
            "  --check            validate the topology, print it resolved, and exit\n"
            "                     (0 valid, 2 invalid)\n"
            "  --json             with --check: print the resolved topology as JSON\n"
            "  --log-format FMT   text (default) or json\n"
            "  --log-level LEVEL  debug, info (default), warn or error: less is not logged\n"
            "  --version          print the version and exit\n"
            "  -h, --help         this help\n");
}

/* ---- running ------------------------------------------------------------ */

typedef struct daemon_state {
    hy_sup *sup;
    hy_ctl ctl;
    hy_notify notify;
    hy_metrics_http http;
    hy_schemawatch schema_w;     /* the contracts file on disk */
    bool ready_sent;             /* systemd READY=1 */
    ev_signal sigterm, sigint, sighup;
    ev_timer drain;
    ev_timer status_w;           /* systemd STATUS= and READY=1, checked a moment after changes */
    double drain_until;
    int stop_requests;
    struct ev_loop *loop;
} daemon_state;

#define DRAIN_SECONDS 5.0 /* after the workers stopped, for the bus to take what they wrote */

static daemon_state the_daemon;

static void drain_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    daemon_state *d = w->data;
    const hy_relay *r = hy_sup_relay(d->sup);
    bool bus_gone = r->topo->has_upstream && !hy_relay_upstream_connected(r);
    bool left = hy_relay_upstream_pending(r) > 0 || hy_sup_output_held(d->sup);
    if (!left || bus_gone || ev_now(loop) >= d->drain_until || d->stop_requests > 1) {
        ev_timer_stop(loop, w);
        ev_break(loop, EVBREAK_ALL);
    }
}

static void all_stopped(hy_sup *s)
{
    (void)s;
    daemon_state *d = &the_daemon;
    hy_log(HY_INFO, "hyphad", "all workers stopped", NULL);
    /* What the workers wrote before they stopped still goes to the bus. */
    d->drain_until = ev_now(d->loop) + DRAIN_SECONDS;
    ev_timer_init(&d->drain, drain_cb, 0.0, 0.01);
    d->drain.data = d;
    ev_timer_start(d->loop, &d->drain);
}

static void stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    daemon_state *d = w->data;
    const char *sig = w->signum == SIGINT ? "INT" : "TERM";
    if (d->stop_requests++ == 0) {
        hy_notify_send(&d->notify, "STOPPING=1");
        hy_log(HY_INFO, "hyphad", "stopping", "signal", sig, "live_workers", HY_U64(hy_sup_live(d->sup)), NULL);
        hy_sup_stop_all(d->sup, all_stopped);
    } else {
        hy_log(HY_WARN, "hyphad", "second stop request: killing every worker now", "signal", sig, NULL);
        hy_sup_kill_all(d->sup);
    }
}

/* Watch the contracts file `t` names, unless it is the one watched already
 * (a reload may name another file with the same bytes). */
static void watch_schema(daemon_state *d, const hy_topology *t)
{
    if (d->schema_w.file && strcmp(d->schema_w.file, t->schema_path) == 0)
        return;
    hy_sup_set_schemawatch(d->sup, NULL);
    hy_schemawatch_stop(&d->schema_w);
    if (hy_schemawatch_start(&d->schema_w, d->loop, t->schema_path, t->schema) == 0)
        hy_sup_set_schemawatch(d->sup, &d->schema_w);
}

/* Reload: the file hyphad was started with, read again and applied to the
 * workers; anything else that changed is refused (hypha/reload.h). */
static int reload(void *ud, json_t *reply, hy_err *err)
{
    daemon_state *d = ud;
    hy_sup *s = d->sup;
    if (hy_sup_shutting_down(s))
        return hy_err_set(err, "hyphad is shutting down");
    hy_notify_send(&d->notify, "RELOADING=1");
    const hy_topology *cur = hy_sup_topology(s);
    hy_topology *next = hy_topology_load(cur->path, err);
    if (!next || hy_reload_check(cur, next, err) < 0) {
        hy_topology_free(next);
        hy_log(HY_ERROR, "hyphad", "reload refused: nothing changed", "error", err->msg, NULL);
        hy_notify_send(&d->notify, "READY=1");
        return -1;
    }
    json_t *started = json_array(), *stopped = json_array(), *restarted = json_array(), *unchanged = json_array();
    if (hy_sup_reload(s, next, started, stopped, restarted, unchanged, err) < 0) {
        hy_topology_free(next);
        json_decref(started);
        json_decref(stopped);
        json_decref(restarted);
        json_decref(unchanged);
        hy_log(HY_ERROR, "hyphad", "reload failed: nothing changed", "error", err->msg, NULL);
        hy_notify_send(&d->notify, "READY=1");
        return -1;
    }
    /* The old topology now belongs to the supervisor until its last
     * retiring instance is gone; `next` is the current one, ours. */
    watch_schema(d, next);
    char *a = json_dumps(started, JSON_COMPACT), *b = json_dumps(stopped, JSON_COMPACT),
         *c = json_dumps(restarted, JSON_COMPACT), *u = json_dumps(unchanged, JSON_COMPACT);
    hy_log(HY_INFO, "hyphad", "reloaded", "topology", next->path, "started", a ? a : "?", "stopped", b ? b : "?",
           "restarted", c ? c : "?", "unchanged", u ? u : "?", NULL);
    free(a);
    free(b);
    free(c);
    free(u);
    if (reply) {
        json_object_set_new(reply, "started", started);
        json_object_set_new(reply, "stopped", stopped);
        json_object_set_new(reply, "restarted", restarted);
        json_object_set_new(reply, "unchanged", unchanged);
    } else {
        json_decref(started);
        json_decref(stopped);
        json_decref(restarted);
        json_decref(unchanged);
    }
    hy_notify_send(&d->notify, "READY=1");
    return 0;
}

static void hup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    daemon_state *d = w->data;
    hy_err err = {{0}};
    hy_log(HY_INFO, "hyphad", "SIGHUP: reloading the topology", NULL);
    (void)reload(d, NULL, &err); /* logged either way */
}

/* systemd: READY=1 once every instance was started once and the upstream is
 * connected (or embedded); STATUS= with the health line. Coalesced: state
 * changes only arm a short timer. */
static void status_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    daemon_state *d = w->data;
    hy_sup *s = d->sup;
    char reason[512], line[600];
    hy_snapshot snap;
    if (hy_sup_snapshot(s, ev_now(loop), NULL, 0, &snap) < 0)
        return; /* out of memory: next time */
    hy_health h = hy_health_eval(&snap, reason, sizeof reason);
    hy_snapshot_free(&snap);
    if (!d->ready_sent && !hy_sup_shutting_down(s)) {
        bool all = hy_sup_all_started(s);
        if (all && (!hy_sup_topology(s)->has_upstream || hy_relay_upstream_connected(hy_sup_relay(s)))) {
            d->ready_sent = true;
            hy_notify_send(&d->notify, "READY=1");
            hy_log(HY_INFO, "hyphad", "ready", "health", hy_health_str(h), NULL);
        }
    }
    snprintf(line, sizeof line, "%s: %s", hy_health_str(h), reason);
    hy_notify_status(&d->notify, line);
}

static void on_change(void *ud)
{
    daemon_state *d = ud;
    if (hy_notify_active(&d->notify) && !ev_is_active(&d->status_w)) {
        ev_timer_set(&d->status_w, 0.05, 1.0); /* and every second: upstream state and timers move too */
        ev_timer_start(d->loop, &d->status_w);
    }
}

/* tini's rule: never run with fds 0-2 closed, or the first pipe we open
 * would become someone's stdin. */
static int ensure_std_fds(void)
{
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) >= 0)
            continue;
        int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
        if (n < 0)
            return -1;
        if (n != fd)
            return -1;
    }
    return 0;
}

/* Runs the topology until SIGTERM/SIGINT; takes ownership of t (a reload
 * replaces it). */
static int run(hy_topology *t, hy_log_format log_format, hy_log_level log_level)
{
    hy_log_init(stderr, log_format, log_level);
    if (ensure_std_fds() < 0) {
        hy_log(HY_ERROR, "hyphad", "cannot open /dev/null for closed standard fds", NULL);
        hy_topology_free(t);
        return 1;
    }
    /* Orphaned grandchildren are reparented to us and reaped (like PID 1). */
    if (getpid() != 1 && prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        hy_log(HY_WARN, "hyphad", "cannot become a subreaper; orphans go to init", NULL);
    signal(SIGPIPE, SIG_IGN);
    hy_spawn_init_limits();
    daemon_state *d = &the_daemon;
    /* Before the workers' environments are built: they must not inherit it. */
    hy_notify_init(&d->notify);

    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    if (!loop) {
        hy_log(HY_ERROR, "hyphad", "cannot initialise the event loop (libev)", NULL);
        hy_notify_free(&d->notify);
        hy_topology_free(t);
        return 1;
    }
    hy_err err = {{0}};
    int rc = 1;
    d->loop = loop;
    if (!(d->sup = hy_sup_new(loop, t, &err))) {
        hy_log(HY_ERROR, "hyphad", "cannot start", "error", err.msg, NULL);
        goto out;
    }
    if (hy_ctl_start(&d->ctl, d->sup, &err) < 0) {
        hy_log(HY_ERROR, "hyphad", "cannot start", "error", err.msg, NULL);
        goto out;
    }
    d->ctl.reload = reload;
    d->ctl.reload_ud = d;
    if (t->has_metrics && hy_metrics_http_start(&d->http, d->sup, &err) < 0) {
        hy_log(HY_ERROR, "hyphad", "cannot start", "error", err.msg, NULL);
        goto out;
    }
    ev_signal_init(&d->sigterm, stop_cb, SIGTERM);
    ev_signal_init(&d->sigint, stop_cb, SIGINT);
    ev_signal_init(&d->sighup, hup_cb, SIGHUP);
    d->sigterm.data = d->sigint.data = d->sighup.data = d;
    ev_signal_start(loop, &d->sigterm);
    ev_signal_start(loop, &d->sigint);
    ev_signal_start(loop, &d->sighup);
    ev_init(&d->status_w, status_cb);
    d->status_w.data = d;
    hy_sup_observe(d->sup)->on_change = on_change;
    hy_sup_observe(d->sup)->ud = d;
    hy_notify_start(&d->notify, loop);

    hy_log(HY_INFO, "hyphad", "starting", "topology", t->path, "instances", HY_U64(hy_sup_count(d->sup)), "pid",
           HY_I64(getpid()), "schema", t->schema->digest_hex, NULL);
    watch_schema(d, t);
    hy_sup_start_all(d->sup);
    on_change(d);
    ev_run(loop, 0);

    ev_signal_stop(loop, &d->sigterm);
    ev_signal_stop(loop, &d->sigint);
    ev_signal_stop(loop, &d->sighup);
    ev_timer_stop(loop, &d->status_w);
    hy_schemawatch_stop(&d->schema_w);
    hy_relay_log_counters(hy_sup_relay(d->sup));
    rc = 0;
out:
    hy_metrics_http_stop(&d->http);
    hy_ctl_stop(&d->ctl);
    if (d->sup)
        t = (hy_topology *)hy_sup_topology(d->sup); /* the current one, after any reload */
    hy_sup_free(d->sup);
    hy_topology_free(t);
    hy_notify_free(&d->notify);
    hy_rbuf_pool_drain();
    if (rc == 0)
        hy_log(HY_INFO, "hyphad", "exiting", NULL);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"check", no_argument, NULL, 'k'},
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"log-format", required_argument, NULL, 'l'},
        {"log-level", required_argument, NULL, 'L'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int check = 0, json = 0, c;
    const char *config = NULL;
    hy_log_format log_format = HY_LOG_TEXT;
    hy_log_level log_level = HY_INFO;
    while ((c = getopt_long(argc, argv, "hc:", opts, NULL)) != -1) {
        switch (c) {
        case 'k': check = 1; break;
        case 'c': config = optarg; break;
        case 'j': json = 1; break;
        case 'l':
            if (strcmp(optarg, "text") != 0 && strcmp(optarg, "json") != 0) {
                fprintf(stderr, "hyphad: --log-format must be text or json, not '%s'\n", optarg);
                return EXIT_CONFIG;
            }
            log_format = strcmp(optarg, "json") == 0 ? HY_LOG_JSON : HY_LOG_TEXT;
            break;
        case 'L':
            if (hy_log_level_parse(optarg, &log_level) < 0) {
                fprintf(stderr, "hyphad: --log-level must be debug, info, warn or error, not '%s'\n", optarg);
                return EXIT_CONFIG;
            }
            break;
        case 'V': printf("hyphad %s\n", HYPHA_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_CONFIG;
        }
    }
    if (config ? optind != argc : optind != argc - 1) {
        fprintf(stderr, config && optind < argc ? "hyphad: the topology is given twice (-c %s and %s): give it once\n"
                                                : "hyphad: expected exactly one topology file\n",
                config, optind < argc ? argv[optind] : "");
        usage(stderr);
        return EXIT_CONFIG;
    }
    const char *topology = config ? config : argv[optind];
    if (json && !check) {
        fprintf(stderr, "hyphad: --json goes with --check (use --log-format json for JSON logs)\n");
        return EXIT_CONFIG;
    }

    hy_err err = {{0}};
    hy_topology *t = hy_topology_load(topology, &err);
    if (!t) {
        fprintf(stderr, "%s\n", err.msg);
        return EXIT_CONFIG;
    }
    if (check) {
        if (json) {
            json_t *j = hy_topology_to_json(t);
            if (!j || json_dumpf(j, stdout, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(12)) < 0) {
                fprintf(stderr, "hyphad: out of memory rendering JSON\n");
                json_decref(j);
                hy_topology_free(t);
                return 1;
            }
            fputc('\n', stdout);
            json_decref(j);
        } else {
            hy_topology_print(stdout, t);
        }
        hy_topology_free(t);
        return 0;
    }
    return run(t, log_format, log_level);
}
