/* key: loading and creating the pre-shared key of the page-server protocol.
 *
 * A key file is the one line `distriproc keygen` writes:
 *     distriproc-key-v1 <64 hex digits>\n
 * i.e. 32 random bytes (256 bits). A bare line of 64 hex digits (what keygen
 * wrote before the header) is accepted too: the same strength. Nothing else is
 * a key: no raw bytes, no short keys, no keys of a few repeated byte values.
 * The file must belong to the caller and be unreadable by group and others. */
#ifndef DP_KEY_H
#define DP_KEY_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define DP_KEY_LEN    32
#define DP_KEY_HEADER "distriproc-key-v1 "

/* Decodes the text of a key file (data, len: any bytes) into key[DP_KEY_LEN].
 * Pure (no I/O, no allocation), so it can be fuzzed. Returns 0, or -1 with
 * err saying what is wrong (without the file name). */
int dp_key_parse(const uint8_t *data, size_t len, uint8_t key[DP_KEY_LEN], struct dp_err *err);
/* Loads the key file at path (following a symlink, then checking the file it
 * names: regular, ours, mode 0600 or stricter). key must hold DP_KEY_MAX
 * bytes; *key_len is set to DP_KEY_LEN. Returns 0 or -1 with err. */
int dp_key_load(const char *path, uint8_t *key, size_t *key_len, struct dp_err *err);
/* Writes a new key (32 random bytes, in the format above) to a new file with
 * mode 0600 (fails if it exists unless force). */
int dp_key_generate(const char *path, int force, struct dp_err *err);

#endif
