/**
 * The job's console: its output lines as they arrive, stdout and stderr told apart.
 *
 * Lines are added once per animation frame, however many arrived, and the view follows the tail
 * unless the person has scrolled up (it follows again once they scroll back to the bottom).
 * A `partial` record is the start of a line whose end comes in the next record of the same
 * stream (a long line, or text waiting for its newline). At most MAX_LINES stay in the page; the
 * whole log is one download away.
 */
import { h } from "./dom.js";
import { t } from "./i18n.js";

const MAX_LINES = 20_000;
// ANSI escape sequences (colours, cursor moves): shown as nothing rather than as garbage.
// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;?]*[ -/]*[@-~]|\u001b[@-Z\\-_]/g;

export function createConsole() {
  const lines = h("div", { class: "console-lines" });
  const dropped = h("p", { class: "console-note", hidden: true });
  const view = h(
    "div",
    {
      class: "console",
      id: "console",
      role: "log",
      tabindex: "0",
      "aria-label": t("job.console"),
      "aria-live": "off", // a screen reader would otherwise read every line
    },
    dropped,
    lines,
  );
  const jump = h(
    "button",
    { type: "button", class: "compact console-jump", hidden: true, onclick: () => follow(true) },
    t("job.followTail"),
  );
  const element = h("div", { class: "console-wrap" }, view, jump);

  let pending = [];
  let frame = 0;
  let following = true;
  let droppedCount = 0;
  const open = { stdout: null, stderr: null }; // the element of a line still being written

  view.addEventListener("scroll", () => {
    const atBottom = view.scrollTop + view.clientHeight >= view.scrollHeight - 4;
    if (atBottom !== following) {
      following = atBottom;
      jump.hidden = following;
    }
  });

  function follow(on) {
    following = on;
    jump.hidden = on;
    if (on) view.scrollTop = view.scrollHeight;
  }

  function flush() {
    frame = 0;
    const batch = pending;
    pending = [];
    const fragment = document.createDocumentFragment();
    for (const { stream, text, partial } of batch) {
      let line = open[stream];
      if (line) {
        line.textContent += text;
      } else {
        line = h("div", { class: `line ${stream}` }, text);
        fragment.append(line);
      }
      open[stream] = partial ? line : null;
    }
    lines.append(fragment);
    const excess = lines.childElementCount - MAX_LINES;
    if (excess > 0) {
      for (let i = 0; i < excess; i += 1) lines.firstElementChild.remove();
      droppedCount += excess;
      dropped.textContent = t("job.linesDropped", { n: droppedCount.toLocaleString() });
      dropped.hidden = false;
    }
    if (following) view.scrollTop = view.scrollHeight;
  }

  return {
    element,
    /** A `log` event: {stream, line, partial?}. */
    add(event) {
      const stream = event.stream === "stderr" ? "stderr" : "stdout";
      pending.push({ stream, text: String(event.line).replace(ANSI, ""), partial: Boolean(event.partial) });
      frame ||= requestAnimationFrame(flush);
    },
    /** Forgets every line (a stream that starts again from the first event). */
    clear() {
      pending = [];
      lines.replaceChildren();
      open.stdout = open.stderr = null;
      droppedCount = 0;
      dropped.hidden = true;
    },
    get lineCount() {
      return lines.childElementCount + pending.length + droppedCount;
    },
  };
}
