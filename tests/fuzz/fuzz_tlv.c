/* fuzz_tlv.c - the TLV decoder, differentially: the same bytes fed whole and
 * fed in chunks (size from the first input byte) must give the same frames
 * and the same final status.
 *
 * Twice: with a small limit, so that "over the limit" is reachable from any
 * input; and with the default limit (Mycelium's 16 MiB), on a stream whose
 * first frame's length is moved to within 32 bytes of it (the input's own
 * header bytes say where), its payload zeros, the rest of the input after
 * it. There the frame at exactly the limit must arrive, whole, and one byte
 * over it must be corruption, however the bytes are cut. (A length within
 * the limit costs 16 MiB of copying: only one such input in 32 gets it.) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hypha/tlv.h"

typedef struct rec {
    uint64_t hash; /* running hash over (type, len, payload) */
    size_t n;
    uint32_t first_len;
} rec;

static uint64_t mix(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static int on_frame(void *ud, const hy_frame *f)
{
    rec *r = ud;
    uint64_t h = r->hash ^ ((uint64_t)f->type << 32 | f->len);
    if (f->len <= 4096) {
        h = mix(h, f->payload, f->len);
    } else { /* a near-limit frame: its ends, not 16 MiB byte by byte */
        h = mix(h, f->payload, 64);
        h = mix(h, f->payload + f->len - 64, 64);
    }
    if (r->n == 0)
        r->first_len = f->len;
    r->hash = h * 1099511628211ull;
    r->n++;
    return 0;
}

/* Feed whole and in chunks of `chunk` (the first `big` bytes in chunks of
 * `big_chunk`); abort if the two differ. Returns the whole feed's status.
 * keep: the chunked decoder, reset and kept (NULL: a fresh one). */
static hy_tlv_status differential(const uint8_t *data, size_t size, uint32_t limit, size_t chunk, size_t big,
                                  size_t big_chunk, hy_tlv_decoder *keep, rec *ra)
{
    hy_tlv_decoder a, fresh, *b = keep ? keep : &fresh;
    hy_tlv_decoder_init(&a, limit);
    if (keep)
        hy_tlv_decoder_reset(keep);
    else
        hy_tlv_decoder_init(&fresh, limit);
    rec rb = {0, 0, 0};
    *ra = rb;
    hy_tlv_status sa = hy_tlv_feed(&a, data, size, on_frame, ra);
    hy_tlv_status sb = HY_TLV_OK;
    for (size_t off = 0; off < size && sb == HY_TLV_OK;) {
        size_t step = off < big ? big_chunk : chunk;
        size_t n = size - off < step ? size - off : step;
        sb = hy_tlv_feed(b, data + off, n, on_frame, &rb);
        off += n;
    }
    if (sa != sb || ra->n != rb.n || ra->hash != rb.hash || hy_tlv_finish(&a) != hy_tlv_finish(b))
        abort();
    if (sa == HY_TLV_OK && hy_tlv_pending(&a) != hy_tlv_pending(b))
        abort();
    if (sa == HY_TLV_CORRUPT && a.bad_len != b->bad_len)
        abort();
    hy_tlv_decoder_free(&a);
    if (!keep)
        hy_tlv_decoder_free(&fresh);
    return sa;
}

#define TAIL_MAX 4096

/* header | payload (zeros) | tail; allocated once, the payload never written */
static uint8_t *near;
/* The chunked decoder of near-limit frames, reset for each input (as the
 * upstream's is on each connection): its 16 MiB stay warm, or the page
 * faults of a fresh one would cost more than the rest of the fuzzing. */
static hy_tlv_decoder near_dec;

static void near_limit(const uint8_t *data, size_t size, size_t chunk)
{
    if (size < HY_TLV_HEADER)
        return;
    if (!near) {
        if (!(near = calloc(1, HY_TLV_HEADER + HY_TLV_MAX_PAYLOAD + 32 + TAIL_MAX)))
            abort();
        hy_tlv_decoder_init(&near_dec, 0);
    }
    uint16_t type = (uint16_t)(data[0] | data[1] << 8);
    uint32_t raw = (uint32_t)data[2] | (uint32_t)data[3] << 8 | (uint32_t)data[4] << 16 | (uint32_t)data[5] << 24;
    uint32_t len = HY_TLV_MAX_PAYLOAD - 32 + raw % 64; /* limit-32 .. limit+31 */
    /* a frame within the limit costs 16 MiB of copying: one input in 1024,
     * or the smoke run would spend its time copying (over the limit is
     * cheap and always checked) */
    if (len <= HY_TLV_MAX_PAYLOAD && ((raw >> 16) & 1023) != 0)
        return;
    size_t tail = size - HY_TLV_HEADER < TAIL_MAX ? size - HY_TLV_HEADER : TAIL_MAX;
    hy_tlv_put_header(near, type, len);
    memcpy(near + HY_TLV_HEADER + len, data + HY_TLV_HEADER, tail);
    size_t total = HY_TLV_HEADER + (size_t)len + tail;
    rec r;
    /* the big frame in chunks of up to 1 MiB, the tail in the input's */
    hy_tlv_status st = differential(near, total, 0, chunk, HY_TLV_HEADER + (size_t)len, chunk << 12, &near_dec, &r);
    memset(near + HY_TLV_HEADER + len, 0, tail); /* zeros again for the next input */
    if (len > HY_TLV_MAX_PAYLOAD) {
        if (st != HY_TLV_CORRUPT || r.n != 0)
            abort();
    } else if (r.n == 0 || r.first_len != len) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)data[0] + 1;
    data++;
    size--;
    rec r;
    /* a small limit so that "over the limit" is reachable */
    differential(data, size, 4096, chunk, 0, 0, NULL, &r);
    near_limit(data, size, chunk);
    return 0;
}
