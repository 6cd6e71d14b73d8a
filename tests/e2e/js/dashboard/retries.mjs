// Retries on the job page: a job whose first attempt failed and whose retry succeeded lists both
// attempts, and each attempt's own output lines are shown on request (issue 14).
import { signIn } from "../sign_in.mjs";

export default async function retries({ page, options, step, shot }) {
  const { origin, username, password, jobId } = options;
  const result = {};
  const texts = (selector) => page.locator(selector).evaluateAll((els) => els.map((e) => e.textContent));

  step("sign in");
  await signIn(page, origin, username, password);

  step("the job page lists its attempts");
  await page.goto(`${origin}/train/jobs/${jobId}`);
  await page.locator('#job-status [data-status="SUCCEEDED"]').waitFor();
  await page.locator('#attempts tbody tr[data-attempt="2"]').waitFor();
  result.attemptOf = await page.locator("#attempt-of").textContent();
  result.attempts = await page
    .locator("#attempts tbody tr")
    .evaluateAll((rows) => rows.map((row) => [...row.cells].slice(0, 4).map((cell) => cell.textContent)));
  await page.locator("#console .line", { hasText: "second try" }).waitFor();
  result.console = await texts("#console .line");
  await shot("attempts");

  step("each attempt's lines");
  for (const number of [1, 2]) {
    await page.locator(`#attempts tr[data-attempt="${number}"] .attempt-show`).click();
    await page.getByRole("heading", { name: `Output of attempt ${number}` }).waitFor();
    await page.locator("#attempt-lines li").first().waitFor();
    result[`lines${number}`] = await texts("#attempt-lines li");
    result[`stderr${number}`] = await texts("#attempt-lines li.stderr");
  }
  await shot("attempt-lines");
  return result;
}
