#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (the real sidecar in front of real
# backends), the browser client's node tests, and the headless-Chromium tests.
# Installs what it needs first when missing (scripts/prereqs.sh test: cmake, a C compiler,
# node, chromium, redis-server with apt; the node packages with npm ci); the fuzz smoke
# installs cargo-fuzz from crates.io when it is missing. Rust comes from rustup.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh test

echo "== cargo fmt --check, clippy -D warnings"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

echo "== cargo test"
cargo test --locked

echo "== client module (node --test)"
(cd clients/js && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && node --test test/)

echo "== protocol tests (eventsource npm package against the real sidecar)"
(cd clients/js/protocol && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && npm test)

echo "== fuzz smoke (every cargo-fuzz target for ${FUZZ_SECONDS:-10} s; SKIP_FUZZ=1 skips)"
if [ "${SKIP_FUZZ:-0}" != 1 ]; then
  scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
fi

if [ -f tests/browser/package.json ]; then
  echo "== browser tests (headless Chromium)"
  (cd tests/learn/jsonserver && { [ -d node_modules ] || npm ci --no-audit --no-fund; })
  (cd tests/browser && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && npm test)
fi
