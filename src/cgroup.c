/* cgroup.c - cgroup2 directories for containment (see hypha/cgroup.h).
 *
 * Every operation is a file: mkdir/rmdir a directory, write "0" to
 * cgroup.procs (the child, in spawn.c), "1" to cgroup.kill, read
 * cgroup.procs, poll cgroup.events. The warden uses the same calls after
 * hyphad died, so nothing here keeps state beyond the path it is given.
 */
#define _GNU_SOURCE
#include "hypha/cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"

#define PROC_FILE_MAX (4u << 20) /* mountinfo in a busy container, cgroup.procs of a big cgroup */

/* ---- where hyphad's own cgroup is ------------------------------------------- */

/* mountinfo's octal escapes (\040 for a space) undone in place. */
static void unescape(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
            *o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 3;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
}

typedef struct mount_rec {
    char *root;  /* the directory of the hierarchy mounted there */
    char *point; /* where it is mounted */
    char *type;
} mount_rec;

static size_t split(char *line, char **f, size_t max)
{
    size_t n = 0;
    for (char *save, *t = strtok_r(line, " ", &save); t && n < max; t = strtok_r(NULL, " ", &save))
        f[n++] = t;
    return n;
}

/* "36 25 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw" (mountinfo)
 * or "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0" (/proc/mounts: root unknown, "/"). */
static bool parse_mount(char *line, bool mountinfo, mount_rec *m)
{
    char *f[64];
    size_t n = split(line, f, 64);
    if (!mountinfo) {
        *m = (mount_rec){"/", n >= 3 ? f[1] : NULL, n >= 3 ? f[2] : NULL};
        return n >= 3;
    }
    size_t dash = 6;
    while (dash < n && strcmp(f[dash], "-") != 0)
        dash++;
    if (n < 7 || dash + 1 >= n)
        return false;
    *m = (mount_rec){f[3], f[4], f[dash + 1]};
    return true;
}

/* `path` below `root` in the hierarchy: what follows root ("/" for root
 * itself), or NULL when path is elsewhere. */
static const char *below(const char *path, const char *root)
{
    size_t rl = strlen(root);
    if (strcmp(root, "/") == 0)
        return path;
    if (strncmp(path, root, rl) != 0 || (path[rl] != '/' && path[rl] != '\0'))
        return NULL;
    return path[rl] ? path + rl : "/";
}

/* The directory of hierarchy path `path` under a cgroup2 mount listed in `file`. */
static int find_dir(const char *file, bool mountinfo, const char *path, char *out, size_t len, hy_err *err)
{
    size_t flen;
    char *text = (char *)hy_read_file(file, &flen, PROC_FILE_MAX, err);
    if (!text)
        return -1;
    int rc = hy_err_set(err, "%s: no cgroup2 file system mounted over %s", file, path);
    for (char *save, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        mount_rec m;
        if (!parse_mount(line, mountinfo, &m) || strcmp(m.type, "cgroup2") != 0)
            continue;
        unescape(m.root);
        unescape(m.point);
        const char *rest = below(path, m.root);
        if (!rest)
            continue;
        int w = snprintf(out, len, "%s%s", m.point, strcmp(rest, "/") == 0 ? "" : rest);
        rc = w < 0 || (size_t)w >= len ? hy_err_set(err, "%s%s: path too long", m.point, rest) : 0;
        break;
    }
    free(text);
    return rc;
}

/* The `0::/path` line of /proc/self/cgroup. */
static int own_path(char *out, size_t len, hy_err *err)
{
    size_t flen;
    char *text = (char *)hy_read_file("/proc/self/cgroup", &flen, PROC_FILE_MAX, err);
    if (!text)
        return -1;
    int rc = hy_err_set(err, "/proc/self/cgroup has no cgroup2 line (0::): the machine runs cgroup v1 only");
    for (char *save, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "0::", 3) != 0)
            continue;
        int w = snprintf(out, len, "%s", line + 3);
        rc = w <= 0 || (size_t)w >= len ? hy_err_set(err, "/proc/self/cgroup: bad cgroup2 line '%s'", line) : 0;
        break;
    }
    free(text);
    return rc;
}

int hy_cgroup_self(char *out, size_t len, hy_err *err)
{
    char path[PATH_MAX];
    if (own_path(path, sizeof path, err) < 0)
        return -1;
    if (find_dir("/proc/self/mountinfo", true, path, out, len, err) == 0)
        return 0;
    hy_err first = *err; /* the better reason, if /proc/mounts has none either */
    if (find_dir("/proc/mounts", false, path, out, len, err) == 0)
        return 0;
    *err = first;
    return -1;
}

/* ---- one directory ------------------------------------------------------------ */

static int file_in(const char *dir, const char *name, char *out, size_t len, hy_err *err)
{
    int w = snprintf(out, len, "%s/%s", dir, name);
    if (w < 0 || (size_t)w >= len)
        return hy_err_set(err, "%s/%s: path too long", dir, name);
    return 0;
}

char *hy_cgroup_child(const hy_cgroup *cg, const char *name, unsigned index)
{
    char *dir;
    return asprintf(&dir, "%s/%s-%u", cg->top, name, index) < 0 ? NULL : dir;
}

int hy_cgroup_kill(const char *dir, hy_err *err)
{
    char path[PATH_MAX];
    if (file_in(dir, "cgroup.kill", path, sizeof path, err) < 0)
        return -1;
    return hy_write_file(path, "1", err);
}

int hy_cgroup_make(const char *dir, hy_err *err)
{
    if (mkdir(dir, 0755) == 0)
        return 0;
    if (errno != EEXIST)
        return hy_err_set(err, "%s: cannot create: %s", dir, strerror(errno));
    return hy_cgroup_kill(dir, err); /* an earlier run's: emptied, then reused */
}

int hy_cgroup_remove(const char *dir, hy_err *err)
{
    if (rmdir(dir) == 0 || errno == ENOENT)
        return 0;
    int e = errno;
    hy_err_set(err, "%s: cannot remove: %s", dir, strerror(e));
    errno = e;
    return -1;
}

int hy_cgroup_pids(const char *dir, pid_t *pids, size_t max, size_t *n, hy_err *err)
{
    char path[PATH_MAX];
    size_t len;
    *n = 0;
    if (file_in(dir, "cgroup.procs", path, sizeof path, err) < 0)
        return -1;
    char *text = (char *)hy_read_file(path, &len, PROC_FILE_MAX, err);
    if (!text)
        return -1;
    for (char *p = text, *end; *p; p = end) {
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        if (*n < max)
            pids[*n] = (pid_t)v;
        (*n)++;
    }
    free(text);
    return 0;
}

static int elapsed_ms(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int)((t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000);
}

/* Read cgroup.events from the start: 1 populated, 0 empty, -1 unreadable. */
static int populated(int fd)
{
    char buf[256];
    ssize_t n;
    if (lseek(fd, 0, SEEK_SET) < 0)
        return -1;
    do {
        n = read(fd, buf, sizeof buf - 1);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return strstr(buf, "populated 0") ? 0 : 1;
}

bool hy_cgroup_wait_empty(const char *dir, int timeout_ms)
{
    char path[PATH_MAX];
    hy_err err;
    if (file_in(dir, "cgroup.events", path, sizeof path, &err) < 0)
        return false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT; /* no such cgroup: nothing in it */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int st;
    while ((st = populated(fd)) == 1) {
        int left = timeout_ms - elapsed_ms(&t0);
        struct pollfd p = {.fd = fd, .events = POLLPRI};
        if (left <= 0 || (poll(&p, 1, left) < 0 && errno != EINTR))
            break;
    }
    close(fd);
    return st == 0;
}

/* ---- hypha-<pid> ----------------------------------------------------------------- */

static int writable(const char *dir, const char *name, hy_err *err)
{
    char path[PATH_MAX];
    if (file_in(dir, name, path, sizeof path, err) < 0)
        return -1;
    if (faccessat(AT_FDCWD, path, W_OK, AT_EACCESS) < 0)
        return hy_err_set(err, "%s: not writable: %s", path, strerror(errno));
    return 0;
}

static int check_base(const char *base, hy_err *err)
{
    struct statfs sf;
    struct stat st;
    if (statfs(base, &sf) < 0 || stat(base, &st) < 0)
        return hy_err_set(err, "%s: %s", base, strerror(errno));
    if (sf.f_type != CGROUP2_SUPER_MAGIC || !S_ISDIR(st.st_mode))
        return hy_err_set(err, "%s: not a cgroup2 directory", base);
    return writable(base, "cgroup.procs", err); /* moving a process out of it needs that */
}

int hy_cgroup_open(hy_cgroup *cg, const char *base, hy_err *err)
{
    char top[PATH_MAX];
    cg->top = NULL;
    if (check_base(base, err) < 0)
        return -1;
    int w = snprintf(top, sizeof top, "%s/hypha-%ld", strcmp(base, "/") ? base : "", (long)getpid());
    if (w < 0 || (size_t)w >= sizeof top)
        return hy_err_set(err, "%s: path too long", base);
    if (!(cg->adopt && access(top, F_OK) == 0) && hy_cgroup_make(top, err) < 0)
        return -1;
    char kill_file[PATH_MAX];
    if (file_in(top, "cgroup.kill", kill_file, sizeof kill_file, err) < 0 || access(kill_file, F_OK) < 0) {
        hy_err_set(err, "%s: no cgroup.kill (it came with Linux 5.14)", top);
        (void)rmdir(top);
        return -1;
    }
    if (writable(top, "cgroup.procs", err) < 0 || writable(top, "cgroup.kill", err) < 0) {
        (void)rmdir(top);
        return -1;
    }
    if (!(cg->top = strdup(top))) {
        (void)rmdir(top);
        return hy_err_set(err, "out of memory");
    }
    return 0;
}

/* rmdir `dir` after every directory below it (a worker may make cgroups of its own). */
static int remove_dirs(const char *dir, hy_err *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : hy_err_set(err, "%s: cannot read: %s", dir, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char sub[PATH_MAX];
        if (e->d_type != DT_DIR || strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (file_in(dir, e->d_name, sub, sizeof sub, err) < 0 || remove_dirs(sub, err) < 0)
            rc = -1;
    }
    closedir(d);
    return hy_cgroup_remove(dir, err) < 0 ? -1 : rc;
}

int hy_cgroup_remove_tree(const char *top, int timeout_ms, hy_err *err)
{
    if (hy_cgroup_kill(top, err) < 0 && errno == ENOENT)
        return 0; /* gone already */
    if (!hy_cgroup_wait_empty(top, timeout_ms))
        return hy_err_set(err, "%s: processes still in it after %d ms; not removed", top, timeout_ms);
    return remove_dirs(top, err);
}

int hy_cgroup_close(hy_cgroup *cg, int timeout_ms, hy_err *err)
{
    int rc = cg->top ? hy_cgroup_remove_tree(cg->top, timeout_ms, err) : 0;
    free(cg->top);
    cg->top = NULL;
    return rc;
}
