// followEvents against a scripted fetch: each call gets the next scripted answer.
import { followEvents } from "/api/static/js/events.js";

const encoder = new TextEncoder();
const ev = (seq, type = "log", extra = {}) => ({ seq, type, ts: seq, ...extra });
const json = (e) => (typeof e === "string" ? e : JSON.stringify(e) + "\n");
const FAST = { initialMs: 10, maxMs: 40 };

/** A 200 NDJSON response sending `parts` one by one, then closing, failing, or hanging ("hang"). */
function ndjson(parts, then = "close") {
  return (signal) => {
    let controller;
    const body = new ReadableStream({ start: (c) => void (controller = c) });
    signal?.addEventListener("abort", () => {
      try {
        controller.error(new DOMException("The user aborted a request.", "AbortError"));
      } catch {}
    });
    (async () => {
      for (const part of parts) {
        await new Promise((resolve) => setTimeout(resolve, 2));
        if (signal?.aborted) return;
        controller.enqueue(encoder.encode(json(part)));
      }
      if (signal?.aborted) return;
      if (then === "close") controller.close();
      if (then === "error") controller.error(new TypeError("network error"));
    })();
    return new Response(body, { status: 200, headers: { "Content-Type": "application/x-ndjson" } });
  };
}
const httpError =
  (status, code, headers = {}) =>
  () =>
    new Response(JSON.stringify({ error: { code, message: `scripted ${status}` } }), {
      status,
      headers: { "Content-Type": "application/json", ...headers },
    });
const networkError = () => () => Promise.reject(new TypeError("Failed to fetch"));

/** Runs followEvents(url, options) against `script`; `during` may act on the live stream. */
async function scenario(url, script, options = {}, during = null) {
  const calls = [];
  const events = [];
  const states = [];
  const started = performance.now();
  window.fetch = async (input, init = {}) => {
    const target = new URL(String(input));
    const call = { path: target.pathname, query: Object.fromEntries(target.searchParams), aborted: false };
    call.at = Math.round(performance.now() - started);
    call.accept = new Headers(init.headers).get("Accept");
    call.authorization = new Headers(init.headers).get("Authorization");
    init.signal?.addEventListener("abort", () => (call.aborted = true));
    calls.push(call);
    const step = script[calls.length - 1];
    return step ? step(init.signal) : ndjson([], "hang")(init.signal); // unscripted: hang
  };
  const stream = followEvents(url, {
    backoff: FAST,
    ...options,
    onEvent: (event) => {
      events.push(event);
      if (options.throwAt && event.seq === options.throwAt)
        throw new Error(`a listener's bug at seq ${event.seq}`);
    },
    onState: (state, detail) =>
      states.push(
        state === "reconnecting"
          ? { state, delayMs: detail.delayMs, error: String(detail.error ?? "") }
          : state,
      ),
  });
  if (during) await during(stream, events);
  const done = await stream.done;
  await new Promise((resolve) => setTimeout(resolve, 50)); // no call may follow the end
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

const until = async (predicate) => {
  while (!predicate()) await new Promise((resolve) => setTimeout(resolve, 5));
};

async function main() {
  const result = {};
  result.resume = await scenario(
    "/ajax-api/2.0/mlflow/train/jobs/1/events?view=full",
    [
      ndjson([ev(1, "status", { status: "RUNNING" }), ev(2), ev(3)], "close"), // ends without `end`
      ndjson([ev(2), ev(3), ev(4, "metric"), '{"seq": 5, "type": "lo'], "error"), // replays, cut mid-line
      networkError(),
      httpError(503, "UNAVAILABLE"),
      httpError(429, "TOO_MANY_REQUESTS", { "Retry-After": "1" }),
      ndjson([ev(5), ev(6), { type: "resync", seq: 6 }], "hang"), // must not wait for the close
      ndjson(
        [
          { type: "heartbeat", ts: 7 },
          ev(7, "progress", { current: 1 }),
          ev(8, "end", { status: "SUCCEEDED" }),
        ],
        "hang",
      ),
    ],
    { headers: { Authorization: "Bearer t0ken" } },
  );
  result.fatal = {};
  for (const status of [400, 401, 403, 404]) {
    result.fatal[status] = await scenario("/ajax-api/2.0/mlflow/train/jobs/9/events", [
      httpError(status, `E${status}`),
    ]);
  }
  result.retried408 = await scenario("/jobs/1/events", [httpError(408, "TIMEOUT"), ndjson([ev(1, "end")])]);
  const deleted = { type: "deleted", job_id: 1 };
  result.deleted = await scenario("/jobs/1/events", [ndjson([ev(1), deleted], "close")]);
  // Cut right after `deleted`: ask again, and the 404 of a deleted job ends it.
  result.deletedCut = await scenario("/jobs/1/events", [
    ndjson([ev(1), deleted], "error"),
    httpError(404, "NOT_FOUND"),
  ]);
  result.closed = await scenario("/jobs/1/events", [ndjson([ev(1)], "hang")], {}, async (stream, events) => {
    await until(() => events.length === 1);
    stream.close();
  });
  const aborter = new AbortController();
  result.aborted = await scenario(
    "/jobs/1/events",
    [networkError()],
    { signal: aborter.signal, backoff: { initialMs: 60000, maxMs: 60000 } },
    async () => {
      await new Promise((resolve) => setTimeout(resolve, 50));
      aborter.abort();
    },
  );
  result.idle = await scenario("/jobs/1/events", [ndjson([], "hang"), ndjson([ev(1, "end")], "hang")], {
    idleMs: 200,
  });
  result.listenerThrows = await scenario("/jobs/1/events", [ndjson([ev(1), ev(2), ev(3, "end")], "hang")], {
    throwAt: 2,
  });
  // A finished job asked for what comes after its end: 204, and nothing more is asked.
  result.noContent = await scenario("/jobs/1/events", [() => new Response(null, { status: 204 })], {
    after: 12,
  });
  result.after = await scenario("/jobs/1/events", [ndjson([ev(10), ev(11), ev(12, "end")])], { after: 10 });
  // The all-jobs stream: one sequence for every user's jobs; heartbeats say how far it has come.
  result.allJobs = await scenario(
    "/ajax-api/2.0/mlflow/train/events",
    [
      ndjson(
        [
          { type: "heartbeat", seq: 4, ts: 1 }, // where it starts
          { type: "status", seq: 5, job_id: 1, status: "RUNNING" },
          { type: "heartbeat", seq: 7, ts: 2 }, // 6 and 7 were someone else's
        ],
        "close",
      ),
      ndjson(
        [
          { type: "heartbeat", seq: 7, ts: 3 },
          { type: "status", seq: 5, job_id: 1, status: "RUNNING" }, // sent before: not again
          { type: "status", seq: 8, job_id: 2, status: "QUEUED" },
        ],
        "close",
      ),
      ndjson([{ type: "heartbeat", seq: 8, ts: 4 }, { type: "deleted", seq: 9, job_id: 2 }], "close"),
      ndjson([{ type: "heartbeat", seq: 9, ts: 5 }, { type: "status", seq: 10, job_id: 1, status: "SUCCEEDED" }], "hang"),
    ],
    {},
    async (stream, events) => {
      await until(() => events.length === 4);
      stream.close();
    },
  );
  result.backoff = await scenario(
    "/jobs/1/events",
    [
      networkError(),
      networkError(),
      networkError(),
      networkError(),
      ndjson([ev(1)], "close"),
      networkError(),
      ndjson([ev(2, "end")]),
    ],
    { backoff: { initialMs: 20, maxMs: 80 } },
  );
  document.getElementById("log").textContent = JSON.stringify(result, null, 1);
  return result;
}

main().then(
  (result) => (window.__result = result),
  (error) => (window.__result = { error: String(error.stack || error) }),
);
