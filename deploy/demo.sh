#!/usr/bin/env bash
# README command 1: installs what is missing, builds, and runs the main job on embedded defaults:
# central with its embedded MQTT broker, one gateway, two simulated RTSP cameras (one with
# a moving object in a motion zone, one covered) and simulated terminals (kiosks heartbeating,
# one with its printer out; a probed video terminal; a screen that is off), all on this machine. Prints where to look; runs until Ctrl-C (or for DEMO_SECONDS seconds, if set).
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
BROKER_TLS_PORT=${BROKER_TLS_PORT:-18883}
CENTRAL_PORT=${CENTRAL_PORT:-8090}
GATEWAY_PORT=${GATEWAY_PORT:-8080}
CAMERA_PORT=${CAMERA_PORT:-8554}
CAMERA2_PORT=${CAMERA2_PORT:-8555}
TERMINAL_PORT=${TERMINAL_PORT:-8081}
SCREEN_PORT=${SCREEN_PORT:-8082}
for p in "$BROKER_PORT" "$BROKER_TLS_PORT" "$CENTRAL_PORT" "$GATEWAY_PORT" "$CAMERA_PORT" "$CAMERA2_PORT" "$TERMINAL_PORT" "$SCREEN_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "demo: port $p is in use; set BROKER_PORT, BROKER_TLS_PORT, CENTRAL_PORT, GATEWAY_PORT, CAMERA_PORT, CAMERA2_PORT, TERMINAL_PORT or SCREEN_PORT" >&2
    exit 1
  fi
done

# The console's demo logins (the passwords are printed at the end; central keeps only hashes).
ADMIN_PASSWORD=${ADMIN_PASSWORD:-demo-admin-pass}
SUPERVISOR_PASSWORD=${SUPERVISOR_PASSWORD:-demo-super-pass}
admin_hash=$(printf '%s\n' "$ADMIN_PASSWORD" | "$bin/central" operator hash)
super_hash=$(printf '%s\n' "$SUPERVISOR_PASSWORD" | "$bin/central" operator hash)
# An API token for this script (central keeps only its SHA-256); the operator API needs one.
api_token=$("$bin/central" operator token --name demo-script --role administrator 2>"$run/api-token.entry")
printf '%s\n' "$api_token" > "$run/api-token"
chmod 600 "$run/api-token"
api_entry=$(grep -A3 '^\[\[api_tokens\]\]' "$run/api-token.entry")
# The street's certificates, as an installer makes them (deploy/INSTALL.md): a CA, the broker's
# certificate, the gateway's (CN = its id), an empty revocation list; and central's signing key,
# whose public half the gateway trusts. The gateway connects over TLS with its certificate.
"$bin/fwcfg" certs ca "$run/pki" --name "GridEdge demo street CA" >/dev/null
"$bin/fwcfg" certs server "$run/pki" broker --host localhost --host 127.0.0.1 >/dev/null
"$bin/fwcfg" certs client "$run/pki" gw-hongxing-01 >/dev/null
"$bin/fwcfg" certs crl "$run/pki" >/dev/null
"$bin/fwcfg" certs signing-key "$run/keys" >/dev/null
# central's operator API with the token
capi() { curl -fsS -H "Authorization: Bearer $api_token" "$@"; }
cat > "$run/central.toml" <<TOML
[central]
id = "street-command"
name = "Street Grid Management Command Centre (demo)"
[broker.embedded]
listen = "127.0.0.1:$BROKER_PORT"
tls_listen = "127.0.0.1:$BROKER_TLS_PORT"
tls = { ca_file = "pki/ca.pem", cert_file = "pki/broker.pem", key_file = "pki/broker.key" }
[storage]
dir = "central-data"
[http]
listen = "127.0.0.1:$CENTRAL_PORT"
[identity]
signing_key_file = "keys/central-signing.key"
crl_file = "pki/crl.pem"
[[operators]]
name = "admin"
role = "administrator"
password_hash = "$admin_hash"
[[operators]]
name = "duty"
role = "supervisor"
password_hash = "$super_hash"
$api_entry
TOML

cat > "$run/gateway.toml" <<TOML
[site]
id = "hongxing-community"
name = "Hongxing Community Service Centre (demo)"
[gateway]
id = "gw-hongxing-01"
[uplink]
broker = "mqtts://localhost:$BROKER_TLS_PORT"
tls = { ca_file = "pki/ca.pem", cert_file = "pki/gw-hongxing-01.pem", key_file = "pki/gw-hongxing-01.key" }
central_key_file = "keys/central-signing.pub"
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
[cameras.snapshot]
interval = "5s"
[cameras.sensing]
hold_down = "10s"
[[cameras.sensing.motion_zones]]
name = "counter"
polygon = [[0.08, 0.08], [0.37, 0.08], [0.37, 0.37], [0.08, 0.37]]
[[cameras]]
id = "archive-room"
name = "Archive room (simulated, lens covered)"
url = "rtsp://127.0.0.1:$CAMERA2_PORT/cam"
[cameras.sensing]
hold_down = "5s"
[[terminals]]
id = "security-room"
name = "Security room video terminal"
kind = "video_terminal"
health = { mode = "heartbeat", interval = "5s", misses_before_offline = 3 }
token = { file = "viewer.token" }
[[terminals]]
id = "kiosk-hall-1"
name = "Service hall kiosk 1 (simulated)"
kind = "kiosk"
health = { mode = "heartbeat", interval = "5s", misses_before_offline = 3 }
token = { file = "kiosk-1.token" }
[[terminals]]
id = "kiosk-hall-2"
name = "Service hall kiosk 2 (simulated, printer out of paper)"
kind = "kiosk"
health = { mode = "heartbeat", interval = "5s", misses_before_offline = 3 }
token = { file = "kiosk-2.token" }
[[terminals]]
id = "video-reception"
name = "Remote reception video terminal (simulated, probed)"
kind = "video_terminal"
health = { mode = "http_probe", url = "http://127.0.0.1:$TERMINAL_PORT/status", interval = "5s", timeout = "2s" }
[[terminals]]
id = "hall-screen"
name = "Service hall screen (switched off)"
kind = "screen"
health = { mode = "tcp_probe", address = "127.0.0.1:$SCREEN_PORT", interval = "3s", timeout = "1s", misses_before_offline = 2 }
[[sources]]
id = "demo"
name = "Demo event source"
token = { file = "demo.token" }
[bundles]
TOML
echo "demo-token" > "$run/demo.token"
echo "viewer-token" > "$run/viewer.token"
echo "kiosk-1-token" > "$run/kiosk-1.token"
echo "kiosk-2-token" > "$run/kiosk-2.token"

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

/usr/bin/python3 tests/fixtures/rtsp_camera.py --port "$CAMERA_PORT" --pattern object \
  > "$run/camera.out" 2> "$run/camera.log" &
pids+=($!)
/usr/bin/python3 tests/fixtures/rtsp_camera.py --port "$CAMERA2_PORT" --pattern black \
  --width 320 --height 180 > "$run/camera2.out" 2> "$run/camera2.log" &
pids+=($!)
"$bin/central" --config "$run/central.toml" > "$run/central.log" 2>&1 &
pids+=($!)
sleep 0.5
"$bin/gateway" --config "$run/gateway.toml" > "$run/gateway.log" 2>&1 &
pids+=($!)
/usr/bin/python3 -u tests/fixtures/terminals_sim.py --gateway "http://127.0.0.1:$GATEWAY_PORT" \
  --kiosk security-room:viewer-token --kiosk kiosk-hall-1:kiosk-1-token \
  --kiosk kiosk-hall-2:kiosk-2-token:printer-out --status-page "$TERMINAL_PORT" \
  > "$run/terminals.out" 2> "$run/terminals.log" &
pids+=($!)

for _ in $(seq 1 100); do
  if capi "http://127.0.0.1:$CENTRAL_PORT/api/v1/gateways" 2>/dev/null | grep -q '"presence":"online"'; then
    break
  fi
  sleep 0.2
done

# Hand the gateway an event, as a door controller would; it travels to central.
curl -fsS -X POST "http://127.0.0.1:$GATEWAY_PORT/api/v1/events" -H "Authorization: Bearer demo-token" \
  -H "Content-Type: application/json" \
  -d '[{"class":"alert","kind":"door.forced","payload":{"door":"archive room","note":"demo"}}]' >/dev/null || true
sleep 1

# One line per camera: state, stream, and what sensing sees.
camera_health() {
  curl -fsS "http://127.0.0.1:$GATEWAY_PORT/api/v1/cameras" 2>/dev/null | /usr/bin/python3 -c '
import json, sys
for c in json.load(sys.stdin):
    fps = "%.1f fps" % c["fps"] if c.get("fps") else "- fps"
    kbps = "%.0f kbit/s" % c["bitrate_kbps"] if c.get("bitrate_kbps") else "- kbit/s"
    size = "%sx%s" % (c.get("width"), c.get("height"))
    print("  %-14s %-10s %-5s %-8s %-9s %-12s keyframes decoded %-4s sensing %s"
          % (c["id"], c["state"], c.get("codec") or "-", size, fps, kbps,
             c.get("decoded", 0), ",".join(c.get("sensing") or []) or "-"))
' || echo "  (gateway not answering; see $run/gateway.log)"
}

# One line per terminal: kind, how it is watched, state and why.
terminal_health() {
  curl -fsS "http://127.0.0.1:$GATEWAY_PORT/api/v1/terminals" 2>/dev/null | /usr/bin/python3 -c '
import json, sys
for t in json.load(sys.stdin):
    seen = "seen %ss ago" % t["last_seen_secs_ago"] if t.get("last_seen_secs_ago") is not None else "never seen"
    cfg = " settings v%s" % t["config_version"] if t.get("config_version") else ""
    print("  %-16s %-15s %-10s %-9s %-14s%s %s" % (t["id"], t["kind"], t["mode"], t["state"], seen, cfg,
          "; ".join(t.get("reasons") or [])))
' || echo "  (gateway not answering; see $run/gateway.log)"
}

# "JPEG WxH, N bytes" for a file, read from its frame header.
jpeg_info() {
  /usr/bin/python3 - "$1" <<'PY'
import struct, sys
d = open(sys.argv[1], "rb").read()
i = 2
while d[:2] == b"\xff\xd8" and i + 9 <= len(d):
    m, n = d[i + 1], struct.unpack(">H", d[i + 2:i + 4])[0]
    if 0xC0 <= m <= 0xC3:
        h, w = struct.unpack(">HH", d[i + 5:i + 9])
        print("JPEG %dx%d, %d bytes" % (w, h, len(d)))
        sys.exit(0)
    i += 2 + n
print("not a JPEG (%d bytes)" % len(d))
PY
}

echo "demo: waiting for the cameras' first snapshots and sensing (about 15 s)"
for _ in $(seq 1 60); do
  if curl -fsS -o "$run/hall-entrance.jpg" -H "Authorization: Bearer viewer-token" \
      "http://127.0.0.1:$GATEWAY_PORT/api/v1/cameras/hall-entrance/snapshot.jpg" 2>/dev/null \
    && camera_health | grep -q covered; then
    break
  fi
  sleep 0.5
done
# Central signs new settings for kiosk 1 and sends them; the kiosk fetches them by ETag.
capi -X POST "http://127.0.0.1:$CENTRAL_PORT/api/v1/bundles" -H "Content-Type: application/json" \
  -d '{"gateway":"gw-hongxing-01","terminal":"kiosk-hall-1","settings":{"volume":40,"locale":"zh-CN","required_peripherals":["printer","card_reader"]},"note":"demo: quieter kiosk"}' \
  > "$run/bundle.json" 2>/dev/null || true
# The street's master data (grid, party organisations, service items) to central; the gateway
# gets its replica, signed, and answers kiosks from it.
GRIDEDGE_API_TOKEN="$api_token" "$bin/central" data push deploy/sample-data --url "http://127.0.0.1:$CENTRAL_PORT" --by demo \
  > "$run/masterdata.out" 2>&1 || true
for _ in $(seq 1 40); do
  if curl -fsS "http://127.0.0.1:$GATEWAY_PORT/api/v1/masterdata" 2>/dev/null | grep -q '"version":1'; then
    break
  fi
  sleep 0.5
done
capi -o "$run/central-snapshot.jpg" \
  "http://127.0.0.1:$CENTRAL_PORT/api/v1/gateways/gw-hongxing-01/cameras/hall-entrance/snapshot.jpg" || true

cat <<TXT

GridEdge demo is running.
  central's API needs a login or an API token: this demo's is in $run/api-token, e.g.
            curl -H "Authorization: Bearer \$(cat $run/api-token)" http://127.0.0.1:$CENTRAL_PORT/api/v1/gateways
  central   http://127.0.0.1:$CENTRAL_PORT/api/v1/gateways   (gateways and their health)
            http://127.0.0.1:$CENTRAL_PORT/metrics           (Prometheus metrics)
            mqtts://localhost:$BROKER_TLS_PORT                (embedded broker: the gateway on TLS, its
                                                              certificate in $run/pki; try
                                                              mosquitto_sub with it on gridedge/v1/# —
                                                              the broker keeps it to its own topics)
            http://127.0.0.1:$CENTRAL_PORT/api/v1/events?gateway=gw-hongxing-01   (events stored)
            http://127.0.0.1:$CENTRAL_PORT/api/v1/gateways/gw-hongxing-01/cameras/hall-entrance/snapshot.jpg
                                                              (a camera's picture, asked of the gateway)
  central   http://127.0.0.1:$CENTRAL_PORT/api/v1/terminals  (every terminal's health)
            http://127.0.0.1:$CENTRAL_PORT/api/v1/bundles    (configuration bundles sent)
  gateway   http://127.0.0.1:$GATEWAY_PORT/api/v1/cameras   (camera health)
            http://127.0.0.1:$GATEWAY_PORT/api/v1/terminals (terminal health)
            http://127.0.0.1:$GATEWAY_PORT/api/v1/cameras/hall-entrance/snapshot.jpg
                                                  (with -H 'Authorization: Bearer viewer-token')
            http://127.0.0.1:$GATEWAY_PORT/viewer#token=viewer-token   (camera wall, live video)
            http://127.0.0.1:$GATEWAY_PORT/kiosk#token=kiosk-1-token   (service hall kiosk page;
                                                  the page trades the token for a session cookie)
            http://127.0.0.1:$GATEWAY_PORT/api/v1/kiosk/openapi.json   (kiosk API, OpenAPI)
  central   http://127.0.0.1:$CENTRAL_PORT/api/v1/cases     (residents' reports, routed to grid stations)
  console   http://127.0.0.1:$CENTRAL_PORT/console   (operator console: log in as duty / $SUPERVISOR_PASSWORD,
                                                     or admin / $ADMIN_PASSWORD)
            http://127.0.0.1:$GATEWAY_PORT/healthz
            http://127.0.0.1:$GATEWAY_PORT/metrics
  cameras   rtsp://127.0.0.1:$CAMERA_PORT/cam   (simulated, H.264: bars with a moving ball in zone "counter")
            rtsp://127.0.0.1:$CAMERA2_PORT/cam   (simulated, H.264: black, a covered lens)
  logs      $run/*.log
Gateways seen by central now:
TXT
capi "http://127.0.0.1:$CENTRAL_PORT/api/v1/gateways" || echo "(central not answering yet; see $run/central.log)"
echo
echo
echo "Camera health at the gateway:"
camera_health
echo
echo "Terminal health at the gateway (heartbeats, probes; the screen is off, kiosk 2's printer is out):"
terminal_health
echo
echo "Terminals at central (from events and the gateway's periodic summary):"
capi "http://127.0.0.1:$CENTRAL_PORT/api/v1/terminals" | /usr/bin/python3 -c '
import json, sys
v = json.load(sys.stdin)
print("  counts:", ", ".join("%s %d" % kv for kv in sorted(v["counts"].items())))
for t in v["terminals"]:
    print("  %-16s %-16s %-9s (%s) %s" % (t["gateway"], t["terminal"], t["state"], t["source"], "; ".join(t["reasons"])))
' || true
echo "Settings bundle for kiosk-hall-1, signed by central: $(/usr/bin/python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print("version %s %s" % (b["version"], b["outcome"]))' "$run/bundle.json" 2>/dev/null || echo "not sent")"
echo
echo "Master data: $(cat "$run/masterdata.out" 2>/dev/null | tail -1)"
echo "Kiosk queries answered from the gateway's replica:"
kiosk() { curl -fsS -G -H "Authorization: Bearer kiosk-1-token" "http://127.0.0.1:$GATEWAY_PORT$1" "${@:2}" 2>/dev/null; }
kiosk /api/v1/kiosk/items --data-urlencode "q=低保" | /usr/bin/python3 -c '
import json, sys
v = json.load(sys.stdin)
for h in v["hits"][:3]:
    print("  search 低保: %s %s (%s, %s working days)" % (h["code"], h["name"], h["department"], h["time_limit_days"]))
' || echo "  (no replica yet; see $run/gateway.log)"
kiosk /api/v1/kiosk/grids/at -d lon=120.156 -d lat=30.2715 | /usr/bin/python3 -c '
import json, sys
v = json.load(sys.stdin)
g = v["grid"]
lead = [s for s in g["staff"] if s["role"] == "网格长"]
print("  grid at 120.156,30.2715: %s %s, %s households; 网格长 %s %s; %s" % (
    g["code"], g["name"], g["households"], lead[0]["name"], lead[0]["duty_phone"], v["party"][0]["name"]))
' || true
echo
echo "The service hall's kiosk page, used in headless Chromium (search, grid by address, a report, its progress):"
if SCREENSHOT="$run/kiosk" node tests/browser/kiosk.mjs \
    "http://127.0.0.1:$GATEWAY_PORT/kiosk#token=kiosk-1-token" routed 20000 2>/dev/null \
    | /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)
print("  search 低保: %s; opened %s: %d materials, steps %s" % (
    ", ".join(r["hits"][:3]), r["item"]["code"], r["item"]["materials"], "→".join(r["item"]["steps"])))
print("  address 红星路64号: grid %s; %s" % (r["grid"]["code"], "; ".join(r["grid"]["staff"][:1])))
print("  report handed in: receipt %s, now: %s" % (r["receipt"], r["statusText"]))
print("  learning content: %s" % ", ".join(r["content"]))
'; then
  echo "  screenshots: $run/kiosk-items.png $run/kiosk-grid.png $run/kiosk-status.png"
else
  echo "  (the kiosk page did not finish; open it in a browser: http://127.0.0.1:$GATEWAY_PORT/kiosk#token=kiosk-1-token)"
fi
echo
echo "The operator console, used in headless Chromium (log in, the covered camera's alert acknowledged, a meeting dispatched):"
covered="gw-hongxing-01/camera/archive-room#camera.covered"
printf '%s\n' \
  "{\"do\":\"open\",\"url\":\"http://127.0.0.1:$CENTRAL_PORT/console\"}" \
  "{\"do\":\"login\",\"name\":\"duty\",\"password\":\"$SUPERVISOR_PASSWORD\"}" \
  "{\"do\":\"waitAlert\",\"key\":\"$covered\",\"timeoutMs\":30000}" \
  "{\"do\":\"ack\",\"key\":\"$covered\"}" \
  "{\"do\":\"waitAlert\",\"key\":\"$covered\",\"acknowledged\":true,\"timeoutMs\":10000}" \
  "{\"do\":\"book\",\"title\":\"远程接访（演示）\",\"room\":\"https://meet.example/r/demo\",\"invitees\":\"gw-hongxing-01/security-room\"}" \
  "{\"do\":\"text\",\"selector\":\"#street\"}" \
  "{\"do\":\"text\",\"selector\":\"#alert-counts\"}" \
  "{\"do\":\"screenshot\",\"path\":\"$run/console.png\"}" \
  '{"do":"quit"}' \
  | node tests/browser/console.mjs 2>/dev/null | /usr/bin/python3 -c '
import json, sys
steps = ["open", "log in", "the covered camera'"'"'s alert shown", "acknowledged", "shown as acknowledged", "meeting dispatched to security-room", "street", "alert queue", "screenshot"]
for name, line in zip(steps, sys.stdin):
    r = json.loads(line)
    if not r.get("ok"):
        print("  %s: failed (%s)" % (name, r.get("error", "")[:120]))
        continue
    extra = r.get("who") or " ".join((r.get("text") or "").split()) or ""
    print("  %s%s" % (name, (": " + extra) if extra else ""))
' && echo "  screenshot: $run/console.png"
echo
echo "Snapshot from the gateway:  $run/hall-entrance.jpg  ($(jpeg_info "$run/hall-entrance.jpg" 2>/dev/null || echo none))"
echo "Snapshot through central:   $run/central-snapshot.jpg  ($(jpeg_info "$run/central-snapshot.jpg" 2>/dev/null || echo none))"
echo
echo "The security room's camera wall, played in headless Chromium (fMP4 over WebSocket, no re-encoding):"
if SCREENSHOT="$run/camera-wall.png" node tests/browser/watch.mjs \
    "http://127.0.0.1:$GATEWAY_PORT/viewer#token=viewer-token" 1 20000 1000 2>/dev/null \
    | /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)
for a, b in zip(r["first"], r["second"]):
    print("  %-14s %dx%d, playing: t=%.1f s -> %.1f s" % (b["camera"], b["width"], b["height"], a["time"], b["time"]))
for n in r["notes"]:
    print("  note:", n)
'; then
  echo "  screenshot: $run/camera-wall.png"
else
  echo "  (the wall did not play; open the page below in a browser)"
fi
echo
echo "Events central stored from the gateway (camera and terminal changes, sensing alerts, one posted by the demo):"
capi "http://127.0.0.1:$CENTRAL_PORT/api/v1/events?gateway=gw-hongxing-01" | /usr/bin/python3 -c '
import json, sys
for e in json.load(sys.stdin)["events"]:
    p = e["payload"]
    what = p.get("camera") or p.get("terminal") or p.get("door") or (p.get("target") or {}).get("terminal") or ""
    extra = " zone=%s" % p["zone"] if p.get("zone") else ""
    snap = " snapshot=%s" % p["snapshot_path"] if p.get("snapshot_path") else ""
    print("  #%-3d %-6s %-22s %s%s%s" % (e["seq"], e["class"], e["kind"], what, extra, snap))
' || true
echo
cat <<TXT
Post more: curl -X POST http://127.0.0.1:$GATEWAY_PORT/api/v1/events -H 'Authorization: Bearer demo-token' \\
             -H 'Content-Type: application/json' -d '[{"class":"telemetry","kind":"x","payload":{}}]'
TXT
echo "Press Ctrl-C to stop. Camera and terminal health every 10 s:"
end=$(( $(date +%s) + ${DEMO_SECONDS:-315360000} ))
while [ "$(date +%s)" -lt "$end" ]; do
  sleep $(( end - $(date +%s) < 10 ? end - $(date +%s) : 10 ))
  [ "$(date +%s)" -lt "$end" ] || break
  echo "$(date +%T)"
  camera_health
  terminal_health
done
