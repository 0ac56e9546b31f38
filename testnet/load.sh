#!/usr/bin/env bash
# Drive signed transfers at the testnet started by testnet/up.sh and print
# submitted/committed tx/s and latency percentiles.
#   testnet/load.sh [--txs N] [--senders K] [--rate R] [--batch B] [--json]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
net="${KITE_TESTNET_DIR:-$here/.net}"
kite="${KITE_BIN:-$root/target/release/kite}"
[ -f "$net/testnet.json" ] || { echo "load.sh: no testnet in $net; run testnet/up.sh first" >&2; exit 1; }
# Every node that takes txs (not the archival ones).
rpcs=$(grep -B4 '"rpc"' "$net/testnet.json" | awk '/"role"/ {role=$2} /"rpc"/ {gsub(/[",]/,"",$2); if (role !~ /archival/) print $2}' | paste -sd, -)
exec "$kite" bench load --rpc "$rpcs" --key "$net/faucet.key" "$@"
