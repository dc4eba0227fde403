/* view.h - what the observers (status, health, metrics, systemd status)
 * read: a snapshot of the supervisor and the relay, taken on demand.
 *
 * Nothing is kept up to date for them, so an idle control plane costs the
 * relay nothing, and none of them reads an instance's or a link's fields:
 * the structs behind a snapshot are private to their modules.
 */
#ifndef HYPHA_VIEW_H
#define HYPHA_VIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "hypha/drops.h"
#include "hypha/exitplan.h"
#include "hypha/tls_fail.h"
#include "hypha/topology.h"

typedef enum hy_state {
    HY_ST_STARTING,
    HY_ST_RUNNING,
    HY_ST_EXITED,
    HY_ST_BACKOFF,
    HY_ST_FAILED,
    HY_ST_STOPPING,
    HY_ST_STOPPED,
} hy_state;

const char *hy_state_str(hy_state st);

typedef struct hy_inst_view {
    const hy_worker_spec *spec;  /* its definition: name, policy, subscribe */
    unsigned index;
    const char *label;           /* "risk[1]" */
    hy_state state;
    bool pending;                /* made by a reload: starts once its predecessor is gone */
    bool waiting;                /* to start once its `after` workers are ready */
    const char *waiting_for;     /* waiting: the first of them not ready yet */
    bool retiring;               /* removed or changed by a reload: freed once stopped */
    bool ever_started;
    pid_t pid;                   /* 0: no process */
    const char *cgroup;          /* its cgroup2 directory; NULL: cgroups not used */
    double uptime_s;             /* with a process */
    uint32_t restarts;
    hy_exit_reason last_reason;  /* HY_EXIT_NONE before any exit */
    int last_code;               /* -1 when none */
    int last_signal;
    double last_exit_ago_s;
    const char *spawn_error;     /* "" when none */
    double retry_in_s;           /* failed with a retry pending: seconds left; < 0: none */
    uint64_t frames_in, bytes_in, frames_out, bytes_out, protocol_errors;
    hy_drops drops;
    hy_dropwin_delta recent;     /* the last minute of frames meant for it (drops.h) */
    bool handler_failing;        /* its handler fails on nearly every message (failstreak.h) */
    uint64_t fail_count, fail_frames; /* handler_failing: of that streak */
    size_t queue_bytes, queue_frames;
    bool held;                   /* its queue waits for its next process (queue.hold) */
    uint64_t reclaimed;          /* frames taken back from its dead processes' stdin pipes */
    bool forked;                 /* its process came from its fork server (preload) */
    const uint16_t *subs;        /* subscribed at run time (sorted) */
    size_t nsubs;
    double heartbeat_age_s;      /* < 0: no watchdog or no process */
} hy_inst_view;

/* A TLS link's certificates and failures (on: TLS is used there). */
typedef struct hy_tls_view {
    bool on;
    bool mutual;                 /* listen: client certificates required */
    const char *cert_subject;    /* its own certificate ("" without one) */
    time_t cert_not_after;       /* 0: none */
    const char *peer_subject;    /* upstream: the last server certificate seen ("" before one) */
    time_t peer_not_after;
    uint64_t fail[HY_TLS_FAIL__COUNT];
} hy_tls_view;

typedef struct hy_client_view {
    const char *name;            /* "tcp:127.0.0.1:9000#3" */
    const char *subject;         /* its certificate's subject ("" without TLS or a certificate) */
} hy_client_view;


typedef struct hy_up_view {
    const char *name;            /* "unix:/path", "tcp:host:port" */
    const char *state;           /* down, connecting, handshake, connected */
    bool ready;                  /* connected, past the handshake's probation */
    bool connected;              /* a connection exists (maybe in its probation) */
    double state_for_s;
    double down_for_s;           /* since the bus was last lost (or hyphad started) */
    uint64_t connects, disconnects;
    size_t buffered;
    bool back_pressure;
    uint64_t frames_out, bytes_out, frames_in, bytes_in;
    uint64_t frames_taken;       /* the bus is known to have taken them (SIOCOUTQ) */
    uint64_t frames_resent;      /* written, not known taken when the connection went: sent again */
    size_t unconfirmed;          /* bytes written, not yet known taken */
    hy_drops drops;
    hy_tls_view tls;
} hy_up_view;

typedef struct hy_listen_view {
    const char *name;
    const char *handshake;       /* auto, digest, none */
    uint32_t max_clients;
    size_t clients;
    uint64_t accepted;
    uint64_t refused_handshake;  /* wrong digest, not a handshake, none in time */
    uint64_t refused_full;       /* past max_clients */
    uint64_t refused_fds;        /* would eat into the workers' fd reserve */
    uint64_t too_slow;
    uint64_t frame_timeouts;     /* a frame not whole within frame_timeout */
    uint64_t too_long;           /* a frame over max_frame */
    uint32_t max_frame;
    uint64_t frame_timeout_ms;
    hy_tls_view tls;
    hy_client_view *who;         /* its clients (owned by the snapshot), nwho of them */
    size_t nwho;
} hy_listen_view;

/* The contracts file on disk beside the contracts hyphad runs
 * (schemawatch.c). */
typedef struct hy_schema_view {
    const char *file;            /* its absolute path; NULL: nobody looks (no daemon) */
    bool readable;               /* it could be read (last event, or now when not watched) */
    char on_disk[2 * HY_DIGEST_LEN + 1]; /* its SHA-256 then, hex; "" when unreadable */
    bool stale;                  /* on disk is not what runs: another digest, or unreadable */
} hy_schema_view;

typedef struct hy_snapshot {
    const hy_topology *topo;
    double uptime_s;             /* hyphad's */
    time_t wall;                 /* the wall clock when it was taken (certificate expiry) */
    hy_inst_view *inst;          /* owned */
    size_t ninst;
    hy_up_view up;               /* meaningful when topo->has_upstream */
    hy_listen_view *listen;      /* owned, topo->nlisten */
    size_t nlisten;
    hy_schema_view schema;       /* file NULL when the contracts file is not watched */
} hy_snapshot;

void hy_snapshot_free(hy_snapshot *s);

#endif
