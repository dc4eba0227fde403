/* err.h - errors as values.
 *
 * Every fallible function in hypha takes an `hy_err *` and, on failure, writes
 * one human-readable sentence into it and returns -1 (or NULL). Nothing below
 * main() prints or exits. Messages about a file position read
 * `file:line:col: message` so editors and people can jump to the spot.
 */
#ifndef HYPHA_ERR_H
#define HYPHA_ERR_H

#include <stddef.h>

#define HY_ERR_MAX 1024

typedef struct hy_err {
    char msg[HY_ERR_MAX]; /* NUL-terminated; empty when no error was set */
} hy_err;

#if defined(__GNUC__)
#define HY_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define HY_PRINTF(a, b)
#endif

/* Set the message; returns -1 so callers can `return hy_err_set(...)`. */
int hy_err_set(hy_err *err, const char *fmt, ...) HY_PRINTF(2, 3);

/* Set `file:line:col: message`; line and col are 1-based. Returns -1. */
int hy_err_at(hy_err *err, const char *file, size_t line, size_t col,
              const char *fmt, ...) HY_PRINTF(5, 6);

#endif
