"""
Logging in to the dashboard in a real browser (headless Chromium) against a
real C{twistd resmon --users ...}: the login page, a wrong password, the
dashboard once logged in, logout; and a page of another origin that cannot
make the logged-in browser act.
"""

import http.server
import re

import pytest

from browsersupport import servedInThread, waitUntil
from support import freePort
from test_integration_auth import users


@pytest.fixture
def otherOrigin():
    """
    A page of another origin (same address, another port: same site, so a
    SameSite=Strict cookie still goes along; only the origin check stops
    it), serving the page given to its C{page}.
    """
    pages = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get("page", "").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with servedInThread(Handler) as server:
        server.pages = pages
        server.url = server.baseURL
        yield server


def test_login_dashboard_logout_and_no_cross_site_action(  # noqa: F811 (fixtures)
        processes, browser, otherOrigin, tmp_path):
    from selenium.webdriver.common.by import By

    path = tmp_path / "users.toml"
    assert users(path, "add", "olga", "--role=operator", "--hosts=#",
                 password="olga-password").returncode == 0
    port = freePort()
    server = processes("browser-auth", f"--port={port}", "--interface=127.0.0.1", "--name=solo",
                       f"--users={path}", "--interval=0.5")
    server.waitFor(b"dashboard listening")
    dashboard = f"http://127.0.0.1:{port}/"

    browser.get(dashboard)
    waitUntil(lambda: browser.current_url.endswith("/login"), 10, "the login page")
    form = browser.find_element(By.ID, "login-form")
    form.find_element(By.NAME, "name").send_keys("olga")
    form.find_element(By.NAME, "password").send_keys("not-her-password")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    error = browser.find_element(By.ID, "login-error")
    waitUntil(lambda: error.is_displayed() and error.text == "wrong user name or password", 10,
              "the wrong password's message")
    assert browser.current_url.endswith("/login")

    password = form.find_element(By.NAME, "password")
    password.clear()
    password.send_keys("olga-password")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    waitUntil(lambda: browser.current_url == dashboard, 10, "the dashboard")
    waitUntil(lambda: browser.find_elements(By.CSS_SELECTOR, ".host-card[data-host='solo']"), 15,
              "this machine's card")
    waitUntil(lambda: browser.find_element(By.ID, "session-user").text == "olga", 5,
              "the user's name")
    # The session cookie is out of the page's reach.
    assert "resmon_session" not in browser.execute_script("return document.cookie")

    # A page of another origin posts with the browser's cookie: refused.
    otherOrigin.pages["page"] = f"""<!doctype html><body>
<form id="f" method="post" action="{dashboard}api/events/crosssite" enctype="text/plain">
<input name='{{"a":"' value='"}}'></form>
<script>
fetch("{dashboard}api/events/crossfetch", {{method: "POST", mode: "no-cors",
  credentials: "include", body: "{{}}"}}).finally(() => document.getElementById("f").submit());
</script></body>"""
    browser.get(otherOrigin.url)

    def answered(source):
        found = re.search(rb'"POST /api/events/' + source + rb' HTTP/1\.1" (\d+)', server.output())
        return found and int(found.group(1))
    assert waitUntil(lambda: answered(b"crossfetch"), 10, "the cross-site fetch") == 403
    assert waitUntil(lambda: answered(b"crosssite"), 10, "the cross-site form") == 403

    browser.get(dashboard)
    logout = waitUntil(lambda: browser.find_element(By.ID, "logout"), 10, "the logout button")
    logout.click()
    waitUntil(lambda: browser.current_url.endswith("/login"), 10, "the login page after logout")
    browser.get(dashboard)
    waitUntil(lambda: browser.current_url.endswith("/login"), 10, "the login page again")
    assert b"user olga logged out" in server.output()


def logIn(browser, dashboard, name, password):
    from selenium.webdriver.common.by import By
    browser.get(dashboard)
    waitUntil(lambda: browser.current_url.endswith("/login"), 10, "the login page")
    form = browser.find_element(By.ID, "login-form")
    form.find_element(By.NAME, "name").send_keys(name)
    form.find_element(By.NAME, "password").send_keys(password)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    waitUntil(lambda: browser.current_url == dashboard, 10, "the dashboard")


def test_an_expired_session_goes_back_to_the_login_page(  # noqa: F811 (fixtures)
        processes, browser, tmp_path):
    from selenium.webdriver.common.by import By

    path = tmp_path / "users.toml"
    assert users(path, "add", "olga", "--hosts=#", password="olga-password").returncode == 0
    port = freePort()
    server = processes("browser-auth-expiry", f"--port={port}", "--interface=127.0.0.1",
                       "--name=solo", f"--users={path}", "--session-lifetime=4")
    server.waitFor(b"dashboard listening")
    dashboard = f"http://127.0.0.1:{port}/"
    logIn(browser, dashboard, "olga", "olga-password")
    waitUntil(lambda: browser.find_elements(By.CSS_SELECTOR, ".host-card[data-host='solo']"), 15,
              "this machine's card")
    # The socket closes (1008) at the expiry; the page then finds the session gone.
    waitUntil(lambda: browser.current_url.endswith("/login"), 8, "the login page at the expiry")
