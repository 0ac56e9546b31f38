#!/usr/bin/env bash
# Stop the testnet started by testnet/up.sh: exactly the processes whose
# pids it recorded (and only if they still run `kite start` on that home).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
pids_file="${KITE_TESTNET_DIR:-$here/.net}/pids"
[ -f "$pids_file" ] || { echo "down.sh: no testnet recorded in $pids_file"; exit 0; }

alive() { kill -0 "$1" 2>/dev/null; }
ours() { # pid home: the process is a kite node on that home
  [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' < "/proc/$1/cmdline" | grep -q -- "start --home $2"
}

stopping=()
while read -r pid home; do
  [ -n "${pid:-}" ] || continue
  if alive "$pid" && ours "$pid" "$home"; then
    kill -TERM "$pid" 2>/dev/null && stopping+=("$pid")
  fi
done < "$pids_file"

for _ in $(seq 1 100); do
  left=()
  for pid in "${stopping[@]}"; do alive "$pid" && left+=("$pid"); done
  [ ${#left[@]} -eq 0 ] && break
  sleep 0.1
done
for pid in "${stopping[@]}"; do
  if alive "$pid"; then echo "down.sh: $pid did not stop in 10s; killing it"; kill -KILL "$pid" 2>/dev/null; fi
done
: > "$pids_file"
echo "stopped ${#stopping[@]} node(s)"
