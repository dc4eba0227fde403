/* listen_hs.h - `listen[].handshake: auto`: telling Mycelium's two kinds of
 * client apart by their first bytes (the rule and its proof: docs/routing.md,
 * "Telling the two kinds of client apart").
 *
 * Mycelium's Python SDK opens with the digest handshake H = u16 LE 32 |
 * 32-byte schema digest; its Rust clients send frames from byte 0 (maybe a
 * single frame, then they wait for replies; maybe nothing at all). Pure: the
 * verdict depends only on the schema and the bytes received so far.
 */
#ifndef HYPHA_LISTEN_HS_H
#define HYPHA_LISTEN_HS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hypha/schema.h"

#define HY_LISTEN_HS_LEN 34u /* u16 LE 32 | digest */

typedef enum hy_hs_verdict {
    HY_HS_MORE,      /* undecided: wait for more bytes */
    HY_HS_DIGEST,    /* the first 34 bytes are this schema's handshake */
    HY_HS_FRAMES,    /* frames from byte 0 (nothing is consumed) */
    HY_HS_MISMATCH,  /* u16 LE 32, then another schema's digest: refuse */
    HY_HS_GARBAGE,   /* neither a handshake nor a frame of this schema: refuse */
} hy_hs_verdict;

/* The verdict on the first n bytes b of a connection (n >= 1; bytes past
 * the 34th are not looked at). Once it is not HY_HS_MORE it stays the same
 * for every longer prefix. */
hy_hs_verdict hy_listen_hs_classify(const hy_schema *s, const uint8_t *b, size_t n);

/* The schema's message that makes `auto` ambiguous: type 32 with a size
 * equal to the digest's first 4 bytes read as a u32 LE (its frames would
 * start like the handshake); NULL when there is none. */
const hy_message *hy_listen_hs_ambiguous(const hy_schema *s);

#endif
