#!/bin/bash
# The demo server's memory on loopback: resident set size per stored object
# (two generated worlds of different sizes, each server measured once
# listening) and per connected client in one zone (N idle bots entering
# and staying, sampled at their peak, against the same server before them).
# Usage: bench/scripts/memory.sh [BOTS]   (default 200; builds first)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-200}
cargo build --release -q -p hoard-demo
B=$PWD/target/release/hoard-demo
W=$(mktemp -d)
SRV_PID=
trap 'kill "$SRV_PID" 2>/dev/null || true; rm -rf "$W"' EXIT

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# Starts a server on world $1 with data dir $2; sets SRV_PID and ADDR.
start_server() {
  coproc SRV { exec $B server --data "$2" --world "$1" --listen 127.0.0.1:0 \
    --max-connections $((N + 100)) --max-connections-per-ip $((N + 100)) 2>"$W/server.log"; }
  read -r line <&"${SRV[0]}"
  ADDR=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["addr"])' "$line")
}

stop_server() {
  kill "$SRV_PID"
  wait "$SRV_PID" 2>/dev/null || true
  SRV_PID=
}

declare -A OBJECTS RSS
for per_zone in 1000 11000; do
  $B world generate --zones 4 --objects-per-zone "$per_zone" --out "$W/world-$per_zone" > /dev/null
  start_server "$W/world-$per_zone" "$W/data-$per_zone"
  OBJECTS[$per_zone]=$((4 * (per_zone + 2048)))
  RSS[$per_zone]=$(rss_kib "$SRV_PID")
  echo "world of ${OBJECTS[$per_zone]} objects: server RSS ${RSS[$per_zone]} KiB"
  if [ "$per_zone" = 1000 ]; then
    # Idle bots: each enters one zone and stays (no zone change; one action in
    # a hundred seconds, the least the bots take).
    base=$(rss_kib "$SRV_PID")
    $B bots --server "$ADDR" --server-data "$W/data-$per_zone" --clients "$N" --duration 20 --ramp 100 \
      --actions-per-sec 0.01 --zone-change-every 1000-1001 --work "$W/bots" > "$W/bots.txt" 2>/dev/null &
    BOTS_PID=$!
    peak=$base
    while kill -0 "$BOTS_PID" 2>/dev/null; do
      now=$(rss_kib "$SRV_PID")
      [ "$now" -gt "$peak" ] && peak=$now
      sleep 1
    done
    wait "$BOTS_PID" || echo "the bots reported errors: $(tail -3 "$W/bots.txt")"
    echo "$N idle bots in one zone each: server RSS $base -> peak $peak KiB"
    echo "per connected client (with its zone subscription): $(( (peak - base) / N )) KiB"
  fi
  stop_server
done
d_obj=$((OBJECTS[11000] - OBJECTS[1000]))
d_rss=$((RSS[11000] - RSS[1000]))
echo "per stored object: $((d_rss * 1024 / d_obj)) bytes of RSS ($d_rss KiB for $d_obj more objects)"
