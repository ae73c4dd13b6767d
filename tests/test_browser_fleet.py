"""
The dashboard at fleet size in the real browser (headless Chromium): 2,000
hosts into a real C{--role=web}, sorted by CPU. The grid is virtualised:
the page is as tall as the whole fleet, but only the cards in and near the
viewport exist; what a person sees there is checked, not the DOM's order.
"""

import math
import os
import random
import re
import time
import urllib.request

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from browsersupport import (
    ARTIFACTS, cardCount, cardText, hostCount, hostsInView, orderChanges, pastAnalysis,
    publish, recordOrderInView, scrollToCard, startedServer, startPublishing, waitUntil)

FLEET = 2000


def analyses(fleet, cpu, seq, ts):
    return [(host.replace(".", "_") + ".analysis", pastAnalysis(host, seq, ts, cpu[host]))
            for host in fleet]


def byCPU(fleet, cpu):
    """The order the page shows: highest CPU first, then by name."""
    return sorted(fleet, key=lambda host: (-cpu[host], host))


def test_a_fleet_of_2000_hosts_sorted_by_cpu_shows_the_cards_in_view_live(
        broker, amqp, processes, browser):
    exchange = amqp.names["exchange"]
    web, port, _ = startedServer(processes, "browser-fleet2k-web", broker, amqp, role="web")
    browser.get(f"http://127.0.0.1:{port}/")
    Select(browser.find_element(By.ID, "sort")).select_by_value("cpu")
    waitUntil(lambda: "live" in browser.find_element(By.ID, "connection").text, 10, "the page to go live")

    rng = random.Random(16)
    fleet = [f"host{n:04d}.fleet.example" for n in range(FLEET)]
    first = {host: round(rng.uniform(0, 100), 1) for host in fleet}
    # 150 hosts, then 1,850 new ones within a second or two: with more than 100 hosts they take
    # their places at most once a second too (a smaller fleet re-orders every 250 ms).
    publish(broker, exchange, analyses(fleet[:150], first, 1, time.time()))
    waitUntil(lambda: hostCount(browser) == 150, 10, "150 hosts")
    recordOrderInView(browser)
    publish(broker, exchange, analyses(fleet[150:], first, 1, time.time()))
    expected = byCPU(fleet, first)
    waitUntil(lambda: hostCount(browser) == FLEET, 20, "2,000 hosts")
    # The page asked for batches (/ws?batch=1): hosts that came at once came in few messages.
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    batches = re.search(r'^resmon_web_events_total\{event="batches"\} (\S+)$', metrics, re.M)
    assert batches and float(batches.group(1)) >= 1, metrics[:2000]
    # The top of the page: the busiest hosts, in order, as soon as the grid re-orders.
    waitUntil(lambda: (lambda seen: len(seen) >= 8 and seen == expected[:len(seen)])(hostsInView(browser)),
              5, "the busiest hosts first")
    arrivals = orderChanges(browser)
    assert len(arrivals) >= 1
    assert min([b - a for a, b in zip(arrivals, arrivals[1:])], default=1000) >= 900, arrivals
    # Far fewer cards than hosts, but a page as tall as the whole fleet.
    assert cardCount(browser) <= 100
    seen = hostsInView(browser)
    perRow = browser.execute_script(
        "const tops = [...document.querySelectorAll('#hosts .host-card')]"
        ".map((c) => Math.round(c.getBoundingClientRect().top));"
        "return tops.filter((t) => t === Math.min(...tops)).length;")
    assert 1 <= perRow <= len(seen)
    # A row: a card's height and the gap below it, as the page's style sheet sets them.
    rowHeight = browser.execute_script(
        "const css = getComputedStyle(document.getElementById('hosts'));"
        "return parseFloat(css.getPropertyValue('--card-height'))"
        " + parseFloat(css.getPropertyValue('--card-gap'));")
    assert rowHeight > 100
    # Hosts that came after the last re-order take their places at the next one (at most a
    # second later): until then the page is as tall as the hosts placed.
    waitUntil(lambda: browser.execute_script("return document.documentElement.scrollHeight")
              >= math.ceil(FLEET / perRow) * rowHeight - 20, 3, "a page as tall as the whole fleet")

    # Every host again, with new values, over about 3 s: the values in view change live, the
    # order at most once a second.
    second = {host: round(rng.uniform(0, 100), 1) for host in fleet}
    stream = []
    for batch in range(30):
        stream += analyses(fleet[batch::30], second, 2, time.time() + 1)
        stream.append(0.1)
    expected = byCPU(fleet, second)
    recordOrderInView(browser)
    publisher = startPublishing(broker, exchange, stream)
    try:
        publisher.wait(30)
    finally:
        publisher.kill()
    assert publisher.returncode == 0
    waitUntil(lambda: (lambda seen: len(seen) >= 8 and seen == expected[:len(seen)])(hostsInView(browser)),
              5, "the new busiest hosts first")
    view = browser.execute_script("return window.__view")
    gaps = [b - a for a, b in zip(view["orders"], view["orders"][1:])]
    assert len(view["orders"]) >= 2, view
    assert min(gaps) >= 900, gaps
    assert len(view["values"]) >= 5, view      # values changed in frames where the order held
    for host in hostsInView(browser)[:8]:
        assert cardText(browser, host, ".cpu-value") == f"{second[host]:.1f} %"

    # Scrolled to, a host in the middle of the fleet shows its latest values among its neighbours.
    rank = 1234
    target = expected[rank]
    assert scrollToCard(browser, target, rank / FLEET)
    assert cardText(browser, target, ".cpu-value") == f"{second[target]:.1f} %"
    assert cardText(browser, target, ".host-name") == target
    seen = hostsInView(browser)
    assert target in seen
    start = expected.index(seen[0])
    assert seen == expected[start:start + len(seen)]
    assert cardCount(browser) <= 100
    os.makedirs(ARTIFACTS, exist_ok=True)
    browser.save_screenshot(os.path.join(ARTIFACTS, "dashboard-fleet.png"))

    # Its detail view, from a click; Esc gives the focus back to its card, and Tab goes on to the
    # next host in the grid's order.
    browser.find_element(By.CSS_SELECTOR, f".host-card[data-host='{target}']").click()
    detail = browser.find_element(By.ID, "detail")
    waitUntil(lambda: detail.get_attribute("hidden") is None, 5, "the detail view to open")
    assert browser.find_element(By.ID, "detail-title").text == target
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    waitUntil(lambda: detail.get_attribute("hidden") is not None, 5, "Esc to close the detail view")
    assert browser.switch_to.active_element.get_attribute("data-host") == target
    browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("data-host") == expected[rank + 1]
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    waitUntil(lambda: detail.get_attribute("hidden") is None, 5, "the detail view from the keyboard")
    assert browser.find_element(By.ID, "detail-title").text == expected[rank + 1]
    browser.find_element(By.ID, "detail-close").click()

    # The filter: only matching hosts, still by CPU, from the top of a shorter page.
    browser.find_element(By.ID, "filter").send_keys("host19")
    matching = [host for host in expected if "host19" in host]
    browser.execute_script("window.scrollTo(0, 0)")
    waitUntil(lambda: (lambda seen: len(seen) >= 8 and seen == matching[:len(seen)])(hostsInView(browser)),
              5, "the busiest of the hosts matching the filter first")
    assert hostCount(browser) == FLEET
    assert browser.execute_script("return document.documentElement.scrollHeight") < \
        math.ceil(FLEET / perRow) * rowHeight

    # The other controls act at once too: sorted by name, then a level no host has.
    Select(browser.find_element(By.ID, "sort")).select_by_value("name")
    byName = sorted(matching)
    waitUntil(lambda: (lambda seen: len(seen) >= 8 and seen == byName[:len(seen)])(hostsInView(browser)),
              5, "the matching hosts by name")
    Select(browser.find_element(By.ID, "level-filter")).select_by_value("HIGH")
    waitUntil(lambda: hostsInView(browser) == [], 5, "no card for a level no host has")
    assert browser.find_element(By.ID, "empty").text == "No host matches the filter."
