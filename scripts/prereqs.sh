#!/usr/bin/env bash
# Installs what the demo or the tests need on Debian when it is missing, then returns.
# Usage: scripts/prereqs.sh demo|test
#   demo: a C toolchain, cmake and make (the release build's C dependencies), Node.js.
#   test: the same, plus Debian's chromium (browser tests), redis-server (the Redis store's
#         tests) and the node packages of the client package (typescript, react), the
#         protocol and the browser tests, and json-server for the learn-mode test (npm ci).
# Packages come from apt; run as root or with sudo available, or install them yourself (the
# script says which are missing and stops). Rust itself comes from rustup, not from here.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-test}
case $what in demo|test) ;; *) echo "usage: $0 demo|test" >&2; exit 2 ;; esac

pkgs=()
command -v cmake >/dev/null || pkgs+=(cmake)
command -v make >/dev/null || pkgs+=(make)
command -v cc >/dev/null || pkgs+=(gcc g++)
command -v node >/dev/null || pkgs+=(nodejs npm)
if [ "$what" = test ]; then
  [ -x /usr/bin/chromium ] || pkgs+=(chromium)
  command -v redis-server >/dev/null || pkgs+=(redis-server)
fi

if [ ${#pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
    echo "missing: ${pkgs[*]}; not root and no sudo: install them (apt-get install ${pkgs[*]}) and run again" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null; then
    echo "missing: ${pkgs[*]}; this is not a Debian system (no apt-get): install them and run again" >&2
    exit 1
  fi
  echo "== installing with apt: ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust with rustup (https://rustup.rs) and run again" >&2
  exit 1
fi

if [ "$what" = test ]; then
  for dir in clients/js clients/js/protocol tests/browser tests/learn/jsonserver; do
    [ -d "$dir/node_modules" ] || (cd "$dir" && npm ci --no-audit --no-fund)
  done
fi
