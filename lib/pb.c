/* pb: protobuf wire-format reader (see pb.h). Written from the wire-format
 * description: a tag is a varint (field_number << 3 | wire_type). */
#include "pb.h"

#include <string.h>

void dp_pb_init(struct dp_pb_reader *r, const uint8_t *buf, size_t len, uint64_t base)
{
    r->buf = buf;
    r->len = len;
    r->pos = 0;
    r->base = base;
}

int dp_pb_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *out)
{
    uint64_t v = 0;
    size_t p = *pos;

    for (unsigned i = 0; i < 10; i++) {
        if (p >= len)
            return -1;
        uint8_t b = buf[p++];
        /* The tenth byte may only carry the top bit of a 64-bit value. */
        if (i == 9 && b > 1)
            return -1;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *pos = p;
            *out = v;
            return 0;
        }
    }
    return -1;
}

int dp_pb_next(struct dp_pb_reader *r, struct dp_pb_field *f, struct dp_err *err)
{
    if (r->pos >= r->len)
        return 0;

    uint64_t tag;
    size_t p = r->pos;
    memset(f, 0, sizeof(*f));
    f->offset = r->base + r->pos;
    if (dp_pb_varint(r->buf, r->len, &p, &tag) < 0) {
        dp_err_set(err, "at byte %llu: truncated or overlong field tag",
                   (unsigned long long)f->offset);
        return -1;
    }
    uint64_t number = tag >> 3;
    if (number == 0 || number > 536870911u) {
        dp_err_set(err, "at byte %llu: invalid field number %llu",
                   (unsigned long long)f->offset, (unsigned long long)number);
        return -1;
    }
    f->number = (uint32_t)number;
    f->wire = (enum dp_pb_wire)(tag & 7);

    switch (tag & 7) {
    case DP_PB_VARINT:
        if (dp_pb_varint(r->buf, r->len, &p, &f->value) < 0) {
            dp_err_set(err, "at byte %llu: truncated or overlong varint in field %u",
                       (unsigned long long)(r->base + p), f->number);
            return -1;
        }
        break;
    case DP_PB_FIXED64:
    case DP_PB_FIXED32: {
        size_t n = (tag & 7) == DP_PB_FIXED64 ? 8 : 4;
        if (r->len - p < n) {
            dp_err_set(err, "at byte %llu: truncated %zu-byte value in field %u",
                       (unsigned long long)(r->base + p), n, f->number);
            return -1;
        }
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++)
            v |= (uint64_t)r->buf[p + i] << (8 * i);
        f->value = v;
        p += n;
        break;
    }
    case DP_PB_LEN: {
        uint64_t n;
        size_t lp = p;
        if (dp_pb_varint(r->buf, r->len, &p, &n) < 0) {
            dp_err_set(err, "at byte %llu: truncated length of field %u",
                       (unsigned long long)(r->base + lp), f->number);
            return -1;
        }
        if (n > r->len - p) {
            dp_err_set(err, "at byte %llu: field %u claims %llu bytes but only %zu remain",
                       (unsigned long long)(r->base + lp), f->number,
                       (unsigned long long)n, r->len - p);
            return -1;
        }
        f->data = r->buf + p;
        f->data_len = (size_t)n;
        f->data_offset = r->base + p;
        p += (size_t)n;
        break;
    }
    default:
        dp_err_set(err, "at byte %llu: unsupported wire type %u in field %u",
                   (unsigned long long)f->offset, (unsigned)(tag & 7), f->number);
        return -1;
    }
    r->pos = p;
    return 1;
}

int dp_pb_repeated_varint(const struct dp_pb_field *f,
                          int (*fn)(void *arg, uint64_t v), void *arg,
                          struct dp_err *err)
{
    if (f->wire == DP_PB_VARINT) {
        if (fn(arg, f->value) < 0) {
            dp_err_set(err, "at byte %llu: bad value in field %u",
                       (unsigned long long)f->offset, f->number);
            return -1;
        }
        return 0;
    }
    if (f->wire != DP_PB_LEN) {
        dp_err_set(err, "at byte %llu: field %u has wire type %u, expected a varint",
                   (unsigned long long)f->offset, f->number, (unsigned)f->wire);
        return -1;
    }
    size_t p = 0;
    while (p < f->data_len) {
        uint64_t v;
        size_t vp = p;
        if (dp_pb_varint(f->data, f->data_len, &p, &v) < 0) {
            dp_err_set(err, "at byte %llu: truncated varint in packed field %u",
                       (unsigned long long)(f->data_offset + vp), f->number);
            return -1;
        }
        if (fn(arg, v) < 0) {
            dp_err_set(err, "at byte %llu: bad value in packed field %u",
                       (unsigned long long)(f->data_offset + vp), f->number);
            return -1;
        }
    }
    return 0;
}

/* ---- writing ---- */

/* Seven bits a byte, low first; the high bit says another byte follows. */
size_t dp_pb_put_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    do {
        uint8_t c = (uint8_t)(v & 0x7f);
        v >>= 7;
        out[n++] = (uint8_t)(c | (v ? 0x80 : 0));
    } while (v);
    return n;
}

/* The tag (number << 3 | wire type 0), then the value. */
size_t dp_pb_put_vfield(uint8_t *out, uint32_t num, uint64_t v)
{
    size_t n = dp_pb_put_varint(out, (uint64_t)num << 3 | DP_PB_VARINT);
    return n + dp_pb_put_varint(out + n, v);
}
