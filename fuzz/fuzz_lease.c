/* libFuzzer target for the write lease (lib/lease.h, lib/proto_lease.h): the
 * lease file decoder the server runs at start, the LEASE request and reply
 * decoders, and the state machine on what they decode. The lease file's
 * checksum is resealed so the field checks behind it are reached. Invariants
 * checked: a decoded file encodes back to the same bytes; a grant is exactly
 * one epoch above the last; a refusal changes nothing; epochs never fall. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "lease.h"
#include "proto_lease.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Input: 128 bytes of lease file (resealed), then an 80-byte request. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dp_err err;
    struct dp_lease cur, next;
    struct dp_lease_ask ask;
    struct dp_lease_reply rep;
    uint8_t file[DP_LEASE_FILE_SIZE], back[DP_LEASE_FILE_SIZE];
    dp_dec_lease_reply(data, size, &rep, &err);
    dp_dec_lease_req(data, size, &ask, &err);
    if (size < DP_LEASE_FILE_SIZE + DP_LEASE_REQ_LEN)
        return 0;
    memcpy(file, data, sizeof(file));
    crypto_generichash(file + 112, 16, file, 112, NULL, 0);
    if (dp_lease_decode(file, sizeof(file), &cur, &err) < 0)
        return 0;
    dp_lease_encode(&cur, back);
    if (memcmp(file, back, sizeof(file)) != 0)
        abort();
    if (dp_dec_lease_req(data + DP_LEASE_FILE_SIZE, DP_LEASE_REQ_LEN, &ask, &err) != DP_E_OK)
        return 0;
    char why[DP_MAX_ERROR_MSG];
    enum dp_lease_verdict v = dp_lease_decide(&cur, &ask, 1, &next, why, sizeof(why));
    if (next.epoch < cur.epoch || (v == DP_LEASE_GRANTED && (next.epoch != cur.epoch + 1 || !next.held)) ||
        ((v == DP_LEASE_HELD || v == DP_LEASE_STALE) && memcmp(&cur, &next, sizeof(cur)) != 0) ||
        (v == DP_LEASE_RESUMED && (ask.epoch != cur.epoch || !cur.held)))
        abort();
    dp_lease_may_write(&next, ask.epoch, why, sizeof(why));
    return 0;
}
