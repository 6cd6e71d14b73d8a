/**
 * Translations: English and Simplified Chinese. The choice is remembered in localStorage; the
 * first visit follows the browser's languages. `t("jobs.title")` looks a message up in the
 * current language (English when missing) and fills `{name}` placeholders.
 */
import en from "./messages/en.js";
import zhCN from "./messages/zh-CN.js";
import { local } from "./storage.js";

const KEY = "trainflow.language";
const CATALOGS = { en, "zh-CN": zhCN };
export const LANGUAGES = [
  { code: "en", name: "English" },
  { code: "zh-CN", name: "简体中文" },
];
export const languageEvents = new EventTarget();
let current = "en";

/** Picks the remembered language, else the browser's first one we have. */
export function initLanguage() {
  const saved = local.get(KEY);
  const preferred = navigator.languages?.find((tag) => /^(en|zh)\b/i.test(tag)) ?? "en";
  apply(saved in CATALOGS ? saved : /^zh/i.test(preferred) ? "zh-CN" : "en");
}

export function language() {
  return current;
}

export function setLanguage(code) {
  if (!(code in CATALOGS) || code === current) return;
  local.set(KEY, code);
  apply(code);
  languageEvents.dispatchEvent(new Event("change"));
}

function apply(code) {
  current = code;
  document.documentElement.lang = code;
}

/**
 * @param {string} key
 * @param {Record<string, string|number>} [values] replace `{name}` in the message
 */
export function t(key, values) {
  const message = CATALOGS[current][key] ?? en[key] ?? key;
  if (!values) return message;
  return message.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
}
