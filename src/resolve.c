/* resolve.c - getaddrinfo in a thread, answered on the loop (see
 * hypha/resolve.h). */
#define _GNU_SOURCE
#include "hypha/resolve.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct hy_resolve {
    struct ev_loop *loop;
    ev_async done_w;             /* the thread's answer has come */
    hy_resolve_cb cb;
    void *ud;
    char *host;                  /* owned */
    char port[8];
    pthread_mutex_t mu;          /* guards what follows */
    int refs;                    /* the loop's and the thread's */
    bool abandoned;              /* cancelled: the answer goes nowhere */
    struct addrinfo *ai;         /* the answer, until the loop takes it */
    int gai, sys;
};

/* Drop one of the two references; the last one frees the request. */
static void release(hy_resolve *r)
{
    pthread_mutex_lock(&r->mu);
    bool last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (!last)
        return;
    if (r->ai)
        freeaddrinfo(r->ai);
    pthread_mutex_destroy(&r->mu);
    free(r->host);
    free(r);
}

static void *run(void *arg)
{
    hy_resolve *r = arg;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(r->host, r->port, &hints, &ai);
    int sys = errno;
    pthread_mutex_lock(&r->mu);
    r->ai = gai == 0 ? ai : NULL;
    r->gai = gai;
    r->sys = sys;
    if (!r->abandoned)
        ev_async_send(r->loop, &r->done_w);
    pthread_mutex_unlock(&r->mu);
    release(r);
    return NULL;
}

static void done_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)revents;
    hy_resolve *r = w->data;
    ev_async_stop(loop, w);
    pthread_mutex_lock(&r->mu);
    struct addrinfo *ai = r->ai;
    r->ai = NULL;
    int gai = r->gai, sys = r->sys;
    pthread_mutex_unlock(&r->mu);
    hy_resolve_cb cb = r->cb;
    void *ud = r->ud;
    release(r); /* before the callback: it may start another request */
    cb(ud, ai, gai, sys);
}

/* A thread that blocks every signal: they are the loop's to handle. */
static int spawn_thread(hy_resolve *r)
{
    pthread_attr_t attr;
    sigset_t all, old;
    pthread_t t;
    if (pthread_attr_init(&attr) != 0)
        return -1;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&t, &attr, run, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        errno = rc;
    return rc == 0 ? 0 : -1;
}

hy_resolve *hy_resolve_start(struct ev_loop *loop, const char *host, uint16_t port, hy_resolve_cb cb, void *ud)
{
    hy_resolve *r = calloc(1, sizeof *r);
    if (!r || !(r->host = strdup(host))) {
        free(r);
        errno = ENOMEM;
        return NULL;
    }
    r->loop = loop;
    r->cb = cb;
    r->ud = ud;
    r->refs = 2;
    snprintf(r->port, sizeof r->port, "%u", port);
    pthread_mutex_init(&r->mu, NULL);
    ev_async_init(&r->done_w, done_cb);
    r->done_w.data = r;
    ev_async_start(loop, &r->done_w);
    if (spawn_thread(r) < 0) {
        int e = errno;
        ev_async_stop(loop, &r->done_w);
        r->refs = 1;
        release(r);
        errno = e;
        return NULL;
    }
    return r;
}

void hy_resolve_cancel(hy_resolve *r)
{
    pthread_mutex_lock(&r->mu);
    r->abandoned = true; /* from now on the thread sends nothing */
    pthread_mutex_unlock(&r->mu);
    ev_async_stop(r->loop, &r->done_w); /* and what it sent before is forgotten */
    release(r);
}
