/**
 * A retried job's attempts: each run of its script (status, exit code, reason, times), and the
 * output lines of the one the person picks, paged from the log API (`?attempt=N`).
 *
 * The console above shows every line of the job as one stream; this shows one attempt's alone,
 * which is what a person comparing a failed attempt with its retry wants. Shown only for a job
 * submitted with retries.
 */
import { TRAIN, api } from "./api.js";
import { h, replace } from "./dom.js";
import { messageOf } from "./forms.js";
import { formatTime } from "./format.js";
import { t } from "./i18n.js";
import { statusBadge } from "./jobs.js";

const PAGE = 1000; // lines per request

export function createAttempts(jobId, signal) {
  const title = h("h2", null, t("attempts.title"));
  const body = h("tbody");
  const table = h(
    "table",
    { class: "data attempts", id: "attempts" },
    h(
      "thead",
      null,
      h(
        "tr",
        null,
        ["number", "status", "exitCode", "reason", "started", "finished", "lines"].map((key) => h("th", null, t(`attempts.column.${key}`))),
      ),
    ),
    body,
  );
  const linesTitle = h("h3", { hidden: true });
  const lines = h("ol", { class: "attempt-lines", id: "attempt-lines", hidden: true });
  const more = h("button", { type: "button", class: "compact", id: "attempt-more", hidden: true }, t("attempts.more"));
  const note = h("p", { class: "muted", id: "attempt-note", role: "status" });
  const element = h("div", { class: "card attempts-card", hidden: true }, title, table, linesTitle, lines, more, note);
  let shown = null; // the attempt whose lines are listed
  let next = 0;

  async function load(number, fresh) {
    if (fresh) {
      shown = number;
      next = 0;
      replace(lines);
      replace(linesTitle, t("attempts.linesOf", { n: number }));
      linesTitle.hidden = false;
      lines.hidden = false;
    }
    more.hidden = true;
    note.textContent = "";
    try {
      const page = await api(`${TRAIN}/jobs/${jobId}/logs?attempt=${number}&offset=${next}&limit=${PAGE}`, { signal });
      if (shown !== number) return; // another attempt was picked meanwhile
      for (const line of page.lines) {
        lines.append(h("li", { class: line.stream === "stderr" ? "stderr" : null, value: String(line.n) }, line.line));
      }
      next = page.next_offset;
      more.hidden = page.lines.length < PAGE;
      if (!lines.childElementCount) note.textContent = t("attempts.noLines");
    } catch (e) {
      if (!signal.aborted) note.textContent = messageOf(e);
    }
  }
  more.addEventListener("click", () => load(shown, false));

  /** The job's record as the API gives it: its attempts, max_retries and current attempt. */
  function show(job) {
    const attempts = job.attempts ?? [];
    element.hidden = !(job.max_retries > 0 || attempts.length > 1);
    if (element.hidden) return;
    replace(title, t("attempts.title"), " ", h("span", { class: "muted", id: "attempt-of" }, t("attempts.of", { attempt: job.attempt, total: job.max_retries + 1 })));
    replace(
      body,
      attempts.map((attempt) =>
        h(
          "tr",
          { dataset: { attempt: String(attempt.number) } },
          h("td", null, String(attempt.number)),
          h("td", null, statusBadge(attempt.status, null)),
          h("td", null, attempt.exit_code === null ? "" : String(attempt.exit_code)),
          h("td", null, attempt.reason ?? ""),
          h("td", null, attempt.started_at ? formatTime(attempt.started_at) : ""),
          h("td", null, attempt.finished_at ? formatTime(attempt.finished_at) : ""),
          h(
            "td",
            null,
            attempt.started_at
              ? h("button", { type: "button", class: "compact attempt-show", onclick: () => load(attempt.number, true) }, t("attempts.show"))
              : "",
          ),
        ),
      ),
    );
  }

  return { element, show };
}
