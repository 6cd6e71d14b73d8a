/**
 * What the compare page reads: each job's record (trainflow decides who may see it), its MLflow
 * run (name, params, latest metrics), and, for jobs that have ended, every metric's history from
 * MLflow's GetMetricHistoryBulkInterval: one request per metric for all ended runs at once.
 * Jobs still queued or running are followed through their event streams instead (the page does
 * that), which replay their history from the first event and then go on live.
 */
import { TRAIN, api } from "./api.js";

export const MAX_JOBS = 20;
// MLflow's most points per run and request; a longer history comes back evenly sampled.
const MAX_RESULTS = 2500;
// Requests in flight at once. The server answers these one after another (MLflow samples each
// run's history in SQL, ~50-200 ms a run and metric here), so more in flight only reorders them:
// with 6, the first charts' histories waited behind later ones; with 2 they arrive in order.
const PARALLEL = 2;

/**
 * The job ids in `?jobs=1,2,3`.
 * @returns {{ids: number[], problem: null|"none"|"invalid"|"tooMany"|"one"}}
 */
export function parseJobIds(value) {
  const parts = String(value ?? "")
    .split(",")
    .map((part) => part.trim())
    .filter(Boolean);
  if (!parts.length) return { ids: [], problem: "none" };
  if (!parts.every((part) => /^\d{1,15}$/.test(part) && Number(part) > 0)) return { ids: [], problem: "invalid" };
  const ids = [...new Set(parts.map(Number))];
  if (ids.length > MAX_JOBS) return { ids, problem: "tooMany" };
  if (ids.length < 2) return { ids, problem: "one" };
  return { ids, problem: null };
}

/**
 * A job's record and run. `missing` when the server answers 404 (no such job, or another user's).
 * @returns {Promise<{id: number, job: object|null, run: object|null, missing: boolean, error: any}>}
 */
export async function loadJob(id, signal) {
  let job;
  try {
    job = await api(`${TRAIN}/jobs/${id}`, { signal });
  } catch (error) {
    return { id, job: null, run: null, missing: error.status === 404, error };
  }
  let run = null;
  try {
    run = (await api(`/ajax-api/2.0/mlflow/runs/get?${new URLSearchParams({ run_id: job.run_id })}`, { signal })).run;
  } catch (error) {
    if (signal.aborted) throw error;
    // The record alone still compares: its params, and its metrics as they stream.
  }
  return { id, job, run, missing: false, error: null };
}

/**
 * Every point of `keys` for the runs in `runIds`, handed to `onHistory(runId, key, points)` as
 * each metric arrives (charts fill in while the rest load).
 */
export async function loadHistories(runIds, keys, onHistory, signal) {
  if (!runIds.length) return;
  const queue = [...keys];
  async function worker() {
    while (queue.length && !signal.aborted) {
      const key = queue.shift();
      const query = new URLSearchParams({ metric_key: key, max_results: String(MAX_RESULTS) });
      for (const runId of runIds) query.append("run_ids", runId);
      const answer = await api(`/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?${query}`, { signal });
      const byRun = new Map(runIds.map((runId) => [runId, []]));
      for (const point of answer.metrics ?? []) byRun.get(point.run_id)?.push(point);
      for (const [runId, points] of byRun) if (points.length) onHistory(runId, key, points);
    }
  }
  await Promise.all(Array.from({ length: Math.min(PARALLEL, queue.length) }, worker));
}
