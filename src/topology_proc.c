/* topology_proc.c - who a worker runs as and its process settings: `user`,
 * `group`, `umask`, `rlimits` (docs/topology.md#process-settings).
 *
 * Names are looked up when the topology is loaded (getpwnam_r and friends,
 * which a vfork child must not call): the child gets numbers only. What
 * hyphad could not apply is refused here, with the reason, rather than at
 * every spawn: another user needs root, and so does a hard limit above
 * hyphad's own. */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "hypha/spawn.h"
#include "hypha/units.h"
#include "topology_int.h"

#define MAX_GROUPS 256

static const struct {
    const char *name;
    int resource;
    char kind; /* 'n' a count, 'b' bytes (sizes allowed), 's' seconds (durations allowed) */
} limits[HY_RLIMITS] = {
    [HY_RLIMIT_NOFILE] = {"nofile", RLIMIT_NOFILE, 'n'}, [HY_RLIMIT_CORE] = {"core", RLIMIT_CORE, 'b'},
    [HY_RLIMIT_NPROC] = {"nproc", RLIMIT_NPROC, 'n'},    [HY_RLIMIT_MEMLOCK] = {"memlock", RLIMIT_MEMLOCK, 'b'},
    [HY_RLIMIT_AS] = {"as", RLIMIT_AS, 'b'},             [HY_RLIMIT_CPU] = {"cpu", RLIMIT_CPU, 's'},
    [HY_RLIMIT_FSIZE] = {"fsize", RLIMIT_FSIZE, 'b'},    [HY_RLIMIT_STACK] = {"stack", RLIMIT_STACK, 'b'},
};

int hy_rlimit_resource(int which) { return limits[which].resource; }
const char *hy_rlimit_name(int which) { return limits[which].name; }

void hy_worker_proc_free(hy_worker_proc *p)
{
    free(p->groups);
    free(p->user);
    free(p->home);
}

/* "risk" or "4242": an id, and the passwd entry when there is one. */
static bool numeric(const char *s, unsigned *out)
{
    uint64_t v;
    if (hy_parse_uint(s, &v) < 0 || v > 0xfffffffeu)
        return false;
    *out = (unsigned)v;
    return true;
}

/* Root, or (a hyphad run as its own user by systemd with
 * AmbientCapabilities=) the capabilities that stand in for it. */
static bool may(int cap)
{
    if (geteuid() == 0)
        return true;
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) < 0)
        return false;
    return (d[cap / 32].effective >> (cap % 32)) & 1u;
}

static int not_root(loader *L, const yaml_node_t *n, const char *what, const char *which, unsigned want,
                    unsigned have)
{
    return hy_yerr(&L->y, n,
                   "%s: hyphad runs as %s %u, not as root: only root (or CAP_SETUID and CAP_SETGID) can start a "
                   "worker as %s %u (run hyphad as root, or remove `%s`)",
                   what, which, have, which, want, strrchr(what, '.') + 1);
}

static int parse_user(loader *L, const yaml_node_t *n, hy_worker_proc *p, const char *what)
{
    const char *s;
    if (hy_yget_str(&L->y, n, what, &s) < 0)
        return -1;
    char buf[4096];
    struct passwd pw, *found = NULL;
    unsigned id;
    int e = numeric(s, &id) ? getpwuid_r(id, &pw, buf, sizeof buf, &found)
                            : getpwnam_r(s, &pw, buf, sizeof buf, &found);
    if (!found && !numeric(s, &id))
        return hy_yerr(&L->y, n, "%s: no user '%s' on this machine%s%s", what, s, e ? ": " : "",
                       e ? strerror(e) : "");
    p->set_ids = true;
    p->uid = found ? pw.pw_uid : id;
    if (found) {
        p->gid = pw.pw_gid;
        if (!(p->user = strdup(pw.pw_name)) || !(p->home = strdup(pw.pw_dir)))
            return oom(L, n);
        gid_t list[MAX_GROUPS];
        int cnt = MAX_GROUPS;
        if (getgrouplist(pw.pw_name, pw.pw_gid, list, &cnt) < 0)
            return hy_yerr(&L->y, n, "%s: '%s' is in more than %d groups", what, s, MAX_GROUPS);
        if (!(p->groups = calloc((size_t)cnt, sizeof *p->groups)))
            return oom(L, n);
        for (int i = 0; i < cnt; i++)
            p->groups[i] = list[i];
        p->ngroups = (size_t)cnt;
    } else {
        p->gid = (unsigned)-1; /* `group` must say */
    }
    return 0;
}

static int parse_group(loader *L, const yaml_node_t *n, hy_worker_proc *p, const char *what)
{
    const char *s;
    if (hy_yget_str(&L->y, n, what, &s) < 0)
        return -1;
    char buf[4096];
    struct group gr, *found = NULL;
    unsigned id;
    if (numeric(s, &id)) {
        p->gid = id;
    } else {
        int e = getgrnam_r(s, &gr, buf, sizeof buf, &found);
        if (!found)
            return hy_yerr(&L->y, n, "%s: no group '%s' on this machine%s%s", what, s, e ? ": " : "",
                           e ? strerror(e) : "");
        p->gid = gr.gr_gid;
    }
    if (!p->set_ids) { /* a group alone: hyphad's user, that group */
        p->set_ids = true;
        p->uid = (unsigned)geteuid();
    }
    return 0;
}

/* `user` and `group` together, and whether hyphad may apply them. */
static int parse_ids(loader *L, const yaml_node_t *val, hy_worker_proc *p, const char *ctx)
{
    yaml_node_t *u = hy_ymap_get(&L->y, val, "user"), *g = hy_ymap_get(&L->y, val, "group");
    if (u && parse_user(L, u, p, qual(L, ctx, "user")) < 0)
        return -1;
    if (g && parse_group(L, g, p, qual(L, ctx, "group")) < 0)
        return -1;
    if (!p->set_ids)
        return 0;
    if (p->gid == (unsigned)-1)
        return hy_yerr(&L->y, u, "%suser: uid %u has no entry in the user database: give `group` too", ctx, p->uid);
    if (!p->groups) { /* no passwd entry, or `group` overrode it: exactly that group */
        if (!(p->groups = calloc(1, sizeof *p->groups)))
            return oom(L, val);
        p->groups[0] = p->gid;
        p->ngroups = 1;
    }
    bool able = may(CAP_SETUID) && may(CAP_SETGID);
    if (!able && p->uid != geteuid())
        return not_root(L, u, qual(L, ctx, "user"), "uid", p->uid, (unsigned)geteuid());
    if (!able && p->gid != getegid())
        return not_root(L, g ? g : u, qual(L, ctx, g ? "group" : "user"), "gid", p->gid, (unsigned)getegid());
    return 0;
}

static int parse_umask(loader *L, const yaml_node_t *n, hy_worker_proc *p, const char *what)
{
    const char *s;
    if (hy_yget_str(&L->y, n, what, &s) < 0)
        return -1;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 8);
    if (!*s || *end || errno || v > 0777 || strspn(s, "01234567") != strlen(s))
        return hy_yerr(&L->y, n, "%s must be octal digits up to 0777, like \"0027\", not '%s'", what, s);
    p->set_umask = true;
    p->umask = (unsigned)v;
    return 0;
}

/* One side of a limit: a number, `unlimited` / `infinity`, a size (bytes)
 * or a duration (cpu seconds). */
static int limit_value(const char *s, char kind, uint64_t *out, char *why, size_t whylen)
{
    if (strcmp(s, "unlimited") == 0 || strcmp(s, "infinity") == 0) {
        *out = UINT64_MAX;
        return 0;
    }
    if (hy_parse_uint(s, out) == 0)
        return 0;
    if (kind == 'b')
        return hy_parse_size(s, out, why, whylen);
    if (kind == 's') {
        uint64_t ms;
        if (hy_parse_duration_ms(s, &ms, why, whylen) < 0)
            return -1;
        *out = ms / 1000;
        return 0;
    }
    snprintf(why, whylen, "not a number");
    return -1;
}

/* "N" (soft and hard), or "SOFT:HARD". */
static int parse_limit(loader *L, const yaml_node_t *n, int which, hy_worker_rlimit *r, const char *what)
{
    const char *s;
    if (hy_yget_str(&L->y, n, what, &s) < 0)
        return -1;
    char soft[64], why[128];
    const char *colon = strchr(s, ':');
    size_t len = colon ? (size_t)(colon - s) : strlen(s);
    if (len >= sizeof soft)
        return hy_yerr(&L->y, n, "%s: '%s' is too long", what, s);
    memcpy(soft, s, len);
    soft[len] = '\0';
    if (limit_value(soft, limits[which].kind, &r->soft, why, sizeof why) < 0 ||
        limit_value(colon ? colon + 1 : soft, limits[which].kind, &r->hard, why, sizeof why) < 0)
        return hy_yerr(&L->y, n, "%s: '%s' is not a limit (a number, unlimited, or SOFT:HARD): %s", what, s, why);
    if (r->soft > r->hard)
        return hy_yerr(&L->y, n, "%s: the soft limit is above the hard one in '%s'", what, s);
    struct rlimit now;
    if (!may(CAP_SYS_RESOURCE) && getrlimit(limits[which].resource, &now) == 0 && now.rlim_max != RLIM_INFINITY &&
        (r->hard == UINT64_MAX || r->hard > now.rlim_max))
        return hy_yerr(&L->y, n,
                       "%s: a hard limit above hyphad's own (%llu) needs root: lower it, or run hyphad as root",
                       what, (unsigned long long)now.rlim_max);
    r->set = true;
    return 0;
}

static int parse_rlimits(loader *L, const yaml_node_t *n, hy_worker_proc *p, const char *ctx)
{
    const char *const keys[] = {"nofile", "core", "nproc", "memlock", "as", "cpu", "fsize", "stack", NULL};
    char what[192];
    snprintf(what, sizeof what, "%srlimits", ctx);
    if (hy_yexpect_map(&L->y, n, what) < 0 || hy_ymap_check(&L->y, n, what, keys) < 0)
        return -1;
    for (int i = 0; i < HY_RLIMITS; i++) {
        yaml_node_t *v = hy_ymap_get(&L->y, n, limits[i].name);
        char name[224];
        snprintf(name, sizeof name, "%s.%s", what, limits[i].name);
        if (v && parse_limit(L, v, i, &p->rlimits[i], name) < 0)
            return -1;
    }
    return 0;
}

int hy_topo_parse_proc(loader *L, const yaml_node_t *val, hy_worker_spec *w, const char *ctx)
{
    hy_worker_proc *p = &w->proc;
    yaml_node_t *v;
    if (parse_ids(L, val, p, ctx) < 0)
        return -1;
    if ((v = hy_ymap_get(&L->y, val, "umask")) && parse_umask(L, v, p, qual(L, ctx, "umask")) < 0)
        return -1;
    if ((v = hy_ymap_get(&L->y, val, "rlimits")) && parse_rlimits(L, v, p, ctx) < 0)
        return -1;
    return 0;
}

/* ---- as hy_spawn wants them ------------------------------------------------ */

void hy_worker_proc_creds(const hy_worker_proc *p, hy_spawn_creds *c)
{
    _Static_assert(sizeof(gid_t) == sizeof(unsigned), "groups are stored as unsigned");
    *c = (hy_spawn_creds){.drop_caps = hy_spawn_holds_caps(), .set_ids = p->set_ids, .uid = p->uid, .gid = p->gid, .groups = (const gid_t *)p->groups,
                          .ngroups = p->ngroups, .set_umask = p->set_umask, .umask = (mode_t)p->umask};
    for (int i = 0; i < HY_RLIMITS && c->nlimits < HY_SPAWN_MAX_LIMITS; i++) {
        if (!p->rlimits[i].set)
            continue;
        c->limits[c->nlimits].resource = hy_rlimit_resource(i);
        c->limits[c->nlimits].rl.rlim_cur = p->rlimits[i].soft == UINT64_MAX ? RLIM_INFINITY : p->rlimits[i].soft;
        c->limits[c->nlimits].rl.rlim_max = p->rlimits[i].hard == UINT64_MAX ? RLIM_INFINITY : p->rlimits[i].hard;
        c->nlimits++;
    }
}
