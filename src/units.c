/* units.c - durations ("1m30s") and sizes ("8MiB") of topology files.
 * Pure parsing and formatting; see hypha/units.h for the notation. */
#include "hypha/units.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int fail(char *why, size_t whylen, const char *msg)
{
    if (why && whylen)
        snprintf(why, whylen, "%s", msg);
    return -1;
}

enum { NUM_OK = 0, NUM_NONE = -1, NUM_BIG = -2, NUM_DECIMALS = -3 };

/* Read "123" or "1.25" at *p into an integer part and a fraction in
 * millionths (at most 6 decimals). */
static int read_number(const char **p, uint64_t *whole, uint64_t *micro)
{
    const char *s = *p;
    uint64_t w = 0, f = 0, scale = 100000;
    int digits = 0;
    while (isdigit((unsigned char)*s)) {
        uint64_t d = (uint64_t)(*s - '0');
        if (w > (UINT64_MAX - d) / 10)
            return NUM_BIG;
        w = w * 10 + d;
        s++;
        digits++;
    }
    if (digits == 0)
        return NUM_NONE;
    if (*s == '.') {
        s++;
        int fd = 0;
        while (isdigit((unsigned char)*s)) {
            if (++fd > 6)
                return NUM_DECIMALS;
            f += (uint64_t)(*s - '0') * scale;
            scale /= 10;
            s++;
        }
        if (fd == 0)
            return NUM_NONE;
    }
    *whole = w;
    *micro = f;
    *p = s;
    return NUM_OK;
}

static int number_fail(int rc, char *why, size_t whylen, const char *expected)
{
    if (rc == NUM_BIG)
        return fail(why, whylen, "number too large");
    if (rc == NUM_DECIMALS)
        return fail(why, whylen, "at most 6 decimals");
    return fail(why, whylen, expected);
}

int hy_parse_duration_ms(const char *s, uint64_t *out, char *why, size_t whylen)
{
    static const struct { const char *u; uint64_t ms; } units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
    };
    if (!s || !*s)
        return fail(why, whylen, "empty duration");
    if (strcmp(s, "0") == 0) {
        *out = 0;
        return 0;
    }
    const char *p = s;
    uint64_t total_us = 0;
    while (*p) {
        uint64_t whole, micro;
        int rc = read_number(&p, &whole, &micro);
        if (rc < 0)
            return number_fail(rc, why, whylen,
                               "expected a number followed by a unit (ms, s, m, h, d), e.g. 100ms or 5s");
        size_t ulen = 0;
        while (isalpha((unsigned char)p[ulen]))
            ulen++;
        if (ulen == 0 && *p == ' ')
            return fail(why, whylen, "no space between number and unit: write 5s, not 5 s");
        if (ulen == 0)
            return fail(why, whylen, "missing unit (ms, s, m, h, d), e.g. 5s");
        uint64_t ms = 0;
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
            if (strlen(units[i].u) == ulen && strncmp(p, units[i].u, ulen) == 0)
                ms = units[i].ms;
        if (!ms)
            return fail(why, whylen, "unknown unit (use ms, s, m, h or d)");
        p += ulen;
        /* whole*ms*1000 + micro*ms/1000, in microseconds, overflow-checked */
        uint64_t frac_us = micro * ms / 1000;
        if (whole > UINT64_MAX / 1000 / ms || whole * ms * 1000 > UINT64_MAX - frac_us)
            return fail(why, whylen, "duration too large");
        uint64_t us = whole * ms * 1000 + frac_us;
        if (total_us > UINT64_MAX - us)
            return fail(why, whylen, "duration too large");
        total_us += us;
    }
    if (total_us % 1000)
        return fail(why, whylen, "durations are counted in whole milliseconds");
    *out = total_us / 1000;
    return 0;
}

int hy_parse_size(const char *s, uint64_t *out, char *why, size_t whylen)
{
    static const struct { const char *u; uint64_t mul; } units[] = {
        {"B", 1}, {"KiB", 1024ull}, {"MiB", 1024ull * 1024}, {"GiB", 1024ull * 1024 * 1024},
        {"KB", 1000ull}, {"MB", 1000000ull}, {"GB", 1000000000ull},
    };
    if (!s || !*s)
        return fail(why, whylen, "empty size");
    const char *p = s;
    uint64_t whole, micro;
    int rc = read_number(&p, &whole, &micro);
    if (rc < 0)
        return number_fail(rc, why, whylen,
                           "expected a number with an optional unit (B, KiB, MiB, GiB, KB, MB, GB), e.g. 8MiB");
    while (*p == ' ')
        p++;
    uint64_t mul = 0;
    if (*p == '\0') {
        mul = 1;
    } else {
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
            if (strcmp(p, units[i].u) == 0)
                mul = units[i].mul;
        if (!mul)
            return fail(why, whylen, "unknown unit (use B, KiB, MiB, GiB, KB, MB or GB)");
    }
    uint64_t frac = micro * mul; /* in millionths of a byte */
    if (frac % 1000000)
        return fail(why, whylen, "size is not a whole number of bytes");
    if (whole > UINT64_MAX / mul || whole * mul > UINT64_MAX - frac / 1000000)
        return fail(why, whylen, "size too large");
    *out = whole * mul + frac / 1000000;
    return 0;
}

char *hy_format_duration(uint64_t ms, char *out, size_t outlen)
{
    if (ms == 0) {
        snprintf(out, outlen, "0s");
        return out;
    }
    static const struct { const char *u; uint64_t ms; } units[] = {
        {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1},
    };
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof units / sizeof units[0] && ms; i++) {
        if (ms >= units[i].ms) {
            uint64_t k = ms / units[i].ms;
            ms %= units[i].ms;
            if (n >= outlen)
                break;
            int w = snprintf(out + n, outlen - n, "%" PRIu64 "%s", k, units[i].u);
            if (w < 0)
                break;
            n += (size_t)w;
        }
    }
    return out;
}

char *hy_format_size(uint64_t bytes, char *out, size_t outlen)
{
    if (bytes && bytes % (1024ull * 1024 * 1024) == 0)
        snprintf(out, outlen, "%" PRIu64 "GiB", (uint64_t)(bytes / (1024ull * 1024 * 1024)));
    else if (bytes && bytes % (1024ull * 1024) == 0)
        snprintf(out, outlen, "%" PRIu64 "MiB", (uint64_t)(bytes / (1024ull * 1024)));
    else if (bytes && bytes % 1024 == 0)
        snprintf(out, outlen, "%" PRIu64 "KiB", bytes / 1024);
    else
        snprintf(out, outlen, "%" PRIu64 "B", bytes);
    return out;
}

char *hy_format_age(double s, char *out, size_t outlen)
{
    if (!(s > 0)) /* negative (clock step) or NaN */
        s = 0;
    if (s < 60)
        snprintf(out, outlen, "%.1fs", s);
    else if (s < 3600)
        snprintf(out, outlen, "%dm%02ds", (int)s / 60, (int)s % 60);
    else if (s < 86400)
        snprintf(out, outlen, "%dh%02dm", (int)s / 3600, (int)s % 3600 / 60);
    else
        snprintf(out, outlen, "%dd%02dh", (int)(s / 86400), (int)s % 86400 / 3600);
    return out;
}

char *hy_format_bytes(uint64_t n, char *out, size_t outlen)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double b = (double)n;
    int i = 0;
    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    snprintf(out, outlen, i ? "%.1f %s" : "%.0f %s", b, unit[i]);
    return out;
}
