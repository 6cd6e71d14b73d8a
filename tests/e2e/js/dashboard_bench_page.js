// The dashboard's console and charts under load, in the page itself (the modules come from the
// server at this page's origin). window.__options: {lines, chartPoints, streamSeconds, mode}.
//   1. a console is fed `lines` lines at once, then scrolled to the top, middle and bottom;
//   2. for `streamSeconds`, the console gets 1,000 lines/s and a chart that already holds
//      `chartPoints` points gets 200 more per second, while every frame's duration is recorded.
// mode "plain" is the anchor bench/dashboard.py sets beside it: the same stream into what one
// would write first (a <div> per line, scrolled to the end after each; uPlot given every point
// on every new value); it skips step 1, which a plain console cannot hold.
import { createCharts, decimate } from "/train/static/js/charts.js";
import { createConsole } from "/train/static/js/console.js";

const { lines = 1_000_000, chartPoints = 100_000, streamSeconds = 5, mode = "dashboard" } = window.__options ?? {};
const progress = (window.__progress = {});
const nextFrame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
const settle = async () => {
  await nextFrame();
  await nextFrame();
};

async function stylesheet(href) {
  const link = Object.assign(document.createElement("link"), { rel: "stylesheet", href });
  const loaded = new Promise((resolve, reject) => {
    link.onload = resolve;
    link.onerror = reject;
  });
  document.head.append(link);
  await loaded;
}

function visibleNumbers(root) {
  return [...root.querySelectorAll(".line")].map((line) => Number(line.dataset.n));
}

async function consoleAtScale(main) {
  const output = createConsole();
  main.append(output.element);
  const view = output.element.querySelector(".console");
  const started = performance.now();
  for (let i = 0; i < lines; i += 1) {
    output.add({ stream: i % 10 === 9 ? "stderr" : "stdout", line: `line ${i + 1} \u001b[32mok\u001b[0m loss=${(1 / (i + 1)).toFixed(6)}` });
  }
  const ingestMs = performance.now() - started;
  await settle();
  const bottom = visibleNumbers(view);
  const renderStarted = performance.now();
  view.scrollTop = 0;
  await settle();
  const top = visibleNumbers(view);
  view.scrollTop = (view.scrollHeight - view.clientHeight) / 2;
  await settle();
  const middle = visibleNumbers(view);
  const scrollMs = performance.now() - renderStarted;
  const result = {
    ingestMs: Math.round(ingestMs),
    scrollMs: Math.round(scrollMs),
    elements: view.querySelectorAll(".line").length,
    count: Number(view.dataset.lines),
    top: [top[0], top.at(-1)],
    middle: [middle[0], middle.at(-1)],
    bottom: [bottom[0], bottom.at(-1)],
    heapMB: performance.memory ? Math.round(performance.memory.usedJSHeapSize / 2 ** 20) : null,
    sample: view.querySelector(".line").textContent,
  };
  output.element.remove();
  return result;
}

/** The dashboard's own console and charts, and how to read what they show. */
function dashboardParts() {
  const output = createConsole();
  const charts = createCharts();
  const view = () => output.element.querySelector(".console");
  return {
    output,
    charts,
    elements: [charts.element, output.element],
    linesShown: () => Number(view().dataset.lines),
    lastVisible: () => visibleNumbers(view()).at(-1),
    chartPoints: () => Number(charts.element.querySelector(".chart").dataset.points),
  };
}

/** The anchor: a <div> per line, and uPlot redrawn with every point whenever a value comes. */
async function plainParts() {
  const { default: uPlot } = await import("/train/static/vendor/uplot/uPlot.esm.js");
  const view = Object.assign(document.createElement("div"), { className: "console" });
  let count = 0;
  const output = {
    add({ stream, line }) {
      count += 1;
      const element = Object.assign(document.createElement("div"), { className: `line ${stream}`, textContent: line });
      element.dataset.n = String(count);
      view.append(element);
      view.scrollTop = view.scrollHeight;
    },
  };
  const box = Object.assign(document.createElement("figure"), { className: "chart" });
  const xs = [];
  const ys = [];
  let plot = null;
  const charts = {
    add({ value, step }) {
      xs.push(step);
      ys.push(value);
      if (plot) plot.setData([xs, ys]);
    },
  };
  return {
    output,
    charts,
    elements: [box, view],
    start() {
      const opts = { width: 600, height: 220, series: [{}, { label: "loss", stroke: "#3366cc" }] };
      plot = new uPlot(opts, [xs, ys], box);
    },
    linesShown: () => count,
    lastVisible: () => {
      const frame = view.getBoundingClientRect();
      const shown = [...view.children].filter((line) => {
        const r = line.getBoundingClientRect();
        return r.bottom > frame.top && r.top < frame.bottom;
      });
      return Number(shown.at(-1)?.dataset.n);
    },
    chartPoints: () => xs.length,
  };
}

async function streaming(main) {
  const parts = mode === "plain" ? await plainParts() : dashboardParts();
  const { output, charts } = parts;
  main.append(...parts.elements);
  for (let step = 0; step < chartPoints; step += 1) {
    charts.add({ key: "loss", value: Math.exp(-step / 20000) + Math.random() * 0.05, step, timestamp: 1.7e12 + step * 10 });
  }
  parts.start?.();
  // The first draw loads uPlot; wait for the chart to exist before measuring.
  while (!main.querySelector("canvas")) await nextFrame();
  await settle();

  const frames = [];
  let last = performance.now();
  let measuring = true;
  const tick = (now) => {
    frames.push(now - last);
    last = now;
    if (measuring) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  let n = 0;
  let step = chartPoints;
  const from = performance.now();
  // Every 10 ms, what is owed at 1,000 lines/s (a timer that fires late delivers more at once).
  const feeder = setInterval(() => {
    const owed = Math.floor(performance.now() - from);
    while (n < owed) {
      n += 1;
      output.add({ stream: n % 7 ? "stdout" : "stderr", line: `epoch ${n} \u001b[1;34mtraining\u001b[0m batch loss ${Math.random().toFixed(5)}` });
      if (n % 5 === 0) {
        charts.add({ key: "loss", value: Math.random(), step, timestamp: 1.7e12 + step * 10 });
        step += 1;
      }
    }
  }, 10);
  await new Promise((resolve) => setTimeout(resolve, streamSeconds * 1000));
  clearInterval(feeder);
  measuring = false;
  await settle();
  const sorted = frames.slice(1).sort((a, b) => a - b);
  const at = (q) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] * 10) / 10;
  return {
    frames: sorted.length,
    p50: at(0.5),
    p95: at(0.95),
    p99: at(0.99),
    max: Math.round(sorted.at(-1) * 10) / 10,
    over50: sorted.filter((d) => d > 50).length,
    linesFed: n,
    linesShown: parts.linesShown(),
    lastVisible: parts.lastVisible(),
    chartPoints: parts.chartPoints(),
  };
}

/** Downsampling keeps the extremes, the ends and the order, and draws a few points per column. */
function decimation() {
  const xs = Array.from({ length: 100_000 }, (_, i) => i);
  const ys = xs.map((x) => Math.sin(x / 500));
  ys[31_337] = 7; // a spike
  ys[77_777] = -9;
  ys[50_000] = NaN; // a history's "NaN", "Infinity", "-Infinity": gaps, never extremes
  ys[60_000] = Infinity;
  ys[60_001] = -Infinity;
  const [dx, dy] = decimate(xs, ys, null, 500);
  const [zx] = decimate(xs, ys, [1000, 1100], 500);
  return {
    nonFinite: dy.filter((y) => y !== null && !Number.isFinite(y)).length,
    whole: decimate([0, 1, 2, 3], [1, NaN, Infinity, -Infinity], null, 500)[1],
    points: dx.length,
    ends: [dx[0], dx.at(-1)],
    extremes: [Math.min(...dy.filter((y) => y !== null)), Math.max(...dy.filter((y) => y !== null))],
    sorted: dx.every((x, i) => i === 0 || x > dx[i - 1]),
    zoomed: [zx.length, zx[0], zx.at(-1)],
  };
}

async function main() {
  progress.decimation = decimation();
  await stylesheet("/train/static/vendor/uplot/uPlot.min.css");
  await stylesheet("/train/static/app.css");
  const main = Object.assign(document.createElement("main"), { className: "main" });
  document.body.append(main);
  if (mode !== "plain") progress.console = await consoleAtScale(main);
  progress.streaming = await streaming(main);
  window.__result = progress;
}

main().catch((error) => {
  window.__result = { error: String(error.stack || error), progress };
});
