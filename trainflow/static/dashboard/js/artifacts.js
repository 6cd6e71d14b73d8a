/**
 * The MLflow run's artifacts (a job's output folder is logged there when it ends), as a tree:
 * folders are listed when opened, files are downloaded with the session's token, and images,
 * text, JSON, CSV and metric files can be previewed in place (./artifact-preview.js).
 */
import { api } from "./api.js";
import { previewKind, renderPreview } from "./artifact-preview.js";
import { h, replace } from "./dom.js";
import { downloadFile } from "./download.js";
import { errorBox, messageOf } from "./forms.js";
import { formatSize } from "./format.js";
import { t } from "./i18n.js";

export function createArtifacts() {
  const tree = h("ul", { class: "artifacts", id: "artifacts" });
  const empty = h("p", { class: "hint", hidden: true }, t("artifacts.none"));
  const error = errorBox();
  const element = h("section", { class: "card artifacts-card", hidden: true }, h("h2", null, t("artifacts.title")), error.element, empty, tree);
  let runId = null;

  async function list(path) {
    const query = new URLSearchParams({ run_id: runId });
    if (path) query.set("path", path);
    const answer = await api(`/ajax-api/2.0/mlflow/artifacts/list?${query}`);
    return (answer.files ?? []).sort((a, b) => Number(b.is_dir) - Number(a.is_dir) || a.path.localeCompare(b.path));
  }

  function entry(file) {
    const name = file.path.split("/").pop();
    if (!file.is_dir) {
      const download = h(
        "button",
        {
          type: "button",
          class: "link",
          dataset: { path: file.path },
          onclick: async () => {
            error.clear();
            try {
              const query = new URLSearchParams({ path: file.path, run_uuid: runId });
              await downloadFile(`/get-artifact?${query}`, name);
            } catch (e) {
              error.show(messageOf(e));
            }
          },
        },
        name,
      );
      return h("li", { class: "file" }, download, " ", h("small", { class: "hint" }, formatSize(file.file_size ?? 0)), previewer(file));
    }
    const children = h("ul", { hidden: true });
    const toggle = h(
      "button",
      {
        type: "button",
        class: "link",
        "aria-expanded": "false",
        dataset: { path: file.path },
        onclick: async () => {
          const open = toggle.getAttribute("aria-expanded") !== "true";
          toggle.setAttribute("aria-expanded", String(open));
          children.hidden = !open;
          if (open && !children.childElementCount) {
            try {
              replace(children, (await list(file.path)).map(entry));
            } catch (e) {
              error.show(messageOf(e));
            }
          }
        },
      },
      `${name}/`,
    );
    return h("li", { class: "folder" }, toggle, children);
  }

  /** A "Preview" toggle and the area it fills, for a file that has a preview; else nothing. */
  function previewer(file) {
    const kind = previewKind(file.path, file.file_size ?? 0);
    if (!kind) return null;
    const area = h("div", { class: "preview-area", hidden: true, dataset: { kind, preview: file.path } });
    const toggle = h(
      "button",
      {
        type: "button",
        class: "compact preview-toggle",
        "aria-expanded": "false",
        dataset: { preview: file.path },
        onclick: async () => {
          const open = toggle.getAttribute("aria-expanded") !== "true";
          toggle.setAttribute("aria-expanded", String(open));
          toggle.textContent = t(open ? "artifacts.hidePreview" : "artifacts.preview");
          area.hidden = !open;
          if (!open || area.dataset.loaded) return;
          area.dataset.loaded = "loading";
          replace(area, h("p", { class: "hint" }, t("artifacts.loading")));
          try {
            const query = new URLSearchParams({ path: file.path, run_uuid: runId });
            replace(area, await renderPreview(kind, `/get-artifact?${query}`, file.path, file.file_size ?? 0));
            area.dataset.loaded = "true";
          } catch (e) {
            delete area.dataset.loaded;
            replace(area, h("p", { class: "message error" }, messageOf(e)));
          }
        },
      },
      t("artifacts.preview"),
    );
    // In a span: the file's own button stays the item's only button (its download).
    return [" ", h("span", { class: "preview-control" }, toggle), area];
  }

  return {
    element,
    /** Lists the run's top folder (again). */
    async show(run) {
      runId = run;
      element.hidden = false;
      error.clear();
      try {
        const files = await list("");
        replace(tree, files.map(entry));
        empty.hidden = files.length > 0;
      } catch (e) {
        error.show(messageOf(e));
      }
    },
  };
}
