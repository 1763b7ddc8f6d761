#!/bin/bash
# Zone entries of the shipped world through the demo's own processes on
# loopback: cold, warm (nothing changed), and after the harvest-festival mod
# was applied offline (one shard changed). Medians of 5 runs.
# Usage: bench/scripts/demo-entries.sh   (builds hoard-demo in release first)
# B=path/to/hoard-demo runs another build (e.g. an older commit's).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${B:-}" ]; then
  cargo build --release -q -p hoard-demo
  B=target/release/hoard-demo
fi
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
start_server() {
  coproc SRV { exec $B server --data "$1" --listen 127.0.0.1:0 2>/dev/null; }
  local line; read -r line <&"${SRV[0]}"
  ADDR=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["addr"])' "$line")
}
enter() { $B client --headless --exit-after-ready --server "$ADDR" --token "$TOKEN" --zone meadow --cache-dir "$1"; }
for run in 1 2 3 4 5; do
  W=$(mktemp -d)
  start_server "$W/data"
  TOKEN=$($B server token --data "$W/data" --player ann)
  echo "cold $(enter "$W/cache")" >> "$OUT"
  echo "warm $(enter "$W/cache")" >> "$OUT"
  kill "$SRV_PID"; wait "$SRV_PID" 2>/dev/null || true
  $B world apply --data "$W/data" --mod assets/mods/harvest-festival > /dev/null
  start_server "$W/data"
  echo "mod $(enter "$W/cache")" >> "$OUT"
  kill "$SRV_PID"; wait "$SRV_PID" 2>/dev/null || true
  rm -rf "$W"
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    kind, js = line.split(" ", 1)
    rows.setdefault(kind, []).append(json.loads(js))
print("%-5s %-22s %8s %8s %8s %3s %5s" % ("entry", "fresh/delta/snapshot", "objects", "rx B", "tx B", "RTs", "ms"))
for kind, ds in rows.items():
    med = lambda k: statistics.median(d[k] for d in ds)
    d = ds[0]
    print("%-5s %-22s %8d %8d %8d %3d %5.0f" % (kind, "%d/%d/%d" % (d["shards_fresh"], d["shards_delta"], d["shards_snapshot"]),
          d["objects"], med("bytes_rx"), med("bytes_tx"), d["round_trips"], med("elapsed_ms")))
PY
