/* err.c - formatting of error values (see hypha/err.h). */
#include "hypha/err.h"

#include <stdarg.h>
#include <stdio.h>

int hy_err_set(hy_err *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int hy_err_at(hy_err *err, const char *file, size_t line, size_t col,
              const char *fmt, ...)
{
    if (!err)
        return -1;
    int n = snprintf(err->msg, sizeof err->msg, "%s:%zu:%zu: ", file, line, col);
    if (n < 0 || (size_t)n >= sizeof err->msg)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg + n, sizeof err->msg - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}
