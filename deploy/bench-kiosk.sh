#!/usr/bin/env bash
# Kiosk benchmark: service search and grid lookup against the gateway's replica, side by side
# with nginx serving the same answers from disk, under wrk. Usage: bash deploy/bench-kiosk.sh
# [--quick] [--seconds N] [--connections N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/bootstrap.sh >/dev/null
cargo build --release --workspace --bins --quiet
exec target/release/bench-kiosk "$@"
