/* rbuf.h - reference-counted byte buffers: the bus's read buffers, shared
 * by every queue that holds frames read into them, so a frame fanned out to
 * a hundred workers is in memory once (docs/architecture.md, "One copy").
 *
 * A buffer is freed when its last reference goes. Buffers of the standard
 * read size are kept in a small pool instead: reusing warm pages costs
 * nothing, touching fresh ones costs a page fault each.
 */
#ifndef HYPHA_RBUF_H
#define HYPHA_RBUF_H

#include <stddef.h>
#include <stdint.h>

#define HY_RBUF_READ_SIZE (256u * 1024) /* one read of a pipe or socket */

typedef struct hy_rbuf {
    uint32_t refs;
    size_t cap;                  /* bytes in data */
    size_t used;                 /* bytes filled (a queue's own copy buffer) */
    struct hy_rbuf *next_free;
    uint8_t data[];
} hy_rbuf;

/* A buffer of at least `cap` bytes with one reference; NULL on ENOMEM. */
hy_rbuf *hy_rbuf_new(size_t cap);
static inline hy_rbuf *hy_rbuf_ref(hy_rbuf *b)
{
    b->refs++;
    return b;
}
void hy_rbuf_unref(hy_rbuf *b);
/* Free the pool (at exit, for leak checkers). */
void hy_rbuf_pool_drain(void);

#endif
