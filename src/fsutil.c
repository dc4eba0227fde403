/* fsutil.c - small file-system helpers (see fsutil.h). */
#define _GNU_SOURCE
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
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

char *hy_path_join(const char *base, const char *rel)
{
    if (rel[0] == '/' || !base)
        return strdup(rel);
    size_t lb = strlen(base), lr = strlen(rel);
    char *out = malloc(lb + 1 + lr + 1);
    if (!out)
        return NULL;
    memcpy(out, base, lb);
    size_t n = lb;
    if (n == 0 || out[n - 1] != '/')
        out[n++] = '/';
    memcpy(out + n, rel, lr + 1);
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
