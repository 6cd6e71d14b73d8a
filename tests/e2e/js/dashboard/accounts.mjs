// Accounts in the dashboard: an admin manages users (create, change a role, delete); a person
// edits their contact details, changes their password (a wrong current one is refused; the
// session carries on with new tokens; the old ones stop working), signs out everywhere and signs
// in with the new password; a non-admin finds no users page.
export default async function accounts({ page, options, step, shot }) {
  const { origin, adminPassword, newUser, newUserPassword, newPassword } = options;
  const result = {};
  const session = () => page.evaluate(() => JSON.parse(sessionStorage.getItem("trainflow.session") ?? "null"));
  const signIn = async (username, password) => {
    await page.goto(`${origin}/train/signin`);
    await page.getByLabel("Username").fill(username);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForURL(`${origin}/train/`);
  };

  step("an admin opens the users page");
  await signIn("admin", adminPassword);
  await page.getByRole("link", { name: "Users" }).click();
  await page.waitForURL(`${origin}/train/users`);
  await page.locator('#users tr[data-user="admin"]').waitFor();

  step("creates a user");
  await page.locator("#new-username").fill(newUser);
  await page.locator("#new-user-password").fill(newUserPassword);
  await page.getByRole("button", { name: "Create the user" }).click();
  const row = page.locator(`#users tr[data-user="${newUser}"]`);
  await row.waitFor();

  step("changes their role, which survives a reload");
  // Listen before the change: a fast answer could come before a wait set up after it.
  const saved = page.waitForResponse((r) => r.url().includes("/api/users/") && r.request().method() === "PATCH");
  await row.getByLabel(`Role of ${newUser}`).selectOption("admin");
  await saved;
  await page.reload();
  result.roleAfterReload = await row.getByLabel(`Role of ${newUser}`).inputValue();
  result.ownDeleteHidden = await page.locator('#users tr[data-user="admin"] button').isHidden();
  await shot("users");

  step("deletes them, after a second press");
  const remove = row.getByRole("button", { name: "Delete" });
  await remove.click();
  result.confirmLabel = await row.locator("button.danger").textContent();
  await row.locator("button.danger").click();
  await row.waitFor({ state: "detached" });
  await page.reload();
  await page.locator('#users tr[data-user="admin"]').waitFor();
  result.deletedGone = (await row.count()) === 0;

  step("the admin's own account: contact details");
  await page.locator("#account-link").click();
  await page.waitForURL(`${origin}/train/account`);
  await page.locator('#account-details [data-field="role"]').filter({ hasText: "Admin" }).waitFor();
  await page.getByLabel("Email").fill("root@example.org");
  await page.getByRole("button", { name: "Save" }).click();
  await page.getByText("Saved.").waitFor();
  await page.reload();
  await page.waitForFunction(() => document.querySelector("#email").value !== "");
  result.email = await page.getByLabel("Email").inputValue();

  step("a wrong current password is refused");
  await page.getByLabel("Current password").fill("not-the-password");
  await page.getByLabel("New password", { exact: true }).fill(newPassword);
  await page.getByLabel("Password again").fill(newPassword);
  await page.getByRole("button", { name: "Change the password" }).click();
  const refusal = page.locator("#password-form [role=alert]");
  await refusal.filter({ hasText: /\S/ }).waitFor();
  result.wrongPassword = await refusal.textContent();

  step("the password is changed; this session carries on with new tokens");
  const before = await session();
  await page.getByLabel("Current password").fill(adminPassword);
  await page.getByLabel("New password", { exact: true }).fill(newPassword);
  await page.getByLabel("Password again").fill(newPassword);
  await page.getByRole("button", { name: "Change the password" }).click();
  await page.locator("#password-changed").waitFor();
  const after = await session();
  result.tokensReplaced = after.access !== before.access && after.refresh !== before.refresh;
  result.oldTokenStatus = (await fetch(`${origin}/api/me`, { headers: { Authorization: `Bearer ${before.access}` } })).status;
  await page.getByRole("link", { name: "Jobs", exact: true }).click();
  await page.locator('#live-state[data-state="open"]').waitFor();
  await shot("account");

  step("sign out everywhere, then in with the new password");
  await page.locator("#account-link").click();
  await page.locator("#sign-out-everywhere").click();
  await page.waitForURL(/\/train\/signin$/);
  result.everywhere = await page.locator("#flash").textContent();
  result.refreshAfterEverywhere = (
    await fetch(`${origin}/api/token/refresh`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: after.refresh }),
    })
  ).status;
  await signIn("admin", newPassword);

  step("someone who is not an admin finds no users page");
  await page.locator("#sign-out").click();
  await page.waitForURL(/\/train\/signin$/);
  await page.getByRole("link", { name: "Create one" }).click();
  await page.getByLabel("Username").fill("erin");
  await page.getByLabel("Password", { exact: true }).fill(newUserPassword);
  await page.getByLabel("Password again").fill(newUserPassword);
  await page.getByRole("button", { name: "Create the account" }).click();
  await page.waitForURL(`${origin}/train/`);
  result.usersLinkForUser = await page.getByRole("link", { name: "Users" }).count();
  await page.goto(`${origin}/train/users`);
  result.usersPageForUser = await page.getByRole("heading", { level: 1 }).textContent();
  return result;
}
