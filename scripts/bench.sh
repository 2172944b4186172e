#!/usr/bin/env bash
# Runs the load-generator scenarios of the README's performance section against a release
# build, one fresh sidecar per scenario, and appends each JSON result line to
# bench-results.jsonl. Every process is bounded in time and stopped by PID.
# Usage: scripts/bench.sh [scenario ...]   (default: all; see the case list below)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_OUT:-bench-results.jsonl}
cargo build --release --bin sse-sidecar --example loadgen --example store_bench --example bare_proxy --example send_floor
lg=target/release/examples/loadgen
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
work=$(mktemp -d)

start_app() {
  node examples/legacy-app/server.js --port 3000 --quiet > "$work/app.log" 2>&1 & pids+=($!)
  for _ in $(seq 50); do curl -sf http://127.0.0.1:3000/api/sessions >/dev/null && return; sleep 0.1; done
}
# STORE=sqlite|redis swaps the benchmark's memory log for that backend.
start_sidecar() {
  cp conf/bench.yaml "$work/bench.yaml"
  case ${STORE:-memory} in
    sqlite) sed -i "s|^  backend: memory|  backend: sqlite\n  path: \"$work/events.db\"|" "$work/bench.yaml" ;;
    redis) sed -i "s|^  backend: memory|  backend: redis\n  url: \"redis://127.0.0.1:6390/0\"\n  key_prefix: \"bench-$RANDOM\"|" "$work/bench.yaml" ;;
  esac
  # PRESENCE=1: the bench topic is a presence topic, members named by the app's /api/me.
  if [ "${PRESENCE:-0}" = 1 ]; then
    printf 'presence:\n  topics: ["bench"]\n  identity: {check: "GET /api/me", id: "{response.user}", fields: {name: "{response.user}"}}\n' >> "$work/bench.yaml"
  fi
  target/release/sse-sidecar --config "$work/bench.yaml" > "$work/sidecar.log" 2>&1 & sc=$!; pids+=($sc)
  for _ in $(seq 50); do curl -sf http://127.0.0.1:9090/healthz >/dev/null && return; sleep 0.1; done
}
stop_sidecar() { kill "$sc" 2>/dev/null || true; wait "$sc" 2>/dev/null || true; }
run() { # name, loadgen args...
  local name=$1; shift
  echo "== $name: loadgen $*"
  start_sidecar
  $lg --sidecar-pid "$sc" --json-out "$work/one.jsonl" "$@" 2>&1 | sed -n '/^$/,$p'
  printf '{"scenario":"%s",' "$name" >> "$out"; tail -1 "$work/one.jsonl" | cut -c2- >> "$out"
  stop_sidecar
}

start_redis() {
  [ -n "${redis_pid:-}" ] && return
  redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no --dir "$work" > "$work/redis.log" 2>&1 & redis_pid=$!; pids+=($redis_pid)
  for _ in $(seq 50); do redis-cli -p 6390 ping >/dev/null 2>&1 && return; sleep 0.1; done
}

start_app
scenarios=${*:-"fanout-1k-100 fanout-10k-10 fanout-5k-100 idle-10k idle-19k storm-10k kill-10k real-1k-100 store passthrough"}
for s in $scenarios; do
  case $s in
    fanout-1k-100) run "$s" --streams 1000 --rate 100 --seconds 20 --drain-seconds 3 ;;
    fanout-10k-10) run "$s" --streams 10000 --procs 2 --rate 10 --seconds 30 --drain-seconds 3 ;;
    fanout-5k-100) run "$s" --streams 5000 --procs 2 --rate 100 --seconds 20 --drain-seconds 5 ;;
    idle-10k) run "$s" --streams 10000 --procs 2 --idle-seconds 5 --seconds 0 --drain-seconds 0 ;;
    idle-19k) run "$s" --streams 19000 --procs 3 --idle-seconds 300 --seconds 0 --drain-seconds 0 ;;
    storm-10k) run "$s" --streams 10000 --procs 2 --rate 10 --seconds 20 --storm --drain-seconds 5 ;;
    kill-10k) run "$s" --streams 10000 --procs 2 --kill-switch-config "$work/bench.yaml" --seconds 0 --drain-seconds 0 ;;
    real-1k-100) run "$s" --streams 1000 --mode mutate --rate 100 --seconds 20 --drain-seconds 3 ;;
    redis-1k-100) start_redis; STORE=redis run "$s" --streams 1000 --rate 100 --seconds 20 --drain-seconds 3 ;;
    sqlite-1k-100) STORE=sqlite run "$s" --streams 1000 --rate 100 --seconds 20 --drain-seconds 3 ;;
    redis-10k-10) start_redis; STORE=redis run "$s" --streams 10000 --procs 2 --rate 10 --seconds 30 --drain-seconds 3 ;;
    sqlite-10k-10) STORE=sqlite run "$s" --streams 10000 --procs 2 --rate 10 --seconds 30 --drain-seconds 3 ;;
    redis-real-1k-100) start_redis; STORE=redis run "$s" --streams 1000 --mode mutate --rate 100 --seconds 20 --drain-seconds 3 ;;
    idle-5k) run "$s" --streams 5000 --procs 2 --connect-concurrency 1024 --idle-seconds 5 --seconds 0 --drain-seconds 0 ;;
    presence-5k) PRESENCE=1 run "$s" --streams 5000 --procs 2 --users 2500 --connect-concurrency 1024 --idle-seconds 5 --seconds 0 --drain-seconds 0 ;;
    presence-5k-anon) PRESENCE=1 run "$s" --streams 5000 --procs 2 --connect-concurrency 1024 --idle-seconds 5 --seconds 0 --drain-seconds 0 ;;
    store) echo "== store"; start_redis; target/release/examples/store_bench --events 20000 --redis redis://127.0.0.1:6390/0 | tee -a "$work/store.txt" ;;
    passthrough) echo "== passthrough"; scripts/bench-passthrough.sh 64 10 ;;
    *) echo "unknown scenario $s"; exit 2 ;;
  esac
done
