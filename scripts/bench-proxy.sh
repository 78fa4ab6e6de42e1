#!/usr/bin/env bash
# Measures, in one run on this machine, redis-benchmark against
#   - distcache-proxy in front of 3 distcache-node processes (replicas 1 and 2), and
#   - twemproxy (nutcracker) in front of 3 redis-server processes,
# with -c 50 -d 100 -t set,get at -P 1 and -P 16, and prints each figure as a
# ratio to twemproxy's. Installs redis-server, redis-tools and nutcracker with
# apt-get when missing. Everything listens on 127.0.0.1 and is stopped on exit.
#
# Every target is started once and lives through the whole run, as a sidecar
# does: twemproxy, and one distcache-proxy per --replicas setting. Each gets
# the same untimed warm-up first (connections, buffers, the proxies' pools).
# Then the targets take turns, ROUNDS times, the side that goes first
# alternating (so a burst of load from something else on the machine hits
# both sides alike); each figure is reported as the median of the rounds,
# and its ratio to twemproxy as the median of the per-round ratios, with
# their range. -P 16 runs send 4 x REQUESTS, so that they last about as
# long as -P 1 runs. Like redis-server and twemproxy, which are
# single-threaded, each node runs with --threads 1 (three of them share the
# machine's cores); the proxy runs with PROXY_THREADS worker threads.
#
# Besides req/s it reports the CPU time (user + system, from /proc) that the
# proxy and its three backends spent per request: steadier than throughput on
# a shared machine, where another process's burst moves req/s by 10% or more.
#
#   scripts/bench-proxy.sh                       # REQUESTS=100000 ROUNDS=3
#   REQUESTS=50000 ROUNDS=5 PROXY_THREADS=2 scripts/bench-proxy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-100000}
ROUNDS=${ROUNDS:-3}
PROXY_THREADS=${PROXY_THREADS:-1}

if ! command -v redis-benchmark >/dev/null || ! command -v redis-server >/dev/null \
  || ! command -v nutcracker >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq redis-server redis-tools nutcracker >/dev/null
fi
cargo build --release -q -p distcache-node -p distcache-proxy

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# distcache: three nodes.
node_pids=()
for i in 1 2 3; do
  target/release/distcache-node --listen "127.0.0.1:$((27000 + i))" \
    --admin-listen "127.0.0.1:$((27100 + i))" --node-id "n$i" --max-memory 1GiB \
    --threads 1 --log-level warn &
  pids+=($!)
  node_pids+=($!)
done
nodes=http://127.0.0.1:27001,http://127.0.0.1:27002,http://127.0.0.1:27003

# twemproxy: three redis-servers.
redis_pids=()
for i in 1 2 3; do
  redis-server --port "$((27200 + i))" --save "" --appendonly no --bind 127.0.0.1 \
    --logfile "$work/redis$i.log" &
  pids+=($!)
  redis_pids+=($!)
done
cat > "$work/nutcracker.yml" <<YML
bench:
  listen: 127.0.0.1:27290
  hash: fnv1a_64
  distribution: ketama
  redis: true
  servers:
   - 127.0.0.1:27201:1
   - 127.0.0.1:27202:1
   - 127.0.0.1:27203:1
YML
nutcracker -c "$work/nutcracker.yml" -o "$work/nutcracker.log" &
twem=$!
pids+=($!)

# distcache: one proxy per replication factor, on 2738R.
declare -A proxy
for R in 1 2; do
  target/release/distcache-proxy --nodes "$nodes" --replicas "$R" --threads "$PROXY_THREADS" \
    --resp-listen "127.0.0.1:2738$R" --grpc-listen "127.0.0.1:2735$R" \
    --admin-listen "127.0.0.1:2730$R" --log-level warn &
  proxy[$R]=$!
  pids+=($!)
done
for port in 27290 27381 27382; do
  wait_ping "$port"
  for t in set get; do
    redis-benchmark -p "$port" -c 50 -d 100 -t "$t" -P 16 -n 50000 -r 100000 -q >/dev/null
  done
done

hz=$(getconf CLK_TCK)
ticks() { # pid... -> CPU clock ticks (user + system) the processes used so far
  local sum=0 p f
  for p in "$@"; do
    read -r -a f < "/proc/$p/stat"
    sum=$((sum + f[13] + f[14]))
  done
  echo "$sum"
}

run() { # name port pipeline front-pid backend-pid... -> "round name P TEST rps front-us backend-us"
  local name=$1 port=$2 p=$3 front=$4 t f0 b0 rps n=$REQUESTS
  shift 4
  if ((p > 1)); then n=$((4 * REQUESTS)); fi
  for t in set get; do
    f0=$(ticks "$front")
    b0=$(ticks "$@")
    rps=$(redis-benchmark -h 127.0.0.1 -p "$port" -c 50 -d 100 -t "$t" -P "$p" -n "$n" \
      -r 100000 --csv | tail -n +2 | tr -d '"' | cut -d, -f2)
    awk -v n="$name" -v p="$p" -v t="${t^^}" -v r="$rps" -v hz="$hz" -v q="$n" \
      -v f=$(($(ticks "$front") - f0)) -v b=$(($(ticks "$@") - b0)) \
      -v round="$round" \
      'BEGIN { printf "%s %s %s %s %s %.2f %.2f\n", round, n, p, t, r, f * 1e6 / hz / q, b * 1e6 / hz / q }'
  done
}

results="$work/results"
: > "$results"
twemproxy_runs() {
  for P in 1 16; do run twemproxy 27290 "$P" "$twem" "${redis_pids[@]}" >> "$results"; done
}
distcache_runs() {
  for R in 1 2; do
    for P in 1 16; do run "distcache-r$R" "2738$R" "$P" "${proxy[$R]}" "${node_pids[@]}" >> "$results"; done
  done
}
# Who goes first alternates, so a machine that slows down (or speeds up)
# during a round does not always favour the same side.
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  if ((round % 2)); then twemproxy_runs; distcache_runs; else distcache_runs; twemproxy_runs; fi
done

# Each distcache figure as a ratio to twemproxy's in the same round.
ratios="$work/ratios"
awk '
  $2 == "twemproxy" { base[$1, $3, $4] = $5; next }
  { rest[NR] = $0 }
  END {
    for (i in rest) {
      split(rest[i], f, " ")
      b = base[f[1], f[3], f[4]]
      if (b > 0) printf "%s %s %s %.4f\n", f[2], f[3], f[4], f[5] / b
    }
  }' "$results" > "$ratios"

# The median of the rounds for each (target, P, test) and column, then ratios.
medians="$work/medians"
awk '
  { key = $2 " " $3 " " $4; m = ++n[key]; for (c = 5; c <= 7; c++) v[key, c, m] = $c }
  END {
    for (k in n) {
      line = k
      for (c = 5; c <= 7; c++) {
        cnt = n[k]
        for (i = 1; i <= cnt; i++) a[i] = v[k, c, i]
        for (i = 2; i <= cnt; i++) { x = a[i]; j = i - 1
          while (j >= 1 && a[j] > x) { a[j + 1] = a[j]; j-- }
          a[j + 1] = x }
        mid = int((cnt + 1) / 2)
        line = line " " ((cnt % 2) ? a[mid] : (a[mid] + a[mid + 1]) / 2)
      }
      print line
    }
  }' "$results" | sort -k1,1 -k2,2n -k3,3 > "$medians"

# The median (and the lowest and highest) of each figure's per-round ratios.
ratio_medians="$work/ratio-medians"
awk '
  { key = $1 " " $2 " " $3; m = ++n[key]; v[key, m] = $4 }
  END {
    for (k in n) {
      cnt = n[k]
      for (i = 1; i <= cnt; i++) a[i] = v[k, i]
      for (i = 2; i <= cnt; i++) { x = a[i]; j = i - 1
        while (j >= 1 && a[j] > x) { a[j + 1] = a[j]; j-- }
        a[j + 1] = x }
      mid = int((cnt + 1) / 2)
      printf "%s %.2f %.2f %.2f\n", k, (cnt % 2) ? a[mid] : (a[mid] + a[mid + 1]) / 2, a[1], a[cnt]
    }
  }' "$ratios" > "$ratio_medians"

echo
echo "median of $ROUNDS rounds, $REQUESTS requests each at -P 1, $((4 * REQUESTS)) at -P 16;"
echo "CPU is user + system time per request;"
echo "vs twem: the median of the rounds' ratios (each round's figure over twemproxy's in that round)"
printf '%-16s %-3s %-5s %12s %8s %11s %14s %16s\n' \
  target P test "req/s" "vs twem" "min-max" "proxy us/req" "backends us/req"
while read -r name p test rps front back; do
  read -r ratio lo hi < <(awk -v n="$name" -v p="$p" -v t="$test" \
    '$1 == n && $2 == p && $3 == t { print $4, $5, $6 }' "$ratio_medians") || true
  if [ "$name" = twemproxy ]; then ratio=1.00 lo=1.00 hi=1.00; fi
  printf '%-16s %-3s %-5s %12.0f %8s %11s %14.2f %16.2f\n' \
    "$name" "$p" "$test" "$rps" "$ratio" "$lo-$hi" "$front" "$back"
done < "$medians"
