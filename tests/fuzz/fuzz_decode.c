/* fuzz_decode.c - `hyphactl tap` decodes whatever a worker or the bus sends
 * (of the right size): every payload of every message in the vectors'
 * contracts must decode to a JSON object that jansson can write out (valid
 * UTF-8, no NaN), never crash or leak.
 *
 * Input: byte 0 picks the message, the rest is the payload (cut or
 * zero-padded to the message's size). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hypha/decode.h"
#include "hypha/schema.h"
#include "vectors.h"

static hy_schema *schemas[FUZZ_NSCHEMAS];
static const hy_message *msgs[64];
static size_t nmsgs;

static void load(void)
{
    fuzz_load_schemas(schemas);
    for (size_t i = 0; i < FUZZ_NSCHEMAS; i++) {
        for (size_t k = 0; k < schemas[i]->nmsgs && nmsgs < 64; k++)
            msgs[nmsgs++] = &schemas[i]->msgs[k];
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!nmsgs)
        load();
    if (size < 1)
        return 0;
    const hy_message *m = msgs[data[0] % nmsgs];
    uint8_t *payload = calloc(1, m->size);
    if (!payload)
        return 0;
    memcpy(payload, data + 1, size - 1 < m->size ? size - 1 : m->size);
    json_t *j = hy_decode_json(m, payload, m->size);
    if (!json_is_object(j) || json_object_size(j) != m->nfields)
        abort();
    char *text = json_dumps(j, JSON_COMPACT);
    if (!text)
        abort(); /* a string jansson refuses to write: not valid UTF-8 */
    free(text);
    json_decref(j);
    if (hy_decode_json(m, payload, m->size - 1)) /* a wrong size is refused */
        abort();
    free(payload);
    return 0;
}
