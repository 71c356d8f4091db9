/* proto_lease: the protocol-version-4 LEASE message (docs/protocol.md §4.9),
 * kept apart from the version-1 codec like proto_hotset. Pure.
 *
 * LEASE (0x0c), request (80 bytes): u64 epoch (0: a new one), u32 flags
 *   (DP_LEASE_TAKE_OVER with epoch 0; DP_LEASE_RELEASE with a non-zero
 *   epoch; not both), u16 holder_len (1..64), u16 reserved, 64 bytes holder
 *   (printable ASCII, then zeros).
 * Reply (96 bytes): u64 epoch (granted or resumed), u32 verdict
 *   (DP_LEASE_GRANTED / RESUMED / RELEASED), u32 reserved, u64 previous
 *   epoch (the one fenced by a take-over, the generation moved aside; else
 *   0), u16 prev_holder_len, u16 reserved, u32 reserved, 64 bytes previous
 *   holder. A refusal is an ERROR: LEASE_HELD (names the holder and how to
 *   take over) or FENCED (the epoch is stale), both non-fatal.
 * On a connection that negotiated version 3 it is UNKNOWN_TYPE. */
#ifndef DP_PROTO_LEASE_H
#define DP_PROTO_LEASE_H

#include <stddef.h>
#include <stdint.h>

#include "lease.h"
#include "proto.h"

#define DP_PROTO_VERSION_LEASE 4
#define DP_LEASE_REQ_LEN       80
#define DP_LEASE_REPLY_LEN     96

struct dp_lease_reply {
    uint64_t epoch;
    uint32_t verdict;
    uint64_t prev_epoch;
    char prev_holder[DP_LEASE_HOLDER_MAX + 1];
};

int dp_enc_lease_req(struct dp_buf *b, uint64_t id, const struct dp_lease_ask *a);
int dp_dec_lease_req(const uint8_t *p, size_t len, struct dp_lease_ask *a, struct dp_err *err);
int dp_enc_lease_reply(struct dp_buf *b, uint64_t id, const struct dp_lease_reply *r);
int dp_dec_lease_reply(const uint8_t *p, size_t len, struct dp_lease_reply *r, struct dp_err *err);

#endif
