#!/usr/bin/env bash
# Backbone benchmark: GridEdge gateway -> embedded broker -> central against a Mosquitto bridge
# (edge Mosquitto with persistence, QoS 1 bridge, central Mosquitto, fsyncing subscriber).
# Usage: bash deploy/bench-backbone.sh [--quick] [--events N] [--backlog N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/bootstrap.sh >/dev/null
cargo build --release --workspace --bins --quiet
exec target/release/bench-backbone "$@"
