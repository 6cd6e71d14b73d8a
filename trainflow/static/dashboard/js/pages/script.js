/** One uploaded script: what it is, and its source, highlighted (an archive is downloaded). */
import { TRAIN, api } from "../api.js";
import { h, replace } from "../dom.js";
import { downloadFile } from "../download.js";
import { errorBox, messageOf } from "../forms.js";
import { formatSize, formatTime } from "../format.js";
import { pythonSource } from "../highlight.js";
import { t } from "../i18n.js";
import { showNotFound } from "../not-found.js";
import { BASE } from "../router.js";

export function scriptPage({ params, signal }) {
  const id = Number(params.id);
  const title = h("h1", null, t("script.title", { id }));
  const error = errorBox();
  const details = h("dl", { class: "summary", id: "script-details" });
  const actions = h("div", { class: "actions" });
  const source = h("div", { class: "source-wrap" });

  (async () => {
    try {
      const script = await api(`${TRAIN}/scripts/${id}`, { signal });
      title.textContent = script.filename;
      const item = (key, ...value) => [h("dt", null, t(`script.field.${key}`)), h("dd", { dataset: { field: key } }, ...value)];
      replace(
        details,
        item("kind", script.kind),
        script.kind !== "python" ? item("entrypoint", h("code", null, script.entrypoint)) : null,
        script.has_requirements ? item("requirements", t(script.kind === "python" ? "script.hasInlineRequirements" : "script.hasRequirements")) : null,
        item("size", formatSize(script.size)),
        item("sha256", h("code", { class: "hash" }, script.sha256)),
        item("owner", script.owner),
        item("uploaded", formatTime(script.created_at)),
      );
      const download = h(
        "button",
        {
          type: "button",
          id: "download-script",
          onclick: async () => {
            try {
              await downloadFile(`${TRAIN}/scripts/${id}/content`, script.filename);
            } catch (e) {
              error.show(messageOf(e));
            }
          },
        },
        t("script.download"),
      );
      replace(actions, h("a", { class: "button primary", href: `${BASE}/new?script=${id}` }, t("scripts.run")), download);
      if (script.kind === "python") {
        const text = await api(`${TRAIN}/scripts/${id}/content`, { signal, as: "text" });
        if (!signal.aborted) replace(source, await pythonSource(text));
      } else {
        replace(source, h("p", { class: "hint" }, t("script.archive")));
      }
    } catch (e) {
      if (e.status === 404) showNotFound(page, "script.notFound");
      else if (!signal.aborted) error.show(messageOf(e));
    }
  })();

  const page = h(
    "section",
    { class: "page" },
    h("p", { class: "crumbs" }, h("a", { href: `${BASE}/scripts` }, t("scripts.title"))),
    h("div", { class: "page-head" }, title, actions),
    error.element,
    h("div", { class: "card step" }, details),
    source,
  );
  return page;
}
