"""
The dashboard in a real browser with odd data from the bus: a host back
from an offline status, a host whose agent clock went back. Served by a real
C{twistd resmon --role=web} on the real broker.
"""

import time

from browsersupport import cardText, pastAnalysis, publish, waitUntil
from support import freePort


def _cardStatus(driver, host):
    return driver.execute_script(
        "const c = document.querySelector(`.host-card[data-host='${arguments[0]}']`);"
        "return c ? c.dataset.status : null;", host)


def _status(host, state, seq):
    now = time.time()
    return {"v": 1, "kind": "status", "host": host, "status": state, "since": now,
            "last_seen": now - 40, "seq": seq}


def test_a_host_back_from_offline_and_a_host_whose_clock_went_back_stay_live(
        broker, amqp, processes, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    port = freePort()
    exchange = amqp.names["exchange"]
    web = processes("browser-forged-web", "--role=web", f"--broker={broker}",
                    f"--exchange={exchange}", f"--port={port}", "--interface=127.0.0.1")
    web.waitFor(b"dashboard listening")
    web.waitFor(b"consuming #.analysis")
    browser.get(f"http://127.0.0.1:{port}/")
    connection = browser.find_element(By.ID, "connection")
    waitUntil(lambda: "live" in connection.text, 10, "the page to go live")

    now = time.time()
    publish(broker, exchange, [
        ("phoenix.analysis", pastAnalysis("phoenix", 1, now - 2, 10.0)),
        ("phoenix.status", _status("phoenix", "offline", 1)),
        # An agent whose clock was 200 s ahead (within the skew), then set right.
        ("skewed.analysis", pastAnalysis("skewed", 1, now + 200, 11.0)),
    ])
    waitUntil(lambda: _cardStatus(browser, "phoenix") == "offline", 10, "phoenix shown offline")
    waitUntil(lambda: cardText(browser, "skewed", ".cpu-value") == "11.0 %", 10, "skewed's first value")

    publish(broker, exchange, [
        ("phoenix.analysis", pastAnalysis("phoenix", 2, now, 20.0)),
        ("skewed.analysis", pastAnalysis("skewed", 2, now + 1, 22.0)),
    ])
    waitUntil(lambda: _cardStatus(browser, "phoenix") == "online", 10, "phoenix back online")
    waitUntil(lambda: cardText(browser, "skewed", ".cpu-value") == "22.0 %", 10,
              "skewed's value after its clock went back")

    # A page opened now agrees: online from the snapshot, the latest value.
    browser.refresh()
    connection = browser.find_element(By.ID, "connection")
    waitUntil(lambda: "live" in connection.text, 10, "the reloaded page to go live")
    waitUntil(lambda: cardText(browser, "phoenix", ".cpu-value") == "20.0 %", 10, "phoenix's card")
    assert _cardStatus(browser, "phoenix") == "online"
    assert cardText(browser, "skewed", ".cpu-value") == "22.0 %"
    publish(broker, exchange, [("skewed.analysis", pastAnalysis("skewed", 3, now + 2, 33.0))])
    waitUntil(lambda: cardText(browser, "skewed", ".cpu-value") == "33.0 %", 10,
              "skewed's next value on the reloaded page")
