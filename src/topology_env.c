/* topology_env.c - a worker's environment files, `${VAR}` expansion and
 * its start settings (`autostart`, `after`).
 *
 * Expansion is done once, at load, from hyphad's own environment: `${VAR}`
 * (or `${VAR:-default}`) in `command` items, `cwd` and `env` values, `$$`
 * for a literal `$`; a lone `$` stays as it is. An undefined variable is a
 * load error, never an empty string passed on in silence.
 *
 * `env_file` is read as systemd reads EnvironmentFile= (and, like systemd,
 * without expansion): the variables of the files, later ones overriding
 * earlier ones, then `env`, which wins. The result is the worker's resolved
 * env, so a reload that finds an env file changed finds the worker changed.
 *
 * `after` names are checked once every worker is known: unknown names, the
 * worker itself and cycles are load errors at the list's position.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topology_int.h"

#define ENV_FILE_MAX (1u << 20) /* an environment file is small: 1 MiB */

/* ---- a growable string ---------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static int sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int sb_ch(sbuf *b, char c) { return sb_put(b, &c, 1); }

/* ---- ${VAR} expansion --------------------------------------------------- */

/* Where in the node's text an error is: the exact column for a one-line
 * plain scalar, the node's start otherwise (quotes and escapes move text). */
static int expand_err(loader *L, const yaml_node_t *n, size_t off, const char *what, const char *msg)
{
    size_t line = hy_yline(n), col = hy_ycol(n);
    if (n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
        n->start_mark.line == n->end_mark.line)
        col += off;
    return hy_err_at(L->y.err, L->y.file, line, col, "%s: %s", what, msg);
}

int hy_topo_expand(loader *L, const yaml_node_t *n, const char *what, const char *s, char **out)
{
    sbuf b = {0};
    char msg[512];
    *out = NULL;
    if (sb_put(&b, "", 0) < 0)
        return oom(L, n);
    for (const char *p = s; *p;) {
        if (p[0] != '$' || (p[1] != '$' && p[1] != '{')) {
            if (sb_ch(&b, *p++) < 0)
                goto nomem;
            continue;
        }
        if (p[1] == '$') { /* $$: a literal $ */
            if (sb_ch(&b, '$') < 0)
                goto nomem;
            p += 2;
            continue;
        }
        const char *name = p + 2, *end = strchr(name, '}');
        if (!end) {
            snprintf(msg, sizeof msg, "'${' without a closing '}' (write $$ for a literal $)");
            goto fail;
        }
        size_t nlen = (size_t)(end - name);
        const char *dflt = NULL;
        const char *colon = memchr(name, ':', nlen);
        if (colon && colon + 1 < end && colon[1] == '-') {
            dflt = colon + 2;
            nlen = (size_t)(colon - name);
        }
        char var[256];
        if (nlen == 0 || nlen >= sizeof var) {
            snprintf(msg, sizeof msg, "'%.*s' is not a variable name (write $$ for a literal $)",
                     (int)(end - p + 1), p);
            goto fail;
        }
        memcpy(var, name, nlen);
        var[nlen] = '\0';
        if (!hy_is_ident(var)) {
            snprintf(msg, sizeof msg, "'%.*s': '%s' is not a variable name (write $$ for a literal $)",
                     (int)(end - p + 1), p, var);
            goto fail;
        }
        const char *val = getenv(var);
        if (!val && dflt) {
            if (sb_put(&b, dflt, (size_t)(end - dflt)) < 0)
                goto nomem;
        } else if (!val) {
            snprintf(msg, sizeof msg,
                     "${%s} is not set in hyphad's environment: set it, or write $${%s} for a literal", var, var);
            goto fail;
        } else if (sb_put(&b, val, strlen(val)) < 0) {
            goto nomem;
        }
        p = end + 1;
        continue;
    fail:
        free(b.p);
        return expand_err(L, n, (size_t)(p - s), what, msg);
    }
    *out = b.p;
    return 0;
nomem:
    free(b.p);
    return oom(L, n);
}

/* ---- env_file: systemd's EnvironmentFile= format ------------------------ */

/* "KEY=VALUE" set in a NULL-terminated vector: an existing KEY is replaced
 * in place (its first position kept), a new one appended. kv is taken. */
static int env_set(char ***v, size_t *n, char *kv)
{
    size_t klen = (size_t)(strchr(kv, '=') - kv);
    for (size_t i = 0; i < *n; i++)
        if (!strncmp((*v)[i], kv, klen + 1)) {
            free((*v)[i]);
            (*v)[i] = kv;
            return 0;
        }
    char **g = realloc(*v, (*n + 2) * sizeof *g);
    if (!g) {
        free(kv);
        return -1;
    }
    g[(*n)++] = kv;
    g[*n] = NULL;
    *v = g;
    return 0;
}

static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* Reading one env file: where we are, and what went wrong. */
typedef struct envcur {
    const char *s;
    size_t line;
    char *msg;
    size_t msglen;
    size_t *lineno; /* the line at fault */
} envcur;

enum { ENV_BAD = -1, ENV_NOMEM = -2 };

static int env_bad(envcur *c, size_t line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int env_bad(envcur *c, size_t line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, c->msglen, fmt, ap);
    va_end(ap);
    *c->lineno = line;
    return ENV_BAD;
}

static void skip_blanks(envcur *c)
{
    while (is_blank(*c->s))
        c->s++;
}

/* `[export ]KEY=`: the key into key[256], the cursor after the '='. */
static int env_key(envcur *c, size_t at, char key[256])
{
    if (!strncmp(c->s, "export", 6) && is_blank(c->s[6])) {
        c->s += 6;
        skip_blanks(c);
    }
    const char *k = c->s;
    while (*c->s && *c->s != '=' && *c->s != '\n')
        c->s++;
    const char *ke = c->s;
    while (ke > k && is_blank(ke[-1]))
        ke--;
    if (*c->s != '=')
        return env_bad(c, at, "no '=' in \"%.*s\" (lines are KEY=VALUE)", (int)(ke - k > 60 ? 60 : ke - k), k);
    if (ke == k || (size_t)(ke - k) >= 256)
        return env_bad(c, at, "%s before '='", ke == k ? "no variable name" : "a variable name too long");
    memcpy(key, k, (size_t)(ke - k));
    key[ke - k] = '\0';
    if (!hy_is_ident(key))
        return env_bad(c, at, "'%s' is not a valid variable name", key);
    if (!strncmp(key, "HYPHA_", 6))
        return env_bad(c, at, "%s is set by hyphad itself", key);
    c->s++; /* '=' */
    skip_blanks(c);
    return 0;
}

/* A backslash in double quotes: \" \\ \$ \` \n \t, a continuation, or (as
 * systemd) a backslash kept as it is. */
static int env_escape(envcur *c, sbuf *val)
{
    char e = c->s[1], ch;
    switch (e) {
    case '"': case '\\': case '$': case '`': ch = e; break;
    case 'n': ch = '\n'; break;
    case 't': ch = '\t'; break;
    case '\n': /* a continuation: the newline goes */
        c->s += 2, c->line++;
        return 0;
    default:
        c->s++;
        return sb_ch(val, '\\') < 0 ? ENV_NOMEM : 0;
    }
    c->s += 2;
    return sb_ch(val, ch) < 0 ? ENV_NOMEM : 0;
}

/* A value in single or double quotes, up to its closing quote; nothing but
 * blanks may follow it on its line. */
static int env_quoted(envcur *c, size_t at, const char *key, sbuf *val)
{
    char q = *c->s++;
    for (;;) {
        if (!*c->s)
            return env_bad(c, at, "%s quote not closed", q == '"' ? "double" : "single");
        if (*c->s == q) {
            c->s++;
            break;
        }
        if (q == '"' && *c->s == '\\' && c->s[1]) {
            int r = env_escape(c, val);
            if (r < 0)
                return r;
            continue;
        }
        if (*c->s == '\n')
            c->line++;
        if (sb_ch(val, *c->s++) < 0)
            return ENV_NOMEM;
    }
    skip_blanks(c);
    if (*c->s && *c->s != '\n')
        return env_bad(c, c->line, "text after the closing quote of %s", key);
    return 0;
}

/* A bare value: to the end of the line, trailing blanks trimmed, `\x` the
 * character x, a trailing backslash continuing the line. */
static int env_bare(envcur *c, sbuf *val)
{
    size_t keep = 0; /* length up to the last non-blank */
    while (*c->s && *c->s != '\n') {
        if (*c->s == '\\' && c->s[1] == '\n') {
            c->s += 2, c->line++;
            continue;
        }
        bool esc = *c->s == '\\' && c->s[1];
        if (esc)
            c->s++; /* the next character as it is */
        if (sb_ch(val, *c->s) < 0)
            return ENV_NOMEM;
        if (esc || !is_blank(*c->s))
            keep = val->len;
        c->s++;
    }
    val->len = keep;
    val->p[keep] = '\0';
    return 0;
}

/* One KEY=VALUE line (the cursor at its first non-blank) into *v. */
static int env_line(envcur *c, sbuf *val, char ***v, size_t *n)
{
    size_t at = c->line;
    char key[256];
    int r = env_key(c, at, key);
    if (r < 0)
        return r;
    val->len = 0;
    if (sb_put(val, "", 0) < 0)
        return ENV_NOMEM;
    r = *c->s == '\'' || *c->s == '"' ? env_quoted(c, at, key, val) : env_bare(c, val);
    if (r < 0)
        return r;
    size_t len = strlen(key) + 1 + val->len + 1;
    char *kv = malloc(len);
    if (!kv)
        return ENV_NOMEM;
    snprintf(kv, len, "%s=%s", key, val->p);
    return env_set(v, n, kv) < 0 ? ENV_NOMEM : 0;
}

/* One file's text into *v. 0; -1 with msg and *lineno (the line at fault)
 * for a malformed line; -2 out of memory. Blank lines and lines starting
 * with # or ; are skipped. */
static int envfile_parse(const char *s, char ***v, size_t *n, char *msg, size_t msglen, size_t *lineno)
{
    envcur c = {s, 1, msg, msglen, lineno};
    sbuf val = {0};
    int r = 0;
    while (*c.s && r == 0) {
        skip_blanks(&c);
        if (*c.s == '\n') {
            c.s++, c.line++;
        } else if (*c.s == '#' || *c.s == ';') { /* a comment: the whole line */
            while (*c.s && *c.s != '\n')
                c.s++;
        } else if (*c.s) {
            r = env_line(&c, &val, v, n);
        }
    }
    free(val.p);
    return r;
}

/* One `env_file` entry: "-PATH" ignores a missing file, as in systemd. */
static int read_env_file(loader *L, const yaml_node_t *e, const char *what, hy_worker_spec *w, char ***v,
                         size_t *n)
{
    const char *s;
    if (hy_yget_str(&L->y, e, what, &s) < 0)
        return -1;
    bool optional = s[0] == '-';
    if (optional)
        s++;
    if (!*s)
        return hy_yerr(&L->y, e, "%s: the path is empty", what);
    char *path = hy_path_join(L->t->dir, s);
    size_t plen = path ? strlen(path) + 2 : 0;
    char *shown = path ? malloc(plen) : NULL;
    if (!shown) {
        free(path);
        return oom(L, e);
    }
    snprintf(shown, plen, "%s%s", optional ? "-" : "", path);
    char **g = realloc(w->env_files, (w->nenv_files + 2) * sizeof *g);
    if (!g) {
        free(shown);
        free(path);
        return oom(L, e);
    }
    g[w->nenv_files++] = shown;
    g[w->nenv_files] = NULL;
    w->env_files = g;

    hy_err rerr;
    size_t len;
    char *data = (char *)hy_read_file(path, &len, ENV_FILE_MAX, &rerr);
    if (!data) {
        int en = errno;
        free(path);
        if (optional && en == ENOENT)
            return 0;
        if (en == ENOENT)
            return hy_yerr(&L->y, e, "%s: %s (write -%s to ignore a missing file)", what, rerr.msg, s);
        return hy_yerr(&L->y, e, "%s: %s", what, rerr.msg);
    }
    if (memchr(data, '\0', len)) {
        free(data);
        int r = hy_yerr(&L->y, e, "%s: %s: a NUL byte: not a text file", what, path);
        free(path);
        return r;
    }
    char msg[256];
    size_t lineno = 0;
    int r = envfile_parse(data, v, n, msg, sizeof msg, &lineno);
    free(data);
    if (r == -1)
        r = hy_yerr(&L->y, e, "%s: %s:%zu: %s", what, path, lineno, msg);
    else if (r == -2)
        r = oom(L, e);
    free(path);
    return r;
}

/* The env files' variables, then w->env (from `env`) on top: the merged
 * list replaces w->env. */
int hy_topo_parse_env_files(loader *L, const yaml_node_t *val, hy_worker_spec *w, const char *ctx)
{
    yaml_node_t *n = hy_ymap_get(&L->y, val, "env_file");
    if (!n)
        return 0;
    char what[160];
    snprintf(what, sizeof what, "%senv_file", ctx);
    char **v = calloc(1, sizeof *v);
    size_t nv = 0;
    if (!v)
        return oom(L, n);
    int r = 0;
    if (hy_yis_seq(n)) {
        for (yaml_node_item_t *it = n->data.sequence.items.start; r == 0 && it < n->data.sequence.items.top; it++)
            r = read_env_file(L, hy_ynode(&L->y, *it), what, w, &v, &nv);
    } else if (hy_yis_scalar(n) && !hy_yis_null(n)) {
        r = read_env_file(L, n, what, w, &v, &nv);
    } else {
        r = hy_yerr(&L->y, n, "%s must be a path or a list of paths, not %s", what, hy_ykind(n));
    }
    /* `env` wins: its entries go last, in its order, and replace the files'. */
    for (size_t i = 0; r == 0 && i < w->nenv; i++) {
        size_t klen = (size_t)(strchr(w->env[i], '=') - w->env[i]);
        for (size_t j = 0; j < nv; j++)
            if (!strncmp(v[j], w->env[i], klen + 1)) {
                free(v[j]);
                memmove(&v[j], &v[j + 1], (nv - j) * sizeof *v); /* the NULL too */
                nv--;
                break;
            }
    }
    if (r == 0) {
        char **g = realloc(v, (nv + w->nenv + 1) * sizeof *g);
        if (!g) {
            r = oom(L, n);
        } else {
            v = g;
            memcpy(v + nv, w->env, w->nenv * sizeof *v);
            nv += w->nenv;
            v[nv] = NULL;
            free(w->env);
            w->env = v;
            w->nenv = nv;
            return 0;
        }
    }
    for (size_t i = 0; i < nv; i++) /* (not hy_strv_free: topology.c calls down to here) */
        free(v[i]);
    free(v);
    return r;
}

/* ---- autostart and after ------------------------------------------------- */

int hy_topo_parse_start(loader *L, const yaml_node_t *val, hy_worker_spec *w, const char *ctx)
{
    char what[160];
    w->autostart = true;
    yaml_node_t *n = hy_ymap_get(&L->y, val, "autostart");
    if (n) {
        snprintf(what, sizeof what, "%sautostart", ctx);
        if (hy_yget_bool(&L->y, n, what, &w->autostart) < 0)
            return -1;
    }
    if (!(n = hy_ymap_get(&L->y, val, "after")))
        return 0;
    snprintf(what, sizeof what, "%safter", ctx);
    if (hy_yis_scalar(n) && !hy_yis_null(n))
        return hy_yerr(&L->y, n, "%s must be a list of worker names, e.g. [%s]", what, hy_ystr(n));
    if (hy_yexpect_seq(&L->y, n, what) < 0)
        return -1;
    size_t cnt = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (!(w->after = calloc(cnt + 1, sizeof *w->after)))
        return oom(L, n);
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        yaml_node_t *e = hy_ynode(&L->y, *it);
        const char *s;
        if (hy_yget_str(&L->y, e, what, &s) < 0)
            return -1;
        if (!strcmp(s, w->name))
            return hy_yerr(&L->y, e, "%s: '%s' is the worker itself (a worker cannot start after itself)", what, s);
        for (size_t i = 0; i < w->nafter; i++)
            if (!strcmp(w->after[i], s))
                return hy_yerr(&L->y, e, "%s: '%s' is listed twice", what, s);
        if (!(w->after[w->nafter++] = strdup(s)))
            return oom(L, e);
    }
    return 0;
}

/* The `after` item of worker i naming worker `name`, for positions. */
static const yaml_node_t *after_item(loader *L, const yaml_node_t *workers, size_t i, const char *name)
{
    yaml_node_pair_t *p = workers->data.mapping.pairs.start + i;
    yaml_node_t *n = hy_ymap_get(&L->y, hy_ynode(&L->y, p->value), "after");
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        yaml_node_t *e = hy_ynode(&L->y, *it);
        if (!strcmp(hy_ystr(e), name))
            return e;
    }
    return n;
}

static ptrdiff_t worker_index(const hy_topology *t, const char *name)
{
    for (size_t i = 0; i < t->nworkers; i++)
        if (!strcmp(t->workers[i].name, name))
            return (ptrdiff_t)i;
    return -1;
}

/* Depth first from worker i; color 0 unseen, 1 on the path, 2 done. */
static int after_visit(loader *L, const yaml_node_t *workers, size_t i, unsigned char *color, size_t *path,
                       size_t depth)
{
    const hy_topology *t = L->t;
    color[i] = 1;
    path[depth] = i;
    const hy_worker_spec *w = &t->workers[i];
    for (size_t a = 0; a < w->nafter; a++) {
        size_t j = (size_t)worker_index(t, w->after[a]);
        if (color[j] == 2)
            continue;
        if (color[j] == 1) {
            size_t from = 0;
            while (path[from] != j)
                from++;
            char cyc[1024];
            size_t off = 0;
            for (size_t k = from; k <= depth && off < sizeof cyc; k++)
                off += (size_t)snprintf(cyc + off, sizeof cyc - off, "%s -> ", t->workers[path[k]].name);
            if (off < sizeof cyc)
                snprintf(cyc + off, sizeof cyc - off, "%s", t->workers[j].name);
            const hy_worker_spec *head = &t->workers[path[from]];
            const char *next = from < depth ? t->workers[path[from + 1]].name : t->workers[j].name;
            return hy_yerr(&L->y, after_item(L, workers, path[from], next),
                           "workers.%s.after: a cycle: %s (no worker of it could ever start)", head->name, cyc);
        }
        if (after_visit(L, workers, j, color, path, depth + 1) < 0)
            return -1;
    }
    color[i] = 2;
    return 0;
}

int hy_topo_check_after(loader *L, const yaml_node_t *workers)
{
    const hy_topology *t = L->t;
    for (size_t i = 0; i < t->nworkers; i++)
        for (size_t a = 0; a < t->workers[i].nafter; a++)
            if (worker_index(t, t->workers[i].after[a]) < 0)
                return hy_yerr(&L->y, after_item(L, workers, i, t->workers[i].after[a]),
                               "workers.%s.after: no worker named '%s'", t->workers[i].name,
                               t->workers[i].after[a]);
    unsigned char *color = calloc(t->nworkers + 1, 1);
    size_t *path = calloc(t->nworkers + 1, sizeof *path);
    int r = 0;
    if (!color || !path)
        r = oom(L, workers);
    for (size_t i = 0; r == 0 && i < t->nworkers; i++)
        if (!color[i])
            r = after_visit(L, workers, i, color, path, 0);
    free(color);
    free(path);
    return r;
}
