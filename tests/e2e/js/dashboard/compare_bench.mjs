// bench/compare.py's page: the compare page's first render, timed in the page itself.
//
// options: {username, password, sets: [[job ids], ...], metrics, repeats, warmup, screen}. For
// each set the page is loaded `warmup` + `repeats` times. Each load is timed from the
// navigation's start (the document's timeOrigin) to the first frame in which
//   * "screen": the first `screen` charts (a 1280x800 window's worth) are drawn with a curve per
//     job;
//   * "all": every chart exists and is drawn with a curve per job, and the page has read every
//     history (data-state="ready").
import { signIn } from "../sign_in.mjs";

export default async function compareBench({ page, options, step }) {
  const { origin, username, password, sets, metrics, repeats, warmup, screen } = options;

  step("sign in");
  await signIn(page, origin, username, password);

  const drawnWith = ([count, jobs, whole]) => {
    const root = document.querySelector(".compare-page");
    if (whole && root?.dataset.state !== "ready") return false;
    const charts = [...document.querySelectorAll("#charts .chart")];
    if (whole ? charts.length !== count : charts.length < count) return false;
    for (const chart of charts.slice(0, count)) if (chart.dataset.drawn !== "true" || chart.dataset.series !== String(jobs)) return false;
    return performance.now();
  };
  const results = [];
  for (const ids of sets) {
    step(`${ids.length} jobs`);
    const firstScreen = [];
    const all = [];
    for (let i = 0; i < warmup + repeats; i += 1) {
      await page.goto(`${origin}/train/compare?jobs=${ids.join(",")}`);
      const wait = { polling: "raf", timeout: 600_000 };
      const screenDrawn = await page.waitForFunction(drawnWith, [screen, ids.length, false], wait);
      const allDrawn = await page.waitForFunction(drawnWith, [metrics, ids.length, true], wait);
      if (i >= warmup) {
        firstScreen.push(await screenDrawn.jsonValue());
        all.push(await allDrawn.jsonValue());
      }
    }
    const points = await page.evaluate(() => [...document.querySelectorAll("#charts .chart")].reduce((sum, c) => sum + Number(c.dataset.points), 0));
    results.push({ jobs: ids.length, firstScreen, all, points });
  }
  return results;
}
