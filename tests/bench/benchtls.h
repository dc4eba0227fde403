/* benchtls.h - the server side of TLS for the relay benchmark programs
 * (relay_sink and relay_bus with --tls), with OpenSSL's libssl on their
 * blocking sockets.
 *
 * A connection is its socket and, over TLS, its SSL (NULL: plaintext):
 * bt_read and bt_write_all take both and treat a plaintext one as read(2)
 * and bu_write_all would. The server reads ahead (one read(2) takes as many
 * records as have arrived, up to 256 KiB), so it costs as few system calls
 * per byte as it can: it is what both relays under test write to, not what
 * is measured.
 */
#ifndef HYPHA_BENCHTLS_H
#define HYPHA_BENCHTLS_H

#include <stddef.h>
#include <sys/types.h>

struct ssl_ctx_st;
struct ssl_st;

/* A server context presenting cert and key (PEM files), TLS 1.2 or later,
 * a peer's EOF without close_notify taken as the end (hyphad does not send
 * one). Exits with OpenSSL's reason if the files do not load. */
struct ssl_ctx_st *bt_server(const char *cert, const char *key);

/* The server's TLS handshake on the accepted socket fd, blocking until it
 * is done: the connection, or NULL with the reason on stderr. */
struct ssl_st *bt_accept(struct ssl_ctx_st *ctx, int fd);

/* Like read(2) of the connection's plaintext: > 0 bytes, 0 at the end, -1
 * with errno (EPROTO: a TLS error, on stderr). */
ssize_t bt_read(struct ssl_st *ssl, int fd, void *buf, size_t n);

/* 1 if OpenSSL already holds bytes of the connection (a plaintext one: never):
 * read again before waiting for the socket, which may have nothing more;
 * also after bt_accept, which may have read the first records with the
 * handshake's last. */
int bt_pending(struct ssl_st *ssl);

/* All n bytes written to the connection; -1 on error (errno set). */
int bt_write_all(struct ssl_st *ssl, int fd, const void *p, size_t n);

/* What the handshake agreed, "TLSv1.3 TLS_AES_256_GCM_SHA384". */
void bt_describe(struct ssl_st *ssl, char *out, size_t len);

/* Frees the connection (its socket is the caller's to close); NULL: nothing. */
void bt_free(struct ssl_st *ssl);

#endif
