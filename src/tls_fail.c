/* tls_fail.c - the names of hy_tls_fail (pure: no OpenSSL, so that what
 * only prints status never loads libssl). */
#include "hypha/tls_fail.h"

const char *hy_tls_fail_str(hy_tls_fail f)
{
    switch (f) {
    case HY_TLS_FAIL_UNTRUSTED: return "untrusted";
    case HY_TLS_FAIL_HOST_NAME: return "host-name";
    case HY_TLS_FAIL_EXPIRED: return "expired";
    case HY_TLS_FAIL_NOT_YET_VALID: return "not-yet-valid";
    case HY_TLS_FAIL_NO_CERTIFICATE: return "no-certificate";
    case HY_TLS_FAIL_NOT_TLS: return "not-tls";
    case HY_TLS_FAIL_TIMEOUT: return "timeout";
    case HY_TLS_FAIL_OTHER: return "other";
    case HY_TLS_FAIL__COUNT: break;
    }
    return "?";
}
