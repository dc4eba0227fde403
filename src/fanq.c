/* fanq.c - fan-out queues of shared segments (see hypha/fanq.h).
 *
 * Invariants: every segment holds whole frames and a reference to its
 * buffer; `bytes` is the sum of the segments' lengths; `sent` bytes from
 * the front went out, and the next one is at (wseg, woff): woff < the
 * length of segment wseg, or wseg == n and woff == 0 when all went out.
 * Without `keep`, written frames are let go at once, so the first segment
 * starts with the frame being written (sent < its size, wseg == 0) and
 * written frames never count against the limit.
 */
#include "hypha/fanq.h"

#include <stdlib.h>
#include <string.h>

#include "hypha/tlv.h"

void hy_fanq_init(hy_fanq *q) { memset(q, 0, sizeof *q); }

static hy_fanq_seg *at(const hy_fanq *q, size_t i) { return &q->seg[(q->first + i) % q->cap]; }

/* A ring of n segments from *first in *seg (cap slots): twice the room,
 * unwrapped. -1 when out of memory (the ring as it was). */
static int ring_grow(hy_fanq_seg **seg, size_t *cap, size_t *first, size_t n)
{
    size_t ncap = *cap ? *cap * 2 : 8;
    hy_fanq_seg *s = malloc(ncap * sizeof *s);
    if (!s)
        return -1;
    for (size_t i = 0; i < n; i++)
        s[i] = (*seg)[(*first + i) % *cap];
    free(*seg);
    *seg = s;
    *cap = ncap;
    *first = 0;
    return 0;
}

static int grow(hy_fanq *q) { return q->n < q->cap ? 0 : ring_grow(&q->seg, &q->cap, &q->first, q->n); }

/* ---- the history of what was written ------------------------------------- */

static hy_fanq_seg *hist_at(const hy_fanq_hist *h, size_t i) { return &h->seg[(h->first + i) % h->cap]; }

static void hist_pop(hy_fanq_hist *h)
{
    h->bytes -= hist_at(h, 0)->len;
    hy_rbuf_unref(hist_at(h, 0)->b);
    h->first = (h->first + 1) % h->cap;
    h->n--;
}

/* Written whole frames at b->data + off, with the reference the caller
 * gives up; kept while they may still be in the pipe. */
static void hist_push(hy_fanq_hist *h, hy_rbuf *b, size_t off, size_t len)
{
    if (h->n == h->cap && ring_grow(&h->seg, &h->cap, &h->first, h->n) < 0) {
        if (!h->n) { /* no room to remember: an exit then counts fewer, never more */
            hy_rbuf_unref(b);
            return;
        }
        hist_pop(h); /* the oldest goes */
    }
    *hist_at(h, h->n) = (hy_fanq_seg){b, off, len};
    h->n++;
    h->bytes += len;
    while (h->n > 1 && h->bytes - hist_at(h, 0)->len >= h->keep)
        hist_pop(h);
}

static void hist_clear(hy_fanq_hist *h)
{
    while (h->n)
        hist_pop(h);
    h->first = 0;
}

void hy_fanq_forget_written(hy_fanq *q) { hist_clear(&q->hist); }

size_t hy_fanq_unread_frames(const hy_fanq *q, size_t unread)
{
    const hy_fanq_hist *h = &q->hist;
    size_t tail = unread > q->sent ? unread - q->sent : 0; /* unread bytes of the history */
    size_t start = tail < h->bytes ? h->bytes - tail : 0, pos = 0, frames = 0;
    for (size_t i = 0; i < h->n; i++) {
        const hy_fanq_seg *s = hist_at(h, i);
        for (size_t off = 0; off < s->len;) {
            size_t f = hy_tlv_size(s->b->data + s->off + off);
            frames += pos + f > start; /* it ends where the reader never got */
            pos += f;
            off += f;
        }
    }
    return frames;
}

/* ---- the queue ------------------------------------------------------------- */

static void pop_first(hy_fanq *q)
{
    hy_fanq_seg *s = at(q, 0);
    q->bytes -= s->len;
    if (q->hist.keep && !q->keep && q->wseg > 0)
        hist_push(&q->hist, s->b, s->off, s->len); /* written whole: its reference goes with it */
    else
        hy_rbuf_unref(s->b);
    q->first = (q->first + 1) % q->cap;
    q->n--;
}

size_t hy_fanq_clear(hy_fanq *q)
{
    size_t frames = hy_fanq_frames(q);
    q->wseg = 0; /* nothing of it goes to the history */
    while (q->n)
        pop_first(q);
    q->first = 0;
    q->sent = q->wseg = q->woff = q->acked = 0;
    return frames;
}

void hy_fanq_free(hy_fanq *q)
{
    hy_fanq_clear(q);
    hist_clear(&q->hist);
    if (q->own)
        hy_rbuf_unref(q->own);
    free(q->seg);
    free(q->hist.seg);
    memset(q, 0, sizeof *q);
}

/* Append `len` bytes at b->data + off (whole frames), merging with the last
 * segment when they continue it. */
static int append(hy_fanq *q, hy_rbuf *b, size_t off, size_t len)
{
    if (q->n > q->wseg) { /* never behind the next byte to write: a written segment stays as it was */
        hy_fanq_seg *last = at(q, q->n - 1);
        if (last->b == b && last->off + last->len == off) {
            last->len += len;
            q->bytes += len;
            return 0;
        }
    }
    if (grow(q) < 0)
        return -1;
    *at(q, q->n) = (hy_fanq_seg){hy_rbuf_ref(b), off, len};
    q->n++;
    q->bytes += len;
    return 0;
}

/* Copied into the queue's own buffer (a new one when the current is full). */
static int append_copy(hy_fanq *q, const uint8_t *data, size_t len)
{
    if (q->own && q->own->refs == 1 && q->own->cap >= len)
        q->own->used = 0; /* no segment holds it any more: fill it again */
    if (!q->own || q->own->cap - q->own->used < len) {
        hy_rbuf *b = hy_rbuf_new(len > HY_FANQ_OWN_SIZE ? len : HY_FANQ_OWN_SIZE);
        if (!b)
            return -1;
        if (q->own)
            hy_rbuf_unref(q->own);
        q->own = b;
    }
    size_t off = q->own->used;
    if (append(q, q->own, off, len) < 0)
        return -1;
    memcpy(q->own->data + off, data, len);
    q->own->used += len;
    return 0;
}

hy_push_result hy_fanq_push_run(hy_fanq *q, hy_rbuf *b, const uint8_t *data, size_t len)
{
    int rc;
    if (len == 0)
        return HY_PUSH_QUEUED;
    if (!b || len < HY_FANQ_COPY_MAX)
        rc = append_copy(q, data, len);
    else
        rc = append(q, b, (size_t)(data - b->data), len);
    return rc < 0 ? HY_PUSH_NOMEM : HY_PUSH_QUEUED;
}

static void remove_seg(hy_fanq *q, size_t i)
{
    hy_rbuf_unref(at(q, i)->b);
    for (size_t k = i; k + 1 < q->n; k++)
        *at(q, k) = *at(q, k + 1);
    q->n--;
}

/* Remove `len` bytes at `pos` in segment i (whole frames), splitting it in
 * two when they are in its middle. -1 on ENOMEM (nothing removed). */
static int cut(hy_fanq *q, size_t i, size_t pos, size_t len)
{
    hy_fanq_seg *s = at(q, i);
    if (pos > 0 && pos + len < s->len) {
        if (grow(q) < 0)
            return -1;
        s = at(q, i);
        for (size_t k = q->n; k > i + 1; k--)
            *at(q, k) = *at(q, k - 1);
        *at(q, i + 1) = (hy_fanq_seg){hy_rbuf_ref(s->b), s->off + pos + len, s->len - pos - len};
        s->len = pos;
        q->n++;
    } else if (pos == 0) {
        s->off += len;
        s->len -= len;
    } else {
        s->len -= len;
    }
    q->bytes -= len;
    if (s->len == 0)
        remove_seg(q, i);
    return 0;
}

/* Drop the oldest frame that has not started to go out. 0 if there is none. */
static int drop_oldest(hy_fanq *q)
{
    if (!q->n)
        return 0;
    hy_fanq_seg *s = at(q, 0);
    size_t first = hy_tlv_size(s->b->data + s->off);
    if (q->sent == 0)
        return cut(q, 0, 0, first) == 0;
    if (first < s->len)
        return cut(q, 0, first, hy_tlv_size(s->b->data + s->off + first)) == 0;
    if (q->n < 2)
        return 0;
    hy_fanq_seg *t = at(q, 1);
    return cut(q, 1, 0, hy_tlv_size(t->b->data + t->off)) == 0;
}

hy_push_result hy_fanq_push(hy_fanq *q, const uint8_t *frame, size_t len, uint64_t limit, hy_overflow policy)
{
    int over = 0;
    while (q->bytes + len > limit) {
        if (policy == HY_OVERFLOW_BLOCK) {
            over = 1; /* keep it: the caller stops reading the sources */
            break;
        }
        if (policy == HY_OVERFLOW_DROP_NEWEST || !drop_oldest(q)) {
            q->dropped_newest++;
            return HY_PUSH_DROPPED;
        }
        q->dropped_oldest++;
    }
    if (append_copy(q, frame, len) < 0)
        return HY_PUSH_NOMEM;
    return over ? HY_PUSH_OVER : HY_PUSH_QUEUED;
}

size_t hy_fanq_frames(const hy_fanq *q)
{
    size_t frames = 0;
    for (size_t i = 0; i < q->n; i++) {
        const hy_fanq_seg *s = at(q, i);
        for (size_t off = 0; off + HY_TLV_HEADER <= s->len; frames++)
            off += hy_tlv_size(s->b->data + s->off + off);
    }
    return frames;
}

int hy_fanq_iov(const hy_fanq *q, struct iovec *iov, int max)
{
    int k = 0;
    for (size_t i = q->wseg; i < q->n && k < max; i++, k++) {
        const hy_fanq_seg *s = at(q, i);
        size_t skip = i == q->wseg ? q->woff : 0;
        iov[k].iov_base = s->b->data + s->off + skip;
        iov[k].iov_len = s->len - skip;
    }
    return k;
}

/* The first segment was let go whole. */
static void release_first(hy_fanq *q)
{
    q->sent -= at(q, 0)->len;
    pop_first(q);
    q->wseg--;
}

/* Let go of the whole frames in the first n written bytes: segments written
 * whole at once, then the frames of the first one (amortised one header per
 * frame let go). */
static void let_go(hy_fanq *q, size_t n)
{
    while (q->wseg > 0 && at(q, 0)->len <= n) {
        n -= at(q, 0)->len;
        release_first(q);
    }
    if (q->n) {
        hy_fanq_seg *s = at(q, 0);
        size_t from = s->off;
        for (size_t flen; (flen = hy_tlv_size(s->b->data + s->off)) <= n;) {
            s->off += flen;
            s->len -= flen;
            q->bytes -= flen;
            q->sent -= flen;
            if (q->wseg == 0)
                q->woff -= flen;
            n -= flen;
        }
        if (q->hist.keep && !q->keep && s->off > from)
            hist_push(&q->hist, hy_rbuf_ref(s->b), from, s->off - from);
    }
    if (!q->n)
        q->first = 0;
}

void hy_fanq_consume(hy_fanq *q, size_t n)
{
    q->sent += n;
    while (n > 0 && q->wseg < q->n) {
        size_t rest = at(q, q->wseg)->len - q->woff;
        if (n < rest) {
            q->woff += n;
            break;
        }
        n -= rest;
        q->wseg++;
        q->woff = 0;
    }
    if (!q->keep)
        let_go(q, q->sent);
}

void hy_fanq_taken(hy_fanq *q, size_t n)
{
    while (q->wseg > 0 && at(q, 0)->len <= n) {
        n -= at(q, 0)->len;
        release_first(q);
    }
    q->acked = n;
    if (!q->n)
        q->first = 0;
}

/* Frames starting in the first `upto` bytes of segment s. */
static size_t seg_frames(const hy_fanq_seg *s, size_t upto)
{
    size_t frames = 0;
    for (size_t off = 0; off < upto; frames++)
        off += hy_tlv_size(s->b->data + s->off + off);
    return frames;
}

size_t hy_fanq_rewind(hy_fanq *q)
{
    let_go(q, q->acked);
    q->acked = 0;
    size_t frames = 0;
    for (size_t i = 0; i < q->n && i <= q->wseg; i++) {
        const hy_fanq_seg *s = at(q, i);
        frames += seg_frames(s, i < q->wseg ? s->len : q->woff);
    }
    q->sent = q->wseg = q->woff = 0;
    return frames;
}

size_t hy_fanq_untaken_frames(const hy_fanq *q)
{
    size_t frames = hy_fanq_frames(q);
    if (q->acked == 0)
        return frames;
    const hy_fanq_seg *s = at(q, 0);
    for (size_t off = 0; off + hy_tlv_size(s->b->data + s->off + off) <= q->acked; frames--)
        off += hy_tlv_size(s->b->data + s->off + off);
    return frames;
}

/* ---- taking back what a dead reader never read ---------------------------- */

/* A segment before the first (the queue's front, with nothing of it sent). */
static int prepend(hy_fanq *q, hy_rbuf *b, size_t off, size_t len)
{
    if (grow(q) < 0)
        return -1;
    q->first = (q->first + q->cap - 1) % q->cap;
    *at(q, 0) = (hy_fanq_seg){hy_rbuf_ref(b), off, len};
    q->n++;
    q->bytes += len;
    return 0;
}

/* Of history segment s, starting at stream position pos: the offset of its
 * first frame that begins at or after `start` (s->len: none). A frame that
 * begins before `start` and ends after it is counted in *cut. */
static size_t first_unread(const hy_fanq_seg *s, size_t pos, size_t start, size_t *cut)
{
    size_t off = 0;
    while (off < s->len && pos + off < start) {
        size_t f = hy_tlv_size(s->b->data + s->off + off);
        *cut += pos + off + f > start;
        off += f;
    }
    return off;
}

hy_fanq_reclaim_res hy_fanq_reclaim(hy_fanq *q, size_t unread)
{
    hy_fanq_hist *h = &q->hist;
    hy_fanq_reclaim_res r = {0, 0, 0};
    size_t tail = unread > q->sent ? unread - q->sent : 0; /* unread bytes of the history */
    size_t start = tail < h->bytes ? h->bytes - tail : 0;
    hy_fanq_rewind(q); /* a partly written first frame goes out again, whole */
    size_t pos = h->bytes;
    for (size_t i = h->n; i-- > 0;) { /* from the newest: each goes in front of the one after it */
        const hy_fanq_seg *s = hist_at(h, i);
        pos -= s->len;
        if (pos + s->len <= start)
            break;
        size_t off = first_unread(s, pos, start, &r.cut);
        if (off < s->len && prepend(q, s->b, s->off + off, s->len - off) < 0) {
            r.nomem += seg_frames(s, s->len) - seg_frames(s, off); /* no room in the ring: counted by the caller */
            continue;
        }
        r.frames += seg_frames(s, s->len) - seg_frames(s, off);
    }
    hist_clear(h);
    return r;
}

/* ---- carried across an upgrade (upgrade.c) ---------------------------------- */

static size_t copy_segs(const hy_fanq_seg *ring, size_t cap, size_t first, size_t n, uint8_t *out)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        const hy_fanq_seg *s = &ring[(first + i) % cap];
        if (out)
            memcpy(out + len, s->b->data + s->off, s->len);
        len += s->len;
    }
    return len;
}

size_t hy_fanq_save(const hy_fanq *q, uint8_t *out) { return copy_segs(q->seg, q->cap, q->first, q->n, out); }

size_t hy_fanq_save_history(const hy_fanq *q, uint8_t *out)
{
    const hy_fanq_hist *h = &q->hist;
    return copy_segs(h->seg, h->cap, h->first, h->n, out);
}

int hy_fanq_restore(hy_fanq *q, const uint8_t *p, size_t n, size_t sent, size_t acked)
{
    if (sent > n || acked > sent || (n && hy_fanq_push_run(q, NULL, p, n) != HY_PUSH_QUEUED))
        return -1;
    if (q->n != (n ? 1u : 0u))
        return -1; /* one copy, one segment: what follows counts on it */
    q->sent = sent;
    q->acked = acked;
    q->wseg = sent == n && n ? 1 : 0;
    q->woff = sent == n ? 0 : sent;
    return 0;
}

int hy_fanq_restore_history(hy_fanq *q, const uint8_t *p, size_t n)
{
    if (n == 0)
        return 0;
    hy_rbuf *b = hy_rbuf_new(n);
    if (!b)
        return -1;
    memcpy(b->data, p, n);
    b->used = n;
    hist_push(&q->hist, b, 0, n);
    return 0;
}
