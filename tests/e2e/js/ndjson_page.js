// NDJSON parsing across chunk boundaries, down to single bytes inside a UTF-8 character.
import { LineParser, ndjsonEvents } from "/api/static/js/events.js";

const EVENTS = [
  { seq: 1, type: "log", stream: "stdout", line: "训练 started 🚀", n: 1 },
  { seq: 2, type: "log", stream: "stderr", line: 'a\nb \\ "quoted" ✓ 🎉', n: 2 },
  { seq: 3, type: "metric", key: "损失", value: 0.5, step: 1, timestamp: 1 },
  { type: "heartbeat", ts: 1.5 },
  { seq: 4, type: "end", status: "SUCCEEDED", exit_code: 0 },
];
// "\r\n" endings, blank lines, and a last line without its "\n".
const TEXT = EVENTS.map((e, i) => JSON.stringify(e) + (i % 2 ? "\r\n" : "\n\n"))
  .join("")
  .trimEnd();
const BYTES = new TextEncoder().encode(TEXT);
const EXPECTED = EVENTS.map((e) => JSON.stringify(e));

function parse(chunks) {
  const parser = new LineParser();
  const lines = chunks.flatMap((chunk) => parser.push(chunk));
  return [...lines, ...parser.end()];
}

function chunked(bytes, sizes) {
  const chunks = [];
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const size = sizes[i % sizes.length];
    chunks.push(bytes.slice(at, at + size));
    at += size;
  }
  return chunks;
}

function streamOf(chunks) {
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(chunk);
      controller.close();
    },
  });
}

async function main() {
  const failures = [];
  const check = (label, lines) => {
    if (JSON.stringify(lines) !== JSON.stringify(EXPECTED)) failures.push({ label, lines });
  };
  check("one chunk", parse([BYTES]));
  check("every byte its own chunk", parse(chunked(BYTES, [1])));
  for (let at = 0; at <= BYTES.length; at++)
    check(`split at byte ${at}`, parse([BYTES.slice(0, at), BYTES.slice(at)]));
  check("chunks of 1, 2, 3, 5, 7 bytes", parse(chunked(BYTES, [1, 2, 3, 5, 7])));
  check("empty chunks between", parse(chunked(BYTES, [3]).flatMap((c) => [c, new Uint8Array(0)])));

  // ndjsonEvents: parsed objects; a line that is not a JSON object, or is cut short, is skipped.
  const cut = new TextEncoder().encode("not json\n7\n" + TEXT + '\n{"seq": 5, "type": "lo');
  const events = [];
  for await (const event of ndjsonEvents(streamOf(chunked(cut, [1])))) events.push(event);
  const splitEmoji = parse([BYTES.slice(0, BYTES.indexOf(0xf0) + 2), BYTES.slice(BYTES.indexOf(0xf0) + 2)]);
  document.getElementById("log").textContent = EXPECTED.join("\n");
  return { bytes: BYTES.length, checks: BYTES.length + 5, failures, events, splitEmoji };
}

main().then(
  (result) => (window.__result = result),
  (error) => (window.__result = { error: String(error.stack || error) }),
);
