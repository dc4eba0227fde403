/* backoff.h - restart arithmetic, free of I/O and clocks.
 *
 * delay(n) = min(max, initial * factor^n), then scaled by a random factor in
 * [1 - jitter, 1 + jitter] so that workers that crash together do not restart
 * in lockstep. The give-up window remembers the last failures+1 exit times:
 * when all of them fall within `within`, the worker has failed more than
 * `failures` times in that window and is parked.
 */
#ifndef HYPHA_BACKOFF_H
#define HYPHA_BACKOFF_H

#include <stdbool.h>
#include <stdint.h>

#include "hypha/topology.h"

/* u in [-1, 1] is the jitter draw. */
uint64_t hy_backoff_delay_ms(const hy_policy *p, uint32_t n, double u);

/* Uniform in [-1, 1] from a xorshift state (never 0). */
double hy_rand_signed(uint64_t *state);

#define HY_GIVEUP_MAX 10001u /* failures are capped at 10000 by the loader */

typedef struct hy_giveup {
    uint64_t *times;   /* ring of exit times in ms (owned), size cap */
    uint32_t cap;      /* failures + 1 */
    uint32_t count;    /* entries held */
    uint32_t head;     /* next slot */
} hy_giveup;

/* 0, or -1 on allocation failure. failures == 0 means never give up. */
int hy_giveup_init(hy_giveup *g, uint32_t failures);
void hy_giveup_free(hy_giveup *g);
void hy_giveup_clear(hy_giveup *g);
/* Record an exit at now_ms; true when that makes more than `failures`
 * exits within `within_ms`. */
bool hy_giveup_record(hy_giveup *g, uint64_t now_ms, uint64_t within_ms);

#endif
