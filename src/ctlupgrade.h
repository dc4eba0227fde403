/* ctlupgrade.h - `hyphactl upgrade [PATH]`: ask for an in-place upgrade,
 * then wait for the hyphad that answers next and say how it went.
 * Private to hyphactl. */
#ifndef HYPHA_CTLUPGRADE_H
#define HYPHA_CTLUPGRADE_H

#include <jansson.h>
#include <stdbool.h>

/* req: {"cmd":"upgrade"[,"path":PATH]} (taken). Returns hyphactl's exit
 * code: 0 upgraded, 1 refused or failed (the old hyphad serving), 3 no
 * hyphad answered within timeout_s. */
int hy_ctl_upgrade(const char *sock, json_t *req, double timeout_s, bool json_out);

#endif
