// The researcher's workbench: compare jobs (two ended, one running, one another user's), read
// the charts' legends, labels and PNGs, the params table and its "only differences"; then one
// job's own charts and its artifacts' previews.
import { signIn } from "../sign_in.mjs";
import { readFile } from "node:fs/promises";

export default async function compare({ page, options, step, shot }) {
  const { origin, username, password, jobs, fast, running } = options;
  const result = {};

  step("sign in");
  await signIn(page, origin, username, password);

  step("compare: every chart drawn, every history loaded");
  await page.goto(`${origin}/train/compare?jobs=${jobs.join(",")}`);
  await page.locator('.compare-page[data-state="ready"]').waitFor({ timeout: 60_000 });
  const loss = page.locator('#charts .chart[data-metric="loss"]');
  await loss.and(page.locator('[data-drawn="true"][data-metrics="train_loss val_loss"]')).waitFor();
  await page.waitForFunction(() => document.querySelectorAll('#charts .chart .u-legend .u-series').length >= 9); // 3 + 6 rows: x and the series of each chart
  const compare = {};
  compare.missing = await page.locator("#compare-missing li").allTextContents();
  compare.loadingHidden = await page.locator("#compare-loading").isHidden();
  compare.listed = await page.locator("#compare-jobs li").evaluateAll((items) => items.map((li) => li.dataset.job));
  compare.charts = {};
  for (const metric of ["loss", "accuracy"]) compare.charts[metric] = await chartInfo(page, metric);
  await shot("compare");

  step("the running job's curve grows while the page is open");
  const livePoints = async () => Number(await loss.getAttribute("data-points"));
  const liveLegend = () => legendOf(page, "loss").then((rows) => rows.find(([label]) => label.startsWith(`#${running} `))?.[1]);
  compare.livePoints = [await livePoints()];
  compare.liveLegend = [await liveLegend()];
  await page.waitForFunction((n) => Number(document.querySelector('#charts .chart[data-metric="loss"]').dataset.points) >= n + 3, compare.livePoints[0]);
  await page.waitForFunction(
    ([id, before]) =>
      [...document.querySelectorAll('#charts .chart[data-metric="loss"] .u-legend .u-series')].some(
        (row) => row.querySelector(".u-label")?.textContent.startsWith(`#${id} `) && row.querySelector(".u-value")?.textContent !== before,
      ),
    [running, compare.liveLegend[0]],
  );
  compare.livePoints.push(await livePoints());
  compare.liveLegend.push(await liveLegend());

  step("the params table");
  compare.table = await page.locator("#compare-diff tbody tr[data-param]").evaluateAll((rows) =>
    Object.fromEntries(rows.map((row) => [row.dataset.param, { differs: row.dataset.differs, cells: [...row.querySelectorAll("td")].map((td) => td.textContent) }])),
  );
  const same = page.locator('#compare-diff tr[data-param="epochs"]');
  const differing = page.locator('#compare-diff tr[data-param="lr"]');
  compare.sameRowVisible = await same.isVisible();
  await page.getByLabel("Only differences").check();
  compare.sameRowVisibleWhenOnlyDifferences = await same.isVisible();
  compare.differingRowVisibleWhenOnlyDifferences = await differing.isVisible();
  await shot("differences");
  await page.getByLabel("Only differences").uncheck();

  step("Save PNG");
  compare.png = await savePng(page, loss);

  step("a metric put on another chart");
  await page.locator('#charts .chart[data-metric="accuracy"] .chart-add').focus();
  await page.locator('#charts .chart[data-metric="accuracy"] .chart-add').selectOption("train_loss");
  await page.locator('#charts .chart[data-metric="accuracy"][data-metrics="accuracy train_loss"][data-drawn="true"]').waitFor();
  compare.moved = await page.locator('#charts .chart[data-metric="accuracy"]').getAttribute("data-metrics");
  await shot("moved");
  await page.setViewportSize({ width: 375, height: 740 });
  compare.phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await shot("phone");
  await page.setViewportSize({ width: 1280, height: 800 });
  result.compare = compare;

  step("what the page refuses");
  result.refusals = {};
  for (const [name, list] of [
    ["tooMany", Array.from({ length: 21 }, (_, i) => i + 1).join(",")],
    ["one", String(jobs[0])],
    ["invalid", "1,two"],
  ]) {
    await page.goto(`${origin}/train/compare?jobs=${list}`);
    result.refusals[name] = await page.locator("#compare-problem").textContent();
  }

  step("one job's charts");
  await page.goto(`${origin}/train/jobs/${fast}`);
  const jobLoss = page.locator('#charts .chart[data-metric="loss"][data-drawn="true"]');
  await jobLoss.and(page.locator('[data-points="24"]')).waitFor();
  const job = { loss: await chartInfo(page, "loss") };
  job.png = await savePng(page, jobLoss);
  await page.locator("#charts-group").click();
  await page.locator('#charts .chart[data-metric="val_loss"][data-drawn="true"]').waitFor();
  job.ungrouped = await page.locator("#charts .chart").evaluateAll((charts) => charts.map((c) => c.dataset.metric));
  await shot("job-charts");
  result.job = job;

  step("artifact previews");
  const previews = {};
  const open = async (path) => {
    await page.locator(`#artifacts button[data-preview="${path}"]`).click();
    const area = page.locator(`#artifacts .preview-area[data-preview="${path}"]`);
    await area.and(page.locator('[data-loaded="true"]')).waitFor();
    return area;
  };
  await page.locator('#artifacts button[data-path="weights.bin"]').waitFor();
  const image = await open("plot.png");
  await image.locator("img").evaluate((img) => img.decode());
  previews.image = await image.locator("img").evaluate((img) => ({ width: img.naturalWidth, height: img.naturalHeight, scheme: img.src.split(":")[0] }));
  const csv = await open("curve.csv");
  previews.csv = {
    header: await csv.locator("thead th").allTextContents(),
    rows: await csv.locator("tbody tr").evaluateAll((rows) => rows.map((row) => [...row.cells].map((cell) => cell.textContent))),
    note: await csv.locator(".preview-note").textContent(),
  };
  previews.json = await (await open("config.json")).locator("pre").textContent();
  previews.text = await (await open("train.log")).locator("pre").textContent();
  await page.locator('#artifacts button[data-path="metrics"]').click();
  const metricFile = await open("metrics/loss");
  previews.metricFile = await metricFile.locator("tbody tr").evaluateAll((rows) => rows.map((row) => [...row.cells].slice(0, 2).map((cell) => cell.textContent)));
  previews.injected = await page.evaluate(() => document.querySelectorAll("#artifacts script, #artifacts b, #artifacts [onerror]").length);
  previews.binaryPreview = await page.locator('#artifacts button[data-preview="weights.bin"]').count();
  const [binary] = await Promise.all([page.waitForEvent("download"), page.locator('#artifacts button[data-path="weights.bin"]').click()]);
  previews.binary = [...(await readFile(await binary.path()))];
  await shot("previews");
  result.previews = previews;
  return result;
}

/** A chart's metrics, axis labels and legend ([label, value] per series, without hovering). */
async function chartInfo(page, metric) {
  const chart = page.locator(`#charts .chart[data-metric="${metric}"]`);
  await page.waitForFunction(
    (m) => {
      const values = [...document.querySelectorAll(`#charts .chart[data-metric="${m}"] .u-legend .u-series .u-value`)];
      return values.length > 1 && values.every((v) => v.textContent && v.textContent !== "--");
    },
    metric,
  );
  return {
    metrics: await chart.getAttribute("data-metrics"),
    xLabel: await chart.getAttribute("data-x-label"),
    yLabel: await chart.getAttribute("data-y-label"),
    legend: await legendOf(page, metric),
  };
}

async function legendOf(page, metric) {
  const rows = await page
    .locator(`#charts .chart[data-metric="${metric}"] .u-legend .u-series`)
    .evaluateAll((els) => els.map((row) => [row.querySelector(".u-label")?.textContent ?? "", row.querySelector(".u-value")?.textContent ?? ""]));
  return rows.slice(1); // the first is x
}

async function savePng(page, chart) {
  const [download] = await Promise.all([page.waitForEvent("download"), chart.locator(".chart-save").click()]);
  const bytes = await readFile(await download.path());
  return { name: download.suggestedFilename(), magic: bytes.subarray(0, 8).toString("hex"), size: bytes.length };
}
