#!/usr/bin/env bash
# Central benchmark: 1,000 simulated gateways x 50 devices every 10 s plus a burst of 100,000 events
# into central (embedded broker), against Mosquitto with a decoding, fsyncing, acknowledging consumer.
# Usage: bash deploy/bench-central.sh [--quick] [--gateways N] [--devices N] [--seconds S] [--burst N]
#        bash deploy/bench-central.sh --soak [--quick] [--seconds S] [--retain S]   (an hour with retention on)
#        bash deploy/bench-central.sh --store postgres [--quick] [--replicas 1,2,3]   (sled beside PostgreSQL replicas)
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/bootstrap.sh >/dev/null
cargo build --release --workspace --bins --quiet
exec target/release/bench-central "$@"
