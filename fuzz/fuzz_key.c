/* libFuzzer target for the key parser (dp_key_parse, the pure half of
 * dp_key_load): whatever a key file holds, the parser never reads past it,
 * and a key that parses came from a file of the one accepted form (the
 * header line or a bare line of 64 hex digits) whose hex digits spell it, and
 * is never a key of a few repeated byte values. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "key.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The value of hex digit c, or -1. */
static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t key[DP_KEY_LEN];
    struct dp_err err;
    if (dp_key_parse(data, size, key, &err) < 0)
        return 0;
    /* Accepted: the 64 hex digits after the optional header spell the key. */
    size_t off = 0, hl = strlen(DP_KEY_HEADER);
    if (size >= hl && memcmp(data, DP_KEY_HEADER, hl) == 0)
        off = hl;
    if (size < off + 2 * DP_KEY_LEN)
        abort();
    for (size_t i = 0; i < DP_KEY_LEN; i++) {
        int hi = hexval(data[off + 2 * i]), lo = hexval(data[off + 2 * i + 1]);
        if (hi < 0 || lo < 0 || key[i] != (uint8_t)(hi << 4 | lo))
            abort();
    }
    /* Never a key of one repeated byte. */
    size_t same = 1;
    for (size_t i = 1; i < DP_KEY_LEN; i++)
        same += key[i] == key[0];
    if (same == DP_KEY_LEN)
        abort();
    return 0;
}
