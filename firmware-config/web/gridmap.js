"use strict";
// The street drawn from the master data: grids at three levels (street, area, base grid) as
// vectors, and markers placed on them. Central's console map and the kiosk's "my grid" both
// draw with it, so a grid looks the same on each. Leaflet (bundled beside this file) draws; no
// tile server is needed, and one may be given.
//
//   const m = new GridMap(element, { tiles, attribution, onSelect(grid) });
//   m.setGrids(grids);          // [{code, name, level, parent, boundary}], boundary as rings
//                               // of [longitude, latitude] (or {rings})
//   m.focus(code);              // fits a grid and marks it; null: the whole street
//   m.setMarkers(markers);      // [{key, at: [lon, lat], kind, label, state, alert, count}]
//
// Clicking a base grid while the whole street shows drills down to its area; clicking one
// inside the area in focus selects it (onSelect). The element's data-grids and data-markers
// say how many of each are drawn, data-focus which grid is in focus.
(function () {
  const STYLE = {
    street: { color: "#b3001b", weight: 3, fill: false, interactive: false },
    area: { color: "#0969da", weight: 2, fillColor: "#0969da", fillOpacity: 0.04, interactive: false },
    base: { color: "#1a7f37", weight: 1, fillColor: "#1a7f37", fillOpacity: 0.1 },
  };
  const FOCUSED = { weight: 3, color: "#cf222e", fillOpacity: 0.2 };
  // One character each, from the fonts a kiosk has (no emoji font is assumed).
  const ICON = { centre: "中", camera: "摄", terminal: "端", source: "门", cases: "诉" };
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  // Leaflet takes [latitude, longitude].
  const latlng = ([lon, lat]) => [lat, lon];
  const ringsOf = (b) => (Array.isArray(b) ? b : b && b.rings) || null;

  class GridMap {
    constructor(el, opts = {}) {
      this.el = el;
      this.map = L.map(el, { preferCanvas: true, zoomSnap: 0.25, attributionControl: !!opts.tiles });
      if (opts.tiles) L.tileLayer(opts.tiles, { maxZoom: 19, attribution: esc(opts.attribution) }).addTo(this.map);
      this.onSelect = opts.onSelect || (() => {});
      this.grids = new Map();
      this.shapes = new Map();
      this.markers = new Map();
      this.focused = null;
      this.map.setView([0, 0], 2);
    }

    setGrids(grids) {
      this.shapes.forEach((s) => s.remove());
      this.shapes.clear();
      this.grids = new Map(grids.map((g) => [g.code, g]));
      // Streets under areas under base grids, so that base grids take the clicks.
      const order = { street: 0, area: 1, base: 2 };
      const drawn = grids.filter((g) => ringsOf(g.boundary)).sort((a, b) => order[a.level] - order[b.level]);
      for (const g of drawn) {
        const shape = L.polygon(ringsOf(g.boundary).map((r) => r.map(latlng)), STYLE[g.level] || STYLE.base);
        shape.bindTooltip(esc(g.name), { sticky: true });
        if (g.level === "base") shape.on("click", () => this.clicked(g));
        shape.addTo(this.map);
        this.shapes.set(g.code, shape);
      }
      this.el.dataset.grids = String(this.shapes.size);
      this.focus(this.focused);
      return this.shapes.size;
    }

    clicked(g) {
      const area = g.parent && this.grids.get(g.parent);
      const atTop = !this.focused || this.grids.get(this.focused)?.level === "street";
      if (atTop && area && this.shapes.has(area.code)) this.focus(area.code);
      else this.focus(g.code);
      this.onSelect(this.grids.get(this.focused));
    }

    // The grid `code` fitted and marked (none: everything drawn).
    focus(code) {
      if (this.focused && this.shapes.has(this.focused)) {
        const was = this.grids.get(this.focused);
        this.shapes.get(this.focused).setStyle(STYLE[was.level] || STYLE.base);
      }
      this.focused = code && this.grids.has(code) ? code : null;
      this.el.dataset.focus = this.focused || "";
      const shape = this.focused && this.shapes.get(this.focused);
      if (shape) {
        shape.setStyle(FOCUSED);
        this.map.fitBounds(shape.getBounds(), { padding: [20, 20] });
      } else if (this.shapes.size) {
        this.map.fitBounds(L.featureGroup([...this.shapes.values()]).getBounds(), { padding: [20, 20] });
      }
    }

    // The middle of grid `code`'s bounds, [lon, lat] (null when it is not drawn).
    middle(code) {
      const shape = this.shapes.get(code);
      if (!shape) return null;
      const c = shape.getBounds().getCenter();
      return [c.lng, c.lat];
    }

    // The grids from `code` up to the street.
    path(code) {
      const out = [];
      for (let g = this.grids.get(code); g && out.length < 16; g = this.grids.get(g.parent)) out.unshift(g);
      return out;
    }

    // Markers by key: moved and restyled in place, so that a live update redraws only what
    // changed.
    setMarkers(list) {
      const keep = new Set();
      for (const m of list) {
        if (!m.at) continue;
        keep.add(m.key);
        const html = `<div class="gm-marker gm-${esc(m.kind)}${m.alert ? " gm-alert" : ""}" data-key="${esc(m.key)}" data-kind="${esc(m.kind)}" data-state="${esc(m.state)}" data-alert="${m.alert ? "true" : "false"}" title="${esc(m.label)}">${ICON[m.kind] || "•"}${m.count ? `<b>${m.count}</b>` : ""}</div>`;
        const icon = L.divIcon({ html, className: "gm-icon", iconSize: [26, 26], iconAnchor: [13, 13] });
        const had = this.markers.get(m.key);
        if (had) {
          had.setLatLng(latlng(m.at));
          if (had.options.icon.options.html !== html) had.setIcon(icon);
        } else {
          const marker = L.marker(latlng(m.at), { icon, keyboard: false }).addTo(this.map);
          if (m.onClick) marker.on("click", m.onClick);
          this.markers.set(m.key, marker);
        }
      }
      for (const [key, marker] of this.markers) {
        if (!keep.has(key)) { marker.remove(); this.markers.delete(key); }
      }
      this.el.dataset.markers = String(this.markers.size);
    }
  }
  window.GridMap = GridMap;
})();
