/* fanq.h - a bounded queue of whole frames for a fan-out destination (a
 * worker's stdin, a listen client), holding references to the shared read
 * buffers the frames were read into rather than a copy each.
 *
 * The queue is a ring of segments, each some whole frames inside one
 * buffer. A run of frames from the bus's read buffer is referenced; a run
 * small enough that referencing it would pin a whole read buffer for a few
 * bytes (under HY_FANQ_COPY_MAX) is copied into the queue's own buffer, and
 * so is any frame from elsewhere. It is written with writev(2). The limit
 * counts the frames' bytes, not the buffers they keep alive: at worst a
 * queue holding runs of just over 16 KiB from different reads keeps 16x its
 * bytes in 256 KiB buffers alive (docs/architecture.md, "One copy").
 *
 * The rules are the ones hyphad always had: past `limit`, drop-oldest drops the oldest whole
 * frame that has not started to go out, drop-newest refuses the new one,
 * block keeps it and says so; a frame partly written is never touched, so
 * the reader never sees a split or interleaved frame. Pure: no I/O.
 *
 * A queue made with `keep` (the upstream's) holds what was written until
 * the caller learns that the reader took it (hy_fanq_taken), so that a
 * lost connection can send it again (hy_fanq_rewind). Its policy must be
 * block: nothing is dropped from it.
 */
#ifndef HYPHA_FANQ_H
#define HYPHA_FANQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "hypha/rbuf.h"
#include "hypha/topology.h"

#define HY_FANQ_COPY_MAX (16u * 1024) /* runs under this are copied, not referenced */
#define HY_FANQ_OWN_SIZE (16u * 1024) /* the queue's own copy buffers */

typedef enum hy_push_result {
    HY_PUSH_QUEUED = 0,
    HY_PUSH_DROPPED = 1, /* this frame was refused (drop-newest, or nothing droppable) */
    HY_PUSH_OVER = 2,    /* queued past the limit (policy block): pause the sources */
    HY_PUSH_NOMEM = -1,
} hy_push_result;

typedef struct hy_fanq_seg {
    hy_rbuf *b;                  /* a reference held */
    size_t off, len;             /* whole frames at b->data + off */
} hy_fanq_seg;

/* What a queue without `keep` wrote last, kept (a reference each) while it
 * may still sit unread in a pipe: at most `keep` bytes and one segment. */
typedef struct hy_fanq_hist {
    hy_fanq_seg *seg;            /* ring (owned) */
    size_t cap, first, n;
    size_t bytes;                /* the segments' lengths, summed */
    size_t keep;                 /* 0: no history (the default) */
} hy_fanq_hist;

typedef struct hy_fanq {
    hy_fanq_seg *seg;            /* ring (owned) */
    size_t cap, first, n;        /* slots, index of the first, segments held */
    size_t bytes;                /* bytes held, the written part of the first frame included */
    size_t sent;                 /* bytes from the front already written */
    size_t wseg, woff;           /* the next byte to write: segment (from the first) and offset in it */
    bool keep;                   /* written frames are kept until taken (hy_fanq_taken) */
    size_t acked;                /* keep: bytes at the front known taken, in a segment not let go yet */
    hy_fanq_hist hist;           /* without keep: the last bytes written, for hy_fanq_unread_frames */
    hy_rbuf *own;                /* the copy buffer being filled (a reference held), or NULL */
    uint64_t dropped_oldest, dropped_newest;
} hy_fanq;

void hy_fanq_init(hy_fanq *q);
void hy_fanq_free(hy_fanq *q);
/* Forget everything queued (not the history of what was written: see
 * hy_fanq_forget_written); returns how many frames were discarded (a partly
 * written one included). */
size_t hy_fanq_clear(hy_fanq *q);

/* One whole frame, copied, under `limit` bytes with the overflow policy. */
hy_push_result hy_fanq_push(hy_fanq *q, const uint8_t *frame, size_t len, uint64_t limit, hy_overflow policy);
/* Whole frames lying inside `b` (or anywhere, b NULL: copied), past any
 * limit: the caller has checked that they fit. */
hy_push_result hy_fanq_push_run(hy_fanq *q, hy_rbuf *b, const uint8_t *data, size_t len);

static inline size_t hy_fanq_bytes(const hy_fanq *q) { return q->bytes; }
static inline size_t hy_fanq_pending(const hy_fanq *q) { return q->bytes - q->sent; }
/* Whole or partly written frames held (walks headers: not the hot path). */
size_t hy_fanq_frames(const hy_fanq *q);
/* The pending bytes as at most `max` iovecs; returns how many. */
int hy_fanq_iov(const hy_fanq *q, struct iovec *iov, int max);
/* n bytes were written. Without `keep`, the whole frames among them are let go. */
void hy_fanq_consume(hy_fanq *q, size_t n);
/* A `keep` queue: the reader took the first n bytes from the front (n <=
 * sent, what it took before included). Segments taken whole are let go; the
 * frames of one taken in part wait for it, or for a rewind (no header is
 * walked here: this runs at every write). */
void hy_fanq_taken(hy_fanq *q, size_t n);
/* Bytes written and not known taken. */
static inline size_t hy_fanq_unconfirmed(const hy_fanq *q) { return q->sent - q->acked; }
/* Frames held and not known taken (walks headers: not the hot path). */
size_t hy_fanq_untaken_frames(const hy_fanq *q);
/* A queue with a history (hist.keep: the pipe's capacity): the reader died
 * with `unread` bytes still in the pipe (FIONREAD). How many frames of the
 * history it never read whole; a partly written first frame is not one of
 * them (hy_fanq_clear counts it). Walks headers: at an exit only. */
size_t hy_fanq_unread_frames(const hy_fanq *q, size_t unread);
/* A queue with a history whose reader died with `unread` bytes still in
 * its pipe (FIONREAD, the partly written first frame's included): the
 * frames it never read at all go back to the front of the queue, in order,
 * before what was waiting, for the next reader. A frame it read part of is
 * `cut` (the caller counts it: it is no one's now); a partly written first
 * frame goes out again whole. The history is let go. Walks headers: at an
 * exit only. */
typedef struct hy_fanq_reclaim_res {
    size_t frames;               /* back in the queue */
    size_t cut;                  /* 0 or 1: read in part by the dead reader */
    size_t nomem;                /* could not go back (no memory for the ring) */
} hy_fanq_reclaim_res;
hy_fanq_reclaim_res hy_fanq_reclaim(hy_fanq *q, size_t unread);
/* The history is let go (its frames were counted, or went to a reader alive). */
void hy_fanq_forget_written(hy_fanq *q);
/* True when the next byte to send starts a frame (a queue without `keep`). */
static inline bool hy_fanq_at_boundary(const hy_fanq *q) { return q->sent == 0; }
/* The connection that was being written is gone: everything written and not
 * known taken (without `keep`: a partly written first frame) goes out again,
 * whole. Returns how many frames had started to go out. */
size_t hy_fanq_rewind(hy_fanq *q);

/* An upgrade carries a queue as its bytes (every segment's, in order: what
 * was written of the first frame included) with `sent` and `acked`, and a
 * history as its bytes. save: the bytes into out (NULL: only their number);
 * restore: into an empty queue, one segment. -1: out of memory, or the
 * numbers do not fit the bytes. */
size_t hy_fanq_save(const hy_fanq *q, uint8_t *out);
size_t hy_fanq_save_history(const hy_fanq *q, uint8_t *out);
int hy_fanq_restore(hy_fanq *q, const uint8_t *p, size_t n, size_t sent, size_t acked);
int hy_fanq_restore_history(hy_fanq *q, const uint8_t *p, size_t n);

#endif
