"""
What any client can make the web role spend, against a real twistd web
role with real sockets: bytes queued to clients that never read (one
budget for all), connections (overall and per address), request bodies,
slow requests, odd paths and queries.
"""

import json
import re
import select
import socket
import time

import pytest_twisted
from twisted.internet import defer, reactor, task, threads
from twisted.web.client import Agent, readBody

from resmon.webserver.sendbudget import CHUNK_SIZE, HIGH_WATER
from resmon.topics import hostWord
from support import SSEReader, rawWebSocket, startedWeb, startedWebRole, waitUntil

MIB = 1024 * 1024
STATS = re.compile(
    rb"(\d+) connections, (\d+) hosts; (\d+) bytes queued to clients \(peak (\d+), budget (\d+)\); "
    rb"(\d+) snapshot pieces waited for room, (\d+) clients dropped at the budget, (\d+) for not "
    rb"reading; refused: ([^\n]*)")


def _analysis(host, seq):
    return json.dumps({"v": 1, "kind": "analysis", "host": host, "seq": seq, "ts": time.time(),
                       "analyzed_at": time.time(), "level": "LOW",
                       "levels": {"cpu": "LOW", "memory": "LOW"},
                       "metrics": {"cpu": {"percent": 10.0, "per_core": [10.0] * 8},
                                   "memory": {"percent": 50.0}}}).encode()


def _silentStream(port, path="/api/stream", source="127.0.0.1"):
    """
    A socket that asks for C{path} and never reads (a small receive window,
    so the server's buffers fill at once).
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return sock


def _silentWebSocket(port):
    """
    A socket that completes a WebSocket handshake, then never reads again.
    """
    return rawWebSocket(port, receiveBuffer=4096)


def _exchange(port, request, source="127.0.0.1", timeout=10):
    """
    Send raw C{request} bytes; return everything the server answers until it
    closes (blocking: run in a thread).
    """
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    try:
        sock.sendall(request)
        return _readAll(sock)
    finally:
        sock.close()


def _readAll(sock):
    answer = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return answer
            answer += data
    except ConnectionResetError:
        return answer


def _parse(answer):
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    code = int(lines[0].split()[1])
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:] if b": " in line)
    return code, headers, body


def _stats(process):
    return [tuple(int(x) for x in m[:8]) + (m[8],) for m in STATS.findall(process.output)]


@defer.inlineCallbacks
def _get(port, path):
    response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}{path}".encode())
    body = yield readBody(response)
    return response.code, response.headers, body


@pytest_twisted.inlineCallbacks
def test_clients_that_never_read_are_held_to_one_budget_and_readers_still_get_everything(
        broker, amqp, twistd):
    exchange = amqp.names["exchange"]
    web, port = yield startedWebRole(
        twistd, "limits-budget", broker, amqp, "--max-queued-mib=1", "--stall-timeout=4",
        "--stats-interval=1", "--max-clients-per-address=200")
    hosts = [f"budget-{i:04d}.example" for i in range(1000)]
    for seq in range(2):
        for host in hosts:
            amqp.publish(exchange, f"{hostWord(host)}.analysis", _analysis(host, seq))

    @defer.inlineCallbacks
    def allArrived():
        code, _, body = yield _get(port, f"/api/hosts/{hosts[-1]}")
        return code == 200 and json.loads(body)["analysis"]["seq"] == 1
    yield waitUntil(allArrived, 30, "the analyses of 1,000 hosts")

    # 60 event streams and 20 WebSockets that never read, each asking for
    # the whole fleet (~0.5 MB with its history): far more than the 1 MiB budget.
    silent = [_silentStream(port) for _ in range(60)]
    silent += [_silentWebSocket(port) for _ in range(20)]
    live = task.LoopingCall(lambda: [amqp.publish(exchange, f"{hostWord(h)}.analysis", _analysis(h, 2))
                                     for h in hosts[:100]])
    live.start(0.5)
    try:
        # Snapshots waited for room, and clients were dropped at the budget or
        # for not reading: the counters move...
        yield waitUntil(lambda: defer.succeed(any(s[5] > 0 and s[6] + s[7] > 0 for s in _stats(web))),
                       30, "snapshot pieces to wait for room and clients to be dropped")
        # ...while a client that reads gets its whole snapshot and live events.
        response = yield Agent(reactor).request(
            b"GET", f"http://127.0.0.1:{port}/api/stream?events=analysis&history=0".encode())
        reader = SSEReader()
        response.deliverBody(reader)
        yield reader.waitFor(lambda events: len(events) >= 2, 30,
                             "a snapshot and a live event on a reading client")
        kind, snapshot = reader.events[0]
        assert kind == "snapshot" and len(snapshot["events"]) == 1000
        assert reader.events[1][0] == "analysis"
    finally:
        live.stop()
        for sock in silent:
            sock.close()
    stats = _stats(web)
    limit = stats[-1][4]
    assert limit == MIB
    # At most one write past the budget before the client that made it is dropped.
    assert max(s[3] for s in stats) <= limit + HIGH_WATER + 2 * CHUNK_SIZE, stats[-1]
    assert max(s[2] for s in stats) <= limit + HIGH_WATER + 2 * CHUNK_SIZE
    yield waitUntil(lambda: defer.succeed(_stats(web)[-1][0] <= 1 and _stats(web)[-1][2] == 0), 15,
                   "the silent clients to be gone and nothing queued")
    assert b"Traceback" not in web.output


@pytest_twisted.inlineCallbacks
def test_connections_beyond_the_caps_are_answered_503_with_retry_after(twistd):
    web, port = yield startedWeb(
        twistd, "limits-connections", "--name=caps", "--max-clients=6",
        "--max-clients-per-address=4", "--stats-interval=1")
    request = f"GET /api/hosts HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    held = [_silentStream(port) for _ in range(4)]
    code, headers, body = _parse((yield threads.deferToThread(_exchange, port, request)))
    assert code == 503 and headers[b"retry-after"] == b"10"
    assert headers[b"content-type"] == b"application/json"
    assert "from your address" in json.loads(body)["error"]
    # Another address still gets in, up to the overall cap.
    held += [_silentStream(port, source="127.0.0.2") for _ in range(2)]
    code, _, body = _parse((yield threads.deferToThread(_exchange, port, request, "127.0.0.3")))
    assert code == 503 and "too many connections: at most 6" in json.loads(body)["error"]
    # One leaves: a new request is served again.
    held.pop(0).close()
    yield waitUntil(lambda: defer.succeed(any(s[0] == 5 for s in _stats(web))), 10,
                   "the server to count 5 connections")
    code, _, body = yield _get(port, "/api/hosts")
    assert code == 200 and "hosts" in json.loads(body)
    yield waitUntil(lambda: defer.succeed(
        b"max-clients: 1, max-clients-per-address: 1" in web.output), 10, "the refusals counted")
    assert b"refused a connection from 127.0.0.1: 4 connections from it already" in web.output
    for sock in held:
        sock.close()


@pytest_twisted.inlineCallbacks
def test_request_bodies_are_refused_before_they_are_read(twistd):
    web, port = yield startedWeb(twistd, "limits-bodies", "--name=bodies", "--stats-interval=1")
    # A 500 MB body, announced: the answer comes before a byte of it is sent.
    code, headers, body = _parse((yield threads.deferToThread(_exchange, port, (
        f"POST /api/hosts HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 500000000\r\n"
        "Content-Type: application/octet-stream\r\n\r\n").encode())))
    assert code == 413 and "at most 65536 bytes" in json.loads(body)["error"]
    assert headers[b"connection"] == b"close"
    # A chunked body is cut off as it arrives.
    sent, answer = yield threads.deferToThread(_sendChunkedUntilAnswered, port)
    assert _parse(answer)[0] == 413
    # The server stopped reading at 64 KiB: the rest is what loopback's socket buffers took.
    assert sent < 32 * MIB, sent
    # A small body is read and the method refused as usual, in JSON.
    code, _, body = _parse((yield threads.deferToThread(_exchange, port, (
        f"POST /api/hosts HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 2\r\n"
        "Connection: close\r\n\r\n{}").encode())))
    assert code == 405 and json.loads(body) == {"error": "method not allowed"}
    # The larger limit of POST /api/events/<source> is for that POST only.
    code, _, body = _parse((yield threads.deferToThread(_exchange, port, (
        f"PUT /api/events/deploys HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 100000\r\n"
        "Content-Type: application/octet-stream\r\n\r\n").encode())))
    assert code == 413 and "at most 65536 bytes" in json.loads(body)["error"]
    yield waitUntil(lambda: defer.succeed(b"body-too-large: 3" in web.output), 10, "the refusals counted")
    assert b"Traceback" not in web.output


def _sendChunkedUntilAnswered(port):
    sock = socket.socket()
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"POST /api/hosts HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n".encode())
    chunk = b"4000\r\n" + b"x" * 0x4000 + b"\r\n"
    sent = 0
    try:
        for _ in range(64 * 1024):  # up to 1 GiB
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 0x4000
        return sent, _readAll(sock)
    finally:
        sock.close()


@pytest_twisted.inlineCallbacks
def test_a_request_that_trickles_in_is_answered_408_and_closed(twistd):
    web, port = yield startedWeb(
        twistd, "limits-trickle", "--name=trickle", "--header-timeout=2", "--idle-timeout=60")
    trickled, answer = yield threads.deferToThread(_trickle, port, 0.25, 60)
    # Closed long before the idle timeout, which every byte resets.
    assert trickled < 40, trickled
    assert _parse(answer)[0] == 408
    assert b"did not arrive within 2 s" in answer
    assert b"its request did not arrive within 2.0 s (--header-timeout)" in web.output
    # A connection that sends nothing (an idle keep-alive one) is closed without an answer.
    silent, answer = yield threads.deferToThread(_trickle, port, 0.25, 0)
    assert answer == b""


def _trickle(port, every, most):
    sock = socket.socket()
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    text = f"GET /api/hosts HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Padding: ".encode() + b"a" * most
    try:
        for i in range(most):
            if select.select([sock], [], [], every)[0]:
                return i, _readAll(sock)
            sock.sendall(text[i:i + 1])
        return most, _readAll(sock)  # with nothing sent: what comes before the server closes
    finally:
        sock.close()


@pytest_twisted.inlineCallbacks
def test_odd_paths_and_queries_get_400_or_404_never_500(twistd):
    web, port = yield startedWeb(twistd, "limits-odd", "--name=odd.host", "--interval=0.2")
    yield waitUntil(lambda: _get(port, "/api/hosts/odd.host").addCallback(lambda r: r[0] == 200), 10,
                   "the first analysis")
    answers = {
        "/%00": 404, "/a%00b": 404, "/index.html%00": 404, "/%ff": 404, "/..%2f..%2fetc/passwd": 404,
        "/api": 404, "/api/": 404, "/api/%00": 404, "/api/nothing": 404,
        "/api/hosts/%00": 404, "/api/hosts/%ff": 404, "/api/hosts/odd.host/x/y": 404,
        "/api/hosts/odd.host/history?step=1e-300": 400,
        "/api/hosts/odd.host/history?step=5e-324": 400,
        "/api/hosts/odd.host/history?step=nan": 400,
        "/api/hosts/odd.host/history?step=1e308": 400,
        "/api/hosts/odd.host/history?since=1e400": 400,
        "/api/hosts/odd.host/history?since=-inf": 400,
        "/api/stream?step=1e-300": 400, "/api/stream?since=nan": 400,
        "/api/stream?history=%00": 400, "/api/stream?%00=1": 400,
    }
    for path, expected in answers.items():
        code, headers, body = yield _get(port, path)
        assert code == expected, (path, code, body[:200])
        if path.startswith("/api"):
            assert "error" in json.loads(body), path
    code, _, body = yield _get(port, "/api/hosts/odd.host/history?step=0.001")
    assert code == 200 and json.loads(body)["points"]
    assert b"Traceback" not in web.output


@pytest_twisted.inlineCallbacks
def test_new_hosts_beyond_max_hosts_are_refused_and_known_ones_keep_updating(broker, amqp, twistd):
    exchange = amqp.names["exchange"]
    web, port = yield startedWebRole(
        twistd, "limits-hosts", broker, amqp, "--max-hosts=1000", "--stats-interval=1")
    hosts = [f"cap-{i:04d}.example" for i in range(1200)]
    for host in hosts:
        amqp.publish(exchange, f"{hostWord(host)}.analysis", _analysis(host, 0))
    yield web.waitForOutput(b"rejected (max-hosts: 200)", timeout=30)
    amqp.publish(exchange, f"{hostWord(hosts[0])}.analysis", _analysis(hosts[0], 1))

    @defer.inlineCallbacks
    def updated():
        code, _, body = yield _get(port, f"/api/hosts/{hosts[0]}")
        return code == 200 and json.loads(body)["analysis"]["seq"] == 1
    yield waitUntil(updated, 10, "the first host's next analysis")
    code, _, body = yield _get(port, "/api/hosts")
    assert code == 200
    assert [a["host"] for a in json.loads(body)["hosts"]] == hosts[:1000]
    code, _, body = yield _get(port, f"/api/hosts/{hosts[-1]}")
    assert code == 404
    assert b"max-hosts: 1000 hosts known already (--max-hosts)" in web.output
