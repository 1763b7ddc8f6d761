#!/bin/bash
# The world tools on the shipped-size world (4 zones × 700 objects) and a
# load-test world (4 zones × 100,000): median seconds of 3 runs each.
# Usage: bench/scripts/demo-world.sh   (builds hoard-demo in release first)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p hoard-demo
B=target/release/hoard-demo
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
secs() { local s e; s=$(date +%s%N); "$@" > /dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
declare -A times
steps=(generate-small validate-small import-small render-small generate-big validate-big import-big export-big)
for run in 1 2 3; do
  rm -rf "${W:?}"/*
  times[generate-small]+="$(secs $B world generate --zones 4 --seed 1 --out $W/small) "
  times[validate-small]+="$(secs $B world validate --world $W/small) "
  times[import-small]+="$(secs $B world import --data $W/d-small --world $W/small) "
  times[render-small]+="$(secs $B world render --zone meadow --out $W/m.png --world $W/small) "
  times[generate-big]+="$(secs $B world generate --zones 4 --objects-per-zone 100000 --seed 1 --out $W/big) "
  times[validate-big]+="$(secs $B world validate --world $W/big) "
  times[import-big]+="$(secs $B world import --data $W/d-big --world $W/big) "
  times[export-big]+="$(secs $B world export --data $W/d-big --out $W/big-out) "
done
printf '%-16s %s\n' step "median ms (3 runs)"
for step in "${steps[@]}"; do
  printf '%-16s %s\n' "$step" "$(echo ${times[$step]} | tr ' ' '\n' | sort -n | sed -n 2p)"
done
printf 'objects: small %s, big %s; files: small %s, big %s\n' \
  "$($B world validate --world $W/small | grep -o '[0-9]* objects')" \
  "$($B world validate --world $W/big | grep -o '[0-9]* objects')" \
  "$(du -sh $W/small | cut -f1)" "$(du -sh $W/big | cut -f1)"
diff -r "$W/big" "$W/big-out" > /dev/null && echo "export of the imported big world == its generated files"
