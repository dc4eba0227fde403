/* reload.c - what a reload may change (see hypha/reload.h). Pure: compares
 * two loaded topologies, touches nothing. */
#include "hypha/reload.h"

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
           a->queue_overflow == b->queue_overflow;
}

bool hy_worker_spec_equal(const hy_worker_spec *a, const hy_worker_spec *b)
{
    return str_eq(a->name, b->name) && strv_eq(a->argv, a->argc, b->argv, b->argc) &&
           str_eq(a->exec_path, b->exec_path) && str_eq(a->cwd, b->cwd) &&
           strv_eq(a->env, a->nenv, b->env, b->nenv) && a->instances == b->instances &&
           ids_eq(a->subscribe, a->nsubscribe, b->subscribe, b->nsubscribe) && a->publish_all == b->publish_all &&
           ids_eq(a->publish, a->npublish, b->publish, b->npublish) && policy_eq(&a->policy, &b->policy);
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
    if (memcmp(cur->schema->digest, next->schema->digest, HY_DIGEST_LEN) != 0)
        return REFUSE("schema (the contracts file's digest)");
    if (cur->has_upstream != next->has_upstream ||
        (cur->has_upstream && !endpoint_eq(&cur->upstream, &next->upstream)))
        return REFUSE("upstream");
    if (cur->has_upstream &&
        (cur->upstream_echo != next->upstream_echo || cur->upstream_buffer != next->upstream_buffer ||
         cur->reconnect_initial_ms != next->reconnect_initial_ms || cur->reconnect_max_ms != next->reconnect_max_ms))
        return REFUSE("upstream (echo, buffer or reconnect)");
    if (cur->nlisten != next->nlisten)
        return REFUSE("listen");
    for (size_t i = 0; i < cur->nlisten; i++)
        if (!endpoint_eq(&cur->listen[i], &next->listen[i]))
            return REFUSE("listen");
    if (!str_eq(cur->control_socket, next->control_socket) || cur->control_mode != next->control_mode)
        return REFUSE("control");
    if (cur->has_metrics != next->has_metrics || (cur->has_metrics && !endpoint_eq(&cur->metrics, &next->metrics)))
        return REFUSE("metrics");
    /* Listen clients' queues are bounded by defaults.queue.limit: a change
     * of the defaults reaches workers (through their merged policies) and
     * the clients connected from now on. */
    return 0;
}
