/**
 * A new parameter sweep: pick an uploaded script, list the params (values for a grid; a
 * distribution each for random draws), the strategy, the number of trials, and the metric that
 * ranks them. `?script=<id>` chooses that script. Submitting opens the sweep's page.
 */
import { TRAIN, api } from "../api.js";
import { h, replace } from "../dom.js";
import { busy, errorBox, field, messageOf } from "../forms.js";
import { formatSize, formatTime } from "../format.js";
import { t } from "../i18n.js";
import { BASE } from "../router.js";
import { currentSession } from "../session.js";

const KINDS = ["uniform", "loguniform", "int", "choice"];
const MAX_TRIALS = 1000;

export function newSweepPage({ query, signal, navigate }) {
  const user = currentSession()?.user.username ?? "";
  const script = h("select", { id: "script", required: true }, h("option", { value: "" }, t("new.loadingScripts")));
  const name = h("input", { id: "sweep-name", maxlength: "200" });
  const experiment = h("input", { id: "experiment", maxlength: "500", placeholder: t("new.experimentDefault", { user }) });
  const strategy = h(
    "select",
    { id: "strategy", onchange: () => update() },
    ["grid", "random"].map((s) => h("option", { value: s }, t(`sweeps.strategy.${s}`))),
  );
  const trials = h("input", { id: "trials", type: "number", min: "1", max: String(MAX_TRIALS), step: "1", value: "10", inputmode: "numeric" });
  const seed = h("input", { id: "seed", type: "number", min: "0", step: "1", inputmode: "numeric" });
  const metric = h("input", { id: "metric", maxlength: "250", placeholder: "val_loss" });
  const goal = h("select", { id: "goal" }, ["min", "max"].map((g) => h("option", { value: g }, t(`sweeps.goal.${g}`))));
  const timeout = h("input", { id: "timeout", type: "number", min: "1", step: "1", inputmode: "numeric" });
  const gpus = h("input", { id: "gpus", type: "number", min: "0", max: "64", step: "1", value: "0", inputmode: "numeric" });
  const count = h("p", { class: "hint", id: "trial-count", role: "status" });
  const randomOnly = [field(t("sweeps.trialsField"), trials), field(t("sweeps.seed"), seed, t("sweeps.seedHint"))];
  const rows = h("div", { class: "param-rows", id: "sweep-params" });
  const error = errorBox();
  error.element.id = "submit-error";

  /** One param: its name, and values (grid, choice) or a distribution's low and high. */
  function addRow(key = "", values = "") {
    const nameInput = h("input", { class: "sweep-param-name", "aria-label": t("new.paramName"), placeholder: t("new.paramName"), value: key, oninput: () => update() });
    const kind = h(
      "select",
      { class: "sweep-param-kind", "aria-label": t("sweeps.distribution"), onchange: () => update() },
      KINDS.map((k) => h("option", { value: k }, t(`sweeps.kind.${k}`))),
    );
    const valuesInput = h("input", { class: "sweep-param-values", "aria-label": t("sweeps.values"), placeholder: t("sweeps.valuesHint"), value: values, oninput: () => update() });
    const low = h("input", { class: "sweep-param-low", type: "number", step: "any", "aria-label": t("sweeps.low"), placeholder: t("sweeps.low") });
    const high = h("input", { class: "sweep-param-high", type: "number", step: "any", "aria-label": t("sweeps.high"), placeholder: t("sweeps.high") });
    const row = h(
      "div",
      { class: "param-row sweep-param-row" },
      nameInput,
      kind,
      valuesInput,
      low,
      high,
      h("button", { type: "button", class: "compact", "aria-label": t("new.removeParam"), title: t("new.removeParam"), onclick: () => { row.remove(); update(); } }, "×"),
    );
    rows.append(row);
    update();
    return nameInput;
  }

  /** Shows the fields the strategy and each row's kind use, and the grid's trial count. */
  function update() {
    const isRandom = strategy.value === "random";
    for (const element of randomOnly) element.hidden = !isRandom;
    let combinations = 1;
    for (const row of rows.children) {
      const kind = row.querySelector(".sweep-param-kind");
      kind.hidden = !isRandom;
      const usesValues = !isRandom || kind.value === "choice";
      row.querySelector(".sweep-param-values").hidden = !usesValues;
      row.querySelector(".sweep-param-low").hidden = usesValues;
      row.querySelector(".sweep-param-high").hidden = usesValues;
      if (row.querySelector(".sweep-param-name").value.trim()) combinations *= splitValues(row.querySelector(".sweep-param-values").value).length;
    }
    count.textContent = isRandom ? "" : t("sweeps.gridCount", { n: rows.children.length ? combinations : 0 });
  }

  function space() {
    const isRandom = strategy.value === "random";
    const params = {};
    for (const row of rows.children) {
      const key = row.querySelector(".sweep-param-name").value.trim();
      if (!key) continue;
      if (key in params) throw new Error(t("new.paramTwice", { key }));
      const kind = row.querySelector(".sweep-param-kind").value;
      const values = splitValues(row.querySelector(".sweep-param-values").value);
      if (!isRandom) {
        if (!values.length) throw new Error(t("sweeps.needValues", { key }));
        params[key] = values;
      } else if (kind === "choice") {
        if (!values.length) throw new Error(t("sweeps.needValues", { key }));
        params[key] = { distribution: kind, values };
      } else {
        const [low, high] = [".sweep-param-low", ".sweep-param-high"].map((s) => row.querySelector(s).value);
        if (low === "" || high === "") throw new Error(t("sweeps.needBounds", { key }));
        params[key] = { distribution: kind, low: Number(low), high: Number(high) };
      }
    }
    if (!Object.keys(params).length) throw new Error(t("sweeps.needParams"));
    return params;
  }

  const form = h(
    "form",
    {
      class: "card step",
      id: "sweep-form",
      onsubmit: async (event) => {
        event.preventDefault();
        error.clear();
        let body;
        try {
          body = {
            script_id: Number(script.value) || fail(t("new.needScript")),
            strategy: strategy.value,
            params: space(),
            goal: goal.value,
            gpus: Number(gpus.value || 0),
          };
        } catch (e) {
          error.show(e.message);
          return;
        }
        if (strategy.value === "random") {
          body.trials = Number(trials.value);
          if (seed.value !== "") body.seed = Number(seed.value);
        }
        if (name.value.trim()) body.name = name.value.trim();
        if (experiment.value.trim()) body.experiment_name = experiment.value.trim();
        if (metric.value.trim()) body.metric = metric.value.trim();
        if (timeout.value) body.timeout_s = Number(timeout.value);
        await busy(form, async () => {
          try {
            const made = await api(`${TRAIN}/sweeps`, { method: "POST", body, signal });
            navigate(`${BASE}/sweeps/${made.sweep}`);
          } catch (e) {
            if (!signal.aborted) error.show(messageOf(e));
          }
        });
      },
    },
    h("div", { class: "grid-2" }, field(t("new.script"), script, t("sweeps.scriptHint")), field(t("sweeps.name"), name)),
    h("div", { class: "grid-2" }, field(t("new.experiment"), experiment), field(t("sweeps.strategyField"), strategy)),
    h("div", { class: "grid-2" }, ...randomOnly),
    h(
      "fieldset",
      { class: "params-field" },
      h("legend", null, t("new.params")),
      h("small", { class: "hint" }, t("sweeps.paramsHint")),
      rows,
      h("button", { type: "button", class: "compact", id: "add-sweep-param", onclick: () => addRow().focus() }, t("new.addParam")),
      count,
    ),
    h("div", { class: "grid-2" }, field(t("sweeps.metric"), metric, t("sweeps.metricHint")), field(t("sweeps.goalField"), goal)),
    h("div", { class: "grid-2" }, field(t("sweeps.trialTimeout"), timeout, t("new.timeoutHint")), field(t("sweeps.trialGpus"), gpus)),
    error.element,
    h("button", { type: "submit", class: "primary", id: "submit-sweep" }, t("sweeps.submit")),
  );

  async function loadScripts() {
    try {
      const page = await api(`${TRAIN}/scripts?size=100`, { signal });
      replace(script, h("option", { value: "" }, page.list.length ? t("new.chooseScript") : t("new.noScripts")));
      for (const s of page.list) {
        script.append(h("option", { value: String(s.script) }, `${s.filename} (#${s.script}, ${formatSize(s.size)}, ${formatTime(s.created_at)})`));
      }
      const chosen = query.get("script");
      if (chosen && page.list.some((s) => String(s.script) === chosen)) script.value = chosen;
    } catch (e) {
      if (!signal.aborted) error.show(messageOf(e));
    }
  }
  loadScripts();
  update();

  return h(
    "section",
    { class: "page new-sweep" },
    h(
      "div",
      { class: "page-head" },
      h("h1", null, t("sweeps.newTitle")),
      h("a", { class: "button", href: `${BASE}/new`, id: "upload-link" }, t("sweeps.uploadFirst")),
    ),
    form,
  );
}

function fail(message) {
  throw new Error(message);
}

/** "0.1, 0.01, adam" -> [0.1, 0.01, "adam"]: numbers where they read as numbers. */
export function splitValues(text) {
  return text
    .split(",")
    .map((v) => v.trim())
    .filter((v) => v !== "")
    .map((v) => (v !== "" && Number.isFinite(Number(v)) ? Number(v) : v === "true" ? true : v === "false" ? false : v));
}
