#!/usr/bin/env bash
# Installs the system packages wabill's build needs, if missing (Debian/Ubuntu).
# rocksdb's bindgen needs libclang; librdkafka builds from source with the C toolchain.
# prometheus provides promtool (tests/deploy.rs checks the alert rules with it) and the
# Prometheus server the metrics tests scrape wabill with.
#
# Every Makefile target that compiles runs this first (`make run` and `make test` on a fresh
# machine need nothing else but a Rust toolchain): when everything is present it costs a
# few dpkg queries (~0.1 s).
set -euo pipefail
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install a Rust toolchain first, e.g. https://rustup.rs" >&2
  exit 1
fi
missing=()
for pkg in clang libclang-dev g++ make pkg-config prometheus; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  # The package starts a Prometheus service on :9090 (and node-exporter on :9100) where
  # systemd runs; the tests start their own, so stop the ones this script just installed.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
  fi
fi
