/* schemawatch.h - hyphad notices when its contracts file changes on disk.
 *
 * hyphad loads the contracts once, at start, and a reload refuses another
 * digest: what runs stays what was loaded. A user who regenerates or edits
 * the file should still learn at once that a restart is needed, so the
 * file's directory is watched with inotify (editors and codegen tools
 * replace a file by rename, which a watch on the file itself would lose).
 * On an event naming the file it is read and hashed like the loader does
 * (SHA-256 of its bytes); each change of verdict is logged once, and
 * `hyphactl status` shows the last one. Idle, it costs one fd and nothing
 * else: no timer, no polling.
 */
#ifndef HYPHA_SCHEMAWATCH_H
#define HYPHA_SCHEMAWATCH_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "hypha/schema.h"
#include "hypha/view.h"

/* What was last logged about the file, so each verdict is said once. */
typedef enum hy_sw_said {
    HY_SW_SAID_MATCHES, /* nothing to say: on disk is what runs */
    HY_SW_SAID_CHANGED, /* another digest, said_digest */
    HY_SW_SAID_GONE,    /* missing or unreadable */
} hy_sw_said;

typedef struct hy_schemawatch {
    struct ev_loop *loop;
    ev_io io;                              /* the inotify fd, readable */
    int fd;                                /* inotify; -1: not watched */
    int wd;                                /* the directory's watch; -1: none */
    char *file;                            /* absolute path (owned) */
    char *dir;                             /* its directory (owned) */
    const char *base;                      /* its name, within `file` */
    uint8_t running[HY_DIGEST_LEN];        /* the digest hyphad runs */
    char running_hex[2 * HY_DIGEST_LEN + 1];
    bool dirty;                            /* an event named the file since the last look */
    bool writing;                          /* just made, empty, not closed yet: not looked at */
    hy_sw_said said;
    uint8_t said_digest[HY_DIGEST_LEN];    /* with HY_SW_SAID_CHANGED */
    hy_schema_view view;                   /* the last verdict, for status */
} hy_schemawatch;

/* Watch `path` (absolute: the topology's resolved schema path) against the
 * loaded `running` contracts, and check it once now. A failure to watch is
 * logged (warn, naming the call and the file) and hyphad runs on: the
 * status then reads the file when asked. -1 only when out of memory. */
int hy_schemawatch_start(hy_schemawatch *w, struct ev_loop *loop, const char *path, const hy_schema *running);
/* Stop watching and free what it holds; safe on a zeroed or stopped one. */
void hy_schemawatch_stop(hy_schemawatch *w);

/* The file's state for a snapshot: the last verdict while watched, read
 * and hashed now when not (nothing is logged). */
void hy_schemawatch_view(const hy_schemawatch *w, hy_schema_view *out);

#endif
