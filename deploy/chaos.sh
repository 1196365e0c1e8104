#!/usr/bin/env bash
# Chaos benchmark: kill -9 of the gateway, of central and of both, and WAN cuts, at random
# moments under load; then a full accounting (acked, stored, lost, duplicated, time to drain)
# for GridEdge and for a Mosquitto bridge played the same plan. Exits non-zero when GridEdge
# lost or duplicated an event.
# Usage: bash deploy/chaos.sh [--quick] [--cycles N] [--seed S] [--rate R]
#        [--faults edge,central,both,wan] [--gridedge-only] [--keep-files]
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/bootstrap.sh >/dev/null
cargo build --release --workspace --bins --quiet
exec target/release/bench-chaos "$@"
