/** The signed-in person's account: details, password change, signing out everywhere. */
import { api } from "../api.js";
import { h, replace } from "../dom.js";
import { busy, errorBox, field, messageOf } from "../forms.js";
import { formatTime } from "../format.js";
import { t } from "../i18n.js";
import { BASE } from "../router.js";
import { currentSession, endSession, startSession } from "../session.js";

export function accountPage({ signal, navigate }) {
  const details = h("dl", { class: "summary", id: "account-details" });
  const error = errorBox();
  const email = h("input", { id: "email", type: "email", autocomplete: "email", maxlength: "254" });
  const phone = h("input", { id: "phone", type: "tel", autocomplete: "tel", maxlength: "32" });
  let me = null;

  async function load() {
    try {
      me = await api("/api/me", { signal });
    } catch (e) {
      if (!signal.aborted) error.show(messageOf(e));
      return;
    }
    const item = (key, value) => [h("dt", null, t(`account.${key}`)), h("dd", { dataset: { field: key } }, value)];
    replace(
      details,
      item("username", me.username),
      item("role", t(`role.${me.role}`)),
      item("created", formatTime(me.created_at)),
    );
    email.value = me.email ?? "";
    phone.value = me.phone ?? "";
  }

  const contactError = errorBox();
  const contactSaved = h("p", { class: "message info", role: "status", hidden: true }, t("account.saved"));
  const contact = h(
    "form",
    {
      class: "card step",
      id: "contact-form",
      onsubmit: async (event) => {
        event.preventDefault();
        contactError.clear();
        contactSaved.hidden = true;
        await busy(contact, async () => {
          try {
            me = await api(`/api/users/${me.id}`, {
              method: "PATCH",
              body: { email: email.value.trim() || null, phone: phone.value.trim() || null },
              signal,
            });
            contactSaved.hidden = false;
          } catch (e) {
            if (!signal.aborted) contactError.show(messageOf(e));
          }
        });
      },
    },
    h("h2", null, t("account.contact")),
    h("div", { class: "grid-2" }, field(t("account.email"), email), field(t("account.phone"), phone)),
    contactError.element,
    contactSaved,
    h("button", { type: "submit" }, t("account.save")),
  );

  const old = h("input", { id: "old-password", type: "password", autocomplete: "current-password", required: true });
  const fresh = h("input", { id: "new-password", type: "password", autocomplete: "new-password", required: true });
  const again = h("input", { id: "new-password-again", type: "password", autocomplete: "new-password", required: true });
  const passwordError = errorBox();
  const passwordDone = h("p", { class: "message info", role: "status", hidden: true, id: "password-changed" }, t("account.passwordChanged"));
  const password = h(
    "form",
    {
      class: "card step",
      id: "password-form",
      onsubmit: async (event) => {
        event.preventDefault();
        passwordError.clear();
        passwordDone.hidden = true;
        if (fresh.value !== again.value) {
          passwordError.show(t("register.mismatch"));
          return;
        }
        await busy(password, async () => {
          try {
            // The answer holds new tokens: the old ones (here and elsewhere) no longer work.
            const body = { old_password: old.value, new_password: fresh.value };
            startSession(await api("/api/me/password", { method: "POST", body, signal, checksPassword: true }));
            password.reset();
            passwordDone.hidden = false;
          } catch (e) {
            if (!signal.aborted) passwordError.show(messageOf(e));
          }
        });
      },
    },
    h("h2", null, t("account.changePassword")),
    field(t("account.oldPassword"), old),
    field(t("account.newPassword"), fresh, t("register.passwordHint")),
    field(t("register.confirm"), again),
    passwordError.element,
    passwordDone,
    h("button", { type: "submit" }, t("account.changePassword")),
  );

  const everywhere = h(
    "button",
    {
      type: "button",
      id: "sign-out-everywhere",
      class: "danger",
      onclick: async () => {
        everywhere.disabled = true;
        try {
          await api("/api/logout", { method: "POST", body: { all: true } });
          endSession();
          navigate(`${BASE}/signin`, { replace: true, state: { flash: "signin.signedOutEverywhere" } });
        } catch (e) {
          error.show(messageOf(e));
          everywhere.disabled = false;
        }
      },
    },
    t("account.signOutEverywhere"),
  );

  load();
  return h(
    "section",
    { class: "page account" },
    h("h1", null, t("account.title", { name: currentSession()?.user.username ?? "" })),
    error.element,
    h("div", { class: "card step" }, details),
    contact,
    password,
    h("div", { class: "card step" }, h("h2", null, t("account.sessions")), h("p", { class: "hint" }, t("account.sessionsHint")), everywhere),
  );
}
