/* proto: encoders and validating decoders for the page-server protocol.
 * See proto.h for the framing and docs/protocol.md for every payload. */
#include "proto.h"
#include "proto_hotset.h"
#include "proto_lease.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

const char *dp_errcode_name(uint32_t code)
{
    static const char *names[] = {
        "OK", "MALFORMED", "VERSION", "UNAUTHENTICATED", "AUTH_FAILED", "TOO_LARGE",
        "UNKNOWN_TYPE", "SEQUENCE", "NO_TASK", "NOT_LAZY", "IO", "BUSY", "SHUTDOWN", "INTERNAL",
        "WRONG_CHECKPOINT", "NO_HOTSET", "PLAINTEXT_MISMATCH", "LEASE_HELD", "FENCED",
    };
    return code < DP_ARRAY_LEN(names) ? names[code] : "UNKNOWN_ERROR";
}

/* ---- little-endian helpers ------------------------------------------ */
void dp_put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
void dp_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
void dp_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
uint16_t dp_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
uint32_t dp_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
uint64_t dp_get_u64(const uint8_t *p) { return (uint64_t)dp_get_u32(p) | ((uint64_t)dp_get_u32(p + 4) << 32); }

/* ---- buffer --------------------------------------------------------- */
int dp_buf_reserve(struct dp_buf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) {
        errno = ENOMEM;
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

void dp_buf_free(struct dp_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int dp_buf_put(struct dp_buf *b, const void *p, size_t n)
{
    if (dp_buf_reserve(b, n) < 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}
int dp_buf_u8(struct dp_buf *b, uint8_t v) { return dp_buf_put(b, &v, 1); }
int dp_buf_u16(struct dp_buf *b, uint16_t v) { uint8_t t[2]; dp_put_u16(t, v); return dp_buf_put(b, t, 2); }
int dp_buf_u32(struct dp_buf *b, uint32_t v) { uint8_t t[4]; dp_put_u32(t, v); return dp_buf_put(b, t, 4); }
int dp_buf_u64(struct dp_buf *b, uint64_t v) { uint8_t t[8]; dp_put_u64(t, v); return dp_buf_put(b, t, 8); }

/* ---- header --------------------------------------------------------- */
void dp_hdr_encode(uint8_t out[DP_HDR_SIZE], const struct dp_hdr *h)
{
    dp_put_u32(out, DP_PROTO_MAGIC);
    out[4] = h->version;
    out[5] = h->type;
    dp_put_u16(out + 6, h->flags);
    dp_put_u64(out + 8, h->id);
    dp_put_u32(out + 16, h->len);
    dp_put_u32(out + 20, 0);
}

int dp_hdr_decode(const uint8_t in[DP_HDR_SIZE], uint32_t max_payload, struct dp_hdr *h, struct dp_err *err)
{
    uint32_t magic = dp_get_u32(in);
    if (magic != DP_PROTO_MAGIC) {
        dp_err_set(err, "bad magic 0x%08x (expected 0x%08x): not a DistriProc peer", magic, DP_PROTO_MAGIC);
        return DP_E_MALFORMED;
    }
    h->version = in[4];
    h->type = in[5];
    h->flags = dp_get_u16(in + 6);
    h->id = dp_get_u64(in + 8);
    h->len = dp_get_u32(in + 16);
    if (h->version != 1) {
        dp_err_set(err, "header version %u unsupported (this build frames version 1)", h->version);
        return DP_E_VERSION;
    }
    if (dp_get_u32(in + 20) != 0) {
        dp_err_set(err, "reserved header field is not zero");
        return DP_E_MALFORMED;
    }
    if (h->flags & ~DP_FLAGS_KNOWN) {
        dp_err_set(err, "unknown header flags 0x%04x", h->flags);
        return DP_E_MALFORMED;
    }
    if (h->len > max_payload) {
        dp_err_set(err, "payload length %u exceeds the limit %u", h->len, max_payload);
        return DP_E_TOO_LARGE;
    }
    return DP_E_OK;
}

int dp_msg_append(struct dp_buf *b, uint8_t type, uint16_t flags, uint64_t id, const void *payload, uint32_t len)
{
    struct dp_hdr h = {.version = 1, .type = type, .flags = flags, .id = id, .len = len};
    if (dp_buf_reserve(b, DP_HDR_SIZE + (size_t)len) < 0)
        return -1;
    dp_hdr_encode(b->data + b->len, &h);
    b->len += DP_HDR_SIZE;
    return dp_buf_put(b, payload, len);
}

/* Starts a message whose length is patched by msg_end(). Returns its offset. */
static size_t msg_begin(struct dp_buf *b, uint8_t type, uint16_t flags, uint64_t id)
{
    size_t at = b->len;
    if (dp_msg_append(b, type, flags, id, NULL, 0) < 0)
        return SIZE_MAX;
    return at;
}
static void msg_end(struct dp_buf *b, size_t at)
{
    dp_put_u32(b->data + at + 16, (uint32_t)(b->len - at - DP_HDR_SIZE));
}

static int want_len(size_t len, size_t want, const char *what, struct dp_err *err)
{
    if (len != want) {
        dp_err_set(err, "%s payload is %zu bytes, expected %zu", what, len, want);
        return DP_E_MALFORMED;
    }
    return DP_E_OK;
}

/* ---- HELLO / AUTH --------------------------------------------------- */
int dp_enc_hello(struct dp_buf *b, uint64_t id, const struct dp_hello *m)
{
    uint8_t p[DP_HELLO_LEN] = {0};
    dp_put_u16(p, m->min_version);
    dp_put_u16(p + 2, m->max_version);
    dp_put_u32(p + 4, m->flags);
    dp_put_u32(p + 8, m->ciphers);
    memcpy(p + 16, m->eph_pk, DP_EPH_KEY_SIZE);
    memcpy(p + 48, m->nonce, DP_NONCE_SIZE);
    return dp_msg_append(b, DP_MSG_HELLO, 0, id, p, sizeof(p));
}

/* A version-1/2 client's 8-byte HELLO still decodes (versions only, legacy
 * set) so the server can answer VERSION with both ranges, not MALFORMED. */
int dp_dec_hello(const uint8_t *p, size_t len, struct dp_hello *m, struct dp_err *err)
{
    memset(m, 0, sizeof(*m));
    if (len != DP_HELLO_LEN && len != DP_HELLO_LEGACY_LEN) {
        dp_err_set(err, "HELLO payload is %zu bytes, expected %u", len, DP_HELLO_LEN);
        return DP_E_MALFORMED;
    }
    m->min_version = dp_get_u16(p);
    m->max_version = dp_get_u16(p + 2);
    if (m->min_version == 0 || m->min_version > m->max_version) {
        dp_err_set(err, "HELLO version range %u..%u is empty or invalid", m->min_version, m->max_version);
        return DP_E_MALFORMED;
    }
    if (len == DP_HELLO_LEGACY_LEN) {
        m->legacy = true;
        return DP_E_OK;
    }
    m->flags = dp_get_u32(p + 4);
    m->ciphers = dp_get_u32(p + 8);
    if ((m->flags & ~DP_HELLO_FLAGS_KNOWN) || dp_get_u32(p + 12) != 0) {
        dp_err_set(err, "HELLO has unknown flags 0x%x or a reserved field that is not zero", m->flags);
        return DP_E_MALFORMED;
    }
    memcpy(m->eph_pk, p + 16, DP_EPH_KEY_SIZE);
    memcpy(m->nonce, p + 48, DP_NONCE_SIZE);
    return DP_E_OK;
}

int dp_enc_hello_reply(struct dp_buf *b, uint64_t id, const struct dp_hello_reply *m)
{
    uint8_t p[DP_HELLO_REPLY_LEN] = {0};
    dp_put_u16(p, m->version);
    dp_put_u32(p + 4, m->max_payload);
    dp_put_u32(p + 8, m->max_get_pages);
    dp_put_u32(p + 12, m->max_put_pages);
    dp_put_u32(p + 16, m->max_get_ranges);
    dp_put_u32(p + 20, m->flags);
    dp_put_u32(p + 24, m->cipher);
    memcpy(p + 32, m->server_nonce, DP_NONCE_SIZE);
    memcpy(p + 64, m->eph_pk, DP_EPH_KEY_SIZE);
    memcpy(p + 96, m->cpid, DP_CPID_BYTES);
    return dp_msg_append(b, DP_MSG_HELLO | DP_MSG_REPLY, 0, id, p, sizeof(p));
}

int dp_dec_hello_reply(const uint8_t *p, size_t len, struct dp_hello_reply *m, struct dp_err *err)
{
    int rc = want_len(len, DP_HELLO_REPLY_LEN, "HELLO reply", err);
    if (rc)
        return rc;
    m->version = dp_get_u16(p);
    m->max_payload = dp_get_u32(p + 4);
    m->max_get_pages = dp_get_u32(p + 8);
    m->max_put_pages = dp_get_u32(p + 12);
    m->max_get_ranges = dp_get_u32(p + 16);
    m->flags = dp_get_u32(p + 20);
    m->cipher = dp_get_u32(p + 24);
    memcpy(m->server_nonce, p + 32, DP_NONCE_SIZE);
    memcpy(m->eph_pk, p + 64, DP_EPH_KEY_SIZE);
    memcpy(m->cpid, p + 96, DP_CPID_BYTES);
    if (m->version < DP_PROTO_VERSION_MIN || m->version > DP_PROTO_VERSION_MAX) {
        dp_err_set(err, "server chose protocol version %u, outside %u..%u", m->version,
                   DP_PROTO_VERSION_MIN, DP_PROTO_VERSION_MAX);
        return DP_E_VERSION;
    }
    if (dp_get_u16(p + 2) != 0 || dp_get_u32(p + 28) != 0 || (m->flags & ~DP_HELLO_FLAGS_KNOWN)) {
        dp_err_set(err, "HELLO reply has unknown flags or a reserved field that is not zero");
        return DP_E_MALFORMED;
    }
    if (m->max_payload > DP_MAX_PAYLOAD || m->max_get_pages == 0 || m->max_get_pages > DP_MAX_GET_PAGES ||
        m->max_put_pages == 0 || m->max_put_pages > DP_MAX_PUT_PAGES || m->max_get_ranges == 0 ||
        m->max_get_ranges > DP_MAX_GET_RANGES) {
        dp_err_set(err, "HELLO reply announces limits outside the protocol's");
        return DP_E_MALFORMED;
    }
    return DP_E_OK;
}

int dp_enc_auth(struct dp_buf *b, uint64_t id, const struct dp_auth *m)
{
    return dp_msg_append(b, DP_MSG_AUTH, 0, id, m->mac, DP_MAC_SIZE);
}

int dp_dec_auth(const uint8_t *p, size_t len, struct dp_auth *m, struct dp_err *err)
{
    int rc = want_len(len, DP_AUTH_LEN, "AUTH", err);
    if (rc)
        return rc;
    memcpy(m->mac, p, DP_MAC_SIZE);
    return DP_E_OK;
}

int dp_enc_auth_reply(struct dp_buf *b, uint64_t id, const struct dp_auth_reply *m)
{
    return dp_msg_append(b, DP_MSG_AUTH | DP_MSG_REPLY, 0, id, m->mac, DP_MAC_SIZE);
}

int dp_dec_auth_reply(const uint8_t *p, size_t len, struct dp_auth_reply *m, struct dp_err *err)
{
    int rc = want_len(len, DP_AUTH_REPLY_LEN, "AUTH reply", err);
    if (rc)
        return rc;
    memcpy(m->mac, p, DP_MAC_SIZE);
    return DP_E_OK;
}

bool dp_auth_mac_equal(const uint8_t a[DP_MAC_SIZE], const uint8_t b[DP_MAC_SIZE])
{
    return sodium_memcmp(a, b, DP_MAC_SIZE) == 0;
}

/* ---- TASK_MAP ------------------------------------------------------- */
int dp_enc_task_map_reply(struct dp_buf *b, uint64_t id, const struct dp_task_map *m)
{
    size_t at = msg_begin(b, DP_MSG_TASK_MAP | DP_MSG_REPLY, 0, id);
    if (at == SIZE_MAX || dp_buf_u32(b, m->nr_tasks) || dp_buf_u32(b, 0))
        return -1;
    for (uint32_t i = 0; i < m->nr_tasks; i++) {
        const struct dp_tm_task *t = &m->tasks[i];
        if (dp_buf_u32(b, (uint32_t)t->pid) || dp_buf_u32(b, (uint32_t)t->ppid) || dp_buf_u32(b, t->nr_ranges) ||
            dp_buf_u32(b, 0))
            return -1;
        for (uint32_t r = 0; r < t->nr_ranges; r++)
            if (dp_buf_u64(b, t->ranges[r].start) || dp_buf_u64(b, t->ranges[r].end))
                return -1;
    }
    msg_end(b, at);
    return 0;
}

void dp_task_map_free(struct dp_task_map *m)
{
    free(m->tasks);
    free(m->all_ranges);
    memset(m, 0, sizeof(*m));
}

int dp_dec_task_map_reply(const uint8_t *p, size_t len, struct dp_task_map *m, struct dp_err *err)
{
    memset(m, 0, sizeof(*m));
    if (len < 8) {
        dp_err_set(err, "TASK_MAP reply shorter than its 8-byte header");
        return DP_E_MALFORMED;
    }
    uint32_t nr = dp_get_u32(p);
    if (nr > DP_MAX_TASKS) {
        dp_err_set(err, "TASK_MAP reply has %u tasks, limit %u", nr, DP_MAX_TASKS);
        return DP_E_TOO_LARGE;
    }
    /* First pass: validate the layout and count ranges before allocating. */
    size_t off = 8, total = 0;
    for (uint32_t i = 0; i < nr; i++) {
        if (len - off < 16) {
            dp_err_set(err, "TASK_MAP reply truncated in task %u at byte %zu", i, off);
            return DP_E_MALFORMED;
        }
        uint32_t nrr = dp_get_u32(p + off + 8);
        off += 16;
        if (nrr > DP_MAX_TASK_RANGES || (len - off) / 16 < nrr) {
            dp_err_set(err, "TASK_MAP reply task %u claims %u ranges, more than the payload holds", i, nrr);
            return DP_E_MALFORMED;
        }
        off += (size_t)nrr * 16;
        total += nrr;
        if (total > DP_MAX_TASK_RANGES) {
            dp_err_set(err, "TASK_MAP reply has more than %u ranges", DP_MAX_TASK_RANGES);
            return DP_E_TOO_LARGE;
        }
    }
    if (off != len) {
        dp_err_set(err, "TASK_MAP reply has %zu trailing bytes", len - off);
        return DP_E_MALFORMED;
    }
    m->tasks = calloc(nr ? nr : 1, sizeof(*m->tasks));
    m->all_ranges = calloc(total ? total : 1, sizeof(*m->all_ranges));
    if (!m->tasks || !m->all_ranges) {
        dp_task_map_free(m);
        dp_err_set(err, "out of memory decoding TASK_MAP");
        return DP_E_INTERNAL;
    }
    m->nr_tasks = nr;
    off = 8;
    size_t ri = 0;
    for (uint32_t i = 0; i < nr; i++) {
        struct dp_tm_task *t = &m->tasks[i];
        t->pid = (int32_t)dp_get_u32(p + off);
        t->ppid = (int32_t)dp_get_u32(p + off + 4);
        t->nr_ranges = dp_get_u32(p + off + 8);
        off += 16;
        t->ranges = &m->all_ranges[ri];
        for (uint32_t r = 0; r < t->nr_ranges; r++, off += 16) {
            struct dp_tm_range *rg = &m->all_ranges[ri++];
            rg->start = dp_get_u64(p + off);
            rg->end = dp_get_u64(p + off + 8);
            if (rg->start >= rg->end || (rg->start | rg->end) % DP_PAGE_SIZE ||
                (r > 0 && rg->start < t->ranges[r - 1].end)) {
                dp_err_set(err, "TASK_MAP task %d range %u [0x%llx, 0x%llx) is empty, unaligned or unsorted", t->pid,
                           r, (unsigned long long)rg->start, (unsigned long long)rg->end);
                dp_task_map_free(m);
                return DP_E_MALFORMED;
            }
        }
    }
    return DP_E_OK;
}

/* ---- GET_PAGES ------------------------------------------------------ */
static int check_range(int32_t pid, uint32_t count, uint64_t addr, uint32_t i, const char *what, struct dp_err *err)
{
    if (pid <= 0) {
        dp_err_set(err, "%s range %u: pid %d is not positive", what, i, pid);
        return DP_E_MALFORMED;
    }
    if (count == 0) {
        dp_err_set(err, "%s range %u: zero pages", what, i);
        return DP_E_MALFORMED;
    }
    if (addr % DP_PAGE_SIZE) {
        dp_err_set(err, "%s range %u: address 0x%llx is not page aligned", what, i, (unsigned long long)addr);
        return DP_E_MALFORMED;
    }
    if (addr > UINT64_MAX - (uint64_t)count * DP_PAGE_SIZE) {
        dp_err_set(err, "%s range %u: address 0x%llx + %u pages wraps around", what, i, (unsigned long long)addr,
                   count);
        return DP_E_MALFORMED;
    }
    return DP_E_OK;
}

int dp_enc_get_req(struct dp_buf *b, uint64_t id, const struct dp_get_range *r, uint32_t n)
{
    size_t at = msg_begin(b, DP_MSG_GET_PAGES, 0, id);
    if (at == SIZE_MAX || dp_buf_u32(b, n) || dp_buf_u32(b, 0))
        return -1;
    for (uint32_t i = 0; i < n; i++)
        if (dp_buf_u32(b, (uint32_t)r[i].pid) || dp_buf_u32(b, r[i].count) || dp_buf_u64(b, r[i].addr))
            return -1;
    msg_end(b, at);
    return 0;
}

int dp_dec_get_req(const uint8_t *p, size_t len, struct dp_get_req *m, struct dp_err *err)
{
    if (len < 8) {
        dp_err_set(err, "GET_PAGES payload shorter than 8 bytes");
        return DP_E_MALFORMED;
    }
    uint32_t n = dp_get_u32(p);
    if (dp_get_u32(p + 4) != 0) {
        dp_err_set(err, "GET_PAGES reserved field is not zero");
        return DP_E_MALFORMED;
    }
    if (n == 0 || n > DP_MAX_GET_RANGES) {
        dp_err_set(err, "GET_PAGES has %u ranges; allowed 1..%u", n, DP_MAX_GET_RANGES);
        return n ? DP_E_TOO_LARGE : DP_E_MALFORMED;
    }
    if (len != 8 + (size_t)n * 16) {
        dp_err_set(err, "GET_PAGES payload is %zu bytes, %u ranges need %zu", len, n, 8 + (size_t)n * 16);
        return DP_E_MALFORMED;
    }
    m->nr_ranges = n;
    m->total_pages = 0;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *q = p + 8 + (size_t)i * 16;
        struct dp_get_range *r = &m->ranges[i];
        r->pid = (int32_t)dp_get_u32(q);
        r->count = dp_get_u32(q + 4);
        r->addr = dp_get_u64(q + 8);
        int rc = check_range(r->pid, r->count, r->addr, i, "GET_PAGES", err);
        if (rc)
            return rc;
        if (r->count > DP_MAX_GET_PAGES - m->total_pages) {
            dp_err_set(err, "GET_PAGES asks for more than %u pages", DP_MAX_GET_PAGES);
            return DP_E_TOO_LARGE;
        }
        m->total_pages += r->count;
    }
    return DP_E_OK;
}

void dp_enc_get_reply_hdr(uint8_t out[DP_GET_REPLY_HDR], uint32_t nr_segs)
{
    dp_put_u32(out, nr_segs);
    dp_put_u32(out + 4, 0);
}

void dp_enc_seg_hdr(uint8_t out[DP_SEG_HDR], const struct dp_seg *s)
{
    dp_put_u32(out, s->kind);
    dp_put_u32(out + 4, (uint32_t)s->pid);
    dp_put_u32(out + 8, s->count);
    dp_put_u32(out + 12, 0);
    dp_put_u64(out + 16, s->addr);
}

int dp_dec_get_reply(const uint8_t *p, size_t len, const struct dp_get_range *req, uint32_t nr_req,
                     struct dp_seg *segs, uint32_t max_segs, uint32_t *nr_segs, struct dp_err *err)
{
    *nr_segs = 0;
    if (len < DP_GET_REPLY_HDR) {
        dp_err_set(err, "GET_PAGES reply shorter than 8 bytes");
        return DP_E_MALFORMED;
    }
    uint32_t n = dp_get_u32(p);
    if (n == 0 || n > max_segs) {
        dp_err_set(err, "GET_PAGES reply has %u segments; expected 1..%u", n, max_segs);
        return DP_E_MALFORMED;
    }
    size_t off = DP_GET_REPLY_HDR;
    uint32_t ri = 0;      /* request range being covered */
    uint64_t done = 0;    /* pages of it covered so far */
    for (uint32_t i = 0; i < n; i++) {
        if (len - off < DP_SEG_HDR) {
            dp_err_set(err, "GET_PAGES reply truncated in segment %u", i);
            return DP_E_MALFORMED;
        }
        struct dp_seg *s = &segs[i];
        s->kind = dp_get_u32(p + off);
        s->pid = (int32_t)dp_get_u32(p + off + 4);
        s->count = dp_get_u32(p + off + 8);
        s->addr = dp_get_u64(p + off + 16);
        s->data = NULL;
        off += DP_SEG_HDR;
        if (ri >= nr_req) {
            dp_err_set(err, "GET_PAGES reply has segments beyond the requested ranges");
            return DP_E_MALFORMED;
        }
        const struct dp_get_range *r = &req[ri];
        if (s->kind < DP_SEG_DATA || s->kind > DP_SEG_NOT_LAZY || s->pid != r->pid || s->count == 0 ||
            s->count > r->count - done || s->addr != r->addr + done * DP_PAGE_SIZE) {
            dp_err_set(err, "GET_PAGES reply segment %u (kind %u, pid %d, 0x%llx, %u pages) does not match range %u",
                       i, s->kind, s->pid, (unsigned long long)s->addr, s->count, ri);
            return DP_E_MALFORMED;
        }
        if (s->kind == DP_SEG_DATA) {
            size_t bytes = (size_t)s->count * DP_PAGE_SIZE;
            if (len - off < bytes) {
                dp_err_set(err, "GET_PAGES reply segment %u truncated: %zu data bytes, %zu present", i, bytes,
                           len - off);
                return DP_E_MALFORMED;
            }
            s->data = p + off;
            off += bytes;
        }
        done += s->count;
        if (done == r->count) {
            ri++;
            done = 0;
        }
    }
    if (ri != nr_req || off != len) {
        dp_err_set(err, "GET_PAGES reply covers %u of %u ranges with %zu trailing bytes", ri, nr_req, len - off);
        return DP_E_MALFORMED;
    }
    *nr_segs = n;
    return DP_E_OK;
}

/* ---- PUT_PAGES ------------------------------------------------------ */
int dp_enc_put_req(struct dp_buf *b, uint64_t id, const struct dp_put_range *r, uint32_t n)
{
    size_t at = msg_begin(b, DP_MSG_PUT_PAGES, 0, id);
    if (at == SIZE_MAX || dp_buf_u32(b, n) || dp_buf_u32(b, 0))
        return -1;
    for (uint32_t i = 0; i < n; i++)
        if (dp_buf_u32(b, (uint32_t)r[i].pid) || dp_buf_u32(b, r[i].count) || dp_buf_u64(b, r[i].addr) ||
            dp_buf_put(b, r[i].data, (size_t)r[i].count * DP_PAGE_SIZE))
            return -1;
    msg_end(b, at);
    return 0;
}

int dp_dec_put_req(const uint8_t *p, size_t len, struct dp_put_req *m, struct dp_err *err)
{
    if (len < 8) {
        dp_err_set(err, "PUT_PAGES payload shorter than 8 bytes");
        return DP_E_MALFORMED;
    }
    uint32_t n = dp_get_u32(p);
    if (dp_get_u32(p + 4) != 0) {
        dp_err_set(err, "PUT_PAGES reserved field is not zero");
        return DP_E_MALFORMED;
    }
    if (n == 0 || n > DP_MAX_PUT_PAGES) {
        dp_err_set(err, "PUT_PAGES has %u ranges; allowed 1..%u", n, DP_MAX_PUT_PAGES);
        return n ? DP_E_TOO_LARGE : DP_E_MALFORMED;
    }
    size_t off = 8;
    m->nr_ranges = n;
    m->total_pages = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (len - off < 16) {
            dp_err_set(err, "PUT_PAGES truncated in range %u header", i);
            return DP_E_MALFORMED;
        }
        struct dp_put_range *r = &m->ranges[i];
        r->pid = (int32_t)dp_get_u32(p + off);
        r->count = dp_get_u32(p + off + 4);
        r->addr = dp_get_u64(p + off + 8);
        off += 16;
        int rc = check_range(r->pid, r->count, r->addr, i, "PUT_PAGES", err);
        if (rc)
            return rc;
        if (r->count > DP_MAX_PUT_PAGES - m->total_pages) {
            dp_err_set(err, "PUT_PAGES carries more than %u pages", DP_MAX_PUT_PAGES);
            return DP_E_TOO_LARGE;
        }
        m->total_pages += r->count;
        size_t bytes = (size_t)r->count * DP_PAGE_SIZE;
        if (len - off < bytes) {
            dp_err_set(err, "PUT_PAGES range %u truncated: %zu data bytes, %zu present", i, bytes, len - off);
            return DP_E_MALFORMED;
        }
        r->data = p + off;
        off += bytes;
    }
    if (off != len) {
        dp_err_set(err, "PUT_PAGES has %zu trailing bytes", len - off);
        return DP_E_MALFORMED;
    }
    return DP_E_OK;
}

int dp_enc_put_reply(struct dp_buf *b, uint64_t id, uint32_t pages)
{
    uint8_t p[DP_PUT_REPLY_LEN] = {0};
    dp_put_u32(p, pages);
    return dp_msg_append(b, DP_MSG_PUT_PAGES | DP_MSG_REPLY, 0, id, p, sizeof(p));
}

int dp_dec_put_reply(const uint8_t *p, size_t len, uint32_t *pages, struct dp_err *err)
{
    int rc = want_len(len, DP_PUT_REPLY_LEN, "PUT_PAGES reply", err);
    if (rc)
        return rc;
    *pages = dp_get_u32(p);
    return DP_E_OK;
}

/* ---- GET_SKELETON --------------------------------------------------- */
int dp_enc_skel_req(struct dp_buf *b, uint64_t id)
{
    uint8_t p[DP_SKEL_REQ_LEN] = {0};
    return dp_msg_append(b, DP_MSG_GET_SKELETON, 0, id, p, sizeof(p));
}

int dp_dec_skel_req(const uint8_t *p, size_t len, struct dp_err *err)
{
    int rc = want_len(len, DP_SKEL_REQ_LEN, "GET_SKELETON", err);
    if (rc)
        return rc;
    if (dp_get_u64(p) != 0) {
        dp_err_set(err, "GET_SKELETON flags must be zero");
        return DP_E_MALFORMED;
    }
    return DP_E_OK;
}

bool dp_skel_name_ok(const char *name, size_t len)
{
    /* A relative path of components that are not empty, "." or "..". */
    if (len == 0 || len > DP_MAX_NAME || name[0] == '/' || name[len - 1] == '/')
        return false;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && name[i] == '\0')
            return false;
        if (i == len || name[i] == '/') {
            size_t n = i - start;
            if (n == 0 || (n == 1 && name[start] == '.') || (n == 2 && name[start] == '.' && name[start + 1] == '.'))
                return false;
            start = i + 1;
        }
    }
    return true;
}

int dp_enc_skel_chunk_hdr(struct dp_buf *b, const struct dp_skel_chunk *c)
{
    if (dp_buf_u32(b, c->kind) || dp_buf_u16(b, c->name_len) || dp_buf_u16(b, 0) || dp_buf_u64(b, c->file_size) ||
        dp_buf_u64(b, c->offset) || dp_buf_u32(b, c->data_len) || dp_buf_u32(b, c->mode))
        return -1;
    return dp_buf_put(b, c->name, c->name_len);
}

int dp_dec_skel_chunk(const uint8_t *p, size_t len, struct dp_skel_chunk *c, struct dp_err *err)
{
    if (len < DP_SKEL_CHUNK_HDR) {
        dp_err_set(err, "SKELETON chunk shorter than its %d-byte header", DP_SKEL_CHUNK_HDR);
        return DP_E_MALFORMED;
    }
    c->kind = dp_get_u32(p);
    c->name_len = dp_get_u16(p + 4);
    c->file_size = dp_get_u64(p + 8);
    c->offset = dp_get_u64(p + 16);
    c->data_len = dp_get_u32(p + 24);
    c->mode = dp_get_u32(p + 28);
    c->data = NULL;
    c->name[0] = '\0';
    if (dp_get_u16(p + 6) != 0) {
        dp_err_set(err, "SKELETON chunk reserved field is not zero");
        return DP_E_MALFORMED;
    }
    if (c->kind == DP_SKEL_END) {
        if (c->name_len || c->data_len || len != DP_SKEL_CHUNK_HDR) {
            dp_err_set(err, "SKELETON end chunk carries a name or data");
            return DP_E_MALFORMED;
        }
        return DP_E_OK;
    }
    if (c->kind != DP_SKEL_DATA) {
        dp_err_set(err, "SKELETON chunk kind %u unknown", c->kind);
        return DP_E_MALFORMED;
    }
    if (c->data_len > DP_MAX_CHUNK_DATA || c->file_size > DP_MAX_FILE_SIZE || c->offset > c->file_size ||
        c->data_len > c->file_size - c->offset || (c->mode & ~0777u)) {
        dp_err_set(err, "SKELETON chunk: %u bytes at %llu of a %llu-byte file (mode %o) is out of bounds",
                   c->data_len, (unsigned long long)c->offset, (unsigned long long)c->file_size, c->mode);
        return DP_E_MALFORMED;
    }
    if (len != DP_SKEL_CHUNK_HDR + (size_t)c->name_len + c->data_len) {
        dp_err_set(err, "SKELETON chunk is %zu bytes, header says %zu", len,
                   DP_SKEL_CHUNK_HDR + (size_t)c->name_len + c->data_len);
        return DP_E_MALFORMED;
    }
    const char *name = (const char *)p + DP_SKEL_CHUNK_HDR;
    if (!dp_skel_name_ok(name, c->name_len)) {
        dp_err_set(err, "SKELETON chunk file name is not a safe relative path (empty, absolute, '.' or '..' components, NUL)");
        return DP_E_MALFORMED;
    }
    memcpy(c->name, name, c->name_len);
    c->name[c->name_len] = '\0';
    c->data = p + DP_SKEL_CHUNK_HDR + c->name_len;
    return DP_E_OK;
}

int dp_dec_empty(const uint8_t *p, size_t len, struct dp_err *err)
{
    (void)p;
    if (len != 0) {
        dp_err_set(err, "request takes no payload, got %zu bytes", len);
        return DP_E_MALFORMED;
    }
    return DP_E_OK;
}

/* ---- ERROR ---------------------------------------------------------- */
int dp_enc_error(struct dp_buf *b, uint64_t id, bool fatal, uint32_t code, const char *msg)
{
    size_t n = msg ? strnlen(msg, DP_MAX_ERROR_MSG) : 0;
    size_t at = msg_begin(b, DP_MSG_ERROR, fatal ? DP_FLAG_FATAL : 0, id);
    if (at == SIZE_MAX || dp_buf_u32(b, code) || dp_buf_u16(b, (uint16_t)n) || dp_buf_u16(b, 0) ||
        dp_buf_put(b, msg, n))
        return -1;
    msg_end(b, at);
    return 0;
}

int dp_dec_error(const uint8_t *p, size_t len, struct dp_error_msg *m, struct dp_err *err)
{
    if (len < 8) {
        dp_err_set(err, "ERROR payload shorter than 8 bytes");
        return DP_E_MALFORMED;
    }
    m->code = dp_get_u32(p);
    uint16_t n = dp_get_u16(p + 4);
    if (n > DP_MAX_ERROR_MSG || len != 8 + (size_t)n) {
        dp_err_set(err, "ERROR message length %u does not match payload %zu", n, len);
        return DP_E_MALFORMED;
    }
    memcpy(m->msg, p + 8, n);
    m->msg[n] = '\0';
    /* Keep the text printable: a peer must not drive our terminal. */
    for (uint16_t i = 0; i < n; i++)
        if ((unsigned char)m->msg[i] < 0x20 || (unsigned char)m->msg[i] == 0x7f)
            m->msg[i] = '?';
    return DP_E_OK;
}

/* ---- request dispatch ----------------------------------------------- */
bool dp_request_type_known(uint8_t type)
{
    return type >= DP_MSG_HELLO && type <= DP_MSG_LEASE;
}

uint32_t dp_request_max_len(uint8_t type)
{
    switch (type) {
    case DP_MSG_HELLO: return DP_HELLO_LEN;
    case DP_MSG_AUTH: return DP_AUTH_LEN;
    case DP_MSG_GET_PAGES: return 8 + DP_MAX_GET_RANGES * 16;
    case DP_MSG_PUT_PAGES: return 8 + DP_MAX_PUT_PAGES * (16 + (uint32_t)DP_PAGE_SIZE);
    case DP_MSG_GET_SKELETON: return DP_SKEL_REQ_LEN;
    case DP_MSG_PUT_TRACE: return DP_MAX_PAYLOAD;
    case DP_MSG_GET_HOTSET: return DP_GET_HOTSET_REQ_LEN;
    case DP_MSG_MIGRATION: return 4;
    case DP_MSG_LEASE: return DP_LEASE_REQ_LEN;
    default: return 0;
    }
}

int dp_dec_request(const struct dp_hdr *h, const uint8_t *p, size_t len, struct dp_request *req, struct dp_err *err)
{
    req->hdr = *h;
    if (len != h->len) {
        dp_err_set(err, "payload is %zu bytes, header says %u", len, h->len);
        return DP_E_MALFORMED;
    }
    if (h->flags) {
        dp_err_set(err, "requests carry no flags (got 0x%04x)", h->flags);
        return DP_E_MALFORMED;
    }
    switch (h->type) {
    case DP_MSG_HELLO: return dp_dec_hello(p, len, &req->u.hello, err);
    case DP_MSG_AUTH: return dp_dec_auth(p, len, &req->u.auth, err);
    case DP_MSG_GET_PAGES: return dp_dec_get_req(p, len, &req->u.get, err);
    case DP_MSG_PUT_PAGES: return dp_dec_put_req(p, len, &req->u.put, err);
    case DP_MSG_GET_SKELETON: return dp_dec_skel_req(p, len, err);
    case DP_MSG_TASK_MAP:
    case DP_MSG_STATS:
    case DP_MSG_ACCESS_LOG: return dp_dec_empty(p, len, err);
    default:
        dp_err_set(err, "unknown request type 0x%02x", h->type);
        return DP_E_UNKNOWN_TYPE;
    }
}
