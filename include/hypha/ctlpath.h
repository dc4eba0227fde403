/* ctlpath.h - where hyphad's control socket is, without loading a topology.
 *
 * hyphactl needs only the `control.socket` of a topology file: reading it
 * with the full loader would load the contracts (and OpenSSL to hash them),
 * which costs more than the request itself. hyphad's loader uses the same
 * default, so the two always agree.
 */
#ifndef HYPHA_CTLPATH_H
#define HYPHA_CTLPATH_H

#include <stddef.h>

#include "hypha/err.h"

/* /run/hypha/control.sock for root, $XDG_RUNTIME_DIR/hypha/control.sock,
 * else /tmp/hypha-UID/control.sock. */
void hy_default_control_socket(char *out, size_t len);

/* `control.socket` of the topology at `path` (resolved against its
 * directory), or the default when it has none. 0, or -1 with err. */
int hy_control_socket_of(const char *path, char *out, size_t len, hy_err *err);

#endif
