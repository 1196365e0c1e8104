// Drives the operator console in Debian's headless Chromium, step by step on commands read
// from standard input (one JSON object per line), so that a test can change the world (stop a
// camera, answer a meeting) between steps. Each command prints one JSON line:
//   {"do":"open","url":…}                      → {"ok":true}
//   {"do":"login","name":…,"password":…}        → {"ok":true,"who":…}
//   {"do":"waitAlert","key":…,"timeoutMs":N,"acknowledged"?:bool,"cleared"?:bool} → {"ok":true,"ms":…,"row":{…}}
//   {"do":"ack","key":…}                        → {"ok":true}
//   {"do":"book","title":…,"room":…,"invitees":"gw/terminal"} → {"ok":true}
//   {"do":"waitInvitee","terminal":"gw/terminal","state":…,"timeoutMs":N} → {"ok":true,"ms":…}
//   {"do":"text","selector":…}                  → {"ok":true,"text":…}
//   {"do":"waitText","selector":…,"contains":…} → {"ok":true,"text":…}
//   {"do":"screenshot","path":…}                → {"ok":true}
//   {"do":"logout"}                             → {"ok":true}
//   {"do":"view","hash":"cases"|"case/R"|…}      → {"ok":true}
//   {"do":"filterCases","category"?,"status"?,"grid"?,"overdue"?} → {"ok":true,"receipts":[…]}
//   {"do":"caseStep","action":…,"fields":{…}}   → {"ok":true,"status":…,"timeline":[action…]}
//   {"do":"caseActions"}                        → {"ok":true,"actions":[…],"missing":bool}
//   {"do":"createAccount","name","role","scope","password"} → {"ok":true,"accounts":[{name,scope,disabled}…]}
//   {"do":"mapView","grids":N}                  → {"ok":true,"ms":…,"drawnMs":…,"markers":N} (opens the map; waits for N grids)
//   {"do":"mapClick","lon","lat"}               → {"ok":true,"focus":…}
//   {"do":"waitMarker","key","alert":bool,"timeoutMs"?} → {"ok":true,"ms":…,"title":…}
//   {"do":"markerAt","key","lon","lat"}        → {"ok":true,"dx":px,"dy":px}
//   {"do":"kioskGrid","address"}                → {"ok":true,"focus":…,"grids":N}
//   {"do":"figures","period"?}                 → {"ok":true,"registered":N,"lateShare":x,"download":name,"bytes":N}
//   {"do":"kiosk","url":…}                      → {"ok":true} (a second page: the resident's kiosk)
//   {"do":"kioskSubmit","category","grid","title","description","name","phone"} → {"ok":true,"receipt":…}
//   {"do":"kioskStatus","receipt","status","contains"?,"timeoutMs"?} → {"ok":true,"text":…,"ms":…}
//   {"do":"playClip","key","timeoutMs"?}         → {"ok":true,"width":N,"height":N,"duration":s,"played":s} (the alert's clip, tried until written)
//   {"do":"quit"}
// A failed step prints {"ok":false,"error":…} and the script goes on reading.
import readline from "node:readline";
import { launch } from "./chromium.mjs";

const browser = await launch();
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
page.on("console", (m) => console.error("page:", m.text()));
page.setDefaultTimeout(15000);
const out = (v) => console.log(JSON.stringify(v));
const rowOf = (key) => `tr.alert[data-key="${key}"]`;

let kiosk = null;
// The case page's timeline, as the actions it lists.
const timeline = () => page.$$eval("#case-timeline li", (l) => l.map((li) => li.dataset.action));

const steps = {
  async open(c) { await page.goto(c.url); return {}; },
  async login(c) {
    await page.fill("#login-name", c.name);
    await page.fill("#login-password", c.password);
    await page.click("#login-go");
    await page.waitForSelector("#app:not([hidden])");
    return { who: (await page.textContent("#who")).trim() };
  },
  async waitAlert(c) {
    const t0 = Date.now();
    await page.waitForFunction(({ sel, acknowledged, cleared }) => {
      const r = document.querySelector(sel);
      if (!r) return false;
      if (acknowledged !== undefined && String(acknowledged) !== r.dataset.acknowledged) return false;
      if (cleared !== undefined && String(cleared) !== r.dataset.cleared) return false;
      return true;
    }, { sel: rowOf(c.key), acknowledged: c.acknowledged, cleared: c.cleared }, { timeout: c.timeoutMs || 15000, polling: 100 });
    const row = await page.$eval(rowOf(c.key), (r) => ({ id: r.dataset.id, acknowledged: r.dataset.acknowledged, cleared: r.dataset.cleared, text: r.textContent }));
    return { ms: Date.now() - t0, row };
  },
  async ack(c) { await page.click(`${rowOf(c.key)} button.ack`); return {}; },
  async playClip(c) {
    // Asked again until the gateway has written it, then played for a moment.
    const until = Date.now() + (c.timeoutMs || 30000);
    for (;;) {
      await page.click(`${rowOf(c.key)} button.clip`);
      const loaded = await page.waitForFunction(() => {
        const v = document.querySelector("#clip-video");
        return v.error ? "error" : v.readyState >= 2 && v.videoWidth > 0 ? "loaded" : false;
      }, null, { timeout: 10000 }).then((h) => h.jsonValue()).catch(() => "timeout");
      if (loaded === "loaded") break;
      if (Date.now() > until) throw new Error(`the clip did not load: ${loaded}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
    await page.waitForFunction(() => document.querySelector("#clip-video").currentTime > 0.5, null, { timeout: 10000 });
    return page.$eval("#clip-video", (v) => ({ width: v.videoWidth, height: v.videoHeight, duration: v.duration, played: v.currentTime }));
  },
  async note(c) {
    // Opens the alert's notes, adds one, and waits for it in the list.
    if (await page.isHidden("#alert-detail")) await page.click(`${rowOf(c.key)} button.notes`);
    await page.waitForSelector("#alert-detail:not([hidden])");
    await page.fill("#note-text", c.text);
    await page.click("#note-go");
    await page.waitForFunction((want) => [...document.querySelectorAll("#detail-notes li.note")].some((li) => li.textContent.includes(want)), c.text);
    return { notes: await page.$$eval("#detail-notes li.note", (l) => l.map((li) => li.textContent)) };
  },
  async book(c) {
    await page.fill("#book-title", c.title);
    await page.fill("#book-room", c.room);
    await page.fill("#book-invitees", c.invitees);
    await page.click("#book-go");
    await page.waitForSelector(`tr.meeting .invitee[data-terminal="${c.invitees}"]`);
    return {};
  },
  async waitInvitee(c) {
    const t0 = Date.now();
    await page.waitForSelector(`.invitee[data-terminal="${c.terminal}"][data-state="${c.state}"]`, { timeout: c.timeoutMs || 15000 });
    return { ms: Date.now() - t0 };
  },
  async waitText(c) {
    await page.waitForFunction(({ sel, want }) => (document.querySelector(sel)?.textContent || "").includes(want), { sel: c.selector, want: c.contains }, { timeout: c.timeoutMs || 15000 });
    return { text: (await page.textContent(c.selector)) ?? "" };
  },
  async text(c) { return { text: (await page.textContent(c.selector)) ?? "" }; },
  async logout() {
    await page.click("#logout");
    await page.waitForSelector("#login:not([hidden])");
    return {};
  },
  async view(c) {
    await page.evaluate((h) => { location.hash = h; }, c.hash);
    return {};
  },
  async filterCases(c) {
    await page.evaluate(() => { location.hash = "cases"; });
    await page.waitForSelector("#view-cases:not([hidden]) #f-grid option", { state: "attached" });
    await page.selectOption("#f-category", c.category || "");
    await page.selectOption("#f-status", c.status || "");
    await page.selectOption("#f-grid", c.grid || "");
    await page.setChecked("#f-overdue", !!c.overdue);
    // The answer to this filter, not a queue drawn before it.
    const answered = page.waitForResponse((r) => r.url().includes("/api/v1/cases?"));
    await page.click("#case-filter button[type=submit]");
    await (await answered).finished();
    await page.waitForTimeout(100);
    return { receipts: await page.$$eval("#case-rows tr.case", (l) => l.map((r) => r.dataset.receipt)) };
  },
  async caseActions() {
    await page.waitForFunction(() => document.querySelector("#case-head")?.dataset.receipt || document.querySelector("#case-head")?.dataset.missing);
    return {
      missing: (await page.getAttribute("#case-head", "data-missing")) === "true",
      actions: await page.$$eval("#case-actions button.case-action", (l) => l.map((b) => b.dataset.action)),
    };
  },
  async caseStep(c) {
    // The action's button, its form filled field by field, and the timeline one entry longer.
    const before = (await timeline()).length;
    await page.click(`#case-actions button[data-action="${c.action}"]`);
    await page.waitForSelector("#case-step:not([hidden])");
    for (const [name, value] of Object.entries(c.fields || {})) {
      const el = `#case-step [name="${name}"]`;
      if ((await page.$eval(el, (e) => e.tagName)) === "SELECT") await page.selectOption(el, String(value));
      else await page.fill(el, String(value));
    }
    await page.click("#case-step-go");
    await page.waitForFunction(({ n, err }) => document.querySelectorAll("#case-timeline li").length > n || (document.querySelector(err)?.textContent || "").length > 0,
      { n: before, err: "#case-step-error" });
    const error = await page.$eval("#case-step-error", (e) => e.textContent).catch(() => "");
    if (error) throw new Error(error);
    return { status: await page.getAttribute("#case-head", "data-status"), timeline: await timeline() };
  },
  async createAccount(c) {
    await page.evaluate(() => { location.hash = "accounts"; });
    await page.waitForSelector(`#acc-scope option[value="${c.scope}"]`, { state: "attached" });
    await page.fill("#acc-name", c.name);
    await page.selectOption("#acc-role", c.role);
    await page.selectOption("#acc-scope", c.scope);
    await page.fill("#acc-password", c.password);
    await page.click("#acc-create");
    await page.waitForSelector(`tr.account[data-name="${c.name}"]`);
    return {
      accounts: await page.$$eval("tr.account", (l) => l.map((r) => ({ name: r.dataset.name, scope: r.querySelector(".acc-scope").value, disabled: r.dataset.disabled }))),
    };
  },
  async mapView(c) {
    const t0 = Date.now();
    await page.evaluate(() => { location.hash = "map"; });
    await page.waitForSelector(`#street-map[data-grids="${c.grids}"][data-drawn-ms]`, { state: "attached", timeout: c.timeoutMs || 15000 });
    return {
      ms: Date.now() - t0,
      drawnMs: Number(await page.getAttribute("#street-map", "data-drawn-ms")),
      markers: Number(await page.getAttribute("#street-map", "data-markers")),
    };
  },
  async mapClick(c) {
    // Where the point is on the screen, then a real mouse click there.
    const box = await page.$eval("#street-map", (el) => { const r = el.getBoundingClientRect(); return { x: r.left, y: r.top }; });
    const p = await page.evaluate(([lon, lat]) => streetMap.map.latLngToContainerPoint([lat, lon]), [c.lon, c.lat]);
    const before = await page.getAttribute("#street-map", "data-focus");
    await page.mouse.click(box.x + p.x, box.y + p.y);
    await page.waitForFunction((was) => document.querySelector("#street-map").dataset.focus !== was, before);
    // The map moves to fit what was clicked.
    await page.waitForTimeout(400);
    return { focus: await page.getAttribute("#street-map", "data-focus"), side: await page.textContent("#map-side") };
  },
  async waitMarker(c) {
    const t0 = Date.now();
    const sel = `.gm-marker[data-key="${c.key}"][data-alert="${c.alert}"]`;
    // Polled every 20 ms: a selector wait backs off to 500 ms, which would hide the map's speed.
    await page.waitForFunction((q) => document.querySelector(q), sel, { timeout: c.timeoutMs || 15000, polling: 20 });
    return { ms: Date.now() - t0, title: await page.getAttribute(sel, "title") };
  },
  async markerAt(c) {
    // How far the marker's middle on screen is from where the map projects its place.
    return await page.evaluate(({ key, lon, lat }) => {
      const el = document.querySelector(`.gm-marker[data-key="${key}"]`);
      const r = el.getBoundingClientRect();
      const box = document.querySelector("#street-map").getBoundingClientRect();
      const p = streetMap.map.latLngToContainerPoint([lat, lon]);
      return { dx: r.left + r.width / 2 - (box.left + p.x), dy: r.top + r.height / 2 - (box.top + p.y) };
    }, c);
  },
  async kioskGrid(c) {
    await kiosk.click('nav button[data-tab="grids"]');
    await kiosk.waitForSelector("#grid-map[data-grids]", { state: "attached" });
    await kiosk.fill("#grid-q", c.address);
    await kiosk.click("#grid-go");
    await kiosk.waitForSelector("#grids .card.grid");
    const code = await kiosk.getAttribute("#grids .card.grid", "data-code");
    await kiosk.waitForSelector(`#grid-map[data-focus="${code}"]`, { state: "attached" });
    return { focus: code, grids: Number(await kiosk.getAttribute("#grid-map", "data-grids")) };
  },
  async figures(c) {
    await page.evaluate(() => { location.hash = "figures"; });
    await page.waitForSelector("#fig-registered");
    if (c.period) {
      await page.selectOption("#fig-period", c.period);
      const answered = page.waitForResponse((r) => r.url().includes("/api/v1/figures?"));
      await page.click("#fig-go");
      await (await answered).finished();
      await page.waitForTimeout(100);
    }
    // The XLSX link, downloaded as the browser does it.
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#fig-xlsx")]);
    const path = await download.path();
    const { statSync } = await import("node:fs");
    return {
      registered: Number(await page.getAttribute("#fig-registered", "data-n")),
      lateShare: Number(await page.getAttribute("#fig-late", "data-share")),
      periods: await page.$$eval("#fig-by-period tbody tr[data-key]", (l) => l.map((r) => r.dataset.key)),
      download: download.suggestedFilename(),
      bytes: statSync(path).size,
    };
  },
  async kiosk(c) {
    kiosk = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    kiosk.on("console", (m) => console.error("kiosk:", m.text()));
    kiosk.on("response", (r) => { if (r.status() >= 400) console.error("kiosk:", r.status(), r.url()); });
    kiosk.setDefaultTimeout(15000);
    await kiosk.goto(c.url);
    await kiosk.waitForFunction(() => !location.href.includes("token="));
    return {};
  },
  async kioskSubmit(c) {
    await kiosk.click('nav button[data-tab="submit"]');
    await kiosk.waitForSelector(`#sub-grid option[value="${c.grid}"]`, { state: "attached" });
    await kiosk.selectOption("#sub-category", c.category);
    await kiosk.selectOption("#sub-grid", c.grid);
    await kiosk.fill("#sub-title", c.title);
    await kiosk.fill("#sub-desc", c.description || "");
    await kiosk.fill("#sub-name", c.name);
    await kiosk.fill("#sub-phone", c.phone);
    await kiosk.click("#sub-go");
    await kiosk.waitForSelector("#receipt");
    return { receipt: (await kiosk.textContent("#receipt")).trim() };
  },
  async kioskStatus(c) {
    // As a resident would: asks again until the page shows the status (central's step reaches
    // the gateway through the broker).
    const t0 = Date.now();
    await kiosk.click('nav button[data-tab="status"]');
    for (;;) {
      await kiosk.fill("#status-q", c.receipt);
      await kiosk.click("#status-go");
      await kiosk.waitForTimeout(300);
      const card = await kiosk.$("#status-out .card");
      const text = card ? await card.textContent() : "";
      const status = card ? await card.getAttribute("data-status") : null;
      if (status === c.status && (!c.contains || text.includes(c.contains))) return { text, ms: Date.now() - t0 };
      if (Date.now() - t0 > (c.timeoutMs || 20000)) throw new Error(`the kiosk shows ${status}: ${text}`);
    }
  },
  async screenshot(c) { await page.screenshot({ path: c.path, fullPage: true }); return {}; },
};

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let c;
  try { c = JSON.parse(line); } catch (e) { out({ ok: false, error: "not JSON: " + e }); continue; }
  if (c.do === "quit") break;
  const step = steps[c.do];
  if (!step) { out({ ok: false, error: "unknown step " + c.do }); continue; }
  try { out({ ok: true, ...(await step(c)) }); } catch (e) { out({ ok: false, error: String(e) }); }
}
await browser.close();
