// Signing in through the dashboard's own form, as a person does: the flows that start signed in.
export async function signIn(page, origin, username, password) {
  await page.goto(`${origin}/train/signin`);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${origin}/train/`);
}
