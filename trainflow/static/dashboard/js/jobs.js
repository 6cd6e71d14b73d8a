/** What the pages know about jobs: their states and how a status is shown. */
import { h } from "./dom.js";
import { t } from "./i18n.js";

export const STATUSES = ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST"];
export const FINISHED = new Set(["SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST"]);

/** A status badge: the translated name, coloured by class; a waiting job's place in the queue. */
export function statusBadge(status, queuePosition) {
  return h(
    "span",
    { class: `status status-${String(status).toLowerCase().replace("_", "-")}`, dataset: { status } },
    t(`status.${status}`),
    status === "QUEUED" && queuePosition ? h("span", { class: "queue" }, ` ${t("jobs.queuePosition", { n: queuePosition })}`) : null,
  );
}
