#!/usr/bin/env bash
# Start/stop a Tansu broker by hand (loopback, SQLite storage), the way the tests run it.
#
#   scripts/tansu.sh start [PORT]   # default 9092; prints the bootstrap address
#   scripts/tansu.sh stop
#   scripts/tansu.sh status
#   scripts/tansu.sh log            # tail -f the broker log
#   scripts/tansu.sh reset          # stop and delete the database
#
#   TANSU_DIR      state directory (default: $WABILL_CACHE/tansu-local): tansu.db, tansu.log, pid
#   TANSU_STORAGE  "sqlite" (default) or "memory"
#   WABILL_TANSU   binary (default: $WABILL_CACHE/tools/bin/tansu, see scripts/install-tansu.sh)
set -euo pipefail

WABILL_CACHE="${WABILL_CACHE:-$HOME/.cache/wabill}"
TANSU="${WABILL_TANSU:-$WABILL_CACHE/tools/bin/tansu}"
DIR="${TANSU_DIR:-$WABILL_CACHE/tansu-local}"
STORAGE="${TANSU_STORAGE:-sqlite}"
PIDFILE="$DIR/tansu.pid"
INDEX_SQL="create index if not exists header_topition_offset on header (topition, offset_id)"

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

cmd="${1:-status}"
case "$cmd" in
start)
  port="${2:-9092}"
  if running; then
    echo "tansu already running (pid $(cat "$PIDFILE")); see: $0 status" >&2
    exit 1
  fi
  if [ ! -x "$TANSU" ]; then
    echo "no tansu binary at $TANSU: run scripts/install-tansu.sh" >&2
    exit 1
  fi
  mkdir -p "$DIR"
  case "$STORAGE" in
  sqlite) url="sqlite://./tansu.db" ;; # Tansu resolves it against its working directory ($DIR)
  memory) url="memory://tansu/" ;;
  *) echo "TANSU_STORAGE must be sqlite or memory" >&2; exit 1 ;;
  esac
  listener="tcp://127.0.0.1:$port"
  (
    cd "$DIR"
    RUST_LOG="${WABILL_TANSU_LOG:-warn}" NO_COLOR=1 nohup "$TANSU" broker \
      --listener-url "$listener" --advertised-listener-url "$listener" \
      --storage-engine "$url" >>"$DIR/tansu.log" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
  )
  # Wait for the port, then add the index Tansu's SQLite schema lacks (every fetch scans the table without it; README "Decisions and limits").
  for _ in $(seq 1 300); do
    if ! running; then
      echo "tansu exited; log:" >&2
      tail -n 30 "$DIR/tansu.log" >&2
      exit 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
  done
  if [ "$STORAGE" = sqlite ]; then
    for _ in $(seq 1 100); do
      if sqlite3 -batch -cmd ".timeout 10000" "$DIR/tansu.db" "$INDEX_SQL" 2>/dev/null; then
        break
      fi
      sleep 0.1
    done
  fi
  echo "tansu running: pid $(cat "$PIDFILE"), bootstrap 127.0.0.1:$port, storage $STORAGE, dir $DIR"
  ;;
stop)
  if running; then
    pid="$(cat "$PIDFILE")"
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    echo "tansu stopped (pid $pid)"
  else
    echo "tansu not running"
  fi
  rm -f "$PIDFILE"
  ;;
status)
  if running; then echo "tansu running: pid $(cat "$PIDFILE"), dir $DIR"; else echo "tansu not running"; exit 1; fi
  ;;
log)
  exec tail -n 50 -f "$DIR/tansu.log"
  ;;
reset)
  "$0" stop || true
  rm -f "$DIR"/tansu.db "$DIR"/tansu.db-* "$DIR"/tansu.log
  echo "removed database and log in $DIR"
  ;;
*)
  echo "usage: $0 start [PORT] | stop | status | log | reset" >&2
  exit 2
  ;;
esac
