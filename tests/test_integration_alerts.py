"""
The built-in alert rule in a real rules process on the real broker, with a
short `for` and `clear`: analyses published at HIGH fire an alert no sooner
than `for` seconds later, analyses at LOW resolve it no sooner than `clear`
seconds later, and both reach an SSE client of a real web process.
"""

import json
import time

import pytest_twisted
from twisted.internet import reactor, task
from twisted.web.client import Agent, readBody

from resmon import wire
from support import PlainAMQPClient, freePort
from test_web_integration import SSEReader

FOR, CLEAR = 1.5, 1.0


def analysis(seq, level):
    return json.dumps({
        "v": 1, "kind": "analysis", "host": "alerted.host", "seq": seq, "ts": time.time(),
        "interval": 0.2, "analyzed_at": time.time(), "level": level, "levels": {"cpu": level},
        "cpu_result": level, "analyses": {}, "metrics": {}}).encode()


@pytest_twisted.inlineCallbacks
def getJSON(port, path):
    response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}{path}".encode())
    body = yield readBody(response)
    return response.code, json.loads(body)


@pytest_twisted.inlineCallbacks
def test_an_alert_fires_and_resolves_with_its_timing(broker, amqp, twistd):
    names = amqp.names
    common = [f"--broker={broker}", f"--exchange={names['exchange']}"]
    queue = f"--queue={names['queue']}"
    port = freePort()
    web = twistd("alerts-web", "--role=web", *common, f"--port={port}", "--interface=127.0.0.1")
    rules = twistd("alerts-rules", "--role=rules", *common, queue, "--rules=alert",
                   f"--rule-option=alert.for={FOR}", f"--rule-option=alert.clear={CLEAR}")
    yield web.waitForOutput(b"ready: on")
    yield rules.waitForOutput(b"ready: on")
    response = yield Agent(reactor).request(
        b"GET", f"http://127.0.0.1:{port}/api/stream?events=alert&history=0".encode())
    stream = SSEReader()
    response.deliverBody(stream)
    yield stream.waitFor(lambda events: events, 5, "the snapshot")

    client = PlainAMQPClient(broker)
    yield client.connect()
    seq = iter(range(1, 10_000))
    level = ["HIGH"]

    def publish():
        return client.publish(names["exchange"], "alerted_host.analysis",
                              analysis(next(seq), level[0]))
    sender = task.LoopingCall(publish)
    try:
        started = time.time()
        sender.start(0.1)

        def alerts(state):
            return lambda events: [e for kind, e in events
                                   if kind == "alert" and e["payload"]["state"] == state]
        yield stream.waitFor(alerts("firing"), 10, "the firing alert")
        fired = time.time()
        [firing] = alerts("firing")(stream.events)
        assert fired - started >= FOR
        assert firing["source"] == "alerted_host" and firing["chain"]["rules"] == ["alert"]
        payload = firing["payload"]
        assert (payload["host"], payload["check"], payload["level"]) == ("alerted.host", "cpu", "HIGH")
        assert started - 0.5 <= payload["since"] <= started + 0.5

        code, firingNow = yield getJSON(port, "/api/alerts")
        assert code == 200 and firingNow == {"alerts": [firing]}

        level[0] = "LOW"
        lowered = time.time()
        yield stream.waitFor(alerts("resolved"), 10, "the resolved alert")
        assert time.time() - lowered >= CLEAR
        [resolved] = alerts("resolved")(stream.events)
        assert resolved["payload"]["check"] == "cpu" and resolved["payload"]["level"] == "LOW"
        assert len(alerts("firing")(stream.events)) == 1
        code, firingNow = yield getJSON(port, "/api/alerts")
        assert firingNow == {"alerts": []}
        code, recent = yield getJSON(port, "/api/events")
        assert recent == {"events": [firing, resolved]}
        code, recent = yield getJSON(port, f"/api/events?since={firing['ts']}")
        assert recent == {"events": [resolved]}
    finally:
        sender.stop()
        yield client.close()
    for process in (web, rules):
        assert b"Traceback" not in process.output, process.logPath
    # Every alert is a valid event envelope.
    for kind, event in stream.events[1:]:
        wire.decodeEventEnvelope(f"{event['source']}.alert", json.dumps(event).encode())
