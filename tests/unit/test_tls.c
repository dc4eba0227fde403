/* test_tls.c - the pure parts of TLS: why a handshake failed, and which
 * hosts only this machine can reach. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "hypha/tls.h"

static unsigned long ssl_err(int reason) { return ERR_PACK(ERR_LIB_SSL, 0, reason); }

static void test_verify_results(void **state)
{
    (void)state;
    assert_int_equal(hy_tls_fail_classify(X509_V_ERR_HOSTNAME_MISMATCH, 0, false), HY_TLS_FAIL_HOST_NAME);
    assert_int_equal(hy_tls_fail_classify(X509_V_ERR_IP_ADDRESS_MISMATCH, 0, false), HY_TLS_FAIL_HOST_NAME);
    assert_int_equal(hy_tls_fail_classify(X509_V_ERR_CERT_HAS_EXPIRED, 0, false), HY_TLS_FAIL_EXPIRED);
    assert_int_equal(hy_tls_fail_classify(X509_V_ERR_CERT_NOT_YET_VALID, 0, false), HY_TLS_FAIL_NOT_YET_VALID);
    assert_int_equal(hy_tls_fail_classify(X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, 0, false),
                     HY_TLS_FAIL_UNTRUSTED);
    assert_int_equal(hy_tls_fail_classify(X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, 0, false), HY_TLS_FAIL_UNTRUSTED);
    /* the verify result wins over the error it caused */
    assert_int_equal(hy_tls_fail_classify(X509_V_ERR_CERT_HAS_EXPIRED, ssl_err(SSL_R_CERTIFICATE_VERIFY_FAILED),
                                          false),
                     HY_TLS_FAIL_EXPIRED);
}

static void test_ssl_errors(void **state)
{
    (void)state;
    assert_int_equal(hy_tls_fail_classify(X509_V_OK, ssl_err(SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE), false),
                     HY_TLS_FAIL_NO_CERTIFICATE);
    assert_int_equal(hy_tls_fail_classify(X509_V_OK, ssl_err(SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED), false),
                     HY_TLS_FAIL_NO_CERTIFICATE);
    assert_int_equal(hy_tls_fail_classify(X509_V_OK, ssl_err(SSL_R_HTTP_REQUEST), false), HY_TLS_FAIL_NOT_TLS);
    assert_int_equal(hy_tls_fail_classify(X509_V_OK, ssl_err(SSL_R_WRONG_VERSION_NUMBER), false),
                     HY_TLS_FAIL_NOT_TLS);
    assert_int_equal(hy_tls_fail_classify(X509_V_OK, ssl_err(SSL_R_TLSV1_ALERT_UNKNOWN_CA), false),
                     HY_TLS_FAIL_UNTRUSTED);
    assert_int_equal(hy_tls_fail_classify(X509_V_OK, ssl_err(SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED), false),
                     HY_TLS_FAIL_EXPIRED);
    /* an unexpected first record is someone speaking something else; later, a protocol error */
    assert_int_equal(hy_tls_fail_classify(X509_V_OK, ssl_err(SSL_R_UNEXPECTED_MESSAGE), true), HY_TLS_FAIL_NOT_TLS);
    assert_int_equal(hy_tls_fail_classify(X509_V_OK, ssl_err(SSL_R_UNEXPECTED_MESSAGE), false), HY_TLS_FAIL_OTHER);
    assert_int_equal(hy_tls_fail_classify(X509_V_OK, 0, false), HY_TLS_FAIL_OTHER); /* closed */
    assert_int_equal(hy_tls_fail_classify(X509_V_OK, ERR_PACK(ERR_LIB_SYS, 0, 1), false), HY_TLS_FAIL_OTHER);
}

static void test_names(void **state)
{
    (void)state;
    const char *want[] = {"untrusted",  "host-name", "expired", "not-yet-valid", "no-certificate",
                          "not-tls", "timeout",   "other"};
    for (int i = 0; i < HY_TLS_FAIL__COUNT; i++)
        assert_string_equal(hy_tls_fail_str((hy_tls_fail)i), want[i]);
}

static void test_loopback(void **state)
{
    (void)state;
    const char *local[] = {"127.0.0.1", "127.1.2.3", "::1", "localhost"};
    const char *reachable[] = {"0.0.0.0", "10.0.0.1", "::", "192.168.1.2", "128.0.0.1", "example.com", "::ffff:127.0.0.1"};
    for (size_t i = 0; i < sizeof local / sizeof *local; i++)
        assert_true(hy_host_is_loopback(local[i]));
    for (size_t i = 0; i < sizeof reachable / sizeof *reachable; i++)
        assert_false(hy_host_is_loopback(reachable[i]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verify_results),
        cmocka_unit_test(test_ssl_errors),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_loopback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
