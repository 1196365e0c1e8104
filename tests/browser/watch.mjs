// Opens a page in Debian's headless Chromium and reports its <video data-camera> elements
// twice, `gap` ms apart, once each has played past `minTime` seconds (or `timeout` passes).
// Usage: node watch.mjs URL [minTime=1] [timeoutMs=30000] [gapMs=1500]
// With SCREENSHOT=file.png in the environment, also saves a picture of the page.
// Prints one JSON line: {"first":[…],"second":[…],"notes":[…]} with per video
// {camera, time, width, height}; exits 1 when the page never got there.
import { launch } from "./chromium.mjs";

const [url, minTime = "1", timeout = "30000", gap = "1500"] = process.argv.slice(2);
if (!url) {
  console.error("usage: node watch.mjs URL [minTime] [timeoutMs] [gapMs]");
  process.exit(2);
}
const browser = await launch(["--autoplay-policy=no-user-gesture-required"]);
const videos = () => [...document.querySelectorAll("video[data-camera]")].map((v) => ({
  camera: v.dataset.camera, time: v.currentTime, width: v.videoWidth, height: v.videoHeight,
}));
const notes = () => [...document.querySelectorAll(".note")].map((n) => n.textContent).filter(Boolean);
let code = 0;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 520 } });
  page.on("console", (m) => console.error("page:", m.text()));
  await page.goto(url);
  try {
    await page.waitForFunction(
      (t) => {
        const v = [...document.querySelectorAll("video[data-camera]")];
        return v.length > 0 && v.every((e) => e.currentTime > t && e.videoWidth > 0);
      },
      Number(minTime),
      { timeout: Number(timeout), polling: 200 },
    );
  } catch (e) {
    code = 1;
  }
  const first = await page.evaluate(videos);
  await page.waitForTimeout(Number(gap));
  const second = await page.evaluate(videos);
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT });
  console.log(JSON.stringify({ first, second, notes: await page.evaluate(notes) }));
} finally {
  await browser.close();
}
process.exit(code);
