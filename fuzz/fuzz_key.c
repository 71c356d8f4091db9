/* libFuzzer target for the key parser (dp_key_parse, the bytes half of
 * dp_key_load): whatever a key file holds, a key that parses has
 * DP_KEY_MIN..DP_KEY_MAX bytes, and a hex file parses to the bytes its hex
 * digits spell. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "key.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t key[DP_KEY_MAX];
    size_t n = 0;
    struct dp_err err;
    if (dp_key_parse("fuzz.key", data, size, key, &n, &err) < 0)
        return 0;
    if (n < DP_KEY_MIN || n > DP_KEY_MAX)
        abort();
    /* Raw keys are the file itself. */
    if (n == size && memcmp(key, data, n) != 0) {
        /* unless the file was hex that happens to be as long as its key: impossible */
        abort();
    }
    return 0;
}
