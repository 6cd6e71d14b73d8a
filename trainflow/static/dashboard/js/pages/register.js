/** The registration page: create an account, then sign in with it. */
import { register, signIn } from "../api.js";
import { h } from "../dom.js";
import { busy, errorBox, field, messageOf } from "../forms.js";
import { t } from "../i18n.js";
import { BASE } from "../router.js";

export function registerPage({ navigate }) {
  const username = h("input", {
    name: "username",
    autocomplete: "username",
    required: true,
    autofocus: true,
    minlength: "3",
    maxlength: "64",
  });
  const password = h("input", { name: "password", type: "password", autocomplete: "new-password", required: true });
  const confirm = h("input", { name: "confirm", type: "password", autocomplete: "new-password", required: true });
  const error = errorBox();
  const form = h(
    "form",
    {
      class: "card form",
      onsubmit: async (event) => {
        event.preventDefault();
        error.clear();
        if (password.value !== confirm.value) {
          error.show(t("register.mismatch"));
          confirm.focus();
          return;
        }
        await busy(form, async () => {
          const name = username.value.trim();
          try {
            await register(name, password.value);
            await signIn(name, password.value);
          } catch (e) {
            error.show(messageOf(e));
            return;
          }
          navigate(`${BASE}/`, { replace: true });
        });
      },
    },
    field(t("register.username"), username, t("register.usernameHint")),
    field(t("register.password"), password, t("register.passwordHint")),
    field(t("register.confirm"), confirm),
    error.element,
    h("button", { type: "submit", class: "primary" }, t("register.submit")),
  );
  return h(
    "section",
    { class: "narrow" },
    h("h1", null, t("register.title")),
    form,
    h("p", null, t("register.haveAccount"), " ", h("a", { href: `${BASE}/signin` }, t("register.signIn"))),
  );
}
