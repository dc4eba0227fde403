/* control.c - the control socket (see hypha/control.h and docs/control.md).
 *
 * Each client is a small state machine: it sends request lines; each is
 * answered by one reply line appended to its output buffer. `tail -f` and
 * `tap` turn the client into a stream: lines are appended as workers write
 * to stderr or frames pass, and skipped (counted) while the client is not
 * reading. A client is freed only from its own callbacks or at the end of a
 * loop iteration, never while a stream is being fed.
 */
#define _GNU_SOURCE
#include "hypha/control.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl_int.h"
#include "fsutil.h"
#include "hypha/ctlreq.h"
#include "hypha/ctlpath.h"
#include "hypha/log.h"
#include "hypha/net.h"
#include "hypha/relay.h"
#include "hypha/supervisor.h"

#define COMP "control"

static void client_free(hy_ctl_client *cl);

/* ---- input -------------------------------------------------------------- */

/* Answers the complete lines in cl->in, in order; at EOF the rest is the
 * last line. Stops early when the client is paused (too much unread), is
 * closing or died; what is left waits in cl->in. */
static void process_lines(hy_ctl_client *cl, bool eof)
{
    size_t start = 0, took, len;
    while (!cl->dead && !cl->paused && !cl->closing && start < cl->inlen &&
           (took = hy_ctl_next_line(cl->in + start, cl->inlen - start, eof, &len)) > 0) {
        if (len) {
            cl->last_active = ev_now(cl->ctl->loop);
            hy_ctl_dispatch(cl, cl->in + start, len);
            if (cl->mode == CL_REQUESTS && !cl->dead)
                ev_timer_again(cl->ctl->loop, &cl->idle);
        }
        start += took;
    }
    memmove(cl->in, cl->in + start, cl->inlen - start);
    cl->inlen -= start;
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    hy_ctl_client *cl = w->data;
    process_lines(cl, false); /* left from a pause */
    for (int rounds = 0; rounds < 4 && !cl->dead && !cl->closing && !cl->paused; rounds++) {
        ssize_t n = recv(cl->fd, cl->in + cl->inlen, HY_CTL_MAX_REQUEST + 1 - cl->inlen, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                cl->dead = true;
            break;
        }
        if (n == 0) { /* it closed its side: answer what came, then close */
            process_lines(cl, true);
            ev_io_stop(loop, &cl->rw);
            cl->closing = true;
            if (hy_ctl_pending(cl) == 0)
                cl->dead = true;
            break;
        }
        cl->inlen += (size_t)n;
        process_lines(cl, false);
        if (cl->inlen > HY_CTL_MAX_REQUEST) {
            hy_log(HY_WARN, COMP, "request too long: closing the connection", "uid", HY_U64(cl->uid), NULL);
            hy_ctl_send_error(cl, "request too long (over %u bytes)", HY_CTL_MAX_REQUEST);
            cl->inlen = 0;
            cl->closing = true;
            ev_io_stop(loop, &cl->rw);
            if (hy_ctl_pending(cl) == 0)
                cl->dead = true;
        }
    }
    if (cl->dead)
        client_free(cl);
}

/* Idle deadline, and the one place a client is freed from outside its
 * read callback (fed as an event when a write finished it). */
static void idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_ctl_client *cl = w->data;
    if (!cl->dead) /* the real deadline: no complete request (or unread replies) in time */
        hy_log(HY_DEBUG, COMP, "idle control connection closed", NULL);
    client_free(cl);
}

static void client_free(hy_ctl_client *cl)
{
    hy_ctl *c = cl->ctl;
    ev_io_stop(c->loop, &cl->rw);
    ev_io_stop(c->loop, &cl->ww);
    ev_timer_stop(c->loop, &cl->idle);
    ev_clear_pending(c->loop, &cl->idle);
    ev_clear_pending(c->loop, &cl->rw);
    ev_clear_pending(c->loop, &cl->ww);
    close(cl->fd);
    for (hy_ctl_client **pp = &c->clients; *pp; pp = &(*pp)->next)
        if (*pp == cl) {
            *pp = cl->next;
            break;
        }
    c->nclients--;
    bool tapped = cl->mode == CL_TAP;
    free(cl->out);
    free(cl->follow);
    free(cl->tap_bits);
    free(cl);
    if (tapped)
        hy_ctl_tap_recompute(c);
}

/* ---- accept ------------------------------------------------------------- */

static void refuse_now(int fd, const char *json_line)
{
    ssize_t w = send(fd, json_line, strlen(json_line), MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
    close(fd);
}

/* A client that can be closed to make room for a new one: it is not
 * streaming (tail -f, tap), has no request pending (not even part of one:
 * nothing unanswered in its input) and no reply unread. Such a client only
 * holds its slot; it would be closed at its idle deadline anyway. */
static bool evictable(const hy_ctl_client *cl)
{
    return cl->dead || (cl->mode == CL_REQUESTS && !cl->closing && !cl->paused && cl->inlen == 0 &&
                        hy_ctl_pending(cl) == 0);
}

/* The table is full: close the client idle the longest (a dead one first).
 * false: every client is busy. */
static bool make_room(hy_ctl *c)
{
    hy_ctl_client *victim = NULL;
    for (hy_ctl_client *cl = c->clients; cl; cl = cl->next) {
        if (!evictable(cl))
            continue;
        if (cl->dead) {
            victim = cl;
            break;
        }
        if (!victim || cl->last_active <= victim->last_active)
            victim = cl; /* the list is newest first: <= keeps the oldest of a tie */
    }
    if (!victim)
        return false;
    if (!victim->dead) {
        static const char bye[] = "{\"ok\":false,\"error\":\"closed: this connection was idle and every control "
                                  "connection was in use\"}\n";
        ssize_t w = send(victim->fd, bye, sizeof bye - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
        hy_log(HY_INFO, COMP, "idle control connection closed to make room for a new one", "uid", HY_U64(victim->uid),
               "pid", HY_U64(victim->pid), NULL);
    }
    client_free(victim);
    return true;
}

hy_ctl_client *hy_ctl_client_new(hy_ctl *c, int fd, unsigned uid, unsigned pid)
{
    struct ev_loop *loop = c->loop;
    hy_ctl_client *cl = calloc(1, sizeof *cl);
    if (!cl)
        return NULL;
    cl->ctl = c;
    cl->fd = fd;
    cl->uid = uid;
    cl->pid = pid;
    cl->follow_inst = -1;
    cl->last_active = ev_now(loop);
    ev_io_init(&cl->rw, read_cb, fd, EV_READ);
    ev_io_init(&cl->ww, hy_ctl_write_cb, fd, EV_WRITE);
    /* Answered first in a loop iteration that also carries frames. */
    ev_set_priority(&cl->rw, EV_MAXPRI);
    ev_set_priority(&cl->ww, EV_MAXPRI);
    ev_init(&cl->idle, idle_cb);
    cl->idle.repeat = HY_CTL_IDLE_S;
    cl->rw.data = cl->ww.data = cl->idle.data = cl;
    cl->next = c->clients;
    c->clients = cl;
    c->nclients++;
    ev_io_start(loop, &cl->rw);
    ev_timer_again(loop, &cl->idle);
    return cl;
}

static void on_accept(hy_acceptor *a, int fd)
{
    hy_ctl *c = a->data;
    struct ucred cred;
    socklen_t clen = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
        hy_log(HY_WARN, COMP, "cannot learn a control client's uid (SO_PEERCRED): refused", "error", strerror(errno),
               NULL);
        close(fd);
        return;
    }
    if (cred.uid != geteuid() && cred.uid != 0) {
        char line[256];
        c->refused++;
        hy_log(HY_WARN, COMP, "control connection refused: not hyphad's uid nor root", "uid", HY_U64(cred.uid), "pid",
               HY_I64(cred.pid), NULL);
        snprintf(line, sizeof line,
                 "{\"ok\":false,\"refused\":true,\"error\":\"permission denied: uid %u is not hyphad's uid (%u) nor "
                 "root\"}\n",
                 (unsigned)cred.uid, (unsigned)geteuid());
        refuse_now(fd, line);
        return;
    }
    if (c->nclients >= HY_CTL_MAX_CLIENTS && !make_room(c)) {
        char line[256];
        hy_log(HY_WARN, COMP, "control connection refused: every slot is busy", "max", HY_U64(HY_CTL_MAX_CLIENTS), "uid",
               HY_U64(cred.uid), "pid", HY_I64(cred.pid), NULL);
        snprintf(line, sizeof line,
                 "{\"ok\":false,\"refused\":true,\"busy\":true,\"error\":\"too many control connections (%u), "
                 "none of them idle: tail -f or tap sessions, or requests being answered\"}\n",
                 HY_CTL_MAX_CLIENTS);
        refuse_now(fd, line);
        return;
    }
    if (!hy_ctl_client_new(c, fd, (unsigned)cred.uid, (unsigned)cred.pid))
        refuse_now(fd, "{\"ok\":false,\"error\":\"out of memory\"}\n");
}

int hy_ctl_start(hy_ctl *c, hy_sup *s, hy_err *err)
{
    memset(c, 0, sizeof *c);
    c->sup = s;
    c->loop = hy_sup_relay(s)->bus.loop;
    const hy_topology *t = hy_sup_topology(s);
    /* Its directory: made 0700, or checked, before anything is put in it
     * (docs/control.md, "Who may connect"). */
    char dflt[256];
    hy_default_control_socket(dflt, sizeof dflt);
    if (hy_private_socket_dir(t->control_socket, strcmp(dflt, t->control_socket) == 0, "control socket", err) < 0)
        return -1;
    if (hy_acceptor_open_unix(&c->acc, c->loop, t->control_socket, "control socket", COMP, err) < 0)
        return -1;
    if (chmod(t->control_socket, t->control_mode) < 0) {
        hy_err_set(err, "control socket %s: chmod %04o: %s", t->control_socket, t->control_mode, strerror(errno));
        hy_acceptor_close(&c->acc);
        return -1;
    }
    c->acc.on_accept = on_accept;
    c->acc.data = c;
    c->acc.pause_s = 1.0;
    ev_set_priority(&c->acc.w, EV_MAXPRI);
    hy_acceptor_start(&c->acc);
    hy_sup_observers *o = hy_sup_observe(s);
    o->on_line = hy_ctl_on_line;
    o->line_ud = c;
    char mode[8];
    snprintf(mode, sizeof mode, "%04o", t->control_mode);
    hy_log(HY_INFO, COMP, "control socket ready", "socket", t->control_socket, "mode", mode, NULL);
    return 0;
}

void hy_ctl_stop(hy_ctl *c)
{
    if (!c->loop)
        return;
    while (c->clients)
        client_free(c->clients);
    hy_sup_observers *o = hy_sup_observe(c->sup);
    if (o->line_ud == c) {
        o->on_line = NULL;
        o->line_ud = NULL;
    }
    hy_bus_set_tap(&hy_sup_relay(c->sup)->bus, NULL, NULL, NULL);
    free(c->tap_bits);
    c->tap_bits = NULL;
    hy_acceptor_close(&c->acc);
    c->loop = NULL;
}
