// The job page's System panel and the hint for a missing import: a person watches a running job's
// CPU, memory and GPU figures arrive live, sees the job end, opens a job that died of a missing
// module and reads how to declare it; another person cannot open either job.
export default async function system({ page, options, step, shot }) {
  const { origin, users, burnerJob, missingJob, cpuFloor } = options;
  const result = {};
  const signIn = async ({ username, password }) => {
    await page.goto(`${origin}/train/signin`);
    await page.getByLabel("Username").fill(username);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForURL(`${origin}/train/`);
  };
  const figure = (name) => page.locator(`#system-latest [data-system="${name}"]`).textContent();
  const number = (text) => Number.parseFloat(text);

  step("the owner opens the running job");
  await signIn(users.owner);
  await page.goto(`${origin}/train/jobs/${burnerJob}`);
  await page.locator("#system").waitFor();
  result.title = await page.locator("#system > h2").textContent();

  step("its figures arrive while it runs: a busy core, 200 MB, the GPU it was given");
  await page.waitForFunction(
    ({ floor }) => {
      const read = (name) => Number.parseFloat(document.querySelector(`#system-latest [data-system="${name}"]`)?.textContent ?? "");
      return read("cpu") > floor && read("memory") > 150;
    },
    { floor: cpuFloor },
    { timeout: 60_000 },
  );
  result.statusWhileShown = await page.locator("#job-status [data-status]").getAttribute("data-status");
  result.cpu = await figure("cpu");
  result.memory = await figure("memory");
  result.gpu = await figure("gpu-0");
  result.charts = await page.locator("#system-charts .chart .chart-title").allTextContents();
  await shot("system-panel");

  step("the job ends; the panel keeps what it showed");
  await page.locator('#job-status [data-status="SUCCEEDED"]').waitFor({ timeout: 90_000 });
  result.cpuAtEnd = number(await figure("cpu"));

  step("a job that died of a missing module says how to declare it");
  await page.goto(`${origin}/train/jobs/${missingJob}`);
  await page.locator('#job-status [data-status="FAILED"]').waitFor({ timeout: 60_000 });
  const reason = page.locator('#job-summary [data-field="reason"]');
  await reason.filter({ hasText: "No module named" }).waitFor();
  result.reason = await reason.innerText();
  await shot("missing-module");

  step("another person opens neither job");
  await page.locator("#sign-out").click();
  await signIn(users.other);
  result.otherSees = [];
  for (const job of [burnerJob, missingJob]) {
    await page.goto(`${origin}/train/jobs/${job}`);
    await page.getByText("There is no job with this number.").waitFor();
    result.otherSees.push(await page.locator("#system").count());
  }
  return result;
}
