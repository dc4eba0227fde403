/* contain.c - containment: nothing a worker starts outlives it (see
 * instance.h; docs/supervision.md, "Containment: cgroups").
 *
 * A worker's process group is not enough: a process can leave it (setsid,
 * setpgid, a daemon's double fork). Where hyphad can make cgroups, each
 * instance has one (hypha/cgroup.h): the child joins it before exec, and
 * one write to its cgroup.kill takes everything in it when the worker
 * exits or a stop reaches SIGKILL. Without cgroups the leftovers are found
 * through /proc (hypha/proctab.h): what is still in the worker's group,
 * hyphad's children that are not its workers (a subreaper inherits
 * orphans), and their descendants.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hypha/log.h"
#include "hypha/proctab.h"
#include "hypha/upgrade.h"
#include "instance.h"

#define COMP "supervisor"
#define SHOWN_PIDS 16   /* leftovers named in the log line */
#define LOOKS 8         /* /proc looks at most: a process may fork between a look and its kill */
#define TEARDOWN_MS 1000

/* ---- setup and teardown ------------------------------------------------------- */

int hy_contain_setup(hy_sup *s, hy_err *err)
{
    const hy_topology *t = s->topo;
    char base[PATH_MAX], msg[HY_ERR_MAX + 32];
    hy_err why = {{0}};
    const hy_ustate *u = hy_upgrade_restoring();
    s->cg.adopt = u != NULL; /* hypha-<pid> holds the workers already: kept as it is */
    if (u && !json_is_string(json_object_get(u->root, "cgroup_top"))) {
        snprintf(why.msg, sizeof why.msg, "the hyphad this one took over from did not use them");
    } else if (t->cgroup == HY_CGROUP_PATH) {
        if (hy_cgroup_open(&s->cg, t->cgroup_path, &why) < 0)
            return hy_err_set(err,
                              "%s: cgroup: %s; the topology asks for this directory, so hyphad does not start: it "
                              "must be a cgroup2 directory hyphad can write (with systemd: Delegate=yes in its "
                              "unit), or set cgroup: auto or off",
                              t->path, why.msg);
    } else if (t->cgroup == HY_CGROUP_OFF) {
        snprintf(why.msg, sizeof why.msg, "cgroup: off in the topology");
    } else if (hy_cgroup_self(base, sizeof base, &why) == 0) {
        (void)hy_cgroup_open(&s->cg, base, &why);
    }
    if (s->cg.top) {
        hy_log(HY_INFO, COMP, "cgroups: one per worker instance", "dir", s->cg.top, NULL);
    } else {
        snprintf(msg, sizeof msg, "cgroups: not used: %s", why.msg);
        hy_log(HY_INFO, COMP, msg, "leftovers", "found through /proc", NULL);
    }
    return 0;
}

void hy_contain_teardown(hy_sup *s)
{
    hy_err err;
    if (s->cg.top && hy_cgroup_close(&s->cg, TEARDOWN_MS, &err) < 0)
        hy_log(HY_WARN, COMP, "cgroups: not all removed", "error", err.msg, NULL);
}

int hy_contain_init(hy_instance *in)
{
    if (!in->sup->cg.top)
        return 0;
    return (in->cgroup = hy_cgroup_child(&in->sup->cg, in->name, in->index)) ? 0 : -1;
}

int hy_contain_prepare(hy_instance *in, char *procs, size_t len, hy_err *err)
{
    hy_err why;
    procs[0] = '\0';
    if (!in->cgroup)
        return 0;
    if (hy_cgroup_make(in->cgroup, &why) < 0)
        return hy_err_set(err, "cgroup %s", why.msg);
    int w = snprintf(procs, len, "%s/cgroup.procs", in->cgroup);
    if (w < 0 || (size_t)w >= len)
        return hy_err_set(err, "%s: path too long", in->cgroup);
    return 0;
}

void hy_contain_free(hy_instance *in)
{
    hy_err err;
    if (in->cgroup && hy_cgroup_remove(in->cgroup, &err) < 0)
        hy_log(HY_DEBUG, COMP, "cgroup not removed yet (hyphad's exit will)", "error", err.msg, NULL);
    free(in->cgroup);
    in->cgroup = NULL;
}

/* ---- without cgroups: through /proc ---------------------------------------------- */

/* A process hyphad inherited (it is a subreaper) that is none of its own:
 * this worker's leftover, unless its environment names another instance
 * that still runs (a restart of one worker never kills what another's
 * daemon started). Unreadable or unnamed: a leftover. */
static bool orphan_of(const hy_instance *in, pid_t pid)
{
    const hy_sup *s = in->sup;
    if (pid == s->warden.pid || hy_forksrv_owns(s, pid))
        return false;
    for (size_t i = 0; i < s->ninst; i++)
        if (s->inst[i]->pid == pid)
            return false;
    size_t len;
    hy_err err;
    char *env = hy_proc_environ(pid, &len, &err);
    if (!env)
        return true;
    const char *w = hy_env_find(env, len, "HYPHA_WORKER"), *x = hy_env_find(env, len, "HYPHA_INSTANCE");
    bool mine = true;
    for (size_t i = 0; w && x && i < s->ninst && mine; i++) {
        const hy_instance *o = s->inst[i];
        mine = o == in || o->pid <= 0 || strcmp(o->name, w) != 0 || strcmp(o->idx, x) != 0;
    }
    free(env);
    return mine;
}

typedef bool (*root_fn)(const hy_instance *in, const hy_proc *p, pid_t key);

/* Left by the exited worker `oldpid`: still in its group, or an orphan of it. */
static bool left_by(const hy_instance *in, const hy_proc *p, pid_t oldpid)
{
    return p->pgid == oldpid || (p->ppid == getpid() && orphan_of(in, p->pid));
}

static bool is_pid(const hy_instance *in, const hy_proc *p, pid_t pid)
{
    (void)in;
    return p->pid == pid;
}

typedef struct killed {
    pid_t *pids; /* owned */
    size_t n, cap;
} killed;

static bool seen(const killed *k, pid_t pid)
{
    for (size_t i = 0; i < k->n; i++)
        if (k->pids[i] == pid)
            return true;
    return false;
}

static bool note(killed *k, pid_t pid)
{
    if (k->n == k->cap) {
        size_t nc = k->cap ? k->cap * 2 : 16;
        pid_t *np = realloc(k->pids, nc * sizeof *np);
        if (!np)
            return false;
        k->pids = np;
        k->cap = nc;
    }
    k->pids[k->n++] = pid;
    return true;
}

/* One look: SIGKILL what `root` picks and all below it, not killed yet.
 * The number killed now, or -1 when /proc could not be read. */
static long kill_once(const hy_instance *in, root_fn root, pid_t key, killed *k)
{
    hy_proctab t;
    hy_err err;
    if (hy_proctab_read(&t, &err) < 0) {
        hy_log(HY_WARN, COMP, "cannot look for leftovers", "worker", in->name, "instance", in->idx, "error", err.msg,
               NULL);
        return -1;
    }
    bool *take = calloc(t.n ? t.n : 1, sizeof *take);
    long fresh = take ? 0 : -1;
    for (size_t i = 0; take && i < t.n; i++)
        take[i] = root(in, &t.p[i], key);
    if (take)
        hy_proctab_descendants(&t, take);
    for (size_t i = 0; take && i < t.n; i++) {
        pid_t p = t.p[i].pid;
        if (take[i] && p != getpid() && !seen(k, p) && kill(p, SIGKILL) == 0 && note(k, p))
            fresh++;
    }
    free(take);
    hy_proctab_free(&t);
    return fresh;
}

/* Looks again until one finds nothing new. */
static void kill_strays(const hy_instance *in, root_fn root, pid_t key, killed *k)
{
    for (int look = 0; look < LOOKS && kill_once(in, root, key, k) > 0; look++) {
    }
}

/* ---- killing and reaping -------------------------------------------------------- */

static void cgroup_failed(const hy_instance *in, const hy_err *err)
{
    hy_log(HY_WARN, COMP, "cannot kill through the cgroup: looking in /proc", "worker", in->name, "instance", in->idx,
           "cgroup", in->cgroup, "error", err->msg, NULL);
}

void hy_contain_kill(hy_instance *in)
{
    hy_err err;
    if (in->pid <= 0)
        return;
    if (in->cgroup && hy_cgroup_kill(in->cgroup, &err) == 0)
        return;
    if (in->cgroup)
        cgroup_failed(in, &err);
    killed k = {NULL, 0, 0};
    kill_strays(in, is_pid, in->pid, &k);
    free(k.pids);
}

static void log_leftovers(const hy_instance *in, pid_t oldpid, const pid_t *pids, size_t n, bool by_cgroup)
{
    char list[SHOWN_PIDS * 12 + 8];
    size_t len = 0;
    list[0] = '\0';
    for (size_t i = 0; i < n && i < SHOWN_PIDS; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%ld", i ? "," : "", (long)pids[i]);
    if (n > SHOWN_PIDS)
        snprintf(list + len, sizeof list - len, ",...");
    hy_log(HY_WARN, COMP, "killed processes the worker left behind", "worker", in->name, "instance", in->idx, "pid",
           HY_I64(oldpid), "count", HY_U64(n), "pids", list, "by", by_cgroup ? "cgroup.kill" : "/proc",
           by_cgroup ? "cgroup" : NULL, in->cgroup, NULL);
}

/* Count what is in its cgroup, then kill it all. */
static int reap_cgroup(hy_instance *in, pid_t oldpid, hy_err *err)
{
    pid_t pids[SHOWN_PIDS];
    size_t n;
    if (hy_cgroup_pids(in->cgroup, pids, SHOWN_PIDS, &n, err) < 0 || (n && hy_cgroup_kill(in->cgroup, err) < 0))
        return -1;
    if (n)
        log_leftovers(in, oldpid, pids, n, true);
    return 0;
}

void hy_contain_reap(hy_instance *in, pid_t oldpid)
{
    hy_err err;
    if (oldpid <= 0)
        return;
    if (in->cgroup && reap_cgroup(in, oldpid, &err) == 0)
        return;
    if (in->cgroup)
        cgroup_failed(in, &err);
    killed k = {NULL, 0, 0};
    kill_strays(in, left_by, oldpid, &k);
    (void)kill(-oldpid, SIGKILL); /* one that joined the group after the last look */
    if (k.n)
        log_leftovers(in, oldpid, k.pids, k.n, false);
    free(k.pids);
}
