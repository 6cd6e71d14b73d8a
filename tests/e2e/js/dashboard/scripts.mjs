// The scripts pages: the list, one script's source highlighted (and shown exactly, markup in it
// as text), "Run" choosing it on the new-job page, deleting an unused script, and the server's
// refusal to delete one a job uses.
const TRAIN = "/ajax-api/2.0/mlflow/train";

export default async function scripts({ page, options, step, shot, api }) {
  const { origin, username, password, source, spare } = options;
  const result = {};

  step("register, then upload two scripts and run one of them");
  await page.goto(`${origin}/train/register`);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByLabel("Password again").fill(password);
  await page.getByRole("button", { name: "Create the account" }).click();
  await page.waitForURL(`${origin}/train/`);
  const used = await api(`${TRAIN}/upload`, { method: "POST", form: { filename: "model.py", content: source } });
  const unused = await api(`${TRAIN}/upload`, { method: "POST", form: { filename: "spare.py", content: spare } });
  await api(`${TRAIN}/jobs`, { method: "POST", json: { script_id: used.script } });

  step("the list");
  await page.getByRole("link", { name: "Scripts" }).click();
  await page.waitForURL(`${origin}/train/scripts`);
  await page.locator(`#script-${unused.script}`).waitFor();
  result.listed = await page.locator("#scripts tbody tr .col-filename").allTextContents();

  step("one script, highlighted");
  await page.getByRole("link", { name: "model.py" }).click();
  await page.waitForURL(`${origin}/train/scripts/${used.script}`);
  await page.locator("#source .hljs-keyword").first().waitFor();
  result.source = await page.locator("#source").evaluate((pre) => ({
    text: pre.textContent,
    tags: [...new Set([...pre.querySelectorAll("*")].map((e) => e.localName))].sort(),
    keywords: [...pre.querySelectorAll(".hljs-keyword")].map((e) => e.textContent).slice(0, 3),
    attributes: [...pre.querySelectorAll("span")].flatMap((e) => e.getAttributeNames()).filter((n) => n !== "class"),
  }));
  result.injected = await page.evaluate(() => document.querySelectorAll("img, [onerror], script:not([src])").length);
  result.sha = await page.locator('#script-details [data-field="sha256"]').textContent();
  await shot("source");
  await page.locator("#theme").click();
  await shot("source-dark");
  await page.locator("#theme").click();

  step("Run chooses it on the new-job page");
  await page.getByRole("link", { name: "Run", exact: true }).click();
  await page.waitForURL(`${origin}/train/new?script=${used.script}`);
  await page.waitForFunction((id) => document.querySelector("#script").value === String(id), used.script);
  result.chosen = await page.locator("#script").inputValue();

  step("delete the unused script; the used one is refused with the server's reason");
  await page.getByRole("link", { name: "Scripts" }).click();
  const spareRow = page.locator(`#script-${unused.script}`);
  await spareRow.getByRole("button", { name: "Delete" }).click();
  await spareRow.getByRole("button", { name: "Really delete?" }).click();
  await spareRow.waitFor({ state: "detached" });
  const usedRow = page.locator(`#script-${used.script}`);
  await usedRow.getByRole("button", { name: "Delete" }).click();
  await usedRow.getByRole("button", { name: "Really delete?" }).click();
  const alert = page.getByRole("alert");
  await alert.filter({ hasText: /\S/ }).waitFor();
  result.refusal = await alert.textContent();
  result.stillListed = await usedRow.count();
  await shot("scripts");
  return { ...result, used: used.script, unused: unused.script };
}
