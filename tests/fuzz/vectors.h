/* vectors.h - the three contracts files of the wire vectors, loaded once, for
 * the fuzz targets that need a real schema (fuzz_decode, fuzz_listen_hs). */
#ifndef HYPHA_FUZZ_VECTORS_H
#define HYPHA_FUZZ_VECTORS_H

#include <stdlib.h>

#include "hypha/schema.h"

#define FUZZ_NSCHEMAS 3

static void fuzz_load_schemas(hy_schema *out[FUZZ_NSCHEMAS])
{
    static const char *const files[] = {HYPHA_FUZZ_VECTORS "/mycelium-examples.contracts.yaml",
                                        HYPHA_FUZZ_VECTORS "/mycelium-defi.contracts.yaml",
                                        HYPHA_FUZZ_VECTORS "/mycelium-game.contracts.yaml"};
    for (size_t i = 0; i < FUZZ_NSCHEMAS; i++) {
        hy_err err = {{0}};
        if (!(out[i] = hy_schema_load(files[i], &err)))
            abort();
    }
}

#endif
