/* topology_tls.c - the topology's `tls:` mappings (upstream.tls,
 * listen[].tls) and the rule that no TCP listen endpoint is reachable from
 * other hosts without TLS unless asked for (`insecure: true`). */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "hypha/tls.h"
#include "topology_int.h"

void hy_tls_spec_free(hy_tls_spec *s)
{
    if (!s)
        return;
    free(s->ca);
    free(s->cert);
    free(s->key);
    free(s->server_name);
    free(s->client_ca);
    free(s);
}

bool hy_host_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (strcmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

static int path_key(loader *L, const yaml_node_t *m, const char *ctx, const char *key, char **out)
{
    yaml_node_t *v = hy_ymap_get(&L->y, m, key);
    return v ? get_path(L, v, qual(L, ctx, key), out) : 0;
}

/* The files are read as hyphad will read them: an error names the file and
 * OpenSSL's reason, at the mapping's line and column. */
static int check_files(loader *L, const yaml_node_t *m, const char *ctx, const hy_tls_spec *s, bool server)
{
    hy_err e;
    hy_tls_ctx *c = hy_tls_ctx_new(s, server, &e);
    if (!c)
        return hy_yerr(&L->y, m, "%s: %s", ctx, e.msg);
    hy_tls_ctx_free(c);
    return 0;
}

/* `ctx` is "upstream.tls." or "listen.tls.": a client's keys are ca, cert,
 * key, server_name; a server's cert, key (both required) and client_ca. */
int hy_parse_tls(loader *L, const yaml_node_t *m, const char *ctx, bool server, hy_tls_spec **out)
{
    static const char *const client_keys[] = {"ca", "cert", "key", "server_name", "handshake_timeout", NULL};
    static const char *const server_keys[] = {"cert", "key", "client_ca", "handshake_timeout", NULL};
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)strlen(ctx) - 1, ctx);
    if (hy_yexpect_map(&L->y, m, name) < 0 || hy_ymap_check(&L->y, m, name, server ? server_keys : client_keys) < 0)
        return -1;
    hy_tls_spec *s = calloc(1, sizeof *s);
    if (!s)
        return oom(L, m);
    *out = s;
    s->handshake_timeout_ms = HY_TLS_HANDSHAKE_TIMEOUT_DEFAULT_MS;
    yaml_node_t *v;
    if ((v = hy_ymap_get(&L->y, m, "handshake_timeout"))) {
        if (hy_yget_duration(&L->y, v, qual(L, ctx, "handshake_timeout"), &s->handshake_timeout_ms) < 0)
            return -1;
        if (s->handshake_timeout_ms == 0)
            return hy_yerr(&L->y, v, "%shandshake_timeout must be more than 0s", ctx);
    }
    if (path_key(L, m, ctx, "cert", &s->cert) < 0 || path_key(L, m, ctx, "key", &s->key) < 0 ||
        path_key(L, m, ctx, "ca", &s->ca) < 0 || path_key(L, m, ctx, "client_ca", &s->client_ca) < 0)
        return -1;
    if ((v = hy_ymap_get(&L->y, m, "server_name"))) {
        const char *sn;
        if (hy_yget_str(&L->y, v, qual(L, ctx, "server_name"), &sn) < 0)
            return -1;
        if (!*sn || !(s->server_name = strdup(sn)))
            return *sn ? oom(L, v) : hy_yerr(&L->y, v, "%sserver_name must not be empty", ctx);
    }
    if (server && (!s->cert || !s->key))
        return hy_yerr(&L->y, m, "%s needs cert and key (the certificate this endpoint presents, and its key)", name);
    if (!s->cert != !s->key)
        return hy_yerr(&L->y, m, "%s: cert and key go together (a client certificate and its key)", name);
    return check_files(L, m, name, s, server);
}
