/* failstreak.c - a worker whose handler fails on (nearly) every message
 * (see hypha/failstreak.h). */
#include "hypha/failstreak.h"

static bool mostly_failing(uint64_t failed, uint64_t frames)
{
    return (double)failed >= HY_FAIL_SHARE * (double)frames;
}

void hy_failstreak_report(hy_failstreak *s, uint64_t failed, uint64_t frames, double now)
{
    bool gap = s->at == 0 || now - s->at > HY_FAIL_STALE_S;
    bool restarted = failed < s->failed || frames < s->frames; /* a new process counts from 0 */
    bool successes = !mostly_failing(failed - s->base_failed, frames - s->base_frames);
    if (gap || restarted || successes) {
        /* The failure that made the worker report is the streak's first:
         * it and the frame it came with are inside it. */
        s->base_failed = failed ? failed - 1 : 0;
        s->base_frames = frames ? frames - 1 : 0;
    }
    s->failed = failed;
    s->frames = frames;
    s->at = now;
}

bool hy_failstreak_failing(const hy_failstreak *s, double now, uint64_t *failed, uint64_t *frames)
{
    if (s->at == 0 || now - s->at > HY_FAIL_STALE_S)
        return false;
    *failed = s->failed - s->base_failed;
    *frames = s->frames - s->base_frames;
    return *failed >= HY_FAIL_MIN && mostly_failing(*failed, *frames);
}
