/* fuzz_listen_hs.c - `listen[].handshake: auto` decides from a client's first
 * bytes whatever they are. For any bytes, with each of the vectors'
 * schemas: a verdict, once given, is the same for every longer prefix;
 * the digest handshake is never taken for frames; a client whose first 6
 * bytes are the header of a valid frame of the schema is decided as frames
 * by then, so it never waits.
 *
 * Input: byte 0 picks the schema and whether the input starts with that
 * schema's handshake (then the rest follows it), the rest is the bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hypha/listen_hs.h"
#include "hypha/schema.h"
#include "hypha/tlv.h"
#include "vectors.h"

static hy_schema *schemas[FUZZ_NSCHEMAS];

static bool valid_frame_header(const hy_schema *s, const uint8_t *b)
{
    const hy_message *m = hy_schema_find(s, hy_le16(b));
    return m && hy_le32(b + 2) == m->size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!schemas[0])
        fuzz_load_schemas(schemas);
    if (size < 1)
        return 0;
    const hy_schema *s = schemas[data[0] % FUZZ_NSCHEMAS];
    uint8_t b[HY_LISTEN_HS_LEN + 64];
    size_t n = 0;
    bool hs = data[0] & 0x80;
    if (hs) { /* the SDK's way: the handshake first */
        b[0] = 32;
        b[1] = 0;
        memcpy(b + 2, s->digest, 32);
        n = HY_LISTEN_HS_LEN;
    }
    size_t rest = size - 1 < sizeof b - n ? size - 1 : sizeof b - n;
    memcpy(b + n, data + 1, rest);
    n += rest;
    hy_hs_verdict first = HY_HS_MORE;
    size_t decided_at = 0;
    for (size_t k = 1; k <= n; k++) {
        hy_hs_verdict v = hy_listen_hs_classify(s, b, k);
        if (first != HY_HS_MORE && v != first)
            abort(); /* a decision changed */
        if (first == HY_HS_MORE && v != HY_HS_MORE) {
            first = v;
            decided_at = k;
        }
    }
    if (hs && n >= HY_LISTEN_HS_LEN && first != HY_HS_DIGEST)
        abort(); /* the right handshake, not taken as one */
    if (!hs && n >= HY_TLV_HEADER && valid_frame_header(s, b) && b[0] != 32 &&
        (first != HY_HS_FRAMES || decided_at > HY_TLV_HEADER))
        abort(); /* a Rust client's valid first frame kept waiting */
    return 0;
}
