/* outq.h - a bounded queue of whole frames waiting to be written to one fd.
 *
 * Bytes are kept contiguous so one write(2) can send many frames. The queue
 * knows frame boundaries (it reads the TLV headers it holds), so when it is
 * full it can drop the oldest whole frame that has not started to go out, or
 * refuse the newest one; a frame already partly written is never touched, so
 * the reader never sees a split or interleaved frame. Pure: no I/O.
 */
#ifndef HYPHA_OUTQ_H
#define HYPHA_OUTQ_H

#include <stddef.h>
#include <stdint.h>

#include "hypha/topology.h"

typedef struct hy_outq {
    uint8_t *buf;        /* owned */
    size_t cap;
    size_t head;         /* start of the first frame still (partly) pending */
    size_t sent;         /* bytes of that first frame already written */
    size_t tail;         /* end of queued data */
    uint64_t dropped_oldest, dropped_newest;
} hy_outq;

typedef enum hy_outq_result {
    HY_OUTQ_QUEUED = 0,
    HY_OUTQ_DROPPED = 1, /* this frame was refused (drop-newest, or nothing droppable) */
    HY_OUTQ_OVER = 2,    /* queued past the limit (policy block): pause the sources */
    HY_OUTQ_NOMEM = -1,
} hy_outq_result;

void hy_outq_init(hy_outq *q);
void hy_outq_free(hy_outq *q);
/* Forget everything queued; returns how many whole frames were discarded. */
size_t hy_outq_clear(hy_outq *q);

/* Queue one whole frame (header included) under `limit` bytes of pending
 * data with the given overflow policy. */
hy_outq_result hy_outq_push(hy_outq *q, const uint8_t *frame, size_t len, uint64_t limit,
                            hy_overflow policy);

/* Bytes waiting to be written, and where they start. */
static inline size_t hy_outq_pending(const hy_outq *q) { return q->tail - q->head - q->sent; }
static inline const uint8_t *hy_outq_data(const hy_outq *q) { return q->buf + q->head + q->sent; }
/* Bytes held (counting the part of the first frame already written). */
static inline size_t hy_outq_bytes(const hy_outq *q) { return q->tail - q->head; }
/* Whole or partly written frames held: walks the headers (for status, not
 * the hot path). */
size_t hy_outq_frames(const hy_outq *q);
/* n bytes were written. */
void hy_outq_consume(hy_outq *q, size_t n);
/* The connection that was being written is gone: the first frame, if it was
 * partly written, goes out again whole (the reader never got it). */
static inline void hy_outq_rewind(hy_outq *q) { q->sent = 0; }
/* True when the next byte to send starts a frame (safe to insert a frame). */
static inline int hy_outq_at_boundary(const hy_outq *q) { return q->sent == 0; }

#endif
