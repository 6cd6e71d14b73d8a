// Slice 1 of the dashboard, as a person uses it: sign-in redirect, registration (refused, then
// accepted), the job list kept live by the all-jobs stream, language and theme remembered,
// phone width, an access token refreshed, an expired session, sign in again, sign out.
const TRAIN = "/ajax-api/2.0/mlflow/train";

export default async function basics({ page, options, step, shot, api }) {
  const { origin, username, password, weakPassword, jobFilename, jobScript } = options;
  const result = {};
  const session = () => page.evaluate(() => JSON.parse(sessionStorage.getItem("trainflow.session") ?? "null"));

  step("a signed-out visitor is sent to sign in");
  await page.goto(`${origin}/train/`);
  await page.waitForURL(/\/train\/signin\?next=/);
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await shot("signin");

  step("registration shows the server's refusal");
  await page.getByRole("link", { name: "Create one" }).click();
  await page.waitForURL(`${origin}/train/register`);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password", { exact: true }).fill(weakPassword);
  await page.getByLabel("Password again").fill(weakPassword);
  await page.getByRole("button", { name: "Create the account" }).click();
  const alert = page.getByRole("alert");
  await alert.filter({ hasText: /\S/ }).waitFor();
  result.refusal = await alert.textContent();
  await shot("register-refused");

  step("registration signs the new user in");
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByLabel("Password again").fill(password);
  await page.getByRole("button", { name: "Create the account" }).click();
  await page.waitForURL(`${origin}/train/`);
  await page.getByRole("heading", { name: "Jobs" }).waitFor();
  await page.locator("#no-jobs").filter({ hasText: "No jobs yet." }).waitFor();
  await page.locator('#live-state[data-state="open"]').waitFor();
  result.storage = await page.evaluate(() => ({ session: { ...sessionStorage }, local: { ...localStorage } }));
  await shot("empty");

  step("a job submitted elsewhere appears and its status follows, without polling");
  const listCalls = [];
  page.on("request", (request) => {
    if (request.url().includes(`${TRAIN}/jobs?`)) listCalls.push(Date.now());
  });
  const upload = await api(`${TRAIN}/upload`, { method: "POST", form: { filename: jobFilename, content: jobScript } });
  const job = await api(`${TRAIN}/jobs`, { method: "POST", json: { script_id: upload.script } });
  result.job = job.job;
  const row = page.locator(`#job-${job.job}`);
  await row.locator('[data-status="RUNNING"]').waitFor({ timeout: 60000 });
  // The server runs one job at a time here: a second one waits, and the list says where.
  const second = await api(`${TRAIN}/jobs`, { method: "POST", json: { script_id: upload.script } });
  const waiting = page.locator(`#job-${second.job} [data-status="QUEUED"]`);
  await waiting.filter({ hasText: "in queue" }).waitFor({ timeout: 60000 });
  result.queued = await waiting.textContent();
  await shot("running");
  await row.locator('[data-status="SUCCEEDED"]').waitFor({ timeout: 60000 });
  const secondStatus = page.locator(`#job-${second.job} .status`);
  await secondStatus.filter({ hasNotText: /queue|Queued|Running/ }).waitFor({ timeout: 60000 });
  result.queuedThenRan = await secondStatus.getAttribute("data-status");
  await row.locator(".col-duration").filter({ hasText: /\d/ }).waitFor();
  result.scriptCell = await row.locator(".col-script").textContent();
  result.userCell = await row.locator(".col-user").textContent();
  result.injected = await page.evaluate(() => document.querySelectorAll("img, [onerror], [src='x']").length);
  await shot("succeeded");
  // The status event's own refetch of the page has landed: from here on nothing is due.
  await page.locator(".table-wrap:not([aria-busy])").waitFor();
  const idleFrom = listCalls.length;
  await page.waitForTimeout(3000);
  result.listCallsWhileIdle = listCalls.length - idleFrom;

  step("the language is switched and remembered");
  await page.locator("#language").selectOption("zh-CN");
  await page.getByRole("heading", { name: "作业" }).waitFor();
  await page.reload();
  await page.getByRole("heading", { name: "作业" }).waitFor();
  await row.waitFor();
  result.zh = {
    lang: await page.evaluate(() => document.documentElement.lang),
    status: await row.locator(".status").textContent(),
    signOut: await page.locator("#sign-out").textContent(),
  };
  await shot("zh-CN");
  await page.locator("#language").selectOption("en");
  await page.getByRole("heading", { name: "Jobs" }).waitFor();

  step("the theme is switched and remembered");
  const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  result.theme = { before: await background() };
  await page.locator("#theme").click();
  result.theme.pressed = await page.locator("#theme").getAttribute("aria-pressed");
  await page.reload();
  await row.waitFor();
  result.theme.after = await background();
  result.theme.chosen = await page.evaluate(() => document.documentElement.dataset.theme);
  await shot("dark");

  step("phone width");
  await page.setViewportSize({ width: 375, height: 740 });
  await row.waitFor();
  result.phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await shot("phone");
  await page.setViewportSize({ width: 1280, height: 800 });

  step("a refused access token is refreshed");
  await page.evaluate(() => {
    const value = JSON.parse(sessionStorage.getItem("trainflow.session"));
    sessionStorage.setItem("trainflow.session", JSON.stringify({ ...value, access: "not-a-token" }));
  });
  await page.reload();
  await row.waitFor();
  await page.locator('#live-state[data-state="open"]').waitFor();
  result.refreshed = (await session()).access !== "not-a-token";

  step("an expired session goes back to sign-in with a message");
  await page.evaluate(() => {
    const value = JSON.parse(sessionStorage.getItem("trainflow.session"));
    sessionStorage.setItem("trainflow.session", JSON.stringify({ ...value, access: "x", refresh: "y" }));
  });
  await page.reload();
  await page.waitForURL(/\/train\/signin/);
  result.expired = await page.locator("#flash").textContent();
  result.expiredSession = await session();
  await shot("expired");

  step("sign in again, back where the person was");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${origin}/train/`);
  await row.waitFor();

  step("a job or script the server does not have is 'Page not found'");
  result.missing = {};
  for (const [kind, path] of [["job", `jobs/${job.job + 1000}`], ["script", `scripts/${upload.script + 1000}`]]) {
    await page.goto(`${origin}/train/${path}`);
    await page.locator("#not-found").waitFor();
    result.missing[kind] = [await page.locator("main h1").textContent(), await page.locator("#not-found").textContent()];
  }
  await shot("missing-job");
  await page.goto(`${origin}/train/`);
  await row.waitFor();

  step("sign out");
  const { access } = await session();
  await page.locator("#sign-out").click();
  await page.waitForURL(/\/train\/signin$/);
  result.signedOut = await page.locator("#flash").textContent();
  result.storageAfterSignOut = await page.evaluate(() => sessionStorage.length);
  const me = await fetch(`${origin}/api/me`, { headers: { Authorization: `Bearer ${access}` } });
  result.revokedTokenStatus = me.status;
  await page.goto(`${origin}/train/`);
  await page.waitForURL(/\/train\/signin\?next=/);
  await shot("signed-out");
  return result;
}
