#!/usr/bin/env bash
# README command 2: installs what is missing, builds, and runs the whole test suite:
# format and lint checks, unit tests, and the system tests against real Mosquitto, a real
# GStreamer RTSP camera and the real gateway and central binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/bootstrap.sh
echo "test: checking format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "test: building"
# The system tests start the real binaries, so build them before any test runs.
cargo build --workspace --bins --locked
echo "test: running the suite"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one "test result" line per binary).
grep -E '^test result:' "$log" | awk '{p += $4; f += $6} END {printf "tests: %d passed, %d failed\n", p, f}'
exit "$status"
