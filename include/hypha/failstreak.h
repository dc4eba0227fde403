/* failstreak.h - "its handler raises on every message": the failures a
 * worker reports (the SDK's `stats` control frame, at most once a second)
 * against the frames hyphad wrote it, over a streak. Pure; health.c judges
 * on it. */
#ifndef HYPHA_FAILSTREAK_H
#define HYPHA_FAILSTREAK_H

#include <stdbool.h>
#include <stdint.h>

#define HY_FAIL_MIN 10       /* failures in a streak before it counts */
#define HY_FAIL_SHARE 0.9    /* of the frames written meanwhile */
#define HY_FAIL_STALE_S 60.0 /* a streak with no report for this long is over */

typedef struct hy_failstreak {
    uint64_t base_failed, base_frames; /* where the streak began */
    uint64_t failed, frames;           /* the last report */
    double at;                         /* its time; 0: no streak */
} hy_failstreak;

/* A report: the worker's failures so far, and the frames written to it so
 * far. A streak begins, goes on, or (a share of successes, or a gap) starts
 * again from here. */
void hy_failstreak_report(hy_failstreak *s, uint64_t failed, uint64_t frames, double now);

/* Nearly every message fails: at least HY_FAIL_MIN failures since the
 * streak began, HY_FAIL_SHARE of the frames written meanwhile, and a
 * report in the last HY_FAIL_STALE_S. *failed, *frames: the streak's. */
bool hy_failstreak_failing(const hy_failstreak *s, double now, uint64_t *failed, uint64_t *frames);

#endif
