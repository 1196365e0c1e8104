#!/usr/bin/env bash
# Camera benchmark: the GridEdge gateway watching N replayed 1080p cameras, against one ffmpeg
# per camera (copy, Frigate-style fps=5 decode, keyframe-only decode). CPU s per camera-minute
# and peak RSS per camera, with ratios.
# Usage: bash deploy/bench-cameras.sh [--quick] [--cameras 16,32] [--seconds 40]
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/bootstrap.sh >/dev/null
cargo build --release --workspace --bins --quiet
exec target/release/bench-cameras "$@"
