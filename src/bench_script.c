/* Benchmarks whose orchestration lives in a Python script of the checkout
 * (scripts/NAME.py): the C entry point checks its arguments and hands over. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "util.h"

#define PYTHON "/usr/bin/python3"

int bench_exec_script(const char *script_name, int argc, char **argv, void (*usage)(FILE *out))
{
    int has_json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        has_json |= !strcmp(argv[i], "--json");
    }
    if (!has_json) {
        usage(stderr);
        return 2;
    }
    char self[PATH_MAX], script[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        dp_error("cannot find this binary (/proc/self/exe): %s", strerror(errno));
        return 1;
    }
    self[n] = '\0';
    /* build/distriproc -> scripts/NAME.py of the same checkout */
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", self);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    snprintf(script, sizeof(script), "%s/../scripts/%s", dir, script_name);
    if (access(script, R_OK) != 0) {
        dp_error("%s is missing (%s): run the distriproc built in a checkout", script, strerror(errno));
        return 1;
    }
    if (access(PYTHON, X_OK) != 0) {
        dp_error("%s is missing: run make deps", PYTHON);
        return 1;
    }
    char **args = calloc((size_t)argc + 5, sizeof(*args));
    if (!args)
        dp_die("out of memory");
    int k = 0;
    args[k++] = PYTHON;
    args[k++] = script;
    args[k++] = "run";
    args[k++] = "--distriproc";
    args[k++] = self;
    for (int i = 1; i < argc; i++)
        args[k++] = argv[i];
    args[k] = NULL;
    fflush(NULL);
    execv(PYTHON, args);
    dp_error("cannot run %s: %s", PYTHON, strerror(errno));
    return 1;
}
