/* test_bus.c - fan-out of accepted frames (hypha/bus.h) on a real ev_loop:
 * subscribers are worker sinks writing to pipes, clients and the upstream
 * write to socketpairs, and what each reader gets is decoded and checked
 * (whole frames, intact, in order). Frames that lie in the bus's read
 * buffer are queued as runs, ended by hy_bus_rbuf, a route change, a source
 * going away, or the flush (an ev_prepare: one loop iteration runs it). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "hypha/bus.h"
#include "frames.h"
#include "logcap.h"

#define PLEN 10u
#define FLEN (HY_TLV_HEADER + PLEN)

#include "wcount.h"

/* ---- fixture ------------------------------------------------------------------ */

/* A destination: its sink, its subscription (workers), its reader. */
typedef struct dest {
    hy_sink s;
    hy_sub sub;
    hy_bus_client member;
    hy_drops d;
    int fds[2];
    tf_reader r;
    uint16_t fixed[4];
    int errors;
} dest;

typedef struct fx {
    struct ev_loop *loop;
    hy_flow flow;
    hy_bus b;
    logcap log;
    hy_drops od;                 /* the origins' counters */
    hy_origin o1, o2;
} fx;

static fx *fx_new(bool has_upstream, bool local_feed)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    log_capture(&f->log);
    f->loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(f->loop);
    hy_flow_init(&f->flow, f->loop, local_feed);
    assert_int_equal(hy_bus_init(&f->b, f->loop, has_upstream, local_feed), 0);
    hy_bus_start(&f->b);
    hy_drops_init(&f->od, "router", "worker", "src", "instance", "0");
    f->o1 = (hy_origin){"src[0]", &f->od};
    f->o2 = (hy_origin){"src[1]", &f->od};
    return f;
}

static void fx_free(fx *f)
{
    hy_bus_free(&f->b);
    ev_loop_destroy(f->loop);
    log_release(&f->log);
    free(f);
}

/* A worker instance subscribed (in the topology) to types[0..n). */
static void add_worker(fx *f, dest *d, const uint16_t *types, size_t n)
{
    memset(d, 0, sizeof *d);
    assert_true(n <= 4);
    assert_int_equal(pipe2(d->fds, O_NONBLOCK | O_CLOEXEC), 0);
    hy_drops_init(&d->d, "router", "worker", "w", "instance", "0");
    hy_sink_init(&d->s, &f->b.sinks, &f->flow, HY_SINK_WORKER, 1 << 20, HY_OVERFLOW_BLOCK, &d->d);
    hy_sink_set_fd(&d->s, d->fds[1], false);
    if (n)
        memcpy(d->fixed, types, n * sizeof *types);
    d->sub.sink = &d->s;
    d->sub.fixed = d->fixed;
    d->sub.nfixed = n;
    hy_bus_add_sub(&f->b, &d->sub);
    hy_bus_subs_changed(&f->b);
    tf_reader_init(&d->r, d->fds[0]);
}

/* A listen client, or the upstream (not added to the bus's clients). */
static void add_socket_dest(fx *f, dest *d, hy_sink_role role, uint64_t limit)
{
    memset(d, 0, sizeof *d);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, d->fds), 0);
    hy_drops_init(&d->d, "relay", "from", "peer", NULL, NULL);
    hy_sink_init(&d->s, &f->b.sinks, &f->flow, role, limit, HY_OVERFLOW_BLOCK, &d->d);
    hy_sink_set_fd(&d->s, d->fds[0], true);
    d->s.owner = d;
    tf_reader_init(&d->r, d->fds[1]);
}

static void add_client(fx *f, dest *d, uint64_t limit)
{
    add_socket_dest(f, d, HY_SINK_CLIENT, limit);
    d->member.sink = &d->s;
    hy_bus_add_client(&f->b, &d->member);
}

static void add_upstream(fx *f, dest *d)
{
    add_socket_dest(f, d, HY_SINK_UPSTREAM, 1 << 20);
    f->b.up = &d->s;
}

static void dest_free(fx *f, dest *d)
{
    if (d->sub.sink)
        hy_bus_remove_sub(&f->b, &d->sub);
    if (d->member.sink)
        hy_bus_remove_client(&f->b, &d->member);
    if (f->b.up == &d->s)
        f->b.up = NULL;
    hy_sink_free(&d->s);
    hy_sub_clear(&d->sub);
    tf_reader_free(&d->r);
    close(d->fds[0]);
    close(d->fds[1]);
}

/* One loop iteration: the flush (ev_prepare) runs. Then read everything. */
static void flush(fx *f, dest **ds, size_t n)
{
    ev_run(f->loop, EVRUN_NOWAIT);
    for (size_t i = 0; i < n; i++)
        tf_read(&ds[i]->r);
}

/* What a reader got: exactly these (type, seq) frames, whole, in order. */
static void assert_got(const dest *d, const uint16_t *types, const uint32_t *seqs, size_t n)
{
    assert_int_equal(d->r.bad, 0);
    assert_int_equal(d->r.parsed, d->r.len);
    assert_int_equal(d->r.nframes, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(d->r.type[i], types[i]);
        assert_int_equal(d->r.seq[i], seqs[i]);
        assert_int_equal(d->r.plen[i], PLEN);
    }
}

#define GOT(d, ...)                                                                   \
    do {                                                                              \
        const uint32_t seqs_[] = {__VA_ARGS__};                                       \
        uint16_t types_[sizeof seqs_ / sizeof *seqs_];                                \
        for (size_t i_ = 0; i_ < sizeof seqs_ / sizeof *seqs_; i_++)                   \
            types_[i_] = type_of[seqs_[i_]];                                          \
        assert_got((d), types_, seqs_, sizeof seqs_ / sizeof *seqs_);                 \
    } while (0)

/* The type of frame number seq, as published by the test (for GOT). */
static uint16_t type_of[256];

/* Frames seq0.. of the given types, written at the start of the read
 * buffer (as a read(2) would) and published in turn. */
static void publish_read(fx *f, const hy_origin *o, const uint16_t *types, size_t n, uint32_t seq0, bool upward)
{
    size_t cap;
    uint8_t *buf = hy_bus_rbuf(&f->b, &cap);
    assert_true(cap >= n * FLEN);
    for (size_t i = 0; i < n; i++) {
        uint32_t seq = seq0 + (uint32_t)i;
        type_of[seq] = types[i];
        tf_make(buf + i * FLEN, types[i], seq, PLEN);
    }
    for (size_t i = 0; i < n; i++) {
        assert_true(hy_bus_in_rbuf(&f->b, buf + i * FLEN));
        hy_bus_publish(&f->b, o, buf + i * FLEN, FLEN, types[i], upward);
    }
}

/* One frame from outside the read buffer (a decoder's assembly buffer). */
static void publish_outside(fx *f, const hy_origin *o, uint16_t type, uint32_t seq, bool upward)
{
    uint8_t buf[FLEN];
    type_of[seq] = type;
    tf_make(buf, type, seq, PLEN);
    assert_false(hy_bus_in_rbuf(&f->b, buf));
    hy_bus_publish(&f->b, o, buf, FLEN, type, upward);
    memset(buf, 0xEE, sizeof buf); /* it was copied */
}

/* ---- local runs ---------------------------------------------------------------- */

static void test_runs_coalesced_and_in_order(void **state)
{
    (void)state;
    fx *f = fx_new(false, true); /* embedded */
    dest a, b;
    add_worker(f, &a, (uint16_t[]){1001}, 1);
    add_worker(f, &b, (uint16_t[]){1001, 1002}, 2);
    dest *all[] = {&a, &b};
    size_t cap;
    uint8_t *buf = hy_bus_rbuf(&f->b, &cap);
    const uint16_t types[] = {1001, 1001, 1001, 1002, 1001, 1001};
    for (uint32_t i = 0; i < 6; i++) {
        type_of[i] = types[i];
        tf_make(buf + i * FLEN, types[i], i, PLEN);
    }
    for (uint32_t i = 0; i < 3; i++)
        hy_bus_publish(&f->b, &f->o1, buf + i * FLEN, FLEN, 1001, true);
    /* one run of three, not queued yet */
    assert_int_equal(f->b.lrun_frames, 3);
    assert_int_equal(f->b.lrun_len, 3 * FLEN);
    assert_int_equal(a.s.frames, 0);
    assert_int_equal(b.s.frames, 0);
    /* another type: other destinations, the run is queued, a new one starts */
    hy_bus_publish(&f->b, &f->o1, buf + 3 * FLEN, FLEN, 1002, true);
    assert_int_equal(a.s.frames, 3);
    assert_int_equal(b.s.frames, 3);
    assert_int_equal(f->b.lrun_frames, 1);
    for (uint32_t i = 4; i < 6; i++)
        hy_bus_publish(&f->b, &f->o1, buf + i * FLEN, FLEN, 1001, true);
    assert_int_equal(b.s.frames, 4);
    assert_int_equal(f->b.lrun_frames, 2);
    /* nothing is written before the flush */
    tf_read(&a.r);
    tf_read(&b.r);
    assert_int_equal(a.r.len, 0);
    assert_int_equal(b.r.len, 0);
    memset(nwrites, 0, sizeof nwrites);
    flush(f, all, 2);
    assert_int_equal(nwrites[a.fds[1]], 1); /* one write each for the burst */
    assert_int_equal(nwrites[b.fds[1]], 1);
    assert_int_equal(f->b.lrun_frames, 0);
    assert_null(f->b.sinks.dirty);
    GOT(&a, 0, 1, 2, 4, 5);
    GOT(&b, 0, 1, 2, 3, 4, 5);
    assert_int_equal(a.s.frames, 5);
    assert_int_equal(b.s.frames, 6);
    /* a second flush with nothing new writes nothing */
    flush(f, all, 2);
    assert_int_equal(a.r.nframes, 5);
    dest_free(f, &a);
    dest_free(f, &b);
    fx_free(f);
}

/* A run is pushed as one: a subscriber that is not running counts the
 * whole run in one step (one "frame dropped" line, total=3). */
static void test_run_is_one_push(void **state)
{
    (void)state;
    fx *f = fx_new(false, true);
    dest a;
    add_worker(f, &a, (uint16_t[]){1001}, 1);
    hy_sink_set_fd(&a.s, -1, false); /* not running */
    publish_read(f, &f->o1, (uint16_t[]){1001, 1001, 1001}, 3, 0, true);
    assert_int_equal(a.d.n[HY_DROP_NOT_RUNNING], 0); /* still a pending run */
    ev_run(f->loop, EVRUN_NOWAIT);
    assert_int_equal(a.d.n[HY_DROP_NOT_RUNNING], 3);
    assert_int_equal(log_count(&f->log, "frame dropped"), 1);
    assert_int_equal(log_count_lines(&f->log, "reason=not-running", "total=3"), 1);
    hy_sink_set_fd(&a.s, a.fds[1], false);
    dest_free(f, &a);
    fx_free(f);
}

/* Each read ends the previous read's runs: frames keep their order across
 * reads, and across sources. */
static void test_runs_across_reads(void **state)
{
    (void)state;
    fx *f = fx_new(false, true);
    dest a;
    add_worker(f, &a, (uint16_t[]){1001, 1002}, 2);
    dest *all[] = {&a};
    publish_read(f, &f->o1, (uint16_t[]){1001, 1002}, 2, 0, true);
    publish_read(f, &f->o2, (uint16_t[]){1002, 1002, 1001}, 3, 2, true);
    assert_int_equal(a.s.frames, 4); /* the first read's runs and the 1002 pair */
    publish_read(f, &f->o1, (uint16_t[]){1001}, 1, 5, true);
    flush(f, all, 1);
    GOT(&a, 0, 1, 2, 3, 4, 5);
    dest_free(f, &a);
    fx_free(f);
}

static void test_frames_outside_rbuf(void **state)
{
    (void)state;
    fx *f = fx_new(false, true);
    dest a, b;
    add_worker(f, &a, (uint16_t[]){1001}, 1);
    add_worker(f, &b, (uint16_t[]){1001, 1002}, 2);
    dest *all[] = {&a, &b};
    /* queued at once, not as a run */
    publish_outside(f, &f->o1, 1001, 0, true);
    assert_int_equal(f->b.lrun_frames, 0);
    assert_int_equal(a.s.frames, 1);
    assert_int_equal(b.s.frames, 1);
    /* after frames of a read: the run goes first, order kept */
    size_t cap;
    uint8_t *buf = hy_bus_rbuf(&f->b, &cap);
    for (uint32_t i = 0; i < 2; i++) {
        type_of[1 + i] = 1001;
        tf_make(buf + i * FLEN, 1001, 1 + i, PLEN);
        hy_bus_publish(&f->b, &f->o1, buf + i * FLEN, FLEN, 1001, true);
    }
    publish_outside(f, &f->o1, 1002, 3, true);
    publish_outside(f, &f->o1, 1001, 4, true);
    /* and a frame of the same read after it starts a new run */
    type_of[5] = 1001;
    tf_make(buf + 2 * FLEN, 1001, 5, PLEN);
    hy_bus_publish(&f->b, &f->o1, buf + 2 * FLEN, FLEN, 1001, true);
    flush(f, all, 2);
    GOT(&a, 0, 1, 2, 4, 5);
    GOT(&b, 0, 1, 2, 3, 4, 5);
    dest_free(f, &a);
    dest_free(f, &b);
    fx_free(f);
}

static void test_unsubscribed_type_goes_nowhere(void **state)
{
    (void)state;
    fx *f = fx_new(false, true);
    dest a, b;
    add_worker(f, &a, (uint16_t[]){1001}, 1);
    add_worker(f, &b, (uint16_t[]){1002}, 1);
    dest *all[] = {&a, &b};
    publish_read(f, &f->o1, (uint16_t[]){1003, 1003}, 2, 0, true);
    publish_outside(f, &f->o1, 1003, 2, true);
    publish_outside(f, &f->o1, 7, 3, false);
    flush(f, all, 2);
    assert_int_equal(a.r.len, 0);
    assert_int_equal(b.r.len, 0);
    assert_int_equal(a.s.frames + b.s.frames, 0);
    assert_int_equal(hy_drops_total(&a.d) + hy_drops_total(&b.d) + hy_drops_total(&f->od), 0);
    /* a listen client gets every frame, subscribed or not */
    dest c;
    add_client(f, &c, 1 << 20);
    dest *all3[] = {&a, &b, &c};
    publish_read(f, &f->o1, (uint16_t[]){1003, 1001, 1003}, 3, 4, true);
    flush(f, all3, 3);
    GOT(&a, 5);
    assert_int_equal(b.r.len, 0);
    GOT(&c, 4, 5, 6);
    dest_free(f, &c);
    dest_free(f, &a);
    dest_free(f, &b);
    fx_free(f);
}

/* ---- upstream --------------------------------------------------------------------- */

static void test_upward_only_to_upstream(void **state)
{
    (void)state;
    fx *f = fx_new(true, false); /* an upstream, echo: frames come back from it */
    dest up, a, c;
    add_upstream(f, &up);
    add_worker(f, &a, (uint16_t[]){1001, 1002}, 2);
    add_client(f, &c, 1 << 20);
    dest *all[] = {&up, &a, &c};
    /* from workers or clients: upstream only */
    publish_read(f, &f->o1, (uint16_t[]){1001, 1001, 1002}, 3, 0, true);
    assert_int_equal(f->b.run_frames, 3); /* one upstream run, every type */
    assert_int_equal(f->b.lrun_frames, 0);
    publish_outside(f, &f->o1, 1002, 3, true);
    flush(f, all, 3);
    GOT(&up, 0, 1, 2, 3);
    assert_int_equal(a.r.len, 0);
    assert_int_equal(c.r.len, 0);
    /* from the bus: local subscribers and clients, not back upstream */
    publish_read(f, &f->o2, (uint16_t[]){1001, 1002}, 2, 4, false);
    assert_int_equal(f->b.run_frames, 0);
    flush(f, all, 3);
    GOT(&up, 0, 1, 2, 3);
    GOT(&a, 4, 5);
    GOT(&c, 4, 5);
    dest_free(f, &c);
    dest_free(f, &a);
    dest_free(f, &up);
    fx_free(f);
}

static void test_upward_local_feed_goes_both_ways(void **state)
{
    (void)state;
    fx *f = fx_new(true, true); /* echo: false */
    dest up, a;
    add_upstream(f, &up);
    add_worker(f, &a, (uint16_t[]){1001}, 1);
    dest *all[] = {&up, &a};
    publish_read(f, &f->o1, (uint16_t[]){1001, 1002, 1001}, 3, 0, true);
    publish_outside(f, &f->o1, 1001, 3, true);
    flush(f, all, 2);
    GOT(&up, 0, 1, 2, 3);
    GOT(&a, 0, 2, 3);
    dest_free(f, &a);
    dest_free(f, &up);
    fx_free(f);
}

/* Upstream runs are per source; a source going away queues its run. */
static void test_upstream_runs_per_source(void **state)
{
    (void)state;
    fx *f = fx_new(true, false);
    dest up;
    add_upstream(f, &up);
    dest *all[] = {&up};
    size_t cap;
    uint8_t *buf = hy_bus_rbuf(&f->b, &cap);
    for (uint32_t i = 0; i < 4; i++) {
        type_of[i] = 1001;
        tf_make(buf + i * FLEN, 1001, i, PLEN);
    }
    hy_bus_publish(&f->b, &f->o1, buf, FLEN, 1001, true);
    hy_bus_publish(&f->b, &f->o1, buf + FLEN, FLEN, 1001, true);
    assert_int_equal(f->b.run_frames, 2);
    hy_bus_publish(&f->b, &f->o2, buf + 2 * FLEN, FLEN, 1001, true); /* another source */
    assert_int_equal(up.s.frames, 2);
    assert_int_equal(f->b.run_frames, 1);
    assert_ptr_equal(f->b.run_src, &f->o2);
    hy_bus_forget(&f->b, &f->o1); /* not the run's source: nothing to do */
    assert_int_equal(f->b.run_frames, 1);
    hy_bus_forget(&f->b, &f->o2); /* its source goes: queued now */
    assert_int_equal(f->b.run_frames, 0);
    assert_int_equal(up.s.frames, 3);
    hy_bus_publish(&f->b, &f->o2, buf + 3 * FLEN, FLEN, 1001, true);
    flush(f, all, 1);
    GOT(&up, 0, 1, 2, 3);
    dest_free(f, &up);
    fx_free(f);
}

/* ---- tap ------------------------------------------------------------------------------ */

typedef struct tapped {
    int n;
    char from[32];
    uint16_t type;
    uint32_t len;
    uint32_t seq;
    int bad;
} tapped;

static void tap_fn(void *ud, const char *from, uint16_t type_id, const uint8_t *payload, uint32_t len)
{
    tapped *t = ud;
    t->n++;
    snprintf(t->from, sizeof t->from, "%s", from);
    t->type = type_id;
    t->len = len;
    t->seq = hy_le32(payload);
    for (uint32_t i = 4; i < len; i++)
        if (payload[i] != (uint8_t)t->seq)
            t->bad++;
}

static void test_tap_sees_tapped_types(void **state)
{
    (void)state;
    fx *f = fx_new(false, true);
    dest a;
    add_worker(f, &a, (uint16_t[]){1001, 1002}, 2);
    dest *all[] = {&a};
    static uint8_t bits[65536 / 8];
    memset(bits, 0, sizeof bits);
    bits[1002 >> 3] |= (uint8_t)(1u << (1002 & 7));
    tapped t = {0};
    hy_bus_set_tap(&f->b, bits, tap_fn, &t);
    publish_read(f, &f->o1, (uint16_t[]){1001, 1002, 1003}, 3, 0, true);
    assert_int_equal(t.n, 1);
    assert_string_equal(t.from, "src[0]");
    assert_int_equal(t.type, 1002);
    assert_int_equal(t.len, PLEN);
    assert_int_equal(t.seq, 1);
    assert_int_equal(t.bad, 0);
    publish_outside(f, &f->o2, 1002, 3, false);
    assert_int_equal(t.n, 2);
    assert_string_equal(t.from, "src[1]");
    assert_int_equal(t.seq, 3);
    publish_outside(f, &f->o2, 1001, 4, false);
    assert_int_equal(t.n, 2);
    /* tapping does not change delivery */
    flush(f, all, 1);
    GOT(&a, 0, 1, 3, 4);
    /* tap off */
    hy_bus_set_tap(&f->b, NULL, NULL, NULL);
    publish_outside(f, &f->o1, 1002, 5, true);
    assert_int_equal(t.n, 2);
    dest_free(f, &a);
    fx_free(f);
}

/* ---- subscription changes -------------------------------------------------------------- */

static void test_subs_changed_takes_effect_next_frame(void **state)
{
    (void)state;
    fx *f = fx_new(false, true);
    dest a, b;
    add_worker(f, &a, NULL, 0);                 /* subscribes at run time only */
    add_worker(f, &b, (uint16_t[]){1001}, 1);
    dest *all[] = {&a, &b};
    size_t cap;
    uint8_t *buf = hy_bus_rbuf(&f->b, &cap);
    for (uint32_t i = 0; i < 4; i++) {
        type_of[i] = 1001;
        tf_make(buf + i * FLEN, 1001, i, PLEN);
    }
    hy_bus_publish(&f->b, &f->o1, buf, FLEN, 1001, true); /* a pending run, by the old routes */
    /* a's hello arrives in the same read: subscribe 1001 */
    assert_int_equal(hy_sub_change(&a.sub, (uint16_t[]){1001}, 1, true), 0);
    hy_bus_subs_changed(&f->b);
    hy_bus_publish(&f->b, &f->o1, buf + FLEN, FLEN, 1001, true);
    hy_bus_publish(&f->b, &f->o1, buf + 2 * FLEN, FLEN, 1001, true);
    /* and unsubscribe */
    assert_int_equal(hy_sub_change(&a.sub, (uint16_t[]){1001}, 1, false), 0);
    hy_bus_subs_changed(&f->b);
    hy_bus_publish(&f->b, &f->o1, buf + 3 * FLEN, FLEN, 1001, true);
    flush(f, all, 2);
    GOT(&a, 1, 2);
    GOT(&b, 0, 1, 2, 3);
    /* a subscriber that leaves: no longer routed to, its pending frames kept */
    publish_read(f, &f->o1, (uint16_t[]){1001}, 1, 4, true);
    hy_bus_remove_sub(&f->b, &b.sub);
    hy_bus_subs_changed(&f->b);
    publish_read(f, &f->o1, (uint16_t[]){1001}, 1, 5, true);
    flush(f, all, 2);
    GOT(&b, 0, 1, 2, 3, 4);
    assert_int_equal(a.r.nframes, 2);
    b.sub.sink = NULL; /* already removed */
    dest_free(f, &a);
    dest_free(f, &b);
    fx_free(f);
}

/* ---- clients ---------------------------------------------------------------------------- */

static fx *cur; /* for the client that fails */

static void fail_client(hy_sink *s, int err, const char *why)
{
    (void)err;
    (void)why;
    dest *d = s->owner;
    d->errors++;
    hy_bus_remove_client(&cur->b, &d->member); /* as listen.c dooms it */
}

/* A client that cannot keep up leaves the list while the bus walks it:
 * the others still get every frame. */
static void test_slow_client_leaves_others_served(void **state)
{
    (void)state;
    fx *f = cur = fx_new(false, true);
    dest c1, c2, c3;
    add_client(f, &c1, 1 << 20);
    add_client(f, &c2, 2 * FLEN); /* the slow one, in the middle: it does not read */
    add_client(f, &c3, 1 << 20);
    c2.s.on_error = fail_client;
    tf_fill(c2.fds[0]); /* its socket is full: what passes its limit stays queued */
    dest *all[] = {&c1, &c3};
    /* the pushes, not the flush: frames from outside the buffer */
    for (uint32_t i = 0; i < 5; i++)
        publish_outside(f, &f->o1, 1001, i, true);
    assert_int_equal(c2.errors, 1);
    flush(f, all, 2);
    GOT(&c1, 0, 1, 2, 3, 4);
    GOT(&c3, 0, 1, 2, 3, 4);
    c2.member.sink = NULL; /* already removed */
    dest_free(f, &c1);
    dest_free(f, &c2);
    dest_free(f, &c3);
    fx_free(f);
}

int main(void)
{
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigaction(SIGPIPE, &ign, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs_coalesced_and_in_order),
        cmocka_unit_test(test_run_is_one_push),
        cmocka_unit_test(test_runs_across_reads),
        cmocka_unit_test(test_frames_outside_rbuf),
        cmocka_unit_test(test_unsubscribed_type_goes_nowhere),
        cmocka_unit_test(test_upward_only_to_upstream),
        cmocka_unit_test(test_upward_local_feed_goes_both_ways),
        cmocka_unit_test(test_upstream_runs_per_source),
        cmocka_unit_test(test_tap_sees_tapped_types),
        cmocka_unit_test(test_subs_changed_takes_effect_next_frame),
        cmocka_unit_test(test_slow_client_leaves_others_served),
    };
    return cmocka_run_group_tests_name("bus", tests, NULL, NULL);
}
