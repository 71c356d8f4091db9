/* jsonout: one JSON result line on stdout, printed by jansson (strings
 * escaped, numbers as numbers), for the commands' --json output. The writing
 * side of lib/jsonq.h. */
#ifndef DP_JSONOUT_H
#define DP_JSONOUT_H

#include <stddef.h>

#include <jansson.h>

/* Prints o and a newline on stdout with jansson's dump flags (0 gives the
 * ", " and ": " separators, JSON_COMPACT none); takes o, which may be NULL
 * (out of memory while building it). Returns 0, or -1 after saying why. */
int dp_json_print(json_t *o, size_t flags);

/* Writes o as one line of JSON text (", " and ": " separators) and a newline
 * into buf of len bytes, NUL-terminated; takes o (NULL: out of memory).
 * Returns the length, or -1 if it does not fit or cannot be printed. */
int dp_json_line(json_t *o, char *buf, size_t len);

/* The "0x..." form of an address that our JSON carries (64-bit values do not
 * all fit a JSON number that every reader takes exactly); buf of 19+ bytes. */
const char *dp_json_hex(char *buf, size_t len, unsigned long long v);

#endif
