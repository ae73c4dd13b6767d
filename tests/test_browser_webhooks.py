"""
The dashboard's webhooks panel in a real browser (headless Chromium): it
lists the hooks of a real standalone process with their state and last
delivery, registers one (showing the refusal of a bad key, then the
secret) and unregisters it.
"""

import http.server
import json
import urllib.request

import pytest

from browsersupport import servedInThread, waitUntil
from support import freePort


@pytest.fixture
def receiver():
    """
    A plain HTTP receiver on loopback, in a thread: the bodies it got.
    """
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    with servedInThread(Handler) as server:
        server.received = received
        server.url = server.baseURL + "hook"
        yield server


def rowTexts(driver):
    """
    The first four cells of each row of the list, or C{None} while a refresh
    is in flight (its answer replaces the rows, and every element in them).
    """
    return driver.execute_script(
        "const rows = document.getElementById('webhooks-rows');"
        "if (rows.getAttribute('aria-busy') === 'true') return null;"
        "return [...rows.querySelectorAll('tr')].map(tr => "
        "[...tr.querySelectorAll('td')].slice(0, 4).map(td => td.textContent));")


def test_webhooks_panel_registers_lists_and_unregisters(  # noqa: F811 (fixtures)
        processes, browser, receiver, tmp_path):
    from selenium.webdriver.common.by import By

    port = freePort()
    server = processes("browser-webhooks", f"--port={port}", "--interface=127.0.0.1",
                       f"--state-dir={tmp_path}", "--webhook-allow-private", "--interval=0.5")
    server.waitFor(b"dashboard listening")
    server.waitFor(b"now delivers webhooks")
    browser.get(f"http://127.0.0.1:{port}/")
    panel = browser.find_element(By.ID, "webhooks")
    assert panel.get_attribute("hidden") is not None
    browser.find_element(By.ID, "webhooks-open").click()
    waitUntil(lambda: panel.is_displayed(), 5, "the panel to open")
    waitUntil(lambda: browser.find_element(By.ID, "webhooks-empty").is_displayed(), 5,
              "the empty list")

    form = browser.find_element(By.ID, "webhooks-form")
    form.find_element(By.NAME, "key").send_keys("bad..key")
    form.find_element(By.NAME, "url").send_keys(receiver.url)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    message = browser.find_element(By.ID, "webhooks-message")
    waitUntil(lambda: message.text.startswith("key:"), 5, "the refusal naming the key")

    key = form.find_element(By.NAME, "key")
    key.clear()
    key.send_keys("*.measure")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    waitUntil(lambda: "secret" in message.text, 5, "the secret shown once")
    waitUntil(lambda: rowTexts(browser) and rowTexts(browser)[0][:3] == [
        "*.measure", receiver.url, "active"], 5, "the hook listed")

    waitUntil(lambda: receiver.received, 15, "a delivery of this machine's measures")
    assert receiver.received[0]["key"].endswith(".measure")

    def lastDeliveryShown():
        browser.find_element(By.ID, "webhooks-refresh").click()
        waitUntil(lambda: rowTexts(browser) is not None, 5, "the refresh's answer")
        rows = rowTexts(browser)
        return rows and rows[0][3].startswith("204")
    waitUntil(lastDeliveryShown, 15, "the last delivery in the list")

    browser.find_element(By.CSS_SELECTOR, "#webhooks-rows .webhook-delete").click()
    waitUntil(lambda: rowTexts(browser) == [], 5, "the hook gone from the list")
    assert browser.find_element(By.ID, "webhooks-empty").is_displayed()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/webhooks", timeout=10) as answer:
        assert json.load(answer) == {"webhooks": []}


def test_webhooks_panel_shows_the_latest_refresh_when_answers_cross(  # noqa: F811 (fixtures)
        processes, browser, receiver, tmp_path):
    """
    A slow answer to an earlier refresh, coming back after the refresh an
    unregister makes, does not bring the unregistered hook back on screen.
    """
    from selenium.webdriver.common.by import By

    port = freePort()
    server = processes("browser-webhooks-order", f"--port={port}", "--interface=127.0.0.1",
                       f"--state-dir={tmp_path}", "--webhook-allow-private")
    server.waitFor(b"dashboard listening")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/webhooks", method="POST",
        data=json.dumps({"key": "*.measure", "url": receiver.url}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 201
    browser.get(f"http://127.0.0.1:{port}/")
    browser.find_element(By.ID, "webhooks-open").click()
    waitUntil(lambda: rowTexts(browser) and len(rowTexts(browser)) == 1, 5, "the hook listed")

    # The next list asked for is answered, and then held in the page until
    # the test lets it through.
    browser.execute_script("""
        const realFetch = window.fetch;
        window.heldAnswers = [];
        let holdNext = true;
        window.fetch = async (path, options) => {
          const answer = await realFetch(path, options);
          if (holdNext && (!options || options.method === "GET")) {
            holdNext = false;
            await new Promise(resolve => window.heldAnswers.push(resolve));
            // Done once the page has read this answer and acted on it.
            const json = answer.json.bind(answer);
            answer.json = async () => {
              const data = await json();
              setTimeout(() => { window.heldAnswerRead = true; }, 0);
              return data;
            };
          }
          return answer;
        };""")
    browser.find_element(By.ID, "webhooks-refresh").click()
    waitUntil(lambda: browser.execute_script("return window.heldAnswers.length") == 1, 5,
              "the refresh's answer held")
    browser.find_element(By.CSS_SELECTOR, "#webhooks-rows .webhook-delete").click()
    message = browser.find_element(By.ID, "webhooks-message")
    waitUntil(lambda: message.text == "Unregistered.", 5, "the hook unregistered")
    waitUntil(lambda: browser.execute_script(
        "return document.querySelectorAll('#webhooks-rows tr').length") == 0, 5,
        "the list emptied by the unregister's refresh")

    browser.execute_script("window.heldAnswers[0]();")
    waitUntil(lambda: browser.execute_script("return window.heldAnswerRead === true"), 5,
              "the page to read the held answer")
    assert rowTexts(browser) == []
    assert browser.find_element(By.ID, "webhooks-empty").is_displayed()
