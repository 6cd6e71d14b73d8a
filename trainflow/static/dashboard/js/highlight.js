/**
 * Python source with syntax highlighting, by highlight.js (vendored: ../vendor/highlight.js/,
 * BSD-3-Clause), loaded on first use.
 *
 * highlight.js returns HTML: the source escaped, inside <span class="hljs-..."> elements. That
 * string is never assigned to innerHTML: it is parsed into an inert document (DOMParser runs
 * no script and loads nothing) and rebuilt here from text nodes and spans whose only attribute
 * is an hljs-* class, so even a bug in the highlighter could not put an element or an
 * attribute of the script's choosing into the page.
 */
import { h } from "./dom.js";

const MAX_HIGHLIGHTED = 512 * 1024; // larger files are shown as plain text
let loading = null;

function loadHighlighter() {
  loading ??= Promise.all([
    import("../vendor/highlight.js/core.min.js"),
    import("../vendor/highlight.js/python.min.js"),
  ]).then(([core, python]) => {
    const hljs = core.default;
    hljs.registerLanguage("python", python.default);
    return hljs;
  });
  return loading;
}

/** A <pre><code> showing `source`, highlighted as Python when it is not too large. */
export async function pythonSource(source) {
  const code = h("code", { class: "hljs language-python" });
  const pre = h("pre", { class: "source", id: "source", tabindex: "0" }, code);
  if (source.length > MAX_HIGHLIGHTED) {
    code.textContent = source;
    return pre;
  }
  const hljs = await loadHighlighter();
  const html = hljs.highlight(source, { language: "python", ignoreIllegals: true }).value;
  const parsed = new DOMParser().parseFromString(`<!doctype html><body><code>${html}</code>`, "text/html");
  code.append(...rebuild(parsed.body.firstChild.childNodes));
  return pre;
}

/** Text and hljs spans, copied into this document; anything else keeps only its text. */
function rebuild(nodes) {
  const out = [];
  for (const node of nodes) {
    if (node.nodeType === Node.TEXT_NODE) {
      out.push(document.createTextNode(node.data));
    } else if (node.nodeType === Node.ELEMENT_NODE && node.localName === "span") {
      const span = document.createElement("span");
      const classes = [...node.classList].filter((name) => /^hljs-[\w-]+$|^[a-z_]+_$/.test(name));
      if (classes.length) span.className = classes.join(" ");
      span.append(...rebuild(node.childNodes));
      out.push(span);
    } else if (node.nodeType === Node.ELEMENT_NODE) {
      out.push(document.createTextNode(node.textContent));
    }
  }
  return out;
}
