/**
 * "Save PNG": a chart's uPlot canvas with its title and legend drawn under it, on the page's
 * background, saved through a Blob URL. The legend is HTML on the page, so it is drawn again here
 * with the canvas API; nothing is serialised to markup (the Content-Security-Policy allows no
 * inline styles, and a foreignObject SVG would taint the canvas).
 */

const FONT = "system-ui, -apple-system, 'Segoe UI', sans-serif";

/**
 * @param {HTMLCanvasElement} plotCanvas uPlot's canvas (device pixels)
 * @param {{title: string, caption: string, rows: Array<{colour: string, dash: number[], text: string}>,
 *   fileName: string}} what
 * @returns {Promise<Blob>} the PNG, once the browser has been handed it
 */
export async function saveChartPng(plotCanvas, { title, caption, rows, fileName }) {
  const blob = await composeChartPng(plotCanvas, { title, caption, rows });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = safeFileName(fileName);
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000); // after the browser has taken it
  return blob;
}

/** The PNG itself: title, plot, then a legend line per series. */
export function composeChartPng(plotCanvas, { title, caption, rows }) {
  const ratio = plotCanvas.width / (plotCanvas.clientWidth || plotCanvas.width) || 1;
  const style = getComputedStyle(document.documentElement);
  const background = style.getPropertyValue("--surface").trim() || "#ffffff";
  const text = style.getPropertyValue("--text").trim() || "#1b1f24";
  const pad = 12 * ratio;
  const titleHeight = 28 * ratio;
  const line = 20 * ratio;
  const canvas = document.createElement("canvas");
  canvas.width = plotCanvas.width + 2 * pad;
  canvas.height = pad + titleHeight + plotCanvas.height + pad + rows.length * line + pad;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = background;
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = text;
  ctx.textBaseline = "middle";
  ctx.font = `600 ${14 * ratio}px ${FONT}`;
  ctx.fillText(title, pad, pad + titleHeight / 2);
  const titleWidth = ctx.measureText(title).width;
  ctx.font = `${12 * ratio}px ${FONT}`;
  ctx.globalAlpha = 0.7;
  if (caption) ctx.fillText(caption, pad + titleWidth + 12 * ratio, pad + titleHeight / 2);
  ctx.globalAlpha = 1;
  ctx.drawImage(plotCanvas, pad, pad + titleHeight);
  let y = pad + titleHeight + plotCanvas.height + pad + line / 2;
  ctx.font = `${13 * ratio}px ${FONT}`;
  for (const row of rows) {
    ctx.strokeStyle = row.colour;
    ctx.lineWidth = 2.5 * ratio;
    ctx.setLineDash((row.dash ?? []).map((d) => d * ratio));
    ctx.beginPath();
    ctx.moveTo(pad, y);
    ctx.lineTo(pad + 22 * ratio, y);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = text;
    ctx.fillText(row.text, pad + 30 * ratio, y);
    y += line;
  }
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("toBlob"))), "image/png");
  });
}

function safeFileName(name) {
  return name.replace(/[\\/:*?"<>|\s]+/g, "_").slice(0, 120) || "chart.png";
}
