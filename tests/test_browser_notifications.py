"""
Notifications in the real browser (headless Chromium) against a real
`twistd resmon --role=web --users`: alice logs in on the login page and
sees only her hosts; an operator's POST /api/notify to her shows as a toast
within seconds and joins the page's list; one to another user never shows;
after a reload the list still holds hers (kept by the web role, sent at
connect).
"""

import json
import os
import time
import urllib.request

from resmon.auth import passwords
from resmon.auth.usersfile import Token, User, Users, writeUsers
from browsersupport import publish, startedServer, visibleHosts, waitUntil

PASSWORD = "correct horse battery staple"


def _notify(port, token, document):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/notify", data=json.dumps(document).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
        method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202


def _analysis(host, seq):
    now = time.time()
    return {"v": 1, "kind": "analysis", "host": host, "seq": seq, "ts": now, "interval": 1.0,
            "analyzed_at": now, "level": "LOW", "levels": {"cpu": "LOW", "memory": "LOW"},
            "metrics": {"cpu": {"percent": 12.0, "per_core": [12.0]},
                        "memory": {"total": 100, "used": 30, "available": 70, "percent": 30.0}}}


def toasts(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#toasts .toast')].map(t => t.textContent)")


def listed(driver):
    return driver.execute_script(
        "const b = document.getElementById('notify-open');"
        "return {shown: !b.hidden, count: b.querySelector('.n').textContent,"
        " items: [...document.querySelectorAll('#notify-list .notification')].map(n => n.textContent)}")


def test_a_notification_shows_as_a_toast_for_its_user_only_and_again_after_a_reload(
        broker, amqp, processes, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    operatorToken = passwords.newToken()
    token = Token("ops1", passwords.tokenDigest(operatorToken), 1.0, "test")
    path = os.path.join(str(tmp_path), "users.toml")
    writeUsers(path, Users([
        User("alice", passwords.hashPassword(PASSWORD), "viewer", ("web-01",), ("ops",)),
        User("olga", None, "operator", ("#",), (), {token.id: token})]))
    server, port, common = startedServer(processes, "notify-browser-web", broker, amqp,
                                         f"--users={path}", f"--state-dir={tmp_path / 'state'}",
                                         role="web")
    publish(broker, amqp.names["exchange"], [
        ("web-01.analysis", _analysis("web-01", 1)), ("db-01.analysis", _analysis("db-01", 1))])

    browser.get(f"http://127.0.0.1:{port}/")
    waitUntil(lambda: browser.find_elements(By.ID, "login-form"), 10, "the login page")
    browser.find_element(By.ID, "login-name").send_keys("alice")
    browser.find_element(By.ID, "login-password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-submit").click()
    waitUntil(lambda: "live" in browser.find_element(By.ID, "connection").text, 15, "the page to go live")
    waitUntil(lambda: visibleHosts(browser) == ["web-01"], 10, "alice's one host")
    assert toasts(browser) == [] and not listed(browser)["shown"]

    _notify(port, operatorToken, {"user": "olga", "title": "not for alice"})
    _notify(port, operatorToken, {"user": "alice", "title": "disk almost full",
                                  "text": "web-01: /var at 91 %", "level": "warning"})
    started = time.monotonic()
    waitUntil(lambda: any("disk almost full" in t for t in toasts(browser)), 5, "alice's toast")
    elapsed = time.monotonic() - started
    shown = toasts(browser)
    assert len(shown) == 1 and "web-01: /var at 91 %" in shown[0], shown
    assert browser.find_element(By.CSS_SELECTOR, "#toasts .toast").is_displayed()
    assert listed(browser)["count"] == "1"
    assert "not for alice" not in browser.page_source and "db-01" not in visibleHosts(browser)

    browser.refresh()
    waitUntil(lambda: "live" in browser.find_element(By.ID, "connection").text, 15,
              "the page to go live again")
    waitUntil(lambda: listed(browser)["count"] == "1", 10, "the kept notification in the list")
    assert listed(browser)["shown"]
    browser.find_element(By.ID, "notify-open").click()
    waitUntil(lambda: browser.find_element(By.ID, "notify-panel").is_displayed(), 5, "the list")
    assert any("disk almost full" in item for item in listed(browser)["items"])
    assert "not for alice" not in browser.page_source
    print(f"toast shown {elapsed:.2f} s after the POST was answered")
