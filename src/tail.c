/* tail.c - the ring of a worker's recent stderr lines (see hypha/tail.h). */
#include "hypha/tail.h"

#include <stdlib.h>
#include <string.h>

const hy_tail_line *hy_tail_get(const hy_tail *t, size_t i)
{
    return i < t->n ? &t->slot[(t->head + i) % HY_TAIL_LINES] : NULL;
}

static void drop_oldest(hy_tail *t)
{
    hy_tail_line *old = &t->slot[t->head];
    t->bytes -= old->len;
    free(old->text);
    old->text = NULL;
    t->head = (t->head + 1) % HY_TAIL_LINES;
    t->n--;
}

void hy_tail_push(hy_tail *t, const char *line, size_t len, uint64_t seq)
{
    if (!t->slot && !(t->slot = calloc(HY_TAIL_LINES, sizeof *t->slot)))
        return;
    char *copy = malloc(len + 1);
    if (!copy)
        return;
    memcpy(copy, line, len);
    copy[len] = '\0';
    while (t->n > 0 && (t->n == HY_TAIL_LINES || t->bytes + len > HY_TAIL_BYTES))
        drop_oldest(t);
    hy_tail_line *slot = &t->slot[(t->head + t->n) % HY_TAIL_LINES];
    slot->text = copy;
    slot->len = len;
    slot->seq = seq;
    t->n++;
    t->bytes += len;
}

void hy_tail_free(hy_tail *t)
{
    if (t->slot)
        for (size_t i = 0; i < t->n; i++)
            free(t->slot[(t->head + i) % HY_TAIL_LINES].text);
    free(t->slot);
    memset(t, 0, sizeof *t);
}
