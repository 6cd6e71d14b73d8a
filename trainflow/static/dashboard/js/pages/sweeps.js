/**
 * The list of sweeps, newest first: each one's status and how many of its trials have ended.
 * Kept live by the all-jobs stream: a trial's status change fetches the page again (debounced).
 */
import { TRAIN, api } from "../api.js";
import { h, replace } from "../dom.js";
import { errorBox, messageOf } from "../forms.js";
import { formatTime } from "../format.js";
import { t } from "../i18n.js";
import { followJobChanges } from "../live.js";
import { BASE } from "../router.js";
import { sweepBadge } from "../sweeps.js";

const PAGE_SIZE = 20;
const RELOAD_DELAY_MS = 300;

export function sweepsPage({ query, signal }) {
  const page = Math.max(1, Number.parseInt(query.get("page") ?? "", 10) || 1);
  const liveState = h("span", { class: "live", id: "live-state", role: "status" }, t("live.connecting"));
  const error = errorBox();
  const body = h("tbody");
  const empty = h("p", { class: "empty", id: "no-sweeps", hidden: true }, t("sweeps.empty"));
  const pager = h("nav", { class: "pager", "aria-label": t("jobs.pages") });
  const columns = ["sweep", "name", "status", "done", "strategy", "metric", "created"];
  const cell = (column, ...content) => h("td", { class: `col-${column}`, "data-label": t(`sweeps.column.${column}`) }, ...content);
  const table = h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "data", id: "sweeps" },
      h("caption", { class: "visually-hidden" }, t("sweeps.title")),
      h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col" }, t(`sweeps.column.${c}`))))),
      body,
    ),
    empty,
  );

  async function load() {
    try {
      const data = await api(`${TRAIN}/sweeps?page=${page}&size=${PAGE_SIZE}`, { signal });
      error.clear();
      replace(
        body,
        data.list.map((s) =>
          h(
            "tr",
            { id: `sweep-${s.sweep}`, dataset: { sweep: s.sweep } },
            cell("sweep", h("a", { href: `${BASE}/sweeps/${s.sweep}` }, `#${s.sweep}`)),
            cell("name", s.name),
            cell("status", sweepBadge(s.status)),
            cell("done", t("sweeps.doneOf", { done: s.done, total: s.trials })),
            cell("strategy", t(`sweeps.strategy.${s.strategy}`)),
            cell("metric", s.metric ? `${s.metric} (${t(`sweeps.goal.${s.goal}`)})` : "—"),
            cell("created", formatTime(s.created_at)),
          ),
        ),
      );
      empty.hidden = data.list.length > 0;
      const pages = Math.max(1, Math.ceil(data.total / PAGE_SIZE));
      replace(
        pager,
        page > 1 ? h("a", { href: `${BASE}/sweeps?page=${page - 1}`, rel: "prev" }, t("jobs.previous")) : null,
        h("span", null, t("sweeps.pageOf", { page, pages, total: data.total })),
        page < pages ? h("a", { href: `${BASE}/sweeps?page=${page + 1}`, rel: "next" }, t("jobs.next")) : null,
      );
    } catch (e) {
      if (!signal.aborted) error.show(messageOf(e));
    }
  }

  let timer = 0;
  followJobChanges({
    signal,
    liveState,
    load,
    onEvent: () => {
      clearTimeout(timer);
      timer = setTimeout(load, RELOAD_DELAY_MS);
    },
  });
  signal.addEventListener("abort", () => clearTimeout(timer));

  return h(
    "section",
    { class: "page" },
    h(
      "div",
      { class: "page-head" },
      h("h1", null, t("sweeps.title")),
      liveState,
      h("a", { class: "button primary", href: `${BASE}/sweeps/new`, id: "new-sweep" }, t("sweeps.new")),
    ),
    error.element,
    table,
    pager,
  );
}
