/* ctlout.c - a control client's replies: one line each, appended to its
 * output buffer and written without ever blocking the loop; streams
 * (`tail -f`, `tap`) skip and count lines while the client does not read. */
#define _GNU_SOURCE
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
#include "hypha/ctlreq.h"

/* ---- output ------------------------------------------------------------- */


/* Append one line (text + '\n'). Returns false on ENOMEM (the client is then
 * closed: a reply cannot be half sent). */
bool hy_ctl_append(hy_ctl_client *cl, const char *text, size_t len)
{
    if (cl->outoff && cl->outoff == cl->outlen)
        cl->outoff = cl->outlen = 0;
    if (cl->outlen + len + 1 > cl->outcap) {
        if (cl->outoff) { /* reclaim what was written */
            memmove(cl->out, cl->out + cl->outoff, cl->outlen - cl->outoff);
            cl->outlen -= cl->outoff;
            cl->outoff = 0;
        }
        size_t cap = cl->outcap ? cl->outcap : 4096;
        while (cap < cl->outlen + len + 1)
            cap *= 2;
        if (cap != cl->outcap) {
            char *p = realloc(cl->out, cap);
            if (!p) {
                cl->closing = true;
                cl->dead = true;
                return false;
            }
            cl->out = p;
            cl->outcap = cap;
        }
    }
    memcpy(cl->out + cl->outlen, text, len);
    cl->outlen += len;
    cl->out[cl->outlen++] = '\n';
    return true;
}

/* Takes the reference to j. */
void hy_ctl_send_json(hy_ctl_client *cl, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
    json_decref(j);
    if (!text) {
        static const char oom[] = "{\"ok\":false,\"error\":\"out of memory\"}";
        hy_ctl_append(cl, oom, sizeof oom - 1);
    } else {
        hy_ctl_append(cl, text, strlen(text));
        free(text);
    }
    hy_ctl_client_write(cl);
}

void hy_ctl_send_error(hy_ctl_client *cl, const char *fmt, ...)
{
    char msg[HY_CTL_WHY_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    hy_ctl_send_json(cl, hy_ctl_error_json(msg));
}

/* A line of a stream (tail -f, tap): skipped and counted while the client
 * has more than HY_CTL_MAX_PENDING unread. */
void hy_ctl_stream_line(hy_ctl_client *cl, json_t *j)
{
    if (cl->dead || cl->closing) {
        json_decref(j);
        return;
    }
    if (hy_ctl_pending(cl) > HY_CTL_MAX_PENDING) {
        cl->skipped++;
        json_decref(j);
        return;
    }
    if (cl->skipped) {
        char note[64];
        int n = snprintf(note, sizeof note, "{\"skipped\":%" PRIu64 "}", cl->skipped);
        cl->skipped = 0;
        hy_ctl_append(cl, note, (size_t)n);
    }
    hy_ctl_send_json(cl, j);
}

void hy_ctl_client_write(hy_ctl_client *cl)
{
    hy_ctl *c = cl->ctl;
    while (hy_ctl_pending(cl) > 0) {
        ssize_t n = send(cl->fd, cl->out + cl->outoff, hy_ctl_pending(cl), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                ev_io_start(c->loop, &cl->ww);
                break;
            }
            cl->dead = true; /* EPIPE, ECONNRESET: it went away */
            break;
        }
        cl->outoff += (size_t)n;
    }
    if (hy_ctl_pending(cl) == 0) {
        ev_io_stop(c->loop, &cl->ww);
        if (cl->closing)
            cl->dead = true;
    }
    /* Its requests are read again once it has read most of its replies. */
    bool over = hy_ctl_pending(cl) > HY_CTL_MAX_PENDING;
    if (cl->mode == CL_REQUESTS && !cl->dead && !cl->closing && over != cl->paused) {
        cl->paused = over;
        if (over) {
            ev_io_stop(c->loop, &cl->rw);
        } else {
            ev_io_start(c->loop, &cl->rw);
            ev_feed_event(c->loop, &cl->rw, EV_READ); /* requests it sent meanwhile wait in cl->in */
        }
    }
    /* A stream that skipped lines says so as soon as it has caught up, not
     * only when the next line comes (there may be none for a long time). */
    if (cl->skipped && cl->mode != CL_REQUESTS && !cl->dead && !cl->closing && hy_ctl_pending(cl) <= HY_CTL_MAX_PENDING) {
        char note[64];
        int n = snprintf(note, sizeof note, "{\"skipped\":%" PRIu64 "}", cl->skipped);
        cl->skipped = 0;
        if (hy_ctl_append(cl, note, (size_t)n)) {
            hy_ctl_client_write(cl); /* once: skipped is 0 now */
            return;
        }
    }
    if (cl->dead)
        ev_feed_event(c->loop, &cl->idle, EV_TIMER); /* freed from its own callback */
}

void hy_ctl_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_ctl_client_write(w->data);
}
