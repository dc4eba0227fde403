/* topology.c - topology file loader (see hypha/topology.h).
 *
 * One pass over the YAML document: every mapping's keys are checked against
 * the keys it may hold, every value is parsed into its resolved form, and the
 * first problem stops the load with `file:line:col: message`. This file owns
 * the root document (version, schema), the endpoints and the top-level keys
 * upstream, listen, control and metrics, loading and freeing; `defaults` and
 * `workers` are topology_worker.c's (see topology_int.h).
 */
#include "hypha/topology.h"
#include "hypha/ctlpath.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "fsutil.h"
#include "hypha/listen_hs.h"
#include "hypha/units.h"
#include "topology_int.h"

/* ---- freeing ---------------------------------------------------------- */

void hy_strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

static void free_endpoint(hy_endpoint *ep)
{
    free(ep->path);
    free(ep->host);
}

void hy_topology_free(hy_topology *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nworkers; i++) {
        hy_worker_spec *w = &t->workers[i];
        free(w->name);
        hy_strv_free(w->argv);
        free(w->exec_path);
        free(w->cwd);
        hy_strv_free(w->env);
        hy_worker_proc_free(&w->proc);
        free(w->subscribe);
        free(w->publish);
        hy_strv_free(w->env_files);
        hy_strv_free(w->after);
        hy_strv_free(w->preload);
    }
    free(t->workers);
    for (size_t i = 0; i < t->nlisten; i++) {
        free_endpoint(&t->listen[i].ep);
        hy_tls_spec_free(t->listen[i].tls);
    }
    hy_tls_spec_free(t->upstream_tls);
    free_endpoint(&t->metrics);
    free(t->listen);
    free_endpoint(&t->upstream);
    free(t->control_socket);
    free(t->cgroup_path);
    hy_schema_free(t->schema);
    free(t->schema_path);
    free(t->dir);
    free(t->path);
    free(t);
}

const hy_worker_spec *hy_topology_find_worker(const hy_topology *t, const char *name)
{
    for (size_t i = 0; i < t->nworkers; i++)
        if (strcmp(t->workers[i].name, name) == 0)
            return &t->workers[i];
    return NULL;
}

/* ---- endpoints -------------------------------------------------------- */

char *hy_endpoint_str(const hy_endpoint *ep, char *out, size_t outlen)
{
    if (ep->kind == HY_EP_UNIX)
        snprintf(out, outlen, "unix:%s", ep->path);
    else if (strchr(ep->host, ':'))
        snprintf(out, outlen, "tcp:[%s]:%u", ep->host, ep->port);
    else
        snprintf(out, outlen, "tcp:%s:%u", ep->host, ep->port);
    return out;
}

static int check_sock_path(loader *L, const yaml_node_t *n, const char *what, const char *path)
{
    struct sockaddr_un sa;
    if (strlen(path) >= sizeof sa.sun_path)
        return hy_yerr(&L->y, n, "%s: socket path '%s' is longer than %zu bytes", what, path,
                       sizeof sa.sun_path - 1);
    return 0;
}

/* "host:port" or "[v6]:port". */
static int parse_hostport(loader *L, const yaml_node_t *n, const char *what, hy_endpoint *ep)
{
    const char *s;
    if (hy_yget_str(&L->y, n, what, &s) < 0)
        return -1;
    const char *colon;
    size_t hostlen;
    const char *host = s;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return hy_yerr(&L->y, n, "%s: expected [address]:port, not '%s'", what, s);
        host = s + 1;
        hostlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || strchr(s, ':') != colon)
            return hy_yerr(&L->y, n, "%s: expected host:port, not '%s'", what, s);
        hostlen = (size_t)(colon - s);
    }
    if (hostlen == 0)
        return hy_yerr(&L->y, n, "%s: missing host in '%s'", what, s);
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || port == 0 || port > 65535 || colon[1] == '-' ||
        colon[1] == '+')
        return hy_yerr(&L->y, n, "%s: port must be from 1 to 65535 in '%s'", what, s);
    if (!(ep->host = strndup(host, hostlen)))
        return oom(L, n);
    ep->kind = HY_EP_TCP;
    ep->port = (uint16_t)port;
    return 0;
}

/* {unix: PATH} or {tcp: HOST:PORT}; extra allowed keys are checked by the
 * caller's key list. */
static int parse_endpoint(loader *L, const yaml_node_t *map, const char *what,
                          const char *const *keys, hy_endpoint *ep)
{
    if (hy_yexpect_map(&L->y, map, what) < 0 || hy_ymap_check(&L->y, map, what, keys) < 0)
        return -1;
    yaml_node_t *u = hy_ymap_get(&L->y, map, "unix");
    yaml_node_t *tc = hy_ymap_get(&L->y, map, "tcp");
    if (u && tc)
        return hy_yerr(&L->y, map, "%s: give either 'unix' or 'tcp', not both", what);
    if (!u && !tc)
        return hy_yerr(&L->y, map, "%s: needs 'unix: PATH' or 'tcp: HOST:PORT'", what);
    char w[128];
    if (u) {
        snprintf(w, sizeof w, "%s.unix", what);
        ep->kind = HY_EP_UNIX;
        if (get_path(L, u, w, &ep->path) < 0)
            return -1;
        return check_sock_path(L, u, w, ep->path);
    }
    snprintf(w, sizeof w, "%s.tcp", what);
    return parse_hostport(L, tc, w, ep);
}

/* ---- top level -------------------------------------------------------- */

const char *hy_up_handshake_str(hy_up_handshake h)
{
    return h == HY_UP_HANDSHAKE_NONE ? "none" : "digest";
}

static int parse_up_handshake(loader *L, const yaml_node_t *v, hy_up_handshake *out)
{
    const char *s;
    if (hy_yget_str(&L->y, v, "upstream.handshake", &s) < 0)
        return -1;
    if (!strcmp(s, "digest"))
        *out = HY_UP_HANDSHAKE_DIGEST;
    else if (!strcmp(s, "none"))
        *out = HY_UP_HANDSHAKE_NONE;
    else
        return hy_yerr(&L->y, v, "upstream.handshake must be digest or none, not '%s'", s);
    return 0;
}

static int parse_upstream(loader *L, const yaml_node_t *n)
{
    static const char *const keys[] = {"unix", "tcp", "handshake", "echo", "buffer", "reconnect", "tls", NULL};
    hy_topology *t = L->t;
    if (parse_endpoint(L, n, "upstream", keys, &t->upstream) < 0)
        return -1;
    t->has_upstream = true;
    yaml_node_t *v;
    if ((v = hy_ymap_get(&L->y, n, "handshake")) && parse_up_handshake(L, v, &t->upstream_handshake) < 0)
        return -1;
    if ((v = hy_ymap_get(&L->y, n, "echo")) && hy_yget_bool(&L->y, v, "upstream.echo", &t->upstream_echo) < 0)
        return -1;
    if ((v = hy_ymap_get(&L->y, n, "tls"))) {
        if (t->upstream.kind != HY_EP_TCP)
            return hy_yerr(&L->y, v, "upstream.tls is for a tcp upstream (a Unix socket stays on this host)");
        if (hy_parse_tls(L, v, "upstream.tls.", false, &t->upstream_tls) < 0)
            return -1;
    }
    if ((v = hy_ymap_get(&L->y, n, "buffer"))) {
        if (hy_yget_size(&L->y, v, "upstream.buffer", &t->upstream_buffer) < 0)
            return -1;
        uint32_t big = largest_frame(t->schema);
        if (t->upstream_buffer < big) {
            char a[32];
            return hy_yerr(&L->y, v, "upstream.buffer %s is smaller than the largest framed message (%u bytes)",
                           hy_format_size(t->upstream_buffer, a, sizeof a), big);
        }
    }
    if ((v = hy_ymap_get(&L->y, n, "reconnect"))) {
        static const char *const rk[] = {"initial", "max", NULL};
        if (hy_yexpect_map(&L->y, v, "upstream.reconnect") < 0 ||
            hy_ymap_check(&L->y, v, "upstream.reconnect", rk) < 0)
            return -1;
        yaml_node_t *x;
        if ((x = hy_ymap_get(&L->y, v, "initial")) &&
            hy_yget_duration(&L->y, x, "upstream.reconnect.initial", &t->reconnect_initial_ms) < 0)
            return -1;
        if ((x = hy_ymap_get(&L->y, v, "max")) &&
            hy_yget_duration(&L->y, x, "upstream.reconnect.max", &t->reconnect_max_ms) < 0)
            return -1;
        if (t->reconnect_initial_ms == 0)
            return hy_yerr(&L->y, v, "upstream.reconnect.initial must be more than 0s");
        if (t->reconnect_max_ms < t->reconnect_initial_ms)
            return hy_yerr(&L->y, v, "upstream.reconnect.max is less than upstream.reconnect.initial");
    }
    return 0;
}

static bool same_endpoint(const hy_endpoint *a, const hy_endpoint *b)
{
    if (a->kind != b->kind)
        return false;
    if (a->kind == HY_EP_UNIX)
        return strcmp(a->path, b->path) == 0;
    return a->port == b->port && strcmp(a->host, b->host) == 0;
}

const char *hy_listen_handshake_str(hy_listen_handshake h)
{
    switch (h) {
    case HY_LISTEN_HS_AUTO: return "auto";
    case HY_LISTEN_HS_DIGEST: return "digest";
    case HY_LISTEN_HS_NONE: return "none";
    }
    return "?";
}

int hy_listen_check_auto(const char *file, const hy_schema *s, const hy_listen_spec *l, size_t n, hy_err *err)
{
    const hy_message *m = hy_listen_hs_ambiguous(s);
    for (size_t i = 0; m && i < n; i++)
        if (l[i].handshake == HY_LISTEN_HS_AUTO)
            return hy_err_at(err, file, l[i].line, l[i].col,
                             "listen: handshake auto cannot serve this schema: message %s (type 32) is %u bytes, "
                             "and the digest's first 4 bytes read as a length are %u too, so its frames start "
                             "like the digest handshake; set 'handshake: digest' (clients send the handshake) or "
                             "'handshake: none' (they send frames from byte 0) on this endpoint",
                             m->name, m->size, m->size);
    return 0;
}

/* A client's bounds: max_frame (its input's memory), frame_timeout. */
static int parse_listen_bounds(loader *L, const yaml_node_t *e, hy_listen_spec *ls)
{
    yaml_node_t *v;
    if ((v = hy_ymap_get(&L->y, e, "max_frame"))) {
        uint64_t m;
        if (hy_yget_size(&L->y, v, "listen.max_frame", &m) < 0)
            return -1;
        if (m < HY_LISTEN_MAX_FRAME_MIN || m > HY_TLV_MAX_PAYLOAD)
            return hy_yerr(&L->y, v, "listen.max_frame must be between 64B and 16MiB (Mycelium's frame limit)");
        ls->max_frame = (uint32_t)m;
    }
    if ((v = hy_ymap_get(&L->y, e, "frame_timeout")) &&
        hy_yget_duration(&L->y, v, "listen.frame_timeout", &ls->frame_timeout_ms) < 0)
        return -1;
    return 0;
}

/* handshake: auto | digest | none; max_clients: 1 .. HY_LISTEN_MAX_CLIENTS_MAX. */
static int parse_listen_opts(loader *L, const yaml_node_t *e, hy_listen_spec *ls)
{
    ls->handshake = HY_LISTEN_HS_AUTO;
    ls->max_clients = HY_LISTEN_MAX_CLIENTS_DEFAULT;
    ls->max_frame = HY_TLV_MAX_PAYLOAD;
    ls->frame_timeout_ms = HY_LISTEN_FRAME_TIMEOUT_DEFAULT_MS;
    ls->line = hy_yline(e);
    ls->col = hy_ycol(e);
    yaml_node_t *v;
    if ((v = hy_ymap_get(&L->y, e, "handshake"))) {
        const char *s;
        if (hy_yget_str(&L->y, v, "listen.handshake", &s) < 0)
            return -1;
        if (strcmp(s, "auto") == 0)
            ls->handshake = HY_LISTEN_HS_AUTO;
        else if (strcmp(s, "digest") == 0)
            ls->handshake = HY_LISTEN_HS_DIGEST;
        else if (strcmp(s, "none") == 0)
            ls->handshake = HY_LISTEN_HS_NONE;
        else
            return hy_yerr(&L->y, v, "listen.handshake must be auto, digest or none, not '%s'", s);
    }
    if ((v = hy_ymap_get(&L->y, e, "max_clients"))) {
        uint64_t m;
        if (hy_yget_uint(&L->y, v, "listen.max_clients", 1, HY_LISTEN_MAX_CLIENTS_MAX, &m) < 0)
            return -1;
        ls->max_clients = (uint32_t)m;
    }
    return parse_listen_bounds(L, e, ls);
}

/* tls and insecure: a TCP endpoint other hosts can reach needs one of them. */
static int parse_listen_tls(loader *L, const yaml_node_t *e, hy_listen_spec *ls)
{
    yaml_node_t *v;
    if ((v = hy_ymap_get(&L->y, e, "insecure")) && hy_yget_bool(&L->y, v, "listen.insecure", &ls->insecure) < 0)
        return -1;
    if ((v = hy_ymap_get(&L->y, e, "tls"))) {
        if (ls->ep.kind != HY_EP_TCP)
            return hy_yerr(&L->y, v, "listen.tls is for a tcp endpoint (a Unix socket stays on this host)");
        return hy_parse_tls(L, v, "listen.tls.", true, &ls->tls);
    }
    if (ls->ep.kind == HY_EP_TCP && !ls->insecure && !hy_host_is_loopback(ls->ep.host))
        return hy_yerr(&L->y, e,
                       "listen: tcp %s:%u can be reached from other hosts, and anyone who reaches it could publish "
                       "into the bus: give it tls: {cert: ..., key: ..., client_ca: ...}, or set insecure: true",
                       ls->ep.host, (unsigned)ls->ep.port);
    return 0;
}

static int parse_listen(loader *L, const yaml_node_t *n)
{
    static const char *const keys[] = {"unix",      "tcp", "handshake", "max_clients", "max_frame", "frame_timeout",
                                       "tls",       "insecure", NULL};
    hy_topology *t = L->t;
    if (hy_yexpect_seq(&L->y, n, "listen") < 0)
        return -1;
    size_t cnt = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (!(t->listen = calloc(cnt ? cnt : 1, sizeof *t->listen)))
        return oom(L, n);
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        yaml_node_t *e = hy_ynode(&L->y, *it);
        hy_listen_spec *ls = &t->listen[t->nlisten++];
        hy_endpoint *ep = &ls->ep;
        if (parse_endpoint(L, e, "listen", keys, ep) < 0 || parse_listen_opts(L, e, ls) < 0 ||
            parse_listen_tls(L, e, ls) < 0)
            return -1;
        for (size_t i = 0; i + 1 < t->nlisten; i++)
            if (same_endpoint(&t->listen[i].ep, ep))
                return hy_yerr(&L->y, e, "listen: endpoint listed twice");
        if (t->has_upstream && same_endpoint(&t->upstream, ep))
            return hy_yerr(&L->y, e, "listen: endpoint is the upstream itself");
    }
    return hy_listen_check_auto(t->path, t->schema, t->listen, t->nlisten, L->y.err);
}

static char *default_control_socket(void)
{
    char buf[256];
    hy_default_control_socket(buf, sizeof buf);
    return strdup(buf);
}

/* metrics: {listen: HOST:PORT}: an HTTP endpoint serving /metrics. */
static int parse_metrics(loader *L, const yaml_node_t *n)
{
    static const char *const keys[] = {"listen", NULL};
    hy_topology *t = L->t;
    if (hy_yexpect_map(&L->y, n, "metrics") < 0 || hy_ymap_check(&L->y, n, "metrics", keys) < 0)
        return -1;
    yaml_node_t *v = hy_ymap_get(&L->y, n, "listen");
    if (!v)
        return hy_yerr(&L->y, n, "metrics: needs 'listen: HOST:PORT' (e.g. 127.0.0.1:9464)");
    if (parse_hostport(L, v, "metrics.listen", &t->metrics) < 0)
        return -1;
    t->has_metrics = true;
    for (size_t i = 0; i < t->nlisten; i++)
        if (same_endpoint(&t->listen[i].ep, &t->metrics))
            return hy_yerr(&L->y, v, "metrics.listen is also a listen endpoint");
    return 0;
}

static int parse_control(loader *L, const yaml_node_t *n)
{
    static const char *const keys[] = {"socket", "mode", NULL};
    hy_topology *t = L->t;
    if (hy_yexpect_map(&L->y, n, "control") < 0 || hy_ymap_check(&L->y, n, "control", keys) < 0)
        return -1;
    yaml_node_t *v;
    if ((v = hy_ymap_get(&L->y, n, "socket"))) {
        free(t->control_socket);
        t->control_socket = NULL;
        if (get_path(L, v, "control.socket", &t->control_socket) < 0 ||
            check_sock_path(L, v, "control.socket", t->control_socket) < 0)
            return -1;
    }
    if ((v = hy_ymap_get(&L->y, n, "mode"))) {
        const char *s;
        if (hy_yget_str(&L->y, v, "control.mode", &s) < 0)
            return -1;
        char *end;
        errno = 0;
        unsigned long m = strtoul(s, &end, 8);
        if (errno || end == s || *end || m > 0777 || *s == '-' || *s == '+')
            return hy_yerr(&L->y, v, "control.mode must be octal permissions like \"0600\", not '%s'", s);
        if ((m & 0600) != 0600)
            return hy_yerr(&L->y, v, "control.mode %s would lock out hyphad's own user (it needs 0600: read and write for the owner)", s);
        t->control_mode = (uint32_t)m;
    }
    return 0;
}

const char *hy_topology_cgroup_str(const hy_topology *t)
{
    switch (t->cgroup) {
    case HY_CGROUP_AUTO: return "auto";
    case HY_CGROUP_OFF: return "off";
    case HY_CGROUP_PATH: return t->cgroup_path;
    }
    return "?";
}

/* cgroup: auto | off | PATH. Whether hyphad may use a PATH (a cgroup2
 * directory it can write) is checked when it starts, where it matters:
 * `--check` on another machine says nothing about this one. */
static int parse_cgroup(loader *L, const yaml_node_t *v)
{
    hy_topology *t = L->t;
    const char *s;
    if (hy_yget_str(&L->y, v, "cgroup", &s) < 0)
        return -1;
    if (strcmp(s, "auto") == 0) {
        t->cgroup = HY_CGROUP_AUTO;
    } else if (strcmp(s, "off") == 0) {
        t->cgroup = HY_CGROUP_OFF;
    } else if (s[0] != '/') {
        return hy_yerr(&L->y, v,
                       "cgroup must be auto, off or the absolute path of a cgroup2 directory "
                       "(e.g. /sys/fs/cgroup/hypha), not '%s'",
                       s);
    } else {
        if (!(t->cgroup_path = hy_path_join(NULL, s)))
            return oom(L, v);
        t->cgroup = HY_CGROUP_PATH;
    }
    return 0;
}

/* version: 1, the only one there is. */
static int parse_version(loader *L, const yaml_node_t *root)
{
    yaml_node_t *v = hy_ymap_get(&L->y, root, "version");
    uint64_t ver;
    if (!v)
        return hy_yerr(&L->y, root, "missing 'version: 1'");
    if (hy_yget_uint(&L->y, v, "version", 0, 1000, &ver) < 0)
        return -1;
    if (ver != 1)
        return hy_yerr(&L->y, v, "unsupported version %llu (this hyphad reads version 1)",
                       (unsigned long long)ver);
    return 0;
}

/* schema: the contracts file, resolved and loaded. */
static int parse_schema(loader *L, const yaml_node_t *root)
{
    hy_topology *t = L->t;
    yaml_node_t *v;
    if (!(v = hy_ymap_get(&L->y, root, "schema")))
        return hy_yerr(&L->y, root, "missing 'schema' (the path of the contracts file)");
    if (get_path(L, v, "schema", &t->schema_path) < 0)
        return -1;
    hy_err serr;
    serr.msg[0] = '\0';
    if (!(t->schema = hy_schema_load(t->schema_path, &serr))) {
        /* A problem inside the contracts file already carries its own
         * file:line:col; one opening it is reported at the `schema` key. */
        if (strncmp(serr.msg, t->schema_path, strlen(t->schema_path)) == 0 &&
            serr.msg[strlen(t->schema_path)] == ':' &&
            isdigit((unsigned char)serr.msg[strlen(t->schema_path) + 1]))
            return hy_err_set(L->y.err, "%s", serr.msg);
        return hy_yerr(&L->y, v, "schema: %s", serr.msg);
    }
    return 0;
}

/* The control socket must be neither a listen endpoint nor the upstream;
 * reported at `control` (n) if given, else at the root. */
static int check_control_socket(loader *L, const yaml_node_t *n, const yaml_node_t *root)
{
    const hy_topology *t = L->t;
    for (size_t i = 0; i <= t->nlisten; i++) {
        const hy_endpoint *ep = i < t->nlisten ? &t->listen[i].ep : (t->has_upstream ? &t->upstream : NULL);
        if (ep && ep->kind == HY_EP_UNIX && strcmp(ep->path, t->control_socket) == 0)
            return hy_yerr(&L->y, n ? n : root, "control.socket %s is also used by %s", t->control_socket,
                           i < t->nlisten ? "a listen endpoint" : "the upstream");
    }
    return 0;
}

static int parse_root(loader *L)
{
    static const char *const keys[] = {"version", "schema", "upstream", "listen", "control",
                                       "metrics", "cgroup", "defaults", "workers", NULL};
    hy_topology *t = L->t;
    yaml_node_t *root = hy_ydoc_root(&L->y);
    if (hy_yexpect_map(&L->y, root, "a topology file") < 0 ||
        hy_ymap_check(&L->y, root, "the topology", keys) < 0)
        return -1;
    if (parse_version(L, root) < 0 || parse_schema(L, root) < 0)
        return -1;

    /* upstream first: listen checks against it, and the defaults apply */
    yaml_node_t *v;
    t->upstream_handshake = HY_UP_HANDSHAKE_DIGEST;
    t->upstream_echo = true;
    t->upstream_buffer = 8ull << 20;
    t->reconnect_initial_ms = 100;
    t->reconnect_max_ms = 5000;
    if ((v = hy_ymap_get(&L->y, root, "upstream")) && !hy_yis_null(v) && parse_upstream(L, v) < 0)
        return -1;
    if ((v = hy_ymap_get(&L->y, root, "listen")) && !hy_yis_null(v) && parse_listen(L, v) < 0)
        return -1;
    t->control_mode = 0600;
    if (!(t->control_socket = default_control_socket()))
        return oom(L, root);
    if ((v = hy_ymap_get(&L->y, root, "control")) && !hy_yis_null(v) && parse_control(L, v) < 0)
        return -1;
    if (check_control_socket(L, v, root) < 0)
        return -1;
    if ((v = hy_ymap_get(&L->y, root, "metrics")) && !hy_yis_null(v) && parse_metrics(L, v) < 0)
        return -1;
    if ((v = hy_ymap_get(&L->y, root, "cgroup")) && !hy_yis_null(v) && parse_cgroup(L, v) < 0)
        return -1;
    hy_policy_builtin(&t->defaults);
    v = hy_ymap_get(&L->y, root, "defaults");
    if (hy_topo_parse_defaults(L, v && !hy_yis_null(v) ? v : NULL, root) < 0)
        return -1;
    if ((v = hy_ymap_get(&L->y, root, "workers")) && !hy_yis_null(v) && hy_topo_parse_workers(L, v) < 0)
        return -1;
    return 0;
}

hy_topology *hy_topology_load_buffer(const char *name, const char *base_dir, const uint8_t *data,
                                     size_t len, hy_err *err)
{
    loader L;
    memset(&L, 0, sizeof L);
    hy_topology *t = calloc(1, sizeof *t);
    if (!t || !(t->path = strdup(name)) || !(t->dir = strdup(base_dir))) {
        hy_err_set(err, "%s: out of memory", name);
        hy_topology_free(t);
        return NULL;
    }
    L.t = t;
    if (hy_ydoc_load(&L.y, t->path, data, len, err) < 0 || parse_root(&L) < 0) {
        hy_ydoc_free(&L.y);
        hy_topology_free(t);
        return NULL;
    }
    hy_ydoc_free(&L.y);
    return t;
}

/* `path` made absolute against the current directory, lexically: a link on
 * the way (a Kubernetes ConfigMap's ..data) stays, so a reload reads what
 * the link points at then. Every message about the file names it so. */
static char *absolute(const char *path, hy_err *err)
{
    char *cwd = NULL, *abs;
    if (path[0] != '/' && !(cwd = getcwd(NULL, 0))) {
        hy_err_set(err, "%s: cannot make the path absolute: getcwd: %s", path, strerror(errno));
        return NULL;
    }
    if (!(abs = hy_path_join(cwd, path)))
        hy_err_set(err, "%s: out of memory", path);
    free(cwd);
    return abs;
}

hy_topology *hy_topology_load(const char *given, hy_err *err)
{
    size_t len;
    char *path = absolute(given, err);
    if (!path)
        return NULL;
    uint8_t *data = hy_read_file(path, &len, 16u << 20, err);
    char *dir = data ? hy_dir_of(path, err) : NULL;
    hy_topology *t = dir ? hy_topology_load_buffer(path, dir, data, len, err) : NULL;
    uint8_t raw[HY_DIGEST_LEN];
    if (t && hy_sha256(data, len, raw, t->file_digest, err) < 0) {
        hy_topology_free(t);
        t = NULL;
    }
    free(dir);
    free(data);
    free(path);
    return t;
}
