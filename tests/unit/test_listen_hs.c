/* test_listen_hs.c - `handshake: auto`'s verdict on a client's first bytes
 * (hypha/listen_hs.h, the rule in docs/routing.md): the digest handshake,
 * frames from byte 0 (decided by the end of the first frame's header: a
 * client without handshake is never kept waiting), another digest, garbage,
 * and that a verdict never changes once given. Schemas are made by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "hypha/listen_hs.h"

/* Like the examples contracts: 1001 TextMessage 312, 1002 CounterUpdate 16,
 * 1003 BatchOperation 224; with_32: a type-32 message of 16 bytes too. */
static hy_message msgs32[] = {{.name = "Small", .type_id = 32, .size = 16},
                              {.name = "TextMessage", .type_id = 1001, .size = 312},
                              {.name = "CounterUpdate", .type_id = 1002, .size = 16},
                              {.name = "BatchOperation", .type_id = 1003, .size = 224}};

static void make_schema(hy_schema *s, bool with_32)
{
    memset(s, 0, sizeof *s);
    s->msgs = with_32 ? msgs32 : msgs32 + 1;
    s->nmsgs = with_32 ? 4 : 3;
    for (int i = 0; i < HY_DIGEST_LEN; i++)
        s->digest[i] = (uint8_t)(0xa0 + i); /* first 4 bytes: u32 LE 0xa3a2a1a0 */
}

static size_t handshake(const hy_schema *s, uint8_t *out)
{
    out[0] = 32;
    out[1] = 0;
    memcpy(out + 2, s->digest, HY_DIGEST_LEN);
    return HY_LISTEN_HS_LEN;
}

static size_t frame(uint16_t type, uint32_t len, uint8_t *out)
{
    out[0] = (uint8_t)type;
    out[1] = (uint8_t)(type >> 8);
    for (int i = 0; i < 4; i++)
        out[2 + i] = (uint8_t)(len >> (8 * i));
    memset(out + 6, 0x55, len);
    return 6 + len;
}

/* The verdict of every prefix of b[0..n): MORE before `at`, `want` from `at` on. */
static void assert_verdicts(const hy_schema *s, const uint8_t *b, size_t n, size_t at, hy_hs_verdict want)
{
    for (size_t k = 1; k <= n; k++) {
        hy_hs_verdict v = hy_listen_hs_classify(s, b, k);
        if (k < at && v != HY_HS_MORE)
            fail_msg("prefix %zu: verdict %d before byte %zu", k, v, at);
        if (k >= at && v != want)
            fail_msg("prefix %zu: verdict %d, wanted %d", k, v, want);
    }
}

static void test_the_handshake(void **state)
{
    (void)state;
    for (int w = 0; w < 2; w++) {
        hy_schema s;
        make_schema(&s, w);
        uint8_t b[64];
        size_t n = handshake(&s, b);
        n += frame(1002, 16, b + n) - 16; /* and the header of a frame after it */
        assert_verdicts(&s, b, n, 34, HY_HS_DIGEST);
    }
}

/* Every message of the schema, sent from byte 0, is told to be frames once
 * its 6-byte header is there (byte 1 or 2 never refuses it), and a whole
 * 22-byte CounterUpdate is enough. */
static void test_frames_are_decided_by_the_header(void **state)
{
    (void)state;
    for (int w = 0; w < 2; w++) {
        hy_schema s;
        make_schema(&s, w);
        for (size_t i = 0; i < s.nmsgs; i++) {
            uint8_t b[400];
            size_t n = frame(s.msgs[i].type_id, s.msgs[i].size, b);
            assert_verdicts(&s, b, n, 6, HY_HS_FRAMES);
        }
        uint8_t b[22];
        assert_int_equal(frame(1002, 16, b), 22);
        assert_int_equal(hy_listen_hs_classify(&s, b, sizeof b), HY_HS_FRAMES);
    }
}

static void test_another_digest(void **state)
{
    (void)state;
    hy_schema s;
    make_schema(&s, false);
    uint8_t b[34];
    handshake(&s, b);
    /* differs in its first byte: known wrong at once (no type 32 here) */
    b[2] ^= 1;
    assert_verdicts(&s, b, 34, 3, HY_HS_MISMATCH);
    /* its first 4 bytes are ours, then it differs: at that byte */
    handshake(&s, b);
    b[2 + 20] ^= 1;
    assert_verdicts(&s, b, 34, 23, HY_HS_MISMATCH);
    b[2 + 20] ^= 1;
    b[33] ^= 0x80;
    assert_verdicts(&s, b, 34, 34, HY_HS_MISMATCH);
    /* with a type-32 message in the schema, the length decides at byte 6 */
    make_schema(&s, true);
    handshake(&s, b);
    b[3] ^= 1;
    assert_verdicts(&s, b, 34, 6, HY_HS_MISMATCH);
    /* a type-32 frame of the wrong size: another schema's handshake too */
    frame(32, 17, b);
    assert_verdicts(&s, b, 23, 6, HY_HS_MISMATCH);
}

static void test_garbage(void **state)
{
    (void)state;
    hy_schema s;
    make_schema(&s, true);
    const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_verdicts(&s, (const uint8_t *)http, strlen(http), 2, HY_HS_GARBAGE);
    uint8_t b[400];
    frame(1002, 17, b); /* a known type of the wrong size */
    assert_verdicts(&s, b, 23, 6, HY_HS_GARBAGE);
    frame(4242, 16, b); /* an unknown type */
    assert_verdicts(&s, b, 22, 2, HY_HS_GARBAGE);
    frame(0, 16, b); /* a control frame: never from a client */
    assert_verdicts(&s, b, 22, 2, HY_HS_GARBAGE);
}

/* Random first bytes (many of them starting like the handshake): a verdict,
 * once given, is the verdict of every longer prefix. */
static void test_verdicts_never_change(void **state)
{
    (void)state;
    uint64_t x = 88172645463325252ull;
    for (int w = 0; w < 2; w++) {
        hy_schema s;
        make_schema(&s, w);
        for (int round = 0; round < 20000; round++) {
            uint8_t b[40];
            for (size_t i = 0; i < sizeof b; i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                b[i] = (uint8_t)x;
            }
            size_t keep = (size_t)(x >> 40) % 36; /* this many bytes of the handshake first */
            uint8_t h[34];
            handshake(&s, h);
            memcpy(b, h, keep < 34 ? keep : 34);
            if (round % 3 == 0)
                frame((uint16_t)(round % 2 ? 1002 : 32), 16, b);
            hy_hs_verdict first = HY_HS_MORE;
            for (size_t k = 1; k <= sizeof b; k++) {
                hy_hs_verdict v = hy_listen_hs_classify(&s, b, k);
                if (first != HY_HS_MORE && v != first)
                    fail_msg("round %d: verdict %d at %zu after %d", round, v, k, first);
                if (first == HY_HS_MORE)
                    first = v;
            }
            assert_int_not_equal(first, HY_HS_MORE); /* 34 bytes always decide */
        }
    }
}

static void test_ambiguous_schema(void **state)
{
    (void)state;
    hy_schema s;
    make_schema(&s, true);
    assert_null(hy_listen_hs_ambiguous(&s));
    msgs32[0].size = 0xa3a2a1a0u; /* the digest's first 4 bytes, as a u32 LE */
    assert_ptr_equal(hy_listen_hs_ambiguous(&s), &msgs32[0]);
    /* ... and then such a frame would look like the handshake to its 34th byte */
    uint8_t b[34];
    handshake(&s, b);
    assert_int_equal(hy_listen_hs_classify(&s, b, 6), HY_HS_MORE);
    msgs32[0].size = 16;
    make_schema(&s, false);
    assert_null(hy_listen_hs_ambiguous(&s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_handshake),
        cmocka_unit_test(test_frames_are_decided_by_the_header),
        cmocka_unit_test(test_another_digest),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_verdicts_never_change),
        cmocka_unit_test(test_ambiguous_schema),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
