/**
 * ANSI escape sequences in a line of output: SGR colours and styles become styled segments;
 * every other sequence (cursor moves, erase, OSC titles and links) is dropped.
 *
 * Each line is read on its own, starting from the default style: the console draws only the
 * lines on screen, so it cannot afford to replay every earlier line to learn the style in force.
 * Programs that colour output (logging, tqdm, pytest) reset at the end of each line anyway.
 */

// CSI ... final byte, OSC ... BEL or ESC \, and two-byte escapes.
// eslint-disable-next-line no-control-regex
const SEQUENCE = /\u001b(?:\[([0-9;:?]*)([ -/]*[@-~])|\][^\u0007\u001b]*(?:\u0007|\u001b\\)?|[@-Z\\-_])/g;

/** @typedef {{text: string, fg?: number|string, bg?: number|string, bold?: boolean, dim?: boolean,
 *   italic?: boolean, underline?: boolean, inverse?: boolean}} Segment
 *  fg/bg: 0-15 for the 16 named colours (classes), or a CSS colour string for 256-colour and
 *  true-colour codes. */

/** @returns {boolean} whether the line holds an escape sequence at all (most lines do not) */
export function hasAnsi(line) {
  return line.includes("\u001b");
}

/** @returns {string} the line without any escape sequence */
export function stripAnsi(line) {
  return hasAnsi(line) ? line.replace(SEQUENCE, "") : line;
}

/**
 * @param {string} line
 * @returns {Segment[]}
 */
export function parseAnsi(line) {
  if (!hasAnsi(line)) return [{ text: line }];
  const segments = [];
  let style = {};
  let last = 0;
  SEQUENCE.lastIndex = 0;
  for (let match = SEQUENCE.exec(line); match; match = SEQUENCE.exec(line)) {
    if (match.index > last) segments.push({ ...style, text: line.slice(last, match.index) });
    last = SEQUENCE.lastIndex;
    if (match[2] === "m") style = applySgr(style, match[1]);
  }
  if (last < line.length) segments.push({ ...style, text: line.slice(last) });
  return segments;
}

function applySgr(previous, parameters) {
  const style = { ...previous };
  const codes = (parameters || "0").split(/[;:]/).map((p) => (p === "" ? 0 : Number(p)));
  for (let i = 0; i < codes.length; i += 1) {
    const code = codes[i];
    if (code === 0) {
      for (const key of Object.keys(style)) delete style[key];
    } else if (code === 1) style.bold = true;
    else if (code === 2) style.dim = true;
    else if (code === 3) style.italic = true;
    else if (code === 4) style.underline = true;
    else if (code === 7) style.inverse = true;
    else if (code === 22) {
      delete style.bold;
      delete style.dim;
    } else if (code === 23) delete style.italic;
    else if (code === 24) delete style.underline;
    else if (code === 27) delete style.inverse;
    else if (code >= 30 && code <= 37) style.fg = code - 30;
    else if (code >= 90 && code <= 97) style.fg = code - 90 + 8;
    else if (code === 39) delete style.fg;
    else if (code >= 40 && code <= 47) style.bg = code - 40;
    else if (code >= 100 && code <= 107) style.bg = code - 100 + 8;
    else if (code === 49) delete style.bg;
    else if (code === 38 || code === 48) {
      const target = code === 38 ? "fg" : "bg";
      if (codes[i + 1] === 5 && i + 2 < codes.length) {
        style[target] = color256(codes[i + 2]);
        i += 2;
      } else if (codes[i + 1] === 2 && i + 4 < codes.length) {
        const [r, g, b] = codes.slice(i + 2, i + 5).map((v) => Math.max(0, Math.min(255, v)));
        style[target] = `rgb(${r}, ${g}, ${b})`;
        i += 4;
      }
    }
  }
  return style;
}

/** A 256-colour index: 0-15 stay named (themeable); the cube and the greys become CSS colours. */
function color256(n) {
  if (!(n >= 0 && n <= 255)) return undefined;
  if (n < 16) return n;
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return `rgb(${v}, ${v}, ${v})`;
  }
  const i = n - 16;
  const level = (x) => (x === 0 ? 0 : 55 + x * 40);
  return `rgb(${level(Math.floor(i / 36))}, ${level(Math.floor(i / 6) % 6)}, ${level(i % 6)})`;
}
