#!/usr/bin/env bash
# Terminal health benchmark: 10,000 simulated terminals heartbeating every 10 s into one
# gateway (p50/p99 latency, gateway CPU and RSS, the fleet summary at central), against nginx
# answering the same requests. Usage: bash deploy/bench-terminals.sh [--quick] [--terminals N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/bootstrap.sh >/dev/null
cargo build --release --workspace --bins --quiet
exec target/release/bench-terminals "$@"
