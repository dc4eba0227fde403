/* upgrade.h - hyphad re-executes itself in place (`hyphactl upgrade`,
 * SIGUSR2): the same process, the same children, the same fds; what the
 * running hyphad knows goes across in a state document.
 *
 * The state is a JSON document and the bytes it points into (queues,
 * half-read frames), written to a memfd: "HYPHAUPG", a u32 format version,
 * a u32 document length, the document, the bytes. The fds it names are
 * made inheritable just before the exec (every other fd stays
 * close-on-exec and goes). The new binary reads it before anything else,
 * adopts what it names instead of opening, binding, connecting or
 * spawning, and until it serves it changes nothing outside itself: if it
 * cannot take over (a state version it does not read, a topology that no
 * longer fits, any failure) it executes the old binary again, kept open as
 * an fd, with the same state and the reason, and that one takes over
 * instead. docs/supervision.md says what survives.
 */
#ifndef HYPHA_UPGRADE_H
#define HYPHA_UPGRADE_H

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hypha/err.h"

/* The state format this binary writes and reads. A variable so that a
 * test build of hyphad (hyphad-state2) can be another version, to see a
 * refused state fall back. */
#define HY_UPGRADE_STATE_VERSION 1
extern unsigned hy_upgrade_state_version;

typedef struct hy_ustate {
    json_t *root;                /* the document (owned) */
    uint8_t *blob;               /* the bytes it refers to (owned; read side: mapped) */
    size_t blen, bcap;
    int *fds;                    /* write side: the fds carried */
    size_t nfds, fcap;
    bool mapped;
} hy_ustate;

/* ---- writing (the running hyphad) ------------------------------------------ */

int hy_ustate_init(hy_ustate *u);
void hy_ustate_free(hy_ustate *u);
/* n bytes into the state: their reference ({"at":..,"len":..}), or NULL on ENOMEM. */
json_t *hy_ustate_bytes(hy_ustate *u, const void *p, size_t n);
/* Room for n bytes, written by the caller: NULL on ENOMEM. */
uint8_t *hy_ustate_reserve(hy_ustate *u, size_t n, json_t **ref);
/* fd is carried across (-1: JSON null). NULL on ENOMEM. */
json_t *hy_ustate_fd(hy_ustate *u, int fd);

/* Execute `path` in place of this process with `argv` and the environment
 * plus `extra_env` (NULL-terminated "K=V"), the state going with it. Only
 * returns on failure (-1, err), with nothing changed: the carried fds are
 * close-on-exec again. */
int hy_upgrade_exec(hy_ustate *u, const char *path, char *const argv[], char *const extra_env[], hy_err *err);

/* The signals an exec carries blocked (their default action would end
 * hyphad before the new binary has handlers: a SIGHUP in that moment, a
 * second SIGUSR2). */
void hy_upgrade_signals(sigset_t *set);
/* The handlers are in place (hyphad's loop is about to run): what was
 * blocked across the exec, and is pending, is delivered now. */
void hy_upgrade_signals_ready(void);

/* ---- reading (the new hyphad, at start) ------------------------------------ */

/* The environment names a state: read and check it. 0: none named (an
 * ordinary start); 1: adopted, hy_upgrade_restoring() has it; a state this
 * binary cannot read falls back (hy_upgrade_fallback) and never returns.
 * argv: main's (the way back runs the old binary with them). */
int hy_upgrade_load(char **argv);
/* The state being adopted, or NULL. */
const hy_ustate *hy_upgrade_restoring(void);
/* This start is the old binary taken back after a failed upgrade: the
 * reason, or NULL. */
const char *hy_upgrade_failed_reason(void);
/* The version of the hyphad that wrote the state ("" if none). */
const char *hy_upgrade_from(void);
/* Adopting failed before serving: the old binary again, with the state
 * and `reason`. Returns only if that is impossible (we are the old binary
 * already, or the exec failed): then the caller must exit. */
void hy_upgrade_fallback(const char *reason);
/* Serving: the state is let go (its fds are the modules' now). */
void hy_upgrade_done(void);

/* Upgrades attempted so far (carried across them), and the last one's
 * outcome for `status` ({"count":N,"last":{result,from,to,reason,pause_ms,at}});
 * result: "ok", "failed" (the old binary took over again, or the exec
 * failed) or "refused" (the probe: nothing was handed over). */
unsigned hy_upgrade_count(void);
void hy_upgrade_note(const char *result, const char *from, const char *reason, double pause_ms);
json_t *hy_upgrade_status(void);

/* The referenced bytes (n set), or NULL when ref is not a reference into them. */
const uint8_t *hy_ustate_get(const hy_ustate *u, const json_t *ref, size_t *n);
/* A carried fd from the state (made close-on-exec again), or -1. */
int hy_ustate_getfd(const json_t *v);
/* A listening socket carried across by its endpoint name ("unix:/path",
 * "tcp:host:port"), taken once; -1 if none. */
int hy_upgrade_take_listener(const char *name);

#endif
