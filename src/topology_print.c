/* topology_print.c - render a resolved topology (see topology_print.h). */
#include "hypha/topology_print.h"

#include <string.h>

#include "hypha/table.h"
#include "hypha/units.h"

static void types_text(const hy_topology *t, const uint16_t *ids, size_t n, char *out, size_t len)
{
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && k < len; i++) {
        const hy_message *m = hy_schema_find(t->schema, ids[i]);
        int w = snprintf(out + k, len - k, "%s%s", i ? "," : "", m ? m->name : "?");
        if (w < 0)
            break;
        k += (size_t)w;
    }
    if (n == 0)
        snprintf(out, len, "(none)");
}

static void argv_text(char **argv, char *out, size_t len)
{
    size_t k = 0;
    out[0] = '\0';
    for (char **a = argv; *a && k < len; a++) {
        bool quote = **a == '\0' || strpbrk(*a, " \t\"'") != NULL;
        int w = snprintf(out + k, len - k, quote ? "%s\"%s\"" : "%s%s", a == argv ? "" : " ", *a);
        if (w < 0)
            break;
        k += (size_t)w;
    }
}

/* The file, the contracts, and the links: upstream, listen, control, metrics. */
static void print_head(FILE *out, const hy_topology *t)
{
    char a[64], b[64], c[64], ep[160];
    fprintf(out, "topology  %s\n", t->path);
    fprintf(out, "schema    %s\n", t->schema_path);
    fprintf(out, "digest    %s (%zu messages)\n", t->schema->digest_hex, t->schema->nmsgs);
    if (t->has_upstream) {
        fprintf(out, "upstream  %s  handshake=%s echo=%s buffer=%s reconnect=%s..%s\n",
                hy_endpoint_str(&t->upstream, ep, sizeof ep), hy_up_handshake_str(t->upstream_handshake),
                t->upstream_echo ? "true" : "false",
                hy_format_size(t->upstream_buffer, b, sizeof b),
                hy_format_duration(t->reconnect_initial_ms, c, sizeof c),
                hy_format_duration(t->reconnect_max_ms, a, sizeof a));
    } else {
        fprintf(out, "upstream  none (embedded: hyphad is the bus)\n");
    }
    for (size_t i = 0; i < t->nlisten; i++) {
        char mf[32], ft[32];
        const hy_listen_spec *l = &t->listen[i];
        fprintf(out, "listen    %s\n          handshake %s, max_clients %u, max_frame %s, frame_timeout %s\n",
                hy_endpoint_str(&l->ep, ep, sizeof ep), hy_listen_handshake_str(l->handshake), l->max_clients,
                hy_format_bytes(l->max_frame, mf, sizeof mf),
                l->frame_timeout_ms ? hy_format_duration(l->frame_timeout_ms, ft, sizeof ft) : "none");
    }
    fprintf(out, "control   %s (mode %04o)\n", t->control_socket, t->control_mode);
    if (t->has_metrics)
        fprintf(out, "metrics   http://%s/metrics\n", hy_endpoint_str(&t->metrics, ep, sizeof ep) + 4);
    fprintf(out, "cgroup    %s\n", hy_topology_cgroup_str(t));
}

/* Workers with env files, autostart: false, `after` or `preload`, one line each;
 * nothing when none has them. */
static void print_start(FILE *out, const hy_topology *t)
{
    bool head = false;
    for (size_t i = 0; i < t->nworkers; i++) {
        const hy_worker_spec *w = &t->workers[i];
        if (!w->nenv_files && w->autostart && !w->nafter && !w->preload)
            continue;
        if (!head)
            fputc('\n', out);
        head = true;
        fprintf(out, "%s:", w->name);
        if (!w->autostart)
            fprintf(out, " autostart false (hyphactl start %s);", w->name);
        if (w->nafter) {
            fprintf(out, " after");
            for (size_t k = 0; k < w->nafter; k++)
                fprintf(out, "%s %s", k ? "," : "", w->after[k]);
            fputc(';', out);
        }
        if (w->preload) {
            fprintf(out, " preload");
            for (size_t k = 0; k < w->npreload; k++)
                fprintf(out, "%s %s", k ? "," : "", w->preload[k]);
            fprintf(out, w->npreload ? " (forked from a fork server);" : " (forked from a fork server: no modules);");
        }
        if (w->nenv_files) {
            fprintf(out, " env_file");
            for (size_t k = 0; k < w->nenv_files; k++)
                fprintf(out, "%s %s", k ? "," : "", w->env_files[k]);
            fputc(';', out);
        }
        fputc('\n', out);
    }
}

/* Per worker: the restart, stop, start, heartbeat and queue policy. */
static void print_policies(FILE *out, const hy_topology *t)
{
    hy_table tb;
    fputc('\n', out);
    hy_table_init(&tb, 7);
    hy_table_add(&tb, (const char *const[]){"WORKER", "BACKOFF", "GIVE-UP", "STOP", "START",
                                             "HEARTBEAT", "QUEUE"});
    for (size_t i = 0; i < t->nworkers; i++) {
        const hy_worker_spec *w = &t->workers[i];
        const hy_policy *p = &w->policy;
        char bo[96], gu[96], st[48], s1[24], s2[24], s3[24], hb[24], q[72], start[24];
        snprintf(bo, sizeof bo, "%s*%g..%s +/-%g%% reset %s",
                 hy_format_duration(p->backoff_initial_ms, s1, sizeof s1), p->backoff_factor,
                 hy_format_duration(p->backoff_max_ms, s2, sizeof s2), p->backoff_jitter * 100,
                 hy_format_duration(p->backoff_reset_after_ms, s3, sizeof s3));
        if (p->give_up_failures)
            snprintf(gu, sizeof gu, "%u in %s, retry %s", p->give_up_failures,
                     hy_format_duration(p->give_up_within_ms, s1, sizeof s1),
                     p->give_up_retry_after_ms
                         ? hy_format_duration(p->give_up_retry_after_ms, s2, sizeof s2)
                         : "never");
        else
            snprintf(gu, sizeof gu, "never");
        const char *sig = hy_signal_name(p->stop_signal);
        snprintf(st, sizeof st, "%s %s", sig ? sig : "?",
                 hy_format_duration(p->stop_grace_ms, s1, sizeof s1));
        if (p->heartbeat_timeout_ms)
            hy_format_duration(p->heartbeat_timeout_ms, hb, sizeof hb);
        else
            snprintf(hb, sizeof hb, "off");
        char h[24];
        snprintf(q, sizeof q, "%s %s hold %s", hy_format_size(p->queue_limit, s1, sizeof s1),
                 hy_overflow_str(p->queue_overflow),
                 p->queue_hold_ms ? hy_format_duration(p->queue_hold_ms, h, sizeof h) : "off");
        hy_format_duration(p->start_timeout_ms, start, sizeof start);
        hy_table_add(&tb, (const char *const[]){w->name, bo, gu, st, start, hb, q});
    }
    hy_table_print(&tb, out);
    hy_table_free(&tb);
}

void hy_topology_print(FILE *out, const hy_topology *t)
{
    print_head(out, t);
    fputc('\n', out);
    hy_table tb;
    hy_table_init(&tb, 6);
    hy_table_add(&tb, (const char *const[]){"WORKER", "INST", "RESTART", "COMMAND", "SUBSCRIBE", "PUBLISH"});
    for (size_t i = 0; i < t->nworkers; i++) {
        const hy_worker_spec *w = &t->workers[i];
        char cmd[512], sub[512], pub[512], inst[16];
        argv_text(w->argv, cmd, sizeof cmd);
        types_text(t, w->subscribe, w->nsubscribe, sub, sizeof sub);
        if (w->publish_all)
            snprintf(pub, sizeof pub, "(all)");
        else
            types_text(t, w->publish, w->npublish, pub, sizeof pub);
        snprintf(inst, sizeof inst, "%u", w->instances);
        hy_table_add(&tb, (const char *const[]){w->name, inst, hy_restart_policy_str(w->policy.restart),
                                                 cmd, sub, pub});
    }
    hy_table_print(&tb, out);
    hy_table_free(&tb);
    if (t->nworkers == 0) {
        fprintf(out, "(no workers)\n");
        return;
    }

    print_policies(out, t);
    print_start(out, t);
}

static json_t *types_json(const hy_topology *t, const uint16_t *ids, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        const hy_message *m = hy_schema_find(t->schema, ids[i]);
        json_array_append_new(arr, json_pack("{s:i,s:s}", "id", (json_int_t)ids[i], "name",
                                             m ? m->name : "?"));
    }
    return arr;
}

static json_t *endpoint_json(const hy_endpoint *ep)
{
    if (ep->kind == HY_EP_UNIX)
        return json_pack("{s:s}", "unix", ep->path);
    return json_pack("{s:s,s:i}", "host", ep->host, "port", (json_int_t)ep->port);
}

static json_t *limit_json(uint64_t v) { return v == UINT64_MAX ? json_string("unlimited") : json_integer((json_int_t)v); }

/* user, group, umask, rlimits as resolved: numbers, and the user's name */
static json_t *proc_json(const hy_worker_proc *p)
{
    json_t *j = json_object();
    if (p->set_ids) {
        json_t *groups = json_array();
        for (size_t i = 0; i < p->ngroups; i++)
            json_array_append_new(groups, json_integer(p->groups[i]));
        json_object_set_new(j, "uid", json_integer(p->uid));
        json_object_set_new(j, "gid", json_integer(p->gid));
        json_object_set_new(j, "groups", groups);
        json_object_set_new(j, "user", p->user ? json_string(p->user) : json_null());
    }
    if (p->set_umask) {
        char m[8];
        snprintf(m, sizeof m, "%04o", p->umask);
        json_object_set_new(j, "umask", json_string(m));
    }
    json_t *lim = json_object();
    for (int i = 0; i < HY_RLIMITS; i++)
        if (p->rlimits[i].set)
            json_object_set_new(lim, hy_rlimit_name(i),
                                json_pack("{s:o,s:o}", "soft", limit_json(p->rlimits[i].soft), "hard",
                                          limit_json(p->rlimits[i].hard)));
    json_object_set_new(j, "rlimits", lim);
    return j;
}

static json_t *policy_json(const hy_policy *p)
{
    const char *sig = hy_signal_name(p->stop_signal);
    return json_pack(
        "{s:s,s:{s:I,s:f,s:I,s:f,s:I},s:{s:I,s:I,s:I},s:{s:s,s:I},s:I,s:{s:I},s:{s:I,s:s,s:I}}",
        "restart", hy_restart_policy_str(p->restart),
        "backoff", "initial_ms", (json_int_t)p->backoff_initial_ms, "factor", p->backoff_factor,
        "max_ms", (json_int_t)p->backoff_max_ms, "jitter", p->backoff_jitter, "reset_after_ms",
        (json_int_t)p->backoff_reset_after_ms,
        "give_up", "failures", (json_int_t)p->give_up_failures, "within_ms",
        (json_int_t)p->give_up_within_ms, "retry_after_ms", (json_int_t)p->give_up_retry_after_ms,
        "stop", "signal", sig ? sig : "?", "grace_ms", (json_int_t)p->stop_grace_ms,
        "start_timeout_ms", (json_int_t)p->start_timeout_ms,
        "heartbeat", "timeout_ms", (json_int_t)p->heartbeat_timeout_ms,
        "queue", "limit_bytes", (json_int_t)p->queue_limit, "overflow",
        hy_overflow_str(p->queue_overflow), "hold_ms", (json_int_t)p->queue_hold_ms);
}

json_t *hy_topology_to_json(const hy_topology *t)
{
    json_t *root = json_object();
    if (!root)
        return NULL;
    json_object_set_new(root, "topology", json_string(t->path));
    json_object_set_new(root, "schema", json_pack("{s:s,s:s,s:i}", "path", t->schema_path,
                                                  "digest", t->schema->digest_hex, "messages",
                                                  (json_int_t)t->schema->nmsgs));
    if (t->has_upstream) {
        json_t *up = endpoint_json(&t->upstream);
        json_object_set_new(up, "handshake", json_string(hy_up_handshake_str(t->upstream_handshake)));
        json_object_set_new(up, "echo", json_boolean(t->upstream_echo));
        json_object_set_new(up, "buffer_bytes", json_integer((json_int_t)t->upstream_buffer));
        json_object_set_new(up, "reconnect",
                            json_pack("{s:I,s:I}", "initial_ms", (json_int_t)t->reconnect_initial_ms,
                                      "max_ms", (json_int_t)t->reconnect_max_ms));
        json_object_set_new(root, "upstream", up);
    } else {
        json_object_set_new(root, "upstream", json_null());
    }
    json_t *listen = json_array();
    for (size_t i = 0; i < t->nlisten; i++) {
        json_t *l = endpoint_json(&t->listen[i].ep);
        json_object_set_new(l, "handshake", json_string(hy_listen_handshake_str(t->listen[i].handshake)));
        json_object_set_new(l, "max_clients", json_integer(t->listen[i].max_clients));
        json_array_append_new(listen, l);
    }
    json_object_set_new(root, "listen", listen);
    char mode[8];
    snprintf(mode, sizeof mode, "%04o", t->control_mode);
    json_object_set_new(root, "control", json_pack("{s:s,s:s}", "socket", t->control_socket,
                                                   "mode", mode));
    json_object_set_new(root, "metrics",
                        t->has_metrics ? json_pack("{s:o}", "listen", endpoint_json(&t->metrics)) : json_null());
    json_object_set_new(root, "cgroup", json_string(hy_topology_cgroup_str(t)));
    json_object_set_new(root, "defaults", policy_json(&t->defaults));
    json_t *workers = json_array();
    for (size_t i = 0; i < t->nworkers; i++) {
        const hy_worker_spec *w = &t->workers[i];
        json_t *jw = json_object();
        json_object_set_new(jw, "name", json_string(w->name));
        json_t *argv = json_array();
        for (size_t k = 0; k < w->argc; k++)
            json_array_append_new(argv, json_string(w->argv[k]));
        json_object_set_new(jw, "command", argv);
        json_object_set_new(jw, "exec_path", json_string(w->exec_path));
        json_object_set_new(jw, "cwd", json_string(w->cwd));
        json_t *env = json_object();
        for (size_t k = 0; k < w->nenv; k++) {
            const char *eq = strchr(w->env[k], '=');
            char key[256];
            snprintf(key, sizeof key, "%.*s", (int)(eq - w->env[k]), w->env[k]);
            json_object_set_new(env, key, json_string(eq + 1));
        }
        json_object_set_new(jw, "env", env);
        json_t *ef = json_array(), *after = json_array();
        for (size_t k = 0; k < w->nenv_files; k++)
            json_array_append_new(ef, json_string(w->env_files[k]));
        for (size_t k = 0; k < w->nafter; k++)
            json_array_append_new(after, json_string(w->after[k]));
        json_object_set_new(jw, "env_file", ef);
        json_object_set_new(jw, "autostart", json_boolean(w->autostart));
        json_object_set_new(jw, "after", after);
        json_t *pre = w->preload ? json_array() : json_null();
        for (size_t k = 0; k < w->npreload; k++)
            json_array_append_new(pre, json_string(w->preload[k]));
        json_object_set_new(jw, "preload", pre);
        json_object_set_new(jw, "instances", json_integer(w->instances));
        json_object_set_new(jw, "subscribe", types_json(t, w->subscribe, w->nsubscribe));
        json_object_set_new(jw, "publish", w->publish_all ? json_string("all")
                                                          : types_json(t, w->publish, w->npublish));
        json_t *pol = policy_json(&w->policy);
        json_object_update(jw, pol);
        json_decref(pol);
        json_object_set_new(jw, "process", proc_json(&w->proc));
        json_array_append_new(workers, jw);
    }
    json_object_set_new(root, "workers", workers);
    return root;
}
