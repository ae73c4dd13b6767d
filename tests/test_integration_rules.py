"""
Events in, rules act, events out, end to end on the real broker: a web
process takes POST /api/events/<source>, a rules process runs drop-in rules
(tests/rules/chainrules.py), and what they emit reaches an SSE client of
/api/stream. A loop of two rules stops at --max-chain; a raising rule is
isolated; junk under *.event is rejected and counted.
"""

import json
import os
from io import BytesIO

import pytest_twisted
from twisted.internet import reactor
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from support import PlainAMQPClient, freePort, openEventStream

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = os.path.join(HERE, "rules")


def post(port, source, body, contentType=b"application/json"):
    return Agent(reactor).request(
        b"POST", f"http://127.0.0.1:{port}/api/events/{source}".encode(),
        Headers({b"content-type": [contentType]}), FileBodyProducer(BytesIO(body)))


@pytest_twisted.inlineCallbacks
def postJSON(port, source, body, contentType=b"application/json"):
    response = yield post(port, source, body, contentType)
    answer = yield readBody(response)
    return response.code, json.loads(answer), response.headers


@pytest_twisted.inlineCallbacks
def test_an_event_wakes_a_rule_whose_event_wakes_another_and_reaches_a_stream(broker, amqp, twistd):
    names = amqp.names
    common = [f"--broker={broker}", f"--exchange={names['exchange']}"]
    queue = f"--queue={names['queue']}"
    port = freePort()
    web = twistd("rules-web", "--role=web", *common, f"--port={port}", "--interface=127.0.0.1",
                 "--max-body=1024")
    metricsPort = freePort()
    rules = twistd("rules", "--role=rules", *common, queue, f"--rules-dir={RULES}",
                   "--rules=deploy,announce,ping,pong,raising", "--stats-interval=1",
                   f"--metrics-port={metricsPort}", "--interface=127.0.0.1")
    yield web.waitForOutput(b"ready: on")
    yield rules.waitForOutput(b"running rules deploy, announce, ping, pong, raising")
    yield rules.waitForOutput(b"ready: on")

    stream = yield openEventStream(port, "?events=event&history=0")
    yield stream.waitFor(lambda events: events, 5, "the snapshot")
    assert stream.events[0][1]["subscription"]["events"] == ["event"]

    # POST -> deploy -> deploys.deployed -> announce -> announce.event -> the stream.
    code, answer, _ = yield postJSON(port, "deploys", b'{"version": "1.2.3"}')
    assert code == 202 and len(answer["id"]) == 32

    def announced(events):
        return [e for kind, e in events if kind == "event" and e["source"] == "announce"]
    yield stream.waitFor(announced, 10, "the announce event on the stream")
    [announce] = announced(stream.events)
    assert announce["payload"] == {"announced": {"what": {"version": "1.2.3"}, "count": 1}}
    assert announce["chain"] == {"rules": ["deploy", "announce"], "depth": 2}
    assert announce["kind"] == "event" and announce["encoding"] == "json"
    [posted] = [e for kind, e in stream.events if kind == "event" and e["source"] == "deploys"]
    assert posted["id"] == answer["id"] and posted["payload"] == {"version": "1.2.3"}
    assert posted["chain"] == {"rules": [], "depth": 0}

    # Any payload: text, binary; a bad source; too large.
    code, answer, _ = yield postJSON(port, "cron%20job", b"backup done\n", b"text/plain")
    assert code == 202
    code, binary, _ = yield postJSON(port, "blobs", b"\xff\x00\xfe", b"application/octet-stream")
    assert code == 202

    def byId(wanted):
        return lambda events: [e for kind, e in events if e.get("id") == wanted]
    yield stream.waitFor(byId(answer["id"]), 10, "the text event")
    [text] = byId(answer["id"])(stream.events)
    assert (text["source"], text["encoding"], text["payload"]) == ("cron_job", "text", "backup done\n")
    yield stream.waitFor(byId(binary["id"]), 10, "the binary event")
    [blob] = byId(binary["id"])(stream.events)
    assert (blob["encoding"], blob["payload"]) == ("base64", "/wD+")
    code, refused, _ = yield postJSON(port, "...", b"{}")
    assert code == 400 and refused["source"] == "..." and "source" in refused["error"]
    response = yield post(port, "big", b"x" * 2000)
    assert response.code == 413
    yield readBody(response)

    # A loop of two rules stops at the chain limit (8).
    code, loop, _ = yield postJSON(port, "loop", b'{"go": true}')
    assert code == 202
    yield rules.waitForOutput(b"chain depth 9 is over --max-chain 8", timeout=10)

    def loopDepths(events):
        return sorted(e["chain"]["depth"] for kind, e in events
                      if kind == "event" and e["source"] == "loop")
    yield stream.waitFor(lambda events: loopDepths(events) == [0, 2, 4, 6, 8], 10,
                         "the loop's events up to depth 8")
    yield rules.waitForOutput(b"1 refused at the chain limit", timeout=5)

    # The raising rule failed on every event, was logged once, and stopped nothing.
    assert rules.output.count(b"rule raising failed (check-error)") == 1

    # Junk under *.event is rejected and counted; the rules keep running.
    client = PlainAMQPClient(broker)
    yield client.connect()
    try:
        yield client.publish(names["exchange"], "junk.event", b"not json")
        yield client.publish(names["exchange"], "junk.event", b'{"v": 1, "kind": "event", "source": "junk"}')
    finally:
        yield client.close()
    yield rules.waitForOutput(b"rejected a message under junk.event: json", timeout=10)
    yield rules.waitForOutput(b"rejected a message under junk.event: type", timeout=10)
    code, again, _ = yield postJSON(port, "deploys", b'{"version": "1.2.4"}')
    assert code == 202
    yield stream.waitFor(lambda events: len(announced(events)) == 2, 10, "a second announcement")
    assert announced(stream.events)[1]["payload"]["announced"]["count"] == 2
    response = yield Agent(reactor).request(
        b"GET", f"http://127.0.0.1:{metricsPort}/metrics".encode())
    metrics = (yield readBody(response)).decode()
    assert 'resmon_rules_rejected_total{reason="json"} 1.0' in metrics
    assert 'resmon_rules_engine_total{result="chain-limit"} 1.0' in metrics
    assert 'resmon_rule_failures_total{kind="check-error",rule="raising"}' in metrics
    for process in (web, rules):
        assert b"Traceback" not in process.output, process.logPath


@pytest_twisted.inlineCallbacks
def test_an_event_is_refused_with_retry_after_while_the_bus_cannot_take_it(twistd):
    # A closed port: the web role never reaches a broker.
    port, closed = freePort(), freePort()
    web = twistd("rules-web-nobroker", "--role=web",
                 f"--broker=amqp://guest:guest@127.0.0.1:{closed}/", f"--port={port}",
                 "--interface=127.0.0.1")
    yield web.waitForOutput(b" started: ")
    yield web.waitForOutputCount(b"Scheduling retry", 1)
    code, answer, headers = yield postJSON(port, "deploys", b'{"version": "1"}')
    assert code == 503 and "not connected" in answer["error"]
    assert headers.getRawHeaders(b"retry-after") == [b"5"]
