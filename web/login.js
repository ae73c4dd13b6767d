// The login page: posts the name and password, then opens the dashboard.
const form = document.getElementById("login-form");
const error = document.getElementById("login-error");

function show(text) {
  error.textContent = text;
  error.hidden = false;
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const button = document.getElementById("login-submit");
  button.disabled = true;
  error.hidden = true;
  try {
    const response = await fetch("/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({
        name: document.getElementById("login-name").value,
        password: document.getElementById("login-password").value,
      }),
    });
    if (response.ok) {
      window.location.assign("/");
      return;
    }
    let text = `login failed (${response.status})`;
    try { text = (await response.json()).error || text; } catch (_) { /* not JSON */ }
    show(text);
  } catch (_) {
    show("the dashboard cannot be reached");
  } finally {
    button.disabled = false;
  }
});
