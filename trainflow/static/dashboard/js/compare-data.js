/**
 * What the compare page reads: each job's record (trainflow decides who may see it), its MLflow
 * run (name, params, latest metrics), and, for jobs that have ended, their metric histories from
 * trainflow's `jobs/metrics`: many metrics of every ended job in one answer, each sampled to a
 * chart's width, as arrays. Jobs still queued or running are followed through their event streams
 * instead (the page does that), which replay their history from the first event and then go on live.
 */
import { TRAIN, api } from "./api.js";
import { splitGroup } from "./charts.js";

export const MAX_JOBS = 20;
// Steps per history: about what a chart of the grid (30rem and up) is wide in pixels.
const POINTS = 500;
// The first request carries the metrics of the charts a screen shows, alone: sent beside a
// larger one, its answer waited behind the other's reading (the server reads one at a time) and
// the first screen took 2-8 s instead of well under one. The rest follow in requests of
// KEYS_PER_REQUEST metrics, two in flight, so the page draws one answer while the next is read.
const FIRST_KEYS = 8;
const KEYS_PER_REQUEST = 25;
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
 * The histories of `keys` for the ended jobs `jobIds`, handed to `onHistory(jobId, key, points)`
 * as each request's answer arrives (charts fill in while the rest load), in chart order.
 * Values the server sends as "NaN", "Infinity" or "-Infinity" become those numbers.
 */
export async function loadHistories(jobIds, keys, onHistory, signal) {
  if (!jobIds.length || !keys.length) return;
  const ordered = [...keys].sort((a, b) => splitGroup(a).localeCompare(splitGroup(b)) || a.localeCompare(b));
  const batches = [ordered.slice(0, FIRST_KEYS)];
  for (let at = FIRST_KEYS; at < ordered.length; at += KEYS_PER_REQUEST) batches.push(ordered.slice(at, at + KEYS_PER_REQUEST));
  async function read(batch) {
    const query = new URLSearchParams({ jobs: jobIds.join(","), keys: batch.join(","), points: String(POINTS) });
    const answer = await api(`${TRAIN}/jobs/metrics?${query}`, { signal });
    for (const { job, metrics } of answer.jobs ?? []) {
      for (const [key, history] of Object.entries(metrics)) onHistory(job, key, toPoints(history));
    }
  }
  async function worker() {
    while (batches.length && !signal.aborted) await read(batches.shift());
  }
  await read(batches.shift());
  await Promise.all(Array.from({ length: Math.min(PARALLEL, batches.length) }, worker));
}

function toPoints({ steps, values, timestamps }) {
  return steps.map((step, i) => ({ step, value: Number(values[i]), timestamp: timestamps[i] }));
}
