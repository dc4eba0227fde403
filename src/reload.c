/* reload.c - what a reload may change, and the plan for applying it (see
 * hypha/reload.h). Pure: compares two loaded topologies, touches nothing; the
 * plan only allocates its own arrays. */
#include "hypha/reload.h"

#include <stdlib.h>
#include <string.h>

static bool str_eq(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static bool strv_eq(char *const *a, size_t na, char *const *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (!str_eq(a[i], b[i]))
            return false;
    return true;
}

static bool ids_eq(const uint16_t *a, size_t na, const uint16_t *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

static bool policy_eq(const hy_policy *a, const hy_policy *b)
{
    return a->restart == b->restart && a->backoff_initial_ms == b->backoff_initial_ms &&
           a->backoff_factor == b->backoff_factor && a->backoff_max_ms == b->backoff_max_ms &&
           a->backoff_jitter == b->backoff_jitter && a->backoff_reset_after_ms == b->backoff_reset_after_ms &&
           a->give_up_failures == b->give_up_failures && a->give_up_within_ms == b->give_up_within_ms &&
           a->give_up_retry_after_ms == b->give_up_retry_after_ms && a->stop_signal == b->stop_signal &&
           a->stop_grace_ms == b->stop_grace_ms && a->start_timeout_ms == b->start_timeout_ms &&
           a->heartbeat_timeout_ms == b->heartbeat_timeout_ms && a->queue_limit == b->queue_limit &&
           a->queue_overflow == b->queue_overflow && a->queue_hold_ms == b->queue_hold_ms;
}

/* user, group, umask, rlimits: what the next process would be started with */
static bool proc_eq(const hy_worker_proc *a, const hy_worker_proc *b)
{
    if (a->set_ids != b->set_ids || a->set_umask != b->set_umask || (a->set_umask && a->umask != b->umask))
        return false;
    if (a->set_ids && (a->uid != b->uid || a->gid != b->gid || a->ngroups != b->ngroups ||
                       memcmp(a->groups, b->groups, a->ngroups * sizeof *a->groups) != 0 ||
                       !str_eq(a->home, b->home)))
        return false;
    for (int i = 0; i < HY_RLIMITS; i++)
        if (a->rlimits[i].set != b->rlimits[i].set ||
            (a->rlimits[i].set && (a->rlimits[i].soft != b->rlimits[i].soft || a->rlimits[i].hard != b->rlimits[i].hard)))
            return false;
    return true;
}

bool hy_worker_spec_equal(const hy_worker_spec *a, const hy_worker_spec *b)
{
    return str_eq(a->name, b->name) && strv_eq(a->argv, a->argc, b->argv, b->argc) && proc_eq(&a->proc, &b->proc) &&
           str_eq(a->exec_path, b->exec_path) && str_eq(a->cwd, b->cwd) &&
           strv_eq(a->env, a->nenv, b->env, b->nenv) && a->instances == b->instances &&
           ids_eq(a->subscribe, a->nsubscribe, b->subscribe, b->nsubscribe) && a->publish_all == b->publish_all &&
           ids_eq(a->publish, a->npublish, b->publish, b->npublish) && policy_eq(&a->policy, &b->policy) &&
           a->autostart == b->autostart && strv_eq(a->preload, a->npreload, b->preload, b->npreload);
    /* `after` is left out: it orders starts, and applies to those from the
     * reload on without restarting anything. env_files too: what they gave
     * is in env. */
}

static bool endpoint_eq(const hy_endpoint *a, const hy_endpoint *b)
{
    if (a->kind != b->kind)
        return false;
    if (a->kind == HY_EP_UNIX)
        return str_eq(a->path, b->path);
    return a->port == b->port && str_eq(a->host, b->host);
}

#define REFUSE(what) \
    hy_err_set(err, "%s: %s changed; hyphad must be restarted to apply that (nothing was changed)", next->path, what)

int hy_reload_check(const hy_topology *cur, const hy_topology *next, hy_err *err)
{
    /* Named in full: the user who edited the contracts learns which file
     * and which digests (the ones hyphad's log and status show). */
    if (memcmp(cur->schema->digest, next->schema->digest, HY_DIGEST_LEN) != 0)
        return hy_err_set(err,
                          "%s: schema changed (the contracts file %s is now %.12s, hyphad runs %.12s); hyphad must be "
                          "restarted to apply that (nothing was changed)",
                          next->path, next->schema_path, next->schema->digest_hex, cur->schema->digest_hex);
    if (cur->has_upstream != next->has_upstream ||
        (cur->has_upstream && !endpoint_eq(&cur->upstream, &next->upstream)))
        return REFUSE("upstream");
    if (cur->has_upstream && cur->upstream_handshake != next->upstream_handshake)
        return REFUSE("upstream.handshake");
    /* TLS on or off is refused; its files (and which files) may change: a
     * reload reads them again, for the connections made from then on. */
    if (cur->has_upstream && !cur->upstream_tls != !next->upstream_tls)
        return REFUSE("upstream.tls (on or off)");
    if (cur->has_upstream &&
        (cur->upstream_echo != next->upstream_echo || cur->upstream_buffer != next->upstream_buffer ||
         cur->reconnect_initial_ms != next->reconnect_initial_ms || cur->reconnect_max_ms != next->reconnect_max_ms))
        return REFUSE("upstream (echo, buffer or reconnect)");
    if (cur->nlisten != next->nlisten)
        return REFUSE("listen");
    /* A listen entry's max_clients may change: it applies to the clients
     * that connect from then on. */
    for (size_t i = 0; i < cur->nlisten; i++) {
        if (!endpoint_eq(&cur->listen[i].ep, &next->listen[i].ep))
            return REFUSE("listen");
        if (cur->listen[i].handshake != next->listen[i].handshake)
            return REFUSE("listen handshake");
        if (!cur->listen[i].tls != !next->listen[i].tls)
            return REFUSE("listen tls (on or off)");
    }
    if (!str_eq(cur->control_socket, next->control_socket) || cur->control_mode != next->control_mode)
        return REFUSE("control");
    if (cur->has_metrics != next->has_metrics || (cur->has_metrics && !endpoint_eq(&cur->metrics, &next->metrics)))
        return REFUSE("metrics");
    /* The running instances' cgroups were made under the old one. */
    if (cur->cgroup != next->cgroup || !str_eq(cur->cgroup_path, next->cgroup_path))
        return REFUSE("cgroup");
    /* Listen clients' queues are bounded by defaults.queue.limit: a change
     * of the defaults reaches workers (through their merged policies) and
     * the clients connected from now on. */
    return 0;
}

/* ---- the reload plan ------------------------------------------------- */

static bool spec_in(const hy_worker_spec *w, const hy_topology *t)
{
    return t->nworkers && w >= t->workers && w < t->workers + t->nworkers;
}

/* The worker is new, or its definition changed: it gets fresh instances. */
static bool needs_fresh(const hy_topology *old, const hy_worker_spec *nw)
{
    const hy_worker_spec *ow = hy_topology_find_worker(old, nw->name);
    return !ow || !hy_worker_spec_equal(ow, nw);
}

/* The current non-retiring instance `name`/`index` of `old` (the first such
 * instance decides, as operator_stopped() did), or NULL. */
static const hy_reload_inst *predecessor(const hy_topology *old, const hy_reload_inst *cur, size_t ncur,
                                         const char *name, unsigned index)
{
    for (size_t i = 0; i < ncur; i++) {
        const hy_reload_inst *o = &cur[i];
        if (!o->retiring && spec_in(o->spec, old) && o->index == index && strcmp(o->spec->name, name) == 0)
            return o;
    }
    return NULL;
}

/* A fresh instance starts unless its predecessor was stopped by an operator;
 * an autostart: false one only if its predecessor was running (or about to). */
static bool fresh_starts(const hy_topology *old, const hy_reload_inst *cur, size_t ncur, const hy_worker_spec *nw,
                         unsigned index)
{
    const hy_reload_inst *o = predecessor(old, cur, ncur, nw->name, index);
    if (!nw->autostart)
        return o && !o->idle;
    return !(o && o->operator_stopped);
}

/* plan->field = n zeroed elements; true when that failed (0 elements need
 * no memory: the field stays NULL). */
#define ALLOC_FAILS(field, n) ((n) && !(plan->field = calloc((n), sizeof *plan->field)))

static int plan_alloc(hy_reload_plan *plan, const hy_topology *old, const hy_topology *next, size_t ncur)
{
    for (size_t i = 0; i < next->nworkers; i++)
        if (needs_fresh(old, &next->workers[i]))
            plan->nfresh += next->workers[i].instances;
    size_t on = old->nworkers, nn = next->nworkers;
    if (ALLOC_FAILS(action, ncur) || ALLOC_FAILS(new_spec, ncur) || ALLOC_FAILS(fresh, plan->nfresh) ||
        ALLOC_FAILS(started, nn) || ALLOC_FAILS(stopped, on) || ALLOC_FAILS(restarted, on) ||
        ALLOC_FAILS(unchanged, on))
        return -1;
    return 0;
}

static void plan_fresh(hy_reload_plan *plan, const hy_topology *old, const hy_topology *next,
                       const hy_reload_inst *cur, size_t ncur)
{
    size_t k = 0;
    for (size_t i = 0; i < next->nworkers; i++) {
        const hy_worker_spec *nw = &next->workers[i];
        if (!needs_fresh(old, nw))
            continue;
        for (unsigned j = 0; j < nw->instances; j++)
            plan->fresh[k++] = (hy_reload_fresh){nw, j, fresh_starts(old, cur, ncur, nw, j)};
    }
}

static void plan_names(hy_reload_plan *plan, const hy_topology *old, const hy_topology *next)
{
    for (size_t i = 0; i < old->nworkers; i++) {
        const hy_worker_spec *ow = &old->workers[i];
        const hy_worker_spec *nw = hy_topology_find_worker(next, ow->name);
        if (!nw)
            plan->stopped[plan->nstopped++] = ow->name;
        else if (hy_worker_spec_equal(ow, nw))
            plan->unchanged[plan->nunchanged++] = nw->name;
        else
            plan->restarted[plan->nrestarted++] = nw->name;
    }
    for (size_t i = 0; i < next->nworkers; i++)
        if (!hy_topology_find_worker(old, next->workers[i].name))
            plan->started[plan->nstarted++] = next->workers[i].name;
}

static void plan_instances(hy_reload_plan *plan, const hy_topology *old, const hy_topology *next,
                           const hy_reload_inst *cur, size_t ncur)
{
    for (size_t i = 0; i < ncur; i++) {
        const hy_reload_inst *in = &cur[i];
        plan->new_spec[i] = NULL;
        if (in->retiring || !spec_in(in->spec, old)) {
            plan->action[i] = HY_RELOAD_LEAVE;
            continue;
        }
        const hy_worker_spec *nw = hy_topology_find_worker(next, in->spec->name);
        if (nw && hy_worker_spec_equal(in->spec, nw)) {
            plan->action[i] = HY_RELOAD_KEEP;
            plan->new_spec[i] = nw;
        } else {
            plan->action[i] = HY_RELOAD_RETIRE;
        }
    }
}

int hy_reload_plan_make(const hy_topology *old, const hy_topology *next, const hy_reload_inst *cur, size_t ncur,
                        hy_reload_plan *plan, hy_err *err)
{
    memset(plan, 0, sizeof *plan);
    if (plan_alloc(plan, old, next, ncur) < 0) {
        hy_reload_plan_free(plan);
        return hy_err_set(err, "out of memory");
    }
    plan_fresh(plan, old, next, cur, ncur);
    plan_names(plan, old, next);
    plan_instances(plan, old, next, cur, ncur);
    return 0;
}

void hy_reload_plan_free(hy_reload_plan *plan)
{
    free(plan->action);
    free(plan->new_spec);
    free(plan->fresh);
    free(plan->started);
    free(plan->stopped);
    free(plan->restarted);
    free(plan->unchanged);
    memset(plan, 0, sizeof *plan);
}
