/**
 * Web storage that never throws: a browser with storage disabled (or full) just forgets.
 */

function safe(store) {
  return {
    get(key) {
      try {
        return store().getItem(key);
      } catch {
        return null;
      }
    },
    set(key, value) {
      try {
        store().setItem(key, value);
      } catch {
        // storage unavailable: keep going without it
      }
    },
    remove(key) {
      try {
        store().removeItem(key);
      } catch {
        // storage unavailable
      }
    },
  };
}

/** Preferences (language, theme): kept across visits. */
export const local = safe(() => window.localStorage);
/** The session's tokens: gone when the tab closes. */
export const tabSession = safe(() => window.sessionStorage);
