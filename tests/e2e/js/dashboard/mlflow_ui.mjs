// The MLflow UI under trainflow's Content-Security-Policy: the run's page, its metric chart and its
// image artifact load and show. The runner reports every CSP violation and page error; the test
// requires none.
export default async function mlflowUi({ page, context, options, step, shot }) {
  const { origin, authorization, experimentId, runId, runName, part } = options;
  const result = {};
  // The MLflow UI signs in with HTTP Basic (the browser's prompt); send it on every request.
  await context.setExtraHTTPHeaders({ Authorization: authorization });
  if (part === "html") return htmlArtifact({ page, options, step, shot });

  step("the run's page");
  await page.goto(`${origin}/#/experiments/${experimentId}/runs/${runId}`);
  await page.getByText(runName).first().waitFor({ timeout: 60000 });
  result.runNameShown = await page.getByText(runName).first().isVisible();
  result.policy = (await page.request.get(`${origin}/`)).headers()["content-security-policy"];
  await shot("run");

  step("the run's metric chart");
  await page.goto(`${origin}/#/experiments/${experimentId}/runs/${runId}/model-metrics`);
  await page.getByText("loss").first().waitFor({ timeout: 30000 });
  await shot("metrics");

  step("the run's artifacts: the image is shown");
  await page.goto(`${origin}/#/experiments/${experimentId}/runs/${runId}/artifacts`);
  await page.getByText("plot.png").first().click();
  await page.locator("img").filter({ has: page.locator(":scope") }).first().waitFor({ timeout: 30000 }).catch(() => {});
  await page.waitForTimeout(2000); // let late requests (workers, fonts, telemetry) report what they broke
  result.images = await page.evaluate(() =>
    [...document.querySelectorAll("img")].filter((img) => img.complete && img.naturalWidth > 0).map((img) => img.src.slice(0, 30)),
  );
  await shot("artifact");
  return result;
}

// An HTML artifact is shown (framed as a blob: URL, which inherits the UI's policy), and its
// inline script is blocked: a report of exactly that violation is expected.
async function htmlArtifact({ page, options, step, shot }) {
  const { origin, experimentId, runId } = options;
  const result = {};
  step("an HTML artifact is shown, and its script does not run");
  await page.goto(`${origin}/#/experiments/${experimentId}/runs/${runId}/artifacts`);
  await page.getByText("page.html").first().click();
  await page.locator("iframe").first().waitFor({ timeout: 30000 });
  await page.waitForTimeout(2000);
  result.htmlScriptRan = await page.evaluate(() => window.top.__htmlArtifactRan === true);
  result.heading = await page.frameLocator("iframe").first().locator("h1").textContent();
  await shot("html");
  return result;
}
