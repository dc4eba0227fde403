/* ctlroll.h - `hyphactl restart --rolling NAME`: one instance at a time.
 * Private to hyphactl. */
#ifndef HYPHA_CTLROLL_H
#define HYPHA_CTLROLL_H

#include <jansson.h>
#include <stdbool.h>

/* req: the restart request ({"cmd":"restart","name":NAME}, taken). Each
 * instance NAME selects is restarted in turn, and the next only once it is
 * ready again with a new process; an instance not ready within timeout_s
 * (or failed) stops the rollout. Prints progress (or one JSON object with
 * json_out); returns hyphactl's exit code. */
int hy_roll_restart(const char *sock, json_t *req, double timeout_s, bool json_out);

#endif
