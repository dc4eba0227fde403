/* fuzz_contracts.c - the contracts loader on arbitrary bytes: it must either
 * load a consistent schema or fail with a message, never crash or leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hypha/schema.h"
#include "hypha/tlv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hy_err err = {{0}};
    hy_schema *s = hy_schema_load_buffer("fuzz.yaml", data, size, &err);
    if (!s) {
        if (err.msg[0] == '\0')
            abort(); /* every failure says why */
        return 0;
    }
    for (size_t i = 0; i < s->nmsgs; i++) {
        const hy_message *m = &s->msgs[i];
        if (m->size > HY_TLV_MAX_PAYLOAD || m->size % m->align || hy_schema_find(s, m->type_id) != m)
            abort();
        for (size_t k = 0; k < m->nfields; k++) {
            const hy_field *f = &m->fields[k];
            if (f->offset % f->align || f->offset + f->size > m->size)
                abort();
            if (k && f->offset < m->fields[k - 1].offset + m->fields[k - 1].size)
                abort();
        }
    }
    hy_schema_free(s);
    return 0;
}
