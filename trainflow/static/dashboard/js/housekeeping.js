/**
 * A job's housekeeping on its page: its tags and note (saved as they are changed), deleting a
 * finished job (and, if asked, its MLflow run), and the question before a job is cancelled.
 * Both questions are asked in a <dialog>.
 */
import { TRAIN, api } from "./api.js";
import { confirmDialog } from "./confirm-dialog.js";
import { h, replace } from "./dom.js";
import { messageOf } from "./forms.js";
import { t } from "./i18n.js";
import { FINISHED } from "./jobs.js";
import { BASE, navigate } from "./router.js";

/** Whether the person wants job `id` cancelled. */
export async function confirmCancel(id) {
  const answer = await confirmDialog({
    id: "cancel-dialog",
    title: t("housekeeping.cancelTitle", { id }),
    message: t("housekeeping.cancelMessage"),
    confirmLabel: t("housekeeping.cancelConfirm"),
  });
  return answer.confirmed;
}

/**
 * @param {{id: number, signal: AbortSignal, error: {show: (text: string) => void}}} options
 */
export function createHousekeeping({ id, signal, error }) {
  let tags = {};
  const tagList = h("ul", { class: "tags", id: "job-tags", "aria-label": t("housekeeping.tags") });
  const tagKey = h("input", { id: "tag-key", maxlength: "250", required: true, autocomplete: "off" });
  const tagValue = h("input", { id: "tag-value", maxlength: "250", autocomplete: "off" });
  const tagForm = h(
    "form",
    { class: "tag-form", onsubmit: onAddTag },
    h("label", { for: "tag-key" }, t("housekeeping.tagKey")),
    tagKey,
    h("label", { for: "tag-value" }, t("housekeeping.tagValue")),
    tagValue,
    h("button", { type: "submit", id: "add-tag" }, t("housekeeping.addTag")),
  );
  const note = h("textarea", { id: "job-note", rows: "3", maxlength: "10000" });
  const saved = h("span", { class: "muted", id: "note-saved", role: "status" });
  const saveNote = h("button", { type: "button", id: "save-note", onclick: onSaveNote }, t("housekeeping.saveNote"));
  const remove = h("button", { type: "button", class: "danger", id: "delete-job", hidden: true, onclick: onDelete }, t("housekeeping.delete"));
  const element = h(
    "section",
    { class: "card housekeeping", id: "housekeeping" },
    h("h2", null, t("housekeeping.title")),
    tagList,
    tagForm,
    h("label", { for: "job-note" }, t("housekeeping.note")),
    note,
    h("div", { class: "actions" }, saveNote, saved, remove),
  );

  function renderTags() {
    replace(
      tagList,
      Object.entries(tags).map(([key, value]) =>
        h(
          "li",
          { class: "tag", dataset: { key } },
          h("span", null, value ? `${key}: ${value}` : key),
          h("button", { type: "button", class: "link", "aria-label": t("housekeeping.removeTag", { key }), onclick: () => save({ tags: withoutKey(key) }) }, "×"),
        ),
      ),
    );
  }

  function withoutKey(key) {
    const next = { ...tags };
    delete next[key];
    return next;
  }

  async function save(changes) {
    try {
      const job = await api(`${TRAIN}/jobs/${id}`, { method: "PATCH", body: changes, signal });
      show(job);
      return true;
    } catch (e) {
      if (!signal.aborted) error.show(messageOf(e));
      return false;
    }
  }

  async function onAddTag(event) {
    event.preventDefault();
    const key = tagKey.value.trim();
    if (!key) return;
    if (await save({ tags: { ...tags, [key]: tagValue.value } })) {
      tagKey.value = "";
      tagValue.value = "";
      tagKey.focus();
    }
  }

  async function onSaveNote() {
    saveNote.disabled = true;
    saved.textContent = "";
    if (await save({ note: note.value })) saved.textContent = t("housekeeping.noteSaved");
    saveNote.disabled = false;
  }

  async function onDelete() {
    const answer = await confirmDialog({
      id: "delete-dialog",
      title: t("housekeeping.deleteTitle", { id }),
      message: t("housekeeping.deleteMessage"),
      confirmLabel: t("housekeeping.deleteConfirm"),
      option: t("housekeeping.deleteRun"),
    });
    if (!answer.confirmed) return;
    remove.disabled = true;
    try {
      await api(`${TRAIN}/jobs/${id}${answer.option ? "?delete_run=true" : ""}`, { method: "DELETE", signal });
      navigate(`${BASE}/`);
    } catch (e) {
      if (!signal.aborted) error.show(messageOf(e));
      remove.disabled = false;
    }
  }

  /** Shows the job's tags and note as the server has them. */
  function show(job) {
    tags = { ...(job.tags ?? {}) };
    renderTags();
    if (document.activeElement !== note) note.value = job.note ?? "";
    remove.hidden = !FINISHED.has(job.status);
  }

  return { element, show };
}
