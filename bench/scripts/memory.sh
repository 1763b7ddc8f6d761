#!/bin/bash
# The demo server's memory on loopback: resident set size per stored object
# (two generated worlds of different sizes, each server measured once
# listening), per connected client in one zone (N idle bots entering and
# staying, sampled at their peak, against the same server before them) and
# per further subscribed zone (the same bots each following all four zones).
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
  stop_server
done

# Idle bots: each enters one zone and stays (no zone change; one action in a
# hundred seconds, the least the bots take), against a server started afresh
# on the small world; prints the peak server RSS in KiB and sets BASE.
idle_bots_peak() {
  start_server "$W/world-1000" "$W/data-1000"
  BASE=$(rss_kib "$SRV_PID")
  $B bots --server "$ADDR" --server-data "$W/data-1000" --clients "$N" --duration 20 --ramp 100 \
    --actions-per-sec 0.01 --zone-change-every 1000-1001 --work "$W/bots" "$@" > "$W/bots.txt" 2>/dev/null &
  BOTS_PID=$!
  PEAK=$BASE
  while kill -0 "$BOTS_PID" 2>/dev/null; do
    now=$(rss_kib "$SRV_PID")
    [ "$now" -gt "$PEAK" ] && PEAK=$now
    sleep 1
  done
  wait "$BOTS_PID" || echo "the bots reported errors: $(tail -3 "$W/bots.txt")"
  stop_server
}

# First fill every bot's cache with all four zones (not reported), so both
# runs below enter warm and their peaks are the sessions, not cold answers.
idle_bots_peak --prefetch-all
idle_bots_peak
one=$PEAK
echo "$N idle bots in one zone each: server RSS $BASE -> peak $one KiB"
echo "per connected client (with its zone subscription): $(( (one - BASE) / N )) KiB"
# The same bots, each following all four zones (three more subscriptions).
idle_bots_peak --prefetch-all
all=$PEAK
echo "$N idle bots following all 4 zones each: server RSS $BASE -> peak $all KiB"
echo "per further subscribed zone: $(( (all - one) * 1024 / (3 * N) )) bytes"
d_obj=$((OBJECTS[11000] - OBJECTS[1000]))
d_rss=$((RSS[11000] - RSS[1000]))
echo "per stored object: $((d_rss * 1024 / d_obj)) bytes of RSS ($d_rss KiB for $d_obj more objects)"
