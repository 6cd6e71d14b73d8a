/**
 * One job, live: its status, progress, latest metrics and console, all from the job's event
 * stream (which replays every event from the first, so a reload shows the whole job again).
 * The job's record (times, exit code, reason) is fetched again when a status event says it
 * changed; nothing is polled.
 */
import { TRAIN, api } from "../api.js";
import { createArtifacts } from "../artifacts.js";
import { createAttempts } from "../attempts.js";
import { createCharts } from "../charts.js";
import { createConsole } from "../console.js";
import { h, replace } from "../dom.js";
import { downloadFile } from "../download.js";
import { errorBox, messageOf } from "../forms.js";
import { formatDuration, formatTime, parseTime } from "../format.js";
import { t } from "../i18n.js";
import { confirmCancel, createHousekeeping } from "../housekeeping.js";
import { FINISHED, statusBadge } from "../jobs.js";
import { follow } from "../live.js";
import { createMetrics } from "../metrics.js";
import { notFoundContent, showNotFound } from "../not-found.js";
import { createProgress } from "../progress.js";
import { BASE } from "../router.js";
import { createSystemMetrics } from "../system-metrics.js";

export function jobPage({ params, signal }) {
  const id = Number(params.id);
  if (!Number.isSafeInteger(id) || id < 1) {
    return h("section", { class: "narrow" }, notFoundContent("job.notFound"));
  }
  const badge = h("span", { id: "job-status" });
  const liveState = h("span", { class: "live", id: "live-state", role: "status" }, t("live.connecting"));
  const error = errorBox();
  const summary = h("dl", { class: "summary", id: "job-summary" });
  const progress = createProgress();
  const metrics = createMetrics();
  const charts = createCharts();
  const artifacts = createArtifacts();
  const system = createSystemMetrics({ signal }); // the job's CPU, memory and GPUs
  const output = createConsole();
  const cancel = h("button", { type: "button", id: "cancel", class: "danger", hidden: true, onclick: onCancel }, t("job.cancel"));
  const rerun = h("a", { class: "button", id: "rerun", href: `${BASE}/new?rerun=${id}`, hidden: true }, t("job.rerun"));
  const download = h("button", { type: "button", id: "download-log", onclick: onDownload }, t("job.downloadLog"));
  const side = h("div", { class: "card side", hidden: true }, progress.element, metrics.element);
  const housekeeping = createHousekeeping({ id, signal, error });
  const attempts = createAttempts(id, signal); // a retried job's attempts, each one's lines
  let job = null;
  let artifactsShown = false;
  let status = null;

  function showStatus(value) {
    status = value;
    replace(badge, statusBadge(value, job?.status === value ? job.queue_position : null));
    cancel.hidden = FINISHED.has(value);
    rerun.hidden = !FINISHED.has(value);
  }

  async function load() {
    try {
      job = await api(`${TRAIN}/jobs/${id}`, { signal });
    } catch (e) {
      if (e.status === 404) showNotFound(page, "job.notFound");
      else if (!signal.aborted) error.show(messageOf(e));
      return;
    }
    showStatus(status && FINISHED.has(status) && !FINISHED.has(job.status) ? status : job.status);
    renderSummary();
    housekeeping.show(job);
    attempts.show(job);
    // The output folder becomes the run's artifacts when the job ends.
    if (FINISHED.has(job.status) && !artifactsShown) {
      artifactsShown = true;
      artifacts.show(job.run_id);
    }
  }

  function renderSummary() {
    const run = `/#/experiments/${encodeURIComponent(job.experiment_id)}/runs/${encodeURIComponent(job.run_id)}`;
    const item = (key, ...value) => [h("dt", null, t(`job.field.${key}`)), h("dd", { dataset: { field: key } }, ...value)];
    const params = Object.entries(job.params ?? {});
    replace(
      summary,
      item("script", job.script),
      job.run_name ? item("runName", job.run_name) : null,
      job.sweep_id ? item("sweep", h("a", { href: `${BASE}/sweeps/${job.sweep_id}`, id: "job-sweep" }, t("job.sweepLink", { id: job.sweep_id }))) : null,
      item("user", job.user),
      item("run", h("a", { href: run, id: "mlflow-run", target: "_blank", rel: "noopener" }, t("job.openRun"))),
      item("created", formatTime(job.created_at)),
      job.started_at ? item("started", formatTime(job.started_at)) : null,
      job.finished_at ? item("finished", formatTime(job.finished_at)) : null,
      job.duration_s !== null ? item("duration", formatDuration(job.duration_s)) : null,
      job.exit_code !== null ? item("exitCode", String(job.exit_code)) : null,
      job.reason ? item("reason", job.reason) : null,
      params.length ? item("params", h("ul", { class: "params" }, params.map(([k, v]) => h("li", null, h("code", null, `${k}=${v}`))))) : null,
      job.timeout_s ? item("timeout", formatDuration(job.timeout_s)) : null,
      job.gpus ? item("gpus", `${job.gpus}${job.gpu_ids ? ` (${job.gpu_ids})` : ""}`) : null,
      job.runner ? item("runner", job.runner) : null,
    );
  }

  let reloadTimer = 0;
  function reload() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(load, 150); // a replayed stream brings several statuses at once
  }
  // A running job's duration counts up here between fetches.
  const ticker = setInterval(() => {
    const started = parseTime(job?.started_at);
    const cell = summary.querySelector('[data-field="duration"]');
    if (status === "RUNNING" && started && cell) cell.textContent = formatDuration((Date.now() - started) / 1000);
  }, 1000);
  signal.addEventListener("abort", () => {
    clearTimeout(reloadTimer);
    clearInterval(ticker);
    charts.close();
  });

  async function onCancel() {
    if (!(await confirmCancel(id))) return;
    cancel.disabled = true;
    try {
      await api(`${TRAIN}/jobs/${id}/cancel`, { method: "POST", signal });
    } catch (e) {
      if (!signal.aborted) error.show(messageOf(e));
      cancel.disabled = false;
    }
  }

  async function onDownload() {
    download.disabled = true;
    try {
      await downloadFile(`${TRAIN}/jobs/${id}/logs/download`, `job-${id}.log`);
    } catch (e) {
      error.show(messageOf(e));
    } finally {
      download.disabled = false;
    }
  }

  load();
  follow(`${TRAIN}/jobs/${id}/events`, {
    signal,
    onState: (state, detail) => {
      liveState.textContent = t(`live.${state}`);
      liveState.dataset.state = state;
      if (state === "error" && detail?.status === 404 && !job) showNotFound(page, "job.notFound");
      else if (state === "error") error.show(detail?.message || t("error.http", { status: detail?.status }));
    },
    onEvent: (event) => {
      switch (event.type) {
        case "log":
          output.add(event);
          break;
        case "progress":
          progress.update(event);
          side.hidden = false;
          break;
        case "metric":
          metrics.update(event);
          charts.add(event);
          side.hidden = false;
          break;
        case "status":
        case "end":
          if (event.status !== status) {
            showStatus(event.status);
            reload(); // start and end times, exit code, reason
          }
          break;
        case "deleted":
          error.show(t("job.deleted"));
          break;
        case "system":
          system.add(event);
          break;
        default:
          break;
      }
    },
  });

  const page = h(
    "section",
    { class: "page job-page" },
    h(
      "div",
      { class: "page-head" },
      h("h1", null, t("job.title", { id })),
      badge,
      liveState,
      h("div", { class: "actions" }, cancel, rerun, download),
    ),
    error.element,
    h("div", { class: "job-grid" }, h("div", { class: "card" }, summary), side),
    housekeeping.element,
    attempts.element,
    charts.element,
    system.element,
    artifacts.element,
    h("h2", null, t("job.output")),
    output.element,
  );
  return page;
}
