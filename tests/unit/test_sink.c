/* test_sink.c - destination queues (hypha/sink.h) on a real ev_loop with
 * real pipes and socketpairs: each role's rule when it cannot take more
 * (worker: drop-oldest, drop-newest, block; upstream: holds; client:
 * failed), the one flush of every dirty sink, what a write to a closed
 * reader does, and what is counted and logged. The loop runs until a
 * condition holds or a deadline passes; nothing sleeps. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "hypha/sink.h"
#include "frames.h"
#include "logcap.h"

#define FLEN 16u  /* each test frame: 6 header + 10 payload */
#define PLEN 10u
#define DEADLINE_S 5.0

/* ---- write(2), counted ---------------------------------------------------------- */

#include "wcount.h"

/* ---- fixture ------------------------------------------------------------------ */

typedef struct fx {
    struct ev_loop *loop;
    hy_flow flow;
    hy_sinks set;
    hy_drops drops;
    logcap log;
    struct sigaction old_pipe;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->loop = ev_loop_new(EVFLAG_AUTO);
    if (!f->loop)
        return -1;
    hy_flow_init(&f->flow, f->loop, true);
    f->set.loop = f->loop;
    f->set.dirty = NULL;
    hy_drops_init(&f->drops, "router", "worker", "w", "instance", "0");
    log_capture(&f->log);
    struct sigaction ign = {.sa_handler = SIG_IGN}; /* as hyphad.c does for its pipes */
    sigaction(SIGPIPE, &ign, &f->old_pipe);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    sigaction(SIGPIPE, &f->old_pipe, NULL);
    log_release(&f->log);
    ev_loop_destroy(f->loop);
    free(f);
    return 0;
}

static void mkpipe(int p[2])
{
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
}

static void mksocks(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

/* Push frame number seq (type 1001) as one frame. */
static hy_push_result push1(hy_sink *s, uint32_t seq)
{
    uint8_t b[FLEN];
    tf_make(b, 1001, seq, PLEN);
    return hy_sink_push(s, NULL, b, FLEN, 1, 1001);
}

/* Push frames first..first+n-1 back to back, in one call. */
static hy_push_result push_batch(hy_sink *s, uint32_t first, size_t n)
{
    uint8_t b[64 * FLEN];
    assert_true(n <= 64);
    for (size_t i = 0; i < n; i++)
        tf_make(b + i * FLEN, 1001, first + (uint32_t)i, PLEN);
    return hy_sink_push(s, NULL, b, n * FLEN, n, 1001);
}

static size_t dirty_count(const hy_sinks *set)
{
    size_t n = 0;
    for (const hy_sink *s = set->dirty; s; s = s->next_dirty)
        n++;
    return n;
}

/* The reader got exactly frames seqs[0..n) of type 1001, whole, in order. */
static void assert_got(const tf_reader *r, const uint32_t *seqs, size_t n)
{
    assert_int_equal(r->bad, 0);
    assert_int_equal(r->parsed, r->len); /* no piece of a frame */
    assert_int_equal(r->nframes, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(r->type[i], 1001);
        assert_int_equal(r->plen[i], PLEN);
        assert_int_equal(r->seq[i], seqs[i]);
    }
}

static void assert_got_range(const tf_reader *r, uint32_t first, size_t n)
{
    uint32_t seqs[TF_MAX];
    for (size_t i = 0; i < n; i++)
        seqs[i] = first + (uint32_t)i;
    assert_got(r, seqs, n);
}

#include "deadline.h"

/* Run the loop (the writable watcher) and read until the reader has `want`
 * whole frames or the deadline passes. */
static bool pump(struct ev_loop *loop, tf_reader *r, size_t want)
{
    deadline d;
    deadline_start(loop, &d, DEADLINE_S);
    tf_read(r);
    while (r->nframes < want && !d.expired) {
        ev_run(loop, EVRUN_ONCE);
        tf_read(r);
    }
    ev_timer_stop(loop, &d.t);
    return r->nframes >= want;
}

/* ---- worker: no fd ------------------------------------------------------------ */

static void test_worker_without_fd_counts_not_running(void **state)
{
    fx *f = *state;
    hy_sink s;
    hy_sink_init(&s, &f->set, &f->flow, HY_SINK_WORKER, 1000, HY_OVERFLOW_DROP_OLDEST, &f->drops);
    assert_int_equal(s.fd, -1);
    assert_int_equal(push1(&s, 0), HY_PUSH_QUEUED);
    assert_int_equal(f->drops.n[HY_DROP_NOT_RUNNING], 1);
    push_batch(&s, 1, 4);
    assert_int_equal(f->drops.n[HY_DROP_NOT_RUNNING], 5);
    assert_int_equal(hy_drops_total(&f->drops), 5);
    /* nothing queued, nothing to write, not accepted */
    assert_int_equal(hy_sink_bytes(&s), 0);
    assert_false(s.dirty);
    assert_null(f->set.dirty);
    assert_int_equal(s.frames, 0);
    /* logged by the counter's rule: 1st (and 5 does not reach 10) */
    assert_int_equal(log_count_lines(&f->log, "frame dropped", "reason=not-running"), 1);
    /* a control frame for it goes nowhere either */
    uint8_t c[FLEN];
    tf_make(c, 0, 0, PLEN);
    hy_sink_push_control(&s, c, FLEN);
    assert_int_equal(hy_sink_bytes(&s), 0);
    assert_false(s.dirty);
    hy_sink_free(&s);
}

/* ---- worker: drop-oldest, drop-newest ----------------------------------------------- */

static void test_drop_oldest_over_limit(void **state)
{
    fx *f = *state;
    int p[2];
    mkpipe(p);
    hy_sink s;
    hy_sink_init(&s, &f->set, &f->flow, HY_SINK_WORKER, 3 * FLEN, HY_OVERFLOW_DROP_OLDEST, &f->drops);
    hy_sink_set_fd(&s, p[1], false);
    for (uint32_t i = 0; i < 15; i++)
        assert_int_equal(push1(&s, i), HY_PUSH_QUEUED);
    assert_int_equal(f->drops.n[HY_DROP_QUEUE_OLDEST], 12);
    assert_int_equal(f->drops.n[HY_DROP_QUEUE_NEWEST], 0);
    assert_int_equal(hy_drops_total(&f->drops), 12);
    assert_int_equal(hy_sink_bytes(&s), 3 * FLEN);
    assert_false(s.over); /* dropping, not blocking: nobody is paused */
    assert_int_equal(f->flow.blocked, 0);
    assert_int_equal(s.frames, 15); /* each was accepted when pushed */
    assert_int_equal(s.bytes, 15 * PLEN);
    /* logged at the 1st and the 10th drop, by the sink, not as "frame dropped" */
    assert_int_equal(log_count(&f->log, "queue full: frames dropped"), 2);
    assert_int_equal(log_count_lines(&f->log, "queue full: frames dropped", "dropped_oldest=1 "), 1);
    assert_int_equal(log_count_lines(&f->log, "queue full: frames dropped", "dropped_oldest=10 "), 1);
    assert_int_equal(log_count_lines(&f->log, "queue full: frames dropped", "policy=drop-oldest"), 2);
    assert_int_equal(log_count_lines(&f->log, "queue full: frames dropped", "worker=w instance=0"), 2);
    assert_int_equal(log_count(&f->log, "frame dropped"), 0); /* not the counter's line */
    /* the newest three arrive */
    assert_int_equal(dirty_count(&f->set), 1);
    hy_sinks_flush(&f->set);
    tf_reader r;
    tf_reader_init(&r, p[0]);
    tf_read(&r);
    assert_got_range(&r, 12, 3);
    tf_reader_free(&r);
    hy_sink_free(&s);
    close(p[0]);
    close(p[1]);
}

static void test_drop_newest_over_limit(void **state)
{
    fx *f = *state;
    int p[2];
    mkpipe(p);
    hy_sink s;
    hy_sink_init(&s, &f->set, &f->flow, HY_SINK_WORKER, 3 * FLEN, HY_OVERFLOW_DROP_NEWEST, &f->drops);
    hy_sink_set_fd(&s, p[1], false);
    for (uint32_t i = 0; i < 15; i++)
        push1(&s, i);
    assert_int_equal(f->drops.n[HY_DROP_QUEUE_NEWEST], 12);
    assert_int_equal(f->drops.n[HY_DROP_QUEUE_OLDEST], 0);
    assert_int_equal(hy_sink_bytes(&s), 3 * FLEN);
    assert_int_equal(s.frames, 3); /* the refused ones were not accepted */
    assert_false(s.over);
    assert_int_equal(f->flow.blocked, 0);
    assert_int_equal(log_count(&f->log, "queue full: frames dropped"), 2);
    assert_int_equal(log_count_lines(&f->log, "queue full: frames dropped", "dropped_newest=1\n"), 1);
    assert_int_equal(log_count_lines(&f->log, "queue full: frames dropped", "dropped_newest=10\n"), 1);
    assert_int_equal(log_count_lines(&f->log, "queue full: frames dropped", "policy=drop-newest"), 2);
    hy_sinks_flush(&f->set);
    tf_reader r;
    tf_reader_init(&r, p[0]);
    tf_read(&r);
    assert_got_range(&r, 0, 3);
    tf_reader_free(&r);
    hy_sink_free(&s);
    close(p[0]);
    close(p[1]);
}

/* A run of frames that does not fit: the policy decides frame by frame, and
 * one push dropping many logs by the same 1st, 10th rule. */
static void test_batch_over_limit(void **state)
{
    fx *f = *state;
    int p[2];
    mkpipe(p);
    hy_sink s;
    hy_sink_init(&s, &f->set, &f->flow, HY_SINK_WORKER, 3 * FLEN, HY_OVERFLOW_DROP_NEWEST, &f->drops);
    hy_sink_set_fd(&s, p[1], false);
    push_batch(&s, 0, 5);              /* 3 fit, 2 refused */
    assert_int_equal(f->drops.n[HY_DROP_QUEUE_NEWEST], 2);
    assert_int_equal(log_count(&f->log, "queue full: frames dropped"), 1);
    push_batch(&s, 5, 10);             /* 10 refused, one by one: 2 -> 12 passes 10 */
    assert_int_equal(f->drops.n[HY_DROP_QUEUE_NEWEST], 12);
    assert_int_equal(log_count(&f->log, "queue full: frames dropped"), 2);
    assert_int_equal(log_count_lines(&f->log, "queue full: frames dropped", "dropped_newest=10\n"), 1);
    push_batch(&s, 15, 3);             /* 12 -> 15: not logged */
    assert_int_equal(log_count(&f->log, "queue full: frames dropped"), 2);
    hy_sinks_flush(&f->set);
    tf_reader r;
    tf_reader_init(&r, p[0]);
    tf_read(&r);
    assert_got_range(&r, 0, 3);
    tf_reader_free(&r);

    /* drop-oldest: the newest of the run stay */
    hy_sink_free(&s);
    hy_drops_init(&f->drops, "router", "worker", "w", "instance", "0");
    hy_sink_init(&s, &f->set, &f->flow, HY_SINK_WORKER, 3 * FLEN, HY_OVERFLOW_DROP_OLDEST, &f->drops);
    hy_sink_set_fd(&s, p[1], false);
    push_batch(&s, 100, 2);            /* fits: one copy */
    push_batch(&s, 102, 5);
    assert_int_equal(f->drops.n[HY_DROP_QUEUE_OLDEST], 4);
    hy_sinks_flush(&f->set);
    tf_reader_init(&r, p[0]);
    tf_read(&r);
    assert_got_range(&r, 104, 3);
    tf_reader_free(&r);
    hy_sink_free(&s);
    close(p[0]);
    close(p[1]);
}

/* One big frame pushes out several small ones at once (drop-oldest): the
 * log rule holds across the jump (0 -> 9 logs once, 9 -> 10 once more). */
static void test_one_push_drops_several(void **state)
{
    fx *f = *state;
    int p[2];
    mkpipe(p);
    hy_sink s;
    hy_sink_init(&s, &f->set, &f->flow, HY_SINK_WORKER, 9 * FLEN, HY_OVERFLOW_DROP_OLDEST, &f->drops);
    hy_sink_set_fd(&s, p[1], false);
    for (uint32_t i = 0; i < 9; i++)
        push1(&s, i);
    assert_int_equal(log_count(&f->log, "queue full"), 0);
    uint8_t big[9 * FLEN];
    size_t n = tf_make(big, 1002, 9, 9 * FLEN - HY_TLV_HEADER);
    assert_int_equal(hy_sink_push(&s, NULL, big, n, 1, 1002), HY_PUSH_QUEUED);
    assert_int_equal(f->drops.n[HY_DROP_QUEUE_OLDEST], 9);
    assert_int_equal(log_count(&f->log, "queue full: frames dropped"), 1);
    assert_int_equal(log_count_lines(&f->log, "queue full: frames dropped", "dropped_oldest=9 "), 1);
    push1(&s, 10); /* the big one goes: 9 -> 10 */
    assert_int_equal(f->drops.n[HY_DROP_QUEUE_OLDEST], 10);
    assert_int_equal(log_count(&f->log, "queue full: frames dropped"), 2);
    assert_int_equal(log_count_lines(&f->log, "queue full: frames dropped", "dropped_oldest=10 "), 1);
    hy_sinks_flush(&f->set);
    tf_reader r;
    tf_reader_init(&r, p[0]);
    tf_read(&r);
    assert_got_range(&r, 10, 1); /* the last small one is all that is left */
    tf_reader_free(&r);
    hy_sink_free(&s);
    close(p[0]);
    close(p[1]);
}

/* ---- worker: block -------------------------------------------------------------------- */

static void nop_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

static void test_block_pauses_then_resumes(void **state)
{
    fx *f = *state;
    /* the worker's own stdout, and a client (local_feed: it feeds workers) */
    int po[2], pc[2], p[2];
    mkpipe(po);
    mkpipe(pc);
    mkpipe(p);
    ev_io wo, wc;
    ev_io_init(&wo, nop_cb, po[0], EV_READ);
    ev_io_init(&wc, nop_cb, pc[0], EV_READ);
    hy_source own, client;
    hy_flow_add(&f->flow, &own, &wo, HY_SRC_WORKER);
    hy_flow_add(&f->flow, &client, &wc, HY_SRC_CLIENT);
    hy_flow_open(&f->flow, &own, true);
    hy_flow_open(&f->flow, &client, true);

    const uint64_t limit = 4 * FLEN;
    hy_sink s;
    hy_sink_init(&s, &f->set, &f->flow, HY_SINK_WORKER, limit, HY_OVERFLOW_BLOCK, &f->drops);
    hy_sink_set_fd(&s, p[1], false);
    s.own = &own;
    size_t junk = tf_fill(p[1]); /* the worker does not read: its stdin is full */
    assert_true(junk > 0);

    for (uint32_t i = 0; i < 4; i++)
        push1(&s, i);
    assert_false(s.over); /* at the limit, not past it */
    assert_int_equal(f->flow.blocked, 0);
    uint32_t n = 4;
    for (; n < 300; n++)  /* block never drops: all queued past the limit */
        push1(&s, n);
    assert_true(s.over);
    assert_int_equal(f->flow.blocked, 1);
    assert_true(own.always);           /* its own stdout is still read */
    assert_true(ev_is_active(&wo));
    assert_false(ev_is_active(&wc));   /* the client, which feeds workers, is not */
    assert_int_equal(hy_drops_total(&f->drops), 0);
    assert_int_equal(hy_sink_bytes(&s), 300 * FLEN);
    assert_int_equal(log_count(&f->log, "queue full"), 0);

    /* the flush cannot write: it waits for the fd, still over */
    hy_sinks_flush(&f->set);
    assert_true(ev_is_active(&s.ww));
    assert_true(s.over);
    assert_int_equal(f->flow.blocked, 1);

    /* the worker reads a little: what is written keeps it over while more
     * than the limit is left */
    tf_discard(p[0], 4096);
    ev_run(f->loop, EVRUN_NOWAIT);
    assert_true(hy_sink_bytes(&s) > limit); /* 4096 of 4800 bytes at most went */
    assert_true(s.over);
    assert_int_equal(f->flow.blocked, 1);
    assert_false(ev_is_active(&wc));

    /* it reads everything: flushed under the limit, the sources go on */
    size_t left = junk - 4096;
    while (left > 0) {
        size_t got = tf_discard(p[0], left);
        if (got == 0)
            break;
        left -= got;
    }
    assert_int_equal(left, 0);
    tf_reader r;
    tf_reader_init(&r, p[0]);
    assert_true(pump(f->loop, &r, 300));
    assert_false(s.over);
    assert_int_equal(f->flow.blocked, 0);
    assert_false(own.always);
    assert_true(ev_is_active(&wo));
    assert_true(ev_is_active(&wc));
    assert_got_range(&r, 0, 300);
    hy_sinks_flush(&f->set);
    assert_false(ev_is_active(&s.ww)); /* nothing left: not waiting on the fd */
    tf_reader_free(&r);

    /* over again, then freed while over: the pause is lifted */
    for (uint32_t i = 0; i < 5; i++)
        push1(&s, i);
    assert_true(s.over);
    assert_int_equal(f->flow.blocked, 1);
    hy_sink_free(&s);
    assert_int_equal(f->flow.blocked, 0);
    assert_null(f->set.dirty);
    assert_true(ev_is_active(&wc));

    hy_flow_remove(&f->flow, &own);
    hy_flow_remove(&f->flow, &client);
    for (int i = 0; i < 2; i++) {
        close(po[i]);
        close(pc[i]);
        close(p[i]);
    }
}

/* A batch that passes the limit under block: queued whole, over. */
static void test_block_batch(void **state)
{
    fx *f = *state;
    int p[2];
    mkpipe(p);
    hy_sink s;
    hy_sink_init(&s, &f->set, &f->flow, HY_SINK_WORKER, 4 * FLEN, HY_OVERFLOW_BLOCK, &f->drops);
    hy_sink_set_fd(&s, p[1], false);
    push_batch(&s, 0, 10);
    assert_true(s.over);
    assert_int_equal(f->flow.blocked, 1);
    assert_int_equal(hy_sink_bytes(&s), 10 * FLEN);
    assert_int_equal(hy_drops_total(&f->drops), 0);
    hy_sinks_flush(&f->set); /* the reader has room: all written, under the limit */
    assert_false(s.over);
    assert_int_equal(f->flow.blocked, 0);
    tf_reader r;
    tf_reader_init(&r, p[0]);
    tf_read(&r);
    assert_got_range(&r, 0, 10);
    tf_reader_free(&r);
    hy_sink_free(&s);
    close(p[0]);
    close(p[1]);
}

/* ---- the flush ------------------------------------------------------------------------ */

static void test_flush_every_dirty_sink_once(void **state)
{
    fx *f = *state;
    enum { N = 3 };
    int p[N][2];
    hy_sink s[N];
    for (int i = 0; i < N; i++) {
        mkpipe(p[i]);
        hy_sink_init(&s[i], &f->set, &f->flow, HY_SINK_WORKER, 1 << 20, HY_OVERFLOW_DROP_OLDEST, &f->drops);
        hy_sink_set_fd(&s[i], p[i][1], false);
    }
    /* pushing queues, does not write */
    uint8_t b[FLEN];
    for (uint32_t k = 0; k < 50; k++)
        for (int i = 0; i < N; i++)
            if (i != 2 || k % 2 == 0) { /* sink 2 gets the even ones */
                tf_make(b, 1001, k, PLEN);
                hy_sink_push(&s[i], NULL, b, FLEN, 1, 1001);
                memset(b, 0xEE, sizeof b); /* the sink copied it */
            }
    tf_reader r[N];
    for (int i = 0; i < N; i++) {
        tf_reader_init(&r[i], p[i][0]);
        assert_int_equal(tf_read(&r[i]), 0);
        assert_true(s[i].dirty);
    }
    /* each sink is on the dirty list once, and is written with one write */
    assert_int_equal(dirty_count(&f->set), N);
    memset(nwrites, 0, sizeof nwrites);
    hy_sinks_flush(&f->set);
    for (int i = 0; i < N; i++)
        assert_int_equal(nwrites[p[i][1]], 1);
    assert_null(f->set.dirty);
    for (int i = 0; i < N; i++) {
        assert_false(s[i].dirty);
        assert_null(s[i].next_dirty);
        assert_int_equal(hy_sink_bytes(&s[i]), 0);
        tf_read(&r[i]);
    }
    assert_got_range(&r[0], 0, 50);
    assert_got_range(&r[1], 0, 50);
    uint32_t even[25];
    for (uint32_t k = 0; k < 25; k++)
        even[k] = 2 * k;
    assert_got(&r[2], even, 25);
    /* nothing dirty: a second flush writes nothing */
    memset(nwrites, 0, sizeof nwrites);
    hy_sinks_flush(&f->set);
    for (int i = 0; i < N; i++) {
        assert_int_equal(nwrites[p[i][1]], 0);
        assert_int_equal(tf_read(&r[i]), 0);
    }
    /* only what was pushed to is dirty again */
    push1(&s[1], 50);
    assert_int_equal(dirty_count(&f->set), 1);
    assert_ptr_equal(f->set.dirty, &s[1]);
    /* freeing a dirty sink takes it off the list */
    hy_sink_free(&s[1]);
    assert_null(f->set.dirty);
    hy_sinks_flush(&f->set);
    for (int i = 0; i < N; i++) {
        if (i != 1)
            hy_sink_free(&s[i]);
        tf_reader_free(&r[i]);
        close(p[i][0]);
        close(p[i][1]);
    }
}

/* Frames of different sizes and a large one that needs several writes:
 * whole and in order at the reader. */
static void test_flush_large_in_order(void **state)
{
    fx *f = *state;
    int p[2];
    mkpipe(p);
    hy_sink s;
    hy_sink_init(&s, &f->set, &f->flow, HY_SINK_WORKER, 8u << 20, HY_OVERFLOW_BLOCK, &f->drops);
    hy_sink_set_fd(&s, p[1], false);
    uint8_t *b = malloc(HY_TLV_HEADER + 200000);
    assert_non_null(b);
    size_t total = 0;
    for (uint32_t i = 0; i < 40; i++) {
        uint32_t len = i % 10 == 9 ? 200000 : 4 + i * 37;
        size_t n = tf_make(b, (uint16_t)(1000 + i % 3), i, len);
        hy_sink_push(&s, NULL, b, n, 1, (uint16_t)(1000 + i % 3));
        total += n;
    }
    assert_int_equal(hy_sink_bytes(&s), total);
    tf_reader r;
    tf_reader_init(&r, p[0]);
    hy_sinks_flush(&f->set);
    assert_true(pump(f->loop, &r, 40));
    assert_int_equal(r.len, total);
    assert_int_equal(r.bad, 0);
    assert_int_equal(r.nframes, 40);
    for (uint32_t i = 0; i < 40; i++) {
        assert_int_equal(r.seq[i], i);
        assert_int_equal(r.type[i], 1000 + i % 3);
        assert_int_equal(r.plen[i], i % 10 == 9 ? 200000 : 4 + i * 37);
    }
    assert_int_equal(hy_sink_bytes(&s), 0);
    free(b);
    tf_reader_free(&r);
    hy_sink_free(&s);
    close(p[0]);
    close(p[1]);
}

/* ---- a closed reader -------------------------------------------------------------------- */

static void test_closed_pipe_drops_as_exited(void **state)
{
    fx *f = *state;
    int p[2];
    mkpipe(p);
    close(p[0]); /* the worker closed its stdin */
    hy_sink s;
    hy_sink_init(&s, &f->set, &f->flow, HY_SINK_WORKER, 2 * FLEN, HY_OVERFLOW_BLOCK, &f->drops);
    hy_sink_set_fd(&s, p[1], false);
    push_batch(&s, 0, 4); /* over its limit: sources paused */
    assert_true(s.over);
    assert_int_equal(f->flow.blocked, 1);
    hy_sinks_flush(&f->set); /* EPIPE, not SIGPIPE */
    assert_int_equal(f->drops.n[HY_DROP_EXITED], 4);
    assert_int_equal(hy_drops_total(&f->drops), 4);
    assert_int_equal(hy_sink_bytes(&s), 0);
    assert_false(s.over);
    assert_int_equal(f->flow.blocked, 0);
    assert_false(ev_is_active(&s.ww));
    assert_int_equal(log_count_lines(&f->log, "frame dropped", "reason=worker-exited"), 1);
    assert_int_equal(log_count_lines(&f->log, "frame dropped", "total=4"), 1);
    hy_sink_free(&s);
    close(p[1]);
}

static void test_clear_counts(void **state)
{
    fx *f = *state;
    int p[2];
    mkpipe(p);
    hy_sink s;
    hy_sink_init(&s, &f->set, &f->flow, HY_SINK_WORKER, 1 << 20, HY_OVERFLOW_DROP_OLDEST, &f->drops);
    hy_sink_set_fd(&s, p[1], false);
    push_batch(&s, 0, 7);
    hy_sink_clear(&s, HY_DROP_EXITED);
    assert_int_equal(f->drops.n[HY_DROP_EXITED], 7);
    assert_int_equal(hy_sink_bytes(&s), 0);
    hy_sink_clear(&s, HY_DROP_EXITED); /* empty: nothing counted */
    assert_int_equal(f->drops.n[HY_DROP_EXITED], 7);
    hy_sink_free(&s);
    close(p[0]);
    close(p[1]);
}

/* A control frame goes to a worker past any limit. */
static void test_control_past_limit(void **state)
{
    fx *f = *state;
    int p[2];
    mkpipe(p);
    hy_sink s;
    hy_sink_init(&s, &f->set, &f->flow, HY_SINK_WORKER, 2 * FLEN, HY_OVERFLOW_DROP_NEWEST, &f->drops);
    hy_sink_set_fd(&s, p[1], false);
    push1(&s, 0);
    push1(&s, 1);
    uint8_t c[FLEN];
    tf_make(c, 0, 2, PLEN);
    hy_sink_push_control(&s, c, FLEN);
    assert_int_equal(hy_sink_bytes(&s), 3 * FLEN);
    assert_int_equal(hy_drops_total(&f->drops), 0);
    assert_true(s.dirty);
    hy_sinks_flush(&f->set);
    tf_reader r;
    tf_reader_init(&r, p[0]);
    tf_read(&r);
    assert_int_equal(r.nframes, 3);
    assert_int_equal(r.type[2], 0);
    assert_int_equal(r.seq[2], 2);
    tf_reader_free(&r);
    hy_sink_free(&s);
    close(p[0]);
    close(p[1]);
}

/* ---- client ----------------------------------------------------------------------------- */

typedef struct errs {
    int n, err;
    const char *why;
    bool had_why;
} errs;

static void on_error(hy_sink *s, int err, const char *why)
{
    errs *e = s->owner;
    e->n++;
    e->err = err;
    e->why = why;
    e->had_why = why != NULL;
}

static void test_client_over_limit_fails(void **state)
{
    fx *f = *state;
    int sv[2];
    mksocks(sv);
    hy_drops cd;
    hy_drops_init(&cd, "listen", "from", "c#1", NULL, NULL);
    hy_sink s;
    hy_sink_init(&s, &f->set, &f->flow, HY_SINK_CLIENT, 3 * FLEN, HY_OVERFLOW_BLOCK, &cd);
    hy_sink_set_fd(&s, sv[0], true);
    errs e = {0};
    s.on_error = on_error;
    s.owner = &e;
    /* over the limit in one go, but its socket takes it all: not too slow */
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(push1(&s, i), HY_PUSH_QUEUED);
    assert_int_equal(push_batch(&s, 3, 4), HY_PUSH_OVER);
    assert_int_equal(e.n, 0);
    assert_int_equal(hy_fanq_bytes(&s.q), 0);
    /* a client that does not read: once its socket is full, over the limit fails it */
    tf_fill(sv[0]);
    for (uint32_t i = 7; i < 10; i++)
        assert_int_equal(push1(&s, i), HY_PUSH_QUEUED);
    assert_int_equal(e.n, 0);
    assert_int_equal(push1(&s, 10), HY_PUSH_OVER); /* cannot keep up */
    assert_int_equal(e.n, 1);
    assert_int_equal(e.err, 0);
    assert_true(e.had_why);
    assert_non_null(strstr(e.why, "too slow"));
    assert_int_equal(f->flow.blocked, 0); /* a slow client pauses nobody */
    hy_sink_free(&s);
    close(sv[0]);
    close(sv[1]);
}

static void test_client_write_error(void **state)
{
    fx *f = *state;
    int sv[2];
    mksocks(sv);
    close(sv[1]); /* gone */
    hy_drops cd;
    hy_drops_init(&cd, "listen", "from", "c#1", NULL, NULL);
    hy_sink s;
    hy_sink_init(&s, &f->set, &f->flow, HY_SINK_CLIENT, 1 << 20, HY_OVERFLOW_BLOCK, &cd);
    hy_sink_set_fd(&s, sv[0], true);
    errs e = {0};
    s.on_error = on_error;
    s.owner = &e;
    push1(&s, 0);
    hy_sinks_flush(&f->set);
    assert_int_equal(e.n, 1);
    assert_int_equal(e.err, EPIPE);
    assert_false(e.had_why);
    hy_sink_free(&s);
    close(sv[0]);
}

/* ---- upstream ----------------------------------------------------------------------------- */

typedef struct overs {
    int n;
    bool last;
} overs;

static void on_over(hy_sink *s, bool over)
{
    overs *o = s->owner;
    o->n++;
    o->last = over;
}

static void test_upstream_holds_without_fd(void **state)
{
    fx *f = *state;
    hy_drops ud;
    hy_drops_init(&ud, "relay", "upstream", "unix:/x", NULL, NULL);
    hy_sink s;
    hy_sink_init(&s, &f->set, &f->flow, HY_SINK_UPSTREAM, 4 * FLEN, HY_OVERFLOW_BLOCK, &ud);
    overs o = {0};
    s.on_over = on_over;
    s.owner = &o;
    for (uint32_t i = 0; i < 4; i++)
        assert_int_equal(push1(&s, i), HY_PUSH_QUEUED);
    assert_int_equal(o.n, 0);
    hy_sinks_flush(&f->set); /* no fd: held */
    assert_int_equal(hy_sink_bytes(&s), 4 * FLEN);
    push_batch(&s, 4, 3);    /* past upstream.buffer: never dropped, over */
    assert_int_equal(hy_sink_bytes(&s), 7 * FLEN);
    assert_true(s.over);
    assert_int_equal(o.n, 1);
    assert_true(o.last);
    assert_int_equal(f->flow.blocked, 0); /* on_over decides, not the worker rule */
    assert_int_equal(hy_drops_total(&ud), 0);
    assert_int_equal(s.frames, 7);
    hy_sinks_flush(&f->set);
    assert_int_equal(hy_sink_bytes(&s), 7 * FLEN);
    assert_false(ev_is_active(&s.ww));
    /* the bus is back: all of it goes out, in order, and it is under again */
    int sv[2];
    mksocks(sv);
    hy_sink_set_fd(&s, sv[0], true);
    hy_sink_flush(&s);
    assert_int_equal(hy_sink_bytes(&s), 0);
    assert_false(s.over);
    assert_int_equal(o.n, 2);
    assert_false(o.last);
    tf_reader r;
    tf_reader_init(&r, sv[1]);
    tf_read(&r);
    assert_got_range(&r, 0, 7);
    tf_reader_free(&r);
    /* it goes again: held again, what was queued stays */
    hy_sink_set_fd(&s, -1, true);
    push1(&s, 7);
    hy_sinks_flush(&f->set);
    assert_int_equal(hy_sink_bytes(&s), FLEN);
    hy_sink_free(&s);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_worker_without_fd_counts_not_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop_oldest_over_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop_newest_over_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_over_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_push_drops_several, setup, teardown),
        cmocka_unit_test_setup_teardown(test_block_pauses_then_resumes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_block_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_every_dirty_sink_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_large_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_closed_pipe_drops_as_exited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clear_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_control_past_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_over_limit_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_write_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_holds_without_fd, setup, teardown),
    };
    return cmocka_run_group_tests_name("sink", tests, NULL, NULL);
}
