#!/usr/bin/env bash
# Central as two replicas on one machine: PostgreSQL and the broker started in temporary
# folders, two central replicas, two gateways with a trickle of events; prints where to look,
# kills one replica to show the other take over, and runs until Ctrl-C (or DEMO_SECONDS).
# DEMO_KILL=0 keeps both replicas.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/bootstrap.sh
cargo build --release --workspace --bins --quiet
exec target/release/demo-cluster "$@"
