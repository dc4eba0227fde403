/* resolve.h - host names resolved off the event loop.
 *
 * getaddrinfo(3) can block for seconds on a slow DNS server; hyphad's loop
 * must not (it serves workers, the bus and hyphactl). A request runs
 * getaddrinfo in a short-lived thread of its own and hands the answer back
 * to the loop through an ev_async watcher, so the callback always runs on
 * the loop, never inside hy_resolve_start. The thread touches nothing but
 * its request: the request is freed by whichever of the thread and the loop
 * lets go of it last, so a cancelled request is safe however late its
 * answer comes.
 */
#ifndef HYPHA_RESOLVE_H
#define HYPHA_RESOLVE_H

#include <ev.h>
#include <netdb.h>
#include <stdint.h>

typedef struct hy_resolve hy_resolve;

/* The answer: on success `ai` (the callee's to free with freeaddrinfo) and
 * gai 0; else ai NULL, gai the getaddrinfo error and sys its errno. */
typedef void (*hy_resolve_cb)(void *ud, struct addrinfo *ai, int gai, int sys);

/* Resolve host:port for a TCP stream socket, any address family. NULL if
 * the request could not be made (out of memory, no thread): errno says why. */
hy_resolve *hy_resolve_start(struct ev_loop *loop, const char *host, uint16_t port, hy_resolve_cb cb, void *ud);
/* The callback will not be called; the request goes when its thread is done. */
void hy_resolve_cancel(hy_resolve *r);

#endif
