/**
 * Which params and metrics the run table shows as columns, remembered in localStorage.
 *
 * Params default to the first few the listed jobs have; metrics to none, until the person picks
 * them (a job may log hundreds). The picker offers the keys of the jobs on the page, and keeps
 * showing a chosen key that the current page lacks, so it can be unchosen.
 */
import { h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { local } from "./storage.js";

const KEY = "trainflow.runTable.columns";
const DEFAULT_PARAMS = 3;
export const MAX_METRICS = 20; // the list API's limit

export function loadColumns() {
  try {
    const saved = JSON.parse(local.get(KEY) ?? "null");
    const keys = (value) => (Array.isArray(value) ? value.filter((k) => typeof k === "string") : null);
    return { params: keys(saved?.params), metrics: (keys(saved?.metrics) ?? []).slice(0, MAX_METRICS) };
  } catch {
    return { params: null, metrics: [] };
  }
}

function saveColumns(columns) {
  local.set(KEY, JSON.stringify(columns));
}

/** The params to show: the chosen ones, or by default the first few of those present. */
export function shownParams(columns, present) {
  return columns.params ?? present.slice(0, DEFAULT_PARAMS);
}

/**
 * @param {(columns: {params: string[]|null, metrics: string[]}) => void} onChange
 */
export function createColumnPicker(onChange) {
  let columns = loadColumns();
  const list = h("div", { class: "column-lists" });
  const element = h(
    "details",
    { class: "column-picker", id: "column-picker" },
    h("summary", { class: "button" }, t("runs.columns")),
    list,
  );

  function group(kind, title, available, chosen) {
    const keys = [...new Set([...chosen, ...available])].sort();
    return h(
      "fieldset",
      { class: `columns-${kind}` },
      h("legend", null, title),
      keys.length ? null : h("p", { class: "muted" }, t("runs.noKeys")),
      keys.map((key) =>
        h(
          "label",
          { class: "check" },
          h("input", {
            type: "checkbox",
            value: key,
            dataset: { kind },
            checked: chosen.includes(key),
            disabled: kind === "metrics" && !chosen.includes(key) && chosen.length >= MAX_METRICS,
            onchange: (event) => toggle(kind, key, event.target.checked),
          }),
          h("span", null, key),
        ),
      ),
    );
  }

  let lastParams = [];
  let lastMetrics = [];
  function toggle(kind, key, on) {
    const current = kind === "params" ? shownParams(columns, lastParams) : columns.metrics;
    const next = on ? [...current.filter((k) => k !== key), key] : current.filter((k) => k !== key);
    columns = { ...columns, [kind]: kind === "metrics" ? next.slice(0, MAX_METRICS) : next };
    saveColumns(columns);
    render(lastParams, lastMetrics);
    onChange(columns);
  }

  function render(paramKeys, metricKeys) {
    lastParams = paramKeys;
    lastMetrics = metricKeys;
    replace(
      list,
      group("params", t("runs.params"), paramKeys, shownParams(columns, paramKeys)),
      group("metrics", t("runs.metrics"), metricKeys, columns.metrics),
    );
  }

  return {
    element,
    get columns() {
      return columns;
    },
    /** Offers the keys the jobs on the page have. */
    offer(paramKeys, metricKeys) {
      render(paramKeys, metricKeys);
    },
  };
}
