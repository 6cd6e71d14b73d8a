// For bench/job_list.py: signs in, chooses metric columns, then loads the run table `renders`
// times, each timed from navigation start until its rows are on screen and it is not busy.
import { signIn } from "../sign_in.mjs";

export default async function runTableBench({ page, options, step }) {
  const { origin, username, password, renders, metrics, sort } = options;
  step("sign in");
  await signIn(page, origin, username, password);
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
