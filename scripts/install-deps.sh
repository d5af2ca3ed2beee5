#!/usr/bin/env bash
# Installs the system packages wabill's build needs, if missing (Debian/Ubuntu).
# rocksdb's bindgen needs libclang; librdkafka builds from source with the C toolchain.
# prometheus provides promtool (tests/deploy.rs checks the alert rules with it) and the
# Prometheus server the metrics tests scrape wabill with.
set -euo pipefail
missing=()
for pkg in clang libclang-dev make pkg-config prometheus; do
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
