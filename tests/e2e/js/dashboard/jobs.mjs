// Slice 2 of the dashboard: a person uploads a script (a refused file first, then by drag and
// drop), submits it with parameters, watches its output, progress and metrics live (through a
// reload while the stream cannot reconnect at first), downloads the log, sees the form refilled
// to run it again, cancels a second job, and signs out.
import { readFile } from "node:fs/promises";

export default async function jobs({ page, options, step, shot }) {
  const { origin, username, password, trainScript, sleepScript, epochs } = options;
  const result = {};
  const statusOf = (status) => page.locator(`#job-status [data-status="${status}"]`);
  const lines = () => page.locator("#console .line").evaluateAll((els) => els.map((e) => [e.className, e.textContent]));
  const progressValue = () => page.locator("#job-progress").evaluate((e) => (e.hasAttribute("value") ? e.value : null));

  step("register (which signs in)");
  await page.goto(`${origin}/train/register`);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByLabel("Password again").fill(password);
  await page.getByRole("button", { name: "Create the account" }).click();
  await page.waitForURL(`${origin}/train/`);

  step("a file the server refuses: its message is shown");
  await page.locator("#new-job").click();
  await page.waitForURL(`${origin}/train/new`);
  await page.locator("#file").setInputFiles({ name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("hello") });
  await page.locator("#upload-error").filter({ hasText: /\S/ }).waitFor();
  result.refused = await page.locator("#upload-error").textContent();
  await shot("upload-refused");

  step("a script dropped on the page is uploaded");
  const dataTransfer = await page.evaluateHandle((source) => {
    const transfer = new DataTransfer();
    transfer.items.add(new File([source], "train.py", { type: "text/x-python" }));
    return transfer;
  }, trainScript);
  await page.dispatchEvent("#drop-zone", "drop", { dataTransfer });
  await page.locator("#upload-text").filter({ hasText: "Uploaded train.py." }).waitFor();
  result.upload = await page.locator("#upload-progress").evaluate((e) => ({ value: e.value, max: e.max }));
  result.chosenScript = await page.locator("#script option:checked").textContent();
  result.uploadError = await page.locator("#upload-error").isHidden();

  step("the job's settings");
  await page.getByLabel("Experiment").fill("dashboard-e2e");
  await page.getByLabel("Run name").fill("first run");
  await page.getByLabel("Timeout (seconds)").fill("300");
  await page.getByLabel("Retries").fill("2");
  for (const [key, value] of [["lr", "0.01"], ["epochs", String(epochs)]]) {
    await page.locator("#add-param").click();
    await page.locator(".param-key").last().fill(key);
    await page.locator(".param-value").last().fill(value);
  }
  await shot("new-job");
  await page.locator("#submit-job").click();
  await page.waitForURL(/\/train\/jobs\/\d+$/);
  result.jobId = Number(page.url().split("/").pop());

  step("output, metrics and progress arrive while it runs");
  await page.locator("#console .line", { hasText: "step 1" }).waitFor({ timeout: 90_000 });
  await page.waitForFunction(() => document.querySelector("#job-progress")?.value >= 2);
  const first = await progressValue();
  await page.waitForFunction((v) => document.querySelector("#job-progress")?.value >= v + 2, first);
  result.progressMoved = [first, await progressValue()];
  await page.locator('#metrics tr[data-metric="loss"]').waitFor();
  await shot("running");

  step("a reload mid-run, with the stream refused for a while");
  await page.route("**/jobs/*/events*", (route) => route.abort());
  await page.reload();
  await page.locator('#live-state[data-state="reconnecting"]').waitFor();
  result.reconnecting = await page.locator("#live-state").textContent();
  result.runningAtReload = await statusOf("RUNNING").count();
  await shot("reconnecting");
  await page.unroute("**/jobs/*/events*");
  await page.locator('#live-state[data-state="open"], #live-state[data-state="ended"]').waitFor();

  step("the job succeeds");
  await statusOf("SUCCEEDED").waitFor({ timeout: 90_000 });
  await page.locator('#live-state[data-state="ended"]').waitFor();
  await page.locator('#job-summary [data-field="exitCode"]').waitFor();
  await page.waitForFunction((n) => document.querySelector("#job-progress")?.value >= n, epochs);
  await page.setViewportSize({ width: 1280, height: 2400 }); // the console draws only the lines in view
  await page.waitForFunction((n) => document.querySelectorAll("#console .line").length >= n, epochs + 6);
  result.lines = await lines();
  result.lineCount = await page.locator("#console").getAttribute("data-lines");
  result.coloured = await page.locator("#console .line .ansi-fg-2.ansi-bold").textContent();
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.locator("#console-search").fill("STEP 1");
  await page.locator("#console-search-count").filter({ hasText: "of" }).waitFor();
  result.search = [await page.locator("#console-search-count").textContent()];
  result.search.push(await page.locator("#console .line.current").textContent());
  await page.getByRole("button", { name: "Previous match" }).click();
  await page.locator("#console .line.current").filter({ hasText: "step 18" }).waitFor();
  result.search.push(await page.locator("#console-search-count").textContent());
  result.search.push(await page.locator("#console .line.current mark").textContent());
  await shot("search");
  await page.locator("#console-search").fill("");
  result.progressText = await page.locator("#job-progress-text").textContent();
  result.loss = await page.locator('#metrics tr[data-metric="loss"] td').allTextContents();
  result.runLink = await page.locator("#mlflow-run").getAttribute("href");
  result.exitCode = await page.locator('#job-summary [data-field="exitCode"]').textContent();
  result.params = await page.locator('#job-summary [data-field="params"] li').allTextContents();
  result.injected = await page.evaluate(() => document.querySelectorAll("img, [onerror], [src='x']").length);
  result.cancelHidden = await page.locator("#cancel").isHidden();
  const chart = page.locator('#charts .chart[data-metric="loss"]');
  await chart.and(page.locator(`[data-points="${epochs}"]`)).locator("canvas").first().waitFor();
  // The mouse works in the viewport: bring the chart into it (the job page's cards above it push
  // it below the fold), and read its box after the page has settled.
  await chart.scrollIntoViewIfNeeded();
  const box = await chart.locator(".u-over").boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  result.chartHover = await chart.locator(".u-legend .u-series").nth(1).locator(".u-value").textContent();
  await page.mouse.move(0, 0);
  await shot("succeeded");
  await page.mouse.move(box.x + box.width * 0.2, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height / 2, { steps: 5 });
  await page.mouse.up();
  await chart.and(page.locator('[data-zoomed="true"]')).waitFor();
  result.zoom = [await chart.getAttribute("data-zoomed")];
  await shot("zoomed");
  await chart.locator(".u-over").dblclick();
  await chart.and(page.locator('[data-zoomed="false"]')).waitFor();
  result.zoom.push(await chart.getAttribute("data-zoomed"));
  await page.locator("section.charts", { has: page.locator("#charts") }).getByRole("button", { name: "Time", exact: true }).click();
  await chart.locator("canvas").first().waitFor();
  result.chartByTime = await chart.getAttribute("data-points");

  step("the whole log downloads");
  const [download] = await Promise.all([page.waitForEvent("download"), page.locator("#download-log").click()]);
  result.download = { name: download.suggestedFilename(), text: await readFile(await download.path(), "utf8") };

  step("the run's artifacts: the job's output folder");
  await page.locator('#artifacts button[data-path="model.txt"]').waitFor();
  const top = await page.locator("#artifacts > li > button").evaluateAll((els) => els.map((e) => e.dataset.path));
  await page.locator('#artifacts button[data-path="plots"]').click();
  const nested = page.locator('#artifacts button[data-path="plots/curve.csv"]');
  await nested.waitFor();
  const [model] = await Promise.all([page.waitForEvent("download"), page.locator('#artifacts button[data-path="model.txt"]').click()]);
  result.artifacts = { top, nested: await nested.getAttribute("data-path"), model: await readFile(await model.path(), "utf8") };
  await shot("artifacts");

  step("phone width");
  await page.setViewportSize({ width: 375, height: 740 });
  result.phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await shot("phone");
  await page.setViewportSize({ width: 1280, height: 800 });

  step("run again: the form is filled from the job");
  await page.locator("#rerun").click();
  await page.waitForURL(/\/train\/new\?rerun=\d+$/);
  await page.waitForFunction(() => document.querySelector("#experiment").value !== "");
  result.rerun = {
    experiment: await page.locator("#experiment").inputValue(),
    timeout: await page.locator("#timeout").inputValue(),
    retries: await page.locator("#max-retries").inputValue(),
    script: await page.locator("#script").inputValue(),
    params: await page.locator(".param-row").evaluateAll((rows) =>
      rows.map((row) => [row.querySelector(".param-key").value, row.querySelector(".param-value").value]),
    ),
  };
  await shot("rerun");

  step("a second, sleeping job is cancelled");
  await page.getByRole("link", { name: "New job" }).first().click();
  await page.waitForURL(`${origin}/train/new`);
  await page.locator("#file").setInputFiles({ name: "sleep.py", mimeType: "text/x-python", buffer: Buffer.from(sleepScript) });
  await page.locator("#upload-text").filter({ hasText: "Uploaded sleep.py." }).waitFor();
  await page.locator("#submit-job").click();
  await page.waitForURL(/\/train\/jobs\/\d+$/);
  result.sleepingJobId = Number(page.url().split("/").pop());
  await page.locator("#console .line", { hasText: "sleeping" }).waitFor({ timeout: 90_000 });
  await statusOf("RUNNING").waitFor();
  await page.locator("#cancel").click();
  await page.locator("#cancel-dialog-confirm").click(); // the question asked first (#14)
  await statusOf("CANCELLED").waitFor({ timeout: 60_000 });
  await page.locator('#job-summary [data-field="reason"]').waitFor();
  result.cancelReason = await page.locator('#job-summary [data-field="reason"]').textContent();
  await shot("cancelled");

  step("both jobs in the list");
  await page.getByRole("link", { name: "Jobs", exact: true }).click();
  await page.waitForURL(`${origin}/train/`);
  await page.locator(`#job-${result.sleepingJobId} [data-status="CANCELLED"]`).waitFor();
  result.listed = await page.locator("#jobs tbody tr").evaluateAll((rows) =>
    rows.map((row) => [row.dataset.job, row.querySelector("[data-status]").dataset.status]),
  );
  await shot("list");

  step("sign out");
  await page.locator("#sign-out").click();
  await page.waitForURL(/\/train\/signin$/);
  return result;
}
