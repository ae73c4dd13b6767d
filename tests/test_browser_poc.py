"""
The dashboard in headless Chromium next to a proof-of-concept analyzer: the
card of a host whose analyses come from it shows their level and says they
come from a legacy analyzer.
"""

from pocclients import PocAnalyzer, PocTracker, deleteExchange
from browsersupport import cardText, waitUntil
from support import freePort, uniqueName


def test_a_poc_analyzers_analyses_show_on_the_card_marked_legacy(broker, processes, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    exchange = uniqueName("resmon.test.poc")
    modules = []
    try:
        port = freePort()
        web = processes("poc-browser-web", "--role=web", f"--broker={broker}", f"--exchange={exchange}",
                        "--exchange-durable=no", f"--port={port}", "--interface=127.0.0.1")
        web.waitFor(b"consuming #.analysis")
        for module in (PocAnalyzer(broker, exchange), PocTracker(broker, exchange, "poc-card", cpu=90.0)):
            modules.append(module)
            module.start()
            assert module.ready.wait(10) and module.error is None, module.error
        browser.get(f"http://127.0.0.1:{port}/")
        waitUntil(lambda: "live" in browser.find_element(By.ID, "connection").text, 10, "the page to go live")
        waitUntil(lambda: cardText(browser, "poc-card", ".cpu-level") == "HIGH", 10,
                  "the card of the PoC-analysed host with its level")
        card = browser.execute_script(
            "const c = document.querySelector(`.host-card[data-host='poc-card']`);"
            "return [c.dataset.level, c.dataset.analyzer, c.getAttribute('aria-label'),"
            " getComputedStyle(c.querySelector('.host-name'), '::after').content];")
        assert card[:2] == ["HIGH", "legacy"]
        assert "from a legacy analyzer" in card[2]
        assert "legacy analyzer" in card[3]
    finally:
        for module in modules:
            module.stop()
        deleteExchange(broker, exchange)
