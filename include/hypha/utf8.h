/* utf8.h - the one UTF-8 validator: the log's JSON lines and tap's decoded
 * strings both replace what it rejects with U+FFFD. Pure. */
#ifndef HYPHA_UTF8_H
#define HYPHA_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length of the valid UTF-8 sequence at p (at most n bytes, n >= 1), or 0:
 * no overlong forms, no surrogates, nothing past U+10FFFF. NUL is valid. */
size_t hy_utf8_seq(const uint8_t *p, size_t n);

#endif
