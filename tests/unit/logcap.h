/* logcap.h - hyphad's log captured in memory, for unit tests that check
 * what is logged and how often. Header-only: each test includes it once. */
#ifndef HYPHA_TEST_LOGCAP_H
#define HYPHA_TEST_LOGCAP_H

/* The including file defines _GNU_SOURCE first (open_memstream, strndup). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hypha/log.h"

typedef struct logcap {
    char *buf;
    size_t len;
    FILE *f;
} logcap;

/* Everything from HY_DEBUG up goes to l, as text. */
static inline void log_capture(logcap *l)
{
    l->buf = NULL;
    l->len = 0;
    l->f = open_memstream(&l->buf, &l->len);
    if (!l->f)
        abort();
    hy_log_init(l->f, HY_LOG_TEXT, HY_DEBUG);
}

/* The log so far (NUL-terminated). */
static inline const char *log_text(logcap *l)
{
    fflush(l->f);
    return l->buf ? l->buf : "";
}

/* How many times needle was logged so far. */
static inline int log_count(logcap *l, const char *needle)
{
    int n = 0;
    for (const char *p = log_text(l); (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* How many lines contain both a and b (each line with its "\n", so "x=1\n"
 * matches a last value exactly). */
static inline int log_count_lines(logcap *l, const char *a, const char *b)
{
    int n = 0;
    const char *p = log_text(l);
    while (*p) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char *line = strndup(p, len + (end ? 1 : 0));
        if (strstr(line, a) && strstr(line, b))
            n++;
        free(line);
        p += len + (end ? 1 : 0);
    }
    return n;
}

/* Forget what was captured so far (a new stream). */
static inline void log_reset(logcap *l)
{
    fclose(l->f);
    free(l->buf);
    log_capture(l);
}

static inline void log_release(logcap *l)
{
    hy_log_init(stderr, HY_LOG_TEXT, HY_INFO);
    fclose(l->f);
    free(l->buf);
}

#endif
