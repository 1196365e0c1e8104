#!/usr/bin/env bash
# Video sharing benchmark: first frame after a LAN open or a share request, the latency central's
# relay adds, and the relay's CPU and RSS with 1, 10 and 50 viewers, against ffmpeg HLS served by
# nginx. Usage: bash deploy/bench-video.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/bootstrap.sh >/dev/null
cargo build --release --workspace --bins --quiet
exec target/release/bench-video "$@"
