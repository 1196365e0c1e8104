// Debian's Chromium, headless, with the flags that work on these machines (no GPU, no sandbox as
// root, no background connections to the closed network). Never a downloaded browser.
import { chromium } from "playwright-core";

export function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
      ...extraArgs,
    ],
  });
}
