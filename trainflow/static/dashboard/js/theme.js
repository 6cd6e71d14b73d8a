/**
 * Light and dark themes. The choice is remembered in localStorage; until one is made the page
 * follows the system (the stylesheet's prefers-color-scheme), so a first visit does not flash.
 */
import { local } from "./storage.js";

const KEY = "trainflow.theme";

export function initTheme() {
  const saved = local.get(KEY);
  if (saved === "light" || saved === "dark") document.documentElement.dataset.theme = saved;
}

/** @returns {"light"|"dark"} the theme in effect */
export function theme() {
  const chosen = document.documentElement.dataset.theme;
  if (chosen === "light" || chosen === "dark") return chosen;
  return window.matchMedia?.("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

export function setTheme(value) {
  document.documentElement.dataset.theme = value;
  local.set(KEY, value);
}
