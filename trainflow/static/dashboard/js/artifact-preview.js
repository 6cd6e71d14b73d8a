/**
 * Previews of a run's artifacts, read with the signed-in user's token.
 *
 * Images are read as a Blob and shown from a data: URL (the Content-Security-Policy allows
 * images from 'self' and data: only, and an <img> cannot send the Authorization header); SVG is
 * only ever shown as an <img>, where its scripts do not run. Text files show their first 64 KB,
 * JSON is pretty-printed, CSV shows its first 50 rows as a table, and MLflow metric files
 * ("timestamp value step" lines) as a table of steps. Everything a file holds reaches the page as
 * text. Only the bytes shown are read: the download stops once enough has arrived.
 */
import { refreshSession } from "./api.js";
import { h } from "./dom.js";
import { formatSize, formatTime } from "./format.js";
import { t } from "./i18n.js";
import { authHeaders, endSession } from "./session.js";

export const TEXT_LIMIT = 64 * 1024;
const JSON_LIMIT = 1024 * 1024; // pretty-printed whole up to this, else shown as text
const CSV_LIMIT = 256 * 1024;
const CSV_ROWS = 50;
const IMAGE_LIMIT = 20 * 1024 * 1024;
const IMAGE_TYPES = { png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", webp: "image/webp", svg: "image/svg+xml" };
const TEXT_TYPES = new Set(["txt", "log", "md", "markdown", "py", "yaml", "yml", "toml", "ini", "cfg", "sh", "out", "err", "rst", "conf"]);

/** What preview a file gets: "image", "json", "csv", "metric", "text", or null (download only). */
export function previewKind(path, size = 0) {
  const name = path.split("/").pop();
  const dot = name.lastIndexOf(".");
  const ext = dot > 0 ? name.slice(dot + 1).toLowerCase() : "";
  if (ext in IMAGE_TYPES) return size <= IMAGE_LIMIT ? "image" : null;
  if (ext === "json") return "json";
  if (ext === "csv" || ext === "tsv") return "csv";
  if (TEXT_TYPES.has(ext)) return "text";
  if (!ext && /(^|\/)metrics\//.test(path)) return "metric";
  return null;
}

/**
 * The preview's content.
 * @param {string} url the file's download URL (same origin)
 * @returns {Promise<HTMLElement>}
 */
export async function renderPreview(kind, url, path, size) {
  if (kind === "image") {
    const ext = path.split(".").pop().toLowerCase();
    const bytes = await readBytes(url, IMAGE_LIMIT);
    const src = await dataUrl(new Blob([bytes.data], { type: IMAGE_TYPES[ext] }));
    return h("div", { class: "preview preview-image" }, h("img", { src, alt: path.split("/").pop() }));
  }
  const limit = kind === "json" ? JSON_LIMIT : kind === "csv" ? CSV_LIMIT : TEXT_LIMIT;
  const { data, complete } = await readBytes(url, limit);
  const text = new TextDecoder("utf-8").decode(data);
  if (kind === "json" && complete) {
    try {
      return textBlock("preview-json", JSON.stringify(JSON.parse(text), null, 2), null);
    } catch {
      // not JSON after all: shown as text
    }
  }
  if (kind === "csv") {
    const table = csvTable(text, complete, path.toLowerCase().endsWith(".tsv") ? "\t" : ",");
    if (table) return table;
  }
  if (kind === "metric") {
    const table = metricTable(text, complete);
    if (table) return table;
  }
  const shown = text.length > TEXT_LIMIT ? text.slice(0, TEXT_LIMIT) : text;
  const cut = !complete || data.byteLength > TEXT_LIMIT || size > TEXT_LIMIT;
  return textBlock("preview-text", shown, cut ? t("artifacts.truncated", { size: formatSize(TEXT_LIMIT) }) : null);
}

function textBlock(kind, text, note) {
  return h("div", { class: `preview ${kind}` }, note ? h("p", { class: "hint preview-note" }, note) : null, h("pre", { class: "preview-pre" }, text));
}

/** The first rows of a CSV file as a table (quoted fields with commas and newlines understood). */
function csvTable(text, complete, separator) {
  const rows = parseCsv(text, separator, CSV_ROWS + 2);
  if (!complete && rows.length) rows.pop(); // the last row may be cut
  if (!rows.length) return null;
  const [header, ...rest] = rows;
  const shown = rest.slice(0, CSV_ROWS);
  const cut = rest.length > CSV_ROWS || !complete;
  return h(
    "div",
    { class: "preview preview-csv" },
    cut ? h("p", { class: "hint preview-note" }, t("artifacts.firstRows", { n: CSV_ROWS })) : null,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "data compact" },
        h("thead", null, h("tr", null, header.map((cell) => h("th", { scope: "col" }, cell)))),
        h("tbody", null, shown.map((row) => h("tr", null, row.map((cell) => h("td", null, cell))))),
      ),
    ),
  );
}

/** RFC 4180, forgiving: at most `maxRows` rows. */
export function parseCsv(text, separator = ",", maxRows = Infinity) {
  const rows = [];
  let row = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < text.length && rows.length < maxRows; i += 1) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i += 1;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"' && cell === "") quoted = true;
    else if (c === separator) {
      row.push(cell);
      cell = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i += 1;
      row.push(cell);
      rows.push(row);
      row = [];
      cell = "";
    } else cell += c;
  }
  if ((cell !== "" || row.length) && rows.length < maxRows) {
    row.push(cell);
    rows.push(row);
  }
  return rows;
}

/** MLflow's file store writes a metric as lines of "timestamp value step". */
function metricTable(text, complete) {
  const lines = text.split("\n").filter((line) => line.trim());
  if (!complete && lines.length) lines.pop();
  const rows = lines.map((line) => line.trim().split(/\s+/).map(Number));
  if (!rows.length || !rows.every((r) => (r.length === 3 || r.length === 2) && r.every(Number.isFinite))) return null;
  const shown = rows.slice(0, CSV_ROWS);
  return h(
    "div",
    { class: "preview preview-metric" },
    h("p", { class: "hint preview-note" }, t("artifacts.metricFile"), rows.length > CSV_ROWS || !complete ? ` ${t("artifacts.firstRows", { n: CSV_ROWS })}` : ""),
    h(
      "table",
      { class: "compact-table" },
      h("thead", null, h("tr", null, ["job.step", "job.value", "charts.time"].map((key) => h("th", { scope: "col" }, t(key))))),
      h(
        "tbody",
        null,
        shown.map(([time, value, step = 0]) => h("tr", null, h("td", { class: "num" }, String(step)), h("td", { class: "num" }, String(value)), h("td", null, formatTime(new Date(time))))),
      ),
    ),
  );
}

/**
 * Up to `limit` bytes of `url`, with this session's token (refreshed once on a 401).
 * @returns {Promise<{data: Uint8Array, complete: boolean}>} complete: the whole file was read
 */
async function readBytes(url, limit) {
  let response = await get(url);
  if (response.status === 401 && (await refreshSession())) response = await get(url);
  if (response.status === 401) endSession({ expired: true });
  if (!response.ok) {
    let message = "";
    try {
      message = (await response.json())?.error?.message ?? "";
    } catch {
      // not JSON
    }
    throw new Error(message || t("error.http", { status: response.status }));
  }
  const reader = response.body.getReader();
  const chunks = [];
  let total = 0;
  let complete = false;
  while (total <= limit) {
    const { done, value } = await reader.read();
    if (done) {
      complete = true;
      break;
    }
    chunks.push(value);
    total += value.byteLength;
  }
  if (!complete) await reader.cancel().catch(() => {});
  const data = new Uint8Array(Math.min(total, complete ? total : limit));
  let at = 0;
  for (const chunk of chunks) {
    const part = chunk.subarray(0, data.length - at);
    data.set(part, at);
    at += part.length;
    if (at >= data.length) break;
  }
  return { data, complete };
}

function get(url) {
  return fetch(url, { headers: authHeaders(), credentials: "omit", cache: "no-store" });
}

function dataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}
