/* ctlclient.h - hyphactl's side of the control socket: connect (within a
 * deadline, to a server whose uid is checked), send one request line, read
 * reply lines with a deadline that survives signals. Private to hyphactl;
 * hyphad's side is control.c. */
#ifndef HYPHA_CTLCLIENT_H
#define HYPHA_CTLCLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* hyphactl's exit codes (docs/control.md): they never overlap, so a probe
 * tells a typo (64, EX_USAGE) from an outage. `health` exits with its
 * verdict: 0 healthy, 1 degraded, 2 unhealthy, 3 unreachable. */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_UNREACHABLE = 3, EXIT_USAGE = 64 };

#define CONNECT_TIMEOUT_MS 5000
#define MAX_LINE (64u << 20)

typedef struct conn {
    int fd;
    const char *path;
    char *buf;
    size_t len, cap;
    size_t consumed; /* of buf: the line conn_line returned last, dropped at its next call */
} conn;

/* "cannot reach hyphad at PATH: WHAT: strerror(e)" on stderr; EXIT_UNREACHABLE. */
int unreachable(const char *path, const char *what, int e);
/* EXIT_OK, or what unreachable() returned (the reason printed). */
int conn_open(conn *c, const char *path);
/* 0, or -1 with errno. */
int conn_send(conn *c, json_t *req);
/* The next line (the connection's, valid until the next call), or NULL with
 * *why; timeout_ms < 0: no deadline. */
char *conn_line(conn *c, int timeout_ms, const char **why);
void conn_close(conn *c);
/* One request (taken) and its reply: EXIT_OK with *reply (ok true), else
 * the exit code, said on stderr unless conn_quiet. */
int conn_ask(const char *sock, json_t *req, json_t **reply, int timeout_ms);
/* Nothing is said on stderr (a caller polling through a restart). */
extern bool conn_quiet;

#endif
