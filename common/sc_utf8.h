/* sc_utf8.h - well-formed UTF-8 (RFC 3629), the rules jansson checks a
 * string by: no overlong forms, no surrogates, nothing past U+10FFFF. NUL
 * and control bytes are well formed. */
#ifndef SC_UTF8_H
#define SC_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* The length of the well-formed sequence at s[0..n) (n > 0, s[0] >= 0x80),
 * or 0 when there is none. */
size_t sc_utf8_len(const unsigned char *s, size_t n);

/* Whether s[0..n) is well-formed UTF-8 through and through. */
bool sc_utf8_valid(const void *s, size_t n);

/* Copies at most n bytes of s (a NUL among them too) into dst, of cap > 0
 * bytes, NUL-terminated, each byte outside printable ASCII as '?': client
 * bytes made safe for a log line or a JSON string. Returns the length. */
size_t sc_ascii_clean(char *dst, size_t cap, const char *s, size_t n);

#endif
