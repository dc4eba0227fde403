/* log.c - hyphad's line-oriented log (see hypha/log.h).
 *
 * Each event is built in one buffer and written with one fwrite on an
 * unbuffered-by-line stream, so lines from hyphad never interleave mid-line.
 */
#include "hypha/log.h"
#include "hypha/utf8.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

static FILE *log_out;
static hy_log_format log_fmt = HY_LOG_TEXT;
static hy_log_level log_min = HY_INFO;

/* Room for a worker line of HY_ERRLINE_MAX bytes escaped at worst (6x),
 * plus the event's keys. */
#define LINE_MAX_BYTES 65536
#define TAIL_RESERVE 64 /* closing quote/brace/newline always fit */

typedef struct buf {
    char s[LINE_MAX_BYTES];
    size_t n;
    bool full; /* content was dropped to keep the line well-formed */
} buf;

static bool room(const buf *b, size_t len) { return b->n + len + TAIL_RESERVE <= sizeof b->s; }

static void put(buf *b, const char *s, size_t len)
{
    if (!room(b, len)) {
        b->full = true;
        len = sizeof b->s - TAIL_RESERVE > b->n ? sizeof b->s - TAIL_RESERVE - b->n : 0;
    }
    memcpy(b->s + b->n, s, len);
    b->n += len;
}

/* Bytes needed to close what is open: the rest of a line always fits. */
static void put_tail(buf *b, const char *s)
{
    size_t len = strlen(s);
    if (b->n + len > sizeof b->s - 1)
        len = sizeof b->s - 1 - b->n;
    memcpy(b->s + b->n, s, len);
    b->n += len;
}

static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

/* A JSON string: escaped, invalid UTF-8 replaced by U+FFFD, and never cut
 * inside an escape (when the line is full the string just ends early). */
static void put_json_str(buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    put_tail(b, "\"");
    for (size_t i = 0; i < len && !b->full;) {
        unsigned char c = (unsigned char)s[i];
        char e[8];
        size_t elen, adv = 1;
        if (c == '"' || c == '\\') {
            e[0] = '\\';
            e[1] = (char)c;
            elen = 2;
        } else if (c == '\n') {
            memcpy(e, "\\n", 2);
            elen = 2;
        } else if (c == '\t') {
            memcpy(e, "\\t", 2);
            elen = 2;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(e, "\\u00", 4);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            elen = 6;
        } else if (c < 0x80) {
            e[0] = (char)c;
            elen = 1;
        } else if ((adv = hy_utf8_seq((const uint8_t *)s + i, len - i)) > 0) {
            memcpy(e, s + i, adv);
            elen = adv;
        } else {
            memcpy(e, "\xef\xbf\xbd", 3); /* U+FFFD */
            elen = 3;
            adv = 1;
        }
        if (!room(b, elen)) {
            b->full = true;
            break;
        }
        put(b, e, elen);
        i += adv;
    }
    put_tail(b, "\"");
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

/* A JSON line's first key: `{"time":"2026-12-01T12:00:00.123Z",` (RFC 3339,
 * UTC, milliseconds). Text lines have none: journald and container runtimes
 * stamp each line they collect. A clock that cannot be read leaves the key
 * out rather than the line. */
static void put_json_open(buf *b)
{
    struct timespec ts;
    struct tm tm;
    char stamp[48];
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0 && gmtime_r(&ts.tv_sec, &tm) &&
        strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm) > 0) {
        char ms[8];
        snprintf(ms, sizeof ms, ".%03ldZ", ts.tv_nsec / 1000000);
        puts_(b, "{\"time\":\"");
        puts_(b, stamp);
        puts_(b, ms);
        puts_(b, "\",");
    } else {
        puts_(b, "{");
    }
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

int hy_log_level_parse(const char *s, hy_log_level *out)
{
    for (hy_log_level l = HY_DEBUG; l <= HY_ERROR; l++)
        if (strcmp(s, hy_log_level_str(l)) == 0) {
            *out = l;
            return 0;
        }
    return -1;
}

static void emit(buf *b)
{
    if (b->n >= sizeof b->s)
        b->n = sizeof b->s - 1;
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
    static buf b; /* 64 KiB: not on the stack; hyphad is single-threaded */
    b.n = 0;
    b.full = false;
    va_list ap;
    va_start(ap, msg);
    if (log_fmt == HY_LOG_JSON) {
        put_json_open(&b);
        puts_(&b, "\"level\":\"");
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
        put_tail(&b, "}");
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

/* A level at the start of a worker's line: an sd-daemon(3) priority
 * ("<4>...", as systemd reads it) or a Python logging level name and a
 * space ("WARNING ...", as hypha's worker.log writes it). The level word
 * goes; an sd-daemon prefix goes too. Anything else is info, whole. */
static const struct {
    const char *word;
    size_t len;
    hy_log_level level;
} level_words[] = {
    {"DEBUG ", 6, HY_DEBUG}, {"INFO ", 5, HY_INFO},     {"WARNING ", 8, HY_WARN},
    {"ERROR ", 6, HY_ERROR}, {"CRITICAL ", 9, HY_ERROR},
};

hy_log_level hy_log_line_level(const char *line, size_t len, size_t *skip)
{
    *skip = 0;
    if (len >= 3 && line[0] == '<' && line[1] >= '0' && line[1] <= '7' && line[2] == '>') {
        *skip = 3;
        int p = line[1] - '0';
        return p <= 3 ? HY_ERROR : p == 4 ? HY_WARN : p == 7 ? HY_DEBUG : HY_INFO;
    }
    for (size_t i = 0; i < sizeof level_words / sizeof level_words[0]; i++)
        if (len > level_words[i].len && memcmp(line, level_words[i].word, level_words[i].len) == 0) {
            *skip = level_words[i].len;
            return level_words[i].level;
        }
    return HY_INFO;
}

void hy_log_worker_line(const char *worker, unsigned instance, const char *line, size_t len,
                        size_t cut)
{
    size_t skip;
    hy_log_level level = hy_log_line_level(line, len, &skip);
    if (level < log_min)
        return;
    line += skip;
    len -= skip;
    static buf b;
    b.n = 0;
    b.full = false;
    char comp[128], inst[16], cutn[32];
    snprintf(comp, sizeof comp, "%s[%u]", worker, instance);
    snprintf(inst, sizeof inst, "%u", instance);
    snprintf(cutn, sizeof cutn, "%zu", cut);
    if (log_fmt == HY_LOG_JSON) {
        put_json_open(&b);
        puts_(&b, "\"level\":\"");
        puts_(&b, hy_log_level_str(level));
        puts_(&b, "\",\"component\":");
        put_json_str(&b, comp, strlen(comp));
        puts_(&b, ",\"worker\":");
        put_json_str(&b, worker, strlen(worker));
        puts_(&b, ",\"instance\":");
        put_json_str(&b, inst, strlen(inst));
        puts_(&b, ",\"msg\":");
        put_json_str(&b, line, len);
        if (cut) {
            put_tail(&b, ",\"cut_bytes\":");
            put_tail(&b, "\"");
            put_tail(&b, cutn);
            put_tail(&b, "\"");
        }
        put_tail(&b, "}");
    } else {
        puts_(&b, hy_log_level_str(level));
        puts_(&b, " ");
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

const char *hy_log_u64(char out[24], uint64_t v)
{
    snprintf(out, 24, "%llu", (unsigned long long)v);
    return out;
}

const char *hy_log_i64(char out[24], int64_t v)
{
    snprintf(out, 24, "%lld", (long long)v);
    return out;
}
