/* test_topology.c - the topology loader: bad documents (message and position),
 * good documents (every resolved value), signal names and endpoint text. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <ftw.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "hypha/topology.h"
#include "testdir.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* The temp directory the documents are loaded against (realpath'd). */
static char base_dir[PATH_MAX];

/* tests/ in the source tree, from this file's path: the test binaries are
 * also run outside ctest, without HYPHA_VECTORS set. */
static void tests_dir(char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", __FILE__);
    for (int up = 0; up < 2; up++) { /* tests/unit/test_topology.c -> tests */
        char *slash = strrchr(out, '/');
        if (slash)
            *slash = '\0';
    }
}

static void write_file(const char *rel, const char *text, mode_t mode)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", base_dir, rel);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

static int setup(void **state)
{
    (void)state;
    if (hy_test_mkdtemp("topo", base_dir) < 0 ||
        hy_test_copy_vector(base_dir, "mycelium-examples.contracts.yaml", "contracts.yaml") < 0)
        return -1;
    /* a contracts file with a YAML error on line 3 */
    write_file("bad.contracts.yaml", "messages:\n  Foo: [unclosed\n", 0644);
    write_file("notadir", "", 0644);
    write_file("notexec", "#!/bin/sh\n", 0644);
    char dir[PATH_MAX + 8];
    snprintf(dir, sizeof dir, "%s/srv", base_dir);
    mkdir(dir, 0755);
    snprintf(dir, sizeof dir, "%s/bin", base_dir);
    mkdir(dir, 0755);
    write_file("bin/tool", "#!/bin/sh\nexit 0\n", 0755);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return hy_test_rmtree(base_dir);
}

/* `tmpl` with every "@D" replaced by base_dir. */
static void expand(const char *tmpl, char *out, size_t outlen)
{
    size_t n = 0;
    for (const char *p = tmpl; *p && n + 1 < outlen; p++) {
        if (p[0] == '@' && p[1] == 'D') {
            n += (size_t)snprintf(out + n, outlen - n, "%s", base_dir);
            p++;
        } else {
            out[n++] = *p;
        }
    }
    out[n < outlen ? n : outlen - 1] = '\0';
}

static hy_topology *load(const char *yaml_tmpl, hy_err *err)
{
    static char doc[8192];
    expand(yaml_tmpl, doc, sizeof doc);
    err->msg[0] = '\0';
    return hy_topology_load_buffer("topo.yaml", base_dir, (const uint8_t *)doc, strlen(doc), err);
}

static hy_topology *load_ok(const char *yaml_tmpl)
{
    hy_err err;
    hy_topology *t = load(yaml_tmpl, &err);
    if (!t)
        fail_msg("load failed: %s", err.msg);
    return t;
}

/* The message starts with exactly "FILE:LINE:COL: " and contains `want`
 * (after @D expansion). Prints what differs; returns 1 if it matches. */
static int error_matches(const char *name, const char *msg, const char *file, size_t line,
                         size_t col, const char *want_tmpl)
{
    char prefix[PATH_MAX + 64], want[1024];
    snprintf(prefix, sizeof prefix, "%s:%zu:%zu: ", file, line, col);
    expand(want_tmpl, want, sizeof want);
    if (strncmp(msg, prefix, strlen(prefix)) != 0) {
        print_error("%s: expected prefix '%s', got '%s'\n", name, prefix, msg);
        return 0;
    }
    if (!strstr(msg + strlen(prefix), want)) {
        print_error("%s: expected '%s' in '%s'\n", name, want, msg);
        return 0;
    }
    return 1;
}

#define check_error(...) assert_true(error_matches(__VA_ARGS__))

/* ---- bad documents ---------------------------------------------------- */

typedef struct bad_doc {
    const char *name;
    const char *yaml;
    const char *expected_substring; /* "@D" stands for the base directory */
    size_t line;
    size_t col;
} bad_doc;

#define HDR "version: 1\nschema: contracts.yaml\n"
#define W_A HDR "workers:\n  a:\n    command: [/bin/true]\n" /* worker keys go on line 6 */
#define X10 "xxxxxxxxxx"
#define LONG_SOCK "/tmp/" X10 X10 X10 X10 X10 X10 X10 X10 X10 X10 "x.sock" /* 5+101+5 = 111 */

static const bad_doc bad_docs[] = {
    /* keys */
    {"unknown top-level key", HDR "workerz: {}\n",
     "unknown key 'workerz' in the topology (did you mean 'workers'?)", 3, 1},
    {"unknown top-level key, nothing close", HDR "banana: 1\n",
     "unknown key 'banana' in the topology (expected one of: version, schema, upstream, "
     "listen, control, metrics, cgroup, defaults, workers)", 3, 1},
    {"unknown key in a worker", W_A "    instance: 2\n",
     "unknown key 'instance' in workers.a (did you mean 'instances'?)", 6, 5},
    {"unknown key in defaults.backoff", HDR "defaults:\n  backoff: {initial: 1s, maxx: 5s}\n",
     "unknown key 'maxx' in defaults.backoff (did you mean 'max'?)", 4, 26},
    {"unknown key in a worker's backoff", W_A "    backoff:\n      initail: 1s\n",
     "unknown key 'initail' in workers.a.backoff (did you mean 'initial'?)", 7, 7},
    {"non-scalar key", W_A "    ? [x]\n    : 1\n",
     "keys in workers.a must be plain names, not a list", 6, 7},
    {"duplicate worker", HDR "workers:\n  a:\n    command: [/bin/true]\n  a:\n    command: [/bin/false]\n",
     "duplicate key 'a' in workers (first at line 4)", 6, 3},
    {"duplicate key", HDR "defaults:\n  restart: always\n  restart: never\n",
     "duplicate key 'restart' in defaults (first at line 4)", 5, 3},
    /* wrong types */
    {"workers is a list", HDR "workers:\n  - a\n", "workers must be a mapping, not a list", 4, 3},
    {"worker is null", HDR "workers:\n  a:\n", "workers.a must be a mapping, not null", 4, 5},
    {"instances: two", W_A "    instances: two\n",
     "workers.a.instances must be a whole number from 1 to 1000, not 'two'", 6, 16},
    {"echo: maybe", HDR "upstream:\n  unix: bus.sock\n  echo: maybe\n",
     "upstream.echo must be true or false, not 'maybe'", 5, 9},
    {"handshake: auto (upstream)", HDR "upstream:\n  unix: bus.sock\n  handshake: auto\n",
     "upstream.handshake must be digest or none, not 'auto'", 5, 14},
    {"handshake: a list", HDR "upstream: {tcp: \"127.0.0.1:9091\", handshake: [none]}\n",
     "upstream.handshake must be", 3, 46},
    {"version not a number", "version: one\nschema: contracts.yaml\n",
     "version must be a whole number from 0 to 1000, not 'one'", 1, 10},
    /* durations and sizes */
    {"duration without unit", HDR "defaults:\n  backoff:\n    initial: 5\n",
     "backoff.initial: bad duration '5': missing unit (ms, s, m, h, d), e.g. 5s", 5, 14},
    {"duration in parsecs", HDR "defaults:\n  backoff: {initial: 10 parsecs}\n",
     "defaults.backoff.initial: bad duration '10 parsecs': no space between number and unit: write 5s, not 5 s", 4, 22},
    {"bad size", HDR "upstream:\n  unix: bus.sock\n  buffer: 8 MiBs\n",
     "upstream.buffer: bad size '8 MiBs': unknown unit (use B, KiB, MiB, GiB, KB, MB or GB)", 5, 11},
    {"upstream.buffer below one frame", HDR "upstream: {unix: bus.sock, buffer: 100B}\n",
     "upstream.buffer 100B is smaller than the largest framed message (318 bytes)", 3, 36},
    {"queue.limit below one frame", W_A "    queue: {limit: 317B}\n",
     "workers.a.queue.limit 317B is smaller than the largest framed message (318 bytes)", 6, 12},
    {"defaults queue.limit below one frame", HDR "defaults:\n  queue: {limit: 100B}\n"
     "workers:\n  a:\n    command: [/bin/true]\n",
     "defaults.queue.limit 100B is smaller than the largest framed message (318 bytes)", 4, 10},
    /* messages */
    {"unknown message name in subscribe", W_A "    subscribe: [TextMessage, TextMesage]\n",
     "workers.a.subscribe: unknown message 'TextMesage' (not in @D/contracts.yaml)", 6, 30},
    {"unknown type id in publish", W_A "    publish: [1001, 1999]\n",
     "workers.a.publish: type id 1999 is not defined in @D/contracts.yaml", 6, 21},
    {"type id 0", W_A "    subscribe: [0]\n",
     "workers.a.subscribe: type id 0 is reserved for control frames", 6, 17},
    {"type id too large", W_A "    subscribe: [65536]\n",
     "workers.a.subscribe: '65536' is not a type id (1-65535)", 6, 17},
    {"type id with a leading zero is decimal", W_A "    subscribe: [01004]\n",
     "workers.a.subscribe: type id 1004 is not defined in", 6, 17},
    {"hex with a sign", W_A "    instances: 0x-5\n",
     "workers.a.instances must be a whole number from 1 to 1000, not '0x-5'", 6, 16},
    /* schema and version */
    {"missing schema file", "version: 1\nschema: nope/contracts.yaml\n",
     "schema: @D/nope/contracts.yaml: cannot open: No such file or directory", 2, 9},
    {"missing schema key", "version: 1\nworkers: {}\n",
     "missing 'schema' (the path of the contracts file)", 1, 1},
    {"missing version", "schema: contracts.yaml\nworkers: {}\n", "missing 'version: 1'", 1, 1},
    {"version 2", "version: 2\nschema: contracts.yaml\n",
     "unsupported version 2 (this hyphad reads version 1)", 1, 10},
    /* command, cwd, instances */
    {"missing command", HDR "workers:\n  a:\n    instances: 2\n",
     "workers.a: missing 'command' (the argv to run, e.g. [python3, -m, app])", 4, 3},
    {"empty command list", HDR "workers:\n  a:\n    command: []\n",
     "workers.a.command is empty: it needs at least the program to run", 5, 14},
    {"command as a string", HDR "workers:\n  a:\n    command: python3 -m app\n",
     "workers.a.command must be a list of arguments, e.g. [python3, -m, app] "
     "(hypha never runs commands through a shell)", 5, 14},
    {"empty program name", HDR "workers:\n  a:\n    command: [\"\", x]\n",
     "workers.a.command: the program name is empty", 5, 15},
    {"command not found", HDR "workers:\n  a:\n    command: [hypha-no-such-program, --flag]\n",
     "workers.a.command: cannot run 'hypha-no-such-program': not found in PATH", 5, 15},
    {"relative command missing", HDR "workers:\n  a:\n    command: [./nothere]\n",
     "workers.a.command: cannot run './nothere': No such file or directory", 5, 15},
    {"command not executable", HDR "workers:\n  a:\n    command: [./notexec]\n",
     "workers.a.command: cannot run './notexec': not executable", 5, 15},
    {"command is a directory", HDR "workers:\n  a:\n    command: [./srv]\n",
     "workers.a.command: cannot run './srv': is a directory", 5, 15},
    {"command not in the worker's PATH", HDR "workers:\n  a:\n    command: [tool]\n"
     "    env: {PATH: /nonexistent}\n",
     "workers.a.command: cannot run 'tool': not found in PATH", 5, 15},
    {"cwd does not exist", W_A "    cwd: does/not/exist\n",
     "workers.a.cwd: @D/does/not/exist: No such file or directory", 6, 10},
    {"cwd is a file", W_A "    cwd: notadir\n", "workers.a.cwd: @D/notadir is not a directory", 6, 10},
    {"instances 0", W_A "    instances: 0\n", "workers.a.instances must be from 1 to 1000, not 0", 6, 16},
    {"instances 1001", W_A "    instances: 1001\n",
     "workers.a.instances must be from 1 to 1000, not 1001", 6, 16},
    {"bad worker name", HDR "workers:\n  \"a b\":\n    command: [/bin/true]\n",
     "worker name 'a b' must be 1-64 letters, digits, '_', '-' or '.'", 4, 3},
    /* policy */
    {"restart: sometimes", HDR "defaults:\n  restart: sometimes\n",
     "restart must be always, on-failure or never, not 'sometimes'", 4, 12},
    {"overflow: explode", W_A "    queue: {overflow: explode}\n",
     "queue.overflow must be drop-oldest, drop-newest or block, not 'explode'", 6, 23},
    {"stop signal FOO", HDR "defaults:\n  stop:\n    signal: FOO\n",
     "defaults.stop.signal: unknown signal 'FOO' (use TERM, INT, HUP, QUIT, KILL, USR1, USR2, ABRT, ALRM or WINCH)", 5, 13},
    {"jitter 1.5", HDR "defaults:\n  backoff: {jitter: 1.5}\n",
     "backoff.jitter must be from 0 to 1, not 1.5", 4, 21},
    {"factor 0.5", HDR "defaults:\n  backoff: {factor: 0.5}\n",
     "backoff.factor must be from 1 to 100, not 0.5", 4, 21},
    {"factor not a number", HDR "defaults:\n  backoff: {factor: double}\n",
     "backoff.factor must be a number, not 'double'", 4, 21},
    {"backoff max < initial", HDR "defaults:\n  backoff: {initial: 10s, max: 5s}\n",
     "backoff.max (5s) is less than backoff.initial (10s)", 4, 12},
    {"worker backoff.max < inherited initial",
     HDR "defaults:\n  backoff: {initial: 10s, max: 1m}\nworkers:\n  a:\n    command: [/bin/true]\n"
     "    backoff: {max: 5s}\n",
     "backoff.max (5s) is less than backoff.initial (10s)", 8, 14},
    {"give_up failures with within 0", HDR "defaults:\n  give_up: {failures: 3, within: 0}\n",
     "defaults.give_up.within must be more than 0s while give_up.failures is 3 (set failures: 0 to never give up)", 4, 12},
    /* upstream */
    {"upstream unix and tcp", HDR "upstream:\n  unix: bus.sock\n  tcp: 127.0.0.1:9091\n",
     "upstream: give either 'unix' or 'tcp', not both", 4, 3},
    {"upstream neither", HDR "upstream:\n  echo: true\n",
     "upstream: needs 'unix: PATH' or 'tcp: HOST:PORT'", 4, 3},
    {"tcp port 70000", HDR "upstream: {tcp: \"127.0.0.1:70000\"}\n",
     "upstream.tcp: port must be from 1 to 65535 in '127.0.0.1:70000'", 3, 17},
    {"tcp without port", HDR "upstream:\n  tcp: localhost\n",
     "upstream.tcp: expected host:port, not 'localhost'", 4, 8},
    {"tcp [v6] without port", HDR "upstream:\n  tcp: \"[::1]\"\n",
     "upstream.tcp: expected [address]:port, not '[::1]'", 4, 8},
    {"tcp without host", HDR "upstream:\n  tcp: \":9091\"\n",
     "upstream.tcp: missing host in ':9091'", 4, 8},
    {"reconnect initial 0", HDR "upstream: {unix: bus.sock, reconnect: {initial: 0}}\n",
     "upstream.reconnect.initial must be more than 0s", 3, 39},
    /* listen and control */
    {"listen endpoint twice", HDR "listen:\n  - unix: /tmp/a.sock\n  - tcp: \"[::1]:9092\"\n"
     "  - unix: /tmp/a.sock\n",
     "listen: endpoint listed twice", 6, 5},
    {"listen on the upstream", HDR "upstream: {unix: bus.sock}\nlisten: [{unix: bus.sock}]\n",
     "listen: endpoint is the upstream itself", 4, 10},
    {"listen handshake maybe", HDR "listen:\n  - unix: /tmp/a.sock\n    handshake: maybe\n",
     "listen.handshake must be auto, digest or none, not 'maybe'", 5, 16},
    {"listen handshake not a string", HDR "listen:\n  - {unix: /tmp/a.sock, handshake: [digest]}\n",
     "listen.handshake must be a value, not a list", 4, 36},
    {"listen max_clients 0", HDR "listen:\n  - {tcp: 127.0.0.1:9092, max_clients: 0}\n",
     "listen.max_clients must be from 1 to 65536, not 0", 4, 40},
    {"listen max_clients too many", HDR "listen:\n  - unix: /tmp/a.sock\n  - unix: /tmp/b.sock\n"
     "    max_clients: 70000\n",
     "listen.max_clients must be from 1 to 65536, not 70000", 6, 18},
    {"listen unknown key", HDR "listen:\n  - {unix: /tmp/a.sock, handshakes: none}\n",
     "unknown key 'handshakes' in listen (did you mean 'handshake'?)", 4, 25},
    {"unix socket path too long", HDR "listen:\n  - unix: " LONG_SOCK "\n",
     "listen.unix: socket path '" LONG_SOCK "' is longer than 107 bytes", 4, 11},
    {"control mode 0999", HDR "control: {socket: ctl.sock, mode: \"0999\"}\n",
     "control.mode must be octal permissions like \"0600\", not '0999'", 3, 35},
    {"control mode locks out owner", HDR "control:\n  mode: \"0044\"\n",
     "control.mode 0044 would lock out hyphad's own user (it needs 0600: read and write for the owner)", 4, 9},
    {"metrics without listen", HDR "metrics: {}\n",
     "metrics: needs 'listen: HOST:PORT' (e.g. 127.0.0.1:9464)", 3, 10},
    {"metrics unknown key", HDR "metrics: {listen: 127.0.0.1:9464, path: /m}\n",
     "unknown key 'path' in metrics (expected one of: listen)", 3, 35},
    {"metrics listen without port", HDR "metrics: {listen: localhost}\n",
     "metrics.listen: expected host:port, not 'localhost'", 3, 19},
    {"cgroup relative", HDR "cgroup: hypha\n",
     "cgroup must be auto, off or the absolute path of a cgroup2 directory (e.g. /sys/fs/cgroup/hypha), not 'hypha'",
     3, 9},
    {"cgroup a boolean", HDR "cgroup: false\n", "cgroup must be auto, off or the absolute path", 3, 9},
    {"cgroup a list", HDR "cgroup: [auto]\n", "cgroup must be a value, not a list", 3, 9},
    {"metrics on a listen endpoint", HDR "listen: [{tcp: 127.0.0.1:9092}]\nmetrics: {listen: 127.0.0.1:9092}\n",
     "metrics.listen is also a listen endpoint", 4, 19},
    /* env */
    {"env name with =", W_A "    env:\n      GOOD: \"1\"\n      \"A=B\": \"2\"\n",
     "workers.a.env: 'A=B' is not a valid variable name", 8, 7},
    {"env HYPHA_WORKER", W_A "    env: {HYPHA_WORKER: x}\n",
     "workers.a.env: HYPHA_WORKER is set by hyphad itself", 6, 11},
    {"control mode without owner write", HDR "control:\n  mode: \"0400\"\n",
     "control.mode 0400 would lock out hyphad's own user", 4, 9},
    {"stop signal STOP", HDR "defaults:\n  stop: {signal: SIGSTOP}\n",
     "defaults.stop.signal: SIGSTOP does not end a process", 4, 18},
    {"restart policy in a worker names the worker", W_A "    restart: sometimes\n",
     "workers.a.restart must be always, on-failure or never, not 'sometimes'", 6, 14},
    {"second YAML document", HDR "---\nversion: 1\n",
     "a second YAML document: this file must hold exactly one", 4, 1},
    {"listen twice, spelled differently", HDR "listen:\n  - unix: bus.sock\n  - unix: ./x/../bus.sock\n",
     "listen: endpoint listed twice", 5, 5},
    {"control socket is a listen socket", HDR "listen: [{unix: /tmp/x.sock}]\ncontrol: {socket: /tmp//x.sock}\n",
     "control.socket /tmp/x.sock is also used by a listen endpoint", 4, 10},
    {"control socket is the upstream", HDR "upstream: {unix: up.sock}\ncontrol: {socket: up.sock}\n",
     "control.socket @D/up.sock is also used by the upstream", 4, 10},
    {"duration overflowing through its fraction", HDR "defaults:\n  heartbeat: {timeout: 18446744073709.551616s}\n",
     "defaults.heartbeat.timeout: bad duration '18446744073709.551616s': duration too large", 4, 24},
    {"size overflowing through its fraction", HDR "defaults:\n  queue: {limit: 18446744073709551.616KB}\n",
     "defaults.queue.limit: bad size '18446744073709551.616KB': size too large", 4, 18},
    {"leading zero is decimal, not octal", W_A "    instances: 01001\n",
     "workers.a.instances must be from 1 to 1000, not 1001", 6, 16},
    /* process settings (root or not, these are refused before that matters) */
    {"unknown user", W_A "    user: no-such-user-here\n",
     "workers.a.user: no user 'no-such-user-here' on this machine", 6, 11},
    {"unknown group", W_A "    group: no-such-group-here\n",
     "workers.a.group: no group 'no-such-group-here' on this machine", 6, 12},
    {"a uid with no passwd entry and no group", W_A "    user: 4242424\n",
     "workers.a.user: uid 4242424 has no entry in the user database: give `group` too", 6, 11},
    {"umask not octal", W_A "    umask: \"0089\"\n",
     "workers.a.umask must be octal digits up to 0777, like \"0027\", not '0089'", 6, 12},
    {"umask too large", W_A "    umask: \"1777\"\n",
     "workers.a.umask must be octal digits up to 0777, like \"0027\", not '1777'", 6, 12},
    {"unknown rlimit", W_A "    rlimits: {files: 10}\n",
     "unknown key 'files' in workers.a.rlimits", 6, 15},
    {"rlimit not a number", W_A "    rlimits: {nofile: lots}\n",
     "workers.a.rlimits.nofile: 'lots' is not a limit (a number, unlimited, or SOFT:HARD)", 6, 23},
    {"rlimit soft above hard", W_A "    rlimits: {nofile: \"100:50\"}\n",
     "workers.a.rlimits.nofile: the soft limit is above the hard one in '100:50'", 6, 23},
    /* document shape */
    {"YAML syntax error", HDR "workers:\n  a:\n    command: [/bin/true, --x\n    instances: 2\n",
     "YAML syntax error: did not find expected ',' or ']' while parsing a flow sequence", 6, 14},
    {"empty document", "", "file is empty", 1, 1},
    {"only comments", "# nothing\n", "file is empty", 1, 1},
    {"top-level list", "- version: 1\n- schema: contracts.yaml\n",
     "a topology file must be a mapping, not a list", 1, 1},
    {"top-level scalar", "hello\n", "a topology file must be a mapping, not a scalar", 1, 1},
};

/* Each document refused with its message at its position; every one is
 * tried, and the failures are listed together. */
static void check_bad_documents(const bad_doc *docs, size_t n)
{
    size_t failed = 0;
    for (size_t i = 0; i < n; i++) {
        const bad_doc *c = &docs[i];
        hy_err err;
        hy_topology *t = load(c->yaml, &err);
        if (t) {
            hy_topology_free(t);
            print_error("%s: loaded, expected '%s'\n", c->name, c->expected_substring);
            failed++;
            continue;
        }
        if (!error_matches(c->name, err.msg, "topo.yaml", c->line, c->col, c->expected_substring))
            failed++;
    }
    assert_int_equal(failed, 0);
}

static void test_bad_documents(void **state)
{
    (void)state;
    check_bad_documents(bad_docs, N_ELEMS(bad_docs));
    assert_true(N_ELEMS(bad_docs) >= 30);
}

/* ---- env_file, ${VAR}, autostart, after ---------------------------------- */

/* Written by setup_env_files(); HY_TEST_SET is set, HY_TEST_UNSET is not. */
static void setup_env_files(void)
{
    setenv("HY_TEST_SET", "/hyset", 1);
    unsetenv("HY_TEST_UNSET");
    write_file("ok.env", "GOOD=1\n", 0644);
    write_file("bad.env", "# a comment\nGOOD=1\nnoequals\n", 0644);
    write_file("quote.env", "A=\"abc\nB=2\n", 0644);
    write_file("name.env", "\n1A=x\n", 0644);
    write_file("after.env", "A='x' y\n", 0644);
    write_file("hypha.env", "HYPHA_WORKER=x\n", 0644);
    write_file("e1.env", "# first\n; also a comment\n\nexport A=1\nB='x y'\n  C = \"q\\\"\\n\\t\\$\\\\\"  \n"
                         "D=a\\\n b\nE=from1\nA=2\nF=  spaced out  \nG=\"two\nlines\"\nH=${HY_TEST_SET}\n", 0644);
    write_file("e2.env", "B=from2\nE=from2\n", 0644);
}

static const bad_doc env_bad_docs[] = {
    {"env_file missing", W_A "    env_file: missing.env\n",
     "workers.a.env_file: @D/missing.env: cannot open: No such file or directory "
     "(write -missing.env to ignore a missing file)", 6, 15},
    {"env_file malformed line", W_A "    env_file: [ok.env, bad.env]\n",
     "workers.a.env_file: @D/bad.env:3: no '=' in \"noequals\" (lines are KEY=VALUE)", 6, 24},
    {"env_file unclosed quote", W_A "    env_file: quote.env\n",
     "workers.a.env_file: @D/quote.env:1: double quote not closed", 6, 15},
    {"env_file bad name", W_A "    env_file: name.env\n",
     "workers.a.env_file: @D/name.env:2: '1A' is not a valid variable name", 6, 15},
    {"env_file text after a quote", W_A "    env_file: after.env\n",
     "workers.a.env_file: @D/after.env:1: text after the closing quote of A", 6, 15},
    {"env_file HYPHA_", W_A "    env_file: hypha.env\n",
     "workers.a.env_file: @D/hypha.env:1: HYPHA_WORKER is set by hyphad itself", 6, 15},
    {"env_file a mapping", W_A "    env_file: {a: b}\n",
     "workers.a.env_file must be a path or a list of paths, not a mapping", 6, 15},
    {"undefined ${VAR} in cwd", W_A "    cwd: ${HY_TEST_UNSET}/x\n",
     "workers.a.cwd: ${HY_TEST_UNSET} is not set in hyphad's environment: set it, or write "
     "$${HY_TEST_UNSET} for a literal", 6, 10},
    {"undefined ${VAR} in a command item", HDR "workers:\n  a:\n    command: [/bin/true, \"x${HY_TEST_UNSET}\"]\n",
     "workers.a.command: ${HY_TEST_UNSET} is not set in hyphad's environment", 5, 26},
    {"undefined ${VAR} in a plain scalar: its own column", W_A "    cwd: a/${HY_TEST_UNSET}\n",
     "workers.a.cwd: ${HY_TEST_UNSET} is not set", 6, 12},
    {"env keys are not expanded", W_A "    env: {\"${HY_TEST_SET}\": v}\n",
     "workers.a.env: '${HY_TEST_SET}' is not a valid variable name", 6, 11},
    {"undefined ${VAR} in an env value", W_A "    env: {A: \"${HY_TEST_SET}${HY_TEST_UNSET}\"}\n",
     "workers.a.env.A: ${HY_TEST_UNSET} is not set in hyphad's environment", 6, 14},
    {"${ unclosed", W_A "    cwd: a${HY_TEST_SET\n",
     "workers.a.cwd: '${' without a closing '}' (write $$ for a literal $)", 6, 11},
    {"${} empty", W_A "    env: {A: \"x${}\"}\n", "workers.a.env.A: '${}' is not a variable name", 6, 14},
    {"${1X} not a name", W_A "    env: {A: \"${1X}\"}\n",
     "workers.a.env.A: '${1X}': '1X' is not a variable name (write $$ for a literal $)", 6, 14},
    {"autostart: maybe", W_A "    autostart: maybe\n", "workers.a.autostart must be true or false, not 'maybe'", 6, 16},
    {"after a scalar", W_A "    after: b\n", "workers.a.after must be a list of worker names, e.g. [b]", 6, 12},
    {"after itself", W_A "    after: [a]\n",
     "workers.a.after: 'a' is the worker itself (a worker cannot start after itself)", 6, 13},
    {"after twice", HDR "workers:\n  a:\n    command: [/bin/true]\n    after: [b, b]\n  b: {command: [/bin/true]}\n",
     "workers.a.after: 'b' is listed twice", 6, 16},
    {"after an unknown name", W_A "    after: [feed]\n", "workers.a.after: no worker named 'feed'", 6, 13},
    {"after a cycle of two", HDR "workers:\n  a:\n    command: [/bin/true]\n    after: [b]\n"
     "  b:\n    command: [/bin/true]\n    after: [a]\n",
     "workers.a.after: a cycle: a -> b -> a (no worker of it could ever start)", 6, 13},
    {"after a cycle of three, found from outside it", HDR "workers:\n"
     "  z: {command: [/bin/true], after: [b]}\n"
     "  a: {command: [/bin/true], after: [c]}\n"
     "  b: {command: [/bin/true], after: [z, a]}\n"
     "  c: {command: [/bin/true], after: [b]}\n",
     "workers.z.after: a cycle: z -> b -> z", 4, 37},
    {"preload on a command that is not Python", W_A "    preload: [json]\n",
     "workers.a.preload needs a Python command, [python3, SCRIPT, ...] or [python3, -m, MODULE, ...]: its "
     "instances are forked from a Python fork server that runs it as the interpreter would (or remove preload)",
     5, 14},
    {"preload a scalar", HDR "workers:\n  a:\n    command: [python3, -m, app]\n    preload: json\n",
     "workers.a.preload must be a list", 6, 14},
    {"preload not a module name", HDR "workers:\n  a:\n    command: [python3, -m, app]\n    preload: [numpy, 2x.y]\n",
     "workers.a.preload: '2x.y' is not a Python module name (dotted identifiers, e.g. numpy or risk.model)", 6, 22},
    {"preload with python's own options", HDR "workers:\n  a:\n    command: [python3, -u, app.py]\n    preload: []\n",
     "workers.a.preload needs a Python command, [python3, SCRIPT, ...] or [python3, -m, MODULE, ...]: its "
     "instances are forked from a Python fork server that runs it as the interpreter would (or remove preload)",
     5, 14},
};

static void test_env_bad_documents(void **state)
{
    (void)state;
    setup_env_files();
    check_bad_documents(env_bad_docs, N_ELEMS(env_bad_docs));
}

/* Files in order, later ones overriding earlier ones (in the first place),
 * then `env`, which wins and comes last; systemd's quoting; no expansion
 * inside env files. */
static void test_env_file_resolved(void **state)
{
    (void)state;
    setup_env_files();
    hy_topology *t = load_ok(W_A "    env_file: [e1.env, -missing.env, e2.env]\n"
                                 "    env: {E: from-env, Z: z}\n");
    const hy_worker_spec *w = &t->workers[0];
    const char *want[] = {"A=2", "B=from2", "C=q\"\n\t$\\", "D=a b", "F=spaced out", "G=two\nlines",
                          "H=${HY_TEST_SET}", "E=from-env", "Z=z"};
    assert_int_equal(w->nenv, N_ELEMS(want));
    for (size_t i = 0; i < N_ELEMS(want); i++)
        assert_string_equal(w->env[i], want[i]);
    assert_null(w->env[w->nenv]);
    char p[PATH_MAX + 16];
    assert_int_equal(w->nenv_files, 3);
    snprintf(p, sizeof p, "%s/e1.env", base_dir);
    assert_string_equal(w->env_files[0], p);
    snprintf(p, sizeof p, "-%s/missing.env", base_dir);
    assert_string_equal(w->env_files[1], p);
    snprintf(p, sizeof p, "%s/e2.env", base_dir);
    assert_string_equal(w->env_files[2], p);
    assert_null(w->env_files[3]);
    hy_topology_free(t);

    t = load_ok(W_A "    env_file: ok.env\n"); /* one path, no env */
    assert_int_equal(t->workers[0].nenv, 1);
    assert_string_equal(t->workers[0].env[0], "GOOD=1");
    hy_topology_free(t);
}

static void test_expansion(void **state)
{
    (void)state;
    setup_env_files();
    char srv[PATH_MAX + 8];
    snprintf(srv, sizeof srv, "%s/srv", base_dir);
    setenv("HY_TEST_CWD", srv, 1);
    hy_topology *t = load_ok(HDR "workers:\n  a:\n"
                             "    command: [/bin/true, \"${HY_TEST_SET}/x\", \"$$HOME\", a$b, \"$$${HY_TEST_SET}\", "
                             "\"${HY_TEST_UNSET:-dflt}\", \"${HY_TEST_SET:-no}\", \"$\", \"${HY_TEST_UNSET:-}\"]\n"
                             "    cwd: ${HY_TEST_CWD}\n"
                             "    env: {X: \"${HY_TEST_SET}\", Y: \"$${HY_TEST_SET}\"}\n");
    const hy_worker_spec *w = &t->workers[0];
    const char *argv[] = {"/bin/true", "/hyset/x", "$HOME", "a$b", "$/hyset", "dflt", "/hyset", "$", ""};
    assert_int_equal(w->argc, N_ELEMS(argv));
    for (size_t i = 0; i < N_ELEMS(argv); i++)
        assert_string_equal(w->argv[i], argv[i]);
    assert_string_equal(w->cwd, srv);
    assert_int_equal(w->nenv, 2);
    assert_string_equal(w->env[0], "X=/hyset");
    assert_string_equal(w->env[1], "Y=${HY_TEST_SET}");
    hy_topology_free(t);
    unsetenv("HY_TEST_CWD");
}

static void test_autostart_after(void **state)
{
    (void)state;
    hy_topology *t = load_ok(HDR "workers:\n"
                             "  a: {command: [/bin/true], after: [b, c]}\n"
                             "  b: {command: [/bin/true], autostart: false, after: [c]}\n"
                             "  c: {command: [/bin/true], after: []}\n");
    assert_true(t->workers[0].autostart);
    assert_int_equal(t->workers[0].nafter, 2);
    assert_string_equal(t->workers[0].after[0], "b");
    assert_string_equal(t->workers[0].after[1], "c");
    assert_null(t->workers[0].after[2]);
    assert_false(t->workers[1].autostart);
    assert_int_equal(t->workers[1].nafter, 1);
    assert_true(t->workers[2].autostart);
    assert_int_equal(t->workers[2].nafter, 0);
    assert_int_equal(t->workers[0].nenv_files, 0);
    assert_null(t->workers[0].env_files);
    hy_topology_free(t);
}

/* An error inside the contracts file points into that file, not topo.yaml. */
static void test_bad_contracts_file(void **state)
{
    (void)state;
    hy_err err;
    assert_null(load("version: 1\nschema: bad.contracts.yaml\n", &err));
    char file[PATH_MAX + 32];
    snprintf(file, sizeof file, "%s/bad.contracts.yaml", base_dir);
    check_error("bad contracts", err.msg, file, 3, 1,
                "YAML syntax error: did not find expected ',' or ']' while parsing a flow sequence");
}

/* ---- good documents ------------------------------------------------------ */

static void assert_policy_equal(const hy_policy *got, const hy_policy *want)
{
    assert_int_equal(got->restart, want->restart);
    assert_int_equal(got->backoff_initial_ms, want->backoff_initial_ms);
    assert_true(got->backoff_factor == want->backoff_factor);
    assert_int_equal(got->backoff_max_ms, want->backoff_max_ms);
    assert_true(got->backoff_jitter == want->backoff_jitter);
    assert_int_equal(got->backoff_reset_after_ms, want->backoff_reset_after_ms);
    assert_int_equal(got->give_up_failures, want->give_up_failures);
    assert_int_equal(got->give_up_within_ms, want->give_up_within_ms);
    assert_int_equal(got->give_up_retry_after_ms, want->give_up_retry_after_ms);
    assert_int_equal(got->stop_signal, want->stop_signal);
    assert_int_equal(got->stop_grace_ms, want->stop_grace_ms);
    assert_int_equal(got->start_timeout_ms, want->start_timeout_ms);
    assert_int_equal(got->heartbeat_timeout_ms, want->heartbeat_timeout_ms);
    assert_int_equal(got->queue_limit, want->queue_limit);
    assert_int_equal(got->queue_overflow, want->queue_overflow);
}

static const hy_policy builtin = {
    .restart = HY_RESTART_ALWAYS,
    .backoff_initial_ms = 100,
    .backoff_factor = 2.0,
    .backoff_max_ms = 30000,
    .backoff_jitter = 0.2,
    .backoff_reset_after_ms = 60000,
    .give_up_failures = 10,
    .give_up_within_ms = 60000,
    .give_up_retry_after_ms = 300000,
    .stop_signal = SIGTERM,
    .stop_grace_ms = 5000,
    .start_timeout_ms = 2000,
    .heartbeat_timeout_ms = 0,
    .queue_limit = 1048576,
    .queue_overflow = HY_OVERFLOW_DROP_OLDEST,
};

static void test_policy_builtin(void **state)
{
    (void)state;
    hy_policy p;
    memset(&p, 0xa5, sizeof p);
    hy_policy_builtin(&p);
    assert_policy_equal(&p, &builtin);
}

static void assert_path_in_base(const char *got, const char *rel)
{
    char want[PATH_MAX + 256];
    snprintf(want, sizeof want, "%s/%s", base_dir, rel);
    assert_string_equal(got, want);
}

static void test_minimal(void **state)
{
    (void)state;
    setenv("XDG_RUNTIME_DIR", "/xdg-test", 1);
    hy_topology *t = load_ok(HDR "workers:\n  a:\n    command: [/bin/true]\n");
    assert_string_equal(t->path, "topo.yaml");
    assert_string_equal(t->dir, base_dir);
    assert_path_in_base(t->schema_path, "contracts.yaml");
    assert_non_null(t->schema);
    assert_int_equal(t->schema->nmsgs, 3);

    assert_false(t->has_upstream); /* embedded mode */
    assert_null(t->upstream.path);
    assert_null(t->upstream.host);
    assert_true(t->upstream_echo);
    assert_int_equal(t->upstream_handshake, HY_UP_HANDSHAKE_DIGEST);
    assert_int_equal(t->upstream_buffer, 8u << 20);
    assert_int_equal(t->reconnect_initial_ms, 100);
    assert_int_equal(t->reconnect_max_ms, 5000);
    assert_int_equal(t->nlisten, 0);
    assert_null(t->listen);
    assert_string_equal(t->control_socket, geteuid() == 0 ? "/run/hypha/control.sock"
                                                          : "/xdg-test/hypha/control.sock");
    assert_int_equal(t->control_mode, 0600);
    assert_policy_equal(&t->defaults, &builtin);

    assert_int_equal(t->nworkers, 1);
    const hy_worker_spec *w = &t->workers[0];
    assert_string_equal(w->name, "a");
    assert_int_equal(w->argc, 1);
    assert_string_equal(w->argv[0], "/bin/true");
    assert_null(w->argv[1]);
    assert_string_equal(w->exec_path, "/bin/true");
    assert_string_equal(w->cwd, base_dir);
    assert_int_equal(w->nenv, 0);
    assert_non_null(w->env);
    assert_null(w->env[0]);
    assert_int_equal(w->instances, 1);
    assert_int_equal(w->nsubscribe, 0);
    assert_true(w->publish_all);
    assert_int_equal(w->npublish, 0);
    assert_null(w->publish);
    assert_policy_equal(&w->policy, &builtin);
    assert_int_equal(w->line, 4);
    assert_int_equal(w->col, 3);
    assert_ptr_equal(hy_topology_find_worker(t, "a"), w);
    assert_null(hy_topology_find_worker(t, "b"));
    hy_topology_free(t);
    unsetenv("XDG_RUNTIME_DIR");
}

/* The example of docs/design.md, adapted to the example contracts. */
static const char full_doc[] =
    "version: 1\n"
    "schema: contracts.yaml\n"
    "upstream:\n"
    "  unix: run/python.sock\n"                              /* line 4 */
    "  echo: false\n"
    "  buffer: 16MiB\n"
    "  reconnect: {initial: 250ms, max: 10s}\n"
    "listen:\n"
    "  - unix: /tmp/hypha-test/bus.sock\n"
    "  - unix: bus.sock\n"                                   /* line 10 */
    "  - tcp: 127.0.0.1:9091\n"
    "  - tcp: \"[::1]:9092\"\n"
    "control: {socket: ctl/control.sock, mode: \"0640\"}\n"
    "defaults:\n"
    "  restart: on-failure\n"                                /* line 15 */
    "  backoff: {initial: 200ms, factor: 1.5}\n"
    "  give_up: {failures: 5, within: 2m, retry_after: 0}\n"
    "  stop: {signal: INT, grace: 3s}\n"
    "  start_timeout: 1500ms\n"
    "  heartbeat: {timeout: 10s}\n"                          /* line 20 */
    "  queue: {limit: 2MiB, overflow: block}\n"
    "workers:\n"
    "  risk:\n"                                              /* line 23 */
    "    command: [tool, --level, \"3\"]\n"
    "    cwd: srv\n"                                         /* line 25 */
    "    env: {PATH: \"@D/bin\", RISK_LIMIT: \"5\", EMPTY: }\n"
    "    instances: 2\n"
    "    subscribe: [TextMessage, 1002, TextMessage]\n"
    "    publish: []\n"
    "    backoff: {max: 1m}\n"                               /* line 30 */
    "  plain:\n"
    "    command: [/bin/true]\n"
    "    restart: never\n"
    "    queue: {overflow: drop-newest}\n"
    "    publish: [BatchOperation, 0x3e9]\n";                /* line 35 */

static void test_full(void **state)
{
    (void)state;
    hy_topology *t = load_ok(full_doc);
    char buf[256];

    assert_true(t->has_upstream);
    assert_int_equal(t->upstream.kind, HY_EP_UNIX);
    assert_path_in_base(t->upstream.path, "run/python.sock");
    assert_null(t->upstream.host);
    assert_false(t->upstream_echo);
    assert_int_equal(t->upstream_handshake, HY_UP_HANDSHAKE_DIGEST); /* the default */
    assert_int_equal(t->upstream_buffer, 16u << 20);
    assert_int_equal(t->reconnect_initial_ms, 250);
    assert_int_equal(t->reconnect_max_ms, 10000);

    assert_int_equal(t->nlisten, 4);
    assert_int_equal(t->listen[0].ep.kind, HY_EP_UNIX);
    assert_string_equal(t->listen[0].ep.path, "/tmp/hypha-test/bus.sock");
    assert_int_equal(t->listen[1].ep.kind, HY_EP_UNIX);
    assert_path_in_base(t->listen[1].ep.path, "bus.sock");
    assert_int_equal(t->listen[2].ep.kind, HY_EP_TCP);
    assert_string_equal(t->listen[2].ep.host, "127.0.0.1");
    assert_int_equal(t->listen[2].ep.port, 9091);
    assert_null(t->listen[2].ep.path);
    assert_int_equal(t->listen[3].ep.kind, HY_EP_TCP);
    assert_string_equal(t->listen[3].ep.host, "::1");
    assert_int_equal(t->listen[3].ep.port, 9092);
    assert_string_equal(hy_endpoint_str(&t->listen[3].ep, buf, sizeof buf), "tcp:[::1]:9092");

    assert_path_in_base(t->control_socket, "ctl/control.sock");
    assert_int_equal(t->control_mode, 0640);

    const hy_policy defaults = {
        .restart = HY_RESTART_ON_FAILURE,
        .backoff_initial_ms = 200,
        .backoff_factor = 1.5,
        .backoff_max_ms = 30000,  /* built-in */
        .backoff_jitter = 0.2,    /* built-in */
        .backoff_reset_after_ms = 60000,
        .give_up_failures = 5,
        .give_up_within_ms = 120000,
        .give_up_retry_after_ms = 0,
        .stop_signal = SIGINT,
        .stop_grace_ms = 3000,
        .start_timeout_ms = 1500,
        .heartbeat_timeout_ms = 10000,
        .queue_limit = 2u << 20,
        .queue_overflow = HY_OVERFLOW_BLOCK,
    };
    assert_policy_equal(&t->defaults, &defaults);

    assert_int_equal(t->nworkers, 2);
    const hy_worker_spec *risk = hy_topology_find_worker(t, "risk");
    assert_ptr_equal(risk, &t->workers[0]); /* file order */
    assert_string_equal(risk->name, "risk");
    assert_int_equal(risk->line, 23);
    assert_int_equal(risk->col, 3);
    assert_int_equal(risk->argc, 3);
    assert_string_equal(risk->argv[0], "tool");
    assert_string_equal(risk->argv[1], "--level");
    assert_string_equal(risk->argv[2], "3");
    assert_null(risk->argv[3]);
    assert_path_in_base(risk->exec_path, "bin/tool"); /* found in the worker's own PATH */
    assert_path_in_base(risk->cwd, "srv");
    assert_int_equal(risk->nenv, 3);
    char path_kv[PATH_MAX + 16];
    snprintf(path_kv, sizeof path_kv, "PATH=%s/bin", base_dir);
    assert_string_equal(risk->env[0], path_kv);
    assert_string_equal(risk->env[1], "RISK_LIMIT=5");
    assert_string_equal(risk->env[2], "EMPTY=");
    assert_null(risk->env[3]);
    assert_int_equal(risk->instances, 2);
    assert_int_equal(risk->nsubscribe, 2);
    assert_int_equal(risk->subscribe[0], 1001);
    assert_int_equal(risk->subscribe[1], 1002);
    assert_false(risk->publish_all);
    assert_int_equal(risk->npublish, 0);
    hy_policy want = defaults; /* key by key: only backoff.max differs */
    want.backoff_max_ms = 60000;
    assert_policy_equal(&risk->policy, &want);

    const hy_worker_spec *plain = hy_topology_find_worker(t, "plain");
    assert_ptr_equal(plain, &t->workers[1]);
    assert_int_equal(plain->line, 31);
    assert_int_equal(plain->col, 3);
    assert_int_equal(plain->argc, 1);
    assert_string_equal(plain->exec_path, "/bin/true");
    assert_string_equal(plain->cwd, base_dir);
    assert_int_equal(plain->nenv, 0);
    assert_int_equal(plain->instances, 1);
    assert_int_equal(plain->nsubscribe, 0);
    assert_false(plain->publish_all);
    assert_int_equal(plain->npublish, 2);
    assert_int_equal(plain->publish[0], 1001);
    assert_int_equal(plain->publish[1], 1003);
    want = defaults;
    want.restart = HY_RESTART_NEVER;
    want.queue_overflow = HY_OVERFLOW_DROP_NEWEST;
    assert_policy_equal(&plain->policy, &want);
    hy_topology_free(t);
}

/* Absent publish means every schema type; an upstream over TCP; worker keys
 * that override defaults in any order. */
static void test_tcp_upstream_and_publish_all(void **state)
{
    (void)state;
    hy_topology *t = load_ok(HDR "upstream: {tcp: \"[fe80::1]:9091\", echo: no, handshake: none}\n"
                                 "workers:\n"
                                 "  w.1:\n"
                                 "    stop: {signal: SIGKILL}\n"
                                 "    give_up: {failures: 0, within: 0}\n"
                                 "    command: [./bin/tool]\n"
                                 "    subscribe: [BatchOperation, TextMessage, CounterUpdate]\n");
    char buf[64];
    assert_true(t->has_upstream);
    assert_int_equal(t->upstream.kind, HY_EP_TCP);
    assert_string_equal(t->upstream.host, "fe80::1");
    assert_int_equal(t->upstream.port, 9091);
    assert_string_equal(hy_endpoint_str(&t->upstream, buf, sizeof buf), "tcp:[fe80::1]:9091");
    assert_false(t->upstream_echo);
    assert_int_equal(t->upstream_handshake, HY_UP_HANDSHAKE_NONE);
    assert_string_equal(hy_up_handshake_str(t->upstream_handshake), "none");
    assert_int_equal(t->upstream_buffer, 8u << 20);
    const hy_worker_spec *w = hy_topology_find_worker(t, "w.1");
    assert_non_null(w);
    assert_path_in_base(w->exec_path, "bin/tool"); /* relative to cwd, absolute, cleaned */
    assert_true(w->publish_all);
    assert_null(w->publish);
    assert_int_equal(w->npublish, 0);
    assert_int_equal(w->nsubscribe, 3);
    assert_int_equal(w->subscribe[0], 1001);
    assert_int_equal(w->subscribe[1], 1002);
    assert_int_equal(w->subscribe[2], 1003);
    hy_policy want = builtin;
    want.stop_signal = SIGKILL;
    want.give_up_failures = 0;
    want.give_up_within_ms = 0;
    assert_policy_equal(&w->policy, &want);
    hy_topology_free(t);
}

/* A file on disk: the path as given names it in messages, its directory is
 * the base for relative paths. */
static void test_load_file(void **state)
{
    (void)state;
    char path[PATH_MAX + 32];
    write_file("topo-ok.yaml", HDR "workers: {a: {command: [./bin/tool]}}\n", 0644);
    snprintf(path, sizeof path, "%s/topo-ok.yaml", base_dir);
    hy_err err;
    hy_topology *t = hy_topology_load(path, &err);
    if (!t)
        fail_msg("%s", err.msg);
    assert_string_equal(t->path, path);
    assert_string_equal(t->dir, base_dir);
    assert_path_in_base(t->schema_path, "contracts.yaml");
    assert_path_in_base(t->workers[0].exec_path, "bin/tool");
    hy_topology_free(t);

    write_file("topo-bad.yaml", "version: 3\nschema: contracts.yaml\n", 0644);
    snprintf(path, sizeof path, "%s/topo-bad.yaml", base_dir);
    assert_null(hy_topology_load(path, &err));
    check_error("file", err.msg, path, 1, 10, "unsupported version 3 (this hyphad reads version 1)");

    snprintf(path, sizeof path, "%s/absent.yaml", base_dir);
    assert_null(hy_topology_load(path, &err));
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", path);
    assert_string_equal(err.msg, want);
}

/* The example topology shipped in config/, when it is there. */
static void test_demo_yaml(void **state)
{
    (void)state;
    char dir[PATH_MAX], path[PATH_MAX + 32];
    tests_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/../config/demo.yaml", dir);
    if (access(path, F_OK) != 0)
        skip();
    hy_err err;
    hy_topology *t = hy_topology_load(path, &err);
    if (!t)
        fail_msg("%s", err.msg);
    char real[PATH_MAX];
    snprintf(path, sizeof path, "%s/../config", dir);
    assert_non_null(realpath(path, real));
    assert_string_equal(t->dir, real);
    assert_non_null(t->schema);
    assert_true(t->nworkers >= 1);
    for (size_t i = 0; i < t->nworkers; i++) {
        const hy_worker_spec *w = &t->workers[i];
        assert_ptr_equal(hy_topology_find_worker(t, w->name), w);
        assert_true(w->argc >= 1);
        assert_int_equal(w->exec_path[0], '/');
        assert_int_equal(access(w->exec_path, X_OK), 0);
        assert_int_equal(w->cwd[0], '/');
        assert_true(w->instances >= 1 && w->instances <= 1000);
        assert_true(w->policy.queue_limit >= 318);
        for (size_t j = 0; j < w->nsubscribe; j++) {
            assert_non_null(hy_schema_find(t->schema, w->subscribe[j]));
            if (j)
                assert_true(w->subscribe[j - 1] < w->subscribe[j]);
        }
        for (size_t j = 0; j < w->npublish; j++)
            assert_non_null(hy_schema_find(t->schema, w->publish[j]));
    }
    hy_topology_free(t);
}

/* ---- names -------------------------------------------------------------- */

static void test_signals(void **state)
{
    (void)state;
    static const struct { const char *text; int sig; } parse[] = {
        {"TERM", SIGTERM}, {"SIGTERM", SIGTERM}, {"term", SIGTERM}, {"sigterm", SIGTERM},
        {"SigInt", SIGINT}, {"HUP", SIGHUP},     {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
        {"USR1", SIGUSR1}, {"USR2", SIGUSR2},   {"ABRT", SIGABRT}, {"ALRM", SIGALRM},
        {"WINCH", SIGWINCH}, {"CONT", SIGCONT}, {"STOP", SIGSTOP},
        {"FOO", -1}, {"", -1}, {"SIG", -1}, {"15", -1}, {"TERMX", -1}, {"SIGSIGTERM", -1},
        {" TERM", -1}, {"SEGV", -1},
    };
    for (size_t i = 0; i < N_ELEMS(parse); i++)
        if (hy_signal_parse(parse[i].text) != parse[i].sig)
            fail_msg("hy_signal_parse(\"%s\") = %d, expected %d", parse[i].text,
                     hy_signal_parse(parse[i].text), parse[i].sig);
    assert_string_equal(hy_signal_name(SIGTERM), "TERM");
    assert_string_equal(hy_signal_name(SIGINT), "INT");
    assert_string_equal(hy_signal_name(SIGKILL), "KILL");
    assert_string_equal(hy_signal_name(SIGUSR2), "USR2");
    assert_null(hy_signal_name(0));
    assert_null(hy_signal_name(SIGSEGV));
    assert_null(hy_signal_name(-1));
    /* every named signal parses back, with and without the SIG prefix */
    for (int sig = 1; sig < 65; sig++) {
        const char *name = hy_signal_name(sig);
        if (!name)
            continue;
        char with[32];
        snprintf(with, sizeof with, "SIG%s", name);
        assert_int_equal(hy_signal_parse(name), sig);
        assert_int_equal(hy_signal_parse(with), sig);
    }
}

static void test_endpoint_str(void **state)
{
    (void)state;
    char buf[64];
    hy_endpoint u = {.kind = HY_EP_UNIX, .path = "/run/x.sock"};
    hy_endpoint t4 = {.kind = HY_EP_TCP, .host = "127.0.0.1", .port = 9091};
    hy_endpoint th = {.kind = HY_EP_TCP, .host = "bus.example", .port = 65535};
    hy_endpoint t6 = {.kind = HY_EP_TCP, .host = "::1", .port = 9092};
    assert_ptr_equal(hy_endpoint_str(&u, buf, sizeof buf), buf);
    assert_string_equal(buf, "unix:/run/x.sock");
    assert_string_equal(hy_endpoint_str(&t4, buf, sizeof buf), "tcp:127.0.0.1:9091");
    assert_string_equal(hy_endpoint_str(&th, buf, sizeof buf), "tcp:bus.example:65535");
    assert_string_equal(hy_endpoint_str(&t6, buf, sizeof buf), "tcp:[::1]:9092");
    /* cut to the buffer, NUL-terminated, nothing written past it */
    memset(buf, 'X', sizeof buf);
    hy_endpoint_str(&t4, buf, 8);
    assert_string_equal(buf, "tcp:127");
    assert_int_equal(buf[8], 'X');
}

static void test_policy_names(void **state)
{
    (void)state;
    assert_string_equal(hy_restart_policy_str(HY_RESTART_ALWAYS), "always");
    assert_string_equal(hy_restart_policy_str(HY_RESTART_ON_FAILURE), "on-failure");
    assert_string_equal(hy_restart_policy_str(HY_RESTART_NEVER), "never");
    assert_string_equal(hy_overflow_str(HY_OVERFLOW_DROP_OLDEST), "drop-oldest");
    assert_string_equal(hy_overflow_str(HY_OVERFLOW_DROP_NEWEST), "drop-newest");
    assert_string_equal(hy_overflow_str(HY_OVERFLOW_BLOCK), "block");
}

/* listen[].handshake and max_clients: defaults, values, where each entry is. */
static void test_listen_options(void **state)
{
    (void)state;
    hy_topology *t = load_ok(HDR "listen:\n"
                                 "  - unix: /tmp/a.sock\n"                       /* line 4 */
                                 "  - {tcp: 127.0.0.1:9092, handshake: digest, max_clients: 3}\n"
                                 "  - unix: /tmp/b.sock\n"
                                 "    handshake: none\n"
                                 "    max_clients: 65536\n");
    assert_int_equal(t->nlisten, 3);
    assert_int_equal(t->listen[0].handshake, HY_LISTEN_HS_AUTO);
    assert_int_equal(t->listen[0].max_clients, HY_LISTEN_MAX_CLIENTS_DEFAULT);
    assert_int_equal(t->listen[0].max_clients, 256);
    assert_int_equal(t->listen[1].handshake, HY_LISTEN_HS_DIGEST);
    assert_int_equal(t->listen[1].max_clients, 3);
    assert_int_equal(t->listen[2].handshake, HY_LISTEN_HS_NONE);
    assert_int_equal(t->listen[2].max_clients, 65536);
    assert_int_equal(t->listen[0].line, 4);
    assert_int_equal(t->listen[0].col, 5);
    assert_int_equal(t->listen[1].line, 5);
    assert_int_equal(t->listen[2].line, 6);
    assert_string_equal(hy_listen_handshake_str(t->listen[0].handshake), "auto");
    assert_string_equal(hy_listen_handshake_str(t->listen[1].handshake), "digest");
    assert_string_equal(hy_listen_handshake_str(t->listen[2].handshake), "none");
    /* the examples schema has no type 32: auto can serve it */
    hy_err err;
    assert_int_equal(hy_listen_check_auto(t->path, t->schema, t->listen, t->nlisten, &err), 0);
    hy_topology_free(t);
}

/* A schema whose type-32 message is as long as the digest's first 4 bytes
 * read as a u32 LE: its frames start like the handshake, so `auto` is
 * refused at the auto entry's place, naming the fix; digest and none are
 * not. A contracts file cannot be edited into this (the digest is its
 * SHA-256), so the schema is made by hand. */
static void test_listen_auto_ambiguous(void **state)
{
    (void)state;
    hy_message msgs[2] = {{.name = "Tick", .type_id = 32, .size = 40}, {.name = "Other", .type_id = 1001, .size = 8}};
    hy_schema s = {.msgs = msgs, .nmsgs = 2};
    s.digest[0] = 40; /* u32 LE 40 */
    hy_endpoint ep = {.kind = HY_EP_UNIX, .path = "/tmp/x.sock"};
    hy_listen_spec l[3] = {
        {.ep = ep, .handshake = HY_LISTEN_HS_DIGEST, .line = 4, .col = 5},
        {.ep = ep, .handshake = HY_LISTEN_HS_AUTO, .line = 6, .col = 5},
        {.ep = ep, .handshake = HY_LISTEN_HS_NONE, .line = 8, .col = 5},
    };
    hy_err err;
    err.msg[0] = '\0';
    assert_int_equal(hy_listen_check_auto("topo.yaml", &s, l, 3, &err), -1);
    check_error("ambiguous", err.msg, "topo.yaml", 6, 5,
                "listen: handshake auto cannot serve this schema: message Tick (type 32) is 40 bytes");
    assert_non_null(strstr(err.msg, "set 'handshake: digest'"));
    assert_non_null(strstr(err.msg, "'handshake: none'"));
    /* digest and none entries only: served */
    l[1].handshake = HY_LISTEN_HS_DIGEST;
    assert_int_equal(hy_listen_check_auto("topo.yaml", &s, l, 3, &err), 0);
    /* auto, but the sizes differ by one: served */
    l[1].handshake = HY_LISTEN_HS_AUTO;
    s.digest[0] = 41;
    assert_int_equal(hy_listen_check_auto("topo.yaml", &s, l, 3, &err), 0);
    /* auto, a type-32 message of size 40 and the digest's 4 bytes a u32 of 40 in all its bytes */
    s.digest[0] = 40;
    s.digest[1] = 1; /* 296 */
    assert_int_equal(hy_listen_check_auto("topo.yaml", &s, l, 3, &err), 0);
}

/* cgroup: auto (the default), off, or an absolute path, cleaned; printed
 * as written. Whether the path can be used is hyphad's start's business. */
/* user, umask and rlimits resolved to numbers; `nobody` is in every Debian */
static void test_process_settings(void **state)
{
    (void)state;
    hy_err err;
    hy_topology *t = load(W_A "    user: nobody\n    umask: \"0027\"\n"
                              "    rlimits: {nofile: \"512:1024\", core: 0, stack: 8MiB, cpu: 1m, as: unlimited}\n",
                          &err);
    if (!t && geteuid() != 0)
        skip(); /* not root: `user` is refused, as test_bad_documents does not check */
    assert_non_null(t);
    const hy_worker_proc *p = &t->workers[0].proc;
    assert_true(p->set_ids);
    assert_int_equal(p->uid, 65534);
    assert_string_equal(p->user, "nobody");
    assert_true(p->set_umask);
    assert_int_equal(p->umask, 027);
    assert_true(p->rlimits[HY_RLIMIT_NOFILE].set);
    assert_int_equal(p->rlimits[HY_RLIMIT_NOFILE].soft, 512);
    assert_int_equal(p->rlimits[HY_RLIMIT_NOFILE].hard, 1024);
    assert_int_equal(p->rlimits[HY_RLIMIT_CORE].hard, 0);
    assert_int_equal(p->rlimits[HY_RLIMIT_STACK].soft, 8u << 20);
    assert_int_equal(p->rlimits[HY_RLIMIT_CPU].soft, 60);
    assert_true(p->rlimits[HY_RLIMIT_AS].hard == UINT64_MAX);
    assert_false(p->rlimits[HY_RLIMIT_NPROC].set);
    hy_topology_free(t);
}

static void test_cgroup_key(void **state)
{
    (void)state;
    static const struct { const char *line; hy_cgroup_mode mode; const char *str; } cases[] = {
        {"", HY_CGROUP_AUTO, "auto"},
        {"cgroup: auto\n", HY_CGROUP_AUTO, "auto"},
        {"cgroup: ~\n", HY_CGROUP_AUTO, "auto"},
        {"cgroup: off\n", HY_CGROUP_OFF, "off"},
        {"cgroup: \"off\"\n", HY_CGROUP_OFF, "off"},
        {"cgroup: /sys/fs/cgroup/hypha\n", HY_CGROUP_PATH, "/sys/fs/cgroup/hypha"},
        {"cgroup: /sys/fs/cgroup//x/./y/\n", HY_CGROUP_PATH, "/sys/fs/cgroup/x/y"},
        {"cgroup: /nonexistent\n", HY_CGROUP_PATH, "/nonexistent"},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        char doc[256];
        snprintf(doc, sizeof doc, HDR "%s", cases[i].line);
        hy_topology *t = load_ok(doc);
        assert_int_equal(t->cgroup, cases[i].mode);
        assert_string_equal(hy_topology_cgroup_str(t), cases[i].str);
        if (cases[i].mode == HY_CGROUP_PATH)
            assert_string_equal(t->cgroup_path, cases[i].str);
        else
            assert_null(t->cgroup_path);
        hy_topology_free(t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_documents),
        cmocka_unit_test(test_bad_contracts_file),
        cmocka_unit_test(test_policy_builtin),
        cmocka_unit_test(test_minimal),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_tcp_upstream_and_publish_all),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_demo_yaml),
        cmocka_unit_test(test_signals),
        cmocka_unit_test(test_endpoint_str),
        cmocka_unit_test(test_listen_options),
        cmocka_unit_test(test_listen_auto_ambiguous),
        cmocka_unit_test(test_policy_names),
        cmocka_unit_test(test_cgroup_key), cmocka_unit_test(test_process_settings),
        cmocka_unit_test(test_env_bad_documents),
        cmocka_unit_test(test_env_file_resolved),
        cmocka_unit_test(test_expansion),
        cmocka_unit_test(test_autostart_after),
    };
    return cmocka_run_group_tests_name("topology", tests, setup, teardown);
}
