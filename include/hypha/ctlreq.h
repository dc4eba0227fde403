/* ctlreq.h - what a control client sends, before anything is done with it
 * (docs/control.md): request lines cut from its bytes, each parsed and its
 * arguments checked (command, NAME or NAME[i], tail's lines, tap's types and
 * count), and the reply to one that is refused. Pure: no loop, no socket,
 * no supervisor. ctlcmd.c runs what it yields; the unit tests and
 * tests/fuzz/fuzz_control.c call it directly.
 */
#ifndef HYPHA_CTLREQ_H
#define HYPHA_CTLREQ_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hypha/err.h"
#include "hypha/schema.h"

#define HY_CTL_TAP_BYTES 8192u             /* tap's bit set: one bit per type id */
#define HY_CTL_WHY_MAX (HY_ERR_MAX + 256u) /* a refusal's text, with the NUL */
#define HY_CTL_NAME_MAX 256u               /* a worker name in a selector, with the NUL */

typedef enum hy_ctl_cmd {
    HY_CTL_STATUS,
    HY_CTL_HEALTH,
    HY_CTL_RESTART,
    HY_CTL_STOP,
    HY_CTL_START,
    HY_CTL_RELOAD,
    HY_CTL_TAIL,
    HY_CTL_TAP,
    HY_CTL_METRICS,
    HY_CTL_SIGNAL,
    HY_CTL_UPGRADE,
} hy_ctl_cmd;

/* NAME: a worker ("risk", every instance), one instance ("risk[1]"), or
 * "all": every instance of every worker (base "all", index -1). */
typedef struct hy_ctl_sel {
    char base[HY_CTL_NAME_MAX]; /* the worker */
    long index;                 /* -1: every instance */
} hy_ctl_sel;

/* What a request's checks depend on besides its text. */
typedef struct hy_ctl_facts {
    const hy_schema *schema;    /* tap's types */
    bool streaming;             /* the connection is a tail -f or tap stream */
    bool shutting_down;         /* restart, stop and start are refused */
    bool can_reload;
    bool can_upgrade;
} hy_ctl_facts;

/* A request whose arguments passed their checks. */
typedef struct hy_ctl_req {
    hy_ctl_cmd cmd;
    const char *cmd_name;       /* as sent (inside json) */
    json_t *json;               /* the request (owned) */
    const char *name;           /* NAME as sent (inside json); NULL: none (status: every instance) */
    hy_ctl_sel sel;             /* NAME parsed, when there is one */
    bool table;                 /* status: rows of text */
    uint64_t lines;             /* tail: the last so many */
    bool follow;                /* tail -f */
    uint8_t *tap_bits;          /* tap: HY_CTL_TAP_BYTES, bit per type id (owned) */
    json_t *tap_names;          /* tap: the types' names, in the request's order (owned) */
    uint64_t tap_count;         /* tap: frames until it closes; 0: no end */
    int signal;                 /* signal: the signal number */
    const char *path;           /* upgrade: the new binary (inside json); NULL: the same */
    bool preload;               /* restart: a new fork server first (preload) */
} hy_ctl_req;

/* The next request line in buf[0, n): its length in *len (a trailing '\r'
 * left out; 0 for a blank line) and the bytes it takes, its '\n' included.
 * 0: no whole line yet. At eof what is left is the last line. */
size_t hy_ctl_next_line(const char *buf, size_t n, bool eof, size_t *len);

/* One request line, parsed and checked in the order docs/control.md's
 * errors come in. 0 with *req filled (free it with hy_ctl_req_free); -1
 * with the refusal's text in why (*req then holds nothing). */
int hy_ctl_req_parse(const char *line, size_t len, const hy_ctl_facts *f, hy_ctl_req *req, char *why,
                     size_t whylen);
void hy_ctl_req_free(hy_ctl_req *req);

/* NAME or NAME[i]: 0, or -1 with why. */
int hy_ctl_sel_parse(const char *name, hy_ctl_sel *sel, char *why, size_t whylen);

/* The reply to a refused request: {"ok":false,"error":msg}, a byte of msg
 * that is not in a valid UTF-8 sequence written as '?'. NULL on ENOMEM. */
json_t *hy_ctl_error_json(const char *msg);

#endif
