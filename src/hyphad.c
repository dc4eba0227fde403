/* hyphad.c - the hypha supervisor daemon's entry point: options, then either
 * `--check` (validate and print the resolved topology) or running. Kept thin:
 * everything it does lives in the modules it calls. */
#define _GNU_SOURCE
#include <ev.h>
#include <errno.h>
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
#include "hypha/upgrade.h"
#include "hypha/uprobe.h"
#include "hypha/version.h"

extern char **environ;

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
            "  --upgrade-probe    answer as a hyphad that can take over a running one (hyphactl upgrade)\n"
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
    ev_signal sigterm, sigint, sighup, sigusr2;
    ev_timer upgrade_w;          /* the exec, once the probe answered */
    hy_probe probe;              /* the new binary's --upgrade-probe, running beside the loop */
    char upgrade_path[4096];     /* set while an upgrade is under way */
    ev_timer drain;
    ev_timer status_w;           /* systemd STATUS= and READY=1, checked a moment after changes */
    double drain_until;
    int stop_requests;
    struct ev_loop *loop;
} daemon_state;

#define DRAIN_SECONDS 5.0 /* after the workers stopped, for the bus to take what they wrote */

static daemon_state the_daemon;
static char **the_argv; /* main's: an upgrade runs the new binary with the same options */

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

/* ---- in-place upgrade (hyphactl upgrade, SIGUSR2; hypha/upgrade.h) ------- */

/* The running binary's path (the file at that path, if it was replaced). */
static int self_path(char *out, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", out, len - 1);
    if (n <= 0)
        return -1;
    out[n] = '\0';
    size_t k = (size_t)n, d = strlen(" (deleted)");
    if (k > d && strcmp(out + k - d, " (deleted)") == 0)
        out[k - d] = '\0';
    return 0;
}

/* The probe answered: the exec (from its own timer, outside any callback
 * that holds state), or the upgrade refused with nothing changed. */
static void probed(hy_probe *p, bool ok, const char *why)
{
    daemon_state *d = p->data;
    if (ok) {
        snprintf(d->upgrade_path, sizeof d->upgrade_path, "%s", p->path);
        ev_timer_set(&d->upgrade_w, 0.0, 0.0);
        ev_timer_start(d->loop, &d->upgrade_w);
        return;
    }
    hy_log(HY_ERROR, "hyphad", "upgrade refused: the new binary will not take over", "path", p->path, "error", why,
           NULL);
    char reason[4400];
    snprintf(reason, sizeof reason, "%s: %s", p->path, why);
    hy_upgrade_note("refused", HYPHA_VERSION, reason, 0);
}

/* The request: refused at once if now is no moment for it; else the
 * probe runs beside the loop and the exec follows it (probed). */
static int upgrade_request(void *ud, const char *path, json_t *reply, hy_err *err)
{
    daemon_state *d = ud;
    char why[512], self[4096];
    if (d->upgrade_path[0] || hy_probe_running(&d->probe))
        return hy_err_set(err, "an upgrade is already under way");
    if (hy_sup_upgrade_ready(d->sup, why, sizeof why) < 0)
        return hy_err_set(err, "upgrade refused: %s", why);
    if (!path) {
        if (self_path(self, sizeof self) < 0)
            return hy_err_set(err, "upgrade: cannot read /proc/self/exe: %s", strerror(errno));
        path = self;
    }
    if (hy_probe_start(&d->probe, path, err) < 0)
        return -1;
    if (reply)
        json_object_set_new(reply, "upgrade",
                            json_pack("{s:s,s:I,s:s,s:I}", "path", path, "pid", (json_int_t)getpid(), "from",
                                      HYPHA_VERSION, "count", (json_int_t)hy_upgrade_count()));
    return 0;
}

static void upgrade_failed(const char *why)
{
    hy_log(HY_ERROR, "hyphad", "upgrade failed: this hyphad goes on serving", "error", why, NULL);
    hy_upgrade_note("failed", HYPHA_VERSION, why, 0);
}

/* The exec: everything into the state, then the new binary in our place. */
static void upgrade_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    daemon_state *d = w->data;
    char path[sizeof d->upgrade_path], why[512];
    snprintf(path, sizeof path, "%s", d->upgrade_path);
    d->upgrade_path[0] = '\0';
    if (hy_sup_upgrade_ready(d->sup, why, sizeof why) < 0) {
        upgrade_failed(why);
        return;
    }
    hy_sinks_flush(&hy_sup_relay(d->sup)->bus.sinks); /* what can go out now is not carried */
    hy_ustate u;
    hy_err err = {{0}};
    if (hy_ustate_init(&u) < 0 || hy_sup_save(d->sup, &u, &err) < 0 || hy_acceptors_save(&u) < 0) {
        upgrade_failed(err.msg[0] ? err.msg : "out of memory writing the state");
        hy_ustate_free(&u);
        return;
    }
    json_object_set_new(u.root, "began", json_real(ev_time()));
    char *env[4] = {NULL}, **e = env;
    char notify[160], wd[64];
    if (hy_notify_active(&d->notify)) {
        snprintf(notify, sizeof notify, "NOTIFY_SOCKET=%s", d->notify.path);
        *e++ = notify;
        if (d->notify.watchdog_s > 0) {
            snprintf(wd, sizeof wd, "WATCHDOG_USEC=%.0f", d->notify.watchdog_s * 1e6);
            *e++ = wd;
        }
    }
    hy_log(HY_INFO, "hyphad", "upgrading: executing the new binary in place", "path", path, "instances",
           HY_U64(hy_sup_count(d->sup)), NULL);
    hy_notify_send(&d->notify, "RELOADING=1");
    (void)loop;
    hy_upgrade_exec(&u, path, the_argv, env, &err); /* returns only if it failed */
    hy_ustate_free(&u);
    hy_notify_send(&d->notify, "READY=1");
    upgrade_failed(err.msg);
}

static void usr2_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_err err = {{0}};
    hy_log(HY_INFO, "hyphad", "SIGUSR2: upgrading in place", NULL);
    if (upgrade_request(w->data, NULL, NULL, &err) < 0)
        hy_log(HY_ERROR, "hyphad", "upgrade not started", "error", err.msg, NULL);
}

/* Taken over after an upgrade (or taken back after a failed one). */
static void took_over(daemon_state *d)
{
    const hy_ustate *u = hy_upgrade_restoring();
    double pause_ms = (ev_time() - json_number_value(json_object_get(u->root, "began"))) * 1000.0;
    const char *failed = hy_upgrade_failed_reason();
    if (failed) {
        hy_log(HY_ERROR, "hyphad", "upgrade failed: the old hyphad took over again", "error", failed, "version",
               HYPHA_VERSION, NULL);
    } else {
        char p[32];
        snprintf(p, sizeof p, "%.3f", pause_ms);
        hy_log(HY_INFO, "hyphad", "upgraded in place", "from", hy_upgrade_from(), "to", HYPHA_VERSION, "pid",
               HY_I64(getpid()), "instances", HY_U64(hy_sup_count(d->sup)), "pause_ms", p, NULL);
    }
    hy_upgrade_note(failed ? "failed" : "ok", hy_upgrade_from(), failed, pause_ms);
    hy_upgrade_done();
    hy_notify_send(&d->notify, "READY=1");
}

/* Before serving after an upgrade, a failure goes back to the old binary
 * (nothing was changed outside this process); else it is logged. */
static void cannot_start(const char *why)
{
    if (hy_upgrade_restoring()) {
        hy_upgrade_fallback(why);
        _exit(1); /* no way back: the warden takes the workers with us */
    }
    hy_log(HY_ERROR, "hyphad", "cannot start", "error", why, NULL);
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

/* SIGTERM/SIGINT stop, SIGHUP reloads, SIGUSR2 upgrades. */
static void signals_start(daemon_state *d)
{
    ev_signal_init(&d->sigterm, stop_cb, SIGTERM);
    ev_signal_init(&d->sigint, stop_cb, SIGINT);
    ev_signal_init(&d->sighup, hup_cb, SIGHUP);
    ev_signal_init(&d->sigusr2, usr2_cb, SIGUSR2);
    d->sigterm.data = d->sigint.data = d->sighup.data = d->sigusr2.data = d;
    ev_signal_start(d->loop, &d->sigterm);
    ev_signal_start(d->loop, &d->sigint);
    ev_signal_start(d->loop, &d->sighup);
    ev_signal_start(d->loop, &d->sigusr2);
    ev_init(&d->upgrade_w, upgrade_cb);
    d->upgrade_w.data = d;
    hy_probe_init(&d->probe, d->loop);
    d->probe.done = probed;
    d->probe.data = d;
}

static void signals_stop(daemon_state *d)
{
    ev_signal_stop(d->loop, &d->sigterm);
    ev_signal_stop(d->loop, &d->sigint);
    ev_signal_stop(d->loop, &d->sighup);
    ev_signal_stop(d->loop, &d->sigusr2);
    ev_timer_stop(d->loop, &d->upgrade_w);
    hy_probe_stop(&d->probe);
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
        cannot_start(err.msg);
        goto out;
    }
    if (hy_ctl_start(&d->ctl, d->sup, &err) < 0) {
        cannot_start(err.msg);
        goto out;
    }
    d->ctl.reload = reload;
    d->ctl.upgrade = upgrade_request;
    d->ctl.reload_ud = d;
    if (t->has_metrics && hy_metrics_http_start(&d->http, d->sup, &err) < 0) {
        cannot_start(err.msg);
        goto out;
    }
    signals_start(d);
    ev_init(&d->status_w, status_cb);
    d->status_w.data = d;
    hy_sup_observe(d->sup)->on_change = on_change;
    hy_sup_observe(d->sup)->ud = d;
    hy_notify_start(&d->notify, loop);

    bool adopting = hy_upgrade_restoring() != NULL;
    hy_log(HY_INFO, "hyphad", adopting ? "taking over after an upgrade" : "starting", "topology", t->path,
           "instances", HY_U64(hy_sup_count(d->sup)), "pid", HY_I64(getpid()), "schema", t->schema->digest_hex, NULL);
    watch_schema(d, t);
    if (hy_sup_start_all(d->sup, &err) < 0) {
        cannot_start(err.msg);
        goto out;
    }
    if (adopting)
        took_over(d);
    hy_upgrade_signals_ready(); /* blocked across an upgrade's exec; the handlers are in place */
    on_change(d);
    ev_run(loop, 0);

    signals_stop(d);
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

/* --check: the topology resolved, for people or (json) for scripts. Takes t. */
static int print_checked(hy_topology *t, int json)
{
    int rc = 0;
    if (json) {
        json_t *j = hy_topology_to_json(t);
        if (!j || json_dumpf(j, stdout, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(12)) < 0) {
            fprintf(stderr, "hyphad: out of memory rendering JSON\n");
            rc = 1;
        } else {
            fputc('\n', stdout);
        }
        json_decref(j);
    } else {
        hy_topology_print(stdout, t);
    }
    hy_topology_free(t);
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
        {"upgrade-probe", no_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int check = 0, json = 0, c;
    const char *config = NULL;
    hy_log_format log_format = HY_LOG_TEXT;
    hy_log_level log_level = HY_INFO;
#ifdef HY_TEST_STATE_FORMAT
    hy_upgrade_state_version = HY_TEST_STATE_FORMAT;
#endif
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
        case 'P': printf(HY_PROBE_LINE " %s state-format %u\n", HYPHA_VERSION, hy_upgrade_state_version); return 0;
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

    the_argv = argv;
    if (!check) { /* after an upgrade: its state, before anything is opened */
        hy_log_init(stderr, log_format, log_level);
        hy_upgrade_load(argv);
    }
    hy_err err = {{0}};
    hy_topology *t = hy_topology_load(topology, &err);
    if (!t && hy_upgrade_restoring()) {
        hy_upgrade_fallback(err.msg);
        return 1;
    }
    if (!t) {
        fprintf(stderr, "%s\n", err.msg);
        return EXIT_CONFIG;
    }
    if (check)
        return print_checked(t, json);
    return run(t, log_format, log_level);
}
