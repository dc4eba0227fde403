/* frames.h - numbered test frames and a reader that checks what arrives:
 * whole frames, each intact, and in which order. Header-only.
 *
 * A frame's payload is its number (u32 LE) followed by bytes all equal to
 * the number's low byte, so a split, a mix-up of two frames or a lost byte
 * shows. */
#ifndef HYPHA_TEST_FRAMES_H
#define HYPHA_TEST_FRAMES_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hypha/tlv.h"

/* Frame `seq` of type `type` with a `len`-byte payload (len >= 4) into out. */
static inline size_t tf_make(uint8_t *out, uint16_t type, uint32_t seq, uint32_t len)
{
    hy_tlv_put_header(out, type, len);
    memset(out + HY_TLV_HEADER, (uint8_t)seq, len);
    out[HY_TLV_HEADER + 0] = (uint8_t)seq;
    out[HY_TLV_HEADER + 1] = (uint8_t)(seq >> 8);
    out[HY_TLV_HEADER + 2] = (uint8_t)(seq >> 16);
    out[HY_TLV_HEADER + 3] = (uint8_t)(seq >> 24);
    return HY_TLV_HEADER + len;
}

#define TF_MAX 4096

/* What a reader got: the bytes, and the whole frames in them. */
typedef struct tf_reader {
    int fd;
    uint8_t *buf;
    size_t len, cap;
    size_t nframes;              /* whole frames parsed so far */
    uint16_t type[TF_MAX];
    uint32_t seq[TF_MAX];
    uint32_t plen[TF_MAX];
    int bad;                     /* a frame whose payload was not intact */
    size_t parsed;               /* bytes of buf that are whole frames */
} tf_reader;

static inline void tf_reader_init(tf_reader *r, int fd)
{
    memset(r, 0, sizeof *r);
    r->fd = fd;
}

static inline void tf_reader_free(tf_reader *r)
{
    free(r->buf);
    r->buf = NULL;
}

static inline void tf_parse(tf_reader *r)
{
    while (r->len - r->parsed >= HY_TLV_HEADER) {
        const uint8_t *p = r->buf + r->parsed;
        size_t size = hy_tlv_size(p);
        if (r->len - r->parsed < size)
            break;
        uint32_t plen = (uint32_t)(size - HY_TLV_HEADER);
        uint32_t seq = plen >= 4 ? hy_le32(p + HY_TLV_HEADER) : 0xffffffffu;
        for (uint32_t i = 4; i < plen; i++)
            if (p[HY_TLV_HEADER + i] != (uint8_t)seq)
                r->bad++;
        if (r->nframes < TF_MAX) {
            r->type[r->nframes] = hy_le16(p);
            r->seq[r->nframes] = seq;
            r->plen[r->nframes] = plen;
        }
        r->nframes++;
        r->parsed += size;
    }
}

/* Read what the (non-blocking) fd has now; returns the bytes read, and
 * parses the whole frames among them. */
static inline size_t tf_read(tf_reader *r)
{
    size_t before = r->len;
    for (;;) {
        if (r->cap - r->len < 65536) {
            r->cap = r->cap * 2 + 65536;
            r->buf = realloc(r->buf, r->cap);
            if (!r->buf)
                abort();
        }
        ssize_t n = read(r->fd, r->buf + r->len, r->cap - r->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        r->len += (size_t)n;
    }
    tf_parse(r);
    return r->len - before;
}

/* Fill the (non-blocking) fd until it would block; returns the bytes. */
static inline size_t tf_fill(int fd)
{
    static const uint8_t junk[4096];
    size_t total = 0;
    for (;;) {
        ssize_t n = write(fd, junk, sizeof junk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        total += (size_t)n;
    }
    return total;
}

/* Read and throw away up to n bytes (all when n is 0). */
static inline size_t tf_discard(int fd, size_t n)
{
    uint8_t b[4096];
    size_t total = 0;
    while (n == 0 || total < n) {
        size_t want = n == 0 || n - total > sizeof b ? sizeof b : n - total;
        ssize_t got = read(fd, b, want);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        total += (size_t)got;
    }
    return total;
}

#endif
