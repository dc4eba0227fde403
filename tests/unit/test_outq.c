/* test_outq.c - the bounded frame queue: boundaries, partial writes, drops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "hypha/outq.h"
#include "hypha/tlv.h"

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
    hy_outq q;
    hy_outq_init(&q);
    uint8_t f[512];
    for (int i = 0; i < 3; i++) {
        size_t n = mk(f, (uint16_t)(i + 1), 10, (uint8_t)i);
        assert_int_equal(hy_outq_push(&q, f, n, 1000, HY_OVERFLOW_DROP_OLDEST), HY_OUTQ_QUEUED);
    }
    assert_int_equal(hy_outq_pending(&q), 48);
    assert_int_equal(hy_outq_data(&q)[0], 1);
    hy_outq_consume(&q, 7); /* into the first frame */
    assert_false(hy_outq_at_boundary(&q));
    assert_int_equal(hy_outq_pending(&q), 41);
    hy_outq_consume(&q, 9); /* finishes it */
    assert_true(hy_outq_at_boundary(&q));
    assert_int_equal(hy_outq_data(&q)[0], 2);
    hy_outq_consume(&q, 32);
    assert_int_equal(hy_outq_pending(&q), 0);
    assert_int_equal(hy_outq_bytes(&q), 0);
    hy_outq_free(&q);
}

static void test_drop_oldest_spares_the_frame_being_written(void **state)
{
    (void)state;
    hy_outq q;
    hy_outq_init(&q);
    uint8_t f[512];
    size_t n = mk(f, 1, 10, 0xA); /* 16 bytes each; limit 48 = three frames */
    hy_outq_push(&q, f, n, 48, HY_OVERFLOW_DROP_OLDEST);
    n = mk(f, 2, 10, 0xB);
    hy_outq_push(&q, f, n, 48, HY_OVERFLOW_DROP_OLDEST);
    n = mk(f, 3, 10, 0xC);
    hy_outq_push(&q, f, n, 48, HY_OVERFLOW_DROP_OLDEST);
    hy_outq_consume(&q, 5); /* frame 1 is half out */
    n = mk(f, 4, 10, 0xD);
    assert_int_equal(hy_outq_push(&q, f, n, 48, HY_OVERFLOW_DROP_OLDEST), HY_OUTQ_QUEUED);
    assert_int_equal(q.dropped_oldest, 1);
    /* frame 1 (rest), then 3 and 4: frame 2 was the oldest not yet started */
    const uint8_t *d = hy_outq_data(&q);
    assert_int_equal(hy_outq_pending(&q), 11 + 32);
    assert_int_equal(d[11], 3);
    assert_int_equal(d[11 + 16], 4);
    hy_outq_free(&q);
}

static void test_drop_newest_and_block(void **state)
{
    (void)state;
    hy_outq q;
    hy_outq_init(&q);
    uint8_t f[512];
    size_t n = mk(f, 1, 10, 0);
    assert_int_equal(hy_outq_push(&q, f, n, 32, HY_OVERFLOW_DROP_NEWEST), HY_OUTQ_QUEUED);
    assert_int_equal(hy_outq_push(&q, f, n, 32, HY_OVERFLOW_DROP_NEWEST), HY_OUTQ_QUEUED);
    assert_int_equal(hy_outq_push(&q, f, n, 32, HY_OVERFLOW_DROP_NEWEST), HY_OUTQ_DROPPED);
    assert_int_equal(q.dropped_newest, 1);
    assert_int_equal(hy_outq_pending(&q), 32);
    /* block keeps the frame and says the limit is passed */
    assert_int_equal(hy_outq_push(&q, f, n, 32, HY_OVERFLOW_BLOCK), HY_OUTQ_OVER);
    assert_int_equal(hy_outq_pending(&q), 48);
    assert_int_equal(hy_outq_clear(&q), 3);
    assert_int_equal(hy_outq_pending(&q), 0);
    hy_outq_free(&q);
}

static void test_grows_and_compacts(void **state)
{
    (void)state;
    hy_outq q;
    hy_outq_init(&q);
    uint8_t f[512];
    size_t n = mk(f, 7, 200, 0x5);
    for (int round = 0; round < 100; round++) {
        for (int i = 0; i < 30; i++)
            assert_int_equal(hy_outq_push(&q, f, n, 1 << 20, HY_OVERFLOW_DROP_OLDEST), HY_OUTQ_QUEUED);
        hy_outq_consume(&q, 29 * n + 3);
        assert_int_equal(hy_outq_pending(&q), n - 3);
        hy_outq_consume(&q, n - 3);
    }
    assert_true(q.cap <= 16384); /* reused, not grown without bound */
    hy_outq_free(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_and_partial_writes),
        cmocka_unit_test(test_drop_oldest_spares_the_frame_being_written),
        cmocka_unit_test(test_drop_newest_and_block),
        cmocka_unit_test(test_grows_and_compacts),
    };
    return cmocka_run_group_tests_name("outq", tests, NULL, NULL);
}
