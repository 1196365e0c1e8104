// Times drawing the street's map in Debian's headless Chromium, GridEdge's console against
// Leaflet's own GeoJSON layer on the same grids. Usage:
//   node bench_map.mjs CONSOLE_URL NAME PASSWORD PEER_HTML GRIDS RUNS
// GridEdge: from the map view being asked for (its fragment set) to every grid drawn and every
// marker placed (the page fetches /api/v1/map and draws it). Peer: a static page with the same
// grids inline as GeoJSON, from navigation start to its layer added (L.geoJSON on a canvas).
// Prints one JSON line: {"gridedge":[ms…],"inPage":[ms…],"peer":[ms…]} (inPage: the map view's
// own measure, from asking /api/v1/map to drawn).
import { launch } from "./chromium.mjs";

const [url, name, password, peerHtml, grids, runs = "5"] = process.argv.slice(2);
const browser = await launch();
const out = { gridedge: [], peer: [] };
try {
  for (let i = 0; i < Number(runs); i++) {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    await page.goto(url);
    await page.fill("#login-name", name);
    await page.fill("#login-password", password);
    await page.click("#login-go");
    await page.waitForSelector("#app:not([hidden])");
    await page.waitForLoadState("networkidle");
    const ms = await page.evaluate(async (n) => {
      const t0 = performance.now();
      location.hash = "map";
      for (;;) {
        const el = document.querySelector("#street-map");
        if (el && el.dataset.grids === n && el.dataset.drawnMs) return performance.now() - t0;
        await new Promise((r) => setTimeout(r, 5));
      }
    }, grids);
    out.gridedge.push(Math.round(ms));
    // The page's own measure: from asking /api/v1/map to every grid and marker drawn.
    out.inPage = (out.inPage || []).concat(Number(await page.getAttribute("#street-map", "data-drawn-ms")));
    await page.close();

    const peer = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    await peer.goto("file://" + peerHtml);
    await peer.waitForFunction(() => window.drawnMs !== undefined, null, { timeout: 30000 });
    out.peer.push(Math.round(await peer.evaluate(() => window.drawnMs)));
    await peer.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
