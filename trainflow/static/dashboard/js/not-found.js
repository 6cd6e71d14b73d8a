/**
 * "Page not found": for an address no route knows, and for a page whose job or script the
 * server does not have (or does not show this user: another user's job is a 404 too).
 */
import { h } from "./dom.js";
import { t } from "./i18n.js";
import { BASE } from "./router.js";

/** The view's children; `detail` is an optional message key saying what was not found. */
export function notFoundContent(detail) {
  return [
    h("h1", null, t("notFound.title")),
    detail ? h("p", { id: "not-found" }, t(detail)) : null,
    h("p", null, h("a", { href: `${BASE}/` }, t("notFound.back"))),
  ];
}

/** Turns `page` (a page's section) into the not-found view, in place. */
export function showNotFound(page, detail) {
  page.className = "narrow";
  page.replaceChildren(...notFoundContent(detail).filter(Boolean));
}
