/**
 * The dashboard's entry point: preferences, the routes, and what happens when the session ends.
 */
import { h } from "./dom.js";
import { initLanguage, languageEvents, t } from "./i18n.js";
import { notFoundContent } from "./not-found.js";
import { accountPage } from "./pages/account.js";
import { comparePage } from "./pages/compare.js";
import { jobPage } from "./pages/job.js";
import { jobsPage } from "./pages/jobs.js";
import { newJobPage } from "./pages/new-job.js";
import { registerPage } from "./pages/register.js";
import { scriptPage } from "./pages/script.js";
import { scriptsPage } from "./pages/scripts.js";
import { signinPage } from "./pages/signin.js";
import { newSweepPage } from "./pages/new-sweep.js";
import { sweepPage } from "./pages/sweep.js";
import { sweepsPage } from "./pages/sweeps.js";
import { usersPage } from "./pages/users.js";
import { BASE, navigate, refresh, startRouter } from "./router.js";
import { currentSession, sessionEvents } from "./session.js";
import { shell } from "./shell.js";
import { initTheme } from "./theme.js";

const ROUTES = [
  { path: `${BASE}/signin`, page: signinPage, title: "signin.title", public: true, guestOnly: true },
  { path: `${BASE}/register`, page: registerPage, title: "register.title", public: true, guestOnly: true },
  { path: `${BASE}/`, page: jobsPage, title: "jobs.title", nav: "jobs" },
  { path: `${BASE}/new`, page: newJobPage, title: "new.title", nav: "new" },
  { path: `${BASE}/jobs/:id`, page: jobPage, title: "job.pageTitle", nav: "jobs" },
  { path: `${BASE}/compare`, page: comparePage, title: "compare.title", nav: "jobs" },
  { path: `${BASE}/scripts`, page: scriptsPage, title: "scripts.title", nav: "scripts" },
  { path: `${BASE}/scripts/:id`, page: scriptPage, title: "scripts.title", nav: "scripts" },
  { path: `${BASE}/account`, page: accountPage, title: "account.pageTitle", nav: "account" },
  { path: `${BASE}/users`, page: usersPage, title: "users.title", nav: "users", admin: true },
  { path: `${BASE}/sweeps`, page: sweepsPage, title: "sweeps.title", nav: "sweeps" },
  { path: `${BASE}/sweeps/new`, page: newSweepPage, title: "sweeps.newTitle", nav: "sweeps" },
  { path: `${BASE}/sweeps/:id`, page: sweepPage, title: "sweeps.title", nav: "sweeps" },
];

const root = document.getElementById("app");

function show(match, ctx) {
  const route = match?.route;
  const allowed = route && (!route.admin || currentSession()?.user.role === "admin");
  const page = allowed ? route.page(ctx) : notFound();
  root.replaceChildren(...shell(page, route?.nav));
  document.title = `${t(allowed ? route.title : "notFound.title")} · trainflow`;
}

function notFound() {
  return h("section", { class: "narrow" }, notFoundContent());
}

initTheme();
initLanguage();
languageEvents.addEventListener("change", refresh);
sessionEvents.addEventListener("expired", () => {
  if (window.location.pathname === `${BASE}/signin`) return; // another call found out first
  const here = window.location.pathname + window.location.search;
  navigate(`${BASE}/signin?next=${encodeURIComponent(here)}`, {
    replace: true,
    state: { flash: "signin.expired" },
  });
});
startRouter(ROUTES, show);
