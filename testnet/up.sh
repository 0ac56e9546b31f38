#!/usr/bin/env bash
# Start a local Kite testnet on 127.0.0.1.
#   testnet/up.sh [--validators N] [--sentries M] [--archival K] [--base-port P]
# Builds the release binary once, writes the homes into testnet/.net, starts
# every node in the background (log: <home>/node.log, pid: <home>/node.pid),
# waits until all nodes hold the same block at height 2, prints the nodes.
# testnet/down.sh stops exactly these processes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
net="${KITE_TESTNET_DIR:-$here/.net}"
validators=4 sentries=1 archival=1 base_port=26600 wait_secs=${KITE_TESTNET_WAIT:-90}
while [ $# -gt 0 ]; do
  case "$1" in
    --validators) validators="$2"; shift 2 ;;
    --sentries) sentries="$2"; shift 2 ;;
    --archival) archival="$2"; shift 2 ;;
    --base-port) base_port="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "up.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ -f "$net/pids" ] && [ -s "$net/pids" ]; then
  echo "up.sh: a testnet seems to run already ($net/pids); run testnet/down.sh first" >&2
  exit 1
fi

kite="${KITE_BIN:-}"
if [ -z "$kite" ]; then
  echo "== building the release binary"
  (cd "$root" && cargo build --release --locked -p kite)
  kite="$root/target/release/kite"
fi

"$kite" testnet init --out "$net" --force --validators "$validators" --sentries "$sentries" \
  --archival "$archival" --base-port "$base_port"

: > "$net/pids"
total=$((validators + sentries + archival))
for i in $(seq 0 $((total - 1))); do
  home="$net/node$i"
  nohup "$kite" start --home "$home" > "$home/node.log" 2>&1 &
  echo "$!" > "$home/node.pid"
  echo "$! $home" >> "$net/pids"
done

echo "== waiting for every node to commit height 2 (at most ${wait_secs}s)"
if ! "$kite" testnet wait --net "$net" --height 2 --timeout "$wait_secs"; then
  echo "up.sh: the testnet did not come up; last log lines:" >&2
  for i in $(seq 0 $((total - 1))); do
    echo "--- node$i" >&2
    tail -n 15 "$net/node$i/node.log" >&2 || true
  done
  "$here/down.sh" >&2 || true
  exit 1
fi
"$kite" testnet status --net "$net"
echo "faucet key: $net/faucet.key   stop with: testnet/down.sh"
