/* test_tlv.c - the TLV decoder and encoder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "hypha/tlv.h"

typedef struct got {
    size_t n;
    uint16_t types[64];
    uint32_t lens[64];
    uint8_t *payloads[64];
    size_t stop_after; /* 0 = never stop */
} got;

static int collect(void *ud, const hy_frame *f)
{
    got *g = ud;
    assert_true(g->n < 64);
    g->types[g->n] = f->type;
    g->lens[g->n] = f->len;
    g->payloads[g->n] = malloc(f->len ? f->len : 1);
    memcpy(g->payloads[g->n], f->payload, f->len);
    g->n++;
    return g->stop_after && g->n >= g->stop_after;
}

static void got_free(got *g)
{
    for (size_t i = 0; i < g->n; i++)
        free(g->payloads[i]);
    memset(g, 0, sizeof *g);
}

/* CounterUpdate from wire-vectors.json */
static const uint8_t counter_frame[] = {0xea, 0x03, 0x10, 0x00, 0x00, 0x00, 0x09, 0x07, 0x06, 0x05, 0x04,
                                        0x03, 0x02, 0x01, 0xbe, 0x1d, 0xfe, 0xff, 0xbd, 0x1d, 0xfe, 0xff};

static void test_whole_frame(void **state)
{
    (void)state;
    hy_tlv_decoder d;
    hy_tlv_decoder_init(&d, 0);
    got g = {0};
    assert_int_equal(hy_tlv_feed(&d, counter_frame, sizeof counter_frame, collect, &g), HY_TLV_OK);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.types[0], 1002);
    assert_int_equal(g.lens[0], 16);
    assert_memory_equal(g.payloads[0], counter_frame + 6, 16);
    assert_int_equal(hy_tlv_finish(&d), HY_TLV_OK);
    assert_null(d.buf); /* a whole frame in one chunk is never copied */
    got_free(&g);
    hy_tlv_decoder_free(&d);
}

/* Three frames back to back (one with an empty payload), fed split at every
 * pair of cut points: every chunking must yield the same frames. */
static void test_every_split(void **state)
{
    (void)state;
    uint8_t stream[128];
    size_t n = 0;
    memcpy(stream, counter_frame, sizeof counter_frame);
    n += sizeof counter_frame;
    n += hy_tlv_encode(stream + n, sizeof stream - n, 7, NULL, 0);
    const char hello[] = "hello, bus";
    n += hy_tlv_encode(stream + n, sizeof stream - n, 65535, hello, sizeof hello);
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            hy_tlv_decoder d;
            hy_tlv_decoder_init(&d, 0);
            got g = {0};
            assert_int_equal(hy_tlv_feed(&d, stream, a, collect, &g), HY_TLV_OK);
            assert_int_equal(hy_tlv_feed(&d, stream + a, b - a, collect, &g), HY_TLV_OK);
            assert_int_equal(hy_tlv_feed(&d, stream + b, n - b, collect, &g), HY_TLV_OK);
            assert_int_equal(g.n, 3);
            assert_int_equal(g.types[0], 1002);
            assert_memory_equal(g.payloads[0], counter_frame + 6, 16);
            assert_int_equal(g.types[1], 7);
            assert_int_equal(g.lens[1], 0);
            assert_int_equal(g.types[2], 65535);
            assert_int_equal(g.lens[2], sizeof hello);
            assert_memory_equal(g.payloads[2], hello, sizeof hello);
            assert_int_equal(hy_tlv_finish(&d), HY_TLV_OK);
            assert_int_equal(d.frames, 3);
            got_free(&g);
            hy_tlv_decoder_free(&d);
        }
    }
}

static void test_one_byte_at_a_time(void **state)
{
    (void)state;
    hy_tlv_decoder d;
    hy_tlv_decoder_init(&d, 0);
    got g = {0};
    for (int rep = 0; rep < 3; rep++)
        for (size_t i = 0; i < sizeof counter_frame; i++) {
            assert_int_equal(hy_tlv_feed(&d, counter_frame + i, 1, collect, &g), HY_TLV_OK);
            if (i + 1 < sizeof counter_frame)
                assert_int_equal(hy_tlv_finish(&d), HY_TLV_PARTIAL);
        }
    assert_int_equal(g.n, 3);
    for (int i = 0; i < 3; i++)
        assert_memory_equal(g.payloads[i], counter_frame + 6, 16);
    assert_int_equal(hy_tlv_finish(&d), HY_TLV_OK);
    got_free(&g);
    hy_tlv_decoder_free(&d);
}

static void test_partial_at_eof(void **state)
{
    (void)state;
    for (size_t cut = 1; cut < sizeof counter_frame; cut++) {
        hy_tlv_decoder d;
        hy_tlv_decoder_init(&d, 0);
        got g = {0};
        assert_int_equal(hy_tlv_feed(&d, counter_frame, cut, collect, &g), HY_TLV_OK);
        assert_int_equal(g.n, 0);
        assert_int_equal(hy_tlv_pending(&d), cut);
        assert_int_equal(hy_tlv_finish(&d), HY_TLV_PARTIAL);
        hy_tlv_decoder_free(&d);
    }
}

/* Mycelium's code allows 16 MiB (MAX_PAYLOAD_SIZE in mycelium-protocol's
 * codec.rs); its wire-protocol doc's 4 MiB is stale. */
_Static_assert(HY_TLV_MAX_PAYLOAD == 16777216u, "the frame limit is Mycelium's 16 MiB");

static void test_limit(void **state)
{
    (void)state;
    /* exactly the limit is a valid frame */
    size_t total = HY_TLV_HEADER + HY_TLV_MAX_PAYLOAD;
    uint8_t *big = calloc(1, total);
    assert_non_null(big);
    big[HY_TLV_HEADER] = 0xAB;
    big[total - 1] = 0xCD;
    assert_int_equal(hy_tlv_encode(big, total, 1001, big + HY_TLV_HEADER, HY_TLV_MAX_PAYLOAD), total);
    hy_tlv_decoder d;
    hy_tlv_decoder_init(&d, 0);
    got g = {0};
    /* fed in three uneven pieces so the decoder must assemble it */
    assert_int_equal(hy_tlv_feed(&d, big, 3, collect, &g), HY_TLV_OK);
    assert_int_equal(hy_tlv_feed(&d, big + 3, 1000000, collect, &g), HY_TLV_OK);
    assert_int_equal(hy_tlv_feed(&d, big + 1000003, total - 1000003, collect, &g), HY_TLV_OK);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.lens[0], HY_TLV_MAX_PAYLOAD);
    assert_int_equal(g.payloads[0][0], 0xAB);
    assert_int_equal(g.payloads[0][HY_TLV_MAX_PAYLOAD - 1], 0xCD);
    got_free(&g);
    /* the assembly buffer holds the largest frame, not twice it */
    assert_int_equal(d.cap, total);
    hy_tlv_decoder_free(&d);

    /* whole in one chunk: handed out in place, no assembly */
    hy_tlv_decoder_init(&d, 0);
    assert_int_equal(hy_tlv_feed(&d, big, total, collect, &g), HY_TLV_OK);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.lens[0], HY_TLV_MAX_PAYLOAD);
    assert_int_equal(g.payloads[0][HY_TLV_MAX_PAYLOAD - 1], 0xCD);
    assert_int_equal(d.cap, 0);
    got_free(&g);
    hy_tlv_decoder_free(&d);

    /* the old 4 MiB limit + 1 is an ordinary length now: the decoder waits */
    uint8_t old[HY_TLV_HEADER];
    hy_tlv_put_header(old, 1001, 4194305);
    hy_tlv_decoder_init(&d, 0);
    assert_int_equal(hy_tlv_feed(&d, old, sizeof old, collect, &g), HY_TLV_OK);
    assert_int_equal(hy_tlv_pending(&d), sizeof old);
    assert_int_equal(hy_tlv_finish(&d), HY_TLV_PARTIAL);
    hy_tlv_decoder_free(&d);

    /* limit + 1 is corruption, whether whole or arriving byte by byte */
    uint8_t hdr[HY_TLV_HEADER];
    hy_tlv_put_header(hdr, 1001, HY_TLV_MAX_PAYLOAD + 1);
    hy_tlv_decoder_init(&d, 0);
    assert_int_equal(hy_tlv_feed(&d, hdr, sizeof hdr, collect, &g), HY_TLV_CORRUPT);
    assert_int_equal(d.bad_len, HY_TLV_MAX_PAYLOAD + 1);
    assert_int_equal(hy_tlv_finish(&d), HY_TLV_CORRUPT);
    /* sticky: later bytes are refused too */
    assert_int_equal(hy_tlv_feed(&d, counter_frame, sizeof counter_frame, collect, &g), HY_TLV_CORRUPT);
    assert_int_equal(g.n, 0);
    hy_tlv_decoder_free(&d);

    hy_tlv_decoder_init(&d, 0);
    for (size_t i = 0; i + 1 < sizeof hdr; i++)
        assert_int_equal(hy_tlv_feed(&d, hdr + i, 1, collect, &g), HY_TLV_OK);
    assert_int_equal(hy_tlv_feed(&d, hdr + 5, 1, collect, &g), HY_TLV_CORRUPT);
    assert_int_equal(d.nbad, HY_TLV_HEADER); /* the header, assembled across feeds */
    assert_memory_equal(d.bad, hdr, HY_TLV_HEADER);
    assert_int_equal(d.bad_more, 0);
    hy_tlv_decoder_reset(&d);
    assert_int_equal(d.nbad, 0);
    hy_tlv_decoder_free(&d);

    /* what the stream began with, from the rejected header on: a script's
     * print() is kept (32 bytes at most, and whether more followed) */
    static const char text[] = "hello from a script that prints far too much\n";
    hy_tlv_decoder_init(&d, 0);
    assert_int_equal(hy_tlv_feed(&d, (const uint8_t *)text, sizeof text - 1, collect, &g), HY_TLV_CORRUPT);
    assert_int_equal(d.nbad, HY_TLV_BAD_KEEP);
    assert_memory_equal(d.bad, text, HY_TLV_BAD_KEEP);
    assert_int_equal(d.bad_more, 1);
    hy_tlv_decoder_free(&d);
    /* in place after a whole frame, and with a header that straddled feeds */
    uint8_t after[sizeof counter_frame + 8];
    memcpy(after, counter_frame, sizeof counter_frame);
    memcpy(after + sizeof counter_frame, "hello fr", 8);
    hy_tlv_decoder_init(&d, 0);
    assert_int_equal(hy_tlv_feed(&d, after, sizeof after, collect, &g), HY_TLV_CORRUPT);
    assert_int_equal(d.nbad, 8);
    assert_memory_equal(d.bad, "hello fr", 8);
    assert_int_equal(d.bad_more, 0);
    assert_int_equal(g.n, 1); /* the frame before it was delivered */
    got_free(&g);
    hy_tlv_decoder_free(&d);
    hy_tlv_decoder_init(&d, 0);
    assert_int_equal(hy_tlv_feed(&d, (const uint8_t *)"hel", 3, collect, &g), HY_TLV_OK);
    assert_int_equal(hy_tlv_feed(&d, (const uint8_t *)"lo from", 7, collect, &g), HY_TLV_CORRUPT);
    assert_int_equal(d.nbad, 10);
    assert_memory_equal(d.bad, "hello from", 10);
    assert_int_equal(g.n, 0);
    hy_tlv_decoder_free(&d);

    /* a valid frame before the corrupt header is still delivered */
    uint8_t two[sizeof counter_frame + HY_TLV_HEADER];
    memcpy(two, counter_frame, sizeof counter_frame);
    memcpy(two + sizeof counter_frame, hdr, sizeof hdr);
    hy_tlv_decoder_init(&d, 0);
    assert_int_equal(hy_tlv_feed(&d, two, sizeof two, collect, &g), HY_TLV_CORRUPT);
    assert_int_equal(g.n, 1);
    got_free(&g);
    hy_tlv_decoder_free(&d);

    /* the encoder refuses over the limit */
    assert_int_equal(hy_tlv_encode(big, total, 1, big, HY_TLV_MAX_PAYLOAD + 1), 0);
    free(big);
}

static void test_custom_limit_and_reset(void **state)
{
    (void)state;
    hy_tlv_decoder d;
    hy_tlv_decoder_init(&d, 15); /* CounterUpdate's 16 bytes is now too long */
    got g = {0};
    assert_int_equal(hy_tlv_feed(&d, counter_frame, sizeof counter_frame, collect, &g), HY_TLV_CORRUPT);
    hy_tlv_decoder_reset(&d);
    d.max_payload = 16;
    assert_int_equal(hy_tlv_feed(&d, counter_frame, sizeof counter_frame, collect, &g), HY_TLV_OK);
    assert_int_equal(g.n, 1);
    got_free(&g);
    hy_tlv_decoder_free(&d);
}

static void test_stop(void **state)
{
    (void)state;
    uint8_t stream[3 * sizeof counter_frame];
    for (int i = 0; i < 3; i++)
        memcpy(stream + i * sizeof counter_frame, counter_frame, sizeof counter_frame);
    hy_tlv_decoder d;
    hy_tlv_decoder_init(&d, 0);
    got g = {0};
    g.stop_after = 2;
    assert_int_equal(hy_tlv_feed(&d, stream, sizeof stream, collect, &g), HY_TLV_STOPPED);
    assert_int_equal(g.n, 2);
    got_free(&g);
    hy_tlv_decoder_free(&d);
}

/* A large frame's remainder read straight into the assembly buffer, in
 * several pieces, then ordinary feeding goes on. */
static void test_direct_fill(void **state)
{
    (void)state;
    enum { LEN = 70000 };
    uint8_t *stream = malloc(HY_TLV_HEADER + LEN + sizeof counter_frame);
    hy_tlv_put_header(stream, 7, LEN);
    for (size_t i = 0; i < LEN; i++)
        stream[HY_TLV_HEADER + i] = (uint8_t)(i * 31);
    memcpy(stream + HY_TLV_HEADER + LEN, counter_frame, sizeof counter_frame);
    hy_tlv_decoder d;
    hy_tlv_decoder_init(&d, 0);
    got g = {0};
    uint8_t *dst = NULL;
    assert_int_equal(hy_tlv_direct(&d, &dst), 0); /* nothing pending */
    assert_int_equal(hy_tlv_feed(&d, stream, 4, collect, &g), HY_TLV_OK);
    assert_int_equal(hy_tlv_direct(&d, &dst), 0); /* header incomplete */
    assert_int_equal(hy_tlv_feed(&d, stream + 4, 1000, collect, &g), HY_TLV_OK);
    size_t off = 1004;
    size_t missing = hy_tlv_direct(&d, &dst);
    assert_int_equal(missing, HY_TLV_HEADER + LEN - off);
    memcpy(dst, stream + off, 30000);
    assert_int_equal(hy_tlv_direct_done(&d, 30000, collect, &g), HY_TLV_OK);
    assert_int_equal(g.n, 0);
    off += 30000;
    missing = hy_tlv_direct(&d, &dst);
    assert_int_equal(missing, HY_TLV_HEADER + LEN - off);
    memcpy(dst, stream + off, missing);
    assert_int_equal(hy_tlv_direct_done(&d, missing, collect, &g), HY_TLV_OK);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.lens[0], LEN);
    assert_memory_equal(g.payloads[0], stream + HY_TLV_HEADER, LEN);
    assert_int_equal(hy_tlv_direct(&d, &dst), 0);
    assert_int_equal(hy_tlv_feed(&d, counter_frame, sizeof counter_frame, collect, &g), HY_TLV_OK);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.types[1], 1002);
    assert_int_equal(hy_tlv_finish(&d), HY_TLV_OK);
    got_free(&g);
    hy_tlv_decoder_free(&d);
    free(stream);
}

static void test_encode(void **state)
{
    (void)state;
    uint8_t out[64];
    assert_int_equal(hy_tlv_encode(out, sizeof out, 1002, counter_frame + 6, 16), sizeof counter_frame);
    assert_memory_equal(out, counter_frame, sizeof counter_frame);
    assert_int_equal(hy_tlv_encode(out, sizeof counter_frame - 1, 1002, counter_frame + 6, 16), 0);
    assert_int_equal(hy_tlv_encode(out, 6, 0, NULL, 0), 6);
    static const uint8_t empty0[6] = {0, 0, 0, 0, 0, 0};
    assert_memory_equal(out, empty0, 6);
    hy_frame f;
    assert_int_equal(hy_tlv_parse(out, 5, HY_TLV_MAX_PAYLOAD, &f), 0);
    assert_int_equal(hy_tlv_parse(out, 6, HY_TLV_MAX_PAYLOAD, &f), 6);
    assert_int_equal(f.len, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_frame),
        cmocka_unit_test(test_every_split),
        cmocka_unit_test(test_one_byte_at_a_time),
        cmocka_unit_test(test_partial_at_eof),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_custom_limit_and_reset),
        cmocka_unit_test(test_stop),
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_direct_fill),
    };
    return cmocka_run_group_tests_name("tlv", tests, NULL, NULL);
}
