#!/usr/bin/env bash
# Runs the fault-injection history checker (tests/chaos, issue 14) for as long
# as asked against real distcache-node and distcache-proxy processes on
# loopback: 3 nodes (two with a WAL, one memory-only), 2 proxies over a
# cluster file (one at read/write one, one at quorum) and the SDK directly,
# while a nemesis SIGKILLs and restarts nodes (from the WAL or empty),
# SIGSTOPs/SIGCONTs them and removes/re-adds them in the cluster file.
# Prints operations checked, faults injected by kind, violations by check
# (and by client path), and how long healing and the final reads at All took.
# Exits 1 if any check failed.
#
#   scripts/chaos.sh              # 60 s, every fault kind, seed 14
#   scripts/chaos.sh 600          # 10 minutes
#   SEED=7 FAULTS=pause,remove-readd KEYS=10 scripts/chaos.sh 300
#   FAULTS=none scripts/chaos.sh 30    # no faults: the baseline
#   DUMP=/tmp/history.txt scripts/chaos.sh 60   # also write the history
#
#   PROFILE=release scripts/chaos.sh 600   # optimized binaries
#
# Fault kinds: kill-restart-wal, kill-restart-empty, pause, remove-readd.
# Builds the three binaries first (CARGO_INCREMENTAL=0), in the dev profile
# unless PROFILE=release: the dev build reuses the target/ that cargo test
# warms, and the checker needs no speed.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_WANTED=${1:-60}
SEED=${SEED:-14}
FAULTS=${FAULTS:-kill-restart-wal,kill-restart-empty,pause,remove-readd}
KEYS=${KEYS:-5}
PROFILE=${PROFILE:-dev}
dir=debug
if [ "$PROFILE" = release ]; then dir=release; fi

CARGO_INCREMENTAL=0 cargo build --profile "$PROFILE" -q \
  -p distcache-node -p distcache-proxy -p distcache-chaos --bins

args=("$SECONDS_WANTED" --seed "$SEED" --faults "$FAULTS" --keys "$KEYS")
if [ -n "${DUMP:-}" ]; then args+=(--dump "$DUMP"); fi
exec target/$dir/distcache-chaos "${args[@]}"
