#!/usr/bin/env bash
# Runs Kite's coverage-guided fuzz targets (fuzz/, cargo fuzz, libFuzzer,
# AddressSanitizer) one after the other.
#
# Usage:
#   scripts/fuzz.sh [SECONDS] [TARGET...]   each target for SECONDS (default 600)
#   scripts/fuzz.sh --smoke                 build every target (debug, no sanitizer),
#                                           run each 5 s (scripts/test.sh, CI)
#   scripts/fuzz.sh --list                  the targets
#
# Needs the nightly toolchain (`cargo +nightly`) and cargo-fuzz
# (`cargo install cargo-fuzz --locked`, done here when missing).
#
# The committed corpus (fuzz/corpus/<target>) is the starting point; the
# inputs a run finds go to target/fuzz-corpus/<target> (not committed); set
# KITE_FUZZ_MERGE=1 to fold the ones that add coverage back into
# fuzz/corpus. A crash, a leak, a timeout or an out-of-memory stops that
# target: its input is in fuzz/artifacts/<target>/, and the script exits
# non-zero after running the rest. Reproduce one with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

targets_all=(p2p_serve p2p_client tx_block genesis_config rpc mempool node_files)

if [ "${1:-}" = "--list" ]; then
  printf '%s\n' "${targets_all[@]}"
  exit 0
fi

smoke=0
seconds=600
if [ "${1:-}" = "--smoke" ]; then
  smoke=1
  seconds=5
  shift
elif [[ "${1:-}" =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${targets_all[@]}")
for t in "${targets[@]}"; do
  printf '%s\n' "${targets_all[@]}" | grep -qx "$t" || { echo "fuzz: no target $t (see --list)"; exit 2; }
done

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: the nightly toolchain is missing (cargo +nightly); fuzzing needs it"
  exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

cd fuzz
# The starting corpus is committed; regenerate it only when it is missing.
for t in "${targets[@]}"; do
  if [ "$t" != mempool ] && [ -z "$(ls -A "corpus/$t" 2>/dev/null)" ]; then
    echo "fuzz: writing the seed corpus"
    cargo +nightly run --quiet --locked --bin seeds -- corpus
    break
  fi
done

echo "fuzz: building ${#targets[@]} targets"
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
# Target by target: the crate's other binary (seeds) is not a fuzz target.
for t in "${targets[@]}"; do
  if [ $smoke = 1 ]; then
    # Quick to build (no optimisation, no sanitizer): the smoke run only
    # shows that every target builds, starts and reads its corpus.
    cargo +nightly fuzz build --dev --sanitizer none "$t"
  else
    cargo +nightly fuzz build "$t"
  fi
done
if [ $smoke = 1 ]; then bin=target/$triple/debug; else bin=target/$triple/release; fi

failed=()
summary=()
for t in "${targets[@]}"; do
  work="$root/target/fuzz-corpus/$t"
  mkdir -p "$work" "corpus/$t" "artifacts/$t"
  echo "== fuzz $t for ${seconds}s"
  log="$root/target/fuzz-$t.log"
  start=$(date +%s)
  # -rss_limit_mb: every decoder is bounded well below this; more is a
  # finding. -timeout: one input taking 10 s is a finding too.
  # The binary built above, run directly: editing the sources meanwhile
  # does not rebuild it in the middle of a long run.
  if ASAN_OPTIONS=detect_odr_violation=0 "$bin/$t" "$work" "corpus/$t" \
      -artifact_prefix="artifacts/$t/" -max_total_time="$seconds" \
      -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
    summary+=("$t: ok, $(( $(date +%s) - start ))s, ${runs:-?} runs, coverage ${cov:-?} edges")
  else
    failed+=("$t")
    summary+=("$t: FAILED, see $log and fuzz/artifacts/$t/")
    tail -40 "$log"
  fi
  if [ "${KITE_FUZZ_MERGE:-0}" = 1 ] && [ $smoke = 0 ]; then
    ASAN_OPTIONS=detect_odr_violation=0 "$bin/$t" -merge=1 "corpus/$t" "$work" >/dev/null 2>&1 || true
  fi
done

echo "== fuzz summary"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}"
  exit 1
fi
