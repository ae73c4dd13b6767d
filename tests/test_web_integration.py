"""
The web role's history, subscriptions, event stream and JSON API end to end:
real twistd processes (a server on the real RabbitMQ with real agents, or
standalone), a real Autobahn WebSocket client and a real HTTP client.
"""

import json

import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.web.client import Agent, readBody

from support import SSEReader, WebSocketRecorder, freePort, startedWeb, withTimeout


@defer.inlineCallbacks
def _connect(port, query=""):
    factory = WebSocketRecorder(f"ws://127.0.0.1:{port}/ws{query}")
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    proto = yield endpoint.connect(factory)
    yield withTimeout(factory.opened, 5, "the WebSocket handshake")
    return factory, proto


def _send(proto, message):
    proto.sendMessage(json.dumps(message).encode(), isBinary=False)


@defer.inlineCallbacks
def _getJSON(port, path):
    response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}{path}".encode())
    body = yield readBody(response)
    return response.code, json.loads(body)


def _hostsOf(message):
    if message["kind"] == "snapshot":
        return {e["host"] for e in message["events"]} | set(message["history"])
    return {message["host"]}


@pytest_twisted.inlineCallbacks
def test_a_subscriber_gets_history_first_then_only_its_hosts_events(broker, amqp, twistd):
    port = freePort()
    exchange = amqp.names["exchange"]
    server = twistd("server", "--role=server", f"--broker={broker}", f"--exchange={exchange}",
                    f"--queue={amqp.names['queue']}", f"--port={port}", "--interface=127.0.0.1")
    yield server.waitForOutput(b"consuming #.analysis")
    yield server.waitForOutput(b"consuming #.measure")
    web, db = "web-01.it.example", "db-01.it.example"
    for name in (web, db):
        twistd("agent-" + name, "--role=agent", f"--broker={broker}", f"--exchange={exchange}",
               f"--name={name}", "--interval=0.2")
    watcher, _ = yield _connect(port)
    seen = set()

    def bothHostsSeveralTimes(message):
        seen.update((e["host"], e["seq"]) for e in watcher.events() if "seq" in e)
        return all(len([s for s in seen if s[0] == h]) >= 4 for h in (web, db))
    yield watcher.waitFor(bothHostsSeveralTimes, 20, "4 analyses of each agent")

    # Connect and subscribe by routing-word pattern: a snapshot with history
    # for that host only comes first, then only that host's events.
    client, proto = yield _connect(port)
    yield client.waitFor(lambda m: m["kind"] == "snapshot", 5, "the first snapshot")
    _send(proto, {"kind": "subscribe", "hosts": ["web-01_it_example"], "events": ["analysis", "status"],
                  "history": True})
    reply = yield client.waitFor(
        lambda m: m["kind"] == "snapshot" and m["subscription"]["hosts"] is not None, 5, "the reply snapshot")
    start = client.messages.index(reply)
    assert [e["host"] for e in reply["events"]] == [web]
    assert list(reply["history"]) == [web]
    points = reply["history"][web]
    assert len(points) >= 3
    assert [p["ts"] for p in points] == sorted(p["ts"] for p in points)
    assert all(0 <= p["cpu"] <= 100 and p["cores"] and p["level"] in ("LOW", "MEDIUM", "HIGH") for p in points)
    # The newest point is the latest analysis; the points are consecutive analyses.
    assert (points[-1]["ts"], points[-1]["seq"]) == (reply["events"][0]["ts"], reply["events"][0]["seq"])
    assert [p["seq"] for p in points] == list(range(points[0]["seq"], points[-1]["seq"] + 1))

    def liveAfterReply(count):
        return lambda m: len(client.messages) - start - 1 >= count
    yield client.waitFor(liveAfterReply(5), 10, "5 live events after the reply")
    live = client.messages[start + 1:]
    assert {m["host"] for m in live} == {web}, live
    seqs = [m["seq"] for m in live if m["kind"] == "analysis"]
    # No gap and no repeat between the snapshot and the live events.
    assert seqs[0] == reply["events"][0]["seq"] + 1 and seqs == list(range(seqs[0], seqs[0] + len(seqs)))

    # A status event published on the bus reaches the subscriber and the API.
    statusEvent = {"v": 1, "kind": "status", "host": web, "status": "stale",
                   "since": 1000.0, "last_seen": 999.0}
    yield amqp.publish(exchange, "web-01_it_example.status", json.dumps(statusEvent).encode())
    yield amqp.publish(exchange, "db-01_it_example.status", json.dumps(dict(statusEvent, host=db)).encode())
    received = yield client.waitFor(lambda m: m["kind"] == "status", 5, "the status event")
    assert received == statusEvent
    code, one = yield _getJSON(port, "/api/hosts/web-01.it.example")
    assert code == 200 and one["status"] == statusEvent and one["analysis"]["host"] == web
    # The watcher (never subscribed) got both statuses; the subscriber only its host's.
    yield watcher.waitFor(lambda m: m["kind"] == "status" and m["host"] == db, 5, "db's status")
    assert all(m["host"] == web for m in client.messages[start + 1:])

    # An invalid subscribe gets an error; the connection stays and keeps its filter.
    _send(proto, {"kind": "subscribe", "hosts": ["web-*"]})
    error = yield client.waitFor(lambda m: m["kind"] == "error", 5, "the error reply")
    assert "whole words" in error["error"]
    count = len(client.messages)
    yield client.waitFor(lambda m: len(client.messages) >= count + 2, 5, "events after the error")
    assert {m["host"] for m in client.messages[count:]} == {web}
    assert client.closed == []

    # The history over HTTP, by host name and by routing word.
    code, history = yield _getJSON(port, "/api/hosts/db-01_it_example/history")
    assert code == 200 and history["host"] == db and len(history["points"]) >= 4
    code, listing = yield _getJSON(port, "/api/hosts")
    assert {h["host"] for h in listing["hosts"]} == {web, db}
    assert {s["host"] for s in listing["statuses"]} == {web, db}
    code, missing = yield _getJSON(port, "/api/hosts/nobody")
    assert code == 404 and missing["error"] == "unknown host"
    assert b"Traceback" not in server.output


@pytest_twisted.inlineCallbacks
def test_sse_stream_follows_the_fleet_with_a_snapshot_first(twistd):
    standalone, port = yield startedWeb(twistd, "standalone", "--name=sse.host", "--interval=0.2")
    # Let a few analyses into the history first.
    yield _waitForHistory(port, "sse.host", 3)

    response = yield Agent(reactor).request(
        b"GET", f"http://127.0.0.1:{port}/api/stream?hosts=sse_host&events=analysis&history=1".encode())
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/event-stream")
    reader = SSEReader()
    response.deliverBody(reader)
    yield reader.waitFor(lambda events: len(events) >= 4, 5, "a snapshot and 3 analyses")
    kind, snapshot = reader.events[0]
    assert kind == "snapshot"
    assert [e["host"] for e in snapshot["events"]] == ["sse.host"]
    assert len(snapshot["history"]["sse.host"]) >= 3
    live = reader.events[1:]
    assert all(kind == "analysis" and e["host"] == "sse.host" for kind, e in live)
    seqs = [e["seq"] for _, e in live]
    assert seqs[0] == snapshot["events"][0]["seq"] + 1 and seqs == list(range(seqs[0], seqs[0] + len(seqs)))

    # A filter that matches nothing: a snapshot with nothing in it, no events.
    response = yield Agent(reactor).request(
        b"GET", f"http://127.0.0.1:{port}/api/stream?hosts=other".encode())
    quiet = SSEReader()
    response.deliverBody(quiet)
    yield quiet.waitFor(lambda events: events, 5, "the empty snapshot")
    yield reader.waitFor(lambda events: len(events) >= 8, 5, "more analyses on the first stream")
    assert quiet.events == [("snapshot", {
        "kind": "snapshot", "events": [], "statuses": [], "history": {},
        "subscription": {"hosts": ["other"], "events": ["analysis", "status"], "history": "overview",
                         "step": 10, "since": None}})]

    response = yield Agent(reactor).request(
        b"GET", f"http://127.0.0.1:{port}/api/stream?events=measure".encode())
    assert response.code == 400
    assert "unknown kind" in json.loads((yield readBody(response)))["error"]

    # Stopping the server ends the streams cleanly.
    assert (yield standalone.stop(timeout=5)), standalone.logPath
    yield withTimeout(reader.done, 5, "the end of the stream")
    yield withTimeout(quiet.done, 5, "the end of the quiet stream")
    assert b"Traceback" not in standalone.output


@defer.inlineCallbacks
def _waitForHistory(port, host, count, timeout=10):
    from twisted.internet import task
    for _ in range(int(timeout / 0.1)):
        code, history = yield _getJSON(port, f"/api/hosts/{host}/history")
        if code == 200 and len(history["points"]) >= count:
            return history
        yield task.deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"{host} did not have {count} history points within {timeout} s")


@defer.inlineCallbacks
def _waitForSeq(port, host, seq, timeout=10):
    from twisted.internet import task
    for _ in range(int(timeout / 0.1)):
        code, one = yield _getJSON(port, f"/api/hosts/{host}")
        if code == 200 and one["analysis"]["seq"] >= seq:
            return code, one
        yield task.deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"no analysis of {host} with seq {seq} within {timeout} s")


@pytest_twisted.inlineCallbacks
def test_websocket_url_filter_and_history_bounds_in_a_real_process(twistd):
    standalone, port = yield startedWeb(
        twistd, "standalone", "--name=bounded", "--interval=0.1", "--history-points=5")
    yield _waitForHistory(port, "bounded", 5)
    code, one = yield _waitForSeq(port, "bounded", 15)
    code, history = yield _getJSON(port, "/api/hosts/bounded/history")
    assert len(history["points"]) == 5  # never more, however many analyses came
    assert history["points"][-1]["seq"] >= one["analysis"]["seq"] >= 15
    # At most one point per second: 5 points 0.1 s apart span two seconds at most.
    code, coarse = yield _getJSON(port, "/api/hosts/bounded/history?step=1")
    assert code == 200 and coarse["step"] == 1 and 1 <= len(coarse["points"]) <= 2, coarse
    for bad in ("step=-1", "step=x", "step=1e9", "since=nan"):
        code, refused = yield _getJSON(port, f"/api/hosts/bounded/history?{bad}")
        assert code == 400 and bad.split("=")[0] in refused["error"], (bad, refused)
    client, _ = yield _connect(port, "?history=0&events=analysis")
    first = yield client.waitFor(lambda m: True, 5, "the snapshot")
    assert first["kind"] == "snapshot" and first["history"] == {} and first["statuses"] == []
    assert [e["host"] for e in first["events"]] == ["bounded"]
    # A bad filter in the URL refuses the handshake.
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/ws?hosts=bad*")
    failed = defer.Deferred()

    class Refused(WebSocketClientProtocol):
        def onOpen(self):
            failed.errback(AssertionError("the handshake succeeded"))

        def onClose(self, wasClean, code, reason):
            if not failed.called:
                failed.callback((wasClean, reason))
    factory.protocol = Refused
    yield withTimeout(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5).connect(factory),
                      5, "the connection")
    wasClean, reason = yield withTimeout(failed, 5, "the refused handshake")
    assert not wasClean and "400" in reason, reason
    assert (yield standalone.stop(timeout=5)), standalone.logPath


def _handshakeStatus(port, origin=None, host=None):
    """
    The status line the web role answers a WebSocket handshake with, sent as
    a browser would from a page of C{origin}.
    """
    import base64
    import os
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        headers = ["GET /ws HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}", "Upgrade: websocket",
                   "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        if origin:
            headers.append(f"Origin: {origin}")
        sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        response = b""
        while b"\r\n" not in response:
            chunk = sock.recv(4096)
            if not chunk:
                break
            response += chunk
    return response.split(b"\r\n", 1)[0].decode()


@pytest_twisted.inlineCallbacks
def test_only_the_dashboards_own_pages_and_allowed_origins_open_the_websocket(twistd):
    standalone, port = yield startedWeb(
        twistd, "origins", "--name=origins", "--allowed-origin=https://dash.example.com",
        "--allowed-host=mon.internal", "--stats-interval=1")
    own = f"http://127.0.0.1:{port}"
    for origin, host, expected in [
            (None, None, "101"), (own, None, "101"), ("https://dash.example.com", None, "101"),
            (f"http://localhost:{port}", f"localhost:{port}", "101"),
            (f"http://mon.internal:{port}", f"mon.internal:{port}", "101"),     # --allowed-host
            ("http://evil.example", None, "403"), (f"http://127.0.0.1:{port + 1}", None, "403"),
            # Allowed origins match whole, never by prefix.
            ("https://dash.example.com.evil.net", None, "403"),
            # An https page is not the same origin as this http server.
            (f"https://127.0.0.1:{port}", None, "403"),
            # A sandboxed or file: page: Autobahn refuses it first.
            ("null", None, "400"),
            # DNS rebinding: the attacker's name resolves to this address; both headers say it.
            (f"http://attacker.example:{port}", f"attacker.example:{port}", "421"),
            ("https://dash.example.com.evil.net", "dash.example.com.evil.net", "421")]:
        status = _handshakeStatus(port, origin, host)
        assert status.split()[1] == expected, (origin, host, status)
    yield standalone.waitForOutput(b"a page of http://evil.example may not open it")
    yield standalone.waitForOutput(b"4 WebSocket handshakes refused for their origin, 2 requests refused for their Host")
    # The dashboard itself, over the same origin, works as before (tests/test_browser.py).
    client, _ = yield _connect(port)
    yield client.waitFor(lambda m: m.get("kind") == "analysis", 10, "an analysis")
    assert b"Traceback" not in standalone.output


def _httpGet(port, path, host):
    """
    The status and body of a GET with this C{Host} header, as a page of
    that name would send it (a same-origin fetch sends no Origin).
    """
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest_twisted.inlineCallbacks
def test_dns_rebinding_cannot_read_the_api_the_page_or_the_stream(twistd):
    standalone, port = yield startedWeb(
        twistd, "rebinding", "--name=rebound", "--allowed-host=mon.internal", "--stats-interval=1")
    yield _waitForHistory(port, "rebound", 1)
    for path in ("/api/hosts", "/", "/js/main.js", "/api/stream", "/api/hosts/rebound/history"):
        code, body = yield threads.deferToThread(_httpGet, port, path, f"attacker.example:{port}")
        assert code == 421 and b"--allowed-host" in body and b"rebound" not in body, (path, code, body)
    import socket
    # Addresses, localhost, this machine's own name, and the --allowed-host.
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"{socket.gethostname()}:{port}",
                 f"MON.internal:{port}", "mon.internal"):
        code, body = yield threads.deferToThread(_httpGet, port, "/api/hosts", host)
        assert code == 200 and b"rebound" in body, (host, code)
    yield standalone.waitForOutput(b"5 requests refused for their Host")
    yield standalone.waitForOutput(b"attacker.example")
    assert b"Traceback" not in standalone.output
