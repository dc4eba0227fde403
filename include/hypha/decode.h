/* decode.h - a message payload as JSON, for people (`hyphactl tap`).
 *
 * Values follow the wire vectors' convention: numbers for scalars, text for
 * String, lowercase hex for [u8; N] and U256, a list of hex rows for
 * [[u8; N]; M], hex for Vec<u8>, a list of hex for Vec<[u8; N]>. A u64 above
 * 2^63-1 (JSON integers here are signed 64-bit) is given as decimal text. A
 * String that is not valid UTF-8 has its bad bytes replaced by U+FFFD (a
 * NUL is valid: it comes out as \u0000); a
 * length or count over the capacity is cut to it. Padding is ignored.
 */
#ifndef HYPHA_DECODE_H
#define HYPHA_DECODE_H

#include <jansson.h>
#include <stdint.h>

#include "hypha/schema.h"

/* A new JSON object {field: value, ...}, or NULL if len is not the
 * message's size or memory runs out. */
json_t *hy_decode_json(const hy_message *m, const uint8_t *payload, uint32_t len);

/* The message a JSON value names: a type id (1-65535), a message name, or a
 * type id written as text ("1002", as a shell passes it); NULL if none.
 * What a worker's subscribe and `hyphactl tap` both accept. */
const hy_message *hy_decode_type(const hy_schema *schema, const json_t *v);

#endif
