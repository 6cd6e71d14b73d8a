// Renders /api/openapi.json as a list of operations. Text only: nothing from the document is
// ever inserted as HTML.
const SELECTORS = { operations: "#operations" };

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function schemaFor(spec, ref) {
  if (!ref) return null;
  const name = ref.$ref ? ref.$ref.split("/").pop() : null;
  return name ? spec.components.schemas[name] : ref;
}

function renderOperation(spec, path, method, op) {
  const section = el("section");
  const title = el("h2");
  title.append(el("span", method.toUpperCase(), "method"), el("code", path));
  if (!op.security) title.append(el("span", "public", "public"));
  section.append(title, el("p", op.summary));
  if (op.description) section.append(el("p", op.description));
  const body = op.requestBody && schemaFor(spec, op.requestBody.content["application/json"].schema);
  if (body) {
    section.append(el("h3", "Request body"), el("pre", JSON.stringify(body, null, 2)));
  }
  if (op.parameters) {
    const names = op.parameters.map((p) => `${p.name} (${p.in}${p.required ? ", required" : ""})`);
    section.append(el("p", `Parameters: ${names.join(", ")}`));
  }
  section.append(el("p", `Responses: ${Object.keys(op.responses).join(", ")}`));
  return section;
}

async function main() {
  const root = document.querySelector(SELECTORS.operations);
  const response = await fetch("openapi.json");
  const spec = await response.json();
  root.textContent = "";
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      root.append(renderOperation(spec, path, method, op));
    }
  }
}

main().catch((error) => {
  document.querySelector(SELECTORS.operations).textContent = `Could not load the API: ${error}`;
});
