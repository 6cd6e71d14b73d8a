/**
 * The compare page's table: a row per parameter and per metric (its latest value), a column per
 * job. A row whose values are not all the same (a job without the value counts as different) is
 * marked `differs`; "Only differences" hides the others.
 */
import { h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { formatValue } from "./metrics.js";

export function createDiffTable() {
  const head = h("thead");
  const body = h("tbody");
  const table = h("table", { class: "data diff-table", id: "compare-diff" }, head, body);
  const only = h("input", { type: "checkbox", id: "only-differences" });
  only.addEventListener("change", () => table.classList.toggle("only-differences", only.checked));
  const element = h(
    "section",
    { class: "compare-diff" },
    h(
      "div",
      { class: "charts-head" },
      h("h2", null, t("compare.table")),
      h("label", { class: "inline", for: only.id }, only, ` ${t("compare.onlyDifferences")}`),
    ),
    h("div", { class: "table-wrap" }, table),
  );

  /**
   * @param {Array<{id: number, name: string, colour: string, params: Record<string, any>,
   *   metrics: Map<string, {value: number, step: number}>}>} jobs the columns, in order
   */
  function render(jobs) {
    replace(
      head,
      h(
        "tr",
        null,
        h("th", { scope: "col" }, t("compare.name")),
        jobs.map((job) =>
          h("th", { scope: "col", dataset: { job: String(job.id) } }, h("span", { class: "swatch", dataset: { colour: job.colour } }), `#${job.id} ${job.name}`),
        ),
      ),
    );
    paint(head);
    const paramKeys = [...new Set(jobs.flatMap((job) => Object.keys(job.params)))].sort();
    const metricKeys = [...new Set(jobs.flatMap((job) => [...job.metrics.keys()]))].sort();
    const section = (label, kind, keys, valueOf) => [
      keys.length ? h("tr", { class: "diff-section" }, h("th", { scope: "rowgroup", colspan: String(jobs.length + 1) }, label)) : null,
      keys.map((key) => {
        const values = jobs.map((job) => valueOf(job, key));
        const differs = new Set(values).size > 1;
        return h(
          "tr",
          { class: differs ? "differs" : null, dataset: { [kind]: key, differs: String(differs) } },
          h("th", { scope: "row" }, key),
          // data-label: at phone width each cell is a line of its own, named by its job.
          values.map((value, i) => h("td", { class: kind === "metric" ? "num" : null, "data-label": `#${jobs[i].id}` }, value ?? "—")),
        );
      }),
    ];
    replace(
      body,
      section(t("compare.params"), "param", paramKeys, (job, key) => (key in job.params ? String(job.params[key]) : null)),
      section(t("compare.metrics"), "metric", metricKeys, (job, key) => {
        const latest = job.metrics.get(key);
        return latest ? formatValue(latest.value) : null;
      }),
    );
  }

  return { element, render };
}

/** Colour swatches get their colour through the CSSOM (no inline style attributes). */
export function paint(root) {
  for (const swatch of root.querySelectorAll(".swatch[data-colour]")) swatch.style.backgroundColor = swatch.dataset.colour;
}
