/* jsonq: reading values back out of JSON text that our own commands, the
 * daemon and the tools we drive (tc -j, forkmem, load scripts) print.
 *
 * Everything is parsed with jansson; nothing scans text. Pure: no I/O, so it
 * is unit-tested (tests/unit/test_orch.c) like any decoder. */
#ifndef DP_JSONQ_H
#define DP_JSONQ_H

#include <stddef.h>

#include <jansson.h>

/* The value of the first member named key below v in document order (depth
 * first: a member of v that comes first wins over a nested one that comes
 * later), or NULL. Borrowed reference. */
json_t *dp_json_find(json_t *v, const char *key);

/* Parses JSON text and finds the number stored under the first member named
 * key (document order, at any depth); if section is not NULL, only inside the
 * value of the first member named section (e.g. "total"). Returns 0 with *out,
 * or -1 if the text is not JSON, or key is absent or not a number. */
int dp_json_number(const char *json, const char *section, const char *key, double *out);

/* The array stored under the first member named key, as compact JSON text
 * (malloc'd), or NULL if the text is not JSON or there is no such array. */
char *dp_json_array_text(const char *json, const char *key);

/* The numbers of the array stored under the first member named key, in a
 * malloc'd array (*n of them), or NULL if the text is not JSON, there is no
 * such array, or an element is not a number. */
double *dp_json_numbers(const char *json, const char *key, size_t *n);

#endif
