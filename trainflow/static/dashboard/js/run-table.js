/**
 * The run table: one row per job, with its MLflow run's name and experiment, its status (a
 * progress bar while it runs), the chosen params and metrics as columns, and a checkbox to pick
 * runs to compare. Every column header sorts (the server sorts; this only asks), and says how the
 * table is sorted with aria-sort.
 *
 * A running job's progress bar is indeterminate: the all-jobs stream carries status changes, not
 * each job's progress, and following every running job's own stream from the list would replay
 * their whole output. Its duration counts up here between fetches.
 */
import { h, replace } from "./dom.js";
import { formatDuration, formatTime, parseTime } from "./format.js";
import { t } from "./i18n.js";
import { statusBadge } from "./jobs.js";
import { BASE } from "./router.js";

const LEADING = [
  { id: "run", sort: "run_name" },
  { id: "experiment", sort: "experiment" },
  { id: "status", sort: "status" },
  { id: "user", sort: "user" },
  { id: "script", sort: "script" },
];
const TRAILING = [
  { id: "started", sort: "started_at" },
  { id: "duration", sort: "duration_s" },
];

/** A metric's value as a researcher reads it: five significant digits, exponents when tiny or huge. */
export function formatMetric(value) {
  if (value === null || value === undefined) return "—";
  if (!Number.isFinite(value)) return String(value);
  const size = Math.abs(value);
  if (size !== 0 && (size >= 1e6 || size < 1e-4)) return value.toExponential(3);
  return String(Number(value.toPrecision(5)));
}

/**
 * @param {{onSort: (sort: string) => void, onSelect: (ids: number[]) => void}} handlers
 */
export function createRunTable({ onSort, onSelect }) {
  const head = h("thead");
  const body = h("tbody");
  const empty = h("p", { class: "empty", id: "no-jobs", hidden: true }, t("jobs.empty"));
  const table = h("table", { class: "data run-table", id: "jobs" }, h("caption", { class: "visually-hidden" }, t("jobs.title")), head, body);
  const element = h("div", { class: "table-wrap" }, table, empty);
  const rows = new Map(); // job id -> {row, job}
  const selected = new Set();
  let columns = [];

  function columnsFor(params, metrics) {
    return [
      ...LEADING.map((c) => ({ ...c, label: t(`runs.column.${c.id}`) })),
      ...params.map((key) => ({ id: "param", key, sort: `params.${key}`, label: key })),
      ...metrics.map((key) => ({ id: "metric", key, sort: `metrics.${key}`, label: key })),
      ...TRAILING.map((c) => ({ ...c, label: t(`runs.column.${c.id}`) })),
    ];
  }

  function header(sort, order) {
    const selectAll = h("input", {
      type: "checkbox",
      id: "select-page",
      "aria-label": t("runs.selectPage"),
      onchange: () => {
        for (const id of rows.keys()) {
          if (selectAll.checked) selected.add(id);
          else selected.delete(id);
        }
        for (const box of body.querySelectorAll("input.select-run")) box.checked = selectAll.checked;
        onSelect([...selected]);
      },
    });
    return h(
      "tr",
      null,
      h("th", { scope: "col", class: "col-select" }, selectAll),
      columns.map((column) => {
        const isSorted = column.sort === sort;
        const th = h(
          "th",
          {
            scope: "col",
            class: `col-${column.id}`,
            dataset: { sort: column.sort },
            "aria-sort": isSorted ? (order === "asc" ? "ascending" : "descending") : null,
          },
          h(
            "button",
            { type: "button", class: "sort", onclick: () => onSort(column.sort) },
            h("span", null, column.label),
            h("span", { class: "sort-mark", "aria-hidden": "true" }, isSorted ? (order === "asc" ? " ▲" : " ▼") : ""),
          ),
        );
        if (column.id === "param" || column.id === "metric") th.title = column.sort;
        return th;
      }),
    );
  }

  function cell(column, ...content) {
    return h("td", { class: `col-${column.id}`, "data-label": column.label, dataset: column.key ? { key: column.key } : {} }, ...content);
  }

  function statusCell(job) {
    const running = job.status === "RUNNING";
    return [
      statusBadge(job.status, job.queue_position),
      running ? h("progress", { class: "row-progress", "aria-label": t("runs.running", { id: job.job }) }) : null,
    ];
  }

  function row(job) {
    const box = h("input", {
      type: "checkbox",
      class: "select-run",
      checked: selected.has(job.job),
      "aria-label": t("runs.select", { id: job.job }),
      onchange: () => {
        if (box.checked) selected.add(job.job);
        else selected.delete(job.job);
        onSelect([...selected]);
      },
    });
    const content = {
      run: () => [h("a", { href: `${BASE}/jobs/${job.job}` }, job.run_name || `#${job.job}`), h("span", { class: "job-id" }, ` #${job.job}`)],
      experiment: () => job.experiment_name ?? "",
      status: () => statusCell(job),
      user: () => job.user,
      script: () => job.script,
      param: (key) => (key in (job.params ?? {}) ? String(job.params[key]) : "—"),
      metric: (key) => formatMetric(job.metrics?.[key]),
      started: () => (job.started_at ? formatTime(job.started_at) : "—"),
      duration: () => formatDuration(job.duration_s),
    };
    return h(
      "tr",
      { id: `job-${job.job}`, dataset: { job: job.job } },
      h("td", { class: "col-select" }, box),
      columns.map((column) => cell(column, content[column.id](column.key))),
    );
  }

  return {
    element,
    /**
     * Shows a fresh page of jobs.
     * @param {object[]} jobs
     * @param {{params: string[], metrics: string[], sort: string, order: string, filtered: boolean}} view
     */
    show(jobs, { params, metrics, sort, order, filtered }) {
      columns = columnsFor(params, metrics);
      replace(head, header(sort, order));
      rows.clear();
      replace(
        body,
        jobs.map((job) => {
          const tr = row(job);
          rows.set(job.job, { row: tr, job });
          return tr;
        }),
      );
      empty.hidden = jobs.length > 0;
      empty.textContent = filtered ? t("jobs.emptyFiltered") : t("jobs.empty");
    },
    /** A status event: the badge changes before the page is fetched again. */
    setStatus(id, status) {
      const entry = rows.get(id);
      if (!entry) return;
      entry.job = { ...entry.job, status, queue_position: null };
      entry.row.querySelector(".col-status")?.replaceChildren(...statusCell(entry.job).filter(Boolean));
    },
    remove(id) {
      rows.get(id)?.row.remove();
      rows.delete(id);
      selected.delete(id);
      empty.hidden = rows.size > 0;
    },
    /** Counts up the duration of running jobs, between fetches. */
    tick() {
      for (const { row: tr, job } of rows.values()) {
        if (job.status !== "RUNNING" || !job.started_at) continue;
        const started = parseTime(job.started_at);
        const target = tr.querySelector(".col-duration");
        if (started && target) target.textContent = formatDuration((Date.now() - started) / 1000);
      }
    },
  };
}
