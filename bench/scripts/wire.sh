#!/bin/bash
# Bytes and datagrams on the wire for entries of the demo meadow (64
# shards, 2,747 objects), handshake and close included: a UDP proxy of this
# script's own (Python, independent of hoard) sits between a fresh
# `hoard-demo client --headless` process and the server and counts every
# datagram's payload both ways. Cold (empty cache), then warm (nothing
# changed); each entry is a new process, so no session ticket. Medians of 5.
# Usage: bench/scripts/wire.sh [OLD_HOARD_DEMO]
#   Builds hoard-demo in release; given an older build's binary, runs it too,
#   interleaved with the new one (each build serves its own clients).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p hoard-demo
NEW=$PWD/target/release/hoard-demo
OLD=${1:-}
W=$(mktemp -d)
PROXY_PID=
cleanup() { kill ${PROXY_PID:-} ${SRV_PID:-} 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

cat > "$W/proxy.py" <<'PY'
# A counting UDP proxy: listen, forward to the upstream, count payload bytes
# and datagrams each way; print the counts as JSON on SIGTERM.
import asyncio, json, signal, sys

listen_port, upstream = int(sys.argv[1]), sys.argv[2]
host, port = upstream.rsplit(":", 1)
counts = {"up_bytes": 0, "up_datagrams": 0, "down_bytes": 0, "down_datagrams": 0}

class Upstream(asyncio.DatagramProtocol):
    def __init__(self, front, client):
        self.front, self.client = front, client
    def datagram_received(self, data, addr):
        counts["down_bytes"] += len(data)
        counts["down_datagrams"] += 1
        self.front.sendto(data, self.client)

class Front(asyncio.DatagramProtocol):
    def __init__(self):
        self.links = {}
    def connection_made(self, transport):
        self.transport = transport
    def datagram_received(self, data, addr):
        counts["up_bytes"] += len(data)
        counts["up_datagrams"] += 1
        link = self.links.get(addr)
        if link is None:
            link = asyncio.ensure_future(loop.create_datagram_endpoint(
                lambda: Upstream(self.transport, addr), remote_addr=(host, int(port))))
            self.links[addr] = link
        link.add_done_callback(lambda f: f.result()[0].sendto(data))

loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
loop.run_until_complete(loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", listen_port)))
def stop():
    print(json.dumps(counts), flush=True)
    loop.stop()
loop.add_signal_handler(signal.SIGTERM, stop)
print("ready", flush=True)
loop.run_forever()
PY

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# One entry through a fresh proxy; prints "<build> <case> <json counts>".
measure() {
  local build=$1 case=$2 bin=$3 cache=$4 port
  port=$(free_port)
  python3 "$W/proxy.py" "$port" "$ADDR" > "$W/proxy.out" &
  PROXY_PID=$!
  for _ in $(seq 100); do grep -q ready "$W/proxy.out" 2>/dev/null && break; sleep 0.05; done
  "$bin" client --headless --exit-after-ready --server "127.0.0.1:$port" --token "$TOKEN" \
    --zone meadow --cache-dir "$cache" > /dev/null 2>&1
  kill -TERM "$PROXY_PID"
  wait "$PROXY_PID" 2>/dev/null || true
  PROXY_PID=
  echo "$build $case $(tail -1 "$W/proxy.out")"
}

builds="new"
[ -n "$OLD" ] && builds="old new"
for run in 1 2 3 4 5; do
  for build in $builds; do
    bin=$NEW
    [ "$build" = old ] && bin=$OLD
    coproc SRV { exec "$bin" server --data "$W/data-$build" --listen 127.0.0.1:0 2>/dev/null; }
    read -r line <&"${SRV[0]}"
    ADDR=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["addr"])' "$line")
    TOKEN=$("$bin" server token --data "$W/data-$build" --player ann)
    rm -rf "$W/cache-$build"
    measure "$build" cold "$bin" "$W/cache-$build"
    measure "$build" warm "$bin" "$W/cache-$build"
    kill "$SRV_PID"; wait "$SRV_PID" 2>/dev/null || true
  done
done > "$W/rows"

python3 - "$W/rows" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    build, case, js = line.split(" ", 2)
    rows.setdefault((build, case), []).append(json.loads(js))
print("%-5s %-5s %10s %10s %8s %8s %10s" % ("build", "entry", "up B", "down B", "up dg", "down dg", "both B"))
for (build, case), ds in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0] != "old")):
    med = lambda k: statistics.median(d[k] for d in ds)
    print("%-5s %-5s %10d %10d %8d %8d %10d" % (build, case, med("up_bytes"), med("down_bytes"),
          med("up_datagrams"), med("down_datagrams"), med("up_bytes") + med("down_bytes")))
PY
