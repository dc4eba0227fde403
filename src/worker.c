/* worker.c - one worker process's life: spawn, exit, stop escalation,
 * backoff, the start timeout and the heartbeat watchdog.
 *
 * The one idea: every transition goes through hy_worker_exited() or a
 * timer, and each instance owns exactly one process at a time. What an
 * exit means and what comes next is decided by hy_exit_plan (exitplan.c,
 * pure); this file gathers the facts and carries the verdict out.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "hypha/log.h"
#include "hypha/spawn.h"
#include "hypha/units.h"
#include "instance.h"

extern char **environ;

#define COMP "supervisor"
#define STOP_MOMENT_MS 200u /* after EOF, before the stop signal */

static double now_s(const hy_instance *in) { return ev_now(in->sup->loop); }

static void set_timer(hy_instance *in, ev_timer *t, uint64_t ms)
{
    ev_timer_stop(in->sup->loop, t);
    ev_timer_set(t, (double)ms / 1000.0, 0.0);
    ev_timer_start(in->sup->loop, t);
}

/* ---- environment: hyphad's own, then the topology's `env`, then HYPHA_* ---- */

static bool in_env(const hy_worker_spec *w, const char *key, size_t klen)
{
    for (size_t i = 0; i < w->nenv; i++)
        if (strncmp(w->env[i], key, klen) == 0 && w->env[i][klen] == '=')
            return true;
    return false;
}

/* USER, LOGNAME and HOME are the worker's user's when it has one (as
 * systemd's User= sets them), unless the topology's `env` says otherwise. */
static bool user_key(const hy_worker_spec *w, const char *e, size_t klen)
{
    return w->proc.user && ((klen == 4 && !strncmp(e, "USER", 4)) || (klen == 7 && !strncmp(e, "LOGNAME", 7)) ||
                            (klen == 4 && !strncmp(e, "HOME", 4)));
}

static bool overridden(const hy_worker_spec *w, const char *e)
{
    const char *eq = strchr(e, '=');
    size_t klen = eq ? (size_t)(eq - e) : strlen(e);
    return strncmp(e, "HYPHA_", 6) == 0 || user_key(w, e, klen) || in_env(w, e, klen);
}

static int add_user_env(const hy_worker_spec *w, char **env, size_t *k)
{
    const char *const keys[] = {"USER", "LOGNAME", "HOME"};
    for (size_t i = 0; w->proc.user && i < 3; i++)
        if (!in_env(w, keys[i], strlen(keys[i])) &&
            asprintf(&env[(*k)++], "%s=%s", keys[i], i == 2 ? w->proc.home : w->proc.user) < 0) {
            env[--*k] = NULL;
            return -1;
        }
    return 0;
}

static char **build_env(const hy_worker_spec *w, unsigned index, const hy_topology *t)
{
    size_t n = 0;
    for (char **e = environ; *e; e++)
        n++;
    char **env = calloc(n + w->nenv + 8, sizeof *env);
    size_t k = 0;
    if (!env)
        return NULL;
    for (char **e = environ; *e; e++)
        if (!overridden(w, *e) && !(env[k++] = strdup(*e)))
            goto oom;
    for (size_t i = 0; i < w->nenv; i++)
        if (!(env[k++] = strdup(w->env[i])))
            goto oom;
    if (add_user_env(w, env, &k) < 0)
        goto oom;
    if (asprintf(&env[k++], "HYPHA_WORKER=%s", w->name) < 0 || asprintf(&env[k++], "HYPHA_INSTANCE=%u", index) < 0 ||
        asprintf(&env[k++], "HYPHA_SCHEMA_DIGEST=%s", t->schema->digest_hex) < 0 ||
        asprintf(&env[k++], "HYPHA_SCHEMA_FILE=%s", t->schema_path) < 0) {
        env[k - 1] = NULL;
        goto oom;
    }
    return env;
oom:
    hy_strv_free(env);
    return NULL;
}

/* ---- spawn ---------------------------------------------------------------- */

static void spawn_failed(hy_instance *in, const char *msg)
{
    /* No child at all (fds or processes exhausted): a failed start. */
    snprintf(in->spawn_error, sizeof in->spawn_error, "%s", msg);
    char line[320];
    snprintf(line, sizeof line, "unable to spawn %s: %s", in->label, msg);
    hy_log(HY_ERROR, COMP, line, "worker", in->name, "instance", in->idx, NULL);
    in->pid = 0;
    hy_worker_exited(in, -1);
}

void hy_worker_spawn(hy_instance *in)
{
    hy_sup *s = in->sup;
    const hy_worker_spec *w = in->spec;
    char procs[PATH_MAX];
    hy_spawn_creds creds;
    hy_worker_proc_creds(&w->proc, &creds);
    hy_spawn_req req = {.path = w->exec_path, .argv = w->argv, .envp = in->envp, .cwd = w->cwd,
                        .pipe_size = hy_spawn_pipe_size(s->ninst), .cgroup_procs = procs, .creds = &creds};
    hy_spawn_res res;
    hy_err err;
    if (hy_wio_slot_busy(in)) {
        /* Two exited processes' output still waits for the back-pressure
         * to ease: a third waits too (wio.c starts it through the timer). */
        in->state = HY_ST_BACKOFF;
        ev_timer_stop(s->loop, &in->timer);
        in->spawn_deferred = true;
        hy_log(HY_INFO, COMP, "restart waits until its predecessors' output is read: back-pressure", "worker",
               in->name, "instance", in->idx, NULL);
        hy_sup_changed(s);
        return;
    }
    in->kill_reason = HY_EXIT_NONE;
    in->spawn_error[0] = '\0';
    in->started_at = now_s(in);
    if (in->last_reason != HY_EXIT_NONE)
        in->restarts++;
    int forked = 0;
    if (hy_contain_prepare(in, procs, sizeof procs, &err) < 0 ||
        (!(forked = hy_forksrv_spawn(in, procs, &res)) && hy_spawn(&req, &res, &err) < 0)) {
        spawn_failed(in, err.msg);
        return;
    }
    in->pid = res.pid;
    in->forked = forked == 1;
    hy_wio_attach(in, res.in_fd, res.out_fd, res.err_fd, res.status_fd);
    hy_hold_attached(in); /* what was held for it goes out now */
    hy_inst_heartbeat(in); /* after attach: its stdout's pause clock is running */
    if (hy_warden_add(&s->warden, in->pid, &err) < 0)
        hy_log(HY_ERROR, COMP, "cannot register worker with the warden", "worker", in->name, "instance", in->idx,
               "error", err.msg, NULL);
    hy_log(HY_INFO, COMP, "started", "worker", in->name, "instance", in->idx, "pid", HY_I64(in->pid),
           forked ? "via" : NULL, "forkserver", NULL);
    if (w->policy.start_timeout_ms == 0) {
        in->state = HY_ST_RUNNING;
        hy_hold_ready(in);
    } else {
        in->state = HY_ST_STARTING;
        set_timer(in, &in->timer, w->policy.start_timeout_ms);
    }
    if (w->policy.heartbeat_timeout_ms)
        set_timer(in, &in->hb_timer, w->policy.heartbeat_timeout_ms);
    in->ever_started = true;
    hy_sup_changed(s);
}

/* ---- exits: the facts, the verdict, and carrying it out -------------------- */

/* What the worker left running goes with it (as systemd does with a
 * unit's leftovers: contain.c), so a restart never runs beside its
 * predecessor's children. */
static void reap_leftovers(hy_instance *in, pid_t oldpid)
{
    hy_err err;
    if (oldpid <= 0)
        return;
    hy_contain_reap(in, oldpid);
    if (hy_warden_remove(&in->sup->warden, oldpid, &err) < 0)
        hy_log(HY_WARN, COMP, "warden", "error", err.msg, NULL);
}

static hy_exit_facts gather(hy_instance *in, int wstatus)
{
    hy_sup *s = in->sup;
    double up = wstatus == -1 ? 0 : now_s(in) - in->started_at;
    hy_exit_facts f = {
        .wstatus = wstatus,
        .no_process = wstatus == -1,
        .spawn_failed = in->spawn_error[0] != '\0',
        .killed_for = in->kill_reason,
        .stopping = in->state == HY_ST_STOPPING || s->shutting_down,
        .start_after_stop = in->start_after_stop,
        .shutting_down = s->shutting_down,
        .uptime_ms = up > 0 ? (uint64_t)(up * 1000.0) : 0,
        .n = in->n,
        .retrying = in->retrying,
        .jitter_u = hy_rand_signed(&s->rng),
    };
    return f;
}

static hy_exit_verdict decide(hy_instance *in, int wstatus)
{
    const hy_policy *p = &in->spec->policy;
    hy_exit_facts f = gather(in, wstatus);
    if (hy_exit_counts(p, &f)) { /* only an exit that reaches the restart decision counts towards giving up */
        if (hy_exit_resets(p, f.uptime_ms))
            hy_giveup_clear(&in->giveup);
        f.over_give_up = hy_giveup_record(&in->giveup, (uint64_t)(now_s(in) * 1000.0), p->give_up_within_ms);
    }
    return hy_exit_plan(p, &f);
}

static const char *status_str(const hy_exit_verdict *v, char *out, size_t len)
{
    const char *sn = v->signal ? hy_signal_abbrev(v->signal) : NULL;
    if (v->signal && sn)
        snprintf(out, len, "SIG%s", sn);
    else if (v->signal)
        snprintf(out, len, "signal %d", v->signal);
    else
        snprintf(out, len, "%d", v->code);
    return out;
}

static void on_stopped(hy_instance *in, const hy_exit_verdict *v, const char *pid, const char *status,
                       const char *up)
{
    hy_sup *s = in->sup;
    in->state = HY_ST_STOPPED;
    in->start_after_stop = false;
    hy_log(HY_INFO, COMP, "stopped", "worker", in->name, "instance", in->idx, "pid", pid, "status", status, "uptime",
           up, NULL);
    if (v->next == HY_NEXT_STOPPED_START)
        hy_worker_spawn(in);
    if (in->retiring)
        ev_feed_event(s->loop, &s->gc_w, EV_TIMER); /* freed outside the child callback */
    hy_sup_changed(s);
}

static void on_failed(hy_instance *in, const hy_exit_verdict *v, const char *pid, const char *status, const char *up)
{
    const hy_policy *p = &in->spec->policy;
    char within[24], retry[24];
    in->state = HY_ST_FAILED;
    in->retrying = false;
    hy_format_duration(p->give_up_within_ms, within, sizeof within);
    if (v->delay_ms)
        hy_format_duration(v->delay_ms, retry, sizeof retry);
    else
        snprintf(retry, sizeof retry, "never");
    hy_log(HY_ERROR, COMP, "exited", "worker", in->name, "instance", in->idx, "pid", pid, "status", status, "reason",
           hy_exit_reason_str(v->reason), "uptime", up, "next", "failed", "failures", HY_U64(p->give_up_failures),
           "within", within, "retry_in", retry, "restarts", HY_U64(in->restarts), NULL);
    if (v->delay_ms)
        set_timer(in, &in->timer, v->delay_ms);
}

static void on_backoff(hy_instance *in, const hy_exit_verdict *v, const char *pid, const char *status, const char *up)
{
    char delay[32];
    snprintf(delay, sizeof delay, "%" PRIu64 "ms", v->delay_ms);
    hy_log(v->clean ? HY_INFO : HY_WARN, COMP, "exited", "worker", in->name, "instance", in->idx, "pid", pid,
           "status", status, "reason", hy_exit_reason_str(v->reason), "uptime", up, "next", "backoff", "delay", delay,
           "restarts", HY_U64(in->restarts), NULL);
    if (v->next == HY_NEXT_SPAWN_NOW) {
        hy_worker_spawn(in); /* backoff 0: at once, for the lowest restart latency */
    } else {
        /* A spawn that failed before any process existed goes through the
         * loop even at delay 0: spawning again from here would recurse while
         * fork keeps failing. */
        in->state = HY_ST_BACKOFF;
        set_timer(in, &in->timer, v->delay_ms);
    }
}

static void carry_out(hy_instance *in, const hy_exit_verdict *v, pid_t oldpid, double uptime)
{
    char pid[24], status[32], up[32];
    snprintf(pid, sizeof pid, "%lld", (long long)oldpid);
    status_str(v, status, sizeof status);
    snprintf(up, sizeof up, "%.3fs", uptime);
    if (v->next == HY_NEXT_STOPPED || v->next == HY_NEXT_STOPPED_START) {
        on_stopped(in, v, pid, status, up);
        return;
    }
    hy_sup_changed(in->sup);
    if (v->reset_history) {
        in->retrying = false;
    }
    in->n = v->n;
    if (v->next == HY_NEXT_EXITED) {
        in->state = HY_ST_EXITED;
        hy_log(v->clean ? HY_INFO : HY_WARN, COMP, "exited", "worker", in->name, "instance", in->idx, "pid", pid,
               "status", status, "reason", hy_exit_reason_str(v->reason), "uptime", up, "next", "exited", "restart",
               hy_restart_policy_str(in->spec->policy.restart), NULL);
    } else if (v->next == HY_NEXT_FAILED) {
        on_failed(in, v, pid, status, up);
    } else {
        on_backoff(in, v, pid, status, up);
    }
}

/* wstatus -1: the spawn itself failed, no process. */
void hy_worker_exited(hy_instance *in, int wstatus)
{
    pid_t oldpid = in->pid;
    double uptime = wstatus == -1 ? 0 : now_s(in) - in->started_at;
    hy_wio_detach(in);
    /* Its stdout ended in the middle of a frame, seen only now (the exit
     * came first): not a clean exit, whatever its status, as when the cut
     * is seen while it runs (wio.c's protocol_kill). */
    if (in->cut_at_exit && in->kill_reason == HY_EXIT_NONE)
        in->kill_reason = HY_EXIT_PROTOCOL;
    in->cut_at_exit = false;
    ev_timer_stop(in->sup->loop, &in->timer);
    ev_timer_stop(in->sup->loop, &in->stop_timer);
    ev_timer_stop(in->sup->loop, &in->hb_timer);
    in->last_exit_at = now_s(in);
    reap_leftovers(in, oldpid);
    in->pid = 0;
    hy_exit_verdict v = decide(in, wstatus);
    bool restarting = v.next == HY_NEXT_BACKOFF || v.next == HY_NEXT_SPAWN_NOW || v.next == HY_NEXT_STOPPED_START;
    hy_wio_release_stdin(in, hy_hold_exit(in, restarting));
    in->held_at_exit = in->in.hold ? hy_fanq_frames(&in->in.q) : 0; /* in its counters line */
    if (!restarting)
        hy_hold_cancel(in); /* and its run-time subscriptions go */
    in->last_reason = v.reason;
    in->last_code = v.code;
    in->last_signal = v.signal;
    if (!in->out_held) /* else once its output is read (wio.c): one counters line per exit */
        hy_inst_log_counters(in);
    carry_out(in, &v, oldpid, uptime < 0 ? 0 : uptime);
}

/* ---- stopping --------------------------------------------------------------- */

static uint64_t stop_moment(const hy_policy *p)
{
    return STOP_MOMENT_MS < p->stop_grace_ms ? STOP_MOMENT_MS : p->stop_grace_ms;
}

void hy_worker_stop(hy_instance *in)
{
    hy_sup *s = in->sup;
    switch (in->state) {
    case HY_ST_STARTING:
    case HY_ST_RUNNING:
        in->state = HY_ST_STOPPING;
        ev_timer_stop(s->loop, &in->timer);
        hy_hold_stopping(in); /* an operator's restart: its queue waits for the next process */
        hy_wio_close_stdin(in, true, hy_wproto_send_shutdown(in)); /* stdin EOF */
        in->stop_stage = 1;
        hy_log(HY_INFO, COMP, "stopping", "worker", in->name, "instance", in->idx, "pid", HY_I64(in->pid), NULL);
        set_timer(in, &in->stop_timer, stop_moment(&in->spec->policy));
        break;
    case HY_ST_BACKOFF:
    case HY_ST_FAILED:
    case HY_ST_EXITED:
        ev_timer_stop(s->loop, &in->timer);
        in->state = HY_ST_STOPPED;
        hy_hold_cancel(in);
        break;
    case HY_ST_STOPPING:
    case HY_ST_STOPPED:
        break;
    }
}

static void stop_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_instance *in = w->data;
    if (in->state != HY_ST_STOPPING || in->pid <= 0)
        return;
    const hy_policy *p = &in->spec->policy;
    if (in->stop_stage == 1) {
        const char *sig = hy_signal_name(p->stop_signal);
        hy_log(HY_INFO, COMP, "sending stop signal", "worker", in->name, "instance", in->idx, "pid", HY_I64(in->pid),
               "signal", sig ? sig : "?", NULL);
        hy_inst_kill_group(in, p->stop_signal);
        in->stop_stage = 2;
        set_timer(in, &in->stop_timer, p->stop_grace_ms - stop_moment(p));
    } else if (in->stop_stage == 2) {
        char g[24];
        hy_log(HY_WARN, COMP, "still running after grace: killing", "worker", in->name, "instance", in->idx, "pid",
               HY_I64(in->pid), "grace", hy_format_duration(p->stop_grace_ms, g, sizeof g), NULL);
        hy_inst_kill_group(in, SIGKILL);
        in->stop_stage = 3;
    }
}

/* ---- timers ------------------------------------------------------------------ */

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_instance *in = w->data;
    switch (in->state) {
    case HY_ST_STARTING: /* alive for start_timeout: ready */
        hy_inst_ready(in, "start_timeout");
        break;
    case HY_ST_BACKOFF:
        hy_worker_spawn(in);
        break;
    case HY_ST_FAILED:
        in->retrying = true;
        hy_log(HY_INFO, COMP, "retrying failed worker", "worker", in->name, "instance", in->idx, NULL);
        hy_worker_spawn(in);
        break;
    default:
        break;
    }
}

/* Liveness: a heartbeat control frame only updates last_heartbeat; this
 * timer wakes at the deadline and either re-arms for the time left or
 * kills (libev's "ev_timer again" pattern: no timer work per heartbeat). */
static void hb_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    hy_instance *in = w->data;
    uint64_t timeout = in->spec->policy.heartbeat_timeout_ms;
    if (in->pid <= 0 || timeout == 0 || (in->state != HY_ST_STARTING && in->state != HY_ST_RUNNING))
        return;
    /* Back-pressure is not a fault: while hyphad holds its stdout back, the
     * heartbeats it writes wait in the pipe, and the deadline waits too. */
    double left = (double)timeout / 1000.0 - hy_inst_heartbeat_age(in);
    if (left > 0.0005) {
        ev_timer_set(w, left, 0.0);
        ev_timer_start(loop, w);
        return;
    }
    if (in->kill_reason != HY_EXIT_NONE)
        return;
    char t[24], age[32];
    snprintf(age, sizeof age, "%.3fs", hy_inst_heartbeat_age(in));
    hy_log(HY_ERROR, COMP, "no heartbeat within heartbeat.timeout: killing it", "worker", in->name, "instance",
           in->idx, "pid", HY_I64(in->pid), "timeout", hy_format_duration(timeout, t, sizeof t), "since_last", age,
           NULL);
    hy_inst_kill_for(in, HY_EXIT_HEARTBEAT);
}

/* ---- setup ------------------------------------------------------------------- */

void hy_worker_clear_failures(hy_instance *in)
{
    in->n = 0;
    in->retrying = false;
    hy_giveup_clear(&in->giveup);
}

void hy_worker_init(hy_instance *in)
{
    ev_init(&in->timer, timer_cb);
    ev_init(&in->stop_timer, stop_timer_cb);
    ev_init(&in->hb_timer, hb_timer_cb);
    in->timer.data = in->stop_timer.data = in->hb_timer.data = in;
    in->last_code = -1;
    hy_hold_init(in);
}

int hy_worker_prepare(hy_instance *in)
{
    in->envp = build_env(in->spec, in->index, in->sup->topo);
    if (!in->envp || hy_giveup_init(&in->giveup, in->spec->policy.give_up_failures) < 0)
        return -1;
    return 0;
}

void hy_worker_free(hy_instance *in)
{
    struct ev_loop *loop = in->sup->loop;
    ev_timer_stop(loop, &in->timer);
    ev_timer_stop(loop, &in->stop_timer);
    ev_timer_stop(loop, &in->hb_timer);
    hy_hold_free(in);
    hy_strv_free(in->envp);
    in->envp = NULL;
    hy_giveup_free(&in->giveup);
}
