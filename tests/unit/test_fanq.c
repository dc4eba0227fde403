/* test_fanq.c - the bounded frame queue: boundaries, partial writes, drops
 * (test_outq.c's cases, carried over when the queue became one of shared
 * segments), and what sharing adds: referenced runs, small runs copied. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "hypha/fanq.h"
#include "hypha/tlv.h"

/* Heap bytes in use, to see the pool drained. */
#if defined(__SANITIZE_ADDRESS__)
#define HEAP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HEAP_ASAN 1
#endif
#endif
#ifdef HEAP_ASAN
/* sanitizer/allocator_interface.h, which gcc does not install */
size_t __sanitizer_get_current_allocated_bytes(void);
static size_t heap_in_use(void) { return __sanitizer_get_current_allocated_bytes(); }
#else
#include <malloc.h>
static size_t heap_in_use(void)
{
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}
#endif

/* The pending bytes, gathered as a writer would see them in order. */
static const uint8_t *hy_fanq_data(const hy_fanq *q)
{
    static uint8_t flat[1 << 20];
    struct iovec iov[256];
    int k = hy_fanq_iov(q, iov, 256);
    size_t n = 0;
    for (int i = 0; i < k; i++) {
        memcpy(flat + n, iov[i].iov_base, iov[i].iov_len);
        n += iov[i].iov_len;
    }
    return flat;
}

/* A frame of type `id` with a payload of `len` bytes all equal to `fill`. */
static size_t mk(uint8_t *out, uint16_t id, uint32_t len, uint8_t fill)
{
    uint8_t payload[256];
    memset(payload, fill, len);
    return hy_tlv_encode(out, 512, id, payload, len);
}

static void test_fifo_and_partial_writes(void **state)
{
    (void)state;
    hy_fanq q;
    hy_fanq_init(&q);
    uint8_t f[512];
    for (int i = 0; i < 3; i++) {
        size_t n = mk(f, (uint16_t)(i + 1), 10, (uint8_t)i);
        assert_int_equal(hy_fanq_push(&q, f, n, 1000, HY_OVERFLOW_DROP_OLDEST), HY_PUSH_QUEUED);
    }
    assert_int_equal(hy_fanq_pending(&q), 48);
    assert_int_equal(hy_fanq_data(&q)[0], 1);
    hy_fanq_consume(&q, 7); /* into the first frame */
    assert_false(hy_fanq_at_boundary(&q));
    assert_int_equal(hy_fanq_pending(&q), 41);
    hy_fanq_consume(&q, 9); /* finishes it */
    assert_true(hy_fanq_at_boundary(&q));
    assert_int_equal(hy_fanq_data(&q)[0], 2);
    hy_fanq_consume(&q, 32);
    assert_int_equal(hy_fanq_pending(&q), 0);
    assert_int_equal(hy_fanq_bytes(&q), 0);
    hy_fanq_free(&q);
}

static void test_drop_oldest_spares_the_frame_being_written(void **state)
{
    (void)state;
    hy_fanq q;
    hy_fanq_init(&q);
    uint8_t f[512];
    size_t n = mk(f, 1, 10, 0xA); /* 16 bytes each; limit 48 = three frames */
    hy_fanq_push(&q, f, n, 48, HY_OVERFLOW_DROP_OLDEST);
    n = mk(f, 2, 10, 0xB);
    hy_fanq_push(&q, f, n, 48, HY_OVERFLOW_DROP_OLDEST);
    n = mk(f, 3, 10, 0xC);
    hy_fanq_push(&q, f, n, 48, HY_OVERFLOW_DROP_OLDEST);
    hy_fanq_consume(&q, 5); /* frame 1 is half out */
    n = mk(f, 4, 10, 0xD);
    assert_int_equal(hy_fanq_push(&q, f, n, 48, HY_OVERFLOW_DROP_OLDEST), HY_PUSH_QUEUED);
    assert_int_equal(q.dropped_oldest, 1);
    /* frame 1 (rest), then 3 and 4: frame 2 was the oldest not yet started */
    const uint8_t *d = hy_fanq_data(&q);
    assert_int_equal(hy_fanq_pending(&q), 11 + 32);
    assert_int_equal(d[11], 3);
    assert_int_equal(d[11 + 16], 4);
    hy_fanq_free(&q);
}

static void test_drop_newest_and_block(void **state)
{
    (void)state;
    hy_fanq q;
    hy_fanq_init(&q);
    uint8_t f[512];
    size_t n = mk(f, 1, 10, 0);
    assert_int_equal(hy_fanq_push(&q, f, n, 32, HY_OVERFLOW_DROP_NEWEST), HY_PUSH_QUEUED);
    assert_int_equal(hy_fanq_push(&q, f, n, 32, HY_OVERFLOW_DROP_NEWEST), HY_PUSH_QUEUED);
    assert_int_equal(hy_fanq_push(&q, f, n, 32, HY_OVERFLOW_DROP_NEWEST), HY_PUSH_DROPPED);
    assert_int_equal(q.dropped_newest, 1);
    assert_int_equal(hy_fanq_pending(&q), 32);
    /* block keeps the frame and says the limit is passed */
    assert_int_equal(hy_fanq_push(&q, f, n, 32, HY_OVERFLOW_BLOCK), HY_PUSH_OVER);
    assert_int_equal(hy_fanq_pending(&q), 48);
    assert_int_equal(hy_fanq_clear(&q), 3);
    assert_int_equal(hy_fanq_pending(&q), 0);
    hy_fanq_free(&q);
}

static void test_grows_and_compacts(void **state)
{
    (void)state;
    hy_fanq q;
    hy_fanq_init(&q);
    uint8_t f[512];
    size_t n = mk(f, 7, 200, 0x5);
    for (int round = 0; round < 100; round++) {
        for (int i = 0; i < 30; i++)
            assert_int_equal(hy_fanq_push(&q, f, n, 1 << 20, HY_OVERFLOW_DROP_OLDEST), HY_PUSH_QUEUED);
        hy_fanq_consume(&q, 29 * n + 3);
        assert_int_equal(hy_fanq_pending(&q), n - 3);
        hy_fanq_consume(&q, n - 3);
    }
    /* reused, not grown without bound: a few segments, one own buffer */
    assert_true(q.cap <= 8);
    assert_true(!q.own || q.own->cap <= HY_FANQ_OWN_SIZE);
    hy_fanq_free(&q);
}

/* Random pushes (drop-oldest, small limit), partial writes and rewinds: the
 * bytes that come out must decode to whole frames, in push order, each
 * intact, and pushed = delivered + dropped. */
static void test_random_against_the_stream(void **state)
{
    (void)state;
    hy_fanq q;
    hy_fanq_init(&q);
    uint64_t rng = 88172645463325252ull;
    uint8_t out[1 << 16];
    size_t outlen = 0;
    uint32_t next_id = 0, delivered = 0, last_seen = 0;
    for (int step = 0; step < 200000; step++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        if (rng % 3 != 0) {
            uint8_t f[512];
            uint32_t len = 4 + (uint32_t)(rng >> 8) % 60;
            uint8_t payload[64];
            memcpy(payload, &next_id, 4);
            memset(payload + 4, (uint8_t)next_id, len - 4);
            size_t n = hy_tlv_encode(f, sizeof f, 9, payload, len);
            next_id++;
            hy_push_result r = hy_fanq_push(&q, f, n, 300, HY_OVERFLOW_DROP_OLDEST);
            assert_true(r == HY_PUSH_QUEUED || r == HY_PUSH_DROPPED);
        } else if ((rng >> 20) % 17 == 0) {
            /* the reader vanished: bytes of a partly written frame are lost
             * with it, and the frame goes out again whole */
            size_t keep = outlen;
            while (keep > 0) { /* cut back to the last whole frame written */
                size_t off = 0, good = 0;
                while (off + 6 <= keep) {
                    uint32_t l = (uint32_t)out[off + 2] | (uint32_t)out[off + 3] << 8;
                    if (off + 6 + l > keep)
                        break;
                    off += 6 + l;
                    good = off;
                }
                keep = good;
                break;
            }
            outlen = keep;
            hy_fanq_rewind(&q);
        } else {
            size_t n = (size_t)(rng >> 24) % 97;
            if (n > hy_fanq_pending(&q))
                n = hy_fanq_pending(&q);
            memcpy(out + outlen, hy_fanq_data(&q), n);
            outlen += n;
            hy_fanq_consume(&q, n);
        }
        /* decode and drop whole frames from the front of `out` */
        size_t off = 0;
        while (off + 6 <= outlen) {
            uint32_t l = (uint32_t)out[off + 2] | (uint32_t)out[off + 3] << 8;
            if (off + 6 + l > outlen)
                break;
            uint32_t id;
            memcpy(&id, out + off + 6, 4);
            assert_true(delivered == 0 || id > last_seen); /* order kept, no duplicate */
            for (uint32_t i = 4; i < l; i++)
                assert_int_equal(out[off + 6 + i], (uint8_t)id);
            last_seen = id;
            delivered++;
            off += 6 + l;
        }
        memmove(out, out + off, outlen - off);
        outlen -= off;
    }
    /* drain */
    memcpy(out + outlen, hy_fanq_data(&q), hy_fanq_pending(&q));
    outlen += hy_fanq_pending(&q);
    hy_fanq_consume(&q, hy_fanq_pending(&q));
    size_t off = 0;
    while (off + 6 <= outlen) {
        uint32_t l = (uint32_t)out[off + 2] | (uint32_t)out[off + 3] << 8;
        off += 6 + l;
        delivered++;
    }
    assert_int_equal(off, outlen);
    assert_int_equal(delivered + q.dropped_oldest + q.dropped_newest, next_id);
    hy_fanq_free(&q);
}

/* ---- what sharing adds ------------------------------------------------------
 * Frames below carry an id: type 9, a payload of the id (4 bytes LE) and
 * then bytes derived from id and position, so a frame that is cut, moved or
 * overwritten in a buffer it should not have been released from shows. */

#define FS 1000u /* the size of the frames of most runs below, header included */

static size_t put(uint8_t *p, uint32_t id, uint32_t plen)
{
    hy_tlv_put_header(p, 9, plen);
    memcpy(p + HY_TLV_HEADER, &id, 4);
    for (uint32_t i = 4; i < plen; i++)
        p[HY_TLV_HEADER + i] = (uint8_t)(id * 31u + i);
    return HY_TLV_HEADER + plen;
}

/* `n` frames of `fs` bytes each, ids id0, id0 + 1, ...: returns the bytes. */
static size_t put_run(uint8_t *p, uint32_t id0, size_t n, size_t fs)
{
    for (size_t k = 0; k < n; k++)
        put(p + k * fs, id0 + (uint32_t)k, (uint32_t)(fs - HY_TLV_HEADER));
    return n * fs;
}

/* The frame of n bytes at p is one of put()'s, intact: returns its id. */
static uint32_t check_frame(const uint8_t *p, size_t n)
{
    assert_true(n >= HY_TLV_HEADER + 4);
    assert_int_equal(hy_le16(p), 9);
    uint32_t plen = hy_le32(p + 2);
    assert_int_equal(n, HY_TLV_HEADER + (size_t)plen);
    uint32_t id;
    memcpy(&id, p + HY_TLV_HEADER, 4);
    for (uint32_t i = 4; i < plen; i++)
        if (p[HY_TLV_HEADER + i] != (uint8_t)(id * 31u + i))
            fail_msg("frame %u damaged at byte %u", id, i);
    return id;
}

/* p[0..n) is exactly whole, intact frames: their ids. */
static size_t decode_ids(const uint8_t *p, size_t n, uint32_t *ids, size_t max)
{
    size_t off = 0, k = 0;
    while (off < n) {
        assert_true(off + HY_TLV_HEADER <= n);
        size_t fs = hy_tlv_size(p + off);
        assert_true(off + fs <= n);
        assert_true(k < max);
        ids[k++] = check_frame(p + off, fs);
        off += fs;
    }
    return k;
}

static void assert_ids(const uint32_t *ids, size_t k, const uint32_t *want, size_t nwant)
{
    assert_int_equal(k, nwant);
    for (size_t i = 0; i < k; i++)
        if (ids[i] != want[i])
            fail_msg("frame %zu: id %u, expected %u", i, ids[i], want[i]);
}

static const hy_fanq_seg *seg_at(const hy_fanq *q, size_t i) { return &q->seg[(q->first + i) % q->cap]; }

static bool inside(const hy_rbuf *b, const void *p)
{
    const uint8_t *c = p;
    return c >= b->data && c < b->data + b->cap;
}

/* What writev would write of at most n bytes, copied to out and consumed. */
static size_t write_out(hy_fanq *q, uint8_t *out, size_t n)
{
    struct iovec iov[64];
    int k = hy_fanq_iov(q, iov, 64);
    size_t got = 0;
    for (int i = 0; i < k && got < n; i++) {
        size_t m = iov[i].iov_len < n - got ? iov[i].iov_len : n - got;
        memcpy(out + got, iov[i].iov_base, m);
        got += m;
    }
    hy_fanq_consume(q, got);
    return got;
}

static uint8_t drained[1 << 20];

/* Everything pending, written out into `drained`: its length. */
static size_t drain_all(hy_fanq *q, size_t at)
{
    while (hy_fanq_pending(q) > 0) {
        size_t n = write_out(q, drained + at, sizeof drained - at);
        assert_true(n > 0);
        at += n;
    }
    assert_int_equal(hy_fanq_bytes(q), 0);
    return at;
}

static void test_run_referenced_or_copied(void **state)
{
    (void)state;
    hy_rbuf *b = hy_rbuf_new(HY_RBUF_READ_SIZE);
    assert_non_null(b);
    assert_int_equal(b->refs, 1);
    /* 0: ids 0-19, 20000: ids 20-39 (contiguous), 40000: ids 40-42 (small),
     * 43000: id 43 of exactly HY_FANQ_COPY_MAX, 59384: id 44 one byte less */
    size_t r1 = 0, r2 = put_run(b->data, 0, 20, FS);
    size_t sm = r2 + put_run(b->data + r2, 20, 20, FS);
    size_t e = sm + put_run(b->data + sm, 40, 3, FS);
    size_t f = e + put(b->data + e, 43, HY_FANQ_COPY_MAX - HY_TLV_HEADER);
    size_t end = f + put(b->data + f, 44, HY_FANQ_COPY_MAX - 1 - HY_TLV_HEADER);
    assert_int_equal(f - e, HY_FANQ_COPY_MAX);
    assert_int_equal(end - f, HY_FANQ_COPY_MAX - 1);

    hy_fanq q1, q2, q3;
    hy_fanq_init(&q1);
    hy_fanq_init(&q2);
    hy_fanq_init(&q3);
    struct iovec iov[8];

    /* a run of 20000 bytes is referenced: one more reference, no copy */
    assert_int_equal(hy_fanq_push_run(&q1, b, b->data + r1, 20000), HY_PUSH_QUEUED);
    assert_int_equal(b->refs, 2);
    assert_int_equal(hy_fanq_iov(&q1, iov, 8), 1);
    assert_ptr_equal(iov[0].iov_base, b->data);
    assert_int_equal(iov[0].iov_len, 20000);
    /* the next run, contiguous in the same buffer, extends that segment */
    assert_int_equal(hy_fanq_push_run(&q1, b, b->data + r2, 20000), HY_PUSH_QUEUED);
    assert_int_equal(b->refs, 2);
    assert_int_equal(q1.n, 1);
    assert_int_equal(hy_fanq_iov(&q1, iov, 8), 1);
    assert_ptr_equal(iov[0].iov_base, b->data);
    assert_int_equal(iov[0].iov_len, 40000);
    assert_int_equal(hy_fanq_frames(&q1), 40);
    /* a run under HY_FANQ_COPY_MAX is copied: no reference, elsewhere */
    assert_int_equal(hy_fanq_push_run(&q1, b, b->data + sm, 3 * FS), HY_PUSH_QUEUED);
    assert_int_equal(b->refs, 2);
    assert_int_equal(hy_fanq_iov(&q1, iov, 8), 2);
    assert_false(inside(b, iov[1].iov_base));
    assert_int_equal(iov[1].iov_len, 3 * FS);
    assert_memory_equal(iov[1].iov_base, b->data + sm, 3 * FS);
    assert_ptr_equal(seg_at(&q1, 1)->b, q1.own);
    /* exactly HY_FANQ_COPY_MAX is referenced (a segment of its own: the
     * last one is the copy) */
    assert_int_equal(hy_fanq_push_run(&q1, b, b->data + e, f - e), HY_PUSH_QUEUED);
    assert_int_equal(b->refs, 3);
    assert_int_equal(hy_fanq_iov(&q1, iov, 8), 3);
    assert_ptr_equal(iov[2].iov_base, b->data + e);
    assert_int_equal(iov[2].iov_len, HY_FANQ_COPY_MAX);
    assert_int_equal(hy_fanq_frames(&q1), 44);

    /* one byte less is copied; and so is anything with no buffer */
    assert_int_equal(hy_fanq_push_run(&q2, b, b->data + f, end - f), HY_PUSH_QUEUED);
    assert_int_equal(b->refs, 3);
    assert_int_equal(hy_fanq_push_run(&q2, NULL, b->data + r1, 20000), HY_PUSH_QUEUED);
    assert_int_equal(b->refs, 3);
    int k = hy_fanq_iov(&q2, iov, 8);
    assert_int_equal(k, 2);
    assert_false(inside(b, iov[0].iov_base));
    assert_false(inside(b, iov[1].iov_base));
    assert_int_equal(hy_fanq_pending(&q2), end - f + 20000);

    /* runs not continuing the last segment are segments of their own */
    assert_int_equal(hy_fanq_push_run(&q3, b, b->data + r2, 20000), HY_PUSH_QUEUED);
    assert_int_equal(hy_fanq_push_run(&q3, b, b->data + r1, 20000), HY_PUSH_QUEUED);
    assert_int_equal(q3.n, 2);
    assert_int_equal(b->refs, 5);

    /* the copies are copies: scribbling over their source changes nothing */
    memset(b->data + sm, 0, 3 * FS);
    memset(b->data + f, 0, end - f);
    uint32_t ids[64], want[64];
    size_t n = drain_all(&q1, 0);
    assert_int_equal(n, 40000 + 3 * FS + HY_FANQ_COPY_MAX);
    for (uint32_t i = 0; i < 44; i++)
        want[i] = i;
    assert_ids(ids, decode_ids(drained, n, ids, 64), want, 44);
    assert_int_equal(b->refs, 3); /* q1's two segments let go */
    n = drain_all(&q2, 0);
    want[0] = 44;
    for (uint32_t i = 0; i < 20; i++)
        want[1 + i] = i;
    assert_ids(ids, decode_ids(drained, n, ids, 64), want, 21);
    assert_int_equal(b->refs, 3);
    hy_fanq_free(&q3);
    assert_int_equal(b->refs, 1);
    hy_fanq_free(&q1);
    hy_fanq_free(&q2);
    assert_int_equal(b->refs, 1);
    hy_rbuf_unref(b);
}

/* One run fanned out to 100 queues is in memory once; every way a queue
 * lets go of it (written out whole or in pieces, cleared, freed) gives the
 * reference back exactly once. */
static void test_one_run_to_a_hundred_queues(void **state)
{
    (void)state;
    hy_rbuf *b = hy_rbuf_new(HY_RBUF_READ_SIZE);
    assert_non_null(b);
    size_t len = put_run(b->data, 0, 20, FS);
    static hy_fanq q[100];
    for (int i = 0; i < 100; i++) {
        hy_fanq_init(&q[i]);
        assert_int_equal(hy_fanq_push_run(&q[i], b, b->data, len), HY_PUSH_QUEUED);
        struct iovec iov[2];
        assert_int_equal(hy_fanq_iov(&q[i], iov, 2), 1);
        assert_ptr_equal(iov[0].iov_base, b->data);
    }
    assert_int_equal(b->refs, 101);
    uint32_t ids[32], want[20];
    for (uint32_t i = 0; i < 20; i++)
        want[i] = i;
    uint32_t refs = 101;
    for (int i = 0; i < 100; i++) {
        switch (i % 4) {
        case 0: /* all at once */
            assert_int_equal(write_out(&q[i], drained, len), len);
            assert_ids(ids, decode_ids(drained, len, ids, 32), want, 20);
            refs--;
            break;
        case 1: { /* in pieces: the reference goes with the last byte only */
            size_t at = 0;
            size_t piece = 1 + (size_t)i * 37;
            while (hy_fanq_pending(&q[i]) > piece) {
                at += write_out(&q[i], drained + at, piece);
                assert_int_equal(b->refs, refs);
            }
            at = drain_all(&q[i], at);
            assert_int_equal(at, len);
            assert_ids(ids, decode_ids(drained, len, ids, 32), want, 20);
            refs--;
            break;
        }
        case 2: /* partly written, then cleared */
            write_out(&q[i], drained, 2 * FS + 500);
            assert_int_equal(b->refs, refs);
            assert_int_equal(hy_fanq_frames(&q[i]), 18);
            assert_int_equal(hy_fanq_clear(&q[i]), 18);
            assert_int_equal(hy_fanq_pending(&q[i]), 0);
            assert_true(hy_fanq_at_boundary(&q[i]));
            refs--;
            break;
        case 3: /* freed with it queued */
            hy_fanq_free(&q[i]);
            refs--;
            break;
        }
        assert_int_equal(b->refs, refs);
    }
    assert_int_equal(b->refs, 1);
    for (int i = 0; i < 100; i++)
        hy_fanq_free(&q[i]);
    assert_int_equal(b->refs, 1);
    hy_rbuf_unref(b);
}

/* Across segments each buffer goes exactly with its last byte; a partial
 * write inside a referenced segment keeps it; rewinding goes back to the
 * start of the partly written frame, in the shared buffer itself. */
static void test_consume_across_segments(void **state)
{
    (void)state;
    hy_rbuf *b1 = hy_rbuf_new(HY_RBUF_READ_SIZE), *b2 = hy_rbuf_new(HY_RBUF_READ_SIZE);
    assert_non_null(b1);
    assert_non_null(b2);
    size_t l1 = put_run(b1->data, 0, 20, FS);  /* ids 0-19 */
    uint8_t c[256];
    size_t lc = put(c, 20, 100);               /* id 20, copied */
    size_t l2 = put_run(b2->data, 21, 20, FS); /* ids 21-40 */
    hy_fanq q;
    hy_fanq_init(&q);
    struct iovec iov[8];

    for (int round = 0; round < 2; round++) {
        assert_int_equal(hy_fanq_push_run(&q, b1, b1->data, l1), HY_PUSH_QUEUED);
        assert_int_equal(hy_fanq_push(&q, c, lc, 1 << 20, HY_OVERFLOW_DROP_OLDEST), HY_PUSH_QUEUED);
        assert_int_equal(hy_fanq_push_run(&q, b2, b2->data, l2), HY_PUSH_QUEUED);
        assert_int_equal(q.n, 3);
        assert_int_equal(hy_fanq_frames(&q), 41);
        assert_int_equal(b1->refs, 2);
        assert_int_equal(b2->refs, 2);
        if (round == 1) {
            /* one write across all three, ending inside the third */
            size_t n = write_out(&q, drained, l1 + lc + FS + 1);
            assert_int_equal(n, l1 + lc + FS + 1);
            assert_int_equal(b1->refs, 1);
            assert_int_equal(b2->refs, 2);
            assert_int_equal(q.n, 1);
            assert_false(hy_fanq_at_boundary(&q));
            n = drain_all(&q, n);
            assert_int_equal(b2->refs, 1);
            uint32_t ids[64];
            assert_int_equal(decode_ids(drained, n, ids, 64), 41);
            break;
        }
        write_out(&q, drained, l1 - 1);
        assert_int_equal(b1->refs, 2); /* one byte of it left */
        assert_false(hy_fanq_at_boundary(&q));
        assert_int_equal(hy_fanq_iov(&q, iov, 8), 3);
        assert_ptr_equal(iov[0].iov_base, b1->data + l1 - 1);
        assert_int_equal(iov[0].iov_len, 1);
        assert_int_equal(hy_fanq_bytes(&q), FS + lc + l2); /* written frames let go */
        write_out(&q, drained + l1 - 1, 1);
        assert_int_equal(b1->refs, 1); /* its last byte */
        assert_true(hy_fanq_at_boundary(&q));
        assert_int_equal(q.n, 2);
        assert_int_equal(hy_fanq_iov(&q, iov, 8), 2);
        assert_memory_equal(iov[0].iov_base, c, lc);
        assert_int_equal(b2->refs, 2);

        /* the copy and two and a half frames of the third segment */
        write_out(&q, drained + l1, lc + 2 * FS + 500);
        assert_int_equal(b2->refs, 2);
        assert_false(hy_fanq_at_boundary(&q));
        assert_int_equal(q.n, 1);
        assert_int_equal(hy_fanq_iov(&q, iov, 8), 1);
        assert_ptr_equal(iov[0].iov_base, b2->data + 2 * FS + 500);
        assert_int_equal(hy_fanq_pending(&q), l2 - 2 * FS - 500);
        assert_int_equal(hy_fanq_bytes(&q), l2 - 2 * FS);
        assert_int_equal(hy_fanq_frames(&q), 18); /* 23 (partly written) to 40 */

        /* the reader is gone: frame 23 goes out again whole */
        hy_fanq_rewind(&q);
        assert_true(hy_fanq_at_boundary(&q));
        assert_int_equal(b2->refs, 2);
        assert_int_equal(hy_fanq_iov(&q, iov, 8), 1);
        assert_ptr_equal(iov[0].iov_base, b2->data + 2 * FS);
        assert_int_equal(hy_fanq_pending(&q), l2 - 2 * FS);
        assert_int_equal(hy_fanq_frames(&q), 18);
        size_t at = l1 + lc + 2 * FS; /* the 500 bytes of 23 written are lost with the reader */
        write_out(&q, drained + at, 300);
        assert_false(hy_fanq_at_boundary(&q));
        hy_fanq_rewind(&q); /* and again, before it is through */
        at = drain_all(&q, at);
        assert_int_equal(b2->refs, 1);
        uint32_t ids[64], want[41];
        for (uint32_t i = 0; i < 41; i++)
            want[i] = i;
        assert_ids(ids, decode_ids(drained, at, ids, 64), want, 41);
    }
    hy_fanq_free(&q);
    assert_int_equal(b1->refs, 1);
    assert_int_equal(b2->refs, 1);
    hy_rbuf_unref(b1);
    hy_rbuf_unref(b2);
}

/* Drop-oldest over referenced and copied segments: the frame being written
 * is never touched, a victim inside a referenced segment splits it, and
 * what comes out is the frames pushed, in order, minus the dropped ones. */
static void test_drop_oldest_with_shared_segments(void **state)
{
    (void)state;
    hy_rbuf *b1 = hy_rbuf_new(HY_RBUF_READ_SIZE), *b2 = hy_rbuf_new(HY_RBUF_READ_SIZE);
    assert_non_null(b1);
    assert_non_null(b2);
    const size_t F2 = 2000;
    size_t l1 = put_run(b1->data, 0, 10, F2); /* ids 0-9 */
    uint8_t c[4096];
    size_t l2 = put_run(b2->data, 12, 10, F2); /* ids 12-21 */
    hy_fanq q;
    hy_fanq_init(&q);
    struct iovec iov[16];

    assert_int_equal(hy_fanq_push_run(&q, b1, b1->data, l1), HY_PUSH_QUEUED);
    size_t lc = put(c, 10, 94);
    assert_int_equal(hy_fanq_push(&q, c, lc, 1 << 20, HY_OVERFLOW_DROP_OLDEST), HY_PUSH_QUEUED);
    put(c, 11, 94);
    assert_int_equal(hy_fanq_push(&q, c, lc, 1 << 20, HY_OVERFLOW_DROP_OLDEST), HY_PUSH_QUEUED);
    assert_int_equal(hy_fanq_push_run(&q, b2, b2->data, l2), HY_PUSH_QUEUED);
    assert_int_equal(q.n, 3); /* b1 0-9, own 10-11, b2 12-21 */
    assert_int_equal(hy_fanq_frames(&q), 22);
    assert_int_equal(hy_fanq_bytes(&q), 40200);

    size_t at = write_out(&q, drained, 10); /* frame 0 is going out */
    /* room for 22 (100 bytes): frame 1, in the middle of b1's segment, goes */
    lc = put(c, 22, 94);
    assert_int_equal(hy_fanq_push(&q, c, lc, hy_fanq_bytes(&q), HY_OVERFLOW_DROP_OLDEST), HY_PUSH_QUEUED);
    assert_int_equal(q.dropped_oldest, 1);
    assert_int_equal(b1->refs, 3); /* split: two segments of b1 */
    assert_int_equal(q.n, 5);      /* b1 0, b1 2-9, own 10-11, b2 12-21, own 22 */
    assert_int_equal(hy_fanq_iov(&q, iov, 16), 5);
    assert_ptr_equal(iov[0].iov_base, b1->data + 10);
    assert_int_equal(iov[0].iov_len, F2 - 10);
    assert_ptr_equal(iov[1].iov_base, b1->data + 2 * F2);
    assert_int_equal(iov[1].iov_len, 8 * F2);
    assert_int_equal(hy_fanq_bytes(&q), 40200 - F2 + lc);
    assert_int_equal(hy_fanq_frames(&q), 22);
    assert_false(hy_fanq_at_boundary(&q));

    /* room for 23 (2000 bytes): frame 2, the front of the second segment */
    size_t l23 = put(c, 23, (uint32_t)(F2 - HY_TLV_HEADER));
    assert_int_equal(hy_fanq_push(&q, c, l23, hy_fanq_bytes(&q), HY_OVERFLOW_DROP_OLDEST), HY_PUSH_QUEUED);
    assert_int_equal(q.dropped_oldest, 2);
    assert_int_equal(b1->refs, 3);
    hy_fanq_iov(&q, iov, 16);
    assert_ptr_equal(iov[0].iov_base, b1->data + 10);
    assert_ptr_equal(iov[1].iov_base, b1->data + 3 * F2);

    /* a limit 14000 lower: 3-9 and 10 go, and with them b1's second segment */
    lc = put(c, 24, 94);
    assert_int_equal(hy_fanq_push(&q, c, lc, hy_fanq_bytes(&q) - 7 * F2, HY_OVERFLOW_DROP_OLDEST),
                     HY_PUSH_QUEUED);
    assert_int_equal(q.dropped_oldest, 10);
    assert_int_equal(b1->refs, 2);
    assert_int_equal(b2->refs, 2);
    assert_int_equal(hy_fanq_frames(&q), 15); /* 0, 11, 12-21, 22, 23, 24 */
    hy_fanq_iov(&q, iov, 16);
    assert_ptr_equal(iov[0].iov_base, b1->data + 10);
    assert_int_equal(iov[0].iov_len, F2 - 10);

    /* drop-newest refuses and touches nothing */
    assert_int_equal(hy_fanq_push(&q, c, lc, hy_fanq_bytes(&q), HY_OVERFLOW_DROP_NEWEST), HY_PUSH_DROPPED);
    assert_int_equal(q.dropped_newest, 1);
    assert_int_equal(q.dropped_oldest, 10);
    assert_int_equal(hy_fanq_frames(&q), 15);

    at = drain_all(&q, at);
    uint32_t ids[64];
    const uint32_t want[] = {0, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24};
    assert_ids(ids, decode_ids(drained, at, ids, 64), want, 15);
    assert_int_equal(b1->refs, 1);
    assert_int_equal(b2->refs, 1);

    /* nothing droppable but the frame being written: the new one is refused */
    assert_int_equal(hy_fanq_push_run(&q, b1, b1->data, l1), HY_PUSH_QUEUED);
    at = write_out(&q, drained, 9 * F2 + 1);
    assert_int_equal(hy_fanq_frames(&q), 1);
    assert_int_equal(hy_fanq_push(&q, c, lc, 100, HY_OVERFLOW_DROP_OLDEST), HY_PUSH_DROPPED);
    assert_int_equal(q.dropped_newest, 2);
    assert_int_equal(q.dropped_oldest, 10);
    assert_int_equal(b1->refs, 2);
    at = drain_all(&q, at);
    const uint32_t want0[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    assert_ids(ids, decode_ids(drained, at, ids, 64), want0, 10);
    assert_int_equal(b1->refs, 1);

    /* the victim is the last frame of the segment being written: no split */
    assert_int_equal(hy_fanq_push_run(&q, b1, b1->data, 9 * F2), HY_PUSH_QUEUED); /* 0-8 */
    at = write_out(&q, drained, 7 * F2 + 7); /* 7 is going out, 8 the last */
    assert_int_equal(hy_fanq_frames(&q), 2);
    lc = put(c, 25, 94);
    assert_int_equal(hy_fanq_push(&q, c, lc, hy_fanq_bytes(&q), HY_OVERFLOW_DROP_OLDEST), HY_PUSH_QUEUED);
    assert_int_equal(q.dropped_oldest, 11);
    assert_int_equal(b1->refs, 2);
    assert_int_equal(q.n, 2);
    at = drain_all(&q, at);
    const uint32_t want1[] = {0, 1, 2, 3, 4, 5, 6, 7, 25};
    assert_ids(ids, decode_ids(drained, at, ids, 64), want1, 9);
    assert_int_equal(b1->refs, 1);

    /* nothing written yet: the first frame of a referenced segment goes */
    assert_int_equal(hy_fanq_push_run(&q, b1, b1->data, l1), HY_PUSH_QUEUED);
    assert_int_equal(hy_fanq_push(&q, c, lc, hy_fanq_bytes(&q), HY_OVERFLOW_DROP_OLDEST), HY_PUSH_QUEUED);
    assert_int_equal(q.dropped_oldest, 12);
    hy_fanq_iov(&q, iov, 16);
    assert_ptr_equal(iov[0].iov_base, b1->data + F2);
    assert_int_equal(b1->refs, 2);

    /* clear: every frame, the partly written one included; references back */
    assert_int_equal(hy_fanq_push_run(&q, b2, b2->data, l2), HY_PUSH_QUEUED);
    write_out(&q, drained, 10);
    assert_int_equal(b2->refs, 2);
    assert_int_equal(hy_fanq_frames(&q), 9 + 1 + 10);
    assert_int_equal(hy_fanq_clear(&q), 20);
    assert_int_equal(b1->refs, 1);
    assert_int_equal(b2->refs, 1);
    assert_int_equal(hy_fanq_bytes(&q), 0);
    assert_int_equal(hy_fanq_frames(&q), 0);
    assert_true(hy_fanq_at_boundary(&q));
    assert_int_equal(hy_fanq_clear(&q), 0);
    hy_fanq_free(&q);
    hy_rbuf_unref(b1);
    hy_rbuf_unref(b2);
}

/* ---- random: copies and shared runs, partial writes, rewinds, drops -------- */

#define RQ 3           /* destination queues, all fed the same frames */
#define RB 3           /* shared read buffers */
#define RLIMIT (48u * 1024)

typedef struct rq {
    hy_fanq q;
    uint8_t out[1 << 16]; /* written, not yet decoded: the partly written frame */
    size_t outlen;
    uint64_t pushed, delivered, cleared;
    uint32_t last_seen;
} rq;

static uint64_t xs(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void rq_decode(rq *r)
{
    size_t off = 0;
    while (off + HY_TLV_HEADER <= r->outlen) {
        size_t fs = hy_tlv_size(r->out + off);
        if (off + fs > r->outlen)
            break;
        uint32_t id = check_frame(r->out + off, fs);
        if (r->delivered > 0 && id <= r->last_seen)
            fail_msg("frame %u after %u: out of order or twice", id, r->last_seen);
        r->last_seen = id;
        r->delivered++;
        off += fs;
    }
    memmove(r->out, r->out + off, r->outlen - off);
    r->outlen -= off;
    /* what is left is the start of the frame being written */
    assert_int_equal(r->outlen, r->q.sent);
}

static hy_rbuf *rbufs[RB];
static struct {
    unsigned referenced, merged, copied, splits, reuses, rewinds;
} st;

static uint32_t refs_sum(void)
{
    uint32_t n = 0;
    for (int k = 0; k < RB; k++)
        n += rbufs[k]->refs;
    return n;
}

/* The frames hyphad's sink would push: a run that fits is pushed whole
 * (referenced or copied), one that does not goes frame by frame under the
 * policy. */
static void rq_push(rq *r, hy_rbuf *b, const uint8_t *data, size_t len, size_t frames)
{
    r->pushed += frames;
    if (frames > 1 && hy_fanq_bytes(&r->q) + len <= RLIMIT) {
        uint32_t before = b ? b->refs : 0;
        size_t nseg = r->q.n;
        assert_int_equal(hy_fanq_push_run(&r->q, b, data, len), HY_PUSH_QUEUED);
        if (b && len >= HY_FANQ_COPY_MAX) {
            const hy_fanq_seg *last = seg_at(&r->q, r->q.n - 1);
            assert_ptr_equal(last->b, b);
            assert_ptr_equal(last->b->data + last->off + last->len, data + len);
            if (b->refs == before + 1) {
                assert_int_equal(r->q.n, nseg + 1);
                st.referenced++;
            } else {
                assert_int_equal(b->refs, before); /* continued the last segment */
                assert_int_equal(r->q.n, nseg);
                st.merged++;
            }
        } else {
            if (b)
                assert_int_equal(b->refs, before);
            st.copied++;
        }
        return;
    }
    for (size_t off = 0; off < len;) {
        size_t fs = hy_tlv_size(data + off);
        uint32_t before = refs_sum();
        hy_push_result res = hy_fanq_push(&r->q, data + off, fs, RLIMIT, HY_OVERFLOW_DROP_OLDEST);
        assert_true(res == HY_PUSH_QUEUED || res == HY_PUSH_DROPPED);
        st.splits += refs_sum() > before; /* a copy adds none: only a split does */
        off += fs;
    }
}

/* Segments are whole frames, add up to `bytes`, and each holds exactly one
 * of its buffer's references: counted into held[]. */
static void rq_check(const rq *r, hy_rbuf *const *bufs, uint32_t *held)
{
    const hy_fanq *q = &r->q;
    size_t sum = 0;
    for (size_t i = 0; i < q->n; i++) {
        const hy_fanq_seg *s = seg_at(q, i);
        assert_true(s->len > 0);
        assert_true(s->off + s->len <= s->b->cap);
        sum += s->len;
        for (int k = 0; k < RB; k++)
            held[k] += s->b == bufs[k];
    }
    assert_int_equal(sum, q->bytes);
    if (q->n)
        assert_true(q->sent < hy_tlv_size(seg_at(q, 0)->b->data + seg_at(q, 0)->off));
    else
        assert_int_equal(q->sent, 0);
}

static void test_random_shared_runs(void **state)
{
    (void)state;
    static rq rqs[RQ];
    size_t cur[RB] = {0};
    memset(&st, 0, sizeof st);
    for (int k = 0; k < RB; k++)
        assert_non_null(rbufs[k] = hy_rbuf_new(HY_RBUF_READ_SIZE));
    for (int j = 0; j < RQ; j++) {
        memset(&rqs[j], 0, sizeof rqs[j]);
        hy_fanq_init(&rqs[j].q);
    }
    uint64_t s = 0x9E3779B97F4A7C15ull;
    uint32_t next_id = 0;
    static uint8_t local[64 * 1024];
    for (int step = 0; step < 30000; step++) {
        uint64_t r = xs(&s);
        unsigned what = (unsigned)(r % 8);
        if (what <= 2) {
            /* a run of frames read into one of the shared buffers */
            size_t nfr = 1 + (size_t)(xs(&s) % 60), maxlen = nfr * (HY_TLV_HEADER + 704);
            int k = (int)((r >> 8) % RB), tries = 0;
            if ((r >> 16) % 4 == 0)
                cur[k] += 1 + (size_t)((r >> 20) % 100); /* a gap: not contiguous */
            while (tries < RB && cur[k] + maxlen > rbufs[k]->cap) {
                if (rbufs[k]->refs == 1) { /* no queue holds it: read over it */
                    cur[k] = 0;
                    st.reuses++;
                    break;
                }
                k = (k + 1) % RB;
                tries++;
            }
            hy_rbuf *b = tries < RB ? rbufs[k] : NULL; /* all held: from elsewhere */
            uint8_t *p = b ? b->data + cur[k] : local;
            size_t len = 0;
            for (size_t i = 0; i < nfr; i++)
                len += put(p + len, next_id++, 4 + (uint32_t)(xs(&s) % 700));
            if (b)
                cur[k] += len;
            for (int j = 0; j < RQ; j++)
                rq_push(&rqs[j], b, p, len, nfr);
        } else if (what == 3) {
            /* a single frame from elsewhere: copied, under the policy */
            uint8_t f[1024];
            size_t len = put(f, next_id++, 4 + (uint32_t)(xs(&s) % 700));
            for (int j = 0; j < RQ; j++)
                rq_push(&rqs[j], NULL, f, len, 1);
        } else {
            for (int j = 0; j < RQ; j++) {
                rq *q = &rqs[j];
                uint64_t a = xs(&s);
                if (a % 16 == 0) {
                    /* the reader vanished: what it got of the partly
                     * written frame is lost, the frame goes out again */
                    st.rewinds += q->q.sent > 0;
                    q->outlen = 0;
                    hy_fanq_rewind(&q->q);
                } else if (a % 512 == 1) {
                    q->cleared += hy_fanq_clear(&q->q);
                    q->outlen = 0;
                } else {
                    /* queue j writes up to (j + 1) * 12000 bytes at a time */
                    size_t n = (size_t)((a >> 16) % ((uint64_t)(j + 1) * 12000));
                    q->outlen += write_out(&q->q, q->out + q->outlen, n);
                    rq_decode(q);
                }
            }
        }
        uint32_t held[RB] = {0};
        for (int j = 0; j < RQ; j++)
            rq_check(&rqs[j], rbufs, held);
        for (int k = 0; k < RB; k++)
            if (rbufs[k]->refs != 1 + held[k])
                fail_msg("step %d: buffer %d has %u references, %u segments hold it", step, k,
                         rbufs[k]->refs, held[k]);
    }
    uint64_t dropped = 0;
    for (int j = 0; j < RQ; j++) {
        rq *q = &rqs[j];
        while (hy_fanq_pending(&q->q) > 0) {
            q->outlen += write_out(&q->q, q->out + q->outlen, sizeof q->out - q->outlen);
            rq_decode(q);
        }
        assert_int_equal(q->outlen, 0);
        assert_int_equal(q->pushed, next_id);
        if (q->pushed != q->delivered + q->q.dropped_oldest + q->q.dropped_newest + q->cleared)
            fail_msg("queue %d: %llu pushed, %llu delivered, %llu + %llu dropped, %llu cleared", j,
                     (unsigned long long)q->pushed, (unsigned long long)q->delivered,
                     (unsigned long long)q->q.dropped_oldest, (unsigned long long)q->q.dropped_newest,
                     (unsigned long long)q->cleared);
        dropped += q->q.dropped_oldest;
        print_message("queue %d: %llu delivered, %llu + %llu dropped, %llu cleared\n", j,
                      (unsigned long long)q->delivered, (unsigned long long)q->q.dropped_oldest,
                      (unsigned long long)q->q.dropped_newest, (unsigned long long)q->cleared);
        hy_fanq_free(&q->q);
    }
    print_message("runs referenced %u, merged %u, copied %u; splits %u, reuses %u, rewinds %u\n",
                  st.referenced, st.merged, st.copied, st.splits, st.reuses, st.rewinds);
    /* every path was taken */
    assert_true(dropped > 0);
    assert_true(st.referenced > 0);
    assert_true(st.merged > 0);
    assert_true(st.copied > 0);
    assert_true(st.splits > 0);
    assert_true(st.reuses > 0);
    assert_true(st.rewinds > 0);
    for (int k = 0; k < RB; k++) {
        assert_int_equal(rbufs[k]->refs, 1);
        hy_rbuf_unref(rbufs[k]);
    }
}

/* ---- the pool ----------------------------------------------------------------- */

static void test_rbuf_pool(void **state)
{
    (void)state;
    hy_rbuf_pool_drain(); /* whatever the tests before left */
    hy_rbuf *a = hy_rbuf_new(HY_RBUF_READ_SIZE);
    assert_non_null(a);
    assert_int_equal(a->refs, 1);
    assert_true(a->cap >= HY_RBUF_READ_SIZE);
    a->used = 123;
    /* a reference taken and given back: still a's, not reused */
    hy_rbuf_ref(a);
    hy_rbuf_unref(a);
    assert_int_equal(a->refs, 1);
    hy_rbuf *other = hy_rbuf_new(HY_RBUF_READ_SIZE);
    assert_ptr_not_equal(other, a);
    /* to zero: the next buffer of that size is the same one, fresh */
    hy_rbuf_unref(a);
    hy_rbuf *b = hy_rbuf_new(HY_RBUF_READ_SIZE);
    assert_ptr_equal(b, a);
    assert_int_equal(b->refs, 1);
    assert_int_equal(b->used, 0);

    /* a queue the last holder: the buffer comes back when its last byte is written */
    size_t len = put_run(b->data, 0, 20, FS);
    hy_fanq q;
    hy_fanq_init(&q);
    assert_int_equal(hy_fanq_push_run(&q, b, b->data, len), HY_PUSH_QUEUED);
    hy_rbuf_unref(b);
    assert_int_equal(b->refs, 1);
    write_out(&q, drained, len - 1);
    hy_rbuf *c = hy_rbuf_new(HY_RBUF_READ_SIZE);
    assert_ptr_not_equal(c, b); /* still held */
    write_out(&q, drained + len - 1, 1);
    hy_rbuf *d = hy_rbuf_new(HY_RBUF_READ_SIZE);
    assert_ptr_equal(d, b);
    hy_fanq_free(&q);

    /* a buffer of another size is not pooled: the next is still d */
    hy_rbuf_unref(d);
    hy_rbuf *small = hy_rbuf_new(100);
    assert_non_null(small);
    hy_rbuf_unref(small);
    hy_rbuf *e = hy_rbuf_new(HY_RBUF_READ_SIZE);
    assert_ptr_equal(e, d);

    /* drain frees what the pool holds */
    hy_rbuf *many[8] = {e, c, other};
    for (int i = 3; i < 8; i++)
        assert_non_null(many[i] = hy_rbuf_new(HY_RBUF_READ_SIZE));
    for (int i = 0; i < 8; i++)
        hy_rbuf_unref(many[i]);
    size_t before = heap_in_use();
    hy_rbuf_pool_drain();
    size_t after = heap_in_use();
    assert_true(before >= after + 8 * (size_t)HY_RBUF_READ_SIZE);
    /* and the pool works after it */
    hy_rbuf *f = hy_rbuf_new(HY_RBUF_READ_SIZE);
    assert_non_null(f);
    hy_rbuf_unref(f);
    hy_rbuf *g = hy_rbuf_new(HY_RBUF_READ_SIZE);
    assert_ptr_equal(g, f);
    hy_rbuf_unref(g);
    hy_rbuf_pool_drain();
}


/* ---- keep: written frames stay until released, and go again on a rewind ---- */

/* The frames whole in out[0, n): their ids appended to ids; returns how many. */
static size_t whole_ids(const uint8_t *out, size_t n, uint32_t *ids, size_t nids)
{
    size_t off = 0;
    while (off + HY_TLV_HEADER <= n && off + hy_tlv_size(out + off) <= n) {
        ids[nids++] = check_frame(out + off, hy_tlv_size(out + off));
        off += hy_tlv_size(out + off);
    }
    return nids;
}

/* A reader takes part of what was written, hyphad learns it late, the
 * connection goes at random: what the reader got whole, connection after
 * connection, is every frame once and in order when the release is told
 * exactly what was taken before each rewind. Runs referenced from one big
 * buffer continue each other, so segments merge behind the write position. */
static void test_keep_random(void **state)
{
    (void)state;
    enum { N = 6000 };
    static uint8_t out[8 << 20];
    static uint32_t ids[2 * N];
    hy_rbuf *big = hy_rbuf_new(16u << 20);
    assert_non_null(big);
    hy_fanq q;
    hy_fanq_init(&q);
    q.keep = true;
    uint64_t s = 0x2545F4914F6CDD1Dull;
    uint32_t next = 0;
    size_t nids = 0, outlen = 0, taken = 0, cur = 0;
    while (next < N || hy_fanq_bytes(&q)) {
        uint64_t r = xs(&s);
        if (next < N && r % 4 == 0) {
            size_t nfr = 1 + (size_t)(xs(&s) % 40), len = 0;
            uint8_t *p = big->data + cur;
            for (size_t i = 0; i < nfr && next < N; i++)
                len += put(p + len, next++, 4 + (uint32_t)(xs(&s) % 900));
            assert_int_equal(hy_fanq_push_run(&q, big, p, len), HY_PUSH_QUEUED);
            cur += len;
        } else if (r % 4 == 1) {
            outlen += write_out(&q, out + outlen, (size_t)(xs(&s) % 30000));
        } else if (r % 4 == 2) {
            taken += (size_t)(xs(&s) % (outlen - taken + 1)); /* the reader reads */
            if (xs(&s) % 3 == 0) /* hyphad asks the kernel */
                hy_fanq_taken(&q, q.sent - (outlen - taken)); /* as the sink does: all but the unread */
        } else if (r % 64 == 3 || (next == N && hy_fanq_pending(&q) == 0 && taken == outlen)) {
            hy_fanq_taken(&q, q.sent - (outlen - taken)); /* as the sink does: all but the unread */
            assert_int_equal(hy_fanq_unconfirmed(&q), outlen - taken);
            size_t started = 0, off = 0;
            nids = whole_ids(out, taken, ids, nids);
            while (off + hy_tlv_size(out + off) <= taken) /* the frames whole in what was taken */
                off += hy_tlv_size(out + off);
            for (; off < outlen; started++)
                off += hy_tlv_size(out + off);
            assert_int_equal(hy_fanq_rewind(&q), started); /* the connection goes */
            outlen = taken = 0;
            assert_int_equal(hy_fanq_untaken_frames(&q), hy_fanq_frames(&q));
        }
        assert_true(q.sent <= hy_fanq_bytes(&q));
    }
    assert_int_equal(nids, N);
    for (uint32_t i = 0; i < N; i++)
        assert_int_equal(ids[i], i);
    hy_fanq_free(&q);
    hy_rbuf_unref(big);
}

/* ---- the history: what a dead reader never read --------------------------- */

/* Frames of 30..129 bytes written in bursts, a reader that read R of them:
 * the frames it never read whole are the ones ending past R, as long as
 * they are within the history (the pipe's capacity); the frame partly
 * written is hy_fanq_clear's to count. */
static void test_history_counts_what_was_never_read(void **state)
{
    (void)state;
    static uint8_t out[1 << 18];
    size_t ends[2048], nends = 0, outlen = 0;
    hy_fanq q;
    hy_fanq_init(&q);
    q.hist.keep = 4096;
    uint64_t s = 7;
    for (uint32_t id = 0; id < 1500; id++) {
        uint8_t f[256];
        size_t len = put(f, id, 4 + (uint32_t)(xs(&s) % 100));
        assert_int_equal(hy_fanq_push(&q, f, len, 1u << 20, HY_OVERFLOW_BLOCK), HY_PUSH_QUEUED);
        if (xs(&s) % 8 == 0)
            outlen += write_out(&q, out + outlen, (size_t)(xs(&s) % 3000));
    }
    for (uint32_t id = 0; id < 100; id++) { /* the last burst written in small pieces: frames let go from */
        uint8_t f[256];                      /* inside segments, not only whole ones */
        assert_int_equal(hy_fanq_push(&q, f, put(f, 5000 + id, 4 + id), 1u << 20, HY_OVERFLOW_BLOCK), HY_PUSH_QUEUED);
    }
    while (hy_fanq_pending(&q) > 5) { /* the last frame partly written */
        size_t k = 1 + (size_t)(xs(&s) % 300);
        outlen += write_out(&q, out + outlen, k < hy_fanq_pending(&q) - 5 ? k : hy_fanq_pending(&q) - 5);
    }
    for (size_t off = 0; off + HY_TLV_HEADER <= outlen && off + hy_tlv_size(out + off) <= outlen;)
        ends[nends++] = off += hy_tlv_size(out + off);
    assert_true(q.sent > 0);
    for (size_t read = outlen - 4000; read <= outlen; read += 37) {
        size_t want = 0;
        for (size_t i = 0; i < nends; i++)
            want += ends[i] > read; /* not read whole */
        assert_int_equal(hy_fanq_unread_frames(&q, outlen - read), want);
    }
    assert_int_equal(hy_fanq_unread_frames(&q, 0), 0);
    assert_true(q.hist.bytes >= 4096 - 256 && q.hist.bytes < 4096 + 16384); /* bounded: keep and one segment */
    assert_int_equal(hy_fanq_clear(&q), 1); /* the partly written frame */
    size_t kept = q.hist.bytes;             /* the history outlives a clear (a stop: stdin closed, the */
    assert_true(kept > 0);                  /* worker still reading) until it is forgotten */
    assert_int_equal(hy_fanq_unread_frames(&q, 0), 0);
    hy_fanq_forget_written(&q);
    assert_int_equal(q.hist.n, 0);
    assert_int_equal(q.hist.bytes, 0);
    hy_fanq_free(&q);
}

/* The same stream, a reader that died having read R bytes of it: the
 * frames it never read at all go back to the front, in order, before the
 * partly written one (whole again) and what waited behind it; a frame it
 * read part of is `cut`; the history is let go. Then a second reader gets
 * the whole rest of the stream from its first unread frame on. */
static void test_reclaim_gives_back_what_was_never_read(void **state)
{
    (void)state;
    static uint8_t out[1 << 18];
    for (size_t trial = 0; trial < 60; trial++) {
        size_t starts[2048], nstarts = 0, outlen = 0;
        uint32_t ids[2048], nids = 0;
        hy_fanq q;
        hy_fanq_init(&q);
        q.hist.keep = 4096;
        uint64_t s = 11 + trial;
        for (uint32_t id = 0; id < 400; id++) {
            uint8_t f[256];
            size_t len = put(f, id, 4 + (uint32_t)(xs(&s) % 100));
            assert_int_equal(hy_fanq_push(&q, f, len, 1u << 20, HY_OVERFLOW_BLOCK), HY_PUSH_QUEUED);
            if (xs(&s) % 8 == 0)
                outlen += write_out(&q, out + outlen, (size_t)(xs(&s) % 2000));
        }
        bool partial = trial % 2 == 0;
        if (partial && hy_fanq_pending(&q) > 5)
            outlen += write_out(&q, out + outlen, 1 + (size_t)(xs(&s) % 3)); /* the next frame begun */
        size_t whole = 0; /* the written frames: starts and ids */
        for (size_t off = 0; off + HY_TLV_HEADER <= outlen && off + hy_tlv_size(out + off) <= outlen;) {
            starts[nstarts] = off;
            ids[nids++] = check_frame(out + off, hy_tlv_size(out + off));
            nstarts++;
            whole = off += hy_tlv_size(out + off);
        }
        size_t unread = (size_t)(xs(&s) % 3000);
        if (unread > outlen)
            unread = outlen;
        size_t read = outlen - unread;
        size_t want_cut = 0, first = nstarts; /* the first frame it never began */
        for (size_t i = 0; i < nstarts; i++) {
            size_t end = i + 1 < nstarts ? starts[i + 1] : whole;
            if (starts[i] >= read && first == nstarts)
                first = i;
            want_cut += starts[i] < read && end > read;
        }
        size_t pending_before = hy_fanq_frames(&q);
        hy_fanq_reclaim_res r = hy_fanq_reclaim(&q, unread);
        assert_int_equal(r.frames, nstarts - first);
        assert_int_equal(r.cut, want_cut);
        assert_int_equal(r.nomem, 0);
        assert_int_equal(q.hist.n, 0);
        assert_int_equal(q.sent, 0);
        assert_int_equal(hy_fanq_frames(&q), nstarts - first + pending_before);
        /* the next reader: ids first .. nstarts-1, then the rest of 0..399 in order */
        static uint8_t again[1 << 18];
        size_t n = 0;
        while (hy_fanq_pending(&q))
            n += write_out(&q, again + n, 977);
        uint32_t want = first < nstarts ? ids[first] : (nids ? ids[nids - 1] + 1 : 0);
        for (size_t off = 0; off < n; off += hy_tlv_size(again + off))
            assert_int_equal(check_frame(again + off, hy_tlv_size(again + off)), want++);
        assert_int_equal(want, 400);
        hy_fanq_free(&q);
    }
}

/* What an upgrade carries: a queue partly written (and a `keep` one with
 * some of it known taken) saved as bytes and numbers, restored into a new
 * queue, goes on exactly where it was; so does the history. */
static void test_save_and_restore(void **state)
{
    (void)state;
    static uint8_t out[1 << 16], saved[1 << 16], again[1 << 16];
    for (int keep = 0; keep < 2; keep++) {
        hy_fanq q, r;
        hy_fanq_init(&q);
        hy_fanq_init(&r);
        q.keep = r.keep = keep;
        q.hist.keep = r.hist.keep = keep ? 0 : 4096;
        for (uint32_t id = 0; id < 300; id++) {
            uint8_t f[256];
            assert_int_equal(hy_fanq_push(&q, f, put(f, id, 4 + id % 90), 1u << 20, HY_OVERFLOW_BLOCK), HY_PUSH_QUEUED);
        }
        size_t wrote = 0;
        for (int k = 0; k < 7; k++)
            wrote += write_out(&q, out + wrote, 1013); /* the last frame written in part */
        if (keep)
            hy_fanq_taken(&q, wrote / 2);
        size_t n = hy_fanq_save(&q, NULL), nh = hy_fanq_save_history(&q, NULL);
        assert_int_equal(hy_fanq_save(&q, saved), n);
        assert_int_equal(n, hy_fanq_bytes(&q));
        assert_int_equal(hy_fanq_restore(&r, saved, n, q.sent, q.acked), 0);
        assert_int_equal(hy_fanq_pending(&r), hy_fanq_pending(&q));
        assert_int_equal(hy_fanq_unconfirmed(&r), hy_fanq_unconfirmed(&q));
        assert_int_equal(hy_fanq_frames(&r), hy_fanq_frames(&q));
        if (!keep) {
            static uint8_t hist[1 << 16];
            assert_int_equal(hy_fanq_save_history(&q, hist), nh);
            assert_true(nh > 0);
            assert_int_equal(hy_fanq_restore_history(&r, hist, nh), 0);
            assert_int_equal(r.hist.bytes, nh);
        }
        /* both write the same rest of the stream */
        size_t a = 0, b = 0;
        while (hy_fanq_pending(&q))
            a += write_out(&q, out + a, 777);
        while (hy_fanq_pending(&r))
            b += write_out(&r, again + b, 555);
        assert_int_equal(a, b);
        assert_memory_equal(out, again, a);
        if (!keep) /* and the restored history says what the old one would of a reader that died now */
            assert_int_equal(hy_fanq_unread_frames(&r, 300), hy_fanq_unread_frames(&q, 300));
        hy_fanq_free(&q);
        hy_fanq_free(&r);
    }
    /* numbers that do not fit the bytes are refused */
    hy_fanq q;
    hy_fanq_init(&q);
    uint8_t f[64];
    size_t len = put(f, 1, 10);
    assert_int_equal(hy_fanq_restore(&q, f, len, len + 1, 0), -1);
    assert_int_equal(hy_fanq_restore(&q, f, len, 2, 3), -1);
    hy_fanq_free(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_and_partial_writes),
        cmocka_unit_test(test_drop_oldest_spares_the_frame_being_written),
        cmocka_unit_test(test_drop_newest_and_block),
        cmocka_unit_test(test_grows_and_compacts),
        cmocka_unit_test(test_random_against_the_stream),
        cmocka_unit_test(test_run_referenced_or_copied),
        cmocka_unit_test(test_one_run_to_a_hundred_queues),
        cmocka_unit_test(test_consume_across_segments),
        cmocka_unit_test(test_drop_oldest_with_shared_segments),
        cmocka_unit_test(test_random_shared_runs),
        cmocka_unit_test(test_keep_random),
        cmocka_unit_test(test_history_counts_what_was_never_read),
        cmocka_unit_test(test_reclaim_gives_back_what_was_never_read),
        cmocka_unit_test(test_save_and_restore),
        cmocka_unit_test(test_rbuf_pool),
    };
    int rc = cmocka_run_group_tests_name("fanq", tests, NULL, NULL);
    hy_rbuf_pool_drain();
    return rc;
}
