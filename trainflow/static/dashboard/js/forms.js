/** Labelled form controls and the messages a form shows. */
import { h, replace, uid } from "./dom.js";
import { t } from "./i18n.js";

/**
 * A labelled control: field(t("signin.username"), h("input", {...}), hint?)
 * @returns {HTMLElement} the wrapper; the control keeps its own id or gets one
 */
export function field(label, control, hint) {
  control.id ||= uid();
  let hintElement = null;
  if (hint) {
    hintElement = h("small", { class: "hint", id: `${control.id}-hint` }, hint);
    control.setAttribute("aria-describedby", hintElement.id);
  }
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintElement);
}

/** An area for a form's error (role=alert: read out when it appears). Empty until `show`. */
export function errorBox() {
  const box = h("div", { class: "message error", role: "alert", hidden: true });
  return {
    element: box,
    show(text) {
      replace(box, text);
      box.hidden = !text;
    },
    clear() {
      replace(box);
      box.hidden = true;
    },
  };
}

/** The message for a failed API call: the server's own words, or why there was no answer. */
export function messageOf(error) {
  if (error?.name === "ApiError") {
    if (error.status === 0) return t("error.network");
    return error.message || t("error.http", { status: error.status });
  }
  return String(error?.message ?? error);
}

/** Disables a form's submit button while `work` runs. */
export async function busy(form, work) {
  const buttons = form.querySelectorAll("button[type=submit]");
  for (const button of buttons) button.disabled = true;
  form.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    for (const button of buttons) button.disabled = false;
    form.removeAttribute("aria-busy");
  }
}

/**
 * A button that asks to be pressed again before it acts (instead of a blocking confirm()
 * dialog): the first press changes its label to `confirmLabel` for a few seconds.
 */
export function confirmButton(label, confirmLabel, action, props = {}) {
  let armed = false;
  let timer = 0;
  const button = h(
    "button",
    {
      type: "button",
      class: "danger",
      ...props,
      onclick: async () => {
        if (!armed) {
          armed = true;
          button.textContent = confirmLabel;
          timer = setTimeout(() => {
            armed = false;
            button.textContent = label;
          }, 4000);
          return;
        }
        clearTimeout(timer);
        armed = false;
        button.textContent = label;
        button.disabled = true;
        try {
          await action();
        } finally {
          button.disabled = false;
        }
      },
    },
    label,
  );
  return button;
}
