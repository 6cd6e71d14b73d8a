// Follows a real job's event stream on the server this page is on.
// window.__options: {url, headers, cuts}: the first `cuts` responses of the stream are cut short after
// a few hundred bytes, mid-line: odd ones fail like a dropped connection, even ones end cleanly.
import { followEvents } from "/api/static/js/events.js";

const { url, headers, cuts = 0, timeoutMs = 90000 } = window.__options;
const calls = [];
const states = [];
const events = [];
window.__progress = { calls, states, events };

const realFetch = window.fetch.bind(window);
window.fetch = async (input, init) => {
  const n = calls.push(String(input));
  const response = await realFetch(input, init);
  if (n > cuts || !response.ok) return response;
  let budget = 150 + 97 * n; // bytes this response may still pass on
  const reader = response.body.getReader();
  const body = new ReadableStream({
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) return controller.close();
      if (value.length < budget) {
        budget -= value.length;
        return controller.enqueue(value);
      }
      controller.enqueue(value.slice(0, budget));
      await reader.cancel(); // drops the real connection
      if (n % 2) controller.error(new TypeError("network error (cut by the test)"));
      else controller.close();
    },
    cancel: (reason) => reader.cancel(reason),
  });
  return new Response(body, { status: response.status, headers: response.headers });
};

async function main() {
  const stream = followEvents(url, {
    headers,
    backoff: { initialMs: 50, maxMs: 500 },
    onEvent: (event) => {
      events.push(event);
      if (event.type === "log") document.getElementById("log").textContent += `${event.seq} ${event.line}\n`;
    },
    onState: (state, detail) =>
      states.push(state === "reconnecting" ? `reconnecting: ${detail.error ?? ""}` : state),
  });
  const timer = setTimeout(() => stream.close(), timeoutMs);
  const done = await stream.done;
  clearTimeout(timer);
  const error = done.error && {
    status: done.error.status,
    code: done.error.code,
    message: done.error.message,
  };
  return {
    done: { state: done.state, event: done.event, error },
    events,
    states,
    calls,
    lastSeq: stream.lastSeq,
  };
}

main().then(
  (result) => (window.__result = result),
  (error) => (window.__result = { error: String(error.stack || error) }),
);
