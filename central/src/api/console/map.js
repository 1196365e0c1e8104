"use strict";
// 一张图: the street's map. The grids of the master data at three levels, the centres and
// their devices where they stand, open alerts at what raised them (live, from the alert feed:
// no polling) and open cases by grid. Click a grid to drill down: street → area → base grid.

let streetMap = null;
let mapData = null;
let gridBy = new Map();

async function drawMap() {
  try {
    const t0 = performance.now();
    mapData = await call("GET", "/api/v1/map");
    if (!streetMap) {
      streetMap = new GridMap($("street-map"), { tiles: mapData.tiles, attribution: mapData.attribution, onSelect: showGrid });
    }
    gridBy = new Map(mapData.grids.map((g) => [g.code, g]));
    streetMap.setGrids(mapData.grids);
    showGrid(streetMap.focused ? mapData.grids.find((g) => g.code === streetMap.focused) : null);
    $("street-map").dataset.drawnMs = String(Math.round(performance.now() - t0));
  } catch (e) { say("读取地图失败 " + e.message); }
}

// Open alerts by what raised them: a device's key (`gw/camera/id`), else its centre's.
function alertsByMarker(known) {
  const at = new Map();
  for (const a of mapData.alerts) {
    const key = known.has(a.originator) ? a.originator : a.gateway;
    if (!at.has(key)) at.set(key, []);
    at.get(key).push(a);
  }
  return at;
}

function placeMarkers() {
  const known = new Set();
  for (const c of mapData.centres) { known.add(c.gateway); c.devices.forEach((d) => known.add(d.key)); }
  const alerts = alertsByMarker(known);
  const label = (name, key) => [name, ...(alerts.get(key) || []).map((a) => "⚠ " + a.title)].join("\n");
  const markers = [];
  for (const c of mapData.centres) {
    markers.push({ key: c.gateway, at: c.at, kind: "centre", state: c.presence, label: label(c.site, c.gateway), alert: alerts.has(c.gateway) });
    for (const d of c.devices) {
      markers.push({ key: d.key, at: d.at, kind: d.kind, state: d.state, label: label(d.name || d.id, d.key), alert: alerts.has(d.key) });
    }
  }
  // Open cases counted where the eye is: by area for the whole street, by base grid within
  // the area in focus (a street of a thousand grids is not a thousand badges).
  const focus = gridBy.get(streetMap.focused);
  const inArea = focus && (focus.level === "area" ? focus.code : focus.level === "base" ? focus.parent : null);
  const counts = new Map();
  for (const k of mapData.cases) {
    const station = gridBy.get(k.grid);
    const at = inArea ? (station && station.parent === inArea ? k.grid : null) : (station && station.parent) || k.grid;
    if (!at) continue;
    const c = counts.get(at) || { open: 0, overdue: 0 };
    c.open += k.open;
    c.overdue += k.overdue;
    counts.set(at, c);
  }
  for (const [grid, k] of counts) {
    markers.push({ key: "cases/" + grid, at: streetMap.middle(grid), kind: "cases", state: k.overdue ? "offline" : "online",
      label: `${gridBy.get(grid)?.name || grid}: 诉求 ${k.open} open · 逾期 ${k.overdue} overdue`, count: k.open,
      onClick: () => { location.hash = "cases/" + grid; } });
  }
  streetMap.setMarkers(markers);
}

// The side panel: where the focus is, and what is open there.
function showGrid(g) {
  placeMarkers();
  const path = g ? streetMap.path(g.code) : [];
  $("map-crumbs").innerHTML = [`<a href="#map" data-code="">全街道 Street</a>`,
    ...path.filter((p) => p.level !== "street").map((p) => `<a href="#map" data-code="${esc(p.code)}">${esc(p.name)}</a>`)].join(" › ");
  const under = (code) => mapData.grids.filter((x) => streetMap.path(x.code).some((p) => p.code === code)).map((x) => x.code);
  const codes = new Set(g ? under(g.code) : mapData.grids.map((x) => x.code));
  const cases = mapData.cases.filter((k) => codes.has(k.grid));
  const open = cases.reduce((n, k) => n + k.open, 0);
  const overdue = cases.reduce((n, k) => n + k.overdue, 0);
  const centres = mapData.centres.filter((c) => !g || c.areas.some((a) => codes.has(a)) || path.some((p) => c.areas.includes(p.code)));
  const gw = new Set(centres.map((c) => c.gateway));
  const alerts = mapData.alerts.filter((a) => gw.has(a.gateway));
  $("map-side").innerHTML = `<h3>${esc(g ? g.name : "全街道 Whole street")}</h3>
    ${g && g.households ? `<p class="muted">${g.households} 户 households</p>` : ""}
    <p>诉求 Open cases: <a href="#cases/${esc(g ? g.code : "")}" id="map-cases" data-open="${open}">${open}</a>${overdue ? ` · <span class="error">逾期 ${overdue} overdue</span>` : ""}</p>
    <p>中心 Centres: ${centres.map((c) => `${esc(c.site)} ${pill(c.presence)}`).join("<br>") || "—"}</p>
    <h4>告警 Open alerts (${alerts.length})</h4>
    <ul id="map-alerts">${alerts.map((a) => `<li data-key="${esc(a.key)}">${pill(a.severity)} ${esc(a.title)}</li>`).join("") || `<li class="muted">没有 None</li>`}</ul>
    ${mapData.centres.some((c) => !c.placed) ? `<p class="muted">未标注位置的中心画在其片区中部，设备围绕中心 Centres without a place stand in the middle of their area, devices around them (places.geojson).</p>` : ""}`;
}

$("map-crumbs").addEventListener("click", (e) => {
  const a = e.target.closest("a[data-code]");
  if (!a) return;
  e.preventDefault();
  streetMap.focus(a.dataset.code || null);
  showGrid(a.dataset.code ? mapData.grids.find((g) => g.code === a.dataset.code) : null);
});

// A change of an alert moves it on the map at once.
alertWatchers.push((change) => {
  if (!mapData || !change || !change.alert) return;
  const a = change.alert;
  const rest = mapData.alerts.filter((x) => x.id !== a.id);
  const known = new Set(mapData.centres.map((c) => c.gateway));
  mapData.alerts = a.resolved || !known.has(a.gateway) ? rest
    : [...rest, { id: a.id, key: a.key, originator: a.originator, gateway: a.gateway, severity: a.severity, title: a.title, acknowledged: a.acknowledged }];
  showGrid(gridBy.get(streetMap.focused) || null);
});

// Shown by now (the router unhides the view first): Leaflet measures its element as it is.
views.map = () => { if (streetMap) streetMap.map.invalidateSize(); drawMap(); };
resets.push(() => { mapData = null; if (streetMap) { streetMap.map.remove(); streetMap = null; } });
