/* jsonout: one JSON result line on stdout (see jsonout.h). */
#include "jsonout.h"

#include <stdio.h>

#include "util.h"

/* One place that turns a failed dump into a message, so no command prints a
 * half line or nothing without saying so. */
int dp_json_print(json_t *o, size_t flags)
{
    int rc = o && json_dumpf(o, stdout, flags) == 0 && putchar('\n') != EOF ? 0 : -1;
    if (rc < 0)
        dp_error("cannot print the result as JSON (out of memory, a name that is not UTF-8, or stdout closed)");
    json_decref(o);
    return rc;
}

/* For replies that go into a fixed buffer (the MIGRATION verdict): the
 * caller says what failed if it does not fit. */
int dp_json_line(json_t *o, char *buf, size_t len)
{
    size_t n = o && len >= 2 ? json_dumpb(o, buf, len - 2, 0) : 0;
    json_decref(o);
    if (n == 0 || n > len - 2)
        return -1;
    buf[n] = '\n';
    buf[n + 1] = '\0';
    return (int)n + 1;
}

/* Addresses are strings in our JSON (see jsonout.h). */
const char *dp_json_hex(char *buf, size_t len, unsigned long long v)
{
    snprintf(buf, len, "0x%llx", v);
    return buf;
}
