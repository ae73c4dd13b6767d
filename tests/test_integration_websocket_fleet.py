"""
A fleet-sized web role over the WebSocket: a real C{twistd resmon --role=web}
fed 1,000 hosts' analyses through the real broker, read by a plain Autobahn
client. Clients may send at most 64 KiB in a message; what the server sends
(a 1,000-host snapshot, a many-core host's history) has no such cap.
"""

import json
import re
import time

import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.web.client import Agent, readBody

from support import connectWebSocket, openEventStream, startedWeb, startedWebRole, withTimeout

FLEET = 1000
BIG_HOST = "big-iron.example"
BIG_CORES = 64
BIG_POINTS = 300


def fleetHost(n):
    return f"node{n:04d}.fleet.example"


def analysis(host, seq, ts, cores=4):
    cpu = float(seq % 100)
    return {
        "v": 1, "kind": "analysis", "host": host, "seq": seq, "ts": ts, "interval": 1.0,
        "analyzed_at": ts + 0.01, "level": "LOW", "levels": {"cpu": "LOW", "memory": "LOW"},
        "cpu_result": "LOW", "analyses": {},
        "metrics": {
            "cpu": {"percent": cpu, "per_core": [round((cpu + c) % 100, 1) for c in range(cores)]},
            "memory": {"total": 100, "used": 30, "available": 70, "percent": 30.0},
            "load": [0.5, 0.4, 0.3],
            "disks": [{"mount": "/", "percent": 70.0}],
            "net_io": {"bytes_sent_per_s": 1000.0, "bytes_recv_per_s": 5000.0,
                       "packets_sent_per_s": 1.0, "packets_recv_per_s": 2.0},
        },
    }


def routingKey(host):
    return host.replace(".", "_") + ".analysis"


@defer.inlineCallbacks
def publishFleet(amqp, exchange):
    """
    One analysis of each of the 1,000 hosts, then five minutes of a 64-core
    host's past: the big host last, so once the web role has all its points
    it has every other host too (one queue, consumed in order).
    """
    now = time.time()
    for n in range(FLEET):
        yield amqp.publish(exchange, routingKey(fleetHost(n)),
                           json.dumps(analysis(fleetHost(n), 1, now - 1)).encode())
    for seq in range(BIG_POINTS):
        yield amqp.publish(exchange, routingKey(BIG_HOST), json.dumps(
            analysis(BIG_HOST, seq, now - BIG_POINTS + seq, cores=BIG_CORES)).encode())


@defer.inlineCallbacks
def waitForHistory(port, host, count, timeout=30):
    url = f"http://127.0.0.1:{port}/api/hosts/{host}/history".encode()
    deadline = time.monotonic() + timeout
    while True:
        response = yield Agent(reactor).request(b"GET", url)
        body = yield readBody(response)
        if response.code == 200 and len(json.loads(body)["points"]) >= count:
            return
        assert time.monotonic() < deadline, f"{host} had not {count} history points after {timeout} s"
        yield task.deferLater(reactor, 0.2, lambda: None)


@pytest_twisted.inlineCallbacks
def test_a_new_client_gets_the_whole_fleet_in_its_snapshot_and_a_big_history_reply(
        broker, amqp, twistd):
    exchange = amqp.names["exchange"]
    web, port = yield startedWebRole(twistd, "fleet-web", broker, amqp)
    yield publishFleet(amqp, exchange)
    yield waitForHistory(port, BIG_HOST, BIG_POINTS)

    client, proto = yield connectWebSocket(port)
    snapshot = yield client.waitFor(lambda m: m["kind"] == "snapshot", 15, "the fleet's snapshot")
    hosts = {fleetHost(n) for n in range(FLEET)} | {BIG_HOST}
    assert [e["host"] for e in snapshot["events"]] == sorted(hosts)
    assert set(snapshot["history"]) == hosts
    # Far beyond what a client may send (64 KiB): the cap is on incoming messages only.
    assert len(json.dumps(snapshot)) > 8 * 64 * 1024
    big = next(e for e in snapshot["events"] if e["host"] == BIG_HOST)
    assert big["seq"] == BIG_POINTS - 1 and len(big["metrics"]["cpu"]["per_core"]) == BIG_CORES

    # The detail view's request: every point with its 64 cores, well over 64 KiB.
    proto.sendMessage(json.dumps({"kind": "history", "host": BIG_HOST, "step": 0}).encode())
    reply = yield client.waitFor(lambda m: m["kind"] == "history", 15, "the history reply")
    assert reply["host"] == BIG_HOST
    assert [p["seq"] for p in reply["points"]] == list(range(BIG_POINTS))
    assert all(len(p["cores"]) == BIG_CORES for p in reply["points"])
    assert len(json.dumps(reply)) > 2 * 64 * 1024
    # The connection stays open and live: the next analysis arrives.
    yield amqp.publish(exchange, routingKey(fleetHost(7)),
                       json.dumps(analysis(fleetHost(7), 2, time.time())).encode())
    live = yield client.waitFor(lambda m: m["kind"] == "analysis", 10, "a live analysis")
    assert (live["host"], live["seq"]) == (fleetHost(7), 2)
    assert client.closed == []
    assert b"exceeding payload limit" not in web.output and b"Traceback" not in web.output
    assert (yield web.stop()), web.logPath


@pytest_twisted.inlineCallbacks
def test_what_a_client_sends_is_still_capped_at_64_kib_even_in_fragments(twistd):
    web, port = yield startedWeb(twistd, "fleet-incoming", "--name=capped", "--interval=0.2")
    bystander, _ = yield connectWebSocket(port)
    # Just under the cap: a (bad) message that is read and answered, not a close.
    client, proto = yield connectWebSocket(port)
    proto.sendMessage(b'"' + b"x" * (64 * 1024 - 2) + b'"', fragmentSize=4096)
    error = yield client.waitFor(lambda m: m["kind"] == "error", 10, "the error reply")
    assert "JSON object" in error["error"] and client.closed == []
    # One byte more, in 4 KiB fragments: closed with 1009 (message too big).
    for fragmentSize in (None, 4096):
        client, proto = yield connectWebSocket(port)
        client.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
        closed = defer.Deferred()
        proto.onClose = lambda wasClean, code, reason, closed=closed: closed.callback(code)
        proto.sendMessage(b'"' + b"x" * (64 * 1024 - 1) + b'"', fragmentSize=fragmentSize)
        assert (yield withTimeout(closed, 10, "the close")) == 1009
    # A message may come in 64 fragments, not 65: each costs as much as a message.
    client, proto = yield connectWebSocket(port)
    closed = defer.Deferred()
    proto.onClose = lambda wasClean, code, reason: closed.callback(code)
    # Autobahn sends n bytes in 1-byte fragments as n + 1 frames (the last one empty).
    subscribe = b'{"kind": "subscribe", "hosts": ["capped"], "history": false}'.ljust(63)
    proto.sendMessage(subscribe, fragmentSize=1)
    reply = yield client.waitFor(lambda m: m["kind"] == "snapshot" and m["subscription"]["hosts"], 10,
                                 "the reply to a message in 64 fragments")
    assert reply["subscription"]["hosts"] == ["capped"] and not closed.called
    proto.sendMessage(subscribe + b" ", fragmentSize=1)
    assert (yield withTimeout(closed, 10, "the close")) == 1008
    yield web.waitForOutput(b"sent too many fragments in one message (at most 64); disconnecting it")

    before = sum(1 for m in bystander.events() if m["kind"] == "analysis")
    yield bystander.waitFor(
        lambda m: sum(1 for m in bystander.events() if m["kind"] == "analysis") >= before + 3,
        10, "3 more analyses for the bystander")
    assert b"Traceback" not in web.output


@pytest_twisted.inlineCallbacks
def test_a_batching_client_is_sent_every_analysis_of_a_fleet_burst_in_fewer_messages(
        broker, amqp, twistd):
    """
    /ws?batch=1 (what the dashboard asks for): a burst of the whole fleet's
    analyses reaches a batching client whole and in order, in fewer messages
    than analyses; a client beside it that did not ask gets one per message.
    """
    exchange = amqp.names["exchange"]
    web, port = yield startedWebRole(twistd, "fleet-batch", broker, amqp)
    batching, _ = yield connectWebSocket(port, path="/ws?history=0&batch=1")
    plain, _ = yield connectWebSocket(port, path="/ws?history=0")
    for client in (batching, plain):
        yield client.waitFor(lambda m: m["kind"] == "snapshot", 15, "the snapshot")
    now = time.time()
    # Written at once (no wait between publishes): the web role reads them in bursts.
    yield defer.gatherResults([
        amqp.publish(exchange, routingKey(fleetHost(n)),
                     json.dumps(analysis(fleetHost(n), 2, now)).encode()) for n in range(FLEET)])

    def analyses(client):
        return [(e["host"], e["seq"]) for e in client.events() if e.get("kind") == "analysis"]
    for client in (batching, plain):
        yield client.waitFor(lambda m: len(analyses(client)) >= FLEET, 30, "the fleet's analyses")
    expected = [(fleetHost(n), 2) for n in range(FLEET)]
    assert analyses(batching) == expected and analyses(plain) == expected
    batches = [m for m in batching.messages if m["kind"] == "batch"]
    assert batches and all(len(m["events"]) > 1 for m in batches)
    assert len(batching.messages) - 1 < FLEET
    assert len(plain.messages) - 1 == FLEET and not any(m["kind"] == "batch" for m in plain.messages)
    assert batching.closed == [] and b"Traceback" not in web.output
    assert (yield web.stop()), web.logPath


@pytest_twisted.inlineCallbacks
def test_an_event_stream_is_sent_every_analysis_of_a_fleet_burst_in_order(broker, amqp, twistd):
    """
    GET /api/stream takes a turn's events in one write (read as the events
    one by one): a burst of the whole fleet's analyses reaches it whole and
    in order, and the web role counts the batches it sent.
    """
    exchange = amqp.names["exchange"]
    web, port = yield startedWebRole(twistd, "fleet-stream", broker, amqp)
    reader = yield openEventStream(port, "?history=0&events=analysis")
    yield reader.waitFor(lambda events: events, 15, "the snapshot")
    now = time.time()
    yield defer.gatherResults([
        amqp.publish(exchange, routingKey(fleetHost(n)),
                     json.dumps(analysis(fleetHost(n), 2, now)).encode()) for n in range(FLEET)])
    yield reader.waitFor(lambda events: len(events) > FLEET, 30, "the fleet's analyses")
    assert [(kind, e["host"], e["seq"]) for kind, e in reader.events[1:]] == [
        ("analysis", fleetHost(n), 2) for n in range(FLEET)]
    metrics = (yield readBody((yield Agent(reactor).request(
        b"GET", f"http://127.0.0.1:{port}/metrics".encode())))).decode()
    batches = re.search(r'^resmon_web_events_total\{event="batches"\} (\S+)$', metrics, re.M)
    assert batches and float(batches.group(1)) >= 1, metrics[:2000]
    assert b"Traceback" not in web.output
    assert (yield web.stop()), web.logPath
    yield withTimeout(reader.done, 5, "the end of the stream")
