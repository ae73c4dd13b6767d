"""
Bad and slow WebSocket clients against a real twistd web role: each is
closed with a proper code or dropped, and the well-behaved clients next to
them never notice.
"""

import socket
import time

import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.internet import defer, reactor, threads

from support import (
    WebSocketRecorder, connectWebSocket, publishAnalysesAt, rawWebSocket, readUntilClosed, splitFrames,
    startedWeb, startedWebRole, timeAnalyses, withTimeout)
from twisted.internet.endpoints import TCP4ClientEndpoint


def _secondsUntilClosed(sock, timeout):
    """
    Read (and throw away) until the server closes; return the seconds it took.
    """
    started = time.monotonic()
    readUntilClosed(sock, timeout)
    return time.monotonic() - started


class _Misbehaving(WebSocketClientProtocol):
    def onOpen(self):
        self.factory.opened.callback(self)

    def onClose(self, wasClean, code, reason):
        self.factory.closedWith.callback(code)


@defer.inlineCallbacks
def _connectMisbehaving(port):
    factory = WebSocketRecorder(f"ws://127.0.0.1:{port}/ws")
    factory.protocol = _Misbehaving
    factory.closedWith = defer.Deferred()
    factory.setProtocolOptions(maxFramePayloadSize=0, maxMessagePayloadSize=0)
    proto = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    yield withTimeout(factory.opened, 10, "the handshake")
    return proto, factory.closedWith


@pytest_twisted.inlineCallbacks
def test_bad_frames_floods_and_silent_peers_are_closed_and_others_carry_on(twistd):
    web, port = yield startedWeb(twistd, "abuse", "--name=abuse", "--interval=0.2",
                                 "--ping-interval=3", "--idle-timeout=2")
    bystander, _ = yield connectWebSocket(port)

    def analysesSoFar():
        return [m for m in bystander.events() if m["kind"] == "analysis"]

    # Binary, invalid UTF-8, oversized: each closed with its own code.
    for payload, isBinary, code in [(b"\x00\x01", True, 1003),
                                    (b"\xff\xfe not utf-8", False, 1007),
                                    (b"x" * (100 * 1024), False, 1009)]:
        proto, closed = yield _connectMisbehaving(port)
        proto.sendMessage(payload, isBinary=isBinary)
        assert (yield withTimeout(closed, 10, f"close code {code}")) == code

    # A flood of messages, valid or not: cut off with 1008 (policy violation), never a stall
    # for the others.
    for flood in ([b'{"kind": "subscribe", "hosts": 42}', b"junk"],
                  [b'{"kind": "subscribe", "history": true}', b'{"kind": "history", "host": "abuse"}']):
        proto, closed = yield _connectMisbehaving(port)
        for i in range(20000):
            proto.sendMessage(flood[i % 2])
        assert (yield withTimeout(closed, 10, "the flood closed")) == 1008
        before = len(analysesSoFar())
        yield bystander.waitFor(lambda m: len(analysesSoFar()) >= before + 3, 10,
                                "3 analyses for the bystander after the flood")
    assert web.output.count(b"messages at once or 10 a second; disconnecting it") == 2

    # A handshake that never finishes, and a peer that never answers pings.
    half = socket.create_connection(("127.0.0.1", port))
    half.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
    silent = rawWebSocket(port)
    tookHalf = yield threads.deferToThread(_secondsUntilClosed, half, 15)
    tookSilent = yield threads.deferToThread(_secondsUntilClosed, silent, 15)
    # Dropped after --idle-timeout, and after a ping plus as long for its pong.
    assert tookHalf < 6 and tookSilent < 10, (tookHalf, tookSilent)

    before = len(analysesSoFar())
    yield bystander.waitFor(lambda m: len(analysesSoFar()) >= before + 3, 10,
                            "3 more analyses for the bystander at the end")
    assert not web.ended_ and b"Traceback" not in web.output


@pytest_twisted.inlineCallbacks
def test_a_stalled_client_is_dropped_and_the_others_get_everything_in_order(broker, amqp, twistd):
    # Its cost in memory and in the others' latency: bench/stalled_client.py.
    exchange = amqp.names["exchange"]
    web, port = yield startedWebRole(
        twistd, "slow-web", broker, amqp, "--history=1", "--history-points=2", "--stall-timeout=6")
    fast, _ = yield connectWebSocket(port)
    timeAnalyses(fast)
    # A small receive window: the server's send buffer fills within a second.
    stalled = rawWebSocket(port, receiveBuffer=4096)

    # One host per analysis: a client the machine's load pauses for a moment
    # is legitimately sent only the latest analysis per host, so with few
    # hosts "everything" would depend on the load, not on the stalled client.
    yield publishAnalysesAt(amqp, exchange, 500, 1000, 0, hosts=3000)
    yield fast.waitFor(lambda m: m.get("seq") == 999, 10, "the first 1000 analyses")
    yield publishAnalysesAt(amqp, exchange, 500, 2000, 1000, hosts=3000)
    yield fast.waitFor(lambda m: m.get("seq") == 2999, 10, "the next 2000 analyses")

    # The fast client got everything, in order, while the other stalled.
    seqs = [m["seq"] for m in fast.timed]
    assert seqs == list(range(3000))
    # And dropped once it has not read for --stall-timeout.
    yield web.waitForOutput(b"client stopped reading", timeout=15)
    yield threads.deferToThread(readUntilClosed, stalled, 15)


class _Pinger(_Misbehaving):
    pongs = 0

    def onPong(self, payload):
        self.pongs += 1
        if self.pongs == 10:
            self.factory.gotPongs.callback(self.pongs)


@pytest_twisted.inlineCallbacks
def test_a_ping_flood_is_closed_with_1008_and_others_carry_on(twistd):
    web, port = yield startedWeb(twistd, "ping-flood", "--name=pinged", "--interval=0.2",
                                 "--stats-interval=1")
    bystander, _ = yield connectWebSocket(port)
    factory = WebSocketRecorder(f"ws://127.0.0.1:{port}/ws")
    factory.protocol = _Pinger
    factory.closedWith = defer.Deferred()
    factory.gotPongs = defer.Deferred()
    proto = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    yield withTimeout(factory.opened, 10, "the handshake")

    # Ten pings at once are answered (a program's keep-alive, or a latency probe).
    for i in range(10):
        proto.sendPing(b"%d" % i)
    assert (yield withTimeout(factory.gotPongs, 10, "10 pongs")) == 10
    assert not factory.closedWith.called
    # A flood is cut off with 1008 (policy violation) at the eleventh ping within a second.
    for i in range(20000):
        proto.sendPing()
    assert (yield withTimeout(factory.closedWith, 15, "the ping flood closed")) == 1008
    assert proto.pongs <= 20, proto.pongs
    yield web.waitForOutput(b"sent more than 10 pings or pongs at once or 1 a second; disconnecting it")
    yield web.waitForOutput(b"1 WebSocket clients closed for flooding")

    # A raw flood, as from a script that never reads: closed all the same, pongs and all.
    flooder = rawWebSocket(port)
    yield threads.deferToThread(_sendUntilRefused, flooder, b"\x89\x80\x00\x00\x00\x00" * 200000, 10)
    frames = yield threads.deferToThread(_readFrames, flooder, 15)
    assert frames[-1][0] == 8 and frames[-1][1][:2] == (1008).to_bytes(2, "big"), frames[-3:]
    # Besides the snapshot (text, in frames continued by opcode 0) and live
    # analyses (text), no more pongs than the burst allows.
    assert {op for op, _ in frames[:-1]} <= {0, 1, 10}, frames
    assert 1 <= sum(1 for op, _ in frames if op == 10) <= 10
    yield web.waitForOutput(b"2 WebSocket clients closed for flooding")

    before = len([m for m in bystander.events() if m["kind"] == "analysis"])
    yield bystander.waitFor(
        lambda m: len([m for m in bystander.events() if m["kind"] == "analysis"]) >= before + 3,
        10, "3 analyses for the bystander after the floods")
    assert bystander.closed == [] and not web.ended_ and b"Traceback" not in web.output


def _sendUntilRefused(sock, data, timeout):
    """
    Send C{data} until it is all sent, the server stops reading (the send
    blocks for C{timeout} seconds) or closes.
    """
    sock.settimeout(timeout)
    try:
        sock.sendall(data)
    except (socket.timeout, ConnectionResetError, BrokenPipeError):
        pass


def _readFrames(sock, timeout):
    """
    The (opcode, payload) of every frame the server sends until it closes.
    """
    frames, _ = splitFrames(readUntilClosed(sock, timeout))
    return frames
