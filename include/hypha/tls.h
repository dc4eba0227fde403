/* tls.h - TLS on a TCP link, with OpenSSL's libssl (docs/tls.md).
 *
 * A context (hy_tls_ctx) is made from a topology's `tls:` mapping: TLS 1.2
 * or later, no renegotiation; a client verifies the server against `ca` (the
 * system store without one) and its name; a server presents `cert`/`key`
 * and, with `client_ca`, requires a client certificate signed by it. A
 * context is made again at every reload (the files are read again); a
 * connection keeps the context it started with (OpenSSL counts references).
 *
 * A connection (hy_tls) runs over a non-blocking socket on the event loop:
 * every call says what it waits for (`want`: EV_READ or EV_WRITE) instead of
 * blocking. Writes take a frame queue's bytes in place; a write OpenSSL could
 * not finish is made again with the same bytes (they stay at the queue's
 * front until written), so a frame is never split between two attempts.
 * Records go out through a 64 KiB buffer, several per write(2), flushed at
 * the end of every write call.
 * What the kernel still holds of the socket's bytes (SIOCOUTQ) is mapped
 * back to the plaintext written, so that a `keep` queue over TLS knows what
 * the peer took, as over plain TCP.
 */
#ifndef HYPHA_TLS_H
#define HYPHA_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "hypha/err.h"
#include "hypha/fanq.h"
#include "hypha/net.h"
#include "hypha/tls_fail.h"
#include "hypha/topology.h"

typedef struct hy_tls_ctx {
    struct ssl_ctx_st *ctx;
    bool server;
    bool mutual;                 /* a server that requires client certificates */
    time_t not_after;            /* its own certificate's end (0: it has none) */
    char subject[256];           /* its own certificate's subject ("" without one) */
} hy_tls_ctx;

/* NULL and err set on failure (naming the file and OpenSSL's reason). */
hy_tls_ctx *hy_tls_ctx_new(const hy_tls_spec *spec, bool server, hy_err *err);
void hy_tls_ctx_free(hy_tls_ctx *c);

typedef struct hy_tls_mark {
    uint64_t wire, plain;        /* bytes to the socket and plaintext bytes, at the end of a write */
} hy_tls_mark;

typedef struct hy_tls {
    struct ssl_st *ssl;          /* NULL: not in use */
    struct bio_st *wbuf;         /* records on their way to the socket (OpenSSL's BIO_f_buffer, owned by ssl) */
    bool server;
    bool open;                   /* the handshake is done */
    short want;                  /* EV_READ or EV_WRITE: what the last call that could not finish waits for */
    size_t retry_len;            /* a write OpenSSL must be given again, with these bytes */
    size_t unflushed;            /* hy_tls_write: bytes OpenSSL took, still in wbuf */
    uint64_t plain_written;      /* plaintext bytes written on this connection */
    uint64_t taken_plain;        /* of them, known taken by the peer */
    hy_tls_mark *marks;          /* ring: writes not yet known taken (owned) */
    size_t mcap, mfirst, mn;
    hy_tls_fail fail;            /* after a failed handshake */
    char reason[256];            /* OpenSSL's reason, after a failure */
    char peer[256];              /* the peer certificate's subject, once open ("" without one) */
    time_t peer_not_after;       /* the peer certificate's end (0 without one) */
} hy_tls;

/* Over the connected socket fd; a client checks `name` (a host name or an
 * IP address literal). -1 and err set if OpenSSL cannot start. */
int hy_tls_start(hy_tls *t, const hy_tls_ctx *c, int fd, const char *name, hy_err *err);
/* 1: done; 0: waiting for t->want; -1: failed (t->fail, t->reason). */
int hy_tls_handshake(hy_tls *t);
/* Like read(2): > 0 bytes, 0 at the end, -1 with errno (EAGAIN: waiting for
 * t->want; EPROTO: a TLS error, t->reason says which). */
ssize_t hy_tls_read(hy_tls *t, void *buf, size_t n);
/* Decrypted bytes already inside OpenSSL: read them without waiting. */
bool hy_tls_pending(const hy_tls *t);
/* Like write(2) of a buffer that stays put until all of it is written (a
 * handshake): > 0 bytes written, -1 with errno (EAGAIN: waiting for t->want). */
ssize_t hy_tls_write(hy_tls *t, const void *buf, size_t n);
/* Write what the queue holds until the socket would block (t->want says for
 * what). Records are gathered into writes of up to 64 KiB: DONE once all of
 * them are in the socket. */
hy_net_wr hy_tls_write_fanq(hy_tls *t, hy_fanq *q);
/* Records made but not yet in the socket (a write that returned AGAIN): write again. */
bool hy_tls_wpending(const hy_tls *t);
/* Of the plaintext written, bytes the kernel may still hold, given how many
 * bytes of the socket's it holds (SIOCOUTQ): the rest the peer took. */
uint64_t hy_tls_plain_unread(hy_tls *t, uint64_t wire_unread);
/* "TLSv1.3"... */
const char *hy_tls_version(const hy_tls *t);
/* Forget the connection (no close_notify: the socket is being closed). */
void hy_tls_end(hy_tls *t);

#endif
