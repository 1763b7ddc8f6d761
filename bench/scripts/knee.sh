#!/bin/bash
# The capacity of one server core: the demo server pinned to CPU 0 and the
# bots to CPU 1 (bots.sh with PIN=1), at rising bot counts, until a target
# breaks — steady warm-entry p99 over 100 ms, live-update-delay p99 over
# 100 ms, server frame p99 over 50 ms, or any error. Prints one row a run
# (server CPU per player-second and the bots' cores, both with every bot up;
# UDP datagrams per player-second; the steady p99s) and writes
# target/knee/knee.json.
# Usage: bench/scripts/knee.sh [SECONDS] [N...]   (defaults 60; 500 1000 1500 2000 2500 3000)
# BOT_ARGS (default --caches-in-memory --no-audit) and SERVER_ARGS go to bots.sh; B=path runs another build.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-60}
shift || true
COUNTS=("$@")
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(500 1000 1500 2000 2500 3000)
command -v taskset > /dev/null || { echo "knee.sh needs taskset (util-linux)" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "knee.sh needs two CPUs (one for the server, one for the bots)" >&2; exit 1; }
if [ -z "${B:-}" ]; then
  cargo build --release -q -p hoard-demo
  export B=$PWD/target/release/hoard-demo
fi
export BOT_ARGS=${BOT_ARGS:---caches-in-memory --no-audit}
ROOT=$PWD/target/knee
mkdir -p "$ROOT"
for N in "${COUNTS[@]}"; do
  echo "== $N bots, $SECS s, server on CPU 0, bots on CPU 1"
  # Connections ramp in at up to 200 a second, so a run spends at most
  # 15 s of its time arriving.
  OUT="$ROOT/$N" PIN=1 RAMP=${RAMP:-200} bench/scripts/bots.sh "$N" "$SECS" > "$ROOT/$N.log" 2>&1 || true
done
python3 - "$ROOT" "${COUNTS[@]}" <<'PY'
import json, os, sys
root, counts = sys.argv[1], [int(n) for n in sys.argv[2:]]
rows, knee = [], None
for n in counts:
    d = os.path.join(root, str(n))
    try:
        rep = json.load(open(os.path.join(d, "report.json")))
        cpu = json.load(open(os.path.join(d, "cpu.json")))
    except (OSError, ValueError) as e:
        rows.append({"bots": n, "failed": f"no report ({e})"})
        knee = knee or n
        continue
    bots = rep["bots"]
    st = bots.get("steady") or {}
    p99 = lambda k: (st.get(k) or {}).get("p99_ms")
    frame = (rep.get("server_steady") or {}).get("tick_p99_ms")
    errors = sum(bots.get("errors", {}).values())
    broken = []
    if st == {}: broken.append("never all connected")
    if (p99("entries") or 0) > 100: broken.append("entry p99")
    if (p99("update_delay") or 0) > 100: broken.append("update p99")
    if frame is None or frame > 50: broken.append("frame p99")
    if errors: broken.append(f"{errors} errors")
    # The bots' own core full: their scheduling, not the server, sets the
    # latencies from here (the server's capacity is not reached).
    # CPU with every bot up (steady play) where measured, else over the run.
    server_cores = cpu.get("steady_server_cores") or cpu["server_cores"]
    bots_cores = cpu.get("steady_bots_cores") or cpu["bots_cores"]
    if broken and bots_cores >= 0.9: broken.append("bots saturated")
    row = {"bots": n, "server_cores": server_cores, "bots_cores": bots_cores,
           "server_ms_per_player_s": server_cores * 1000 / n,
           "udp_per_player_s": cpu["udp_per_player_s"], "entry_p99_ms": p99("entries"),
           "action_p99_ms": p99("actions"), "update_p99_ms": p99("update_delay"),
           "frame_p99_ms": frame, "errors": errors, "broken": broken}
    rows.append(row)
    if broken and knee is None: knee = n
fmt = lambda v: "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))
cols = ["bots", "server_cores", "server_ms_per_player_s", "bots_cores", "udp_per_player_s",
        "entry_p99_ms", "action_p99_ms", "update_p99_ms", "frame_p99_ms", "errors", "broken"]
print("  ".join(f"{c:>14}" for c in cols))
for r in rows:
    print("  ".join(f"{fmt(r.get(c)) if c != 'broken' else ','.join(r.get(c, [r.get('failed', '')])) or 'ok':>14}" for c in cols))
last_ok = max([r["bots"] for r in rows if not r.get("broken") and "failed" not in r], default=None)
print(f"knee: {last_ok} bots held every target" + (f"; {knee} broke one" if knee else "; none broke"))
json.dump({"rows": rows, "last_ok": last_ok, "first_broken": knee}, open(os.path.join(root, "knee.json"), "w"), indent=1)
PY
