/* tlv.c - incremental TLV decoder and encoder (see hypha/tlv.h).
 *
 * The one idea: parse frames in place from the caller's chunk whenever they
 * are whole, and copy only the bytes of a frame that straddles chunks. The
 * assembly buffer grows to the largest straddling frame seen and stays.
 */
#include "hypha/tlv.h"

#include <stdlib.h>
#include <string.h>


void hy_tlv_decoder_init(hy_tlv_decoder *d, uint32_t max_payload)
{
    memset(d, 0, sizeof *d);
    d->max_payload = max_payload ? max_payload : HY_TLV_MAX_PAYLOAD;
}

void hy_tlv_decoder_free(hy_tlv_decoder *d)
{
    free(d->buf);
    d->buf = NULL;
    d->cap = d->have = 0;
}

void hy_tlv_decoder_reset(hy_tlv_decoder *d)
{
    d->have = 0;
    d->corrupt = 0;
    d->bad_len = 0;
    d->nbad = 0;
    d->bad_more = 0;
}

/* The rejected header and what followed it in this feed, for messages (a
 * worker that prints text shows it there): `a` (na bytes), then `b`. */
static void keep_bad(hy_tlv_decoder *d, const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
    size_t ka = na < HY_TLV_BAD_KEEP ? na : HY_TLV_BAD_KEEP;
    size_t kb = nb < HY_TLV_BAD_KEEP - ka ? nb : HY_TLV_BAD_KEEP - ka;
    memcpy(d->bad, a, ka);
    if (kb)
        memcpy(d->bad + ka, b, kb);
    d->nbad = (uint8_t)(ka + kb);
    d->bad_more = na + nb > ka + kb;
}

long hy_tlv_parse(const uint8_t *p, size_t n, uint32_t max_payload, hy_frame *f)
{
    if (n < HY_TLV_HEADER)
        return 0;
    uint32_t len = hy_le32(p + 2);
    if (len > max_payload)
        return -1;
    if (n - HY_TLV_HEADER < len)
        return 0;
    f->type = hy_le16(p);
    f->len = len;
    f->payload = p + HY_TLV_HEADER;
    return (long)(HY_TLV_HEADER + len);
}

static int reserve(hy_tlv_decoder *d, size_t need)
{
    if (need <= d->cap)
        return 0;
    size_t cap = d->cap ? d->cap : 256;
    while (cap < need)
        cap *= 2;
    /* no more than the largest frame: doubling past 16 MiB + 6 would keep 32 MiB */
    if (cap > HY_TLV_HEADER + (size_t)d->max_payload && need <= HY_TLV_HEADER + (size_t)d->max_payload)
        cap = HY_TLV_HEADER + (size_t)d->max_payload;
    uint8_t *nb = realloc(d->buf, cap);
    if (!nb)
        return -1;
    d->buf = nb;
    d->cap = cap;
    return 0;
}

/* Move bytes from data into the assembly buffer until the pending frame is
 * whole. Returns bytes taken, or -1 on corruption / -2 on allocation failure.
 * Sets *done when the buffer holds a whole frame. */
static long fill_pending(hy_tlv_decoder *d, const uint8_t *data, size_t n, int *done)
{
    size_t taken = 0;
    *done = 0;
    if (d->have < HY_TLV_HEADER) {
        size_t k = HY_TLV_HEADER - d->have;
        if (k > n)
            k = n;
        if (reserve(d, HY_TLV_HEADER) < 0)
            return -2;
        memcpy(d->buf + d->have, data, k);
        d->have += k;
        taken += k;
        if (d->have < HY_TLV_HEADER)
            return (long)taken;
    }
    uint32_t len = hy_le32(d->buf + 2);
    if (len > d->max_payload) {
        d->bad_len = len;
        keep_bad(d, d->buf, d->have, data + taken, n - taken); /* the header just completed */
        return -1;
    }
    size_t total = HY_TLV_HEADER + (size_t)len;
    if (reserve(d, total) < 0)
        return -2;
    size_t k = total - d->have;
    if (k > n - taken)
        k = n - taken;
    memcpy(d->buf + d->have, data + taken, k);
    d->have += k;
    taken += k;
    *done = d->have == total;
    return (long)taken;
}

hy_tlv_status hy_tlv_feed(hy_tlv_decoder *d, const uint8_t *data, size_t n,
                          hy_tlv_frame_cb cb, void *ud)
{
    if (d->corrupt)
        return HY_TLV_CORRUPT;
    size_t off = 0;
    hy_frame f;

    if (d->have > 0) {
        int done;
        long k = fill_pending(d, data, n, &done);
        if (k == -1) {
            d->corrupt = 1;
            return HY_TLV_CORRUPT;
        }
        if (k == -2)
            return HY_TLV_NOMEM;
        off = (size_t)k;
        if (!done)
            return HY_TLV_OK;
        f.type = hy_le16(d->buf);
        f.len = hy_le32(d->buf + 2);
        f.payload = d->buf + HY_TLV_HEADER;
        d->have = 0;
        d->frames++;
        if (cb(ud, &f))
            return HY_TLV_STOPPED;
    }

    while (off < n) {
        long k = hy_tlv_parse(data + off, n - off, d->max_payload, &f);
        if (k < 0) {
            d->corrupt = 1;
            d->bad_len = hy_le32(data + off + 2);
            keep_bad(d, data + off, n - off, NULL, 0);
            return HY_TLV_CORRUPT;
        }
        if (k == 0)
            break;
        off += (size_t)k;
        d->frames++;
        if (cb(ud, &f))
            return HY_TLV_STOPPED;
    }

    if (off < n) {
        int done;
        long k = fill_pending(d, data + off, n - off, &done);
        if (k == -1) {
            d->corrupt = 1;
            return HY_TLV_CORRUPT;
        }
        if (k == -2)
            return HY_TLV_NOMEM;
        /* The loop above stopped because the tail is not a whole frame, so
         * it cannot complete here. */
    }
    return HY_TLV_OK;
}

size_t hy_tlv_direct(hy_tlv_decoder *d, uint8_t **dst)
{
    if (d->corrupt || d->have < HY_TLV_HEADER)
        return 0;
    size_t total = HY_TLV_HEADER + (size_t)hy_le32(d->buf + 2); /* reserved by fill_pending */
    *dst = d->buf + d->have;
    return total - d->have;
}

hy_tlv_status hy_tlv_direct_done(hy_tlv_decoder *d, size_t n, hy_tlv_frame_cb cb, void *ud)
{
    d->have += n;
    uint32_t len = hy_le32(d->buf + 2);
    if (d->have < HY_TLV_HEADER + (size_t)len)
        return HY_TLV_OK;
    hy_frame f = {.type = hy_le16(d->buf), .len = len, .payload = d->buf + HY_TLV_HEADER};
    d->have = 0;
    d->frames++;
    return cb(ud, &f) ? HY_TLV_STOPPED : HY_TLV_OK;
}

hy_tlv_status hy_tlv_finish(const hy_tlv_decoder *d)
{
    if (d->corrupt)
        return HY_TLV_CORRUPT;
    return d->have ? HY_TLV_PARTIAL : HY_TLV_OK;
}

void hy_tlv_put_header(uint8_t out[HY_TLV_HEADER], uint16_t type, uint32_t len)
{
    out[0] = (uint8_t)type;
    out[1] = (uint8_t)(type >> 8);
    out[2] = (uint8_t)len;
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)(len >> 16);
    out[5] = (uint8_t)(len >> 24);
}

size_t hy_tlv_encode(uint8_t *out, size_t cap, uint16_t type,
                     const void *payload, uint32_t len)
{
    if (len > HY_TLV_MAX_PAYLOAD || cap < HY_TLV_HEADER + (size_t)len)
        return 0;
    hy_tlv_put_header(out, type, len);
    if (len)
        memcpy(out + HY_TLV_HEADER, payload, len);
    return HY_TLV_HEADER + (size_t)len;
}

const char *hy_tlv_status_str(hy_tlv_status s)
{
    switch (s) {
    case HY_TLV_OK: return "ok";
    case HY_TLV_CORRUPT: return "frame length over the limit (stream corrupt)";
    case HY_TLV_STOPPED: return "stopped";
    case HY_TLV_PARTIAL: return "partial frame at end of stream";
    case HY_TLV_NOMEM: return "out of memory";
    }
    return "unknown";
}
