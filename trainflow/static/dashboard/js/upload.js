/**
 * Uploading a script with a progress bar. fetch() reports no upload progress, so this is the
 * one place that uses XMLHttpRequest. A refused access token is refreshed and the upload made
 * again once, as api() does for other calls.
 */
import { ApiError, TRAIN, refreshSession } from "./api.js";
import { authHeaders, endSession } from "./session.js";

/**
 * @param {File} file the script (.py) or project archive (.zip, .tar.gz)
 * @param {{onProgress?: (loaded: number, total: number) => void, signal?: AbortSignal}} [options]
 * @returns {Promise<object>} the server's answer: {script, filename, kind, entrypoint, ...}
 */
export async function uploadScript(file, { onProgress, signal } = {}) {
  let answer = await send(file, onProgress, signal);
  if (answer.status === 401 && (await refreshSession())) answer = await send(file, onProgress, signal);
  if (answer.status === 401) endSession({ expired: true });
  if (answer.status >= 200 && answer.status < 300) return answer.body;
  const error = answer.body?.error ?? {};
  throw new ApiError(answer.status, error.code ?? (answer.status ? "http" : "network"), error.message ?? "");
}

function send(file, onProgress, signal) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${TRAIN}/upload`);
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress?.(event.loaded, event.total);
    });
    // status 0: no answer (the connection failed or the server closed it mid-upload)
    xhr.addEventListener("load", () => resolve({ status: xhr.status, body: xhr.response }));
    xhr.addEventListener("error", () => resolve({ status: 0, body: null }));
    xhr.addEventListener("abort", () => reject(new DOMException("The upload was stopped.", "AbortError")));
    signal?.addEventListener("abort", () => xhr.abort(), { once: true });
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}
