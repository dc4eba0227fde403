/* fsutil.c - small file-system helpers (see fsutil.h). */
#define _GNU_SOURCE
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

uint8_t *hy_read_file(const char *path, size_t *len, size_t limit, hy_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        hy_err_set(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        hy_err_set(err, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        hy_err_set(err, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if ((uint64_t)st.st_size > limit) {
        hy_err_set(err, "%s: too large (%lld bytes, limit %zu)", path, (long long)st.st_size, limit);
        close(fd);
        return NULL;
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) {
        hy_err_set(err, "%s: out of memory", path);
        close(fd);
        return NULL;
    }
    for (;;) {
        if (n + 1 >= cap) {
            /* The file grew while we read it; keep going up to the limit. */
            if (cap > limit) {
                hy_err_set(err, "%s: too large (limit %zu)", path, limit);
                goto fail;
            }
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                hy_err_set(err, "%s: out of memory", path);
                goto fail;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            hy_err_set(err, "%s: read failed: %s", path, strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *len = n;
    return buf;
fail:
    free(buf);
    close(fd);
    return NULL;
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
