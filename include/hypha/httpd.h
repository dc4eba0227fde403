/* httpd.h - the metrics endpoint (`metrics: {listen: HOST:PORT}`): a
 * listening TCP socket; each connection gets one answer and is closed.
 * Requests are read up to 8 KiB (then 431) and 2 s; 16 connections at once,
 * the oldest not being answered making room for a new one. */
#ifndef HYPHA_HTTPD_H
#define HYPHA_HTTPD_H

#include <ev.h>
#include <stddef.h>

#include "hypha/err.h"
#include "hypha/net.h"

struct hy_sup;

typedef struct hy_metrics_http {
    struct hy_sup *sup;
    struct ev_loop *loop;
    hy_acceptor acc;
    struct hy_http_conn *conns;  /* owned list */
    size_t nconns;
    char name[96];
} hy_metrics_http;

int hy_metrics_http_start(hy_metrics_http *h, struct hy_sup *s, hy_err *err);
void hy_metrics_http_stop(hy_metrics_http *h);

#endif
