#!/usr/bin/env bash
# Alert clips benchmark: the memory of a camera's 10 s ring against the bytes it holds, and
# writing a 20 s clip against ffmpeg -c copy. Usage: bash deploy/bench-clips.sh [--quick] [--clips N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/bootstrap.sh >/dev/null
cargo build --release --workspace --bins --quiet
exec target/release/bench-clips "$@"
