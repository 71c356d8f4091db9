/* benchjson: shared pieces of the benchmarks' result files (benchjson.h). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/utsname.h>

#include "benchjson.h"

/* Reals are rounded to at most 6 decimals and are either below 1e9 or whole
 * (byte counts), so 15 significant digits print each exactly as rounded (no
 * 0.1000000000000001 tails). */
#define BENCH_JSON_FLAGS (JSON_INDENT(2) | JSON_REAL_PRECISION(15))

/* ---- values --------------------------------------------------------------------- */

/* Rounded here rather than by the printer: jansson's precision counts
 * significant digits, the files' figures are fixed decimals. */
json_t *bench_json_real(double x, int decimals)
{
    if (!isfinite(x))
        return json_null();
    double scale = pow(10, decimals);
    return json_real(round(x * scale) / scale);
}

/* One time format for every result file, as scripts sort and label by it. */
json_t *bench_json_utc(time_t t)
{
    char when[64];
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return json_null();
    return json_string(when);
}

/* Results say what machine made them, and benchmarks check free memory
 * before a size: /proc/cpuinfo and /proc/meminfo read one way for all. */
void bench_proc_field(const char *path, const char *prefix, char *out, size_t len)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        char *p = strchr(line, ':');
        if (strncmp(line, prefix, strlen(prefix)) != 0 || !p)
            continue;
        for (p++; *p == ' ' || *p == '\t'; p++)
            ;
        p[strcspn(p, "\n")] = '\0';
        snprintf(out, len, "%s", p);
        break;
    }
    fclose(f);
}

/* The machine block results carry so runs on different hosts are told apart. */
json_t *bench_json_machine(void)
{
    struct utsname u;
    char un[4 * sizeof(u.release) + 8] = "", cpu[256], mem[64];
    if (uname(&u) == 0)
        snprintf(un, sizeof(un), "%s %s %s %s", u.sysname, u.release, u.version, u.machine);
    bench_proc_field("/proc/cpuinfo", "model name", cpu, sizeof(cpu));
    bench_proc_field("/proc/meminfo", "MemTotal", mem, sizeof(mem));
    return json_pack("{s:s, s:s, s:I, s:s}", "uname", un, "cpu", cpu, "cpus",
                     (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "memory", mem);
}

/* ---- output --------------------------------------------------------------------- */

/* Through a temporary and a rename: benchmarks rewrite their file after each
 * step so an interrupted run keeps what it measured, and a reader must never
 * see a half-written document. */
int bench_json_write(const char *path, json_t *doc)
{
    if (!doc) {
        errno = ENOMEM;
        return -1;
    }
    char tmp[PATH_MAX + 8];
    int rc = -1;
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        errno = ENAMETOOLONG;
    else if ((errno = 0, json_dump_file(doc, tmp, BENCH_JSON_FLAGS)) < 0) {
        if (errno == 0)
            errno = EIO;
        unlink(tmp);
    } else if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
    } else
        rc = 0;
    json_decref(doc);
    return rc;
}
