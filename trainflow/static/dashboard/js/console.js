/**
 * The job's console: every output line of the job, kept in memory and drawn virtually.
 *
 * Only the lines on screen exist as elements (a pool of about fifty, refilled on scroll), so
 * a job with millions of lines scrolls as smoothly as one with ten, and 1,000 lines a second
 * cost one redraw per animation frame. Each line has the same height (no wrapping: long lines
 * scroll sideways); past MAX_SCROLL_PX of lines the scrollbar maps proportionally onto line
 * numbers, because browsers cap an element's height.
 *
 * stdout and stderr are told apart, ANSI colours are drawn (ansi.js), a `partial` record is the
 * start of a line that the next record of the same stream continues, and the view follows the
 * tail unless the person scrolled up. Search finds lines containing a text, case-insensitively.
 */
import { hasAnsi, parseAnsi, stripAnsi } from "./ansi.js";
import { h } from "./dom.js";
import { t } from "./i18n.js";

const LINE_HEIGHT = 19; // px: app.css gives .console .line the same height
const MAX_SCROLL_PX = 8_000_000; // under every browser's limit on an element's height
const MAX_LINES = 5_000_000; // past this, the oldest lines are let go (the download has them)
const STDERR = 1;

export function createConsole() {
  const texts = []; // the lines as received (escape sequences included)
  const kinds = []; // 0 stdout, 1 stderr
  let firstNumber = 1; // the number of texts[0] (more than 1 once old lines were let go)
  const open = [-1, -1]; // per stream: the index of a line still being written (partial)

  const spacer = h("div", { class: "console-spacer" });
  const windowElement = h("div", { class: "console-window" });
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
      dataset: { lines: "0" },
    },
    spacer,
    windowElement,
  );
  const jump = h("button", { type: "button", class: "compact console-jump", hidden: true, onclick: () => follow(true) }, t("job.followTail"));
  const search = searchBar();
  const element = h("div", { class: "console-wrap" }, search.element, dropped, h("div", { class: "console-frame" }, view, jump));

  const pool = []; // line elements, reused
  let following = true;
  let frame = 0;
  let renderedTop = -1;

  view.addEventListener("scroll", () => {
    const atBottom = view.scrollTop + view.clientHeight >= view.scrollHeight - 2;
    if (atBottom !== following) {
      following = atBottom;
      jump.hidden = following;
    }
    if (view.scrollTop !== renderedTop) schedule();
  });
  new ResizeObserver(() => schedule()).observe(view);

  function schedule() {
    frame ||= requestAnimationFrame(render);
  }

  function follow(on) {
    following = on;
    jump.hidden = on;
    if (on) schedule();
  }

  /** Which line is at the top of the view, and how far into it the view starts (px). */
  function topLine(n, height) {
    const full = n * LINE_HEIGHT;
    const scrollable = Math.min(full, MAX_SCROLL_PX) - height;
    if (scrollable <= 0) return { first: 0, offset: 0 };
    const exact = full <= MAX_SCROLL_PX ? view.scrollTop / LINE_HEIGHT : (view.scrollTop / scrollable) * (n - height / LINE_HEIGHT);
    const first = Math.max(0, Math.floor(exact));
    return { first, offset: (exact - first) * LINE_HEIGHT };
  }

  function render() {
    frame = 0;
    const n = texts.length;
    const height = view.clientHeight;
    const spacerHeight = Math.min(n * LINE_HEIGHT, MAX_SCROLL_PX);
    if (spacer.style.height !== `${spacerHeight}px`) spacer.style.height = `${spacerHeight}px`;
    const last = n + firstNumber - 1;
    view.dataset.lines = String(last);
    const gutter = `${Math.max(4, String(last).length)}ch`;
    if (view.style.getPropertyValue("--gutter") !== gutter) view.style.setProperty("--gutter", gutter);
    // Scrolled up since the last draw (its scroll event may not have come yet): stop following.
    if (following && renderedTop >= 0 && view.scrollTop < renderedTop) follow(false);
    if (following) view.scrollTop = view.scrollHeight;
    renderedTop = view.scrollTop;
    const { first, offset } = topLine(n, height);
    windowElement.style.transform = `translateY(${renderedTop - offset}px)`;
    const count = Math.min(n - first, Math.ceil(height / LINE_HEIGHT) + 1);
    while (pool.length < count) {
      const line = h("div", { class: "line" });
      pool.push(line);
      windowElement.append(line);
    }
    while (pool.length > count) pool.pop().remove();
    for (let i = 0; i < count; i += 1) draw(pool[i], first + i);
  }

  /** Fills a pooled element with line `index`, unless it already shows exactly that. */
  function draw(line, index) {
    const text = texts[index];
    const current = search.currentLine() === index;
    const key = `${index + firstNumber}\u0000${text.length}\u0000${search.query}\u0000${current}`;
    if (line.dataset.key === key) return;
    line.dataset.key = key;
    line.dataset.n = String(index + firstNumber);
    line.className = `line ${kinds[index] === STDERR ? "stderr" : "stdout"}${current ? " current" : ""}`;
    line.replaceChildren(...content(text, search.query));
  }

  function add(event) {
    const stream = event.stream === "stderr" ? STDERR : 0;
    const text = String(event.line);
    let index = open[stream];
    if (index >= 0) {
      texts[index] += text;
    } else {
      index = texts.push(text) - 1;
      kinds.push(stream);
    }
    open[stream] = event.partial ? index : -1;
    search.consider(index);
    if (texts.length > MAX_LINES) letGo(texts.length - MAX_LINES + Math.floor(MAX_LINES / 10));
    schedule();
  }

  /** Forgets the oldest `count` lines (in one go, not one by one: splice is O(n)). */
  function letGo(count) {
    texts.splice(0, count);
    kinds.splice(0, count);
    firstNumber += count;
    for (const s of [0, 1]) open[s] = open[s] >= count ? open[s] - count : -1;
    search.shift(count);
    dropped.textContent = t("job.linesDropped", { n: (firstNumber - 1).toLocaleString() });
    dropped.hidden = false;
  }

  /** Scrolls so that line `index` is in the middle of the view. */
  function reveal(index) {
    follow(false);
    const n = texts.length;
    const full = n * LINE_HEIGHT;
    const height = view.clientHeight;
    const target = Math.max(0, index - Math.floor(height / LINE_HEIGHT / 2));
    const scrollable = Math.min(full, MAX_SCROLL_PX) - height;
    view.scrollTop = full <= MAX_SCROLL_PX ? target * LINE_HEIGHT : (target / Math.max(1, n - height / LINE_HEIGHT)) * scrollable;
    schedule();
  }

  /** The search box: matches are line indexes, kept up to date as lines arrive. */
  function searchBar() {
    const input = h("input", { type: "search", id: "console-search", "aria-label": t("job.search"), placeholder: t("job.search") });
    const counter = h("span", { class: "search-count", id: "console-search-count", role: "status" });
    const prev = h("button", { type: "button", class: "compact", "aria-label": t("job.searchPrevious"), onclick: () => step(-1) }, "↑");
    const next = h("button", { type: "button", class: "compact", "aria-label": t("job.searchNext"), onclick: () => step(1) }, "↓");
    let matches = [];
    let position = -1;
    let needle = "";
    let timer = 0;

    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(run, 150);
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        clearTimeout(timer);
        if (input.value.toLowerCase() !== needle) run();
        else step(event.shiftKey ? -1 : 1);
      }
    });

    function run() {
      needle = input.value.toLowerCase();
      matches = [];
      position = -1;
      if (needle) {
        for (let i = 0; i < texts.length; i += 1) if (matchesLine(i)) matches.push(i);
        if (matches.length) {
          position = matches.length - 1; // the latest first, like the tail
          reveal(matches[position]);
        }
      }
      update();
      schedule();
    }

    function matchesLine(i) {
      const text = texts[i];
      return (hasAnsi(text) ? stripAnsi(text) : text).toLowerCase().includes(needle);
    }

    function step(direction) {
      if (!matches.length) return;
      position = (position + direction + matches.length) % matches.length;
      reveal(matches[position]);
      update();
    }

    function update() {
      counter.textContent = needle ? t("job.searchCount", { at: position + 1, total: matches.length }) : "";
    }

    return {
      element: h("div", { class: "console-tools", role: "search" }, input, prev, next, counter),
      get query() {
        return needle;
      },
      currentLine: () => (position >= 0 ? matches[position] : -1),
      /** A line was added or grew. */
      consider(i) {
        if (!needle || matches[matches.length - 1] === i || !matchesLine(i)) return;
        matches.push(i);
        update();
      },
      /** The first `count` lines were let go. */
      shift(count) {
        const kept = matches.filter((i) => i >= count).map((i) => i - count);
        position = Math.max(-1, position - (matches.length - kept.length));
        matches = kept;
        update();
      },
    };
  }

  return {
    element,
    add,
    get lineCount() {
      return texts.length + firstNumber - 1;
    },
  };
}

/** A line as nodes: its ANSI-styled segments, with `query` marked (case-insensitive). */
function content(text, query) {
  const nodes = [];
  for (const segment of parseAnsi(text)) {
    const pieces = query ? mark(segment.text, query) : [segment.text];
    if (isPlain(segment)) {
      nodes.push(...pieces);
      continue;
    }
    const span = document.createElement("span");
    const classes = [];
    if (typeof segment.fg === "number") classes.push(`ansi-fg-${segment.fg}`);
    if (typeof segment.bg === "number") classes.push(`ansi-bg-${segment.bg}`);
    for (const flag of ["bold", "dim", "italic", "underline", "inverse"]) if (segment[flag]) classes.push(`ansi-${flag}`);
    span.className = classes.join(" ");
    // 256-colour and true-colour codes: set through the CSSOM, which the CSP allows.
    if (typeof segment.fg === "string") span.style.color = segment.fg;
    if (typeof segment.bg === "string") span.style.backgroundColor = segment.bg;
    span.append(...pieces);
    nodes.push(span);
  }
  return nodes;
}

function isPlain(segment) {
  return segment.fg === undefined && segment.bg === undefined && !segment.bold && !segment.dim && !segment.italic && !segment.underline && !segment.inverse;
}

/** Splits text into strings and <mark> elements around each occurrence of query. */
function mark(text, query) {
  const lower = text.toLowerCase();
  const out = [];
  let from = 0;
  for (let at = lower.indexOf(query); at >= 0; at = lower.indexOf(query, from)) {
    if (at > from) out.push(text.slice(from, at));
    out.push(h("mark", null, text.slice(at, at + query.length)));
    from = at + query.length;
  }
  if (from < text.length) out.push(text.slice(from));
  return out;
}
