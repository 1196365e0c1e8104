// Plays a camera's newest ready clip on the gateway's camera wall in Debian's headless
// Chromium. Usage: node wall_clip.mjs WALL_URL CAMERA TIMEOUT_MS
// Prints {"ok":true,"clips":N,"width":…,"height":…,"duration":…} or {"ok":false,"error":…}.
import { launch } from "./chromium.mjs";

const [url, camera, timeoutMs = "20000"] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.setDefaultTimeout(Number(timeoutMs));
  await page.goto(url);
  const tile = page.locator(".tile", { has: page.locator(`video[data-camera="${camera}"]`) });
  await tile.locator("button.show-clips").click();
  await tile.locator(".clips a.clip").first().waitFor();
  const clips = await tile.locator(".clips li").count();
  await tile.locator(".clips a.clip").first().click();
  const video = tile.locator(".replay video");
  await video.waitFor();
  await page.waitForFunction((el) => el.readyState >= 2 && el.videoWidth > 0 && el.currentTime > 0.3, await video.elementHandle());
  const v = await video.evaluate((el) => ({ width: el.videoWidth, height: el.videoHeight, duration: el.duration }));
  console.log(JSON.stringify({ ok: true, clips, ...v }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e) }));
} finally {
  await browser.close();
}
