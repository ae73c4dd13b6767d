"""
The dashboard's share of errors a person can act on, in headless Chromium
on a real web role: the detail view's axis labels are drawn whole, and a
card says which analyzer set its host's level.
"""

import time

from browsersupport import pastAnalysis, publish, waitUntil
from support import freePort


def _analysis(host, seq, ts, rx, analyses, level):
    analysis = pastAnalysis(host, seq, ts, 20.0)
    analysis["metrics"]["net_io"]["bytes_recv_per_s"] = rx
    analysis["analyses"] = analyses
    analysis["level"] = level
    return analysis


USAGE_LOW = {"status": "ok", "checks": {"cpu": {"level": "LOW", "value": 20.0},
                                        "memory": {"level": "LOW", "value": 30.0}}}
DISK_HIGH = {"status": "ok", "level": "HIGH", "checks": {"/": {"level": "HIGH", "value": 97.0}}}
SWAP_HIGH = {"status": "ok", "checks": {"swap": {"level": "HIGH", "value": 90.0}}}
BROKEN = {"status": "error", "error": "RuntimeError: broken"}


def _axisLabels(driver, chart):
    """
    Each y label of a detail chart: its text, whether its drawn box lies
    inside the chart (CSS pixels, as laid out), and its width as drawn
    against the width its text needs.
    """
    return driver.execute_script("""
        const svg = document.getElementById(arguments[0]);
        const box = svg.getBoundingClientRect();
        return [...svg.querySelectorAll('text.y-label')].map((t) => {
          const r = t.getBoundingClientRect();
          const whole = t.getNumberOfChars() ? t.getSubStringLength(0, t.getNumberOfChars()) : 0;
          const first = t.getNumberOfChars() ? t.getStartPositionOfChar(0).x : 0;
          return {text: t.textContent, inside: r.left >= box.left - 0.5 && r.right <= box.right + 0.5,
                  firstX: first, measured: t.getComputedTextLength(), whole: whole};
        });""", chart)


def test_axis_labels_are_whole_and_a_card_names_the_analyzer_that_set_its_level(
        broker, amqp, processes, browser):
    from selenium.webdriver.common.by import By

    port = freePort()
    exchange = amqp.names["exchange"]
    web = processes("browser-errors-web", "--role=web", f"--broker={broker}",
                    f"--exchange={exchange}", f"--port={port}", "--interface=127.0.0.1")
    web.waitFor(b"dashboard listening")
    web.waitFor(b"consuming #.analysis")
    now = time.time()
    # 488 KiB/s (and more): labels far wider than the old fixed 44-unit margin.
    publish(broker, exchange, [
        ("wide_example.analysis", _analysis(
            "wide.example", seq, now - 30 + seq, 500_000.0 + 1000 * seq,
            {"usage": USAGE_LOW, "disk": DISK_HIGH, "swap": SWAP_HIGH, "broken": BROKEN}, "HIGH"))
        for seq in range(30)] + [
        ("calm_example.analysis", _analysis(
            "calm.example", 1, now, 10.0, {"usage": USAGE_LOW, "broken": BROKEN}, "LOW"))])

    browser.get(f"http://127.0.0.1:{port}/")
    card = "return document.querySelector(`.host-card[data-host='${arguments[0]}'] .set-by`)"
    waitUntil(lambda: browser.execute_script(card + "?.textContent", "wide.example"), 10,
              "the card of wide.example to say who set its level")
    # The worst level's analyzers, both of them (one by its level, one by its check's).
    assert browser.execute_script(card + ".textContent", "wide.example") == "HIGH set by disk, swap"
    assert browser.execute_script(card + ".hidden", "wide.example") is False
    assert browser.execute_script(card + ".offsetParent !== null", "wide.example")
    label = browser.find_element(By.CSS_SELECTOR, ".host-card[data-host='wide.example']")
    assert "set by disk and swap" in label.get_attribute("aria-label")
    waitUntil(lambda: browser.execute_script(card + "?.textContent", "calm.example"), 10,
              "the card of calm.example")
    assert browser.execute_script(card + ".textContent", "calm.example") == "LOW set by usage"

    browser.find_element(By.CSS_SELECTOR, ".host-card[data-host='wide.example']").click()
    detail = browser.find_element(By.ID, "detail")
    waitUntil(lambda: detail.get_attribute("data-history") == "full", 10, "the history reply")
    labels = waitUntil(lambda: (lambda ls: ls if len(ls) == 3 else None)(
        _axisLabels(browser, "chart-net")), 5, "the network chart's three y labels")
    texts = [label["text"] for label in labels]
    assert texts[2].endswith("KiB/s") and float(texts[2].split()[0]) >= 500, texts
    for label in labels:
        # Drawn whole: inside the chart, starting at or right of its left edge.
        assert label["inside"], (label, labels)
        assert label["firstX"] >= 0, label
        assert abs(label["measured"] - label["whole"]) < 0.5, label
    # The plot starts right of the widest label: the lines and labels do not overlap.
    plotLeft = browser.execute_script(
        "return Math.min(...[...document.querySelectorAll('#chart-net line.grid')]"
        ".map(l => Number(l.getAttribute('x1'))))")
    widest = max(label["measured"] for label in labels)
    assert plotLeft >= widest + 4, (plotLeft, widest)
