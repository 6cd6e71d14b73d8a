/** What the sweep pages share: a sweep's states, its badge, and how values and params are shown. */
import { h } from "./dom.js";
import { t } from "./i18n.js";

// The parent run's status: RUNNING while a trial is queued or running, then how they ended.
const LOOK = { RUNNING: "running", FINISHED: "succeeded", FAILED: "failed", KILLED: "cancelled" };
export const RERUNNABLE = new Set(["FAILED", "LOST", "TIMED_OUT", "CANCELLED"]);

export function sweepBadge(status) {
  return h("span", { class: `status status-${LOOK[status] ?? "queued"}`, dataset: { status } }, t(`sweeps.status.${status}`));
}

/** A metric's value as people read it: 6 significant digits, no trailing zeros. */
export function formatValue(value) {
  if (value === null || value === undefined) return "—";
  if (!Number.isFinite(value)) return String(value);
  return Number.isInteger(value) ? String(value) : value.toPrecision(6).replace(/\.?0+(e|$)/, "$1");
}

/** "lr=0.1 batch=32" */
export function paramsText(params) {
  return Object.entries(params ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
}
