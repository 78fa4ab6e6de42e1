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
# With NODE=1 it counts a node's instructions instead: node 1 runs under
# callgrind behind a plain proxy, and its count is divided by the GETs and
# SETs it served (about a third of the requests), from its /metrics.
#
#   scripts/proxy-instructions.sh                # REQUESTS=100000
#   PROXY=/tmp/old-proxy scripts/proxy-instructions.sh   # another build, same nodes
#   NODE=1 scripts/proxy-instructions.sh         # the node's instructions per operation
#   NODE=1 NODE_BIN=/tmp/old-node scripts/proxy-instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-100000}

if ! command -v valgrind >/dev/null || ! command -v redis-benchmark >/dev/null \
  || ! command -v curl >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq valgrind redis-tools curl >/dev/null
fi
cargo build --release -q -p distcache-node -p distcache-proxy
PROXY=${PROXY:-target/release/distcache-proxy}
NODE_BIN=${NODE_BIN:-target/release/distcache-node}
NODE=${NODE:-0}

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

start_node() { # i [wrapper...]: node i on 2740i, admin 2741i
  local i=$1
  shift
  "$@" "$NODE_BIN" --listen "127.0.0.1:$((27400 + i))" \
    --admin-listen "127.0.0.1:$((27410 + i))" --node-id "n$i" --max-memory 1GiB \
    --threads 1 --log-level warn >/dev/null 2>>"$work/valgrind.log" &
}
nodes=""
for i in 1 2 3; do
  if ((NODE == 0 || i > 1)); then
    start_node "$i"
    pids+=($!)
  fi
  nodes="$nodes${nodes:+,}http://127.0.0.1:$((27400 + i))"
done

bench() {
  redis-benchmark -p 27480 -c 50 -d 100 -r 100000 -t "$1" -P "$2" -n "$3" -q >/dev/null 2>&1
}

# served: GETs and SETs node 1 has answered so far (from its /metrics).
served() {
  curl -sf http://127.0.0.1:27411/metrics \
    | awk '/^distcache_operations_total\{op="(get|set)"/ { s += $2 } END { print s + 0 }'
}

if ((NODE)); then
  printf '%-6s %-4s %12s\n' test P "node instr/op"
  for spec in "16 set" "16 get" "1 set" "1 get"; do
    P=${spec% *} t=${spec#* }
    start_node 1 valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p"
    node=$!
    pids+=($!)
    for _ in $(seq 600); do curl -sf http://127.0.0.1:27411/healthz >/dev/null && break; sleep 0.05; done
    target/release/distcache-proxy --nodes "$nodes" --replicas 1 --threads 1 \
      --resp-listen 127.0.0.1:27480 --grpc-listen 127.0.0.1:27481 \
      --admin-listen 127.0.0.1:27482 --log-level warn &
    proxy=$!
    pids+=($!)
    wait_ping 27480
    bench "$t" "$P" 20000
    callgrind_control -z "$node" >/dev/null 2>&1
    before=$(served)
    bench "$t" "$P" "$REQUESTS"
    callgrind_control -d "$node" >/dev/null 2>&1
    ops=$(($(served) - before))
    kill "$proxy" "$node"
    wait "$proxy" "$node" 2>/dev/null || true
    ir=$(awk '/^summary:/ {print $2}' "$work/cg.$node.1")
    awk -v t="$t" -v p="$P" -v ir="$ir" -v n="$ops" 'BEGIN { printf "%-6s %-4s %12.0f\n", t, p, ir / n }'
    rm -f "$work"/cg.*
  done
  exit 0
fi

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
