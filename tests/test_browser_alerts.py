"""
The dashboard's alert panel in the real browser (headless Chromium): alerts
emitted by a rule in a real rules process on the real broker appear live in
the panel, in the top bar's count and on the host's card, leave them when
resolved, survive a reload (the snapshot carries them), and the recent
events list shows what came.
"""

import json
import os
import time
import urllib.request

from browsersupport import cardText, waitUntil
from support import freePort

RULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rules")


def post(port, source, document):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/events/{source}", data=json.dumps(document).encode(),
        headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202


def panel(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#alerts-list .alert-item')]"
        ".map(li => li.textContent)")


def cardAlerts(driver, host):
    return driver.execute_script(
        "const c = document.querySelector(`.host-card[data-host='${arguments[0]}']`);"
        "const box = c && c.querySelector('.card-alerts');"
        "if (!box || box.hidden) return [];"
        "return [...box.querySelectorAll('.alert-item')].map(li => li.dataset.check);",
        host)


def alertCount(driver):
    return driver.execute_script(
        "const c = document.getElementById('alert-count');"
        "return c.hidden ? 0 : Number(c.querySelector('.n').textContent);")


def test_the_alert_panel_shows_firing_alerts_live(broker, amqp, processes, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    port = freePort()
    common = [f"--broker={broker}", f"--exchange={amqp.names['exchange']}"]
    server = processes("alerts-browser-server", "--role=server", *common,
                       f"--queue={amqp.names['queue']}", f"--port={port}", "--interface=127.0.0.1",
                       f"--rules-dir={RULES}", "--rules=alert-relay")
    server.waitFor(b"ready: on")
    server.waitFor(b"running rules alert-relay")
    processes("alerts-browser-agent", "--role=agent", *common, "--name=alpha.example",
              "--interval=0.5")
    browser.get(f"http://127.0.0.1:{port}/")
    waitUntil(lambda: "live" in browser.find_element(By.ID, "connection").text, 10, "the page to go live")
    waitUntil(lambda: cardText(browser, "alpha.example", ".cpu-value") not in (None, "–"), 10,
              "alpha's card")
    assert alertCount(browser) == 0 and panel(browser) == []
    assert browser.find_element(By.ID, "alerts-none").is_displayed()

    since = time.time() - 120
    post(port, "alerts", {"host": "alpha.example", "check": "cpu", "state": "firing",
                          "level": "HIGH", "since": since, "value": 97.0})
    post(port, "alerts", {"host": "alpha.example", "check": "/var", "state": "firing",
                          "level": "MEDIUM", "since": since, "value": 91.0})
    waitUntil(lambda: alertCount(browser) == 2, 10, "two firing alerts in the top bar")
    texts = panel(browser)
    assert len(texts) == 2 and all("alpha.example" in t for t in texts)
    assert "HIGH" in texts[1] and "cpu" in texts[1] and "since 2 min" in texts[1], texts
    waitUntil(lambda: cardAlerts(browser, "alpha.example") == ["cpu", "/var"], 10,
              "the alerts on alpha's card")
    assert not browser.find_element(By.ID, "alerts-none").is_displayed()
    # What the card shows fits in it: nothing is cut off at its bottom, with the
    # "set by" line, the facts and the alerts all there.
    shown = browser.execute_script(
        "const c = document.querySelector(`.host-card[data-host='alpha.example']`);"
        "const bottom = c.getBoundingClientRect().bottom - parseFloat(getComputedStyle(c).paddingBottom);"
        "return [...c.children].filter((e) => !e.hidden).map((e) => "
        "  [e.className, Math.round(e.getBoundingClientRect().bottom - bottom)]);")
    assert [name for name, _ in shown] == [
        "card-head", "metric metric-cpu", "metric metric-mem", "cores", "set-by", "facts",
        "card-alerts alerts-list"], shown
    assert all(overflow <= 0 for _, overflow in shown), repr(shown)

    # A reload: the snapshot carries the firing alerts and the recent events.
    browser.refresh()
    waitUntil(lambda: alertCount(browser) == 2, 10, "the alerts again after a reload")
    waitUntil(lambda: cardAlerts(browser, "alpha.example") == ["cpu", "/var"], 10,
              "the card's alerts after a reload")
    recent = browser.execute_script(
        "return [...document.querySelectorAll('#recent-events .recent-item')].map(li => li.textContent)")
    assert any(item.startswith("alpha_example.alert: alpha.example cpu firing") for item in recent), recent

    post(port, "alerts", {"host": "alpha.example", "check": "cpu", "state": "resolved",
                          "level": "LOW", "since": time.time(), "value": 5.0})
    waitUntil(lambda: alertCount(browser) == 1, 10, "the cpu alert resolved")
    waitUntil(lambda: cardAlerts(browser, "alpha.example") == ["/var"], 10, "the card's alert resolved")
    post(port, "alerts", {"host": "alpha.example", "check": "/var", "state": "resolved",
                          "level": "LOW", "since": time.time(), "value": 50.0})
    waitUntil(lambda: alertCount(browser) == 0 and panel(browser) == [], 10, "no alert left")
    # Cards are redrawn on their own schedule (at most a few times a second).
    waitUntil(lambda: cardAlerts(browser, "alpha.example") == [], 10, "no alert left on the card")
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
