/**
 * Calls to trainflow's JSON API in the current session.
 *
 * Every call sends `Authorization: Bearer <access token>`. A 401 makes one attempt to get a new
 * access token with the refresh token (shared by calls that fail at the same time) and repeats the
 * call once; when that fails too, the session ends as expired. Errors are `ApiError`s carrying the
 * server's `{"error": {"code", "message"}}`.
 */
import { authHeaders, currentSession, endSession, replaceAccessToken, startSession } from "./session.js";

export const TRAIN = "/ajax-api/2.0/mlflow/train";

export class ApiError extends Error {
  /**
   * @param {number} status HTTP status (0: no answer)
   * @param {string} code the server's error code
   * @param {string} message the server's message, meant for the person
   */
  constructor(status, code, message, fields) {
    super(message || `HTTP ${status}`);
    Object.assign(this, { name: "ApiError", status, code, fields });
  }
}

/**
 * @param {string} path e.g. "/api/me" or `${TRAIN}/jobs?page=2`
 * @param {{method?: string, body?: any, signal?: AbortSignal, auth?: boolean,
 *   checksPassword?: boolean, as?: "json"|"text"|"blob"}} [options] checksPassword: the server
 *   answers 401 for a wrong password in the body too, so the token is refreshed first and a 401
 *   is then the password's; `as`: how to read a successful answer
 * @returns {Promise<any>} the answer (null for 204)
 */
export async function api(path, { method = "GET", body, signal, auth = true, checksPassword = false, as = "json" } = {}) {
  if (checksPassword) {
    if (!(await refreshSession())) {
      endSession({ expired: true });
      throw new ApiError(401, "unauthenticated", "");
    }
    return parse(await send(path, method, body, signal, auth), as);
  }
  let response = await send(path, method, body, signal, auth);
  if (response.status === 401 && auth && currentSession()) {
    if (await refreshSession()) response = await send(path, method, body, signal, auth);
    if (response.status === 401) {
      endSession({ expired: true });
    }
  }
  return parse(response, as);
}

/** Same-origin fetch with this session's token. Credentials "omit": no cookies and no cached Basic. */
export async function send(path, method, body, signal, auth = true) {
  const headers = { Accept: "application/json", ...(auth ? authHeaders() : {}) };
  const init = { method, headers, signal, credentials: "omit", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    return await fetch(path, init);
  } catch (error) {
    if (error?.name === "AbortError") throw error;
    throw new ApiError(0, "network", "");
  }
}

async function parse(response, as = "json") {
  if (response.status === 204) return null;
  if (response.ok && as === "text") return response.text();
  if (response.ok && as === "blob") return response.blob();
  let data = null;
  try {
    data = await response.json();
  } catch {
    // not JSON
  }
  if (!response.ok) {
    const error = data?.error ?? {};
    throw new ApiError(response.status, error.code ?? "http", error.message ?? "", error.fields);
  }
  return data;
}

let refreshing = null;

/**
 * Gets a new access token with the refresh token. Calls that fail at once share one attempt.
 * @returns {Promise<boolean>} whether the session goes on
 */
export function refreshSession() {
  refreshing ??= (async () => {
    const session = currentSession();
    if (!session) return false;
    try {
      const answer = await api("/api/token/refresh", {
        method: "POST",
        body: { refresh_token: session.refresh },
        auth: false,
      });
      replaceAccessToken(answer.access_token);
      return true;
    } catch {
      return false;
    }
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

export async function signIn(username, password) {
  const answer = await api("/api/login", { method: "POST", body: { username, password }, auth: false });
  startSession(answer);
  return answer.user;
}

export async function register(username, password) {
  return api("/api/register", { method: "POST", body: { username, password }, auth: false });
}

/** Revokes this session's tokens on the server (best effort), then forgets them here. */
export async function signOut() {
  const session = currentSession();
  try {
    if (session) await send("/api/logout", "POST", { refresh_token: session.refresh });
  } finally {
    endSession();
  }
}
