/* relay_producer.c - a worker that writes pre-built TLV frames to stdout as
 * fast as it can, for the relay throughput benchmark (bench_relay.py).
 *
 *   relay_producer TYPE SIZE COUNT [--id N] [--gate FIFO] [--ready DIR]
 *                  [--wait] [--chunk BYTES]
 *
 * Writes COUNT frames `u16 TYPE | u32 SIZE | payload[SIZE]` in writes of
 * about --chunk bytes (1 MiB by default). Each payload starts with
 * `u32 id | u64 seq` (LE; seq = 0, 1, 2 ...) so the sink can prove that no
 * frame was lost, duplicated or reordered; the rest is filler.
 *
 *   --id N       producer id (default: $HYPHA_INSTANCE, else 0)
 *   --gate FIFO  before writing, open FIFO and read one byte from it: the
 *                start signal, so process start-up is not measured
 *   --ready DIR  create DIR/ready.<id> once waiting at the gate
 *   --wait       after writing, read stdin until EOF (a hyphad worker that
 *                must not exit, or it would be restarted)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchutil.h"

static void die(const char *what)
{
    fprintf(stderr, "relay_producer: %s: %s\n", what, strerror(errno));
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: relay_producer TYPE SIZE COUNT [--id N] [--gate FIFO] [--ready DIR] [--wait] "
                        "[--chunk BYTES]\n");
        return 2;
    }
    uint16_t type = (uint16_t)strtoul(argv[1], NULL, 0);
    uint32_t size = (uint32_t)strtoul(argv[2], NULL, 0);
    uint64_t count = strtoull(argv[3], NULL, 0);
    const char *inst = getenv("HYPHA_INSTANCE");
    uint32_t id = inst ? (uint32_t)strtoul(inst, NULL, 10) : 0;
    const char *gate = NULL, *ready = NULL;
    int wait_eof = 0;
    size_t chunk = 1u << 20;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--id") && i + 1 < argc)
            id = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--gate") && i + 1 < argc)
            gate = argv[++i];
        else if (!strcmp(argv[i], "--ready") && i + 1 < argc)
            ready = argv[++i];
        else if (!strcmp(argv[i], "--chunk") && i + 1 < argc)
            chunk = (size_t)strtoul(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--wait"))
            wait_eof = 1;
        else {
            fprintf(stderr, "relay_producer: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (size < 12) {
        fprintf(stderr, "relay_producer: SIZE must be at least 12\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    size_t flen = BU_HDR + (size_t)size;
    size_t nf = chunk / flen ? chunk / flen : 1;
    uint8_t *buf = malloc(nf * flen);
    if (!buf)
        die("malloc");
    bu_fill_frames(buf, nf, type, size, id);

    if (gate) {
        int g = open(gate, O_RDONLY | O_CLOEXEC);
        if (g < 0)
            die("open gate");
        if (ready) {
            char path[4096];
            snprintf(path, sizeof path, "%s/ready.%u", ready, id);
            int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
            if (fd < 0)
                die("create ready file");
            close(fd);
        }
        char c;
        if (bu_read(g, &c, 1) != 1) {
            fprintf(stderr, "relay_producer: gate closed without a start byte\n");
            return 1;
        }
        close(g);
    }

    if (bu_send_frames(1, buf, nf, flen, count) < 0)
        die("write");
    free(buf);

    if (wait_eof)
        bu_drain(0);
    return 0;
}
