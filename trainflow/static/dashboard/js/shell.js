/**
 * The frame around every page: the header (brand, navigation, language, theme, the signed-in
 * user and sign-out) and the main region the page goes into.
 */
import { signOut } from "./api.js";
import { h } from "./dom.js";
import { LANGUAGES, language, setLanguage, t } from "./i18n.js";
import { BASE, navigate } from "./router.js";
import { currentSession } from "./session.js";
import { setTheme, theme } from "./theme.js";

/**
 * @param {HTMLElement} page the page's element
 * @param {string} active which navigation link is current ("jobs", ...)
 */
export function shell(page, active) {
  const session = currentSession();
  const main = h("main", { id: "main", class: "main", tabindex: "-1" }, page);
  return [
    h("a", { class: "skip-link", href: "#main" }, t("shell.skip")),
    h(
      "header",
      { class: "topbar" },
      h("a", { class: "brand", href: `${BASE}/` }, "trainflow"),
      session ? navigation(active) : null,
      h("div", { class: "topbar-tools" }, languagePicker(), themeToggle(), session ? account(session) : null),
    ),
    main,
  ];
}

function navigation(active) {
  const link = (name, path, label) =>
    h("a", { href: `${BASE}${path}`, "aria-current": active === name ? "page" : null }, label);
  return h(
    "nav",
    { class: "nav", "aria-label": t("shell.navigation") },
    link("jobs", "/", t("nav.jobs")),
    link("new", "/new", t("nav.new")),
    link("scripts", "/scripts", t("nav.scripts")),
    link("sweeps", "/sweeps", t("nav.sweeps")),
    currentSession()?.user.role === "admin" ? link("users", "/users", t("nav.users")) : null,
    h("a", { href: "/", target: "_blank", rel: "noopener" }, t("nav.mlflow")),
  );
}

function languagePicker() {
  const select = h(
    "select",
    { id: "language", class: "compact", onchange: () => setLanguage(select.value) },
    LANGUAGES.map(({ code, name }) => h("option", { value: code, selected: code === language(), lang: code }, name)),
  );
  return h("label", { class: "tool" }, h("span", { class: "visually-hidden" }, t("shell.language")), select);
}

/** A toggle button (aria-pressed): pressed means the dark theme. */
function themeToggle() {
  const button = h(
    "button",
    {
      type: "button",
      id: "theme",
      class: "compact",
      "aria-pressed": String(theme() === "dark"),
      title: t("shell.theme"),
      onclick: () => {
        const next = theme() === "dark" ? "light" : "dark";
        setTheme(next);
        button.setAttribute("aria-pressed", String(next === "dark"));
      },
    },
    t("shell.darkTheme"),
  );
  return button;
}

function account(session) {
  return h(
    "div",
    { class: "account" },
    h(
      "a",
      { class: "who", id: "account-link", href: `${BASE}/account`, title: t("shell.account") },
      session.user.username,
    ),
    h(
      "button",
      {
        type: "button",
        id: "sign-out",
        class: "compact",
        onclick: async (event) => {
          event.currentTarget.disabled = true;
          try {
            await signOut();
          } finally {
            navigate(`${BASE}/signin`, { replace: true, state: { flash: "signin.signedOut" } });
          }
        },
      },
      t("shell.signOut"),
    ),
  );
}
