/* fsutil.c - small file-system helpers (see fsutil.h). */
#define _GNU_SOURCE
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* hy_read_file's failure: the message set, fd closed, errno `e` kept (what
 * a caller shows: hy_err_set and close may change errno). */
static uint8_t *read_fail(int fd, uint8_t *buf, int e)
{
    free(buf);
    if (fd >= 0)
        close(fd);
    errno = e;
    return NULL;
}

uint8_t *hy_read_file(const char *path, size_t *len, size_t limit, hy_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int e = errno;
    if (fd < 0) {
        hy_err_set(err, "%s: cannot open: %s", path, strerror(e));
        return read_fail(-1, NULL, e);
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        e = errno;
        hy_err_set(err, "%s: cannot stat: %s", path, strerror(e));
        return read_fail(fd, NULL, e);
    }
    if (!S_ISREG(st.st_mode)) {
        hy_err_set(err, "%s: not a regular file", path);
        return read_fail(fd, NULL, S_ISDIR(st.st_mode) ? EISDIR : EINVAL);
    }
    if ((uint64_t)st.st_size > limit) {
        hy_err_set(err, "%s: too large (%lld bytes, limit %zu)", path, (long long)st.st_size, limit);
        return read_fail(fd, NULL, EFBIG);
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) {
        hy_err_set(err, "%s: out of memory", path);
        return read_fail(fd, NULL, ENOMEM);
    }
    for (;;) {
        if (n + 1 >= cap) {
            /* The file grew while we read it; keep going up to the limit. */
            if (cap > limit) {
                hy_err_set(err, "%s: too large (limit %zu)", path, limit);
                return read_fail(fd, buf, EFBIG);
            }
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                hy_err_set(err, "%s: out of memory", path);
                return read_fail(fd, buf, ENOMEM);
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            e = errno;
            hy_err_set(err, "%s: read failed: %s", path, strerror(e));
            return read_fail(fd, buf, e);
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *len = n;
    return buf;
}

int hy_write_file(const char *path, const char *text, hy_err *err)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        hy_err_set(err, "%s: cannot open: %s", path, strerror(e));
        errno = e;
        return -1;
    }
    size_t len = strlen(text);
    ssize_t w;
    do {
        w = write(fd, text, len);
    } while (w < 0 && errno == EINTR);
    int e = w < 0 ? errno : EIO;
    close(fd);
    if (w != (ssize_t)len) {
        hy_err_set(err, "%s: cannot write: %s", path, w < 0 ? strerror(e) : "short write");
        errno = e;
        return -1;
    }
    return 0;
}

/* Lexical clean-up in place: "//" -> "/", "/./" -> "/", "a/../" -> "",
 * no trailing "/". Symlinks are not consulted (the path may not exist yet). */
static void clean_path(char *p)
{
    bool abs = p[0] == '/';
    char *out = p, *s = p;
    char *starts[2049]; /* where each kept segment begins in out */
    size_t nseg = 0;
    if (strlen(p) > 4096)
        return; /* longer than PATH_MAX: left as it is, the OS will refuse it */
    if (abs)
        *out++ = '/';
    while (*s) {
        while (*s == '/')
            s++;
        if (!*s)
            break;
        char *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == 1 && s[0] == '.') {
            /* skip */
        } else if (len == 2 && s[0] == '.' && s[1] == '.' && nseg > 0 &&
                   !(out - starts[nseg - 1] == 2 && starts[nseg - 1][0] == '.' &&
                     starts[nseg - 1][1] == '.')) {
            out = starts[--nseg];
            if (out > p + (abs ? 1 : 0))
                out--; /* the '/' before the dropped segment */
        } else if (len == 2 && s[0] == '.' && s[1] == '.' && abs && nseg == 0) {
            /* "/.." is "/" */
        } else {
            if (out > p + (abs ? 1 : 0))
                *out++ = '/';
            starts[nseg++] = out;
            memmove(out, s, len);
            out += len;
        }
        s += len;
    }
    if (out == p)
        *out++ = '.';
    *out = '\0';
}

char *hy_path_join(const char *base, const char *rel)
{
    char *out;
    if (rel[0] == '/' || !base) {
        out = strdup(rel);
    } else {
        size_t lb = strlen(base), lr = strlen(rel);
        out = malloc(lb + 1 + lr + 1);
        if (out) {
            memcpy(out, base, lb);
            out[lb] = '/';
            memcpy(out + lb + 1, rel, lr + 1);
        }
    }
    if (out)
        clean_path(out);
    return out;
}

char *hy_dir_of(const char *path, hy_err *err)
{
    char *copy = strdup(path);
    if (!copy) {
        hy_err_set(err, "out of memory");
        return NULL;
    }
    char *slash = strrchr(copy, '/');
    const char *dir;
    if (!slash)
        dir = ".";
    else if (slash == copy)
        dir = "/";
    else {
        *slash = '\0';
        dir = copy;
    }
    char *abs = realpath(dir, NULL);
    if (!abs)
        hy_err_set(err, "%s: cannot resolve directory %s: %s", path, dir, strerror(errno));
    free(copy);
    return abs;
}

int hy_mkdir_parents(const char *path, unsigned mode)
{
    char *copy = strdup(path);
    if (!copy)
        return -1;
    char *last = strrchr(copy, '/');
    for (char *p = copy + 1; last && p <= last; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(copy, (mode_t)mode) < 0 && errno != EEXIST) {
            int e = errno;
            free(copy);
            errno = e;
            return -1;
        }
        *p = '/';
    }
    free(copy);
    return 0;
}

/* "uid 65534 (nobody)" */
static void owner_str(uid_t uid, char *out, size_t len)
{
    struct passwd *pw = getpwuid(uid);
    if (pw && pw->pw_name)
        snprintf(out, len, "uid %u (%s)", (unsigned)uid, pw->pw_name);
    else
        snprintf(out, len, "uid %u", (unsigned)uid);
}

int hy_private_socket_dir(const char *path, bool strict, const char *what, hy_err *err)
{
    char *dir = strdup(path);
    if (!dir)
        return hy_err_set(err, "%s %s: out of memory", what, path);
    char *slash = strrchr(dir, '/');
    if (!slash) { /* relative, in the current directory: topology.c makes paths absolute */
        free(dir);
        return 0;
    }
    if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    /* Made by hyphad: 0700 (hyphad serves its own uid and root only, so
     * nobody else needs to reach inside). */
    if (hy_mkdir_parents(path, 0700) < 0) {
        hy_err_set(err, "%s %s: cannot create its directory %s: %s", what, path, dir, strerror(errno));
        free(dir);
        return -1;
    }
    struct stat st;
    /* The default directory must be a directory of its own, not a link to
     * one; a configured path may go through links the operator made. */
    int rc = strict ? lstat(dir, &st) : stat(dir, &st);
    if (rc < 0) {
        hy_err_set(err, "%s %s: cannot stat its directory %s: %s", what, path, dir, strerror(errno));
        free(dir);
        return -1;
    }
    uid_t me = geteuid();
    char owner[96], mine[96];
    owner_str(st.st_uid, owner, sizeof owner);
    owner_str(me, mine, sizeof mine);
    unsigned mode = (unsigned)(st.st_mode & 07777);
    const char *bad = NULL;
    char fix[512] = "";
    if (!S_ISDIR(st.st_mode)) {
        bad = "is not a directory";
        snprintf(fix, sizeof fix, "remove it (rm %s) if you did not make it", dir);
    } else if (strict ? st.st_uid != me : st.st_uid != me && st.st_uid != 0) {
        bad = strict ? "is not owned by hyphad's user" : "is owned by another user than hyphad's or root";
        snprintf(fix, sizeof fix,
                 "another user may have made it to take over the socket: remove it (as root: rm -r %s) so that "
                 "hyphad makes it, or set control.socket to a directory %s owns",
                 dir, mine);
    } else if (strict ? (st.st_mode & (S_IWGRP | S_IWOTH)) != 0
                      : (st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX)) {
        bad = strict ? "is writable by group or others" : "is writable by others (and not sticky)";
        snprintf(fix, sizeof fix, "anyone who can write there can replace the socket: chmod %s %s", strict ? "go-w" : "o-w",
                 dir);
    }
    if (bad) {
        hy_err_set(err,
                   "%s %s: refusing its directory %s (owner %s, mode %04o): it %s; it must be owned by %s%s and %s; "
                   "%s",
                   what, path, dir, owner, mode, bad, mine, strict ? "" : " or root",
                   strict ? "not writable by group or others" : "not writable by others unless sticky", fix);
        free(dir);
        return -1;
    }
    free(dir);
    return 0;
}

int hy_unix_listen(const char *path, const char *what, hy_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return hy_err_set(err, "%s %s: socket path too long (%zu bytes, at most %zu)", what, path, strlen(path),
                          sizeof sa.sun_path - 1);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (hy_mkdir_parents(path, 0755) < 0)
        return hy_err_set(err, "%s %s: cannot create its directory: %s", what, path, strerror(errno));
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return hy_err_set(err, "%s %s: exists and is not a socket; not removing it", what, path);
        /* A socket file: in use if something answers, else a stale leftover. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0)
            return hy_err_set(err, "%s %s: socket: %s", what, path, strerror(errno));
        int in_use = connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
        close(probe);
        if (in_use)
            return hy_err_set(err, "%s %s: another process is serving this socket", what, path);
        if (unlink(path) < 0)
            return hy_err_set(err, "%s %s: cannot remove the stale socket: %s", what, path, strerror(errno));
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return hy_err_set(err, "%s %s: socket: %s", what, path, strerror(errno));
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        hy_err_set(err, "%s %s: bind: %s", what, path, strerror(errno));
        close(fd);
        return -1;
    }
    if (listen(fd, 128) < 0) {
        hy_err_set(err, "%s %s: %s", what, path, strerror(errno));
        close(fd);
        (void)unlink(path);
        return -1;
    }
    return fd;
}
