#!/usr/bin/env bash
# Counts the user-space instructions distcache-proxy executes per request,
# under valgrind's callgrind, for redis-benchmark -c 50 -d 100 SET and GET at
# -P 16 and -P 1, in front of 3 distcache-node processes (--replicas 1).
#
# Unlike req/s and CPU time, which move by 10% or more on a shared machine,
# this count repeats to about 0.1%: use it to tell whether a change to the
# proxy's or the SDK's hot path made it cheaper. It does not see the kernel
# (syscalls are a large part of the proxy's time at -P 1) or cache misses, so
# confirm a gain with scripts/bench-proxy.sh. Installs valgrind, redis-tools
# with apt-get when missing. Everything listens on 127.0.0.1, stopped on exit.
#
#   scripts/proxy-instructions.sh                # REQUESTS=100000
#   PROXY=/tmp/old-proxy scripts/proxy-instructions.sh   # another build, same nodes
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-100000}

if ! command -v valgrind >/dev/null || ! command -v redis-benchmark >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq valgrind redis-tools >/dev/null
fi
cargo build --release -q -p distcache-node -p distcache-proxy
PROXY=${PROXY:-target/release/distcache-proxy}

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

nodes=""
for i in 1 2 3; do
  target/release/distcache-node --listen "127.0.0.1:$((27400 + i))" \
    --admin-listen "127.0.0.1:$((27410 + i))" --node-id "n$i" --max-memory 1GiB \
    --threads 1 --log-level warn &
  pids+=($!)
  nodes="$nodes${nodes:+,}http://127.0.0.1:$((27400 + i))"
done

bench() {
  redis-benchmark -p 27480 -c 50 -d 100 -r 100000 -t "$1" -P "$2" -n "$3" -q >/dev/null 2>&1
}

printf '%-6s %-4s %12s\n' test P "instr/req"
for spec in "16 set" "16 get" "1 set" "1 get"; do
  P=${spec% *} t=${spec#* }
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" \
    "$PROXY" --nodes "$nodes" --replicas 1 --threads 1 \
    --resp-listen 127.0.0.1:27480 --grpc-listen 127.0.0.1:27481 \
    --admin-listen 127.0.0.1:27482 --log-level warn >/dev/null 2>"$work/valgrind.log" &
  proxy=$!
  wait_ping 27480 30 # valgrind starts slowly
  bench "$t" "$P" 20000 # warm-up: connections, pools, the ring
  callgrind_control -z "$proxy" >/dev/null 2>&1
  bench "$t" "$P" "$REQUESTS"
  callgrind_control -d "$proxy" >/dev/null 2>&1
  kill "$proxy"
  wait "$proxy" 2>/dev/null || true
  # The dump after zeroing is the counted part: "<file>.1".
  ir=$(awk '/^summary:/ {print $2}' "$work/cg.$proxy.1")
  awk -v t="$t" -v p="$P" -v ir="$ir" -v n="$REQUESTS" 'BEGIN { printf "%-6s %-4s %12.0f\n", t, p, ir / n }'
  rm -f "$work"/cg.*
done
