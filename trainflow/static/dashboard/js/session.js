/**
 * The signed-in session: the access and refresh tokens and who they belong to, in sessionStorage
 * (gone with the tab). The password is never stored anywhere.
 *
 * `sessionEvents` fires "change" when the session starts or ends and "expired" when the server
 * refused both tokens, so that the app can send the person back to the sign-in page.
 */
import { tabSession } from "./storage.js";

const KEY = "trainflow.session";
export const sessionEvents = new EventTarget();

/** @returns {{access: string, refresh: string, user: {id: number, username: string, role: string}}|null} */
export function currentSession() {
  try {
    const value = JSON.parse(tabSession.get(KEY) ?? "null");
    return value && typeof value.access === "string" ? value : null;
  } catch {
    return null;
  }
}

export function isSignedIn() {
  return currentSession() !== null;
}

/** Starts a session from the answer of POST /api/login. */
export function startSession({ access_token, refresh_token, user }) {
  const { id, username, role } = user;
  tabSession.set(KEY, JSON.stringify({ access: access_token, refresh: refresh_token, user: { id, username, role } }));
  sessionEvents.dispatchEvent(new Event("change"));
}

/** Keeps the session with a new access token (from POST /api/token/refresh). */
export function replaceAccessToken(access) {
  const session = currentSession();
  if (session) tabSession.set(KEY, JSON.stringify({ ...session, access }));
}

/** Ends the session: signed out, or `expired` when the server no longer accepts its tokens. */
export function endSession({ expired = false } = {}) {
  const had = isSignedIn();
  tabSession.remove(KEY);
  if (had) sessionEvents.dispatchEvent(new Event("change"));
  if (expired) sessionEvents.dispatchEvent(new Event("expired"));
}

/** Headers for an API call in this session. */
export function authHeaders() {
  const session = currentSession();
  return session ? { Authorization: `Bearer ${session.access}` } : {};
}
