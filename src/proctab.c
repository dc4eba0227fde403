/* proctab.c - the process table, as /proc shows it (see hypha/proctab.h). */
#define _GNU_SOURCE
#include "hypha/proctab.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"

bool hy_proc_parse_stat(const char *line, hy_proc *p, char *state)
{
    const char *close = strrchr(line, ')');
    long pid, ppid, pgid;
    char st;
    if (!close || sscanf(line, "%ld", &pid) != 1 || sscanf(close + 1, " %c %ld %ld", &st, &ppid, &pgid) != 3)
        return false;
    *p = (hy_proc){(pid_t)pid, (pid_t)ppid, (pid_t)pgid};
    *state = st;
    return true;
}

/* /proc/PID/stat of one process: false when it is gone or a zombie. */
static bool read_stat(const char *name, hy_proc *p)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%s/stat", name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n;
    do {
        n = read(fd, buf, sizeof buf - 1);
    } while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    char st;
    return hy_proc_parse_stat(buf, p, &st) && st != 'Z' && st != 'X';
}

static int by_pid(const void *a, const void *b)
{
    const hy_proc *x = a, *y = b;
    return (x->pid > y->pid) - (x->pid < y->pid);
}

static bool add(hy_proctab *t, size_t *cap, const hy_proc *p)
{
    if (t->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 256;
        hy_proc *np = realloc(t->p, nc * sizeof *np);
        if (!np)
            return false;
        t->p = np;
        *cap = nc;
    }
    t->p[t->n++] = *p;
    return true;
}

int hy_proctab_read(hy_proctab *t, hy_err *err)
{
    size_t cap = 0;
    *t = (hy_proctab){NULL, 0};
    DIR *d = opendir("/proc");
    if (!d)
        return hy_err_set(err, "/proc: cannot read: %s", strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        hy_proc p;
        if (!isdigit((unsigned char)e->d_name[0]) || !read_stat(e->d_name, &p))
            continue;
        if (!add(t, &cap, &p)) {
            closedir(d);
            hy_proctab_free(t);
            return hy_err_set(err, "/proc: out of memory");
        }
    }
    closedir(d);
    if (t->n)
        qsort(t->p, t->n, sizeof *t->p, by_pid);
    return 0;
}

void hy_proctab_free(hy_proctab *t)
{
    free(t->p);
    *t = (hy_proctab){NULL, 0};
}

static long find(const hy_proctab *t, pid_t pid)
{
    hy_proc key = {.pid = pid};
    const hy_proc *p = t->n ? bsearch(&key, t->p, t->n, sizeof *t->p, by_pid) : NULL;
    return p ? (long)(p - t->p) : -1;
}

/* A pass per generation at most; a child usually has a higher pid than its
 * parent, so most trees take one. */
void hy_proctab_descendants(const hy_proctab *t, bool *take)
{
    bool changed = true;
    while (changed) {
        changed = false;
        for (size_t i = 0; i < t->n; i++) {
            if (take[i] || t->p[i].ppid == t->p[i].pid)
                continue;
            long j = find(t, t->p[i].ppid);
            if (j >= 0 && take[j])
                take[i] = changed = true;
        }
    }
}

char *hy_proc_environ(pid_t pid, size_t *len, hy_err *err)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/environ", (long)pid);
    return (char *)hy_read_file(path, len, 4u << 20, err);
}

const char *hy_env_find(const char *env, size_t len, const char *key)
{
    size_t kl = strlen(key);
    for (const char *p = env, *end = env + len; p < end; p += strnlen(p, (size_t)(end - p)) + 1)
        if ((size_t)(end - p) > kl && strncmp(p, key, kl) == 0 && p[kl] == '=')
            return p + kl + 1;
    return NULL;
}
