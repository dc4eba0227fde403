/* drops.h - why a frame was not routed or not delivered, counted in one
 * struct with one text form and one log rule.
 *
 * Every place that gives up on a frame counts it here, so "every frame is
 * delivered or counted with a reason" has one home. A counter logs at its
 * 1st, 10th, 100th ... drop (a flood stays readable), and the rule holds
 * when one push drops several frames at once.
 */
#ifndef HYPHA_DROPS_H
#define HYPHA_DROPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum hy_drop {
    HY_DROP_UNKNOWN_TYPE,  /* type id not in the contracts */
    HY_DROP_WRONG_SIZE,    /* payload size differs from the message's */
    HY_DROP_NOT_ALLOWED,   /* type not in the worker's `publish` list */
    HY_DROP_NOT_RUNNING,   /* for a subscriber that was not running */
    HY_DROP_EXITED,        /* queued for a worker that exited first */
    HY_DROP_NO_MEMORY,     /* its queue could not grow */
    HY_DROP_QUEUE_OLDEST,  /* queue.limit reached, drop-oldest */
    HY_DROP_QUEUE_NEWEST,  /* queue.limit reached, drop-newest */
    HY_DROP_HOLD_EXPIRED,  /* held for a restarting worker that was not back within queue.hold */
    HY_DROP_HOLD_CANCELLED, /* held for a restart that did not come (stopped, failed, removed, hyphad exiting) */
    HY_DROP__COUNT,
} hy_drop;

/* "unknown-type", ..., "queue-full-oldest", "queue-full-newest". */
const char *hy_drop_str(hy_drop d);

/* One counter per reason, and who they belong to (for the log line). */
typedef struct hy_drops {
    uint64_t n[HY_DROP__COUNT];
    const char *component;       /* "router" for workers, "relay" for peers */
    const char *k1, *v1, *k2, *v2; /* identity keys: worker/instance, or from */
} hy_drops;

void hy_drops_init(hy_drops *d, const char *component, const char *k1, const char *v1, const char *k2,
                   const char *v2);
/* Count n drops of `type_id` for `why`, logging "frame dropped" at the 1st,
 * 10th, 100th ... (queue-full reasons are logged by the queue's owner). */
void hy_drops_add(hy_drops *d, hy_drop why, uint16_t type_id, uint64_t n);
uint64_t hy_drops_total(const hy_drops *d);

/* Drops for a receiver (not-running, worker-exited, out-of-memory,
 * queue-full-*): frames meant for it that it never got. The others are
 * counted on the sender, about frames it sent. */
bool hy_drop_for_receiver(hy_drop d);

/* The last minute of a receiver's frames, for health's drop rule: its
 * counters sampled every HY_DROPWIN_STEP_S seconds (one timer for the whole
 * supervisor), the oldest of HY_DROPWIN_SLOTS samples the window's start,
 * so the window is 60 to 70 s long once full (since the instance was made
 * before that: its counters start at 0). Pure: the caller brings the clock.
 * Frames routed to it = those its queue accepted (the sink's `frames`) +
 * those dropped before they were queued (not-running, out-of-memory,
 * queue-full-newest); queue-full-oldest and worker-exited drop frames that
 * had been accepted. */
#define HY_DROPWIN_STEP_S 10.0
#define HY_DROPWIN_SLOTS 7

typedef struct hy_dropwin_sample {
    double at;                   /* the caller's clock */
    uint64_t accepted;           /* frames its queue accepted so far */
    uint64_t n[HY_DROP__COUNT];  /* its drop counters then */
} hy_dropwin_sample;

typedef struct hy_dropwin {
    hy_dropwin_sample s[HY_DROPWIN_SLOTS];
    unsigned head;               /* the next slot written */
    unsigned count;              /* samples held */
} hy_dropwin;

/* What happened since the window's start. */
typedef struct hy_dropwin_delta {
    double span_s;               /* how long the window is (0: no sample yet: since the counters began) */
    uint64_t routed;             /* frames meant for it: accepted + dropped before the queue */
    uint64_t dropped;            /* of them, dropped (receiver reasons) */
    hy_drop main;                /* the reason with most of them */
} hy_dropwin_delta;

void hy_dropwin_record(hy_dropwin *w, double now, uint64_t accepted, const hy_drops *d);
hy_dropwin_delta hy_dropwin_since(const hy_dropwin *w, double now, uint64_t accepted, const hy_drops *d);

/* The message name of a type id, for the "frame dropped" line beside
 * `type=2001` (`type_name=TradeTick`); NULL when the contracts have no such
 * id. The owner of the running contracts registers it (sup.c, whose lookup
 * follows reloads); without one, or for an unknown id, the line has no
 * name. One for the process: hyphad runs one supervisor. */
typedef const char *(*hy_type_namer)(const void *ud, uint16_t type_id);
void hy_drops_set_namer(hy_type_namer namer, const void *ud);
/* "reason=N" for each non-zero counter, joined by `sep` (",": the log's
 * counters line; " ": status notes); "none" when all are zero. Returns out. */
const char *hy_drops_format(const hy_drops *d, const char *sep, char *out, size_t len);

/* True when a counter going from `before` to `after` passed a power of ten
 * (1, 10, 100 ...): the shared "log at the 1st, 10th, 100th" rule. */
bool hy_log_mark(uint64_t before, uint64_t after);

/* One kind of warning about one peer (a worker's bad control frames, ...),
 * rate-limited by the same rule: a flood of them from one peer is a few
 * lines, each saying how many there were. One counter per peer and kind. */
typedef struct hy_warn_count {
    uint64_t total;  /* occurrences so far */
    uint64_t logged; /* `total` when the last line was logged (0: none yet) */
} hy_warn_count;

/* Count one occurrence. True when it is to be logged (the 1st, 10th,
 * 100th ...): the line carries c->total and *suppressed, the occurrences
 * since the previous line that were not logged. */
bool hy_warn_mark(hy_warn_count *c, uint64_t *suppressed);

/* A peer's value echoed into a log line: at most `max` bytes of s (cut back
 * to a UTF-8 character boundary) followed by "..." when longer, so one value
 * cannot make a line of megabytes. out holds at least max + 4 bytes.
 * Returns out. */
const char *hy_log_cut(char *out, size_t max, const char *s, size_t len);
#define HY_LOG_CUT 64 /* the usual `max`: enough to recognise a value */

/* Bytes a peer sent, shown in a log line: printable ASCII as it is (a
 * backslash doubled), any other byte as \xNN, and "…" after them when
 * `more` followed. out holds at least 4 * n + 4 bytes. Returns out. */
const char *hy_log_escape_bytes(char *out, const uint8_t *p, size_t n, bool more);
/* True when bytes look like text rather than frames: at least 3 in 4 of
 * them printable ASCII, tab, CR, LF or part of a valid UTF-8 character. */
bool hy_bytes_look_like_text(const uint8_t *p, size_t n);

#endif
