/* pagesrc_redis: the page source of 'restore --store' (issue 14): lazy pages
 * straight from the Redis Cluster (lib/store_redis.h), pipelined and batched
 * by extent: every fetch the daemon submitted since the last turn becomes one
 * pipelined batch of GETRANGEs (one per extent piece) over every master at
 * once. Pages this restore wrote back (put: the budget's eviction, fenced and
 * WAIT-acknowledged, lib/store_redis.h) are read from its own keys. The task
 * map comes from the skeleton's pagemap images (as for local images). */
#ifndef DP_PAGESRC_REDIS_H
#define DP_PAGESRC_REDIS_H

#include <stdint.h>

#include "pagesrc.h"
#include "store_redis.h"

/* Takes ownership of st (lease already taken: writer, epoch); images_dir is
 * the skeleton pulled from the store. */
struct dp_pagesrc *dp_pagesrc_redis_open(struct dp_store *st, const char *images_dir, const char *writer,
                                         uint64_t epoch, struct dp_err *err);
/* 1 if s is a store source. */
int dp_pagesrc_is_redis(const struct dp_pagesrc *s);
/* Its store (hot set, lease); NULL if s is not a store source. */
struct dp_store *dp_pagesrc_redis_store(struct dp_pagesrc *s);
/* Gives the lease back unless fenced (dp_fence_release); 1 if s is a store
 * source (handled), else 0. */
int dp_pagesrc_redis_release(struct dp_pagesrc *s);

#endif
