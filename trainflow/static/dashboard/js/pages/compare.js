/**
 * Several jobs side by side: /train/compare?jobs=1,2,3 (a sweep links here with its trials).
 * One chart per metric with every job's curve on it, a colour per job; a table of their params
 * and latest metrics with the differing rows marked. Jobs that have ended are read at once
 * (trainflow's jobs/metrics); jobs still running are followed through their event streams, so
 * their curves grow while the page is open. The page's `data-state` becomes "ready" once every history has arrived.
 */
import { TRAIN } from "../api.js";
import { PALETTE, createChartBoard } from "../charts.js";
import { MAX_JOBS, loadHistories, loadJob, parseJobIds } from "../compare-data.js";
import { createDiffTable, paint } from "../compare-diff.js";
import { h, replace } from "../dom.js";
import { errorBox, messageOf } from "../forms.js";
import { t } from "../i18n.js";
import { FINISHED, statusBadge } from "../jobs.js";
import { follow } from "../live.js";
import { BASE } from "../router.js";

const DASHES = [[], [6, 4], [2, 3], [10, 3, 2, 3]];
const TABLE_DELAY_MS = 500; // live metrics refresh the table at most this often

export function comparePage({ query, signal, navigate }) {
  const { ids, problem } = parseJobIds(query.get("jobs"));
  const picker = jobPicker(ids, navigate);
  if (problem) {
    const text = problem === "tooMany" ? t("compare.tooMany", { max: MAX_JOBS, n: ids.length }) : t(`compare.${problem}`);
    return h(
      "section",
      { class: "page compare-page", dataset: { state: "refused" } },
      h("div", { class: "page-head" }, h("h1", null, t("compare.title"))),
      h("p", { class: "message error", id: "compare-problem", role: "alert" }, text),
      picker,
    );
  }

  const columns = ids.map((id, index) => ({
    id,
    name: "",
    colour: PALETTE[index % PALETTE.length],
    status: null,
    params: {},
    metrics: new Map(), // key -> {value, step}
  }));
  const byId = new Map(columns.map((column) => [String(column.id), column]));
  const shown = () => columns.filter((column) => column.status !== null);
  const error = errorBox();
  const missing = h("ul", { class: "message error", id: "compare-missing", hidden: true });
  const loading = h("p", { class: "hint", id: "compare-loading", role: "status" }, t("artifacts.loading"));
  const jobList = h("ul", { class: "compare-jobs", id: "compare-jobs" });
  const diff = createDiffTable();
  const board = createChartBoard({
    sources: () => columns.map((column) => String(column.id)),
    label: (source, key, chartKeys) => {
      const column = byId.get(source);
      const name = `#${column.id}${column.name ? ` ${column.name}` : ""}`;
      return chartKeys.length > 1 ? `${name} · ${key}` : name;
    },
    style: (source, key, chartKeys) => ({ colour: byId.get(source).colour, dash: DASHES[chartKeys.indexOf(key) % DASHES.length] }),
  });
  signal.addEventListener("abort", () => board.close());

  let tableTimer = 0;
  function renderTable() {
    clearTimeout(tableTimer);
    tableTimer = 0;
    diff.render(shown());
  }
  function renderTableSoon() {
    tableTimer ||= setTimeout(renderTable, TABLE_DELAY_MS);
  }
  signal.addEventListener("abort", () => clearTimeout(tableTimer));

  function renderJobs() {
    replace(
      jobList,
      shown().map((column) =>
        h(
          "li",
          { dataset: { job: String(column.id) } },
          h("span", { class: "swatch", dataset: { colour: column.colour } }),
          h("a", { href: `${BASE}/jobs/${column.id}` }, `#${column.id}`),
          column.name ? ` ${column.name} ` : " ",
          statusBadge(column.status),
        ),
      ),
    );
    paint(jobList);
  }

  function onMetric(column, { key, value, step = 0, timestamp }) {
    if (typeof value !== "number") return;
    board.add(String(column.id), { key, value, step, timestamp });
    const latest = column.metrics.get(key);
    if (!latest || step >= latest.step) {
      column.metrics.set(key, { value, step });
      renderTableSoon();
    }
  }

  function followJob(column) {
    follow(`${TRAIN}/jobs/${column.id}/events`, {
      signal,
      onState: (state, detail) => {
        if (state === "error") error.show(detail?.message || t("error.http", { status: detail?.status }));
      },
      onEvent: (event) => {
        if (event.type === "metric") onMetric(column, event);
        else if ((event.type === "status" || event.type === "end") && event.status !== column.status) {
          column.status = event.status;
          renderJobs();
        }
      },
    });
  }

  async function load() {
    const loaded = await Promise.all(ids.map((id) => loadJob(id, signal)));
    if (signal.aborted) return;
    const gone = [];
    for (const { id, job, run, missing: absent, error: failure } of loaded) {
      const column = byId.get(String(id));
      if (!job) {
        gone.push(absent ? t("compare.missingJob", { id }) : `#${id}: ${messageOf(failure)}`);
        continue;
      }
      column.status = job.status;
      column.name = run?.info?.run_name ?? "";
      column.runId = job.run_id;
      column.params = { ...job.params };
      for (const param of run?.data?.params ?? []) column.params[param.key] = param.value;
      if (FINISHED.has(job.status)) {
        for (const metric of run?.data?.metrics ?? []) column.metrics.set(metric.key, { value: Number(metric.value), step: Number(metric.step ?? 0) });
      }
    }
    replace(missing, gone.map((text) => h("li", null, text)));
    missing.hidden = gone.length === 0;
    board.relabel();
    renderJobs();
    renderTable();
    const ended = columns.filter((column) => column.status && FINISHED.has(column.status));
    for (const column of columns) if (column.status && !FINISHED.has(column.status)) followJob(column);
    const keys = [...new Set(ended.flatMap((column) => [...column.metrics.keys()]))].sort();
    let done = 0;
    const counted = new Set();
    const showLoading = () => replace(loading, t("compare.loadingHistories", { done, total: keys.length }));
    showLoading();
    await loadHistories(
      ended.map((column) => column.id),
      keys,
      (jobId, key, points) => {
        board.addHistory(String(jobId), key, points);
        if (!counted.has(key)) {
          counted.add(key);
          done += 1;
          showLoading();
        }
      },
      signal,
    );
    loading.hidden = true;
    page.dataset.state = "ready";
  }

  load().catch((e) => {
    if (!signal.aborted) {
      loading.hidden = true;
      error.show(messageOf(e));
      page.dataset.state = "failed";
    }
  });

  const page = h(
    "section",
    { class: "page compare-page", dataset: { state: "loading" } },
    h("div", { class: "page-head" }, h("h1", null, t("compare.title"))),
    error.element,
    missing,
    loading,
    jobList,
    board.element,
    diff.element,
    picker,
  );
  return page;
}

/** A field to change the jobs compared: ids separated by commas. */
function jobPicker(ids, navigate) {
  const input = h("input", { id: "compare-ids", value: ids.join(","), inputmode: "numeric", autocomplete: "off" });
  return h(
    "form",
    {
      class: "compare-picker",
      onsubmit: (event) => {
        event.preventDefault();
        const list = input.value.replace(/[\s,]+/g, ",").replace(/^,|,$/g, "");
        navigate(`${BASE}/compare?jobs=${encodeURIComponent(list).replace(/%2C/g, ",")}`);
      },
    },
    h("label", { for: input.id }, t("compare.pick", { max: MAX_JOBS })),
    h("div", { class: "inline-row" }, input, h("button", { type: "submit" }, t("compare.go"))),
  );
}
