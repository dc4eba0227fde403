/* tlv.h - Mycelium TLV frames: `u16 type LE | u32 length LE | payload`.
 *
 * The decoder is incremental and does no I/O: feed it bytes in any chunking and
 * it calls back once per whole frame. Frames that lie entirely inside the fed
 * chunk are handed out in place (zero copy); only a frame that straddles two
 * chunks is assembled in the decoder's own buffer, which is kept and reused, so
 * a steady stream costs no allocation per frame.
 */
#ifndef HYPHA_TLV_H
#define HYPHA_TLV_H

#include <stddef.h>
#include <stdint.h>

#define HY_TLV_HEADER 6u
#define HY_TLV_MAX_PAYLOAD 16777216u /* 16 MiB: MAX_PAYLOAD_SIZE in mycelium-protocol's codec.rs
                                       (its wire-protocol doc's 4 MiB is stale) */
#define HY_TLV_CONTROL_TYPE 0u      /* reserved: hyphad <-> worker control */
#define HY_TLV_BAD_KEEP 32u         /* bytes of a rejected header and what follows, kept for messages */

typedef struct hy_frame {
    uint16_t type;          /* type id */
    uint32_t len;           /* payload length */
    const uint8_t *payload; /* valid only during the callback */
} hy_frame;

typedef enum hy_tlv_status {
    HY_TLV_OK = 0,       /* everything fed was consumed */
    HY_TLV_CORRUPT = -1, /* a length over the limit: the stream is unusable */
    HY_TLV_STOPPED = -2, /* the callback asked to stop */
    HY_TLV_PARTIAL = -3, /* hy_tlv_finish: a frame was cut off by EOF */
    HY_TLV_NOMEM = -4,   /* could not grow the assembly buffer */
} hy_tlv_status;

/* Return 0 to continue, non-zero to stop feeding (the rest is discarded). */
typedef int (*hy_tlv_frame_cb)(void *ud, const hy_frame *frame);

typedef struct hy_tlv_decoder {
    uint8_t *buf;          /* assembly buffer for a straddling frame (owned) */
    size_t cap;            /* allocated size of buf */
    size_t have;           /* bytes of the pending frame held in buf */
    uint32_t max_payload;  /* lengths above this are corruption */
    int corrupt;           /* sticky: once corrupt, every feed fails */
    uint32_t bad_len;      /* the offending length, for messages */
    uint8_t bad[HY_TLV_BAD_KEEP]; /* the stream's first bytes from that frame's header on */
    uint8_t nbad;          /* how many of them are kept */
    uint8_t bad_more;      /* 1: more followed them in the same feed */
    uint64_t frames;       /* frames delivered so far */
} hy_tlv_decoder;

/* max_payload 0 means HY_TLV_MAX_PAYLOAD. The decoder starts empty and
 * allocates nothing until a frame straddles two feeds. */
void hy_tlv_decoder_init(hy_tlv_decoder *d, uint32_t max_payload);
void hy_tlv_decoder_free(hy_tlv_decoder *d);
/* Forget any partial frame and the corrupt flag (e.g. for a new connection). */
void hy_tlv_decoder_reset(hy_tlv_decoder *d);

/* Feed n bytes; calls cb for each whole frame in order. */
hy_tlv_status hy_tlv_feed(hy_tlv_decoder *d, const uint8_t *data, size_t n,
                          hy_tlv_frame_cb cb, void *ud);

/* At end of stream: HY_TLV_OK if no frame is half-received, HY_TLV_PARTIAL
 * otherwise, HY_TLV_CORRUPT if the stream was already corrupt. */
hy_tlv_status hy_tlv_finish(const hy_tlv_decoder *d);

/* Reading straight into the assembly buffer: when the decoder holds the
 * header of a frame whose payload is still incomplete, sets *dst to where
 * the rest goes and returns how many bytes are missing; 0 otherwise. A
 * caller that reads a large frame's remainder there saves a copy. */
size_t hy_tlv_direct(hy_tlv_decoder *d, uint8_t **dst);
/* n (<= the bytes missing) were written at *dst: calls cb if the frame is
 * now whole. */
hy_tlv_status hy_tlv_direct_done(hy_tlv_decoder *d, size_t n, hy_tlv_frame_cb cb, void *ud);

/* Bytes of a partially received frame held by the decoder. */
static inline size_t hy_tlv_pending(const hy_tlv_decoder *d) { return d->have; }
/* Those bytes themselves (valid until the next feed): what a stream cut in
 * a frame ended with. */
static inline const uint8_t *hy_tlv_pending_bytes(const hy_tlv_decoder *d) { return d->buf; }

/* Pure, stateless parse of one frame at the start of p[0..n).
 * Returns the frame's total size (header + payload) and fills *f when a whole
 * frame is there, 0 when more bytes are needed, -1 when the length exceeds
 * max_payload (the stream is corrupt). */
long hy_tlv_parse(const uint8_t *p, size_t n, uint32_t max_payload, hy_frame *f);

/* Little-endian reads: the one header decode. */
static inline uint16_t hy_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t hy_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
/* The whole size (header included) of the frame whose header is at p. */
static inline size_t hy_tlv_size(const uint8_t *p) { return HY_TLV_HEADER + (size_t)hy_le32(p + 2); }

/* Write the 6-byte header. */
void hy_tlv_put_header(uint8_t out[HY_TLV_HEADER], uint16_t type, uint32_t len);

/* Encode a whole frame into out[0..cap). Returns its size, or 0 if it does
 * not fit or len exceeds HY_TLV_MAX_PAYLOAD. */
size_t hy_tlv_encode(uint8_t *out, size_t cap, uint16_t type,
                     const void *payload, uint32_t len);

const char *hy_tlv_status_str(hy_tlv_status s);

#endif
