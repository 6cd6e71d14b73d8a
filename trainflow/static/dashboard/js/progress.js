/**
 * The job's progress from its `progress` events ({current, total?, rate?, eta_s?, desc?}): a
 * native <progress> element (indeterminate while the total is unknown) and a line of text.
 */
import { h } from "./dom.js";
import { formatDuration } from "./format.js";
import { t } from "./i18n.js";

export function createProgress() {
  const bar = h("progress", { id: "job-progress", "aria-label": t("job.progress") });
  const text = h("span", { class: "progress-text", id: "job-progress-text" });
  const element = h("div", { class: "progress", hidden: true }, bar, text);
  return {
    element,
    update({ current, total, rate, eta_s: eta, desc }) {
      element.hidden = false;
      if (typeof total === "number" && total > 0) {
        bar.max = total;
        bar.value = Math.min(current, total);
      } else {
        bar.removeAttribute("value"); // indeterminate
      }
      const parts = [];
      if (desc) parts.push(desc);
      parts.push(typeof total === "number" ? `${current} / ${total}` : String(current));
      if (typeof total === "number" && total > 0) parts.push(`${Math.floor((100 * current) / total)}%`);
      if (typeof rate === "number") parts.push(t("job.rate", { rate: rate >= 10 ? rate.toFixed(0) : rate.toFixed(2) }));
      if (typeof eta === "number") parts.push(t("job.eta", { eta: formatDuration(eta) }));
      text.textContent = parts.join(" · ");
    },
  };
}
