// Who the dashboard is logged in as (with --users): their name and a
// logout button in the top bar; back to the login page once the session ends.
const CHECK_MS = 15000;

async function me() {
  const response = await fetch("/api/me", { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) {
    window.location.assign("/login");
    return null;
  }
  return response.ok ? response.json() : null;
}

async function logout() {
  try {
    await fetch("/logout", { method: "POST", credentials: "same-origin" });
  } finally {
    window.location.assign("/login");
  }
}

async function showUser() {
  let user;
  try { user = await me(); } catch (_) { return; }
  if (!user || !user.name) return;   // no --users: nobody to show
  const bar = document.querySelector(".topbar");
  const box = document.createElement("div");
  box.className = "session";
  const name = document.createElement("span");
  name.id = "session-user";
  name.textContent = `${user.name} (${user.role})`;
  const button = document.createElement("button");
  button.type = "button";
  button.id = "logout";
  button.textContent = "Log out";
  button.addEventListener("click", logout);
  box.append(name, " ", button);
  bar.append(box);
  setInterval(() => { me().catch(() => {}); }, CHECK_MS);
}

export function installSession() {
  showUser();
}
