/**
 * Client-side routing with the History API. The server answers every /train/<path> with the same
 * index.html, so any page can be reloaded or bookmarked.
 *
 * A route is `{path: "/train/jobs/:id", page, public?, guestOnly?}`. A page is a function
 * `(ctx) => HTMLElement` with ctx = {params, query, state, signal, navigate}; `signal` aborts
 * when the person leaves the page, which is how a page closes its streams and timers.
 */
import { isSignedIn } from "./session.js";

export const BASE = "/train";
let routes = [];
let render = () => {};
let leave = null;

/**
 * @param {Array<object>} table the routes
 * @param {(match: {route: object, params: object}|null, ctx: object) => void} show puts a page on
 *   screen (the app's shell)
 */
export function startRouter(table, show) {
  routes = table.map((route) => ({ ...route, pattern: compile(route.path) }));
  render = () => {
    leave?.abort();
    leave = new AbortController();
    const url = new URL(window.location.href);
    const match = find(url.pathname);
    if (match && !match.route.public && !isSignedIn()) {
      navigate(`${BASE}/signin?next=${encodeURIComponent(url.pathname + url.search)}`, { replace: true });
      return;
    }
    if (match?.route.guestOnly && isSignedIn()) {
      navigate(`${BASE}/`, { replace: true });
      return;
    }
    const ctx = {
      params: match?.params ?? {},
      query: url.searchParams,
      state: window.history.state ?? {},
      signal: leave.signal,
      navigate,
    };
    show(match, ctx);
  };
  window.addEventListener("popstate", () => render());
  document.addEventListener("click", onClick);
  render();
}

/** Shows `path` (under /train/), adding a history entry unless `replace`. */
export function navigate(path, { replace = false, state = {} } = {}) {
  const method = replace ? "replaceState" : "pushState";
  window.history[method](state, "", path);
  render();
}

/** Renders the current page again (after the language changed, or the session ended). */
export function refresh() {
  render();
}

/** The path to return to after signing in: only a page of the dashboard. */
export function safeNext(value) {
  return typeof value === "string" && value.startsWith(`${BASE}/`) && !value.startsWith("//") ? value : `${BASE}/`;
}

function compile(path) {
  const source = path
    .split("/")
    .map((part) => (part.startsWith(":") ? `(?<${part.slice(1)}>[^/]+)` : part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
    .join("/");
  return new RegExp(`^${source}/?$`);
}

function find(pathname) {
  for (const route of routes) {
    const found = route.pattern.exec(pathname);
    if (found) return { route, params: { ...found.groups } };
  }
  return null;
}

/** Links to pages of the dashboard are followed without reloading the page. */
function onClick(event) {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest?.("a[href]");
  if (!link || link.target || link.hasAttribute("download")) return;
  const url = new URL(link.href, window.location.href);
  if (url.origin !== window.location.origin || !(url.pathname === BASE || url.pathname.startsWith(`${BASE}/`))) return;
  if (url.pathname.startsWith(`${BASE}/static/`)) return;
  event.preventDefault();
  navigate(url.pathname + url.search + url.hash);
}
