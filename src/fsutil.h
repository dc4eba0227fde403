/* fsutil.h - small file-system helpers shared by the loaders (internal). */
#ifndef HYPHA_FSUTIL_H
#define HYPHA_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hypha/err.h"

/* Read a whole regular file (at most `limit` bytes) into a malloc'd buffer,
 * NUL-terminated for convenience. Sets *len. NULL with err on failure, the
 * message naming the path and the reason, and errno set (EISDIR or EINVAL:
 * not a regular file; EFBIG: over the limit). */
uint8_t *hy_read_file(const char *path, size_t *len, size_t limit, hy_err *err);

/* Write `text` to an existing file in one write(2) (a control file such as
 * a cgroup's cgroup.kill: no creation, no truncation). 0, or -1 with err
 * naming the path and the reason, and errno set. */
int hy_write_file(const char *path, const char *text, hy_err *err);

/* Absolute directory of `path` (malloc'd), resolved against the current
 * directory when relative. NULL with err. */
char *hy_dir_of(const char *path, hy_err *err);

/* `rel` resolved against `base` unless absolute (malloc'd). NULL on ENOMEM. */
char *hy_path_join(const char *base, const char *rel);

/* Create the missing parent directories of `path` (not `path` itself) with
 * `mode`, like `mkdir -p "$(dirname path)"`. 0, or -1 with errno. */
int hy_mkdir_parents(const char *path, unsigned mode);

/* The directory of a socket only its owner may use (the control socket):
 * missing directories are made 0700; the one that holds the socket must be
 * a directory that no other user can write to, or they could replace the
 * socket with their own. `strict` (hyphad chose the path itself, the
 * default /tmp/hypha-UID, $XDG_RUNTIME_DIR/hypha or /run/hypha): a real
 * directory (not a link), owned by the euid, not writable by group or
 * others. Otherwise (a configured path): owned by the euid or root, not
 * writable by others unless sticky (as /tmp). 0, or -1 with err naming the
 * directory, its owner and mode, and the fix. */
int hy_private_socket_dir(const char *path, bool strict, const char *what, hy_err *err);

/* A listening Unix stream socket at `path` (non-blocking, close-on-exec):
 * missing parent directories are made (0755), a stale socket file left by
 * a dead process is replaced, a live one or a non-socket is an error.
 * `what` starts error messages ("listen", "control socket"). fd, or -1. */
int hy_unix_listen(const char *path, const char *what, hy_err *err);

#endif
