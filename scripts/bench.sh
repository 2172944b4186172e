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
# The peer: nginx (Debian) with the nchan module (libnginx-mod-nchan), NCHAN_WORKERS (2, as the
# sidecar has two threads) workers, EventSource subscribers pinged every 15 s as the sidecar's
# heartbeats, on :8089. Its workers' pids are measured.
start_nchan() {
  mkdir -p "$work/nchan"
  cat > "$work/nchan/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes ${NCHAN_WORKERS:-2};
worker_rlimit_nofile 20000;
pid $work/nchan/nginx.pid;
error_log $work/nchan/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  nchan_shared_memory_size 256M;
  server {
    listen 127.0.0.1:8089 backlog=4096;
    location ~ ^/sub/([\w-]+)$ { nchan_subscriber eventsource; nchan_channel_id \$1; nchan_eventsource_ping_interval 15; }
    location ~ ^/pub/([\w-]+)$ { nchan_publisher; nchan_channel_id \$1; nchan_message_buffer_length 1000; nchan_message_timeout 60s; }
  }
}
CONF
  nginx -c "$work/nchan/nginx.conf" -g 'daemon off;' > "$work/nchan/out.log" 2>&1 & sc=$!; pids+=($sc)
  for _ in $(seq 50); do curl -sf -o /dev/null -X POST -d '{}' http://127.0.0.1:8089/pub/warm && break; sleep 0.1; done
  workers=$(pgrep -P "$sc" | paste -sd, -)
}
run() { # name, loadgen args...
  local name=$1; shift
  echo "== $name: loadgen $*"
  if [ "${NCHAN:-0}" = 1 ]; then
    start_nchan
    $lg --nchan --target 127.0.0.1:8089 --sidecar-pid "$workers" --json-out "$work/one.jsonl" "$@" 2>&1 | sed -n '/^$/,$p'
  else
    start_sidecar
    $lg --sidecar-pid "$sc" --json-out "$work/one.jsonl" "$@" 2>&1 | sed -n '/^$/,$p'
  fi
  printf '{"scenario":"%s","date":"%s","commit":"%s",' "$name" "$(date -u +%FT%TZ)" "$(git rev-parse --short HEAD)" >> "$out"; tail -1 "$work/one.jsonl" | cut -c2- >> "$out"
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
    # Issue #21's cases. Overload: 10k streams x 100 ev/s (both paths); 1,000 topics; idle
    # CPU over 60 s at 10k and 19k; `nchan-*`: the same on nginx + nchan in the same run.
    overload-10k-100) run "$s" --streams 10000 --procs 2 --rate 100 --seconds 20 --drain-seconds 5 ;;
    overload-real-10k-100) run "$s" --streams 10000 --procs 2 --mode mutate --rate 100 --seconds 20 --drain-seconds 5 ;;
    real-10k-10) run "$s" --streams 10000 --procs 2 --mode mutate --rate 10 --seconds 30 --drain-seconds 3 ;;
    topics-10k-1k) run "$s" --streams 10000 --procs 2 --topics 1000 --rate 100 --seconds 20 --drain-seconds 3 ;;
    idle-cpu-10k) run "$s" --streams 10000 --procs 2 --connect-concurrency 1024 --idle-seconds 60 --seconds 0 --drain-seconds 0 ;;
    idle-cpu-19k) run "$s" --streams 19000 --procs 3 --connect-concurrency 1024 --idle-seconds 60 --seconds 0 --drain-seconds 0 ;;
    # rate-10k-R: 10k streams at R ev/s for 10 s (the rate where p99 crosses 100 ms);
    # burst-10k: 30 s at BURST_RATE (twice that rate).
    rate-10k-*) run "$s" --streams 10000 --procs 2 --rate "${s#rate-10k-}" --seconds 10 --drain-seconds 3 ;;
    burst-10k) run "$s" --streams 10000 --procs 2 --rate "${BURST_RATE:-20}" --seconds 30 --drain-seconds 5 ;;
    nchan1-fanout-10k-10) NCHAN=1 NCHAN_WORKERS=1 run "$s" --streams 10000 --procs 2 --rate 10 --seconds 30 --drain-seconds 3 ;;
    nchan-fanout-10k-10) NCHAN=1 run "$s" --streams 10000 --procs 2 --rate 10 --seconds 30 --drain-seconds 3 ;;
    nchan-overload-10k-100) NCHAN=1 run "$s" --streams 10000 --procs 2 --rate 100 --seconds 20 --drain-seconds 5 ;;
    nchan-topics-10k-1k) NCHAN=1 run "$s" --streams 10000 --procs 2 --topics 1000 --rate 100 --seconds 20 --drain-seconds 3 ;;
    nchan-idle-cpu-10k) NCHAN=1 run "$s" --streams 10000 --procs 2 --connect-concurrency 1024 --idle-seconds 60 --seconds 0 --drain-seconds 0 ;;
    nchan-idle-cpu-19k) NCHAN=1 run "$s" --streams 19000 --procs 3 --connect-concurrency 1024 --idle-seconds 60 --seconds 0 --drain-seconds 0 ;;
    nchan-idle-10k) NCHAN=1 run "$s" --streams 10000 --procs 2 --idle-seconds 5 --seconds 0 --drain-seconds 0 ;;
    store) echo "== store"; start_redis; target/release/examples/store_bench --events 20000 --redis redis://127.0.0.1:6390/0 | tee -a "$work/store.txt" ;;
    passthrough) echo "== passthrough"; scripts/bench-passthrough.sh 64 10 2 ;;
    *) echo "unknown scenario $s"; exit 2 ;;
  esac
done
