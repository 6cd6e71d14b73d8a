// For bench/job_list.py: signs in, chooses metric columns, then loads the run table `renders`
// times, each timed from navigation start until its rows are on screen and it is not busy.
export default async function runTableBench({ page, options, step }) {
  const { origin, username, password, renders, metrics, sort } = options;
  step("sign in");
  await page.goto(`${origin}/train/signin`);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${origin}/train/`);
  await page.evaluate((keys) => localStorage.setItem("trainflow.runTable.columns", JSON.stringify({ params: null, metrics: keys })), metrics);
  const times = [];
  for (let i = 0; i < renders; i += 1) {
    step(`load ${i + 1}`);
    await page.goto(`${origin}/train/?sort=${encodeURIComponent(sort)}&order=asc`);
    await page.waitForFunction(
      () => document.querySelectorAll("#jobs tbody tr").length === 20 && !document.querySelector(".table-wrap[aria-busy]"),
      null,
      { polling: "raf" },
    );
    times.push(await page.evaluate(() => performance.now()));
  }
  return { times };
}
