/* cpid: the identity of a checkpoint, so that data derived from one
 * checkpoint (a hot set, a fault trace) is never applied to another.
 *
 * identity = BLAKE2b-256 (libsodium crypto_generichash, unkeyed) over
 *   "DistriProc-checkpoint-id-v1", then for each item in this order:
 *     inventory.img, pstree.img, stats-dump (if present),
 *     per task in pstree order: core-TID.img of every thread, mm-PID.img,
 *     pagemap-PID.img (each if present),
 *     then every pages file the checkpoint reads (dp_checkpoint.files order),
 *   an item being: u16 name length, name, u8 kind (1 = contents hashed,
 *   2 = size only), u64 size (LE), then the contents for kind 1.
 *
 * Why these files: they describe the tree (pids), the address spaces
 * (mappings, page runs and where their data lies) and the moment of the dump
 * (registers in core-*, CRIU's dump timings in stats-dump), so two dumps of
 * the same workload differ; together they are a few KiB to a few MiB, so the
 * identity costs milliseconds even for a many-GiB checkpoint. The page data
 * itself is left out (only the pages files' sizes count): it is GiBs, and the
 * destination's skeleton has it as holes. Every hashed file is in the
 * skeleton byte for byte, so source and destination compute the same value. */
#ifndef DP_CPID_H
#define DP_CPID_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "util.h"

#define DP_CPID_SIZE 32
#define DP_CPID_HEX  (2 * DP_CPID_SIZE + 1)

int dp_checkpoint_identity(const struct dp_checkpoint *cp, uint8_t id[DP_CPID_SIZE], struct dp_err *err);
/* Lower-case hex, NUL-terminated. */
void dp_cpid_hex(const uint8_t id[DP_CPID_SIZE], char out[DP_CPID_HEX]);
/* The first 16 hex digits, for messages. */
void dp_cpid_short(const uint8_t id[DP_CPID_SIZE], char out[17]);

#endif
