/* rbuf.c - reference-counted buffers and their pool (see hypha/rbuf.h). */
#include "hypha/rbuf.h"

#include <stdlib.h>

#define POOL_MAX 16 /* 4 MiB of warm read buffers at most */

static hy_rbuf *pool;
static unsigned npool;

hy_rbuf *hy_rbuf_new(size_t cap)
{
    hy_rbuf *b = NULL;
    if (cap > HY_RBUF_READ_SIZE / 2 && cap <= HY_RBUF_READ_SIZE && pool) {
        b = pool;
        pool = b->next_free;
        npool--;
    } else {
        size_t want = cap < HY_RBUF_READ_SIZE && cap > HY_RBUF_READ_SIZE / 2 ? HY_RBUF_READ_SIZE : cap;
        if (!(b = malloc(sizeof *b + want)))
            return NULL;
        b->cap = want;
    }
    b->refs = 1;
    b->used = 0;
    b->next_free = NULL;
    return b;
}

void hy_rbuf_unref(hy_rbuf *b)
{
    if (--b->refs > 0)
        return;
    if (b->cap == HY_RBUF_READ_SIZE && npool < POOL_MAX) {
        b->next_free = pool;
        pool = b;
        npool++;
        return;
    }
    free(b);
}

void hy_rbuf_pool_drain(void)
{
    while (pool) {
        hy_rbuf *b = pool;
        pool = b->next_free;
        free(b);
    }
    npool = 0;
}
