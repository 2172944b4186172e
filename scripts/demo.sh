#!/usr/bin/env bash
# The demo: the bundled legacy app on 127.0.0.1:3000 and sse-sidecar in front of it on
# http://127.0.0.1:8080 (admin on http://127.0.0.1:9090). Open the first in two browsers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh demo
cargo build --release --locked
node examples/legacy-app/server.js --port 3000 --quiet &
app=$!
trap 'kill $app 2>/dev/null' EXIT INT TERM
echo "legacy app: pid $app on http://127.0.0.1:3000 (direct, polling only)"
echo "open http://127.0.0.1:8080 in two browser windows; admin: http://127.0.0.1:9090/admin"
target/release/sse-sidecar --config conf/demo.yaml
