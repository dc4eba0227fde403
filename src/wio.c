/* wio.c - a worker's three pipes and its spawn-status pipe: frames from
 * its stdout (checked, then handed to the bus), lines from its stderr (the
 * log, the tail ring, `hyphactl tail -f`), frames to its stdin (its sink).
 * Pipes are only read and drained here; they never decide whether a worker
 * is alive (SIGCHLD does, in worker.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "hypha/log.h"
#include "hypha/spawn.h"
#include "instance.h"

#define COMP "supervisor"
#define DIRECT_READ_MIN (16u * 1024) /* a frame's remainder read into its assembly buffer */
/* Reads of a worker's stdout per wakeup: with 256 KiB pipes one read can
 * fill the whole buffer, and the loop must come back to the control socket
 * and the other workers (fairness; docs/performance.md). When draining an
 * exited worker, more: what it wrote is lost with the pipe otherwise. */
#define PIPE_DEFAULT (64u * 1024) /* a pipe's capacity when F_GETPIPE_SZ cannot say */
#define STDOUT_READ_ROUNDS 1
#define DRAIN_READ_ROUNDS 16

static void stdin_error(hy_sink *s, int err, const char *why);

static hy_bus *bus_of(const hy_instance *in) { return &in->sup->relay.bus; }
static hy_flow *flow_of(const hy_instance *in) { return &in->sup->relay.flow; }

static void close_io(hy_instance *in, ev_io *w, int *fd)
{
    ev_io_stop(in->sup->loop, w);
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* A line for the tail ring and `hyphactl tail -f`: a worker's stderr line,
 * or hyphad's note about the worker (marked "[hyphad] "). */
static void tail_line(hy_instance *in, const char *line, size_t len)
{
    hy_sup *s = in->sup;
    hy_tail_push(&in->tail, line, len, ++s->line_seq);
    if (s->obs.on_line)
        s->obs.on_line(s->obs.line_ud, in->name, in->index, line, len);
}

/* ---- stdout: frames -------------------------------------------------------- */

/* What a bad stream began with (from the rejected frame's header on), for
 * people: `began` escaped, and when it looks like text, the likely cause:
 * something printing to stdout, where only frames may go. */
typedef struct began {
    char text[4 * HY_TLV_BAD_KEEP + 4];
    char hint[4 * HY_TLV_BAD_KEEP + 160];
    bool texty;
} began;

static void describe_began(began *b, const uint8_t *p, size_t n, bool more)
{
    hy_log_escape_bytes(b->text, p, n, more);
    b->texty = hy_bytes_look_like_text(p, n);
    snprintf(b->hint, sizeof b->hint,
             "stdout began with \"%s\": is something printing to stdout without the hypha runtime? (frames go to "
             "stdout; print() and logs to stderr)",
             b->text);
}

/* hyphad's note in the worker's tail, so that `hyphactl tail` shows why
 * it was cut off beside what it wrote to stderr. */
static void note_began(hy_instance *in, const began *b, const char *why)
{
    char note[sizeof b->hint + 128];
    int n = b->texty ? snprintf(note, sizeof note, "[hyphad] %s", b->hint)
                     : snprintf(note, sizeof note, "[hyphad] stdout began with \"%s\": not a frame stream (%s)",
                                b->text, why);
    if (n > 0)
        tail_line(in, note, (size_t)n < sizeof note ? (size_t)n : sizeof note - 1);
}

/* The stream is unusable: count it, kill the worker, restart as `protocol`.
 * `bytes` (n of them, `more` after): what the bad part began with; n 0 when
 * there is nothing to show. */
static void protocol_kill(hy_instance *in, const char *why, const uint8_t *bytes, size_t n, bool more)
{
    in->protocol_errors++;
    if (in->kill_reason != HY_EXIT_NONE)
        return;
    if (n == 0) {
        hy_log(HY_ERROR, COMP, "corrupt stream from worker: killing it", "worker", in->name, "instance", in->idx,
               "pid", HY_I64(in->pid), "why", why, NULL);
    } else {
        began b;
        describe_began(&b, bytes, n, more);
        hy_log(HY_ERROR, COMP, "corrupt stream from worker: killing it", "worker", in->name, "instance", in->idx,
               "pid", HY_I64(in->pid), "why", why, "began", b.text, b.texty ? "hint" : NULL, b.hint, NULL);
        note_began(in, &b, why);
    }
    hy_inst_kill_for(in, HY_EXIT_PROTOCOL);
}

/* The decoder holds the start of a frame the stream ended in. */
static size_t pending_shown(const hy_tlv_decoder *d, bool *more)
{
    size_t n = hy_tlv_pending(d);
    *more = n > HY_TLV_BAD_KEEP;
    return n < HY_TLV_BAD_KEEP ? n : HY_TLV_BAD_KEEP;
}

static int on_frame(void *ud, const hy_frame *f)
{
    hy_instance *in = ud;
    if (f->type == HY_TLV_CONTROL_TYPE) {
        hy_wproto_on_frame(in, f);
        return 0;
    }
    if (!hy_route_check_out(&in->check, in->sup->topo->schema, in->spec, f, &in->drops))
        return 0;
    in->frames_out++;
    in->bytes_out += f->len;
    /* the decoder keeps header and payload contiguous */
    hy_bus_publish(bus_of(in), &in->origin, f->payload - HY_TLV_HEADER, HY_TLV_HEADER + f->len, f->type, true);
    return 0;
}

/* After a feed: 1 if the stream turned out unusable. */
static int feed_failed(hy_instance *in, hy_tlv_status st)
{
    if (st == HY_TLV_CORRUPT) {
        char why[96];
        snprintf(why, sizeof why, "frame length %u over the limit", (unsigned)in->dec.bad_len);
        protocol_kill(in, why, in->dec.bad, in->dec.nbad, in->dec.bad_more);
        return 1;
    }
    if (st == HY_TLV_NOMEM) {
        protocol_kill(in, "out of memory assembling a frame", NULL, 0, false);
        return 1;
    }
    return 0;
}

enum { RD_AGAIN = 0, RD_DONE = 1, RD_MORE = 2, RD_SHORT = 3 };

/* One read. RD_DONE: EOF or a dead stream; RD_AGAIN: would block; RD_SHORT:
 * the buffer was not filled; RD_MORE: read more. */
static int read_stdout(hy_instance *in)
{
    /* The rest of a large frame goes straight where it is assembled: one
     * copy fewer than through the read buffer. */
    uint8_t *dst, *buf;
    size_t missing = hy_tlv_direct(&in->dec, &dst), cap = 0;
    bool direct = missing >= DIRECT_READ_MIN;
    ssize_t n = direct ? read(in->out_fd, buf = dst, missing) : hy_bus_read(bus_of(in), in->out_fd, NULL, &buf, &cap);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == ENOMEM)
            return errno == EINTR ? RD_MORE : RD_AGAIN;
        hy_log(HY_WARN, COMP, "read from worker stdout failed", "worker", in->name, "instance", in->idx, "error",
               strerror(errno), NULL);
        return RD_DONE;
    }
    if (n == 0) {
        if (hy_tlv_finish(&in->dec) != HY_TLV_PARTIAL)
            return RD_DONE;
        bool more;
        size_t shown = pending_shown(&in->dec, &more);
        const uint8_t *p = hy_tlv_pending_bytes(&in->dec);
        if (in->out_held) { /* killed while writing it: the part it wrote goes, counted */
            began b;
            describe_began(&b, p, shown, more);
            in->protocol_errors++;
            in->cut_at_exit = in->exit_drain; /* seen before its exit is decided: that exit's reason */
            hy_log(HY_WARN, COMP, "exited worker's stdout ended in the middle of a frame: dropped", "worker",
                   in->name, "instance", in->idx, "began", b.text, b.texty ? "hint" : NULL, b.hint, NULL);
            if (b.texty) /* a short print() and an exit, most likely */
                note_began(in, &b, "it ended in the middle of a frame");
        } else if (in->pid > 0) {
            protocol_kill(in, "stdout closed in the middle of a frame", p, shown, more);
        }
        return RD_DONE;
    }
    if (direct)
        return feed_failed(in, hy_tlv_direct_done(&in->dec, (size_t)n, on_frame, in)) ? RD_DONE : RD_MORE;
    if (feed_failed(in, hy_tlv_feed(&in->dec, buf, (size_t)n, on_frame, in)))
        return RD_DONE;
    return (size_t)n == cap ? RD_MORE : RD_SHORT;
}

/* Reads while the back-pressure allows. true: the pipe is done with (EOF,
 * or, for an exited worker's, nothing more in it). `rounds`: reads at most. */
static bool pump_stdout(hy_instance *in, int rounds)
{
    while (rounds-- > 0 && in->out_fd >= 0 && hy_flow_may_read(flow_of(in), &in->src)) {
        int r = read_stdout(in);
        if (r == RD_DONE || (r == RD_AGAIN && in->out_held))
            return true; /* a held pipe that would block: what is left holds its write end */
        if (r == RD_AGAIN || (r == RD_SHORT && !in->out_held))
            return false; /* it blocks in write until we resume, or wrote no more yet */
    }
    return false;
}

/* A pipe is done with. If it was an exited process's, the next one's (read
 * after it, so its frames follow all of its predecessor's) is read now, held
 * in turn if that process exited too; a restart that waited for the slot
 * goes ahead (through the instance's timer: worker.c decides). */
static void close_stdout(hy_instance *in)
{
    hy_flow_open(flow_of(in), &in->src, false);
    close_io(in, &in->out_w, &in->out_fd);
    if (!in->out_held)
        return;
    hy_inst_log_counters(in); /* its exit's counters line, now that what it wrote is all counted */
    hy_tlv_decoder_reset(&in->dec);
    in->out_held = in->next_dead;
    in->next_dead = false;
    if (in->out_next >= 0) {
        in->out_fd = in->out_next;
        in->out_next = -1;
        ev_io_set(&in->out_w, in->out_fd, EV_READ);
        hy_flow_open(flow_of(in), &in->src, true);
    }
    if (in->retiring) {
        if (!in->out_held)
            ev_feed_event(in->sup->loop, &in->sup->gc_w, EV_TIMER); /* it waited for this to be freed */
    } else if (in->spawn_deferred) {
        in->spawn_deferred = false;
        ev_feed_event(in->sup->loop, &in->timer, EV_TIMER);
    }
}

bool hy_wio_slot_busy(const hy_instance *in) { return in->out_next >= 0; }

static void out_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_instance *in = w->data;
    if (pump_stdout(in, in->out_held ? DRAIN_READ_ROUNDS : STDOUT_READ_ROUNDS))
        close_stdout(in);
}

/* The worker exited: what it wrote is read as the back-pressure allows.
 * What the pressure holds back stays in its pipe, held, read like a live
 * worker's; a restart meanwhile waits to be read after it (never a queue
 * past its limit, never a frame lost with the pipe). */
static void drain_exited(hy_instance *in)
{
    in->out_held = true;
    in->exit_drain = true;
    bool done = pump_stdout(in, DRAIN_READ_ROUNDS);
    in->exit_drain = false;
    if (done) {
        in->out_held = false; /* read whole at once: a plain close, the exit logs its counters */
        close_stdout(in);
        return;
    }
    hy_log(HY_INFO, COMP, "exited worker's output waits in its pipe: back-pressure", "worker", in->name, "instance",
           in->idx, NULL);
}

/* ---- stderr: log lines ------------------------------------------------------ */

static void flush_errline(hy_instance *in)
{
    if (in->errlen || in->errcut) {
        hy_log_worker_line(in->name, in->index, in->errline, in->errlen, in->errcut);
        tail_line(in, in->errline, in->errlen);
    }
    in->errlen = 0;
    in->errcut = 0;
}

static void take_err_bytes(hy_instance *in, const char *p, size_t n)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t seg = nl ? (size_t)(nl - p) : n;
        size_t room = sizeof in->errline - in->errlen;
        size_t take = seg < room ? seg : room;
        memcpy(in->errline + in->errlen, p, take);
        in->errlen += take;
        in->errcut += seg - take; /* cut, counted, never split into a new line */
        if (!nl)
            return;
        if (in->errlen && in->errline[in->errlen - 1] == '\r')
            in->errlen--;
        flush_errline(in);
        p = nl + 1;
        n -= seg + 1;
    }
}

static int pump_stderr(hy_instance *in)
{
    char buf[8192];
    for (int rounds = 0; rounds < 16; rounds++) {
        ssize_t n = read(in->err_fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : 1;
        }
        if (n == 0) {
            flush_errline(in);
            return 1;
        }
        take_err_bytes(in, buf, (size_t)n);
    }
    return 0;
}

static void err_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_instance *in = w->data;
    if (pump_stderr(in))
        close_io(in, &in->err_w, &in->err_fd);
}

/* ---- spawn status ---------------------------------------------------------- */

static void read_spawn_status(hy_instance *in)
{
    const char *stage;
    int e;
    hy_spawn_state st = hy_spawn_status(in->status_fd, &stage, &e);
    if (st == HY_SPAWN_PENDING)
        return;
    if (st == HY_SPAWN_FAILED) {
        if (strcmp(stage, "exec") == 0)
            snprintf(in->spawn_error, sizeof in->spawn_error, "%s", strerror(e));
        else if (strcmp(stage, "chdir") == 0)
            snprintf(in->spawn_error, sizeof in->spawn_error, "chdir %s: %s", in->spec->cwd, strerror(e));
        else if (strcmp(stage, "cgroup") == 0)
            snprintf(in->spawn_error, sizeof in->spawn_error, "cgroup %s/cgroup.procs: %s",
                     in->cgroup ? in->cgroup : "?", strerror(e));
        else
            snprintf(in->spawn_error, sizeof in->spawn_error, "%s: %s", stage, strerror(e));
        char msg[320];
        snprintf(msg, sizeof msg, "unable to spawn %s: %s", in->label, in->spawn_error);
        hy_log(HY_ERROR, COMP, msg, "worker", in->name, "instance", in->idx, "path", in->spec->exec_path, NULL);
    }
    close_io(in, &in->status_w, &in->status_fd);
}

static void status_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    read_spawn_status(w->data);
}

/* ---- setup ------------------------------------------------------------------ */

void hy_wio_init(hy_instance *in)
{
    hy_relay *r = &in->sup->relay;
    const hy_policy *p = &in->spec->policy;
    in->out_fd = in->out_next = in->err_fd = in->status_fd = in->stdin_watch = -1;
    hy_tlv_decoder_init(&in->dec, 0);
    ev_io_init(&in->out_w, out_cb, -1, EV_READ);
    ev_io_init(&in->err_w, err_cb, -1, EV_READ);
    ev_io_init(&in->status_w, status_cb, -1, EV_READ);
    in->out_w.data = in->err_w.data = in->status_w.data = in;
    hy_drops_init(&in->drops, "router", "worker", in->name, "instance", in->idx);
    in->origin = (hy_origin){in->label, &in->drops};
    hy_flow_add(&r->flow, &in->src, &in->out_w, HY_SRC_WORKER);
    hy_sink_init(&in->in, &r->bus.sinks, &r->flow, HY_SINK_WORKER, p->queue_limit, p->queue_overflow, &in->drops);
    in->in.own = &in->src;
    in->in.owner = in;
    in->in.on_error = stdin_error;
    in->sub.sink = &in->in;
    in->sub.fixed = in->spec->subscribe;
    in->sub.nfixed = in->spec->nsubscribe;
    hy_bus_add_sub(&r->bus, &in->sub);
}

void hy_wio_attach(hy_instance *in, int in_fd, int out_fd, int err_fd, int status_fd)
{
    if (!in->out_held)
        hy_tlv_decoder_reset(&in->dec);
    in->errlen = in->errcut = 0;
    in->check.msg = NULL;
    hy_sink_set_fd(&in->in, in_fd, false);
    int cap = fcntl(in_fd, F_GETPIPE_SZ);
    hy_fanq_forget_written(&in->in.q);
    in->in.q.hist.keep = cap > 0 ? (size_t)cap : PIPE_DEFAULT; /* what may sit in it unread */
    in->err_fd = err_fd;
    in->status_fd = status_fd;
    ev_io_set(&in->err_w, err_fd, EV_READ);
    if (status_fd >= 0) /* -1: forked from a fork server, nothing exec'd */
        ev_io_set(&in->status_w, status_fd, EV_READ);
    if (in->out_held) {
        in->out_next = out_fd; /* read once its predecessor's pipe is done with */
    } else {
        in->out_fd = out_fd;
        ev_io_set(&in->out_w, out_fd, EV_READ);
        hy_flow_open(flow_of(in), &in->src, true);
    }
    ev_io_start(in->sup->loop, &in->err_w);
    if (status_fd >= 0)
        ev_io_start(in->sup->loop, &in->status_w);
}

/* ---- an upgrade: the same pipes, adopted ---------------------------------- */

/* No frame can complete from the saved bytes (they are less than one):
 * nothing is published before the new hyphad serves. */
static int no_frame(void *ud, const hy_frame *f)
{
    (void)ud;
    (void)f;
    return 1;
}

int hy_wio_adopt(hy_instance *in, const hy_wio_carried *c)
{
    in->check.msg = NULL;
    if (hy_fanq_restore(&in->in.q, c->queue, c->nqueue, c->sent, 0) < 0 ||
        hy_fanq_restore_history(&in->in.q, c->hist, c->nhist) < 0)
        return -1;
    if (c->in_fd >= 0) {
        int cap = fcntl(c->in_fd, F_GETPIPE_SZ);
        in->in.q.hist.keep = cap > 0 ? (size_t)cap : PIPE_DEFAULT;
        hy_sink_set_fd(&in->in, c->in_fd, false);
    }
    if (c->ndec && hy_tlv_feed(&in->dec, c->dec, c->ndec, no_frame, in) != HY_TLV_OK)
        return -1;
    if (c->out_fd >= 0) {
        in->out_fd = c->out_fd;
        ev_io_set(&in->out_w, c->out_fd, EV_READ);
        hy_flow_open(flow_of(in), &in->src, true);
    }
    if (c->err_fd >= 0) {
        in->err_fd = c->err_fd;
        ev_io_set(&in->err_w, c->err_fd, EV_READ);
        ev_io_start(in->sup->loop, &in->err_w);
    }
    if (c->status_fd >= 0) {
        in->status_fd = c->status_fd;
        ev_io_set(&in->status_w, c->status_fd, EV_READ);
        ev_io_start(in->sup->loop, &in->status_w);
    }
    hy_sink_recheck(&in->in); /* past its limit under block: its sources wait, as before */
    size_t n = c->nerr < sizeof in->errline ? c->nerr : sizeof in->errline;
    memcpy(in->errline, c->errline, n);
    in->errlen = n;
    in->errcut = c->errcut;
    return 0;
}

/* ---- stdin: what it never read ------------------------------------------- */

/* Its pipe has no reader (EPIPE): it died, or closed its stdin. With
 * queue.hold the queue is kept for the next process (hold.c); without,
 * neither what is queued nor what its pipe held is delivered. */
static void stdin_error(hy_sink *s, int err, const char *why)
{
    (void)err;
    (void)why;
    hy_instance *in = s->owner;
    if (in->spec->policy.restart != HY_RESTART_NEVER && in->state != HY_ST_STOPPING && hy_hold_may(in)) {
        s->broken = true;
        hy_hold_broken(in);
        return;
    }
    hy_sink_count_unread(s);
    hy_sink_clear(s, HY_DROP_EXITED);
}

/* Its stdin gets EOF while frames are still in the pipe: a read end of
 * the same pipe (through /proc) says at its exit how many it never read.
 * `extra`: bytes at the pipe's end that are not the history's. */
static void watch_unread(hy_instance *in, int fd, size_t extra)
{
    int unread = 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    if (ioctl(fd, FIONREAD, &unread) < 0 || unread <= 0 ||
        (in->stdin_watch = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0) {
        hy_fanq_forget_written(&in->in.q); /* nothing to learn (or no way to): counted as read */
        in->stdin_watch = -1;
        return;
    }
    in->stdin_partial = extra;
}

/* At its exit, after a stop: the bytes of the history it never read (-1:
 * nothing watched). The watch is closed. */
static long watched_unread(hy_instance *in)
{
    int unread = 0;
    long n = -1;
    if (in->stdin_watch < 0)
        return -1;
    if (ioctl(in->stdin_watch, FIONREAD, &unread) == 0)
        n = (size_t)unread > in->stdin_partial ? (long)((size_t)unread - in->stdin_partial) : 0;
    close(in->stdin_watch);
    in->stdin_watch = -1;
    return n;
}

/* At its exit, after a stop: what it never read of the pipe is dropped. */
static void count_watched(hy_instance *in)
{
    long unread = watched_unread(in);
    if (unread > 0) {
        size_t n = hy_fanq_unread_frames(&in->in.q, (size_t)unread);
        if (n)
            hy_drops_add(&in->drops, HY_DROP_EXITED, 0, n);
    }
    hy_fanq_forget_written(&in->in.q);
}

void hy_wio_close_stdin(hy_instance *in, bool stopping, size_t extra)
{
    int fd = in->in.fd;
    size_t partial = in->in.q.sent; /* a frame cut short: the clear counts it, or it goes again whole */
    if (in->in.hold)
        hy_fanq_rewind(&in->in.q); /* what waits is the next process's */
    else
        hy_sink_clear(&in->in, HY_DROP_EXITED);
    if (fd >= 0 && stopping)
        watch_unread(in, fd, partial + extra);
    else
        hy_fanq_forget_written(&in->in.q);
    hy_sink_set_fd(&in->in, -1, false);
    if (fd >= 0)
        close(fd);
}

/* Held: what it never read goes back in front of what waits for the next
 * process, from the write end's FIONREAD (it died) or the watch's (it was
 * being restarted). */
static void reclaim(hy_instance *in)
{
    int unread = 0;
    long watched = watched_unread(in);
    size_t n = 0;
    if (watched >= 0)
        n = hy_sink_reclaim(&in->in, (size_t)watched);
    else if (in->in.fd >= 0 && ioctl(in->in.fd, FIONREAD, &unread) == 0)
        n = hy_sink_reclaim(&in->in, unread > 0 ? (size_t)unread : 0);
    else
        hy_fanq_rewind(&in->in.q);
    hy_fanq_forget_written(&in->in.q);
    in->reclaimed += n;
    int fd = in->in.fd;
    hy_sink_set_fd(&in->in, -1, false);
    if (fd >= 0)
        close(fd);
    hy_log(HY_INFO, COMP, "holding its frames for the restart", "worker", in->name, "instance", in->idx, "frames",
           HY_U64(hy_fanq_frames(&in->in.q)), "reclaimed", HY_U64(n), NULL);
}

void hy_wio_release_stdin(hy_instance *in, bool hold)
{
    if (hold) {
        reclaim(in);
        in->stdin_partial = 0;
        return;
    }
    /* held for a restart that is not coming; held only because its pipe broke: it exited */
    hy_drop why = in->in.hold && !in->in.broken ? HY_DROP_HOLD_CANCELLED : HY_DROP_EXITED;
    in->in.hold = false;
    hy_sink_count_unread(&in->in); /* it died: what it never read of its pipe is dropped */
    count_watched(in);             /* or, stopped before, what it left of it */
    in->stdin_partial = 0;
    hy_sink_clear(&in->in, why);
    hy_wio_close_stdin(in, false, 0);
}

void hy_wio_detach(hy_instance *in)
{
    /* Learn a failed exec before the pipes go, then drain what is left. */
    if (in->status_fd >= 0)
        read_spawn_status(in);
    if (in->status_fd >= 0)
        close_io(in, &in->status_w, &in->status_fd);
    if (in->out_held)
        in->next_dead = in->out_next >= 0; /* its pipe waits behind the held one */
    else if (in->out_fd >= 0)
        drain_exited(in);
    if (in->err_fd >= 0) {
        pump_stderr(in);
        flush_errline(in);
        close_io(in, &in->err_w, &in->err_fd);
    }
}

void hy_wio_free(hy_instance *in)
{
    hy_relay *r = &in->sup->relay;
    if (in->out_held)
        hy_log(HY_WARN, COMP, "exiting with an exited worker's output still in its pipe", "worker", in->name,
               "instance", in->idx, NULL);
    close_io(in, &in->out_w, &in->out_fd);
    if (in->out_next >= 0)
        close(in->out_next);
    in->out_next = -1;
    if (in->stdin_watch >= 0)
        close(in->stdin_watch);
    in->stdin_watch = -1;
    close_io(in, &in->err_w, &in->err_fd);
    close_io(in, &in->status_w, &in->status_fd);
    /* Off the bus first: removing it queues any pending run, which may be
     * for this very sink. */
    hy_bus_forget(&r->bus, &in->origin);
    hy_bus_remove_sub(&r->bus, &in->sub);
    hy_sub_clear(&in->sub);
    hy_flow_remove(&r->flow, &in->src);
    int fd = in->in.fd;
    hy_sink_free(&in->in);
    if (fd >= 0)
        close(fd);
    hy_tlv_decoder_free(&in->dec);
}
