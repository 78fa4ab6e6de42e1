#!/usr/bin/env bash
# Real Redis clients against `distcache-proxy --dev`, in RESP3, the way
# .ci/run checks them (after `cargo test`, whose build left the binary):
#
#   redis-cli -3         Debian `redis-tools`: HELLO's map, nulls, INFO, NOPROTO
#   redis-py 8           PyPI `redis`, its defaults (HELLO 3 on every
#                        connection): tests/clients/check_redis_py.py
#   node-redis v5        npm `redis`, RESP: 3: tests/clients/check_node_redis.cjs
#   the Python example   examples/python/rate_limiter.py on redis-py: its own
#                        checks, ending in "rate limiter ok"
#   README.md            the quick-start commands, with this proxy's ports
#
# What it lacks it installs: redis-tools with apt-get, redis-py into a
# virtualenv and node-redis into a folder, both under target/client-tools.
# The proxy listens on ports the kernel picks, read back from its
# "listening" log line; readiness is polled on /readyz. Any failure stops
# the script with the proxy's log. It runs target/debug/distcache-proxy as
# it finds it (building it only when absent, so CI builds nothing twice):
# after changing the proxy, `cargo build -p distcache-proxy` first.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="${CLIENT_TOOLS_DIR:-$PWD/target/client-tools}"
PY_PACKAGE=redis==8.1.0
NPM_PACKAGE=redis@5.12.4
BIN="${DISTCACHE_PROXY_BIN:-target/debug/distcache-proxy}"
started=$SECONDS
work="$(mktemp -d)"
proxy_pid=
cleanup() {
    if [ -n "$proxy_pid" ]; then
        kill "$proxy_pid" 2>/dev/null || true
        wait "$proxy_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

step() { echo "-- $*"; }
fail() {
    echo "check-clients: FAILED: $*" >&2
    if [ -f "$work/proxy.log" ]; then
        echo "--- the proxy's log (last 30 lines):" >&2
        tail -n 30 "$work/proxy.log" >&2
    fi
    exit 1
}

# ---- tools ---------------------------------------------------------------
if ! command -v redis-cli >/dev/null; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null ||
        fail "redis-cli is missing; install the Debian package redis-tools"
    echo "   installing redis-tools (Debian)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-tools >/dev/null
fi
command -v node >/dev/null && command -v npm >/dev/null || fail "node and npm are needed"
PY="$TOOLS/py/bin/python"
if ! "$PY" -c "import redis, sys; sys.exit(redis.__version__ != '${PY_PACKAGE#*==}')" 2>/dev/null; then
    echo "   installing $PY_PACKAGE (PyPI) into $TOOLS/py"
    python3 -m venv "$TOOLS/py"
    "$TOOLS/py/bin/pip" install -q --disable-pip-version-check "$PY_PACKAGE"
fi
NODE_MODULES="$TOOLS/node/node_modules"
have_npm="$(node -p "require('$NODE_MODULES/redis/package.json').version" 2>/dev/null || true)"
if [ "$have_npm" != "${NPM_PACKAGE#*@}" ]; then
    echo "   installing $NPM_PACKAGE (npm) into $TOOLS/node"
    mkdir -p "$TOOLS/node"
    npm install --prefix "$TOOLS/node" --no-audit --no-fund --loglevel=error "$NPM_PACKAGE" >/dev/null
fi
[ -x "$BIN" ] || cargo build -q -p distcache-proxy

# ---- the proxy -------------------------------------------------------------
step "distcache-proxy --dev"
"$BIN" --dev --log-level info --log-file "$work/proxy.log" \
    --resp-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    </dev/null >"$work/proxy.out" 2>&1 &
proxy_pid=$!
listening=
for _ in $(seq 1 1200); do # polled every 50 ms, for at most a minute
    kill -0 "$proxy_pid" 2>/dev/null || fail "the proxy exited: $(cat "$work/proxy.out")"
    listening="$(grep -m1 ' listening ' "$work/proxy.log" 2>/dev/null || true)"
    [ -n "$listening" ] && break
    sleep 0.05
done
[ -n "$listening" ] || fail "no 'listening' line from the proxy within a minute"
resp="$(grep -o 'resp=[0-9.]*:[0-9]*' <<<"$listening" | cut -d= -f2)"
admin="$(grep -o 'admin=[0-9.]*:[0-9]*' <<<"$listening" | cut -d= -f2)"
port="${resp##*:}"
"$PY" - "$admin" <<'PY' || fail "/readyz on $admin did not answer 200 within 30 s"
import sys, time, urllib.request
deadline = time.monotonic() + 30
while True:
    try:
        if urllib.request.urlopen(f"http://{sys.argv[1]}/readyz", timeout=2).status == 200:
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.05)
PY
echo "   resp=$resp admin=$admin"

# ---- the README's quick start ------------------------------------------------
# The commands README.md tells a newcomer to type against `--dev`, as written
# (the ``sh block after "Then, from another terminal"), with this proxy's
# ports for 6380 and 9100 and the virtualenv's Python: each must succeed and
# print something, the Python line the value the first line wrote.
step "README.md's quick start"
readme_checks=0
while IFS= read -r line; do
    cmd="${line%%   #*}"
    cmd="${cmd//-p 6380/-p $port}"
    cmd="${cmd//port=6380/port=$port}"
    cmd="${cmd//localhost:9100/$admin}"
    cmd="${cmd/#python3 /$PY }"
    out="$(bash -c "$cmd" 2>&1)" || fail "README.md: \`$line\` failed:
$out"
    [ -n "$out" ] || fail "README.md: \`$line\` printed nothing"
    # (redis-cli exits 0 on an error reply.)
    ! grep -Eq '^(\(error\) |ERR |Could not connect)' <<<"$out" ||
        fail "README.md: \`$line\` answered $out"
    case "$line" in
    python3*) grep -q Alice <<<"$out" || fail "README.md: \`$line\` printed $out" ;;
    esac
    readme_checks=$((readme_checks + 1))
done < <(awk '/^Then, from another terminal/ { f = 1 } f && /^```sh/ { b = 1; next } b && /^```/ { exit } b && NF' README.md)
[ "$readme_checks" -ge 4 ] || fail "README.md's quick start: found $readme_checks commands, expected 4 or more"
echo "   $readme_checks commands ok"

# ---- redis-cli -3 ------------------------------------------------------------
cli_checks=0
# cli EXPECTED ARGS…: redis-cli -3 (formatted replies) prints exactly EXPECTED.
cli() {
    local want="$1" got
    shift
    got="$(redis-cli -3 --no-raw -h 127.0.0.1 -p "$port" "$@" 2>&1)" || true
    [ "$got" = "$want" ] ||
        fail "redis-cli -3 $*: expected
$want
got
$got"
    cli_checks=$((cli_checks + 1))
}
step "redis-cli -3 ($(redis-cli --version))"
# HELLO's map as redis-cli shows a RESP3 map (the id varies).
hello="$(redis-cli -3 --no-raw -h 127.0.0.1 -p "$port" hello | grep -v '"id"')"
[ "$hello" = '1# "server" => "redis"
2# "version" => "7.2.0"
3# "proto" => (integer) 3
5# "mode" => "standalone"
6# "role" => "master"
7# "modules" => (empty array)' ] || fail "HELLO is not the RESP3 map Redis sends: $hello"
cli_checks=$((cli_checks + 1))
cli OK set user:123 '{"name":"Alice"}'
cli '"{\"name\":\"Alice\"}"' get user:123
cli '(nil)' get cli:missing
cli '1) "{\"name\":\"Alice\"}"
2) (nil)' mget user:123 cli:missing
cli '(integer) -2' ttl cli:missing
cli '(error) NOPROTO unsupported protocol version' hello 4
cli "(error) ERR Syntax error in HELLO option 'auth'" hello 3 auth onlyuser
info="$(redis-cli -3 -h 127.0.0.1 -p "$port" info server)"
grep -q '^redis_version:7.2.0' <<<"$info" || fail "INFO in RESP3: $info"
cli_checks=$((cli_checks + 1))
# The same commands from a RESP2 redis-cli: the flat HELLO list.
two="$(redis-cli -2 --no-raw -h 127.0.0.1 -p "$port" hello)"
grep -Eqx ' *1\) "server"' <<<"$two" && grep -Eqx ' *6\) \(integer\) 2' <<<"$two" ||
    fail "HELLO in RESP2: $two"
cli_checks=$((cli_checks + 1))
echo "   $cli_checks checks ok"

# ---- redis-py 8 --------------------------------------------------------------
step "redis-py ($("$PY" -c 'import redis; print(redis.__version__)'))"
"$PY" tests/clients/check_redis_py.py "$port" >"$work/py.out" 2>&1 ||
    { cat "$work/py.out" >&2; fail "redis-py"; }
py_tests="$(grep -o '^Ran [0-9]* test' "$work/py.out" | grep -o '[0-9]*')"
echo "   $py_tests tests ok"

# ---- the Python example (redis-py) ------------------------------------------
step "examples/python/rate_limiter.py"
"$PY" examples/python/rate_limiter.py --port "$port" >"$work/rate_limiter.out" 2>&1 &&
    grep -qx 'rate limiter ok' "$work/rate_limiter.out" ||
    { cat "$work/rate_limiter.out" >&2; fail "examples/python/rate_limiter.py"; }
example_checks=1
echo "   $(grep -c '^[^:]*: ' "$work/rate_limiter.out") answers ok"

# ---- node-redis v5 -------------------------------------------------------------
step "node-redis ($(node -p "require('$NODE_MODULES/redis/package.json').version"), RESP3)"
NODE_PATH="$NODE_MODULES" node tests/clients/check_node_redis.cjs "$port" >"$work/node.out" 2>&1 ||
    { cat "$work/node.out" >&2; fail "node-redis"; }
node_tests="$(grep -o '^# pass [0-9]*' "$work/node.out" | grep -o '[0-9]*')"
echo "   $node_tests tests ok"

total=$((cli_checks + py_tests + example_checks + node_tests))
echo "-- clients ok ($((SECONDS - started))s)"
echo "check-clients: $total passed, 0 failed"
