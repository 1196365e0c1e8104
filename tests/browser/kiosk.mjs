// Uses the kiosk page like a resident would, in Debian's headless Chromium: searches a service,
// opens it, finds the grid of an address, hands in a report, and asks for its progress until
// the status is `waitFor` (or `timeout` ms pass).
// Usage: node kiosk.mjs URL [waitFor=registered] [timeoutMs=30000]
// With SCREENSHOT=prefix in the environment, saves prefix-items.png, -grid.png, -status.png.
// Prints one JSON line with what the page showed; exits 1 when a step failed.
import { launch } from "./chromium.mjs";

const [url, waitFor = "registered", timeout = "30000"] = process.argv.slice(2);
if (!url) {
  console.error("usage: node kiosk.mjs URL [waitFor] [timeoutMs]");
  process.exit(2);
}
const browser = await launch();
const shot = async (page, name) => {
  if (process.env.SCREENSHOT) await page.screenshot({ path: `${process.env.SCREENSHOT}-${name}.png`, fullPage: true });
};
const out = { steps: [] };
let code = 0;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("console", (m) => console.error("page:", m.text()));
  page.setDefaultTimeout(10000);
  await page.goto(url);
  // The page trades the token in its fragment for an HttpOnly session cookie, then drops it.
  await page.waitForFunction(() => !location.href.includes("token="));
  out.tokenHidden = !page.url().includes("token=");
  out.cookieHidden = await page.evaluate(() => !document.cookie.includes("gridedge_device"));

  // 办事指南: search, then open the first hit.
  await page.fill("#search-q", "低保");
  await page.click("#search-go");
  await page.waitForSelector("#hits li[data-code]");
  out.hits = await page.$$eval("#hits li[data-code]", (l) => l.map((e) => e.dataset.code));
  await page.click("#hits li[data-code]");
  await page.waitForSelector("#item-detail .card");
  out.item = {
    code: await page.getAttribute("#item-detail .card", "data-code"),
    materials: await page.$$eval("#item-detail .materials li", (l) => l.length),
    steps: await page.$$eval("#item-detail .steps li", (l) => l.map((e) => e.textContent)),
  };
  await shot(page, "items");
  out.steps.push("search");

  // 我的网格: an address.
  await page.click("nav button[data-tab=grids]");
  await page.fill("#grid-q", "红星路64号");
  await page.click("#grid-go");
  await page.waitForSelector("#grids .grid");
  out.grid = {
    code: await page.getAttribute("#grids .grid", "data-code"),
    staff: await page.$$eval("#grids .grid:first-child .staff", (l) => l.map((e) => e.textContent)),
    party: await page.$$eval("#grids .grid:first-child .party li", (l) => l.map((e) => e.textContent)),
  };
  await shot(page, "grid");
  out.steps.push("grid");

  // 我要反映: a report about that grid.
  await page.click("nav button[data-tab=submit]");
  await page.waitForFunction(() => document.querySelectorAll("#sub-grid option").length > 1);
  await page.selectOption("#sub-category", "report");
  await page.selectOption("#sub-grid", out.grid.code);
  await page.fill("#sub-title", "东风巷路灯不亮");
  await page.fill("#sub-desc", "东风巷12号门口路灯坏了三天");
  await page.fill("#sub-name", "王女士");
  await page.fill("#sub-phone", "13800138000");
  await page.click("#sub-go");
  await page.waitForSelector("#receipt");
  out.receipt = (await page.textContent("#receipt")).trim();
  out.steps.push("submit");

  // 进度查询: ask until central's status has come back.
  await page.click("nav button[data-tab=status]");
  const until = Date.now() + Number(timeout);
  for (;;) {
    await page.click("#status-go");
    await page.waitForSelector("#status-out .card");
    out.status = await page.getAttribute("#status-out .card", "data-status");
    out.statusText = (await page.textContent("#status-out .state")).trim();
    if (out.status === waitFor || Date.now() > until) break;
    await page.waitForTimeout(500);
  }
  await shot(page, "status");
  out.steps.push("status");

  // 学习资料: the list, and one document opened.
  await page.click("nav button[data-tab=content]");
  await page.waitForSelector("#content-list li[data-id]");
  out.content = await page.$$eval("#content-list li[data-id]", (l) => l.map((e) => e.dataset.id));
  await page.click("#content-list li[data-id='doc-003']");
  await page.waitForSelector("#content-view pre.doc");
  out.document = (await page.textContent("#content-view pre.doc")).slice(0, 40);
  out.steps.push("content");
  out.link = (await page.textContent("#link")).trim();
  out.message = (await page.textContent("#message")).trim();
} catch (e) {
  out.error = String(e);
  code = 1;
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
process.exit(code);
