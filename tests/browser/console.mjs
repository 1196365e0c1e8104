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
