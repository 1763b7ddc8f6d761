#!/bin/bash
# Round trips on the critical path of a returning player, from process
# start to the zone ready: a fresh `hoard-demo client --headless` process enters the warm
# meadow through the UDP simulator (`hoard-demo netsim`) at 0 ms and at
# 300 ms round-trip time; median wall time of 5 runs each. The difference
# divided by 300 ms is the number of round trips a returning player waits.
# Usage: bench/scripts/demo-rtt.sh   (B=path/to/hoard-demo to time another build)
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${B:-}" ]; then
  cargo build --release -q -p hoard-demo
  B=target/release/hoard-demo
fi
S=target/release/hoard-demo
[ -x "$S" ] || cargo build --release -q -p hoard-demo
W=$(mktemp -d)
cleanup() { kill "${SIM_PID:-}" "${SRV_PID:-}" 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
coproc SRV { exec $S server --data "$W/data" --listen 127.0.0.1:0 2>/dev/null; }
read -r line <&"${SRV[0]}"
ADDR=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["addr"])' "$line")
TOKEN=$($S server token --data "$W/data" --player ann)
enter() { $B client --headless --exit-after-ready --server "$1" --token "$TOKEN" --zone meadow --cache-dir "$W/cache" >/dev/null 2>&1; }
# When the zone is ready (the client's `zone_ready` line), not when the
# process has exited: closing waits (up to 0.5 s) for the server to be told.
ready_at() {
  $B client --headless --exit-after-ready --server "$1" --token "$TOKEN" --zone meadow --cache-dir "$W/cache" 2>/dev/null |
    { while read -r line; do case "$line" in *zone_ready*) date +%s%N; break ;; esac; done; cat >/dev/null; }
}
enter "$ADDR"   # fill the cache
for rtt in 0 300; do
  $S netsim --listen 127.0.0.1:7391 --upstream "$ADDR" --rtt-ms "$rtt" --rate-mbit 0 >/dev/null 2>&1 &
  SIM_PID=$!
  # The simulator is up once it forwards: one entry through it, untimed.
  for _ in $(seq 50); do enter 127.0.0.1:7391 && break; sleep 0.1; done
  for run in 1 2 3 4 5; do
    t0=$(date +%s%N); t1=$(ready_at 127.0.0.1:7391)
    echo "$rtt $(( (t1 - t0) / 1000000 ))"
  done
  kill "$SIM_PID"; wait "$SIM_PID" 2>/dev/null || true
done | python3 -c '
import statistics, sys
rows = {}
for line in sys.stdin:
    rtt, ms = map(int, line.split())
    rows.setdefault(rtt, []).append(ms)
m0, m300 = statistics.median(rows[0]), statistics.median(rows[300])
print("warm entry from process start: %d ms at 0 ms RTT, %d ms at 300 ms RTT: %.1f round trips" % (m0, m300, (m300 - m0) / 300))
'
