// Opens one page in headless Chromium and prints what it computed, as JSON on stdout.
//
// Reads a JSON object on stdin:
//   url            the page to open
//   routes         optional: {absolute URL: {body, contentType}}, answered inside the browser, so
//                  that a test page is on the server's own origin without the server knowing it
//   init           optional: any JSON value, set as window.__options before the page's scripts run
//   executablePath the Chromium binary
//   timeoutMs      how long to wait for window.__result
//   screenshot     optional: where to save a PNG of the page at the end
// Prints {result, timedOut, progress, console, errors}: result is window.__result, progress is
// window.__progress (whatever the page recorded so far, for a page that timed out).
import { chromium } from "playwright-core";

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

async function main() {
  const options = await readStdin();
  const output = { result: null, timedOut: false, progress: null, console: [], errors: [] };
  const browser = await chromium.launch({
    executablePath: options.executablePath,
    args: ARGS,
    headless: true,
  });
  try {
    const page = await browser.newPage();
    page.on("console", (message) => output.console.push(`${message.type()}: ${message.text()}`));
    page.on("pageerror", (error) => output.errors.push(String(error.stack || error)));
    for (const [url, { body, contentType }] of Object.entries(options.routes ?? {})) {
      await page.route(url, (route) => route.fulfill({ status: 200, contentType, body }));
    }
    await page.addInitScript((init) => {
      window.__options = init;
    }, options.init ?? null);
    await page.goto(options.url);
    try {
      await page.waitForFunction(() => window.__result !== undefined, null, {
        timeout: options.timeoutMs,
        polling: 100,
      });
    } catch (error) {
      if (error.name !== "TimeoutError") throw error;
      output.timedOut = true;
    }
    const state = await page.evaluate(() => ({ result: window.__result, progress: window.__progress }));
    output.result = state.result ?? null;
    output.progress = state.progress ?? null;
    if (options.screenshot) await page.screenshot({ path: options.screenshot });
  } finally {
    await browser.close();
  }
  process.stdout.write(`${JSON.stringify(output)}\n`);
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
