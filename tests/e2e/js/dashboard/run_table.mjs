// The run table (#14): search kept in the URL, a metric column picked, remembered and sorted
// both ways, tags and a note on a job, the question before a cancel (kept, then confirmed),
// runs picked for comparing, and a finished job deleted with its MLflow run.
import { signIn } from "../sign_in.mjs";

export default async function runTable({ page, options, step, shot }) {
  const { origin, username, password, tagged, deleted, sleeper } = options;
  const result = {};
  const runNames = () => page.locator("#jobs tbody tr .col-run a").allTextContents();
  const settled = () => page.locator(".table-wrap:not([aria-busy])").waitFor();
  const rowsAre = (names) =>
    page.waitForFunction(
      (expected) => JSON.stringify([...document.querySelectorAll("#jobs tbody tr .col-run a")].map((a) => a.textContent)) === expected,
      JSON.stringify(names),
    );

  step("sign in");
  await signIn(page, origin, username, password);
  await page.locator("#jobs tbody tr").nth(3).waitFor();
  await settled();
  result.initial = await runNames();
  await shot("list");

  step("search, kept in the URL");
  await page.locator("#job-search").fill("BETA");
  await rowsAre(["beta"]);
  result.searched = await runNames();
  result.searchUrl = page.url();
  await page.locator("#job-search").fill("");
  await page.locator("#jobs tbody tr").nth(3).waitFor();
  result.afterSearchCleared = await page.locator("#jobs tbody tr").count();

  step("a metric column is picked and sorted both ways");
  await page.locator("#column-picker summary").click();
  await page.locator('#column-picker input[data-kind="metrics"][value="loss"]').check();
  const header = page.locator('th[data-sort="metrics.loss"]');
  await header.waitFor();
  result.metricHeader = (await header.locator("button span").first().textContent()).trim();
  await page.locator("#column-picker summary").click(); // closed again
  await header.locator("button").click();
  await rowsAre(["beta", "gamma", "alpha", "sleeper"]);
  result.ascending = { aria: await page.locator('th[data-sort="metrics.loss"]').getAttribute("aria-sort"), rows: await runNames() };
  await page.locator('th[data-sort="metrics.loss"] button').click();
  await rowsAre(["alpha", "gamma", "beta", "sleeper"]);
  result.descending = { aria: await page.locator('th[data-sort="metrics.loss"]').getAttribute("aria-sort"), rows: await runNames() };
  result.lossCells = await page.locator('#jobs tbody td.col-metric[data-key="loss"]').allTextContents();
  await shot("sorted");

  step("the columns are remembered");
  result.rememberedColumns = await page.evaluate(() => JSON.parse(localStorage.getItem("trainflow.runTable.columns")));
  await page.reload();
  await page.locator('th[data-sort="metrics.loss"][aria-sort="descending"]').waitFor();
  result.metricColumnAfterReload = true;

  step("two runs picked to compare");
  await settled();
  await page.locator("#compare:disabled").waitFor();
  const gammaRow = page.locator("#jobs tbody tr", { has: page.locator(".col-run a", { hasText: "gamma" }) });
  await gammaRow.locator("input.select-run").check();
  await page.locator(`#job-${tagged} input.select-run`).check();
  await page.locator("#compare:not(:disabled)").click();
  await page.waitForURL(/\/train\/compare\?jobs=/);
  result.compareUrl = page.url();

  step("tags and a note on a job");
  await page.goto(`${origin}/train/jobs/${tagged}`);
  await page.locator("#housekeeping").waitFor();
  await page.getByLabel("Tag", { exact: true }).fill("team");
  await page.getByLabel("Value", { exact: true }).fill("vision");
  await page.locator("#add-tag").click();
  await page.locator('#job-tags li[data-key="team"]').waitFor();
  await page.locator("#job-note").fill("lr was too low");
  await page.locator("#save-note").click();
  await page.locator("#note-saved").filter({ hasText: "Saved." }).waitFor();
  await page.reload();
  await page.locator('#job-tags li[data-key="team"]').waitFor();
  result.tags = await page.locator("#job-tags li > span").allTextContents();
  result.note = await page.locator("#job-note").inputValue();
  await shot("housekeeping");

  step("a cancel is asked first: kept, then confirmed");
  let cancelCalls = 0;
  page.on("request", (request) => {
    if (request.url().endsWith(`/jobs/${sleeper}/cancel`)) cancelCalls += 1;
  });
  await page.goto(`${origin}/train/jobs/${sleeper}`);
  await page.locator('#job-status [data-status="RUNNING"]').waitFor();
  await page.locator("#cancel").click();
  await page.locator("#cancel-dialog[open]").waitFor();
  await shot("cancel-question");
  await page.locator("#cancel-dialog-keep").click();
  await page.locator("#cancel-dialog").waitFor({ state: "detached" });
  await page.waitForTimeout(500);
  result.keptRunning = { status: await page.locator("#job-status [data-status]").getAttribute("data-status"), cancelCalls };
  await page.locator("#cancel").click();
  await page.locator("#cancel-dialog-confirm").click();
  await page.locator('#job-status [data-status="CANCELLED"]').waitFor({ timeout: 60_000 });
  result.cancelled = "CANCELLED";

  step("a finished job deleted with its run");
  await page.goto(`${origin}/train/jobs/${deleted}`);
  await page.locator("#delete-job:not([hidden])").click();
  await page.locator("#delete-dialog[open]").waitFor();
  await page.locator("#delete-dialog-option").check();
  await shot("delete-question");
  await page.locator("#delete-dialog-confirm").click();
  await page.waitForURL(`${origin}/train/`);
  await page.locator(`#job-${deleted}`).waitFor({ state: "detached" });
  return result;
}
