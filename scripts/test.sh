#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (the real sidecar in front of real
# backends), the browser client's node tests, and the headless-Chromium tests.
# Needs: cargo, cmake, node >= 20, chromium at /usr/bin/chromium, redis-server (see .ci/run);
# the fuzz smoke installs cargo-fuzz from crates.io when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check, clippy -D warnings"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

echo "== cargo test"
cargo test --locked

echo "== client module (node --test)"
(cd clients/js && node --test test/)

echo "== protocol tests (eventsource npm package against the real sidecar)"
(cd clients/js/protocol && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && npm test)

echo "== fuzz smoke (every cargo-fuzz target for ${FUZZ_SECONDS:-10} s; SKIP_FUZZ=1 skips)"
if [ "${SKIP_FUZZ:-0}" != 1 ]; then
  scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
fi

if [ -f tests/browser/package.json ]; then
  echo "== browser tests (headless Chromium)"
  (cd tests/browser && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && npm test)
fi
