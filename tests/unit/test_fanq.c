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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_and_partial_writes),
        cmocka_unit_test(test_drop_oldest_spares_the_frame_being_written),
        cmocka_unit_test(test_drop_newest_and_block),
        cmocka_unit_test(test_grows_and_compacts),
        cmocka_unit_test(test_random_against_the_stream),
    };
    return cmocka_run_group_tests_name("outq", tests, NULL, NULL);
}
