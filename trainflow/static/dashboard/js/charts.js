/**
 * A chart per metric key, drawn with uPlot (vendored: ../vendor/uplot/, MIT), filled from the
 * job's `metric` events ({key, value, step, timestamp}).
 *
 * x is the step, or the time the value was logged. Points are kept sorted by x (a value logged
 * late is inserted in place), and each chart is redrawn at most once per animation frame however
 * many values arrived. What uPlot draws is decimated to the first, lowest, highest and last point
 * of each pixel column of the x range in view (`decimate`), so a series of 100,000 points costs
 * a frame about what one of 2,000 does; zooming in draws the range in view at full detail, and
 * new values do not move a zoomed view. Drag to zoom, double-click to zoom out, hover for
 * values (of the points drawn). uPlot itself (145 KB) is loaded with the first metric.
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
        chart = metricChart(key, xMode, () => {
          frame ||= requestAnimationFrame(flush);
        });
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
function metricChart(key, initialMode, requestDraw) {
  const plotArea = h("div", { class: "chart-plot" });
  const element = h("figure", { class: "chart", dataset: { metric: key, points: "0", zoomed: "false" } }, h("figcaption", null, key), plotArea);
  const points = []; // [step, time s, value] in arrival order
  let mode = initialMode;
  let xs = [];
  let ys = [];
  let plot = null;
  let loading = false;
  let dirty = false;
  let destroyed = false;
  let range = null; // [min, max] of x while the person has zoomed in; null: everything
  let ownScaleChange = false;

  const xOf = (point) => (mode === "step" ? point[0] : point[1]);

  function insert(point) {
    const x = xOf(point);
    if (xs.length === 0 || x >= xs[xs.length - 1]) {
      xs.push(x);
      ys.push(point[2]);
      return;
    }
    const at = firstAbove(xs, x);
    xs.splice(at, 0, x);
    ys.splice(at, 0, point[2]);
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
      hooks: { setScale: [onSetScale] },
    };
  }

  /** The person zoomed (drag) or uPlot reset the view: draw that x range at full detail. */
  function onSetScale(u, scaleKey) {
    if (scaleKey !== "x" || ownScaleChange || xs.length < 2) return;
    const { min, max } = u.scales.x;
    const slack = (xs[xs.length - 1] - xs[0]) * 1e-9;
    range = min > xs[0] + slack || max < xs[xs.length - 1] - slack ? [min, max] : null;
    element.dataset.zoomed = String(range !== null);
    dirty = true;
    requestDraw();
  }

  /** What uPlot is given: the points in range, decimated to a few per pixel column. */
  function drawable() {
    const columns = Math.max(100, Math.round(plot?.bbox.width / (window.devicePixelRatio || 1)) || 400);
    return decimate(xs, ys, range, columns);
  }

  async function create() {
    loading = true;
    const uPlot = await loadUPlot();
    loading = false;
    if (destroyed) return;
    plot = new uPlot(options(width()), [[], []], plotArea);
    plot.setData(drawable());
    // Zooming out (double-click) must see every point, not the zoomed-in slice it was drawing.
    plot.root.addEventListener(
      "dblclick",
      () => {
        range = null;
        element.dataset.zoomed = "false";
        plot.setData(drawable());
      },
      true,
    );
    dirty = false;
  }

  function width() {
    return Math.max(200, Math.floor(plotArea.clientWidth || element.clientWidth || 400));
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
      if (range === null) {
        plot.setData(drawable()); // and fit x and y to it
        return;
      }
      // Zoomed in: new points must not move the view.
      ownScaleChange = true;
      plot.setData(drawable(), false);
      plot.setScale("x", { min: range[0], max: range[1] });
      ownScaleChange = false;
    },
    setMode(next) {
      if (next === mode) return;
      mode = next;
      range = null;
      element.dataset.zoomed = "false";
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
      if (!plot) return;
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
 * would show); a series that already fits is returned whole.
 * @returns {[number[], number[]]}
 */
export function decimate(xs, ys, range, columns) {
  let from = 0;
  let to = xs.length;
  if (range) {
    from = Math.max(0, firstAbove(xs, range[0]) - 2);
    to = Math.min(xs.length, firstAbove(xs, range[1]) + 1);
  }
  if (to - from <= columns * 4) return [xs.slice(from, to), ys.slice(from, to)];
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
      outY.push(ys[i]);
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
      if (ys[i] < ys[low]) low = i;
      if (ys[i] > ys[high]) high = i;
      last = i;
    }
  }
  flush();
  return [outX, outY];
}
