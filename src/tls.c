/* tls.c - TLS contexts and non-blocking connections (see hypha/tls.h). */
#define _GNU_SOURCE
#include "hypha/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define WRITE_MAX (16u * 1024) /* one TLS record's plaintext */
/* Records gathered for one write(2), four records' worth: a write per record
 * cost a system call and a loopback packet per 16 KiB (docs/performance.md,
 * "TLS relay (issue #13)"). */
#define WBUF_SIZE (64u * 1024)

/* ---- why a handshake failed ------------------------------------------------ */

static hy_tls_fail classify_verify(long v)
{
    switch (v) {
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH: return HY_TLS_FAIL_HOST_NAME;
    case X509_V_ERR_CERT_HAS_EXPIRED: return HY_TLS_FAIL_EXPIRED;
    case X509_V_ERR_CERT_NOT_YET_VALID: return HY_TLS_FAIL_NOT_YET_VALID;
    default: return HY_TLS_FAIL_UNTRUSTED;
    }
}

hy_tls_fail hy_tls_fail_classify(long verify_result, unsigned long err, bool before_hello)
{
    if (verify_result != X509_V_OK)
        return classify_verify(verify_result);
    if (ERR_GET_LIB(err) != ERR_LIB_SSL)
        return HY_TLS_FAIL_OTHER;
    switch (ERR_GET_REASON(err)) {
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED: return HY_TLS_FAIL_NO_CERTIFICATE;
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_UNKNOWN_PROTOCOL:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH: return HY_TLS_FAIL_NOT_TLS;
    case SSL_R_UNEXPECTED_MESSAGE: /* a first record that is no handshake: something else spoke first */
        return before_hello ? HY_TLS_FAIL_NOT_TLS : HY_TLS_FAIL_OTHER;
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED: return HY_TLS_FAIL_EXPIRED;
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_CERTIFICATE_VERIFY_FAILED: return HY_TLS_FAIL_UNTRUSTED;
    default: return HY_TLS_FAIL_OTHER;
    }
}

/* OpenSSL's reason for the last failure (its first error), the error
 * queue emptied: the next failure starts clean. */
static void ssl_reason(char *out, size_t len, unsigned long *first)
{
    unsigned long e = ERR_get_error();
    *first = e;
    ERR_clear_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r)
        snprintf(out, len, "%s", r);
    else if (e)
        ERR_error_string_n(e, out, len);
    else
        snprintf(out, len, "%s", errno ? strerror(errno) : "connection closed");
}

/* ---- contexts ----------------------------------------------------------------- */

static time_t asn1_time(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return timegm(&tm);
}

static int ctx_fail(hy_tls_ctx *c, hy_err *err, const char *what, const char *path)
{
    char why[256];
    unsigned long first;
    ssl_reason(why, sizeof why, &first);
    hy_err_set(err, "%s %s: %s", what, path ? path : "", why);
    hy_tls_ctx_free(c);
    return -1;
}

/* Its own certificate chain and key, checked to match. */
static int load_own(hy_tls_ctx *c, const hy_tls_spec *s, hy_err *err)
{
    if (SSL_CTX_use_certificate_chain_file(c->ctx, s->cert) != 1)
        return ctx_fail(c, err, "tls.cert", s->cert);
    if (SSL_CTX_use_PrivateKey_file(c->ctx, s->key, SSL_FILETYPE_PEM) != 1)
        return ctx_fail(c, err, "tls.key", s->key);
    if (SSL_CTX_check_private_key(c->ctx) != 1)
        return ctx_fail(c, err, "tls.key does not match tls.cert:", s->key);
    X509 *x = SSL_CTX_get0_certificate(c->ctx);
    c->not_after = asn1_time(X509_get0_notAfter(x));
    X509_NAME_oneline(X509_get_subject_name(x), c->subject, sizeof c->subject);
    return 0;
}

static int load_trust(hy_tls_ctx *c, const hy_tls_spec *s, hy_err *err)
{
    if (c->server) {
        if (!s->client_ca)
            return 0;
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(s->client_ca);
        if (!names || SSL_CTX_load_verify_locations(c->ctx, s->client_ca, NULL) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            return ctx_fail(c, err, "tls.client_ca", s->client_ca);
        }
        SSL_CTX_set_client_CA_list(c->ctx, names);
        c->mutual = true;
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        return 0;
    }
    if (s->ca ? SSL_CTX_load_verify_locations(c->ctx, s->ca, NULL) != 1 : SSL_CTX_set_default_verify_paths(c->ctx) != 1)
        return ctx_fail(c, err, "tls.ca", s->ca ? s->ca : "(the system store)");
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    return 0;
}

hy_tls_ctx *hy_tls_ctx_new(const hy_tls_spec *s, bool server, hy_err *err)
{
    hy_tls_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        hy_err_set(err, "out of memory");
        return NULL;
    }
    c->server = server;
    if (!(c->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()))) {
        ctx_fail(c, err, "tls", "context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(c->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(c->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if ((s->cert || server) && load_own(c, s, err) < 0)
        return NULL;
    if (load_trust(c, s, err) < 0)
        return NULL;
    return c;
}

void hy_tls_ctx_free(hy_tls_ctx *c)
{
    if (!c)
        return;
    SSL_CTX_free(c->ctx); /* connections made from it keep their own reference */
    free(c);
}

/* ---- a connection -------------------------------------------------------------- */

static int name_check(SSL *ssl, const char *name)
{
    unsigned char addr[16];
    if (inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1)
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1 ? 0 : -1;
    /* a name: checked in the certificate, and sent as SNI */
    return SSL_set1_host(ssl, name) == 1 && SSL_set_tlsext_host_name(ssl, name) == 1 ? 0 : -1;
}

int hy_tls_start(hy_tls *t, const hy_tls_ctx *c, int fd, const char *name, hy_err *err)
{
    memset(t, 0, sizeof *t);
    t->server = c->server;
    BIO *sock = NULL;
    if (!(t->ssl = SSL_new(c->ctx)) || !(sock = BIO_new_socket(fd, BIO_NOCLOSE)) ||
        !(t->wbuf = BIO_new(BIO_f_buffer())) || BIO_set_write_buffer_size(t->wbuf, WBUF_SIZE) != 1 ||
        (!c->server && name && name_check(t->ssl, name) < 0)) {
        BIO_free(sock);
        BIO_free(t->wbuf);
        t->wbuf = NULL;
        char why[256];
        unsigned long first;
        ssl_reason(why, sizeof why, &first);
        hy_tls_end(t);
        return hy_err_set(err, "tls: %s", why);
    }
    /* Records go to the socket through wbuf, flushed at the end of every
     * write; they are read from the socket directly. rbio and wbio each
     * hold a reference to the socket's BIO. */
    BIO_up_ref(sock);
    SSL_set0_rbio(t->ssl, sock);
    SSL_set0_wbio(t->ssl, BIO_push(t->wbuf, sock));
    if (c->server)
        SSL_set_accept_state(t->ssl);
    else
        SSL_set_connect_state(t->ssl);
    return 0;
}

/* The call could not finish: 1 if it only waits (t->want set), 0 if it failed. */
static int waits(hy_tls *t, int rc)
{
    switch (SSL_get_error(t->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        t->want = EV_READ;
        return 1;
    case SSL_ERROR_WANT_WRITE:
        t->want = EV_WRITE;
        return 1;
    default:
        return 0;
    }
}

static void peer_facts(hy_tls *t)
{
    X509 *x = SSL_get1_peer_certificate(t->ssl);
    if (!x)
        return;
    X509_NAME_oneline(X509_get_subject_name(x), t->peer, sizeof t->peer);
    t->peer_not_after = asn1_time(X509_get0_notAfter(x));
    X509_free(x);
}

int hy_tls_handshake(hy_tls *t)
{
    errno = 0;
    int rc = SSL_do_handshake(t->ssl);
    if (rc == 1) {
        t->open = true;
        peer_facts(t);
        return 1;
    }
    if (waits(t, rc))
        return 0;
    unsigned long first;
    long v = SSL_get_verify_result(t->ssl);
    ssl_reason(t->reason, sizeof t->reason, &first);
    t->fail = hy_tls_fail_classify(v, first, SSL_get_state(t->ssl) == TLS_ST_BEFORE);
    if (v != X509_V_OK) /* the certificate's fault: say how, in X509's words */
        snprintf(t->reason, sizeof t->reason, "certificate verify failed: %s", X509_verify_cert_error_string(v));
    return -1;
}

ssize_t hy_tls_read(hy_tls *t, void *buf, size_t n)
{
    size_t got = 0;
    errno = 0;
    int rc = SSL_read_ex(t->ssl, buf, n, &got);
    if (rc == 1)
        return (ssize_t)got;
    int e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    if (waits(t, rc)) {
        errno = EAGAIN;
        return -1;
    }
    unsigned long first;
    ssl_reason(t->reason, sizeof t->reason, &first);
    if (e == SSL_ERROR_SYSCALL && errno == 0 && first == 0)
        return 0; /* closed without close_notify */
    errno = e == SSL_ERROR_SYSCALL && errno ? errno : EPROTO;
    return -1;
}

bool hy_tls_pending(const hy_tls *t) { return t->ssl && SSL_pending(t->ssl) > 0; }

/* A write OpenSSL took whole: where it ends in plaintext and on the wire
 * (the records made: those in wbuf reach the socket next, in order). */
static void mark(hy_tls *t, size_t n)
{
    t->plain_written += n;
    uint64_t wire = BIO_number_written(SSL_get_wbio(t->ssl));
    if (t->mn && t->marks[(t->mfirst + t->mn - 1) % t->mcap].wire == wire) {
        t->marks[(t->mfirst + t->mn - 1) % t->mcap].plain = t->plain_written;
        return;
    }
    if (t->mn == t->mcap) {
        size_t cap = t->mcap ? t->mcap * 2 : 64;
        hy_tls_mark *m = malloc(cap * sizeof *m);
        if (!m) { /* the oldest mark goes: what it covered counts as unread a little longer */
            t->mfirst = (t->mfirst + 1) % t->mcap;
            t->mn--;
        } else {
            for (size_t i = 0; i < t->mn; i++)
                m[i] = t->marks[(t->mfirst + i) % t->mcap];
            free(t->marks);
            t->marks = m;
            t->mcap = cap;
            t->mfirst = 0;
        }
    }
    t->marks[(t->mfirst + t->mn) % t->mcap] = (hy_tls_mark){wire, t->plain_written};
    t->mn++;
}

/* The next bytes to write: the first segment if it is a record's worth,
 * else up to a record's worth gathered into stage. Given again whole after
 * a write that could not finish (OpenSSL's rule). */
static size_t next_write(hy_tls *t, const hy_fanq *q, uint8_t *stage, const uint8_t **p)
{
    struct iovec iov[16];
    int k = hy_fanq_iov(q, iov, 16);
    size_t want = t->retry_len ? t->retry_len : WRITE_MAX;
    if (iov[0].iov_len >= want) {
        *p = iov[0].iov_base;
        return want;
    }
    size_t len = 0;
    for (int i = 0; i < k && len < want; i++) {
        size_t m = iov[i].iov_len < want - len ? iov[i].iov_len : want - len;
        memcpy(stage + len, iov[i].iov_base, m);
        len += m;
    }
    *p = stage;
    return len;
}

/* A write that could not finish: 1 if it only waits (retry with the same bytes). */
static int write_failed(hy_tls *t, int rc, size_t len)
{
    if (waits(t, rc)) {
        t->retry_len = len;
        return 1;
    }
    unsigned long first;
    ssl_reason(t->reason, sizeof t->reason, &first);
    if (!errno)
        errno = EPROTO;
    return 0;
}

/* The records wbuf holds, out to the socket: 0 once it is empty; -1 if the
 * socket is full (errno EAGAIN, t->want EV_WRITE) or failed. */
static int flush(hy_tls *t)
{
    if (BIO_wpending(t->wbuf) == 0)
        return 0;
    errno = 0;
    if (BIO_flush(t->wbuf) == 1)
        return 0;
    if (BIO_should_retry(t->wbuf)) {
        t->want = EV_WRITE;
        errno = EAGAIN;
        return -1;
    }
    snprintf(t->reason, sizeof t->reason, "%s", errno ? strerror(errno) : "write failed");
    if (!errno)
        errno = EPIPE;
    return -1;
}

bool hy_tls_wpending(const hy_tls *t) { return t->ssl && BIO_wpending(t->wbuf) > 0; }

ssize_t hy_tls_write(hy_tls *t, const void *buf, size_t n)
{
    size_t done = 0;
    errno = 0;
    if (!t->unflushed) {
        int rc = SSL_write_ex(t->ssl, buf, t->retry_len ? t->retry_len : n, &done);
        if (rc != 1) {
            if (write_failed(t, rc, t->retry_len ? t->retry_len : n))
                errno = EAGAIN;
            return -1;
        }
        t->retry_len = 0;
        mark(t, done);
        t->unflushed = done;
    }
    if (flush(t) < 0) /* given again, the bytes are not written twice: OpenSSL has them */
        return -1;
    done = t->unflushed;
    t->unflushed = 0;
    return (ssize_t)done;
}

hy_net_wr hy_tls_write_fanq(hy_tls *t, hy_fanq *q)
{
    uint8_t stage[WRITE_MAX];
    if (flush(t) < 0)
        return errno == EAGAIN ? HY_NET_WR_AGAIN : HY_NET_WR_ERROR;
    while (hy_fanq_pending(q) > 0) {
        const uint8_t *p;
        size_t len = next_write(t, q, stage, &p), done = 0;
        errno = 0;
        int rc = SSL_write_ex(t->ssl, p, len, &done);
        if (rc == 1) {
            t->retry_len = 0;
            mark(t, done);
            hy_fanq_consume(q, done);
            continue;
        }
        return write_failed(t, rc, len) ? HY_NET_WR_AGAIN : HY_NET_WR_ERROR;
    }
    if (flush(t) < 0)
        return errno == EAGAIN ? HY_NET_WR_AGAIN : HY_NET_WR_ERROR;
    return HY_NET_WR_DONE;
}

uint64_t hy_tls_plain_unread(hy_tls *t, uint64_t wire_unread)
{
    uint64_t wire = BIO_number_written(SSL_get_rbio(t->ssl)); /* the socket's: what the kernel got */
    uint64_t taken = wire_unread < wire ? wire - wire_unread : 0;
    while (t->mn && t->marks[t->mfirst].wire <= taken) {
        t->taken_plain = t->marks[t->mfirst].plain;
        t->mfirst = (t->mfirst + 1) % t->mcap;
        t->mn--;
    }
    return t->plain_written - t->taken_plain;
}

const char *hy_tls_version(const hy_tls *t) { return t->ssl ? SSL_get_version(t->ssl) : ""; }

void hy_tls_end(hy_tls *t)
{
    if (t->ssl)
        SSL_free(t->ssl);
    free(t->marks);
    t->ssl = NULL;
    t->wbuf = NULL; /* freed with it */
    t->marks = NULL;
    t->mcap = t->mn = t->mfirst = 0;
    t->open = false;
}
