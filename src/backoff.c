/* backoff.c - restart delays and the give-up window (see hypha/backoff.h). */
#include "hypha/backoff.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

uint64_t hy_backoff_delay_ms(const hy_policy *p, uint32_t n, double u)
{
    double d = (double)p->backoff_initial_ms * pow(p->backoff_factor, (double)n);
    if (!(d < (double)p->backoff_max_ms)) /* also catches inf */
        d = (double)p->backoff_max_ms;
    if (u < -1.0)
        u = -1.0;
    if (u > 1.0)
        u = 1.0;
    d *= 1.0 + p->backoff_jitter * u;
    if (d < 0)
        d = 0;
    return (uint64_t)llround(d);
}

double hy_rand_signed(uint64_t *state)
{
    uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return (double)(x >> 11) / (double)(1ull << 53) * 2.0 - 1.0;
}

int hy_giveup_init(hy_giveup *g, uint32_t failures)
{
    memset(g, 0, sizeof *g);
    if (failures == 0)
        return 0;
    if (failures >= HY_GIVEUP_MAX)
        failures = HY_GIVEUP_MAX - 1;
    g->cap = failures + 1;
    g->times = calloc(g->cap, sizeof *g->times);
    return g->times ? 0 : -1;
}

void hy_giveup_free(hy_giveup *g)
{
    free(g->times);
    memset(g, 0, sizeof *g);
}

void hy_giveup_clear(hy_giveup *g)
{
    g->count = 0;
    g->head = 0;
}

bool hy_giveup_record(hy_giveup *g, uint64_t now_ms, uint64_t within_ms)
{
    if (g->cap == 0)
        return false;
    g->times[g->head] = now_ms;
    g->head = (g->head + 1) % g->cap;
    if (g->count < g->cap)
        g->count++;
    if (g->count < g->cap)
        return false;
    /* full ring: the oldest entry is at head */
    uint64_t oldest = g->times[g->head];
    return now_ms - oldest <= within_ms;
}
