/* json: a small, strict JSON reader for the few documents DistriProc reads
 * from other programs: an OCI bundle's config.json and `runc state` output.
 *
 * The whole text is parsed into a tree of nodes. Input is untrusted:
 * bounded depth and size, every byte checked,
 * strings decoded (\uXXXX included, surrogate pairs joined; NUL refused).
 * Pure; unit-tested and fuzzable. */
#ifndef DP_JSON_H
#define DP_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define DP_JSON_MAX_DEPTH 64
#define DP_JSON_MAX_BYTES (16u << 20)

enum dp_json_type { DP_JSON_NULL, DP_JSON_BOOL, DP_JSON_NUMBER, DP_JSON_STRING, DP_JSON_ARRAY, DP_JSON_OBJECT };

struct dp_json {
    enum dp_json_type type;
    const char *key;       /* member name inside an object, else NULL */
    const char *str;       /* STRING: decoded, NUL-terminated */
    double num;            /* NUMBER */
    int boolean;           /* BOOL */
    struct dp_json *child; /* ARRAY/OBJECT: first element */
    struct dp_json *next;  /* next sibling */
    size_t len;            /* ARRAY/OBJECT: number of elements */
};

/* Parses text[0..len); *out is freed with dp_json_free. -1 with err saying
 * where (byte offset) and what is wrong. */
int dp_json_parse(const char *text, size_t len, struct dp_json **out, struct dp_err *err);
void dp_json_free(struct dp_json *root);

/* Member key of an object (NULL if obj is not an object or has no such key). */
const struct dp_json *dp_json_get(const struct dp_json *obj, const char *key);
/* The string value of obj.key, or NULL if absent or not a string. */
const char *dp_json_get_str(const struct dp_json *obj, const char *key);

/* A growing output buffer for writing JSON: out of memory sets oom (checked
 * once at the end) instead of failing every call. */
struct dp_json_out {
    char *buf;
    size_t len, cap;
    int oom;
};
void dp_json_out_raw(struct dp_json_out *o, const char *s);
void dp_json_out_fmt(struct dp_json_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s as a JSON string literal, quoted and escaped. */
void dp_json_out_str(struct dp_json_out *o, const char *s);

#endif
