/* hyphactl.c - the on-call CLI: one request to hyphad's control socket, the
 * reply printed as a table for people or as JSON for scripts
 * (docs/control.md). `restart --rolling` is a sequence of them (ctlroll.c).
 *
 * Exit codes: 0 done, 1 hyphad answered with an error, 3 hyphad
 * unreachable, 64 usage. `health` exits 0 healthy, 1 degraded, 2 unhealthy,
 * 3 unreachable, so it works as a Kubernetes exec probe.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ctlclient.h"
#include "ctlroll.h"
#include "ctlupgrade.h"
#include "hypha/ctlpath.h"
#include "hypha/table.h"
#include "hypha/units.h"
#include "hypha/version.h"

#define REPLY_TIMEOUT_MS 5000
/* A worker's stderr line may hold a NUL byte: hyphad writes it as \u0000, which
 * is JSON, but jansson reads it only when told to. */
#define REPLY_FLAGS JSON_ALLOW_NUL

static void usage(FILE *out);

static const char *default_socket(void)
{
    static char buf[256];
    const char *env = getenv("HYPHA_CONTROL_SOCKET");
    if (env && *env)
        snprintf(buf, sizeof buf, "%s", env);
    else
        hy_default_control_socket(buf, sizeof buf);
    return buf;
}

/* ---- formatting ----------------------------------------------------------- */

static const char *dur(json_t *v, char *out, size_t len)
{
    if (!json_is_number(v)) {
        snprintf(out, len, "-");
        return out;
    }
    return hy_format_age(json_number_value(v), out, len);
}

static const char *num(json_t *v, char *out, size_t len)
{
    if (json_is_integer(v))
        snprintf(out, len, "%lld", (long long)json_integer_value(v));
    else
        snprintf(out, len, "-");
    return out;
}

static const char *bytes(json_t *v, char *out, size_t len)
{
    return hy_format_bytes(json_is_integer(v) ? (uint64_t)json_integer_value(v) : 0, out, len);
}

/* One line when the contracts file on disk is not what hyphad runs. */
static void print_schema_stale(json_t *h)
{
    if (!json_is_true(json_object_get(h, "schema_stale")))
        return;
    const char *run = json_string_value(json_object_get(h, "schema"));
    const char *disk = json_string_value(json_object_get(h, "schema_on_disk"));
    const char *file = json_string_value(json_object_get(h, "schema_file"));
    if (disk)
        printf("contracts: changed on disk (running %.12s..., on disk %.12s...): restart hyphad to apply\n",
               run ? run : "?", disk);
    else
        printf("contracts: %s is gone or unreadable (running %.12s...): hyphad runs the contracts it loaded\n",
               file ? file : "the contracts file", run ? run : "?");
}

/* The table form of status: hyphad formats the rows (hy_status_table). */
static void print_status(json_t *r)
{
    json_t *h = json_object_get(r, "hyphad"), *up = json_object_get(r, "upstream"), *hl = json_object_get(r, "health");
    char a[64], b[64], c[64];
    printf("hyphad %s  pid %s  up %s  %s  schema %.12s\n", json_string_value(json_object_get(h, "version")),
           num(json_object_get(h, "pid"), a, sizeof a), dur(json_object_get(h, "uptime_s"), b, sizeof b),
           json_is_object(up) ? "upstream" : "embedded bus", json_string_value(json_object_get(h, "schema")));
    print_schema_stale(h);
    if (json_is_object(hl))
        printf("health %s: %s\n", json_string_value(json_object_get(hl, "health")),
               json_string_value(json_object_get(hl, "reason")));
    const char *hs = json_string_value(json_object_get(up, "handshake")); /* an older hyphad has none */
    if (json_is_object(up)) {
        char t[64], rs[64], in[64];
        json_int_t resent = json_integer_value(json_object_get(up, "frames_resent"));
        printf("upstream %s  handshake %s  %s for %s  buffered %s%s  out %s frames (taken %s%s%s)  in %s frames\n",
               json_string_value(json_object_get(up, "endpoint")), hs ? hs : "?",
               json_string_value(json_object_get(up, "state")),
               dur(json_object_get(up, "state_for_s"), a, sizeof a), bytes(json_object_get(up, "buffered_bytes"), b, sizeof b),
               json_is_true(json_object_get(up, "back_pressure")) ? " (full: workers paused)" : "",
               num(json_object_get(up, "frames_out"), c, sizeof c), num(json_object_get(up, "frames_taken"), t, sizeof t),
               resent ? ", resent " : "", resent ? num(json_object_get(up, "frames_resent"), rs, sizeof rs) : "",
               num(json_object_get(up, "frames_in"), in, sizeof in));
    }
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(r, "listen"), i, l) {
        json_t *rf = json_object_get(l, "refused");
        char d[32], e[32];
        printf("listen %s  %s clients (max %s, handshake %s)  refused: handshake %s, max_clients %s, fd_reserve %s\n",
               json_string_value(json_object_get(l, "endpoint")), num(json_object_get(l, "clients"), a, sizeof a),
               num(json_object_get(l, "max_clients"), b, sizeof b),
               json_string_value(json_object_get(l, "handshake")) ? json_string_value(json_object_get(l, "handshake")) : "?",
               num(json_object_get(rf, "handshake"), c, sizeof c), num(json_object_get(rf, "max_clients"), d, sizeof d),
               num(json_object_get(rf, "fd_reserve"), e, sizeof e));
    }
    putchar('\n');
    json_t *rows = json_object_get(r, "rows");
    size_t ncols = json_array_size(json_array_get(rows, 0));
    if (ncols == 0 || ncols > HY_TABLE_MAX_COLS)
        return;
    hy_table t;
    hy_table_init(&t, ncols);
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        const char *cells[HY_TABLE_MAX_COLS] = {0};
        for (size_t k = 0; k < ncols; k++)
            cells[k] = json_string_value(json_array_get(row, k));
        hy_table_add(&t, cells);
    }
    hy_table_print(&t, stdout);
    hy_table_free(&t);
    json_array_foreach(json_object_get(r, "notes"), i, l) printf("%s\n", json_string_value(l));
}

static void print_names(const char *label, json_t *list)
{
    printf("%-10s", label);
    if (json_array_size(list) == 0)
        printf(" -");
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) printf(" %s", json_string_value(v));
    putchar('\n');
}

static void print_instances(json_t *r)
{
    printf("%s\n", json_string_value(json_object_get(r, "message")));
    hy_table t;
    hy_table_init(&t, 3);
    hy_table_add(&t, (const char *const[]){"INSTANCE", "STATE", "PID"});
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(r, "instances"), i, w)
    {
        char name[160], pid[24];
        snprintf(name, sizeof name, "%s[%lld]", json_string_value(json_object_get(w, "worker")),
                 (long long)json_integer_value(json_object_get(w, "instance")));
        hy_table_add(&t, (const char *const[]){name, json_string_value(json_object_get(w, "state")),
                                               num(json_object_get(w, "pid"), pid, sizeof pid)});
    }
    hy_table_print(&t, stdout);
    hy_table_free(&t);
}

/* The line as the worker wrote it, a NUL byte included. */
static void print_tail_line(json_t *l)
{
    json_t *line = json_object_get(l, "line");
    printf("%s[%lld] ", json_string_value(json_object_get(l, "worker")),
           (long long)json_integer_value(json_object_get(l, "instance")));
    fwrite(json_string_value(line) ? json_string_value(line) : "", 1, json_string_length(line), stdout);
    putchar('\n');
}

static void print_tail(json_t *r)
{
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(r, "lines"), i, l) print_tail_line(l);
}

static void print_health(json_t *r)
{
    printf("%s: %s\n", json_string_value(json_object_get(r, "health")),
           json_string_value(json_object_get(r, "reason")));
}

static void print_metrics(json_t *r)
{
    fputs(json_string_value(json_object_get(r, "text")), stdout);
}

static void print_reload(json_t *r)
{
    printf("reloaded\n");
    print_names("started", json_object_get(r, "started"));
    print_names("stopped", json_object_get(r, "stopped"));
    print_names("restarted", json_object_get(r, "restarted"));
    print_names("unchanged", json_object_get(r, "unchanged"));
}

/* ---- the command line -------------------------------------------------------- */

typedef struct command command;

typedef struct cli {
    const char *sock, *config;
    int json;
    const command *cmd;
    bool stream;      /* tail -f, tap: lines follow the reply */
    bool rolling;     /* restart --rolling */
    bool upgrade;     /* upgrade: the request, then the outcome (ctlupgrade.c) */
    bool helped;      /* `CMD --help` was answered */
    double timeout_s; /* restart --rolling: how long each instance may take to be ready; upgrade: for an answer */
} cli;

/* A command: its own arguments into the request (NULL: none; returns
 * EXIT_OK or EXIT_USAGE, having said why), and its reply printed for people
 * (NULL: nothing). */
struct command {
    const char *name;
    int (*args)(cli *o, json_t *req, int argc, char **argv);
    void (*print)(json_t *r);
    const char *synopsis; /* after the name, in the usage */
    const char *summary;  /* one line */
    const char *help;     /* `hyphactl CMD --help`: more lines, or NULL */
};

static int parse_count(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        return -1;
    *out = v;
    return 0;
}

static int args_status(cli *o, json_t *req, int argc, char **argv)
{
    if (optind < argc)
        json_object_set_new(req, "name", json_string(argv[optind++]));
    if (!o->json) /* rows of text: cheaper for hyphad and for us than full objects */
        json_object_set_new(req, "table", json_true());
    return EXIT_OK;
}

/* stop, start */
static int args_name(cli *o, json_t *req, int argc, char **argv)
{
    if (optind >= argc) {
        fprintf(stderr, "hyphactl: %s needs a worker name (NAME, NAME[i] or all)\n", o->cmd->name);
        return EXIT_USAGE;
    }
    json_object_set_new(req, "name", json_string(argv[optind++]));
    return EXIT_OK;
}

static bool is_timeout(const char *a) { return strcmp(a, "--timeout") == 0 || strncmp(a, "--timeout=", 10) == 0; }

/* --timeout DURATION or --timeout=DURATION (restart --rolling, upgrade): 0, or -1 having said why. */
static int timeout_arg(cli *o, const char *a, int argc, char **argv)
{
    uint64_t ms;
    char why[128];
    const char *v = a[9] == '=' ? a + 10 : (++optind < argc ? argv[optind] : NULL);
    if (!v || hy_parse_duration_ms(v, &ms, why, sizeof why) < 0 || ms == 0) {
        fprintf(stderr, "hyphactl: %s --timeout takes a duration above 0 (30s, 2m)\n", o->cmd->name);
        return -1;
    }
    o->timeout_s = (double)ms / 1000.0;
    return 0;
}

/* restart [--rolling] [--preload] [--timeout DURATION] NAME */
static int args_restart(cli *o, json_t *req, int argc, char **argv)
{
    const char *name = NULL;
    o->timeout_s = 120.0;
    for (; optind < argc; optind++) {
        const char *a = argv[optind];
        if (strcmp(a, "--rolling") == 0) {
            o->rolling = true;
        } else if (strcmp(a, "--preload") == 0) {
            json_object_set_new(req, "preload", json_true());
        } else if (is_timeout(a)) {
            if (timeout_arg(o, a, argc, argv) < 0)
                return EXIT_USAGE;
        } else if (a[0] == '-' || name) {
            fprintf(stderr, "hyphactl: restart: unexpected '%s'\n", a);
            return EXIT_USAGE;
        } else {
            name = a;
        }
    }
    if (!name) {
        fprintf(stderr, "hyphactl: restart needs a worker name (NAME, NAME[i] or all)\n");
        return EXIT_USAGE;
    }
    json_object_set_new(req, "name", json_string(name));
    return EXIT_OK;
}

/* signal NAME SIG */
static int args_signal(cli *o, json_t *req, int argc, char **argv)
{
    (void)o;
    if (argc - optind < 2) {
        fprintf(stderr, "hyphactl: signal needs a worker name and a signal: signal NAME HUP\n");
        return EXIT_USAGE;
    }
    json_object_set_new(req, "name", json_string(argv[optind++]));
    const char *sig = argv[optind++];
    long n;
    json_object_set_new(req, "signal", parse_count(sig, &n) == 0 ? json_integer(n) : json_string(sig));
    return EXIT_OK;
}

static int args_tail(cli *o, json_t *req, int argc, char **argv)
{
    long n = 10;
    bool follow = false;
    const char *name = NULL;
    for (; optind < argc; optind++) {
        const char *a = argv[optind];
        if (strcmp(a, "-f") == 0 || strcmp(a, "--follow") == 0) {
            follow = true;
        } else if (strcmp(a, "-n") == 0 || strcmp(a, "--lines") == 0) {
            if (++optind >= argc || parse_count(argv[optind], &n) < 0) {
                fprintf(stderr, "hyphactl: tail -n takes a number of lines\n");
                return EXIT_USAGE;
            }
        } else if (strncmp(a, "-n", 2) == 0 && parse_count(a + 2, &n) == 0) {
        } else if (a[0] == '-' || name) {
            fprintf(stderr, "hyphactl: tail: unexpected '%s'\n", a);
            return EXIT_USAGE;
        } else {
            name = a;
        }
    }
    if (!name) {
        fprintf(stderr, "hyphactl: tail needs a worker name (NAME or NAME[i])\n");
        return EXIT_USAGE;
    }
    json_object_set_new(req, "name", json_string(name));
    json_object_set_new(req, "lines", json_integer(n));
    json_object_set_new(req, "follow", json_boolean(follow));
    o->stream = follow;
    return EXIT_OK;
}

static int args_tap(cli *o, json_t *req, int argc, char **argv)
{
    json_t *types = json_array();
    long count = 0;
    for (; optind < argc; optind++) {
        const char *a = argv[optind];
        if (strcmp(a, "--count") == 0 || strcmp(a, "-c") == 0) {
            if (++optind >= argc || parse_count(argv[optind], &count) < 0 || count == 0) {
                fprintf(stderr, "hyphactl: tap --count takes a number above 0\n");
                json_decref(types);
                return EXIT_USAGE;
            }
        } else if (strncmp(a, "--count=", 8) == 0) {
            if (parse_count(a + 8, &count) < 0 || count == 0) {
                fprintf(stderr, "hyphactl: tap --count takes a number above 0\n");
                json_decref(types);
                return EXIT_USAGE;
            }
        } else {
            json_array_append_new(types, json_string(a));
        }
    }
    if (json_array_size(types) == 0) {
        fprintf(stderr, "hyphactl: tap needs at least one message type (name or id)\n");
        json_decref(types);
        return EXIT_USAGE;
    }
    json_object_set_new(req, "types", types);
    if (count)
        json_object_set_new(req, "count", json_integer(count));
    o->stream = true;
    return EXIT_OK;
}

/* upgrade [PATH] [--timeout DURATION] */
static int args_upgrade(cli *o, json_t *req, int argc, char **argv)
{
    o->upgrade = true;
    o->timeout_s = 30.0;
    for (; optind < argc; optind++) {
        const char *a = argv[optind];
        if (is_timeout(a)) {
            if (timeout_arg(o, a, argc, argv) < 0)
                return EXIT_USAGE;
        } else if (a[0] == '-' || json_object_get(req, "path")) {
            fprintf(stderr, "hyphactl: upgrade: unexpected '%s'\n", a);
            return EXIT_USAGE;
        } else {
            char *abs = realpath(a, NULL);
            if (!abs) {
                fprintf(stderr, "hyphactl: upgrade: %s: %s\n", a, strerror(errno));
                return EXIT_USAGE;
            }
            json_object_set_new(req, "path", json_string(abs));
            free(abs);
        }
    }
    return EXIT_OK;
}

static const command commands[] = {
    {"status", args_status, print_status, "[NAME]", "state of every instance (or of NAME)",
     "  A table: state, pid, uptime, restarts, last exit, frames and bytes in and out, drops,\n"
     "  queue depth; --json for every field (docs/status.md)."},
    {"health", NULL, print_health, "", "one line; exit 0 healthy, 1 degraded, 2 unhealthy, 3 unreachable",
     "  The exit code is the verdict, with or without --json: fit for an exec probe."},
    {"restart", args_restart, print_instances, "[--rolling] [--preload] NAME",
     "stop gracefully and start again; clears failed",
     "  --rolling [--timeout T]: one instance at a time, each restarted once the one\n"
     "  before is ready again with a new process. The rollout stops (exit 1) at an\n"
     "  instance not ready within T (default 2m), or failed; the ones after it are\n"
     "  left as they were.\n"
     "  --preload: its fork server first (a worker with `preload`): the modules are\n"
     "  imported again, so a change to their files takes effect (with --rolling: at\n"
     "  the first instance)."},
    {"stop", args_name, print_instances, "NAME", "stop gracefully; it stays stopped", NULL},
    {"start", args_name, print_instances, "NAME", "start now; clears backoff and failed", NULL},
    {"signal", args_signal, print_instances, "NAME SIG", "send SIG to each instance's process group",
     "  SIG: TERM, INT, HUP, QUIT, KILL, USR1, USR2, ABRT, ALRM, WINCH, CONT, STOP (SIGHUP and\n"
     "  hup too), or a number. hyphad does not change the instance's state: a worker that\n"
     "  exits on it is handled as any exit (restart policy, backoff)."},
    {"reload", NULL, print_reload, "", "re-read the topology (as SIGHUP)", NULL},
    {"upgrade", args_upgrade, NULL, "[PATH] [--timeout T]", "re-execute hyphad in place; workers keep running",
     "  The binary at PATH (default: hyphad's own path, the new file if it was replaced)\n"
     "  takes over the running process (as SIGUSR2): workers keep their pids and pipes,\n"
     "  the upstream connection and listening sockets stay open, queues and counters\n"
     "  carry over. A binary that cannot take over is refused, or falls back to the old\n"
     "  one: exit 0 upgraded, 1 refused or failed (the old hyphad serving), 3 no answer\n"
     "  within T (default 30s). docs/supervision.md says what survives."},
    {"tail", args_tail, print_tail, "NAME [-n N] [-f]", "the last N (10) stderr lines; -f: keep following",
     NULL},
    {"tap", args_tap, NULL, "TYPE... [--count N]", "live frames of those types, decoded, one JSON object a line",
     NULL},
    {"metrics", NULL, print_metrics, "", "Prometheus text", NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: hyphactl [--socket PATH | --config TOPOLOGY.yaml] [--json] COMMAND [ARGS]\n\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        char left[64];
        snprintf(left, sizeof left, "%s %s", commands[i].name, commands[i].synopsis);
        fprintf(out, "  %-34s %s\n", left, commands[i].summary);
    }
    fprintf(out, "\n"
                 "  NAME: a worker, NAME[i] one of its instances, or all (every worker)\n"
                 "  --socket PATH   hyphad's control socket\n"
                 "  --config FILE   read the socket path from the topology\n"
                 "                  (default: $HYPHA_CONTROL_SOCKET, else hyphad's default path)\n"
                 "  --json          print hyphad's reply as JSON, for scripts\n"
                 "  options may stand before or after the command; `hyphactl COMMAND --help`\n"
                 "\n"
                 "exit: 0 done, 1 hyphad said no, 3 hyphad unreachable, 64 usage; health: its verdict\n");
}

/* `hyphactl CMD --help` (or -h): that command's usage. */
static bool wants_help(int from, int argc, char **argv)
{
    for (int i = from; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    return false;
}

static void command_help(const command *c)
{
    printf("usage: hyphactl [--socket PATH | --config FILE] [--json] %s %s\n\n  %s\n", c->name, c->synopsis,
           c->summary);
    if (c->help)
        printf("%s\n", c->help);
}

/* hyphactl's own options, up to the command. Returns -1 to go on, else the
 * exit code. */
static int parse_options(cli *o, int argc, char **argv)
{
    static const struct option opts[] = {
        {"socket", required_argument, NULL, 's'}, {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},         {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    int c;
    /* Options stop at the command: its own (-n, -f, --count) follow it. */
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case 's': o->sock = optarg; break;
        case 'c': o->config = optarg; break;
        case 'j': o->json = 1; break;
        case 'V': printf("hyphactl %s\n", HYPHA_VERSION); return EXIT_OK;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    return -1;
}

/* hyphactl's options may follow the command too (`hyphactl status --json`):
 * they are taken out of argv[from..argc); returns the new argc, or -1 for
 * an option that lacks its value. */
static int take_late_options(cli *o, int from, int argc, char **argv)
{
    static const char *const late[] = {"--json", "--socket", "--config"}; /* the last two take a value */
    const size_t none = sizeof late / sizeof late[0];
    int k = from;
    for (int i = from; i < argc; i++) {
        const char *a = argv[i];
        size_t which = none;
        for (size_t j = 0; j < none; j++) {
            size_t n = strlen(late[j]);
            if (strncmp(a, late[j], n) == 0 && (a[n] == '\0' || (j > 0 && a[n] == '=')))
                which = j;
        }
        if (which == 0) {
            o->json = 1;
            continue;
        }
        if (which < none) {
            const char *eq = strchr(a, '='), *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v) {
                fprintf(stderr, "hyphactl: %s needs a value\n", a);
                return -1;
            }
            *(which == 1 ? &o->sock : &o->config) = v;
            continue;
        }
        argv[k++] = argv[i];
    }
    return k;
}

/* The command and its arguments as a request; NULL: a usage error, said. */
static json_t *build_request(cli *o, int argc, char **argv)
{
    if (optind >= argc) {
        usage(stderr);
        return NULL;
    }
    const char *name = argv[optind++];
    for (size_t i = 0; i < sizeof commands / sizeof commands[0] && !o->cmd; i++)
        if (strcmp(name, commands[i].name) == 0)
            o->cmd = &commands[i];
    if (!o->cmd) {
        fprintf(stderr, "hyphactl: unknown command '%s'\n", name);
        usage(stderr);
        return NULL;
    }
    if (wants_help(optind, argc, argv)) {
        command_help(o->cmd);
        o->helped = true;
        return NULL;
    }
    if ((argc = take_late_options(o, optind, argc, argv)) < 0) {
        usage(stderr);
        return NULL;
    }
    json_t *req = json_pack("{s:s}", "cmd", name);
    if (o->cmd->args && o->cmd->args(o, req, argc, argv) != EXIT_OK) {
        json_decref(req);
        return NULL;
    }
    if (optind < argc) {
        fprintf(stderr, "hyphactl: %s: unexpected '%s'\n", name, argv[optind]);
        json_decref(req);
        return NULL;
    }
    return req;
}

/* --socket, else the topology's (--config), else the default. */
static int resolve_socket(cli *o)
{
    if (!o->sock && o->config) {
        hy_err err = {{0}};
        static char path[256];
        if (hy_control_socket_of(o->config, path, sizeof path, &err) < 0) {
            fprintf(stderr, "hyphactl: %s\n", err.msg);
            return EXIT_USAGE;
        }
        o->sock = path;
    }
    if (!o->sock)
        o->sock = default_socket();
    return EXIT_OK;
}

/* ---- the exchange -------------------------------------------------------------- */

/* hyphad's reply line: EXIT_OK with *reply set when it says ok, else the
 * exit code. --json prints the line as it came. */
static int parse_reply(const cli *o, const char *line, json_t **reply)
{
    json_error_t jerr;
    json_t *r = json_loads(line, REPLY_FLAGS, &jerr);
    if (!json_is_object(r)) {
        fprintf(stderr, "hyphactl: hyphad's reply is not a JSON object: %s\n", jerr.text);
        json_decref(r);
        return EXIT_FAIL;
    }
    if (o->json)
        printf("%s\n", line);
    if (!json_is_true(json_object_get(r, "ok"))) {
        if (!o->json)
            fprintf(stderr, "hyphactl: %s\n", json_string_value(json_object_get(r, "error")));
        if (!o->json && json_is_true(json_object_get(r, "busy")))
            fprintf(stderr, "hyphactl: hyphad is alive but has no control connection to spare: end forgotten "
                            "`hyphactl tail -f` or `tap` sessions and try again\n");
        int rc = json_is_true(json_object_get(r, "refused")) ? EXIT_UNREACHABLE : EXIT_FAIL;
        json_decref(r);
        return rc;
    }
    *reply = r;
    return EXIT_OK;
}

/* Sends the request (taking it) and reads the reply. EXIT_OK: *reply is
 * hyphad's ok and *cn stays open for what follows; else the exit code, *cn
 * closed. */
static int exchange(const cli *o, json_t *req, conn *cn, json_t **reply)
{
    int rc = conn_open(cn, o->sock);
    int send_err = 0;
    if (rc == EXIT_OK && (rc = conn_send(cn, req)) < 0) {
        send_err = -rc;
        rc = EXIT_OK;
    }
    json_decref(req);
    if (rc != EXIT_OK) {
        conn_close(cn);
        return strcmp(o->cmd->name, "health") == 0 && rc != EXIT_USAGE ? EXIT_UNREACHABLE : rc;
    }
    const char *why = NULL;
    char *line = conn_line(cn, REPLY_TIMEOUT_MS, &why);
    if (!line)
        rc = send_err ? unreachable(o->sock, "send", send_err) : unreachable(o->sock, why, 0);
    else
        rc = parse_reply(o, line, reply);
    if (rc != EXIT_OK)
        conn_close(cn);
    return rc;
}

/* tail -f, tap: the lines after the reply, until hyphad or the user ends it. */
static void follow(conn *cn, const cli *o)
{
    const char *why = NULL;
    char *line;
    while ((line = conn_line(cn, -1, &why))) {
        if (o->json || strcmp(o->cmd->name, "tap") == 0) {
            printf("%s\n", line);
        } else {
            json_t *l = json_loads(line, REPLY_FLAGS, NULL);
            if (json_is_object(l) && json_object_get(l, "skipped"))
                printf("... %lld lines skipped (hyphactl was not reading fast enough)\n",
                       (long long)json_integer_value(json_object_get(l, "skipped")));
            else if (json_is_object(l))
                print_tail_line(l);
            json_decref(l);
        }
        fflush(stdout);
    }
}

int main(int argc, char **argv)
{
    cli o = {0};
    int rc = parse_options(&o, argc, argv);
    if (rc >= 0)
        return rc;
    json_t *req = build_request(&o, argc, argv);
    if (!req)
        return o.helped ? EXIT_OK : EXIT_USAGE;
    if ((rc = resolve_socket(&o)) != EXIT_OK) {
        json_decref(req);
        return rc;
    }
    signal(SIGPIPE, SIG_IGN);
    if (o.rolling)
        return hy_roll_restart(o.sock, req, o.timeout_s, o.json);
    if (o.upgrade)
        return hy_ctl_upgrade(o.sock, req, o.timeout_s, o.json);

    conn cn;
    json_t *r = NULL;
    if ((rc = exchange(&o, req, &cn, &r)) != EXIT_OK)
        return rc;
    /* health's exit code is hyphad's verdict, --json or not */
    rc = strcmp(o.cmd->name, "health") == 0 ? (int)json_integer_value(json_object_get(r, "code")) : EXIT_OK;
    if (!o.json && o.cmd->print)
        o.cmd->print(r);
    json_decref(r);
    fflush(stdout);
    if (o.stream)
        follow(&cn, &o);
    conn_close(&cn);
    return rc;
}
