#!/usr/bin/env bash
# Installs the Tansu broker (Kafka-compatible, SQLite storage) that the real-broker tests use,
# into a cache directory that later runs on the same machine reuse, plus the sqlite3 CLI the
# test harness uses to add a missing index to Tansu's database.
#
#   WABILL_CACHE   cache root (default: ~/.cache/wabill)
#   binary:        $WABILL_CACHE/tools/bin/tansu
#
# Idempotent: does nothing when the binary is there and reports the wanted version.
# A cold install compiles Tansu from crates.io: about 11 minutes on 2 cores.
set -euo pipefail

TANSU_VERSION=0.6.0
WABILL_CACHE="${WABILL_CACHE:-$HOME/.cache/wabill}"
TOOLS="$WABILL_CACHE/tools"
TANSU="$TOOLS/bin/tansu"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

if command -v sqlite3 >/dev/null 2>&1; then
  echo "sqlite3: $(command -v sqlite3) (present)"
else
  echo "sqlite3: not found, installing the Debian package 'sqlite3'"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq sqlite3 >/dev/null
  echo "sqlite3: installed at $(command -v sqlite3)"
fi

installed_version() {
  # `tansu --version` prints "tansu 0.6.0".
  [ -x "$TANSU" ] || return 0
  "$TANSU" --version 2>/dev/null | awk '{print $NF}' | head -n1 || true
}

have="$(installed_version)"
if [ "$have" = "$TANSU_VERSION" ]; then
  echo "tansu: $TANSU is $TANSU_VERSION (present, nothing to do)"
  exit 0
fi

if [ -n "$have" ]; then
  echo "tansu: $TANSU reports '$have', want $TANSU_VERSION: reinstalling"
elif [ -e "$TANSU" ]; then
  echo "tansu: $TANSU exists but does not report a version: reinstalling"
else
  echo "tansu: not installed at $TANSU"
fi

mkdir -p "$TOOLS"
echo "tansu: cargo install tansu $TANSU_VERSION into $TOOLS (cold build takes ~11 min on 2 cores)"
set -x
CARGO_TARGET_DIR="$WABILL_CACHE/tansu-target" \
  cargo install tansu --version "$TANSU_VERSION" --locked --force \
  --features dynostore,libsql --root "$TOOLS"
set +x

have="$(installed_version)"
if [ "$have" != "$TANSU_VERSION" ]; then
  echo "tansu: install finished but $TANSU reports '$have', want $TANSU_VERSION" >&2
  exit 1
fi
echo "tansu: installed $TANSU ($have)"
