/* tls_fail.h - why a TLS handshake failed: the kinds counted in status and
 * metrics (tls.c classifies OpenSSL's errors into them). */
#ifndef HYPHA_TLS_FAIL_H
#define HYPHA_TLS_FAIL_H

#include <stdbool.h>

/* Why a handshake failed, for counters and metrics. */
typedef enum hy_tls_fail {
    HY_TLS_FAIL_UNTRUSTED,       /* not signed by a CA we trust (a wrong CA, self-signed) */
    HY_TLS_FAIL_HOST_NAME,       /* the certificate is not for that name */
    HY_TLS_FAIL_EXPIRED,
    HY_TLS_FAIL_NOT_YET_VALID,
    HY_TLS_FAIL_NO_CERTIFICATE,  /* a client sent none where one is required */
    HY_TLS_FAIL_NOT_TLS,         /* the peer does not speak TLS (plaintext to a TLS port) */
    HY_TLS_FAIL_TIMEOUT,         /* not done within the deadline */
    HY_TLS_FAIL_OTHER,           /* any other protocol error or a closed connection */
    HY_TLS_FAIL__COUNT
} hy_tls_fail;

/* "untrusted", "host-name", ...: for logs, status and metrics labels. */
const char *hy_tls_fail_str(hy_tls_fail f);
/* From a verify result (X509_V_*), an OpenSSL error code (ERR_get_error)
 * and whether no TLS message had come yet: which kind of failure it is. Pure. */
hy_tls_fail hy_tls_fail_classify(long verify_result, unsigned long err, bool before_hello);

#endif
