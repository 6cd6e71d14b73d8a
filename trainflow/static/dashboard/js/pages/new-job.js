/**
 * A new job: upload a script (drag and drop or the file picker, with a progress bar) or pick one
 * uploaded before, then set the job's experiment, run name, parameters, timeout and GPUs.
 * `?rerun=<job id>` fills the form from that job; `?script=<id>` chooses that script.
 */
import { TRAIN, api } from "../api.js";
import { h, replace } from "../dom.js";
import { busy, errorBox, field, messageOf } from "../forms.js";
import { formatSize, formatTime } from "../format.js";
import { t } from "../i18n.js";
import { BASE } from "../router.js";
import { currentSession } from "../session.js";
import { uploadScript } from "../upload.js";

export function newJobPage({ query, signal, navigate }) {
  const scripts = scriptPicker();
  const uploader = uploadArea(signal, (script) => scripts.add(script, true));
  const form = jobForm(scripts, signal, navigate);

  scripts.load(signal).then(async () => {
    const rerun = Number.parseInt(query.get("rerun") ?? "", 10);
    const script = Number.parseInt(query.get("script") ?? "", 10);
    if (rerun > 0) await form.fillFrom(rerun);
    else if (script > 0) await form.useScript(script);
  });

  return h(
    "section",
    { class: "page new-job" },
    h("div", { class: "page-head" }, h("h1", null, t("new.title")), h("a", { class: "button", href: `${BASE}/sweeps/new`, id: "new-sweep-link" }, t("sweeps.new"))),
    h("div", { class: "card step" }, h("h2", null, t("new.scriptStep")), uploader, scripts.element),
    form.element,
  );
}

/** The drop zone and file picker; `onUploaded(script)` once the server has the file. */
function uploadArea(signal, onUploaded) {
  const input = h("input", {
    type: "file",
    id: "file",
    class: "visually-hidden",
    accept: ".py,.zip,.tar.gz,.tgz",
    onchange: () => input.files[0] && start(input.files[0]),
  });
  const zone = h(
    "label",
    { class: "drop-zone", id: "drop-zone", for: "file" },
    input,
    h("strong", null, t("new.drop")),
    h("span", null, t("new.dropHint")),
  );
  const bar = h("progress", { id: "upload-progress", max: "1", value: "0", "aria-label": t("new.uploadProgress") });
  const text = h("span", { class: "progress-text", id: "upload-text", role: "status" });
  const status = h("div", { class: "progress", hidden: true }, bar, text);
  const error = errorBox();
  error.element.id = "upload-error";

  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const file = event.dataTransfer?.files?.[0];
    if (file) start(file);
  });

  async function start(file) {
    error.clear();
    status.hidden = false;
    bar.max = Math.max(file.size, 1);
    bar.value = 0;
    text.textContent = t("new.uploading", { name: file.name });
    input.disabled = true;
    try {
      const script = await uploadScript(file, {
        signal,
        onProgress: (loaded, total) => {
          bar.max = Math.max(total, 1);
          bar.value = loaded;
          text.textContent = t("new.uploadingPercent", { name: file.name, percent: Math.floor((100 * loaded) / Math.max(total, 1)) });
        },
      });
      bar.value = bar.max;
      text.textContent = t("new.uploaded", { name: script.filename });
      onUploaded(script);
    } catch (e) {
      if (signal.aborted) return;
      status.hidden = true;
      error.show(e.status === 0 ? t("new.uploadCut") : messageOf(e));
    } finally {
      input.disabled = false;
      input.value = "";
    }
  }

  return h("div", { class: "upload" }, zone, status, error.element);
}

/** The list of the person's scripts, newest first. */
function scriptPicker() {
  const select = h("select", { id: "script", required: true }, h("option", { value: "" }, t("new.loadingScripts")));
  const error = errorBox();
  const known = new Set();
  const option = (s) =>
    h("option", { value: String(s.script) }, `${s.filename} (#${s.script}, ${formatSize(s.size)}, ${formatTime(s.created_at)})`);
  return {
    element: h("div", null, field(t("new.script"), select), error.element),
    select,
    async load(signal) {
      try {
        const page = await api(`${TRAIN}/scripts?size=100`, { signal });
        const chosen = select.value;
        replace(select, h("option", { value: "" }, page.list.length ? t("new.chooseScript") : t("new.noScripts")));
        for (const script of page.list) {
          known.add(script.script);
          select.append(option(script));
        }
        if (chosen) select.value = chosen;
      } catch (e) {
        if (!signal.aborted) error.show(messageOf(e));
      }
    },
    has: (id) => known.has(id),
    /** A script just uploaded (or an older job's), chosen at once with `choose`. */
    add(script, choose) {
      if (!known.has(script.script)) {
        known.add(script.script);
        select.firstElementChild.after(option(script));
      }
      if (choose) select.value = String(script.script);
    },
  };
}

/** The job's settings and the submit button. */
function jobForm(scripts, signal, navigate) {
  const user = currentSession()?.user.username ?? "";
  const experiment = h("input", { id: "experiment", maxlength: "500", placeholder: t("new.experimentDefault", { user }) });
  const runName = h("input", { id: "run-name", maxlength: "250" });
  const timeout = h("input", { id: "timeout", type: "number", min: "1", step: "1", inputmode: "numeric" });
  const gpus = h("input", { id: "gpus", type: "number", min: "0", max: "64", step: "1", value: "0", inputmode: "numeric" });
  const retries = h("input", { id: "max-retries", type: "number", min: "0", max: "10", step: "1", value: "0", inputmode: "numeric" });
  const params = paramRows();
  const error = errorBox();
  error.element.id = "submit-error";

  const element = h(
    "form",
    {
      class: "card step",
      id: "job-form",
      onsubmit: async (event) => {
        event.preventDefault();
        error.clear();
        let body;
        try {
          body = {
            script_id: Number(scripts.select.value) || invalid(t("new.needScript")),
            params: params.values(),
            gpus: Number(gpus.value || 0),
          };
        } catch (e) {
          error.show(e.message);
          return;
        }
        if (experiment.value.trim()) body.experiment_name = experiment.value.trim();
        if (runName.value.trim()) body.run_name = runName.value.trim();
        if (timeout.value) body.timeout_s = Number(timeout.value);
        if (Number(retries.value)) body.max_retries = Number(retries.value);
        await busy(element, async () => {
          try {
            const job = await api(`${TRAIN}/jobs`, { method: "POST", body, signal });
            navigate(`${BASE}/jobs/${job.job}`);
          } catch (e) {
            if (!signal.aborted) error.show(messageOf(e));
          }
        });
      },
    },
    h("h2", null, t("new.jobStep")),
    h(
      "div",
      { class: "grid-2" },
      field(t("new.experiment"), experiment),
      field(t("new.runName"), runName),
      field(t("new.timeout"), timeout, t("new.timeoutHint")),
      field(t("new.gpus"), gpus),
      field(t("new.retries"), retries, t("new.retriesHint")),
    ),
    params.element,
    error.element,
    h("button", { type: "submit", class: "primary", id: "submit-job" }, t("new.submit")),
  );

  return {
    element,
    /** Chooses script `id` (from the scripts page). */
    async useScript(id) {
      try {
        if (!scripts.has(id)) scripts.add(await api(`${TRAIN}/scripts/${id}`, { signal }), false);
        scripts.select.value = String(id);
      } catch (e) {
        if (!signal.aborted) error.show(messageOf(e));
      }
    },
    /** Fills the form from an earlier job (rerun). */
    async fillFrom(jobId) {
      try {
        const job = await api(`${TRAIN}/jobs/${jobId}`, { signal });
        if (!scripts.has(job.script_id)) scripts.add(await api(`${TRAIN}/scripts/${job.script_id}`, { signal }), false);
        scripts.select.value = String(job.script_id);
        params.set(job.params ?? {});
        timeout.value = job.timeout_s ?? "";
        gpus.value = String(job.gpus ?? 0);
        retries.value = String(job.max_retries ?? 0);
        const found = await api(`/ajax-api/2.0/mlflow/experiments/get?experiment_id=${encodeURIComponent(job.experiment_id)}`, { signal });
        experiment.value = found?.experiment?.name ?? "";
      } catch (e) {
        if (!signal.aborted) error.show(messageOf(e));
      }
    },
  };
}

function invalid(message) {
  throw new Error(message);
}

/** Parameters as rows of name and value, with buttons to add and remove rows. */
function paramRows() {
  const rows = h("div", { class: "param-rows", id: "params" });
  const add = (key = "", value = "") => {
    const name = h("input", { class: "param-key", "aria-label": t("new.paramName"), placeholder: t("new.paramName"), value: key });
    const val = h("input", { class: "param-value", "aria-label": t("new.paramValue"), placeholder: t("new.paramValue"), value });
    const row = h(
      "div",
      { class: "param-row" },
      name,
      val,
      h("button", { type: "button", class: "compact", "aria-label": t("new.removeParam"), title: t("new.removeParam"), onclick: () => row.remove() }, "×"),
    );
    rows.append(row);
    return name;
  };
  const element = h(
    "fieldset",
    { class: "params-field" },
    h("legend", null, t("new.params")),
    h("small", { class: "hint" }, t("new.paramsHint")),
    rows,
    h("button", { type: "button", class: "compact", id: "add-param", onclick: () => add().focus() }, t("new.addParam")),
  );
  return {
    element,
    values() {
      const values = {};
      for (const row of rows.children) {
        const key = row.querySelector(".param-key").value.trim();
        const value = row.querySelector(".param-value").value;
        if (!key) {
          if (value) invalid(t("new.paramNeedsName"));
          continue;
        }
        if (key in values) invalid(t("new.paramTwice", { key }));
        values[key] = value;
      }
      return values;
    },
    set(values) {
      rows.replaceChildren();
      for (const [key, value] of Object.entries(values)) add(key, String(value));
    },
  };
}
