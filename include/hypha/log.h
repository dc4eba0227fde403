/* log.h - hyphad's log: one line per event on stderr.
 *
 * Text: `level component message key=value ...` (values with spaces or
 * quotes are quoted), without a time: journald and container runtimes stamp
 * each line. JSON (--log-format json): one object per line with "time"
 * first (RFC 3339, UTC, milliseconds: "2026-12-01T12:00:00.123Z"), then
 * "level", "component", "msg" and the keys. Keys and values are passed as NULL-terminated pairs of
 * strings so callers format numbers themselves and nothing allocates.
 */
#ifndef HYPHA_LOG_H
#define HYPHA_LOG_H

#include <stdint.h>
#include <stdio.h>

typedef enum hy_log_level { HY_DEBUG, HY_INFO, HY_WARN, HY_ERROR } hy_log_level;
typedef enum hy_log_format { HY_LOG_TEXT, HY_LOG_JSON } hy_log_format;

void hy_log_init(FILE *out, hy_log_format fmt, hy_log_level min);
hy_log_format hy_log_get_format(void);

/* hy_log(HY_INFO, "supervisor", "worker exited", "worker", "risk",
 *        "status", "1", NULL) */
void hy_log(hy_log_level level, const char *component, const char *msg, ...);

/* A worker's stderr line: component "name[instance]", worker/instance keys
 * in JSON. `cut` > 0 marks a line cut at the limit, that many bytes dropped.
 * Its level comes from the line's start (hy_log_line_level). */
void hy_log_worker_line(const char *worker, unsigned instance, const char *line,
                        size_t len, size_t cut);

/* The level a worker's line starts with: "<0>".."<7>" (sd-daemon(3)
 * priorities) or "DEBUG ", "INFO ", "WARNING ", "ERROR ", "CRITICAL "
 * (Python's logging); *skip is how many bytes that prefix takes. Info, and
 * *skip 0, for any other line. */
hy_log_level hy_log_line_level(const char *line, size_t len, size_t *skip);

const char *hy_log_level_str(hy_log_level l);
/* "debug", "info", "warn", "error" (as hy_log_level_str names them) into
 * *out: 0, or -1 for any other word (*out unchanged). */
int hy_log_level_parse(const char *s, hy_log_level *out);

/* An integer as a log value, formatted into a compound literal that lives
 * to the end of the enclosing block: hy_log(..., "pid", HY_I64(pid), NULL). */
#define HY_U64(v) hy_log_u64((char[24]){0}, (uint64_t)(v))
#define HY_I64(v) hy_log_i64((char[24]){0}, (int64_t)(v))
const char *hy_log_u64(char out[24], uint64_t v);
const char *hy_log_i64(char out[24], int64_t v);

#endif
