/**
 * The job's own use of CPU, memory and GPUs, from its `system` events: its supervisor samples
 * the job's processes every few seconds (TRAINFLOW_SYSTEM_METRICS_SECONDS). The panel shows the
 * latest figures and a chart of each, drawn by charts.js (x: the sample's number, or its time).
 * CPU is per core: a job keeping two cores busy reads 200 %.
 */
import { createCharts } from "./charts.js";
import { h } from "./dom.js";
import { t } from "./i18n.js";

const SELECTORS = { panel: "system", latest: "system-latest", charts: "system-charts" };

export function createSystemMetrics({ signal }) {
  const charts = createCharts({ id: SELECTORS.charts });
  const cpu = h("dd", { dataset: { system: "cpu" } });
  const memory = h("dd", { dataset: { system: "memory" } });
  const latest = h("dl", { class: "summary", id: SELECTORS.latest }, h("dt", null, t("system.cpu")), cpu, h("dt", null, t("system.memory")), memory);
  const element = h(
    "section",
    { class: "card system-panel", id: SELECTORS.panel, hidden: true, "aria-label": t("system.title") },
    h("h2", null, t("system.title")),
    h("p", { class: "hint" }, t("system.hint")),
    latest,
    charts.element,
  );
  const gpuCells = new Map(); // the job's device number -> its <dd>
  let sample = 0;
  signal.addEventListener("abort", () => charts.close());

  function gpuCell(device) {
    let cell = gpuCells.get(device);
    if (!cell) {
      cell = h("dd", { dataset: { system: `gpu-${device}` } });
      latest.append(h("dt", null, t("system.gpu", { device })), cell);
      gpuCells.set(device, cell);
    }
    return cell;
  }

  return {
    element,
    /** A `system` event: {ts, cpu_percent, rss_mb, processes, gpus?: [{device, id, utilization_percent, memory_used_mb, memory_total_mb}]}. */
    add(event) {
      element.hidden = false;
      const timestamp = event.ts * 1000;
      const point = (key, value) => charts.add({ key, value, step: sample, timestamp });
      cpu.textContent = t("system.percent", { value: round(event.cpu_percent) });
      memory.textContent = t("system.megabytes", { value: round(event.rss_mb) });
      point(t("system.cpuChart"), event.cpu_percent);
      point(t("system.memoryChart"), event.rss_mb);
      for (const gpu of event.gpus ?? []) {
        gpuCell(gpu.device).textContent = t("system.gpuFigures", {
          utilization: round(gpu.utilization_percent),
          used: round(gpu.memory_used_mb),
          total: round(gpu.memory_total_mb ?? 0),
        });
        point(t("system.gpuUtilizationChart", { device: gpu.device }), gpu.utilization_percent);
        point(t("system.gpuMemoryChart", { device: gpu.device }), gpu.memory_used_mb);
      }
      sample += 1;
    },
  };
}

function round(value) {
  return typeof value === "number" ? String(Math.round(value)) : "?";
}
