/* testdir.c - the unit tests' scratch directory (see testdir.h). */
#define _GNU_SOURCE
#include "testdir.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int hy_test_mkdtemp(const char *name, char out[PATH_MAX])
{
    char tmpl[128];
    snprintf(tmpl, sizeof tmpl, "/tmp/hypha-%s-XXXXXX", name);
    return mkdtemp(tmpl) && realpath(tmpl, out) ? 0 : -1;
}

int hy_test_copy_vector(const char *dir, const char *vector, const char *as)
{
    char src[PATH_MAX + 64], dst[PATH_MAX + 64];
    const char *vec = getenv("HYPHA_VECTORS");
    if (vec && *vec) {
        snprintf(src, sizeof src, "%s/%s", vec, vector);
    } else { /* tests/unit/testdir.c -> tests/vectors: run outside ctest */
        snprintf(src, sizeof src, "%s", __FILE__);
        char *slash = strrchr(src, '/');
        if (slash)
            *slash = '\0';
        slash = strrchr(src, '/');
        if (slash)
            *slash = '\0';
        size_t n = strlen(src);
        snprintf(src + n, sizeof src - n, "/vectors/%s", vector);
    }
    snprintf(dst, sizeof dst, "%s/%s", dir, as);
    FILE *in = fopen(src, "rb");
    if (!in) {
        fprintf(stderr, "cannot open %s\n", src);
        return -1;
    }
    FILE *out = fopen(dst, "wb");
    if (!out) {
        fclose(in);
        return -1;
    }
    char buf[8192];
    size_t n;
    int rc = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            rc = -1;
    fclose(in);
    return fclose(out) == 0 ? rc : -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int hy_test_rmtree(const char *dir)
{
    return dir[0] ? nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) : 0;
}
