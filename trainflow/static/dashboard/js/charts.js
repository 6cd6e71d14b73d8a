/**
 * Metric charts drawn with uPlot (vendored: ../vendor/uplot/, MIT), filled from `metric` events
 * ({key, value, step, timestamp}) or from histories read from MLflow.
 *
 * A board holds series: one per (source, metric key). The job page has one source (the job),
 * the compare page one per job. Series are placed on charts by a group: by default metrics that
 * differ only by a split prefix or suffix (train_loss, val_loss, loss/test) share a chart, and a
 * person can add any metric to any chart. A chart's legend always shows each series' latest value
 * (the value under the cursor while hovering), its axes are labelled (x: the step or time, y: the
 * metrics), and "Save PNG" saves the plot with its legend.
 *
 * x is the step, or the time the value was logged. Points are kept sorted by x (a value logged
 * late is inserted in place), and each chart is redrawn at most once per animation frame however
 * many values arrived. What uPlot draws is decimated to the first, lowest, highest and last point
 * of each pixel column of the x range in view (`decimate`), so a series of 100,000 points costs
 * a frame about what one of 2,000 does; zooming in draws the range in view at full detail, and
 * new values do not move a zoomed view. Drag to zoom, double-click to zoom out. uPlot itself
 * (145 KB) is loaded with the first chart.
 */
import { h } from "./dom.js";
import { t } from "./i18n.js";
import { formatValue } from "./metrics.js";
import { saveChartPng } from "./chart-png.js";

const HEIGHT = 220;
// Steps are whole numbers: ticks every 1, 2, 5, 10, 20, 50 ... steps, never 2.5.
const STEP_INCREMENTS = Array.from({ length: 13 }, (_, power) => [1, 2, 5].map((m) => m * 10 ** power)).flat();
// Distinct on light and dark backgrounds; the first is the theme's accent on the job page.
export const PALETTE = [
  "#2563eb", "#e8590c", "#2f9e44", "#c2255c", "#7048e8", "#0c8599", "#e67700", "#5c940d",
  "#d6336c", "#1971c2", "#9c36b5", "#f08c00", "#087f5b", "#c92a2a", "#364fc7", "#74b816",
  "#a61e4d", "#0b7285", "#862e9c", "#868e96",
];
const DASHES = [[], [6, 4], [2, 3], [10, 3, 2, 3]];
const SPLITS = "train|training|val|valid|validation|test|eval|dev";
const PREFIX = new RegExp(`^(?:${SPLITS})[_./-](.+)$`, "i");
const SUFFIX = new RegExp(`^(.+)[_./-](?:${SPLITS})$`, "i");
let uPlotModule = null;

function loadUPlot() {
  uPlotModule ??= import("../vendor/uplot/uPlot.esm.js").then((module) => module.default);
  return uPlotModule;
}

/** The chart a metric goes on by default: its name without a split (train_loss, loss/val: loss). */
export function splitGroup(key) {
  return key.match(PREFIX)?.[1] ?? key.match(SUFFIX)?.[1] ?? key;
}

/**
 * The job page's charts: one source, a colour per metric of a chart. `id` names the board's grid
 * (its grouping button is `<id>-group`): a page with two boards gives each its own.
 */
export function createCharts({ id = "charts" } = {}) {
  const board = createChartBoard({
    id,
    label: (_source, key) => key,
    style: (_source, key, chartKeys) => ({ colour: PALETTE[chartKeys.indexOf(key) % PALETTE.length], dash: [] }),
  });
  return {
    element: board.element,
    /** A `metric` event. */
    add: (event) => board.add("job", event),
    close: () => board.close(),
  };
}

/**
 * @param {{label: (source: string, key: string, chartKeys: string[]) => string,
 *   style: (source: string, key: string, chartKeys: string[]) => {colour: string, dash: number[]},
 *   sources?: () => string[], id?: string}} describe how a series is named and drawn; `sources`:
 *   their order; `id`: the grid's id, unique on the page (the grouping button is `<id>-group`)
 */
export function createChartBoard({ label, style, sources = null, id = "charts" }) {
  const grid = h("div", { class: "chart-grid", id });
  const stepButton = h("button", { type: "button", class: "compact", "aria-pressed": "true" }, t("charts.byStep"));
  const timeButton = h("button", { type: "button", class: "compact", "aria-pressed": "false" }, t("charts.byTime"));
  const groupButton = h(
    "button",
    { type: "button", class: "compact", id: `${id}-group`, "aria-pressed": "true", title: t("charts.groupHint") },
    t("charts.group"),
  );
  const element = h(
    "section",
    { class: "charts", hidden: true, "aria-label": t("charts.title") },
    h(
      "div",
      { class: "charts-head" },
      h("h2", null, t("charts.title")),
      h("div", { class: "segmented", role: "group", "aria-label": t("charts.xAxis") }, stepButton, timeButton),
      groupButton,
      h("small", { class: "hint" }, t("charts.hint")),
    ),
    grid,
  );
  const series = new Map(); // `${source}\n${key}` -> series
  const charts = new Map(); // group -> chart
  const placed = new Map(); // key -> group a person chose for it
  let grouped = true;
  let xMode = "step";
  let frame = 0;

  const groupOf = (key) => placed.get(key) ?? (grouped ? splitGroup(key) : key);
  const requestDraw = () => {
    frame ||= requestAnimationFrame(flush);
  };

  function flush() {
    frame = 0;
    for (const chart of charts.values()) chart.draw();
  }

  function chartFor(group) {
    let chart = charts.get(group);
    if (!chart) {
      chart = metricChart(group, { mode: () => xMode, label, style, sources, requestDraw, keys: allKeys, moveHere });
      charts.set(group, chart);
      const after = [...grid.children].find((other) => other.dataset.metric.localeCompare(group) > 0);
      grid.insertBefore(chart.element, after ?? null);
      element.hidden = false;
    }
    return chart;
  }

  function seriesFor(source, key) {
    const id = `${source}\n${key}`;
    let found = series.get(id);
    if (!found) {
      found = newSeries(source, key);
      series.set(id, found);
      chartFor(groupOf(key)).attach(found);
    }
    return found;
  }

  function allKeys() {
    return [...new Set([...series.values()].map((s) => s.key))].sort();
  }

  /** Puts every series on its chart again (the grouping changed). */
  function regroup() {
    for (const chart of charts.values()) chart.destroy();
    charts.clear();
    grid.replaceChildren();
    for (const one of series.values()) chartFor(groupOf(one.key)).attach(one);
    requestDraw();
  }

  function moveHere(key, group) {
    placed.set(key, group);
    regroup();
  }

  const setMode = (mode) => {
    xMode = mode;
    stepButton.setAttribute("aria-pressed", String(mode === "step"));
    timeButton.setAttribute("aria-pressed", String(mode === "time"));
    for (const one of series.values()) one.sort(mode);
    for (const chart of charts.values()) chart.rebuild();
    requestDraw();
  };
  stepButton.addEventListener("click", () => setMode("step"));
  timeButton.addEventListener("click", () => setMode("time"));
  groupButton.addEventListener("click", () => {
    grouped = !grouped;
    placed.clear();
    groupButton.setAttribute("aria-pressed", String(grouped));
    regroup();
  });

  const resize = new ResizeObserver(() => {
    for (const chart of charts.values()) chart.fit();
  });
  resize.observe(grid);

  return {
    element,
    /** A `metric` event of `source`. */
    add(source, { key, value, step = 0, timestamp }) {
      if (typeof value !== "number") return;
      const one = seriesFor(source, key);
      one.push(step, (timestamp ?? Date.now()) / 1000, value, xMode);
      one.chart?.changed();
      requestDraw();
    },
    /** A history read at once: `points` of {step, value, timestamp}, in any order. */
    addHistory(source, key, points) {
      const one = seriesFor(source, key);
      for (const p of points) {
        if (typeof p.value === "number") one.push(Number(p.step ?? 0), Number(p.timestamp ?? 0) / 1000, p.value, null);
      }
      one.sort(xMode);
      one.chart?.changed();
      requestDraw();
    },
    /** The source's name changed (a run name arrived): legends are drawn again. */
    relabel() {
      for (const chart of charts.values()) chart.rebuild();
      requestDraw();
    },
    charts: () => [...charts.values()],
    /** Stops watching sizes (the page is left). */
    close() {
      resize.disconnect();
      cancelAnimationFrame(frame);
      for (const chart of charts.values()) chart.destroy();
    },
  };
}

/** One (source, key) series: its points in arrival order and sorted by the x in use. */
function newSeries(source, key) {
  const steps = [];
  const times = [];
  const values = [];
  let latestStep = -Infinity;
  const self = {
    source,
    key,
    chart: null,
    xs: [],
    ys: [],
    latest: null,
    push(step, time, value, mode) {
      steps.push(step);
      times.push(time);
      values.push(value);
      if (step >= latestStep) {
        latestStep = step;
        self.latest = value;
      }
      if (mode === null) return; // sorted once the batch is in
      const x = mode === "step" ? step : time;
      const { xs, ys } = self;
      if (xs.length === 0 || x >= xs[xs.length - 1]) {
        xs.push(x);
        ys.push(value);
        return;
      }
      const at = firstAbove(xs, x);
      xs.splice(at, 0, x);
      ys.splice(at, 0, value);
    },
    sort(mode) {
      const from = mode === "step" ? steps : times;
      const order = Array.from(from, (_, i) => i);
      let sorted = true;
      for (let i = 1; i < from.length && sorted; i += 1) sorted = from[i - 1] <= from[i];
      if (!sorted) order.sort((a, b) => from[a] - from[b] || a - b);
      self.xs = order.map((i) => from[i]);
      self.ys = order.map((i) => values[i]);
    },
  };
  return self;
}

/** One chart: the series of its group from every source, and its uPlot once loaded. */
function metricChart(group, { mode, label, style, sources, requestDraw, keys, moveHere }) {
  const plotArea = h("div", { class: "chart-plot" });
  const title = h("span", { class: "chart-title" }, group);
  const adder = h("select", { class: "chart-add compact", "aria-label": t("charts.addMetric", { chart: group }) });
  const save = h("button", { type: "button", class: "compact chart-save", onclick: onSave }, t("charts.savePng"));
  const element = h(
    "figure",
    { class: "chart", dataset: { metric: group, metrics: "", series: "0", points: "0", zoomed: "false", drawn: "false" } },
    h("figcaption", null, title, h("span", { class: "chart-tools" }, adder, save)),
    plotArea,
  );
  let members = []; // series on this chart, in legend order
  let plot = null;
  let loading = false;
  let dirty = false;
  let structure = true; // the series or their labels changed: uPlot is built again
  let destroyed = false;
  let range = null; // [min, max] of x while the person has zoomed in; null: everything
  let ownScaleChange = false;

  adder.addEventListener("focus", fillAdder);
  adder.addEventListener("pointerdown", fillAdder);
  adder.addEventListener("change", () => {
    if (adder.value) moveHere(adder.value, group);
  });

  /** The metrics not yet on this chart, offered when the list is opened. */
  function fillAdder() {
    const here = new Set(members.map((s) => s.key));
    const current = adder.value;
    adder.replaceChildren(
      h("option", { value: "" }, t("charts.addMetricPlaceholder")),
      ...keys()
        .filter((key) => !here.has(key))
        .map((key) => h("option", { value: key }, key)),
    );
    adder.value = current;
  }
  fillAdder();

  const memberKeys = () => [...new Set(members.map((s) => s.key))].sort();

  function order() {
    const list = sources?.() ?? [];
    const rank = (s) => {
      const at = list.indexOf(s.source);
      return at < 0 ? list.length : at;
    };
    members.sort((a, b) => rank(a) - rank(b) || String(a.source).localeCompare(String(b.source)) || a.key.localeCompare(b.key));
  }

  function legendRows() {
    const chartKeys = memberKeys();
    return members.map((s) => ({ series: s, label: label(s.source, s.key, chartKeys), ...style(s.source, s.key, chartKeys) }));
  }

  function axisLabels() {
    return { x: mode() === "step" ? t("charts.step") : t("charts.time"), y: memberKeys().join(" / ") };
  }

  function options(width) {
    const axis = { stroke: "#8b949e", grid: { stroke: "rgba(127,127,127,.18)", width: 1 }, ticks: { stroke: "rgba(127,127,127,.3)", width: 1 } };
    const labels = axisLabels();
    const byStep = mode() === "step";
    const lastX = () => Math.max(...members.map((s) => s.xs[s.xs.length - 1] ?? -Infinity));
    const showX = (v) => (v === null || !Number.isFinite(v) ? "--" : byStep ? String(v) : new Date(v * 1000).toLocaleTimeString());
    return {
      width,
      height: HEIGHT,
      scales: { x: { time: !byStep } },
      series: [
        { label: labels.x, value: (_u, v, _s, idx) => showX(idx === null ? lastX() : v) },
        ...legendRows().map((row) => ({
          label: row.label,
          stroke: row.colour,
          dash: row.dash,
          width: 1.5,
          spanGaps: true,
          points: { show: false },
          // Not hovering: the latest value (by step), so the legend is never blank.
          value: (_u, v, _s, idx) => (idx === null ? formatValue(row.series.latest) : v === null || v === undefined ? "--" : formatValue(v)),
        })),
      ],
      axes: [
        byStep ? { ...axis, incrs: STEP_INCREMENTS, label: labels.x, labelSize: 20 } : { ...axis, label: labels.x, labelSize: 20 },
        { ...axis, size: 60, label: labels.y, labelSize: 20 },
      ],
      cursor: { drag: { x: true, y: false } },
      legend: { live: true },
      hooks: { setScale: [onSetScale] },
    };
  }

  /** The person zoomed (drag) or uPlot reset the view: draw that x range at full detail. */
  function onSetScale(u, scaleKey) {
    if (scaleKey !== "x" || ownScaleChange) return;
    const [lo, hi] = extent();
    if (!(hi > lo)) return;
    const { min, max } = u.scales.x;
    const slack = (hi - lo) * 1e-9;
    range = min > lo + slack || max < hi - slack ? [min, max] : null;
    element.dataset.zoomed = String(range !== null);
    dirty = true;
    requestDraw();
  }

  function extent() {
    let lo = Infinity;
    let hi = -Infinity;
    for (const s of members) {
      if (!s.xs.length) continue;
      lo = Math.min(lo, s.xs[0]);
      hi = Math.max(hi, s.xs[s.xs.length - 1]);
    }
    return [lo, hi];
  }

  /** What uPlot is given: each series' points in range, decimated, on one shared x. */
  function drawable(uPlot) {
    const columns = Math.max(100, Math.round(plot?.bbox.width / (window.devicePixelRatio || 1)) || 400);
    const tables = members.map((s) => decimate(s.xs, s.ys, range, columns));
    if (tables.length === 1) return tables[0];
    return uPlot.join(tables);
  }

  async function create() {
    loading = true;
    const uPlot = await loadUPlot();
    loading = false;
    if (destroyed) return;
    plot?.destroy();
    order();
    structure = false;
    const labels = axisLabels();
    Object.assign(element.dataset, { metrics: memberKeys().join(" "), series: String(members.length), xLabel: labels.x, yLabel: labels.y });
    plot = new uPlot(options(width()), [[], ...members.map(() => [])], plotArea);
    plot.uPlot = uPlot;
    ownScaleChange = range !== null;
    plot.setData(drawable(uPlot));
    if (range) plot.setScale("x", { min: range[0], max: range[1] });
    ownScaleChange = false;
    // Zooming out (double-click) must see every point, not the zoomed-in slice it was drawing.
    plot.root.addEventListener(
      "dblclick",
      () => {
        range = null;
        element.dataset.zoomed = "false";
        plot.setData(drawable(uPlot));
      },
      true,
    );
    dirty = false;
    element.dataset.drawn = "true";
  }

  function width() {
    return Math.max(200, Math.floor(plotArea.clientWidth || element.clientWidth || 400));
  }

  function onSave() {
    if (!plot) return;
    const rows = legendRows().map((row) => ({ colour: row.colour, dash: row.dash, text: `${row.label}: ${formatValue(row.series.latest)}` }));
    const labels = axisLabels();
    saveChartPng(plot.ctx.canvas, { title: group, rows, fileName: `${group}.png`, caption: `${labels.y} / ${labels.x}` });
  }

  return {
    element,
    attach(one) {
      one.chart = this;
      members.push(one);
      structure = true;
      element.dataset.drawn = "false"; // until uPlot is built with it
      dirty = true;
    },
    changed() {
      dirty = true;
    },
    rebuild() {
      range = null;
      element.dataset.zoomed = "false";
      structure = true;
      dirty = true;
    },
    draw() {
      element.dataset.points = String(members.reduce((sum, s) => sum + s.xs.length, 0));
      if (loading) return;
      if (!plot || structure) {
        create();
        return;
      }
      if (!dirty) return;
      dirty = false;
      const uPlot = plot.uPlot;
      if (range === null) {
        plot.setData(drawable(uPlot)); // and fit x and y to it
      } else {
        // Zoomed in: new points must not move the view.
        ownScaleChange = true;
        plot.setData(drawable(uPlot), false);
        plot.setScale("x", { min: range[0], max: range[1] });
        ownScaleChange = false;
      }
      if (plot.cursor.idx === null || plot.cursor.idx === undefined) plot.setLegend({ idx: null });
    },
    fit() {
      if (!plot || width() === plot.width) return;
      plot.setSize({ width: width(), height: HEIGHT });
      dirty = true; // as many columns as the new width
      requestDraw();
    },
    destroy() {
      destroyed = true;
      plot?.destroy();
    },
  };
}

/** NaN and infinities (a history's "NaN", "Infinity") are gaps in the line; the legend shows them. */
const drawn = (y) => (Number.isFinite(y) ? y : null);

/** The index of the first element of sorted `values` greater than `x`. */
function firstAbove(values, x) {
  let lo = 0;
  let hi = values.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (values[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Downsampling for drawing: the points with x in `range` (and one either side, so the line runs
 * to the edges), at most the first, lowest, highest and last point of each of `columns` equal
 * slices of x. Spikes survive (a min/max per pixel column is what a line through every point
 * would show); a series that already fits is returned whole. Values that are not finite are
 * drawn as gaps (null), and never count as a column's lowest or highest.
 * @returns {[number[], number[]]}
 */
export function decimate(xs, ys, range, columns) {
  let from = 0;
  let to = xs.length;
  if (range) {
    from = Math.max(0, firstAbove(xs, range[0]) - 2);
    to = Math.min(xs.length, firstAbove(xs, range[1]) + 1);
  }
  if (to - from <= columns * 4) return [xs.slice(from, to), ys.slice(from, to).map(drawn)];
  const outX = [];
  const outY = [];
  const x0 = xs[from];
  const scale = columns / (xs[to - 1] - x0 || 1);
  let column = -1;
  let first = 0;
  let low = 0;
  let high = 0;
  let last = 0;
  let pushed = -1;
  const flush = () => {
    for (const i of [first, low, high, last].sort((a, b) => a - b)) {
      if (i === pushed) continue;
      outX.push(xs[i]);
      outY.push(drawn(ys[i]));
      pushed = i;
    }
  };
  for (let i = from; i < to; i += 1) {
    const c = Math.min(columns - 1, Math.floor((xs[i] - x0) * scale));
    if (c !== column) {
      if (column >= 0) flush();
      column = c;
      first = low = high = last = i;
    } else {
      if (ys[i] < ys[low] || !Number.isFinite(ys[low])) low = i;
      if (ys[i] > ys[high] || !Number.isFinite(ys[high])) high = i;
      last = i;
    }
  }
  flush();
  return [outX, outY];
}
