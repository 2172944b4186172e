#!/usr/bin/env bash
# Pass-through comparison, one run: requests/s and latency percentiles with wrk against
#   1. the backend directly,
#   2. sse-sidecar in front of it,
#   3. nginx proxy_pass in front of the same backend,
#   4. a bare Pingora proxy (examples/bare_proxy.rs: no hooks), Pingora's own cost.
# The backend is nginx serving a small JSON document (fast, so the proxies are what is
# measured). Needs: wrk, nginx (Debian packages), a release build of the sidecar.
# Every case runs once per round, rounds interleaved (default 2), so drift on this shared
# machine shows as round-to-round spread rather than as a difference between cases.
# VARIANTS=1 adds Pingora's own knobs: 2 threads (sidecar and bare), work stealing off,
# a small upstream keep-alive pool (see examples/bare_proxy.rs).
# LEARN=1 adds the sidecar with learn mode on (`learn.enabled: true`, every request recorded),
# beside the one with it off.
# Usage: scripts/bench-passthrough.sh [connections=64] [seconds=10] [rounds=2]
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-64}
secs=${2:-10}
rounds=${3:-2}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
backend=$(free_port); nginxp=$(free_port); sidecar=$(free_port); admin=$(free_port); bare=$(free_port)
sidecar2=$(free_port); admin2=$(free_port); bare2=$(free_port); bare_ns=$(free_port); bare_pool=$(free_port)
sidecar_learn=$(free_port); admin_learn=$(free_port)

mkdir -p "$work/www/api" "$work/logs"
printf '{"board_id":"1","cards":[{"id":"c1","title":"one","column":"todo"},{"id":"c2","title":"two","column":"doing"}],"version":7}' > "$work/www/api/cards.json"
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$backend; keepalive 128; }
  server { listen 127.0.0.1:$backend; root $work/www; default_type application/json; }
  server {
    listen 127.0.0.1:$nginxp;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
nginx -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!)
cat > "$work/sidecar.yaml" <<CONF
listen: "127.0.0.1:$sidecar"
threads: 1
upstream: {address: "127.0.0.1:$backend"}
admin: {listen: "127.0.0.1:$admin"}
logging: {level: warn}
CONF
[ -x target/release/sse-sidecar ] || cargo build --release --bin sse-sidecar
[ -x target/release/examples/bare_proxy ] || cargo build --release --example bare_proxy
target/release/sse-sidecar --config "$work/sidecar.yaml" & pids+=($!)
target/release/examples/bare_proxy "127.0.0.1:$bare" "127.0.0.1:$backend" 1 & pids+=($!)
ports="$backend $nginxp $sidecar $bare"
if [ "${VARIANTS:-0}" = 1 ]; then
  sed -e "s/^threads: 1/threads: 2/" -e "s/:$sidecar/:$sidecar2/" -e "s/:$admin/:$admin2/" "$work/sidecar.yaml" > "$work/sidecar2.yaml"
  target/release/sse-sidecar --config "$work/sidecar2.yaml" & pids+=($!)
  target/release/examples/bare_proxy "127.0.0.1:$bare2" "127.0.0.1:$backend" 2 & pids+=($!)
  BARE_WORK_STEALING=0 target/release/examples/bare_proxy "127.0.0.1:$bare_ns" "127.0.0.1:$backend" 2 & pids+=($!)
  BARE_POOL=16 target/release/examples/bare_proxy "127.0.0.1:$bare_pool" "127.0.0.1:$backend" 1 & pids+=($!)
  ports="$ports $sidecar2 $bare2 $bare_ns $bare_pool"
fi
if [ "${LEARN:-0}" = 1 ]; then
  sed -e "s/:$sidecar\"/:$sidecar_learn\"/" -e "s/:$admin\"/:$admin_learn\"/" "$work/sidecar.yaml" > "$work/sidecar-learn.yaml"
  echo "learn: {enabled: true}" >> "$work/sidecar-learn.yaml"
  target/release/sse-sidecar --config "$work/sidecar-learn.yaml" & pids+=($!)
  ports="$ports $sidecar_learn"
fi
for p in $ports; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p/api/cards.json" >/dev/null && break; sleep 0.1; done
done

run() {
  local name=$1 port=$2
  wrk -t1 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$port/api/cards.json" > "$work/$name.txt"
  local rps p50 p90 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/$name.txt")
  p50=$(awk '$1=="50%" {print $2}' "$work/$name.txt")
  p90=$(awk '$1=="90%" {print $2}' "$work/$name.txt")
  p99=$(awk '$1=="99%" {print $2}' "$work/$name.txt")
  printf '%-26s %10s req/s   p50 %8s   p90 %8s   p99 %8s\n' "$name" "$rps" "$p50" "$p90" "$p99"
  printf '{"case":"%s","round":%s,"connections":%s,"seconds":%s,"rps":%s,"p50":"%s","p90":"%s","p99":"%s"}\n' "$name" "$round" "$conns" "$secs" "$rps" "$p50" "$p90" "$p99" >> "$work/results.jsonl"
}
echo "wrk -t1 -c$conns -d${secs}s, 1 worker each (nginx worker_processes 1, sidecar and bare Pingora threads 1), $(nproc) cores shared"
for round in $(seq "$rounds"); do
  echo "-- round $round"
  run direct "$backend"
  run sse-sidecar "$sidecar"
  run nginx-proxy_pass "$nginxp"
  run pingora-bare "$bare"
  if [ "${LEARN:-0}" = 1 ]; then
    run sse-sidecar-learn "$sidecar_learn"
  fi
  if [ "${VARIANTS:-0}" = 1 ]; then
    run sse-sidecar-2-threads "$sidecar2"
    run pingora-bare-2-threads "$bare2"
    run pingora-bare-no-stealing "$bare_ns"
    run pingora-bare-pool-16 "$bare_pool"
  fi
done
cat "$work/results.jsonl"
[ -n "${PASSTHROUGH_OUT:-}" ] && cat "$work/results.jsonl" >> "$PASSTHROUGH_OUT"
if [ "${LEARN:-0}" = 1 ]; then
  echo "learn mode's samples (recorded, dropped):"
  curl -s "http://127.0.0.1:$admin_learn/metrics" | grep '^sse_sidecar_learn_samples_total' || true
fi
exit 0
