/** Users, for admins: list, create, change a role, delete. */
import { api } from "../api.js";
import { h, replace } from "../dom.js";
import { busy, confirmButton, errorBox, field, messageOf } from "../forms.js";
import { formatTime } from "../format.js";
import { t } from "../i18n.js";
import { BASE } from "../router.js";
import { currentSession } from "../session.js";

const PAGE_SIZE = 20;
const ROLES = ["user", "admin"];

export function usersPage({ query, signal }) {
  const page = Math.max(1, Number.parseInt(query.get("page") ?? "", 10) || 1);
  const error = errorBox();
  const body = h("tbody");
  const pager = h("nav", { class: "pager", "aria-label": t("jobs.pages") });
  const me = currentSession()?.user;

  async function load() {
    try {
      const data = await api(`/api/users?page=${page}&size=${PAGE_SIZE}`, { signal });
      replace(body, data.list.map(row));
      const pages = Math.max(1, Math.ceil(data.total / PAGE_SIZE));
      replace(
        pager,
        page > 1 ? h("a", { href: `${BASE}/users?page=${page - 1}`, rel: "prev" }, t("users.previous")) : null,
        h("span", null, t("users.pageOf", { page, pages, total: data.total })),
        page < pages ? h("a", { href: `${BASE}/users?page=${page + 1}`, rel: "next" }, t("users.next")) : null,
      );
    } catch (e) {
      if (!signal.aborted) error.show(messageOf(e));
    }
  }

  function row(user) {
    const role = h(
      "select",
      {
        "aria-label": t("users.roleOf", { name: user.username }),
        class: "compact",
        onchange: async () => {
          error.clear();
          try {
            await api(`/api/users/${user.id}`, { method: "PATCH", body: { role: role.value }, signal });
          } catch (e) {
            role.value = user.role;
            if (!signal.aborted) error.show(messageOf(e));
          }
        },
      },
      ROLES.map((r) => h("option", { value: r, selected: r === user.role }, t(`role.${r}`))),
    );
    const remove = confirmButton(
      t("users.delete"),
      t("users.confirmDelete", { name: user.username }),
      async () => {
        error.clear();
        try {
          await api(`/api/users/${user.id}`, { method: "DELETE", signal });
          tr.remove();
        } catch (e) {
          if (!signal.aborted) error.show(messageOf(e));
        }
      },
      { class: "danger compact", hidden: user.id === me?.id },
    );
    const cell = (column, ...content) => h("td", { class: `col-${column}`, "data-label": t(`users.column.${column}`) }, ...content);
    const tr = h(
      "tr",
      { id: `user-${user.id}`, dataset: { user: user.username } },
      cell("username", user.username),
      cell("role", role),
      cell("email", user.email ?? ""),
      cell("created", formatTime(user.created_at)),
      cell("actions", remove),
    );
    return tr;
  }

  const username = h("input", { id: "new-username", autocomplete: "off", required: true });
  const password = h("input", { id: "new-user-password", type: "password", autocomplete: "new-password", required: true });
  const role = h("select", { id: "new-user-role" }, ROLES.map((r) => h("option", { value: r }, t(`role.${r}`))));
  const createError = errorBox();
  const create = h(
    "form",
    {
      class: "card step",
      id: "create-user",
      onsubmit: async (event) => {
        event.preventDefault();
        createError.clear();
        await busy(create, async () => {
          try {
            const user = await api("/api/users", {
              method: "POST",
              body: { username: username.value.trim(), password: password.value, role: role.value },
              signal,
            });
            create.reset();
            body.prepend(row(user));
          } catch (e) {
            if (!signal.aborted) createError.show(messageOf(e));
          }
        });
      },
    },
    h("h2", null, t("users.create")),
    h(
      "div",
      { class: "grid-3" },
      field(t("register.username"), username, t("register.usernameHint")),
      field(t("register.password"), password, t("register.passwordHint")),
      field(t("users.role"), role),
    ),
    createError.element,
    h("button", { type: "submit", class: "primary" }, t("users.createButton")),
  );

  load();
  const columns = ["username", "role", "email", "created", "actions"];
  return h(
    "section",
    { class: "page" },
    h("h1", null, t("users.title")),
    error.element,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "data", id: "users" },
        h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col" }, t(`users.column.${c}`))))),
        body,
      ),
    ),
    pager,
    create,
  );
}
