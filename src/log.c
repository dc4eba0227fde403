/* log.c - hyphad's line-oriented log (see hypha/log.h).
 *
 * Each event is built in one buffer and written with one fwrite on an
 * unbuffered-by-line stream, so lines from hyphad never interleave mid-line.
 */
#include "hypha/log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <string.h>

static FILE *log_out;
static hy_log_format log_fmt = HY_LOG_TEXT;
static hy_log_level log_min = HY_INFO;

#define LINE_MAX_BYTES 16384

typedef struct buf {
    char s[LINE_MAX_BYTES];
    size_t n;
} buf;

static void put(buf *b, const char *s, size_t len)
{
    if (b->n + len > sizeof b->s - 2)
        len = sizeof b->s - 2 - b->n;
    memcpy(b->s + b->n, s, len);
    b->n += len;
}

static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

static void put_json_str(buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    put(b, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(b, e, 2);
        } else if (c == '\n') {
            put(b, "\\n", 2);
        } else if (c == '\t') {
            put(b, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(b, e, 6);
        } else {
            put(b, (const char *)&c, 1);
        }
    }
    put(b, "\"", 1);
}

/* Text values: bare when plain, quoted (JSON-style escapes) otherwise. */
static void put_text_value(buf *b, const char *s)
{
    bool plain = *s != '\0';
    for (const char *p = s; *p; p++)
        if (*p == ' ' || *p == '"' || *p == '=' || (unsigned char)*p < 0x20)
            plain = false;
    if (plain)
        puts_(b, s);
    else
        put_json_str(b, s, strlen(s));
}

void hy_log_init(FILE *out, hy_log_format fmt, hy_log_level min)
{
    log_out = out;
    log_fmt = fmt;
    log_min = min;
}

hy_log_format hy_log_get_format(void) { return log_fmt; }

const char *hy_log_level_str(hy_log_level l)
{
    switch (l) {
    case HY_DEBUG: return "debug";
    case HY_INFO: return "info";
    case HY_WARN: return "warn";
    case HY_ERROR: return "error";
    }
    return "?";
}

static void emit(buf *b)
{
    b->s[b->n++] = '\n';
    /* Best effort: a log that cannot be written must not stop supervision. */
    if (fwrite(b->s, 1, b->n, log_out ? log_out : stderr) != b->n)
        clearerr(log_out ? log_out : stderr);
    fflush(log_out ? log_out : stderr);
}

void hy_log(hy_log_level level, const char *component, const char *msg, ...)
{
    if (level < log_min)
        return;
    buf b;
    b.n = 0;
    va_list ap;
    va_start(ap, msg);
    if (log_fmt == HY_LOG_JSON) {
        puts_(&b, "{\"level\":\"");
        puts_(&b, hy_log_level_str(level));
        puts_(&b, "\",\"component\":");
        put_json_str(&b, component, strlen(component));
        puts_(&b, ",\"msg\":");
        put_json_str(&b, msg, strlen(msg));
        const char *k;
        while ((k = va_arg(ap, const char *)) != NULL) {
            const char *v = va_arg(ap, const char *);
            put(&b, ",", 1);
            put_json_str(&b, k, strlen(k));
            put(&b, ":", 1);
            put_json_str(&b, v ? v : "", v ? strlen(v) : 0);
        }
        put(&b, "}", 1);
    } else {
        puts_(&b, hy_log_level_str(level));
        put(&b, " ", 1);
        puts_(&b, component);
        put(&b, " ", 1);
        puts_(&b, msg);
        const char *k;
        while ((k = va_arg(ap, const char *)) != NULL) {
            const char *v = va_arg(ap, const char *);
            put(&b, " ", 1);
            puts_(&b, k);
            put(&b, "=", 1);
            put_text_value(&b, v ? v : "");
        }
    }
    va_end(ap);
    emit(&b);
}

void hy_log_worker_line(const char *worker, unsigned instance, const char *line, size_t len,
                        size_t cut)
{
    if (HY_INFO < log_min)
        return;
    buf b;
    b.n = 0;
    char comp[128], inst[16], cutn[32];
    snprintf(comp, sizeof comp, "%s[%u]", worker, instance);
    snprintf(inst, sizeof inst, "%u", instance);
    snprintf(cutn, sizeof cutn, "%zu", cut);
    if (log_fmt == HY_LOG_JSON) {
        puts_(&b, "{\"level\":\"info\",\"component\":");
        put_json_str(&b, comp, strlen(comp));
        puts_(&b, ",\"worker\":");
        put_json_str(&b, worker, strlen(worker));
        puts_(&b, ",\"instance\":");
        put_json_str(&b, inst, strlen(inst));
        puts_(&b, ",\"msg\":");
        put_json_str(&b, line, len);
        if (cut) {
            puts_(&b, ",\"cut_bytes\":");
            put_json_str(&b, cutn, strlen(cutn));
        }
        put(&b, "}", 1);
    } else {
        puts_(&b, "info ");
        puts_(&b, comp);
        put(&b, " ", 1);
        /* Control characters would forge log lines: show them escaped. */
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)line[i];
            if (c < 0x20 && c != '\t') {
                char e[5];
                snprintf(e, sizeof e, "\\x%02x", c);
                put(&b, e, 4);
            } else {
                put(&b, (const char *)&c, 1);
            }
        }
        if (cut) {
            puts_(&b, " [cut: ");
            puts_(&b, cutn);
            puts_(&b, " more bytes]");
        }
    }
    emit(&b);
}
