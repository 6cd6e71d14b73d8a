/**
 * Building the page from JS without ever parsing markup.
 *
 * Everything a user or a job wrote (names, log lines, messages from the server) reaches the page
 * as a text node or through textContent, so it can never become an element or run as script.
 * `h` refuses `innerHTML` and `style` on purpose: the Content-Security-Policy forbids inline styles
 * in markup, and element.style is set through the CSSOM where it is needed.
 */

const PROPERTIES = new Set(["value", "checked", "selected", "indeterminate"]);

/**
 * h("button", {class: "primary", type: "submit", onclick: go}, "Sign in")
 * @param {string} tag
 * @param {Record<string, any>|null} [props] attributes; `class`, `text`, `dataset`, `on<event>`
 *   handlers, and value/checked/selected set as properties; null/undefined/false are left out
 * @param {...(Node|string|number|null|undefined|false|Array)} children strings become text nodes
 * @returns {HTMLElement}
 */
export function h(tag, props, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "innerHTML" || name === "outerHTML" || name === "style") {
      throw new Error(`h(): "${name}" is not allowed (text only; styles go through the CSSOM)`);
    }
    if (name === "class") element.className = value;
    else if (name === "text") element.textContent = String(value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (PROPERTIES.has(name)) element[name] = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

/** Appends children (nested arrays flattened; strings and numbers as text; null/false skipped). */
export function append(parent, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replaces an element's children. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

/** A unique id for tying a label to its control. */
let counter = 0;
export function uid(prefix = "f") {
  counter += 1;
  return `${prefix}-${counter}`;
}
