/* topology_worker.c - the topology's workers and the policy they carry.
 *
 * Owns `defaults` and everything under `workers`: the policy keys (restart,
 * backoff, give_up, stop, start_timeout, heartbeat, queue), parsed by one
 * function whether they appear in `defaults` or in a worker and applied on
 * top of what is already there, so defaults merge key by key; and a worker's
 * command (resolved to an executable), cwd, env, instances and its subscribe
 * and publish type lists. Also the names of signals, restart policies and
 * overflow modes. Called by topology.c; calls nothing there.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hypha/units.h"
#include "topology_int.h"

#define MAX_INSTANCES 1000u

/* ---- names ------------------------------------------------------------ */

static const struct { const char *name; int sig; } signals[] = {
    {"TERM", SIGTERM}, {"INT", SIGINT}, {"HUP", SIGHUP}, {"QUIT", SIGQUIT},
    {"KILL", SIGKILL}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"ABRT", SIGABRT},
    {"ALRM", SIGALRM}, {"WINCH", SIGWINCH}, {"CONT", SIGCONT}, {"STOP", SIGSTOP},
};

const char *hy_signal_name(int sig)
{
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        if (signals[i].sig == sig)
            return signals[i].name;
    return NULL;
}

const char *hy_signal_abbrev(int sig)
{
    const char *n = hy_signal_name(sig);
    return n ? n : sigabbrev_np(sig); /* SEGV, BUS, PIPE...: glibc knows them all */
}

int hy_signal_parse(const char *s)
{
    if (strncasecmp(s, "SIG", 3) == 0)
        s += 3;
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        if (strcasecmp(signals[i].name, s) == 0)
            return signals[i].sig;
    return -1;
}

const char *hy_restart_policy_str(hy_restart_policy p)
{
    switch (p) {
    case HY_RESTART_ALWAYS: return "always";
    case HY_RESTART_ON_FAILURE: return "on-failure";
    case HY_RESTART_NEVER: return "never";
    }
    return "?";
}

const char *hy_overflow_str(hy_overflow o)
{
    switch (o) {
    case HY_OVERFLOW_DROP_OLDEST: return "drop-oldest";
    case HY_OVERFLOW_DROP_NEWEST: return "drop-newest";
    case HY_OVERFLOW_BLOCK: return "block";
    }
    return "?";
}

void hy_policy_builtin(hy_policy *p)
{
    memset(p, 0, sizeof *p);
    p->restart = HY_RESTART_ALWAYS;
    p->backoff_initial_ms = 100;
    p->backoff_factor = 2.0;
    p->backoff_max_ms = 30000;
    p->backoff_jitter = 0.2;
    p->backoff_reset_after_ms = 60000;
    p->give_up_failures = 10;
    p->give_up_within_ms = 60000;
    p->give_up_retry_after_ms = 300000;
    p->stop_signal = SIGTERM;
    p->stop_grace_ms = 5000;
    p->start_timeout_ms = 2000;
    p->heartbeat_timeout_ms = 0;
    p->queue_limit = 1024 * 1024;
    p->queue_overflow = HY_OVERFLOW_DROP_OLDEST;
    p->queue_hold_ms = 5000;
}

/* ---- policy (defaults and per-worker) --------------------------------- */

static int parse_backoff(loader *L, const yaml_node_t *n, const char *ctx, hy_policy *p)
{
    static const char *const keys[] = {"initial", "factor", "max", "jitter", "reset_after", NULL};
    char w[160];
    snprintf(w, sizeof w, "%sbackoff", ctx);
    if (hy_yexpect_map(&L->y, n, w) < 0 || hy_ymap_check(&L->y, n, w, keys) < 0)
        return -1;
    yaml_node_t *v;
    if ((v = hy_ymap_get(&L->y, n, "initial")) &&
        hy_yget_duration(&L->y, v, qual(L, ctx, "backoff.initial"), &p->backoff_initial_ms) < 0)
        return -1;
    if ((v = hy_ymap_get(&L->y, n, "factor")) &&
        hy_yget_double(&L->y, v, qual(L, ctx, "backoff.factor"), 1.0, 100.0, &p->backoff_factor) < 0)
        return -1;
    if ((v = hy_ymap_get(&L->y, n, "max")) &&
        hy_yget_duration(&L->y, v, qual(L, ctx, "backoff.max"), &p->backoff_max_ms) < 0)
        return -1;
    if ((v = hy_ymap_get(&L->y, n, "jitter")) &&
        hy_yget_double(&L->y, v, qual(L, ctx, "backoff.jitter"), 0.0, 1.0, &p->backoff_jitter) < 0)
        return -1;
    if ((v = hy_ymap_get(&L->y, n, "reset_after")) &&
        hy_yget_duration(&L->y, v, qual(L, ctx, "backoff.reset_after"), &p->backoff_reset_after_ms) < 0)
        return -1;
    if (p->backoff_max_ms < p->backoff_initial_ms) {
        char a[32], b[32];
        return hy_yerr(&L->y, n, "%sbackoff.max (%s) is less than backoff.initial (%s)", ctx,
                       hy_format_duration(p->backoff_max_ms, a, sizeof a),
                       hy_format_duration(p->backoff_initial_ms, b, sizeof b));
    }
    return 0;
}

static int parse_give_up(loader *L, const yaml_node_t *n, const char *ctx, hy_policy *p)
{
    static const char *const keys[] = {"failures", "within", "retry_after", NULL};
    char w[160];
    snprintf(w, sizeof w, "%sgive_up", ctx);
    if (hy_yexpect_map(&L->y, n, w) < 0 || hy_ymap_check(&L->y, n, w, keys) < 0)
        return -1;
    yaml_node_t *v;
    uint64_t u;
    if ((v = hy_ymap_get(&L->y, n, "failures"))) {
        if (hy_yget_uint(&L->y, v, qual(L, ctx, "give_up.failures"), 0, 10000, &u) < 0)
            return -1;
        p->give_up_failures = (uint32_t)u;
    }
    if ((v = hy_ymap_get(&L->y, n, "within")) &&
        hy_yget_duration(&L->y, v, qual(L, ctx, "give_up.within"), &p->give_up_within_ms) < 0)
        return -1;
    if ((v = hy_ymap_get(&L->y, n, "retry_after")) &&
        hy_yget_duration(&L->y, v, qual(L, ctx, "give_up.retry_after"), &p->give_up_retry_after_ms) < 0)
        return -1;
    if (p->give_up_failures > 0 && p->give_up_within_ms == 0)
        return hy_yerr(&L->y, n, "%sgive_up.within must be more than 0s while give_up.failures is %u "
                                 "(set failures: 0 to never give up)", ctx, p->give_up_failures);
    return 0;
}

static int parse_stop(loader *L, const yaml_node_t *n, const char *ctx, hy_policy *p)
{
    static const char *const keys[] = {"signal", "grace", NULL};
    char w[160];
    snprintf(w, sizeof w, "%sstop", ctx);
    if (hy_yexpect_map(&L->y, n, w) < 0 || hy_ymap_check(&L->y, n, w, keys) < 0)
        return -1;
    yaml_node_t *v;
    if ((v = hy_ymap_get(&L->y, n, "signal"))) {
        const char *s;
        if (hy_yget_str(&L->y, v, qual(L, ctx, "stop.signal"), &s) < 0)
            return -1;
        int sig = hy_signal_parse(s);
        if (sig == SIGSTOP || sig == SIGCONT)
            return hy_yerr(&L->y, v, "%sstop.signal: %s does not end a process (use TERM, INT, HUP, QUIT, KILL, USR1, USR2, ABRT, ALRM or WINCH)", ctx, s);
        if (sig < 0)
            return hy_yerr(&L->y, v, "%sstop.signal: unknown signal '%s' (use TERM, INT, HUP, QUIT, KILL, USR1, USR2, ABRT, ALRM or WINCH)", ctx, s);
        p->stop_signal = sig;
    }
    if ((v = hy_ymap_get(&L->y, n, "grace")) &&
        hy_yget_duration(&L->y, v, qual(L, ctx, "stop.grace"), &p->stop_grace_ms) < 0)
        return -1;
    return 0;
}

static int parse_queue(loader *L, const yaml_node_t *n, const char *ctx, hy_policy *p)
{
    static const char *const keys[] = {"limit", "overflow", "hold", NULL};
    char w[160];
    snprintf(w, sizeof w, "%squeue", ctx);
    if (hy_yexpect_map(&L->y, n, w) < 0 || hy_ymap_check(&L->y, n, w, keys) < 0)
        return -1;
    yaml_node_t *v;
    if ((v = hy_ymap_get(&L->y, n, "limit"))) {
        if (hy_yget_size(&L->y, v, qual(L, ctx, "queue.limit"), &p->queue_limit) < 0)
            return -1;
        if (p->queue_limit == 0)
            return hy_yerr(&L->y, v, "%squeue.limit must be more than 0", ctx);
    }
    if ((v = hy_ymap_get(&L->y, n, "overflow"))) {
        const char *s;
        if (hy_yget_str(&L->y, v, qual(L, ctx, "queue.overflow"), &s) < 0)
            return -1;
        if (!strcmp(s, "drop-oldest"))
            p->queue_overflow = HY_OVERFLOW_DROP_OLDEST;
        else if (!strcmp(s, "drop-newest"))
            p->queue_overflow = HY_OVERFLOW_DROP_NEWEST;
        else if (!strcmp(s, "block"))
            p->queue_overflow = HY_OVERFLOW_BLOCK;
        else
            return hy_yerr(&L->y, v, "%squeue.overflow must be drop-oldest, drop-newest or block, not '%s'", ctx, s);
    }
    if ((v = hy_ymap_get(&L->y, n, "hold")) &&
        hy_yget_duration(&L->y, v, qual(L, ctx, "queue.hold"), &p->queue_hold_ms) < 0)
        return -1;
    return 0;
}

/* If `key` is a policy key, parse its value into p and return 1; return 0 for
 * other keys, -1 on error. ctx prefixes messages ("workers.risk."). */
static int parse_policy_key(loader *L, const char *key, const yaml_node_t *v, const char *ctx,
                            hy_policy *p)
{
    if (!strcmp(key, "restart")) {
        const char *s;
        if (hy_yget_str(&L->y, v, qual(L, ctx, "restart"), &s) < 0)
            return -1;
        if (!strcmp(s, "always"))
            p->restart = HY_RESTART_ALWAYS;
        else if (!strcmp(s, "on-failure"))
            p->restart = HY_RESTART_ON_FAILURE;
        else if (!strcmp(s, "never"))
            p->restart = HY_RESTART_NEVER;
        else
            return hy_yerr(&L->y, v, "%srestart must be always, on-failure or never, not '%s'", ctx, s);
        return 1;
    }
    if (!strcmp(key, "backoff"))
        return parse_backoff(L, v, ctx, p) < 0 ? -1 : 1;
    if (!strcmp(key, "give_up"))
        return parse_give_up(L, v, ctx, p) < 0 ? -1 : 1;
    if (!strcmp(key, "stop"))
        return parse_stop(L, v, ctx, p) < 0 ? -1 : 1;
    if (!strcmp(key, "queue"))
        return parse_queue(L, v, ctx, p) < 0 ? -1 : 1;
    if (!strcmp(key, "start_timeout"))
        return hy_yget_duration(&L->y, v, qual(L, ctx, "start_timeout"), &p->start_timeout_ms) < 0 ? -1 : 1;
    if (!strcmp(key, "heartbeat")) {
        static const char *const keys[] = {"timeout", NULL};
        char w[160];
        snprintf(w, sizeof w, "%sheartbeat", ctx);
        if (hy_yexpect_map(&L->y, v, w) < 0 || hy_ymap_check(&L->y, v, w, keys) < 0)
            return -1;
        yaml_node_t *t = hy_ymap_get(&L->y, v, "timeout");
        if (t && hy_yget_duration(&L->y, t, qual(L, ctx, "heartbeat.timeout"), &p->heartbeat_timeout_ms) < 0)
            return -1;
        return 1;
    }
    return 0;
}

#define POLICY_KEYS "restart", "backoff", "give_up", "stop", "start_timeout", "heartbeat", "queue"

int hy_topo_parse_defaults(loader *L, const yaml_node_t *n, const yaml_node_t *root)
{
    static const char *const keys[] = {POLICY_KEYS, NULL};
    const yaml_node_t *q = NULL;
    if (n) {
        if (hy_yexpect_map(&L->y, n, "defaults") < 0 || hy_ymap_check(&L->y, n, "defaults", keys) < 0)
            return -1;
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
            yaml_node_t *k = hy_ynode(&L->y, p->key);
            if (parse_policy_key(L, hy_ystr(k), hy_ynode(&L->y, p->value), "defaults.",
                                 &L->t->defaults) < 0)
                return -1;
        }
        q = hy_ymap_get(&L->y, n, "queue");
    }
    uint32_t big = largest_frame(L->t->schema);
    if (L->t->defaults.queue_limit < big) {
        char a[32];
        hy_format_size(L->t->defaults.queue_limit, a, sizeof a);
        if (q)
            return hy_yerr(&L->y, q, "defaults.queue.limit %s is smaller than the largest framed message (%u bytes)", a, big);
        return hy_yerr(&L->y, root, "the default queue.limit %s is smaller than the largest framed "
                                    "message (%u bytes): set defaults.queue.limit", a, big);
    }
    return 0;
}

/* ---- workers ------------------------------------------------------------ */

static bool valid_worker_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '-' || *s == '.'))
            return false;
    return true;
}

/* Find an executable: a name with a slash relative to cwd, else a PATH search.
 * Returns a malloc'd absolute path or NULL (errno-ish reason in *why). */
static char *resolve_exec(const char *cmd, const char *cwd, const char *pathvar, const char **why)
{
    *why = "not found";
    if (strchr(cmd, '/')) {
        char *p = hy_path_join(cwd, cmd);
        if (!p)
            return NULL;
        struct stat st;
        if (stat(p, &st) < 0) {
            *why = strerror(errno);
        } else if (S_ISDIR(st.st_mode)) {
            *why = "is a directory";
        } else if (access(p, X_OK) < 0) {
            *why = "not executable";
        } else {
            return p;
        }
        free(p);
        return NULL;
    }
    if (!pathvar)
        pathvar = "/usr/local/bin:/usr/bin:/bin";
    const char *s = pathvar;
    while (1) {
        const char *e = strchr(s, ':');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        char dir[4096];
        if (len == 0) {
            snprintf(dir, sizeof dir, "%s", cwd);
        } else if (len < sizeof dir) {
            memcpy(dir, s, len);
            dir[len] = '\0';
        } else {
            dir[0] = '\0';
        }
        if (dir[0]) {
            char *cand = hy_path_join(dir[0] == '/' ? NULL : cwd, dir);
            char *full = cand ? hy_path_join(cand, cmd) : NULL;
            free(cand);
            if (!full)
                return NULL;
            struct stat st;
            if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && access(full, X_OK) == 0)
                return full;
            free(full);
        }
        if (!e)
            break;
        s = e + 1;
    }
    *why = "not found in PATH";
    return NULL;
}

static int parse_command(loader *L, const yaml_node_t *n, hy_worker_spec *w, const char *ctx)
{
    char what[160];
    snprintf(what, sizeof what, "%scommand", ctx);
    if (hy_yis_scalar(n) && !hy_yis_null(n))
        return hy_yerr(&L->y, n, "%s must be a list of arguments, e.g. [python3, -m, app] "
                                 "(hypha never runs commands through a shell)", what);
    if (hy_yexpect_seq(&L->y, n, what) < 0)
        return -1;
    size_t argc = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (argc == 0)
        return hy_yerr(&L->y, n, "%s is empty: it needs at least the program to run", what);
    if (!(w->argv = calloc(argc + 1, sizeof *w->argv)))
        return oom(L, n);
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        yaml_node_t *a = hy_ynode(&L->y, *it);
        const char *s;
        if (hy_yget_str(&L->y, a, what, &s) < 0 || hy_topo_expand(L, a, what, s, &w->argv[w->argc]) < 0)
            return -1;
        if (w->argc == 0 && !*w->argv[0])
            return hy_yerr(&L->y, a, "%s: the program name is empty", what);
        w->argc++;
    }
    return 0;
}

static int parse_env(loader *L, const yaml_node_t *n, hy_worker_spec *w, const char *ctx)
{
    char what[160];
    snprintf(what, sizeof what, "%senv", ctx);
    if (hy_yexpect_map(&L->y, n, what) < 0 || hy_ymap_check(&L->y, n, what, NULL) < 0)
        return -1;
    size_t cnt = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (!(w->env = calloc(cnt + 1, sizeof *w->env)))
        return oom(L, n);
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = hy_ynode(&L->y, p->key), *v = hy_ynode(&L->y, p->value);
        const char *ks = hy_ystr(k);
        if (!hy_is_ident(ks))
            return hy_yerr(&L->y, k, "%s: '%s' is not a valid variable name", what, ks);
        if (!strncmp(ks, "HYPHA_", 6))
            return hy_yerr(&L->y, k, "%s: %s is set by hyphad itself", what, ks);
        const char *vs = "";
        char w2[256];
        snprintf(w2, sizeof w2, "%s.%s", what, ks);
        if (!hy_yis_null(v)) { /* `A:` and `A: ~` both mean empty */
            if (hy_yget_str(&L->y, v, w2, &vs) < 0)
                return -1;
        }
        char *xv;
        if (hy_topo_expand(L, v, w2, vs, &xv) < 0)
            return -1;
        size_t len = strlen(ks) + 1 + strlen(xv) + 1;
        char *kv = malloc(len);
        if (!kv) {
            free(xv);
            return oom(L, v);
        }
        snprintf(kv, len, "%s=%s", ks, xv);
        free(xv);
        w->env[w->nenv++] = kv;
    }
    return 0;
}

static int cmp_u16(const void *a, const void *b)
{
    return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

/* A list of message names or type ids into a sorted, unique id array. */
static int parse_types(loader *L, const yaml_node_t *n, const char *what, uint16_t **out,
                       size_t *nout)
{
    if (hy_yexpect_seq(&L->y, n, what) < 0)
        return -1;
    size_t cnt = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (!(*out = calloc(cnt ? cnt : 1, sizeof **out)))
        return oom(L, n);
    *nout = 0;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        yaml_node_t *e = hy_ynode(&L->y, *it);
        const char *s;
        if (hy_yget_str(&L->y, e, what, &s) < 0)
            return -1;
        const hy_message *m;
        if (isdigit((unsigned char)s[0])) {
            uint64_t id;
            if (hy_parse_uint(s, &id) < 0 || id > 65535)
                return hy_yerr(&L->y, e, "%s: '%s' is not a type id (1-65535)", what, s);
            if (id == 0)
                return hy_yerr(&L->y, e, "%s: type id 0 is reserved for control frames", what);
            m = hy_schema_find(L->t->schema, (uint16_t)id);
            if (!m)
                return hy_yerr(&L->y, e, "%s: type id %llu is not defined in %s", what, (unsigned long long)id,
                               L->t->schema_path);
        } else {
            m = hy_schema_find_name(L->t->schema, s);
            if (!m)
                return hy_yerr(&L->y, e, "%s: unknown message '%s' (not in %s)", what, s,
                               L->t->schema_path);
        }
        (*out)[(*nout)++] = m->type_id;
    }
    qsort(*out, *nout, sizeof **out, cmp_u16);
    size_t u = 0;
    for (size_t i = 0; i < *nout; i++)
        if (u == 0 || (*out)[u - 1] != (*out)[i])
            (*out)[u++] = (*out)[i];
    *nout = u;
    return 0;
}

/* cwd: resolved and checked to be a directory; absent, the topology's own. */
static int parse_cwd(loader *L, const yaml_node_t *val, hy_worker_spec *w, const char *ctx)
{
    yaml_node_t *v;
    if ((v = hy_ymap_get(&L->y, val, "cwd"))) {
        char w2[160];
        snprintf(w2, sizeof w2, "%scwd", ctx);
        const char *s;
        char *xs;
        if (hy_yget_str(&L->y, v, w2, &s) < 0 || hy_topo_expand(L, v, w2, s, &xs) < 0)
            return -1;
        if (!*xs) {
            free(xs);
            return hy_yerr(&L->y, v, "%s must not be empty", w2);
        }
        w->cwd = hy_path_join(L->t->dir, xs);
        free(xs);
        if (!w->cwd)
            return oom(L, v);
        struct stat st;
        if (stat(w->cwd, &st) < 0)
            return hy_yerr(&L->y, v, "%s: %s: %s", w2, w->cwd, strerror(errno));
        if (!S_ISDIR(st.st_mode))
            return hy_yerr(&L->y, v, "%s: %s is not a directory", w2, w->cwd);
    } else if (!(w->cwd = strdup(L->t->dir))) {
        return oom(L, val);
    }
    return 0;
}

/* env, or an empty one. */
static int parse_worker_env(loader *L, const yaml_node_t *val, hy_worker_spec *w, const char *ctx)
{
    yaml_node_t *v;
    if ((v = hy_ymap_get(&L->y, val, "env")) && parse_env(L, v, w, ctx) < 0)
        return -1;
    if (!w->env && !(w->env = calloc(1, sizeof *w->env)))
        return oom(L, val);
    return hy_topo_parse_env_files(L, val, w, ctx);
}

/* argv[0] to an executable, searched in the worker's own PATH if its env sets
 * one; a failure is reported at the command's first element. */
static int find_program(loader *L, const yaml_node_t *cmd_node, hy_worker_spec *w, const char *ctx)
{
    const char *pathvar = getenv("PATH");
    for (size_t i = 0; i < w->nenv; i++)
        if (!strncmp(w->env[i], "PATH=", 5))
            pathvar = w->env[i] + 5;
    const char *why;
    if (!(w->exec_path = resolve_exec(w->argv[0], w->cwd, pathvar, &why))) {
        yaml_node_t *a0 = hy_ynode(&L->y, *cmd_node->data.sequence.items.start);
        return hy_yerr(&L->y, a0, "%scommand: cannot run '%s': %s", ctx, w->argv[0], why);
    }
    return 0;
}

/* The type list under `key` (subscribe or publish), if the worker has one:
 * 1 if parsed, 0 if absent, -1 on error. */
static int parse_type_key(loader *L, const yaml_node_t *val, const char *ctx, const char *key,
                          uint16_t **out, size_t *nout)
{
    yaml_node_t *v = hy_ymap_get(&L->y, val, key);
    if (!v)
        return 0;
    char w2[160];
    snprintf(w2, sizeof w2, "%s%s", ctx, key);
    return parse_types(L, v, w2, out, nout) < 0 ? -1 : 1;
}

/* instances, subscribe and publish. */
static int parse_fanout(loader *L, const yaml_node_t *val, hy_worker_spec *w, const char *ctx)
{
    yaml_node_t *v;
    if ((v = hy_ymap_get(&L->y, val, "instances"))) {
        uint64_t u;
        char w2[160];
        snprintf(w2, sizeof w2, "%sinstances", ctx);
        if (hy_yget_uint(&L->y, v, w2, 1, MAX_INSTANCES, &u) < 0)
            return -1;
        w->instances = (uint32_t)u;
    }
    if (parse_type_key(L, val, ctx, "subscribe", &w->subscribe, &w->nsubscribe) < 0)
        return -1;
    int r = parse_type_key(L, val, ctx, "publish", &w->publish, &w->npublish);
    if (r > 0)
        w->publish_all = false;
    return r < 0 ? -1 : 0;
}

/* The worker's policy keys on top of the defaults it started from. */
static int parse_worker_policy(loader *L, const yaml_node_t *val, hy_worker_spec *w, const char *ctx)
{
    for (yaml_node_pair_t *p = val->data.mapping.pairs.start; p < val->data.mapping.pairs.top; p++) {
        yaml_node_t *k = hy_ynode(&L->y, p->key);
        if (parse_policy_key(L, hy_ystr(k), hy_ynode(&L->y, p->value), ctx, &w->policy) < 0)
            return -1;
    }
    /* The inherited limit was checked at `defaults`; check an override here. */
    yaml_node_t *q = hy_ymap_get(&L->y, val, "queue");
    uint32_t big = largest_frame(L->t->schema);
    if (q && w->policy.queue_limit < big) {
        char a[32];
        return hy_yerr(&L->y, q, "%squeue.limit %s is smaller than the largest framed message (%u bytes)",
                       ctx, hy_format_size(w->policy.queue_limit, a, sizeof a), big);
    }
    return 0;
}

/* A Python module name: dotted identifiers. */
static bool module_name(const char *s)
{
    bool start = true;
    for (; *s; s++) {
        if (*s == '.' && !start)
            start = true;
        else if (isalpha((unsigned char)*s) || *s == '_' || (!start && isdigit((unsigned char)*s)))
            start = false;
        else
            return false;
    }
    return !start;
}

/* preload: [modules]: the command must be one a fork server can run as the
 * interpreter would, `[python3, SCRIPT, ...]` or `[python3, -m, MODULE, ...]`. */
static int parse_preload(loader *L, const yaml_node_t *val, const yaml_node_t *cmd, hy_worker_spec *w,
                         const char *ctx)
{
    yaml_node_t *n = hy_ymap_get(&L->y, val, "preload");
    char what[160];
    if (!n)
        return 0;
    snprintf(what, sizeof what, "%spreload", ctx);
    if (hy_yexpect_seq(&L->y, n, what) < 0)
        return -1;
    const char *prog = strrchr(w->argv[0], '/') ? strrchr(w->argv[0], '/') + 1 : w->argv[0];
    bool python = strncmp(prog, "python", 6) == 0;
    bool script = w->argc >= 2 && w->argv[1][0] != '-';
    bool module = w->argc >= 3 && strcmp(w->argv[1], "-m") == 0;
    if (!python || !(script || module))
        return hy_yerr(&L->y, cmd, "%s needs a Python command, [python3, SCRIPT, ...] or [python3, -m, MODULE, ...]: "
                                   "its instances are forked from a Python fork server that runs it as the "
                                   "interpreter would (or remove preload)", what);
    size_t cnt = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (!(w->preload = calloc(cnt + 1, sizeof *w->preload)))
        return oom(L, n);
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        yaml_node_t *e = hy_ynode(&L->y, *it);
        const char *s;
        if (hy_yget_str(&L->y, e, what, &s) < 0)
            return -1;
        if (!module_name(s))
            return hy_yerr(&L->y, e, "%s: '%s' is not a Python module name (dotted identifiers, e.g. numpy or "
                                     "risk.model)", what, s);
        if (!(w->preload[w->npreload++] = strdup(s)))
            return oom(L, e);
    }
    return 0;
}

static int parse_worker(loader *L, yaml_node_t *key, yaml_node_t *val, hy_worker_spec *w)
{
    static const char *const keys[] = {"command", "cwd", "env", "instances", "subscribe",
                                       "publish", POLICY_KEYS, "user", "group", "umask", "rlimits",
                                       "env_file", "autostart", "after", "preload", NULL};
    const char *name = hy_ystr(key);
    char ctx[128], what[160];
    snprintf(ctx, sizeof ctx, "workers.%s.", name);
    snprintf(what, sizeof what, "workers.%s", name);
    w->line = hy_yline(key);
    w->col = hy_ycol(key);
    if (!valid_worker_name(name))
        return hy_yerr(&L->y, key, "worker name '%s' must be 1-64 letters, digits, '_', '-' or '.'", name);
    if (strcmp(name, "all") == 0)
        return hy_yerr(&L->y, key, "worker name 'all' is reserved: hyphactl's NAME `all` means every worker; "
                                   "rename it");
    if (!(w->name = strdup(name)))
        return oom(L, key);
    w->policy = L->t->defaults;
    w->instances = 1;
    w->publish_all = true;
    if (hy_yexpect_map(&L->y, val, what) < 0 || hy_ymap_check(&L->y, val, what, keys) < 0)
        return -1;

    yaml_node_t *cmd = hy_ymap_get(&L->y, val, "command");
    if (!cmd)
        return hy_yerr(&L->y, key, "%s: missing 'command' (the argv to run, e.g. [python3, -m, app])", what);
    /* in this order: the program is looked up in cwd and env's PATH */
    if (parse_command(L, cmd, w, ctx) < 0 || parse_cwd(L, val, w, ctx) < 0 ||
        parse_worker_env(L, val, w, ctx) < 0 || find_program(L, cmd, w, ctx) < 0 ||
        parse_fanout(L, val, w, ctx) < 0 || parse_worker_policy(L, val, w, ctx) < 0 ||
        hy_topo_parse_proc(L, val, w, ctx) < 0)
        return -1;
    if (hy_topo_parse_start(L, val, w, ctx) < 0 || parse_preload(L, val, cmd, w, ctx) < 0)
        return -1;
    return 0;
}

int hy_topo_parse_workers(loader *L, const yaml_node_t *n)
{
    hy_topology *t = L->t;
    if (hy_yexpect_map(&L->y, n, "workers") < 0)
        return -1;
    /* Duplicate names are reported by the key check, with the first line. */
    if (hy_ymap_check(&L->y, n, "workers", NULL) < 0)
        return -1;
    size_t cnt = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (!(t->workers = calloc(cnt ? cnt : 1, sizeof *t->workers)))
        return oom(L, n);
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        hy_worker_spec *w = &t->workers[t->nworkers++];
        if (parse_worker(L, hy_ynode(&L->y, p->key), hy_ynode(&L->y, p->value), w) < 0)
            return -1;
    }
    return hy_topo_check_after(L, n);
}
