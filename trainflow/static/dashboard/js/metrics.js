/** The latest value of each metric the job has logged, updated from its `metric` events; how a value is shown. */
import { h } from "./dom.js";
import { t } from "./i18n.js";

export function createMetrics() {
  const body = h("tbody");
  const element = h(
    "div",
    { class: "metrics", hidden: true },
    h("h2", null, t("job.metrics")),
    h(
      "table",
      { class: "compact-table", id: "metrics" },
      h(
        "thead",
        null,
        h("tr", null, h("th", { scope: "col" }, t("job.metric")), h("th", { scope: "col" }, t("job.value")), h("th", { scope: "col" }, t("job.step"))),
      ),
      body,
    ),
  );
  const rows = new Map(); // key -> {value cell, step cell, step}
  return {
    element,
    update({ key, value, step = 0 }) {
      element.hidden = false;
      let row = rows.get(key);
      if (!row) {
        const valueCell = h("td", { class: "num" });
        const stepCell = h("td", { class: "num" });
        body.append(h("tr", { dataset: { metric: key } }, h("th", { scope: "row" }, key), valueCell, stepCell));
        row = { valueCell, stepCell, step: -Infinity };
        rows.set(key, row);
      }
      if (step < row.step) return; // an older step logged late
      row.step = step;
      row.valueCell.textContent = formatValue(value);
      row.stepCell.textContent = String(step);
    },
  };
}

export function formatValue(value) {
  if (typeof value !== "number") return String(value);
  return Number.isInteger(value) ? String(value) : value.toPrecision(6).replace(/\.?0+(e|$)/, "$1");
}
