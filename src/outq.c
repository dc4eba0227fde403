/* outq.c - bounded frame queue (see hypha/outq.h). */
#include "hypha/outq.h"

#include <stdlib.h>
#include <string.h>

#include "hypha/tlv.h"

static size_t frame_len_at(const hy_outq *q, size_t off) { return hy_tlv_size(q->buf + off); }

void hy_outq_init(hy_outq *q) { memset(q, 0, sizeof *q); }

void hy_outq_free(hy_outq *q)
{
    free(q->buf);
    memset(q, 0, sizeof *q);
}

size_t hy_outq_clear(hy_outq *q)
{
    size_t n = 0;
    for (size_t off = q->head; off < q->tail; off += frame_len_at(q, off))
        n++;
    q->head = q->tail = q->sent = 0;
    return n;
}

/* Drop the oldest frame that has not started to go out. 0 if there is none.
 * O(one frame), never O(queue): the first frame is skipped by moving head;
 * when the first one is partly written, that one frame is moved forward
 * over the second (the victim), header included, and head follows it. */
static int drop_oldest(hy_outq *q)
{
    if (q->head >= q->tail)
        return 0;
    size_t first = frame_len_at(q, q->head);
    if (q->sent == 0) {
        q->head += first;
    } else {
        size_t victim = q->head + first;
        if (victim >= q->tail)
            return 0;
        size_t len = frame_len_at(q, victim);
        memmove(q->buf + q->head + len, q->buf + q->head, first);
        q->head += len;
    }
    if (q->head == q->tail)
        q->head = q->tail = q->sent = 0;
    q->dropped_oldest++;
    return 1;
}

hy_outq_result hy_outq_push(hy_outq *q, const uint8_t *frame, size_t len, uint64_t limit,
                            hy_overflow policy)
{
    int over = 0;
    while (hy_outq_bytes(q) + len > limit) {
        if (policy == HY_OVERFLOW_BLOCK) {
            over = 1; /* keep it: the caller stops reading the sources */
            break;
        }
        if (policy == HY_OVERFLOW_DROP_NEWEST || !drop_oldest(q)) {
            q->dropped_newest++;
            return HY_OUTQ_DROPPED;
        }
    }
    if (q->tail + len > q->cap) {
        /* Compact only when that moves no more than it frees, so a queue
         * that is written out a little at a time is not moved again and
         * again (amortised O(1) per byte); otherwise grow. */
        if (q->head > 0 && q->head >= q->tail - q->head) {
            memmove(q->buf, q->buf + q->head, q->tail - q->head);
            q->tail -= q->head;
            q->head = 0;
        }
        if (q->tail + len > q->cap) {
            size_t cap = q->cap ? q->cap : 4096;
            while (cap < q->tail + len)
                cap *= 2;
            uint8_t *nb = realloc(q->buf, cap);
            if (!nb)
                return HY_OUTQ_NOMEM;
            q->buf = nb;
            q->cap = cap;
        }
    }
    memcpy(q->buf + q->tail, frame, len);
    q->tail += len;
    return over ? HY_OUTQ_OVER : HY_OUTQ_QUEUED;
}

void hy_outq_consume(hy_outq *q, size_t n)
{
    if (n >= hy_outq_pending(q)) { /* the common case: everything went out */
        q->head = q->tail = q->sent = 0;
        return;
    }
    while (n > 0 && q->head < q->tail) {
        size_t rest = frame_len_at(q, q->head) - q->sent;
        if (n < rest) {
            q->sent += n;
            return;
        }
        n -= rest;
        q->head += rest + q->sent;
        q->sent = 0;
    }
    if (q->head == q->tail)
        q->head = q->tail = q->sent = 0;
}

size_t hy_outq_frames(const hy_outq *q)
{
    size_t n = 0;
    for (size_t off = q->head; off + HY_TLV_HEADER <= q->tail; n++)
        off += frame_len_at(q, off);
    return n;
}
