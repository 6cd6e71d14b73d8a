/**
 * Follow trainflow's live event streams (NDJSON over fetch), resuming after every drop.
 *
 * No dependencies; runs in browsers and in Node 20+.
 *
 *   import { followEvents } from "/api/static/js/events.js";
 *
 *   const stream = followEvents(`/ajax-api/2.0/mlflow/train/jobs/${id}/events`, {
 *     headers: { Authorization: `Bearer ${token}` },    // never put a token in the URL
 *     onEvent: (event) => console.log(event.seq, event.type, event),
 *     onState: (state, detail) => console.log(state, detail),
 *   });
 *   const { state, event, error } = await stream.done;  // after `end`, `deleted`, an error or close()
 *
 * A stream resumes from `?after=<last seq seen>`: nothing is lost or delivered twice. On the
 * all-jobs stream (`/ajax-api/2.0/mlflow/train/events`) every user's changes share one sequence,
 * so its heartbeats carry the seq it has reached (the first line says where it starts), and that
 * counts as seen too. Heartbeats are not delivered: they only prove the connection alive (see
 * `idleMs`) and, there, move the position.
 */

/** Splits a byte stream into lines, across any chunk boundary, even inside a UTF-8 character. */
export class LineParser {
  #decoder = new TextDecoder();
  #rest = "";

  /**
   * @param {Uint8Array} chunk the next bytes
   * @returns {string[]} the lines this chunk completed (without "\n" or "\r\n"; blank ones dropped)
   */
  push(chunk) {
    const text = this.#rest + this.#decoder.decode(chunk, { stream: true });
    const lines = text.split("\n");
    this.#rest = lines.pop();
    return lines.map((line) => line.replace(/\r$/, "")).filter((line) => line.trim() !== "");
  }

  /** @returns {string[]} the unterminated last line, if any, once the stream is over */
  end() {
    const last = (this.#rest + this.#decoder.decode()).replace(/\r$/, "");
    this.#rest = "";
    return last.trim() === "" ? [] : [last];
  }
}

/**
 * Parses NDJSON from a stream of bytes, e.g. `response.body`. Lines that are not JSON objects are
 * skipped (such as a last line cut short by a dropped connection).
 * @param {ReadableStream<Uint8Array>} body
 * @returns {AsyncGenerator<object>}
 */
export async function* ndjsonEvents(body) {
  const parser = new LineParser();
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      for (const line of done ? parser.end() : parser.push(value)) {
        let event;
        try {
          event = JSON.parse(line);
        } catch {
          continue; // not JSON
        }
        if (event !== null && typeof event === "object") yield event;
      }
      if (done) return;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** An HTTP error from the server; `status`, and `code` from its `{"error": {"code", "message"}}` body. */
export class StreamError extends Error {
  constructor(status, code, message, retryAfterMs) {
    super(message || `HTTP ${status}`);
    Object.assign(this, { name: "StreamError", status, code, retryAfterMs });
  }
  /** Worth another try: 408, 429, 5xx. */
  get retryable() {
    return this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

/** @typedef {"connecting"|"open"|"reconnecting"|"ended"|"error"|"closed"} State */

/**
 * Follows an event stream until it ends (`end`, or `deleted` as the response's last line),
 * reconnecting with exponential backoff and jitter after a network error, a 408/429/5xx, a
 * response that ended otherwise, or a `resync`.
 * The delay starts at `backoff.initialMs` again once a connection has delivered a line.
 *
 * @param {string} url the stream's URL, relative to the page's; its other query parameters are kept
 * @param {object} [options]
 * @param {Record<string, string>} [options.headers] e.g. `{Authorization: "Bearer ..."}`
 * @param {number} [options.after] deliver only events with a greater seq; left out, a job's stream
 *   starts at its first event and the all-jobs stream at the newest change
 * @param {(event: object) => void} [options.onEvent] each event once, in order (not heartbeats
 *   nor resync); what it throws is reported as an uncaught error and the stream goes on
 * @param {(state: State, detail?: any) => void} [options.onState] detail: `{delayMs, error?}` for
 *   "reconnecting", the last event for "ended", a StreamError for "error" (a 4xx other than 408
 *   and 429: 401, 403, 404...), which ends the stream
 * @param {AbortSignal} [options.signal] aborting it is close()
 * @param {{initialMs?: number, maxMs?: number}} [options.backoff] defaults 250 and 10000
 * @param {number} [options.idleMs=45000] reconnect when nothing, not even a heartbeat, came for so
 *   long (0: never)
 * @returns {{close(): void, readonly lastSeq: number, readonly position: number|undefined,
 *   done: Promise<{state: "ended"|"error"|"closed", event?: object, error?: Error}>}} `position`:
 *   the seq to resume from with `after`, once one is known (undefined before)
 */
export function followEvents(url, options = {}) {
  const { headers = {}, after, signal, idleMs = 45000 } = options;
  const onEvent = (event) => safely(options.onEvent, event);
  const onState = (state, detail) => safely(options.onState, state, detail);
  const { initialMs = 250, maxMs = 10000 } = options.backoff ?? {};
  const base = new URL(url, globalThis.location?.href); // a bad URL throws here, at once
  const closer = new AbortController();
  signal?.aborted ? closer.abort() : signal?.addEventListener("abort", () => closer.abort(), { once: true });
  let lastSeq = after ?? 0;
  let positioned = after !== undefined && after !== null; // lastSeq is where to resume from

  async function connect() {
    const target = new URL(base);
    if (positioned) target.searchParams.set("after", String(lastSeq));
    const connection = new AbortController();
    const stop = () => connection.abort();
    closer.signal.addEventListener("abort", stop);
    let watchdog;
    const alive = () => {
      clearTimeout(watchdog);
      if (idleMs > 0) watchdog = setTimeout(stop, idleMs);
    };
    const result = { outcome: "dropped", heard: false };
    let last;
    try {
      alive();
      const response = await fetch(target, {
        headers: { Accept: "application/x-ndjson", ...headers },
        cache: "no-store",
        // Only the headers given authenticate: no cookies, no cached Basic credentials, and no
        // browser sign-in prompt on a 401 (which would leave this request hanging).
        credentials: "omit",
        signal: connection.signal,
      });
      if (!response.ok) throw await errorOf(response);
      // 204: the job has ended and nothing comes after `after` (the end was delivered before).
      if (response.status === 204) return { ...result, outcome: "ended" };
      onState("open");
      for await (const event of ndjsonEvents(response.body)) {
        alive();
        result.heard = true;
        last = event;
        if (event.type === "heartbeat") {
          // The all-jobs stream's: how far it has come, other users' changes included.
          if (typeof event.seq === "number" && (!positioned || event.seq > lastSeq)) {
            lastSeq = event.seq;
            positioned = true;
          }
          continue;
        }
        if (event.type === "resync") return { ...result, outcome: "resync" };
        if (typeof event.seq === "number") {
          if (positioned && event.seq <= lastSeq) continue; // already delivered
          lastSeq = event.seq;
          positioned = true;
        }
        onEvent(event);
        if (event.type === "end") return { ...result, outcome: "ended", event };
      }
      // A job's stream ends after `deleted` (which has no seq there); the all-jobs stream goes on
      // after a job's `deleted`.
      const isEnd = last?.type === "deleted" && typeof last.seq !== "number";
      return isEnd ? { ...result, outcome: "ended", event: last } : result;
    } finally {
      clearTimeout(watchdog);
      closer.signal.removeEventListener("abort", stop);
      connection.abort();
    }
  }

  const done = (async () => {
    let attempt = 0;
    onState("connecting");
    while (!closer.signal.aborted) {
      let delayMs = 0;
      let error;
      try {
        const { outcome, heard, event } = await connect();
        if (outcome === "ended") {
          onState("ended", event);
          return { state: "ended", event };
        }
        if (heard) attempt = 0;
        if (outcome === "dropped") delayMs = backoffMs(initialMs, maxMs, attempt++);
      } catch (e) {
        if (closer.signal.aborted) break;
        if (e instanceof StreamError && !e.retryable) {
          onState("error", e);
          return { state: "error", error: e };
        }
        error = e;
        delayMs = e?.retryAfterMs ?? backoffMs(initialMs, maxMs, attempt++);
      }
      if (closer.signal.aborted) break;
      onState("reconnecting", { delayMs, error });
      await sleep(delayMs, closer.signal);
    }
    onState("closed");
    return { state: "closed" };
  })();

  return {
    close: () => closer.abort(),
    get lastSeq() {
      return lastSeq;
    },
    get position() {
      return positioned ? lastSeq : undefined;
    },
    done,
  };
}

/** Calls a listener; what it throws is reported as an uncaught error, and the stream goes on. */
function safely(listener, ...args) {
  try {
    listener?.(...args);
  } catch (error) {
    setTimeout(() => {
      throw error;
    });
  }
}

function backoffMs(initialMs, maxMs, attempt) {
  const ceiling = Math.min(maxMs, initialMs * 2 ** attempt);
  return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2); // "equal jitter"
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const wake = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", wake);
      resolve();
    };
    const timer = setTimeout(wake, ms);
    signal.addEventListener("abort", wake);
  });
}

async function errorOf(response) {
  let body = {};
  try {
    body = (await response.json()).error ?? {};
  } catch {
    // not JSON
  }
  return new StreamError(response.status, body.code, body.message, retryAfterMs(response));
}

/** Retry-After of a 429, in seconds or as an HTTP date, in ms; undefined when absent or unreadable. */
function retryAfterMs(response) {
  const value = response.headers.get("Retry-After")?.trim();
  if (response.status !== 429 || !value) return undefined;
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}
