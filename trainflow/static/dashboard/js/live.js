/**
 * Live event streams in the current session, on top of the shared stream client
 * (/api/static/js/events.js: NDJSON over fetch, resuming after every drop).
 *
 * What this adds: the session's token, and what to do when the server refuses it (an access
 * token expires while a page stays open): refresh it once and resume where the stream was
 * (`after` its position: the last seq seen, or for the all-jobs stream the last heartbeat's), or
 * end the session as expired.
 */
import { followEvents } from "/api/static/js/events.js";
import { TRAIN, refreshSession } from "./api.js";
import { t } from "./i18n.js";
import { authHeaders, endSession } from "./session.js";

/**
 * @param {string} url the stream
 * @param {{onEvent?: (event: object) => void, onState?: (state: string, detail?: any) => void,
 *   signal?: AbortSignal}} options the stream is closed when `signal` aborts (the page is left)
 */
export function follow(url, { onEvent, onState, signal }) {
  let after; // where to resume; unknown at first (a job's stream: its start; all jobs: now)
  let refreshed = false;

  const start = () => {
    const stream = followEvents(url, {
      headers: authHeaders(),
      after,
      signal,
      onEvent,
      onState: (state, detail) => {
        if (state === "open") refreshed = false; // the token works: a later 401 may refresh again
        if (state === "error" && detail?.status === 401) return; // handled below
        onState?.(state, detail);
      },
    });
    stream.done.then(async ({ state, error }) => {
      if (state !== "error" || error?.status !== 401 || signal?.aborted) return;
      after = stream.position;
      if (!refreshed && (await refreshSession())) {
        refreshed = true;
        if (!signal?.aborted) start();
      } else {
        endSession({ expired: true });
      }
    });
  };
  start();
}

/**
 * The all-jobs stream of a page that lists jobs: `liveState` says how the stream is, `load()` runs
 * when it first opens (the stream goes on from where the list then is) and after every error (the
 * list catches up on what the break hid), and `onEvent` gets each change.
 */
export function followJobChanges({ signal, liveState, load, onEvent }) {
  let isLoaded = false;
  follow(`${TRAIN}/events`, {
    signal,
    onState: (state) => {
      liveState.textContent = t(`live.${state}`);
      liveState.dataset.state = state;
      if ((state === "open" && !isLoaded) || state === "error") {
        isLoaded = true;
        load();
      }
    },
    onEvent,
  });
}
