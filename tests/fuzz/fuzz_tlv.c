/* fuzz_tlv.c - the TLV decoder, differentially: the same bytes fed whole and
 * fed in chunks (size from the first input byte) must give the same frames
 * and the same final status. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hypha/tlv.h"

typedef struct rec {
    uint64_t hash; /* running hash over (type, len, payload) */
    size_t n;
} rec;

static int on_frame(void *ud, const hy_frame *f)
{
    rec *r = ud;
    uint64_t h = r->hash ^ ((uint64_t)f->type << 32 | f->len);
    for (uint32_t i = 0; i < f->len; i++)
        h = (h ^ f->payload[i]) * 1099511628211ull;
    r->hash = h * 1099511628211ull;
    r->n++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)data[0] + 1;
    data++;
    size--;
    /* a small limit so that "over the limit" is reachable */
    uint32_t limit = 4096;

    hy_tlv_decoder a, b;
    hy_tlv_decoder_init(&a, limit);
    hy_tlv_decoder_init(&b, limit);
    rec ra = {0, 0}, rb = {0, 0};
    hy_tlv_status sa = hy_tlv_feed(&a, data, size, on_frame, &ra);
    hy_tlv_status sb = HY_TLV_OK;
    for (size_t off = 0; off < size && sb == HY_TLV_OK; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        sb = hy_tlv_feed(&b, data + off, n, on_frame, &rb);
    }
    if (sa != sb || ra.n != rb.n || ra.hash != rb.hash || hy_tlv_finish(&a) != hy_tlv_finish(&b))
        abort();
    if (sa == HY_TLV_OK && hy_tlv_pending(&a) != hy_tlv_pending(&b))
        abort();
    hy_tlv_decoder_free(&a);
    hy_tlv_decoder_free(&b);
    return 0;
}
