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

#include "hypha/drops.h"
#include "hypha/exitplan.h"
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
    size_t queue_bytes, queue_frames;
    const uint16_t *subs;        /* subscribed at run time (sorted) */
    size_t nsubs;
    double heartbeat_age_s;      /* < 0: no watchdog or no process */
} hy_inst_view;

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
    hy_drops drops;
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
} hy_listen_view;

typedef struct hy_snapshot {
    const hy_topology *topo;
    double uptime_s;             /* hyphad's */
    hy_inst_view *inst;          /* owned */
    size_t ninst;
    hy_up_view up;               /* meaningful when topo->has_upstream */
    hy_listen_view *listen;      /* owned, topo->nlisten */
    size_t nlisten;
} hy_snapshot;

void hy_snapshot_free(hy_snapshot *s);

#endif
