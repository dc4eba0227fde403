/* fuzz_control.c - what a local client sends on the control socket, through
 * hyphad's own code: the bytes are written, in chunks, into a socketpair
 * whose other end is served as a control client (control.c reads and cuts
 * lines under the 64 KiB cap, ctlreq.c parses and checks, ctlcmd.c runs,
 * ctlout.c replies) of a real supervisor (fixture.h), then the client shuts
 * its side. It must never crash, leak or hang, and:
 *   - the client is answered and closed once it has shut its side;
 *   - every request line (not blank, at most 64 KiB) gets exactly one reply
 *     line, in order; a longer line gets "request too long" and what follows
 *     it nothing;
 *   - every reply is a JSON object whose "ok" is true or false, never the
 *     "out of memory" that stands in for a reply jansson could not write;
 *   - a request ctlreq.c refuses gets exactly hy_ctl_error_json(why);
 *   - one it accepts is refused only when its NAME has no instance.
 * The oracle cuts the lines itself (not with hy_ctl_next_line).
 *
 * Input: byte 0: bit 0 the supervisor is shutting down, bit 1 reload is
 * available, bit 2 the first line is padded to the cap (fuzz_pad, byte 1
 * says where), bits 3-6 the chunk written at a time (1 << n bytes, at least
 * a 16th of the input), bit 7 small socket buffers (replies wait for the
 * socket to be writable: the write watcher, a close once written); bytes
 * 2.. the client's. A start or restart spawns
 * nothing (hy_worker_spawn is wrapped: the link's --wrap). */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ctl_int.h"
#include "fixture.h"
#include "hypha/ctlreq.h"
#include "instance.h"

#define NO_PROGRESS_MAX 1000 /* loop turns with nothing read or written: a hang */

void __wrap_hy_worker_spawn(hy_instance *in);
void __wrap_hy_worker_spawn(hy_instance *in) { (void)in; }

static hy_ctl ctls[2]; /* [1]: its supervisor is shutting down */

static int reload_ok(void *ud, json_t *reply, hy_err *err)
{
    (void)ud;
    (void)err;
    json_object_set_new(reply, "unchanged", json_pack("[s,s]", "risk", "feed"));
    return 0;
}

/* Lines for `tail`: plain, not UTF-8, with a NUL, long; in both of risk's
 * instances, interleaved. */
static void fill_tails(hy_sup *s)
{
    static const char *const lines[] = {"starting up", "bad \xff\xfe bytes", "caf\xc3\xa9", "tab\tand \"quotes\""};
    char longline[3000];
    memset(longline, 'x', sizeof longline);
    for (unsigned i = 0; i < 8; i++) {
        hy_instance *in = s->inst[i % 2];
        const char *l = lines[i % 4];
        hy_tail_push(&in->tail, l, strlen(l), s->line_seq++);
    }
    hy_tail_push(&s->inst[0]->tail, "nul\0inside", 10, s->line_seq++);
    hy_tail_push(&s->inst[1]->tail, longline, sizeof longline, s->line_seq++);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    for (int i = 0; i < 2; i++) {
        hy_sup *s = fuzz_sup_new();
        fill_tails(s);
        if (i)
            hy_sup_stop_all(s, NULL); /* nothing runs: shutting down at once */
        ctls[i].sup = s;
        ctls[i].loop = EV_DEFAULT;
    }
    return 0;
}

/* ---- the client ------------------------------------------------------------ */

typedef struct replies {
    char *p;
    size_t n, cap;
} replies;

/* What the server wrote so far; true once it closed its side. */
static bool drain(int fd, replies *r)
{
    for (;;) {
        if (r->cap - r->n < 65536 && !(r->p = realloc(r->p, r->cap = r->cap * 2 + 65536)))
            abort();
        ssize_t n = recv(fd, r->p + r->n, r->cap - r->n, 0);
        if (n > 0) {
            r->n += (size_t)n;
            continue;
        }
        /* closed with our bytes unread (over the cap): ECONNRESET, after its replies */
        return n == 0 || errno == ECONNRESET;
    }
}

/* Write the input `chunk` bytes at a time, turning the loop between, shut
 * our side, and read until the server closed. Returns its replies. */
static replies converse(hy_ctl *c, const uint8_t *data, size_t size, size_t chunk, bool small)
{
    int sv[2], least = 1; /* the kernel's floor: a few KiB */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    if (small && (setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &least, sizeof least) < 0 ||
                  setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &least, sizeof least) < 0))
        abort();
    if (!hy_ctl_client_new(c, sv[0], (unsigned)geteuid(), (unsigned)getpid()))
        abort();
    replies r = {NULL, 0, 0};
    size_t off = 0;
    bool shut = false, closed = false;
    for (int idle = 0; !closed || c->nclients; idle++) {
        if (idle > NO_PROGRESS_MAX)
            abort(); /* the server neither answers nor closes */
        size_t before = r.n + off;
        if (off < size) {
            ssize_t n = send(sv[1], data + off, size - off < chunk ? size - off : chunk, MSG_NOSIGNAL);
            if (n > 0)
                off += (size_t)n;
            else if (errno == EPIPE || errno == ECONNRESET)
                off = size; /* it closed: over the cap */
        } else if (!shut) {
            shutdown(sv[1], SHUT_WR);
            shut = true;
        }
        ev_run(c->loop, EVRUN_NOWAIT);
        closed = drain(sv[1], &r);
        if (r.n + off != before)
            idle = 0;
    }
    close(sv[1]);
    return r;
}

/* ---- the oracle ------------------------------------------------------------- */

/* The next reply line, NUL-terminated in place. */
static char *next_reply(char **p, char *end)
{
    char *nl = memchr(*p, '\n', (size_t)(end - *p));
    if (!nl)
        abort(); /* a request without its reply */
    *nl = '\0';
    char *line = *p;
    *p = nl + 1;
    return line;
}

/* The reply is exactly j written as ctlout.c writes it. Takes j. */
static void expect_text(const char *reply, json_t *j)
{
    char *want = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
    if (!want || strcmp(reply, want) != 0)
        abort(); /* NULL: a refusal jansson cannot write (not UTF-8) */
    free(want);
    json_decref(j);
}

/* An accepted request's NAME (if any) has an instance in the fixture. */
static bool names_instance(const hy_ctl *c, const hy_ctl_req *r)
{
    if (!r->name)
        return true;
    const hy_worker_spec *w = hy_topology_find_worker(hy_sup_topology(c->sup), r->sel.base);
    return w && (r->sel.index < 0 || (unsigned long)r->sel.index < w->instances);
}

/* One request line and its reply. *streaming: an earlier tap or tail -f
 * was accepted (the connection streams from then on). A refusal is
 * compared as text, so only the replies to accepted requests are parsed. */
static void check_reply(const hy_ctl *c, const uint8_t *line, size_t len, const char *reply, bool *streaming)
{
    hy_ctl_facts f = {hy_sup_topology(c->sup)->schema, *streaming, hy_sup_shutting_down(c->sup), c->reload != NULL,
                      c->upgrade != NULL};
    hy_ctl_req req;
    char why[HY_CTL_WHY_MAX];
    if (hy_ctl_req_parse((const char *)line, len, &f, &req, why, sizeof why) < 0) {
        expect_text(reply, hy_ctl_error_json(why));
        return;
    }
    json_t *r = json_loads(reply, JSON_ALLOW_NUL, NULL); /* \u0000 is JSON: a worker wrote a NUL */
    json_t *ok = json_object_get(r, "ok");
    const char *error = json_string_value(json_object_get(r, "error"));
    if (!json_is_boolean(ok) || (error && strcmp(error, "out of memory") == 0))
        abort();
    if (json_is_true(ok) != names_instance(c, &req))
        abort();
    if (json_is_true(ok) && (req.cmd == HY_CTL_TAP || (req.cmd == HY_CTL_TAIL && req.follow)))
        *streaming = true;
    hy_ctl_req_free(&req);
    json_decref(r);
}

/* The input's lines against the replies, in order, all of them. */
static void check_all(const hy_ctl *c, const uint8_t *data, size_t size, replies *rs)
{
    char *p = rs->p, *end = rs->p + rs->n;
    bool streaming = false;
    for (size_t off = 0; off < size;) {
        const uint8_t *nl = memchr(data + off, '\n', size - off);
        size_t raw = nl ? (size_t)(nl - (data + off)) : size - off;
        if (raw > HY_CTL_MAX_REQUEST) {
            char too_long[128];
            snprintf(too_long, sizeof too_long, "request too long (over %u bytes)", HY_CTL_MAX_REQUEST);
            expect_text(next_reply(&p, end), hy_ctl_error_json(too_long));
            break;
        }
        size_t len = raw && data[off + raw - 1] == '\r' ? raw - 1 : raw;
        if (len)
            check_reply(c, data + off, len, next_reply(&p, end), &streaming);
        off += raw + (nl ? 1 : 0);
    }
    if (p != end)
        abort(); /* a reply to nothing */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t flags = data[0], knob = data[1];
    hy_ctl *c = &ctls[flags & 1];
    c->reload = flags & 2 ? reload_ok : NULL;
    uint8_t *own;
    size -= 2;
    const uint8_t *in = fuzz_pad(data + 2, &size, flags & 4, knob, HY_CTL_MAX_REQUEST, &own);
    size_t chunk = (size_t)1 << (flags >> 3 & 15);
    if (chunk < size / 16)
        chunk = size / 16;
    replies r = converse(c, in, size, chunk, flags & 0x80);
    check_all(c, in, size, &r);
    free(r.p);
    free(own);
    return 0;
}
