#!/usr/bin/env bash
# Kite's one test command: format check, clippy with warnings as errors, and
# the whole test suite (cargo-nextest when installed, else cargo test).
# Usage: scripts/test.sh            (from anywhere inside the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
  # nextest does not run doc tests: run them first, so that the run ends
  # with nextest's summary of the whole suite.
  echo "== cargo test --doc"
  cargo test --workspace --locked --doc
  echo "== cargo nextest run"
  cargo nextest run --workspace --locked --no-fail-fast
else
  echo "== cargo test (cargo-nextest not installed)"
  cargo test --workspace --locked --no-fail-fast
fi

# The fuzz targets (fuzz/, nightly + cargo-fuzz): built and run a few
# seconds each so they cannot rot. Long runs: scripts/fuzz.sh.
if cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "== fuzz targets (smoke)"
  scripts/fuzz.sh --smoke
else
  echo "== fuzz targets: skipped (needs the nightly toolchain and cargo-fuzz; .ci/run installs cargo-fuzz)"
fi
