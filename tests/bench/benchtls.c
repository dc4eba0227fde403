/* benchtls.c - TLS servers for the relay benchmark programs; see benchtls.h. */
#define _GNU_SOURCE
#include "benchtls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "benchutil.h"

#define READ_AHEAD (256u * 1024)

static void ssl_errors(const char *what)
{
    fprintf(stderr, "%s: ", what);
    ERR_print_errors_fp(stderr);
    fputc('\n', stderr);
}

SSL_CTX *bt_server(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        ssl_errors("benchtls: the server's certificate and key");
        exit(1);
    }
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, READ_AHEAD);
    return ctx;
}

SSL *bt_accept(SSL_CTX *ctx, int fd)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1 || SSL_accept(ssl) != 1) {
        ssl_errors("benchtls: TLS handshake");
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

ssize_t bt_read(SSL *ssl, int fd, void *buf, size_t n)
{
    if (!ssl)
        return bu_read(fd, buf, n);
    size_t got;
    errno = 0;
    int rc = SSL_read_ex(ssl, buf, n, &got);
    if (rc == 1)
        return (ssize_t)got;
    int e = SSL_get_error(ssl, rc);
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    if (e != SSL_ERROR_SYSCALL || !errno) {
        ssl_errors("benchtls: read");
        errno = EPROTO;
    }
    return -1;
}

int bt_pending(SSL *ssl) { return ssl && SSL_has_pending(ssl); }

int bt_write_all(SSL *ssl, int fd, const void *p, size_t n)
{
    if (!ssl)
        return bu_write_all(fd, p, n);
    size_t done;
    errno = 0;
    if (SSL_write_ex(ssl, p, n, &done) == 1) /* blocking, no partial writes: all of it */
        return 0;
    ssl_errors("benchtls: write");
    if (!errno)
        errno = EPROTO;
    return -1;
}

void bt_describe(SSL *ssl, char *out, size_t len)
{
    snprintf(out, len, "%s %s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
}

void bt_free(SSL *ssl) { SSL_free(ssl); }
