/* listen_hs.c - `handshake: auto`'s verdict on a client's first bytes (see
 * hypha/listen_hs.h; the rule is proved in docs/routing.md). */
#include "hypha/listen_hs.h"

#include <string.h>

#include "hypha/tlv.h"

/* b[0..n) equals the handshake's first n bytes (n <= 34). */
static bool handshake_prefix(const hy_schema *s, const uint8_t *b, size_t n)
{
    static const uint8_t head[2] = {32, 0};
    size_t h = n < 2 ? n : 2;
    return memcmp(b, head, h) == 0 && (n <= 2 || memcmp(b + 2, s->digest, n - 2) == 0);
}

hy_hs_verdict hy_listen_hs_classify(const hy_schema *s, const uint8_t *b, size_t n)
{
    if (n > HY_LISTEN_HS_LEN)
        n = HY_LISTEN_HS_LEN;
    if (n == 0)
        return HY_HS_MORE;
    if (handshake_prefix(s, b, n))
        return n == HY_LISTEN_HS_LEN ? HY_HS_DIGEST : HY_HS_MORE;
    /* Not our handshake: the header of a frame of this schema, or refused. */
    if (n < 2)
        return HY_HS_MORE;
    uint16_t type = hy_le16(b);
    const hy_message *m = hy_schema_find(s, type);
    if (!m)
        return type == 32 ? HY_HS_MISMATCH : HY_HS_GARBAGE;
    if (n < 6)
        return HY_HS_MORE;
    if (hy_le32(b + 2) == m->size)
        return HY_HS_FRAMES;
    return type == 32 ? HY_HS_MISMATCH : HY_HS_GARBAGE;
}

const hy_message *hy_listen_hs_ambiguous(const hy_schema *s)
{
    const hy_message *m = hy_schema_find(s, 32);
    return m && m->size == hy_le32(s->digest) ? m : NULL;
}
