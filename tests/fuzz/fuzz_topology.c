/* fuzz_topology.c - the topology loader on arbitrary bytes, with a real
 * contracts file beside it so that deep paths (workers, subscriptions) are
 * reachable. It must load or fail with a message; never crash or leak. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hypha/topology.h"

static char dir[256];

/* The scratch directory goes with the process (libFuzzer exits through exit()). */
static void cleanup(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/contracts.yaml", dir);
    (void)unlink(path);
    (void)rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "/tmp/hypha-fuzz-topo-XXXXXX");
    if (!mkdtemp(dir))
        abort();
    atexit(cleanup);
    char dst[512];
    snprintf(dst, sizeof dst, "%s/contracts.yaml", dir);
    FILE *in = fopen(HYPHA_FUZZ_CONTRACTS, "rb"), *out = fopen(dst, "wb");
    if (!in || !out)
        abort();
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            abort();
    fclose(in);
    if (fclose(out) != 0)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hy_err err = {{0}};
    hy_topology *t = hy_topology_load_buffer("fuzz.yaml", dir, data, size, &err);
    if (!t) {
        if (err.msg[0] == '\0')
            abort();
        return 0;
    }
    for (size_t i = 0; i < t->nworkers; i++)
        if (!t->workers[i].argv[0] || t->workers[i].instances == 0 || !t->workers[i].exec_path)
            abort();
    hy_topology_free(t);
    return 0;
}
