/* libFuzzer target for the hot-set decoder (what restore and the page server
 * run on a hot-set or trace file, and on a PUT_TRACE payload) and the
 * GET_HOTSET / PUT_TRACE reply decoders. A decoded hot
 * set must encode back to the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "hotset.h"
#include "proto_hotset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void decode_encode(const uint8_t *data, size_t size);

/* The checksum stops random mutations at the door; the structural checks
 * behind it are fuzzed on a resealed copy as well. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    decode_encode(data, size);
    if (size >= DP_HOTSET_HDR + DP_HOTSET_SUM && size <= (1u << 20)) {
        uint8_t *copy = malloc(size);
        if (!copy)
            return 0;
        memcpy(copy, data, size);
        crypto_generichash(copy + size - DP_HOTSET_SUM, DP_HOTSET_SUM, copy, size - DP_HOTSET_SUM, NULL, 0);
        decode_encode(copy, size);
        free(copy);
    }
    return 0;
}

static void decode_encode(const uint8_t *data, size_t size)
{
    struct dp_hotset hs;
    struct dp_err err;
    uint32_t which, runs;
    uint64_t pages;
    (void)dp_dec_get_hotset_req(data, size, &which, &err);
    (void)dp_dec_put_trace_reply(data, size, &pages, &runs, &err);
    if (dp_hotset_decode("fuzz", data, size, &hs, &err) < 0)
        return;
    uint8_t *out;
    size_t len;
    if (dp_hotset_encode(&hs, &out, &len, &err) < 0 || len != size || memcmp(out, data, size) != 0)
        abort();
    free(out);
    for (uint32_t i = 0; i < hs.nr_tasks; i++)
        (void)dp_hotset_contains(&hs, hs.tasks[i].pid, hs.nr_runs ? hs.runs[0].vaddr : 0);
    dp_hotset_free(&hs);
}
