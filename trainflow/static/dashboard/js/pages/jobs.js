/**
 * The job list as a run table: search, sort by any column (params and metrics included), filter
 * by status and experiment, page on the server, pick param and metric columns, and pick runs to
 * compare. The search, sort, filters and page live in the URL, so a view can be bookmarked; they
 * change it in place (history), without building the page again, so the search box keeps focus.
 *
 * Live as before: the list is loaded once the all-jobs stream has opened (its first line says
 * where it starts, so no change can fall between the two); a reconnect resumes the stream where
 * it was. A status event changes the row's badge at once; the page is then fetched again
 * (debounced) for what the event does not carry. There is no polling: a running job's duration
 * is counted up in the browser.
 */
import { TRAIN, api } from "../api.js";
import { createColumnPicker, shownParams } from "../column-picker.js";
import { h, replace } from "../dom.js";
import { errorBox, messageOf } from "../forms.js";
import { t } from "../i18n.js";
import { STATUSES } from "../jobs.js";
import { followJobChanges } from "../live.js";
import { BASE } from "../router.js";
import { createRunTable } from "../run-table.js";

const PAGE_SIZE = 20;
const RELOAD_DELAY_MS = 200;
const SEARCH_DELAY_MS = 300;

/** The view a URL asks for. */
function viewOf(query) {
  return {
    page: Math.max(1, Number.parseInt(query.get("page") ?? "", 10) || 1),
    status: STATUSES.includes(query.get("status")) ? query.get("status") : "",
    q: (query.get("q") ?? "").slice(0, 200),
    sort: query.get("sort") ?? "",
    order: query.get("order") === "asc" ? "asc" : "desc",
    experiment: /^\d+$/.test(query.get("experiment") ?? "") ? query.get("experiment") : "",
  };
}

function hrefOf(view) {
  const params = new URLSearchParams();
  if (view.page > 1) params.set("page", String(view.page));
  if (view.status) params.set("status", view.status);
  if (view.q) params.set("q", view.q);
  if (view.sort) params.set("sort", view.sort);
  if (view.sort && view.order === "asc") params.set("order", "asc");
  if (view.experiment) params.set("experiment", view.experiment);
  const search = params.toString();
  return `${BASE}/${search ? `?${search}` : ""}`;
}

export function jobsPage({ query, signal, navigate }) {
  let view = viewOf(query);
  /** A new view: into the URL (a history entry unless `typing`), and the page fetched again. */
  function setView(changes, { typing = false } = {}) {
    view = { ...view, ...changes };
    window.history[typing ? "replaceState" : "pushState"](window.history.state, "", hrefOf(view));
    load();
  }

  const liveState = h("span", { class: "live", id: "live-state", role: "status" }, t("live.connecting"));
  const error = errorBox();
  const picker = createColumnPicker(() => load());
  let selectedIds = [];
  const compare = h(
    "button",
    {
      type: "button",
      id: "compare",
      disabled: true,
      onclick: () => navigate(`${BASE}/compare?jobs=${selectedIds.join(",")}`),
    },
    t("runs.compare"),
  );
  const table = createRunTable({
    onSort: (sort) => {
      const order = view.sort === sort ? (view.order === "asc" ? "desc" : "asc") : "asc";
      setView({ sort, order, page: 1 });
    },
    onSelect: (ids) => {
      selectedIds = ids;
      compare.disabled = ids.length < 2;
      compare.textContent = ids.length ? t("runs.compareCount", { n: ids.length }) : t("runs.compare");
    },
  });
  const pager = h("nav", { class: "pager", "aria-label": t("jobs.pages") });

  let searchTimer = 0;
  const search = h("input", {
    type: "search",
    id: "job-search",
    value: view.q,
    maxlength: "200",
    placeholder: t("runs.searchHint"),
    "aria-label": t("runs.search"),
    oninput: () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => setView({ q: search.value.trim(), page: 1 }, { typing: true }), SEARCH_DELAY_MS);
    },
  });
  const statusFilter = h(
    "select",
    { id: "status-filter", onchange: () => setView({ status: statusFilter.value, page: 1 }) },
    h("option", { value: "", selected: !view.status }, t("jobs.allStatuses")),
    STATUSES.map((s) => h("option", { value: s, selected: s === view.status }, t(`status.${s}`))),
  );
  const experimentFilter = h(
    "select",
    { id: "experiment-filter", onchange: () => setView({ experiment: experimentFilter.value, page: 1 }) },
    h("option", { value: "" }, t("runs.allExperiments")),
  );

  async function loadExperiments() {
    try {
      const data = await api("/ajax-api/2.0/mlflow/experiments/search?max_results=1000", { signal });
      const experiments = (data.experiments ?? []).sort((a, b) => a.name.localeCompare(b.name));
      replace(
        experimentFilter,
        h("option", { value: "" }, t("runs.allExperiments")),
        experiments.map((e) => h("option", { value: e.experiment_id, selected: e.experiment_id === view.experiment }, e.name)),
      );
    } catch (e) {
      if (!signal.aborted) error.show(messageOf(e));
    }
  }

  // The table is aria-busy from the moment a fetch is due until the last one has landed; an
  // answer to an older view that lands after a newer one's is dropped.
  let reloadTimer = 0;
  let loading = 0;
  let latest = 0;
  async function load() {
    const metrics = picker.columns.metrics;
    const params = new URLSearchParams({ page: String(view.page), size: String(PAGE_SIZE) });
    if (view.status) params.set("status", view.status);
    if (view.q) params.set("q", view.q);
    if (view.sort) params.set("sort", view.sort);
    if (view.sort) params.set("order", view.order);
    if (view.experiment) params.set("experiment_id", view.experiment);
    if (metrics.length) params.set("metrics", metrics.join(","));
    const ticket = ++latest;
    loading += 1;
    table.element.setAttribute("aria-busy", "true");
    try {
      const data = await api(`${TRAIN}/jobs?${params}`, { signal });
      if (ticket !== latest) return;
      error.clear();
      picker.offer(data.param_keys, data.metric_keys);
      if (!experimentsLoaded) {
        experimentsLoaded = true; // once the session is known to work: no second refresh races the first
        loadExperiments();
      }
      const filtered = Boolean(view.status || view.q || view.experiment);
      const sort = view.sort || "job";
      table.show(data.list, { params: shownParams(picker.columns, data.param_keys), metrics, sort, order: view.order, filtered });
      renderPager(data.total);
    } catch (e) {
      if (!signal.aborted && ticket === latest) error.show(messageOf(e));
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

  function pageLink(page, rel, label) {
    return h(
      "a",
      {
        href: hrefOf({ ...view, page }),
        rel,
        onclick: (event) => {
          event.preventDefault();
          setView({ page });
        },
      },
      label,
    );
  }

  function renderPager(total) {
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    replace(
      pager,
      view.page > 1 ? pageLink(view.page - 1, "prev", view.sort ? t("runs.previous") : t("jobs.previous")) : null,
      h("span", { id: "page-of" }, t("jobs.pageOf", { page: view.page, pages, total })),
      view.page < pages ? pageLink(view.page + 1, "next", view.sort ? t("runs.next") : t("jobs.next")) : null,
    );
  }

  let experimentsLoaded = false;
  followJobChanges({
    signal,
    liveState,
    load,
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
    clearTimeout(searchTimer);
  });

  return h(
    "section",
    { class: "page" },
    h(
      "div",
      { class: "page-head" },
      h("h1", null, t("jobs.title")),
      liveState,
      h("a", { class: "button primary", href: `${BASE}/new`, id: "new-job" }, t("nav.new")),
      h("a", { class: "button", href: `${BASE}/sweeps/new`, id: "new-sweep-link" }, t("sweeps.new")),
    ),
    h(
      "div",
      { class: "run-tools" },
      search,
      h("label", { class: "inline" }, h("span", null, t("jobs.filter")), statusFilter),
      h("label", { class: "inline" }, h("span", null, t("runs.experiment")), experimentFilter),
      picker.element,
      compare,
    ),
    error.element,
    table.element,
    pager,
  );
}
