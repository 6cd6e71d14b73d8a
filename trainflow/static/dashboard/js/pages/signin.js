/** The sign-in page. */
import { signIn } from "../api.js";
import { h } from "../dom.js";
import { busy, errorBox, field, messageOf } from "../forms.js";
import { t } from "../i18n.js";
import { BASE, safeNext } from "../router.js";

export function signinPage({ query, state, navigate }) {
  const username = h("input", { name: "username", autocomplete: "username", required: true, autofocus: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const error = errorBox();
  const form = h(
    "form",
    {
      class: "card form",
      onsubmit: async (event) => {
        event.preventDefault();
        error.clear();
        await busy(form, async () => {
          try {
            await signIn(username.value.trim(), password.value);
          } catch (e) {
            error.show(messageOf(e));
            password.select();
            return;
          }
          navigate(safeNext(query.get("next")), { replace: true });
        });
      },
    },
    field(t("signin.username"), username),
    field(t("signin.password"), password),
    error.element,
    h("button", { type: "submit", class: "primary" }, t("signin.submit")),
  );
  return h(
    "section",
    { class: "narrow" },
    h("h1", null, t("signin.title")),
    state.flash ? h("p", { class: "message info", role: "status", id: "flash" }, t(state.flash)) : null,
    form,
    h("p", null, t("signin.noAccount"), " ", h("a", { href: `${BASE}/register` }, t("signin.register"))),
  );
}
