#!/usr/bin/env bash
# A/B load comparison in one run: scenarios of scripts/bench.sh, interleaved between two
# checkouts (each with its own release build), so both see the same machine state.
# Usage: scripts/bench-ab.sh BASE_DIR NEW_DIR ROUNDS scenario...
# Appends every result line to bench-ab.jsonl (field "side": base|new, "round": N), then
# prints the median p99 of each scenario and side.
set -euo pipefail
base=$(cd "$1" && pwd); new=$(cd "$2" && pwd); rounds=$3; shift 3
out=$(pwd)/bench-ab.jsonl
for r in $(seq "$rounds"); do
  for side in base new; do
    dir=$base; [ "$side" = new ] && dir=$new
    for s in "$@"; do
      tmp=$(mktemp)
      (cd "$dir" && BENCH_OUT="$tmp" scripts/bench.sh "$s" > /dev/null 2>&1) || echo "$side $s round $r failed"
      sed "s/^{/{\"side\":\"$side\",\"round\":$r,/" "$tmp" >> "$out"
      rm -f "$tmp"
    done
  done
done
python3 - "$out" "$@" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for s in sys.argv[2:]:
    for side in ("base", "new"):
        mine = [r for r in rows if r.get("scenario") == s and r.get("side") == side]
        p99 = [r["latency_ms"]["p99"] for r in mine if (r.get("latency_ms") or {}).get("p99") is not None]
        cpu = [r["cpu_us_per_delivery"] for r in mine if r.get("cpu_us_per_delivery") is not None]
        lost = sum(r.get("lost") or 0 for r in mine)
        if p99:
            print(f"{s:16} {side:4} p99 ms {' '.join(f'{p:.1f}' for p in p99):24} median {statistics.median(p99):7.1f}"
                  f"  CPU us/delivery median {statistics.median(cpu) if cpu else float('nan'):.2f}  lost {lost}")
PY
