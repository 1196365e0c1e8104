#!/usr/bin/env bash
# README command 1: installs what is missing, builds, and runs the main job on embedded defaults:
# central with its embedded MQTT broker, one gateway, and a simulated RTSP camera, all on this
# machine. Prints where to look; runs until Ctrl-C (or for DEMO_SECONDS seconds, if set).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash deploy/bootstrap.sh
echo "demo: building (release; the first build takes a few minutes)"
cargo build --release --workspace --bins --quiet
bin="$root/target/release"

run="$root/.gridedge-run"
rm -rf "$run"
mkdir -p "$run"
BROKER_PORT=${BROKER_PORT:-18830}
CENTRAL_PORT=${CENTRAL_PORT:-8090}
GATEWAY_PORT=${GATEWAY_PORT:-8080}
CAMERA_PORT=${CAMERA_PORT:-8554}
for p in "$BROKER_PORT" "$CENTRAL_PORT" "$GATEWAY_PORT" "$CAMERA_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "demo: port $p is in use; set BROKER_PORT, CENTRAL_PORT, GATEWAY_PORT or CAMERA_PORT" >&2
    exit 1
  fi
done

cat > "$run/central.toml" <<TOML
[central]
id = "street-command"
name = "Street Grid Management Command Centre (demo)"
[broker.embedded]
listen = "127.0.0.1:$BROKER_PORT"
[storage]
dir = "central-data"
[http]
listen = "127.0.0.1:$CENTRAL_PORT"
TOML

cat > "$run/gateway.toml" <<TOML
[site]
id = "hongxing-community"
name = "Hongxing Community Service Centre (demo)"
[gateway]
id = "gw-hongxing-01"
[uplink]
broker = "mqtt://127.0.0.1:$BROKER_PORT"
health_interval = "5s"
[storage]
dir = "gateway-data"
disk_budget = "256 MiB"
[http]
listen = "127.0.0.1:$GATEWAY_PORT"
[[cameras]]
id = "hall-entrance"
name = "Service hall entrance (simulated)"
url = "rtsp://127.0.0.1:$CAMERA_PORT/cam"
[[sources]]
id = "demo"
name = "Demo event source"
token = { file = "demo.token" }
TOML
echo "demo-token" > "$run/demo.token"

"$bin/fwcfg" check "$run/central.toml"
"$bin/fwcfg" check "$run/gateway.toml"

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "demo: stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "demo: stopped; logs kept in $run"
}
trap cleanup EXIT INT TERM

/usr/bin/python3 tests/fixtures/rtsp_camera.py --port "$CAMERA_PORT" --pattern moving \
  > "$run/camera.out" 2> "$run/camera.log" &
pids+=($!)
"$bin/central" --config "$run/central.toml" > "$run/central.log" 2>&1 &
pids+=($!)
sleep 0.5
"$bin/gateway" --config "$run/gateway.toml" > "$run/gateway.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$CENTRAL_PORT/api/v1/gateways" 2>/dev/null | grep -q '"presence":"online"'; then
    break
  fi
  sleep 0.2
done

# Hand the gateway an event, as a door controller would; it travels to central.
curl -fsS -X POST "http://127.0.0.1:$GATEWAY_PORT/api/v1/events" -H "Authorization: Bearer demo-token" \
  -H "Content-Type: application/json" \
  -d '[{"class":"alert","kind":"door.forced","payload":{"door":"archive room","note":"demo"}}]' >/dev/null || true
sleep 1

cat <<TXT

GridEdge demo is running.
  central   http://127.0.0.1:$CENTRAL_PORT/api/v1/gateways   (gateways and their health)
            http://127.0.0.1:$CENTRAL_PORT/metrics           (Prometheus metrics)
            mqtt://127.0.0.1:$BROKER_PORT                    (embedded broker)
            http://127.0.0.1:$CENTRAL_PORT/api/v1/events?gateway=gw-hongxing-01   (events stored)
  gateway   http://127.0.0.1:$GATEWAY_PORT/api/v1/cameras   (camera health)
            http://127.0.0.1:$GATEWAY_PORT/healthz
            http://127.0.0.1:$GATEWAY_PORT/metrics
  camera    rtsp://127.0.0.1:$CAMERA_PORT/cam              (simulated, H.264 moving pattern)
  logs      $run/*.log
Gateways seen by central now:
TXT
curl -fsS "http://127.0.0.1:$CENTRAL_PORT/api/v1/gateways" || echo "(central not answering yet; see $run/central.log)"
sleep 2
echo
echo "Camera health at the gateway:"
curl -fsS "http://127.0.0.1:$GATEWAY_PORT/api/v1/cameras" || true
echo
echo "Events central stored from the gateway (one posted by the demo):"
curl -fsS "http://127.0.0.1:$CENTRAL_PORT/api/v1/events?gateway=gw-hongxing-01" || true
echo
cat <<TXT
Post more: curl -X POST http://127.0.0.1:$GATEWAY_PORT/api/v1/events -H 'Authorization: Bearer demo-token' \\
             -H 'Content-Type: application/json' -d '[{"class":"telemetry","kind":"x","payload":{}}]'
TXT
echo "Press Ctrl-C to stop."
if [ -n "${DEMO_SECONDS:-}" ]; then
  sleep "$DEMO_SECONDS"
else
  wait
fi
