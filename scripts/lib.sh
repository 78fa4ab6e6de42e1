# Shared by the scripts in this directory (sourced, not run): a scratch
# directory and a list of background processes, both cleaned up on exit, and
# a wait for a Redis-protocol port to answer PING.

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# wait_ping PORT [SECONDS]: waits (default 10 s) until PORT answers PING.
wait_ping() {
  for _ in $(seq 1 $((${2:-10} * 20))); do
    if [ "$(redis-cli -p "$1" ping 2>/dev/null)" = "PONG" ]; then return 0; fi
    sleep 0.05
  done
  echo "nothing answers PING on port $1" >&2
  exit 1
}
