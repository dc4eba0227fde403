/* upgrade.c - the state that crosses an in-place upgrade, the exec, and
 * the way back (see hypha/upgrade.h). */
#define _GNU_SOURCE
#include "hypha/upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hypha/log.h"
#include "hypha/version.h"

#define MAGIC "HYPHAUPG"
#define ENV_STATE "HYPHA_UPGRADE_STATE"   /* the memfd's number */
#define ENV_SELF "HYPHA_UPGRADE_SELF"     /* the old binary, open */
#define ENV_FAILED "HYPHA_UPGRADE_FAILED" /* set for the old binary taken back: why */

extern char **environ;

unsigned hy_upgrade_state_version = HY_UPGRADE_STATE_VERSION;
static unsigned upgrades; /* attempted in this process's life, over every exec */

void hy_upgrade_signals(sigset_t *set)
{
    sigemptyset(set);
    int sigs[] = {SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD, SIGALRM, SIGPIPE};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaddset(set, sigs[i]);
}

void hy_upgrade_signals_ready(void)
{
    sigset_t set;
    hy_upgrade_signals(&set);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

/* ---- writing ---------------------------------------------------------------- */

int hy_ustate_init(hy_ustate *u)
{
    memset(u, 0, sizeof *u);
    u->root = json_object();
    return u->root ? 0 : -1;
}

void hy_ustate_free(hy_ustate *u)
{
    json_decref(u->root);
    if (!u->mapped) /* a mapped one is hy_upgrade_done's */
        free(u->blob);
    free(u->fds);
    memset(u, 0, sizeof *u);
}

uint8_t *hy_ustate_reserve(hy_ustate *u, size_t n, json_t **ref)
{
    if (!u->blob || u->blen + n > u->bcap) {
        size_t cap = u->bcap ? u->bcap : 65536;
        while (cap < u->blen + n)
            cap *= 2;
        uint8_t *b = realloc(u->blob, cap);
        if (!b)
            return NULL;
        u->blob = b;
        u->bcap = cap;
    }
    *ref = json_pack("{s:I,s:I}", "at", (json_int_t)u->blen, "len", (json_int_t)n);
    if (!*ref)
        return NULL;
    uint8_t *p = u->blob + u->blen;
    u->blen += n;
    return p;
}

json_t *hy_ustate_bytes(hy_ustate *u, const void *p, size_t n)
{
    json_t *ref;
    uint8_t *dst = hy_ustate_reserve(u, n, &ref);
    if (!dst)
        return NULL;
    if (n)
        memcpy(dst, p, n);
    return ref;
}

json_t *hy_ustate_fd(hy_ustate *u, int fd)
{
    if (fd < 0)
        return json_null();
    if (u->nfds == u->fcap) {
        size_t cap = u->fcap ? u->fcap * 2 : 32;
        int *f = realloc(u->fds, cap * sizeof *f);
        if (!f)
            return NULL;
        u->fds = f;
        u->fcap = cap;
    }
    u->fds[u->nfds++] = fd;
    return json_integer(fd);
}

static void set_cloexec(const int *fds, size_t n, bool on)
{
    for (size_t i = 0; i < n; i++) {
        int fl = fcntl(fds[i], F_GETFD);
        if (fl >= 0)
            (void)fcntl(fds[i], F_SETFD, on ? fl | FD_CLOEXEC : fl & ~FD_CLOEXEC);
    }
}

/* The state into a memfd (not close-on-exec: it crosses). */
static int write_memfd(const hy_ustate *u, hy_err *err)
{
    char *doc = json_dumps(u->root, JSON_COMPACT);
    if (!doc)
        return hy_err_set(err, "upgrade state: out of memory");
    int fd = memfd_create("hyphad-upgrade", 0);
    if (fd < 0) {
        free(doc);
        return hy_err_set(err, "upgrade state: memfd_create: %s", strerror(errno));
    }
    uint32_t hdr[2] = {hy_upgrade_state_version, (uint32_t)strlen(doc)};
    struct {
        const void *p;
        size_t n;
    } parts[] = {{MAGIC, 8}, {hdr, sizeof hdr}, {doc, hdr[1]}, {u->blob, u->blen}};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        const uint8_t *p = parts[i].p;
        for (size_t off = 0; off < parts[i].n;) {
            ssize_t w = write(fd, p + off, parts[i].n - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                int e = errno;
                free(doc);
                close(fd);
                return hy_err_set(err, "upgrade state: write to memfd: %s", strerror(e));
            }
            off += (size_t)w;
        }
    }
    free(doc);
    return fd;
}

/* environ plus extra, with our own variables set afresh. */
static char **make_env(char *const extra[], char *mine[], size_t nmine)
{
    size_t n = 0, k = 0, ne = 0;
    for (char **e = environ; *e; e++)
        n++;
    while (extra && extra[ne])
        ne++;
    char **env = calloc(n + ne + nmine + 1, sizeof *env);
    if (!env)
        return NULL;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "HYPHA_UPGRADE_", 14) != 0)
            env[k++] = *e;
    for (size_t i = 0; i < ne; i++)
        env[k++] = extra[i];
    for (size_t i = 0; i < nmine; i++)
        env[k++] = mine[i];
    return env;
}

int hy_upgrade_exec(hy_ustate *u, const char *path, char *const argv[], char *const extra_env[], hy_err *err)
{
    int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC); /* the way back, even once the file is replaced */
    if (self < 0)
        return hy_err_set(err, "upgrade: open /proc/self/exe (the way back): %s", strerror(errno));
    json_object_set_new(u->root, "from", json_string(HYPHA_VERSION));
    json_object_set_new(u->root, "upgrades", json_integer(upgrades));
    json_t *fds = json_array();
    for (size_t i = 0; i < u->nfds; i++)
        json_array_append_new(fds, json_integer(u->fds[i]));
    json_object_set_new(u->root, "fds", fds);
    int mfd = write_memfd(u, err);
    if (mfd < 0) {
        close(self);
        return -1;
    }
    char e_state[48], e_self[48];
    snprintf(e_state, sizeof e_state, ENV_STATE "=%d", mfd);
    snprintf(e_self, sizeof e_self, ENV_SELF "=%d", self);
    char *mine[] = {e_state, e_self};
    char **env = make_env(extra_env, mine, 2);
    if (!env) {
        close(mfd);
        close(self);
        return hy_err_set(err, "upgrade: out of memory");
    }
    set_cloexec(u->fds, u->nfds, false);
    set_cloexec(&self, 1, false);
    /* Until the new binary has its handlers, a signal's default action
     * would kill hyphad (and the warden every worker): blocked, they wait. */
    sigset_t block, old;
    hy_upgrade_signals(&block);
    sigprocmask(SIG_BLOCK, &block, &old);
    execve(path, argv, env);
    int e = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    set_cloexec(u->fds, u->nfds, true);
    free(env);
    close(mfd);
    close(self);
    return hy_err_set(err, "upgrade: exec %s: %s", path, strerror(e));
}

/* ---- what status says about upgrades ----------------------------------------- */

static json_t *last_upgrade;     /* the last one's outcome */

unsigned hy_upgrade_count(void) { return upgrades; }

void hy_upgrade_note(const char *result, const char *from, const char *reason, double pause_ms)
{
    bool ok = strcmp(result, "ok") == 0;
    json_decref(last_upgrade);
    upgrades++;
    last_upgrade = json_pack("{s:s,s:s,s:s,s:s?,s:f,s:I}", "result", result, "from", from ? from : "?",
                             "to", ok ? HYPHA_VERSION : (from ? from : "?"), "reason", reason, "pause_ms", pause_ms,
                             "at", (json_int_t)time(NULL));
}

json_t *hy_upgrade_status(void)
{
    return json_pack("{s:I,s:O?}", "count", (json_int_t)upgrades, "last", last_upgrade);
}

/* ---- reading ---------------------------------------------------------------- */

static hy_ustate restoring;
static bool have_state;
static int state_fd = -1, self_fd = -1;
static char failed_reason[512];
static bool was_fallback;
static char from_version[64];
static char **load_argv;

const hy_ustate *hy_upgrade_restoring(void) { return have_state ? &restoring : NULL; }
const char *hy_upgrade_failed_reason(void) { return was_fallback ? failed_reason : NULL; }
const char *hy_upgrade_from(void) { return from_version; }

static int env_fd(const char *name)
{
    const char *v = getenv(name);
    char *end;
    if (!v || !*v)
        return -1;
    long fd = strtol(v, &end, 10);
    return *end == '\0' && fd >= 0 && fd < 1 << 20 ? (int)fd : -1;
}

/* Every fd the state carries, close-on-exec or not. */
static void state_fds_cloexec(bool on)
{
    json_t *fds = json_object_get(restoring.root, "fds");
    size_t i;
    json_t *v;
    json_array_foreach(fds, i, v)
    {
        int fd = (int)json_integer_value(v);
        set_cloexec(&fd, 1, on);
    }
}

void hy_upgrade_fallback(const char *reason)
{
    hy_log(HY_ERROR, "hyphad", "upgrade: cannot take over: going back to the old hyphad", "error", reason, NULL);
    if (was_fallback || self_fd < 0 || state_fd < 0) /* the old one failed too: nothing to go back to */
        return;
    char **argv = load_argv; /* the old one's: it ran us with them */
    if (!argv || !argv[0])
        return;
    char e_state[48], e_self[48], *e_failed = NULL;
    snprintf(e_state, sizeof e_state, ENV_STATE "=%d", state_fd);
    snprintf(e_self, sizeof e_self, ENV_SELF "=%d", self_fd);
    if (asprintf(&e_failed, ENV_FAILED "=%s", reason) < 0)
        return;
    char *mine[] = {e_state, e_self, e_failed};
    char **env = make_env(NULL, mine, 3);
    if (!env)
        return;
    state_fds_cloexec(false); /* made close-on-exec as they were adopted: open again for the way back */
    int keep[] = {state_fd, self_fd};
    set_cloexec(keep, 2, false);
    fexecve(self_fd, argv, env);
    hy_log(HY_ERROR, "hyphad", "upgrade: cannot execute the old hyphad again", "error", strerror(errno), NULL);
}

static int read_state(int fd, char *why, size_t whylen)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size < 16) {
        snprintf(why, whylen, "the state (fd %d) is unreadable or too short", fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    uint8_t *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        snprintf(why, whylen, "the state (fd %d): mmap: %s", fd, strerror(errno));
        return -1;
    }
    uint32_t hdr[2];
    memcpy(hdr, p + 8, sizeof hdr);
    if (memcmp(p, MAGIC, 8) != 0 || 16 + (size_t)hdr[1] > size) {
        munmap(p, size);
        snprintf(why, whylen, "the state is not an upgrade state");
        return -1;
    }
    if (hdr[0] != hy_upgrade_state_version) {
        munmap(p, size);
        snprintf(why, whylen, "state format %u not understood (this hyphad %s reads format %u)", hdr[0], HYPHA_VERSION,
                 hy_upgrade_state_version);
        return -1;
    }
    json_error_t je;
    restoring.root = json_loadb((const char *)p + 16, hdr[1], 0, &je);
    if (!restoring.root) {
        munmap(p, size);
        snprintf(why, whylen, "the state's document: %s", je.text);
        return -1;
    }
    restoring.blob = p + 16 + hdr[1];
    restoring.blen = size - 16 - hdr[1];
    restoring.bcap = size;
    restoring.mapped = true;
    return 0;
}

static uint8_t *map_base;
static size_t map_size;

int hy_upgrade_load(char **argv)
{
    load_argv = argv;
    state_fd = env_fd(ENV_STATE);
    self_fd = env_fd(ENV_SELF);
    const char *failed = getenv(ENV_FAILED);
    if (failed) {
        was_fallback = true;
        snprintf(failed_reason, sizeof failed_reason, "%s", failed);
    }
    unsetenv(ENV_STATE);
    unsetenv(ENV_SELF);
    unsetenv(ENV_FAILED);
    if (state_fd < 0)
        return 0;
    char why[400];
    if (read_state(state_fd, why, sizeof why) < 0) {
        hy_upgrade_fallback(why);
        exit(1);
    }
    map_base = restoring.blob - (restoring.bcap - restoring.blen);
    map_size = restoring.bcap;
    snprintf(from_version, sizeof from_version, "%s",
             json_string_value(json_object_get(restoring.root, "from")) ?: "?");
    have_state = true;
    upgrades = (unsigned)json_integer_value(json_object_get(restoring.root, "upgrades"));
    state_fds_cloexec(true); /* a worker spawned from now on must not inherit them */
    (void)fcntl(state_fd, F_SETFD, FD_CLOEXEC);
    if (self_fd >= 0)
        (void)fcntl(self_fd, F_SETFD, FD_CLOEXEC);
    return 1;
}

void hy_upgrade_done(void)
{
    if (!have_state)
        return;
    json_decref(restoring.root);
    munmap(map_base, map_size);
    memset(&restoring, 0, sizeof restoring);
    have_state = false;
    if (state_fd >= 0)
        close(state_fd);
    if (self_fd >= 0)
        close(self_fd);
    state_fd = self_fd = -1;
}

const uint8_t *hy_ustate_get(const hy_ustate *u, const json_t *ref, size_t *n)
{
    json_int_t at = json_integer_value(json_object_get(ref, "at"));
    json_int_t len = json_integer_value(json_object_get(ref, "len"));
    if (!json_is_object(ref) || at < 0 || len < 0 || (size_t)at + (size_t)len > u->blen)
        return NULL;
    *n = (size_t)len;
    return u->blob + at;
}

int hy_ustate_getfd(const json_t *v)
{
    if (!json_is_integer(v))
        return -1;
    int fd = (int)json_integer_value(v);
    return fcntl(fd, F_GETFD) >= 0 ? fd : -1;
}

int hy_upgrade_take_listener(const char *name)
{
    if (!have_state)
        return -1;
    json_t *l = json_object_get(restoring.root, "listeners");
    int fd = hy_ustate_getfd(json_object_get(l, name));
    if (fd >= 0)
        json_object_del(l, name);
    return fd;
}
