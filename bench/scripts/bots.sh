#!/bin/bash
# A load test on loopback: the demo server (with metrics) and N bots in one
# other process, warm caches (each bot starts from a copy of a cache that
# holds all four zones), changing zones every 10-20 s and acting once a
# second. Writes the report (report.json, report.html) and a headless
# Chromium screenshot of it under target/bots-N/.
# Usage: bench/scripts/bots.sh [N] [SECONDS]   (defaults 1000 60; builds first)
# SERVER_ARGS adds flags to the server (e.g. SERVER_ARGS="--transient-hz 0").
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-1000}
SECS=${2:-60}
cargo build --release -q -p hoard-demo
B=$PWD/target/release/hoard-demo
OUT=$PWD/target/bots-$N
W=$(mktemp -d)
trap 'kill "$SRV_PID" 2>/dev/null || true; rm -rf "$W"' EXIT
mkdir -p "$OUT"
coproc SRV { exec $B server --data "$W/data" --listen 127.0.0.1:0 --metrics 127.0.0.1:0 \
  --max-connections $((N + 100)) --max-connections-per-ip $((N + 100)) ${SERVER_ARGS:-} 2>"$OUT/server.log"; }
read -r line <&"${SRV[0]}"
ADDR=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["addr"])' "$line")
METRICS=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["metrics"])' "$line")
echo "server $ADDR (pid $SRV_PID), metrics $METRICS"
# One bot tours the four zones to make the warm cache.
$B bots --server "$ADDR" --server-data "$W/data" --clients 1 --duration 30 \
  --zone-change-every 5-6 --work "$W/seed" > /dev/null
$B bots --server "$ADDR" --server-data "$W/data" --clients "$N" --duration "$SECS" --ramp 100 \
  --zone-change-every 10-20 --actions-per-sec 1 --warm-from "$W/seed/bot-0" --work "$W/bots" \
  --metrics "$METRICS" --report "$OUT" | tee "$OUT/table.txt"
ps -o rss= -p "$SRV_PID" | awk '{print "server RSS after the run: " $1 " KiB"}' | tee -a "$OUT/table.txt"
if command -v chromium > /dev/null; then
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1360,1500 \
    --screenshot="$OUT/report.png" "file://$OUT/report.html" 2>/dev/null
  echo "screenshot: $OUT/report.png"
fi
