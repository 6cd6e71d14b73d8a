// Parameter sweeps in the dashboard: a person uploads a script, opens the sweep form from the
// new-job page, lists two params as a grid (2 × 2 = 4 trials), ranks them by a metric, and
// watches the sweep page until every trial has ended, ranked best first.
export default async function sweeps({ page, options, step, shot }) {
  const { origin, username, password, trainScript } = options;
  const result = {};

  step("register (which signs in)");
  await page.goto(`${origin}/train/register`);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByLabel("Password again").fill(password);
  await page.getByRole("button", { name: "Create the account" }).click();
  await page.waitForURL(`${origin}/train/`);

  step("upload the script on the new-job page, then open the sweep form from there");
  await page.locator("#new-job").click();
  await page.waitForURL(`${origin}/train/new`);
  await page.locator("#file").setInputFiles({ name: "train.py", mimeType: "text/x-python", buffer: Buffer.from(trainScript) });
  await page.locator("#upload-text").filter({ hasText: "Uploaded train.py." }).waitFor();
  await page.locator("#new-sweep-link").click();
  await page.waitForURL(`${origin}/train/sweeps/new`);

  step("random shows trials and seed; the grid hides them");
  await page.locator("#strategy").selectOption("random");
  result.randomFields = await page.locator("#trials").isVisible();
  await page.locator("#strategy").selectOption("grid");
  result.gridFields = await page.locator("#trials").isVisible();

  step("a grid of two params, ranked by val_loss, highest first");
  await page.locator("#script option").nth(1).waitFor({ state: "attached" });
  await page.locator("#script").selectOption({ index: 1 });
  await page.getByLabel("Name", { exact: true }).fill("grid-in-the-browser");
  for (const [key, values] of [["lr", "0.1, 0.01"], ["batch", "32, 64"]]) {
    await page.locator("#add-sweep-param").click();
    await page.locator(".sweep-param-name").last().fill(key);
    await page.locator(".sweep-param-values").last().fill(values);
  }
  result.trialCount = await page.locator("#trial-count").textContent();
  await page.locator("#metric").fill("val_loss");
  await page.locator("#goal").selectOption("max");
  await shot("new-sweep");
  await page.locator("#submit-sweep").click();
  await page.waitForURL(/\/train\/sweeps\/\d+$/);
  result.sweepId = Number(page.url().split("/").pop());

  step("every trial runs to its end, live, and the page ranks them");
  await page.locator("#trials tbody tr").nth(3).waitFor();
  result.firstDone = await page.locator("#sweep-done").textContent();
  await page.locator("#sweep-done").filter({ hasText: "4 of 4 done" }).waitFor({ timeout: 150_000 });
  await page.locator('#sweep-status [data-status="FINISHED"]').waitFor({ timeout: 30_000 });
  await page.waitForFunction(() => [...document.querySelectorAll("#trials .col-value")].every((c) => c.textContent !== "—"));
  result.rows = await page.locator("#trials tbody tr").evaluateAll((rows) =>
    rows.map((row) => ({
      rank: row.querySelector(".col-rank").textContent,
      status: row.querySelector(".col-status [data-status]").dataset.status,
      value: row.querySelector(".col-value").textContent,
      lr: row.querySelector('[data-param="lr"]').textContent,
      batch: row.querySelector('[data-param="batch"]').textContent,
      job: row.dataset.job,
    })),
  );
  result.valueHeader = await page.locator("#value-column").textContent();
  result.compare = await page.locator("#compare-all").getAttribute("href");
  result.rerunHidden = await page.locator("#rerun-failed").isHidden();
  result.cancelHidden = await page.locator("#cancel-sweep").isHidden();
  await shot("sweep-finished");

  step("a trial's page names its sweep");
  await page.goto(`${origin}/train/jobs/${result.rows[0].job}`);
  await page.locator("#job-sweep").waitFor();
  result.trialPage = {
    sweep: await page.locator("#job-sweep").textContent(),
    href: await page.locator("#job-sweep").getAttribute("href"),
    runName: await page.locator('#job-summary [data-field="runName"]').textContent(),
  };

  step("the list of sweeps, from the navigation");
  await page.locator("nav.nav a", { hasText: "Sweeps" }).click();
  await page.waitForURL(`${origin}/train/sweeps`);
  await page.locator(`#sweep-${result.sweepId}`).waitFor();
  result.listed = await page.locator(`#sweep-${result.sweepId} td`).allTextContents();
  await shot("sweeps");
  return result;
}
