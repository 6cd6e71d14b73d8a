/**
 * Downloads that need the Authorization header: an <a href> cannot send it, so the file is
 * fetched and handed to the browser as a Blob URL.
 */
import { api } from "./api.js";

/** Fetches `path` in this session and saves it as `filename`. */
export async function downloadFile(path, filename) {
  const url = URL.createObjectURL(await api(path, { as: "blob" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000); // after the browser has taken it
}
