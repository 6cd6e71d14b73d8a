/**
 * Downloads that need the Authorization header: an <a href> cannot send it, so the file is
 * fetched and handed to the browser as a Blob URL.
 */
import { ApiError, refreshSession, send } from "./api.js";
import { endSession } from "./session.js";

/** Fetches `path` in this session and saves it as `filename`. */
export async function downloadFile(path, filename) {
  let response = await send(path, "GET");
  if (response.status === 401 && (await refreshSession())) response = await send(path, "GET");
  if (response.status === 401) endSession({ expired: true });
  if (!response.ok) {
    let error = {};
    try {
      error = (await response.json()).error ?? {};
    } catch {
      // not JSON
    }
    throw new ApiError(response.status, error.code ?? "http", error.message ?? "");
  }
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000); // after the browser has taken it
}
