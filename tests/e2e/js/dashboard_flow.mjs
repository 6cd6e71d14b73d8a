// Drives the dashboard in headless Chromium through a user flow and prints what it saw, as JSON.
//
// Reads a JSON object on stdin:
//   origin          the server, e.g. http://127.0.0.1:5123
//   flow            a module in tests/e2e/js/dashboard/ whose default export is
//                   async ({page, context, options, step, shot, api}) => result
//   options         any JSON value, handed to the flow
//   executablePath  the Chromium binary
//   timeoutMs       the whole flow's time limit
//   screenshots     a folder: shot(name) saves <flow>-<name>.screenshot.png there
// Prints {result, error, steps, console, pageErrors, csp, dialogs}: `steps` are the names the flow
// passed to step(), so a failure says how far it got; on failure a last screenshot is taken.
import { chromium } from "playwright-core";
import path from "node:path";
import { pathToFileURL } from "node:url";

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
  const output = { result: null, error: null, steps: [], console: [], pageErrors: [], csp: [], dialogs: [] };
  const flowFile = path.join(path.dirname(new URL(import.meta.url).pathname), "dashboard", options.flow);
  const { default: flow } = await import(pathToFileURL(flowFile).href);
  const browser = await chromium.launch({ executablePath: options.executablePath, args: ARGS, headless: true });
  const shot = async (page, name) => {
    const file = path.join(options.screenshots, `${path.parse(options.flow).name}-${name}.screenshot.png`);
    await page.screenshot({ path: file, fullPage: true });
  };
  let page;
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "en-US" });
    context.setDefaultTimeout(options.stepTimeoutMs ?? 20000);
    // A violation of the Content-Security-Policy is reported by the page itself, across reloads.
    await context.exposeBinding("__reportCsp", (_source, violation) => output.csp.push(violation));
    await context.addInitScript(() => {
      document.addEventListener("securitypolicyviolation", (e) =>
        window.__reportCsp({ directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample }),
      );
    });
    page = await context.newPage();
    page.on("console", (message) => output.console.push(`${message.type()}: ${message.text()}`));
    page.on("pageerror", (error) => output.pageErrors.push(String(error.stack || error)));
    page.on("dialog", async (dialog) => {
      output.dialogs.push(dialog.message());
      await dialog.dismiss();
    });
    const step = (name) => output.steps.push(name);
    const api = (pathname, init = {}) => apiCall(options.origin, page, pathname, init);
    const run = flow({ page, context, options: { ...options.options, origin: options.origin }, step, shot: (n) => shot(page, n), api });
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the flow took over ${options.timeoutMs} ms`)), options.timeoutMs);
    });
    try {
      output.result = await Promise.race([run, timeout]);
    } finally {
      clearTimeout(timer);
    }
  } catch (error) {
    output.error = String(error.stack || error);
    if (page) await shot(page, "failure").catch(() => {});
  } finally {
    await browser.close();
  }
  process.stdout.write(`${JSON.stringify(output)}\n`);
}

/**
 * Calls the API from Node with the page's own session (the tokens in its sessionStorage), as a
 * second client would: for what the flow does behind the page's back (submitting a job).
 */
async function apiCall(origin, page, pathname, { method = "GET", json, form } = {}) {
  const session = await page.evaluate(() => JSON.parse(sessionStorage.getItem("trainflow.session") ?? "null"));
  const headers = session ? { Authorization: `Bearer ${session.access}` } : {};
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = new FormData();
    body.set("file", new Blob([form.content]), form.filename);
  }
  const response = await fetch(origin + pathname, { method, headers, body });
  const text = await response.text();
  let data = text;
  try {
    data = JSON.parse(text);
  } catch {
    // not JSON
  }
  if (!response.ok) throw new Error(`${method} ${pathname}: ${response.status} ${text.slice(0, 500)}`);
  return data;
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
