/**
 * One sweep, live: every trial with its status, params and the metric's latest value, ranked
 * (best first, trials without a value last), "n of N done", and rerun, cancel, compare, delete.
 *
 * The all-jobs stream says when a trial's status changes (its badge changes at once, then the
 * sweep is fetched again, debounced); each running trial's own stream brings the metric the
 * moment the job logs it, and the table is ranked again in the browser. Nothing is polled.
 */
import { TRAIN, api } from "../api.js";
import { h, replace } from "../dom.js";
import { confirmButton, errorBox, messageOf } from "../forms.js";
import { formatTime } from "../format.js";
import { t } from "../i18n.js";
import { FINISHED, statusBadge } from "../jobs.js";
import { follow, followJobChanges } from "../live.js";
import { notFoundContent, showNotFound } from "../not-found.js";
import { BASE } from "../router.js";
import { RERUNNABLE, formatValue, sweepBadge } from "../sweeps.js";

const RELOAD_DELAY_MS = 250;
const MAX_METRIC_STREAMS = 20; // running trials followed for their metric at once

export function sweepPage({ params, signal, navigate }) {
  const id = Number(params.id);
  if (!Number.isSafeInteger(id) || id < 1) {
    return h("section", { class: "narrow" }, notFoundContent("sweeps.notFound"));
  }
  const title = h("h1", null, t("sweeps.pageTitle", { id }));
  const badge = h("span", { id: "sweep-status" });
  const liveState = h("span", { class: "live", id: "live-state", role: "status" }, t("live.connecting"));
  const error = errorBox();
  const done = h("span", { id: "sweep-done", class: "progress-text", role: "status" });
  const bar = h("progress", { id: "sweep-progress", max: "1", value: "0", "aria-labelledby": "sweep-done" });
  const summary = h("dl", { class: "summary", id: "sweep-summary" });
  const head = h("tr");
  const body = h("tbody");
  const rerun = h("button", { type: "button", id: "rerun-failed", hidden: true, onclick: onRerun }, t("sweeps.rerunFailed"));
  const cancel = h("button", { type: "button", id: "cancel-sweep", class: "danger", hidden: true, onclick: onCancel }, t("sweeps.cancel"));
  const compare = h("a", { class: "button", id: "compare-all", hidden: true }, t("sweeps.compareAll"));
  const remove = confirmButton(t("sweeps.delete"), t("sweeps.confirmDelete"), onDelete, { id: "delete-sweep", hidden: true });

  let sweep = null;
  const values = new Map(); // job id -> {value, step}: the metric's latest, live
  const statuses = new Map(); // job id -> status, live
  const streams = new Map(); // job id -> AbortController of its metric stream, while open
  const followed = new Set(); // job ids whose stream was opened (once each: it replays from the start)

  async function load() {
    try {
      sweep = await api(`${TRAIN}/sweeps/${id}`, { signal });
    } catch (e) {
      if (e.status === 404) showNotFound(page, "sweeps.notFound");
      else if (!signal.aborted) error.show(messageOf(e));
      return;
    }
    for (const trial of sweep.list) {
      const known = values.get(trial.job.job);
      if (trial.value !== null && !known) values.set(trial.job.job, { value: trial.value, step: -Infinity });
      statuses.set(trial.job.job, trial.job.status);
    }
    render();
    followMetrics();
  }

  function current() {
    return sweep.list.filter((trial) => trial.superseded_by === null);
  }

  /** Current trials best first (those without a value last, by id), as the server ranks them. */
  function ranked() {
    const sign = sweep.goal === "max" ? -1 : 1;
    const value = (trial) => values.get(trial.job.job)?.value ?? null;
    return current().sort((a, b) => {
      const [va, vb] = [value(a), value(b)];
      if ((va === null) !== (vb === null)) return va === null ? 1 : -1;
      if (va !== null && va !== vb) return sign * (va - vb);
      return a.job.job - b.job.job;
    });
  }

  function render() {
    title.textContent = t("sweeps.pageTitle", { id });
    title.append(" ", h("span", { class: "muted", id: "sweep-name" }, sweep.name));
    replace(badge, sweepBadge(sweep.status));
    const trials = current();
    const ended = trials.filter((trial) => FINISHED.has(statuses.get(trial.job.job))).length;
    done.textContent = t("sweeps.doneOf", { done: ended, total: trials.length });
    bar.max = Math.max(trials.length, 1);
    bar.value = ended;
    rerun.hidden = !trials.some((trial) => RERUNNABLE.has(statuses.get(trial.job.job)));
    cancel.hidden = sweep.status !== "RUNNING";
    remove.hidden = sweep.status === "RUNNING";
    const order = ranked();
    compare.href = `${BASE}/compare?jobs=${order.map((trial) => trial.job.job).join(",")}`;
    compare.hidden = order.length === 0;
    renderSummary();
    renderTable(order);
  }

  function renderSummary() {
    const run = `/#/experiments/${encodeURIComponent(sweep.experiment_id)}/runs/${encodeURIComponent(sweep.run_id)}`;
    const item = (key, ...value) => [h("dt", null, t(`sweeps.field.${key}`)), h("dd", { dataset: { field: key } }, ...value)];
    replace(
      summary,
      item("script", sweep.script),
      item("user", sweep.user),
      item("strategy", t(`sweeps.strategy.${sweep.strategy}`), sweep.seed !== null ? ` · ${t("sweeps.seedIs", { seed: sweep.seed })}` : ""),
      item("metric", sweep.metric ? `${sweep.metric} (${t(`sweeps.goal.${sweep.goal}`)})` : t("sweeps.noMetric")),
      item("run", h("a", { href: run, id: "mlflow-run", target: "_blank", rel: "noopener" }, t("job.openRun"))),
      item("created", formatTime(sweep.created_at)),
      sweep.finished_at ? item("finished", formatTime(sweep.finished_at)) : null,
    );
  }

  function renderTable(order) {
    const names = [...new Set(sweep.list.flatMap((trial) => Object.keys(trial.job.params)))];
    replace(
      head,
      h("th", { scope: "col", class: "num" }, t("sweeps.column.rank")),
      h("th", { scope: "col" }, t("sweeps.column.trial")),
      h("th", { scope: "col" }, t("sweeps.column.status")),
      h("th", { scope: "col", class: "num", id: "value-column" }, sweep.metric ?? t("sweeps.column.value")),
      names.map((name) => h("th", { scope: "col" }, name)),
    );
    const row = (trial, rank) => {
      const job = trial.job;
      const value = values.get(job.job)?.value ?? null;
      return h(
        "tr",
        { id: `trial-${job.job}`, class: trial.superseded_by === null ? null : "superseded", dataset: { job: job.job, rank: rank ?? "" } },
        h("td", { class: "col-rank num" }, rank ?? "—"),
        h(
          "td",
          { class: "col-trial" },
          h("a", { href: `${BASE}/jobs/${job.job}` }, `#${job.job}`),
          trial.superseded_by === null ? null : h("small", { class: "hint" }, ` ${t("sweeps.replacedBy", { id: trial.superseded_by })}`),
        ),
        h("td", { class: "col-status" }, statusBadge(statuses.get(job.job) ?? job.status, job.queue_position)),
        h("td", { class: "col-value num" }, formatValue(value)),
        names.map((name) => h("td", { class: "col-param", dataset: { param: name } }, name in job.params ? String(job.params[name]) : "")),
      );
    };
    replace(
      body,
      order.map((trial, index) => row(trial, index + 1)),
      sweep.list.filter((trial) => trial.superseded_by !== null).map((trial) => row(trial, null)),
    );
  }

  // Metrics of many trials can arrive in bursts (a stream replays a trial's history): rank once a frame.
  let frame = 0;
  function renderSoon() {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      if (!signal.aborted) render();
    });
  }

  /** Each running current trial's stream, for the metric's values as they are logged. */
  function followMetrics() {
    if (!sweep.metric) return;
    for (const trial of current()) {
      const jobId = trial.job.job;
      if (followed.has(jobId) || statuses.get(jobId) !== "RUNNING" || streams.size >= MAX_METRIC_STREAMS) continue;
      const stop = new AbortController();
      signal.addEventListener("abort", () => stop.abort(), { once: true });
      streams.set(jobId, stop);
      followed.add(jobId);
      follow(`${TRAIN}/jobs/${jobId}/events`, {
        signal: stop.signal,
        onEvent: (event) => {
          if (event.type === "metric" && event.key === sweep.metric) {
            const step = event.step ?? 0;
            const known = values.get(jobId);
            if (known && step < known.step) return; // an older step logged late
            values.set(jobId, { value: event.value, step });
            renderSoon();
          } else if (event.type === "end" || event.type === "deleted") {
            stop.abort();
            streams.delete(jobId);
            followMetrics(); // a running trial waiting for a stream gets this one's place
          }
        },
      });
    }
  }

  let timer = 0;
  const reload = () => {
    clearTimeout(timer);
    timer = setTimeout(load, RELOAD_DELAY_MS);
  };
  followJobChanges({
    signal,
    liveState,
    load,
    onEvent: (event) => {
      if (!sweep) return;
      const known = sweep.list.some((trial) => trial.job.job === event.job_id);
      if (known && event.type === "status") {
        statuses.set(event.job_id, event.status);
        render(); // the badge and the count change at once
      }
      if (known || event.type === "status") reload(); // a rerun's new trials too
    },
  });
  signal.addEventListener("abort", () => {
    clearTimeout(timer);
    cancelAnimationFrame(frame);
  });

  async function act(button, path, method = "POST") {
    button.disabled = true;
    try {
      await api(`${TRAIN}/sweeps/${id}${path}`, { method, signal });
      error.clear();
      await load();
    } catch (e) {
      if (!signal.aborted) error.show(messageOf(e));
    } finally {
      button.disabled = false;
    }
  }

  function onRerun() {
    return act(rerun, "/rerun");
  }

  function onCancel() {
    return act(cancel, "/cancel");
  }

  async function onDelete() {
    try {
      await api(`${TRAIN}/sweeps/${id}`, { method: "DELETE", signal });
      navigate(`${BASE}/sweeps`, { replace: true });
    } catch (e) {
      if (!signal.aborted) error.show(messageOf(e));
    }
  }

  const page = h(
    "section",
    { class: "page sweep-page" },
    h("div", { class: "page-head" }, title, badge, liveState, h("div", { class: "actions" }, rerun, cancel, compare, remove)),
    error.element,
    h("div", { class: "progress sweep-done" }, bar, done),
    h("div", { class: "card" }, summary),
    h("h2", null, t("sweeps.trials")),
    h(
      "div",
      { class: "table-wrap" },
      h("table", { class: "data", id: "trials" }, h("caption", { class: "visually-hidden" }, t("sweeps.trials")), h("thead", null, head), body),
    ),
  );
  return page;
}
