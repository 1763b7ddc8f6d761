#!/bin/bash
# A load test on loopback: the demo server (with metrics) and N bots in one
# other process, warm caches (each bot starts from a copy of a cache that
# holds all four zones), changing zones every 10-20 s and acting once a
# second. Writes the report (report.json, report.html) and a headless
# Chromium screenshot of it under target/bots-N/.
# Usage: bench/scripts/bots.sh [N] [SECONDS]   (defaults 1000 60; builds first)
# SERVER_ARGS adds flags to the server (e.g. SERVER_ARGS="--transient-hz 0");
# With perf (Debian's linux-perf) able to count system calls, the server's
# are counted for 10 s once every bot is up (syscalls per player-second).
# Both sides' CPU is reported over the whole run and over 10 s with every
# bot up (steady play: the bots' setup and the ramp left out), per player.
# PROFILE=1 samples the server with perf (Debian's linux-perf) for 20 s once
# the bots are up, and writes the hottest functions to profile.txt.
# B=path/to/hoard-demo runs another build (e.g. an older commit's).
# BOT_ARGS adds flags to the bots (e.g. BOT_ARGS=--caches-in-memory).
# RTT_MS=n puts the bots behind `hoard-demo netsim` (that round trip, no
# bandwidth cap): what a server sees of players on real paths (quinn asks
# clients for ACK delays up to the round trip; on bare loopback, 25 ms).
# PIN=1 pins the server to CPU 0 and the bots to CPU 1 (taskset): one core
# each, so the server's capacity is measured apart from the bots' (see
# bench/scripts/knee.sh).
# The server's store is on the disk (its durable commits are what is
# measured); the bots' caches are on tmpfs (/dev/shm) when there is one:
# each player's cache is on their own machine's disk, and 1,000 caches'
# fsyncs on the server's disk queue the server's commits behind them (and
# theirs behind the server's). BOTS_DIR=path puts them elsewhere.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-1000}
SECS=${2:-60}
if [ -z "${B:-}" ]; then
  cargo build --release -q -p hoard-demo
  B=$PWD/target/release/hoard-demo
fi
OUT=${OUT:-$PWD/target/bots-$N}
export OUT
W=$(mktemp -d)
if [ -z "${BOTS_DIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then BOTS_DIR=/dev/shm; fi
C=$(mktemp -d -p "${BOTS_DIR:-$W}")
trap 'kill "$SRV_PID" 2>/dev/null || true; rm -rf "$W" "$C"' EXIT
mkdir -p "$OUT"
SRV_PIN=
BOT_PIN=
if [ -n "${PIN:-}" ]; then SRV_PIN="taskset -c 0"; BOT_PIN="taskset -c 1"; fi
coproc SRV { exec $SRV_PIN $B server --data "$W/data" --listen 127.0.0.1:0 --metrics 127.0.0.1:0 \
  --max-connections $((N + 100)) --max-connections-per-ip $((N + 100)) ${SERVER_ARGS:-} 2>"$OUT/server.log"; }
read -r line <&"${SRV[0]}"
ADDR=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["addr"])' "$line")
METRICS=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["metrics"])' "$line")
echo "server $ADDR (pid $SRV_PID), metrics $METRICS"
SERVER_ADDR=$ADDR
if [ -n "${RTT_MS:-}" ]; then
  coproc SIM { exec $B netsim --listen 127.0.0.1:0 --upstream "$SERVER_ADDR" --rtt-ms "$RTT_MS" --rate-mbit 0 2>"$OUT/netsim.log"; }
  read -r line <&"${SIM[0]}"
  ADDR=$(echo "$line" | sed -E 's/^netsim: ([^ ]+) .*/\1/')
  # Its per-second lines are drained, or a full pipe would stall it.
  cat <&"${SIM[0]}" > "$OUT/netsim.out" &
  trap 'kill "$SRV_PID" "$SIM_PID" 2>/dev/null || true; rm -rf "$W" "$C"' EXIT
  echo "bots reach it through netsim $ADDR (round trip $RTT_MS ms)"
fi
# One bot tours the four zones to make the warm cache.
$BOT_PIN $B bots --server "$ADDR" --server-data "$W/data" --clients 1 --duration 30 \
  --zone-change-every 5-6 --work "$C/seed" > /dev/null
if [ -n "${PROFILE:-}" ]; then
  ( sleep $((N / 100 + 10)); perf record -F 199 -g -p "$SRV_PID" -o "$OUT/server.perf" -- sleep 20 2>/dev/null
    perf report -i "$OUT/server.perf" --stdio --no-children --percent-limit 1 2>/dev/null | grep -v '^$' | head -150 > "$OUT/profile.txt" ) &
fi
# Every bot is up this many seconds after the bots start (the ramp, and
# slack): when the steady 10 s windows below begin.
ALL_UP_AFTER=$((N / ${RAMP:-100} + 10))
echo 0 > "$W/syscalls"
if [ "$SECS" -ge 30 ] && perf stat -e raw_syscalls:sys_enter -x, -- true > /dev/null 2>&1; then
  ( sleep "$ALL_UP_AFTER"; perf stat -e raw_syscalls:sys_enter -x, -p "$SRV_PID" -- sleep 10 2>&1 >/dev/null \
      | awk -F, '/raw_syscalls/ {print $1}' > "$W/syscalls.tmp" && mv "$W/syscalls.tmp" "$W/syscalls" ) &
fi
# CPU of the server and of the bots' process over 10 s with every bot up
# (the bots' setup — copying a warm cache for each — and the ramp are not
# in it): what a player costs each side in steady play.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
( sleep "$ALL_UP_AFTER"
  BOTS_PID=$(pgrep -n -f -- "bots --server $ADDR .*--clients $N " || true)
  [ -n "$BOTS_PID" ] || exit 0
  S0=$(cpu_ticks "$SRV_PID"); B0=$(cpu_ticks "$BOTS_PID"); T0=$(date +%s.%N)
  sleep 10
  S1=$(cpu_ticks "$SRV_PID"); B1=$(cpu_ticks "$BOTS_PID"); T1=$(date +%s.%N)
  python3 -c 'import sys,os; s0,s1,b0,b1,t0,t1=map(float,sys.argv[1:]); hz=os.sysconf("SC_CLK_TCK"); print((s1-s0)/hz/(t1-t0), (b1-b0)/hz/(t1-t0))' \
    "$S0" "$S1" "$B0" "$B1" "$T0" "$T1" > "$W/steady.tmp" && mv "$W/steady.tmp" "$W/steady" ) &
SRV_CPU_BEFORE=$(ps -o times= -p "$SRV_PID")
# UDP datagrams sent on this machine (all of it goes over loopback between
# the server and the bots; the machine's other services add little).
udp_out() { awk '/^Udp: [0-9]/ {print $5}' /proc/net/snmp; }
UDP_BEFORE=$(udp_out)
START=$(date +%s.%N)
/usr/bin/time -o "$W/bots.time" -f "%U %S" \
$BOT_PIN $B bots --server "$ADDR" --server-data "$W/data" --clients "$N" --duration "$SECS" --ramp ${RAMP:-100} \
  --zone-change-every 10-20 --actions-per-sec 1 --warm-from "$C/seed/bot-0" --work "$C/bots" ${BOT_ARGS:-} \
  --metrics "$METRICS" --report "$OUT" | tee "$OUT/table.txt"
ps -o rss= -p "$SRV_PID" | awk '{print "server RSS after the run: " $1 " KiB"}' | tee -a "$OUT/table.txt"
# CPU used during the bots' run, in cores (CPU seconds over wall seconds).
python3 - "$START" "$SRV_CPU_BEFORE" "$(ps -o times= -p "$SRV_PID")" "$(cat "$W/bots.time")" \
  "$UDP_BEFORE" "$(udp_out)" "$N" "$(cat "$W/syscalls" 2>/dev/null || echo 0)" "$(cat "$W/steady" 2>/dev/null || true)" <<'PY' | tee -a "$OUT/table.txt"
import sys, time
start, before, after, bots = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split()
udp_before, udp_after, n = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
syscalls = int(sys.argv[8] or 0)
steady = [float(v) for v in sys.argv[9].split()] if len(sys.argv) > 9 and sys.argv[9].strip() else None
wall = time.time() - start
print(f"cores used over {wall:.0f} s: server {(after - before) / wall:.2f}, bots process {(float(bots[0]) + float(bots[1])) / wall:.2f}")
if steady:
    print(f"cores used over 10 s with every bot up: server {steady[0]:.3f} ({steady[0] * 1000 / n:.3f} ms per player-second), "
          f"bots process {steady[1]:.3f} ({steady[1] * 1000 / n:.3f} ms per bot-second)")
print(f"UDP datagrams over {wall:.0f} s, both ways: {(udp_after - udp_before) / wall:.0f}/s, {(udp_after - udp_before) / wall / n:.1f} per player-second")
if syscalls:
    print(f"server system calls over 10 s with every bot up: {syscalls / 10:.0f}/s, {syscalls / 10 / n:.1f} per player-second")
import json, os
with open(os.path.join(os.environ["OUT"], "cpu.json"), "w") as f:
    json.dump({"wall_s": wall, "server_cores": (after - before) / wall,
               "server_syscalls_per_player_s": syscalls / 10 / n if syscalls else None,
               "bots_cores": (float(bots[0]) + float(bots[1])) / wall,
               "udp_per_player_s": (udp_after - udp_before) / wall / n,
               "steady_server_cores": steady[0] if steady else None,
               "steady_bots_cores": steady[1] if steady else None}, f)
PY
if command -v chromium > /dev/null; then
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1360,1500 \
    --screenshot="$OUT/report.png" "file://$OUT/report.html" 2>/dev/null
  echo "screenshot: $OUT/report.png"
fi
