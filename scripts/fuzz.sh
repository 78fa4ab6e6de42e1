#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo-fuzz + libFuzzer on nightly) one
# after another for SECONDS each (default 60), then minimizes its corpus,
# and prints what each run did: executions, seconds, new corpus entries and
# findings (crash, timeout and out-of-memory inputs written to
# fuzz/artifacts/<target>/). Exits non-zero when any target found one.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# One fuzzer process at a time, at nice 19 (the machine is shared); the
# sanitizer is off (the code under test is safe Rust: what is looked for
# is panics, overflow checks and oracle failures). FUZZ_CMIN=0 skips the
# minimization. The seeds (fuzz/seed.py) are read along with the corpus;
# new inputs go to fuzz/corpus/<target>/, which is committed and replayed
# by `cargo test --workspace` (tests/tests/fuzz_corpora.rs).
# See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-60}
shift || true
ALL=(resp_request resp_command proto_decode token units wal_record wal_recovery
     membership_file membership_http)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz from crates.io"
  nice -n 19 cargo install cargo-fuzz --locked
fi

FUZZ=(nice -n 19 cargo +nightly fuzz)
BUILD=(--sanitizer none --debug-assertions)
python3 fuzz/seed.py
echo "== building the targets"
"${FUZZ[@]}" build "${BUILD[@]}" >/dev/null

LOGS=fuzz/target/logs
mkdir -p "$LOGS"
summary=()
found_any=0
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t" "fuzz/seeds/$t"
  before=$(find "fuzz/artifacts/$t" -type f | wc -l)
  log="$LOGS/$t.log"
  echo "== $t: ${SECONDS_EACH}s"
  start=$(date +%s)
  status=0
  "${FUZZ[@]}" run "${BUILD[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$SECONDS_EACH" -print_final_stats=1 -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || status=$?
  took=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  added=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
  findings=$(( $(find "fuzz/artifacts/$t" -type f | wc -l) - before ))
  if [ "$status" -ne 0 ] && [ "$findings" -eq 0 ]; then
    echo "   exited $status without an artifact; see $log" >&2
    findings=1
  fi
  [ "$findings" -eq 0 ] || { found_any=1; grep -m3 -E "panicked|ERROR|SUMMARY" "$log" || true; }
  if [ "${FUZZ_CMIN:-1}" = 1 ] && [ "$findings" -eq 0 ]; then
    # One input per covered edge (not per hit count): small enough to commit.
    "${FUZZ[@]}" cmin "${BUILD[@]}" "$t" "fuzz/corpus/$t" -- -use_counters=0 >>"$log" 2>&1 ||
      echo "   cmin failed; see $log" >&2
  fi
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  summary+=("$(printf '%-16s %7s %12s %8s %6s %6s %8s' \
    "$t" "$took" "${execs:-?}" "${rate:-?}" "${added:-?}" "$corpus" "$findings")")
done

echo "== summary ($(date -u +%F), $(nproc) cores, ${SECONDS_EACH}s per target)"
printf '%-16s %7s %12s %8s %6s %6s %8s\n' target seconds executions exec/s new corpus findings
printf '%s\n' "${summary[@]}"
exit "$found_any"
