/**
 * A chart per metric key, drawn with uPlot (vendored: ../vendor/uplot/, MIT), filled from the
 * job's `metric` events ({key, value, step, timestamp}).
 *
 * x is the step, or the time the value was logged. Points are kept sorted by x (a value logged
 * late is inserted in place), and each chart is redrawn at most once per animation frame however
 * many values arrived. uPlot draws a line through many points per pixel column as that column's
 * min and max, so a series of 100,000 points draws in a few milliseconds; while the person has
 * zoomed in, new values extend the data without moving their view. Drag to zoom, double-click to
 * zoom out, hover for values. uPlot itself (145 KB) is loaded with the first metric.
 */
import { h } from "./dom.js";
import { t } from "./i18n.js";

const HEIGHT = 220;
// Steps are whole numbers: ticks every 1, 2, 5, 10, 20, 50 ... steps, never 2.5.
const STEP_INCREMENTS = Array.from({ length: 13 }, (_, power) => [1, 2, 5].map((m) => m * 10 ** power)).flat();
let uPlotModule = null;

function loadUPlot() {
  uPlotModule ??= import("../vendor/uplot/uPlot.esm.js").then((module) => module.default);
  return uPlotModule;
}

export function createCharts() {
  const grid = h("div", { class: "chart-grid", id: "charts" });
  const stepButton = h("button", { type: "button", class: "compact", "aria-pressed": "true" }, t("charts.byStep"));
  const timeButton = h("button", { type: "button", class: "compact", "aria-pressed": "false" }, t("charts.byTime"));
  const element = h(
    "section",
    { class: "charts", hidden: true, "aria-label": t("charts.title") },
    h(
      "div",
      { class: "charts-head" },
      h("h2", null, t("charts.title")),
      h("div", { class: "segmented", role: "group", "aria-label": t("charts.xAxis") }, stepButton, timeButton),
      h("small", { class: "hint" }, t("charts.hint")),
    ),
    grid,
  );
  const charts = new Map(); // key -> chart
  let xMode = "step";
  let frame = 0;

  const setMode = (mode) => {
    xMode = mode;
    stepButton.setAttribute("aria-pressed", String(mode === "step"));
    timeButton.setAttribute("aria-pressed", String(mode === "time"));
    for (const chart of charts.values()) chart.setMode(mode);
  };
  stepButton.addEventListener("click", () => setMode("step"));
  timeButton.addEventListener("click", () => setMode("time"));

  const resize = new ResizeObserver(() => {
    for (const chart of charts.values()) chart.fit();
  });
  resize.observe(grid);

  function flush() {
    frame = 0;
    for (const chart of charts.values()) chart.draw();
  }

  return {
    element,
    /** A `metric` event. */
    add({ key, value, step = 0, timestamp }) {
      if (typeof value !== "number") return;
      let chart = charts.get(key);
      if (!chart) {
        chart = metricChart(key, xMode);
        charts.set(key, chart);
        grid.append(chart.element);
        element.hidden = false;
      }
      chart.push(step, (timestamp ?? Date.now()) / 1000, value);
      frame ||= requestAnimationFrame(flush);
    },
    /** Stops watching sizes (the page is left). */
    close() {
      resize.disconnect();
      cancelAnimationFrame(frame);
      for (const chart of charts.values()) chart.destroy();
    },
  };
}

/** One metric's chart: its points, sorted by the x in use, and its uPlot once loaded. */
function metricChart(key, initialMode) {
  const plotArea = h("div", { class: "chart-plot" });
  const element = h("figure", { class: "chart", dataset: { metric: key, points: "0" } }, h("figcaption", null, key), plotArea);
  const points = []; // [step, time s, value] in arrival order
  let mode = initialMode;
  let xs = [];
  let ys = [];
  let plot = null;
  let loading = false;
  let dirty = false;
  let destroyed = false;
  let shown = null; // [first x, last x] of the data last given to uPlot

  const xOf = (point) => (mode === "step" ? point[0] : point[1]);

  function insert(point) {
    const x = xOf(point);
    if (xs.length === 0 || x >= xs[xs.length - 1]) {
      xs.push(x);
      ys.push(point[2]);
      return;
    }
    let lo = 0;
    let hi = xs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (xs[mid] <= x) lo = mid + 1;
      else hi = mid;
    }
    xs.splice(lo, 0, x);
    ys.splice(lo, 0, point[2]);
  }

  function options(width) {
    const style = getComputedStyle(document.documentElement);
    const accent = style.getPropertyValue("--accent").trim() || "#2563eb";
    const axis = { stroke: "#8b949e", grid: { stroke: "rgba(127,127,127,.18)", width: 1 }, ticks: { stroke: "rgba(127,127,127,.3)", width: 1 } };
    return {
      width,
      height: HEIGHT,
      scales: { x: { time: mode === "time" } },
      series: [
        { label: mode === "step" ? t("job.step") : t("charts.time") },
        { label: key, stroke: accent, width: 1.5, points: { show: false } },
      ],
      axes: [mode === "step" ? { ...axis, incrs: STEP_INCREMENTS } : { ...axis }, { ...axis, size: 60 }],
      cursor: { drag: { x: true, y: false } },
      legend: { live: true },
    };
  }

  async function create() {
    loading = true;
    const uPlot = await loadUPlot();
    loading = false;
    if (destroyed) return;
    plot = new uPlot(options(width()), [xs, ys], plotArea);
    shown = xs.length ? [xs[0], xs[xs.length - 1]] : null;
    dirty = false;
  }

  function width() {
    return Math.max(200, Math.floor(plotArea.clientWidth || element.clientWidth || 400));
  }

  /** Whether the person has zoomed in on x: the view is narrower than the data last drawn. */
  function zoomed() {
    const { min, max } = plot.scales.x;
    if (shown === null || min === null || max === null) return false;
    const slack = (shown[1] - shown[0]) * 1e-9;
    return min > shown[0] + slack || max < shown[1] - slack;
  }

  return {
    element,
    push(step, time, value) {
      const point = [step, time, value];
      points.push(point);
      insert(point);
      dirty = true;
    },
    draw() {
      element.dataset.points = String(xs.length);
      if (!plot) {
        if (!loading) create();
        return;
      }
      if (!dirty) return;
      dirty = false;
      plot.setData([xs, ys], !zoomed());
      shown = xs.length ? [xs[0], xs[xs.length - 1]] : null;
    },
    setMode(next) {
      if (next === mode) return;
      mode = next;
      xs = [];
      ys = [];
      for (const point of points) insert(point);
      if (plot) {
        plot.destroy();
        plot = null;
        create();
      }
    },
    fit() {
      if (plot) plot.setSize({ width: width(), height: HEIGHT });
    },
    destroy() {
      destroyed = true;
      plot?.destroy();
    },
  };
}
