/**
 * The job list: one page of jobs, filtered by status, kept live by the all-jobs event stream.
 *
 * The list is loaded once the stream has opened (its first line says where it starts, so no
 * change can fall between the two); a reconnect resumes the stream where it was, with nothing
 * lost or repeated, and needs no reload. A status event changes the row's badge at once; the page
 * is then fetched again (debounced) for what the event does not carry: new jobs, start times,
 * queue positions. There is no polling: a running job's duration is counted up in the browser.
 */
import { TRAIN, api } from "../api.js";
import { h, replace } from "../dom.js";
import { errorBox, messageOf } from "../forms.js";
import { formatDuration, formatTime, parseTime } from "../format.js";
import { t } from "../i18n.js";
import { STATUSES, statusBadge } from "../jobs.js";
import { follow } from "../live.js";
import { BASE } from "../router.js";

const PAGE_SIZE = 20;
const RELOAD_DELAY_MS = 200;

export function jobsPage({ query, signal, navigate }) {
  const page = Math.max(1, Number.parseInt(query.get("page") ?? "", 10) || 1);
  const status = STATUSES.includes(query.get("status")) ? query.get("status") : "";
  const href = (p, s) => {
    const params = new URLSearchParams();
    if (p > 1) params.set("page", String(p));
    if (s) params.set("status", s);
    const search = params.toString();
    return `${BASE}/${search ? `?${search}` : ""}`;
  };

  const liveState = h("span", { class: "live", id: "live-state", role: "status" }, t("live.connecting"));
  const error = errorBox();
  const table = jobTable();
  const pager = h("nav", { class: "pager", "aria-label": t("jobs.pages") });
  const filter = h(
    "select",
    { id: "status-filter", onchange: () => navigate(href(1, filter.value)) },
    h("option", { value: "", selected: !status }, t("jobs.allStatuses")),
    STATUSES.map((s) => h("option", { value: s, selected: s === status }, t(`status.${s}`))),
  );

  // The table is aria-busy from the moment a fetch is due until the last one has landed.
  let reloadTimer = 0;
  let loading = 0;
  async function load() {
    const params = new URLSearchParams({ page: String(page), size: String(PAGE_SIZE) });
    if (status) params.set("status", status);
    loading += 1;
    table.element.setAttribute("aria-busy", "true");
    try {
      const data = await api(`${TRAIN}/jobs?${params}`, { signal });
      error.clear();
      table.show(data.list, status);
      renderPager(data.total);
    } catch (e) {
      if (!signal.aborted) error.show(messageOf(e));
    } finally {
      loading -= 1;
      if (!loading && !reloadTimer) table.element.removeAttribute("aria-busy");
    }
  }
  const reload = () => {
    clearTimeout(reloadTimer);
    table.element.setAttribute("aria-busy", "true");
    reloadTimer = setTimeout(() => {
      reloadTimer = 0;
      load();
    }, RELOAD_DELAY_MS);
  };

  function renderPager(total) {
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    replace(
      pager,
      page > 1 ? h("a", { href: href(page - 1, status), rel: "prev" }, t("jobs.previous")) : null,
      h("span", null, t("jobs.pageOf", { page, pages, total })),
      page < pages ? h("a", { href: href(page + 1, status), rel: "next" }, t("jobs.next")) : null,
    );
  }

  let isLoaded = false;
  follow(`${TRAIN}/events`, {
    signal,
    onState: (state) => {
      liveState.textContent = t(`live.${state}`);
      liveState.dataset.state = state;
      // The first opening: the stream goes on from where the list is. Later ones resume it.
      if ((state === "open" && !isLoaded) || state === "error") {
        isLoaded = true;
        load();
      }
    },
    onEvent: (event) => {
      if (event.type === "status") table.setStatus(event.job_id, event.status);
      if (event.type === "deleted") table.remove(event.job_id);
      reload();
    },
  });

  const ticker = setInterval(() => table.tick(), 1000);
  signal.addEventListener("abort", () => {
    clearInterval(ticker);
    clearTimeout(reloadTimer);
  });

  return h(
    "section",
    { class: "page" },
    h(
      "div",
      { class: "page-head" },
      h("h1", null, t("jobs.title")),
      liveState,
      h("label", { class: "inline" }, h("span", null, t("jobs.filter")), filter),
      h("a", { class: "button primary", href: `${BASE}/new`, id: "new-job" }, t("nav.new")),
      h("a", { class: "button", href: `${BASE}/sweeps/new`, id: "new-sweep-link" }, t("sweeps.new")),
    ),
    error.element,
    table.element,
    pager,
  );
}

/** The table of jobs, with the operations the live stream needs. */
function jobTable() {
  const body = h("tbody");
  const empty = h("p", { class: "empty", id: "no-jobs", hidden: true }, t("jobs.empty"));
  const columns = ["job", "status", "user", "script", "started", "duration"];
  const element = h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "data", id: "jobs" },
      h("caption", { class: "visually-hidden" }, t("jobs.title")),
      h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col" }, t(`jobs.column.${c}`))))),
      body,
    ),
    empty,
  );
  const rows = new Map(); // job id -> {row, job}

  function cell(column, ...content) {
    return h("td", { class: `col-${column}`, "data-label": t(`jobs.column.${column}`) }, ...content);
  }

  function row(job) {
    const tr = h(
      "tr",
      { id: `job-${job.job}`, dataset: { job: job.job } },
      cell("job", h("a", { href: `${BASE}/jobs/${job.job}` }, `#${job.job}`)),
      cell("status", statusBadge(job.status, job.queue_position)),
      cell("user", job.user),
      cell("script", job.script),
      cell("started", job.started_at ? formatTime(job.started_at) : "—"),
      cell("duration", formatDuration(job.duration_s)),
    );
    return tr;
  }

  return {
    element,
    /** Shows a fresh page of jobs. */
    show(jobs, filter) {
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
      empty.textContent = filter ? t("jobs.emptyFiltered") : t("jobs.empty");
    },
    /** A status event: the badge changes before the page is fetched again. */
    setStatus(id, status) {
      const entry = rows.get(id);
      if (!entry) return;
      entry.job = { ...entry.job, status, queue_position: null };
      entry.row.querySelector(".col-status").replaceChildren(statusBadge(status, null));
    },
    remove(id) {
      rows.get(id)?.row.remove();
      rows.delete(id);
      empty.hidden = rows.size > 0;
    },
    /** Counts up the duration of running jobs, between fetches. */
    tick() {
      for (const { row: tr, job } of rows.values()) {
        if (job.status !== "RUNNING" || !job.started_at) continue;
        const started = parseTime(job.started_at);
        if (started) tr.querySelector(".col-duration").textContent = formatDuration((Date.now() - started) / 1000);
      }
    },
  };
}
