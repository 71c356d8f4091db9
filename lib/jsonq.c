/* jsonq: numbers and arrays read back from JSON text, through jansson. */
#include "jsonq.h"

#include <stdlib.h>
#include <string.h>

/* Deep enough for any output we read (the daemon's stats nest 4 levels). */
#define FIND_DEPTH_MAX 64

/* ---- search ---- */

/* dp_json_find with a depth bound, so hostile nesting cannot recurse without
 * limit (jansson itself stops parsing at 2048 levels). */
static json_t *find(json_t *v, const char *key, int depth)
{
    if (depth > FIND_DEPTH_MAX)
        return NULL;
    const char *k;
    json_t *m;
    size_t i;
    if (json_is_object(v)) {
        json_object_foreach(v, k, m) {
            if (strcmp(k, key) == 0)
                return m;
            json_t *f = find(m, key, depth + 1);
            if (f)
                return f;
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, m) {
            json_t *f = find(m, key, depth + 1);
            if (f)
                return f;
        }
    }
    return NULL;
}

json_t *dp_json_find(json_t *v, const char *key) { return key ? find(v, key, 0) : NULL; }

/* ---- typed reads ---- */

int dp_json_number(const char *json, const char *section, const char *key, double *out)
{
    if (!json || !key)
        return -1;
    json_t *root = json_loads(json, JSON_DECODE_ANY, NULL);
    json_t *in = section ? dp_json_find(root, section) : root;
    json_t *v = in ? dp_json_find(in, key) : NULL;
    int rc = json_is_number(v) ? 0 : -1;
    if (rc == 0)
        *out = json_number_value(v);
    json_decref(root);
    return rc;
}

char *dp_json_array_text(const char *json, const char *key)
{
    if (!json)
        return NULL;
    json_t *root = json_loads(json, JSON_DECODE_ANY, NULL);
    json_t *v = dp_json_find(root, key);
    char *text = json_is_array(v) ? json_dumps(v, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(root);
    return text;
}

double *dp_json_numbers(const char *json, const char *key, size_t *n)
{
    if (!json)
        return NULL;
    json_t *root = json_loads(json, JSON_DECODE_ANY, NULL);
    json_t *v = dp_json_find(root, key), *m;
    double *out = json_is_array(v) ? malloc((json_array_size(v) + 1) * sizeof(double)) : NULL;
    size_t i;
    json_array_foreach(v, i, m) {
        if (!out)
            break;
        if (!json_is_number(m)) {
            free(out);
            out = NULL;
            break;
        }
        out[i] = json_number_value(m);
    }
    if (out)
        *n = json_array_size(v);
    json_decref(root);
    return out;
}
