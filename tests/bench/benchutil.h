/* benchutil.h - helpers shared by the relay benchmark programs (relay_*.c,
 * driven by bench_relay.py): TLV frame encoding, the bus handshake, Unix
 * and loopback TCP socket set-up, write-all and read loops, the monotonic
 * clock.
 *
 * A frame is `u16 type | u32 length | payload[length]`, little-endian; the
 * benchmark payloads start with `u32 producer id | u64 seq`. The bus
 * handshake is `u16 LE 32 | 32-byte digest`.
 */
#ifndef HYPHA_BENCHUTIL_H
#define HYPHA_BENCHUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BU_HDR 6         /* u16 type | u32 length */
#define BU_PREFIX 18     /* header + u32 id + u64 seq */
#define BU_HS_LEN 34     /* u16 32 | 32-byte digest */
#define BU_DIGEST_HEX 64 /* the digest as hex on the command line */

/* CLOCK_MONOTONIC in nanoseconds. */
long long bu_now_ns(void);

/* Little-endian integers. */
void bu_put_u16(uint8_t *p, uint16_t v);
void bu_put_u32(uint8_t *p, uint32_t v);
void bu_put_u64(uint8_t *p, uint64_t v);
uint16_t bu_get_u16(const uint8_t *p);
uint32_t bu_get_u32(const uint8_t *p);
uint64_t bu_get_u64(const uint8_t *p);

/* nf frames back to back at buf: each a header (type, size) and a payload
 * starting with `u32 id`, the rest (seq included) 0xA5 filler. */
void bu_fill_frames(uint8_t *buf, size_t nf, uint16_t type, uint32_t size, uint32_t id);

/* Writes count frames from buf (nf frames of flen bytes, as bu_fill_frames
 * made them) to fd, nf at most per write, their seq 0, 1 ... count-1.
 * -1 on a write error (errno set). */
int bu_send_frames(int fd, uint8_t *buf, size_t nf, size_t flen, uint64_t count);

/* The 32 bytes written in 64 hex digits. */
void bu_digest(uint8_t out[32], const char *hex);

/* The handshake a client sends for the digest written in hex. */
void bu_handshake(uint8_t out[BU_HS_LEN], const char *hex);

/* A server's view of one client's handshake as its bytes come in. */
typedef struct bu_hs {
    size_t have;
    uint8_t buf[BU_HS_LEN];
} bu_hs;

/* Takes handshake bytes off the front of *p / *len (moving both past them).
 * 1 when this completes a handshake for digest, -1 when it completes a
 * wrong one, 0 otherwise (incomplete, or complete before this call). */
int bu_hs_feed(bu_hs *h, const uint8_t digest[32], const uint8_t **p, size_t *len);

/* A Unix stream socket listening at path (replacing a file there), or
 * connected to path; -1 on error (errno set). */
int bu_listen_unix(const char *path);
int bu_connect_unix(const char *path);

/* A TCP socket listening on 127.0.0.1:port (0: a free port, chosen by the
 * kernel); *bound is set to the port it got. -1 on error (errno set). */
int bu_listen_tcp_loopback(int port, int *bound);

/* Adds fd to the epoll set ep, for input, with tag as its event data (u32). */
int bu_epoll_add(int ep, int fd, uint32_t tag);

/* Accepts a connection on lfd and adds it to ep with tag: its fd, or -1 if
 * accept failed. */
int bu_accept(int lfd, int ep, uint32_t tag);

/* Removes fd from ep and closes it. */
void bu_unwatch(int ep, int fd);

/* write(2) until all n bytes are out; -1 on error (errno set). */
int bu_write_all(int fd, const void *p, size_t n);

/* read(2), retried on EINTR. */
ssize_t bu_read(int fd, void *buf, size_t n);

/* Reads fd until EOF (or an error), discarding what comes. */
void bu_drain(int fd);

#endif
