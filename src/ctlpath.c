/* ctlpath.c - the control socket's path (see hypha/ctlpath.h). Uses libyaml
 * only: no contracts, no OpenSSL. */
#include "hypha/ctlpath.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "yamlx.h"

void hy_default_control_socket(char *out, size_t len)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (geteuid() == 0)
        snprintf(out, len, "/run/hypha/control.sock");
    else if (xdg && *xdg == '/')
        snprintf(out, len, "%s/hypha/control.sock", xdg);
    else
        snprintf(out, len, "/tmp/hypha-%u/control.sock", (unsigned)geteuid());
}

int hy_control_socket_of(const char *path, char *out, size_t len, hy_err *err)
{
    size_t n;
    uint8_t *data = hy_read_file(path, &n, 16u << 20, err);
    if (!data)
        return -1;
    hy_ydoc y;
    memset(&y, 0, sizeof y);
    int rc = -1;
    if (hy_ydoc_load(&y, path, data, n, err) == 0) {
        yaml_node_t *root = hy_ydoc_root(&y), *ctl = NULL, *sock = NULL;
        if (hy_yis_map(root) && (ctl = hy_ymap_get(&y, root, "control")) && hy_yis_map(ctl))
            sock = hy_ymap_get(&y, ctl, "socket");
        if (!sock || hy_yis_null(sock)) {
            hy_default_control_socket(out, len);
            rc = 0;
        } else if (!hy_yis_scalar(sock) || !*hy_ystr(sock)) {
            hy_yerr(&y, sock, "control.socket must be a path");
        } else {
            char *dir = hy_dir_of(path, err);
            char *full = dir ? hy_path_join(dir, hy_ystr(sock)) : NULL;
            if (full && strlen(full) < len) {
                snprintf(out, len, "%s", full);
                rc = 0;
            } else if (dir) {
                hy_yerr(&y, sock, "control.socket: path too long");
            }
            free(full);
            free(dir);
        }
    }
    hy_ydoc_free(&y);
    free(data);
    return rc;
}
