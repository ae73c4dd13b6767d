"""
Pipelined HTTP requests from a client that does not read its answers wait
until it does (LimitedHTTPChannel): a few bytes of requests must not queue
an answer each in the server's memory. A client that reads gets every
answer, in order. Over a real loopback connection.
"""

import socket

import pytest_twisted
from twisted.internet import defer, reactor, task, threads
from twisted.web import resource

from resmon.services.web import buildSite
from resmon.webserver.fanout import EventFanout

ANSWER = 4 * 1024 * 1024


class Big(resource.Resource):
    isLeaf = True

    def __init__(self):
        resource.Resource.__init__(self)
        self.rendered = 0

    def render_GET(self, request):
        self.rendered += 1
        return b"%08d" % self.rendered + b"x" * (ANSWER - 8)


def _serve(tmp_path):
    (tmp_path / "index.html").write_text("<p>dashboard</p>")
    site = buildSite(EventFanout(), reactor, root=str(tmp_path))
    big = Big()
    site.resource.putChild(b"big", big)
    return reactor.listenTCP(0, site, interface="127.0.0.1"), big


def _request(port):
    return f"GET /big HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def _readAnswers(client, count):
    client.settimeout(10)
    received = bytearray()
    while received.count(b"HTTP/1.1 200") < count or len(received) < count * ANSWER:
        chunk = client.recv(1 << 20)
        if not chunk:
            break
        received += chunk
    return bytes(received)


@defer.inlineCallbacks
def _untilPaused(big):
    """
    Until the first answer filled the server's socket (its transport paused
    the connection): every request sent was read by then, in one packet.
    """
    for _ in range(500):
        if big.rendered and any(getattr(w, "producerPaused", False) for w in reactor.getWriters()):
            return
        yield task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("the server's socket never filled")


@pytest_twisted.inlineCallbacks
def test_pipelined_requests_wait_while_the_client_does_not_read(tmp_path):
    listening, big = _serve(tmp_path)
    port = listening.getHost().port
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    try:
        client.sendall(_request(port) * 6)
        yield _untilPaused(big)
        # The first answers fill the sockets (what the kernel takes of them
        # on loopback): the others are not made. Without the wait, all six.
        assert big.rendered <= 2
        # Reading lets them through, one answer after the other, all of them.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        received = yield threads.deferToThread(_readAnswers, client, 6)
        assert big.rendered == 6
        assert received.count(b"HTTP/1.1 200") == 6
        bodies = [received.index(b"%08d" % n) for n in range(1, 7)]
        assert bodies == sorted(bodies)
    finally:
        client.close()
        yield listening.stopListening()


@pytest_twisted.inlineCallbacks
def test_the_recent_events_are_written_as_the_client_reads_within_the_budget(tmp_path):
    """
    GET /api/events with 60 events of 200 KB kept (12 MB): a client that
    does not read holds the server's budget of queued bytes, not 12 MB in
    its transport; reading, it gets every event.
    """
    import json
    import os
    import time

    from resmon import wire
    from resmon.webserver.events import mountEvents

    class Bus:
        connected = True

    (tmp_path / "index.html").write_text("<p>dashboard</p>")
    fanout = EventFanout()
    payload = os.urandom(150 * 1024)
    for i in range(60):
        fanout.eventReceived("deploy.event", wire.encodeEventFromBody(
            "deploy", payload, "application/octet-stream", time.time(), f"id{i}"))
    site = buildSite(fanout, reactor, root=str(tmp_path))
    mountEvents(site, Bus(), reactor, wire.DEFAULT_MAX_BODY, fanout)
    listening = reactor.listenTCP(0, site, interface="127.0.0.1")
    port = listening.getHost().port
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    try:
        client.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                       "Connection: close\r\n\r\n".encode())
        for _ in range(500):
            if site.budget.queued:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        queued = [w._tempDataLen + len(w.dataBuffer) - w.offset for w in reactor.getWriters()
                  if hasattr(w, "_tempDataLen")]
        assert site.budget.queued > 0 and max(queued, default=0) < 2 * 1024 * 1024
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        answer = yield threads.deferToThread(_readAll, client)
        head, body = answer.split(b"\r\n\r\n", 1)
        if b"chunked" in head.lower():
            body = _dechunked(body)
        events = json.loads(body)["events"]
        assert [event["id"] for event in events] == [f"id{i}" for i in range(60)]
    finally:
        client.close()
        yield listening.stopListening()


def _readAll(client):
    client.settimeout(10)
    received = bytearray()
    while True:
        chunk = client.recv(1 << 20)
        if not chunk:
            return bytes(received)
        received += chunk


def _dechunked(body):
    whole = bytearray()
    while True:
        size, _, rest = body.partition(b"\r\n")
        length = int(size, 16)
        if not length:
            return bytes(whole)
        whole += rest[:length]
        body = rest[length + 2:]
