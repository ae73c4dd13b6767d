// Who the dashboard is logged in as (with --users, the login sets the
// resmon_user cookie): their name and a logout button in the top bar, and
// back to the login page once the session ends (checked every few seconds,
// and at once when the server closes the WebSocket with 1008). Without it, nothing.
const CHECK_MS = 10000;

function loggedInAs() {
  const found = document.cookie.split("; ").find((c) => c.startsWith("resmon_user="));
  return found ? decodeURIComponent(found.slice("resmon_user=".length)) : null;
}

async function stillLoggedIn() {
  const response = await fetch("/api/me", { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) window.location.assign("/login");
}

async function logout() {
  try {
    await fetch("/logout", { method: "POST", credentials: "same-origin" });
  } finally {
    window.location.assign("/login");
  }
}

export function installSession() {
  const user = loggedInAs();
  if (!user) return;
  const box = document.createElement("div");
  box.className = "session";
  const name = document.createElement("span");
  name.id = "session-user";
  name.textContent = user;
  const button = document.createElement("button");
  button.type = "button";
  button.id = "logout";
  button.textContent = "Log out";
  button.addEventListener("click", logout);
  box.append(name, " ", button);
  document.querySelector(".topbar").append(box);
  const check = () => { stillLoggedIn().catch(() => {}); };
  setInterval(check, CHECK_MS);
  window.addEventListener("resmon:policy-close", check);
}
