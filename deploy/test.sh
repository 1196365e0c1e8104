#!/usr/bin/env bash
# README command 2: installs what is missing, builds, and runs the whole test suite:
# format and lint checks, unit tests, and the system tests against real Mosquitto, a real
# GStreamer RTSP camera, headless Chromium and the real gateway and central binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/bootstrap.sh
echo "test: checking format and lints"
# A one-off build gains nothing from incremental state; it only costs disk.
export CARGO_INCREMENTAL=0
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "test: building"
# The system tests start the real binaries, so build them before any test runs.
cargo build --workspace --bins --locked
echo "test: running the suite"
# cargo-nextest runs every test in its own process: the system tests start brokers in-process
# (rumqttd cannot be shut down), so isolation keeps them independent and faster. Without
# nextest, cargo's own runner works too.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast --test-threads 4
else
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  set +e
  cargo test --workspace --locked 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  set -e
  # One closing line over every test binary (cargo prints one "test result" line per binary).
  grep -E '^test result:' "$log" | awk '{p += $4; f += $6} END {printf "tests: %d passed, %d failed\n", p, f}'
  exit "$status"
fi
