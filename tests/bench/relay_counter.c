/* relay_counter.c - a subscriber that counts frames on stdin, for the relay
 * fan-out benchmark (bench_relay.py).
 *
 *   relay_counter TYPE SIZE EXPECT DIR
 *
 * Its instance number comes from $HYPHA_INSTANCE (hyphad sets it; so does
 * relay_fanout). At start it creates DIR/ready.<i>. It reads TLV frames from
 * stdin: control frames (type 0, from hyphad) are skipped; every other frame
 * must be of TYPE with a SIZE-byte payload `u32 0 | u64 seq` and seq exactly
 * 0, 1, 2 ... When EXPECT frames are in it writes DIR/done.<i> with
 * "<count> <CLOCK_MONOTONIC ns>"; at EOF it writes DIR/eof.<i> with the final
 * count (so a duplicate after the last one shows) and exits 0. A bad frame
 * writes DIR/error.<i> and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchutil.h"

static const char *dir;
static const char *inst;

static void put_file(const char *what, const char *fmt, ...)
{
    char path[4096], tmp[4200], text[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    snprintf(path, sizeof path, "%s/%s.%s", dir, what, inst);
    snprintf(tmp, sizeof tmp, "%s/.%s.%s.tmp", dir, what, inst); /* hidden: not matched by what.* */
    FILE *f = fopen(tmp, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0 || rename(tmp, path) != 0)
        fprintf(stderr, "relay_counter: cannot write %s\n", path);
}

static void fail(const char *fmt, unsigned long long a, unsigned long long b)
{
    char msg[200];
    snprintf(msg, sizeof msg, fmt, a, b);
    fprintf(stderr, "relay_counter[%s]: FAIL: %s\n", inst, msg);
    put_file("error", "%s\n", msg);
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc != 5 || !(inst = getenv("HYPHA_INSTANCE"))) {
        fprintf(stderr, "usage: HYPHA_INSTANCE=i relay_counter TYPE SIZE EXPECT DIR\n");
        return 2;
    }
    uint16_t want_type = (uint16_t)strtoul(argv[1], NULL, 0);
    uint32_t want_size = (uint32_t)strtoul(argv[2], NULL, 0);
    unsigned long long expect = strtoull(argv[3], NULL, 0), count = 0;
    dir = argv[4];
    if (want_size < 12)
        return 2;
    put_file("ready", "\n");

    static uint8_t buf[1 << 18];
    uint8_t pre[BU_PREFIX];
    size_t have = 0, flen = 0;
    int control = 0;
    for (;;) {
        ssize_t n = bu_read(0, buf, sizeof buf);
        if (n < 0)
            fail("read: errno %llu%llu", (unsigned long long)errno, 0);
        if (n == 0)
            break;
        const uint8_t *p = buf;
        size_t len = (size_t)n;
        while (len > 0) {
            if (flen == 0) { /* collecting the prefix (or a control frame's header) */
                size_t need = have < BU_HDR ? BU_HDR : BU_PREFIX;
                size_t take = need - have < len ? need - have : len;
                memcpy(pre + have, p, take);
                have += take;
                p += take;
                len -= take;
                if (have < BU_HDR)
                    break;
                uint16_t type = bu_get_u16(pre);
                uint32_t flen_payload = bu_get_u32(pre + 2);
                if (type == 0) {
                    control = 1;
                    flen = BU_HDR + (size_t)flen_payload;
                } else if (have < BU_PREFIX) {
                    if (len == 0)
                        break;
                    continue;
                } else {
                    if (type != want_type || flen_payload != want_size)
                        fail("frame type %llu length %llu", type, flen_payload);
                    uint32_t id = bu_get_u32(pre + 6);
                    unsigned long long seq = bu_get_u64(pre + 10);
                    if (id != 0 || seq != count)
                        fail("seq %llu, expected %llu (lost, duplicated or reordered)", seq, count);
                    control = 0;
                    flen = BU_HDR + (size_t)flen_payload;
                }
            }
            size_t take = flen - have < len ? flen - have : len;
            have += take;
            p += take;
            len -= take;
            if (have == flen) {
                have = flen = 0;
                if (!control && ++count == expect)
                    put_file("done", "%llu %lld\n", count, bu_now_ns());
            }
        }
    }
    if (have)
        fail("EOF in the middle of a frame (%llu bytes)%llu", (unsigned long long)have, 0);
    put_file("eof", "%llu\n", count);
    return 0;
}
