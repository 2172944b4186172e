#!/usr/bin/env bash
# Runs every fuzz target (cargo-fuzz / libFuzzer) for a bounded time and prints, per target,
# the executions and whether it stayed clean. Usage: scripts/fuzz.sh [seconds per target]
# (default 60). Findings are written to fuzz/artifacts/<target>/ and make the script fail;
# fix them and keep the input as a unit test next to the code it broke.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECS="${1:-60}"
TARGETS=(topic last_event_id route template encoder config head)

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz (crates.io)..."
  cargo install cargo-fuzz --locked
fi
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address); the stable toolchain accepts
# them with RUSTC_BOOTSTRAP=1, so no second toolchain is needed.
export RUSTC_BOOTSTRAP=1
cd "$ROOT/fuzz"
cargo fuzz build -O

failed=0
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t"
  cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  log="$(mktemp)"
  if cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$SECS" -max_len=8192 \
      -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    status=clean
  else
    status=FAILED
    failed=1
  fi
  runs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1)"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')"
  printf '%-14s %-6s %10s executions in %ss, coverage %s edges\n' "$t" "$status" "${runs:-?}" "$SECS" "${cov:-?}"
  if [ "$status" = FAILED ]; then
    tail -40 "$log"
  fi
  rm -f "$log"
done
exit "$failed"
