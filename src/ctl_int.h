/* ctl_int.h - the control plane's private parts: one client connection,
 * shared by control.c (accepting, reading requests, freeing), ctlcmd.c (the
 * commands) and ctlout.c (replies and streams); tests/fuzz/fuzz_control.c
 * serves a socketpair through it. Calls go down that list:
 * control.c -> ctlcmd.c -> ctlout.c. */
#ifndef HYPHA_CTL_INT_H
#define HYPHA_CTL_INT_H

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hypha/control.h"

typedef enum { CL_REQUESTS, CL_TAIL, CL_TAP } cl_mode;

typedef struct hy_ctl_client {
    hy_ctl *ctl;
    int fd;
    ev_io rw, ww;
    ev_timer idle;
    char in[HY_CTL_MAX_REQUEST + 1];
    size_t inlen;
    char *out;                   /* replies not yet written (owned) */
    size_t outlen, outoff, outcap;
    cl_mode mode;
    bool closing;                /* close once the output is written */
    bool paused;                 /* not reading: too much unread output */
    bool dead;                   /* to be freed at the next sweep */
    /* tail -f */
    char *follow;                /* worker name (owned) */
    int follow_inst;             /* -1: every instance */
    /* tap */
    uint8_t *tap_bits;           /* HY_CTL_TAP_BYTES (owned) */
    uint64_t tap_left;           /* frames still to send; 0 with tap_count: done */
    bool tap_count;
    uint64_t skipped;            /* stream lines skipped while it did not read */
    unsigned uid, pid;
    ev_tstamp last_active;       /* accepted, or its last request: the idlest goes first when the table is full */
    struct hy_ctl_client *next;
} hy_ctl_client;

/* ---- control.c: connections ------------------------------------------------ */

/* A client on a connected socket (its peer's uid and pid, checked by the
 * caller), reading requests; freed by control.c when it is done. NULL on
 * ENOMEM: fd stays the caller's. */
hy_ctl_client *hy_ctl_client_new(hy_ctl *c, int fd, unsigned uid, unsigned pid);

/* ---- ctlout.c: replies ------------------------------------------------------ */

static inline size_t hy_ctl_pending(const hy_ctl_client *cl) { return cl->outlen - cl->outoff; }
/* Append one line (text + '\n'). false on ENOMEM (the client is then closed). */
bool hy_ctl_append(hy_ctl_client *cl, const char *text, size_t len);
/* One reply line; takes the reference to j. */
void hy_ctl_send_json(hy_ctl_client *cl, json_t *j);
void hy_ctl_send_error(hy_ctl_client *cl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A line of a stream (tail -f, tap): skipped and counted while the client
 * has more than HY_CTL_MAX_PENDING unread. Takes the reference to j. */
void hy_ctl_stream_line(hy_ctl_client *cl, json_t *j);
/* Write what is pending; pauses or resumes its requests. */
void hy_ctl_client_write(hy_ctl_client *cl);
void hy_ctl_write_cb(struct ev_loop *loop, ev_io *w, int revents);

/* ---- ctlcmd.c: commands -------------------------------------------------------- */

/* One request line: parsed, answered. */
void hy_ctl_dispatch(hy_ctl_client *cl, const char *line, size_t len);
/* The bus's tap bits: the union of every tapping client's. */
void hy_ctl_tap_recompute(hy_ctl *c);
/* A worker's stderr line, for `tail -f` clients (a supervisor observer). */
void hy_ctl_on_line(void *ud, const char *worker, unsigned index, const char *line, size_t len);

#endif