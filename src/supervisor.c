/* supervisor.c - spawning, watching, restarting and stopping workers
 * (see hypha/supervisor.h for the state machine).
 *
 * The one idea: every transition goes through handle_exit() or a timer, and
 * each instance owns exactly one process at a time. Pipes are only read and
 * drained; they never decide whether a worker is alive.
 */
#define _GNU_SOURCE
#include "hypha/supervisor.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hypha/log.h"
#include "hypha/reload.h"
#include "hypha/spawn.h"
#include "hypha/units.h"

extern char **environ;

#define COMP "supervisor"
#define STOP_MOMENT_MS 200u /* after EOF, before the stop signal */
#define RBUF_SIZE (256u * 1024)
#define DIRECT_READ_MIN (16u * 1024) /* a frame's remainder read into its assembly buffer */
/* Reads of a worker's stdout per wakeup: with 256 KiB pipes one read can
 * fill the whole buffer, and the loop must come back to the control socket
 * and the other workers (fairness; docs/performance.md). */
#define STDOUT_READ_ROUNDS 1

const char *hy_state_str(hy_state st)
{
    switch (st) {
    case HY_ST_STARTING: return "starting";
    case HY_ST_RUNNING: return "running";
    case HY_ST_EXITED: return "exited";
    case HY_ST_BACKOFF: return "backoff";
    case HY_ST_FAILED: return "failed";
    case HY_ST_STOPPING: return "stopping";
    case HY_ST_STOPPED: return "stopped";
    }
    return "?";
}

/* ---- small helpers ------------------------------------------------------ */

static void fmt_u(char *out, size_t len, unsigned long long v) { snprintf(out, len, "%llu", v); }

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static void stop_io(hy_instance *in, ev_io *w, int *fd)
{
    ev_io_stop(in->sup->loop, w);
    close_fd(fd);
}

/* Environment: hyphad's own, then the topology's `env`, then HYPHA_*. */
static char **build_env(const hy_worker_spec *w, unsigned index, const char *digest)
{
    size_t n = 0;
    for (char **e = environ; *e; e++)
        n++;
    char **env = calloc(n + w->nenv + 4, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        size_t klen = eq ? (size_t)(eq - *e) : strlen(*e);
        bool overridden = strncmp(*e, "HYPHA_", 6) == 0;
        for (size_t i = 0; i < w->nenv && !overridden; i++)
            if (strncmp(w->env[i], *e, klen) == 0 && w->env[i][klen] == '=')
                overridden = true;
        if (!overridden && !(env[k++] = strdup(*e)))
            goto oom;
    }
    for (size_t i = 0; i < w->nenv; i++)
        if (!(env[k++] = strdup(w->env[i])))
            goto oom;
    if (asprintf(&env[k++], "HYPHA_WORKER=%s", w->name) < 0 ||
        asprintf(&env[k++], "HYPHA_INSTANCE=%u", index) < 0 ||
        asprintf(&env[k++], "HYPHA_SCHEMA_DIGEST=%s", digest) < 0) {
        env[k - 1] = NULL;
        goto oom;
    }
    env[k] = NULL;
    return env;
oom:
    for (size_t i = 0; i < k; i++)
        free(env[i]);
    free(env);
    return NULL;
}

static double now_s(hy_sup *s) { return ev_now(s->loop); }

static void notify_change(hy_sup *s)
{
    if (s->on_change)
        s->on_change(s);
}

static void set_timer(hy_instance *in, ev_timer *t, uint64_t ms)
{
    ev_timer_stop(in->sup->loop, t);
    ev_timer_set(t, (double)ms / 1000.0, 0.0);
    ev_timer_start(in->sup->loop, t);
}

static void spawn_instance(hy_instance *in);
static void start_batch_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void handle_exit(hy_instance *in, int wstatus);
static void instance_free(hy_instance *in);
static hy_instance *instance_new(hy_sup *s, const hy_worker_spec *w, unsigned j, hy_err *err);
static void gc_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void hb_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* ---- worker stdin: frames for it ----------------------------------------- */

/* Count a drop; log at the 1st, 10th, 100th ... so a flood stays readable. */
void hy_sup_count_drop(hy_instance *in, hy_drop why, uint16_t type_id, uint64_t n)
{
    uint64_t before = in->drops[why];
    in->drops[why] += n;
    uint64_t mark = 1;
    while (mark <= before)
        mark *= 10;
    if (in->drops[why] >= mark) {
        char t[8], c[24];
        fmt_u(t, sizeof t, type_id);
        fmt_u(c, sizeof c, (unsigned long long)in->drops[why]);
        hy_log(HY_WARN, "router", "frame dropped", "worker", in->spec->name, "instance", in->idx,
               "reason", hy_drop_str(why), "type", t, "total", c, NULL);
    }
}

static bool has_type(const uint16_t *ids, size_t n, uint16_t id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ids[mid] == id)
            return true;
        if (ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

static void set_blocking(hy_instance *in, bool on)
{
    if (in->blocking == on)
        return;
    in->blocking = on;
    in->sup->blocked += on ? 1 : -1;
    hy_relay_update_reading(&in->sup->relay);
}

static void unblock(hy_instance *in) { set_blocking(in, false); }

static void drop_queue(hy_instance *in, hy_drop why)
{
    size_t n = hy_outq_clear(&in->outq);
    if (n)
        hy_sup_count_drop(in, why, 0, n);
    ev_io_stop(in->sup->loop, &in->in_w);
    unblock(in);
}

void hy_sup_flush(hy_instance *in)
{
    while (in->in_fd >= 0 && hy_outq_pending(&in->outq) > 0) {
        ssize_t n = write(in->in_fd, hy_outq_data(&in->outq), hy_outq_pending(&in->outq));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                ev_io_start(in->sup->loop, &in->in_w);
                return;
            }
            /* EPIPE: it closed stdin; what is queued cannot be delivered */
            drop_queue(in, HY_DROP_EXITED);
            return;
        }
        hy_outq_consume(&in->outq, (size_t)n);
        if (in->blocking && hy_outq_bytes(&in->outq) <= in->spec->policy.queue_limit)
            unblock(in); /* drained below the limit: sources may go on */
    }
    ev_io_stop(in->sup->loop, &in->in_w);
    unblock(in);
}

static void in_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_sup_flush(w->data);
}

/* Queue a whole frame (header included) for one worker's stdin. */
void hy_sup_deliver(hy_instance *dest, const uint8_t *frame, size_t len, uint16_t type_id)
{
    if (dest->in_fd < 0 || (dest->state != HY_ST_STARTING && dest->state != HY_ST_RUNNING)) {
        hy_sup_count_drop(dest, HY_DROP_NOT_RUNNING, type_id, 1);
        return;
    }
    const hy_policy *p = &dest->spec->policy;
    uint64_t oldest = dest->outq.dropped_oldest, newest = dest->outq.dropped_newest;
    hy_outq_result r = hy_outq_push(&dest->outq, frame, len, p->queue_limit, p->queue_overflow);
    if (dest->outq.dropped_oldest != oldest || dest->outq.dropped_newest != newest) {
        char t[8], o[24], nw[24];
        fmt_u(t, sizeof t, type_id);
        fmt_u(o, sizeof o, (unsigned long long)dest->outq.dropped_oldest);
        fmt_u(nw, sizeof nw, (unsigned long long)dest->outq.dropped_newest);
        uint64_t total = dest->outq.dropped_oldest + dest->outq.dropped_newest, mark = 1;
        while (mark * 10 <= total)
            mark *= 10;
        if (total == mark) /* 1st, 10th, 100th ... */
            hy_log(HY_WARN, "router", "queue full: frames dropped", "worker", dest->spec->name,
                   "instance", dest->idx, "policy", hy_overflow_str(p->queue_overflow),
                   "dropped_oldest", o, "dropped_newest", nw, NULL);
    }
    if (r == HY_OUTQ_NOMEM) {
        hy_sup_count_drop(dest, HY_DROP_NO_MEMORY, type_id, 1);
        return;
    }
    if (r == HY_OUTQ_DROPPED)
        return;
    dest->frames_in++;
    dest->bytes_in += len - HY_TLV_HEADER;
    if (r == HY_OUTQ_OVER)
        set_blocking(dest, true);
    hy_relay_mark_dirty(&dest->sup->relay, dest);
}

void hy_sup_deliver_run(hy_instance *dest, const uint8_t *data, size_t len, size_t frames, uint16_t type_id)
{
    if (frames == 1) {
        hy_sup_deliver(dest, data, len, type_id);
        return;
    }
    if (dest->in_fd < 0 || (dest->state != HY_ST_STARTING && dest->state != HY_ST_RUNNING)) {
        hy_sup_count_drop(dest, HY_DROP_NOT_RUNNING, type_id, frames);
        return;
    }
    if (hy_outq_bytes(&dest->outq) + len > dest->spec->policy.queue_limit) {
        /* Near the limit the policy decides frame by frame. */
        for (size_t off = 0; off < len;) {
            uint32_t plen = (uint32_t)data[off + 2] | (uint32_t)data[off + 3] << 8 | (uint32_t)data[off + 4] << 16 |
                            (uint32_t)data[off + 5] << 24;
            uint16_t t = (uint16_t)(data[off] | data[off + 1] << 8);
            hy_sup_deliver(dest, data + off, HY_TLV_HEADER + plen, t);
            off += HY_TLV_HEADER + plen;
        }
        return;
    }
    if (hy_outq_push(&dest->outq, data, len, UINT64_MAX, HY_OVERFLOW_BLOCK) == HY_OUTQ_NOMEM) {
        hy_sup_count_drop(dest, HY_DROP_NO_MEMORY, type_id, frames);
        return;
    }
    dest->frames_in += frames;
    dest->bytes_in += len - frames * HY_TLV_HEADER;
    hy_relay_mark_dirty(&dest->sup->relay, dest);
}

/* ---- worker stdout: frames ------------------------------------------------ */

static void kill_group(hy_instance *in, int sig)
{
    if (in->pid > 0 && kill(-in->pid, sig) < 0 && errno == ESRCH)
        (void)kill(in->pid, sig); /* group already gone; the leader may not be */
}

/* The stream is unusable: count it, kill the worker, restart as `protocol`. */
static void protocol_kill(hy_instance *in, const char *why)
{
    in->protocol_errors++;
    if (in->kill_reason)
        return;
    in->kill_reason = "protocol";
    char pid[16];
    fmt_u(pid, sizeof pid, (unsigned long long)in->pid);
    hy_log(HY_ERROR, COMP, "corrupt stream from worker: killing it", "worker", in->spec->name,
           "instance", in->idx, "pid", pid, "why", why, NULL);
    kill_group(in, SIGKILL);
}

static void send_control(hy_instance *in, const char *json)
{
    /* Its stdin is closed (being stopped): nothing can reach it, and the
     * watcher must not be started on a closed fd. */
    if (in->in_fd < 0)
        return;
    uint8_t frame[HY_TLV_HEADER + 1024];
    size_t n = strlen(json);
    size_t len = hy_tlv_encode(frame, sizeof frame, HY_TLV_CONTROL_TYPE, json, (uint32_t)n);
    if (!len || hy_outq_push(&in->outq, frame, len, UINT64_MAX, HY_OVERFLOW_BLOCK) < 0)
        return;
    ev_io_start(in->sup->loop, &in->in_w);
}

static int cmp_u16(const void *a, const void *b)
{
    uint16_t x = *(const uint16_t *)a, y = *(const uint16_t *)b;
    return x < y ? -1 : x > y;
}

/* Type names or ids from a control frame, resolved against the schema,
 * sorted and unique. Unknown entries are logged and skipped. -1 on ENOMEM. */
static int parse_types(hy_instance *in, json_t *list, const char *op, uint16_t **out, size_t *nout)
{
    const hy_schema *schema = in->sup->topo->schema;
    size_t n = json_is_array(list) ? json_array_size(list) : 0;
    *out = NULL;
    *nout = 0;
    if (list && !json_is_array(list)) {
        in->protocol_errors++;
        hy_log(HY_WARN, COMP, "control frame: the type list is not an array", "worker", in->spec->name,
               "instance", in->idx, "op", op, NULL);
    }
    if (n == 0)
        return 0;
    uint16_t *ids = calloc(n, sizeof *ids);
    if (!ids)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(list, i);
        const hy_message *m = NULL;
        if (json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) <= 65535)
            m = hy_schema_find(schema, (uint16_t)json_integer_value(v));
        else if (json_is_string(v))
            m = hy_schema_find_name(schema, json_string_value(v));
        if (m) {
            ids[k++] = m->type_id;
            continue;
        }
        char *txt = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        hy_log(HY_WARN, COMP, "control frame names a type the schema does not have: ignored", "worker",
               in->spec->name, "instance", in->idx, "op", op, "type", txt ? txt : "?", NULL);
        free(txt);
    }
    qsort(ids, k, sizeof *ids, cmp_u16);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (u == 0 || ids[u - 1] != ids[i])
            ids[u++] = ids[i];
    *out = ids;
    *nout = u;
    return 0;
}

/* Run-time subscriptions: add (hello, subscribe) or remove (unsubscribe). */
static void change_subs(hy_instance *in, const uint16_t *ids, size_t n, bool add)
{
    uint16_t *merged = malloc((in->nsubs + n + 1) * sizeof *merged);
    if (!merged) {
        hy_log(HY_ERROR, COMP, "out of memory changing subscriptions", "worker", in->spec->name, "instance",
               in->idx, NULL);
        return;
    }
    size_t i = 0, j = 0, k = 0;
    while (i < in->nsubs || j < n) {
        if (j == n || (i < in->nsubs && in->subs[i] < ids[j])) {
            merged[k++] = in->subs[i++];
        } else if (i == in->nsubs || ids[j] < in->subs[i]) {
            if (add)
                merged[k++] = ids[j];
            j++;
        } else { /* in both */
            if (add)
                merged[k++] = in->subs[i];
            i++;
            j++;
        }
    }
    free(in->subs);
    in->subs = merged;
    in->nsubs = k;
    hy_relay_rebuild_routes(&in->sup->relay);
}

static void clear_subs(hy_instance *in)
{
    if (!in->nsubs)
        return;
    free(in->subs);
    in->subs = NULL;
    in->nsubs = 0;
    hy_relay_rebuild_routes(&in->sup->relay);
}

/* hello: check the schema, take its subscriptions, answer welcome. */
static void on_hello(hy_instance *in, json_t *j)
{
    const hy_schema *schema = in->sup->topo->schema;
    const char *digest = json_string_value(json_object_get(j, "schema"));
    if (digest && *digest && strcmp(digest, schema->digest_hex) != 0) {
        hy_log(HY_ERROR, COMP, "worker runs another schema: stopping it", "worker", in->spec->name,
               "instance", in->idx, "worker_schema", digest, "schema", schema->digest_hex, NULL);
        if (!in->kill_reason) {
            in->kill_reason = "schema";
            kill_group(in, SIGKILL);
        }
        return;
    }
    uint16_t *ids;
    size_t n;
    if (parse_types(in, json_object_get(j, "subscribe"), "hello", &ids, &n) == 0) {
        clear_subs(in); /* a hello starts afresh */
        change_subs(in, ids, n, true);
        free(ids);
    }
    /* The worker's name is a YAML key: jansson escapes it. */
    json_t *w = json_pack("{s:s, s:s, s:i, s:s}", "op", "welcome", "worker", in->spec->name, "instance",
                          (json_int_t)in->index, "schema", schema->digest_hex);
    uint64_t hb = in->spec->policy.heartbeat_timeout_ms;
    if (w && hb)
        json_object_set_new(w, "heartbeat_ms", json_integer((json_int_t)(hb / 3 ? hb / 3 : 1)));
    char *text = w ? json_dumps(w, JSON_COMPACT) : NULL;
    if (text)
        send_control(in, text);
    free(text);
    json_decref(w);
}

static void on_control(hy_instance *in, const hy_frame *f)
{
    json_error_t jerr;
    json_t *j = json_loadb((const char *)f->payload, f->len, 0, &jerr);
    const char *op = j ? json_string_value(json_object_get(j, "op")) : NULL;
    if (!op) {
        in->protocol_errors++;
        hy_log(HY_WARN, COMP, "malformed control frame", "worker", in->spec->name, "instance", in->idx, "why",
               j ? "no op" : jerr.text, NULL);
    } else if (strcmp(op, "hello") == 0) {
        on_hello(in, j);
    } else if (strcmp(op, "ready") == 0) {
        if (in->state == HY_ST_STARTING) {
            ev_timer_stop(in->sup->loop, &in->timer);
            in->state = HY_ST_RUNNING;
            char pid[16];
            fmt_u(pid, sizeof pid, (unsigned long long)in->pid);
            hy_log(HY_INFO, COMP, "ready", "worker", in->spec->name, "instance", in->idx, "pid", pid,
                   "by", "ready frame", NULL);
            notify_change(in->sup);
        }
    } else if (strcmp(op, "heartbeat") == 0) {
        in->last_heartbeat = ev_now(in->sup->loop);
    } else if (strcmp(op, "subscribe") == 0 || strcmp(op, "unsubscribe") == 0) {
        uint16_t *ids;
        size_t n;
        if (parse_types(in, json_object_get(j, "types"), op, &ids, &n) == 0) {
            change_subs(in, ids, n, op[0] == 's');
            free(ids);
        }
    } else {
        in->protocol_errors++;
        hy_log(HY_WARN, COMP, "unknown control op: ignored", "worker", in->spec->name, "instance", in->idx,
               "op", op, NULL);
    }
    json_decref(j);
}

/* Known type, exact size, allowed to publish. The last answer is cached:
 * a worker usually writes runs of one type. */
static bool check_outbound(hy_instance *in, const hy_frame *f)
{
    if (in->last_msg && f->type == in->last_type) {
        if (f->len == in->last_msg->size && in->last_allowed)
            return true;
    } else {
        const hy_message *m = hy_schema_find(in->sup->topo->schema, f->type);
        if (!m) {
            hy_sup_count_drop(in, HY_DROP_UNKNOWN_TYPE, f->type, 1);
            return false;
        }
        in->last_type = f->type;
        in->last_msg = m;
        in->last_allowed = in->spec->publish_all || has_type(in->spec->publish, in->spec->npublish, f->type);
    }
    if (f->len != in->last_msg->size) {
        hy_sup_count_drop(in, HY_DROP_WRONG_SIZE, f->type, 1);
        return false;
    }
    if (!in->last_allowed) {
        hy_sup_count_drop(in, HY_DROP_NOT_ALLOWED, f->type, 1);
        return false;
    }
    return true;
}

static int on_frame(void *ud, const hy_frame *f)
{
    hy_instance *in = ud;
    if (f->type == HY_TLV_CONTROL_TYPE) {
        on_control(in, f);
        return 0;
    }
    if (!check_outbound(in, f))
        return 0;
    in->frames_out++;
    in->bytes_out += f->len;
    hy_sup *s = in->sup;
    const uint8_t *frame = f->payload - HY_TLV_HEADER; /* the decoder keeps them contiguous */
    bool in_place = frame >= s->rbuf && frame < s->rbuf + s->rbuf_size;
    hy_relay_from_worker(&s->relay, in, frame, HY_TLV_HEADER + f->len, f->type, in_place);
    return 0;
}

/* Read until EAGAIN (or EOF). Returns 1 on EOF, 0 otherwise. `draining`:
 * the worker exited; what it wrote is read whatever the back-pressure, or it
 * would be lost with the pipe. */
static int pump_stdout(hy_instance *in, bool draining)
{
    hy_sup *s = in->sup;
    for (int rounds = 0; rounds < (draining ? 16 : STDOUT_READ_ROUNDS); rounds++) {
        if (in->out_fd < 0 || (!draining && !hy_relay_worker_may_read(&s->relay, in)))
            return 0; /* back-pressure: it blocks in write until we resume */
        /* The rest of a large frame goes straight where it is assembled:
         * one copy fewer than through the read buffer. */
        uint8_t *dst;
        size_t missing = hy_tlv_direct(&in->dec, &dst);
        bool direct = missing >= DIRECT_READ_MIN;
        ssize_t n = direct ? read(in->out_fd, dst, missing) : read(in->out_fd, s->rbuf, s->rbuf_size);
        if (direct && n > 0) {
            hy_tlv_direct_done(&in->dec, (size_t)n, on_frame, in);
            continue;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                hy_log(HY_WARN, COMP, "read from worker stdout failed", "worker", in->spec->name, "instance", in->idx,
                       "error", strerror(errno), NULL);
            return errno == EAGAIN ? 0 : 1;
        }
        if (n == 0) {
            if (hy_tlv_finish(&in->dec) == HY_TLV_PARTIAL && in->pid > 0)
                protocol_kill(in, "stdout closed in the middle of a frame");
            return 1;
        }
        hy_tlv_status st = hy_tlv_feed(&in->dec, s->rbuf, (size_t)n, on_frame, in);
        hy_relay_end_batch(&s->relay); /* s->rbuf is reused next round */
        if (st == HY_TLV_CORRUPT) {
            char why[96];
            snprintf(why, sizeof why, "frame length %" PRIu32 " over the limit", in->dec.bad_len);
            protocol_kill(in, why);
            return 1;
        }
        if (st == HY_TLV_NOMEM) {
            protocol_kill(in, "out of memory assembling a frame");
            return 1;
        }
        if ((size_t)n < s->rbuf_size)
            return 0;
    }
    return 0;
}

static void out_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_instance *in = w->data;
    if (pump_stdout(in, false))
        stop_io(in, &in->out_w, &in->out_fd);
}

/* ---- worker stderr: log lines ------------------------------------------ */

const hy_tail_line *hy_tail_get(const hy_tail *t, size_t i)
{
    return i < t->n ? &t->slot[(t->head + i) % HY_TAIL_LINES] : NULL;
}

static void tail_drop_oldest(hy_tail *t)
{
    hy_tail_line *old = &t->slot[t->head];
    t->bytes -= old->len;
    free(old->text);
    old->text = NULL;
    t->head = (t->head + 1) % HY_TAIL_LINES;
    t->n--;
}

/* Keep a line for `hyphactl tail`; out of memory only loses the line. */
static void tail_push(hy_tail *t, const char *line, size_t len, uint64_t seq)
{
    if (!t->slot && !(t->slot = calloc(HY_TAIL_LINES, sizeof *t->slot)))
        return;
    char *copy = malloc(len + 1);
    if (!copy)
        return;
    memcpy(copy, line, len);
    copy[len] = '\0';
    while (t->n > 0 && (t->n == HY_TAIL_LINES || t->bytes + len > HY_TAIL_BYTES))
        tail_drop_oldest(t);
    hy_tail_line *slot = &t->slot[(t->head + t->n) % HY_TAIL_LINES];
    slot->text = copy;
    slot->len = len;
    slot->seq = seq;
    t->n++;
    t->bytes += len;
}

static void flush_errline(hy_instance *in)
{
    if (in->errlen || in->errcut) {
        hy_log_worker_line(in->spec->name, in->index, in->errline, in->errlen, in->errcut);
        tail_push(&in->tail, in->errline, in->errlen, ++in->sup->line_seq);
        if (in->sup->on_line)
            in->sup->on_line(in->sup, in, in->errline, in->errlen);
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
        stop_io(in, &in->err_w, &in->err_fd);
}

/* ---- spawn status ------------------------------------------------------ */

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
            snprintf(in->spawn_error, sizeof in->spawn_error, "chdir %s: %s", in->spec->cwd,
                     strerror(e));
        else
            snprintf(in->spawn_error, sizeof in->spawn_error, "%s: %s", stage, strerror(e));
        char msg[320];
        snprintf(msg, sizeof msg, "unable to spawn %s: %s", in->label, in->spawn_error);
        hy_log(HY_ERROR, COMP, msg, "worker", in->spec->name, "instance", in->idx, "path", in->spec->exec_path, NULL);
    }
    stop_io(in, &in->status_w, &in->status_fd);
}

static void status_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    read_spawn_status(w->data);
}

/* ---- timers ---------------------------------------------------------- */

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_instance *in = w->data;
    char pid[16];
    switch (in->state) {
    case HY_ST_STARTING: /* alive for start_timeout: ready */
        in->state = HY_ST_RUNNING;
        fmt_u(pid, sizeof pid, (unsigned long long)in->pid);
        hy_log(HY_INFO, COMP, "ready", "worker", in->spec->name, "instance",
               in->idx, "pid", pid, "by", "start_timeout", NULL);
        notify_change(in->sup);
        break;
    case HY_ST_BACKOFF:
        spawn_instance(in);
        break;
    case HY_ST_FAILED:
        in->retrying = true;
        hy_log(HY_INFO, COMP, "retrying failed worker", "worker", in->spec->name, "instance",
               in->idx, NULL);
        spawn_instance(in);
        break;
    default:
        break;
    }
}

static void stop_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_instance *in = w->data;
    if (in->state != HY_ST_STOPPING || in->pid <= 0)
        return;
    const hy_policy *p = &in->spec->policy;
    char pid[16];
    fmt_u(pid, sizeof pid, (unsigned long long)in->pid);
    if (in->stop_stage == 1) {
        const char *sig = hy_signal_name(p->stop_signal);
        hy_log(HY_INFO, COMP, "sending stop signal", "worker", in->spec->name, "instance", in->idx, "pid", pid, "signal",
               sig ? sig : "?", NULL);
        kill_group(in, p->stop_signal);
        in->stop_stage = 2;
        uint64_t moment = STOP_MOMENT_MS < p->stop_grace_ms ? STOP_MOMENT_MS : p->stop_grace_ms;
        set_timer(in, &in->stop_timer, p->stop_grace_ms - moment);
    } else if (in->stop_stage == 2) {
        char g[24];
        hy_log(HY_WARN, COMP, "still running after grace: killing", "worker", in->spec->name, "instance", in->idx, "pid",
               pid, "grace", hy_format_duration(p->stop_grace_ms, g, sizeof g), NULL);
        kill_group(in, SIGKILL);
        in->stop_stage = 3;
    }
}

/* Liveness: a heartbeat control frame only updates last_heartbeat; this
 * timer wakes at the deadline and either re-arms for the time left or
 * kills (libev's "ev_timer again" pattern: no timer work per heartbeat). */
static void hb_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    hy_instance *in = w->data;
    uint64_t timeout = in->spec->policy.heartbeat_timeout_ms;
    if (in->pid <= 0 || timeout == 0 || (in->state != HY_ST_STARTING && in->state != HY_ST_RUNNING))
        return;
    double left = in->last_heartbeat + (double)timeout / 1000.0 - ev_now(loop);
    if (left > 0.0005) {
        ev_timer_set(w, left, 0.0);
        ev_timer_start(loop, w);
        return;
    }
    if (in->kill_reason)
        return;
    in->kill_reason = "heartbeat";
    char pid[16], t[24], age[32];
    fmt_u(pid, sizeof pid, (unsigned long long)in->pid);
    snprintf(age, sizeof age, "%.3fs", ev_now(loop) - in->last_heartbeat);
    hy_log(HY_ERROR, COMP, "no heartbeat within heartbeat.timeout: killing it", "worker", in->spec->name,
           "instance", in->idx, "pid", pid, "timeout", hy_format_duration(timeout, t, sizeof t), "since_last", age,
           NULL);
    kill_group(in, SIGKILL);
}

/* ---- spawn ---------------------------------------------------------------- */

static void spawn_instance(hy_instance *in)
{
    hy_sup *s = in->sup;
    const hy_worker_spec *w = in->spec;
    hy_spawn_req req = {.path = w->exec_path, .argv = w->argv, .envp = in->envp, .cwd = w->cwd,
                        .pipe_size = hy_spawn_pipe_size(s->ninst)};
    hy_spawn_res res;
    hy_err err;
    in->kill_reason = NULL;
    in->spawn_error[0] = '\0';
    hy_tlv_decoder_reset(&in->dec);
    in->errlen = in->errcut = 0;
    in->started_at = now_s(s);
    if (in->last_reason[0])
        in->restarts++;
    if (hy_spawn(&req, &res, &err) < 0) {
        /* No child at all (fds or processes exhausted): a failed start. */
        snprintf(in->spawn_error, sizeof in->spawn_error, "%s", err.msg);
        char msg[320];
        snprintf(msg, sizeof msg, "unable to spawn %s: %s", in->label, err.msg);
        hy_log(HY_ERROR, COMP, msg, "worker", w->name, "instance", in->idx, NULL);
        in->pid = 0;
        handle_exit(in, -1);
        return;
    }
    in->pid = res.pid;
    in->in_fd = res.in_fd;
    in->out_fd = res.out_fd;
    in->err_fd = res.err_fd;
    in->status_fd = res.status_fd;
    ev_io_set(&in->out_w, in->out_fd, EV_READ);
    ev_io_set(&in->err_w, in->err_fd, EV_READ);
    ev_io_set(&in->status_w, in->status_fd, EV_READ);
    ev_io_set(&in->in_w, in->in_fd, EV_WRITE);
    in->last_msg = NULL;
    in->last_heartbeat = now_s(s);
    if (hy_relay_worker_may_read(&s->relay, in))
        ev_io_start(s->loop, &in->out_w);
    ev_io_start(s->loop, &in->err_w);
    ev_io_start(s->loop, &in->status_w);
    if (hy_warden_add(&s->warden, in->pid, &err) < 0)
        hy_log(HY_ERROR, COMP, "cannot register worker with the warden", "worker", in->spec->name, "instance", in->idx,
               "error", err.msg, NULL);
    char pid[16];
    fmt_u(pid, sizeof pid, (unsigned long long)in->pid);
    hy_log(HY_INFO, COMP, "started", "worker", w->name, "instance",
           in->idx, "pid", pid, NULL);
    if (w->policy.start_timeout_ms == 0) {
        in->state = HY_ST_RUNNING;
    } else {
        in->state = HY_ST_STARTING;
        set_timer(in, &in->timer, w->policy.start_timeout_ms);
    }
    if (w->policy.heartbeat_timeout_ms)
        set_timer(in, &in->hb_timer, w->policy.heartbeat_timeout_ms);
    in->ever_started = true;
    notify_change(s);
}

/* ---- exits --------------------------------------------------------------- */

static bool all_stopped(const hy_sup *s)
{
    for (size_t i = 0; i < s->ninst; i++)
        if (s->inst[i]->pid > 0)
            return false;
    return true;
}

static void check_shutdown(hy_sup *s)
{
    if (s->shutting_down && all_stopped(s) && s->on_all_stopped) {
        void (*cb)(hy_sup *) = s->on_all_stopped;
        s->on_all_stopped = NULL;
        cb(s);
    }
}

/* What went through this instance so far (all its processes): one line at
 * each exit, so the counts are in the log before hyphactl exists. */
static void log_counters(const hy_instance *in)
{
    char fo[24], fi[24], drops[256] = "";
    size_t used = 0;
    for (int d = 0; d < HY_DROP__COUNT; d++) {
        uint64_t n = in->drops[d];
        if (n && used < sizeof drops)
            used += (size_t)snprintf(drops + used, sizeof drops - used, "%s%s=%" PRIu64, used ? "," : "",
                                     hy_drop_str((hy_drop)d), n);
    }
    if (in->outq.dropped_oldest && used < sizeof drops)
        used += (size_t)snprintf(drops + used, sizeof drops - used, "%squeue-full-oldest=%" PRIu64, used ? "," : "",
                                 in->outq.dropped_oldest);
    if (in->outq.dropped_newest && used < sizeof drops)
        used += (size_t)snprintf(drops + used, sizeof drops - used, "%squeue-full-newest=%" PRIu64, used ? "," : "",
                                 in->outq.dropped_newest);
    fmt_u(fo, sizeof fo, (unsigned long long)in->frames_out);
    fmt_u(fi, sizeof fi, (unsigned long long)in->frames_in);
    hy_log(HY_INFO, "router", "counters", "worker", in->spec->name, "instance", in->idx, "frames_out", fo,
           "frames_in", fi, "dropped", used ? drops : "none", NULL);
}

/* wstatus -1: the spawn itself failed, no process. */
static void handle_exit(hy_instance *in, int wstatus)
{
    hy_sup *s = in->sup;
    const hy_policy *p = &in->spec->policy;
    pid_t oldpid = in->pid;
    hy_err err;

    /* Learn a failed exec before the pipes go, then drain what is left. */
    if (in->status_fd >= 0)
        read_spawn_status(in);
    if (in->status_fd >= 0)
        stop_io(in, &in->status_w, &in->status_fd);
    if (in->out_fd >= 0) {
        pump_stdout(in, true);
        stop_io(in, &in->out_w, &in->out_fd);
    }
    if (in->err_fd >= 0) {
        pump_stderr(in);
        flush_errline(in);
        stop_io(in, &in->err_w, &in->err_fd);
    }
    drop_queue(in, HY_DROP_EXITED);
    close_fd(&in->in_fd);
    clear_subs(in);
    ev_timer_stop(s->loop, &in->timer);
    ev_timer_stop(s->loop, &in->stop_timer);
    ev_timer_stop(s->loop, &in->hb_timer);
    in->last_exit_at = now_s(s);
    /* The worker is its process group: what it left running there goes
     * with it (as systemd does with a unit's leftovers), so a restart never
     * runs beside its predecessor's children. */
    if (oldpid > 0 && kill(-oldpid, SIGKILL) == 0) {
        char pg[16];
        fmt_u(pg, sizeof pg, (unsigned long long)oldpid);
        hy_log(HY_WARN, COMP, "killed processes the worker left in its group", "worker",
               in->spec->name, "instance", in->idx, "pgid", pg, NULL);
    }
    if (oldpid > 0 && hy_warden_remove(&s->warden, oldpid, &err) < 0)
        hy_log(HY_WARN, COMP, "warden", "error", err.msg, NULL);
    in->pid = 0;

    double uptime = wstatus == -1 ? 0 : now_s(s) - in->started_at;
    if (uptime < 0)
        uptime = 0;
    in->last_code = -1;
    in->last_signal = 0;
    const char *reason;
    if (wstatus == -1 || in->spawn_error[0]) {
        reason = "spawn";
        in->last_code = wstatus == -1 ? -1 : (WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1);
    } else if (in->kill_reason) {
        reason = in->kill_reason;
        if (WIFSIGNALED(wstatus))
            in->last_signal = WTERMSIG(wstatus);
        else
            in->last_code = WEXITSTATUS(wstatus);
    } else if (WIFSIGNALED(wstatus)) {
        reason = "signal";
        in->last_signal = WTERMSIG(wstatus);
    } else {
        reason = "exit";
        in->last_code = WEXITSTATUS(wstatus);
    }
    snprintf(in->last_reason, sizeof in->last_reason, "%s", reason);
    log_counters(in);

    char pid[16], status[32], up[32], delay[32], restarts[16];
    fmt_u(pid, sizeof pid, (unsigned long long)oldpid);
    if (in->last_signal) {
        const char *sn = hy_signal_abbrev(in->last_signal);
        if (sn)
            snprintf(status, sizeof status, "SIG%s", sn);
        else
            snprintf(status, sizeof status, "signal %d", in->last_signal);
    } else {
        snprintf(status, sizeof status, "%d", in->last_code);
    }
    snprintf(up, sizeof up, "%.3fs", uptime);
    fmt_u(restarts, sizeof restarts, in->restarts);
    const char *inst = in->idx;

    if (in->state == HY_ST_STOPPING || s->shutting_down) {
        bool again = in->start_after_stop && !s->shutting_down;
        in->state = HY_ST_STOPPED;
        in->start_after_stop = false;
        hy_log(HY_INFO, COMP, "stopped", "worker", in->spec->name, "instance", inst, "pid", pid,
               "status", status, "uptime", up, NULL);
        if (again)
            spawn_instance(in);
        if (in->retiring)
            ev_feed_event(s->loop, &s->gc_w, EV_TIMER); /* freed outside the child callback */
        notify_change(s);
        check_shutdown(s);
        return;
    }

    notify_change(s);
    bool clean = strcmp(reason, "exit") == 0 && in->last_code == 0;
    if (p->restart == HY_RESTART_NEVER || (p->restart == HY_RESTART_ON_FAILURE && clean)) {
        in->state = HY_ST_EXITED;
        hy_log(clean ? HY_INFO : HY_WARN, COMP, "exited", "worker", in->spec->name, "instance",
               inst, "pid", pid, "status", status, "reason", reason, "uptime", up, "next",
               "exited", "restart", hy_restart_policy_str(p->restart), NULL);
        return;
    }

    uint64_t now_ms = (uint64_t)(now_s(s) * 1000.0);
    if ((uint64_t)(uptime * 1000.0) >= p->backoff_reset_after_ms) {
        /* It had been healthy long enough: this exit starts a new story,
         * for the delay and for the give-up count alike. */
        in->n = 0;
        in->retrying = false;
        hy_giveup_clear(&in->giveup);
    }
    bool give_up = hy_giveup_record(&in->giveup, now_ms, p->give_up_within_ms) || in->retrying;
    if (give_up) {
        in->state = HY_ST_FAILED;
        in->retrying = false;
        char within[24], retry[24], fails[16];
        fmt_u(fails, sizeof fails, p->give_up_failures);
        hy_format_duration(p->give_up_within_ms, within, sizeof within);
        if (p->give_up_retry_after_ms)
            hy_format_duration(p->give_up_retry_after_ms, retry, sizeof retry);
        else
            snprintf(retry, sizeof retry, "never");
        hy_log(HY_ERROR, COMP, "exited", "worker", in->spec->name, "instance", inst, "pid", pid,
               "status", status, "reason", reason, "uptime", up, "next", "failed", "failures",
               fails, "within", within, "retry_in", retry, "restarts", restarts, NULL);
        if (p->give_up_retry_after_ms)
            set_timer(in, &in->timer, p->give_up_retry_after_ms);
        return;
    }

    uint64_t d = hy_backoff_delay_ms(p, in->n, hy_rand_signed(&s->rng));
    if (in->n < 64)
        in->n++;
    snprintf(delay, sizeof delay, "%" PRIu64 "ms", d);
    hy_log(clean ? HY_INFO : HY_WARN, COMP, "exited", "worker", in->spec->name, "instance", inst,
           "pid", pid, "status", status, "reason", reason, "uptime", up, "next", "backoff",
           "delay", delay, "restarts", restarts, NULL);
    if (d == 0 && wstatus != -1) {
        spawn_instance(in); /* backoff 0: at once, for the lowest restart latency */
    } else {
        /* A spawn that failed before any process existed goes through the
         * loop even at delay 0: spawning again from here would recurse while
         * fork keeps failing. */
        in->state = HY_ST_BACKOFF;
        set_timer(in, &in->timer, d);
    }
}

static void child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_sup *s = w->data;
    pid_t pid = w->rpid;
    int st = w->rstatus;
    if (!WIFEXITED(st) && !WIFSIGNALED(st))
        return; /* stopped or continued: not an exit */
    if (pid == s->warden.pid) {
        s->warden.pid = 0;
        close_fd(&s->warden.fd);
        hy_err err;
        hy_log(HY_ERROR, COMP, "the warden process died: restarting it", NULL);
        if (!s->shutting_down && hy_warden_start(&s->warden, &err) == 0) {
            for (size_t i = 0; i < s->ninst; i++)
                if (s->inst[i]->pid > 0)
                    (void)hy_warden_add(&s->warden, s->inst[i]->pid, &err);
        }
        return;
    }
    for (size_t i = 0; i < s->ninst; i++) {
        if (s->inst[i]->pid == pid) {
            handle_exit(s->inst[i], st);
            return;
        }
    }
    char p[16];
    fmt_u(p, sizeof p, (unsigned long long)pid);
    hy_log(HY_DEBUG, COMP, "reaped orphan", "pid", p, NULL); /* as subreaper / PID 1 */
}

/* ---- stopping ----------------------------------------------------------- */

static void send_shutdown(hy_instance *in)
{
    /* Never inside a frame that is half written: then EOF alone says it. */
    if (in->in_fd < 0 || !hy_outq_at_boundary(&in->outq))
        return;
    drop_queue(in, HY_DROP_EXITED);
    char json[64];
    int n = snprintf(json, sizeof json, "{\"op\":\"shutdown\",\"grace_ms\":%" PRIu64 "}",
                     in->spec->policy.stop_grace_ms);
    uint8_t frame[HY_TLV_HEADER + 64];
    size_t len = hy_tlv_encode(frame, sizeof frame, HY_TLV_CONTROL_TYPE, json, (uint32_t)n);
    /* Best effort: a full pipe means the worker is not reading; EOF follows. */
    ssize_t w = write(in->in_fd, frame, len);
    (void)w;
}

static void stop_instance(hy_instance *in)
{
    hy_sup *s = in->sup;
    switch (in->state) {
    case HY_ST_STARTING:
    case HY_ST_RUNNING: {
        const hy_policy *p = &in->spec->policy;
        in->state = HY_ST_STOPPING;
        ev_timer_stop(s->loop, &in->timer);
        send_shutdown(in);
        drop_queue(in, HY_DROP_EXITED);
        close_fd(&in->in_fd); /* stdin EOF */
        in->stop_stage = 1;
        char pid[16];
        fmt_u(pid, sizeof pid, (unsigned long long)in->pid);
        hy_log(HY_INFO, COMP, "stopping", "worker", in->spec->name, "instance", in->idx, "pid", pid, NULL);
        uint64_t moment = STOP_MOMENT_MS < p->stop_grace_ms ? STOP_MOMENT_MS : p->stop_grace_ms;
        set_timer(in, &in->stop_timer, moment);
        break;
    }
    case HY_ST_BACKOFF:
    case HY_ST_FAILED:
    case HY_ST_EXITED:
        ev_timer_stop(s->loop, &in->timer);
        in->state = HY_ST_STOPPED;
        break;
    case HY_ST_STOPPING:
    case HY_ST_STOPPED:
        break;
    }
}

void hy_sup_stop_all(hy_sup *s)
{
    s->shutting_down = true;
    for (size_t i = 0; i < s->ninst; i++)
        stop_instance(s->inst[i]);
    check_shutdown(s);
}

void hy_sup_kill_all(hy_sup *s)
{
    for (size_t i = 0; i < s->ninst; i++) {
        hy_instance *in = s->inst[i];
        if (in->pid > 0) {
            kill_group(in, SIGKILL);
            in->stop_stage = 3;
        }
    }
}

size_t hy_sup_live(const hy_sup *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->ninst; i++)
        n += s->inst[i]->pid > 0;
    return n;
}

static void tail_free(hy_tail *t)
{
    if (t->slot)
        for (size_t i = 0; i < t->n; i++)
            free(t->slot[(t->head + i) % HY_TAIL_LINES].text);
    free(t->slot);
    memset(t, 0, sizeof *t);
}

/* Watchers stopped, fds closed, memory freed. The process, if any, is the
 * caller's business (hyphad exits, or the instance was stopped first). */
static void instance_free(hy_instance *in)
{
    if (!in)
        return;
    struct ev_loop *loop = in->sup->loop;
    if (loop) {
        ev_io_stop(loop, &in->out_w);
        ev_io_stop(loop, &in->err_w);
        ev_io_stop(loop, &in->status_w);
        ev_io_stop(loop, &in->in_w);
        ev_timer_stop(loop, &in->timer);
        ev_timer_stop(loop, &in->stop_timer);
        ev_timer_stop(loop, &in->hb_timer);
    }
    close_fd(&in->in_fd);
    close_fd(&in->out_fd);
    close_fd(&in->err_fd);
    close_fd(&in->status_fd);
    if (in->envp) {
        for (char **e = in->envp; *e; e++)
            free(*e);
        free(in->envp);
    }
    hy_giveup_free(&in->giveup);
    hy_outq_free(&in->outq);
    free(in->subs);
    hy_tlv_decoder_free(&in->dec);
    tail_free(&in->tail);
    free(in);
}

/* ---- operator commands ------------------------------------------------ */

/* An operator's start is a fresh story: no backoff, no give-up count. */
static void clear_failures(hy_instance *in)
{
    in->n = 0;
    in->retrying = false;
    hy_giveup_clear(&in->giveup);
}

void hy_sup_start_instance(hy_instance *in)
{
    hy_sup *s = in->sup;
    if (s->shutting_down || in->retiring)
        return;
    clear_failures(in);
    in->pending = false;
    switch (in->state) {
    case HY_ST_STOPPING:
        in->start_after_stop = true;
        break;
    case HY_ST_STARTING:
    case HY_ST_RUNNING:
        break;
    default: /* exited, backoff, failed, stopped: no process */
        ev_timer_stop(s->loop, &in->timer);
        hy_log(HY_INFO, COMP, "starting on request", "worker", in->spec->name, "instance", in->idx, "was",
               hy_state_str(in->state), NULL);
        spawn_instance(in);
        break;
    }
}

void hy_sup_stop_instance(hy_instance *in)
{
    in->start_after_stop = false;
    in->pending = false;
    bool had = in->pid > 0;
    stop_instance(in);
    if (!had)
        notify_change(in->sup);
}

void hy_sup_restart_instance(hy_instance *in)
{
    if (in->sup->shutting_down || in->retiring)
        return;
    clear_failures(in);
    if (in->state == HY_ST_STARTING || in->state == HY_ST_RUNNING || in->state == HY_ST_STOPPING) {
        stop_instance(in);
        in->start_after_stop = true;
    } else {
        hy_sup_start_instance(in);
    }
}

/* ---- reload --------------------------------------------------------------- */

static bool spec_in(const hy_worker_spec *w, const hy_topology *t)
{
    return t->nworkers && w >= t->workers && w < t->workers + t->nworkers;
}

/* Stopped by an operator (not merely not started yet): a reload that
 * changes its definition leaves the new instance stopped too, as systemd
 * leaves a stopped unit stopped when its file changes. */
static bool operator_stopped(const hy_sup *s, const hy_topology *old, const char *name, unsigned index)
{
    for (size_t i = 0; i < s->ninst; i++) {
        const hy_instance *o = s->inst[i];
        if (!o->retiring && spec_in(o->spec, old) && o->index == index && strcmp(o->spec->name, name) == 0)
            return o->state == HY_ST_STOPPED && o->ever_started && !o->pending;
    }
    return false;
}

static bool retiring_twin(const hy_sup *s, const hy_instance *in)
{
    for (size_t i = 0; i < s->ninst; i++) {
        const hy_instance *o = s->inst[i];
        if (o->retiring && o->index == in->index && strcmp(o->spec->name, in->spec->name) == 0)
            return true;
    }
    return false;
}

/* Free retired instances that have stopped, free topologies nobody uses any
 * more, start instances whose predecessor is gone. Runs from its own
 * watcher so no caller is iterating s->inst meanwhile. */
static void gc_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    hy_sup *s = w->data;
    size_t k = 0;
    bool freed = false;
    if (ev_is_active(&s->start_w)) { /* the first start walks s->inst by index: wait for it */
        ev_timer_set(&s->gc_w, 0.01, 0.0);
        ev_timer_start(loop, &s->gc_w);
        return;
    }
    hy_relay_end_batch(&s->relay);
    for (size_t i = 0; i < s->ninst; i++) {
        hy_instance *in = s->inst[i];
        if (in->retiring && in->pid == 0 && in->state != HY_ST_STOPPING) {
            hy_relay_forget(&s->relay, in);
            instance_free(in);
            freed = true;
        } else {
            s->inst[k++] = in;
        }
    }
    s->ninst = k;
    if (freed)
        hy_relay_rebuild_routes(&s->relay);
    for (size_t r = 0; r < s->nretired;) {
        bool used = false;
        for (size_t i = 0; i < s->ninst && !used; i++)
            used = spec_in(s->inst[i]->spec, s->retired[r]);
        if (used) {
            r++;
            continue;
        }
        hy_topology_free(s->retired[r]);
        s->retired[r] = s->retired[--s->nretired];
    }
    for (size_t i = 0; i < s->ninst; i++) {
        hy_instance *in = s->inst[i];
        if (in->pending && !s->shutting_down && !retiring_twin(s, in)) {
            in->pending = false;
            spawn_instance(in);
        }
    }
    if (freed)
        notify_change(s);
}

static void retire(hy_instance *in)
{
    in->retiring = true;
    in->pending = false;
    in->start_after_stop = false;
    stop_instance(in);
}

static int add_name(json_t *list, const char *name)
{
    return list ? json_array_append_new(list, json_string(name)) : 0;
}

int hy_sup_reload(hy_sup *s, const hy_topology *t, json_t *started, json_t *stopped, json_t *restarted,
                  json_t *unchanged, hy_err *err)
{
    const hy_topology *old = s->topo;
    /* Room first, so that nothing changes when memory is short. */
    size_t extra = 0;
    for (size_t i = 0; i < t->nworkers; i++)
        extra += t->workers[i].instances;
    hy_instance **grown = realloc(s->inst, (s->ninst + extra + 1) * sizeof *grown);
    if (!grown)
        return hy_err_set(err, "out of memory");
    s->inst = grown;
    hy_topology **ret = realloc(s->retired, (s->nretired + 1) * sizeof *ret);
    if (!ret)
        return hy_err_set(err, "out of memory");
    s->retired = ret;
    if (hy_relay_reserve(&s->relay, s->ninst + extra, err) < 0)
        return -1;
    hy_instance **fresh = extra ? calloc(extra, sizeof *fresh) : NULL;
    if (extra && !fresh)
        return hy_err_set(err, "out of memory");
    size_t nfresh = 0;
    /* Instances of new and changed workers. */
    for (size_t i = 0; i < t->nworkers; i++) {
        const hy_worker_spec *nw = &t->workers[i];
        const hy_worker_spec *ow = hy_topology_find_worker(old, nw->name);
        if (ow && hy_worker_spec_equal(ow, nw))
            continue;
        for (unsigned j = 0; j < nw->instances; j++) {
            hy_instance *in = instance_new(s, nw, j, err);
            if (!in) {
                for (size_t f = 0; f < nfresh; f++)
                    instance_free(fresh[f]);
                free(fresh);
                return -1;
            }
            in->pending = !operator_stopped(s, old, nw->name, j);
            fresh[nfresh++] = in;
        }
    }
    /* Nothing can fail from here on. */
    for (size_t i = 0; i < old->nworkers; i++) {
        const hy_worker_spec *ow = &old->workers[i];
        const hy_worker_spec *nw = hy_topology_find_worker(t, ow->name);
        if (!nw)
            add_name(stopped, ow->name);
        else if (hy_worker_spec_equal(ow, nw))
            add_name(unchanged, ow->name);
        else
            add_name(restarted, ow->name);
    }
    for (size_t i = 0; i < t->nworkers; i++)
        if (!hy_topology_find_worker(old, t->workers[i].name))
            add_name(started, t->workers[i].name);
    s->retired[s->nretired++] = (hy_topology *)old;
    s->topo = t;
    hy_relay_retopo(&s->relay, t);
    size_t n = s->ninst;
    for (size_t i = 0; i < n; i++) {
        hy_instance *in = s->inst[i];
        in->last_msg = NULL; /* it points into the old schema */
        if (in->retiring || !spec_in(in->spec, old))
            continue; /* retiring since an earlier reload: stays on its own topology */
        const hy_worker_spec *nw = hy_topology_find_worker(t, in->spec->name);
        if (nw && hy_worker_spec_equal(in->spec, nw)) {
            in->spec = nw; /* unchanged: the same process goes on */
            continue;
        }
        char pid[16];
        fmt_u(pid, sizeof pid, (unsigned long long)in->pid);
        hy_log(HY_INFO, COMP, nw ? "reload: definition changed, restarting" : "reload: removed, stopping", "worker",
               in->spec->name, "instance", in->idx, "pid", pid, NULL);
        retire(in);
    }
    for (size_t f = 0; f < nfresh; f++)
        s->inst[s->ninst++] = fresh[f];
    free(fresh);
    hy_relay_rebuild_routes(&s->relay);
    ev_feed_event(s->loop, &s->gc_w, EV_TIMER);
    notify_change(s);
    return 0;
}

/* ---- setup ------------------------------------------------------------ */

/* One instance of worker `w`, stopped, with its watchers ready. NULL on ENOMEM. */
static hy_instance *instance_new(hy_sup *s, const hy_worker_spec *w, unsigned j, hy_err *err)
{
    hy_instance *in = calloc(1, sizeof *in);
    if (!in) {
        hy_err_set(err, "out of memory for %s[%u]", w->name, j);
        return NULL;
    }
    in->sup = s;
    in->spec = w;
    in->index = j;
    in->state = HY_ST_STOPPED;
    in->in_fd = in->out_fd = in->err_fd = in->status_fd = -1;
    snprintf(in->label, sizeof in->label, "%s[%u]", w->name, j);
    snprintf(in->idx, sizeof in->idx, "%u", j);
    hy_tlv_decoder_init(&in->dec, 0);
    hy_outq_init(&in->outq);
    if (!(in->envp = build_env(w, j, s->topo->schema->digest_hex)) ||
        hy_giveup_init(&in->giveup, w->policy.give_up_failures) < 0) {
        hy_err_set(err, "out of memory building %s", in->label);
        instance_free(in);
        return NULL;
    }
    ev_io_init(&in->out_w, out_cb, -1, EV_READ);
    ev_io_init(&in->err_w, err_cb, -1, EV_READ);
    ev_io_init(&in->status_w, status_cb, -1, EV_READ);
    ev_io_init(&in->in_w, in_cb, -1, EV_WRITE);
    ev_init(&in->timer, timer_cb);
    ev_init(&in->stop_timer, stop_timer_cb);
    ev_init(&in->hb_timer, hb_timer_cb);
    in->out_w.data = in->err_w.data = in->status_w.data = in->in_w.data = in;
    in->timer.data = in->stop_timer.data = in->hb_timer.data = in;
    return in;
}

int hy_sup_init(hy_sup *s, struct ev_loop *loop, const hy_topology *t, hy_err *err)
{
    memset(s, 0, sizeof *s);
    s->loop = loop;
    s->topo = t;
    s->warden.fd = -1;
    s->started_at = ev_now(loop);
    if (getrandom(&s->rng, sizeof s->rng, 0) != (ssize_t)sizeof s->rng)
        s->rng = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull ^ (uint64_t)time(NULL);
    s->rbuf_size = RBUF_SIZE;
    if (!(s->rbuf = malloc(s->rbuf_size)))
        return hy_err_set(err, "out of memory");
    size_t total = 0;
    for (size_t i = 0; i < t->nworkers; i++)
        total += t->workers[i].instances;
    if (total && !(s->inst = calloc(total, sizeof *s->inst)))
        return hy_err_set(err, "out of memory for %zu worker instances", total);
    for (size_t i = 0; i < t->nworkers; i++) {
        const hy_worker_spec *w = &t->workers[i];
        for (unsigned j = 0; j < w->instances; j++) {
            hy_instance *in = instance_new(s, w, j, err);
            if (!in)
                return -1;
            s->inst[s->ninst++] = in;
        }
    }
    if (hy_warden_start(&s->warden, err) < 0)
        return -1;
    if (hy_relay_init(&s->relay, s, err) < 0)
        return -1;
    ev_init(&s->start_w, start_batch_cb);
    s->start_w.data = s;
    ev_init(&s->gc_w, gc_cb);
    s->gc_w.data = s;
    ev_child_init(&s->child_w, child_cb, 0, 0);
    s->child_w.data = s;
    ev_child_start(loop, &s->child_w);
    return 0;
}

/* Start instances a batch per loop iteration, so that signals, exits and
 * timers are handled while hundreds of workers come up. */
#define START_BATCH 32

static void start_batch_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    hy_sup *s = w->data;
    for (int k = 0; k < START_BATCH && s->next_start < s->ninst; k++) {
        hy_instance *in = s->inst[s->next_start++];
        if (in->state == HY_ST_STOPPED && in->pid == 0 && !in->pending && !in->retiring && !s->shutting_down)
            spawn_instance(in);
    }
    if (s->next_start < s->ninst && !s->shutting_down) {
        ev_timer_set(w, 0.0, 0.0);
        ev_timer_start(loop, w);
    }
}

void hy_sup_start_all(hy_sup *s)
{
    hy_relay_start(&s->relay);
    s->next_start = 0;
    ev_timer_set(&s->start_w, 0.0, 0.0);
    ev_timer_start(s->loop, &s->start_w);
}

void hy_sup_free(hy_sup *s)
{
    if (s->loop) {
        ev_child_stop(s->loop, &s->child_w);
        ev_timer_stop(s->loop, &s->start_w);
        ev_timer_stop(s->loop, &s->gc_w);
    }
    hy_warden_quit(&s->warden);
    for (size_t i = 0; i < s->ninst; i++)
        instance_free(s->inst[i]);
    hy_relay_free(&s->relay);
    free(s->inst);
    for (size_t i = 0; i < s->nretired; i++)
        hy_topology_free(s->retired[i]);
    free(s->retired);
    free(s->rbuf);
    memset(s, 0, sizeof *s);
}
