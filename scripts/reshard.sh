#!/usr/bin/env bash
# The resharding measurement (issue 15): 4 real distcache-node processes on
# loopback, two SDK clients that see each membership change a second
# apart, KEYS keys of 100 B written first, then a 90/10 read/write load on
# them through a steady phase, a move 3 -> 4 nodes, after it, a move
# 4 -> 3, after it. Prints per phase: operations, throughput against the
# steady phase, the hit rate of previously written keys, misses, stale
# reads, resurrected deletes, errors, entries and bytes copied, and the
# move's duration. Exits 1 if any read was stale or resurrected a delete.
#
#   scripts/reshard.sh                    # 1,000,000 keys, release build
#   KEYS=100000 PHASE=5 scripts/reshard.sh
#   GRACE=10 KEYS_PER_SEC=20000 scripts/reshard.sh
#   FORGET=1 scripts/reshard.sh           # old owners forget what moved
#
# Builds distcache-node and distcache-reshard first (CARGO_INCREMENTAL=0),
# in the release profile unless PROFILE=dev.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
dir=release
if [ "$PROFILE" = dev ]; then dir=debug; fi
CARGO_INCREMENTAL=0 cargo build --profile "$PROFILE" -q \
  -p distcache-node -p distcache-proxy -p distcache-chaos --bins
args=(--keys "${KEYS:-1000000}" --phase "${PHASE:-10}" --grace "${GRACE:-2}"
      --workers "${WORKERS:-32}")
if [ -n "${KEYS_PER_SEC:-}" ]; then args+=(--keys-per-sec "$KEYS_PER_SEC"); fi
if [ -n "${BYTES_PER_SEC:-}" ]; then args+=(--bytes-per-sec "$BYTES_PER_SEC"); fi
if [ -n "${FORGET:-}" ]; then args+=(--forget "$FORGET"); fi
exec "target/$dir/distcache-reshard" "${args[@]}"
