/* live_client: the destination's side of memory mode: reports the outcome of
 * its restore to the page server (lib/livesm.h verdicts) over a connection of
 * its own, so the source is committed or rolled back. A server of images
 * answers {"mode": "images"} and nothing happens there. */
#ifndef DP_LIVE_CLIENT_H
#define DP_LIVE_CLIENT_H

#include <stdint.h>

#include "util.h"

/* Connects to hostport with the key in key_file (bounded: 10 s), sends the
 * verdict, returns 0 with the reply's JSON in *json (malloc'd), or -1. */
int dp_live_report(const char *hostport, const char *key_file, uint32_t verdict, char **json, struct dp_err *err);

#endif
