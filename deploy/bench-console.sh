#!/usr/bin/env bash
# Console benchmark: the case queue with 100,000 cases against the same pages from PostgreSQL,
# and the street's map of 1,021 grids drawn in headless Chromium against Leaflet's own GeoJSON
# layer. Usage: bash deploy/bench-console.sh [--quick] [--cases N] [--requests N] [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/bootstrap.sh >/dev/null
cargo build --release --workspace --bins --quiet
exec target/release/bench-console "$@"
