/* pb: a minimal protobuf wire-format reader, just enough for CRIU's images
 * (and, for the one image DistriProc rewrites, lib/lazyfix.h, a writer of
 * varint fields).
 *
 * It walks the fields of one encoded message: varint, fixed64, fixed32 and
 * length-delimited fields; groups (deprecated wire types 3 and 4) are
 * rejected. Every read is bounds-checked. The caller decides what a field
 * means; unknown fields are simply skipped by not looking at them.
 * Pure: no allocation, no I/O. Errors carry the absolute byte offset (the
 * message's base offset in its file plus the position inside it). */
#ifndef DP_PB_H
#define DP_PB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

enum dp_pb_wire {
    DP_PB_VARINT = 0,
    DP_PB_FIXED64 = 1,
    DP_PB_LEN = 2,
    DP_PB_FIXED32 = 5,
};

struct dp_pb_reader {
    const uint8_t *buf;
    size_t len;
    size_t pos;
    uint64_t base;   /* offset of buf[0] in its file, for error messages */
};

struct dp_pb_field {
    uint32_t number;
    enum dp_pb_wire wire;
    uint64_t value;          /* VARINT, FIXED64, FIXED32 */
    const uint8_t *data;     /* LEN: the payload */
    size_t data_len;
    uint64_t offset;         /* absolute offset of the field's tag */
    uint64_t data_offset;    /* LEN: absolute offset of the payload */
};

void dp_pb_init(struct dp_pb_reader *r, const uint8_t *buf, size_t len, uint64_t base);

/* Reads the next field. Returns 1 with *f filled, 0 at the end of the
 * message, -1 with err set ("at byte N: why") on malformed input. */
int dp_pb_next(struct dp_pb_reader *r, struct dp_pb_field *f, struct dp_err *err);

/* Decodes one varint from buf[*pos..len). Returns 0 or -1 (truncated, or
 * longer than 10 bytes, or overflowing 64 bits). */
int dp_pb_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *out);

/* Values of a field declared "repeated <varint type>": one value when the
 * field was sent unpacked, any number when packed (a LEN field holding
 * varints). Calls fn for each value; returns 0 or -1 with err set. */
int dp_pb_repeated_varint(const struct dp_pb_field *f,
                          int (*fn)(void *arg, uint64_t v), void *arg,
                          struct dp_err *err);

/* Encodes v as a varint into out (at least 10 bytes); returns its length. */
size_t dp_pb_put_varint(uint8_t *out, uint64_t v);
/* Encodes field number num (wire type varint) with value v into out (at
 * least 20 bytes); returns its length. */
size_t dp_pb_put_vfield(uint8_t *out, uint32_t num, uint64_t v);

static inline int64_t dp_pb_zigzag64(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

#endif
