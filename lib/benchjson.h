/* benchjson: the parts every benchmark's result file shares (machine, time,
 * rounded numbers, the write), built with jansson so strings from outside
 * (command lines, paths, error texts) are always escaped. The field names and
 * types of each file are the schema scripts/bench_report.py --help documents. */
#ifndef DP_BENCHJSON_H
#define DP_BENCHJSON_H

#include <stddef.h>
#include <time.h>

#include <jansson.h>

/* x rounded to `decimals` places as a JSON real (the precision the files have
 * always carried), or JSON null if x is not finite (a ratio over a zero
 * baseline); NULL only when out of memory. */
json_t *bench_json_real(double x, int decimals);

/* t as "YYYY-MM-DDTHH:MM:SSZ" (UTC). */
json_t *bench_json_utc(time_t t);

/* The value after the ':' of the first line of a /proc text file (cpuinfo,
 * meminfo) that starts with prefix, into out; "" if there is none. */
void bench_proc_field(const char *path, const char *prefix, char *out, size_t len);

/* {"uname", "cpu", "cpus", "memory"} of this machine. */
json_t *bench_json_machine(void);

/* Writes doc to path (indented, through path.tmp and a rename so a reader
 * never sees half a file) and releases doc. doc NULL (a build that ran out of
 * memory) is an error. Returns 0, or -1 with errno. */
int bench_json_write(const char *path, json_t *doc);

#endif
