#!/usr/bin/env bash
# Installs the system packages wabill's build needs, if missing (Debian/Ubuntu).
# rocksdb's bindgen needs libclang; librdkafka builds from source with the C toolchain.
set -euo pipefail
missing=()
for pkg in clang libclang-dev make pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
