/* topology.c - topology file loader (see hypha/topology.h).
 *
 * One pass over the YAML document: every mapping's keys are checked against
 * the keys it may hold, every value is parsed into its resolved form, and the
 * first problem stops the load with `file:line:col: message`. Policy keys
 * (restart, backoff, ...) are parsed by one function whether they appear in
 * `defaults` or in a worker, applied on top of what is already there, so
 * defaults merge key by key.
 */
#define _GNU_SOURCE
#include "hypha/topology.h"
#include "hypha/ctlpath.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fsutil.h"
#include "hypha/tlv.h"
#include "hypha/units.h"
#include "yamlx.h"

#define MAX_INSTANCES 1000u

typedef struct loader {
    hy_ydoc y;
    hy_topology *t;
    char what[192]; /* scratch for qual() */
} loader;

/* "workers.risk." + "backoff.max": the setting's full name for messages.
 * Returns L->what, so use one per expression. */
static const char *qual(loader *L, const char *ctx, const char *key)
{
    snprintf(L->what, sizeof L->what, "%s%s", ctx, key);
    return L->what;
}

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

char *hy_endpoint_str(const hy_endpoint *ep, char *out, size_t outlen)
{
    if (ep->kind == HY_EP_UNIX)
        snprintf(out, outlen, "unix:%s", ep->path);
    else if (strchr(ep->host, ':'))
        snprintf(out, outlen, "tcp:[%s]:%u", ep->host, ep->port);
    else
        snprintf(out, outlen, "tcp:%s:%u", ep->host, ep->port);
    return out;
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
}

/* ---- freeing ---------------------------------------------------------- */

static void free_strv(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

static void free_endpoint(hy_endpoint *ep)
{
    free(ep->path);
    free(ep->host);
}

void hy_topology_free(hy_topology *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nworkers; i++) {
        hy_worker_spec *w = &t->workers[i];
        free(w->name);
        free_strv(w->argv);
        free(w->exec_path);
        free(w->cwd);
        free_strv(w->env);
        free(w->subscribe);
        free(w->publish);
    }
    free(t->workers);
    for (size_t i = 0; i < t->nlisten; i++)
        free_endpoint(&t->listen[i]);
    free_endpoint(&t->metrics);
    free(t->listen);
    free_endpoint(&t->upstream);
    free(t->control_socket);
    hy_schema_free(t->schema);
    free(t->schema_path);
    free(t->dir);
    free(t->path);
    free(t);
}

const hy_worker_spec *hy_topology_find_worker(const hy_topology *t, const char *name)
{
    for (size_t i = 0; i < t->nworkers; i++)
        if (strcmp(t->workers[i].name, name) == 0)
            return &t->workers[i];
    return NULL;
}

/* ---- small parsers ------------------------------------------------------ */

static int oom(loader *L, const yaml_node_t *n)
{
    return hy_yerr(&L->y, n, "out of memory");
}

/* A path scalar resolved against the topology's directory (malloc'd). */
static int get_path(loader *L, const yaml_node_t *n, const char *what, char **out)
{
    const char *s;
    if (hy_yget_str(&L->y, n, what, &s) < 0)
        return -1;
    if (!*s)
        return hy_yerr(&L->y, n, "%s must not be empty", what);
    if (!(*out = hy_path_join(L->t->dir, s)))
        return oom(L, n);
    return 0;
}

static int check_sock_path(loader *L, const yaml_node_t *n, const char *what, const char *path)
{
    struct sockaddr_un sa;
    if (strlen(path) >= sizeof sa.sun_path)
        return hy_yerr(&L->y, n, "%s: socket path '%s' is longer than %zu bytes", what, path,
                       sizeof sa.sun_path - 1);
    return 0;
}

/* "host:port" or "[v6]:port". */
static int parse_hostport(loader *L, const yaml_node_t *n, const char *what, hy_endpoint *ep)
{
    const char *s;
    if (hy_yget_str(&L->y, n, what, &s) < 0)
        return -1;
    const char *colon;
    size_t hostlen;
    const char *host = s;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return hy_yerr(&L->y, n, "%s: expected [address]:port, not '%s'", what, s);
        host = s + 1;
        hostlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || strchr(s, ':') != colon)
            return hy_yerr(&L->y, n, "%s: expected host:port, not '%s'", what, s);
        hostlen = (size_t)(colon - s);
    }
    if (hostlen == 0)
        return hy_yerr(&L->y, n, "%s: missing host in '%s'", what, s);
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || port == 0 || port > 65535 || colon[1] == '-' ||
        colon[1] == '+')
        return hy_yerr(&L->y, n, "%s: port must be from 1 to 65535 in '%s'", what, s);
    if (!(ep->host = strndup(host, hostlen)))
        return oom(L, n);
    ep->kind = HY_EP_TCP;
    ep->port = (uint16_t)port;
    return 0;
}

/* {unix: PATH} or {tcp: HOST:PORT}; extra allowed keys are checked by the
 * caller's key list. */
static int parse_endpoint(loader *L, const yaml_node_t *map, const char *what,
                          const char *const *keys, hy_endpoint *ep)
{
    if (hy_yexpect_map(&L->y, map, what) < 0 || hy_ymap_check(&L->y, map, what, keys) < 0)
        return -1;
    yaml_node_t *u = hy_ymap_get(&L->y, map, "unix");
    yaml_node_t *tc = hy_ymap_get(&L->y, map, "tcp");
    if (u && tc)
        return hy_yerr(&L->y, map, "%s: give either 'unix' or 'tcp', not both", what);
    if (!u && !tc)
        return hy_yerr(&L->y, map, "%s: needs 'unix: PATH' or 'tcp: HOST:PORT'", what);
    char w[128];
    if (u) {
        snprintf(w, sizeof w, "%s.unix", what);
        ep->kind = HY_EP_UNIX;
        if (get_path(L, u, w, &ep->path) < 0)
            return -1;
        return check_sock_path(L, u, w, ep->path);
    }
    snprintf(w, sizeof w, "%s.tcp", what);
    return parse_hostport(L, tc, w, ep);
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
    static const char *const keys[] = {"limit", "overflow", NULL};
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

static uint32_t largest_frame(const hy_schema *s);

/* n may be NULL (no `defaults:`): the built-ins are checked all the same. */
static int parse_defaults(loader *L, const yaml_node_t *n, const yaml_node_t *root)
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

static bool valid_env_name(const char *s)
{
    if (!(isalpha((unsigned char)*s) || *s == '_'))
        return false;
    for (s++; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_'))
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
        if (hy_yget_str(&L->y, a, what, &s) < 0)
            return -1;
        if (w->argc == 0 && !*s)
            return hy_yerr(&L->y, a, "%s: the program name is empty", what);
        if (!(w->argv[w->argc++] = strdup(s)))
            return oom(L, a);
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
        if (!valid_env_name(ks))
            return hy_yerr(&L->y, k, "%s: '%s' is not a valid variable name", what, ks);
        if (!strncmp(ks, "HYPHA_", 6))
            return hy_yerr(&L->y, k, "%s: %s is set by hyphad itself", what, ks);
        const char *vs = "";
        if (!hy_yis_null(v)) { /* `A:` and `A: ~` both mean empty */
            char w2[256];
            snprintf(w2, sizeof w2, "%s.%s", what, ks);
            if (hy_yget_str(&L->y, v, w2, &vs) < 0)
                return -1;
        }
        size_t len = strlen(ks) + 1 + strlen(vs) + 1;
        char *kv = malloc(len);
        if (!kv)
            return oom(L, v);
        snprintf(kv, len, "%s=%s", ks, vs);
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

static uint32_t largest_frame(const hy_schema *s)
{
    uint32_t max = 0;
    for (size_t i = 0; i < s->nmsgs; i++)
        if (s->msgs[i].size > max)
            max = s->msgs[i].size;
    return max + HY_TLV_HEADER;
}

static int parse_worker(loader *L, yaml_node_t *key, yaml_node_t *val, hy_worker_spec *w)
{
    static const char *const keys[] = {"command", "cwd", "env", "instances", "subscribe",
                                       "publish", POLICY_KEYS, NULL};
    const char *name = hy_ystr(key);
    char ctx[128], what[160];
    snprintf(ctx, sizeof ctx, "workers.%s.", name);
    snprintf(what, sizeof what, "workers.%s", name);
    w->line = hy_yline(key);
    w->col = hy_ycol(key);
    if (!valid_worker_name(name))
        return hy_yerr(&L->y, key, "worker name '%s' must be 1-64 letters, digits, '_', '-' or '.'", name);
    if (!(w->name = strdup(name)))
        return oom(L, key);
    w->policy = L->t->defaults;
    w->instances = 1;
    w->publish_all = true;
    if (hy_yexpect_map(&L->y, val, what) < 0 || hy_ymap_check(&L->y, val, what, keys) < 0)
        return -1;

    yaml_node_t *v;
    if (!(v = hy_ymap_get(&L->y, val, "command")))
        return hy_yerr(&L->y, key, "%s: missing 'command' (the argv to run, e.g. [python3, -m, app])", what);
    if (parse_command(L, v, w, ctx) < 0)
        return -1;
    yaml_node_t *cmd_node = v;

    if ((v = hy_ymap_get(&L->y, val, "cwd"))) {
        char w2[160];
        snprintf(w2, sizeof w2, "%scwd", ctx);
        if (get_path(L, v, w2, &w->cwd) < 0)
            return -1;
        struct stat st;
        if (stat(w->cwd, &st) < 0)
            return hy_yerr(&L->y, v, "%s: %s: %s", w2, w->cwd, strerror(errno));
        if (!S_ISDIR(st.st_mode))
            return hy_yerr(&L->y, v, "%s: %s is not a directory", w2, w->cwd);
    } else if (!(w->cwd = strdup(L->t->dir))) {
        return oom(L, val);
    }

    if ((v = hy_ymap_get(&L->y, val, "env")) && parse_env(L, v, w, ctx) < 0)
        return -1;
    if (!w->env && !(w->env = calloc(1, sizeof *w->env)))
        return oom(L, val);

    const char *pathvar = getenv("PATH");
    for (size_t i = 0; i < w->nenv; i++)
        if (!strncmp(w->env[i], "PATH=", 5))
            pathvar = w->env[i] + 5;
    const char *why;
    if (!(w->exec_path = resolve_exec(w->argv[0], w->cwd, pathvar, &why))) {
        yaml_node_t *a0 = hy_ynode(&L->y, *cmd_node->data.sequence.items.start);
        return hy_yerr(&L->y, a0, "%scommand: cannot run '%s': %s", ctx, w->argv[0], why);
    }

    if ((v = hy_ymap_get(&L->y, val, "instances"))) {
        uint64_t u;
        char w2[160];
        snprintf(w2, sizeof w2, "%sinstances", ctx);
        if (hy_yget_uint(&L->y, v, w2, 1, MAX_INSTANCES, &u) < 0)
            return -1;
        w->instances = (uint32_t)u;
    }
    if ((v = hy_ymap_get(&L->y, val, "subscribe"))) {
        char w2[160];
        snprintf(w2, sizeof w2, "%ssubscribe", ctx);
        if (parse_types(L, v, w2, &w->subscribe, &w->nsubscribe) < 0)
            return -1;
    }
    if ((v = hy_ymap_get(&L->y, val, "publish"))) {
        char w2[160];
        snprintf(w2, sizeof w2, "%spublish", ctx);
        if (parse_types(L, v, w2, &w->publish, &w->npublish) < 0)
            return -1;
        w->publish_all = false;
    }
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

/* ---- top level -------------------------------------------------------- */

static int parse_upstream(loader *L, const yaml_node_t *n)
{
    static const char *const keys[] = {"unix", "tcp", "echo", "buffer", "reconnect", NULL};
    hy_topology *t = L->t;
    if (parse_endpoint(L, n, "upstream", keys, &t->upstream) < 0)
        return -1;
    t->has_upstream = true;
    yaml_node_t *v;
    if ((v = hy_ymap_get(&L->y, n, "echo")) && hy_yget_bool(&L->y, v, "upstream.echo", &t->upstream_echo) < 0)
        return -1;
    if ((v = hy_ymap_get(&L->y, n, "buffer"))) {
        if (hy_yget_size(&L->y, v, "upstream.buffer", &t->upstream_buffer) < 0)
            return -1;
        uint32_t big = largest_frame(t->schema);
        if (t->upstream_buffer < big) {
            char a[32];
            return hy_yerr(&L->y, v, "upstream.buffer %s is smaller than the largest framed message (%u bytes)",
                           hy_format_size(t->upstream_buffer, a, sizeof a), big);
        }
    }
    if ((v = hy_ymap_get(&L->y, n, "reconnect"))) {
        static const char *const rk[] = {"initial", "max", NULL};
        if (hy_yexpect_map(&L->y, v, "upstream.reconnect") < 0 ||
            hy_ymap_check(&L->y, v, "upstream.reconnect", rk) < 0)
            return -1;
        yaml_node_t *x;
        if ((x = hy_ymap_get(&L->y, v, "initial")) &&
            hy_yget_duration(&L->y, x, "upstream.reconnect.initial", &t->reconnect_initial_ms) < 0)
            return -1;
        if ((x = hy_ymap_get(&L->y, v, "max")) &&
            hy_yget_duration(&L->y, x, "upstream.reconnect.max", &t->reconnect_max_ms) < 0)
            return -1;
        if (t->reconnect_initial_ms == 0)
            return hy_yerr(&L->y, v, "upstream.reconnect.initial must be more than 0s");
        if (t->reconnect_max_ms < t->reconnect_initial_ms)
            return hy_yerr(&L->y, v, "upstream.reconnect.max is less than upstream.reconnect.initial");
    }
    return 0;
}

static bool same_endpoint(const hy_endpoint *a, const hy_endpoint *b)
{
    if (a->kind != b->kind)
        return false;
    if (a->kind == HY_EP_UNIX)
        return strcmp(a->path, b->path) == 0;
    return a->port == b->port && strcmp(a->host, b->host) == 0;
}

static int parse_listen(loader *L, const yaml_node_t *n)
{
    static const char *const keys[] = {"unix", "tcp", NULL};
    hy_topology *t = L->t;
    if (hy_yexpect_seq(&L->y, n, "listen") < 0)
        return -1;
    size_t cnt = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (!(t->listen = calloc(cnt ? cnt : 1, sizeof *t->listen)))
        return oom(L, n);
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        yaml_node_t *e = hy_ynode(&L->y, *it);
        hy_endpoint *ep = &t->listen[t->nlisten++];
        if (parse_endpoint(L, e, "listen", keys, ep) < 0)
            return -1;
        for (size_t i = 0; i + 1 < t->nlisten; i++)
            if (same_endpoint(&t->listen[i], ep))
                return hy_yerr(&L->y, e, "listen: endpoint listed twice");
        if (t->has_upstream && same_endpoint(&t->upstream, ep))
            return hy_yerr(&L->y, e, "listen: endpoint is the upstream itself");
    }
    return 0;
}

static char *default_control_socket(void)
{
    char buf[256];
    hy_default_control_socket(buf, sizeof buf);
    return strdup(buf);
}

/* metrics: {listen: HOST:PORT}: an HTTP endpoint serving /metrics. */
static int parse_metrics(loader *L, const yaml_node_t *n)
{
    static const char *const keys[] = {"listen", NULL};
    hy_topology *t = L->t;
    if (hy_yexpect_map(&L->y, n, "metrics") < 0 || hy_ymap_check(&L->y, n, "metrics", keys) < 0)
        return -1;
    yaml_node_t *v = hy_ymap_get(&L->y, n, "listen");
    if (!v)
        return hy_yerr(&L->y, n, "metrics: needs 'listen: HOST:PORT' (e.g. 127.0.0.1:9464)");
    if (parse_hostport(L, v, "metrics.listen", &t->metrics) < 0)
        return -1;
    t->has_metrics = true;
    for (size_t i = 0; i < t->nlisten; i++)
        if (same_endpoint(&t->listen[i], &t->metrics))
            return hy_yerr(&L->y, v, "metrics.listen is also a listen endpoint");
    return 0;
}

static int parse_control(loader *L, const yaml_node_t *n)
{
    static const char *const keys[] = {"socket", "mode", NULL};
    hy_topology *t = L->t;
    if (hy_yexpect_map(&L->y, n, "control") < 0 || hy_ymap_check(&L->y, n, "control", keys) < 0)
        return -1;
    yaml_node_t *v;
    if ((v = hy_ymap_get(&L->y, n, "socket"))) {
        free(t->control_socket);
        t->control_socket = NULL;
        if (get_path(L, v, "control.socket", &t->control_socket) < 0 ||
            check_sock_path(L, v, "control.socket", t->control_socket) < 0)
            return -1;
    }
    if ((v = hy_ymap_get(&L->y, n, "mode"))) {
        const char *s;
        if (hy_yget_str(&L->y, v, "control.mode", &s) < 0)
            return -1;
        char *end;
        errno = 0;
        unsigned long m = strtoul(s, &end, 8);
        if (errno || end == s || *end || m > 0777 || *s == '-' || *s == '+')
            return hy_yerr(&L->y, v, "control.mode must be octal permissions like \"0600\", not '%s'", s);
        if ((m & 0600) != 0600)
            return hy_yerr(&L->y, v, "control.mode %s would lock out hyphad's own user (it needs 0600: read and write for the owner)", s);
        t->control_mode = (uint32_t)m;
    }
    return 0;
}

static int parse_workers(loader *L, const yaml_node_t *n)
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
    return 0;
}

static int parse_root(loader *L)
{
    static const char *const keys[] = {"version", "schema", "upstream", "listen", "control",
                                       "metrics", "defaults", "workers", NULL};
    hy_topology *t = L->t;
    yaml_node_t *root = hy_ydoc_root(&L->y);
    if (hy_yexpect_map(&L->y, root, "a topology file") < 0 ||
        hy_ymap_check(&L->y, root, "the topology", keys) < 0)
        return -1;

    yaml_node_t *v = hy_ymap_get(&L->y, root, "version");
    uint64_t ver;
    if (!v)
        return hy_yerr(&L->y, root, "missing 'version: 1'");
    if (hy_yget_uint(&L->y, v, "version", 0, 1000, &ver) < 0)
        return -1;
    if (ver != 1)
        return hy_yerr(&L->y, v, "unsupported version %llu (this hyphad reads version 1)",
                       (unsigned long long)ver);

    if (!(v = hy_ymap_get(&L->y, root, "schema")))
        return hy_yerr(&L->y, root, "missing 'schema' (the path of the contracts file)");
    if (get_path(L, v, "schema", &t->schema_path) < 0)
        return -1;
    hy_err serr;
    serr.msg[0] = '\0';
    if (!(t->schema = hy_schema_load(t->schema_path, &serr))) {
        /* A problem inside the contracts file already carries its own
         * file:line:col; one opening it is reported at the `schema` key. */
        if (strncmp(serr.msg, t->schema_path, strlen(t->schema_path)) == 0 &&
            serr.msg[strlen(t->schema_path)] == ':' &&
            isdigit((unsigned char)serr.msg[strlen(t->schema_path) + 1]))
            return hy_err_set(L->y.err, "%s", serr.msg);
        return hy_yerr(&L->y, v, "schema: %s", serr.msg);
    }

    /* upstream first: listen checks against it, and the defaults apply */
    t->upstream_echo = true;
    t->upstream_buffer = 8ull << 20;
    t->reconnect_initial_ms = 100;
    t->reconnect_max_ms = 5000;
    if ((v = hy_ymap_get(&L->y, root, "upstream")) && !hy_yis_null(v) && parse_upstream(L, v) < 0)
        return -1;
    if ((v = hy_ymap_get(&L->y, root, "listen")) && !hy_yis_null(v) && parse_listen(L, v) < 0)
        return -1;
    t->control_mode = 0600;
    if (!(t->control_socket = default_control_socket()))
        return oom(L, root);
    if ((v = hy_ymap_get(&L->y, root, "control")) && !hy_yis_null(v) && parse_control(L, v) < 0)
        return -1;
    for (size_t i = 0; i <= t->nlisten; i++) {
        const hy_endpoint *ep = i < t->nlisten ? &t->listen[i] : (t->has_upstream ? &t->upstream : NULL);
        if (ep && ep->kind == HY_EP_UNIX && strcmp(ep->path, t->control_socket) == 0)
            return hy_yerr(&L->y, v ? v : root, "control.socket %s is also used by %s", t->control_socket,
                           i < t->nlisten ? "a listen endpoint" : "the upstream");
    }
    if ((v = hy_ymap_get(&L->y, root, "metrics")) && !hy_yis_null(v) && parse_metrics(L, v) < 0)
        return -1;
    hy_policy_builtin(&t->defaults);
    v = hy_ymap_get(&L->y, root, "defaults");
    if (parse_defaults(L, v && !hy_yis_null(v) ? v : NULL, root) < 0)
        return -1;
    if ((v = hy_ymap_get(&L->y, root, "workers")) && !hy_yis_null(v) && parse_workers(L, v) < 0)
        return -1;
    return 0;
}

hy_topology *hy_topology_load_buffer(const char *name, const char *base_dir, const uint8_t *data,
                                     size_t len, hy_err *err)
{
    loader L;
    memset(&L, 0, sizeof L);
    hy_topology *t = calloc(1, sizeof *t);
    if (!t || !(t->path = strdup(name)) || !(t->dir = strdup(base_dir))) {
        hy_err_set(err, "%s: out of memory", name);
        hy_topology_free(t);
        return NULL;
    }
    L.t = t;
    if (hy_ydoc_load(&L.y, t->path, data, len, err) < 0 || parse_root(&L) < 0) {
        hy_ydoc_free(&L.y);
        hy_topology_free(t);
        return NULL;
    }
    hy_ydoc_free(&L.y);
    return t;
}

hy_topology *hy_topology_load(const char *path, hy_err *err)
{
    size_t len;
    uint8_t *data = hy_read_file(path, &len, 16u << 20, err);
    if (!data)
        return NULL;
    char *dir = hy_dir_of(path, err);
    if (!dir) {
        free(data);
        return NULL;
    }
    hy_topology *t = hy_topology_load_buffer(path, dir, data, len, err);
    free(dir);
    free(data);
    return t;
}
