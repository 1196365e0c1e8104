#!/usr/bin/env bash
# Transcode benchmark: the CPU of one 1080p H.265 camera turned into H.264 for a browser
# without H.265, against ffmpeg -c:v libx264 -preset ultrafast at the same size.
# Usage: bash deploy/bench-transcode.sh [--quick] [--seconds N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/bootstrap.sh >/dev/null
cargo build --release --workspace --bins --quiet
exec target/release/bench-transcode "$@"
