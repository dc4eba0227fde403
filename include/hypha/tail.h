/* tail.h - the last lines a worker wrote to stderr, for `hyphactl tail`:
 * a ring of at most HY_TAIL_LINES lines and HY_TAIL_BYTES bytes; the oldest
 * go first. Each line carries a hyphad-wide sequence number so the lines of
 * several instances can be merged in the order they were written. Pure.
 */
#ifndef HYPHA_TAIL_H
#define HYPHA_TAIL_H

#include <stddef.h>
#include <stdint.h>

#define HY_TAIL_LINES 1000u
#define HY_TAIL_BYTES (64u * 1024)

typedef struct hy_tail_line {
    char *text;                  /* owned, NUL-terminated */
    size_t len;
    uint64_t seq;                /* hyphad-wide order of stderr lines */
} hy_tail_line;

typedef struct hy_tail {
    hy_tail_line *slot;          /* HY_TAIL_LINES slots, allocated on first use (owned) */
    size_t head, n;              /* oldest slot, lines held */
    size_t bytes;
} hy_tail;

/* Keep a copy of a line; out of memory only loses the line. */
void hy_tail_push(hy_tail *t, const char *line, size_t len, uint64_t seq);
/* From oldest (0) to newest (n-1); NULL past the end. */
const hy_tail_line *hy_tail_get(const hy_tail *t, size_t i);
void hy_tail_free(hy_tail *t);

#endif
