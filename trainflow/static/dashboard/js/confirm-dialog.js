/**
 * Asking before something that cannot be undone, in a modal <dialog> (never window.confirm,
 * which blocks the page and cannot be styled or translated with the rest of it).
 */
import { h } from "./dom.js";
import { t } from "./i18n.js";

/**
 * @param {{id: string, title: string, message: string, confirmLabel: string, option?: string}} spec
 *   `option`: the label of a checkbox offered with the question (unchecked at first)
 * @returns {Promise<{confirmed: boolean, option: boolean}>} once the person has answered
 */
export function confirmDialog({ id, title, message, confirmLabel, option }) {
  return new Promise((resolve) => {
    const optionBox = option ? h("input", { type: "checkbox", id: `${id}-option` }) : null;
    const confirm = h("button", { type: "submit", class: "danger", id: `${id}-confirm`, value: "confirm" }, confirmLabel);
    const keep = h("button", { type: "submit", id: `${id}-keep`, value: "keep" }, t("dialog.keep"));
    const form = h(
      "form",
      { method: "dialog" },
      h("h2", { id: `${id}-title` }, title),
      h("p", null, message),
      optionBox ? h("label", { class: "check" }, optionBox, h("span", null, option)) : null,
      h("div", { class: "actions" }, keep, confirm),
    );
    const dialog = h("dialog", { id, class: "confirm", "aria-labelledby": `${id}-title` }, form);
    dialog.addEventListener("close", () => {
      const confirmed = dialog.returnValue === "confirm";
      resolve({ confirmed, option: Boolean(confirmed && optionBox?.checked) });
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
    keep.focus(); // the safe answer is the one Enter gives
  });
}
