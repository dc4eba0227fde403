/* topology.h - the topology file, loaded and resolved.
 *
 * A topology names the contracts file, the upstream bus (or none: embedded
 * mode), optional listen endpoints, the control socket, defaults and the
 * workers. Loading checks every key, merges `defaults` into each worker (key by
 * key, so a worker may override just `backoff.max`), resolves relative paths
 * against the topology file's directory and message names against the
 * contracts. Any problem is reported as `file:line:col: message`.
 */
#ifndef HYPHA_TOPOLOGY_H
#define HYPHA_TOPOLOGY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hypha/err.h"
#include "hypha/schema.h"

typedef enum hy_restart_policy {
    HY_RESTART_ALWAYS,
    HY_RESTART_ON_FAILURE,
    HY_RESTART_NEVER,
} hy_restart_policy;

typedef enum hy_overflow {
    HY_OVERFLOW_DROP_OLDEST,
    HY_OVERFLOW_DROP_NEWEST,
    HY_OVERFLOW_BLOCK,
} hy_overflow;

typedef enum hy_endpoint_kind { HY_EP_UNIX, HY_EP_TCP } hy_endpoint_kind;

/* What the upstream sends first: Mycelium's digest handshake (its
 * PythonBridgeService endpoint), or nothing (bind_unix_endpoint, every
 * bind_tcp_endpoint, topology.toml endpoints: frames from byte 0). */
typedef enum hy_up_handshake { HY_UP_HANDSHAKE_DIGEST, HY_UP_HANDSHAKE_NONE } hy_up_handshake;

/* `cgroup:` where hyphad contains each worker instance, so that nothing a
 * worker starts outlives it (docs/supervision.md, "Containment: cgroups"). */
typedef enum hy_cgroup_mode {
    HY_CGROUP_AUTO, /* under hyphad's own cgroup2 if it can make one there; else not used, said once */
    HY_CGROUP_OFF,  /* never: leftovers are found through /proc */
    HY_CGROUP_PATH, /* under cgroup_path, or hyphad does not start */
} hy_cgroup_mode;

typedef struct hy_endpoint {
    hy_endpoint_kind kind;
    char *path;      /* HY_EP_UNIX: absolute socket path (owned) */
    char *host;      /* HY_EP_TCP: host or address (owned) */
    uint16_t port;   /* HY_EP_TCP */
} hy_endpoint;

/* One `tls:` mapping, as the topology gives it (paths resolved). */
typedef struct hy_tls_spec {
    char *ca;                    /* client: CAs that sign the server (NULL: the system store) */
    char *cert, *key;            /* its own certificate chain and key (a server's are required) */
    char *server_name;           /* client: the name the server's certificate must carry (NULL: the host) */
    char *client_ca;             /* server: require client certificates signed by these (NULL: none asked) */
    uint64_t handshake_timeout_ms; /* the TLS handshake is done within this (default 10s) */
} hy_tls_spec;

/* What a listen endpoint reads first (docs/routing.md, "Listen endpoints"). */
typedef enum hy_listen_handshake {
    HY_LISTEN_HS_AUTO,   /* tell a digest handshake from frames by the first bytes */
    HY_LISTEN_HS_DIGEST, /* u16 LE 32 | digest required within 5 s */
    HY_LISTEN_HS_NONE,   /* frames from byte 0 */
} hy_listen_handshake;

#define HY_LISTEN_MAX_CLIENTS_DEFAULT 256u
#define HY_LISTEN_MAX_CLIENTS_MAX 65536u
#define HY_LISTEN_MAX_FRAME_MIN 64u
#define HY_LISTEN_FRAME_TIMEOUT_DEFAULT_MS 10000u
#define HY_TLS_HANDSHAKE_TIMEOUT_DEFAULT_MS 10000u

/* One `listen:` entry. */
typedef struct hy_listen_spec {
    hy_endpoint ep;
    hy_listen_handshake handshake;
    uint32_t max_clients;          /* 1 .. HY_LISTEN_MAX_CLIENTS_MAX */
    uint32_t max_frame;            /* a client's longest frame payload: its input's memory cap */
    uint64_t frame_timeout_ms;     /* a frame once started is whole within this (0: no limit) */
    hy_tls_spec *tls;              /* TLS (owned), or NULL */
    bool insecure;                 /* plaintext TCP on a non-loopback address, asked for */
    size_t line, col;              /* where the entry is, for errors found later */
} hy_listen_spec;

/* Restart, stop and queue policy: what `defaults` holds and workers override. */
typedef struct hy_policy {
    hy_restart_policy restart;
    uint64_t backoff_initial_ms;
    double backoff_factor;         /* >= 1.0 */
    uint64_t backoff_max_ms;
    double backoff_jitter;         /* 0 .. 1: delay * (1 +/- jitter) */
    uint64_t backoff_reset_after_ms;
    uint32_t give_up_failures;     /* 0 = never give up */
    uint64_t give_up_within_ms;
    uint64_t give_up_retry_after_ms; /* 0 = stay failed */
    int stop_signal;               /* e.g. SIGTERM */
    uint64_t stop_grace_ms;
    uint64_t start_timeout_ms;
    uint64_t heartbeat_timeout_ms; /* 0 = no liveness watchdog */
    uint64_t queue_limit;          /* bytes */
    hy_overflow queue_overflow;
    uint64_t queue_hold_ms;        /* a restarting instance's frames wait this long for it; 0 = dropped */
} hy_policy;

/* A worker's resource limits (rlimits:), in setrlimit's terms. */
enum { HY_RLIMIT_NOFILE, HY_RLIMIT_CORE, HY_RLIMIT_NPROC, HY_RLIMIT_MEMLOCK, HY_RLIMIT_AS, HY_RLIMIT_CPU,
       HY_RLIMIT_FSIZE, HY_RLIMIT_STACK, HY_RLIMITS };

typedef struct hy_worker_rlimit {
    bool set;
    uint64_t soft, hard; /* UINT64_MAX: unlimited */
} hy_worker_rlimit;

/* Who the worker runs as, and its process settings (user, group, umask,
 * rlimits; topology_proc.c). Unset: as hyphad. */
typedef struct hy_worker_proc {
    bool set_ids;            /* user or group given: setgroups, setgid, setuid */
    unsigned uid, gid;
    unsigned *groups;        /* supplementary groups (owned) */
    size_t ngroups;
    char *user;              /* the user's name, for USER and LOGNAME (owned; NULL: none) */
    char *home;              /* its home, for HOME (owned; NULL: none) */
    bool set_umask;
    unsigned umask;
    hy_worker_rlimit rlimits[HY_RLIMITS];
} hy_worker_proc;

typedef struct hy_worker_spec {
    char *name;            /* key under `workers` (owned) */
    char **argv;           /* NULL-terminated (owned, each string owned) */
    size_t argc;
    char *exec_path;       /* argv[0] resolved: absolute path checked to be
                              executable when the topology was loaded (owned) */
    char *cwd;             /* absolute; defaults to the topology's dir (owned) */
    char **env;            /* "KEY=VALUE", NULL-terminated (owned) */
    size_t nenv;
    uint32_t instances;
    uint16_t *subscribe;   /* type ids, sorted, unique (owned) */
    size_t nsubscribe;
    bool publish_all;      /* `publish` absent: every schema type allowed */
    uint16_t *publish;     /* type ids, sorted, unique (owned) */
    size_t npublish;
    hy_policy policy;
    hy_worker_proc proc;   /* user, group, umask, rlimits */
    size_t line, col;      /* where the worker is defined */
    char **env_files;      /* env_file paths, absolute, in order; "-PATH": ignored
                              if missing (NULL-terminated, owned; NULL: none) */
    size_t nenv_files;
    bool autostart;        /* false: defined, started only by `hyphactl start` */
    char **after;          /* workers whose every instance is ready before this
                              one's start (NULL-terminated, owned; NULL: none) */
    size_t nafter;
    char **preload;        /* modules a fork server imports once, its instances forked from it
                              (NULL-terminated, owned; NULL: spawned, as every worker) */
    size_t npreload;
} hy_worker_spec;

/* A worker's user, group, umask and rlimits as hy_spawn wants them
 * (topology_proc.c): for its spawns and its fork server's. */
struct hy_spawn_creds;
void hy_worker_proc_creds(const hy_worker_proc *p, struct hy_spawn_creds *c);

/* setrlimit's resource for HY_RLIMIT_*, and the key's name. */
int hy_rlimit_resource(int which);
const char *hy_rlimit_name(int which);

typedef struct hy_topology {
    char *path;              /* the topology file, absolute (hy_topology_load; owned) */
    char file_digest[65];    /* SHA-256 of its bytes, hex (hy_topology_load; "" otherwise): an
                                upgrade checks that the file on disk is still the one running */
    char *dir;               /* its directory, absolute (owned) */
    hy_schema *schema;       /* loaded contracts (owned) */
    char *schema_path;       /* resolved contracts path (owned) */

    bool has_upstream;       /* false: embedded mode */
    hy_endpoint upstream;
    hy_up_handshake upstream_handshake; /* default digest */
    hy_tls_spec *upstream_tls;   /* TLS to the bus (owned), or NULL */
    bool upstream_echo;
    uint64_t upstream_buffer;
    uint64_t reconnect_initial_ms;
    uint64_t reconnect_max_ms;

    hy_listen_spec *listen;  /* owned */
    size_t nlisten;

    char *control_socket;    /* absolute (owned) */
    uint32_t control_mode;   /* e.g. 0600 */

    hy_cgroup_mode cgroup;   /* default auto */
    char *cgroup_path;       /* HY_CGROUP_PATH: absolute, cleaned (owned) */

    bool has_metrics;        /* `metrics: {listen: HOST:PORT}`: Prometheus over HTTP */
    hy_endpoint metrics;     /* HY_EP_TCP */

    hy_policy defaults;      /* after merging `defaults` into built-ins */
    hy_worker_spec *workers; /* in file order (owned) */
    size_t nworkers;
} hy_topology;

/* The built-in defaults, before any `defaults:` block. */
void hy_policy_builtin(hy_policy *p);

/* `path` may be relative: it is made absolute against the current
 * directory first (lexically, links kept), and t->path and every message
 * about the file name that absolute path. */
hy_topology *hy_topology_load(const char *path, hy_err *err);
/* Load from memory: `name` for messages; relative paths resolve against
 * `base_dir` (absolute). */
hy_topology *hy_topology_load_buffer(const char *name, const char *base_dir,
                                     const uint8_t *data, size_t len,
                                     hy_err *err);
void hy_topology_free(hy_topology *t);
/* Free a NULL-terminated array of strings and the strings (NULL: nothing). */
void hy_strv_free(char **v);

const hy_worker_spec *hy_topology_find_worker(const hy_topology *t,
                                              const char *name);

const char *hy_restart_policy_str(hy_restart_policy p);
const char *hy_overflow_str(hy_overflow o);
const char *hy_up_handshake_str(hy_up_handshake h); /* "digest" or "none" */
/* The `cgroup:` value as written: "auto", "off" or the path. */
const char *hy_topology_cgroup_str(const hy_topology *t);
/* "TERM" for SIGTERM; NULL if not a signal hypha names. */
const char *hy_signal_name(int sig);
/* Any signal's short name for people ("SEGV" for SIGSEGV); NULL if none. */
const char *hy_signal_abbrev(int sig);
/* "TERM", "SIGTERM", "term" -> SIGTERM; -1 if unknown. */
int hy_signal_parse(const char *s);

const char *hy_listen_handshake_str(hy_listen_handshake h);
void hy_tls_spec_free(hy_tls_spec *s);
/* A TCP host that only this machine can reach: 127.0.0.0/8, ::1, localhost. */
bool hy_host_is_loopback(const char *host);
/* `handshake: auto` needs a schema in which no frame's first 6 bytes can be
 * those of the digest handshake: 0, or -1 with `file:line:col: message`
 * (the entry's place) naming the fix, for the first auto entry that cannot
 * be served. Called by the loader; pure, so tests can hand it a schema. */
int hy_listen_check_auto(const char *file, const hy_schema *s, const hy_listen_spec *l, size_t n, hy_err *err);

/* Text form of an endpoint: "unix:/path" or "tcp:host:port". */
char *hy_endpoint_str(const hy_endpoint *ep, char *out, size_t outlen);

#endif
