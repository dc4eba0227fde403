/* sup.c - the instance table: creating and freeing instances, starting
 * them in batches, reaping exits, operator commands, applying a reload
 * plan, and the snapshot the observers read (see hypha/supervisor.h).
 * One process's life is worker.c's; this file only says which instance.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hypha/log.h"
#include "hypha/reload.h"
#include "hypha/upgrade.h"
#include "instance.h"

#define COMP "supervisor"
#define START_BATCH 32 /* instances spawned per loop iteration at start */

/* ---- instances ------------------------------------------------------------- */

/* Watchers stopped, fds closed, memory freed. The process, if any, is the
 * caller's business (hyphad exits, or the instance was stopped first). */
static void instance_free(hy_instance *in)
{
    if (!in)
        return;
    hy_worker_free(in);
    hy_wio_free(in);
    hy_contain_free(in);
    hy_tail_free(&in->tail);
    free(in);
}

/* One instance of worker `w`, stopped, with its watchers ready. NULL on ENOMEM. */
static hy_instance *instance_new(hy_sup *s, const hy_worker_spec *w, unsigned j, hy_err *err)
{
    hy_instance *in = calloc(1, sizeof *in);
    if (!in) {
        hy_err_set(err, "out of memory for %s[%u]", w->name, j);
        return NULL;
    }
    in->sup = s;
    in->spec = w;
    in->index = j;
    in->state = HY_ST_STOPPED;
    snprintf(in->name, sizeof in->name, "%s", w->name);
    snprintf(in->label, sizeof in->label, "%s[%u]", w->name, j);
    snprintf(in->idx, sizeof in->idx, "%u", j);
    hy_worker_init(in);
    hy_wio_init(in);
    if (hy_worker_prepare(in) < 0 || hy_contain_init(in) < 0) {
        hy_err_set(err, "out of memory building %s", in->label);
        instance_free(in);
        return NULL;
    }
    return in;
}

static bool spec_in(const hy_worker_spec *w, const hy_topology *t)
{
    return t->nworkers && w >= t->workers && w < t->workers + t->nworkers;
}

static bool all_stopped(const hy_sup *s)
{
    for (size_t i = 0; i < s->ninst; i++)
        if (s->inst[i]->pid > 0)
            return false;
    return true;
}

static void check_shutdown(hy_sup *s)
{
    if (s->shutting_down && all_stopped(s) && s->on_all_stopped) {
        void (*cb)(hy_sup *) = s->on_all_stopped;
        s->on_all_stopped = NULL;
        cb(s);
    }
}

static bool retiring_twin(const hy_sup *s, const hy_instance *in)
{
    for (size_t i = 0; i < s->ninst; i++) {
        const hy_instance *o = s->inst[i];
        if (o->retiring && o->index == in->index && strcmp(o->name, in->name) == 0)
            return true;
    }
    return false;
}

static void free_unused_topologies(hy_sup *s)
{
    for (size_t r = 0; r < s->nretired;) {
        bool used = false;
        for (size_t i = 0; i < s->ninst && !used; i++)
            used = spec_in(s->inst[i]->spec, s->retired[r]);
        if (used) {
            r++;
            continue;
        }
        hy_topology_free(s->retired[r]);
        s->retired[r] = s->retired[--s->nretired];
    }
}

/* ---- start ordering: `after` ------------------------------------------------ */

/* Every current (not retiring) instance of each of w's `after` workers is
 * running; else false and *blocker the first name that is not. */
static bool after_ready(const hy_sup *s, const hy_worker_spec *w, const char **blocker)
{
    for (size_t a = 0; a < w->nafter; a++)
        for (size_t i = 0; i < s->ninst; i++) {
            const hy_instance *o = s->inst[i];
            if (!o->retiring && strcmp(o->name, w->after[a]) == 0 && o->state != HY_ST_RUNNING) {
                *blocker = w->after[a];
                return false;
            }
        }
    return true;
}

/* Spawn it now, or mark it waiting until its `after` workers are ready
 * (said once in the log, and in status). Ordering only: a dependency that
 * restarts later does not touch the instances started after it. */
static void start_or_wait(hy_instance *in)
{
    const char *blocker = NULL;
    if (after_ready(in->sup, in->spec, &blocker)) {
        in->waiting = false;
        hy_worker_spawn(in);
        return;
    }
    if (!in->waiting || strcmp(in->waiting_for, blocker) != 0) {
        snprintf(in->waiting_for, sizeof in->waiting_for, "%s", blocker);
        hy_log(HY_INFO, COMP, "waiting", "worker", in->name, "instance", in->idx, "dependency", blocker, NULL);
    }
    in->waiting = true;
    hy_sup_changed(in->sup);
}

/* Free retired instances that have stopped, free topologies nobody uses any
 * more, start instances whose predecessor is gone, and those whose `after`
 * workers are now ready. Runs from its own
 * watcher so no caller is iterating s->inst meanwhile. */
static void gc_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    hy_sup *s = w->data;
    if (ev_is_active(&s->start_w)) { /* the first start walks s->inst by index: wait for it */
        ev_timer_set(&s->gc_w, 0.01, 0.0);
        ev_timer_start(loop, &s->gc_w);
        return;
    }
    size_t k = 0;
    bool freed = false;
    for (size_t i = 0; i < s->ninst; i++) {
        hy_instance *in = s->inst[i];
        if (in->retiring && in->pid == 0 && in->state != HY_ST_STOPPING && !in->out_held) {
            instance_free(in);
            freed = true;
        } else {
            s->inst[k++] = in;
        }
    }
    s->ninst = k;
    if (freed)
        hy_bus_subs_changed(&s->relay.bus);
    free_unused_topologies(s);
    for (size_t i = 0; i < s->ninst; i++) {
        hy_instance *in = s->inst[i];
        if (in->pending && !s->shutting_down && !retiring_twin(s, in)) {
            in->pending = false;
            start_or_wait(in);
        } else if (in->waiting && !s->shutting_down && in->state == HY_ST_STOPPED && in->pid == 0 &&
                   !in->retiring) {
            start_or_wait(in);
        }
    }
    if (freed)
        hy_sup_changed(s);
}

/* ---- exits and the warden --------------------------------------------------- */

static void warden_died(hy_sup *s)
{
    hy_err err;
    s->warden.pid = 0;
    if (s->warden.fd >= 0)
        close(s->warden.fd);
    s->warden.fd = -1;
    hy_log(HY_ERROR, COMP, "the warden process died: restarting it", NULL);
    if (s->shutting_down || hy_warden_start(&s->warden, s->cg.top, &err) < 0)
        return;
    for (size_t i = 0; i < s->ninst; i++)
        if (s->inst[i]->pid > 0)
            (void)hy_warden_add(&s->warden, s->inst[i]->pid, &err);
}

static void child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_sup *s = w->data;
    pid_t pid = w->rpid;
    int st = w->rstatus;
    if (!WIFEXITED(st) && !WIFSIGNALED(st))
        return; /* stopped or continued: not an exit */
    if (pid == s->warden.pid) {
        warden_died(s);
        return;
    }
    if (hy_forksrv_exited(s, pid, st))
        return;
    for (size_t i = 0; i < s->ninst; i++) {
        if (s->inst[i]->pid == pid) {
            hy_worker_exited(s->inst[i], st);
            check_shutdown(s);
            return;
        }
    }
    hy_log(HY_DEBUG, COMP, "reaped orphan", "pid", HY_I64(pid), NULL); /* as subreaper / PID 1 */
}

/* ---- starting and stopping everything -------------------------------------- */

/* Start instances a batch per loop iteration, so that signals, exits and
 * timers are handled while hundreds of workers come up. */
static void start_batch_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    hy_sup *s = w->data;
    for (int k = 0; k < START_BATCH && s->next_start < s->ninst; k++) {
        hy_instance *in = s->inst[s->next_start++];
        if (in->state == HY_ST_STOPPED && in->pid == 0 && !in->pending && !in->retiring && !s->shutting_down &&
            !in->adopted && in->spec->autostart) /* autostart: false: defined, left stopped */
            start_or_wait(in);
    }
    if (s->next_start < s->ninst && !s->shutting_down) {
        ev_timer_set(w, 0.0, 0.0);
        ev_timer_start(loop, w);
    }
}

int hy_sup_start_all(hy_sup *s, hy_err *err)
{
    if (hy_relay_start(&s->relay, err) < 0)
        return -1;
    /* exits that came while hyphad was being upgraded: no SIGCHLD will tell */
    if (hy_upgrade_restoring())
        ev_feed_signal_event(s->loop, SIGCHLD);
    s->next_start = 0;
    ev_timer_set(&s->start_w, 0.0, 0.0);
    ev_timer_start(s->loop, &s->start_w);
    return 0;
}

void hy_sup_stop_all(hy_sup *s, void (*done)(hy_sup *))
{
    s->shutting_down = true;
    s->on_all_stopped = done;
    for (size_t i = 0; i < s->ninst; i++)
        hy_worker_stop(s->inst[i]);
    check_shutdown(s);
}

void hy_sup_kill_all(hy_sup *s)
{
    for (size_t i = 0; i < s->ninst; i++) {
        hy_instance *in = s->inst[i];
        if (in->pid > 0) {
            hy_inst_kill_group(in, SIGKILL);
            in->stop_stage = 3;
        }
    }
}

size_t hy_sup_live(const hy_sup *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->ninst; i++)
        n += s->inst[i]->pid > 0;
    return n;
}

bool hy_sup_shutting_down(const hy_sup *s) { return s->shutting_down; }

bool hy_sup_output_held(const hy_sup *s)
{
    for (size_t i = 0; i < s->ninst; i++)
        if (s->inst[i]->out_held)
            return true;
    return false;
}

bool hy_sup_all_started(const hy_sup *s)
{
    for (size_t i = 0; i < s->ninst; i++)
        if (!s->inst[i]->ever_started && !s->inst[i]->pending && !s->inst[i]->waiting &&
            s->inst[i]->spec->autostart)
            return false;
    return true;
}

/* ---- operator commands ---------------------------------------------------- */

void hy_sup_start_instance(hy_instance *in)
{
    hy_sup *s = in->sup;
    if (s->shutting_down || in->retiring)
        return;
    hy_worker_clear_failures(in);
    in->pending = false;
    switch (in->state) {
    case HY_ST_STOPPING:
        in->start_after_stop = true;
        break;
    case HY_ST_STARTING:
    case HY_ST_RUNNING:
        break;
    default: /* exited, backoff, failed, stopped: no process */
        ev_timer_stop(s->loop, &in->timer);
        hy_log(HY_INFO, COMP, "starting on request", "worker", in->name, "instance", in->idx, "was",
               hy_state_str(in->state), NULL);
        start_or_wait(in);
        break;
    }
}

void hy_sup_stop_instance(hy_instance *in)
{
    in->start_after_stop = false;
    in->pending = false;
    in->waiting = false;
    bool had = in->pid > 0;
    hy_worker_stop(in);
    if (!had)
        hy_sup_changed(in->sup);
}

bool hy_sup_signal_instance(hy_instance *in, int sig)
{
    if (in->pid <= 0)
        return false;
    hy_inst_kill_group(in, sig);
    return true;
}

void hy_sup_restart_instance(hy_instance *in)
{
    if (in->sup->shutting_down || in->retiring)
        return;
    hy_worker_clear_failures(in);
    if (in->state == HY_ST_STARTING || in->state == HY_ST_RUNNING || in->state == HY_ST_STOPPING) {
        in->start_after_stop = true; /* first: the stop keeps what is queued for the next process */
        hy_worker_stop(in);
    } else {
        hy_sup_start_instance(in);
    }
}

void hy_sup_restart_preload(hy_sup *s, const char *worker) { hy_forksrv_restart(s, worker); }

/* ---- setup ------------------------------------------------------------------- */

static int make_instances(hy_sup *s, const hy_topology *t, hy_err *err)
{
    size_t total = 0;
    for (size_t i = 0; i < t->nworkers; i++)
        total += t->workers[i].instances;
    if (total && !(s->inst = calloc(total, sizeof *s->inst)))
        return hy_err_set(err, "out of memory for %zu worker instances", total);
    for (size_t i = 0; i < t->nworkers; i++)
        for (unsigned j = 0; j < t->workers[i].instances; j++) {
            hy_instance *in = instance_new(s, &t->workers[i], j, err);
            if (!in)
                return -1;
            s->inst[s->ninst++] = in;
        }
    hy_bus_subs_changed(&s->relay.bus);
    return 0;
}

/* Every HY_DROPWIN_STEP_S: each instance's counters into its window, so
 * that health can tell its last minute (a pass over the table, no I/O). */
static void drops_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    hy_sup *s = w->data;
    double now = ev_now(loop);
    for (size_t i = 0; i < s->ninst; i++)
        hy_dropwin_record(&s->inst[i]->dropwin, now, s->inst[i]->in.frames, &s->inst[i]->drops);
}

/* Drop lines name the message (drops.c): by the current topology's
 * contracts, so the lookup follows a reload. */
static const char *type_name_of(const void *ud, uint16_t type_id)
{
    const hy_sup *s = ud;
    const hy_message *m = hy_schema_find(s->topo->schema, type_id);
    return m ? m->name : NULL;
}

hy_sup *hy_sup_new(struct ev_loop *loop, const hy_topology *t, hy_err *err)
{
    hy_sup *s = calloc(1, sizeof *s);
    if (!s) {
        hy_err_set(err, "out of memory");
        return NULL;
    }
    s->loop = loop;
    s->topo = t;
    s->warden.fd = -1;
    s->started_at = ev_now(loop);
    if (getrandom(&s->rng, sizeof s->rng, 0) != (ssize_t)sizeof s->rng)
        s->rng = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull ^ (uint64_t)time(NULL);
    ev_init(&s->start_w, start_batch_cb);
    ev_init(&s->gc_w, gc_cb);
    ev_child_init(&s->child_w, child_cb, 0, 0);
    ev_timer_init(&s->drops_w, drops_cb, HY_DROPWIN_STEP_S, HY_DROPWIN_STEP_S);
    hy_drops_set_namer(type_name_of, s);
    s->start_w.data = s->gc_w.data = s->child_w.data = s->drops_w.data = s;
    /* Cgroups first: the instances' paths and the warden need hypha-<pid>. */
    const hy_ustate *u = hy_upgrade_restoring(); /* after an upgrade: its workers and warden, adopted */
    if (hy_relay_init(&s->relay, loop, t, &s->rng, err) < 0 || hy_contain_setup(s, err) < 0 ||
        make_instances(s, t, err) < 0 ||
        (u ? hy_sup_adopt(s, u, err) : hy_warden_start(&s->warden, s->cg.top, err)) < 0) {
        if (!u) /* after an upgrade nothing is closed or stopped: the caller goes back to the old
                 * hyphad, which adopts all of it (hy_upgrade_fallback) */
            hy_sup_free(s);
        return NULL;
    }
    ev_child_start(loop, &s->child_w);
    ev_timer_start(loop, &s->drops_w);
    return s;
}

void hy_sup_free(hy_sup *s)
{
    if (!s)
        return;
    hy_drops_set_namer(NULL, NULL);
    ev_child_stop(s->loop, &s->child_w);
    ev_timer_stop(s->loop, &s->start_w);
    ev_timer_stop(s->loop, &s->gc_w);
    ev_timer_stop(s->loop, &s->drops_w);
    hy_forksrv_free_all(s);
    hy_warden_quit(&s->warden);
    for (size_t i = 0; i < s->ninst; i++)
        instance_free(s->inst[i]);
    hy_contain_teardown(s);
    hy_relay_free(&s->relay);
    free(s->inst);
    for (size_t i = 0; i < s->nretired; i++)
        hy_topology_free(s->retired[i]);
    free(s->retired);
    free(s);
}

/* ---- accessors ------------------------------------------------------------- */

hy_sup_observers *hy_sup_observe(hy_sup *s) { return &s->obs; }
void hy_sup_set_schemawatch(hy_sup *s, const struct hy_schemawatch *w) { s->schemawatch = w; }
const hy_topology *hy_sup_topology(const hy_sup *s) { return s->topo; }
struct hy_relay *hy_sup_relay(hy_sup *s) { return &s->relay; }
size_t hy_sup_count(const hy_sup *s) { return s->ninst; }
hy_instance *hy_sup_at(const hy_sup *s, size_t i) { return i < s->ninst ? s->inst[i] : NULL; }
const char *hy_inst_worker(const hy_instance *in) { return in->name; }
unsigned hy_inst_index(const hy_instance *in) { return in->index; }
bool hy_inst_retiring(const hy_instance *in) { return in->retiring; }
const hy_tail *hy_inst_tail(const hy_instance *in) { return &in->tail; }
hy_state hy_inst_state(const hy_instance *in) { return in->state; }
pid_t hy_inst_pid(const hy_instance *in) { return in->pid; }

/* ---- reload: carrying out the plan (reload.c made it) ----------------------- */

static hy_reload_inst *plan_input(const hy_sup *s)
{
    hy_reload_inst *cur = calloc(s->ninst ? s->ninst : 1, sizeof *cur);
    for (size_t i = 0; cur && i < s->ninst; i++) {
        const hy_instance *in = s->inst[i];
        cur[i] = (hy_reload_inst){in->spec, in->index, in->retiring,
                                  in->state == HY_ST_STOPPED && in->ever_started && !in->pending,
                                  in->state == HY_ST_STOPPED && !in->pending && !in->waiting};
    }
    return cur;
}

/* Room and the new instances first, so that nothing changes when memory is short. */
static hy_instance **make_fresh(hy_sup *s, const hy_reload_plan *plan, hy_err *err)
{
    hy_instance **grown = realloc(s->inst, (s->ninst + plan->nfresh + 1) * sizeof *grown);
    hy_topology **ret = grown ? realloc(s->retired, (s->nretired + 1) * sizeof *ret) : NULL;
    if (grown)
        s->inst = grown;
    if (ret)
        s->retired = ret;
    hy_instance **fresh = calloc(plan->nfresh + 1, sizeof *fresh);
    if (!grown || !ret || !fresh) {
        free(fresh);
        hy_err_set(err, "out of memory");
        return NULL;
    }
    for (size_t f = 0; f < plan->nfresh; f++) {
        if (!(fresh[f] = instance_new(s, plan->fresh[f].spec, plan->fresh[f].index, err))) {
            for (size_t g = 0; g < f; g++)
                instance_free(fresh[g]);
            free(fresh);
            return NULL;
        }
        fresh[f]->pending = plan->fresh[f].start;
    }
    return fresh;
}

static void add_names(json_t *list, const char **names, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        json_array_append_new(list, json_string(names[i]));
}

static void retire(hy_instance *in, bool changed)
{
    hy_log(HY_INFO, COMP, changed ? "reload: definition changed, restarting" : "reload: removed, stopping", "worker",
           in->name, "instance", in->idx, "pid", HY_I64(in->pid), NULL);
    in->retiring = true;
    in->pending = false;
    in->waiting = false;
    in->start_after_stop = false;
    hy_worker_stop(in);
}

static void apply_plan(hy_sup *s, const hy_reload_plan *plan, size_t ncur, const hy_topology *t)
{
    for (size_t i = 0; i < ncur; i++) {
        hy_instance *in = s->inst[i];
        in->check.msg = NULL; /* it points into the old schema */
        if (plan->action[i] == HY_RELOAD_KEEP) {
            in->spec = plan->new_spec[i]; /* unchanged: the same process goes on */
            in->sub.fixed = in->spec->subscribe;
        } else if (plan->action[i] == HY_RELOAD_RETIRE) {
            retire(in, hy_topology_find_worker(t, in->name) != NULL);
        }
    }
}

int hy_sup_reload(hy_sup *s, const hy_topology *t, json_t *started, json_t *stopped, json_t *restarted,
                  json_t *unchanged, hy_err *err)
{
    hy_reload_plan plan;
    hy_reload_inst *cur = plan_input(s);
    if (!cur)
        return hy_err_set(err, "out of memory");
    int rc = hy_reload_plan_make(s->topo, t, cur, s->ninst, &plan, err);
    free(cur);
    if (rc < 0)
        return -1;
    hy_instance **fresh = make_fresh(s, &plan, err);
    if (!fresh) {
        hy_reload_plan_free(&plan);
        return -1;
    }
    /* Nothing can fail from here on. */
    add_names(started, plan.started, plan.nstarted);
    add_names(stopped, plan.stopped, plan.nstopped);
    add_names(restarted, plan.restarted, plan.nrestarted);
    add_names(unchanged, plan.unchanged, plan.nunchanged);
    s->retired[s->nretired++] = (hy_topology *)s->topo;
    s->topo = t;
    hy_relay_retopo(&s->relay, t);
    size_t ncur = s->ninst;
    apply_plan(s, &plan, ncur, t);
    for (size_t f = 0; f < plan.nfresh; f++)
        s->inst[s->ninst++] = fresh[f];
    free(fresh);
    hy_reload_plan_free(&plan);
    hy_bus_subs_changed(&s->relay.bus);
    ev_feed_event(s->loop, &s->gc_w, EV_TIMER);
    hy_sup_changed(s);
    return 0;
}
