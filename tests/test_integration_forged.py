"""
Forged or odd data on the real broker, into a real C{twistd resmon
--role=server}, seen by a real WebSocket client and the HTTP API: a measure
from the future, an agent clock that goes back, a status published under
another host's key, an analysis after an offline status, and kilobytes of
unknown metrics. None of it may pin or bloat what every dashboard sees.
"""

import json
import time

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web.client import Agent, readBody

from resmon import wire
from support import connectWebSocket, freePort, waitUntil


def _measure(host, seq, ts, metrics=None, interval=60.0):
    # A long interval: the analyzer's liveness judge leaves these hosts online.
    return wire.encodeMeasure(host, seq, ts, interval, metrics or {"cpu": {"percent": 5.0 + seq}})


def _status(host, state):
    return json.dumps({"v": 1, "kind": "status", "host": host, "status": state,
                       "since": time.time(), "last_seen": time.time() - 40, "seq": 0}).encode()


@defer.inlineCallbacks
def _get(port, path):
    response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}{path}".encode())
    body = yield readBody(response)
    return response.code, body


@defer.inlineCallbacks
def _getJSON(port, path):
    code, body = yield _get(port, path)
    assert code == 200, (path, code, body[:200])
    return json.loads(body)


@defer.inlineCallbacks
def _server(twistd, broker, amqp, *extra):
    port = freePort()
    server = twistd("forged-server", "--role=server", f"--broker={broker}",
                    f"--exchange={amqp.names['exchange']}", f"--queue={amqp.names['queue']}",
                    f"--dead-letter-queue={amqp.names['deadletter']}", f"--port={port}",
                    "--interface=127.0.0.1", "--stats-interval=1", "--offline-after=600", *extra)
    yield server.waitForOutput(b"consuming #.measure from")
    yield server.waitForOutput(b"liveness-tick from queue")  # the liveness judge's queue
    yield server.waitForOutput(b"consuming #.analysis")
    return server, port


@defer.inlineCallbacks
def _serverAndClient(twistd, broker, amqp, *extra):
    """
    L{_server}, and a WebSocket client of it.
    """
    server, port = yield _server(twistd, broker, amqp, *extra)
    client, _ = yield connectWebSocket(port)
    return server, port, client


def _isAnalysis(host, seq):
    return lambda m: m.get("kind") == "analysis" and m.get("host") == host and m.get("seq") == seq


def _analysedSeqs(client, host):
    return [m["seq"] for m in client.events() if m.get("kind") == "analysis" and m["host"] == host]


def _statusesOf(client, host):
    """
    Every status of C{host} the client received, snapshots included, in order.
    """
    seen = []
    for message in client.messages:
        if message.get("kind") == "snapshot":
            seen.extend(s["status"] for s in message["statuses"] if s["host"] == host)
        elif message.get("kind") == "status" and message.get("host") == host:
            seen.append(message["status"])
    return seen


@pytest_twisted.inlineCallbacks
def test_a_measure_from_the_future_is_rejected_and_a_clock_going_back_pins_nothing(
        broker, amqp, twistd):
    server, port, client = yield _serverAndClient(twistd, broker, amqp)
    exchange, host = amqp.names["exchange"], "clock-host"
    now = time.time()
    for seq in range(3):
        yield amqp.publish(exchange, f"{host}.measure", _measure(host, seq, now - 3 + seq))
    # A year ahead: before this fix it became the host's only history point
    # and stayed its latest analysis until the web role restarted.
    yield amqp.publish(exchange, f"{host}.measure", _measure(host, 3, now + 365 * 86400))
    # Then the agent's clock 200 s ahead (within --max-clock-skew), then set right.
    for seq in range(4, 7):
        yield amqp.publish(exchange, f"{host}.measure", _measure(host, seq, now + 200 + seq))
    for seq in range(7, 10):
        yield amqp.publish(exchange, f"{host}.measure", _measure(host, seq, now + seq))
    yield client.waitFor(_isAnalysis(host, 9), 20, "the analysis of the last measure")
    assert _analysedSeqs(client, host) == [0, 1, 2, 4, 5, 6, 7, 8, 9]

    latest = yield _getJSON(port, f"/api/hosts/{host}")
    assert latest["analysis"]["seq"] == 9
    history = yield _getJSON(port, f"/api/hosts/{host}/history")
    points = history["points"]
    assert [p["seq"] for p in points] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    times = [p["ts"] for p in points]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert times[-1] < now + 300
    hosts = yield _getJSON(port, "/api/hosts")
    assert [a["seq"] for a in hosts["hosts"] if a["host"] == host] == [9]
    # Rejected, logged with its reason, counted, dead-lettered.
    yield server.waitForOutput(b"rejected a message under clock-host.measure: future: ts is", 10)
    yield server.waitForOutput(b"1 rejected (future: 1)", 10)
    reply = yield waitUntil(
        lambda: amqp.channel.queue_declare(queue=amqp.names["deadletter"], passive=True).addCallback(
            lambda r: r if r.message_count == 1 else None),
        10, "the future measure in the dead-letter queue")
    assert reply.message_count == 1
    assert not server.ended_ and b"Traceback" not in server.output


@pytest_twisted.inlineCallbacks
def test_a_status_forged_under_another_hosts_key_is_not_shown(broker, amqp, twistd):
    server, port, client = yield _serverAndClient(twistd, broker, amqp)
    exchange = amqp.names["exchange"]
    yield amqp.publish(exchange, "victim.measure", _measure("victim", 0, time.time()))
    yield client.waitFor(lambda m: m.get("kind") == "status" and m.get("host") == "victim", 20,
                         "victim's online status from the analyzer")
    yield amqp.publish(exchange, "zzz.status", _status("victim", "offline"))
    forged = json.loads(_measure("victim", 99, time.time()))
    forged.update(kind="analysis", level="HIGH")
    yield amqp.publish(exchange, "zzz.analysis", json.dumps(forged).encode())
    # Routed to the web's queue after the forged ones (published before it on
    # the same channel): once its analysis is here, the forged ones were judged.
    yield amqp.publish(exchange, "victim.measure", _measure("victim", 1, time.time()))
    yield client.waitFor(_isAnalysis("victim", 1), 20, "victim's next analysis")

    assert _statusesOf(client, "victim") == ["online"]
    assert _analysedSeqs(client, "victim") == [0, 1]
    hosts = yield _getJSON(port, "/api/hosts")
    assert [(s["host"], s["status"]) for s in hosts["statuses"]] == [("victim", "online")]
    assert [(a["host"], a["seq"]) for a in hosts["hosts"]] == [("victim", 1)]
    later, _ = yield connectWebSocket(port)
    snapshot = yield later.waitFor(lambda m: m.get("kind") == "snapshot", 10, "a snapshot")
    assert [(s["host"], s["status"]) for s in snapshot["statuses"]] == [("victim", "online")]
    yield server.waitForOutput(b"rejected an event under zzz.status: routing-key", 10)
    yield server.waitForOutput(b"rejected an event under zzz.analysis: routing-key", 10)
    yield server.waitForOutput(b"rejected (routing-key: 2)", 10)


@pytest_twisted.inlineCallbacks
def test_an_analysis_after_an_offline_status_shows_the_host_online_everywhere(
        broker, amqp, twistd):
    server, port, client = yield _serverAndClient(twistd, broker, amqp)
    exchange, host = amqp.names["exchange"], "phoenix"
    yield amqp.publish(exchange, f"{host}.measure", _measure(host, 0, time.time()))
    yield client.waitFor(lambda m: m.get("kind") == "status" and m.get("host") == host, 20,
                         "the online status from the analyzer")
    # The judge, once it judges, ignores statuses on the bus (while it stands
    # by, it would follow this one and announce the host online again itself).
    yield server.waitForOutput(b"judging host liveness: this process receives", 20)
    # An offline status under the host's own key (from anyone who may publish
    # statuses): the analyzer's judge still holds the host online, so it never
    # announces it online again.
    yield amqp.publish(exchange, f"{host}.status", _status(host, "offline"))
    yield client.waitFor(lambda m: m.get("kind") == "status" and m.get("status") == "offline", 20,
                         "the offline status")
    hosts = yield _getJSON(port, "/api/hosts")
    assert [s["status"] for s in hosts["statuses"]] == ["offline"]

    yield amqp.publish(exchange, f"{host}.measure", _measure(host, 1, time.time()))
    yield client.waitFor(_isAnalysis(host, 1), 20, "the next analysis")
    back = yield client.waitFor(
        lambda m: m.get("kind") == "status" and m.get("status") == "online" and m.get("seq") == 1,
        10, "the host back online on the WebSocket")
    assert set(back) == {"v", "kind", "host", "status", "since", "last_seen", "seq"}
    assert _statusesOf(client, host) == ["online", "offline", "online"]
    hosts = yield _getJSON(port, "/api/hosts")
    assert [(s["host"], s["status"]) for s in hosts["statuses"]] == [(host, "online")]
    detail = yield _getJSON(port, f"/api/hosts/{host}")
    assert detail["status"]["status"] == "online"
    later, _ = yield connectWebSocket(port)
    snapshot = yield later.waitFor(lambda m: m.get("kind") == "snapshot", 10, "a snapshot")
    assert [s["status"] for s in snapshot["statuses"]] == ["online"]
    yield server.waitForOutput(b"1 hosts back online on an analysis", 10)


@pytest_twisted.inlineCallbacks
def test_kilobytes_of_unknown_metrics_do_not_reach_the_api(broker, amqp, twistd):
    server, port, client = yield _serverAndClient(twistd, broker, amqp)
    exchange = amqp.names["exchange"]
    blob = {"cpu": {"percent": 12.0}, **{f"junk{i:03}": "x" * 1000 for i in range(240)}}
    body = _measure("blob", 0, time.time(), blob)
    assert 240_000 < len(body) < wire.DEFAULT_MAX_BODY
    yield amqp.publish(exchange, "blob.measure", body)
    # A few unknown metrics of a newer agent are kept.
    newer = {"cpu": {"percent": 7.0}, "gpu": {"percent": 30.0, "memory_percent": 12.5}}
    yield amqp.publish(exchange, "newer.measure", _measure("newer", 0, time.time(), newer))
    # A third party's analysis straight onto the exchange is bounded by the web role.
    forged = json.loads(_measure("thirdparty", 0, time.time(), blob))
    forged["kind"] = "analysis"
    yield amqp.publish(exchange, "thirdparty.analysis", json.dumps(forged).encode())
    for host in ("blob", "newer", "thirdparty"):
        yield client.waitFor(_isAnalysis(host, 0), 20, f"the analysis of {host}")

    received = {m["host"]: m for m in client.events() if m.get("kind") == "analysis"}
    assert received["blob"]["metrics"] == {"cpu": {"percent": 12.0}}
    assert received["blob"]["cpu_result"] == "LOW"
    assert received["newer"]["metrics"] == newer
    assert received["thirdparty"]["metrics"] == {"cpu": {"percent": 12.0}}
    code, body = yield _get(port, "/api/hosts")
    assert code == 200 and len(body) < 5000, len(body)
    assert {a["host"] for a in json.loads(body)["hosts"]} == {"blob", "newer", "thirdparty"}
    yield server.waitForOutput(b"dropped 240 unknown metrics of a measure under blob.measure", 10)
    yield server.waitForOutput(b"1 measures with unknown metrics over the bound", 10)
    yield server.waitForOutput(b"1 analyses with unknown metrics over the bound", 10)
    assert not server.ended_ and b"Traceback" not in server.output


@pytest_twisted.inlineCallbacks
def test_a_thousand_hosts_with_unknown_metrics_and_forged_statuses_stay_proportional(
        broker, amqp, twistd):
    server, port = yield _server(twistd, broker, amqp)
    exchange, hosts = amqp.names["exchange"], 1000
    junk = {f"extra{i:02}": i for i in range(wire.MAX_UNKNOWN_METRICS + 24)}
    now = time.time()
    for n in range(hosts):
        host = f"fleet-{n:04}"
        yield amqp.publish(exchange, f"{host}.measure",
                           _measure(host, 0, now, {"cpu": {"percent": 1.0}, **junk}))

    def everyHost(count):
        return lambda: _getJSON(port, "/api/hosts").addCallback(
            lambda reply: reply if len(reply["hosts"]) == len(reply["statuses"]) == count else None)
    yield waitUntil(everyHost(hosts), 60, f"{hosts} hosts with a status in /api/hosts")
    # Then, for each, an offline status forged under another host's key.
    for n in range(hosts):
        yield amqp.publish(exchange, "zzz.status", _status(f"fleet-{n:04}", "offline"))
    # Routed to the web role's queue after the forged statuses: once its
    # analysis and status are in, the forged ones were judged.
    yield amqp.publish(exchange, "sentinel.measure",
                       _measure("sentinel", 0, time.time(), {"cpu": {"percent": 1.0}}))
    reply = yield waitUntil(everyHost(hosts + 1), 60, "the sentinel in /api/hosts")
    assert {s["status"] for s in reply["statuses"]} == {"online"}
    assert all(a["metrics"] == {"cpu": {"percent": 1.0}} for a in reply["hosts"])
    yield server.waitForOutput(f"rejected (routing-key: {hosts})".encode(), 30)
    code, body = yield _get(port, "/api/hosts")
    # About 600 bytes per host (its analysis and its status), not kilobytes.
    assert code == 200 and len(body) < (hosts + 1) * 800, len(body)
    yield server.waitForOutput(f"{hosts} measures with unknown metrics over the bound".encode(), 30)
    assert not server.ended_ and b"Traceback" not in server.output


@pytest_twisted.inlineCallbacks
def test_max_clock_skew_is_the_bound_of_the_analyzer_and_the_web_role(broker, amqp, twistd):
    server, port, client = yield _serverAndClient(twistd, broker, amqp, "--max-clock-skew=30")
    exchange, now = amqp.names["exchange"], time.time()
    yield amqp.publish(exchange, "ahead.measure", _measure("ahead", 0, now + 60))
    analysis = json.loads(_measure("ahead", 1, now + 60))
    analysis.update(kind="analysis", analyzed_at=now)
    yield amqp.publish(exchange, "ahead.analysis", json.dumps(analysis).encode())
    yield amqp.publish(exchange, "ahead.measure", _measure("ahead", 2, now + 20))
    yield client.waitFor(_isAnalysis("ahead", 2), 20, "the analysis of the measure within the skew")
    assert _analysedSeqs(client, "ahead") == [2]
    yield server.waitForOutput(b"rejected a message under ahead.measure: future", 10)
    yield server.waitForOutput(b"rejected an event under ahead.analysis: future", 10)
