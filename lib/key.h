/* key: loading and creating the pre-shared key of the page-server protocol. */
#ifndef DP_KEY_H
#define DP_KEY_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* Loads a key file: if it holds only hex digits (and whitespace), the decoded
 * bytes; otherwise the raw bytes. DP_KEY_MIN..DP_KEY_MAX (16..1024) bytes.
 * Warns if the file is readable by group or others. key must hold 1024 bytes. */
int dp_key_load(const char *path, uint8_t *key, size_t *key_len, struct dp_err *err);
/* The parsing half of dp_key_load on a file's bytes (path only names it in
 * errors): hex or raw, DP_KEY_MIN..DP_KEY_MAX bytes; key must hold 1024 bytes. */
int dp_key_parse(const char *path, const uint8_t *data, size_t len, uint8_t *key, size_t *key_len,
                 struct dp_err *err);
/* Writes 32 random bytes as hex to a new file with mode 0600 (fails if it exists
 * unless force). */
int dp_key_generate(const char *path, int force, struct dp_err *err);

#endif
