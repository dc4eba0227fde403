/* fixture.h - what fuzz_control and fuzz_wproto run hyphad's code in: a real
 * supervisor (hy_sup_new) of the small topology below over the vectors'
 * examples contracts, on the default loop, never started (no worker is
 * spawned by it); hyphad's log goes to /dev/null, every line still
 * formatted. And a way for a small input to reach a 64 KiB cap. */
#ifndef HYPHA_FUZZ_FIXTURE_H
#define HYPHA_FUZZ_FIXTURE_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hypha/log.h"
#include "hypha/supervisor.h"
#include "hypha/topology.h"

/* risk: two instances, a fixed subscription and a heartbeat (its welcome
 * carries heartbeat_ms); feed: one, nothing else. */
#define FUZZ_TOPOLOGY                                                                                                 \
    "version: 1\n"                                                                                                    \
    "schema: mycelium-examples.contracts.yaml\n"                                                                      \
    "workers:\n"                                                                                                      \
    "  risk:\n"                                                                                                       \
    "    command: [/bin/true]\n"                                                                                      \
    "    instances: 2\n"                                                                                              \
    "    subscribe: [TextMessage]\n"                                                                                  \
    "    heartbeat: {timeout: 3s}\n"                                                                                  \
    "  feed:\n"                                                                                                       \
    "    command: [/bin/true]\n"

/* Made once per process; the supervisor keeps the topology, both live
 * until exit. */
static hy_sup *fuzz_sup_new(void)
{
    static FILE *devnull;
    if (!devnull && !(devnull = fopen("/dev/null", "w")))
        abort();
    hy_log_init(devnull, HY_LOG_TEXT, HY_DEBUG);
    hy_err err = {{0}};
    hy_topology *t = hy_topology_load_buffer("fuzz-topology.yaml", HYPHA_FUZZ_VECTORS,
                                             (const uint8_t *)FUZZ_TOPOLOGY, strlen(FUZZ_TOPOLOGY), &err);
    hy_sup *s = t ? hy_sup_new(EV_DEFAULT, t, &err) : NULL;
    if (!s) {
        fprintf(stderr, "fuzz fixture: %s\n", err.msg);
        abort();
    }
    return s;
}

#define FUZZ_PAD_SPREAD 32u /* padded first lines end within 16 bytes of the cap, either side */

/* Inputs stay small (libFuzzer mutates a few KiB best), yet a cap of 64 KiB
 * must be crossed. With `pad`, the bytes come after enough spaces that
 * their first line (up to '\n', or all of them) is cap - 16 + knob % 32
 * bytes long; JSON takes the spaces as whitespace. Returns the bytes to
 * use: data, or a buffer in *own (the caller frees it). */
static const uint8_t *fuzz_pad(const uint8_t *data, size_t *size, bool pad, uint8_t knob, size_t cap, uint8_t **own)
{
    *own = NULL;
    if (!pad)
        return data;
    const uint8_t *nl = memchr(data, '\n', *size);
    size_t first = nl ? (size_t)(nl - data) : *size;
    size_t want = cap - FUZZ_PAD_SPREAD / 2 + knob % FUZZ_PAD_SPREAD;
    size_t spaces = first < want ? want - first : 0;
    if (!(*own = malloc(spaces + *size + 1)))
        abort();
    memset(*own, ' ', spaces);
    memcpy(*own + spaces, data, *size);
    *size += spaces;
    return *own;
}

#endif
