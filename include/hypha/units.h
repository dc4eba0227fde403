/* units.h - the duration and size notations of topology files.
 *
 * Durations: a sequence of <number><unit>, unit one of ms s m h d, decimals
 * allowed ("100ms", "5s", "1.5s", "1m30s"); a bare "0" means zero. Results are
 * whole milliseconds. Sizes: <number>[unit], unit one of B KiB MiB GiB (powers
 * of 1024) or KB MB GB (powers of 1000); a bare integer is bytes.
 * Pure functions: no I/O, no allocation.
 */
#ifndef HYPHA_UNITS_H
#define HYPHA_UNITS_H

#include <stddef.h>
#include <stdint.h>

/* Return 0 and set *out, or -1 with a reason in why[0..whylen). */
int hy_parse_duration_ms(const char *s, uint64_t *out, char *why, size_t whylen);
int hy_parse_size(const char *s, uint64_t *out, char *why, size_t whylen);

/* Canonical text: "1m30s", "100ms", "0s"; "8MiB", "1500B". Return out. */
char *hy_format_duration(uint64_t ms, char *out, size_t outlen);
char *hy_format_size(uint64_t bytes, char *out, size_t outlen);

/* For tables people read (hyphactl): an age or uptime at a glance, "2.5s",
 * "3m04s", "1h02m", "2d03h"; a byte count, "512 B", "1.5 MiB". Return out. */
char *hy_format_age(double seconds, char *out, size_t outlen);
char *hy_format_bytes(uint64_t bytes, char *out, size_t outlen);

#endif
