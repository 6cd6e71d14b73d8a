/** The person's uploaded scripts (an admin: everyone's): view, run, delete. */
import { TRAIN, api } from "../api.js";
import { h, replace } from "../dom.js";
import { confirmButton, errorBox, messageOf } from "../forms.js";
import { formatSize, formatTime } from "../format.js";
import { t } from "../i18n.js";
import { BASE } from "../router.js";

const PAGE_SIZE = 20;

export function scriptsPage({ query, signal }) {
  const page = Math.max(1, Number.parseInt(query.get("page") ?? "", 10) || 1);
  const error = errorBox();
  const body = h("tbody");
  const empty = h("p", { class: "empty", hidden: true }, t("scripts.empty"), " ", h("a", { href: `${BASE}/new` }, t("scripts.upload")));
  const pager = h("nav", { class: "pager", "aria-label": t("jobs.pages") });
  const columns = ["filename", "kind", "size", "owner", "uploaded", "actions"];

  function row(script) {
    const cell = (column, ...content) => h("td", { class: `col-${column}`, "data-label": t(`scripts.column.${column}`) }, ...content);
    const tr = h(
      "tr",
      { id: `script-${script.script}` },
      cell("filename", h("a", { href: `${BASE}/scripts/${script.script}` }, script.filename)),
      cell("kind", script.kind),
      cell("size", formatSize(script.size)),
      cell("owner", script.owner),
      cell("uploaded", formatTime(script.created_at)),
      cell(
        "actions",
        h(
          "div",
          { class: "row-actions" },
          h("a", { class: "button compact", href: `${BASE}/new?script=${script.script}` }, t("scripts.run")),
          confirmButton(
            t("scripts.delete"),
            t("scripts.confirmDelete"),
            async () => {
              error.clear();
              try {
                await api(`${TRAIN}/scripts/${script.script}`, { method: "DELETE", signal });
                tr.remove();
              } catch (e) {
                if (!signal.aborted) error.show(messageOf(e));
              }
            },
            { class: "danger compact" },
          ),
        ),
      ),
    );
    return tr;
  }

  (async () => {
    try {
      const data = await api(`${TRAIN}/scripts?page=${page}&size=${PAGE_SIZE}`, { signal });
      replace(body, data.list.map(row));
      empty.hidden = data.list.length > 0;
      const pages = Math.max(1, Math.ceil(data.total / PAGE_SIZE));
      replace(
        pager,
        page > 1 ? h("a", { href: `${BASE}/scripts?page=${page - 1}`, rel: "prev" }, t("users.previous")) : null,
        h("span", null, t("scripts.pageOf", { page, pages, total: data.total })),
        page < pages ? h("a", { href: `${BASE}/scripts?page=${page + 1}`, rel: "next" }, t("users.next")) : null,
      );
    } catch (e) {
      if (!signal.aborted) error.show(messageOf(e));
    }
  })();

  return h(
    "section",
    { class: "page" },
    h("div", { class: "page-head" }, h("h1", null, t("scripts.title")), h("a", { class: "button primary", href: `${BASE}/new` }, t("scripts.upload"))),
    error.element,
    h(
      "div",
      { class: "table-wrap" },
      h("table", { class: "data", id: "scripts" }, h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col" }, t(`scripts.column.${c}`))))), body),
      empty,
    ),
    pager,
  );
}
